/* loss.c - losses: cross-entropy from labels or soft targets, binary
 * cross-entropy from logits, mean squared error (the CTC loss is in
 * loss_ctc.c).
 *
 * Each kernel-backed loss is one op that gives the per-sample (CE, [N]) or
 * per-element (BCE) losses, with its backward beside it; the reduction to a
 * scalar is an ordinary fx_sum / fx_mean on top, so the gradient of the
 * reduction comes from the reduce op. MSE is composed of sub, mul and the
 * reduction. Every loss checks its result is finite. */
#include "internal.h"

/* Fails with FX_ERR_ARG unless r is a known reduction. */
static bool check_reduction(fx_ctx *ctx, const char *op, fx_reduction r)
{
    if (r == FX_MEAN || r == FX_SUM || r == FX_NONE)
        return true;
    fx__op_fail(ctx, FX_ERR_ARG, op, "unknown reduction %d (use FX_MEAN, FX_SUM or FX_NONE)",
                (int)r);
    return false;
}

/* Fails with FX_ERR_VALUE naming the loss when t has non-finite values. */
static bool loss_finite(fx_ctx *ctx, const char *op, const fx_tensor *t)
{
    int64_t bad = fx_be(t)->red->count_nonfinite(t);
    if (bad == 0)
        return true;
    char b[96];
    fx__op_fail(ctx, FX_ERR_VALUE, op, "%lld of %lld loss values are not finite (shape %s); are "
                "the inputs finite?", (long long)bad, (long long)fx_tensor_numel(t),
                fx_shape_str(t, b, sizeof b));
    return false;
}

/* Reduces the per-sample or per-element losses per (contiguous) as r asks
 * and checks that what comes out is finite. */
static fx_tensor *loss_reduce(fx_ctx *ctx, const char *op, fx_tensor *per, fx_reduction r)
{
    if (!per || !loss_finite(ctx, op, per))
        return NULL;
    if (r == FX_NONE)
        return per;
    if (r == FX_MEAN && fx_tensor_numel(per) == 0) {
        char b[96];
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "the mean of an empty loss %s is undefined",
                           fx_shape_str(per, b, sizeof b));
    }
    fx_tensor *y = r == FX_SUM ? fx_sum(ctx, per, 0, NULL, false)
                               : fx_mean(ctx, per, 0, NULL, false);
    return y && loss_finite(ctx, op, y) ? y : NULL;
}

/* Fails unless logits is [N,C]. */
static bool check_logits(fx_ctx *ctx, const char *op, const fx_tensor *logits)
{
    if (logits->ndim == 2)
        return true;
    char b[96];
    fx__op_fail(ctx, FX_ERR_SHAPE, op, "logits must be [N,C], got %s",
                fx_shape_str(logits, b, sizeof b));
    return false;
}

/* Fails unless a and b have one shape (wa and wb name them). */
static bool check_same_shape(fx_ctx *ctx, const char *op, const char *wa, const fx_tensor *a,
                             const char *wb, const fx_tensor *b)
{
    if (fx_tensor_same_shape(a, b))
        return true;
    char s1[96], s2[96];
    fx__op_fail(ctx, FX_ERR_SHAPE, op, "%s is %s but %s is %s; the shapes must be equal", wa,
                fx_shape_str(a, s1, sizeof s1), wb, fx_shape_str(b, s2, sizeof s2));
    return false;
}

/* ------------------------------------------------- cross-entropy, labels */

static void ce_labels_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *logits = n->in[0], *labels = n->in[1];
    if (!fx_tensor_requires_grad(logits))
        return;
    fx_tensor *dx = fx__grad(ctx, logits);
    if (dx)
        fx_be(logits)->loss->ce_labels_backward(logits, labels, n->out->grad, dx);
}

/* Checks the labels of a [N,C] logits tensor: on the context's device,
 * i32/i64, shape [N]. */
static bool check_labels(fx_ctx *ctx, const char *op, const fx_tensor *logits,
                         const fx_tensor *labels)
{
    char s1[96], s2[96];
    if (labels->device.type != ctx->dev.type || labels->device.index != ctx->dev.index) {
        fx__op_fail(ctx, FX_ERR_DEVICE, op, "labels are on %s but the context runs on %s",
                    fx_device_str(labels->device, s1, sizeof s1),
                    fx_device_str(ctx->dev, s2, sizeof s2));
        return false;
    }
    if (labels->dtype != FX_I32 && labels->dtype != FX_I64) {
        fx__op_fail(ctx, FX_ERR_DTYPE, op, "labels must be i32 or i64, got %s %s",
                    fx_dtype_name(labels->dtype), fx_shape_str(labels, s1, sizeof s1));
        return false;
    }
    if (labels->ndim != 1 || labels->shape[0] != logits->shape[0]) {
        fx__op_fail(ctx, FX_ERR_SHAPE, op, "labels must be [%lld] for logits %s, got %s",
                    (long long)logits->shape[0], fx_shape_str(logits, s1, sizeof s1),
                    fx_shape_str(labels, s2, sizeof s2));
        return false;
    }
    return true;
}

/* Per-sample loss logsumexp(logits[n]) - logits[n, labels[n]]: [N]. */
static fx_tensor *ce_labels(fx_ctx *ctx, const char *op, fx_tensor *logits, fx_tensor *labels)
{
    logits = fx_contiguous(ctx, logits);
    labels = fx_contiguous(ctx, labels);
    fx_tensor *loss = logits && labels ? fx_tensor_new(ctx, FX_F32, 1, logits->shape) : NULL;
    if (!loss)
        return NULL;
    int64_t bad = fx_be(logits)->loss->ce_labels(logits, labels, loss);
    if (bad >= 0) {
        /* Read the offending label through a one-element view (any device). */
        int64_t off = labels->offset + bad * labels->strides[0];
        fx_tensor *v = fx__view(ctx, labels, 0, NULL, NULL, off);
        char b[96];
        return fx__op_fail(ctx, FX_ERR_VALUE, op, "label %lld of sample %lld is out of range "
                           "[0, %lld) for logits %s", v ? (long long)fx_tensor_item(v) : -1LL,
                           (long long)bad, (long long)logits->shape[1],
                           fx_shape_str(logits, b, sizeof b));
    }
    fx__record(ctx, op, ce_labels_backward, loss, 2, (fx_tensor *[]){ logits, labels });
    return loss;
}

fx_tensor *fx_cross_entropy(fx_ctx *ctx, fx_tensor *logits, fx_tensor *labels, fx_reduction r)
{
    static const char *op = "cross_entropy";
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){ logits }))
        return NULL;
    if (!labels)
        return ctx->status == FX_OK ? fx__op_fail(ctx, FX_ERR_ARG, op, "labels are NULL") : NULL;
    if (!check_reduction(ctx, op, r) || !check_logits(ctx, op, logits) ||
        !check_labels(ctx, op, logits, labels))
        return NULL;
    return loss_reduce(ctx, op, ce_labels(ctx, op, logits, labels), r);
}

/* -------------------------------------------- cross-entropy, soft targets */

static void ce_soft_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *logits = n->in[0], *probs = n->in[1];
    fx_tensor *dx = fx_tensor_requires_grad(logits) ? fx__grad(ctx, logits) : NULL;
    fx_tensor *dp = fx_tensor_requires_grad(probs) ? fx__grad(ctx, probs) : NULL;
    if (dx || dp)
        fx_be(logits)->loss->ce_soft_backward(logits, probs, n->out->grad, dx, dp);
}

fx_tensor *fx_cross_entropy_soft(fx_ctx *ctx, fx_tensor *logits, fx_tensor *probs, fx_reduction r)
{
    static const char *op = "cross_entropy_soft";
    if (!fx__op_check(ctx, op, 2, (fx_tensor *[]){ logits, probs }) ||
        !check_reduction(ctx, op, r) || !check_logits(ctx, op, logits) ||
        !check_same_shape(ctx, op, "logits", logits, "probs", probs))
        return NULL;
    logits = fx_contiguous(ctx, logits);
    probs = fx_contiguous(ctx, probs);
    fx_tensor *loss = logits && probs ? fx_tensor_new(ctx, FX_F32, 1, logits->shape) : NULL;
    if (!loss)
        return NULL;
    fx_be(logits)->loss->ce_soft(logits, probs, loss);
    fx__record(ctx, op, ce_soft_backward, loss, 2, (fx_tensor *[]){ logits, probs });
    return loss_reduce(ctx, op, loss, r);
}

/* ------------------------------------------------- binary cross-entropy */

static void bce_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0], *t = n->in[1];
    fx_tensor *dx = fx_tensor_requires_grad(x) ? fx__grad(ctx, x) : NULL;
    fx_tensor *dt = fx_tensor_requires_grad(t) ? fx__grad(ctx, t) : NULL;
    if (dx || dt)
        fx_be(x)->loss->bce_logits_backward(x, t, n->out->grad, dx, dt);
}

fx_tensor *fx_bce_with_logits(fx_ctx *ctx, fx_tensor *logits, fx_tensor *targets, fx_reduction r)
{
    static const char *op = "bce_with_logits";
    if (!fx__op_check(ctx, op, 2, (fx_tensor *[]){ logits, targets }) ||
        !check_reduction(ctx, op, r) ||
        !check_same_shape(ctx, op, "logits", logits, "targets", targets))
        return NULL;
    logits = fx_contiguous(ctx, logits);
    targets = fx_contiguous(ctx, targets);
    fx_tensor *loss = logits && targets ? fx__tensor_new_like(ctx, logits) : NULL;
    if (!loss)
        return NULL;
    fx_be(logits)->loss->bce_logits(logits, targets, loss);
    fx__record(ctx, op, bce_backward, loss, 2, (fx_tensor *[]){ logits, targets });
    return loss_reduce(ctx, op, loss, r);
}

/* --------------------------------------------------- mean squared error */

/* (pred - target)^2 from sub and mul: their backwards give both gradients. */
fx_tensor *fx_mse_loss(fx_ctx *ctx, fx_tensor *pred, fx_tensor *target, fx_reduction r)
{
    static const char *op = "mse_loss";
    if (!fx__op_check(ctx, op, 2, (fx_tensor *[]){ pred, target }) ||
        !check_reduction(ctx, op, r) ||
        !check_same_shape(ctx, op, "pred", pred, "target", target))
        return NULL;
    fx_tensor *d = fx_sub(ctx, pred, target);
    return loss_reduce(ctx, op, fx_mul(ctx, d, d), r);
}
