"""Per-team storage quotas over the network: models, weight bytes and
dataset bytes, per team (a team's own limits, else the daemon's
--team-max-* defaults). RESOURCE_EXHAUSTED names the team and the sizes;
another team is not affected; GetTeam shows the usage."""
import numpy as np

import fxtest
from fxtest import C, DaemonTest, mlp_spec, start_with_admin_token


def arrays(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 4)).astype(np.float32),
            "y": rng.integers(0, 3, n).astype(np.int64)}


class QuotaTest(DaemonTest):
    @classmethod
    def setUpClass(cls):
        # daemon defaults: 3 models per team, no byte limits
        cls.d, cls.admin_secret = start_with_admin_token(
            name="quotas", args=["--team-max-models", "3"])
        cls.admin = cls.d.client(token=cls.admin_secret)
        cls.admin.create_team("q", max_models=1, max_dataset_bytes=2000)
        cls.admin.create_team("r")
        cls.q = cls.d.client(token=cls.admin.create_token("qm", "member", team="q").secret)
        cls.r = cls.d.client(token=cls.admin.create_token("rm", "member", team="r").secret)

    def test_models(self):
        self.q.create_model("m1", mlp_spec(), seed=1, no_load=True)
        self.assertCode(C.RESOURCE_EXHAUSTED, self.q.create_model, "m2", mlp_spec(),
                        no_load=True, contains=["team 'q'", "1"])
        # the daemon's default applies to r: 3
        for i in range(3):
            self.r.create_model("m%d" % i, mlp_spec(), seed=i, no_load=True)
        self.assertCode(C.RESOURCE_EXHAUSTED, self.r.create_model, "m3", mlp_spec(),
                        no_load=True, contains="team 'r'")
        # nothing half-made: the refused model does not exist
        self.assertCode(C.NOT_FOUND, self.q.get_model, "m2")
        self.assertEqual(self.q.get_team().usage.models, 1)
        self.assertEqual(self.r.get_team().usage.models, 3)

    def test_weight_bytes(self):
        self.admin.create_team("w", max_weight_bytes=1)  # updated below
        w = self.d.client(token=self.admin.create_token("wm", "member", team="w").secret)
        self.assertCode(C.RESOURCE_EXHAUSTED, w.create_model, "big", mlp_spec(),
                        no_load=True, contains=["team 'w'", "weights"])
        # room for exactly one version
        m = self.admin.create_model("probe", mlp_spec(), no_load=True)  # in default
        size = m.versions[0].weights_bytes
        self.admin.delete_model("probe")
        self.admin.update_team("w", max_weight_bytes=size)
        w.create_model("one", mlp_spec(), seed=1, no_load=True)
        _, weights = w.export_weights("one")
        self.assertCode(C.RESOURCE_EXHAUSTED, w.import_weights, "one", weights,
                        contains=["team 'w'", str(size)])
        team = w.get_team()
        self.assertEqual(team.usage.weight_bytes, size)
        self.assertEqual(team.effective_quota.max_weight_bytes, size)
        self.assertEqual(len(w.get_model("one").versions), 1)

    def test_dataset_bytes(self):
        self.q.upload_dataset("small", arrays(40))       # 40 * (16 + 8) = 960 bytes
        self.assertCode(C.RESOURCE_EXHAUSTED, self.q.upload_dataset, "more", arrays(60),
                        contains=["team 'q'", "2000"])
        # another team's datasets are not q's
        self.r.upload_dataset("more", arrays(60))
        self.assertEqual(self.q.get_team().usage.dataset_bytes, 960)
        self.q.delete_dataset("small")
        self.q.upload_dataset("more", arrays(60))




class DefaultsTest(DaemonTest):
    """The daemon's --team-* flags are the quota of teams that set none,
    scheduling included; a team's own value wins."""

    @classmethod
    def setUpClass(cls):
        cls.d, secret = start_with_admin_token(
            name="quota-defaults",
            args=["--team-max-models", "5", "--team-weight", "3", "--team-cpu-slots", "2",
                  "--team-gpu-memory-gb", "1.5"])
        cls.admin = cls.d.client(token=secret)

    def test_defaults_and_own(self):
        self.admin.create_team("dflt")
        q = self.admin.get_team("dflt").effective_quota
        self.assertEqual(q.max_models, 5)
        self.assertEqual(q.weight, 3)
        self.assertEqual(q.cpu_slots, 2)
        self.assertEqual(q.gpu_memory_bytes, 3 << 29)
        self.admin.create_team("own", max_models=1)
        self.admin.set_team_quota("own", weight=0.5, gpu_memory_bytes=1 << 30)
        q = self.admin.get_team("own").effective_quota
        self.assertEqual((q.max_models, q.weight, q.gpu_memory_bytes), (1, 0.5, 1 << 30))
        self.assertEqual(q.cpu_slots, 2)   # not set: still the default


if __name__ == "__main__":
    fxtest.main()
