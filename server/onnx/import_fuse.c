/*
 * import_fuse.c - the exact GELU written out, joined back into one `gelu`
 * node. Before opset 20 PyTorch exports nn.GELU() as
 * Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5) (other exporters put the
 * 0.5 elsewhere in the product, or multiply by 1/sqrt 2); the converters
 * turn that into scale, erf, add_scalar, mul and scale nodes, which
 * compute the same thing in five passes. After each Mul or Div,
 * fxon__fuse_gelu looks at the ONNX product that ends there: constant
 * factors making 0.5, times x, times 1 + erf(x / sqrt 2), every inner
 * value read only there, becomes gelu(x, approximate none) in the place of
 * the product's last spec node, and the inner nodes go. Anything else is
 * left as converted. The walk follows ONNX values (hash lookups and
 * producer indexes), so it costs O(1) per Mul or Div whatever the graph.
 */
#include <math.h>
#include <string.h>

#include "onnx/import_frame.h"
#include "onnx/import_ops.h"
#include "base/status.h"

#define MAX_PRODUCT 8 /* Mul/Div nodes of one product looked at (PyTorch's has 2) */

typedef struct {
    fxon_value *inner[MAX_PRODUCT + 3]; /* values whose spec nodes go */
    int n_inner;
    fxon_value *leaf[2]; /* the factors computed at run time */
    int n_leaf;
    double factor; /* the product of the constant factors */
} product;

/* The ONNX node that computes v, or NULL. */
static const Onnx__NodeProto *producer(fxon_ctx *cx, const fxon_value *v)
{
    const Onnx__GraphProto *g = cx->impl->graph;
    if (!v || !g || v->producer < 0 || (size_t)v->producer >= g->n_node)
        return NULL;
    return g->node[v->producer];
}

static bool is_op(const Onnx__NodeProto *n, const char *op, size_t nin)
{
    const char *dom = n ? n->domain : NULL;
    return n && strcmp(n->op_type, op) == 0 && n->n_input == nin && n->n_output == 1 &&
           (!dom || !dom[0] || strcmp(dom, "ai.onnx") == 0);
}

static fxon_value *in_value(fxon_ctx *cx, const Onnx__NodeProto *n, int i)
{
    return fxon_value_of(cx, fxon_in(n, i));
}

/* A constant scalar operand, as binary() in import_ops.c takes one (made
 * a scale or add_scalar node, not materialised). */
static bool scalar(const fxon_value *c, const fxon_value *x, double *s)
{
    return c && x && c->c && !c->ref && x->ref && fxon_const_scalar(c->c, s) &&
           c->c->ndim <= (x->ndim < 0 ? 8 : x->ndim) && isfinite(*s);
}

static bool near(double a, double b) { return fabs(a - b) <= 1e-6 * fabs(b); }

/* Flattens v, a factor of the product, into p: a Mul, or a Div by a
 * constant, whose output is read only here is opened; anything else is a
 * leaf. false: not a product of two run-time factors and constants. */
static bool flatten(fxon_ctx *cx, fxon_value *v, product *p, bool root)
{
    const Onnx__NodeProto *n = producer(cx, v);
    bool mul = is_op(n, "Mul", 2), div = is_op(n, "Div", 2);
    if (!v || !v->ref)
        return false;
    if ((!mul && !div) || (!root && v->uses != 1)) {
        if (p->n_leaf == 2)
            return false;
        p->leaf[p->n_leaf++] = v;
        return true;
    }
    if (!root) {
        if (p->n_inner == MAX_PRODUCT)
            return false;
        p->inner[p->n_inner++] = v;
    }
    fxon_value *a = in_value(cx, n, 0), *b = in_value(cx, n, 1);
    double s;
    if (div)
        return scalar(b, a, &s) && s != 0 && (p->factor /= s, flatten(cx, a, p, false));
    if (scalar(b, a, &s))
        return p->factor *= s, flatten(cx, a, p, false);
    if (scalar(a, b, &s))
        return p->factor *= s, flatten(cx, b, p, false);
    return flatten(cx, a, p, false) && flatten(cx, b, p, false);
}

/* a = 1 + erf(x / sqrt 2) (Add, Erf, Div by sqrt 2 or Mul by 1/sqrt 2, each
 * output read once); their values go into p. */
static bool one_plus_erf(fxon_ctx *cx, fxon_value *a, fxon_value *x, product *p)
{
    const Onnx__NodeProto *n = producer(cx, a);
    double s;
    if (a->uses != 1 || !is_op(n, "Add", 2))
        return false;
    fxon_value *e = in_value(cx, n, 0), *o = in_value(cx, n, 1);
    if (scalar(e, o, &s)) /* 1 + erf */
        e = o, o = in_value(cx, n, 0);
    if (!scalar(o, e, &s) || s != 1 || e->uses != 1 || !is_op(n = producer(cx, e), "Erf", 1))
        return false;
    fxon_value *d = in_value(cx, n, 0), *c;
    if (!d || d->uses != 1)
        return false;
    n = producer(cx, d);
    if (is_op(n, "Div", 2)) {
        if (in_value(cx, n, 0) != x || !scalar(c = in_value(cx, n, 1), x, &s) || !near(s, M_SQRT2))
            return false;
    } else if (is_op(n, "Mul", 2)) {
        fxon_value *m0 = in_value(cx, n, 0), *m1 = in_value(cx, n, 1);
        c = m0 == x ? m1 : m0;
        if ((m0 != x && m1 != x) || !scalar(c, x, &s) || !near(s, M_SQRT1_2))
            return false;
    } else {
        return false;
    }
    p->inner[p->n_inner++] = a;
    p->inner[p->n_inner++] = e;
    p->inner[p->n_inner++] = d;
    return true;
}

/* The spec node that made v: one node of a known op per ONNX node, so
 * dropping it leaves nothing behind. */
static bool plain_node(const fxon_value *v)
{
    static const char *const ops[] = {"scale", "mul", "add_scalar", "erf", NULL};
    if (!v->node || v->out_index != 0)
        return false;
    for (int i = 0; ops[i]; i++)
        if (strcmp(v->node->op, ops[i]) == 0)
            return true;
    return false;
}

int fxon__fuse_gelu(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *v = fxon_value_of(cx, n->output[0]);
    if (!v || !plain_node(v))
        return 0;
    product p = {.factor = 1};
    if (!flatten(cx, v, &p, true) || p.n_leaf != 2 || !near(p.factor, 0.5))
        return 0;
    int k; /* the leaf that is x; the other is 1 + erf(x / sqrt 2) */
    for (k = 0; k < 2; k++)
        if (one_plus_erf(cx, p.leaf[1 - k], p.leaf[k], &p))
            break;
    if (k == 2)
        return 0;
    for (int i = 0; i < p.n_inner; i++)
        if (!plain_node(p.inner[i]) || p.inner[i]->node == v->node)
            return 0;
    char *x = fxon_strdup(cx, p.leaf[k]->ref), *op = fxon_strdup(cx, "gelu");
    if (!x || !op)
        return FXS_RESOURCE_EXHAUSTED;
    /* The last node becomes the gelu (its name and ONNX value stay). */
    Fluxion__V1__Node *root = v->node;
    root->op = op;
    root->inputs[0] = x;
    root->n_inputs = 1;
    root->n_attrs = 0;
    int rc = fxon_set_str(cx, root, "approximate", "none");
    if (rc)
        return rc;
    /* The inner values were read only inside the product: their nodes go
     * (marked, then one pass) and nothing refers to them any more. */
    for (int i = 0; i < p.n_inner; i++) {
        p.inner[i]->node->op = NULL;
        p.inner[i]->node = NULL;
    }
    struct fxon_impl *im = cx->impl;
    size_t kept = 0;
    for (size_t i = 0; i < im->n_nodes; i++)
        if (im->nodes[i]->op)
            im->nodes[kept++] = im->nodes[i];
    im->n_nodes = kept;
    return 0;
}
