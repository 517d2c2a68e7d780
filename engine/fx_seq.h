/*
 * fx_seq.h - Attention. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages). The CTC
 * loss (fx_ctc_loss) is declared with the other losses in fluxion.h.
 *
 * Self-attention over a padded batch of sequences x [N, L, E] with their
 * lengths, and one decoder step that may only look back:
 *
 *     fx_layer *attn = fx_multihead_attention_create("attn", 64, 8, true, rng);
 *     fx_tensor *len = fx_tensor_from_host(ctx, FX_I32, 1, (int64_t[]){ N }, lengths);
 *     fx_tensor *y = fx_multihead_attention_forward(attn, ctx, x, x, x, len, false);
 *     fx_tensor *z = fx_multihead_attention_forward(attn, ctx, x, x, x, NULL, true);
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

#ifdef __cplusplus
}
#endif
#endif
