/* test_elementwise.c - what is specific to the elementwise ops: dropout's
 * mask statistics and modes, refused inputs and their messages. Every
 * elementwise op's forward against its reference, its gradient check and
 * its cross-backend comparison are rows of the op registry (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* erf and the exact gelu in their tails, where the registry's fill (|x| in
 * [0.2, 2]) does not go: saturated values, no NaN from 1 + erf(-big)'s
 * cancellation, gradients that vanish (or tend to 1) rather than overflow;
 * and their values at 0 and +-1 against doubles. */
static void test_erf_tails(void **state)
{
    (void)state;
    const float xs[] = { -30.0f, -9.0f, -1.0f, 0.0f, 1.0f, 9.0f, 30.0f };
    enum { N = sizeof xs / sizeof xs[0] };
    for (int g = 0; g < 2; g++) {
        fx_tensor *x = tu_from(FX_F32, 1, TU_SHAPE(N), xs);
        assert_int_equal(fx_tensor_set_requires_grad(x, true), FX_OK);
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        fx_tensor *y = g ? fx_gelu_exact(ctx, x) : fx_erf(ctx, x);
        assert_non_null(y);
        assert_int_equal(fx_backward_seed(ctx, y, fx_full(ctx, FX_F32, 1, TU_SHAPE(N), 1.0)),
                         FX_OK);
        float *yv = tu_values(y), *dv = tu_values(x->grad);
        for (int i = 0; i < N; i++) {
            double v = xs[i], want = g ? 0.5 * v * erfc(-v / sqrt(2.0)) : erf(v);
            double dwant = g ? 0.5 * erfc(-v / sqrt(2.0)) + v * exp(-0.5 * v * v) / sqrt(2 * M_PI)
                             : 2 / sqrt(M_PI) * exp(-v * v);
            assert_true(isfinite(yv[i]) && isfinite(dv[i]));
            assert_float_equal(yv[i], want, 1e-6 * (1 + fabs(want)));
            assert_float_equal(dv[i], dwant, 1e-6);
        }
        free(yv);
        free(dv);
        fx_ctx_free(ctx);
        fx_tensor_free(x);
    }
}

/* A condition of a dtype where does not take is refused, naming the op.
 * (Its forward and gradient, with i32 and f32 conditions and broadcasting,
 * are the registry's where row.) */
static void test_where(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(5);
    fx_tensor *in[2] = { tu_randn(rng, 2, TU_SHAPE(2, 3), 1, 0), tu_randn(rng, 1, TU_SHAPE(3), 1, 0) };
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    int64_t li[2] = { 1, 2 };
    fx_tensor *bad = fx_tensor_from_host(ctx, FX_I64, 1, TU_SHAPE(2), li);
    assert_null(fx_where(ctx, bad, in[0], in[1]));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_DTYPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "where"));
    fx_ctx_free(ctx);
    tu_free_all(2, in);
    fx_rng_free(rng);
}

static void test_dropout(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(9);
    fx_tensor *x = tu_uniform(rng, 2, TU_SHAPE(100, 100), 1, 2);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    float p = 0.3f;
    fx_tensor *y = fx_dropout(ctx, x, p);
    assert_non_null(y);
    float *xv = tu_values(x), *yv = tu_values(y);
    int zeros = 0;
    for (int i = 0; i < 10000; i++) {
        if (yv[i] == 0.0f)
            zeros++;
        else
            assert_float_equal(yv[i], xv[i] / (1 - p), 1e-5);
    }
    /* 10000 Bernoulli(0.3): sd is about 46, so 5 sd either side */
    assert_in_range(zeros, 3000 - 230, 3000 + 230);
    free(xv);
    free(yv);
    /* eval mode is the identity; p outside [0,1) is refused */
    fx_ctx_set_training(ctx, false);
    assert_ptr_equal(fx_dropout(ctx, x, p), x);
    fx_ctx_set_training(ctx, true);
    assert_null(fx_dropout(ctx, x, 1.0f));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    assert_non_null(strstr(fx_ctx_error(ctx), "dropout"));
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

static void test_bad_input(void **state)
{
    (void)state;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *a = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(2, 3));
    fx_tensor *b = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(4, 3));
    assert_null(fx_add(ctx, a, b));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "add"));
    assert_non_null(strstr(fx_ctx_error(ctx), "[2,3]"));
    assert_non_null(strstr(fx_ctx_error(ctx), "[4,3]"));
    /* errors are sticky and NULL propagates without overwriting */
    assert_null(fx_relu(ctx, NULL));
    assert_non_null(strstr(fx_ctx_error(ctx), "add"));
    fx_ctx_reset(ctx);
    assert_int_equal(fx_ctx_status(ctx), FX_OK);
    /* NaN-producing inputs name the op */
    fx_tensor *neg = fx_full(ctx, FX_F32, 1, TU_SHAPE(3), -1.0);
    assert_null(fx_log(ctx, neg));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    assert_non_null(strstr(fx_ctx_error(ctx), "log"));
    fx_ctx_reset(ctx);
    assert_null(fx_sqrt(ctx, fx_full(ctx, FX_F32, 1, TU_SHAPE(3), -4.0)));
    assert_non_null(strstr(fx_ctx_error(ctx), "sqrt"));
    fx_ctx_reset(ctx);
    assert_null(fx_div(ctx, fx_full(ctx, FX_F32, 1, TU_SHAPE(3), 1.0),
                       fx_zeros(ctx, FX_F32, 1, TU_SHAPE(3))));
    assert_non_null(strstr(fx_ctx_error(ctx), "div"));
    fx_ctx_reset(ctx);
    assert_null(fx_exp(ctx, fx_full(ctx, FX_F32, 1, TU_SHAPE(3), 1000.0)));
    assert_non_null(strstr(fx_ctx_error(ctx), "exp"));
    fx_ctx_reset(ctx);
    /* wrong dtype */
    fx_tensor *ints = fx_zeros(ctx, FX_I32, 1, TU_SHAPE(3));
    assert_null(fx_tanh(ctx, ints));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_DTYPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "tanh"));
    fx_ctx_reset(ctx);
    assert_null(fx_clamp(ctx, fx_zeros(ctx, FX_F32, 1, TU_SHAPE(3)), 2.0f, 1.0f));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    fx_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_erf_tails),
        cmocka_unit_test(test_where),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
