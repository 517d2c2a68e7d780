"""Imports the generated protobuf/gRPC modules.

The build generates them into BUILD/python (fluxion/v1/*_pb2*.py,
inference/grpc_service_pb2*.py). When they are not importable yet, the
directory named by FX_PY_OUT is tried before giving up with a message that
says what to put on PYTHONPATH.
"""
import os
import sys


def _import():
    from fluxion.v1 import cluster_pb2, cluster_pb2_grpc, model_pb2, model_pb2_grpc
    from inference import grpc_service_pb2, grpc_service_pb2_grpc
    return (model_pb2, model_pb2_grpc, cluster_pb2, cluster_pb2_grpc,
            grpc_service_pb2, grpc_service_pb2_grpc)


try:
    _mods = _import()
except ImportError as first:
    extra = os.environ.get("FX_PY_OUT")
    if not extra or extra in sys.path:
        raise ImportError(
            "fluxion_client needs the generated stubs: build the project and put "
            "BUILD/python on PYTHONPATH (or set FX_PY_OUT): %s" % first) from first
    sys.path.insert(0, extra)
    _mods = _import()

(model_pb2, model_pb2_grpc, cluster_pb2, cluster_pb2_grpc,
 infer_pb2, infer_pb2_grpc) = _mods
