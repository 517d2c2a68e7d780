/*
 * graph.c - a model built from a ModelSpec: validation (everything is
 * checked before any parameter is allocated), instantiation in node order
 * with one seeded generator, shape inference by probing, the forward pass,
 * and weights in and out as safetensors. The ops themselves are in
 * graph_ops.c.
 */
#include "models/graph_internal.h"
#include "base/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 256
#define DEFAULT_MAX_PARAMS (UINT64_C(1) << 30)
#define DEFAULT_MAX_NODES 10000
/* Elements of one input's fixed dims: beyond this a request could not be
 * served anyway, and products of sizes stay far from overflow. */
#define INPUT_MAX_NUMEL (INT64_C(1) << 31)
#define MAX_ATTRS 32 /* per op schema */

struct fxg_graph {
    int nin;
    fxg_tensor_info *inputs;
    bool *in_is_lengths; /* integer inputs read as lengths: probe with 1 */
    int nnodes;
    fxg_node *nodes;     /* spec order */
    int *order;          /* topological order of node indices */
    int nslots, max_node_in;
    int nout;
    fxg_tensor_info *outputs;
    int *out_slot;
    fx_params params, trainable;
    fx_device device;    /* of every parameter and buffer */
};

/* ----------------------------------------------------------------- errors */


/* The graph under construction and where its errors go. */
typedef struct {
    fxg_graph *g;
    const Fluxion__V1__ModelSpec *spec;
    char *err;
    size_t errlen;
    bool nomem;
} builder;

static int nomem(builder *b, const char *what)
{
    b->nomem = true;
    return fxu_fail(b->err, b->errlen, -1, "out of memory (%s)", what);
}

/* --------------------------------------------------------------- freeing */

static void free_node(fxg_node *n)
{
    if (n->attrs)
        for (int i = 0; n->op->attrs[i].name; i++)
            free(n->attrs[i].v);
    free(n->attrs);
    free(n->in_slot);
    free(n->name);
    fx_layer_free(n->layer);
}

void fxg_free(fxg_graph *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->nin; i++)
        free((char *)g->inputs[i].name);
    for (int i = 0; i < g->nout; i++)
        free((char *)g->outputs[i].name);
    for (int i = 0; g->nodes && i < g->nnodes; i++)
        free_node(&g->nodes[i]);
    fx_params_clear(&g->params);
    fx_params_clear(&g->trainable);
    free(g->inputs);
    free(g->in_is_lengths);
    free(g->nodes);
    free(g->order);
    free(g->outputs);
    free(g->out_slot);
    free(g);
}

/* ------------------------------------------------------------ dtype/shape */

static bool dtype_of(Fluxion__V1__DataType d, fx_dtype *out)
{
    switch (d) {
    case FLUXION__V1__DATA_TYPE__DATA_TYPE_UNSPECIFIED:
    case FLUXION__V1__DATA_TYPE__FP32: *out = FX_F32; return true;
    case FLUXION__V1__DATA_TYPE__INT32: *out = FX_I32; return true;
    case FLUXION__V1__DATA_TYPE__INT64: *out = FX_I64; return true;
    default: return false;
    }
}

static const char *dims_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

static int check_name(builder *b, const char *what, const char *name, bool is_node)
{
    if (!name || !name[0])
        return fxu_fail(b->err, b->errlen, -1, "%s has an empty name", what);
    if (strlen(name) > NAME_MAX_LEN)
        return fxu_fail(b->err, b->errlen, -1, "%s name '%.40s...' is longer than %d characters",
                        what, name, NAME_MAX_LEN);
    /* '.' separates parameter names, ':' selects an output. */
    if (is_node && strpbrk(name, ".:"))
        return fxu_fail(b->err, b->errlen, -1,
                        "node name '%s' contains '%c' (reserved for parameter "
                        "names and output references)",
                        name, *strpbrk(name, ".:"));
    return 0;
}

static int parse_inputs(builder *b)
{
    fxg_graph *g = b->g;
    const Fluxion__V1__ModelSpec *s = b->spec;
    g->inputs = calloc(s->n_inputs ? s->n_inputs : 1, sizeof *g->inputs);
    g->in_is_lengths = calloc(s->n_inputs ? s->n_inputs : 1, sizeof *g->in_is_lengths);
    if (!g->inputs || !g->in_is_lengths)
        return nomem(b, "inputs");
    for (size_t i = 0; i < s->n_inputs; i++) {
        const Fluxion__V1__TensorSpec *t = s->inputs[i];
        if (!t)
            return fxu_fail(b->err, b->errlen, -1, "input %zu is missing", i);
        if (check_name(b, "input", t->name, false))
            return -1;
        fxg_tensor_info *info = &g->inputs[i];
        if (!dtype_of(t->dtype, &info->dtype))
            return fxu_fail(b->err, b->errlen, -1,
                            "input '%s': dtype %d is not supported (FP32, INT32, "
                            "INT64)",
                            t->name, (int)t->dtype);
        if (t->n_shape > FX_MAX_DIMS)
            return fxu_fail(b->err, b->errlen, -1, "input '%s': %zu dims, at most %d are supported",
                            t->name, t->n_shape, FX_MAX_DIMS);
        int64_t fixed = 1;
        for (size_t d = 0; d < t->n_shape; d++) {
            int64_t v = t->shape[d];
            if (v == 0 || v < -1)
                return fxu_fail(b->err, b->errlen, -1,
                                "input '%s': dim %zu is %lld; sizes are >= 1, "
                                "or -1 for any size",
                                t->name, d, (long long)v);
            fixed = v > 0 ? fxg_mul(fixed, v) : fixed;
            if (fixed < 0 || fixed > INPUT_MAX_NUMEL)
                return fxu_fail(b->err, b->errlen, -1,
                                "input '%s': its fixed dims hold more than %lld "
                                "elements",
                                t->name, (long long)INPUT_MAX_NUMEL);
            info->shape[d] = v;
        }
        info->ndim = (int)t->n_shape;
        if (!(info->name = strdup(t->name)))
            return nomem(b, "input name");
        g->nin++;
    }
    return 0;
}

/* ------------------------------------------------------------ attributes */

static const char *attr_type_name(fxg_attr_type t)
{
    static const char *names[] = { "an int", "a float", "a bool", "a string", "a list of ints",
                                   "an int or a list of 1 or 2 ints" };
    return names[t];
}

static const char *value_case_name(Fluxion__V1__AttrValue__ValueCase c)
{
    switch (c) {
    case FLUXION__V1__ATTR_VALUE__VALUE_I: return "an int";
    case FLUXION__V1__ATTR_VALUE__VALUE_F: return "a float";
    case FLUXION__V1__ATTR_VALUE__VALUE_S: return "a string";
    case FLUXION__V1__ATTR_VALUE__VALUE_B: return "a bool";
    case FLUXION__V1__ATTR_VALUE__VALUE_INTS: return "a list of ints";
    case FLUXION__V1__ATTR_VALUE__VALUE_FLOATS: return "a list of floats";
    case FLUXION__V1__ATTR_VALUE__VALUE_STRINGS: return "a list of strings";
    default: return "no value";
    }
}

static int range_fail(builder *b, const fxg_node *n, const fxg_attr_schema *s, double v)
{
    return fxu_fail(b->err, b->errlen, -1,
                    "node '%s' (%s): attribute '%s' is %.17g, outside [%.17g, "
                    "%.17g]",
                    n->name, n->op->name, s->name, v, s->min, s->max);
}

static int check_int(builder *b, const fxg_node *n, const fxg_attr_schema *s, int64_t v)
{
    return (double)v < s->min || (double)v > s->max ? range_fail(b, n, s, (double)v) : 0;
}

/* An int from an int value, or from a float that is exactly an int (JSON
 * clients cannot always tell them apart). */
static bool int_of(const Fluxion__V1__AttrValue *v, int64_t *out)
{
    if (v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_I) {
        *out = v->i;
        return true;
    }
    /* the range first: converting a NaN or a huge double is undefined */
    if (v->value_case == FLUXION__V1__ATTR_VALUE__VALUE_F && v->f >= -9.2e18 && v->f <= 9.2e18 &&
        v->f == (double)(int64_t)v->f) {
        *out = (int64_t)v->f;
        return true;
    }
    return false;
}

static int parse_list(builder *b, const fxg_node *n, const fxg_attr_schema *s,
                      const Fluxion__V1__AttrValue *v, fxg_attr *a)
{
    const Fluxion__V1__IntList *l = v->ints;
    size_t len = l ? l->n_values : 0;
    if (len < (size_t)s->min_len || len > (size_t)s->max_len)
        return fxu_fail(b->err, b->errlen, -1,
                        "node '%s' (%s): attribute '%s' has %zu values, expected "
                        "%d to %d",
                        n->name, n->op->name, s->name, len, s->min_len, s->max_len);
    if (!(a->v = malloc((len ? len : 1) * sizeof *a->v)))
        return nomem(b, "attribute");
    for (size_t i = 0; i < len; i++) {
        if (check_int(b, n, s, l->values[i]))
            return -1;
        a->v[i] = l->values[i];
    }
    a->n = (int)len;
    return 0;
}

static int parse_value(builder *b, const fxg_node *n, const fxg_attr_schema *s,
                       const Fluxion__V1__AttrValue *v, fxg_attr *a)
{
    Fluxion__V1__AttrValue__ValueCase c = v->value_case;
    bool ok = true;
    a->set = true;
    switch (s->type) {
    case AT_INT:
        if ((ok = int_of(v, &a->i)))
            return check_int(b, n, s, a->i);
        break;
    case AT_FLOAT:
        if ((ok = c == FLUXION__V1__ATTR_VALUE__VALUE_F || c == FLUXION__V1__ATTR_VALUE__VALUE_I)) {
            a->f = c == FLUXION__V1__ATTR_VALUE__VALUE_F ? v->f : (double)v->i;
            return a->f >= s->min && a->f <= s->max ? 0 : range_fail(b, n, s, a->f);
        }
        break;
    case AT_BOOL:
        if ((ok = c == FLUXION__V1__ATTR_VALUE__VALUE_B))
            a->i = v->b != 0;
        break;
    case AT_STRING:
        if ((ok = c == FLUXION__V1__ATTR_VALUE__VALUE_S && v->s)) {
            for (int k = 0; s->choices[k]; k++)
                if (strcmp(s->choices[k], v->s) == 0) {
                    a->i = k;
                    return 0;
                }
            char list[256] = "";
            for (int k = 0; s->choices[k]; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "",
                         s->choices[k]);
            return fxu_fail(b->err, b->errlen, -1,
                            "node '%s' (%s): attribute '%s' is '%.64s', expected "
                            "one of %s",
                            n->name, n->op->name, s->name, v->s, list);
        }
        break;
    case AT_INTS:
        if ((ok = c == FLUXION__V1__ATTR_VALUE__VALUE_INTS))
            return parse_list(b, n, s, v, a);
        break;
    case AT_PAIR:
        if (int_of(v, &a->i)) {
            a->i2 = a->i;
        } else if (c == FLUXION__V1__ATTR_VALUE__VALUE_INTS && v->ints &&
                   (v->ints->n_values == 1 || v->ints->n_values == 2)) {
            a->i = v->ints->values[0];
            a->i2 = v->ints->values[v->ints->n_values - 1];
        } else {
            ok = false;
            break;
        }
        return check_int(b, n, s, a->i) || check_int(b, n, s, a->i2) ? -1 : 0;
    }
    if (!ok)
        return fxu_fail(b->err, b->errlen, -1, "node '%s' (%s): attribute '%s' must be %s, got %s",
                        n->name, n->op->name, s->name, attr_type_name(s->type),
                        c == FLUXION__V1__ATTR_VALUE__VALUE_INTS && s->type == AT_PAIR
                            ? "a list of another length"
                            : value_case_name(c));
    return 0;
}

static void set_default(const fxg_attr_schema *s, fxg_attr *a)
{
    a->set = s->has_default;
    a->f = s->def;
    a->i = a->i2 = (int64_t)s->def;
}

static int parse_attrs(builder *b, fxg_node *n, const Fluxion__V1__Node *spec)
{
    const fxg_attr_schema *schema = n->op->attrs;
    int na = 0;
    while (schema[na].name)
        na++;
    if (na > MAX_ATTRS)
        return fxu_fail(b->err, b->errlen, -1, "internal error: op '%s' has too many attributes",
                        n->op->name);
    if (!(n->attrs = calloc(na ? (size_t)na : 1, sizeof *n->attrs)))
        return nomem(b, "attributes");
    bool given[MAX_ATTRS] = {false};
    for (int k = 0; k < na; k++)
        set_default(&schema[k], &n->attrs[k]);
    for (size_t e = 0; e < spec->n_attrs; e++) {
        const Fluxion__V1__Node__AttrsEntry *entry = spec->attrs[e];
        const char *key = entry && entry->key ? entry->key : "";
        int k = 0;
        while (k < na && strcmp(schema[k].name, key) != 0)
            k++;
        if (k == na) {
            char list[256] = "";
            for (int j = 0; j < na; j++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? ", " : "",
                         schema[j].name);
            return fxu_fail(b->err, b->errlen, -1,
                            "node '%s' (%s): unknown attribute '%.64s' (%s%s)", n->name,
                            n->op->name, key, na ? "known: " : "it takes none", list);
        }
        if (given[k])
            return fxu_fail(b->err, b->errlen, -1, "node '%s' (%s): attribute '%s' is given twice",
                            n->name, n->op->name, key);
        given[k] = true;
        if (!entry->value || entry->value->value_case == FLUXION__V1__ATTR_VALUE__VALUE__NOT_SET)
            return fxu_fail(b->err, b->errlen, -1, "node '%s' (%s): attribute '%s' has no value",
                            n->name, n->op->name, key);
        if (parse_value(b, n, &schema[k], entry->value, &n->attrs[k]))
            return -1;
    }
    for (int k = 0; k < na; k++)
        if (schema[k].required && !n->attrs[k].set)
            return fxu_fail(b->err, b->errlen, -1,
                            "node '%s' (%s): attribute '%s' (%s) is required", n->name, n->op->name,
                            schema[k].name, attr_type_name(schema[k].type));
    return 0;
}

/* ------------------------------------------------------------------ nodes */

static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int row[65];
    if (la > 64 || lb > 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

static int unknown_op(builder *b, const char *node, const char *op)
{
    char close[192] = "";
    for (const fxg_op *o = fxg_ops; o->name; o++)
        if (edit_distance(op, o->name) <= 2 || (strlen(op) >= 3 && strstr(o->name, op)))
            snprintf(close + strlen(close), sizeof close - strlen(close), "%s%s",
                     close[0] ? ", " : "", o->name);
    return fxu_fail(b->err, b->errlen, -1, "node '%s': unknown op '%.64s'%s%s%s", node, op,
                    close[0] ? " (did you mean " : "", close, close[0] ? "?)" : "");
}

static int parse_node(builder *b, int idx)
{
    const Fluxion__V1__Node *s = b->spec->nodes[idx];
    fxg_node *n = &b->g->nodes[idx];
    if (!s)
        return fxu_fail(b->err, b->errlen, -1, "node %d is missing", idx);
    char what[32];
    snprintf(what, sizeof what, "node %d", idx);
    if (check_name(b, what, s->name, true))
        return -1;
    if (!(n->name = strdup(s->name)))
        return nomem(b, "node name");
    if (!s->op || !s->op[0])
        return fxu_fail(b->err, b->errlen, -1, "node '%s': no op given", n->name);
    if (!(n->op = fxg_find_op(s->op)))
        return unknown_op(b, n->name, s->op);
    int lo = n->op->min_in, hi = n->op->max_in;
    if (s->n_inputs < (size_t)lo || (hi >= 0 && s->n_inputs > (size_t)hi)) {
        char want[48];
        if (hi < 0)
            snprintf(want, sizeof want, "at least %d", lo);
        else if (lo == hi)
            snprintf(want, sizeof want, "%d", lo);
        else
            snprintf(want, sizeof want, "%d to %d", lo, hi);
        return fxu_fail(b->err, b->errlen, -1, "node '%s' (%s): takes %s input%s, got %zu", n->name,
                        n->op->name, want, hi == 1 ? "" : "s", s->n_inputs);
    }
    if (parse_attrs(b, n, s))
        return -1;
    char msg[384];
    if (n->op->check && n->op->check(n, msg, sizeof msg))
        return fxu_fail(b->err, b->errlen, -1, "node '%s' (%s): %s", n->name, n->op->name, msg);
    n->nout = n->op->nout ? n->op->nout(n) : 1;
    n->nin = (int)s->n_inputs;
    if (!(n->in_slot = calloc(s->n_inputs ? s->n_inputs : 1, sizeof *n->in_slot)))
        return nomem(b, "node inputs");
    return 0;
}

/* ------------------------------------------------------- names and refs */

typedef struct {
    const char *name;
    int kind; /* 0 input, 1 node */
    int index;
} name_entry;

static int cmp_entry(const void *pa, const void *pb)
{
    const name_entry *a = pa, *b = pb;
    int c = strcmp(a->name, b->name);
    return c ? c : a->kind != b->kind ? a->kind - b->kind : a->index - b->index;
}

static const name_entry *find_name(const name_entry *t, int n, const char *name)
{
    name_entry key = { name, 0, 0 };
    int lo = 0, hi = n;
    while (lo < hi) { /* first entry >= name */
        int mid = (lo + hi) / 2;
        if (strcmp(t[mid].name, key.name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && strcmp(t[lo].name, name) == 0 ? &t[lo] : NULL;
}

/* Sorted names of inputs and nodes; rejects duplicates and collisions. */
static name_entry *name_table(builder *b, int *count)
{
    fxg_graph *g = b->g;
    int n = g->nin + g->nnodes;
    name_entry *t = malloc((size_t)(n ? n : 1) * sizeof *t);
    if (!t) {
        nomem(b, "name table");
        return NULL;
    }
    for (int i = 0; i < g->nin; i++)
        t[i] = (name_entry){ g->inputs[i].name, 0, i };
    for (int i = 0; i < g->nnodes; i++)
        t[g->nin + i] = (name_entry){ g->nodes[i].name, 1, i };
    qsort(t, (size_t)n, sizeof *t, cmp_entry);
    for (int i = 1; i < n; i++) {
        if (strcmp(t[i - 1].name, t[i].name) != 0)
            continue;
        const char *nm = t[i].name;
        if (t[i - 1].kind != t[i].kind)
            fxu_fail(b->err, b->errlen, -1, "input '%s' and node '%s' share a name", nm, nm);
        else
            fxu_fail(b->err, b->errlen, -1, "duplicate %s name '%s' (%s %d and %d)",
                     t[i].kind ? "node" : "input", nm, t[i].kind ? "nodes" : "inputs",
                     t[i - 1].index, t[i].index);
        free(t);
        return NULL;
    }
    *count = n;
    return t;
}

/* The value slot of a reference "input", "node" or "node:K"; -1 with a
 * message starting with what (e.g. "node 'fc2': input 'x'"). */
static int resolve(builder *b, const name_entry *t, int nt, const char *ref, const char *what)
{
    fxg_graph *g = b->g;
    if (!ref || !ref[0])
        return fxu_fail(b->err, b->errlen, -1, "%s: empty tensor reference", what);
    const name_entry *e = find_name(t, nt, ref);
    if (e)
        return e->kind == 0 ? e->index : g->nodes[e->index].out_slot;
    const char *colon = strrchr(ref, ':');
    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
        colon - ref <= NAME_MAX_LEN) {
        char base[NAME_MAX_LEN + 1];
        memcpy(base, ref, (size_t)(colon - ref));
        base[colon - ref] = '\0';
        e = find_name(t, nt, base);
        if (e && e->kind == 1) {
            const fxg_node *n = &g->nodes[e->index];
            long long k = strlen(colon + 1) > 9 ? -1 : atoll(colon + 1);
            if (k < 0 || k >= n->nout)
                return fxu_fail(b->err, b->errlen, -1,
                                "%s: node '%s' (%s) has %d output%s, no output "
                                "%s",
                                what, n->name, n->op->name, n->nout, n->nout == 1 ? "" : "s",
                                colon + 1);
            return n->out_slot + (int)k;
        }
    }
    return fxu_fail(b->err, b->errlen, -1, "%s: '%.*s' names no graph input or node", what,
                    NAME_MAX_LEN, ref);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorting finds duplicates in n log n (specs may have many outputs). */
static int check_output_names(builder *b)
{
    fxg_graph *g = b->g;
    const char **names = malloc((size_t)g->nout * sizeof *names);
    if (!names)
        return nomem(b, "outputs");
    for (int j = 0; j < g->nout; j++)
        names[j] = g->outputs[j].name;
    qsort(names, (size_t)g->nout, sizeof *names, cmp_str);
    int rc = 0;
    for (int j = 1; j < g->nout && !rc; j++)
        if (strcmp(names[j - 1], names[j]) == 0)
            rc = fxu_fail(b->err, b->errlen, -1, "duplicate output name '%s'", names[j]);
    free(names);
    return rc;
}

static int resolve_all(builder *b)
{
    fxg_graph *g = b->g;
    int slot = g->nin;
    for (int i = 0; i < g->nnodes; i++) {
        g->nodes[i].out_slot = slot;
        slot += g->nodes[i].nout;
        if (g->nodes[i].nin > g->max_node_in)
            g->max_node_in = g->nodes[i].nin;
    }
    g->nslots = slot;
    int nt;
    name_entry *t = name_table(b, &nt);
    if (!t)
        return -1;
    int rc = 0;
    for (int i = 0; i < g->nnodes && !rc; i++) {
        fxg_node *n = &g->nodes[i];
        for (int k = 0; k < n->nin && !rc; k++) {
            char what[NAME_MAX_LEN + 48];
            snprintf(what, sizeof what, "node '%s' (%s), input %d", n->name, n->op->name, k);
            int s = resolve(b, t, nt, b->spec->nodes[i]->inputs[k], what);
            rc = s < 0 ? -1 : 0;
            n->in_slot[k] = s;
        }
    }
    const Fluxion__V1__ModelSpec *spec = b->spec;
    if (!rc && spec->n_outputs == 0)
        rc = fxu_fail(b->err, b->errlen, -1, "the model has no outputs");
    if (!rc && (!(g->outputs = calloc(spec->n_outputs, sizeof *g->outputs)) ||
                !(g->out_slot = calloc(spec->n_outputs, sizeof *g->out_slot))))
        rc = nomem(b, "outputs");
    for (size_t j = 0; !rc && j < spec->n_outputs; j++) {
        const Fluxion__V1__OutputSpec *o = spec->outputs[j];
        if (!o)
            rc = fxu_fail(b->err, b->errlen, -1, "output %zu is missing", j);
        else if (!check_name(b, "output", o->name, false)) {
            char what[NAME_MAX_LEN + 16];
            snprintf(what, sizeof what, "output '%s'", o->name);
            if (!rc && (g->out_slot[j] = resolve(b, t, nt, o->source, what)) < 0)
                rc = -1;
            if (!rc && !(g->outputs[j].name = strdup(o->name)))
                rc = nomem(b, "output name");
            if (!rc)
                g->nout++;
        } else {
            rc = -1;
        }
    }
    free(t);
    return rc ? rc : check_output_names(b);
}

/* --------------------------------------------------------- topology */

/* Node owning a slot, or -1 for a graph input. */
static int owner_of(const fxg_graph *g, const int *slot_owner, int slot)
{
    return slot < g->nin ? -1 : slot_owner[slot - g->nin];
}

/* A cycle among the nodes left with unmet dependencies: walk dependencies
 * from one of them until a node repeats. */
static int report_cycle(builder *b, const int *slot_owner, const int *indeg)
{
    fxg_graph *g = b->g;
    int *pos = malloc((size_t)g->nnodes * sizeof *pos);
    int *path = malloc((size_t)g->nnodes * sizeof *path);
    if (!pos || !path) {
        free(pos);
        free(path);
        return nomem(b, "cycle");
    }
    for (int i = 0; i < g->nnodes; i++)
        pos[i] = -1;
    int cur = 0, len = 0;
    while (indeg[cur] == 0)
        cur++;
    while (pos[cur] < 0) {
        pos[cur] = len;
        path[len++] = cur;
        const fxg_node *n = &g->nodes[cur];
        for (int k = 0; k < n->nin; k++) {
            int o = owner_of(g, slot_owner, n->in_slot[k]);
            if (o >= 0 && indeg[o] > 0) {
                cur = o;
                break;
            }
        }
    }
    /* path[pos[cur]..len) depend on each other in reverse: print the flow. */
    char msg[512];
    size_t k = (size_t)snprintf(msg, sizeof msg, "'%s'", g->nodes[cur].name);
    for (int i = len - 1; i >= pos[cur] && k < sizeof msg; i--)
        k += (size_t)snprintf(msg + k, sizeof msg - k, " -> '%s'", g->nodes[path[i]].name);
    free(pos);
    free(path);
    return fxu_fail(b->err, b->errlen, -1, "the nodes form a cycle: %s", msg);
}

/* Kahn's algorithm; nodes ready at the same time keep the spec's order. */
static int topo_sort(builder *b)
{
    fxg_graph *g = b->g;
    int n = g->nnodes, nslot = g->nslots - g->nin, rc = 0;
    int *slot_owner = malloc((size_t)(nslot ? nslot : 1) * sizeof *slot_owner);
    int *indeg = calloc((size_t)(n ? n : 1), sizeof *indeg);
    int *start = calloc((size_t)n + 1, sizeof *start);
    int nedges = 0;
    for (int i = 0; i < n; i++)
        nedges += g->nodes[i].nin;
    int *users = malloc((size_t)(nedges ? nedges : 1) * sizeof *users);
    g->order = malloc((size_t)(n ? n : 1) * sizeof *g->order);
    if (!slot_owner || !indeg || !start || !users || !g->order) {
        rc = nomem(b, "topological order");
        goto out;
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < g->nodes[i].nout; k++)
            slot_owner[g->nodes[i].out_slot - g->nin + k] = i;
    /* users of node o: users[start[o] .. start[o+1]), counted then filled */
    for (int i = 0; i < n; i++)
        for (int k = 0; k < g->nodes[i].nin; k++) {
            int o = owner_of(g, slot_owner, g->nodes[i].in_slot[k]);
            if (o >= 0) {
                start[o + 1]++;
                indeg[i]++;
            }
        }
    for (int i = 0; i < n; i++)
        start[i + 1] += start[i];
    int *fillpos = g->order; /* borrowed as a cursor before it holds the order */
    for (int i = 0; i < n; i++)
        fillpos[i] = start[i];
    for (int i = 0; i < n; i++)
        for (int k = 0; k < g->nodes[i].nin; k++) {
            int o = owner_of(g, slot_owner, g->nodes[i].in_slot[k]);
            if (o >= 0)
                users[fillpos[o]++] = i;
        }
    int head = 0, tail = 0;
    for (int i = 0; i < n; i++)
        if (indeg[i] == 0)
            g->order[tail++] = i;
    while (head < tail) {
        int o = g->order[head++];
        for (int e = start[o]; e < start[o + 1]; e++)
            if (--indeg[users[e]] == 0)
                g->order[tail++] = users[e];
    }
    if (tail < n)
        rc = report_cycle(b, slot_owner, indeg);
out:
    free(slot_owner);
    free(indeg);
    free(start);
    free(users);
    return rc;
}

/* ------------------------------------------------------------ parameters */

static int count_params(builder *b, uint64_t max_params)
{
    fxg_graph *g = b->g;
    int64_t total = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const fxg_node *n = &g->nodes[i];
        if (!n->op->nparams)
            continue;
        int64_t p = n->op->nparams(n);
        if (p < 0)
            return fxu_fail(b->err, b->errlen, -1, "node '%s' (%s): its parameter count overflows",
                            n->name, n->op->name);
        total = fxg_add(total, p);
        if (total < 0 || (uint64_t)total > max_params)
            return fxu_fail(b->err, b->errlen, -1,
                            "node '%s' (%s): %lld parameters bring the model "
                            "above the limit of %llu parameters",
                            n->name, n->op->name, (long long)p, (unsigned long long)max_params);
    }
    return 0;
}

static int build_layers(builder *b, uint64_t seed)
{
    fxg_graph *g = b->g;
    fx_rng *rng = fx_rng_create(seed);
    if (!rng)
        return nomem(b, "generator");
    int rc = 0;
    for (int i = 0; i < g->nnodes && !rc; i++) {
        fxg_node *n = &g->nodes[i];
        if (!n->op->build)
            continue;
        int before = g->params.count;
        if (!(n->layer = n->op->build(n, rng)))
            rc = nomem(b, n->name); /* validation leaves only allocation to fail */
        else if (fx_layer_collect_params(n->layer, &g->params) != FX_OK)
            rc = nomem(b, "parameter list");
        int64_t numel = 0;
        for (int k = before; !rc && k < g->params.count; k++)
            numel += fx_tensor_numel(g->params.items[k].tensor);
        if (!rc && numel != n->op->nparams(n))
            rc = fxu_fail(b->err, b->errlen, -1,
                          "node '%s' (%s): internal error: %lld parameters made, "
                          "%lld counted",
                          n->name, n->op->name, (long long)numel, (long long)n->op->nparams(n));
    }
    for (int k = 0; !rc && k < g->params.count; k++)
        if (fx_tensor_requires_grad(g->params.items[k].tensor) &&
            fx_params_add(&g->trainable, g->params.items[k].name, g->params.items[k].tensor))
            rc = nomem(b, "parameter list");
    fx_rng_free(rng);
    return rc;
}

/* ---------------------------------------------------------------- forward */

/* Runs the nodes in order; probe: use the ops' shape-only stand-ins. */
static int run(const fxg_graph *g, fx_ctx *ctx, fx_tensor *const *inputs, fx_tensor **outputs,
               bool probe, char *err, size_t errlen)
{
    if (fx_ctx_status(ctx) != FX_OK)
        return fxu_fail(err, errlen, -1, "the context has an earlier error: %s", fx_ctx_error(ctx));
    fx_tensor **vals = calloc((size_t)g->nslots + (size_t)g->max_node_in + 1, sizeof *vals);
    if (!vals)
        return fxu_fail(err, errlen, -1, "out of memory");
    fx_tensor **in = vals + g->nslots;
    if (g->nin)
        memcpy(vals, inputs, (size_t)g->nin * sizeof *vals);
    int rc = 0;
    for (int i = 0; i < g->nnodes && !rc; i++) {
        const fxg_node *n = &g->nodes[g->order[i]];
        for (int k = 0; k < n->nin; k++)
            in[k] = vals[n->in_slot[k]];
        fx_tensor **out = vals + n->out_slot;
        (probe && n->op->probe ? n->op->probe : n->op->forward)(n, ctx, in, out);
        bool made = true;
        for (int k = 0; k < n->nout; k++)
            made = made && out[k];
        if (fx_ctx_status(ctx) != FX_OK || !made)
            rc = fxu_fail(err, errlen, -1, "node '%s' (%s): %s", n->name, n->op->name,
                          fx_ctx_status(ctx) != FX_OK ? fx_ctx_error(ctx) : "no result");
    }
    for (int j = 0; j < g->nout; j++)
        outputs[j] = rc ? NULL : vals[g->out_slot[j]];
    free(vals);
    return rc;
}

int fxg_check_input(const fxg_graph *g, int i, fx_dtype dtype, int ndim, const int64_t *shape,
                    char *err, size_t errlen)
{
    if (!g || i < 0 || i >= g->nin)
        return fxu_fail(err, errlen, -1, "no input %d", i);
    const fxg_tensor_info *t = &g->inputs[i];
    char want[160], got[160];
    if (dtype != t->dtype)
        return fxu_fail(err, errlen, -1, "input '%s': dtype %s, expected %s", t->name,
                        fx_dtype_name(dtype), fx_dtype_name(t->dtype));
    bool ok = ndim == t->ndim && (ndim == 0 || shape);
    for (int d = 0; ok && d < ndim; d++)
        ok = t->shape[d] == -1 ? shape[d] >= 1 : shape[d] == t->shape[d];
    if (!ok) {
        bool shown = shape && ndim >= 0 && ndim <= FX_MAX_DIMS;
        return fxu_fail(err, errlen, -1, "input '%s': shape %s, expected %s (-1: any size)",
                        t->name, shown ? dims_str(ndim, shape, got, sizeof got) : "(bad)",
                        dims_str(t->ndim, t->shape, want, sizeof want));
    }
    return 0;
}

int fxg_forward(const fxg_graph *g, fx_ctx *ctx, fx_tensor *const *inputs, fx_tensor **outputs,
                char *err, size_t errlen)
{
    if (!g || !ctx || (!inputs && g->nin) || !outputs)
        return fxu_fail(err, errlen, -1, "fxg_forward: NULL argument");
    for (int i = 0; i < g->nin; i++) {
        const fx_tensor *x = inputs[i];
        if (!x)
            return fxu_fail(err, errlen, -1, "input '%s' is missing", g->inputs[i].name);
        if (fxg_check_input(g, i, x->dtype, x->ndim, x->shape, err, errlen))
            return -1;
    }
    return run(g, ctx, inputs, outputs, false, err, errlen);
}

/* -------------------------------------------------------- shape inference */

/* Marks the integer inputs that some node reads as lengths. */
static void find_lengths_inputs(fxg_graph *g)
{
    for (int i = 0; i < g->nnodes; i++) {
        const fxg_node *n = &g->nodes[i];
        for (int k = 0; k < n->nin && k < 32; k++)
            if ((n->op->lengths_inputs & FXG_ROLE_LENGTHS(k)) && n->in_slot[k] < g->nin)
                g->in_is_lengths[n->in_slot[k]] = true;
    }
}

static void probe_shapes_str(const fxg_graph *g, int64_t p, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < g->nin && k < n; i++) {
        int64_t s[FX_MAX_DIMS];
        for (int d = 0; d < g->inputs[i].ndim; d++)
            s[d] = g->inputs[i].shape[d] < 0 ? p : g->inputs[i].shape[d];
        char dims[160];
        k += (size_t)snprintf(buf + k, n - k, "%s%s %s", i ? ", " : "", g->inputs[i].name,
                              dims_str(g->inputs[i].ndim, s, dims, sizeof dims));
    }
}

/* One probe run with every -1 dim set to p; the outputs' dtypes and shapes
 * go to info. */
static int probe(builder *b, fx_ctx *ctx, int64_t p, fxg_tensor_info *info)
{
    fxg_graph *g = b->g;
    fx_ctx_reset(ctx);
    fx_tensor **in = calloc((size_t)g->nin + (size_t)g->nout + 1, sizeof *in);
    if (!in)
        return nomem(b, "probe");
    fx_tensor **out = in + g->nin;
    for (int i = 0; i < g->nin; i++) {
        const fxg_tensor_info *t = &g->inputs[i];
        int64_t s[FX_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++)
            s[d] = t->shape[d] < 0 ? p : t->shape[d];
        double v = t->dtype == FX_F32 ? 0.5 : g->in_is_lengths[i] ? 1 : 0;
        in[i] = fx_full(ctx, t->dtype, t->ndim, s, v);
    }
    char msg[512];
    int rc = fx_ctx_status(ctx) != FX_OK ? fxu_fail(msg, sizeof msg, -1, "%s", fx_ctx_error(ctx))
                                         : run(g, ctx, in, out, true, msg, sizeof msg);
    if (rc) {
        char shapes[512];
        probe_shapes_str(g, p, shapes, sizeof shapes);
        if (fx_ctx_status(ctx) == FX_ERR_NOMEM)
            b->nomem = true;
        fxu_fail(b->err, b->errlen, -1, "shape inference: %s (probe inputs: %s)", msg, shapes);
    }
    for (int j = 0; !rc && j < g->nout; j++) {
        info[j].dtype = out[j]->dtype;
        info[j].ndim = out[j]->ndim;
        memcpy(info[j].shape, out[j]->shape, sizeof info[j].shape);
    }
    free(in);
    return rc;
}

/* Probes twice with different sizes for the -1 dims: an output dim that
 * changes follows them and is -1. Small sizes first; when they fail (a
 * kernel larger than the probe), larger ones. */
static int infer_shapes(builder *b)
{
    fxg_graph *g = b->g;
    bool any = false;
    for (int i = 0; i < g->nin; i++)
        for (int d = 0; d < g->inputs[i].ndim; d++)
            any = any || g->inputs[i].shape[d] < 0;
    find_lengths_inputs(g);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fxg_tensor_info *other = calloc((size_t)g->nout, sizeof *other);
    if (!ctx || !other) {
        fx_ctx_free(ctx);
        free(other);
        return nomem(b, "probe");
    }
    fx_ctx_set_grad(ctx, false);
    fx_ctx_set_training(ctx, false);
    static const int64_t sizes[] = { 8, 32 };
    int rc = -1;
    for (int a = 0; a < 2 && rc && !b->nomem; a++) {
        rc = probe(b, ctx, sizes[a], g->outputs);
        if (!rc && any)
            rc = probe(b, ctx, 2 * sizes[a] + 1, other);
        if (!any)
            break;
    }
    for (int j = 0; !rc && any && j < g->nout; j++)
        for (int d = 0; d < g->outputs[j].ndim; d++)
            if (other[j].ndim != g->outputs[j].ndim ||
                other[j].shape[d] != g->outputs[j].shape[d])
                g->outputs[j].shape[d] = -1;
    free(other);
    fx_ctx_free(ctx);
    return rc;
}

/* ----------------------------------------------------------------- create */

fxg_graph *fxg_create(const Fluxion__V1__ModelSpec *spec, const fxg_options *opts, char *err,
                      size_t errlen, bool *nomem_out)
{
    builder b = { .spec = spec, .err = err, .errlen = errlen };
    if (nomem_out)
        *nomem_out = false;
    if (err && errlen)
        err[0] = '\0';
    if (!spec) {
        fxu_fail(err, errlen, -1, "no model spec");
        return NULL;
    }
    fxg_options o = opts ? *opts : (fxg_options){0};
    uint64_t max_params = o.max_params ? o.max_params : DEFAULT_MAX_PARAMS;
    int max_nodes = o.max_nodes > 0 ? o.max_nodes : DEFAULT_MAX_NODES;
    if (spec->n_nodes > (size_t)max_nodes) {
        fxu_fail(err, errlen, -1, "the model has %zu nodes, above the limit of %d", spec->n_nodes,
                 max_nodes);
        return NULL;
    }
    if (!(b.g = calloc(1, sizeof *b.g)) ||
        !(b.g->nodes = calloc(spec->n_nodes ? spec->n_nodes : 1, sizeof *b.g->nodes))) {
        free(b.g);
        if (nomem_out)
            *nomem_out = true;
        fxu_fail(err, errlen, -1, "out of memory");
        return NULL;
    }
    fxg_graph *g = b.g;
    fx_params_init(&g->params);
    fx_params_init(&g->trainable);
    int rc = parse_inputs(&b);
    for (size_t i = 0; !rc && i < spec->n_nodes; i++) {
        rc = parse_node(&b, (int)i);
        g->nnodes = (int)i + 1; /* what free_node must see */
    }
    if (!rc)
        rc = resolve_all(&b);
    if (!rc)
        rc = topo_sort(&b);
    if (!rc)
        rc = count_params(&b, max_params);
    if (!rc)
        rc = build_layers(&b, o.seed);
    if (!rc)
        rc = infer_shapes(&b);
    if (rc) {
        if (nomem_out)
            *nomem_out = b.nomem;
        fxg_free(g);
        return NULL;
    }
    return g;
}

/* -------------------------------------------------------------- accessors */

int fxg_num_inputs(const fxg_graph *g) { return g ? g->nin : 0; }

const fxg_tensor_info *fxg_input(const fxg_graph *g, int i)
{
    return g && i >= 0 && i < g->nin ? &g->inputs[i] : NULL;
}

int fxg_find_input(const fxg_graph *g, const char *name)
{
    for (int i = 0; g && name && i < g->nin; i++)
        if (strcmp(g->inputs[i].name, name) == 0)
            return i;
    return -1;
}

int fxg_num_outputs(const fxg_graph *g) { return g ? g->nout : 0; }

const fxg_tensor_info *fxg_output(const fxg_graph *g, int i)
{
    return g && i >= 0 && i < g->nout ? &g->outputs[i] : NULL;
}

int fxg_find_output(const fxg_graph *g, const char *name)
{
    for (int i = 0; g && name && i < g->nout; i++)
        if (strcmp(g->outputs[i].name, name) == 0)
            return i;
    return -1;
}

const fx_params *fxg_params(const fxg_graph *g) { return g ? &g->params : NULL; }

void fxg_drop_grads(fxg_graph *g)
{
    for (int i = 0; g && i < g->params.count; i++) {
        fx_tensor *t = g->params.items[i].tensor;
        fx_tensor_set_requires_grad(t, false);
        fx_tensor_free(t->grad);
        t->grad = NULL;
    }
}

bool fxg_param_trainable(const fxg_graph *g, int i)
{
    /* by the list made at creation, not the tensor's flag: fxg_drop_grads
     * clears the flag of a served graph's parameters */
    return g && i >= 0 && i < g->params.count &&
           fx_params_find(&g->trainable, g->params.items[i].name) != NULL;
}

const fx_params *fxg_trainable_params(const fxg_graph *g) { return g ? &g->trainable : NULL; }

int64_t fxg_num_trainable(const fxg_graph *g) { return g ? fx_params_numel(&g->trainable) : 0; }

static pthread_once_t names_once = PTHREAD_ONCE_INIT;
static const char **op_names;

static void make_op_names(void)
{
    int n = 0;
    while (fxg_ops[n].name)
        n++;
    op_names = calloc((size_t)n + 1, sizeof *op_names);
    for (int i = 0; op_names && i < n; i++)
        op_names[i] = fxg_ops[i].name;
}

const char *const *fxg_op_names(void)
{
    static const char *const none[] = { NULL };
    pthread_once(&names_once, make_op_names);
    return op_names ? op_names : none;
}

/* ---------------------------------------------------------------- weights */

/* PyTorch's batch norm keeps a step counter that the engine does not: a
 * state_dict's "<bn>.num_batches_tracked" is accepted and ignored. */
static bool ignorable(const fxg_graph *g, const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || strcmp(dot, ".num_batches_tracked") != 0)
        return false;
    for (int i = 0; i < g->nnodes; i++) {
        const fxg_node *n = &g->nodes[i];
        if (strncmp(n->op->name, "batchnorm", 9) == 0 && strlen(n->name) == (size_t)(dot - name) &&
            strncmp(n->name, name, (size_t)(dot - name)) == 0)
            return true;
    }
    return false;
}

static int check_weights(const fxg_graph *g, const fx_params *in, char *err, size_t errlen)
{
    char s1[160], s2[160];
    for (int i = 0; i < in->count; i++) {
        const char *name = in->items[i].name;
        const fx_tensor *t = in->items[i].tensor, *mine = fx_params_find(&g->params, name);
        if (!mine) {
            if (ignorable(g, name))
                continue;
            return fxu_fail(err, errlen, -1, "tensor '%s' is not a parameter of the model", name);
        }
        if (t->dtype != mine->dtype)
            return fxu_fail(err, errlen, -1, "tensor '%s': dtype %s, expected %s", name,
                            fx_dtype_name(t->dtype), fx_dtype_name(mine->dtype));
        if (!fx_tensor_same_shape(t, mine))
            return fxu_fail(err, errlen, -1, "tensor '%s': shape %s, expected %s", name,
                            fx_shape_str(t, s1, sizeof s1), fx_shape_str(mine, s2, sizeof s2));
    }
    for (int i = 0; i < g->params.count; i++)
        if (!fx_params_find(in, g->params.items[i].name))
            return fxu_fail(err, errlen, -1, "tensor '%s' is missing", g->params.items[i].name);
    return 0;
}

int fxg_load_weights(fxg_graph *g, const void *buf, size_t len, char *err, size_t errlen)
{
    if (!g || (!buf && len))
        return fxu_fail(err, errlen, -1, "fxg_load_weights: NULL argument");
    fx_params in;
    fx_params_init(&in);
    char msg[384];
    fx_status s = fx_safetensors_decode(buf, len, &in, msg, sizeof msg);
    if (s != FX_OK)
        return fxu_fail(err, errlen, -1, "weights: %s", msg);
    int rc = check_weights(g, &in, err, errlen);
    for (int i = 0; !rc && i < g->params.count; i++) {
        const fx_tensor *src = fx_params_find(&in, g->params.items[i].name);
        if (fx_tensor_copy(g->params.items[i].tensor, src) != FX_OK)
            rc = fxu_fail(err, errlen, -1, "tensor '%s' could not be copied",
                          g->params.items[i].name);
    }
    fx_params_free_tensors(&in);
    return rc;
}

int fxg_save_weights(const fxg_graph *g, void **buf, size_t *len, char *err, size_t errlen)
{
    if (!g || !buf || !len)
        return fxu_fail(err, errlen, -1, "fxg_save_weights: NULL argument");
    static const char *const keys[] = {"format"}, *const values[] = {"pt"};
    uint8_t *out = NULL;
    fx_status s = fx_safetensors_encode(&g->params, 1, keys, values, &out, len, err, errlen);
    *buf = out;
    return s == FX_OK ? 0 : -1;
}

int fxg_to_device(fxg_graph *g, fx_device dev, char *err, size_t errlen)
{
    if (!g)
        return fxu_fail(err, errlen, -1, "fxg_to_device: NULL graph");
    char name[32];
    fx_device_str(dev, name, sizeof name);
    if (!fx_device_available(dev))
        return fxu_fail(err, errlen, -1, "device %s is not available", name);
    fx_device from = g->device;
    for (int i = 0; i < g->params.count; i++) {
        fx_status s = fx_tensor_move_to_device(g->params.items[i].tensor, dev);
        if (s == FX_OK)
            continue;
        const char *why = s == FX_ERR_NOMEM && fx_device_last_error()[0]
                              ? fx_device_last_error()
                              : fx_status_name(s);
        fxu_fail(err, errlen, -1, "moving '%s' to %s: %s", g->params.items[i].name, name, why);
        /* back where they were, so the graph stays whole (on the host this
         * cannot run out: the memory was just given back) */
        for (int k = 0; k < i; k++)
            fx_tensor_move_to_device(g->params.items[k].tensor, from);
        return -1;
    }
    g->device = dev;
    return 0;
}

fx_device fxg_device(const fxg_graph *g)
{
    return g->device;
}
