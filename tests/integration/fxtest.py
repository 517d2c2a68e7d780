"""Harness for the integration tests: runs a real fluxiond on a free loopback
port with a temporary data directory, and talks to it with fluxion_client.

Environment (set by ctest, see CMakeLists.txt): FLUXIOND (the binary),
FX_PY_OUT (generated stubs), FX_SOURCE_DIR, FLUXION_CLI. Run by hand:

    /usr/bin/python3 tests/integration/test_x.py    # build/fluxiond, build/python
    FLUXIOND=build-asan/fluxiond FX_PY_OUT=build-asan/python \
        /usr/bin/python3 tests/integration/test_x.py [TestClass.test_name]

Exit status 77 means skipped (no daemon binary, or a missing module).
"""
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("FX_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
SKIP = 77

for p in (os.environ.get("FX_PY_OUT") or os.path.join(SOURCE_DIR, "build", "python"),
          os.path.join(SOURCE_DIR, "clients", "python")):
    if p and p not in sys.path:
        sys.path.insert(0, p)

try:
    import grpc  # noqa: E402
    import numpy as np  # noqa: E402
    import fluxion_client  # noqa: E402
    from fluxion_client import Client, FluxionError, InvalidArgument  # noqa: E402,F401
    from fluxion_client import safetensors  # noqa: E402,F401
    from fluxion_client._stubs import infer_pb2, model_pb2  # noqa: E402,F401
except ImportError as e:  # pragma: no cover - environment problem, not a test failure
    print("skipped: %s (run with /usr/bin/python3 after building the stubs)" % e)
    sys.exit(SKIP)

FLUXIOND = os.environ.get("FLUXIOND") or os.path.join(SOURCE_DIR, "build", "fluxiond")
if not os.access(FLUXIOND, os.X_OK):
    print("skipped: no fluxiond binary at %s (set FLUXIOND)" % FLUXIOND)
    sys.exit(SKIP)

START_TIMEOUT = 20.0   # seconds until 'listening on' (ASan builds start slowly)
STOP_TIMEOUT = 10.0    # seconds from SIGTERM to exit

_WORK = tempfile.mkdtemp(prefix="fxtest-")
_DAEMONS = []          # every daemon started, for the logs on failure

C = grpc.StatusCode


class Daemon:
    """One fluxiond process on 127.0.0.1:<free port> and a data directory
    that outlives restarts. stderr goes to a file (shown on failure)."""

    def __init__(self, args=(), data_dir=None, name="fluxiond", env=None):
        self.args = list(args)
        self.env = dict(os.environ, **env) if env else None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="data-", dir=_WORK)
        self.name = name
        self.proc = None
        self.port = None
        self.starts = 0
        self.log_path = None
        self._clients = []
        _DAEMONS.append(self)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        assert self.proc is None, "already running"
        self.starts += 1
        self.log_path = os.path.join(_WORK, "%s-%d-%d.log" % (self.name, id(self), self.starts))
        log = open(self.log_path, "wb")
        cmd = [FLUXIOND, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
               "--log-level", "debug"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                     stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        line = self._read_line(START_TIMEOUT)
        prefix = "listening on "
        if not line.startswith(prefix):
            self.kill9()
            raise AssertionError("fluxiond did not print '%s HOST:PORT' within %.0f s; got %r\n%s"
                                 % (prefix.strip(), START_TIMEOUT, line, self.log_tail()))
        host, _, port = line[len(prefix):].strip().rpartition(":")
        if host != "127.0.0.1" or not port.isdigit() or not 0 < int(port) < 65536:
            self.kill9()
            raise AssertionError("bad listening line %r" % line)
        self.port = int(port)
        return self

    def _read_line(self, timeout):
        """The first stdout line, or what came before the deadline / exit."""
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:   # exited
                break
            buf += chunk
        return buf.decode("utf-8", "replace").split("\n")[0]

    def client(self, **kw):
        c = Client(self.address, **kw)
        self._clients.append(c)
        return c

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """The exit status, or None if still running after timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close_clients(self):
        for c in self._clients:
            c.close()
        self._clients = []

    def _reap(self):
        self.close_clients()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; asserts exit status 0 within timeout (kills it otherwise).
        Our clients disconnect first: idle connections are test_drain's
        subject, not every test's."""
        if self.proc is None:
            return
        self.close_clients()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill9()
            raise AssertionError("fluxiond did not exit within %.0f s of SIGTERM\n%s"
                                 % (timeout, self.log_tail()))
        self._reap()
        if rc != 0:
            raise AssertionError("fluxiond exited with status %d after SIGTERM\n%s"
                                 % (rc, self.log_tail()))

    def kill9(self):
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self._reap()

    def restart(self):
        self.stop()
        return self.start()

    def log_tail(self, n=60):
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no log)"
        with open(self.log_path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "--- %s (last %d lines)\n%s" % (self.log_path, n, "\n".join(lines[-n:]))


def port_open(port, host="127.0.0.1"):
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


class DaemonTest(unittest.TestCase):
    """A test case with one daemon for the whole class (self.d, self.c).
    DAEMON_ARGS: extra command-line flags."""

    DAEMON_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(cls.DAEMON_ARGS, name=cls.__name__).start()
        cls.c = cls.d.client()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def assertCode(self, code, fn, *args, contains=(), **kwargs):
        """fn(*args) raises FluxionError with code (and a message containing
        each string of contains); returns the error."""
        with self.assertRaises(FluxionError) as cm:
            fn(*args, **kwargs)
        err = cm.exception
        self.assertEqual(err.code, code, "expected %s, got %s: %s" % (code.name, err.code.name,
                                                                       err.message))
        if isinstance(contains, str):
            contains = (contains,)
        for s in contains:
            self.assertIn(s, err.message, "message %r should mention %r" % (err.message, s))
        return err

    def assertRpcCode(self, code, fn, *args, **kwargs):
        """Like assertCode for a raw grpc stub call (grpc.RpcError)."""
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception


def main():
    """unittest.main, then the daemons' logs when something failed; removes
    the temporary directory on success."""
    prog = unittest.main(exit=False, verbosity=2)
    ok = prog.result.wasSuccessful()
    for d in _DAEMONS:
        if d.proc is not None:
            d.kill9()
    if not ok:
        for d in _DAEMONS:
            sys.stderr.write("\n" + d.log_tail() + "\n")
        sys.stderr.write("\nlogs and data kept in %s\n" % _WORK)
    else:
        shutil.rmtree(_WORK, ignore_errors=True)
    sys.exit(0 if ok else 1)


# ----------------------------------------------------------------- models
# Small model specs (human form) and their numpy forwards, for checking
# outputs against the weights the daemon exports.

def mlp_spec(n_in=4, hidden=8, n_out=3):
    return {
        "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, n_in]}],
        "nodes": [
            {"name": "fc1", "op": "dense", "inputs": ["x"],
             "attrs": {"in_features": n_in, "out_features": hidden, "activation": "relu"}},
            {"name": "fc2", "op": "dense", "inputs": ["fc1"],
             "attrs": {"in_features": hidden, "out_features": n_out}},
        ],
        "outputs": [{"name": "y", "source": "fc2"}],
    }


def mlp_forward(w, x):
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    return h @ w["fc2.weight"].T + w["fc2.bias"]


def randn(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
