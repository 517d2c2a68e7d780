/*
 * test_models.c - models/models.c: a stored model as a graph. Versions are
 * resolved the one way serving, training and the model service share
 * (0: the latest), graphs come from the stored spec and seed, weights are
 * checked against a fresh graph, and each failure has its own status.
 * Models are named by their keys "team/name" (store.h): "default/m".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/status.h"
#include "models/models.h"
#include "store/store.h"
#include "testutil.h"
#include "servertest.h"

#define SPEC_JSON                                                                         \
    "{\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 3]}],"        \
    " \"nodes\": [{\"name\": \"fc\", \"op\": \"dense\", \"inputs\": [\"x\"],"           \
    "              \"attrs\": {\"in_features\": 3, \"out_features\": 2}}],"              \
    " \"outputs\": [{\"name\": \"y\", \"source\": \"fc\"}]}"

typedef struct {
    char dir[64];
    fxdb_store *st;
    char err[FXS_ERRLEN];
    void *w1, *w2; /* the weights of seeds 1 and 2 */
    size_t w1_len, w2_len;
} fixture;

/* The safetensors weights of the spec's graph with the given seed. */
static void weights_of_seed(uint64_t seed, void **buf, size_t *len)
{
    fxg_graph *g = st_graph_json(SPEC_JSON, seed);
    char err[256];
    assert_int_equal(fxg_save_weights(g, buf, len, err, sizeof err), 0);
    fxg_free(g);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/fx-models-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(fxdb_store_open(f->dir, &f->st, f->err, sizeof f->err), 0);
    weights_of_seed(1, &f->w1, &f->w1_len);
    weights_of_seed(2, &f->w2, &f->w2_len);
    /* the stored spec: the packed ModelSpec, as the model service stores it */
    json_error_t je;
    json_t *j = json_loads(SPEC_JSON, 0, &je);
    ProtobufCMessage *spec = pbjson_decode(&fluxion__v1__model_spec__descriptor, j, f->err,
                                           sizeof f->err);
    json_decref(j);
    assert_non_null(spec);
    size_t n = protobuf_c_message_get_packed_size(spec);
    uint8_t *packed = malloc(n);
    protobuf_c_message_pack(spec, packed);
    protobuf_c_message_free_unpacked(spec, NULL);
    assert_int_equal(fxdb_store_create_model(f->st, "default/m", "", packed, n, 1, false, f->w1,
                                             f->w1_len, "init (seed 1)", f->err, sizeof f->err),
                     0);
    free(packed);
    int64_t v = 0;
    assert_int_equal(fxdb_store_add_version(f->st, "default/m", f->w2, f->w2_len, "import", &v,
                                            f->err, sizeof f->err),
                     0);
    assert_int_equal(v, 2);
    /* the versions' files are the team's: DIR/models/default/m/vN.safetensors */
    assert_int_equal(access(tu_pathf("%s/models/default/m/v1.safetensors", f->dir), F_OK), 0);
    assert_int_equal(access(tu_pathf("%s/models/default/m/v2.safetensors", f->dir), F_OK), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fxdb_store_close(f->st);
    tu_rmtree(f->dir);
    free(f->w1);
    free(f->w2);
    free(f);
    return 0;
}

static fxdb_model_rec get(fixture *f)
{
    fxdb_model_rec rec;
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", &rec, f->err, sizeof f->err), 0);
    return rec;
}

/* 0 is the latest; a version that exists is itself; one that does not is
 * NOT_FOUND naming the model and the version. */
static void test_resolve_version(void **state)
{
    fixture *f = *state;
    fxdb_model_rec rec = get(f);
    int64_t v = -1;
    assert_int_equal(fxm_resolve_version(&rec, 0, &v, f->err, sizeof f->err), 0);
    assert_int_equal(v, 2);
    assert_int_equal(fxm_resolve_version(&rec, 1, &v, f->err, sizeof f->err), 0);
    assert_int_equal(v, 1);
    assert_int_equal(fxm_resolve_version(&rec, 7, &v, f->err, sizeof f->err), FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "model 'default/m' has no version 7"));
    /* a model whose every version is unusable: a precondition, not a lookup */
    int n = rec.n_versions;
    rec.n_versions = 0;
    assert_int_equal(fxm_resolve_version(&rec, 0, &v, f->err, sizeof f->err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(f->err, "no usable version"));
    rec.n_versions = n;
    fxdb_model_rec_free(&rec);
}

/* The graph of the stored spec has the initial weights of the stored seed;
 * a version's graph has that version's weights. */
static void test_graph_and_versions(void **state)
{
    fixture *f = *state;
    fxdb_model_rec rec = get(f);
    fxg_graph *g = NULL;
    assert_int_equal(fxm_graph_of(&rec, 0, &g, f->err, sizeof f->err), 0);
    void *w;
    size_t len;
    assert_int_equal(fxg_save_weights(g, &w, &len, f->err, sizeof f->err), 0);
    assert_int_equal(len, f->w1_len);
    assert_memory_equal(w, f->w1, len); /* seed 1 */
    free(w);
    fxg_free(g);
    fxdb_model_rec_free(&rec);

    for (int64_t want = 0; want <= 2; want++) {
        fxm_loaded l;
        fxm_load_opts o = { .inference_only = want == 1 };
        assert_int_equal(fxm_load_version(f->st, "default/m", want, &o, &l, f->err, sizeof f->err),
                         0);
        assert_int_equal(l.version, want ? want : 2);
        assert_false(l.loaded);
        assert_int_equal(fxg_save_weights(l.g, &w, &len, f->err, sizeof f->err), 0);
        const void *expect = l.version == 1 ? f->w1 : f->w2;
        assert_int_equal(len, l.version == 1 ? f->w1_len : f->w2_len);
        assert_memory_equal(w, expect, len);
        free(w);
        fxg_free(l.g);
    }
    fxm_loaded l = { .g = (fxg_graph *)1 };
    assert_int_equal(fxm_load_version(f->st, "default/m", 3, NULL, &l, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_null(l.g);
    assert_int_equal(fxm_load_version(f->st, "default/nope", 0, NULL, &l, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_null(l.g);
    /* a bare name is no key: INVALID_ARGUMENT naming the missing team part */
    l.g = (fxg_graph *)1;
    assert_int_equal(fxm_load_version(f->st, "m", 0, NULL, &l, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_null(l.g);
    assert_non_null(strstr(f->err, "key \"m\" has no team part"));
}

/* Weights are checked against a fresh graph: other seeds' weights fit,
 * garbage and another model's weights are INVALID_ARGUMENT naming why. */
static void test_check_weights(void **state)
{
    fixture *f = *state;
    fxdb_model_rec rec = get(f);
    assert_int_equal(fxm_check_weights(&rec, 0, f->w2, f->w2_len, f->err, sizeof f->err), 0);
    assert_int_equal(fxm_check_weights(&rec, 0, "garbage!", 8, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "weights for 'default/m'"));
    fxg_graph *other = st_graph_json(
        "{\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]}],"
        " \"nodes\": [{\"name\": \"fc\", \"op\": \"dense\", \"inputs\": [\"x\"],"
        "              \"attrs\": {\"in_features\": 4, \"out_features\": 2}}],"
        " \"outputs\": [{\"name\": \"y\", \"source\": \"fc\"}]}",
        1);
    void *w;
    size_t len;
    assert_int_equal(fxg_save_weights(other, &w, &len, f->err, sizeof f->err), 0);
    assert_int_equal(fxm_check_weights(&rec, 0, w, len, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "fc.weight"));
    free(w);
    fxg_free(other);
    /* a per-model parameter limit below the model's: the stored model no
     * longer builds under it, which is the daemon's fault, not the client's */
    fxg_graph *g = (fxg_graph *)1;
    assert_int_equal(fxm_graph_of(&rec, 4, &g, f->err, sizeof f->err), FXS_INTERNAL);
    assert_null(g);
    assert_non_null(strstr(f->err, "model 'default/m'"));
    fxdb_model_rec_free(&rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resolve_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_graph_and_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_weights, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
