/* test_reduce.c - what is specific to the reductions and softmax: tensors
 * above the parallel grain against plain loops, max's ties, numerical
 * stability and relative accuracy over the range of exp, the whole-tensor
 * kernels (sum of squares, non-finite count), bad input. Every axis set
 * (keepdim or not, strided input) and softmax axis, forward against the
 * reference, gradient and cross-backend, are the registry's rows
 * (test_ops). */
#include "testutil.h"

#include "backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { R_SUM, R_MEAN, R_MAX };

/* A reduction case: the op, its axes (naxes 0: all), keepdim. */
typedef struct {
    int op, naxes, axes[FX_MAX_DIMS];
    bool keepdim;
} red_case;

static fx_tensor *run_reduce(fx_ctx *ctx, fx_tensor *x, const red_case *c)
{
    switch (c->op) {
    case R_SUM: return fx_sum(ctx, x, c->naxes, c->axes, c->keepdim);
    case R_MEAN: return fx_mean(ctx, x, c->naxes, c->axes, c->keepdim);
    default: return fx_max(ctx, x, c->naxes, c->axes, c->keepdim);
    }
}

/* The reference: every element of x adds into (or maxes) the output element
 * at its coordinates with the reduced ones set to 0. Returns the keepdim
 * shape in kshape and the number of outputs. */
static int64_t reference_reduce(const fx_tensor *x, const float *xv, const red_case *c,
                                float *out, int64_t *kshape)
{
    int nd = x->ndim;
    bool red[FX_MAX_DIMS] = { false };
    for (int d = 0; d < nd; d++)
        red[d] = c->naxes == 0;
    for (int i = 0; i < c->naxes; i++)
        red[c->axes[i] < 0 ? c->axes[i] + nd : c->axes[i]] = true;
    int64_t nout = 1, count = 1;
    for (int d = 0; d < nd; d++) {
        kshape[d] = red[d] ? 1 : x->shape[d];
        nout *= kshape[d];
        count *= red[d] ? x->shape[d] : 1;
    }
    double *acc = calloc((size_t)nout, sizeof(double));
    for (int64_t o = 0; o < nout; o++)
        acc[o] = c->op == R_MAX ? -INFINITY : 0.0;
    int64_t n = fx_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, o = 0, mul = 1;
        for (int d = nd - 1; d >= 0; d--) {
            int64_t coord = rem % x->shape[d];
            rem /= x->shape[d];
            o += (red[d] ? 0 : coord) * mul;
            mul *= kshape[d];
        }
        if (c->op == R_MAX)
            acc[o] = fmax(acc[o], xv[i]);
        else
            acc[o] += xv[i];
    }
    for (int64_t o = 0; o < nout; o++)
        out[o] = (float)(c->op == R_MEAN ? acc[o] / (double)count : acc[o]);
    free(acc);
    return nout;
}

/* A persistent tensor holding a shuffled ramp: distinct values spaced by
 * 0.05, so max has no ties and finite differences never swap the maximum. */
static fx_tensor *distinct(fx_rng *rng, int ndim, const int64_t *shape)
{
    fx_tensor *t = tu_randn(rng, ndim, shape, 1, 0);
    int64_t n = fx_tensor_numel(t);
    float *v = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(0.05 * (double)i - 0.025 * (double)n);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(fx_rng_u64(rng) % (uint64_t)(i + 1));
        float tmp = v[i];
        v[i] = v[j];
        v[j] = tmp;
    }
    assert_int_equal(fx_tensor_copy_from_host(t, v, (size_t)n * sizeof(float)), FX_OK);
    free(v);
    return t;
}

/* Checks one case: output shape (keepdim or squeezed) and values against
 * the reference. */
static void check_case(fx_rng *rng, int ndim, const int64_t *shape, const red_case *c)
{
    fx_tensor *x = distinct(rng, ndim, shape);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = run_reduce(ctx, x, c);
    if (!y)
        fail_msg("op %d: %s", c->op, fx_ctx_error(ctx));
    float *xv = tu_values(x), *yv = tu_values(y);
    int64_t kshape[FX_MAX_DIMS];
    float *ref = malloc((size_t)fx_tensor_numel(x) * sizeof(float) + sizeof(float));
    int64_t nout = reference_reduce(x, xv, c, ref, kshape);
    assert_int_equal(fx_tensor_numel(y), nout);
    int k = 0; /* the expected output dims: kshape, without reduced dims unless keepdim */
    for (int d = 0; d < ndim; d++) {
        bool reduced = c->naxes == 0;
        for (int i = 0; i < c->naxes; i++)
            reduced |= (c->axes[i] < 0 ? c->axes[i] + ndim : c->axes[i]) == d;
        if (c->keepdim || !reduced)
            assert_int_equal(y->shape[k++], kshape[d]);
    }
    assert_int_equal(y->ndim, k);
    for (int64_t i = 0; i < nout; i++)
        if (!(fabs((double)yv[i] - ref[i]) <= 1e-5 * fmax(1.0, fabs(ref[i]))))
            fail_msg("op %d output %lld: %.8g vs reference %.8g", c->op, (long long)i, yv[i],
                     ref[i]);
    free(xv);
    free(yv);
    free(ref);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

/* Tensors above the parallel grain, through every fast path and the general
 * walk (forward only; the kernels' backward shares the geometry). */
static void test_reduce_large(void **state)
{
    (void)state;
    fx_set_num_threads(2);
    struct {
        int ndim;
        int64_t shape[3];
        int naxes, axes[2];
    } cases[] = {
        { 2, { 300, 500 }, 0, { 0 } }, { 2, { 300, 500 }, 1, { 0 } },
        { 2, { 300, 500 }, 1, { 1 } }, { 2, { 3, 60000 }, 1, { 1 } },
        { 3, { 20, 50, 60 }, 1, { 1 } }, { 3, { 20, 50, 60 }, 2, { 0, 2 } },
    };
    fx_rng *rng = fx_rng_create(8);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (int op = R_SUM; op <= R_MAX; op++) {
            red_case c = { .op = op, .naxes = cases[i].naxes, .keepdim = false };
            memcpy(c.axes, cases[i].axes, sizeof cases[i].axes);
            check_case(rng, cases[i].ndim, cases[i].shape, &c);
        }
    fx_rng_free(rng);
}

/* max's gradient goes only to the maximum, and argmax follows the first of
 * tied maxima; checked by seeding backward with ones. */
static void test_max_grad_ties(void **state)
{
    (void)state;
    float v[6] = { 1, 3, 3, 2, -1, 2 };
    fx_tensor *x = tu_from(FX_F32, 2, TU_SHAPE(2, 3), v);
    assert_int_equal(fx_tensor_set_requires_grad(x, true), FX_OK);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = fx_max(ctx, x, 1, (int[]){ 1 }, false);
    assert_non_null(y);
    float yv[2];
    assert_int_equal(fx_tensor_to_host(y, yv, sizeof yv), FX_OK);
    assert_true(yv[0] == 3.0f && yv[1] == 2.0f);
    assert_int_equal(fx_backward_seed(ctx, y, fx_full(ctx, FX_F32, 1, TU_SHAPE(2), 1.0)), FX_OK);
    float g[6], want[6] = { 0, 1, 0, 1, 0, 0 };
    assert_int_equal(fx_tensor_to_host(x->grad, g, sizeof g), FX_OK);
    tu_assert_close(g, want, 6, 0);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

/* ---------------------------------------------------------------- softmax */

typedef struct {
    int axis;
    bool log;
} sm_case;

static fx_tensor *softmax_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    sm_case *c = arg;
    return c->log ? fx_log_softmax(ctx, in[0], c->axis) : fx_softmax(ctx, in[0], c->axis);
}

/* softmax along axis of x (any rank), in double, straight from the
 * definition with the max subtracted. */
static void reference_softmax(const fx_tensor *x, const float *xv, int axis, bool lg, float *out)
{
    int nd = x->ndim;
    if (axis < 0)
        axis += nd;
    int64_t O = 1, A = x->shape[axis], I = 1;
    for (int d = 0; d < axis; d++)
        O *= x->shape[d];
    for (int d = axis + 1; d < nd; d++)
        I *= x->shape[d];
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++) {
            double m = -INFINITY, s = 0;
            for (int64_t a = 0; a < A; a++)
                m = fmax(m, xv[(o * A + a) * I + i]);
            for (int64_t a = 0; a < A; a++)
                s += exp(xv[(o * A + a) * I + i] - m);
            for (int64_t a = 0; a < A; a++) {
                double v = xv[(o * A + a) * I + i] - m;
                out[(o * A + a) * I + i] = (float)(lg ? v - log(s) : exp(v) / s);
            }
        }
}

static void check_softmax(fx_rng *rng, int ndim, const int64_t *shape, sm_case c, double shift)
{
    fx_tensor *x = tu_randn(rng, ndim, shape, 2.0, shift);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = softmax_op(ctx, &x, &c);
    if (!y)
        fail_msg("softmax: %s", fx_ctx_error(ctx));
    assert_true(fx_tensor_same_shape(x, y));
    int64_t n = fx_tensor_numel(x);
    float *xv = tu_values(x), *yv = tu_values(y), *ref = malloc((size_t)n * sizeof(float));
    reference_softmax(x, xv, c.axis, c.log, ref);
    tu_assert_close(yv, ref, n, 1e-5);
    free(xv);
    free(yv);
    free(ref);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

/* Large logits do not overflow (the max is subtracted), and tensors above
 * the parallel grain go through both the row and the tiled path. */
static void test_softmax_stable_and_large(void **state)
{
    (void)state;
    fx_set_num_threads(2);
    fx_rng *rng = fx_rng_create(11);
    for (int lg = 0; lg < 2; lg++) {
        check_softmax(rng, 2, TU_SHAPE(3, 8), (sm_case){ -1, lg }, 1000.0);
        check_softmax(rng, 2, TU_SHAPE(8, 3), (sm_case){ 0, lg }, -1000.0);
        check_softmax(rng, 2, TU_SHAPE(200, 300), (sm_case){ 1, lg }, 0.0);
        check_softmax(rng, 3, TU_SHAPE(10, 40, 150), (sm_case){ 1, lg }, 0.0);
    }
    fx_rng_free(rng);
}

/* Every softmax output is within a small relative error of the exact value,
 * across the whole range of exp (x - max from 0 down to -86), both as one
 * contiguous row and as a column (the tiled path); -inf entries (masks) give
 * exactly 0 and their log_softmax fails as not finite. */
static void test_softmax_relative_accuracy(void **state)
{
    (void)state;
    enum { N = 4301 };
    float *v = malloc(N * sizeof(float)), *ref = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++)
        v[i] = -86.0f + 0.02f * (float)((i * 37) % N); /* shuffled ramp up to 0 */
    fx_tensor tmp = { .ndim = 1, .shape = { N } };
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (int axis = 0; axis < 2; axis++) {
        int64_t shape[2] = { axis ? 1 : N, axis ? N : 1 };
        fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, shape, v);
        for (int lg = 0; lg < 2; lg++) {
            fx_tensor *y = lg ? fx_log_softmax(ctx, x, axis) : fx_softmax(ctx, x, axis);
            assert_non_null(y);
            float *yv = tu_values(y);
            reference_softmax(&tmp, v, 0, lg, ref);
            for (int i = 0; i < N; i++)
                if (!(fabs((double)yv[i] - ref[i]) <= 1e-5 * fabs(ref[i]) + (lg ? 1e-5 : 1e-37)))
                    fail_msg("axis %d log %d element %d (x %g): %.9g vs %.9g", axis, lg, i,
                             v[i], yv[i], ref[i]);
            free(yv);
        }
    }
    float masked[4] = { 0.5f, -INFINITY, 2.0f, -INFINITY };
    fx_tensor *xm = fx_tensor_from_host(ctx, FX_F32, 1, TU_SHAPE(4), masked);
    fx_tensor *ym = fx_softmax(ctx, xm, 0);
    assert_non_null(ym);
    float yv[4], e = expf(-1.5f), want[4] = { e / (1 + e), 0, 1 / (1 + e), 0 };
    assert_int_equal(fx_tensor_to_host(ym, yv, sizeof yv), FX_OK);
    tu_assert_close(yv, want, 4, 1e-6);
    assert_true(yv[1] == 0.0f && yv[3] == 0.0f);
    assert_null(fx_log_softmax(ctx, xm, 0));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    fx_ctx_free(ctx);
    free(v);
    free(ref);
}

/* A softmax row sums to 1 and its gradient against a constant upstream is
 * zero (the outputs' sum does not change). */
static void test_softmax_rows_sum_to_one(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(12);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(4, 6), 3.0, 0.0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *s = fx_sum(ctx, fx_softmax(ctx, x, 1), 1, (int[]){ 1 }, false);
    assert_non_null(s);
    float sv[4], ones[4] = { 1, 1, 1, 1 };
    assert_int_equal(fx_tensor_to_host(s, sv, sizeof sv), FX_OK);
    tu_assert_close(sv, ones, 4, 1e-5);
    assert_int_equal(fx_backward(ctx, fx_sum(ctx, s, 0, NULL, false)), FX_OK);
    float *g = tu_values(x->grad), zeros[24] = { 0 };
    tu_assert_close(g, zeros, 24, 1e-6);
    free(g);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

/* ------------------------------------------------------ whole-tensor sums */

static void test_sum_squares_and_nonfinite(void **state)
{
    (void)state;
    fx_set_num_threads(2);
    const fx_reduce_kernels *k = fx__backend_for(fx_cpu())->red;
    int64_t n = 100003;
    float *v = malloc((size_t)n * sizeof(float));
    double want = 0;
    for (int64_t i = 0; i < n; i++) {
        v[i] = (float)((i % 17) - 8) * 0.25f;
        want += (double)v[i] * v[i];
    }
    fx_tensor *x = tu_from(FX_F32, 1, TU_SHAPE(n), v);
    assert_true(fabs(k->sum_squares(x) - want) <= 1e-9 * want);
    assert_int_equal(k->count_nonfinite(x), 0);
    v[5] = NAN;
    v[n - 1] = INFINITY;
    v[n / 2] = -INFINITY;
    assert_int_equal(fx_tensor_copy_from_host(x, v, (size_t)n * sizeof(float)), FX_OK);
    assert_int_equal(k->count_nonfinite(x), 3);

    /* A strided view (every other column of a 4 x 6 matrix). */
    float m[24];
    double want2 = 0;
    for (int i = 0; i < 24; i++) {
        m[i] = (float)i - 11.5f;
        if ((i % 6) % 2 == 0)
            want2 += (double)m[i] * m[i];
    }
    m[1] = NAN; /* not in the view */
    m[2] = INFINITY;
    fx_tensor *mt = tu_from(FX_F32, 2, TU_SHAPE(4, 6), m);
    fx_tensor view = *mt;
    view.shape[1] = 3;
    view.strides[1] = 2;
    assert_int_equal(k->count_nonfinite(&view), 1);
    m[2] = 2.0f - 11.5f;
    assert_int_equal(fx_tensor_copy_from_host(mt, m, sizeof m), FX_OK);
    assert_true(fabs(k->sum_squares(&view) - want2) <= 1e-9 * want2);
    fx_tensor_free(mt);
    fx_tensor_free(x);
    free(v);
}

/* -------------------------------------------------------------- bad input */

static void expect_fail(fx_ctx *ctx, fx_tensor *y, fx_status s, const char *op)
{
    assert_null(y);
    assert_int_equal(fx_ctx_status(ctx), s);
    if (strncmp(fx_ctx_error(ctx), op, strlen(op)) != 0)
        fail_msg("message '%s' does not name %s", fx_ctx_error(ctx), op);
    fx_ctx_clear_error(ctx);
}

static void test_reduce_bad_input(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(13);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    expect_fail(ctx, fx_sum(ctx, x, 1, (int[]){ 2 }, false), FX_ERR_AXIS, "sum");
    expect_fail(ctx, fx_mean(ctx, x, 1, (int[]){ -3 }, false), FX_ERR_AXIS, "mean");
    expect_fail(ctx, fx_max(ctx, x, 2, (int[]){ 1, -1 }, false), FX_ERR_AXIS, "max");
    expect_fail(ctx, fx_sum(ctx, x, 3, (int[]){ 0, 1, 0 }, false), FX_ERR_AXIS, "sum");
    expect_fail(ctx, fx_sum(ctx, x, 1, NULL, false), FX_ERR_ARG, "sum");
    expect_fail(ctx, fx_sum(ctx, x, -1, (int[]){ 0 }, false), FX_ERR_ARG, "sum");
    expect_fail(ctx, fx_softmax(ctx, x, 2), FX_ERR_AXIS, "softmax");
    expect_fail(ctx, fx_log_softmax(ctx, x, -3), FX_ERR_AXIS, "log_softmax");

    fx_tensor *empty = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(3, 0));
    expect_fail(ctx, fx_max(ctx, empty, 1, (int[]){ 1 }, false), FX_ERR_SHAPE, "max");
    fx_tensor *s = fx_sum(ctx, empty, 1, (int[]){ 1 }, false); /* an empty sum is 0 */
    assert_non_null(s);
    float sv[3] = { 1, 1, 1 }, zeros[3] = { 0 };
    assert_int_equal(fx_tensor_to_host(s, sv, sizeof sv), FX_OK);
    tu_assert_close(sv, zeros, 3, 0);

    int32_t iv[2] = { 1, 2 };
    fx_tensor *ints = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(2), iv);
    expect_fail(ctx, fx_sum(ctx, ints, 0, NULL, false), FX_ERR_DTYPE, "sum");

    float inf[3] = { 1, INFINITY, 2 };
    fx_tensor *xi = fx_tensor_from_host(ctx, FX_F32, 1, TU_SHAPE(3), inf);
    expect_fail(ctx, fx_softmax(ctx, xi, 0), FX_ERR_VALUE, "softmax");
    expect_fail(ctx, fx_sum(ctx, xi, 0, NULL, false), FX_ERR_VALUE, "sum");

    /* NULL in, NULL out, and the first error is kept. */
    assert_null(fx_sum(ctx, NULL, 0, NULL, false));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    fx_ctx_clear_error(ctx);
    fx_sum(ctx, x, 1, (int[]){ 5 }, false);
    assert_null(fx_softmax(ctx, NULL, 0));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_AXIS);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reduce_large),
        cmocka_unit_test(test_max_grad_ties),
        cmocka_unit_test(test_softmax_stable_and_large),
        cmocka_unit_test(test_softmax_relative_accuracy),
        cmocka_unit_test(test_softmax_rows_sum_to_one),
        cmocka_unit_test(test_sum_squares_and_nonfinite),
        cmocka_unit_test(test_reduce_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
