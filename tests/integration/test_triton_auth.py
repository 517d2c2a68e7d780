"""NVIDIA's tritonclient.grpc (PyPI) against a fluxiond with authentication
on (issue 12): the token goes in the call's headers, as Triton users
already send it (`headers={"authorization": "Bearer <token>"}`); without it,
or with a wrong one, every call is UNAUTHENTICATED; a viewer infers but
may not load or unload; another team's member does not see the model.

tritonclient is installed with pip into the python3 on PATH, not into
Debian's /usr/bin/python3 that ctest runs the integration tests with: when
it is not importable here, the test runs itself again with the python3 on
PATH; exit 77 (skipped) when neither has it. Objects and tokens are made
with the fluxion CLI (FLUXION_TOKEN)."""
import os
import re
import unittest

try:
    import numpy as np
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException
except ImportError as e:
    from tritonharness import run_with_tritonclient
    run_with_tritonclient(e)

from tritonharness import SRC, Fluxiond, load_safetensors, require_built  # noqa: E402

require_built()

SECRET_RE = re.compile(r"fxn_[0-9a-f]{64}")


def bearer(secret):
    return {"authorization": "Bearer " + secret}


def forward(w, x):
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    return h @ w["fc2.weight"].T + w["fc2.bias"]


class TritonAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Fluxiond("fx-triton-auth-", ["--init-admin-token", "{work}/admin.token"])
        cls.work, cls.addr = cls.d.work, cls.d.addr
        token_file = os.path.join(cls.work, "admin.token")
        with open(token_file) as f:
            cls.admin = f.read().strip()
        assert SECRET_RE.fullmatch(cls.admin), "the admin token file holds no token"
        cls.cli("model", "create", os.path.join(SRC, "examples", "models", "mlp.json"))
        cls.viewer = cls.new_token("triton-viewer", "default", "viewer")
        cls.cli("team", "create", "b")
        cls.other = cls.new_token("b-member", "b", "member")
        cls.client = tc.InferenceServerClient(url=cls.addr)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.d.stop()

    @classmethod
    def log_text(cls):
        return cls.d.log_text()

    @classmethod
    def cli(cls, *args, token=None):
        return cls.d.cli(*args, token=token or cls.admin).decode("utf-8", "replace")

    @classmethod
    def new_token(cls, name, team, role):
        """A token made with `fluxion token create` (its secret, whatever
        the output's layout)."""
        out = cls.cli("token", "create", name, "--team", team, "--role", role)
        found = SECRET_RE.findall(out)
        assert len(found) == 1, "token create printed %d secrets" % len(found)
        return found[0]

    def x_input(self, x):
        inp = tc.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return inp

    def assertStatus(self, status, fn, *args, **kw):
        with self.assertRaises(InferenceServerException) as cm:
            fn(*args, **kw)
        self.assertIn(status, str(cm.exception.status()), cm.exception.message())
        return cm.exception

    def test_infer_with_token_header(self):
        path = os.path.join(self.work, "mlp.safetensors")
        self.cli("model", "export", "mlp", "-o", path)
        with open(path, "rb") as f:
            w = load_safetensors(f.read())
        x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
        for secret in (self.admin, self.viewer):
            res = self.client.infer("mlp", [self.x_input(x)],
                                    outputs=[tc.InferRequestedOutput("logits")],
                                    headers=bearer(secret))
            np.testing.assert_allclose(res.as_numpy("logits"), forward(w, x), rtol=1e-5,
                                       atol=1e-5)
        self.assertTrue(self.client.is_server_live(headers=bearer(self.viewer)))
        self.assertTrue(self.client.is_model_ready("mlp", headers=bearer(self.viewer)))
        md = self.client.get_model_metadata("mlp", headers=bearer(self.viewer))
        self.assertEqual([t.name for t in md.outputs], ["logits"])
        index = self.client.get_model_repository_index(headers=bearer(self.viewer))
        self.assertEqual([m.name for m in index.models], ["mlp"])

    def test_without_token_unauthenticated(self):
        x = np.zeros((2, 4), dtype=np.float32)
        self.assertStatus("UNAUTHENTICATED", self.client.infer, "mlp", [self.x_input(x)])
        self.assertStatus("UNAUTHENTICATED", self.client.is_server_live)
        self.assertStatus("UNAUTHENTICATED", self.client.get_model_repository_index)
        self.assertStatus("UNAUTHENTICATED", self.client.load_model, "mlp")

    def test_wrong_token_unauthenticated(self):
        x = np.zeros((2, 4), dtype=np.float32)
        wrong = "fxn_" + "0" * 64
        err = self.assertStatus("UNAUTHENTICATED", self.client.infer, "mlp", [self.x_input(x)],
                                headers=bearer(wrong))
        self.assertNotIn(wrong, err.message())
        self.assertStatus("UNAUTHENTICATED", self.client.infer, "mlp", [self.x_input(x)],
                          headers={"authorization": "Basic " + self.admin})

    def test_viewer_may_not_load_or_unload(self):
        self.assertStatus("PERMISSION_DENIED", self.client.unload_model, "mlp",
                          headers=bearer(self.viewer))
        self.assertStatus("PERMISSION_DENIED", self.client.load_model, "mlp",
                          headers=bearer(self.viewer))
        self.assertTrue(self.client.is_model_ready("mlp", headers=bearer(self.viewer)))

    def test_other_team_does_not_see_the_model(self):
        x = np.zeros((2, 4), dtype=np.float32)
        for name in ("mlp", "default/mlp"):
            self.assertStatus("NOT_FOUND", self.client.infer, name, [self.x_input(x)],
                              headers=bearer(self.other))
            self.assertStatus("NOT_FOUND", self.client.get_model_metadata, name,
                              headers=bearer(self.other))
        index = self.client.get_model_repository_index(headers=bearer(self.other))
        self.assertEqual(list(index.models), [])
        # The admin reaches it by its whole name.
        res = self.client.infer("default/mlp", [self.x_input(x)], headers=bearer(self.admin))
        self.assertEqual(res.as_numpy("logits").shape, (2, 3))


if __name__ == "__main__":
    unittest.main(verbosity=2)
