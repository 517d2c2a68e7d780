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

/* The kernel choice of rnn.c (see there): 0 the best, 3 AVX-512. */
extern int fx__rnn_isa;

/* Weight gradients of n (1 or 2) inputs against the same gate gradients:
 * gw[s] [G, C[s]] += dg^T x[s] with dg [R, G], x[s] [R, C[s]] (contiguous
 * rows). False, with nothing written, where it does not run (no AVX-512,
 * another kernel forced, G not a multiple of 64, out of memory): the caller
 * uses BLAS. */
bool fx__rnn_grad_weights(int64_t R, int64_t G, const float *dg, int n, const float *const *x,
                          const int64_t *C, float *const *gw);

#endif
