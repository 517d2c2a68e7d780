/* gradcheck.c - central finite differences against fx_backward. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Evaluates the loss with the tape off; NAN (and a message) on failure. */
static double eval_loss(fx_ctx *ctx, fx_loss_fn fn, void *user, const struct fx_rng *rng0,
                        fx_gradcheck_report *r)
{
    fx_ctx_reset(ctx);
    ctx->rng = *rng0; /* dropout masks must repeat between evaluations */
    bool old = fx_ctx_set_grad(ctx, false);
    fx_tensor *loss = fn(ctx, user);
    fx_ctx_set_grad(ctx, old);
    double v = NAN;
    if (!loss || fx_ctx_status(ctx) != FX_OK)
        snprintf(r->message, sizeof r->message, "loss failed: %s", fx_ctx_error(ctx));
    else if (fx_tensor_numel(loss) != 1)
        snprintf(r->message, sizeof r->message, "loss must have one element");
    else
        v = fx_tensor_item(loss);
    return v;
}

static void zero_grads(int n, fx_tensor **wrt)
{
    for (int i = 0; i < n; i++)
        if (wrt[i]->grad)
            fx_tensor_fill(wrt[i]->grad, 0.0);
}

fx_status fx_gradcheck(fx_ctx *ctx, fx_loss_fn loss_fn, void *user, int nwrt, fx_tensor **wrt,
                       const fx_gradcheck_opts *opts, fx_gradcheck_report *report)
{
    fx_gradcheck_report dummy;
    fx_gradcheck_report *r = report ? report : &dummy;
    memset(r, 0, sizeof *r);
    r->worst_tensor = -1;
    if (!ctx || !loss_fn || nwrt < 0 || (nwrt && !wrt)) {
        snprintf(r->message, sizeof r->message, "bad arguments");
        return FX_ERR_ARG;
    }
    double eps = opts && opts->eps > 0 ? opts->eps : 1e-3;
    double rtol = opts && opts->rtol > 0 ? opts->rtol : 1e-2;
    double atol = opts && opts->atol > 0 ? opts->atol : 1e-3;
    int64_t maxk = opts ? opts->max_checks_per_tensor : 0;
    for (int i = 0; i < nwrt; i++) {
        if (!wrt[i] || wrt[i]->dtype != FX_F32 || !(wrt[i]->flags & FX_TENSOR_PERSISTENT)) {
            snprintf(r->message, sizeof r->message,
                     "tensor %d must be a persistent f32 tensor", i);
            return FX_ERR_ARG;
        }
        fx_status s = fx_tensor_set_requires_grad(wrt[i], true);
        if (s != FX_OK) {
            snprintf(r->message, sizeof r->message, "tensor %d: cannot take a gradient", i);
            return s;
        }
    }
    struct fx_rng rng0 = ctx->rng;

    /* Analytic gradients. */
    zero_grads(nwrt, wrt);
    fx_ctx_reset(ctx);
    bool old = fx_ctx_set_grad(ctx, true);
    fx_tensor *loss = loss_fn(ctx, user);
    fx_status st = fx_ctx_status(ctx);
    if (st == FX_OK && loss)
        st = fx_backward(ctx, loss);
    fx_ctx_set_grad(ctx, old);
    if (st != FX_OK || !loss) {
        snprintf(r->message, sizeof r->message, "backward failed: %s", fx_ctx_error(ctx));
        fx_ctx_reset(ctx);
        return st != FX_OK ? st : FX_ERR_ARG;
    }

    fx_status result = FX_OK;
    for (int t = 0; t < nwrt && result == FX_OK; t++) {
        fx_tensor *x = wrt[t];
        int64_t n = fx_tensor_numel(x);
        size_t nb = (size_t)n * sizeof(float);
        float *val = malloc(nb ? nb : 1), *ana = malloc(nb ? nb : 1);
        if (!val || !ana) {
            free(val);
            free(ana);
            snprintf(r->message, sizeof r->message, "out of memory");
            result = FX_ERR_NOMEM;
            break;
        }
        fx_tensor_to_host(x, val, nb);
        fx_tensor_to_host(x->grad, ana, nb);
        int64_t stride = (maxk > 0 && n > maxk) ? (n + maxk - 1) / maxk : 1;
        for (int64_t i = 0; i < n; i += stride) {
            float orig = val[i];
            val[i] = (float)(orig + eps);
            fx_tensor_copy_from_host(x, val, nb);
            double fp = eval_loss(ctx, loss_fn, user, &rng0, r);
            val[i] = (float)(orig - eps);
            fx_tensor_copy_from_host(x, val, nb);
            double fm = eval_loss(ctx, loss_fn, user, &rng0, r);
            val[i] = orig;
            fx_tensor_copy_from_host(x, val, nb);
            if (isnan(fp) || isnan(fm)) {
                result = FX_ERR_VALUE;
                break;
            }
            /* The step actually taken, after rounding to float. */
            double h = (double)(float)(orig + eps) - (double)(float)(orig - eps);
            double num = (fp - fm) / h;
            double a = ana[i], err = fabs(a - num), rel = err / fmax(fabs(num), 1e-12);
            r->checked++;
            bool bad = !(err <= atol + rtol * fabs(num));
            if (bad)
                r->failed++;
            if (err > r->max_abs_err || r->worst_tensor < 0) {
                r->max_abs_err = err;
                r->worst_tensor = t;
                r->worst_index = i;
                r->worst_analytic = a;
                r->worst_numeric = num;
            }
            if (rel > r->max_rel_err && err > atol)
                r->max_rel_err = rel;
        }
        free(val);
        free(ana);
    }
    if (result == FX_OK && r->failed) {
        result = FX_ERR_VALUE;
        snprintf(r->message, sizeof r->message,
                 "%d of %d elements differ; worst: tensor %d element %lld analytic %.6g numeric "
                 "%.6g", r->failed, r->checked, r->worst_tensor, (long long)r->worst_index,
                 r->worst_analytic, r->worst_numeric);
    }
    zero_grads(nwrt, wrt);
    fx_ctx_reset(ctx);
    ctx->rng = rng0;
    return result;
}
