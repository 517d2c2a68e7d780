"""Batching that decides from evidence, in a real daemon: a lone closed-loop
client (each request sent once the last is answered) is never held for a
partner, even with a long max_queue_delay_us; several closed-loop clients
at once are still batched, with the results each request gets alone.

The checks read the server's statistics (queue time, batch counts), not the
wall clock: the machine may be loaded."""
import threading

import fxtest
from fxtest import DaemonTest, mlp_spec, np, randn

DELAY_US = 1000000  # 1 s: one wait for it would stand out in the queue time


def stats(c, name):
    (s,) = c.model_statistics(name)
    return s


class BatchingEvidenceTest(DaemonTest):

    def test_lone_client_is_never_held(self):
        c = self.c
        c.create_model("lone", mlp_spec(), seed=3)
        c.set_serving_config("lone", max_batch_size=16, max_queue_delay_us=DELAY_US)
        n = 30
        xs = [randn(i, 1, 4) for i in range(n)]
        got = [c.infer("lone", {"x": x})["y"] for x in xs]
        s = stats(c, "lone")
        self.assertEqual(s.inference_stats.success.count, n)
        self.assertEqual(s.execution_count, n)  # each alone: nobody to join
        # the queue time of all of them together is under one delay: no
        # request waited for a partner (each would have waited the delay)
        self.assertLess(s.inference_stats.queue.ns, DELAY_US * 1000,
                        "a lone client's requests waited %.3f s in all"
                        % (s.inference_stats.queue.ns / 1e9))
        w = c.export_arrays("lone")
        for x, y in zip(xs, got):
            np.testing.assert_allclose(y, fxtest.mlp_forward(w, x), rtol=1e-5, atol=1e-5)

    def test_concurrent_clients_are_batched_with_unbatched_results(self):
        c = self.c
        # compute enough (~0.5 MFLOP a sample) for requests to meet in the server
        c.create_model("many", mlp_spec(n_in=256, hidden=1024, n_out=4), seed=4)
        c.set_serving_config("many", max_batch_size=16, max_queue_delay_us=DELAY_US)
        clients, each = 4, 15
        xs = [[randn(100 * k + j, 1 + j % 2, 256) for j in range(each)] for k in range(clients)]
        got = [[None] * each for _ in range(clients)]
        errors = []
        start = threading.Barrier(clients)

        def client(k):
            cl = self.d.client()
            start.wait()
            try:
                for j in range(each):
                    got[k][j] = cl.infer("many", {"x": xs[k][j]})["y"]
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        s = stats(c, "many")
        self.assertEqual(s.inference_stats.success.count, clients * each)
        self.assertEqual(s.inference_count, sum(len(x) for row in xs for x in row))
        # batched: fewer batches than requests, and some batch of two or more
        self.assertLess(s.execution_count, clients * each)
        self.assertTrue(any(b.batch_size > 2 for b in s.batch_stats),
                        [b.batch_size for b in s.batch_stats])
        c.set_serving_config("many", enabled=False)
        for k in range(clients):
            for j in range(each):
                alone = c.infer("many", {"x": xs[k][j]})["y"]
                np.testing.assert_allclose(got[k][j], alone, rtol=0, atol=1e-6)


if __name__ == "__main__":
    fxtest.main()
