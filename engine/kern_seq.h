/* kern_seq.h - kernel family: attention helpers and the CTC loss.
 * Part of the backend table (backend.h); the CPU versions live in
 * engine/cpu/seq.c as the table fx_cpu_seq.
 *
 * Attention's matrix products go through the blas family (gemm); this family
 * holds what sits between them: the masked softmax over the keys and its
 * backward. The CTC loss is two kernels (alpha recursion, beta recursion with
 * the gradient) plus a validation pass over the integer inputs, which only a
 * kernel may read. */
#ifndef FX_KERN_SEQ_H
#define FX_KERN_SEQ_H

#include "fluxion.h"

/*
 * Which keys a block of attention scores [batch, L, S] may attend to. batch
 * is the product of the nbd leading dims bshape. A key j of query i in batch
 * entry b is kept when all of these hold:
 *   key_lengths (i32/i64 [N], may be NULL): j < key_lengths[b / per_length];
 *   causal: j <= i (top-left aligned, as torch's is_causal);
 *   mask (may be NULL, nbd + 2 dims, element strides mstride with 0 on
 *   broadcast dims): i32 nonzero keeps; f32 is added to the scaled score and
 *   -inf drops the key.
 */
typedef struct {
    int64_t batch, L, S;
    int nbd;
    int64_t bshape[FX_MAX_DIMS];
    const fx_tensor *mask;
    int64_t mstride[FX_MAX_DIMS];
    const fx_tensor *key_lengths;
    int64_t per_length;
    bool causal;
} fx_attn_mask;

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
    /* -1 when every value of the contiguous i32/i64 tensor len lies in
     * [lo, hi], else the index of the first that does not. */
    int64_t (*check_lengths)(const fx_tensor *len, int64_t lo, int64_t hi);
    /* In place, p [batch, L, S] (contiguous): scaled scores -> attention
     * weights, a softmax over the kept keys of each row (m->mask added
     * first when f32). Dropped keys get exactly 0; a row with no key left is
     * all zeros. Returns the number of rows that are not finite (NaN, or
     * +inf scores). */
    int64_t (*attn_softmax)(const fx_attn_mask *m, fx_tensor *p);
    /* In place, dp [batch, L, S]: the gradient w.r.t. the weights (after
     * dropout, when drop, the scaled keep mask, is not NULL) becomes the
     * gradient w.r.t. the scores: p * (g - sum_j p g) with g = dp * drop. */
    void (*attn_softmax_backward)(const fx_tensor *p, const fx_tensor *drop, fx_tensor *dp);

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
} fx_seq_kernels;

#endif
