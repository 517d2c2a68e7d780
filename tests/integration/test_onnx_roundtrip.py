"""ONNX -> Fluxion -> ONNX keeps outputs: a model exported by ExportOnnx
(file A) is imported with ImportOnnx as a new model B; B's ModelInfer
outputs and onnxruntime's on B's own export (file C) equal onnxruntime's
on A within 1e-4, at two batch sizes, with the input and output names
kept.

Needs both halves of docs/onnx*.md: exits 77 (skipped) while ImportOnnx is
not there (UNIMPLEMENTED, or a client without import_onnx). onnx and
onnxruntime: as test_onnx_export.py (the python3 on PATH; 77 when
missing)."""
import os
import shutil
import sys

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
ROUND_TRIP = ("mlp", "cnn", "rnn", "gru", "lstm", "embed", "with_loss")


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


if __name__ == "__main__":
    fxtest.main()
