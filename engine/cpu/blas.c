/* blas.c - matrix products on OpenBLAS, and the bias kernels of linear. */
#include "cpu.h"

#include <cblas.h>

void cpu_gemm(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
              const fx_tensor *a, int64_t stride_a, const fx_tensor *b, int64_t stride_b,
              float beta, fx_tensor *c, int64_t stride_c)
{
    const float *A = fx_f32(a), *B = fx_f32(b);
    float *C = fx_f32(c);
    int lda = (int)(ta ? M : K), ldb = (int)(tb ? K : N);
    if (K == 0) { /* an empty sum: C = beta * C */
        for (int64_t i = 0; i < batch; i++)
            for (int64_t j = 0; j < M * N; j++)
                C[i * stride_c + j] = beta == 0.0f ? 0.0f : beta * C[i * stride_c + j];
        return;
    }
    if (M == 0 || N == 0)
        return;
    if (lda < 1)
        lda = 1;
    if (ldb < 1)
        ldb = 1;
    for (int64_t i = 0; i < batch; i++)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb,
                    beta, C + i * stride_c, (int)N);
}

void cpu_bias_fill(fx_tensor *y, const fx_tensor *bias)
{
    int64_t C = bias->shape[0], R = fx_tensor_numel(y) / (C ? C : 1);
    float *Y = fx_f32(y);
    const float *bv = fx_f32(bias);
    for (int64_t r = 0; r < R; r++)
        memcpy(Y + r * C, bv, (size_t)C * sizeof(float));
}

void cpu_bias_backward(const fx_tensor *dy, fx_tensor *dbias)
{
    int64_t C = dbias->shape[0], R = fx_tensor_numel(dy) / (C ? C : 1);
    const float *D = fx_f32(dy);
    float *g = fx_f32(dbias);
    for (int64_t r = 0; r < R; r++) {
        const float *row = D + r * C;
        for (int64_t c = 0; c < C; c++)
            g[c] += row[c];
    }
}
