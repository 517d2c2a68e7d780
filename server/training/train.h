/*
 * train.h - the trainer: one training job on the engine, a JobSpec
 * (proto/fluxion/v1/training.proto) applied to a graph and in-memory columns.
 * No RPC, no store: the jobs module (jobs.h) gives it data and hooks, and
 * writes what it hands back (progress, checkpoints, scalars, the result).
 *
 * What the trainer owns, file by file (shared internals: train_internal.h):
 *   train_plan.c    the plan: validation of the spec (fxt_validate)
 *   train.c         the step loop, evaluations, early stopping (fxt_run)
 *   train_report.c  reported values, progress, TensorBoard scalars
 *   train_ckpt.c    checkpoints: what they hold, and resuming from one
 *   train_precision.c  spec.precision: its value and the devices it needs
 *
 * Determinism: with the same spec, seed, data and starting weights, the CPU
 * result is bit-for-bit the same, also when the run was stopped and resumed
 * from any of its checkpoints (the checkpoint holds the weights, optimizer
 * state, step, epoch, RNG state, shuffle order position, schedule position,
 * early-stopping state and best weights).
 */
#ifndef FXT_TRAIN_H
#define FXT_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "datasets/columns.h"
#include "fluxion/v1/training.pb-c.h"
#include "models/graph.h"

/* The default of fxt_hooks.max_checkpoint_failures: with the default
 * interval (500 steps) a job trains 5,000 steps on a full disk, time for
 * someone to free space, before it gives up. */
#define FXT_MAX_CHECKPOINT_FAILURES 10

typedef enum {
    FXT_DONE = 0, /* finished: steps/epochs done or stopped early */
    FXT_STOPPED,  /* should_stop said so: resume from the last checkpoint */
    FXT_FAILED,   /* err says why (non-finite loss, out of memory, ...) */
    /* Data-parallel: a collective failed (a rank died, a connection
     * dropped, a timeout): err says which; resume from the last checkpoint
     * when the world forms again. */
    FXT_LOST,
} fxt_result;

struct fxcm_comm;

/* Data-parallel training (docs/distributed.md): this process is rank
 * `rank` of `world`. Every rank runs fxt_run with the same spec, seed,
 * data and resume checkpoint; rank 0's weights are broadcast at the start;
 * each step rank r trains on its share of the global batch (world *
 * batch_size samples of the one global shuffle order); gradients are
 * summed in buckets of bucket_bytes as soon as they are final, overlapping
 * backward; every rank steps its optimizer; only rank 0 calls
 * on_checkpoint (and reports progress, evaluations and scalars). */
typedef struct {
    int rank, world;            /* world <= 1: one rank */
    struct fxcm_comm *comm;     /* comm/comm.h, formed by the caller */
    size_t bucket_bytes;        /* 0: 25 MiB */
} fxt_dist;

typedef struct {
    /* Progress (step, samples/s, ETA, lr, and the loss and metrics of the
     * last evaluation): at most every progress_interval_s seconds (0: 0.5)
     * and at the end. The interval decides when a report goes out, never
     * what it says. */
    void (*on_progress)(void *data, const Fluxion__V1__JobProgress *p);
    /* After each evaluation (validation loss and metrics in p). */
    void (*on_eval)(void *data, const Fluxion__V1__JobProgress *p);
    /* A checkpoint to store (atomically, so that a failure leaves the
     * previous one in place) for step: 0, or an fxs_status code with the
     * message in err. A checkpoint that was not stored does not stop the
     * run: the previous one stays the one to resume from, and the next
     * interval tries again; max_checkpoint_failures failures in a row fail
     * the run ("checkpoint at step N: RESOURCE_EXHAUSTED: ..."). A stop's
     * checkpoint that fails still stops (FXT_STOPPED). */
    int (*on_checkpoint)(void *data, const void *ckpt, size_t len, int64_t step, char *err,
                         size_t errlen);
    /* Scalars for TensorBoard: tag ("loss", "val_loss", "lr",
     * "accuracy:logits", ...), step, value. */
    void (*on_scalar)(void *data, const char *tag, int64_t step, double value);
    /* Polled between steps (step: the steps done so far): true stops the
     * run (FXT_STOPPED) after a checkpoint of the current step (none when
     * the one of this step was just written). */
    bool (*should_stop)(void *data, int64_t step);
    /* Called at every step boundary, before should_stop: may block for a
     * while to let inference on the job's device go first (yield.h:
     * fxt_yield_hook with an fxt_yield as yield_data). NULL: never yields.
     * The results do not depend on it, only the wall time. */
    void (*yield)(void *data);
    void *yield_data; /* NULL: data */
    void *data;
    double progress_interval_s;
    int64_t checkpoint_every_steps; /* when the spec says 0; 0: 500 */
    /* Where to train (zero: cpu); the caller resolved spec.device to it.
     * fxt_run moves g there first; batches are built on the host and
     * copied; the device is synchronised after every step and evaluation
     * (an error it reports fails the run with its message). */
    fx_device device;
    /* spec.memory_limit_bytes: checked after every step against the
     * parameters, gradients, optimizer state and the step's arena. */
    uint64_t memory_limit_bytes;
    /* Periodic checkpoints in a row that may fail before the run does;
     * 0: FXT_MAX_CHECKPOINT_FAILURES. */
    int max_checkpoint_failures;
    /* Data-parallel rank and its comm; NULL: one rank. */
    const fxt_dist *dist;
} fxt_hooks;

/* Checks the spec against the graph and the data before anything runs:
 * every model input fed by a column with its dtype and per-sample shape,
 * loss outputs and targets exist and fit the loss kind, metrics, optimizer
 * and schedule names and ranges, batch size, epochs/steps, split. 0, or
 * FXS_INVALID_ARGUMENT with a message naming the field ("losses[1].target:
 * ..."), or FXS_RESOURCE_EXHAUSTED when out of memory. val may be NULL
 * (validation_split or none), not when the spec names a validation_dataset. */
int fxt_validate(const Fluxion__V1__JobSpec *spec, const fxg_graph *g, const fxds_columns *train,
                 const fxds_columns *val, char *err, size_t errlen);

/* spec.precision: its value (*out when not NULL) and the devices it runs
 * on: bf16 needs CPU devices, those the spec names (device, placement) and,
 * when dev is not NULL, the device the job resolved to. 0, or
 * FXS_INVALID_ARGUMENT with a message naming the field. fxt_validate
 * checks it too (without dev). */
int fxt_check_precision(const Fluxion__V1__JobSpec *spec, const fx_device *dev,
                        fx_precision *out, char *err, size_t errlen);

/* Semantics beyond training.proto's comments:
 * - optimizer.kind "" is adam; lr 0 takes the kind's default (sgd, momentum,
 *   nesterov, rmsprop, adagrad 0.01; adadelta 1.0; adam, adamw 1e-3);
 *   optimizer.rho is RMSprop's decay (alpha) or AdaDelta's rho.
 * - The last partial batch of an epoch is used; validation_split holds out
 *   floor(split * samples) of the last samples.
 * - Reported values (JobProgress.metrics, on_scalar tags): "loss", "lr",
 *   "val_loss"; with several losses also "loss:OUTPUT" and "val_loss:OUTPUT"
 *   (unweighted); per metric NAME ("accuracy", "accuracy:OUTPUT") and
 *   "val_NAME". Plain "accuracy" is on the first cross_entropy,
 *   cross_entropy_soft or bce_with_logits loss's output. early_stopping.metric
 *   is one of these names.
 * - Training values ("loss", "loss:OUTPUT", the metrics) are means over the
 *   evaluation window: the steps since the evaluation before (an epoch, or
 *   eval_every_steps steps). They are set at each evaluation, and progress
 *   reports carry those of the last one (JobProgress.train_loss = "loss", 0
 *   before the first evaluation), so what a job records depends on its
 *   steps alone, also across a stop and resume. The run ends with an
 *   evaluation.
 * - TensorBoard: "loss" (the mean since the last "loss" scalar) and "lr"
 *   every max(1, total_steps / 100) steps, the others at each evaluation.
 * - Periodic checkpoints are not taken at the final step (the result
 *   follows); a stop request checkpoints the step it stops at. */

/* Trains g's parameters in place (the graph must be the job's own: not one
 * being served). resume: a checkpoint from on_checkpoint, or NULL. On
 * FXT_DONE, *result gets the result weights (the best ones with early
 * stopping) as safetensors bytes (malloc; caller frees) and *final the last
 * progress (caller frees with fluxion__v1__job_progress__free_unpacked; may
 * be NULL). */
fxt_result fxt_run(const Fluxion__V1__JobSpec *spec, fxg_graph *g, const fxds_columns *train,
                   const fxds_columns *val, const void *resume, size_t resume_len,
                   const fxt_hooks *hooks, void **result, size_t *result_len,
                   Fluxion__V1__JobProgress **final, char *err, size_t errlen);

#endif
