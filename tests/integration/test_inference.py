"""The Open Inference Protocol (inference.GRPCInferenceService) against a
real fluxiond: health, metadata, ModelInfer (typed and raw, several outputs,
subsets, batches), statistics, repository load/unload, and every kind of bad
request, after which the daemon still answers."""
import threading

import fxtest
from fxtest import C, infer_pb2, mlp_spec, np, randn

I = infer_pb2

MULTI = {
    "inputs": [{"name": "a", "dtype": "FP32", "shape": [-1, 4]},
               {"name": "b", "dtype": "FP32", "shape": [-1, 4]}],
    "nodes": [
        {"name": "s", "op": "add", "inputs": ["a", "b"]},
        {"name": "fc", "op": "dense", "inputs": ["s"],
         "attrs": {"in_features": 4, "out_features": 3}},
        {"name": "sm", "op": "softmax", "inputs": ["fc"], "attrs": {"axis": -1}},
        {"name": "cat", "op": "concat", "inputs": ["a", "b"], "attrs": {"axis": 1}},
    ],
    "outputs": [{"name": "sum", "source": "s"}, {"name": "logits", "source": "fc"},
                {"name": "probs", "source": "sm"}, {"name": "cat", "source": "cat"}],
}

EMBED = {
    "inputs": [{"name": "ids", "dtype": "INT64", "shape": [-1, 5]}],
    "nodes": [{"name": "emb", "op": "embedding", "inputs": ["ids"],
               "attrs": {"num_embeddings": 10, "embedding_dim": 3}}],
    "outputs": [{"name": "vectors", "source": "emb"}],
}


def multi_forward(w, a, b):
    s = a + b
    logits = s @ w["fc.weight"].T + w["fc.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"sum": s, "logits": logits, "probs": e / e.sum(axis=1, keepdims=True),
            "cat": np.concatenate([a, b], axis=1)}


def close(test, got, want):
    test.assertEqual(set(got), set(want))
    for k in want:
        test.assertEqual(got[k].shape, want[k].shape, k)
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)


class InferenceTest(fxtest.DaemonTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c.create_model("mlp", mlp_spec(), seed=1)
        cls.c.create_model("multi", MULTI, seed=2)
        cls.c.create_model("embed", EMBED, seed=3)
        cls.w_mlp = cls.c.export_arrays("mlp")
        cls.w_multi = cls.c.export_arrays("multi")
        cls.w_embed = cls.c.export_arrays("embed")

    def req(self, model="mlp", inputs=None, raw=False, **kw):
        if inputs is None:
            inputs = {"x": randn(0, 2, 4)}
        return fxtest.fluxion_client.infer_request(model, inputs, raw=raw, **kw)

    def infer_code(self, code, req, contains=()):
        return self.assertCode(code, self.c.infer_raw, req, contains=contains)

    # ------------------------------------------------------------ health

    def test_health_and_metadata(self):
        self.assertTrue(self.c.server_live())
        self.assertTrue(self.c.server_ready())
        md = self.c.server_metadata()
        self.assertEqual(md.name, "fluxion")
        self.assertTrue(md.version)
        self.assertIn("model_repository", md.extensions)
        self.assertTrue(self.c.model_ready("mlp"))
        self.assertTrue(self.c.model_ready("mlp", "1"))
        self.assertFalse(self.c.model_ready("mlp", "99"))
        self.assertCode(C.NOT_FOUND, self.c.model_ready, "nobody")
        # a version is a number or an alias name (docs/versions.md)
        self.assertCode(C.INVALID_ARGUMENT, self.c.model_ready, "mlp", "One 1")
        self.assertCode(C.NOT_FOUND, self.c.model_ready, "mlp", "one", contains="no alias 'one'")
        self.assertTrue(self.c.model_ready("mlp", "production"))

        m = self.c.model_metadata("multi")
        self.assertEqual(m.name, "multi")
        self.assertEqual(m.platform, "fluxion")
        self.assertEqual(list(m.versions), ["1"])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in m.inputs],
                         [("a", "FP32", [-1, 4]), ("b", "FP32", [-1, 4])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in m.outputs],
                         [("sum", "FP32", [-1, 4]), ("logits", "FP32", [-1, 3]),
                          ("probs", "FP32", [-1, 3]), ("cat", "FP32", [-1, 8])])
        e = self.c.model_metadata("embed")
        self.assertEqual([(t.name, t.datatype) for t in e.inputs], [("ids", "INT64")])
        self.assertEqual(list(e.outputs[0].shape), [-1, 5, 3])
        self.assertCode(C.NOT_FOUND, self.c.model_metadata, "nobody")
        self.assertCode(C.INVALID_ARGUMENT, self.c.model_metadata, "mlp", "x 1")
        self.assertCode(C.NOT_FOUND, self.c.model_metadata, "mlp", "x1", contains="no alias")

    # ------------------------------------------------------------- infer

    def test_infer_typed_and_raw(self):
        x = randn(1, 5, 4)
        want = fxtest.mlp_forward(self.w_mlp, x)
        for raw in (False, True):
            with self.subTest(raw=raw):
                resp = self.c.infer_raw(self.req(inputs={"x": x}, raw=raw, request_id="r-7"))
                self.assertEqual(resp.model_name, "mlp")
                self.assertEqual(resp.model_version, "1")
                self.assertEqual(resp.id, "r-7")
                self.assertEqual(len(resp.raw_output_contents), 1 if raw else 0)
                self.assertEqual(resp.outputs[0].datatype, "FP32")
                self.assertEqual(list(resp.outputs[0].shape), [5, 3])
                close(self, fxtest.fluxion_client.infer_outputs(resp), {"y": want})

    def test_batches_equal_single_samples(self):
        x = randn(2, 7, 4)
        batched = self.c.infer("mlp", {"x": x})["y"]
        for i in range(7):
            one = self.c.infer("mlp", {"x": x[i:i + 1]}, raw=True)["y"]
            np.testing.assert_allclose(one[0], batched[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched, fxtest.mlp_forward(self.w_mlp, x), rtol=1e-5,
                                   atol=1e-5)

    def test_several_outputs_and_subsets(self):
        a, b = randn(3, 3, 4), randn(4, 3, 4)
        want = multi_forward(self.w_multi, a, b)
        for raw in (False, True):
            close(self, self.c.infer("multi", {"a": a, "b": b}, raw=raw), want)
        got = self.c.infer("multi", {"b": b, "a": a}, outputs=["probs", "sum"], raw=True)
        close(self, got, {k: want[k] for k in ("probs", "sum")})
        resp = self.c.infer_raw(self.req("multi", {"a": a, "b": b}, outputs=["cat", "logits"]))
        self.assertEqual([o.name for o in resp.outputs], ["cat", "logits"])

    def test_int64_embedding(self):
        ids = np.random.default_rng(5).integers(0, 10, size=(4, 5)).astype(np.int64)
        want = self.w_embed["emb.weight"][ids]
        for raw in (False, True):
            got = self.c.infer("embed", {"ids": ids}, raw=raw)
            close(self, got, {"vectors": want})
        self.infer_code(C.INVALID_ARGUMENT, self.req("embed", {"ids": ids.astype(np.float32)}),
                        contains=("ids", "INT64"))
        spec32 = {"inputs": [dict(EMBED["inputs"][0], dtype="INT32")],
                  "nodes": EMBED["nodes"], "outputs": EMBED["outputs"]}
        self.c.create_model("embed32", spec32, weights=self.w_embed)
        for raw in (False, True):
            got = self.c.infer("embed32", {"ids": ids.astype(np.int32)}, raw=raw)
            close(self, got, {"vectors": want})
        self.infer_code(C.INVALID_ARGUMENT, self.req("embed32", {"ids": ids}),
                        contains=("ids", "INT32"))
        self.infer_code(C.INVALID_ARGUMENT, self.req("embed", {"ids": np.full((1, 5), 10)}))
        self.infer_code(C.INVALID_ARGUMENT, self.req("embed", {"ids": np.full((1, 5), -1)}))

    def test_statistics(self):
        self.c.create_model("counted", mlp_spec(), seed=9)
        for n in (1, 2, 2, 4):
            self.c.infer("counted", {"x": randn(n, n, 4)})
        self.infer_code(C.INVALID_ARGUMENT, self.req("counted", {"x": randn(0, 2, 5)}))
        stats = self.c.model_statistics("counted")
        self.assertEqual(len(stats), 1)
        s = stats[0]
        self.assertEqual((s.name, s.version), ("counted", "1"))
        self.assertEqual(s.inference_count, 9)
        self.assertEqual(s.execution_count, 4)
        self.assertEqual(s.inference_stats.success.count, 4)
        self.assertEqual(s.inference_stats.fail.count, 1)
        self.assertGreater(s.last_inference, 0)
        self.assertEqual({b.batch_size: b.compute_infer.count for b in s.batch_stats},
                         {1: 1, 2: 2, 4: 1})
        names = [m.name for m in self.c.model_statistics()]
        self.assertIn("counted", names)
        self.assertIn("mlp", names)
        self.assertCode(C.NOT_FOUND, self.c.model_statistics, "nobody")

    def test_repository_load_unload(self):
        self.c.create_model("toggle", mlp_spec(), seed=4)
        index = {m.name: m for m in self.c.repository_index()}
        self.assertEqual(index["toggle"].state, "READY")
        self.c.unload_model("toggle")
        self.assertFalse(self.c.model_ready("toggle"))
        self.assertFalse(self.c.get_model("toggle").loaded)
        index = {m.name: m for m in self.c.repository_index()}
        self.assertEqual(index["toggle"].state, "UNAVAILABLE")
        self.assertNotIn("toggle", [m.name for m in self.c.repository_index(ready=True)])
        self.infer_code(C.FAILED_PRECONDITION, self.req("toggle"), contains="toggle")
        self.assertCode(C.FAILED_PRECONDITION, self.c.model_metadata, "toggle")
        self.c.unload_model("toggle")  # twice: fine
        self.c.load_model("toggle")
        self.assertTrue(self.c.model_ready("toggle"))
        x = randn(6, 2, 4)
        np.testing.assert_allclose(self.c.infer("toggle", {"x": x})["y"],
                                   fxtest.mlp_forward(self.c.export_arrays("toggle"), x),
                                   rtol=1e-5, atol=1e-5)
        self.assertCode(C.NOT_FOUND, self.c.load_model, "nobody")
        self.assertCode(C.NOT_FOUND, self.c.unload_model, "nobody")

    def test_large_messages_within_the_limit(self):
        """8 MiB in, 6 MiB out: over gRPC's 4 MiB default, under the daemon's 64 MiB."""
        x = randn(12, 1 << 19, 4)
        y = self.c.infer("mlp", {"x": x}, raw=True)["y"]
        self.assertEqual(y.shape, (1 << 19, 3))
        np.testing.assert_allclose(y[::4099], fxtest.mlp_forward(self.w_mlp, x[::4099]),
                                   rtol=1e-5, atol=1e-5)

    def test_deadline_and_cancel(self):
        """Calls that time out or are cancelled by the client leave the daemon serving."""
        big = self.req(inputs={"x": randn(13, 1 << 18, 4)}, raw=True)
        for _ in range(3):
            with self.assertRaises(fxtest.grpc.RpcError) as cm:
                self.c.inference.ModelInfer(big, timeout=0.001)
            self.assertEqual(cm.exception.code(), C.DEADLINE_EXCEEDED)
            fut = self.c.inference.ModelInfer.future(big, timeout=30)
            fut.cancel()
        self.assertTrue(self.c.server_live())
        self.assertEqual(self.c.infer("mlp", {"x": randn(1, 2, 4)})["y"].shape, (2, 3))

    def test_concurrent_changes(self):
        """ModelInfer while the model gets new versions, is unloaded, loaded,
        deleted and created again: each answer is OK with one version's
        output, or FAILED_PRECONDITION (unloaded) / NOT_FOUND; the daemon survives."""
        spec = mlp_spec()
        self.c.create_model("churn", spec, seed=21)
        w1 = self.c.export_arrays("churn")
        w2 = {k: v * -1 for k, v in w1.items()}
        x = randn(14, 3, 4)
        allowed = [fxtest.mlp_forward(w1, x), fxtest.mlp_forward(w2, x)]
        stop = threading.Event()
        problems, counts = [], {"ok": 0, "refused": 0}
        lock = threading.Lock()

        def reader(raw):
            cl = fxtest.Client(self.d.address, timeout=20)
            try:
                while not stop.is_set():
                    try:
                        y = cl.infer("churn", {"x": x}, raw=raw)["y"]
                        good = any(np.allclose(y, a, rtol=1e-5, atol=1e-5) for a in allowed)
                        with lock:
                            counts["ok"] += 1
                            if not good:
                                problems.append("output matches no version")
                    except fxtest.FluxionError as e:
                        with lock:
                            counts["refused"] += 1
                            if e.code not in (C.FAILED_PRECONDITION, C.NOT_FOUND):
                                problems.append("%s: %s" % (e.code.name, e.message))
            finally:
                cl.close()

        threads = [threading.Thread(target=reader, args=(i % 2 == 0,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(12):
                self.c.import_weights("churn", w2 if i % 2 == 0 else w1)
                self.c.unload_model("churn")
                self.c.load_model("churn")
                if i % 4 == 3:
                    self.c.delete_model("churn")
                    self.c.create_model("churn", spec, weights=w1)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(problems, [])
        self.assertGreater(counts["ok"], 0)
        self.assertTrue(self.d.alive())
        self.assertTrue(self.c.server_live())

    def test_accepted_models_are_served(self):
        """A model CreateModel accepts (and reports ready) can be run, whatever
        its number of inputs and outputs; otherwise CreateModel must refuse it."""
        n = 65
        spec = {"inputs": [{"name": "i%d" % k, "shape": [-1, 1]} for k in range(n)],
                "nodes": [{"name": "cat", "op": "concat", "attrs": {"axis": 1},
                           "inputs": ["i%d" % k for k in range(n)]}],
                "outputs": [{"name": "o%d" % k, "source": "i%d" % k} for k in range(n)]
                + [{"name": "cat", "source": "cat"}]}
        try:
            self.c.create_model("wide-io", spec)
        except fxtest.InvalidArgument:
            return
        self.assertTrue(self.c.model_ready("wide-io"))
        inputs = {"i%d" % k: np.full((2, 1), k, np.float32) for k in range(n)}
        got = self.c.infer("wide-io", inputs, raw=True)
        np.testing.assert_array_equal(got["cat"], np.tile(np.arange(n, dtype=np.float32), (2, 1)))
        np.testing.assert_array_equal(got["o64"], inputs["i64"])

    # ------------------------------------------------------ bad requests

    def test_bad_requests(self):
        """Every kind of malformed ModelInfer: the right code, a message
        naming what is wrong."""
        x = randn(0, 2, 4)

        def edit(fn, model="mlp", inputs=None, raw=False, **kw):
            r = self.req(model, inputs if inputs is not None else {"x": x}, raw=raw, **kw)
            fn(r)
            return r

        def set_shape(r, shape):
            del r.inputs[0].shape[:]
            r.inputs[0].shape.extend(shape)

        A = C.INVALID_ARGUMENT
        cases = [
            ("unknown model", C.NOT_FOUND, self.req("nobody"), "nobody"),
            ("empty model name", A, self.req(""), ""),
            ("bad version string", A, self.req(version="V 1"), "V 1"),
            ("unknown alias", C.NOT_FOUND, self.req(version="v1"), "no alias 'v1'"),
            ("number and junk", A, self.req(version="1x"), "1x"),
            ("zero version", A, self.req(version="0"), ""),
            ("negative version", A, self.req(version="-3"), ""),
            ("missing version", C.NOT_FOUND, self.req(version="42"), ""),
            ("wrong datatype", A, edit(lambda r: setattr(r.inputs[0], "datatype", "FP64")),
             "FP64"),
            ("unknown datatype", A, edit(lambda r: setattr(r.inputs[0], "datatype", "BANANA")),
             "x"),
            ("wrong rank", A, self.req(inputs={"x": randn(0, 2, 4, 1)}), "x"),
            ("rank over the limit", A, edit(lambda r: set_shape(r, [1] * 40)), "x"),
            ("wrong fixed size", A, self.req(inputs={"x": randn(0, 2, 5)}), "x"),
            ("scalar", A, self.req(inputs={"x": np.float32(1.0)}), "x"),
            ("raw byte count", A, edit(lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 31),
                                       raw=True), "x"),
            ("raw count != inputs", A,
             edit(lambda r: r.raw_input_contents.append(b"\0" * 4),
                  inputs={"x": x}, raw=True), "raw_input_contents"),
            ("raw and typed both", A,
             edit(lambda r: r.inputs[0].contents.fp32_contents.extend([1.0] * 8), raw=True), "x"),
            ("missing input", A, self.req("multi", {"a": x}), "b"),
            ("no inputs", A, self.req("mlp", {}), "x"),
            ("unknown input", A, self.req("mlp", {"x": x, "zz": x}), "zz"),
            ("duplicate input", A, edit(lambda r: r.inputs.append(r.inputs[0])), "x"),
            ("unknown output", A, self.req(outputs=["nope"]), "nope"),
            ("output twice", A, self.req(outputs=["y", "y"]), "y"),
            ("typed count short", A, edit(lambda r: r.inputs[0].contents.fp32_contents.pop()),
             "x"),
            ("typed count long", A,
             edit(lambda r: r.inputs[0].contents.fp32_contents.append(0.5)), "x"),
            ("typed in the wrong field", A,
             edit(lambda r: (r.inputs[0].contents.ClearField("fp32_contents"),
                             r.inputs[0].contents.int64_contents.extend([1] * 8))), "x"),
            ("negative dims", A, edit(lambda r: set_shape(r, [-2, 4])), "x"),
            ("huge dims (overflow)", A, edit(lambda r: set_shape(r, [1 << 62, 1 << 62, 4])),
             "x"),
            ("huge dims (one)", A, edit(lambda r: set_shape(r, [(1 << 63) - 1, 4])), "x"),
            ("shape [0, 4] with 8 values", A, edit(lambda r: set_shape(r, [0, 4])), "x"),
            ("batch sizes disagree", A, self.req("multi", {"a": randn(0, 2, 4),
                                                           "b": randn(0, 3, 4)}), ""),
        ]
        for what, code, req, name in cases:
            with self.subTest(what):
                self.infer_code(code, req, contains=name)
        self.assertTrue(self.c.server_live())
        self.assertTrue(self.d.alive())

    def test_garbage_bytes_to_every_method(self):
        """Bytes that do not parse as the request message: INVALID_ARGUMENT
        from every method; unknown methods: UNIMPLEMENTED."""
        garbage = [b"\x0a\x05ab",                      # a string field cut short
                   b"\xff\xff\xff\xff",                  # a tag cut short
                   b"\x08" + b"\x80" * 10,                # an 11-byte varint
                   b"\x2a\xff\xff\xff\xff\x0f"]          # a 4 GiB length, no data
        unary = {
            "inference.GRPCInferenceService": [
                "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                "ModelInfer", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad",
                "RepositoryModelUnload"],
            "fluxion.v1.ModelService": ["CreateModel", "GetModel", "ListModels", "DeleteModel"],
            "fluxion.v1.ClusterService": ["GetStatus"],
        }
        ch = self.c.channel
        for service, methods in unary.items():
            for m in methods:
                call = ch.unary_unary("/%s/%s" % (service, m))
                for g in garbage:
                    with self.subTest(method=m, garbage=g):
                        self.assertRpcCode(C.INVALID_ARGUMENT, call, g, timeout=10)
        export = ch.unary_stream("/fluxion.v1.ModelService/ExportWeights")
        imp = ch.stream_unary("/fluxion.v1.ModelService/ImportWeights")
        for g in garbage:
            with self.subTest(method="ExportWeights", garbage=g):
                self.assertRpcCode(C.INVALID_ARGUMENT, lambda: list(export(g, timeout=10)))
            with self.subTest(method="ImportWeights", garbage=g):
                self.assertRpcCode(C.INVALID_ARGUMENT, imp, iter([g]), timeout=10)
        for path in ["/inference.GRPCInferenceService/NoSuchMethod", "/no.Such/Service",
                     "/fluxion.v1.ModelService/", "/"]:
            with self.subTest(path=path):
                self.assertRpcCode(C.UNIMPLEMENTED, ch.unary_unary(path), b"", timeout=10)
        self.assertTrue(self.c.server_live())
        self.assertTrue(self.d.alive())
        np.testing.assert_allclose(self.c.infer("mlp", {"x": randn(8, 1, 4)})["y"],
                                   fxtest.mlp_forward(self.w_mlp, randn(8, 1, 4)),
                                   rtol=1e-5, atol=1e-5)


class MessageLimitTest(fxtest.DaemonTest):
    DAEMON_ARGS = ("--max-message-mb", "1", "--max-import-mb", "2",
                   "--max-model-params", "1200000")

    def test_weights_limits(self):
        """Exports stream in chunks under the message limit whatever chunk_bytes
        asks; imports over --max-import-mb and models over --max-model-params
        are refused."""
        spec = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 1000]}],
                "nodes": [{"name": "fc", "op": "dense", "inputs": ["x"],
                           "attrs": {"in_features": 1000, "out_features": 700}}],
                "outputs": [{"name": "y", "source": "fc"}]}   # 2.8 MB of weights
        self.c.create_model("big", spec, seed=1, no_load=True)
        chunks = self.c.export_weights_chunks("big", chunk_bytes=8 << 20)
        self.assertGreaterEqual(len(chunks), 3)
        self.assertTrue(all(len(c.data) < 1 << 20 for c in chunks))
        data = b"".join(c.data for c in chunks)
        self.assertEqual(len(data), chunks[0].total_bytes)
        self.assertCode(C.RESOURCE_EXHAUSTED, self.c.import_weights, "big", data,
                        chunk_bytes=512 << 10, contains="max-import-mb")
        self.assertEqual(len(self.c.get_model("big").versions), 1)
        huge = dict(spec, nodes=[dict(spec["nodes"][0], attrs={"in_features": 1000,
                                                               "out_features": 1300})])
        self.assertCode(C.INVALID_ARGUMENT, self.c.create_model, "too-big", huge,
                        contains="fc")

    def test_oversize_message(self):
        self.c.create_model("mlp", mlp_spec(), seed=1)
        big = randn(1, (2 << 20) // 16, 4)  # 2 MiB of FP32
        for raw in (True, False):
            with self.subTest(raw=raw):
                self.assertCode(C.RESOURCE_EXHAUSTED, self.c.infer, "mlp", {"x": big}, raw=raw)
        # An answer over the limit is refused too, not sent.
        wide = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 1]}],
                "nodes": [{"name": "fc", "op": "dense", "inputs": ["x"],
                           "attrs": {"in_features": 1, "out_features": 4096}}],
                "outputs": [{"name": "y", "source": "fc"}]}
        self.c.create_model("wide", wide, seed=1)
        err = self.assertCode(C.RESOURCE_EXHAUSTED, self.c.infer, "wide",
                              {"x": randn(2, 128, 1)}, raw=True)
        self.assertTrue(err.message)
        small = randn(3, 2, 4)
        self.assertEqual(self.c.infer("mlp", {"x": small})["y"].shape, (2, 3))
        self.assertTrue(self.d.alive())


if __name__ == "__main__":
    fxtest.main()
