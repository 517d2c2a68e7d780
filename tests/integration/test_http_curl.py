"""docs/http.md's curl examples, run as they are written: every ```sh
block of the file, with the HTTP port of a daemon started here (auth on,
the token in $TOKEN, the example model `mlp` created) in place of
localhost:8000. Each block must exit 0 (the examples use curl -f, or grep
the status they show) and print something. Skipped without curl."""
import json
import os
import re
import shutil
import subprocess
import unittest

import fxtest
from test_http import request, start_http


BLOCK_RE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


class CurlExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("curl"):
            raise unittest.SkipTest("curl is not installed")
        cls.d, cls.admin = start_http(name="http-curl", auth=True)
        src = os.environ.get("FX_SOURCE_DIR") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..")
        with open(os.path.join(src, "examples", "models", "mlp.json")) as f:
            m = json.load(f)
        c = fxtest.Client(cls.d.address, token=cls.admin)
        c.create_model(m["name"], m["spec"], seed=m.get("seed", 0))
        c.close()
        with open(os.path.join(src, "docs", "http.md")) as f:
            cls.blocks = BLOCK_RE.findall(f.read())

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_examples(self):
        self.assertGreaterEqual(len(self.blocks), 6, "docs/http.md lost its examples")
        metrics_built = request(self.d.http_port, "GET", "/metrics",
                                headers={"Authorization": "Bearer " + self.admin})[0] != 501
        env = dict(os.environ, TOKEN=self.admin)
        for block in self.blocks:
            if "/metrics" in block and not metrics_built:
                continue   # GetMetrics not built in yet: 501
            script = block.replace("localhost:8000", "127.0.0.1:%d" % self.d.http_port)
            p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            out = p.stdout.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 0, "example failed:\n%s\nstdout: %s\nstderr: %s"
                             % (block, out, p.stderr.decode("utf-8", "replace")))
            self.assertTrue(out.strip(), "example printed nothing:\n%s" % block)


if __name__ == "__main__":
    fxtest.main()
