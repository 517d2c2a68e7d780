/*
 * fx_seq.h - Attention and the CTC loss. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages).
 */
#ifndef FX_SEQ_PUBLIC_H
#define FX_SEQ_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
