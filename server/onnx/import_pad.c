/*
 * import_pad.c - the ONNX operators PyTorch 1.13 emits around its layers
 * that are no layer themselves: Expand of a constant (a recurrent layer's
 * zero initial state broadcast to the batch) and Pad (AvgPool2d's padding
 * with count_include_pad, all zeros when the pool has no padding).
 */
#include "onnx/import_layers.h"

#include <string.h>

#include "base/status.h"

/* Expand makes its result at import: a small file must not ask for
 * gigabytes (a zero state is [layers, batch, hidden]). */
#define EXPAND_MAX_ELEMS (1LL << 24)

/* Expand of a constant whose values are all equal: a constant of the
 * broadcast shape, where a dim not known at import (the batch, symbolic)
 * stays 1: broadcasting then gives the same values for any size. */
int fxon__cv_expand(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = fxon_attrs_known(cx, n, (const char *const[]){ NULL });
    fxon_value *x;
    const fxon_const *shape;
    if (rc || (rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_const(cx, n, 1, &shape)))
        return rc;
    if (!x->c)
        return fxon_fail(cx, "input 0 ('%s') is computed at run time: only a constant can be "
                         "expanded", x->name);
    const fxon_const *c = x->c;
    for (int64_t k = 1; k < c->numel; k++)
        if (fxon_const_float(c, k) != fxon_const_float(c, 0))
            return fxon_fail(cx, "input 0 ('%s') holds different values: only a uniform "
                             "constant can be expanded", x->name);
    if (shape->ndim != 1 || shape->numel > FXON_MAX_DIMS)
        return fxon_fail(cx, "input 1 must be a 1-D shape of at most %d dims", FXON_MAX_DIMS);
    int nd = (int)(shape->numel > c->ndim ? shape->numel : c->ndim);
    int64_t out[FXON_MAX_DIMS], numel = 1;
    for (int d = 0; d < nd; d++) {
        int sd = d - (nd - (int)shape->numel), cd = d - (nd - c->ndim);
        int64_t want = sd >= 0 ? fxon_const_int(shape, sd) : 1;
        int64_t have = cd >= 0 ? c->shape[cd] : 1;
        if (sd >= 0 && fxon_is_sym(shape->i ? shape->i[sd] : 0))
            want = 1;
        if (want < 0)
            return fxon_fail(cx, "input 1 has a negative dim %lld", (long long)want);
        if (have != 1 && want != 1 && have != want)
            return fxon_fail(cx, "input 0's dim %lld cannot expand to %lld", (long long)have,
                             (long long)want);
        out[d] = have != 1 ? have : want;
        if (out[d] && numel > EXPAND_MAX_ELEMS / out[d])
            return fxon_fail(cx, "the expanded constant would exceed %lld elements",
                             (long long)EXPAND_MAX_ELEMS);
        numel *= out[d];
    }
    fxon_const *r = fxon_const_new(cx, c->elem, nd, out);
    if (!r)
        return FXS_INVALID_ARGUMENT; /* the message says which: budget or memory */
    for (int64_t k = 0; k < numel; k++) {
        if (r->f)
            r->f[k] = (float)fxon_const_float(c, 0);
        else
            r->i[k] = fxon_const_int(c, 0);
    }
    return fxon_define_const(cx, n->output[0], r);
}

/* Pad with zeros: the identity when every pad is 0 (what PyTorch writes
 * before an AveragePool without padding); else, on the spatial dims of
 * [N, C, L] or [N, C, H, W] and the same on both sides, a depthwise 1x1
 * convolution with a weight of ones and that padding, which zero-pads
 * exactly (PyTorch writes AvgPool2d(padding=p) with count_include_pad as
 * such a Pad + AveragePool). The engine has no pad op; the ones weight is
 * a parameter like any other. */
int fxon__cv_pad(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = fxon_attrs_known(cx, n, (const char *const[]){ "mode", NULL });
    fxon_value *x;
    const fxon_const *pads;
    const char *mode, *xref;
    if (rc || (rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_const(cx, n, 1, &pads)) ||
        (rc = fxon_attr_str(cx, n, "mode", "constant", &mode)))
        return rc;
    bool zero = true;
    for (int64_t k = 0; k < pads->numel; k++)
        zero = zero && fxon_const_int(pads, k) == 0;
    if (zero)
        return fxon_alias(cx, n->output[0], x);
    if (strcmp(mode, "constant"))
        return fxon_fail(cx, "attribute 'mode' '%s' is not supported (constant zeros only)",
                         mode);
    if (fxon_in(n, 3))
        return fxon_fail(cx, "input 3 (axes) is not supported: give pads for every dim");
    if (fxon_in(n, 2)) {
        const fxon_const *v;
        if ((rc = fxon_need_const(cx, n, 2, &v)))
            return rc;
        if (v->numel != 1 || fxon_const_float(v, 0) != 0)
            return fxon_fail(cx, "input 2 (constant_value) must be 0");
    }
    int nd = x->ndim;
    if (nd != 3 && nd != 4)
        return fxon_fail(cx, "input 0 ('%s') has rank %d: only [N, C, L] and [N, C, H, W] are "
                         "padded", x->name, nd);
    if (pads->numel != 2 * nd)
        return fxon_fail(cx, "input 1 (pads) has %lld values, expected %d",
                         (long long)pads->numel, 2 * nd);
    int64_t pad[2] = { 0, 0 }, shape[4];
    for (int d = 0; d < nd; d++) {
        int64_t b = fxon_const_int(pads, d), e = fxon_const_int(pads, d + nd);
        if (d < 2 ? b || e : b != e || b < 0 || b > (1 << 20))
            return fxon_fail(cx, "input 1 (pads) pads dim %d by %lld before and %lld after: only "
                             "the spatial dims, the same on both sides (at most 2^20)", d,
                             (long long)b, (long long)e);
        if (d >= 2)
            pad[d - 2] = b;
        shape[d] = x->shape[d] < 0 || d < 2 ? x->shape[d] : x->shape[d] + 2 * b;
    }
    int64_t C = x->shape[1];
    if (C < 1)
        return fxon_fail(cx, "input 0 ('%s') needs a static channel dim", x->name);
    if ((rc = fxon_need_ref(cx, n, 0, &xref)))
        return rc;
    Fluxion__V1__Node *node = fxon_emit(cx, nd == 4 ? "conv2d" : "conv1d", NULL, 1, &xref);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    int64_t wshape[4] = { C, 1, 1, 1 };
    if ((rc = fxon_set_int(cx, node, "in_channels", C)) ||
        (rc = fxon_set_int(cx, node, "out_channels", C)) ||
        (rc = fxon_set_int(cx, node, "groups", C)) || (rc = fxon_set_bool(cx, node, "bias", false)))
        return rc;
    if (nd == 4 ? (rc = fxon_set_ints(cx, node, "kernel_size", (const int64_t[]){ 1, 1 }, 2)) ||
                      (rc = fxon_set_ints(cx, node, "padding", pad, 2))
                : (rc = fxon_set_int(cx, node, "kernel_size", 1)) ||
                      (rc = fxon_set_int(cx, node, "padding", pad[0])))
        return rc;
    float *w = fxon_param(cx, node, "weight", nd, wshape);
    if (!w)
        return FXS_INVALID_ARGUMENT;
    for (int64_t c = 0; c < C; c++)
        w[c] = 1.0f;
    return fxon_define(cx, n->output[0], node, 0, FXON_FLOAT, nd, shape);
}
