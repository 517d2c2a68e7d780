/* test_linear_relu.c - the fused relu(linear) node (fx__linear_relu in
 * engine/op_matmul.c, the dense layer's path for relu on the CPU) against
 * the unfused ops it replaces and against plain double loops.
 *
 * The fused forward runs the same kernels in the same order as fx_linear +
 * fx_relu (bias fill, OpenBLAS product, relu), and its backward feeds the
 * same masked dY to the same two products and sums the bias gradient row by
 * row as cpu_bias_backward does, so outputs and all three gradients must be
 * bit-identical to the unfused path; against double loops the bound is a
 * float dot product's, K * 2^-23 * sum |terms| (+1e-6). Also: shapes with a
 * leading batch of several dims, no bias, an input that does not require
 * grad, gradients that accumulate over two backward passes, a strided input
 * (where transpose makes a view: falls back to the unfused ops, same result)
 * and run-to-run determinism.
 * The relu kink keeps the finite-difference check out (as the registry's
 * relu row does); the unfused ops it is compared with are gradient-checked
 * in test_ops.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kern_packed.h"

typedef struct {
    float *y, *dx, *dw, *db; /* host copies (tu_values), dx / db NULL when absent */
    int64_t ny;
} result;

static void result_free(result *r)
{
    free(r->y), free(r->dx), free(r->dw), free(r->db);
}

/* Forward (fused or not), loss sum(y * g) for a fixed random g, backward
 * `passes` times (gradients accumulate), host copies of y and the grads. */
static result run(bool fused, fx_tensor *x, fx_tensor *w, fx_tensor *b, fx_tensor *g,
                  int passes)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_non_null(ctx);
    fx_tensor *ts[3] = { x, w, b };
    for (int i = 0; i < 3; i++)
        if (ts[i] && ts[i]->grad)
            fx_tensor_fill(ts[i]->grad, 0.0);
    result r = { 0 };
    for (int p = 0; p < passes; p++) {
        fx_tensor *y = fused ? fx__linear_relu(ctx, x, w, b)
                             : fx_relu(ctx, fx_linear(ctx, x, w, b));
        assert_non_null(y);
        fx_tensor *loss = fx_sum(ctx, fx_mul(ctx, y, g), 0, NULL, false);
        assert_int_equal(fx_backward(ctx, loss), FX_OK);
        if (p == passes - 1) {
            r.y = tu_values(y);
            r.ny = fx_tensor_numel(y);
        }
        fx_ctx_reset(ctx);
    }
    if (fx_tensor_requires_grad(x))
        r.dx = tu_values(x->grad);
    r.dw = tu_values(w->grad);
    if (b)
        r.db = tu_values(b->grad);
    fx_ctx_free(ctx);
    return r;
}

static void assert_same(const float *a, const float *b, int64_t n)
{
    if (!a || !b) {
        assert_true(a == b);
        return;
    }
    assert_memory_equal(a, b, (size_t)n * sizeof(float));
}

/* Double-loop reference of y, dx, dw, db for one pass. */
static void reference(const float *X, const float *W, const float *B, const float *G, int64_t R,
                      int64_t K, int64_t N, const result *got)
{
    double *dz = calloc((size_t)(R * N), sizeof *dz);
    assert_non_null(dz);
    for (int64_t r = 0; r < R; r++)
        for (int64_t n = 0; n < N; n++) {
            double s = B ? B[n] : 0, a = B ? fabs(B[n]) : 0;
            for (int64_t k = 0; k < K; k++) {
                s += (double)X[r * K + k] * W[n * K + k];
                a += fabs((double)X[r * K + k] * W[n * K + k]);
            }
            double tol = (double)(K + 1) * 0x1p-23 * a + 1e-6;
            double y = s > 0 ? s : 0;
            assert_true(fabs(got->y[r * N + n] - y) <= tol);
            /* where the float pre-activation could sit on the other side of
             * the kink, the reference takes the side the engine took */
            dz[r * N + n] = got->y[r * N + n] > 0 ? G[r * N + n] : 0;
        }
    for (int64_t k = 0; got->dx && k < K; k++)
        for (int64_t r = 0; r < R; r++) {
            double s = 0, a = 0;
            for (int64_t n = 0; n < N; n++) {
                s += dz[r * N + n] * W[n * K + k];
                a += fabs(dz[r * N + n] * W[n * K + k]);
            }
            assert_true(fabs(got->dx[r * K + k] - s) <= (double)N * 0x1p-23 * a + 1e-6);
        }
    for (int64_t n = 0; n < N; n++) {
        double sb = 0, ab = 0;
        for (int64_t r = 0; r < R; r++) {
            sb += dz[r * N + n];
            ab += fabs(dz[r * N + n]);
        }
        if (got->db)
            assert_true(fabs(got->db[n] - sb) <= (double)R * 0x1p-23 * ab + 1e-6);
        for (int64_t k = 0; k < K; k++) {
            double s = 0, a = 0;
            for (int64_t r = 0; r < R; r++) {
                s += dz[r * N + n] * X[r * K + k];
                a += fabs(dz[r * N + n] * X[r * K + k]);
            }
            assert_true(fabs(got->dw[n * K + k] - s) <= (double)R * 0x1p-23 * a + 1e-6);
        }
    }
    free(dz);
}

static void check_case(fx_rng *rng, int xdim, int64_t R, int64_t K, int64_t N, bool bias,
                       bool xgrad)
{
    int64_t xs[3] = { R, K }, ys[3] = { R, N };
    if (xdim == 3) { /* [2, R/2, K] */
        xs[0] = ys[0] = 2;
        xs[1] = ys[1] = R / 2;
        xs[2] = K;
        ys[2] = N;
        R = 2 * (R / 2);
    }
    fx_tensor *x = tu_randn(rng, xdim, xs, 1.0, 0.0);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(N, K), 1.0 / sqrt((double)K), 0.0);
    fx_tensor *b = bias ? tu_randn(rng, 1, TU_SHAPE(N), 0.5, 0.0) : NULL;
    fx_tensor *g = tu_randn(rng, xdim, ys, 1.0, 0.0);
    assert_int_equal(fx_tensor_set_requires_grad(w, true), FX_OK);
    if (b)
        assert_int_equal(fx_tensor_set_requires_grad(b, true), FX_OK);
    if (xgrad)
        assert_int_equal(fx_tensor_set_requires_grad(x, true), FX_OK);

    for (int passes = 1; passes <= 2; passes++) {
        result f = run(true, x, w, b, g, passes), u = run(false, x, w, b, g, passes);
        assert_int_equal(f.ny, u.ny);
        assert_same(f.y, u.y, f.ny);
        assert_same(f.dx, u.dx, R * K);
        assert_same(f.dw, u.dw, N * K);
        assert_same(f.db, u.db, N);
        if (passes == 1) {
            float *xv = tu_values(x), *wv = tu_values(w), *bv = b ? tu_values(b) : NULL,
                  *gv = tu_values(g);
            reference(xv, wv, bv, gv, R, K, N, &f);
            free(xv), free(wv), free(bv), free(gv);
            result again = run(true, x, w, b, g, 1); /* deterministic run to run */
            assert_same(again.y, f.y, f.ny);
            assert_same(again.dw, f.dw, N * K);
            assert_same(again.dx, f.dx, R * K);
            result_free(&again);
        } else { /* two passes: twice the gradient (exact for a doubling) */
            result one = run(true, x, w, b, g, 1);
            for (int64_t i = 0; i < N * K; i++)
                assert_true(f.dw[i] == 2 * one.dw[i]);
            result_free(&one);
        }
        result_free(&f);
        result_free(&u);
    }
    tu_free_all(4, (fx_tensor *[]){ x, w, b, g });
}

static void test_against_unfused(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(17);
    check_case(rng, 2, 37, 29, 19, true, true);   /* odd sizes */
    check_case(rng, 2, 64, 48, 40, false, true);  /* no bias */
    check_case(rng, 3, 20, 13, 33, true, true);   /* [2, 10, 13] input */
    check_case(rng, 2, 128, 96, 64, true, false); /* data input: no dx */
    check_case(rng, 2, 1, 5, 3, true, true);      /* one row */
    fx_rng_free(rng);
}

/* Shapes that disagree, other dtypes or a strided input: NULL without an
 * error (the dense layer then runs the unfused ops, which word errors). */
static void test_not_applicable(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(4, 6), 1.0, 0.0);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(5, 7), 1.0, 0.0);
    fx_tensor *b = tu_randn(rng, 1, TU_SHAPE(4), 1.0, 0.0);
    assert_null(fx__linear_relu(ctx, x, w, NULL)); /* 6 features, w wants 7 */
    fx_tensor *w6 = tu_randn(rng, 2, TU_SHAPE(5, 6), 1.0, 0.0);
    assert_null(fx__linear_relu(ctx, x, w6, b)); /* bias [4] for 5 outputs */
    fx_tensor *x64 = tu_randn(rng, 2, TU_SHAPE(6, 4), 1.0, 0.0);
    fx_tensor *xt = fx_transpose(ctx, x64, 0, 1);
    if (!fx_tensor_is_contiguous(xt)) /* a strided view, where transpose makes one */
        assert_null(fx__linear_relu(ctx, xt, w6, NULL));
    assert_int_equal(fx_ctx_status(ctx), FX_OK);
    fx_ctx_free(ctx);
    tu_free_all(5, (fx_tensor *[]){ x, w, b, w6, x64 });
    fx_rng_free(rng);
}

/* The op of the newest tape record (kern_packed.h brings internal.h). */
static const char *ctx_tape_top_op(const fx_ctx *ctx, const fx_tensor *y)
{
    return ctx->tape && ctx->tape->out == y ? ctx->tape->op : "(none)";
}

/* A dense relu layer takes the fused node and matches linear + relu, also
 * on a strided input (the fallback). */
static void test_dense_layer(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(9);
    fx_layer *l = fx_dense_create("fc", 11, 23, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng);
    assert_non_null(l);
    fx_tensor *w = fx_layer_param(l, "weight"), *b = fx_layer_param(l, "bias");
    assert_non_null(w);
    assert_non_null(b);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(11, 9), 1.0, 0.0);
    for (int strided = 0; strided < 2; strided++) {
        fx_tensor *xt = fx_transpose(ctx, x, 0, 1);
        fx_tensor *xi = strided ? xt : fx_contiguous(ctx, xt);
        fx_tensor *y = fx_layer_forward(l, ctx, xi);
        assert_non_null(y);
        assert_string_equal(strided && !fx_tensor_is_contiguous(xi) ? "relu" : "linear_relu",
                            ctx_tape_top_op(ctx, y));
        fx_tensor *ref = fx_relu(ctx, fx_linear(ctx, xi, w, b));
        assert_non_null(ref);
        float *a = tu_values(y), *c = tu_values(ref);
        assert_same(a, c, fx_tensor_numel(y));
        free(a), free(c);
        fx_ctx_reset(ctx);
    }
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_layer_free(l);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_unfused),
        cmocka_unit_test(test_not_applicable),
        cmocka_unit_test(test_dense_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
