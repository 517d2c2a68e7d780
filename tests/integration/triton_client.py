"""Open Inference Protocol compatibility: NVIDIA's own Python client
(tritonclient.grpc, from PyPI) drives fluxiond unchanged. Models are defined
with the `fluxion` CLI; results are checked against a numpy forward pass of
the weights the CLI exports. Runs with the python3 on PATH (where pip
installs tritonclient); exit 77 (skipped) when tritonclient is missing."""
import os
import sys
import unittest

try:
    import numpy as np
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException
except ImportError as e:
    print("skipped: %s (pip install 'tritonclient[grpc]')" % e)
    sys.exit(77)

from tritonharness import SRC, Fluxiond, load_safetensors, require_built  # noqa: E402

require_built()


class TritonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Fluxiond("fx-triton-")
        cls.work, cls.addr = cls.d.work, cls.d.addr
        for f in ("mlp.json", "two_heads.json"):
            cls.cli("model", "create", os.path.join(SRC, "examples", "models", f))
        cls.client = tc.InferenceServerClient(url=cls.addr)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.d.stop()

    @classmethod
    def cli(cls, *args):
        return cls.d.cli(*args)

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
