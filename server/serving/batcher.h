/*
 * batcher.h - automatic batching of inference requests for one served model.
 *
 * Requests are queued (one queue per priority level) and taken by the
 * model's execution instances (threads, each with its own engine context).
 * An idle instance forms a batch from the oldest request of the highest
 * priority and every queued request that can join it, and runs it when the
 * batch is full (max_batch_size samples, or the largest preferred size),
 * or when the oldest request has waited max_queue_delay_us, or, without
 * preferred sizes, when waiting would not pay (batch_policy.h decides from
 * what the model's earlier waits gathered, how many callers it has, and
 * what its batches cost; it also picks the batch size). Preferred sizes are
 * the user's statement of the sizes to run: a batch waits the delay for
 * them, as Triton's dynamic batcher does. The batch is one forward pass;
 * each request gets its own rows of every output back.
 *
 * Joining: requests whose inputs agree on every dim but the first are
 * concatenated along dim 0 (a request may carry several samples). Requests
 * that differ along a variable (-1) dim are batched only with their own
 * shape (bucketing), unless pad_variable_dims: then they are zero-padded to
 * the batch's largest size along those dims and each output dim whose size is
 * a padded size is cut back to the request's own size. Padding is exact only
 * for models whose per-sample lengths inputs mask the padding (rnn, gru,
 * lstm, attention key_lengths); the config refuses it for a model with no
 * 1-D integer input.
 *
 * Deadlines: a request's deadline is the earlier of its timeout and the
 * client's deadline. A reaper thread answers DEADLINE_EXCEEDED when it
 * passes, while queued (the request leaves the queue) or while its batch
 * runs (the result is dropped). Every request gets exactly one done call.
 *
 * The batcher knows nothing of gRPC, nor of statistics: serving.h submits
 * requests to it (fxsv_submit) and keeps the statistics. batch_io.h moves a
 * batch's data (merge, split).
 */
#ifndef FXB_BATCHER_H
#define FXB_BATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fluxion.h"
#include "models/graph.h"

#define FXB_MAX_PREFERRED 8

typedef struct {
    bool enabled;             /* false: every request runs alone */
    uint32_t max_batch_size;  /* samples per batch, >= 1 */
    uint64_t max_queue_delay_us;
    uint32_t preferred[FXB_MAX_PREFERRED]; /* ascending, each <= max_batch_size */
    int n_preferred;
    uint32_t max_queue_size;  /* queued requests, >= 1 */
    uint64_t timeout_us;      /* 0: none */
    uint32_t priority_levels; /* >= 1; 1 is the highest */
    uint32_t default_priority;/* in [1, priority_levels] */
    uint32_t instances;       /* >= 1 */
    bool pad_variable_dims;
    char device[32];          /* as requested (devices.h); "": the server's first */
    uint64_t memory_limit_bytes; /* weights + instances' arenas; 0: none */
    /* Of the dense layers' products: the served version is packed in it
     * (serving.c, fx_layer_prepack_precision) and the instances' contexts
     * run in it (a pack serves its own precision's contexts only); bf16 on
     * CPU devices only. */
    fx_precision precision;
    /* Not a stored setting (fxb_config_default's FXB_ARENA_KEEP_BYTES): an
     * instance whose engine arena and staging buffers hold more than this
     * after a batch gives them back, so one large batch does not keep its
     * memory for the life of the model. */
    uint64_t arena_keep_bytes;
} fxb_config;

#define FXB_DEFAULT_MAX_BATCH 32
#define FXB_DEFAULT_DELAY_US 200
#define FXB_DEFAULT_QUEUE 1024
#define FXB_MAX_INSTANCES 64
#define FXB_MAX_LEVELS 16
#define FXB_ARENA_KEEP_BYTES (64ull << 20)

void fxb_config_default(fxb_config *c);
/* Checks the settings against each other and the graph (NULL: no graph
 * checks): 0, or INVALID_ARGUMENT with a message naming the setting. */
int fxb_config_check(const fxb_config *c, const fxg_graph *g, char *err, size_t errlen);

/* One input of a request, in graph input order, host memory of the graph
 * input's dtype, row-major; borrowed until the request's done call. */
typedef struct {
    int ndim;
    int64_t shape[FX_MAX_DIMS];
    const void *data;
} fxb_input;

/* One output of a request, valid during the done call only. */
typedef struct {
    fx_dtype dtype;
    int ndim;
    int64_t shape[FX_MAX_DIMS];
    const void *data;
    size_t bytes;
} fxb_output;

/* The timings of a request or of a batch (ns), the one struct for them
 * from the batcher to the statistics (serving.h): queue = received to its
 * batch starting (a request's; 0 for a batch); input (merging the inputs),
 * infer (the forward pass) and output (copying the outputs out, checking
 * the device) are its batch's. */
typedef struct {
    uint64_t queue_ns, input_ns, infer_ns, output_ns;
    uint64_t batch_size; /* samples in the batch */
} fxb_timing;

/* Called once per request, on a batcher thread. status 0: outputs[i] for
 * every graph output i; else err says why (status is an fxs_status code:
 * DEADLINE_EXCEEDED, UNAVAILABLE when the batcher stops, INVALID_ARGUMENT or
 * RESOURCE_EXHAUSTED from the forward pass). */
typedef void (*fxb_done_fn)(void *user, int status, const char *err,
                            const fxb_output *outputs, const fxb_timing *t);

typedef struct {
    const fxb_input *inputs;  /* fxg_num_inputs(g) of them, checked by the caller */
    uint32_t priority;        /* 0: the default */
    uint64_t timeout_us;      /* 0: the model's */
    int64_t deadline_ns;      /* client's, CLOCK_MONOTONIC; 0 or INT64_MAX: none */
    uint64_t received_ns;     /* CLOCK_MONOTONIC; 0: now */
    fxb_done_fn done;
    void *user;
    /* The caller's thread may run the request's batch itself when it would
     * go at once and an execution slot is free (CPU models), and the
     * batches due after it that fit inline_max_ns (a few at most): fxb_submit
     * then returns after the done calls. Leave false where that would block. */
    bool may_run_inline;
    /* With may_run_inline: the longest a batch run on the caller's thread
     * may take by the model's cost curve (batch_policy.h), 0 for any. A
     * gRPC poller must not hold up the I/O of every call for long: a batch
     * the curve says is dearer, or that it has not measured yet, goes to
     * an instance thread. */
    uint64_t inline_max_ns;
} fxb_request;

/* Per executed batch, for statistics (on the instance thread). */
typedef void (*fxb_batch_fn)(void *data, bool ok, const fxb_timing *t);

typedef struct fxb_batcher fxb_batcher;

/* What serving a graph on dev with settings c needs at least, in the terms
 * of memory_limit_bytes: the weights, plus the arena of one one-sample
 * batch (every -1 dim 1, or 8 or 32 when 1 does not run) in each engine
 * context the batcher makes (instances, and the inline one on the CPU).
 * arena is 0 when no trial batch ran (then only the weights count). */
typedef struct {
    uint64_t weights, arena, total;
    int contexts;
} fxb_need;
void fxb_min_need(const fxg_graph *g, const fxb_config *c, fx_device dev, fxb_need *out);

/* Starts the instances and the reaper for graph g (which must outlive the
 * batcher) into *out. The instances' contexts are on the graph's device
 * (fxg_device); after each batch the device is synchronised (a device error
 * fails the batch with INTERNAL) and c->memory_limit_bytes is checked
 * against the weights plus every instance's arena (RESOURCE_EXHAUSTED for
 * the batch over it; that instance then starts afresh with an empty arena).
 * on_batch may be NULL. 0, or INVALID_ARGUMENT (a bad config),
 * FAILED_PRECONDITION (no engine context on the device), RESOURCE_EXHAUSTED
 * (memory, threads), with err. */
int fxb_create(const fxg_graph *g, const fxb_config *c, fxb_batch_fn on_batch, void *batch_data,
               fxb_batcher **out, char *err, size_t errlen);
/* Answers queued requests UNAVAILABLE, waits for running batches, stops the
 * threads. May be called from a batcher thread (from a done call). */
void fxb_free(fxb_batcher *b);

/* Queues a request. 0, or a status without any done call:
 * UNAVAILABLE when the queue is full (err says so) or the batcher stops,
 * INVALID_ARGUMENT for a priority out of range, RESOURCE_EXHAUSTED. */
int fxb_submit(fxb_batcher *b, const fxb_request *r, char *err, size_t errlen);

const fxb_config *fxb_get_config(const fxb_batcher *b);
/* Requests queued or in a running batch now (not yet answered): a lock-free
 * read of a counter kept at submit and at each answer, for training's
 * inference-first yield (serving.h fxsv_serving_pressure). */
int fxb_pressure(fxb_batcher *b);
/* When (fxb_mono_ns) a request was last submitted or answered by a batch;
 * 0: never. Requests come in streams: one just answered says the next is
 * near (its client's round trip), which the count alone does not. */
uint64_t fxb_last_active_ns(fxb_batcher *b);
uint64_t fxb_mono_ns(void);

#endif
