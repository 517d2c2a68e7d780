/* kern_norm.h - kernel family: batch/layer/group normalisation.
 * Part of the backend table (backend.h); the CPU versions live in
 * engine/cpu/norm.c as the table fx__cpu_norm (CUDA: engine/cuda/norm.cu).
 * Embedding lookups have their own family (kern_embed.h).
 *
 * Every normalisation sees its input as a contiguous x (N, C, L): N samples,
 * C channels, L positions per channel (the product of the spatial dims; 1
 * for [N, C]). Layer norm is group norm with one group and L = 1 (x viewed
 * as (rows, normalised size, 1)). gamma and beta ([C]) may be NULL (no
 * affine map); mean and rstd = 1/sqrt(var + eps) are the statistics the
 * forward writes and the backward reads. Variances used for normalising are
 * biased (divided by the count).
 *
 * When L == 1 the per-channel sums run over chunks of FX_NORM_CHUNK rows in
 * parallel; the kernels that take `work` keep the chunks' partial sums there
 * (an f32 tensor of at least fx_norm_work_size(N, C, L) elements, which the
 * op allocates so that kernels never do; NULL when the size is 0). */
#ifndef FX_KERN_NORM_H
#define FX_KERN_NORM_H

#include "fluxion.h"

#define FX_NORM_CHUNK 64

static inline int64_t fx_norm_work_size(int64_t N, int64_t C, int64_t L)
{
    return L == 1 ? (2 * ((N + FX_NORM_CHUNK - 1) / FX_NORM_CHUNK) + 3) * C : 0;
}

typedef struct {
    /* Batch norm, statistics per channel over N and L (mean, rstd [C]).
     * training: batch statistics; when running_mean / running_var are given
     * (both or neither) they become (1 - momentum) * running + momentum *
     * batch, with the unbiased variance (N*L > 1, checked by the op).
     * Not training: mean = running_mean, rstd = 1/sqrt(running_var + eps).
     * Then y = (x - mean) * rstd * gamma + beta. */
    void (*batch_norm)(const fx_tensor *x, const fx_tensor *gamma, const fx_tensor *beta,
                       fx_tensor *running_mean, fx_tensor *running_var, bool training,
                       float momentum, float eps, fx_tensor *mean, fx_tensor *rstd, fx_tensor *y,
                       fx_tensor *work);
    /* Gradients of batch_norm (each of dx, dgamma, dbeta may be NULL):
     * dgamma += sum dy * xhat, dbeta += sum dy, and dx += the gradient
     * through the batch statistics (training) or through the affine map
     * alone (running statistics are constants). */
    void (*batch_norm_backward)(const fx_tensor *x, const fx_tensor *gamma, const fx_tensor *mean,
                                const fx_tensor *rstd, const fx_tensor *dy, bool training,
                                fx_tensor *dx, fx_tensor *dgamma, fx_tensor *dbeta,
                                fx_tensor *work);
    /* Group norm: the C channels form `groups` equal groups; statistics per
     * (sample, group) over its channels and L (mean, rstd [N * groups]).
     * y = (x - mean) * rstd * gamma[c] + beta[c]. */
    void (*group_norm)(const fx_tensor *x, int64_t groups, const fx_tensor *gamma,
                       const fx_tensor *beta, float eps, fx_tensor *mean, fx_tensor *rstd,
                       fx_tensor *y);
    /* Gradients of group_norm; each of dx, dgamma, dbeta may be NULL. */
    void (*group_norm_backward)(const fx_tensor *x, int64_t groups, const fx_tensor *gamma,
                                const fx_tensor *mean, const fx_tensor *rstd, const fx_tensor *dy,
                                fx_tensor *dx, fx_tensor *dgamma, fx_tensor *dbeta,
                                fx_tensor *work);
} fx_norm_kernels;

#endif
