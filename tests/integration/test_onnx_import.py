"""ImportOnnx end to end: PyTorch models exported to ONNX
(tests/py/onnx_export_models.py, Debian's torch) import over gRPC (the
Python client and the CLI), and ModelInfer gives PyTorch's outputs within
1e-4 at other batch sizes too; unsupported operators and opsets are
INVALID_ARGUMENT naming the node, op type and opset; a corpus of truncated
and mutated files is refused cleanly with the daemon still healthy; the
upload limit holds."""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import fxtest
from fxtest import FluxionError, np, onnx_model, onnx_node, onnx_value_info

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORTER = os.path.join(fxtest.SOURCE_DIR, "tests", "py", "onnx_export_models.py")
GELU_ORT = os.path.join(fxtest.SOURCE_DIR, "tests", "py", "onnx_gelu_ort.py")
TORCH_PY = "/usr/bin/python3"
CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")

if subprocess.run([TORCH_PY, "-c", "import torch"], capture_output=True).returncode != 0:
    print("skipped: %s has no torch (python3-torch exports the models)" % TORCH_PY)
    sys.exit(fxtest.SKIP)

C = fxtest.grpc.StatusCode
TOL = 1e-4

# torch.cumsum exports as CumSum, which the importer does not support.
CUMSUM_EXPORT = r"""
import sys, torch
class M(torch.nn.Module):
    def forward(self, x):
        return torch.cumsum(torch.relu(x), dim=1)
torch.onnx.export(M(), (torch.randn(2, 3),), sys.argv[1], input_names=["x"],
                  output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                  opset_version=17)
"""


def export_models(outdir):
    p = subprocess.run([TORCH_PY, EXPORTER, outdir], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("exporter failed:\n%s\n%s" % (p.stdout, p.stderr))
    with open(os.path.join(outdir, "manifest.json")) as f:
        return json.load(f)


class OnnxImportTest(fxtest.DaemonTest):
    DAEMON_ARGS = ("--max-import-mb", "1")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp(dir=fxtest._WORK, prefix="onnx-")
        cls.manifest = export_models(cls.dir)

    def load(self, tag, kind, name):
        return np.load(os.path.join(self.dir, "%s.%s.%s.npy" % (tag, kind, name)))

    def onnx_path(self, tag):
        return os.path.join(self.dir, tag + ".onnx")

    def cli(self, *args, expect=0):
        env = dict(os.environ, FLUXION_SERVER=self.d.address)
        p = subprocess.run([CLI] + list(args), capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(p.returncode, expect, "fluxion %s: rc %d\n%s%s"
                         % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def check_outputs(self, model, tag):
        """ModelInfer on the reference inputs, then on the first two samples
        only (the batch dim stays dynamic), against PyTorch's outputs."""
        m = self.manifest[tag]
        ins = {n: self.load(tag, "in", n) for n in m["inputs"]}
        for rows in (None, 2):
            feed = {n: (v if rows is None else v[:rows]) for n, v in ins.items()}
            out = self.c.infer(model, feed)
            for n in m["outputs"]:
                ref = self.load(tag, "out", n)
                ref = ref if rows is None else ref[:rows]
                self.assertEqual(out[n].shape, ref.shape, "%s output %s" % (tag, n))
                err = float(np.abs(out[n] - ref).max())
                self.assertLessEqual(err, TOL, "%s output %s: max error %g" % (tag, n, err))

    def test_models_match_pytorch_client(self):
        self.assertGreaterEqual(len(self.manifest), 9)
        for tag in sorted(self.manifest):
            with self.subTest(tag=tag):
                m = self.c.import_onnx("py-" + tag, self.onnx_path(tag),
                                       description="from " + tag)
                self.assertTrue(m.loaded)
                self.assertEqual(m.description, "from " + tag)
                self.assertEqual([o.name for o in m.spec.outputs], self.manifest[tag]["outputs"])
                self.assertEqual([i.name for i in m.spec.inputs], self.manifest[tag]["inputs"])
                self.assertEqual(list(m.spec.inputs[0].shape)[0], -1)  # dynamic batch kept
                self.assertTrue(m.versions[0].source.startswith("onnx import"))
                self.check_outputs("py-" + tag, tag)

    def test_models_match_pytorch_cli(self):
        for tag in sorted(self.manifest):
            with self.subTest(tag=tag):
                p = self.cli("model", "import-onnx", "cli-" + tag, self.onnx_path(tag),
                             "--description", "cli")
                self.assertIn("imported model cli-%s from ONNX" % tag, p.stdout)
                self.assertIn("loaded", p.stdout)
                self.check_outputs("cli-" + tag, tag)

    def test_weights_are_trainable_parameters(self):
        """Gemm's weights become dense layers named like the state_dict."""
        m = self.c.import_onnx("params-mlp", self.onnx_path("mlp_op17"))
        names = {p.name: list(p.shape) for p in m.parameters}
        self.assertEqual(names.get("fc1.weight"), [16, 12])
        self.assertEqual(names.get("fc1.bias"), [16])
        self.assertEqual(names.get("out.weight"), [5, 16])
        self.assertTrue(all(p.trainable for p in m.parameters))
        self.assertEqual(m.num_parameters, 12 * 16 + 16 + 16 * 16 + 16 + 16 * 5 + 5)
        ops = [n.op for n in m.spec.nodes]
        self.assertEqual(ops.count("dense"), 3)
        self.assertNotIn("dropout", ops)  # Dropout is the identity in an export
        e = self.c.import_onnx("params-embed", self.onnx_path("embed_op17"))
        self.assertEqual([n.op for n in e.spec.nodes][0], "embedding")
        self.assertEqual({p.name: list(p.shape) for p in e.parameters}.get("emb.weight"), [11, 6])
        self.assertEqual(e.spec.inputs[0].dtype, fxtest.model_pb2.INT64)

    def test_no_load(self):
        self.cli("model", "import-onnx", "nl", self.onnx_path("mlp_op13"), "--no-load")
        self.assertFalse(self.c.get_model("nl").loaded)

    def test_unsupported_operator_names_node_op_opset(self):
        path = os.path.join(self.dir, "cumsum.onnx")
        subprocess.run([TORCH_PY, "-c", CUMSUM_EXPORT, path], check=True, capture_output=True,
                       timeout=120)
        err = self.assertCode(C.INVALID_ARGUMENT, self.c.import_onnx, "cs", path,
                              contains=("(CumSum, opset 17)", "not supported"))
        self.assertIn("node '", err.message)
        p = self.cli("model", "import-onnx", "cs", path, expect=1)
        self.assertIn("CumSum", p.stderr)
        # A hand-made file: an op nobody knows, named.
        bad = onnx_model([onnx_node("Relu", ["x"], ["h"], "r"),
                          onnx_node("FrobnicateX", ["h"], ["y"], "frob1")],
                         [onnx_value_info("x", ["n", 3])], [onnx_value_info("y", ["n", 3])],
                         opset=13)
        self.assertCode(C.INVALID_ARGUMENT, self.c.import_onnx, "fx", bad,
                        contains=("node 'frob1' (FrobnicateX, opset 13)",))
        self.assertCode(C.NOT_FOUND, self.c.get_model, "fx")

    def test_unsupported_opset_and_domain(self):
        relu = [onnx_node("Relu", ["x"], ["y"], "r")]
        io = ([onnx_value_info("x", ["n", 3])], [onnx_value_info("y", ["n", 3])])
        self.assertCode(C.INVALID_ARGUMENT, self.c.import_onnx, "o11",
                        onnx_model(relu, *io, opset=11), contains=("opset 11",))
        self.assertCode(C.INVALID_ARGUMENT, self.c.import_onnx, "o99",
                        onnx_model(relu, *io, opset=99), contains=("opset 99",))
        m = self.c.import_onnx("o13", onnx_model(relu, *io, opset=13))
        out = self.c.infer("o13", {"x": np.array([[-1, 0.5, 2]], np.float32)})["y"]
        np.testing.assert_array_equal(out, [[0, 0.5, 2]])
        self.assertEqual(m.spec.nodes[0].op, "relu")

    def test_bad_requests(self):
        req = fxtest.model_pb2.ImportOnnxRequest
        self.assertRpcCode(C.INVALID_ARGUMENT, self.c.models.ImportOnnx, iter([]))
        self.assertRpcCode(C.INVALID_ARGUMENT, self.c.models.ImportOnnx,
                           iter([req(data=b"abc")]))          # no name
        self.assertRpcCode(C.INVALID_ARGUMENT, self.c.models.ImportOnnx,
                           iter([req(name="empty")]))          # no data
        self.assertRpcCode(C.INVALID_ARGUMENT, self.c.models.ImportOnnx,
                           iter([req(name="bad/na me", data=fxtest.onnx_relu_model())]))
        self.c.import_onnx("dup", fxtest.onnx_relu_model())
        self.assertCode(C.ALREADY_EXISTS, self.c.import_onnx, "dup", fxtest.onnx_relu_model())

    def test_invalid_utf8_description_refused_on_the_wire(self):
        good = fxtest.model_pb2.ImportOnnxRequest(name="u8", description="dMARK",
                                                   data=fxtest.onnx_relu_model())
        raw = good.SerializeToString().replace(b"dMARK", b"d\xff\xfeAB")
        call = self.d.client().channel.stream_unary(
            "/fluxion.v1.ModelService/ImportOnnx", request_serializer=lambda b: b,
            response_deserializer=fxtest.model_pb2.Model.FromString)
        err = self.assertRpcCode(C.INVALID_ARGUMENT, call, iter([raw]), timeout=30)
        self.assertIn("description: invalid UTF-8", err.details())
        self.assertCode(C.NOT_FOUND, self.c.get_model, "u8")

    def test_import_limit_checked_before_buffering(self):
        """--max-import-mb 1: a 2 MiB stream stops at the first chunk past it."""
        big = fxtest.onnx_relu_model() + b"\0" * (2 << 20)
        self.assertCode(C.RESOURCE_EXHAUSTED, self.c.import_onnx, "big", big,
                        contains=("--max-import-mb",), chunk_bytes=256 << 10)

    def test_exact_gelu_joins_into_gelu(self):
        """PyTorch's exact nn.GELU() (Div/Erf/Add/Mul/Mul) imports as one
        gelu node, approximate none (test_models_match_pytorch_* compare
        its outputs); its tanh form stays written out."""
        for opset in (13, 17):
            m = self.c.import_onnx("ge-%d" % opset, self.onnx_path("gelu_exact_op%d" % opset))
            ops = [n.op for n in m.spec.nodes]
            self.assertEqual(ops.count("gelu"), 1, ops)
            self.assertNotIn("erf", ops)
            g = [n for n in m.spec.nodes if n.op == "gelu"][0]
            self.assertEqual(g.attrs["approximate"].s, "none")
            t = self.c.import_onnx("gt-%d" % opset, self.onnx_path("gelu_tanh_op%d" % opset))
            self.assertIn("tanh", [n.op for n in t.spec.nodes])

    def test_gelu_opset20_against_onnxruntime(self):
        """Gelu (opset 20: approximate absent, none, tanh) and Erf written by
        the python on PATH with onnx, onnxruntime's outputs the reference;
        skipped without them."""
        other = shutil.which("python3")
        if not other or os.path.realpath(other) == os.path.realpath(sys.executable):
            self.skipTest("no second python3 on PATH for onnxruntime")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        out = os.path.join(self.dir, "gelu-ort")
        r = subprocess.run([other, GELU_ORT, out], capture_output=True, text=True, env=env,
                           timeout=120)
        if r.returncode != 0 and "ModuleNotFoundError" in r.stderr:
            self.skipTest("onnx or onnxruntime missing: " + r.stderr.strip().splitlines()[-1])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        names = sorted(f[:-5] for f in os.listdir(out) if f.endswith(".onnx"))
        self.assertEqual(names, ["erf13", "gelu20_default", "gelu20_none", "gelu20_tanh"])
        for name in names:
            with self.subTest(model=name):
                ref = np.load(os.path.join(out, name + ".npz"))
                m = self.c.import_onnx(name.replace("_", "-"), os.path.join(out, name + ".onnx"))
                ops = {n.op: n for n in m.spec.nodes}
                if name.startswith("gelu"):
                    want = "tanh" if name.endswith("tanh") else "none"
                    attrs = ops["gelu"].attrs
                    self.assertEqual(attrs["approximate"].s if "approximate" in attrs else "tanh",
                                     want)
                got = self.c.infer(name.replace("_", "-"), {"x": ref["in:x"]})["y"]
                np.testing.assert_allclose(got, ref["out:y"], rtol=TOL, atol=TOL, err_msg=name)

    def test_corrupt_corpus_refused_cleanly(self):
        """Truncations and byte mutations of real exports (fixed seed): every
        one is refused with INVALID_ARGUMENT (or, when a mutation is harmless,
        imported), never another code, and the daemon stays healthy."""
        rng = random.Random(16)
        blobs = []
        for tag in sorted(self.manifest):
            with open(self.onnx_path(tag), "rb") as f:
                blobs.append(f.read())
        corpus = []
        for blob in blobs:
            for _ in range(20):
                corpus.append(blob[:rng.randrange(1, len(blob))])
            for _ in range(30):
                b = bytearray(blob)
                for _ in range(rng.randrange(1, 8)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
                corpus.append(bytes(b))
        # Mutations aimed at the structure: the header bytes of the message.
        for blob in blobs:
            for k in range(min(40, len(blob))):
                b = bytearray(blob)
                b[k] ^= 0xFF
                corpus.append(bytes(b))
        self.assertGreaterEqual(len(corpus), 300)
        accepted = 0
        for i, blob in enumerate(corpus):
            name = "fz-%d" % i
            try:
                self.c.import_onnx(name, blob, no_load=True)
                accepted += 1
                self.c.delete_model(name)
            except FluxionError as e:
                self.assertIn(e.code, (C.INVALID_ARGUMENT,),
                              "corpus item %d: %s %s" % (i, e.code, e.message))
                self.assertTrue(e.message, "corpus item %d: empty message" % i)
        self.assertTrue(self.d.alive())
        self.assertLess(accepted, len(corpus) // 2)
        print("corpus: %d files, %d imported" % (len(corpus), accepted), file=sys.stderr)
        # Still serving: a good import and an inference after the corpus.
        self.c.import_onnx("after", self.onnx_path("mlp_op13"))
        self.check_outputs("after", "mlp_op13")


if __name__ == "__main__":
    fxtest.main()
