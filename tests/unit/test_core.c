/* test_core.c - the context and the tape: grad mode, control flow in model
 * code, backward rules, arena reuse, persistent tensors, host copies. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x^n by repeated multiplication, with n read from the data: the tape must
 * record exactly the ops that ran. */
static fx_tensor *power_by_loop(fx_ctx *ctx, fx_tensor *x, int n)
{
    fx_tensor *y = x;
    for (int i = 1; i < n; i++)
        y = fx_mul(ctx, y, x);
    return y;
}

/* A recursive model: f(x, d) = tanh(f(x, d-1)) * x, f(x, 0) = x. */
static fx_tensor *recursive(fx_ctx *ctx, fx_tensor *x, int depth)
{
    if (depth == 0)
        return x;
    return fx_mul(ctx, fx_tanh(ctx, recursive(ctx, x, depth - 1)), x);
}

typedef struct {
    fx_tensor *x;
} model_arg;

/* Branches on a value computed in the forward pass. */
static fx_tensor *branchy(fx_ctx *ctx, void *user)
{
    fx_tensor *x = ((model_arg *)user)->x;
    fx_tensor *s = fx_sum(ctx, x, 0, NULL, false);
    fx_tensor *y = fx_tensor_item(s) > 0 ? power_by_loop(ctx, x, 3) : recursive(ctx, x, 3);
    return fx_sum(ctx, y, 0, NULL, false);
}

static void test_control_flow(void **state)
{
    (void)state;
    float v[3] = { 0.5f, -1.5f, 2.0f };
    fx_tensor *x = tu_from(FX_F32, 1, TU_SHAPE(3), v);
    fx_tensor_set_requires_grad(x, true);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());

    /* d/dx sum(x^4) = 4x^3, through a loop of 3 multiplications */
    fx_tensor *loss = fx_sum(ctx, power_by_loop(ctx, x, 4), 0, NULL, false);
    assert_int_equal(fx_tape_length(ctx), 4);
    assert_int_equal(fx_backward(ctx, loss), FX_OK);
    float *g = tu_values(x->grad);
    for (int i = 0; i < 3; i++)
        assert_float_equal(g[i], 4 * v[i] * v[i] * v[i], 1e-4);
    free(g);
    /* the tape is consumed: a second backward is refused */
    assert_int_equal(fx_backward(ctx, loss), FX_ERR_STATE);
    assert_non_null(strstr(fx_ctx_error(ctx), "backward"));
    fx_ctx_reset(ctx);

    /* branches and recursion checked by finite differences, on both sides */
    model_arg m = { x };
    fx_gradcheck_report rep;
    assert_int_equal(fx_gradcheck(ctx, branchy, &m, 1, &x, NULL, &rep), FX_OK);
    float w[3] = { -0.5f, -1.0f, 0.7f };
    fx_tensor_copy_from_host(x, w, sizeof w);
    assert_int_equal(fx_gradcheck(ctx, branchy, &m, 1, &x, NULL, &rep), FX_OK);
    assert_true(rep.checked == 3);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

static void test_no_grad_mode(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 3), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_true(fx_ctx_grad_enabled(ctx));
    assert_true(fx_ctx_set_grad(ctx, false));
    fx_tensor *y = fx_relu(ctx, fx_matmul(ctx, x, x));
    assert_non_null(y);
    assert_int_equal(fx_tape_length(ctx), 0);
    assert_false(fx_tensor_requires_grad(y));
    assert_int_equal(fx_backward(ctx, fx_sum(ctx, y, 0, NULL, false)), FX_ERR_STATE);
    fx_ctx_reset(ctx);
    fx_ctx_set_grad(ctx, true);
    /* inputs without requires_grad record nothing either */
    fx_tensor *c = fx_full(ctx, FX_F32, 2, TU_SHAPE(3, 3), 2.0);
    fx_relu(ctx, c);
    assert_int_equal(fx_tape_length(ctx), 0);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

/* Gradients accumulate across backward calls until zeroed. */
static void test_accumulation(void **state)
{
    (void)state;
    float v[2] = { 1.0f, 2.0f };
    fx_tensor *x = tu_from(FX_F32, 1, TU_SHAPE(2), v);
    fx_tensor_set_requires_grad(x, true);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (int k = 0; k < 3; k++) {
        fx_tensor *loss = fx_sum(ctx, fx_scale(ctx, x, 3.0f), 0, NULL, false);
        assert_int_equal(fx_backward(ctx, loss), FX_OK);
        fx_ctx_reset(ctx);
    }
    float *g = tu_values(x->grad);
    assert_float_equal(g[0], 9.0f, 1e-6);
    assert_float_equal(g[1], 9.0f, 1e-6);
    free(g);
    /* backward from a non-scalar needs a seed of the output's shape */
    fx_tensor *y = fx_scale(ctx, x, 2.0f);
    assert_int_equal(fx_backward(ctx, y), FX_ERR_SHAPE);
    fx_ctx_reset(ctx);
    y = fx_scale(ctx, x, 2.0f);
    fx_tensor *seed = fx_full(ctx, FX_F32, 1, TU_SHAPE(2), 0.5);
    assert_int_equal(fx_backward_seed(ctx, y, seed), FX_OK);
    g = tu_values(x->grad);
    assert_float_equal(g[0], 10.0f, 1e-6);
    free(g);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

/* After the first step, the arena's capacity stays put: later steps reuse
 * its memory. */
static void test_arena_reuse(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(2);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(64, 64), 0.1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    size_t cap = 0;
    for (int step = 0; step < 5; step++) {
        fx_tensor *h = fx_full(ctx, FX_F32, 2, TU_SHAPE(32, 64), 1.0);
        for (int l = 0; l < 20; l++)
            h = fx_tanh(ctx, fx_matmul(ctx, h, w));
        assert_int_equal(fx_backward(ctx, fx_mean(ctx, h, 0, NULL, false)), FX_OK);
        assert_true(fx_ctx_arena_used(ctx) > 0);
        fx_ctx_reset(ctx);
        assert_int_equal(fx_ctx_arena_used(ctx), 0);
        if (step == 1)
            cap = fx_ctx_arena_capacity(ctx);
        if (step > 1)
            assert_int_equal(fx_ctx_arena_capacity(ctx), cap);
    }
    fx_ctx_free(ctx);
    fx_tensor_free(w);
    fx_rng_free(rng);
}

static void test_tensor_basics(void **state)
{
    (void)state;
    assert_null(fx_tensor_create(fx_cpu(), FX_F32, -1, NULL));
    assert_null(fx_tensor_create(fx_cpu(), FX_F32, 2, TU_SHAPE(-2, 3)));
    assert_null(fx_tensor_create(fx_cpu(), FX_F32, 2, TU_SHAPE(INT64_MAX / 2, 4)));
    assert_null(fx_tensor_create((fx_device){ FX_DEV_CUDA, 7 }, FX_F32, 1, TU_SHAPE(2)));
    assert_null(fx_ctx_create((fx_device){ FX_DEV_CUDA, 7 }));
    fx_tensor *t = fx_tensor_create(fx_cpu(), FX_I64, 2, TU_SHAPE(2, 3));
    assert_non_null(t);
    assert_int_equal(fx_tensor_numel(t), 6);
    assert_true(fx_tensor_is_contiguous(t));
    int64_t src[6] = { 1, 2, 3, 4, 5, 6 }, dst[6];
    assert_int_equal(fx_tensor_copy_from_host(t, src, sizeof src), FX_OK);
    assert_int_equal(fx_tensor_copy_from_host(t, src, 8), FX_ERR_SHAPE);
    assert_int_equal(fx_tensor_to_host(t, dst, sizeof dst), FX_OK);
    assert_memory_equal(src, dst, sizeof src);
    assert_int_equal(fx_tensor_set_requires_grad(t, true), FX_ERR_DTYPE);
    char buf[32];
    assert_string_equal(fx_shape_str(t, buf, sizeof buf), "[2,3]");
    assert_string_equal(fx_dtype_name(t->dtype), "i64");
    fx_tensor_free(t);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *bad = fx_tensor_new(ctx, FX_F32, FX_MAX_DIMS + 1, NULL);
    assert_null(bad);
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_null(fx_ctx_fail(ctx, FX_ERR_VALUE, "second %d", 2));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE); /* the first error stays */
    fx_ctx_free(ctx);
}

/* The RNG is reproducible and its state can be saved and restored. */
static void test_rng(void **state)
{
    (void)state;
    fx_rng *a = fx_rng_create(99), *b = fx_rng_create(99);
    uint64_t st[4];
    for (int i = 0; i < 10; i++)
        assert_true(fx_rng_u64(a) == fx_rng_u64(b));
    fx_rng_get_state(a, st);
    double u = fx_rng_uniform(a);
    fx_rng_set_state(b, st);
    assert_true(fx_rng_uniform(b) == u);
    double mean = 0, var = 0;
    for (int i = 0; i < 20000; i++) {
        double z = fx_rng_normal(a);
        mean += z;
        var += z * z;
    }
    mean /= 20000;
    var = var / 20000 - mean * mean;
    assert_true(fabs(mean) < 0.05 && fabs(var - 1) < 0.05);
    fx_rng_free(a);
    fx_rng_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control_flow), cmocka_unit_test(test_no_grad_mode),
        cmocka_unit_test(test_accumulation), cmocka_unit_test(test_arena_reuse),
        cmocka_unit_test(test_tensor_basics), cmocka_unit_test(test_rng),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
