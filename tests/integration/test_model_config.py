"""inference.GRPCInferenceService/ModelConfig: a served model as Triton's
ModelConfig message (model_config.proto). The inputs and outputs of an MLP,
a CNN and LSTM-style models match their specs (names, TYPE_ data types,
dims without the batch dimension when max_batch_size > 0, -1 for variable
dims); the serving settings (SetServingConfig, RepositoryModelLoad
parameters) show up as max_batch_size, dynamic_batching, instance_group and
parameters; versions loaded as version_policy; errors as the other
inference handlers give them (an unknown model and another team's are
NOT_FOUND in the same words). tritonclient's view of the same call is
tests/integration/triton_model_config.py."""
import unittest

import fxtest
from fxtest import C, DaemonTest, infer_pb2, mlp_spec, start_with_admin_token

try:
    from inference import model_config_pb2 as mc_pb2
except ImportError as e:  # stubs built before model_config.proto was added
    print("skipped: %s (rebuild the stubs: cmake --build build --target fluxion_py_stubs)" % e)
    raise SystemExit(fxtest.SKIP)

FP32, INT64 = mc_pb2.TYPE_FP32, mc_pb2.TYPE_INT64
KIND_CPU = mc_pb2.ModelInstanceGroup.KIND_CPU

CNN_SPEC = {
    "inputs": [{"name": "image", "dtype": "FP32", "shape": [-1, 3, 12, 12]}],
    "nodes": [
        {"name": "conv1", "op": "conv2d", "inputs": ["image"],
         "attrs": {"in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1}},
        {"name": "act1", "op": "relu", "inputs": ["conv1"]},
        {"name": "pool", "op": "maxpool2d", "inputs": ["act1"], "attrs": {"kernel_size": 2}},
        {"name": "flat", "op": "flatten", "inputs": ["pool"]},
        {"name": "fc", "op": "dense", "inputs": ["flat"],
         "attrs": {"in_features": 8 * 6 * 6, "out_features": 5}},
    ],
    "outputs": [{"name": "scores", "source": "fc"}, {"name": "features", "source": "pool"}],
}

# Variable-length sequences with per-sample lengths: every tensor has a free
# first dim, so it is batched (and may be padded).
SEQ_SPEC = {
    "inputs": [{"name": "seq", "dtype": "FP32", "shape": [-1, -1, 5]},
               {"name": "lengths", "dtype": "INT64", "shape": [-1]}],
    "nodes": [{"name": "lstm", "op": "lstm", "inputs": ["seq", "lengths"],
               "attrs": {"input_size": 5, "hidden_size": 6}},
              {"name": "head", "op": "dense", "inputs": ["lstm"],
               "attrs": {"in_features": 6, "out_features": 2}}],
    "outputs": [{"name": "out", "source": "lstm"}, {"name": "head", "source": "head"}],
}

# An LSTM that also returns its final state h_n [layers, N, hidden]: that
# output's first dim is not the batch, so the batcher runs each request
# alone, and the config says so (max_batch_size 0, whole shapes).
LSTM_STATE_SPEC = {
    "inputs": [{"name": "seq", "dtype": "FP32", "shape": [-1, 7, 5]}],
    "nodes": [{"name": "lstm", "op": "lstm", "inputs": ["seq"],
               "attrs": {"input_size": 5, "hidden_size": 6, "num_layers": 2}}],
    "outputs": [{"name": "out", "source": "lstm"}, {"name": "h_n", "source": "lstm:1"}],
}


def tensors(ts):
    """[(name, data_type, dims)] of a config's inputs or outputs."""
    return [(t.name, t.data_type, list(t.dims)) for t in ts]


class ModelConfigTest(DaemonTest):

    def config(self, name, version="", client=None):
        c = client or self.c
        return c.inference.ModelConfig(infer_pb2.ModelConfigRequest(name=name, version=version),
                                       timeout=30).config

    def assertBatchedLikeMetadata(self, cfg, name):
        """With max_batch_size > 0, each tensor's dims are ModelMetadata's
        shape without its first (batch) dim; the data types agree."""
        md = self.c.model_metadata(name)
        want = {("TYPE_" + t.datatype, tuple(t.shape[1:])) for t in list(md.inputs) + list(md.outputs)}
        got = {(mc_pb2.DataType.Name(t.data_type), tuple(t.dims))
               for t in list(cfg.input) + list(cfg.output)}
        self.assertEqual(got, want)

    def test_mlp(self):
        self.c.create_model("mlp", mlp_spec(4, 8, 3), seed=1)
        cfg = self.config("mlp")
        self.assertEqual((cfg.name, cfg.platform, cfg.backend), ("mlp", "fluxion", "fluxion"))
        self.assertEqual(cfg.max_batch_size, 32)  # the default setting
        self.assertEqual(tensors(cfg.input), [("x", FP32, [4])])
        self.assertEqual(tensors(cfg.output), [("y", FP32, [3])])
        self.assertBatchedLikeMetadata(cfg, "mlp")
        self.assertEqual(cfg.WhichOneof("scheduling_choice"), "dynamic_batching")
        db = cfg.dynamic_batching
        self.assertEqual((db.max_queue_delay_microseconds, list(db.preferred_batch_size),
                          db.priority_levels), (200, [], 0))
        self.assertEqual((db.default_queue_policy.max_queue_size,
                          db.default_queue_policy.default_timeout_microseconds,
                          db.default_queue_policy.allow_timeout_override), (1024, 0, True))
        (ig,) = cfg.instance_group
        self.assertEqual((ig.kind, ig.count, list(ig.gpus), ig.name), (KIND_CPU, 1, [], "mlp_0"))
        self.assertEqual(cfg.version_policy.WhichOneof("policy_choice"), "latest")
        self.assertEqual(cfg.version_policy.latest.num_versions, 1)
        self.assertEqual(cfg.parameters["batching_enabled"].string_value, "true")
        self.assertEqual(cfg.parameters["memory_limit_bytes"].string_value, "0")
        self.assertNotIn("device", cfg.parameters)  # not set: the server's first

    def test_cnn(self):
        self.c.create_model("cnn", CNN_SPEC, seed=2)
        cfg = self.config("cnn")
        self.assertEqual(tensors(cfg.input), [("image", FP32, [3, 12, 12])])
        self.assertEqual(tensors(cfg.output), [("scores", FP32, [5]),
                                                ("features", FP32, [8, 6, 6])])
        self.assertBatchedLikeMetadata(cfg, "cnn")

    def test_sequences_with_lengths(self):
        self.c.create_model("seq", SEQ_SPEC, seed=3)
        cfg = self.config("seq")
        self.assertGreater(cfg.max_batch_size, 0)
        # a variable dim stays -1; the per-sample lengths have no dims left
        self.assertEqual(tensors(cfg.input), [("seq", FP32, [-1, 5]), ("lengths", INT64, [])])
        self.assertEqual(tensors(cfg.output), [("out", FP32, [-1, 6]), ("head", FP32, [-1, 2])])
        self.assertBatchedLikeMetadata(cfg, "seq")
        self.c.set_serving_config("seq", pad_variable_dims=True)
        self.assertEqual(self.config("seq").parameters["pad_variable_dims"].string_value, "true")

    def test_state_output_means_no_batch_dimension(self):
        self.c.create_model("lstm", LSTM_STATE_SPEC, seed=4)
        cfg = self.config("lstm")
        self.assertEqual(cfg.max_batch_size, 0)
        self.assertIsNone(cfg.WhichOneof("scheduling_choice"))
        self.assertEqual(tensors(cfg.input), [("seq", FP32, [-1, 7, 5])])
        self.assertEqual(tensors(cfg.output), [("out", FP32, [-1, 7, 6]),
                                                ("h_n", FP32, [2, -1, 6])])
        md = self.c.model_metadata("lstm")
        self.assertEqual([list(t.shape) for t in md.outputs], [list(t.dims) for t in cfg.output])

    def test_settings_are_reflected(self):
        c = self.c
        c.create_model("tuned", mlp_spec(), seed=5)
        c.set_serving_config("tuned", max_batch_size=8, preferred_batch_sizes=[2, 4],
                             max_queue_delay_us=5000, instances=3, priority_levels=3,
                             default_priority=2, timeout_us=70000, max_queue_size=50,
                             memory_limit_bytes=1 << 30, device="cpu")
        cfg = self.config("tuned")
        self.assertEqual(cfg.max_batch_size, 8)
        db = cfg.dynamic_batching
        self.assertEqual((list(db.preferred_batch_size), db.max_queue_delay_microseconds,
                          db.priority_levels, db.default_priority_level), ([2, 4], 5000, 3, 2))
        self.assertEqual((db.default_queue_policy.max_queue_size,
                          db.default_queue_policy.default_timeout_microseconds), (50, 70000))
        self.assertEqual([(g.kind, g.count) for g in cfg.instance_group], [(KIND_CPU, 3)])
        self.assertEqual(cfg.parameters["memory_limit_bytes"].string_value, str(1 << 30))
        self.assertEqual(cfg.parameters["device"].string_value, "cpu")
        self.assertEqual(tensors(cfg.input), [("x", FP32, [4])])

        # RepositoryModelLoad parameters are the other way to set them
        c.load_model("tuned", {"max_batch_size": 4, "instances": 2})
        cfg = self.config("tuned")
        self.assertEqual((cfg.max_batch_size, cfg.instance_group[0].count), (4, 2))
        self.assertEqual(list(cfg.dynamic_batching.preferred_batch_size), [2, 4])

        # batching off: each request alone, whatever its first dim
        c.set_serving_config("tuned", enabled=False)
        cfg = self.config("tuned")
        self.assertEqual(cfg.max_batch_size, 0)
        self.assertIsNone(cfg.WhichOneof("scheduling_choice"))
        self.assertEqual(tensors(cfg.input), [("x", FP32, [-1, 4])])
        self.assertEqual(tensors(cfg.output), [("y", FP32, [-1, 3])])
        self.assertEqual(cfg.parameters["batching_enabled"].string_value, "false")

    def test_versions(self):
        c = self.c
        c.create_model("ver", mlp_spec(), seed=6)
        c.import_weights("ver", {k: v + 1 for k, v in c.export_arrays("ver").items()})
        self.assertEqual(self.config("ver").version_policy.latest.num_versions, 1)
        # asking for version 1 loads it beside 2: both are listed
        self.assertEqual(self.config("ver", "1").name, "ver")
        vp = self.config("ver").version_policy
        self.assertEqual(vp.WhichOneof("policy_choice"), "specific")
        self.assertEqual(list(vp.specific.versions), [1, 2])
        self.assertRpcCode(C.NOT_FOUND, self.config, "ver", "3")
        err = self.assertRpcCode(C.INVALID_ARGUMENT, self.config, "ver", "Two 2")
        self.assertIn("Two 2", err.details())
        # a name is an alias of the model (docs/versions.md)
        err = self.assertRpcCode(C.NOT_FOUND, self.config, "ver", "two")
        self.assertIn("no alias 'two'", err.details())

    def test_errors_as_model_metadata(self):
        """Each failure has ModelMetadata's code and message."""
        c = self.c
        c.create_model("idle", mlp_spec(), seed=7, no_load=True)
        for name, code in (("nosuch", C.NOT_FOUND), ("idle", C.FAILED_PRECONDITION),
                           ("", C.INVALID_ARGUMENT), ("bad name!", C.INVALID_ARGUMENT)):
            with self.subTest(name=name):
                got = self.assertRpcCode(code, self.config, name)
                want = self.assertRpcCode(code, c.inference.ModelMetadata,
                                          infer_pb2.ModelMetadataRequest(name=name), timeout=30)
                self.assertEqual(got.details(), want.details())
        self.assertIn("nosuch", self.assertRpcCode(C.NOT_FOUND, self.config, "nosuch").details())


class ModelConfigTeamsTest(unittest.TestCase):
    """Another team's model is NOT_FOUND, in the words of a missing one;
    each caller sees the model under the name it uses."""

    @classmethod
    def setUpClass(cls):
        cls.d, secret = start_with_admin_token(name="model-config-teams")
        cls.admin = cls.d.client(token=secret)
        for team in ("a", "b"):
            cls.admin.create_team(team)
        cls.a = cls.d.client(token=cls.admin.create_token("am", "member", team="a").secret)
        cls.b = cls.d.client(token=cls.admin.create_token("bm", "member", team="b").secret)
        cls.a.create_model("mlp", mlp_spec(), seed=1)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def config(self, client, name):
        return client.inference.ModelConfig(infer_pb2.ModelConfigRequest(name=name),
                                            timeout=30).config

    def error(self, client, name):
        with self.assertRaises(fxtest.grpc.RpcError) as cm:
            self.config(client, name)
        return cm.exception

    def test_names_as_the_caller_sees_them(self):
        self.assertEqual(self.config(self.a, "mlp").name, "mlp")
        self.assertEqual(self.config(self.a, "mlp").instance_group[0].name, "mlp_0")
        self.assertEqual(self.config(self.admin, "a/mlp").name, "a/mlp")

    def test_other_team_is_not_found_like_a_missing_model(self):
        hidden = self.error(self.b, "a/mlp")
        missing = self.error(self.b, "a/nosuch")
        self.assertEqual(hidden.code(), C.NOT_FOUND)
        self.assertEqual(missing.code(), C.NOT_FOUND)
        self.assertEqual(hidden.details().replace("a/mlp", "X"),
                         missing.details().replace("a/nosuch", "X"))
        # b's own namespace has no "mlp" either
        self.assertEqual(self.error(self.b, "mlp").code(), C.NOT_FOUND)


if __name__ == "__main__":
    fxtest.main()
