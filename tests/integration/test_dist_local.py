"""Data-parallel jobs whose ranks all run on one daemon (issue 15,
docs/distributed.md "Ranks on one daemon"): a job with world_size 2 and
placement ["cpu", "cpu"] (2 CPU slots: --train-workers 2) ends with the
weights a world_size 1 job with twice the batch gives, within a stated
float tolerance (|a - b| <= 1e-5 + 1e-4 |b|: the gradient sums are taken in
another order, nothing else differs); a world job cancelled mid-run and
resumed (ResumeJob) from its checkpoint ends with the weights of the same
job uninterrupted; placements and sizes that cannot run are refused saying
why (a peer that is not configured, a bad world_size or bucket_bytes)."""
import json
import os
import sys
import time

import numpy as np

import fxtest
from fxtest import C, DaemonTest

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client import safetensors  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

MODEL = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs",
                                    "mlp-blobs-model.json")))
JOB = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs", "mlp-blobs.json")))
TOL_ABS, TOL_REL = 1e-5, 1e-4


def spec(**over):
    s = dict(JOB, serve_when_done=False, model_version=1, epochs=2, batch_size=16,
             checkpoint_every_steps=20)
    s.update(over)
    return s


class DistLocalTest(DaemonTest):
    DAEMON_ARGS = ("--train-workers", "2", "--threads", "1")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # 1251 training rows (312 held out): 1251 = 39 * 32 + 3, a partial last batch
        cls.c.upload_dataset("blobs", make_blobs.blobs(1563, 0))
        cls.c.create_model(MODEL["name"], MODEL["spec"], seed=MODEL["seed"], no_load=True)

    def wait(self, job_id, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.c.get_job(job_id)
            if job.state in FINAL_STATES:
                return job
            time.sleep(0.05)
        self.fail("job %s did not end within %d s" % (job_id, timeout))

    def weights(self, job):
        self.assertEqual(job.state, training_pb2.SUCCEEDED, job.error)
        return safetensors.load(self.c.export_weights(MODEL["name"], job.result_version)[1])

    def assertClose(self, a, b, what):
        self.assertEqual(sorted(a), sorted(b))
        worst = 0.0
        for name in a:
            d = np.abs(a[name].astype(np.float64) - b[name].astype(np.float64))
            q = d / (TOL_ABS + TOL_REL * np.abs(b[name].astype(np.float64)))
            worst = max(worst, float(q.max()) if q.size else 0.0)
        print("%s: %.3f of the tolerance" % (what, worst))
        self.assertLessEqual(worst, 1.0, "%s: weights differ beyond the tolerance" % what)

    def test_two_ranks_equal_one_rank_of_twice_the_batch(self):
        two = self.c.submit_job(spec(world_size=2, placement=["cpu", "cpu"]))
        one = self.c.submit_job(spec(batch_size=32))
        two, one = self.wait(two.id), self.wait(one.id)
        self.assertEqual(two.progress.step, one.progress.step)
        self.assertClose(self.weights(two), self.weights(one),
                         "2 ranks x 16 vs 1 x 32, adam, 2 epochs")
        # the reported loss is the global batch's (both runs report it alike)
        self.assertAlmostEqual(two.progress.train_loss, one.progress.train_loss, places=4)
        names = [m.name for m in two.progress.metrics]
        self.assertIn("comm_ms", names)
        self.assertIn("comm_overlap", names)
        # no placement, no peers: every rank on this daemon's device
        plain = self.wait(self.c.submit_job(spec(world_size=2)).id)
        self.assertEqual(self.weights(plain).keys(), self.weights(two).keys())
        self.assertClose(self.weights(plain), self.weights(two), "no placement vs cpu,cpu")

    def test_cancel_and_resume_a_world_job(self):
        s = spec(world_size=2, placement=["cpu", "cpu"], epochs=0, steps=400,
                 checkpoint_every_steps=10)
        job = self.c.submit_job(s)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            j = self.c.get_job(job.id)
            if j.checkpoint_step >= 10 or j.state in FINAL_STATES:
                break
            time.sleep(0.01)
        self.c.cancel_job(job.id)
        cancelled = self.wait(job.id)
        if cancelled.state == training_pb2.SUCCEEDED:
            self.skipTest("the job ended before the cancel (machine too fast for 400 steps)")
        self.assertEqual(cancelled.state, training_pb2.CANCELLED, cancelled.error)
        at = cancelled.checkpoint_step
        self.assertGreater(at, 0)
        self.c.resume_job(job.id)
        resumed = self.wait(job.id)
        self.assertEqual(resumed.state, training_pb2.SUCCEEDED, resumed.error)
        self.assertEqual(resumed.progress.step, 400)
        again = self.wait(self.c.submit_job(s).id)
        self.assertClose(self.weights(resumed), self.weights(again),
                         "cancelled at step %d and resumed vs uninterrupted" % at)

    def test_refusals(self):
        self.assertCode(C.FAILED_PRECONDITION, self.c.submit_job,
                        spec(world_size=2, placement=["cpu", "gpu-box/cpu"]),
                        contains=("placement[1]", "no peer named gpu-box", "--peers"))
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job, spec(world_size=300),
                        contains="world_size")
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        spec(world_size=2, placement=["cpu"]), contains="placement")
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        spec(world_size=2, bucket_bytes=100), contains="bucket_bytes")
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        spec(world_size=2, comm_backend="mpi"), contains="comm_backend")
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        spec(world_size=2, min_world_size=3), contains="min_world_size")


if __name__ == "__main__":
    fxtest.main()
