/*
 * rnn_parts.h - the parts of the CPU's recurrence kernels (rnn.c) that live
 * in their own files: the LSTM cell rows in AVX-512 intrinsics
 * (rnn_cells.c), which rnn.c runs where fx__rnn_cells_avx512() and its
 * kernel choice (fx__rnn_isa 0 or 3) allow, elsewhere its compiler-
 * vectorised rows; and the weight gradients (rnn_wgrad.c). Not an API:
 * engine/cpu/ only.
 */
#ifndef FX_CPU_RNN_PARTS_H
#define FX_CPU_RNN_PARTS_H

#include "micro.h"

#include <stdbool.h>
#include <stdint.h>

/* True when the CPU runs the rows below (AVX-512F). */
bool fx__rnn_cells_avx512(void);

/* One active row: gates i, f, g, o from xg + hg (4H each, PyTorch's order;
 * xg NULL: hg holds the whole pre-activations)
 * after their nonlinearities into act, c = f cp + i g, h = y = o tanh(c). */
void fx__lstm_row_avx512(int64_t H, const float *xg, const float *hg, const float *cp, float *c,
                         float *h, float *act, float *y);

/* Its backward for one active row, with d = dh + dy the gradient of h:
 * writes the gate gradients into dxg (and dhg when not NULL), dc = (dc +
 * d o (1 - tanh(c)^2)) f, and dh = 0 when clear (else dh is left as is,
 * for the caller to overwrite). */
void fx__lstm_row_backward_avx512(int64_t H, const float *act, const float *cp, const float *c,
                                  const float *dy, float *dh, float *dc, float *dxg, float *dhg,
                                  bool clear);

/* The kernel choice (rnn_prod.c): 1 the portable kernels, 2 AVX2, 3
 * AVX-512 (each where the CPU has it), 4 the plain path (BLAS for every
 * product); 0 the best the CPU has. */
extern int fx__rnn_isa;

/* ------------------------------------------------ products (rnn_prod.c) */

/* The tile kernel: micro.h (FX_MICRO), shared with conv.c; the gate
 * products pass their bias per column. */
typedef fx_micro_fn micro_fn;

typedef struct {
    micro_fn fn;
    int64_t mr, nr;
} micro_kernel;

#define MR_MAX 12
#define NR_MAX 32

/* A matrix B [K, cols] packed for the micro-kernels: panel p holds columns
 * [p*nr, p*nr + nr) as K rows of nr floats, zero past the last column. */
typedef struct {
    float *p;
    int64_t K, cols, nr, panels;
} packed_b;

/*
 * A product C [M, N] = (add ? C : 0) + bias + A B with A(i, k) =
 * a[i*rsa + k*csa], B packed (pb, N = pb->cols; K <= pb->K: B's first K
 * rows), bias [N] (per
 * column) or NULL; C's rows ldc apart. With
 * c_padded (and not add), C has room for whole panels (ldc >= panels * nr)
 * and every tile is stored straight into it.
 */
typedef struct {
    int64_t M, N, K;
    const float *a;
    int64_t rsa, csa;
    const packed_b *pb;
    const float *bias;
    float *c;
    int64_t ldc;
    bool add, c_padded;
    bool bias_padded; /* bias has whole panels (zero past N) */
    float *pad;       /* MR_MAX x K floats for a partial block of rows, or NULL (allocated) */
} prod_args;

/* The kernel for blocks of M rows (of the chosen instruction set's). */
micro_kernel fx__rnn_kernel_for_rows(int64_t M);

/* Packs B(k, q) = trans ? w[q*ldw + k] : w[k*ldw + q] (K rows, cols
 * columns) in panels of nr. False when out of memory. */
bool fx__rnn_pack_b(packed_b *pb, const float *w, int64_t ldw, bool trans, int64_t K, int64_t cols,
                    int64_t nr);

/* [W_ih^T; W_hh^T] ([In + H, cols]; w_ih [cols, In], w_hh [cols, H]) packed
 * like fx__rnn_pack_b. False when out of memory. */
bool fx__rnn_pack_cat(packed_b *pb, const float *w_ih, int64_t In, const float *w_hh, int64_t H,
                      int64_t cols, int64_t nr);

/* W_hh [K, H] and W_ih [K, In] side by side ([K, H + In]) packed like
 * fx__rnn_pack_b, H a whole number of panels (the first H / nr panels
 * W_hh's, the rest W_ih's). False when out of memory or H is not. */
bool fx__rnn_pack_side(packed_b *pb, const float *w_hh, int64_t H, const float *w_ih, int64_t In,
                       int64_t K, int64_t nr);

/* Runs the product on kernel mk (its rows split over threads when threaded
 * and the product is large). False when out of memory (nothing written). */
bool fx__rnn_product(const micro_kernel *mk, const prod_args *p, bool threaded);

/* Weight gradients of n (1 or 2) inputs against the same gate gradients:
 * gw[s] [G, C[s]] += dg^T x[s] with dg [R, G], x[s] [R, C[s]] (contiguous
 * rows), and gb [G] += dg's column sums when gb is not NULL (a bias). False,
 * with nothing written, where it does not run (no AVX-512, another kernel
 * forced, G not a multiple of 64, out of memory): the caller uses BLAS. */
bool fx__rnn_grad_weights(int64_t R, int64_t G, const float *dg, int n, const float *const *x,
                          const int64_t *C, float *const *gw, float *gb);

#endif
