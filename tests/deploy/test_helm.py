#!/usr/bin/env python3
"""The Helm chart (deploy/helm/fluxion) through Helm's own engine (PyPI
helm-python-sdk: Helm v4's Go SDK): `helm lint --strict` finds nothing
above info, every value set renders, the objects say what docs/deploy.md
promises (StatefulSet owning its volume, probes, Secrets, GPUs, non-root
read-only pods, ServiceMonitor), bad values fail with a message naming the
value, and deploy/k8s is the default render."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

helm = dl.helm()


def by_kind(objs):
    out = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def container(objs):
    (sts,) = by_kind(objs)["StatefulSet"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return sts, c


class Lint(unittest.TestCase):
    def test_lint_strict_finds_nothing_above_info(self):
        for name, values in dl.VARIANTS.items():
            with self.subTest(variant=name):
                r = helm.lint(dl.CHART, values, strict=True, namespace=dl.NAMESPACE)
                self.assertEqual(r["total_charts_linted"], 1)
                self.assertEqual(r["errors"], [])
                bad = [m for m in r["messages"] if m["severity"] >= 2]
                self.assertEqual(bad, [])

    def test_lint_catches_a_broken_chart(self):
        # The linter is live: a chart with a template error is reported.
        import shutil
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            chart = os.path.join(tmp, "fluxion")
            shutil.copytree(dl.CHART, chart)
            with open(os.path.join(chart, "templates", "broken.yaml"), "w") as f:
                f.write("kind: ConfigMap\n{{ .Values.nope.deeper }}\n")
            r = helm.lint(chart, strict=True)
            self.assertTrue(r["errors"] or any(m["severity"] >= 3 for m in r["messages"]), r)


class Render(unittest.TestCase):
    def test_statefulset_owns_its_data_volume(self):
        objs = dl.rendered_objects()
        sts, c = container(objs)
        self.assertEqual(sts["metadata"]["name"], "fluxiond")
        self.assertEqual(sts["spec"]["serviceName"], "fluxiond")
        (vct,) = sts["spec"]["volumeClaimTemplates"]
        self.assertEqual(vct["metadata"]["name"], "data")
        self.assertEqual(vct["spec"]["resources"]["requests"]["storage"], "20Gi")
        self.assertIn({"name": "data", "mountPath": "/data"}, c["volumeMounts"])
        args = c["args"]
        self.assertEqual(args[args.index("--data-dir") + 1], "/data")
        self.assertEqual(args[args.index("--listen") + 1], "0.0.0.0:7070")
        self.assertEqual(args[args.index("--http-listen") + 1], "0.0.0.0:8000")

    def test_services_headless_for_peers_and_client(self):
        svcs = {s["metadata"]["name"]: s for s in by_kind(dl.rendered_objects())["Service"]}
        self.assertEqual(set(svcs), {"fluxiond", "fluxiond-api"})
        self.assertEqual(svcs["fluxiond"]["spec"]["clusterIP"], "None")
        self.assertTrue(svcs["fluxiond"]["spec"]["publishNotReadyAddresses"])
        ports = {p["name"]: p["port"] for p in svcs["fluxiond-api"]["spec"]["ports"]}
        self.assertEqual(ports, {"grpc": 7070, "http": 8000})

    def test_tls_and_admin_token_from_secrets(self):
        sts, c = container(dl.rendered_objects())
        args = c["args"]
        self.assertEqual(args[args.index("--tls-cert") + 1], "/etc/fluxion/tls/tls.crt")
        self.assertEqual(args[args.index("--tls-key") + 1], "/etc/fluxion/tls/tls.key")
        self.assertNotIn("--insecure", args)
        vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["tls"]["secret"]["secretName"], "fluxiond-tls")
        (env,) = [e for e in c["env"] if e["name"] == "FLUXIOND_ADMIN_TOKEN"]
        self.assertEqual(env["valueFrom"]["secretKeyRef"],
                         {"name": "fluxiond-admin-token", "key": "token"})
        self.assertNotIn("value", env)

    def test_mtls_flags(self):
        _, c = container(dl.rendered_objects(dl.VARIANTS["mtls-netpol"]))
        args = c["args"]
        self.assertEqual(args[args.index("--tls-client-ca") + 1], "/etc/fluxion/tls/ca.crt")
        self.assertIn("--tls-require-client-cert", args)
        self.assertEqual(args[-2:], ["--team-max-models", "20"])

    def test_probes_http_with_tls_grpc_without(self):
        _, c = container(dl.rendered_objects())
        for p in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertEqual(c[p]["httpGet"]["scheme"], "HTTPS")
            self.assertEqual(c[p]["httpGet"]["port"], "http")
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/v2/health/ready")
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/v2/health/live")
        _, c = container(dl.rendered_objects(dl.VARIANTS["plaintext-grpc-probes"]))
        for p in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertEqual(c[p]["grpc"], {"port": 7070, "service": ""})
            self.assertNotIn("httpGet", c[p])
        self.assertIn("--insecure", c["args"])
        self.assertNotIn("--tls-cert", c["args"])
        _, c = container(dl.rendered_objects({"tls": {"enabled": False}, "insecure": True,
                                              "probes": {"kind": "http"}}))
        self.assertEqual(c["readinessProbe"]["httpGet"]["scheme"], "HTTP")

    def test_gpus(self):
        _, c = container(dl.rendered_objects())
        self.assertNotIn("nvidia.com/gpu", c["resources"].get("limits", {}))
        _, c = container(dl.rendered_objects(dl.VARIANTS["gpus"]))
        self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], 2)
        self.assertEqual(c["resources"]["limits"]["memory"], "16Gi")
        self.assertEqual(c["image"], "fluxion:0.3.0-cuda")

    def test_non_root_read_only(self):
        sts, c = container(dl.rendered_objects())
        pod = sts["spec"]["template"]["spec"]
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["runAsUser"], 10001)
        self.assertFalse(pod["automountServiceAccountToken"])
        self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
        self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
        self.assertEqual(c["securityContext"]["capabilities"]["drop"], ["ALL"])
        self.assertIn({"name": "tmp", "mountPath": "/tmp"}, c["volumeMounts"])

    def test_service_monitor(self):
        (sm,) = by_kind(dl.rendered_objects())["ServiceMonitor"]
        self.assertEqual(sm["apiVersion"], "monitoring.coreos.com/v1")
        (ep,) = sm["spec"]["endpoints"]
        self.assertEqual((ep["port"], ep["path"], ep["scheme"]), ("http", "/metrics", "https"))
        self.assertEqual(ep["authorization"],
                         {"type": "Bearer",
                          "credentials": {"name": "fluxiond-metrics-token", "key": "token"}})
        self.assertEqual(ep["tlsConfig"]["serverName"], "fluxiond-api.fluxion.svc")
        # It selects the client Service only (the headless one would scrape twice).
        self.assertEqual(sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], "api")
        self.assertNotIn("ServiceMonitor", by_kind(dl.rendered_objects(dl.VARIANTS["no-secrets"])))

    def test_network_policy_optional(self):
        self.assertNotIn("NetworkPolicy", by_kind(dl.rendered_objects()))
        (np,) = by_kind(dl.rendered_objects(dl.VARIANTS["mtls-netpol"]))["NetworkPolicy"]
        froms = np["spec"]["ingress"][0]["from"]
        self.assertEqual(len(froms), 2)

    def test_bad_values_name_the_value(self):
        cases = [
            ({"probes": {"kind": "grpc"}}, "probes.kind grpc needs tls.enabled false"),
            ({"probes": {"kind": "tcp"}}, 'probes.kind is "tcp"'),
            ({"tls": {"enabled": False}}, "tls.enabled is false but insecure is not true"),
            ({"insecure": True}, "tls.enabled and insecure are both true"),
        ]
        for values, message in cases:
            with self.subTest(values=values):
                with self.assertRaises(helm.HelmRenderError) as cm:
                    dl.render(values)
                self.assertIn(message, str(cm.exception))


class PlainManifests(unittest.TestCase):
    def test_deploy_k8s_is_the_default_render(self):
        with open(dl.K8S) as f:
            committed = f.read()
        self.assertEqual(committed, dl.manifest_text(dl.render()),
                         "deploy/k8s/fluxion.yaml differs from the chart's default render: "
                         "run python3 tests/deploy/render_k8s.py --write")


if __name__ == "__main__":
    unittest.main()
