/*
 * pool.c - CPU kernels: max and average pooling over 2-D planes, window or
 * adaptive, and their backward passes (kern_conv.h; listed in conv.c's
 * table). Each (sample, channel) plane is independent, so each kernel is one
 * FX_PFOR over planes; a 2x2 max pool with stride 2 has its own vectorised
 * loop.
 */
#include "cpu.h"

/* The window of output index i along one axis: the image range [*lo, *hi)
 * and the number of positions it spans counting padding (*span, the
 * divisor of an average that counts padding). */
static inline void pool_window(int64_t i, int64_t n, int64_t on, int64_t k, int64_t s, int64_t p,
                               bool adaptive, int64_t *lo, int64_t *hi, int64_t *span)
{
    if (adaptive) {
        *lo = i * n / on;
        *hi = ((i + 1) * n + on - 1) / on;
        *span = *hi - *lo;
        return;
    }
    int64_t a = i * s - p, b = a + k < n + p ? a + k : n + p;
    *span = b - a;
    *lo = a > 0 ? a : 0;
    *hi = b < n ? b : n;
}

/* One plane of max pooling; am (may be NULL) gets each maximum's index. A
 * NaN wins, as in PyTorch, so it propagates. */
static void maxpool_plane(const fx_pool_geom *g, const float *x, float *y, int32_t *am)
{
    for (int64_t i = 0; i < g->oh; i++) {
        int64_t r0, r1, rs;
        pool_window(i, g->h, g->oh, g->kh, g->sh, g->ph, g->adaptive, &r0, &r1, &rs);
        for (int64_t j = 0; j < g->ow; j++) {
            int64_t c0, c1, cs;
            pool_window(j, g->w, g->ow, g->kw, g->sw, g->pw, g->adaptive, &c0, &c1, &cs);
            int64_t best_i = r0 * g->w + c0;
            float best = x[best_i];
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) {
                    float v = x[r * g->w + c];
                    if (v > best || (v != v && best == best)) {
                        best = v;
                        best_i = r * g->w + c;
                    }
                }
            y[i * g->ow + j] = best;
            if (am)
                am[i * g->ow + j] = (int32_t)best_i;
        }
    }
}

/* Where b beats the running maximum m (greater, or NaN over a number). */
static inline fx_v4i beats(fx_v4f b, fx_v4f m)
{
    return (b > m) | ((b != b) & (m == m));
}

/* Max pooling 2x2, stride 2, no padding: the common case, without window
 * bookkeeping, four outputs at a time (even and odd columns split by
 * shuffles, the maximum and its index picked by masks), then one by one. */
static void maxpool2_plane(const fx_pool_geom *g, const float *x, float *y, int32_t *am)
{
    const fx_v4i step = { 0, 2, 4, 6 };
    for (int64_t i = 0; i < g->oh; i++) {
        const float *r0 = x + 2 * i * g->w, *r1 = r0 + g->w;
        float *yr = y + i * g->ow;
        int32_t *ar = am ? am + i * g->ow : NULL;
        int64_t j = 0;
        for (; j + 4 <= g->ow; j += 4) {
            fx_v4f u0 = *(const fx_v4f *)(r0 + 2 * j), u1 = *(const fx_v4f *)(r0 + 2 * j + 4);
            fx_v4f l0 = *(const fx_v4f *)(r1 + 2 * j), l1 = *(const fx_v4f *)(r1 + 2 * j + 4);
            fx_v4f cand[4] = { FX_SHUF(u0, u1, 0, 2, 4, 6), FX_SHUF(u0, u1, 1, 3, 5, 7),
                            FX_SHUF(l0, l1, 0, 2, 4, 6), FX_SHUF(l0, l1, 1, 3, 5, 7) };
            int32_t base = (int32_t)(2 * i * g->w + 2 * j), w = (int32_t)g->w;
            int32_t offs[4] = { 0, 1, w, w + 1 };
            fx_v4f m = cand[0];
            fx_v4i k = step + base;
            for (int c = 1; c < 4; c++) {
                fx_v4i sel = beats(cand[c], m);
                m = (fx_v4f)((sel & (fx_v4i)cand[c]) | (~sel & (fx_v4i)m));
                k = (sel & (step + (base + offs[c]))) | (~sel & k);
            }
            *(fx_v4f *)(yr + j) = m;
            if (ar)
                *(fx_v4i *)(ar + j) = k;
        }
        for (; j < g->ow; j++) {
            float a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
            int64_t k = 2 * j;
            float m = a;
            if (b > m || (b != b && m == m))
                m = b, k = 2 * j + 1;
            if (c > m || (c != c && m == m))
                m = c, k = g->w + 2 * j;
            if (d > m || (d != d && m == m))
                m = d, k = g->w + 2 * j + 1;
            yr[j] = m;
            if (ar)
                ar[j] = (int32_t)(2 * i * g->w + k);
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FX_HAVE_POOL_AVX512 1

/* The same with AVX-512, sixteen outputs at a time with masked loads and
 * stores, so a short row (a 28-wide image gives 14 outputs) is one step:
 * the even and odd columns come apart by two-source permutes, and the
 * maximum, its index and the NaN rule are those of maxpool2_plane. */
__attribute__((target("avx512f"))) static void maxpool2_plane_avx512(const fx_pool_geom *g,
                                                                      const float *x, float *y,
                                                                      int32_t *am)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const int32_t w = (int32_t)g->w;
    for (int64_t i = 0; i < g->oh; i++) {
        const float *r0 = x + 2 * i * g->w, *r1 = r0 + g->w;
        float *yr = y + i * g->ow;
        int32_t *ar = am ? am + i * g->ow : NULL;
        for (int64_t j = 0; j < g->ow; j += 16) {
            int64_t n = g->ow - j < 16 ? g->ow - j : 16;
            __mmask16 mo = (__mmask16)((1u << n) - 1);
            __mmask16 m0 = (__mmask16)(2 * n >= 16 ? 0xffffu : (1u << (2 * n)) - 1);
            __mmask16 m1 = (__mmask16)(2 * n <= 16 ? 0 : (1u << (2 * n - 16)) - 1);
            __m512 u0 = _mm512_maskz_loadu_ps(m0, r0 + 2 * j);
            __m512 u1 = _mm512_maskz_loadu_ps(m1, r0 + 2 * j + 16);
            __m512 l0 = _mm512_maskz_loadu_ps(m0, r1 + 2 * j);
            __m512 l1 = _mm512_maskz_loadu_ps(m1, r1 + 2 * j + 16);
            __m512 cand[4] = { _mm512_permutex2var_ps(u0, even, u1),
                               _mm512_permutex2var_ps(u0, odd, u1),
                               _mm512_permutex2var_ps(l0, even, l1),
                               _mm512_permutex2var_ps(l0, odd, l1) };
            __m512i k0 = _mm512_add_epi32(even, _mm512_set1_epi32((int32_t)(2 * i * g->w + 2 * j)));
            int32_t offs[4] = { 0, 1, w, w + 1 };
            __m512 m = cand[0];
            __m512i k = k0;
            for (int c = 1; c < 4; c++) {
                __mmask16 sel = _mm512_cmp_ps_mask(cand[c], m, _CMP_GT_OQ) |
                                (_mm512_cmp_ps_mask(cand[c], cand[c], _CMP_UNORD_Q) &
                                 _mm512_cmp_ps_mask(m, m, _CMP_ORD_Q));
                m = _mm512_mask_mov_ps(m, sel, cand[c]);
                k = _mm512_mask_mov_epi32(k, sel, _mm512_add_epi32(k0, _mm512_set1_epi32(offs[c])));
            }
            _mm512_mask_storeu_ps(yr + j, mo, m);
            if (ar)
                _mm512_mask_storeu_epi32(ar + j, mo, k);
        }
    }
}

/* Its backward: dx += dy at each maximum (set: dx = that, 0 elsewhere, for
 * a plane the windows cover, even H and W), sixteen outputs a step. The
 * windows do not overlap, so each output's dy goes to the one of its four
 * elements that argmax names (a select per candidate), and the even and odd
 * columns are interleaved back into two 16-float runs per image row. */
__attribute__((target("avx512f"))) static void maxpool2_plane_backward_avx512(
    const fx_pool_geom *g, const float *dy, const int32_t *am, float *dx, bool set)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const int32_t w = (int32_t)g->w;
    for (int64_t i = 0; i < g->oh; i++) {
        float *r0 = dx + 2 * i * g->w, *r1 = r0 + g->w;
        const float *dr = dy + i * g->ow;
        const int32_t *ar = am + i * g->ow;
        for (int64_t j = 0; j < g->ow; j += 16) {
            int64_t n = g->ow - j < 16 ? g->ow - j : 16;
            __mmask16 mo = (__mmask16)((1u << n) - 1);
            __mmask16 m0 = (__mmask16)(2 * n >= 16 ? 0xffffu : (1u << (2 * n)) - 1);
            __mmask16 m1 = (__mmask16)(2 * n <= 16 ? 0 : (1u << (2 * n - 16)) - 1);
            __m512 d = _mm512_maskz_loadu_ps(mo, dr + j);
            __m512i a = _mm512_maskz_loadu_epi32(mo, ar + j);
            __m512i k0 = _mm512_add_epi32(even, _mm512_set1_epi32((int32_t)(2 * i * g->w + 2 * j)));
            __m512 v[4];
            int32_t offs[4] = { 0, 1, w, w + 1 };
            for (int c = 0; c < 4; c++)
                v[c] = _mm512_maskz_mov_ps(
                    _mm512_cmpeq_epi32_mask(a, _mm512_add_epi32(k0, _mm512_set1_epi32(offs[c]))),
                    d);
            float *rows[2] = { r0 + 2 * j, r1 + 2 * j };
            for (int r = 0; r < 2; r++) {
                __m512 p0 = _mm512_permutex2var_ps(v[2 * r], lo, v[2 * r + 1]);
                __m512 p1 = _mm512_permutex2var_ps(v[2 * r], hi, v[2 * r + 1]);
                if (set) {
                    _mm512_mask_storeu_ps(rows[r], m0, p0);
                    _mm512_mask_storeu_ps(rows[r] + 16, m1, p1);
                    continue;
                }
                _mm512_mask_storeu_ps(rows[r], m0,
                                      _mm512_add_ps(_mm512_maskz_loadu_ps(m0, rows[r]), p0));
                _mm512_mask_storeu_ps(rows[r] + 16, m1,
                                      _mm512_add_ps(_mm512_maskz_loadu_ps(m1, rows[r] + 16), p1));
            }
        }
    }
}
#endif

/* The conv kernels' instruction set override (conv.c; tests set it): 0
 * best, 3 AVX-512, others below it. */
extern int fx__conv_isa;

static bool pool_avx512(void)
{
#ifdef FX_HAVE_POOL_AVX512
    return __builtin_cpu_supports("avx512f") && (fx__conv_isa == 0 || fx__conv_isa == 3);
#else
    return false;
#endif
}

/* Average pooling of one plane (dy == NULL), or its backward: dx += dy /
 * count spread over each window (x is then dx). */
static void avgpool_plane(const fx_pool_geom *g, float *x, float *y, const float *dy)
{
    for (int64_t i = 0; i < g->oh; i++) {
        int64_t r0, r1, rs;
        pool_window(i, g->h, g->oh, g->kh, g->sh, g->ph, g->adaptive, &r0, &r1, &rs);
        for (int64_t j = 0; j < g->ow; j++) {
            int64_t c0, c1, cs;
            pool_window(j, g->w, g->ow, g->kw, g->sw, g->pw, g->adaptive, &c0, &c1, &cs);
            int64_t cnt = g->exclude_pad ? (r1 - r0) * (c1 - c0) : rs * cs;
            float inv = 1.0f / (float)cnt;
            if (dy) {
                float v = dy[i * g->ow + j] * inv;
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++)
                        x[r * g->w + c] += v;
            } else {
                float s = 0.0f;
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++)
                        s += x[r * g->w + c];
                y[i * g->ow + j] = s * inv;
            }
        }
    }
}

static bool is_pool2(const fx_pool_geom *g)
{
    return !g->adaptive && g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 &&
           g->pw == 0;
}

void cpu_pool2d(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *x, fx_tensor *y,
                fx_tensor *argmax)
{
    float *X = fx_f32(x), *Y = fx_f32(y);
    int32_t *A = argmax ? (int32_t *)fx_data(argmax) : NULL;
    int64_t in = g->h * g->w, out = g->oh * g->ow;
    bool two = is_pool2(g), wide = two && pool_avx512();
    FX_PFOR(g->planes * (in + out), p, g->planes, {
        int32_t *ap = A ? A + p * out : NULL;
        if (kind == FX_POOL_AVG)
            avgpool_plane(g, X + p * in, Y + p * out, NULL);
#ifdef FX_HAVE_POOL_AVX512
        else if (wide)
            maxpool2_plane_avx512(g, X + p * in, Y + p * out, ap);
#endif
        else if (two)
            maxpool2_plane(g, X + p * in, Y + p * out, ap);
        else
            maxpool_plane(g, X + p * in, Y + p * out, ap);
    });
}

/* One plane's backward, dx += dy routed (the element loops of
 * cpu_pool2d_backward). */
static void pool_plane_backward(const fx_pool_geom *g, fx_pool_kind kind, const float *dp,
                                const int32_t *ap, float *xp, bool wide)
{
    int64_t out = g->oh * g->ow;
    if (kind == FX_POOL_AVG) {
        avgpool_plane(g, xp, NULL, dp);
#ifdef FX_HAVE_POOL_AVX512
    } else if (wide) {
        maxpool2_plane_backward_avx512(g, dp, ap, xp, false);
#endif
    } else {
        for (int64_t k = 0; k < out; k++)
            xp[ap[k]] += dp[k];
    }
    (void)wide;
}

/* dx = the gradient, dx a new buffer: a 2x2 max pool over even planes sets
 * every element directly; other windows zero each plane while it is in
 * cache and add (the same sums as cpu_pool2d_backward into zeros). */
void cpu_pool2d_backward_set(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                             const fx_tensor *argmax, fx_tensor *dx)
{
    const float *D = fx_f32(dy);
    float *DX = fx_f32(dx);
    const int32_t *A = argmax ? (const int32_t *)fx_data(argmax) : NULL;
    int64_t in = g->h * g->w, out = g->oh * g->ow;
    bool wide = kind == FX_POOL_MAX && is_pool2(g) && pool_avx512();
    bool covers = wide && g->h % 2 == 0 && g->w % 2 == 0;
    FX_PFOR(g->planes * (in + out), p, g->planes, {
        const float *dp = D + p * out;
        const int32_t *ap = A ? A + p * out : NULL;
        float *xp = DX + p * in;
#ifdef FX_HAVE_POOL_AVX512
        if (covers) {
            maxpool2_plane_backward_avx512(g, dp, ap, xp, true);
            continue;
        }
#endif
        memset(xp, 0, (size_t)in * sizeof *xp);
        pool_plane_backward(g, kind, dp, ap, xp, wide);
    });
    (void)covers;
}

void cpu_pool2d_backward(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                         const fx_tensor *argmax, fx_tensor *dx)
{
    const float *D = fx_f32(dy);
    float *DX = fx_f32(dx);
    const int32_t *A = argmax ? (const int32_t *)fx_data(argmax) : NULL;
    int64_t in = g->h * g->w, out = g->oh * g->ow;
    bool wide = kind == FX_POOL_MAX && is_pool2(g) && pool_avx512();
    FX_PFOR(g->planes * (in + out), p, g->planes, {
        pool_plane_backward(g, kind, D + p * out, A ? A + p * out : NULL, DX + p * in, wide);
    });
}
