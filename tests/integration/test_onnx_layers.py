"""ONNX models with convolutions, pooling, batch/layer/group/instance norms
and recurrent layers, exported from PyTorch (Debian's torch 1.13, opsets 13
and 17, by tests/py/onnx_layers_models.py run with /usr/bin/python3 into a
temporary directory), import over gRPC (ImportOnnx) and give PyTorch's
outputs within 1e-4: a CNN with BatchNorm and pooling, a residual block
with global average pooling and a transposed conv, a two-layer LSTM and a
bidirectional GRU over packed variable-length sequences, a time-major
ReLU RNN, a self-attention + LayerNorm block, GroupNorm and InstanceNorm.
Single nodes as PyTorch never writes them are compared with onnxruntime
(tests/py/onnx_layers_ort.py, run by the python on PATH; skipped without
onnx and onnxruntime). Models using what the engine lacks (a ceil_mode that changes the size,
dilated pooling, a 3-D convolution) are refused with INVALID_ARGUMENT
naming the op and the attribute. Skipped (77) without torch."""
import os
import shutil
import subprocess
import sys
import tempfile

import fxtest
from fxtest import np

TORCH_PY = os.environ.get("FX_TORCH_PYTHON", "/usr/bin/python3")
EXPORTER = os.path.join(fxtest.SOURCE_DIR, "tests", "py", "onnx_layers_models.py")
ORT_MODELS = os.path.join(fxtest.SOURCE_DIR, "tests", "py", "onnx_layers_ort.py")
ATOL = RTOL = 1e-4


def export_models(out_dir):
    """Runs the exporter; exits 77 when its python has no torch."""
    probe = subprocess.run([TORCH_PY, "-c", "import torch"], capture_output=True)
    if probe.returncode != 0:
        print("skipped: %s has no torch" % TORCH_PY)
        sys.exit(fxtest.SKIP)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    r = subprocess.run([TORCH_PY, EXPORTER, out_dir], capture_output=True, text=True, env=env,
                       timeout=300)
    if r.returncode != 0:
        raise AssertionError("exporting failed:\n" + r.stdout + r.stderr)


class OnnxLayersTest(fxtest.DaemonTest):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="fx-onnx-layers-")
        export_models(cls.tmp.name)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def compare(self, name, path, ref):
        inputs = {k[3:]: ref[k] for k in ref.files if k.startswith("in:")}
        want = {k[4:]: ref[k] for k in ref.files if k.startswith("out:")}
        with open(path, "rb") as f:
            self.c.import_onnx(name, f.read())
        got = self.c.infer(name, inputs)
        self.assertEqual(set(got), set(want))
        for k, w in want.items():
            self.assertEqual(got[k].shape, w.shape, k)
            np.testing.assert_allclose(got[k], w, rtol=RTOL, atol=ATOL,
                                       err_msg="%s %s" % (name, k))

    def check(self, model):
        opsets = sorted(int(f[len(model) + 3:-5]) for f in os.listdir(self.tmp.name)
                        if f.startswith(model + "_op") and f.endswith(".onnx"))
        self.assertTrue(opsets, model)
        ref = np.load(self.path(model + ".npz"))
        for opset in opsets:
            name = "%s-op%d" % (model, opset)
            with self.subTest(model=name):
                self.compare(name, self.path("%s_op%d.onnx" % (model, opset)), ref)

    def test_cnn_batchnorm_pooling(self):
        self.check("cnn")

    def test_conv1d_batchnorm1d_layernorm(self):
        self.check("conv1d")

    def test_padded_pooling(self):
        self.check("pooling")

    def test_residual_block(self):
        self.check("residual")

    def test_lstm_variable_lengths(self):
        self.check("lstm")

    def test_bidirectional_lstm_initial_states(self):
        self.check("bilstm")

    def test_dynamic_batch(self):
        # exported with a dynamic batch dim, run with another batch size
        self.check("cnn_dynamic")
        self.check("lstm_dynamic")

    def test_bidirectional_gru_variable_lengths(self):
        self.check("gru")

    def test_time_major_relu_rnn(self):
        self.check("rnn")

    def test_attention_layernorm(self):
        # opset 17: LayerNormalization; 13: PyTorch writes layer norm out as
        # ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add (onnx-import's ops)
        self.check("attention")

    def test_group_and_instance_norm(self):
        self.check("groupnorm")

    def test_single_nodes_against_onnxruntime(self):
        """Nodes as PyTorch does not write them (recurrent: batch-major
        layout 1, no bias, initial states without packing; Conv auto_pad
        SAME at stride 2, a grouped dilated ConvTranspose with padding on
        one axis, ceil_mode, GroupNormalization at opsets 18 and 21, ...),
        made by the python on PATH with onnx and onnxruntime; skipped
        without them."""
        other = shutil.which("python3")
        if not other or os.path.realpath(other) == os.path.realpath(sys.executable):
            self.skipTest("no second python3 on PATH for onnxruntime")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        out = os.path.join(self.tmp.name, "ort")
        r = subprocess.run([other, ORT_MODELS, out], capture_output=True, text=True, env=env,
                           timeout=300)
        if r.returncode != 0 and "ModuleNotFoundError" in r.stderr:
            self.skipTest("onnx or onnxruntime missing: " + r.stderr.strip().splitlines()[-1])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        names = sorted(f[:-5] for f in os.listdir(out) if f.endswith(".onnx"))
        self.assertEqual(len(names), 12)
        for name in names:
            with self.subTest(model=name):
                self.compare(name.replace("_", "-"), os.path.join(out, name + ".onnx"),
                             np.load(os.path.join(out, name + ".npz")))

    def test_refusals(self):
        with open(self.path("bad.txt")) as f:
            cases = [line.split() for line in f if line.strip()]
        self.assertTrue(cases)
        for name, *words in cases:
            with self.subTest(model=name):
                with open(self.path("bad_%s.onnx" % name), "rb") as f:
                    data = f.read()
                self.assertCode(fxtest.C.INVALID_ARGUMENT, self.c.import_onnx, "bad-" + name,
                                data, contains=words + ["opset 13"])


if __name__ == "__main__":
    fxtest.main()
