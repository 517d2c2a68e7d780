/*
 * fx_model.h - Combinators: residual blocks, parallel branches, models with several outputs. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages).
 */
#ifndef FX_MODEL_PUBLIC_H
#define FX_MODEL_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
