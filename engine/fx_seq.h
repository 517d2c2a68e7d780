/*
 * fx_seq.h - Attention and the CTC loss. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages).
 *
 * Self-attention over a padded batch of sequences x [N, L, E] with their
 * lengths, one decoder step that may only look back, and a CTC loss:
 *
 *     fx_layer *attn = fx_multihead_attention_create("attn", 64, 8, true, rng);
 *     fx_tensor *len = fx_tensor_from_host(ctx, FX_I32, 1, (int64_t[]){ N }, lengths);
 *     fx_tensor *y = fx_multihead_attention_forward(attn, ctx, x, x, x, len, false);
 *     fx_tensor *z = fx_multihead_attention_forward(attn, ctx, x, x, x, NULL, true);
 *
 *     // log_probs [T, N, C] from fx_log_softmax(ctx, logits, 2); targets
 *     // concatenated (1-D) or padded [N, S]; lengths i32/i64 [N].
 *     fx_tensor *loss = fx_ctc_loss(ctx, log_probs, targets, in_len, tgt_len,
 *                                   &(fx_ctc_opts){ .blank = 0, .reduction = FX_MEAN });
 *
 * Masked keys get exactly zero weight, hence no gradient, and changing the
 * keys or values there changes nothing. A query whose keys are all masked
 * gets zero weights and a zero output (PyTorch's math path gives NaN there).
 */
#ifndef FX_SEQ_PUBLIC_H
#define FX_SEQ_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- attention */

/*
 * softmax(q k^T / sqrt(E) + mask) v, as torch's scaled_dot_product_attention.
 * q [..., L, E], k [..., S, E], v [..., S, Ev] with the same leading (batch)
 * dims; the result is [..., L, Ev]. Optional masks, all combined:
 *   key_lengths: i32/i64 [N], N the first dim (needs q of rank >= 3); keys
 *     j >= key_lengths[n] are masked for every query of batch entry n (and of
 *     every head when the dims are [N, H, L, E]). Each length must be in
 *     [1, S].
 *   causal: key j is masked for query i when j > i (top-left aligned).
 *   mask: broadcastable to [..., L, S]; i32 keeps a key where nonzero (torch's
 *     boolean mask, True = attend), f32 is added to the scaled scores (-inf
 *     masks; it receives a gradient when it requires one).
 * dropout_p in [0, 1) drops attention weights in training mode only (a no-op
 * in eval mode, as nn.MultiheadAttention). NaN or +inf scores fail the op.
 */
fx_tensor *fx_scaled_dot_product_attention(fx_ctx *ctx, fx_tensor *q, fx_tensor *k, fx_tensor *v,
                                           fx_tensor *key_lengths, bool causal, fx_tensor *mask,
                                           float dropout_p);

/*
 * Multi-head attention, torch.nn.MultiheadAttention with batch_first=True:
 * parameters "in_proj_weight" [3E, E] (the q, k, v projections stacked,
 * Xavier uniform), "in_proj_bias" [3E] (zeros), and a child dense layer
 * "out_proj" with "weight" [E, E] (U(-1/sqrt(E), 1/sqrt(E))) and "bias" [E]
 * (zeros), so fx_layer_collect_params names them as PyTorch's state_dict
 * does ("<name>.in_proj_weight", "<name>.out_proj.weight", ...). bias false
 * leaves out both biases. embed_dim must divide into num_heads heads.
 * Returns NULL on a bad size.
 */
fx_layer *fx_multihead_attention_create(const char *name, int64_t embed_dim, int64_t num_heads,
                                        bool bias, fx_rng *rng);
/* query [N, L, E], key and value [N, S, E] -> [N, L, E]. key_lengths and
 * causal as fx_scaled_dot_product_attention. fx_layer_forward(mha, ctx, x) is
 * self-attention: (x, x, x, NULL, false). */
fx_tensor *fx_multihead_attention_forward(fx_layer *mha, fx_ctx *ctx, fx_tensor *query,
                                          fx_tensor *key, fx_tensor *value,
                                          fx_tensor *key_lengths, bool causal);
/* Dropout on the attention weights in training mode (default 0). */
fx_status fx_multihead_attention_set_dropout(fx_layer *mha, float p);

/* ------------------------------------------------------------------- CTC */

typedef struct {
    int64_t blank;          /* the blank class, in [0, C); default 0 */
    fx_reduction reduction; /* FX_MEAN (default): each loss / its target
                               length (at least 1), then the batch mean */
    bool zero_infinity;     /* an impossible sample gives loss 0, gradient 0 */
    bool from_logits;       /* the input is logits: log_softmax over C first */
} fx_ctc_opts;

/*
 * Connectionist temporal classification (Graves et al. 2006), as
 * torch.nn.functional.ctc_loss: log_probs [T, N, C] (time first), targets
 * i32/i64, either padded [N, W] or all samples' labels concatenated (1-D,
 * their count the sum of target_lengths); input_lengths and target_lengths
 * i32/i64 [N]. FX_NONE gives the per-sample losses [N]. opts may be NULL.
 *
 * The gradient is the exact derivative w.r.t. log_probs. PyTorch's returns
 * that plus exp(log_probs), which only agrees once it has gone through a
 * log_softmax (where the extra term cancels); w.r.t. the logits before a
 * log_softmax both are the same.
 *
 * Refused, with a message naming the sample and the sizes: an input length
 * outside [1, T]; a negative target length, or one that does not fit the
 * targets; a label outside [0, C) or equal to blank; and, unless
 * zero_infinity, a target that cannot align, i.e. target length plus the
 * number of repeated neighbouring labels exceeds the input length (PyTorch
 * returns inf there). A target length of 0 is allowed (the all-blank path).
 */
fx_tensor *fx_ctc_loss(fx_ctx *ctx, fx_tensor *log_probs, fx_tensor *targets,
                       fx_tensor *input_lengths, fx_tensor *target_lengths,
                       const fx_ctc_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
