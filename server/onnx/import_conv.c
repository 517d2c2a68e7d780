/*
 * import_conv.c - ONNX Conv, ConvTranspose, MaxPool, AveragePool and
 * GlobalAveragePool -> the engine's conv1d/conv2d, conv_transpose2d,
 * maxpool2d, avgpool2d and global_avgpool2d. ONNX's layouts are PyTorch's
 * (weight [O, C/g, KH, KW]; transposed [C, O/g, KH, KW]), so weights are
 * copied as they are. The engine pads both sides of an axis equally, so
 * asymmetric pads (and the auto_pad SAME_* that would need them) are
 * refused, as are dilated pooling and a ceil_mode that changes the size.
 */
#include "onnx/import_layers.h"

#include <string.h>

#include "base/status.h"

#define WIN_MAX (1 << 20) /* the engine's range for sizes, strides, pads */

/* A convolution or pooling window over s spatial axes (1 or 2). */
typedef struct {
    int s;
    int64_t k[2], stride[2], pad[2], dil[2];
} window;

/* Reads ints attribute name: absent -> def on every axis; else exactly
 * count values, each in [lo, WIN_MAX]. */
static int axes_attr(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, size_t count,
                     int64_t def, int64_t lo, int64_t *out)
{
    const int64_t *v;
    size_t nv;
    int rc = fxon_attr_ints(cx, n, name, &v, &nv);
    if (rc)
        return rc;
    if (!v) {
        for (size_t i = 0; i < count; i++)
            out[i] = def;
        return 0;
    }
    if (nv != count)
        return fxon_fail(cx, "attribute '%s' has %zu values, expected %zu", name, nv, count);
    for (size_t i = 0; i < count; i++) {
        if (v[i] < lo || v[i] > WIN_MAX)
            return fxon_fail(cx, "attribute '%s' value %lld is out of range [%lld, %d]", name,
                             (long long)v[i], (long long)lo, WIN_MAX);
        out[i] = v[i];
    }
    return 0;
}

/* The window of node n over input x: kernel from the weight (kernel != NULL;
 * kernel_shape must then agree) or from kernel_shape; strides, dilations,
 * pads and auto_pad resolved to one symmetric padding per axis. */
static int window_attrs(fxon_ctx *cx, const Onnx__NodeProto *n, int s, const int64_t *kernel,
                        const fxon_value *x, bool transposed, window *w)
{
    memset(w, 0, sizeof *w);
    w->s = s;
    int64_t ks[2], pads[4];
    int rc;
    if ((rc = axes_attr(cx, n, "kernel_shape", (size_t)s, 0, 1, ks)))
        return rc;
    for (int a = 0; a < s; a++) {
        if (kernel) {
            if (fxon_attr(n, "kernel_shape") && ks[a] != kernel[a])
                return fxon_fail(cx, "attribute 'kernel_shape' disagrees with the weight's shape");
            w->k[a] = kernel[a];
        } else {
            if (!fxon_attr(n, "kernel_shape"))
                return fxon_fail(cx, "attribute 'kernel_shape' is required");
            w->k[a] = ks[a];
        }
    }
    if ((rc = axes_attr(cx, n, "strides", (size_t)s, 1, 1, w->stride)) ||
        (rc = axes_attr(cx, n, "dilations", (size_t)s, 1, 1, w->dil)) ||
        (rc = axes_attr(cx, n, "pads", 2 * (size_t)s, 0, 0, pads)))
        return rc;
    const char *auto_pad;
    if ((rc = fxon_attr_str(cx, n, "auto_pad", "NOTSET", &auto_pad)))
        return rc;
    if (!strcmp(auto_pad, "NOTSET") || !auto_pad[0]) {
        for (int a = 0; a < s; a++) {
            if (pads[a] != pads[a + s])
                return fxon_fail(cx, "attribute 'pads' is asymmetric on spatial axis %d (%lld "
                                 "before, %lld after): the engine pads both sides equally",
                                 a, (long long)pads[a], (long long)pads[a + s]);
            w->pad[a] = pads[a];
        }
    } else if (!strcmp(auto_pad, "VALID")) {
        /* no padding */
    } else if (!transposed && !strncmp(auto_pad, "SAME_", 5) &&
               (!strcmp(auto_pad + 5, "UPPER") || !strcmp(auto_pad + 5, "LOWER"))) {
        for (int a = 0; a < s; a++) {
            int64_t in = x->ndim == s + 2 ? x->shape[a + 2] : -1;
            int64_t span = w->dil[a] * (w->k[a] - 1) + 1, total;
            if (w->stride[a] == 1)
                total = span - 1;
            else if (in > 0)
                total = ((in + w->stride[a] - 1) / w->stride[a] - 1) * w->stride[a] + span - in;
            else
                return fxon_fail(cx, "attribute 'auto_pad' %s with stride %lld needs a static "
                                 "input size on spatial axis %d", auto_pad,
                                 (long long)w->stride[a], a);
            if (total < 0)
                total = 0;
            if (total % 2)
                return fxon_fail(cx, "attribute 'auto_pad' %s needs %lld padding on spatial axis "
                                 "%d: uneven, and the engine pads both sides equally",
                                 auto_pad, (long long)total, a);
            w->pad[a] = total / 2;
        }
    } else {
        return fxon_fail(cx, "attribute 'auto_pad' value '%s' is not supported", auto_pad);
    }
    return 0;
}

/* One attribute per axis: conv1d's are ints, the 2-D ops' [h, w] lists. */
static int set_axes(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, const int64_t *v,
                    int s)
{
    return s == 1 ? fxon_set_int(cx, node, key, v[0]) : fxon_set_ints(cx, node, key, v, 2);
}

static int set_window(fxon_ctx *cx, Fluxion__V1__Node *node, const window *w, bool dilation)
{
    int rc = set_axes(cx, node, "kernel_size", w->k, w->s);
    if (!rc)
        rc = set_axes(cx, node, "stride", w->stride, w->s);
    if (!rc)
        rc = set_axes(cx, node, "padding", w->pad, w->s);
    if (!rc && dilation)
        rc = set_axes(cx, node, "dilation", w->dil, w->s);
    return rc;
}

/* The output's static spatial size on axis a (-1 when the input's is not). */
static int64_t conv_out(const fxon_value *x, const window *w, int a)
{
    int64_t in = x->ndim == w->s + 2 ? x->shape[a + 2] : -1;
    if (in < 0)
        return -1;
    int64_t o = (in + 2 * w->pad[a] - w->dil[a] * (w->k[a] - 1) - 1) / w->stride[a] + 1;
    return o > 0 ? o : -1;
}

/* Defines n's output [N, C, spatial...] made by node. */
static int define_nc(fxon_ctx *cx, const Onnx__NodeProto *n, Fluxion__V1__Node *node,
                     const fxon_value *x, int64_t channels, const int64_t *spatial, int s)
{
    int64_t shape[4] = { x->ndim >= 1 ? x->shape[0] : -1, channels, -1, -1 };
    for (int a = 0; a < s; a++)
        shape[a + 2] = spatial[a];
    return fxon_define(cx, n->output[0], node, 0, FXON_FLOAT, s + 2, shape);
}

static int rank_check(fxon_ctx *cx, const fxon_value *x, int want, const char *what)
{
    if (x->ndim >= 0 && x->ndim != want)
        return fxon_fail(cx, "input 0 ('%s') has rank %d: %s", x->name, x->ndim, what);
    return 0;
}

static int conv_common(fxon_ctx *cx, const Onnx__NodeProto *n, bool transposed)
{
    /* output_padding (last) is ConvTranspose's only */
    static const char *const known[] = { "auto_pad", "dilations", "group", "kernel_shape",
                                          "pads", "strides", "output_padding", NULL };
    static const char *const known_conv[] = { "auto_pad", "dilations", "group", "kernel_shape",
                                               "pads", "strides", NULL };
    int rc = fxon_attrs_known(cx, n, transposed ? known : known_conv);
    if (rc)
        return rc;
    if (transposed && fxon_attr(n, "output_shape"))
        return fxon_fail(cx, "attribute 'output_shape' is not supported (give pads and "
                         "output_padding)");
    fxon_value *x;
    const fxon_const *W, *B = NULL;
    const char *xref;
    if ((rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_ref(cx, n, 0, &xref)) ||
        (rc = fxon__weight(cx, n, 1, -1, &W)))
        return rc;
    if (fxon_in(n, 2) && (rc = fxon__weight(cx, n, 2, 1, &B)))
        return rc;
    int s = W->ndim - 2;
    if (s != 2 && !(s == 1 && !transposed))
        return fxon_fail(cx, "a %d-D %s is not supported (the engine has %s)", s,
                         n->op_type, transposed ? "conv_transpose2d" : "conv1d and conv2d");
    if ((rc = rank_check(cx, x, s + 2, "expected [N, C, spatial...] matching the weight")))
        return rc;
    int64_t group;
    if ((rc = fxon_attr_int(cx, n, "group", 1, &group)))
        return rc;
    if (group < 1 || group > WIN_MAX)
        return fxon_fail(cx, "attribute 'group' value %lld is out of range", (long long)group);
    window w;
    if ((rc = window_attrs(cx, n, s, W->shape + 2, x, transposed, &w)))
        return rc;
    int64_t in_ch = transposed ? W->shape[0] : W->shape[1] * group;
    int64_t out_ch = transposed ? W->shape[1] * group : W->shape[0];
    if (out_ch % group || in_ch % group)
        return fxon_fail(cx, "attribute 'group' %lld does not divide the channels (%lld in, "
                         "%lld out)", (long long)group, (long long)in_ch, (long long)out_ch);
    if (x->ndim == s + 2 && x->shape[1] >= 0 && x->shape[1] != in_ch)
        return fxon_fail(cx, "input 0 ('%s') has %lld channels, the weight expects %lld",
                         x->name, (long long)x->shape[1], (long long)in_ch);
    if (B && B->numel != out_ch)
        return fxon_fail(cx, "input 2 ('%s') has %lld values, expected %lld", fxon_in(n, 2),
                         (long long)B->numel, (long long)out_ch);
    int64_t outpad[2] = { 0, 0 };
    if (transposed && (rc = axes_attr(cx, n, "output_padding", 2, 0, 0, outpad)))
        return rc;

    const char *op = transposed ? "conv_transpose2d" : s == 1 ? "conv1d" : "conv2d";
    Fluxion__V1__Node *node = fxon_emit(cx, op, fxon__layer_hint(cx, n), 1, &xref);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    if ((rc = fxon_set_int(cx, node, "in_channels", in_ch)) ||
        (rc = fxon_set_int(cx, node, "out_channels", out_ch)) ||
        (rc = fxon_set_int(cx, node, "groups", group)) || (rc = set_window(cx, node, &w, true)) ||
        (rc = fxon_set_bool(cx, node, "bias", B != NULL)) ||
        (transposed && (rc = fxon_set_ints(cx, node, "output_padding", outpad, 2))))
        return rc;
    if ((rc = fxon__param_copy(cx, node, "weight", W)) ||
        (B && (rc = fxon__param_copy(cx, node, "bias", B))))
        return rc;
    int64_t sp[2];
    for (int a = 0; a < s; a++) {
        int64_t in = x->ndim == s + 2 ? x->shape[a + 2] : -1;
        if (!transposed)
            sp[a] = conv_out(x, &w, a);
        else
            sp[a] = in < 0 ? -1 : (in - 1) * w.stride[a] - 2 * w.pad[a] +
                                  w.dil[a] * (w.k[a] - 1) + outpad[a] + 1;
    }
    return define_nc(cx, n, node, x, out_ch, sp, s);
}

int fxon__cv_conv(fxon_ctx *cx, const Onnx__NodeProto *n) { return conv_common(cx, n, false); }

int fxon__cv_conv_transpose(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    return conv_common(cx, n, true);
}

/* MaxPool and AveragePool: 2-D windows, no dilation; ceil_mode only where
 * it gives floor's size (static input sizes). */
static int pool_common(fxon_ctx *cx, const Onnx__NodeProto *n, bool avg)
{
    static const char *const kmax[] = { "auto_pad", "ceil_mode", "dilations", "kernel_shape",
                                        "pads", "storage_order", "strides", NULL };
    static const char *const kavg[] = { "auto_pad", "ceil_mode", "count_include_pad",
                                        "dilations", "kernel_shape", "pads", "strides", NULL };
    int rc = fxon_attrs_known(cx, n, avg ? kavg : kmax);
    if (rc || (rc = fxon__only_first_output(cx, n)))
        return rc;
    fxon_value *x;
    const char *xref;
    if ((rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_ref(cx, n, 0, &xref)))
        return rc;
    if (x->ndim != 4)
        return fxon_fail(cx, "input 0 ('%s') must have rank 4 [N, C, H, W] (the engine pools "
                         "2-D only; rank %d)", x->name, x->ndim);
    window w;
    if ((rc = window_attrs(cx, n, 2, NULL, x, false, &w)))
        return rc;
    for (int a = 0; a < 2; a++) {
        if (w.dil[a] != 1)
            return fxon_fail(cx, "attribute 'dilations' is not supported (the engine's pooling "
                             "is not dilated)");
        if (2 * w.pad[a] > w.k[a])
            return fxon_fail(cx, "attribute 'pads' %lld exceeds half the kernel (%lld)",
                             (long long)w.pad[a], (long long)w.k[a]);
    }
    int64_t ceil_mode, cip = 0;
    if ((rc = fxon_attr_int(cx, n, "ceil_mode", 0, &ceil_mode)) ||
        (avg && (rc = fxon_attr_int(cx, n, "count_include_pad", 0, &cip))))
        return rc;
    int64_t sp[2];
    for (int a = 0; a < 2; a++) {
        sp[a] = conv_out(x, &w, a);
        if (ceil_mode) {
            int64_t in = x->shape[a + 2];
            if (in < 0)
                return fxon_fail(cx, "attribute 'ceil_mode' 1 needs static spatial sizes");
            if ((in + 2 * w.pad[a] - w.k[a]) % w.stride[a])
                return fxon_fail(cx, "attribute 'ceil_mode' 1 is not supported where it changes "
                                 "the output size (spatial axis %d: %lld input, kernel %lld, "
                                 "stride %lld)", a, (long long)in, (long long)w.k[a],
                                 (long long)w.stride[a]);
        }
    }
    Fluxion__V1__Node *node = fxon_emit(cx, avg ? "avgpool2d" : "maxpool2d", NULL, 1, &xref);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    if ((rc = set_window(cx, node, &w, false)) ||
        (avg && (rc = fxon_set_bool(cx, node, "count_include_pad", cip != 0))))
        return rc;
    return define_nc(cx, n, node, x, x->shape[1], sp, 2);
}

int fxon__cv_maxpool(fxon_ctx *cx, const Onnx__NodeProto *n) { return pool_common(cx, n, false); }
int fxon__cv_avgpool(fxon_ctx *cx, const Onnx__NodeProto *n) { return pool_common(cx, n, true); }

/* global_avgpool2d gives [N, C]; ONNX keeps [N, C, 1, 1]: a reshape
 * restores the unit dims. */
int fxon__cv_global_avgpool(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = fxon_attrs_known(cx, n, (const char *const[]){ NULL });
    fxon_value *x;
    const char *xref;
    if (rc || (rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_ref(cx, n, 0, &xref)))
        return rc;
    if (x->ndim != 4)
        return fxon_fail(cx, "input 0 ('%s') must have rank 4 [N, C, H, W] (rank %d)", x->name,
                         x->ndim);
    Fluxion__V1__Node *pool = fxon_emit(cx, "global_avgpool2d", NULL, 1, &xref);
    if (!pool)
        return FXS_INVALID_ARGUMENT;
    const char *pref = fxon_out_ref(cx, pool, 0);
    const char *hint = fxon_printf(cx, "%s_4d", pool->name);
    Fluxion__V1__Node *node = fxon_emit(cx, "reshape", hint, 1, &pref);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    if ((rc = fxon_set_ints(cx, node, "shape", (const int64_t[]){ 0, 0, 1, 1 }, 4)))
        return rc;
    int64_t one[2] = { 1, 1 };
    return define_nc(cx, n, node, x, x->shape[1], one, 2);
}
