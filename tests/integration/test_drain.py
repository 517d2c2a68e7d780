"""Graceful drain: SIGTERM while 16 client threads call ModelInfer in a loop.
Every call ends with OK, UNAVAILABLE or CANCELLED before its deadline, the
daemon exits 0 within the grace period + 3 s, and its port is closed. Calls
the daemon had accepted before SIGTERM finish (fluxiond --help: "calls in
flight finish (up to --grace-seconds)")."""
import collections
import os
import threading
import time
import unittest

import fxtest
from fxtest import C, Daemon, FluxionError, np, randn

# Generous: ctest runs other tests beside this one on 2 cores, and the point
# is that accepted calls finish, not how fast.
GRACE = 10
DEADLINE = 10.0
THREADS = 16

SPEC = {
    "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 64]}],
    "nodes": [
        {"name": "fc1", "op": "dense", "inputs": ["x"],
         "attrs": {"in_features": 64, "out_features": 1024, "activation": "relu"}},
        {"name": "fc2", "op": "dense", "inputs": ["fc1"],
         "attrs": {"in_features": 1024, "out_features": 1024, "activation": "relu"}},
        {"name": "fc3", "op": "dense", "inputs": ["fc2"],
         "attrs": {"in_features": 1024, "out_features": 8}},
    ],
    "outputs": [{"name": "y", "source": "fc3"}],
}
ALLOWED = {C.OK, C.UNAVAILABLE, C.CANCELLED}
# Each call takes tens of ms and 16 threads share 2 inference workers, so
# calls wait in the queue for a while: a call started this long before
# SIGTERM and still running then had surely reached the daemon.
SURELY_ACCEPTED = 0.1

Call = collections.namedtuple("Call", "thread code message start seconds")


class DrainTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        """One run for all the checks: load, SIGTERM, wait for the exit."""
        d = Daemon(["--grace-seconds", str(GRACE)], name="drain").start()
        c = d.client()
        c.create_model("load", SPEC, seed=1)
        x = randn(1, 1024, 64)
        want = c.infer("load", {"x": x})["y"]
        cls.port = d.port
        cls.d = d
        results = []
        lock = threading.Lock()
        stop = threading.Event()

        def caller(i):
            cl = fxtest.Client(d.address, timeout=DEADLINE)
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    code, msg = C.OK, ""
                    try:
                        y = cl.infer("load", {"x": x}, raw=bool(i % 2))["y"]
                        if not np.allclose(y, want, rtol=1e-5, atol=1e-5):
                            code, msg = "WRONG", "wrong output"
                    except FluxionError as e:
                        code, msg = e.code, e.message
                    with lock:
                        results.append(Call(i, code, msg, t0, time.monotonic() - t0))
                    if code != C.OK:
                        return
            finally:
                cl.close()

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        # Load for 1.5 s, longer on a slow machine (ASan, a busy CI box)
        # until half the threads have had an answer: the checks below need
        # a daemon that was serving, not a fixed amount of work.
        t_load = time.monotonic()
        while True:
            time.sleep(0.1)
            with lock:
                cls.ok_before = sum(1 for r in results if r.code == C.OK)
            waited = time.monotonic() - t_load
            if waited >= 1.5 and (cls.ok_before >= THREADS // 2 or waited >= 30):
                break
        cls.t_term = time.monotonic()
        d.signal(fxtest.signal.SIGTERM)
        cls.rc = d.wait_exit(GRACE + 3)
        cls.exit_s = time.monotonic() - cls.t_term
        if cls.rc is None:
            d.kill9()
        stop.set()
        for t in threads:
            t.join(DEADLINE + 5)
        cls.hung = sum(t.is_alive() for t in threads)
        if d.proc is not None:
            d._reap()
        cls.results = results
        counts = collections.Counter(getattr(r.code, "name", r.code) for r in results)
        fxtest.sys.stderr.write("drain: calls by code %s; exit %.2f s after SIGTERM\n"
                                % (dict(counts), cls.exit_s))

    def test_exits_zero_in_time(self):
        self.assertGreaterEqual(self.ok_before, THREADS // 2,
                                "too few calls succeeded before SIGTERM")
        self.assertEqual(self.rc, 0, "fluxiond did not exit 0 within %d s of SIGTERM (rc %r)\n%s"
                         % (GRACE + 3, self.rc, self.d.log_tail()))
        self.assertLess(self.exit_s, GRACE + 3)
        self.assertFalse(fxtest.port_open(self.port), "port %d still open after exit" % self.port)

    def test_every_call_ends_in_time_with_an_allowed_code(self):
        self.assertEqual(self.hung, 0, "client calls hung")
        bad = [r for r in self.results if r.code not in ALLOWED]
        self.assertEqual(bad, [], "calls ended with codes other than OK/UNAVAILABLE/CANCELLED")
        slow = [r for r in self.results if r.seconds > DEADLINE]
        self.assertEqual(slow, [], "calls past their deadline")
        stopped = {r.thread for r in self.results if r.code != C.OK}
        self.assertEqual(stopped, set(range(THREADS)), "every thread must see the daemon go")

    def test_calls_in_flight_finish(self):
        """A call the daemon had accepted before SIGTERM is answered OK
        within the grace period, neither cancelled nor refused."""
        accepted = [r for r in self.results if r.start < self.t_term - SURELY_ACCEPTED
                    and r.start + r.seconds > self.t_term]
        self.assertTrue(accepted, "no call was in flight at SIGTERM: the load is too light")
        failed = [r for r in accepted if r.code != C.OK]
        if failed:
            why = collections.Counter("%s: %s" % (getattr(r.code, "name", r.code), r.message)
                                      for r in failed)
            self.fail("%d of %d calls in flight at SIGTERM failed instead of finishing (grace "
                      "%d s, exit after %.2f s): %s" % (len(failed), len(accepted), GRACE,
                                                        self.exit_s, dict(why)))


class IdleConnectionTest(unittest.TestCase):
    """Connections without calls do not hold the exit past the grace period:
    an idle gRPC channel, and a TCP peer that never speaks HTTP/2."""

    def exits_in_time(self, d, connect):
        held = connect(d)
        t0 = time.monotonic()
        d.signal(fxtest.signal.SIGTERM)
        rc = d.wait_exit(1 + 3)
        took = time.monotonic() - t0
        if rc is None:
            d.kill9()
        else:
            d._reap()
        self.assertEqual(rc, 0, "no exit within grace 1 s + 3 s of SIGTERM (still running "
                         "after %.1f s)\n%s" % (took, d.log_tail()))
        return held

    def test_idle_grpc_channel(self):
        def connect(d):
            c = fxtest.Client(d.address)
            self.assertTrue(c.server_live())
            return c
        self.exits_in_time(Daemon(["--grace-seconds", "1"], name="idle-grpc").start(),
                           connect).close()

    def test_silent_tcp_peer(self):
        def connect(d):
            s = fxtest.socket.create_connection(("127.0.0.1", d.port))
            time.sleep(0.2)
            return s
        self.exits_in_time(Daemon(["--grace-seconds", "1"], name="idle-tcp").start(),
                           connect).close()


class SigintTest(unittest.TestCase):

    def test_sigint_idle(self):
        d = Daemon(name="sigint").start()
        self.assertTrue(d.client().server_ready())
        d.signal(fxtest.signal.SIGINT)
        self.assertEqual(d.wait_exit(10), 0, d.log_tail())
        port = d.port
        d._reap()
        self.assertFalse(fxtest.port_open(port))


# ------------------------------------------------------------ stops under load
# Issue 11, defect 9: SIGTERM under load took up to 56 s with a 5 s grace,
# and calls in flight at SIGTERM ended CANCELLED. Each stop here has unary
# calls in flight, an upload streaming, an upload whose client sends
# nothing, a watch open and a training job running (a step of about a
# second); the exit must come within --grace-seconds + 1 s, every time.
# FX_DRAIN_STOPS=35 FX_DRAIN_GRACE=5 is the load that found the defect.
STOPS = int(os.environ.get("FX_DRAIN_STOPS", "6"))
STOP_GRACE = int(os.environ.get("FX_DRAIN_GRACE", "2"))
LOAD_S = 1.0
CALLERS = 8

WIDE = 2048
TRAIN_SPEC = {
    "inputs": SPEC["inputs"],
    "nodes": [
        {"name": "fc1", "op": "dense", "inputs": ["x"],
         "attrs": {"in_features": 64, "out_features": WIDE, "activation": "relu"}},
        {"name": "fc2", "op": "dense", "inputs": ["fc1"],
         "attrs": {"in_features": WIDE, "out_features": WIDE, "activation": "relu"}},
        {"name": "fc3", "op": "dense", "inputs": ["fc2"],
         "attrs": {"in_features": WIDE, "out_features": 8}},
    ],
    "outputs": [{"name": "logits", "source": "fc3"}],
}
JOB = {
    "model": "train", "dataset": "train-data",
    "feeds": [{"input": "x", "tensor": "x"}],
    "losses": [{"output": "logits", "kind": "cross_entropy", "target": "y"}],
    "optimizer": {"kind": "adam", "lr": 0.001},
    "batch_size": 512, "epochs": 100000, "shuffle": True, "seed": 1,
    "checkpoint_every_steps": 20, "serve_when_done": False,
}


class LoadRun:
    """Clients keeping a daemon busy: CALLERS threads of ModelInfer, one
    thread of uploads (10 chunks, 50 ms apart), one upload that sends one
    chunk and then nothing, one WatchJob. Each thread stops at its first
    failure (the daemon going) or when told."""

    def __init__(self, address, x, job_id, tag):
        self.address, self.x, self.job_id, self.tag = address, x, job_id, tag
        self.calls = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.caller) for _ in range(CALLERS)]
        self.threads.append(threading.Thread(target=self.uploader))
        self.threads.append(threading.Thread(target=self.watcher))
        self.threads.append(threading.Thread(target=self.idle_uploader))
        for t in self.threads:
            t.start()

    def record(self, kind, t0, code, msg):
        with self.lock:
            self.calls.append(Call(kind, code, msg, t0, time.monotonic() - t0))
        return code == C.OK

    def run(self, kind, fn):
        t0 = time.monotonic()
        try:
            fn()
            return self.record(kind, t0, C.OK, "")
        except FluxionError as e:
            return self.record(kind, t0, e.code, e.message)

    def loop(self, kind, fn):
        cl = fxtest.Client(self.address, timeout=DEADLINE)
        try:
            while not self.stop.is_set() and self.run(kind, lambda: fn(cl)):
                pass
        finally:
            cl.close()

    def caller(self):
        self.loop("infer", lambda cl: cl.infer("load", {"x": self.x}))

    def uploader(self):
        seq = iter(range(1 << 30))

        def chunks():
            name = "up-%s-%d" % (self.tag, next(seq))
            for i in range(10):
                time.sleep(0.05)
                yield from fxtest.fluxion_client.datasets.upload_chunks(
                    name if i == 0 else "", {"v": np.full((4, 2), i, np.float32)})

        self.loop("upload", lambda cl: cl.upload_dataset("", {}, chunks=chunks()))

    def idle_uploader(self):
        def chunks():
            yield from fxtest.fluxion_client.datasets.upload_chunks(
                "idle-%s" % self.tag, {"v": np.ones((4, 2), np.float32)})
            self.stop.wait(DEADLINE * 3)

        self.run("idle", lambda: fxtest.Client(self.address, timeout=DEADLINE * 3)
                 .upload_dataset("", {}, chunks=chunks()))

    def watcher(self):
        def watch(cl):
            for _ in cl.watch_job(self.job_id, timeout=DEADLINE * 3):
                pass
        self.loop("watch", watch)

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(DEADLINE * 3 + 5)
        return sum(t.is_alive() for t in self.threads)


class StopUnderLoadTest(unittest.TestCase):

    def test_stops_under_load(self):
        """STOPS times: load, SIGTERM, exit. Every exit within grace + 1 s
        with status 0; every call the daemon had surely accepted before
        SIGTERM ends OK (a watch: UNAVAILABLE, it is endless); calls started
        later end OK or UNAVAILABLE; nothing ends CANCELLED."""
        d = Daemon(["--grace-seconds", str(STOP_GRACE), "--train-workers", "1"],
                   name="stops").start()
        c = d.client()
        c.create_model("load", SPEC, seed=1)
        c.create_model("train", TRAIN_SPEC, seed=2, no_load=True)
        rng = np.random.default_rng(0)
        c.upload_dataset("train-data", {"x": rng.standard_normal((2048, 64)).astype(np.float32),
                                        "y": rng.integers(0, 8, 2048).astype(np.int64)})
        job_id = c.submit_job(JOB).id
        x = randn(1, 1024, 64)
        exits, bad, hung, unfinished = [], [], 0, []
        for stop in range(STOPS):
            if stop:
                d.start()
            c = d.client()
            deadline = time.monotonic() + 20
            while c.get_job(job_id).state != fxtest.fluxion_client.jobs.training_pb2.RUNNING:
                self.assertLess(time.monotonic(), deadline, "job %s not running" % job_id)
                time.sleep(0.05)
            load = LoadRun(d.address, x, job_id, stop)
            time.sleep(LOAD_S)
            t_term = time.monotonic()
            d.signal(fxtest.signal.SIGTERM)
            rc = d.wait_exit(STOP_GRACE + 1 + 30)
            took = time.monotonic() - t_term
            if rc is None:
                d.kill9()
            else:
                d._reap()
            hung += load.join()
            exits.append((took, rc))
            for r in load.calls:
                surely_in = r.start < t_term - SURELY_ACCEPTED and r.start + r.seconds > t_term
                allowed = {C.OK} if surely_in else {C.OK, C.UNAVAILABLE}
                if r.thread in ("watch", "idle"):  # endless: ended by the drain
                    allowed = {C.UNAVAILABLE}
                if r.code not in allowed:
                    bad.append((stop, r._replace(start=r.start - t_term)))
            if not any(r.start < t_term - SURELY_ACCEPTED and r.start + r.seconds > t_term
                       for r in load.calls if r.thread == "infer"):
                unfinished.append(stop)
        times = sorted(t for t, _ in exits)
        # 1 s past the grace for the release and exit; on an overloaded box
        # (more runnable threads than cores: a busy CI machine, ASan) the
        # process's own exit is slower by up to as much again per unit of
        # overload, capped at 3 s: the defect this guards (issue 11: 56 s
        # with a 5 s grace) is far past either.
        slack = 1 + min(2.0, max(0.0, os.getloadavg()[0] / (os.cpu_count() or 1) - 1))
        over = [t for t in times if t > STOP_GRACE + slack]
        fxtest.sys.stderr.write(
            "stops under load: %d stops, grace %d s: exit after SIGTERM min %.2f s, median "
            "%.2f s, max %.2f s; %d over grace + 1 s; %d calls with a wrong code\n"
            % (STOPS, STOP_GRACE, times[0], times[len(times) // 2], times[-1], len(over),
               len(bad)))
        for stop, r in bad[:20]:
            fxtest.sys.stderr.write("  stop %d: %s started %+.2f s from SIGTERM, took %.2f s: %s %s\n"
                                    % (stop, r.thread, r.start, r.seconds,
                                       getattr(r.code, "name", r.code), r.message))
        self.assertEqual([rc for _, rc in exits], [0] * STOPS, d.log_tail())
        self.assertEqual(over, [], "exits over grace %d s + %.1f s: %s" % (STOP_GRACE, slack, times))
        self.assertEqual(hung, 0, "client threads hung")
        self.assertEqual(bad, [], "calls ended with a wrong code (see above)")
        self.assertEqual(unfinished, [], "stops with no inference in flight: load too light")


if __name__ == "__main__":
    fxtest.main()
