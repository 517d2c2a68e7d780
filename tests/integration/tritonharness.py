"""What the tritonclient tests (triton_client.py, test_triton_auth.py)
share. They run on the python3 on PATH, where pip installs tritonclient,
and so cannot use fxtest.py (built on Debian's grpcio and the generated
stubs): the binaries' paths, one fluxiond on a free loopback port with a
temporary data directory, the `fluxion` CLI against it, and a safetensors
reader (numpy only)."""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile

SRC = os.environ.get("FX_SOURCE_DIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
FLUXIOND = os.environ.get("FLUXIOND") or os.path.join(SRC, "build", "fluxiond")
CLI = os.environ.get("FLUXION_CLI") or os.path.join(SRC, "build", "fluxion")


def run_with_tritonclient(import_error):
    """For a test named test_*.py, which ctest runs with Debian's python3:
    when tritonclient is not importable here (import_error), runs the test
    again with the python3 on PATH (where pip installs it), without
    PYTHONPATH, since the generated stubs there (package `inference`, the
    same proto package as tritonclient's own) are not for that python and
    must not shadow tritonclient's. Exits 77 (skipped) when neither python
    has it."""
    other = shutil.which("python3")
    if (other and not os.environ.get("FX_TRITON_REEXEC")
            and os.path.realpath(other) != os.path.realpath(sys.executable)):
        env = dict(os.environ, FX_TRITON_REEXEC="1")
        env.pop("PYTHONPATH", None)
        os.execve(other, [other, os.path.abspath(sys.argv[0])] + sys.argv[1:], env)
    print("skipped: %s (pip install 'tritonclient[grpc]')" % import_error)
    sys.exit(77)


def require_built():
    """Exit 77 (skipped) when fluxiond or the CLI is not built."""
    for exe in (FLUXIOND, CLI):
        if not os.access(exe, os.X_OK):
            print("skipped: %s is not built" % exe)
            sys.exit(77)


def load_safetensors(data):
    """{name: float32 array} of a safetensors file's bytes."""
    import numpy as np
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
    return out


class Fluxiond:
    """fluxiond on 127.0.0.1:<free port>; its log in work/fluxiond.log.
    "{work}" in an argument is the daemon's own temporary directory."""

    def __init__(self, prefix, args=()):
        self.work = tempfile.mkdtemp(prefix=prefix)
        args = [a.format(work=self.work) for a in args]
        self.log = open(os.path.join(self.work, "fluxiond.log"), "wb")
        self.proc = subprocess.Popen([FLUXIOND, "--listen", "127.0.0.1:0", "--data-dir",
                                      os.path.join(self.work, "data")] + args,
                                     stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("fluxiond did not start: %r\n%s" % (line, self.log_text()))
        self.addr = line.split()[-1]

    def log_text(self):
        with open(os.path.join(self.work, "fluxiond.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def cli(self, *args, token=None):
        """`fluxion ARGS` against this daemon (FLUXION_TOKEN=token when
        given); asserts exit 0; returns stdout (bytes)."""
        env = dict(os.environ, FLUXION_SERVER=self.addr)
        if token:
            env["FLUXION_TOKEN"] = token
        p = subprocess.run([CLI] + list(args), capture_output=True, env=env, timeout=60)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p.stdout

    def stop(self):
        """SIGTERM; asserts exit 0; removes the directory."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=15)
        self.log.close()
        assert rc == 0, "fluxiond exited %d" % rc
        shutil.rmtree(self.work, ignore_errors=True)
