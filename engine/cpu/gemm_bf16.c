/*
 * gemm_bf16.c - matrix products with bf16 operands and fp32 sums (the
 * bf16 precision of fluxion.h's fx_ctx_set_precision).
 */
#include "cpu.h"
#include "../kern_packed.h"

#include <stdlib.h>

int fx__bf16_isa = 0;

const char *fx__bf16_kernel_name(void) { return "portable"; }

/* One product, scalar: C = alpha op(A) op(B) + beta C, operands rounded to
 * bf16, products summed in fp32 in k pairs (odd then even, as vdpbf16ps). */
static void gemm1_scalar(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                         const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                         float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k += 2) {
                float a0 = fx__bf16_to_f32(fx__bf16_from_f32(ta ? A[k * lda + i] : A[i * lda + k]));
                float b0 = fx__bf16_to_f32(fx__bf16_from_f32(tb ? B[j * ldb + k] : B[k * ldb + j]));
                float a1 = 0.0f, b1 = 0.0f;
                if (k + 1 < K) {
                    a1 = fx__bf16_to_f32(
                        fx__bf16_from_f32(ta ? A[(k + 1) * lda + i] : A[i * lda + k + 1]));
                    b1 = fx__bf16_to_f32(
                        fx__bf16_from_f32(tb ? B[j * ldb + k + 1] : B[(k + 1) * ldb + j]));
                }
                acc += a1 * b1;
                acc += a0 * b0;
            }
            float *c = C + i * ldc + j;
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        }
}

void cpu_gemm_bf16(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const fx_tensor *a, int64_t stride_a, const fx_tensor *b, int64_t stride_b,
                   float beta, fx_tensor *c, int64_t stride_c)
{
    const float *A = fx_f32(a), *B = fx_f32(b);
    float *C = fx_f32(c);
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    for (int64_t i = 0; i < batch; i++)
        gemm1_scalar(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
                     C + i * stride_c, N);
}
