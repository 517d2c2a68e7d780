/*
 * rnn_cells.c - the LSTM cell's rows (forward and backward) written with
 * AVX-512 intrinsics, for rnn.c (which chooses them: see rnn_parts.h).
 *
 * Why not the compiler-vectorised rows of rnn.c: those evaluate the
 * portable fx_exp_approx (integer-key clamps, 2^n built in the exponent
 * bits) and divide for every sigmoid and tanh, five each per element; per
 * 16 lanes that was ~250 cycles, 7% of a training step of the benchmark.
 * Here the same polynomial (Cephes' expf: Cody-Waite reduction, degree 6)
 * builds 2^n with vscalefps (no clamp needed for underflow: x is only
 * clamped to [-88, 88]), rounds with vrndscaleps, and replaces the divisions
 * by vrcp14ps and one Newton step (relative error ~2^-27); the backward
 * adds dy, writes both gate-gradient copies and clears dh in the same pass
 * (rnn.c's rows did those in separate loops). The error against double
 * stays where rnn.c states its own (sigmoid ~2e-7 relative, tanh ~1e-7
 * absolute); tests/unit/test_rnn.c checks every kernel path against a
 * double reference, saturating inputs included.
 */
#include "rnn_parts.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,fma")))

/* exp(x), x clamped to [-88, 88] (NaN passes through). */
AVX512 static inline __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-88.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* 1 / d for d >= 1: vrcp14ps and one Newton step. */
AVX512 static inline __m512 recip16(__m512 d)
{
    __m512 y = _mm512_rcp14_ps(d);
    __m512 e = _mm512_fnmadd_ps(d, y, _mm512_set1_ps(1.0f));
    return _mm512_fmadd_ps(y, e, y);
}

AVX512 static inline __m512 sigmoid16(__m512 x)
{
    __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    return recip16(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|), as rnn.c's. */
AVX512 static inline __m512 tanh16(__m512 x)
{
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512i xb = _mm512_castps_si512(x);
    __m512 ax = _mm512_castsi512_ps(_mm512_andnot_si512(sign, xb));
    __m512 e = exp16(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 t = _mm512_mul_ps(_mm512_sub_ps(one, e), recip16(_mm512_add_ps(one, e)));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), _mm512_and_si512(sign, xb)));
}

/* Lanes [j, j + 16) of H, as a mask (all ones but in the last block). */
static inline __mmask16 lanes(int64_t H, int64_t j)
{
    return H - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (H - j)) - 1u);
}

AVX512 void fx__lstm_row_avx512(int64_t H, const float *restrict xg, const float *restrict hg,
                                const float *restrict cp, float *restrict c, float *restrict h,
                                float *restrict act, float *restrict y)
{
    for (int64_t j = 0; j < H; j += 16) {
        __mmask16 m = lanes(H, j);
        __m512 pi = _mm512_maskz_loadu_ps(m, hg + j), pf = _mm512_maskz_loadu_ps(m, hg + H + j);
        __m512 pg = _mm512_maskz_loadu_ps(m, hg + 2 * H + j);
        __m512 po = _mm512_maskz_loadu_ps(m, hg + 3 * H + j);
        if (xg) {
            pi = _mm512_add_ps(pi, _mm512_maskz_loadu_ps(m, xg + j));
            pf = _mm512_add_ps(pf, _mm512_maskz_loadu_ps(m, xg + H + j));
            pg = _mm512_add_ps(pg, _mm512_maskz_loadu_ps(m, xg + 2 * H + j));
            po = _mm512_add_ps(po, _mm512_maskz_loadu_ps(m, xg + 3 * H + j));
        }
        __m512 i = sigmoid16(pi), f = sigmoid16(pf), g = tanh16(pg), o = sigmoid16(po);
        __m512 cj = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, cp + j), _mm512_mul_ps(i, g));
        __m512 hj = _mm512_mul_ps(o, tanh16(cj));
        _mm512_mask_storeu_ps(act + j, m, i);
        _mm512_mask_storeu_ps(act + H + j, m, f);
        _mm512_mask_storeu_ps(act + 2 * H + j, m, g);
        _mm512_mask_storeu_ps(act + 3 * H + j, m, o);
        _mm512_mask_storeu_ps(c + j, m, cj);
        _mm512_mask_storeu_ps(h + j, m, hj);
        _mm512_mask_storeu_ps(y + j, m, hj);
    }
}

AVX512 void fx__lstm_row_backward_avx512(int64_t H, const float *restrict act,
                                         const float *restrict cp, const float *restrict c,
                                         const float *restrict dy, float *restrict dh,
                                         float *restrict dc, float *restrict dxg,
                                         float *restrict dhg, bool clear)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t j = 0; j < H; j += 16) {
        __mmask16 m = lanes(H, j);
        __m512 i = _mm512_maskz_loadu_ps(m, act + j), f = _mm512_maskz_loadu_ps(m, act + H + j);
        __m512 g = _mm512_maskz_loadu_ps(m, act + 2 * H + j);
        __m512 o = _mm512_maskz_loadu_ps(m, act + 3 * H + j);
        __m512 tc = tanh16(_mm512_maskz_loadu_ps(m, c + j));
        __m512 d =
            _mm512_add_ps(_mm512_maskz_loadu_ps(m, dh + j), _mm512_maskz_loadu_ps(m, dy + j));
        /* dc' = dc + d o (1 - tc^2) */
        __m512 dcj = _mm512_fmadd_ps(_mm512_mul_ps(d, o), _mm512_fnmadd_ps(tc, tc, one),
                                     _mm512_maskz_loadu_ps(m, dc + j));
        __m512 di = _mm512_mul_ps(_mm512_mul_ps(dcj, g), _mm512_mul_ps(i, _mm512_sub_ps(one, i)));
        __m512 df = _mm512_mul_ps(_mm512_mul_ps(dcj, _mm512_maskz_loadu_ps(m, cp + j)),
                                  _mm512_mul_ps(f, _mm512_sub_ps(one, f)));
        __m512 dg = _mm512_mul_ps(_mm512_mul_ps(dcj, i), _mm512_fnmadd_ps(g, g, one));
        __m512 dout = _mm512_mul_ps(_mm512_mul_ps(d, tc), _mm512_mul_ps(o, _mm512_sub_ps(one, o)));
        _mm512_mask_storeu_ps(dxg + j, m, di);
        _mm512_mask_storeu_ps(dxg + H + j, m, df);
        _mm512_mask_storeu_ps(dxg + 2 * H + j, m, dg);
        _mm512_mask_storeu_ps(dxg + 3 * H + j, m, dout);
        if (dhg) {
            _mm512_mask_storeu_ps(dhg + j, m, di);
            _mm512_mask_storeu_ps(dhg + H + j, m, df);
            _mm512_mask_storeu_ps(dhg + 2 * H + j, m, dg);
            _mm512_mask_storeu_ps(dhg + 3 * H + j, m, dout);
        }
        _mm512_mask_storeu_ps(dc + j, m, _mm512_mul_ps(dcj, f));
        if (clear)
            _mm512_mask_storeu_ps(dh + j, m, _mm512_setzero_ps());
    }
}

bool fx__rnn_cells_avx512(void) { return __builtin_cpu_supports("avx512f"); }

#else /* no x86 GCC: never chosen */

void fx__lstm_row_avx512(int64_t H, const float *xg, const float *hg, const float *cp, float *c,
                         float *h, float *act, float *y)
{
    (void)H, (void)xg, (void)hg, (void)cp, (void)c, (void)h, (void)act, (void)y;
}

void fx__lstm_row_backward_avx512(int64_t H, const float *act, const float *cp, const float *c,
                                  const float *dy, float *dh, float *dc, float *dxg, float *dhg,
                                  bool clear)
{
    (void)H, (void)act, (void)cp, (void)c, (void)dy, (void)dh, (void)dc, (void)dxg, (void)dhg;
    (void)clear;
}

bool fx__rnn_cells_avx512(void) { return false; }

#endif
