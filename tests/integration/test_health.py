"""grpc.health.v1.Health (the published schema, stubs generated from
proto/grpc_health/v1/health.proto as grpcio-health-checking's are): what
Kubernetes gRPC probes and grpc-health-probe call. No credentials needed,
even with auth on; SERVING while the daemon takes calls, NOT_SERVING once a
drain began; Check of an unknown service NOT_FOUND, Watch of one
SERVICE_UNKNOWN."""
import os
import signal
import sys
import threading

import grpc

import fxtest
from fxtest import C, DaemonTest, start_with_admin_token

# FX_HEALTH_PYPI=1 (ctest integ_health_pypi, on the python3 with PyPI's
# packages): the client is grpcio-health-checking itself, not our stubs,
# as grpc-health-probe and the kubelet are independent clients.
PYPI = os.environ.get("FX_HEALTH_PYPI") == "1"
try:
    if PYPI:
        ours = [p for p in sys.path if os.path.isdir(os.path.join(p, "grpc_health"))
                and "site-packages" not in p]
        sys.path[:] = [p for p in sys.path if p not in ours]
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    if PYPI:
        assert "site-packages" in health_pb2.__file__, health_pb2.__file__
        sys.path.extend(ours)
except ImportError as e:  # pragma: no cover
    print("skipped: %s" % e)
    raise SystemExit(fxtest.SKIP)

S = health_pb2.HealthCheckResponse
SERVICES = ["", "fluxion.v1.ModelService", "fluxion.v1.DatasetService",
            "fluxion.v1.TrainingService", "fluxion.v1.ClusterService",
            "fluxion.v1.AdminService", "fluxion.v1.PeerService", "inference.GRPCInferenceService",
            "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"]


class HealthTest(DaemonTest):
    @classmethod
    def setUpClass(cls):
        # auth on: a probe still needs no token
        cls.d, _ = start_with_admin_token(name="health")
        cls.ch = grpc.insecure_channel(cls.d.address)
        cls.h = health_pb2_grpc.HealthStub(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.d.stop()

    def test_check(self):
        for name in SERVICES:
            with self.subTest(service=name):
                r = self.h.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
                self.assertEqual(r.status, S.SERVING)
        with self.assertRaises(grpc.RpcError) as cm:
            self.h.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        self.assertEqual(cm.exception.code(), C.NOT_FOUND)
        self.assertIn("no.such.Service", cm.exception.details())

    def test_list(self):
        if not hasattr(self.h, "List"):  # grpcio-health-checking before List
            self.skipTest("this grpcio-health-checking has no List")
        r = self.h.List(health_pb2.HealthListRequest(), timeout=10)
        self.assertEqual(sorted(r.statuses), sorted(SERVICES))
        self.assertTrue(all(v.status == S.SERVING for v in r.statuses.values()))

    def test_watch_unknown(self):
        stream = self.h.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"),
                              timeout=10)
        self.assertEqual(next(iter(stream)).status, S.SERVICE_UNKNOWN)
        stream.cancel()


class DrainTest(DaemonTest):
    def test_watch_sees_the_drain(self):
        d = fxtest.Daemon(["--grace-seconds", "2"], name="health-drain").start()
        ch = grpc.insecure_channel(d.address)
        h = health_pb2_grpc.HealthStub(ch)
        stream = h.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        seen = []
        done = threading.Event()

        def read():
            try:
                for r in stream:
                    seen.append(r.status)
            except grpc.RpcError as e:
                seen.append(e.code())
            done.set()

        t = threading.Thread(target=read)
        t.start()
        for _ in range(100):
            if seen:
                break
            threading.Event().wait(0.05)
        self.assertEqual(seen[:1], [S.SERVING])
        d.signal(signal.SIGTERM)
        self.assertTrue(done.wait(10), "the watch did not end with the drain")
        t.join()
        self.assertEqual(seen[1], S.NOT_SERVING, seen)
        self.assertEqual(seen[-1], C.UNAVAILABLE, seen)
        ch.close()
        self.assertEqual(d.wait_exit(10), 0)
        d.proc = None


if __name__ == "__main__":
    fxtest.main()
