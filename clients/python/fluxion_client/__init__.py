"""fluxion_client: a small Python client for fluxiond.

    from fluxion_client import Client
    with Client("127.0.0.1:7070") as c:       # token=..., tls_ca=... for a shared daemon
        c.create_model("mlp", {"inputs": [...], "nodes": [...], "outputs": [...]})
        y = c.infer("mlp", {"x": np.ones((2, 4), np.float32)})["y"]

Failed calls raise FluxionError (or a subclass per status code) carrying the
gRPC code and the server's message.
"""
from . import safetensors
from .client import Client, infer_outputs, infer_request
from .errors import (AlreadyExists, FluxionError, InvalidArgument, NotFound, PermissionDenied,
                     ResourceExhausted, Unauthenticated, Unavailable)
from .spec import attr_value, model_spec, spec_to_dict

__all__ = ["Client", "FluxionError", "InvalidArgument", "NotFound", "AlreadyExists",
           "Unavailable", "ResourceExhausted", "Unauthenticated", "PermissionDenied",
           "model_spec", "spec_to_dict", "attr_value",
           "infer_request", "infer_outputs", "safetensors"]
