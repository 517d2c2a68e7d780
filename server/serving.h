/*
 * serving.h - the models being served: for each loaded model, the graph of
 * the version it serves (and of older versions asked for by number), their
 * statistics, and their batchers (batcher.h), whose instances run them.
 *
 * A loaded version is a reference-counted fxd_served: a request acquires it,
 * runs in a batch, and releases it, so loading a new version (new weights)
 * or unloading swaps the pointer without failing any request in flight.
 */
#ifndef FXD_SERVING_H
#define FXD_SERVING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batcher.h"
#include "devices.h"
#include "fluxion.h"
#include "graph.h"
#include "store.h"

typedef struct fxd_serving fxd_serving;
typedef struct fxd_served fxd_served;

typedef struct {
    uint64_t max_params;      /* per model (graph limit); 0: graph default */
    const fxd_devices *devices; /* enabled (outlives the module); NULL: cpu only */
} fxd_serving_opts;

fxd_serving *fxd_serving_create(fxs_store *st, const fxd_serving_opts *opts);
/* Unloads everything (requests in flight hold their own references). */
void fxd_serving_free(fxd_serving *sv);

/* Serves the latest stored version of a model (replacing the one served:
 * requests in flight finish on the old one). Status codes as store.h; the
 * serving setting "device" (devices.h) places the weights: a device not
 * enabled is FAILED_PRECONDITION, weights over memory_limit_bytes or out of
 * device memory RESOURCE_EXHAUSTED, each naming the device. */
int fxd_serving_load(fxd_serving *sv, const char *name, char *err, size_t errlen);
/* Stops serving it (requests in flight finish). NOT_FOUND when not loaded. */
int fxd_serving_unload(fxd_serving *sv, const char *name, char *err, size_t errlen);
bool fxd_serving_is_loaded(fxd_serving *sv, const char *name, int64_t *version);
/* Checks and stores a model's batching settings (the device must be one
 * this server has enabled); a loaded model is reloaded with them (requests
 * in flight finish under the old ones). */
int fxd_serving_set_config(fxd_serving *sv, const char *name, const fxb_config *c, char *err,
                           size_t errlen);
int fxd_serving_count_loaded(fxd_serving *sv);

/* The served instance of name at version (0: the one served). NOT_FOUND when
 * the model or version is not stored; FAILED_PRECONDITION when the model is
 * not loaded (UNAVAILABLE is kept for the server itself being unreachable). An older stored version is loaded on demand and kept. */
int fxd_serving_acquire(fxd_serving *sv, const char *name, int64_t version, fxd_served **out,
                        char *err, size_t errlen);
void fxd_served_release(fxd_served *m);

const fxg_graph *fxd_served_graph(const fxd_served *m);
/* Runs the instance's inference requests (batcher.h); settings from the
 * store (servecfg.h) as they were when the instance was built. */
fxb_batcher *fxd_served_batcher(const fxd_served *m);
const char *fxd_served_name(const fxd_served *m);
int64_t fxd_served_version(const fxd_served *m);

/* Statistics of one request (nanoseconds; compute times are its batch's).
 * Executed batches are counted by the batcher (execution_count, batch). */
typedef struct {
    bool ok;
    uint64_t queue_ns, input_ns, infer_ns, output_ns;
    uint64_t batch_size;     /* samples of the request (inference_count) */
} fxd_exec_record;
void fxd_served_record(fxd_served *m, const fxd_exec_record *r);

typedef struct {
    uint64_t count, ns;
} fxd_duration;
typedef struct {
    uint64_t batch_size;
    fxd_duration input, infer, output;
} fxd_batch_stats;
typedef struct {
    uint64_t last_inference_ms, inference_count, execution_count;
    fxd_duration success, fail, queue, input, infer, output;
    int n_batch;
    fxd_batch_stats batch[64]; /* by batch size, ascending */
} fxd_stats;
void fxd_served_stats(fxd_served *m, fxd_stats *out);

/* Every served instance (loaded versions), acquired: release each. */
int fxd_serving_list(fxd_serving *sv, fxd_served ***out, int *n);


#endif
