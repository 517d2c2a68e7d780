/* blas.cu - matrix products on cuBLAS (row-major mapped onto column-major
 * by computing C^T = op(B)^T op(A)^T), bias fill and its gradient. TF32 is
 * off unless fx_set_tf32(true) (the handle's math mode, set in mem.cu). */
#include "common.h"

__global__ void k_scale(float *c, float beta, int64_t n)
{
    GRID_LOOP(i, n) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
}

static void cu_gemm(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                    const fx_tensor *a, int64_t stride_a, const fx_tensor *b, int64_t stride_b,
                    float beta, fx_tensor *c, int64_t stride_c)
{
    int dev = tdev(c);
    const float *A = F(a), *B = F(b);
    float *C = F(c);
    if (M == 0 || N == 0 || batch == 0)
        return;
    if (K == 0) { /* an empty sum: C = beta * C */
        for (int64_t i = 0; i < batch; i++)
            LAUNCH(dev, M * N, k_scale, C + i * stride_c, beta, M * N);
        return;
    }
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
        fx__cuda_record_msg(dev, FX_ERR_SHAPE, __FILE__, __LINE__,
                            "gemm: dims %lld x %lld x %lld exceed cuBLAS's int range",
                            (long long)M, (long long)N, (long long)K);
        return;
    }
    cublasHandle_t h = fx__cuda_blas(dev);
    int lda = (int)(ta ? M : K), ldb = (int)(tb ? K : N), ldc = (int)N;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (batch == 1 || stride_c == 0) {
        /* products summed into one C run in order, each with beta (as the CPU) */
        for (int64_t i = 0; i < batch; i++)
            CUBLAS_CHECK(dev, cublasSgemm(h, opb, opa, (int)N, (int)M, (int)K, &alpha,
                                          B + i * stride_b, ldb, A + i * stride_a, lda, &beta,
                                          C + i * stride_c, ldc));
        return;
    }
    for (int64_t i = 0; i < batch; i += INT32_MAX) {
        int64_t nb = batch - i < INT32_MAX ? batch - i : INT32_MAX;
        CUBLAS_CHECK(dev, cublasSgemmStridedBatched(
                              h, opb, opa, (int)N, (int)M, (int)K, &alpha, B + i * stride_b, ldb,
                              stride_b, A + i * stride_a, lda, stride_a, &beta, C + i * stride_c,
                              ldc, stride_c, (int)nb));
    }
}

void fx__cuda_gemm_rm(int dev, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                      float *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
        ldc > INT32_MAX) {
        fx__cuda_record_msg(dev, FX_ERR_SHAPE, __FILE__, __LINE__,
                            "gemm: dims %lld x %lld x %lld exceed cuBLAS's int range",
                            (long long)M, (long long)N, (long long)K);
        return;
    }
    CUBLAS_CHECK(dev, cublasSgemm(fx__cuda_blas(dev), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha,
                                  B, (int)(ldb < 1 ? 1 : ldb), A, (int)(lda < 1 ? 1 : lda), &beta,
                                  C, (int)ldc));
}

__global__ void k_bias_fill(float *y, const float *b, int64_t C, int64_t n)
{
    GRID_LOOP(i, n) y[i] = b[i % C];
}

static void cu_bias_fill(fx_tensor *y, const fx_tensor *bias)
{
    int64_t C = bias->shape[0], n = numel(y);
    if (C)
        LAUNCH(tdev(y), n, k_bias_fill, F(y), F(bias), C, n);
}

/* One block of 32 x 8 threads per 32 columns: threadIdx.y strides over the
 * rows, then the 8 partial sums of a column are added in shared memory. */
__global__ void k_bias_bw(const float *dy, float *db, int64_t R, int64_t C)
{
    __shared__ float part[8][33];
    int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < C)
        for (int64_t r = threadIdx.y; r < R; r += 8)
            s += dy[r * C + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int k = 1; k < 8; k++)
            s += part[k][threadIdx.x];
        db[c] += s;
    }
}

static void cu_bias_backward(const fx_tensor *dy, fx_tensor *dbias)
{
    int dev = tdev(dy);
    int64_t C = dbias->shape[0], R = C ? numel(dy) / C : 0;
    if (!C || !R)
        return;
    k_bias_bw<<<(unsigned)((C + 31) / 32), dim3(32, 8), 0, fx__cuda_stream(dev)>>>(F(dy),
                                                                                F(dbias), R, C);
    CU_LAUNCHED(dev);
}

const fx_blas_kernels fx__cuda_blas_k = {
    .gemm = cu_gemm,
    .gemm_bf16 = NULL, /* bf16 products are CPU-only (fx_ctx_set_precision) */
    .bias_fill = cu_bias_fill,
    .bias_backward = cu_bias_backward,
};
