/*
 * graph.h - a model built from a ModelSpec (proto/fluxion/v1/model.proto):
 * validation, shape inference, layers with seeded initial weights, weights
 * in and out as safetensors, and the forward pass on an engine context.
 *
 * This module is the only place that knows the op names of the spec ("dense",
 * "conv2d", "add", ...); every engine layer and op is reachable through it.
 * It calls the engine, never gRPC or libuv. Every function that can fail
 * returns 0 or an fxs_status code (base/status.h) with the message in err.
 *
 * Naming: node outputs are referenced as "node" (first output) or "node:K";
 * parameters and buffers are named "<node>.<param>" ("fc1.weight",
 * "bn.running_mean", "lstm.weight_ih_l0"), the same names and layouts as the
 * equivalent PyTorch modules, so a state_dict saved with safetensors loads.
 *
 * Thread safety: a graph is immutable after fxg_build/fxg_load_weights;
 * any number of threads may run fxg_forward on it at once, each with its
 * own context in inference mode (no grad, not training). Training (grad
 * mode) must be exclusive.
 */
#ifndef FXG_GRAPH_H
#define FXG_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fluxion.h"
#include "fluxion/v1/model.pb-c.h"
#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fxg_graph fxg_graph;

/* A named tensor of the model's interface; shape[i] == -1: any size. */
typedef struct {
    const char *name;
    fx_dtype dtype;
    int ndim;
    int64_t shape[FX_MAX_DIMS];
} fxg_tensor_info;

typedef struct {
    uint64_t seed;        /* initialization seed */
    uint64_t max_params;  /* limit on parameter + buffer elements; 0: 1 << 30 */
    int max_nodes;        /* 0: 10000 */
} fxg_options;

/* Validates the spec and instantiates it (seeded initial weights) into
 * *out. On error returns FXS_INVALID_ARGUMENT with a message naming the
 * node, attribute or input and the problem: unknown op, missing/duplicate
 * names, unknown input reference, cycles, wrong input count, attribute
 * missing/wrong type/out of range, parameter count overflow or over
 * max_params, shape inference failure; FXS_RESOURCE_EXHAUSTED when out of
 * memory. */
int fxg_build(const Fluxion__V1__ModelSpec *spec, const fxg_options *opts, fxg_graph **out,
              char *err, size_t errlen);
void fxg_free(fxg_graph *g);

int fxg_num_inputs(const fxg_graph *g);
const fxg_tensor_info *fxg_input(const fxg_graph *g, int i);
int fxg_find_input(const fxg_graph *g, const char *name); /* index or -1 */
int fxg_num_outputs(const fxg_graph *g);
/* Outputs with inferred dtype and shape (-1 where the size follows an
 * input's -1 dimension). */
const fxg_tensor_info *fxg_output(const fxg_graph *g, int i);
int fxg_find_output(const fxg_graph *g, const char *name);

/* Parameters and buffers (owned by the graph), in node order. */
const fx_params *fxg_params(const fxg_graph *g);
bool fxg_param_trainable(const fxg_graph *g, int i);
/* For a graph that only serves: frees the gradient buffers the parameters
 * were created with (half of their memory). Backward through it afterwards
 * has nothing to accumulate into (the graph is then inference-only). */
void fxg_drop_grads(fxg_graph *g);

/* For a graph that serves: packs the weights of its dense layers (on the
 * CPU) once into the engine's kernel layout (fx_layer_prepack), so that
 * forwards with grad mode off stream them instead of re-packing on every
 * call. Returns the number of layers packed (0 when there is nothing to
 * pack, e.g. on a GPU); a layer that could not be packed (out of memory)
 * runs the plain path. Packs are read-only (forwards on several threads
 * share them) and are dropped by fxg_load_weights and fxg_to_device (a
 * weight changed any other way through the engine's API makes its pack
 * stale, and stale packs are never used). Not while the graph is in use. */
int fxg_prepack(fxg_graph *g);
/* The same with the packs in precision p (FX_PREC_BF16: bf16 weights and
 * kernels, fx_layer_prepack_precision); fxg_prepack is FX_PREC_F32. */
int fxg_prepack_precision(fxg_graph *g, fx_precision p);
void fxg_unpack(fxg_graph *g);

/* The trainable ones only (for an optimizer). */
const fx_params *fxg_trainable_params(const fxg_graph *g);
int64_t fxg_num_trainable(const fxg_graph *g); /* trainable scalars */

/* Replaces every parameter and buffer with the ones in a safetensors
 * buffer. Strict: a missing tensor, an extra tensor, a wrong shape or dtype
 * fails (FXS_INVALID_ARGUMENT) with a message naming the tensor, and
 * nothing is changed. */
int fxg_load_weights(fxg_graph *g, const void *buf, size_t len, char *err, size_t errlen);

/* The weights as a safetensors buffer (malloc; caller frees). */
int fxg_save_weights(const fxg_graph *g, void **buf, size_t *len, char *err, size_t errlen);

/* Moves every parameter and buffer to dev (the engine's
 * fx_tensor_move_to_device; gradients follow). Forward passes must then run
 * in contexts on dev. Not while the graph is in use. On failure (dev not
 * available, out of device memory) the tensors moved are moved back and -1
 * comes with a message naming the device and the tensor:
 * FXS_FAILED_PRECONDITION (no such device), FXS_RESOURCE_EXHAUSTED (out of
 * device memory). */
int fxg_to_device(fxg_graph *g, fx_device dev, char *err, size_t errlen);
/* Where the parameters are (cpu until fxg_to_device). */
fx_device fxg_device(const fxg_graph *g);

/* Checks an input tensor against the spec (dtype, rank, fixed sizes):
 * 0, or FXS_INVALID_ARGUMENT with a message naming the input. */
int fxg_check_input(const fxg_graph *g, int i, fx_dtype dtype, int ndim, const int64_t *shape,
                    char *err, size_t errlen);

/* Runs the graph in ctx (its grad and training modes apply): inputs[i] for
 * input i (checked as fxg_check_input), outputs[j] is set for output j
 * (arena tensors of ctx). Returns 0 or a status with a message naming the
 * node: FXS_INVALID_ARGUMENT (the inputs' values or shapes),
 * FXS_RESOURCE_EXHAUSTED (out of memory), FXS_INTERNAL. */
int fxg_forward(const fxg_graph *g, fx_ctx *ctx, fx_tensor *const *inputs, fx_tensor **outputs,
                char *err, size_t errlen);

/* The engine dtype of a ModelSpec/dataset DataType (UNSPECIFIED: FP32);
 * false for a type the engine does not have. And back. */
bool fxg_dtype_from_proto(Fluxion__V1__DataType d, fx_dtype *out);
Fluxion__V1__DataType fxg_dtype_to_proto(fx_dtype dt);

/* Op names known to the spec, NULL-terminated (for `fluxion ops` and docs). */
const char *const *fxg_op_names(void);

#ifdef __cplusplus
}
#endif
#endif
