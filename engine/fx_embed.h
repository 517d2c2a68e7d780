/*
 * fx_embed.h - The embedding op and layer: rows of a weight matrix picked by
 * integer indices (token ids, categories). Included by fluxion.h (and by
 * fx_norm.h, where it used to live); see fluxion.h for the conventions
 * (arena tensors, NULL propagation, error messages).
 *
 *     fx_layer *emb = fx_embedding_create("emb", vocab, 64,
 *                                         &(fx_embedding_opts){ .padding_idx = 0,
 *                                                               .has_padding = true }, rng);
 *     fx_tensor *h = fx_layer_forward(emb, ctx, tokens); // tokens i32 [B,T] -> [B,T,64]
 */
#ifndef FX_EMBED_PUBLIC_H
#define FX_EMBED_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------- op */

/* embedding: rows of weight [num,dim] picked by idx (i32/i64, any shape):
 * the result is [idx shape..., dim]. An index outside [0, num) fails with
 * FX_ERR_VALUE naming the index and num. The row padding_idx (negative:
 * none) gets no gradient. */
fx_tensor *fx_embedding(fx_ctx *ctx, fx_tensor *weight, fx_tensor *idx, int64_t padding_idx);

/* ---------------------------------------------------------------- layer */

typedef struct {
    bool has_padding;    /* default: no padding row */
    int64_t padding_idx; /* with has_padding: this row starts at zero, gets no gradient */
    fx_device device;    /* cpu */
} fx_embedding_opts;

/* embedding: "weight" [num,dim] ~ N(0,1) like PyTorch; the layer's input
 * is the index tensor (i32/i64). */
fx_layer *fx_embedding_create(const char *name, int64_t num, int64_t dim,
                              const fx_embedding_opts *o, fx_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
