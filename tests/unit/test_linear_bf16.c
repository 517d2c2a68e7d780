/* test_linear_bf16.c - the dense ops in a bf16 context (engine/op_matmul.c:
 * fx_linear and the fused linear + relu, forward and both backward
 * products, on the blas table's gemm_bf16 when fx_ctx_precision is
 * FX_PREC_BF16).
 *
 * Reference: the same products in double of the operands rounded to bf16
 * as the kernels round them (fx__bf16_from_f32): x and W forward, dY (dZ
 * after the relu mask) and W for dX, dY and X for dW. The kernels add only
 * fp32 rounding of the sums: (K + 1) * 2^-23 * sum |terms| + 1e-6. The
 * bias and its gradient stay fp32. Each result is also checked to differ
 * from the fp32 context's where the rounding shows (so the test fails when
 * the bf16 path is not taken), and matmul to stay fp32 (bit-identical to an
 * fp32 context). Every kernel the CPU can run is forced (fx__bf16_isa);
 * sizes are ragged with odd K; a leading batch of several dims.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kern_packed.h"

static double rb(float f) { return fx__bf16_to_f32(fx__bf16_from_f32(f)); }

typedef struct {
    float *y, *dx, *dw, *db;
} result;

static void result_free(result *r) { free(r->y), free(r->dx), free(r->dw), free(r->db); }

/* One forward (fused or not) in a context of precision p, loss sum(y * g),
 * backward; host copies of y and the gradients. */
static result run(fx_precision p, bool relu, bool fused, fx_tensor *x, fx_tensor *w,
                  fx_tensor *b, fx_tensor *g)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_non_null(ctx);
    assert_int_equal(fx_ctx_set_precision(ctx, p), FX_OK);
    fx_tensor *ts[3] = { x, w, b };
    for (int i = 0; i < 3; i++)
        if (ts[i] && ts[i]->grad)
            fx_tensor_fill(ts[i]->grad, 0.0);
    fx_tensor *y = fused ? fx__linear_relu(ctx, x, w, b) : fx_linear(ctx, x, w, b);
    if (relu && !fused)
        y = fx_relu(ctx, y);
    assert_non_null(y);
    fx_tensor *loss = fx_sum(ctx, fx_mul(ctx, y, g), 0, NULL, false);
    assert_int_equal(fx_backward(ctx, loss), FX_OK);
    result r = { .y = tu_values(y), .dw = tu_values(w->grad) };
    if (fx_tensor_requires_grad(x))
        r.dx = tu_values(x->grad);
    if (b)
        r.db = tu_values(b->grad);
    fx_ctx_free(ctx);
    return r;
}

static bool close_to(double got, double want, double sum_abs, int64_t k)
{
    return fabs(got - want) <= (double)(k + 1) * 0x1p-23 * sum_abs + 1e-6;
}

/* The bf16 reference of y, dx, dw, db (relu: the engine's mask, taken from
 * its y: where the pre-activation sits at the kink both sides are right).
 * Returns how many elements of y, dx and dw differ from fp32's f. */
static int64_t reference(const float *X, const float *W, const float *B, const float *G,
                         int64_t R, int64_t K, int64_t N, bool relu, const result *got,
                         const result *f)
{
    int64_t differ = 0;
    double *dz = calloc((size_t)(R * N), sizeof *dz);
    assert_non_null(dz);
    for (int64_t r = 0; r < R; r++)
        for (int64_t n = 0; n < N; n++) {
            double s = B ? B[n] : 0, a = B ? fabs(B[n]) : 0;
            for (int64_t k = 0; k < K; k++) {
                double t = rb(X[r * K + k]) * rb(W[n * K + k]);
                s += t;
                a += fabs(t);
            }
            double y = relu && s < 0 ? 0 : s;
            assert_true(close_to(got->y[r * N + n], y, a, K));
            differ += got->y[r * N + n] != f->y[r * N + n];
            bool on = !relu || got->y[r * N + n] > 0;
            dz[r * N + n] = on ? G[r * N + n] : 0;
        }
    for (int64_t k = 0; got->dx && k < K; k++)
        for (int64_t r = 0; r < R; r++) {
            double s = 0, a = 0;
            for (int64_t n = 0; n < N; n++) {
                double t = rb((float)dz[r * N + n]) * rb(W[n * K + k]);
                s += t;
                a += fabs(t);
            }
            assert_true(close_to(got->dx[r * K + k], s, a, N));
            differ += got->dx[r * K + k] != f->dx[r * K + k];
        }
    for (int64_t n = 0; n < N; n++) {
        double sb = 0, ab = 0;
        for (int64_t r = 0; r < R; r++) {
            sb += dz[r * N + n];
            ab += fabs(dz[r * N + n]);
        }
        if (got->db) /* fp32, as in an fp32 context */
            assert_true(close_to(got->db[n], sb, ab, R));
        for (int64_t k = 0; k < K; k++) {
            double s = 0, a = 0;
            for (int64_t r = 0; r < R; r++) {
                double t = rb((float)dz[r * N + n]) * rb(X[r * K + k]);
                s += t;
                a += fabs(t);
            }
            assert_true(close_to(got->dw[n * K + k], s, a, R));
            differ += got->dw[n * K + k] != f->dw[n * K + k];
        }
    }
    free(dz);
    return differ;
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
    float *xv = tu_values(x), *wv = tu_values(w), *bv = b ? tu_values(b) : NULL,
          *gv = tu_values(g);
    for (int mode = 0; mode < 3; mode++) { /* linear, linear then relu, fused */
        bool relu = mode > 0, fused = mode == 2;
        result f = run(FX_PREC_F32, relu, fused, x, w, b, g);
        int isa[3] = { 1, 2, 3 };
        for (int i = 0; i < 3; i++) {
            fx__bf16_isa = isa[i]; /* the best below when the CPU lacks it */
            result h = run(FX_PREC_BF16, relu, fused, x, w, b, g);
            int64_t differ = reference(xv, wv, bv, gv, R, K, N, relu, &h, &f);
            /* the rounding of the operands shows somewhere */
            assert_true(differ > 0);
            result_free(&h);
        }
        fx__bf16_isa = 0;
        result_free(&f);
    }
    free(xv), free(wv), free(bv), free(gv);
    tu_free_all(4, (fx_tensor *[]){ x, w, b, g });
}

static void test_dense_ops(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(23);
    check_case(rng, 2, 37, 29, 19, true, true);   /* odd sizes, odd K */
    check_case(rng, 2, 64, 48, 40, false, true);  /* no bias */
    check_case(rng, 3, 20, 13, 33, true, true);   /* [2, 10, 13] input */
    check_case(rng, 2, 130, 7, 65, true, false);  /* data input: no dx */
    check_case(rng, 2, 1, 5, 3, true, true);      /* one row */
    check_case(rng, 2, 9, 1, 4, true, true);      /* K = 1 */
    fx_rng_free(rng);
}

/* matmul keeps fp32 in a bf16 context: bit-identical to an fp32 one. */
static void test_matmul_stays_fp32(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(5);
    fx_tensor *a = tu_randn(rng, 2, TU_SHAPE(9, 17), 1.0, 0.0);
    fx_tensor *b = tu_randn(rng, 2, TU_SHAPE(17, 6), 1.0, 0.0);
    float *y[2];
    for (int p = 0; p < 2; p++) {
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        assert_int_equal(fx_ctx_set_precision(ctx, p ? FX_PREC_BF16 : FX_PREC_F32), FX_OK);
        fx_tensor *t = fx_matmul(ctx, a, b);
        assert_non_null(t);
        y[p] = tu_values(t);
        fx_ctx_free(ctx);
    }
    assert_memory_equal(y[0], y[1], 9 * 6 * sizeof(float));
    free(y[0]), free(y[1]);
    tu_free_all(2, (fx_tensor *[]){ a, b });
    fx_rng_free(rng);
}

/* A dense relu layer in a bf16 context takes the fused node on the bf16
 * product: the same values as fx__linear_relu there, not fp32's. */
static void test_dense_layer(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(41);
    fx_layer *l = fx_dense_create("fc", 21, 11, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng);
    assert_non_null(l);
    fx_tensor *w = fx_layer_param(l, "weight"), *b = fx_layer_param(l, "bias");
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(8, 21), 1.0, 0.0);
    float *v[3];
    for (int i = 0; i < 3; i++) {
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        assert_int_equal(fx_ctx_set_precision(ctx, i ? FX_PREC_BF16 : FX_PREC_F32), FX_OK);
        fx_tensor *y = i == 2 ? fx__linear_relu(ctx, x, w, b) : fx_layer_forward(l, ctx, x);
        assert_non_null(y);
        v[i] = tu_values(y);
        fx_ctx_free(ctx);
    }
    assert_memory_equal(v[1], v[2], 8 * 11 * sizeof(float));
    assert_memory_not_equal(v[0], v[1], 8 * 11 * sizeof(float));
    free(v[0]), free(v[1]), free(v[2]);
    fx_tensor_free(x);
    fx_layer_free(l);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_ops),
        cmocka_unit_test(test_matmul_stays_fp32),
        cmocka_unit_test(test_dense_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
