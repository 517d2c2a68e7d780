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

/* Pad: only the identity (every pad 0) is supported; the engine has no
 * pad op. */
int fxon__cv_pad(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = fxon_attrs_known(cx, n, (const char *const[]){ "mode", NULL });
    fxon_value *x;
    const fxon_const *pads;
    if (rc || (rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_const(cx, n, 1, &pads)))
        return rc;
    for (int64_t k = 0; k < pads->numel; k++)
        if (fxon_const_int(pads, k) != 0)
            return fxon_fail(cx, "non-zero pads are not supported (the engine has no pad op; "
                             "PyTorch exports AvgPool2d(padding=p) with count_include_pad=True "
                             "as Pad + AveragePool: export with count_include_pad=False)");
    return fxon_alias(cx, n->output[0], x);
}
