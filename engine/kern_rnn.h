/*
 * kern_rnn.h - kernel family: recurrent cells (simple RNN, GRU, LSTM) over
 * variable-length sequences. Part of the backend table (backend.h); the CPU
 * versions live in engine/cpu/rnn.c as the table fx__cpu_rnn (CUDA:
 * engine/cuda/rnn.cu).
 *
 * The op (engine/op_rnn.c) forms the input gates of every step with one
 * gemm and the weight gradients with one gemm each, unless the kernels
 * below take those on (fused_gates, grad_weights, dx); they run
 * the recurrence itself (per step a product with W_hh and a fused pointwise
 * cell), so that a backend can keep the whole time loop on its side (the CPU
 * splits the samples over threads for all steps at once, a GPU keeps it on
 * one stream). They own the sequence geometry:
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
 * The recurrence of one direction of one layer over all its S steps (S: the
 * longest length), D the number of directions, G*H the gate width. All
 * tensors are contiguous f32 except lengths.
 */
typedef struct {
    fx_cell_kind kind;
    bool reverse;
    int64_t steps;            /* S */
    int64_t col;              /* this direction's first column in a row of y: dir * H */
    const fx_tensor *lengths; /* i64 [N], each in [1, T] (checked by the op) */
    const fx_tensor *w_hh;    /* [G*H, H] */
    fx_tensor *hs;            /* [S+1, N, H] states by step, hs[0] the initial state */
    fx_tensor *cs;            /* LSTM: cells [S+1, N, H] like hs; else NULL */
    fx_tensor *act;           /* GRU: [S, N, 4H] r, z, n and W_hn h + b_hn; LSTM: [S, N, 4H]
                               * i, f, g, o after their nonlinearities; else NULL */
    /* forward */
    const fx_tensor *xg;      /* [N, T, G*H] input gates x W_ih^T + b_ih */
    const fx_tensor *b_hh;    /* [G*H] or NULL (the op folds b_hh into xg except for GRU,
                               * whose b_hn is multiplied by r, and passes NULL) */
    bool h0_zero;             /* hs[0] is zero: step 0 needs no product */
    /* With gates_pending (an LSTM, on kernels that say fused_gates) xg is
     * allocated but not yet formed: the kernel forms the input gates itself
     * from x [N, T, I] (the layer's input), w_ih [G*H, I] and b_in [G*H]
     * (both biases' sum) or NULL, inside its per-step products or into xg */
    bool gates_pending;
    const fx_tensor *x, *w_ih, *b_in;
    fx_tensor *hg;            /* [N, G*H] scratch for h W_hh^T */
    fx_tensor *y;             /* [N, T, D*H] output; writes columns [col, col + H) */
    /* backward */
    const fx_tensor *dy;      /* [N, T, D*H] gradient of y */
    bool want_dh0;            /* finish the gradient of hs[0] (else it may stay partial) */
    fx_tensor *dh;            /* [N, H] in: d hs[S]; out: d hs[0] */
    fx_tensor *dc;            /* LSTM [N, H] in: d cs[S]; out: d cs[0]; else NULL */
    fx_tensor *dxg;           /* [N, T, G*H] gradient of the input gates (and b_ih), written
                               * at the positions of active samples */
    fx_tensor *dhg;           /* [S, N, G*H] gradient of h W_hh^T (and b_hh) by step, zero
                               * rows for inactive samples; may be NULL where the kernels
                               * say dense_lstm, for an LSTM run forward with every sample
                               * active at every step (S = T): then dhg[s] is dxg's column
                               * of rows at position s, read in place */
    /* backward, optional (not GRU): the layer input's gradient dx [N, T, I]
     * (w_ih above): a kernel may add dxg W_ih into it at the active
     * positions inside its per-step products and set *dx_added (else the op
     * runs that product itself) */
    fx_tensor *dx;
    bool *dx_added;
} fx_rnn_seq_args;

typedef struct {
    /* Runs steps 0..S-1: per step hg = hs[s] W_hh^T, then the fused cell
     * writes hs[s+1] (cs[s+1]), act[s] and y at the active positions.
     * Inactive samples copy hs[s] (cs[s]). */
    void (*forward)(const fx_rnn_seq_args *a);
    /* Runs steps S-1..0: per step the cell's backward adds dy at the active
     * positions to dh, writes dxg and dhg[s], leaves in dh (dc) the pointwise
     * part of d hs[s] (d cs[s]), then dh += dhg[s] W_hh. Inactive samples
     * keep dh and dc. */
    void (*backward)(const fx_rnn_seq_args *a);
    /* y = x with rows t >= lengths[n] of x [N, T, C] set to zero (so padded
     * garbage, even NaN, never reaches a product). */
    void (*mask_steps)(const fx_tensor *x, const fx_tensor *lengths, fx_tensor *y);
    /* Optional: the input gates of every step, y [R, G] = x [R, I] w^T +
     * bias (w [G, I], bias [G] or NULL; contiguous f32, R rows), for a
     * backend whose own kernel beats bias fill + gemm there (the CPU's adds
     * the bias inside the product). NULL, or false (out of memory; nothing
     * was written): the op uses the backend's bias fill and gemm. */
    bool (*gates)(int64_t R, const fx_tensor *x, const fx_tensor *w, const fx_tensor *bias,
                  fx_tensor *y);
    /* Optional: the input gradient of all steps, dx [R, C] += dg [R, G] w
     * (w [G, C]; contiguous f32, R rows). NULL, or false (out of memory;
     * nothing was written): the op uses the backend's gemm. */
    bool (*grad_input)(int64_t R, const fx_tensor *dg, const fx_tensor *w, fx_tensor *dx);
    /* Optional: the weight gradients of n (1 or 2) inputs against the same
     * gate gradients at once, gw[s] [G, C_s] += dg^T x[s] (dg [R, G], x[s]
     * [R, C_s]; contiguous f32, R rows), and gb [G] += dg's column sums
     * where gb is not NULL (the bias). NULL, or false (not run here, or out
     * of memory; nothing was written): the op uses the backend's gemm, one
     * per input, and its bias backward. */
    bool (*grad_weights)(int64_t R, const fx_tensor *dg, int n, const fx_tensor *const *x,
                         fx_tensor *const *gw, fx_tensor *gb);
    /* forward takes gates_pending (an LSTM's input gates left to it) */
    bool fused_gates;
    /* backward takes dhg NULL in the dense LSTM case above (saves a copy of
     * every gate gradient) */
    bool dense_lstm;
} fx_rnn_kernels;

#endif
