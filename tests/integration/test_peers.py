"""The internal PeerService between two fluxiond (docs/distributed.md,
"Peers"): A and B on free loopback ports, peered with each other through
--peers and a shared --peer-token-file. Hello, the rendezvous KV (set,
get, wait, timeout), who may call the service (the peer secret only: a
wrong or missing one, an admin, a daemon without the secret), unknown
peers, StartRank's size checks, and the start-up checks of the flags."""
import os
import secrets
import socket
import subprocess
import threading
import time
import unittest

import fxtest
from fxtest import C, bearer

from fluxion.v1 import peer_pb2, peer_pb2_grpc, training_pb2, model_pb2


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def peer_stub(d):
    return peer_pb2_grpc.PeerServiceStub(fxtest.channel(d.address))


class PeersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        work = fxtest._WORK
        cls.secret = secrets.token_hex(32)
        cls.token_file = write(os.path.join(work, "peer.token"), cls.secret + "\n")
        pa, pb = free_port(), free_port()
        # A: authentication on (an admin token), B: local mode; each names
        # the other. B's --max-import-mb 1 makes the size checks cheap.
        cls.a, cls.admin = fxtest.start_with_admin_token(
            name="A", args=["--listen", "127.0.0.1:%d" % pa, "--node-name", "A",
                            "--peers", "B=127.0.0.1:%d,A=127.0.0.1:%d" % (pb, pa),
                            "--peer-token-file", cls.token_file])
        cls.b = fxtest.Daemon(["--listen", "127.0.0.1:%d" % pb, "--node-name", "B",
                               "--peers", "A=127.0.0.1:%d" % pa,
                               "--peer-token-file", cls.token_file,
                               "--max-import-mb", "1"], name="B").start()
        cls.pa, cls.pb = peer_stub(cls.a), peer_stub(cls.b)
        cls.md = bearer(cls.secret)

    @classmethod
    def tearDownClass(cls):
        cls.a.stop()
        cls.b.stop()

    def code(self, code, fn, *args, contains=(), **kw):
        with self.assertRaises(fxtest.grpc.RpcError) as cm:
            fn(*args, timeout=30, **kw)
        e = cm.exception
        self.assertEqual(e.code(), code, e.details())
        for s in (contains,) if isinstance(contains, str) else contains:
            self.assertIn(s, e.details())
        return e

    def test_hello_both_ways(self):
        r = self.pb.Hello(peer_pb2.PeerHelloRequest(node="A", version="x"), metadata=self.md,
                          timeout=30)
        self.assertEqual(r.node, "B")
        self.assertIn("cpu", list(r.devices))
        self.assertTrue(r.version)
        r = self.pa.Hello(peer_pb2.PeerHelloRequest(node="B"), metadata=self.md, timeout=30)
        self.assertEqual(r.node, "A")
        # A greets its peers at start over its own outbound channel (B
        # started after A: the greeting may have missed it; B's reached A)
        self.assertTrue(fxtest.wait_log(self.b, 'peer answers" peer=A', 20), self.b.log_tail())

    def test_unknown_peer(self):
        self.code(C.NOT_FOUND, self.pb.Hello, peer_pb2.PeerHelloRequest(node="Z"),
                  metadata=self.md, contains="unknown peer 'Z'")
        # a daemon listed under its own name is not its own peer
        self.code(C.NOT_FOUND, self.pa.Hello, peer_pb2.PeerHelloRequest(node="A"),
                  metadata=self.md, contains="unknown peer 'A'")

    def test_kv_set_get_wait_timeout(self):
        key = "w/job-1/0/rank0"
        self.pa.KvSet(peer_pb2.PeerKvSetRequest(key=key, value=b"\x00abc"), metadata=self.md,
                      timeout=30)
        r = self.pa.KvGet(peer_pb2.PeerKvGetRequest(key=key, timeout_ms=1000),
                          metadata=self.md, timeout=30)
        self.assertEqual(r.value, b"\x00abc")
        # a get waits for a set that comes later
        got = {}

        def getter():
            got["r"] = self.pa.KvGet(peer_pb2.PeerKvGetRequest(key="w/job-1/0/late",
                                                               timeout_ms=20000),
                                     metadata=self.md, timeout=30)
        t = threading.Thread(target=getter)
        t.start()
        time.sleep(0.3)
        self.pa.KvSet(peer_pb2.PeerKvSetRequest(key="w/job-1/0/late", value=b"v"),
                      metadata=self.md, timeout=30)
        t.join(30)
        self.assertEqual(got["r"].value, b"v")
        # and gives up at its timeout
        t0 = time.monotonic()
        self.code(C.DEADLINE_EXCEEDED, self.pa.KvGet,
                  peer_pb2.PeerKvGetRequest(key="w/job-1/0/never", timeout_ms=300),
                  metadata=self.md, contains="w/job-1/0/never")
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        # bad keys and sizes
        self.code(C.INVALID_ARGUMENT, self.pa.KvSet, peer_pb2.PeerKvSetRequest(key="x", value=b""),
                  metadata=self.md, contains="prefix")
        self.code(C.INVALID_ARGUMENT, self.pa.KvSet, peer_pb2.PeerKvSetRequest(key=""),
                  metadata=self.md, contains="key")
        self.code(C.INVALID_ARGUMENT, self.pa.KvSet,
                  peer_pb2.PeerKvSetRequest(key="w/" + "k" * 600), metadata=self.md,
                  contains="512")
        self.code(C.INVALID_ARGUMENT, self.pa.KvSet,
                  peer_pb2.PeerKvSetRequest(key="w/big", value=b"x" * ((1 << 20) + 1)),
                  metadata=self.md, contains="value")
        self.code(C.INVALID_ARGUMENT, self.pa.KvGet,
                  peer_pb2.PeerKvGetRequest(key="w/a", timeout_ms=10 ** 9), metadata=self.md,
                  contains="timeout_ms")

    def test_who_may_call(self):
        req = peer_pb2.PeerHelloRequest(node="A")
        # A has authentication on: no credentials, an unknown token
        self.code(C.UNAUTHENTICATED, self.pa.Hello, req)
        self.code(C.UNAUTHENTICATED, self.pa.Hello, req, metadata=bearer(secrets.token_hex(32)))
        # its admin: authenticated, but not a peer
        self.code(C.PERMISSION_DENIED, self.pa.Hello, req, metadata=bearer(self.admin),
                  contains="needs peer")
        # B is in local mode: whoever calls is a local admin, not a peer
        self.code(C.PERMISSION_DENIED, self.pb.Hello, req, contains="needs peer")
        self.code(C.PERMISSION_DENIED, self.pb.Hello, req, metadata=bearer("y" * 40),
                  contains="needs peer")
        # the peer secret opens nothing else
        s = fxtest.stubs(fxtest.channel(self.a.address))
        self.code(C.PERMISSION_DENIED, s.models.ListModels, s.model_pb2.ListModelsRequest(),
                  metadata=self.md, contains="role 'peer'")
        s = fxtest.stubs(fxtest.channel(self.b.address))
        self.code(C.PERMISSION_DENIED, s.training.ListJobs, s.training_pb2.ListJobsRequest(),
                  metadata=self.md, contains="role 'peer'")

    def test_garbage(self):
        """Bytes that do not parse: INVALID_ARGUMENT from every unary method,
        and the peer's daemon goes on."""
        ch = fxtest.channel(self.b.address)
        for m in ("Hello", "KvSet", "KvGet", "StopRank", "RankStatus"):
            call = ch.unary_unary("/fluxion.v1.PeerService/%s" % m)
            for g in (b"\x0a\x05ab", b"\xff\xff\xff\xff", b"\x2a\xff\xff\xff\xff\x0f"):
                with self.assertRaises(fxtest.grpc.RpcError) as cm:
                    call(g, metadata=self.md, timeout=10)
                self.assertEqual(cm.exception.code(), C.INVALID_ARGUMENT, m)
        sr = ch.stream_unary("/fluxion.v1.PeerService/StartRank")
        with self.assertRaises(fxtest.grpc.RpcError) as cm:
            sr(iter([b"\xff\xff"]), metadata=self.md, timeout=10)
        self.assertEqual(cm.exception.code(), C.INVALID_ARGUMENT)
        ch.close()
        self.assertTrue(self.b.alive())

    def start_rank(self, stub, msgs, timeout=30):
        return stub.StartRank(iter(msgs), metadata=self.md, timeout=timeout)

    def first(self, **kw):
        a = peer_pb2.RankAssignment(job_id="j1", attempt=1, rank=1, world=2, backend="gloo",
                                    comm_prefix="w/j1/1", coordinator="A", device="cpu")
        return peer_pb2.StartRankChunk(assignment=a, spec=training_pb2.JobSpec(),
                                       model=model_pb2.ModelSpec(), **kw)

    def test_start_rank_sizes(self):
        # declared over B's --max-import-mb 1: refused before anything is buffered
        self.code(C.RESOURCE_EXHAUSTED, self.start_rank, self.pb,
                  [self.first(weights_len=2 << 20)], contains=("--max-import-mb", "weights"))
        # one chunk over 4 MiB
        self.code(C.RESOURCE_EXHAUSTED, self.start_rank, self.pb,
                  [self.first(train_len=5 << 20),
                   peer_pb2.StartRankChunk(train=b"x" * (5 << 20))],
                  contains="at most 4194304")
        # more bytes than declared
        self.code(C.INVALID_ARGUMENT, self.start_rank, self.pb,
                  [self.first(weights_len=10), peer_pb2.StartRankChunk(weights=b"x" * 11)],
                  contains="more than the 10 declared")
        # fewer
        self.code(C.INVALID_ARGUMENT, self.start_rank, self.pb,
                  [self.first(weights_len=10), peer_pb2.StartRankChunk(weights=b"x" * 4)],
                  contains="4 bytes arrived, 10 declared")
        # no assignment; a coordinator that is not a peer
        self.code(C.INVALID_ARGUMENT, self.start_rank, self.pb,
                  [peer_pb2.StartRankChunk(weights_len=1)], contains="assignment")
        bad = self.first()
        bad.assignment.coordinator = "Z"
        self.code(C.FAILED_PRECONDITION, self.start_rank, self.pb, [bad],
                  contains="unknown peer 'Z'")
        # ranks that do not exist
        self.code(C.NOT_FOUND, self.pb.StopRank, peer_pb2.StopRankRequest(rank_id="nope"),
                  metadata=self.md)
        self.code(C.NOT_FOUND, self.pb.RankStatus, peer_pb2.RankStatusRequest(rank_id="nope"),
                  metadata=self.md)


class TlsPeersTest(unittest.TestCase):
    """With --tls-cert, the peer channels use TLS and verify the peer
    against --tls-client-ca: B greets A over TLS at its start."""

    def test_tls_greeting(self):
        w = os.path.join(fxtest._WORK, "tls")
        os.makedirs(w, exist_ok=True)
        ca = fxtest.make_ca(w, "ca")
        cert, key = fxtest.make_cert(w, "server", ca, "fluxiond", server=True)
        secret = secrets.token_hex(32)
        tok = write(os.path.join(w, "peer.token"), secret)
        pa, pb = free_port(), free_port()
        tls = ["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca[0],
               "--peer-token-file", tok]
        a = fxtest.Daemon(["--listen", "127.0.0.1:%d" % pa, "--node-name", "A",
                           "--peers", "B=127.0.0.1:%d" % pb] + tls, name="tlsA").start()
        b = fxtest.Daemon(["--listen", "127.0.0.1:%d" % pb, "--node-name", "B",
                           "--peers", "A=127.0.0.1:%d" % pa] + tls, name="tlsB").start()
        try:
            self.assertTrue(fxtest.wait_log(b, 'peer answers" peer=A', 20), b.log_tail())
            ch = fxtest.channel(a.address, ca=ca[0])
            r = peer_pb2_grpc.PeerServiceStub(ch).Hello(peer_pb2.PeerHelloRequest(node="B"),
                                                         metadata=bearer(secret),
                                                         timeout=30)
            self.assertEqual(r.node, "A")
            ch.close()
        finally:
            a.stop()
            b.stop()


class NoPeerTokenTest(fxtest.DaemonTest):
    """A daemon without --peer-token-file answers PeerService
    FAILED_PRECONDITION, whatever the caller sends."""

    def test_refused(self):
        st = peer_stub(self.d)
        for md in ((), bearer("z" * 64)):
            with self.assertRaises(fxtest.grpc.RpcError) as cm:
                st.Hello(peer_pb2.PeerHelloRequest(node="A"), metadata=md, timeout=30)
            self.assertEqual(cm.exception.code(), C.FAILED_PRECONDITION)
            self.assertIn("no --peer-token-file", cm.exception.details())


class FlagsTest(unittest.TestCase):
    """Bad peer flags stop the start with a message."""

    def run_daemon(self, *args):
        p = subprocess.run([fxtest.FLUXIOND, "--listen", "127.0.0.1:0", "--data-dir",
                            os.path.join(fxtest._WORK, "flags-%d" % time.monotonic_ns())]
                           + list(args), capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        return p.stderr

    def test_bad_flags(self):
        w = fxtest._WORK
        good = write(os.path.join(w, "good.token"), "s" * 40)
        self.assertIn("--peer-token-file", self.run_daemon("--peers", "127.0.0.1:1"))
        self.assertIn("empty", self.run_daemon("--peer-token-file",
                                               write(os.path.join(w, "e.token"), "\n")))
        self.assertIn("visible ASCII", self.run_daemon(
            "--peer-token-file", write(os.path.join(w, "sp.token"), "a b" * 20)))
        self.assertIn("32..256", self.run_daemon(
            "--peer-token-file", write(os.path.join(w, "short.token"), "abc")))
        self.assertIn("--peer-token-file", self.run_daemon(
            "--peer-token-file", os.path.join(w, "missing.token")))
        self.assertIn("not HOST:PORT", self.run_daemon("--peer-token-file", good,
                                                       "--peers", "B=nohostport"))
        self.assertIn("named twice", self.run_daemon("--peer-token-file", good,
                                                     "--peers", "B=h:1,B=h:2"))
        pf = write(os.path.join(w, "peers.txt"), "# the set\nB=h:1\n\nbad entry here\n")
        self.assertIn("peers.txt:4", self.run_daemon("--peer-token-file", good,
                                                     "--peers-file", pf))

    @staticmethod
    def read(path):
        with open(path) as f:
            return f.read().strip()

    def test_peers_file_and_statefulset_names(self):
        """Names that do not resolve at start (a StatefulSet's pods that are
        not up yet) are fine: they are resolved when a call connects."""
        w = fxtest._WORK
        tok = write(os.path.join(w, "sts.token"), secrets.token_hex(20))
        pf = write(os.path.join(w, "sts-peers.txt"),
                   "# fluxiond set\nfluxiond-0.fluxiond.default.svc:50051\n"
                   "fluxiond-1.fluxiond.default.svc:50051  # not up yet\n")
        d = fxtest.Daemon(["--peers-file", pf, "--peer-token-file", tok,
                           "--node-name", "fluxiond-0.fluxiond.default.svc:50051"],
                          name="sts").start()
        try:
            # its own entry skipped, the other one tried and logged
            self.assertTrue(fxtest.wait_log(d, "peer=fluxiond-1.fluxiond.default.svc:50051", 20),
                            d.log_tail())
            with open(d.log_path) as f:
                self.assertNotIn("peer=fluxiond-0.", f.read())
            st = peer_stub(d)
            r = st.Hello(peer_pb2.PeerHelloRequest(node="fluxiond-1.fluxiond.default.svc:50051"),
                         metadata=bearer(self.read(tok)), timeout=30)
            self.assertEqual(r.node, "fluxiond-0.fluxiond.default.svc:50051")
        finally:
            d.stop()


if __name__ == "__main__":
    fxtest.main()
