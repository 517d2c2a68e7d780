/* layer.c - layers: a forward function, owned parameters, owned children
 * and optional user data. Dense and chain are built from the same pieces a
 * user's custom layer uses. */
#include "internal.h"
#include "kern_packed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fx_layer {
    char *name;
    fx_forward_fn forward;
    fx_params params; /* owned tensors */
    fx_layer **children;
    int nchildren, cap;
    void *data;
    void (*free_data)(void *);
};

fx_layer *fx_layer_create(const char *name, fx_forward_fn forward)
{
    fx_layer *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->name = strdup(name ? name : "");
    if (!l->name) {
        free(l);
        return NULL;
    }
    l->forward = forward;
    fx_params_init(&l->params);
    return l;
}

void fx_layer_free(fx_layer *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->nchildren; i++)
        fx_layer_free(l->children[i]);
    free(l->children);
    fx_params_free_tensors(&l->params);
    if (l->free_data)
        l->free_data(l->data);
    free(l->name);
    free(l);
}

const char *fx_layer_name(const fx_layer *l) { return l ? l->name : NULL; }

/* Runs the layer's forward. A NULL input propagates (the error that made it
 * is already recorded); a forward that returns NULL without recording an
 * error gets one, so fx_ctx_status always explains a NULL. */
fx_tensor *fx_layer_forward(fx_layer *l, fx_ctx *ctx, fx_tensor *x)
{
    if (!ctx)
        return NULL;
    if (!l)
        return fx_ctx_fail(ctx, FX_ERR_ARG, "layer_forward: layer is NULL");
    if (!x)
        return ctx->status == FX_OK
                   ? fx_ctx_fail(ctx, FX_ERR_ARG, "layer '%s': input is NULL", l->name)
                   : NULL;
    if (!l->forward)
        return fx_ctx_fail(ctx, FX_ERR_ARG, "layer '%s' has no forward function", l->name);
    fx_tensor *y = l->forward(l, ctx, x);
    if (!y && ctx->status == FX_OK)
        fx_ctx_fail(ctx, FX_ERR_STATE, "layer '%s': forward returned NULL without an error",
                    l->name);
    return y;
}

/* After a failure inside layer l: puts "layer '<name>': " before the
 * recorded message, so the user learns which layer of a model failed. */
void fx__layer_name_error(fx_ctx *ctx, const fx_layer *l)
{
    char prefix[96];
    int k = snprintf(prefix, sizeof prefix, "layer '%s': ", fx_layer_name(l));
    size_t len = strlen(ctx->err), cap = sizeof ctx->err;
    if (k <= 0 || (size_t)k >= sizeof prefix || strncmp(ctx->err, prefix, (size_t)k) == 0)
        return;
    if (len + (size_t)k >= cap)
        len = cap - 1 - (size_t)k;
    memmove(ctx->err + k, ctx->err, len);
    memcpy(ctx->err, prefix, (size_t)k);
    ctx->err[len + (size_t)k] = '\0';
}

/* Takes ownership of t even on failure (it is freed then), so that
 * fx_layer_add_param(l, "w", fx_param_create(...)) never leaks. A name the
 * layer already has, or a tensor that cannot take a gradient (not f32, not
 * persistent), is refused. grad: mark t as requiring grad (a parameter) or
 * clear the mark (a buffer). */
static fx_status add_owned(fx_layer *l, const char *name, fx_tensor *t, bool grad)
{
    fx_status s = FX_OK;
    if (!l || !name || !t)
        s = FX_ERR_ARG;
    else if (!(t->flags & FX_TENSOR_PERSISTENT))
        return FX_ERR_STATE; /* an arena tensor: not ours to free */
    for (int i = 0; s == FX_OK && i < l->params.count; i++)
        if (l->params.items[i].tensor == t)
            return FX_ERR_ARG; /* already ours: freeing it would free it twice */
    if (s == FX_OK)
        s = fx_tensor_set_requires_grad(t, grad);
    if (s == FX_OK)
        s = fx_params_add(&l->params, name, t);
    if (s != FX_OK)
        fx_tensor_free(t);
    return s;
}

fx_status fx_layer_add_param(fx_layer *l, const char *name, fx_tensor *t)
{
    return add_owned(l, name, t, true);
}

/* A buffer is owned and listed like a parameter (so checkpoints save it)
 * but never requires grad, so optimizers leave it alone. */
fx_status fx_layer_add_buffer(fx_layer *l, const char *name, fx_tensor *t)
{
    return add_owned(l, name, t, false);
}

/* A parameter of this layer, or of a descendant by a dotted path relative
 * to this layer ("fc1.weight"). */
fx_tensor *fx_layer_param(const fx_layer *l, const char *name)
{
    if (!l || !name)
        return NULL;
    fx_tensor *t = fx_params_find(&l->params, name);
    if (t)
        return t;
    for (int i = 0; i < l->nchildren; i++) {
        const char *cn = l->children[i]->name;
        size_t k = strlen(cn);
        if (k && strncmp(name, cn, k) == 0 && name[k] == '.')
            if ((t = fx_layer_param(l->children[i], name + k + 1)))
                return t;
    }
    return NULL;
}

/* Takes ownership of child even on failure (it is freed then). Children
 * need distinct names, or their parameters' dotted names would clash. */
fx_status fx_layer_add_child(fx_layer *l, fx_layer *child)
{
    fx_status s = FX_OK;
    if (!l || !child || child == l)
        s = FX_ERR_ARG;
    for (int i = 0; s == FX_OK && i < l->nchildren; i++) {
        if (l->children[i] == child)
            return FX_ERR_ARG; /* already ours: freeing it would free it twice */
        if (child->name[0] && strcmp(l->children[i]->name, child->name) == 0)
            s = FX_ERR_ARG;
    }
    if (s == FX_OK && l->nchildren == l->cap) {
        int cap = l->cap ? 2 * l->cap : 4;
        fx_layer **c = realloc(l->children, (size_t)cap * sizeof *c);
        if (c) {
            l->children = c;
            l->cap = cap;
        } else {
            s = FX_ERR_NOMEM;
        }
    }
    if (s != FX_OK) {
        if (child != l)
            fx_layer_free(child);
        return s;
    }
    l->children[l->nchildren++] = child;
    return FX_OK;
}

int fx_layer_num_children(const fx_layer *l) { return l ? l->nchildren : 0; }

fx_layer *fx_layer_child(const fx_layer *l, int i)
{
    return l && i >= 0 && i < l->nchildren ? l->children[i] : NULL;
}

/* Replaces the user data; the old data is freed with its own free_fn. */
void fx_layer_set_data(fx_layer *l, void *data, void (*free_fn)(void *))
{
    if (!l)
        return;
    if (l->free_data && l->data != data)
        l->free_data(l->data);
    l->data = data;
    l->free_data = free_fn;
}

void *fx_layer_data(const fx_layer *l) { return l ? l->data : NULL; }

/* The layer's forward function: combinators (combinators.c) recognise their own
 * kinds by it before touching a layer's data. */
fx_forward_fn fx__layer_forward_fn(const fx_layer *l) { return l ? l->forward : NULL; }

/* "prefix.name", or name alone for an empty prefix; malloc'd. */
static char *join_name(const char *prefix, const char *name)
{
    size_t a = strlen(prefix), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s)
        return NULL;
    if (a && b)
        snprintf(s, a + b + 2, "%s.%s", prefix, name);
    else
        snprintf(s, a + b + 2, "%s", a ? prefix : name);
    return s;
}

/* Appends l's parameters as "<prefix>.<param>", then its children's, depth
 * first; the prefix grows by each layer's name (an empty name adds none). */
static fx_status collect(const fx_layer *l, const char *parent, fx_params *out)
{
    char *prefix = join_name(parent, l->name);
    if (!prefix)
        return FX_ERR_NOMEM;
    fx_status s = FX_OK;
    for (int i = 0; s == FX_OK && i < l->params.count; i++) {
        char *full = join_name(prefix, l->params.items[i].name);
        s = full ? fx_params_add(out, full, l->params.items[i].tensor) : FX_ERR_NOMEM;
        free(full);
    }
    for (int i = 0; s == FX_OK && i < l->nchildren; i++)
        s = collect(l->children[i], prefix, out);
    free(prefix);
    return s;
}

/* On failure (a name clash, out of memory) out is left as it was. */
fx_status fx_layer_collect_params(const fx_layer *l, fx_params *out)
{
    if (!l || !out)
        return FX_ERR_ARG;
    int count0 = out->count;
    fx_status s = collect(l, "", out);
    if (s != FX_OK) {
        for (int i = count0; i < out->count; i++)
            free(out->items[i].name);
        out->count = count0;
    }
    return s;
}

fx_tensor *fx_param_create(fx_device dev, int ndim, const int64_t *shape, fx_init_kind kind,
                           double a, double b, fx_rng *rng)
{
    fx_tensor *t = fx_tensor_create(dev, FX_F32, ndim, shape);
    if (!t || fx_init_tensor(t, kind, a, b, rng) != FX_OK ||
        fx_tensor_set_requires_grad(t, true) != FX_OK) {
        fx_tensor_free(t);
        return NULL;
    }
    return t;
}

/* ---------------------------------------------------------- activations */

fx_tensor *fx_activate(fx_ctx *ctx, fx_tensor *x, fx_activation act)
{
    switch (act) {
    case FX_ACT_NONE: return x;
    case FX_ACT_RELU: return fx_relu(ctx, x);
    case FX_ACT_SIGMOID: return fx_sigmoid(ctx, x);
    case FX_ACT_TANH: return fx_tanh(ctx, x);
    case FX_ACT_GELU: return fx_gelu(ctx, x);
    case FX_ACT_SOFTMAX: return fx_softmax(ctx, x, -1);
    case FX_ACT_LEAKY_RELU: return fx_leaky_relu(ctx, x, 0.01f);
    case FX_ACT_ELU: return fx_elu(ctx, x, 1.0f);
    case FX_ACT_COUNT: break; /* not an activation */
    }
    if (!ctx || !x)
        return NULL;
    return fx__op_fail(ctx, FX_ERR_ARG, "activate", "unknown activation %d", (int)act);
}

/* ---------------------------------------------------------------- dense */

/* Dense keeps its activation and direct pointers to its parameters (owned
 * by the layer's store) so a forward does no name lookup. */
typedef struct {
    fx_activation act;
    fx_tensor *w, *b; /* b NULL without bias */
    /* fx_layer_prepack_precision's copies of w and b, one per precision
     * (index fx_precision), or NULL */
    fx_packed *pack[2];
} dense_data;

static void dense_free(void *p)
{
    dense_data *d = p;
    if (d) {
        fx__pack_free(d->pack[FX_PREC_F32]);
        fx__pack_free(d->pack[FX_PREC_BF16]);
    }
    free(d);
}

/* With a pack in the context's precision that is still current and grad
 * mode off (nothing to record), the product runs on the packed weights with
 * bias and activation fused (softmax after); otherwise, or when the input
 * does not fit the packed kernels (fx__linear_packed returns NULL without an
 * error), the plain path, in the context's precision. */
static fx_tensor *dense_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    dense_data *d = self->data;
    fx_packed *pack = d->pack[fx_ctx_precision(ctx) == FX_PREC_BF16];
    if (pack && x && !fx_ctx_grad_enabled(ctx)) {
        bool fuse = fx__pack_fusable(d->act);
        fx_tensor *y = fx__linear_packed(ctx, x, d->w, d->b, pack,
                                         fuse ? d->act : FX_ACT_NONE);
        if (y)
            return fuse ? y : fx_activate(ctx, y, d->act);
        if (fx_ctx_status(ctx) != FX_OK)
            return NULL;
    }
    if (x && d->act == FX_ACT_RELU) {
        fx_tensor *y = fx__linear_relu(ctx, x, d->w, d->b);
        if (y || fx_ctx_status(ctx) != FX_OK)
            return y;
    }
    return fx_activate(ctx, fx_linear(ctx, x, d->w, d->b), d->act);
}

static void prepack_one(fx_layer *l, fx_precision prec, fx_status *s, int *n)
{
    if (l->forward == dense_forward) {
        dense_data *d = l->data;
        fx__pack_free(d->pack[prec]);
        d->pack[prec] = NULL;
        if (d->w->device.type == FX_DEV_CPU && d->w->dtype == FX_F32) {
            d->pack[prec] = fx__pack_create_precision(d->w, d->b, prec);
            if (!d->pack[prec] && *s == FX_OK)
                *s = FX_ERR_NOMEM;
            *n += d->pack[prec] != NULL;
        }
    }
    for (int i = 0; i < l->nchildren; i++)
        prepack_one(l->children[i], prec, s, n);
}

fx_status fx_layer_prepack_precision(fx_layer *l, fx_precision p)
{
    if (!l || (p != FX_PREC_F32 && p != FX_PREC_BF16))
        return FX_ERR_ARG;
    fx_status s = FX_OK;
    int n = 0;
    prepack_one(l, p, &s, &n);
    return s;
}

fx_status fx_layer_prepack(fx_layer *l) { return fx_layer_prepack_precision(l, FX_PREC_F32); }

void fx_layer_unpack(fx_layer *l)
{
    if (!l)
        return;
    if (l->forward == dense_forward) {
        dense_data *d = l->data;
        for (int p = 0; p < 2; p++) {
            fx__pack_free(d->pack[p]);
            d->pack[p] = NULL;
        }
    }
    for (int i = 0; i < l->nchildren; i++)
        fx_layer_unpack(l->children[i]);
}

int fx_layer_num_packed(const fx_layer *l)
{
    if (!l)
        return 0;
    int n = 0;
    if (l->forward == dense_forward) {
        const dense_data *d = l->data;
        n += fx__pack_valid(d->pack[FX_PREC_F32], d->w, d->b);
        n += fx__pack_valid(d->pack[FX_PREC_BF16], d->w, d->b);
    }
    for (int i = 0; i < l->nchildren; i++)
        n += fx_layer_num_packed(l->children[i]);
    return n;
}

/*
 * Weight [out,in] initialised with o->init (default Glorot uniform); the
 * kinds that take parameters get PyTorch's nn.Linear scale: UNIFORM is
 * U(-1/sqrt(in), 1/sqrt(in)), NORMAL is N(0, 1/in), CONSTANT is 0 and
 * ORTHOGONAL has gain 1. Bias [out] starts at zero.
 */
fx_layer *fx_dense_create(const char *name, int64_t in, int64_t out, const fx_dense_opts *o,
                          fx_rng *rng)
{
    fx_dense_opts opts = o ? *o : (fx_dense_opts){ 0 };
    if (in <= 0 || out <= 0 || (unsigned)opts.act >= FX_ACT_COUNT)
        return NULL;
    fx_init_kind kind = opts.init ? opts.init : FX_INIT_GLOROT_UNIFORM;
    double s = 1.0 / sqrt((double)in), a = 0.0, b = 0.0;
    if (kind == FX_INIT_UNIFORM)
        a = -s, b = s;
    else if (kind == FX_INIT_NORMAL)
        b = s;
    fx_layer *l = fx_layer_create(name ? name : "dense", dense_forward);
    dense_data *d = calloc(1, sizeof *d);
    if (!l || !d) {
        free(d);
        fx_layer_free(l);
        return NULL;
    }
    fx_layer_set_data(l, d, dense_free);
    d->act = opts.act;
    d->w = fx_param_create(opts.device, 2, (int64_t[]){ out, in }, kind, a, b, rng);
    if (fx_layer_add_param(l, "weight", d->w) != FX_OK)
        goto fail;
    if (!opts.no_bias) {
        d->b = fx_param_create(opts.device, 1, (int64_t[]){ out }, FX_INIT_ZEROS, 0, 0, NULL);
        if (fx_layer_add_param(l, "bias", d->b) != FX_OK)
            goto fail;
    }
    return l;
fail:
    fx_layer_free(l);
    return NULL;
}

/* ---------------------------------------------------------------- chain */

static fx_tensor *chain_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    for (int i = 0; i < self->nchildren && x; i++)
        x = fx_layer_forward(self->children[i], ctx, x);
    return x;
}

/* Takes ownership of every layer, even on failure (all are freed then). */
fx_layer *fx_chain_create(const char *name, int n, fx_layer *const *layers)
{
    fx_layer *l = fx_layer_create(name ? name : "chain", chain_forward);
    bool ok = l && n >= 0 && (n == 0 || layers);
    for (int i = 0; i < n && layers; i++) {
        if (ok && layers[i])
            ok = fx_layer_add_child(l, layers[i]) == FX_OK;
        else {
            ok = false;
            fx_layer_free(layers[i]);
        }
    }
    if (!ok) {
        fx_layer_free(l);
        return NULL;
    }
    return l;
}
