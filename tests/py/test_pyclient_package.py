"""fluxion-client as a package: `pip install clients/python` into a fresh
venv (no system site-packages) from PyPI, then, from that venv with no
PYTHONPATH and outside the source tree, import it and call a fluxiond that
this test starts; mypy checks its type hints. Also builds an sdist and installs from it (the sdist must
carry the .proto files), and checks that the package's stubs coexist with
other packages' `inference.*` / `grpc.health.v1.*` messages in protobuf's
default descriptor pool (tritonclient, grpcio-health-checking).

Run by ctest with the python3 on PATH; FLUXIOND, FX_SOURCE_DIR and
FX_BUILD_DIR from CMake. The venv is kept in FX_BUILD_DIR/pyclient-venv and
reinstalled only when clients/python or proto/ change. Exit 77 (skipped)
when PyPI cannot be reached."""
import hashlib
import glob
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("FX_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("FX_BUILD_DIR") or os.path.join(SRC, "build")
FLUXIOND = os.environ.get("FLUXIOND") or os.path.join(BUILD, "fluxiond")
PKG = os.path.join(SRC, "clients", "python")
VENV = os.path.join(BUILD, "pyclient-venv")
VPY = os.path.join(VENV, "bin", "python")
SKIP = 77

# What runs inside the venv: argv[1] is the daemon's address.
CHECK = r'''
import importlib.util, os, sys
from google.protobuf import descriptor_pb2, descriptor_pool

# Other packages' copies of our messages, in the default pool first (what
# importing tritonclient.grpc and grpc_health.v1.health_pb2 does).
for name, pkg, msg in (("grpc_service.proto", "inference", "ServerLiveRequest"),
                       ("grpc_health/v1/health.proto", "grpc.health.v1", "HealthCheckRequest")):
    fdp = descriptor_pb2.FileDescriptorProto(name=name, package=pkg, syntax="proto3")
    fdp.message_type.add(name=msg).field.add(name="other", number=7, type=9, label=1)
    descriptor_pool.Default().Add(fdp)

import numpy as np
import fluxion_client
from fluxion_client import Client, NotFound, AlreadyExists, InvalidArgument, _stubs

where = os.path.dirname(fluxion_client.__file__)
assert where.startswith(sys.prefix), "imported from %s, not the venv %s" % (where, sys.prefix)
assert _stubs.SOURCE == "packaged", _stubs.SOURCE
assert fluxion_client.__version__ == "0.3.0", fluxion_client.__version__
for top in ("inference", "fluxion", "grpc_health"):
    assert importlib.util.find_spec(top) is None, "a top-level %r module is importable" % top
for f in ("py.typed", "_proto/fluxion/v1/model_pb2.pyi", "_proto/inference/grpc_service_pb2.pyi"):
    assert os.path.isfile(os.path.join(where, f)), "the package lacks " + f
# Ours are in the private pool, the others' untouched in the default one.
assert _stubs.infer_pb2.ServerLiveRequest.DESCRIPTOR.file.pool is not descriptor_pool.Default()
assert descriptor_pool.Default().FindMessageTypeByName("inference.ServerLiveRequest").fields[0].name == "other"

spec = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 4]}],
        "nodes": [{"name": "fc", "op": "dense", "inputs": ["x"],
                   "attrs": {"in_features": 4, "out_features": 3}}],
        "outputs": [{"name": "y", "source": "fc"}]}
name = sys.argv[2]
with Client(sys.argv[1], timeout=30) as c:
    c.wait_ready(10)
    m = c.create_model(name, spec, seed=3)
    assert m.name == name and m.latest_version == 1, m
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    y = c.infer(name, {"x": x})["y"]
    w = c.export_arrays(name)
    want = x @ w["fc.weight"].T + w["fc.bias"]
    assert y.shape == (2, 3) and np.allclose(y, want, atol=1e-5), (y, want)
    try:
        c.get_model("no-such-model")
        raise AssertionError("get_model of a missing model did not raise")
    except NotFound as e:
        assert e.code.name == "NOT_FOUND" and "no-such-model" in e.message, e
    try:
        c.create_model(name, spec)
        raise AssertionError("a second create_model did not raise")
    except AlreadyExists:
        pass
    try:
        c.infer(name, {"x": np.ones((2, 5), np.float32)})
        raise AssertionError("a wrong shape did not raise")
    except InvalidArgument as e:
        assert "x" in e.message, e
print("ok: fluxion_client %s from %s" % (fluxion_client.__version__, where))
'''


def run(cmd, **kw):
    """Runs cmd; returns its CompletedProcess (output captured as text)."""
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def fail(msg, out=""):
    sys.stderr.write("FAIL: %s\n%s\n" % (msg, out[-6000:]))
    sys.exit(1)


def sources_digest():
    """A digest of what the installed package is made from."""
    h = hashlib.sha256(sys.version.encode())
    files = []
    for root in (PKG, os.path.join(SRC, "proto")):
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in ("_proto", "build", "__pycache__")
                       and not x.endswith(".egg-info")]
            files += [os.path.join(d, n) for n in names if not n.endswith(".pyc")]
    for f in sorted(files):
        h.update(os.path.relpath(f, SRC).encode())
        with open(f, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "FX_PY_OUT", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pypi_reachable():
    p = run([sys.executable, "-m", "pip", "index", "versions", "grpcio-tools"], timeout=120,
            env=clean_env())
    return p.returncode == 0


def install(work):
    """A fresh venv with the package from the source tree, then from an sdist."""
    shutil.rmtree(VENV, ignore_errors=True)
    p = run([sys.executable, "-m", "venv", VENV])
    if p.returncode != 0:
        fail("python3 -m venv %s" % VENV, p.stdout)
    env = clean_env()
    p = run([VPY, "-m", "pip", "install", PKG], cwd=work, env=env, timeout=900)
    if p.returncode != 0:
        fail("pip install clients/python", p.stdout)
    print("pip install clients/python: ok")
    p = run([VPY, "-m", "pip", "install", "mypy>=1.11,<2"], cwd=work, env=env, timeout=600)
    if p.returncode != 0:
        fail("pip install mypy", p.stdout)
    return env


def typecheck(work, env):
    """mypy on the installed package: its annotations, py.typed and the
    generated .pyi stubs (package-relative imports) hold together."""
    p = run([VPY, "-m", "mypy", "-p", "fluxion_client", "--ignore-missing-imports",
             "--cache-dir", os.path.join(VENV, "mypy-cache")], cwd=work, env=env, timeout=600)
    print("mypy: " + p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "mypy: (no output)")
    if p.returncode != 0:
        fail("mypy -p fluxion_client", p.stdout)


def install_sdist(work, env):
    """sdist -> an isolated build of it (./proto inside, ../../proto out of
    reach) -> installed over the first install."""
    if run([VPY, "-c", "import setuptools"]).returncode != 0:
        p = run([VPY, "-m", "pip", "install", "setuptools>=61"], env=env, timeout=300)
        if p.returncode != 0:
            fail("pip install setuptools", p.stdout)
    dist = os.path.join(work, "dist")
    copy = os.path.join(work, "src")   # setup.py sdist writes its egg-info next to itself
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("_proto", "build", "*.egg-info",
                                                             "__pycache__"))
    p = run([VPY, "setup.py", "-q", "sdist", "-d", dist], cwd=copy,
            env=dict(env, FLUXION_PROTO_DIR=os.path.join(SRC, "proto")), timeout=300)
    tars = glob.glob(os.path.join(dist, "*.tar.gz"))
    if p.returncode != 0 or len(tars) != 1:
        fail("setup.py sdist", p.stdout)
    listing = run(["tar", "tzf", tars[0]]).stdout
    if "/proto/fluxion/v1/model.proto" not in listing:
        fail("the sdist does not carry proto/fluxion/v1/model.proto", listing)
    p = run([VPY, "-m", "pip", "install", "--force-reinstall", "--no-deps", tars[0]],
            cwd=work, env=env, timeout=900)
    if p.returncode != 0:
        fail("pip install of the sdist", p.stdout)
    print("pip install %s: ok" % os.path.basename(tars[0]))


class Daemon:
    """fluxiond on 127.0.0.1:<free port> with a temporary data directory."""

    def __init__(self, work):
        self.log = open(os.path.join(work, "fluxiond.log"), "wb")
        self.proc = subprocess.Popen(
            [FLUXIOND, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(work, "data")],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = b""
        while b"\n" not in line:
            ready, _, _ = select.select([self.proc.stdout], [], [], 20)
            chunk = os.read(self.proc.stdout.fileno(), 256) if ready else b""
            if not chunk:
                self.stop()
                fail("fluxiond did not print 'listening on HOST:PORT'", line.decode())
            line += chunk
        first = line.decode().split("\n")[0]
        if not first.startswith("listening on 127.0.0.1:"):
            self.stop()
            fail("unexpected first line from fluxiond: %r" % first)
        self.address = first[len("listening on "):].strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def check(work, env, daemon, name):
    p = run([VPY, "-c", CHECK, daemon.address, name], cwd=work, env=env, timeout=300)
    print(p.stdout.strip())
    if p.returncode != 0:
        fail("the installed package against fluxiond (model %s)" % name, p.stdout)


def main():
    if not os.access(FLUXIOND, os.X_OK):
        print("skipped: no fluxiond at %s" % FLUXIOND)
        return SKIP
    work = tempfile.mkdtemp(prefix="fx-pyclient-")
    try:
        digest = sources_digest()
        stamp = os.path.join(VENV, "fluxion-sources.sha256")
        cached = (os.path.exists(stamp) and open(stamp).read() == digest
                  and run([VPY, "-c", "import fluxion_client"], cwd=work,
                          env=clean_env()).returncode == 0)
        env = clean_env()
        daemon = Daemon(work)
        try:
            if cached:
                print("venv %s is up to date with clients/python and proto/" % VENV)
            else:
                if not pypi_reachable():
                    print("skipped: PyPI cannot be reached (pip index versions grpcio-tools)")
                    return SKIP
                install(work)
                check(work, env, daemon, "from-tree")
                install_sdist(work, env)
                with open(stamp, "w") as f:
                    f.write(digest)
            check(work, env, daemon, "from-" + ("cache" if cached else "sdist"))
            typecheck(work, env)
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
