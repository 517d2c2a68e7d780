"""NVIDIA's tritonclient.http (PyPI) against fluxiond's HTTP port
(--http-listen, docs/http.md), with authentication on: the token goes in
the request's headers as Triton users send it. Liveness, readiness,
server and model metadata, inference with JSON and with binary tensors
(both ways), statistics, the repository index, load and unload, and the
refusals (no token, a viewer loading).

tritonclient is installed with pip into the python3 on PATH, not into
Debian's /usr/bin/python3 that ctest runs the integration tests with: when
it is not importable here, the test runs itself again with the python3 on
PATH; exit 77 (skipped) when neither has it. Objects and tokens are made
with the fluxion CLI (tritonharness.py)."""
import os
import re
import shutil
import sys
import time
import unittest

try:
    import numpy as np
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException
except ImportError as e:
    other = shutil.which("python3")
    if (other and not os.environ.get("FX_TRITON_REEXEC")
            and os.path.realpath(other) != os.path.realpath(sys.executable)):
        env = dict(os.environ, FX_TRITON_REEXEC="1")
        env.pop("PYTHONPATH", None)   # Debian's stubs are not for that python
        os.execve(other, [other, os.path.abspath(__file__)] + sys.argv[1:], env)
    print("skipped: %s (pip install 'tritonclient[http]')" % e)
    sys.exit(77)

from tritonharness import SRC, Fluxiond, load_safetensors, require_built  # noqa: E402

require_built()

SECRET_RE = re.compile(r"fxn_[0-9a-f]{64}")


def bearer(secret):
    return {"Authorization": "Bearer " + secret}


def forward(w, x):
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    return h @ w["fc2.weight"].T + w["fc2.bias"]


class TritonHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Fluxiond("fx-triton-http-", ["--init-admin-token", "{work}/admin.token",
                                             "--http-listen", "127.0.0.1:0",
                                             "--http-port-file", "{work}/http.port"])
        cls.work = cls.d.work
        with open(os.path.join(cls.work, "admin.token")) as f:
            cls.admin = f.read().strip()
        with open(os.path.join(cls.work, "http.port")) as f:
            cls.url = "127.0.0.1:%d" % int(f.read())
        cls.cli("model", "create", os.path.join(SRC, "examples", "models", "mlp.json"))
        out = cls.cli("token", "create", "http-viewer", "--team", "default", "--role", "viewer")
        (cls.viewer,) = SECRET_RE.findall(out)
        path = os.path.join(cls.work, "mlp.safetensors")
        cls.cli("model", "export", "mlp", "-o", path)
        with open(path, "rb") as f:
            cls.w = load_safetensors(f.read())
        cls.client = th.InferenceServerClient(url=cls.url)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.d.stop()

    @classmethod
    def cli(cls, *args):
        return cls.d.cli(*args, token=cls.admin).decode("utf-8", "replace")

    def h(self, secret=None):
        return bearer(secret or self.admin)

    def assertStatus(self, status, fn, *args, **kw):
        with self.assertRaises(InferenceServerException) as cm:
            fn(*args, **kw)
        self.assertIn(status, str(cm.exception.status()), cm.exception.message())
        return cm.exception

    def test_health(self):
        # probes carry no credentials (grpc.health.v1 is public)
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_server_live(headers=self.h()))
        self.assertTrue(self.client.is_model_ready("mlp", headers=self.h(self.viewer)))
        self.assertFalse(self.client.is_model_ready("mlp", headers={}))   # 401: not ready

    def test_metadata(self):
        md = self.client.get_server_metadata(headers=self.h(self.viewer))
        self.assertTrue(md["name"])
        self.assertIsInstance(md["extensions"], list)
        mm = self.client.get_model_metadata("mlp", headers=self.h(self.viewer))
        self.assertEqual(mm["name"], "mlp")
        self.assertEqual([t["name"] for t in mm["inputs"]], ["x"])
        self.assertEqual([t["name"] for t in mm["outputs"]], ["logits"])
        self.assertEqual(mm["inputs"][0]["datatype"], "FP32")

    def infer(self, binary_in, binary_out, secret=None):
        x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
        inp = th.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary_in)
        out = th.InferRequestedOutput("logits", binary_data=binary_out)
        res = self.client.infer("mlp", [inp], outputs=[out], headers=self.h(secret))
        np.testing.assert_allclose(res.as_numpy("logits"), forward(self.w, x), rtol=1e-5,
                                   atol=1e-5)

    def test_infer_json(self):
        self.infer(False, False)

    def test_infer_binary(self):
        self.infer(True, True)
        self.infer(True, False)
        self.infer(False, True, secret=self.viewer)

    def test_statistics(self):
        self.infer(False, False)
        st = self.client.get_inference_statistics("mlp", headers=self.h(self.viewer))
        (m,) = st["model_stats"]
        self.assertEqual(m["name"], "mlp")
        self.assertGreaterEqual(int(m["inference_count"]), 5)

    def test_repository_load_unload(self):
        index = self.client.get_model_repository_index(headers=self.h(self.viewer))
        self.assertIn("mlp", [m["name"] for m in index])
        self.assertStatus("403", self.client.unload_model, "mlp", headers=self.h(self.viewer))
        self.client.unload_model("mlp", headers=self.h())
        self.assertFalse(self.client.is_model_ready("mlp", headers=self.h()))
        self.client.load_model("mlp", headers=self.h())
        for _ in range(100):
            if self.client.is_model_ready("mlp", headers=self.h()):
                break
            time.sleep(0.05)
        self.assertTrue(self.client.is_model_ready("mlp", headers=self.h()))

    def test_model_config(self):
        """GET .../config (the ModelConfig RPC): 501 while a build lacks it."""
        try:
            cfg = self.client.get_model_config("mlp", headers=self.h(self.viewer))
        except InferenceServerException as e:
            if "501" in str(e.status()):
                self.skipTest("ModelConfig is not built in yet: %s" % e.message())
            raise
        self.assertEqual(cfg["name"], "mlp")
        self.assertEqual([t["name"] for t in cfg["input"]], ["x"])

    def test_refusals(self):
        x = np.zeros((2, 4), dtype=np.float32)
        inp = th.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        self.assertStatus("401", self.client.infer, "mlp", [inp])
        wrong = "fxn_" + "0" * 64
        err = self.assertStatus("401", self.client.infer, "mlp", [inp], headers=bearer(wrong))
        self.assertNotIn(wrong, err.message())
        self.assertStatus("400", self.client.get_model_metadata, "nope\u00e9\u0000",
                          headers=self.h())
        self.assertStatus("404", self.client.get_model_metadata, "nope", headers=self.h())


if __name__ == "__main__":
    unittest.main(verbosity=2)
