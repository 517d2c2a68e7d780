/*
 * fx_norm.h - Normalisation layers. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages). The
 * embedding op and layer have their own header, fx_embed.h, which this one
 * includes so that code written against the older layout still compiles.
 *
 * A small text model (fx_embedding_create: fx_embed.h) and a vision block:
 *
 *     fx_layer *emb = fx_embedding_create("emb", vocab, 64,
 *                                         &(fx_embedding_opts){ .padding_idx = 0,
 *                                                               .has_padding = true }, rng);
 *     fx_layer *ln = fx_layernorm_create("ln", 1, (int64_t[]){ 64 }, NULL);
 *     fx_tensor *h = fx_layer_forward(ln, ctx, fx_layer_forward(emb, ctx, tokens)); // [B,T,64]
 *
 *     fx_layer *bn = fx_batchnorm2d_create("bn1", 32, NULL); // after a conv: x [N,32,H,W]
 *     fx_ctx_set_training(ctx, false);                       // evaluation: running stats
 *
 * Batch norm follows PyTorch: in training mode (fx_ctx_training) it
 * normalises with the batch's mean and biased variance and updates the
 * running statistics, running = (1 - momentum) * running + momentum * batch
 * (the unbiased variance for running_var); in eval mode it uses the running
 * statistics. The layers keep them as buffers "running_mean" and
 * "running_var" (fx_layer_add_buffer): fx_layer_collect_params lists them
 * with "weight" (gamma) and "bias" (beta), so checkpoints carry them, and
 * optimizers leave them alone.
 *
 * Errors name the op (or, from a layer, the layer first) and the sizes:
 *     "layer 'bn1': batch_norm: x has 3 channels, running_mean has 4".
 */
#ifndef FX_NORM_PUBLIC_H
#define FX_NORM_PUBLIC_H

#include "fx_embed.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------- ops */

/*
 * batch_norm: x [N,C,*] (at least 2 dims; statistics per channel over N and
 * the trailing dims). gamma, beta: [C] or NULL (no affine map). running_mean
 * and running_var: [C], both or neither. Training mode, or no running
 * statistics: batch statistics (N * prod(*) must exceed 1), and the running
 * ones (if any) are updated in place with momentum. Eval mode: the running
 * statistics, which are constants for the gradient. Gradients flow to x,
 * gamma and beta.
 */
fx_tensor *fx_batch_norm(fx_ctx *ctx, fx_tensor *x, fx_tensor *gamma, fx_tensor *beta,
                         fx_tensor *running_mean, fx_tensor *running_var, float momentum,
                         float eps);
/* layer_norm: normalises x over its last nshape dims, which must equal
 * shape; gamma and beta (elementwise affine) have that shape or are NULL. */
fx_tensor *fx_layer_norm(fx_ctx *ctx, fx_tensor *x, int nshape, const int64_t *shape,
                         fx_tensor *gamma, fx_tensor *beta, float eps);
/* group_norm: x [N,C,*], C divisible by groups; statistics per sample and
 * group of C/groups channels (with the trailing dims); gamma, beta [C] or
 * NULL. groups == 1 is layer norm over [C,*] with a per-channel affine map;
 * groups == C is instance norm. */
fx_tensor *fx_group_norm(fx_ctx *ctx, fx_tensor *x, int64_t groups, fx_tensor *gamma,
                         fx_tensor *beta, float eps);
/* ----------------------------------------------------------------- layers */

/* Zero fields take the defaults (shown). */
typedef struct {
    double eps;            /* 1e-5 */
    double momentum;       /* batch norm's running-statistics momentum: 0.1 */
    bool no_affine;        /* default: learnable "weight" (ones) and "bias" (zeros) */
    bool no_running_stats; /* batch norm: batch statistics in eval mode too */
    fx_device device;      /* cpu */
} fx_norm_opts;

/* batchnorm1d takes [N,C] or [N,C,L]; batchnorm2d takes [N,C,H,W]. */
fx_layer *fx_batchnorm1d_create(const char *name, int64_t channels, const fx_norm_opts *o);
fx_layer *fx_batchnorm2d_create(const char *name, int64_t channels, const fx_norm_opts *o);
/* layernorm over the trailing dims shape[0..nshape); weight/bias of that
 * shape. */
fx_layer *fx_layernorm_create(const char *name, int nshape, const int64_t *shape,
                              const fx_norm_opts *o);
/* groupnorm over [N,C,*] with groups dividing channels; weight/bias [C]. */
fx_layer *fx_groupnorm_create(const char *name, int64_t groups, int64_t channels,
                              const fx_norm_opts *o);

#ifdef __cplusplus
}
#endif
#endif
