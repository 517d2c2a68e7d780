"""Resource limits that hold under attack (issue 19): request bytes held by
calls in flight are capped per client (--max-inflight-mb-per-client) and for
the whole server (--max-inflight-mb), calls per client
(--max-calls-per-client), HTTP connections per client address
(--http-max-connections-per-client) and HTTP bodies in flight. Past a cap a
call is refused at once with RESOURCE_EXHAUSTED (HTTP 429) whose message
names the limit's flag and the amounts, while other clients keep being
served; fluxion_rpc_inflight_bytes returns to 0 after calls finish, fail or
are cancelled, and fluxion_rpc_limit_rejections_total counts the refusals.

Requests are held in flight deterministically by the batcher: the model's
max_queue_delay_us is 3 s with a (preferred) batch size never reached, so an
admitted ModelInfer stays in flight about 3 s while the others arrive."""
import re
import socket
import time
import unittest

import fxtest
from fxtest import C, Daemon, grpc

N = 262144              # floats per sample: 1 MiB
MIB = 1 << 20
HOLD_US = 3000000


def sample_req(s, model, samples):
    req = s.infer_pb2.ModelInferRequest(model_name=model)
    t = req.inputs.add()
    t.name, t.datatype = "x", "FP32"
    t.shape.extend([samples, N])
    req.raw_input_contents.append(bytes(4 * N * samples))
    return req


class LimitsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        port_file = fxtest.os.path.join(fxtest._WORK, "limits.http")
        cls.d = Daemon(["--max-message-mb", "8", "--max-inflight-mb", "20",
                        "--max-inflight-mb-per-client", "12", "--max-calls-per-client", "8",
                        "--http-listen", "127.0.0.1:0", "--http-port-file", port_file,
                        "--http-max-connections-per-client", "3"], name="limits").start()
        with open(port_file) as f:
            cls.http_port = int(f.read())
        c = cls.d.client(timeout=60)
        c.create_model("big", fxtest.mlp_spec(n_in=N, hidden=1, n_out=1))
        # preferred sizes: a partial batch waits the delay for them
        c.set_serving_config("big", max_batch_size=1 << 20, max_queue_delay_us=HOLD_US,
                             preferred_batch_sizes=[1 << 20])
        cls.admin = fxtest.stubs(fxtest.channel(cls.d.address))

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def metrics(self):
        text = self.admin.cluster.GetMetrics(self.admin.cluster_pb2.GetMetricsRequest(),
                                             timeout=30).text
        inflight = float(re.search(r"^fluxion_rpc_inflight_bytes (\S+)$", text, re.M).group(1))
        rej = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^fluxion_rpc_limit_rejections_total\{limit="([a-z_]+)"\} (\S+)$', text, re.M)}
        return inflight, rej

    def wait_drained(self):
        deadline = time.monotonic() + 20
        while True:
            inflight, rej = self.metrics()
            # GetMetrics itself is in flight: its own (empty) request
            if inflight == 0 or time.monotonic() > deadline:
                return inflight, rej
            time.sleep(0.2)

    def outcomes(self, futures):
        ok, refused = 0, []
        for f in futures:
            try:
                f.result()
                ok += 1
            except grpc.RpcError as e:
                self.assertEqual(e.code(), C.RESOURCE_EXHAUSTED, e.details())
                refused.append(e.details())
        return ok, refused

    def test_one_client_over_its_cap_others_served(self):
        a = fxtest.stubs(fxtest.channel(self.d.address))
        b = fxtest.stubs(fxtest.channel(self.d.address))
        t0 = time.monotonic()
        fa = [a.inference.ModelInfer.future(sample_req(a, "big", 4), timeout=60)
              for _ in range(6)]
        time.sleep(0.5)
        inflight, _ = self.metrics()
        self.assertGreaterEqual(inflight, 8 * MIB)  # two 4 MiB requests held
        self.assertLessEqual(inflight, 12 * MIB + 4096)
        fb = b.inference.ModelInfer.future(sample_req(b, "big", 1), timeout=60)
        fb.result()  # the other client is served meanwhile
        ok, refused = self.outcomes(fa)
        self.assertEqual(ok, 2, refused)
        self.assertEqual(len(refused), 4)
        for m in refused:
            self.assertIn("--max-inflight-mb-per-client 12", m)
            self.assertIn("12582912 bytes", m)
        self.assertLess(time.monotonic() - t0, 30)
        inflight, rej = self.wait_drained()
        self.assertEqual(inflight, 0)
        self.assertGreaterEqual(rej["inflight_bytes_per_client"], 4)

    def test_global_cap(self):
        chans = [fxtest.stubs(fxtest.channel(self.d.address)) for _ in range(3)]
        fs = [s.inference.ModelInfer.future(sample_req(s, "big", 4), timeout=60)
              for s in chans for _ in range(2)]
        ok, refused = self.outcomes(fs)
        self.assertEqual(ok, 4, refused)   # 4 x 4 MiB fit in 20 MiB, a 5th does not
        self.assertEqual(len(refused), 2)
        for m in refused:
            self.assertIn("--max-inflight-mb 20", m)
            self.assertIn("20971520 bytes", m)
        self.assertEqual(self.wait_drained()[0], 0)

    def test_calls_per_client(self):
        a = fxtest.stubs(fxtest.channel(self.d.address))
        small = a.infer_pb2.ModelInferRequest(model_name="big")
        t = small.inputs.add()
        t.name, t.datatype = "x", "FP32"
        t.shape.extend([1, N])
        t.contents.fp32_contents.extend([0.0] * 16)  # wrong size: answered at once
        held = [a.inference.ModelInfer.future(sample_req(a, "big", 1), timeout=60)
                for _ in range(8)]
        time.sleep(0.5)
        with self.assertRaises(grpc.RpcError) as e:
            a.inference.ModelInfer(small, timeout=30)
        self.assertEqual(e.exception.code(), C.RESOURCE_EXHAUSTED)
        self.assertIn("--max-calls-per-client 8", e.exception.details())
        self.assertEqual(self.outcomes(held), (8, []))
        # the slots come back: now it gets its own answer
        with self.assertRaises(grpc.RpcError) as e:
            a.inference.ModelInfer(small, timeout=30)
        self.assertEqual(e.exception.code(), C.INVALID_ARGUMENT)
        self.assertEqual(self.wait_drained()[0], 0)

    def test_counts_return_to_zero_after_failures_and_cancels(self):
        a = fxtest.stubs(fxtest.channel(self.d.address))
        # failed: an unknown model, a 4 MiB request
        with self.assertRaises(grpc.RpcError) as e:
            a.inference.ModelInfer(sample_req(a, "nope", 4), timeout=30)
        self.assertEqual(e.exception.code(), C.NOT_FOUND)
        # cancelled while held by the batcher
        fs = [a.inference.ModelInfer.future(sample_req(a, "big", 2), timeout=60)
              for _ in range(2)]
        time.sleep(0.5)
        self.assertGreaterEqual(self.metrics()[0], 4 * MIB)
        for f in fs:
            f.cancel()
        # deadline passed while held
        with self.assertRaises(grpc.RpcError) as e:
            a.inference.ModelInfer(sample_req(a, "big", 2), timeout=0.5)
        self.assertEqual(e.exception.code(), C.DEADLINE_EXCEEDED)
        a.channel.close()  # and a client gone
        self.assertEqual(self.wait_drained()[0], 0)
        # and the whole cap is usable again
        b = fxtest.stubs(fxtest.channel(self.d.address))
        fs = [b.inference.ModelInfer.future(sample_req(b, "big", 4), timeout=60)
              for _ in range(2)]
        self.assertEqual(self.outcomes(fs), (2, []))

    def test_stream_messages_counted(self):
        from fluxion_client.datasets import upload_chunks
        a = fxtest.stubs(fxtest.channel(self.d.address))
        arrays = {"x": fxtest.np.zeros((3, 6 * N), fxtest.np.float32)}  # 6 MiB rows
        # alone, a 6 MiB message at a time fits the client's 12 MiB
        a.datasets.UploadDataset(upload_chunks("ok", arrays, chunk_samples=1), timeout=60)
        # with 8 MiB held by two inferences, its first message is over
        held = [a.inference.ModelInfer.future(sample_req(a, "big", 4), timeout=60)
                for _ in range(2)]
        time.sleep(0.5)
        with self.assertRaises(grpc.RpcError) as e:
            a.datasets.UploadDataset(upload_chunks("over", arrays, chunk_samples=1), timeout=60)
        self.assertEqual(e.exception.code(), C.RESOURCE_EXHAUSTED)
        self.assertIn("--max-inflight-mb-per-client 12", e.exception.details())
        self.assertEqual(self.outcomes(held), (2, []))
        self.assertEqual(self.wait_drained()[0], 0)

    def http_connect(self):
        s = socket.create_connection(("127.0.0.1", self.http_port), timeout=10)
        return s

    def http_request(self, s, method, path, body=b"", headers=""):
        s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
                   % (method, path, len(body), headers)).encode() + body)

    def read_response(self, s):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def test_http_connections_per_client(self):
        held = [self.http_connect() for _ in range(3)]
        try:
            for s in held:  # each one served
                self.http_request(s, "GET", "/v2/health/live")
                self.assertIn(b" 200 ", self.read_response(s).split(b"\r\n")[0])
            extra = self.http_connect()
            self.http_request(extra, "GET", "/v2/health/live")
            try:
                got = extra.recv(65536)
            except ConnectionResetError:
                got = b""
            self.assertEqual(got, b"")  # refused: closed at once
            extra.close()
        finally:
            for s in held:
                s.close()
        time.sleep(0.5)
        s = self.http_connect()
        self.http_request(s, "GET", "/v2/health/live")
        self.assertIn(b" 200 ", self.read_response(s).split(b"\r\n")[0])
        s.close()

    def test_http_bodies_in_flight(self):
        # two bodies of 7 MiB declared, not sent yet: the second is over the
        # client's 12 MiB and refused before its body is read
        s1, s2 = self.http_connect(), self.http_connect()
        try:
            hdr = ("POST /v2/models/big/infer HTTP/1.1\r\nHost: x\r\n"
                   "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (7 * MIB))
            s1.sendall(hdr.encode())
            time.sleep(0.3)
            self.assertGreaterEqual(self.metrics()[0], 7 * MIB)
            s2.sendall(hdr.encode())
            resp = self.read_response(s2)
            self.assertIn(b" 429 ", resp.split(b"\r\n")[0])
            s2.settimeout(5)
            body = resp.split(b"\r\n\r\n", 1)[1]
            while b"}" not in body:
                chunk = s2.recv(65536)
                if not chunk:
                    break
                body += chunk
            self.assertIn(b"--max-inflight-mb-per-client 12", body)
        finally:
            s1.close()
            s2.close()
        self.assertEqual(self.wait_drained()[0], 0)


class FlagsTest(unittest.TestCase):

    def test_flags_listed_and_checked(self):
        out = fxtest.subprocess.run([fxtest.FLUXIOND, "--help"], capture_output=True,
                                    text=True, timeout=30).stdout
        for flag in ("--max-inflight-mb N", "--max-inflight-mb-per-client N",
                     "--max-calls-per-client N", "--http-max-connections-per-client N"):
            self.assertIn(flag, out)
        for flag, bad in (("--max-inflight-mb", "-1"), ("--max-inflight-mb-per-client", "x"),
                          ("--max-calls-per-client", "-5"),
                          ("--http-max-connections-per-client", "5000")):
            p = fxtest.subprocess.run([fxtest.FLUXIOND, flag, bad], capture_output=True,
                                      text=True, timeout=30)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(flag, p.stderr)


if __name__ == "__main__":
    fxtest.main()
