/* kern_loss.h - kernel family: losses (cross entropy with labels or soft
 * targets, binary cross entropy from logits, CTC). Part of the backend table
 * (backend.h); the CPU versions live in engine/cpu/loss.c and
 * engine/cpu/loss_ctc.c, the CUDA ones in engine/cuda/loss.cu and
 * engine/cuda/loss_ctc.cu. The mean squared error is composed from
 * elementwise ops and has no kernel.
 *
 * The CTC loss is two kernels (alpha recursion, beta recursion with the
 * gradient) plus a validation pass over the integer inputs, which only a
 * kernel may read. */
#ifndef FX_KERN_LOSS_H
#define FX_KERN_LOSS_H

#include "fluxion.h"

/* What the CTC kernels need besides the tensors. log_probs is [T, N, C];
 * smax is the longest target length, so alpha is [N, T, 2 * smax + 1]. */
typedef struct {
    int64_t T, N, C, smax;
    int64_t blank;
    bool zero_infinity;
} fx_ctc_args;

/* The first bad sample found by ctc_check; a, b, c depend on kind. */
typedef enum {
    FX_CTC_OK = 0,
    FX_CTC_INPUT_LENGTH,  /* a = input length, b = T: not in [1, T] */
    FX_CTC_TARGET_LENGTH, /* a = target length, b = room for it: negative or > b */
    FX_CTC_LABEL,         /* a = position in the sample's target, b = label (outside [0,C) or blank) */
    FX_CTC_ALIGN,         /* a = target length, b = repeated neighbours, c = input length */
} fx_ctc_issue_kind;

typedef struct {
    fx_ctc_issue_kind kind;
    int64_t sample, a, b, c;
} fx_ctc_issue;

typedef struct {
    /* loss[n] = logsumexp(logits[n]) - logits[n, labels[n]]; logits [N,C],
     * labels i32/i64 [N]. Returns -1 or the first sample with a bad label. */
    int64_t (*ce_labels)(const fx_tensor *logits, const fx_tensor *labels, fx_tensor *loss);
    /* dlogits[n] += dloss[n] * (softmax(logits[n]) - onehot(labels[n])). */
    void (*ce_labels_backward)(const fx_tensor *logits, const fx_tensor *labels,
                               const fx_tensor *dloss, fx_tensor *dlogits);
    /* loss[n] = -sum_c probs[n,c] * log_softmax(logits)[n,c]. */
    void (*ce_soft)(const fx_tensor *logits, const fx_tensor *probs, fx_tensor *loss);
    /* dlogits += dloss * (softmax * sum(probs) - probs); dprobs += -dloss *
     * log_softmax. Either may be NULL. */
    void (*ce_soft_backward)(const fx_tensor *logits, const fx_tensor *probs,
                             const fx_tensor *dloss, fx_tensor *dlogits, fx_tensor *dprobs);
    /* loss = max(x,0) - x*t + log1p(exp(-|x|)), elementwise. */
    void (*bce_logits)(const fx_tensor *x, const fx_tensor *t, fx_tensor *loss);
    /* dx += dloss * (sigmoid(x) - t); dt += -dloss * x. Either may be NULL. */
    void (*bce_logits_backward)(const fx_tensor *x, const fx_tensor *t, const fx_tensor *dloss,
                                fx_tensor *dx, fx_tensor *dt);

    /* Validates the CTC inputs: input_lengths in [1, T]; target lengths
     * non-negative and fitting targets (padded [N, W]: <= W; concatenated:
     * they add up to its length); labels in [0, C) and not blank; unless
     * a->zero_infinity, target length + repeated neighbours <= input length.
     * Writes offsets (i64 [N]: where each sample's labels start in targets),
     * inv_len (f32 [N]: 1 / max(target length, 1)) and *smax. Returns -1, or
     * the first bad sample with *issue filled. padded_width is W, or -1 for
     * concatenated targets. Integer tensors are contiguous. */
    int64_t (*ctc_check)(const fx_ctc_args *a, const fx_tensor *targets, int64_t padded_width,
                         const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                         fx_tensor *offsets, fx_tensor *inv_len, int64_t *smax,
                         fx_ctc_issue *issue);
    /* Alpha recursion in log space. Writes ext (i32 [N, 2, 2 smax + 3]: the
     * extended labels and skip flags, for the backward), alpha (f32
     * [N, T, 2 smax + 3], two guard cells in front of each row; entries past
     * a sample's lengths are left unset), nll [N] (-log p: inf when no
     * alignment has probability, NaN when a log_prob it reads is NaN) and
     * loss [N] (nll, with inf replaced by 0 when a->zero_infinity). */
    void (*ctc_forward)(const fx_ctc_args *a, const fx_tensor *log_probs, const fx_tensor *targets,
                        const fx_tensor *offsets, const fx_tensor *input_lengths,
                        const fx_tensor *target_lengths, fx_tensor *ext, fx_tensor *alpha,
                        fx_tensor *nll, fx_tensor *loss);
    /* Beta recursion and dlog_probs += dloss[n] * d nll[n] / d log_probs:
     * -sum over the extended-label positions s of c at frame t of
     * exp(alpha_t(s) + beta_t(s) - log_probs[t,n,c] + nll[n]). Frames at or
     * past the input length and samples with a non-finite nll get nothing.
     * scratch is f32 [N, 3, 2 smax + 3]. */
    void (*ctc_backward)(const fx_ctc_args *a, const fx_tensor *log_probs,
                         const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                         const fx_tensor *ext, const fx_tensor *alpha, const fx_tensor *nll,
                         const fx_tensor *dloss, fx_tensor *scratch, fx_tensor *dlog_probs);
} fx_loss_kernels;

#endif
