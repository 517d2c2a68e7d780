/*
 * fx_rnn.h - Recurrent layers over variable-length sequences: simple RNN
 * (tanh or relu), GRU and LSTM, several layers, optionally bidirectional.
 * Included by fluxion.h; see there for the conventions (arena tensors, NULL
 * propagation, error messages).
 *
 * Layouts (batch first):
 *   x        [N, T, in]   N sequences of T steps; sample n uses steps [0, lengths[n])
 *   lengths  [N] i32/i64  each in [1, T]; NULL means every sample has T steps
 *   h0, c0   [L*D, N, H]  initial states (NULL: zeros); c0 for LSTM only
 *   out      [N, T, D*H]  the last layer's states; the forward direction in
 *                         columns [0, H), the reverse one in [H, 2H); zero at
 *                         positions t >= lengths[n]
 *   h_n, c_n [L*D, N, H]  final states, row l*D + d for layer l, direction d,
 *                         taken at each sample's own last valid step
 * with L layers, D = 2 if bidirectional else 1, H the hidden size. The
 * reverse direction starts at each sample's last valid step and ends at step
 * 0, as PyTorch's packed sequences do. Padded positions of x (t >=
 * lengths[n]) never affect an output or a gradient, even when they hold NaN;
 * they receive zero gradient.
 *
 * Weights and formulas are PyTorch's nn.RNN / nn.GRU / nn.LSTM, with the
 * same parameter names, so a PyTorch state dict saved as safetensors loads
 * with fx_safetensors_load_into:
 *   weight_ih_l{k}[_reverse] [G*H, in_k]  (in_0 = in, in_k = D*H above)
 *   weight_hh_l{k}[_reverse] [G*H, H]
 *   bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse] [G*H]
 * where G = 1 (RNN), 3 (GRU: gates r, z, n), 4 (LSTM: gates i, f, g, o):
 *   RNN:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)          (or relu)
 *   GRU:  r = sig(W_ir x + b_ir + W_hr h + b_hr), z likewise,
 *         n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h
 *   LSTM: i, f, o = sig(.), g = tanh(.), c' = f c + i g, h' = o tanh(c')
 *
 * Usage:
 *
 *     fx_layer *enc = fx_lstm_create("lstm", 64, 128, &(fx_recurrent_opts){
 *                                        .num_layers = 2, .bidirectional = true }, rng);
 *     fx_tensor *h_n, *c_n;
 *     fx_tensor *out = fx_recurrent_forward(enc, ctx, x, lengths, NULL, NULL, &h_n, &c_n);
 *     // out [N, T, 256]; h_n [4, N, 128]: rows 2, 3 are the top layer's directions
 *
 * fx_layer_forward(enc, ctx, x) works too (all lengths T, zero initial
 * states) and returns out, so a recurrent layer can sit in a chain.
 *
 * The whole stack is one op and one tape record: per layer and direction one
 * gemm gives the input gates of every step, then each step is a gemm with
 * W_hh and one fused pointwise kernel; backward runs through time in the
 * same way and forms each weight gradient with one gemm over all steps.
 * Inter-layer dropout and projections (PyTorch's dropout, proj_size) are not
 * supported.
 */
#ifndef FX_RNN_PUBLIC_H
#define FX_RNN_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

/* FX_RNN_COUNT is the number of modes, not one itself. */
typedef enum { FX_RNN_TANH = 0, FX_RNN_RELU, FX_RNN_GRU, FX_RNN_LSTM, FX_RNN_COUNT } fx_rnn_mode;

/* The parameters of one layer and direction (biases may be NULL). */
typedef struct {
    fx_tensor *w_ih; /* [G*H, in_k] */
    fx_tensor *w_hh; /* [G*H, H] */
    fx_tensor *b_ih; /* [G*H] or NULL */
    fx_tensor *b_hh; /* [G*H] or NULL */
} fx_rnn_weights;

typedef struct {
    fx_rnn_mode mode;
    int num_layers;                /* >= 1 */
    bool bidirectional;
    const fx_rnn_weights *weights; /* num_layers * D entries: l0, l0_reverse, l1, ... */
    const char *name;              /* for error messages (a layer's name); may be NULL */
} fx_recurrent_spec;

/*
 * The op: runs the stack on x with per-sample lengths (see the top of this
 * file for every layout). h0, c0 may be NULL (zeros). h_n and c_n (may be
 * NULL when not wanted; c_n is set to NULL except for LSTM) receive the
 * final states. Returns out, or NULL with the context's error set (bad
 * shapes, lengths outside [1, T], a dtype that is not f32 / i32 / i64).
 * Gradients flow to x, h0, c0 and every weight from out, h_n and c_n.
 */
fx_tensor *fx_recurrent(fx_ctx *ctx, const fx_recurrent_spec *spec, fx_tensor *x,
                        fx_tensor *lengths, fx_tensor *h0, fx_tensor *c0, fx_tensor **h_n,
                        fx_tensor **c_n);

typedef struct {
    int num_layers;     /* default (0): 1 */
    bool bidirectional; /* default: one direction */
    bool no_bias;       /* default: with biases b_ih, b_hh */
    bool relu;          /* fx_rnn_create only: relu instead of tanh */
    fx_device device;   /* default cpu */
} fx_recurrent_opts;

/* Layers owning their parameters under PyTorch's names, every one
 * initialised U(-1/sqrt(H), 1/sqrt(H)) as PyTorch does. NULL on a bad size
 * (input or hidden size < 1, num_layers < 0) or out of memory. */
fx_layer *fx_rnn_create(const char *name, int64_t input_size, int64_t hidden_size,
                        const fx_recurrent_opts *o, fx_rng *rng);
fx_layer *fx_gru_create(const char *name, int64_t input_size, int64_t hidden_size,
                        const fx_recurrent_opts *o, fx_rng *rng);
fx_layer *fx_lstm_create(const char *name, int64_t input_size, int64_t hidden_size,
                         const fx_recurrent_opts *o, fx_rng *rng);

/* Runs a layer made by the three functions above (fx_recurrent with its
 * weights); errors name the layer. Another layer gives FX_ERR_ARG. */
fx_tensor *fx_recurrent_forward(fx_layer *layer, fx_ctx *ctx, fx_tensor *x, fx_tensor *lengths,
                                fx_tensor *h0, fx_tensor *c0, fx_tensor **h_n, fx_tensor **c_n);

#ifdef __cplusplus
}
#endif
#endif
