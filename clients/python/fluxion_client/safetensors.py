"""safetensors (https://github.com/huggingface/safetensors) in and out of
numpy, without the safetensors package: an 8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets}}, then the data."""
import json
import struct

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v).newbyteorder("<").str: k for k, v in _DTYPES.items()}


def load(data):
    """{name: numpy array} from safetensors bytes; ValueError when malformed."""
    data = bytes(data)
    if len(data) < 8:
        raise ValueError("safetensors: %d bytes, shorter than the header length" % len(data))
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise ValueError("safetensors: header length %d past the end (%d bytes)"
                         % (hlen, len(data)))
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    body = memoryview(data)[8 + hlen:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if not 0 <= start <= end <= len(body):
            raise ValueError("safetensors: %s: data_offsets %r outside the data"
                             % (name, (start, end)))
        count = int(np.prod(shape, dtype=np.int64))
        if (end - start) != count * dtype.itemsize:
            raise ValueError("safetensors: %s: %d bytes for shape %r" % (name, end - start, shape))
        out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape).astype(
            dtype.newbyteorder("="))
    return out


def dump(tensors, metadata=None):
    """safetensors bytes for {name: numpy array} (names sorted, as the format
    recommends)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        dtype = arr.dtype.newbyteorder("<")
        if dtype.str not in _NAMES:
            raise ValueError("safetensors: %s: dtype %s not supported" % (name, arr.dtype))
        raw = arr.astype(dtype).tobytes()
        header[name] = {"dtype": _NAMES[dtype.str], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(hjson)) + hjson + b"".join(blobs)


# json-style names for the same functions.
loads = load
dumps = dump
