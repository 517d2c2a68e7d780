/*
 * import_shape.c - converters of the operators that move data around or
 * compute shapes: Reshape, Flatten, (Un)Squeeze, Transpose, Concat, Split,
 * Slice, Shape, Cast, Constant(OfShape), Identity, Dropout, the
 * reductions and softmaxes. On constants they fold (import_fold.c); on
 * run-time tensors they become the engine's reshape, permute, slice, ...
 */
#include <string.h>

#include "onnx/import_frame.h"
#include "onnx/import_ops.h"
#include "base/status.h"

#define NO_ATTRS ((const char *const[]){NULL})
#define BIG_IDX  (1LL << 62) /* the spec's range for slice bounds */

static Fluxion__V1__Node *emit1(fxon_ctx *cx, const Onnx__NodeProto *n, const char *op,
                                const char *hint, int nin, const char *const *refs, int elem,
                                int ndim, const int64_t *shape)
{
    Fluxion__V1__Node *node = fxon_emit(cx, op, hint, nin, refs);
    if (!node || fxon_define(cx, n->output[0], node, 0, elem, ndim, shape))
        return NULL;
    return node;
}

/* A hint "<onnx node>_<suffix>" for the extra nodes of a chain. */
static const char *hint_of(fxon_ctx *cx, const Onnx__NodeProto *n, const char *suffix)
{
    return fxon_printf(cx, "%.200s_%s", n->name && n->name[0] ? n->name : n->output[0], suffix);
}

/* ------------------------------------------------------------ softmax, reductions */

static int axis_op(fxon_ctx *cx, const Onnx__NodeProto *n, const char *op)
{
    fxon_value *v;
    int64_t axis;
    int rc, ax;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"axis", NULL})) ||
        (rc = fxon_attr_int(cx, n, "axis", -1, &axis)) || (rc = fxon_input(cx, n, 0, &v)) ||
        (rc = fxon_need_ref(cx, n, 0, &(const char *){NULL})))
        return rc;
    if (v->ndim >= 0 && (rc = fxon_axis(cx, "axis", axis, v->ndim, &ax)))
        return rc;
    if (axis < -8 || axis > 7)
        return fxon_fail(cx, "axis %lld is out of the engine's range", (long long)axis);
    Fluxion__V1__Node *node = emit1(cx, n, op, NULL, 1, &v->ref, v->elem, v->ndim, v->shape);
    return node ? fxon_set_int(cx, node, "axis", axis) : FXS_INVALID_ARGUMENT;
}

static int cv_softmax(fxon_ctx *cx, const Onnx__NodeProto *n) { return axis_op(cx, n, "softmax"); }
static int cv_log_softmax(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    return axis_op(cx, n, "log_softmax");
}

/* ReduceX: axes from the attribute (before axes_input_opset) or input 1. */
static int reduce(fxon_ctx *cx, const Onnx__NodeProto *n, const char *op, int axes_input_opset)
{
    fxon_value *v;
    int64_t keep, noop;
    const int64_t *axes = NULL;
    size_t nax = 0;
    int rc;
    if ((rc = fxon_attrs_known(
             cx, n, (const char *[]){"keepdims", "noop_with_empty_axes", "axes", NULL})) ||
        (rc = fxon_attr_int(cx, n, "keepdims", 1, &keep)) ||
        (rc = fxon_attr_int(cx, n, "noop_with_empty_axes", 0, &noop)) ||
        (rc = fxon_input(cx, n, 0, &v)) || (rc = fxon_need_ref(cx, n, 0, &(const char *){NULL})))
        return rc;
    if (cx->opset < axes_input_opset) {
        if ((rc = fxon_attr_ints(cx, n, "axes", &axes, &nax)))
            return rc;
    } else if (fxon_attr(n, "axes")) {
        return fxon_fail(cx, "attribute 'axes' is not part of this opset (axes are input 1)");
    } else if (fxon_in(n, 1)) {
        const fxon_const *c;
        if ((rc = fxon_need_const(cx, n, 1, &c)))
            return rc;
        int64_t *tmp = fxon_alloc(cx, sizeof *tmp * (size_t)(c->numel + 1));
        if (!tmp)
            return FXS_RESOURCE_EXHAUSTED;
        for (int64_t k = 0; k < c->numel; k++)
            tmp[k] = fxon_const_int(c, k);
        axes = tmp;
        nax = (size_t)c->numel;
    }
    if (!nax && noop)
        return fxon_alias(cx, n->output[0], v);
    if (nax > 8)
        return fxon_fail(cx, "%zu axes (at most 8)", nax);
    bool red[FXON_MAX_DIMS] = {false};
    for (size_t k = 0; k < nax && v->ndim >= 0; k++) {
        int ax;
        if ((rc = fxon_axis(cx, "axes", axes[k], v->ndim, &ax)))
            return rc;
        red[ax] = true;
    }
    int nd = v->ndim < 0 ? -1 : 0;
    int64_t shape[FXON_MAX_DIMS];
    for (int d = 0; d < v->ndim; d++) {
        bool r = !nax || red[d];
        if (!r || keep)
            shape[nd++] = r ? 1 : v->shape[d];
    }
    Fluxion__V1__Node *node = emit1(cx, n, op, NULL, 1, &v->ref, v->elem, nd, shape);
    if (!node || (rc = fxon_set_bool(cx, node, "keepdim", keep != 0)))
        return node ? rc : FXS_INVALID_ARGUMENT;
    return nax ? fxon_set_ints(cx, node, "axes", axes, nax) : 0;
}

static int cv_reduce_sum(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    return reduce(cx, n, "sum", 13);
}
static int cv_reduce_mean(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    return reduce(cx, n, "mean", 18);
}
static int cv_reduce_max(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    return reduce(cx, n, "max", 18);
}

/* ------------------------------------------------------------ pass-through, constants */

static int cv_identity(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *v;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_input(cx, n, 0, &v)))
        return rc;
    return fxon_alias(cx, n->output[0], v);
}

/* Inference export: the identity. training_mode true would need the mask. */
static int cv_dropout(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *v;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"seed", NULL})) ||
        (rc = fxon_input(cx, n, 0, &v)))
        return rc;
    if (fxon_in(n, 2)) {
        const fxon_const *t;
        double on;
        if ((rc = fxon_need_const(cx, n, 2, &t)))
            return rc;
        if (!fxon_const_scalar(t, &on) || on != 0)
            return fxon_fail(cx, "training_mode must be a constant false (export in eval mode)");
    }
    return fxon_alias(cx, n->output[0], v);
}

static int cv_constant(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc;
    if ((rc = fxon_attrs_known(cx, n,
                               (const char *[]){"value", "value_float", "value_int", "value_floats",
                                                "value_ints", NULL})))
        return rc;
    if (n->n_attribute != 1)
        return fxon_fail(cx, "a Constant takes exactly one value attribute");
    const Onnx__AttributeProto *a = n->attribute[0];
    fxon_const *c = NULL;
    if (strcmp(a->name, "value") == 0) {
        if (!a->t)
            return fxon_fail(cx, "attribute 'value' holds no tensor");
        if ((rc = fxon__tensor_const(cx, a->t, "attribute 'value'", &c)))
            return rc;
    } else {
        bool fl = strstr(a->name, "float") != NULL, list = a->name[strlen(a->name) - 1] == 's';
        int64_t len = list ? (int64_t)(fl ? a->n_floats : a->n_ints) : 1;
        if (!(c = fxon_const_new(cx, fl ? FXON_FLOAT : FXON_INT64, list ? 1 : 0, &len)))
            return FXS_INVALID_ARGUMENT;
        for (int64_t k = 0; k < len; k++) {
            if (fl)
                c->f[k] = list ? a->floats[k] : a->f;
            else
                c->i[k] = list ? a->ints[k] : a->i;
        }
    }
    return fxon_define_const(cx, n->output[0], c);
}

static int cv_constant_of_shape(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    const fxon_const *s, *val = NULL;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"value", NULL})) ||
        (rc = fxon_need_const(cx, n, 0, &s)))
        return rc;
    const Onnx__AttributeProto *a = fxon_attr(n, "value");
    fxon_const *vc = NULL;
    if (a && a->t && (rc = fxon__tensor_const(cx, a->t, "attribute 'value'", &vc)))
        return rc;
    val = vc;
    if (val && val->numel != 1)
        return fxon_fail(cx, "attribute 'value' must hold one element");
    if (s->ndim != 1 || s->numel > FXON_MAX_DIMS)
        return fxon_fail(cx, "the shape must be a 1-D constant of at most %d dims", FXON_MAX_DIMS);
    int64_t shape[FXON_MAX_DIMS];
    for (int64_t k = 0; k < s->numel; k++) {
        shape[k] = fxon_const_int(s, k);
        if (fxon_is_sym(shape[k]))
            return fxon_fail(cx, "the shape depends on a dim that is not static (only constants "
                                 "of static shapes are supported)");
    }
    fxon_const *c = fxon_const_new(cx, val ? val->elem : FXON_FLOAT, (int)s->numel, shape);
    if (!c)
        return FXS_INVALID_ARGUMENT;
    for (int64_t k = 0; k < c->numel; k++) {
        if (c->elem == FXON_FLOAT)
            c->f[k] = val ? val->f[0] : 0.0f;
        else
            c->i[k] = val ? val->i[0] : 0;
    }
    return fxon_define_const(cx, n->output[0], c);
}

/* The input's shape as an int64 constant; dims that are not static become
 * symbols that a Reshape understands (the batch dim of x.view(x.size(0), -1)). */
static int cv_shape(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *v;
    int64_t start, end;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"start", "end", NULL})) ||
        (rc = fxon_attr_int(cx, n, "start", 0, &start)) ||
        (rc = fxon_attr_int(cx, n, "end", INT64_MAX, &end)) || (rc = fxon_input(cx, n, 0, &v)))
        return rc;
    if (v->ndim < 0)
        return fxon_fail(cx,
                         "the rank of '%.200s' is not known (give the graph input a shape, "
                         "or export with shape inference)",
                         v->name);
    int64_t r = v->ndim;
    start = start < 0 ? start + r : start;
    end = end < 0 ? end + r : end;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < start ? start : end > r ? r : end;
    int64_t len = end - start;
    fxon_const *c = fxon_const_new(cx, FXON_INT64, 1, &len);
    if (!c)
        return FXS_INVALID_ARGUMENT;
    for (int64_t k = 0; k < len; k++) {
        int64_t d = v->shape[start + k];
        c->i[k] = d >= 0 ? d : FXON_SYM(start + k);
    }
    return fxon_define_const(cx, n->output[0], c);
}

static int cv_cast(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *v;
    int64_t to;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"to", "saturate", NULL})) ||
        (rc = fxon_attr_int(cx, n, "to", 0, &to)) || (rc = fxon_input(cx, n, 0, &v)))
        return rc;
    if (v->c && !v->ref)
        return fxon__fold_cast(cx, n, v->c, (int)to);
    /* int32 <-> int64 pass through: the engine's lengths and indices take both */
    bool ints = (v->elem == FXON_INT32 || v->elem == FXON_INT64) &&
                (to == FXON_INT32 || to == FXON_INT64);
    bool same = to == v->elem || (v->elem == FXON_FLOAT && to == FXON_DOUBLE) || ints;
    if (!same)
        return fxon_fail(cx,
                         "casting a run-time tensor from element type %d to %lld is not "
                         "supported",
                         v->elem, (long long)to);
    return fxon_alias(cx, n->output[0], v);
}

/* ------------------------------------------------------------ reshapes */

/* x reshaped to want (ONNX's rules: 0 copies the input's dim, one -1
 * inferred); symbols from Shape become 0 when they copy the same
 * position, else -1 (at most one). */
static int reshape_to(fxon_ctx *cx, const Onnx__NodeProto *n, fxon_value *x, int nd,
                      const int64_t *want, bool allowzero)
{
    int64_t attr[FXON_MAX_DIMS], shape[FXON_MAX_DIMS];
    int minus = 0;
    if (nd > FXON_MAX_DIMS)
        return fxon_fail(cx, "the new shape has %d dims (at most %d)", nd, FXON_MAX_DIMS);
    for (int d = 0; d < nd; d++) {
        int64_t e = want[d];
        if (e == 0 && allowzero)
            return fxon_fail(cx, "allowzero=1 with a 0 in the shape is not supported");
        if (fxon_is_sym(e))
            e = fxon_sym_axis(e) == d && d < x->ndim ? 0 : -1;
        else if (e < -1)
            return fxon_fail(cx, "shape entry %d is %lld", d, (long long)e);
        attr[d] = e;
        minus += e == -1;
        shape[d] = e > 0 ? e : e == 0 && d < x->ndim ? x->shape[d] : -1;
    }
    if (minus > 1) {
        /* Symbols may stand for static sizes the input knows: try to fill. */
        return fxon_fail(cx,
                         "the new shape has %d sizes that are not static (the engine's "
                         "reshape infers one); export with static non-batch dims",
                         minus);
    }
    if (minus == 1 && x->ndim >= 0) {
        int64_t total = 1, known = 1;
        bool stat = true;
        for (int d = 0; d < x->ndim; d++)
            stat = stat && x->shape[d] >= 0, total *= x->shape[d] >= 0 ? x->shape[d] : 1;
        for (int d = 0; d < nd; d++)
            if (shape[d] >= 0)
                known *= shape[d];
            else if (attr[d] == 0)
                stat = false;
        for (int d = 0; d < nd && stat && known > 0; d++)
            if (attr[d] == -1)
                shape[d] = total / known;
    }
    Fluxion__V1__Node *node = emit1(cx, n, "reshape", NULL, 1, &x->ref, x->elem, nd, shape);
    return node ? fxon_set_ints(cx, node, "shape", attr, (size_t)nd) : FXS_INVALID_ARGUMENT;
}

static int cv_reshape(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *x;
    const fxon_const *s;
    int64_t allowzero;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"allowzero", NULL})) ||
        (rc = fxon_attr_int(cx, n, "allowzero", 0, &allowzero)) ||
        (rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_const(cx, n, 1, &s)))
        return rc;
    if (s->ndim != 1 || s->numel > FXON_MAX_DIMS)
        return fxon_fail(cx, "the shape must be 1-D with at most %d entries", FXON_MAX_DIMS);
    int64_t want[FXON_MAX_DIMS];
    for (int64_t k = 0; k < s->numel; k++)
        want[k] = fxon_const_int(s, k);
    if (x->c && !x->ref)
        return fxon__fold_reshape(cx, n, x->c, (int)s->numel, want);
    return reshape_to(cx, n, x, (int)s->numel, want, allowzero != 0);
}

static int cv_flatten(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *x;
    int64_t axis;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"axis", NULL})) ||
        (rc = fxon_attr_int(cx, n, "axis", 1, &axis)) || (rc = fxon_input(cx, n, 0, &x)) ||
        (rc = fxon_need_ref(cx, n, 0, &(const char *){NULL})))
        return rc;
    if (x->ndim < 0)
        return fxon_fail(cx, "the input's rank is not known");
    if (axis < 0)
        axis += x->ndim;
    if (axis < 0 || axis > x->ndim)
        return fxon_fail(cx, "axis is out of range for rank %d", x->ndim);
    if (axis == 1 && x->ndim >= 2) {
        int64_t shape[2] = {x->shape[0], 1};
        for (int d = 1; d < x->ndim; d++)
            shape[1] = shape[1] >= 0 && x->shape[d] >= 0 ? shape[1] * x->shape[d] : -1;
        return emit1(cx, n, "flatten", NULL, 1, &x->ref, x->elem, 2, shape) ? 0
                                                                            : FXS_INVALID_ARGUMENT;
    }
    /* [d0 .. d(axis-1) copied, the rest] -> 2-D: ONNX's Flatten is always 2-D. */
    int64_t want[2] = {1, -1};
    if (axis >= 1) {
        int64_t outer = 1;
        for (int d = 0; d < axis; d++)
            outer = outer >= 0 && x->shape[d] >= 0 ? outer * x->shape[d] : -1;
        if (outer < 0 && axis != x->ndim)
            return fxon_fail(cx, "axis %lld with dims before it that are not static",
                             (long long)axis);
        want[0] = outer < 0 ? -1 : outer;
        want[1] = axis == x->ndim ? 1 : -1;
    }
    return reshape_to(cx, n, x, 2, want, false);
}

/* The axes of (Un)Squeeze: input 1 since opset 13. */
static int squeeze_axes(fxon_ctx *cx, const Onnx__NodeProto *n, const int64_t **axes, size_t *nax)
{
    *axes = NULL;
    *nax = 0;
    if (!fxon_in(n, 1))
        return 0;
    const fxon_const *c;
    int rc = fxon_need_const(cx, n, 1, &c);
    if (rc)
        return rc;
    int64_t *a = fxon_alloc(cx, sizeof *a * (size_t)(c->numel + 1));
    if (!a)
        return FXS_RESOURCE_EXHAUSTED;
    for (int64_t k = 0; k < c->numel; k++)
        a[k] = fxon_const_int(c, k);
    *axes = a;
    *nax = (size_t)c->numel;
    return 0;
}

static int cv_unsqueeze(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *x;
    const int64_t *axes;
    size_t nax;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_input(cx, n, 0, &x)) ||
        (rc = squeeze_axes(cx, n, &axes, &nax)))
        return rc;
    if (!nax)
        return fxon_fail(cx, "axes (input 1) are required");
    if (x->c && !x->ref)
        return fxon__fold_unsqueeze(cx, n, x->c, axes, nax, false);
    if (x->ndim < 0)
        return fxon_fail(cx, "the input's rank is not known");
    int out_nd = x->ndim + (int)nax;
    if (out_nd > FXON_MAX_DIMS)
        return fxon_fail(cx, "the result would have rank %d", out_nd);
    bool ins[FXON_MAX_DIMS] = {false};
    for (size_t k = 0; k < nax; k++) {
        int ax;
        if ((rc = fxon_axis(cx, "axes", axes[k], out_nd, &ax)))
            return rc;
        ins[ax] = true;
    }
    /* Dims before the first new axis are copied (0); later ones need their
     * static size, or -1 for one of them. */
    int64_t want[FXON_MAX_DIMS];
    for (int d = 0, s = 0; d < out_nd; d++) {
        if (ins[d])
            want[d] = 1;
        else {
            want[d] = d == s ? 0 : x->shape[s] >= 0 ? x->shape[s] : FXON_SYM_ANY;
            s++;
        }
    }
    return reshape_to(cx, n, x, out_nd, want, false);
}

/* Squeeze on a run-time tensor: a sum over the size-1 axes (exact). */
static int cv_squeeze(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *x;
    const int64_t *axes;
    size_t nax;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_input(cx, n, 0, &x)) ||
        (rc = squeeze_axes(cx, n, &axes, &nax)))
        return rc;
    if (x->c && !x->ref)
        return fxon__fold_unsqueeze(cx, n, x->c, axes, nax, true);
    if (x->ndim < 0)
        return fxon_fail(cx, "the input's rank is not known");
    int64_t ax_list[FXON_MAX_DIMS], shape[FXON_MAX_DIMS];
    bool drop[FXON_MAX_DIMS] = {false};
    int na = 0, nd = 0;
    for (size_t k = 0; k < nax; k++) {
        int ax;
        if ((rc = fxon_axis(cx, "axes", axes[k], x->ndim, &ax)))
            return rc;
        if (x->shape[ax] > 1)
            return fxon_fail(cx, "axis %d has size %lld, not 1", ax, (long long)x->shape[ax]);
        drop[ax] = true;
    }
    for (int d = 0; d < x->ndim; d++) {
        if (!nax && x->shape[d] < 0)
            return fxon_fail(cx, "without axes, dim %d must be static", d);
        if (nax ? drop[d] : x->shape[d] == 1)
            ax_list[na++] = d;
        else
            shape[nd++] = x->shape[d];
    }
    if (!na)
        return fxon_alias(cx, n->output[0], x);
    Fluxion__V1__Node *node = emit1(cx, n, "sum", NULL, 1, &x->ref, x->elem, nd, shape);
    return node ? fxon_set_ints(cx, node, "axes", ax_list, (size_t)na) : FXS_INVALID_ARGUMENT;
}

static int cv_transpose(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *x;
    const int64_t *perm;
    size_t np;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"perm", NULL})) ||
        (rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_attr_ints(cx, n, "perm", &perm, &np)))
        return rc;
    if (x->ndim < 0)
        return fxon_fail(cx, "the input's rank is not known");
    int p[FXON_MAX_DIMS];
    bool seen[FXON_MAX_DIMS] = {false};
    if (np && np != (size_t)x->ndim)
        return fxon_fail(cx, "perm has %zu entries for rank %d", np, x->ndim);
    for (int d = 0; d < x->ndim; d++) {
        int64_t v = np ? perm[d] : x->ndim - 1 - d;
        if (v < 0 || v >= x->ndim || seen[v])
            return fxon_fail(cx, "perm is not a permutation of the input's axes");
        seen[v] = true;
        p[d] = (int)v;
    }
    if (x->c && !x->ref)
        return fxon__fold_transpose(cx, n, x->c, p);
    int64_t shape[FXON_MAX_DIMS], dims[FXON_MAX_DIMS];
    int moved[2], nmoved = 0;
    for (int d = 0; d < x->ndim; d++) {
        shape[d] = x->shape[p[d]];
        dims[d] = p[d];
        if (p[d] != d && nmoved < 2)
            moved[nmoved++] = d;
        else if (p[d] != d)
            nmoved = 3;
    }
    if (nmoved == 0)
        return fxon_alias(cx, n->output[0], x);
    Fluxion__V1__Node *node = emit1(cx, n, nmoved == 2 ? "transpose" : "permute", NULL, 1, &x->ref,
                                    x->elem, x->ndim, shape);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    if (nmoved == 2)
        return fxon_set_int(cx, node, "dim0", moved[0]) ?: fxon_set_int(cx, node, "dim1", moved[1]);
    return fxon_set_ints(cx, node, "dims", dims, (size_t)x->ndim);
}

/* ------------------------------------------------------------ joins and parts */

static int cv_concat(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int64_t axis;
    int rc, nin = fxon_nin(n), ax = 0;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"axis", NULL})) ||
        (rc = fxon_attr_int(cx, n, "axis", 0, &axis)))
        return rc;
    if (!fxon_attr(n, "axis"))
        return fxon_fail(cx, "attribute 'axis' is required");
    if (nin < 1)
        return fxon_fail(cx, "no inputs");
    bool all_const = true;
    for (int i = 0; i < nin; i++) {
        fxon_value *v;
        if ((rc = fxon_input(cx, n, i, &v)))
            return rc;
        all_const &= v->c != NULL;
    }
    if (all_const)
        return fxon__fold_concat(cx, n, axis);
    const char **refs = fxon_alloc(cx, sizeof *refs * (size_t)nin);
    fxon_value *first = fxon_value_of(cx, fxon_in(n, 0));
    int64_t shape[FXON_MAX_DIMS];
    if (!refs)
        return FXS_RESOURCE_EXHAUSTED;
    for (int i = 0; i < nin; i++) /* constants among tensors: materialised */
        if ((rc = fxon_need_ref(cx, n, i, &refs[i])))
            return rc;
    if (first->ndim >= 0 && (rc = fxon_axis(cx, "axis", axis, first->ndim, &ax)))
        return rc;
    memcpy(shape, first->shape, sizeof shape);
    for (int i = 0; i < nin; i++) {
        fxon_value *v = fxon_value_of(cx, fxon_in(n, i));
        refs[i] = v->ref;
        if (i && first->ndim >= 0)
            shape[ax] = shape[ax] >= 0 && v->ndim == first->ndim && v->shape[ax] >= 0
                            ? shape[ax] + v->shape[ax]
                            : -1;
    }
    Fluxion__V1__Node *node =
        emit1(cx, n, "concat", NULL, nin, refs, first->elem, first->ndim, shape);
    return node ? fxon_set_int(cx, node, "axis", axis) : FXS_INVALID_ARGUMENT;
}

static int cv_split(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *x;
    int64_t axis, nout_attr;
    int rc, ax;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"axis", "num_outputs", NULL})) ||
        (rc = fxon_attr_int(cx, n, "axis", 0, &axis)) ||
        (rc = fxon_attr_int(cx, n, "num_outputs", 0, &nout_attr)) ||
        (rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_ref(cx, n, 0, &(const char *){NULL})) ||
        (rc = fxon_axis(cx, "axis", axis, x->ndim, &ax)))
        return rc;
    size_t nout = n->n_output;
    if (nout < 1 || nout > 4096)
        return fxon_fail(cx, "%zu outputs (1 to 4096)", nout);
    int64_t *sizes = fxon_alloc(cx, sizeof *sizes * nout);
    if (!sizes)
        return FXS_RESOURCE_EXHAUSTED;
    int64_t dim = x->shape[ax];
    if (fxon_in(n, 1)) {
        const fxon_const *s;
        if ((rc = fxon_need_const(cx, n, 1, &s)))
            return rc;
        if (s->numel != (int64_t)nout)
            return fxon_fail(cx, "split has %lld sizes for %zu outputs", (long long)s->numel, nout);
        for (size_t k = 0; k < nout; k++)
            if ((sizes[k] = fxon_const_int(s, (int64_t)k)) < 1)
                return fxon_fail(cx, "split size %zu is %lld (the engine takes sizes >= 1)", k,
                                 (long long)sizes[k]);
    } else {
        if (dim < 0)
            return fxon_fail(cx, "equal parts of a dim that is not static");
        int64_t part = (dim + (int64_t)nout - 1) / (int64_t)nout;
        for (size_t k = 0; k < nout; k++) {
            int64_t left = dim - part * (int64_t)k;
            sizes[k] = left < part ? left : part;
            if (sizes[k] < 1)
                return fxon_fail(cx, "dim %lld cannot be split in %zu parts", (long long)dim, nout);
        }
    }
    Fluxion__V1__Node *node = fxon_emit(cx, "split", NULL, 1, &x->ref);
    if (!node || (rc = fxon_set_int(cx, node, "axis", axis)) ||
        (rc = fxon_set_ints(cx, node, "sizes", sizes, nout)))
        return node ? rc : FXS_INVALID_ARGUMENT;
    for (size_t k = 0; k < nout; k++) {
        int64_t shape[FXON_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[ax] = sizes[k];
        if (n->output[k] && n->output[k][0] &&
            (rc = fxon_define(cx, n->output[k], node, (int)k, x->elem, x->ndim, shape)))
            return rc;
    }
    return 0;
}

/* One slice node (or a folded constant when x is one). */
static int slice_one(fxon_ctx *cx, const Onnx__NodeProto *n, fxon_value *x, const char **ref,
                     int ax, int64_t start, int64_t end, int64_t step, bool last, int64_t *shape)
{
    int64_t dim = shape[ax];
    if (step == 0)
        return fxon_fail(cx, "a step of 0");
    if (dim >= 0) { /* ONNX's clamping, then the length */
        start = start < 0 ? start + dim : start;
        end = end < 0 ? end + dim : end;
        int64_t lo = step > 0 ? 0 : -1, hi = step > 0 ? dim : dim - 1;
        start = start < (step > 0 ? 0 : 0) ? 0 : start > hi ? hi : start;
        end = end < lo ? lo : end > dim ? dim : end;
        shape[ax] = step > 0 ? (end > start ? (end - start + step - 1) / step : 0)
                             : (start > end ? (start - end - step - 1) / -step : 0);
    }
    if (x->c && !x->ref) {
        if (dim < 0)
            return fxon_fail(cx, "slicing a constant along a dim that is not static");
        return fxon__fold_slice(cx, n, x->c, ax, start, end, step);
    }
    if (step < 0)
        return fxon_fail(cx, "negative steps are not supported (the engine's slice steps "
                             "forward)");
    if (dim < 0 && (start < -BIG_IDX || start > BIG_IDX))
        return fxon_fail(cx, "start %lld is out of range", (long long)start);
    const char *hint = last ? NULL : hint_of(cx, n, fxon_printf(cx, "ax%d", ax));
    Fluxion__V1__Node *node = fxon_emit(cx, "slice", hint, 1, ref);
    int rc;
    if (!node || (rc = fxon_set_int(cx, node, "axis", ax)) ||
        (rc = fxon_set_int(cx, node, "start", start)) ||
        (rc = fxon_set_int(cx, node, "step", step)))
        return node ? rc : FXS_INVALID_ARGUMENT;
    if (end < BIG_IDX && (rc = fxon_set_int(cx, node, "end", end < -BIG_IDX ? -BIG_IDX : end)))
        return rc;
    *ref = node->name;
    if (last)
        return fxon_define(cx, n->output[0], node, 0, x->elem, x->ndim, shape);
    return 0;
}

static int cv_slice(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *x;
    const fxon_const *st, *en, *axes = NULL, *steps = NULL;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_input(cx, n, 0, &x)) ||
        (rc = fxon_need_const(cx, n, 1, &st)) || (rc = fxon_need_const(cx, n, 2, &en)) ||
        (fxon_in(n, 3) && (rc = fxon_need_const(cx, n, 3, &axes))) ||
        (fxon_in(n, 4) && (rc = fxon_need_const(cx, n, 4, &steps))))
        return rc;
    if (x->ndim < 0)
        return fxon_fail(cx, "the input's rank is not known");
    int64_t k = st->numel;
    if (en->numel != k || (axes && axes->numel != k) || (steps && steps->numel != k) || k < 1 ||
        k > x->ndim)
        return fxon_fail(cx, "starts, ends, axes and steps must have the same length (1 to rank)");
    if (x->c && !x->ref && k != 1)
        return fxon_fail(cx, "slicing a constant along several axes is not supported");
    int64_t shape[FXON_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    const char *ref = x->ref;
    for (int64_t j = 0; j < k; j++) {
        int ax;
        if ((rc = fxon_axis(cx, "axes", axes ? fxon_const_int(axes, j) : j, x->ndim, &ax)))
            return rc;
        int64_t s = fxon_const_int(st, j), e = fxon_const_int(en, j);
        int64_t step = steps ? fxon_const_int(steps, j) : 1;
        if (fxon_is_sym(s) || fxon_is_sym(e) || fxon_is_sym(step))
            return fxon_fail(cx, "slice bounds that are not static");
        if ((rc = slice_one(cx, n, x, &ref, ax, s, e, step, j == k - 1, shape)))
            return rc;
    }
    return 0;
}

const fxon_converter fxon_shape_ops[] = {
    {"Softmax", 13, cv_softmax},
    {"LogSoftmax", 13, cv_log_softmax},
    {"ReduceSum", 13, cv_reduce_sum},
    {"ReduceMean", 13, cv_reduce_mean},
    {"ReduceMax", 13, cv_reduce_max},
    {"Identity", 13, cv_identity},
    {"Dropout", 13, cv_dropout},
    {"Constant", 13, cv_constant},
    {"ConstantOfShape", 13, cv_constant_of_shape},
    {"Shape", 13, cv_shape},
    {"Cast", 13, cv_cast},
    {"Reshape", 13, cv_reshape},
    {"Flatten", 13, cv_flatten},
    {"Unsqueeze", 13, cv_unsqueeze},
    {"Squeeze", 13, cv_squeeze},
    {"Transpose", 13, cv_transpose},
    {"Concat", 13, cv_concat},
    {"Split", 13, cv_split},
    {"Slice", 13, cv_slice},
    {NULL, 0, NULL},
};
