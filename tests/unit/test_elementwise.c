/* test_elementwise.c - unary, binary (broadcasting), clamp, where, dropout:
 * forward against plain C, finite-difference gradients, bad input. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int which;
    float a, b;
} un_arg;

enum { NEG, SCALE, ADDS, EXP, LOG, SQRT, POW, ABS, RELU, LEAKY, ELU, GELU, SIG, TANH, CLAMP, NUN };
static const char *un_names[NUN] = { "neg", "scale", "add_scalar", "exp", "log", "sqrt", "pow",
                                     "abs", "relu", "leaky_relu", "elu", "gelu", "sigmoid",
                                     "tanh", "clamp" };

static fx_tensor *un_apply(fx_ctx *ctx, fx_tensor *x, const un_arg *u)
{
    switch (u->which) {
    case NEG: return fx_neg(ctx, x);
    case SCALE: return fx_scale(ctx, x, u->a);
    case ADDS: return fx_add_scalar(ctx, x, u->a);
    case EXP: return fx_exp(ctx, x);
    case LOG: return fx_log(ctx, x);
    case SQRT: return fx_sqrt(ctx, x);
    case POW: return fx_pow(ctx, x, u->a);
    case ABS: return fx_abs(ctx, x);
    case RELU: return fx_relu(ctx, x);
    case LEAKY: return fx_leaky_relu(ctx, x, u->a);
    case ELU: return fx_elu(ctx, x, u->a);
    case GELU: return fx_gelu(ctx, x);
    case SIG: return fx_sigmoid(ctx, x);
    case TANH: return fx_tanh(ctx, x);
    default: return fx_clamp(ctx, x, u->a, u->b);
    }
}

/* The reference: written from the math, in double. */
static double un_ref(double v, const un_arg *u)
{
    switch (u->which) {
    case NEG: return -v;
    case SCALE: return u->a * v;
    case ADDS: return v + u->a;
    case EXP: return exp(v);
    case LOG: return log(v);
    case SQRT: return sqrt(v);
    case POW: return pow(v, u->a);
    case ABS: return fabs(v);
    case RELU: return v > 0 ? v : 0;
    case LEAKY: return v > 0 ? v : u->a * v;
    case ELU: return v > 0 ? v : u->a * (exp(v) - 1);
    case GELU: return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    case SIG: return 1 / (1 + exp(-v));
    case TANH: return tanh(v);
    default: return v < u->a ? u->a : (v > u->b ? u->b : v);
    }
}

static fx_tensor *un_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    return un_apply(ctx, in[0], arg);
}

/* Inputs kept away from kinks (0 for relu/abs, the clamp bounds) so finite
 * differences do not straddle them; positive for log/sqrt/pow. */
static fx_tensor *un_input(fx_rng *rng, int which, int ndim, const int64_t *shape)
{
    fx_tensor *x = tu_uniform(rng, ndim, shape, 0.2, 2.0);
    if (which == LOG || which == SQRT || which == POW)
        return x;
    int64_t n = fx_tensor_numel(x);
    float *v = tu_values(x);
    for (int64_t i = 0; i < n; i++)
        if (fx_rng_uniform(rng) < 0.5)
            v[i] = -v[i];
    fx_tensor_copy_from_host(x, v, (size_t)n * sizeof(float));
    free(v);
    return x;
}

static void test_unary_forward_and_grad(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(7);
    const int64_t shapes[3][3] = { { 7, 0, 0 }, { 3, 5, 0 }, { 2, 3, 4 } };
    for (int w = 0; w < NUN; w++) {
        un_arg u = { w, w == POW ? 2.5f : (w == CLAMP ? -1.0f : 0.3f), 1.0f };
        if (w == SCALE)
            u.a = -1.7f;
        for (int s = 0; s < 3; s++) {
            fx_tensor *x = un_input(rng, w, s + 1, shapes[s]);
            if (w == CLAMP) { /* keep away from the bounds -1 and 1 */
                int64_t n = fx_tensor_numel(x);
                float *v = tu_values(x);
                for (int64_t i = 0; i < n; i++)
                    if (fabsf(fabsf(v[i]) - 1.0f) < 0.05f)
                        v[i] *= 1.2f;
                fx_tensor_copy_from_host(x, v, (size_t)n * sizeof(float));
                free(v);
            }
            fx_ctx *ctx = fx_ctx_create(fx_cpu());
            fx_tensor *y = un_apply(ctx, x, &u);
            if (!y)
                fail_msg("%s: %s", un_names[w], fx_ctx_error(ctx));
            float *xv = tu_values(x), *yv = tu_values(y);
            for (int64_t i = 0; i < fx_tensor_numel(x); i++) {
                double r = un_ref(xv[i], &u);
                if (fabs(yv[i] - r) > 1e-5 * (1 + fabs(r)))
                    fail_msg("%s(%g) = %g, expected %g", un_names[w], xv[i], yv[i], r);
            }
            free(xv);
            free(yv);
            fx_ctx_free(ctx);
            tu_gradcheck_op(un_op, &u, 1, &x, 1e-2, 1e-3);
            fx_tensor_free(x);
        }
    }
    fx_rng_free(rng);
}

typedef struct {
    int which;
} bin_arg;

static fx_tensor *bin_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    switch (((bin_arg *)arg)->which) {
    case 0: return fx_add(ctx, in[0], in[1]);
    case 1: return fx_sub(ctx, in[0], in[1]);
    case 2: return fx_mul(ctx, in[0], in[1]);
    default: return fx_div(ctx, in[0], in[1]);
    }
}

static double bin_ref(int which, double a, double b)
{
    return which == 0 ? a + b : which == 1 ? a - b : which == 2 ? a * b : a / b;
}

/* Broadcasting cases: equal shapes, a row vector, a column, a scalar, both
 * sides broadcast, and a lower-rank operand on either side. */
static void test_binary_broadcast(void **state)
{
    (void)state;
    struct { int na; int64_t a[3]; int nb; int64_t b[3]; } cases[] = {
        { 2, { 3, 4 }, 2, { 3, 4 } }, { 2, { 3, 4 }, 1, { 4 } },    { 2, { 3, 4 }, 2, { 3, 1 } },
        { 2, { 3, 4 }, 1, { 1 } },    { 2, { 3, 1 }, 2, { 1, 4 } }, { 1, { 4 }, 3, { 2, 3, 4 } },
        { 3, { 2, 1, 4 }, 2, { 3, 1 } },
    };
    fx_rng *rng = fx_rng_create(11);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int w = 0; w < 4; w++) {
            fx_tensor *in[2] = { tu_uniform(rng, cases[c].na, cases[c].a, -2, 2),
                                 tu_uniform(rng, cases[c].nb, cases[c].b, 0.5, 2) };
            fx_ctx *ctx = fx_ctx_create(fx_cpu());
            bin_arg arg = { w };
            fx_tensor *y = bin_op(ctx, in, &arg);
            if (!y)
                fail_msg("case %zu op %d: %s", c, w, fx_ctx_error(ctx));
            /* Reference through explicit broadcast index arithmetic. */
            float *av = tu_values(in[0]), *bv = tu_values(in[1]), *yv = tu_values(y);
            int nd = y->ndim;
            for (int64_t k = 0; k < fx_tensor_numel(y); k++) {
                int64_t rem = k, ia = 0, ib = 0, sa = 1, sb = 1;
                for (int d = nd - 1; d >= 0; d--) {
                    int64_t i = rem % y->shape[d];
                    rem /= y->shape[d];
                    int da = d - (nd - in[0]->ndim), db = d - (nd - in[1]->ndim);
                    if (da >= 0) {
                        ia += (in[0]->shape[da] == 1 ? 0 : i) * sa;
                        sa *= in[0]->shape[da];
                    }
                    if (db >= 0) {
                        ib += (in[1]->shape[db] == 1 ? 0 : i) * sb;
                        sb *= in[1]->shape[db];
                    }
                }
                double r = bin_ref(w, av[ia], bv[ib]);
                if (fabs(yv[k] - r) > 1e-5 * (1 + fabs(r)))
                    fail_msg("case %zu op %d element %lld: %g vs %g", c, w, (long long)k, yv[k], r);
            }
            free(av);
            free(bv);
            free(yv);
            fx_ctx_free(ctx);
            tu_gradcheck_op(bin_op, &arg, 2, in, 1e-2, 1e-3);
            tu_free_all(2, in);
        }
    fx_rng_free(rng);
}

/* The same tensor on both sides: its gradient must get both contributions. */
static fx_tensor *square_via_mul(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    (void)arg;
    return fx_mul(ctx, in[0], in[0]);
}

static void test_shared_input(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(4, 3), 1, 0);
    tu_gradcheck_op(square_via_mul, NULL, 1, &x, 1e-2, 1e-3);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

static fx_tensor *where_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    return fx_where(ctx, arg, in[0], in[1]);
}

static void test_where(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(5);
    int32_t c[6] = { 1, 0, 0, 1, 1, 0 };
    fx_tensor *cond = tu_from(FX_I32, 2, TU_SHAPE(2, 3), c);
    fx_tensor *in[2] = { tu_randn(rng, 2, TU_SHAPE(2, 3), 1, 0), tu_randn(rng, 1, TU_SHAPE(3), 1, 0) };
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = fx_where(ctx, cond, in[0], in[1]);
    assert_non_null(y);
    float *av = tu_values(in[0]), *bv = tu_values(in[1]), *yv = tu_values(y);
    for (int i = 0; i < 6; i++)
        assert_float_equal(yv[i], c[i] ? av[i] : bv[i % 3], 0);
    free(av);
    free(bv);
    free(yv);
    tu_gradcheck_op(where_op, cond, 2, in, 1e-2, 1e-3);
    /* f32 mask broadcast along rows */
    float fm[3] = { 0, 1, 0 };
    fx_tensor *fcond = tu_from(FX_F32, 1, TU_SHAPE(3), fm);
    tu_gradcheck_op(where_op, fcond, 2, in, 1e-2, 1e-3);
    fx_ctx_reset(ctx);
    int64_t li[2] = { 1, 2 };
    fx_tensor *bad = fx_tensor_from_host(ctx, FX_I64, 1, TU_SHAPE(2), li);
    assert_null(fx_where(ctx, bad, in[0], in[1]));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_DTYPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "where"));
    fx_ctx_free(ctx);
    tu_free_all(2, in);
    fx_tensor_free(cond);
    fx_tensor_free(fcond);
    fx_rng_free(rng);
}

static fx_tensor *dropout_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    return fx_dropout(ctx, in[0], *(float *)arg);
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
    /* gradient with a fixed mask (gradcheck replays the context RNG) */
    fx_tensor *small = tu_randn(rng, 2, TU_SHAPE(4, 5), 1, 0);
    tu_gradcheck_op(dropout_op, &p, 1, &small, 1e-2, 1e-3);
    fx_tensor_free(small);
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
        cmocka_unit_test(test_unary_forward_and_grad), cmocka_unit_test(test_binary_broadcast),
        cmocka_unit_test(test_shared_input),           cmocka_unit_test(test_where),
        cmocka_unit_test(test_dropout),                cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
