/* op_embed.c - the embedding op (rows of a weight matrix picked by integer
 * indices: checks, forward, backward, tape) and the embedding layer. The
 * kernels are the embed family (kern_embed.h). */
#include "internal.h"

#include <stdlib.h>

/* n->in[0]: weight; n->saved[0]: the (contiguous) indices; n->i[0]: the
 * padding index (negative: none). */
static void embedding_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *w = n->in[0];
    fx_tensor *dw = fx__grad(ctx, w);
    if (dw)
        fx_be(w)->embed->embedding_backward(n->out->grad, n->saved[0], n->i[0], dw);
}

/* Rows of weight picked by idx (fx_embed.h). */
fx_tensor *fx_embedding(fx_ctx *ctx, fx_tensor *weight, fx_tensor *idx, int64_t padding_idx)
{
    static const char *op = "embedding";
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){weight}))
        return NULL;
    char b1[96], b2[96];
    if (!idx)
        return fx_ctx_status(ctx) == FX_OK ? fx__op_fail(ctx, FX_ERR_ARG, op, "idx is NULL") : NULL;
    if (idx->device.type != ctx->dev.type || idx->device.index != ctx->dev.index) {
        char d1[32], d2[32];
        return fx__op_fail(
            ctx, FX_ERR_DEVICE, op, "the indices are on %s but the context runs on %s",
            fx_device_str(idx->device, d1, sizeof d1), fx_device_str(ctx->dev, d2, sizeof d2));
    }
    if (idx->dtype != FX_I32 && idx->dtype != FX_I64)
        return fx__op_fail(ctx, FX_ERR_DTYPE, op, "indices must be i32 or i64, got %s %s",
                           fx_dtype_name(idx->dtype), fx_shape_str(idx, b1, sizeof b1));
    if (weight->ndim != 2)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "weight must be [num,dim], got %s",
                           fx_shape_str(weight, b1, sizeof b1));
    if (idx->ndim >= FX_MAX_DIMS)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "indices %s have too many dims (at most %d)",
                           fx_shape_str(idx, b1, sizeof b1), FX_MAX_DIMS - 1);
    int64_t num = weight->shape[0], dim = weight->shape[1];
    if (padding_idx >= num)
        return fx__op_fail(ctx, FX_ERR_ARG, op,
                           "padding_idx %lld is out of range for %lld embeddings",
                           (long long)padding_idx, (long long)num);
    weight = fx_contiguous(ctx, weight);
    idx = weight ? fx_contiguous(ctx, idx) : NULL;
    if (!idx)
        return NULL;
    int64_t shape[FX_MAX_DIMS];
    for (int d = 0; d < idx->ndim; d++)
        shape[d] = idx->shape[d];
    shape[idx->ndim] = dim;
    fx_tensor *y = fx_tensor_new(ctx, FX_F32, idx->ndim + 1, shape);
    if (!y)
        return NULL;
    int64_t bad = fx_be(weight)->embed->embedding(weight, idx, y);
    if (bad >= 0) {
        fx_tensor *v = fx__view(ctx, idx, 0, NULL, NULL, idx->offset + bad);
        return fx__op_fail(ctx, FX_ERR_VALUE, op,
                           "index %lld (at flat position %lld of the indices %s) is out of range: "
                           "the vocabulary has %lld entries",
                           v ? (long long)fx_tensor_item(v) : -1LL, (long long)bad,
                           fx_shape_str(idx, b2, sizeof b2), (long long)num);
    }
    fx_node *n = fx__record(ctx, op, embedding_backward, y, 1, (fx_tensor *[]){weight});
    if (n) {
        n->saved[0] = idx;
        n->i[0] = padding_idx < 0 ? -1 : padding_idx;
    }
    return y;
}

/* ---------------------------------------------------------------- layer */

/* The layer's weight (owned by the layer's store) and padding row, so a
 * forward does no name lookup. */
typedef struct {
    fx_tensor *w;
    int64_t padding_idx; /* negative: none */
} embed_layer;

static fx_tensor *embed_layer_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    embed_layer *d = fx_layer_data(self);
    bool ok = fx_ctx_status(ctx) == FX_OK;
    fx_tensor *y = fx_embedding(ctx, d->w, x, d->padding_idx);
    if (!y && ok && fx_ctx_status(ctx) != FX_OK)
        fx__layer_name_error(ctx, self);
    return y;
}

/* weight [num, dim] ~ N(0, 1); the padding row, if any, starts at zero
 * (zeroed through a one-row view of the weight's storage). */
fx_layer *fx_embedding_create(const char *name, int64_t num, int64_t dim,
                              const fx_embedding_opts *o, fx_rng *rng)
{
    fx_embedding_opts opts = o ? *o : (fx_embedding_opts){0};
    if (num <= 0 || dim <= 0 || !rng ||
        (opts.has_padding && (opts.padding_idx < 0 || opts.padding_idx >= num)))
        return NULL;
    fx_layer *l = fx_layer_create(name ? name : "embedding", embed_layer_forward);
    embed_layer *p = calloc(1, sizeof *p);
    if (!l || !p) {
        free(p);
        fx_layer_free(l);
        return NULL;
    }
    fx_layer_set_data(l, p, free);
    p->padding_idx = opts.has_padding ? opts.padding_idx : -1;
    p->w = fx_param_create(opts.device, 2, (int64_t[]){num, dim}, FX_INIT_NORMAL, 0.0, 1.0, rng);
    if (fx_layer_add_param(l, "weight", p->w) != FX_OK)
        goto fail;
    if (opts.has_padding) {
        fx_tensor row = *p->w;
        row.ndim = 1;
        row.shape[0] = dim;
        row.strides[0] = 1;
        row.offset = p->w->offset + opts.padding_idx * dim;
        row.grad = NULL;
        if (fx_tensor_fill(&row, 0.0) != FX_OK)
            goto fail;
    }
    return l;
fail:
    fx_layer_free(l);
    return NULL;
}
