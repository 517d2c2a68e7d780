"""Open Inference Protocol compatibility: NVIDIA's own Python client
(tritonclient.grpc, from PyPI) drives fluxiond unchanged. Models are defined
with the `fluxion` CLI; results are checked against a numpy forward pass of
the weights the CLI exports. Runs with the python3 on PATH (where pip
installs tritonclient); exit 77 (skipped) when tritonclient is missing."""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import unittest

try:
    import numpy as np
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException
except ImportError as e:
    print("skipped: %s (pip install 'tritonclient[grpc]')" % e)
    sys.exit(77)

SRC = os.environ.get("FX_SOURCE_DIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
FLUXIOND = os.environ.get("FLUXIOND") or os.path.join(SRC, "build", "fluxiond")
CLI = os.environ.get("FLUXION_CLI") or os.path.join(SRC, "build", "fluxion")
for exe in (FLUXIOND, CLI):
    if not os.access(exe, os.X_OK):
        print("skipped: %s is not built" % exe)
        sys.exit(77)


def load_safetensors(data):
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
    return out


class TritonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="fx-triton-")
        cls.log = open(os.path.join(cls.work, "fluxiond.log"), "wb")
        cls.proc = subprocess.Popen([FLUXIOND, "--listen", "127.0.0.1:0", "--data-dir",
                                     os.path.join(cls.work, "data")],
                                    stdout=subprocess.PIPE, stderr=cls.log)
        line = cls.proc.stdout.readline().decode()
        assert line.startswith("listening on "), line
        cls.addr = line.split()[-1]
        cls.env = dict(os.environ, FLUXION_SERVER=cls.addr)
        for f in ("mlp.json", "two_heads.json"):
            cls.cli("model", "create", os.path.join(SRC, "examples", "models", f))
        cls.client = tc.InferenceServerClient(url=cls.addr)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.proc.send_signal(signal.SIGTERM)
        rc = cls.proc.wait(timeout=15)
        cls.log.close()
        assert rc == 0, "fluxiond exited %d" % rc
        shutil.rmtree(cls.work, ignore_errors=True)

    @classmethod
    def cli(cls, *args):
        p = subprocess.run([CLI] + list(args), capture_output=True, env=cls.env, timeout=60)
        assert p.returncode == 0, (args, p.stderr)
        return p.stdout

    def weights(self, model):
        path = os.path.join(self.work, model + ".safetensors")
        self.cli("model", "export", model, "-o", path)
        with open(path, "rb") as f:
            return load_safetensors(f.read())

    def test_health_and_metadata(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertEqual(self.client.get_server_metadata().name, "fluxion")
        self.assertTrue(self.client.is_model_ready("mlp"))
        md = self.client.get_model_metadata("mlp")
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.inputs],
                         [("x", "FP32", [-1, 4])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in md.outputs],
                         [("logits", "FP32", [-1, 3])])
        self.assertEqual(list(md.versions), ["1"])

    def test_infer_matches_weights(self):
        w = self.weights("mlp")
        x = np.random.default_rng(5).standard_normal((7, 4)).astype(np.float32)
        inp = tc.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = self.client.infer("mlp", [inp], outputs=[tc.InferRequestedOutput("logits")],
                                request_id="r1")
        h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
        want = h @ w["fc2.weight"].T + w["fc2.bias"]
        np.testing.assert_allclose(res.as_numpy("logits"), want, rtol=1e-5, atol=1e-5)
        self.assertEqual(res.get_response().id, "r1")

    def test_two_outputs(self):
        self.client.load_model("two_heads")  # its model file stores it unloaded
        md = self.client.get_model_metadata("two_heads")
        inputs = []
        for t in md.inputs:
            shape = [3 if d == -1 else d for d in t.shape]
            i = tc.InferInput(t.name, shape, t.datatype)
            i.set_data_from_numpy(np.ones(shape, dtype=np.float32))
            inputs.append(i)
        res = self.client.infer("two_heads", inputs)
        for t in md.outputs:
            self.assertEqual(res.as_numpy(t.name).shape[0], 3)

    def test_errors(self):
        with self.assertRaises(InferenceServerException) as cm:
            self.client.get_model_metadata("no_such_model")
        self.assertIn("NOT_FOUND", str(cm.exception.status()))
        bad = tc.InferInput("x", [2, 5], "FP32")
        bad.set_data_from_numpy(np.zeros((2, 5), dtype=np.float32))
        with self.assertRaises(InferenceServerException) as cm:
            self.client.infer("mlp", [bad])
        self.assertIn("INVALID_ARGUMENT", str(cm.exception.status()))
        self.assertIn("'x'", cm.exception.message())

    def test_repository_and_statistics(self):
        index = self.client.get_model_repository_index()
        self.assertIn("mlp", [m.name for m in index.models])
        self.client.unload_model("two_heads")
        self.assertFalse(self.client.is_model_ready("two_heads"))
        self.client.load_model("two_heads")
        self.assertTrue(self.client.is_model_ready("two_heads"))
        x = np.zeros((2, 4), dtype=np.float32)
        inp = tc.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        self.client.infer("mlp", [inp])
        stats = self.client.get_inference_statistics("mlp")
        s = stats.model_stats[0]
        self.assertEqual(s.name, "mlp")
        self.assertGreaterEqual(s.inference_stats.success.count, 1)
        self.assertGreaterEqual(s.inference_count, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
