"""The HTTP/REST port (fluxiond --http-listen, docs/http.md): the Open
Inference Protocol's HTTP form answered by the same handlers as gRPC.
Health, metadata, inference (compared with the same call over gRPC), the
HTTP status of each error (unknown model 404, bad JSON 400 naming the
problem, 413 past the body limit, 401/403 with auth on), the path checks,
HTTPS with the gRPC port's certificate, and ready turning 503 while the
daemon drains. Debian's python3, urllib and http.client only.

Routes whose answer needs the KServe JSON codec (server/http/kserve.c)
skip themselves while the daemon is built with its stub (501 naming
kserve_stub.c); GetMetrics and ModelConfig likewise until they are built."""
import http.client
import json
import os
import signal
import ssl
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import fxtest
from fxtest import Daemon, create_token, mlp_spec, np, randn, stubs

STUB = b"kserve_stub.c"


def start_http(args=(), name="http", auth=False):
    """A daemon with --http-listen 127.0.0.1:0; its HTTP port read from
    --http-port-file (written before 'listening on' is printed). Returns
    (daemon, admin secret or None); daemon.http_port is set."""
    port_file = tempfile.mktemp(prefix="http-port-", dir=fxtest._WORK)
    args = ["--http-listen", "127.0.0.1:0", "--http-port-file", port_file] + list(args)
    if auth:
        d, secret = fxtest.start_with_admin_token(name=name, args=args)
    else:
        d, secret = Daemon(args, name=name).start(), None
    with open(port_file) as f:
        d.http_port = int(f.read())
    return d, secret


def request(port, method, path, body=None, headers=None, scheme="http", context=None,
            timeout=60):
    """(status, headers, body bytes); HTTP errors are answers, not raised."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    req = urllib.request.Request("%s://127.0.0.1:%d%s" % (scheme, port, path), data=body,
                                 method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def auth(secret):
    return {"Authorization": "Bearer " + secret}


class HttpCase(unittest.TestCase):
    def call(self, method, path, body=None, headers=None, want=None):
        status, hdrs, data = request(self.d.http_port, method, path, body, headers)
        if STUB in data:
            self.skipTest("the KServe codec is not built in (server/http/kserve_stub.c)")
        if want is not None:
            self.assertEqual(status, want, "%s %s: %d %r" % (method, path, status, data[:400]))
        return status, hdrs, data

    def error(self, data):
        """The message of an error body {"error": "..."}."""
        doc = json.loads(data)
        self.assertEqual(list(doc), ["error"], doc)
        self.assertIsInstance(doc["error"], str)
        self.assertTrue(doc["error"])
        return doc["error"]


class HttpTest(HttpCase):
    @classmethod
    def setUpClass(cls):
        cls.d, _ = start_http(["--max-message-mb", "1"])
        cls.c = cls.d.client()
        cls.c.create_model("mlp", mlp_spec(), seed=1)
        cls.w = cls.c.export_arrays("mlp")

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_health(self):
        for path in ("/v2/health/live", "/v2/health/ready"):
            status, _, data = self.call("GET", path, want=200)
            self.assertEqual(data, b"")

    def test_server_metadata(self):
        _, hdrs, data = self.call("GET", "/v2", want=200)
        self.assertEqual(hdrs["Content-Type"], "application/json")
        doc = json.loads(data)
        want = self.c.server_metadata()
        self.assertEqual(doc["name"], want.name)
        self.assertEqual(doc["version"], want.version)
        self.assertEqual(doc["extensions"], list(want.extensions))

    def test_model_metadata(self):
        for path in ("/v2/models/mlp", "/v2/models/mlp/versions/1"):
            _, _, data = self.call("GET", path, want=200)
            doc = json.loads(data)
            self.assertEqual(doc["name"], "mlp")
            self.assertEqual([t["name"] for t in doc["inputs"]], ["x"])
            self.assertEqual(doc["inputs"][0]["datatype"], "FP32")
            self.assertEqual([t["name"] for t in doc["outputs"]], ["y"])

    def test_model_ready(self):
        self.call("GET", "/v2/models/mlp/ready", want=200)
        self.call("GET", "/v2/models/mlp/versions/1/ready", want=200)
        _, _, data = self.call("GET", "/v2/models/nope/ready", want=404)
        self.assertIn("nope", self.error(data))

    def test_infer_json(self):
        x = randn(3, 2, 4)
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                            "data": x.ravel().tolist()}]}
        _, hdrs, data = self.call("POST", "/v2/models/mlp/infer", body, want=200)
        self.assertEqual(hdrs["Content-Type"], "application/json")
        self.assertIsNone(hdrs["Inference-Header-Content-Length"])
        doc = json.loads(data)
        self.assertEqual(doc["model_name"], "mlp")
        (out,) = doc["outputs"]
        self.assertEqual(out["name"], "y")
        self.assertEqual(out["shape"], [2, 3])
        got = np.array(out["data"], dtype=np.float32).reshape(2, 3)
        want = self.c.infer("mlp", {"x": x})["y"]   # the same model over gRPC
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got, fxtest.mlp_forward(self.w, x), rtol=1e-4, atol=1e-5)

    def test_infer_binary(self):
        x = randn(4, 1, 4)
        raw = x.astype("<f4").tobytes()
        head = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]
                           }).encode()
        _, hdrs, data = self.call("POST", "/v2/models/mlp/infer", head + raw,
                                  {"Inference-Header-Content-Length": str(len(head)),
                                   "Content-Type": "application/octet-stream"}, want=200)
        n = int(hdrs["Inference-Header-Content-Length"])
        self.assertEqual(hdrs["Content-Type"], "application/octet-stream")
        doc = json.loads(data[:n])
        self.assertEqual(doc["outputs"][0]["parameters"]["binary_data_size"], 12)
        got = np.frombuffer(data[n:], dtype="<f4").reshape(1, 3)
        np.testing.assert_allclose(got, self.c.infer("mlp", {"x": x})["y"], rtol=1e-5)

    def test_unknown_model_404(self):
        _, _, data = self.call("GET", "/v2/models/nope", want=404)
        self.assertIn("nope", self.error(data))
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                            "data": [0, 0, 0, 0]}]}
        _, _, data = self.call("POST", "/v2/models/nope/infer", body, want=404)
        self.assertIn("nope", self.error(data))

    def test_bad_json_400(self):
        _, _, data = self.call("POST", "/v2/models/mlp/infer", b'{"inputs": [', want=400)
        self.assertRegex(self.error(data).lower(), "json|pars|end of")
        _, _, data = self.call("POST", "/v2/models/mlp/infer", {"outputs": []}, want=400)
        self.assertIn("inputs", self.error(data))
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1]}]}
        _, _, data = self.call("POST", "/v2/models/mlp/infer", body, want=400)
        self.assertTrue(self.error(data))
        _, _, data = self.call("POST", "/v2/models/mlp/infer", b"{}",
                               {"Inference-Header-Content-Length": "99"}, want=400)
        self.assertIn("Inference-Header-Content-Length", self.error(data))

    def test_413_declared(self):
        """Content-Length over the limit (1 MiB here): 413 before the body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.d.http_port, timeout=30)
        conn.putrequest("POST", "/v2/models/mlp/infer")
        conn.putheader("Content-Length", str(2 << 20))
        conn.endheaders()   # no body sent: the answer must not wait for it
        r = conn.getresponse()
        self.assertEqual(r.status, 413)
        self.assertIn("limit", self.error(r.read()))
        conn.close()

    def test_413_chunked(self):
        """A chunked body (no length) is counted as it comes."""
        conn = http.client.HTTPConnection("127.0.0.1", self.d.http_port, timeout=30)
        chunks = (b"x" * (256 << 10) for _ in range(6))
        conn.request("POST", "/v2/models/mlp/infer", body=chunks, encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        self.assertEqual(r.status, 413)
        self.assertIn("limit", self.error(r.read()))
        conn.close()
        # under the limit, the same way: through to the codec (not 413)
        status, _, _ = request(self.d.http_port, "POST", "/v2/models/mlp/infer", b"x" * 1000)
        self.assertNotEqual(status, 413)

    def test_path_checks(self):
        status, _, data = request(self.d.http_port, "GET", "/v2/models/a%00b")
        self.assertEqual(status, 400)
        self.assertIn("NUL", self.error(data))
        status, _, data = request(self.d.http_port, "GET", "/v2/models/a%zz")
        self.assertEqual(status, 400)
        self.assertIn("escape", self.error(data))
        # not UTF-8: the handler's own string check names the field
        status, _, data = request(self.d.http_port, "GET", "/v2/models/%ff%fe")
        self.assertEqual(status, 400)
        self.assertIn("UTF-8", self.error(data))
        status, _, data = request(self.d.http_port, "GET", "/v2/models/" + "m" * 3000)
        self.assertEqual(status, 400, data)
        # %2F stays inside its segment: a model name, not a route
        status, _, data = request(self.d.http_port, "GET", "/v2/models/mlp%2Fready")
        self.assertIn(status, (400, 404))
        self.assertNotEqual(status, 200)

    def test_routes(self):
        status, _, data = request(self.d.http_port, "GET", "/v3")
        self.assertEqual(status, 404)
        self.assertIn("no route", self.error(data))
        status, _, data = request(self.d.http_port, "GET", "/v2/models/mlp/infer")
        self.assertEqual(status, 405)
        self.assertIn("POST", self.error(data))
        status, _, _ = request(self.d.http_port, "POST", "/v2/health/live", b"")
        self.assertEqual(status, 405)
        status, _, _ = request(self.d.http_port, "GET", "/v2/models/mlp/bogus")
        self.assertEqual(status, 404)

    def test_statistics(self):
        self.c.infer("mlp", {"x": randn(5, 1, 4)})
        _, _, data = self.call("GET", "/v2/models/mlp/stats", want=200)
        (st,) = json.loads(data)["model_stats"]
        self.assertEqual(st["name"], "mlp")
        self.assertGreaterEqual(int(st["inference_count"]), 1)
        _, _, data = self.call("GET", "/v2/models/stats", want=200)
        self.assertIn("mlp", [s["name"] for s in json.loads(data)["model_stats"]])

    def test_repository(self):
        _, _, data = self.call("POST", "/v2/repository/index", b"", want=200)
        doc = json.loads(data)
        models = doc if isinstance(doc, list) else doc["models"]
        self.assertIn("mlp", [m["name"] for m in models])

    def test_load_unload(self):
        self.c.create_model("lu", mlp_spec(), seed=2)
        self.call("POST", "/v2/repository/models/lu/unload", b"", want=200)
        self.call("GET", "/v2/models/lu/ready", want=400)   # stored, not served
        self.call("POST", "/v2/repository/models/lu/load", b"", want=200)
        self.call("GET", "/v2/models/lu/ready", want=200)
        _, _, data = self.call("POST", "/v2/repository/models/none/load", b"", want=404)
        self.assertIn("none", self.error(data))

    def test_metrics(self):
        status, hdrs, data = request(self.d.http_port, "GET", "/metrics")
        if status == 501:
            self.assertIn("GetMetrics", self.error(data))
            self.skipTest("GetMetrics is not built in yet")
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        self.assertIn(b"# TYPE fluxion_", data)

    def test_config(self):
        status, _, data = request(self.d.http_port, "GET", "/v2/models/mlp/config")
        if status == 501:
            self.skipTest(self.error(data))
        self.assertEqual(status, 200, data)
        self.assertEqual(json.loads(data)["name"], "mlp")
        status, _, data = request(self.d.http_port, "GET", "/v2/models/nope/config")
        self.assertEqual(status, 404)


class HttpAuthTest(HttpCase):
    @classmethod
    def setUpClass(cls):
        cls.d, cls.admin = start_http(name="http-auth", auth=True)
        s = stubs(fxtest.channel(cls.d.address))
        cls.viewer, _ = create_token(s, cls.admin, "default", "v", "viewer")
        cls.member, _ = create_token(s, cls.admin, "default", "m", "member")
        s.channel.close()
        c = fxtest.Client(cls.d.address, token=cls.admin)
        c.create_model("mlp", mlp_spec(), seed=1)
        c.close()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_probes_are_public(self):
        self.call("GET", "/v2/health/live", want=200)
        self.call("GET", "/v2/health/ready", want=200)

    def test_401_without_token(self):
        for path in ("/v2/models/mlp/ready", "/v2/models/mlp"):
            _, hdrs, data = self.call("GET", path, want=401)
            self.assertEqual(hdrs["WWW-Authenticate"], "Bearer")
            self.assertTrue(self.error(data))
        _, _, data = self.call("POST", "/v2/repository/models/mlp/load", b"", want=401)
        _, _, data = self.call("GET", "/v2/models/mlp/ready", headers=auth("fxn_" + "0" * 64),
                               want=401)
        self.assertNotIn("0" * 64, data.decode())   # never the secret

    def test_roles(self):
        self.call("GET", "/v2/models/mlp/ready", headers=auth(self.viewer), want=200)
        _, _, data = self.call("POST", "/v2/repository/models/mlp/load", b"",
                               headers=auth(self.viewer), want=403)
        self.assertIn("viewer", self.error(data))
        self.call("POST", "/v2/repository/models/mlp/load", b"", headers=auth(self.member),
                  want=200)


class HttpsTest(HttpCase):
    def test_https_with_the_grpc_certificate(self):
        tmp = tempfile.mkdtemp(dir=fxtest._WORK)
        ca = fxtest.make_ca(tmp, "ca")
        crt, key = fxtest.make_cert(tmp, "server", ca, "localhost", server=True)
        self.d, _ = start_http(["--tls-cert", crt, "--tls-key", key], name="https")
        try:
            ctx = ssl.create_default_context(cafile=ca[0])
            status, _, _ = request(self.d.http_port, "GET", "/v2/health/ready", scheme="https",
                                   context=ctx)
            self.assertEqual(status, 200)
            status, _, data = request(self.d.http_port, "GET", "/v2/models/nope",
                                      scheme="https", context=ctx)
            self.assertEqual(status, 404)
            with self.assertRaises(Exception):   # plaintext on the TLS port
                conn = http.client.HTTPConnection("127.0.0.1", self.d.http_port, timeout=10)
                conn.request("GET", "/v2/health/live")
                r = conn.getresponse()
                if r.status == 200:
                    return
                raise ConnectionError(r.status)
        finally:
            self.d.stop()


class HttpFlagsTest(unittest.TestCase):
    def run_daemon(self, *args):
        import subprocess
        p = subprocess.run([fxtest.FLUXIOND, "--listen", "127.0.0.1:0", "--data-dir",
                            tempfile.mkdtemp(dir=fxtest._WORK)] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        return p.returncode, p.stderr.decode()

    def test_bad_flags(self):
        rc, err = self.run_daemon("--http-listen", "nohostport")
        self.assertEqual(rc, 2)
        self.assertIn("--http-listen", err)
        rc, err = self.run_daemon("--http-listen", "127.0.0.1:70000")
        self.assertEqual(rc, 2)
        rc, err = self.run_daemon("--http-port-file", "/tmp/x")
        self.assertEqual(rc, 2)
        self.assertIn("needs --http-listen", err)

    def test_port_in_use(self):
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            rc, err = self.run_daemon("--http-listen", "127.0.0.1:%d" % s.getsockname()[1])
        self.assertEqual(rc, 1)
        self.assertIn("cannot serve HTTP", err)
        self.assertIn("in use", err)

    def test_loopback_rule(self):
        """A non-loopback HTTP address needs TLS, as --listen does."""
        rc, err = self.run_daemon("--http-listen", "0.0.0.0:0")
        self.assertEqual(rc, 1)
        self.assertIn("0.0.0.0:0 is not a loopback address", err)


class HttpDrainTest(HttpCase):
    def test_ready_503_while_draining(self):
        """A gRPC upload left open holds the drain (its grace); meanwhile
        ready is 503 and new calls are refused with 503."""
        self.d, _ = start_http(["--grace-seconds", "8"], name="http-drain")
        s = stubs(fxtest.channel(self.d.address))
        release = threading.Event()

        def chunks():
            release.wait(20)
            return
            yield

        upload = s.datasets.UploadDataset.future(chunks(), timeout=30)
        try:
            time.sleep(0.5)   # the upload is in flight
            self.call("GET", "/v2/health/ready", want=200)
            self.d.signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            status = None
            while time.monotonic() < deadline:
                status, _, _ = request(self.d.http_port, "GET", "/v2/health/ready", timeout=5)
                if status == 503:
                    break
                time.sleep(0.05)
            self.assertEqual(status, 503)
            # ready turns first (the daemon's draining flag), the refusal of
            # new calls a moment later (the rpc layer's drain)
            while time.monotonic() < deadline:
                status, _, data = request(self.d.http_port, "GET", "/v2/models/x", timeout=5)
                if status == 503:
                    break
                time.sleep(0.05)
            self.assertEqual(status, 503)
            self.assertIn("shutting down", self.error(data))
            self.assertTrue(self.d.alive())   # still in its grace
        finally:
            release.set()
            try:
                upload.result(timeout=20)
            except Exception:
                pass
            s.channel.close()
        self.assertEqual(self.d.wait_exit(15), 0)
        self.d.proc = None


if __name__ == "__main__":
    fxtest.main()
