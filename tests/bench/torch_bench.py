#!/usr/bin/env python3
"""torch_bench.py - the fluxion-bench training models in PyTorch.

    torch_bench.py train --model M [--threads N] [--steps S] [--warmup W]

Same models, batch sizes, optimizers, learning rates, warmup and timed steps
as tests/bench/fluxion_bench.c, and the same JSON line with "impl":"torch":

    {"model":"mlp","threads":2,"samples_per_s":...,"final_loss":...,"impl":"torch",...}

Runs under torch 1.13 (Debian) and 2.x (PyPI, tests/bench/venv.sh).

The data is a pool of 8 pre-generated batches (inputs N(0,1), random integer
labels, fixed seed), cycled, so data generation is not timed. The step loop is
PyTorch's usual one: zero_grad, forward, loss.backward(), step.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn

POOL = 8


def build_logreg():
    return nn.Linear(20, 5)


def build_mlp():
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def build_cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


class LstmClassifier(nn.Module):
    """embedding 100->64, one LSTM layer 64->128 over the sequence, the last
    hidden state -> dense 128->10."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 64)
        self.lstm = nn.LSTM(64, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, tokens):
        _, (h, _) = self.lstm(self.emb(tokens))
        return self.fc(h[-1])


def dense_flops(i, o):
    """3 products (forward, d input, d weight) of 2*in*out flops per sample."""
    return 3.0 * 2.0 * i * o


def conv_flops(i, o, k, pixels):
    return dense_flops(i * k * k, o) * pixels


def lstm_flops(i, h, steps):
    return (dense_flops(i, 4 * h) + dense_flops(h, 4 * h)) * steps


# name -> (builder, batch, sample shape, classes, optimizer, lr, flops/sample, steps, warmup);
# the defaults match fluxion_bench.c's table.
MODELS = {
    "logreg": (build_logreg, 256, (20,), 5, "rmsprop", 1e-3, dense_flops(20, 5), 10000, 1000),
    "mlp": (build_mlp, 128, (784,), 10, "adam", 1e-3,
            dense_flops(784, 512) + dense_flops(512, 256) + dense_flops(256, 10), 200, 20),
    "cnn": (build_cnn, 64, (1, 28, 28), 10, "adam", 1e-3,
            conv_flops(1, 32, 3, 28 * 28) + conv_flops(32, 64, 3, 14 * 14)
            + dense_flops(3136, 128) + dense_flops(128, 10), 50, 5),
    "lstm": (LstmClassifier, 32, (32,), 10, "adam", 1e-3,
             lstm_flops(64, 128, 32) + dense_flops(128, 10), 200, 20),
}
VOCAB = {"lstm": 100}  # models whose input is token ids


def fail_usage(msg):
    print(f"torch_bench: {msg}\n(see torch_bench.py --help)", file=sys.stderr)
    sys.exit(2)


def positive(lo):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"needs an integer >= {lo}, got '{s}'")
        if v < lo:
            raise argparse.ArgumentTypeError(f"needs an integer >= {lo}, got '{s}'")
        return v
    return parse


def train(args):
    if args.model not in MODELS:
        fail_usage(f"train: unknown model '{args.model}' (known: {', '.join(MODELS)})")
    build, batch, shape, classes, optim, lr, flops, steps, warmup = MODELS[args.model]
    batch = args.batch if args.batch is not None else batch
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            print(f"torch_bench: device {args.device} is not available", file=sys.stderr)
            return 1
        # fluxion keeps f32 products exact unless asked (fx_set_tf32): so does this run
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    steps = args.steps if args.steps is not None else steps
    warmup = args.warmup if args.warmup is not None else warmup
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)

    net = build().to(dev)
    if optim == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    else:
        opt = torch.optim.RMSprop(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    if args.model in VOCAB:
        xs = [torch.randint(0, VOCAB[args.model], (batch, *shape)).to(dev) for _ in range(POOL)]
    else:
        xs = [torch.randn(batch, *shape).to(dev) for _ in range(POOL)]
    ys = [torch.randint(0, classes, (batch,)).to(dev) for _ in range(POOL)]

    t0 = c0 = 0.0
    loss = None
    for s in range(warmup + steps):
        if s == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0, c0 = time.perf_counter(), time.process_time()
        p = s % POOL
        opt.zero_grad()
        loss = loss_fn(net(xs[p]), ys[p])
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)  # queued kernels are timed too
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    sps = steps * batch / dt
    print(json.dumps({"model": args.model, "threads": args.threads,
                      "samples_per_s": round(sps, 1), "final_loss": round(loss.item(), 6),
                      "impl": "torch", "device": args.device, "batch": batch, "steps": steps, "warmup": warmup,
                      "ms_per_step": round(1e3 * dt / steps, 4),
                      "gflops": round(sps * flops * 1e-9, 3), "cpu_util": round(dc / dt, 2),
                      "torch": torch.__version__}, separators=(",", ":")))
    return 0


def main():
    ap = argparse.ArgumentParser(description="Training-throughput benchmark in PyTorch "
                                 "(the same models as fluxion-bench train).")
    sub = ap.add_subparsers(dest="cmd")
    tr = sub.add_parser("train", help="time training steps, print one JSON line")
    tr.add_argument("--model", required=True, help="logreg, mlp, cnn or lstm")
    tr.add_argument("--threads", type=positive(1), default=1, help="torch.set_num_threads")
    tr.add_argument("--steps", type=positive(1), default=None, help="timed steps")
    tr.add_argument("--warmup", type=positive(0), default=None, help="untimed steps first")
    tr.add_argument("--device", default="cpu", help="cpu (default) or cuda:N")
    tr.add_argument("--batch", type=positive(1), default=None, help="samples per step")
    tr.add_argument("--tf32", action="store_true", help="allow TF32 in f32 products (CUDA)")
    args = ap.parse_args()  # argparse exits 2 on bad flags
    if args.cmd != "train":
        fail_usage("missing command (train)")
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
