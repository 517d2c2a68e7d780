/*
 * graph_schema.h - how graph_ops.c and graph_layers.c write attribute
 * schemas (the rows of the op table): REQ, OPT, CHOICE, ... Internal to
 * models/.
 */
#ifndef FXG_GRAPH_SCHEMA_H
#define FXG_GRAPH_SCHEMA_H

#include "models/graph_internal.h"

#define BIG 4.6e18        /* sizes and offsets: below INT64_MAX / 2 */
#define SPATIAL 1048576.0 /* conv/pool settings: they are ints in the engine */
#define FINITE 1e30       /* float attributes that must be finite */
#define PMAX 0.999        /* probabilities in [0, 1): their float must stay < 1 */
#define AXMIN (-FX_MAX_DIMS)
#define AXMAX (FX_MAX_DIMS - 1)

#define REQ(nm, ty, lo, hi) { .name = nm, .type = ty, .required = true, .min = lo, .max = hi }
#define OPT(nm, ty, d, lo, hi) \
    { .name = nm, .type = ty, .has_default = true, .def = d, .min = lo, .max = hi }
#define UNSET(nm, ty, lo, hi) { .name = nm, .type = ty, .min = lo, .max = hi }
#define BOOL(nm, d) { .name = nm, .type = AT_BOOL, .has_default = true, .def = d, .max = 1 }
#define CHOICE(nm, list, d) \
    { .name = nm, .type = AT_STRING, .has_default = true, .def = d, .choices = list }
#define REQ_CHOICE(nm, list) { .name = nm, .type = AT_STRING, .required = true, .choices = list }
#define INTS(nm, req, lo, hi, l0, l1) \
    { .name = nm, .type = AT_INTS, .required = req, .min = lo, .max = hi, .min_len = l0, \
      .max_len = l1 }
#define END { .name = NULL }


#define LAYER(nm, lo, hi, at, np, b, f, docs) \
    { .name = nm, .min_in = lo, .max_in = hi, .attrs = at, .nparams = np, .build = b, \
      .forward = f, .doc = docs }
#define OP(nm, n_in, at, f, docs) \
    { .name = nm, .min_in = n_in, .max_in = n_in, .attrs = at, .forward = f, .doc = docs }

/* Activation names (graph_ops.c), index = fx_activation. */
extern const char *const fxg_acts[];
/* The empty schema. */
extern const fxg_attr_schema fxg_no_attrs[];

#endif
