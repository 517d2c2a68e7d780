/*
 * rnn_cells.h - the LSTM cell rows in AVX-512 intrinsics (rnn_cells.c),
 * for rnn.c, which runs them where fx__rnn_cells_avx512() and its kernel
 * choice (fx__rnn_isa 0 or 3) allow; elsewhere its compiler-vectorised
 * rows. Not an API: engine/cpu/ only.
 */
#ifndef FX_CPU_RNN_CELLS_H
#define FX_CPU_RNN_CELLS_H

#include <stdbool.h>
#include <stdint.h>

/* True when the CPU runs the rows below (AVX-512F). */
bool fx__rnn_cells_avx512(void);

/* One active row: gates i, f, g, o from xg + hg (4H each, PyTorch's order)
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

#endif
