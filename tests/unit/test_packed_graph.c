/* test_packed_graph.c - a served model's graph with pre-packed weights
 * (fxg_prepack, server/models/graph.c): outputs before and after packing
 * agree (to float rounding: test_packed.c says why not bit for bit), the
 * packed path really runs (outputs are not bit-identical to the plain
 * path's on an mlp-sized layer, and fxg_prepack counts the dense layers),
 * loading new weights drops the packs (outputs follow the new weights), and
 * four threads forward through one packed graph at once with the serial
 * result. */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "models/graph.h"

typedef Fluxion__V1__ModelSpec spec_t;
typedef Fluxion__V1__Node__AttrsEntry attr_t;

#define GROW(arr, n) \
    ((arr) = realloc((arr), ((n) + 1) * sizeof *(arr)), assert_non_null(arr), &(arr)[(n)++])

static attr_t *attr(const char *key)
{
    attr_t *e = calloc(1, sizeof *e);
    assert_non_null(e);
    fluxion__v1__node__attrs_entry__init(e);
    e->key = strdup(key);
    e->value = calloc(1, sizeof *e->value);
    assert_non_null(e->value);
    fluxion__v1__attr_value__init(e->value);
    return e;
}

static attr_t *I(const char *key, int64_t v)
{
    attr_t *e = attr(key);
    e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_I;
    e->value->i = v;
    return e;
}

static attr_t *S(const char *key, const char *v)
{
    attr_t *e = attr(key);
    e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_S;
    e->value->s = strdup(v);
    return e;
}

static void dense(spec_t *s, const char *name, const char *in, int64_t nin, int64_t nout,
                  const char *act)
{
    Fluxion__V1__Node *n = calloc(1, sizeof *n);
    assert_non_null(n);
    fluxion__v1__node__init(n);
    n->name = strdup(name);
    n->op = strdup("dense");
    *GROW(n->inputs, n->n_inputs) = strdup(in);
    *GROW(n->attrs, n->n_attrs) = I("in_features", nin);
    *GROW(n->attrs, n->n_attrs) = I("out_features", nout);
    if (act)
        *GROW(n->attrs, n->n_attrs) = S("activation", act);
    *GROW(s->nodes, s->n_nodes) = n;
}

/* The served mlp of the benchmarks: 784-512-256-10, relu, relu, none. */
static fxg_graph *mlp(uint64_t seed)
{
    spec_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    fluxion__v1__model_spec__init(s);
    Fluxion__V1__TensorSpec *t = calloc(1, sizeof *t);
    fluxion__v1__tensor_spec__init(t);
    t->name = strdup("x");
    t->dtype = FLUXION__V1__DATA_TYPE__FP32;
    t->n_shape = 2;
    t->shape = calloc(2, sizeof *t->shape);
    t->shape[0] = -1;
    t->shape[1] = 784;
    *GROW(s->inputs, s->n_inputs) = t;
    dense(s, "fc1", "x", 784, 512, "relu");
    dense(s, "fc2", "fc1", 512, 256, "relu");
    dense(s, "fc3", "fc2", 256, 10, NULL);
    Fluxion__V1__OutputSpec *o = calloc(1, sizeof *o);
    fluxion__v1__output_spec__init(o);
    o->name = strdup("y");
    o->source = strdup("fc3");
    *GROW(s->outputs, s->n_outputs) = o;
    char err[512] = "";
    fxg_graph *g = NULL;
    int rc = fxg_build(s, &(fxg_options){ .seed = seed }, &g, err, sizeof err);
    if (rc)
        fail_msg("fxg_build: %s", err);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    /* non-zero biases: zeros would hide a missing bias */
    fx_rng *rng = fx_rng_create(seed);
    const fx_params *p = fxg_params(g);
    for (int i = 0; i < p->count; i++)
        if (strstr(p->items[i].name, "bias"))
            assert_int_equal(fx_init_tensor(p->items[i].tensor, FX_INIT_UNIFORM, -0.2, 0.2, rng),
                             FX_OK);
    fx_rng_free(rng);
    fxg_drop_grads(g); /* as serving does */
    return g;
}

static float *run(const fxg_graph *g, fx_ctx *ctx, fx_tensor *x)
{
    fx_ctx_reset(ctx);
    fx_ctx_set_grad(ctx, false);
    fx_tensor *y = NULL;
    char err[512];
    if (fxg_forward(g, ctx, (fx_tensor *[]){ x }, &y, err, sizeof err))
        fail_msg("fxg_forward: %s", err);
    assert_int_equal(fx_tensor_numel(y), fx_tensor_numel(x) / 784 * 10);
    return tu_values(y);
}

static void expect_close(const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= 1e-4f * (1.0f + fabsf(b[i]))))
            fail_msg("y[%lld] = %.9g, expected %.9g", (long long)i, a[i], b[i]);
}

static void test_before_after(void **state)
{
    (void)state;
    fxg_graph *g = mlp(1);
    fx_rng *rng = fx_rng_create(2);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    static const int64_t batches[] = { 1, 3, 8, 13, 64 };
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
        int64_t B = batches[bi], n = B * 10;
        fx_tensor *x = tu_uniform(rng, 2, TU_SHAPE(B, 784), 0.0, 1.0);
        float *before = run(g, ctx, x);
        assert_int_equal(fxg_prepack(g), 3);
        float *after = run(g, ctx, x);
        expect_close(after, before, n);
        if (B == 8) /* the packed kernels ran: another order of sums */
            assert_true(memcmp(after, before, (size_t)n * sizeof(float)) != 0);
        /* new weights through the API: the packs go, outputs follow */
        void *buf = NULL;
        size_t len = 0;
        char err[512];
        fxg_graph *g2 = mlp(77);
        assert_int_equal(fxg_save_weights(g2, &buf, &len, err, sizeof err), 0);
        float *other = run(g2, ctx, x);
        assert_int_equal(fxg_load_weights(g, buf, len, err, sizeof err), 0);
        float *loaded = run(g, ctx, x);
        assert_memory_equal(loaded, other, (size_t)n * sizeof(float)); /* both plain */
        assert_int_equal(fxg_prepack(g), 3);
        float *repacked = run(g, ctx, x);
        expect_close(repacked, other, n);
        fxg_unpack(g);
        free(buf);
        fxg_free(g2);
        fxg_free(g);
        g = mlp(1);
        free(before);
        free(after);
        free(other);
        free(loaded);
        free(repacked);
        fx_tensor_free(x);
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
    fxg_free(g);
}

typedef struct {
    const fxg_graph *g;
    fx_tensor *x;
    const float *expect;
    int bad;
} share_arg;

static void *share_run(void *p)
{
    share_arg *a = p;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (int r = 0; r < 50 && ctx; r++) {
        fx_ctx_reset(ctx);
        fx_ctx_set_grad(ctx, false);
        fx_tensor *y = NULL;
        char err[256];
        if (fxg_forward(a->g, ctx, (fx_tensor *[]){ a->x }, &y, err, sizeof err) != 0) {
            a->bad++;
            continue;
        }
        float *v = tu_values(y);
        if (memcmp(v, a->expect, 8 * 10 * sizeof(float)) != 0)
            a->bad++;
        free(v);
    }
    fx_ctx_free(ctx);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    fxg_graph *g = mlp(3);
    assert_int_equal(fxg_prepack(g), 3);
    fx_rng *rng = fx_rng_create(4);
    fx_tensor *x = tu_uniform(rng, 2, TU_SHAPE(8, 784), 0.0, 1.0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    float *expect = run(g, ctx, x);
    share_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (share_arg){ g, x, expect, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, share_run, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    free(expect);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
    fxg_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_before_after),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
