"""Jobs that start over or go on (issue 16): a cancelled job keeps its
checkpoint (across a restart) and `fluxion job resume ID` (ResumeJob)
continues it at that step with the same data order, optimizer state and
gradient noise, ending with the same weights, bit for bit, as the same job
uninterrupted (and it does read the checkpoint: a damaged one fails the
resumed job); a job without a checkpoint (cancelled while queued), one not
cancelled and an unknown one are refused saying why. `from_scratch` trains from a fresh initialization
seeded with the job's seed: from a trained version with the model's seed it
gives the weights a job from version 1 (the model's own initialization)
gives; another seed gives others."""
import json
import os
import subprocess
import sys
import time

import fxtest
from fxtest import C, DaemonTest

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")
MODEL = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs",
                                    "mlp-blobs-model.json")))
JOB = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs", "mlp-blobs.json")))


def spec(**over):
    s = dict(JOB, serve_when_done=False, model_version=1)
    s.update(over)
    return s


class JobResumeTest(DaemonTest):
    DAEMON_ARGS = ("--train-workers", "1")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c.upload_dataset("blobs", make_blobs.blobs(2000, 0))
        cls.c.create_model(MODEL["name"], MODEL["spec"], seed=MODEL["seed"], no_load=True)

    def wait(self, job_id, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.c.get_job(job_id)
            if job.state in FINAL_STATES:
                return job
            time.sleep(0.02)
        self.fail("job %s did not end within %d s" % (job_id, timeout))

    def weights(self, job):
        self.assertEqual(job.state, training_pb2.SUCCEEDED, job.error)
        return self.c.export_weights(MODEL["name"], job.result_version)[1]

    def cli(self, *args):
        return subprocess.run([CLI, "--server", self.d.address] + list(args),
                              capture_output=True, text=True, timeout=60)

    def test_resume_is_bit_identical(self):
        # shuffled, with gradient noise: what a resume must reproduce
        opt = {"kind": "adam", "lr": 0.01, "grad_noise_eta": 0.01, "grad_noise_gamma": 0.55}
        for steps in (400, 2000, 10000):   # longer when it ended before the cancel
            s = spec(steps=steps, epochs=0, checkpoint_every_steps=50, optimizer=opt)
            job = self.c.submit_job(s)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                j = self.c.get_job(job.id)
                if j.progress.step >= 10 or j.state in FINAL_STATES:
                    break
                time.sleep(0.005)
            self.c.cancel_job(job.id)
            cancelled = self.wait(job.id)
            if (cancelled.state == training_pb2.CANCELLED and
                    0 < cancelled.checkpoint_step < steps):
                break
        self.assertEqual(cancelled.state, training_pb2.CANCELLED)
        self.assertEqual(cancelled.result_version, 0)
        at = cancelled.checkpoint_step
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(cancelled.tensorboard_dir),
                                                    "checkpoint.safetensors")),
                        "a cancelled job keeps its checkpoint")
        # ... across a restart too
        self.d.restart()
        type(self).c = self.d.client()
        p = self.cli("job", "resume", job.id)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumes from checkpoint step %d" % at, p.stdout)
        resumed = self.wait(job.id)
        self.assertEqual(resumed.state, training_pb2.SUCCEEDED, resumed.error)
        self.assertEqual(resumed.progress.step, steps)
        self.assertEqual(self.c.get_job(job.id).checkpoint_step >= at, True)
        # a finished job cannot be resumed
        self.assertCode(C.FAILED_PRECONDITION, self.c.resume_job, job.id,
                        contains=("SUCCEEDED", "only a cancelled job"))
        # the same job uninterrupted: the same bytes
        again = self.wait(self.c.submit_job(s).id)
        self.assertEqual(self.weights(again), self.weights(resumed))

    def test_resume_refusals(self):
        running = self.c.submit_job(spec(steps=10 ** 8, epochs=0))
        queued = self.c.submit_job(spec())
        self.c.cancel_job(queued.id)
        self.assertEqual(self.c.get_job(queued.id).state, training_pb2.CANCELLED)
        p = self.cli("job", "resume", queued.id)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("no checkpoint", p.stderr)
        self.assertCode(C.FAILED_PRECONDITION, self.c.resume_job, queued.id,
                        contains=("job %s has no checkpoint" % queued.id, "submit it again"))
        self.assertCode(C.FAILED_PRECONDITION, self.c.resume_job, running.id,
                        contains="only a cancelled job")
        self.assertCode(C.NOT_FOUND, self.c.resume_job, "987654")
        deadline = time.monotonic() + 60
        while self.c.get_job(running.id).progress.step < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.c.cancel_job(running.id)
        job = self.wait(running.id)
        self.assertEqual(job.state, training_pb2.CANCELLED)
        # the resumed run reads the checkpoint: a damaged one fails it
        ckpt = os.path.join(os.path.dirname(job.tensorboard_dir), "checkpoint.safetensors")
        with open(ckpt, "r+b") as f:
            f.write(b"\xff" * 16)
        self.c.resume_job(running.id)
        job = self.wait(running.id)
        self.assertEqual(job.state, training_pb2.FAILED)
        self.assertIn("resume: ", job.error)

    def test_from_scratch(self):
        trained = self.wait(self.c.submit_job(spec(steps=30, epochs=0)).id)
        base = trained.result_version
        self.assertGreater(base, 1)
        # from version 1 (the model's seeded initialization), seed = the model's
        plain = self.wait(self.c.submit_job(spec(steps=40, epochs=0,
                                                 seed=MODEL["seed"])).id)
        # from a trained version, from scratch with the same seed: the same
        fresh = self.c.submit_job(spec(steps=40, epochs=0, seed=MODEL["seed"],
                                       model_version=base, from_scratch=True))
        self.assertTrue(fresh.spec.from_scratch)
        fresh = self.wait(fresh.id)
        self.assertEqual(fresh.base_version, base)
        self.assertEqual(self.weights(fresh), self.weights(plain))
        # not from scratch: it goes on from the trained weights
        on = self.wait(self.c.submit_job(spec(steps=40, epochs=0, seed=MODEL["seed"],
                                              model_version=base)).id)
        self.assertNotEqual(self.weights(on), self.weights(plain))
        # another seed: another initialization
        other = self.wait(self.c.submit_job(spec(steps=40, epochs=0, seed=MODEL["seed"] + 1,
                                                 model_version=base, from_scratch=True)).id)
        self.assertNotEqual(self.weights(other), self.weights(plain))


if __name__ == "__main__":
    fxtest.main()
