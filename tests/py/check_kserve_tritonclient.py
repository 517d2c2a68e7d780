#!/usr/bin/env python3
"""The KServe REST codec (server/http/kserve.c) against NVIDIA's tritonclient.

Usage: check_kserve_tritonclient.py PATH/TO/kserve_tool

tritonclient.http is the client our HTTP API has to serve, so its own code
makes the bodies and reads the answers, not ours:

1. Requests built by tritonclient.http.InferInput / InferRequestedOutput and
   its _get_inference_request (the body and Inference-Header-Content-Length
   it would send), for every datatype we support, binary and JSON data, mixed
   in one request, are decoded by `kserve_tool decode`; the tensors that come
   out (typed contents or raw_input_contents) must equal the numpy arrays.
2. `kserve_tool echo` answers each request as a model returning its inputs
   would; tritonclient's InferResult parses that body (JSON part, binary
   tail, its header length) and as_numpy must give the arrays back, binary
   or JSON as each output asked.
3. The request parameters tritonclient writes (sequence, priority, timeout,
   custom ones, binary_data_output) arrive as typed InferParameters.
4. A body tritonclient would not send (a cut binary part) is refused.

The HTTP half of tritonclient needs gevent only for its client class; where
that is missing the encoder and decoder modules are loaded on their own.
Exit 77 (skipped) without tritonclient, numpy or rapidjson.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import types

try:
    import numpy as np
    import tritonclient
    import tritonclient.utils as tu
except ImportError as e:
    print(f"SKIPPED: {e}")
    sys.exit(77)

try:
    import tritonclient.http as th
    InferInput, InferRequestedOutput = th.InferInput, th.InferRequestedOutput
    InferResult = th.InferResult
    from tritonclient.http._utils import _get_inference_request
except (ImportError, RuntimeError):
    # tritonclient[grpc] only: the http package's __init__ wants gevent, so
    # stand in for the package and import its pure modules directly.
    pkg = types.ModuleType("tritonclient.http")
    pkg.__path__ = [os.path.join(os.path.dirname(tritonclient.__file__), "http")]
    sys.modules["tritonclient.http"] = pkg
    try:
        from tritonclient.http._infer_input import InferInput
        from tritonclient.http._requested_output import InferRequestedOutput
        from tritonclient.http._infer_result import InferResult
        from tritonclient.http._utils import _get_inference_request
    except ImportError as e:
        print(f"SKIPPED: tritonclient.http's modules: {e}")
        sys.exit(77)

TOOL = sys.argv[1] if len(sys.argv) > 1 else None
if not TOOL or not os.access(TOOL, os.X_OK):
    print("usage: check_kserve_tritonclient.py PATH/TO/kserve_tool", file=sys.stderr)
    sys.exit(2)

RNG = np.random.default_rng(7)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what, file=sys.stderr)
    return cond


def sample(dtype, shape):
    """A random array of a Triton datatype, with the extremes in it."""
    n = int(np.prod(shape))
    if dtype == "BYTES":
        words = [b"", b"a", "na\u00efve".encode(), b"\x00\xff", b"x" * 300]
        flat = [words[i % len(words)] for i in range(n)]
        return np.array(flat, dtype=np.object_).reshape(shape)
    npt = tu.triton_to_np_dtype(dtype)
    if dtype == "BOOL":
        flat = RNG.integers(0, 2, n).astype(bool)
    elif np.issubdtype(npt, np.integer):
        info = np.iinfo(npt)
        flat = RNG.integers(info.min, info.max, n, dtype=npt, endpoint=True)
        if n >= 2:
            flat[0], flat[1] = info.min, info.max
    else:
        flat = (RNG.standard_normal(n) * 1e3).astype(npt)
        if n >= 2:
            flat[0], flat[1] = np.finfo(npt).max, np.finfo(npt).tiny
    return np.asarray(flat, dtype=npt).reshape(shape)


def run_tool(*args):
    return subprocess.run([TOOL, *args], capture_output=True, text=True)


def request_body(tensors, out_binary, request_id="r1"):
    """tensors: [(name, array, datatype, binary)]; out_binary: None (no
    outputs named: binary_data_output) or a list of bools, one per tensor."""
    inputs = []
    for name, arr, dtype, binary in tensors:
        inp = InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    outputs = None
    if out_binary is not None:
        outputs = [InferRequestedOutput(t[0], binary_data=b) for t, b in zip(tensors, out_binary)]
    return _get_inference_request(inputs=inputs, request_id=request_id, outputs=outputs,
                                  sequence_id=0, sequence_start=False, sequence_end=False,
                                  priority=0, timeout=None, custom_parameters=None)


def expected_raw(arr, dtype):
    if dtype == "BYTES":
        ser = tu.serialize_byte_tensor(arr)
        return ser.item() if ser.size else b""
    return np.ascontiguousarray(arr).tobytes()


TYPED = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
         "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
         "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
         "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def not_utf8(arr):
    try:
        for x in np.ravel(arr):
            x.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def same(a, b, dtype):
    if dtype == "BYTES":
        fa = [x if isinstance(x, bytes) else str(x).encode() for x in np.ravel(a)]
        fb = [x if isinstance(x, bytes) else str(x).encode() for x in np.ravel(b)]
        return a.shape == b.shape and fa == fb
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def check_decoded(label, tensors, decoded):
    raw = decoded.get("raw_input_contents")
    any_binary = any(t[3] for t in tensors)
    check(decoded.get("model_name") == "m" and decoded.get("id") == "r1",
          f"{label}: model_name/id {decoded.get('model_name')!r} {decoded.get('id')!r}")
    check(bool(raw) == any_binary, f"{label}: raw_input_contents present={bool(raw)}, "
                                   f"expected {any_binary}")
    for i, (name, arr, dtype, binary) in enumerate(tensors):
        t = decoded["inputs"][i]
        what = f"{label}: input {name}"
        check(t["name"] == name and t["datatype"] == dtype, f"{what}: name/datatype {t}")
        check(t.get("shape", []) == list(arr.shape), f"{what}: shape {t.get('shape')}")
        check("binary_data_size" not in str(t.get("parameters", {})),
              f"{what}: binary_data_size passed on as a parameter")
        if raw:
            got = base64.b64decode(raw[i])
            check(got == expected_raw(arr, dtype), f"{what}: raw bytes differ")
            continue
        vals = t.get("contents", {}).get(TYPED[dtype], [])
        if dtype == "BYTES":
            got = np.array([base64.b64decode(v) for v in vals], dtype=np.object_)
        else:
            got = np.array(vals, dtype=tu.triton_to_np_dtype(dtype))
        check(same(got.reshape(arr.shape), arr, dtype), f"{what}: typed values differ")


def round_trip(label, tensors, out_binary):
    body, json_size = request_body(tensors, out_binary)
    with tempfile.TemporaryDirectory() as d:
        path, out = os.path.join(d, "req"), os.path.join(d, "resp")
        with open(path, "wb") as f:
            f.write(body)
        hdr = str(json_size) if json_size is not None else "-"
        r = run_tool("decode", path, hdr)
        if not check(r.returncode == 0, f"{label}: refused: {r.stderr.strip()}"):
            return
        check_decoded(label, tensors, json.loads(r.stdout))
        r = run_tool("echo", path, hdr, out)
        if any(t[2] == "BYTES" and not_utf8(t[1]) and out_binary is not None and not b
               for t, b in zip(tensors, out_binary or [])):
            # JSON has no bytes, only text: such outputs must be asked for
            # as binary data, and are refused in JSON with the reason
            check(r.returncode == 1 and "not UTF-8" in r.stderr,
                  f"{label}: non-UTF-8 BYTES in JSON: {r.returncode} {r.stderr.strip()}")
            return
        if not check(r.returncode == 0, f"{label}: echo refused: {r.stderr.strip()}"):
            return
        json_len = int(r.stdout)
        with open(out, "rb") as f:
            resp = f.read()
    # the header only when there is a binary tail, as the HTTP layer sends it
    result = InferResult.from_response_body(resp, False,
                                            json_len if json_len < len(resp) else None)
    for i, (name, arr, dtype, _) in enumerate(tensors):
        want_bin = out_binary[i] if out_binary is not None else True
        out = result.get_output(name)
        if not check(out is not None, f"{label}: output {name} missing"):
            continue
        is_bin = "binary_data_size" in out.get("parameters", {})
        check(is_bin == want_bin, f"{label}: output {name} binary={is_bin}, asked {want_bin}")
        got = result.as_numpy(name)
        if dtype == "BYTES" and not is_bin:
            # JSON carries BYTES as strings: only UTF-8 ones survive, as in Triton
            continue
        check(got is not None and same(got, arr, dtype),
              f"{label}: output {name} differs after the round trip")


DTYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
          "FP32", "FP64", "BYTES"]

for dtype in DTYPES:
    for shape in ([2, 3], [1], [0, 4]):
        arr = sample(dtype, shape)
        for in_bin in (True, False):
            if dtype == "BYTES" and not in_bin and arr.size:
                # tritonclient sends BYTES in JSON as UTF-8 text only
                arr = np.array([b"abc", "\u00e9".encode()] * (arr.size // 2) +
                               [b"z"] * (arr.size % 2), dtype=np.object_).reshape(shape)
            for out_bin in ([True], [False], None):
                round_trip(f"{dtype}{shape} in_binary={in_bin} out={out_bin}",
                           [("x", arr, dtype, in_bin)], out_bin)

# several inputs, binary and JSON mixed in one request
mixed = [("a", sample("FP32", [2, 2]), "FP32", True),
         ("b", sample("INT64", [3]), "INT64", False),
         ("c", sample("BYTES", [2]), "BYTES", True),
         ("d", sample("UINT8", [4, 1]), "UINT8", False)]
round_trip("mixed", mixed, [True, False, True, False])
round_trip("mixed, binary_data_output", mixed, None)

# request parameters as tritonclient writes them reach the gRPC request typed
inp = InferInput("x", [1], "INT32")
inp.set_data_from_numpy(np.array([3], dtype=np.int32), binary_data=False)
body, json_size = _get_inference_request(inputs=[inp], request_id="r1", outputs=None,
                                         sequence_id=5, sequence_start=True, sequence_end=False,
                                         priority=3, timeout=1000,
                                         custom_parameters={"tag": "t", "scale": 0.5})
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "req")
    with open(path, "wb") as f:
        f.write(body)
    r = run_tool("decode", path, str(json_size) if json_size is not None else "-")
    if check(r.returncode == 0, f"parameters: refused: {r.stderr.strip()}"):
        params = json.loads(r.stdout).get("parameters", {})
        want = {"sequence_id": {"int64_param": 5}, "sequence_start": {"bool_param": True},
                "sequence_end": {"bool_param": False}, "priority": {"int64_param": 3},
                "timeout": {"int64_param": 1000}, "tag": {"string_param": "t"},
                "scale": {"double_param": 0.5}, "binary_data_output": {"bool_param": True}}
        check(params == want, f"parameters: {params}")

# a body cut inside its binary part is refused, not read past
body, json_size = request_body([("x", sample("FP32", [4]), "FP32", True)], None)
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "req")
    with open(path, "wb") as f:
        f.write(body[:-3])
    r = run_tool("decode", path, str(json_size))
    check(r.returncode == 1 and "inputs[0].parameters.binary_data_size" in r.stderr,
          f"cut body: {r.returncode} {r.stderr.strip()}")

if failures:
    print(f"{len(failures)} failures", file=sys.stderr)
    sys.exit(1)
print("kserve codec: tritonclient.http's requests decoded and its reader took our responses")
