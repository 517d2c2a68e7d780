"""The training scheduler end to end (docs/scheduling.md) on a real fluxiond
with authentication on and two teams: team b, within its nominal quota,
preempts team a's borrowing job; a's job checkpoints, goes back to QUEUED
(PREEMPTED says for whom), resumes from its checkpoint once b's job is done
(RESUMED), and ends SUCCEEDED with the same weights as an uninterrupted run
of the same spec. ClusterService.GetQueue shows positions and reasons (an
admin sees both teams, a member its own); HIGH overtakes NORMAL; UpdateJob
reorders a queued job and refuses a running one; WatchJob shows QUEUED_AT,
PREEMPTED and RESUMED.

One CPU slot (--cpu-slots 1), no minimum run time (--sched-min-run-seconds
0), so the test decides when preemption happens. Job lengths are set from
the speed measured on a first job (Release or ASan alike)."""
import json
import os
import sys
import time

import grpc

import fxtest
from fxtest import DaemonTest, JobWatcher, start_with_admin_token

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

EV = training_pb2.JobEvent
MODEL = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs",
                                    "mlp-blobs-model.json")))
JOB = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs", "mlp-blobs.json")))


def spec(**over):
    s = dict(JOB, serve_when_done=False, epochs=0, model_version=1)
    s.update(over)
    return s


class SchedTest(DaemonTest):
    @classmethod
    def setUpClass(cls):
        cls.d, cls.admin_secret = start_with_admin_token(
            name="sched", args=["--cpu-slots", "1", "--sched-min-run-seconds", "0"])
        cls.admin = cls.d.client(token=cls.admin_secret)
        a_pb2, a_grpc = fxtest.admin_pb()
        cls.a_pb2 = a_pb2
        cls.admin_stub = a_grpc.AdminServiceStub(cls.admin.channel)
        cls.admin.create_team("a")
        cls.admin.create_team("b")
        # a: nothing guaranteed, may borrow the one slot; b: the slot is its
        cls.set_quota("a", cpu_slots=0, borrow_cpu_slots=1)
        cls.set_quota("b", cpu_slots=1, borrow_cpu_slots=0)
        cls.a = cls.d.client(token=cls.admin.create_token("am", "member", team="a").secret)
        cls.b = cls.d.client(token=cls.admin.create_token("bm", "member", team="b").secret)
        data = make_blobs.blobs(2000, 0)
        for c in (cls.a, cls.b):
            c.upload_dataset("blobs", data)
            c.create_model(MODEL["name"], MODEL["spec"], seed=MODEL["seed"], no_load=True)
        cls.steps_per_s = None

    @classmethod
    def set_quota(cls, team, **fields):
        cur = cls.admin_stub.GetTeam(cls.a_pb2.GetTeamRequest(name=team),
                                     metadata=fxtest.bearer(cls.admin_secret), timeout=30)
        q = cls.a_pb2.TeamQuota()
        q.CopyFrom(cur.quota)
        for k, v in fields.items():
            setattr(q, k, v)
        cls.admin_stub.UpdateTeam(cls.a_pb2.UpdateTeamRequest(name=team, quota=q),
                                  metadata=fxtest.bearer(cls.admin_secret), timeout=30)

    # ------------------------------------------------------------ helpers

    def wait(self, c, job_id, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = c.get_job(job_id)
            if job.state in FINAL_STATES:
                return job
            time.sleep(0.05)
        self.fail("job %s did not end within %d s: %s" % (job_id, timeout, job))

    def wait_until(self, c, job_id, cond, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = c.get_job(job_id)
            if cond(job):
                return job
            if job.state in FINAL_STATES:
                self.fail("job %s ended before %s: %s" % (job_id, what, job))
            time.sleep(0.01)
        self.fail("job %s: no %s within %d s" % (job_id, what, timeout))

    def steps_for(self, seconds):
        """Steps that take about `seconds` (measured once on team a)."""
        if not self.steps_per_s:
            job = self.wait(self.a, self.a.submit_job(spec(steps=300)).id)
            self.assertEqual(job.state, training_pb2.SUCCEEDED, job.error)
            took = max(job.finished_unix_ms - job.started_unix_ms, 1) / 1000.0
            type(self).steps_per_s = 300 / took
        return max(50, int(self.steps_per_s * seconds))

    def queue(self, c):
        from fluxion.v1 import cluster_pb2
        return c.cluster.GetQueue(cluster_pb2.GetQueueRequest(), timeout=30)

    def update_job(self, c, job_id, priority=0, device=""):
        return c.training.UpdateJob(training_pb2.UpdateJobRequest(
            id=job_id, priority=priority, device=device), timeout=30)

    # -------------------------------------------------------------- tests

    def test_1_preempt_resume_same_weights(self):
        steps = self.steps_for(6)
        s = spec(steps=steps, checkpoint_every_steps=max(10, steps // 20))
        job = self.a.submit_job(s)
        w = JobWatcher(self.a, job.id, timeout=180)
        self.wait_until(self.a, job.id, lambda j: j.state == training_pb2.RUNNING and
                        j.progress.step > 0, "progress")
        self.assertEqual(self.a.get_job(job.id).assigned_device, "cpu")
        # b's job, within b's nominal quota, takes the slot back
        bjob = self.b.submit_job(spec(steps=self.steps_for(2)))
        self.wait_until(self.a, job.id, lambda j: j.preemptions >= 1, "preemption")
        running_b = self.wait_until(self.b, bjob.id, lambda j: j.state == training_pb2.RUNNING,
                                    "b running")
        self.assertEqual(running_b.assigned_device, "cpu")
        queued = self.a.get_job(job.id)
        if queued.state == training_pb2.QUEUED:  # b's job may be done already
            self.assertGreater(queued.checkpoint_step, 0)
            # GetQueue: the admin sees both teams, a the queued job of its own
            q = self.queue(self.admin)
            ids = {j.id: j for j in q.jobs}
            if bjob.id in ids and job.id in ids and ids[job.id].state == "QUEUED":
                self.assertEqual(ids[bjob.id].state, "RUNNING")
                self.assertEqual(ids[job.id].position, 1)
                self.assertTrue(ids[job.id].reason, ids[job.id])
                self.assertEqual(ids[job.id].preemptions, 1)
                mine = self.queue(self.a)
                self.assertNotIn(bjob.id, {j.id for j in mine.jobs})
        done = self.wait(self.a, job.id)
        self.assertEqual(done.state, training_pb2.SUCCEEDED, done.error)
        self.assertEqual(done.preemptions, 1)
        self.assertEqual(done.restarts, 0)
        self.assertEqual(done.progress.step, steps)
        self.assertEqual(self.wait(self.b, bjob.id).state, training_pb2.SUCCEEDED)
        w.join(60)
        self.assertIsNone(w.error)
        kinds = w.kinds()
        self.assertIn(EV.PREEMPTED, kinds)
        self.assertIn(EV.RESUMED, kinds)
        self.assertIn(EV.QUEUED_AT, kinds)
        self.assertLess(kinds.index(EV.PREEMPTED), kinds.index(EV.RESUMED))
        pre = [e for e in w.events if e.kind == EV.PREEMPTED][0]
        self.assertIn("job %s of team b" % bjob.id, pre.message)
        self.assertEqual(pre.job.state, training_pb2.QUEUED)
        res = [e for e in w.events if e.kind == EV.RESUMED][0]
        self.assertEqual(res.job.state, training_pb2.RUNNING)
        self.assertIn("preemption", res.message)
        # the same spec uninterrupted gives the same bytes
        preempted = self.a.export_weights(MODEL["name"], done.result_version)[1]
        again = self.wait(self.a, self.a.submit_job(s).id)
        self.assertEqual(again.state, training_pb2.SUCCEEDED, again.error)
        self.assertEqual(again.preemptions, 0)
        self.assertEqual(self.a.export_weights(MODEL["name"], again.result_version)[1],
                         preempted)

    def test_2_high_overtakes_normal_and_update(self):
        blocker = self.a.submit_job(spec(steps=10 ** 8, not_preemptible=True))
        self.wait_until(self.a, blocker.id, lambda j: j.state == training_pb2.RUNNING,
                        "running")
        n = self.a.submit_job(spec(steps=20, description="normal"))
        h = self.a.submit_job(spec(steps=20, description="high", priority="HIGH"))
        low = self.a.submit_job(spec(steps=20, description="low", priority="LOW"))
        self.wait_until(self.a, h.id, lambda j: j.queue_position == 1, "position 1")
        self.assertEqual(self.a.get_job(n.id).queue_position, 2)
        self.assertEqual(self.a.get_job(low.id).queue_position, 3)
        self.assertTrue(self.a.get_job(n.id).wait_reason)
        # GetQueue agrees with the records
        q = self.queue(self.a)
        pos = {j.id: j.position for j in q.jobs if j.state == "QUEUED"}
        self.assertEqual((pos[h.id], pos[n.id], pos[low.id]), (1, 2, 3))
        self.assertEqual([j.id for j in q.jobs if j.state == "RUNNING"], [blocker.id])
        # UpdateJob: LOW to HIGH goes behind the earlier HIGH; running: refused
        up = self.update_job(self.a, low.id, priority=training_pb2.HIGH)
        self.assertEqual(up.spec.priority, training_pb2.HIGH)
        self.wait_until(self.a, low.id, lambda j: j.queue_position == 2, "position 2")
        self.assertRpcCode(grpc.StatusCode.FAILED_PRECONDITION, self.update_job, self.a,
                           blocker.id, priority=training_pb2.LOW)
        self.assertRpcCode(grpc.StatusCode.INVALID_ARGUMENT, self.update_job, self.a, n.id,
                           device="tpu")
        # b cannot see a's job
        self.assertRpcCode(grpc.StatusCode.NOT_FOUND, self.update_job, self.b, n.id,
                           priority=training_pb2.HIGH)
        self.a.cancel_job(blocker.id)
        ends = {}
        for j in (h, low, n):
            done = self.wait(self.a, j.id)
            self.assertEqual(done.state, training_pb2.SUCCEEDED, done.error)
            ends[j.id] = done.started_unix_ms
        self.assertLess(ends[h.id], ends[low.id])
        self.assertLess(ends[low.id], ends[n.id])


if __name__ == "__main__":
    fxtest.main()
