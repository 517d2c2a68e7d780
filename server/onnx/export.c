/*
 * export.c - a stored model version as an ONNX ModelProto: the framework
 * of the exporter. The spec is built with its weights first (fxg_build,
 * fxg_load_weights: the same validation as serving, and shape inference
 * for every node output, which the converters need for ranks and static
 * sizes), then each node an output depends on is converted, in
 * topological order, by its op's converter (export_ops.c,
 * export_layers.c). ONNX names: graph inputs and outputs keep the spec's
 * names, a node's first output is named as the node and its K-th
 * "node:K", helper tensors "node/what_k"; ONNX nodes are named as the
 * tensor they produce.
 */
#include "onnx/export_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "models/graph.h"

#define FXON_OPSET      17
#define FXON_IR_VERSION 8 /* the IR version of opset 17 (ONNX 1.12) */

/* ------------------------------------------------------------ builder */

int fxon_ex_fail(fxon_ex *ex, const Fluxion__V1__Node *n, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ex->err, ex->errlen, "node '%s' (%s): %s", n->name, n->op, msg);
    return -1;
}

const char *fxon_ex_tmp(fxon_ex *ex, const char *node, const char *what)
{
    return pba_printf(&ex->a, "%s/%s_%u", node, what, ex->tmp++);
}

static bool grow(fxon_ex *ex, void ***arr, size_t n, size_t *cap)
{
    if (n < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 64;
    void **na = pba_array(&ex->a, ncap, sizeof *na);
    if (!na)
        return false;
    if (n)
        memcpy(na, *arr, n * sizeof *na);
    *arr = na;
    *cap = ncap;
    return true;
}

static char **strs(fxon_ex *ex, int n, const char *const *s)
{
    char **out = pba_array(&ex->a, (size_t)(n ? n : 1), sizeof *out);
    for (int i = 0; out && i < n; i++)
        if (!(out[i] = pba_strdup(&ex->a, s[i] ? s[i] : "")))
            return NULL;
    return out;
}

Onnx__NodeProto *fxon_ex_node(fxon_ex *ex, const char *op, const char *name, int nin,
                              const char *const *in, int nout, const char *const *out)
{
    Onnx__NodeProto *np = PBA_NEW(&ex->a, Onnx__NodeProto, onnx__node_proto__init);
    if (!np || !grow(ex, (void ***)&ex->nodes, ex->n_nodes, &ex->cap_nodes))
        return NULL;
    np->op_type = pba_strdup(&ex->a, op);
    np->name = pba_strdup(&ex->a, name);
    np->input = strs(ex, nin, in);
    np->n_input = (size_t)nin;
    np->output = strs(ex, nout, out);
    np->n_output = (size_t)nout;
    if (!np->op_type || !np->name || !np->input || !np->output)
        return NULL;
    ex->nodes[ex->n_nodes++] = np;
    return np;
}

Onnx__NodeProto *fxon_ex_last(fxon_ex *ex)
{
    return ex->n_nodes ? ex->nodes[ex->n_nodes - 1] : NULL;
}

const char *fxon_ex_op(fxon_ex *ex, const char *op, const char *node, const char *out, int nin,
                       const char *const *in)
{
    if (!out)
        out = fxon_ex_tmp(ex, node, op);
    if (!out || !fxon_ex_node(ex, op, out, nin, in, 1, &out))
        return NULL;
    return out;
}

static Onnx__AttributeProto *attr_new(fxon_ex *ex, Onnx__NodeProto *np, const char *name,
                                      Onnx__AttributeProto__AttributeType type)
{
    if (!np)
        return NULL;
    Onnx__AttributeProto *at = PBA_NEW(&ex->a, Onnx__AttributeProto, onnx__attribute_proto__init);
    Onnx__AttributeProto **arr = pba_array(&ex->a, np->n_attribute + 1, sizeof *arr);
    if (!at || !arr)
        return NULL;
    if (np->n_attribute)
        memcpy(arr, np->attribute, np->n_attribute * sizeof *arr);
    at->name = pba_strdup(&ex->a, name);
    at->has_type = 1;
    at->type = type;
    arr[np->n_attribute] = at;
    np->attribute = arr;
    np->n_attribute++;
    return at;
}

void fxon_ex_attr_i(fxon_ex *ex, Onnx__NodeProto *np, const char *name, int64_t v)
{
    Onnx__AttributeProto *at = attr_new(ex, np, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (at) {
        at->has_i = 1;
        at->i = v;
    }
}

void fxon_ex_attr_f(fxon_ex *ex, Onnx__NodeProto *np, const char *name, float v)
{
    Onnx__AttributeProto *at = attr_new(ex, np, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (at) {
        at->has_f = 1;
        at->f = v;
    }
}

void fxon_ex_attr_s(fxon_ex *ex, Onnx__NodeProto *np, const char *name, const char *v)
{
    Onnx__AttributeProto *at =
        attr_new(ex, np, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    char *s = pba_strdup(&ex->a, v);
    if (at && s) {
        at->has_s = 1;
        at->s.data = (uint8_t *)s;
        at->s.len = strlen(s);
    }
}

void fxon_ex_attr_ints(fxon_ex *ex, Onnx__NodeProto *np, const char *name, int n, const int64_t *v)
{
    Onnx__AttributeProto *at = attr_new(ex, np, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *c = pba_array(&ex->a, (size_t)(n ? n : 1), sizeof *c);
    if (at && c) {
        memcpy(c, v, sizeof *c * (size_t)n);
        at->ints = c;
        at->n_ints = (size_t)n;
    }
}

void fxon_ex_attr_strs(fxon_ex *ex, Onnx__NodeProto *np, const char *name, int n,
                       const char *const *v)
{
    Onnx__AttributeProto *at =
        attr_new(ex, np, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
    ProtobufCBinaryData *b = pba_array(&ex->a, (size_t)(n ? n : 1), sizeof *b);
    if (!at || !b)
        return;
    for (int i = 0; i < n; i++) {
        b[i].data = (uint8_t *)pba_strdup(&ex->a, v[i]);
        b[i].len = strlen(v[i]);
    }
    at->strings = b;
    at->n_strings = (size_t)n;
}

/* An initializer of raw little-endian bytes (the host is little-endian:
 * the engine's safetensors code refuses to build otherwise). copy: false
 * when data is arena memory already (weights: not copied twice). */
static const char *init_raw(fxon_ex *ex, const char *name, int32_t type, int ndim,
                            const int64_t *shape, const void *data, size_t nbytes, bool copy)
{
    Onnx__TensorProto *t = PBA_NEW(&ex->a, Onnx__TensorProto, onnx__tensor_proto__init);
    int64_t *dims = pba_array(&ex->a, (size_t)(ndim ? ndim : 1), sizeof *dims);
    uint8_t *raw = copy ? pba_alloc(&ex->a, nbytes ? nbytes : 1) : (uint8_t *)data;
    if (!name || !t || !dims || !raw ||
        !grow(ex, (void ***)&ex->inits, ex->n_inits, &ex->cap_inits))
        return NULL;
    if (ndim) /* a scalar has no shape (NULL): memcpy's source must not be NULL */
        memcpy(dims, shape, sizeof *dims * (size_t)ndim);
    if (copy)
        memcpy(raw, data, nbytes);
    t->name = pba_strdup(&ex->a, name);
    t->dims = dims;
    t->n_dims = (size_t)ndim;
    t->has_data_type = 1;
    t->data_type = type;
    t->has_raw_data = 1;
    t->raw_data.data = raw;
    t->raw_data.len = nbytes;
    ex->inits[ex->n_inits++] = t;
    return t->name;
}

const char *fxon_ex_init_f32(fxon_ex *ex, const char *name, int ndim, const int64_t *shape,
                             const float *data)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return init_raw(ex, name, FXON_FLOAT, ndim, shape, data, (size_t)n * sizeof(float), false);
}

const char *fxon_ex_const_i64(fxon_ex *ex, const char *node, int n, const int64_t *v)
{
    const char *name = fxon_ex_tmp(ex, node, "const");
    return name ? init_raw(ex, name, FXON_INT64, 1, (int64_t[]){n}, v, (size_t)n * sizeof *v, true)
                : NULL;
}

const char *fxon_ex_scalar_f(fxon_ex *ex, const char *node, float v)
{
    const char *name = fxon_ex_tmp(ex, node, "const");
    return name ? init_raw(ex, name, FXON_FLOAT, 0, NULL, &v, sizeof v, true) : NULL;
}

const char *fxon_ex_scalar_i64(fxon_ex *ex, const char *node, int64_t v)
{
    const char *name = fxon_ex_tmp(ex, node, "const");
    return name ? init_raw(ex, name, FXON_INT64, 0, NULL, &v, sizeof v, true) : NULL;
}

const fx_tensor *fxon_ex_param(fxon_ex *ex, const char *node, const char *param)
{
    char full[600];
    snprintf(full, sizeof full, "%s.%s", node, param);
    return fx_params_find(ex->params, full);
}

float *fxon_ex_param_data(fxon_ex *ex, const Fluxion__V1__Node *n, const char *param,
                          int64_t *numel)
{
    const fx_tensor *t = fxon_ex_param(ex, n->name, param);
    if (!t || t->dtype != FX_F32) {
        fxon_ex_fail(ex, n, "weight '%s.%s' %s", n->name, param, t ? "is not F32" : "is missing");
        return NULL;
    }
    int64_t cnt = fx_tensor_numel(t);
    float *d = pba_array(&ex->a, (size_t)(cnt ? cnt : 1), sizeof *d);
    if (!d)
        return NULL;
    if (fx_tensor_to_host(t, d, (size_t)cnt * sizeof *d) != FX_OK) {
        fxon_ex_fail(ex, n, "cannot read weight '%s.%s'", n->name, param);
        return NULL;
    }
    if (numel)
        *numel = cnt;
    return d;
}

const char *fxon_ex_param_init(fxon_ex *ex, const Fluxion__V1__Node *n, const char *param)
{
    const fx_tensor *t = fxon_ex_param(ex, n->name, param);
    float *d = fxon_ex_param_data(ex, n, param, NULL);
    const char *name = d ? pba_printf(&ex->a, "%s.%s", n->name, param) : NULL;
    return name ? fxon_ex_init_f32(ex, name, t->ndim, t->shape, d) : NULL;
}

/* --------------------------------------------------- spec attributes */

const Fluxion__V1__AttrValue *fxon_ex_attr(const Fluxion__V1__Node *n, const char *name)
{
    for (size_t i = 0; i < n->n_attrs; i++)
        if (n->attrs[i]->key && strcmp(n->attrs[i]->key, name) == 0)
            return n->attrs[i]->value;
    return NULL;
}

int64_t fxon_ex_ai(const Fluxion__V1__Node *n, const char *name, int64_t def)
{
    const Fluxion__V1__AttrValue *v = fxon_ex_attr(n, name);
    if (!v)
        return def;
    if (v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_F)
        return (int64_t)v->f;
    return v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_I ? v->i : def;
}

double fxon_ex_af(const Fluxion__V1__Node *n, const char *name, double def)
{
    const Fluxion__V1__AttrValue *v = fxon_ex_attr(n, name);
    if (!v)
        return def;
    if (v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_I)
        return (double)v->i;
    return v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_F ? v->f : def;
}

bool fxon_ex_ab(const Fluxion__V1__Node *n, const char *name, bool def)
{
    const Fluxion__V1__AttrValue *v = fxon_ex_attr(n, name);
    return v && v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_B ? v->b : def;
}

const char *fxon_ex_as(const Fluxion__V1__Node *n, const char *name, const char *def)
{
    const Fluxion__V1__AttrValue *v = fxon_ex_attr(n, name);
    return v && v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_S ? v->s : def;
}

int fxon_ex_aints(const Fluxion__V1__Node *n, const char *name, const int64_t **vals)
{
    const Fluxion__V1__AttrValue *v = fxon_ex_attr(n, name);
    if (!v || v->value_case != FLUXION__V1__ATTR_VALUE__VALUE_INTS || !v->ints)
        return 0;
    *vals = v->ints->values;
    return (int)v->ints->n_values;
}

bool fxon_ex_apair(const Fluxion__V1__Node *n, const char *name, int64_t def, int64_t hw[2])
{
    const Fluxion__V1__AttrValue *v = fxon_ex_attr(n, name);
    hw[0] = hw[1] = def;
    if (!v)
        return false;
    if (v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_INTS && v->ints && v->ints->n_values) {
        hw[0] = v->ints->values[0];
        hw[1] = v->ints->values[v->ints->n_values > 1 ? 1 : 0];
    } else {
        hw[0] = hw[1] = fxon_ex_ai(n, name, def);
    }
    return true;
}

/* ------------------------------------------------------------- graph */

/* A reference resolved: a graph input (node < 0, index k) or node's K-th
 * output. */
typedef struct {
    int node, k;
} ref;

typedef struct {
    const Fluxion__V1__ModelSpec *spec;
    int *nout;  /* per node */
    int *first; /* per node: index of its output 0 in the augmented outputs */
    int total;  /* node outputs */
} layout;

static int find_node(const Fluxion__V1__ModelSpec *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n_nodes; i++)
        if (strlen(s->nodes[i]->name) == len && memcmp(s->nodes[i]->name, name, len) == 0)
            return (int)i;
    return -1;
}

/* The graph's rule (docs/model-spec.md "References"); the spec is valid. */
static ref resolve(const Fluxion__V1__ModelSpec *s, const char *r)
{
    for (size_t i = 0; i < s->n_inputs; i++)
        if (strcmp(s->inputs[i]->name, r) == 0)
            return (ref){-1, (int)i};
    const char *c = strrchr(r, ':');
    if (c && c[1]) {
        int n = find_node(s, r, (size_t)(c - r));
        if (n >= 0)
            return (ref){n, atoi(c + 1)};
    }
    return (ref){find_node(s, r, strlen(r)), 0};
}

static int node_nout(const Fluxion__V1__Node *n)
{
    if (strcmp(n->op, "split") == 0) {
        const int64_t *v;
        return fxon_ex_aints(n, "sizes", &v);
    }
    if (strcmp(n->op, "rnn") == 0 || strcmp(n->op, "gru") == 0)
        return 2;
    return strcmp(n->op, "lstm") == 0 ? 3 : 1;
}

static fxon_xconv_fn find_conv(const char *op, bool *known)
{
    const fxon_xconv *tabs[] = {fxon_ex_layer_convs, fxon_ex_op_convs};
    for (int t = 0; t < 2; t++)
        for (const fxon_xconv *c = tabs[t]; c->op; c++)
            if (strcmp(c->op, op) == 0) {
                *known = true;
                return c->fn;
            }
    *known = false;
    return NULL;
}

static bool is_loss(const char *op)
{
    static const char *const losses[] = {"mse_loss",        "cross_entropy", "cross_entropy_soft",
                                         "bce_with_logits", "ctc_loss",      NULL};
    for (int i = 0; losses[i]; i++)
        if (strcmp(op, losses[i]) == 0)
            return true;
    return false;
}

static Onnx__ValueInfoProto *value_info(fxon_ex *ex, const char *name, fx_dtype dt, int ndim,
                                        const int64_t *shape)
{
    pba *a = &ex->a;
    Onnx__ValueInfoProto *vi = PBA_NEW(a, Onnx__ValueInfoProto, onnx__value_info_proto__init);
    Onnx__TypeProto *tp = PBA_NEW(a, Onnx__TypeProto, onnx__type_proto__init);
    Onnx__TypeProto__Tensor *tt =
        PBA_NEW(a, Onnx__TypeProto__Tensor, onnx__type_proto__tensor__init);
    Onnx__TensorShapeProto *sh = PBA_NEW(a, Onnx__TensorShapeProto, onnx__tensor_shape_proto__init);
    Onnx__TensorShapeProto__Dimension **dims =
        pba_array(a, (size_t)(ndim ? ndim : 1), sizeof *dims);
    if (!vi || !tp || !tt || !sh || !dims)
        return NULL;
    for (int i = 0; i < ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = PBA_NEW(a, Onnx__TensorShapeProto__Dimension,
                                                       onnx__tensor_shape_proto__dimension__init);
        if (!d)
            return NULL;
        if (shape[i] >= 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = shape[i];
        } else {
            /* The first free dim is the batch, shared by every input and
             * output; the others (sequence lengths) get their own. */
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = i == 0 ? pba_strdup(a, "batch") : pba_printf(a, "%s_dim%d", name, i);
        }
        dims[i] = d;
    }
    sh->dim = dims;
    sh->n_dim = (size_t)ndim;
    tt->has_elem_type = 1;
    tt->elem_type = dt == FX_I32 ? FXON_INT32 : dt == FX_I64 ? FXON_INT64 : FXON_FLOAT;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = pba_strdup(a, name);
    vi->type = tp;
    return vi;
}

/* The spec with every node output appended to its outputs, so that shape
 * inference reports each one (named "fxon_<k>", with more '_' while a spec
 * output's name starts so). */
static int augment(const Fluxion__V1__ModelSpec *spec, pba *a, layout *lay,
                   Fluxion__V1__ModelSpec *aug)
{
    size_t nn = spec->n_nodes;
    lay->spec = spec;
    lay->nout = pba_array(a, nn + 1, sizeof *lay->nout);
    lay->first = pba_array(a, nn + 1, sizeof *lay->first);
    if (!lay->nout || !lay->first)
        return -1;
    lay->total = 0;
    for (size_t i = 0; i < nn; i++) {
        lay->nout[i] = node_nout(spec->nodes[i]);
        lay->first[i] = lay->total;
        lay->total += lay->nout[i];
    }
    char prefix[64] = "fxon_";
    for (size_t j = 0; j < spec->n_outputs; j++)
        if (strncmp(spec->outputs[j]->name, prefix, strlen(prefix)) == 0 &&
            strlen(prefix) + 2 < sizeof prefix) {
            strcat(prefix, "_");
            j = (size_t)-1; /* again, from the first */
        }
    *aug = *spec;
    aug->n_outputs = spec->n_outputs + (size_t)lay->total;
    aug->outputs = pba_array(a, aug->n_outputs + 1, sizeof *aug->outputs);
    if (!aug->outputs)
        return -1;
    memcpy(aug->outputs, spec->outputs, spec->n_outputs * sizeof *aug->outputs);
    for (size_t i = 0; i < nn; i++)
        for (int k = 0; k < lay->nout[i]; k++) {
            Fluxion__V1__OutputSpec *o =
                PBA_NEW(a, Fluxion__V1__OutputSpec, fluxion__v1__output_spec__init);
            if (!o)
                return -1;
            o->name = pba_printf(a, "%s%d", prefix, lay->first[i] + k);
            o->source = k ? pba_printf(a, "%s:%d", spec->nodes[i]->name, k) : spec->nodes[i]->name;
            aug->outputs[spec->n_outputs + (size_t)lay->first[i] + (size_t)k] = o;
        }
    return 0;
}

/* Post-order of the nodes the roots depend on (iterative: specs may be
 * 10000 nodes deep). state: 0 unseen, 1 on the stack, 2 done. */
static void dfs(const Fluxion__V1__ModelSpec *s, const ref *const *refs, const int *roots,
                int nroots, unsigned char *state, int *order, int *norder, int *stack, int *pos)
{
    for (int r = 0; r < nroots; r++) {
        if (roots[r] < 0 || state[roots[r]])
            continue;
        int sp = 0;
        stack[sp] = roots[r];
        pos[sp++] = 0;
        state[roots[r]] = 1;
        while (sp) {
            int n = stack[sp - 1];
            if ((size_t)pos[sp - 1] < s->nodes[n]->n_inputs) {
                int m = refs[n][pos[sp - 1]++].node;
                if (m >= 0 && !state[m]) {
                    state[m] = 1;
                    stack[sp] = m;
                    pos[sp++] = 0;
                }
                continue;
            }
            state[n] = 2;
            order[(*norder)++] = n;
            sp--;
        }
    }
}

static int pack_model(fxon_ex *ex, const char *model_name, Onnx__ValueInfoProto **gin, int ngin,
                      Onnx__ValueInfoProto **gout, int ngout, uint8_t **out, size_t *out_len)
{
    pba *a = &ex->a;
    Onnx__ModelProto *m = PBA_NEW(a, Onnx__ModelProto, onnx__model_proto__init);
    Onnx__GraphProto *gp = PBA_NEW(a, Onnx__GraphProto, onnx__graph_proto__init);
    Onnx__OperatorSetIdProto *os =
        PBA_NEW(a, Onnx__OperatorSetIdProto, onnx__operator_set_id_proto__init);
    Onnx__OperatorSetIdProto **osa = pba_array(a, 1, sizeof *osa);
    if (!m || !gp || !os || !osa)
        return FXS_RESOURCE_EXHAUSTED;
    os->domain = pba_strdup(a, "");
    os->has_version = 1;
    os->version = FXON_OPSET;
    osa[0] = os;
    m->has_ir_version = 1;
    m->ir_version = FXON_IR_VERSION;
    m->opset_import = osa;
    m->n_opset_import = 1;
    m->producer_name = pba_strdup(a, "fluxion");
    m->graph = gp;
    gp->name = pba_strdup(a, model_name && model_name[0] ? model_name : "model");
    gp->node = ex->nodes;
    gp->n_node = ex->n_nodes;
    gp->initializer = ex->inits;
    gp->n_initializer = ex->n_inits;
    gp->input = gin;
    gp->n_input = (size_t)ngin;
    gp->output = gout;
    gp->n_output = (size_t)ngout;
    if (a->failed)
        return FXS_RESOURCE_EXHAUSTED;
    size_t n = protobuf_c_message_get_packed_size(&m->base);
    if (n >= (size_t)INT32_MAX) {
        snprintf(ex->err, ex->errlen,
                 "the ONNX model would be %zu bytes: over protobuf's 2 GiB "
                 "limit (ONNX's external data is not supported)",
                 n);
        return FXS_INVALID_ARGUMENT;
    }
    if (!(*out = malloc(n ? n : 1)))
        return FXS_RESOURCE_EXHAUSTED;
    *out_len = protobuf_c_message_pack(&m->base, *out);
    return 0;
}

/* The graph g (built from the augmented spec: lay) as ONNX into *out. */
static int convert(fxon_ex *ex, const Fluxion__V1__ModelSpec *spec, const layout *lp,
                   const fxg_graph *g, const char *model_name, uint8_t **out, size_t *out_len)
{
    pba *a = &ex->a;
    const layout lay = *lp;
    size_t nn = spec->n_nodes, no = spec->n_outputs, ni = spec->n_inputs;
    fxon_xval *ins = pba_array(a, ni + 1, sizeof *ins);
    fxon_xval *vals = pba_array(a, (size_t)lay.total + 1, sizeof *vals);
    ref **refs = pba_array(a, nn + 1, sizeof *refs);
    ref *outs = pba_array(a, no + 1, sizeof *outs);
    int *order = pba_array(a, nn + 1, sizeof *order), *stack = pba_array(a, nn + 1, sizeof(int));
    int *pos = pba_array(a, nn + 1, sizeof(int)), *roots = pba_array(a, no + 1, sizeof(int));
    unsigned char *state = pba_array(a, nn + 1, 1), *loss = pba_array(a, nn + 1, 1);
    bool *used_in = pba_array(a, ni + 1, sizeof *used_in), *kept = pba_array(a, no + 1, 1);
    if (!ins || !vals || !refs || !outs || !order || !stack || !pos || !roots || !state || !loss ||
        !used_in || !kept)
        return FXS_RESOURCE_EXHAUSTED;
    for (size_t i = 0; i < ni; i++) {
        const fxg_tensor_info *t = fxg_input(g, (int)i);
        ins[i] = (fxon_xval){.name = spec->inputs[i]->name, .dtype = t->dtype, .ndim = t->ndim};
        memcpy(ins[i].shape, t->shape, sizeof t->shape);
    }
    for (size_t j = 0; j < no; j++)
        outs[j] = resolve(spec, spec->outputs[j]->source);
    for (size_t i = 0; i < nn; i++) {
        const Fluxion__V1__Node *n = spec->nodes[i];
        if (!(refs[i] = pba_array(a, n->n_inputs + 1, sizeof **refs)))
            return FXS_RESOURCE_EXHAUSTED;
        for (size_t k = 0; k < n->n_inputs; k++)
            refs[i][k] = resolve(spec, n->inputs[k]);
        for (int k = 0; k < lay.nout[i]; k++) {
            const fxg_tensor_info *t = fxg_output(g, (int)no + lay.first[i] + k);
            fxon_xval *v = &vals[lay.first[i] + k];
            v->name = k ? pba_printf(a, "%s:%d", n->name, k) : n->name;
            /* A spec output may carry the name of another tensor: that
             * tensor yields the name to the graph output. */
            for (size_t j = 0; v->name && j < no; j++)
                if (strcmp(spec->outputs[j]->name, v->name) == 0 &&
                    (outs[j].node != (int)i || outs[j].k != k))
                    v->name = pba_printf(a, "%s/fx", v->name);
            v->dtype = t->dtype;
            v->ndim = t->ndim;
            memcpy(v->shape, t->shape, sizeof t->shape);
        }
    }
    /* Losses are training-only: the outputs computed from one are left
     * out (and the inputs only they read, labels and targets). */
    int norder = 0;
    for (size_t j = 0; j < no; j++)
        roots[j] = outs[j].node;
    dfs(spec, (const ref *const *)refs, roots, (int)no, state, order, &norder, stack, pos);
    for (int o = 0; o < norder; o++) {
        int i = order[o];
        loss[i] = is_loss(spec->nodes[i]->op);
        for (size_t k = 0; k < spec->nodes[i]->n_inputs; k++)
            if (refs[i][k].node >= 0 && loss[refs[i][k].node])
                loss[i] = 1;
    }
    int nkept = 0;
    for (size_t j = 0; j < no; j++) {
        kept[j] = outs[j].node < 0 || !loss[outs[j].node];
        roots[j] = kept[j] ? outs[j].node : -1;
        nkept += kept[j];
    }
    if (!nkept) {
        int i = outs[0].node;
        for (int o = 0; o < norder; o++)
            if (is_loss(spec->nodes[order[o]]->op)) {
                i = order[o];
                break;
            }
        snprintf(ex->err, ex->errlen,
                 "node '%s' (%s): a loss has no ONNX export (losses are "
                 "training-only: outputs computed from one are left out, and every output of "
                 "this model is)",
                 spec->nodes[i]->name, spec->nodes[i]->op);
        return FXS_INVALID_ARGUMENT;
    }
    memset(state, 0, nn + 1);
    norder = 0;
    dfs(spec, (const ref *const *)refs, roots, (int)no, state, order, &norder, stack, pos);
    for (int o = 0; o < norder; o++) {
        int i = order[o];
        const Fluxion__V1__Node *n = spec->nodes[i];
        bool known;
        fxon_xconv_fn fn = find_conv(n->op, &known);
        if (!fn) {
            snprintf(ex->err, ex->errlen, "node '%s' (%s): %s", n->name, n->op,
                     known ? "this op has no ONNX form" : "unknown op");
            return FXS_INVALID_ARGUMENT;
        }
        fxon_xval *in = pba_array(a, n->n_inputs + 1, sizeof *in);
        if (!in)
            return FXS_RESOURCE_EXHAUSTED;
        for (size_t k = 0; k < n->n_inputs; k++) {
            ref r = refs[i][k];
            if (r.node < 0)
                used_in[r.k] = true;
            in[k] = r.node < 0 ? ins[r.k] : vals[lay.first[r.node] + r.k];
        }
        if (fn(ex, n, in, (int)n->n_inputs, &vals[lay.first[i]], lay.nout[i]) != 0)
            return a->failed ? FXS_RESOURCE_EXHAUSTED : FXS_INVALID_ARGUMENT;
        if (a->failed)
            return FXS_RESOURCE_EXHAUSTED;
    }
    Onnx__ValueInfoProto **gout = pba_array(a, no + 1, sizeof *gout);
    Onnx__ValueInfoProto **gin = pba_array(a, ni + 1, sizeof *gin);
    if (!gout || !gin)
        return FXS_RESOURCE_EXHAUSTED;
    int ngout = 0, ngin = 0;
    for (size_t j = 0; j < no; j++) {
        if (!kept[j])
            continue;
        const char *oname = spec->outputs[j]->name;
        const fxon_xval *src =
            outs[j].node < 0 ? &ins[outs[j].k] : &vals[lay.first[outs[j].node] + outs[j].k];
        if (outs[j].node < 0)
            used_in[outs[j].k] = true;
        if (strcmp(src->name, oname) != 0 &&
            !fxon_ex_op(ex, "Identity", oname, oname, FXON_IN(src->name)))
            return FXS_RESOURCE_EXHAUSTED;
        const fxg_tensor_info *t = fxg_output(g, (int)j);
        if (!(gout[ngout++] = value_info(ex, oname, t->dtype, t->ndim, t->shape)))
            return FXS_RESOURCE_EXHAUSTED;
    }
    for (size_t i = 0; i < ni; i++)
        if (used_in[i] &&
            !(gin[ngin++] = value_info(ex, ins[i].name, ins[i].dtype, ins[i].ndim, ins[i].shape)))
            return FXS_RESOURCE_EXHAUSTED;
    return pack_model(ex, model_name, gin, ngin, gout, ngout, out, out_len);
}

int fxon_export(const Fluxion__V1__ModelSpec *spec, const uint8_t *weights, size_t len,
                const char *model_name, uint8_t **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (errlen)
        err[0] = '\0';
    if (!spec || (!weights && len)) {
        snprintf(err, errlen, "no spec or weights to export");
        return FXS_INVALID_ARGUMENT;
    }
    fxon_ex ex = {.err = err, .errlen = errlen};
    layout lay;
    Fluxion__V1__ModelSpec aug;
    fxg_graph *g = NULL;
    int rc;
    if (augment(spec, &ex.a, &lay, &aug)) {
        pba_free(&ex.a);
        snprintf(err, errlen, "out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    /* The build checks the spec as serving does and infers every node
     * output's shape; the weights then replace the seeded ones. */
    fxg_options opts = {.seed = 1};
    rc = fxg_build(&aug, &opts, &g, err, errlen);
    if (!rc)
        rc = fxg_load_weights(g, weights, len, err, errlen);
    if (!rc) {
        ex.params = fxg_params(g);
        /* protobuf messages stop at 2 GiB: refuse before copying weights. */
        int64_t bytes = fx_params_numel(ex.params) * (int64_t)sizeof(float);
        if (bytes >= (int64_t)INT32_MAX - (1 << 20)) {
            snprintf(err, errlen, "the weights are %lld bytes: over protobuf's 2 GiB limit of "
                     "an ONNX file (ONNX's external data is not supported)", (long long)bytes);
            rc = FXS_INVALID_ARGUMENT;
        } else {
            rc = convert(&ex, spec, &lay, g, model_name, out, out_len);
        }
        if (rc == FXS_RESOURCE_EXHAUSTED && (!err[0] || ex.a.failed))
            snprintf(err, errlen, "out of memory building the ONNX model");
    }
    if (rc) {
        free(*out);
        *out = NULL;
        *out_len = 0;
    }
    fxg_free(g);
    pba_free(&ex.a);
    return rc;
}
