/* test_matmul.c - what is specific to matmul and linear: refused shapes
 * and their messages, and products large enough for the threaded gemm
 * (against one thread and a naive loop). Their forwards, gradients and
 * cross-backend comparisons for every shape case (2-D, batched, a shared
 * operand, a strided one, with and without bias) are the registry's matmul
 * and linear rows (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* c[b,m,n] = sum_k a[b?,m,k] * b[b?,k,n], with a side of rank 2 shared. */
static void naive_mm(const fx_tensor *A, const fx_tensor *B, const float *a, const float *b,
                     float *c, int64_t batch)
{
    int64_t M = A->shape[A->ndim - 2], K = A->shape[A->ndim - 1], N = B->shape[B->ndim - 1];
    for (int64_t i = 0; i < batch; i++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (double)a[(A->ndim > 2 ? i * M * K : 0) + m * K + k] *
                         b[(B->ndim > 2 ? i * K * N : 0) + k * N + n];
                c[i * M * N + m * N + n] = (float)s;
            }
}

static void test_bad_shapes(void **state)
{
    (void)state;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *a = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(3, 4));
    fx_tensor *b = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(5, 6));
    assert_null(fx_matmul(ctx, a, b));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_string_equal(fx_ctx_error(ctx), "matmul: inner dimensions differ: a is [3,4], b is [5,6]");
    fx_ctx_reset(ctx);
    fx_tensor *v = fx_zeros(ctx, FX_F32, 1, TU_SHAPE(4));
    assert_null(fx_matmul(ctx, v, v));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    fx_ctx_reset(ctx);
    fx_tensor *b3 = fx_zeros(ctx, FX_F32, 3, TU_SHAPE(2, 3, 4));
    fx_tensor *c3 = fx_zeros(ctx, FX_F32, 3, TU_SHAPE(3, 4, 5));
    assert_null(fx_matmul(ctx, b3, c3));
    assert_non_null(strstr(fx_ctx_error(ctx), "batch dimensions differ"));
    fx_ctx_reset(ctx); /* arena tensors made before the reset are gone */
    a = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(3, 4));
    fx_tensor *w = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(5, 3));
    assert_null(fx_linear(ctx, a, w, NULL));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "linear"));
    fx_ctx_reset(ctx);
    fx_tensor *ai = fx_zeros(ctx, FX_I32, 2, TU_SHAPE(3, 4));
    assert_null(fx_matmul(ctx, ai, fx_zeros(ctx, FX_F32, 2, TU_SHAPE(4, 2))));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_DTYPE);
    fx_ctx_free(ctx);
}

/* Products large enough for cpu_gemm to split across threads (by rows,
 * by columns, per batch item, and summed into a shared gradient) give what
 * one thread gives, forward and backward. */
static void run_big(int threads, int na, const int64_t *as, int nb, const int64_t *bs, float **out,
                    float **ga, float **gb)
{
    fx_set_num_threads(threads);
    fx_rng *rng = fx_rng_create(77);
    fx_tensor *a = tu_randn(rng, na, as, 1, 0), *b = tu_randn(rng, nb, bs, 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = fx_matmul(ctx, a, b);
    assert_non_null(y);
    *out = tu_values(y);
    fx_tensor *w = fx_full(ctx, FX_F32, y->ndim, y->shape, 0.5);
    assert_int_equal(fx_backward(ctx, fx_sum(ctx, fx_mul(ctx, y, w), 0, NULL, false)), FX_OK);
    *ga = tu_values(a->grad);
    *gb = tu_values(b->grad);
    fx_ctx_free(ctx);
    fx_tensor_free(a);
    fx_tensor_free(b);
    fx_rng_free(rng);
}

static void test_matmul_threads(void **state)
{
    (void)state;
    struct { int na; int64_t a[3]; int nb; int64_t b[3]; } cases[] = {
        { 2, { 200, 150 }, 2, { 150, 90 } },       /* split by rows */
        { 2, { 40, 150 }, 2, { 150, 300 } },       /* split by columns */
        { 3, { 4, 70, 80 }, 3, { 4, 80, 60 } },    /* per batch item */
        { 2, { 70, 80 }, 3, { 3, 80, 90 } },       /* shared a: its grad sums the batch */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        float *y1, *ga1, *gb1, *y2, *ga2, *gb2;
        run_big(1, cases[c].na, cases[c].a, cases[c].nb, cases[c].b, &y1, &ga1, &gb1);
        run_big(2, cases[c].na, cases[c].a, cases[c].nb, cases[c].b, &y2, &ga2, &gb2);
        int64_t batch = cases[c].na == 3 ? cases[c].a[0] : (cases[c].nb == 3 ? cases[c].b[0] : 1);
        int64_t M = cases[c].a[cases[c].na - 2], K = cases[c].a[cases[c].na - 1];
        int64_t N = cases[c].b[cases[c].nb - 1];
        tu_assert_close(y1, y2, batch * M * N, 1e-3);
        tu_assert_close(ga1, ga2, (cases[c].na == 3 ? batch : 1) * M * K, 1e-3);
        tu_assert_close(gb1, gb2, (cases[c].nb == 3 ? batch : 1) * K * N, 1e-3);
        /* and the forward is right: spot-check against a dot product */
        fx_rng *rng = fx_rng_create(77);
        fx_tensor *a = tu_randn(rng, cases[c].na, cases[c].a, 1, 0);
        fx_tensor *b = tu_randn(rng, cases[c].nb, cases[c].b, 1, 0);
        float *av = tu_values(a), *bv = tu_values(b), *ref = malloc((size_t)(batch * M * N) * 4);
        naive_mm(a, b, av, bv, ref, batch);
        tu_assert_close(y2, ref, batch * M * N, 1e-3);
        free(av); free(bv); free(ref);
        fx_tensor_free(a); fx_tensor_free(b); fx_rng_free(rng);
        free(y1); free(ga1); free(gb1); free(y2); free(ga2); free(gb2);
    }
    fx_set_num_threads(2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_matmul_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
