"""Single ONNX layer nodes written as PyTorch never writes them, with
onnxruntime's outputs as the reference, for
tests/integration/test_onnx_layers.py. Run with a python that has onnx and
onnxruntime (PyPI):

    onnx_layers_ort.py OUT_DIR

writes OUT_DIR/NAME.onnx and OUT_DIR/NAME.npz ("in:<input>", "out:<output>"):
LSTM, GRU and RNN nodes batch-major (layout 1, which onnxruntime lacks: its
reference is the layout-0 twin with transposed inputs and outputs, as ONNX
defines layout), bidirectional, with sequence_lens and initial states as
graph inputs, without a bias; and Conv with auto_pad SAME_UPPER at stride
2, a grouped dilated ConvTranspose, MaxPool with a ceil_mode that keeps the
size, GroupNormalization at opsets 18 (per-group scale) and 21,
LayerNormalization over two axes without a bias, BatchNormalization on
[N, C, L]."""
import os
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def cell_model(op, D, H, IN, layout, lens, states, bias, attrs, rng):
    """One op node (and its layout-0 twin); the feeds."""
    G, N, T = GATES[op], 3, 5
    inits = [numpy_helper.from_array(rng.standard_normal((D, G * H, IN)).astype(np.float32), "W"),
             numpy_helper.from_array((0.5 * rng.standard_normal((D, G * H, H))).astype(np.float32), "R")]
    node_in = ["x", "W", "R", ""]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal((D, 2 * G * H)).astype(np.float32), "B"))
        node_in[3] = "B"
    xs = (N, T, IN) if layout else (T, N, IN)
    ins = [("x", TensorProto.FLOAT, xs)]
    feeds = {"x": rng.standard_normal(xs).astype(np.float32)}
    node_in.append("")
    if lens:
        ins.append(("lens", TensorProto.INT32, (N,)))
        feeds["lens"] = np.array([5, 2, 4], dtype=np.int32)
        node_in[4] = "lens"
    for k in (("h0", "c0") if op == "LSTM" else ("h0",)) if states else ():
        ss = (N, D, H) if layout else (D, N, H)
        ins.append((k, TensorProto.FLOAT, ss))
        feeds[k] = rng.standard_normal(ss).astype(np.float32)
        node_in.append(k)
    outs = ["y", "y_h"] + (["y_c"] if op == "LSTM" else [])
    attrs = dict(attrs, hidden_size=H, direction="bidirectional" if D == 2 else "forward")

    def model(layout_attr, with_shapes):
        a = dict(attrs, layout=1) if layout_attr else attrs
        node = helper.make_node(op, node_in, outs, name="cell", **a)
        g = helper.make_graph(
            [node], "g",
            [helper.make_tensor_value_info(n, t, s if with_shapes else None) for n, t, s in ins],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
        m.ir_version = 8
        return m

    return model(layout, True), model(False, False), feeds, outs


def reference(twin, feeds, layout):
    f = dict(feeds)
    if layout:
        for k in ("x", "h0", "c0"):
            if k in f:
                f[k] = np.ascontiguousarray(f[k].transpose(1, 0, 2))
    sess = ort.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"])
    res = sess.run(None, f)
    if layout:   # Y [T, D, N, H] -> [N, T, D, H]; states [D, N, H] -> [N, D, H]
        res = [res[0].transpose(2, 0, 1, 3)] + [r.transpose(1, 0, 2) for r in res[1:]]
    return res


CASES = [  # name, op, D, H, IN, layout, lens, states, bias, attrs
    ("ort_lstm_batch_major_bi", "LSTM", 2, 3, 4, 1, True, True, True, {}),
    ("ort_lstm_states", "LSTM", 1, 3, 4, 0, True, True, True, {}),
    ("ort_gru_batch_major_bi", "GRU", 2, 3, 4, 1, True, False, True, {"linear_before_reset": 1}),
    ("ort_gru_no_bias", "GRU", 1, 2, 4, 0, False, False, False, {"linear_before_reset": 1}),
    ("ort_rnn_bi_states", "RNN", 2, 3, 4, 0, True, True, True, {}),
]


def single(op, inputs, weights, attrs, opset, rng):
    """One node of op on graph inputs {name: shape} and constant weights
    {name: array}; onnxruntime gives the reference."""
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()]
    node = helper.make_node(op, list(inputs) + list(weights), ["y"], name="node", **attrs)
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10 if opset >= 21 else 8
    feeds = {k: rng.standard_normal(v).astype(np.float32) for k, v in inputs.items()}
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return m, feeds, ["y"], sess.run(None, feeds)


def layer_cases(rng):
    r = rng.standard_normal
    yield "ort_conv_same_stride2", single(
        "Conv", {"x": (2, 4, 9, 9)}, {"w": r((6, 2, 3, 3)), "b": r(6)},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2], "group": 2}, 17, rng)
    yield "ort_convtranspose_groups", single(
        "ConvTranspose", {"x": (2, 4, 5, 5)}, {"w": r((4, 3, 3, 3))},
        {"group": 2, "strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 1, 0],
         "output_padding": [1, 0]}, 17, rng)
    yield "ort_maxpool_ceil", single(
        "MaxPool", {"x": (1, 2, 7, 9)}, {},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 1, 1]}, 13, rng)
    yield "ort_groupnorm18", single(
        "GroupNormalization", {"x": (2, 6, 4, 3)}, {"s": r(3), "b": r(3)},
        {"num_groups": 3, "epsilon": 1e-3}, 18, rng)
    yield "ort_groupnorm21", single(
        "GroupNormalization", {"x": (2, 6, 5)}, {"s": r(6), "b": r(6)}, {"num_groups": 2}, 21, rng)
    yield "ort_layernorm_2axes", single(
        "LayerNormalization", {"x": (2, 3, 4, 5)}, {"s": r((4, 5))}, {"axis": -2}, 17, rng)
    yield "ort_batchnorm_ncl", single(
        "BatchNormalization", {"x": (2, 3, 7)},
        {"s": r(3), "b": r(3), "m": r(3), "v": rng.uniform(0.5, 2, 3)}, {"epsilon": 1e-3}, 15, rng)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, op, D, H, IN, layout, lens, states, bias, attrs in CASES:
        m, twin, feeds, outs = cell_model(op, D, H, IN, layout, lens, states, bias, attrs, rng)
        with open(os.path.join(out_dir, name + ".onnx"), "wb") as f:
            f.write(m.SerializeToString())
        arrays = {"in:" + k: v for k, v in feeds.items()}
        arrays.update({"out:" + k: np.ascontiguousarray(v)
                       for k, v in zip(outs, reference(twin, feeds, layout))})
        np.savez(os.path.join(out_dir, name + ".npz"), **arrays)
    for name, (m, feeds, outs, res) in layer_cases(rng):
        with open(os.path.join(out_dir, name + ".onnx"), "wb") as f:
            f.write(m.SerializeToString())
        arrays = {"in:" + k: v for k, v in feeds.items()}
        arrays.update({"out:" + k: v for k, v in zip(outs, res)})
        np.savez(os.path.join(out_dir, name + ".npz"), **arrays)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: onnx_layers_ort.py OUT_DIR")
    main(sys.argv[1])
