"""fluxion.v1.ModelService against a real fluxiond: define, inspect, list,
delete; versions through ImportWeights; ExportWeights streamed; every kind of
bad spec, name and weights gives the right status and changes nothing."""
import copy
import hashlib
import math
import threading
import time

import fxtest
from fxtest import C, mlp_spec, np, safetensors


def dense(name, inputs, n_in, n_out, **attrs):
    return {"name": name, "op": "dense", "inputs": inputs,
            "attrs": dict(in_features=n_in, out_features=n_out, **attrs)}


def one_node_spec(node, n_in=4):
    """A spec whose only node is `node`, reading input x [-1, n_in]."""
    return {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, n_in]}],
            "nodes": [node], "outputs": [{"name": "y", "source": node["name"]}]}


class ModelsTest(fxtest.DaemonTest):

    def test_create_get_list_delete(self):
        m = self.c.create_model("mlp-a", mlp_spec(), description="first", seed=7)
        self.assertEqual(m.name, "mlp-a")
        self.assertEqual(m.description, "first")
        self.assertTrue(m.loaded)
        self.assertEqual(m.latest_version, 1)
        self.assertEqual([v.version for v in m.versions], [1])
        self.assertEqual(m.versions[0].source, "init (seed 7)")
        self.assertEqual(m.num_parameters, 4 * 8 + 8 + 8 * 3 + 3)
        self.assertEqual({p.name: list(p.shape) for p in m.parameters},
                         {"fc1.weight": [8, 4], "fc1.bias": [8], "fc2.weight": [3, 8],
                          "fc2.bias": [3]})
        self.assertTrue(all(p.trainable for p in m.parameters))
        self.assertEqual([(o.name, o.dtype, list(o.shape)) for o in m.output_specs],
                         [("y", fxtest.model_pb2.FP32, [-1, 3])])
        self.assertEqual(fxtest.fluxion_client.spec_to_dict(m.spec)["nodes"][0]["attrs"],
                         {"in_features": 4, "out_features": 8, "activation": "relu"})

        g = self.c.get_model("mlp-a")
        self.assertEqual(g.spec, m.spec)
        self.assertEqual(list(g.versions), list(m.versions))
        self.assertIn("mlp-a", [x.name for x in self.c.list_models()])

        self.c.delete_model("mlp-a")
        self.assertNotIn("mlp-a", [x.name for x in self.c.list_models()])
        self.assertCode(C.NOT_FOUND, self.c.get_model, "mlp-a", contains="mlp-a")
        self.assertCode(C.NOT_FOUND, self.c.delete_model, "mlp-a")
        self.assertCode(C.NOT_FOUND, self.c.model_ready, "mlp-a")
        # The name is free again.
        self.c.create_model("mlp-a", mlp_spec(), seed=7)
        self.c.delete_model("mlp-a")

    def test_no_load_and_seeds(self):
        a = self.c.create_model("seed-a", mlp_spec(), seed=3, no_load=True)
        self.assertFalse(a.loaded)
        self.assertFalse(self.c.model_ready("seed-a"))
        self.c.create_model("seed-b", mlp_spec(), seed=3, no_load=True)
        self.c.create_model("seed-c", mlp_spec(), seed=4, no_load=True)
        wa, wb, wc = (self.c.export_arrays(n) for n in ("seed-a", "seed-b", "seed-c"))
        for k in wa:
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
        self.assertFalse(np.array_equal(wa["fc1.weight"], wc["fc1.weight"]),
                         "seeds 3 and 4 gave the same weights")
        # Dense layers are not all zero (biases may be).
        self.assertGreater(float(np.abs(wa["fc1.weight"]).sum()), 0.0)

    def test_create_with_weights(self):
        rng = np.random.default_rng(11)
        w = {"fc1.weight": rng.standard_normal((8, 4)).astype(np.float32),
             "fc1.bias": rng.standard_normal(8).astype(np.float32),
             "fc2.weight": rng.standard_normal((3, 8)).astype(np.float32),
             "fc2.bias": rng.standard_normal(3).astype(np.float32)}
        m = self.c.create_model("given", mlp_spec(), weights=w)
        self.assertEqual(m.versions[0].source, "create (weights given)")
        got = self.c.export_arrays("given")
        self.assertEqual(set(got), set(w))
        for k in w:
            np.testing.assert_array_equal(got[k], w[k], err_msg=k)
        bad = dict(w, **{"fc2.bias": np.zeros(4, np.float32)})
        self.assertCode(C.INVALID_ARGUMENT, self.c.create_model, "given-bad", mlp_spec(),
                        weights=bad, contains="fc2.bias")
        self.assertCode(C.NOT_FOUND, self.c.get_model, "given-bad")

    def test_export_streams_chunks(self):
        spec = one_node_spec(dense("big", ["x"], 64, 64), n_in=64)
        self.c.create_model("chunky", spec, seed=1, no_load=True)
        chunks = self.c.export_weights_chunks("chunky", chunk_bytes=4096)
        data = b"".join(c.data for c in chunks)
        self.assertGreater(len(data), 64 * 64 * 4)
        self.assertEqual(chunks[0].name, "chunky")
        self.assertEqual(chunks[0].version, 1)
        self.assertEqual(chunks[0].total_bytes, len(data))
        self.assertEqual(len(chunks), math.ceil(len(data) / 4096))
        self.assertTrue(all(len(c.data) == 4096 for c in chunks[:-1]))
        # One chunk with the default size, same bytes.
        self.assertEqual(self.c.export_weights("chunky")[1], data)
        m = self.c.get_model("chunky")
        self.assertEqual(m.versions[0].weights_bytes, len(data))
        self.assertEqual(m.versions[0].weights_sha256, hashlib.sha256(data).hexdigest())
        arrays = safetensors.load(data)
        self.assertEqual({k: v.shape for k, v in arrays.items()},
                         {"big.weight": (64, 64), "big.bias": (64,)})

    def test_versions_via_import(self):
        self.c.create_model("ver", mlp_spec(), seed=5)
        v1, data1 = self.c.export_weights("ver")
        self.assertEqual(v1, 1)
        w = safetensors.load(data1)
        w2 = {k: (v * 2 + 1).astype(np.float32) for k, v in w.items()}
        blob2 = safetensors.dump(w2)
        # Streamed in many small chunks.
        ver = self.c.import_weights("ver", blob2, source="doubled", chunk_bytes=100)
        self.assertEqual(ver.version, 2)
        self.assertEqual(ver.source, "doubled")
        self.assertEqual(ver.weights_bytes, len(blob2))
        self.assertEqual(ver.weights_sha256, hashlib.sha256(blob2).hexdigest())
        m = self.c.get_model("ver")
        self.assertEqual([v.version for v in m.versions], [1, 2])
        self.assertEqual(m.latest_version, 2)
        self.assertEqual(self.c.export_weights("ver", version=2), (2, blob2))
        self.assertEqual(self.c.export_weights("ver"), (2, blob2))
        self.assertEqual(self.c.export_weights("ver", version=1), (1, data1))
        # A loaded model serves the new version at once.
        x = fxtest.randn(1, 2, 4)
        y = self.c.infer("ver", {"x": x})["y"]
        np.testing.assert_allclose(y, fxtest.mlp_forward(w2, x), rtol=1e-5, atol=1e-5)
        y1 = self.c.infer("ver", {"x": x}, version="1")["y"]
        np.testing.assert_allclose(y1, fxtest.mlp_forward(w, x), rtol=1e-5, atol=1e-5)
        # A third version from an unchanged export round trip.
        self.assertEqual(self.c.import_weights("ver", data1).version, 3)
        self.assertEqual(self.c.export_weights("ver", 3)[1], data1)
        self.assertEqual(self.c.get_model("ver").versions[2].source, "import")

        self.assertCode(C.NOT_FOUND, self.c.export_weights, "ver", version=99)
        self.assertCode(C.INVALID_ARGUMENT, self.c.export_weights, "ver", version=-1,
                        contains="version")
        self.assertCode(C.NOT_FOUND, self.c.export_weights, "no-such-model")

    def test_bad_weights_on_import(self):
        self.c.create_model("imp", mlp_spec(), seed=2)
        good = self.c.export_arrays("imp")
        wrong_shape = dict(good, **{"fc1.weight": np.zeros((4, 8), np.float32)})
        missing = {k: v for k, v in good.items() if k != "fc2.bias"}
        extra = dict(good, **{"fc3.weight": np.zeros((2, 2), np.float32)})
        wrong_dtype = dict(good, **{"fc1.bias": good["fc1.bias"].astype(np.float64)})
        blob = safetensors.dump(good)
        cases = [
            ("wrong shape", safetensors.dump(wrong_shape), "fc1.weight"),
            ("missing tensor", safetensors.dump(missing), "fc2.bias"),
            ("extra tensor", safetensors.dump(extra), "fc3.weight"),
            ("wrong dtype", safetensors.dump(wrong_dtype), "fc1.bias"),
            ("garbage", b"\x00garbage" * 50, ""),
            ("truncated", blob[:len(blob) // 2], ""),
            ("header length past the end", b"\xff" * 8 + blob[8:], ""),
            ("empty", b"", ""),
        ]
        for what, data, name in cases:
            with self.subTest(what):
                self.assertCode(C.INVALID_ARGUMENT, self.c.import_weights, "imp", data,
                                contains=(name, "imp"))
        m = self.c.get_model("imp")
        self.assertEqual([v.version for v in m.versions], [1], "a bad import added a version")
        self.assertCode(C.NOT_FOUND, self.c.import_weights, "nobody", blob)
        # First chunk without the model's name.
        stub = self.c.models
        self.assertRpcCode(C.INVALID_ARGUMENT, stub.ImportWeights,
                           iter([fxtest.model_pb2.WeightsChunk(data=blob)]), timeout=10)
        self.assertRpcCode(C.INVALID_ARGUMENT, stub.ImportWeights, iter([]), timeout=10)
        # The model still serves its first version.
        x = fxtest.randn(3, 1, 4)
        np.testing.assert_allclose(self.c.infer("imp", {"x": x})["y"],
                                   fxtest.mlp_forward(good, x), rtol=1e-5, atol=1e-5)

    def test_bad_names(self):
        for name in ["", "has space", "a/b/c", "../up", "x" * 129, "semi;colon", "caf\u00e9",
                     "Team/x", "/x", "default/"]:
            with self.subTest(name=name):
                self.assertCode(C.INVALID_ARGUMENT, self.c.create_model, name, mlp_spec(),
                                contains="name")
        # TEAM/NAME is a team's model: a team that does not exist is not found
        self.assertCode(C.NOT_FOUND, self.c.create_model, "ghost/x", mlp_spec(),
                        contains="team 'ghost'")
        for name in ["A.b-c_9", "x" * 128]:
            self.c.create_model(name, mlp_spec(), no_load=True)
            self.c.delete_model(name)

    def test_already_exists_keeps_the_first(self):
        self.c.create_model("dup", mlp_spec(), seed=1)
        before = self.c.export_weights("dup")
        self.assertCode(C.ALREADY_EXISTS, self.c.create_model, "dup", mlp_spec(n_out=5), seed=2,
                        contains="dup")
        self.assertEqual(self.c.export_weights("dup"), before)
        self.assertEqual(list(self.c.get_model("dup").output_specs[0].shape), [-1, 3])

    def test_concurrent_creates_of_one_name(self):
        """Eight clients create the same name at once: one wins, the others
        get ALREADY_EXISTS, and the winner's weights are the stored ones."""
        results = [None] * 8

        def create(i):
            c = fxtest.Client(self.d.address, timeout=30)
            try:
                results[i] = c.create_model("race", mlp_spec(), seed=100 + i).versions[0].source
            except fxtest.FluxionError as e:
                results[i] = e.code
            finally:
                c.close()
        threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        won = [r for r in results if isinstance(r, str)]
        self.assertEqual(len(won), 1, results)
        self.assertEqual(results.count(C.ALREADY_EXISTS), 7, results)
        self.assertEqual(self.c.get_model("race").versions[0].source, won[0])

    def test_aborted_streams(self):
        """An ImportWeights the client abandons adds no version; an
        ExportWeights it abandons after the first chunk leaves the daemon
        serving."""
        spec = one_node_spec(dense("fc", ["x"], 64, 64), n_in=64)
        self.c.create_model("abort", spec, seed=1)
        data = self.c.export_weights("abort")[1]

        def slow_chunks():
            yield fxtest.model_pb2.WeightsChunk(name="abort", data=data[:4096])
            time.sleep(5)
            yield fxtest.model_pb2.WeightsChunk(data=data[4096:])
        fut = self.c.models.ImportWeights.future(slow_chunks(), timeout=30)
        time.sleep(0.3)
        fut.cancel()
        self.assertRpcCode(C.DEADLINE_EXCEEDED, self.c.models.ImportWeights, slow_chunks(),
                           timeout=0.5)
        stream = self.c.models.ExportWeights(
            fxtest.model_pb2.ExportWeightsRequest(name="abort", chunk_bytes=4096), timeout=30)
        self.assertEqual(next(stream).name, "abort")
        stream.cancel()
        self.assertEqual([v.version for v in self.c.get_model("abort").versions], [1])
        self.assertEqual(self.c.export_weights("abort")[1], data)
        self.assertTrue(self.c.model_ready("abort"))

    def test_missing_spec(self):
        req = fxtest.model_pb2.CreateModelRequest(name="nospec")
        self.assertRpcCode(C.INVALID_ARGUMENT, self.c.models.CreateModel, req, timeout=10)

    def test_cluster_status(self):
        self.c.create_model("st-loaded", mlp_spec())
        self.c.create_model("st-stored", mlp_spec(), no_load=True)
        st = self.c.status()
        names = [m.name for m in self.c.list_models()]
        loaded = [m.name for m in self.c.list_models() if m.loaded]
        self.assertEqual(st.models_stored, len(names))
        self.assertEqual(st.models_loaded, len(loaded))
        self.assertEqual(st.data_dir, self.d.data_dir)
        self.assertTrue(st.version)
        self.assertGreaterEqual(st.uptime_ms, 0)
        self.assertGreater(st.requests_total, 0)
        self.assertEqual([(x.name, x.kind) for x in st.devices][:1], [("cpu", "cpu")])
        self.assertGreater(st.devices[0].memory_total_bytes, 0)

    def test_client_side_spec_errors(self):
        """The client refuses values with no AttrValue form before sending."""
        spec = mlp_spec()
        spec["nodes"][0]["attrs"]["in_features"] = [1, "two"]
        with self.assertRaises(TypeError):
            self.c.create_model("client-bad", spec)
        spec["nodes"][0]["attrs"]["in_features"] = {"a": 1}
        with self.assertRaises(TypeError):
            self.c.create_model("client-bad", spec)
        with self.assertRaises(ValueError):
            self.c.create_model("client-bad", dict(mlp_spec(), extra=1))
        self.assertNotIn("client-bad", [m.name for m in self.c.list_models()])

    def test_bad_specs(self):
        """Each kind of bad spec: INVALID_ARGUMENT naming the node at fault."""
        base = mlp_spec()
        cycle = copy.deepcopy(base)
        cycle["nodes"][0]["inputs"] = ["fc2"]
        dup = copy.deepcopy(base)
        dup["nodes"][1]["name"] = "fc1"
        dup["outputs"][0]["source"] = "fc1"
        self_loop = one_node_spec(dense("loop", ["loop"], 4, 4))
        cases = [
            ("unknown op", one_node_spec({"name": "n1", "op": "no_such_op", "inputs": ["x"]}),
             ("n1", "no_such_op")),
            ("duplicate node", dup, ("fc1",)),
            ("unknown input", one_node_spec(dense("fcz", ["nope"], 4, 2)), ("fcz", "nope")),
            ("bad output index", one_node_spec(dense("fcz", ["x:3"], 4, 2)), ("fcz",)),
            ("cycle", cycle, ("fc",)),
            ("self loop", self_loop, ("loop",)),
            ("wrong attr type", one_node_spec(dense("fct", ["x"], "four", 2)),
             ("fct", "in_features")),
            ("float for int attr", one_node_spec(dense("fcf", ["x"], 4.5, 2)),
             ("fcf", "in_features")),
            ("attr out of range", one_node_spec(dense("fco", ["x"], 4, 0)),
             ("fco", "out_features")),
            ("negative attr", one_node_spec(dense("fcn", ["x"], -4, 2)),
             ("fcn", "in_features")),
            ("missing attr", one_node_spec({"name": "fcm", "op": "dense", "inputs": ["x"],
                                            "attrs": {"in_features": 4}}),
             ("fcm", "out_features")),
            ("unknown attr", one_node_spec(dense("fcu", ["x"], 4, 2, colour="red")),
             ("fcu", "colour")),
            ("bad choice", one_node_spec(dense("fcc", ["x"], 4, 2, activation="sparkle")),
             ("fcc", "activation")),
            ("wrong input count", one_node_spec({"name": "ad", "op": "add", "inputs": ["x"]}),
             ("ad",)),
            ("shape mismatch", one_node_spec(dense("fcs", ["x"], 5, 2)), ("fcs",)),
            ("huge dense", one_node_spec(dense("huge", ["x"], 4, 1 << 40)), ("huge",)),
            ("overflowing dense", one_node_spec(dense("ovf", ["x"], 4, 1 << 62)), ("ovf",)),
            ("unknown output source", dict(base, outputs=[{"name": "y", "source": "ghost"}]),
             ("ghost",)),
            ("no outputs", dict(base, outputs=[]), ()),
            ("empty node name", one_node_spec(dense("", ["x"], 4, 2)), ()),
            ("node named like an input", one_node_spec(dense("x", ["x"], 4, 2)), ("x",)),
            ("duplicate input", dict(base, inputs=base["inputs"] * 2), ("x",)),
            ("input shape -2", dict(base, inputs=[{"name": "x", "shape": [-2, 4]}]), ("x",)),
            ("input without shape", dict(base, inputs=[{"name": "x", "shape": []}]), ()),
            ("duplicate output", dict(base, outputs=[{"name": "y", "source": "fc2"},
                                                     {"name": "y", "source": "fc1"}]), ("y",)),
            ("too many nodes", {"inputs": base["inputs"],
                                "nodes": [{"name": "r%d" % i, "op": "relu",
                                           "inputs": ["r%d" % (i - 1) if i else "x"]}
                                          for i in range(10001)],
                                "outputs": [{"name": "y", "source": "r10000"}]}, ()),
        ]
        for what, spec, names in cases:
            with self.subTest(what):
                self.assertCode(C.INVALID_ARGUMENT, self.c.create_model, "bad-spec", spec,
                                contains=names)
        self.assertNotIn("bad-spec", [m.name for m in self.c.list_models()])
        self.assertTrue(self.c.server_live())


if __name__ == "__main__":
    fxtest.main()
