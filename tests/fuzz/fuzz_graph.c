/*
 * fuzz_graph.c - a ModelSpec -> a graph (server/models/: graph_parse.c's
 * checks, shape inference, layer construction), the path of every
 * CreateModel. The input is either a packed fluxion.v1.ModelSpec (what the
 * daemon receives; checked by fxr_wirecheck first, as the RPC layer does)
 * or, when it starts with '{', the spec in JSON (what `fluxion model
 * create` reads, decoded by pbjson): the JSON form lets the fuzzer mutate
 * names, op types and attributes with the JSON dictionary.
 *
 * A spec that builds is also run forward once on zero inputs (free sizes
 * set to 2) when its inputs are small: shape inference that disagrees with
 * the layers shows up as an engine error or an out-of-bounds access there.
 * Limits are the daemon's kind (parameters), smaller, so that an exec stays
 * fast; a spec over them must be refused, not attempted.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "models/graph.h"
#include "pbjson.h"
#include "rpc/wirecheck.h"

#define MAX_INPUT_ELEMS 4096

static Fluxion__V1__ModelSpec *decode(const uint8_t *data, size_t size)
{
    const ProtobufCMessageDescriptor *d = &fluxion__v1__model_spec__descriptor;
    char err[512];
    if (size && data[0] == '{') {
        json_error_t jerr;
        json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
            return NULL;
        ProtobufCMessage *m = pbjson_decode(d, j, err, sizeof err);
        json_decref(j);
        return (Fluxion__V1__ModelSpec *)m;
    }
    bool malformed = false;
    if (fxr_wirecheck(d, data, size, &malformed, err, sizeof err) != 0 || malformed)
        return NULL;
    return (Fluxion__V1__ModelSpec *)protobuf_c_message_unpack(d, NULL, size, data);
}

static void forward(const fxg_graph *g)
{
    int n = fxg_num_inputs(g);
    fx_tensor *in[64];
    fx_tensor *out[64];
    if (n > 64 || fxg_num_outputs(g) > 64)
        return;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    if (!ctx)
        abort();
    fx_ctx_set_grad(ctx, false);
    for (int i = 0; i < n; i++) {
        const fxg_tensor_info *t = fxg_input(g, i);
        int64_t shape[FX_MAX_DIMS], numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            shape[k] = t->shape[k] < 0 ? 2 : t->shape[k];
            numel *= shape[k] ? shape[k] : 1;
            if (numel > MAX_INPUT_ELEMS)
                goto done;
        }
        if (!(in[i] = fx_zeros(ctx, t->dtype, t->ndim, shape)))
            goto done;
    }
    char err[512];
    fxg_forward(g, ctx, in, out, err, sizeof err);
done:
    fx_ctx_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Fluxion__V1__ModelSpec *spec = decode(data, size);
    if (!spec)
        return 0;
    fxg_options opts = {.seed = 1, .max_params = 1 << 16, .max_nodes = 256};
    fxg_graph *g = NULL;
    char err[512] = "";
    int rc = fxg_build(spec, &opts, &g, err, sizeof err);
    if (getenv("FX_FUZZ_DEBUG")) /* to check that the seeds build */
        fprintf(stderr, "fuzz_graph: %s\n", rc ? err : "built");
    if (rc == 0) {
        if (!g)
            abort();
        forward(g);
        fxg_free(g);
    } else if (!err[0]) {
        fprintf(stderr, "fuzz_graph: fxg_build failed (%d) without a message\n", rc);
        abort();
    }
    protobuf_c_message_free_unpacked(&spec->base, NULL);
    return 0;
}
