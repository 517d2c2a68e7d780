"""Datasets (fluxion.v1.DatasetService): named arrays whose first dimension
is the sample index, uploaded as a stream of chunks of samples so datasets
far larger than one gRPC message go through.

    c.upload_dataset("xor", {"x": x.astype(np.float32), "y": y.astype(np.int64)})
"""
from __future__ import annotations

from typing import Iterable, Iterator, List, Mapping, Optional

import grpc
import numpy as np
from numpy.typing import ArrayLike

from ._stubs import dataset_pb2, dataset_pb2_grpc, model_pb2
from .errors import wrap

_DTYPES = {
    np.dtype(np.float32): model_pb2.FP32,
    np.dtype(np.int32): model_pb2.INT32,
    np.dtype(np.int64): model_pb2.INT64,
}


def _array(name: str, value: ArrayLike) -> np.ndarray:
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


def tensor_data(name: str, arr: np.ndarray, start: int = 0,
                stop: Optional[int] = None) -> dataset_pb2.TensorData:
    """A TensorData holding samples [start, stop) of arr (already checked)."""
    piece = arr[start:stop]
    return dataset_pb2.TensorData(name=name, dtype=_DTYPES[arr.dtype.newbyteorder("=")],
                                  shape=list(piece.shape), data=piece.tobytes())


def upload_chunks(name: str, arrays: Mapping[str, ArrayLike], description: str = "",
                  chunk_samples: Optional[int] = None,
                  chunk_bytes: int = 4 << 20) -> Iterator[dataset_pb2.UploadDatasetChunk]:
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
    """DatasetService calls of Client (needs self.channel and self.timeout)."""

    channel: grpc.Channel
    timeout: Optional[float]

    @property
    def datasets(self) -> dataset_pb2_grpc.DatasetServiceStub:
        """The raw DatasetService stub on the client's channel."""
        stub = getattr(self, "_datasets_stub", None)
        if stub is None:
            stub = self._datasets_stub = dataset_pb2_grpc.DatasetServiceStub(self.channel)
        return stub

    @wrap
    def upload_dataset(self, name: str, arrays: Mapping[str, ArrayLike], description: str = "",
                       chunk_samples: Optional[int] = None, chunk_bytes: int = 4 << 20,
                       chunks: Optional[Iterable[dataset_pb2.UploadDatasetChunk]] = None
                       ) -> dataset_pb2.Dataset:
        """DatasetService.UploadDataset: uploads {tensor name: array} (first
        dimension: samples) in chunks of chunk_samples samples (default: about
        chunk_bytes each); returns the stored Dataset. chunks: an iterable of
        UploadDatasetChunk to send instead (tests, resumable sources)."""
        if chunks is None:
            chunks = upload_chunks(name, arrays, description, chunk_samples, chunk_bytes)
        return self.datasets.UploadDataset(iter(chunks), timeout=self.timeout)

    @wrap
    def get_dataset(self, name: str) -> dataset_pb2.Dataset:
        """DatasetService.GetDataset: its tensors, sample count, size, sha256."""
        return self.datasets.GetDataset(dataset_pb2.GetDatasetRequest(name=name),
                                        timeout=self.timeout)

    @wrap
    def list_datasets(self) -> List[dataset_pb2.Dataset]:
        """DatasetService.ListDatasets: the caller's team's datasets."""
        return list(self.datasets.ListDatasets(dataset_pb2.ListDatasetsRequest(),
                                               timeout=self.timeout).datasets)

    @wrap
    def delete_dataset(self, name: str) -> None:
        """DatasetService.DeleteDataset."""
        self.datasets.DeleteDataset(dataset_pb2.DeleteDatasetRequest(name=name),
                                    timeout=self.timeout)
