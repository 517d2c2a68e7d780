/*
 * gemm_bf16.c - matrix products with bf16 operands and fp32 sums (the bf16
 * precision of fluxion.h: fx_ctx_set_precision, fx_layer_prepack_precision).
 *
 * Both operands are rounded to bf16 (fx__bf16_from_f32: nearest even,
 * subnormals to zero, as vcvtne2ps2bf16) and stored in k pairs: one 32-bit
 * word holds the bf16 of k = 2p (low half) and k = 2p + 1 (high half), the
 * operand format of vdpbf16ps, which adds both products of a pair to an
 * fp32 lane (odd product first, then even; the products of two bf16 are
 * exact in fp32, so only the sums round). An odd K gets a zero high half.
 *   A (op(A), M x K): rows of Kh = ceil(K / 2) words.
 *   B (op(B), K x N): panels of FX_PACK_NR = 32 columns, Kh rows of 32
 *   words each, zero past N: the fp32 panel layout of kern_packed.h with
 *   k pairs for k (half the bytes per k).
 * The inference pack (fx__pack_create_precision with FX_PREC_BF16) holds B
 * (the weights) this way for good; the general product (gemm_bf16, for
 * training, where weights change every step) packs both operands per call.
 *
 * Kernels, one register tile each (MR rows x 32 columns in registers over
 * the whole inner dimension, as gemm_packed.c), from one template:
 *   avx512bf16  12 x 32, vdpbf16ps (24 zmm accumulators; 2 loads and 12
 *               broadcasts per 48 multiply-adds)
 *   avx512       8 x 32, AVX-512F: the pair widened to two fp32 vectors
 *               (a shift and a mask) and two FMAs, for CPUs without BF16
 *   portable     4 x 8, the same with 16-byte vectors, four times a panel
 * All do the same arithmetic in the same order (odd product, then even,
 * each rounded once: fused or not, a product of two bf16 is exact), so they
 * agree bit for bit except where vdpbf16ps flushes subnormal sums to zero.
 * The AVX-512 kernels are compiled with target attributes and picked at
 * run time, so the binary runs on any x86-64.
 */
#include "cpu.h"
#include "../kern_packed.h"

#include <pthread.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define BK_HAVE_X86 1
#include <immintrin.h>
#endif

int fx__bf16_isa = 0;

/* The branch-free form of fx__bf16_from_f32 (so row loops vectorise). */
static inline uint32_t r16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
    r = (u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40 : r; /* NaN: quiet */
    r = (u & 0x7f800000u) == 0 ? (u >> 16) & 0x8000 : r;       /* subnormal: signed 0 */
    return r & 0xffff;
}

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ------------------------------------------------------- micro-kernels */

/* c[i*ldc + j] for i < mr, j < ncols = ract(alpha * (bias[j] + sum_p a[i*lda
 * + p] . b[p*NR + j]) + beta * c[i*ldc + j]); beta 0 reads no c. ract: 0
 * none, 1 relu, 2 leaky relu (slope 0.01). */
typedef void (*bk_fn)(int mr, int64_t Kh, const uint32_t *a, int64_t lda, const uint32_t *b,
                      const float *bias, float *c, int64_t ldc, int ncols, float alpha,
                      float beta, int ract);


/* One k pair: acc[i][j] += a_odd * b_odd; acc[i][j] += a_even * b_even,
 * with the pair widened to fp32 (bf16 is the top half of an fp32). */
#define BK_STEP_WIDEN(VW, NV, MRMAX)                                                            \
    {                                                                                           \
        vf be[NV], bo[NV];                                                                      \
        _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++) {                                  \
            vu w = *(const vu *)(b + j * VW);                                                   \
            be[j] = (vf)(w << 16);                                                              \
            bo[j] = (vf)(w & 0xffff0000u);                                                      \
        }                                                                                       \
        _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++) {                                 \
            uint32_t aw = a[i * lda + kp];                                                      \
            float ae = u2f(aw << 16), ao = u2f(aw & 0xffff0000u);                               \
            _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++) {                              \
                acc[i][j] += ao * bo[j];                                                        \
                acc[i][j] += ae * be[j];                                                        \
            }                                                                                   \
        }                                                                                       \
    }

/* One k pair on vdpbf16ps (VW 16). */
#define BK_STEP_DP(VW, NV, MRMAX)                                                               \
    {                                                                                           \
        __m512bh bv[NV];                                                                        \
        _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                                    \
            bv[j] = (__m512bh)_mm512_loadu_si512((const void *)(b + j * VW));                   \
        _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++) {                                 \
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[i * lda + kp]);                    \
            _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                                \
                acc[i][j] = (vf)_mm512_dpbf16_ps((__m512)acc[i][j], av, bv[j]);                 \
        }                                                                                       \
    }

/* NAME(mr, ...): the tile for mr <= MRMAX rows and NV * VW columns; NAME_t
 * is the body for a constant mr (each switch case gets its own unrolled
 * copy), STEP one k pair. */
#define BK_MICRO(NAME, ATTR, VW, NV, MRMAX, STEP)                                               \
    ATTR static inline __attribute__((always_inline)) void NAME##_t(                            \
        const int mr, int64_t Kh, const uint32_t *a, int64_t lda, const uint32_t *b,            \
        const float *bias, float *c, int64_t ldc, int ncols, float alpha, float beta, int ract) \
    {                                                                                           \
        typedef float vf                                                                        \
            __attribute__((vector_size(VW * sizeof(float)), aligned(sizeof(float)), may_alias)); \
        typedef uint32_t vu __attribute__((unused))                                             \
            __attribute__((vector_size(VW * sizeof(float)), aligned(sizeof(float)), may_alias)); \
        typedef int vi __attribute__((vector_size(VW * sizeof(int)), may_alias));               \
        vf acc[MRMAX][NV], b0[NV];                                                              \
        _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                                    \
            b0[j] = bias ? *(const vf *)(bias + j * VW) : (vf){ 0 };                            \
        _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++)                                   \
            _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                                \
                acc[i][j] = b0[j];                                                              \
        for (int64_t kp = 0; kp < Kh; kp++, b += FX_PACK_NR)                                    \
            STEP(VW, NV, MRMAX)                                                                 \
        if (alpha != 1.0f)                                                                      \
            _Pragma("GCC unroll 16") for (int i = 0; i < mr; i++)                               \
                _Pragma("GCC unroll 8") for (int j = 0; j < NV; j++)                            \
                    acc[i][j] *= alpha;                                                         \
        if (beta != 0.0f) {                                                                     \
            for (int i = 0; i < mr; i++) {                                                      \
                vf row[NV];                                                                     \
                if (ncols == NV * VW)                                                           \
                    for (int j = 0; j < NV; j++)                                                \
                        row[j] = *(const vf *)(c + i * ldc + j * VW);                           \
                else {                                                                          \
                    memset(row, 0, sizeof row);                                                 \
                    memcpy(row, c + i * ldc, (size_t)ncols * sizeof(float));                    \
                }                                                                               \
                for (int j = 0; j < NV; j++)                                                    \
                    acc[i][j] += beta * row[j];                                                 \
            }                                                                                   \
        }                                                                                       \
        FX_PACK_TILE_STORE(acc, mr, NV, VW, c, ldc, ncols, ract);                               \
    }                                                                                           \
    ATTR static void NAME(int mr, int64_t Kh, const uint32_t *a, int64_t lda, const uint32_t *b, \
                          const float *bias, float *c, int64_t ldc, int ncols, float alpha,     \
                          float beta, int ract)                                                 \
    {                                                                                           \
        switch (mr) {                                                                           \
        BK_CASE(NAME, MRMAX, 1) BK_CASE(NAME, MRMAX, 2) BK_CASE(NAME, MRMAX, 3)                \
        BK_CASE(NAME, MRMAX, 4) BK_CASE(NAME, MRMAX, 5) BK_CASE(NAME, MRMAX, 6)                \
        BK_CASE(NAME, MRMAX, 7) BK_CASE(NAME, MRMAX, 8) BK_CASE(NAME, MRMAX, 9)                \
        BK_CASE(NAME, MRMAX, 10) BK_CASE(NAME, MRMAX, 11) BK_CASE(NAME, MRMAX, 12)             \
        default: break;                                                                         \
        }                                                                                       \
    }

/* Cases past MRMAX are never called (blocks are <= MRMAX rows); they are
 * clamped so that no copy indexes past the accumulators. */
#define BK_CASE(NAME, MRMAX, R)                                                                 \
    case R:                                                                                     \
        NAME##_t(R <= MRMAX ? R : MRMAX, Kh, a, lda, b, bias, c, ldc, ncols, alpha, beta,      \
                 ract);                                                                         \
        break;

BK_MICRO(bk_portable, , 4, 2, 4, BK_STEP_WIDEN)
#ifdef BK_HAVE_X86
#define BK_ATTR_512 __attribute__((target("avx512f,fma")))
#define BK_ATTR_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512bf16,fma")))
BK_MICRO(bk_avx512, BK_ATTR_512, 16, 2, 8, BK_STEP_WIDEN)
BK_MICRO(bk_avx512bf16, BK_ATTR_BF16, 16, 2, 12, BK_STEP_DP)
#endif

/* -------------------------------------------------------- conversions */

/* out[0..n) = bf16 of x[0..n), then one zero when n is odd (a whole last
 * pair). */
typedef void (*bk_cvt)(const float *x, int64_t n, uint16_t *out);
/* out[j] = bf16(r0[j]) | bf16(r1[j]) << 16 for j < n (r1 NULL: zeros). */
typedef void (*bk_pair)(const float *r0, const float *r1, int64_t n, uint32_t *out);
/* A whole panel (32 columns) of B^T: words p of rows n0.. of B (B[n*ldb +
 * k], K >= 2 columns read, the last pair of an odd K included). */
typedef void (*bk_gather)(const float *B, int64_t ldb, int64_t K, uint32_t *panel);

static void cvt_portable(const float *restrict x, int64_t n, uint16_t *restrict out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = (uint16_t)r16(x[i]);
    if (n & 1)
        out[n] = 0;
}

static void pair_portable(const float *restrict r0, const float *restrict r1, int64_t n,
                          uint32_t *restrict out)
{
    if (r1)
        for (int64_t j = 0; j < n; j++)
            out[j] = r16(r0[j]) | r16(r1[j]) << 16;
    else
        for (int64_t j = 0; j < n; j++)
            out[j] = r16(r0[j]);
}

#ifdef BK_HAVE_X86
/* vcvtne2ps2bf16, 32 at a time: the low source fills the low half. */
BK_ATTR_BF16 static void cvt_bf16(const float *restrict x, int64_t n, uint16_t *restrict out)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh r = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(out + i), (__m512i)r);
    }
    cvt_portable(x + i, n - i, out + i);
}

BK_ATTR_BF16 static void pair_bf16(const float *restrict r0, const float *restrict r1, int64_t n,
                                   uint32_t *restrict out)
{
    int64_t j = 0;
    for (; r1 && j + 16 <= n; j += 16) {
        __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r0 + j)));
        __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r1 + j)));
        _mm512_storeu_si512((void *)(out + j), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    pair_portable(r0 + j, r1 ? r1 + j : NULL, n - j, out + j);
}

/* Each k pair of 16 rows is one 64-bit gather of 8 rows twice, converted
 * in one vcvtne2ps2bf16 into the 16 words of the panel's row. */
BK_ATTR_BF16 static void gather_bf16(const float *B, int64_t ldb, int64_t K,
                                     uint32_t *restrict panel)
{
    int64_t Kh = (K + 1) / 2, full = K / 2;
    __m512i idx = _mm512_mullo_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
                                     _mm512_set1_epi64(ldb));
    for (int h = 0; h < 2; h++) {
        const float *b0 = B + 16 * h * ldb, *b1 = b0 + 8 * ldb;
        for (int64_t p = 0; p < full; p++) {
            __m512i lo = _mm512_i64gather_epi64(idx, (const void *)(b0 + 2 * p), 4);
            __m512i hi = _mm512_i64gather_epi64(idx, (const void *)(b1 + 2 * p), 4);
            __m512bh r = _mm512_cvtne2ps_pbh((__m512)hi, (__m512)lo);
            _mm512_storeu_si512((void *)(panel + p * FX_PACK_NR + 16 * h), (__m512i)r);
        }
    }
    if (Kh > full) /* odd K: the last k alone */
        for (int j = 0; j < FX_PACK_NR; j++)
            panel[full * FX_PACK_NR + j] = r16(B[j * ldb + K - 1]);
}
#endif

typedef struct {
    bk_fn fn;
    bk_cvt cvt;
    bk_pair pair;
    bk_gather gather; /* NULL: pack_panel's loop */
    int mr, nc;       /* rows, columns per call */
    const char *name;
} bk_kernel;

static bk_kernel pick(void)
{
#ifdef BK_HAVE_X86
    /* a load and a bit test each (libgcc fills the model at start-up) */
    bool avx512 = __builtin_cpu_supports("avx512f");
    bool bf16 = avx512 && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bf16");
    if (bf16 && (fx__bf16_isa == 0 || fx__bf16_isa >= 3))
        return (bk_kernel){ bk_avx512bf16, cvt_bf16, pair_bf16, gather_bf16, 12, 32,
                            "avx512bf16" };
    if (avx512 && fx__bf16_isa != 1)
        return (bk_kernel){ bk_avx512, cvt_portable, pair_portable, NULL, 8, 32, "avx512" };
#endif
    return (bk_kernel){ bk_portable, cvt_portable, pair_portable, NULL, 4, 8, "portable" };
}

const char *fx__bf16_kernel_name(void) { return pick().name; }

/* --------------------------------------------------------------- packing */

/* Rows i0..i1 of op(A) (M x K; A[k*lda + i] when trans) as words: row i at
 * out + i*Kh. */
static void pack_rows(bk_kernel kn, const float *A, int64_t lda, bool trans, int64_t i0,
                      int64_t i1, int64_t K, uint32_t *out)
{
    int64_t Kh = (K + 1) / 2;
    if (!trans) {
        for (int64_t i = i0; i < i1; i++)
            kn.cvt(A + i * lda, K, (uint16_t *)(out + i * Kh));
        return;
    }
    for (int64_t p = 0; p < Kh; p++) {
        const float *r0 = A + 2 * p * lda, *r1 = r0 + lda;
        bool odd = 2 * p + 1 < K;
        for (int64_t i = i0; i < i1; i++)
            out[i * Kh + p] = r16(r0[i]) | (odd ? r16(r1[i]) << 16 : 0);
    }
}

/* Panel q of op(B) (K x N; B[n*ldb + k] when trans): Kh rows of NR words.
 * tmp: K + 1 halves of scratch. */
static void pack_panel(bk_kernel kn, const float *B, int64_t ldb, bool trans, int64_t K,
                       int64_t N, int64_t q, uint32_t *restrict panel, uint16_t *tmp)
{
    int64_t Kh = (K + 1) / 2, n0 = q * FX_PACK_NR;
    int nc = (int)(N - n0 < FX_PACK_NR ? N - n0 : FX_PACK_NR);
    if (trans && kn.gather && nc == FX_PACK_NR && K >= 2) {
        kn.gather(B + n0 * ldb, ldb, K, panel);
        return;
    }
    if (trans) { /* column n is row n of B: convert it, scatter its words */
        for (int j = 0; j < FX_PACK_NR; j++) {
            if (j < nc) {
                kn.cvt(B + (n0 + j) * ldb, K, tmp);
                for (int64_t p = 0; p < Kh; p++) /* memcpy: halves read as words */
                    memcpy(panel + p * FX_PACK_NR + j, tmp + 2 * p, sizeof(uint32_t));
            } else
                for (int64_t p = 0; p < Kh; p++)
                    panel[p * FX_PACK_NR + j] = 0;
        }
        return;
    }
    for (int64_t p = 0; p < Kh; p++) {
        const float *r0 = B + 2 * p * ldb + n0;
        uint32_t *dst = panel + p * FX_PACK_NR;
        kn.pair(r0, 2 * p + 1 < K ? r0 + ldb : NULL, nc, dst);
        for (int j = nc; j < FX_PACK_NR; j++)
            dst[j] = 0;
    }
}

bool fx__bf16_pack_weights(fx_packed *p, const float *W)
{
    int64_t Kh = (p->K + 1) / 2;
    size_t nw = (size_t)p->np * (size_t)(Kh ? Kh : 1) * FX_PACK_NR;
    p->words = aligned_alloc(64, (nw * sizeof(uint32_t) + 63) / 64 * 64);
    uint16_t *tmp = malloc(sizeof(uint16_t) * (size_t)(p->K + 2));
    if (!p->words || !tmp) {
        free(tmp);
        return false;
    }
    bk_kernel kn = pick();
    for (int64_t q = 0; q < p->np; q++)
        pack_panel(kn, W, p->K, true, p->K, p->N, q, p->words + (size_t)q * (size_t)Kh * FX_PACK_NR,
                   tmp);
    free(tmp);
    return true;
}

/* ------------------------------------------------------------- scratch */

/*
 * The packed operands of a call live in the calling thread's scratch,
 * grown as needed and kept for its next call, so a steady-state step or
 * forward allocates nothing (tests/unit/test_alloc.c's rule; test_bf16
 * checks it for these products). It is freed when the thread exits (a
 * pthread key's destructor); the main thread's stays until the process
 * ends. Worker threads of a call read the caller's buffers.
 */
enum { SCR_A, SCR_B, SCR_TMP, SCR_N }; /* op(A) words, op(B) panels, rows */
typedef struct {
    void *p[SCR_N];
    size_t n[SCR_N];
} bk_scratch;

static _Thread_local bk_scratch *tls_scratch;
static pthread_key_t scratch_key;
static bool scratch_key_ok;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v)
{
    bk_scratch *s = v;
    for (int i = 0; s && i < SCR_N; i++)
        free(s->p[i]);
    free(s);
}

static void scratch_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

/* At least bytes of 64-byte aligned memory for slot; NULL when out of
 * memory. */
static void *scratch(int slot, size_t bytes)
{
    bk_scratch *s = tls_scratch;
    if (!s) {
        pthread_once(&scratch_once, scratch_init);
        if (!scratch_key_ok || !(s = calloc(1, sizeof *s)))
            return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
        tls_scratch = s;
    }
    if (s->n[slot] < bytes) {
        free(s->p[slot]);
        size_t nb = (bytes + bytes / 4 + 63) / 64 * 64; /* a quarter more: fewer regrowths */
        s->p[slot] = aligned_alloc(64, nb);
        s->n[slot] = s->p[slot] ? nb : 0;
    }
    return s->p[slot];
}

/* ------------------------------------------------------------- products */

/* Rows i0..i1 of C against one panel (columns col0.., of which < N). */
static void run_block(bk_kernel kn, const uint32_t *Aw, int64_t Kh, int64_t i0, int64_t i1,
                      const uint32_t *panel, int64_t col0, int64_t N, const float *bias, float *C,
                      int64_t ldc, float alpha, float beta, fx_activation act)
{
    int ract = act == FX_ACT_RELU ? 1 : act == FX_ACT_LEAKY_RELU ? 2 : 0;
    bool after = !ract && act != FX_ACT_NONE;
    for (int64_t i = i0; i < i1; i += kn.mr) {
        int mr = (int)(i1 - i < kn.mr ? i1 - i : kn.mr);
        for (int c0 = 0; c0 < FX_PACK_NR; c0 += kn.nc) {
            int64_t col = col0 + c0;
            if (col >= N)
                break;
            int nc = (int)(N - col < kn.nc ? N - col : kn.nc);
            float *c = C + i * ldc + col;
            kn.fn(mr, Kh, Aw + i * Kh, Kh, panel + c0, bias ? bias + col : NULL, c, ldc, nc,
                  alpha, beta, ract);
            if (after)
                for (int r = 0; r < mr; r++)
                    fx__pack_act_row(c + r * ldc, nc, act);
        }
    }
}

void fx__bf16_packed_gemm(const fx_packed *p, int64_t M, const float *X, int64_t lda, float *Y,
                          int64_t ldc, fx_activation act)
{
    int64_t Kh = (p->K + 1) / 2;
    bk_kernel kn = pick();
    uint32_t *Aw = scratch(SCR_A, sizeof(uint32_t) * (size_t)(M * (Kh ? Kh : 1)));
    if (!Aw) { /* out of memory: the fp32 product of the same bf16 values */
        for (int64_t i = 0; i < M; i++)
            for (int64_t n = 0; n < p->N; n++) {
                const uint32_t *w = p->words + (n / FX_PACK_NR) * Kh * FX_PACK_NR + n % FX_PACK_NR;
                float s = p->bias ? p->bias[n] : 0.0f;
                for (int64_t k = 0; k < p->K; k++) {
                    uint32_t wk = w[(k / 2) * FX_PACK_NR];
                    s += fx__bf16_to_f32(fx__bf16_from_f32(X[i * lda + k])) *
                         fx__bf16_to_f32((uint16_t)(k & 1 ? wk >> 16 : wk));
                }
                Y[i * ldc + n] = s;
                fx__pack_act_row(Y + i * ldc + n, 1, act);
            }
        return;
    }
    pack_rows(kn, X, lda, false, 0, M, p->K, Aw);
    double work = (double)M * (double)p->N * (double)p->K / 8.0;
    FX_PFOR(work, q, p->np,
            run_block(kn, Aw, Kh, 0, M, p->words + (size_t)q * (size_t)Kh * FX_PACK_NR,
                      q * FX_PACK_NR, p->N, p->bias, Y, ldc, 1.0f, 0.0f, act););
}

/* One product, scalar (no memory for the packed operands): the kernels'
 * arithmetic, element by element. */
static void gemm1_scalar(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                         const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                         float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k += 2) {
                float a0 = u2f(r16(ta ? A[k * lda + i] : A[i * lda + k]) << 16);
                float b0 = u2f(r16(tb ? B[j * ldb + k] : B[k * ldb + j]) << 16);
                float a1 = 0.0f, b1 = 0.0f;
                if (k + 1 < K) {
                    a1 = u2f(r16(ta ? A[(k + 1) * lda + i] : A[i * lda + k + 1]) << 16);
                    b1 = u2f(r16(tb ? B[j * ldb + k + 1] : B[(k + 1) * ldb + j]) << 16);
                }
                acc += a1 * b1;
                acc += a0 * b0;
            }
            acc *= alpha;
            float *c = C + i * ldc + j;
            *c = beta == 0.0f ? acc : acc + beta * *c;
        }
}

/* Rows per task of the general product: whole kernel blocks, at least
 * enough tasks for the threads when there are few panels. */
static int64_t rows_per_task(bk_kernel kn, int64_t M, int64_t np)
{
    int nt = fx__num_threads > 1 ? fx__num_threads : 1;
    int64_t parts = np >= nt ? 1 : (nt + np - 1) / np;
    int64_t rows = (M + parts - 1) / parts;
    rows = (rows + kn.mr - 1) / kn.mr * kn.mr;
    return rows > 0 ? rows : kn.mr;
}

void cpu_gemm_bf16(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const fx_tensor *a, int64_t stride_a, const fx_tensor *b, int64_t stride_b,
                   float beta, fx_tensor *c, int64_t stride_c)
{
    const float *A = fx_f32(a), *B = fx_f32(b);
    float *C = fx_f32(c);
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    if (K == 0) { /* an empty sum: C = beta * C */
        for (int64_t i = 0; i < batch; i++)
            for (int64_t j = 0; j < M * N; j++)
                C[i * stride_c + j] = beta == 0.0f ? 0.0f : beta * C[i * stride_c + j];
        return;
    }
    if (M == 0 || N == 0)
        return;
    bk_kernel kn = pick();
    int64_t Kh = (K + 1) / 2, np = (N + FX_PACK_NR - 1) / FX_PACK_NR;
    size_t pw = (size_t)Kh * FX_PACK_NR;
    uint32_t *Aw = scratch(SCR_A, sizeof(uint32_t) * (size_t)(M * Kh));
    uint32_t *Bw = scratch(SCR_B, sizeof(uint32_t) * (size_t)np * pw);
    int nt = fx__num_threads > 1 ? fx__num_threads : 1;
    int64_t tmp_len = (K + 2 + 31) / 32 * 32; /* halves per thread, whole lines */
    uint16_t *tmp = scratch(SCR_TMP, sizeof(uint16_t) * (size_t)tmp_len * (size_t)nt);
    if (!Aw || !Bw || !tmp) {
        for (int64_t i = 0; i < batch; i++)
            gemm1_scalar(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb,
                         beta, C + i * stride_c, N);
        return;
    }
    double work = (double)M * (double)N * (double)K / 8.0;
    int64_t rows = rows_per_task(kn, M, np), mparts = (M + rows - 1) / rows;
    int64_t rblk = 64; /* rows per packing task */
    for (int64_t t = 0; t < batch; t++) {
        const float *At = A + t * stride_a, *Bt = B + t * stride_b;
        float *Ct = C + t * stride_c;
        bool new_a = t == 0 || stride_a != 0, new_b = t == 0 || stride_b != 0;
        if (new_a)
            FX_PFOR(work, r, (M + rblk - 1) / rblk,
                    pack_rows(kn, At, lda, ta, r * rblk, r * rblk + rblk < M ? r * rblk + rblk : M,
                              K, Aw););
        if (new_b)
            FX_PFOR(work, q, np, {
#ifdef _OPENMP
                int tid = omp_get_thread_num();
#else
                int tid = 0;
#endif
                pack_panel(kn, Bt, ldb, tb, K, N, q, Bw + (size_t)q * pw,
                           tmp + (size_t)(tid < nt ? tid : 0) * (size_t)tmp_len);
            });
        FX_PFOR(work, task, np * mparts, {
            int64_t q = task / mparts, i0 = task % mparts * rows;
            int64_t i1 = i0 + rows < M ? i0 + rows : M;
            run_block(kn, Aw, Kh, i0, i1, Bw + (size_t)q * pw, q * FX_PACK_NR, N, NULL, Ct, N,
                      alpha, beta, FX_ACT_NONE);
        });
    }
}
