#!/usr/bin/env python3
"""Writes the dataset of examples/jobs/mlp-blobs.json: N samples of 4
Gaussian blobs in the plane (x: float32 [N, 2], y: int64 [N], class = blob)
as a safetensors file for `fluxion dataset upload`:

    python3 examples/jobs/make_blobs.py blobs.safetensors [--samples N] [--seed S]
    fluxion dataset upload blobs blobs.safetensors
    fluxion model create examples/jobs/mlp-blobs-model.json
    fluxion train submit examples/jobs/mlp-blobs.json --watch

Only the standard library and numpy; the same seed gives the same file.
"""
import argparse
import json
import struct
import sys

import numpy as np

CENTERS = np.array([[-3, -3], [-3, 3], [3, -3], [3, 3]], np.float32)


def blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CENTERS), n).astype(np.int64)
    x = (CENTERS[y] + rng.standard_normal((n, 2))).astype(np.float32)
    return {"x": x, "y": y}


def safetensors_bytes(arrays):
    """The safetensors format: u64 little-endian header length, a JSON
    header of dtype/shape/offsets per tensor, then the raw data."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    header, blobs_, off = {}, [], 0
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k]).astype(arrays[k].dtype.newbyteorder("<"))
        data = a.tobytes()
        header[k] = {"dtype": names[a.dtype.newbyteorder("=")], "shape": list(a.shape),
                     "data_offsets": [off, off + len(data)]}
        blobs_.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs_)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the .safetensors file to write")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.samples < 1:
        ap.error("--samples must be at least 1")
    with open(a.out, "wb") as f:
        f.write(safetensors_bytes(blobs(a.samples, a.seed)))
    print("wrote %s: %d samples (x float32 [N, 2], y int64 [N], 4 classes)" % (a.out, a.samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
