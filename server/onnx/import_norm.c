/*
 * import_norm.c - ONNX BatchNormalization, LayerNormalization,
 * InstanceNormalization and GroupNormalization -> the engine's
 * batchnorm1d/2d, layernorm and groupnorm. Scales, biases and running
 * statistics must be constants (initializers): they become the layer's
 * parameters and buffers. PyTorch 1.13 exports nn.GroupNorm as Reshape
 * [N, G, -1] -> InstanceNormalization (unit scale) -> Reshape -> Mul -> Add,
 * so InstanceNormalization (a groupnorm with one channel per group) is what
 * makes its GroupNorm import.
 */
#include "onnx/import_layers.h"

#include <math.h>
#include <string.h>

#include "base/status.h"

/* The value's shape as given (the normalisations keep it). */
static int define_like(fxon_ctx *cx, const Onnx__NodeProto *n, Fluxion__V1__Node *node,
                       const fxon_value *x)
{
    return fxon_define(cx, n->output[0], node, 0, FXON_FLOAT, x->ndim, x->shape);
}

static int check_eps(fxon_ctx *cx, double eps)
{
    if (!(eps > 0 && eps <= 1))
        return fxon_fail(cx, "attribute 'epsilon' %g is out of the engine's range (0, 1]", eps);
    return 0;
}

/* A per-channel constant input i with exactly C values. */
static int channel_weight(fxon_ctx *cx, const Onnx__NodeProto *n, int i, int64_t C,
                          const fxon_const **c)
{
    int rc = fxon__weight(cx, n, i, -1, c);
    if (rc)
        return rc;
    if ((*c)->numel != C)
        return fxon_fail(cx, "input %d ('%s') has %lld values, expected %lld", i, fxon_in(n, i),
                         (long long)(*c)->numel, (long long)C);
    return 0;
}

static int param_vec(fxon_ctx *cx, Fluxion__V1__Node *node, const char *name, const fxon_const *c,
                     int64_t C)
{
    float *p = fxon_param(cx, node, name, 1, &C);
    if (!p)
        return FXS_INVALID_ARGUMENT;
    memcpy(p, c->f, (size_t)C * sizeof(float));
    return 0;
}

int fxon__cv_batchnorm(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = fxon_attrs_known(cx, n, (const char *const[]){ "epsilon", "momentum",
                                                             "training_mode", NULL });
    if (rc || (rc = fxon__only_first_output(cx, n)))
        return rc;
    int64_t training;
    double eps, momentum;
    if ((rc = fxon_attr_int(cx, n, "training_mode", 0, &training)) ||
        (rc = fxon_attr_float(cx, n, "epsilon", 1e-5, &eps)) ||
        (rc = fxon_attr_float(cx, n, "momentum", 0.9, &momentum)) || (rc = check_eps(cx, eps)))
        return rc;
    if (training)
        return fxon_fail(cx, "attribute 'training_mode' 1 is not supported (export in eval mode)");
    fxon_value *x;
    const char *xref;
    if ((rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_ref(cx, n, 0, &xref)))
        return rc;
    if (x->ndim < 2 || x->ndim > 4)
        return fxon_fail(cx, "input 0 ('%s') has rank %d: the engine's batch norms take "
                         "[N, C], [N, C, L] or [N, C, H, W]", x->name, x->ndim);
    const fxon_const *scale;
    if ((rc = fxon__weight(cx, n, 1, 1, &scale)))
        return rc;
    int64_t C = scale->numel;
    if (x->shape[1] >= 0 && x->shape[1] != C)
        return fxon_fail(cx, "input 0 ('%s') has %lld channels, the scale %lld", x->name,
                         (long long)x->shape[1], (long long)C);
    const fxon_const *bias, *mean, *var;
    if ((rc = channel_weight(cx, n, 2, C, &bias)) || (rc = channel_weight(cx, n, 3, C, &mean)) ||
        (rc = channel_weight(cx, n, 4, C, &var)))
        return rc;
    for (int64_t c = 0; c < C; c++)
        if (!(var->f[c] >= 0) || !isfinite(mean->f[c]))
            return fxon_fail(cx, "input 4 ('%s') or 3: channel %lld has a negative or non-finite "
                             "running statistic", fxon_in(n, 4), (long long)c);
    Fluxion__V1__Node *node = fxon_emit(cx, x->ndim == 4 ? "batchnorm2d" : "batchnorm1d",
                                        fxon__layer_hint(cx, n),
                                        1, &xref);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    /* ONNX: running = momentum running + (1 - momentum) batch; PyTorch's
     * momentum weighs the batch. Out of the engine's range: its default. */
    double tm = 1.0 - momentum;
    if (!(tm >= 1e-9 && tm <= 1))
        tm = 0.1;
    if ((rc = fxon_set_int(cx, node, "num_features", C)) ||
        (rc = fxon_set_float(cx, node, "eps", eps)) ||
        (rc = fxon_set_float(cx, node, "momentum", tm)) ||
        (rc = param_vec(cx, node, "weight", scale, C)) ||
        (rc = param_vec(cx, node, "bias", bias, C)) ||
        (rc = param_vec(cx, node, "running_mean", mean, C)) ||
        (rc = param_vec(cx, node, "running_var", var, C)))
        return rc;
    return define_like(cx, n, node, x);
}

int fxon__cv_layernorm(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = fxon_attrs_known(cx, n, (const char *const[]){ "axis", "epsilon", "stash_type",
                                                             NULL });
    if (rc || (rc = fxon__only_first_output(cx, n)))
        return rc;
    int64_t axis, stash;
    double eps;
    if ((rc = fxon_attr_int(cx, n, "axis", -1, &axis)) ||
        (rc = fxon_attr_float(cx, n, "epsilon", 1e-5, &eps)) ||
        (rc = fxon_attr_int(cx, n, "stash_type", 1, &stash)) || (rc = check_eps(cx, eps)))
        return rc;
    if (stash != 1)
        return fxon_fail(cx, "attribute 'stash_type' %lld is not supported (the engine "
                         "computes in float)", (long long)stash);
    fxon_value *x;
    const char *xref;
    const fxon_const *scale, *bias = NULL;
    if ((rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_ref(cx, n, 0, &xref)) ||
        (rc = fxon__weight(cx, n, 1, -1, &scale)))
        return rc;
    if (x->ndim < 1)
        return fxon_fail(cx, "input 0 ('%s') needs a known rank", x->name);
    int ax;
    if ((rc = fxon_axis(cx, "axis", axis, x->ndim, &ax)))
        return rc;
    int nd = x->ndim - ax;
    /* The scale may broadcast ([1, ..., D]); the engine's is the
     * normalised shape itself, so the trailing dims must be static. */
    int64_t shape[FXON_MAX_DIMS], numel = 1;
    for (int d = 0; d < nd; d++) {
        shape[d] = x->shape[ax + d];
        int sd = scale->ndim - nd + d;
        int64_t sdim = sd >= 0 ? scale->shape[sd] : 1;
        if (shape[d] < 0)
            shape[d] = sdim;
        if (sdim != shape[d] && sdim != 1)
            return fxon_fail(cx, "input 1 ('%s') does not match the normalised dims of input 0",
                             fxon_in(n, 1));
        numel *= shape[d];
    }
    if (scale->ndim > nd)
        return fxon_fail(cx, "input 1 ('%s') has more dims than the normalised ones",
                         fxon_in(n, 1));
    if (scale->numel != numel)
        return fxon_fail(cx, "input 1 ('%s') has %lld values; a broadcast scale needs static "
                         "normalised dims (%lld values)", fxon_in(n, 1),
                         (long long)scale->numel, (long long)numel);
    if (fxon_in(n, 2)) {
        if ((rc = fxon__weight(cx, n, 2, -1, &bias)))
            return rc;
        if (bias->numel != numel)
            return fxon_fail(cx, "input 2 ('%s') has %lld values, expected %lld", fxon_in(n, 2),
                             (long long)bias->numel, (long long)numel);
    }
    Fluxion__V1__Node *node = fxon_emit(cx, "layernorm",
                                        fxon__layer_hint(cx, n),
                                        1, &xref);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    if ((rc = fxon_set_ints(cx, node, "normalized_shape", shape, (size_t)nd)) ||
        (rc = fxon_set_float(cx, node, "eps", eps)))
        return rc;
    /* No B: the engine's affine layer takes a zero bias (the same map). */
    float *w = fxon_param(cx, node, "weight", nd, shape), *b;
    if (!w || !(b = fxon_param(cx, node, "bias", nd, shape)))
        return FXS_INVALID_ARGUMENT;
    memcpy(w, scale->f, (size_t)numel * sizeof(float));
    if (bias)
        memcpy(b, bias->f, (size_t)numel * sizeof(float));
    return define_like(cx, n, node, x);
}

/* groupnorm with per-channel affine weights (weight NULL: ones; bias NULL:
 * zeros). */
static int emit_groupnorm(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_value *x,
                          const char *xref, int64_t groups, int64_t C, double eps,
                          const float *weight, const float *bias, const char *hint)
{
    Fluxion__V1__Node *node = fxon_emit(cx, "groupnorm", hint, 1, &xref);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    int rc;
    if ((rc = fxon_set_int(cx, node, "num_groups", groups)) ||
        (rc = fxon_set_int(cx, node, "num_channels", C)) ||
        (rc = fxon_set_float(cx, node, "eps", eps)))
        return rc;
    float *w = fxon_param(cx, node, "weight", 1, &C), *b;
    if (!w || !(b = fxon_param(cx, node, "bias", 1, &C)))
        return FXS_INVALID_ARGUMENT;
    for (int64_t c = 0; c < C; c++) {
        w[c] = weight ? weight[c] : 1.0f;
        b[c] = bias ? bias[c] : 0.0f;
    }
    return define_like(cx, n, node, x);
}

static int norm_input(fxon_ctx *cx, const Onnx__NodeProto *n, fxon_value **x, const char **xref)
{
    int rc = fxon_input(cx, n, 0, x);
    if (rc || (rc = fxon_need_ref(cx, n, 0, xref)))
        return rc;
    if ((*x)->ndim < 3 && (*x)->ndim != -1)
        return fxon_fail(cx, "input 0 ('%s') has rank %d, expected [N, C, ...] with at least "
                         "one spatial dim", (*x)->name, (*x)->ndim);
    return 0;
}

int fxon__cv_instancenorm(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = fxon_attrs_known(cx, n, (const char *const[]){ "epsilon", NULL });
    double eps;
    fxon_value *x;
    const char *xref;
    const fxon_const *scale, *bias;
    if (rc || (rc = fxon_attr_float(cx, n, "epsilon", 1e-5, &eps)) || (rc = check_eps(cx, eps)) ||
        (rc = norm_input(cx, n, &x, &xref)) || (rc = fxon__weight(cx, n, 1, 1, &scale)))
        return rc;
    int64_t C = scale->numel;
    if ((rc = channel_weight(cx, n, 2, C, &bias)))
        return rc;
    if (x->ndim > 1 && x->shape[1] >= 0 && x->shape[1] != C)
        return fxon_fail(cx, "input 0 ('%s') has %lld channels, the scale %lld", x->name,
                         (long long)x->shape[1], (long long)C);
    return emit_groupnorm(cx, n, x, xref, C, C, eps, scale->f, bias->f, NULL);
}

/* Opsets 18-20 scale per group ([G]), 21 and later per channel ([C]). */
int fxon__cv_groupnorm(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    int rc = fxon_attrs_known(cx, n, (const char *const[]){ "epsilon", "num_groups",
                                                             "stash_type", NULL });
    double eps;
    int64_t groups, stash;
    fxon_value *x;
    const char *xref;
    const fxon_const *scale, *bias;
    if (rc || (rc = fxon_attr_float(cx, n, "epsilon", 1e-5, &eps)) || (rc = check_eps(cx, eps)) ||
        (rc = fxon_attr_int(cx, n, "num_groups", 0, &groups)) ||
        (rc = fxon_attr_int(cx, n, "stash_type", 1, &stash)) ||
        (rc = norm_input(cx, n, &x, &xref)) || (rc = fxon__weight(cx, n, 1, 1, &scale)) ||
        (rc = fxon__weight(cx, n, 2, 1, &bias)))
        return rc;
    if (stash != 1)
        return fxon_fail(cx, "attribute 'stash_type' %lld is not supported", (long long)stash);
    int64_t C = x->ndim > 1 ? x->shape[1] : -1;
    if (C < 1)
        return fxon_fail(cx, "input 0 ('%s') needs a static channel dim", x->name);
    if (groups < 1 || C % groups)
        return fxon_fail(cx, "attribute 'num_groups' %lld does not divide the %lld channels",
                         (long long)groups, (long long)C);
    int64_t want = cx->opset >= 21 ? C : groups;
    if (scale->numel != want || bias->numel != want)
        return fxon_fail(cx, "inputs 1 and 2 must have %lld values at opset %lld (%lld and %lld)",
                         (long long)want, (long long)cx->opset, (long long)scale->numel,
                         (long long)bias->numel);
    const float *w = scale->f, *b = bias->f;
    if (want != C) {
        float *wc = fxon_alloc(cx, (size_t)C * sizeof(float));
        float *bc = fxon_alloc(cx, (size_t)C * sizeof(float));
        if (!wc || !bc)
            return FXS_RESOURCE_EXHAUSTED;
        fxon__groups_to_channels(wc, scale->f, groups, C);
        fxon__groups_to_channels(bc, bias->f, groups, C);
        w = wc;
        b = bc;
    }
    return emit_groupnorm(cx, n, x, xref, groups, C, eps, w, b,
                          fxon__layer_hint(cx, n));
}
