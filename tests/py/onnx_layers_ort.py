"""Recurrent ONNX nodes PyTorch never writes, with onnxruntime's outputs as
the reference, for tests/integration/test_onnx_layers.py. Run with a
python that has onnx and onnxruntime (PyPI):

    onnx_layers_ort.py OUT_DIR

writes OUT_DIR/NAME.onnx and OUT_DIR/NAME.npz ("in:<input>", "out:<output>")
for single LSTM, GRU and RNN nodes: batch-major layout 1 (which onnxruntime
lacks: its reference is the layout-0 twin with transposed inputs and
outputs, as ONNX defines layout), bidirectional, with sequence_lens and
initial states as graph inputs, without a bias."""
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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: onnx_layers_ort.py OUT_DIR")
    main(sys.argv[1])
