/*
 * graph.c - a model built from a ModelSpec: validation (everything is
 * checked before any parameter is allocated), instantiation in node order
 * with one seeded generator, shape inference by probing, the forward pass,
 * and weights in and out as safetensors. Parsing the spec (inputs, nodes,
 * attributes, references) is in graph_parse.c; the ops themselves are in
 * graph_layers.c and graph_ops.c.
 */
#include "models/graph_internal.h"
#include "base/status.h"
#include "base/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



/* ----------------------------------------------------------------- errors */



int fxg__nomem(fxg_builder *b, const char *what)
{
    b->nomem = true;
    return fxu_fail(b->err, b->errlen, FXS_RESOURCE_EXHAUSTED, "out of memory (%s)", what);
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

/* --------------------------------------------------------- topology */

/* Node owning a slot, or -1 for a graph input. */
static int owner_of(const fxg_graph *g, const int *slot_owner, int slot)
{
    return slot < g->nin ? -1 : slot_owner[slot - g->nin];
}

/* A cycle among the nodes left with unmet dependencies: walk dependencies
 * from one of them until a node repeats. */
static int report_cycle(fxg_builder *b, const int *slot_owner, const int *indeg)
{
    fxg_graph *g = b->g;
    int *pos = malloc((size_t)g->nnodes * sizeof *pos);
    int *path = malloc((size_t)g->nnodes * sizeof *path);
    if (!pos || !path) {
        free(pos);
        free(path);
        return fxg__nomem(b, "cycle");
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
    return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "the nodes form a cycle: %s", msg);
}

/* Kahn's algorithm; nodes ready at the same time keep the spec's order. */
static int topo_sort(fxg_builder *b)
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
        rc = fxg__nomem(b, "topological order");
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

static int count_params(fxg_builder *b, uint64_t max_params)
{
    fxg_graph *g = b->g;
    int64_t total = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const fxg_node *n = &g->nodes[i];
        if (!n->op->nparams)
            continue;
        int64_t p = n->op->nparams(n);
        if (p < 0)
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "node '%s' (%s): its parameter count overflows",
                            n->name, n->op->name);
        total = fxg_add(total, p);
        if (total < 0 || (uint64_t)total > max_params)
            return fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                            "node '%s' (%s): %lld parameters bring the model "
                            "above the limit of %llu parameters",
                            n->name, n->op->name, (long long)p, (unsigned long long)max_params);
    }
    return 0;
}

static int build_layers(fxg_builder *b, uint64_t seed)
{
    fxg_graph *g = b->g;
    fx_rng *rng = fx_rng_create(seed);
    if (!rng)
        return fxg__nomem(b, "generator");
    int rc = 0;
    for (int i = 0; i < g->nnodes && !rc; i++) {
        fxg_node *n = &g->nodes[i];
        if (!n->op->build)
            continue;
        int before = g->params.count;
        if (!(n->layer = n->op->build(n, rng)))
            rc = fxg__nomem(b, n->name); /* validation leaves only allocation to fail */
        else if (fx_layer_collect_params(n->layer, &g->params) != FX_OK)
            rc = fxg__nomem(b, "parameter list");
        int64_t numel = 0;
        for (int k = before; !rc && k < g->params.count; k++)
            numel += fx_tensor_numel(g->params.items[k].tensor);
        if (!rc && numel != n->op->nparams(n))
            rc = fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT,
                          "node '%s' (%s): internal error: %lld parameters made, "
                          "%lld counted",
                          n->name, n->op->name, (long long)numel, (long long)n->op->nparams(n));
    }
    for (int k = 0; !rc && k < g->params.count; k++)
        if (fx_tensor_requires_grad(g->params.items[k].tensor) &&
            fx_params_add(&g->trainable, g->params.items[k].name, g->params.items[k].tensor))
            rc = fxg__nomem(b, "parameter list");
    fx_rng_free(rng);
    return rc;
}

/* ---------------------------------------------------------------- forward */

/* The status for an engine error met while running a node: out of memory
 * (host or device) is RESOURCE_EXHAUSTED; a device failure INTERNAL; every
 * other error comes from the values or shapes of the request's inputs. */
int fxg__status_of(fx_status s)
{
    switch (s) {
    case FX_OK:
        return FXS_INTERNAL; /* a node made no result without an error */
    case FX_ERR_NOMEM:
        return FXS_RESOURCE_EXHAUSTED;
    case FX_ERR_DEVICE:
    case FX_ERR_STATE:
    case FX_ERR_IO:
        return FXS_INTERNAL;
    default:
        return FXS_INVALID_ARGUMENT;
    }
}

/* Runs the nodes in order; probe: use the ops' shape-only stand-ins. */
static int run(const fxg_graph *g, fx_ctx *ctx, fx_tensor *const *inputs, fx_tensor **outputs,
               bool probe, char *err, size_t errlen)
{
    if (fx_ctx_status(ctx) != FX_OK)
        return fxu_fail(err, errlen, FXS_INTERNAL, "the context has an earlier error: %s",
                        fx_ctx_error(ctx));
    fx_tensor **vals = calloc((size_t)g->nslots + (size_t)g->max_node_in + 1, sizeof *vals);
    if (!vals)
        return fxu_oom(err, errlen);
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
            rc = fxu_fail(err, errlen, fxg__status_of(fx_ctx_status(ctx)), "node '%s' (%s): %s",
                          n->name, n->op->name,
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
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "no input %d", i);
    const fxg_tensor_info *t = &g->inputs[i];
    char want[160], got[160];
    if (dtype != t->dtype)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': dtype %s, expected %s", t->name,
                        fx_dtype_name(dtype), fx_dtype_name(t->dtype));
    bool ok = ndim == t->ndim && (ndim == 0 || shape);
    for (int d = 0; ok && d < ndim; d++)
        ok = t->shape[d] == -1 ? shape[d] >= 1 : shape[d] == t->shape[d];
    if (!ok) {
        bool shown = shape && ndim >= 0 && ndim <= FX_MAX_DIMS;
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': shape %s, expected %s (-1: any size)",
                        t->name, shown ? fx_dims_str(ndim, shape, got, sizeof got) : "(bad)",
                        fx_dims_str(t->ndim, t->shape, want, sizeof want));
    }
    return 0;
}

int fxg_forward(const fxg_graph *g, fx_ctx *ctx, fx_tensor *const *inputs, fx_tensor **outputs,
                char *err, size_t errlen)
{
    if (!g || !ctx || (!inputs && g->nin) || !outputs)
        return fxu_fail(err, errlen, FXS_INTERNAL, "fxg_forward: NULL argument");
    for (int i = 0; i < g->nin; i++) {
        const fx_tensor *x = inputs[i];
        if (!x)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s' is missing",
                            g->inputs[i].name);
        int rc = fxg_check_input(g, i, x->dtype, x->ndim, x->shape, err, errlen);
        if (rc)
            return rc;
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
                              fx_dims_str(g->inputs[i].ndim, s, dims, sizeof dims));
    }
}

/* One probe run with every -1 dim set to p; the outputs' dtypes and shapes
 * go to info. */
static int probe(fxg_builder *b, fx_ctx *ctx, int64_t p, fxg_tensor_info *info)
{
    fxg_graph *g = b->g;
    fx_ctx_reset(ctx);
    fx_tensor **in = calloc((size_t)g->nin + (size_t)g->nout + 1, sizeof *in);
    if (!in)
        return fxg__nomem(b, "probe");
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
    int rc = fx_ctx_status(ctx) != FX_OK ? fxu_fail(msg, sizeof msg, FXS_INVALID_ARGUMENT, "%s", fx_ctx_error(ctx))
                                         : run(g, ctx, in, out, true, msg, sizeof msg);
    if (rc) {
        char shapes[512];
        probe_shapes_str(g, p, shapes, sizeof shapes);
        if (fx_ctx_status(ctx) == FX_ERR_NOMEM)
            b->nomem = true;
        fxu_fail(b->err, b->errlen, FXS_INVALID_ARGUMENT, "shape inference: %s (probe inputs: %s)", msg, shapes);
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
static int infer_shapes(fxg_builder *b)
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
        return fxg__nomem(b, "probe");
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

int fxg_build(const Fluxion__V1__ModelSpec *spec, const fxg_options *opts, fxg_graph **out,
              char *err, size_t errlen)
{
    *out = NULL;
    fxg_builder b = { .spec = spec, .err = err, .errlen = errlen };
    if (err && errlen)
        err[0] = '\0';
    if (!spec)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "no model spec");
    fxg_options o = opts ? *opts : (fxg_options){0};
    uint64_t max_params = o.max_params ? o.max_params : FXG_DEFAULT_MAX_PARAMS;
    int max_nodes = o.max_nodes > 0 ? o.max_nodes : FXG_DEFAULT_MAX_NODES;
    if (spec->n_nodes > (size_t)max_nodes)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "the model has %zu nodes, above the limit of %d", spec->n_nodes,
                        max_nodes);
    if (!(b.g = calloc(1, sizeof *b.g)) ||
        !(b.g->nodes = calloc(spec->n_nodes ? spec->n_nodes : 1, sizeof *b.g->nodes))) {
        free(b.g);
        return fxu_oom(err, errlen);
    }
    fxg_graph *g = b.g;
    fx_params_init(&g->params);
    fx_params_init(&g->trainable);
    int rc = fxg__parse_inputs(&b);
    for (size_t i = 0; !rc && i < spec->n_nodes; i++) {
        rc = fxg__parse_node(&b, (int)i);
        g->nnodes = (int)i + 1; /* what free_node must see */
    }
    if (!rc)
        rc = fxg__resolve_all(&b);
    if (!rc)
        rc = topo_sort(&b);
    if (!rc)
        rc = count_params(&b, max_params);
    if (!rc)
        rc = build_layers(&b, o.seed);
    if (!rc)
        rc = infer_shapes(&b);
    if (rc) {
        fxg_free(g);
        return b.nomem ? FXS_RESOURCE_EXHAUSTED : rc;
    }
    *out = g;
    return 0;
}

/* -------------------------------------------------------------- accessors */

bool fxg_dtype_from_proto(Fluxion__V1__DataType d, fx_dtype *out)
{
    switch (d) {
    case FLUXION__V1__DATA_TYPE__DATA_TYPE_UNSPECIFIED:
    case FLUXION__V1__DATA_TYPE__FP32: *out = FX_F32; return true;
    case FLUXION__V1__DATA_TYPE__INT32: *out = FX_I32; return true;
    case FLUXION__V1__DATA_TYPE__INT64: *out = FX_I64; return true;
    default: return false;
    }
}

Fluxion__V1__DataType fxg_dtype_to_proto(fx_dtype dt)
{
    switch (dt) {
    case FX_I32: return FLUXION__V1__DATA_TYPE__INT32;
    case FX_I64: return FLUXION__V1__DATA_TYPE__INT64;
    default: return FLUXION__V1__DATA_TYPE__FP32;
    }
}

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
    int n = fxg_num_ops();
    op_names = calloc((size_t)n + 1, sizeof *op_names);
    for (int i = 0; op_names && i < n; i++)
        op_names[i] = fxg_op_at(i)->name;
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
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s' is not a parameter of the model", name);
        }
        if (t->dtype != mine->dtype)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': dtype %s, expected %s", name,
                            fx_dtype_name(t->dtype), fx_dtype_name(mine->dtype));
        if (!fx_tensor_same_shape(t, mine))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': shape %s, expected %s", name,
                            fx_shape_str(t, s1, sizeof s1), fx_shape_str(mine, s2, sizeof s2));
    }
    for (int i = 0; i < g->params.count; i++)
        if (!fx_params_find(in, g->params.items[i].name))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s' is missing", g->params.items[i].name);
    return 0;
}

int fxg_load_weights(fxg_graph *g, const void *buf, size_t len, char *err, size_t errlen)
{
    if (!g || (!buf && len))
        return fxu_fail(err, errlen, FXS_INTERNAL, "fxg_load_weights: NULL argument");
    fx_params in;
    fx_params_init(&in);
    char msg[384];
    fx_status s = fx_safetensors_decode(buf, len, &in, msg, sizeof msg);
    if (s != FX_OK)
        return fxu_fail(err, errlen, s == FX_ERR_NOMEM ? FXS_RESOURCE_EXHAUSTED : FXS_INVALID_ARGUMENT,
                        "weights: %s", msg);
    int rc = check_weights(g, &in, err, errlen);
    if (!rc)
        fxg_unpack(g); /* the packs would be stale */
    for (int i = 0; !rc && i < g->params.count; i++) {
        const fx_tensor *src = fx_params_find(&in, g->params.items[i].name);
        if (fx_tensor_copy(g->params.items[i].tensor, src) != FX_OK)
            rc = fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "tensor '%s' could not be copied",
                          g->params.items[i].name);
    }
    fx_params_free_tensors(&in);
    return rc;
}

int fxg_save_weights(const fxg_graph *g, void **buf, size_t *len, char *err, size_t errlen)
{
    if (!g || !buf || !len)
        return fxu_fail(err, errlen, FXS_INTERNAL, "fxg_save_weights: NULL argument");
    static const char *const keys[] = {"format"}, *const values[] = {"pt"};
    uint8_t *out = NULL;
    fx_status s = fx_safetensors_encode(&g->params, 1, keys, values, &out, len, err, errlen);
    *buf = out;
    if (s == FX_OK)
        return 0;
    return s == FX_ERR_NOMEM ? FXS_RESOURCE_EXHAUSTED : FXS_INTERNAL;
}

int fxg_to_device(fxg_graph *g, fx_device dev, char *err, size_t errlen)
{
    if (!g)
        return fxu_fail(err, errlen, FXS_INTERNAL, "fxg_to_device: NULL graph");
    char name[32];
    fx_device_str(dev, name, sizeof name);
    if (!fx_device_available(dev))
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "device %s is not available", name);
    fx_device from = g->device;
    fxg_unpack(g); /* packs are of the host copies */
    for (int i = 0; i < g->params.count; i++) {
        fx_status s = fx_tensor_move_to_device(g->params.items[i].tensor, dev);
        if (s == FX_OK)
            continue;
        const char *why = s == FX_ERR_NOMEM && fx_device_last_error()[0]
                              ? fx_device_last_error()
                              : fx_status_name(s);
        int rc = fxu_fail(err, errlen, s == FX_ERR_NOMEM ? FXS_RESOURCE_EXHAUSTED : FXS_INTERNAL,
                          "moving '%s' to %s: %s", g->params.items[i].name, name, why);
        /* back where they were, so the graph stays whole (on the host this
         * cannot run out: the memory was just given back) */
        for (int k = 0; k < i; k++)
            fx_tensor_move_to_device(g->params.items[k].tensor, from);
        return rc;
    }
    g->device = dev;
    return 0;
}

int fxg_prepack(fxg_graph *g)
{
    return fxg_prepack_precision(g, FX_PREC_F32);
}

int fxg_prepack_precision(fxg_graph *g, fx_precision p)
{
    int n = 0;
    for (int i = 0; g && i < g->nnodes; i++)
        if (g->nodes[i].layer) {
            /* a layer left unpacked runs as before */
            fx_layer_prepack_precision(g->nodes[i].layer, p);
            n += fx_layer_num_packed(g->nodes[i].layer);
        }
    return n;
}

void fxg_unpack(fxg_graph *g)
{
    for (int i = 0; g && i < g->nnodes; i++)
        fx_layer_unpack(g->nodes[i].layer);
}

fx_device fxg_device(const fxg_graph *g)
{
    return g->device;
}
