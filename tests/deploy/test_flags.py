#!/usr/bin/env python3
"""The fluxiond flags that the chart (every value set), the KServe runtime
and the image's entrypoint pass must be real: each one is in the built
daemon's `fluxiond --help` (env FLUXIOND, from CMake)."""
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

FLUXIOND = os.environ.get("FLUXIOND")
if not FLUXIOND or not os.access(FLUXIOND, os.X_OK):
    dl.skip("FLUXIOND (the built daemon) is not set; ctest sets it")

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def help_flags():
    out = subprocess.run([FLUXIOND, "--help"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    flags = set()
    for line in text.splitlines():
        if line.startswith("  --"):
            # The option column: "  --a N, --b N      description".
            flags.update(FLAG.findall(re.split(r"(?<=\S)\s{2,}", line[2:], maxsplit=1)[0]))
    return flags


def chart_flags():
    used = set()
    for values in dl.VARIANTS.values():
        for o in dl.rendered_objects(values):
            if o["kind"] != "StatefulSet":
                continue
            for c in o["spec"]["template"]["spec"]["containers"]:
                used.update(a for a in c.get("command", []) + c.get("args", []) if a.startswith("--"))
    return used


def kserve_flags():
    with open(os.path.join(dl.KSERVE, "servingruntime.yaml")) as f:
        (rt,) = dl.objects(f.read())
    used = set()
    for c in rt["spec"]["containers"]:
        words = " ".join(c.get("command", []) + c.get("args", []))
        # What follows "fluxiond" in the shell command is fluxiond's.
        used.update(FLAG.findall(words[words.index("exec fluxiond"):]))
    return used


def entrypoint_flags():
    used = set()
    with open(os.path.join(dl.ROOT, "docker", "entrypoint.sh")) as f:
        for line in f:
            if not line.lstrip().startswith("#"):
                used.update(FLAG.findall(line))
    return used


class Flags(unittest.TestCase):
    def test_help_is_parsed(self):
        known = help_flags()
        for f in ("--listen", "--data-dir", "--tls-cert", "--init-admin-token", "--insecure"):
            self.assertIn(f, known)
        self.assertNotIn("--no-such-flag", known)

    def test_flags_exist(self):
        known = help_flags()
        for where, used in (("deploy/helm/fluxion", chart_flags()),
                            ("deploy/kserve/servingruntime.yaml", kserve_flags()),
                            ("docker/entrypoint.sh", entrypoint_flags())):
            with self.subTest(where=where):
                self.assertTrue(used)
                self.assertEqual(sorted(used - known), [],
                                 f"{where} passes flags that `fluxiond --help` does not list")

    def test_every_source_uses_the_http_port(self):
        # The probes, HEALTHCHECK and ServiceMonitor need it everywhere.
        for used in (chart_flags(), kserve_flags(), entrypoint_flags()):
            self.assertIn("--http-listen", used)


if __name__ == "__main__":
    unittest.main()
