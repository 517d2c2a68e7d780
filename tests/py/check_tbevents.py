#!/usr/bin/env python3
"""check_tbevents.py TEST_TBEVENTS - TensorBoard's own reader on our event files.

Runs `test_tbevents DIR` (which writes a known file, see write_sample in
tests/unit/test_tbevents.c) and reads DIR with TensorBoard's EventAccumulator:
every tag, step and value must come back. Then appends a torn record (as a
crash mid-write leaves) and checks the complete records still read.
Exit 77 (skipped) when the tensorboard package is missing."""
import math
import os
import subprocess
import sys
import tempfile

try:
    from tensorboard.backend.event_processing import event_accumulator
except ImportError:
    print("tensorboard is not installed; skipped", file=sys.stderr)
    sys.exit(77)

EXPECTED = {
    "loss": [(s, 1.0 / s) for s in range(1, 21)],
    "lr": [(s, 1e-3 * s) for s in range(1, 21)],
    "val_loss": [(s, 2.0 / s) for s in (5, 10, 15, 20)],
    "accuracy:logits": [(10, 0.5), (20, 0.75)],
}


def load(d):
    acc = event_accumulator.EventAccumulator(d, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return acc


def check(acc, where):
    tags = sorted(acc.Tags()["scalars"])
    if tags != sorted(EXPECTED):
        sys.exit(f"{where}: tags {tags}, expected {sorted(EXPECTED)}")
    for tag, want in EXPECTED.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        if [s for s, _ in got] != [s for s, _ in want]:
            sys.exit(f"{where}: {tag}: steps {[s for s, _ in got]}, expected {[s for s, _ in want]}")
        for (s, v), (_, w) in zip(got, want):
            if not math.isclose(v, w, rel_tol=1e-6):  # float32 on disk
                sys.exit(f"{where}: {tag} at step {s}: {v}, expected {w}")
        for e in acc.Scalars(tag):
            if abs(e.wall_time - __import__("time").time()) > 600:
                sys.exit(f"{where}: {tag}: wall_time {e.wall_time} is not now")


def main():
    exe = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([exe, d], check=True, capture_output=True, text=True).stdout.strip()
        if not (os.path.dirname(out) == d and os.path.basename(out).startswith("events.out.tfevents.")):
            sys.exit(f"unexpected event file name: {out}")
        check(load(d), "intact file")
        with open(out, "ab") as f:  # a record cut short by a crash
            f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x12\x34")
        check(load(d), "file with a torn last record")
    print("ok: tensorboard reads every scalar")


if __name__ == "__main__":
    main()
