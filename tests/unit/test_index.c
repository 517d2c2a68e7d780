/* test_index.c - index_select and gather with i32 / i64 indices against
 * plain loops, a lookup above the parallel grain, bad input. Their gradient
 * checks with repeated indices (so the index_add / scatter_add backward
 * must accumulate) and cross-backend comparisons are the registry's
 * index_select and gather rows (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void expect_fail(fx_ctx *ctx, fx_tensor *y, fx_status s, const char *op)
{
    assert_null(y);
    assert_int_equal(fx_ctx_status(ctx), s);
    if (strncmp(fx_ctx_error(ctx), op, strlen(op)) != 0)
        fail_msg("message '%s' does not name %s", fx_ctx_error(ctx), op);
    fx_ctx_clear_error(ctx);
}

/* An index tensor of dtype dt from int64 values. */
static fx_tensor *make_idx(fx_dtype dt, int ndim, const int64_t *shape, const int64_t *v)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    if (dt == FX_I64)
        return tu_from(FX_I64, ndim, shape, v);
    int32_t *w = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++)
        w[i] = (int32_t)v[i];
    fx_tensor *t = tu_from(FX_I32, ndim, shape, w);
    free(w);
    return t;
}

typedef struct {
    int axis;
    fx_tensor *idx;
    bool gather;
} index_case;

static fx_tensor *index_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    index_case *c = arg;
    return c->gather ? fx_gather(ctx, in[0], c->axis, c->idx)
                     : fx_index_select(ctx, in[0], c->axis, c->idx);
}

/* Forward against the definition, written per output element (the
 * gradients of these cases are the registry's index_select and gather
 * rows):
 *   index_select: y[c] = x[c with c[axis] := idx[c[axis]]]
 *   gather:       y[c] = x[c with c[axis] := idx[c]] */
static void check_index(fx_rng *rng, int ndim, const int64_t *xshape, index_case c)
{
    fx_tensor *x = tu_randn(rng, ndim, xshape, 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = index_op(ctx, &x, &c);
    if (!y)
        fail_msg("index op: %s", fx_ctx_error(ctx));
    int a = c.axis < 0 ? c.axis + ndim : c.axis;
    int64_t ni = fx_tensor_numel(c.idx);
    int64_t *iv = malloc((size_t)ni * sizeof(int64_t));
    for (int64_t i = 0; i < ni; i++) {
        fx_tensor one = *c.idx; /* a one-element view, read with item */
        one.ndim = 0;
        one.offset = i;
        iv[i] = (int64_t)fx_tensor_item(&one);
    }
    for (int d = 0; d < ndim; d++)
        assert_int_equal(y->shape[d], c.gather ? c.idx->shape[d]
                                               : (d == a ? c.idx->shape[0] : xshape[d]));
    float *xv = tu_values(x), *yv = tu_values(y);
    for (int64_t i = 0; i < fx_tensor_numel(y); i++) {
        int64_t cc[FX_MAX_DIMS];
        tu_coords_of(ndim, y->shape, i, cc);
        cc[a] = c.gather ? iv[i] : iv[cc[a]];
        assert_true(yv[i] == xv[tu_offset_of(ndim, xshape, cc)]);
    }
    free(iv);
    free(xv);
    free(yv);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

static void test_index_select(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    for (int dt = 0; dt < 2; dt++) {
        fx_dtype t = dt ? FX_I64 : FX_I32;
        fx_tensor *i0 = make_idx(t, 1, TU_SHAPE(4), (int64_t[]){ 2, 0, 2, 1 });
        fx_tensor *i1 = make_idx(t, 1, TU_SHAPE(5), (int64_t[]){ 1, 1, 0, 2, 1 });
        fx_tensor *i2 = make_idx(t, 1, TU_SHAPE(2), (int64_t[]){ 3, 3 });
        check_index(rng, 2, TU_SHAPE(3, 4), (index_case){ 0, i0, false });
        check_index(rng, 3, TU_SHAPE(2, 3, 4), (index_case){ 1, i1, false });
        check_index(rng, 3, TU_SHAPE(2, 3, 4), (index_case){ -1, i2, false });
        check_index(rng, 1, TU_SHAPE(3), (index_case){ 0, i1, false });
        tu_free_all(3, (fx_tensor *[]){ i0, i1, i2 });
    }
    fx_rng_free(rng);
}

static void test_gather(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(2);
    for (int dt = 0; dt < 2; dt++) {
        fx_dtype t = dt ? FX_I64 : FX_I32;
        /* Along the last axis, repeats within a row (cross-entropy's pick). */
        fx_tensor *i0 = make_idx(t, 2, TU_SHAPE(3, 2), (int64_t[]){ 1, 1, 0, 3, 2, 2 });
        /* Along axis 0, idx longer than x there and narrower elsewhere. */
        fx_tensor *i1 = make_idx(t, 3, TU_SHAPE(5, 2, 1),
                                 (int64_t[]){ 0, 2, 2, 1, 0, 0, 1, 2, 2, 2 });
        /* Along the middle axis, a full-size idx. */
        fx_tensor *i2 = make_idx(t, 3, TU_SHAPE(2, 3, 2),
                                 (int64_t[]){ 0, 1, 1, 1, 2, 0, 3, 3, 0, 0, 2, 1 });
        check_index(rng, 2, TU_SHAPE(3, 4), (index_case){ 1, i0, true });
        check_index(rng, 2, TU_SHAPE(3, 4), (index_case){ -1, i0, true });
        check_index(rng, 3, TU_SHAPE(3, 4, 2), (index_case){ 0, i1, true });
        check_index(rng, 3, TU_SHAPE(2, 4, 2), (index_case){ 1, i2, true });
        tu_free_all(3, (fx_tensor *[]){ i0, i1, i2 });
    }
    fx_rng_free(rng);
}

/* An embedding-sized lookup above the parallel grain: the backward count of
 * each row equals how often it was picked. */
static void test_index_large(void **state)
{
    (void)state;
    fx_set_num_threads(2);
    int64_t V = 50, D = 300, N = 400;
    int64_t *iv = malloc((size_t)N * sizeof(int64_t));
    int64_t counts[50] = { 0 };
    for (int64_t i = 0; i < N; i++) {
        iv[i] = (i * 7 + i / 3) % V;
        counts[iv[i]]++;
    }
    fx_tensor *idx = make_idx(FX_I64, 1, TU_SHAPE(N), iv);
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(V, D), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = fx_index_select(ctx, w, 0, idx);
    assert_non_null(y);
    float *wv = tu_values(w), *yv = tu_values(y);
    for (int64_t i = 0; i < N; i++)
        assert_memory_equal(yv + i * D, wv + iv[i] * D, (size_t)D * sizeof(float));
    assert_int_equal(fx_backward(ctx, fx_sum(ctx, y, 0, NULL, false)), FX_OK);
    float *g = tu_values(w->grad);
    for (int64_t v = 0; v < V; v++)
        for (int64_t k = 0; k < D; k++)
            assert_true(g[v * D + k] == (float)counts[v]);
    free(g);
    free(wv);
    free(yv);

    /* gather of [N, D] along axis 1, one pick per row, then its backward. */
    fx_ctx_reset(ctx);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(N, D), 1, 0);
    int64_t *pick = malloc((size_t)N * 4 * sizeof(int64_t));
    for (int64_t i = 0; i < N * 4; i++)
        pick[i] = (i * 13) % D;
    fx_tensor *pidx = make_idx(FX_I32, 2, TU_SHAPE(N, 4), pick);
    fx_tensor *z = fx_gather(ctx, x, 1, pidx);
    assert_non_null(z);
    float *xv = tu_values(x), *zv = tu_values(z);
    for (int64_t i = 0; i < N * 4; i++)
        assert_true(zv[i] == xv[(i / 4) * D + pick[i]]);
    free(xv);
    free(zv);
    free(pick);
    fx_ctx_free(ctx);
    tu_free_all(4, (fx_tensor *[]){ idx, w, x, pidx });
    free(iv);
    fx_rng_free(rng);
}

static void test_index_bad(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(4);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1, 0);
    fx_tensor *far = make_idx(FX_I64, 1, TU_SHAPE(3), (int64_t[]){ 0, 2, 4 });
    fx_tensor *neg = make_idx(FX_I32, 1, TU_SHAPE(2), (int64_t[]){ 1, -1 });
    fx_tensor *g_far = make_idx(FX_I32, 2, TU_SHAPE(2, 2), (int64_t[]){ 0, 1, 7, 2 });
    fx_tensor *two_d = make_idx(FX_I32, 2, TU_SHAPE(1, 2), (int64_t[]){ 0, 1 });
    int64_t zeros[15] = { 0 };
    fx_tensor *wide = make_idx(FX_I32, 2, TU_SHAPE(3, 5), zeros);
    fx_tensor *fidx = tu_randn(rng, 1, TU_SHAPE(2), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());

    /* Out of range: the message names the op, the value and its position. */
    assert_null(fx_index_select(ctx, x, 0, far));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    assert_non_null(strstr(fx_ctx_error(ctx), "index 4"));
    assert_non_null(strstr(fx_ctx_error(ctx), "[2]"));
    expect_fail(ctx, NULL, FX_ERR_VALUE, "index_select");
    expect_fail(ctx, fx_index_select(ctx, x, 1, far), FX_ERR_VALUE, "index_select"); /* 4 of 4 */
    expect_fail(ctx, fx_index_select(ctx, x, 1, neg), FX_ERR_VALUE, "index_select");
    assert_null(fx_gather(ctx, x, 0, g_far));
    assert_non_null(strstr(fx_ctx_error(ctx), "index 7"));
    assert_non_null(strstr(fx_ctx_error(ctx), "[1,0]"));
    expect_fail(ctx, NULL, FX_ERR_VALUE, "gather");

    expect_fail(ctx, fx_index_select(ctx, x, 0, fidx), FX_ERR_DTYPE, "index_select");
    expect_fail(ctx, fx_gather(ctx, x, 0, fidx), FX_ERR_DTYPE, "gather");
    expect_fail(ctx, fx_index_select(ctx, x, 0, two_d), FX_ERR_SHAPE, "index_select");
    expect_fail(ctx, fx_gather(ctx, x, 0, far), FX_ERR_SHAPE, "gather");    /* rank */
    expect_fail(ctx, fx_gather(ctx, x, 0, wide), FX_ERR_SHAPE, "gather");   /* 5 > 4 */
    expect_fail(ctx, fx_index_select(ctx, x, 2, neg), FX_ERR_AXIS, "index_select");
    expect_fail(ctx, fx_gather(ctx, x, -3, two_d), FX_ERR_AXIS, "gather");
    expect_fail(ctx, fx_index_select(ctx, x, 0, NULL), FX_ERR_ARG, "index_select");
    expect_fail(ctx, fx_index_select(ctx, fidx, 0, NULL), FX_ERR_ARG, "index_select");
    assert_null(fx_gather(ctx, NULL, 0, two_d));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    fx_ctx_free(ctx);
    tu_free_all(7, (fx_tensor *[]){ x, far, neg, g_far, two_d, wide, fidx });
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_select),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_index_large),
        cmocka_unit_test(test_index_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
