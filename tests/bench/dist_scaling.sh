#!/usr/bin/env bash
# dist_scaling.sh - data-parallel scaling across daemons (issue 15): the
# training samples/s of the bench models mlp (784->512->256->10) and cnn
# (two conv3x3 + pool, 3136->128->10) with world size 1 (one fluxiond) and
# world size 2 (two fluxiond peered on loopback, rank 0 on A, rank 1 on
# B), one engine thread each (--threads 1), the same per-rank batch; with
# the communication time per step (comm_ms) and the fraction of it hidden
# behind backward (comm_overlap) that rank 0 reports. Not a timed test: a
# benchmark whose table goes in docs/distributed.md ("Scaling"); figures
# depend on the machine's load, printed with the table.
#
#   tests/bench/dist_scaling.sh [STEPS_MLP] [STEPS_CNN] [BATCH]   (150 30 64)
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${FX_BUILD_DIR:-build}
export FX_SOURCE_DIR=$PWD FLUXIOND=${FLUXIOND:-$B/fluxiond} FX_PY_OUT=${FX_PY_OUT:-$B/python}
export PYTHONPATH=$FX_PY_OUT:$PWD/clients/python:$PWD/tests/integration OPENBLAS_NUM_THREADS=1
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec /usr/bin/python3 - "${1:-150}" "${2:-30}" "${3:-64}" <<'EOF'
import os, secrets, socket, sys, time
import numpy as np
import fxtest
from fluxion_client.jobs import FINAL_STATES, training_pb2

steps = {"mlp": int(sys.argv[1]), "cnn": int(sys.argv[2])}
batch = int(sys.argv[3])
MODELS = {
    "mlp": ({"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 784]}],
             "nodes": [{"name": "fc1", "op": "dense", "inputs": ["x"],
                        "attrs": {"in_features": 784, "out_features": 512, "activation": "relu"}},
                       {"name": "fc2", "op": "dense", "inputs": ["fc1"],
                        "attrs": {"in_features": 512, "out_features": 256, "activation": "relu"}},
                       {"name": "fc3", "op": "dense", "inputs": ["fc2"],
                        "attrs": {"in_features": 256, "out_features": 10}}],
             "outputs": [{"name": "logits", "source": "fc3"}]}, (784,)),
    "cnn": ({"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 1, 28, 28]}],
             "nodes": [{"name": "c1", "op": "conv2d", "inputs": ["x"],
                        "attrs": {"in_channels": 1, "out_channels": 32, "kernel_size": 3,
                                  "padding": 1, "activation": "relu"}},
                       {"name": "p1", "op": "maxpool2d", "inputs": ["c1"], "attrs": {"kernel_size": 2}},
                       {"name": "c2", "op": "conv2d", "inputs": ["p1"],
                        "attrs": {"in_channels": 32, "out_channels": 64, "kernel_size": 3,
                                  "padding": 1, "activation": "relu"}},
                       {"name": "p2", "op": "maxpool2d", "inputs": ["c2"], "attrs": {"kernel_size": 2}},
                       {"name": "f", "op": "flatten", "inputs": ["p2"]},
                       {"name": "fc1", "op": "dense", "inputs": ["f"],
                        "attrs": {"in_features": 3136, "out_features": 128, "activation": "relu"}},
                       {"name": "fc2", "op": "dense", "inputs": ["fc1"],
                        "attrs": {"in_features": 128, "out_features": 10}}],
             "outputs": [{"name": "logits", "source": "fc2"}]}, (1, 28, 28)),
}


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


tok = os.path.join(fxtest._WORK, "peer.token")
with open(tok, "w") as f:
    f.write(secrets.token_hex(32))
pa, pb = free_port(), free_port()
common = ["--peer-token-file", tok, "--threads", "1", "--checkpoint-steps", "100000",
          "--log-level", "warn"]
a = fxtest.Daemon(["--listen", "127.0.0.1:%d" % pa, "--node-name", "A",
                   "--peers", "B=127.0.0.1:%d" % pb] + common, name="A").start()
b = fxtest.Daemon(["--listen", "127.0.0.1:%d" % pb, "--node-name", "B",
                   "--peers", "A=127.0.0.1:%d" % pa] + common, name="B").start()
c = a.client(timeout=600)
rng = np.random.default_rng(0)
rows = []
try:
    for name, (spec, shape) in MODELS.items():
        n = batch * 2 * 8
        c.upload_dataset(name, {"x": rng.standard_normal((n,) + shape).astype(np.float32),
                                "y": rng.integers(0, 10, n).astype(np.int64)})
        for world in (1, 2):
            m = "%s-w%d" % (name, world)
            c.create_model(m, spec, seed=1, no_load=True)
            js = {"model": m, "dataset": name, "model_version": 1,
                  "feeds": [{"input": "x", "tensor": "x"}],
                  "losses": [{"output": "logits", "kind": "cross_entropy", "target": "y"}],
                  "optimizer": {"kind": "adam", "lr": 1e-3}, "batch_size": batch,
                  "steps": steps[name], "epochs": 0, "shuffle": True, "seed": 1,
                  "serve_when_done": False, "world_size": world,
                  "placement": ["cpu", "B/cpu"] if world == 2 else []}
            job = c.submit_job(js)
            while True:
                j = c.get_job(job.id)
                if j.state in FINAL_STATES:
                    break
                time.sleep(0.1)
            assert j.state == training_pb2.SUCCEEDED, j.error
            met = {mv.name: mv.value for mv in j.progress.metrics}
            rows.append((name, world, j.progress.samples_per_second,
                         met.get("comm_ms", 0.0), met.get("comm_overlap", 0.0)))
finally:
    a.stop(); b.stop()
base = {r[0]: r[2] for r in rows if r[1] == 1}
print("| model | world | samples/s | speed-up | comm ms/step | overlapped |")
print("|---|---|---|---|---|---|")
for name, world, sps, cms, ov in rows:
    print("| %s | %d | %.0f | %.2fx | %.2f | %.0f%% |" % (name, world, sps, sps / base[name], cms,
                                                         100 * ov))
print("per-rank batch %d; one engine thread per daemon; load average after: %s"
      % (batch, open("/proc/loadavg").read().split()[:3]))
EOF
