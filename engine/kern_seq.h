/* kern_seq.h - kernel family: attention helpers.
 * Part of the backend table (backend.h); the CPU versions live in
 * engine/cpu/seq.c as the table fx__cpu_seq (CUDA: engine/cuda/seq.cu).
 *
 * Attention's matrix products go through the blas family (gemm); this family
 * holds what sits between them: the masked softmax over the keys and its
 * backward, and a check of a lengths tensor (which only a kernel may read).
 * The CTC kernels are in the loss family (kern_loss.h). */
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
} fx_seq_kernels;

#endif
