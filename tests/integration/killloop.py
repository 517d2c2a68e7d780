"""The kill -9 loop (issue 19), shared by test_kill9.py (CI: a few kills)
and scripts/kill9.sh (the long form, >= 100 kills).

One daemon, one data directory, and a training job (seeded, shuffled,
gradient noise, a checkpoint every few steps) that runs across the whole
loop. Each cycle: start fluxiond, check the store against the ledger of
what was acknowledged before the last kill, start a mix of writers (model
creates, weight imports, model deletes, dataset uploads, ONNX imports), and
kill -9 at a moment drawn from a seeded RNG, spread over the cycle's work.

Checked after every restart:
  - every acknowledged model, version, dataset and ONNX import is there and
    byte-equal (ExportWeights' bytes against the sha256 of what was sent or
    first exported; datasets by their sha256); an acknowledged delete stays
    deleted;
  - nothing partial is visible: every listed model has versions whose
    exported bytes match their recorded size and sha256 and load as
    safetensors, models of the writers' spec serve what their weights say,
    every listed dataset has all its samples;
  - the job is there, never FAILED or CANCELLED, its checkpoint step never
    goes back behind one a GetJob reported before the kill, and it trains
    on (its step passes the checkpoint it resumed from).
When a job finishes during the loop the next one (another seed) is
submitted. At the end the last job finishes without kills, and each
finished job's result is compared, bit for bit, with the same job run
uninterrupted in a fresh data directory.

    python3 tests/integration/killloop.py --kills 100 [--seed S] [--steps N]
"""
import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fxtest  # noqa: E402
from fxtest import Daemon, FluxionError, mlp_spec, np, randn  # noqa: E402

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

JOB_MODEL = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs",
                                        "mlp-blobs-model.json")))
SPEC = mlp_spec(n_in=32, hidden=64, n_out=8)     # ~9 KB of weights per version
DATASET_SAMPLES = 500
DAEMON_ARGS = ("--train-workers", "1")
BAD_JOB_STATES = (training_pb2.FAILED, training_pb2.CANCELLED)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def job_spec(steps, seed):
    return {"model": JOB_MODEL["name"], "dataset": "blobs", "model_version": 1,
            "feeds": [{"input": "x", "tensor": "x"}],
            "losses": [{"output": "logits", "kind": "cross_entropy", "target": "y"}],
            "optimizer": {"kind": "adam", "lr": 0.01, "grad_noise_eta": 0.01,
                          "grad_noise_gamma": 0.55},
            "batch_size": 32, "steps": steps, "epochs": 0, "shuffle": True,
            "validation_split": 0.2, "seed": seed, "checkpoint_every_steps": 3,
            "serve_when_done": False}


def setup_job_inputs(c):
    """What the jobs read; the same in the loop's and the reference's data dir."""
    c.upload_dataset("blobs", make_blobs.blobs(2000, 0))
    c.create_model(JOB_MODEL["name"], JOB_MODEL["spec"], seed=JOB_MODEL["seed"], no_load=True)


def dataset_arrays(name):
    """A writer's dataset, derived from its name (so a listed one can be
    checked for completeness even when its upload was never acknowledged)."""
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return make_blobs.blobs(DATASET_SAMPLES, seed)


class Ledger:
    """What the daemon acknowledged (an OK reply received) before a kill."""

    def __init__(self):
        self.lock = threading.Lock()
        self.models = {}        # name -> {version: sha256 or None (exists, bytes unknown)}
        self.deleted = set()    # models whose DeleteModel was acknowledged
        self.deleting = set()   # DeleteModel sent, no reply yet: either way after a kill
        self.datasets = {}      # name -> sha256
        self.onnx = set()       # models from ImportOnnx
        self.ops = 0            # acknowledged operations, all kinds


class Writers:
    """The cycle's work: threads that write until the daemon dies under them."""

    def __init__(self, address, ledger, cycle, rng):
        self.address, self.ledger, self.cycle = address, ledger, cycle
        self.stop = threading.Event()
        self.errors = []
        kinds = [self.models_writer, self.models_writer, self.datasets_writer, self.onnx_writer]
        # one seed per thread, drawn from the loop's RNG: reproducible choices
        self.threads = [threading.Thread(target=self.guard, args=(fn, i, rng.randrange(1 << 30)))
                        for i, fn in enumerate(kinds)]
        for t in self.threads:
            t.start()

    def guard(self, fn, wid, seed):
        c = fxtest.Client(self.address, timeout=15)
        try:
            fn(c, wid, random.Random(seed))
        except FluxionError:
            pass            # the daemon died under us: expected
        except Exception as e:  # noqa: BLE001 - reported by the loop
            self.errors.append("writer %d: %r" % (wid, e))
        finally:
            c.close()

    def ack(self, fn):
        with self.ledger.lock:
            fn()
            self.ledger.ops += 1

    def models_writer(self, c, wid, rng):
        L, k = self.ledger, 0
        while not self.stop.is_set():
            name = "c%d-w%d-%d" % (self.cycle, wid, k)
            k += 1
            c.create_model(name, SPEC, seed=k, no_load=(k % 3 == 0))
            self.ack(lambda: L.models.__setitem__(name, {1: None}))
            v1, data = c.export_weights(name)
            with L.lock:
                L.models[name][1] = sha(data)
            w = {n: a * rng.choice((0.5, 2.0, -1.0)) for n, a in
                 fxtest.safetensors.load(data).items()}
            blob = fxtest.safetensors.dump(w)
            v = c.import_weights(name, blob, chunk_bytes=rng.choice((1024, 4096, 1 << 20))).version
            self.ack(lambda: L.models[name].__setitem__(v, sha(blob)))
            if rng.random() < 0.4:
                with L.lock:
                    L.deleting.add(name)
                c.delete_model(name)

                def gone():
                    del L.models[name]
                    L.deleted.add(name)
                    L.deleting.discard(name)
                self.ack(gone)

    def datasets_writer(self, c, wid, rng):
        L, k = self.ledger, 0
        while not self.stop.is_set():
            name = "d%d-%d" % (self.cycle, k)
            k += 1
            ds = c.upload_dataset(name, dataset_arrays(name),
                                  chunk_samples=rng.choice((50, 200, 500)))
            self.ack(lambda: L.datasets.__setitem__(name, ds.sha256))

    def onnx_writer(self, c, wid, rng):
        L, k = self.ledger, 0
        while not self.stop.is_set():
            name = "x%d-%d" % (self.cycle, k)
            k += 1
            c.import_onnx(name, fxtest.onnx_relu_model(4 + k % 5), no_load=(k % 2 == 0),
                          chunk_bytes=rng.choice((16, 1 << 20)))
            self.ack(lambda: (L.onnx.add(name), L.models.__setitem__(name, {1: None})))

    def join(self, timeout=30):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
            if t.is_alive():
                self.errors.append("a writer hung after kill -9")


class KillLoop:
    """run() does the whole loop; fail(msg) raises AssertionError."""

    def __init__(self, kills, seed=1, steps=3000, max_delay=2.5, log=sys.stderr):
        self.kills, self.seed, self.steps, self.max_delay = kills, seed, steps, max_delay
        self.rng = random.Random(seed)
        self.ledger = Ledger()
        self.log = log
        self.d = None
        self.job_id = None
        self.job_seed = seed
        self.job_ckpt = 0                 # the highest checkpoint_step a GetJob reported
        self.finished = []                # (job seed, result weights bytes)
        self.stats = {"kills": 0, "job_resumes": 0}

    def say(self, msg):
        self.log.write("kill9: %s\n" % msg)
        self.log.flush()

    # ------------------------------------------------------------ checks
    def check_store(self, c, cycle):
        L = self.ledger
        models = {m.name: m for m in c.list_models()}
        for name in L.deleting:     # the kill came before the reply: done or not
            if name not in models:
                del L.models[name]
                L.deleted.add(name)
        L.deleting.clear()
        for name, versions in L.models.items():
            if name not in models:
                raise AssertionError("cycle %d: acknowledged model %s lost" % (cycle, name))
            have = {v.version: v for v in models[name].versions}
            for ver, digest in versions.items():
                if ver not in have:
                    raise AssertionError("cycle %d: %s: acknowledged version %d lost (stored %s)"
                                         % (cycle, name, ver, sorted(have)))
                if digest is not None and have[ver].weights_sha256 != digest:
                    raise AssertionError("cycle %d: %s v%d: sha256 %s, acknowledged %s"
                                         % (cycle, name, ver, have[ver].weights_sha256, digest))
        for name in L.deleted:
            if name in models:
                raise AssertionError("cycle %d: %s deleted (acknowledged) but listed"
                                     % (cycle, name))
        # older objects: their listed sha256 above, and the bytes of a few
        # drawn at random each cycle (a file must not change under its row)
        older = sorted(n for n in L.models if n in models and not n.startswith("c%d-" % cycle))
        spot = set(random.Random(self.seed * 100003 + cycle).sample(older, min(12, len(older))))
        for name, m in models.items():
            if not m.versions:
                raise AssertionError("cycle %d: %s listed without versions" % (cycle, name))
            fresh = name.startswith("c%d-" % cycle) or name not in L.models or name in spot
            for v in m.versions:
                # every version of the last cycle's models, of the ones never
                # acknowledged and of the spot checks; the others were
                # exported in their cycle and checked by their listed sha256
                if not fresh and L.models.get(name, {}).get(v.version) is not None:
                    continue
                _, data = c.export_weights(name, v.version)
                if len(data) != v.weights_bytes or sha(data) != v.weights_sha256:
                    raise AssertionError("cycle %d: %s v%d: exported %d bytes sha256 %s, listed "
                                         "%d bytes %s" % (cycle, name, v.version, len(data),
                                                          sha(data), v.weights_bytes,
                                                          v.weights_sha256))
                fxtest.safetensors.load(data)
                want = L.models.get(name, {}).get(v.version)
                if want is not None and sha(data) != want:
                    raise AssertionError("cycle %d: %s v%d: exported bytes differ from the "
                                         "acknowledged ones" % (cycle, name, v.version))
                if want is None and v.version in L.models.get(name, {}):
                    L.models[name][v.version] = sha(data)   # from now on, these bytes
            if fresh and name.startswith("c%d-" % cycle):
                if not m.loaded:
                    c.load_model(name)
                x = randn(cycle, 3, 32)
                np.testing.assert_allclose(c.infer(name, {"x": x})["y"],
                                           fxtest.mlp_forward(c.export_arrays(name), x),
                                           rtol=1e-4, atol=1e-4, err_msg=name)
        datasets = {d.name: d for d in c.list_datasets()}
        for name, digest in L.datasets.items():
            if name not in datasets:
                raise AssertionError("cycle %d: acknowledged dataset %s lost" % (cycle, name))
            if datasets[name].sha256 != digest:
                raise AssertionError("cycle %d: dataset %s sha256 %s, acknowledged %s"
                                     % (cycle, name, datasets[name].sha256, digest))
        for name, ds in datasets.items():
            want = 2000 if name == "blobs" else DATASET_SAMPLES
            if ds.num_samples != want:
                raise AssertionError("cycle %d: dataset %s listed with %d of %d samples"
                                     % (cycle, name, ds.num_samples, want))

    def check_job(self, c, cycle):
        """The job survived the kill and trains on; chains the next one when
        it finished."""
        job = c.get_job(self.job_id)
        if job.state in BAD_JOB_STATES:
            raise AssertionError("cycle %d: job %s %s after a kill: %s"
                                 % (cycle, job.id, training_pb2.JobState.Name(job.state),
                                    job.error))
        if job.checkpoint_step < self.job_ckpt:
            raise AssertionError("cycle %d: job %s checkpoint step %d, before the kill %d"
                                 % (cycle, job.id, job.checkpoint_step, self.job_ckpt))
        self.job_ckpt = job.checkpoint_step
        if job.state != training_pb2.SUCCEEDED:
            # it resumes: its step passes the checkpoint it resumed from
            deadline = time.monotonic() + 30
            while True:
                j = c.get_job(self.job_id)
                if j.state == training_pb2.SUCCEEDED or j.progress.step > job.checkpoint_step:
                    break
                if j.state in BAD_JOB_STATES or time.monotonic() > deadline:
                    raise AssertionError("cycle %d: job %s did not resume: %s step %d error %r"
                                         % (cycle, j.id, training_pb2.JobState.Name(j.state),
                                            j.progress.step, j.error))
                time.sleep(0.01)
            self.stats["job_resumes"] += 1
            job = j
        if job.state == training_pb2.SUCCEEDED:
            self.job_done(c, job)

    def job_done(self, c, job):
        if job.progress.step != self.steps:
            raise AssertionError("job %s ended at step %d of %d" % (job.id, job.progress.step,
                                                                   self.steps))
        _, data = c.export_weights(JOB_MODEL["name"], job.result_version)
        self.finished.append((self.job_seed, data))
        self.say("job %s (seed %d) finished: v%d" % (job.id, self.job_seed, job.result_version))
        self.job_seed += 1
        self.submit(c)

    def submit(self, c):
        self.job_id = c.submit_job(job_spec(self.steps, self.job_seed)).id
        self.job_ckpt = 0

    # ------------------------------------------------------------ the loop
    def run(self):
        t0 = time.monotonic()
        self.d = Daemon(DAEMON_ARGS, name="kill9").start()
        c = self.d.client()
        setup_job_inputs(c)
        self.submit(c)
        self.d.close_clients()
        for cycle in range(1, self.kills + 1):
            w = Writers(self.d.address, self.ledger, cycle, self.rng)
            delay = self.rng.uniform(0.05, self.max_delay)
            watch = fxtest.Client(self.d.address, timeout=5)
            end = time.monotonic() + delay
            try:        # the job's checkpoint steps GetJob reports until the kill
                while time.monotonic() < end:
                    self.job_ckpt = max(self.job_ckpt, watch.get_job(self.job_id).checkpoint_step)
                    time.sleep(min(0.02, max(0, end - time.monotonic())))
            finally:
                watch.close()
            self.d.kill9()
            self.stats["kills"] += 1
            w.join()
            if w.errors:
                raise AssertionError("cycle %d: %s" % (cycle, "; ".join(w.errors)))
            self.d.start()
            c = self.d.client()
            self.check_store(c, cycle)
            self.check_job(c, cycle)
            self.d.close_clients()
            if cycle % 10 == 0 or cycle == self.kills:
                L = self.ledger
                self.say("%d kills, %.0f s: %d acknowledged ops, %d models, %d deleted, "
                         "%d datasets, %d ONNX imports, %d jobs finished"
                         % (cycle, time.monotonic() - t0, L.ops, len(L.models), len(L.deleted),
                            len(L.datasets), len(L.onnx), len(self.finished)))
        # the last job finishes without kills
        c = self.d.client()
        job = self.wait_final(c)
        if job.state != training_pb2.SUCCEEDED:
            raise AssertionError("the last job ended %s: %s"
                                 % (training_pb2.JobState.Name(job.state), job.error))
        self.job_done(c, job)
        c.cancel_job(self.job_id)      # the one job_done chained
        self.d.stop()
        self.compare_with_uninterrupted()
        self.stats["seconds"] = round(time.monotonic() - t0, 1)
        self.stats["acknowledged_ops"] = self.ledger.ops
        self.stats["jobs_compared"] = len(self.finished)
        self.say("done: %s" % json.dumps(self.stats))
        return self.stats

    def wait_final(self, c, timeout=900):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = c.get_job(self.job_id)
            if job.state in FINAL_STATES:
                return job
            time.sleep(0.05)
        raise AssertionError("job %s did not finish within %d s" % (self.job_id, timeout))

    def compare_with_uninterrupted(self):
        ref = Daemon(DAEMON_ARGS, name="kill9-reference").start()
        c = ref.client()
        setup_job_inputs(c)
        for seed, data in self.finished:
            jid = c.submit_job(job_spec(self.steps, seed)).id
            deadline = time.monotonic() + 900
            while True:
                job = c.get_job(jid)
                if job.state in FINAL_STATES or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if job.state != training_pb2.SUCCEEDED:
                raise AssertionError("reference job (seed %d) ended %s: %s"
                                     % (seed, training_pb2.JobState.Name(job.state), job.error))
            _, want = c.export_weights(JOB_MODEL["name"], job.result_version)
            if want != data:
                raise AssertionError("job seed %d: the resumed job's weights (sha256 %s) differ "
                                     "from the uninterrupted run's (%s)"
                                     % (seed, sha(data), sha(want)))
        ref.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3000, help="steps of each training job")
    ap.add_argument("--max-delay", type=float, default=2.5,
                    help="a kill comes 0.05 .. this many seconds into a cycle")
    a = ap.parse_args()
    loop = KillLoop(a.kills, seed=a.seed, steps=a.steps, max_delay=a.max_delay)
    try:
        stats = loop.run()
    except AssertionError as e:
        sys.stderr.write("FAILED: %s\n" % e)
        for d in fxtest._DAEMONS:
            sys.stderr.write("\n" + d.log_tail() + "\n")
        sys.stderr.write("\nlogs and data kept in %s\n" % fxtest._WORK)
        sys.exit(1)
    print(json.dumps(stats))
    fxtest.shutil.rmtree(fxtest._WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
