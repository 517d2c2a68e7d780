/*
 * export_seq.c - ONNX forms of the sequence layers: rnn, gru and lstm
 * (one ONNX RNN/GRU/LSTM per layer, time-major, gates reordered to ONNX's
 * order, lengths as sequence_lens) and attention (multihead_attention and
 * scaled_dot_product_attention written out as MatMul, Softmax and masks).
 */
#include "onnx/export_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------- recurrent */

/* PyTorch's gate blocks in ONNX's order: LSTM i,f,g,o -> i,o,f,c; GRU
 * r,z,n -> z,r,h; RNN one gate. */
static const int lstm_order[] = {0, 3, 1, 2}, gru_order[] = {1, 0, 2}, rnn_order[] = {0};

/* Copies a [G*H, cols] weight (or [G*H] bias: cols 1) with its gate
 * blocks reordered into dst. */
static void reorder(float *dst, const float *src, int G, const int *order, int64_t H, int64_t cols)
{
    for (int g = 0; g < G; g++)
        memcpy(dst + (int64_t)g * H * cols, src + (int64_t)order[g] * H * cols,
               sizeof *dst * (size_t)(H * cols));
}

/* W, R, B of ONNX for layer l (both directions stacked). */
static int rnn_weights(fxon_ex *ex, const Fluxion__V1__Node *n, int l, int D, int G,
                       const int *order, int64_t H, int64_t in_l, bool bias, const char **W,
                       const char **R, const char **B)
{
    float *w = pba_array(&ex->a, (size_t)(D * G * H * in_l), sizeof *w);
    float *r = pba_array(&ex->a, (size_t)(D * G * H * H), sizeof *r);
    float *b = pba_array(&ex->a, (size_t)(D * 2 * G * H), sizeof *b);
    if (!w || !r || !b)
        return -1;
    for (int d = 0; d < D; d++) {
        const char *sfx = d ? "_reverse" : "";
        char p[64];
        int64_t cnt;
        snprintf(p, sizeof p, "weight_ih_l%d%s", l, sfx);
        float *src = fxon_ex_param_data(ex, n, p, &cnt);
        if (!src || cnt != G * H * in_l)
            return src ? fxon_ex_fail(ex, n, "weight %s has %lld values", p, (long long)cnt) : -1;
        reorder(w + d * G * H * in_l, src, G, order, H, in_l);
        snprintf(p, sizeof p, "weight_hh_l%d%s", l, sfx);
        if (!(src = fxon_ex_param_data(ex, n, p, &cnt)) || cnt != G * H * H)
            return src ? fxon_ex_fail(ex, n, "weight %s has %lld values", p, (long long)cnt) : -1;
        reorder(r + d * G * H * H, src, G, order, H, H);
        for (int k = 0; bias && k < 2; k++) {
            snprintf(p, sizeof p, "bias_%s_l%d%s", k ? "hh" : "ih", l, sfx);
            if (!(src = fxon_ex_param_data(ex, n, p, &cnt)) || cnt != G * H)
                return src ? fxon_ex_fail(ex, n, "bias %s has %lld values", p, (long long)cnt) : -1;
            reorder(b + d * 2 * G * H + k * G * H, src, G, order, H, 1);
        }
    }
    *W = fxon_ex_init_f32(ex, pba_printf(&ex->a, "%s/W_l%d", n->name, l), 3,
                          (const int64_t[]){D, G * H, in_l}, w);
    *R = fxon_ex_init_f32(ex, pba_printf(&ex->a, "%s/R_l%d", n->name, l), 3,
                          (const int64_t[]){D, G * H, H}, r);
    *B = bias ? fxon_ex_init_f32(ex, pba_printf(&ex->a, "%s/B_l%d", n->name, l), 2,
                                 (const int64_t[]){D, 2 * G * H}, b)
              : "";
    return *W && *R && *B ? 0 : -1;
}

static const char *transpose(fxon_ex *ex, const char *node, const char *x, int nd,
                             const int64_t *perm, const char *out)
{
    const char *y = fxon_ex_op(ex, "Transpose", node, out, FXON_IN(x));
    if (y)
        fxon_ex_attr_ints(ex, fxon_ex_last(ex), "perm", nd, perm);
    return y;
}

/* Rows [l*D, (l+1)*D) of an initial state [L*D, N, H]. */
static const char *state_slice(fxon_ex *ex, const char *node, const char *s, int l, int D)
{
    int64_t b = (int64_t)l * D, e = b + D, ax = 0;
    const char *cb = fxon_ex_const_i64(ex, node, 1, &b), *ce = fxon_ex_const_i64(ex, node, 1, &e);
    const char *ca = fxon_ex_const_i64(ex, node, 1, &ax);
    return cb && ce && ca ? fxon_ex_op(ex, "Slice", node, NULL, FXON_IN(s, cb, ce, ca)) : NULL;
}

int fxon_ex_cv_recurrent(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                         const fxon_xval *out, int nout)
{
    bool lstm = strcmp(n->op, "lstm") == 0, gru = strcmp(n->op, "gru") == 0;
    int G = lstm ? 4 : gru ? 3 : 1;
    const int *order = lstm ? lstm_order : gru ? gru_order : rnn_order;
    int64_t H = fxon_ex_ai(n, "hidden_size", 1), in0 = fxon_ex_ai(n, "input_size", 1);
    int64_t L = fxon_ex_ai(n, "num_layers", 1);
    int D = fxon_ex_ab(n, "bidirectional", false) ? 2 : 1;
    bool bias = fxon_ex_ab(n, "bias", true);
    const char *node = n->name;
    /* Batch-first [N, T, in] to ONNX's time-major [T, N, in]: onnxruntime
     * runs recurrent ops with layout 0 only. */
    const char *x = transpose(ex, node, in[0].name, 3, (const int64_t[]){1, 0, 2}, NULL);
    const char *lens = "";
    if (nin > 1) {
        lens = fxon_ex_op(ex, "Cast", node, NULL, FXON_IN(in[1].name));
        if (!lens)
            return -1;
        fxon_ex_attr_i(ex, fxon_ex_last(ex), "to", FXON_INT32);
    }
    const char **hs = pba_array(&ex->a, (size_t)L, sizeof *hs);
    const char **cs = pba_array(&ex->a, (size_t)L, sizeof *cs);
    const char *y = NULL;
    const char *flat = fxon_ex_const_i64(ex, node, 3, (const int64_t[]){0, 0, -1});
    if (!x || !hs || !cs || !flat)
        return -1;
    for (int l = 0; l < L; l++) {
        const char *W = NULL, *R = NULL, *B = NULL;
        if (rnn_weights(ex, n, l, D, G, order, H, l ? D * H : in0, bias, &W, &R, &B))
            return -1;
        const char *h0 = nin > 2 ? state_slice(ex, node, in[2].name, l, D) : "";
        const char *c0 = lstm && nin > 3 ? state_slice(ex, node, in[3].name, l, D) : "";
        const char *yo = fxon_ex_tmp(ex, node, "Y"), *ho = fxon_ex_tmp(ex, node, "Y_h");
        const char *co = lstm ? fxon_ex_tmp(ex, node, "Y_c") : NULL;
        if (!h0 || !c0 || !yo || !ho || (lstm && !co))
            return -1;
        const char *ins[] = {x, W, R, B, lens, h0, c0};
        int ni = lstm && c0[0] ? 7 : h0[0] ? 6 : lens[0] ? 5 : B[0] ? 4 : 3;
        const char *outs[] = {yo, ho, co};
        Onnx__NodeProto *np = fxon_ex_node(ex,
                                           lstm  ? "LSTM"
                                           : gru ? "GRU"
                                                 : "RNN",
                                           pba_printf(&ex->a, "%s/%s_l%d", node,
                                                      lstm  ? "LSTM"
                                                      : gru ? "GRU"
                                                            : "RNN",
                                                      l),
                                           ni, ins, lstm ? 3 : 2, outs);
        if (!np)
            return -1;
        fxon_ex_attr_i(ex, np, "hidden_size", H);
        fxon_ex_attr_s(ex, np, "direction", D == 2 ? "bidirectional" : "forward");
        if (gru) /* PyTorch applies the reset gate after the recurrent product */
            fxon_ex_attr_i(ex, np, "linear_before_reset", 1);
        if (!lstm && !gru) {
            const char *act =
                strcmp(fxon_ex_as(n, "nonlinearity", "tanh"), "relu") == 0 ? "Relu" : "Tanh";
            fxon_ex_attr_strs(ex, np, "activations", D, (const char *const[]){act, act});
        }
        hs[l] = ho;
        cs[l] = co;
        y = yo;
        if (l + 1 < L) {
            /* Y [T, D, N, H] -> the next layer's input [T, N, D*H]. */
            const char *t = transpose(ex, node, yo, 4, (const int64_t[]){0, 2, 1, 3}, NULL);
            if (!t || !(x = fxon_ex_op(ex, "Reshape", node, NULL, FXON_IN(t, flat))))
                return -1;
        }
    }
    const char *t = transpose(ex, node, y, 4, (const int64_t[]){2, 0, 1, 3}, NULL);
    if (!t || !fxon_ex_op(ex, "Reshape", node, out[0].name, FXON_IN(t, flat)))
        return -1;
    for (int k = 1; k < nout && k < 3; k++) {
        const char *op = L == 1 ? "Identity" : "Concat";
        if (!fxon_ex_op(ex, op, node, out[k].name, (int)L, k == 1 ? hs : cs))
            return -1;
        if (L > 1)
            fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", 0);
    }
    return 0;
}

/* ---------------------------------------------------------- attention */

/* softmax(q kT * scale + masks) v for q [.., L, E], k [.., S, E] of rank
 * nd; lens [N] masks keys j >= lens[n]; causal masks j > i; mask (i32:
 * nonzero keeps; f32: added). */
static const char *attend(fxon_ex *ex, const char *node, const char *q, const char *k,
                          const char *v, int nd, double scale, const fxon_xval *lens, bool causal,
                          const fxon_xval *mask, const char *out)
{
    int64_t perm[FX_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        perm[i] = i;
    perm[nd - 2] = nd - 1;
    perm[nd - 1] = nd - 2;
    const char *kt = transpose(ex, node, k, nd, perm, NULL);
    const char *s = kt ? fxon_ex_op(ex, "MatMul", node, NULL, FXON_IN(q, kt)) : NULL;
    const char *c = fxon_ex_scalar_f(ex, node, (float)scale);
    s = s && c ? fxon_ex_op(ex, "Mul", node, NULL, FXON_IN(s, c)) : NULL;
    /* Constants are made where used: onnxruntime warns of unused ones. */
    const char *ninf = s && (lens || causal || (mask && mask->dtype != FX_F32))
                           ? fxon_ex_scalar_f(ex, node, -INFINITY)
                           : "";
    if (!s || !ninf)
        return NULL;
    if (lens || causal) {
        const char *sh = fxon_ex_op(ex, "Shape", node, NULL, FXON_IN(s));
        const char *i1 = fxon_ex_scalar_i64(ex, node, -1);
        const char *z = fxon_ex_scalar_i64(ex, node, 0), *one = fxon_ex_scalar_i64(ex, node, 1);
        const char *S = sh && i1 ? fxon_ex_op(ex, "Gather", node, NULL, FXON_IN(sh, i1)) : NULL;
        const char *js =
            S && z && one ? fxon_ex_op(ex, "Range", node, NULL, FXON_IN(z, S, one)) : NULL;
        if (!js)
            return NULL;
        if (lens) {
            /* keep[n, j] = j < lens[n], reshaped to [N, 1, .., 1, S]. */
            const char *l64 = fxon_ex_op(ex, "Cast", node, NULL, FXON_IN(lens->name));
            if (!l64)
                return NULL;
            fxon_ex_attr_i(ex, fxon_ex_last(ex), "to", FXON_INT64);
            const char *col = fxon_ex_const_i64(ex, node, 2, (const int64_t[]){-1, 1});
            const char *lc = col ? fxon_ex_op(ex, "Reshape", node, NULL, FXON_IN(l64, col)) : NULL;
            const char *keep = lc ? fxon_ex_op(ex, "Less", node, NULL, FXON_IN(js, lc)) : NULL;
            int64_t shape[FX_MAX_DIMS] = {0};
            for (int i = 1; i < nd - 1; i++)
                shape[i] = 1;
            shape[nd - 1] = -1;
            const char *ks = keep ? fxon_ex_const_i64(ex, node, nd, shape) : NULL;
            const char *kr = ks ? fxon_ex_op(ex, "Reshape", node, NULL, FXON_IN(keep, ks)) : NULL;
            if (!kr || !(s = fxon_ex_op(ex, "Where", node, NULL, FXON_IN(kr, s, ninf))))
                return NULL;
        }
        if (causal) {
            /* masked[i, j] = j > i. */
            const char *i2 = fxon_ex_scalar_i64(ex, node, -2);
            const char *L = i2 ? fxon_ex_op(ex, "Gather", node, NULL, FXON_IN(sh, i2)) : NULL;
            const char *is = L ? fxon_ex_op(ex, "Range", node, NULL, FXON_IN(z, L, one)) : NULL;
            const char *col = fxon_ex_const_i64(ex, node, 2, (const int64_t[]){-1, 1});
            const char *ic =
                is && col ? fxon_ex_op(ex, "Reshape", node, NULL, FXON_IN(is, col)) : NULL;
            const char *gt = ic ? fxon_ex_op(ex, "Greater", node, NULL, FXON_IN(js, ic)) : NULL;
            if (!gt || !(s = fxon_ex_op(ex, "Where", node, NULL, FXON_IN(gt, ninf, s))))
                return NULL;
        }
    }
    if (mask && mask->dtype == FX_F32) {
        if (!(s = fxon_ex_op(ex, "Add", node, NULL, FXON_IN(s, mask->name))))
            return NULL;
    } else if (mask) {
        const char *mb = fxon_ex_op(ex, "Cast", node, NULL, FXON_IN(mask->name));
        if (!mb)
            return NULL;
        fxon_ex_attr_i(ex, fxon_ex_last(ex), "to", FXON_BOOL);
        if (!(s = fxon_ex_op(ex, "Where", node, NULL, FXON_IN(mb, s, ninf))))
            return NULL;
    }
    const char *p = fxon_ex_op(ex, "Softmax", node, NULL, FXON_IN(s));
    if (!p)
        return NULL;
    fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", -1);
    return fxon_ex_op(ex, "MatMul", node, out, FXON_IN(p, v));
}

int fxon_ex_cv_sdpa(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                    const fxon_xval *out, int nout)
{
    (void)nout;
    int64_t E = in[0].shape[in[0].ndim - 1];
    if (E < 1)
        return fxon_ex_fail(ex, n, "the query's last dim must be fixed (it sets the scale)");
    return attend(ex, n->name, in[0].name, in[1].name, in[2].name, in[0].ndim,
                  1.0 / sqrt((double)E), nin > 3 ? &in[3] : NULL, fxon_ex_ab(n, "causal", false),
                  nin > 4 ? &in[4] : NULL, out[0].name)
               ? 0
               : -1;
}

/* x [N, T, E] @ W[rows r*E .. (r+1)*E)^T + b: one of the in-projections. */
static const char *project(fxon_ex *ex, const Fluxion__V1__Node *n, const char *x, const float *w,
                           const float *b, int64_t E, const char *what)
{
    const char *wn = fxon_ex_init_f32(ex, pba_printf(&ex->a, "%s/%s_weight", n->name, what), 2,
                                      (const int64_t[]){E, E}, w);
    const char *wt = wn ? transpose(ex, n->name, wn, 2, (const int64_t[]){1, 0}, NULL) : NULL;
    const char *y = wt ? fxon_ex_op(ex, "MatMul", n->name, NULL, FXON_IN(x, wt)) : NULL;
    if (!y || !b)
        return y;
    const char *bn = fxon_ex_init_f32(ex, pba_printf(&ex->a, "%s/%s_bias", n->name, what), 1,
                                      (const int64_t[]){E}, b);
    return bn ? fxon_ex_op(ex, "Add", n->name, NULL, FXON_IN(y, bn)) : NULL;
}

/* [N, T, E] -> [N, heads, T, E/heads] (kt: [N, heads, E/heads, T]). */
static const char *heads(fxon_ex *ex, const char *node, const char *x, int64_t h, int64_t dh)
{
    const char *s = fxon_ex_const_i64(ex, node, 4, (const int64_t[]){0, 0, h, dh});
    const char *r = s ? fxon_ex_op(ex, "Reshape", node, NULL, FXON_IN(x, s)) : NULL;
    return r ? transpose(ex, node, r, 4, (const int64_t[]){0, 2, 1, 3}, NULL) : NULL;
}

int fxon_ex_cv_mha(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                   const fxon_xval *out, int nout)
{
    (void)nout;
    int64_t E = fxon_ex_ai(n, "embed_dim", 1), h = fxon_ex_ai(n, "num_heads", 1), dh = E / h;
    bool bias = fxon_ex_ab(n, "bias", true);
    const char *q = in[0].name, *k = in[0].name, *v = in[0].name;
    const fxon_xval *lens = nin == 2 ? &in[1] : nin == 4 ? &in[3] : NULL;
    if (nin >= 3)
        k = in[1].name, v = in[2].name;
    float *w = fxon_ex_param_data(ex, n, "in_proj_weight", NULL);
    float *b = bias ? fxon_ex_param_data(ex, n, "in_proj_bias", NULL) : NULL;
    if (!w || (bias && !b))
        return -1;
    const char *qp = project(ex, n, q, w, b, E, "q");
    const char *kp = project(ex, n, k, w + E * E, b ? b + E : NULL, E, "k");
    const char *vp = project(ex, n, v, w + 2 * E * E, b ? b + 2 * E : NULL, E, "v");
    const char *qh = qp ? heads(ex, n->name, qp, h, dh) : NULL;
    const char *kh = kp ? heads(ex, n->name, kp, h, dh) : NULL;
    const char *vh = vp ? heads(ex, n->name, vp, h, dh) : NULL;
    const char *a = qh && kh && vh ? attend(ex, n->name, qh, kh, vh, 4, 1.0 / sqrt((double)dh),
                                            lens, fxon_ex_ab(n, "causal", false), NULL, NULL)
                                   : NULL;
    const char *at = a ? transpose(ex, n->name, a, 4, (const int64_t[]){0, 2, 1, 3}, NULL) : NULL;
    const char *cs = fxon_ex_const_i64(ex, n->name, 3, (const int64_t[]){0, 0, E});
    const char *cat = at && cs ? fxon_ex_op(ex, "Reshape", n->name, NULL, FXON_IN(at, cs)) : NULL;
    const char *ow = cat ? fxon_ex_param_init(ex, n, "out_proj.weight") : NULL;
    const char *owt = ow ? transpose(ex, n->name, ow, 2, (const int64_t[]){1, 0}, NULL) : NULL;
    if (!owt)
        return -1;
    if (!bias)
        return fxon_ex_op(ex, "MatMul", n->name, out[0].name, FXON_IN(cat, owt)) ? 0 : -1;
    const char *y = fxon_ex_op(ex, "MatMul", n->name, NULL, FXON_IN(cat, owt));
    const char *ob = y ? fxon_ex_param_init(ex, n, "out_proj.bias") : NULL;
    return ob && fxon_ex_op(ex, "Add", n->name, out[0].name, FXON_IN(y, ob)) ? 0 : -1;
}
