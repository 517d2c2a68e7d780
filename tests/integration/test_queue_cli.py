"""The scheduler from the CLI against a real fluxiond (issue 13): `fluxion
queue` shows a running and a queued job with the reason it waits (one
training slot, two jobs), `fluxion job priority` reorders queued jobs,
`fluxion job move` moves one, `fluxion team quota` round-trips the
scheduling quota (and `team update` keeps it), `train submit --priority`
sets the spec's priority, `job get/list/watch` show the position and the
reason, and re-prioritising a running job is FAILED_PRECONDITION.

Local mode (no tokens): every caller is the admin of team default."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fxtest  # noqa: E402
from fxtest import C, mlp_spec, np, randn  # noqa: E402
from fluxion_client.jobs import training_pb2  # noqa: E402

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")
if not os.access(CLI, os.X_OK):
    print("skipped: no fluxion CLI at %s (set FLUXION_CLI)" % CLI)
    sys.exit(fxtest.SKIP)

LONG = 10 ** 7          # steps: runs until cancelled
WAIT = 60               # seconds for the scheduler to show a state


class QueueCliTest(fxtest.DaemonTest):
    DAEMON_ARGS = ("--train-workers", "1")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c.create_model("mlp", mlp_spec(), seed=1, no_load=True)
        cls.c.upload_dataset("ds", {"x": randn(1, 64, 4),
                                    "y": (np.arange(64) % 3).astype(np.int64)})

    def tearDown(self):
        """Every job left running or queued is cancelled, and gone, before the
        next test (whose jobs would otherwise queue behind it)."""
        for j in self.c.list_jobs():
            if j.state in (training_pb2.QUEUED,
                           training_pb2.RUNNING):
                try:
                    self.c.cancel_job(j.id)
                except fxtest.FluxionError:
                    pass
        for j in self.c.list_jobs():
            self.c.wait_job(j.id, timeout=WAIT)

    # ------------------------------------------------------------ helpers

    def cli(self, *args, expect=0):
        env = dict(os.environ, FLUXION_SERVER=self.d.address)
        p = subprocess.run([CLI] + list(args), capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(p.returncode, expect, "fluxion %s: rc %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def cli_json(self, *args):
        return json.loads(self.cli("--json", *args).stdout)

    def spec_file(self, steps=LONG, **extra):
        spec = {"model": "mlp", "dataset": "ds", "feeds": [{"input": "x", "tensor": "x"}],
                "losses": [{"output": "y", "kind": "cross_entropy", "target": "y"}],
                "optimizer": {"kind": "sgd", "lr": 0.01}, "batch_size": 8, "steps": steps,
                "seed": 1, "serve_when_done": False}
        spec.update(extra)
        fd, path = tempfile.mkstemp(suffix=".json", dir=fxtest._WORK)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        return path

    def submit(self, *flags, **extra):
        return self.cli_json("train", "submit", self.spec_file(**extra), *flags)["id"]

    def queue(self):
        return self.cli_json("queue")

    def wait_for(self, what, pred):
        """pred(queue json) true within WAIT seconds; returns that queue."""
        deadline = time.monotonic() + WAIT
        while True:
            q = self.queue()
            if pred(q):
                return q
            self.assertLess(time.monotonic(), deadline, "%s never happened; queue: %s" % (what, q))
            time.sleep(0.1)

    @staticmethod
    def job(q, job_id):
        found = [j for j in q["jobs"] if j["id"] == job_id]
        return found[0] if found else None

    def running_then_queued(self, first, *queued):
        """Waits until first runs and the others are queued in this order."""
        def ok(q):
            f = self.job(q, first)
            if not f or f["state"] != "RUNNING":
                return False
            for pos, job_id in enumerate(queued, 1):
                j = self.job(q, job_id)
                if not j or j["state"] != "QUEUED" or j["position"] != pos:
                    return False
            return True
        return self.wait_for("job %s running, then %s queued" % (first, list(queued)), ok)

    # -------------------------------------------------------------- tests

    def test_queue_shows_running_and_queued_with_reason(self):
        a = self.submit()
        b = self.submit()
        q = self.running_then_queued(a, b)
        ja, jb = self.job(q, a), self.job(q, b)
        self.assertEqual(ja["team"], "default")
        self.assertEqual(ja["model"], "mlp")
        self.assertEqual(ja["device"], "cpu")
        self.assertEqual(ja["position"], 0)
        self.assertTrue(jb["reason"], "a queued job says why it waits: %s" % jb)
        self.assertIn("cpu", jb["reason"])
        self.assertEqual([j["id"] for j in q["jobs"]][:2], [a, b], "running first")
        cpu = [d for d in q["devices"] if d["device"] == "cpu"]
        self.assertEqual(len(cpu), 1)
        self.assertEqual((cpu[0]["slots"], cpu[0]["slots_used"]), (1, 1))
        team = [t for t in q["teams"] if t["team"] == "default"]
        self.assertEqual(len(team), 1)
        self.assertEqual((team[0]["running"], team[0]["queued"]), (1, 1))

        text = self.cli("queue").stdout
        self.assertIn("WHY WAITING", text)
        lines = {ln.split()[1]: ln for ln in text.splitlines()
                 if len(ln.split()) > 2 and ln.split()[1] in (a, b)}
        self.assertIn("RUNNING", lines[a])
        self.assertIn("QUEUED", lines[b])
        self.assertIn(jb["reason"], lines[b])
        self.assertTrue(lines[b].split()[0] == "1", lines[b])

        got = self.cli("job", "get", b).stdout
        self.assertIn("queue:         position 1: " + jb["reason"], got)
        self.assertIn("preemptions:   0", got)
        self.assertIn("on cpu", [ln for ln in self.cli("job", "list").stdout.splitlines()
                                 if ln.split()[0] == a][0])
        self.assertIn("#1 ", [ln for ln in self.cli("job", "list").stdout.splitlines()
                              if ln.split()[0] == b][0])

    def test_priority_reorders_queued_jobs(self):
        blocker = self.submit()
        x = self.submit()
        y = self.submit()
        self.running_then_queued(blocker, x, y)
        out = self.cli("job", "priority", y, "high").stdout
        self.assertIn("job %s: priority HIGH" % y, out)
        q = self.running_then_queued(blocker, y, x)
        self.assertEqual(self.job(q, y)["priority"], "HIGH")
        self.assertEqual(self.job(q, x)["priority"], "NORMAL")
        # and back: submit order again
        self.cli("job", "priority", y, "normal")
        self.running_then_queued(blocker, x, y)
        # low goes behind normal
        self.cli("job", "priority", x, "LOW")
        self.running_then_queued(blocker, y, x)
        err = self.cli("job", "priority", y, "urgent", expect=2).stderr
        self.assertIn("low, normal or high", err)
        err = self.cli("job", "priority", "999999", "high", expect=1).stderr
        self.assertIn("NOT_FOUND", err)

    def test_update_of_a_running_job_is_failed_precondition(self):
        a = self.submit()
        self.running_then_queued(a)
        err = self.cli("job", "priority", a, "high", expect=1).stderr
        self.assertIn("FAILED_PRECONDITION", err)
        self.assertCode(C.FAILED_PRECONDITION, self.c.update_job, a, priority="high")
        self.assertCode(C.FAILED_PRECONDITION, self.c.update_job, a, device="cpu")
        self.c.cancel_job(a)
        done = self.c.wait_job(a, timeout=WAIT)
        self.assertCode(C.FAILED_PRECONDITION, self.c.update_job, a, priority="low")
        self.assertEqual(done.state, training_pb2.CANCELLED)
        # nothing to change is a bad request, whatever the state
        self.assertCode(C.INVALID_ARGUMENT, self.c.update_job, a)

    def test_move_a_queued_job(self):
        blocker = self.submit()
        b = self.submit()
        self.running_then_queued(blocker, b)
        self.cli("job", "move", b, "--device", "cpu")
        err = self.cli("job", "move", b, "--device", "cuda:9", expect=1).stderr
        self.assertIn("INVALID_ARGUMENT", err)
        self.cli("job", "move", b, expect=2)
        job = self.c.update_job(b, device="cpu")
        self.assertEqual(job.spec.device, "cpu")

    def test_submit_priority(self):
        blocker = self.submit()
        low = self.submit("--priority", "low")
        high = self.submit("-p", "HIGH")
        self.running_then_queued(blocker, high, low)
        self.assertEqual(self.c.get_job(high).spec.priority,
                         training_pb2.HIGH)
        self.cli("train", "submit", self.spec_file(), "--priority", "top", expect=2)
        # the file's own priority, unless --priority says otherwise
        from_file = self.submit(priority="HIGH")
        self.assertEqual(self.c.get_job(from_file).spec.priority,
                         training_pb2.HIGH)

    def test_watch_shows_the_position(self):
        blocker = self.submit()
        b = self.submit()
        self.running_then_queued(blocker, b)
        env = dict(os.environ, FLUXION_SERVER=self.d.address)
        p = subprocess.Popen([CLI, "job", "watch", b], stdout=subprocess.PIPE, text=True,
                             env=env)
        try:
            first = p.stdout.readline()
            self.assertIn("SNAPSHOT state=QUEUED position=1 reason=", first)
            self.c.cancel_job(b)
            rest, _ = p.communicate(timeout=WAIT)
        finally:
            if p.poll() is None:
                p.kill()
        self.assertEqual(p.returncode, 1)
        self.assertIn("ended: CANCELLED", rest)

    def test_team_quota_round_trip(self):
        self.cli("team", "create", "q1", "--max-models", "7")
        set_ = self.cli_json("team", "quota", "q1", "--weight", "2.5", "--cpu-slots", "2",
                             "--gpu-slots", "1", "--borrow-cpu-slots", "3",
                             "--borrow-gpu-slots", "4", "--budget-hours", "1.5",
                             "--budget-window-hours", "12", "--max-running", "5",
                             "--gpu-memory-gb", "8")["quota"]
        want = {"max_models": 7, "weight": 2.5, "cpu_slots": 2, "gpu_slots": 1,
                "borrow_cpu_slots": 3, "borrow_gpu_slots": 4, "budget_device_seconds": 5400,
                "budget_window_seconds": 43200, "max_running_jobs": 5}
        for k, v in want.items():
            self.assertEqual(set_[k], v, k)
        self.assertEqual(int(set_["gpu_memory_bytes"]), 8 << 30)
        got = self.cli_json("team", "get", "q1")
        for k, v in want.items():
            self.assertEqual(got["quota"][k], v, k)
            self.assertEqual(got["effective_quota"][k], v, k)
        self.assertEqual(int(got["effective_quota"]["gpu_memory_bytes"]), 8 << 30)
        # one value changed, the others kept; 0 is the default again
        self.cli("team", "quota", "q1", "--cpu-slots", "0")
        got = self.cli_json("team", "get", "q1")
        self.assertEqual(got["quota"]["cpu_slots"], 0)
        self.assertEqual(got["quota"]["weight"], 2.5)
        self.assertEqual(got["quota"]["max_models"], 7)
        # team update changes the other limits and keeps these
        self.cli("team", "update", "q1", "--max-models", "9")
        got = self.cli_json("team", "get", "q1")["quota"]
        self.assertEqual((got["max_models"], got["weight"], got["borrow_gpu_slots"]), (9, 2.5, 4))
        # the text form
        text = self.cli("team", "quota", "q1").stdout
        self.assertIn("weight       2.5", text)
        self.assertIn("gpu slots    1 nominal, 4 borrowed", text)
        self.assertIn("budget       1.5 device-hours per 12 h", text)
        self.assertIn("max running  5 jobs", text)
        self.assertIn("gpu memory   8.0 GiB", text)
        # the defaults: weight 1, a window of a day
        self.cli("team", "create", "q2")
        eff = self.cli_json("team", "get", "q2")["effective_quota"]
        self.assertEqual((eff["weight"], eff["budget_window_seconds"]), (1, 86400))
        # the Python client
        t = self.c.set_team_quota("q2", weight=3, max_running_jobs=2, gpu_memory_bytes=2 << 30)
        self.assertEqual((t.quota.weight, t.quota.max_running_jobs, t.quota.gpu_memory_bytes),
                         (3, 2, 2 << 30))
        t = self.c.update_team("q2", max_models=4)
        self.assertEqual((t.quota.weight, t.quota.max_models, t.quota.gpu_memory_bytes),
                         (3, 4, 2 << 30))
        # bad values
        self.cli("team", "quota", "q1", "--weight", "-1", expect=2)
        self.cli("team", "quota", "q1", "--weight", "nan", expect=2)
        self.cli("team", "quota", "q1", "--cpu-slots", "x", expect=2)
        self.assertCode(C.INVALID_ARGUMENT, self.c.update_team, "q1", weight=-1)
        self.assertEqual(self.c.get_team("q1").quota.weight, 2.5)
        self.cli("team", "quota", "nope", "--weight", "2", expect=1)
        for name in ("q1", "q2"):
            self.cli("team", "delete", name)

    def test_queue_json_is_the_response(self):
        q = self.queue()
        self.assertEqual(set(q), {"devices", "teams", "jobs"})
        self.assertIn("cpu", [d["device"] for d in q["devices"]])


if __name__ == "__main__":
    fxtest.main()
