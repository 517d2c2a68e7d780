"""clients/python/examples/define_and_infer.py runs against a daemon, and
its printed probabilities are the model's (checked from exported weights)."""
import os
import re
import subprocess
import sys

import fxtest
from fxtest import np

EXAMPLE = os.path.join(fxtest.SOURCE_DIR, "clients", "python", "examples", "define_and_infer.py")


class ExampleTest(fxtest.DaemonTest):

    def run_example(self, *args):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        p = subprocess.run([sys.executable, EXAMPLE, "--server", self.d.address] + list(args),
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, "example failed:\n%s\n%s" % (p.stdout, p.stderr))
        return p.stdout

    def test_define_and_infer(self):
        out = self.run_example("--name", "ex1")
        self.assertIn("defined ex1: version 1", out)
        self.assertIn("probabilities (3, 3)", out)
        m = re.search(r"predicted classes: \[(.*)\]", out)
        self.assertIsNotNone(m, out)
        classes = [int(c) for c in m.group(1).split(",")]
        # The same prediction computed here from the exported weights.
        w = self.c.export_arrays("ex1")
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        h = np.maximum(x @ w["hidden.weight"].T + w["hidden.bias"], 0)
        logits = h @ w["logits.weight"].T + w["logits.bias"]
        self.assertEqual(classes, logits.argmax(axis=1).tolist())
        # A second run reuses the model; --replace defines it afresh.
        self.assertIn("using the existing ex1", self.run_example("--name", "ex1"))
        self.assertIn("defined ex1", self.run_example("--name", "ex1", "--replace"))

    def test_runs_without_pythonpath(self):
        """As documented: plain /usr/bin/python3 from a source tree built in build/."""
        if not os.path.isdir(os.path.join(fxtest.SOURCE_DIR, "build", "python")):
            self.skipTest("no build/python in the source tree")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FX_PY_OUT")}
        p = subprocess.run([sys.executable, EXAMPLE, "--server", self.d.address, "--name", "ex2"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("predicted classes", p.stdout)

    def test_unreachable_server(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        p = subprocess.run([sys.executable, EXAMPLE, "--server", "127.0.0.1:1", "--wait", "1"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("cannot reach fluxiond", p.stderr)


if __name__ == "__main__":
    fxtest.main()
