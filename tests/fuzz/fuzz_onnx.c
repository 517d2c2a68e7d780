/*
 * fuzz_onnx.c - the ONNX importer (server/onnx/: fxon_import), which takes
 * a whole file from outside (ModelService/ImportOnnx). A file that imports
 * must give a spec that builds (fxg_build, small limits) with the weights
 * it produced, and that spec exports back to ONNX (fxon_export) and imports
 * again: what the importer accepts, the rest of the daemon can use.
 * Seeds: PyTorch exports of tests/py/onnx_export_models.py (MLP, two-head,
 * ops, embedding) and hand-made files of tests/fuzz/make_corpus.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "models/graph.h"
#include "onnx/export.h"
#include "onnx/onnx.h"

static void fail(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_onnx: %s: %s\n", what, err[0] ? err : "(no message)");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024] = "";
    Fluxion__V1__ModelSpec *spec = NULL;
    uint8_t *w = NULL, *out = NULL;
    size_t wlen = 0, olen = 0;
    int irc = fxon_import(data, size, &spec, &w, &wlen, err, sizeof err);
    if (getenv("FX_FUZZ_DEBUG")) /* to check that the seeds import */
        fprintf(stderr, "fuzz_onnx: %s\n", irc ? err : "imported");
    if (irc != 0) {
        if (!err[0]) /* every refusal says why */
            fail("import refused", err);
        return 0;
    }
    fxg_options o = {.seed = 1, .max_params = 1 << 20, .max_nodes = 512};
    fxg_graph *g = NULL;
    int rc = fxg_build(spec, &o, &g, err, sizeof err);
    if (rc == 0) {
        /* the importer's own weights fit the spec it made */
        if (fxg_load_weights(g, w, wlen, err, sizeof err) != 0)
            fail("imported weights do not load", err);
        fxg_free(g);
        if (fxon_export(spec, w, wlen, "fuzz", &out, &olen, err, sizeof err) == 0) {
            Fluxion__V1__ModelSpec *again = NULL;
            uint8_t *w2 = NULL;
            size_t w2len = 0;
            if (fxon_import(out, olen, &again, &w2, &w2len, err, sizeof err) != 0)
                fail("an export of an imported model does not import", err);
            protobuf_c_message_free_unpacked(&again->base, NULL);
            free(w2);
            free(out);
        } else if (!err[0]) {
            fail("export refused", err);
        }
    } else if (!err[0]) {
        fail("fxg_build refused", err);
    }
    protobuf_c_message_free_unpacked(&spec->base, NULL);
    free(w);
    return 0;
}
