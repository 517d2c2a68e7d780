"""Datasets over RPC (fluxion.v1.DatasetService) with the Python client and
the CLI: chunked uploads larger than one gRPC message, validation errors
naming the tensor, a cancelled upload leaving nothing, restarts keeping
everything, CSV and safetensors uploads through `fluxion dataset`."""
import hashlib
import json
import os
import subprocess
import threading
import time

import fxtest
from fxtest import C, Daemon, DaemonTest, np
from fluxion_client import safetensors
from fluxion_client.datasets import dataset_pb2, tensor_data, upload_chunks

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")


def arrays(n, seed=0, d=3):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, d)).astype(np.float32),
            "y": rng.integers(0, 5, n).astype(np.int64)}


def expected_sha(arrs):
    """The documented checksum: per tensor in name order, name NUL dtype NUL
    shape NUL sha256(data)."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}
    h = hashlib.sha256()
    for k in sorted(arrs):
        a = np.ascontiguousarray(arrs[k])
        h.update(k.encode() + b"\0" + names[a.dtype].encode() + b"\0")
        h.update(("[" + ",".join(str(s) for s in a.shape) + "]").encode() + b"\0")
        h.update(hashlib.sha256(a.tobytes()).digest())
    return h.hexdigest()


def chunk(name="", tensors=(), description=""):
    c = dataset_pb2.UploadDatasetChunk(name=name, description=description)
    c.tensors.extend(tensors)
    return c


def td(name, arr, dtype=None, shape=None, data=None):
    t = tensor_data(name, np.ascontiguousarray(arr))
    if dtype is not None:
        t.dtype = dtype
    if shape is not None:
        del t.shape[:]
        t.shape.extend(shape)
    if data is not None:
        t.data = data
    return t


def data_entries(d):
    """What the data directory holds for datasets (and tmp/): datasets live
    in datasets/TEAM/NAME; a team's directory itself (left when its last
    dataset goes) is not an entry."""
    out = []
    for sub in ("datasets", "tmp"):
        root = os.path.join(d.data_dir, sub)
        for dirpath, dirnames, files in os.walk(root):
            rel = os.path.relpath(dirpath, d.data_dir)
            team_level = sub == "datasets" and dirpath == root
            out += [os.path.join(rel, f) for f in files] + \
                   [os.path.join(rel, x) + "/" for x in dirnames if not team_level]
    return sorted(out)


class UploadTest(DaemonTest):
    # 1 MiB messages: the 6 MB dataset below must be streamed
    DAEMON_ARGS = ("--max-message-mb", "1", "--max-dataset-mb", "16")

    def test_large_dataset_in_chunks(self):
        a = {"x": np.random.default_rng(1).standard_normal((50000, 30)).astype(np.float32),
             "y": np.arange(50000, dtype=np.int64)}
        self.assertGreater(a["x"].nbytes, 1 << 20)
        # one message with everything is refused by the transport limit
        self.assertCode(C.RESOURCE_EXHAUSTED, self.c.upload_dataset, "big", a,
                        chunk_samples=50000)
        self.assertEqual([d.name for d in self.c.list_datasets()], [])
        info = self.c.upload_dataset("big", a, description="six MB", chunk_samples=4000)
        self.assertEqual(info.name, "big")
        self.assertEqual(info.description, "six MB")
        self.assertEqual(info.num_samples, 50000)
        self.assertEqual(info.bytes, a["x"].nbytes + a["y"].nbytes)
        self.assertEqual([(t.name, t.dtype, list(t.sample_shape)) for t in info.tensors],
                         [("x", fxtest.model_pb2.FP32, [30]), ("y", fxtest.model_pb2.INT64, [])])
        self.assertEqual(info.sha256, expected_sha(a))
        self.assertEqual(self.c.get_dataset("big"), info)
        # the shards on disk hold the data, in order
        shards = sorted(os.listdir(os.path.join(self.d.data_dir, "datasets", "default", "big")))
        self.assertEqual(len(shards), info.num_shards)
        self.assertEqual(shards[0], "shard-0.safetensors")
        got = []
        for k in range(info.num_shards):
            with open(os.path.join(self.d.data_dir, "datasets", "default", "big",
                                   "shard-%d.safetensors" % k), "rb") as f:
                got.append(safetensors.load(f.read()))
        np.testing.assert_array_equal(np.concatenate([g["x"] for g in got]), a["x"])
        np.testing.assert_array_equal(np.concatenate([g["y"] for g in got]), a["y"])
        self.c.delete_dataset("big")
        self.assertCode(C.NOT_FOUND, self.c.get_dataset, "big", contains="big")
        self.assertFalse(os.path.exists(os.path.join(self.d.data_dir, "datasets", "default", "big")))

    def test_checksum_independent_of_chunking_and_interleaving(self):
        a = arrays(300, seed=3)
        i1 = self.c.upload_dataset("c1", a, chunk_samples=7)
        # all of y first, then x in two pieces
        i2 = self.c.upload_dataset("c2", None, chunks=[
            chunk("c2", [td("y", a["y"])]), chunk("", [td("x", a["x"][:100])]),
            chunk("", [td("x", a["x"][100:])])])
        self.assertEqual(i1.sha256, i2.sha256)
        b = {k: v.copy() for k, v in a.items()}
        b["x"][299, 2] += 1
        self.assertNotEqual(self.c.upload_dataset("c3", b).sha256, i1.sha256)
        for n in ("c1", "c2", "c3"):
            self.c.delete_dataset(n)

    def test_validation_errors(self):
        x = np.ones((4, 2), np.float32)
        cases = [
            ("count", [chunk("v", [td("x", x), td("y", np.zeros(3, np.int64))])],
             C.INVALID_ARGUMENT, ["'y'", "3 samples", "'x'", "4"]),
            ("dtype", [chunk("v", [td("x", x)]), chunk("", [td("x", np.ones((4, 2), np.int32))])],
             C.INVALID_ARGUMENT, ["'x'", "dtype changed", "F32", "I32"]),
            ("shape", [chunk("v", [td("x", x)]), chunk("", [td("x", np.ones((4, 3), np.float32))])],
             C.INVALID_ARGUMENT, ["'x'", "per-sample shape", "[4,2]", "[4,3]"]),
            ("size", [chunk("v", [td("x", x, data=b"\0" * 31)])],
             C.INVALID_ARGUMENT, ["'x'", "31 bytes", "32"]),
            ("scalar", [chunk("v", [td("x", x, shape=[])])],
             C.INVALID_ARGUMENT, ["'x'", "0 dimensions"]),
            ("negative", [chunk("v", [td("x", x, shape=[-4, 2])])],
             C.INVALID_ARGUMENT, ["'x'", "-4"]),
            ("bad dtype", [chunk("v", [td("x", x, dtype=17)])],
             C.INVALID_ARGUMENT, ["'x'", "dtype 17"]),
            ("tensor name", [chunk("v", [td('a"b', x)])],
             C.INVALID_ARGUMENT, ["a\"b", "position 1"]),
            ("no name", [chunk("", [td("x", x)])], C.INVALID_ARGUMENT, ["first chunk", "name"]),
            ("bad name", [chunk("../etc", [td("x", x)])], C.INVALID_ARGUMENT,
             ["dataset name", "../etc"]),
            ("no tensors", [chunk("v")], C.INVALID_ARGUMENT, ["no tensors"]),
            ("no samples", [chunk("v", [td("x", np.ones((0, 2), np.float32))])],
             C.INVALID_ARGUMENT, ["no samples"]),
            ("renamed", [chunk("v", [td("x", x)]), chunk("w", [td("x", x)])],
             C.INVALID_ARGUMENT, ["'w'", "'v'"]),
            # 25 x 800 kB: over --max-dataset-mb 16 at the 21st chunk
            ("too big", [chunk("v")] + [chunk("", [td("x", np.zeros((200000, 1), np.float32))])]
             * 25,
             C.RESOURCE_EXHAUSTED, ["'v'", "limit", "'x'"]),
        ]
        for what, chunks, code, contains in cases:
            with self.subTest(what):
                self.assertCode(code, self.c.upload_dataset, "v", None, chunks=chunks,
                                contains=contains)
                self.assertEqual(self.c.list_datasets(), [])
                self.assertEqual(data_entries(self.d), [])
        # an empty stream
        self.assertCode(C.INVALID_ARGUMENT, self.c.upload_dataset, "v", None, chunks=[],
                        contains="no chunks")

    def test_already_exists(self):
        self.c.upload_dataset("dup", arrays(10))
        self.assertCode(C.ALREADY_EXISTS, self.c.upload_dataset, "dup", arrays(10, 1),
                        contains="dup")
        self.assertEqual(self.c.get_dataset("dup").sha256, expected_sha(arrays(10)))
        self.c.delete_dataset("dup")
        self.assertCode(C.NOT_FOUND, self.c.delete_dataset, "dup", contains="dup")

    def test_cancel_mid_upload_leaves_nothing(self):
        gate = threading.Event()
        sent = threading.Event()

        def chunks():
            yield chunk("half", [td("x", np.ones((1000, 8), np.float32))])
            yield chunk("", [td("x", np.ones((1000, 8), np.float32))])
            sent.set()
            gate.wait(10)

        fut = self.c.datasets.UploadDataset.future(chunks(), timeout=30)
        self.assertTrue(sent.wait(10))
        time.sleep(0.3)  # the server has the chunks and is waiting for more
        fut.cancel()
        gate.set()
        self.assertTrue(fut.cancelled())
        deadline = time.monotonic() + 5
        while data_entries(self.d) != [] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(data_entries(self.d), [])
        self.assertEqual(self.c.list_datasets(), [])
        # the name is free again once the server has seen the cancel (it
        # learns of it asynchronously: slow under sanitizers)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.c.upload_dataset("half", arrays(5))
                break
            except fxtest.FluxionError as e:
                if (e.code != C.ALREADY_EXISTS or "in progress" not in e.message
                        or time.monotonic() > deadline):
                    raise
                time.sleep(0.05)
        self.c.delete_dataset("half")


class QuotaTest(DaemonTest):
    DAEMON_ARGS = ("--dataset-quota-mb", "1")

    def test_quota(self):
        a = {"x": np.zeros((100000, 1), np.float32)}    # 400 kB
        self.c.upload_dataset("q1", a)
        self.c.upload_dataset("q2", a)
        self.assertCode(C.RESOURCE_EXHAUSTED, self.c.upload_dataset, "q3", a,
                        contains=["quota", "'x'", "'q3'"])
        self.assertEqual(sorted(d.name for d in self.c.list_datasets()), ["q1", "q2"])
        self.c.delete_dataset("q1")
        self.c.upload_dataset("q3", a)


class RestartTest(fxtest.unittest.TestCase):

    def test_restart_keeps_datasets_and_removes_leftovers(self):
        d = Daemon(name="ds-restart").start()
        c = d.client()
        infos = {n: c.upload_dataset(n, arrays(50, seed=i), chunk_samples=9)
                 for i, n in enumerate(("r1", "r2"))}
        d.stop()
        # what a crash could leave: a staging dir, a dir without a row
        top = os.path.join(d.data_dir, "datasets")
        root = os.path.join(top, "default")
        for junk in (os.path.join(top, ".staging-abc123"), os.path.join(root, ".trash-1-r1"),
                     os.path.join(root, "orphan"), os.path.join(top, "noteam", "x")):
            os.makedirs(junk)
            with open(os.path.join(junk, "shard-0.safetensors"), "wb") as f:
                f.write(b"x")
        d.start()
        c = d.client()
        self.assertEqual({i.name: i for i in c.list_datasets()}, infos)
        self.assertEqual(sorted(os.listdir(root)), ["r1", "r2"])
        self.assertEqual(sorted(os.listdir(top)), ["default", "noteam"])
        self.assertEqual(os.listdir(os.path.join(top, "noteam")), [])
        d.kill9()
        d.start()
        c = d.client()
        self.assertEqual(c.get_dataset("r2"), infos["r2"])
        d.stop()


class CliTest(DaemonTest):
    DAEMON_ARGS = ("--max-message-mb", "1")

    def cli(self, *args, ok=True):
        p = subprocess.run([CLI, "--server", self.d.address] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if ok:
            self.assertEqual(p.returncode, 0, p.stderr.decode())
        return p

    def tmp(self, name, data):
        path = os.path.join(self.d.data_dir, "..", name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_csv_upload(self):
        path = self.tmp("iris.csv", b"sepal,petal,label\n1.5,2,0\n-3,4e1,2\n5,6.25,1\n")
        p = self.cli("--json", "dataset", "upload", "iris", path, "--label", "label",
                     "--description", "three rows")
        info = json.loads(p.stdout)
        self.assertEqual(info["num_samples"], 3)
        self.assertEqual([t["name"] for t in info["tensors"]], ["label", "petal", "sepal"])
        want = {"sepal": np.array([1.5, -3, 5], np.float32),
                "petal": np.array([2, 40, 6.25], np.float32),
                "label": np.array([0, 2, 1], np.int64)}
        self.assertEqual(info["sha256"], expected_sha(want))
        self.assertEqual(self.c.get_dataset("iris").description, "three rows")
        got = json.loads(self.cli("--json", "dataset", "get", "iris").stdout)
        self.assertEqual(got["sha256"], info["sha256"])
        names = [d["name"] for d in json.loads(self.cli("--json", "dataset", "list").stdout)
                 ["datasets"]]
        self.assertEqual(names, ["iris"])
        self.assertIn("iris", self.cli("dataset", "list").stdout.decode())
        self.cli("dataset", "delete", "iris")
        p = self.cli("dataset", "get", "iris", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("NOT_FOUND", p.stderr.decode())

    def test_csv_errors(self):
        bad = self.tmp("bad.csv", b"a,b\n1,2\n3,x\n")
        p = self.cli("dataset", "upload", "bad", bad, ok=False)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn("line 3", p.stderr.decode())
        self.assertIn("'b'", p.stderr.decode())
        ragged = self.tmp("ragged.csv", b"a,b\n1,2\n3\n")
        p = self.cli("dataset", "upload", "bad", ragged, ok=False)
        self.assertEqual(p.returncode, 4, p.stderr)
        p = self.cli("dataset", "upload", "bad", bad, "--label", "nope", ok=False)
        self.assertEqual(p.returncode, 4)
        self.assertIn("nope", p.stderr.decode())
        self.assertEqual(self.c.list_datasets(), [])

    def test_safetensors_upload_larger_than_a_message(self):
        a = {"feat": np.random.default_rng(5).standard_normal((20000, 40)).astype(np.float32),
             "lab": np.arange(20000, dtype=np.int32)}
        path = self.tmp("big.safetensors", safetensors.dump(a))
        self.assertGreater(os.path.getsize(path), 3 << 20)
        p = self.cli("--json", "dataset", "upload", "st", path, "--chunk-mb", "1")
        info = json.loads(p.stdout)
        self.assertEqual(info["sha256"], expected_sha(a))
        self.assertEqual(info["num_samples"], 20000)
        # the server's answers come back with exit code 1 and the status
        p = self.cli("dataset", "upload", "st", path, ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("ALREADY_EXISTS", p.stderr.decode())
        mism = self.tmp("mism.safetensors", safetensors.dump(
            {"a": np.zeros((3, 2), np.float32), "b": np.zeros(4, np.int64)}))
        p = self.cli("dataset", "upload", "m", mism, ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", p.stderr.decode())
        self.assertIn("'b'", p.stderr.decode())
        self.cli("dataset", "delete", "st")
        p = self.cli("dataset", "upload", "x", "/nonexistent.csv", ok=False)
        self.assertEqual(p.returncode, 4)
        p = self.cli("dataset", "upload", "x", ok=False)
        self.assertEqual(p.returncode, 2)


if __name__ == "__main__":
    fxtest.main()
