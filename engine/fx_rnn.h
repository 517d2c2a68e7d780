/*
 * fx_rnn.h - Recurrent layers over variable-length sequences. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages).
 */
#ifndef FX_RNN_PUBLIC_H
#define FX_RNN_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
