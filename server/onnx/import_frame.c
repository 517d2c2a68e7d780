/*
 * import_frame.c - the converter API of onnx_internal.h: errors, attributes,
 * the table of values, emitting spec nodes and parameters, constants, and
 * the safetensors encoding of the parameters at the end.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/import_frame.h"
#include "base/status.h"

/* ------------------------------------------------------------ memory */

void *fxon_alloc(fxon_ctx *cx, size_t size)
{
    void *p = pba_alloc(&cx->impl->arena, size ? size : 1);
    if (!p)
        fxon_oom(cx);
    return p;
}

char *fxon_strdup(fxon_ctx *cx, const char *s)
{
    char *p = pba_strdup(&cx->impl->arena, s ? s : "");
    if (!p)
        fxon_oom(cx);
    return p;
}

char *fxon_printf(fxon_ctx *cx, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return fxon_strdup(cx, buf);
}

/* ------------------------------------------------------------ errors */

int fxon_fail(fxon_ctx *cx, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const Onnx__NodeProto *n = cx->node;
    if (!cx->err || !cx->errlen)
        return FXS_INVALID_ARGUMENT;
    if (n) {
        const char *name = n->name && n->name[0]         ? n->name
                           : n->n_output && n->output[0] ? n->output[0]
                                                         : "";
        snprintf(cx->err, cx->errlen, "node '%.200s' (%.64s, opset %lld): %s", name,
                 n->op_type ? n->op_type : "", (long long)cx->opset, msg);
    } else {
        snprintf(cx->err, cx->errlen, "%s", msg);
    }
    return FXS_INVALID_ARGUMENT;
}

int fxon_oom(fxon_ctx *cx)
{
    if (cx->err && cx->errlen)
        snprintf(cx->err, cx->errlen, "out of memory importing the ONNX model");
    return FXS_RESOURCE_EXHAUSTED;
}

/* ------------------------------------------------------------ hashing */

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Grows an open-addressing table of pointers keyed by key(p). */
static bool grow(void ***tab, size_t *cap, size_t count, const char *(*key)(const void *))
{
    if ((count + 1) * 2 <= *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 256;
    void **nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return false;
    for (size_t i = 0; i < *cap; i++) {
        void *p = (*tab)[i];
        if (!p)
            continue;
        size_t h = hash_str(key(p)) & (ncap - 1);
        while (nt[h])
            h = (h + 1) & (ncap - 1);
        nt[h] = p;
    }
    free(*tab);
    *tab = nt;
    *cap = ncap;
    return true;
}

static const char *value_key(const void *p) { return ((const fxon_value *)p)->name; }
static const char *name_key(const void *p) { return p; }

int fxon__frame_init(fxon_ctx *cx)
{
    cx->impl = calloc(1, sizeof *cx->impl);
    return cx->impl ? 0 : fxon_oom(cx);
}

void fxon__frame_free(fxon_ctx *cx)
{
    struct fxon_impl *im = cx->impl;
    if (!im)
        return;
    pba_free(&im->arena);
    free(im->vals);
    free(im->names);
    free(im->nodes);
    free(im->params);
    free(im);
    cx->impl = NULL;
}

fxon_value *fxon_value_of(fxon_ctx *cx, const char *name)
{
    struct fxon_impl *im = cx->impl;
    if (!name || !im->vcap)
        return NULL;
    size_t h = hash_str(name) & (im->vcap - 1);
    for (; im->vals[h]; h = (h + 1) & (im->vcap - 1))
        if (strcmp(im->vals[h]->name, name) == 0)
            return im->vals[h];
    return NULL;
}

fxon_value *fxon__value_new(fxon_ctx *cx, const char *name)
{
    struct fxon_impl *im = cx->impl;
    if (fxon_value_of(cx, name)) {
        fxon_fail(cx, "value '%.200s' is defined twice", name);
        return NULL;
    }
    if (!grow((void ***)&im->vals, &im->vcap, im->vcount, value_key)) {
        fxon_oom(cx);
        return NULL;
    }
    fxon_value *v = fxon_alloc(cx, sizeof *v);
    if (!v || !(v->name = fxon_strdup(cx, name)))
        return NULL;
    v->ndim = -1;
    v->producer = -1;
    size_t h = hash_str(name) & (im->vcap - 1);
    while (im->vals[h])
        h = (h + 1) & (im->vcap - 1);
    im->vals[h] = v;
    im->vcount++;
    return v;
}

bool fxon__name_taken(fxon_ctx *cx, const char *name)
{
    struct fxon_impl *im = cx->impl;
    if (!im->ncap)
        return false;
    size_t h = hash_str(name) & (im->ncap - 1);
    for (; im->names[h]; h = (h + 1) & (im->ncap - 1))
        if (strcmp(im->names[h], name) == 0)
            return true;
    return false;
}

bool fxon__name_take(fxon_ctx *cx, const char *name)
{
    struct fxon_impl *im = cx->impl;
    if (fxon__name_taken(cx, name))
        return false;
    char *own = fxon_strdup(cx, name);
    if (!own || !grow((void ***)&im->names, &im->ncap, im->ncount, name_key))
        return false;
    size_t h = hash_str(own) & (im->ncap - 1);
    while (im->names[h])
        h = (h + 1) & (im->ncap - 1);
    im->names[h] = own;
    im->ncount++;
    return true;
}

/* ------------------------------------------------------------ attributes */

const Onnx__AttributeProto *fxon_attr(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && strcmp(n->attribute[i]->name, name) == 0)
            return n->attribute[i];
    return NULL;
}

int fxon_attrs_known(fxon_ctx *cx, const Onnx__NodeProto *n, const char *const *known)
{
    for (size_t i = 0; i < n->n_attribute; i++) {
        const char *a = n->attribute[i]->name ? n->attribute[i]->name : "";
        bool ok = false;
        for (int k = 0; known && known[k] && !ok; k++)
            ok = strcmp(known[k], a) == 0;
        if (!ok)
            return fxon_fail(cx, "attribute '%.64s' is not supported", a);
    }
    return 0;
}

static int attr_typed(fxon_ctx *cx, const Onnx__AttributeProto *a, int type, const char *want)
{
    /* type is optional in old writers; the value fields then decide. */
    if (a->has_type && (int)a->type != type)
        return fxon_fail(cx, "attribute '%.64s' must be %s", a->name, want);
    return 0;
}

int fxon_attr_int(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, int64_t def,
                  int64_t *out)
{
    const Onnx__AttributeProto *a = fxon_attr(n, name);
    *out = def;
    if (!a)
        return 0;
    if (attr_typed(cx, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, "an int"))
        return FXS_INVALID_ARGUMENT;
    *out = a->i;
    return 0;
}

int fxon_attr_float(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, double def,
                    double *out)
{
    const Onnx__AttributeProto *a = fxon_attr(n, name);
    *out = def;
    if (!a)
        return 0;
    if (attr_typed(cx, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, "a float"))
        return FXS_INVALID_ARGUMENT;
    if (isnan(a->f))
        return fxon_fail(cx, "attribute '%.64s' is NaN", name);
    *out = a->f;
    return 0;
}

int fxon_attr_str(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, const char *def,
                  const char **out)
{
    const Onnx__AttributeProto *a = fxon_attr(n, name);
    *out = def;
    if (!a)
        return 0;
    if (attr_typed(cx, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING, "a string"))
        return FXS_INVALID_ARGUMENT;
    char *s = fxon_alloc(cx, a->s.len + 1);
    if (!s)
        return FXS_RESOURCE_EXHAUSTED;
    if (a->s.len)
        memcpy(s, a->s.data, a->s.len);
    if (strlen(s) != a->s.len)
        return fxon_fail(cx, "attribute '%.64s' holds a NUL byte", name);
    *out = s;
    return 0;
}

int fxon_attr_ints(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, const int64_t **v,
                   size_t *count)
{
    const Onnx__AttributeProto *a = fxon_attr(n, name);
    *v = NULL;
    *count = 0;
    if (!a)
        return 0;
    if (attr_typed(cx, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS, "a list of ints"))
        return FXS_INVALID_ARGUMENT;
    *v = a->ints;
    *count = a->n_ints;
    return 0;
}

/* ------------------------------------------------------------ inputs */

const char *fxon_in(const Onnx__NodeProto *n, int i)
{
    if (i < 0 || (size_t)i >= n->n_input || !n->input[i] || !n->input[i][0])
        return NULL;
    return n->input[i];
}

int fxon_nin(const Onnx__NodeProto *n)
{
    int k = (int)n->n_input;
    while (k > 0 && !fxon_in(n, k - 1))
        k--;
    return k;
}

int fxon_input(fxon_ctx *cx, const Onnx__NodeProto *n, int i, fxon_value **v)
{
    const char *name = fxon_in(n, i);
    if (!name)
        return fxon_fail(cx, "input %d is required", i);
    fxon_value *val = fxon_value_of(cx, name);
    if (!val || (!val->ref && !val->c))
        return fxon_fail(cx, "input %d ('%.200s') is not computed before this node", i, name);
    *v = val;
    return 0;
}

int fxon_need_const(fxon_ctx *cx, const Onnx__NodeProto *n, int i, const fxon_const **c)
{
    fxon_value *v;
    int rc = fxon_input(cx, n, i, &v);
    if (rc)
        return rc;
    if (!v->c)
        return fxon_fail(cx,
                         "input %d ('%.200s') must be a constant (an initializer or "
                         "shape arithmetic on static sizes), not a tensor computed at run time",
                         i, v->name);
    *c = v->c;
    return 0;
}

int fxon_need_ref(fxon_ctx *cx, const Onnx__NodeProto *n, int i, const char **ref)
{
    fxon_value *v;
    int rc = fxon_input(cx, n, i, &v);
    if (rc)
        return rc;
    if (!v->ref && (rc = fxon__materialize(cx, v)))
        return rc;
    *ref = v->ref;
    return 0;
}

bool fxon_const_scalar(const fxon_const *c, double *out)
{
    if (!c || c->numel != 1 || fxon_is_sym(c->elem == FXON_INT64 ? c->i[0] : 0))
        return false;
    *out = fxon_const_float(c, 0);
    return true;
}

int64_t fxon_const_int(const fxon_const *c, int64_t k)
{
    if (c->elem == FXON_INT64)
        return c->i[k];
    float f = c->f[k];
    if (!(f > -9.2e18f && f < 9.2e18f))
        return 0;
    return (int64_t)f;
}

double fxon_const_float(const fxon_const *c, int64_t k)
{
    return c->elem == FXON_INT64 ? (double)c->i[k] : (double)c->f[k];
}

fxon_const *fxon_const_new(fxon_ctx *cx, int elem, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > FXON_MAX_DIMS) {
        fxon_fail(cx, "a constant of rank %d (at most %d)", ndim, FXON_MAX_DIMS);
        return NULL;
    }
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] && numel > FXON_MAX_TENSOR_ELEMS / shape[d])) {
            fxon_fail(cx, "a constant of dim %lld is too large or negative", (long long)shape[d]);
            return NULL;
        }
        numel *= shape[d];
    }
    /* Folding can multiply sizes (broadcasts, gathers, ConstantOfShape):
     * all constants together stay within a budget. */
    if (numel > FXON_MAX_CONST_ELEMS - cx->impl->const_elems) {
        fxon_fail(cx, "constants computed at import of more than %lld elements in all",
                  (long long)FXON_MAX_CONST_ELEMS);
        return NULL;
    }
    if (!cx->impl->reading_initializers)
        cx->impl->const_elems += numel;
    fxon_const *c = fxon_alloc(cx, sizeof *c);
    if (!c)
        return NULL;
    c->elem = elem == FXON_FLOAT ? FXON_FLOAT : FXON_INT64;
    c->ndim = ndim;
    if (ndim)
        memcpy(c->shape, shape, sizeof *shape * (size_t)ndim);
    c->numel = numel;
    size_t esz = c->elem == FXON_FLOAT ? sizeof(float) : sizeof(int64_t);
    void *data = fxon_alloc(cx, (size_t)(numel ? numel : 1) * esz);
    if (!data)
        return NULL;
    if (c->elem == FXON_FLOAT)
        c->f = data;
    else
        c->i = data;
    return c;
}

/* ------------------------------------------------------------ emitting */

/* A node name the spec accepts: printable ASCII letters, digits, '_', '-'
 * and '/' (others become '_', a leading '/' goes), at most 200 bytes. */
static void clean_name(char *out, size_t outlen, const char *in)
{
    size_t k = 0;
    while (*in == '/')
        in++;
    for (; *in && k + 1 < outlen && k < 200; in++) {
        unsigned char ch = (unsigned char)*in;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
        out[k++] = ok ? (char)ch : '_';
    }
    out[k] = 0;
}

static const char *unique_name(fxon_ctx *cx, const char *hint)
{
    char base[224], name[256];
    clean_name(base, sizeof base, hint);
    if (!base[0])
        snprintf(base, sizeof base, "node");
    snprintf(name, sizeof name, "%s", base);
    for (int k = 2; fxon__name_taken(cx, name); k++)
        snprintf(name, sizeof name, "%s_%d", base, k);
    if (!fxon__name_take(cx, name)) {
        fxon_oom(cx);
        return NULL;
    }
    return fxon_strdup(cx, name);
}

Fluxion__V1__Node *fxon_emit(fxon_ctx *cx, const char *op, const char *hint, int nin,
                             const char *const *refs)
{
    struct fxon_impl *im = cx->impl;
    const Onnx__NodeProto *n = cx->node;
    if (!hint || !hint[0])
        hint = n && n->name && n->name[0]                            ? n->name
               : n && n->n_output && n->output[0] && n->output[0][0] ? n->output[0]
                                                                     : op;
    if (im->n_nodes == im->cap_nodes) {
        size_t nc = im->cap_nodes ? im->cap_nodes * 2 : 64;
        Fluxion__V1__Node **nn = realloc(im->nodes, nc * sizeof *nn);
        if (!nn) {
            fxon_oom(cx);
            return NULL;
        }
        im->nodes = nn;
        im->cap_nodes = nc;
    }
    Fluxion__V1__Node *node = fxon_alloc(cx, sizeof *node);
    if (!node)
        return NULL;
    fluxion__v1__node__init(node);
    node->name = (char *)unique_name(cx, hint);
    node->op = fxon_strdup(cx, op);
    node->inputs = fxon_alloc(cx, sizeof *node->inputs * (size_t)(nin > 0 ? nin : 1));
    node->attrs = fxon_alloc(cx, sizeof *node->attrs * FXON_MAX_NODE_ATTRS);
    if (!node->name || !node->op || !node->inputs || !node->attrs)
        return NULL;
    for (int i = 0; i < nin; i++)
        if (!(node->inputs[i] = fxon_strdup(cx, refs[i])))
            return NULL;
    node->n_inputs = (size_t)nin;
    im->nodes[im->n_nodes++] = node;
    return node;
}

Fluxion__V1__AttrValue *fxon_get_attr(Fluxion__V1__Node *node, const char *key)
{
    for (size_t i = 0; i < node->n_attrs; i++)
        if (strcmp(node->attrs[i]->key, key) == 0)
            return node->attrs[i]->value;
    return NULL;
}

/* The attribute key of node, created empty when absent. */
static Fluxion__V1__AttrValue *attr_slot(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key)
{
    Fluxion__V1__AttrValue *v = fxon_get_attr(node, key);
    if (v)
        return v;
    if (node->n_attrs >= FXON_MAX_NODE_ATTRS) {
        fxon_fail(cx, "internal: too many attributes on node '%s'", node->name);
        return NULL;
    }
    Fluxion__V1__Node__AttrsEntry *e = fxon_alloc(cx, sizeof *e);
    v = fxon_alloc(cx, sizeof *v);
    if (!e || !v)
        return NULL;
    fluxion__v1__node__attrs_entry__init(e);
    fluxion__v1__attr_value__init(v);
    if (!(e->key = fxon_strdup(cx, key)))
        return NULL;
    e->value = v;
    node->attrs[node->n_attrs++] = e;
    return v;
}

int fxon_set_int(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, int64_t x)
{
    Fluxion__V1__AttrValue *v = attr_slot(cx, node, key);
    if (!v)
        return FXS_INVALID_ARGUMENT;
    v->value_case = FLUXION__V1__ATTR_VALUE__VALUE_I;
    v->i = x;
    return 0;
}

int fxon_set_float(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, double x)
{
    Fluxion__V1__AttrValue *v = attr_slot(cx, node, key);
    if (!v)
        return FXS_INVALID_ARGUMENT;
    v->value_case = FLUXION__V1__ATTR_VALUE__VALUE_F;
    v->f = x;
    return 0;
}

int fxon_set_bool(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, bool x)
{
    Fluxion__V1__AttrValue *v = attr_slot(cx, node, key);
    if (!v)
        return FXS_INVALID_ARGUMENT;
    v->value_case = FLUXION__V1__ATTR_VALUE__VALUE_B;
    v->b = x;
    return 0;
}

int fxon_set_str(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, const char *x)
{
    Fluxion__V1__AttrValue *v = attr_slot(cx, node, key);
    char *s = v ? fxon_strdup(cx, x) : NULL;
    if (!s)
        return FXS_INVALID_ARGUMENT;
    v->value_case = FLUXION__V1__ATTR_VALUE__VALUE_S;
    v->s = s;
    return 0;
}

int fxon_set_ints(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, const int64_t *x,
                  size_t count)
{
    Fluxion__V1__AttrValue *v = attr_slot(cx, node, key);
    Fluxion__V1__IntList *l = v ? fxon_alloc(cx, sizeof *l) : NULL;
    int64_t *vals = l ? fxon_alloc(cx, sizeof *vals * (count ? count : 1)) : NULL;
    if (!vals)
        return FXS_RESOURCE_EXHAUSTED;
    fluxion__v1__int_list__init(l);
    if (count)
        memcpy(vals, x, sizeof *vals * count);
    l->values = vals;
    l->n_values = count;
    v->value_case = FLUXION__V1__ATTR_VALUE__VALUE_INTS;
    v->ints = l;
    return 0;
}

const char *fxon_out_ref(fxon_ctx *cx, const Fluxion__V1__Node *node, int k)
{
    return k == 0 ? node->name : fxon_printf(cx, "%s:%d", node->name, k);
}

/* The undefined entry of onnx_name (import.c made one per node output). */
static fxon_value *to_define(fxon_ctx *cx, const char *onnx_name)
{
    fxon_value *v = fxon_value_of(cx, onnx_name);
    if (!v) {
        fxon_fail(cx, "internal: output '%.200s' is not an output of the node", onnx_name);
        return NULL;
    }
    if (v->ref || v->c) {
        fxon_fail(cx, "value '%.200s' is defined twice", onnx_name);
        return NULL;
    }
    return v;
}

int fxon_define(fxon_ctx *cx, const char *onnx_name, Fluxion__V1__Node *node, int out_index,
                int elem, int ndim, const int64_t *shape)
{
    fxon_value *v = to_define(cx, onnx_name);
    if (!v)
        return FXS_INVALID_ARGUMENT;
    if (!node || !(v->ref = fxon_out_ref(cx, node, out_index)))
        return node ? FXS_RESOURCE_EXHAUSTED : fxon_fail(cx, "internal: no node for a value");
    v->node = node;
    v->out_index = out_index;
    if (elem)
        v->elem = elem;
    /* What the converter knows wins; value_info (already in v) fills the
     * rest: a rank it could not tell, a dim it left open. */
    if (ndim >= 0 && ndim <= FXON_MAX_DIMS) {
        bool same_rank = v->ndim == ndim;
        for (int d = 0; d < ndim; d++) {
            int64_t s = shape && shape[d] >= 0 ? shape[d] : -1;
            v->shape[d] = s >= 0 || !same_rank ? s : v->shape[d];
        }
        v->ndim = ndim;
    }
    return 0;
}

int fxon_define_const(fxon_ctx *cx, const char *onnx_name, const fxon_const *c)
{
    fxon_value *v = to_define(cx, onnx_name);
    if (!v)
        return FXS_INVALID_ARGUMENT;
    v->c = c;
    v->elem = c->elem;
    v->ndim = c->ndim;
    memcpy(v->shape, c->shape, sizeof v->shape);
    return 0;
}

int fxon_alias(fxon_ctx *cx, const char *onnx_name, const fxon_value *src)
{
    fxon_value *v = to_define(cx, onnx_name);
    if (!v)
        return FXS_INVALID_ARGUMENT;
    v->ref = src->ref;
    v->c = src->c;
    v->elem = src->elem;
    v->ndim = src->ndim;
    memcpy(v->shape, src->shape, sizeof v->shape);
    v->node = src->node;
    v->out_index = src->out_index;
    return 0;
}

float *fxon_param(fxon_ctx *cx, const Fluxion__V1__Node *node, const char *param, int ndim,
                  const int64_t *shape)
{
    struct fxon_impl *im = cx->impl;
    fxon_param_rec r = {.ndim = ndim, .numel = 1};
    if (ndim < 0 || ndim > FXON_MAX_DIMS) {
        fxon_fail(cx, "parameter '%s.%s' of rank %d", node->name, param, ndim);
        return NULL;
    }
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1 || r.numel > FXON_MAX_TENSOR_ELEMS / shape[d]) {
            fxon_fail(cx, "parameter '%s.%s': dim %d is %lld", node->name, param, d,
                      (long long)shape[d]);
            return NULL;
        }
        r.shape[d] = shape[d];
        r.numel *= shape[d];
    }
    if (r.numel > FXON_MAX_TENSOR_ELEMS - im->param_elems) {
        fxon_fail(cx, "the parameters exceed %lld elements in all",
                  (long long)FXON_MAX_TENSOR_ELEMS);
        return NULL;
    }
    if (im->n_params == im->cap_params) {
        size_t nc = im->cap_params ? im->cap_params * 2 : 32;
        fxon_param_rec *np = realloc(im->params, nc * sizeof *np);
        if (!np) {
            fxon_oom(cx);
            return NULL;
        }
        im->params = np;
        im->cap_params = nc;
    }
    r.name = fxon_printf(cx, "%s.%s", node->name, param);
    r.data = r.name ? pba_array(&im->arena, (size_t)r.numel, sizeof(float)) : NULL;
    if (!r.data) {
        fxon_oom(cx);
        return NULL;
    }
    im->params[im->n_params++] = r;
    im->param_elems += r.numel;
    return r.data;
}

const char *fxon_layer_name(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_value *w)
{
    /* "fc1.weight" -> "fc1", "layers.0.weight" -> "layers_0" (the engine's
     * names have no '.'); names the exporter made up ("onnx::Gemm_3") say
     * nothing: the node's name then. */
    if (w && w->initializer && !strstr(w->name, "::")) {
        const char *dot = strrchr(w->name, '.');
        if (dot && dot > w->name) {
            char *s = fxon_strdup(cx, w->name);
            if (s)
                s[dot - w->name] = 0;
            return s;
        }
    }
    (void)cx;
    return n && n->name && n->name[0] ? n->name : NULL;
}

/* ------------------------------------------------------------ shapes */

bool fxon_broadcast(const fxon_value *a, const fxon_value *b, int *ndim, int64_t *shape)
{
    if (a->ndim < 0 || b->ndim < 0) {
        *ndim = -1;
        return true;
    }
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < nd; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        int64_t x = da >= 0 ? a->shape[da] : 1, y = db >= 0 ? b->shape[db] : 1;
        if (x == 1)
            shape[d] = y;
        else if (y == 1)
            shape[d] = x;
        else if (x == -1 || y == -1)
            shape[d] = x == -1 ? y : x;
        else if (x != y)
            return false;
        else
            shape[d] = x;
    }
    *ndim = nd;
    return true;
}

int fxon_axis(fxon_ctx *cx, const char *what, int64_t axis, int ndim, int *out)
{
    if (ndim < 0)
        return fxon_fail(cx, "%s: the input's rank is not known (give the graph input a shape)",
                         what);
    if (axis < -ndim || axis >= (ndim ? ndim : 1))
        return fxon_fail(cx, "%s %lld is out of range for rank %d", what, (long long)axis, ndim);
    *out = (int)(axis < 0 ? axis + ndim : axis);
    return 0;
}
