/*
 * onnx_internal.h - the ONNX importer's converter framework (internal to
 * server/onnx/). import.c parses the ModelProto, checks it, walks its nodes
 * in topological order and calls one converter per node; the converters
 * (import_ops.c: plain operators; import_layers.c: layers with weights)
 * read their inputs from a table of values and emit ModelSpec nodes and
 * parameters through the functions below.
 *
 * HOW TO ADD A CONVERTER
 *
 * 1. Write   static int cv_foo(fxon_ctx *cx, const Onnx__NodeProto *n)
 *    returning 0, or an FXS_* code after writing the error with fxon_fail
 *    (which prefixes "node 'NAME' (OpType, opset N): " and returns
 *    FXS_INVALID_ARGUMENT) or fxon_oom.
 * 2. List it in a table { "Foo", 13, cv_foo } (op_type, the lowest opset it
 *    handles, fn): fxon_ops[] in import_ops.c (fxon_shape_ops[] in
 *    import_shape.c) or fxon_layer_ops[] in import_layers.c, each ending
 *    with { NULL, 0, NULL }. For one op_type, the entry with the highest
 *    min_opset <= the model's opset is used, so an operator whose meaning
 *    changed at opset K gets a second entry { "Foo", K, cv_foo_k } (or test
 *    cx->opset inside one converter). Ops of an opset below every entry's
 *    min_opset are refused naming the opset.
 * 3. In the converter:
 *    - refuse attributes it does not handle: fxon_attrs_known(cx, n,
 *      (const char *[]){ "alpha", "beta", NULL }) fails naming the first
 *      unknown one; read them with fxon_attr_int/_float/_str/_ints (a
 *      wrong type is an error naming the attribute);
 *    - inputs: fxon_input(cx, n, i, &v) for a required input (absent ->
 *      error naming it), fxon_in(n, i) == NULL for an absent optional one.
 *      A value (fxon_value) has its ONNX element type, its static shape
 *      (ndim -1: rank unknown; a dim -1: not static), and either
 *      v->c (a constant known at import: an initializer, a Constant
 *      node's value, or folded shape arithmetic) or v->ref (the spec
 *      reference of a tensor computed at run time: a graph input, "node"
 *      or "node:K"). A value may have both (a constant that a node already
 *      materialised), never neither. fxon_need_const(cx, n, i, &c) insists
 *      on a constant (for shapes, axes, weights); fxon_need_ref(cx, n, i,
 *      &ref) on a run-time tensor. The engine's graph has no constant
 *      tensors, so a float constant used as one is materialised: a dense
 *      layer (in 1, out numel) on a [1] tensor of ones made from the first
 *      float graph input, its weight the constant (a trainable parameter
 *      named after the value), reshaped; integer constants fail naming
 *      the input. Prefer folding: scalars become scale/add_scalar/...,
 *      weights become a layer's parameters.
 *    - constants: int64 or float data (every integer and bool type is read
 *      as int64, double and half as float). Folded shape data may hold
 *      symbolic dims: FXON_SYM(axis) stands for "the size of dim `axis` of
 *      the tensor whose Shape was taken, not static" (the batch dim of
 *      x.view(x.size(0), -1)), FXON_SYM_ANY for any other value not known
 *      at import (arithmetic on a symbol); fxon_is_sym() tests for both.
 *      fxon_const_new makes one (zeroed, owned by cx).
 *    - emitting: fxon_emit(cx, "dense", hint, nin, refs) appends a spec node
 *      with a valid unique name (from hint, else the ONNX node's name or
 *      first output; a leading '/' dropped, anything but letters, digits,
 *      '_' and '-' made '_', at most 200 bytes) and returns it;
 *      fxon_set_int/_float/_bool/_str/_ints(cx, node, key, ...) set (or
 *      replace) its attributes as docs/model-spec.md lists them;
 *      fxon_out_ref(cx, node, k) is its K-th output's reference.
 *    - results: every ONNX output of the node must be defined:
 *      fxon_define(cx, onnx_name, node, k, elem, ndim, shape) for output k
 *      of a spec node (give the static shape the converter knows; ndim -1
 *      when the rank is unknown, a dim -1 when not static: value_info
 *      fills what it leaves open), fxon_define_const(cx, onnx_name, c) for
 *      a folded constant, fxon_alias(cx, onnx_name, v) to pass a value through
 *      (Identity, Dropout). v->node / v->out_index say which spec node made
 *      a value (NULL for graph inputs and constants), v->uses how many node
 *      inputs and graph outputs read it: a converter may fold into its
 *      producer (MatMul + Add of a bias -> one dense with a bias) only
 *      when uses == 1.
 *    - parameters: layers take weights as parameters named
 *      "<spec node>.<param>" with PyTorch's names and layouts
 *      (docs/model-spec.md "Parameters and weights", graph_layers.c:
 *      dense weight [out,in] and bias [out]; conv weight [O,C/g,KH,KW];
 *      lstm weight_ih_l0 [4H,in] in gate order i,f,g,o; ...).
 *      fxon_param(cx, node, "weight", ndim, shape) returns an f32 buffer
 *      (zeroed, owned by cx) to fill, e.g. transposed or with its gates
 *      reordered; fxon_layer_name(cx, n, w) is a good hint for the node of
 *      a layer whose weight is the initializer w ("fc1.weight" -> "fc1",
 *      so the weights read like the PyTorch state_dict).
 *    - memory: fxon_alloc / fxon_strdup / fxon_printf allocate from cx's
 *      arena (freed with the import); never free what they return.
 * 4. Test it: tests/unit/test_onnx_import.c builds ModelProtos by hand, and
 *    tests/py/onnx_export_models.py exports PyTorch models compared end to
 *    end by tests/integration/test_onnx_import.py.
 */
#ifndef FXON_ONNX_INTERNAL_H
#define FXON_ONNX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fluxion/v1/model.pb-c.h"
#include "onnx/onnx.pb-c.h"
#include "onnx/onnx.h"

#define FXON_MAX_DIMS  8  /* the engine's rank limit */
#define FXON_MIN_OPSET 13 /* the oldest default-domain opset imported */
#define FXON_MAX_OPSET 23 /* the newest known */

/* ONNX element types (TensorProto.DataType) the importer names. */
enum {
    FXON_FLOAT = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT,
    FXON_INT32 = ONNX__TENSOR_PROTO__DATA_TYPE__INT32,
    FXON_INT64 = ONNX__TENSOR_PROTO__DATA_TYPE__INT64,
    FXON_BOOL = ONNX__TENSOR_PROTO__DATA_TYPE__BOOL,
    FXON_DOUBLE = ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE,
};

/* Symbolic dims in folded shape constants (see the comment above). */
#define FXON_SYM_ANY   INT64_MIN
#define FXON_SYM(axis) (INT64_MIN + 1 + (int64_t)(axis))
static inline bool fxon_is_sym(int64_t v) { return v <= INT64_MIN + 1 + FXON_MAX_DIMS; }
static inline int fxon_sym_axis(int64_t v)
{
    return v == FXON_SYM_ANY ? -1 : (int)(v - INT64_MIN - 1);
}

/* A tensor known at import time. elem is FXON_FLOAT (data in f) or
 * FXON_INT64 (data in i); a scalar has ndim 0 and numel 1. */
typedef struct fxon_const {
    int elem;
    int ndim;
    int64_t shape[FXON_MAX_DIMS];
    int64_t numel;
    float *f;
    int64_t *i;
} fxon_const;

/* An ONNX value (a graph input, initializer or node output). */
typedef struct fxon_value {
    const char *name;             /* its ONNX name */
    const char *ref;              /* spec reference of the run-time tensor, or NULL */
    const fxon_const *c;          /* its value when known at import, or NULL */
    int elem;                     /* ONNX element type; 0: unknown */
    int ndim;                     /* -1: rank unknown */
    int64_t shape[FXON_MAX_DIMS]; /* -1: size not static */
    Fluxion__V1__Node *node;      /* the spec node that computes it, or NULL */
    int out_index;                /* which output of node */
    int uses;                     /* node inputs and graph outputs reading it */
    bool initializer;             /* an initializer (its name names a weight) */
    int producer;                 /* index of the ONNX node making it; -1: none */
} fxon_value;

typedef struct fxon_ctx fxon_ctx;
struct fxon_ctx {
    int64_t opset;               /* the default domain's opset */
    const Onnx__NodeProto *node; /* the node being converted */
    char *err;
    size_t errlen;
    struct fxon_impl *impl; /* import.c's state */
};

typedef int (*fxon_convert_fn)(fxon_ctx *cx, const Onnx__NodeProto *n);
typedef struct {
    const char *op_type;
    int min_opset;
    fxon_convert_fn fn;
} fxon_converter;

/* The converter tables, each ending with { NULL, 0, NULL }. (Not weak: a
 * weak reference does not pull import_layers.o out of the static library,
 * and fluxiond then runs without the layers.) */
extern const fxon_converter fxon_ops[];
extern const fxon_converter fxon_layer_ops[];

/* ---- errors: each returns the code it reports */

/* FXS_INVALID_ARGUMENT, "node 'NAME' (OpType, opset N): <message>". */
int fxon_fail(fxon_ctx *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* FXS_RESOURCE_EXHAUSTED, out of memory. */
int fxon_oom(fxon_ctx *cx);

/* ---- attributes of the ONNX node */

const Onnx__AttributeProto *fxon_attr(const Onnx__NodeProto *n, const char *name);
/* Fails naming the first attribute of n not in known (NULL-terminated). */
int fxon_attrs_known(fxon_ctx *cx, const Onnx__NodeProto *n, const char *const *known);
int fxon_attr_int(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, int64_t def,
                  int64_t *out);
int fxon_attr_float(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, double def,
                    double *out);
int fxon_attr_str(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, const char *def,
                  const char **out);
/* *v NULL and *count 0 when absent. */
int fxon_attr_ints(fxon_ctx *cx, const Onnx__NodeProto *n, const char *name, const int64_t **v,
                   size_t *count);

/* ---- inputs and values */

/* The name of input i, NULL when absent or "" (an omitted optional input). */
const char *fxon_in(const Onnx__NodeProto *n, int i);
/* The number of inputs, trailing omitted ones not counted. */
int fxon_nin(const Onnx__NodeProto *n);
fxon_value *fxon_value_of(fxon_ctx *cx, const char *name); /* NULL: unknown */
/* Input i (required: absent fails naming it). */
int fxon_input(fxon_ctx *cx, const Onnx__NodeProto *n, int i, fxon_value **v);
/* Input i as a constant, or fails ("input i ('x') must be a constant"). */
int fxon_need_const(fxon_ctx *cx, const Onnx__NodeProto *n, int i, const fxon_const **c);
/* Input i as a run-time tensor's spec reference (a float constant is
 * materialised, see above), or fails. */
int fxon_need_ref(fxon_ctx *cx, const Onnx__NodeProto *n, int i, const char **ref);
/* The scalar value of a constant with one element (any shape). */
bool fxon_const_scalar(const fxon_const *c, double *out);
/* Element k of a constant as int64 (floats truncated) / as double. */
int64_t fxon_const_int(const fxon_const *c, int64_t k);
double fxon_const_float(const fxon_const *c, int64_t k);
/* A new constant (zeroed data of elem's kind; NULL after fxon_oom). */
fxon_const *fxon_const_new(fxon_ctx *cx, int elem, int ndim, const int64_t *shape);

/* ---- emitting */

/* Appends a spec node (op, unique valid name from hint or the ONNX node,
 * inputs refs[0..nin)); NULL after failing. */
Fluxion__V1__Node *fxon_emit(fxon_ctx *cx, const char *op, const char *hint, int nin,
                             const char *const *refs);
int fxon_set_int(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, int64_t v);
int fxon_set_float(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, double v);
int fxon_set_bool(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, bool v);
int fxon_set_str(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, const char *v);
int fxon_set_ints(fxon_ctx *cx, Fluxion__V1__Node *node, const char *key, const int64_t *v,
                  size_t count);
/* The attribute key of a spec node, or NULL. */
Fluxion__V1__AttrValue *fxon_get_attr(Fluxion__V1__Node *node, const char *key);
/* "name" for k == 0, else "name:k". */
const char *fxon_out_ref(fxon_ctx *cx, const Fluxion__V1__Node *node, int k);

/* Defines ONNX value onnx_name as a run-time tensor (made by node's output
 * out_index; node may be NULL), a constant, or another value. Fails when
 * the name is defined already. */
int fxon_define(fxon_ctx *cx, const char *onnx_name, Fluxion__V1__Node *node, int out_index,
                int elem, int ndim, const int64_t *shape);
int fxon_define_const(fxon_ctx *cx, const char *onnx_name, const fxon_const *c);
int fxon_alias(fxon_ctx *cx, const char *onnx_name, const fxon_value *v);

/* An f32 parameter "<node name>.<param>" (zeroed, to fill); NULL after
 * failing. */
float *fxon_param(fxon_ctx *cx, const Fluxion__V1__Node *node, const char *param, int ndim,
                  const int64_t *shape);
/* A node name hint for a layer whose weight is w ("fc1.weight" -> "fc1"). */
const char *fxon_layer_name(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_value *w);

/* ---- shapes */

/* Numpy broadcasting of two static shapes (rank -1 if either is unknown);
 * false when they cannot broadcast. */
bool fxon_broadcast(const fxon_value *a, const fxon_value *b, int *ndim, int64_t *shape);
/* axis in [-ndim, ndim) -> [0, ndim); fails naming the attribute. */
int fxon_axis(fxon_ctx *cx, const char *what, int64_t axis, int ndim, int *out);

/* ---- memory owned by the import */

void *fxon_alloc(fxon_ctx *cx, size_t size); /* zeroed; NULL after fxon_oom */
char *fxon_strdup(fxon_ctx *cx, const char *s);
char *fxon_printf(fxon_ctx *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
