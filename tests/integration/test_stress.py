"""Concurrency stress (issue 19): many clients call every mutating RPC on the
same few models, datasets and jobs at once for a bounded time, then the
state is checked through the RPCs and the data directory.

Calls: CreateModel/DeleteModel, RepositoryModelLoad/Unload, ImportWeights,
SetServingConfig, SetCanary, UpdateVersions (promote, rollback, set_alias,
pin/unpin, delete_version, keep_last), UpdateModelSpec, ImportOnnx,
UploadDataset/DeleteDataset, SubmitJob/CancelJob/ResumeJob/UpdateJob,
WatchJob streams, ModelInfer (gRPC and HTTP), ModelStatistics, GetMetrics,
ExportWeights, ExportOnnx.

A call may fail only with a refusal that the race explains (RACY below),
never with INTERNAL or UNKNOWN; every call has a deadline, so a hang fails
as DEADLINE_EXCEEDED; a crash is the daemon gone. Afterwards:
- every listed model's versions are readable and their bytes hash to the
  weights_sha256 and size the model lists; production, every alias and the
  canary name a stored version; a loaded model answers;
- "keep" (never deleted) has ModelStatistics success counts per version
  equal to the OK answers the clients counted per version (gRPC + HTTP);
- every job is in a final state once the stress ends (running ones are
  cancelled: CANCELLED is the resumable state);
- the data directory holds exactly the files the store lists: one
  v<N>.safetensors per listed version, one folder per listed dataset,
  nothing in tmp/;
- the daemon exits 0 on SIGTERM (and its ASan build finds nothing).

Bounded for CI: FX_STRESS_SECONDS (default 30) of hammering by
FX_STRESS_THREADS (default 16) clients; set them higher to look harder."""
import hashlib
import http.client
import json
import os
import random
import re
import tempfile
import threading
import time

import fxtest
from fxtest import C, np
from fluxion_client import client as fxclient
from fluxion_client._stubs import training_pb2
from fluxion_client.jobs import FINAL_STATES

CANCELLED = training_pb2.CANCELLED

SECONDS = float(os.environ.get("FX_STRESS_SECONDS", "30"))
THREADS = int(os.environ.get("FX_STRESS_THREADS", "16"))
CALL_TIMEOUT = 60.0   # seconds: a call still unanswered then is a hang
SEED = int(os.environ.get("FX_STRESS_SEED", "1"))

MODELS = ("m0", "m1")          # created, deleted, created again
KEEP = "keep"                  # never deleted: its statistics can be tallied
ONNX = "onnx0"                 # ImportOnnx'ed, deleted, imported again
DATASETS = ("d0", "d1")

# What a call may answer while other threads change the same objects: gone
# (NOT_FOUND), not loaded / in use / a version served or aliased
# (FAILED_PRECONDITION), created again meanwhile (ALREADY_EXISTS), a
# concurrent change won (ABORTED), a cap reached (RESOURCE_EXHAUSTED),
# unloaded under the request (UNAVAILABLE).
RACY = {C.NOT_FOUND, C.FAILED_PRECONDITION, C.ALREADY_EXISTS, C.ABORTED,
        C.RESOURCE_EXHAUSTED, C.UNAVAILABLE}
HTTP_RACY = {400, 404, 409, 429, 503}
# INVALID_ARGUMENT that a race explains: weights exported before another
# thread changed the spec, a canary version that production moved to since
# the client looked.
RACY_INVALID = {(C.INVALID_ARGUMENT, "import_weights"): "shape",
                (C.INVALID_ARGUMENT, "canary"): "is the main version"}


def spec(hidden):
    return fxtest.mlp_spec(n_in=4, hidden=hidden, n_out=3)


def job_spec(model, dataset, steps):
    return {
        "model": model, "dataset": dataset,
        "feeds": [{"input": "x", "tensor": "x"}],
        "losses": [{"output": "y", "kind": "cross_entropy", "target": "y"}],
        "optimizer": {"kind": "sgd", "lr": 0.01},
        "batch_size": 8, "epochs": 0, "steps": steps, "seed": 1,
        "checkpoint_every_steps": 3, "serve_when_done": True,
    }


class Stress:
    """The shared state of one run: clients, tallies, unexpected answers."""

    def __init__(self, test, daemon):
        self.t, self.d = test, daemon
        self.lock = threading.Lock()
        self.calls = {}            # op -> count
        self.refused = {}          # (op, code) -> count
        self.unexpected = []
        self.ok_by_version = {}    # (KEEP, version str) -> OK inference answers
        self.jobs = []             # every job id submitted
        self.stop_at = 0.0
        rng = np.random.default_rng(SEED)
        self.x = rng.standard_normal((2, 4)).astype(np.float32)
        self.data = {"x": rng.standard_normal((64, 4)).astype(np.float32),
                     "y": rng.integers(0, 3, 64).astype(np.int64)}
        self.onnx = fxtest.onnx_relu_model(4)

    def note(self, op, code=None, msg=""):
        with self.lock:
            self.calls[op] = self.calls.get(op, 0) + 1
            if code is not None:
                self.refused[(op, code)] = self.refused.get((op, code), 0) + 1
                if msg:
                    self.unexpected.append("%s: %s" % (op, msg))

    # ------------------------------------------------------------ the ops
    def ops(self):
        return [
            (3, "create", self.op_create), (2, "delete", self.op_delete),
            (3, "load", self.op_load), (2, "unload", self.op_unload),
            (3, "import_weights", self.op_import), (2, "serving_config", self.op_config),
            (2, "canary", self.op_canary), (4, "versions", self.op_versions),
            (1, "update_spec", self.op_update_spec), (1, "import_onnx", self.op_import_onnx),
            (1, "upload_dataset", self.op_upload), (1, "delete_dataset", self.op_delete_dataset),
            (2, "submit_job", self.op_submit), (2, "cancel_job", self.op_cancel),
            (1, "resume_job", self.op_resume), (1, "update_job", self.op_update_job),
            (1, "watch_job", self.op_watch), (8, "infer", self.op_infer),
            (4, "infer_http", self.op_infer_http), (1, "statistics", self.op_stats),
            (1, "metrics", self.op_metrics), (2, "export_weights", self.op_export),
            (1, "export_onnx", self.op_export_onnx),
        ]

    def any_model(self, r):
        return r.choice(MODELS + (KEEP, KEEP, ONNX))

    def op_create(self, c, r):
        name = r.choice(MODELS)
        c.create_model(name, spec(r.choice([6, 8])), seed=r.randint(1, 9),
                       no_load=r.random() < 0.3)

    def op_delete(self, c, r):
        c.delete_model(r.choice(MODELS + (ONNX,)))

    def op_load(self, c, r):
        if r.random() < 0.5:
            c.load_model(self.any_model(r))
        else:
            c.load_model(self.any_model(r), {"max_batch_size": r.choice([2, 8, 16])})

    def op_unload(self, c, r):
        c.unload_model(self.any_model(r))

    def op_import(self, c, r):
        name = r.choice(MODELS + (KEEP,))
        # this model's own weights: their shapes fit unless the spec changed
        # since, which is a refusal this test accepts (INVALID_ARGUMENT
        # naming a tensor, see run())
        _, data = c.export_weights(name)
        c.import_weights(name, data, source="stress", no_promote=r.random() < 0.3)

    def op_config(self, c, r):
        c.set_serving_config(self.any_model(r), max_batch_size=r.choice([1, 4, 8]),
                             instances=r.choice([1, 2]), max_queue_delay_us=r.choice([0, 500]))

    def latest(self, c, name):
        return [v.version for v in c.get_model(name).versions]

    def op_canary(self, c, r):
        name = r.choice(MODELS + (KEEP, KEEP))
        if r.random() < 0.3:
            c.set_canary(name, off=True)
            return
        versions = self.latest(c, name)
        c.set_canary(name, version=r.choice(versions), percent=r.choice([10, 50, 100]))

    def op_versions(self, c, r):
        name = r.choice(MODELS + (KEEP, KEEP))
        versions = self.latest(c, name)
        v = r.choice(versions)
        what = r.choice(["promote", "rollback", "alias", "pin", "unpin", "delete_version",
                         "delete_version", "keep_last"])
        if what == "promote":
            c.promote(name, v, reason="stress")
        elif what == "rollback":
            c.rollback(name)
        elif what == "alias":
            c.set_alias(name, r.choice(["stable", "beta"]), v)
        elif what == "pin":
            c.pin(name, v)
        elif what == "unpin":
            c.unpin(name, v)
        elif what == "delete_version":
            c.delete_version(name, v)
        else:
            c.set_retention(name, r.choice([0, 2, 3, 5]))

    def op_update_spec(self, c, r):
        c.update_model_spec(r.choice(MODELS + (KEEP,)), spec(r.choice([6, 8])))

    def op_import_onnx(self, c, r):
        c.import_onnx(ONNX, self.onnx, no_load=r.random() < 0.3)

    def op_upload(self, c, r):
        c.upload_dataset(r.choice(DATASETS), self.data, chunk_samples=16)

    def op_delete_dataset(self, c, r):
        c.delete_dataset(r.choice(DATASETS))

    def op_submit(self, c, r):
        job = c.submit_job(job_spec(r.choice(MODELS + (KEEP,)), r.choice(DATASETS),
                                    r.choice([6, 12, 30])))
        with self.lock:
            self.jobs.append(job.id)

    def some_job(self, r):
        with self.lock:
            return r.choice(self.jobs[-8:]) if self.jobs else None

    def op_cancel(self, c, r):
        j = self.some_job(r)
        if j:
            c.cancel_job(j)

    def op_resume(self, c, r):
        j = self.some_job(r)
        if j:
            c.resume_job(j)

    def op_update_job(self, c, r):
        j = self.some_job(r)
        if j:
            c.update_job(j, priority=r.choice(["low", "normal", "high"]))

    def op_watch(self, c, r):
        j = self.some_job(r)
        if not j:
            return
        # a few events, then the stream is dropped (or it ends with the job)
        for i, _ in enumerate(c.watch_job(j, timeout=CALL_TIMEOUT)):
            if i >= r.randint(0, 3):
                break

    def tally(self, name, version):
        if name == KEEP:
            with self.lock:
                key = str(version)
                self.ok_by_version[key] = self.ok_by_version.get(key, 0) + 1

    def op_infer(self, c, r):
        name = self.any_model(r)
        resp = c.infer_raw(fxclient.infer_request(name, {"x": self.x}))
        self.tally(name, resp.model_version)

    def op_infer_http(self, c, r):
        name = self.any_model(r)
        body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                       "data": self.x.ravel().tolist()}]})
        conn = http.client.HTTPConnection("127.0.0.1", self.d.http_port, timeout=CALL_TIMEOUT)
        try:
            conn.request("POST", "/v2/models/%s/infer" % name, body,
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status == 200:
            self.tally(name, json.loads(data)["model_version"])
            return None
        return resp.status, data[:300]

    def op_stats(self, c, r):
        c.model_statistics(r.choice(["", KEEP, r.choice(MODELS)]))

    def op_metrics(self, c, r):
        text = c.cluster.GetMetrics(fxtest.stubs(c.channel).cluster_pb2.GetMetricsRequest(),
                                    timeout=CALL_TIMEOUT).text
        if "fluxion" not in text:
            return 0, "GetMetrics text without a fluxion family"
        return None

    def op_export(self, c, r):
        name = self.any_model(r)
        versions = self.latest(c, name)
        c.export_weights(name, r.choice(versions + [0]))

    def op_export_onnx(self, c, r):
        c.export_onnx(r.choice(MODELS + (KEEP,)))

    # ------------------------------------------------------------ workers
    def worker(self, seed):
        r = random.Random(seed)
        c = self.d.client(timeout=CALL_TIMEOUT)
        ops = self.ops()
        weights = [w for w, _, _ in ops]
        while time.monotonic() < self.stop_at and self.d.alive():
            (_, op, fn), = r.choices(ops, weights)
            try:
                bad = fn(c, r)
            except fxtest.FluxionError as e:
                if e.code in RACY or (e.code, op) in RACY_INVALID and \
                        RACY_INVALID[(e.code, op)] in e.message:
                    self.note(op, e.code.name)
                else:
                    self.note(op, e.code.name, "%s %s" % (e.code.name, e.message))
                continue
            except Exception as e:  # noqa: BLE001 - any other failure is the test's
                self.note(op, "exception", "%s: %r" % (type(e).__name__, e))
                continue
            if bad is None:
                self.note(op)
            elif op == "infer_http" and bad[0] in HTTP_RACY:
                self.note(op, "HTTP %d" % bad[0])
            else:
                self.note(op, "bad", "%r" % (bad,))


class StressTest(fxtest.DaemonTest):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        pass   # a daemon of its own per test (setUp): --http-listen

    @classmethod
    def tearDownClass(cls):
        pass

    def setUp(self):
        port_file = tempfile.mktemp(prefix="http-port-", dir=fxtest._WORK)
        self.d = fxtest.Daemon(["--train-workers", "2", "--http-listen", "127.0.0.1:0",
                                "--http-port-file", port_file], name="stress").start()
        with open(port_file) as f:
            self.d.http_port = int(f.read())
        self.c = self.d.client(timeout=CALL_TIMEOUT)

    def test_everything_at_once(self):
        s = Stress(self, self.d)
        c = self.c
        for name in MODELS + (KEEP,):
            c.create_model(name, spec(8), seed=1)
        c.import_onnx(ONNX, s.onnx)
        for name in DATASETS:
            c.upload_dataset(name, s.data)

        s.stop_at = time.monotonic() + SECONDS
        threads = [threading.Thread(target=s.worker, args=(SEED * 1000 + i,), daemon=True)
                   for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 3 * CALL_TIMEOUT)
        total = sum(s.calls.values())
        print("\n%d calls in %.0f s by %d clients" % (total, SECONDS, THREADS))
        for op in sorted(s.calls):
            refusals = ", ".join("%s %d" % (code, n) for (o, code), n in sorted(s.refused.items())
                                 if o == op)
            print("  %-16s %6d  %s" % (op, s.calls[op], refusals))
        self.assertTrue(self.d.alive(), "the daemon died during the stress\n" + self.d.log_tail())
        self.assertFalse(any(t.is_alive() for t in threads), "a client thread hung")
        self.assertEqual(sorted(set(s.unexpected))[:40], [], "%d unexpected answers" % len(s.unexpected))
        self.assertGreater(total, 5 * THREADS, s.calls)   # it did run (ASan/TSan are slow)

        self.check_jobs(s)
        self.check_models(s)
        self.check_statistics(s)
        self.check_data_dir()
        self.d.stop()   # SIGTERM: exit status 0 within the grace
        # and the store opens again with the same listing
        self.d.start()
        self.c = self.d.client(timeout=CALL_TIMEOUT)
        self.check_models(s)
        self.d.stop()

    def check_jobs(self, s):
        """Cancel what still runs; then every job ends, within a bound."""
        c = self.c
        for j in c.list_jobs():
            if j.state not in FINAL_STATES:
                try:
                    c.cancel_job(j.id)
                except fxtest.FluxionError as e:
                    self.assertEqual(e.code, C.FAILED_PRECONDITION, e.message)  # just ended
        deadline = time.monotonic() + CALL_TIMEOUT
        for j in c.list_jobs():
            while j.state not in FINAL_STATES:
                self.assertLess(time.monotonic(), deadline, "job %s did not end: %s" % (j.id, j))
                time.sleep(0.05)
                j = c.get_job(j.id)
        listed = {j.id for j in c.list_jobs()}
        self.assertTrue(set(s.jobs) <= listed, set(s.jobs) - listed)

    def check_models(self, s):
        c = self.c
        models = c.list_models()
        self.assertIn(KEEP, [m.name for m in models])
        for m in models:
            stored = {v.version: v for v in m.versions}
            self.assertTrue(stored, "%s lists no version" % m.name)
            for v in m.versions:
                got, data = c.export_weights(m.name, v.version)
                self.assertEqual(got, v.version)
                self.assertEqual(len(data), v.weights_bytes, (m.name, v.version))
                self.assertEqual(hashlib.sha256(data).hexdigest(), v.weights_sha256,
                                 (m.name, v.version))
            self.assertIn(m.production_version, stored, "%s: production names a deleted "
                          "version" % m.name)
            for a in m.aliases:
                self.assertIn(a.version, stored, "%s: alias %s -> deleted version %d"
                              % (m.name, a.name, a.version))
            canary = m.serving_config.canary
            if canary.percent:
                self.assertIn(canary.version, stored, "%s: canary -> deleted version %d"
                              % (m.name, canary.version))
            if m.loaded:
                resp = c.infer_raw(fxclient.infer_request(m.name, {"x": s.x}))
                self.assertIn(int(resp.model_version), stored, m.name)
                s.tally(m.name, resp.model_version)

    def check_statistics(self, s):
        """KEEP's OK answers per version as the clients counted them = the
        daemon's: fluxion_inference_requests_total{code="OK"} (GetMetrics:
        every version with a record, served now or not) and, for the
        versions served now, ModelStatistics' success count. A version
        without a record must be one deleted since (its record goes)."""
        c = self.c
        stored = {str(v.version) for v in c.get_model(KEEP).versions}
        text = c.cluster.GetMetrics(fxtest.stubs(c.channel).cluster_pb2.GetMetricsRequest(),
                                    timeout=CALL_TIMEOUT).text
        metric = {}
        for line in text.splitlines():
            m = re.match(r'fluxion_inference_requests_total\{(.*)\} (\S+)$', line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("model") in (KEEP, "default/" + KEEP) and labels.get("code") == "OK":
                metric[labels["version"]] = int(float(m.group(2)))
        self.assertTrue(metric, "no fluxion_inference_requests_total for %s" % KEEP)
        for version, n in sorted(s.ok_by_version.items()):
            if version not in metric:
                self.assertNotIn(version, stored, "no metrics for %s version %s, which "
                                 "answered %d times" % (KEEP, version, n))
                continue
            self.assertEqual(metric[version], n, "%s version %s: the metrics count %d OK "
                             "answers, the clients %d" % (KEEP, version, metric[version], n))
        for version, n in metric.items():
            self.assertEqual(n, s.ok_by_version.get(version, 0), (KEEP, version))
        served = c.model_statistics(KEEP)
        for st in served:
            self.assertEqual(st.inference_stats.success.count, s.ok_by_version.get(st.version, 0),
                             "%s version %s: ModelStatistics' success count vs the clients'"
                             % (KEEP, st.version))
            self.assertGreaterEqual(st.inference_count, st.inference_stats.success.count)
        print("  %s: OK answers per version %s; %d served now"
              % (KEEP, dict(sorted(s.ok_by_version.items(), key=lambda kv: int(kv[0]))),
                 len(served)))

    def check_data_dir(self):
        """Files on disk = what the store lists."""
        c, root = self.c, self.d.data_dir
        want = {(m.name, "v%d.safetensors" % v.version)
                for m in c.list_models() for v in m.versions}
        got = set()
        models_dir = os.path.join(root, "models")
        for team in os.listdir(models_dir):
            for name in os.listdir(os.path.join(models_dir, team)):
                for f in os.listdir(os.path.join(models_dir, team, name)):
                    got.add((name, f))
        self.assertEqual(sorted(got - want), [], "files no version lists")
        self.assertEqual(sorted(want - got), [], "listed versions without a file")
        want_ds = {d.name for d in c.list_datasets()}
        got_ds = set()
        ds_dir = os.path.join(root, "datasets")
        for team in os.listdir(ds_dir) if os.path.isdir(ds_dir) else ():
            for name in os.listdir(os.path.join(ds_dir, team)):
                got_ds.add(name)
        self.assertEqual(got_ds, want_ds, "dataset folders vs the listing")
        # a job's folder belongs to a listed job; a checkpoint outlives only
        # a CANCELLED run (ResumeJob continues from it)
        jobs = {j.id: j for j in c.list_jobs()}
        jobs_dir = os.path.join(root, "jobs")
        for jid in os.listdir(jobs_dir) if os.path.isdir(jobs_dir) else ():
            self.assertIn(jid, jobs, "jobs/%s: no such job listed" % jid)
            if os.path.exists(os.path.join(jobs_dir, jid, "checkpoint.safetensors")):
                self.assertEqual(jobs[jid].state, CANCELLED,
                                 "job %s is %s but kept its checkpoint" % (jid, jobs[jid].state))
        tmp = os.path.join(root, "tmp")
        self.assertEqual(os.listdir(tmp) if os.path.isdir(tmp) else [], [], "files left in tmp/")


if __name__ == "__main__":
    fxtest.main()
