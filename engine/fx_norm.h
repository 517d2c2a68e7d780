/*
 * fx_norm.h - Normalisation layers and embedding. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages).
 */
#ifndef FX_NORM_PUBLIC_H
#define FX_NORM_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
