/*
 * op_conv.c - convolution (1-D, 2-D, transposed 2-D) and pooling ops with
 * their checks and backward passes, and the layers built on them.
 *
 * Every convolution is described to the kernels as one fx_conv_geom (see
 * kern_conv.h). conv1d is conv2d with H = KH = 1 (an [N, C, L] tensor has the
 * memory of [N, C, 1, L]). A transposed convolution is the adjoint of the
 * convolution whose input has the transposed one's output size, so
 *
 *     convT forward        = conv backward-data (into a bias-filled output)
 *     convT grad w.r.t. x  = conv forward of dy (accumulated)
 *     convT grad w.r.t. w  = conv backward-weight with x and dy swapped
 *
 * and one set of kernels serves both.
 */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ settings */

/* One axis' value: the per-axis field if set, else the square one, else def. */
static int64_t pick(int axis, int square, int64_t def)
{
    return axis ? axis : square ? square : def;
}

/* "5x7", or "7" for a 1-D op (H is 1 there). */
static const char *hw_str(char *buf, size_t n, bool one_d, int64_t h, int64_t w)
{
    if (one_d)
        snprintf(buf, n, "%lld", (long long)w);
    else
        snprintf(buf, n, "%lldx%lld", (long long)h, (long long)w);
    return buf;
}

/* Strides, padding, dilation, output padding (per axis) and groups. */
typedef struct {
    int64_t sh, sw, ph, pw, dh, dw, oph, opw, groups;
} conv_cfg;

/* Reads and checks a convolution's options (NULL: defaults). A 1-D op uses
 * the square fields or the _w ones, and H gets the neutral settings. */
static bool conv_cfg_read(fx_ctx *ctx, const char *op, bool one_d, const fx_conv_opts *opts,
                          conv_cfg *c)
{
    fx_conv_opts o = opts ? *opts : (fx_conv_opts){ 0 };
    c->sw = pick(o.stride_w, o.stride, 1);
    c->pw = pick(o.padding_w, o.padding, 0);
    c->dw = pick(o.dilation_w, o.dilation, 1);
    c->opw = pick(o.output_padding_w, o.output_padding, 0);
    c->sh = one_d ? 1 : pick(o.stride_h, o.stride, 1);
    c->ph = one_d ? 0 : pick(o.padding_h, o.padding, 0);
    c->dh = one_d ? 1 : pick(o.dilation_h, o.dilation, 1);
    c->oph = one_d ? 0 : pick(o.output_padding_h, o.output_padding, 0);
    c->groups = o.groups ? o.groups : 1;
    char s1[48], s2[48];
    if (c->sh < 1 || c->sw < 1)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "stride must be positive, got %s",
                           hw_str(s1, 48, one_d, c->sh, c->sw)), false;
    if (c->dh < 1 || c->dw < 1)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "dilation must be positive, got %s",
                           hw_str(s1, 48, one_d, c->dh, c->dw)), false;
    if (c->ph < 0 || c->pw < 0)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "padding must not be negative, got %s",
                           hw_str(s1, 48, one_d, c->ph, c->pw)), false;
    if (c->oph < 0 || c->opw < 0)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "output padding must not be negative, got %s",
                           hw_str(s1, 48, one_d, c->oph, c->opw)), false;
    if (c->groups < 1)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "groups must be positive, got %lld",
                           (long long)c->groups), false;
    if ((c->oph >= c->sh && c->oph >= c->dh) || (c->opw >= c->sw && c->opw >= c->dw))
        return fx__op_fail(ctx, FX_ERR_ARG, op, "output padding %s must be smaller than the "
                           "stride %s or the dilation",
                           hw_str(s1, 48, one_d, c->oph, c->opw),
                           hw_str(s2, 48, one_d, c->sh, c->sw)), false;
    return true;
}

/* Scratch memory for the convolution kernels (NULL when none is needed or
 * on OOM, which is recorded; *ok tells the two apart). */
static fx_tensor *conv_workspace(fx_ctx *ctx, const fx_conv_kernels *k, const fx_conv_geom *g,
                                 bool *ok)
{
    int64_t n = k->conv2d_workspace ? k->conv2d_workspace(g) : 0;
    fx_tensor *ws = n > 0 ? fx_tensor_new(ctx, FX_F32, 1, (int64_t[]){ n }) : NULL;
    *ok = n <= 0 || ws;
    return ws;
}

/* ---------------------------------------------------------- convolution */

/* The geometry travels in n->i[0..15): n c h w o oh ow kh kw sh sw ph pw dh
 * dw groups, then n->i[16] says transposed and n->i[17] that the output is
 * the ReLU of the convolution (the fused layer path). */
#define CONV_GEOM_INTS 16

static void geom_save(fx_node *n, const fx_conv_geom *g)
{
    memcpy(n->i, g, sizeof *g);
}

static fx_conv_geom geom_load(const fx_node *n)
{
    fx_conv_geom g;
    memcpy(&g, n->i, sizeof g);
    return g;
}

_Static_assert(sizeof(fx_conv_geom) == CONV_GEOM_INTS * sizeof(int64_t),
               "fx_conv_geom is a run of int64_t");
_Static_assert(CONV_GEOM_INTS + 2 <= FX_NODE_INTS, "a tape record holds the geometry and flags");

/*
 * Backward of a convolution (in[0] x, in[1] w, in[2] b when present). For a
 * transposed one, the kernel geometry's input is the op's output: see the
 * comment at the top of the file.
 */
static void conv_backward(fx_ctx *ctx, fx_node *n)
{
    fx_conv_geom g = geom_load(n);
    bool transposed = n->i[CONV_GEOM_INTS];
    fx_tensor *x = n->in[0], *w = n->in[1], *b = n->nin > 2 ? n->in[2] : NULL;
    fx_tensor *dy = n->out->grad;
    const fx_conv_kernels *k = fx_be(x)->conv;
    bool gx = fx_tensor_requires_grad(x), gw = fx_tensor_requires_grad(w), ok;
    bool gb = b && fx_tensor_requires_grad(b);
    if (n->i[CONV_GEOM_INTS + 1] && !gx && k->conv2d_backward_weight_relu) {
        /* Fused ReLU, weight and bias only (a first layer): the mask is
         * applied as the weight pass reads dy. */
        fx_tensor *dw = gw ? fx__grad(ctx, w) : NULL;
        fx_tensor *db = gb ? fx__grad(ctx, b) : NULL;
        if ((gw && !dw) || (gb && !db))
            return;
        if (gw) {
            fx_tensor *ws = conv_workspace(ctx, k, &g, &ok);
            if (!ok)
                return;
            k->conv2d_backward_weight_relu(&g, x, dy, n->out, dw, db, ws);
            return;
        }
    }
    if (n->i[CONV_GEOM_INTS + 1]) {
        /* Fused ReLU: the gradient through the clamp, and the bias's
         * gradient with it, in one pass; then on as for a plain conv. */
        fx_tensor *dm = fx_tensor_new(ctx, FX_F32, n->out->ndim, n->out->shape);
        fx_tensor *db = gb ? fx__grad(ctx, b) : NULL;
        if (!dm || (gb && !db))
            return;
        k->relu_mask_bias_backward(dy, n->out, dm, db, g.n, g.o, g.oh * g.ow);
        dy = dm;
        gb = false;
    }
    fx_tensor *ws = (gx || gw) ? conv_workspace(ctx, k, &g, &ok) : NULL;
    if ((gx || gw) && !ok)
        return;
    if (gx) {
        /* A new gradient buffer is set, not zero-filled and added to:
         * conv2d sets y when not accumulating; conv2d_backward_data_set
         * where the backend has it. */
        bool fresh = false;
        fx_tensor *dx = transposed || k->conv2d_backward_data_set
                            ? fx__grad_for_set(ctx, x, &fresh)
                            : fx__grad(ctx, x);
        if (!dx)
            return;
        if (transposed)
            k->conv2d(&g, dy, w, NULL, dx, !fresh, ws);
        else if (fresh)
            k->conv2d_backward_data_set(&g, dy, w, dx, ws);
        else
            k->conv2d_backward_data(&g, dy, w, dx, ws);
    }
    if (gw) {
        fx_tensor *dw = fx__grad(ctx, w);
        if (!dw)
            return;
        if (transposed)
            k->conv2d_backward_weight(&g, dy, x, dw, ws);
        else
            k->conv2d_backward_weight(&g, x, dy, dw, ws);
    }
    if (gb) {
        fx_tensor *db = fx__grad(ctx, b);
        if (!db)
            return;
        if (transposed)
            k->channel_bias_backward(dy, db, g.n, g.c, g.h * g.w);
        else
            k->channel_bias_backward(dy, db, g.n, g.o, g.oh * g.ow);
    }
}

/* Checks a product dimension fits BLAS's int. */
static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/*
 * The three convolution ops. Checks the ranks, the options, the channels
 * against the weight and groups, the kernel against the padded input and the
 * bias; then runs the kernels and records the tape. relu (not transposed,
 * and only when the backend has the fused kernels) returns the ReLU of the
 * convolution, computed and differentiated in the convolution's passes.
 */
static fx_tensor *conv_op(fx_ctx *ctx, const char *op, bool one_d, bool transposed,
                          fx_tensor *x, fx_tensor *w, fx_tensor *b, const fx_conv_opts *opts,
                          bool relu)
{
    int nin = b ? 3 : 2;
    if (!fx__op_check(ctx, op, nin, (fx_tensor *[]){ x, w, b }))
        return NULL;
    char s1[96], s2[96], s3[48], s4[48];
    int nd = one_d ? 3 : 4;
    if (x->ndim != nd)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "input must be %d-D %s, got %s", nd,
                           one_d ? "[N,C,L]" : "[N,C,H,W]", fx_shape_str(x, s1, 96));
    if (w->ndim != nd)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "weight must be %d-D %s, got %s", nd,
                           transposed ? (one_d ? "[in,out/groups,K]" : "[in,out/groups,KH,KW]")
                                     : (one_d ? "[out,in/groups,K]" : "[out,in/groups,KH,KW]"),
                           fx_shape_str(w, s1, 96));
    conv_cfg c;
    if (!conv_cfg_read(ctx, op, one_d, opts, &c))
        return NULL;
    int64_t N = x->shape[0], C = x->shape[1], H = one_d ? 1 : x->shape[2], W = x->shape[nd - 1];
    int64_t KH = one_d ? 1 : w->shape[2], KW = w->shape[nd - 1], G = c.groups;
    fx_shape_str(w, s2, 96);
    if (C % G)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "groups %lld does not divide the input's %lld "
                           "channels (input %s)", (long long)G, (long long)C,
                           fx_shape_str(x, s1, 96));
    int64_t O, in_per_group;
    if (transposed) {
        if (w->shape[0] != C)
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "input has %lld channels but weight %s "
                               "expects %lld", (long long)C, s2, (long long)w->shape[0]);
        O = w->shape[1] * G;
        in_per_group = C / G;
    } else {
        O = w->shape[0];
        in_per_group = w->shape[1];
        if (O % G)
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "groups %lld does not divide the weight's "
                               "%lld output channels (weight %s)", (long long)G, (long long)O, s2);
        if (in_per_group * G != C)
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "input has %lld channels but weight %s "
                               "expects %lld (%lld per group x %lld groups)", (long long)C, s2,
                               (long long)(in_per_group * G), (long long)in_per_group,
                               (long long)G);
    }
    if (KH < 1 || KW < 1 || O < 1 || in_per_group < 1)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "weight %s has an empty dimension", s2);
    int64_t ekh = (KH - 1) * c.dh + 1, ekw = (KW - 1) * c.dw + 1, OH, OW;
    fx_conv_geom g;
    if (!transposed) {
        if (ekh > H + 2 * c.ph || ekw > W + 2 * c.pw)
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "kernel %s (dilation %s) is larger than the "
                               "padded input %s", hw_str(s3, 48, one_d, KH, KW),
                               hw_str(s4, 48, one_d || c.dh == c.dw, c.dh, c.dw),
                               hw_str(s1, 96, one_d, H + 2 * c.ph, W + 2 * c.pw));
        OH = (H + 2 * c.ph - ekh) / c.sh + 1;
        OW = (W + 2 * c.pw - ekw) / c.sw + 1;
        g = (fx_conv_geom){ N, C, H, W, O, OH, OW, KH, KW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, G };
    } else {
        OH = (H - 1) * c.sh - 2 * c.ph + ekh + c.oph;
        OW = (W - 1) * c.sw - 2 * c.pw + ekw + c.opw;
        if (H < 1 || W < 1 || OH < 1 || OW < 1)
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "output would be empty (%s) for input %s "
                               "with kernel %s and padding %s", hw_str(s3, 48, one_d, OH, OW),
                               fx_shape_str(x, s1, 96), hw_str(s4, 48, one_d, KH, KW),
                               hw_str(s2, 96, one_d, c.ph, c.pw));
        /* the convolution this is the adjoint of: OH x OW -> H x W */
        g = (fx_conv_geom){ N, O, OH, OW, C, H, W, KH, KW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, G };
    }
    if (b && (b->ndim != 1 || b->shape[0] != O))
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "bias must be [%lld], got %s", (long long)O,
                           fx_shape_str(b, s1, 96));
    int64_t kc = g.c / G * KH * KW, l = g.oh * g.ow;
    if (!fits_int(kc) || !fits_int(l) || !fits_int(g.h * g.w) || !fits_int(g.o) ||
        fx__shape_numel(4, (int64_t[]){ N, O, OH, OW }) < 0)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "sizes too large: input %s, weight %s",
                           fx_shape_str(x, s1, 96), s2);
    x = fx_contiguous(ctx, x);
    w = fx_contiguous(ctx, w);
    if (b)
        b = fx_contiguous(ctx, b);
    if (!x || !w || (nin > 2 && !b))
        return NULL;
    int64_t shape[4] = { N, O, one_d ? OW : OH, OW };
    fx_tensor *y = fx_tensor_new(ctx, FX_F32, nd, shape);
    if (!y)
        return NULL;
    const fx_conv_kernels *k = fx_be(x)->conv;
    bool ok;
    fx_tensor *ws = conv_workspace(ctx, k, &g, &ok);
    if (!ok)
        return NULL;
    if (transposed) {
        k->channel_bias_fill(b, y, N, O, OH * OW);
        k->conv2d_backward_data(&g, x, w, y, ws);
    } else if (relu) {
        k->conv2d_relu(&g, x, w, b, y, ws);
    } else {
        k->conv2d(&g, x, w, b, y, false, ws);
    }
    fx_node *n = fx__record(ctx, op, conv_backward, y, nin, (fx_tensor *[]){ x, w, b });
    if (n) {
        geom_save(n, &g);
        n->i[CONV_GEOM_INTS] = transposed;
        n->i[CONV_GEOM_INTS + 1] = relu;
    }
    return y;
}

fx_tensor *fx_conv2d(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b,
                     const fx_conv_opts *opts)
{
    return conv_op(ctx, "conv2d", false, false, x, w, b, opts, false);
}

fx_tensor *fx_conv1d(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b,
                     const fx_conv_opts *opts)
{
    return conv_op(ctx, "conv1d", true, false, x, w, b, opts, false);
}

fx_tensor *fx_conv_transpose2d(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b,
                               const fx_conv_opts *opts)
{
    return conv_op(ctx, "conv_transpose2d", false, true, x, w, b, opts, false);
}

/* ------------------------------------------------------------- pooling */

/* n->i[0..13): the pool geometry's sizes and flags, then the kind;
 * saved[0]: the argmax of max pooling. */
static void pool_save(fx_node *n, const fx_pool_geom *g, fx_pool_kind kind)
{
    int64_t v[14] = { g->planes, g->h, g->w, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw,
                      g->ph, g->pw, g->adaptive, g->exclude_pad, kind };
    memcpy(n->i, v, sizeof v);
}

static fx_pool_geom pool_load(const fx_node *n, fx_pool_kind *kind)
{
    const int64_t *v = n->i;
    *kind = (fx_pool_kind)v[13];
    return (fx_pool_geom){ v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8],
                           v[9], v[10], v[11] != 0, v[12] != 0 };
}

static void pool_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0];
    if (!fx_tensor_requires_grad(x))
        return;
    fx_pool_kind kind;
    fx_pool_geom g = pool_load(n, &kind);
    const fx_conv_kernels *k = fx_be(x)->conv;
    bool fresh = false;
    fx_tensor *dx = k->pool2d_backward_set ? fx__grad_for_set(ctx, x, &fresh) : fx__grad(ctx, x);
    if (!dx)
        return;
    if (fresh) /* a new buffer: set, no zero pass first */
        k->pool2d_backward_set(&g, kind, n->out->grad, n->saved[0], dx);
    else
        k->pool2d_backward(&g, kind, n->out->grad, n->saved[0], dx);
}

/*
 * The pooling ops. A fixed window (opts) or, when adaptive, an output size
 * (oh, ow); out_ndim 2 gives [N, C] (global pooling). Checks the rank, the
 * window settings (kernel > 0, stride > 0, 0 <= padding <= kernel/2 as in
 * PyTorch, so no window is all padding) and the window against the padded
 * input.
 */
static fx_tensor *pool_op(fx_ctx *ctx, const char *op, fx_pool_kind kind, fx_tensor *x,
                          const fx_pool_opts *opts, bool adaptive, int64_t oh, int64_t ow,
                          int out_ndim)
{
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){ x }))
        return NULL;
    char s1[96], s2[48], s3[48];
    if (x->ndim != 4)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "input must be 4-D [N,C,H,W], got %s",
                           fx_shape_str(x, s1, 96));
    fx_pool_geom g = { 0 };
    g.planes = x->shape[0] * x->shape[1];
    g.h = x->shape[2];
    g.w = x->shape[3];
    g.adaptive = adaptive;
    if (g.h < 1 || g.w < 1 || g.h * g.w > INT32_MAX)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "input %s must have planes of 1 to 2^31-1 "
                           "elements", fx_shape_str(x, s1, 96));
    if (adaptive) {
        if (oh < 1 || ow < 1)
            return fx__op_fail(ctx, FX_ERR_ARG, op, "output size must be positive, got %lldx%lld",
                               (long long)oh, (long long)ow);
        g.oh = oh;
        g.ow = ow;
    } else {
        fx_pool_opts o = opts ? *opts : (fx_pool_opts){ 0 };
        g.kh = pick(o.kernel_h, o.kernel, 0);
        g.kw = pick(o.kernel_w, o.kernel, 0);
        g.sh = pick(o.stride_h, o.stride, g.kh);
        g.sw = pick(o.stride_w, o.stride, g.kw);
        g.ph = pick(o.padding_h, o.padding, 0);
        g.pw = pick(o.padding_w, o.padding, 0);
        g.exclude_pad = o.exclude_pad;
        if (g.kh < 1 || g.kw < 1)
            return fx__op_fail(ctx, FX_ERR_ARG, op, "kernel size must be positive, got %lldx%lld",
                               (long long)g.kh, (long long)g.kw);
        if (g.sh < 1 || g.sw < 1)
            return fx__op_fail(ctx, FX_ERR_ARG, op, "stride must be positive, got %lldx%lld",
                               (long long)g.sh, (long long)g.sw);
        if (g.ph < 0 || g.pw < 0 || 2 * g.ph > g.kh || 2 * g.pw > g.kw)
            return fx__op_fail(ctx, FX_ERR_ARG, op, "padding %lldx%lld must be between 0 and half "
                               "the kernel %lldx%lld", (long long)g.ph, (long long)g.pw,
                               (long long)g.kh, (long long)g.kw);
        if (g.kh > g.h + 2 * g.ph || g.kw > g.w + 2 * g.pw)
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "kernel %s is larger than the padded input "
                               "%s", hw_str(s2, 48, false, g.kh, g.kw),
                               hw_str(s3, 48, false, g.h + 2 * g.ph, g.w + 2 * g.pw));
        g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
        g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
    }
    x = fx_contiguous(ctx, x);
    if (!x)
        return NULL;
    int64_t shape[4] = { x->shape[0], x->shape[1], g.oh, g.ow };
    fx_tensor *y = fx_tensor_new(ctx, FX_F32, out_ndim, shape);
    if (!y)
        return NULL;
    /* Max pooling keeps its argmax only when the tape will need it. */
    fx_tensor *am = NULL;
    if (kind == FX_POOL_MAX && ctx->grad && fx_tensor_requires_grad(x)) {
        am = fx_tensor_new(ctx, FX_I32, out_ndim, shape);
        if (!am)
            return NULL;
    }
    fx_be(x)->conv->pool2d(&g, kind, x, y, am);
    fx_node *n = fx__record(ctx, op, pool_backward, y, 1, (fx_tensor *[]){ x });
    if (n) {
        pool_save(n, &g, kind);
        n->saved[0] = am;
    }
    return y;
}

fx_tensor *fx_maxpool2d(fx_ctx *ctx, fx_tensor *x, const fx_pool_opts *opts)
{
    return pool_op(ctx, "maxpool2d", FX_POOL_MAX, x, opts, false, 0, 0, 4);
}

fx_tensor *fx_avgpool2d(fx_ctx *ctx, fx_tensor *x, const fx_pool_opts *opts)
{
    return pool_op(ctx, "avgpool2d", FX_POOL_AVG, x, opts, false, 0, 0, 4);
}

fx_tensor *fx_adaptive_avgpool2d(fx_ctx *ctx, fx_tensor *x, int64_t oh, int64_t ow)
{
    return pool_op(ctx, "adaptive_avgpool2d", FX_POOL_AVG, x, NULL, true, oh, ow, 4);
}

fx_tensor *fx_global_avgpool2d(fx_ctx *ctx, fx_tensor *x)
{
    return pool_op(ctx, "global_avgpool2d", FX_POOL_AVG, x, NULL, true, 1, 1, 2);
}

/* -------------------------------------------------------------- layers */

typedef enum { LAYER_CONV1D, LAYER_CONV2D, LAYER_CONVT2D } conv_layer_kind;

/* A convolution layer's settings and direct pointers to its parameters
 * (owned by the layer's store), so a forward does no name lookup. */
typedef struct {
    conv_layer_kind kind;
    fx_conv_opts o;
    fx_tensor *w, *b;
} conv_layer;

static fx_tensor *conv_layer_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    conv_layer *d = fx_layer_data(self);
    /* Convolution + ReLU as one op where the backend fuses them. */
    if (d->o.act == FX_ACT_RELU && d->kind != LAYER_CONVT2D && x && fx_be(x)->conv->conv2d_relu &&
        fx_be(x)->conv->relu_mask_bias_backward)
        return conv_op(ctx, d->kind == LAYER_CONV1D ? "conv1d" : "conv2d",
                       d->kind == LAYER_CONV1D, false, x, d->w, d->b, &d->o, true);
    fx_tensor *y = d->kind == LAYER_CONV1D   ? fx_conv1d(ctx, x, d->w, d->b, &d->o)
                   : d->kind == LAYER_CONV2D ? fx_conv2d(ctx, x, d->w, d->b, &d->o)
                                             : fx_conv_transpose2d(ctx, x, d->w, d->b, &d->o);
    return fx_activate(ctx, y, d->o.act);
}

/*
 * The three convolution layers. Weight [out, in/groups, KH, KW] (transposed:
 * [in, out/groups, KH, KW]; 1-D drops KH), initialised with o->init; the
 * default and the kinds that take parameters get PyTorch's scale: UNIFORM
 * (the default) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as nn.Conv2d's
 * kaiming_uniform(a=sqrt(5)) gives, NORMAL is N(0, 1/fan_in), CONSTANT 0; fan_in is
 * shape[1] * KH * KW, as PyTorch computes it for both kinds. Bias [out]
 * starts at zero.
 */
static fx_layer *conv_layer_create(const char *name, conv_layer_kind kind, int64_t in,
                                   int64_t out, int64_t kh, int64_t kw, const fx_conv_opts *o,
                                   fx_rng *rng)
{
    fx_conv_opts opts = o ? *o : (fx_conv_opts){ 0 };
    int64_t groups = opts.groups ? opts.groups : 1;
    if (in <= 0 || out <= 0 || kh <= 0 || kw <= 0 || groups < 1 || in % groups ||
        out % groups || (unsigned)opts.act >= FX_ACT_COUNT)
        return NULL;
    int64_t shape[4] = { out, in / groups, kh, kw };
    if (kind == LAYER_CONVT2D)
        shape[0] = in, shape[1] = out / groups;
    if (kind == LAYER_CONV1D)
        shape[2] = kw;
    int nd = kind == LAYER_CONV1D ? 3 : 4;
    fx_init_kind init = opts.init ? opts.init : FX_INIT_UNIFORM;
    double s = 1.0 / sqrt((double)(shape[1] * kh * kw)), a = 0.0, b = 0.0;
    if (init == FX_INIT_UNIFORM)
        a = -s, b = s;
    else if (init == FX_INIT_NORMAL)
        b = s;
    static const char *names[] = { "conv1d", "conv2d", "conv_transpose2d" };
    fx_layer *l = fx_layer_create(name ? name : names[kind], conv_layer_forward);
    conv_layer *d = calloc(1, sizeof *d);
    if (!l || !d) {
        free(d);
        fx_layer_free(l);
        return NULL;
    }
    fx_layer_set_data(l, d, free);
    d->kind = kind;
    d->o = opts;
    d->w = fx_param_create(opts.device, nd, shape, init, a, b, rng);
    if (fx_layer_add_param(l, "weight", d->w) != FX_OK)
        goto fail;
    if (!opts.no_bias) {
        d->b = fx_param_create(opts.device, 1, (int64_t[]){ out }, FX_INIT_ZEROS, 0, 0, NULL);
        if (fx_layer_add_param(l, "bias", d->b) != FX_OK)
            goto fail;
    }
    return l;
fail:
    fx_layer_free(l);
    return NULL;
}

fx_layer *fx_conv2d_create(const char *name, int64_t in, int64_t out, int64_t kernel_h,
                           int64_t kernel_w, const fx_conv_opts *opts, fx_rng *rng)
{
    return conv_layer_create(name, LAYER_CONV2D, in, out, kernel_h, kernel_w, opts, rng);
}

fx_layer *fx_conv1d_create(const char *name, int64_t in, int64_t out, int64_t kernel,
                           const fx_conv_opts *opts, fx_rng *rng)
{
    return conv_layer_create(name, LAYER_CONV1D, in, out, 1, kernel, opts, rng);
}

fx_layer *fx_conv_transpose2d_create(const char *name, int64_t in, int64_t out,
                                     int64_t kernel_h, int64_t kernel_w,
                                     const fx_conv_opts *opts, fx_rng *rng)
{
    return conv_layer_create(name, LAYER_CONVT2D, in, out, kernel_h, kernel_w, opts, rng);
}

/* A pooling layer's settings: a window, or an adaptive output size. */
typedef enum {
    LAYER_MAXPOOL, LAYER_AVGPOOL, LAYER_ADAPTIVE, LAYER_GLOBAL
} pool_layer_kind;

typedef struct {
    pool_layer_kind kind;
    fx_pool_opts o;
    int64_t oh, ow;
} pool_layer;

static fx_tensor *pool_layer_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    pool_layer *d = fx_layer_data(self);
    switch (d->kind) {
    case LAYER_MAXPOOL: return fx_maxpool2d(ctx, x, &d->o);
    case LAYER_AVGPOOL: return fx_avgpool2d(ctx, x, &d->o);
    case LAYER_ADAPTIVE: return fx_adaptive_avgpool2d(ctx, x, d->oh, d->ow);
    case LAYER_GLOBAL: return fx_global_avgpool2d(ctx, x);
    }
    return NULL;
}

/* The parameterless layers; the window settings are checked as the op
 * checks them (kernel > 0, stride and padding not negative). */
static fx_layer *pool_layer_create(const char *name, const char *def, pool_layer_kind kind,
                                   const fx_pool_opts *o, int64_t oh, int64_t ow)
{
    pool_layer p = { kind, o ? *o : (fx_pool_opts){ 0 }, oh, ow };
    if (kind == LAYER_MAXPOOL || kind == LAYER_AVGPOOL) {
        int64_t kh = pick(p.o.kernel_h, p.o.kernel, 0), kw = pick(p.o.kernel_w, p.o.kernel, 0);
        if (kh < 1 || kw < 1 || p.o.stride < 0 || p.o.stride_h < 0 || p.o.stride_w < 0 ||
            p.o.padding < 0 || p.o.padding_h < 0 || p.o.padding_w < 0)
            return NULL;
    }
    if (kind == LAYER_ADAPTIVE && (oh < 1 || ow < 1))
        return NULL;
    fx_layer *l = fx_layer_create(name ? name : def, pool_layer_forward);
    pool_layer *d = malloc(sizeof *d);
    if (!l || !d) {
        free(d);
        fx_layer_free(l);
        return NULL;
    }
    *d = p;
    fx_layer_set_data(l, d, free);
    return l;
}

fx_layer *fx_maxpool2d_create(const char *name, const fx_pool_opts *opts)
{
    return pool_layer_create(name, "maxpool2d", LAYER_MAXPOOL, opts, 0, 0);
}

fx_layer *fx_avgpool2d_create(const char *name, const fx_pool_opts *opts)
{
    return pool_layer_create(name, "avgpool2d", LAYER_AVGPOOL, opts, 0, 0);
}

fx_layer *fx_adaptive_avgpool2d_create(const char *name, int64_t oh, int64_t ow)
{
    return pool_layer_create(name, "adaptive_avgpool2d", LAYER_ADAPTIVE, NULL, oh, ow);
}

fx_layer *fx_global_avgpool2d_create(const char *name)
{
    return pool_layer_create(name, "global_avgpool2d", LAYER_GLOBAL, NULL, 0, 0);
}
