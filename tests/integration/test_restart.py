"""State survives restarts: after SIGTERM every model, version, loaded state
and prediction is back (kill -9 in the middle of writes: test_kill9.py)."""
import json
import os
import subprocess
import unittest

import fxtest
from fxtest import C, Daemon, FluxionError, mlp_spec, np, randn

X = randn(123, 5, 4)


def snapshot(c):
    """What must survive: {name: (loaded, [(version, sha256, bytes, source)])}."""
    return {m.name: (m.loaded, [(v.version, v.weights_sha256, v.weights_bytes, v.source)
                                for v in m.versions])
            for m in c.list_models()}


class RestartTest(unittest.TestCase):

    def test_sigterm_restart_keeps_everything(self):
        d = Daemon(name="restart").start()
        c = d.client()
        c.create_model("a", mlp_spec(), seed=1, description="model a")
        c.create_model("b", mlp_spec(n_out=2), seed=2)
        wb = c.export_arrays("b")
        c.import_weights("b", {k: v + 1 for k, v in wb.items()}, source="plus one")
        c.create_model("c", mlp_spec(), seed=3)
        c.create_model("d", mlp_spec(), seed=4, no_load=True)
        c.unload_model("c")
        before = snapshot(c)
        preds = {("a", ""): c.infer("a", {"x": X})["y"],
                 ("b", ""): c.infer("b", {"x": X})["y"],
                 ("b", "1"): c.infer("b", {"x": X}, version="1")["y"]}
        spec_a = c.get_model("a").spec
        weights = {n: c.export_weights(n) for n in "abcd"}

        d.restart()
        c = d.client()
        self.assertEqual(snapshot(c), before)
        self.assertEqual(c.get_model("a").spec, spec_a)
        self.assertEqual(c.get_model("a").description, "model a")
        for n in "abcd":
            self.assertEqual(c.export_weights(n), weights[n], n)
        for (name, version), y in preds.items():
            np.testing.assert_array_equal(c.infer(name, {"x": X}, version=version)["y"], y)
        self.assertTrue(c.model_ready("a"))
        self.assertFalse(c.model_ready("c"))
        self.assertFalse(c.model_ready("d"))
        self.assertNotLoaded(c, "c")
        self.assertNotLoaded(c, "d")
        c.load_model("c")
        np.testing.assert_allclose(c.infer("c", {"x": X})["y"],
                                   fxtest.mlp_forward(c.export_arrays("c"), X),
                                   rtol=1e-5, atol=1e-5)
        # Loading is remembered too; deleting as well.
        c.delete_model("a")
        d.restart()
        c = d.client()
        self.assertTrue(c.model_ready("c"))
        self.assertEqual(sorted(snapshot(c)), ["b", "c", "d"])
        d.stop()

    def assertNotLoaded(self, c, name):
        with self.assertRaises(FluxionError) as cm:
            c.infer(name, {"x": X})
        self.assertEqual(cm.exception.code, C.FAILED_PRECONDITION, cm.exception.message)

    # kill -9 in the middle of writes: test_kill9.py (killloop.py), which
    # generalises what was here to datasets, ONNX imports, deletes and jobs.


class StartupTest(unittest.TestCase):
    """What fluxiond refuses at start: a data directory in use, bad flags."""

    def run_daemon(self, *args):
        return subprocess.run([fxtest.FLUXIOND] + list(args), capture_output=True, text=True,
                              timeout=30)

    def test_data_dir_in_use(self):
        d = Daemon(name="owner").start()
        d.client().create_model("kept", mlp_spec(), seed=1)
        p = self.run_daemon("--listen", "127.0.0.1:0", "--data-dir", d.data_dir)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertNotIn("listening on", p.stdout)
        self.assertIn(d.data_dir, p.stderr)
        self.assertTrue(d.client().model_ready("kept"))
        d.stop()

    def test_bad_flags(self):
        for args in (["--listen", "nope"], ["--listen", "127.0.0.1:99999"], ["--bogus"],
                     ["--max-message-mb", "0"], ["--grace-seconds", "x"], ["--device", "tpu"],
                     ["--log-level", "loud"], ["stray"], ["--threads", "0"],
                     ["--rpc-threads", "x"], ["--poll-threads", "65"], ["--max-import-mb", "0"],
                     ["--max-model-params", "-1"], ["--max-dataset-mb", "0"],
                     ["--dataset-quota-mb", "-5"], ["--train-workers", "0"],
                     ["--checkpoint-steps", "0"], ["--log-format", "xml"], ["--threads"]):
            with self.subTest(args=args):
                p = self.run_daemon(*args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
                self.assertIn("fluxiond:", p.stderr)
        p = self.run_daemon("--version")
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"^fluxiond \S+\n$")
        p = self.run_daemon("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("--listen", p.stdout)

    def test_json_logs(self):
        """--log-format json: every line the daemon writes to stderr is one
        JSON object with ts, level, comp and msg (key=value pairs become
        fields), including what the store logs while it recovers at open and
        what gRPC core itself logs (GRPC_VERBOSITY=debug makes it log its
        start-up and every connection)."""
        d = Daemon(["--log-format", "json"], name="jsonlog",
                   env={"GRPC_VERBOSITY": "debug"}).start()
        d.client().create_model("m", mlp_spec(), seed=1)
        d.stop()
        first_log = d.log_path
        # Leftovers of a crash, which the next open removes and logs: a
        # temporary file, an orphan weights file, an unknown file.
        for rel in ("tmp/.weights.tmp.abc123", "models/default/m/v7.safetensors",
                    "models/default/m/.v2.safetensors.tmp.XyZ123", "models/default/m/notes.txt"):
            with open(os.path.join(d.data_dir, rel), "wb") as f:
                f.write(b"leftover")
        d.start()
        d.stop()
        records = []
        for path in (first_log, d.log_path):
            with open(path) as f:
                lines = f.read().splitlines()
            self.assertTrue(lines, path)
            for line in lines:
                try:
                    r = json.loads(line)
                except ValueError:
                    self.fail("not a JSON line in %s: %r" % (path, line))
                self.assertIsInstance(r, dict, line)
                self.assertTrue({"ts", "level", "comp", "msg"} <= set(r), r)
                records.append(r)
        listening = [r for r in records if r["msg"] == "listening"]
        self.assertEqual(len(listening), 2, records)
        self.assertEqual(listening[-1]["addr"], d.address)
        store = [r for r in records if r["comp"] == "store"]
        self.assertGreaterEqual(len(store), 3, records)
        core = [r for r in records if r["comp"] == "rpc" and r["msg"].startswith("grpc: ")]
        self.assertTrue(core, "no gRPC core line came through the logger")
        self.assertFalse(os.path.exists(os.path.join(d.data_dir, "models/default/m/v7.safetensors")))
        self.assertFalse(os.path.exists(os.path.join(d.data_dir, "tmp/.weights.tmp.abc123")))


if __name__ == "__main__":
    fxtest.main()
