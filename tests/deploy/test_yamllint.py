#!/usr/bin/env python3
"""yamllint (Debian's, scripts/setup.sh) with the repository's
.yamllint.yaml on every YAML file we ship, and on the chart's rendered
output for every value set (the templates themselves are Go templates)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

YAMLLINT = shutil.which("yamllint")
if not YAMLLINT:
    dl.skip("yamllint is not installed (Debian package yamllint; scripts/setup.sh)")
CONFIG = os.path.join(dl.ROOT, ".yamllint.yaml")


def lint(*paths):
    r = subprocess.run([YAMLLINT, "-f", "parsable", "-c", CONFIG, *paths], cwd=dl.ROOT,
                       capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


class YamlLint(unittest.TestCase):
    def test_repository_yaml(self):
        files = [f for f in dl.yaml_files(os.path.join(dl.ROOT, "deploy"))
                 if "/templates/" not in f]
        files += [CONFIG, os.path.join(dl.ROOT, ".hadolint.yaml")]
        self.assertIn(dl.K8S, files)
        self.assertIn(os.path.join(dl.CHART, "values.yaml"), files)
        rc, out = lint(*files)
        self.assertEqual(rc, 0, out)

    def test_rendered_chart(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name, values in dl.VARIANTS.items():
                path = os.path.join(tmp, f"{name}.yaml")
                with open(path, "w") as f:
                    f.write(dl.manifest_text(dl.render(values)))
                with self.subTest(variant=name):
                    rc, out = lint(path)
                    self.assertEqual(rc, 0, out)

    def test_lint_is_live(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad.yaml")
            with open(path, "w") as f:
                f.write("a: 1\na: 2\nb:   [1,2]   \n")
            rc, out = lint(path)
            self.assertNotEqual(rc, 0)
            self.assertIn("key-duplicates", out)


if __name__ == "__main__":
    unittest.main()
