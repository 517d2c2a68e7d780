"""Credentials of a Client: the channel (TLS or not) and the bearer token
sent as `authorization: Bearer <token>` metadata on every call.

The token travels in an interceptor rather than in gRPC call credentials
because call credentials are refused on an insecure channel, and a daemon
on loopback may take tokens without TLS.
"""
from __future__ import annotations

import collections
import os
from typing import Any, Optional, Sequence, Tuple, Union

import grpc

# A PEM source: a file's path (str or os.PathLike) or the PEM bytes.
PemSource = Union[str, "os.PathLike[str]", bytes, bytearray]


def _pem(value: Optional[PemSource], what: str) -> Optional[bytes]:
    """PEM bytes from bytes, or from a file path (str or os.PathLike)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        with open(value, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ValueError("%s: cannot read %s: %s" % (what, value, err.strerror)) from None
    if b"-----BEGIN " not in data:
        raise ValueError("%s: %s is not a PEM file (no -----BEGIN line)" % (what, value))
    return data


def check_token(token: str) -> str:
    """A token must be printable ASCII without spaces (it goes in metadata)."""
    for i, ch in enumerate(token):
        if not "!" <= ch <= "~":
            raise ValueError("the token has a %s at character %d (a token is printable ASCII "
                             "without spaces)" % ("space" if ch == " " else "control or non-ASCII "
                                                  "character", i + 1))
    return token


def resolve_token(token: Optional[str]) -> Optional[str]:
    """token=None: FLUXION_TOKEN from the environment (or none); "" : none."""
    if token is None:
        token = os.environ.get("FLUXION_TOKEN") or None
    return check_token(token.strip()) if token else None


def channel_credentials(tls: bool, tls_ca: Optional[PemSource], tls_cert: Optional[PemSource],
                        tls_key: Optional[PemSource]) -> Optional[grpc.ChannelCredentials]:
    """grpc.ssl_channel_credentials for the options, or None (insecure)."""
    if not (tls or tls_ca is not None or tls_cert is not None or tls_key is not None):
        return None
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("a client certificate needs its key and the reverse "
                         "(give both tls_cert and tls_key, or neither)")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(tls_ca, "tls_ca"),
        private_key=_pem(tls_key, "tls_key"),
        certificate_chain=_pem(tls_cert, "tls_cert"))


class _Details(collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                     "compression")), grpc.ClientCallDetails):
    pass


class TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                       grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call's metadata."""

    def __init__(self, token):
        self._md = ("authorization", "Bearer " + token)

    def _details(self, d):
        md = [m for m in (d.metadata or ()) if m[0] != "authorization"]
        md.insert(0, self._md)
        return _Details(d.method, d.timeout, md, d.credentials,
                        getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def make_channel(target: str, options: Sequence[Tuple[str, Any]], token: Optional[str] = None,
                 tls: bool = False, tls_ca: Optional[PemSource] = None,
                 tls_cert: Optional[PemSource] = None,
                 tls_key: Optional[PemSource] = None) -> grpc.Channel:
    """The channel of a Client: secure when TLS is asked for, with the token
    (already resolved) on every call."""
    creds = channel_credentials(tls, tls_ca, tls_cert, tls_key)
    if creds is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, creds, options=options)
    if token:
        channel = grpc.intercept_channel(channel, TokenInterceptor(token))
    return channel
