"""ModelService/ExportOnnx (docs/onnx-export.md): every kind of stored
model exported to ONNX passes onnx.checker (full check) and onnxruntime
gives the daemon's ModelInfer outputs within 1e-4 at two batch sizes (the
dynamic batch dimension); input, output and node names are kept; losses
are left out; an op with no ONNX form is refused naming its node; --version
picks the version (Python client and CLI).

onnx and onnxruntime are PyPI packages installed into the python3 on PATH,
not into Debian's /usr/bin/python3 that ctest runs the integration tests
with: when they are not importable here, the test runs itself again with
the python3 on PATH (keeping PYTHONPATH: the generated stubs work there);
exit 77 (skipped) when neither python has them."""
import json
import os
import re
import shutil
import subprocess
import sys

try:
    import onnx
    import onnxruntime as ort
except ImportError as e:
    other = shutil.which("python3")
    if (other and not os.environ.get("FX_ONNX_REEXEC")
            and os.path.realpath(other) != os.path.realpath(sys.executable)):
        env = dict(os.environ, FX_ONNX_REEXEC="1")
        os.execve(other, [other, os.path.abspath(__file__)] + sys.argv[1:], env)
    print("skipped: %s (pip install onnx onnxruntime)" % e)
    sys.exit(77)

import fxtest  # noqa: E402
from fxtest import np  # noqa: E402
import grpc  # noqa: E402

TOL = 1e-4
BATCHES = (2, 5)


def dense(name, src, n_in, n_out, act=None, **kw):
    attrs = dict(in_features=n_in, out_features=n_out, **kw)
    if act:
        attrs["activation"] = act
    return {"name": name, "op": "dense", "inputs": [src], "attrs": attrs}


def node(name, op, inputs, **attrs):
    return {"name": name, "op": op, "inputs": list(inputs), "attrs": attrs}


def f32(name, *shape):
    return {"name": name, "dtype": "FP32", "shape": list(shape)}


def outs(*pairs):
    return [{"name": n, "source": s} for n, s in pairs]


# Each model: (spec, inputs(batch, rng) -> {name: array}).
def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def lengths(rng, n, t, dtype=np.int64):
    v = rng.integers(1, t + 1, size=n).astype(dtype)
    v[0] = t  # the longest sequence is always there, as in a padded batch
    return v


MODELS = {
    "mlp": ({
        "inputs": [f32("x", -1, 6)],
        "nodes": [dense("fc1", "x", 6, 16, "relu"), dense("fc2", "fc1", 16, 16, "tanh"),
                  dense("fc3", "fc2", 16, 12, "gelu"), dense("fc4", "fc3", 12, 8, "leaky_relu"),
                  dense("fc5", "fc4", 8, 8, "elu"), dense("fc6", "fc5", 8, 8, "sigmoid"),
                  dense("fc7", "fc6", 8, 4, bias=False),
                  node("probs", "softmax", ["fc7"])],
        "outputs": outs(("logits", "fc7"), ("probs", "probs")),
    }, lambda b, r: {"x": rand(r, b, 6)}),
    "cnn": ({
        "inputs": [f32("image", -1, 3, 12, 12)],
        "nodes": [
            node("conv1", "conv2d", ["image"], in_channels=3, out_channels=8, kernel_size=3,
                 padding=1),
            node("bn1", "batchnorm2d", ["conv1"], num_features=8),
            node("act1", "relu", ["bn1"]),
            node("pool", "maxpool2d", ["act1"], kernel_size=2),
            node("conv2", "conv2d", ["pool"], in_channels=8, out_channels=4,
                 kernel_size=[3, 2], stride=[1, 2], activation="relu", groups=2,
                 dilation=1),
            node("apool", "avgpool2d", ["conv2"], kernel_size=2, stride=1, padding=1,
                 count_include_pad=False),
            node("adapt", "adaptive_avgpool2d", ["apool"], output_size=[2, 3]),
            node("flat", "flatten", ["adapt"]),
            dense("fc", "flat", 4 * 2 * 3, 5),
            node("bn2", "batchnorm1d", ["fc"], num_features=5),
            node("gap", "global_avgpool2d", ["conv2"]),
        ],
        "outputs": outs(("scores", "bn2"), ("features", "pool"), ("gap", "gap")),
    }, lambda b, r: {"image": rand(r, b, 3, 12, 12)}),
    "deconv": ({
        "inputs": [f32("z", -1, 4, 5, 5), f32("sig", -1, 6, 9)],
        "nodes": [
            node("up", "conv_transpose2d", ["z"], in_channels=4, out_channels=6,
                 kernel_size=3, stride=2, padding=1, output_padding=1, activation="tanh"),
            node("up2", "conv_transpose2d", ["up"], in_channels=6, out_channels=2,
                 kernel_size=[2, 3], groups=2, bias=False, dilation=[1, 2]),
            node("gn", "groupnorm", ["up"], num_groups=3, num_channels=6),
            node("c1", "conv1d", ["sig"], in_channels=6, out_channels=4, kernel_size=3,
                 padding=2, dilation=2, stride=2, activation="sigmoid"),
            node("gn1", "groupnorm", ["c1"], num_groups=2, num_channels=4, affine=False),
            node("bn", "batchnorm1d", ["c1"], num_features=4, track_running_stats=False),
            node("even", "adaptive_avgpool2d", ["up"], output_size=[5, 2]),
        ],
        "outputs": outs(("up2", "up2"), ("gn", "gn"), ("gn1", "gn1"), ("bn", "bn"),
                        ("even", "even")),
    }, lambda b, r: {"z": rand(r, b, 4, 5, 5), "sig": rand(r, b, 6, 9)}),
    "embed": ({
        "inputs": [{"name": "tokens", "dtype": "INT64", "shape": [-1, 7]},
                   {"name": "ids", "dtype": "INT32", "shape": [-1]}],
        "nodes": [
            node("emb", "embedding", ["tokens"], num_embeddings=20, embedding_dim=6,
                 padding_idx=0),
            node("pooled", "mean", ["emb"], axes=[1]),
            node("emb2", "embedding", ["ids"], num_embeddings=9, embedding_dim=6),
            node("both", "add", ["pooled", "emb2"]),
            dense("head", "both", 6, 3),
        ],
        "outputs": outs(("head", "head"), ("emb", "emb")),
    }, lambda b, r: {"tokens": r.integers(0, 20, size=(b, 7)).astype(np.int64),
                     "ids": r.integers(0, 9, size=b).astype(np.int32)}),
    "rnn": ({
        "inputs": [f32("seq", -1, 6, 3), {"name": "lengths", "dtype": "INT32", "shape": [-1]},
                   f32("h0", 4, -1, 5)],
        "nodes": [node("rnn", "rnn", ["seq", "lengths", "h0"], input_size=3, hidden_size=5,
                       num_layers=2, bidirectional=True, nonlinearity="relu")],
        "outputs": outs(("out", "rnn"), ("h_n", "rnn:1")),
    }, lambda b, r: {"seq": rand(r, b, 6, 3), "lengths": lengths(r, b, 6, np.int32),
                     "h0": rand(r, 4, b, 5)}),
    "gru": ({
        "inputs": [f32("seq", -1, 6, 3), {"name": "lengths", "dtype": "INT64", "shape": [-1]}],
        "nodes": [node("gru", "gru", ["seq", "lengths"], input_size=3, hidden_size=4,
                       bidirectional=True)],
        "outputs": outs(("out", "gru"), ("h_n", "gru:1")),
    }, lambda b, r: {"seq": rand(r, b, 6, 3), "lengths": lengths(r, b, 6)}),
    "lstm": ({
        "inputs": [f32("seq", -1, 7, 5), {"name": "lengths", "dtype": "INT64", "shape": [-1]},
                   f32("h0", 2, -1, 6), f32("c0", 2, -1, 6)],
        "nodes": [node("lstm", "lstm", ["seq", "lengths", "h0", "c0"], input_size=5,
                       hidden_size=6, num_layers=2),
                  dense("head", "lstm", 6, 2),
                  node("plain", "lstm", ["seq"], input_size=5, hidden_size=3,
                       bidirectional=True, bias=False)],
        "outputs": outs(("out", "lstm"), ("h_n", "lstm:1"), ("c_n", "lstm:2"),
                        ("head", "head"), ("plain", "plain"), ("plain_c", "plain:2")),
    }, lambda b, r: {"seq": rand(r, b, 7, 5), "lengths": lengths(r, b, 7),
                     "h0": rand(r, 2, b, 6), "c0": rand(r, 2, b, 6)}),
    "block": ({
        "inputs": [f32("x", -1, 5, 8), {"name": "lengths", "dtype": "INT64", "shape": [-1]}],
        "nodes": [
            node("attn", "multihead_attention", ["x", "lengths"], embed_dim=8, num_heads=2),
            node("res1", "add", ["x", "attn"]),
            node("ln", "layernorm", ["res1"], normalized_shape=[8]),
            dense("ff1", "ln", 8, 16, "gelu"),
            dense("ff2", "ff1", 16, 8),
            node("res2", "add", ["ln", "ff2"]),
            node("ln2", "layernorm", ["res2"], normalized_shape=[5, 8], elementwise_affine=False),
            node("causal", "multihead_attention", ["ln2", "x", "x"], embed_dim=8, num_heads=4,
                 causal=True, bias=False),
        ],
        "outputs": outs(("out", "res2"), ("attn", "attn"), ("ln2", "ln2"),
                        ("causal", "causal")),
    }, lambda b, r: {"x": rand(r, b, 5, 8), "lengths": lengths(r, b, 5)}),
    "sdpa": ({
        "inputs": [f32("q", -1, 2, 4, 8), f32("k", -1, 2, 6, 8), f32("v", -1, 2, 6, 3),
                   {"name": "klen", "dtype": "INT32", "shape": [-1]},
                   {"name": "mask", "dtype": "INT32", "shape": [4, 6]}, f32("bias", 4, 6)],
        "nodes": [
            node("a", "scaled_dot_product_attention", ["q", "k", "v", "klen", "mask"]),
            node("b", "scaled_dot_product_attention", ["q", "k", "v", "klen", "bias"],
                 causal=True),
            node("c", "scaled_dot_product_attention", ["q", "k", "v"], dropout_p=0.5),
        ],
        "outputs": outs(("a", "a"), ("b", "b"), ("c", "c")),
    }, lambda b, r: {"q": rand(r, b, 2, 4, 8), "k": rand(r, b, 2, 6, 8),
                     "v": rand(r, b, 2, 6, 3), "klen": lengths(r, b, 6, np.int32),
                     "mask": np.array([[1, 1, 1, 1, 0, 1]] * 4, dtype=np.int32),
                     "bias": rand(r, 4, 6)}),
    # A two-output model touching every tensor op.
    "ops": ({
        "inputs": [f32("a", -1, 4, 6), f32("b", -1, 4, 6), f32("w", 5, 6),
                   {"name": "idx", "dtype": "INT64", "shape": [3]},
                   {"name": "gidx", "dtype": "INT64", "shape": [-1, 4, 2]},
                   {"name": "cond", "dtype": "INT32", "shape": [-1, 4, 6]}],
        "nodes": [
            node("s", "sub", ["a", "b"]), node("m", "mul", ["s", "a"]),
            node("ab", "abs", ["b"]), node("one", "add_scalar", ["ab"], value=1.0),
            node("dv", "div", ["m", "one"]), node("ng", "neg", ["dv"]),
            node("sc", "scale", ["ng"], value=0.5), node("ex", "exp", ["sc"]),
            node("lg", "log", ["one"]), node("sq", "sqrt", ["one"]),
            node("pw", "pow", ["one"], exponent=1.5),
            node("cl", "clamp", ["a"], min=-0.5), node("cl2", "clamp", ["b"], min=-1, max=0.3),
            node("wh", "where", ["cond", "cl", "cl2"]),
            node("lin", "linear", ["wh", "w"]), node("mm", "matmul", ["a", "tw"]),
            node("tw", "transpose", ["b"], dim0=1, dim1=2),
            node("pm", "permute", ["mm"], dims=[0, 2, 1]),
            node("rs", "reshape", ["pm"], shape=[0, -1]),
            node("sl", "slice", ["rs"], axis=1, start=-10, step=3),
            node("cat", "concat", ["sl", "rs"], axis=-1),
            node("sp", "split", ["a"], axis=2, sizes=[2, 4]),
            node("is", "index_select", ["sp:1", "idx"], axis=1),
            node("ga", "gather", ["sp:0", "gidx"], axis=2),
            node("sm", "sum", ["is"], axes=[1], keepdim=True),
            node("mx", "max", ["lin"], axes=[-1]), node("mn", "mean", ["ex"]),
            node("all", "sum", ["pw"]),
            node("ls", "log_softmax", ["lin"], axis=1),
            node("dr", "dropout", ["ls"], p=0.3), node("gr", "grad_reverse", ["dr"]),
            node("act", "activation", ["sq"], activation="softmax"),
            node("lr", "leaky_relu", ["lg"], negative_slope=0.2),
            node("el", "elu", ["ng"], alpha=0.7), node("ge", "gelu", ["el"]),
            node("sg", "sigmoid", ["ge"]), node("th", "tanh", ["sg"]), node("rl", "relu", ["th"]),
        ],
        "outputs": outs(("cat", "cat"), ("mix", "gr"), ("sm", "sm"), ("mx", "mx"),
                        ("mn", "mn"), ("all", "all"), ("act", "act"), ("lr", "lr"),
                        ("rl", "rl"), ("ga", "ga"), ("sp1", "sp:1")),
    }, lambda b, r: {"a": rand(r, b, 4, 6), "b": rand(r, b, 4, 6), "w": rand(r, 5, 6),
                     "idx": np.array([3, 0, 2], dtype=np.int64),
                     "gidx": r.integers(0, 2, size=(b, 4, 2)).astype(np.int64),
                     "cond": r.integers(0, 2, size=(b, 4, 6)).astype(np.int32)}),
    # erf and the exact gelu (Div/Erf/Add/Mul/Mul, as PyTorch exports
    # nn.GELU() before opset 20) beside the tanh gelu, wide inputs (tails).
    "erf_gelu": ({
        "inputs": [f32("x", -1, 7)],
        "nodes": [dense("fc", "x", 7, 6), node("gx", "gelu", ["fc"], approximate="none"),
                  node("gt", "gelu", ["fc"], approximate="tanh"), node("er", "erf", ["gx"]),
                  node("er2", "erf", ["x"])],
        "outputs": outs(("gx", "gx"), ("gt", "gt"), ("er", "er"), ("er2", "er2")),
    }, lambda b, r: {"x": 3 * rand(r, b, 7)}),
    # Outputs named as other tensors, an input as an output, shared sources.
    "aliases": ({
        "inputs": [f32("x", -1, 3)],
        "nodes": [node("a", "relu", ["x"]), node("b", "neg", ["a"])],
        "outputs": outs(("b", "a"), ("a", "b"), ("x_out", "x"), ("a2", "a"), ("x", "x"),
                        ("fxon_0", "b"), ("fxon_1", "b")),
    }, lambda b, r: {"x": rand(r, b, 3)}),
    # Training-only outputs: the loss and its target are left out.
    "with_loss": ({
        "inputs": [f32("x", -1, 4), f32("target", -1, 3)],
        "nodes": [dense("fc", "x", 4, 3), node("loss", "mse_loss", ["fc", "target"])],
        "outputs": outs(("y", "fc"), ("loss", "loss")),
    }, lambda b, r: {"x": rand(r, b, 4), "target": rand(r, b, 3)}),
}


def perturbed(arrays, seed):
    """Weights unlike the seeded ones (running statistics too)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in arrays.items():
        if k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
        else:
            out[k] = (v + 0.3 * rng.standard_normal(v.shape)).astype(np.float32)
    return out


class OnnxExportTest(fxtest.DaemonTest):

    def session(self, data):
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        return model, ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    def compare(self, name, data, make_inputs, seed, expect=None):
        """onnxruntime on data == ModelInfer (or expect(inputs)) at every
        batch size."""
        model, sess = self.session(data)
        onames = [o.name for o in model.graph.output]
        for batch in BATCHES:
            rng = np.random.default_rng(seed + batch)
            inputs = make_inputs(batch, rng)
            want = expect(inputs) if expect else self.c.infer(name, inputs)
            feed = {i.name: inputs[i.name] for i in model.graph.input}
            got = dict(zip(onames, sess.run(onames, feed)))
            for o in onames:
                self.assertEqual(got[o].shape, want[o].shape, "%s: output %s" % (name, o))
                np.testing.assert_allclose(got[o], want[o], rtol=TOL, atol=TOL,
                                           err_msg="%s: output %s, batch %d" % (name, o, batch))
        return model

    def test_every_model_kind(self):
        for i, (name, (spec, make_inputs)) in enumerate(sorted(MODELS.items())):
            with self.subTest(model=name):
                self.c.create_model(name, spec, seed=10 + i)
                self.c.import_weights(name, perturbed(self.c.export_arrays(name), i))
                model = self.compare(name, self.c.export_onnx(name), make_inputs, 100 * i)
                # Names kept: the spec's inputs (those a kept output reads),
                # outputs (but training-only ones), nodes, parameters.
                spec_outs = [o["source"] for o in spec["outputs"]]
                kept = [o["name"] for o in spec["outputs"] if "loss" not in o["name"]]
                self.assertEqual([o.name for o in model.graph.output], kept)
                ins = [t.name for t in model.graph.input]
                self.assertEqual(ins, [t["name"] for t in spec["inputs"] if t["name"] in ins])
                self.assertEqual(model.opset_import[0].version, 17)
                nodes = {n.name for n in model.graph.node}
                for n in spec["nodes"]:
                    if n["op"] != "mse_loss" and (n["name"] in spec_outs or "lstm" in n["op"]
                                                  or n["op"] in ("dense", "conv2d")):
                        self.assertIn(n["name"], nodes, name)
                for inp in model.graph.input:
                    dims = inp.type.tensor_type.shape.dim
                    spec_in = [t for t in spec["inputs"] if t["name"] == inp.name][0]
                    for d, s in zip(dims, spec_in["shape"]):
                        if s == -1:
                            self.assertTrue(d.dim_param, "%s: %s" % (name, inp.name))
                        else:
                            self.assertEqual(d.dim_value, s)

    def test_names_of_dynamic_batch_and_weights(self):
        self.c.create_model("names", fxtest.mlp_spec(), seed=1)
        model = onnx.load_from_string(self.c.export_onnx("names"))
        self.assertEqual(model.graph.input[0].type.tensor_type.shape.dim[0].dim_param, "batch")
        self.assertEqual(model.graph.output[0].type.tensor_type.shape.dim[0].dim_param, "batch")
        inits = {t.name for t in model.graph.initializer}
        self.assertEqual(inits, {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"})
        self.assertEqual(model.graph.name, "names")
        arrays = self.c.export_arrays("names")
        for t in model.graph.initializer:
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), arrays[t.name])

    def test_versions(self):
        self.c.create_model("vers", fxtest.mlp_spec(), seed=2)
        self.c.import_weights("vers", perturbed(self.c.export_arrays("vers"), 7))
        w1, w2 = self.c.export_arrays("vers", 1), self.c.export_arrays("vers", 2)
        mk = lambda b, r: {"x": r.standard_normal((b, 4)).astype(np.float32)}  # noqa: E731
        v1, v2, v0 = (self.c.export_onnx("vers", version=v) for v in (1, 2, 0))
        self.assertEqual(v0, v2)
        self.assertNotEqual(v1, v2)
        self.compare("vers", v1, mk, 5, lambda x: {"y": fxtest.mlp_forward(w1, x["x"])})
        self.compare("vers", v2, mk, 5, lambda x: {"y": fxtest.mlp_forward(w2, x["x"])})
        self.compare("vers", v2, mk, 6)  # and the daemon's own outputs
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.c.export_onnx, "vers", version=9)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.c.export_onnx, "vers",
                        version=-1, contains="negative")
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.c.export_onnx, "nosuch")
        # Small chunks: the stream joins to the same bytes.
        self.c.create_model("big", fxtest.mlp_spec(64, 64, 8))
        whole = self.c.export_onnx("big")
        req_chunks = list(self.c.models.ExportOnnx(
            fxtest.model_pb2.ExportOnnxRequest(name="big", chunk_bytes=4096)))
        self.assertGreater(len(req_chunks), 4)
        self.assertEqual(req_chunks[0].version, 1)
        self.assertEqual(req_chunks[0].total_bytes, len(whole))
        self.assertEqual(b"".join(c.data for c in req_chunks), whole)

    def test_cli(self):
        self.c.create_model("clim", fxtest.mlp_spec(), seed=3)
        self.c.import_weights("clim", perturbed(self.c.export_arrays("clim"), 8))
        out = os.path.join(self.d.data_dir, "clim.onnx")
        cli = os.environ.get("FLUXION_CLI") or os.path.join(os.path.dirname(
            os.environ["FLUXIOND"]), "fluxion")
        r = subprocess.run([cli, "--server", self.d.address, "model", "export-onnx", "clim",
                            "--version", "1", "-o", out], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.c.export_onnx("clim", version=1))
        self.assertIn("version 1", r.stdout + r.stderr)
        r = subprocess.run([cli, "--server", self.d.address, "model", "export-onnx", "nosuch",
                            "-o", out], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("nosuch", r.stderr)

    def test_refusals_name_the_node(self):
        spec = {"inputs": [f32("x", -1, 3), f32("t", -1, 3)],
                "nodes": [node("crit", "mse_loss", ["x", "t"])],
                "outputs": outs(("loss", "crit"))}
        self.c.create_model("lossonly", spec)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.c.export_onnx, "lossonly",
                        contains=("'crit'", "mse_loss", "no ONNX"))
        spec = {"inputs": [{"name": "lp", "dtype": "FP32", "shape": [5, -1, 4]},
                           {"name": "tg", "dtype": "INT32", "shape": [-1, 2]},
                           {"name": "il", "dtype": "INT32", "shape": [-1]},
                           {"name": "tl", "dtype": "INT32", "shape": [-1]}],
                "nodes": [node("ctc", "ctc_loss", ["lp", "tg", "il", "tl"], blank=0)],
                "outputs": outs(("loss", "ctc"))}
        self.c.create_model("ctc", spec)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.c.export_onnx, "ctc",
                        contains=("'ctc'", "ctc_loss"))
        # An adaptive pool over a free height and width has no fixed cells.
        spec = {"inputs": [f32("im", -1, 2, -1, -1)],
                "nodes": [node("ap", "adaptive_avgpool2d", ["im"], output_size=2)],
                "outputs": outs(("y", "ap"))}
        self.c.create_model("freehw", spec)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.c.export_onnx, "freehw",
                        contains=("'ap'", "adaptive_avgpool2d"))

    def test_docs_browser_example(self):
        """docs/onnx-export.md's HTML page feeds and reads the names its
        example model's export has (no browser here: the names, the shape
        and one run of the file with onnxruntime)."""
        src = os.environ.get("FX_SOURCE_DIR") or os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "..", "..")
        with open(os.path.join(src, "docs", "onnx-export.md"), encoding="utf-8") as f:
            doc = f.read()
        model_json = re.search(r"```json\n(.*?)```", doc, re.S).group(1)
        html = re.search(r"```html\n(.*?)```", doc, re.S).group(1)
        script = html[html.rindex("<script>"):]
        spec = json.loads(model_json)
        self.c.create_model(spec["name"], spec["spec"])
        data = self.c.export_onnx(spec["name"])
        model, sess = self.session(data)
        self.assertIn('InferenceSession.create("%s.onnx")' % spec["name"], script)
        feeds = re.findall(r'run\(\{ "(\w+)": input \}\)', script)
        self.assertEqual(feeds, [i.name for i in model.graph.input])
        read = re.findall(r'results\["(\w+)"\]', script)
        self.assertTrue(read)
        self.assertLessEqual(set(read), {o.name for o in model.graph.output})
        shape = json.loads(re.search(r"Float32Array.from\(values\), (\[[0-9, ]+\])",
                                     script).group(1))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        self.assertEqual(dims[0].dim_param, "batch")
        self.assertEqual([d.dim_value for d in dims[1:]], shape[1:])
        value = re.search(r'id="x" value="([^"]+)"', html).group(1)
        x = np.array([[float(v) for v in value.split(",")]], dtype=np.float32)
        probs = sess.run([read[0]], {feeds[0]: x})[0]
        self.assertAlmostEqual(float(probs.sum()), 1.0, places=5)


if __name__ == "__main__":
    fxtest.main()
