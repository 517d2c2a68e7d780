#!/usr/bin/env python3
"""onnx_bench.py - the inference peer: the fluxion-bench mlp on ONNX Runtime.

    onnx_bench.py export --weights W.safetensors --out mlp.onnx
    onnx_bench.py forward --onnx mlp.onnx --batch B [--reps R] [--warmup W]

export builds the mlp (784-512 relu-256 relu-10) as a torch module, loads the
weights `fluxion-bench forward --save-weights` wrote (same names and [out,in]
layout as nn.Linear), exports it with torch.onnx.export (opset 17, dynamic
batch) and checks that ONNX Runtime's output on the saved input
("check.input") matches fluxion's ("check.output"): it prints the largest
absolute difference and fails above 1e-3.

forward times InferenceSession.run on CPUExecutionProvider with one intra-op
thread, one inter-op thread and sequential execution (the 1-thread peer),
on a pool of 8 N(0,1) batches, one run per call, and prints a JSON line in
the format of `fluxion-bench forward` ("impl":"onnxruntime").

Needs numpy, torch (export only) and onnxruntime: tests/bench/venv.sh.
"""
import argparse
import json
import struct
import sys
import time

import warnings

import numpy as np


def load_safetensors(path):
    """Reads a safetensors file (F32 and I32 tensors) into numpy arrays."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for safetensors")
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} past the end")
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dt = {"F32": np.float32, "I32": np.int32}.get(t["dtype"])
        if dt is None:
            raise ValueError(f"{path}: {name}: dtype {t['dtype']} not supported here")
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(body[b:e], dtype=dt).reshape(t["shape"]).copy()
    return out


def build_mlp():
    import torch.nn as nn
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def export(args):
    import torch
    import onnxruntime as ort
    t = load_safetensors(args.weights)
    net = build_mlp().eval()
    layers = {"fc1": net[0], "fc2": net[2], "fc3": net[4]}
    with torch.no_grad():
        for name, lin in layers.items():
            lin.weight.copy_(torch.from_numpy(t[f"mlp.{name}.weight"]))
            lin.bias.copy_(torch.from_numpy(t[f"mlp.{name}.bias"]))
    x = torch.from_numpy(t["check.input"])
    kw = {}
    if "dynamo" in torch.onnx.export.__code__.co_varnames:
        kw["dynamo"] = False  # the TorchScript exporter: same graph under torch 1.13 and 2.x
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter
    torch.onnx.export(net, (x,), args.out, opset_version=17, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch"},
                                                             "logits": {0: "batch"}}, **kw)
    sess = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": t["check.input"]})[0]
    diff = float(np.max(np.abs(got - t["check.output"])))
    with torch.no_grad():
        tdiff = float(np.max(np.abs(net(x).numpy() - t["check.output"])))
    print(json.dumps({"bench": "export", "onnx": args.out, "max_abs_diff_ort_vs_fluxion": diff,
                      "max_abs_diff_torch_vs_fluxion": tdiff, "torch": torch.__version__,
                      "onnxruntime": ort.__version__}))
    if not diff <= 1e-3:
        print(f"onnx_bench: ONNX Runtime's output differs from fluxion's by {diff}", file=sys.stderr)
        return 1
    return 0


def forward(args):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(1234)
    pool = [rng.standard_normal((args.batch, 784), dtype=np.float32) for _ in range(8)]
    us = []
    c0 = t_all = 0.0
    for r in range(args.warmup + args.reps):
        if r == args.warmup:
            c0, t_all = time.process_time(), time.perf_counter()
        t = time.perf_counter()
        sess.run(None, {name: pool[r % 8]})
        dt = time.perf_counter() - t
        if r >= args.warmup:
            us.append(dt * 1e6)
    cpu = (time.process_time() - c0) / (time.perf_counter() - t_all)
    us.sort()
    n = len(us)
    print(json.dumps({"bench": "forward", "impl": "onnxruntime", "model": "mlp",
                      "batch": args.batch, "threads": args.threads, "reps": n,
                      "median_us": round(us[n // 2], 2), "p10_us": round(us[n // 10], 2),
                      "p90_us": round(us[n * 9 // 10], 2), "mean_us": round(sum(us) / n, 2),
                      "samples_per_s": round(args.batch * 1e6 / us[n // 2], 1),
                      "cpu_util": round(cpu, 2), "onnxruntime": ort.__version__},
                     separators=(",", ":")))
    return 0


def positive(lo):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"needs an integer >= {lo}, got '{s}'")
        if v < lo:
            raise argparse.ArgumentTypeError(f"needs an integer >= {lo}, got '{s}'")
        return v
    return parse


def main():
    ap = argparse.ArgumentParser(description="The mlp forward on ONNX Runtime (1 thread).")
    sub = ap.add_subparsers(dest="cmd")
    ex = sub.add_parser("export", help="torch module with fluxion's weights -> ONNX, checked")
    ex.add_argument("--weights", required=True, help="from fluxion-bench forward --save-weights")
    ex.add_argument("--out", required=True, help="the .onnx file to write")
    fw = sub.add_parser("forward", help="time one forward per call, print a JSON line")
    fw.add_argument("--onnx", required=True)
    fw.add_argument("--batch", type=positive(1), default=8)
    fw.add_argument("--threads", type=positive(1), default=1, help="intra_op_num_threads")
    fw.add_argument("--reps", type=positive(1), default=2000)
    fw.add_argument("--warmup", type=positive(0), default=200)
    args = ap.parse_args()
    if args.cmd == "export":
        return export(args)
    if args.cmd == "forward":
        return forward(args)
    ap.print_usage(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
