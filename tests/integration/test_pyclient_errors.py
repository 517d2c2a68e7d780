"""fluxion_client's exceptions: one FluxionError subclass per gRPC status,
raised by every Client method (unary, streaming, generators) instead of
grpc.RpcError, checked against a real daemon (NOT_FOUND -> NotFound, ...)."""
import inspect
import unittest

import fxtest
from fxtest import C, DaemonTest, mlp_spec, np, randn

import fluxion_client
from fluxion_client import errors

# Arguments for calling every public Client method; a new method needs a row
# (test_every_method_raises_fluxion_errors fails without one).
SAMPLE_ARGS = {
    "create_model": ("m", mlp_spec()), "get_model": ("m",), "list_models": (),
    "delete_model": ("m",), "export_weights_chunks": ("m",), "export_weights": ("m",),
    "export_arrays": ("m",), "import_weights": ("m", b"x"),
    "export_onnx": ("m",), "import_onnx": ("m", b"x"),
    "set_serving_config": ("m",), "set_canary": ("m", 2, 10),
    "server_live": (), "server_ready": (),
    "server_metadata": (), "model_ready": ("m",), "model_metadata": ("m",),
    "infer_raw": (fluxion_client.infer_request("m", {"x": np.ones((1, 4), np.float32)}),),
    "infer": ("m", {"x": np.ones((1, 4), np.float32)}), "model_statistics": (),
    "repository_index": (), "load_model": ("m",), "unload_model": ("m",), "status": (),
    "get_queue": (), "upload_dataset": ("d", {"x": np.ones((2, 2), np.float32)}),
    "get_dataset": ("d",), "list_datasets": (), "delete_dataset": ("d",),
    "submit_job": ({"model": "m"},), "get_job": ("1",), "list_jobs": (), "cancel_job": ("1",),
    "update_job": ("1", "high"), "resume_job": ("1",), "update_model_spec": ("m", mlp_spec()), "watch_job": ("1",), "wait_job": ("1",), "whoami": (),
    "create_team": ("t",), "get_team": (), "list_teams": (), "update_team": ("t", "T"),
    "set_team_quota": ("t",), "delete_team": ("t",), "create_token": ("n", "viewer"),
    "list_tokens": (), "revoke_token": (1,), "add_cert_principal": ("CN=x", "t", "viewer"),
    "list_cert_principals": (), "remove_cert_principal": ("CN=x",),
    "promote": ("m", 1), "rollback": ("m",), "set_alias": ("m", "a", 1),
    "delete_alias": ("m", "a"), "pin": ("m", 1), "unpin": ("m", 1),
    "set_retention": ("m", 2), "delete_version": ("m", 1),
}
NOT_CALLS = {"close", "wait_ready"}


def public_methods():
    return sorted(n for n, v in inspect.getmembers(fluxion_client.Client, inspect.isfunction)
                  if not n.startswith("_"))


def call(client, name):
    r = getattr(client, name)(*SAMPLE_ARGS[name])
    if inspect.isgenerator(r):
        list(r)
    return r


class ClassesTest(unittest.TestCase):
    def test_one_class_per_status(self):
        codes = [c for c in fxtest.grpc.StatusCode if c is not C.OK]
        self.assertEqual(set(errors.BY_CODE), set(codes))
        self.assertEqual(len(set(errors.BY_CODE.values())), len(codes))
        for code, cls in errors.BY_CODE.items():
            e = errors.error_for(code, "msg", "get_model")
            self.assertIs(type(e), cls)
            self.assertIsInstance(e, fluxion_client.FluxionError)
            self.assertNotIsInstance(e, fxtest.grpc.RpcError)
            self.assertEqual((e.code, e.message, e.method), (code, "msg", "get_model"))
            self.assertIs(getattr(fluxion_client, cls.__name__), cls)   # exported
            self.assertIn(cls.__name__, fluxion_client.__all__)

    def test_every_method_raises_fluxion_errors(self):
        """No daemon at the address: each call fails with Unavailable (or
        DeadlineExceeded), never a bare grpc.RpcError."""
        missing = sorted(set(public_methods()) - set(SAMPLE_ARGS) - NOT_CALLS)
        self.assertEqual(missing, [], "add sample arguments for these methods")
        with socket_closed_port() as port:
            c = fluxion_client.Client("127.0.0.1:%d" % port, timeout=5)
            for name in sorted(SAMPLE_ARGS):
                with self.subTest(method=name):
                    with self.assertRaises(fluxion_client.FluxionError) as cm:
                        call(c, name)
                    self.assertIn(type(cm.exception), (fluxion_client.Unavailable,
                                                       fluxion_client.DeadlineExceeded))
            with self.assertRaises(fluxion_client.ConnectTimeout):
                c.wait_ready(0.2)
            c.close()


class socket_closed_port:
    """A loopback port nothing listens on (bound, then closed)."""

    def __enter__(self):
        s = fxtest.socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc):
        return False


class DaemonErrorsTest(DaemonTest):
    def expect(self, cls, code, fn, *args, contains=(), method=None, **kw):
        with self.assertRaises(cls) as cm:
            r = fn(*args, **kw)
            if inspect.isgenerator(r):
                list(r)
        e = cm.exception
        self.assertEqual(e.code, code, e)
        for s in (contains,) if isinstance(contains, str) else contains:
            self.assertIn(s, e.message)
        if method:
            self.assertEqual(e.method, method)
        return e

    def test_not_found(self):
        c = self.c
        self.expect(fluxion_client.NotFound, C.NOT_FOUND, c.get_model, "nope",
                    contains="nope", method="get_model")
        self.expect(fluxion_client.NotFound, C.NOT_FOUND, c.export_weights, "nope")  # stream
        self.expect(fluxion_client.NotFound, C.NOT_FOUND, c.get_dataset, "nope")
        self.expect(fluxion_client.NotFound, C.NOT_FOUND, c.get_job, "987654")
        self.expect(fluxion_client.NotFound, C.NOT_FOUND, c.watch_job, "987654",
                    method="watch_job")                                          # generator
        self.expect(fluxion_client.NotFound, C.NOT_FOUND, c.import_weights, "nope",
                    {"w": np.ones(2, np.float32)})                               # client stream

    def test_already_exists_and_invalid_argument(self):
        self.c.create_model("dup", mlp_spec(), seed=1)
        self.expect(fluxion_client.AlreadyExists, C.ALREADY_EXISTS, self.c.create_model,
                    "dup", mlp_spec(), contains="dup")
        self.expect(fluxion_client.InvalidArgument, C.INVALID_ARGUMENT, self.c.infer, "dup",
                    {"x": np.ones((2, 5), np.float32)}, contains="x", method="infer")
        bad = mlp_spec()
        bad["nodes"][0]["op"] = "no_such_op"
        self.expect(fluxion_client.InvalidArgument, C.INVALID_ARGUMENT, self.c.create_model,
                    "bad", bad, contains="no_such_op")

    def test_failed_precondition(self):
        self.c.create_model("cold", mlp_spec(), seed=1, no_load=True)
        self.expect(fluxion_client.FailedPrecondition, C.FAILED_PRECONDITION, self.c.infer,
                    "cold", {"x": randn(0, 1, 4)}, contains="not loaded")

    def test_client_side_limits(self):
        self.c.create_model("lim", mlp_spec(), seed=1)
        small = self.d.client(max_message_mb=1)
        self.expect(fluxion_client.ResourceExhausted, C.RESOURCE_EXHAUSTED, small.infer, "lim",
                    {"x": randn(1, 1 << 17, 4)}, raw=True)
        hasty = self.d.client(timeout=0.001)
        self.expect(fluxion_client.DeadlineExceeded, C.DEADLINE_EXCEEDED, hasty.infer, "lim",
                    {"x": randn(2, 1 << 17, 4)}, raw=True)


class AuthErrorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d, cls.secret = fxtest.start_with_admin_token(name="pyclient-auth")

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_unauthenticated_and_permission_denied(self):
        admin = self.d.client(token=self.secret)
        viewer = self.d.client(token=admin.create_token("v", role="viewer").secret)
        with self.assertRaises(fluxion_client.PermissionDenied) as cm:
            viewer.create_model("m", mlp_spec())
        self.assertEqual(cm.exception.code, C.PERMISSION_DENIED)
        with self.assertRaises(fluxion_client.PermissionDenied):
            viewer.list_teams()
        stranger = self.d.client(token="fxn_" + "0" * 64)
        with self.assertRaises(fluxion_client.Unauthenticated) as cm:
            stranger.list_models()
        self.assertEqual(cm.exception.code, C.UNAUTHENTICATED)
        nobody = self.d.client(token="")
        with self.assertRaises(fluxion_client.Unauthenticated):
            nobody.get_model("m")


if __name__ == "__main__":
    fxtest.main()
