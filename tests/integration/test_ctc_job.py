"""CTC and model-computed losses in jobs over RPC (issue 16): a job of
kind "ctc" (log-probabilities [N, T, C] batch first, padded labels, target
lengths from dataset tensors) trains a tiny sequence model and its loss
falls; the same model computing its own ctc_loss node trains with that
output named as the loss (kind "output") to the same losses; a ctc loss
without target_lengths is refused naming the field."""
import time

import fxtest
from fxtest import C, DaemonTest, np
from fluxion_client.jobs import FINAL_STATES, training_pb2

T, F, S = 6, 4, 2


def data(n, seed):
    """Sequences of 1-2 labels in 1..3, each shown as a one-hot for 2 of
    the 6 steps (feature 0 elsewhere: the blank), with noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, T, F), np.float32)
    tg = np.zeros((n, S), np.int64)
    tl = rng.integers(1, 3, n).astype(np.int64)
    for i in range(n):
        shown = np.zeros(T, np.int64)
        for k in range(tl[i]):
            tg[i, k] = rng.integers(1, 4)
            shown[3 * k:3 * k + 2] = tg[i, k]
        x[i, np.arange(T), shown] = 1
    x += 0.1 * rng.standard_normal(x.shape).astype(np.float32)
    return {"x": x, "tg": tg, "tl": tl, "il": np.full(n, T, np.int64)}


def spec(in_graph):
    s = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, T, F]}],
         "nodes": [{"name": "fc1", "op": "dense", "inputs": ["x"],
                    "attrs": {"in_features": F, "out_features": 16, "activation": "tanh"}},
                   {"name": "fc2", "op": "dense", "inputs": ["fc1"],
                    "attrs": {"in_features": 16, "out_features": F}},
                   {"name": "lp", "op": "log_softmax", "inputs": ["fc2"],
                    "attrs": {"axis": -1}}],
         "outputs": [{"name": "lp", "source": "lp"}]}
    if in_graph:
        s["inputs"] += [{"name": "tg", "dtype": "INT64", "shape": [-1, S]},
                        {"name": "il", "dtype": "INT64", "shape": [-1]},
                        {"name": "tl", "dtype": "INT64", "shape": [-1]}]
        s["nodes"] += [{"name": "tnc", "op": "transpose", "inputs": ["lp"],
                        "attrs": {"dim0": 0, "dim1": 1}},
                       {"name": "ctc", "op": "ctc_loss", "inputs": ["tnc", "tg", "il", "tl"]}]
        s["outputs"].append({"name": "loss", "source": "ctc"})
    return s


class CtcJobTest(DaemonTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c.upload_dataset("seq", data(128, 21))
        cls.c.create_model("ctc", spec(False), seed=5, no_load=True)
        cls.c.create_model("ctc-graph", spec(True), seed=5, no_load=True)

    def job(self, model, epochs, **loss):
        feeds = [{"input": "x", "tensor": "x"}]
        if model == "ctc-graph":
            feeds += [{"input": n, "tensor": n} for n in ("tg", "il", "tl")]
        job = self.c.submit_job({"model": model, "model_version": 1, "dataset": "seq",
                                 "feeds": feeds, "losses": [loss], "epochs": epochs,
                                 "batch_size": 16, "shuffle": True, "validation_split": 0.25,
                                 "optimizer": {"kind": "adam", "lr": 0.01}, "seed": 7,
                                 "serve_when_done": False})
        deadline = time.monotonic() + 120
        while job.state not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(0.02)
            job = self.c.get_job(job.id)
        self.assertEqual(job.state, training_pb2.SUCCEEDED, job.error)
        return job.progress.train_loss, job.progress.val_loss

    def test_ctc_loss_falls(self):
        ctc = {"output": "lp", "kind": "ctc", "target": "tg", "target_lengths": "tl",
               "input_lengths": "il"}
        first, _ = self.job("ctc", 1, **ctc)
        last, val = self.job("ctc", 40, **ctc)
        self.assertLess(last, 0.3 * first)
        self.assertLess(val, 0.5 * first)
        # the model's own ctc_loss output as the loss: the same numbers
        g_first, _ = self.job("ctc-graph", 1, output="loss", kind="output")
        g_last, _ = self.job("ctc-graph", 40, output="loss", kind="output")
        self.assertAlmostEqual(g_first, first, delta=1e-4 * first)
        self.assertAlmostEqual(g_last, last, delta=1e-3 * first)

    def test_ctc_errors(self):
        base = {"model": "ctc", "dataset": "seq", "feeds": [{"input": "x", "tensor": "x"}],
                "epochs": 1}
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        dict(base, losses=[{"output": "lp", "kind": "ctc", "target": "tg"}]),
                        contains="losses[0].target_lengths: ctc needs")
        self.assertCode(C.INVALID_ARGUMENT, self.c.submit_job,
                        dict(base, losses=[{"output": "lp", "kind": "output"}]),
                        contains="kind 'output' takes a scalar")


if __name__ == "__main__":
    fxtest.main()
