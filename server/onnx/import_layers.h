/*
 * import_layers.h - the ONNX importer's layer converters (internal to
 * server/onnx/): convolutions and pooling (import_conv.c), normalisations
 * (import_norm.c) and recurrent layers (import_rnn.c), listed in
 * fxon_layer_ops[] (import_layers.c). Also the pure weight-layout
 * conversions they use, exposed for unit tests.
 */
#ifndef FXON_IMPORT_LAYERS_H
#define FXON_IMPORT_LAYERS_H

#include "onnx/onnx_internal.h"

/* The converters (see onnx_internal.h "HOW TO ADD A CONVERTER"). */
int fxon__cv_conv(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_conv_transpose(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_maxpool(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_avgpool(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_global_avgpool(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_batchnorm(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_layernorm(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_instancenorm(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_groupnorm(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_rnn(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_expand(fxon_ctx *cx, const Onnx__NodeProto *n);
int fxon__cv_pad(fxon_ctx *cx, const Onnx__NodeProto *n);

/* Shared by the converters. */

/* Fails when an ONNX output of n past the first is used: the optional
 * outputs (MaxPool's Indices, LayerNormalization's
 * Mean, ...) have no engine counterpart. */
int fxon__only_first_output(fxon_ctx *cx, const Onnx__NodeProto *n);
/* A float constant input i (a weight), its element count checked against
 * want_ndim (-1: any); fails naming the input otherwise. */
int fxon__weight(fxon_ctx *cx, const Onnx__NodeProto *n, int i, int want_ndim,
                 const fxon_const **c);
/* The node name hint of a layer whose weight is input 1 (fxon_layer_name). */
const char *fxon__layer_hint(fxon_ctx *cx, const Onnx__NodeProto *n);
/* A new parameter holding a copy of c's data. */
int fxon__param_copy(fxon_ctx *cx, const Fluxion__V1__Node *node, const char *param,
                     const fxon_const *c);

/* ---- weight layouts (pure, unit tested) */

/* ONNX's gate order -> PyTorch's (the engine's): rows of a gate-stacked
 * matrix [gates*H, cols] (a bias: cols 1) are copied in blocks of H rows,
 * block j of dst from block perm[j] of src. */
void fxon__gates_reorder(float *dst, const float *src, int gates, const int *perm, int64_t H,
                         int64_t cols);
/* perm for each cell: LSTM ONNX i,o,f,c -> PyTorch i,f,g,o; GRU ONNX z,r,h
 * -> PyTorch r,z,n; RNN one gate. */
extern const int fxon__lstm_perm[4];
extern const int fxon__gru_perm[3];
/* GroupNormalization at opsets 18-20 scales per group: [G] -> per channel
 * [C] (each group's value repeated C/G times). */
void fxon__groups_to_channels(float *dst, const float *src, int64_t groups, int64_t channels);

#endif
