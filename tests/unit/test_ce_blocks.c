/* test_ce_blocks.c - cross-entropy from labels with few classes, where the
 * CPU kernels (engine/cpu/loss.c) take rows in blocks of 1024 / C and run
 * the exponentials as one flat loop: many blocks with a partial last one,
 * one row per block (C = 1024), the row at a time path just above
 * (C = 1025), one and two threads, i32 and i64 labels. Losses and gradients
 * against double loops: |err| <= 1e-5 (1 + |ref|) (the kernels' exp is
 * accurate to a few ulp, as the other cross-entropy tests assume); the two
 * thread counts must agree bit for bit (determinism). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

static void check(int64_t N, int64_t C, fx_dtype ldt, int threads, float **grad_out)
{
    fx_set_num_threads(threads);
    fx_rng *rng = fx_rng_create((uint64_t)(N * 31 + C));
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(N, C), 3.0, 0.5);
    int64_t *lab = malloc((size_t)N * sizeof *lab);
    int32_t *l32 = malloc((size_t)N * sizeof *l32);
    assert_non_null(lab);
    assert_non_null(l32);
    for (int64_t n = 0; n < N; n++) {
        lab[n] = (int64_t)(fx_rng_uniform(rng) * (double)C);
        l32[n] = (int32_t)lab[n];
    }
    fx_tensor *y = tu_from(ldt, 1, TU_SHAPE(N), ldt == FX_I32 ? (void *)l32 : (void *)lab);
    assert_int_equal(fx_tensor_set_requires_grad(x, true), FX_OK);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *loss = fx_cross_entropy(ctx, x, y, FX_NONE);
    assert_non_null(loss);
    fx_tensor *total = fx_sum(ctx, loss, 0, NULL, false);
    assert_int_equal(fx_backward(ctx, total), FX_OK);
    float *xv = tu_values(x), *lv = tu_values(loss), *g = tu_values(x->grad);
    for (int64_t n = 0; n < N; n++) {
        const float *r = xv + n * C;
        double m = r[0], s = 0.0;
        for (int64_t c = 1; c < C; c++)
            m = r[c] > m ? r[c] : m;
        for (int64_t c = 0; c < C; c++)
            s += exp((double)r[c] - m);
        double lse = m + log(s), want = lse - r[lab[n]];
        if (!(fabs(lv[n] - want) <= 1e-5 * (1.0 + fabs(want))))
            fail_msg("N %lld C %lld row %lld: loss %.8g, reference %.8g", (long long)N,
                     (long long)C, (long long)n, lv[n], want);
        for (int64_t c = 0; c < C; c++) {
            double gw = exp((double)r[c] - lse) - (c == lab[n]);
            if (!(fabs(g[n * C + c] - gw) <= 1e-5 * (1.0 + fabs(gw))))
                fail_msg("N %lld C %lld grad [%lld, %lld]: %.8g, reference %.8g", (long long)N,
                         (long long)C, (long long)n, (long long)c, g[n * C + c], gw);
        }
    }
    free(xv), free(lv), free(lab), free(l32);
    *grad_out = g;
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_tensor_free(y);
    fx_rng_free(rng);
    fx_set_num_threads(1);
}

static void test_blocks(void **state)
{
    (void)state;
    static const int64_t shapes[][2] = { { 1000, 5 }, { 256, 10 }, { 7, 3 }, { 1, 1 },
                                         { 9, 1024 }, { 5, 1025 }, { 300, 300 } };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        int64_t N = shapes[i][0], C = shapes[i][1];
        float *g1, *g2;
        check(N, C, i % 2 ? FX_I64 : FX_I32, 1, &g1);
        check(N, C, i % 2 ? FX_I32 : FX_I64, 2, &g2);
        assert_memory_equal(g1, g2, (size_t)(N * C) * sizeof(float));
        free(g1), free(g2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
