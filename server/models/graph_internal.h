/*
 * graph_internal.h - what graph.c (validation, instantiation, forward,
 * weights) and graph_ops.c (the op table) share. Nothing outside these two
 * files includes it.
 */
#ifndef FXG_GRAPH_INTERNAL_H
#define FXG_GRAPH_INTERNAL_H

#include "models/graph.h"

/* Attribute kinds of the schema. STRING attributes are enumerations: the
 * parsed value is the index of the choice. PAIR is one int for both spatial
 * axes or a list [h, w] (conv2d, pools). INTS is a list of ints. */
typedef enum { AT_INT, AT_FLOAT, AT_BOOL, AT_STRING, AT_INTS, AT_PAIR } fxg_attr_type;

typedef struct {
    const char *name;
    fxg_attr_type type;
    bool required;
    double def;                  /* default (numbers, bools, choice index); unused if
                                    !has_default and !required: then the attr is "unset" */
    bool has_default;
    double min, max;             /* inclusive bounds of the value or of each list element */
    const char *const *choices;  /* AT_STRING: NULL-terminated */
    int min_len, max_len;        /* AT_INTS: list length bounds */
    const char *doc;             /* one line for docs and `fluxion ops` */
} fxg_attr_schema;

/* A parsed attribute: set is false only for an optional one without default. */
typedef struct {
    bool set;
    int64_t i;      /* INT, BOOL, STRING (choice index); PAIR: the h value */
    int64_t i2;     /* PAIR: the w value */
    double f;       /* FLOAT */
    int n;          /* INTS length */
    int64_t *v;     /* INTS values (owned) */
} fxg_attr;

struct fxg_op;

/* A node after validation. Value slots: the graph's inputs come first, then
 * each node's outputs (out_slot .. out_slot + nout - 1). */
typedef struct {
    char *name;
    const struct fxg_op *op;
    int nin;
    int *in_slot;
    fxg_attr *attrs; /* one per schema entry, in schema order */
    int nout;
    int out_slot;
    fx_layer *layer; /* NULL for ops without parameters */
} fxg_node;

/* Roles of an op's inputs, for the probe values of integer graph inputs
 * (indices probe as 0, lengths as 1 so that they are in [1, T]). */
#define FXG_ROLE_LENGTHS(i) (1u << (i))

typedef struct fxg_op {
    const char *name;
    int min_in, max_in;          /* max_in < 0: any number */
    const fxg_attr_schema *attrs; /* terminated by a NULL name */
    unsigned lengths_inputs;     /* FXG_ROLE_LENGTHS bits */
    const char *doc;             /* summary: inputs, outputs, parameters */
    /* Outputs (NULL: one). */
    int (*nout)(const fxg_node *n);
    /* Checks between attributes and input count (NULL: none); 0 or -1 with
     * a message (without the node name, the caller adds it). */
    int (*check)(const fxg_node *n, char *err, size_t errlen);
    /* Parameter + buffer elements, -1 on overflow (NULL: none). */
    int64_t (*nparams)(const fxg_node *n);
    /* Makes the layer named after the node (NULL: the op has none). */
    fx_layer *(*build)(const fxg_node *n, fx_rng *rng);
    /* Runs the node: in[0..nin) to out[0..nout); errors go to ctx. */
    void (*forward)(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out);
    /* Shape inference stand-in for forward when the probe values cannot be
     * valid for the real op (CTC); NULL: forward is used. */
    void (*probe)(const fxg_node *n, fx_ctx *ctx, fx_tensor *const *in, fx_tensor **out);
} fxg_op;

/* The op table (graph_ops.c), terminated by a NULL name. */
extern const fxg_op fxg_ops[];
const fxg_op *fxg_find_op(const char *name);

/* Attribute lookups by schema name (the name must be in the op's schema). */
const fxg_attr *fxg_attr_get(const fxg_node *n, const char *name);
int64_t fxg_attr_i(const fxg_node *n, const char *name);
double fxg_attr_f(const fxg_node *n, const char *name);
bool fxg_attr_b(const fxg_node *n, const char *name);

/* a * b and a + b, -1 when either is -1 or the result overflows. */
int64_t fxg_mul(int64_t a, int64_t b);
int64_t fxg_add(int64_t a, int64_t b);

#endif
