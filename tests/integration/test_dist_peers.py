"""Data-parallel training across two fluxiond (docs/distributed.md, "Peers"
and "Faults"): A and B on free loopback ports, peered with a shared
secret. A job submitted to A with world_size 2 and placement
["cpu", "B/cpu"] (rank 0 on A, rank 1 on B) ends with the weights a
world_size 1 job with twice the batch gives on A (SGD and Adam), within
TOL: the two ranks' gradients are summed by Gloo in another order than
one rank sums them, so the results agree to float rounding, not bit for
bit. kill -9 of B mid-job: A notices within the collectives' timeout
(never hangs), the job goes back to QUEUED with an event naming B, and
once B is back it finishes with the weights of an uninterrupted run."""
import os
import secrets
import socket
import sys
import time
import unittest

import fxtest
from fxtest import np

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client import safetensors  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

# float32 rounding of sums in another order, over STEPS updates
TOL = 2e-5
STEPS = 60
MODEL = {
    "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 2]}],
    "nodes": [
        {"name": "fc1", "op": "dense", "inputs": ["x"],
         "attrs": {"in_features": 2, "out_features": 16, "activation": "relu"}},
        {"name": "fc2", "op": "dense", "inputs": ["fc1"],
         "attrs": {"in_features": 16, "out_features": 4}}],
    "outputs": [{"name": "logits", "source": "fc2"}],
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def spec(model, batch, world=1, placement=(), opt="sgd", steps=STEPS, **over):
    s = {"model": model, "dataset": "blobs", "model_version": 1,
         "feeds": [{"input": "x", "tensor": "x"}],
         "losses": [{"output": "logits", "kind": "cross_entropy", "target": "y"}],
         "optimizer": {"kind": opt, "lr": 0.05 if opt == "sgd" else 0.01},
         "batch_size": batch, "steps": steps, "epochs": 0, "shuffle": True, "seed": 3,
         "checkpoint_every_steps": 10, "serve_when_done": False, "world_size": world,
         "placement": list(placement)}
    s.update(over)
    return s


class DistPeersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        work = fxtest._WORK
        tok = os.path.join(work, "peer.token")
        with open(tok, "w") as f:
            f.write(secrets.token_hex(32))
        cls.pa, cls.pb = free_port(), free_port()
        # B takes one rank for peers at a time (--cpu-slots 1); A runs two jobs
        common = ["--peer-token-file", tok, "--threads", "1", "--checkpoint-steps", "10"]
        cls.a = fxtest.Daemon(["--listen", "127.0.0.1:%d" % cls.pa, "--node-name", "A",
                               "--peers", "B=127.0.0.1:%d" % cls.pb, "--cpu-slots", "2"] + common,
                              name="A").start()
        cls.b = fxtest.Daemon(["--listen", "127.0.0.1:%d" % cls.pb, "--node-name", "B",
                               "--peers", "A=127.0.0.1:%d" % cls.pa] + common, name="B").start()
        cls.c = cls.a.client()
        cls.c.upload_dataset("blobs", make_blobs.blobs(1000, 0))

    @classmethod
    def tearDownClass(cls):
        for d in (cls.a, cls.b):
            if d.alive():
                d.stop()

    def model(self, name):
        self.c.create_model(name, MODEL, seed=7, no_load=True)
        return name

    def wait(self, job_id, timeout=90, states=FINAL_STATES):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.c.get_job(job_id)
            if job.state in states:
                return job
            time.sleep(0.05)
        self.fail("job %s not in %s within %d s: %s" % (job_id, states, timeout,
                                                        self.c.get_job(job_id)))

    def weights(self, name, job):
        self.assertEqual(job.state, training_pb2.SUCCEEDED, job.error)
        raw = self.c.export_weights(name, job.result_version)[1]
        return safetensors.load(raw)

    def assertClose(self, w1, w2):
        self.assertEqual(sorted(w1), sorted(w2))
        for k in w1:
            a, b = np.asarray(w1[k]), np.asarray(w2[k])
            err = float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))
            self.assertLess(err, TOL, "%s: relative difference %.3g" % (k, err))

    def exactness(self, opt):
        one = self.model("one-" + opt)
        two = self.model("two-" + opt)
        j1 = self.c.submit_job(spec(one, 32, opt=opt))
        j2 = self.c.submit_job(spec(two, 16, world=2, placement=["cpu", "B/cpu"], opt=opt))
        w1 = self.weights(one, self.wait(j1.id))
        w2 = self.weights(two, self.wait(j2.id))
        self.assertClose(w2, w1)
        # rank 1 did run on B, rank 0 on A
        self.assertTrue(fxtest.wait_log(self.b, "job=%s rank=1 world=2 " % j2.id, 5))
        self.assertTrue(fxtest.wait_log(self.a, "world across daemons formed\" job=%s " % j2.id, 5))
        # and it trained: not the initial weights
        init = self.c.export_weights(two, 1)[1]
        w0 = safetensors.load(init)
        self.assertTrue(any(float(np.max(np.abs(np.asarray(w0[k]) - np.asarray(w2[k])))) > 1e-3
                            for k in w0))
        return w1

    def test_0_refused(self):
        """Placements this daemon cannot run are refused at submission."""
        m = self.model("refused")
        for placement, code, text in (
                (["cpu", "Z/cpu"], fxtest.C.FAILED_PRECONDITION, "no peer named Z"),
                (["B/cpu", "cpu"], fxtest.C.INVALID_ARGUMENT, "rank 0"),
                (["cpu", "B/bogus"], fxtest.C.INVALID_ARGUMENT, "placement[1]")):
            with self.assertRaises(fxtest.FluxionError) as cm:
                self.c.submit_job(spec(m, 16, world=2, placement=placement))
            self.assertEqual(cm.exception.code, code, cm.exception.message)
            self.assertIn(text, cm.exception.message)

    def test_5_member_busy(self):
        """Two jobs want B's one rank: the second waits (all or nothing: its
        rank 0 on A is released between tries, the event says why) and runs
        once the first is done; both end as they should."""
        m1, m2 = self.model("busy-1"), self.model("busy-2")
        j1 = self.c.submit_job(spec(m1, 16, world=2, placement=["cpu", "B/cpu"], steps=300))
        deadline = time.monotonic() + 30
        while self.c.get_job(j1.id).state != training_pb2.RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)
        j2 = self.c.submit_job(spec(m2, 16, world=2, placement=["cpu", "B/cpu"], steps=20))
        self.assertTrue(fxtest.wait_log(self.a, "ranks for peers already", 30), self.a.log_tail())
        self.assertEqual(self.wait(j1.id).state, training_pb2.SUCCEEDED)
        self.assertEqual(self.wait(j2.id).state, training_pb2.SUCCEEDED)

    def test_1_exact_sgd(self):
        self.exactness("sgd")

    def test_2_exact_adam(self):
        self.exactness("adam")

    def test_3_kill_member(self):
        ref = self.model("ref-kill")
        run = self.model("run-kill")
        steps = 200
        j1 = self.c.submit_job(spec(ref, 16, world=2, placement=["cpu", "B/cpu"], opt="adam",
                                    steps=steps))
        w_ref = self.weights(ref, self.wait(j1.id))
        job = self.c.submit_job(spec(run, 16, world=2, placement=["cpu", "B/cpu"], opt="adam",
                                     steps=steps))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            j = self.c.get_job(job.id)
            if j.checkpoint_step >= 20 or j.state in FINAL_STATES:
                break
            time.sleep(0.01)
        self.assertEqual(j.state, training_pb2.RUNNING, j)
        watch = fxtest.JobWatcher(self.c, job.id, timeout=150)
        self.b.kill9()
        t0 = time.monotonic()

        def requeued():
            return [e for e in watch.events if e.kind == training_pb2.JobEvent.STATE and
                    e.job.state == training_pb2.QUEUED and "peer B" in e.message]
        while not requeued() and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        noticed = time.monotonic() - t0
        self.assertTrue(requeued(), [(e.kind, e.job.state, e.message) for e in watch.events])
        # A noticed: at the latest by the collectives' timeout (15 s), with room for load
        self.assertLess(noticed, 45)
        # while B is down the job waits for it, saying so, and never fails
        time.sleep(3)
        self.assertNotIn(self.c.get_job(job.id).state, FINAL_STATES)
        self.assertTrue(fxtest.wait_log(self.a, "waiting for peer B", 10))
        self.b.start()
        done = self.wait(job.id, timeout=90)
        self.assertClose(self.weights(run, done), w_ref)

    def test_4_kill_coordinator(self):
        """kill -9 of A (rank 0): B's rank fails its collective and ends;
        A restarted resumes the job (RUNNING at start) and forms the world
        again; same weights as an uninterrupted run."""
        ref = self.model("ref-coord")
        run = self.model("run-coord")
        steps = 200
        j1 = self.c.submit_job(spec(ref, 16, world=2, placement=["cpu", "B/cpu"], opt="adam",
                                    steps=steps))
        w_ref = self.weights(ref, self.wait(j1.id))
        job = self.c.submit_job(spec(run, 16, world=2, placement=["cpu", "B/cpu"], opt="adam",
                                     steps=steps))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            j = self.c.get_job(job.id)
            if j.checkpoint_step >= 20 or j.state in FINAL_STATES:
                break
            time.sleep(0.01)
        self.assertEqual(j.state, training_pb2.RUNNING, j)
        self.a.kill9()
        # B's rank notices (connection reset, or Gloo's timeout at worst)
        self.assertTrue(fxtest.wait_log(self.b, "job=%s rank=1 state=LOST" % job.id, 45),
                        self.b.log_tail())
        self.a.start()
        type(self).c = self.c = self.a.client()
        done = self.wait(job.id, timeout=90)
        self.assertClose(self.weights(run, done), w_ref)

    def test_5b_cancel(self):
        """Cancelling a world job stops its rank on B after the same step
        (the stop vote), and the job ends CANCELLED."""
        m = self.model("cancel")
        job = self.c.submit_job(spec(m, 16, world=2, placement=["cpu", "B/cpu"], steps=100000))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            j = self.c.get_job(job.id)
            if j.progress.step >= 10 or j.state in FINAL_STATES:
                break
            time.sleep(0.02)
        self.assertEqual(j.state, training_pb2.RUNNING, j)
        self.c.cancel_job(job.id)
        self.assertEqual(self.wait(job.id, timeout=60).state, training_pb2.CANCELLED)
        self.assertTrue(fxtest.wait_log(self.b, "job=%s rank=1 state=STOPPED" % job.id, 30),
                        self.b.log_tail())

    def test_5c_member_busy_locally(self):
        """B admits a peer's rank through its own scheduler: while B's one
        CPU slot runs B's own job, B refuses the rank (RESOURCE_EXHAUSTED,
        "no free slot on cpu of B") and A's job waits QUEUED saying so; once
        B's job ends A's job runs and ends with the weights of the
        equivalent one-rank run."""
        cb = self.b.client()
        cb.upload_dataset("blobs", make_blobs.blobs(1000, 0))
        cb.create_model("local-b", MODEL, seed=7, no_load=True)
        local = cb.submit_job(spec("local-b", 16, steps=1000000))
        deadline = time.monotonic() + 60
        while cb.get_job(local.id).state != training_pb2.RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(cb.get_job(local.id).state, training_pb2.RUNNING)
        one, two = self.model("one-busy-b"), self.model("two-busy-b")
        j1 = self.c.submit_job(spec(one, 32))
        w1 = self.weights(one, self.wait(j1.id))
        job = self.c.submit_job(spec(two, 16, world=2, placement=["cpu", "B/cpu"]))
        watch = fxtest.JobWatcher(self.c, job.id, timeout=120)

        def refused():
            return [e for e in watch.events if e.kind == training_pb2.JobEvent.STATE and
                    e.job.state == training_pb2.QUEUED and
                    "no free slot on cpu of B" in e.message]
        deadline = time.monotonic() + 60
        while not refused() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(refused(), [(e.kind, e.job.state, e.message) for e in watch.events])
        self.assertTrue(fxtest.wait_log(self.b, "peer rank refused\" job=%s rank=1" % job.id, 10),
                        self.b.log_tail())
        # it keeps waiting (never fails) while B's own job holds the slot
        time.sleep(2)
        self.assertNotIn(self.c.get_job(job.id).state, FINAL_STATES)
        self.assertEqual(cb.get_job(local.id).state, training_pb2.RUNNING)
        cb.cancel_job(local.id)
        done = self.wait(job.id, timeout=120)
        self.assertClose(self.weights(two, done), w1)
        self.assertTrue(fxtest.wait_log(self.b, "job=%s rank=1 world=2 " % job.id, 5))
        # the rank's slot went back to B's scheduler: B runs its own jobs again
        again = cb.submit_job(spec("local-b", 16, steps=5))
        deadline = time.monotonic() + 60
        while cb.get_job(again.id).state not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(cb.get_job(again.id).state, training_pb2.SUCCEEDED)

    def test_6_elastic(self):
        """min_world_size 1: when B dies the job goes on without it (a world
        of rank 0 alone, the same per-rank batch) and succeeds."""
        run = self.model("elastic")
        job = self.c.submit_job(spec(run, 16, world=2, placement=["cpu", "B/cpu"], opt="adam",
                                     steps=300, min_world_size=1))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            j = self.c.get_job(job.id)
            if j.checkpoint_step >= 20 or j.state in FINAL_STATES:
                break
            time.sleep(0.01)
        self.assertEqual(j.state, training_pb2.RUNNING, j)
        watch = fxtest.JobWatcher(self.c, job.id, timeout=120)
        self.b.kill9()
        done = self.wait(job.id, timeout=90)
        self.assertEqual(done.state, training_pb2.SUCCEEDED, done.error)
        msgs = [e.message for e in watch.events]
        self.assertTrue(any("elastic: a world of 1 ranks" in m and "B" in m for m in msgs), msgs)
        self.b.start()


if __name__ == "__main__":
    fxtest.main()
