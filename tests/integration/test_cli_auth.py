"""The clients' credentials: the `fluxion` CLI and fluxion_client send the
token and speak TLS, and the admin commands against a real daemon.

Two parts:
- FakeServerTest: a Python gRPC server playing AdminService records what
  arrives (the authorization metadata, the client certificate), so the
  clients' side is checked alone: every source of the token (--token,
  --token-file, FLUXION_TOKEN, a context's token and token_file) and their
  precedence, contexts, permission warnings, the UNAUTHENTICATED and
  PERMISSION_DENIED hints, TLS with a CA and mutual TLS (certificates made
  with the openssl CLI), `token create` printing the secret once.
- DaemonAdminTest: fluxiond started with --init-admin-token FILE: whoami,
  team create/list/get/update/delete, token create/list/revoke (the revoked
  token fails its next call), ttl, contexts against the daemon, bad tokens
  (exit 1 with the server's message and a hint), the Python admin methods.
  Skipped when the daemon has no --init-admin-token (before the server
  side of teams landed).
"""
import concurrent.futures
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fxtest  # noqa: E402
from fxtest import grpc  # noqa: E402

import fluxion_client  # noqa: E402

try:
    from fluxion.v1 import admin_pb2, admin_pb2_grpc, model_pb2_grpc  # noqa: E402
except ImportError as e:
    print("skipped: no admin stubs (%s): build the project" % e)
    sys.exit(fxtest.SKIP)

CLI = os.path.abspath(os.environ.get("FLUXION_CLI")
                      or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion"))
if not os.access(CLI, os.X_OK):
    print("skipped: no fluxion CLI at %s (set FLUXION_CLI)" % CLI)
    sys.exit(fxtest.SKIP)

OPENSSL = shutil.which("openssl")
C = grpc.StatusCode
GOOD = "fxn_" + "ab" * 32


def tmpdir():
    return tempfile.mkdtemp(prefix="cliauth-", dir=fxtest._WORK)


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def clean_env(**extra):
    """The environment without the caller's fluxion settings, and a config
    file of our own (never the user's)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FLUXION_TOKEN", "FLUXION_SERVER", "FLUXION_CONTEXT", "FLUXION_CONFIG")}
    env["FLUXION_CONFIG"] = os.path.join(tmpdir(), "config.json")
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run_cli(args, env, expect=0, test=None):
    p = subprocess.run([CLI] + list(args), capture_output=True, text=True, env=env, timeout=60)
    if expect is not None and p.returncode != expect:
        msg = ("fluxion %s: rc %d (want %d)\nstdout: %s\nstderr: %s"
               % (" ".join(args), p.returncode, expect, p.stdout, p.stderr))
        if test:
            test.fail(msg)
        raise AssertionError(msg)
    return p


# ----------------------------------------------------------- certificates

def openssl(*args, cwd):
    subprocess.run([OPENSSL] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d):
    """ca.pem/ca.key, server.pem/server.key (SAN 127.0.0.1, localhost),
    client.pem/client.key (CN=alice), all signed by the CA."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    write(os.path.join(d, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn, ext in (("server", "localhost", True), ("client", "alice", False)):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + cn,
                "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", name + ".pem",
                *(("-extfile", "san.ext") if ext else ()), cwd=d)
    return {k: os.path.join(d, k) for k in ("ca.pem", "server.pem", "server.key", "client.pem",
                                             "client.key")}


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


# ------------------------------------------------------------ fake server

class FakeAdmin(admin_pb2_grpc.AdminServiceServicer):
    """WhoAmI answers with what came: principal = the authorization value
    ("" without one), team = the client certificate's CN, tls. When
    `require` is set, any other authorization is UNAUTHENTICATED. CreateTeam
    is PERMISSION_DENIED, CreateToken returns a fixed secret."""

    def __init__(self, require=None):
        self.require = require
        self.seen = []

    def _auth(self, context):
        md = dict(context.invocation_metadata())
        auth = md.get("authorization", "")
        self.seen.append(auth)
        if self.require is not None and auth != "Bearer " + self.require:
            context.abort(C.UNAUTHENTICATED, "the token is not known (test server)")
        return auth

    def WhoAmI(self, request, context):
        auth = self._auth(context)
        cn = context.auth_context().get("x509_common_name", [b""])
        return admin_pb2.WhoAmIResponse(principal=auth, team=cn[0].decode() if cn else "",
                                        role="admin",
                                        tls=context.auth_context().get(
                                            "transport_security_type", [b""])[0] == b"ssl")

    def CreateTeam(self, request, context):
        self._auth(context)
        context.abort(C.PERMISSION_DENIED, "role 'viewer' may not call AdminService/CreateTeam "
                                           "(needs admin)")

    def CreateToken(self, request, context):
        self._auth(context)
        return admin_pb2.CreateTokenResponse(
            token=admin_pb2.Token(id=7, team=request.team or "default", name=request.name,
                                  role=request.role, expires_ms=0),
            secret=GOOD)


class FakeModels(model_pb2_grpc.ModelServiceServicer):
    """The streaming calls answer NOT_FOUND "auth=<the authorization value>":
    whether a server-streaming and a client-streaming call carry the token."""

    @staticmethod
    def _echo(context):
        auth = dict(context.invocation_metadata()).get("authorization", "")
        context.abort(C.NOT_FOUND, "auth=%s." % auth)

    def ExportWeights(self, request, context):
        self._echo(context)

    def ImportWeights(self, request_iterator, context):
        self._echo(context)


class FakeServer:
    def __init__(self, servicer, creds=None):
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, self.server)
        model_pb2_grpc.add_ModelServiceServicer_to_server(FakeModels(), self.server)
        if creds is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()
        self.address = "127.0.0.1:%d" % self.port

    def stop(self):
        self.server.stop(0)


class FakeServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.admin = FakeAdmin()
        cls.plain = FakeServer(cls.admin)
        cls.strict_admin = FakeAdmin(require=GOOD)
        cls.strict = FakeServer(cls.strict_admin)

    @classmethod
    def tearDownClass(cls):
        cls.plain.stop()
        cls.strict.stop()

    def who(self, *args, env=None, expect=0):
        env = env if env is not None else clean_env()
        p = run_cli(["--json", "--server", self.plain.address, "whoami"] + list(args), env,
                    expect=expect, test=self)
        return (json.loads(p.stdout) if expect == 0 else None), p

    def test_token_sources(self):
        d = tmpdir()
        tok_file = write(os.path.join(d, "tok"), "  fxn_from_file\n")
        # none
        got, _ = self.who()
        self.assertEqual(got["principal"], "")
        # --token, --token-file, FLUXION_TOKEN
        got, _ = self.who("--token", "fxn_flag")
        self.assertEqual(got["principal"], "Bearer fxn_flag")
        got, p = self.who("--token-file", tok_file)
        self.assertEqual(got["principal"], "Bearer fxn_from_file")
        self.assertNotIn("warning", p.stderr)
        got, _ = self.who(env=clean_env(FLUXION_TOKEN="fxn_env"))
        self.assertEqual(got["principal"], "Bearer fxn_env")
        # no HOME and no FLUXION_CONFIG (a service, a container): no config file, env works
        bare = {k: v for k, v in clean_env(FLUXION_TOKEN="fxn_bare").items()
                if k not in ("HOME", "FLUXION_CONFIG")}
        got, _ = self.who(env=bare)
        self.assertEqual(got["principal"], "Bearer fxn_bare")
        # flags beat the environment
        got, _ = self.who("--token-file", tok_file, env=clean_env(FLUXION_TOKEN="fxn_env"))
        self.assertEqual(got["principal"], "Bearer fxn_from_file")
        # both flags: usage error; a missing file: local error naming it
        _, p = self.who("--token", "a", "--token-file", tok_file, expect=2)
        _, p = self.who("--token-file", os.path.join(d, "nope"), expect=4)
        self.assertIn(os.path.join(d, "nope"), p.stderr)
        # a token that cannot be metadata: refused locally, the secret not echoed
        _, p = self.who("--token", "fxn_bad token", expect=4)
        self.assertIn("space", p.stderr)
        self.assertNotIn("fxn_bad", p.stderr)

    def test_streams_carry_token(self):
        d = tmpdir()
        w = write(os.path.join(d, "w.safetensors"), "x" * 100)
        env = clean_env(FLUXION_TOKEN="fxn_stream", FLUXION_SERVER=self.plain.address)
        p = run_cli(["model", "export", "m", "-o", os.path.join(d, "out")], env, expect=1,
                    test=self)
        self.assertIn("auth=Bearer fxn_stream.", p.stderr)          # server streaming
        p = run_cli(["model", "import", "m", w], env, expect=1, test=self)
        self.assertIn("auth=Bearer fxn_stream.", p.stderr)          # client streaming
        with fluxion_client.Client(self.plain.address, token="fxn_pys") as c:
            with self.assertRaises(fluxion_client.NotFound) as cm:
                c.export_weights("m")
            self.assertIn("auth=Bearer fxn_pys.", cm.exception.message)
            with self.assertRaises(fluxion_client.NotFound) as cm:
                c.import_weights("m", b"x" * 10)
            self.assertIn("auth=Bearer fxn_pys.", cm.exception.message)

    def test_token_file_permissions_warning(self):
        d = tmpdir()
        tok = write(os.path.join(d, "tok"), "fxn_open\n", 0o644)
        got, p = self.who("--token-file", tok)
        self.assertEqual(got["principal"], "Bearer fxn_open")
        self.assertIn("warning: token file %s is accessible by others" % tok, p.stderr)
        self.assertIn("chmod 600", p.stderr)
        self.assertNotIn("fxn_open", p.stderr)

    def test_contexts(self):
        env = clean_env()
        cfg = env["FLUXION_CONFIG"]
        d = os.path.dirname(cfg)
        write(os.path.join(d, "prod.token"), "fxn_prod\n")
        run_cli(["config", "set-context", "prod", "--server", self.plain.address,
                 "--token-file", os.path.join(d, "prod.token")], env, test=self)
        self.assertEqual(stat.S_IMODE(os.stat(cfg).st_mode), 0o600)
        run_cli(["config", "set-context", "dev", "--server", "127.0.0.1:1", "--token",
                 "fxn_dev"], env, test=self)
        p = run_cli(["config", "get-contexts"], env, test=self)
        self.assertRegex(p.stdout, r"\*\s+prod\s+%s" % self.plain.address)  # the first is current
        self.assertNotIn("fxn_dev", p.stdout)  # never a secret
        listed = json.loads(run_cli(["--json", "config", "get-contexts"], env, test=self).stdout)
        self.assertEqual(listed["current_context"], "prod")
        self.assertEqual({c["name"] for c in listed["contexts"]}, {"prod", "dev"})
        self.assertNotIn("fxn_dev", json.dumps(listed))

        # the current context gives the server and the token
        p = run_cli(["--json", "whoami"], env, test=self)
        self.assertEqual(json.loads(p.stdout)["principal"], "Bearer fxn_prod")
        # env beats the context, flags beat env
        e2 = dict(env, FLUXION_TOKEN="fxn_env")
        self.assertEqual(json.loads(run_cli(["--json", "whoami"], e2, test=self).stdout)
                         ["principal"], "Bearer fxn_env")
        self.assertEqual(json.loads(run_cli(["--json", "--token", "fxn_f", "whoami"], e2,
                                            test=self).stdout)["principal"], "Bearer fxn_f")
        # --context / FLUXION_CONTEXT pick another one (dev: nothing listens there)
        p = run_cli(["--context", "dev", "--timeout", "2", "whoami"], env, expect=3, test=self)
        self.assertIn("127.0.0.1:1", p.stderr)
        p = run_cli(["--timeout", "2", "whoami"], dict(env, FLUXION_CONTEXT="dev"), expect=3,
                    test=self)
        # ...but --server still wins over the context's server
        p = run_cli(["--json", "--context", "dev", "--server", self.plain.address, "whoami"],
                    env, test=self)
        self.assertEqual(json.loads(p.stdout)["principal"], "Bearer fxn_dev")
        # an unknown context
        p = run_cli(["--context", "nope", "whoami"], env, expect=4, test=self)
        self.assertIn("context 'nope'", p.stderr)
        # use-context switches; delete-context removes
        run_cli(["config", "use-context", "dev"], env, test=self)
        self.assertEqual(json.loads(read(cfg, "r"))["current_context"], "dev")
        run_cli(["config", "use-context", "nope"], env, expect=2, test=self)
        run_cli(["config", "delete-context", "dev"], env, test=self)
        self.assertNotIn("dev", json.loads(read(cfg, "r"))["contexts"])
        # a config file holding a token, readable by others: warned about
        run_cli(["config", "set-context", "dev", "--token", "fxn_dev"], env, test=self)
        os.chmod(cfg, 0o644)
        p = run_cli(["--json", "--context", "prod", "whoami"], env, test=self)
        self.assertIn("warning: config file %s holds a token" % cfg, p.stderr)
        # a broken config file: a local error naming it
        write(cfg, "{\"contexts\": {\"x\": {\"tokenfile\": \"t\"}}}")
        p = run_cli(["whoami"], env, expect=4, test=self)
        self.assertIn("unknown key \"tokenfile\"", p.stderr)

    def test_relative_paths_in_config(self):
        env = clean_env()
        d = os.path.dirname(env["FLUXION_CONFIG"])
        write(os.path.join(d, "rel.token"), "fxn_rel\n")
        write(env["FLUXION_CONFIG"], json.dumps({
            "current_context": "r",
            "contexts": {"r": {"server": self.plain.address, "token_file": "rel.token"}}}))
        p = run_cli(["--json", "whoami"], env, test=self)  # cwd is not the config's directory
        self.assertEqual(json.loads(p.stdout)["principal"], "Bearer fxn_rel")

    def test_unauthenticated_and_permission_hints(self):
        env = clean_env()
        p = run_cli(["--server", self.strict.address, "whoami"], env, expect=1, test=self)
        self.assertIn("UNAUTHENTICATED: the token is not known (test server)", p.stderr)
        self.assertIn("pass --token or --token-file, set FLUXION_TOKEN", p.stderr)
        p = run_cli(["--server", self.strict.address, "whoami"],
                    dict(env, FLUXION_TOKEN="fxn_wrong"), expect=1, test=self)
        self.assertIn("the token (from FLUXION_TOKEN) was refused", p.stderr)
        self.assertNotIn("fxn_wrong", p.stderr)
        p = run_cli(["--server", self.strict.address, "--token", GOOD, "whoami"], env, test=self)
        self.assertIn("principal:  Bearer " + GOOD, p.stdout)
        p = run_cli(["--server", self.plain.address, "team", "create", "x"], env, expect=1,
                    test=self)
        self.assertIn("PERMISSION_DENIED: role 'viewer' may not call", p.stderr)
        self.assertIn("fluxion whoami", p.stderr)

    def test_token_create_prints_secret_once(self):
        env = clean_env()
        base = ["--server", self.plain.address, "token", "create", "ci", "--team", "a"]
        run_cli(base, env, expect=2, test=self)  # --role is required
        p = run_cli(base + ["--role", "boss"], env, expect=2, test=self)
        self.assertIn("admin, member or viewer", p.stderr)
        p = run_cli(base + ["--role", "member", "--ttl", "5x"], env, expect=2, test=self)
        self.assertIn("--ttl", p.stderr)
        p = run_cli(base + ["--role", "member", "--ttl", "30d"], env, test=self)
        self.assertEqual(p.stdout, GOOD + "\n")           # the secret alone on stdout
        self.assertIn("only time the secret is shown", p.stderr)
        self.assertNotIn(GOOD, p.stderr)
        out = os.path.join(tmpdir(), "ci.token")
        p = run_cli(base + ["--role", "member", "-o", out], env, test=self)
        self.assertEqual(p.stdout, "")
        self.assertNotIn(GOOD, p.stderr)
        self.assertEqual(read(out, "r"), GOOD + "\n")
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        got = json.loads(run_cli(["--json"] + base + ["--role", "member"], env, test=self).stdout)
        self.assertEqual(got["secret"], GOOD)
        self.assertEqual(got["token"]["name"], "ci")

    def test_python_client_token(self):
        with fluxion_client.Client(self.plain.address, token="fxn_py") as c:
            self.assertEqual(c.whoami().principal, "Bearer fxn_py")
        old = os.environ.get("FLUXION_TOKEN")
        os.environ["FLUXION_TOKEN"] = "fxn_py_env"
        try:
            with fluxion_client.Client(self.plain.address) as c:
                self.assertEqual(c.whoami().principal, "Bearer fxn_py_env")
            with fluxion_client.Client(self.plain.address, token="") as c:
                self.assertEqual(c.whoami().principal, "")
        finally:
            if old is None:
                del os.environ["FLUXION_TOKEN"]
            else:
                os.environ["FLUXION_TOKEN"] = old
        with fluxion_client.Client(self.strict.address, token="fxn_nope") as c:
            with self.assertRaises(fluxion_client.Unauthenticated):
                c.whoami()
        with self.assertRaises(ValueError):
            fluxion_client.Client(self.plain.address, token="bad token")


@unittest.skipUnless(OPENSSL, "no openssl CLI")
class TlsTest(unittest.TestCase):
    """The clients against a TLS server (the fake AdminService)."""

    @classmethod
    def setUpClass(cls):
        cls.certs = make_certs(tmpdir())
        pair = [(read(cls.certs["server.key"]), read(cls.certs["server.pem"]))]
        cls.tls = FakeServer(FakeAdmin(), grpc.ssl_server_credentials(pair))
        cls.mtls = FakeServer(FakeAdmin(), grpc.ssl_server_credentials(
            pair, root_certificates=read(cls.certs["ca.pem"]), require_client_auth=True))

    @classmethod
    def tearDownClass(cls):
        cls.tls.stop()
        cls.mtls.stop()

    def test_cli_tls(self):
        env = clean_env()
        c = self.certs
        p = run_cli(["--json", "--server", self.tls.address, "--tls-ca", c["ca.pem"], "--token",
                     "fxn_t", "whoami"], env, test=self)
        got = json.loads(p.stdout)
        self.assertTrue(got["tls"])
        self.assertEqual(got["principal"], "Bearer fxn_t")
        # without TLS, or trusting another CA: the server cannot be reached
        run_cli(["--timeout", "3", "--server", self.tls.address, "whoami"], env, expect=3,
                test=self)
        run_cli(["--timeout", "3", "--server", self.tls.address, "--tls-ca", c["client.pem"],
                 "whoami"], env, expect=3, test=self)
        # a CA file that is not PEM: a local error naming it
        bad = write(os.path.join(tmpdir(), "bad.pem"), "nope")
        p = run_cli(["--server", self.tls.address, "--tls-ca", bad, "whoami"], env, expect=4,
                    test=self)
        self.assertIn("not a PEM file", p.stderr)

    def test_cli_mtls_and_context(self):
        env = clean_env()
        c = self.certs
        args = ["--server", self.mtls.address, "--tls-ca", c["ca.pem"]]
        run_cli(["--timeout", "3"] + args + ["whoami"], env, expect=3, test=self)  # no client cert
        run_cli(args + ["--tls-cert", c["client.pem"], "whoami"], env, expect=2, test=self)
        p = run_cli(["--json"] + args + ["--tls-cert", c["client.pem"], "--tls-key",
                                         c["client.key"], "whoami"], env, test=self)
        self.assertEqual(json.loads(p.stdout)["team"], "alice")  # the CN the server saw
        # the same from a context (relative file names stored absolute)
        cwd = os.path.dirname(c["ca.pem"])
        subprocess.run([CLI, "config", "set-context", "m", "--server", self.mtls.address,
                        "--tls-ca", "ca.pem", "--tls-cert", "client.pem", "--tls-key",
                        "client.key", "--use"], env=env, cwd=cwd, check=True, capture_output=True)
        p = run_cli(["--json", "whoami"], env, test=self)
        self.assertEqual(json.loads(p.stdout)["team"], "alice")
        p = run_cli(["config", "get-contexts"], env, test=self)
        self.assertIn("mtls", p.stdout)

    def test_python_tls(self):
        c = self.certs
        with fluxion_client.Client(self.tls.address, tls_ca=c["ca.pem"], token="fxn_p") as cl:
            w = cl.whoami()
            self.assertTrue(w.tls)
            self.assertEqual(w.principal, "Bearer fxn_p")
        with fluxion_client.Client(self.mtls.address, tls_ca=read(c["ca.pem"]),
                                   tls_cert=c["client.pem"], tls_key=c["client.key"]) as cl:
            self.assertEqual(cl.whoami().team, "alice")
        with self.assertRaises(ValueError):
            fluxion_client.Client(self.mtls.address, tls_cert=c["client.pem"])


# ------------------------------------------------------------- real daemon

def daemon_has_auth():
    p = subprocess.run([fxtest.FLUXIOND, "--help"], capture_output=True, text=True, timeout=30)
    return "--init-admin-token" in p.stdout + p.stderr


@unittest.skipUnless(daemon_has_auth(), "fluxiond has no --init-admin-token (teams/auth not "
                                        "merged yet)")
class DaemonAdminTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tmpdir()
        cls.admin_file = os.path.join(cls.dir, "admin.token")   # missing: the daemon writes it
        cls.d = fxtest.Daemon(["--init-admin-token", cls.admin_file], name=cls.__name__).start()
        cls.admin_secret = read(cls.admin_file, "r").strip()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def cli(self, *args, token_file=None, token=None, expect=0, env=None):
        env = env if env is not None else clean_env(FLUXION_SERVER=self.d.address)
        pre = []
        if token_file:
            pre += ["--token-file", token_file]
        if token:
            pre += ["--token", token]
        return run_cli(pre + list(args), env, expect=expect, test=self)

    def admin(self, *args, expect=0):
        return self.cli(*args, token_file=self.admin_file, expect=expect)

    def test_bootstrap_file(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.admin_file).st_mode), 0o600)
        self.assertRegex(self.admin_secret, r"^fxn_[0-9a-f]{64}$")

    def test_whoami(self):
        got = json.loads(self.admin("--json", "whoami").stdout)
        self.assertEqual(got["role"], "admin")
        self.assertEqual(got["team"], "default")
        self.assertFalse(got["local_mode"])
        self.assertTrue(got["principal"].startswith("token:"))
        p = self.admin("whoami")
        self.assertIn("role:       admin", p.stdout)

    def test_no_or_bad_token(self):
        p = self.cli("model", "list", expect=1)
        self.assertIn("UNAUTHENTICATED", p.stderr)
        self.assertIn("pass --token or --token-file", p.stderr)
        bad = "fxn_" + "0" * 64
        p = self.cli("whoami", token=bad, expect=1)
        self.assertIn("UNAUTHENTICATED", p.stderr)
        self.assertIn("the token (from --token) was refused", p.stderr)
        self.assertNotIn(bad, p.stderr + p.stdout)
        p = self.cli("whoami", expect=1, env=clean_env(FLUXION_SERVER=self.d.address,
                                                        FLUXION_TOKEN=bad))
        self.assertIn("FLUXION_TOKEN", p.stderr)

    def test_teams(self):
        got = json.loads(self.admin("--json", "team", "create", "ta", "--display-name", "Team A",
                                    "--max-models", "3", "--max-weight-mb", "2").stdout)
        self.assertEqual(got["name"], "ta")
        self.assertEqual(got["quota"]["max_models"], 3)
        self.assertEqual(got["quota"]["max_weight_bytes"], 2 << 20)
        self.admin("team", "create", "ta", expect=1)        # ALREADY_EXISTS
        self.admin("team", "create", "Bad/Name", expect=1)  # INVALID_ARGUMENT
        p = self.admin("team", "list")
        self.assertRegex(p.stdout, r"(?m)^ta\s")
        self.assertRegex(p.stdout, r"(?m)^default\s")
        teams = json.loads(self.admin("--json", "team", "list").stdout)["teams"]
        names = [t["name"] for t in teams]
        self.assertIn("ta", names)
        # update one limit: the others keep their values
        got = json.loads(self.admin("--json", "team", "update", "ta", "--max-models", "5").stdout)
        self.assertEqual(got["quota"]["max_models"], 5)
        self.assertEqual(got["quota"]["max_weight_bytes"], 2 << 20)
        self.assertEqual(got["display_name"], "Team A")
        p = self.admin("team", "get", "ta")
        self.assertIn("display name:  Team A", p.stdout)
        self.admin("team", "update", "ta", expect=2)        # nothing to change
        self.admin("team", "delete", "ta")
        self.admin("team", "get", "ta", expect=1)

    def test_tokens(self):
        self.admin("team", "create", "tb")
        d = tmpdir()
        member = os.path.join(d, "member.token")
        self.admin("token", "create", "ci", "--team", "tb", "--role", "member", "-o", member)
        self.assertEqual(stat.S_IMODE(os.stat(member).st_mode), 0o600)
        got = json.loads(self.cli("--json", "whoami", token_file=member).stdout)
        self.assertEqual((got["team"], got["role"]), ("tb", "member"))
        # a member may not manage: PERMISSION_DENIED with the whoami hint
        p = self.cli("team", "list", token_file=member, expect=1)
        self.assertIn("PERMISSION_DENIED", p.stderr)
        self.assertIn("fluxion whoami", p.stderr)
        # but may see its own team
        self.assertIn("name:          tb", self.cli("team", "get", token_file=member).stdout)

        listed = json.loads(self.admin("--json", "token", "list", "--team", "tb").stdout)["tokens"]
        self.assertEqual([(t["name"], t["role"]) for t in listed], [("ci", "member")])
        tid = listed[0]["id"]
        self.assertNotIn(read(member, "r").strip(), self.admin("--json", "token", "list").stdout)
        p = self.admin("token", "list")
        self.assertRegex(p.stdout, r"(?m)^\s*%d\s+tb\s+ci\s+member\s+active" % tid)

        # revoke by id: its next call fails
        p = self.admin("token", "revoke", str(tid))
        self.assertIn("revoked token %d" % tid, p.stdout)
        p = self.cli("whoami", token_file=member, expect=1)
        self.assertIn("UNAUTHENTICATED", p.stderr)
        self.assertIn("the token (from --token-file) was refused", p.stderr)
        listed = json.loads(self.admin("--json", "token", "list", "--team", "tb").stdout)["tokens"]
        self.assertEqual(listed, [])
        listed = json.loads(self.admin("--json", "token", "list", "--team", "tb",
                                       "--all").stdout)["tokens"]
        self.assertEqual([t["revoked"] for t in listed], [True])

        # revoke by team and name
        v = json.loads(self.admin("--json", "token", "create", "viewer1", "--team", "tb",
                                  "--role", "viewer").stdout)
        got = json.loads(self.cli("--json", "whoami", token=v["secret"]).stdout)
        self.assertEqual((got["team"], got["role"]), ("tb", "viewer"))
        self.admin("token", "revoke", "--team", "tb", "--name", "viewer1")
        self.cli("whoami", token=v["secret"], expect=1)
        self.admin("token", "revoke", expect=2)
        self.admin("token", "revoke", "99999", expect=1)        # NOT_FOUND

        # ttl
        t = json.loads(self.admin("--json", "token", "create", "short", "--team", "tb",
                                  "--role", "viewer", "--ttl", "1s").stdout)
        self.assertGreater(t["token"]["expires_ms"], 0)
        time.sleep(2.2)
        self.cli("whoami", token=t["secret"], expect=1)

    def test_member_model_streams(self):
        """A member's token on unary and streaming calls (export: server
        streaming, import: client streaming); without it they fail."""
        self.admin("team", "create", "tc")
        d = tmpdir()
        member = os.path.join(d, "m.token")
        self.admin("token", "create", "dev", "--team", "tc", "--role", "member", "-o", member)
        mlp = os.path.join(fxtest.SOURCE_DIR, "examples", "models", "mlp.json")
        self.cli("model", "create", mlp, "--name", "m1", token_file=member)
        out = os.path.join(d, "w.safetensors")
        self.cli("model", "export", "m1", "-o", out, token_file=member)
        got = json.loads(self.cli("--json", "model", "import", "m1", out,
                                  token_file=member).stdout)
        self.assertEqual(int(got["version"]), 2)
        p = self.cli("model", "export", "m1", "-o", out + ".2", expect=1)
        self.assertIn("UNAUTHENTICATED", p.stderr)
        p = self.cli("model", "import", "m1", out, expect=1)
        self.assertIn("UNAUTHENTICATED", p.stderr)
        # the admin sees it as tc/m1; the default team's list does not have it
        self.assertIn("m1", self.cli("model", "list", token_file=member).stdout)
        self.admin("model", "get", "tc/m1")
        self.cli("model", "delete", "m1", token_file=member)
        self.admin("team", "delete", "tc")

    def test_context_against_daemon(self):
        env = clean_env()
        run_cli(["config", "set-context", "local", "--server", self.d.address, "--token-file",
                 self.admin_file], env, test=self)
        got = json.loads(run_cli(["--json", "whoami"], env, test=self).stdout)
        self.assertEqual(got["role"], "admin")
        # a bad FLUXION_TOKEN overrides the context's good one
        run_cli(["whoami"], dict(env, FLUXION_TOKEN="fxn_" + "1" * 64), expect=1, test=self)

    def test_python_admin(self):
        with fluxion_client.Client(self.d.address, token=self.admin_secret) as c:
            self.assertEqual(c.whoami().role, "admin")
            c.create_team("tpy", display_name="Py", max_models=2)
            self.assertIn("tpy", [t.name for t in c.list_teams()])
            t = c.update_team("tpy", max_dataset_bytes=1 << 20)
            self.assertEqual((t.quota.max_models, t.quota.max_dataset_bytes), (2, 1 << 20))
            made = c.create_token("bot", role="member", team="tpy")
            self.assertTrue(made.secret.startswith("fxn_"))
            with fluxion_client.Client(self.d.address, token=made.secret) as m:
                self.assertEqual((m.whoami().team, m.whoami().role), ("tpy", "member"))
                with self.assertRaises(fluxion_client.PermissionDenied):
                    m.list_teams()
                c.revoke_token(made.token.id)
                with self.assertRaises(fluxion_client.Unauthenticated):
                    m.whoami()
            self.assertEqual([t.name for t in c.list_tokens(team="tpy")], [])
            c.delete_team("tpy")
        with fluxion_client.Client(self.d.address, token="") as anon:
            with self.assertRaises(fluxion_client.Unauthenticated):
                anon.whoami()


if __name__ == "__main__":
    fxtest.main()
