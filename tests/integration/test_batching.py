"""Automatic batching in a real daemon: concurrent clients are served in
batches (ModelStatistics batch_stats show sizes > 1) with the results each
request gets alone; a full queue is refused at once; timeouts answer
DEADLINE_EXCEEDED; settings given as RepositoryModelLoad parameters or by
SetServingConfig are checked, and persist across a restart."""
import json
import os
import subprocess
import threading
import unittest

import fxtest
from fxtest import C, Daemon, DaemonTest, infer_pb2, mlp_spec, np, randn
from fluxion_client.client import infer_request

SEQ_SPEC = {
    "inputs": [{"name": "seq", "dtype": "FP32", "shape": [-1, -1, 3]},
               {"name": "lengths", "dtype": "INT64", "shape": [-1]}],
    "nodes": [{"name": "gru", "op": "gru", "inputs": ["seq", "lengths"],
               "attrs": {"input_size": 3, "hidden_size": 4, "bidirectional": True}},
              {"name": "fc", "op": "dense", "inputs": ["gru"],
               "attrs": {"in_features": 8, "out_features": 2}}],
    "outputs": [{"name": "out", "source": "fc"}],
}


def concurrently(fns):
    """Runs the callables at once (one thread each); returns their results
    (or the exception each raised)."""
    out = [None] * len(fns)
    start = threading.Barrier(len(fns))

    def run(i):
        start.wait()
        try:
            out[i] = fns[i]()
        except Exception as e:  # noqa: BLE001 - returned to the test
            out[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def stats(c, name):
    (s,) = c.model_statistics(name)
    return s


class BatchingTest(DaemonTest):

    def test_concurrent_requests_are_batched_with_unbatched_results(self):
        c = self.c
        c.create_model("m", mlp_spec(), seed=3)
        # preferred sizes: a partial batch waits the delay for them (without,
        # the batcher decides from evidence: test_batching_evidence.py)
        cfg = c.set_serving_config("m", max_batch_size=16, max_queue_delay_us=100000,
                                   preferred_batch_sizes=[16])
        self.assertEqual((cfg.max_batch_size, cfg.max_queue_delay_us, cfg.enabled),
                         (16, 100000, True))
        xs = [randn(i, 1 + i % 3, 4) for i in range(12)]   # 1 to 3 samples each
        got = concurrently([lambda x=x: c.infer("m", {"x": x})["y"] for x in xs])
        s = stats(c, "m")
        sizes = {b.batch_size: b.compute_infer.count for b in s.batch_stats}
        self.assertTrue(any(size > 3 for size in sizes), sizes)
        self.assertEqual(s.inference_count, sum(len(x) for x in xs))
        self.assertEqual(s.execution_count, sum(sizes.values()))
        self.assertLess(s.execution_count, len(xs))
        self.assertEqual(s.inference_stats.success.count, len(xs))
        self.assertGreater(s.inference_stats.queue.ns, 0)
        c.set_serving_config("m", enabled=False)
        for x, y in zip(xs, got):
            self.assertIsInstance(y, np.ndarray, y)
            np.testing.assert_allclose(y, c.infer("m", {"x": x})["y"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[0], fxtest.mlp_forward(c.export_arrays("m"), xs[0]),
                                   rtol=1e-5, atol=1e-5)

    def test_mixed_lengths_padded_equal_unbatched(self):
        c = self.c
        c.create_model("seq", SEQ_SPEC, seed=5)
        c.set_serving_config("seq", pad_variable_dims=True, max_batch_size=16,
                             max_queue_delay_us=100000, preferred_batch_sizes=[16])
        reqs = []
        for i, (n, t) in enumerate([(1, 2), (2, 5), (1, 3), (1, 7), (2, 2)]):
            lengths = np.array([max(1, t - k) for k in range(n)], dtype=np.int64)
            reqs.append({"seq": randn(10 + i, n, t, 3), "lengths": lengths})
        got = concurrently([lambda r=r: c.infer("seq", r, raw=True)["out"] for r in reqs])
        sizes = [b.batch_size for b in stats(c, "seq").batch_stats]
        self.assertTrue(any(size > 2 for size in sizes), sizes)
        c.set_serving_config("seq", enabled=False)
        for r, y in zip(reqs, got):
            self.assertIsInstance(y, np.ndarray, y)
            alone = c.infer("seq", r)["out"]
            self.assertEqual(y.shape, alone.shape)
            np.testing.assert_allclose(y, alone, rtol=0, atol=1e-6)

    def test_full_queue_is_refused_at_once(self):
        c = self.c
        c.create_model("q", mlp_spec(), seed=1)
        c.set_serving_config("q", max_queue_size=2, max_batch_size=64,
                             max_queue_delay_us=1000000, preferred_batch_sizes=[64])
        got = concurrently([lambda i=i: c.infer("q", {"x": randn(i, 1, 4)})["y"]
                            for i in range(4)])
        refused = [e for e in got if isinstance(e, fxtest.FluxionError)]
        self.assertEqual(len(refused), 2, got)
        for e in refused:
            self.assertEqual(e.code, C.UNAVAILABLE)
            self.assertIn("queue is full", e.message)
        self.assertEqual(sum(isinstance(y, np.ndarray) for y in got), 2)

    def test_timeouts(self):
        c = self.c
        c.create_model("t", mlp_spec(), seed=1)
        c.set_serving_config("t", max_batch_size=64, max_queue_delay_us=2000000,
                             timeout_us=50000, preferred_batch_sizes=[64])
        self.assertCode(C.DEADLINE_EXCEEDED, c.infer, "t", {"x": randn(1, 1, 4)},
                        contains="deadline")
        # the request's own "timeout" parameter (microseconds), and priority
        req = infer_request("t", {"x": randn(1, 1, 4)})
        req.parameters["timeout"].int64_param = 20000
        self.assertCode(C.DEADLINE_EXCEEDED, c.infer_raw, req)
        req.parameters["priority"].int64_param = 5
        self.assertCode(C.INVALID_ARGUMENT, c.infer_raw, req, contains="priority")
        req.parameters["priority"].string_param = "high"
        self.assertCode(C.INVALID_ARGUMENT, c.infer_raw, req, contains="priority")
        s = stats(c, "t")
        self.assertGreaterEqual(s.inference_stats.fail.count, 4)

    def test_bad_settings_are_refused(self):
        c = self.c
        c.create_model("b", mlp_spec(), seed=1)
        self.assertCode(C.INVALID_ARGUMENT, c.set_serving_config, "b", max_batch_size=0,
                        contains="max_batch_size")
        self.assertCode(C.INVALID_ARGUMENT, c.set_serving_config, "b", pad_variable_dims=True,
                        contains="lengths")
        c.create_model("b-stored", mlp_spec(), seed=1, no_load=True)
        self.assertCode(C.INVALID_ARGUMENT, c.load_model, "b-stored",
                        {"pad_variable_dims": True}, contains="lengths")
        c.load_model("b-stored")
        self.assertCode(C.INVALID_ARGUMENT, c.set_serving_config, "b",
                        preferred_batch_sizes=[8, 4], contains="ascending")
        self.assertCode(C.NOT_FOUND, c.set_serving_config, "nope", max_batch_size=4)
        self.assertCode(C.INVALID_ARGUMENT, c.load_model, "b", {"max_batch": 3},
                        contains="unknown batching setting")
        self.assertCode(C.INVALID_ARGUMENT, c.load_model, "b", {"max_batch_size": -3})
        self.assertCode(C.INVALID_ARGUMENT, c.load_model, "b", {"enabled": "maybe"},
                        contains="enabled")
        # nothing changed, and the model still serves
        cfg = c.get_model("b").serving_config
        self.assertEqual((cfg.max_batch_size, cfg.enabled), (32, True))
        self.assertEqual(c.infer("b", {"x": randn(1, 2, 4)})["y"].shape, (2, 3))


BENCH = os.path.join(os.path.dirname(fxtest.FLUXIOND), "fluxion-bench")


@unittest.skipUnless(os.access(BENCH, os.X_OK), "no fluxion-bench next to fluxiond")
class LoadGeneratorTest(DaemonTest):

    def bench(self, *args):
        return subprocess.run([BENCH, "serve", "--server", self.d.address, "--warmup", "0",
                               "--duration", "0.5", *args],
                              capture_output=True, text=True, timeout=60)

    def test_prints_one_json_line(self):
        self.c.create_model("g", mlp_spec(), seed=1)
        for extra in ([], ["--raw", "--concurrency", "4"], ["--rate", "200"]):
            r = self.bench("--model", "g", *extra)
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = r.stdout.strip().splitlines()
            self.assertEqual(len(lines), 1, r.stdout)
            out = json.loads(lines[0])
            for k in ("requests_per_s", "p50_us", "p90_us", "p99_us", "p999_us", "errors"):
                self.assertIn(k, out)
            self.assertGreater(out["ok"], 0)
            self.assertEqual(out["errors"], {})
            self.assertLessEqual(out["p50_us"], out["p99_us"])
        self.assertGreater(stats(self.c, "g").inference_count, 0)

    def test_errors_are_counted_and_reported(self):
        r = self.bench("--model", "nope")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)
        self.c.create_model("full", mlp_spec(), seed=1)
        self.c.set_serving_config("full", max_queue_size=1, max_batch_size=64,
                                  max_queue_delay_us=100000, preferred_batch_sizes=[64])
        out = json.loads(self.bench("--model", "full", "--concurrency", "8").stdout)
        self.assertGreater(out["errors"].get("UNAVAILABLE", 0), 0)
        r = self.bench("--model", "g", "--concurrency", "0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--concurrency", r.stderr)


class PersistTest(unittest.TestCase):

    def test_settings_persist_across_restart(self):
        d = Daemon(name="batchpersist").start()
        try:
            c = d.client()
            c.create_model("p", mlp_spec(), seed=1, no_load=True)
            c.load_model("p", {"max_batch_size": 8, "preferred_batch_sizes": "2,4",
                               "max_queue_delay_us": "750", "enabled": True,
                               "instances": 2})
            c.set_serving_config("p", timeout_us=900000, priority_levels=3)
            c.create_model("gone", mlp_spec(), seed=1)
            c.set_serving_config("gone", max_batch_size=3)
            c.delete_model("gone")
            c.create_model("gone", mlp_spec(), seed=1)
            want = c.get_model("p").serving_config
            self.assertEqual(list(want.preferred_batch_sizes), [2, 4])
            self.assertEqual((want.max_batch_size, want.max_queue_delay_us, want.instances,
                              want.timeout_us, want.priority_levels),
                             (8, 750, 2, 900000, 3))
            d.restart()
            c = d.client()
            self.assertEqual(c.get_model("p").serving_config, want)
            self.assertEqual(c.get_model("gone").serving_config.max_batch_size, 32)
            self.assertEqual(c.infer("p", {"x": randn(1, 3, 4)})["y"].shape, (3, 3))
            cfg = c.set_serving_config("p", reset=True)
            self.assertEqual((cfg.max_batch_size, cfg.instances), (32, 1))
        finally:
            d.stop()


if __name__ == "__main__":
    fxtest.main()
