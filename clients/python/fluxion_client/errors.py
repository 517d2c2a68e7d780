"""Exceptions raised by the client: one class per gRPC status code, all
subclasses of FluxionError, which every Client method raises instead of
grpc.RpcError.

FluxionError is deliberately not a grpc.RpcError: code that catches
RpcError calls e.code() and e.details(), while a FluxionError's .code is the
StatusCode itself (the client's documented interface since 0.1).
"""
import functools
import inspect
from typing import Any, Callable, Dict, Type, TypeVar, cast

import grpc


class FluxionError(Exception):
    """A failed call. code: the grpc.StatusCode; message: the server's
    explanation (it names the field, node or tensor at fault); method: the
    client method that failed ("" when unknown)."""

    code: grpc.StatusCode
    message: str
    method: str

    def __init__(self, code: grpc.StatusCode, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        where = "%s: " % method if method else ""
        super().__init__("%s%s: %s" % (where, code.name, message))


class Cancelled(FluxionError):
    """CANCELLED: the call was cancelled (by the client, or a stream closed)."""


class Unknown(FluxionError):
    """UNKNOWN: an error without a more precise status."""


class InvalidArgument(FluxionError):
    """INVALID_ARGUMENT: a request field, spec node or tensor is wrong."""


class DeadlineExceeded(FluxionError):
    """DEADLINE_EXCEEDED: the call took longer than the client's timeout."""


class NotFound(FluxionError):
    """NOT_FOUND: no such model, version, dataset, job, team or token."""


class AlreadyExists(FluxionError):
    """ALREADY_EXISTS: the name is taken."""


class PermissionDenied(FluxionError):
    """PERMISSION_DENIED: the caller's role may not do this (a viewer
    writing, a member managing)."""


class ResourceExhausted(FluxionError):
    """RESOURCE_EXHAUSTED: over a team's quota or the message size limit."""


class FailedPrecondition(FluxionError):
    """FAILED_PRECONDITION: not in this state (inference on a model not
    loaded, a running job re-prioritised, a team deleted while it owns
    objects)."""


class Aborted(FluxionError):
    """ABORTED: the operation was aborted (a conflict); retry."""


class OutOfRange(FluxionError):
    """OUT_OF_RANGE: a value past the valid range."""


class Unimplemented(FluxionError):
    """UNIMPLEMENTED: the daemon does not have this method."""


class Internal(FluxionError):
    """INTERNAL: a daemon-side fault."""


class Unavailable(FluxionError):
    """UNAVAILABLE: the daemon is unreachable or shutting down (or has no
    training)."""


class DataLoss(FluxionError):
    """DATA_LOSS: data arrived incomplete (e.g. a short weights export)."""


class Unauthenticated(FluxionError):
    """UNAUTHENTICATED: no token, or one the server does not take (unknown,
    revoked, expired)."""


class ConnectTimeout(DeadlineExceeded, grpc.FutureTimeoutError):
    """Client.wait_ready: no connection within the timeout (also a
    grpc.FutureTimeoutError, which wait_ready raised before)."""


BY_CODE: Dict[grpc.StatusCode, Type[FluxionError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def error_for(code: grpc.StatusCode, message: str, method: str = "") -> FluxionError:
    """The FluxionError subclass instance for a status code."""
    return BY_CODE.get(code, FluxionError)(code, message, method)


def from_rpc_error(err: grpc.RpcError, method: str = "") -> FluxionError:
    """The FluxionError subclass instance for a grpc.RpcError (one that is
    not a grpc.Call, e.g. raised by an interceptor, becomes UNKNOWN)."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    return error_for(code, details or "", method)


F = TypeVar("F", bound=Callable[..., Any])


def wrap(fn: F) -> F:
    """Turns grpc.RpcError raised by fn into FluxionError (named after fn);
    for a generator function, errors raised while iterating too."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except grpc.RpcError as err:
                raise from_rpc_error(err, fn.__name__) from None
        return cast(F, gen)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as err:
            raise from_rpc_error(err, fn.__name__) from None
    return cast(F, call)
