"""A new spec revision for an existing model (issue 16): `fluxion model
update NAME SPEC` (UpdateModelSpec) stores the spec as the model's next
revision with a new version whose weights are the latest version's where a
parameter keeps its name, shape and dtype, and a seeded initialization for
the rest (the same as a model created with that spec and seed); the reply
and the CLI list what was carried, re-initialized (new, or reshaped, with
the old shape) and dropped. Every version records its revision: serving
the new version uses the new spec, an older version is still served with
its own; a job from an older version trains on that version's spec and
its result records it; all of it survives a restart. Bad specs and unknown
models are refused naming what was wrong."""
import json
import os
import subprocess
import tempfile
import time

import fxtest
from fxtest import C, DaemonTest, mlp_spec, np, randn
from fluxion_client import safetensors
from fluxion_client.jobs import FINAL_STATES, training_pb2

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")


def head_spec(n_out):
    """fc1 as mlp_spec's (4 -> 8, relu), then a new node "head" 8 -> n_out."""
    s = mlp_spec()
    s["nodes"][1] = {"name": "head", "op": "dense", "inputs": ["fc1"],
                     "attrs": {"in_features": 8, "out_features": n_out}}
    s["outputs"] = [{"name": "y", "source": "head"}]
    return s


def forward(w, x, last):
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    return h @ w[last + ".weight"].T + w[last + ".bias"]


def shapes(changes):
    return {c.name: (list(c.shape), list(c.old_shape)) for c in changes}


class ModelUpdateTest(DaemonTest):
    DAEMON_ARGS = ("--train-workers", "1")

    def weights(self, name, version):
        return safetensors.load(self.c.export_weights(name, version)[1])

    def wait(self, job_id, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.c.get_job(job_id)
            if job.state in FINAL_STATES:
                return job
            time.sleep(0.02)
        self.fail("job %s did not end" % job_id)

    def test_update_carries_reports_and_serves(self):
        self.c.create_model("m", mlp_spec(), seed=1)
        w1 = {"fc1.weight": randn(1, 8, 4), "fc1.bias": randn(2, 8),
              "fc2.weight": randn(3, 3, 8), "fc2.bias": randn(4, 3)}
        self.assertEqual(self.c.import_weights("m", w1).version, 2)
        r = self.c.update_model_spec("m", head_spec(5), seed=7)
        self.assertEqual((r.revision, r.version, r.from_version), (2, 3, 2))
        self.assertEqual(shapes(r.carried), {"fc1.weight": ([8, 4], [8, 4]),
                                             "fc1.bias": ([8], [8])})
        self.assertEqual(shapes(r.reinitialized), {"head.weight": ([5, 8], []),
                                                   "head.bias": ([5], [])})
        self.assertEqual(shapes(r.dropped), {"fc2.weight": ([], [3, 8]),
                                             "fc2.bias": ([], [3])})
        self.assertEqual(r.model.spec_revision, 2)
        self.assertEqual([v.spec_revision for v in r.model.versions], [1, 1, 2])
        self.assertEqual(r.model.spec.nodes[1].name, "head")
        # carried bit for bit; the rest as a model created with spec and seed
        w3 = self.weights("m", 3)
        for k in ("fc1.weight", "fc1.bias"):
            np.testing.assert_array_equal(w3[k], w1[k])
        self.c.create_model("ref", head_spec(5), seed=7, no_load=True)
        ref = self.weights("ref", 1)
        for k in ("head.weight", "head.bias"):
            np.testing.assert_array_equal(w3[k], ref[k])
        # served: the new version with the new spec; the old one with its own
        x = randn(9, 6, 4)
        out = self.c.infer("m", {"x": x})["y"]
        self.assertEqual(out.shape, (6, 5))
        np.testing.assert_allclose(out, forward(w3, x, "head"), rtol=1e-5, atol=1e-5)
        old = self.c.infer("m", {"x": x}, version="2")["y"]
        np.testing.assert_allclose(old, forward(w1, x, "fc2"), rtol=1e-5, atol=1e-5)
        # jobs: from the old version (revision 1) and from the latest
        y = np.random.default_rng(0).integers(0, 3, 64).astype(np.int64)
        self.c.upload_dataset("d", {"x": randn(5, 64, 4), "y": y})
        spec = {"model": "m", "dataset": "d", "feeds": [{"input": "x", "tensor": "x"}],
                "losses": [{"output": "y", "kind": "cross_entropy", "target": "y"}],
                "steps": 5, "batch_size": 16, "seed": 1, "serve_when_done": False}
        old_job = self.wait(self.c.submit_job(dict(spec, model_version=2)).id)
        self.assertEqual(old_job.state, training_pb2.SUCCEEDED, old_job.error)
        # its result (revision 1) is the latest version now: the model's
        # spec and what is served follow it
        m = self.c.get_model("m")
        self.assertEqual((m.latest_version, m.spec_revision), (old_job.result_version, 1))
        self.assertEqual(m.spec.nodes[1].name, "fc2")
        self.assertEqual(self.c.infer("m", {"x": x})["y"].shape, (6, 3))
        new_job = self.wait(self.c.submit_job(dict(spec, model_version=3)).id)
        self.assertEqual(new_job.state, training_pb2.SUCCEEDED, new_job.error)
        revs = {v.version: v.spec_revision for v in self.c.get_model("m").versions}
        self.assertEqual(revs[old_job.result_version], 1)
        self.assertEqual(revs[new_job.result_version], 2)
        self.assertIn("fc2.weight", self.weights("m", old_job.result_version))
        m = self.c.get_model("m")
        self.assertEqual(m.latest_version, new_job.result_version)
        self.assertEqual(m.spec_revision, 2)
        self.assertEqual(self.c.infer("m", {"x": x})["y"].shape, (6, 5))
        # a second update reshapes head: re-initialized, with its old shape
        r = self.c.update_model_spec("m", head_spec(2))
        self.assertEqual(r.revision, 3)
        self.assertEqual(shapes(r.reinitialized), {"head.weight": ([2, 8], [5, 8]),
                                                   "head.bias": ([2], [5])})
        self.assertEqual(len(r.dropped), 0)
        # it all survives a restart
        self.d.restart()
        type(self).c = self.d.client()
        m = self.c.get_model("m")
        self.assertEqual(m.spec_revision, 3)
        self.assertEqual(m.spec.nodes[1].attrs["out_features"].i, 2)
        self.assertEqual(self.c.infer("m", {"x": x})["y"].shape, (6, 2))
        self.assertEqual(self.c.infer("m", {"x": x}, version="3")["y"].shape, (6, 5))

    def test_cli_and_errors(self):
        self.c.create_model("c", mlp_spec(), seed=1, no_load=True)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "spec.json")
            with open(path, "w") as f:   # a model file, as `model create` takes
                json.dump({"name": "ignored", "spec": head_spec(4)}, f)
            p = subprocess.run([CLI, "--server", self.d.address, "model", "update", "c", path,
                                "--seed", "3"], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            for want in ("updated model c: spec revision 2, version 2 (weights from version 1)",
                         "carried (2):", "re-initialized (2):", "(new)", "dropped (2):",
                         "fc2.weight", "[3,8]"):
                self.assertIn(want, p.stdout)
            p = subprocess.run([CLI, "--server", self.d.address, "model", "get", "c"],
                               capture_output=True, text=True, timeout=60)
            self.assertIn("spec revision 1", p.stdout)
            self.assertIn("spec revision 2", p.stdout)
            bad = os.path.join(d, "bad.json")
            with open(bad, "w") as f:
                json.dump({"inputs": [], "nodes": [], "outputs": []}, f)
            p = subprocess.run([CLI, "--server", self.d.address, "model", "update", "c", bad],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 1)
            self.assertIn("INVALID_ARGUMENT", p.stderr)
        self.assertCode(C.NOT_FOUND, self.c.update_model_spec, "nope", mlp_spec(),
                        contains="nope")
        s = mlp_spec()
        s["nodes"][1]["inputs"] = ["missing"]
        self.assertCode(C.INVALID_ARGUMENT, self.c.update_model_spec, "c", s,
                        contains=("spec:", "missing"))
        self.assertEqual(self.c.get_model("c").spec_revision, 2)


if __name__ == "__main__":
    fxtest.main()
