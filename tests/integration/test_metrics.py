"""ClusterService/GetMetrics on a real daemon: the text passes `promtool
check metrics` (that part skipped without promtool); inference moves the
request counters and histograms; the counters (and ModelStatistics) keep
growing across a reload, new serving settings and an unload and load; a
bad input counts as INVALID_ARGUMENT; a team's member sees only its team's
model series (and the process-wide ones), an admin every team's; a deleted
model's series go; a running job's throughput and its team's scheduler
rows show, to its team and the admin only."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import fxtest
from fxtest import C, DaemonTest, mlp_spec, randn, start_with_admin_token
from fluxion.v1 import cluster_pb2

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402

MODEL = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs",
                                    "mlp-blobs-model.json")))
JOB = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs", "mlp-blobs.json")))

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text):
    """{(name, frozenset(labels)): value}, checking each line's form."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            raise AssertionError("not a sample line: %r" % line)
        labels = {}
        if m.group(2):
            rest = m.group(2)
            for lm in LABEL.finditer(rest):
                labels[lm.group(1)] = unescape(lm.group(2))
        key = (m.group(1), frozenset(labels.items()))
        if key in out:
            raise AssertionError("series twice: %r" % line)
        out[key] = float(m.group(3))
    return out


def value(samples, name, **labels):
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    return sum(found) if found else None


class MetricsTest(DaemonTest):
    @classmethod
    def setUpClass(cls):
        cls.d, secret = start_with_admin_token(name="metrics")
        cls.admin = cls.d.client(token=secret)
        cls.admin.create_team("ta")
        cls.admin.create_team("tb")
        cls.a = cls.d.client(token=cls.admin.create_token("am", "member", team="ta").secret)
        cls.b = cls.d.client(token=cls.admin.create_token("bm", "member", team="tb").secret)

    def metrics(self, c):
        return c.cluster.GetMetrics(cluster_pb2.GetMetricsRequest(), timeout=30).text

    def test_promtool_accepts_the_text(self):
        # model names allow no quote or backslash (the writer's escaping is
        # tests/unit/test_metrics.c's); dots and dashes come back as they are
        self.a.create_model("p.v-1_x", mlp_spec(), seed=1)
        self.a.infer("p.v-1_x", {"x": randn(1, 2, 4)})
        text = self.metrics(self.admin)
        s = parse(text)
        self.assertEqual(value(s, "fluxion_inference_requests_total", model="p.v-1_x",
                               code="OK"), 1)
        for fam in ("fluxion_process_resident_memory_bytes", "fluxion_process_threads",
                    "fluxion_process_open_fds", "fluxion_grpc_calls_total",
                    "fluxion_grpc_open_streams", "fluxion_device_memory_total_bytes"):
            self.assertIsNotNone(value(s, fam), fam)
        self.assertGreater(value(s, "fluxion_process_resident_memory_bytes"), 1 << 20)
        if not shutil.which("promtool"):
            self.skipTest("promtool is not installed (Debian package prometheus)")
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())

    def test_counters_move_and_survive_reconfiguration(self):
        a = self.a
        a.create_model("m", mlp_spec(), seed=2)
        labels = dict(team="ta", model="m", version="1")

        def snap():
            s = parse(self.metrics(a))
            st = a.model_statistics("m")   # served versions only
            return s, st[0] if st else None
        for _ in range(3):
            a.infer("m", {"x": randn(3, 2, 4)})
        s, st = snap()
        self.assertEqual(value(s, "fluxion_inference_requests_total", code="OK", **labels), 3)
        self.assertEqual(value(s, "fluxion_inference_samples_total", **labels), 6)
        self.assertEqual(value(s, "fluxion_inference_request_duration_seconds_count", **labels), 3)
        self.assertEqual(value(s, "fluxion_inference_request_duration_seconds_bucket",
                               le="+Inf", **labels), 3)
        self.assertGreater(value(s, "fluxion_inference_request_duration_seconds_sum", **labels), 0)
        self.assertEqual(value(s, "fluxion_inference_compute_duration_seconds_count", **labels), 3)
        self.assertEqual(value(s, "fluxion_inference_queue_duration_seconds_count", **labels), 3)
        self.assertEqual(value(s, "fluxion_inference_batch_size_count", **labels), 3)
        self.assertEqual(value(s, "fluxion_inference_batch_size_sum", **labels), 6)
        self.assertEqual(value(s, "fluxion_inference_batch_size_bucket", le="1", **labels), 0)
        self.assertEqual(value(s, "fluxion_inference_batch_size_bucket", le="2", **labels), 3)
        self.assertEqual(value(s, "fluxion_model_loaded", **labels), 1)
        self.assertEqual(st.inference_stats.success.count, 3)
        loads = value(s, "fluxion_model_loads_total", **labels)
        # a reload, new settings, an unload and a load: the same record counts on
        a.load_model("m")
        a.infer("m", {"x": randn(4, 1, 4)})
        a.load_model("m", {"max_batch_size": 8})
        a.infer("m", {"x": randn(5, 1, 4)})
        a.unload_model("m")
        s, _ = snap()
        self.assertEqual(value(s, "fluxion_model_loaded", **labels), 0)
        self.assertEqual(value(s, "fluxion_model_unloads_total", **labels), 1)
        a.load_model("m")
        a.infer("m", {"x": randn(6, 1, 4)})
        s, st = snap()
        self.assertEqual(value(s, "fluxion_inference_requests_total", code="OK", **labels), 6)
        self.assertEqual(value(s, "fluxion_inference_samples_total", **labels), 9)
        self.assertEqual(value(s, "fluxion_inference_request_duration_seconds_count", **labels), 6)
        # load, load with settings (stored and rebuilt, then loaded: two), load
        self.assertEqual(value(s, "fluxion_model_loads_total", **labels), loads + 4)
        self.assertEqual(st.inference_stats.success.count, 6)
        self.assertEqual(st.inference_count, 9)
        self.assertEqual(st.execution_count, 6)
        # a new version is a record of its own; version 1's stays
        a.import_weights("m", a.export_weights("m")[1])
        a.infer("m", {"x": randn(7, 1, 4)})
        s, _ = snap()
        self.assertEqual(value(s, "fluxion_inference_requests_total", code="OK", team="ta",
                               model="m", version="2"), 1)
        self.assertEqual(value(s, "fluxion_inference_requests_total", code="OK", **labels), 6)
        # deleted: its series go
        a.delete_model("m")
        s = parse(self.metrics(a))
        self.assertIsNone(value(s, "fluxion_inference_requests_total", team="ta", model="m"))

    def test_deleted_version_leaves(self):
        """A deleted version's series go with it (its statistics record was
        kept for ever: ~5 KB per version of a model whose versions turn
        over, found by scripts/soak.sh); the others stay."""
        a = self.a
        a.create_model("dv", mlp_spec(), seed=3)
        w = a.export_arrays("dv")
        a.import_weights("dv", {k: v * 2 for k, v in w.items()})
        a.infer("dv", {"x": randn(4, 1, 4)}, version="1")
        a.infer("dv", {"x": randn(4, 1, 4)})
        s = parse(self.metrics(a))
        for v in ("1", "2"):
            self.assertEqual(value(s, "fluxion_inference_requests_total", code="OK", team="ta",
                                   model="dv", version=v), 1)
        a.delete_version("dv", 1)
        s = parse(self.metrics(a))
        self.assertIsNone(value(s, "fluxion_inference_requests_total", model="dv", version="1"))
        self.assertEqual(value(s, "fluxion_inference_requests_total", code="OK", team="ta",
                               model="dv", version="2"), 1)

    def test_failures_count_by_code(self):
        a = self.a
        a.create_model("f", mlp_spec(), seed=3)
        a.infer("f", {"x": randn(1, 1, 4)})
        self.assertCode(C.INVALID_ARGUMENT, a.infer, "f", {"x": randn(1, 2, 5)})
        self.assertCode(C.INVALID_ARGUMENT, a.infer, "f", {"x": randn(1, 2, 7)})
        s = parse(self.metrics(a))
        labels = dict(team="ta", model="f", version="1")
        self.assertEqual(value(s, "fluxion_inference_requests_total", code="INVALID_ARGUMENT",
                               **labels), 2)
        self.assertEqual(value(s, "fluxion_inference_requests_total", code="OK", **labels), 1)
        # failures are not in the durations of requests that succeeded
        self.assertEqual(value(s, "fluxion_inference_request_duration_seconds_count", **labels), 1)
        (st,) = a.model_statistics("f")
        self.assertEqual(st.inference_stats.fail.count, 2)

    def test_team_scoping(self):
        self.a.create_model("sa", mlp_spec(), seed=4)
        self.b.create_model("sb", mlp_spec(), seed=5)
        self.a.infer("sa", {"x": randn(1, 1, 4)})
        self.b.infer("sb", {"x": randn(1, 1, 4)})
        sa, sb, adm = (parse(self.metrics(c)) for c in (self.a, self.b, self.admin))
        teams = lambda s: {dict(ls).get("team") for (_, ls) in s} - {None}
        self.assertEqual(teams(sa), {"ta"})
        self.assertEqual(teams(sb), {"tb"})
        self.assertLessEqual({"ta", "tb"}, teams(adm))
        self.assertIsNone(value(sb, "fluxion_inference_requests_total", model="sa"))
        self.assertEqual(value(sb, "fluxion_inference_requests_total", model="sb", code="OK"), 1)
        self.assertEqual(value(adm, "fluxion_inference_requests_total", model="sa", code="OK"), 1)
        # the process-wide ones for everyone
        for s in (sa, sb):
            self.assertIsNotNone(value(s, "fluxion_process_threads"))
            self.assertIsNotNone(value(s, "fluxion_grpc_calls_in_flight"))

    def test_training_metrics(self):
        a = self.a
        a.upload_dataset("blobs", make_blobs.blobs(500, 0))
        a.create_model(MODEL["name"], MODEL["spec"], seed=MODEL["seed"], no_load=True)
        spec = dict(JOB, serve_when_done=False, epochs=0, steps=10 ** 7, model_version=1)
        job = a.submit_job(spec)
        labels = dict(team="ta", job=job.id)
        deadline = time.time() + 60
        while True:   # running, with a throughput once its first steps are done
            s = parse(self.metrics(a))
            sps = value(s, "fluxion_training_samples_per_second", **labels)
            if sps or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertGreater(sps or 0, 0)
        self.assertEqual(value(s, "fluxion_training_jobs", team="ta", state="running"), 1)
        self.assertEqual(value(s, "fluxion_scheduler_team_running_jobs", team="ta"), 1)
        self.assertEqual(value(s, "fluxion_scheduler_team_slots_used", team="ta"), 1)
        self.assertEqual(value(s, "fluxion_scheduler_device_slots_used", device="cpu"), 1)
        # team tb sees none of it, the admin all of it
        sb = parse(self.metrics(self.b))
        self.assertIsNone(value(sb, "fluxion_training_samples_per_second", **labels))
        self.assertIsNone(value(sb, "fluxion_scheduler_team_running_jobs", team="ta"))
        self.assertEqual(value(sb, "fluxion_scheduler_device_slots_used", device="cpu"), 1)
        adm = parse(self.metrics(self.admin))
        self.assertIsNotNone(value(adm, "fluxion_training_samples_per_second", **labels))
        a.cancel_job(job.id)
        a.wait_job(job.id, timeout=60)
        s = parse(self.metrics(a))
        self.assertEqual(value(s, "fluxion_training_jobs", team="ta", state="cancelled"), 1)
        self.assertEqual(value(s, "fluxion_training_jobs", team="ta", state="running"), 0)
        self.assertIsNone(value(s, "fluxion_training_samples_per_second", **labels))

if __name__ == "__main__":
    fxtest.main()
