/* op_seq.c - attention (scaled dot-product, multi-head).
 *
 * Scaled dot-product attention is one tape record: two batched products
 * (blas gemm) around the masked softmax kernel, and a backward that runs the
 * products transposed. Multi-head attention composes linear, reshape,
 * permute and that op, so its gradients come from theirs. (The CTC loss,
 * which lived here, is in loss_ctc.c with the other losses.) */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* ============================================================ attention */

/* Gradients of out = P' v with P' = dropout(softmax(scale q k^T + mask)):
 *   dv += P'^T dout;  dP' = dout v^T;  dS = softmax'(dP') (kernel);
 *   dq += scale dS k;  dk += scale dS^T q;  dmask += dS summed over the
 * dims the mask was broadcast along. */
static void sdpa_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2], *mask = n->nin > 3 ? n->in[3] : NULL;
    fx_tensor *P = n->saved[0], *drop = n->saved[1], *Pd = n->saved[2], *dout = n->out->grad;
    const fx_backend *be = fx_be(q);
    int64_t B = n->i[0], L = n->i[1], S = n->i[2], E = n->i[3], Ev = n->i[4];
    int nd = (int)n->i[5];
    float scale = n->f[0];
    if (fx_tensor_requires_grad(v)) {
        fx_tensor *dv = fx__grad(ctx, v);
        if (!dv)
            return;
        be->blas->gemm(B, true, false, S, Ev, L, 1.0f, Pd, L * S, dout, L * Ev, 1.0f, dv, S * Ev);
    }
    bool gm = mask && fx_tensor_requires_grad(mask);
    if (!fx_tensor_requires_grad(q) && !fx_tensor_requires_grad(k) && !gm)
        return;
    fx_tensor *dS = fx__tensor_new_like(ctx, P);
    if (!dS)
        return;
    be->blas->gemm(B, false, true, L, S, Ev, 1.0f, dout, L * Ev, v, S * Ev, 0.0f, dS, L * S);
    be->seq->attn_softmax_backward(P, drop, dS);
    if (fx_tensor_requires_grad(q)) {
        fx_tensor *dq = fx__grad(ctx, q);
        if (!dq)
            return;
        be->blas->gemm(B, false, false, L, E, S, scale, dS, L * S, k, S * E, 1.0f, dq, L * E);
    }
    if (fx_tensor_requires_grad(k)) {
        fx_tensor *dk = fx__grad(ctx, k);
        if (!dk)
            return;
        be->blas->gemm(B, true, false, S, E, L, scale, dS, L * S, q, L * E, 1.0f, dk, S * E);
    }
    if (gm) {
        fx_tensor *dm = fx__grad(ctx, mask);
        if (!dm || fx_tensor_numel(dm) == fx_tensor_numel(dS)) { /* not broadcast */
            if (dm)
                be->ew->axpy(1.0f, dS, dm);
            return;
        }
        fx_tensor *em = fx__expand_rank(ctx, dm, nd); /* dm's shape with P's rank */
        fx_tensor *red = em ? fx_tensor_new(ctx, FX_F32, nd, em->shape) : NULL;
        if (!red)
            return;
        be->red->reduce(FX_RED_SUM, dS, red, NULL);
        be->ew->axpy(1.0f, red, dm);
    }
}

/* Fills the mask description for scores [batch dims of q, L, S]: the
 * optional mask must broadcast to that shape. */
static bool sdpa_mask(fx_ctx *ctx, const char *op, const fx_tensor *q, int64_t S,
                      fx_tensor *mask, fx_attn_mask *m)
{
    int nd = q->ndim;
    m->nbd = nd - 2;
    m->batch = fx__shape_numel(nd - 2, q->shape);
    m->L = q->shape[nd - 2];
    m->S = S;
    for (int d = 0; d < nd - 2; d++)
        m->bshape[d] = q->shape[d];
    m->mask = mask;
    if (!mask)
        return true;
    char s1[96], s2[96];
    bool ok = mask->ndim <= nd && (mask->dtype == FX_F32 || mask->dtype == FX_I32);
    int lead = nd - mask->ndim;
    for (int d = 0; ok && d < nd; d++) {
        int64_t want = d < nd - 2 ? q->shape[d] : (d == nd - 2 ? m->L : S);
        int64_t have = d < lead ? 1 : mask->shape[d - lead];
        ok = have == want || have == 1;
        m->mstride[d] = (d < lead || have == 1) ? 0 : mask->strides[d - lead];
    }
    if (mask->dtype != FX_F32 && mask->dtype != FX_I32)
        fx__op_fail(ctx, FX_ERR_DTYPE, op, "mask must be i32 (nonzero = attend) or f32 (added "
                    "to the scores), got %s %s", fx_dtype_name(mask->dtype),
                    fx_shape_str(mask, s1, sizeof s1));
    else if (!ok)
        fx__op_fail(ctx, FX_ERR_SHAPE, op, "mask %s does not broadcast to the scores [...,%lld,%lld] "
                    "of q %s", fx_shape_str(mask, s1, sizeof s1), (long long)m->L, (long long)S,
                    fx_shape_str(q, s2, sizeof s2));
    return ok;
}

/* Checks key_lengths (integer [N], N = q's first dim, values in [1, S]) and
 * fills the mask's length fields. */
static bool sdpa_lengths(fx_ctx *ctx, const char *op, const fx_tensor *q, int64_t S,
                         fx_tensor *len, fx_attn_mask *m)
{
    m->key_lengths = NULL;
    m->per_length = 1;
    if (!len)
        return true;
    char s1[96];
    if (q->ndim < 3) {
        fx__op_fail(ctx, FX_ERR_SHAPE, op, "key_lengths need a batch dim: q is %s, use [N,...,L,E]",
                    fx_shape_str(q, s1, sizeof s1));
        return false;
    }
    if (!fx__op_check_lengths(ctx, op, "key_lengths", len, q->shape[0]))
        return false;
    len = fx_contiguous(ctx, len);
    if (!len)
        return false;
    int64_t bad = fx_be(len)->seq->check_lengths(len, 1, S);
    if (bad >= 0) {
        fx__op_fail(ctx, FX_ERR_VALUE, op, "key_lengths[%lld] = %lld is outside [1, %lld], the "
                    "keys of k", (long long)bad, fx__int_at(ctx, len, bad), (long long)S);
        return false;
    }
    m->key_lengths = len;
    m->per_length = q->shape[0] ? m->batch / q->shape[0] : 1;
    return true;
}

fx_tensor *fx_scaled_dot_product_attention(fx_ctx *ctx, fx_tensor *q, fx_tensor *k, fx_tensor *v,
                                           fx_tensor *key_lengths, bool causal, fx_tensor *mask,
                                           float dropout_p)
{
    static const char *op = "scaled_dot_product_attention";
    if (!fx__op_check(ctx, op, 3, (fx_tensor *[]){ q, k, v }))
        return NULL;
    char s1[96], s2[96], s3[96];
    int nd = q->ndim;
    bool ok = nd >= 2 && k->ndim == nd && v->ndim == nd;
    for (int d = 0; ok && d < nd - 2; d++)
        ok = k->shape[d] == q->shape[d] && v->shape[d] == q->shape[d];
    ok = ok && k->shape[nd - 1] == q->shape[nd - 1] && v->shape[nd - 2] == k->shape[nd - 2];
    if (!ok)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "q, k, v must be [...,L,E], [...,S,E], "
                           "[...,S,Ev] with equal leading dims: got %s, %s, %s",
                           fx_shape_str(q, s1, 96), fx_shape_str(k, s2, 96),
                           fx_shape_str(v, s3, 96));
    int64_t L = q->shape[nd - 2], E = q->shape[nd - 1], S = k->shape[nd - 2], Ev = v->shape[nd - 1];
    int64_t B = fx__shape_numel(nd - 2, q->shape);
    if (!fits_int(L) || !fits_int(S) || !fits_int(E) || !fits_int(Ev) || B < 0 ||
        fx__shape_numel(3, (int64_t[]){ B, L, S }) < 0)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "dimensions too large: q %s, k %s",
                           fx_shape_str(q, s1, 96), fx_shape_str(k, s2, 96));
    if (!(dropout_p >= 0.0f && dropout_p < 1.0f))
        return fx__op_fail(ctx, FX_ERR_ARG, op, "dropout_p must be in [0, 1), got %g",
                           (double)dropout_p);
    fx_attn_mask m = { 0 };
    m.causal = causal;
    if (mask && (mask->device.type != ctx->dev.type || mask->device.index != ctx->dev.index))
        return fx__op_fail(ctx, FX_ERR_DEVICE, op, "mask is on %s but the context runs on %s",
                           fx_device_str(mask->device, s1, 96), fx_device_str(ctx->dev, s2, 96));
    if (!sdpa_mask(ctx, op, q, S, mask, &m) || !sdpa_lengths(ctx, op, q, S, key_lengths, &m))
        return NULL;
    q = fx_contiguous(ctx, q);
    k = fx_contiguous(ctx, k);
    v = fx_contiguous(ctx, v);
    int64_t pshape[FX_MAX_DIMS], oshape[FX_MAX_DIMS];
    for (int d = 0; d < nd - 2; d++)
        pshape[d] = oshape[d] = q ? q->shape[d] : 0;
    pshape[nd - 2] = oshape[nd - 2] = L;
    pshape[nd - 1] = S;
    oshape[nd - 1] = Ev;
    fx_tensor *P = q && k && v ? fx_tensor_new(ctx, FX_F32, nd, pshape) : NULL;
    fx_tensor *y = P ? fx_tensor_new(ctx, FX_F32, nd, oshape) : NULL;
    if (!y)
        return NULL;
    const fx_backend *be = fx_be(q);
    float scale = E ? (float)(1.0 / sqrt((double)E)) : 1.0f;
    be->blas->gemm(B, false, true, L, S, E, scale, q, L * E, k, S * E, 0.0f, P, L * S);
    int64_t bad = be->seq->attn_softmax(&m, P);
    if (bad)
        return fx__op_fail(ctx, FX_ERR_VALUE, op, "%lld rows of attention weights are not finite "
                           "(q %s, k %s): NaN or inf in q, k or the mask?", (long long)bad,
                           fx_shape_str(q, s1, 96), fx_shape_str(k, s2, 96));
    fx_tensor *drop = NULL, *Pd = P;
    if (ctx->training && dropout_p > 0.0f) {
        drop = fx__tensor_new_like(ctx, P);
        Pd = drop ? fx__tensor_new_like(ctx, P) : NULL;
        if (!Pd)
            return NULL;
        be->ew->dropout_mask(drop, dropout_p, fx_rng_u64(&ctx->rng));
        be->ew->binary(FX_BIN_MUL, P, drop, Pd);
    }
    be->blas->gemm(B, false, false, L, Ev, S, 1.0f, Pd, L * S, v, S * Ev, 0.0f, y, L * Ev);
    bool gm = mask && mask->dtype == FX_F32;
    fx_node *n = fx__record(ctx, op, sdpa_backward, y, gm ? 4 : 3,
                            (fx_tensor *[]){ q, k, v, mask });
    if (n) {
        n->saved[0] = P;
        n->saved[1] = drop;
        n->saved[2] = Pd;
        int64_t iv[6] = { B, L, S, E, Ev, nd };
        for (int i = 0; i < 6; i++)
            n->i[i] = iv[i];
        n->f[0] = scale;
    }
    return y;
}

/* ------------------------------------------------------- multi-head */

/* The layer's configuration; the tensors are owned by its parameter store
 * and out by its children. */
typedef struct {
    int64_t E, H;
    float dropout;
    fx_tensor *w_in, *b_in; /* [3E, E], [3E] or NULL */
    fx_layer *out;          /* "out_proj" */
} mha_data;

static fx_tensor *mha_self_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    return fx_multihead_attention_forward(self, ctx, x, x, x, NULL, false);
}

/*
 * Projects x [N, T, E] with rows [r0, r0 + parts E) of the in-projection and
 * splits the result into parts tensors of heads [N, H, T, D] (contiguous
 * views of one permuted copy). parts > 1 when one input feeds several of
 * q, k, v (self-attention: one product of width 3E).
 */
static bool mha_project(fx_ctx *ctx, const mha_data *d, fx_tensor *x, int64_t r0, int parts,
                        fx_tensor **out)
{
    int64_t E = d->E, H = d->H, rows = parts * E, N = x->shape[0], T = x->shape[1];
    bool all = rows == 3 * E;
    fx_tensor *w = all ? d->w_in : fx_slice(ctx, d->w_in, 0, r0, r0 + rows, 1);
    fx_tensor *b = !d->b_in || all ? d->b_in : fx_slice(ctx, d->b_in, 0, r0, r0 + rows, 1);
    if (!w || (d->b_in && !b))
        return false;
    fx_tensor *y = fx_linear(ctx, x, w, b); /* [N, T, parts E] */
    y = fx_reshape(ctx, y, 5, (int64_t[]){ N, T, parts, H, E / H });
    y = fx_contiguous(ctx, fx_permute(ctx, y, (int[]){ 2, 0, 3, 1, 4 })); /* [parts, N, H, T, D] */
    for (int p = 0; p < parts; p++)
        out[p] = fx_reshape(ctx, fx_slice(ctx, y, 0, p, p + 1, 1), 4,
                            (int64_t[]){ N, H, T, E / H });
    return out[parts - 1] != NULL;
}

fx_tensor *fx_multihead_attention_forward(fx_layer *l, fx_ctx *ctx, fx_tensor *query,
                                          fx_tensor *key, fx_tensor *value,
                                          fx_tensor *key_lengths, bool causal)
{
    static const char *op = "multihead_attention";
    if (!ctx)
        return NULL;
    if (!l || fx__layer_forward_fn(l) != mha_self_forward)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "layer '%s' was not made by "
                           "fx_multihead_attention_create", l ? fx_layer_name(l) : "(null)");
    if (!query || !key || !value)
        return ctx->status == FX_OK ? fx__op_fail(ctx, FX_ERR_ARG, op, "layer '%s': query, key or "
                                                  "value is NULL", fx_layer_name(l)) : NULL;
    if (!fx__op_check(ctx, op, 3, (fx_tensor *[]){ query, key, value }))
        return NULL;
    const mha_data *d = fx_layer_data(l);
    const char *name = fx_layer_name(l);
    char s1[96], s2[96], s3[96];
    int64_t E = d->E;
    if (query->ndim != 3 || key->ndim != 3 || value->ndim != 3 || query->shape[2] != E ||
        key->shape[2] != E || value->shape[2] != E || key->shape[0] != query->shape[0] ||
        value->shape[0] != query->shape[0] || key->shape[1] != value->shape[1])
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "layer '%s' (embed_dim %lld): query must be "
                           "[N,L,%lld], key and value [N,S,%lld]; got %s, %s, %s", name,
                           (long long)E, (long long)E, (long long)E, fx_shape_str(query, s1, 96),
                           fx_shape_str(key, s2, 96), fx_shape_str(value, s3, 96));
    fx_tensor *q = NULL, *k = NULL, *v = NULL, *h[3] = { NULL, NULL, NULL };
    if (query == key && key == value) { /* self-attention: one product */
        if (mha_project(ctx, d, query, 0, 3, h))
            q = h[0], k = h[1], v = h[2];
    } else if (key == value) {
        if (mha_project(ctx, d, query, 0, 1, h) && mha_project(ctx, d, key, E, 2, h + 1))
            q = h[0], k = h[1], v = h[2];
    } else if (mha_project(ctx, d, query, 0, 1, h) && mha_project(ctx, d, key, E, 1, h + 1) &&
               mha_project(ctx, d, value, 2 * E, 1, h + 2)) {
        q = h[0], k = h[1], v = h[2];
    }
    if (!q)
        return NULL;
    fx_tensor *a = fx_scaled_dot_product_attention(ctx, q, k, v, key_lengths, causal, NULL,
                                                   d->dropout); /* [N, H, L, D] */
    if (!a) {
        if (ctx->status != FX_OK && strstr(ctx->err, name) == NULL) {
            /* Say which layer the op belonged to. */
            size_t used = strlen(ctx->err);
            snprintf(ctx->err + used, sizeof ctx->err - used, " (in layer '%s')", name);
        }
        return NULL;
    }
    a = fx_reshape(ctx, fx_permute(ctx, a, (int[]){ 0, 2, 1, 3 }), 3,
                   (int64_t[]){ query->shape[0], query->shape[1], E });
    return a ? fx_layer_forward(d->out, ctx, a) : NULL;
}

fx_status fx_multihead_attention_set_dropout(fx_layer *l, float p)
{
    if (!l || fx__layer_forward_fn(l) != mha_self_forward || !(p >= 0.0f && p < 1.0f))
        return FX_ERR_ARG;
    ((mha_data *)fx_layer_data(l))->dropout = p;
    return FX_OK;
}

fx_layer *fx_multihead_attention_create(const char *name, int64_t embed_dim, int64_t num_heads,
                                        bool bias, fx_rng *rng)
{
    if (embed_dim <= 0 || num_heads <= 0 || embed_dim % num_heads != 0)
        return NULL;
    int64_t E = embed_dim;
    fx_layer *l = fx_layer_create(name ? name : "multihead_attention", mha_self_forward);
    mha_data *d = calloc(1, sizeof *d);
    if (!l || !d) {
        free(d);
        fx_layer_free(l);
        return NULL;
    }
    fx_layer_set_data(l, d, free);
    d->E = E;
    d->H = num_heads;
    d->w_in = fx_param_create(fx_cpu(), 2, (int64_t[]){ 3 * E, E }, FX_INIT_GLOROT_UNIFORM, 0, 0,
                              rng);
    if (fx_layer_add_param(l, "in_proj_weight", d->w_in) != FX_OK)
        goto fail;
    if (bias) {
        d->b_in = fx_param_create(fx_cpu(), 1, (int64_t[]){ 3 * E }, FX_INIT_ZEROS, 0, 0, NULL);
        if (fx_layer_add_param(l, "in_proj_bias", d->b_in) != FX_OK)
            goto fail;
    }
    /* nn.Linear's init: U(-1/sqrt(E), 1/sqrt(E)) weight, zero bias (as MHA resets it). */
    d->out = fx_dense_create("out_proj", E, E,
                             &(fx_dense_opts){ .no_bias = !bias, .init = FX_INIT_UNIFORM }, rng);
    if (!d->out || fx_layer_add_child(l, d->out) != FX_OK)
        goto fail;
    return l;
fail:
    fx_layer_free(l);
    return NULL;
}
