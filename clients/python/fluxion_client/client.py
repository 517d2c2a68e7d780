"""Client: one gRPC channel to fluxiond and its services
(fluxion.v1.ModelService, ClusterService, DatasetService, TrainingService,
AdminService, and the Open Inference Protocol's
inference.GRPCInferenceService)."""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
from numpy.typing import ArrayLike

from . import safetensors
from ._stubs import cluster_pb2, cluster_pb2_grpc, infer_pb2, infer_pb2_grpc, model_pb2, \
    model_pb2_grpc
from .admin import AdminMixin
from .auth import PemSource, make_channel, resolve_token
from .datasets import DatasetsMixin
from .errors import ConnectTimeout, DataLoss, Internal, wrap
from .jobs import JobsMixin
from .spec import SpecLike, model_spec
from .versions import VersionsMixin

# numpy dtype <-> Open Inference Protocol datatype and the typed contents field.
_DATATYPES: Dict[np.dtype, Tuple[str, str]] = {
    np.dtype(np.float32): ("FP32", "fp32_contents"),
    np.dtype(np.int32): ("INT32", "int_contents"),
    np.dtype(np.int64): ("INT64", "int64_contents"),
}
_NUMPY: Dict[str, Tuple[np.dtype, str]] = {name: (dt, field) for dt, (name, field) in _DATATYPES.items()}

# Weights: safetensors bytes or {parameter name: array}.
Weights = Union[bytes, bytearray, Mapping[str, ArrayLike]]
_wrap = wrap  # the old name


def to_numpy_input(value: ArrayLike) -> np.ndarray:
    """A C-contiguous array of a served dtype. float64 becomes float32 (the
    server computes in FP32); Python ints become int64."""
    arr = np.asarray(value)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in _DATATYPES:
        raise TypeError("dtype %s is not served (float32, int32, int64)" % arr.dtype)
    return np.ascontiguousarray(arr)


def infer_request(model: str, inputs: Mapping[str, ArrayLike],
                  outputs: Optional[Iterable[str]] = None, raw: bool = False,
                  version: Union[str, int] = "", request_id: str = "") -> infer_pb2.ModelInferRequest:
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


def infer_outputs(resp: infer_pb2.ModelInferResponse) -> Dict[str, np.ndarray]:
    """{name: numpy array} from a ModelInferResponse (raw or typed)."""
    out = {}
    for k, t in enumerate(resp.outputs):
        if t.datatype not in _NUMPY:
            raise Internal(grpc.StatusCode.INTERNAL,
                           "output %r: datatype %r is not known" % (t.name, t.datatype))
        dt, field = _NUMPY[t.datatype]
        shape = tuple(t.shape)
        if resp.raw_output_contents:
            arr = np.frombuffer(resp.raw_output_contents[k], dtype=dt.newbyteorder("<"))
        else:
            arr = np.asarray(getattr(t.contents, field), dtype=dt)
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise Internal(grpc.StatusCode.INTERNAL, "output %r: %d values for shape %r"
                           % (t.name, arr.size, shape))
        out[t.name] = arr.astype(dt).reshape(shape)
    return out


class Client(DatasetsMixin, JobsMixin, AdminMixin, VersionsMixin):
    """A connection to fluxiond at target ("host:port"). timeout: seconds
    each call may take (None: no deadline). Usable as a context manager.

    token: a bearer token sent with every call (None: $FLUXION_TOKEN if set;
    "": none). TLS when tls=True or any of tls_ca (the CA certificates that
    verify the server; None with tls=True: the system's roots), tls_cert and
    tls_key (a client certificate for mutual TLS, both or neither) is given;
    each is a PEM file's path or its bytes.

    Every method raises a FluxionError subclass (NotFound, InvalidArgument,
    ...) when the call fails; the raw stubs stay reachable as .models,
    .inference, .cluster (and .datasets, .training) on .channel."""

    target: str
    timeout: Optional[float]
    channel: grpc.Channel

    def __init__(self, target: str, timeout: Optional[float] = 60.0, max_message_mb: int = 64,
                 token: Optional[str] = None, tls: bool = False,
                 tls_ca: Optional[PemSource] = None, tls_cert: Optional[PemSource] = None,
                 tls_key: Optional[PemSource] = None) -> None:
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

    def close(self) -> None:
        """Closes the channel (calls in flight are cancelled)."""
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel connects; ConnectTimeout (a
        DeadlineExceeded and a grpc.FutureTimeoutError) if it does not
        within timeout seconds."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ConnectTimeout(grpc.StatusCode.DEADLINE_EXCEEDED,
                                 "no connection to %s within %g s" % (self.target, timeout),
                                 "wait_ready") from None

    # ------------------------------------------------------------- models

    @wrap
    def create_model(self, name: str, spec: SpecLike, description: str = "",
                     weights: Optional[Weights] = None, seed: int = 0,
                     no_load: bool = False) -> model_pb2.Model:
        """ModelService.CreateModel: defines a model (spec: a dict in the human
        form or a ModelSpec; weights: safetensors bytes or {name: array},
        else initialised from seed; no_load: do not load it for serving)."""
        data = (safetensors.dump(weights) if isinstance(weights, Mapping)
                else bytes(weights or b""))
        req = model_pb2.CreateModelRequest(name=name, description=description,
                                           spec=model_spec(spec), weights=data,
                                           seed=seed, no_load=no_load)
        return self.models.CreateModel(req, timeout=self.timeout)

    @wrap
    def update_model_spec(self, name: str, spec: SpecLike,
                          seed: int = 0) -> model_pb2.UpdateModelSpecResponse:
        """ModelService.UpdateModelSpec: a new spec revision of an existing
        model, with a new version whose weights are the latest version's
        where a parameter keeps its name, shape and dtype, the rest
        initialised from seed (0: the model's); the reply lists what was
        carried, re-initialised and dropped."""
        req = model_pb2.UpdateModelSpecRequest(name=name, spec=model_spec(spec), seed=seed)
        return self.models.UpdateModelSpec(req, timeout=self.timeout)

    @wrap
    def get_model(self, name: str) -> model_pb2.Model:
        """ModelService.GetModel: a model with its versions and specs."""
        return self.models.GetModel(model_pb2.GetModelRequest(name=name), timeout=self.timeout)

    @wrap
    def list_models(self) -> List[model_pb2.Model]:
        """ModelService.ListModels: the caller's team's models."""
        return list(self.models.ListModels(model_pb2.ListModelsRequest(),
                                           timeout=self.timeout).models)

    @wrap
    def delete_model(self, name: str) -> None:
        """ModelService.DeleteModel: the model, its versions and weights."""
        self.models.DeleteModel(model_pb2.DeleteModelRequest(name=name), timeout=self.timeout)

    @wrap
    def export_weights_chunks(self, name: str, version: int = 0,
                              chunk_bytes: int = 0) -> List[model_pb2.WeightsChunk]:
        """ModelService.ExportWeights: the WeightsChunk messages of an export
        (version 0: production, the served one; chunk_bytes 0: the daemon's size)."""
        return self._export_chunks(name, version, chunk_bytes)

    def _export_chunks(self, name: str, version: int,
                       chunk_bytes: int) -> List[model_pb2.WeightsChunk]:
        req = model_pb2.ExportWeightsRequest(name=name, version=version, chunk_bytes=chunk_bytes)
        return list(self.models.ExportWeights(req, timeout=self.timeout))

    def _export(self, name: str, version: int, chunk_bytes: int, method: str) -> Tuple[int, bytes]:
        chunks = self._export_chunks(name, version, chunk_bytes)
        data = b"".join(c.data for c in chunks)
        if not chunks or chunks[0].total_bytes != len(data):
            raise DataLoss(grpc.StatusCode.DATA_LOSS, "export of %r: %d bytes received, "
                           "the first chunk announced %d" % (name, len(data),
                           chunks[0].total_bytes if chunks else 0), method)
        return chunks[0].version, data

    @wrap
    def export_weights(self, name: str, version: int = 0,
                       chunk_bytes: int = 0) -> Tuple[int, bytes]:
        """ModelService.ExportWeights joined: (version, safetensors bytes) of
        a model version (0: production); DataLoss when bytes are missing."""
        return self._export(name, version, chunk_bytes, "export_weights")

    @wrap
    def export_onnx(self, name: str, version: int = 0, chunk_bytes: int = 0) -> bytes:
        """ModelService.ExportOnnx joined: a model version (0: the latest) as
        ONNX ModelProto bytes (opset 17, a dynamic batch dimension; see
        docs/onnx-export.md); DataLoss when bytes are missing."""
        req = model_pb2.ExportOnnxRequest(name=name, version=version, chunk_bytes=chunk_bytes)
        chunks = list(self.models.ExportOnnx(req, timeout=self.timeout))
        data = b"".join(c.data for c in chunks)
        if not chunks or chunks[0].total_bytes != len(data):
            raise DataLoss(grpc.StatusCode.DATA_LOSS, "ONNX export of %r: %d bytes received, "
                           "the first chunk announced %d" % (name, len(data),
                           chunks[0].total_bytes if chunks else 0), "export_onnx")
        return data

    @wrap
    def export_arrays(self, name: str, version: int = 0) -> Dict[str, np.ndarray]:
        """ModelService.ExportWeights as {parameter name: numpy array}."""
        return safetensors.load(self._export(name, version, 0, "export_arrays")[1])

    @wrap
    def import_weights(self, name: str, weights: Weights, source: str = "",
                       chunk_bytes: int = 1 << 20,
                       no_promote: bool = False) -> model_pb2.ModelVersion:
        """ModelService.ImportWeights: adds a version from safetensors bytes or
        {name: array}, streamed in chunks of chunk_bytes; source: a note
        stored with the version; no_promote: store it without serving it
        (production stays)."""
        data = (safetensors.dump(weights) if isinstance(weights, Mapping)
                else bytes(weights))
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be positive, not %d" % chunk_bytes)

        def chunks() -> Iterable[model_pb2.WeightsChunk]:
            off = 0
            while True:
                piece = data[off:off + chunk_bytes]
                if off == 0:
                    yield model_pb2.WeightsChunk(name=name, source=source,
                                                 total_bytes=len(data), data=piece,
                                                 no_promote=no_promote)
                else:
                    yield model_pb2.WeightsChunk(data=piece)
                off += len(piece)
                if off >= len(data):
                    return
        return self.models.ImportWeights(chunks(), timeout=self.timeout)

    @wrap
    def import_onnx(self, name: str, onnx: Union[str, "os.PathLike[str]", bytes],
                    description: str = "", no_load: bool = False,
                    chunk_bytes: int = 1 << 20) -> model_pb2.Model:
        """ModelService.ImportOnnx: creates a model from an ONNX file (a path
        or its bytes), streamed in chunks of chunk_bytes; the graph becomes
        the spec, its initializers version 1's weights (docs/onnx.md)."""
        if isinstance(onnx, (bytes, bytearray, memoryview)):
            data = bytes(onnx)
        else:
            with open(onnx, "rb") as f:
                data = f.read()
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be positive, not %d" % chunk_bytes)

        def chunks() -> Iterable[model_pb2.ImportOnnxRequest]:
            yield model_pb2.ImportOnnxRequest(name=name, description=description,
                                              no_load=no_load, data=data[:chunk_bytes])
            for off in range(chunk_bytes, len(data), chunk_bytes):
                yield model_pb2.ImportOnnxRequest(data=data[off:off + chunk_bytes])
        return self.models.ImportOnnx(chunks(), timeout=self.timeout)

    @wrap
    def set_serving_config(self, name: str, reset: bool = False,
                           **settings: Any) -> model_pb2.BatchingConfig:
        """ModelService.SetServingConfig: changes the named batching settings
        (BatchingConfig fields: max_batch_size=8, enabled=False,
        preferred_batch_sizes=[4, 8], ...; reset: back to the defaults
        first); returns the settings in force."""
        cfg = model_pb2.BatchingConfig()
        for k, v in settings.items():
            if k not in model_pb2.BatchingConfig.DESCRIPTOR.fields_by_name:
                raise TypeError("set_serving_config: %r is not a BatchingConfig field (%s)" % (
                    k, ", ".join(model_pb2.BatchingConfig.DESCRIPTOR.fields_by_name)))
            if k == "preferred_batch_sizes":
                cfg.preferred_batch_sizes.extend(v)
            else:
                setattr(cfg, k, v)
        return self.models.SetServingConfig(model_pb2.SetServingConfigRequest(
            name=name, config=cfg, fields=list(settings), reset=reset), timeout=self.timeout)

    @wrap
    def set_canary(self, name: str, version: int = 0, percent: int = 0,
                   off: bool = False) -> model_pb2.CanaryConfig:
        """ModelService.SetCanary: serves version beside the main one and sends
        it percent (0..100) of the requests that name no version (exactly
        floor(N * percent / 100) of every N), or stops it (off=True); returns
        the canary in force (version 0: none)."""
        return self.models.SetCanary(model_pb2.SetCanaryRequest(
            name=name, version=version, percent=percent, off=off), timeout=self.timeout)

    # ---------------------------------------------------------- inference

    @wrap
    def server_live(self) -> bool:
        """GRPCInferenceService.ServerLive."""
        return self.inference.ServerLive(infer_pb2.ServerLiveRequest(), timeout=self.timeout).live

    @wrap
    def server_ready(self) -> bool:
        """GRPCInferenceService.ServerReady."""
        return self.inference.ServerReady(infer_pb2.ServerReadyRequest(),
                                          timeout=self.timeout).ready

    @wrap
    def server_metadata(self) -> infer_pb2.ServerMetadataResponse:
        """GRPCInferenceService.ServerMetadata: name, version, extensions."""
        return self.inference.ServerMetadata(infer_pb2.ServerMetadataRequest(),
                                             timeout=self.timeout)

    @wrap
    def model_ready(self, name: str, version: Union[str, int] = "") -> bool:
        """GRPCInferenceService.ModelReady ("": the served version; a number or an alias)."""
        return self.inference.ModelReady(infer_pb2.ModelReadyRequest(
            name=name, version=str(version or "")), timeout=self.timeout).ready

    @wrap
    def model_metadata(self, name: str,
                       version: Union[str, int] = "") -> infer_pb2.ModelMetadataResponse:
        """GRPCInferenceService.ModelMetadata: versions, input and output
        tensors (name, datatype, shape)."""
        return self.inference.ModelMetadata(infer_pb2.ModelMetadataRequest(
            name=name, version=str(version or "")), timeout=self.timeout)

    @wrap
    def infer_raw(self, request: infer_pb2.ModelInferRequest) -> infer_pb2.ModelInferResponse:
        """GRPCInferenceService.ModelInfer with a request you built
        (infer_request(...)); returns the response."""
        return self.inference.ModelInfer(request, timeout=self.timeout)

    @wrap
    def infer(self, model: str, inputs: Mapping[str, ArrayLike],
              outputs: Optional[Sequence[str]] = None, raw: bool = False,
              version: Union[str, int] = "") -> Dict[str, np.ndarray]:
        """GRPCInferenceService.ModelInfer: inputs {name: array-like};
        outputs: names to return (None: all); raw: send bytes rather than
        typed contents. Returns {output name: numpy array}."""
        resp = self.inference.ModelInfer(infer_request(model, inputs, outputs, raw, version),
                                         timeout=self.timeout)
        return infer_outputs(resp)

    @wrap
    def model_statistics(self, name: str = "",
                         version: Union[str, int] = "") -> List[infer_pb2.ModelStatistics]:
        """GRPCInferenceService.ModelStatistics ("": every model)."""
        return list(self.inference.ModelStatistics(infer_pb2.ModelStatisticsRequest(
            name=name, version=str(version or "")), timeout=self.timeout).model_stats)

    @wrap
    def repository_index(self, ready: bool = False
                         ) -> List[infer_pb2.RepositoryIndexResponse.ModelIndex]:
        """GRPCInferenceService.RepositoryIndex (ready: only loaded models)."""
        return list(self.inference.RepositoryIndex(infer_pb2.RepositoryIndexRequest(
            ready=ready), timeout=self.timeout).models)

    @wrap
    def load_model(self, name: str,
                   parameters: Optional[Mapping[str, Union[bool, int, str]]] = None) -> None:
        """GRPCInferenceService.RepositoryModelLoad; parameters: batching
        settings {"max_batch_size": 8, ...} (bool, int or str values),
        stored with the model."""
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

    @wrap
    def unload_model(self, name: str) -> None:
        """GRPCInferenceService.RepositoryModelUnload: stops serving it (the
        model stays defined)."""
        self.inference.RepositoryModelUnload(infer_pb2.RepositoryModelUnloadRequest(
            model_name=name), timeout=self.timeout)

    # ------------------------------------------------------------ cluster

    @wrap
    def status(self) -> cluster_pb2.GetStatusResponse:
        """ClusterService.GetStatus: version, uptime, devices, counts."""
        return self.cluster.GetStatus(cluster_pb2.GetStatusRequest(), timeout=self.timeout)

    @wrap
    def get_queue(self) -> cluster_pb2.GetQueueResponse:
        """ClusterService.GetQueue: devices (slots, memory), teams (weight,
        usage, share, quota) and jobs (running first, then queued by
        position, each with the reason it waits); a non-admin sees its own
        team's."""
        return self.cluster.GetQueue(cluster_pb2.GetQueueRequest(), timeout=self.timeout)
