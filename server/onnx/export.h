/*
 * export.h - a stored model version as an ONNX model (fxon_export).
 *
 * The spec's graph becomes an ONNX graph (opset 17) with the spec's input,
 * node and output names, its weights initializers; docs/onnx-export.md has
 * the op mapping. Pure: no I/O, no gRPC.
 */
#ifndef FXON_EXPORT_H
#define FXON_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "fluxion/v1/model.pb-c.h"

/* A stored version (its spec and safetensors weights) -> ONNX ModelProto
 * bytes (*out malloc'd): opset 17, dynamic batch dimension ("batch" where
 * an input's first dim is -1), names preserved; onnx.checker passes.
 * FXS_INVALID_ARGUMENT naming the node for an op with no ONNX form (and for
 * a spec or weights that do not build), FXS_RESOURCE_EXHAUSTED when out of
 * memory. */
int fxon_export(const Fluxion__V1__ModelSpec *spec, const uint8_t *weights, size_t len,
                const char *model_name, uint8_t **out, size_t *out_len, char *err, size_t errlen);

#endif
