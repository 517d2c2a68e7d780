/*
 * graph_layers.c - the rows of the op table for ops that own parameters
 * (dense, convolutions, normalisations, embedding, recurrent layers,
 * attention): each makes an engine layer named after the node, so the
 * engine's parameter names become "<node>.<param>" (PyTorch's names).
 * graph.c validates every node against its row before calling anything
 * here, so these functions trust the attributes' types and ranges.
 */
#include "models/graph_schema.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const inits[] = { "default", "uniform", "normal", "glorot_uniform",
                                     "glorot_normal", "he_uniform", "he_normal",
                                     "orthogonal", NULL };
static const fx_init_kind init_kinds[] = { 0, FX_INIT_UNIFORM, FX_INIT_NORMAL,
                                           FX_INIT_GLOROT_UNIFORM, FX_INIT_GLOROT_NORMAL,
                                           FX_INIT_HE_UNIFORM, FX_INIT_HE_NORMAL,
                                           FX_INIT_ORTHOGONAL };
static const char *const nonlinearities[] = { "tanh", "relu", NULL };


static fx_init_kind attr_init(const fxg_node *n) { return init_kinds[fxg_attr_i(n, "init")]; }

/* A layer with one input and one output. */
static void fwd_layer(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_layer_forward(n->layer, ctx, in[0]);
}

/* --------------------------------------------------------------- dense */

static int64_t dense_params(const fxg_node *n)
{
    int64_t in = fxg_attr_i(n, "in_features"), o = fxg_attr_i(n, "out_features");
    return fxg_add(fxg_mul(in, o), fxg_attr_b(n, "bias") ? o : 0);
}

static fx_layer *dense_build(const fxg_node *n, fx_rng *rng)
{
    fx_dense_opts o = { .no_bias = !fxg_attr_b(n, "bias"),
                        .act = (fx_activation)fxg_attr_i(n, "activation"),
                        .init = attr_init(n) };
    return fx_dense_create(n->name, fxg_attr_i(n, "in_features"),
                           fxg_attr_i(n, "out_features"), &o, rng);
}

static const fxg_attr_schema dense_attrs[] = {
    REQ("in_features", AT_INT, 1, BIG), REQ("out_features", AT_INT, 1, BIG), BOOL("bias", 1),
    CHOICE("activation", fxg_acts, 0), CHOICE("init", inits, 0), END
};

/* --------------------------------------------------------- convolutions */

typedef enum { CONV1D, CONV2D, CONVT2D } conv_kind;

static conv_kind conv_kind_of(const fxg_node *n)
{
    return strcmp(n->op->name, "conv1d") == 0   ? CONV1D
           : strcmp(n->op->name, "conv2d") == 0 ? CONV2D
                                                : CONVT2D;
}

static int conv_check(const fxg_node *n, char *err, size_t errlen)
{
    int64_t g = fxg_attr_i(n, "groups"), in = fxg_attr_i(n, "in_channels"),
            o = fxg_attr_i(n, "out_channels");
    if (in % g || o % g) {
        snprintf(err, errlen, "groups %lld must divide in_channels %lld and out_channels %lld",
                 (long long)g, (long long)in, (long long)o);
        return FXS_INVALID_ARGUMENT;
    }
    return 0;
}

static int64_t conv_params(const fxg_node *n)
{
    const fxg_attr *k = fxg_attr_get(n, "kernel_size");
    int64_t g = fxg_attr_i(n, "groups"), in = fxg_attr_i(n, "in_channels"),
            o = fxg_attr_i(n, "out_channels");
    int64_t taps = conv_kind_of(n) == CONV1D ? k->i : fxg_mul(k->i, k->i2);
    int64_t w = fxg_mul(fxg_mul(in, o / g), taps); /* in*(o/g) = o*(in/g) */
    return fxg_add(w, fxg_attr_b(n, "bias") ? o : 0);
}

static fx_conv_opts conv_opts(const fxg_node *n)
{
    const fxg_attr *s = fxg_attr_get(n, "stride"), *p = fxg_attr_get(n, "padding"),
                   *d = fxg_attr_get(n, "dilation");
    fx_conv_opts o = { .groups = (int)fxg_attr_i(n, "groups"),
                       .no_bias = !fxg_attr_b(n, "bias"),
                       .act = (fx_activation)fxg_attr_i(n, "activation"),
                       .init = attr_init(n) };
    if (conv_kind_of(n) == CONV1D) {
        o.stride = (int)s->i, o.padding = (int)p->i, o.dilation = (int)d->i;
        return o;
    }
    /* The engine reads a zero _h/_w field as "the plain one": strides and
     * dilations (never 0) set both; paddings leave the plain ones 0, else
     * [1, 0] would pad both axes by 1. */
    o.stride = o.stride_h = (int)s->i, o.stride_w = (int)s->i2;
    o.padding_h = (int)p->i, o.padding_w = (int)p->i2;
    o.dilation = o.dilation_h = (int)d->i, o.dilation_w = (int)d->i2;
    const fxg_attr *op = fxg_attr_get(n, "output_padding");
    if (op)
        o.output_padding_h = (int)op->i, o.output_padding_w = (int)op->i2;
    return o;
}

static fx_layer *conv_build(const fxg_node *n, fx_rng *rng)
{
    fx_conv_opts o = conv_opts(n);
    int64_t in = fxg_attr_i(n, "in_channels"), out = fxg_attr_i(n, "out_channels");
    const fxg_attr *k = fxg_attr_get(n, "kernel_size");
    switch (conv_kind_of(n)) {
    case CONV1D: return fx_conv1d_create(n->name, in, out, k->i, &o, rng);
    case CONV2D: return fx_conv2d_create(n->name, in, out, k->i, k->i2, &o, rng);
    case CONVT2D: return fx_conv_transpose2d_create(n->name, in, out, k->i, k->i2, &o, rng);
    }
    return NULL;
}

#define CONV_COMMON                                                                      \
    REQ("in_channels", AT_INT, 1, BIG), REQ("out_channels", AT_INT, 1, BIG),              \
        OPT("groups", AT_INT, 1, 1, SPATIAL), BOOL("bias", 1), CHOICE("activation", fxg_acts, 0), \
        CHOICE("init", inits, 0)

static const fxg_attr_schema conv1d_attrs[] = {
    CONV_COMMON, REQ("kernel_size", AT_INT, 1, SPATIAL), OPT("stride", AT_INT, 1, 1, SPATIAL),
    OPT("padding", AT_INT, 0, 0, SPATIAL), OPT("dilation", AT_INT, 1, 1, SPATIAL), END
};
static const fxg_attr_schema conv2d_attrs[] = {
    CONV_COMMON, REQ("kernel_size", AT_PAIR, 1, SPATIAL), OPT("stride", AT_PAIR, 1, 1, SPATIAL),
    OPT("padding", AT_PAIR, 0, 0, SPATIAL), OPT("dilation", AT_PAIR, 1, 1, SPATIAL), END
};
static const fxg_attr_schema convt2d_attrs[] = {
    CONV_COMMON, REQ("kernel_size", AT_PAIR, 1, SPATIAL), OPT("stride", AT_PAIR, 1, 1, SPATIAL),
    OPT("padding", AT_PAIR, 0, 0, SPATIAL), OPT("dilation", AT_PAIR, 1, 1, SPATIAL),
    OPT("output_padding", AT_PAIR, 0, 0, SPATIAL), END
};

/* --------------------------------------------------------- normalisation */

#define EPS OPT("eps", AT_FLOAT, 1e-5, DBL_MIN, 1.0)

static fx_norm_opts norm_opts(const fxg_node *n)
{
    const fxg_attr *m = fxg_attr_get(n, "momentum"), *a = fxg_attr_get(n, "affine"),
                   *t = fxg_attr_get(n, "track_running_stats");
    if (!a)
        a = fxg_attr_get(n, "elementwise_affine");
    return (fx_norm_opts){ .eps = fxg_attr_f(n, "eps"), .momentum = m ? m->f : 0,
                           .no_affine = !a->i, .no_running_stats = t && !t->i };
}

static int64_t batchnorm_params(const fxg_node *n)
{
    int64_t c = fxg_attr_i(n, "num_features");
    int per = (fxg_attr_b(n, "affine") ? 2 : 0) + (fxg_attr_b(n, "track_running_stats") ? 2 : 0);
    return fxg_mul(c, per);
}

static fx_layer *batchnorm_build(const fxg_node *n, fx_rng *rng)
{
    fx_norm_opts o = norm_opts(n);
    int64_t c = fxg_attr_i(n, "num_features");
    return strcmp(n->op->name, "batchnorm1d") == 0 ? fx_batchnorm1d_create(n->name, c, &o)
                                                   : fx_batchnorm2d_create(n->name, c, &o);
}

static const fxg_attr_schema batchnorm_attrs[] = {
    REQ("num_features", AT_INT, 1, BIG), EPS, OPT("momentum", AT_FLOAT, 0.1, 1e-9, 1.0),
    BOOL("affine", 1), BOOL("track_running_stats", 1), END
};

static int64_t layernorm_params(const fxg_node *n)
{
    const fxg_attr *s = fxg_attr_get(n, "normalized_shape");
    int64_t numel = 1;
    for (int i = 0; i < s->n; i++)
        numel = fxg_mul(numel, s->v[i]);
    return fxg_mul(numel, fxg_attr_b(n, "elementwise_affine") ? 2 : 0);
}

static fx_layer *layernorm_build(const fxg_node *n, fx_rng *rng)
{
    fx_norm_opts o = norm_opts(n);
    const fxg_attr *s = fxg_attr_get(n, "normalized_shape");
    return fx_layernorm_create(n->name, s->n, s->v, &o);
}

static const fxg_attr_schema layernorm_attrs[] = {
    INTS("normalized_shape", true, 1, BIG, 1, FX_MAX_DIMS), EPS, BOOL("elementwise_affine", 1),
    END
};

static int groupnorm_check(const fxg_node *n, char *err, size_t errlen)
{
    return fxg_attr_divides(n, "num_groups", "num_channels", err, errlen);
}

static int64_t groupnorm_params(const fxg_node *n)
{
    return fxg_mul(fxg_attr_i(n, "num_channels"), fxg_attr_b(n, "affine") ? 2 : 0);
}

static fx_layer *groupnorm_build(const fxg_node *n, fx_rng *rng)
{
    fx_norm_opts o = norm_opts(n);
    return fx_groupnorm_create(n->name, fxg_attr_i(n, "num_groups"),
                               fxg_attr_i(n, "num_channels"), &o);
}

static const fxg_attr_schema groupnorm_attrs[] = {
    REQ("num_groups", AT_INT, 1, BIG), REQ("num_channels", AT_INT, 1, BIG), EPS,
    BOOL("affine", 1), END
};

static int embedding_check(const fxg_node *n, char *err, size_t errlen)
{
    const fxg_attr *p = fxg_attr_get(n, "padding_idx");
    int64_t num = fxg_attr_i(n, "num_embeddings");
    if (p->set && p->i >= num) {
        snprintf(err, errlen, "padding_idx %lld must be below num_embeddings %lld",
                 (long long)p->i, (long long)num);
        return FXS_INVALID_ARGUMENT;
    }
    return 0;
}

static int64_t embedding_params(const fxg_node *n)
{
    return fxg_mul(fxg_attr_i(n, "num_embeddings"), fxg_attr_i(n, "embedding_dim"));
}

static fx_layer *embedding_build(const fxg_node *n, fx_rng *rng)
{
    const fxg_attr *p = fxg_attr_get(n, "padding_idx");
    fx_embedding_opts o = { .has_padding = p->set, .padding_idx = p->set ? p->i : 0 };
    return fx_embedding_create(n->name, fxg_attr_i(n, "num_embeddings"),
                               fxg_attr_i(n, "embedding_dim"), &o, rng);
}

static const fxg_attr_schema embedding_attrs[] = {
    REQ("num_embeddings", AT_INT, 1, BIG), REQ("embedding_dim", AT_INT, 1, BIG),
    UNSET("padding_idx", AT_INT, 0, BIG), END
};

/* ------------------------------------------------------------- recurrent */

static int rnn_gates(const fxg_node *n)
{
    return strcmp(n->op->name, "lstm") == 0 ? 4 : strcmp(n->op->name, "gru") == 0 ? 3 : 1;
}

static int rnn_nout(const fxg_node *n) { return rnn_gates(n) == 4 ? 3 : 2; }

/* PyTorch's sizes: per layer and direction G*H x (in_l + H) weights and two
 * G*H biases, in_0 = input_size, in_l = D*H above. */
static int64_t rnn_params(const fxg_node *n)
{
    int64_t in = fxg_attr_i(n, "input_size"), H = fxg_attr_i(n, "hidden_size");
    int64_t L = fxg_attr_i(n, "num_layers"), D = fxg_attr_b(n, "bidirectional") ? 2 : 1;
    int64_t GH = fxg_mul(rnn_gates(n), H), total = 0;
    for (int64_t l = 0; l < L && total >= 0; l++) {
        int64_t width = l ? fxg_mul(D, H) : in;
        int64_t biases = fxg_attr_b(n, "bias") ? fxg_mul(2, GH) : 0;
        int64_t one = fxg_add(fxg_mul(GH, fxg_add(width, H)), biases);
        total = fxg_add(total, fxg_mul(D, one));
    }
    return total;
}

static fx_layer *rnn_build(const fxg_node *n, fx_rng *rng)
{
    const fxg_attr *nl = fxg_attr_get(n, "nonlinearity");
    fx_recurrent_opts o = { .num_layers = (int)fxg_attr_i(n, "num_layers"),
                            .bidirectional = fxg_attr_b(n, "bidirectional"),
                            .no_bias = !fxg_attr_b(n, "bias"), .relu = nl && nl->i == 1 };
    int64_t in = fxg_attr_i(n, "input_size"), H = fxg_attr_i(n, "hidden_size");
    switch (rnn_gates(n)) {
    case 4: return fx_lstm_create(n->name, in, H, &o, rng);
    case 3: return fx_gru_create(n->name, in, H, &o, rng);
    default: return fx_rnn_create(n->name, in, H, &o, rng);
    }
}

/* inputs: x [, lengths [, h0 [, c0]]]; outputs: out, h_n [, c_n]. */
static void fwd_rnn(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    fx_tensor *len = n->nin > 1 ? in[1] : NULL, *h0 = n->nin > 2 ? in[2] : NULL,
              *c0 = n->nin > 3 ? in[3] : NULL;
    out[0] = fx_recurrent_forward(n->layer, ctx, in[0], len, h0, c0, &out[1],
                                  n->nout > 2 ? &out[2] : NULL);
}

#define RNN_COMMON                                                                  \
    REQ("input_size", AT_INT, 1, BIG), REQ("hidden_size", AT_INT, 1, BIG),           \
        OPT("num_layers", AT_INT, 1, 1, 1024), BOOL("bidirectional", 0), BOOL("bias", 1)

static const fxg_attr_schema rnn_attrs[] = { RNN_COMMON, CHOICE("nonlinearity", nonlinearities, 0),
                                             END };
static const fxg_attr_schema gru_attrs[] = { RNN_COMMON, END };

/* ------------------------------------------------------------- attention */

static int mha_check(const fxg_node *n, char *err, size_t errlen)
{
    return fxg_attr_divides(n, "num_heads", "embed_dim", err, errlen);
}

static int64_t mha_params(const fxg_node *n)
{
    int64_t e = fxg_attr_i(n, "embed_dim");
    return fxg_add(fxg_mul(4, fxg_mul(e, e)), fxg_attr_b(n, "bias") ? fxg_mul(4, e) : 0);
}

static fx_layer *mha_build(const fxg_node *n, fx_rng *rng)
{
    fx_layer *l = fx_multihead_attention_create(n->name, fxg_attr_i(n, "embed_dim"),
                                                fxg_attr_i(n, "num_heads"),
                                                fxg_attr_b(n, "bias"), rng);
    if (l && fx_multihead_attention_set_dropout(l, (float)fxg_attr_f(n, "dropout")) != FX_OK) {
        fx_layer_free(l);
        return NULL;
    }
    return l;
}

/* inputs: x | x, key_lengths | q, k, v | q, k, v, key_lengths. */
static void fwd_mha(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    bool qkv = n->nin >= 3;
    fx_tensor *k = qkv ? in[1] : in[0], *v = qkv ? in[2] : in[0];
    fx_tensor *len = n->nin == 2 ? in[1] : n->nin == 4 ? in[3] : NULL;
    out[0] = fx_multihead_attention_forward(n->layer, ctx, in[0], k, v, len,
                                            fxg_attr_b(n, "causal"));
}

static const fxg_attr_schema mha_attrs[] = {
    REQ("embed_dim", AT_INT, 1, BIG), REQ("num_heads", AT_INT, 1, BIG), BOOL("bias", 1),
    OPT("dropout", AT_FLOAT, 0, 0, PMAX), BOOL("causal", 0), END
};

/* inputs: q, k, v [, key_lengths [, mask]]. */

/* --------------------------------------------------------------- the table */

const fxg_op fxg_layer_ops[] = {
    /* layers with parameters */
    LAYER("dense", 1, 1, dense_attrs, dense_params, dense_build, fwd_layer,
          "x [..,in] -> [..,out]; weight [out,in], bias [out]"),
    { .name = "conv1d", .min_in = 1, .max_in = 1, .attrs = conv1d_attrs, .check = conv_check,
      .nparams = conv_params, .build = conv_build, .forward = fwd_layer,
      .doc = "x [N,C,L] -> [N,O,L']; weight [O,C/groups,K], bias [O]" },
    { .name = "conv2d", .min_in = 1, .max_in = 1, .attrs = conv2d_attrs, .check = conv_check,
      .nparams = conv_params, .build = conv_build, .forward = fwd_layer,
      .doc = "x [N,C,H,W] -> [N,O,H',W']; weight [O,C/groups,KH,KW], bias [O]" },
    { .name = "conv_transpose2d", .min_in = 1, .max_in = 1, .attrs = convt2d_attrs,
      .check = conv_check, .nparams = conv_params, .build = conv_build, .forward = fwd_layer,
      .doc = "x [N,C,H,W] -> [N,O,H',W']; weight [C,O/groups,KH,KW], bias [O]" },
    LAYER("batchnorm1d", 1, 1, batchnorm_attrs, batchnorm_params, batchnorm_build, fwd_layer,
          "x [N,C] or [N,C,L]; weight, bias, running_mean, running_var [C]"),
    LAYER("batchnorm2d", 1, 1, batchnorm_attrs, batchnorm_params, batchnorm_build, fwd_layer,
          "x [N,C,H,W]; weight, bias, running_mean, running_var [C]"),
    LAYER("layernorm", 1, 1, layernorm_attrs, layernorm_params, layernorm_build, fwd_layer,
          "x [..,*normalized_shape]; weight, bias [normalized_shape]"),
    { .name = "groupnorm", .min_in = 1, .max_in = 1, .attrs = groupnorm_attrs,
      .check = groupnorm_check, .nparams = groupnorm_params, .build = groupnorm_build,
      .forward = fwd_layer, .doc = "x [N,C,*]; weight, bias [C]" },
    { .name = "embedding", .min_in = 1, .max_in = 1, .attrs = embedding_attrs,
      .check = embedding_check, .nparams = embedding_params, .build = embedding_build,
      .forward = fwd_layer, .doc = "idx (i32/i64, any shape) -> [idx shape.., dim]; weight "
                                   "[num,dim]" },
    { .name = "rnn", .min_in = 1, .max_in = 3, .attrs = rnn_attrs,
      .lengths_inputs = FXG_ROLE_LENGTHS(1), .nout = rnn_nout, .nparams = rnn_params,
      .build = rnn_build, .forward = fwd_rnn,
      .doc = "x [N,T,in] [, lengths [N] [, h0]] -> out [N,T,D*H], h_n [L*D,N,H]" },
    { .name = "gru", .min_in = 1, .max_in = 3, .attrs = gru_attrs,
      .lengths_inputs = FXG_ROLE_LENGTHS(1), .nout = rnn_nout, .nparams = rnn_params,
      .build = rnn_build, .forward = fwd_rnn,
      .doc = "x [N,T,in] [, lengths [N] [, h0]] -> out [N,T,D*H], h_n [L*D,N,H]" },
    { .name = "lstm", .min_in = 1, .max_in = 4, .attrs = gru_attrs,
      .lengths_inputs = FXG_ROLE_LENGTHS(1), .nout = rnn_nout, .nparams = rnn_params,
      .build = rnn_build, .forward = fwd_rnn,
      .doc = "x [N,T,in] [, lengths [N] [, h0 [, c0]]] -> out [N,T,D*H], h_n, c_n "
             "[L*D,N,H]" },
    { .name = "multihead_attention", .min_in = 1, .max_in = 4, .attrs = mha_attrs,
      .lengths_inputs = FXG_ROLE_LENGTHS(1) | FXG_ROLE_LENGTHS(3), .check = mha_check,
      .nparams = mha_params, .build = mha_build, .forward = fwd_mha,
      .doc = "x | x, key_lengths | q, k, v | q, k, v, key_lengths -> [N,L,E]; in_proj_weight "
             "[3E,E], in_proj_bias [3E], out_proj.weight [E,E], out_proj.bias [E]" },
    { .name = NULL },
};
