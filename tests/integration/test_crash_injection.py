"""Crash and fault injection in the style of SQLite's (issue 19): fluxiond
runs with tests/fault/faultshim.c preloaded, which makes the Nth write,
pwrite, fsync, fdatasync, rename or open(O_CREAT) under the data directory
fail (EIO, ENOSPC) or kills the daemon (SIGKILL) just before it. For each
operation (create model, import weights, upload dataset, a training job
with its checkpoints and its finish, promote, model update, delete-version)
a count-only run learns the number K of such calls it makes, then N is
swept over 1..K (+1: a kill after the last call):

- eio/enospc: the RPC fails with an error naming the problem (or, where the
  failed call was best effort, succeeds with the object complete), the
  daemon keeps serving, and the same operation retried succeeds;
- kill: the daemon dies at the Nth call; the restarted daemon opens the
  store, and after each restart every object acknowledged before is intact
  (weights byte-equal through ExportWeights, datasets with the same bytes
  in their shards, jobs consistent), the faulted operation's object is
  either complete or absent, and no temporary file is left.

The restart after a kill runs with the shim loaded but unarmed (it counts
and changes nothing), so that the next N can be armed without another
start; the last check of each operation restarts without it.

CI form: a bounded sample of N per operation and mode (FX_CRASH_SAMPLES,
default 4 values). scripts/crashsweep.sh sets FX_CRASH_FULL=1 (every N)
and FX_CRASH_TABLE=FILE (a row per operation and mode).

Skipped (77) without the shim (FX_FAULT_SHIM, set by CMake; not built in
sanitizer builds: a plain shim cannot be preloaded ahead of ASan)."""
import hashlib
import json
import os
import sys
import time
import unittest

import fxtest
from fxtest import C, Daemon, FluxionError, mlp_spec, np, randn

# FX_FAULT_SHIM set but empty: a sanitizer build, which has no shim.
SHIM = os.environ.get("FX_FAULT_SHIM",
                      os.path.join(fxtest.SOURCE_DIR, "build", "libfx_faultshim.so"))
if not SHIM or not os.path.exists(SHIM):
    print("skipped: no fault shim at %r (FX_FAULT_SHIM; sanitizer builds have none)" % SHIM)
    sys.exit(fxtest.SKIP)

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

FULL = os.environ.get("FX_CRASH_FULL") == "1"
SAMPLES = int(os.environ.get("FX_CRASH_SAMPLES", "6"))
TABLE = os.environ.get("FX_CRASH_TABLE")
ONLY = os.environ.get("FX_CRASH_OPS", "")       # comma list of operations to run
MODES = os.environ.get("FX_CRASH_MODES", "eio,enospc,kill").split(",")
SPEC = mlp_spec(n_in=16, hidden=32, n_out=4)
SPEC2 = mlp_spec(n_in=16, hidden=24, n_out=4)   # an update: fc1/fc2 shapes change
JOB = {"model": "", "dataset": "base-ds", "feeds": [{"input": "x", "tensor": "x"}],
       "losses": [{"output": "y", "kind": "mse", "target": "t"}],
       "optimizer": {"kind": "sgd", "lr": 0.01}, "batch_size": 16, "steps": 12, "epochs": 0,
       "seed": 1, "checkpoint_every_steps": 4, "serve_when_done": False, "model_version": 1}
TEMP_MARKS = (".tmp.", ".staging-")
ERR_WORDS = ("Input/output error", "No space left", "I/O", "disk", "write", "fsync")


def sha(b):
    return hashlib.sha256(b).hexdigest()


def ds_arrays(seed):
    if isinstance(seed, str):
        seed = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)
    return {"x": randn(seed, 64, 16), "t": randn(seed + 1, 64, 4)}


def sample(k):
    """The N values to sweep for an operation of k counted calls: all of
    1..k+1 in the long form (k+1: after the last call), else SAMPLES spread
    over them (the first and the last included)."""
    ns = list(range(1, k + 2))
    if FULL or len(ns) <= SAMPLES:
        return ns
    step = (len(ns) - 1) / (SAMPLES - 1)
    return sorted({ns[round(i * step)] for i in range(SAMPLES)})


class Store:
    """One data directory under test, its daemon (shim preloaded), and what
    the client was told is stored: acked = {model: {version: sha256}},
    datasets = {name: (sha256, arrays)}, jobs = {id: result version}."""

    def __init__(self, test, name):
        self.t = test
        self.arm = os.path.join(fxtest._WORK, "arm-%s-%d" % (name, id(self)))
        self.log = self.arm + ".log"
        self.d = Daemon(["--train-workers", "1"], name="crash-" + name)
        self.env = {"LD_PRELOAD": SHIM, "FX_FAULT_ARM": self.arm, "FX_FAULT_LOG": self.log,
                    "FX_FAULT_PATH": os.path.realpath(self.d.data_dir)}
        self.d.env = dict(os.environ, **self.env)
        self.d.start()
        self.c = self.d.client(timeout=60)
        self.acked, self.datasets, self.jobs = {}, {}, {}

    # ---------------------------------------------------- arming the shim
    def armed(self, n, mode, fn):
        """fn() with the shim armed to fault the nth call (0: count only);
        returns (result or exception, calls counted)."""
        open(self.log, "w").close()     # truncated: the shim appends to its open file
        with open(self.arm + ".new", "w") as f:
            f.write("%d %s\n" % (n, mode))
        os.rename(self.arm + ".new", self.arm)
        try:
            out = fn()
        except FluxionError as e:
            out = e
        finally:
            os.unlink(self.arm)
        return out, self.counted()

    def faulted_call(self):
        """The call the shim failed last ("op file"), from its log."""
        with open(self.log) as f:
            for line in f:
                if line.endswith(" FAIL\n"):   # "N op path FAIL" (a path may hold spaces)
                    _, op, path = line[:-len(" FAIL\n")].split(" ", 2)
                    return "%s %s" % (op, os.path.relpath(path, self.d.data_dir))
        return ""

    def counted(self):
        if not os.path.exists(self.log):
            return 0
        with open(self.log) as f:
            return sum(1 for _ in f)

    def restart(self, shim=True):
        """Starts the daemon again (after a kill or a stop)."""
        if self.d.alive():
            self.d.stop()
        else:
            self.d.kill9()
        self.d.env = dict(os.environ, **self.env) if shim else None
        self.d.start()
        self.c = self.d.client(timeout=60)

    # ------------------------------------------------------- acknowledging
    def ack_model(self, name):
        m = self.c.get_model(name)
        self.acked[name] = {v.version: sha(self.c.export_weights(name, v.version)[1])
                            for v in m.versions}

    # ------------------------------------------------------------ checking
    def check(self, where):
        """The store's invariants (see the module's doc)."""
        t, c = self.t, self.c
        for j in c.list_jobs():     # a job resumed by the restart ends first
            if j.state not in FINAL_STATES:
                wait_job(c, j.id)
        models = {m.name: m for m in c.list_models()}
        for name, versions in self.acked.items():
            t.assertIn(name, models, "%s: acknowledged model %s lost" % (where, name))
            have = {v.version for v in models[name].versions}
            t.assertTrue(set(versions) <= have, "%s: %s acknowledged versions %s, stored %s"
                         % (where, name, sorted(versions), sorted(have)))
            for v, h in versions.items():
                t.assertEqual(sha(c.export_weights(name, v)[1]), h,
                              "%s: %s v%d changed" % (where, name, v))
        for name, m in models.items():
            t.assertTrue(m.versions, "%s: model %s listed without versions" % (where, name))
            for v in m.versions:
                _, data = c.export_weights(name, v.version)
                t.assertEqual((len(data), sha(data)), (v.weights_bytes, v.weights_sha256),
                              "%s: %s v%d's file" % (where, name, v.version))
        dsets = {d.name: d for d in c.list_datasets()}
        for name, (h, arrays) in self.datasets.items():
            t.assertIn(name, dsets, "%s: acknowledged dataset %s lost" % (where, name))
            t.assertEqual(dsets[name].sha256, h, "%s: dataset %s" % (where, name))
        for name, d in dsets.items():
            self.check_shards(where, d)
        for job_id, version in self.jobs.items():
            j = c.get_job(job_id)
            t.assertEqual(j.state, training_pb2.SUCCEEDED, "%s: job %s" % (where, job_id))
            t.assertEqual(j.result_version, version)
        for j in c.list_jobs():
            if j.state == training_pb2.SUCCEEDED:
                t.assertIn(j.result_version, {v.version for v in models[j.spec.model].versions},
                           "%s: job %s's result version is gone" % (where, j.id))
        left = []
        for root, dirs, files in os.walk(self.d.data_dir):
            for n in files + dirs:
                if any(m in n for m in TEMP_MARKS):
                    left.append(os.path.join(root, n))
        tmp = os.path.join(self.d.data_dir, "tmp")
        if os.path.isdir(tmp):
            left += [os.path.join(tmp, n) for n in os.listdir(tmp)]
        return models, dsets, left

    def check_shards(self, where, d):
        """A dataset's shards on disk hold the bytes its record's SHA-256
        names (the sum datasets.c computes: per tensor, then combined)."""
        base = os.path.join(self.d.data_dir, "datasets")
        found = [os.path.join(r, d.name) for r, ds, _ in os.walk(base) if d.name in ds]
        self.t.assertTrue(found, "%s: dataset %s has no directory" % (where, d.name))
        shards = sorted(f for f in os.listdir(found[0]) if f.endswith(".safetensors"))
        self.t.assertEqual(len(shards), d.num_shards, "%s: dataset %s's shards %s"
                           % (where, d.name, shards))
        if d.name in self.datasets:
            arrays = self.datasets[d.name][1]
            got = {}
            for s in shards:
                with open(os.path.join(found[0], s), "rb") as f:
                    for k, a in fxtest.safetensors.load(f.read()).items():
                        got.setdefault(k, []).append(a)
            for k, a in arrays.items():
                np.testing.assert_array_equal(np.concatenate(got[k]), a,
                                              "%s: dataset %s tensor %s" % (where, d.name, k))


# ------------------------------------------------------------ operations
# Each: prepare(st, tag) (unarmed), run(st, tag) (armed: the operation),
# settle(st, tag, out, ok) (after it, on the daemon that ran it or the
# restarted one: asserts all-or-nothing and records what is acknowledged).

def wait_job(c, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = c.get_job(job_id)
        if j.state in FINAL_STATES:
            return j
        time.sleep(0.02)
    raise AssertionError("job %s did not end within %d s" % (job_id, timeout))


class Op:
    name = ""
    path = ""       # a substring of the paths that count ("": the whole data dir)

    def prepare(self, st, tag):
        pass

    def model(self, tag):
        return "%s-%s" % (self.name.replace("_", "-"), tag)


class CreateModel(Op):
    name = "create_model"

    def run(self, st, tag):
        return st.c.create_model(self.model(tag), SPEC, seed=7)

    def settle(self, st, tag, models, ok):
        name = self.model(tag)
        if ok:
            st.t.assertIn(name, models)
        if name in models:   # complete: versions checked by Store.check
            st.t.assertEqual([v.version for v in models[name].versions], [1])
            st.ack_model(name)
            y = st.c.infer(name, {"x": randn(3, 2, 16)}, version="1")["y"]
            st.t.assertEqual(y.shape, (2, 4))
            return True
        return False


class ImportWeights(Op):
    name = "import_weights"

    def prepare(self, st, tag):
        st.c.create_model(self.model(tag), SPEC, seed=8, no_load=True)
        st.ack_model(self.model(tag))

    def weights(self, st, tag):
        return {k: a * 2 + 1 for k, a in st.c.export_arrays(self.model(tag), 1).items()}

    def run(self, st, tag):
        return st.c.import_weights(self.model(tag), self.weights(st, tag), chunk_bytes=1024)

    def settle(self, st, tag, models, ok):
        name = self.model(tag)
        vs = [v.version for v in models[name].versions]
        if ok:
            st.t.assertIn(2, vs)
        st.t.assertIn(vs, ([1], [1, 2]))
        if 2 in vs:
            got = st.c.export_arrays(name, 2)
            for k, a in self.weights(st, tag).items():
                np.testing.assert_array_equal(got[k], a)
            st.ack_model(name)
            return True
        return False


class UploadDataset(Op):
    name = "upload_dataset"

    def run(self, st, tag):
        return st.c.upload_dataset(self.model(tag), ds_arrays(tag), description="d")

    def settle(self, st, tag, dsets, ok, out=None):
        name = self.model(tag)
        if ok:
            st.t.assertIn(name, dsets)
        if name in dsets:
            st.datasets[name] = (dsets[name].sha256, ds_arrays(tag))
            st.check_shards("settle", dsets[name])
            return True
        return False


class TrainJob(Op):
    """A job of 12 steps with a checkpoint every 4 and its finish (the
    version it stores, the job's final record)."""
    name = "train_job"

    def prepare(self, st, tag):
        if "base-ds" not in st.datasets:
            d = st.c.upload_dataset("base-ds", ds_arrays(1000))
            st.datasets["base-ds"] = (d.sha256, ds_arrays(1000))
        st.c.create_model(self.model(tag), SPEC, seed=9, no_load=True)
        st.ack_model(self.model(tag))

    def run(self, st, tag):
        job = st.c.submit_job(dict(JOB, model=self.model(tag)))
        st.last_job = job.id
        return wait_job(st.c, job.id)

    def settle(self, st, tag, models, ok):
        name = self.model(tag)
        jobs = [j for j in st.c.list_jobs() if j.spec.model == name]
        st.t.assertLessEqual(len(jobs), 1)
        vs = [v.version for v in models[name].versions]
        st.t.assertIn(vs, ([1], [1, 2]))
        if not jobs:
            st.t.assertEqual(vs, [1])
            return False
        j = jobs[0]
        if j.state == training_pb2.SUCCEEDED:
            st.t.assertEqual(j.result_version, 2)
            st.t.assertEqual(vs, [1, 2])
            st.jobs[j.id] = 2
            st.ack_model(name)
            return True
        st.t.assertNotEqual(j.state, training_pb2.SUCCEEDED)
        if j.state in FINAL_STATES:
            st.t.assertEqual(j.result_version, 0, "a job that did not succeed stored a version")
            if 2 in vs:  # a job that failed after storing its version: complete, not acked
                st.ack_model(name)
            return False
        wait_job(st.c, j.id)    # queued or running again after the restart
        return self.settle(st, tag, {m.name: m for m in st.c.list_models()}, ok)


class Checkpoint(TrainJob):
    """The same job, counting only the calls on its checkpoint file (its
    temporary file, the fsync, the rename)."""
    name = "checkpoint"
    path = "checkpoint.safetensors"


class Promote(Op):
    name = "promote"

    def prepare(self, st, tag):
        name = self.model(tag)
        st.c.create_model(name, SPEC, seed=10)
        st.c.import_weights(name, {k: a + 1 for k, a in st.c.export_arrays(name).items()})
        st.ack_model(name)

    def run(self, st, tag):
        return st.c.promote(self.model(tag), 1, reason="crash test")

    def settle(self, st, tag, models, ok):
        name = self.model(tag)
        prod = models[name].production_version
        if ok:
            st.t.assertEqual(prod, 1)
        st.t.assertIn(prod, (1, 2))
        x = randn(4, 2, 16)
        y = st.c.infer(name, {"x": x})["y"]     # the served version is the production one
        np.testing.assert_allclose(y, fxtest.mlp_forward(st.c.export_arrays(name, prod), x),
                                   rtol=1e-4, atol=1e-4)
        return prod == 1


class UpdateSpec(Op):
    name = "update_spec"

    def prepare(self, st, tag):
        st.c.create_model(self.model(tag), SPEC, seed=11, no_load=True)
        st.ack_model(self.model(tag))

    def run(self, st, tag):
        return st.c.update_model_spec(self.model(tag), SPEC2)

    def settle(self, st, tag, models, ok):
        name = self.model(tag)
        vs = [v.version for v in models[name].versions]
        if ok:
            st.t.assertIn(2, vs)
        st.t.assertIn(vs, ([1], [1, 2]))
        if 2 in vs:
            st.t.assertEqual(st.c.export_arrays(name, 2)["fc1.weight"].shape, (24, 16))
            st.ack_model(name)
            return True
        return False


class DeleteVersion(Op):
    name = "delete_version"

    def prepare(self, st, tag):
        name = self.model(tag)
        st.c.create_model(name, SPEC, seed=12, no_load=True)
        st.c.import_weights(name, {k: a + 1 for k, a in st.c.export_arrays(name).items()})
        st.ack_model(name)

    def run(self, st, tag):
        return st.c.delete_version(self.model(tag), 1)

    def settle(self, st, tag, models, ok):
        name = self.model(tag)
        vs = [v.version for v in models[name].versions]
        if ok:
            st.t.assertEqual(vs, [2])
        st.t.assertIn(vs, ([2], [1, 2]))
        if vs == [2]:
            st.acked[name].pop(1, None)
            st.t.assertFalse(any(f.startswith("v1.") for r, _, fs in
                                 os.walk(os.path.join(st.d.data_dir, "models"))
                                 if r.endswith("/" + name) for f in fs),
                             "a deleted version's file is still there")
            return True
        return False


OPS = [CreateModel(), ImportWeights(), UploadDataset(), TrainJob(), Checkpoint(), Promote(),
       UpdateSpec(), DeleteVersion()]


class CrashInjectionTest(unittest.TestCase):

    def sweep(self, op):
        st = Store(self, op.name)
        rows = []
        try:
            self.run_op(st, op, rows)
        finally:
            if TABLE:
                with open(TABLE, "a") as f:
                    for r in rows:
                        f.write(json.dumps(r) + "\n")
        st.d.stop()

    def run_op(self, st, op, rows):
        # K: the calls one run of the operation makes
        op.prepare(st, "0")
        out, k = st.armed(0, "eio" + (" " + op.path if op.path else ""),
                           lambda: op.run(st, "0"))
        self.assertNotIsInstance(out, Exception, "the count-only run failed: %s" % out)
        self.assertGreater(k, 0, "%s made no counted call" % op.name)
        op.settle(st, "0", *self.listing(st, op), True)
        st.check("count-only run")
        ns = sample(k)
        sys.stderr.write("%s: K = %d counted calls; N in %s\n" % (op.name, k, ns))
        for mode in MODES:
            row = {"op": op.name, "mode": mode, "k": k, "swept": 0, "recovered": 0,
                   "failed_clean": 0, "ok_despite": 0, "complete": 0, "absent": 0, "killed": 0,
                   "faulted": 0,
                   "failures": []}
            rows.append(row)
            for n in ns:
                tag = "%s%d" % ({"eio": "1", "enospc": "2", "kill": "3"}[mode], n)
                try:
                    self.one(st, op, mode, n, tag, row)
                    row["recovered"] += 1
                except Exception as e:  # noqa: BLE001 - counted, then raised at the end
                    row["failures"].append("N=%d: %s" % (n, str(e).splitlines()[0][:300]))
                    sys.stderr.write("FAIL %s %s N=%d: %s\n%s\n" % (op.name, mode, n, e,
                                                                  st.d.log_tail(20)))
                    if not st.d.alive():
                        st.restart()
                row["swept"] += 1
            if not row["failures"] and not row["faulted" if mode != "kill" else "killed"]:
                row["failures"].append("no N made the operation fail: is the shim working?")
        # the last restart without the shim: the same store, the same answers
        st.restart(shim=False)
        _, _, left = st.check("restart without the shim")
        self.assertEqual(left, [], "temporary files left after the restart")
        bad = ["%s/%s %s" % (r["op"], r["mode"], f) for r in rows for f in r["failures"]]
        self.assertEqual(bad, [], "\n".join(bad))

    def listing(self, st, op):
        """What settle looks at: (the models or datasets by name,)."""
        for j in st.c.list_jobs():
            if j.state not in FINAL_STATES:
                wait_job(st.c, j.id)
        if isinstance(op, UploadDataset):
            return ({d.name: d for d in st.c.list_datasets()},)
        return ({m.name: m for m in st.c.list_models()},)

    def one(self, st, op, mode, n, tag, row):
        op.prepare(st, tag)
        arm_mode = mode + (" " + op.path if op.path else "")
        out, _ = st.armed(n, arm_mode, lambda: op.run(st, tag))
        failed = isinstance(out, Exception)
        if mode != "kill" and st.faulted_call():
            row["faulted"] = row.get("faulted", 0) + 1
        if isinstance(out, training_pb2.Job) and out.state != training_pb2.SUCCEEDED:
            failed = True
            out = FluxionError(C.INTERNAL, "job %s: %s" % (
                training_pb2.JobState.Name(out.state), out.error))
        if mode == "kill":
            # The count can differ from the count-only run's by a call or
            # two (SQLite checkpoints its WAL when it has grown, a job's
            # events file is synced on time): a kill at any call is a crash
            # to recover from, and no kill (N past this run's calls) is
            # a kill -9 after the operation.
            if st.d.wait_exit(30 if failed else 0.2) is not None:
                row["killed"] = row.get("killed", 0) + 1
            else:
                row["not_reached"] = row.get("not_reached", 0) + (n <= row["k"])
            st.d.kill9()
            st.restart()
        else:
            self.assertTrue(st.d.alive(), "the daemon died of an injected %s" % mode)
            if failed and n <= row["k"]:
                msg = getattr(out, "message", str(out))
                self.assertTrue(any(w in msg for w in ERR_WORDS),
                                "the error does not name the problem: %r" % msg)
                if getattr(out, "code", None) is not None and isinstance(out, FluxionError) \
                        and not isinstance(op, TrainJob):
                    self.assertIn(out.code, (C.INTERNAL, C.RESOURCE_EXHAUSTED, C.UNAVAILABLE,
                                             C.DATA_LOSS, C.ABORTED), msg)
            row["failed_clean" if failed else "ok_despite"] += 1
            if not failed and n <= row["k"]:
                row.setdefault("ok_despite_calls", []).append("N=%d %s" % (n, st.faulted_call()))
        there = op.settle(st, tag, *self.listing(st, op), not failed and mode != "kill")
        _, _, left = st.check("%s N=%d" % (mode, n))
        self.assertEqual(left, [], "temporary files left: %s" % left)
        row["complete" if there else "absent"] += 1
        if mode != "kill" and failed:
            # the retry (unarmed) succeeds
            retry = "r" + tag
            op.prepare(st, retry)
            out = op.run(st, retry)
            if isinstance(out, training_pb2.Job):
                self.assertEqual(out.state, training_pb2.SUCCEEDED, out.error)
            self.assertTrue(op.settle(st, retry, *self.listing(st, op), True))
            st.check("retry")


def _add(op):
    def test(self):
        if ONLY and op.name not in ONLY.split(","):
            self.skipTest("not in FX_CRASH_OPS")
        self.sweep(op)
    test.__name__ = "test_" + op.name
    setattr(CrashInjectionTest, test.__name__, test)


for _op in OPS:
    _add(_op)


if __name__ == "__main__":
    fxtest.main()
