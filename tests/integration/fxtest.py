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
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("FX_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
SKIP = 77

for p in (os.environ.get("FX_PY_OUT") or os.path.join(SOURCE_DIR, "build", "python"),
          os.path.join(SOURCE_DIR, "clients", "python")):
    if p and p not in sys.path:
        sys.path.insert(0, p)
# The tests mix the client with the top-level stubs (fluxion.v1.*): the
# client must use those too, not an editable install's fluxion_client/_proto.
os.environ.setdefault("FX_PY_OUT", os.path.join(SOURCE_DIR, "build", "python"))

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


# ------------------------------------------------------------ auth and TLS
# Helpers for the security tests (test_auth_matrix, test_tls, test_upgrade,
# test_triton_auth): tokens as call metadata, a daemon started with a
# bootstrap admin token, raw stubs of every service on one channel, and
# certificates made with the openssl CLI.

TOKEN_RE = re.compile(r"^fxn_[0-9a-f]{64}$")   # what CreateToken and the bootstrap file hold


def bearer(secret):
    """The call metadata that carries a token."""
    return (("authorization", "Bearer " + secret),)


def admin_token_path():
    """A path in the work directory that does not exist yet: fluxiond
    --init-admin-token PATH writes a new admin token there."""
    return tempfile.mktemp(prefix="admin-token-", dir=_WORK)


def read_token(path):
    """The secret in a token file (checked: 'fxn_' + 64 hex digits, mode
    0600)."""
    mode = os.stat(path).st_mode & 0o777
    if mode != 0o600:
        raise AssertionError("token file %s has mode %o, want 600" % (path, mode))
    with open(path) as f:
        secret = f.read().strip()
    if not TOKEN_RE.match(secret):
        raise AssertionError("token file %s does not hold 'fxn_' + 64 hex digits" % path)
    return secret


def start_with_admin_token(name="fluxiond", args=(), data_dir=None, env=None):
    """A daemon started with --init-admin-token FILE (a new file: the daemon
    writes the token), so authentication is on. Returns (daemon, secret)."""
    path = admin_token_path()
    d = Daemon(list(args) + ["--init-admin-token", path], data_dir=data_dir, name=name,
               env=env).start()
    return d, read_token(path)


def admin_pb():
    """(admin_pb2, admin_pb2_grpc), imported when first needed so that the
    other tests still run on a build without the admin stubs."""
    from fluxion.v1 import admin_pb2, admin_pb2_grpc
    return admin_pb2, admin_pb2_grpc


def channel(address, ca=None, cert=None, key=None):
    """A grpcio channel of its own (a local subchannel pool: it never shares
    a connection with another channel, which the TLS tests rely on).
    ca: PEM file to trust (TLS); cert/key: a client certificate (mTLS)."""
    opts = [("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]
    if ca is None and cert is None:
        return grpc.insecure_channel(address, options=opts)

    def pem(p):
        if p is None:
            return None
        with open(p, "rb") as f:
            return f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=pem(ca), private_key=pem(key),
                                         certificate_chain=pem(cert))
    return grpc.secure_channel(address, creds, options=opts)


def stubs(ch):
    """Every service's stub on one channel: .models .datasets .training
    .cluster .inference .admin (and the message modules as .model_pb2 ...)."""
    from fluxion.v1 import (cluster_pb2, cluster_pb2_grpc, dataset_pb2, dataset_pb2_grpc,
                            training_pb2, training_pb2_grpc)
    from fluxion_client._stubs import infer_pb2_grpc, model_pb2_grpc
    a_pb2, a_grpc = admin_pb()
    return types.SimpleNamespace(
        channel=ch,
        models=model_pb2_grpc.ModelServiceStub(ch),
        datasets=dataset_pb2_grpc.DatasetServiceStub(ch),
        training=training_pb2_grpc.TrainingServiceStub(ch),
        cluster=cluster_pb2_grpc.ClusterServiceStub(ch),
        inference=infer_pb2_grpc.GRPCInferenceServiceStub(ch),
        admin=a_grpc.AdminServiceStub(ch),
        model_pb2=model_pb2, dataset_pb2=dataset_pb2, training_pb2=training_pb2,
        cluster_pb2=cluster_pb2, infer_pb2=infer_pb2, admin_pb2=a_pb2)


def create_token(admin_stubs, admin_secret, team, name, role, ttl_seconds=0):
    """AdminService.CreateToken as the admin; returns (secret, Token)."""
    a_pb2, _ = admin_pb()
    r = admin_stubs.admin.CreateToken(
        a_pb2.CreateTokenRequest(team=team, name=name, role=role, ttl_seconds=ttl_seconds),
        metadata=bearer(admin_secret), timeout=30)
    if not TOKEN_RE.match(r.secret):
        raise AssertionError("CreateToken returned a secret that is not 'fxn_' + 64 hex")
    return r.secret, r.token


def wait_log(daemon, text, timeout=10.0):
    """True once the daemon's log holds text (polls), False after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if daemon.log_path and os.path.exists(daemon.log_path):
            with open(daemon.log_path, "rb") as f:
                if text in f.read().decode("utf-8", "replace"):
                    return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def openssl(*args, cwd=None):
    """Runs the openssl CLI; raises with its output when it fails."""
    exe = shutil.which("openssl")
    if not exe:
        raise unittest.SkipTest("no openssl CLI")
    p = subprocess.run([exe] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise AssertionError("openssl %s failed:\n%s" % (" ".join(args),
                                                         p.stdout.decode("utf-8", "replace")))
    return p.stdout.decode("utf-8", "replace")


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_ca(directory, name, cn=None):
    """A self-signed CA in directory: (NAME.crt, NAME.key) paths."""
    crt, key = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    openssl("req", "-x509", *_EC, "-keyout", key, "-out", crt, "-days", "2",
            "-subj", "/CN=" + (cn or name), "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def make_cert(directory, name, ca, cn, server=False, serial=None):
    """A certificate signed by ca (make_ca's pair): (NAME.crt, NAME.key).
    server: SAN IP:127.0.0.1 and DNS:localhost, for serverAuth; else a
    client certificate. serial: the serial number (default: random)."""
    crt, key = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    csr, ext = os.path.join(directory, name + ".csr"), os.path.join(directory, name + ".ext")
    openssl("req", "-new", *_EC, "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    serial_args = ["-set_serial", str(serial)] if serial else ["-CAcreateserial"]
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], *serial_args,
            "-out", crt, "-days", "2", "-extfile", ext, cwd=directory)
    return crt, key


class JobWatcher(threading.Thread):
    """Collects a job's watch events (client.watch_job) in a thread."""

    def __init__(self, client, job_id, timeout=120):
        super().__init__(daemon=True)
        self.c, self.id, self.timeout = client, job_id, timeout
        self.events, self.error = [], None
        self.start()

    def run(self):
        try:
            for ev in self.c.watch_job(self.id, timeout=self.timeout):
                self.events.append(ev)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def kinds(self):
        return [e.kind for e in self.events]


# ----------------------------------------------------------------- ONNX
# A minimal ONNX ModelProto written field by field (no onnx package needed):
# y = Relu(x), x float [batch, n], opset 17.

def _pb_varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _pb_field(num, value):
    """A length-delimited field (bytes/str/message) or a varint (int)."""
    if isinstance(value, int):
        return _pb_varint(num << 3) + _pb_varint(value)
    if isinstance(value, str):
        value = value.encode()
    return _pb_varint(num << 3 | 2) + _pb_varint(len(value)) + value


def onnx_value_info(name, dims, elem_type=1):
    dim_msgs = b"".join(_pb_field(1, _pb_field(2, d) if isinstance(d, str) else _pb_field(1, d))
                        for d in dims)
    tensor = _pb_field(1, elem_type) + _pb_field(2, dim_msgs)
    return _pb_field(1, name) + _pb_field(2, _pb_field(1, tensor))


def onnx_node(op_type, inputs, outputs, name=""):
    return (b"".join(_pb_field(1, i) for i in inputs) + b"".join(_pb_field(2, o) for o in outputs)
            + _pb_field(3, name or outputs[0]) + _pb_field(4, op_type))


def onnx_model(nodes, inputs, outputs, opset=17):
    """ModelProto bytes: nodes (onnx_node), inputs/outputs (onnx_value_info)."""
    graph = (b"".join(_pb_field(1, n) for n in nodes) + _pb_field(2, "g")
             + b"".join(_pb_field(11, i) for i in inputs)
             + b"".join(_pb_field(12, o) for o in outputs))
    opset_msg = _pb_field(1, "") + _pb_field(2, opset)
    return _pb_field(1, 8) + _pb_field(8, opset_msg) + _pb_field(7, graph)


def onnx_relu_model(n=4):
    return onnx_model([onnx_node("Relu", ["x"], ["y"], "relu")],
                      [onnx_value_info("x", ["batch", n])], [onnx_value_info("y", ["batch", n])])
