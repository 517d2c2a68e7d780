/*
 * train_internal.h - what the trainer's files share; not an API. Only
 * training/train*.c include it, and its non-static functions carry the
 * internal prefix fxt__ (libuv's uv__ rule).
 *
 *   train_plan.c    the plan: fxt_validate's checks of a JobSpec against the
 *                   graph and the columns, resolved into indices and defaults
 *   train.c         the run: the step loop, evaluations, early stopping, the
 *                   result (fxt_run)
 *   train_report.c  what a run reports: value names, accuracy counts,
 *                   progress, TensorBoard scalars
 *   train_ckpt.c    checkpoints: packing the whole loop state, resuming
 */
#ifndef FXT_TRAIN_INTERNAL_H
#define FXT_TRAIN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"
#include "training/train.h"

/* ------------------------------------------------------------------- plan */

/* LK_CTC: the output is log-probabilities [N, T, C]; LK_OUTPUT: the output
 * is the loss itself (a scalar, or [N] averaged), with no target. */
enum { LK_MSE, LK_CE, LK_CE_SOFT, LK_BCE, LK_CTC, LK_OUTPUT, LK_COUNT };

typedef struct {
    int input;     /* graph input */
    int col, vcol; /* column in train / in the validation columns */
} feed_t;

typedef struct {
    int out; /* graph output */
    int kind;
    int col, vcol; /* the target; -1 for LK_OUTPUT */
    double weight;
    /* LK_CTC: the length columns (in train / validation; -1: no
     * input_lengths, every sample uses all T steps) and the blank class */
    int tlen, vtlen, ilen, vilen;
    int64_t blank;
} loss_t;

typedef struct {
    const char *name; /* as the spec says: "accuracy" or "accuracy:OUT" */
    int loss;         /* the loss whose output and targets it compares */
} metric_t;

typedef struct {
    const fxg_graph *g;
    const fxds_columns *train, *valc; /* valc: where validation rows live */
    feed_t *feeds;
    int nfeeds;
    loss_t *losses;
    int nlosses;
    metric_t *metrics;
    int nmetrics;
    int64_t batch, n_train, n_val, val_offset; /* batch: per rank */
    int world; /* data-parallel ranks (1: one); the global batch is world * batch */
    fx_precision precision; /* of the dense products (spec.precision) */
    int64_t steps_per_epoch, total_steps, total_epochs, eval_every, ckpt_every;
    fx_optim_kind opt_kind;
    fx_optim_hparams hp;
    bool es; /* early stopping on */
    const char *es_metric;
    bool es_higher;
    double es_min_delta;
    int es_patience;
} plan_t;

#define FXT_MAX_WORLD 256

/* Checks spec against g and the columns and fills p (fxt_validate's
 * contract); on error p holds nothing to free. */
int fxt__plan_build(const Fluxion__V1__JobSpec *spec, const fxg_graph *g, const fxds_columns *train,
                    const fxds_columns *val, plan_t *p, char *err, size_t errlen);
void fxt__plan_free(plan_t *p);

/* -------------------------------------------------------------------- run */

/* Reported values: "loss", "lr", "val_loss", per loss (when several)
 * "loss:OUT" and "val_loss:OUT", per metric NAME and "val_NAME". */
enum { V_LOSS, V_LR, V_VAL_LOSS, V_FIXED };

typedef struct {
    plan_t P;
    fxg_graph *g;
    const fxt_hooks *hk;
    fx_ctx *ctx;
    fx_optim *opt;
    fx_rng *rng; /* shuffling */
    int64_t *perm;
    int64_t step, epoch, pos;
    bool shuffle;
    unsigned char *stage; /* one batch of one column, host side */
    size_t stage_cap;
    float *pred; /* one output, host side, for accuracy */
    size_t pred_cap;
    fx_tensor **in, **out;
    /* The evaluation window: the steps since the last evaluation, whose
     * means an evaluation reports as "loss", "loss:OUT" and the metrics (in
     * checkpoints: they are what the job records, and feed early stopping). */
    double win_loss;
    double *win_loss_out; /* per loss, unweighted (with several losses) */
    int64_t win_n;
    int64_t *win_correct, *win_total; /* per metric */
    /* since the last "loss" scalar, and the last progress report's step (not
     * checkpointed: they depend on nothing a result depends on) */
    double sc_loss;
    int64_t sc_n, scalar_every, pr_step;
    double t_start, t_last;
    int64_t step_start, samples; /* this process's */
    /* early stopping */
    bool has_best, stop_early;
    double best;
    int64_t wait;
    fx_params best_w; /* persistent copies of every parameter and buffer (host) */
    /* checkpoints: failures in a row, the step of the last one stored (-1:
     * none in this process; the resumed one's after a resume) */
    int ckpt_failures;
    int64_t ckpt_stored;
    uint64_t persist_bytes; /* parameters, gradients, optimizer state; 0: not yet */
    /* values for reports */
    int nvals;
    char **vname;
    double *vval;
    bool *vhave;
    /* data-parallel (train_dist.c); NULL with one rank */
    struct fxt__dist *dist;
    bool lost;   /* a collective failed: the run ends FXT_LOST */
    bool stop_vote; /* should_stop said so on this rank; acted on by all after the step */
    int v_comm;  /* index of the value "comm_ms" ("comm_overlap" next); -1: none */
    char *err;
    size_t errlen;
} run_t;

static inline double fxt__now_s(void) { return (double)fxu_mono_ns() / 1e9; }

/* Writes the run's error message; returns -1 (the loop's internal "failed";
 * fxt_run turns it into FXT_FAILED). */
int fxt__rfail(run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline size_t fxt__row_bytes(const fxds_column *c)
{
    size_t n = fx_dtype_size(c->dtype);
    for (int d = 0; d < c->sample_ndim; d++)
        n *= (size_t)c->sample_shape[d];
    return n;
}

/* Index of the value "loss:OUT" of loss i (val: +1), -1 with one loss. */
static inline int fxt__loss_value(const run_t *r, int i)
{
    return r->P.nlosses > 1 ? V_FIXED + 2 * i : -1;
}
/* Index of the value of metric j (val: +1). */
static inline int fxt__metric_value(const run_t *r, int j)
{
    return V_FIXED + (r->P.nlosses > 1 ? 2 * r->P.nlosses : 0) + 2 * j;
}
static inline void fxt__set_value(run_t *r, int i, double v)
{
    if (i >= 0) {
        r->vval[i] = v;
        r->vhave[i] = true;
    }
}

/* Copies of every parameter and buffer as the best weights (early stopping). */
int fxt__keep_best(run_t *r);

/* ------------------------------------------------------ train_report.c */

int fxt__make_value_names(run_t *r);
/* Adds metric j's correct and total counts for a batch (rows idx of the
 * target column from base; pred is the output). */
int fxt__count_correct(run_t *r, int j, const fx_tensor *pred, const fxds_column *tc,
                       const int64_t *idx, int64_t base, int64_t b, int64_t *correct,
                       int64_t *total);
/* A JobProgress over the run's values (names point into r). */
void fxt__progress_of(run_t *r, Fluxion__V1__JobProgress *pg, Fluxion__V1__MetricValue *mv,
                      Fluxion__V1__MetricValue **mp, double loss);
typedef void (*fxt__progress_hook)(void *, const Fluxion__V1__JobProgress *);
void fxt__report(run_t *r, fxt__progress_hook hook, double loss);
void fxt__scalar(run_t *r, int i);
void fxt__maybe_progress(run_t *r, bool force);
void fxt__loss_scalars(run_t *r, bool force);

/* -------------------------------------------------------- train_ckpt.c */

/* Stores a checkpoint of the current step through on_checkpoint. 0 when it
 * was stored, or when its failure is tolerated (stopping, or fewer than
 * max_checkpoint_failures in a row); -1 with the message in r->err when the
 * run must fail. */
int fxt__checkpoint(run_t *r, bool stopping);
int fxt__resume(run_t *r, const void *buf, size_t len);

/* -------------------------------------------------------- train_dist.c */

typedef struct fxt__dist fxt__dist;
/* With hooks->dist world > 1: buckets, gradients in them, the grad-ready
 * hook, and rank 0's weights broadcast (after a resume). 0 with one rank. */
int fxt__dist_init(run_t *r);
void fxt__dist_free(run_t *r);
/* This rank's share [off, off + n) of a global batch of `global` rows. */
void fxt__dist_share(const run_t *r, int64_t global, int64_t *off, int64_t *n);
/* Starts a step: returns the step's scalars to fill (zeroed), summed over
 * the ranks by fxt__dist_reduce. Layout: [0] loss * share, then per loss
 * (several losses) its value * share, then per metric correct and total,
 * then the stop vote. */
float *fxt__dist_scalars(run_t *r);
/* After backward: starts what the hook did not, waits for every bucket and
 * the scalars. -1 with r->lost set when a collective failed. */
int fxt__dist_reduce(run_t *r, int64_t stepno);
/* Rank 0's buffers (batch norm statistics) to every rank. */
int fxt__dist_sync_buffers(run_t *r, int64_t stepno);
/* The mean wall time of a step's collectives (first start to last wait)
 * and the fraction of it that overlapped backward. */
void fxt__dist_comm_stats(const run_t *r, double *comm_ms, double *overlap);

#endif
