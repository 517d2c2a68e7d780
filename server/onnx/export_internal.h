/*
 * export_internal.h - what the files of the ONNX exporter share: the
 * builder (export.c: names, nodes, initializers, the spec's attributes)
 * and the converters of the op table (export_ops.c, export_layers.c).
 */
#ifndef FXON_EXPORT_INTERNAL_H
#define FXON_EXPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fluxion.h"
#include "onnx/onnx.pb-c.h"
#include "onnx/export.h"
#include "base/pbarena.h"

/* ONNX element types (TensorProto.DataType). */
enum { FXON_FLOAT = 1, FXON_INT32 = 6, FXON_INT64 = 7, FXON_BOOL = 9 };

/* A tensor of the exported graph: its ONNX name and what shape inference
 * said of it (shape[i] == -1: follows a free input dim). */
typedef struct {
    const char *name;
    fx_dtype dtype;
    int ndim;
    int64_t shape[FX_MAX_DIMS];
} fxon_xval;

typedef struct {
    pba a; /* every message, array and string */
    Onnx__NodeProto **nodes;
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    const fx_params *params; /* the version's weights, by name */
    unsigned tmp;            /* counter for fresh tensor names */
    char *err;
    size_t errlen;
} fxon_ex;

/* A converter: writes the ONNX nodes computing spec node n's outputs
 * out[0..nout) from in[0..nin). 0, or -1 with ex->err set (the caller adds
 * nothing: name the node). */
typedef int (*fxon_xconv_fn)(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                             const fxon_xval *out, int nout);

typedef struct {
    const char *op;
    fxon_xconv_fn fn; /* NULL: the op has no ONNX form */
} fxon_xconv;

/* export_seq.c's converters, in export_layers.c's table. */
int fxon_ex_cv_recurrent(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                         const fxon_xval *out, int nout);
int fxon_ex_cv_mha(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                   const fxon_xval *out, int nout);
int fxon_ex_cv_sdpa(fxon_ex *ex, const Fluxion__V1__Node *n, const fxon_xval *in, int nin,
                    const fxon_xval *out, int nout);

extern const fxon_xconv fxon_ex_op_convs[];    /* export_ops.c, NULL-terminated */
extern const fxon_xconv fxon_ex_layer_convs[]; /* export_layers.c, NULL-terminated */

/* ------------------------------------------------------------ builder */

/* -1 with "node 'n' (op): ..." in ex->err. */
int fxon_ex_fail(fxon_ex *ex, const Fluxion__V1__Node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A fresh tensor name "<node>/<what>_<k>". */
const char *fxon_ex_tmp(fxon_ex *ex, const char *node, const char *what);
/* Appends a node; NULL when out of memory (ex->a.failed). */
Onnx__NodeProto *fxon_ex_node(fxon_ex *ex, const char *op, const char *name, int nin,
                              const char *const *in, int nout, const char *const *out);
/* A node with one output: out, or a fresh name when out is NULL; returns
 * the output's name (NULL when out of memory). The node's name is the
 * output's. */
const char *fxon_ex_op(fxon_ex *ex, const char *op, const char *node, const char *out, int nin,
                       const char *const *in);
#define FXON_IN(...)                                                                               \
    (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)), (const char *const[])     \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
void fxon_ex_attr_i(fxon_ex *ex, Onnx__NodeProto *np, const char *name, int64_t v);
void fxon_ex_attr_f(fxon_ex *ex, Onnx__NodeProto *np, const char *name, float v);
void fxon_ex_attr_s(fxon_ex *ex, Onnx__NodeProto *np, const char *name, const char *v);
void fxon_ex_attr_ints(fxon_ex *ex, Onnx__NodeProto *np, const char *name, int n, const int64_t *v);
void fxon_ex_attr_strs(fxon_ex *ex, Onnx__NodeProto *np, const char *name, int n,
                       const char *const *v);
/* The node that produced tensor name (the last one appended: for attrs). */
Onnx__NodeProto *fxon_ex_last(fxon_ex *ex);

/* Initializers (little-endian raw_data): f32 data must be memory of ex's
 * arena (kept as is, not copied: weights are large); constants are copied
 * and named "<node>/<what>_<k>". Return the initializer's name, NULL when
 * out of memory. */
const char *fxon_ex_init_f32(fxon_ex *ex, const char *name, int ndim, const int64_t *shape,
                             const float *data);
const char *fxon_ex_const_i64(fxon_ex *ex, const char *node, int n, const int64_t *v);
const char *fxon_ex_scalar_f(fxon_ex *ex, const char *node, float v);
const char *fxon_ex_scalar_i64(fxon_ex *ex, const char *node, int64_t v);

/* The weight "<node>.<param>": its tensor, or NULL (then -1 from callers
 * with the message set by fxon_ex_param_data). */
const fx_tensor *fxon_ex_param(fxon_ex *ex, const char *node, const char *param);
/* Its f32 values in arena memory (NULL: absent or out of memory, message
 * set). */
float *fxon_ex_param_data(fxon_ex *ex, const Fluxion__V1__Node *n, const char *param,
                          int64_t *numel);
/* The weight as an initializer of the same name and shape. */
const char *fxon_ex_param_init(fxon_ex *ex, const Fluxion__V1__Node *n, const char *param);

/* --------------------------------------------------- spec attributes */
/* The spec was validated (fxg_build) before export, so these trust the
 * types; def is the schema's default (docs/model-spec.md). */
const Fluxion__V1__AttrValue *fxon_ex_attr(const Fluxion__V1__Node *n, const char *name);
int64_t fxon_ex_ai(const Fluxion__V1__Node *n, const char *name, int64_t def);
double fxon_ex_af(const Fluxion__V1__Node *n, const char *name, double def);
bool fxon_ex_ab(const Fluxion__V1__Node *n, const char *name, bool def);
const char *fxon_ex_as(const Fluxion__V1__Node *n, const char *name, const char *def);
/* INTS: the count (0 when unset) and the values. */
int fxon_ex_aints(const Fluxion__V1__Node *n, const char *name, const int64_t **v);
/* "int or [h,w]" into hw[0], hw[1]; false when unset (hw gets def). */
bool fxon_ex_apair(const Fluxion__V1__Node *n, const char *name, int64_t def, int64_t hw[2]);

/* Shared converters: an activation by its spec name ("none" passes x
 * through) into out (NULL: a fresh name); the output's name. */
const char *fxon_ex_activation(fxon_ex *ex, const char *node, const char *act, const char *x,
                               const char *out);
/* A negative axis made positive for rank nd. */
static inline int64_t fxon_ex_axis(int64_t axis, int nd) { return axis < 0 ? axis + nd : axis; }

#endif
