"""Exceptions raised by the client: one class per gRPC status code that a
caller is likely to handle, all subclasses of FluxionError."""
import grpc


class FluxionError(Exception):
    """A failed call. code: the grpc.StatusCode; message: the server's
    explanation (it names the field, node or tensor at fault)."""

    def __init__(self, code, message, method=""):
        self.code = code
        self.message = message
        self.method = method
        where = "%s: " % method if method else ""
        super().__init__("%s%s: %s" % (where, code.name, message))


class InvalidArgument(FluxionError):
    pass


class NotFound(FluxionError):
    pass


class AlreadyExists(FluxionError):
    pass


class Unavailable(FluxionError):
    pass


class ResourceExhausted(FluxionError):
    pass


class Unauthenticated(FluxionError):
    """No token, or one the server does not take (unknown, revoked, expired)."""


class PermissionDenied(FluxionError):
    """The caller's role may not do this (a viewer writing, a member managing)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def from_rpc_error(err, method=""):
    """The FluxionError subclass for a grpc.RpcError."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return _BY_CODE.get(code, FluxionError)(code, details or "", method)
