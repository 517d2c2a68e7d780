"""ONNX -> Fluxion -> ONNX keeps outputs: a model exported by ExportOnnx
(file A) is imported with ImportOnnx as a new model B; B's ModelInfer
outputs and onnxruntime's on B's own export (file C) equal onnxruntime's
on A within 1e-4, at two batch sizes, with the input and output names
kept. And PyTorch -> Fluxion -> ONNX: the models of
tests/py/onnx_export_models.py (exported by Debian's torch) imported, then
exported, give PyTorch's outputs under onnxruntime within 1e-4 (skipped
without that script or torch).

Needs both halves of docs/onnx*.md: exits 77 (skipped) while ImportOnnx is
not there (UNIMPLEMENTED, or a client without import_onnx). onnx and
onnxruntime: as test_onnx_export.py (the python3 on PATH; 77 when
missing)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import onnx  # noqa: F401
    import onnxruntime as ort
except ImportError as e:
    other = shutil.which("python3")
    if (other and not os.environ.get("FX_ONNX_REEXEC")
            and os.path.realpath(other) != os.path.realpath(sys.executable)):
        env = dict(os.environ, FX_ONNX_REEXEC="1")
        os.execve(other, [other, os.path.abspath(__file__)] + sys.argv[1:], env)
    print("skipped: %s (pip install onnx onnxruntime)" % e)
    sys.exit(77)

import grpc  # noqa: E402

import fxtest  # noqa: E402
from fxtest import np  # noqa: E402
from fluxion_client import FluxionError  # noqa: E402
from test_onnx_export import BATCHES, MODELS, TOL, perturbed  # noqa: E402

# The kinds whose exported form (Gemm, Conv, BatchNormalization, pools,
# Flatten, RNN/GRU/LSTM with sequence_lens, Gather, ...) the
# importer covers.
ROUND_TRIP = ("mlp", "cnn", "rnn", "gru", "lstm", "embed", "with_loss", "erf_gelu")


def import_available(client):
    """False (the test skips) while the daemon or client has no ImportOnnx."""
    if not hasattr(client, "import_onnx"):
        return False
    try:
        client.import_onnx("probe-import", b"")
    except FluxionError as e:
        return e.code != grpc.StatusCode.UNIMPLEMENTED
    return True


class OnnxRoundTripTest(fxtest.DaemonTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not import_available(cls.c):
            cls.tearDownClass()
            print("skipped: ImportOnnx is not implemented here")
            sys.exit(77)

    def run_onnx(self, data, feed):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        ins = {i.name for i in sess.get_inputs()}
        return dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in ins})))

    def test_round_trip(self):
        for i, name in enumerate(ROUND_TRIP):
            spec, make_inputs = MODELS[name]
            with self.subTest(model=name):
                self.c.create_model(name, spec, seed=20 + i)
                self.c.import_weights(name, perturbed(self.c.export_arrays(name), 30 + i))
                a = self.c.export_onnx(name)
                self.c.import_onnx(name + "-b", a)
                c = self.c.export_onnx(name + "-b")
                onnx.checker.check_model(onnx.load_from_string(c), full_check=True)
                if name == "erf_gelu":  # the exact gelu's Div/Erf/Add/Mul/Mul joins again
                    exact = [n for n in self.c.get_model(name + "-b").spec.nodes
                             if n.op == "gelu" and n.attrs["approximate"].s == "none"]
                    self.assertEqual(len(exact), 1)
                for batch in BATCHES:
                    feed = make_inputs(batch, np.random.default_rng(batch + i))
                    want = self.run_onnx(a, feed)
                    got_c = self.run_onnx(c, feed)
                    self.assertEqual(sorted(got_c), sorted(want))
                    b_inputs = {t.name for t in self.c.get_model(name + "-b").spec.inputs}
                    got_b = self.c.infer(name + "-b",
                                         {k: v for k, v in feed.items() if k in b_inputs})
                    for o in want:
                        np.testing.assert_allclose(got_c[o], want[o], rtol=TOL, atol=TOL,
                                                   err_msg="%s: C %s" % (name, o))
                        np.testing.assert_allclose(got_b[o], want[o], rtol=TOL, atol=TOL,
                                                   err_msg="%s: B %s" % (name, o))

    def test_torch_models_in_and_out(self):
        src = os.environ.get("FX_SOURCE_DIR") or os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "..", "..")
        script = os.path.join(src, "tests", "py", "onnx_export_models.py")
        torch_python = "/usr/bin/python3"
        if not os.path.exists(script) or not os.access(torch_python, os.X_OK):
            self.skipTest("no %s or %s" % (script, torch_python))
        out = tempfile.mkdtemp(prefix="torch-onnx-", dir=self.d.data_dir)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        r = subprocess.run([torch_python, script, out], capture_output=True, text=True,
                           timeout=600, env=env)
        if r.returncode != 0 and "No module named 'torch'" in r.stderr:
            self.skipTest("torch is not installed for %s" % torch_python)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        with open(os.path.join(out, "manifest.json")) as f:
            manifest = json.load(f)
        self.assertTrue(manifest)
        for i, (name, io) in enumerate(sorted(manifest.items())):
            with self.subTest(model=name):
                with open(os.path.join(out, name + ".onnx"), "rb") as f:
                    data = f.read()
                fx_name = "torch-%d" % i
                self.c.import_onnx(fx_name, data)
                c = self.c.export_onnx(fx_name)
                onnx.checker.check_model(onnx.load_from_string(c), full_check=True)
                feed = {k: np.load(os.path.join(out, "%s.in.%s.npy" % (name, k)))
                        for k in io["inputs"]}
                got = self.run_onnx(c, feed)
                for o in io["outputs"]:
                    want = np.load(os.path.join(out, "%s.out.%s.npy" % (name, o)))
                    np.testing.assert_allclose(got[o], want, rtol=TOL, atol=TOL,
                                               err_msg="%s: output %s" % (name, o))


if __name__ == "__main__":
    fxtest.main()
