"""A model deleted and created again under the same name, with another spec,
while other clients read or import its versions (the integ_test_stress
failure "model 'm1' version N: tensor 'fc1.weight': shape [8,4], expected
[6,4]").

A model's versions are numbered from 1 again when it is created again, so
(name, version) names other weights, of another spec, afterwards. A call
that read the model's record (its spec, which version is production) and
then read a version's weights by name and number could mix the old model's
spec with the new model's weights: ExportOnnx answered INVALID_ARGUMENT with
the message above, a load INTERNAL; ImportWeights, which checks the weights
against the model's spec revision and then stores them, could store weights
checked against the old model into the new one (a version that no spec
fits). Now such a call refuses with ABORTED (a concurrent change: send it
again) or NOT_FOUND, and every stored version fits its own spec.

Bounded by rounds, not time; FX_RECREATE_ROUNDS (default 600) to look
harder."""
import os
import threading

import fxtest
from fxtest import C, np

ROUNDS = int(os.environ.get("FX_RECREATE_ROUNDS", "600"))
# what each reader does; imports first: a stored version that no spec fits
# (ImportWeights' check and store straddling the churn) is the worst of it
READERS = ("import", "export_onnx", "import", "load", "import", "export_onnx", "import", "load")
CALL_TIMEOUT = 60.0
NAME = "m"

# gone (NOT_FOUND), created again meanwhile (ALREADY_EXISTS), changed under
# the call (ABORTED), unloaded under it (UNAVAILABLE), used by another call
# (FAILED_PRECONDITION)
RACY = {C.NOT_FOUND, C.ALREADY_EXISTS, C.ABORTED, C.UNAVAILABLE, C.FAILED_PRECONDITION}


def spec(hidden):
    return fxtest.mlp_spec(n_in=4, hidden=hidden, n_out=3)


class RecreateRaceTest(fxtest.DaemonTest):
    DAEMON_ARGS = ("--train-workers", "1")

    def test_recreate_under_readers_and_imports(self):
        c = self.c
        c.create_model(NAME, spec(8), seed=1)
        x = np.ones((2, 4), np.float32)
        done = threading.Event()
        lock = threading.Lock()
        unexpected, counts = [], {}

        def note(op, code):
            with lock:
                counts[(op, code)] = counts.get((op, code), 0) + 1

        def call(op, fn, *args, **kw):
            try:
                fn(*args, **kw)
                note(op, "OK")
            except fxtest.FluxionError as e:
                note(op, e.code.name)
                # weights exported before the model was created again with
                # another spec do not fit it: a refusal naming the tensor
                if e.code in RACY or (op == "import" and e.code == C.INVALID_ARGUMENT
                                      and "shape" in e.message):
                    return
                with lock:
                    unexpected.append("%s: %s %s" % (op, e.code.name, e.message))

        def churn(first):
            cc = self.d.client(timeout=CALL_TIMEOUT)
            for i in range(first, ROUNDS, 2):
                call("delete", cc.delete_model, NAME)
                # two versions with a spec revision each, the hidden size
                # flipping: a reader's stale (name, version) names the
                # other shape
                call("create", cc.create_model, NAME, spec(6 if i % 2 else 8),
                     seed=1 + i % 3, no_load=i % 3 == 0)
                if i % 4 == 1:
                    call("update", cc.update_model_spec, NAME, spec(8 if i % 2 else 6))

        def reader(what):
            cc = self.d.client(timeout=CALL_TIMEOUT)
            while not done.is_set():
                if what == "export_onnx":
                    call("export_onnx", cc.export_onnx, NAME)
                elif what == "load":
                    call("load", cc.load_model, NAME)
                    call("infer", cc.infer, NAME, {"x": x})
                else:
                    try:
                        _, data = cc.export_weights(NAME)
                    except fxtest.FluxionError as e:
                        note("export", e.code.name)
                        if e.code not in RACY:
                            with lock:
                                unexpected.append("export: %s %s" % (e.code.name, e.message))
                        continue
                    call("import", cc.import_weights, NAME, data, source="race")

        # two churners: the model is gone and back again more often
        churners = [threading.Thread(target=churn, args=(k,), daemon=True) for k in range(2)]
        readers = [threading.Thread(target=reader, args=(what,), daemon=True)
                   for what in READERS]
        for t in churners + readers:
            t.start()
        for t in churners:
            t.join(ROUNDS * 4 * CALL_TIMEOUT)
        done.set()
        for t in readers:
            t.join(2 * CALL_TIMEOUT)
        threads = churners + readers
        print("\n" + "\n".join("  %-12s %-20s %d" % (op, code, n)
                               for (op, code), n in sorted(counts.items())))
        self.assertTrue(self.d.alive(), self.d.log_tail())
        self.assertFalse(any(t.is_alive() for t in threads), "a client thread hung")
        self.assertEqual(sorted(set(unexpected))[:20], [], "%d unexpected answers"
                         % len(unexpected))
        # every stored version fits its own spec revision: its ONNX export
        # builds that graph and loads the weights into it
        try:
            m = c.get_model(NAME)
        except fxtest.FluxionError as e:
            self.assertEqual(e.code, C.NOT_FOUND, e.message)
            c.create_model(NAME, spec(6), seed=1)
            m = c.get_model(NAME)
        for v in m.versions:
            self.assertTrue(c.export_onnx(NAME, v.version), v)
        c.load_model(NAME)
        self.assertEqual(len(c.infer(NAME, {"x": x})["y"]), 2)


if __name__ == "__main__":
    fxtest.main()
