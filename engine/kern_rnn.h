/*
 * kern_rnn.h - kernel family: recurrent cells (simple RNN, GRU, LSTM) over
 * variable-length sequences. Part of the backend table (backend.h); the CPU
 * versions live in engine/cpu/rnn.c as the table fx_cpu_rnn.
 *
 * The op (engine/op_rnn.c) runs the time loop: one gemm for the input gates
 * of every step, then per step a gemm for h W_hh^T and one call of the fused
 * pointwise cell kernel below. The cell kernels own the sequence geometry:
 * at step s sample n is active while s < lengths[n]; its position is t = s
 * forward, t = lengths[n] - 1 - s in reverse (like a packed sequence). An
 * inactive sample carries its state unchanged and receives no gradient.
 *
 * Gates follow PyTorch (G gates of H each, in this order):
 *   tanh/relu RNN (G=1): h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)
 *   GRU (G=3: r, z, n):  r = sig(.), z = sig(.), n = tanh(x_n + r * (h_n + b_hn)),
 *                        h' = (1 - z) n + z h
 *   LSTM (G=4: i, f, g, o): c' = f c + i g, h' = o tanh(c')
 */
#ifndef FX_KERN_RNN_H
#define FX_KERN_RNN_H

#include "fluxion.h"

typedef enum { FX_CELL_TANH = 0, FX_CELL_RELU, FX_CELL_GRU, FX_CELL_LSTM } fx_cell_kind;

/*
 * One step of one direction of one layer. S is the number of steps run (the
 * longest length), D the number of directions, G*H the gate width. All
 * tensors are contiguous f32 except lengths.
 */
typedef struct {
    fx_cell_kind kind;
    bool reverse;
    int64_t step;            /* s in [0, S) */
    int64_t col;             /* this direction's first column in a row of y: dir * H */
    const fx_tensor *lengths; /* i64 [N], each in [1, T] (checked by the op) */
    /* forward */
    const fx_tensor *xg;     /* [N, T, G*H] input gates x W_ih^T + b_ih */
    const fx_tensor *hg;     /* [N, G*H] this step's h W_hh^T (without b_hh) */
    const fx_tensor *b_hh;   /* [G*H] or NULL */
    fx_tensor *hs;           /* [S+1, N, H] states by step: reads hs[s], writes hs[s+1] */
    fx_tensor *cs;           /* LSTM: cells [S+1, N, H] like hs; else NULL */
    fx_tensor *act;          /* GRU: [S, N, 4H] r, z, n and W_hn h + b_hn; LSTM: [S, N, 4H]
                              * i, f, g, o after their nonlinearities; else NULL */
    fx_tensor *y;            /* [N, T, D*H] output; writes columns [col, col + H) */
    /* backward */
    const fx_tensor *dy;     /* [N, T, D*H] gradient of y */
    fx_tensor *dh;           /* [N, H] in: d hs[s+1]; out: the pointwise part of d hs[s] */
    fx_tensor *dc;           /* LSTM [N, H] in: d cs[s+1]; out: d cs[s]; else NULL */
    fx_tensor *dxg;          /* [N, T, G*H] gradient of the input gates (+ b_ih), written at
                              * the positions of active samples */
    fx_tensor *dhg;          /* [S, N, G*H] gradient of h W_hh^T (+ b_hh) by step: writes
                              * block s, zero rows for inactive samples */
} fx_rnn_step_args;

typedef struct {
    /* Forward of step a->step: gates, state hs[s+1] (cs[s+1]), saved act,
     * and y at the active positions. Inactive samples copy hs[s] (cs[s]). */
    void (*cell_forward)(const fx_rnn_step_args *a);
    /* Backward of step a->step (run from S-1 down to 0): adds dy at the
     * active positions to dh, writes dxg and dhg, and leaves in dh (dc) the
     * gradient of hs[s] (cs[s]) except dhg_s W_hh, which the op adds with a
     * gemm. Inactive samples keep dh and dc. */
    void (*cell_backward)(const fx_rnn_step_args *a);
    /* y = x with rows t >= lengths[n] of x [N, T, C] set to zero (so padded
     * garbage, even NaN, never reaches a product). */
    void (*mask_steps)(const fx_tensor *x, const fx_tensor *lengths, fx_tensor *y);
} fx_rnn_kernels;

#endif
