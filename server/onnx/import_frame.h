/*
 * import_frame.h - the importer's state behind fxon_ctx, shared by import.c
 * (the walk) and import_frame.c (the converter API of onnx_internal.h).
 */
#ifndef FXON_IMPORT_FRAME_H
#define FXON_IMPORT_FRAME_H

#include "onnx/onnx_internal.h"
#include "base/pbarena.h"

#define FXON_MAX_NODE_ATTRS   16        /* more than any spec op takes */
#define FXON_MAX_MATERIALIZED (1 << 24) /* elements of a constant used as a tensor */

typedef struct {
    const char *name; /* "<node>.<param>" */
    int ndim;
    int64_t shape[FXON_MAX_DIMS];
    int64_t numel;
    float *data;
} fxon_param_rec;

struct fxon_impl {
    pba arena;
    /* ONNX values by name: open addressing, capacity a power of two. */
    fxon_value **vals;
    size_t vcap, vcount;
    /* Names taken in the spec (inputs and nodes), the same way. */
    const char **names;
    size_t ncap, ncount;
    /* The spec's nodes as emitted (malloc'd array of arena nodes). */
    Fluxion__V1__Node **nodes;
    size_t n_nodes, cap_nodes;
    fxon_param_rec *params;
    size_t n_params, cap_params;
    int64_t param_elems;       /* all parameters together, against the limit */
    int64_t const_elems;       /* constants made at import (FXON_MAX_CONST_ELEMS) */
    bool reading_initializers; /* their size is the file's: not counted */
    fxon_value **graph_inputs; /* the spec's inputs, in order */
    size_t n_graph_inputs;
    const char *ones_ref; /* a [1] tensor of ones (import_data.c), once made */
    const Onnx__GraphProto *graph; /* the ONNX graph (fxon_value.producer indexes its nodes) */
};

/* Creates / frees cx->impl. */
int fxon__frame_init(fxon_ctx *cx);
void fxon__frame_free(fxon_ctx *cx);
/* A new value entry for name (NULL after failing: duplicate, memory). */
fxon_value *fxon__value_new(fxon_ctx *cx, const char *name);
/* Marks a spec name as taken (graph inputs). false: taken already. */
bool fxon__name_take(fxon_ctx *cx, const char *name);
bool fxon__name_taken(fxon_ctx *cx, const char *name);
/* Safetensors bytes of the parameters (malloc'd). */
int fxon__encode_weights(fxon_ctx *cx, uint8_t **out, size_t *len);
/* Reads an initializer / Constant tensor into a constant. what names it in
 * errors ("initializer 'w'"). */
int fxon__tensor_const(fxon_ctx *cx, const Onnx__TensorProto *t, const char *what,
                       fxon_const **out);
/* Makes float constant v a run-time tensor (a dense layer on a tensor of
 * ones whose weight is the constant: a trainable parameter), sets v->ref. */
int fxon__materialize(fxon_ctx *cx, fxon_value *v);
/* The element type and static shape of a ValueInfoProto (ndim -1 if none). */
void fxon__value_info(const Onnx__ValueInfoProto *vi, int *elem, int *ndim, int64_t *shape);

#endif
