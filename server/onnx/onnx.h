/*
 * onnx.h - ONNX models in and out of Fluxion (module prefix fxon_).
 *
 * Import turns an ONNX ModelProto (opsets 13 and newer, the default domain)
 * into a ModelSpec and the weights of its version 1: initializers that feed
 * a layer (Gemm's B, a Conv's weight, ...) become that layer's parameters,
 * named as the engine's layers expect ("<node>.weight"), so the imported
 * model is trainable; shape arithmetic (Shape/Gather/Unsqueeze/Concat on
 * static dims) is folded to constants. Pure functions: no I/O, no globals;
 * any number of threads may import at once.
 */
#ifndef FXON_ONNX_H
#define FXON_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "fluxion/v1/model.pb-c.h"

/* Limits checked before the work they guard. */
#define FXON_MAX_NODES        20000       /* ONNX nodes in the graph */
#define FXON_MAX_NAME         512         /* bytes of any ONNX name */
#define FXON_MAX_TENSOR_ELEMS (1LL << 30) /* elements of one tensor or parameter */
/* Elements of all constants made at import (folding, Constant nodes): a
 * small file stays small in memory. */
#define FXON_MAX_CONST_ELEMS (1LL << 26)

/* ONNX ModelProto bytes -> a ModelSpec (fluxion.v1.ModelSpec, malloc'd,
 * free with protobuf_c_message_free_unpacked) and version 1's weights as
 * safetensors bytes (*weights malloc'd) named as the spec's layers
 * expect. An unsupported operator or attribute: FXS_INVALID_ARGUMENT
 * naming the node, its op type and opset. A malformed file never
 * crashes. */
int fxon_import(const uint8_t *onnx, size_t len, Fluxion__V1__ModelSpec **spec, uint8_t **weights,
                size_t *weights_len, char *err, size_t errlen);

#endif
