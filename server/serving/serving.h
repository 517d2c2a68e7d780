/*
 * serving.h - the models being served (serving/, prefix fxsv_; the batcher
 * inside it is fxb_). This module owns: for each loaded model, the graph of
 * the version it serves (and of its canary, canary.c, and of older versions
 * asked for by number); loading, reloading and unloading them; their
 * inference requests (fxsv_submit hides
 * the batcher, batcher.h, which forms and runs the batches, and batch_io.h,
 * which moves their data); and their statistics, of which it is the only
 * writer. Settings: servecfg.h; devices and memory limits: devices.h.
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

/* 0 with the module (nothing served yet) in *out; INVALID_ARGUMENT without
 * a store or RESOURCE_EXHAUSTED out of memory, with *out NULL. */
int fxsv_serving_create(fxdb_store *st, const fxsv_serving_opts *opts, fxsv_serving **out,
                        char *err, size_t errlen);
/* Unloads everything (requests in flight hold their own references). */
void fxsv_serving_free(fxsv_serving *sv);

/* Changes to one model's serving (load, reload, unload, settings) run one
 * at a time, in the order they are called: the last one called decides what
 * is served. Each also keeps the store's "loaded" flag (a restart serves the
 * models loaded at the stop).
 *
 * Serves the production version of a model (its alias "production",
 * docs/versions.md), replacing the one served: requests in flight finish on
 * the old one. A promote or rollback reloads. Status codes as store.h; the
 * serving setting "device" (devices.h) places the weights: a device not
 * enabled is FAILED_PRECONDITION, weights over memory_limit_bytes or out of
 * device memory RESOURCE_EXHAUSTED, each naming the device. */
int fxsv_serving_load(fxsv_serving *sv, const char *name, char *err, size_t errlen);
/* As fxsv_serving_load for a model that is served (a new version, new
 * settings); 0 and nothing done for one that is not. */
int fxsv_serving_reload(fxsv_serving *sv, const char *name, char *err, size_t errlen);
/* As fxsv_serving_load with the graph of the production version already built
 * (CreateModel's, which made its weights): g (its gradients dropped) is
 * taken, freed on failure, and served as that version, without building it
 * again from the store. When production moved meanwhile, its version is
 * loaded instead. */
int fxsv_serving_load_graph(fxsv_serving *sv, const char *name, int64_t version, fxg_graph *g,
                           char *err, size_t errlen);
/* Stops serving it (requests in flight finish) and clears its "loaded"
 * flag (a model no longer stored has none). NOT_FOUND when not loaded. To
 * delete a model, delete it from the store first, then unload: a load that
 * races the delete then either ends before the unload or finds no model. */
int fxsv_serving_unload(fxsv_serving *sv, const char *name, char *err, size_t errlen);
bool fxsv_serving_is_loaded(fxsv_serving *sv, const char *name, int64_t *version);
/* Drops the instance of a version kept for requests that asked for it by
 * number (a deleted version); requests in flight finish on it. */
void fxsv_serving_forget_version(fxsv_serving *sv, const char *name, int64_t version);
/* fxsv_serving_forget_version for every kept version the store no longer
 * has (deleted, or retention removed it), whose statistics go too; a load
 * or reload does it too. */
void fxsv_serving_prune(fxsv_serving *sv, const char *name);
/* Checks and stores a model's batching settings (the device must be one
 * this server has enabled); a loaded model is reloaded with them (requests
 * in flight finish under the old ones). */
int fxsv_serving_set_config(fxsv_serving *sv, const char *name, const fxb_config *c, char *err,
                           size_t errlen);
int fxsv_serving_count_loaded(fxsv_serving *sv);

/* The canary of a model: a second stored version served beside the main
 * one (the version fxsv_serving_load serves), under the same batching
 * settings with a batcher of its own, that takes percent (0..100) of the
 * requests routed without a version (fxsv_serving_route); requests for a
 * version by number go to that version as ever. Stored with the serving
 * settings (servecfg.h), so a restart serves it again; a loaded model
 * serves or drops it at once (requests in flight finish on the instance
 * they hold), a model loaded later serves it from its load. Of every N
 * requests routed without a version since it was set (or the model
 * loaded), exactly floor(N * percent / 100) go to the canary (canary.c).
 * When the main version becomes the canary's, the canary is turned off.
 * version 0: off. NOT_FOUND for a model or a canary version not stored,
 * INVALID_ARGUMENT for the main version itself or percent over 100;
 * building it fails as fxsv_serving_load. */
int fxsv_serving_set_canary(fxsv_serving *sv, const char *name, int64_t version,
                           uint32_t percent, char *err, size_t errlen);

/* The served instance of name at version (0: the one served). NOT_FOUND when
 * the model or version is not stored; FAILED_PRECONDITION when the model is
 * not loaded (UNAVAILABLE is kept for the server itself being unreachable). An older stored version is loaded on demand and kept; the canary's
 * version is its canary instance. */
int fxsv_serving_acquire(fxsv_serving *sv, const char *name, int64_t version, fxsv_served **out,
                        char *err, size_t errlen);
/* As fxsv_serving_acquire, for an inference request: without a version
 * (0) it goes to the canary instance for the canary's share of requests
 * (fxsv_serving_set_canary), else to the main one. */
int fxsv_serving_route(fxsv_serving *sv, const char *name, int64_t version, fxsv_served **out,
                      char *err, size_t errlen);
/* As fxsv_serving_route, only when the instance is at hand (loaded, its
 * version kept): never reads the store or files, so a thread that must not
 * block may call it. false: call fxsv_serving_route from one that may. */
bool fxsv_serving_route_at_hand(fxsv_serving *sv, const char *name, int64_t version,
                                fxsv_served **out);
void fxsv_served_release(fxsv_served *m);

const fxg_graph *fxsv_served_graph(const fxsv_served *m);
const char *fxsv_served_name(const fxsv_served *m);
int64_t fxsv_served_version(const fxsv_served *m);

/* ------------------------------------------------------------ requests */

typedef fxb_input fxsv_input;   /* one input tensor of a request (batcher.h) */
typedef fxb_output fxsv_output; /* one output tensor of an answer (batcher.h) */

/* An inference request for a served instance. Its batch is formed and run
 * by the instance's batcher (batcher.h: batching, priorities, deadlines,
 * running on the caller's thread); serving counts it in the statistics. */
typedef struct {
    const fxsv_input *inputs; /* fxg_num_inputs of its graph, in order, checked by
                               * the caller; borrowed until send */
    uint64_t samples;         /* the request's samples (inference_count) */
    uint32_t priority;        /* 0: the model's default */
    uint64_t timeout_us;      /* 0: the model's */
    int64_t deadline_ns;      /* the client's, CLOCK_MONOTONIC; 0: none */
    uint64_t received_ns;     /* CLOCK_MONOTONIC */
    bool may_run_inline;      /* as fxb_request: fxsv_submit may answer it itself */
    uint64_t inline_max_ns;   /* as fxb_request */
    /* Called once, on a serving thread (or the caller's, inline): status 0
     * and outputs[i] for every graph output i (valid during the call), or
     * an fxs status and its message. Makes the answer without sending it and
     * returns its status: status, or non-zero when the answer could not be
     * made (out of memory building it). */
    int (*answer)(void *user, int status, const char *err, const fxsv_output *outputs);
    /* Then, once the request is counted (so a client that asks for the
     * statistics right after its answer finds it): sends the answer, or the
     * failure (err: the batch's message; NULL when answer's own status), and
     * frees what user holds. */
    void (*send)(void *user, int status, const char *err);
    void *user;
} fxsv_request;

/* Queues a request on m (which it holds until send). 0: answer and send
 * will be called; else a status with the message and neither is called
 * (the request is counted as failed): UNAVAILABLE (queue full, unloading),
 * INVALID_ARGUMENT (priority out of range), RESOURCE_EXHAUSTED. */
int fxsv_submit(fxsv_served *m, const fxsv_request *r, char *err, size_t errlen);
/* Counts a request refused before it could be submitted (its inputs do not
 * fit the model) as failed (code INVALID_ARGUMENT), received at received_ns. */
void fxsv_served_refused(fxsv_served *m, uint64_t received_ns);

/* Inference waiting on dev: the requests queued or in a running batch for
 * every served instance placed there. Each batcher keeps its count in an
 * atomic (fxb_pressure), so requests pay one atomic add and one subtract;
 * this sums them under the module's lock, held for the walk of the loaded
 * models only (as a request's fxsv_serving_acquire holds it). Training's
 * inference-first yield polls it at every step boundary (training/yield.h). */
int fxsv_serving_pressure(fxsv_serving *sv, fx_device dev);
/* The same, and *last_active_ns (may be NULL): when a request there was last
 * submitted or answered (fxu_mono_ns; 0: never), for a yield that lingers
 * between the requests of a stream (batcher.h fxb_last_active_ns). */
int fxsv_serving_activity(fxsv_serving *sv, fx_device dev, uint64_t *last_active_ns);

/* ---------------------------------------------------------- statistics */

/* ModelStatistics. Per request: success/fail, queue and its batch's times;
 * per executed batch: execution_count and a row per batch size. Written by
 * serving only (fxsv_submit, the batcher's per-batch report). */
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
/* The statistics of m's model version. They live in a record of serving's
 * per (model, version), not in the instance: a reload, new settings or an
 * unload and load keep counting in the same record (ModelStatistics and the
 * metrics are monotonic); fxsv_serving_forget frees a deleted model's. */
void fxsv_served_stats(fxsv_served *m, fxsv_stats *out);

/* The metrics of one (model, version) record (docs/metrics.md): what
 * fxsv_stats holds plus histograms (le bounds below, the last bucket above
 * them; not cumulative) and failures by status code. Durations of the
 * requests that succeeded: request = received to answered, queue, compute =
 * input + infer + output of its batch. */
#define FXSV_DURATION_BOUNDS 14
#define FXSV_BATCH_BOUNDS 10
#define FXSV_CODES 17 /* fxs_status 0..16; others are counted as UNKNOWN (2) */
extern const double fxsv_duration_bounds_s[FXSV_DURATION_BOUNDS];
extern const double fxsv_batch_bounds[FXSV_BATCH_BOUNDS];
typedef struct {
    uint64_t counts[FXSV_DURATION_BOUNDS + 1];
    uint64_t sum_ns;
} fxsv_duration_hist;
typedef struct {
    char *name;        /* the model's key */
    int64_t version;
    bool served;       /* an instance of it is loaded now */
    fxsv_stats stats;
    uint64_t requests[FXSV_CODES]; /* answered requests by status code (OK: 0) */
    fxsv_duration_hist request, queue, compute;
    uint64_t batch_counts[FXSV_BATCH_BOUNDS + 1];
    uint64_t batch_samples;        /* the sum of the batch sizes */
    uint64_t loads, unloads;       /* instances built (load, reload, new settings,
                                    * an older version on demand) and unloaded */
    int in_flight;                 /* submitted, not yet answered */
    int queue_depth;               /* queued or in a running batch (fxb_pressure) */
} fxsv_model_metrics;
/* Every record (served or not), by name then version. 0 or
 * RESOURCE_EXHAUSTED. Free with fxsv_model_metrics_free. */
int fxsv_serving_metrics(fxsv_serving *sv, fxsv_model_metrics **out, int *n);
void fxsv_model_metrics_free(fxsv_model_metrics *m, int n);
/* Frees the statistics of a deleted model (after fxsv_serving_unload):
 * a model made again under its name starts at zero. */
void fxsv_serving_forget(fxsv_serving *sv, const char *name);

/* Every served instance (loaded versions), acquired: release each. 0 or
 * RESOURCE_EXHAUSTED. */
int fxsv_serving_list(fxsv_serving *sv, fxsv_served ***out, int *n);


#endif
