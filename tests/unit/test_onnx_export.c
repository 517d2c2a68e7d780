/* test_onnx_export.c - fxon_export (server/onnx/export.c) without a daemon:
 * the ModelProto's header, names, symbolic batch dim and initializers;
 * refusals that name the node; and bad weights (every truncation, flipped
 * bytes, another model's) refused with a status, never a crash. The
 * numbers are checked against onnxruntime by
 * tests/integration/test_onnx_export.py. */
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/graph.h"
#include "onnx/export.h"
#include "onnx/onnx.pb-c.h"
#include "base/status.h"
#include "pbjson.h"

static Fluxion__V1__ModelSpec *spec_of(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    assert_non_null(j);
    char err[256];
    ProtobufCMessage *m = pbjson_decode(&fluxion__v1__model_spec__descriptor, j, err, sizeof err);
    json_decref(j);
    if (!m)
        fail_msg("spec: %s", err);
    return (Fluxion__V1__ModelSpec *)m;
}

/* The spec's seeded weights as safetensors. */
static void weights_of(const Fluxion__V1__ModelSpec *spec, void **w, size_t *len)
{
    char err[512];
    fxg_graph *g = NULL;
    fxg_options o = {.seed = 3};
    if (fxg_build(spec, &o, &g, err, sizeof err))
        fail_msg("build: %s", err);
    assert_int_equal(fxg_save_weights(g, w, len, err, sizeof err), 0);
    fxg_free(g);
}

/* An MLP that outputs its loss too (the loss's target is an input). */
static Fluxion__V1__ModelSpec *mlp_spec(void)
{
    return spec_of(
        "{\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]},"
        "  {\"name\": \"t\", \"dtype\": \"FP32\", \"shape\": [-1, 3]}],"
        " \"nodes\": [{\"name\": \"fc1\", \"op\": \"dense\", \"inputs\": [\"x\"],"
        "   \"attrs\": {\"in_features\": 4, \"out_features\": 8, \"activation\": \"relu\"}},"
        "  {\"name\": \"fc2\", \"op\": \"dense\", \"inputs\": [\"fc1\"],"
        "   \"attrs\": {\"in_features\": 8, \"out_features\": 3}},"
        "  {\"name\": \"loss\", \"op\": \"mse_loss\", \"inputs\": [\"fc2\", \"t\"]}],"
        " \"outputs\": [{\"name\": \"y\", \"source\": \"fc2\"},"
        "  {\"name\": \"l\", \"source\": \"loss\"}]}");
}

static void test_model_proto(void **state)
{
    (void)state;
    Fluxion__V1__ModelSpec *spec = mlp_spec();
    void *w;
    size_t wlen;
    weights_of(spec, &w, &wlen);
    uint8_t *out = NULL;
    size_t olen = 0;
    char err[512];
    int rc = fxon_export(spec, w, wlen, "team/mlp", &out, &olen, err, sizeof err);
    if (rc)
        fail_msg("export: %s", err);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, olen, out);
    assert_non_null(m);
    assert_int_equal(m->ir_version, 8);
    assert_int_equal(m->n_opset_import, 1);
    assert_string_equal(m->opset_import[0]->domain, "");
    assert_int_equal(m->opset_import[0]->version, 17);
    assert_string_equal(m->producer_name, "fluxion");
    Onnx__GraphProto *g = m->graph;
    assert_string_equal(g->name, "team/mlp");
    /* the loss output and its target input are left out */
    assert_int_equal(g->n_input, 1);
    assert_string_equal(g->input[0]->name, "x");
    assert_int_equal(g->n_output, 1);
    assert_string_equal(g->output[0]->name, "y");
    Onnx__TensorShapeProto *sh = g->input[0]->type->tensor_type->shape;
    assert_int_equal(sh->n_dim, 2);
    assert_string_equal(sh->dim[0]->dim_param, "batch");
    assert_int_equal(sh->dim[1]->dim_value, 4);
    assert_int_equal(g->n_initializer, 4);
    const char *names[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(g->initializer[i]->name, names[i]);
        assert_true(g->initializer[i]->has_raw_data);
    }
    assert_int_equal(g->initializer[0]->raw_data.len, 8 * 4 * sizeof(float));
    bool fc1 = false, fc2 = false;
    for (size_t i = 0; i < g->n_node; i++) {
        fc1 |= strcmp(g->node[i]->name, "fc1") == 0;
        fc2 |= strcmp(g->node[i]->name, "fc2") == 0;
        assert_string_not_equal(g->node[i]->op_type, "");
    }
    assert_true(fc1 && fc2);
    onnx__model_proto__free_unpacked(m, NULL);
    free(out);
    free(w);
    fluxion__v1__model_spec__free_unpacked(spec, NULL);
}

static void test_refusals(void **state)
{
    (void)state;
    Fluxion__V1__ModelSpec *spec = spec_of(
        "{\"inputs\": [{\"name\": \"a\", \"shape\": [-1, 3]},"
        "  {\"name\": \"b\", \"shape\": [-1, 3]}],"
        " \"nodes\": [{\"name\": \"crit\", \"op\": \"mse_loss\", \"inputs\": [\"a\", \"b\"]}],"
        " \"outputs\": [{\"name\": \"loss\", \"source\": \"crit\"}]}");
    void *w;
    size_t wlen;
    weights_of(spec, &w, &wlen);
    uint8_t *out = (uint8_t *)"x";
    size_t olen = 7;
    char err[512];
    assert_int_equal(fxon_export(spec, w, wlen, "m", &out, &olen, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "node 'crit' (mse_loss)"));
    assert_null(out);
    assert_int_equal(olen, 0);
    assert_int_equal(fxon_export(spec, NULL, 5, "m", &out, &olen, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    free(w);
    fluxion__v1__model_spec__free_unpacked(spec, NULL);
}

/* Weights are the store's, checked when stored; the exporter still checks
 * them (they go through fxg_load_weights): any damage is a status. */
static void test_bad_weights(void **state)
{
    (void)state;
    Fluxion__V1__ModelSpec *spec = mlp_spec();
    void *w;
    size_t wlen;
    weights_of(spec, &w, &wlen);
    char err[512];
    uint8_t *out = NULL;
    size_t olen = 0;
    for (size_t n = 0; n < wlen; n += n < 64 ? 1 : 37) {
        uint8_t *cut = malloc(n ? n : 1);
        assert_non_null(cut);
        memcpy(cut, w, n);
        int rc = fxon_export(spec, cut, n, "m", &out, &olen, err, sizeof err);
        assert_int_not_equal(rc, 0);
        assert_true(err[0] != '\0');
        assert_null(out);
        free(cut);
    }
    uint8_t *bad = malloc(wlen);
    assert_non_null(bad);
    for (size_t i = 0; i < 200 && i < wlen; i++) {
        memcpy(bad, w, wlen);
        bad[(i * 7919) % wlen] ^= 0x5a;
        int rc = fxon_export(spec, bad, wlen, "m", &out, &olen, err, sizeof err);
        if (rc == 0)
            free(out); /* a flipped weight value is still a model */
        out = NULL;
    }
    free(bad);
    /* another model's weights */
    Fluxion__V1__ModelSpec *other = spec_of(
        "{\"inputs\": [{\"name\": \"x\", \"shape\": [-1, 4]}],"
        " \"nodes\": [{\"name\": \"fc1\", \"op\": \"dense\", \"inputs\": [\"x\"],"
        "   \"attrs\": {\"in_features\": 4, \"out_features\": 5}}],"
        " \"outputs\": [{\"name\": \"y\", \"source\": \"fc1\"}]}");
    assert_int_equal(fxon_export(other, w, wlen, "m", &out, &olen, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "fc1.weight"));
    free(w);
    fluxion__v1__model_spec__free_unpacked(other, NULL);
    fluxion__v1__model_spec__free_unpacked(spec, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_proto),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_bad_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
