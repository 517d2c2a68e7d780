/*
 * graph_parse.c - the first steps of fxg_build: a ModelSpec's inputs,
 * nodes and attributes checked against the op table, and every reference
 * between them resolved, before anything is allocated for parameters. The
 * messages name the input, node or attribute and what was expected.
 */
#include "models/graph_internal.h"
#include "base/status.h"
#include "base/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ dtype/shape */

static int check_name(fxg_builder *b, const char *what, const char *name, bool is_node)
{
    if (!name || !name[0])
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "%s has an empty name", what);
    if (strlen(name) > FXG_NAME_MAX_LEN)
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "%s name '%.40s...' is longer than %d characters",
                        what, name, FXG_NAME_MAX_LEN);
    /* '.' separates parameter names, ':' selects an output. */
    if (is_node && strpbrk(name, ".:"))
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                        "node name '%s' contains '%c' (reserved for parameter "
                        "names and output references)",
                        name, *strpbrk(name, ".:"));
    return 0;
}

int fxg__parse_inputs(fxg_builder *b)
{
    fxg_graph *g = b->g;
    const Fluxion__V1__ModelSpec *s = b->spec;
    g->inputs = calloc(s->n_inputs ? s->n_inputs : 1, sizeof *g->inputs);
    g->in_is_lengths = calloc(s->n_inputs ? s->n_inputs : 1, sizeof *g->in_is_lengths);
    if (!g->inputs || !g->in_is_lengths)
        return fxg__nomem(b, "inputs");
    for (size_t i = 0; i < s->n_inputs; i++) {
        const Fluxion__V1__TensorSpec *t = s->inputs[i];
        if (!t)
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "input %zu is missing", i);
        if (check_name(b, "input", t->name, false))
            return FXS_INVALID_ARGUMENT;
        fxg_tensor_info *info = &g->inputs[i];
        if (!fxg_dtype_from_proto(t->dtype, &info->dtype))
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                            "input '%s': dtype %d is not supported (FP32, INT32, "
                            "INT64)",
                            t->name, (int)t->dtype);
        if (t->n_shape > FX_MAX_DIMS)
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "input '%s': %zu dims, at most %d are supported",
                            t->name, t->n_shape, FX_MAX_DIMS);
        int64_t fixed = 1;
        for (size_t d = 0; d < t->n_shape; d++) {
            int64_t v = t->shape[d];
            if (v == 0 || v < -1)
                return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                                "input '%s': dim %zu is %lld; sizes are >= 1, "
                                "or -1 for any size",
                                t->name, d, (long long)v);
            fixed = v > 0 ? fxg_mul(fixed, v) : fixed;
            if (fixed < 0 || fixed > FXG_INPUT_MAX_NUMEL)
                return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                                "input '%s': its fixed dims hold more than %lld "
                                "elements",
                                t->name, (long long)FXG_INPUT_MAX_NUMEL);
            info->shape[d] = v;
        }
        info->ndim = (int)t->n_shape;
        if (!(info->name = strdup(t->name)))
            return fxg__nomem(b, "input name");
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

static int range_fail(fxg_builder *b, const fxg_node *n, const fxg_attr_schema *s, double v)
{
    return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                    "node '%s' (%s): attribute '%s' is %.17g, outside [%.17g, "
                    "%.17g]",
                    n->name, n->op->name, s->name, v, s->min, s->max);
}

static int check_int(fxg_builder *b, const fxg_node *n, const fxg_attr_schema *s, int64_t v)
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

static int parse_list(fxg_builder *b, const fxg_node *n, const fxg_attr_schema *s,
                      const Fluxion__V1__AttrValue *v, fxg_attr *a)
{
    const Fluxion__V1__IntList *l = v->ints;
    size_t len = l ? l->n_values : 0;
    if (len < (size_t)s->min_len || len > (size_t)s->max_len)
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                        "node '%s' (%s): attribute '%s' has %zu values, expected "
                        "%d to %d",
                        n->name, n->op->name, s->name, len, s->min_len, s->max_len);
    if (!(a->v = malloc((len ? len : 1) * sizeof *a->v)))
        return fxg__nomem(b, "attribute");
    for (size_t i = 0; i < len; i++) {
        if (check_int(b, n, s, l->values[i]))
            return FXS_INVALID_ARGUMENT;
        a->v[i] = l->values[i];
    }
    a->n = (int)len;
    return 0;
}

static int parse_value(fxg_builder *b, const fxg_node *n, const fxg_attr_schema *s,
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
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
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
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node '%s' (%s): attribute '%s' must be %s, got %s",
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
    /* float defaults may be infinite (clamp's min/max): converting those to
     * an integer is undefined, and only int attributes read a->i */
    a->i = a->i2 = s->def > -9.2e18 && s->def < 9.2e18 ? (int64_t)s->def : 0;
}

static int parse_attrs(fxg_builder *b, fxg_node *n, const Fluxion__V1__Node *spec)
{
    const fxg_attr_schema *schema = n->op->attrs;
    int na = 0;
    while (schema[na].name)
        na++;
    if (na > FXG_MAX_ATTRS)
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "internal error: op '%s' has too many attributes",
                        n->op->name);
    if (!(n->attrs = calloc(na ? (size_t)na : 1, sizeof *n->attrs)))
        return fxg__nomem(b, "attributes");
    bool given[FXG_MAX_ATTRS] = {false};
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
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                            "node '%s' (%s): unknown attribute '%.64s' (%s%s)", n->name,
                            n->op->name, key, na ? "known: " : "it takes none", list);
        }
        if (given[k])
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node '%s' (%s): attribute '%s' is given twice",
                            n->name, n->op->name, key);
        given[k] = true;
        if (!entry->value || entry->value->value_case == FLUXION__V1__ATTR_VALUE__VALUE__NOT_SET)
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node '%s' (%s): attribute '%s' has no value",
                            n->name, n->op->name, key);
        if (parse_value(b, n, &schema[k], entry->value, &n->attrs[k]))
            return FXS_INVALID_ARGUMENT;
    }
    for (int k = 0; k < na; k++)
        if (schema[k].required && !n->attrs[k].set)
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
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

static int unknown_op(fxg_builder *b, const char *node, const char *op)
{
    char close[192] = "";
    for (int i = 0; i < fxg_num_ops(); i++) {
        const fxg_op *o = fxg_op_at(i);
        if (edit_distance(op, o->name) <= 2 || (strlen(op) >= 3 && strstr(o->name, op)))
            snprintf(close + strlen(close), sizeof close - strlen(close), "%s%s",
                     close[0] ? ", " : "", o->name);
    }
    return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node '%s': unknown op '%.64s'%s%s%s", node, op,
                    close[0] ? " (did you mean " : "", close, close[0] ? "?)" : "");
}

int fxg__parse_node(fxg_builder *b, int idx)
{
    const Fluxion__V1__Node *s = b->spec->nodes[idx];
    fxg_node *n = &b->g->nodes[idx];
    if (!s)
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node %d is missing", idx);
    char what[32];
    snprintf(what, sizeof what, "node %d", idx);
    if (check_name(b, what, s->name, true))
        return FXS_INVALID_ARGUMENT;
    if (!(n->name = strdup(s->name)))
        return fxg__nomem(b, "node name");
    if (!s->op || !s->op[0])
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node '%s': no op given", n->name);
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
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node '%s' (%s): takes %s input%s, got %zu", n->name,
                        n->op->name, want, hi == 1 ? "" : "s", s->n_inputs);
    }
    if (parse_attrs(b, n, s))
        return FXS_INVALID_ARGUMENT;
    char msg[384];
    if (n->op->check && n->op->check(n, msg, sizeof msg))
        return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node '%s' (%s): %s", n->name, n->op->name, msg);
    n->nout = n->op->nout ? n->op->nout(n) : 1;
    n->nin = (int)s->n_inputs;
    if (!(n->in_slot = calloc(s->n_inputs ? s->n_inputs : 1, sizeof *n->in_slot)))
        return fxg__nomem(b, "node inputs");
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
static name_entry *name_table(fxg_builder *b, int *count)
{
    fxg_graph *g = b->g;
    int n = g->nin + g->nnodes;
    name_entry *t = malloc((size_t)(n ? n : 1) * sizeof *t);
    if (!t) {
        fxg__nomem(b, "name table");
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
            fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "input '%s' and node '%s' share a name", nm, nm);
        else
            fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "duplicate %s name '%s' (%s %d and %d)",
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
/* A reference that names nothing: the message into b->err, -1 for the slot. */
static int no_slot(fxg_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int no_slot(fxg_builder *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (b->err && b->errlen)
        vsnprintf(b->err, b->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* The value slot a reference names; -1 (with the message in b->err) when it
 * names nothing. */
static int resolve(fxg_builder *b, const name_entry *t, int nt, const char *ref, const char *what)
{
    fxg_graph *g = b->g;
    if (!ref || !ref[0])
        return no_slot(b, "%s: empty tensor reference", what);
    const name_entry *e = find_name(t, nt, ref);
    if (e)
        return e->kind == 0 ? e->index : g->nodes[e->index].out_slot;
    const char *colon = strrchr(ref, ':');
    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
        colon - ref <= FXG_NAME_MAX_LEN) {
        char base[FXG_NAME_MAX_LEN + 1];
        memcpy(base, ref, (size_t)(colon - ref));
        base[colon - ref] = '\0';
        e = find_name(t, nt, base);
        if (e && e->kind == 1) {
            const fxg_node *n = &g->nodes[e->index];
            long long k = strlen(colon + 1) > 9 ? -1 : atoll(colon + 1);
            if (k < 0 || k >= n->nout)
                return -1 - 0 * fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                                "%s: node '%s' (%s) has %d output%s, no output "
                                "%s",
                                what, n->name, n->op->name, n->nout, n->nout == 1 ? "" : "s",
                                colon + 1);
            return n->out_slot + (int)k;
        }
    }
    return no_slot(b, "%s: '%.*s' names no graph input or node", what,
                    FXG_NAME_MAX_LEN, ref);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorting finds duplicates in n log n (specs may have many outputs). */
static int check_output_names(fxg_builder *b)
{
    fxg_graph *g = b->g;
    const char **names = malloc((size_t)g->nout * sizeof *names);
    if (!names)
        return fxg__nomem(b, "outputs");
    for (int j = 0; j < g->nout; j++)
        names[j] = g->outputs[j].name;
    qsort(names, (size_t)g->nout, sizeof *names, cmp_str);
    int rc = 0;
    for (int j = 1; j < g->nout && !rc; j++)
        if (strcmp(names[j - 1], names[j]) == 0)
            rc = fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "duplicate output name '%s'", names[j]);
    free(names);
    return rc;
}

int fxg__resolve_all(fxg_builder *b)
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
        return FXS_INVALID_ARGUMENT;
    int rc = 0;
    for (int i = 0; i < g->nnodes && !rc; i++) {
        fxg_node *n = &g->nodes[i];
        for (int k = 0; k < n->nin && !rc; k++) {
            char what[FXG_NAME_MAX_LEN + 48];
            snprintf(what, sizeof what, "node '%s' (%s), input %d", n->name, n->op->name, k);
            int s = resolve(b, t, nt, b->spec->nodes[i]->inputs[k], what);
            rc = s < 0 ? FXS_INVALID_ARGUMENT : 0;
            n->in_slot[k] = s;
        }
    }
    const Fluxion__V1__ModelSpec *spec = b->spec;
    if (!rc && spec->n_outputs == 0)
        rc = fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "the model has no outputs");
    if (!rc && (!(g->outputs = calloc(spec->n_outputs, sizeof *g->outputs)) ||
                !(g->out_slot = calloc(spec->n_outputs, sizeof *g->out_slot))))
        rc = fxg__nomem(b, "outputs");
    for (size_t j = 0; !rc && j < spec->n_outputs; j++) {
        const Fluxion__V1__OutputSpec *o = spec->outputs[j];
        if (!o)
            rc = fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "output %zu is missing", j);
        else if (!check_name(b, "output", o->name, false)) {
            char what[FXG_NAME_MAX_LEN + 16];
            snprintf(what, sizeof what, "output '%s'", o->name);
            if (!rc && (g->out_slot[j] = resolve(b, t, nt, o->source, what)) < 0)
                rc = FXS_INVALID_ARGUMENT;
            if (!rc && !(g->outputs[j].name = strdup(o->name)))
                rc = fxg__nomem(b, "output name");
            if (!rc)
                g->nout++;
        } else {
            rc = FXS_INVALID_ARGUMENT;
        }
    }
    free(t);
    return rc ? rc : check_output_names(b);
}

