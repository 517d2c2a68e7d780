"""TLS and mTLS on a real fluxiond (issue 12), with a certificate authority
and certificates made by the test with the openssl CLI: a grpcio client
with the right CA works, one without TLS or trusting another CA does not;
client certificates (--tls-client-ca) map to a team and role through
AdminService.AddCertPrincipal, a certificate from another CA is refused, a
token stands in for a missing certificate, and a token wins over a
certificate; SIGHUP reloads the certificate for new connections while an
open one keeps working (and a bad file on reload keeps the old one); a
non-loopback listen needs TLS (or --insecure, with a warning), and with TLS
but no token yet the daemon writes DATA_DIR/admin.token itself."""
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import fxtest
from fxtest import C, bearer, create_token, make_ca, make_cert, mlp_spec, stubs
from fluxion_client.spec import model_spec

TIMEOUT = 30
FAIL_TIMEOUT = 10   # a call over a connection that cannot be made fails well before this


def call_code(fn, *args, **kw):
    """(code, details) of a call; (OK, "") when it succeeds."""
    try:
        fn(*args, **kw)
        return C.OK, ""
    except fxtest.grpc.RpcError as e:
        return e.code(), e.details() or ""


class Certs:
    """Two CAs and the certificates the tests use, in a temporary directory.
    The daemon's certificate and key are copied to tls.crt / tls.key so the
    reload test can replace them."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tls-", dir=fxtest._WORK)
        self.ca = make_ca(self.dir, "ca", "Fluxion test CA")
        self.other_ca = make_ca(self.dir, "other-ca", "Another CA")
        self.server = make_cert(self.dir, "server-1", self.ca, "server-1", server=True,
                                serial=1001)
        self.alice = make_cert(self.dir, "alice", self.ca, "alice")
        self.bob = make_cert(self.dir, "bob", self.ca, "bob")                 # not mapped
        self.mallory = make_cert(self.dir, "mallory", self.other_ca, "alice")  # alice, wrong CA

    def install(self, pair, name):
        """Copies a (crt, key) pair to NAME.crt / NAME.key atomically (write,
        then rename) and returns the new pair."""
        out = (os.path.join(self.dir, name + ".crt"), os.path.join(self.dir, name + ".key"))
        for src, dst in zip(pair, out):
            with open(src, "rb") as f:
                data = f.read()
            with open(dst + ".tmp", "wb") as f:
                f.write(data)
            os.rename(dst + ".tmp", dst)
        return out


def whoami(ch, md=()):
    """AdminService.WhoAmI: who the daemon takes the caller for."""
    s = stubs(ch)
    return s.admin.WhoAmI(s.admin_pb2.WhoAmIRequest(), metadata=md, timeout=FAIL_TIMEOUT)


def live(ch, md=()):
    """ServerLive (any authenticated caller): for checks of the connection
    itself."""
    s = stubs(ch)
    return s.inference.ServerLive(s.infer_pb2.ServerLiveRequest(), metadata=md,
                                  timeout=FAIL_TIMEOUT).live


def peer_certificate(port, cafile):
    """The certificate the daemon presents to a new TLS connection, checked
    against cafile only (ssl raises when it does not verify)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=FAIL_TIMEOUT) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert()


def common_name(cert):
    for rdn in cert["subject"]:
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


class TlsTest(unittest.TestCase):
    """One daemon with --tls-cert/--tls-key (no client CA)."""

    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.tls = cls.certs.install(cls.certs.server, "tls")
        cls.d, cls.admin = fxtest.start_with_admin_token(
            name="Tls", args=["--tls-cert", cls.tls[0], "--tls-key", cls.tls[1]])
        cls.channels = []

    @classmethod
    def tearDownClass(cls):
        for ch in cls.channels:
            ch.close()
        cls.d.stop()

    def channel(self, **kw):
        ch = fxtest.channel(self.d.address, **kw)
        self.channels.append(ch)
        return ch

    def test_right_ca_works(self):
        self.assertTrue(live(self.channel(ca=self.certs.ca[0]), bearer(self.admin)))
        r = whoami(self.channel(ca=self.certs.ca[0]), bearer(self.admin))
        self.assertEqual((r.role, r.tls, r.local_mode), ("admin", True, False))

    def test_right_ca_without_token_is_unauthenticated(self):
        code, msg = call_code(live, self.channel(ca=self.certs.ca[0]))
        self.assertEqual(code, C.UNAUTHENTICATED, msg)

    def test_plaintext_client_fails(self):
        code, msg = call_code(live, self.channel(), bearer(self.admin))
        self.assertEqual(code, C.UNAVAILABLE, msg)
        self.assertTrue(self.d.alive())

    def test_wrong_ca_fails(self):
        code, msg = call_code(live, self.channel(ca=self.certs.other_ca[0]), bearer(self.admin))
        self.assertEqual(code, C.UNAVAILABLE, msg)
        self.assertTrue(self.d.alive())

    def test_served_certificate(self):
        cert = peer_certificate(self.d.port, self.certs.ca[0])
        self.assertEqual(common_name(cert), "server-1")
        self.assertEqual(int(cert["serialNumber"], 16), 1001)


class MutualTlsTest(unittest.TestCase):
    """A daemon with --tls-client-ca: client certificates of that CA are
    principals once mapped; a token works without one."""

    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.d, cls.admin = fxtest.start_with_admin_token(
            name="MutualTls", args=["--tls-cert", cls.certs.server[0], "--tls-key",
                                    cls.certs.server[1], "--tls-client-ca", cls.certs.ca[0]])
        cls.channels = []
        s = stubs(cls.channel_of(ca=cls.certs.ca[0]))
        md = bearer(cls.admin)
        for team in ("a", "b"):
            s.admin.CreateTeam(s.admin_pb2.CreateTeamRequest(name=team), metadata=md,
                               timeout=TIMEOUT)
        p = s.admin.AddCertPrincipal(s.admin_pb2.AddCertPrincipalRequest(
            subject="CN=alice", team="a", role="member"), metadata=md, timeout=TIMEOUT)
        assert (p.subject, p.team, p.role) == ("CN=alice", "a", "member"), p
        cls.viewer_b, _ = create_token(s, cls.admin, "b", "viewer-b", "viewer")

    @classmethod
    def tearDownClass(cls):
        for ch in cls.channels:
            ch.close()
        cls.d.stop()

    @classmethod
    def channel_of(cls, pair=None, ca=None):
        ch = fxtest.channel(cls.d.address, ca=ca or cls.certs.ca[0],
                            cert=pair[0] if pair else None, key=pair[1] if pair else None)
        cls.channels.append(ch)
        return ch

    def test_mapped_certificate_without_token(self):
        ch = self.channel_of(self.certs.alice)
        r = whoami(ch)
        self.assertEqual((r.team, r.role, r.principal, r.tls), ("a", "member", "cert:CN=alice",
                                                                True))
        s = stubs(ch)   # a member writes its team's objects
        s.models.CreateModel(s.model_pb2.CreateModelRequest(name="alice-mlp",
                                                            spec=model_spec(mlp_spec()),
                                                            no_load=True), timeout=TIMEOUT)
        names = [m.name for m in s.models.ListModels(s.model_pb2.ListModelsRequest(),
                                                     timeout=TIMEOUT).models]
        self.assertIn("alice-mlp", names)
        admin_names = [m.name for m in s.models.ListModels(
            s.model_pb2.ListModelsRequest(), metadata=bearer(self.admin), timeout=TIMEOUT).models]
        self.assertIn("a/alice-mlp", admin_names)
        listed = s.admin.ListCertPrincipals(s.admin_pb2.ListCertPrincipalsRequest(),
                                            metadata=bearer(self.admin), timeout=TIMEOUT)
        self.assertIn(("CN=alice", "a", "member"),
                      [(p.subject, p.team, p.role) for p in listed.principals])

    def test_unmapped_certificate_is_unauthenticated(self):
        code, msg = call_code(live, self.channel_of(self.certs.bob))
        self.assertEqual(code, C.UNAUTHENTICATED, msg)

    def test_certificate_of_another_ca_fails(self):
        """mallory's certificate says CN=alice but another CA signed it:
        the handshake is refused (or, at the least, it is not alice)."""
        code, msg = call_code(live, self.channel_of(self.certs.mallory))
        self.assertIn(code, (C.UNAVAILABLE, C.UNAUTHENTICATED), msg)
        self.assertTrue(self.d.alive())

    def test_token_without_certificate(self):
        self.assertTrue(live(self.channel_of(), bearer(self.admin)))
        r = whoami(self.channel_of(), bearer(self.admin))
        self.assertEqual((r.role, r.tls), ("admin", True))
        self.assertTrue(r.principal.startswith("token:"), r.principal)

    def test_neither_token_nor_certificate(self):
        code, msg = call_code(live, self.channel_of())
        self.assertEqual(code, C.UNAUTHENTICATED, msg)

    def test_token_wins_over_certificate(self):
        r = whoami(self.channel_of(self.certs.alice), bearer(self.viewer_b))
        self.assertEqual((r.team, r.role, r.principal), ("b", "viewer", "token:viewer-b"))

    def test_removed_principal_fails_next_call(self):
        s = stubs(self.channel_of())
        md = bearer(self.admin)
        s.admin.AddCertPrincipal(s.admin_pb2.AddCertPrincipalRequest(
            subject="CN=bob", team="b", role="viewer"), metadata=md, timeout=TIMEOUT)
        bob = self.channel_of(self.certs.bob)
        r = whoami(bob)
        self.assertEqual((r.team, r.role, r.principal), ("b", "viewer", "cert:CN=bob"))
        s.admin.RemoveCertPrincipal(s.admin_pb2.RemoveCertPrincipalRequest(subject="CN=bob"),
                                    metadata=md, timeout=TIMEOUT)
        code, msg = call_code(whoami, bob)
        self.assertEqual(code, C.UNAUTHENTICATED, msg)


class RequireClientCertTest(unittest.TestCase):
    """--tls-require-client-cert: no certificate, no handshake (a token
    does not help)."""

    def test_require(self):
        certs = Certs()
        d, admin = fxtest.start_with_admin_token(
            name="RequireCert", args=["--tls-cert", certs.server[0], "--tls-key", certs.server[1],
                                      "--tls-client-ca", certs.ca[0], "--tls-require-client-cert"])
        chans = []
        try:
            def ch(**kw):
                chans.append(fxtest.channel(d.address, **kw))
                return chans[-1]
            code, msg = call_code(live, ch(ca=certs.ca[0]), bearer(admin))
            self.assertEqual(code, C.UNAVAILABLE, msg)
            # A certificate of the CA, not mapped: the handshake passes, the call is refused.
            code, msg = call_code(live, ch(ca=certs.ca[0], cert=certs.bob[0], key=certs.bob[1]))
            self.assertEqual(code, C.UNAUTHENTICATED, msg)
            self.assertTrue(live(ch(ca=certs.ca[0], cert=certs.bob[0], key=certs.bob[1]),
                                 bearer(admin)))
        finally:
            for c in chans:
                c.close()
            d.stop()


class ReloadTest(unittest.TestCase):
    """SIGHUP re-reads the certificate and key: new connections get the new
    certificate, an open connection keeps working; a bad file keeps the
    old ones and the daemon running."""

    def test_sighup_reload(self):
        certs = Certs()
        tls = certs.install(certs.server, "tls")
        d, admin = fxtest.start_with_admin_token(
            name="Reload", args=["--tls-cert", tls[0], "--tls-key", tls[1]])
        md = bearer(admin)
        chans = []

        def ch(ca):
            chans.append(fxtest.channel(d.address, ca=ca))
            return chans[-1]
        try:
            old = ch(certs.ca[0])            # connected before the reload, trusts only ca
            self.assertTrue(live(old, md))

            ca2 = make_ca(certs.dir, "ca-2", "Second CA")
            server2 = make_cert(certs.dir, "server-2", ca2, "server-2", server=True, serial=2002)
            certs.install(server2, "tls")
            d.signal(signal.SIGHUP)

            deadline = time.monotonic() + 10
            while True:   # the reload happens on the daemon's own time
                code, msg = call_code(live, ch(ca2[0]), md)
                if code == C.OK or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(code, C.OK, "a new connection trusting only the new CA: " + msg)
            cert = peer_certificate(d.port, ca2[0])
            self.assertEqual((common_name(cert), int(cert["serialNumber"], 16)),
                             ("server-2", 2002))
            code, msg = call_code(live, ch(certs.ca[0]), md)
            self.assertEqual(code, C.UNAVAILABLE, "a new connection trusting only the old CA")
            # The connection made before the reload (its channel trusts only
            # the old CA, so a reconnection would fail) still works.
            for _ in range(3):
                self.assertTrue(live(old, md))

            # A bad certificate file: the reload fails, the daemon keeps the
            # certificate it has and keeps running.
            with open(tls[0] + ".tmp", "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n"
                        "-----END CERTIFICATE-----\n")
            os.rename(tls[0] + ".tmp", tls[0])
            d.signal(signal.SIGHUP)
            time.sleep(1.0)
            self.assertTrue(d.alive(), d.log_tail())
            self.assertTrue(live(ch(ca2[0]), md))
            self.assertEqual(common_name(peer_certificate(d.port, ca2[0])), "server-2")
            self.assertTrue(live(old, md))
            with open(d.log_path, encoding="utf-8", errors="replace") as f:
                log = f.read()
            self.assertIn(tls[0], log, "the failed reload's log line names the file")
        finally:
            for c in chans:
                c.close()
            d.stop()


class RawDaemon:
    """fluxiond with a --listen of the test's choosing (fxtest.Daemon insists
    on 127.0.0.1): stdout and stderr captured in a file."""

    def __init__(self, args):
        self.data_dir = tempfile.mkdtemp(prefix="data-", dir=fxtest._WORK)
        self.log_path = os.path.join(self.data_dir + ".log")
        self.args = [fxtest.FLUXIOND, "--data-dir", self.data_dir, "--log-level", "debug"] + args
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL)

    def first_line(self, timeout=fxtest.START_TIMEOUT):
        fd, buf = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
        self.stdout = buf.decode("utf-8", "replace")
        return self.stdout.split("\n")[0]

    def output(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return self.stdout + f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(fxtest.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class ListenTest(unittest.TestCase):
    """The loopback rule: a non-loopback address needs TLS and auth."""

    def test_non_loopback_without_tls_refused(self):
        d = RawDaemon(["--listen", "0.0.0.0:0"])
        try:
            line = d.first_line()
            self.assertFalse(line.startswith("listening on"), line)
            rc = d.proc.wait(fxtest.START_TIMEOUT)
            out = d.output()
            self.assertNotEqual(rc, 0, out)
            self.assertIn("--tls-cert", out)
            self.assertIn("--insecure", out)
        finally:
            d.stop()

    def test_non_loopback_insecure_warns(self):
        d = RawDaemon(["--listen", "0.0.0.0:0", "--insecure"])
        try:
            line = d.first_line()
            m = re.match(r"listening on 0\.0\.0\.0:(\d+)$", line)
            self.assertIsNotNone(m, "%r\n%s" % (line, d.output()))
            ch = fxtest.channel("127.0.0.1:%s" % m.group(1))
            try:
                self.assertTrue(live(ch))
            finally:
                ch.close()
            warned = [ln for ln in d.output().splitlines()
                      if "level=warn" in ln and "insecure" in ln.lower()]
            self.assertTrue(warned, "no warning about --insecure in the log:\n" + d.output())
        finally:
            d.stop()
        self.assertEqual(d.proc.returncode, 0)

    def test_non_loopback_tls_writes_admin_token(self):
        """TLS, no token yet: the daemon makes an admin token, writes it to
        DATA_DIR/admin.token (0600), logs the path but not the secret; the
        token works and a call without one is UNAUTHENTICATED."""
        certs = Certs()
        d = RawDaemon(["--listen", "0.0.0.0:0", "--tls-cert", certs.server[0],
                       "--tls-key", certs.server[1]])
        try:
            line = d.first_line()
            m = re.match(r"listening on 0\.0\.0\.0:(\d+)$", line)
            self.assertIsNotNone(m, "%r\n%s" % (line, d.output()))
            path = os.path.join(d.data_dir, "admin.token")
            secret = fxtest.read_token(path)   # checks the mode and the format
            out = d.output()
            self.assertIn(path, out)
            self.assertNotIn(secret[4:], out)
            ch = fxtest.channel("127.0.0.1:%s" % m.group(1), ca=certs.ca[0])
            try:
                self.assertTrue(live(ch, bearer(secret)))
                code, msg = call_code(live, ch)
                self.assertEqual(code, C.UNAUTHENTICATED, msg)
            finally:
                ch.close()
        finally:
            d.stop()
        self.assertEqual(d.proc.returncode, 0)


if __name__ == "__main__":
    fxtest.main()
