"""kill -9 at random moments (issue 19), the CI form: a few kills of a daemon
busy with model creates, weight imports, deletes, dataset uploads, ONNX
imports and a training job checkpointing every 3 steps; after each restart
every acknowledged object is intact and nothing partial is visible, the job
resumes, and at the end each job's weights equal an uninterrupted run's bit
for bit. The loop is killloop.py; scripts/kill9.sh runs it with >= 100
kills (README, "kill -9"). Bounded: about a minute on 2 shared cores."""
import os
import unittest

import fxtest
import killloop

KILLS = int(os.environ.get("FX_KILL9_KILLS", "12"))


class Kill9Test(unittest.TestCase):

    def test_kill9_loop(self):
        stats = killloop.KillLoop(KILLS, seed=int(os.environ.get("FX_KILL9_SEED", "7")),
                                  steps=1500, max_delay=2.0).run()
        self.assertEqual(stats["kills"], KILLS)
        self.assertGreater(stats["acknowledged_ops"], 3 * KILLS,
                           "too few writes happened to test anything")
        self.assertGreaterEqual(stats["job_resumes"], 1, "the job never resumed after a kill")
        self.assertGreaterEqual(stats["jobs_compared"], 1)

    def test_loop_catches_a_lost_object(self):
        """The check is not vacuous: an acknowledged object the store does
        not have, or has with other bytes, fails it."""
        d = fxtest.Daemon(name="kill9-self").start()
        c = d.client()
        c.create_model("m", killloop.SPEC, seed=1)
        loop = killloop.KillLoop(1)
        loop.check_store(c, 1)
        loop.ledger.models["m"] = {1: "0" * 64}
        with self.assertRaisesRegex(AssertionError, "sha256"):
            loop.check_store(c, 1)
        loop.ledger.models = {"lost": {1: None}}
        with self.assertRaisesRegex(AssertionError, "acknowledged model lost lost"):
            loop.check_store(c, 1)
        loop.ledger.models = {}
        loop.ledger.deleted = {"m"}
        with self.assertRaisesRegex(AssertionError, "deleted"):
            loop.check_store(c, 1)
        d.stop()


if __name__ == "__main__":
    fxtest.main()
