/*
 * import_ops.c - converters of the ONNX operators that map to the engine's
 * elementwise ops (docs/model-spec.md), Gemm/MatMul with a constant weight
 * (a `dense` layer, so the model stays trainable; a bias Add after a MatMul
 * joins it), and Gather (folded, slices, index_select, or an embedding).
 * Shapes and plumbing are in import_shape.c. The table at the end lists
 * them; docs/onnx.md documents each row.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "onnx/import_frame.h"
#include "onnx/import_ops.h"
#include "base/status.h"

#define NO_ATTRS ((const char *const[]){NULL})

/* Appends node op(refs) and defines the node's first output. */
static Fluxion__V1__Node *emit1(fxon_ctx *cx, const Onnx__NodeProto *n, const char *op,
                                const char *hint, int nin, const char *const *refs, int elem,
                                int ndim, const int64_t *shape)
{
    Fluxion__V1__Node *node = fxon_emit(cx, op, hint, nin, refs);
    if (!node || fxon_define(cx, n->output[0], node, 0, elem, ndim, shape))
        return NULL;
    return node;
}

/* ------------------------------------------------------------ elementwise */

static int unary(fxon_ctx *cx, const Onnx__NodeProto *n, const char *op)
{
    fxon_value *v;
    const char *ref;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_input(cx, n, 0, &v)) ||
        (rc = fxon_need_ref(cx, n, 0, &ref)))
        return rc;
    return emit1(cx, n, op, NULL, 1, &ref, v->elem, v->ndim, v->shape) ? 0 : FXS_INVALID_ARGUMENT;
}

#define UNARY(fn, op)                                                                              \
    static int fn(fxon_ctx *cx, const Onnx__NodeProto *n) { return unary(cx, n, op); }
UNARY(cv_relu, "relu")
UNARY(cv_sigmoid, "sigmoid")
UNARY(cv_tanh, "tanh")
UNARY(cv_exp, "exp")
UNARY(cv_log, "log")
UNARY(cv_sqrt, "sqrt")
UNARY(cv_neg, "neg")
UNARY(cv_abs, "abs")
UNARY(cv_erf, "erf")

/* A unary op with one float attribute. */
static int unary_f(fxon_ctx *cx, const Onnx__NodeProto *n, const char *op, const char *key,
                   double value)
{
    fxon_value *v;
    const char *ref;
    int rc;
    if ((rc = fxon_input(cx, n, 0, &v)) || (rc = fxon_need_ref(cx, n, 0, &ref)))
        return rc;
    Fluxion__V1__Node *node = emit1(cx, n, op, NULL, 1, &ref, v->elem, v->ndim, v->shape);
    return node ? fxon_set_float(cx, node, key, value) : FXS_INVALID_ARGUMENT;
}

static int cv_leaky_relu(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    double a;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"alpha", NULL})) ||
        (rc = fxon_attr_float(cx, n, "alpha", 0.01, &a)))
        return rc;
    return unary_f(cx, n, "leaky_relu", "negative_slope", a);
}

static int cv_elu(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    double a;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"alpha", NULL})) ||
        (rc = fxon_attr_float(cx, n, "alpha", 1.0, &a)))
        return rc;
    return unary_f(cx, n, "elu", "alpha", a);
}

/* Gelu (opset 20): approximate "none" (the default) is the exact x Phi(x),
 * "tanh" the approximation; the spec's gelu has both (its default, tanh,
 * is left implicit). */
static int cv_gelu(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    const char *approx;
    fxon_value *v;
    const char *ref;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"approximate", NULL})) ||
        (rc = fxon_attr_str(cx, n, "approximate", "none", &approx)))
        return rc;
    bool exact = strcmp(approx, "none") == 0;
    if (!exact && strcmp(approx, "tanh") != 0)
        return fxon_fail(cx, "approximate='%.32s' is not supported (none or tanh)", approx);
    if ((rc = fxon_input(cx, n, 0, &v)) || (rc = fxon_need_ref(cx, n, 0, &ref)))
        return rc;
    Fluxion__V1__Node *node = emit1(cx, n, "gelu", NULL, 1, &ref, v->elem, v->ndim, v->shape);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    return exact ? fxon_set_str(cx, node, "approximate", "none") : 0;
}

static int cv_pow(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    const fxon_const *e;
    double p;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_need_const(cx, n, 1, &e)))
        return rc;
    if (!fxon_const_scalar(e, &p) || !isfinite(p))
        return fxon_fail(cx, "the exponent must be one finite constant");
    return unary_f(cx, n, "pow", "exponent", p);
}

static int cv_clip(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *v;
    const char *ref;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_input(cx, n, 0, &v)) ||
        (rc = fxon_need_ref(cx, n, 0, &ref)))
        return rc;
    double bound[2];
    bool has[2] = {false, false};
    for (int k = 0; k < 2; k++) {
        const fxon_const *c;
        if (!fxon_in(n, k + 1))
            continue;
        if ((rc = fxon_need_const(cx, n, k + 1, &c)))
            return rc;
        if (!fxon_const_scalar(c, &bound[k]) || isnan(bound[k]))
            return fxon_fail(cx, "%s must be one constant", k ? "max" : "min");
        has[k] = true;
    }
    Fluxion__V1__Node *node = emit1(cx, n, "clamp", NULL, 1, &ref, v->elem, v->ndim, v->shape);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    if (has[0] && (rc = fxon_set_float(cx, node, "min", bound[0])))
        return rc;
    if (has[1] && (rc = fxon_set_float(cx, node, "max", bound[1])))
        return rc;
    return 0;
}

/* x op c for a scalar constant c, as the engine's scalar ops. */
static int binary_scalar(fxon_ctx *cx, const Onnx__NodeProto *n, char op, fxon_value *x, double c,
                         bool const_first)
{
    const char *ref = x->ref;
    Fluxion__V1__Node *node;
    char hint[300];
    if (const_first && (op == '-' || op == '/')) {
        /* c - x = (-x) + c; c / x = (x^-1) * c */
        snprintf(hint, sizeof hint, "%s_%s", n->name && n->name[0] ? n->name : n->output[0],
                 op == '-' ? "neg" : "recip");
        node = fxon_emit(cx, op == '-' ? "neg" : "pow", hint, 1, &ref);
        if (!node || (op == '/' && fxon_set_float(cx, node, "exponent", -1.0)))
            return FXS_INVALID_ARGUMENT;
        ref = node->name;
        op = op == '-' ? '+' : '*';
    } else if (op == '-') {
        op = '+';
        c = -c;
    } else if (op == '/') {
        if (c == 0)
            return fxon_fail(cx, "division by the constant 0");
        op = '*';
        c = 1.0 / c;
    }
    if (!isfinite(c))
        return fxon_fail(cx, "the constant operand is not finite");
    node =
        emit1(cx, n, op == '+' ? "add_scalar" : "scale", NULL, 1, &ref, x->elem, x->ndim, x->shape);
    return node ? fxon_set_float(cx, node, "value", c) : FXS_INVALID_ARGUMENT;
}

/* dense(x) + b: the bias joins a dense layer made from a MatMul (PyTorch
 * exports nn.Linear on 3-D inputs as MatMul + Add). */
static bool fuse_bias(fxon_ctx *cx, const Onnx__NodeProto *n, fxon_value *x, const fxon_const *b,
                      int *rc)
{
    Fluxion__V1__Node *d = x->node;
    Fluxion__V1__AttrValue *bias, *out;
    *rc = 0;
    if (!d || x->uses != 1 || x->out_index != 0 || strcmp(d->op, "dense") != 0 ||
        !(bias = fxon_get_attr(d, "bias")) || bias->b ||
        !(out = fxon_get_attr(d, "out_features")) || b->elem != FXON_FLOAT || b->numel != out->i ||
        b->ndim < 1 || b->shape[b->ndim - 1] != out->i)
        return false;
    float *p = fxon_param(cx, d, "bias", 1, (int64_t[]){out->i});
    if (!p || (*rc = fxon_set_bool(cx, d, "bias", true)) != 0) {
        *rc = *rc ? *rc : FXS_INVALID_ARGUMENT;
        return true;
    }
    memcpy(p, b->f, sizeof *p * (size_t)b->numel);
    *rc = fxon_alias(cx, n->output[0], x);
    return true;
}

static int binary(fxon_ctx *cx, const Onnx__NodeProto *n, char op)
{
    static const char *const ops[] = {"add", "sub", "mul", "div"};
    fxon_value *a, *b;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_input(cx, n, 0, &a)) ||
        (rc = fxon_input(cx, n, 1, &b)))
        return rc;
    if (a->c && b->c && !(a->ref && b->ref))
        return fxon__fold_binary(cx, n, op);
    if (a->ref && b->ref) {
        int nd;
        int64_t shape[FXON_MAX_DIMS];
        if (!fxon_broadcast(a, b, &nd, shape))
            return fxon_fail(cx, "the operands' shapes do not broadcast");
        const char *refs[2] = {a->ref, b->ref};
        const char *op_name = ops[op == '+' ? 0 : op == '-' ? 1 : op == '*' ? 2 : 3];
        return emit1(cx, n, op_name, NULL, 2, refs, a->elem, nd, shape) ? 0 : FXS_INVALID_ARGUMENT;
    }
    bool cfirst = !a->ref;
    fxon_value *x = cfirst ? b : a;
    const fxon_const *c = cfirst ? a->c : b->c;
    double s;
    if (fxon_const_scalar(c, &s) && c->ndim <= (x->ndim < 0 ? 8 : x->ndim))
        return binary_scalar(cx, n, op, x, s, cfirst);
    if (op == '+' && fuse_bias(cx, n, x, c, &rc))
        return rc;
    /* Any other constant tensor: materialised (a parameter), then the op. */
    const char *refs[2];
    int nd;
    int64_t shape[FXON_MAX_DIMS];
    if ((rc = fxon_need_ref(cx, n, 0, &refs[0])) || (rc = fxon_need_ref(cx, n, 1, &refs[1])))
        return rc;
    if (!fxon_broadcast(a, b, &nd, shape))
        return fxon_fail(cx, "the operands' shapes do not broadcast");
    const char *op_name = op == '+' ? "add" : op == '-' ? "sub" : op == '*' ? "mul" : "div";
    return emit1(cx, n, op_name, NULL, 2, refs, x->elem, nd, shape) ? 0 : FXS_INVALID_ARGUMENT;
}

static int cv_add(fxon_ctx *cx, const Onnx__NodeProto *n) { return binary(cx, n, '+'); }
static int cv_sub(fxon_ctx *cx, const Onnx__NodeProto *n) { return binary(cx, n, '-'); }
static int cv_mul(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = binary(cx, n, '*');
    return rc ? rc : fxon__fuse_gelu(cx, n);
}

static int cv_div(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = binary(cx, n, '/');
    return rc ? rc : fxon__fuse_gelu(cx, n);
}

static int cv_where(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    const char *refs[3];
    fxon_value *v[3];
    int rc, nd = 0;
    int64_t shape[FXON_MAX_DIMS];
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)))
        return rc;
    for (int i = 0; i < 3; i++)
        if ((rc = fxon_input(cx, n, i, &v[i])) || (rc = fxon_need_ref(cx, n, i, &refs[i])))
            return rc;
    fxon_value t = *v[1];
    if (!fxon_broadcast(v[1], v[2], &nd, shape))
        return fxon_fail(cx, "the operands' shapes do not broadcast");
    t.ndim = nd;
    memcpy(t.shape, shape, sizeof shape);
    if (!fxon_broadcast(v[0], &t, &nd, shape))
        return fxon_fail(cx, "the condition's shape does not broadcast");
    return emit1(cx, n, "where", NULL, 3, refs, v[1]->elem, nd, shape) ? 0 : FXS_INVALID_ARGUMENT;
}

/* ------------------------------------------------------------ layers */

/* A dense layer from a constant 2-D weight; w(o, i) reads the weight. */
static int make_dense(fxon_ctx *cx, const Onnx__NodeProto *n, fxon_value *x, fxon_value *wv,
                      int64_t in, int64_t out, bool transposed, double alpha,
                      const fxon_const *bias, double beta)
{
    const fxon_const *w = wv->c;
    if (x->ndim == 0 || (x->ndim > 0 && x->shape[x->ndim - 1] >= 0 && x->shape[x->ndim - 1] != in))
        return fxon_fail(cx, "the input's last dim (%lld) is not the weight's %lld",
                         (long long)(x->ndim > 0 ? x->shape[x->ndim - 1] : 0), (long long)in);
    if (w->elem != FXON_FLOAT)
        return fxon_fail(cx, "the weight '%.200s' is not a float tensor", wv->name);
    int64_t shape[FXON_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    if (x->ndim > 0)
        shape[x->ndim - 1] = out;
    Fluxion__V1__Node *d =
        emit1(cx, n, "dense", fxon_layer_name(cx, n, wv), 1, &x->ref, FXON_FLOAT, x->ndim, shape);
    int rc;
    if (!d || (rc = fxon_set_int(cx, d, "in_features", in)) ||
        (rc = fxon_set_int(cx, d, "out_features", out)) ||
        (rc = fxon_set_bool(cx, d, "bias", bias != NULL)))
        return d ? rc : FXS_INVALID_ARGUMENT;
    float *p = fxon_param(cx, d, "weight", 2, (int64_t[]){out, in});
    if (!p)
        return FXS_INVALID_ARGUMENT;
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++)
            p[o * in + i] = (float)(alpha * (transposed ? w->f[o * in + i] : w->f[i * out + o]));
    if (bias) {
        float *b = fxon_param(cx, d, "bias", 1, (int64_t[]){out});
        if (!b)
            return FXS_INVALID_ARGUMENT;
        for (int64_t o = 0; o < out; o++)
            b[o] = (float)(beta * fxon_const_float(bias, bias->numel == 1 ? 0 : o));
    }
    return 0;
}

static int cv_gemm(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    double alpha, beta;
    int64_t ta, tb;
    fxon_value *a, *b;
    int rc;
    if ((rc = fxon_attrs_known(cx, n,
                               (const char *[]){"alpha", "beta", "transA", "transB", NULL})) ||
        (rc = fxon_attr_float(cx, n, "alpha", 1, &alpha)) ||
        (rc = fxon_attr_float(cx, n, "beta", 1, &beta)) ||
        (rc = fxon_attr_int(cx, n, "transA", 0, &ta)) ||
        (rc = fxon_attr_int(cx, n, "transB", 0, &tb)) || (rc = fxon_input(cx, n, 0, &a)) ||
        (rc = fxon_input(cx, n, 1, &b)))
        return rc;
    if (ta)
        return fxon_fail(cx, "transA=1 is not supported");
    if (!a->ref)
        return fxon_fail(cx, "input A must be a tensor computed at run time");
    if (!b->c || b->c->ndim != 2)
        return fxon_fail(cx, "input B must be a constant 2-D weight (an initializer)");
    if (a->ndim >= 0 && a->ndim != 2)
        return fxon_fail(cx, "input A has rank %d, Gemm takes 2", a->ndim);
    int64_t in = tb ? b->c->shape[1] : b->c->shape[0], out = tb ? b->c->shape[0] : b->c->shape[1];
    const fxon_const *c = NULL;
    if (fxon_in(n, 2)) {
        if ((rc = fxon_need_const(cx, n, 2, &c)))
            return rc;
        if (c->numel != 1 && (c->numel != out || c->shape[c->ndim - 1] != out))
            return fxon_fail(cx, "input C must be a constant of %lld values (per output) or one",
                             (long long)out);
    }
    if (in < 1 || out < 1)
        return fxon_fail(cx, "the weight has an empty dim");
    return make_dense(cx, n, a, b, in, out, tb != 0, alpha, c, beta);
}

static int cv_matmul(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *a, *b;
    int rc;
    if ((rc = fxon_attrs_known(cx, n, NO_ATTRS)) || (rc = fxon_input(cx, n, 0, &a)) ||
        (rc = fxon_input(cx, n, 1, &b)))
        return rc;
    if (a->ref && !b->ref && b->c && b->c->ndim == 2 && b->c->shape[0] > 0 && b->c->shape[1] > 0)
        return make_dense(cx, n, a, b, b->c->shape[0], b->c->shape[1], false, 1.0, NULL, 0);
    const char *refs[2];
    if ((rc = fxon_need_ref(cx, n, 0, &refs[0])) || (rc = fxon_need_ref(cx, n, 1, &refs[1])))
        return rc;
    int nd = -1;
    int64_t shape[FXON_MAX_DIMS];
    if (a->ndim >= 2 && b->ndim >= 2) {
        const fxon_value *big = a->ndim >= b->ndim ? a : b;
        nd = big->ndim;
        memcpy(shape, big->shape, sizeof shape);
        shape[nd - 2] = a->shape[a->ndim - 2];
        shape[nd - 1] = b->shape[b->ndim - 1];
    } else if (a->ndim >= 0 && b->ndim >= 0) {
        return fxon_fail(cx, "1-D operands are not supported (the engine's matmul takes 2-D or "
                             "more)");
    }
    return emit1(cx, n, "matmul", NULL, 2, refs, FXON_FLOAT, nd, shape) ? 0 : FXS_INVALID_ARGUMENT;
}

/* Gather on a constant 2-D table with run-time indices: an embedding. */
static int make_embedding(fxon_ctx *cx, const Onnx__NodeProto *n, fxon_value *table,
                          fxon_value *idx)
{
    const fxon_const *w = table->c;
    if (w->ndim != 2 || w->elem != FXON_FLOAT || w->shape[0] < 1 || w->shape[1] < 1)
        return fxon_fail(cx, "run-time indices into a constant need a 2-D float table (an "
                             "embedding) and axis 0");
    int64_t shape[FXON_MAX_DIMS];
    int nd = idx->ndim >= 0 && idx->ndim < FXON_MAX_DIMS ? idx->ndim + 1 : -1;
    for (int d = 0; d + 1 < nd; d++)
        shape[d] = idx->shape[d];
    if (nd > 0)
        shape[nd - 1] = w->shape[1];
    Fluxion__V1__Node *e = emit1(cx, n, "embedding", fxon_layer_name(cx, n, table), 1, &idx->ref,
                                 FXON_FLOAT, nd, shape);
    int rc;
    if (!e || (rc = fxon_set_int(cx, e, "num_embeddings", w->shape[0])) ||
        (rc = fxon_set_int(cx, e, "embedding_dim", w->shape[1])))
        return e ? rc : FXS_INVALID_ARGUMENT;
    float *p = fxon_param(cx, e, "weight", 2, w->shape);
    if (!p)
        return FXS_INVALID_ARGUMENT;
    memcpy(p, w->f, sizeof *p * (size_t)w->numel);
    return 0;
}

static int cv_gather(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *x, *idx;
    int64_t axis;
    int rc, ax;
    if ((rc = fxon_attrs_known(cx, n, (const char *[]){"axis", NULL})) ||
        (rc = fxon_attr_int(cx, n, "axis", 0, &axis)) || (rc = fxon_input(cx, n, 0, &x)) ||
        (rc = fxon_input(cx, n, 1, &idx)) || (rc = fxon_axis(cx, "axis", axis, x->ndim, &ax)))
        return rc;
    if (x->c && !x->ref && idx->c)
        return fxon__fold_gather(cx, n, x->c, idx->c, ax);
    if (x->c && !x->ref)
        return ax == 0 ? make_embedding(cx, n, x, idx)
                       : fxon_fail(cx, "run-time indices into a constant along axis %d", ax);
    if (!idx->c) { /* both at run time: index_select takes 1-D indices */
        if (idx->ndim != 1)
            return fxon_fail(cx, "run-time indices must be 1-D (index_select)");
        const char *refs[2] = {x->ref, idx->ref};
        int64_t shape[FXON_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[ax] = idx->shape[0];
        Fluxion__V1__Node *node =
            emit1(cx, n, "index_select", NULL, 2, refs, x->elem, x->ndim, shape);
        return node ? fxon_set_int(cx, node, "axis", ax) : FXS_INVALID_ARGUMENT;
    }
    /* Constant indices into a run-time tensor: slices. */
    const fxon_const *ic = idx->c;
    int64_t dim = x->shape[ax], first = fxon_const_int(ic, 0), step = 1;
    if (ic->ndim > 1 || ic->numel < 1)
        return fxon_fail(cx, "constant indices must be a scalar or 1-D and not empty");
    for (int64_t k = 0; k < ic->numel; k++) {
        int64_t i = fxon_const_int(ic, k);
        if (i < 0 && dim < 0)
            return fxon_fail(cx, "a negative index along a dim that is not static");
        if (dim >= 0 && (i < -dim || i >= dim))
            return fxon_fail(cx, "index %lld is out of range for a dim of %lld", (long long)i,
                             (long long)dim);
    }
    first = first < 0 ? first + dim : first;
    if (ic->numel > 1)
        step = (fxon_const_int(ic, 1) < 0 ? fxon_const_int(ic, 1) + dim : fxon_const_int(ic, 1)) -
               first;
    for (int64_t k = 1; k < ic->numel; k++) {
        int64_t i = fxon_const_int(ic, k);
        if ((i < 0 ? i + dim : i) != first + k * step || step < 1)
            return fxon_fail(cx, "constant indices that are not an increasing progression");
    }
    int64_t shape[FXON_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[ax] = ic->numel;
    const char *hint = ic->ndim == 0 ? fxon_printf(cx, "%.200s_slice",
                                                   n->name && n->name[0] ? n->name : n->output[0])
                                     : NULL;
    Fluxion__V1__Node *s = fxon_emit(cx, "slice", hint, 1, &x->ref);
    if (!s || (rc = fxon_set_int(cx, s, "axis", ax)) ||
        (rc = fxon_set_int(cx, s, "start", first)) ||
        (rc = fxon_set_int(cx, s, "end", first + (ic->numel - 1) * step + 1)) ||
        (rc = fxon_set_int(cx, s, "step", step)))
        return s ? rc : FXS_INVALID_ARGUMENT;
    if (ic->ndim == 1)
        return fxon_define(cx, n->output[0], s, 0, x->elem, x->ndim, shape);
    /* A scalar index drops the axis: a sum over it (size 1) does. */
    int64_t out[FXON_MAX_DIMS], a = ax;
    int nd = 0;
    for (int d = 0; d < x->ndim; d++)
        if (d != ax)
            out[nd++] = x->shape[d];
    Fluxion__V1__Node *sum =
        emit1(cx, n, "sum", NULL, 1, (const char *[]){s->name}, x->elem, nd, out);
    return sum ? fxon_set_ints(cx, sum, "axes", &a, 1) : FXS_INVALID_ARGUMENT;
}

const fxon_converter fxon_ops[] = {
    {"Add", 13, cv_add},
    {"Sub", 13, cv_sub},
    {"Mul", 13, cv_mul},
    {"Div", 13, cv_div},
    {"Relu", 13, cv_relu},
    {"Sigmoid", 13, cv_sigmoid},
    {"Tanh", 13, cv_tanh},
    {"Exp", 13, cv_exp},
    {"Log", 13, cv_log},
    {"Sqrt", 13, cv_sqrt},
    {"Neg", 13, cv_neg},
    {"Abs", 13, cv_abs},
    {"Erf", 13, cv_erf},
    {"LeakyRelu", 13, cv_leaky_relu},
    {"Elu", 13, cv_elu},
    {"Gelu", 20, cv_gelu},
    {"Pow", 13, cv_pow},
    {"Clip", 13, cv_clip},
    {"Where", 13, cv_where},
    {"Gemm", 13, cv_gemm},
    {"MatMul", 13, cv_matmul},
    {"Gather", 13, cv_gather},
    {NULL, 0, NULL},
};
