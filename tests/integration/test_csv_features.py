"""CSV uploads with --features (issue 16): `fluxion dataset upload NAME
FILE.csv --features [T=]A,B,C,D` groups those columns, in that order, into
one FP32 tensor [N, 4] (T, default x) beside the other columns, so the
bundled iris-style example (examples/jobs/iris.csv, examples/models/mlp.json,
examples/jobs/mlp-iris.json) trains from the CSV end to end and serves
predictions as accurate as its validation accuracy says; bad --features
are local errors naming what was wrong, and nothing is uploaded."""
import csv
import hashlib
import json
import os
import subprocess
import tempfile
import time

import fxtest
from fxtest import DaemonTest, np
from fluxion_client.jobs import FINAL_STATES, training_pb2

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")
EX = os.path.join(fxtest.SOURCE_DIR, "examples")
IRIS = os.path.join(EX, "jobs", "iris.csv")
FEATURES = "sepal_length,sepal_width,petal_length,petal_width"


def expected_sha(arrs):
    """The documented checksum (as test_datasets.py): per tensor in name
    order, name NUL dtype NUL shape NUL sha256(data)."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}
    h = hashlib.sha256()
    for k in sorted(arrs):
        a = np.ascontiguousarray(arrs[k])
        h.update(k.encode() + b"\0" + names[a.dtype].encode() + b"\0")
        h.update(("[" + ",".join(str(s) for s in a.shape) + "]").encode() + b"\0")
        h.update(hashlib.sha256(a.tobytes()).digest())
    return h.hexdigest()


class CsvFeaturesTest(DaemonTest):
    def cli(self, *args, ok=True):
        p = subprocess.run([CLI, "--server", self.d.address] + list(args), capture_output=True,
                           text=True, timeout=120)
        if ok:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def rows(self):
        with open(IRIS) as f:
            r = list(csv.DictReader(f))
        x = np.array([[float(row[c]) for c in FEATURES.split(",")] for row in r], np.float32)
        return x, np.array([int(row["species"]) for row in r], np.int64)

    def test_iris_trains_from_csv(self):
        p = self.cli("--json", "dataset", "upload", "iris", IRIS, "--label", "species",
                     "--features", "x=" + FEATURES)
        info = json.loads(p.stdout)
        self.assertEqual(int(info["num_samples"]), 150)
        shapes = {t["name"]: (t["dtype"], [int(d) for d in t.get("sample_shape", [])])
                  for t in info["tensors"]}
        self.assertEqual(shapes, {"x": ("FP32", [4]), "species": ("INT64", [])})
        self.cli("model", "create", os.path.join(EX, "models", "mlp.json"))
        p = self.cli("--json", "train", "submit", os.path.join(EX, "jobs", "mlp-iris.json"))
        job_id = json.loads(p.stdout)["id"]
        deadline = time.monotonic() + 300
        while True:
            job = self.c.get_job(job_id)
            if job.state in FINAL_STATES or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(job.state, training_pb2.SUCCEEDED, job.error)
        acc = {m.name: m.value for m in job.progress.metrics}["val_accuracy"]
        self.assertGreaterEqual(acc, 0.9)
        # the grouped tensor holds the columns in the order given: the served
        # model classifies the CSV's own rows as well
        x, y = self.rows()
        out = self.c.infer("mlp", {"x": x}, version=str(job.result_version))
        self.assertGreaterEqual(float(np.mean(np.argmax(out["logits"], axis=1) == y)), 0.9)

    def test_default_name_and_order(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.csv")
            with open(path, "w") as f:
                f.write("a,b,c,lab\n1,2,3,0\n4,5,6,1\n")
            p = self.cli("--json", "dataset", "upload", "t", path, "--features", "c,a")
            info = json.loads(p.stdout)
            shapes = {t["name"]: [int(v) for v in t.get("sample_shape", [])]
                      for t in info["tensors"]}
            self.assertEqual(shapes, {"x": [2], "b": [], "lab": []})
            # the same dataset as a safetensors upload of x = [[3, 1], [6, 4]]
            want = {"b": np.array([2, 5], np.float32), "lab": np.array([0, 1], np.float32),
                    "x": np.array([[3, 1], [6, 4]], np.float32)}
            self.assertEqual(info["sha256"], expected_sha(want))
            for args, word in ((("--features", "a,zz"), "no column 'zz'"),
                               (("--features", "a,a"), "listed twice"),
                               (("--features", "lab,a", "--label", "lab"), "--label column"),
                               (("--features", "=a,b"), "no tensor name"),
                               (("--features", "b=a,c"), "also a column's"),
                               (("--features", ","), "no columns")):
                p = self.cli("dataset", "upload", "bad", path, *args, ok=False)
                self.assertNotEqual(p.returncode, 0, args)
                self.assertIn(word, p.stderr, args)
            self.assertEqual([d.name for d in self.c.list_datasets()], ["t"])


if __name__ == "__main__":
    fxtest.main()
