/* ops_rows_conv.c - registry rows of the convolutions (2-D, 1-D,
 * transposed), the poolings (max, average, adaptive, global) and their
 * layers. See ops_registry.h. */
#include "ops_registry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S1(a) { 1, { a } }
#define S3(a, b, c) { 3, { a, b, c } }
#define S4(a, b, c, d) { 4, { a, b, c, d } }

/* ----------------------------------------------------------- convolutions */

/* A configuration: or_conv's geometry (for the transposed op: input
 * channels c, output channels o, weight [c, o/groups, kh, kw]), bias or not,
 * and the transposed op's output padding. */
typedef struct {
    or_conv g;
    bool bias;
    int oph, opw;
} conv_arg;

static fx_conv_opts opts_of(const conv_arg *a)
{
    return (fx_conv_opts){ .stride_h = a->g.sh, .stride_w = a->g.sw, .padding_h = a->g.ph,
                           .padding_w = a->g.pw, .dilation_h = a->g.dh, .dilation_w = a->g.dw,
                           .groups = a->g.groups, .output_padding_h = a->oph,
                           .output_padding_w = a->opw };
}

enum { CONV2D, CONV1D, CONVT };

static fx_tensor *f_conv(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                         const or_case *c)
{
    const conv_arg *a = c->arg;
    fx_conv_opts o = opts_of(a);
    fx_tensor *b = a->bias ? in[2] : NULL;
    switch (*(const int *)arg) {
    case CONV1D:
        o = (fx_conv_opts){ .stride = a->g.sw, .padding = a->g.pw, .dilation = a->g.dw,
                            .groups = a->g.groups };
        return fx_conv1d(ctx, in[0], in[1], b, &o);
    case CONVT: return fx_conv_transpose2d(ctx, in[0], in[1], b, &o);
    default: return fx_conv2d(ctx, in[0], in[1], b, &o);
    }
}

/* out[n, g*og+oc, i*s-p+a*d, ...] += x[n, g*cg+ic, i, j] * w[g*cg+ic, oc, a, b]
 * (+ bias): the transposed convolution by its scatter definition. */
void or_conv_transpose2d(const or_conv *c, int oph, int opw, const double *x, const double *w,
                         const double *b, or_host *out)
{
    int64_t oh = (c->h - 1) * c->sh - 2 * c->ph + c->dh * (c->kh - 1) + oph + 1;
    int64_t ow = (c->w - 1) * c->sw - 2 * c->pw + c->dw * (c->kw - 1) + opw + 1;
    int64_t cg = c->c / c->groups, og = c->o / c->groups;
    or_host_init(out, 4, (int64_t[]){ c->n, c->o, oh, ow });
    double *y = out->v;
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t ic = 0; ic < c->c; ic++)
            for (int64_t i = 0; i < c->h; i++)
                for (int64_t j = 0; j < c->w; j++)
                    for (int64_t oc = 0; oc < og; oc++)
                        for (int64_t a = 0; a < c->kh; a++)
                            for (int64_t e = 0; e < c->kw; e++) {
                                int64_t iy = i * c->sh - c->ph + a * c->dh;
                                int64_t ix = j * c->sw - c->pw + e * c->dw;
                                if (iy < 0 || iy >= oh || ix < 0 || ix >= ow)
                                    continue;
                                int64_t o = ic / cg * og + oc;
                                y[((n * c->o + o) * oh + iy) * ow + ix] +=
                                    x[((n * c->c + ic) * c->h + i) * c->w + j] *
                                    w[((ic * og + oc) * c->kh + a) * c->kw + e];
                            }
    for (int64_t n = 0; b && n < c->n; n++)
        for (int64_t o = 0; o < c->o; o++)
            for (int64_t p = 0; p < oh * ow; p++)
                y[(n * c->o + o) * oh * ow + p] += b[o];
}

static void r_conv(const or_ref *r)
{
    const conv_arg *a = r->c->arg;
    const double *b = a->bias ? r->in[2].v : NULL;
    int kind = *(const int *)r->arg;
    if (kind == CONVT) {
        or_conv_transpose2d(&a->g, a->oph, a->opw, r->in[0].v, r->in[1].v, b, r->out);
        return;
    }
    int64_t oh, ow;
    or_conv2d(&a->g, r->in[0].v, r->in[1].v, b, NULL, &oh, &ow);
    if (kind == CONV1D)
        or_host_init(r->out, 3, (int64_t[]){ a->g.n, a->g.o, ow });
    else
        or_host_init(r->out, 4, (int64_t[]){ a->g.n, a->g.o, oh, ow });
    or_conv2d(&a->g, r->in[0].v, r->in[1].v, b, r->out->v, &oh, &ow);
}

/* { n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups }, bias */
#define CONV(label, n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, g, bias)                      \
    { label, (bias) ? 3 : 2, { S4(n, c, h, w), S4(o, (c) / (g), kh, kw), S1(o) }, 0,            \
      &(const conv_arg){ { n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, g }, bias } }
static const or_case CONV2D_CASES[] = {
    CONV("plain 3x3, padding 1", 2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, true),
    CONV("stride 2, non-square, no bias", 2, 2, 7, 6, 3, 3, 2, 2, 2, 1, 0, 1, 1, 1, false),
    CONV("dilation 2", 1, 2, 7, 7, 2, 3, 3, 1, 1, 2, 2, 2, 2, 1, true),
    CONV("groups 2", 2, 4, 5, 4, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, true),
    CONV("depthwise, multiplier 2", 2, 3, 5, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3, false),
    CONV("1x1: no unrolling", 2, 4, 4, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, true),
    CONV("1x1 grouped", 2, 4, 3, 3, 6, 1, 1, 1, 1, 0, 0, 1, 1, 2, true),
    CONV("stride > kernel, mixed axes", 1, 2, 8, 7, 2, 2, 3, 3, 2, 0, 1, 1, 2, 1, true),
    CONV("grouped, stride 2, padding 1", 2, 4, 7, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2, true),
    CONV("dilation 2, padding 2, no bias", 2, 3, 8, 8, 5, 3, 3, 1, 1, 2, 2, 2, 2, 1, false),
};

/* conv1d is conv2d on [N, C, 1, L]: the same loop with H = KH = 1. */
#define CONV1(label, n, c, l, o, k, s, p, d, g, bias)                                            \
    { label, (bias) ? 3 : 2, { S3(n, c, l), S3(o, (c) / (g), k), S1(o) }, 0,                   \
      &(const conv_arg){ { n, c, 1, l, o, 1, k, 1, s, 0, p, 1, d, g }, bias } }
static const or_case CONV1D_CASES[] = {
    CONV1("stride 2, padding 1", 2, 3, 9, 4, 3, 2, 1, 1, 1, true),
    CONV1("dilation 2, groups 2, no bias", 2, 4, 10, 4, 3, 1, 2, 2, 2, false),
    CONV1("kernel 1", 1, 2, 6, 3, 1, 1, 0, 1, 1, true),
    CONV1("padding 1", 2, 3, 9, 4, 3, 1, 1, 1, 1, true),
};

/* The transposed op's view: input channels c, output channels o. */
#define CONVT_(label, n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, g, bias, oph, opw)          \
    { label, (bias) ? 3 : 2, { S4(n, c, h, w), S4(c, (o) / (g), kh, kw), S1(o) }, 0,            \
      &(const conv_arg){ { n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, g }, bias, oph, opw } }
static const or_case CONVT_CASES[] = {
    CONVT_("stride 2, output padding 1", 2, 3, 3, 3, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, true, 1, 1),
    CONVT_("groups 2, dilation, mixed axes", 1, 4, 3, 4, 6, 3, 2, 1, 2, 0, 1, 2, 1, 2, true, 0, 1),
    CONVT_("2x2 stride 2, no bias", 2, 2, 4, 3, 2, 2, 2, 2, 2, 0, 0, 1, 1, 2, false, 0, 0),
    CONVT_("stride 3, output padding 2", 1, 3, 2, 3, 2, 3, 3, 3, 1, 1, 0, 1, 2, 1, true, 2, 1),
    CONVT_("stride 2, padding 1", 2, 3, 4, 5, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, true, 0, 0),
};

/* ---------------------------------------------------------------- pooling */

typedef struct {
    int kh, kw, sh, sw, ph, pw;
    bool exclude_pad;
    int64_t oh, ow; /* adaptive */
} pool_arg;

enum { MAXPOOL, AVGPOOL, ADAPTIVE, GLOBAL };

static fx_tensor *f_pool(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                         const or_case *c)
{
    const pool_arg *a = c->arg;
    fx_pool_opts o = { .kernel_h = a->kh, .kernel_w = a->kw, .stride_h = a->sh,
                       .stride_w = a->sw, .padding_h = a->ph, .padding_w = a->pw,
                       .exclude_pad = a->exclude_pad };
    if (l)
        return fx_layer_forward(l, ctx, in[0]);
    switch (*(const int *)arg) {
    case MAXPOOL: return fx_maxpool2d(ctx, in[0], &o);
    case AVGPOOL: return fx_avgpool2d(ctx, in[0], &o);
    case ADAPTIVE: return fx_adaptive_avgpool2d(ctx, in[0], a->oh, a->ow);
    default: return fx_global_avgpool2d(ctx, in[0]);
    }
}

/* PyTorch's pooling by its definition: max over the window's in-image
 * elements; average over them divided by the window's size clipped to the
 * padded image, or by the in-image count when exclude_pad; adaptive windows
 * are rows floor(i*H/OH) .. ceil((i+1)*H/OH) - 1; global is adaptive 1x1
 * shaped [N, C]. */
static void r_pool(const or_ref *r)
{
    const pool_arg *a = r->c->arg;
    const or_host *x = &r->in[0];
    int kind = *(const int *)r->arg;
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], oh, ow;
    if (kind == ADAPTIVE || kind == GLOBAL) {
        oh = kind == GLOBAL ? 1 : a->oh, ow = kind == GLOBAL ? 1 : a->ow;
    } else {
        oh = (H + 2 * a->ph - a->kh) / a->sh + 1;
        ow = (W + 2 * a->pw - a->kw) / a->sw + 1;
    }
    if (kind == GLOBAL)
        or_host_init(r->out, 2, (int64_t[]){ N, C });
    else
        or_host_init(r->out, 4, (int64_t[]){ N, C, oh, ow });
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) {
                int64_t r0, r1, c0, c1, span = 0, cnt = 0;
                if (kind >= ADAPTIVE) {
                    r0 = (int64_t)floor((double)i * H / oh);
                    r1 = (int64_t)ceil((double)(i + 1) * H / oh);
                    c0 = (int64_t)floor((double)j * W / ow);
                    c1 = (int64_t)ceil((double)(j + 1) * W / ow);
                } else {
                    r0 = i * a->sh - a->ph, r1 = r0 + a->kh;
                    c0 = j * a->sw - a->pw, c1 = c0 + a->kw;
                }
                double m = -INFINITY, s = 0.0;
                for (int64_t y = r0; y < r1; y++)
                    for (int64_t z = c0; z < c1; z++) {
                        if (y < H + a->ph && z < W + a->pw)
                            span++;
                        if (y < 0 || y >= H || z < 0 || z >= W)
                            continue;
                        double v = x->v[(p * H + y) * W + z];
                        m = fmax(m, v);
                        s += v;
                        cnt++;
                    }
                double div = kind >= ADAPTIVE || a->exclude_pad ? (double)cnt : (double)span;
                r->out->v[(p * oh + i) * ow + j] = kind == MAXPOOL ? m : s / div;
            }
}

#define POOL(label, n, c, h, w, kh, kw, sh, sw, ph, pw, ex)                                      \
    { label, 1, { S4(n, c, h, w) }, 0, &(const pool_arg){ kh, kw, sh, sw, ph, pw, ex } }
static const or_case MAXPOOL_CASES[] = {
    POOL("the common 2x2", 2, 3, 6, 6, 2, 2, 2, 2, 0, 0, false),
    POOL("odd height: the last row dropped", 2, 2, 7, 6, 2, 2, 2, 2, 0, 0, false),
    POOL("2x2 four at a time, then one", 2, 2, 9, 11, 2, 2, 2, 2, 0, 0, false),
    POOL("overlapping windows with padding", 2, 2, 7, 7, 3, 3, 2, 2, 1, 1, false),
    POOL("non-square", 1, 2, 5, 7, 2, 3, 1, 2, 0, 1, false),
    POOL("one window, the rest dropped", 1, 1, 5, 5, 3, 3, 3, 3, 0, 0, false),
    POOL("3x3 stride 2 padding 1", 2, 3, 7, 8, 3, 3, 2, 2, 1, 1, false),
    POOL("2x2 on [2,3,8,6]", 2, 3, 8, 6, 2, 2, 2, 2, 0, 0, false),
};
static const or_case AVGPOOL_CASES[] = {
    POOL("2x2", 2, 2, 6, 6, 2, 2, 2, 2, 0, 0, false),
    POOL("padding counted", 2, 2, 7, 5, 3, 3, 2, 2, 1, 1, false),
    POOL("padding not counted", 2, 2, 7, 5, 3, 3, 2, 2, 1, 1, true),
    POOL("non-square, past the padded edge", 1, 3, 5, 5, 3, 2, 1, 1, 1, 1, false),
    POOL("the same, padding not counted", 1, 3, 5, 5, 3, 2, 1, 1, 1, 1, true),
    POOL("3x3 stride 2 padding 1", 2, 3, 7, 8, 3, 3, 2, 2, 1, 1, false),
};
#define ADAPT(label, n, c, h, w, OH, OW)                                                         \
    { label, 1, { S4(n, c, h, w) }, 0, &(const pool_arg){ .oh = OH, .ow = OW } }
static const or_case ADAPTIVE_CASES[] = {
    ADAPT("7x7 to 3x3", 2, 2, 7, 7, 3, 3), ADAPT("5x6 to 2x4", 2, 2, 5, 6, 2, 4),
    ADAPT("the same size", 2, 2, 4, 4, 4, 4), ADAPT("3x3 up to 5x5", 2, 2, 3, 3, 5, 5),
    ADAPT("to 1x1", 2, 2, 10, 7, 1, 1), ADAPT("7x5 to 3x2", 2, 3, 7, 5, 3, 2),
};
static const or_case GLOBAL_CASES[] = {
    { "10x7", 1, { S4(2, 2, 10, 7) }, 0, &(const pool_arg){ 0 } },
    { "7x5", 1, { S4(2, 3, 7, 5) }, 0, &(const pool_arg){ 0 } },
};

/* ----------------------------------------------------------------- layers */

typedef struct {
    int kind; /* CONV2D, CONV1D, CONVT */
    int64_t in, out, kh, kw;
    fx_conv_opts o;
} conv_layer_arg;

static fx_layer *l_conv(const void *arg, const or_case *c, fx_rng *rng)
{
    const conv_layer_arg *a = c->arg;
    fx_layer *l = a->kind == CONV1D ? fx_conv1d_create("conv", a->in, a->out, a->kw, &a->o, rng)
                  : a->kind == CONVT
                      ? fx_conv_transpose2d_create("conv", a->in, a->out, a->kh, a->kw, &a->o, rng)
                      : fx_conv2d_create("conv", a->in, a->out, a->kh, a->kw, &a->o, rng);
    if (l)
        or_randomise(fx_layer_param(l, "bias"), rng, 0.5); /* not the zeros it starts at */
    return l;
}

static fx_tensor *f_layer(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    return fx_layer_forward(l, ctx, in[0]);
}

/* The op's reference with the layer's weight and bias, then the activation. */
static void r_conv_layer(const or_ref *r)
{
    const conv_layer_arg *a = r->c->arg;
    const or_host *x = &r->in[0], *w = or_param(r, "weight"), *b = or_param(r, "bias");
    const fx_conv_opts *o = &a->o;
    int s = o->stride ? o->stride : 1, p = o->padding, d = o->dilation ? o->dilation : 1;
    int g = o->groups ? o->groups : 1;
    conv_arg ca = { { x->shape[0], x->shape[1], a->kind == CONV1D ? 1 : x->shape[2],
                      x->shape[x->ndim - 1], a->out, a->kind == CONV1D ? 1 : a->kh, a->kw,
                      a->kind == CONV1D ? 1 : s, s, a->kind == CONV1D ? 0 : p, p,
                      a->kind == CONV1D ? 1 : d, d, g }, b != NULL };
    or_host in[3] = { *x, *w, b ? *b : *x };
    or_ref rr = *r;
    rr.in = in, rr.c = &(or_case){ .arg = &ca }, rr.arg = &a->kind;
    r_conv(&rr);
    for (int64_t i = 0; i < r->out->n; i++)
        r->out->v[i] = or_act(r->out->v[i], o->act);
}

#define LAYER(label, shape, ...) { label, 1, { shape }, 0, &(const conv_layer_arg){ __VA_ARGS__ } }
static const or_case CONV_LAYER_CASES[] = {
    LAYER("3 -> 4, 3x3, padding 1, tanh", S4(2, 3, 6, 6), CONV2D, 3, 4, 3, 3,
          { .padding = 1, .act = FX_ACT_TANH }),
    LAYER("4 -> 6, 3x1, groups 2, no bias", S4(2, 4, 5, 4), CONV2D, 4, 6, 3, 1,
          { .groups = 2, .no_bias = true }),
};
static const or_case CONV1D_LAYER_CASES[] = {
    LAYER("4 -> 6, kernel 5, He init", S3(2, 4, 9), CONV1D, 4, 6, 1, 5,
          { .init = FX_INIT_HE_UNIFORM }),
};
static const or_case CONVT_LAYER_CASES[] = {
    LAYER("6 -> 4, 2x2, stride 2, groups 2", S4(1, 6, 3, 4), CONVT, 6, 4, 2, 2,
          { .stride = 2, .groups = 2 }),
};

static fx_layer *l_pool(const void *arg, const or_case *c, fx_rng *rng)
{
    const pool_arg *a = c->arg;
    fx_pool_opts o = { .kernel_h = a->kh, .kernel_w = a->kw, .stride_h = a->sh,
                       .stride_w = a->sw, .padding_h = a->ph, .padding_w = a->pw,
                       .exclude_pad = a->exclude_pad };
    switch (*(const int *)arg) {
    case MAXPOOL: return fx_maxpool2d_create("pool", &o);
    case AVGPOOL: return fx_avgpool2d_create("pool", &o);
    case ADAPTIVE: return fx_adaptive_avgpool2d_create("pool", a->oh, a->ow);
    default: return fx_global_avgpool2d_create("pool");
    }
}

static const or_case MAXPOOL_LAYER_CASES[] = {
    POOL("2x2", 2, 3, 8, 6, 2, 2, 2, 2, 0, 0, false),
};
static const or_case AVGPOOL_LAYER_CASES[] = {
    POOL("3x3 stride 1 padding 1, padding not counted", 2, 3, 8, 6, 3, 3, 1, 1, 1, 1, true),
};
static const or_case ADAPTIVE_LAYER_CASES[] = { ADAPT("to 2x3", 2, 3, 8, 6, 2, 3) };
static const or_case GLOBAL_LAYER_CASES[] = {
    { "8x6", 1, { S4(2, 3, 8, 6) }, 0, &(const pool_arg){ 0 } },
};

/* ------------------------------------------------------------------- rows */

#define CONV_FWD { 1e-5, "float sums of at most 60 products against double" }
/* Distinct values 0.01 apart: a step never changes a window's maximum, and
 * small enough for the loss's rounding to stay far under atol. */
#define POOL_FILL { { OR_DISTINCT, 0.01, 0, 0 } }
#define CONV_ROW(nm, cov, cs, kind)                                                              \
    { .name = nm, .covers = cov, .arg = &(const int){ kind }, .ncases = OR_COUNT(cs),            \
      .cases = cs, .fill = { { OR_NORMAL, 1, 0, 0 }, { OR_NORMAL, 0.5, 0, 0 } },                \
      .forward = f_conv, .reference = r_conv, .fwd = CONV_FWD, .grad = OR_GRAD_LINEAR,          \
      .xb = OR_XB_GEMM }
#define POOL_ROW(nm, cov, cs, kind, xb_, layer_)                                                 \
    { .name = nm, .covers = cov, .arg = &(const int){ kind }, .ncases = OR_COUNT(cs),            \
      .cases = cs, .fill = POOL_FILL, .layer = layer_, .forward = f_pool, .reference = r_pool,  \
      .fwd = OR_FWD_SUM, .grad = OR_GRAD_STD, .xb = xb_ }
#define CONV_LAYER_ROW(nm, cov, cs)                                                              \
    { .name = nm, .covers = cov, .ncases = OR_COUNT(cs), .cases = cs, .layer = l_conv,          \
      .forward = f_layer, .reference = r_conv_layer, .fwd = CONV_FWD, .grad = OR_GRAD_STD,      \
      .xb = OR_XB_GEMM }

const or_row OR_ROWS_CONV[] = {
    CONV_ROW("conv2d", "fx_conv2d", CONV2D_CASES, CONV2D),
    CONV_ROW("conv1d", "fx_conv1d", CONV1D_CASES, CONV1D),
    CONV_ROW("conv_transpose2d", "fx_conv_transpose2d", CONVT_CASES, CONVT),
    POOL_ROW("maxpool2d", "fx_maxpool2d", MAXPOOL_CASES, MAXPOOL, OR_XB_EXACT, NULL),
    POOL_ROW("avgpool2d", "fx_avgpool2d", AVGPOOL_CASES, AVGPOOL, OR_XB_EXACT, NULL),
    POOL_ROW("adaptive_avgpool2d", "fx_adaptive_avgpool2d", ADAPTIVE_CASES, ADAPTIVE,
             OR_XB_EXACT, NULL),
    POOL_ROW("global_avgpool2d", "fx_global_avgpool2d", GLOBAL_CASES, GLOBAL, OR_XB_SUM, NULL),
    CONV_LAYER_ROW("conv2d_layer", "fx_conv2d_create", CONV_LAYER_CASES),
    CONV_LAYER_ROW("conv1d_layer", "fx_conv1d_create", CONV1D_LAYER_CASES),
    CONV_LAYER_ROW("conv_transpose2d_layer", "fx_conv_transpose2d_create", CONVT_LAYER_CASES),
    POOL_ROW("maxpool2d_layer", "fx_maxpool2d_create", MAXPOOL_LAYER_CASES, MAXPOOL, OR_XB_EXACT,
             l_pool),
    POOL_ROW("avgpool2d_layer", "fx_avgpool2d_create", AVGPOOL_LAYER_CASES, AVGPOOL, OR_XB_EXACT,
             l_pool),
    POOL_ROW("adaptive_avgpool2d_layer", "fx_adaptive_avgpool2d_create", ADAPTIVE_LAYER_CASES,
             ADAPTIVE, OR_XB_EXACT, l_pool),
    POOL_ROW("global_avgpool2d_layer", "fx_global_avgpool2d_create", GLOBAL_LAYER_CASES, GLOBAL,
             OR_XB_SUM, l_pool),
};
const int OR_NROWS_CONV = OR_COUNT(OR_ROWS_CONV);
