/* test_embedding.c - embedding: rows against the weight picked here, for
 * i32/i64 and several index shapes (finite-difference gradients with
 * repeated indices are the registry's embedding rows, test_ops); the
 * padding row gets no gradient while the others get the scatter-add
 * computed here; a large lookup that takes the parallel
 * loops (the same bits with 1 and 4 threads); the layer (init, padding row,
 * training keeps the padding row at zero); refused inputs naming the
 * layer, the index and the vocabulary size. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A persistent index tensor of dtype dt from int64 values. */
static fx_tensor *indices(fx_dtype dt, int ndim, const int64_t *shape, const int64_t *v)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    if (dt == FX_I64)
        return tu_from(dt, ndim, shape, v);
    int32_t *w = malloc((size_t)(n ? n : 1) * sizeof *w);
    for (int64_t i = 0; i < n; i++)
        w[i] = (int32_t)v[i];
    fx_tensor *t = tu_from(dt, ndim, shape, w);
    free(w);
    return t;
}

/* y must be [idx shape..., dim] with row j equal to weight row idx[j]. */
static void check_rows(const fx_tensor *y, const fx_tensor *idx, const float *w, const int64_t *iv,
                       int64_t n, int64_t dim)
{
    assert_int_equal(y->ndim, idx->ndim + 1);
    for (int d = 0; d < idx->ndim; d++)
        assert_int_equal(y->shape[d], idx->shape[d]);
    assert_int_equal(y->shape[idx->ndim], dim);
    float *yv = tu_values(y);
    for (int64_t j = 0; j < n; j++)
        for (int64_t k = 0; k < dim; k++)
            if (yv[j * dim + k] != w[iv[j] * dim + k])
                fail_msg("row %lld col %lld: %g, weight row %lld has %g", (long long)j,
                         (long long)k, yv[j * dim + k], (long long)iv[j], w[iv[j] * dim + k]);
    free(yv);
}

static void test_embedding_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(10, 4), 1.0, 0.0);
    float *wv = tu_values(w);
    const int64_t iv[] = {3, 0, 9, 3, 3, 7};
    const struct {
        int ndim;
        int64_t shape[3];
    } shapes[] = {{1, {6}}, {2, {2, 3}}, {3, {3, 1, 2}}, {0, {0}}};
    for (int dt = 0; dt < 2; dt++)
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            fx_tensor *idx = indices(dt ? FX_I64 : FX_I32, shapes[k].ndim, shapes[k].shape, iv);
            int64_t n = fx_tensor_numel(idx);
            fx_tensor *y = fx_embedding(ctx, w, idx, -1);
            if (!y)
                fail_msg("embedding: %s", fx_ctx_error(ctx));
            check_rows(y, idx, wv, iv, n, 4);
            fx_ctx_reset(ctx);
            fx_tensor_free(idx);
        }
    /* no indices: an empty [0, dim] result */
    fx_tensor *e = indices(FX_I64, 1, TU_SHAPE(0), iv);
    fx_tensor *y = fx_embedding(ctx, w, e, -1);
    assert_non_null(y);
    assert_true(y->ndim == 2 && y->shape[0] == 0 && y->shape[1] == 4);
    fx_tensor_free(e);
    free(wv);
    fx_tensor_free(w);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* dweight for seed dy: the scatter-add of dy's rows computed here, with
 * the padding row (used by several indices) left at zero. */
static void test_embedding_padding_grad(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t iv[] = {2, 0, 2, 4, 1, 2, 0, 4}, num = 5, dim = 3, n = 8, pad = 2;
    for (int dt = 0; dt < 2; dt++) {
        fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(num, dim), 1.0, 0.0);
        fx_tensor *idx = indices(dt ? FX_I64 : FX_I32, 2, TU_SHAPE(2, 4), iv);
        fx_tensor *dy = tu_randn(rng, 3, TU_SHAPE(2, 4, dim), 1.0, 0.0);
        fx_tensor_fill(w->grad, 0.0);
        fx_tensor *y = fx_embedding(ctx, w, idx, pad);
        assert_non_null(y);
        assert_int_equal(fx_backward_seed(ctx, y, dy), FX_OK);
        float *g = tu_values(w->grad), *dv = tu_values(dy);
        double want[15] = {0};
        for (int64_t j = 0; j < n; j++)
            for (int64_t k = 0; k < dim; k++)
                if (iv[j] != pad)
                    want[iv[j] * dim + k] += dv[j * dim + k];
        for (int64_t i = 0; i < num * dim; i++)
            assert_float_equal(g[i], want[i], 1e-6);
        for (int64_t k = 0; k < dim; k++)
            assert_float_equal(g[pad * dim + k], 0.0, 0.0);
        free(g);
        free(dv);
        fx_ctx_reset(ctx);
        fx_tensor *ts[] = {w, idx, dy};
        tu_free_all(3, ts);
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Forward and backward of one lookup with nthreads; returns y then dweight
 * (malloc'd). */
static float *run_lookup(fx_tensor *w, fx_tensor *idx, fx_tensor *dy, int64_t pad, int nthreads)
{
    fx_set_num_threads(nthreads);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor_fill(w->grad, 0.0);
    fx_tensor *y = fx_embedding(ctx, w, idx, pad);
    if (!y)
        fail_msg("embedding: %s", fx_ctx_error(ctx));
    assert_int_equal(fx_backward_seed(ctx, y, dy), FX_OK);
    int64_t ny = fx_tensor_numel(y), nw = fx_tensor_numel(w);
    float *out = malloc((size_t)(ny + nw) * sizeof *out);
    fx_tensor_to_host(y, out, (size_t)ny * sizeof(float));
    fx_tensor_to_host(w->grad, out + ny, (size_t)nw * sizeof(float));
    fx_ctx_free(ctx);
    return out;
}

/* A lookup above the parallel threshold with many repeats (a skewed
 * distribution, as word frequencies are): rows and the scatter-add against
 * the reference, the same bits with 1 and 4 threads. */
static void test_embedding_large(void **state)
{
    (void)state;
    int threads0 = fx_get_num_threads();
    fx_rng *rng = fx_rng_create(4);
    const int64_t num = 300, dim = 48, n = 2048, pad = 0;
    int64_t *iv = malloc((size_t)n * sizeof *iv);
    for (int64_t j = 0; j < n; j++) {
        double u = fx_rng_uniform(rng);
        iv[j] = (int64_t)(u * u * u * num); /* small indices are frequent */
    }
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(num, dim), 1.0, 0.0);
    fx_tensor *idx = indices(FX_I64, 2, TU_SHAPE(32, 64), iv);
    fx_tensor *dy = tu_randn(rng, 3, TU_SHAPE(32, 64, dim), 1.0, 0.0);
    float *p1 = run_lookup(w, idx, dy, pad, 1), *p4 = run_lookup(w, idx, dy, pad, 4);
    assert_memory_equal(p1, p4, (size_t)(n * dim + num * dim) * sizeof(float));
    float *wv = tu_values(w), *dv = tu_values(dy);
    double *want = calloc((size_t)(num * dim), sizeof *want);
    for (int64_t j = 0; j < n; j++)
        for (int64_t k = 0; k < dim; k++) {
            assert_true(p1[j * dim + k] == wv[iv[j] * dim + k]);
            if (iv[j] != pad)
                want[iv[j] * dim + k] += dv[j * dim + k];
        }
    for (int64_t i = 0; i < num * dim; i++)
        if (!(fabs(p1[n * dim + i] - want[i]) <= 1e-4 * (1.0 + fabs(want[i]))))
            fail_msg("dweight %lld: %g vs %g", (long long)i, p1[n * dim + i], want[i]);
    free(p1);
    free(p4);
    free(wv);
    free(dv);
    free(want);
    free(iv);
    fx_tensor *ts[] = {w, idx, dy};
    tu_free_all(3, ts);
    fx_set_num_threads(threads0);
    fx_rng_free(rng);
}

/* The layer: "weight" [num, dim] ~ N(0, 1) with the padding row at zero;
 * SGD steps on a batch that uses the padding index leave that row at zero
 * and move the rows that were used. */
static void test_embedding_layer(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(5);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t num = 50, dim = 20, pad = 3;
    fx_layer *emb = fx_embedding_create(
        "emb", num, dim, &(fx_embedding_opts){.has_padding = true, .padding_idx = pad}, rng);
    assert_non_null(emb);
    fx_tensor *w = fx_layer_param(emb, "weight");
    assert_true(w && w->ndim == 2 && w->shape[0] == num && w->shape[1] == dim);
    assert_true(fx_tensor_requires_grad(w));
    float *wv = tu_values(w);
    double s = 0, ss = 0;
    for (int64_t i = 0; i < num * dim; i++) {
        if (i / dim == pad)
            assert_float_equal(wv[i], 0.0, 0.0);
        else
            s += wv[i], ss += (double)wv[i] * wv[i];
    }
    double cnt = (double)((num - 1) * dim), mean = s / cnt, var = ss / cnt - mean * mean;
    assert_true(fabs(mean) < 0.1 && fabs(var - 1.0) < 0.15);

    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(emb, &ps), FX_OK);
    assert_int_equal(ps.count, 1);
    assert_string_equal(ps.items[0].name, "emb.weight");
    fx_optim *opt = fx_optim_create(FX_OPT_SGD, &(fx_optim_hparams){.lr = 0.5}, &ps);
    fx_tensor *idx = tu_from(FX_I32, 2, TU_SHAPE(2, 3), (int32_t[]){3, 7, 3, 0, 7, 3});
    /* sum(y * r): the padding row would get r's rows as its gradient */
    fx_tensor *r = tu_randn(rng, 3, TU_SHAPE(2, 3, dim), 1.0, 0.0);
    for (int step = 0; step < 3; step++) {
        fx_tensor *y = fx_layer_forward(emb, ctx, idx);
        assert_non_null(y);
        fx_tensor *loss = fx_sum(ctx, fx_mul(ctx, y, r), 0, NULL, false);
        assert_int_equal(fx_backward(ctx, loss), FX_OK);
        assert_int_equal(fx_optim_step(opt), FX_OK);
        fx_optim_zero_grad(opt);
        fx_ctx_reset(ctx);
    }
    float *w2 = tu_values(w);
    for (int64_t k = 0; k < dim; k++) {
        assert_float_equal(w2[pad * dim + k], 0.0, 0.0);
        assert_float_equal(w2[1 * dim + k], wv[1 * dim + k], 0.0); /* unused row */
    }
    assert_true(w2[7 * dim] != wv[7 * dim] && w2[0] != wv[0]); /* used rows moved */
    free(wv);
    free(w2);
    fx_optim_free(opt);
    fx_params_clear(&ps);
    fx_tensor_free(idx);
    fx_tensor_free(r);
    fx_layer_free(emb);

    /* without padding; bad arguments give NULL */
    emb = fx_embedding_create(NULL, 4, 2, NULL, rng);
    assert_non_null(emb);
    assert_string_equal(fx_layer_name(emb), "embedding");
    fx_layer_free(emb);
    assert_null(fx_embedding_create("e", 0, 2, NULL, rng));
    assert_null(fx_embedding_create("e", 4, 0, NULL, rng));
    assert_null(fx_embedding_create("e", 4, 2, NULL, NULL));
    assert_null(fx_embedding_create(
        "e", 4, 2, &(fx_embedding_opts){.has_padding = true, .padding_idx = 4}, rng));
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Asserts the context failed with status s and a message containing each
 * of the NULL-terminated strings, then clears the error. */
static void expect_error(fx_ctx *ctx, fx_tensor *y, fx_status s, ...)
{
    assert_null(y);
    if (fx_ctx_status(ctx) != s)
        fail_msg("status %s, wanted %s: %s", fx_status_name(fx_ctx_status(ctx)), fx_status_name(s),
                 fx_ctx_error(ctx));
    va_list ap;
    va_start(ap, s);
    for (const char *w; (w = va_arg(ap, const char *));)
        if (!strstr(fx_ctx_error(ctx), w))
            fail_msg("message '%s' lacks '%s'", fx_ctx_error(ctx), w);
    va_end(ap);
    fx_ctx_reset(ctx);
}

static void test_embedding_bad(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(6);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(10, 4), 1.0, 0.0);
    fx_tensor *w1 = tu_randn(rng, 1, TU_SHAPE(10), 1.0, 0.0);
    fx_tensor *big = indices(FX_I64, 2, TU_SHAPE(2, 2), (int64_t[]){1, 2, 12, 3});
    fx_tensor *neg = indices(FX_I32, 1, TU_SHAPE(3), (int64_t[]){0, -1, 2});
    fx_tensor *ok = indices(FX_I32, 1, TU_SHAPE(2), (int64_t[]){0, 9});
    fx_tensor *fi = tu_randn(rng, 1, TU_SHAPE(3), 1.0, 0.0);
    fx_tensor *wi = tu_from(FX_I32, 2, TU_SHAPE(2, 2), (int32_t[]){1, 2, 3, 4});

    expect_error(ctx, fx_embedding(ctx, w, big, -1), FX_ERR_VALUE, "embedding: index 12",
                 "position 2", "the vocabulary has 10 entries", NULL);
    expect_error(ctx, fx_embedding(ctx, w, neg, -1), FX_ERR_VALUE, "embedding: index -1",
                 "10 entries", NULL);
    expect_error(ctx, fx_embedding(ctx, w, fi, -1), FX_ERR_DTYPE,
                 "embedding: indices must be i32 or i64, got f32", NULL);
    expect_error(ctx, fx_embedding(ctx, wi, ok, -1), FX_ERR_DTYPE, "embedding", "f32", NULL);
    expect_error(ctx, fx_embedding(ctx, w1, ok, -1), FX_ERR_SHAPE,
                 "embedding: weight must be [num,dim], got [10]", NULL);
    expect_error(ctx, fx_embedding(ctx, w, ok, 10), FX_ERR_ARG,
                 "embedding: padding_idx 10 is out of range for 10", NULL);
    expect_error(ctx, fx_embedding(ctx, w, NULL, -1), FX_ERR_ARG, "embedding", NULL);
    assert_non_null(fx_embedding(ctx, w, ok, 9));

    /* through the layer: the layer's name, the index and the vocabulary */
    fx_layer *emb = fx_embedding_create("tok_emb", 10, 4, NULL, rng);
    expect_error(ctx, fx_layer_forward(emb, ctx, big), FX_ERR_VALUE,
                 "layer 'tok_emb': embedding: index 12", "10 entries", NULL);
    expect_error(ctx, fx_layer_forward(emb, ctx, fi), FX_ERR_DTYPE, "layer 'tok_emb'", "f32", NULL);
    /* a failure upstream propagates without a new message */
    fx_embedding(ctx, w, big, -1);
    assert_null(fx_embedding(ctx, NULL, ok, -1));
    assert_null(fx_layer_forward(emb, ctx, NULL));
    expect_error(ctx, NULL, FX_ERR_VALUE, "index 12", NULL);

    fx_tensor *ts[] = {w, w1, big, neg, ok, fi, wi};
    tu_free_all(7, ts);
    fx_layer_free(emb);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding_forward),      cmocka_unit_test(test_embedding_padding_grad),
        cmocka_unit_test(test_embedding_large),        cmocka_unit_test(test_embedding_layer),
        cmocka_unit_test(test_embedding_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
