/*
 * fx_conv.h - Convolution and pooling layers. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages).
 */
#ifndef FX_CONV_PUBLIC_H
#define FX_CONV_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
