/*
 * job_run.c - running one job taken off the queue: marking it RUNNING (or
 * resumed), its inputs (the base version's graph and weights, the
 * datasets, the checkpoint to resume from), fxt_run with the hooks that
 * report progress, store checkpoints and write TensorBoard events, and
 * what the outcome makes of the job (its result version, FAILED,
 * CANCELLED, or paused for a drain). Training itself runs outside j->mu
 * (lock order: jobs_internal.h).
 *
 * Serving the result: a job that succeeds adds version N+1 of its model,
 * and its promotion gate (job_gate.c, docs/versions.md) decides in the same
 * transaction whether N+1 becomes production, the version served. When it
 * does and the model is being served, N+1 is served at once (as
 * ImportWeights does); serve_when_done also loads a model that was not
 * being served and marks it loaded in the store. Requests in flight finish
 * on the version they acquired (serving.c refcounts).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "models/models.h"
#include "training/jobs_internal.h"
#include "training/tbevents.h"
#include "training/train.h"
#include "training/yield.h"

/* Progress is written to the store at checkpoints and at most this often. */
#define PERSIST_EVERY_NS (10ull * 1000000000ull)

typedef struct {
    fxj_jobs *j;
    job *x;
    fxtb_writer *tb;
    char *ckpt_path;
    uint64_t last_persist_ns;
    int ckpt_failures; /* checkpoints in a row not stored (for the log) */
    bool tb_failing;   /* TensorBoard writes fail (logged once) */
    /* A preemption's grace (fxj_jobs_opts.preempt_grace_steps): the step
     * the job may run to, to reach its own next checkpoint (-1: not
     * preempted), and whether that checkpoint came. */
    int64_t grace_until;
    bool ckpt_since_preempt;
} run_ctx;

/* TensorBoard trouble (a full disk) is logged once, and again when the
 * events are written again, not for every scalar in between. */
static void tb_status(run_ctx *r, int rc, const char *err)
{
    if (rc && !r->tb_failing)
        fxl_log(FXL_WARN, "jobs", "cannot write TensorBoard events job=%" PRId64 " error=\"%s\"",
                r->x->id, err);
    else if (!rc && r->tb_failing)
        fxl_log(FXL_INFO, "jobs", "TensorBoard events written again job=%" PRId64, r->x->id);
    r->tb_failing = rc != 0;
}

static void on_update(run_ctx *r, const Fluxion__V1__JobProgress *p, int kind)
{
    Fluxion__V1__JobProgress *copy = (Fluxion__V1__JobProgress *)fxj__msg_copy(&p->base);
    if (!copy)
        return;
    pthread_mutex_lock(&r->j->mu);
    if (r->x->rec->progress)
        fluxion__v1__job_progress__free_unpacked(r->x->rec->progress, NULL);
    r->x->rec->progress = copy;
    uint64_t now = fxu_mono_ns();
    if (now - r->last_persist_ns >= PERSIST_EVERY_NS) {
        r->last_persist_ns = now;
        fxj__commit(r->j, r->x, 0, NULL);
    }
    fxj__announce(r->j, r->x, kind, NULL);
    pthread_mutex_unlock(&r->j->mu);
}

static void hook_progress(void *data, const Fluxion__V1__JobProgress *p)
{
    on_update(data, p, FLUXION__V1__JOB_EVENT__KIND__PROGRESS);
}

static void hook_eval(void *data, const Fluxion__V1__JobProgress *p)
{
    on_update(data, p, FLUXION__V1__JOB_EVENT__KIND__EVALUATION);
}

/* A checkpoint not stored is a warning, not the job's end: the file is
 * written atomically, so the previous checkpoint is still there to resume
 * from, and the trainer tries again at the next interval (train.h). */
static int checkpoint_failed(run_ctx *r, int64_t step, int rc, const char *err)
{
    char quoted[FXS_ERRLEN]; /* logfmt: the value's own quotes become ' */
    snprintf(quoted, sizeof quoted, "%s", err);
    for (char *q = quoted; (q = strchr(q, '"'));)
        *q = '\'';
    r->ckpt_failures++;
    fxl_log(FXL_WARN, "jobs",
            "checkpoint not stored job=%" PRId64 " step=%" PRId64 " failures_in_a_row=%d "
            "status=%s error=\"%s\"",
            r->x->id, step, r->ckpt_failures, fxs_status_name(rc), quoted);
    return rc;
}

static int hook_checkpoint(void *data, const void *ckpt, size_t len, int64_t step, char *err,
                           size_t errlen)
{
    run_ctx *r = data;
    int rc = fxu_write_file_atomic(r->ckpt_path, ckpt, len, err, errlen);
    if (rc)
        return checkpoint_failed(r, step, rc, err);
    char tberr[FXS_ERRLEN];
    if (r->tb) /* a failed flush keeps its events for the next one */
        tb_status(r, fxtb_flush(r->tb, tberr, sizeof tberr), tberr);
    pthread_mutex_lock(&r->j->mu);
    r->x->rec->checkpoint_step = step;
    fxsc_checkpointed(r->j->sc, r->x->id, fxu_now_ms()); /* what a preemption would lose */
    if (atomic_load(&r->x->preempt))
        r->ckpt_since_preempt = true;
    r->last_persist_ns = fxu_mono_ns();
    char msg[64];
    snprintf(msg, sizeof msg, "checkpoint at step %" PRId64, step);
    rc = fxj__commit(r->j, r->x, FLUXION__V1__JOB_EVENT__KIND__CHECKPOINT, msg);
    pthread_mutex_unlock(&r->j->mu);
    if (rc) {
        /* The file is the truth on a restart (prepare_inputs), so the job
         * can resume from it; the record says an older step until the next
         * commit. */
        fxu_seterr(err, errlen, "job %" PRId64 ": cannot record the checkpoint of step %" PRId64,
                   r->x->id, step);
        return checkpoint_failed(r, step, rc, err);
    }
    if (r->ckpt_failures)
        fxl_log(FXL_INFO, "jobs",
                "checkpoint stored again job=%" PRId64 " step=%" PRId64 " after_failures=%d",
                r->x->id, step, r->ckpt_failures);
    r->ckpt_failures = 0;
    return 0;
}

static void hook_scalar(void *data, const char *tag, int64_t step, double value)
{
    run_ctx *r = data;
    char err[FXS_ERRLEN];
    int rc = r->tb ? fxtb_scalar(r->tb, tag, step, value, err, sizeof err) : 0;
    if (rc)
        tb_status(r, rc, err);
}

/* A preempted job stops at its next step boundary (its checkpoint is
 * written there), or, with a grace of N steps, runs on to its own next
 * checkpoint when that comes within N steps (one checkpoint instead of
 * two), and stops at the grace's end otherwise. */
static bool preempt_now(run_ctx *r, int64_t step)
{
    if (!atomic_load(&r->x->preempt)) {
        r->grace_until = -1;
        r->ckpt_since_preempt = false;
        return false;
    }
    if (r->grace_until < 0)
        r->grace_until = step + r->j->opts.preempt_grace_steps;
    return r->ckpt_since_preempt || step >= r->grace_until;
}

static bool hook_stop(void *data, int64_t step)
{
    run_ctx *r = data;
    return atomic_load(&r->x->cancel) || atomic_load(&r->j->stopping) || preempt_now(r, step);
}

/* What a job needs to train: its own graph at the base version's weights,
 * its data, and the checkpoint to resume from. */
typedef struct {
    fxg_graph *g;
    fxds_dataset *train, *val;
    void *ckpt;
    size_t ckpt_len;
    fx_device device;   /* spec.device, resolved when the job starts */
    fxj__world_plan world; /* its ranks (world 1: one) */
} run_inputs;

static void free_inputs(run_inputs *in)
{
    fxg_free(in->g);
    if (in->train)
        fxds_dataset_release(in->train);
    if (in->val)
        fxds_dataset_release(in->val);
    free(in->ckpt);
}

int fxj__open_data(fxj_jobs *j, const char *name, const char *what, fxds_dataset **out,
                   char *err, size_t errlen)
{
    char derr[FXS_ERRLEN - 100];
    int rc = fxds_dataset_open(j->ds, name, out, derr, sizeof derr);
    if (rc)
        fxu_seterr(err, errlen, "%s: %s", what, derr);
    return rc;
}

static int prepare_inputs(fxj_jobs *j, job *x, run_inputs *in, char *err, size_t errlen)
{
    const Fluxion__V1__JobSpec *spec = x->rec->spec;
    /* The scheduler's choice (job_sched.c); it was resolved from spec.device. */
    int rc = 0;
    if (!x->rec->assigned_device || !fx_device_parse(x->rec->assigned_device, &in->device))
        rc = fxsv_devices_resolve(j->opts.devices, spec->device, "spec.device", &in->device, err,
                                  errlen);
    if (!rc && spec->world_size > 1)
        rc = fxj__world_place(j, spec, &in->world, err, errlen);
    if (rc)
        return rc;
    /* from_scratch: the base version's graph, initialized from the job's seed */
    fxm_load_opts lo = { .max_params = j->opts.max_params, .fresh = spec->from_scratch,
                         .seed = spec->seed };
    fxm_loaded l;
    char werr[FXS_ERRLEN];
    if ((rc = fxm_load_version(j->st, spec->model, x->rec->base_version, &lo, &l, werr,
                               sizeof werr))) {
        fxu_seterr(err, errlen, "base version %" PRId64 " of model '%s': %s", x->rec->base_version,
                   spec->model, werr);
        return rc;
    }
    in->g = l.g;
    if ((rc = fxj__open_data(j, spec->dataset, "dataset", &in->train, err, errlen)))
        return rc;
    if (strcmp(fxds_dataset_sha256(in->train), x->rec->dataset_sha256) != 0) {
        fxu_seterr(err, errlen, "dataset '%s' changed since the job was submitted (sha256 %s, "
               "was %s)", spec->dataset, fxds_dataset_sha256(in->train), x->rec->dataset_sha256);
        return FXS_FAILED_PRECONDITION;
    }
    if (spec->validation_dataset && *spec->validation_dataset &&
        (rc = fxj__open_data(j, spec->validation_dataset, "validation_dataset", &in->val, err,
                             errlen)))
        return rc;
    /* The checkpoint file is the truth: it may be newer than the record's
     * checkpoint_step when the daemon died between writing and committing. */
    char *path = fxj__job_path(j, x->id, "checkpoint.safetensors");
    if (path && access(path, F_OK) == 0 &&
        fxu_read_file(path, &in->ckpt, &in->ckpt_len, err, errlen) != 0)
        rc = FXS_DATA_LOSS;
    free(path);
    return rc;
}

/* A version made by this job already: 0 when there is none. The store
 * links them by versions.job_id (never by the version's source text), in
 * the transaction that also marks the job SUCCEEDED, so a RUNNING job found
 * at start has none; this stays as a guard for that invariant. */
static int64_t version_of_job(fxj_jobs *j, job *x)
{
    char err[FXS_ERRLEN];
    int64_t v = 0;
    if (fxdb_job_version(j->st, x->id, &v, err, sizeof err) != 0)
        fxl_log(FXL_ERROR, "jobs", "cannot look up the result job=%" PRId64 " error=\"%s\"",
                x->id, err);
    return v;
}

/* Serving rule (see the top of this file): a served model switches to the
 * new version; one not served starts serving it when the job asked for that
 * (serve_when_done). Serving keeps the store's "loaded" flag. */
static void serve_result(fxj_jobs *j, job *x, char *note, size_t notelen)
{
    const char *model = x->rec->spec->model;
    if (!j->sv)
        return;
    char err[FXS_ERRLEN];
    int rc = x->rec->spec->serve_when_done ? fxsv_serving_load(j->sv, model, err, sizeof err)
                                           : fxsv_serving_reload(j->sv, model, err, sizeof err);
    if (rc) {
        fxl_log(FXL_ERROR, "jobs", "cannot serve the result job=%" PRId64 " model=%s error=\"%s\"",
                x->id, model, err);
        snprintf(note, notelen, "; not served: %.200s", err);
    } else if (fxsv_serving_is_loaded(j->sv, model, NULL)) {
        snprintf(note, notelen, "; now served");
    }
}

/* The result: the version and the SUCCEEDED record are committed in one
 * transaction (fxdb_job_finish), so a crash never leaves a version the job
 * does not know about, nor a finished job without its version. The final
 * record is prepared as a copy under j->mu and committed outside it (storing
 * the weights writes and fsyncs a file); nothing else changes the record of
 * a job whose training has ended. */
static void finish_done(fxj_jobs *j, job *x, void *result, size_t len,
                        Fluxion__V1__JobProgress *final)
{
    char err[FXS_ERRLEN], src[48], msg[FXS_ERRLEN + 100], note[512] = "";
    snprintf(src, sizeof src, "job %" PRId64, x->id);
    pthread_mutex_lock(&j->mu);
    if (final) {
        if (x->rec->progress)
            fluxion__v1__job_progress__free_unpacked(x->rec->progress, NULL);
        x->rec->progress = final;
    }
    Fluxion__V1__Job *done = fxj__job_copy(x->rec);
    pthread_mutex_unlock(&j->mu);
    int64_t v = 0;
    int rc = done ? 0 : fxu_oom(err, sizeof err);
    if (!rc) {
        done->state = FLUXION__V1__JOB_STATE__SUCCEEDED;
        done->finished_unix_ms = fxu_now_ms();
        rc = fxj__store_result(j, x->id, done, result, len, src, &v, err, sizeof err);
    }
    char served[256] = "";
    if (!rc && done->promoted)
        serve_result(j, x, served, sizeof served);
    else if (!rc && j->sv) /* the gate kept production: serving stays as it is */
        fxsv_serving_prune(j->sv, x->rec->spec->model); /* retention may have removed some */
    if (!rc) /* the gate's decision, then what serving made of it */
        snprintf(note, sizeof note, "; %.200s%s", done->promotion, served);
    pthread_mutex_lock(&j->mu);
    if (rc) {
        if (done)
            fluxion__v1__job__free_unpacked(done, NULL);
        snprintf(msg, sizeof msg, "cannot store the result: %s", err);
        fxj__set_state(j, x, FLUXION__V1__JOB_STATE__FAILED, msg);
    } else {
        done->result_version = v;
        fluxion__v1__job__free_unpacked(x->rec, NULL);
        x->rec = done;
        snprintf(msg, sizeof msg, "model '%s' version %" PRId64 "%s", x->rec->spec->model, v,
                 note);
        fxj__announce_state(j, x, FLUXION__V1__JOB_STATE__SUCCEEDED, msg);
    }
    pthread_mutex_unlock(&j->mu);
}

static void finish_early(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *msg)
{
    pthread_mutex_lock(&j->mu);
    fxj__set_state(j, x, s, msg);
    pthread_mutex_unlock(&j->mu);
}


/* Marks the job RUNNING (or announces its resumption); false when there is
 * nothing to train (cancelled, or its result stored before a crash). */
static bool begin_run(fxj_jobs *j, job *x)
{
    char msg[FXS_ERRLEN];
    pthread_mutex_lock(&j->mu);
    bool again = x->resumed || x->preempted;
    if (again)
        snprintf(msg, sizeof msg, "resumed %s (checkpoint step %" PRId64 ") on %s",
                 x->requested ? "on request"
                 : x->resumed ? "after a restart"
                 : x->lost_rank ? "after a lost rank"
                              : "after a preemption",
                 x->rec->checkpoint_step, x->rec->assigned_device);
    x->lost_rank = false;
    fxj__set_state(j, x, FLUXION__V1__JOB_STATE__RUNNING, again ? msg : "started");
    if (again)
        fxj__announce(j, x, FLUXION__V1__JOB_EVENT__KIND__RESUMED, msg);
    pthread_mutex_unlock(&j->mu);
    if (atomic_load(&x->cancel)) { /* cancelled as it was taken off the queue */
        finish_early(j, x, FLUXION__V1__JOB_STATE__CANCELLED, "cancelled before training began");
        return false;
    }
    int64_t made = again ? version_of_job(j, x) : 0;
    if (!made)
        return true;
    pthread_mutex_lock(&j->mu);
    x->rec->result_version = made;
    snprintf(msg, sizeof msg, "model '%s' version %" PRId64 " (stored before the restart)",
             x->rec->spec->model, made);
    fxj__set_state(j, x, FLUXION__V1__JOB_STATE__SUCCEEDED, msg);
    pthread_mutex_unlock(&j->mu);
    return false;
}

/* A preemption carried out: the trainer wrote a checkpoint at its step
 * boundary (hook_checkpoint); the job goes back to QUEUED (committed
 * first), PREEMPTED says for whom, and its thread then tells the core
 * (job_sched.c). Its next run resumes from the checkpoint, as after a
 * restart, and gives the same weights as an uninterrupted run. */
/* lost: a world across daemons that lost a rank or could not form
 * (job_peers.c): back to QUEUED the same way, the event saying which peer
 * (a STATE event; not counted as a preemption). */
static void requeue(fxj_jobs *j, job *x, const char *lost)
{
    char msg[FXS_ERRLEN + 64];
    pthread_mutex_lock(&j->mu);
    if (lost)
        snprintf(msg, sizeof msg, "back to the queue at checkpoint step %" PRId64 ": %s",
                 x->rec->checkpoint_step, lost);
    else
        snprintf(msg, sizeof msg, "preempted at checkpoint step %" PRId64 " for %s",
                 x->rec->checkpoint_step, x->preempt_for);
    x->rec->state = FLUXION__V1__JOB_STATE__QUEUED;
    if (!lost)
        x->rec->preemptions++;
    if (x->rec->assigned_device && x->rec->assigned_device != protobuf_c_empty_string)
        free(x->rec->assigned_device);
    x->rec->assigned_device = strdup("");
    x->preempted = true;
    x->resumed = false; /* its next start resumes from this preemption */
    x->requeued = true;
    atomic_store(&x->preempt, false);
    fxj__commit(j, x, lost ? FLUXION__V1__JOB_EVENT__KIND__STATE
                           : FLUXION__V1__JOB_EVENT__KIND__PREEMPTED, msg);
    pthread_mutex_unlock(&j->mu);
    fxl_log(FXL_INFO, "jobs", "job %s job=%" PRId64 " msg=\"%s\"", lost ? "requeued" : "preempted",
            x->id, msg);
}

/* A data-parallel run that lost a rank goes back to the queue and resumes
 * from its last checkpoint (requeue), unless it keeps being lost without a
 * newer checkpoint: then it fails with the last error. */
#define MAX_LOST_IN_A_ROW 3

static void lost_run(fxj_jobs *j, job *x, const char *err)
{
    pthread_mutex_lock(&j->mu);
    if (x->lost_in_a_row && x->lost_at_step == x->rec->checkpoint_step)
        x->lost_in_a_row++;
    else
        x->lost_in_a_row = 1;
    x->lost_at_step = x->rec->checkpoint_step;
    x->lost_rank = true;
    bool give_up = x->lost_in_a_row > MAX_LOST_IN_A_ROW;
    pthread_mutex_unlock(&j->mu);
    if (!give_up) {
        requeue(j, x, err);
        return;
    }
    char msg[FXS_ERRLEN + 64];
    snprintf(msg, sizeof msg, "lost a rank %d times in a row at step %" PRId64 ": %s",
             MAX_LOST_IN_A_ROW + 1, x->lost_at_step, err);
    finish_early(j, x, FLUXION__V1__JOB_STATE__FAILED, msg);
}

/* fxt_run with the hooks, and what its outcome makes of the job. */
static void train(fxj_jobs *j, job *x, run_ctx *r, run_inputs *in)
{
    char err[FXS_ERRLEN] = "";
    fxt_yield y; /* inference first (yield.h) */
    fxt_yield_serving(&y, j->sv, in->device, j->opts.training_min_share);
    fxt_hooks h = { .on_progress = hook_progress, .on_eval = hook_eval,
                    .yield = j->opts.inference_first && j->sv ? fxt_yield_hook : NULL,
                    .yield_data = &y,
                    .on_checkpoint = hook_checkpoint, .on_scalar = hook_scalar,
                    .should_stop = hook_stop, .data = r,
                    .checkpoint_every_steps = j->opts.checkpoint_every_steps,
                    .device = in->device,
                    .memory_limit_bytes = x->rec->spec->memory_limit_bytes };
    void *result = NULL;
    size_t rlen = 0;
    Fluxion__V1__JobProgress *final = NULL;
    char dname[32];
    fxl_log(FXL_INFO, "jobs", "job training job=%" PRId64 " device=%s", x->id,
            fx_device_str(in->device, dname, sizeof dname));
    fxt_result res;
    bool formed = true; /* a world across daemons that could not form: not a loss */
    if (in->world.nremote > 0) { /* ranks on peers: rank 0 here (job_peers.c) */
        res = fxj__train_peers(j, x, &h, in->g, fxds_dataset_columns(in->train),
                               in->val ? fxds_dataset_columns(in->val) : NULL, in->ckpt,
                               in->ckpt_len, &result, &rlen, &final, &formed, err, sizeof err);
    } else if (in->world.world > 1) { /* data-parallel: job_world.c */
        fxj__world_args wa = {.j = j, .x = x, .plan = &in->world, .g0 = in->g,
                              .train = fxds_dataset_columns(in->train),
                              .val = in->val ? fxds_dataset_columns(in->val) : NULL,
                              .ckpt = in->ckpt, .ckpt_len = in->ckpt_len, .hooks = &h,
                              .final = &final};
        res = fxj__world_run(&wa, &result, &rlen, err, sizeof err);
    } else {
        res = fxt_run(x->rec->spec, in->g, fxds_dataset_columns(in->train),
                      in->val ? fxds_dataset_columns(in->val) : NULL, in->ckpt, in->ckpt_len,
                      &h, &result, &rlen, &final, err, sizeof err);
    }
    char tberr[FXS_ERRLEN];
    if (r->tb)
        tb_status(r, fxtb_flush(r->tb, tberr, sizeof tberr), tberr);
    if (res == FXT_DONE) {
        finish_done(j, x, result, rlen, final);
        final = NULL;
    } else if (res == FXT_FAILED) {
        finish_early(j, x, FLUXION__V1__JOB_STATE__FAILED, err);
    } else if (res == FXT_LOST && !formed && !atomic_load(&x->cancel) &&
               !atomic_load(&j->stopping)) {
        requeue(j, x, err); /* waiting for a peer: as long as it takes */
    } else if (res == FXT_LOST && !atomic_load(&x->cancel) && !atomic_load(&j->stopping)) {
        lost_run(j, x, err);
    } else if (atomic_load(&x->cancel)) {
        finish_early(j, x, FLUXION__V1__JOB_STATE__CANCELLED, "cancelled while running");
    } else if (atomic_load(&x->preempt) && !atomic_load(&j->stopping)) {
        requeue(j, x, NULL);
    } else {
        fxl_log(FXL_INFO, "jobs", "job paused for the shutdown job=%" PRId64, x->id);
    }
    if (final)
        fluxion__v1__job_progress__free_unpacked(final, NULL);
    free(result);
}

/* Runs one job taken off the queue to its end (or to the drain). */
void fxj__run_job(fxj_jobs *j, job *x)
{
    if (!begin_run(j, x))
        return;
    char err[FXS_ERRLEN] = "";
    run_inputs in = { 0 };
    run_ctx r = { .j = j, .x = x, .last_persist_ns = fxu_mono_ns(), .grace_until = -1 };
    char *dir = fxj__job_path(j, x->id, NULL), *tbdir = fxj__job_path(j, x->id, "tb");
    r.ckpt_path = fxj__job_path(j, x->id, "checkpoint.safetensors");
    int rc = !dir || !tbdir || !r.ckpt_path ? (fxu_seterr(err, sizeof err, "out of memory"), 1) : 0;
    if (!rc)
        rc = fxu_mkdir_p(dir, err, sizeof err);
    if (!rc)
        rc = prepare_inputs(j, x, &in, err, sizeof err);
    if (!rc && fxtb_open(tbdir, &r.tb, err, sizeof err) != 0)
        fxl_log(FXL_WARN, "jobs", "no TensorBoard events job=%" PRId64 " error=\"%s\"", x->id,
                err);
    if (rc)
        finish_early(j, x, FLUXION__V1__JOB_STATE__FAILED, err);
    else
        train(j, x, &r, &in);
    if (r.tb)
        fxtb_close(r.tb);
    pthread_mutex_lock(&j->mu);
    if (!fxj__is_final(x->rec->state))
        fxj__commit(j, x, 0, NULL); /* the progress of a paused job */
    pthread_mutex_unlock(&j->mu);
    free_inputs(&in);
    free(dir);
    free(tbdir);
    free(r.ckpt_path);
}
