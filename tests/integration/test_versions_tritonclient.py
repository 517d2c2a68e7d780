"""Aliases through NVIDIA's tritonclient (PyPI; docs/versions.md): its
model_version is a string, so a Triton user asks for "production", an
alias ("canary") or a number, over HTTP (tritonclient.http) and gRPC
(tritonclient.grpc). The versions are made and moved with the fluxion CLI
(model import --no-promote, alias, promote, rollback), whose outputs are
checked too. Runs on the python3 that has tritonclient (tritonharness)."""
import json
import os
import struct
import sys
import unittest

try:
    import numpy as np
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException
except ImportError as e:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from tritonharness import run_with_tritonclient
    run_with_tritonclient(e)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tritonharness import SRC, Fluxiond, load_safetensors, require_built  # noqa: E402

require_built()


def dump_safetensors(arrays):
    header, blobs, off = {}, [], 0
    for name, a in arrays.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def forward(w, x):
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    return h @ w["fc2.weight"].T + w["fc2.bias"]


X = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)


class TritonVersionsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Fluxiond("fx-triton-versions-", ["--http-listen", "127.0.0.1:0",
                                                 "--http-port-file", "{work}/http.port"])
        with open(os.path.join(cls.d.work, "http.port")) as f:
            cls.http = th.InferenceServerClient(url="127.0.0.1:%d" % int(f.read()))
        cls.grpc = tg.InferenceServerClient(url=cls.d.addr)
        cls.d.cli("model", "create", os.path.join(SRC, "examples", "models", "mlp.json"))
        path = os.path.join(cls.d.work, "v1.safetensors")
        cls.d.cli("model", "export", "mlp", "-o", path)
        with open(path, "rb") as f:
            cls.w1 = load_safetensors(f.read())
        cls.w2 = {k: v * 2 for k, v in cls.w1.items()}
        path2 = os.path.join(cls.d.work, "v2.safetensors")
        with open(path2, "wb") as f:
            f.write(dump_safetensors(cls.w2))
        cls.d.cli("model", "import", "mlp", path2, "--no-promote")

    @classmethod
    def tearDownClass(cls):
        cls.http.close()
        cls.grpc.close()
        cls.d.stop()

    def infer(self, client, mod, version):
        inp = mod.InferInput("x", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        return client.infer("mlp", [inp], model_version=version).as_numpy("logits")

    def check(self, version, w):
        for client, mod in ((self.http, th), (self.grpc, tg)):
            np.testing.assert_allclose(self.infer(client, mod, version), forward(w, X),
                                       rtol=1e-5, atol=1e-5)

    def test_aliases(self):
        out = self.d.cli("model", "get", "mlp").decode()
        self.assertIn("production:  version 1", out)
        self.check("", self.w1)             # --no-promote: v2 stored, v1 served
        self.check("production", self.w1)
        self.check("2", self.w2)
        out = self.d.cli("model", "alias", "mlp", "canary", "2").decode()
        self.assertIn("canary=2", out)
        self.check("canary", self.w2)
        for client, mod in ((self.http, th), (self.grpc, tg)):
            with self.assertRaises(InferenceServerException) as cm:
                self.infer(client, mod, "nosuch")
            self.assertIn("no alias 'nosuch'", cm.exception.message())
        self.d.cli("model", "promote", "mlp", "2", "--reason", "canary looks fine")
        self.check("", self.w2)
        out = self.d.cli("model", "rollback", "mlp").decode()   # one command back
        self.assertIn("production:  version 1", out)
        self.check("", self.w1)
        out = self.d.cli("model", "get", "mlp").decode()
        self.assertIn("canary looks fine", out)
        self.assertIn("(rolled back)", out)
        self.d.cli("model", "alias", "mlp", "canary", "--delete")
        self.d.cli("model", "delete-version", "mlp", "2")
        for client, mod in ((self.http, th), (self.grpc, tg)):
            with self.assertRaises(InferenceServerException):
                self.infer(client, mod, "2")


if __name__ == "__main__":
    unittest.main(verbosity=2)
