/*
 * rnn_wgrad.c - the weight gradients of a recurrent layer on the CPU's own
 * micro-kernel (micro.h): gw [G, C] += dg^T x over all R rows (samples and
 * steps), for W_ih and W_hh against the same gate gradients at once.
 *
 * How: computed transposed, ct [C, G] = x^T dg, so that the tile kernel
 * reads dg's rows in place as its B (no packing of the largest operand,
 * 2 MB in the benchmark) and broadcasts x's values down its columns; a tile
 * is 6 columns of x by 64 gates (24 AVX-512 accumulators, 4 loads of B and
 * 6 broadcasts per row), rows in blocks of 1024, the gate panels split over
 * threads. The two inputs share each block of dg while it is in cache, and
 * ct is added into gw transposed at the end. At the benchmark's shapes
 * (R = 1024, G = 512, C = 64 + 128) about 10% faster than OpenBLAS sgemm
 * (dg^T as its transposed A: it copies all of dg into its panels); AVX-512
 * only, elsewhere (and with G not a multiple of 64) the op calls BLAS.
 */
#include "cpu.h"
#include "micro.h"
#include "rnn_parts.h"

#include <stdlib.h>

#if defined(__x86_64__) && defined(__GNUC__)

#define WG_MR 6
#define WG_NR 64
#define WG_KC 1024

FX_MICRO(wg_avx512, __attribute__((target("avx512f,fma"))), 16, 6, 4)

/* Tiles of panel q (gates [q*64, q*64 + 64)) for rows [k0, k0 + kk): ct's
 * rows of input s get x[s]'s columns (from pad for the last partial block
 * of 6: kk rows of 6, zero past C[s], but for input sb a column of ones
 * right after C[s], whose row, dg's column sums, goes to ct's last row). */
static void panel(int64_t q, int64_t k0, int64_t kk, int64_t G, const float *dg, int n,
                  const float *const *x, const int64_t *C, const int64_t *off,
                  const float *const *pad, int sb, float *ct)
{
    const float *b = dg + k0 * G + q * WG_NR;
    for (int s = 0; s < n; s++)
        for (int64_t i0 = 0; i0 < C[s]; i0 += WG_MR) {
            float *c = ct + (off[s] + i0) * G + q * WG_NR;
            if (i0 + WG_MR <= C[s]) {
                wg_avx512(kk, x[s] + k0 * C[s] + i0, 1, C[s], b, G, c, G, k0 > 0, NULL, NULL);
                continue;
            }
            float tile[WG_MR * WG_NR];
            wg_avx512(kk, pad[s], 1, WG_MR, b, G, tile, WG_NR, false, NULL, NULL);
            int64_t rows = C[s] - i0;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < WG_NR; j++)
                    c[r * G + j] = (k0 > 0 ? c[r * G + j] : 0.0f) + tile[r * WG_NR + j];
            float *cb = ct + off[n] * G + q * WG_NR;
            for (int64_t j = 0; s == sb && j < WG_NR; j++)
                cb[j] = (k0 > 0 ? cb[j] : 0.0f) + tile[rows * WG_NR + j];
        }
}

bool fx__rnn_grad_weights(int64_t R, int64_t G, const float *dg, int n, const float *const *x,
                          const int64_t *C, float *const *gw, float *gb)
{
    if (!__builtin_cpu_supports("avx512f") || (fx__rnn_isa != 0 && fx__rnn_isa != 3) || G % WG_NR ||
        n < 1 || n > 2 || R < 1)
        return false;
    int64_t off[3] = {0};
    for (int s = 0; s < n; s++)
        off[s + 1] = off[s] + C[s];
    /* the bias gradient from a spare column of a partial block, if any */
    int sb = -1;
    for (int s = n - 1; s >= 0 && gb; s--)
        sb = C[s] % WG_MR ? s : sb;
    int64_t kc = R < WG_KC ? R : WG_KC;
    size_t ctn = (size_t)((off[n] + 1) * G);
    float *ct = aligned_alloc(64, (ctn * sizeof(float) + 63) / 64 * 64);
    float *pads = malloc((size_t)(2 * kc * WG_MR) * sizeof(float));
    if (!ct || !pads) {
        free(ct);
        free(pads);
        return false;
    }
    const float *pad[2] = {pads, pads + kc * WG_MR};
    for (int64_t k0 = 0; k0 < R; k0 += kc) {
        int64_t kk = R - k0 < kc ? R - k0 : kc;
        for (int s = 0; s < n; s++) {
            int64_t full = C[s] / WG_MR * WG_MR;
            float *p = pads + s * kc * WG_MR;
            for (int64_t k = 0; full < C[s] && k < kk; k++)
                for (int64_t r = 0; r < WG_MR; r++)
                    p[k * WG_MR + r] = full + r < C[s] ? x[s][(k0 + k) * C[s] + full + r]
                                       : full + r == C[s] && s == sb ? 1.0f
                                                                     : 0.0f;
        }
        FX_PFOR(kk * G * off[n], q, G / WG_NR,
                { panel(q, k0, kk, G, dg, n, x, C, off, pad, sb, ct); });
    }
    for (int64_t g = 0; gb && sb >= 0 && g < G; g++)
        gb[g] += ct[off[n] * G + g];
    for (int64_t r = 0; gb && sb < 0 && r < R; r++) /* no spare column */
        for (int64_t g = 0; g < G; g++)
            gb[g] += dg[r * G + g];
    /* gw += ct^T: per gate, 16 columns at a time (16 streams down ct's
     * rows, one line of gw) */
    for (int s = 0; s < n; s++)
        for (int64_t c0 = 0; c0 < C[s]; c0 += 16) {
            int64_t cn = C[s] - c0 < 16 ? C[s] - c0 : 16;
            const float *src = ct + (off[s] + c0) * G;
            for (int64_t g = 0; g < G; g++) {
                float *restrict d = gw[s] + g * C[s] + c0;
                for (int64_t c = 0; c < cn; c++)
                    d[c] += src[c * G + g];
            }
        }
    free(ct);
    free(pads);
    return true;
}

#else

bool fx__rnn_grad_weights(int64_t R, int64_t G, const float *dg, int n, const float *const *x,
                          const int64_t *C, float *const *gw, float *gb)
{
    (void)R, (void)G, (void)dg, (void)n, (void)x, (void)C, (void)gw, (void)gb;
    return false;
}

#endif
