/*
 * export_layers.c - ONNX forms of the spec's layers (ops with weights) and
 * of attention: weights become initializers named as the spec's
 * parameters ("fc1.weight"), in their PyTorch layouts, except where ONNX
 * wants another order (recurrent gates: reordered copies named
 * "<node>/W_l<k>"...).
 */
#include "onnx/export_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int act_out(fxon_ex *ex, const Fluxion__V1__Node *n, const char *y, const char *out)
{
    return fxon_ex_activation(ex, n->name, fxon_ex_as(n, "activation", "none"), y, out) ? 0 : -1;
}

/* ------------------------------------------------------------- dense */

static int cv_dense(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                    const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    bool bias = fxon_ex_ab(n, "bias", true),
         act = strcmp(fxon_ex_as(n, "activation", "none"), "none");
    const char *w = fxon_ex_param_init(ex, n, "weight");
    const char *b = bias ? fxon_ex_param_init(ex, n, "bias") : "";
    if (!w || !b)
        return -1;
    const char *y;
    if (in[0].ndim == 2) {
        y = fxon_ex_op(ex, "Gemm", n->name, act ? NULL : out[0].name, bias ? 3 : 2,
                       (const char *const[]){in[0].name, w, b});
        if (y)
            fxon_ex_attr_i(ex, fxon_ex_last(ex), "transB", 1);
    } else {
        /* [.., in]: MatMul broadcasts over the leading dims, Gemm does not. */
        const char *wt = fxon_ex_op(ex, "Transpose", n->name, NULL, FXON_IN(w));
        y = wt ? fxon_ex_op(ex, "MatMul", n->name, act || bias ? NULL : out[0].name,
                            FXON_IN(in[0].name, wt))
               : NULL;
        if (y && bias)
            y = fxon_ex_op(ex, "Add", n->name, act ? NULL : out[0].name, FXON_IN(y, b));
    }
    if (!y)
        return -1;
    return act ? act_out(ex, n, y, out[0].name) : 0;
}

/* ------------------------------------------------------ convolutions */

static int cv_conv(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                   const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    bool bias = fxon_ex_ab(n, "bias", true),
         act = strcmp(fxon_ex_as(n, "activation", "none"), "none");
    bool one_d = strcmp(n->op, "conv1d") == 0, tr = strcmp(n->op, "conv_transpose2d") == 0;
    const char *w = fxon_ex_param_init(ex, n, "weight");
    const char *b = bias ? fxon_ex_param_init(ex, n, "bias") : "";
    if (!w || !b)
        return -1;
    const char *y = fxon_ex_op(ex, tr ? "ConvTranspose" : "Conv", n->name, act ? NULL : out[0].name,
                               bias ? 3 : 2, (const char *const[]){in[0].name, w, b});
    if (!y)
        return -1;
    Onnx__NodeProto *np = fxon_ex_last(ex);
    int64_t k[2], s[2], p[2], d[2], op[2];
    fxon_ex_apair(n, "kernel_size", 1, k);
    fxon_ex_apair(n, "stride", 1, s);
    fxon_ex_apair(n, "padding", 0, p);
    fxon_ex_apair(n, "dilation", 1, d);
    int nd = one_d ? 1 : 2;
    fxon_ex_attr_ints(ex, np, "kernel_shape", nd, k);
    fxon_ex_attr_ints(ex, np, "strides", nd, s);
    fxon_ex_attr_ints(ex, np, "dilations", nd, d);
    fxon_ex_attr_ints(ex, np, "pads", 2 * nd,
                      one_d ? (const int64_t[]){p[0], p[0]}
                            : (const int64_t[]){p[0], p[1], p[0], p[1]});
    fxon_ex_attr_i(ex, np, "group", fxon_ex_ai(n, "groups", 1));
    if (tr) {
        fxon_ex_apair(n, "output_padding", 0, op);
        fxon_ex_attr_ints(ex, np, "output_padding", 2, op);
    }
    return act ? act_out(ex, n, y, out[0].name) : 0;
}

/* --------------------------------------------------------------- norms */

/* A weight of shape [C] as an initializer [C, 1, ..] (rank nd - 1) that
 * broadcasts over the channel axis of an [N, C, ..] tensor. */
static const char *channel_init(fxon_ex *ex, const Fluxion__V1__Node *n, const char *param, int nd)
{
    int64_t c;
    float *d = fxon_ex_param_data(ex, n, param, &c);
    int64_t shape[FX_MAX_DIMS] = {c};
    for (int i = 1; i < nd - 1; i++)
        shape[i] = 1;
    const char *name = d ? pba_printf(&ex->a, "%s.%s", n->name, param) : NULL;
    return name ? fxon_ex_init_f32(ex, name, nd - 1 > 0 ? nd - 1 : 1, shape, d) : NULL;
}

/* (x - mean) / sqrt(var + eps) with the statistics over axes (biased
 * variance), as batch and group norms compute them. */
static const char *normalize(fxon_ex *ex, const char *node, const char *x, int na,
                             const int64_t *axes, double eps)
{
    const char *m = fxon_ex_op(ex, "ReduceMean", node, NULL, FXON_IN(x));
    if (!m)
        return NULL;
    fxon_ex_attr_ints(ex, fxon_ex_last(ex), "axes", na, axes);
    const char *c = fxon_ex_op(ex, "Sub", node, NULL, FXON_IN(x, m));
    const char *sq = c ? fxon_ex_op(ex, "Mul", node, NULL, FXON_IN(c, c)) : NULL;
    const char *v = sq ? fxon_ex_op(ex, "ReduceMean", node, NULL, FXON_IN(sq)) : NULL;
    if (!v)
        return NULL;
    fxon_ex_attr_ints(ex, fxon_ex_last(ex), "axes", na, axes);
    const char *e = fxon_ex_scalar_f(ex, node, (float)eps);
    const char *ve = e ? fxon_ex_op(ex, "Add", node, NULL, FXON_IN(v, e)) : NULL;
    const char *sd = ve ? fxon_ex_op(ex, "Sqrt", node, NULL, FXON_IN(ve)) : NULL;
    return sd ? fxon_ex_op(ex, "Div", node, NULL, FXON_IN(c, sd)) : NULL;
}

/* y * weight + bias per channel (affine) into out. */
static int channel_affine(fxon_ex *ex, const Fluxion__V1__Node *n, const char *y, int nd,
                          bool affine, const char *out)
{
    if (!affine)
        return fxon_ex_op(ex, "Identity", n->name, out, FXON_IN(y)) ? 0 : -1;
    const char *w = channel_init(ex, n, "weight", nd), *b = channel_init(ex, n, "bias", nd);
    const char *yw = w && b ? fxon_ex_op(ex, "Mul", n->name, NULL, FXON_IN(y, w)) : NULL;
    return yw && fxon_ex_op(ex, "Add", n->name, out, FXON_IN(yw, b)) ? 0 : -1;
}

static int cv_batchnorm(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                        const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    bool affine = fxon_ex_ab(n, "affine", true);
    double eps = fxon_ex_af(n, "eps", 1e-5);
    int nd = in[0].ndim;
    if (!fxon_ex_ab(n, "track_running_stats", true)) {
        /* Batch statistics in eval mode too: over every axis but C. */
        int64_t axes[FX_MAX_DIMS];
        int na = 0;
        for (int i = 0; i < nd; i++)
            if (i != 1)
                axes[na++] = i;
        const char *y = normalize(ex, n->name, in[0].name, na, axes, eps);
        return y ? channel_affine(ex, n, y, nd, affine, out[0].name) : -1;
    }
    int64_t c = fxon_ex_ai(n, "num_features", 1);
    const char *w, *b;
    if (affine) {
        w = fxon_ex_param_init(ex, n, "weight");
        b = fxon_ex_param_init(ex, n, "bias");
    } else {
        float *ones = pba_array(&ex->a, (size_t)c, sizeof *ones);
        float *zeros = pba_array(&ex->a, (size_t)c, sizeof *zeros);
        for (int64_t i = 0; ones && i < c; i++)
            ones[i] = 1.0f;
        w = ones ? fxon_ex_init_f32(ex, fxon_ex_tmp(ex, n->name, "ones"), 1, &c, ones) : NULL;
        b = zeros ? fxon_ex_init_f32(ex, fxon_ex_tmp(ex, n->name, "zeros"), 1, &c, zeros) : NULL;
    }
    const char *m = fxon_ex_param_init(ex, n, "running_mean");
    const char *v = fxon_ex_param_init(ex, n, "running_var");
    if (!w || !b || !m || !v)
        return -1;
    if (!fxon_ex_op(ex, "BatchNormalization", n->name, out[0].name,
                    FXON_IN(in[0].name, w, b, m, v)))
        return -1;
    fxon_ex_attr_f(ex, fxon_ex_last(ex), "epsilon", (float)eps);
    return 0;
}

static int cv_layernorm(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                        const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    const int64_t *ns = NULL;
    int k = fxon_ex_aints(n, "normalized_shape", &ns);
    const char *w, *b = "";
    if (fxon_ex_ab(n, "elementwise_affine", true)) {
        w = fxon_ex_param_init(ex, n, "weight");
        b = fxon_ex_param_init(ex, n, "bias");
    } else {
        int64_t cnt = 1;
        for (int i = 0; i < k; i++)
            cnt *= ns[i];
        float *ones = pba_array(&ex->a, (size_t)cnt, sizeof *ones);
        for (int64_t i = 0; ones && i < cnt; i++)
            ones[i] = 1.0f;
        w = ones ? fxon_ex_init_f32(ex, fxon_ex_tmp(ex, n->name, "ones"), k, ns, ones) : NULL;
    }
    if (!w || !b)
        return -1;
    if (!fxon_ex_op(ex, "LayerNormalization", n->name, out[0].name, b[0] ? 3 : 2,
                    (const char *const[]){in[0].name, w, b}))
        return -1;
    fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", -k);
    fxon_ex_attr_f(ex, fxon_ex_last(ex), "epsilon", (float)fxon_ex_af(n, "eps", 1e-5));
    return 0;
}

/* GroupNormalization is opset 18 and changed meaning in 21 (per-group,
 * then per-channel scales): written as PyTorch writes nn.GroupNorm at
 * opset 17, [N, C, ..] -> [N, G, -1] -> InstanceNormalization (unit scale)
 * -> x's shape -> the per-channel affine map. */
static int cv_groupnorm(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                        const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    int64_t g = fxon_ex_ai(n, "num_groups", 1);
    float *ones = pba_array(&ex->a, (size_t)g, sizeof *ones);
    float *zeros = pba_array(&ex->a, (size_t)g, sizeof *zeros);
    for (int64_t i = 0; ones && i < g; i++)
        ones[i] = 1.0f;
    const char *sc = ones ? fxon_ex_init_f32(ex, fxon_ex_tmp(ex, n->name, "ones"), 1, &g, ones)
                          : NULL;
    const char *bi = zeros ? fxon_ex_init_f32(ex, fxon_ex_tmp(ex, n->name, "zeros"), 1, &g, zeros)
                           : NULL;
    const char *gs = fxon_ex_const_i64(ex, n->name, 3, (const int64_t[]){0, g, -1});
    const char *r = gs ? fxon_ex_op(ex, "Reshape", n->name, NULL, FXON_IN(in[0].name, gs)) : NULL;
    const char *y = r && sc && bi ? fxon_ex_op(ex, "InstanceNormalization", n->name, NULL,
                                               FXON_IN(r, sc, bi))
                                  : NULL;
    if (!y)
        return -1;
    fxon_ex_attr_f(ex, fxon_ex_last(ex), "epsilon", (float)fxon_ex_af(n, "eps", 1e-5));
    const char *sh = fxon_ex_op(ex, "Shape", n->name, NULL, FXON_IN(in[0].name));
    const char *back = sh ? fxon_ex_op(ex, "Reshape", n->name, NULL, FXON_IN(y, sh)) : NULL;
    return back
               ? channel_affine(ex, n, back, in[0].ndim, fxon_ex_ab(n, "affine", true), out[0].name)
               : -1;
}

static int cv_embedding(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                        const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    const char *w = fxon_ex_param_init(ex, n, "weight");
    if (!w || !fxon_ex_op(ex, "Gather", n->name, out[0].name, FXON_IN(w, in[0].name)))
        return -1;
    fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", 0);
    return 0;
}

const fxon_xconv fxon_ex_layer_convs[] = {
    {"dense", cv_dense},
    {"conv1d", cv_conv},
    {"conv2d", cv_conv},
    {"conv_transpose2d", cv_conv},
    {"batchnorm1d", cv_batchnorm},
    {"batchnorm2d", cv_batchnorm},
    {"layernorm", cv_layernorm},
    {"groupnorm", cv_groupnorm},
    {"embedding", cv_embedding},
    {"rnn", fxon_ex_cv_recurrent},
    {"gru", fxon_ex_cv_recurrent},
    {"lstm", fxon_ex_cv_recurrent},
    {"multihead_attention", fxon_ex_cv_mha},
    {"scaled_dot_product_attention", fxon_ex_cv_sdpa},
    {NULL, NULL},
};
