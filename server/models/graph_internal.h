/*
 * graph_internal.h - what the files of models/ share: graph.c (validation,
 * instantiation, forward, weights) and the op table (graph_layers.c,
 * graph_ops.c). Nothing outside models/ includes it but test_graph.c.
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
    /* Checks between attributes and input count (NULL: none); 0 or
     * FXS_INVALID_ARGUMENT with a message (without the node name, the
     * caller adds it). */
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

/* The op table: the rows of ops with parameters (graph_layers.c) then the
 * others (graph_ops.c), each terminated by a NULL name. fxg_op_at(i) walks
 * both in that order, i in [0, fxg_num_ops()). */
extern const fxg_op fxg_layer_ops[];
extern const fxg_op fxg_tensor_ops[];
int fxg_num_ops(void);
const fxg_op *fxg_op_at(int i);
const fxg_op *fxg_find_op(const char *name);

/* Attribute lookups by schema name (the name must be in the op's schema). */
const fxg_attr *fxg_attr_get(const fxg_node *n, const char *name);
int64_t fxg_attr_i(const fxg_node *n, const char *name);
double fxg_attr_f(const fxg_node *n, const char *name);
bool fxg_attr_b(const fxg_node *n, const char *name);
/* 0 when attribute d divides attribute m, else INVALID_ARGUMENT with
 * "D d must divide M m" (an op's check). */
int fxg_attr_divides(const fxg_node *n, const char *d, const char *m, char *err, size_t errlen);

/* a * b and a + b, -1 when either is -1 or the result overflows. */
int64_t fxg_mul(int64_t a, int64_t b);
int64_t fxg_add(int64_t a, int64_t b);

/* ------------------------------------------------- graph construction */

#define FXG_NAME_MAX_LEN 256
#define FXG_DEFAULT_MAX_PARAMS (UINT64_C(1) << 30)
#define FXG_DEFAULT_MAX_NODES 10000
/* Elements of one input's fixed dims: beyond this a request could not be
 * served anyway, and products of sizes stay far from overflow. */
#define FXG_INPUT_MAX_NUMEL (INT64_C(1) << 31)
#define FXG_MAX_ATTRS 32 /* per op schema */

struct fxg_graph {
    int nin;
    fxg_tensor_info *inputs;
    bool *in_is_lengths; /* integer inputs read as lengths: probe with 1 */
    int nnodes;
    fxg_node *nodes;     /* spec order */
    int *order;          /* topological order of node indices */
    int nslots, max_node_in;
    int nout;
    fxg_tensor_info *outputs;
    int *out_slot;
    fx_params params, trainable;
    fx_device device;    /* of every parameter and buffer */
};

/* The graph under construction and where its errors go. */
typedef struct {
    fxg_graph *g;
    const Fluxion__V1__ModelSpec *spec;
    char *err;
    size_t errlen;
    bool nomem;
} fxg_builder;

/* Records out of memory in b and writes "out of memory (what)"; returns
 * FXS_RESOURCE_EXHAUSTED. */
int fxg__nomem(fxg_builder *b, const char *what);

/* The status for an engine error met while running a node (graph.c). */
int fxg__status_of(fx_status s);

/* The parsing steps of fxg_build (graph_parse.c), in order: the graph's
 * inputs, node idx (name, op, attributes against the op's schema), then
 * every input reference and the outputs. Each returns 0 or -1 with the
 * message in b->err naming the input, node or attribute. */
int fxg__parse_inputs(fxg_builder *b);
int fxg__parse_node(fxg_builder *b, int idx);
int fxg__resolve_all(fxg_builder *b);

#endif
