/* op_norm.c - batch norm, layer norm and group norm: the ops
 * (checks, forward, backward, tape) and their layers. The kernels see every
 * normalisation as x (N, C, L) (kern_norm.h): batch norm takes [N,C,*] as
 * (N, C, prod(*)), group norm likewise, and layer norm takes x as
 * (rows, normalised size, 1), one group. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- checks */

/* Checks an optional f32 tensor argument (gamma, beta, running stats): on
 * the context's device and f32. NULL passes. */
static bool check_arg(fx_ctx *ctx, const char *op, const char *what, const fx_tensor *t)
{
    if (!t)
        return true;
    if (t->device.type != ctx->dev.type || t->device.index != ctx->dev.index) {
        char d1[32], d2[32];
        fx__op_fail(ctx, FX_ERR_DEVICE, op, "%s is on %s but the context runs on %s", what,
                    fx_device_str(t->device, d1, sizeof d1),
                    fx_device_str(ctx->dev, d2, sizeof d2));
        return false;
    }
    return fx__op_check_dtype(ctx, op, what, t, FX_F32);
}

/* Checks an optional per-channel tensor: f32, [C] for the C channels of x. */
static bool check_channels(fx_ctx *ctx, const char *op, const char *what, const fx_tensor *t,
                           const fx_tensor *x)
{
    if (!t)
        return true;
    if (!check_arg(ctx, op, what, t))
        return false;
    char b1[96], b2[96];
    int64_t C = x->shape[1];
    if (t->ndim != 1)
        fx__op_fail(ctx, FX_ERR_SHAPE, op,
                    "%s must be [%lld], one entry per channel of x %s, got %s", what, (long long)C,
                    fx_shape_str(x, b1, sizeof b1), fx_shape_str(t, b2, sizeof b2));
    else if (t->shape[0] != C)
        fx__op_fail(ctx, FX_ERR_SHAPE, op, "x has %lld channels, %s has %lld (x is %s)",
                    (long long)C, what, (long long)t->shape[0], fx_shape_str(x, b1, sizeof b1));
    return t->ndim == 1 && t->shape[0] == C;
}

/* eps must be finite and >= 0 (0 is allowed, as in PyTorch). */
static bool check_eps(fx_ctx *ctx, const char *op, float eps)
{
    if (isfinite(eps) && eps >= 0.0f)
        return true;
    fx__op_fail(ctx, FX_ERR_ARG, op, "eps is %g; it must be finite and >= 0", (double)eps);
    return false;
}

/* ------------------------------------------------------ forward, backward */

enum { NORM_BATCH = 0, NORM_GROUP = 1 };

/* The kernels' workspace for x seen as (N, C, L) (kern_norm.h): an arena
 * tensor, or NULL when none is needed (or on OOM, which is recorded). */
static fx_tensor *norm_work(fx_ctx *ctx, const fx_tensor *x3)
{
    int64_t nw = fx_norm_work_size(x3->shape[0], x3->shape[1], x3->shape[2]);
    return nw ? fx_tensor_new(ctx, FX_F32, 1, &nw) : NULL;
}

/* The backward of every normalisation. n->in: x, gamma, beta (either may
 * be NULL); n->saved: x as (N, C, L), mean, rstd; n->i[0]: NORM_BATCH or
 * NORM_GROUP; n->i[1]: batch norm with batch statistics, or the number of
 * groups. */
static void norm_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0], *gamma = n->in[1], *beta = n->in[2];
    fx_tensor *dx = NULL, *dg = NULL, *db = NULL;
    if (fx_tensor_requires_grad(x) && !(dx = fx__grad(ctx, x)))
        return;
    if (fx_tensor_requires_grad(gamma) && !(dg = fx__grad(ctx, gamma)))
        return;
    if (fx_tensor_requires_grad(beta) && !(db = fx__grad(ctx, beta)))
        return;
    fx_tensor *x3 = n->saved[0], *work = norm_work(ctx, x3);
    if (!work && fx_ctx_status(ctx) != FX_OK)
        return;
    const fx_norm_kernels *k = fx_be(x)->norm;
    if (n->i[0] == NORM_BATCH)
        k->batch_norm_backward(x3, gamma, n->saved[1], n->saved[2], n->out->grad, n->i[1] != 0, dx,
                               dg, db, work);
    else
        k->group_norm_backward(x3, n->i[1], gamma, n->saved[1], n->saved[2], n->out->grad, dx, dg,
                               db, work);
}

/* What the normalisations share once their arguments are checked: x is
 * seen as (N, C, L); kind NORM_BATCH keeps C statistics (batch_stats: from
 * the batch, updating rm/rv when given, else from rm/rv), NORM_GROUP keeps
 * N * groups. Makes the operands contiguous, runs the kernel, records the
 * tape. An empty x gives an empty result. */
static fx_tensor *norm_run(fx_ctx *ctx, const char *op, int kind, fx_tensor *x, int64_t N,
                           int64_t C, int64_t L, int64_t groups, fx_tensor *gamma, fx_tensor *beta,
                           fx_tensor *rm, fx_tensor *rv, bool batch_stats, float momentum,
                           float eps)
{
    if (fx_tensor_numel(x) == 0)
        return fx__tensor_new_like(ctx, x);
    x = fx_contiguous(ctx, x);
    gamma = gamma ? fx_contiguous(ctx, gamma) : NULL;
    beta = beta ? fx_contiguous(ctx, beta) : NULL;
    if (!x || fx_ctx_status(ctx) != FX_OK)
        return NULL;
    int64_t nstat = kind == NORM_BATCH ? C : N * groups;
    fx_tensor *x3 = fx__view(ctx, x, 3, (int64_t[]){N, C, L}, (int64_t[]){C * L, L, 1}, x->offset);
    fx_tensor *mean = fx_tensor_new(ctx, FX_F32, 1, &nstat);
    fx_tensor *rstd = fx_tensor_new(ctx, FX_F32, 1, &nstat);
    fx_tensor *y = fx__tensor_new_like(ctx, x);
    fx_tensor *work = x3 && kind == NORM_BATCH ? norm_work(ctx, x3) : NULL;
    if (!x3 || !mean || !rstd || !y || fx_ctx_status(ctx) != FX_OK)
        return NULL;
    const fx_norm_kernels *k = fx_be(x)->norm;
    if (kind == NORM_BATCH)
        k->batch_norm(x3, gamma, beta, rm, rv, batch_stats, momentum, eps, mean, rstd, y, work);
    else
        k->group_norm(x3, groups, gamma, beta, eps, mean, rstd, y);
    fx_node *n = fx__record(ctx, op, norm_backward, y, 3, (fx_tensor *[]){x, gamma, beta});
    if (n) {
        n->saved[0] = x3;
        n->saved[1] = mean;
        n->saved[2] = rstd;
        n->i[0] = kind;
        n->i[1] = kind == NORM_BATCH ? batch_stats : groups;
    }
    return y;
}

/* Batch statistics per channel over N and the trailing dims (fx_norm.h). */
fx_tensor *fx_batch_norm(fx_ctx *ctx, fx_tensor *x, fx_tensor *gamma, fx_tensor *beta,
                         fx_tensor *running_mean, fx_tensor *running_var, float momentum, float eps)
{
    static const char *op = "batch_norm";
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){x}))
        return NULL;
    char b1[96], b2[96];
    if (x->ndim < 2)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "x must be [N,C,...], got %s",
                           fx_shape_str(x, b1, sizeof b1));
    if (!check_channels(ctx, op, "running_mean", running_mean, x) ||
        !check_channels(ctx, op, "running_var", running_var, x) ||
        !check_channels(ctx, op, "gamma", gamma, x) || !check_channels(ctx, op, "beta", beta, x) ||
        !check_eps(ctx, op, eps))
        return NULL;
    if (!running_mean != !running_var)
        return fx__op_fail(
            ctx, FX_ERR_ARG, op,
            "running_mean and running_var go together: running_mean is %s, running_var is %s",
            running_mean ? "given" : "NULL", running_var ? "given" : "NULL");
    /* The kernel updates the running statistics in place. */
    if (running_mean &&
        (!fx_tensor_is_contiguous(running_mean) || !fx_tensor_is_contiguous(running_var)))
        return fx__op_fail(
            ctx, FX_ERR_ARG, op,
            "running_mean and running_var must be contiguous (they are updated in place)");
    if (!(momentum >= 0.0f && momentum <= 1.0f))
        return fx__op_fail(ctx, FX_ERR_ARG, op, "momentum is %g; it must be in [0, 1]",
                           (double)momentum);
    int64_t N = x->shape[0], C = x->shape[1];
    int64_t L = fx__shape_numel(x->ndim - 2, x->shape + 2);
    bool batch_stats = fx_ctx_training(ctx) || !running_mean;
    if (batch_stats && C > 0 && N * L <= 1)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op,
                           "batch statistics need more than one value per channel, x is %s%s",
                           fx_shape_str(x, b2, sizeof b2), running_mean ? " (training mode)" : "");
    return norm_run(ctx, op, NORM_BATCH, x, N, C, L, 1, gamma, beta, running_mean, running_var,
                    batch_stats, momentum, eps);
}

/* Statistics per row of the trailing nshape dims (fx_norm.h). */
fx_tensor *fx_layer_norm(fx_ctx *ctx, fx_tensor *x, int nshape, const int64_t *shape,
                         fx_tensor *gamma, fx_tensor *beta, float eps)
{
    static const char *op = "layer_norm";
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){x}))
        return NULL;
    char b1[96], b2[96], b3[96];
    if (!shape || nshape < 1 || nshape > FX_MAX_DIMS)
        return fx__op_fail(ctx, FX_ERR_ARG, op,
                           "the normalised shape must have 1 to %d dims, got %d%s", FX_MAX_DIMS,
                           nshape, shape ? "" : " (shape is NULL)");
    fx_tensor ns = {.ndim = nshape}; /* the normalised shape, for messages */
    for (int d = 0; d < nshape; d++)
        ns.shape[d] = shape[d];
    fx_shape_str(&ns, b2, sizeof b2);
    bool fits = nshape <= x->ndim;
    for (int d = 0; fits && d < nshape; d++)
        fits = x->shape[x->ndim - nshape + d] == shape[d];
    if (!fits)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "x %s does not end in the normalised shape %s",
                           fx_shape_str(x, b1, sizeof b1), b2);
    fx_tensor *ab[2] = {gamma, beta};
    const char *names[2] = {"gamma", "beta"};
    for (int i = 0; i < 2; i++) {
        if (!check_arg(ctx, op, names[i], ab[i]))
            return NULL;
        if (ab[i] && !fx_tensor_same_shape(ab[i], &ns))
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "%s is %s but the normalised shape is %s",
                               names[i], fx_shape_str(ab[i], b3, sizeof b3), b2);
    }
    if (!check_eps(ctx, op, eps))
        return NULL;
    int64_t D = fx__shape_numel(nshape, shape), R = D ? fx_tensor_numel(x) / D : 0;
    return norm_run(ctx, op, NORM_GROUP, x, R, D, 1, 1, gamma, beta, NULL, NULL, true, 0.0f, eps);
}

/* Statistics per sample and group of channels (fx_norm.h). */
fx_tensor *fx_group_norm(fx_ctx *ctx, fx_tensor *x, int64_t groups, fx_tensor *gamma,
                         fx_tensor *beta, float eps)
{
    static const char *op = "group_norm";
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){x}))
        return NULL;
    char b1[96];
    if (x->ndim < 2)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "x must be [N,C,...], got %s",
                           fx_shape_str(x, b1, sizeof b1));
    int64_t N = x->shape[0], C = x->shape[1];
    if (groups < 1)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "groups is %lld; it must be positive",
                           (long long)groups);
    if (C % groups != 0)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op,
                           "%lld groups do not divide the %lld channels of x %s", (long long)groups,
                           (long long)C, fx_shape_str(x, b1, sizeof b1));
    if (!check_channels(ctx, op, "gamma", gamma, x) || !check_channels(ctx, op, "beta", beta, x) ||
        !check_eps(ctx, op, eps))
        return NULL;
    int64_t L = fx__shape_numel(x->ndim - 2, x->shape + 2);
    return norm_run(ctx, op, NORM_GROUP, x, N, C, L, groups, gamma, beta, NULL, NULL, true, 0.0f,
                    eps);
}

/* ---------------------------------------------------------------- layers */

typedef enum { L_BN1D = 0, L_BN2D, L_LN, L_GN } norm_layer_kind;

/* A layer's configuration and direct pointers to its tensors (owned by the
 * layer's store), so a forward does no name lookup. */
typedef struct {
    norm_layer_kind kind;
    float eps, momentum;
    int64_t groups;
    int nshape;
    int64_t shape[FX_MAX_DIMS];
    fx_tensor *w, *b, *rm, *rv; /* any may be NULL */
} norm_layer;

static fx_tensor *norm_layer_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    norm_layer *d = fx_layer_data(self);
    bool ok = fx_ctx_status(ctx) == FX_OK;
    char b[96];
    fx_tensor *y = NULL;
    switch (d->kind) {
    case L_BN1D:
    case L_BN2D:
        if (d->kind == L_BN1D && x->ndim != 2 && x->ndim != 3)
            fx__op_fail(ctx, FX_ERR_SHAPE, "batchnorm1d", "x must be [N,C] or [N,C,L], got %s",
                        fx_shape_str(x, b, sizeof b));
        else if (d->kind == L_BN2D && x->ndim != 4)
            fx__op_fail(ctx, FX_ERR_SHAPE, "batchnorm2d", "x must be [N,C,H,W], got %s",
                        fx_shape_str(x, b, sizeof b));
        else
            y = fx_batch_norm(ctx, x, d->w, d->b, d->rm, d->rv, d->momentum, d->eps);
        break;
    case L_LN: y = fx_layer_norm(ctx, x, d->nshape, d->shape, d->w, d->b, d->eps); break;
    case L_GN: y = fx_group_norm(ctx, x, d->groups, d->w, d->b, d->eps); break;
    }
    if (!y && ok && fx_ctx_status(ctx) != FX_OK)
        fx__layer_name_error(ctx, self);
    return y;
}

/* Makes the layer around d (copied): weight (ones) and bias (zeros) of
 * shape wshape unless no_affine, and the running statistics [wshape[0]]
 * (zeros and ones) when running. NULL on a bad option or out of memory. */
static fx_layer *norm_layer_create(const char *name, norm_layer d, int wdim, const int64_t *wshape,
                                   const fx_norm_opts *o, bool running)
{
    fx_norm_opts opts = o ? *o : (fx_norm_opts){0};
    double eps = opts.eps ? opts.eps : 1e-5, mom = opts.momentum ? opts.momentum : 0.1;
    if (!(eps > 0.0) || !isfinite(eps) || !(mom > 0.0 && mom <= 1.0) ||
        fx__shape_numel(wdim, wshape) <= 0)
        return NULL;
    d.eps = (float)eps;
    d.momentum = (float)mom;
    fx_layer *l = fx_layer_create(name, norm_layer_forward);
    norm_layer *p = malloc(sizeof *p);
    if (!l || !p) {
        free(p);
        fx_layer_free(l);
        return NULL;
    }
    *p = d;
    fx_layer_set_data(l, p, free);
    fx_device dev = opts.device;
    if (!opts.no_affine) {
        p->w = fx_param_create(dev, wdim, wshape, FX_INIT_CONSTANT, 1.0, 0, NULL);
        if (fx_layer_add_param(l, "weight", p->w) != FX_OK)
            goto fail;
        p->b = fx_param_create(dev, wdim, wshape, FX_INIT_ZEROS, 0, 0, NULL);
        if (fx_layer_add_param(l, "bias", p->b) != FX_OK)
            goto fail;
    }
    if (running && !opts.no_running_stats) {
        p->rm = fx_tensor_create(dev, FX_F32, 1, wshape);
        if (fx_layer_add_buffer(l, "running_mean", p->rm) != FX_OK)
            goto fail;
        p->rv = fx_tensor_create(dev, FX_F32, 1, wshape);
        if (fx_layer_add_buffer(l, "running_var", p->rv) != FX_OK ||
            fx_tensor_fill(p->rv, 1.0) != FX_OK)
            goto fail;
    }
    return l;
fail:
    fx_layer_free(l);
    return NULL;
}

fx_layer *fx_batchnorm1d_create(const char *name, int64_t channels, const fx_norm_opts *o)
{
    return norm_layer_create(name ? name : "batchnorm1d", (norm_layer){.kind = L_BN1D}, 1,
                             &channels, o, true);
}

fx_layer *fx_batchnorm2d_create(const char *name, int64_t channels, const fx_norm_opts *o)
{
    return norm_layer_create(name ? name : "batchnorm2d", (norm_layer){.kind = L_BN2D}, 1,
                             &channels, o, true);
}

fx_layer *fx_layernorm_create(const char *name, int nshape, const int64_t *shape,
                              const fx_norm_opts *o)
{
    if (!shape || nshape < 1 || nshape > FX_MAX_DIMS)
        return NULL;
    norm_layer d = {.kind = L_LN, .nshape = nshape};
    memcpy(d.shape, shape, (size_t)nshape * sizeof *shape);
    return norm_layer_create(name ? name : "layernorm", d, nshape, shape, o, false);
}

fx_layer *fx_groupnorm_create(const char *name, int64_t groups, int64_t channels,
                              const fx_norm_opts *o)
{
    if (groups < 1 || channels % groups != 0)
        return NULL;
    return norm_layer_create(name ? name : "groupnorm",
                             (norm_layer){.kind = L_GN, .groups = groups}, 1, &channels, o, false);
}
