"""Client: one gRPC channel to fluxiond and its three services
(fluxion.v1.ModelService, fluxion.v1.ClusterService and the Open Inference
Protocol's inference.GRPCInferenceService)."""
import functools

import grpc
import numpy as np

from . import safetensors
from .admin import AdminMixin
from .auth import make_channel, resolve_token
from ._stubs import cluster_pb2, cluster_pb2_grpc, infer_pb2, infer_pb2_grpc, model_pb2, \
    model_pb2_grpc
from .datasets import DatasetsMixin
from .jobs import JobsMixin
from .errors import FluxionError, from_rpc_error
from .spec import model_spec

# numpy dtype <-> Open Inference Protocol datatype and the typed contents field.
_DATATYPES = {
    np.dtype(np.float32): ("FP32", "fp32_contents"),
    np.dtype(np.int32): ("INT32", "int_contents"),
    np.dtype(np.int64): ("INT64", "int64_contents"),
}
_NUMPY = {name: (dt, field) for dt, (name, field) in _DATATYPES.items()}


def _wrap(fn):
    """Turns grpc.RpcError into FluxionError (with the method's name)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as err:
            raise from_rpc_error(err, fn.__name__) from None
    return call


def to_numpy_input(value):
    """A C-contiguous array of a served dtype. float64 becomes float32 (the
    server computes in FP32); Python ints become int64."""
    arr = np.asarray(value)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in _DATATYPES:
        raise TypeError("dtype %s is not served (float32, int32, int64)" % arr.dtype)
    return np.ascontiguousarray(arr)


def infer_request(model, inputs, outputs=None, raw=False, version="", request_id=""):
    """A ModelInferRequest for {name: array}; raw=True sends the bytes in
    raw_input_contents instead of typed contents."""
    req = infer_pb2.ModelInferRequest(model_name=model, model_version=str(version or ""),
                                      id=request_id)
    for name, value in inputs.items():
        arr = to_numpy_input(value)
        datatype, field = _DATATYPES[arr.dtype]
        t = req.inputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        if raw:
            req.raw_input_contents.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        else:
            getattr(t.contents, field).extend(arr.ravel().tolist())
    for name in outputs or []:
        req.outputs.add(name=name)
    return req


def infer_outputs(resp):
    """{name: numpy array} from a ModelInferResponse (raw or typed)."""
    out = {}
    for k, t in enumerate(resp.outputs):
        if t.datatype not in _NUMPY:
            raise FluxionError(grpc.StatusCode.INTERNAL,
                               "output %r: datatype %r is not known" % (t.name, t.datatype))
        dt, field = _NUMPY[t.datatype]
        shape = tuple(t.shape)
        if resp.raw_output_contents:
            arr = np.frombuffer(resp.raw_output_contents[k], dtype=dt.newbyteorder("<"))
        else:
            arr = np.asarray(getattr(t.contents, field), dtype=dt)
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise FluxionError(grpc.StatusCode.INTERNAL, "output %r: %d values for shape %r"
                               % (t.name, arr.size, shape))
        out[t.name] = arr.astype(dt).reshape(shape)
    return out


class Client(DatasetsMixin, JobsMixin, AdminMixin):
    """A connection to fluxiond at target ("host:port"). timeout: seconds
    each call may take (None: no deadline). Usable as a context manager.

    token: a bearer token sent with every call (None: $FLUXION_TOKEN if set;
    "": none). TLS when tls=True or any of tls_ca (the CA certificates that
    verify the server; None with tls=True: the system's roots), tls_cert and
    tls_key (a client certificate for mutual TLS, both or neither) is given;
    each is a PEM file's path or its bytes."""

    def __init__(self, target, timeout=60.0, max_message_mb=64, token=None, tls=False,
                 tls_ca=None, tls_cert=None, tls_key=None):
        limit = max_message_mb << 20
        self.target = target
        self.timeout = timeout
        self.channel = make_channel(target, [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit)],
            token=resolve_token(token), tls=tls, tls_ca=tls_ca, tls_cert=tls_cert,
            tls_key=tls_key)
        self.models = model_pb2_grpc.ModelServiceStub(self.channel)
        self.inference = infer_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.cluster = cluster_pb2_grpc.ClusterServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout=10.0):
        """Blocks until the channel connects (grpc.FutureTimeoutError if not)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    # ------------------------------------------------------------- models

    @_wrap
    def create_model(self, name, spec, description="", weights=None, seed=0, no_load=False):
        """Defines a model (spec: a dict in the human form or a ModelSpec);
        weights: optional safetensors bytes or {name: array}. Returns Model."""
        if isinstance(weights, dict):
            weights = safetensors.dump(weights)
        req = model_pb2.CreateModelRequest(name=name, description=description,
                                           spec=model_spec(spec), weights=weights or b"",
                                           seed=seed, no_load=no_load)
        return self.models.CreateModel(req, timeout=self.timeout)

    @_wrap
    def get_model(self, name):
        return self.models.GetModel(model_pb2.GetModelRequest(name=name), timeout=self.timeout)

    @_wrap
    def list_models(self):
        return list(self.models.ListModels(model_pb2.ListModelsRequest(),
                                           timeout=self.timeout).models)

    @_wrap
    def delete_model(self, name):
        self.models.DeleteModel(model_pb2.DeleteModelRequest(name=name), timeout=self.timeout)

    @_wrap
    def export_weights_chunks(self, name, version=0, chunk_bytes=0):
        """The WeightsChunk messages of an export, as a list."""
        req = model_pb2.ExportWeightsRequest(name=name, version=version, chunk_bytes=chunk_bytes)
        return list(self.models.ExportWeights(req, timeout=self.timeout))

    def export_weights(self, name, version=0, chunk_bytes=0):
        """(version, safetensors bytes) of a model version (0: the latest)."""
        chunks = self.export_weights_chunks(name, version, chunk_bytes)
        data = b"".join(c.data for c in chunks)
        if not chunks or chunks[0].total_bytes != len(data):
            raise FluxionError(grpc.StatusCode.DATA_LOSS, "export of %r: %d bytes received, "
                               "the first chunk announced %d" % (name, len(data),
                               chunks[0].total_bytes if chunks else 0), "export_weights")
        return chunks[0].version, data

    def export_arrays(self, name, version=0):
        """{parameter name: numpy array} of a model version."""
        return safetensors.load(self.export_weights(name, version)[1])

    @_wrap
    def import_weights(self, name, weights, source="", chunk_bytes=1 << 20):
        """Adds a version from safetensors bytes or {name: array}, streamed in
        chunks of chunk_bytes. Returns the ModelVersion."""
        if isinstance(weights, dict):
            weights = safetensors.dump(weights)
        weights = bytes(weights)

        def chunks():
            off = 0
            while True:
                piece = weights[off:off + chunk_bytes]
                if off == 0:
                    yield model_pb2.WeightsChunk(name=name, source=source,
                                                 total_bytes=len(weights), data=piece)
                else:
                    yield model_pb2.WeightsChunk(data=piece)
                off += len(piece)
                if off >= len(weights):
                    return
        return self.models.ImportWeights(chunks(), timeout=self.timeout)

    # ---------------------------------------------------------- inference

    @_wrap
    def server_live(self):
        return self.inference.ServerLive(infer_pb2.ServerLiveRequest(), timeout=self.timeout).live

    @_wrap
    def server_ready(self):
        return self.inference.ServerReady(infer_pb2.ServerReadyRequest(),
                                          timeout=self.timeout).ready

    @_wrap
    def server_metadata(self):
        return self.inference.ServerMetadata(infer_pb2.ServerMetadataRequest(),
                                             timeout=self.timeout)

    @_wrap
    def model_ready(self, name, version=""):
        return self.inference.ModelReady(infer_pb2.ModelReadyRequest(
            name=name, version=str(version or "")), timeout=self.timeout).ready

    @_wrap
    def model_metadata(self, name, version=""):
        return self.inference.ModelMetadata(infer_pb2.ModelMetadataRequest(
            name=name, version=str(version or "")), timeout=self.timeout)

    @_wrap
    def infer_raw(self, request):
        """ModelInfer with a ready ModelInferRequest; returns the response."""
        return self.inference.ModelInfer(request, timeout=self.timeout)

    def infer(self, model, inputs, outputs=None, raw=False, version=""):
        """Runs a model: inputs {name: array-like}; outputs: names to return
        (None: all). Returns {output name: numpy array}."""
        resp = self.infer_raw(infer_request(model, inputs, outputs, raw, version))
        return infer_outputs(resp)

    @_wrap
    def model_statistics(self, name="", version=""):
        return list(self.inference.ModelStatistics(infer_pb2.ModelStatisticsRequest(
            name=name, version=str(version or "")), timeout=self.timeout).model_stats)

    @_wrap
    def repository_index(self, ready=False):
        return list(self.inference.RepositoryIndex(infer_pb2.RepositoryIndexRequest(
            ready=ready), timeout=self.timeout).models)

    @_wrap
    def load_model(self, name, parameters=None):
        """parameters: batching settings {"max_batch_size": 8, ...} (bool, int
        or str values), stored with the model."""
        req = infer_pb2.RepositoryModelLoadRequest(model_name=name)
        for k, v in (parameters or {}).items():
            p = req.parameters[k]
            if isinstance(v, bool):
                p.bool_param = v
            elif isinstance(v, int):
                p.int64_param = v
            else:
                p.string_param = str(v)
        self.inference.RepositoryModelLoad(req, timeout=self.timeout)

    @_wrap
    def set_serving_config(self, name, reset=False, **settings):
        """Changes the named batching settings (BatchingConfig fields:
        max_batch_size=8, enabled=False, preferred_batch_sizes=[4, 8], ...);
        returns the settings in force."""
        cfg = model_pb2.BatchingConfig()
        for k, v in settings.items():
            if k == "preferred_batch_sizes":
                cfg.preferred_batch_sizes.extend(v)
            else:
                setattr(cfg, k, v)
        return self.models.SetServingConfig(model_pb2.SetServingConfigRequest(
            name=name, config=cfg, fields=list(settings), reset=reset), timeout=self.timeout)

    @_wrap
    def unload_model(self, name):
        self.inference.RepositoryModelUnload(infer_pb2.RepositoryModelUnloadRequest(
            model_name=name), timeout=self.timeout)

    # ------------------------------------------------------------ cluster

    @_wrap
    def status(self):
        return self.cluster.GetStatus(cluster_pb2.GetStatusRequest(), timeout=self.timeout)

    @_wrap
    def get_queue(self):
        """GetQueueResponse: devices (slots, memory), teams (weight, usage,
        share, quota) and jobs (running first, then queued by position, each
        with the reason it waits). A non-admin sees its own team's."""
        return self.cluster.GetQueue(cluster_pb2.GetQueueRequest(), timeout=self.timeout)
