#!/usr/bin/env python3
"""Writes deploy/k8s/fluxion.yaml: the Helm chart rendered with its default
values (tests/deploy/test_helm.py checks that the file equals a fresh
render, so the plain manifests never drift from the chart).

    python3 tests/deploy/render_k8s.py --write     # after changing the chart
    python3 tests/deploy/render_k8s.py             # print it"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib  # noqa: E402

text = deploylib.manifest_text(deploylib.render())
if sys.argv[1:] == ["--write"]:
    os.makedirs(os.path.dirname(deploylib.K8S), exist_ok=True)
    with open(deploylib.K8S, "w") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(deploylib.K8S, deploylib.ROOT)}")
elif sys.argv[1:]:
    sys.exit("usage: render_k8s.py [--write]")
else:
    sys.stdout.write(text)
