/*
 * export_ops.c - ONNX forms of the spec's ops without parameters
 * (docs/onnx-export.md has the table). Each writes nodes computing out[]
 * from in[]; shapes come from the graph's shape inference.
 */
#include "onnx/export_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define ONE(ex, op, n, out, x) (fxon_ex_op((ex), (op), (n)->name, (out), FXON_IN(x)) ? 0 : -1)

/* gelu's tanh approximation, written out (ONNX's Gelu is opset 20):
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
static const char *gelu_tanh(fxon_ex *ex, const char *node, const char *x, const char *out)
{
    const char *c3 = fxon_ex_scalar_f(ex, node, 3.0f);
    const char *x3 = fxon_ex_op(ex, "Pow", node, NULL, FXON_IN(x, c3));
    const char *k = fxon_ex_scalar_f(ex, node, 0.044715f);
    const char *t1 = fxon_ex_op(ex, "Mul", node, NULL, FXON_IN(x3, k));
    const char *t2 = fxon_ex_op(ex, "Add", node, NULL, FXON_IN(x, t1));
    const char *s = fxon_ex_scalar_f(ex, node, (float)sqrt(2.0 / M_PI));
    const char *t3 = fxon_ex_op(ex, "Mul", node, NULL, FXON_IN(t2, s));
    const char *th = fxon_ex_op(ex, "Tanh", node, NULL, FXON_IN(t3));
    const char *one = fxon_ex_scalar_f(ex, node, 1.0f);
    const char *t4 = fxon_ex_op(ex, "Add", node, NULL, FXON_IN(th, one));
    const char *half = fxon_ex_scalar_f(ex, node, 0.5f);
    const char *hx = fxon_ex_op(ex, "Mul", node, NULL, FXON_IN(x, half));
    return fxon_ex_op(ex, "Mul", node, out, FXON_IN(hx, t4));
}

/* The exact gelu as PyTorch exports nn.GELU() before opset 20:
 * (x * (1 + erf(x / sqrt(2)))) * 0.5. */
static const char *gelu_exact(fxon_ex *ex, const char *node, const char *x, const char *out)
{
    const char *r2 = fxon_ex_scalar_f(ex, node, (float)M_SQRT2);
    const char *d = fxon_ex_op(ex, "Div", node, NULL, FXON_IN(x, r2));
    const char *e = fxon_ex_op(ex, "Erf", node, NULL, FXON_IN(d));
    const char *one = fxon_ex_scalar_f(ex, node, 1.0f);
    const char *a = fxon_ex_op(ex, "Add", node, NULL, FXON_IN(e, one));
    const char *m = fxon_ex_op(ex, "Mul", node, NULL, FXON_IN(x, a));
    const char *half = fxon_ex_scalar_f(ex, node, 0.5f);
    return fxon_ex_op(ex, "Mul", node, out, FXON_IN(m, half));
}

const char *fxon_ex_activation(fxon_ex *ex, const char *node, const char *act, const char *x,
                               const char *out)
{
    if (strcmp(act, "none") == 0)
        return out ? fxon_ex_op(ex, "Identity", node, out, FXON_IN(x)) : x;
    if (strcmp(act, "gelu") == 0)
        return gelu_tanh(ex, node, x, out);
    static const char *const names[][2] = {
        {"relu", "Relu"},       {"sigmoid", "Sigmoid"},      {"tanh", "Tanh"},
        {"softmax", "Softmax"}, {"leaky_relu", "LeakyRelu"}, {"elu", "Elu"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(act, names[i][0]) == 0) {
            const char *y = fxon_ex_op(ex, names[i][1], node, out, FXON_IN(x));
            Onnx__NodeProto *np = y ? fxon_ex_last(ex) : NULL;
            if (np && strcmp(act, "softmax") == 0)
                fxon_ex_attr_i(ex, np, "axis", -1);
            if (np && strcmp(act, "leaky_relu") == 0)
                fxon_ex_attr_f(ex, np, "alpha", 0.01f);
            if (np && strcmp(act, "elu") == 0)
                fxon_ex_attr_f(ex, np, "alpha", 1.0f);
            return y;
        }
    return NULL;
}

static int cv_activation(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                         const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    const char *act = fxon_ex_as(n, "activation", "none");
    if (!fxon_ex_activation(ex, n->name, act, in[0].name, out[0].name))
        return ex->a.failed ? -1 : fxon_ex_fail(ex, n, "activation '%s' has no ONNX form", act);
    return 0;
}

static int cv_identity(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                       const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    return ONE(ex, "Identity", n, out[0].name, in[0].name);
}

/* One ONNX op of the same inputs, by the spec op's name. */
static int cv_same(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                   const fxon_xval *out, int nout)
{
    (void)nout;
    static const char *const map[][2] = {
        {"matmul", "MatMul"},
        {"add", "Add"},
        {"sub", "Sub"},
        {"mul", "Mul"},
        {"div", "Div"},
        {"neg", "Neg"},
        {"exp", "Exp"},
        {"log", "Log"},
        {"sqrt", "Sqrt"},
        {"abs", "Abs"},
        {"erf", "Erf"},
        {"relu", "Relu"},
        {"sigmoid", "Sigmoid"},
        {"tanh", "Tanh"},
        {"concat", "Concat"},
        {"index_select", "Gather"},
        {"gather", "GatherElements"},
        {"softmax", "Softmax"},
        {"log_softmax", "LogSoftmax"},
    };
    const char *names[64];
    if (nin > 64)
        return fxon_ex_fail(ex, n, "more than 64 inputs");
    for (int i = 0; i < nin; i++)
        names[i] = in[i].name;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(n->op, map[i][0]) == 0) {
            if (!fxon_ex_op(ex, map[i][1], n->name, out[0].name, nin, names))
                return -1;
            if (strcmp(n->op, "concat") == 0 || strcmp(n->op, "index_select") == 0 ||
                strcmp(n->op, "gather") == 0)
                fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", fxon_ex_ai(n, "axis", 0));
            if (strcmp(n->op, "softmax") == 0 || strcmp(n->op, "log_softmax") == 0)
                fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", fxon_ex_ai(n, "axis", -1));
            return 0;
        }
    return fxon_ex_fail(ex, n, "no ONNX form");
}

static int cv_concat(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                     const fxon_xval *out, int nout)
{
    if (nin > 64) {
        /* Concat of many inputs: in groups of 64, then of the groups. */
        return fxon_ex_fail(ex, n, "concat of more than 64 inputs is not exported");
    }
    return cv_same(ex, n, in, nin, out, nout);
}

static int cv_scalar(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                     const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    const char *op = n->op;
    const char *onnx = strcmp(op, "scale") == 0        ? "Mul"
                       : strcmp(op, "add_scalar") == 0 ? "Add"
                                                       : "Pow";
    double v = fxon_ex_af(n, strcmp(op, "pow") == 0 ? "exponent" : "value", 0);
    const char *c = fxon_ex_scalar_f(ex, n->name, (float)v);
    return c && fxon_ex_op(ex, onnx, n->name, out[0].name, FXON_IN(in[0].name, c)) ? 0 : -1;
}

static int cv_leaky_elu(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                        const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    bool leaky = strcmp(n->op, "leaky_relu") == 0;
    if (!fxon_ex_op(ex, leaky ? "LeakyRelu" : "Elu", n->name, out[0].name, FXON_IN(in[0].name)))
        return -1;
    fxon_ex_attr_f(
        ex, fxon_ex_last(ex), "alpha",
        (float)(leaky ? fxon_ex_af(n, "negative_slope", 0.01) : fxon_ex_af(n, "alpha", 1.0)));
    return 0;
}

static int cv_gelu(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                   const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    bool exact = strcmp(fxon_ex_as(n, "approximate", "tanh"), "none") == 0;
    return (exact ? gelu_exact : gelu_tanh)(ex, n->name, in[0].name, out[0].name) ? 0 : -1;
}

static int cv_clamp(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                    const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    const char *lo = "", *hi = "";
    if (fxon_ex_attr(n, "min") && isfinite(fxon_ex_af(n, "min", 0)))
        lo = fxon_ex_scalar_f(ex, n->name, (float)fxon_ex_af(n, "min", 0));
    if (fxon_ex_attr(n, "max") && isfinite(fxon_ex_af(n, "max", 0)))
        hi = fxon_ex_scalar_f(ex, n->name, (float)fxon_ex_af(n, "max", 0));
    if (!lo || !hi)
        return -1;
    return fxon_ex_op(ex, "Clip", n->name, out[0].name, FXON_IN(in[0].name, lo, hi)) ? 0 : -1;
}

static int cv_reduce(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                     const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    const int64_t *axes = NULL;
    int na = fxon_ex_aints(n, "axes", &axes);
    bool keep = fxon_ex_ab(n, "keepdim", false);
    Onnx__NodeProto *np;
    if (strcmp(n->op, "sum") == 0) {
        /* ReduceSum takes its axes as an input since opset 13. */
        const char *ax = na ? fxon_ex_const_i64(ex, n->name, na, axes) : "";
        if (!ax || !fxon_ex_op(ex, "ReduceSum", n->name, out[0].name, na ? 2 : 1,
                               (const char *const[]){in[0].name, ax}))
            return -1;
        np = fxon_ex_last(ex);
    } else {
        if (!fxon_ex_op(ex, strcmp(n->op, "mean") == 0 ? "ReduceMean" : "ReduceMax", n->name,
                        out[0].name, FXON_IN(in[0].name)))
            return -1;
        np = fxon_ex_last(ex);
        if (na)
            fxon_ex_attr_ints(ex, np, "axes", na, axes);
    }
    fxon_ex_attr_i(ex, np, "keepdims", keep);
    return 0;
}

static int cv_reshape(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                      const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    const int64_t *shape = NULL;
    int ns = fxon_ex_aints(n, "shape", &shape);
    const char *s = fxon_ex_const_i64(ex, n->name, ns, shape ? shape : (const int64_t[]){0});
    return s && fxon_ex_op(ex, "Reshape", n->name, out[0].name, FXON_IN(in[0].name, s)) ? 0 : -1;
}

static int transpose(fxon_ex *ex, const Fluxion__V1__Node *n, const char *x, const char *y, int nd,
                     const int64_t *perm)
{
    if (!fxon_ex_op(ex, "Transpose", n->name, y, FXON_IN(x)))
        return -1;
    fxon_ex_attr_ints(ex, fxon_ex_last(ex), "perm", nd, perm);
    return 0;
}

static int cv_transpose(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                        const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    int nd = in[0].ndim;
    int64_t perm[FX_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        perm[i] = i;
    if (strcmp(n->op, "permute") == 0) {
        const int64_t *dims = NULL;
        int k = fxon_ex_aints(n, "dims", &dims);
        for (int i = 0; i < k && i < nd; i++)
            perm[i] = fxon_ex_axis(dims[i], nd);
    } else {
        int64_t a = fxon_ex_axis(fxon_ex_ai(n, "dim0", 0), nd),
                b = fxon_ex_axis(fxon_ex_ai(n, "dim1", 0), nd);
        if (a < 0 || b < 0 || a >= nd || b >= nd)
            return fxon_ex_fail(ex, n, "dims out of range for rank %d", nd);
        perm[a] = b;
        perm[b] = a;
    }
    return transpose(ex, n, in[0].name, out[0].name, nd, perm);
}

static int cv_flatten(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                      const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    if (!fxon_ex_op(ex, "Flatten", n->name, out[0].name, FXON_IN(in[0].name)))
        return -1;
    fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", 1);
    return 0;
}

static int cv_slice(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                    const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    int64_t start = fxon_ex_ai(n, "start", 0), axis = fxon_ex_ai(n, "axis", 0);
    int64_t end = fxon_ex_attr(n, "end") ? fxon_ex_ai(n, "end", 0) : INT64_MAX;
    int64_t step = fxon_ex_ai(n, "step", 1);
    const char *s = fxon_ex_const_i64(ex, n->name, 1, &start);
    const char *e = fxon_ex_const_i64(ex, n->name, 1, &end);
    const char *a = fxon_ex_const_i64(ex, n->name, 1, &axis);
    const char *st = fxon_ex_const_i64(ex, n->name, 1, &step);
    return s && e && a && st &&
                   fxon_ex_op(ex, "Slice", n->name, out[0].name, FXON_IN(in[0].name, s, e, a, st))
               ? 0
               : -1;
}

static int cv_split(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                    const fxon_xval *out, int nout)
{
    (void)nin;
    const int64_t *sizes = NULL;
    int k = fxon_ex_aints(n, "sizes", &sizes);
    const char *sp = fxon_ex_const_i64(ex, n->name, k, sizes);
    const char **names = pba_array(&ex->a, (size_t)nout + 1, sizeof *names);
    if (!sp || !names)
        return -1;
    for (int i = 0; i < nout; i++)
        names[i] = out[i].name;
    Onnx__NodeProto *np = fxon_ex_node(ex, "Split", n->name, FXON_IN(in[0].name, sp), nout, names);
    if (!np)
        return -1;
    fxon_ex_attr_i(ex, np, "axis", fxon_ex_ai(n, "axis", 0));
    return 0;
}

static int cv_where(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                    const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    /* cond: f32 nonzero or i32 nonzero is true; Cast to bool says the same. */
    const char *c = fxon_ex_op(ex, "Cast", n->name, NULL, FXON_IN(in[0].name));
    if (!c)
        return -1;
    fxon_ex_attr_i(ex, fxon_ex_last(ex), "to", FXON_BOOL);
    return fxon_ex_op(ex, "Where", n->name, out[0].name, FXON_IN(c, in[1].name, in[2].name)) ? 0
                                                                                             : -1;
}

static int cv_linear(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                     const fxon_xval *out, int nout)
{
    (void)nout;
    const char *wt = fxon_ex_tmp(ex, n->name, "weight_t");
    if (!wt || transpose(ex, n, in[1].name, wt, 2, (const int64_t[]){1, 0}))
        return -1;
    if (nin < 3)
        return fxon_ex_op(ex, "MatMul", n->name, out[0].name, FXON_IN(in[0].name, wt)) ? 0 : -1;
    const char *y = fxon_ex_op(ex, "MatMul", n->name, NULL, FXON_IN(in[0].name, wt));
    return y && fxon_ex_op(ex, "Add", n->name, out[0].name, FXON_IN(y, in[2].name)) ? 0 : -1;
}

/* ------------------------------------------------------------- pools */

static int cv_pool(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                   const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    int64_t k[2], s[2], p[2];
    fxon_ex_apair(n, "kernel_size", 1, k);
    if (!fxon_ex_apair(n, "stride", 1, s))
        s[0] = k[0], s[1] = k[1];
    fxon_ex_apair(n, "padding", 0, p);
    bool avg = strcmp(n->op, "avgpool2d") == 0;
    if (!fxon_ex_op(ex, avg ? "AveragePool" : "MaxPool", n->name, out[0].name, FXON_IN(in[0].name)))
        return -1;
    Onnx__NodeProto *np = fxon_ex_last(ex);
    fxon_ex_attr_ints(ex, np, "kernel_shape", 2, k);
    fxon_ex_attr_ints(ex, np, "strides", 2, s);
    fxon_ex_attr_ints(ex, np, "pads", 4, (const int64_t[]){p[0], p[1], p[0], p[1]});
    if (avg)
        fxon_ex_attr_i(ex, np, "count_include_pad", fxon_ex_ab(n, "count_include_pad", true));
    return 0;
}

/* Mean of the cells [floor(i H / o), ceil((i+1) H / o)) along one axis,
 * as slices averaged and joined (the cells overlap when o does not divide
 * H, which no ONNX pool expresses). */
static const char *adaptive_axis(fxon_ex *ex, const Fluxion__V1__Node *n, const char *x,
                                 int64_t axis, int64_t size, int64_t o, const char *out)
{
    if (size % o == 0) {
        /* Equal cells: one AveragePool along the axis. */
        const char *y = fxon_ex_op(ex, "AveragePool", n->name, out, FXON_IN(x));
        Onnx__NodeProto *np = fxon_ex_last(ex);
        int64_t kk[2] = {1, 1};
        kk[axis - 2] = size / o;
        fxon_ex_attr_ints(ex, np, "kernel_shape", 2, kk);
        fxon_ex_attr_ints(ex, np, "strides", 2, kk);
        return y;
    }
    const char **cells = pba_array(&ex->a, (size_t)o, sizeof *cells);
    if (!cells)
        return NULL;
    for (int64_t i = 0; i < o; i++) {
        int64_t s = i * size / o, e = ((i + 1) * size + o - 1) / o;
        const char *cs = fxon_ex_const_i64(ex, n->name, 1, &s);
        const char *ce = fxon_ex_const_i64(ex, n->name, 1, &e);
        const char *ca = fxon_ex_const_i64(ex, n->name, 1, &axis);
        const char *sl =
            cs && ce && ca ? fxon_ex_op(ex, "Slice", n->name, NULL, FXON_IN(x, cs, ce, ca)) : NULL;
        cells[i] = sl ? fxon_ex_op(ex, "ReduceMean", n->name, NULL, FXON_IN(sl)) : NULL;
        if (!cells[i])
            return NULL;
        fxon_ex_attr_ints(ex, fxon_ex_last(ex), "axes", 1, &axis);
        fxon_ex_attr_i(ex, fxon_ex_last(ex), "keepdims", 1);
    }
    const char *y = fxon_ex_op(ex, "Concat", n->name, out, (int)o, cells);
    if (y)
        fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", axis);
    return y;
}

static int cv_adaptive(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                       const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    int64_t o[2];
    fxon_ex_apair(n, "output_size", 1, o);
    if (in[0].ndim != 4 || in[0].shape[2] < 1 || in[0].shape[3] < 1)
        return fxon_ex_fail(ex, n,
                            "an adaptive pool is exported for a fixed height and width "
                            "only (the input's are free)");
    if (o[0] > 4096 || o[1] > 4096)
        return fxon_ex_fail(ex, n, "output_size over 4096 is not exported");
    const char *h = adaptive_axis(ex, n, in[0].name, 2, in[0].shape[2], o[0], NULL);
    return h && adaptive_axis(ex, n, h, 3, in[0].shape[3], o[1], out[0].name) ? 0 : -1;
}

static int cv_global_pool(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                          const fxon_xval *out, int nout)
{
    (void)nin, (void)nout;
    const char *p = fxon_ex_op(ex, "GlobalAveragePool", n->name, NULL, FXON_IN(in[0].name));
    if (!p || !fxon_ex_op(ex, "Flatten", n->name, out[0].name, FXON_IN(p)))
        return -1;
    fxon_ex_attr_i(ex, fxon_ex_last(ex), "axis", 1);
    return 0;
}

const fxon_xconv fxon_ex_op_convs[] = {
    {"maxpool2d", cv_pool},
    {"avgpool2d", cv_pool},
    {"adaptive_avgpool2d", cv_adaptive},
    {"global_avgpool2d", cv_global_pool},
    {"flatten", cv_flatten},
    {"activation", cv_activation},
    {"grad_reverse", cv_identity},
    {"dropout", cv_identity},
    {"matmul", cv_same},
    {"linear", cv_linear},
    {"add", cv_same},
    {"sub", cv_same},
    {"mul", cv_same},
    {"div", cv_same},
    {"neg", cv_same},
    {"scale", cv_scalar},
    {"add_scalar", cv_scalar},
    {"exp", cv_same},
    {"log", cv_same},
    {"sqrt", cv_same},
    {"pow", cv_scalar},
    {"abs", cv_same},
    {"erf", cv_same},
    {"relu", cv_same},
    {"leaky_relu", cv_leaky_elu},
    {"elu", cv_leaky_elu},
    {"gelu", cv_gelu},
    {"sigmoid", cv_same},
    {"tanh", cv_same},
    {"clamp", cv_clamp},
    {"softmax", cv_same},
    {"log_softmax", cv_same},
    {"sum", cv_reduce},
    {"mean", cv_reduce},
    {"max", cv_reduce},
    {"reshape", cv_reshape},
    {"transpose", cv_transpose},
    {"permute", cv_transpose},
    {"concat", cv_concat},
    {"slice", cv_slice},
    {"split", cv_split},
    {"index_select", cv_same},
    {"gather", cv_same},
    {"where", cv_where},
    /* Losses are training-only (export.c leaves out the outputs computed
     * from one); CTC has no ONNX operator at all. */
    {"mse_loss", NULL},
    {"cross_entropy", NULL},
    {"cross_entropy_soft", NULL},
    {"bce_with_logits", NULL},
    {"ctc_loss", NULL},
    {NULL, NULL},
};
