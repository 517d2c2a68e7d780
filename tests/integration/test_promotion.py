"""Promotion gates on training jobs (docs/versions.md) on a real fluxiond:
a job whose loss diverges (lr 1e9) ends SUCCEEDED with its version stored
but never served, predictions unchanged, and its record says why; promote
"never" stores without serving; "if_better" serves a result within the
tolerance of production's recorded metric and refuses a worse one, the
decision and its reason on the job (GetJob, ListJobs, WatchJob's final
event, `fluxion job show`); the metric is stored with the version; bad
gate fields are refused at submission."""
import json
import os
import subprocess
import sys
import time

import fxtest
from fxtest import C, DaemonTest, np

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")
MODEL = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs",
                                    "mlp-blobs-model.json")))
JOB = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs", "mlp-blobs.json")))


def spec(**over):
    s = dict(JOB, serve_when_done=False, epochs=3, checkpoint_every_steps=0)
    s.update(over)
    return s


class PromotionTest(DaemonTest):
    DAEMON_ARGS = ("--train-workers", "1")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data = make_blobs.blobs(600, 0)
        cls.x = make_blobs.blobs(50, 99)["x"]
        cls.c.upload_dataset("blobs", cls.data)

    def wait(self, job_id, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.c.get_job(job_id)
            if job.state in FINAL_STATES:
                return job
            time.sleep(0.05)
        self.fail("job %s did not end: %s" % (job_id, job))

    def model(self, name):
        self.c.create_model(name, MODEL["spec"], seed=MODEL["seed"])
        return name

    def predict(self, name):
        return self.c.infer(name, {"x": self.x})["logits"]

    def test_diverged_job_is_stored_not_served(self):
        name = self.model("div")
        before = self.predict(name)
        job = self.wait(self.c.submit_job(spec(
            model=name, optimizer={"kind": "sgd", "lr": 1e9})).id)
        self.assertEqual(training_pb2.JobState.Name(job.state), "SUCCEEDED", job.error)
        self.assertEqual(job.result_version, 2)
        self.assertFalse(job.promoted)
        self.assertTrue(job.promotion.startswith("not promoted: diverged"), job.promotion)
        m = self.c.get_model(name)
        self.assertEqual([v.version for v in m.versions], [1, 2])   # stored
        self.assertEqual(m.production_version, 1)                   # not served
        np.testing.assert_array_equal(self.predict(name), before)   # predictions unchanged
        # the same whatever the setting: always is the default, if_better too
        job = self.wait(self.c.submit_job(spec(
            model=name, optimizer={"kind": "sgd", "lr": 1e9}, promote="always")).id)
        self.assertFalse(job.promoted, job.promotion)
        self.assertEqual(self.c.get_model(name).production_version, 1)
        # ListJobs carries it too
        listed = [j for j in self.c.list_jobs(model=name) if j.id == job.id]
        self.assertEqual(listed[0].promotion, job.promotion)
        # and the CLI's job show
        out = subprocess.run([CLI, "--server", self.d.address, "job", "get", job.id],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("not promoted: diverged", out.stdout)
        out = subprocess.run([CLI, "--server", self.d.address, "job", "get", job.id, "-o", "json"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        got = json.loads(out.stdout)     # a NaN loss is still valid JSON
        self.assertFalse(got["promoted"])
        self.assertTrue(got["promotion"].startswith("not promoted: diverged"))

    def test_never_and_always(self):
        name = self.model("nev")
        before = self.predict(name)
        job = self.wait(self.c.submit_job(spec(model=name, promote="never")).id)
        self.assertEqual(training_pb2.JobState.Name(job.state), "SUCCEEDED", job.error)
        self.assertFalse(job.promoted)
        self.assertEqual(job.promotion, "not promoted: promote is never")
        m = self.c.get_model(name)
        self.assertEqual(m.production_version, 1)
        np.testing.assert_array_equal(self.predict(name), before)
        self.assertEqual(m.versions[1].metric_name, "val_loss")     # recorded all the same
        job = self.wait(self.c.submit_job(spec(model=name)).id)     # default: always
        self.assertTrue(job.promoted, job.promotion)
        self.assertEqual(self.c.get_model(name).production_version, job.result_version)
        self.assertFalse(np.array_equal(self.predict(name), before))

    def test_if_better(self):
        name = self.model("ifb")
        trained = self.wait(self.c.submit_job(spec(model=name)).id)
        self.assertTrue(trained.promoted, trained.promotion)
        m = self.c.get_model(name)
        v = m.versions[-1]
        self.assertEqual((v.version, v.metric_name), (trained.result_version, "val_loss"))
        self.assertAlmostEqual(v.metric, trained.progress.val_loss, places=6)
        served = self.predict(name)
        # worse: one tiny step from the untrained version 1
        worse = self.wait(self.c.submit_job(spec(
            model=name, model_version=1, steps=1, epochs=0, optimizer={"kind": "sgd", "lr": 1e-6},
            promote="if_better", promote_tolerance=0.01)).id)
        self.assertEqual(training_pb2.JobState.Name(worse.state), "SUCCEEDED", worse.error)
        self.assertFalse(worse.promoted, worse.promotion)
        self.assertTrue(worse.promotion.startswith("not promoted: val_loss"), worse.promotion)
        self.assertIn("served v%d" % trained.result_version, worse.promotion)
        self.assertEqual(self.c.get_model(name).production_version, trained.result_version)
        np.testing.assert_array_equal(self.predict(name), served)
        # better (or within 5%): more training from production
        better = self.wait(self.c.submit_job(spec(
            model=name, promote="if_better", promote_tolerance=0.05,
            optimizer={"kind": "adam", "lr": 0.001})).id)
        self.assertTrue(better.promoted, better.promotion)
        self.assertTrue(better.promotion.startswith("promoted: val_loss"), better.promotion)
        self.assertEqual(self.c.get_model(name).production_version, better.result_version)
        # one command back
        self.assertEqual(self.c.rollback(name).production_version, trained.result_version)
        np.testing.assert_array_equal(self.predict(name), served)

    def test_watch_shows_decision(self):
        name = self.model("wat")
        job = self.c.submit_job(spec(model=name, promote="never"))
        last = None
        for ev in self.c.watch_job(job.id):
            last = ev
        self.assertEqual(last.job.promotion, "not promoted: promote is never")
        self.assertIn("not promoted: promote is never", last.message)   # the SUCCEEDED event

    def test_delete_version_refused_for_a_job(self):
        name = self.model("jb")
        self.c.import_weights(name, self.c.export_arrays(name))     # v2, production
        job = self.c.submit_job(spec(model=name, model_version=1, steps=10 ** 7, epochs=0))
        self.assertCode(C.FAILED_PRECONDITION, self.c.delete_version, name, 1,
                        contains=("version 1", "training job %s" % job.id))
        self.c.cancel_job(job.id)
        self.wait(job.id)
        self.assertEqual([v.version for v in self.c.delete_version(name, 1).versions], [2])

    def test_bad_gate_fields(self):
        name = self.model("bad")
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job, spec(model=name, promote="maybe"),
                        contains=("spec.promote", "if_better"))
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        spec(model=name, promote_tolerance=-1),
                        contains="spec.promote_tolerance")
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        spec(model=name, promote_metric="x" * 100),
                        contains="spec.promote_metric")


if __name__ == "__main__":
    fxtest.main()
