/*
 * serving.h - the models being served: for each loaded model, the graph of
 * the version it serves (and of older versions asked for by number), their
 * statistics, and their batchers (batcher.h), whose instances run them.
 *
 * A loaded version is a reference-counted fxsv_served: a request acquires it,
 * runs in a batch, and releases it, so loading a new version (new weights)
 * or unloading swaps the pointer without failing any request in flight.
 */
#ifndef FXSV_SERVING_H
#define FXSV_SERVING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serving/batcher.h"
#include "serving/devices.h"
#include "fluxion.h"
#include "models/graph.h"
#include "store/store.h"

typedef struct fxsv_serving fxsv_serving;
typedef struct fxsv_served fxsv_served;

typedef struct {
    uint64_t max_params;      /* per model (graph limit); 0: graph default */
    const fxsv_devices *devices; /* enabled (outlives the module); NULL: cpu only */
} fxsv_serving_opts;

fxsv_serving *fxsv_serving_create(fxdb_store *st, const fxsv_serving_opts *opts);
/* Unloads everything (requests in flight hold their own references). */
void fxsv_serving_free(fxsv_serving *sv);

/* Changes to one model's serving (load, reload, unload, settings) run one
 * at a time, in the order they are called: the last one called decides what
 * is served. Each also keeps the store's "loaded" flag (a restart serves the
 * models loaded at the stop).
 *
 * Serves the latest stored version of a model (replacing the one served:
 * requests in flight finish on the old one). Status codes as store.h; the
 * serving setting "device" (devices.h) places the weights: a device not
 * enabled is FAILED_PRECONDITION, weights over memory_limit_bytes or out of
 * device memory RESOURCE_EXHAUSTED, each naming the device. */
int fxsv_serving_load(fxsv_serving *sv, const char *name, char *err, size_t errlen);
/* As fxsv_serving_load for a model that is served (a new version, new
 * settings); 0 and nothing done for one that is not. */
int fxsv_serving_reload(fxsv_serving *sv, const char *name, char *err, size_t errlen);
/* As fxsv_serving_load with the graph of the latest version already built
 * (CreateModel's, which made its weights): g (its gradients dropped) is
 * taken, freed on failure, and served as that version, without building it
 * again from the store. When a newer version was stored meanwhile, that one
 * is loaded instead. */
int fxsv_serving_load_graph(fxsv_serving *sv, const char *name, int64_t version, fxg_graph *g,
                           char *err, size_t errlen);
/* Stops serving it (requests in flight finish) and clears its "loaded"
 * flag (a model no longer stored has none). NOT_FOUND when not loaded. To
 * delete a model, delete it from the store first, then unload: a load that
 * races the delete then either ends before the unload or finds no model. */
int fxsv_serving_unload(fxsv_serving *sv, const char *name, char *err, size_t errlen);
bool fxsv_serving_is_loaded(fxsv_serving *sv, const char *name, int64_t *version);
/* Checks and stores a model's batching settings (the device must be one
 * this server has enabled); a loaded model is reloaded with them (requests
 * in flight finish under the old ones). */
int fxsv_serving_set_config(fxsv_serving *sv, const char *name, const fxb_config *c, char *err,
                           size_t errlen);
int fxsv_serving_count_loaded(fxsv_serving *sv);

/* The served instance of name at version (0: the one served). NOT_FOUND when
 * the model or version is not stored; FAILED_PRECONDITION when the model is
 * not loaded (UNAVAILABLE is kept for the server itself being unreachable). An older stored version is loaded on demand and kept. */
int fxsv_serving_acquire(fxsv_serving *sv, const char *name, int64_t version, fxsv_served **out,
                        char *err, size_t errlen);
void fxsv_served_release(fxsv_served *m);

const fxg_graph *fxsv_served_graph(const fxsv_served *m);
/* Runs the instance's inference requests (batcher.h); settings from the
 * store (servecfg.h) as they were when the instance was built. */
fxb_batcher *fxsv_served_batcher(const fxsv_served *m);
const char *fxsv_served_name(const fxsv_served *m);
int64_t fxsv_served_version(const fxsv_served *m);

/* Statistics of one request (nanoseconds; compute times are its batch's).
 * Executed batches are counted by the batcher (execution_count, batch). */
typedef struct {
    bool ok;
    uint64_t queue_ns, input_ns, infer_ns, output_ns;
    uint64_t batch_size;     /* samples of the request (inference_count) */
} fxsv_exec_record;
void fxsv_served_record(fxsv_served *m, const fxsv_exec_record *r);

typedef struct {
    uint64_t count, ns;
} fxsv_duration;
typedef struct {
    uint64_t batch_size;
    fxsv_duration input, infer, output;
} fxsv_batch_stats;
typedef struct {
    uint64_t last_inference_ms, inference_count, execution_count;
    fxsv_duration success, fail, queue, input, infer, output;
    int n_batch;
    fxsv_batch_stats batch[64]; /* by batch size, ascending */
} fxsv_stats;
void fxsv_served_stats(fxsv_served *m, fxsv_stats *out);

/* Every served instance (loaded versions), acquired: release each. */
int fxsv_serving_list(fxsv_serving *sv, fxsv_served ***out, int *n);


#endif
