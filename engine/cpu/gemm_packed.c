/*
 * gemm_packed.c - products against pre-packed weights, for inference
 * (kern_packed.h has the layout and the contract).
 *
 * OpenBLAS re-packs the whole weight matrix on every call from batch 3 up;
 * at the mlp's batch 8 that is most of the time. Here the weights are packed
 * once (per served version) into 32-column panels, and each product only
 * streams them: a register-tiled micro-kernel keeps an MR x 32 tile of the
 * output in vector registers over the whole inner dimension (one pass, no
 * K blocking: a panel of a 784-wide layer is 100 KB, read from L2), then
 * adds nothing more: the bias was the accumulators' start value, relu and
 * leaky relu run on the registers, and the other activations on the tile
 * right after it is stored (still in L1). One pass over the output.
 *
 * Kernels, all from one template (GCC vector types, as conv.c's):
 *   AVX-512  12 x 32 (24 zmm accumulators; 2 loads + 12 broadcasts per 24 FMAs)
 *   AVX2      6 x 16 (12 ymm), twice per panel
 *   portable  4 x 8  (16-byte vectors), four times per panel
 * The AVX-512 and AVX2 ones are compiled with target attributes and chosen
 * at run time (__builtin_cpu_supports), so the binary runs on any x86-64.
 *
 * Accuracy: each output is bias + sum_k x_k w_k accumulated in k order in
 * fp32 with FMAs, the same arithmetic as OpenBLAS's kernels but not the
 * same order of partial sums, so results match the unpacked path to
 * rounding (|diff| <= K * 2^-23 * sum_k |x_k w_k| in theory, far less in
 * practice), not bit for bit. Activations use the formulas of the
 * elementwise ops (ew.c) and add no error of their own.
 */
#include "cpu.h"
#include "../kern_packed.h"

#include <stdlib.h>

int fx__packed_isa = 0;

/* ------------------------------------------------------------- packing */

fx_packed *fx__pack_create(const fx_tensor *w, const fx_tensor *bias)
{
    return fx__pack_create_precision(w, bias, FX_PREC_F32);
}

fx_packed *fx__pack_create_precision(const fx_tensor *w, const fx_tensor *bias,
                                     fx_precision prec)
{
    if (prec != FX_PREC_F32 && prec != FX_PREC_BF16)
        return NULL;
    if (!w || w->dtype != FX_F32 || w->ndim != 2 || w->device.type != FX_DEV_CPU ||
        !fx_tensor_is_contiguous(w))
        return NULL;
    int64_t N = w->shape[0], K = w->shape[1];
    if (N <= 0 || K < 0)
        return NULL;
    if (bias && (bias->dtype != FX_F32 || bias->ndim != 1 || bias->shape[0] != N ||
                 bias->device.type != FX_DEV_CPU || !fx_tensor_is_contiguous(bias)))
        return NULL;
    fx_packed *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->N = N;
    p->K = K;
    p->prec = prec;
    p->np = (N + FX_PACK_NR - 1) / FX_PACK_NR;
    if (bias)
        p->bias = aligned_alloc(64, (size_t)p->np * FX_PACK_NR * sizeof(float));
    const float *W = fx_f32(w);
    bool ok = !bias || p->bias;
    if (ok && prec == FX_PREC_BF16)
        ok = fx__bf16_pack_weights(p, W);
    else if (ok) {
        size_t nf = (size_t)p->np * (size_t)(K ? K : 1) * FX_PACK_NR;
        p->panels = aligned_alloc(64, ((nf * sizeof(float)) + 63) / 64 * 64);
        ok = p->panels != NULL;
        for (int64_t q = 0; ok && q < p->np; q++) {
            float *panel = p->panels + (size_t)q * (size_t)K * FX_PACK_NR;
            for (int j = 0; j < FX_PACK_NR; j++) {
                int64_t n = q * FX_PACK_NR + j;
                for (int64_t k = 0; k < K; k++)
                    panel[k * FX_PACK_NR + j] = n < N ? W[n * K + k] : 0.0f;
            }
        }
    }
    if (!ok) {
        fx__pack_free(p);
        return NULL;
    }
    if (bias) {
        const float *B = fx_f32(bias);
        for (int64_t n = 0; n < p->np * FX_PACK_NR; n++)
            p->bias[n] = n < N ? B[n] : 0.0f;
    }
    p->w_storage = w->storage;
    p->w_version = w->storage->version;
    p->b_storage = bias ? bias->storage : NULL;
    p->b_version = bias ? bias->storage->version : 0;
    return p;
}

void fx__pack_free(fx_packed *p)
{
    if (!p)
        return;
    free(p->panels);
    free(p->words);
    free(p->bias);
    free(p);
}

bool fx__pack_valid(const fx_packed *p, const fx_tensor *w, const fx_tensor *bias)
{
    if (!p || !w || w->storage != p->w_storage || w->storage->version != p->w_version ||
        w->device.type != FX_DEV_CPU)
        return false;
    if (!bias)
        return p->b_storage == NULL;
    return bias->storage == p->b_storage && bias->storage->version == p->b_version;
}

bool fx__pack_fusable(fx_activation act)
{
    switch (act) {
    case FX_ACT_NONE:
    case FX_ACT_RELU:
    case FX_ACT_LEAKY_RELU:
    case FX_ACT_SIGMOID:
    case FX_ACT_TANH:
    case FX_ACT_GELU:
    case FX_ACT_ELU: return true;
    default: return false;
    }
}

/* ------------------------------------------------------- micro-kernels */

/* Activation handled on the registers: 0 none, 1 relu, 2 leaky relu. */
typedef void (*pk_fn)(int mr, int64_t K, const float *a, int64_t lda, const float *b,
                      const float *bias, float *c, int64_t ldc, int ncols, int ract);


/*
 * NAME(mr, ...): the tile of mr <= MRMAX rows and NV * VW columns of C,
 * c[i*ldc + j] = bias[j] + sum_k a[i*lda + k] * b[k*NR + j], of which the
 * first ncols are stored. NAME_t is the body for a constant mr (each case of
 * the switch gets its own fully unrolled copy).
 */
#define PK_MICRO(NAME, ATTR, VW, NV, MRMAX)                                                     \
    ATTR static inline __attribute__((always_inline)) void NAME##_t(                            \
        const int mr, int64_t K, const float *a, int64_t lda, const float *b, const float *bias, \
        float *c, int64_t ldc, int ncols, int ract)                                             \
    {                                                                                           \
        typedef float vf                                                                        \
            __attribute__((vector_size(VW * sizeof(float)), aligned(sizeof(float)), may_alias)); \
        typedef int vi __attribute__((vector_size(VW * sizeof(int)), may_alias));               \
        vf acc[MRMAX][NV], b0[NV];                                                              \
        _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                                    \
            b0[j] = bias ? *(const vf *)(bias + j * VW) : (vf){ 0 };                            \
        _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++)                                   \
            _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                                \
                acc[i][j] = b0[j];                                                              \
        for (int64_t k = 0; k < K; k++, b += FX_PACK_NR) {                                      \
            vf bv[NV];                                                                          \
            _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                                \
                bv[j] = *(const vf *)(b + j * VW);                                              \
            _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++) {                             \
                float av = a[i * lda + k];                                                      \
                _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                            \
                    acc[i][j] += av * bv[j];                                                    \
            }                                                                                   \
        }                                                                                       \
        FX_PACK_TILE_STORE(acc, mr, NV, VW, c, ldc, ncols, ract);                               \
    }                                                                                           \
    ATTR static void NAME(int mr, int64_t K, const float *a, int64_t lda, const float *b,       \
                          const float *bias, float *c, int64_t ldc, int ncols, int ract)        \
    {                                                                                           \
        switch (mr) {                                                                           \
        PK_CASE(NAME, MRMAX, 1) PK_CASE(NAME, MRMAX, 2) PK_CASE(NAME, MRMAX, 3)                \
        PK_CASE(NAME, MRMAX, 4) PK_CASE(NAME, MRMAX, 5) PK_CASE(NAME, MRMAX, 6)                \
        PK_CASE(NAME, MRMAX, 7) PK_CASE(NAME, MRMAX, 8) PK_CASE(NAME, MRMAX, 9)                \
        PK_CASE(NAME, MRMAX, 10) PK_CASE(NAME, MRMAX, 11) PK_CASE(NAME, MRMAX, 12)             \
        default: break;                                                                         \
        }                                                                                       \
    }

/* Cases past MRMAX are never called (the driver's blocks are <= MRMAX rows);
 * they are clamped so that no copy indexes past the accumulators. */
#define PK_CASE(NAME, MRMAX, R)                                                                 \
    case R:                                                                                     \
        NAME##_t(R <= MRMAX ? R : MRMAX, K, a, lda, b, bias, c, ldc, ncols, ract);              \
        break;

PK_MICRO(pk_portable, , 4, 2, 4)
#if defined(__x86_64__) && defined(__GNUC__)
#define PK_HAVE_X86 1
PK_MICRO(pk_avx2, __attribute__((target("avx2,fma"))), 8, 2, 6)
PK_MICRO(pk_avx512, __attribute__((target("avx512f,fma"))), 16, 2, 12)
#endif

typedef struct {
    pk_fn fn;
    int mr, nc; /* rows, columns per call */
    const char *name;
} pk_kernel;

static pk_kernel pick(void)
{
#ifdef PK_HAVE_X86
    /* a load and a bit test each (libgcc fills the model at start-up);
     * no cache of our own, so no data race between serving threads */
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    bool avx512 = __builtin_cpu_supports("avx512f");
    if (avx512 && (fx__packed_isa == 0 || fx__packed_isa >= 3))
        return (pk_kernel){ pk_avx512, 12, 32, "avx512" };
    if (avx2 && fx__packed_isa != 1)
        return (pk_kernel){ pk_avx2, 6, 16, "avx2" };
#endif
    return (pk_kernel){ pk_portable, 4, 8, "portable" };
}

const char *fx__packed_kernel_name(void) { return pick().name; }

/* ------------------------------------------------------------- products */

#define GELU_C 0.7978845608028654f /* sqrt(2/pi), as ew.c */
#define GELU_K 0.044715f

/* The activations that run after the store, on one tile row (in L1);
 * the same formulas as the elementwise ops so the results are theirs. */
void fx__pack_act_row(float *y, int n, fx_activation act)
{
    switch (act) {
    case FX_ACT_SIGMOID:
        for (int j = 0; j < n; j++) {
            float v = y[j];
            y[j] = v >= 0.0f ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v));
        }
        break;
    case FX_ACT_TANH:
        for (int j = 0; j < n; j++)
            y[j] = tanhf(y[j]);
        break;
    case FX_ACT_GELU:
        for (int j = 0; j < n; j++) {
            float v = y[j];
            y[j] = 0.5f * v * (1.0f + tanhf(GELU_C * (v + GELU_K * v * v * v)));
        }
        break;
    case FX_ACT_ELU:
        for (int j = 0; j < n; j++) {
            float v = y[j];
            y[j] = v > 0.0f ? v : 1.0f * expm1f(v);
        }
        break;
    default: break;
    }
}

/* All rows of C for panel q. */
static void run_panel(pk_kernel kn, const fx_packed *p, int64_t q, int64_t M, const float *X,
                      int64_t lda, float *Y, int64_t ldc, fx_activation act)
{
    int ract = act == FX_ACT_RELU ? 1 : act == FX_ACT_LEAKY_RELU ? 2 : 0;
    bool after = !ract && act != FX_ACT_NONE;
    const float *panel = p->panels + (size_t)q * (size_t)p->K * FX_PACK_NR;
    for (int64_t i0 = 0; i0 < M; i0 += kn.mr) {
        int mr = (int)(M - i0 < kn.mr ? M - i0 : kn.mr);
        for (int c0 = 0; c0 < FX_PACK_NR; c0 += kn.nc) {
            int64_t col = q * FX_PACK_NR + c0;
            if (col >= p->N)
                break;
            int nc = (int)(p->N - col < kn.nc ? p->N - col : kn.nc);
            float *c = Y + i0 * ldc + col;
            kn.fn(mr, p->K, X + i0 * lda, lda, panel + c0, p->bias ? p->bias + col : NULL, c,
                  ldc, nc, ract);
            if (after)
                for (int i = 0; i < mr; i++)
                    fx__pack_act_row(c + i * ldc, nc, act);
        }
    }
}

void fx__packed_gemm(const fx_packed *p, int64_t M, const float *X, int64_t lda, float *Y,
                     int64_t ldc, fx_activation act)
{
    if (!p || M <= 0)
        return;
    if (p->prec == FX_PREC_BF16) {
        fx__bf16_packed_gemm(p, M, X, lda, Y, ldc, act);
        return;
    }
    pk_kernel kn = pick();
    /* one panel per task; threads only when the product is worth a fork
     * (the same 2^18 multiply-adds as cpu_gemm: work / 8 against FX_GRAIN) */
    double work = (double)M * (double)p->N * (double)p->K / 8.0;
    FX_PFOR(work, q, p->np, run_panel(kn, p, q, M, X, lda, Y, ldc, act););
}

/* ------------------------------------------------ linear + relu backward */

void fx__relu_backward_bias(int64_t R, int64_t C, const float *restrict Y,
                            const float *restrict dY, float *restrict dZ, float *restrict dbias)
{
    for (int64_t r = 0; r < R; r++) {
        const float *restrict y = Y + r * C, *restrict d = dY + r * C;
        float *restrict z = dZ + r * C;
        /* both loads unconditional, so the select vectorises (a branch
         * on the sign of y mispredicts half the time) */
        if (dbias)
            for (int64_t c = 0; c < C; c++) {
                float dv = d[c], yv = y[c];
                float v = yv > 0.0f ? dv : 0.0f;
                z[c] = v;
                dbias[c] += v;
            }
        else
            for (int64_t c = 0; c < C; c++) {
                float dv = d[c], yv = y[c];
                z[c] = yv > 0.0f ? dv : 0.0f;
            }
    }
}
