"""Canaries (issue 16, "traffic split"): a served model sends a percentage of
its requests without a version to a second version (SetCanary, `fluxion
model canary`). The split is counter-based, so every check here is exact:
of N requests since the canary was set, floor(N * P / 100) go to it, turn
n when floor((n + 1) P / 100) > floor(n P / 100). ModelStatistics and the
metrics count per version; explicit versions bypass the split; the setting
survives a restart; turning it on, off and changing it while requests flow
from many threads fails no request (run under ASan by the sanitizer suite)."""
import json
import os
import subprocess
import tempfile
import threading
import unittest
import urllib.request

import fxtest
from fxtest import C, Daemon, mlp_spec, np, randn
from fluxion_client.client import infer_outputs, infer_request
from fluxion_client._stubs import cluster_pb2

X = randn(7, 2, 4)
CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")


def split(percent, n, start=0, canary=1, main=2):
    """The version of each of n requests from turn start of a split (the
    daemon's rule): turn k goes to the canary when floor((k+1) P / 100)
    passes floor(k P / 100), k counted modulo 100."""
    return [canary if (k % 100 + 1) * percent // 100 > (k % 100) * percent // 100 else main
            for k in range(start, start + n)]


def two_versions(c, name):
    """A served model with versions 1 and 2 (the main one: the latest)."""
    c.create_model(name, mlp_spec(), seed=3)
    w = c.export_arrays(name)
    c.import_weights(name, {k: v + 0.5 for k, v in w.items()}, source="v2")


def versions_of(c, name, n, version=""):
    """The version that answered each of n requests."""
    out = []
    for _ in range(n):
        r = c.inference.ModelInfer(infer_request(name, {"x": X}, version=version), timeout=60)
        out.append(int(r.model_version))
    return out


def counts(c, name):
    """{version: inference requests that succeeded} of the served versions."""
    return {int(s.version): s.inference_stats.success.count for s in c.model_statistics(name)}


class CanaryTest(fxtest.DaemonTest):

    def test_exact_split_by_statistics_and_metrics(self):
        c = self.c
        two_versions(c, "split")
        y1 = c.infer("split", {"x": X}, version=1)["y"]
        y2 = c.infer("split", {"x": X}, version=2)["y"]
        self.assertFalse(np.allclose(y1, y2))
        before = counts(c, "split")
        self.assertEqual(before, {1: 1, 2: 1})  # version 1 was loaded on demand, as an old one
        got = c.set_canary("split", 1, 30)
        self.assertEqual((got.version, got.percent), (1, 30))
        cfg = c.get_model("split").serving_config
        self.assertEqual((cfg.canary.version, cfg.canary.percent), (1, 30))

        seen = versions_of(c, "split", 200)
        # turn by turn, as documented: 3 of every 10, evenly spread
        self.assertEqual(seen[:10], [2, 2, 2, 1, 2, 2, 1, 2, 2, 1])
        self.assertEqual(seen, split(30, 200))
        self.assertEqual(seen.count(1), 60)
        after = counts(c, "split")
        self.assertEqual(after, {1: 1 + 60, 2: 1 + 140})
        # the canary answers with its own weights
        for _ in range(10):
            r = c.inference.ModelInfer(infer_request("split", {"x": X}), timeout=60)
            np.testing.assert_allclose(infer_outputs(r)["y"], y1 if r.model_version == "1" else y2,
                                       rtol=1e-6)
        # explicit versions bypass the split
        self.assertEqual(versions_of(c, "split", 7, version="2"), [2] * 7)
        self.assertEqual(versions_of(c, "split", 3, version="1"), [1] * 3)
        # the metrics count per version too
        text = c.cluster.GetMetrics(cluster_pb2.GetMetricsRequest(), timeout=30).text
        ok = {}
        for line in text.splitlines():
            if line.startswith("fluxion_inference_requests_total{") and 'model="split"' in line \
                    and 'code="OK"' in line:
                v = line.split('version="')[1].split('"')[0]
                ok[int(v)] = float(line.rsplit(" ", 1)[1])
        st = counts(c, "split")
        self.assertEqual(ok, {1: st[1], 2: st[2]})
        self.assertEqual(st[1], 1 + 60 + 3 + 3)   # the ten above: exactly three to the canary
        self.assertEqual(st[2], 1 + 140 + 7 + 7)

    def test_percent_changes_and_off(self):
        c = self.c
        two_versions(c, "onoff")
        for percent, n in ((50, 10), (100, 9), (0, 9), (25, 8), (1, 100), (99, 100), (7, 300)):
            c.set_canary("onoff", 1, percent)
            seen = versions_of(c, "onoff", n)
            self.assertEqual(seen, split(percent, n), percent)
            self.assertEqual(seen.count(1), n * percent // 100)
        # percent 0: the canary is loaded (explicit requests go to it) but takes nothing
        c.set_canary("onoff", 1, 0)
        self.assertEqual(sorted(counts(c, "onoff")), [1, 2])
        off = c.set_canary("onoff", off=True)
        self.assertEqual(off.version, 0)
        self.assertFalse(c.get_model("onoff").serving_config.HasField("canary"))
        self.assertEqual(sorted(counts(c, "onoff")), [2])   # version 1 no longer served
        self.assertEqual(versions_of(c, "onoff", 20), [2] * 20)
        # off again: nothing to do, still fine; an explicit version 1 is served on demand
        c.set_canary("onoff", off=True)
        self.assertEqual(versions_of(c, "onoff", 2, version="1"), [1, 1])
        # the batching settings keep the canary and vice versa
        c.set_canary("onoff", 1, 40)
        c.set_serving_config("onoff", max_batch_size=4)
        cfg = c.get_model("onoff").serving_config
        self.assertEqual((cfg.max_batch_size, cfg.canary.version, cfg.canary.percent), (4, 1, 40))
        seen = versions_of(c, "onoff", 10)        # rebuilt with the settings, same split
        self.assertEqual(seen, split(40, 10))
        c.set_canary("onoff", 1, 60)
        self.assertEqual(c.get_model("onoff").serving_config.max_batch_size, 4)
        reply = c.set_serving_config("onoff", reset=True)
        self.assertEqual((reply.canary.version, reply.canary.percent), (1, 60))

    def test_errors(self):
        c = self.c
        two_versions(c, "errs")
        self.assertCode(C.NOT_FOUND, c.set_canary, "errs", 9, 10, contains=("9", "errs"))
        self.assertCode(C.INVALID_ARGUMENT, c.set_canary, "errs", 2, 10,
                        contains=("2", "main version"))
        self.assertCode(C.INVALID_ARGUMENT, c.set_canary, "errs", 1, 101, contains="101")
        self.assertCode(C.INVALID_ARGUMENT, c.set_canary, "errs", 0, 10, contains="version")
        self.assertCode(C.INVALID_ARGUMENT, c.set_canary, "errs", -3, 10, contains="-3")
        self.assertCode(C.NOT_FOUND, c.set_canary, "nosuch", 1, 10, contains="nosuch")
        self.assertCode(C.NOT_FOUND, c.set_canary, "nosuch", off=True, contains="nosuch")
        # SetServingConfig neither sets the canary by name nor with every field
        pb = fxtest.model_pb2
        cfg = pb.BatchingConfig(max_batch_size=8, canary=pb.CanaryConfig(version=1, percent=5))
        err = self.assertRpcCode(C.INVALID_ARGUMENT, c.models.SetServingConfig,
                                 pb.SetServingConfigRequest(name="errs", config=cfg,
                                                            fields=["canary"]), timeout=30)
        self.assertIn("canary", err.details())
        full = c.get_model("errs").serving_config       # every field, and a canary
        full.canary.CopyFrom(pb.CanaryConfig(version=1, percent=5))
        reply = c.models.SetServingConfig(pb.SetServingConfigRequest(name="errs", config=full),
                                          timeout=30)
        self.assertFalse(reply.HasField("canary"))
        # nothing was stored by the refusals
        self.assertFalse(c.get_model("errs").serving_config.HasField("canary"))
        self.assertEqual(versions_of(c, "errs", 5), [2] * 5)

    def test_unload_load_delete(self):
        c = self.c
        two_versions(c, "life")
        c.set_canary("life", 1, 50)
        c.unload_model("life")
        self.assertEqual(counts(c, "life"), {})
        # set while not loaded: stored, served from the next load
        c.set_canary("life", 1, 20)
        c.load_model("life")
        self.assertEqual(sorted(counts(c, "life")), [1, 2])
        self.assertEqual(versions_of(c, "life", 10), split(20, 10))
        # a new version: the main one moves on, the canary and its split stay
        w = c.export_arrays("life", 2)
        c.import_weights("life", {k: v * 2 for k, v in w.items()})
        self.assertEqual(sorted(counts(c, "life")), [1, 3])
        self.assertEqual(versions_of(c, "life", 10), split(20, 10, start=10, main=3))
        c.delete_model("life")
        two_versions(c, "life")
        self.assertFalse(c.get_model("life").serving_config.HasField("canary"))
        self.assertEqual(versions_of(c, "life", 4), [2] * 4)

    def test_cli(self):
        if not os.access(CLI, os.X_OK):
            self.skipTest("no fluxion CLI at %s" % CLI)
        c = self.c
        two_versions(c, "clim")

        def cli(*args, expect=0):
            env = dict(os.environ, FLUXION_SERVER=self.d.address)
            p = subprocess.run([CLI] + list(args), capture_output=True, text=True, env=env,
                               timeout=60)
            self.assertEqual(p.returncode, expect, "fluxion %s: %s%s" % (" ".join(args),
                                                                          p.stdout, p.stderr))
            return p
        self.assertIn("canary: none", cli("model", "canary", "clim").stdout)
        out = cli("model", "canary", "clim", "1", "--percent", "20").stdout
        self.assertIn("canary: version 1, 20% of the requests without a version", out)
        self.assertIn("canary:      version 1, 20%", cli("model", "get", "clim").stdout)
        self.assertIn("version 1, 20%", cli("model", "config", "clim").stdout)
        self.assertIn("version 1, 20%", cli("model", "canary", "clim").stdout)
        self.assertEqual(versions_of(c, "clim", 5).count(1), 1)
        self.assertIn("canary: none", cli("model", "canary", "clim", "--off").stdout)
        self.assertFalse(c.get_model("clim").serving_config.HasField("canary"))
        # usage errors (2) before any call; server errors (1) name the problem
        cli("model", "canary", "clim", "1", expect=2)
        cli("model", "canary", "clim", "--percent", "5", expect=2)
        cli("model", "canary", "clim", "1", "--percent", "101", expect=2)
        cli("model", "canary", "clim", "1", "--percent", "5", "--off", expect=2)
        cli("model", "canary", "clim", "x", "--percent", "5", expect=2)
        self.assertIn("NOT_FOUND", cli("model", "canary", "clim", "8", "--percent", "5",
                                       expect=1).stderr)
        self.assertIn("main version", cli("model", "canary", "clim", "2", "--percent", "5",
                                          expect=1).stderr)

    def test_changes_while_requests_flow(self):
        """Turning the canary on, off and changing it many times while eight
        threads send requests without a version: every request succeeds, on
        one of the two versions, and the statistics add up."""
        c = self.c
        two_versions(c, "race")
        stop = threading.Event()
        failures, answered = [], {1: 0, 2: 0}
        lock = threading.Lock()

        def sender():
            cl = self.d.client()
            while not stop.is_set():
                try:
                    r = cl.inference.ModelInfer(infer_request("race", {"x": X}), timeout=60)
                    with lock:
                        answered[int(r.model_version)] += 1
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    with lock:
                        failures.append(repr(e))
        threads = [threading.Thread(target=sender) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            for i in range(60):
                if i % 3 == 2:
                    c.set_canary("race", off=True)
                else:
                    c.set_canary("race", 1, (i * 37) % 101)
                if i % 20 == 10:
                    c.set_serving_config("race", max_batch_size=2 + i % 5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(failures, [])
        self.assertGreater(answered[1], 0)
        self.assertGreater(answered[2], 0)
        c.set_canary("race", 1, 50)     # both served: the statistics cover every answer
        st = counts(c, "race")
        self.assertEqual(st[1] + st[2], answered[1] + answered[2])


class CanaryRestartTest(unittest.TestCase):

    def test_restart_keeps_the_canary(self):
        d = Daemon(name="canary-restart").start()
        c = d.client()
        two_versions(c, "kept")
        c.set_canary("kept", 1, 25)
        two_versions(c, "idle")
        c.set_canary("idle", 1, 50)
        c.unload_model("idle")
        d.restart()
        c = d.client()
        cfg = c.get_model("kept").serving_config
        self.assertEqual((cfg.canary.version, cfg.canary.percent), (1, 25))
        self.assertEqual(sorted(counts(c, "kept")), [1, 2])
        self.assertEqual(versions_of(c, "kept", 8), [2, 2, 2, 1, 2, 2, 2, 1])
        self.assertEqual(counts(c, "idle"), {})    # not loaded: neither version served
        c.load_model("idle")
        self.assertEqual(versions_of(c, "idle", 4), [2, 1, 2, 1])
        d.stop()


class CanaryHttpTest(unittest.TestCase):

    def test_http_infer_is_split_too(self):
        """POST /v2/models/NAME/infer (no version) takes the same split;
        /versions/N/infer goes to N."""
        port_file = os.path.join(tempfile.mkdtemp(dir=fxtest._WORK), "http-port")
        d = Daemon(["--http-listen", "127.0.0.1:0", "--http-port-file", port_file],
                   name="canary-http").start()
        with open(port_file) as f:
            port = int(f.read())
        c = d.client()
        two_versions(c, "web")
        c.set_canary("web", 1, 50)
        body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                       "data": X.ravel().tolist()}]}).encode()

        def post(path):
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body,
                                         method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                doc = json.loads(r.read())
            if "model_version" not in doc:
                self.skipTest("the KServe codec is not built in")
            return int(doc["model_version"])
        self.assertEqual([post("/v2/models/web/infer") for _ in range(6)], split(50, 6))
        self.assertEqual([post("/v2/models/web/versions/2/infer") for _ in range(3)], [2] * 3)
        self.assertEqual(counts(c, "web"), {1: 3, 2: 6})
        d.stop()


if __name__ == "__main__":
    fxtest.main()
