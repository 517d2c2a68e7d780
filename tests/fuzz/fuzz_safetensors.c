/*
 * fuzz_safetensors.c - the safetensors reader (engine/safetensors.c:
 * fx_safetensors_decode), which reads model weights (ImportWeights,
 * checkpoints, stored versions) and datasets' shards. A file that decodes
 * is encoded again and must decode to the same tensors (names, dtypes,
 * shapes). Every input is also offered to a small model as its weights
 * (fxg_load_weights, ImportWeights' path: names, shapes and dtypes checked
 * against the graph's); weights that load must save and load again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fluxion.h"
#include "models/graph.h"
#include "pbjson.h"

/* dense 4 -> 8 -> 3: fc1.weight [8,4], fc1.bias [8], fc2.weight [3,8], fc2.bias [3] */
static const char SPEC[] =
    "{\"inputs\": [{\"name\": \"x\", \"shape\": [-1, 4]}], \"nodes\": ["
    "{\"name\": \"fc1\", \"op\": \"dense\", \"inputs\": [\"x\"],"
    " \"attrs\": {\"in_features\": 4, \"out_features\": 8}},"
    "{\"name\": \"fc2\", \"op\": \"dense\", \"inputs\": [\"fc1\"],"
    " \"attrs\": {\"in_features\": 8, \"out_features\": 3}}],"
    " \"outputs\": [{\"name\": \"y\", \"source\": \"fc2\"}]}";

static fxg_graph *model(void)
{
    static fxg_graph *g;
    if (g)
        return g;
    char err[512];
    json_error_t jerr;
    json_t *j = json_loads(SPEC, 0, &jerr);
    ProtobufCMessage *m = j ? pbjson_decode(&fluxion__v1__model_spec__descriptor, j, err, sizeof err) : NULL;
    fxg_options o = {.seed = 1};
    if (!m || fxg_build((Fluxion__V1__ModelSpec *)m, &o, &g, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_safetensors: the model: %s\n", err);
        abort();
    }
    json_decref(j);
    protobuf_c_message_free_unpacked(m, NULL);
    return g;
}

static void load_weights(const uint8_t *data, size_t size)
{
    fxg_graph *g = model();
    char err[512] = "";
    int rc = fxg_load_weights(g, data, size, err, sizeof err);
    if (getenv("FX_FUZZ_DEBUG")) /* to check that the seeds reach the model */
        fprintf(stderr, "fuzz_safetensors: %s\n", rc ? err : "weights loaded");
    if (rc != 0) {
        if (!err[0])
            abort();
        return;
    }
    void *buf = NULL;
    size_t len = 0;
    if (fxg_save_weights(g, &buf, &len, err, sizeof err) != 0 ||
        fxg_load_weights(g, buf, len, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_safetensors: saved weights do not load again: %s\n", err);
        abort();
    }
    free(buf);
}

static void same(const fx_params *a, const fx_params *b)
{
    if (a->count != b->count)
        abort();
    for (int i = 0; i < a->count; i++) {
        const fx_tensor *x = a->items[i].tensor;
        const fx_tensor *y = fx_params_find(b, a->items[i].name);
        if (!y || x->dtype != y->dtype || x->ndim != y->ndim)
            abort();
        for (int k = 0; k < x->ndim; k++)
            if (x->shape[k] != y->shape[k])
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_weights(data, size);
    fx_params p;
    fx_params_init(&p);
    char err[512] = "";
    if (fx_safetensors_decode(data, size, &p, err, sizeof err) != FX_OK) {
        if (!err[0])
            abort(); /* a refusal says why */
        fx_params_free_tensors(&p);
        return 0;
    }
    uint8_t *enc = NULL;
    size_t len = 0;
    if (fx_safetensors_encode(&p, 0, NULL, NULL, &enc, &len, err, sizeof err) == FX_OK) {
        fx_params q;
        fx_params_init(&q);
        if (fx_safetensors_decode(enc, len, &q, err, sizeof err) != FX_OK) {
            fprintf(stderr, "fuzz_safetensors: re-encoded file refused: %s\n", err);
            abort();
        }
        same(&p, &q);
        fx_params_free_tensors(&q);
        free(enc);
    }
    fx_params_free_tensors(&p);
    return 0;
}
