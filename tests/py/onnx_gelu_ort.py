"""ONNX Gelu (opset 20) and Erf written by hand with onnxruntime's outputs
as the reference, for tests/integration/test_onnx_import.py (PyTorch 1.13
exports neither Gelu nor opset 20). Run with a python that has onnx and
onnxruntime (PyPI):

    onnx_gelu_ort.py OUT_DIR

writes OUT_DIR/NAME.onnx and OUT_DIR/NAME.npz ("in:x", "out:y"): Gelu with
approximate absent (exact), "none" and "tanh" after a Gemm, and Erf at
opset 13, on inputs wide enough to reach the tails."""
import os
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, checker, helper, numpy_helper


def model(name, opset, nodes, inits):
    g = helper.make_graph(nodes, name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9 if opset >= 20 else 8
    checker.check_model(m, full_check=True)
    return m


def cases(rng):
    w = numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "fc.weight")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fc.bias")
    gemm = helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], name="fc", transB=1)
    for approx in (None, "none", "tanh"):
        kw = {} if approx is None else {"approximate": approx}
        gelu = helper.make_node("Gelu", ["h"], ["y"], name="gelu", **kw)
        yield "gelu20_" + (approx or "default"), model("gelu", 20, [gemm, gelu], [w, b])
    yield "erf13", model("erf", 13, [helper.make_node("Erf", ["x"], ["y"], name="erf")], [])


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((6, 5))).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for name, m in cases(rng):
        data = m.SerializeToString()
        with open(os.path.join(out_dir, name + ".onnx"), "wb") as f:
            f.write(data)
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        (y,) = sess.run(["y"], {"x": x})
        np.savez(os.path.join(out_dir, name + ".npz"), **{"in:x": x, "out:y": y})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: onnx_gelu_ort.py OUT_DIR")
    main(sys.argv[1])
