"""The soak's CI form (issue 19): 25 s of inference over gRPC and HTTP with
create/import/promote/delete cycles beside it, through soak.py's checks (0
errors; RSS after the warm-up within +10%; threads, fds, data-dir files and
store rows back to where they were once the load stops). scripts/soak.sh
is the long form (README, "Soak")."""
import os
import sys
import unittest

import fxtest
import soak


class SoakTest(unittest.TestCase):

    def test_short_soak(self):
        if not os.access(soak.BENCH, os.X_OK):
            print("skipped: no fluxion-bench at %s" % soak.BENCH)
            sys.exit(fxtest.SKIP)
        s = soak.Soak(10 ** 9, 25, concurrency=2, http_threads=2, interval=2.5, warmup=12,
                      segment=5)
        summary, fails = s.run()
        self.assertEqual(fails, [])
        self.assertEqual(summary["errors"], 0)
        self.assertGreater(summary["grpc_calls"], 1000)
        self.assertGreater(summary["http_calls"], 1000)
        self.assertGreater(summary["cycles"], 5)

    def test_verdict_fails_on_growth(self):
        """The bounds bite: more threads, fds, rows or bytes after the load
        than before, RSS beyond +10% after the warm-up, or an error."""
        s = soak.Soak(1, 10, warmup=5, interval=1)
        s.cycles = 1
        row = (1, 0, 1000, 20, 20, 0, 0, 0, 0, "", 15)
        s.rows = [row, (6, 0, 1200) + row[3:]]
        _, fails = s.verdict((1000, 20, 20, 15), (1000, 21, 21, 16), 100, 100 + (256 << 10),
                             10, {"models": 1}, {"models": 2})
        text = "\n".join(fails)
        for want in ("RSS grew", "threads", "open fds", "data dir", "store rows"):
            self.assertIn(want, text)
        s.rows = [row, (6, 0, 1050) + row[3:]]
        s.errors = [("grpc", "UNAVAILABLE")]
        _, fails = s.verdict((1000, 20, 20, 15), (1000, 20, 20, 15), 100, 100, 10,
                             {"alias_history": 5}, {"alias_history": 900})
        self.assertEqual(len(fails), 1, fails)
        self.assertIn("1 errors", fails[0])


if __name__ == "__main__":
    fxtest.main()
