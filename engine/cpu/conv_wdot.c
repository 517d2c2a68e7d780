/*
 * conv_wdot.c - CPU kernel: a convolution's weight gradient by dot products
 * along the output positions, for layers with few taps per output (a first
 * layer: one input channel, 3x3 taps; conv.c picks it).
 *
 * conv.c's weight pass computes dW_g^T = col dy_g^T as a product with
 * M = Kc rows: with Kc = 9 a 12-row tile is 3/4 full, and dy has to be
 * transposed (and masked, for a fused ReLU) into a copy first, which in such
 * a layer (few taps, many outputs, a large dy) costs many times the
 * product. Here each gradient entry dW[o, k] is a dot product of dy's row o
 * and col's row k over the block's output positions, 16 at a time: a tile
 * of 2 outputs x all Kc taps (Kc <= FX_WDOT_KC, the tile in registers) reads
 * each dy row once, where it lies, applies the ReLU mask as it loads it and
 * sums the masked row for the bias gradient in the same pass. Rows of a
 * sample that are not a multiple of 16 end in a masked load.
 *
 * AVX-512 only (conv.c falls back to the transposed product elsewhere).
 */
#include "cpu.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/*
 * One tile: outputs o0 .. o0+MO-1 (MO 1 or 2) x taps 0..KC-1. acc (MO*KC
 * sums) is added to dst[k*ldd + o] (or stored, !add), and each output's
 * masked dy sum to sums[4*o] when sums is not NULL. KC and MO are constants
 * after inlining (the switch in cpu_conv_wgrad_dot), so the sums stay in
 * registers.
 */
__attribute__((target("avx512f"), always_inline)) static inline void
wdot_tile(int KC, int MO, int64_t S, int64_t L, const float *col, int64_t ldc, const float *dy,
          const float *ym, int64_t ys, int64_t o0, float *dst, int64_t ldd, bool add, float *sums)
{
    __m512 acc[2][FX_WDOT_KC], bs[2];
    for (int i = 0; i < 2; i++) {
        bs[i] = _mm512_setzero_ps();
        for (int k = 0; k < FX_WDOT_KC; k++)
            acc[i][k] = _mm512_setzero_ps();
    }
    int64_t L16 = L / 16 * 16;
    __mmask16 tail = (__mmask16)((1u << (L - L16)) - 1);
    for (int64_t s = 0; s < S; s++) {
        const float *d = dy + s * ys + o0 * L, *m = ym ? ym + s * ys + o0 * L : NULL;
        const float *c = col + s * L;
        for (int64_t l = 0; l < L; l += 16) {
            __mmask16 lm = l < L16 ? (__mmask16)0xffff : tail;
            __m512 dv[2];
#pragma GCC unroll 2
            for (int i = 0; i < MO; i++) {
                __mmask16 mi = lm;
                if (m)
                    mi = _mm512_mask_cmp_ps_mask(lm, _mm512_maskz_loadu_ps(lm, m + i * L + l),
                                                 _mm512_setzero_ps(), _CMP_GT_OQ);
                dv[i] = _mm512_maskz_loadu_ps(mi, d + i * L + l);
                bs[i] = _mm512_add_ps(bs[i], dv[i]);
            }
#pragma GCC unroll 12
            for (int k = 0; k < KC; k++) {
                __m512 cv = _mm512_maskz_loadu_ps(lm, c + k * ldc + l);
#pragma GCC unroll 2
                for (int i = 0; i < MO; i++)
                    acc[i][k] = _mm512_fmadd_ps(dv[i], cv, acc[i][k]);
            }
        }
    }
    for (int i = 0; i < MO; i++) {
        for (int k = 0; k < KC; k++) {
            float v = _mm512_reduce_add_ps(acc[i][k]), *p = dst + k * ldd + o0 + i;
            *p = add ? *p + v : v;
        }
        if (sums)
            sums[4 * (o0 + i)] += _mm512_reduce_add_ps(bs[i]);
    }
}

/* The tiles of outputs [o0, o1) for one KC. */
#define WDOT_CASE(KC)                                                                           \
    case KC: {                                                                                  \
        int64_t o = o0;                                                                         \
        for (; o + 2 <= o1; o += 2)                                                             \
            wdot_tile(KC, 2, S, L, col, ldc, dy, ym, ys, o, dst, ldd, add, sums);               \
        if (o < o1)                                                                             \
            wdot_tile(KC, 1, S, L, col, ldc, dy, ym, ys, o, dst, ldd, add, sums);               \
        break;                                                                                  \
    }

__attribute__((target("avx512f"))) static void wdot_avx512(int64_t kc, int64_t o0, int64_t o1,
                                                           int64_t S, int64_t L, const float *col,
                                                           int64_t ldc, const float *dy,
                                                           const float *ym, int64_t ys,
                                                           float *dst, int64_t ldd, bool add,
                                                           float *sums)
{
    _Static_assert(FX_WDOT_KC == 12, "one case per tap count");
    switch (kc) {
        WDOT_CASE(1) WDOT_CASE(2) WDOT_CASE(3) WDOT_CASE(4) WDOT_CASE(5) WDOT_CASE(6)
        WDOT_CASE(7) WDOT_CASE(8) WDOT_CASE(9) WDOT_CASE(10) WDOT_CASE(11) WDOT_CASE(12)
    default:
        break;
    }
}
#endif

/* The conv kernels' instruction set override (conv.c; tests set it): 0
 * best, 3 AVX-512, others below it. */
extern int fx__conv_isa;

bool cpu_conv_wgrad_dot_ok(int64_t kc)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return kc >= 1 && kc <= FX_WDOT_KC && __builtin_cpu_supports("avx512f") &&
           (fx__conv_isa == 0 || fx__conv_isa == 3);
#else
    (void)kc;
    return false;
#endif
}

void cpu_conv_wgrad_dot(int64_t kc, int64_t o0, int64_t o1, int64_t S, int64_t L,
                        const float *col, int64_t ldc, const float *dy, const float *ym,
                        int64_t ys, float *dst, int64_t ldd, bool add, float *sums)
{
#if defined(__x86_64__) && defined(__GNUC__)
    wdot_avx512(kc, o0, o1, S, L, col, ldc, dy, ym, ys, dst, ldd, add, sums);
#else
    (void)kc, (void)o0, (void)o1, (void)S, (void)L, (void)col, (void)ldc, (void)dy, (void)ym;
    (void)ys, (void)dst, (void)ldd, (void)add, (void)sums;
#endif
}
