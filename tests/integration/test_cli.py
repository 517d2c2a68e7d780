"""The `fluxion` CLI against a real fluxiond: every command, its output in
--json form, and the exit codes scripts rely on (0 ok, 1 server error,
2 usage, 3 unreachable, 4 local file or input error)."""
import json
import os
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fxtest  # noqa: E402
from fxtest import np, safetensors  # noqa: E402

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")
if not os.access(CLI, os.X_OK):
    print("skipped: no fluxion CLI at %s (set FLUXION_CLI)" % CLI)
    sys.exit(fxtest.SKIP)
MODELS = os.path.join(fxtest.SOURCE_DIR, "examples", "models")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class CliTest(fxtest.DaemonTest):
    def cli(self, *args, stdin=None, server=None, expect=0):
        env = dict(os.environ, FLUXION_SERVER=server or self.d.address)
        p = subprocess.run([CLI] + list(args), input=stdin, capture_output=True, text=True,
                           env=env, timeout=60)
        self.assertEqual(p.returncode, expect, "fluxion %s: rc %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def tmp(self, name):
        return os.path.join(tempfile.mkdtemp(dir=fxtest._WORK), name)

    def create(self, name):
        self.cli("model", "create", os.path.join(MODELS, "mlp.json"), "--name", name)

    def weights(self, name):
        path = self.tmp("w.safetensors")
        self.cli("model", "export", name, "-o", path)
        with open(path, "rb") as f:
            return safetensors.loads(f.read())

    def test_create_get_list_delete(self):
        p = self.cli("--json", "model", "create", os.path.join(MODELS, "mlp.json"), "--name", "c1")
        self.assertEqual(json.loads(p.stdout)["name"], "c1")
        got = json.loads(self.cli("--json", "model", "get", "c1").stdout)
        self.assertEqual(got["name"], "c1")
        self.assertEqual([p["name"] for p in got["parameters"]],
                         ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        listed = json.loads(self.cli("--json", "model", "list").stdout)
        names = [m["name"] for m in (listed["models"] if isinstance(listed, dict) else listed)]
        self.assertIn("c1", names)
        self.assertIn("c1", self.cli("model", "list").stdout)
        self.cli("model", "delete", "c1")
        p = self.cli("model", "get", "c1", expect=1)
        self.assertIn("NOT_FOUND", p.stderr)
        p = self.cli("model", "create", os.path.join(MODELS, "mlp.json"), "--name", "c1")
        p = self.cli("model", "create", os.path.join(MODELS, "mlp.json"), "--name", "c1", expect=1)
        self.assertIn("ALREADY_EXISTS", p.stderr)

    def test_predict_matches_weights(self):
        self.create("p1")
        w = self.weights("p1")
        x = fxtest.randn(3, 5, 4)
        inp = self.tmp("in.json")
        with open(inp, "w") as f:
            json.dump({"x": x.tolist()}, f)
        for extra in ([], ["--raw"]):
            out = json.loads(self.cli("predict", "p1", "--input", inp, *extra).stdout)
            y = np.array(out["logits"]["data"], dtype=np.float32).reshape(out["logits"]["shape"])
            np.testing.assert_allclose(y, fxtest.mlp_forward(w, x), rtol=1e-5, atol=1e-5)
        # KServe form on stdin
        req = {"inputs": [{"name": "x", "shape": [5, 4], "datatype": "FP32",
                           "data": x.reshape(-1).tolist()}]}
        out = json.loads(self.cli("predict", "p1", "--input", "-", stdin=json.dumps(req)).stdout)
        self.assertEqual(out["logits"]["shape"], [5, 3])

    def test_predict_errors(self):
        self.create("p2")
        p = self.cli("predict", "p2", "--input", "-", stdin='{"x": [[1, 2, 3]]}', expect=1)
        self.assertIn("INVALID_ARGUMENT", p.stderr)
        self.assertIn("'x'", p.stderr)
        p = self.cli("predict", "nope", "--input", "-", stdin='{"x": [[1, 2, 3, 4]]}', expect=1)
        self.assertIn("NOT_FOUND", p.stderr)
        p = self.cli("predict", "p2", "--input", "-", stdin='{"x": [[1, 2], [3]]}', expect=4)
        self.assertIn("x", p.stderr)
        self.cli("predict", "p2", "--input", self.tmp("missing.json"), expect=4)
        self.cli("predict", "p2", "--input", "-", stdin="{not json", expect=4)

    def test_export_import_versions(self):
        self.create("v1")
        path = self.tmp("v.safetensors")
        self.cli("model", "export", "v1", "-o", path)
        self.cli("model", "import", "v1", path, "--source", "cli test")
        got = json.loads(self.cli("--json", "model", "get", "v1").stdout)
        versions = got["versions"]
        self.assertEqual([int(v["version"]) for v in versions], [1, 2])
        self.assertEqual(versions[1]["source"], "cli test")
        self.assertEqual(versions[0]["weightsSha256"] if "weightsSha256" in versions[0]
                         else versions[0]["weights_sha256"],
                         versions[1]["weightsSha256"] if "weightsSha256" in versions[1]
                         else versions[1]["weights_sha256"])
        bad = self.tmp("bad.safetensors")
        with open(bad, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}!!")
        p = self.cli("model", "import", "v1", bad, expect=1)
        self.assertIn("INVALID_ARGUMENT", p.stderr)
        self.cli("model", "import", "v1", self.tmp("none.safetensors"), expect=4)

    def test_export_file(self):
        """An export is a plain file (mode 0666 less the umask) put in place
        whole: a failed export leaves neither the file nor a temporary."""
        self.create("e1")
        path = self.tmp("e.safetensors")
        out = os.path.dirname(path)
        self.cli("model", "export", "e1", "-o", path)
        umask = os.umask(0)
        os.umask(umask)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o666 & ~umask)
        self.assertEqual(os.listdir(out), ["e.safetensors"])
        with open(path, "rb") as f:
            exported = f.read()
        p = subprocess.run([CLI, "--server", self.d.address, "model", "export", "e1", "-o", "-"],
                           capture_output=True, timeout=60)
        self.assertEqual((p.returncode, p.stdout), (0, exported))
        p = self.cli("model", "export", "nope", "-o", path, expect=1)
        self.assertIn("NOT_FOUND", p.stderr)
        self.assertEqual(os.listdir(out), ["e.safetensors"])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), exported)
        p = self.cli("model", "export", "e1", "-o", os.path.join(out, "nodir", "x"), expect=4)
        self.assertIn("nodir", p.stderr)
        p = self.cli("model", "export", "e1", "-o", out + "/", expect=4)
        self.assertIn("names a directory", p.stderr)
        self.assertEqual(os.listdir(out), ["e.safetensors"])

    def test_load_unload(self):
        self.create("u1")
        self.cli("model", "unload", "u1")
        p = self.cli("predict", "u1", "--input", "-", stdin='{"x": [[1, 2, 3, 4]]}', expect=1)
        self.assertIn("FAILED_PRECONDITION", p.stderr)
        self.assertIn("not loaded", p.stderr)
        self.assertIn("hint: load it with `fluxion model load u1`", p.stderr)
        self.cli("model", "load", "u1")
        self.cli("predict", "u1", "--input", "-", stdin='{"x": [[1, 2, 3, 4]]}')

    def test_status(self):
        p = self.cli("status")
        self.assertIn("ready", p.stdout)
        json.loads(self.cli("--json", "status").stdout)

    def test_usage_and_reachability_codes(self):
        self.cli("frobnicate", expect=2)
        self.cli("--timeout", "soon", "status", expect=2)
        self.cli("model", "create", expect=2)
        self.cli("model", "create", self.tmp("missing.json"), expect=4)
        bad = self.tmp("bad.json")
        with open(bad, "w") as f:
            f.write('{"name": "b", "spec": {"nodes": [{"name": "n", "op": "dense", "atrs": {}}]}}')
        p = self.cli("model", "create", bad, expect=4)
        self.assertIn("atrs", p.stderr)
        p = self.cli("status", server="127.0.0.1:%d" % free_port(), expect=3)
        self.assertIn("UNAVAILABLE", p.stderr)
        self.assertEqual(self.cli("--help").returncode, 0)


if __name__ == "__main__":
    fxtest.main()
