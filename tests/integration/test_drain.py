"""Graceful drain: SIGTERM while 16 client threads call ModelInfer in a loop.
Every call ends with OK, UNAVAILABLE or CANCELLED before its deadline, the
daemon exits 0 within the grace period + 3 s, and its port is closed."""
import threading
import time
import unittest

import fxtest
from fxtest import C, Daemon, FluxionError, np, randn

GRACE = 2
DEADLINE = 10.0
THREADS = 16

SPEC = {
    "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 64]}],
    "nodes": [
        {"name": "fc1", "op": "dense", "inputs": ["x"],
         "attrs": {"in_features": 64, "out_features": 256, "activation": "relu"}},
        {"name": "fc2", "op": "dense", "inputs": ["fc1"],
         "attrs": {"in_features": 256, "out_features": 256, "activation": "relu"}},
        {"name": "fc3", "op": "dense", "inputs": ["fc2"],
         "attrs": {"in_features": 256, "out_features": 8}},
    ],
    "outputs": [{"name": "y", "source": "fc3"}],
}
ALLOWED = {C.UNAVAILABLE, C.CANCELLED}


class DrainTest(unittest.TestCase):

    def test_sigterm_under_load(self):
        d = Daemon(["--grace-seconds", str(GRACE)], name="drain").start()
        c = d.client()
        c.create_model("load", SPEC, seed=1)
        x = randn(1, 32, 64)
        want = c.infer("load", {"x": x})["y"]
        port = d.port

        results = []        # (thread, code, seconds)
        lock = threading.Lock()
        stop = threading.Event()

        def caller(i):
            cl = fxtest.Client(d.address, timeout=DEADLINE)
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        y = cl.infer("load", {"x": x}, raw=bool(i % 2))["y"]
                        code = C.OK if np.allclose(y, want, rtol=1e-5, atol=1e-5) else "WRONG"
                    except FluxionError as e:
                        code = e.code
                    with lock:
                        results.append((i, code, time.monotonic() - t0))
                    if code != C.OK:
                        return
            finally:
                cl.close()

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        with lock:
            ok_before = sum(1 for r in results if r[1] == C.OK)
        self.assertGreater(ok_before, THREADS, "too few calls succeeded before SIGTERM")
        t_term = time.monotonic()
        d.signal(fxtest.signal.SIGTERM)
        rc = d.wait_exit(GRACE + 3)
        exit_s = time.monotonic() - t_term
        if rc is None:
            d.kill9()
        stop.set()
        for t in threads:
            t.join(DEADLINE + 5)
        self.assertFalse(any(t.is_alive() for t in threads), "a client call hung")
        self.assertEqual(rc, 0, "fluxiond did not exit 0 within %d s of SIGTERM (rc %r)\n%s"
                         % (GRACE + 3, rc, d.log_tail()))
        if d.proc is not None:
            d._reap()
        bad = [r for r in results if r[1] != C.OK and r[1] not in ALLOWED]
        self.assertEqual(bad, [], "calls ended with codes other than OK/UNAVAILABLE/CANCELLED")
        slow = [r for r in results if r[2] > DEADLINE]
        self.assertEqual(slow, [], "calls past their deadline")
        self.assertTrue(all(any(r[0] == i and r[1] != C.OK for r in results)
                            for i in range(THREADS)),
                        "every thread must have seen the daemon go away")
        self.assertFalse(fxtest.port_open(port), "port %d still open after exit" % port)
        self.assertLess(exit_s, GRACE + 3)

    def test_sigint_idle(self):
        d = Daemon(name="sigint").start()
        self.assertTrue(d.client().server_ready())
        d.signal(fxtest.signal.SIGINT)
        self.assertEqual(d.wait_exit(10), 0, d.log_tail())
        port = d.port
        d._reap()
        self.assertFalse(fxtest.port_open(port))


if __name__ == "__main__":
    fxtest.main()
