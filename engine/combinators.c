/* combinators.c - combinators (residual, parallel, heads) and the gradient
 * reversal layer (its op, fx_grad_reverse, is in op_copy.c).
 *
 * The combinators are ordinary layers built with the public layer API: the
 * layers they combine are their children (so parameters get dotted names)
 * and their configuration is the layer's data. A combinator's forward only
 * calls other layers and existing ops, so its backward is the tape's. The
 * forward function identifies a layer's kind (fx__layer_forward_fn) before
 * its data is read. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Frees n layers that a failed constructor was given (it owns them). */
static void free_layers(int n, fx_layer *const *ls)
{
    for (int i = 0; ls && i < n; i++)
        fx_layer_free(ls[i]);
}

/* A new layer with the given forward, a malloc'd copy of cfg as its data and
 * the n given layers (NULL entries skipped) as children. Takes ownership of
 * the layers: on any failure all of them are freed and NULL is returned. */
static fx_layer *combinator(const char *name, fx_forward_fn fwd, const void *cfg, size_t cfg_size,
                            int n, fx_layer *const *ls)
{
    fx_layer *l = fx_layer_create(name, fwd);
    void *d = malloc(cfg_size);
    if (!l || !d) {
        free(d);
        fx_layer_free(l);
        free_layers(n, ls);
        return NULL;
    }
    memcpy(d, cfg, cfg_size);
    fx_layer_set_data(l, d, free);
    bool ok = true;
    for (int i = 0; i < n; i++) {
        if (ok && ls[i])
            ok = fx_layer_add_child(l, ls[i]) == FX_OK; /* frees ls[i] on failure */
        else if (ls[i])
            fx_layer_free(ls[i]);
    }
    if (!ok) {
        fx_layer_free(l);
        return NULL;
    }
    return l;
}

static bool valid_act(fx_activation act) { return (unsigned)act < FX_ACT_COUNT; }

/* ------------------------------------------------------------- residual */

typedef struct {
    fx_activation act;
    bool has_shortcut; /* child 1; else the identity */
} residual_cfg;

/* y = act(body(x) + shortcut(x)). The sum is checked for equal shapes
 * first: fx_add would broadcast, and a residual that silently broadcasts a
 * mis-sized shortcut is a wrong answer, not a model. */
static fx_tensor *residual_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    const residual_cfg *c = fx_layer_data(self);
    fx_tensor *y = fx_layer_forward(fx_layer_child(self, 0), ctx, x);
    fx_tensor *s = c->has_shortcut ? fx_layer_forward(fx_layer_child(self, 1), ctx, x) : x;
    if (!y || !s)
        return NULL;
    if (!fx_tensor_same_shape(y, s)) {
        char a[96], b[96];
        return fx__op_fail(ctx, FX_ERR_SHAPE, "residual",
                           "'%s': body output is %s but the %s gives %s; they must be equal%s",
                           fx_layer_name(self), fx_shape_str(y, a, sizeof a),
                           c->has_shortcut ? "shortcut" : "identity shortcut (the input)",
                           fx_shape_str(s, b, sizeof b),
                           c->has_shortcut ? "" : " (use a projection shortcut)");
    }
    return fx_activate(ctx, fx_add(ctx, y, s), c->act);
}

fx_layer *fx_residual_create(const char *name, fx_layer *body, fx_layer *shortcut,
                             fx_activation act)
{
    if (!body || !valid_act(act)) {
        fx_layer_free(body);
        fx_layer_free(shortcut);
        return NULL;
    }
    residual_cfg c = { act, shortcut != NULL };
    return combinator(name ? name : "residual", residual_forward, &c, sizeof c, 2,
                      (fx_layer *[]){ body, shortcut });
}

/* ------------------------------------------------------------- parallel */

typedef struct {
    fx_join_mode join;
    int axis;
} parallel_cfg;

/* Checks that branch outputs ys[0..n) can be joined; records an error naming
 * the layer and the first branch that does not fit. For concat, *axis is
 * normalised. */
static bool check_join(fx_layer *self, fx_ctx *ctx, int n, fx_tensor **ys, fx_join_mode join,
                       int *axis)
{
    char a[96], b[96];
    const char *nm = fx_layer_name(self);
    fx_tensor *y0 = ys[0];
    if (join == FX_JOIN_CONCAT) {
        int ax = *axis < 0 ? *axis + y0->ndim : *axis;
        if (ax < 0 || ax >= y0->ndim) {
            fx__op_fail(ctx, FX_ERR_AXIS, "parallel",
                        "'%s': concat axis %d is out of range for branch outputs of rank %d (%s)",
                        nm, *axis, y0->ndim, fx_shape_str(y0, a, sizeof a));
            return false;
        }
        *axis = ax;
    }
    for (int i = 1; i < n; i++) {
        fx_tensor *y = ys[i];
        bool ok = y->ndim == y0->ndim;
        for (int d = 0; ok && d < y->ndim; d++)
            ok = y->shape[d] == y0->shape[d] || (join == FX_JOIN_CONCAT && d == *axis);
        if (!ok) {
            if (join == FX_JOIN_ADD)
                fx__op_fail(ctx, FX_ERR_SHAPE, "parallel",
                            "'%s': branch %d gives %s but branch 0 gives %s; an add join needs "
                            "equal shapes",
                            nm, i, fx_shape_str(y, a, sizeof a), fx_shape_str(y0, b, sizeof b));
            else
                fx__op_fail(ctx, FX_ERR_SHAPE, "parallel",
                            "'%s': branch %d gives %s but branch 0 gives %s; a concat join along "
                            "axis %d needs the same rank and equal sizes on the other axes",
                            nm, i, fx_shape_str(y, a, sizeof a), fx_shape_str(y0, b, sizeof b),
                            *axis);
            return false;
        }
    }
    return true;
}

/* Runs every branch on x, then joins: a running sum, or one concat. The
 * output list lives in the context's arena (no heap allocation per step). */
static fx_tensor *parallel_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    const parallel_cfg *c = fx_layer_data(self);
    int n = fx_layer_num_children(self);
    fx_tensor **ys = fx__ctx_alloc_meta(ctx, (size_t)n * sizeof *ys);
    if (!ys)
        return NULL;
    bool ok = true;
    for (int i = 0; i < n; i++)
        ok &= (ys[i] = fx_layer_forward(fx_layer_child(self, i), ctx, x)) != NULL;
    int axis = c->axis;
    if (!ok || !check_join(self, ctx, n, ys, c->join, &axis))
        return NULL;
    if (c->join == FX_JOIN_CONCAT)
        return n == 1 ? ys[0] : fx_concat(ctx, n, ys, axis);
    fx_tensor *y = ys[0];
    for (int i = 1; i < n; i++)
        y = fx_add(ctx, y, ys[i]);
    return y;
}

fx_layer *fx_parallel_create(const char *name, int n, fx_layer *const *branches,
                             fx_join_mode join, int axis)
{
    bool ok = n >= 1 && branches && (join == FX_JOIN_ADD || join == FX_JOIN_CONCAT);
    for (int i = 0; ok && i < n; i++)
        ok = branches[i] != NULL;
    if (!ok) {
        free_layers(n, branches);
        return NULL;
    }
    parallel_cfg c = { join, axis };
    return combinator(name ? name : "parallel", parallel_forward, &c, sizeof c, n, branches);
}

/* ---------------------------------------------------------------- heads */

typedef struct {
    int nheads;
    bool has_trunk; /* child 0; the heads follow */
} heads_cfg;

/* Runs the trunk once and every head on its output into out[0..nheads). */
static void heads_run(fx_layer *self, fx_ctx *ctx, fx_tensor *x, fx_tensor **out)
{
    const heads_cfg *c = fx_layer_data(self);
    fx_tensor *h = c->has_trunk ? fx_layer_forward(fx_layer_child(self, 0), ctx, x) : x;
    for (int i = 0; i < c->nheads; i++)
        out[i] = h ? fx_layer_forward(fx_layer_child(self, c->has_trunk + i), ctx, h) : NULL;
}

/* As a plain layer (one output), a heads layer must have a single head. */
static fx_tensor *heads_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    const heads_cfg *c = fx_layer_data(self);
    if (c->nheads != 1)
        return fx__op_fail(ctx, FX_ERR_ARG, "heads",
                           "'%s' has %d outputs; run it with fx_layer_forward_multi",
                           fx_layer_name(self), c->nheads);
    fx_tensor *y;
    heads_run(self, ctx, x, &y);
    return y;
}

fx_layer *fx_heads_create(const char *name, fx_layer *trunk, int n, fx_layer *const *heads)
{
    bool ok = n >= 1 && heads;
    for (int i = 0; ok && i < n; i++)
        ok = heads[i] != NULL;
    fx_layer **all = ok ? malloc((size_t)(n + 1) * sizeof *all) : NULL;
    if (!all) {
        fx_layer_free(trunk);
        free_layers(n, heads);
        return NULL;
    }
    all[0] = trunk;
    memcpy(all + 1, heads, (size_t)n * sizeof *all);
    heads_cfg c = { n, trunk != NULL };
    fx_layer *l = combinator(name ? name : "heads", heads_forward, &c, sizeof c, n + 1, all);
    free(all);
    return l;
}

int fx_layer_num_outputs(const fx_layer *l)
{
    if (!l)
        return 0;
    return fx__layer_forward_fn(l) == heads_forward ? ((const heads_cfg *)fx_layer_data(l))->nheads
                                                   : 1;
}

fx_status fx_layer_forward_multi(fx_layer *l, fx_ctx *ctx, fx_tensor *x, int nout,
                                 fx_tensor **out)
{
    if (!ctx)
        return FX_ERR_ARG;
    if (!out || nout < 1) {
        fx_ctx_fail(ctx, FX_ERR_ARG, "layer_forward_multi: %s", out ? "nout < 1" : "out is NULL");
        return ctx->status;
    }
    for (int i = 0; i < nout; i++)
        out[i] = NULL;
    int have = fx_layer_num_outputs(l);
    if (l && have != nout) {
        fx_ctx_fail(ctx, FX_ERR_ARG, "layer_forward_multi: %s '%s' has %d output%s, asked for %d",
                    fx__layer_forward_fn(l) == heads_forward ? "heads" : "layer", fx_layer_name(l),
                    have, have == 1 ? "" : "s", nout);
        return ctx->status;
    }
    if (l && x && fx__layer_forward_fn(l) == heads_forward)
        heads_run(l, ctx, x, out);
    else
        out[0] = fx_layer_forward(l, ctx, x); /* also explains a NULL l or x */
    fx_status s = ctx->status;
    if (s != FX_OK)
        for (int i = 0; i < nout; i++)
            out[i] = NULL;
    return s;
}

/* ----------------------------------------------------------- activation */

static fx_tensor *activation_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    return fx_activate(ctx, x, *(const fx_activation *)fx_layer_data(self));
}

fx_layer *fx_activation_create(const char *name, fx_activation act)
{
    if (!valid_act(act))
        return NULL;
    return combinator(name ? name : "activation", activation_forward, &act, sizeof act, 0, NULL);
}

/* --------------------------------------------------------- grad reverse */

static fx_tensor *grad_reverse_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    return fx_grad_reverse(ctx, x, *(const float *)fx_layer_data(self));
}

fx_layer *fx_grad_reverse_create(const char *name, float lambda)
{
    if (!isfinite(lambda))
        return NULL;
    return combinator(name ? name : "grad_reverse", grad_reverse_forward, &lambda, sizeof lambda,
                      0, NULL);
}

fx_status fx_grad_reverse_set_lambda(fx_layer *l, float lambda)
{
    if (fx__layer_forward_fn(l) != grad_reverse_forward || !isfinite(lambda))
        return FX_ERR_ARG;
    *(float *)fx_layer_data(l) = lambda;
    return FX_OK;
}
