#!/usr/bin/env python3
"""Every Kubernetes object we ship, checked offline (no cluster):

- core objects (every chart value set in deploylib.VARIANTS, deploy/k8s)
  with PyPI kubernetes-validate in strict mode (unknown fields rejected),
  against the oldest Kubernetes the chart allows and the newest bundled;
- the custom resources, for which kubernetes-validate has no schema
  (ServiceMonitor, ServingRuntime, InferenceService): their required
  fields, field names, enums and duration patterns from the published CRD
  schemas (excerpts below), and the core types inside them (the runtime's
  containers and volumes, the predictor's container fields) by wrapping
  them in a Pod that kubernetes-validate checks strictly."""
import copy
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

try:
    import kubernetes_validate as kv
except ImportError:
    dl.skip("kubernetes-validate is not installed (pip install kubernetes-validate; scripts/test.sh)")

# Chart.yaml's kubeVersion (>= 1.27) and the newest schema bundled.
K8S_VERSIONS = ["1.27.0", kv.latest_version()]

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
# Excerpts of the published CRD schemas, for the parts we use: {path:
# (required, allowed field names, {field: enum list or regex})}. "[]" is
# a list's items; a path not listed is not checked here.
# ServiceMonitor: prometheus-operator, example/prometheus-operator-crd/
#   monitoring.coreos.com_servicemonitors.yaml (2026-08).
# ServingRuntime, InferenceService: kserve, config/crd/full/
#   serving.kserve.io_servingruntimes.yaml, _inferenceservices.yaml (2026-08).
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "": (["spec"], None, {}),
        "spec": (["endpoints", "selector"],
                 ["attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB", "endpoints",
                  "fallbackScrapeProtocol", "jobLabel", "keepDroppedTargets", "labelLimit",
                  "labelNameLengthLimit", "labelValueLengthLimit", "namespaceSelector",
                  "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor", "podTargetLabels",
                  "sampleLimit", "scrapeClass", "scrapeClassicHistograms", "scrapeNativeHistograms",
                  "scrapeProtocols", "selector", "selectorMechanism", "serviceDiscoveryRole",
                  "targetLabels", "targetLimit"], {}),
        "spec.endpoints[]": ([],
                             ["authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret",
                              "enableHttp2", "filterRunning", "followRedirects", "honorLabels",
                              "honorTimestamps", "interval", "metricRelabelings", "noProxy", "oauth2",
                              "params", "path", "port", "proxyConnectHeader", "proxyFromEnvironment",
                              "proxyUrl", "relabelings", "scheme", "scrapeTimeout", "targetPort",
                              "tlsConfig", "trackTimestampsStaleness"],
                             {"scheme": ["http", "https", "HTTP", "HTTPS"],
                              "interval": DURATION, "scrapeTimeout": DURATION}),
        "spec.endpoints[].authorization": ([], ["credentials", "type"], {}),
        "spec.endpoints[].authorization.credentials": (["key"], ["key", "name", "optional"], {}),
        "spec.endpoints[].tlsConfig": ([], ["ca", "caFile", "cert", "certFile", "insecureSkipVerify",
                                            "keyFile", "keySecret", "maxVersion", "minVersion",
                                            "serverName"], {}),
        "spec.endpoints[].tlsConfig.ca": ([], ["configMap", "secret"], {}),
        "spec.endpoints[].tlsConfig.ca.secret": (["key"], ["key", "name", "optional"], {}),
        "spec.selector": ([], ["matchExpressions", "matchLabels"], {}),
    },
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): {
        "": (["spec"], None, {}),
        "spec": (["containers"],
                 ["affinity", "annotations", "builtInAdapter", "containers", "disabled",
                  "grpcDataEndpoint", "grpcEndpoint", "hostIPC", "httpDataEndpoint",
                  "imagePullSecrets", "labels", "multiModel", "nodeSelector", "protocolVersions",
                  "replicas", "resourceClaims", "schedulerName", "storageHelper",
                  "supportedModelFormats", "tolerations", "volumes", "workerSpec"], {}),
        "spec.supportedModelFormats[]": (["name"], ["autoSelect", "name", "priority", "version"], {}),
    },
    ("serving.kserve.io/v1beta1", "InferenceService"): {
        "": (["spec"], None, {}),
        "spec": (["predictor"], ["canary", "explainer", "predictor", "transformer"], {}),
        "spec.predictor.model": ([],
                                 ["args", "command", "confidential", "env", "envFrom", "image",
                                  "imagePullPolicy", "lifecycle", "livenessProbe", "modelFormat", "name",
                                  "ports", "protocolVersion", "readinessProbe", "resizePolicy", "resources",
                                  "restartPolicy", "restartPolicyRules", "runtime", "runtimeVersion",
                                  "securityContext", "startupProbe", "stdin", "stdinOnce", "storage",
                                  "storageUri", "terminationMessagePath", "terminationMessagePolicy",
                                  "tty", "volumeDevices", "volumeMounts", "workingDir"], {}),
        "spec.predictor.model.modelFormat": (["name"], ["name", "version"], {}),
    },
}
# KServe's protocol names (ServingRuntime protocolVersions, predictor protocolVersion).
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
# The model fields that are not a core Container's.
KSERVE_MODEL_ONLY = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}


def walk(obj, path):
    """The nodes at path ("a.b[].c") in obj, with their concrete paths."""
    nodes = [("", obj)]
    for part in re.findall(r"[^.\[\]]+|\[\]", path):
        nxt = []
        for where, n in nodes:
            if part == "[]":
                nxt += [(f"{where}[{i}]", x) for i, x in enumerate(n if isinstance(n, list) else [])]
            elif isinstance(n, dict) and part in n:
                nxt.append((f"{where}.{part}" if where else part, n[part]))
        nodes = nxt
    return nodes


def crd_errors(obj):
    schema = CRDS[(obj["apiVersion"], obj["kind"])]
    errors = []
    for path, (required, allowed, rules) in schema.items():
        for where, node in walk(obj, path):
            where = where or "(top)"
            if not isinstance(node, dict):
                errors.append(f"{where}: not a mapping")
                continue
            errors += [f"{where}: missing required field {r!r}" for r in required if r not in node]
            if allowed is not None:
                errors += [f"{where}: unknown field {k!r}" for k in node if k not in allowed]
            for field, rule in rules.items():
                if field not in node:
                    continue
                v = node[field]
                ok = v in rule if isinstance(rule, list) else re.match(rule, str(v))
                if not ok:
                    errors.append(f"{where}.{field}: {v!r} is not allowed ({rule})")
    return errors


def pod_of(name, containers, volumes=None):
    spec = {"containers": containers}
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def core_errors(obj):
    errors = []
    for version in K8S_VERSIONS:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{obj['kind']}/{obj['metadata'].get('name')} (Kubernetes {version}): "
                          f"{'.'.join(str(p) for p in e.path)}: {e.message}")
    return errors


def check(obj):
    """Every error of one object, whatever its kind."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRDS:
        return core_errors(obj)
    errors = crd_errors(obj)
    name = obj["metadata"]["name"]
    if key[1] == "ServingRuntime":
        spec = obj["spec"]
        errors += core_errors(pod_of(name, spec.get("containers", []), spec.get("volumes")))
        errors += [f"protocolVersions: unknown {p!r}" for p in spec.get("protocolVersions", [])
                   if p not in KSERVE_PROTOCOLS]
    if key[1] == "InferenceService":
        model = obj["spec"]["predictor"].get("model", {})
        c = {k: v for k, v in model.items() if k not in KSERVE_MODEL_ONLY}
        c.setdefault("name", "kserve-container")
        errors += core_errors(pod_of(name, [c]))
        if model.get("protocolVersion", "v1") not in KSERVE_PROTOCOLS:
            errors.append(f"protocolVersion: unknown {model['protocolVersion']!r}")
    return errors


class Validate(unittest.TestCase):
    def assertValid(self, objs):
        self.assertTrue(objs)
        for o in objs:
            self.assertEqual(check(o), [], f"{o['kind']}/{o['metadata'].get('name')}")

    def test_chart_renders(self):
        for name, values in dl.VARIANTS.items():
            with self.subTest(variant=name):
                self.assertValid(dl.rendered_objects(values))

    def test_plain_manifests(self):
        with open(dl.K8S) as f:
            objs = dl.objects(f.read())
        self.assertEqual(sorted(o["kind"] for o in objs),
                         ["Service", "Service", "ServiceMonitor", "StatefulSet"])
        self.assertValid(objs)

    def test_kserve(self):
        objs = []
        for path in dl.yaml_files(dl.KSERVE):
            with open(path) as f:
                objs += dl.objects(f.read())
        self.assertEqual(sorted(o["kind"] for o in objs), ["InferenceService", "ServingRuntime"])
        self.assertValid(objs)
        (rt,) = [o for o in objs if o["kind"] == "ServingRuntime"]
        (isvc,) = [o for o in objs if o["kind"] == "InferenceService"]
        model = isvc["spec"]["predictor"]["model"]
        # The example picks this runtime, by name and by its model format.
        self.assertEqual(model["runtime"], rt["metadata"]["name"])
        self.assertIn(model["modelFormat"]["name"], [f["name"] for f in rt["spec"]["supportedModelFormats"]])
        self.assertIn("v2", rt["spec"]["protocolVersions"])

    def test_checks_are_live(self):
        # Each kind of check finds a planted error.
        objs = dl.rendered_objects()
        (sts,) = [o for o in objs if o["kind"] == "StatefulSet"]
        bad = copy.deepcopy(sts)
        bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {}
        self.assertTrue(check(bad))
        (sm,) = [o for o in objs if o["kind"] == "ServiceMonitor"]
        for mutate, needle in [
                (lambda s: s["spec"]["endpoints"][0].update(scheme="tcp"), "scheme"),
                (lambda s: s["spec"]["endpoints"][0].update(interval="30 seconds"), "interval"),
                (lambda s: s["spec"]["endpoints"][0]["authorization"]["credentials"].pop("key"), "'key'"),
                (lambda s: s["spec"].pop("selector"), "'selector'"),
                (lambda s: s["spec"]["endpoints"][0].update(bearerToken="x"), "'bearerToken'")]:
            bad = copy.deepcopy(sm)
            mutate(bad)
            self.assertTrue(any(needle in e for e in check(bad)), check(bad))
        with open(os.path.join(dl.KSERVE, "servingruntime.yaml")) as f:
            (rt,) = dl.objects(f.read())
        bad = copy.deepcopy(rt)
        bad["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
        self.assertTrue(any("containerPort" in e for e in check(bad)), check(bad))


if __name__ == "__main__":
    unittest.main()
