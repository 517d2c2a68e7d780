"""A data-parallel job cross-checked against PyTorch DDP over gloo (issue
15): the same MLP from the same initial weights (version 1 exported as
safetensors and loaded into torch), the same data in the same order (no
shuffle: the global batch of step s is rows [s*2b, (s+1)*2b), rank r takes
its contiguous half), the same steps (2 epochs with a partial last batch),
SGD and Adam: the weights of fluxiond's world_size 2 job and of 2 torch
processes (torch.distributed, gloo, init_method file://) agree within
|a - b| <= 1e-4 + 1e-3 |b| (two libraries' float kernels, not one).

DDP averages the rank gradients (sum / world); fluxion weights each rank by
its share of the global batch (the mean over the global batch, also for a
partial last batch of unequal shares). The torch side scales each rank's
loss by share * world, which makes DDP's average that same mean.

Skipped (77) with a visible message when torch (with gloo) is missing for
this python (Debian's python3-torch has it)."""
import json
import os
import sys
import tempfile
import time

import fxtest
from fxtest import DaemonTest, np

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn
except ImportError:
    print("SKIPPED: torch is not installed for this python")
    sys.exit(fxtest.SKIP)
if not dist.is_available() or not dist.is_gloo_available():
    print("SKIPPED: this torch has no gloo backend")
    sys.exit(fxtest.SKIP)

sys.path.insert(0, os.path.join(fxtest.SOURCE_DIR, "examples", "jobs"))
import make_blobs  # noqa: E402
from fluxion_client.jobs import FINAL_STATES, training_pb2  # noqa: E402

MODEL = json.load(open(os.path.join(fxtest.SOURCE_DIR, "examples", "jobs",
                                    "mlp-blobs-model.json")))
TOL_ABS, TOL_REL = 1e-4, 1e-3
N, B, EPOCHS = 330, 16, 2   # 330 = 10 * 32 + 10: a last global batch of 5 + 5


class TorchMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def torch_rank(rank, world, init_file, init, data, opt, out):
    """One DDP process: trains and (rank 0) saves the weights to out."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                            world_size=world)
    model = TorchMLP()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()}, strict=True)
    ddp = nn.parallel.DistributedDataParallel(model)
    if opt == "sgd":
        o = torch.optim.SGD(ddp.parameters(), lr=0.1)
    else:
        o = torch.optim.Adam(ddp.parameters(), lr=0.01)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    n = len(y)
    for _ in range(EPOCHS):
        for at in range(0, n, world * B):
            g = min(world * B, n - at)
            base, rem = divmod(g, world)
            off = at + rank * base + min(rank, rem)
            b = base + (1 if rank < rem else 0)
            loss = nn.functional.cross_entropy(ddp(x[off:off + b]), y[off:off + b])
            o.zero_grad()
            (loss * (b * world / g)).backward()   # DDP's average becomes the global mean
            o.step()
    if rank == 0:
        np.savez(out, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    dist.destroy_process_group()


class DistTorchTest(DaemonTest):
    DAEMON_ARGS = ("--train-workers", "2", "--threads", "1")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data = make_blobs.blobs(N, 3)
        cls.c.upload_dataset("blobs", cls.data)
        cls.c.create_model(MODEL["name"], MODEL["spec"], seed=MODEL["seed"], no_load=True)

    def wait(self, job_id, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.c.get_job(job_id)
            if job.state in FINAL_STATES:
                return job
            time.sleep(0.05)
        self.fail("job %s did not end within %d s" % (job_id, timeout))

    def check(self, opt, lr):
        spec = {"model": MODEL["name"], "dataset": "blobs", "model_version": 1,
                "feeds": [{"input": "x", "tensor": "x"}],
                "losses": [{"output": "logits", "kind": "cross_entropy", "target": "y"}],
                "optimizer": {"kind": opt, "lr": lr}, "batch_size": B, "epochs": EPOCHS,
                "shuffle": False, "seed": 1, "world_size": 2, "placement": ["cpu", "cpu"]}
        job = self.wait(self.c.submit_job(spec).id)
        self.assertEqual(job.state, training_pb2.SUCCEEDED, job.error)
        ours = self.c.export_arrays(MODEL["name"], job.result_version)
        init = self.c.export_arrays(MODEL["name"], 1)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "torch.npz")
            mp.spawn(torch_rank, args=(2, os.path.join(tmp, "init"), init, self.data, opt, out),
                     nprocs=2, join=True)
            theirs = dict(np.load(out))
        self.assertEqual(sorted(ours), sorted(theirs))
        worst = maxdiff = 0.0
        for k in ours:
            d = np.abs(ours[k].astype(np.float64) - theirs[k].astype(np.float64))
            maxdiff = max(maxdiff, float(d.max()))
            worst = max(worst, float((d / (TOL_ABS + TOL_REL * np.abs(theirs[k]))).max()))
        print("%s: fluxion world 2 vs torch DDP gloo world 2: max abs diff %.2g, %.4f of the "
              "tolerance" % (opt, maxdiff, worst))
        self.assertLessEqual(worst, 1.0)
        # and the training moved the weights (the comparison is not of two copies of init)
        self.assertGreater(max(float(np.abs(ours[k] - init[k]).max()) for k in ours), 1e-3)

    def test_sgd(self):
        self.check("sgd", 0.1)

    def test_adam(self):
        self.check("adam", 0.01)


if __name__ == "__main__":
    fxtest.main()
