"""The life of a version (docs/versions.md) on a real fluxiond: the alias
"production" is the version served (set at create, moved by ImportWeights
unless no_promote); promote and rollback swap what is served, rollback in
one call, twice goes back twice; aliases and pins, refused names; retention
keeps the last N plus aliased and pinned versions and removes the others'
files; DeleteVersion refused while served, aliased or pinned; ModelInfer by
alias over gRPC (model_version a string); a restart keeps it all; and many
promotes, rollbacks, deletes and inferences of one model at once (the suite
runs this under ASan too) leave the served version equal to production."""
import os
import threading
import unittest

import fxtest
from fxtest import C, DaemonTest, mlp_forward, mlp_spec, model_pb2, np, randn
from fluxion_client import FluxionError


def weights(seed):
    return {"fc1.weight": randn(seed, 8, 4), "fc1.bias": randn(seed + 1, 8),
            "fc2.weight": randn(seed + 2, 3, 8), "fc2.bias": randn(seed + 3, 3)}


X = randn(7, 5, 4)


class VersionsTest(DaemonTest):

    def make(self, name, n):
        """A model with n versions, version v holding weights(100 * v)."""
        self.c.create_model(name, mlp_spec(), weights=weights(100))
        for v in range(2, n + 1):
            self.c.import_weights(name, weights(100 * v))

    def served(self, name, version=""):
        return self.c.infer(name, {"x": X}, version=version)["y"]

    def assertServes(self, name, v, version=""):
        np.testing.assert_allclose(self.served(name, version), mlp_forward(weights(100 * v), X),
                                   rtol=1e-5, atol=1e-5)

    def test_production_promote_rollback(self):
        self.make("pr", 3)
        m = self.c.get_model("pr")
        self.assertEqual(m.production_version, 3)   # ImportWeights moved it
        self.assertServes("pr", 3)
        v4 = self.c.import_weights("pr", weights(400), no_promote=True)
        self.assertEqual(v4.version, 4)
        m = self.c.get_model("pr")
        self.assertEqual(m.production_version, 3)   # no_promote: stored, not served
        self.assertServes("pr", 3)
        self.assertServes("pr", 4, "4")             # by number all the same
        m = self.c.promote("pr", 1, reason="v3 is bad")
        self.assertEqual(m.production_version, 1)
        self.assertEqual(m.history[0].alias, "production")
        self.assertEqual((m.history[0].from_version, m.history[0].to_version), (3, 1))
        self.assertEqual(m.history[0].reason, "v3 is bad")
        self.assertServes("pr", 1)
        self.assertServes("pr", 1, "production")
        m = self.c.rollback("pr")                   # one command
        self.assertEqual(m.production_version, 3)
        self.assertServes("pr", 3)
        self.assertTrue(m.history[1].rolled_back)
        m = self.c.rollback("pr")                   # and once more: before v3 came
        self.assertEqual(m.production_version, 2)
        self.assertServes("pr", 2)
        m = self.c.rollback("pr")
        self.assertEqual(m.production_version, 1)
        self.assertCode(C.FAILED_PRECONDITION, self.c.rollback, "pr",
                        contains="no earlier version")
        self.assertCode(C.NOT_FOUND, self.c.promote, "pr", 9, contains="no version 9")
        self.assertCode(C.NOT_FOUND, self.c.promote, "nosuch", 1)

    def test_aliases_and_infer_by_alias(self):
        self.make("al", 3)
        m = self.c.set_alias("al", "canary", 2)
        self.assertEqual({a.name: a.version for a in m.aliases}, {"production": 3, "canary": 2})
        self.assertEqual(list(m.versions[1].aliases), ["canary"])
        self.assertServes("al", 2, "canary")
        self.assertServes("al", 3, "")
        self.assertCode(C.NOT_FOUND, self.served, "al", "nosuch", contains="no alias 'nosuch'")
        self.assertCode(C.INVALID_ARGUMENT, self.served, "al", "Bad Alias",
                        contains="not a valid alias")
        for bad in ("", "Upper", "1abc", "a" * 33, "a b"):
            self.assertCode(C.INVALID_ARGUMENT, self.c.set_alias, "al", bad, 1,
                            contains="alias")
        self.assertCode(C.FAILED_PRECONDITION, self.c.delete_alias, "al", "production",
                        contains="promote another version")
        self.assertCode(C.FAILED_PRECONDITION, self.c.delete_version, "al", 2,
                        contains="aliased as 'canary'")
        m = self.c.set_alias("al", "canary", 1)     # moves; the alias follows
        self.assertServes("al", 1, "canary")
        m = self.c.delete_alias("al", "canary")
        self.assertEqual([a.name for a in m.aliases], ["production"])
        self.assertCode(C.NOT_FOUND, self.c.delete_alias, "al", "canary")
        self.assertCode(C.NOT_FOUND, self.served, "al", "canary")
        self.assertTrue(self.c.model_ready("al", "production"))

    def test_delete_version_and_pins(self):
        self.make("dv", 3)
        self.assertCode(C.FAILED_PRECONDITION, self.c.delete_version, "dv", 3,
                        contains=("served", "production"))
        self.c.pin("dv", 1)
        self.assertCode(C.FAILED_PRECONDITION, self.c.delete_version, "dv", 1,
                        contains="pinned")
        self.assertServes("dv", 2, "2")             # cached by number
        m = self.c.delete_version("dv", 2)
        self.assertEqual([v.version for v in m.versions], [1, 3])
        self.assertTrue(m.versions[0].pinned)
        self.assertCode(C.NOT_FOUND, self.served, "dv", "2")
        self.assertCode(C.NOT_FOUND, self.c.delete_version, "dv", 2, contains="no version 2")
        path = os.path.join(self.d.data_dir, "models", "default", "dv")
        self.assertEqual(sorted(os.listdir(path)), ["v1.safetensors", "v3.safetensors"])
        v = self.c.import_weights("dv", weights(400))
        self.assertEqual(v.version, 4)              # a deleted number is never reused
        m = self.c.unpin("dv", 1)
        self.assertFalse(m.versions[0].pinned)
        self.c.delete_version("dv", 1)
        self.assertCode(C.INVALID_ARGUMENT, self.c.delete_version, "dv", 0)

    def test_bad_requests(self):
        self.make("br", 1)
        req = model_pb2.UpdateVersionsRequest(name="br")    # no action
        err = self.assertRpcCode(C.INVALID_ARGUMENT, self.c.models.UpdateVersions, req,
                                 timeout=10)
        self.assertIn("no action", err.details())
        self.assertCode(C.INVALID_ARGUMENT, self.c.pin, "br", 0, contains="not a version number")
        self.assertCode(C.INVALID_ARGUMENT, self.c.promote, "br", -1)
        self.assertCode(C.INVALID_ARGUMENT, self.c.promote, "br", 1, reason="r" * 300,
                        contains="reason")
        self.assertCode(C.NOT_FOUND, self.c.pin, "nosuch", 1)
        self.assertCode(C.INVALID_ARGUMENT, self.c.delete_alias, "br", "")

    def test_retention(self):
        self.make("rt", 5)
        self.c.set_alias("rt", "keep", 1)
        self.c.pin("rt", 2)
        self.assertServes("rt", 3, "3")             # kept by number for requests
        m = self.c.set_retention("rt", 2)
        self.assertEqual(m.keep_last, 2)
        # the last 2 (4, 5), the aliased 1, the pinned 2; 3 goes
        self.assertEqual([v.version for v in m.versions], [1, 2, 4, 5])
        self.assertCode(C.NOT_FOUND, self.served, "rt", "3")   # gone from serving too
        self.assertServes("rt", 4, "4")
        self.c.import_weights("rt", weights(600))
        self.c.import_weights("rt", weights(700), no_promote=True)
        self.assertCode(C.NOT_FOUND, self.served, "rt", "4")   # retention, as 7 was added
        m = self.c.get_model("rt")
        # production stays 6 (7 was not promoted): it is kept as an alias
        self.assertEqual(m.production_version, 6)
        self.assertEqual([v.version for v in m.versions], [1, 2, 6, 7])
        path = os.path.join(self.d.data_dir, "models", "default", "rt")
        self.assertEqual(sorted(os.listdir(path)),
                         ["v%d.safetensors" % v for v in (1, 2, 6, 7)])
        self.assertServes("rt", 6)
        m = self.c.set_retention("rt", 0)           # keep everything from now on
        self.assertEqual(m.keep_last, 0)
        self.assertCode(C.INVALID_ARGUMENT, self.c.set_retention, "rt", 10 ** 7)

    def test_restart_keeps_it(self):
        self.make("rs", 3)
        self.c.promote("rs", 2)
        self.c.set_alias("rs", "beta", 1)
        self.c.pin("rs", 3)
        self.d.restart()
        c = self.d.client()
        m = c.get_model("rs")
        self.assertEqual(m.production_version, 2)
        self.assertEqual({a.name: a.version for a in m.aliases}, {"production": 2, "beta": 1})
        self.assertTrue(m.versions[2].pinned)
        np.testing.assert_allclose(c.infer("rs", {"x": X})["y"], mlp_forward(weights(200), X),
                                   rtol=1e-5, atol=1e-5)
        type(self).c = c

    def test_concurrent(self):
        """Promotes, rollbacks, alias moves, deletes and inferences by
        version of one model from several threads: every call answers (OK
        or a clean refusal), and at the end the served version is
        production's."""
        self.make("cc", 6)
        errors = []
        allowed = {C.FAILED_PRECONDITION, C.NOT_FOUND}

        def run(fn):
            try:
                for i in range(25):
                    fn(i)
            except FluxionError as e:
                if e.code not in allowed:
                    errors.append(e)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        def strict(fn):
            try:
                for i in range(50):
                    fn(i)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        def guard(fn, *a, **kw):
            try:
                fn(*a, **kw)
            except FluxionError as e:
                if e.code not in allowed:
                    raise

        c2 = self.d.client()
        threads = [
            threading.Thread(target=run, args=(lambda i: guard(self.c.promote, "cc", 1 + i % 3),)),
            threading.Thread(target=run, args=(lambda i: guard(c2.promote, "cc", 2 + i % 3),)),
            threading.Thread(target=run, args=(lambda i: guard(c2.rollback, "cc"),)),
            threading.Thread(target=run, args=(lambda i: guard(self.c.set_alias, "cc", "a",
                                                                1 + i % 4),)),
            threading.Thread(target=run, args=(lambda i: guard(self.c.infer, "cc", {"x": X},
                                                                version="6"),)),
            threading.Thread(target=run, args=(lambda i: guard(c2.infer, "cc", {"x": X},
                                                                version="5"),)),
            # the served version, swapped under it: no request may fail
            threading.Thread(target=strict, args=(lambda i: c2.infer("cc", {"x": X}),)),
        ]
        for t in threads:
            t.start()
        # deleting 5 and 6 while they are asked for by number
        for v in (6, 5):
            for _ in range(200):
                try:
                    self.c.delete_version("cc", v)
                    break
                except FluxionError as e:
                    self.assertEqual(e.code, C.FAILED_PRECONDITION, e.message)
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        m = self.c.get_model("cc")
        self.assertServes("cc", m.production_version)
        # whatever the race left: once nothing points to them, they go
        self.c.promote("cc", 1)
        self.c.delete_alias("cc", "a")
        for v in (5, 6):
            if v in [x.version for x in self.c.get_model("cc").versions]:
                self.c.delete_version("cc", v)
        self.assertEqual([v.version for v in self.c.get_model("cc").versions], [1, 2, 3, 4])
        self.assertServes("cc", 1)

    def test_delete_racing_infer(self):
        """A version deleted while requests ask for it by number, many
        times: each request answers with that version's outputs or
        NOT_FOUND, never anything else, and the version is gone after."""
        self.make("dr", 1)
        c2 = self.d.client()
        want = mlp_forward(weights(900), X)
        for _ in range(20):
            v = self.c.import_weights("dr", weights(900), no_promote=True).version
            stop = threading.Event()
            seen = []

            def ask():
                while not stop.is_set():
                    try:
                        np.testing.assert_allclose(c2.infer("dr", {"x": X}, version=str(v))["y"],
                                                   want, rtol=1e-5, atol=1e-5)
                        seen.append("ok")
                    except FluxionError as e:
                        seen.append(e.code)
                        if e.code == C.NOT_FOUND:
                            return
            t = threading.Thread(target=ask)
            t.start()
            self.c.delete_version("dr", v)
            stop.set()
            t.join()
            self.assertTrue(set(seen) <= {"ok", C.NOT_FOUND}, seen)
            self.assertCode(C.NOT_FOUND, self.served, "dr", str(v))
        self.assertEqual([x.version for x in self.c.get_model("dr").versions], [1])
        self.assertServes("dr", 1)


if __name__ == "__main__":
    fxtest.main()
