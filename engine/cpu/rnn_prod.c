/*
 * rnn_prod.c - the CPU recurrence's own products (for rnn.c; see its
 * header comment for why): W_hh (or [W_ih^T; W_hh^T]) packed once per call
 * into the panels the tile kernel of micro.h reads, and products of any row
 * block against them, on the best kernel the CPU runs (fx__rnn_isa forces
 * one). Declared in rnn_parts.h.
 */
#include "cpu.h"
#include "micro.h"
#include "rnn_parts.h"

#include <stdlib.h>

FX_MICRO(micro_generic, , 4, 4, 2)
#if defined(__x86_64__) && defined(__GNUC__)
#define RNN_HAVE_X86_MICRO 1
FX_MICRO(micro_avx2, __attribute__((target("avx2,fma"))), 8, 6, 2)
FX_MICRO(micro_avx512_12, __attribute__((target("avx512f,fma"))), 16, 12, 2)
FX_MICRO(micro_avx512_8, __attribute__((target("avx512f,fma"))), 16, 8, 2)
#endif

/* For tests and measurements: 1 forces the portable kernels, 2 AVX2, 3
 * AVX-512 (each only when the CPU has it), 4 the plain path (BLAS for every
 * product); 0 picks the best the CPU has. */
int fx__rnn_isa = 0;

/* The kernel for blocks of M rows: of the best instruction set's kernels
 * (all with one NR), the one with the fewest padded rows. */
micro_kernel fx__rnn_kernel_for_rows(int64_t M)
{
#ifdef RNN_HAVE_X86_MICRO
    bool avx512 = __builtin_cpu_supports("avx512f");
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx512 && (fx__rnn_isa == 0 || fx__rnn_isa == 3)) {
        int64_t p12 = (M + 11) / 12 * 12, p8 = (M + 7) / 8 * 8;
        return p8 * 12 < p12 * 11 ? (micro_kernel){micro_avx512_8, 8, 32}
                                  : (micro_kernel){micro_avx512_12, 12, 32};
    }
    if (avx2 && fx__rnn_isa != 1)
        return (micro_kernel){micro_avx2, 6, 16};
#endif
    (void)M;
    return (micro_kernel){micro_generic, 4, 8};
}

/* Rows [k0, k0 + K) of every panel (Ktot rows each) from B(k, q) = trans ?
 * w[q*ldw + k] : w[k*ldw + q] (cols columns): whole rows copied, or columns
 * read along w's rows; zero past the last column. */
static void pack_rows(float *pp, int64_t Ktot, int64_t k0, const float *w, int64_t ldw, bool trans,
                      int64_t K, int64_t cols, int64_t nr)
{
    for (int64_t q0 = 0, p = 0; q0 < cols; q0 += nr, p++) {
        int64_t wn = cols - q0 < nr ? cols - q0 : nr;
        float *panel = pp + (p * Ktot + k0) * nr;
        if (!trans)
            for (int64_t k = 0; k < K; k++)
                memcpy(panel + k * nr, w + k * ldw + q0, (size_t)wn * sizeof(float));
        else
            for (int64_t c = 0; c < wn; c++) {
                const float *src = w + (q0 + c) * ldw;
                for (int64_t k = 0; k < K; k++)
                    panel[k * nr + c] = src[k];
            }
        for (int64_t k = 0; wn < nr && k < K; k++)
            memset(panel + k * nr + wn, 0, (size_t)(nr - wn) * sizeof(float));
    }
}

static bool alloc_panels(packed_b *pb, int64_t K, int64_t cols, int64_t nr)
{
    pb->K = K;
    pb->cols = cols;
    pb->nr = nr;
    pb->panels = (cols + nr - 1) / nr;
    size_t bytes = (size_t)(pb->panels * K * nr) * sizeof(float);
    pb->p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    return pb->p != NULL;
}

bool fx__rnn_pack_b(packed_b *pb, const float *w, int64_t ldw, bool trans, int64_t K, int64_t cols,
                    int64_t nr)
{
    if (!alloc_panels(pb, K, cols, nr))
        return false;
    pack_rows(pb->p, K, 0, w, ldw, trans, K, cols, nr);
    return true;
}

/* The last partial block of rows [full, M) of A, as MR rows of K (zero
 * past M): pad (MR x K floats). */
static void pad_rows(const prod_args *p, int64_t full, int64_t MR, float *pad)
{
    for (int64_t i = 0; i < MR; i++)
        for (int64_t k = 0; k < p->K; k++)
            pad[i * p->K + k] = full + i < p->M ? p->a[(full + i) * p->rsa + k * p->csa] : 0.0f;
}

/* Rows [i, i + MR) (from a, or from pad when i is the partial block) times
 * panel bp (ldb apart) into columns [c0, c0 + w) of C. */
static void tile_rows(const micro_kernel *mk, const prod_args *p, int64_t i, const float *pad,
                      const float *bp, int64_t ldb, const float *bias, int64_t c0, int64_t w)
{
    int64_t MR = mk->mr, nr = mk->nr, rows = p->M - i < MR ? p->M - i : MR;
    const float *a = pad ? pad : p->a + i * p->rsa;
    int64_t rsa = pad ? p->K : p->rsa, csa = pad ? 1 : p->csa;
    if (rows == MR && (w == nr || (p->c_padded && !p->add))) {
        mk->fn(p->K, a, rsa, csa, bp, ldb, p->c + i * p->ldc + c0, p->ldc, p->add, NULL, bias);
        return;
    }
    float tile[MR_MAX * NR_MAX];
    mk->fn(p->K, a, rsa, csa, bp, ldb, tile, nr, false, NULL, bias);
    int64_t cw = p->c_padded && !p->add ? nr : w;
    for (int64_t r = 0; r < rows; r++) {
        float *d = p->c + (i + r) * p->ldc + c0;
        for (int64_t q = 0; q < cw; q++)
            d[q] = p->add ? d[q] + tile[r * nr + q] : tile[r * nr + q];
    }
}

/*
 * Runs the product on micro-kernel mk (its rows split over threads when
 * threaded and the product is large). False when out of memory (nothing
 * written then).
 */
bool fx__rnn_product(const micro_kernel *mk, const prod_args *p, bool threaded)
{
    int64_t MR = mk->mr, nr = mk->nr, K = p->K, full = p->M / MR * MR;
    int64_t panels = (p->N + nr - 1) / nr, wlast = p->N - (panels - 1) * nr;
    /* the bias of a last partial panel, zero-padded */
    bool ragged = wlast < nr && p->bias && !p->bias_padded;
    float *pad = p->M <= full ? NULL : p->pad ? p->pad : malloc((size_t)(MR * K) * sizeof(float));
    float *edge = ragged ? calloc((size_t)nr, sizeof(float)) : NULL;
    if ((p->M > full && !pad) || (ragged && !edge)) {
        free(pad);
        free(edge);
        return false;
    }
    if (pad)
        pad_rows(p, full, MR, pad);
    if (edge)
        memcpy(edge, p->bias + (panels - 1) * nr, (size_t)wlast * sizeof(float));
    int64_t blocks = p->M / MR + (pad ? 1 : 0);
    double work = threaded ? (double)p->M * (double)p->N * (double)K : 0.0;
    FX_PFOR(work > 4e6 && fx__num_threads > 1 ? INT64_MAX : 0, blk, blocks, {
        int64_t i = blk * MR;
        for (int64_t q = 0; q < panels; q++) {
            int64_t c0 = q * nr, w = q == panels - 1 ? wlast : nr;
            const float *bias = edge && q == panels - 1 ? edge : p->bias ? p->bias + c0 : NULL;
            tile_rows(mk, p, i, i >= full ? pad : NULL, p->pb->p + q * p->pb->K * nr, nr, bias, c0,
                      w);
        }
    });
    if (pad != p->pad)
        free(pad);
    free(edge);
    return true;
}

/* [W_ih^T; W_hh^T] ([I + H, cols]) packed like pack_b, for the fused
 * products [x_t | h] B. False when out of memory. */
bool fx__rnn_pack_side(packed_b *pb, const float *w_hh, int64_t H, const float *w_ih, int64_t In,
                       int64_t K, int64_t nr)
{
    if (H % nr || !alloc_panels(pb, K, H + In, nr))
        return false;
    pack_rows(pb->p, K, 0, w_hh, H, false, K, H, nr);
    pack_rows(pb->p + (H / nr) * K * nr, K, 0, w_ih, In, false, K, In, nr);
    return true;
}

bool fx__rnn_pack_cat(packed_b *pb, const float *w_ih, int64_t In, const float *w_hh, int64_t H,
                      int64_t cols, int64_t nr)
{
    if (!alloc_panels(pb, In + H, cols, nr))
        return false;
    pack_rows(pb->p, In + H, 0, w_ih, In, true, In, cols, nr);
    pack_rows(pb->p, In + H, In, w_hh, H, true, H, cols, nr);
    return true;
}
