"""The engine's bf16 compute mode in the daemon (docs/serving.md "Precision",
docs/training.md "precision").

Serving: a model served with BatchingConfig.precision "bf16" answers what
its dense layers give with both operands of every product rounded to
bfloat16 and fp32 sums (checked tightly against a numpy reference of the
rounded operands, which fp32 serving does not meet), within the stated
tolerance of fp32 (2e-2 of the largest logit) and with fp32's argmax on
fixed inputs whose fp32 margin is clear; the setting is stored, shown by
GetModel, ModelConfig and the CLI, and taken by RepositoryModelLoad.
Switching precision back and forth while clients send requests answers
every request with one precision's result or the other's, never an error.

Training: a job with precision "bf16" trains the blobs MLP to a validation
loss close to the same job in fp32, and its version's weights are fp32
(not bf16-rounded) in the export and in the ONNX export.

Bad values are INVALID_ARGUMENT naming "precision"."""
import json
import os
import subprocess
import sys
import threading
import time
import unittest

import fxtest
from fxtest import C, DaemonTest, mlp_spec, np

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")
MODEL = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs",
                                    "mlp-blobs-model.json")))
JOB = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs", "mlp-blobs.json")))

# The stated tolerance of bf16 serving against fp32 (docs/serving.md): the
# largest difference of a logit, over the largest fp32 logit magnitude.
TOLERANCE = 2e-2
# bf16 serving against the reference of the bf16-rounded operands: only the
# fp32 sums' order differs.
TIGHT = 1e-4


def bf16(a):
    """a rounded to bfloat16 (to nearest, ties to even), as float64."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32).astype(np.float64)


def mlp_bf16_reference(w, x):
    """The MLP (dense relu, dense) with every product's operands in bf16."""
    h = np.maximum(bf16(x) @ bf16(w["fc1.weight"]).T + w["fc1.bias"], 0)
    return bf16(h) @ bf16(w["fc2.weight"]).T + w["fc2.bias"]


def rel(a, b):
    """Largest difference over the largest magnitude of b."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(1e-30, np.max(np.abs(b))))


class ServingTest(DaemonTest):
    N_IN, HIDDEN, N_OUT = 48, 96, 10

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c.create_model("m", mlp_spec(cls.N_IN, cls.HIDDEN, cls.N_OUT), seed=7)
        cls.w = {k: v.astype(np.float64) for k, v in cls.c.export_arrays("m").items()}
        cls.x = fxtest.randn(11, 64, cls.N_IN)
        cls.ref32 = fxtest.mlp_forward(cls.w, cls.x.astype(np.float64))
        cls.ref16 = mlp_bf16_reference(cls.w, cls.x)

    def setUp(self):
        self.c.set_serving_config("m", precision="fp32")

    def infer(self, x=None):
        return self.c.infer("m", {"x": self.x if x is None else x})["y"]

    def test_bf16_answers(self):
        y32 = self.infer()
        self.assertLess(rel(y32, self.ref32), TIGHT)
        cfg = self.c.set_serving_config("m", precision="bf16")
        self.assertEqual(cfg.precision, "bf16")
        self.assertEqual(self.c.get_model("m").serving_config.precision, "bf16")
        y16 = self.infer()
        self.assertEqual(y16.dtype, np.float32)  # outputs stay FP32
        # the bf16 products: tight against the rounded operands' reference,
        # which fp32 serving is not (so the setting took effect)
        self.assertLess(rel(y16, self.ref16), TIGHT)
        self.assertGreater(rel(y32, self.ref16), 10 * rel(y16, self.ref16))
        # the stated tolerance against fp32, and the same argmax where fp32's
        # top two logits are not within that tolerance of each other
        err = rel(y16, self.ref32)
        self.assertLess(err, TOLERANCE)
        top2 = np.sort(self.ref32, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * TOLERANCE * np.max(np.abs(self.ref32))
        self.assertGreater(int(clear.sum()), 32)
        np.testing.assert_array_equal(np.argmax(y16, 1)[clear], np.argmax(y32, 1)[clear])
        # one sample alone and in a batch agree (the batcher merges rows)
        one = self.infer(self.x[5:6])
        self.assertLess(rel(one, self.ref16[5:6]), TIGHT)
        # and back
        self.c.set_serving_config("m", precision="fp32")
        self.assertLess(rel(self.infer(), self.ref32), TIGHT)

    def test_shown_and_stored(self):
        self.assertEqual(self.c.get_model("m").serving_config.precision, "fp32")
        self.c.set_serving_config("m", precision="bf16", max_batch_size=16)
        from inference import model_config_pb2  # noqa: F401 (stubs of ModelConfig)
        cfg = self.c.inference.ModelConfig(
            fxtest.infer_pb2.ModelConfigRequest(name="m"), timeout=30).config
        self.assertEqual(cfg.parameters["precision"].string_value, "bf16")
        # other settings keep it
        self.c.set_serving_config("m", max_batch_size=8)
        self.assertEqual(self.c.get_model("m").serving_config.precision, "bf16")
        # RepositoryModelLoad parameters set it too
        self.c.load_model("m", {"precision": "fp32"})
        self.assertEqual(self.c.get_model("m").serving_config.precision, "fp32")
        self.assertLess(rel(self.infer(), self.ref32), TIGHT)
        self.c.load_model("m", {"precision": "bf16"})
        self.assertLess(rel(self.infer(), self.ref16), TIGHT)
        self.c.set_serving_config("m", reset=True)
        self.assertEqual(self.c.get_model("m").serving_config.precision, "fp32")

    def test_cli(self):
        if not os.access(CLI, os.X_OK):
            self.skipTest("no fluxion CLI at %s" % CLI)
        base = [CLI, "--server", self.d.address, "model", "config", "m"]
        p = subprocess.run(base + ["--precision", "bf16"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("precision:             bf16", p.stdout.decode())
        self.assertLess(rel(self.infer(), self.ref16), TIGHT)
        p = subprocess.run(base + ["--precision", "half"], capture_output=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("precision", p.stderr.decode())
        p = subprocess.run(base, capture_output=True, timeout=60)
        self.assertIn("precision:             bf16", p.stdout.decode())

    def test_bad_values(self):
        for bad in ("fp16", "BF16x", "half"):
            self.assertCode(C.INVALID_ARGUMENT, self.c.set_serving_config, "m", precision=bad,
                            contains=("precision", bad))
            self.assertCode(C.INVALID_ARGUMENT, self.c.load_model, "m", {"precision": bad},
                            contains="precision")
        self.assertEqual(self.c.get_model("m").serving_config.precision, "fp32")

    def test_linear_op(self):
        """A linear op (weights as an input, nothing to pack) follows the
        setting too: the instances' contexts run in the model's precision."""
        spec = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 24]},
                           {"name": "w", "dtype": "FP32", "shape": [7, 24]}],
                "nodes": [{"name": "lin", "op": "linear", "inputs": ["x", "w"]}],
                "outputs": [{"name": "y", "source": "lin"}]}
        self.c.create_model("lin", spec)
        x, w = fxtest.randn(3, 9, 24), fxtest.randn(4, 7, 24)
        ref32 = x.astype(np.float64) @ w.astype(np.float64).T
        ref16 = bf16(x) @ bf16(w).T
        for prec, ref in (("bf16", ref16), ("fp32", ref32), ("bf16", ref16)):
            self.c.set_serving_config("lin", precision=prec)
            y = self.c.infer("lin", {"x": x, "w": w})["y"]
            self.assertLess(rel(y, ref), TIGHT, prec)
        self.assertGreater(rel(ref32, ref16), 10 * TIGHT)

    def test_switch_under_load(self):
        """Clients send requests while the precision flips: each answer is
        the fp32 result or the bf16 one (a repack never shows half-made),
        and none fails."""
        stop = threading.Event()
        seen = {"fp32": 0, "bf16": 0}
        errors = []
        lock = threading.Lock()

        def client(k):
            c = self.d.client()
            rows = slice(8 * k, 8 * k + 8)
            while not stop.is_set():
                try:
                    y = c.infer("m", {"x": self.x[rows]})["y"]
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    with lock:
                        errors.append(repr(e))
                    return
                if rel(y, self.ref32[rows]) < TIGHT:
                    which = "fp32"
                elif rel(y, self.ref16[rows]) < TIGHT:
                    which = "bf16"
                else:
                    with lock:
                        errors.append("answer matches neither precision: %g from fp32, %g "
                                      "from bf16" % (rel(y, self.ref32[rows]),
                                                     rel(y, self.ref16[rows])))
                    return
                with lock:
                    seen[which] += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(8):
                time.sleep(0.15)
                self.c.set_serving_config("m", precision="bf16" if i % 2 == 0 else "fp32")
            time.sleep(0.15)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        self.assertEqual(errors, [])
        self.assertGreater(seen["fp32"], 0, seen)
        self.assertGreater(seen["bf16"], 0, seen)


class TrainingTest(DaemonTest):
    DAEMON_ARGS = ("--train-workers", "1")
    STEPS = 300

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c.upload_dataset("blobs", make_blobs.blobs(2000, 0))
        cls.c.create_model(MODEL["name"], MODEL["spec"], seed=MODEL["seed"], no_load=True)

    def spec(self, **over):
        s = dict(JOB, serve_when_done=False, steps=self.STEPS, epochs=0, model_version=1,
                 eval_every_steps=100, checkpoint_every_steps=100)
        s.update(over)
        return s

    def run_job(self, **over):
        job = self.c.submit_job(self.spec(**over))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = self.c.get_job(job.id)
            if job.state in FINAL_STATES:
                break
            time.sleep(0.05)
        self.assertEqual(job.state, training_pb2.SUCCEEDED, job.error)
        return job

    def test_converges_like_fp32(self):
        j32 = self.run_job()
        j16 = self.run_job(precision="bf16")
        self.assertEqual(j16.spec.precision, "bf16")
        l32, l16 = j32.progress.val_loss, j16.progress.val_loss
        # close to fp32's loss: within 0.02 + 25% of it (the blobs' loss is small)
        self.assertLess(abs(l16 - l32), 0.02 + 0.25 * l32, (l32, l16))
        acc = [m.value for m in j16.progress.metrics if m.name == "val_accuracy"]
        self.assertGreaterEqual(acc[0], 0.95)
        # not the same run: the products were bf16
        self.assertNotEqual(l16, l32)
        # the saved weights are fp32 master weights, not bf16-rounded values
        w = self.c.export_arrays(MODEL["name"], j16.result_version)
        for k, v in w.items():
            self.assertEqual(v.dtype, np.float32, k)
        fc1 = w["fc1.weight"]
        self.assertTrue(np.any(fc1.view(np.uint32) & 0xFFFF), "weights look bf16-rounded")
        # ONNX export keeps them fp32: the raw float32 bytes are in the file
        onnx = self.c.export_onnx(MODEL["name"], j16.result_version)
        self.assertIn(np.ascontiguousarray(fc1, "<f4").tobytes(), onnx)

    def test_cli_flag(self):
        if not os.access(CLI, os.X_OK):
            self.skipTest("no fluxion CLI at %s" % CLI)
        path = os.path.join(fxtest._WORK, "bf16-job.json")
        with open(path, "w") as f:
            json.dump(self.spec(steps=20, eval_every_steps=0, checkpoint_every_steps=0), f)
        p = subprocess.run([CLI, "--server", self.d.address, "train", "submit", path,
                            "--precision", "bf16", "--watch"], capture_output=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        jobs = self.c.list_jobs(model=MODEL["name"])
        self.assertEqual(jobs[-1].spec.precision, "bf16")
        p = subprocess.run([CLI, "--server", self.d.address, "job", "get", jobs[-1].id],
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("precision:     bf16\n", p.stdout.decode())
        p = subprocess.run([CLI, "--server", self.d.address, "train", "submit", path,
                            "--precision", "fp8"], capture_output=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("precision", p.stderr.decode())

    def test_bad_values(self):
        for bad in ("fp16", "bf-16", "BF16 "):
            self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job, self.spec(precision=bad),
                            contains=("precision", bad))
        # bf16 runs on CPU devices only: a GPU asked for by name is refused
        # before anything else is looked up about it
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        self.spec(precision="bf16", world_size=2,
                                  placement=["cpu", "cuda:0"]),
                        contains="precision")


if __name__ == "__main__":
    fxtest.main()
