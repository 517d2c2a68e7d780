/*
 * graph_ops.c - the op table of a ModelSpec: one entry per op name with its
 * input count, attribute schema, parameter count, layer constructor and
 * forward function. graph.c validates every node against its entry before
 * calling anything here, so the functions below may trust the attributes'
 * types and ranges and the input count.
 *
 * Parameterless ops call the engine's op directly; ops with parameters own
 * an engine layer (named after the node, so the engine's parameter names
 * become "<node>.<param>", PyTorch's names).
 */
#include "models/graph_schema.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Index = fx_activation, fx_reduction. */
const char *const fxg_acts[] = { "none", "relu", "sigmoid", "tanh", "gelu",
                                 "softmax", "leaky_relu", "elu", NULL };
static const char *const reductions[] = { "mean", "sum", "none", NULL };

const fxg_attr_schema fxg_no_attrs[] = { END };

/* ---------------------------------------------------------------- helpers */

int64_t fxg_mul(int64_t a, int64_t b)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
        return -1;
    return r;
}

int64_t fxg_add(int64_t a, int64_t b)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r))
        return -1;
    return r;
}

const fxg_attr *fxg_attr_get(const fxg_node *n, const char *name)
{
    for (int i = 0; n->op->attrs[i].name; i++)
        if (strcmp(n->op->attrs[i].name, name) == 0)
            return &n->attrs[i];
    return NULL; /* a typo in this file: the tests reach every lookup */
}

int64_t fxg_attr_i(const fxg_node *n, const char *name) { return fxg_attr_get(n, name)->i; }
double fxg_attr_f(const fxg_node *n, const char *name) { return fxg_attr_get(n, name)->f; }
bool fxg_attr_b(const fxg_node *n, const char *name) { return fxg_attr_get(n, name)->i != 0; }

int fxg_attr_divides(const fxg_node *n, const char *d, const char *m, char *err, size_t errlen)
{
    int64_t dv = fxg_attr_i(n, d), mv = fxg_attr_i(n, m);
    if (mv % dv) {
        snprintf(err, errlen, "%s %lld must divide %s %lld", d, (long long)dv, m, (long long)mv);
        return FXS_INVALID_ARGUMENT;
    }
    return 0;
}


/* ------------------------------------------------------ generic forwards */

/* Ops whose engine function is named in the table entry's fn. */
typedef fx_tensor *(*unary_fn)(fx_ctx *, fx_tensor *);
typedef fx_tensor *(*binary_fn)(fx_ctx *, fx_tensor *, fx_tensor *);
typedef fx_tensor *(*scalar_fn)(fx_ctx *, fx_tensor *, float);
typedef fx_tensor *(*axis_fn)(fx_ctx *, fx_tensor *, int);
typedef fx_tensor *(*reduce_fn)(fx_ctx *, fx_tensor *, int, const int *, bool);
typedef fx_tensor *(*loss_fn)(fx_ctx *, fx_tensor *, fx_tensor *, fx_reduction);

typedef struct {
    const char *name;
    void (*fwd)(const fxg_node *, fx_ctx *, fx_tensor *const *, fx_tensor **);
    union {
        unary_fn unary;
        binary_fn binary;
        scalar_fn scalar;
        axis_fn axis;
        reduce_fn reduce;
        loss_fn loss;
    } fn;
} engine_fn;

static const engine_fn *engine_fn_of(const fxg_node *n);

static void fwd_unary(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = engine_fn_of(n)->fn.unary(ctx, in[0]);
}

static void fwd_binary(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = engine_fn_of(n)->fn.binary(ctx, in[0], in[1]);
}

/* The first attribute is the op's float argument. */
static void fwd_scalar(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = engine_fn_of(n)->fn.scalar(ctx, in[0], (float)n->attrs[0].f);
}

static void fwd_axis(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = engine_fn_of(n)->fn.axis(ctx, in[0], (int)fxg_attr_i(n, "axis"));
}

static void fwd_reduce(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    const fxg_attr *a = fxg_attr_get(n, "axes");
    int axes[FX_MAX_DIMS], na = a->set ? a->n : 0;
    for (int i = 0; i < na; i++)
        axes[i] = (int)a->v[i];
    out[0] = engine_fn_of(n)->fn.reduce(ctx, in[0], na, axes, fxg_attr_b(n, "keepdim"));
}

static void fwd_loss(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = engine_fn_of(n)->fn.loss(ctx, in[0], in[1], (fx_reduction)fxg_attr_i(n, "reduction"));
}

/* --------------------------------------------------------------- pooling */

static fx_pool_opts pool_opts(const fxg_node *n)
{
    const fxg_attr *k = fxg_attr_get(n, "kernel_size"), *s = fxg_attr_get(n, "stride"),
                   *p = fxg_attr_get(n, "padding"), *c = fxg_attr_get(n, "count_include_pad");
    /* padding: a zero _h/_w means "the plain one" to the engine, so the plain
     * one stays 0 ([1, 0] pads H only) */
    fx_pool_opts o = { .kernel = (int)k->i, .kernel_h = (int)k->i, .kernel_w = (int)k->i2,
                       .padding_h = (int)p->i, .padding_w = (int)p->i2,
                       .exclude_pad = c && !c->i };
    if (s->set)
        o.stride = o.stride_h = (int)s->i, o.stride_w = (int)s->i2;
    return o;
}

static void fwd_maxpool(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    fx_pool_opts o = pool_opts(n);
    out[0] = fx_maxpool2d(ctx, in[0], &o);
}

static void fwd_avgpool(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    fx_pool_opts o = pool_opts(n);
    out[0] = fx_avgpool2d(ctx, in[0], &o);
}

static void fwd_adaptive(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    const fxg_attr *s = fxg_attr_get(n, "output_size");
    out[0] = fx_adaptive_avgpool2d(ctx, in[0], s->i, s->i2);
}

#define POOL_COMMON                                                           \
    REQ("kernel_size", AT_PAIR, 1, SPATIAL), UNSET("stride", AT_PAIR, 1, SPATIAL), \
        OPT("padding", AT_PAIR, 0, 0, SPATIAL)

static const fxg_attr_schema maxpool_attrs[] = { POOL_COMMON, END };
static const fxg_attr_schema avgpool_attrs[] = { POOL_COMMON, BOOL("count_include_pad", 1),
                                                 END };
static const fxg_attr_schema adaptive_attrs[] = { REQ("output_size", AT_PAIR, 1, SPATIAL), END };

/* ------------------------------------------------------------ activation */

static void fwd_activation(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in,
                           fx_tensor **out)
{
    out[0] = fx_activate(ctx, in[0], (fx_activation)fxg_attr_i(n, "activation"));
}

static const fxg_attr_schema activation_attrs[] = { REQ_CHOICE("activation", fxg_acts), END };

/* gelu's approximate, as PyTorch and ONNX spell it; index 0 (the default,
 * so specs written before the attribute keep their meaning) is the tanh
 * approximation, 1 the exact x * Phi(x). */
static const char *const gelu_approx[] = { "tanh", "none", NULL };
static const fxg_attr_schema gelu_attrs[] = { CHOICE("approximate", gelu_approx, 0), END };

static void fwd_gelu(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fxg_attr_i(n, "approximate") ? fx_gelu_exact(ctx, in[0]) : fx_gelu(ctx, in[0]);
}

/* -------------------------------------------------------------- attention */

static void fwd_sdpa(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_scaled_dot_product_attention(ctx, in[0], in[1], in[2],
                                             n->nin > 3 ? in[3] : NULL, fxg_attr_b(n, "causal"),
                                             n->nin > 4 ? in[4] : NULL,
                                             (float)fxg_attr_f(n, "dropout_p"));
}

static const fxg_attr_schema sdpa_attrs[] = { BOOL("causal", 0),
                                              OPT("dropout_p", AT_FLOAT, 0, 0, PMAX), END };

/* ------------------------------------------------------ misc layers/ops */

static void fwd_grad_reverse(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in,
                             fx_tensor **out)
{
    out[0] = fx_grad_reverse(ctx, in[0], (float)fxg_attr_f(n, "lambda"));
}

static void fwd_dropout(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_dropout(ctx, in[0], (float)fxg_attr_f(n, "p"));
}

static void fwd_flatten(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_flatten(ctx, in[0]);
}

static void fwd_global_pool(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in,
                            fx_tensor **out)
{
    out[0] = fx_global_avgpool2d(ctx, in[0]);
}

static void fwd_linear(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_linear(ctx, in[0], in[1], n->nin > 2 ? in[2] : NULL);
}

static void fwd_clamp(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_clamp(ctx, in[0], (float)fxg_attr_f(n, "min"), (float)fxg_attr_f(n, "max"));
}

static int clamp_check(const fxg_node *n, char *err, size_t errlen)
{
    double lo = fxg_attr_f(n, "min"), hi = fxg_attr_f(n, "max");
    if (!(lo <= hi) || !((float)lo <= (float)hi)) {
        snprintf(err, errlen, "min %g is above max %g", lo, hi);
        return FXS_INVALID_ARGUMENT;
    }
    return 0;
}

/* ----------------------------------------------------------------- shapes */

static int reshape_check(const fxg_node *n, char *err, size_t errlen)
{
    const fxg_attr *s = fxg_attr_get(n, "shape");
    int infer = 0;
    for (int i = 0; i < s->n; i++)
        infer += s->v[i] == -1;
    if (infer > 1) {
        snprintf(err, errlen, "attribute 'shape' has %d entries -1; at most one is allowed",
                 infer);
        return FXS_INVALID_ARGUMENT;
    }
    return 0;
}

/* 0 copies the input's size at that position (ONNX's rule), so a batch of
 * any size can be reshaped: [0, -1] flattens all but the first dim. */
static void fwd_reshape(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    const fxg_attr *s = fxg_attr_get(n, "shape");
    int64_t shape[FX_MAX_DIMS];
    for (int i = 0; i < s->n; i++) {
        shape[i] = s->v[i];
        if (shape[i] == 0) {
            if (i >= in[0]->ndim) {
                fx_ctx_fail(ctx, FX_ERR_SHAPE, "reshape: shape entry %d is 0 (copy the input's "
                            "size) but the input has only %d dims", i, in[0]->ndim);
                return;
            }
            shape[i] = in[0]->shape[i];
        }
    }
    out[0] = fx_reshape(ctx, in[0], s->n, shape);
}

static void fwd_transpose(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_transpose(ctx, in[0], (int)fxg_attr_i(n, "dim0"), (int)fxg_attr_i(n, "dim1"));
}

static void fwd_permute(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    const fxg_attr *d = fxg_attr_get(n, "dims");
    int perm[FX_MAX_DIMS];
    if (d->n != in[0]->ndim) {
        fx_ctx_fail(ctx, FX_ERR_AXIS, "permute: dims has %d entries, the input has %d dims",
                    d->n, in[0]->ndim);
        return;
    }
    for (int i = 0; i < d->n; i++)
        perm[i] = (int)d->v[i];
    out[0] = fx_permute(ctx, in[0], perm);
}

static void fwd_concat(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_concat(ctx, n->nin, in, (int)fxg_attr_i(n, "axis"));
}

static void fwd_slice(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    const fxg_attr *e = fxg_attr_get(n, "end");
    out[0] = fx_slice(ctx, in[0], (int)fxg_attr_i(n, "axis"), fxg_attr_i(n, "start"),
                      e->set ? e->i : INT64_MAX, fxg_attr_i(n, "step"));
}

static int split_nout(const fxg_node *n) { return fxg_attr_get(n, "sizes")->n; }

static void fwd_split(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    const fxg_attr *s = fxg_attr_get(n, "sizes");
    fx_split(ctx, in[0], (int)fxg_attr_i(n, "axis"), s->n, s->v, out);
}

static void fwd_index_select(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in,
                             fx_tensor **out)
{
    out[0] = fx_index_select(ctx, in[0], (int)fxg_attr_i(n, "axis"), in[1]);
}

static void fwd_gather(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_gather(ctx, in[0], (int)fxg_attr_i(n, "axis"), in[1]);
}

static void fwd_where(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    out[0] = fx_where(ctx, in[0], in[1], in[2]);
}

/* ---------------------------------------------------------------- losses */

static fx_ctc_opts ctc_opts(const fxg_node *n)
{
    return (fx_ctc_opts){ .blank = fxg_attr_i(n, "blank"),
                          .reduction = (fx_reduction)fxg_attr_i(n, "reduction"),
                          .zero_infinity = fxg_attr_b(n, "zero_infinity"),
                          .from_logits = fxg_attr_b(n, "from_logits") };
}

static void fwd_ctc(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    fx_ctc_opts o = ctc_opts(n);
    out[0] = fx_ctc_loss(ctx, in[0], in[1], in[2], in[3], &o);
}

/* Probe values cannot form valid CTC targets (their count must match the
 * lengths' sum, labels must differ from blank), so shape inference checks
 * the ranks and gives [N] or a scalar. */
static void probe_ctc(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out)
{
    if (in[0]->ndim != 3 || in[0]->dtype != FX_F32 || in[2]->ndim != 1 || in[3]->ndim != 1 ||
        in[1]->ndim < 1 || in[1]->ndim > 2) {
        fx_ctx_fail(ctx, FX_ERR_SHAPE, "ctc_loss: log_probs must be f32 [T,N,C], targets [N,S] "
                    "or 1-D, input_lengths and target_lengths [N]");
        return;
    }
    int64_t N = in[0]->shape[1];
    bool none = fxg_attr_i(n, "reduction") == FX_NONE;
    out[0] = fx_zeros(ctx, FX_F32, none ? 1 : 0, &N);
}

static const fxg_attr_schema loss_attrs[] = { CHOICE("reduction", reductions, FX_MEAN), END };
static const fxg_attr_schema ctc_attrs[] = {
    OPT("blank", AT_INT, 0, 0, BIG), CHOICE("reduction", reductions, FX_MEAN),
    BOOL("zero_infinity", 0), BOOL("from_logits", 0), END
};

/* ------------------------------------------------------------- op schemas */

static const fxg_attr_schema value_attrs[] = { REQ("value", AT_FLOAT, -FINITE, FINITE), END };
static const fxg_attr_schema pow_attrs[] = { REQ("exponent", AT_FLOAT, -FINITE, FINITE), END };
static const fxg_attr_schema leaky_attrs[] = {
    OPT("negative_slope", AT_FLOAT, 0.01, -FINITE, FINITE), END
};
static const fxg_attr_schema elu_attrs[] = { OPT("alpha", AT_FLOAT, 1.0, -FINITE, FINITE), END };
static const fxg_attr_schema clamp_attrs[] = {
    OPT("min", AT_FLOAT, -INFINITY, -INFINITY, INFINITY),
    OPT("max", AT_FLOAT, INFINITY, -INFINITY, INFINITY), END
};
static const fxg_attr_schema axis_attrs[] = { OPT("axis", AT_INT, -1, AXMIN, AXMAX), END };
static const fxg_attr_schema axis0_attrs[] = { OPT("axis", AT_INT, 0, AXMIN, AXMAX), END };
static const fxg_attr_schema reduce_attrs[] = {
    INTS("axes", false, AXMIN, AXMAX, 1, FX_MAX_DIMS), BOOL("keepdim", 0), END
};
static const fxg_attr_schema reshape_attrs[] = { INTS("shape", true, -1, BIG, 0, FX_MAX_DIMS),
                                                 END };
static const fxg_attr_schema transpose_attrs[] = { REQ("dim0", AT_INT, AXMIN, AXMAX),
                                                   REQ("dim1", AT_INT, AXMIN, AXMAX), END };
static const fxg_attr_schema permute_attrs[] = {
    INTS("dims", true, AXMIN, AXMAX, 0, FX_MAX_DIMS), END
};
static const fxg_attr_schema slice_attrs[] = {
    OPT("axis", AT_INT, 0, AXMIN, AXMAX), OPT("start", AT_INT, 0, -BIG, BIG),
    UNSET("end", AT_INT, -BIG, BIG), OPT("step", AT_INT, 1, 1, BIG), END
};
static const fxg_attr_schema split_attrs[] = { OPT("axis", AT_INT, 0, AXMIN, AXMAX),
                                               INTS("sizes", true, 1, BIG, 1, 4096), END };
static const fxg_attr_schema grl_attrs[] = { OPT("lambda", AT_FLOAT, 1.0, -FINITE, FINITE),
                                             END };
static const fxg_attr_schema dropout_attrs[] = { OPT("p", AT_FLOAT, 0.5, 0, PMAX), END };

/* --------------------------------------------------------------- the table */

static const engine_fn engine_fns[] = {
    { "matmul", fwd_binary, { .binary = fx_matmul } },
    { "add", fwd_binary, { .binary = fx_add } },
    { "sub", fwd_binary, { .binary = fx_sub } },
    { "mul", fwd_binary, { .binary = fx_mul } },
    { "div", fwd_binary, { .binary = fx_div } },
    { "neg", fwd_unary, { .unary = fx_neg } },
    { "exp", fwd_unary, { .unary = fx_exp } },
    { "log", fwd_unary, { .unary = fx_log } },
    { "sqrt", fwd_unary, { .unary = fx_sqrt } },
    { "abs", fwd_unary, { .unary = fx_abs } },
    { "relu", fwd_unary, { .unary = fx_relu } },
    { "erf", fwd_unary, { .unary = fx_erf } },
    { "sigmoid", fwd_unary, { .unary = fx_sigmoid } },
    { "tanh", fwd_unary, { .unary = fx_tanh } },
    { "scale", fwd_scalar, { .scalar = fx_scale } },
    { "add_scalar", fwd_scalar, { .scalar = fx_add_scalar } },
    { "pow", fwd_scalar, { .scalar = fx_pow } },
    { "leaky_relu", fwd_scalar, { .scalar = fx_leaky_relu } },
    { "elu", fwd_scalar, { .scalar = fx_elu } },
    { "softmax", fwd_axis, { .axis = fx_softmax } },
    { "log_softmax", fwd_axis, { .axis = fx_log_softmax } },
    { "sum", fwd_reduce, { .reduce = fx_sum } },
    { "mean", fwd_reduce, { .reduce = fx_mean } },
    { "max", fwd_reduce, { .reduce = fx_max } },
    { "mse_loss", fwd_loss, { .loss = fx_mse_loss } },
    { "cross_entropy", fwd_loss, { .loss = fx_cross_entropy } },
    { "cross_entropy_soft", fwd_loss, { .loss = fx_cross_entropy_soft } },
    { "bce_with_logits", fwd_loss, { .loss = fx_bce_with_logits } },
    { NULL, NULL, { NULL } },
};

static const engine_fn *engine_fn_of(const fxg_node *n)
{
    for (const engine_fn *e = engine_fns; e->name; e++)
        if (strcmp(e->name, n->op->name) == 0)
            return e;
    return NULL; /* unreachable: only ops listed above use the generic forwards */
}

const fxg_op fxg_tensor_ops[] = {
    /* parameterless layers */
    OP("maxpool2d", 1, maxpool_attrs, fwd_maxpool, "x [N,C,H,W] -> [N,C,H',W']"),
    OP("avgpool2d", 1, avgpool_attrs, fwd_avgpool, "x [N,C,H,W] -> [N,C,H',W']"),
    OP("adaptive_avgpool2d", 1, adaptive_attrs, fwd_adaptive, "x [N,C,H,W] -> [N,C,oh,ow]"),
    OP("global_avgpool2d", 1, fxg_no_attrs, fwd_global_pool, "x [N,C,H,W] -> [N,C]"),
    OP("flatten", 1, fxg_no_attrs, fwd_flatten, "x [N,...] -> [N,prod(...)]"),
    OP("activation", 1, activation_attrs, fwd_activation, "x -> act(x)"),
    OP("grad_reverse", 1, grl_attrs, fwd_grad_reverse,
       "x -> x; the gradient is multiplied by -lambda"),
    OP("dropout", 1, dropout_attrs, fwd_dropout, "x -> x with elements zeroed in training"),
    /* ops */
    OP("matmul", 2, fxg_no_attrs, fwd_binary, "a [..,M,K], b [..,K,N] -> [..,M,N]"),
    { .name = "linear", .min_in = 2, .max_in = 3, .attrs = fxg_no_attrs, .forward = fwd_linear,
      .doc = "x [..,in], weight [out,in] [, bias [out]] -> [..,out]" },
    OP("add", 2, fxg_no_attrs, fwd_binary, "a + b (broadcasting)"),
    OP("sub", 2, fxg_no_attrs, fwd_binary, "a - b (broadcasting)"),
    OP("mul", 2, fxg_no_attrs, fwd_binary, "a * b (broadcasting)"),
    OP("div", 2, fxg_no_attrs, fwd_binary, "a / b (broadcasting)"),
    OP("neg", 1, fxg_no_attrs, fwd_unary, "-x"),
    OP("scale", 1, value_attrs, fwd_scalar, "x * value"),
    OP("add_scalar", 1, value_attrs, fwd_scalar, "x + value"),
    OP("exp", 1, fxg_no_attrs, fwd_unary, "exp(x)"),
    OP("log", 1, fxg_no_attrs, fwd_unary, "log(x)"),
    OP("sqrt", 1, fxg_no_attrs, fwd_unary, "sqrt(x)"),
    OP("pow", 1, pow_attrs, fwd_scalar, "x ^ exponent"),
    OP("abs", 1, fxg_no_attrs, fwd_unary, "|x|"),
    OP("relu", 1, fxg_no_attrs, fwd_unary, "max(x, 0)"),
    OP("leaky_relu", 1, leaky_attrs, fwd_scalar, "x < 0 ? negative_slope * x : x"),
    OP("elu", 1, elu_attrs, fwd_scalar, "x < 0 ? alpha * (exp(x) - 1) : x"),
    OP("erf", 1, fxg_no_attrs, fwd_unary, "erf(x)"),
    OP("gelu", 1, gelu_attrs, fwd_gelu, "x * Phi(x), by default its tanh approximation"),
    OP("sigmoid", 1, fxg_no_attrs, fwd_unary, "1 / (1 + exp(-x))"),
    OP("tanh", 1, fxg_no_attrs, fwd_unary, "tanh(x)"),
    { .name = "clamp", .min_in = 1, .max_in = 1, .attrs = clamp_attrs, .check = clamp_check,
      .forward = fwd_clamp, .doc = "min(max(x, min), max)" },
    OP("softmax", 1, axis_attrs, fwd_axis, "softmax along axis"),
    OP("log_softmax", 1, axis_attrs, fwd_axis, "log_softmax along axis"),
    OP("sum", 1, reduce_attrs, fwd_reduce, "sum over axes (all when absent)"),
    OP("mean", 1, reduce_attrs, fwd_reduce, "mean over axes (all when absent)"),
    OP("max", 1, reduce_attrs, fwd_reduce, "max over axes (all when absent)"),
    { .name = "reshape", .min_in = 1, .max_in = 1, .attrs = reshape_attrs,
      .check = reshape_check, .forward = fwd_reshape,
      .doc = "x -> shape (one -1 inferred; 0 copies the input's size)" },
    OP("transpose", 1, transpose_attrs, fwd_transpose, "swaps dims dim0 and dim1"),
    OP("permute", 1, permute_attrs, fwd_permute, "reorders the dims"),
    { .name = "concat", .min_in = 1, .max_in = -1, .attrs = axis0_attrs, .forward = fwd_concat,
      .doc = "x1, x2, ... joined along axis" },
    OP("slice", 1, slice_attrs, fwd_slice, "x[start:end:step] along axis"),
    { .name = "split", .min_in = 1, .max_in = 1, .attrs = split_attrs, .nout = split_nout,
      .forward = fwd_split, .doc = "x -> one output per entry of sizes (\"node:K\")" },
    OP("index_select", 2, axis0_attrs, fwd_index_select,
       "x, idx (1-D i32/i64) -> x's entries idx along axis"),
    OP("gather", 2, axis0_attrs, fwd_gather, "x, idx (x's rank) -> torch.gather(x, axis, idx)"),
    OP("where", 3, fxg_no_attrs, fwd_where, "cond, a, b -> cond ? a : b"),
    { .name = "scaled_dot_product_attention", .min_in = 3, .max_in = 5, .attrs = sdpa_attrs,
      .lengths_inputs = FXG_ROLE_LENGTHS(3), .forward = fwd_sdpa,
      .doc = "q [..,L,E], k [..,S,E], v [..,S,Ev] [, key_lengths [N] [, mask]] -> [..,L,Ev]" },
    /* losses */
    OP("mse_loss", 2, loss_attrs, fwd_loss, "pred, target -> mean((pred - target)^2)"),
    OP("cross_entropy", 2, loss_attrs, fwd_loss, "logits [N,C], labels [N] i32/i64"),
    OP("cross_entropy_soft", 2, loss_attrs, fwd_loss, "logits [N,C], probabilities [N,C]"),
    OP("bce_with_logits", 2, loss_attrs, fwd_loss, "logits, targets in [0,1] (same shape)"),
    { .name = "ctc_loss", .min_in = 4, .max_in = 4, .attrs = ctc_attrs,
      .lengths_inputs = FXG_ROLE_LENGTHS(2), .forward = fwd_ctc, .probe = probe_ctc,
      .doc = "log_probs [T,N,C], targets [N,S] or 1-D, input_lengths [N], target_lengths [N]" },
    { .name = NULL },
};

static int count_ops(const fxg_op *t)
{
    int n = 0;
    while (t[n].name)
        n++;
    return n;
}

int fxg_num_ops(void)
{
    return count_ops(fxg_layer_ops) + count_ops(fxg_tensor_ops);
}

const fxg_op *fxg_op_at(int i)
{
    int nl = count_ops(fxg_layer_ops);
    if (i < 0 || i >= fxg_num_ops())
        return NULL;
    return i < nl ? &fxg_layer_ops[i] : &fxg_tensor_ops[i - nl];
}

const fxg_op *fxg_find_op(const char *name)
{
    for (int i = 0; i < fxg_num_ops(); i++)
        if (strcmp(fxg_op_at(i)->name, name) == 0)
            return fxg_op_at(i);
    return NULL;
}
