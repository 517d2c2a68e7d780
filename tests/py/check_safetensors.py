#!/usr/bin/python3
"""Interop test for Fluxion's safetensors checkpoints.

Usage: check_safetensors.py PATH/TO/test_safetensors

Proves that other tools read our files and that we read theirs:

1. `test_safetensors --write F` writes a known file; an independent reader
   written here with only struct + json + numpy (following the format's
   description, not our code) reads it and compares every value with
   expectations computed here, checks the layout rules (header padded with
   spaces to a multiple of 8, offsets covering the data buffer without holes
   or overlap, every tensor aligned to its element size) and the metadata.
2. Files written here (compact JSON, indented JSON, unpadded header, non-ASCII
   names as \\u escapes, header order different from data order) are read by
   `test_safetensors --read F`, whose printed values are compared.
3. A corrupt file written here is refused with a message naming the tensor.

If the `safetensors` Python package is importable (it is not packaged for
Debian bookworm), its numpy loader cross-checks step 1 as well.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:  # python3-numpy is not installed: skip (ctest SKIP_RETURN_CODE)
    print("numpy is not available; skipping the safetensors interop test")
    sys.exit(77)

DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "I64": "<i8"}
ODD_NAME = 'na\u00efve "q"/\\ \U0001F600'


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    """An independent reader: returns ({name: ndarray}, metadata, raw header
    bytes). BF16 comes back as uint16 bits."""
    with open(path, "rb") as f:
        blob = f.read()
    check(len(blob) >= 8, "file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    check(8 + n <= len(blob), "header length %d exceeds the file" % n)
    raw = blob[8 : 8 + n]
    header = json.loads(raw.decode("utf-8"))
    check(isinstance(header, dict), "header is not an object")
    meta = header.pop("__metadata__", {})
    data = blob[8 + n :]
    spans = []
    out = {}
    for name, info in header.items():
        check(set(info) == {"dtype", "shape", "data_offsets"}, "fields of %r: %r" % (name, info))
        dt = np.dtype(DTYPES[info["dtype"]])
        b, e = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        check(e - b == count * dt.itemsize, "%r: offsets %r vs shape %r" % (name, (b, e), info["shape"]))
        check(0 <= b <= e <= len(data), "%r: offsets out of the buffer" % name)
        spans.append((b, e, name))
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"])
    pos = 0
    for b, e, name in sorted(spans):
        check(b == pos, "hole or overlap before %r" % name)
        pos = e
    check(pos == len(data), "tensors do not cover the data buffer")
    return out, meta, raw, header


def expect_known():
    return {
        "f32": (np.arange(6, dtype=np.float32) * 0.5 - 1).reshape(2, 3),
        "i32": np.array([-(2**31), -1, 0, 2**31 - 1], dtype=np.int32),
        "i64": np.array([-(2**40), 1, 2**62 + 5, -1], dtype=np.int64).reshape(2, 2),
        "f16": np.array([1, -2, 0.5], dtype=np.float16),
        "bf16": np.array([1, -3], dtype=np.float32),  # compared after bf16_to_f32
        "scalar": np.array(42, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        ODD_NAME: np.array([7.25], dtype=np.float32),
    }


def check_ours(tool, tmp):
    path = os.path.join(tmp, "ours.safetensors")
    subprocess.run([tool, "--write", path], check=True)
    tensors, meta, raw, header = read_safetensors(path)
    check(len(raw) % 8 == 0, "header length %d is not a multiple of 8" % len(raw))
    body = raw.rstrip(b" ")
    check(body.endswith(b"}") and len(raw) - len(body) < 8, "header padding is not spaces")
    want = expect_known()
    check(list(header) == list(want), "names/order: %r" % list(header))
    for name, w in want.items():
        got = tensors[name]
        if name == "bf16":
            got = bf16_to_f32(got)
        check(got.shape == w.shape, "%r shape %r != %r" % (name, got.shape, w.shape))
        check(got.dtype.kind == w.dtype.kind, "%r dtype %r" % (name, got.dtype))
        check(np.array_equal(got, w), "%r values %r != %r" % (name, got, w))
        b = header[name]["data_offsets"][0]
        size = np.dtype(DTYPES[header[name]["dtype"]]).itemsize
        check((8 + len(raw) + b) % size == 0, "%r is not aligned in the file" % name)
    check(
        meta == {"format": "pt", "epoch": "7", "note": 'line1\nline2 "q" \\ tab\t \u00e9'},
        "metadata %r" % meta,
    )
    try:
        from safetensors import safe_open  # optional: not in Debian bookworm
    except ImportError:
        print("safetensors package not installed; the independent reader checked our file")
        return
    with safe_open(path, framework="np") as f:
        check(f.metadata()["epoch"] == "7", "safetensors package: metadata")
        for name in ("f32", "i32", "i64", "f16", "scalar", "empty", ODD_NAME):
            check(np.array_equal(f.get_tensor(name), want[name]), "safetensors package: %r" % name)
    print("safetensors package read our file")


def write_safetensors(path, tensors, meta=None, order=None, pad=True, indent=None):
    """Writes tensors {name: (DTYPE, ndarray)}; data in the order given by
    `order` (names), header in dict order."""
    header = {}
    chunks = []
    pos = 0
    for name in order or list(tensors):
        dt, arr = tensors[name]
        b = np.ascontiguousarray(arr, dtype=DTYPES[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [pos, pos + len(b)]}
        chunks.append(b)
        pos += len(b)
    ordered = {name: header[name] for name in tensors}
    if meta is not None:
        ordered["__metadata__"] = meta
    text = json.dumps(ordered, indent=indent).encode("utf-8")  # ensure_ascii: \u escapes
    if pad:
        text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def run_read(tool, path):
    r = subprocess.run([tool, "--read", path], capture_output=True)
    return r.returncode, r.stdout.decode("utf-8"), r.stderr.decode("utf-8", "replace")


def parse_read(out):
    got = {}
    for line in out.splitlines():
        name, dt, shape, values = line.split("\t")
        got[name] = (dt, shape, values.split())
    return got


def check_theirs(tool, tmp):
    emoji = "w\u00e9ight \U0001F600"
    tensors = {
        "layer.weight": ("F32", (np.arange(6, dtype=np.float32) * 0.25 - 0.5).reshape(3, 2)),
        "step": ("I64", np.array([-(2**63), 2**63 - 1, 12345], dtype=np.int64)),
        "labels": ("I32", np.array([[7, -8], [2**31 - 1, -(2**31)]], dtype=np.int32)),
        "half": ("F16", np.array([1.5, -0.25], dtype=np.float16)),
        "brain": ("BF16", np.array([0x3F80, 0x4000, 0xBF00], dtype=np.uint16)),
        "none": ("I32", np.zeros((0,), dtype=np.int32)),
        emoji: ("F32", np.array(3.5, dtype=np.float32)),
    }
    data_order = ["half", emoji, "step", "none", "layer.weight", "brain", "labels"]
    variants = [
        dict(meta={"format": "np", "note": "\u00e9"}, order=data_order, pad=True, indent=None),
        dict(meta=None, order=None, pad=False, indent=None),
        dict(meta={}, order=list(reversed(data_order)), pad=True, indent=2),
    ]
    for i, v in enumerate(variants):
        path = os.path.join(tmp, "theirs%d.safetensors" % i)
        write_safetensors(path, tensors, **v)
        rc, out, err = run_read(tool, path)
        check(rc == 0, "variant %d: --read failed: %s" % (i, err))
        got = parse_read(out)
        check(list(got) == list(tensors), "variant %d: names/order %r" % (i, list(got)))
        for name, (dt, arr) in tensors.items():
            gdt, gshape, gvals = got[name]
            check(gdt == dt.lower(), "%r dtype %r" % (name, gdt))
            check(gshape == "[" + ",".join(str(d) for d in arr.shape) + "]", "%r shape %r" % (name, gshape))
            flat = arr.reshape(-1)
            if dt == "F16":  # printed as raw bits
                flat = flat.view(np.uint16)
            if dt == "F32":
                vals = np.array([float(x) for x in gvals], dtype=np.float32)
            else:
                vals = np.array([int(x) for x in gvals], dtype=flat.dtype)
            check(np.array_equal(vals, flat), "variant %d: %r values %r != %r" % (i, name, vals, flat))

    # A corrupt file: offsets that do not match the shape.
    path = os.path.join(tmp, "bad.safetensors")
    text = json.dumps({"bad.weight": {"dtype": "F32", "shape": [5, 20], "data_offsets": [0, 100]}})
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text.encode() + bytes(100))
    rc, out, err = run_read(tool, path)
    check(rc != 0, "corrupt file was accepted")
    check("bad.weight" in err and "format error" in err, "message: %r" % err)


def main():
    if len(sys.argv) != 2:
        fail("usage: check_safetensors.py PATH/TO/test_safetensors")
    tool = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="fx_st_py_") as tmp:
        check_ours(tool, tmp)
        check_theirs(tool, tmp)
    print("safetensors interop: OK")


if __name__ == "__main__":
    main()
