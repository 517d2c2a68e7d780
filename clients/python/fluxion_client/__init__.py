"""fluxion_client: a Python client for fluxiond.

    from fluxion_client import Client
    with Client("127.0.0.1:7070") as c:       # token=..., tls_ca=... for a shared daemon
        c.create_model("mlp", {"inputs": [...], "nodes": [...], "outputs": [...]})
        y = c.infer("mlp", {"x": np.ones((2, 4), np.float32)})["y"]

Failed calls raise FluxionError (a subclass per gRPC status code: NotFound,
InvalidArgument, ...) carrying the code and the server's message.
"""
from . import safetensors
from .client import Client, infer_outputs, infer_request
from .errors import (Aborted, AlreadyExists, Cancelled, ConnectTimeout, DataLoss,
                     DeadlineExceeded, FailedPrecondition, FluxionError, Internal,
                     InvalidArgument, NotFound, OutOfRange, PermissionDenied, ResourceExhausted,
                     Unauthenticated, Unavailable, Unimplemented, Unknown)
from .spec import attr_value, model_spec, spec_to_dict

__version__ = "0.3.0"   # pyproject.toml's; checked by the pyclient_api test

__all__ = ["Client", "FluxionError", "Cancelled", "Unknown", "InvalidArgument",
           "DeadlineExceeded", "ConnectTimeout", "NotFound", "AlreadyExists", "PermissionDenied",
           "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
           "Internal", "Unavailable", "DataLoss", "Unauthenticated",
           "model_spec", "spec_to_dict", "attr_value",
           "infer_request", "infer_outputs", "safetensors", "__version__"]
