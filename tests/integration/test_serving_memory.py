"""Memory a served model may take for one request (issue 11, defect 8): a
small request whose output would not fit in a reply is refused before it
runs (RESOURCE_EXHAUSTED naming the output and its size), so the daemon's
peak memory does not move; a large batch's memory is given back after it
(the instance's arena is not kept at its high-water mark); creating a model
does not hold several copies of its weights at once.

Memory is read from /proc/<daemon pid>/status: VmHWM (peak resident) and
VmRSS (resident now). Under ASan freed memory sits in the allocator's
quarantine, so the 'given back' and CreateModel checks run on the Release
build only."""
import os
import subprocess
import time
import unittest

import fxtest
from fxtest import C, Daemon, DaemonTest, np

MiB = 1 << 20


def wide_spec(n_out):
    """x [-1, 1] -> dense n_out: a 4-byte sample gives 4 * n_out bytes out."""
    return {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 1]}],
            "nodes": [{"name": "fc", "op": "dense", "inputs": ["x"],
                       "attrs": {"in_features": 1, "out_features": n_out}}],
            "outputs": [{"name": "y", "source": "fc"}]}


def hourglass_spec(hidden):
    """x [-1, 1] -> dense hidden -> dense 1: small in and out, a batch of N
    samples holds N * hidden * 4 bytes in between."""
    return {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 1]}],
            "nodes": [{"name": "a", "op": "dense", "inputs": ["x"],
                       "attrs": {"in_features": 1, "out_features": hidden}},
                      {"name": "b", "op": "dense", "inputs": ["a"],
                       "attrs": {"in_features": hidden, "out_features": 1}}],
            "outputs": [{"name": "y", "source": "b"}]}


def proc_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def asan_build():
    try:
        return b"libasan" in subprocess.run(["ldd", fxtest.FLUXIOND], capture_output=True,
                                            timeout=10).stdout
    except OSError:
        return False


class OutputLimitTest(DaemonTest):
    DAEMON_ARGS = ("--max-message-mb", "4")

    def test_output_over_the_message_limit_is_refused_before_running(self):
        c = self.c
        c.create_model("wide", wide_spec(65536), seed=1)
        c.infer("wide", {"x": np.ones((2, 1), np.float32)})   # warm: 512 KiB out
        pid = self.d.proc.pid
        peak = proc_kib(pid, "VmHWM")
        x = np.ones((256, 1), np.float32)   # 1 KiB in, 64 MiB out
        t0 = time.monotonic()
        for raw in (False, True):
            self.assertCode(C.RESOURCE_EXHAUSTED, c.infer, "wide", {"x": x}, raw=raw,
                            contains=("output 'y'", "[256,65536]", "67108864 bytes",
                                      "4194304 bytes"))
        self.assertLess(time.monotonic() - t0, 5.0)
        grown = proc_kib(pid, "VmHWM") - peak
        self.assertLess(grown, 16 * 1024, "peak resident memory grew by %d KiB" % grown)
        # one that fits is answered
        y = c.infer("wide", {"x": x[:8]})["y"]
        self.assertEqual(y.shape, (8, 65536))
        # only the outputs asked for count
        c.create_model("two", {
            "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 1]}],
            "nodes": [{"name": "big", "op": "dense", "inputs": ["x"],
                       "attrs": {"in_features": 1, "out_features": 65536}},
                      {"name": "small", "op": "dense", "inputs": ["x"],
                       "attrs": {"in_features": 1, "out_features": 2}}],
            "outputs": [{"name": "big", "source": "big"}, {"name": "small", "source": "small"}]},
            seed=1)
        self.assertCode(C.RESOURCE_EXHAUSTED, c.infer, "two", {"x": x[:32]},
                        contains=("output 'big'", "[32,65536]"))
        self.assertEqual(c.infer("two", {"x": x[:32]}, outputs=["small"])["small"].shape, (32, 2))


class ArenaTest(DaemonTest):

    @unittest.skipIf(asan_build(), "ASan keeps freed memory in its quarantine")
    def test_a_large_batch_is_given_back(self):
        c = self.c
        c.create_model("hourglass", hourglass_spec(65536), seed=1)
        small = np.ones((1, 1), np.float32)
        c.infer("hourglass", {"x": small})
        pid = self.d.proc.pid
        before = proc_kib(pid, "VmRSS")
        big = np.ones((1024, 1), np.float32)   # 256 MiB between the layers
        for _ in range(2):
            self.assertEqual(c.infer("hourglass", {"x": big})["y"].shape, (1024, 1))
        self.assertGreater(proc_kib(pid, "VmHWM") - before, 200 * 1024)   # it did run
        c.infer("hourglass", {"x": small})
        kept = proc_kib(pid, "VmRSS") - before
        self.assertLess(kept, 96 * 1024, "still resident after the batch: %d KiB" % kept)


class CreatePeakTest(unittest.TestCase):
    """CreateModel's peak over its weights' size, in a daemon of its own (the
    peak is per process)."""

    @unittest.skipIf(asan_build(), "ASan keeps freed memory in its quarantine")
    def test_create_model_peak(self):
        d = Daemon(name="CreatePeakTest").start()
        try:
            c = d.client()
            c.create_model("warm", wide_spec(4), seed=1)
            peak = proc_kib(d.proc.pid, "VmHWM")
            # 2048 x 8192 + 8192 parameters: 64 MiB of weights
            spec = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 2048]}],
                    "nodes": [{"name": "fc", "op": "dense", "inputs": ["x"],
                               "attrs": {"in_features": 2048, "out_features": 8192}}],
                    "outputs": [{"name": "y", "source": "fc"}]}
            c.create_model("big", spec, seed=1)
            weights = (2048 * 8192 + 8192) * 4
            grown = (proc_kib(d.proc.pid, "VmHWM") - peak) * 1024
            print("CreateModel of %d MiB of weights: peak grew by %.1f MiB (%.2fx)"
                  % (weights // MiB, grown / MiB, grown / weights))
            self.assertLess(grown, 2.5 * weights)
        finally:
            d.stop()


if __name__ == "__main__":
    fxtest.main()
