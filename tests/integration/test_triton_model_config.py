"""ModelConfig through NVIDIA's own clients: tritonclient.grpc's
get_model_config (PyPI) parses fluxiond's answer with tritonclient's own
stubs, as_json and as messages, and its fields are right; and, where
Triton's perf_analyzer is installed, perf_analyzer (which reads the config
to shape its requests) drives fluxiond at concurrency 1 to 2.

tritonclient is installed with pip into the python3 on PATH; ctest runs
this file with Debian's python3, so it runs itself again with that one
(tritonharness.run_with_tritonclient); 77 (skipped) without tritonclient.

perf_analyzer: $FX_PERF_ANALYZER, else `perf_analyzer` on PATH; its test is
skipped without one. PyPI's `perf-analyzer` is a placeholder here (0.1.0,
no binary); tritonclient 2.40.0's wheel ships the binary (2.73's does not),
which needs libb64 (Debian libb64-0d) and libcudart.so.12 (PyPI
nvidia-cuda-runtime-cu12, found beside it or importable). scripts/test.sh
installs them:

    python3 -m pip install --no-deps --target build/perf_analyzer \\
        tritonclient==2.40.0 nvidia-cuda-runtime-cu12
    FX_PERF_ANALYZER=build/perf_analyzer/bin/perf_analyzer
"""
import csv
import glob
import os
import shutil
import subprocess
import sys
import unittest

try:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException
except ImportError as e:
    from tritonharness import run_with_tritonclient
    run_with_tritonclient(e)

from tritonharness import SRC, Fluxiond, require_built  # noqa: E402

require_built()


def perf_analyzer():
    """(path, environment) of a perf_analyzer that runs here, or (None, why)."""
    exe = os.environ.get("FX_PERF_ANALYZER") or shutil.which("perf_analyzer")
    if not exe or not os.access(exe, os.X_OK):
        return None, "no perf_analyzer (set FX_PERF_ANALYZER; see this file's docstring)"
    libs = glob.glob(os.path.join(os.path.dirname(exe), "..", "nvidia", "cuda_runtime", "lib"))
    try:
        import nvidia.cuda_runtime as cr
        libs += [os.path.join(p, "lib") for p in cr.__path__]
    except ImportError:
        pass
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")])
    p = subprocess.run([exe, "--version"], capture_output=True, env=env, timeout=30)
    if b"error while loading shared libraries" in p.stderr:
        return None, "perf_analyzer does not start: %s" % p.stderr.decode().strip()
    return exe, env


class TritonModelConfigTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Fluxiond("fx-triton-config-")
        cls.d.cli("model", "create", os.path.join(SRC, "examples", "models", "mlp.json"))
        cls.d.cli("model", "create", os.path.join(SRC, "examples", "models", "two_heads.json"))
        cls.client = tc.InferenceServerClient(url=cls.d.addr)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.d.stop()

    def test_json(self):
        cfg = self.client.get_model_config("mlp", as_json=True)["config"]
        self.assertEqual((cfg["name"], cfg["platform"], cfg["backend"]),
                         ("mlp", "fluxion", "fluxion"))
        self.assertEqual(cfg["max_batch_size"], 32)
        # proto JSON: 64-bit integers are strings
        self.assertEqual(cfg["input"], [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}])
        self.assertEqual(cfg["output"],
                         [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["3"]}])
        self.assertEqual(cfg["dynamic_batching"]["max_queue_delay_microseconds"], "200")
        self.assertEqual(cfg["instance_group"],
                         [{"name": "mlp_0", "kind": "KIND_CPU", "count": 1}])
        self.assertEqual(cfg["version_policy"], {"latest": {"num_versions": 1}})

    def test_messages_are_tritonclients_own(self):
        r = self.client.get_model_config("mlp", model_version="1")
        # tritonclient's stubs, not the build's (proto file "inference/...")
        self.assertEqual(type(r).DESCRIPTOR.file.name, "grpc_service.proto")
        self.assertNotIn("inference", sys.modules)
        self.assertEqual([(i.name, list(i.dims)) for i in r.config.input], [("x", [4])])

    def test_settings_change_the_config(self):
        self.d.cli("model", "config", "two_heads", "--max-batch-size", "6",
                   "--preferred-batch-sizes", "2,4", "--instances", "2",
                   "--priority-levels", "2")
        self.client.load_model("two_heads")  # its model file stores it unloaded
        cfg = self.client.get_model_config("two_heads", as_json=True)["config"]
        self.assertEqual(cfg["max_batch_size"], 6)
        self.assertEqual(cfg["dynamic_batching"]["preferred_batch_size"], [2, 4])
        self.assertEqual(cfg["dynamic_batching"]["priority_levels"], "2")
        self.assertEqual(cfg["instance_group"][0]["count"], 2)
        md = self.client.get_model_metadata("two_heads", as_json=True)
        self.assertEqual(sorted((t["name"], t["shape"][1:]) for t in md["inputs"]),
                         sorted((t["name"], t.get("dims", [])) for t in cfg["input"]))
        self.d.cli("model", "config", "two_heads", "--batching", "off")
        cfg = self.client.get_model_config("two_heads", as_json=True)["config"]
        self.assertNotIn("max_batch_size", cfg)  # 0, left out of proto JSON
        self.assertNotIn("dynamic_batching", cfg)
        self.assertEqual(sorted((t["name"], t["shape"]) for t in md["inputs"]),
                         sorted((t["name"], t["dims"]) for t in cfg["input"]))

    def test_unknown_model(self):
        with self.assertRaises(InferenceServerException) as cm:
            self.client.get_model_config("nosuch")
        self.assertEqual(cm.exception.status(), "StatusCode.NOT_FOUND")
        self.assertIn("nosuch", cm.exception.message())

    def test_perf_analyzer(self):
        exe, env = perf_analyzer()
        if exe is None:
            self.skipTest(env)
        out = os.path.join(self.d.work, "perf.csv")
        p = subprocess.run([exe, "-m", "mlp", "-i", "grpc", "-u", self.d.addr, "-b", "2",
                            "--concurrency-range", "1:2", "--measurement-interval", "1000",
                            "--stability-percentage", "100", "--max-trials", "10", "-f", out],
                           capture_output=True, env=env, timeout=180)
        text = (p.stdout + p.stderr).decode(errors="replace")
        self.assertEqual(p.returncode, 0, text)
        self.assertIn("Batch size: 2", text)
        with open(out) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(sorted(r["Concurrency"] for r in rows), ["1", "2"])  # rows in any order
        for r in rows:
            self.assertGreater(float(r["Inferences/Second"]), 0, r)
        stats = self.client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
        self.assertGreater(int(stats["inference_count"]), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
