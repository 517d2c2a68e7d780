/* test_loss.c - losses: forward values against references computed here in
 * double for every reduction, numerical stability at extreme logits, the
 * parallel path, and bad inputs. Their gradient checks for every reduction
 * and cross-backend comparisons are the registry's loss rows (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const fx_reduction REDS[3] = { FX_MEAN, FX_SUM, FX_NONE };

/* ------------------------------------------------------------ references */

/* log(sum exp(x[0..C))) in double, max-shifted. */
static double ref_lse(const float *x, int64_t C)
{
    double m = x[0], s = 0.0;
    for (int64_t c = 1; c < C; c++)
        m = fmax(m, x[c]);
    for (int64_t c = 0; c < C; c++)
        s += exp((double)x[c] - m);
    return m + log(s);
}

/* Reduces per-element reference losses as r asks (into out[0] unless NONE). */
static int64_t ref_reduce(double *per, int64_t n, fx_reduction r)
{
    if (r == FX_NONE)
        return n;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += per[i];
    per[0] = r == FX_SUM ? s : s / (double)n;
    return 1;
}

/* Compares a loss tensor with reference values (relative + absolute tol). */
static void assert_loss(const fx_tensor *loss, const double *ref, int64_t n, fx_reduction r)
{
    assert_non_null(loss);
    assert_int_equal(fx_tensor_numel(loss), n);
    assert_int_equal(loss->ndim, r == FX_NONE ? loss->ndim : 0);
    float *v = tu_values(loss);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(v[i] - ref[i]) <= 1e-5 + 1e-5 * fabs(ref[i])))
            fail_msg("loss %lld: %.8g vs reference %.8g", (long long)i, v[i], ref[i]);
    free(v);
}

/* ---------------------------------------------------------- cross-entropy */

/* Labels in [0, C) from the rng, in the dtype asked for. */
static fx_tensor *make_labels(fx_rng *rng, fx_dtype dt, int64_t N, int64_t C, int64_t *out)
{
    int32_t l32[64];
    int64_t l64[64];
    for (int64_t n = 0; n < N; n++) {
        out[n] = (int64_t)(fx_rng_uniform(rng) * (double)C);
        l32[n] = (int32_t)out[n];
        l64[n] = out[n];
    }
    return tu_from(dt, 1, TU_SHAPE(N), dt == FX_I32 ? (void *)l32 : (void *)l64);
}

static void test_ce_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(7);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t shapes[][2] = { { 5, 4 }, { 3, 7 }, { 1, 1 }, { 8, 2 } };
    for (int s = 0; s < 4; s++) {
        int64_t N = shapes[s][0], C = shapes[s][1], lab[64];
        fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(N, C), 3.0, 0.5);
        fx_tensor *y = make_labels(rng, s % 2 ? FX_I64 : FX_I32, N, C, lab);
        float *xv = tu_values(x);
        for (int k = 0; k < 3; k++) {
            double ref[64];
            for (int64_t n = 0; n < N; n++)
                ref[n] = ref_lse(xv + n * C, C) - xv[n * C + lab[n]];
            int64_t m = ref_reduce(ref, N, REDS[k]);
            fx_tensor *loss = fx_cross_entropy(ctx, x, y, REDS[k]);
            if (!loss)
                fail_msg("cross_entropy: %s", fx_ctx_error(ctx));
            assert_loss(loss, ref, m, REDS[k]);
            if (REDS[k] == FX_NONE)
                assert_int_equal(loss->shape[0], N);
            fx_ctx_reset(ctx);
        }
        free(xv);
        fx_tensor_free(x);
        fx_tensor_free(y);
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Extreme logits: a naive exp would overflow to inf. */
static void test_ce_stability(void **state)
{
    (void)state;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    float xv[6] = { 1000.0f, 0.0f, -1000.0f, 88.0f, 89.0f, 90.0f };
    int32_t lab[2] = { 1, 2 };
    fx_tensor *x = tu_from(FX_F32, 2, TU_SHAPE(2, 3), xv);
    fx_tensor_set_requires_grad(x, true);
    fx_tensor *y = tu_from(FX_I32, 1, TU_SHAPE(2), lab);
    fx_tensor *loss = fx_cross_entropy(ctx, x, y, FX_NONE);
    assert_non_null(loss);
    float *l = tu_values(loss);
    double lse1 = 90.0 + log(exp(-2.0) + exp(-1.0) + 1.0);
    assert_float_equal(l[0], 1000.0, 1e-3);
    assert_float_equal(l[1], lse1 - 90.0, 1e-5);
    free(l);
    /* gradient of the mean: (softmax - onehot) / N, finite everywhere */
    loss = fx_cross_entropy(ctx, x, y, FX_MEAN);
    assert_int_equal(fx_backward(ctx, loss), FX_OK);
    float *g = tu_values(x->grad);
    double want[6] = { 0.5, -0.5, 0.0 };
    for (int c = 0; c < 3; c++)
        want[3 + c] = (exp(xv[3 + c] - lse1) - (c == 2)) / 2.0;
    tu_assert_close(g, (float[]){ (float)want[0], (float)want[1], (float)want[2],
                                  (float)want[3], (float)want[4], (float)want[5] }, 6, 1e-6);
    free(g);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_tensor_free(y);
}

/* N*C above the kernels' parallel grain, with two threads. */
static void test_ce_parallel(void **state)
{
    (void)state;
    fx_set_num_threads(2);
    fx_rng *rng = fx_rng_create(5);
    int64_t N = 64, C = 700, lab[64];
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(N, C), 2.0, 0.0);
    fx_tensor *y = make_labels(rng, FX_I64, N, C, lab);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *loss = fx_cross_entropy(ctx, x, y, FX_SUM);
    assert_non_null(loss);
    float *xv = tu_values(x);
    double ref[64];
    for (int64_t n = 0; n < N; n++)
        ref[n] = ref_lse(xv + n * C, C) - xv[n * C + lab[n]];
    ref_reduce(ref, N, FX_SUM);
    assert_float_equal(fx_tensor_item(loss), ref[0], 1e-5 * fabs(ref[0]));
    /* the gradient rows each sum to zero (softmax minus one-hot) */
    assert_int_equal(fx_backward(ctx, loss), FX_OK);
    float *g = tu_values(x->grad);
    for (int64_t n = 0; n < N; n++) {
        double s = 0.0;
        for (int64_t c = 0; c < C; c++)
            s += g[n * C + c];
        assert_float_equal(s, 0.0, 1e-5);
        double want = exp(xv[n * C + lab[n]] - (ref_lse(xv + n * C, C))) - 1.0;
        assert_float_equal(g[n * C + lab[n]], want, 1e-5);
    }
    free(g);
    free(xv);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_tensor_free(y);
    fx_rng_free(rng);
    fx_set_num_threads(1);
}

/* ---------------------------------------------- cross-entropy, soft targets */

/* Random probabilities (rows sum to 1 when normalise, else arbitrary in
 * (0, 1)), persistent with grad. */
static fx_tensor *make_probs(fx_rng *rng, int64_t N, int64_t C, bool normalise)
{
    fx_tensor *p = tu_uniform(rng, 2, TU_SHAPE(N, C), 0.05, 1.0);
    if (!normalise)
        return p;
    float *v = tu_values(p);
    for (int64_t n = 0; n < N; n++) {
        double s = 0.0;
        for (int64_t c = 0; c < C; c++)
            s += v[n * C + c];
        for (int64_t c = 0; c < C; c++)
            v[n * C + c] = (float)(v[n * C + c] / s);
    }
    fx_tensor_copy_from_host(p, v, (size_t)(N * C) * sizeof(float));
    free(v);
    return p;
}

static void test_ce_soft_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t shapes[][2] = { { 4, 5 }, { 1, 3 }, { 6, 1 } };
    for (int s = 0; s < 3; s++) {
        int64_t N = shapes[s][0], C = shapes[s][1];
        fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(N, C), 2.0, 0.0);
        fx_tensor *p = make_probs(rng, N, C, s != 1);
        float *xv = tu_values(x), *pv = tu_values(p);
        for (int k = 0; k < 3; k++) {
            double ref[64];
            for (int64_t n = 0; n < N; n++) {
                double lse = ref_lse(xv + n * C, C);
                ref[n] = 0.0;
                for (int64_t c = 0; c < C; c++)
                    ref[n] -= pv[n * C + c] * (xv[n * C + c] - lse);
            }
            int64_t m = ref_reduce(ref, N, REDS[k]);
            fx_tensor *loss = fx_cross_entropy_soft(ctx, x, p, REDS[k]);
            if (!loss)
                fail_msg("cross_entropy_soft: %s", fx_ctx_error(ctx));
            assert_loss(loss, ref, m, REDS[k]);
            fx_ctx_reset(ctx);
        }
        free(xv);
        free(pv);
        fx_tensor_free(x);
        fx_tensor_free(p);
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Soft CE with one-hot targets equals CE with labels. */
static void test_ce_soft_matches_labels(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(9);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);
    int32_t lab[3] = { 3, 0, 2 };
    float onehot[12] = { 0 };
    for (int n = 0; n < 3; n++)
        onehot[n * 4 + lab[n]] = 1.0f;
    fx_tensor *y = tu_from(FX_I32, 1, TU_SHAPE(3), lab);
    fx_tensor *p = tu_from(FX_F32, 2, TU_SHAPE(3, 4), onehot);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    double a = fx_tensor_item(fx_cross_entropy(ctx, x, y, FX_MEAN));
    double b = fx_tensor_item(fx_cross_entropy_soft(ctx, x, p, FX_MEAN));
    assert_float_equal(a, b, 1e-6);
    fx_ctx_free(ctx);
    tu_free_all(3, (fx_tensor *[]){ x, y, p });
    fx_rng_free(rng);
}

/* ------------------------------------------------------------------- BCE */

static double ref_bce(double x, double t)
{
    /* log(1 + e^x) - x t, written for |x| large on either side */
    double sp = x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
    return sp - x * t;
}

static void test_bce_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(17);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t shapes[][3] = { { 6, 0, 0 }, { 3, 4, 0 }, { 2, 3, 2 } };
    for (int s = 0; s < 3; s++) {
        int nd = shapes[s][2] ? 3 : shapes[s][1] ? 2 : 1;
        fx_tensor *x = tu_randn(rng, nd, shapes[s], 3.0, 0.0);
        fx_tensor *t = tu_uniform(rng, nd, shapes[s], 0.0, 1.0);
        int64_t n = fx_tensor_numel(x);
        float *xv = tu_values(x), *tv = tu_values(t);
        for (int k = 0; k < 3; k++) {
            double ref[64];
            for (int64_t i = 0; i < n; i++)
                ref[i] = ref_bce(xv[i], tv[i]);
            int64_t m = ref_reduce(ref, n, REDS[k]);
            fx_tensor *loss = fx_bce_with_logits(ctx, x, t, REDS[k]);
            if (!loss)
                fail_msg("bce_with_logits: %s", fx_ctx_error(ctx));
            assert_loss(loss, ref, m, REDS[k]);
            if (REDS[k] == FX_NONE)
                assert_true(fx_tensor_same_shape(loss, x));
            fx_ctx_reset(ctx);
        }
        free(xv);
        free(tv);
        fx_tensor_free(x);
        fx_tensor_free(t);
    }
    /* extreme logits stay finite and exact */
    float xv[4] = { 100.0f, -100.0f, 100.0f, -100.0f }, tv[4] = { 0.0f, 1.0f, 1.0f, 0.0f };
    fx_tensor *x = tu_from(FX_F32, 1, TU_SHAPE(4), xv);
    fx_tensor *t = tu_from(FX_F32, 1, TU_SHAPE(4), tv);
    float *l = tu_values(fx_bce_with_logits(ctx, x, t, FX_NONE));
    tu_assert_close(l, (float[]){ 100.0f, 100.0f, 0.0f, 0.0f }, 4, 1e-5);
    free(l);
    fx_ctx_free(ctx);
    tu_free_all(2, (fx_tensor *[]){ x, t });
    fx_rng_free(rng);
}

/* ------------------------------------------------------------------- MSE */

static void test_mse(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(23);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *p = tu_randn(rng, 2, TU_SHAPE(3, 5), 1.0, 0.0);
    fx_tensor *t = tu_randn(rng, 2, TU_SHAPE(3, 5), 1.0, 0.5);
    float *pv = tu_values(p), *tv = tu_values(t);
    for (int k = 0; k < 3; k++) {
        double ref[15];
        for (int i = 0; i < 15; i++)
            ref[i] = ((double)pv[i] - tv[i]) * ((double)pv[i] - tv[i]);
        int64_t m = ref_reduce(ref, 15, REDS[k]);
        fx_tensor *loss = fx_mse_loss(ctx, p, t, REDS[k]);
        if (!loss)
            fail_msg("mse_loss: %s", fx_ctx_error(ctx));
        assert_loss(loss, ref, m, REDS[k]);
        fx_ctx_reset(ctx);
    }
    free(pv);
    free(tv);
    fx_ctx_free(ctx);
    tu_free_all(2, (fx_tensor *[]){ p, t });
    fx_rng_free(rng);
}

/* ------------------------------------------------------------ bad inputs */

/* Asserts the context failed with status s and a message containing each
 * of the NULL-terminated fragments; then clears the error. */
static void expect_error(fx_ctx *ctx, fx_tensor *result, fx_status s, ...)
{
    assert_null(result);
    if (fx_ctx_status(ctx) != s)
        fail_msg("status %s, wanted %s: %s", fx_status_name(fx_ctx_status(ctx)),
                 fx_status_name(s), fx_ctx_error(ctx));
    va_list ap;
    va_start(ap, s);
    for (const char *f; (f = va_arg(ap, const char *));)
        if (!strstr(fx_ctx_error(ctx), f))
            fail_msg("message '%s' does not contain '%s'", fx_ctx_error(ctx), f);
    va_end(ap);
    fx_ctx_clear_error(ctx);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(31);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);
    fx_tensor *x3 = tu_randn(rng, 3, TU_SHAPE(3, 4, 1), 1.0, 0.0);
    fx_tensor *p5 = tu_uniform(rng, 2, TU_SHAPE(3, 5), 0.0, 1.0);
    int32_t good[3] = { 0, 3, 1 }, high[3] = { 0, 1, 7 }, neg[3] = { -1, 0, 0 };
    float fl[3] = { 0, 1, 2 };
    fx_tensor *y = tu_from(FX_I32, 1, TU_SHAPE(3), good);
    fx_tensor *yhigh = tu_from(FX_I32, 1, TU_SHAPE(3), high);
    fx_tensor *yneg = tu_from(FX_I32, 1, TU_SHAPE(3), neg);
    fx_tensor *yf = tu_from(FX_F32, 1, TU_SHAPE(3), fl);
    fx_tensor *y2 = tu_from(FX_I32, 1, TU_SHAPE(2), good);

    expect_error(ctx, fx_cross_entropy(ctx, x, yf, FX_MEAN), FX_ERR_DTYPE, "cross_entropy",
                 "i32 or i64", "f32", NULL);
    expect_error(ctx, fx_cross_entropy(ctx, x, yhigh, FX_MEAN), FX_ERR_VALUE, "cross_entropy",
                 "label 7", "sample 2", "[0, 4)", NULL);
    expect_error(ctx, fx_cross_entropy(ctx, x, yneg, FX_NONE), FX_ERR_VALUE, "label -1",
                 "sample 0", NULL);
    expect_error(ctx, fx_cross_entropy(ctx, x, y2, FX_MEAN), FX_ERR_SHAPE, "cross_entropy",
                 "[3]", "[3,4]", "[2]", NULL);
    expect_error(ctx, fx_cross_entropy(ctx, x3, y, FX_MEAN), FX_ERR_SHAPE, "cross_entropy",
                 "[N,C]", "[3,4,1]", NULL);
    expect_error(ctx, fx_cross_entropy(ctx, y, y, FX_MEAN), FX_ERR_DTYPE, "cross_entropy", NULL);
    expect_error(ctx, fx_cross_entropy(ctx, x, y, (fx_reduction)7), FX_ERR_ARG,
                 "cross_entropy", "reduction", NULL);
    expect_error(ctx, fx_cross_entropy_soft(ctx, x, p5, FX_MEAN), FX_ERR_SHAPE,
                 "cross_entropy_soft", "[3,4]", "[3,5]", NULL);
    expect_error(ctx, fx_cross_entropy_soft(ctx, x3, x3, FX_MEAN), FX_ERR_SHAPE,
                 "cross_entropy_soft", "[N,C]", NULL);
    expect_error(ctx, fx_bce_with_logits(ctx, x, p5, FX_SUM), FX_ERR_SHAPE, "bce_with_logits",
                 "[3,4]", "[3,5]", NULL);
    expect_error(ctx, fx_mse_loss(ctx, x, x3, FX_SUM), FX_ERR_SHAPE, "mse_loss", "[3,4]",
                 "[3,4,1]", NULL);
    expect_error(ctx, fx_mse_loss(ctx, x, yf, FX_SUM), FX_ERR_SHAPE, "mse_loss", "[3]", NULL);
    expect_error(ctx, fx_mse_loss(ctx, y, y, FX_SUM), FX_ERR_DTYPE, "mse_loss", NULL);

    /* a NULL input propagates without replacing the first error */
    fx_ctx_fail(ctx, FX_ERR_SHAPE, "earlier failure");
    assert_null(fx_cross_entropy(ctx, NULL, y, FX_MEAN));
    assert_null(fx_cross_entropy(ctx, x, NULL, FX_MEAN));
    assert_null(fx_bce_with_logits(ctx, NULL, x, FX_MEAN));
    assert_null(fx_mse_loss(ctx, x, NULL, FX_MEAN));
    assert_string_equal(fx_ctx_error(ctx), "earlier failure");
    fx_ctx_clear_error(ctx);
    assert_null(fx_cross_entropy_soft(ctx, x, NULL, FX_MEAN));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    fx_ctx_clear_error(ctx);

    /* non-finite logits give a non-finite loss: refused, naming the loss */
    float bad[12] = { 0, 1, 2, 3, INFINITY, 0, 0, 0, 1, 1, 1, NAN };
    fx_tensor *xb = tu_from(FX_F32, 2, TU_SHAPE(3, 4), bad);
    expect_error(ctx, fx_cross_entropy(ctx, xb, y, FX_MEAN), FX_ERR_VALUE, "cross_entropy",
                 "not finite", NULL);
    expect_error(ctx, fx_cross_entropy_soft(ctx, xb, x, FX_NONE), FX_ERR_VALUE,
                 "cross_entropy_soft", "not finite", NULL);
    expect_error(ctx, fx_bce_with_logits(ctx, xb, x, FX_SUM), FX_ERR_VALUE, "bce_with_logits",
                 "not finite", NULL);
    expect_error(ctx, fx_mse_loss(ctx, xb, x, FX_NONE), FX_ERR_VALUE, NULL);

    /* the mean over an empty batch is undefined; the sum is 0 */
    fx_tensor *e = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(0, 4));
    fx_tensor *ye = fx_zeros(ctx, FX_I32, 1, TU_SHAPE(0));
    expect_error(ctx, fx_cross_entropy(ctx, e, ye, FX_MEAN), FX_ERR_SHAPE, "cross_entropy",
                 "empty", NULL);
    e = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(0, 4));
    ye = fx_zeros(ctx, FX_I32, 1, TU_SHAPE(0));
    fx_tensor *s = fx_cross_entropy(ctx, e, ye, FX_SUM);
    assert_non_null(s);
    assert_float_equal(fx_tensor_item(s), 0.0, 0.0);

    fx_ctx_free(ctx);
    tu_free_all(9, (fx_tensor *[]){ x, x3, p5, y, yhigh, yneg, yf, y2, xb });
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ce_forward),
        cmocka_unit_test(test_ce_stability),
        cmocka_unit_test(test_ce_parallel),
        cmocka_unit_test(test_ce_soft_forward),
        cmocka_unit_test(test_ce_soft_matches_labels),
        cmocka_unit_test(test_bce_forward),
        cmocka_unit_test(test_mse),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
