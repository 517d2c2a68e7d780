/* blas.c - matrix products on OpenBLAS, and the bias kernels of linear. */
#include "cpu.h"

#include <cblas.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

/* Below this many multiply-adds a product runs on the calling thread. */
#define GEMM_PAR_MIN (1 << 18)

/* One single-threaded product C = alpha op(A) op(B) + beta C (row-major). */
static void sgemm1(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/*
 * The engine owns the threads: OpenBLAS runs single-threaded (see
 * fx_set_num_threads) and a large product is split here into one block of
 * rows (or columns, when C is wide) per OpenMP thread. One pool serves BLAS
 * and our loops, so they never oversubscribe the cores, and the threaded
 * path allocates nothing (OpenBLAS's own threading mallocs job arrays on
 * every call).
 */
void cpu_gemm(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
              const fx_tensor *a, int64_t stride_a, const fx_tensor *b, int64_t stride_b,
              float beta, fx_tensor *c, int64_t stride_c)
{
    const float *A = fx_f32(a), *B = fx_f32(b);
    float *C = fx_f32(c);
    int lda = (int)(ta ? M : K), ldb = (int)(tb ? K : N), ldc = (int)N;
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
    int nt = fx__num_threads;
    if (nt <= 1 || (double)M * N * K < GEMM_PAR_MIN) {
        for (int64_t i = 0; i < batch; i++)
            sgemm1(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
                   C + i * stride_c, ldc);
        return;
    }
    if (batch >= nt && stride_c != 0) {
        /* Independent outputs: one product per thread at a time. */
        FX_PFOR(INT64_MAX, i, batch,
                sgemm1(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb,
                       beta, C + i * stride_c, ldc););
        return;
    }
    /* Products summed into one C (stride_c == 0) stay in order; each is
     * split across the threads. */
    bool by_rows = M >= N;
    int64_t len = by_rows ? M : N, chunk = (len + nt - 1) / nt;
    if (by_rows && chunk % 8) /* keep blocks a multiple of the kernel's rows */
        chunk += 8 - chunk % 8;
    if (!by_rows && chunk % 16)
        chunk += 16 - chunk % 16;
    int64_t parts = (len + chunk - 1) / chunk;
    for (int64_t i = 0; i < batch; i++) {
        const float *Ai = A + i * stride_a, *Bi = B + i * stride_b;
        float *Ci = C + i * stride_c;
        FX_PFOR(INT64_MAX, t, parts, {
            int64_t lo = t * chunk, n = (lo + chunk < len ? chunk : len - lo);
            if (by_rows) /* rows lo.. of op(A) and of C */
                sgemm1(ta, tb, n, N, K, alpha, ta ? Ai + lo : Ai + lo * lda, lda, Bi, ldb, beta,
                       Ci + lo * ldc, ldc);
            else /* columns lo.. of op(B) and of C */
                sgemm1(ta, tb, M, n, K, alpha, Ai, lda, tb ? Bi + lo * ldb : Bi + lo, ldb, beta,
                       Ci + lo, ldc);
        });
    }
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

/* ------------------------------------------------------- kernel choice */

char *openblas_get_corename(void);

const char *fx_blas_core(void) { return openblas_get_corename(); }

/* The best OpenBLAS kernel family this CPU can run, from cpuid. */
const char *fx_blas_best_core(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return NULL;
}

/* Kernel families older than AVX2: a CPU that has AVX2 but got one of these
 * was misdetected (OpenBLAS 0.3.21 does this for some newer Xeons under
 * virtualisation, and its SSE3 kernels run at half speed or less). */
static bool pre_avx2(const char *core)
{
    static const char *old[] = { "prescott", "core2", "penryn", "dunnington", "nehalem",
                                 "atom", "sandybridge", "katmai", "coppermine", "northwood",
                                 "banias", "unknown" };
    for (size_t i = 0; core && i < sizeof old / sizeof *old; i++)
        if (strcasecmp(core, old[i]) == 0)
            return true;
    return false;
}

int fx_blas_reexec_if_misdetected(char **argv)
{
    const char *best = fx_blas_best_core();
    if (!argv || getenv("OPENBLAS_CORETYPE") || !best || !pre_avx2(fx_blas_core()))
        return 0;
    /* OpenBLAS reads OPENBLAS_CORETYPE once, when it is loaded: only a fresh
     * image of this program can pick it up. */
    if (setenv("OPENBLAS_CORETYPE", best, 1) != 0)
        return -1;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE");
    return -1; /* exec failed: carry on with the detected kernels */
}
