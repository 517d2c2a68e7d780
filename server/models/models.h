/*
 * models.h - a stored model: the one place that turns a stored record
 * (store/: spec bytes, seed, versions) into a graph (models/graph.h) with
 * the weights of a version. Serving, training and the model service all go
 * through here, so "stored spec -> graph", "version 0 means the latest" and
 * "weights that fit the graph" are written once, with one set of messages.
 *
 * The folder models/ owns: graph.c/graph_parse.c (ModelSpec -> validated
 * graph, shape inference, forward, weights in and out), the op table
 * (graph_layers.c, graph_ops.c) and this file. It calls the engine and the
 * store, never gRPC or serving.
 *
 * Every function returns 0 or an fxs_status code (base/status.h) with the
 * message in err: FXS_NOT_FOUND (no such version), FXS_INVALID_ARGUMENT
 * (weights that do not fit), FXS_RESOURCE_EXHAUSTED (out of memory),
 * FXS_DATA_LOSS (a stored spec that does not parse), FXS_INTERNAL (a stored
 * spec that no longer builds, e.g. under a lower --max-model-params), or the
 * store's code.
 */
#ifndef FXM_MODELS_H
#define FXM_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "models/graph.h"
#include "store/store.h"

/* The graph of a stored model's spec with the initial weights of its seed.
 * max_params: the daemon's per-model limit (0: the graph's default). */
int fxm_graph_of(const fxdb_model_rec *rec, uint64_t max_params, fxg_graph **out, char *err,
                 size_t errlen);

/* The stored version `want` (0: production, the served one; the latest
 * usable one when production's weights are unusable) into *version;
 * FXS_NOT_FOUND naming the model when it has no such version,
 * FXS_FAILED_PRECONDITION when it has no usable version at all. */
int fxm_resolve_version(const fxdb_model_rec *rec, int64_t want, int64_t *version, char *err,
                        size_t errlen);

/* rec's spec becomes the spec revision of its version `version` when that
 * is not the latest version's (a `model update` since): the graph its
 * weights fit. */
int fxm_use_version_spec(fxdb_store *st, fxdb_model_rec *rec, int64_t version, char *err,
                         size_t errlen);

typedef struct {
    uint64_t max_params;  /* the daemon's per-model limit (0: the graph's default) */
    bool inference_only;  /* for serving: the gradient buffers are dropped before
                             the weights are read (half the parameter memory) */
    bool fresh;           /* no weights read: the graph as initialized from seed */
    uint64_t seed;        /* fresh: the initialization's seed (0: the model's) */
} fxm_load_opts;

typedef struct {
    fxg_graph *g;         /* owned by the caller */
    int64_t model_id;     /* the model's row (fxdb_model_rec.id) it came from */
    int64_t version;      /* the version loaded */
    bool loaded;          /* the store's "served" flag of the model */
} fxm_loaded;

/* The graph of model `name` (its version's spec revision) with the weights
 * of version `want` (0: the latest usable one). The record, the spec and
 * the weights are read one after the other, each checked to be of the same
 * model row: a model deleted and created again under its name in between
 * (its versions numbered anew, maybe for another spec) is read again, at
 * most a few times, then ABORTED. */
int fxm_load_version(fxdb_store *st, const char *name, int64_t want, const fxm_load_opts *o,
                     fxm_loaded *out, char *err, size_t errlen);

/* Checks that a safetensors buffer holds exactly the weights of the
 * model's graph (names, shapes, dtypes): FXS_INVALID_ARGUMENT naming the
 * tensor otherwise. Builds a fresh graph: a served one is never touched. */
int fxm_check_weights(const fxdb_model_rec *rec, uint64_t max_params, const void *buf,
                      size_t len, char *err, size_t errlen);

/* A parameter or buffer of a carry (fxm_carry): its shape in the graph
 * carried into (ndim -1: none, dropped) and in the one carried from (old_ndim
 * -1: none, new). */
typedef struct {
    char *name;
    int ndim, old_ndim;
    int64_t shape[FX_MAX_DIMS], old_shape[FX_MAX_DIMS];
} fxm_param_change;

typedef struct {
    fxm_param_change *carried, *reinit, *dropped;
    int n_carried, n_reinit, n_dropped;
} fxm_carry_report;

/* Copies into `to` (freshly initialized) every parameter and buffer of
 * `from` with the same name, dtype and shape; the others of `to` keep their
 * initialization. rep says which were carried, re-initialized (new, or a
 * shape or dtype that changed) and dropped (in `from` only). */
int fxm_carry(const fxg_graph *from, fxg_graph *to, fxm_carry_report *rep, char *err,
              size_t errlen);
void fxm_carry_report_free(fxm_carry_report *rep);

#endif
