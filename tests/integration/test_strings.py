"""String fields on the way in (issue 11, defects 4 and 5): a request whose
string fields hold invalid UTF-8, a NUL byte or more bytes than the limit
(docs/limits.md) is refused with INVALID_ARGUMENT naming the field, and
nothing is stored; ListModels, GetModel, ModelMetadata, ListDatasets and
ListJobs still parse with the standard Python protobuf runtime afterwards
and after a restart.

The Python client refuses to serialize invalid UTF-8, so the requests are
built with a marker in the field, serialized, and the marker's bytes
replaced by bad bytes of the same length (the length prefixes stay right);
they go out through grpc's generic calls with no serializer."""
import fxtest
from fxtest import C, Daemon, DaemonTest, mlp_spec, np
from fluxion_client import infer_request, model_spec
from fluxion_client.datasets import dataset_pb2, tensor_data
from fluxion_client.jobs import training_pb2

import grpc

MARK = "MARK_BAD"   # 8 ASCII bytes, replaced on the wire
# Each kind of invalid UTF-8, padded to the marker's length: the bad
# sequence starts at byte 2 of the replacement.
BAD = {
    "lone continuation byte": b"ab\x80cdefg",
    "overlong '/'": b"ab\xc0\xafcdef",
    "surrogate U+D800": b"ab\xed\xa0\x80cde",
    "above U+10FFFF": b"ab\xf4\x90\x80\x80cd",
    "truncated sequence": b"ab\xe2\x82",  # padded with "_BAD" by patch()
    "0xff": b"ab\xffcdefg",
}
MODEL_SVC = "/fluxion.v1.ModelService/"
DATASET_SVC = "/fluxion.v1.DatasetService/"
TRAINING_SVC = "/fluxion.v1.TrainingService/"
TIMEOUT = 30


def patch(data, bad, count=1):
    """data with each MARK replaced by bad (a shorter bad keeps the rest of
    MARK, so the length prefixes stay right)."""
    mark = MARK.encode()
    if len(bad) < len(mark):
        bad = bad + mark[len(bad):]
    assert len(bad) == len(mark)
    assert data.count(mark) == count, "marker found %d times, expected %d" % (
        data.count(mark), count)
    return data.replace(mark, bad)


def raw_unary(channel, path, data, resp_cls):
    """Calls path with data as the serialized request."""
    fn = channel.unary_unary(path, request_serializer=None,
                             response_deserializer=resp_cls.FromString)
    return fn(data, timeout=TIMEOUT)


def raw_stream(channel, path, chunks, resp_cls):
    """A client-streaming call whose messages are the serialized chunks."""
    fn = channel.stream_unary(path, request_serializer=None,
                              response_deserializer=resp_cls.FromString)
    return fn(iter(chunks), timeout=TIMEOUT)


def create_req(name="m-x", description="", spec=None):
    return fxtest.model_pb2.CreateModelRequest(name=name, description=description,
                                               spec=model_spec(spec or mlp_spec()), seed=1)


def spec_named(input_name="x", output_name="y"):
    s = mlp_spec()
    s["inputs"][0]["name"] = input_name
    s["nodes"][0]["inputs"] = [input_name]
    s["outputs"][0]["name"] = output_name
    return s


def arrays(n=32):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((n, 4)).astype(np.float32),
            "y": rng.integers(0, 3, n).astype(np.int64)}


def job_spec(description):
    return training_pb2.JobSpec(
        model="base", dataset="base-ds", description=description,
        feeds=[training_pb2.Feed(input="x", tensor="x")],
        losses=[training_pb2.LossSpec(output="y", kind="cross_entropy", target="y")],
        optimizer=training_pb2.OptimizerSpec(kind="sgd", lr=0.01), batch_size=8, epochs=1)


def bad_requests(weights):
    """(what, path, kind, messages, expected field, response class) for every
    string field the issue names; messages already patched. weights: valid
    safetensors for model "base", so that only the string is wrong."""
    M, D, T = fxtest.model_pb2, dataset_pb2, training_pb2
    bad = BAD["0xff"]
    out = []
    out.append(("CreateModel description", MODEL_SVC + "CreateModel", "unary",
                [patch(create_req("m-desc", "d" + MARK).SerializeToString(), bad)],
                "description: invalid UTF-8 at byte 3", M.Model))
    # the input name appears twice (the input and the node reading it)
    out.append(("CreateModel input name", MODEL_SVC + "CreateModel", "unary",
                [patch(create_req("m-in", spec=spec_named("i" + MARK)).SerializeToString(),
                       bad, count=2)],
                "spec.inputs[0].name: invalid UTF-8 at byte 3", M.Model))
    out.append(("CreateModel output name", MODEL_SVC + "CreateModel", "unary",
                [patch(create_req("m-out", spec=spec_named(output_name="o" + MARK))
                       .SerializeToString(), bad)],
                "spec.outputs[0].name: invalid UTF-8 at byte 3", M.Model))
    out.append(("ImportWeights source", MODEL_SVC + "ImportWeights", "stream",
                [patch(M.WeightsChunk(name="base", source="s" + MARK, data=weights)
                       .SerializeToString(), bad)],
                "source: invalid UTF-8 at byte 3", M.ModelVersion))
    ds_chunk = D.UploadDatasetChunk(name="ds-bad", description="ok")
    ds_chunk.tensors.append(tensor_data("x", arrays()["x"]))
    ds_chunk.tensors.append(tensor_data("t" + MARK, arrays()["y"]))
    out.append(("UploadDataset tensor name", DATASET_SVC + "UploadDataset", "stream",
                [patch(ds_chunk.SerializeToString(), bad)],
                "tensors[1].name: invalid UTF-8 at byte 3", D.Dataset))
    ds_chunk = D.UploadDatasetChunk(name="ds-bad2", description="d" + MARK)
    ds_chunk.tensors.extend(tensor_data(k, v) for k, v in arrays().items())
    out.append(("UploadDataset description", DATASET_SVC + "UploadDataset", "stream",
                [patch(ds_chunk.SerializeToString(), bad)],
                "description: invalid UTF-8 at byte 3", D.Dataset))
    out.append(("SubmitJob description", TRAINING_SVC + "SubmitJob", "unary",
                [patch(T.SubmitJobRequest(spec=job_spec("j" + MARK)).SerializeToString(), bad)],
                "spec.description: invalid UTF-8 at byte 3", T.Job))
    return out


def send(channel, path, kind, msgs, resp_cls):
    if kind == "unary":
        return raw_unary(channel, path, msgs[0], resp_cls)
    return raw_stream(channel, path, msgs, resp_cls)


class Base(DaemonTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c.create_model("base", mlp_spec(), description="the model jobs train", no_load=True)
        cls.c.upload_dataset("base-ds", arrays())
        _, cls.weights = cls.c.export_weights("base")

    def assertRefused(self, fn, *args, contains=()):
        err = self.assertRpcCode(C.INVALID_ARGUMENT, fn, *args)
        for s in (contains,) if isinstance(contains, str) else contains:
            self.assertIn(s, err.details())
        return err

    def assertListsParse(self, c):
        """Every listing the issue names parses (the client raises
        INTERNAL "Exception deserializing response" when one does not)."""
        models = c.list_models()
        for m in models:
            c.get_model(m.name)
            if m.loaded:
                c.model_metadata(m.name)
        datasets = c.list_datasets()
        jobs = c.list_jobs()
        return models, datasets, jobs


class StringsTest(Base):

    def test_each_field_names_itself_and_nothing_is_stored(self):
        before = [len(x) for x in self.assertListsParse(self.c)]
        for what, path, kind, msgs, field, resp in bad_requests(self.weights):
            with self.subTest(what):
                self.assertRefused(send, self.c.channel, path, kind, msgs, resp,
                                   contains=field)
        self.assertEqual([len(x) for x in self.assertListsParse(self.c)], before)
        self.assertEqual([v.version for v in self.c.get_model("base").versions], [1])

    def test_every_kind_of_invalid_utf8(self):
        for kind, bad in BAD.items():
            with self.subTest(kind):
                data = patch(create_req("m-kind", "d" + MARK).SerializeToString(), bad)
                self.assertRefused(raw_unary, self.c.channel, MODEL_SVC + "CreateModel", data,
                                   fxtest.model_pb2.Model,
                                   contains="description: invalid UTF-8 at byte 3")
        self.assertCode(C.NOT_FOUND, self.c.get_model, "m-kind")
        # valid multi-byte text of every length is fine
        m = self.c.create_model("m-text", mlp_spec(), description="é € 𝄞 \u07ff \U0010ffff",
                                no_load=True)
        self.assertEqual(m.description, "é € 𝄞 \u07ff \U0010ffff")
        self.c.delete_model("m-text")

    def test_nul_does_not_truncate_a_name(self):
        # protobuf-c gives C strings: "nul\0tail" used to create "nul"
        self.assertRefused(self.c.models.CreateModel, create_req("nul\0tail"),
                           contains="name: contains a NUL byte at byte 3")
        self.assertCode(C.NOT_FOUND, self.c.get_model, "nul")
        self.assertRefused(self.c.models.GetModel, fxtest.model_pb2.GetModelRequest(name="base\0x"),
                           contains="name: contains a NUL byte")
        chunk = dataset_pb2.UploadDatasetChunk(name="ds-nul")
        chunk.tensors.append(tensor_data("x\0y", arrays()["x"]))
        self.assertRefused(self.c.datasets.UploadDataset, iter([chunk]),
                           contains="tensors[0].name: contains a NUL byte at byte 1")
        self.assertEqual([d.name for d in self.c.list_datasets()], ["base-ds"])

    def test_size_limits(self):
        self.assertRefused(self.c.models.CreateModel, create_req("m-long", "d" * 5000),
                           contains="description: 5000 bytes, the limit is 4096")
        self.c.create_model("m-4096", mlp_spec(), description="d" * 4096, no_load=True)
        self.c.delete_model("m-4096")
        self.assertRefused(self.c.models.CreateModel, create_req("n" * 300),
                           contains="name: 300 bytes, the limit is 256")
        self.assertRefused(self.c.training.SubmitJob,
                           training_pb2.SubmitJobRequest(spec=job_spec("j" * 5000)),
                           contains="spec.description: 5000 bytes, the limit is 4096")
        chunks = [fxtest.model_pb2.WeightsChunk(name="base", source="s" * 273)]
        self.assertRefused(self.c.models.ImportWeights, iter(chunks),
                           contains="source: 273 bytes, the limit is 272")
        # any other string: 64 KiB (a node attribute here)
        spec = mlp_spec()
        spec["nodes"][0]["attrs"]["activation"] = "r" * (65 * 1024)
        self.assertRefused(self.c.models.CreateModel, create_req("m-attr", spec=spec),
                           contains="spec.nodes[0].attrs[")
        self.assertEqual(sorted(m.name for m in self.c.list_models()), ["base"])

    def test_inference_request_strings(self):
        self.c.create_model("m-inf", mlp_spec(), no_load=False)
        req = infer_request("m-inf", {"x" + MARK: np.zeros((1, 4), np.float32)})
        data = patch(req.SerializeToString(), BAD["0xff"])
        self.assertRefused(raw_unary, self.c.channel,
                           "/inference.GRPCInferenceService/ModelInfer", data,
                           fxtest.infer_pb2.ModelInferResponse,
                           contains="inputs[0].name: invalid UTF-8 at byte 3")
        self.c.delete_model("m-inf")


class RestartTest(Base):
    """Before the fix the bad strings were stored and every later listing,
    also after a restart, failed to parse."""

    def test_lists_parse_after_bad_requests_and_restart(self):
        for what, path, kind, msgs, field, resp in bad_requests(self.weights):
            try:
                send(self.c.channel, path, kind, msgs, resp)
            except grpc.RpcError:
                pass
        self.assertListsParse(self.c)
        self.d.restart()
        self.c = self.d.client()
        models, datasets, jobs = self.assertListsParse(self.c)
        self.assertEqual([m.name for m in models], ["base"])
        self.assertEqual([d.name for d in datasets], ["base-ds"])
        self.assertEqual(jobs, [])


if __name__ == "__main__":
    fxtest.main()
