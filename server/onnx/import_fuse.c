/*
 * import_fuse.c - the exact GELU written out, joined back into one `gelu`
 * node. Before opset 20 PyTorch exports nn.GELU() as
 * Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5) (other exporters put the
 * 0.5 elsewhere in the product); the converters turn that into scale,
 * erf, add_scalar, mul and scale nodes, which compute the same thing in
 * five passes. After each Mul or Div, fxon__fuse_gelu looks at the
 * product that ends there: a factor 0.5 times x times 1 + erf(x / sqrt 2),
 * every inner value read only there, becomes gelu(x, approximate none) in
 * the place of its last node, and the inner nodes go. Anything else is
 * left as converted.
 */
#include <math.h>
#include <string.h>

#include "onnx/import_frame.h"
#include "onnx/import_ops.h"
#include "base/status.h"

#define MAX_PRODUCT 8 /* nodes of one product looked at (PyTorch's has 2) */

/* The spec node named ref (output 0 only), or NULL. */
static Fluxion__V1__Node *node_named(fxon_ctx *cx, const char *ref)
{
    struct fxon_impl *im = cx->impl;
    for (size_t i = im->n_nodes; i-- > 0;)
        if (strcmp(im->nodes[i]->name, ref) == 0)
            return im->nodes[i];
    return NULL;
}

/* How many node inputs and graph outputs read node's output, over every
 * ONNX value it stands for (an alias counts its own readers too, so a
 * value passed through Identity is never taken for read once). */
static int readers(fxon_ctx *cx, const Fluxion__V1__Node *node)
{
    struct fxon_impl *im = cx->impl;
    int n = 0;
    for (size_t i = 0; i < im->vcap; i++)
        if (im->vals[i] && im->vals[i]->node == node)
            n += im->vals[i]->uses;
    return n;
}

static bool is_op(const Fluxion__V1__Node *n, const char *op, int nin)
{
    return n && strcmp(n->op, op) == 0 && n->n_inputs == (size_t)nin;
}

static double attr_f(Fluxion__V1__Node *n, const char *key)
{
    Fluxion__V1__AttrValue *v = fxon_get_attr(n, key);
    if (!v)
        return NAN;
    return v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_F   ? v->f
           : v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_I ? (double)v->i
                                                               : NAN;
}

static bool near(double a, double b) { return fabs(a - b) <= 1e-6 * fabs(b); }

typedef struct {
    Fluxion__V1__Node *inner[MAX_PRODUCT + 3]; /* nodes to drop */
    int n_inner;
    const char *leaf[2]; /* the factors that are not scale/mul nodes */
    int n_leaf;
    double factor; /* the product of the scales */
} product;

/* Flattens ref, a factor of the product, into p: a scale or mul node read
 * only here is opened; anything else is a leaf. false: too big. */
static bool flatten(fxon_ctx *cx, const char *ref, product *p, bool root)
{
    Fluxion__V1__Node *n = strchr(ref, ':') ? NULL : node_named(cx, ref);
    bool scale = is_op(n, "scale", 1), mul = is_op(n, "mul", 2);
    if (!root && (scale || mul) && readers(cx, n) != 1)
        scale = mul = false;
    if (!scale && !mul) {
        if (p->n_leaf == 2)
            return false;
        p->leaf[p->n_leaf++] = ref;
        return true;
    }
    if (p->n_inner == MAX_PRODUCT)
        return false;
    if (!root)
        p->inner[p->n_inner++] = n;
    if (scale)
        p->factor *= attr_f(n, "value");
    for (size_t i = 0; i < n->n_inputs; i++)
        if (!flatten(cx, n->inputs[i], p, false))
            return false;
    return true;
}

/* 1 + erf(x / sqrt 2) for x = *x (add_scalar, erf, scale, each read only
 * once); its nodes go into p. */
static bool one_plus_erf(fxon_ctx *cx, const char *ref, const char *x, product *p)
{
    Fluxion__V1__Node *a = strchr(ref, ':') ? NULL : node_named(cx, ref);
    if (!is_op(a, "add_scalar", 1) || !near(attr_f(a, "value"), 1) || readers(cx, a) != 1)
        return false;
    Fluxion__V1__Node *e = node_named(cx, a->inputs[0]);
    if (!is_op(e, "erf", 1) || readers(cx, e) != 1)
        return false;
    Fluxion__V1__Node *d = node_named(cx, e->inputs[0]);
    if (!is_op(d, "scale", 1) || !near(attr_f(d, "value"), M_SQRT1_2) || readers(cx, d) != 1 ||
        strcmp(d->inputs[0], x) != 0)
        return false;
    p->inner[p->n_inner++] = a;
    p->inner[p->n_inner++] = e;
    p->inner[p->n_inner++] = d;
    return true;
}

int fxon__fuse_gelu(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    fxon_value *v = fxon_value_of(cx, n->output[0]);
    Fluxion__V1__Node *root = v ? v->node : NULL;
    if (!root || !(is_op(root, "scale", 1) || is_op(root, "mul", 2)))
        return 0;
    product p = {.factor = 1};
    if (!flatten(cx, root->name, &p, true) || p.n_leaf != 2 || !near(p.factor, 0.5))
        return 0;
    int k; /* the leaf that is x; the other is 1 + erf(x / sqrt 2) */
    for (k = 0; k < 2; k++)
        if (one_plus_erf(cx, p.leaf[1 - k], p.leaf[k], &p))
            break;
    if (k == 2)
        return 0;
    char *x = fxon_strdup(cx, p.leaf[k]), *op = fxon_strdup(cx, "gelu");
    if (!x || !op)
        return FXS_RESOURCE_EXHAUSTED;
    /* The last node becomes the gelu (its name and ONNX value stay). */
    root->op = op;
    root->inputs[0] = x;
    root->n_inputs = 1;
    root->n_attrs = 0;
    int rc = fxon_set_str(cx, root, "approximate", "none");
    if (rc)
        return rc;
    struct fxon_impl *im = cx->impl;
    size_t kept = 0;
    for (size_t i = 0; i < im->n_nodes; i++) {
        bool drop = false;
        for (int j = 0; j < p.n_inner; j++)
            drop |= im->nodes[i] == p.inner[j];
        if (!drop)
            im->nodes[kept++] = im->nodes[i];
    }
    im->n_nodes = kept;
    /* The dropped nodes' ONNX values were read only inside the product:
     * nothing refers to them any more. */
    for (size_t i = 0; i < im->vcap; i++)
        for (int j = 0; im->vals[i] && j < p.n_inner; j++)
            if (im->vals[i]->node == p.inner[j])
                im->vals[i]->node = NULL;
    return 0;
}
