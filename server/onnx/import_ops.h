/*
 * import_ops.h - constant folding (import_fold.c) for the converters of
 * import_ops.c: each defines the node's output as a constant.
 */
#ifndef FXON_IMPORT_OPS_H
#define FXON_IMPORT_OPS_H

#include "onnx/onnx_internal.h"

/* op: '+', '-', '*', '/' with numpy broadcasting; ints floor-divide. */
int fxon__fold_binary(fxon_ctx *cx, const Onnx__NodeProto *n, char op);
/* want: ONNX Reshape's shape (0 copies, one -1 inferred). */
int fxon__fold_reshape(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x, int nd,
                       const int64_t *want);
/* squeeze with nax 0: every dim of size 1. */
int fxon__fold_unsqueeze(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x,
                         const int64_t *axes, size_t nax, bool squeeze);
int fxon__fold_concat(fxon_ctx *cx, const Onnx__NodeProto *n, int64_t axis);
int fxon__fold_gather(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x,
                      const fxon_const *idx, int axis);
/* start, end already clamped as ONNX's Slice says. */
int fxon__fold_slice(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x, int axis,
                     int64_t start, int64_t end, int64_t step);
int fxon__fold_transpose(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x,
                         const int *perm);
int fxon__fold_cast(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x, int to);

/* After a Mul or Div: the exact GELU written out (Div/Erf/Add/Mul/Mul)
 * ending at n's output becomes one gelu node (import_fuse.c). */
int fxon__fuse_gelu(fxon_ctx *cx, const Onnx__NodeProto *n);

/* The converters of import_shape.c (shapes, reductions, plumbing). */
extern const fxon_converter fxon_shape_ops[];

#endif
