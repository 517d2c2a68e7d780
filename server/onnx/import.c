/*
 * import.c - fxon_import: ONNX ModelProto bytes -> ModelSpec + safetensors.
 *
 * The walk: unpack the ModelProto (protobuf-c), check the sizes and names
 * of everything in it, find the default domain's opset (13..newest), read
 * the initializers as constants, make the graph inputs the spec's inputs,
 * then visit the nodes in topological order and hand each to the
 * converter of its op_type (import_ops.c, import_layers.c) through the API
 * of onnx_internal.h. The graph outputs become the spec's outputs. Every
 * error names what was wrong; a malformed file is an INVALID_ARGUMENT,
 * never a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/import_frame.h"
#include "onnx/import_ops.h"
#include "base/status.h"
#include "base/text.h"

/* The converter of op_type for the model's opset: the entry with the
 * highest min_opset not above it. *older_only: some entry exists, but
 * only for newer opsets. */
static const fxon_converter *find_converter(const char *op_type, int64_t opset, bool *newer_only)
{
    const fxon_converter *best = NULL;
    const fxon_converter *tables[3] = {fxon_ops, fxon_shape_ops, fxon_layer_ops};
    *newer_only = false;
    for (int t = 0; t < 3; t++)
        for (const fxon_converter *c = tables[t]; c && c->op_type; c++) {
            if (strcmp(c->op_type, op_type) != 0)
                continue;
            if (c->min_opset > opset)
                *newer_only = true;
            else if (!best || c->min_opset > best->min_opset)
                best = c;
        }
    return best;
}

/* A name from the file: present, valid UTF-8, at most FXON_MAX_NAME bytes. */
static int check_text(fxon_ctx *cx, const char *what, const char *s, bool required)
{
    if (!s || !s[0])
        return required ? fxon_fail(cx, "%s has an empty name", what) : 0;
    size_t n = strlen(s);
    if (n > FXON_MAX_NAME)
        return fxon_fail(cx, "%s name '%.40s...' is longer than %d bytes", what, s, FXON_MAX_NAME);
    if (fxu_utf8_invalid_at(s, n) != n)
        return fxon_fail(cx, "%s name is not valid UTF-8", what);
    return 0;
}

static int check_names(fxon_ctx *cx, const Onnx__GraphProto *g)
{
    char what[64];
    int rc = 0;
    for (size_t i = 0; !rc && i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        snprintf(what, sizeof what, "node %zu", i);
        if ((rc = check_text(cx, what, n->name, false)) ||
            (rc = check_text(cx, what, n->op_type, true)))
            break;
        if (n->domain && n->domain[0] && (rc = check_text(cx, what, n->domain, false)))
            break;
        if (n->n_input > 4096 || n->n_output > 4096 || n->n_attribute > 1024)
            return fxon_fail(cx, "node %zu has %zu inputs, %zu outputs, %zu attributes (too many)",
                             i, n->n_input, n->n_output, n->n_attribute);
        for (size_t k = 0; !rc && k < n->n_input; k++)
            if (n->input[k] && n->input[k][0]) {
                snprintf(what, sizeof what, "node %zu input %zu", i, k);
                rc = check_text(cx, what, n->input[k], false);
            }
        for (size_t k = 0; !rc && k < n->n_output; k++) {
            snprintf(what, sizeof what, "node %zu output %zu", i, k);
            rc = check_text(cx, what, n->output[k], false);
        }
        for (size_t k = 0; !rc && k < n->n_attribute; k++) {
            snprintf(what, sizeof what, "node %zu attribute %zu", i, k);
            rc = check_text(cx, what, n->attribute[k]->name, true);
        }
    }
    for (size_t i = 0; !rc && i < g->n_initializer; i++) {
        snprintf(what, sizeof what, "initializer %zu", i);
        rc = check_text(cx, what, g->initializer[i]->name, true);
    }
    for (size_t i = 0; !rc && i < g->n_input; i++) {
        snprintf(what, sizeof what, "graph input %zu", i);
        rc = check_text(cx, what, g->input[i]->name, true);
    }
    for (size_t i = 0; !rc && i < g->n_output; i++) {
        snprintf(what, sizeof what, "graph output %zu", i);
        rc = check_text(cx, what, g->output[i]->name, true);
    }
    return rc;
}

/* The default domain's opset from opset_import. */
static int find_opset(fxon_ctx *cx, const Onnx__ModelProto *m)
{
    cx->opset = 0;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[i];
        const char *d = o->domain ? o->domain : "";
        if (strcmp(d, "") == 0 || strcmp(d, "ai.onnx") == 0)
            cx->opset = o->has_version ? o->version : 0;
    }
    if (!cx->opset)
        return fxon_fail(cx, "opset_import has no version for the default domain (\"\" or "
                             "\"ai.onnx\")");
    if (cx->opset < FXON_MIN_OPSET || cx->opset > FXON_MAX_OPSET)
        return fxon_fail(cx,
                         "opset %lld is not supported (opsets %d to %d are; with PyTorch, "
                         "export with opset_version=%d or newer)",
                         (long long)cx->opset, FXON_MIN_OPSET, FXON_MAX_OPSET, FXON_MIN_OPSET);
    return 0;
}

static Fluxion__V1__DataType spec_dtype(int elem)
{
    return elem == FXON_FLOAT   ? FLUXION__V1__DATA_TYPE__FP32
           : elem == FXON_INT32 ? FLUXION__V1__DATA_TYPE__INT32
           : elem == FXON_INT64 ? FLUXION__V1__DATA_TYPE__INT64
                                : 0;
}

/* Initializers -> constants; graph inputs that are not initializers -> the
 * spec's inputs; node outputs -> undefined values; value_info -> shapes;
 * then the use counts. */
static int make_values(fxon_ctx *cx, const Onnx__GraphProto *g, Fluxion__V1__ModelSpec *spec)
{
    int rc;
    char what[600];
    cx->impl->reading_initializers = true;
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *t = g->initializer[i];
        fxon_const *c;
        snprintf(what, sizeof what, "initializer '%.200s'", t->name);
        fxon_value *v = fxon__value_new(cx, t->name);
        if (!v)
            return FXS_INVALID_ARGUMENT;
        if ((rc = fxon__tensor_const(cx, t, what, &c)))
            return rc;
        v->c = c;
        v->elem = c->elem;
        v->ndim = c->ndim;
        memcpy(v->shape, c->shape, sizeof v->shape);
        v->initializer = true;
    }
    cx->impl->reading_initializers = false;
    spec->inputs = fxon_alloc(cx, sizeof *spec->inputs * (g->n_input + 1));
    if (!spec->inputs)
        return FXS_RESOURCE_EXHAUSTED;
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        if (fxon_value_of(cx, vi->name)) {
            fxon_value *v = fxon_value_of(cx, vi->name);
            if (v->initializer)
                continue; /* IR < 4 lists initializers as inputs too */
            return fxon_fail(cx, "graph input '%.200s' is listed twice", vi->name);
        }
        if (strlen(vi->name) > 256)
            return fxon_fail(cx, "graph input '%.40s...': longer than 256 bytes", vi->name);
        fxon_value *v = fxon__value_new(cx, vi->name);
        if (!v)
            return FXS_INVALID_ARGUMENT;
        fxon__value_info(vi, &v->elem, &v->ndim, v->shape);
        if (v->ndim < 0)
            return fxon_fail(cx,
                             "graph input '%.200s' has no shape (the engine needs its rank; "
                             "name dynamic dims with dim_param)",
                             vi->name);
        if (!spec_dtype(v->elem))
            return fxon_fail(cx,
                             "graph input '%.200s': element type %d is not supported (float, "
                             "int32 and int64 are)",
                             vi->name, v->elem);
        Fluxion__V1__TensorSpec *ts = fxon_alloc(cx, sizeof *ts);
        int64_t *shape = fxon_alloc(cx, sizeof *shape * (size_t)(v->ndim + 1));
        if (!ts || !shape)
            return FXS_RESOURCE_EXHAUSTED;
        fluxion__v1__tensor_spec__init(ts);
        ts->name = (char *)v->name;
        ts->dtype = spec_dtype(v->elem);
        memcpy(shape, v->shape, sizeof *shape * (size_t)v->ndim);
        ts->shape = shape;
        ts->n_shape = (size_t)v->ndim;
        v->ref = v->name;
        if (!fxon__name_take(cx, v->name))
            return fxon_oom(cx);
        if (!cx->impl->graph_inputs &&
            !(cx->impl->graph_inputs = fxon_alloc(cx, sizeof(fxon_value *) * (g->n_input + 1))))
            return FXS_RESOURCE_EXHAUSTED;
        cx->impl->graph_inputs[cx->impl->n_graph_inputs++] = v;
        spec->inputs[spec->n_inputs++] = ts;
    }
    if (!spec->n_inputs)
        return fxon_fail(cx, "the graph has no inputs other than initializers");
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        for (size_t k = 0; k < n->n_output; k++) {
            if (!n->output[k] || !n->output[k][0])
                continue; /* an omitted optional output */
            if (fxon_value_of(cx, n->output[k]))
                return fxon_fail(cx, "value '%.200s' is defined twice (node %zu's output %zu)",
                                 n->output[k], i, k);
            fxon_value *v = fxon__value_new(cx, n->output[k]);
            if (!v)
                return FXS_INVALID_ARGUMENT;
            v->producer = (int)i;
        }
    }
    for (size_t i = 0; i < g->n_value_info + g->n_output; i++) {
        const Onnx__ValueInfoProto *vi =
            i < g->n_value_info ? g->value_info[i] : g->output[i - g->n_value_info];
        fxon_value *v = vi->name ? fxon_value_of(cx, vi->name) : NULL;
        if (v && v->producer >= 0)
            fxon__value_info(vi, &v->elem, &v->ndim, v->shape);
    }
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        for (size_t k = 0; k < n->n_input; k++) {
            if (!n->input[k] || !n->input[k][0])
                continue;
            fxon_value *v = fxon_value_of(cx, n->input[k]);
            if (!v)
                return fxon_fail(cx,
                                 "node %zu ('%.200s', %.64s): input '%.200s' is not a graph "
                                 "input, an initializer or a node's output",
                                 i, n->name ? n->name : "", n->op_type, n->input[k]);
            v->uses++;
        }
    }
    for (size_t i = 0; i < g->n_output; i++) {
        fxon_value *v = fxon_value_of(cx, g->output[i]->name);
        if (!v)
            return fxon_fail(cx, "graph output '%.200s' is not computed by the graph",
                             g->output[i]->name);
        v->uses++;
    }
    return 0;
}

/* Kahn's algorithm with a min-heap of ready nodes (ties in file order);
 * a cycle is an error naming a node on it. */
static void heap_push(int *h, size_t *n, int v)
{
    size_t i = (*n)++;
    for (; i && h[(i - 1) / 2] > v; i = (i - 1) / 2)
        h[i] = h[(i - 1) / 2];
    h[i] = v;
}

static int heap_pop(int *h, size_t *n)
{
    int top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1] < h[c])
            c++;
        if (h[c] >= last)
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static int topo_order(fxon_ctx *cx, const Onnx__GraphProto *g, int *order)
{
    size_t nn = g->n_node, ne = 0;
    for (size_t i = 0; i < nn; i++)
        ne += g->node[i]->n_input;
    int *indeg = calloc(nn + 1, sizeof *indeg), *start = calloc(nn + 2, sizeof *start);
    int *edges = calloc(ne + 1, sizeof *edges), *heap = calloc(nn + 1, sizeof *heap);
    int rc = 0;
    if (!indeg || !start || !edges || !heap) {
        rc = fxon_oom(cx);
        goto out;
    }
    /* CSR of producer -> consumer edges. */
    for (size_t i = 0; i < nn; i++)
        for (size_t k = 0; k < g->node[i]->n_input; k++) {
            fxon_value *v = fxon_value_of(cx, fxon_in(g->node[i], (int)k));
            if (v && v->producer >= 0) {
                indeg[i]++;
                start[v->producer + 1]++;
            }
        }
    for (size_t i = 0; i < nn; i++)
        start[i + 1] += start[i];
    int *fill = calloc(nn + 1, sizeof *fill);
    if (!fill) {
        rc = fxon_oom(cx);
        goto out;
    }
    for (size_t i = 0; i < nn; i++)
        for (size_t k = 0; k < g->node[i]->n_input; k++) {
            fxon_value *v = fxon_value_of(cx, fxon_in(g->node[i], (int)k));
            if (v && v->producer >= 0)
                edges[start[v->producer] + fill[v->producer]++] = (int)i;
        }
    free(fill);
    size_t hn = 0, done = 0;
    for (size_t i = 0; i < nn; i++)
        if (!indeg[i])
            heap_push(heap, &hn, (int)i);
    while (hn) {
        int i = heap_pop(heap, &hn);
        order[done++] = i;
        for (int e = start[i]; e < start[i + 1]; e++)
            if (--indeg[edges[e]] == 0)
                heap_push(heap, &hn, edges[e]);
    }
    if (done < nn) {
        size_t i = 0;
        while (i < nn && indeg[i] == 0)
            i++;
        const Onnx__NodeProto *n = g->node[i < nn ? i : 0];
        rc = fxon_fail(cx, "the graph has a cycle through node '%.200s' (%.64s)",
                       n->name && n->name[0] ? n->name
                       : n->n_output         ? n->output[0]
                                             : "",
                       n->op_type);
    }
out:
    free(indeg);
    free(start);
    free(edges);
    free(heap);
    return rc;
}

static int convert_node(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    cx->node = n;
    if (!n->n_output || !n->output[0] || !n->output[0][0])
        return fxon_fail(cx, "the node has no output");
    const char *dom = n->domain ? n->domain : "";
    if (dom[0] && strcmp(dom, "ai.onnx") != 0)
        return fxon_fail(cx, "domain '%.64s' is not supported (only the default ONNX domain is)",
                         dom);
    bool newer_only;
    const fxon_converter *c = find_converter(n->op_type, cx->opset, &newer_only);
    if (!c)
        return fxon_fail(cx, newer_only
                                 ? "this operator is not supported at this opset"
                                 : "operator not supported (docs/onnx.md lists those that are)");
    int rc = c->fn(cx, n);
    if (rc)
        return rc;
    for (size_t k = 0; k < n->n_output; k++) {
        fxon_value *v = fxon_value_of(cx, n->output[k]);
        if (v && !v->ref && !v->c && v->uses)
            return fxon_fail(cx, "output %zu ('%.200s') is not supported (it is used)", k, v->name);
    }
    cx->node = NULL;
    return 0;
}

static int make_outputs(fxon_ctx *cx, const Onnx__GraphProto *g, Fluxion__V1__ModelSpec *spec)
{
    spec->outputs = fxon_alloc(cx, sizeof *spec->outputs * (g->n_output + 1));
    if (!spec->outputs)
        return FXS_RESOURCE_EXHAUSTED;
    if (!g->n_output)
        return fxon_fail(cx, "the graph has no outputs");
    for (size_t i = 0; i < g->n_output; i++) {
        const char *name = g->output[i]->name;
        fxon_value *v = fxon_value_of(cx, name);
        if (strlen(name) > 256)
            return fxon_fail(cx, "graph output '%.40s...': longer than 256 bytes", name);
        if (!v->ref)
            return fxon_fail(cx,
                             "graph output '%.200s' is a constant (the engine's outputs are "
                             "computed tensors)",
                             name);
        Fluxion__V1__OutputSpec *o = fxon_alloc(cx, sizeof *o);
        if (!o)
            return FXS_RESOURCE_EXHAUSTED;
        fluxion__v1__output_spec__init(o);
        o->name = (char *)name;
        o->source = (char *)v->ref;
        for (size_t j = 0; j < spec->n_outputs; j++)
            if (strcmp(spec->outputs[j]->name, name) == 0)
                return fxon_fail(cx, "graph output '%.200s' is listed twice", name);
        spec->outputs[spec->n_outputs++] = o;
    }
    return 0;
}

/* The spec built in the arena, copied into one malloc'd message. */
static int finish_spec(fxon_ctx *cx, Fluxion__V1__ModelSpec *spec, Fluxion__V1__ModelSpec **out)
{
    spec->nodes = cx->impl->nodes;
    spec->n_nodes = cx->impl->n_nodes;
    size_t len = fluxion__v1__model_spec__get_packed_size(spec);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return fxon_oom(cx);
    fluxion__v1__model_spec__pack(spec, buf);
    *out = fluxion__v1__model_spec__unpack(NULL, len, buf);
    free(buf);
    spec->nodes = NULL;
    spec->n_nodes = 0;
    return *out ? 0 : fxon_oom(cx);
}

int fxon_import(const uint8_t *onnx, size_t len, Fluxion__V1__ModelSpec **spec_out,
                uint8_t **weights, size_t *weights_len, char *err, size_t errlen)
{
    fxon_ctx cx = {.err = err, .errlen = errlen};
    *spec_out = NULL;
    *weights = NULL;
    *weights_len = 0;
    if (err && errlen)
        err[0] = 0;
    if (!onnx || !len)
        return fxon_fail(&cx, "the ONNX file is empty");
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, onnx);
    if (!m)
        return fxon_fail(&cx,
                         "the file is not an ONNX model (a ModelProto does not parse from "
                         "its %zu bytes)",
                         len);
    int rc = fxon__frame_init(&cx);
    const Onnx__GraphProto *g = m->graph;
    int *order = NULL;
    Fluxion__V1__ModelSpec spec = FLUXION__V1__MODEL_SPEC__INIT;
    if (!rc && !g)
        rc = fxon_fail(&cx, "the model has no graph");
    if (!rc && g->n_node > FXON_MAX_NODES)
        rc = fxon_fail(&cx, "the graph has %zu nodes (at most %d)", g->n_node, FXON_MAX_NODES);
    if (!rc && g->n_sparse_initializer)
        rc = fxon_fail(&cx, "sparse initializers are not supported");
    if (!rc)
        cx.impl->graph = g;
    if (!rc)
        rc = find_opset(&cx, m);
    if (!rc)
        rc = check_names(&cx, g);
    if (!rc)
        rc = make_values(&cx, g, &spec);
    if (!rc && !(order = malloc(sizeof *order * (g->n_node + 1))))
        rc = fxon_oom(&cx);
    if (!rc)
        rc = topo_order(&cx, g, order);
    for (size_t i = 0; !rc && i < g->n_node; i++)
        rc = convert_node(&cx, g->node[order[i]]);
    if (!rc)
        rc = make_outputs(&cx, g, &spec);
    if (!rc && !cx.impl->n_nodes)
        rc = fxon_fail(&cx, "the graph computes nothing the engine can run (no nodes left)");
    if (!rc)
        rc = finish_spec(&cx, &spec, spec_out);
    if (!rc && (rc = fxon__encode_weights(&cx, weights, weights_len)) != 0) {
        protobuf_c_message_free_unpacked(&(*spec_out)->base, NULL);
        *spec_out = NULL;
    }
    free(order);
    fxon__frame_free(&cx);
    onnx__model_proto__free_unpacked(m, NULL);
    return rc;
}
