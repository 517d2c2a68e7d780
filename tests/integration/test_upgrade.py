"""Upgrade from before teams (issue 12): a data directory written by
fluxiond 0.2.0 (tests/fixtures/datadir-0.2.0.tar.gz, see its README) opens
with this build; every model, version, dataset, job and serving setting is
there, owned by team `default`, the files moved under default/, the weights
verify and the served models answer. A default-team caller sees the names
unprefixed ("mlp") and may also write them whole ("default/mlp"). Then a
token is made (authentication turns on for good) and after a restart
everything is still there, for that token only."""
import hashlib
import os
import tarfile
import tempfile
import unittest

import fxtest
from fxtest import C, bearer, mlp_forward, randn, stubs
from fluxion_client import safetensors
from fluxion_client.client import infer_outputs, infer_request

TIMEOUT = 60
FIXTURE = os.path.join(fxtest.SOURCE_DIR, "tests", "fixtures", "datadir-0.2.0.tar.gz")

# What 0.2.0 stored (read from the fixture's fluxion.db): model -> {version:
# weights sha256}, and the model that is served at which version.
VERSIONS = {
    "blobs-mlp": {1: "e0614b9dc4778a4d06ef145f1a31f509e5d71b6d0a2b6c0ebc59ba7fe198ad5b",
                  2: "29a9635364b73014d3deb5940727c03388ba0e0a9295c60fd4f4a16789d5fb5a"},
    "mlp": {1: "cbc03e81e3981c63bcd057f7d66082e32582f100bd6eb0f3009763d304f3088c"},
}
INPUTS = {"blobs-mlp": 2, "mlp": 4}     # features
OUTPUTS = {"blobs-mlp": 4, "mlp": 3}    # classes (output "logits")


def extract_fixture():
    """The fixture's data directory, extracted to a new temporary directory."""
    dest = tempfile.mkdtemp(prefix="upgrade-", dir=fxtest._WORK)
    with tarfile.open(FIXTURE) as tar:
        for m in tar.getmembers():   # the archive holds fixdata/... only
            if m.name.startswith("/") or ".." in m.name.split("/"):
                raise AssertionError("unexpected path in the fixture: %s" % m.name)
        tar.extractall(dest)
    return os.path.join(dest, "fixdata")


class UpgradeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(FIXTURE):
            raise unittest.SkipTest("no fixture %s" % FIXTURE)
        cls.data_dir = extract_fixture()
        cls.d = fxtest.Daemon(data_dir=cls.data_dir, name="Upgrade").start()
        cls.ch = None
        cls.connect()

    @classmethod
    def connect(cls):
        """A channel to the daemon's current port (a restart picks a new one)."""
        if cls.ch is not None:
            cls.ch.close()
        cls.ch = fxtest.channel(cls.d.address)
        cls.s = stubs(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.d.stop()

    def restart(self):
        self.d.restart()
        self.connect()

    def check_everything(self, md):
        """All of the fixture's objects, as a default-team admin (md: its
        metadata) sees them."""
        s = self.s
        mp, dp, tp = s.model_pb2, s.dataset_pb2, s.training_pb2

        models = {m.name: m for m in s.models.ListModels(mp.ListModelsRequest(), metadata=md,
                                                         timeout=TIMEOUT).models}
        self.assertEqual(sorted(models), sorted(VERSIONS), "names shown unprefixed")
        for name, versions in VERSIONS.items():
            m = models[name]
            self.assertEqual({v.version: v.weights_sha256 for v in m.versions}, versions, name)
            self.assertEqual(m.latest_version, max(versions), name)
            self.assertTrue(m.loaded, "%s was served by 0.2.0" % name)
            whole = s.models.GetModel(mp.GetModelRequest(name="default/" + name), metadata=md,
                                      timeout=TIMEOUT)
            self.assertEqual(whole.name, name, "default/%s is the same model" % name)
            self.assertEqual(whole.created_unix_ms, m.created_unix_ms)
            # The weights files moved and still verify.
            for v, sha in versions.items():
                data = b"".join(c.data for c in s.models.ExportWeights(
                    mp.ExportWeightsRequest(name=name, version=v), metadata=md, timeout=TIMEOUT))
                self.assertEqual(hashlib.sha256(data).hexdigest(), sha, "%s v%d" % (name, v))
        cfg = models["blobs-mlp"].serving_config
        self.assertEqual((cfg.max_batch_size, cfg.max_queue_delay_us), (8, 500))

        # Served: ready in the index, and the answers are the weights' (the
        # served version of blobs-mlp is v2, made by job 1).
        index = {m.name: m.state for m in s.inference.RepositoryIndex(
            s.infer_pb2.RepositoryIndexRequest(), metadata=md, timeout=TIMEOUT).models}
        self.assertEqual(index, {"blobs-mlp": "READY", "mlp": "READY"})
        for name in VERSIONS:
            data = b"".join(c.data for c in s.models.ExportWeights(
                mp.ExportWeightsRequest(name=name), metadata=md, timeout=TIMEOUT))
            x = randn(7, 5, INPUTS[name])
            out = infer_outputs(s.inference.ModelInfer(infer_request(name, {"x": x}),
                                                       metadata=md, timeout=TIMEOUT))
            self.assertEqual(out["logits"].shape, (5, OUTPUTS[name]))
            fxtest.np.testing.assert_allclose(out["logits"], mlp_forward(safetensors.load(data), x),
                                              rtol=1e-4, atol=1e-5)
            ready = s.inference.ModelReady(s.infer_pb2.ModelReadyRequest(name="default/" + name),
                                           metadata=md, timeout=TIMEOUT)
            self.assertTrue(ready.ready)

        datasets = {x.name: x for x in s.datasets.ListDatasets(dp.ListDatasetsRequest(),
                                                               metadata=md,
                                                               timeout=TIMEOUT).datasets}
        self.assertEqual(sorted(datasets), ["blobs"])
        self.assertEqual(datasets["blobs"].num_samples, 4000)
        whole = s.datasets.GetDataset(dp.GetDatasetRequest(name="default/blobs"), metadata=md,
                                      timeout=TIMEOUT)
        self.assertEqual((whole.name, whole.sha256), ("blobs", datasets["blobs"].sha256))

        jobs = list(s.training.ListJobs(tp.ListJobsRequest(), metadata=md, timeout=TIMEOUT).jobs)
        self.assertEqual([j.id for j in jobs], ["1"])
        job = s.training.GetJob(tp.GetJobRequest(id="1"), metadata=md, timeout=TIMEOUT)
        self.assertEqual((job.state, job.result_version, job.spec.model, job.spec.dataset),
                         (tp.SUCCEEDED, 2, "blobs-mlp", "blobs"))

        teams = {t.name: t for t in s.admin.ListTeams(s.admin_pb2.ListTeamsRequest(), metadata=md,
                                                      timeout=TIMEOUT).teams}
        self.assertEqual(sorted(teams), ["default"])
        self.assertEqual(teams["default"].usage.models, 2)
        self.assertEqual(teams["default"].usage.weight_bytes, 1224 + 1224 + 836)
        self.assertGreater(teams["default"].usage.dataset_bytes, 0,
                           "the old dataset counts towards the dataset quota")

    def check_files(self):
        """Under models/default/ and datasets/default/, nothing left at the
        old places."""
        d = self.data_dir
        for name, versions in VERSIONS.items():
            for v in versions:
                self.assertTrue(os.path.isfile(os.path.join(d, "models", "default", name,
                                                            "v%d.safetensors" % v)), (name, v))
            self.assertFalse(os.path.exists(os.path.join(d, "models", name)), name)
        self.assertTrue(os.path.isfile(os.path.join(d, "datasets", "default", "blobs",
                                                    "shard-0.safetensors")))
        self.assertFalse(os.path.exists(os.path.join(d, "datasets", "blobs")))

    def test_1_local_mode(self):
        r = self.s.admin.WhoAmI(self.s.admin_pb2.WhoAmIRequest(), timeout=TIMEOUT)
        self.assertEqual((r.team, r.role, r.principal, r.local_mode), ("default", "admin",
                                                                       "local", True))
        self.check_everything(())
        self.check_files()

    def test_2_reopen_is_idempotent(self):
        """A second start on the migrated directory changes nothing."""
        self.restart()
        self.check_everything(())
        self.check_files()

    def test_3_token_then_restart(self):
        """A token turns authentication on; after a restart it is on, and
        the token sees everything."""
        s = self.s
        made = s.admin.CreateToken(s.admin_pb2.CreateTokenRequest(name="ops", role="admin"),
                                   timeout=TIMEOUT)
        self.assertEqual((made.token.team, made.token.role), ("default", "admin"))
        self.assertRegex(made.secret, fxtest.TOKEN_RE)
        self.restart()
        s = self.s
        code = None
        try:
            s.models.ListModels(s.model_pb2.ListModelsRequest(), timeout=TIMEOUT)
        except fxtest.grpc.RpcError as e:
            code = e.code()
        self.assertEqual(code, C.UNAUTHENTICATED, "no token after auth turned on")
        md = bearer(made.secret)
        r = s.admin.WhoAmI(s.admin_pb2.WhoAmIRequest(), metadata=md, timeout=TIMEOUT)
        self.assertEqual((r.team, r.role, r.principal, r.local_mode),
                         ("default", "admin", "token:ops", False))
        self.check_everything(md)
        self.check_files()


if __name__ == "__main__":
    fxtest.main()
