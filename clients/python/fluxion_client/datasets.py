"""Datasets (fluxion.v1.DatasetService): named arrays whose first dimension
is the sample index, uploaded as a stream of chunks of samples so datasets
far larger than one gRPC message go through.

    c.upload_dataset("xor", {"x": x.astype(np.float32), "y": y.astype(np.int64)})
"""
import numpy as np

from . import _stubs  # noqa: F401  (puts the generated stubs on sys.path)
from .errors import from_rpc_error

try:
    from fluxion.v1 import dataset_pb2, dataset_pb2_grpc, model_pb2
except ImportError as err:  # pragma: no cover - depends on the build
    raise ImportError("fluxion_client needs the generated dataset stubs (build the project): "
                      "%s" % err) from err

import grpc

_DTYPES = {
    np.dtype(np.float32): model_pb2.FP32,
    np.dtype(np.int32): model_pb2.INT32,
    np.dtype(np.int64): model_pb2.INT64,
}


def _array(name, value):
    """A C-contiguous little-endian array of a stored dtype with a sample
    dimension. float64 becomes float32, Python ints int64."""
    arr = np.asarray(value)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in _DTYPES:
        raise TypeError("tensor %r: dtype %s is not stored (float32, int32, int64)"
                        % (name, arr.dtype))
    if arr.ndim < 1:
        raise ValueError("tensor %r: needs a first dimension (the samples)" % name)
    return np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<")))


def tensor_data(name, arr, start=0, stop=None):
    """A TensorData holding samples [start, stop) of arr (already checked)."""
    piece = arr[start:stop]
    return dataset_pb2.TensorData(name=name, dtype=_DTYPES[arr.dtype.newbyteorder("=")],
                                  shape=list(piece.shape), data=piece.tobytes())


def upload_chunks(name, arrays, description="", chunk_samples=None, chunk_bytes=4 << 20):
    """The UploadDatasetChunk messages of an upload: each carries the same
    range of samples of every tensor. chunk_samples (default: as many as fit
    in about chunk_bytes) sets the range's length."""
    arrs = {k: _array(k, v) for k, v in arrays.items()}
    n = max((len(a) for a in arrs.values()), default=0)
    if not chunk_samples:
        row = sum(a[:1].nbytes for a in arrs.values()) or 1
        chunk_samples = max(1, chunk_bytes // row)
    first = True
    for start in range(0, max(n, 1), chunk_samples):
        c = dataset_pb2.UploadDatasetChunk()
        if first:
            c.name, c.description = name, description
            first = False
        for k, a in arrs.items():
            if start < len(a):
                c.tensors.append(tensor_data(k, a, start, start + chunk_samples))
        yield c


class DatasetsMixin:
    """Dataset calls of Client (needs self.channel and self.timeout)."""

    @property
    def datasets(self):
        stub = getattr(self, "_datasets_stub", None)
        if stub is None:
            stub = self._datasets_stub = dataset_pb2_grpc.DatasetServiceStub(self.channel)
        return stub

    def upload_dataset(self, name, arrays, description="", chunk_samples=None,
                       chunk_bytes=4 << 20, chunks=None):
        """Uploads {tensor name: array} (first dimension: samples) in chunks
        of chunk_samples samples; returns the stored Dataset. chunks: an
        iterable of UploadDatasetChunk to send instead (tests, resumable
        sources)."""
        if chunks is None:
            chunks = upload_chunks(name, arrays, description, chunk_samples, chunk_bytes)
        try:
            return self.datasets.UploadDataset(iter(chunks), timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err, "upload_dataset") from None

    def get_dataset(self, name):
        try:
            return self.datasets.GetDataset(dataset_pb2.GetDatasetRequest(name=name),
                                            timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err, "get_dataset") from None

    def list_datasets(self):
        try:
            return list(self.datasets.ListDatasets(dataset_pb2.ListDatasetsRequest(),
                                                   timeout=self.timeout).datasets)
        except grpc.RpcError as err:
            raise from_rpc_error(err, "list_datasets") from None

    def delete_dataset(self, name):
        try:
            self.datasets.DeleteDataset(dataset_pb2.DeleteDatasetRequest(name=name),
                                        timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err, "delete_dataset") from None
