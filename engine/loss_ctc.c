/* loss_ctc.c - the connectionist temporal classification loss (declared
 * with the other losses in fluxion.h). One tape record holds the per-sample
 * losses: the alpha recursion runs forward, the beta recursion and the
 * gradient backward (kernels in the loss family, kern_loss.h); the reduction
 * is composed on top from ordinary ops. */
#include "internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* The per-sample losses' record: in[0] log_probs, in[1..2] input_lengths,
 * target_lengths; saved alpha, nll and the extended labels. */
static fx_ctc_args ctc_args_of(const fx_node *n)
{
    return (fx_ctc_args){ n->i[0], n->i[1], n->i[2], n->i[3], n->i[4], n->i[5] != 0 };
}

static void ctc_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *lp = n->in[0];
    if (!fx_tensor_requires_grad(lp))
        return;
    fx_ctc_args a = ctc_args_of(n);
    fx_tensor *dlp = fx__grad(ctx, lp);
    fx_tensor *scratch = dlp ? fx_tensor_new(ctx, FX_F32, 3, (int64_t[]){ a.N, 3, 2 * a.smax + 3 })
                             : NULL;
    if (scratch)
        fx_be(lp)->loss->ctc_backward(&a, lp, n->in[1], n->in[2], n->saved[2], n->saved[0],
                                     n->saved[1], n->out->grad, scratch, dlp);
}

/* Turns the first bad sample ctc_check found into an error message. */
static fx_tensor *ctc_issue_fail(fx_ctx *ctx, const char *op, const fx_ctc_issue *is,
                                 const fx_tensor *lp, const fx_tensor *targets, int64_t blank)
{
    char s1[96], s2[96];
    long long n = is->sample, a = is->a, b = is->b, c = is->c, C = lp->shape[2];
    fx_shape_str(lp, s1, sizeof s1);
    fx_shape_str(targets, s2, sizeof s2);
    switch (is->kind) {
    case FX_CTC_INPUT_LENGTH:
        return fx__op_fail(ctx, FX_ERR_VALUE, op, "sample %lld: input length %lld is outside "
                           "[1, T = %lld] of log_probs %s", n, a, b, s1);
    case FX_CTC_TARGET_LENGTH:
        if (n == lp->shape[1])
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "target_lengths add up to %lld but the "
                               "concatenated targets %s hold %lld labels", a, s2, b);
        return fx__op_fail(ctx, FX_ERR_VALUE, op, "sample %lld: target length %lld is %s (targets "
                           "%s leave room for %lld)", n, a, a < 0 ? "negative" : "too long", s2, b);
    case FX_CTC_LABEL:
        return fx__op_fail(ctx, FX_ERR_VALUE, op, "sample %lld: label %lld at position %lld of its "
                           "target is %s (log_probs %s: C = %lld classes, blank %lld)", n, b, a,
                           b == blank ? "the blank" : "out of range", s1, C, (long long)blank);
    case FX_CTC_ALIGN:
        return fx__op_fail(ctx, FX_ERR_VALUE, op, "sample %lld: target length %lld with %lld "
                           "repeated neighbouring labels needs at least %lld frames but its input "
                           "length is %lld; no alignment exists (PyTorch gives inf; set "
                           "zero_infinity to get 0)", n, a, b, a + b, c);
    default:
        return fx__op_fail(ctx, FX_ERR_VALUE, op, "sample %lld is invalid", n);
    }
}

/* Fails naming the first sample whose loss is not finite (after the
 * kernels, so the message can say why). */
static fx_tensor *ctc_nonfinite_fail(fx_ctx *ctx, const char *op, const fx_tensor *loss,
                                     fx_tensor *il, fx_tensor *tl)
{
    int64_t N = loss->shape[0];
    float *h = malloc((size_t)N * sizeof *h);
    int64_t n = 0;
    if (h && fx_tensor_to_host(loss, h, (size_t)N * sizeof *h) == FX_OK)
        while (n < N - 1 && isfinite(h[n]))
            n++;
    float v = h ? h[n] : NAN;
    free(h);
    if (isnan(v))
        return fx__op_fail(ctx, FX_ERR_VALUE, op, "the loss of sample %lld is NaN: are log_probs "
                           "finite?", (long long)n);
    return fx__op_fail(ctx, FX_ERR_VALUE, op, "the loss of sample %lld (input length %lld, target "
                       "length %lld) is infinite: every alignment has probability 0 (set "
                       "zero_infinity to get 0)", (long long)n, fx__int_at(ctx, il, n),
                       fx__int_at(ctx, tl, n));
}

fx_tensor *fx_ctc_loss(fx_ctx *ctx, fx_tensor *log_probs, fx_tensor *targets,
                       fx_tensor *input_lengths, fx_tensor *target_lengths,
                       const fx_ctc_opts *opts)
{
    static const char *op = "ctc_loss";
    fx_ctc_opts o = opts ? *opts : (fx_ctc_opts){ 0 };
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){ log_probs }))
        return NULL;
    if (!targets || !input_lengths || !target_lengths)
        return ctx->status == FX_OK ? fx__op_fail(ctx, FX_ERR_ARG, op, "targets, input_lengths "
                                                  "or target_lengths is NULL") : NULL;
    char s1[96];
    if (o.reduction != FX_MEAN && o.reduction != FX_SUM && o.reduction != FX_NONE)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "unknown reduction %d (use FX_MEAN, FX_SUM or "
                           "FX_NONE)", (int)o.reduction);
    if (log_probs->ndim != 3)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "log_probs must be [T,N,C], got %s",
                           fx_shape_str(log_probs, s1, 96));
    int64_t T = log_probs->shape[0], N = log_probs->shape[1], C = log_probs->shape[2];
    if (o.blank < 0 || o.blank >= C)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "blank %lld is outside [0, C = %lld) of log_probs "
                           "%s", (long long)o.blank, (long long)C, fx_shape_str(log_probs, s1, 96));
    if (!fx__op_check_lengths(ctx, op, "input_lengths", input_lengths, N) ||
        !fx__op_check_lengths(ctx, op, "target_lengths", target_lengths, N) ||
        !fx__op_check_int(ctx, op, "targets", targets))
        return NULL;
    bool padded = targets->ndim == 2;
    if (!(targets->ndim == 1 || (padded && targets->shape[0] == N)))
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "targets must be padded [N = %lld, W] or "
                           "concatenated 1-D, got %s", (long long)N, fx_shape_str(targets, s1, 96));
    if (N == 0 && o.reduction == FX_MEAN)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "the mean over an empty batch is undefined "
                           "(log_probs %s)", fx_shape_str(log_probs, s1, 96));
    if (o.from_logits)
        log_probs = fx_log_softmax(ctx, log_probs, 2);
    log_probs = fx_contiguous(ctx, log_probs);
    targets = fx_contiguous(ctx, targets);
    input_lengths = fx_contiguous(ctx, input_lengths);
    target_lengths = fx_contiguous(ctx, target_lengths);
    fx_tensor *offsets = fx_tensor_new(ctx, FX_I64, 1, (int64_t[]){ N });
    fx_tensor *inv_len = offsets ? fx_tensor_new(ctx, FX_F32, 1, (int64_t[]){ N }) : NULL;
    if (!log_probs || !targets || !input_lengths || !target_lengths || !inv_len)
        return NULL;
    const fx_backend *be = fx_be(log_probs);
    fx_ctc_args a = { T, N, C, 0, o.blank, o.zero_infinity };
    fx_ctc_issue issue;
    if (be->loss->ctc_check(&a, targets, padded ? targets->shape[1] : -1, input_lengths,
                           target_lengths, offsets, inv_len, &a.smax, &issue) >= 0)
        return ctc_issue_fail(ctx, op, &issue, log_probs, targets, o.blank);
    int64_t R = 2 * a.smax + 3; /* extended labels plus two guard cells */
    if (fx__shape_numel(3, (int64_t[]){ N, T, R }) < 0 || R > INT32_MAX)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "too large: log_probs %s, longest target %lld",
                           fx_shape_str(log_probs, s1, 96), (long long)a.smax);
    fx_tensor *ext = fx_tensor_new(ctx, FX_I32, 3, (int64_t[]){ N, 2, R });
    fx_tensor *alpha = ext ? fx_tensor_new(ctx, FX_F32, 3, (int64_t[]){ N, T, R }) : NULL;
    fx_tensor *nll = alpha ? fx_tensor_new(ctx, FX_F32, 1, (int64_t[]){ N }) : NULL;
    fx_tensor *loss = nll ? fx_tensor_new(ctx, FX_F32, 1, (int64_t[]){ N }) : NULL;
    if (!loss)
        return NULL;
    be->loss->ctc_forward(&a, log_probs, targets, offsets, input_lengths, target_lengths, ext,
                         alpha, nll, loss);
    if (be->red->count_nonfinite(loss))
        return ctc_nonfinite_fail(ctx, op, loss, input_lengths, target_lengths);
    fx_node *n = fx__record(ctx, op, ctc_backward, loss, 3,
                            (fx_tensor *[]){ log_probs, input_lengths, target_lengths });
    if (n) {
        n->saved[0] = alpha;
        n->saved[1] = nll;
        n->saved[2] = ext;
        int64_t iv[6] = { T, N, C, a.smax, o.blank, o.zero_infinity };
        for (int i = 0; i < 6; i++)
            n->i[i] = iv[i];
    }
    if (o.reduction == FX_NONE)
        return loss;
    if (o.reduction == FX_SUM)
        return fx_sum(ctx, loss, 0, NULL, false);
    return fx_mean(ctx, fx_mul(ctx, loss, inv_len), 0, NULL, false);
}
