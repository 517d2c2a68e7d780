/*
 * fuzz_safetensors.c - the safetensors reader (engine/safetensors.c:
 * fx_safetensors_decode), which reads model weights (ImportWeights,
 * checkpoints, stored versions) and datasets' shards. A file that decodes
 * is encoded again and must decode to the same tensors (names, dtypes,
 * shapes, bytes).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxion.h"

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
