/*
 * jobs.c - training jobs: the queue (store table jobs), worker threads that
 * run train.h on them, checkpoints and TensorBoard files under
 * DIR/jobs/<id>/, live events for watchers, and the result version.
 *
 * Locking: one mutex (j->mu) guards the in-memory jobs, their events and
 * the pending queue; the store's own lock is taken inside it (never the
 * other way round), so a state is committed and announced in one critical
 * section and a watcher never sees an event the store does not have.
 * Training itself and the writing of checkpoint files run outside j->mu.
 *
 * Serving the result: a job that succeeds adds version N+1 of its model.
 * When the model is being served, N+1 is served at once (as ImportWeights
 * does: the served version is the latest). serve_when_done also loads a
 * model that was not being served and marks it loaded in the store. Requests
 * in flight finish on the version they acquired (serving.c refcounts).
 */
#define _GNU_SOURCE
#include "training/jobs.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fx_version.h"
#include "base/log.h"
#include "base/status.h"
#include "models/models.h"
#include "training/tbevents.h"
#include "training/train.h"
#include "base/fsutil.h"
#include "base/util.h"

#define ERRLEN 1024
/* PROGRESS/EVALUATION/CHECKPOINT events kept per job for slow watchers;
 * STATE events are always kept (a job has only a handful). */
#define MAX_MINOR_EVENTS 32
/* Progress is written to the store at checkpoints and at most this often. */
#define PERSIST_EVERY_NS (10ull * 1000000000ull)

typedef struct event {
    uint64_t seq;
    int kind; /* Fluxion__V1__JobEvent__Kind */
    void *packed;
    size_t len;
    struct event *next;
} event;

typedef struct job {
    int64_t id;
    Fluxion__V1__Job *rec; /* the current record (protobuf-c allocated) */
    int refs;              /* the jobs list + each watcher */
    bool active;           /* in j->jobs (QUEUED or RUNNING) */
    bool resumed;          /* RUNNING at start: resume from the checkpoint */
    bool pending;          /* in j->pending: no worker has it yet */
    atomic_bool cancel;    /* cancel requested while running */
    uint64_t seq;          /* last event's */
    event *events, *events_tail;
    int n_minor;
    struct job *next;      /* in j->jobs */
    struct job *next_pending;
} job;

struct fxj_jobs {
    fxdb_store *st;
    fxds_datasets *ds;
    fxsv_serving *sv;
    fxj_jobs_opts opts;
    char *dir;             /* DIR/jobs */
    pthread_mutex_t mu;
    pthread_cond_t work;   /* pending queue or stopping changed */
    pthread_cond_t events; /* an event was added, or stopping */
    job *jobs;             /* active jobs */
    job *pending, *pending_tail;
    atomic_bool stopping;
    bool stopped;
    int n_workers;
    pthread_t *workers;
};

struct fxj_watch {
    fxj_jobs *j;
    job *job;                       /* NULL: static snapshot of a finished job */
    Fluxion__V1__Job *static_rec;
    uint64_t cursor;
    bool snapshot_sent, done;
};

/* ------------------------------------------------------------ helpers */

static bool is_final(Fluxion__V1__JobState s)
{
    return s == FLUXION__V1__JOB_STATE__SUCCEEDED || s == FLUXION__V1__JOB_STATE__FAILED ||
           s == FLUXION__V1__JOB_STATE__CANCELLED;
}

static const char *state_name(Fluxion__V1__JobState s)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&fluxion__v1__job_state__descriptor, (int)s);
    return v ? v->name : "JOB_STATE_UNSPECIFIED";
}

/* Replaces a string field of an unpacked message (the old one is freed
 * unless it is protobuf-c's shared empty default). */
static void set_str(char **slot, const char *v)
{
    char *n = strdup(v ? v : "");
    if (!n)
        return;
    if (*slot && *slot != protobuf_c_empty_string)
        free(*slot);
    *slot = n;
}

/* Deep copies through the wire format: every part then belongs to
 * protobuf-c's allocator and free_unpacked frees it. */
static ProtobufCMessage *msg_copy(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    free(buf);
    return c;
}

static Fluxion__V1__Job *job_copy(const Fluxion__V1__Job *r)
{
    return (Fluxion__V1__Job *)msg_copy(&r->base);
}

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        fxu_seterr(err, errlen, "path too long: %s", path);
        return -1;
    }
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                fxu_seterr(err, errlen, "cannot create %s: %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (!c)
                return 0;
        }
    }
}

static char *job_path(const fxj_jobs *j, int64_t id, const char *leaf)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%" PRId64 "%s%s", j->dir, id, leaf ? "/" : "", leaf ? leaf : "") < 0)
        return NULL;
    return p;
}

/* "12" -> 12; INVALID_ARGUMENT for anything but a positive decimal. */
static int parse_id(const char *s, int64_t *id, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long long v = s && *s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || errno || *end || v <= 0 || s[0] == '+' || s[0] == ' ') {
        fxu_seterr(err, errlen, "job id '%s' is not a job number", s ? s : "");
        return FXS_INVALID_ARGUMENT;
    }
    *id = v;
    return 0;
}

/* ------------------------------------------------------------- store */

/* The jobs table belongs to the store (store/jobs_tab.c); its records are
 * packed fluxion.v1.Job messages. */

typedef struct {
    const Fluxion__V1__Job *rec;
    bool fresh;          /* a new row: its id and tensorboard_dir are set here */
    const char *dir;     /* DIR/jobs, for a new row's tensorboard_dir */
} pack_ctx;

/* fxdb_pack_fn: the record as stored (run by the store under its lock);
 * version > 0: the result version fxdb_job_finish is storing with it. */
static int pack_job(void *vctx, int64_t id, int64_t version, void **blob, size_t *len,
                    char *err, size_t errlen)
{
    pack_ctx *c = vctx;
    Fluxion__V1__Job tmp = *c->rec;
    if (version > 0)
        tmp.result_version = version;
    char idbuf[24], tbdir[4200];
    if (c->fresh) {
        snprintf(idbuf, sizeof idbuf, "%" PRId64, id);
        snprintf(tbdir, sizeof tbdir, "%s/%" PRId64 "/tb", c->dir, id);
        tmp.id = idbuf;
        tmp.tensorboard_dir = tbdir;
    }
    *len = protobuf_c_message_get_packed_size(&tmp.base);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (!buf) {
        fxu_seterr(err, errlen, "jobs: out of memory packing job %" PRId64, id);
        return FXS_RESOURCE_EXHAUSTED;
    }
    protobuf_c_message_pack(&tmp.base, buf);
    *blob = buf;
    return 0;
}

/* What the store filters on and checks deletes against (a queued or
 * running job's model and datasets cannot be deleted). */
static fxdb_job_cols job_cols(const Fluxion__V1__Job *rec, Fluxion__V1__JobState state)
{
    const Fluxion__V1__JobSpec *sp = rec->spec;
    return (fxdb_job_cols){ .state = state_name(state), .model = sp ? sp->model : "",
                            .dataset = sp ? sp->dataset : "",
                            .validation_dataset = sp ? sp->validation_dataset : "" };
}

/* Commits rec (a new row when *id is 0; *id gets it). */
static int save(fxj_jobs *j, const Fluxion__V1__Job *rec, int64_t *id, char *err, size_t errlen)
{
    pack_ctx c = { .rec = rec, .fresh = *id == 0, .dir = j->dir };
    fxdb_job_cols cols = job_cols(rec, rec->state);
    return fxdb_job_save(j->st, id, &cols, pack_job, &c, err, errlen);
}

typedef struct {
    const char *state, *model; /* filters ("": any) */
    int64_t id;                /* > 0: that row only */
    Fluxion__V1__Job **recs;
    int n;
} load_ctx;

static int load(fxj_jobs *j, load_ctx *c, char *err, size_t errlen)
{
    fxdb_row *rows = NULL;
    int n = 0;
    int rc = fxdb_job_list(j->st, c->id, c->state, c->model, &rows, &n, err, errlen);
    if (rc)
        return rc;
    c->recs = calloc(n ? (size_t)n : 1, sizeof *c->recs);
    if (!c->recs) {
        fxdb_rows_free(rows, n);
        fxu_seterr(err, errlen, "jobs: out of memory listing jobs");
        return FXS_RESOURCE_EXHAUSTED;
    }
    for (int i = 0; i < n; i++) {
        Fluxion__V1__Job *r = fluxion__v1__job__unpack(NULL, rows[i].len, rows[i].blob);
        if (!r) {
            fxl_log(FXL_ERROR, "jobs", "stored record does not parse job=%" PRId64, rows[i].id);
            continue;
        }
        c->recs[c->n++] = r;
    }
    fxdb_rows_free(rows, n);
    return 0;
}

/* The stored record of one job. */
static int load_one(fxj_jobs *j, int64_t id, Fluxion__V1__Job **out, char *err, size_t errlen)
{
    load_ctx c = { .state = "", .model = "", .id = id };
    int rc = load(j, &c, err, errlen);
    if (rc)
        return rc;
    if (c.n == 0) {
        free(c.recs);
        fxu_seterr(err, errlen, "job %" PRId64 " not found", id);
        return FXS_NOT_FOUND;
    }
    *out = c.recs[0];
    free(c.recs);
    return 0;
}

/* ------------------------------------------------- jobs and events (mu) */

static job *find_active(fxj_jobs *j, int64_t id)
{
    for (job *x = j->jobs; x; x = x->next)
        if (x->id == id)
            return x;
    return NULL;
}

static void free_events(job *x)
{
    for (event *e = x->events, *n; e; e = n) {
        n = e->next;
        free(e->packed);
        free(e);
    }
    x->events = x->events_tail = NULL;
}

static void job_unref(job *x)
{
    if (--x->refs > 0)
        return;
    free_events(x);
    fluxion__v1__job__free_unpacked(x->rec, NULL);
    free(x);
}

static job *job_new(Fluxion__V1__Job *rec, int64_t id)
{
    job *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->id = id;
    x->rec = rec;
    x->refs = 1;
    x->active = true;
    atomic_init(&x->cancel, false);
    return x;
}

static void push_pending(fxj_jobs *j, job *x)
{
    x->pending = true;
    x->next_pending = NULL;
    if (j->pending_tail)
        j->pending_tail->next_pending = x;
    else
        j->pending = x;
    j->pending_tail = x;
}

static void remove_pending(fxj_jobs *j, job *x)
{
    job **pp = &j->pending, *prev = NULL;
    for (; *pp && *pp != x; pp = &(*pp)->next_pending)
        prev = *pp;
    if (!*pp)
        return;
    x->pending = false;
    *pp = x->next_pending;
    if (j->pending_tail == x)
        j->pending_tail = prev;
}

/* Drops the oldest non-STATE event (a slow watcher skips it). */
static void prune_minor(job *x)
{
    event **pp = &x->events, *prev = NULL;
    for (; *pp; prev = *pp, pp = &(*pp)->next) {
        event *e = *pp;
        if (e->kind == FLUXION__V1__JOB_EVENT__KIND__STATE)
            continue;
        *pp = e->next;
        if (x->events_tail == e)
            x->events_tail = prev;
        free(e->packed);
        free(e);
        x->n_minor--;
        return;
    }
}

static void *pack_event(int kind, const Fluxion__V1__Job *rec, const char *message, size_t *len)
{
    Fluxion__V1__JobEvent ev = FLUXION__V1__JOB_EVENT__INIT;
    ev.kind = (Fluxion__V1__JobEvent__Kind)kind;
    ev.job = (Fluxion__V1__Job *)rec;
    ev.unix_ms = fxu_now_ms();
    ev.message = (char *)(message ? message : "");
    *len = fluxion__v1__job_event__get_packed_size(&ev);
    void *buf = malloc(*len ? *len : 1);
    if (buf)
        fluxion__v1__job_event__pack(&ev, buf);
    return buf;
}

/* Appends an event with the job's current record and wakes watchers. An
 * event that cannot be allocated is dropped (watchers still get the state
 * from the next event or the final record). */
static void announce(fxj_jobs *j, job *x, int kind, const char *message)
{
    event *e = calloc(1, sizeof *e);
    if (!e || !(e->packed = pack_event(kind, x->rec, message, &e->len))) {
        free(e);
        fxl_log(FXL_ERROR, "jobs", "out of memory for an event job=%" PRId64, x->id);
        return;
    }
    e->seq = ++x->seq;
    e->kind = kind;
    if (x->events_tail)
        x->events_tail->next = e;
    else
        x->events = e;
    x->events_tail = e;
    if (kind != FLUXION__V1__JOB_EVENT__KIND__STATE && ++x->n_minor > MAX_MINOR_EVENTS)
        prune_minor(x);
    pthread_cond_broadcast(&j->events);
}

/* Commits the job's record, then announces it (kind 0: not announced). */
static int commit(fxj_jobs *j, job *x, int kind, const char *message)
{
    char err[ERRLEN];
    int64_t id = x->id;
    int rc = save(j, x->rec, &id, err, sizeof err);
    if (rc)
        fxl_log(FXL_ERROR, "jobs", "cannot save job=%" PRId64 " error=\"%s\"", x->id, err);
    if (kind)
        announce(j, x, kind, message);
    return rc;
}

/* Takes a job out of the active list once final (watchers keep theirs). */
static void retire(fxj_jobs *j, job *x)
{
    job **pp = &j->jobs;
    while (*pp && *pp != x)
        pp = &(*pp)->next;
    if (*pp)
        *pp = x->next;
    x->active = false;
    job_unref(x);
}

static void remove_checkpoint(fxj_jobs *j, int64_t id)
{
    char *path = job_path(j, id, "checkpoint.safetensors");
    if (path)
        unlink(path);
    free(path);
}

/* After a state is committed: a final state makes the checkpoint useless
 * (only then), watchers hear of it, the log says so, a final job retires. */
static void announce_state(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *message)
{
    if (is_final(s))
        remove_checkpoint(j, x->id);
    announce(j, x, FLUXION__V1__JOB_EVENT__KIND__STATE, message);
    char quoted[ERRLEN]; /* logfmt: the value's own quotes become ' */
    snprintf(quoted, sizeof quoted, "%s", message ? message : "");
    for (char *q = quoted; (q = strchr(q, '"'));)
        *q = '\'';
    fxl_log(s == FLUXION__V1__JOB_STATE__FAILED ? FXL_WARN : FXL_INFO, "jobs",
            "job state job=%" PRId64 " model=%s state=%s msg=\"%s\"", x->id,
            x->rec->spec ? x->rec->spec->model : "", state_name(s), quoted);
    if (is_final(s))
        retire(j, x);
}

/* Sets a final or running state, commits and announces it. */
static void set_state(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *message)
{
    x->rec->state = s;
    if (s == FLUXION__V1__JOB_STATE__RUNNING && !x->rec->started_unix_ms)
        x->rec->started_unix_ms = fxu_now_ms();
    if (is_final(s)) {
        x->rec->finished_unix_ms = fxu_now_ms();
        if (s == FLUXION__V1__JOB_STATE__FAILED)
            set_str(&x->rec->error, message);
    }
    commit(j, x, 0, NULL);
    announce_state(j, x, s, message);
}

/* ------------------------------------------------------------ running */

typedef struct {
    fxj_jobs *j;
    job *x;
    fxtb_writer *tb;
    char *ckpt_path;
    uint64_t last_persist_ns;
    int ckpt_failures; /* checkpoints in a row not stored (for the log) */
    bool tb_failing;   /* TensorBoard writes fail (logged once) */
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
    Fluxion__V1__JobProgress *copy = (Fluxion__V1__JobProgress *)msg_copy(&p->base);
    if (!copy)
        return;
    pthread_mutex_lock(&r->j->mu);
    if (r->x->rec->progress)
        fluxion__v1__job_progress__free_unpacked(r->x->rec->progress, NULL);
    r->x->rec->progress = copy;
    uint64_t now = fxu_mono_ns();
    if (now - r->last_persist_ns >= PERSIST_EVERY_NS) {
        r->last_persist_ns = now;
        commit(r->j, r->x, 0, NULL);
    }
    announce(r->j, r->x, kind, NULL);
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
    char quoted[ERRLEN]; /* logfmt: the value's own quotes become ' */
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
    char tberr[ERRLEN];
    if (r->tb) /* a failed flush keeps its events for the next one */
        tb_status(r, fxtb_flush(r->tb, tberr, sizeof tberr), tberr);
    pthread_mutex_lock(&r->j->mu);
    r->x->rec->checkpoint_step = step;
    r->last_persist_ns = fxu_mono_ns();
    char msg[64];
    snprintf(msg, sizeof msg, "checkpoint at step %" PRId64, step);
    rc = commit(r->j, r->x, FLUXION__V1__JOB_EVENT__KIND__CHECKPOINT, msg);
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
    char err[ERRLEN];
    int rc = r->tb ? fxtb_scalar(r->tb, tag, step, value, err, sizeof err) : 0;
    if (rc)
        tb_status(r, rc, err);
}

static bool hook_stop(void *data)
{
    run_ctx *r = data;
    return atomic_load(&r->x->cancel) || atomic_load(&r->j->stopping);
}

/* What a job needs to train: its own graph at the base version's weights,
 * its data, and the checkpoint to resume from. */
typedef struct {
    fxg_graph *g;
    fxds_dataset *train, *val;
    void *ckpt;
    size_t ckpt_len;
    fx_device device;   /* spec.device, resolved when the job starts */
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

static int open_data(fxj_jobs *j, const char *name, const char *what, fxds_dataset **out,
                     char *err, size_t errlen)
{
    char derr[ERRLEN - 100];
    int rc = fxds_dataset_open(j->ds, name, out, derr, sizeof derr);
    if (rc)
        fxu_seterr(err, errlen, "%s: %s", what, derr);
    return rc;
}

static int prepare_inputs(fxj_jobs *j, job *x, run_inputs *in, char *err, size_t errlen)
{
    const Fluxion__V1__JobSpec *spec = x->rec->spec;
    int rc = fxsv_devices_resolve(j->opts.devices, spec->device, "spec.device", &in->device, err,
                                 errlen);
    if (rc)
        return rc;
    fxm_load_opts lo = { .max_params = j->opts.max_params };
    fxm_loaded l;
    char werr[FXS_ERRLEN];
    if ((rc = fxm_load_version(j->st, spec->model, x->rec->base_version, &lo, &l, werr,
                               sizeof werr))) {
        fxu_seterr(err, errlen, "base version %" PRId64 " of model '%s': %s", x->rec->base_version,
                   spec->model, werr);
        return rc;
    }
    in->g = l.g;
    if ((rc = open_data(j, spec->dataset, "dataset", &in->train, err, errlen)))
        return rc;
    if (strcmp(fxds_dataset_sha256(in->train), x->rec->dataset_sha256) != 0) {
        fxu_seterr(err, errlen, "dataset '%s' changed since the job was submitted (sha256 %s, "
               "was %s)", spec->dataset, fxds_dataset_sha256(in->train), x->rec->dataset_sha256);
        return FXS_FAILED_PRECONDITION;
    }
    if (spec->validation_dataset && *spec->validation_dataset &&
        (rc = open_data(j, spec->validation_dataset, "validation_dataset", &in->val, err,
                        errlen)))
        return rc;
    /* The checkpoint file is the truth: it may be newer than the record's
     * checkpoint_step when the daemon died between writing and committing. */
    char *path = job_path(j, x->id, "checkpoint.safetensors");
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
    char err[ERRLEN];
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
    char err[ERRLEN], src[48], msg[ERRLEN + 100], note[300] = "";
    snprintf(src, sizeof src, "job %" PRId64, x->id);
    pthread_mutex_lock(&j->mu);
    if (final) {
        if (x->rec->progress)
            fluxion__v1__job_progress__free_unpacked(x->rec->progress, NULL);
        x->rec->progress = final;
    }
    Fluxion__V1__Job *done = job_copy(x->rec);
    pthread_mutex_unlock(&j->mu);
    int64_t v = 0;
    int rc = done ? 0 : fxu_oom(err, sizeof err);
    if (!rc) {
        done->state = FLUXION__V1__JOB_STATE__SUCCEEDED;
        done->finished_unix_ms = fxu_now_ms();
        pack_ctx c = { .rec = done, .fresh = false, .dir = j->dir };
        fxdb_job_cols cols = job_cols(done, done->state);
        rc = fxdb_job_finish(j->st, x->id, &cols, result, len, src, pack_job, &c, &v, err,
                             sizeof err);
    }
    if (!rc)
        serve_result(j, x, note, sizeof note);
    pthread_mutex_lock(&j->mu);
    if (rc) {
        if (done)
            fluxion__v1__job__free_unpacked(done, NULL);
        snprintf(msg, sizeof msg, "cannot store the result: %s", err);
        set_state(j, x, FLUXION__V1__JOB_STATE__FAILED, msg);
    } else {
        done->result_version = v;
        fluxion__v1__job__free_unpacked(x->rec, NULL);
        x->rec = done;
        snprintf(msg, sizeof msg, "model '%s' version %" PRId64 "%s", x->rec->spec->model, v,
                 note);
        announce_state(j, x, FLUXION__V1__JOB_STATE__SUCCEEDED, msg);
    }
    pthread_mutex_unlock(&j->mu);
}

static void finish_early(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *msg)
{
    pthread_mutex_lock(&j->mu);
    set_state(j, x, s, msg);
    pthread_mutex_unlock(&j->mu);
}


/* Marks the job RUNNING (or announces its resumption); false when there is
 * nothing to train (cancelled, or its result stored before a crash). */
static bool begin_run(fxj_jobs *j, job *x)
{
    char msg[ERRLEN];
    pthread_mutex_lock(&j->mu);
    if (x->resumed)
        snprintf(msg, sizeof msg, "resumed after a restart (checkpoint step %" PRId64 ")",
                 x->rec->checkpoint_step);
    set_state(j, x, FLUXION__V1__JOB_STATE__RUNNING, x->resumed ? msg : "started");
    pthread_mutex_unlock(&j->mu);
    if (atomic_load(&x->cancel)) { /* cancelled as it was taken off the queue */
        finish_early(j, x, FLUXION__V1__JOB_STATE__CANCELLED, "cancelled before training began");
        return false;
    }
    int64_t made = x->resumed ? version_of_job(j, x) : 0;
    if (!made)
        return true;
    pthread_mutex_lock(&j->mu);
    x->rec->result_version = made;
    snprintf(msg, sizeof msg, "model '%s' version %" PRId64 " (stored before the restart)",
             x->rec->spec->model, made);
    set_state(j, x, FLUXION__V1__JOB_STATE__SUCCEEDED, msg);
    pthread_mutex_unlock(&j->mu);
    return false;
}

/* fxt_run with the hooks, and what its outcome makes of the job. */
static void train(fxj_jobs *j, job *x, run_ctx *r, run_inputs *in)
{
    char err[ERRLEN] = "";
    fxt_hooks h = { .on_progress = hook_progress, .on_eval = hook_eval,
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
    fxt_result res = fxt_run(x->rec->spec, in->g, fxds_dataset_columns(in->train),
                             in->val ? fxds_dataset_columns(in->val) : NULL, in->ckpt,
                             in->ckpt_len, &h, &result, &rlen, &final, err, sizeof err);
    char tberr[ERRLEN];
    if (r->tb)
        tb_status(r, fxtb_flush(r->tb, tberr, sizeof tberr), tberr);
    if (res == FXT_DONE) {
        finish_done(j, x, result, rlen, final);
        final = NULL;
    } else if (res == FXT_FAILED) {
        finish_early(j, x, FLUXION__V1__JOB_STATE__FAILED, err);
    } else if (atomic_load(&x->cancel)) {
        finish_early(j, x, FLUXION__V1__JOB_STATE__CANCELLED, "cancelled while running");
    } else {
        fxl_log(FXL_INFO, "jobs", "job paused for the shutdown job=%" PRId64, x->id);
    }
    if (final)
        fluxion__v1__job_progress__free_unpacked(final, NULL);
    free(result);
}

/* Runs one job taken off the queue to its end (or to the drain). */
static void run_job(fxj_jobs *j, job *x)
{
    if (!begin_run(j, x))
        return;
    char err[ERRLEN] = "";
    run_inputs in = { 0 };
    run_ctx r = { .j = j, .x = x, .last_persist_ns = fxu_mono_ns() };
    char *dir = job_path(j, x->id, NULL), *tbdir = job_path(j, x->id, "tb");
    r.ckpt_path = job_path(j, x->id, "checkpoint.safetensors");
    int rc = !dir || !tbdir || !r.ckpt_path ? (fxu_seterr(err, sizeof err, "out of memory"), 1) : 0;
    if (!rc)
        rc = mkdir_p(dir, err, sizeof err) ? FXS_INTERNAL : 0;
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
    if (!is_final(x->rec->state))
        commit(j, x, 0, NULL); /* the progress of a paused job */
    pthread_mutex_unlock(&j->mu);
    free_inputs(&in);
    free(dir);
    free(tbdir);
    free(r.ckpt_path);
}

static void *worker_main(void *arg)
{
    fxj_jobs *j = arg;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!atomic_load(&j->stopping) && !j->pending)
            pthread_cond_wait(&j->work, &j->mu);
        if (atomic_load(&j->stopping))
            break;
        job *x = j->pending;
        remove_pending(j, x);
        x->refs++; /* retire() may drop the list's reference */
        pthread_mutex_unlock(&j->mu);
        run_job(j, x);
        pthread_mutex_lock(&j->mu);
        job_unref(x);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* ------------------------------------------------------------ start/stop */

/* Loads the unfinished jobs: RUNNING ones first (they resume), then QUEUED,
 * each group in submission order. */
static int restore(fxj_jobs *j, char *err, size_t errlen)
{
    static const char *const states[] = { "RUNNING", "QUEUED" };
    for (int s = 0; s < 2; s++) {
        load_ctx c = { .state = states[s], .model = "" };
        int rc = load(j, &c, err, errlen);
        if (rc)
            return rc;
        for (int i = 0; i < c.n; i++) {
            int64_t id = strtoll(c.recs[i]->id, NULL, 10);
            job *x = c.recs[i]->spec ? job_new(c.recs[i], id) : NULL;
            if (!x) {
                fxl_log(FXL_ERROR, "jobs", "cannot restore job=%s", c.recs[i]->id);
                fluxion__v1__job__free_unpacked(c.recs[i], NULL);
                continue;
            }
            if (s == 0) {
                x->resumed = true;
                x->rec->restarts++;
            }
            /* Also fills the dataset columns of rows written before the
             * store had them (they protect the datasets from deletion). */
            commit(j, x, 0, NULL);
            x->next = j->jobs;
            j->jobs = x;
            push_pending(j, x);
        }
        free(c.recs);
        if (c.n)
            fxl_log(FXL_INFO, "jobs", "jobs restored state=%s count=%d", states[s], c.n);
    }
    return 0;
}

fxj_jobs *fxj_jobs_start(fxdb_store *st, fxds_datasets *ds, fxsv_serving *sv,
                         const fxj_jobs_opts *opts, char *err, size_t errlen)
{
    fxj_jobs *j = calloc(1, sizeof *j);
    /* Absolute: tensorboard_dir in the records is for users' shells. */
    char *root = realpath(fxdb_store_dir(st), NULL);
    if (!j || asprintf(&j->dir, "%s/jobs", root ? root : fxdb_store_dir(st)) < 0) {
        free(root);
        free(j);
        fxu_seterr(err, errlen, "jobs: out of memory");
        return NULL;
    }
    free(root);
    j->st = st;
    j->ds = ds;
    j->sv = sv;
    j->opts = opts ? *opts : (fxj_jobs_opts){ 0 };
    if (j->opts.workers <= 0)
        j->opts.workers = 1;
    if (j->opts.checkpoint_every_steps <= 0)
        j->opts.checkpoint_every_steps = 500;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->work, NULL);
    pthread_cond_init(&j->events, NULL);
    atomic_init(&j->stopping, false);
    int rc = mkdir_p(j->dir, err, errlen) ? FXS_INTERNAL : restore(j, err, errlen);
    if (!rc && !(j->workers = calloc((size_t)j->opts.workers, sizeof *j->workers))) {
        fxu_seterr(err, errlen, "jobs: out of memory");
        rc = FXS_RESOURCE_EXHAUSTED;
    }
    if (rc) {
        j->stopped = true;
        fxj_jobs_free(j);
        return NULL;
    }
    for (int i = 0; i < j->opts.workers; i++) {
        if (pthread_create(&j->workers[i], NULL, worker_main, j) != 0) {
            fxu_seterr(err, errlen, "jobs: cannot start worker thread %d", i);
            fxj_jobs_stop(j);
            fxj_jobs_free(j);
            return NULL;
        }
        j->n_workers++;
    }
    fxl_log(FXL_INFO, "jobs", "jobs started workers=%d checkpoint_every_steps=%" PRId64,
            j->opts.workers, j->opts.checkpoint_every_steps);
    return j;
}

void fxj_jobs_stop(fxj_jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    bool was = j->stopped;
    j->stopped = true;
    atomic_store(&j->stopping, true);
    pthread_cond_broadcast(&j->work);
    pthread_cond_broadcast(&j->events);
    pthread_mutex_unlock(&j->mu);
    if (was)
        return;
    for (int i = 0; i < j->n_workers; i++)
        pthread_join(j->workers[i], NULL);
    j->n_workers = 0;
    fxl_log(FXL_INFO, "jobs", "jobs stopped");
}

void fxj_jobs_free(fxj_jobs *j)
{
    if (!j)
        return;
    fxj_jobs_stop(j);
    for (job *x = j->jobs, *n; x; x = n) {
        n = x->next;
        job_unref(x);
    }
    pthread_cond_destroy(&j->work);
    pthread_cond_destroy(&j->events);
    pthread_mutex_destroy(&j->mu);
    free(j->workers);
    free(j->dir);
    free(j);
}

/* ------------------------------------------------------------ requests */

static int check_fields(const fxj_jobs *j, const Fluxion__V1__JobSpec *spec, char *err,
                        size_t errlen)
{
    if (!spec) {
        fxu_seterr(err, errlen, "spec: missing");
        return FXS_INVALID_ARGUMENT;
    }
    const char *bad = !spec->model || !*spec->model ? "spec.model: missing"
                      : !spec->dataset || !*spec->dataset ? "spec.dataset: missing"
                      : spec->model_version < 0 ? "spec.model_version: must not be negative"
                      : spec->checkpoint_every_steps < 0
                          ? "spec.checkpoint_every_steps: must not be negative"
                          : NULL;
    if (bad) {
        fxu_seterr(err, errlen, "%s", bad);
        return FXS_INVALID_ARGUMENT;
    }
    fx_device dev;
    return fxsv_devices_resolve(j->opts.devices, spec->device, "spec.device", &dev, err, errlen);
}

/* Everything that can be checked before queueing; rec gets the facts to
 * record (base version, dataset checksum). */
static int validate(fxj_jobs *j, const Fluxion__V1__JobSpec *spec, Fluxion__V1__Job *rec,
                    char *sha, char *err, size_t errlen)
{
    int rc = check_fields(j, spec, err, errlen);
    if (rc)
        return rc;
    fxdb_model_rec mr;
    if ((rc = fxdb_store_get_model(j->st, spec->model, &mr, err, errlen)))
        return rc;
    fxg_graph *g = NULL;
    rc = fxm_resolve_version(&mr, spec->model_version, &rec->base_version, err, errlen);
    if (!rc)
        rc = fxm_graph_of(&mr, j->opts.max_params, &g, err, errlen);
    fxdb_model_rec_free(&mr);
    fxds_dataset *train = NULL, *val = NULL;
    if (!rc)
        rc = open_data(j, spec->dataset, "spec.dataset", &train, err, errlen);
    if (!rc && spec->validation_dataset && *spec->validation_dataset)
        rc = open_data(j, spec->validation_dataset, "spec.validation_dataset", &val, err,
                       errlen);
    if (!rc)
        rc = fxt_validate(spec, g, fxds_dataset_columns(train),
                          val ? fxds_dataset_columns(val) : NULL, err, errlen);
    if (!rc)
        snprintf(sha, 65, "%s", fxds_dataset_sha256(train));
    if (train)
        fxds_dataset_release(train);
    if (val)
        fxds_dataset_release(val);
    fxg_free(g);
    return rc;
}

int fxj_jobs_submit(fxj_jobs *j, const Fluxion__V1__JobSpec *spec, Fluxion__V1__Job **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    if (atomic_load(&j->stopping)) {
        fxu_seterr(err, errlen, "the server is shutting down: no new jobs");
        return FXS_UNAVAILABLE;
    }
    Fluxion__V1__Job rec = FLUXION__V1__JOB__INIT;
    char sha[65] = "";
    int rc = validate(j, spec, &rec, sha, err, errlen);
    if (rc)
        return rc;
    rec.spec = (Fluxion__V1__JobSpec *)spec;
    rec.state = FLUXION__V1__JOB_STATE__QUEUED;
    rec.created_unix_ms = fxu_now_ms();
    rec.dataset_sha256 = sha;
    rec.engine_version = FX_VERSION_STRING;
    Fluxion__V1__Job *copy = job_copy(&rec);
    if (!copy) {
        fxu_seterr(err, errlen, "jobs: out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    pthread_mutex_lock(&j->mu);
    int64_t id = 0;
    char idbuf[24];
    rc = save(j, copy, &id, err, errlen);
    job *x = NULL;
    if (!rc) {
        snprintf(idbuf, sizeof idbuf, "%" PRId64, id);
        set_str(&copy->id, idbuf);
        char *tb = job_path(j, id, "tb");
        set_str(&copy->tensorboard_dir, tb);
        free(tb);
    }
    if (!rc && !(x = job_new(copy, id)))
        rc = FXS_RESOURCE_EXHAUSTED;
    if (!rc && !(*out = job_copy(copy)))
        rc = FXS_RESOURCE_EXHAUSTED;
    if (rc) {
        pthread_mutex_unlock(&j->mu);
        if (rc == FXS_RESOURCE_EXHAUSTED)
            fxu_seterr(err, errlen, "jobs: out of memory");
        free(x);
        fluxion__v1__job__free_unpacked(copy, NULL);
        return rc;
    }
    x->next = j->jobs;
    j->jobs = x;
    announce(j, x, FLUXION__V1__JOB_EVENT__KIND__STATE, "queued");
    push_pending(j, x);
    pthread_cond_signal(&j->work);
    pthread_mutex_unlock(&j->mu);
    fxl_log(FXL_INFO, "jobs", "job queued job=%" PRId64 " model=%s dataset=%s", id, spec->model,
            spec->dataset);
    return 0;
}

int fxj_jobs_get(fxj_jobs *j, const char *id, Fluxion__V1__Job **out, char *err, size_t errlen)
{
    int64_t n;
    int rc = parse_id(id, &n, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&j->mu);
    job *x = find_active(j, n);
    if (x) {
        *out = job_copy(x->rec);
        if (!*out) {
            fxu_seterr(err, errlen, "jobs: out of memory");
            rc = FXS_RESOURCE_EXHAUSTED;
        }
    } else {
        rc = load_one(j, n, out, err, errlen);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int fxj_jobs_list(fxj_jobs *j, Fluxion__V1__JobState state, const char *model,
                  Fluxion__V1__Job ***jobs, int *n, char *err, size_t errlen)
{
    *jobs = NULL;
    *n = 0;
    if (state != FLUXION__V1__JOB_STATE__JOB_STATE_UNSPECIFIED &&
        !protobuf_c_enum_descriptor_get_value(&fluxion__v1__job_state__descriptor, (int)state)) {
        fxu_seterr(err, errlen, "state: %d is not a job state", (int)state);
        return FXS_INVALID_ARGUMENT;
    }
    load_ctx c = { .state = state ? state_name(state) : "", .model = model ? model : "" };
    pthread_mutex_lock(&j->mu);
    int rc = load(j, &c, err, errlen);
    /* Running jobs: the in-memory record has the latest progress. */
    for (int i = 0; !rc && i < c.n; i++) {
        job *x = find_active(j, strtoll(c.recs[i]->id, NULL, 10));
        Fluxion__V1__Job *live = x ? job_copy(x->rec) : NULL;
        if (live) {
            fluxion__v1__job__free_unpacked(c.recs[i], NULL);
            c.recs[i] = live;
        }
    }
    pthread_mutex_unlock(&j->mu);
    if (!rc) {
        *jobs = c.recs;
        *n = c.n;
    }
    return rc;
}

int fxj_jobs_cancel(fxj_jobs *j, const char *id, Fluxion__V1__Job **out, char *err,
                    size_t errlen)
{
    int64_t n;
    int rc = parse_id(id, &n, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&j->mu);
    job *x = find_active(j, n);
    if (!x) {
        Fluxion__V1__Job *r = NULL;
        rc = load_one(j, n, &r, err, errlen);
        if (!rc) {
            fxu_seterr(err, errlen, "job %" PRId64 " already finished (%s)", n,
                   state_name(r->state));
            fluxion__v1__job__free_unpacked(r, NULL);
            rc = FXS_FAILED_PRECONDITION;
        }
    } else if (x->pending) {
        remove_pending(j, x);
        x->refs++;
        set_state(j, x, FLUXION__V1__JOB_STATE__CANCELLED,
                  x->resumed ? "cancelled before it resumed" : "cancelled before it started");
        *out = job_copy(x->rec);
        job_unref(x);
    } else {
        /* RUNNING: the worker stops it at a step boundary. */
        atomic_store(&x->cancel, true);
        *out = job_copy(x->rec);
        fxl_log(FXL_INFO, "jobs", "cancel requested job=%" PRId64, n);
    }
    pthread_mutex_unlock(&j->mu);
    if (!rc && !*out) {
        fxu_seterr(err, errlen, "jobs: out of memory");
        rc = FXS_RESOURCE_EXHAUSTED;
    }
    return rc;
}

/* ------------------------------------------------------------ watching */

int fxj_watch_open(fxj_jobs *j, const char *id, fxj_watch **out, char *err, size_t errlen)
{
    *out = NULL;
    int64_t n;
    int rc = parse_id(id, &n, err, errlen);
    if (rc)
        return rc;
    fxj_watch *w = calloc(1, sizeof *w);
    if (!w) {
        fxu_seterr(err, errlen, "jobs: out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    w->j = j;
    pthread_mutex_lock(&j->mu);
    /* Not active: finished (a job leaves the list only after its final
     * state is committed), so the stored record is the whole story. */
    job *x = find_active(j, n);
    if (x) {
        x->refs++;
        w->job = x;
    } else {
        rc = load_one(j, n, &w->static_rec, err, errlen);
    }
    pthread_mutex_unlock(&j->mu);
    if (rc) {
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

static Fluxion__V1__JobEvent *unpack_event(const void *buf, size_t len)
{
    return fluxion__v1__job_event__unpack(NULL, len, buf);
}

static Fluxion__V1__JobEvent *snapshot(fxj_watch *w)
{
    const Fluxion__V1__Job *rec = w->job ? w->job->rec : w->static_rec;
    size_t len;
    void *buf = pack_event(FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT, rec, NULL, &len);
    Fluxion__V1__JobEvent *ev = buf ? unpack_event(buf, len) : NULL;
    free(buf);
    if (ev) {
        w->snapshot_sent = true;
        w->done = is_final(rec->state);
        if (w->job)
            w->cursor = w->job->seq;
    }
    return ev;
}

/* The next event after the cursor (the list is in seq order). */
static event *next_event(fxj_watch *w)
{
    for (event *e = w->job->events; e; e = e->next)
        if (e->seq > w->cursor)
            return e;
    return NULL;
}

static int deliver(fxj_watch *w, event *e, Fluxion__V1__JobEvent **out)
{
    *out = unpack_event(e->packed, e->len);
    if (!*out)
        return FXS_RESOURCE_EXHAUSTED;
    w->cursor = e->seq;
    if (e->kind == FLUXION__V1__JOB_EVENT__KIND__STATE && (*out)->job &&
        is_final((*out)->job->state))
        w->done = true;
    return 0;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int fxj_watch_next(fxj_watch *w, int timeout_ms, Fluxion__V1__JobEvent **out, bool *ended)
{
    *out = NULL;
    *ended = false;
    fxj_jobs *j = w->j;
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    if (!w->snapshot_sent) {
        *out = snapshot(w);
        rc = *out ? 0 : FXS_RESOURCE_EXHAUSTED;
    } else if (w->done) {
        *ended = true;
    } else {
        struct timespec ts;
        deadline_in(&ts, timeout_ms > 0 ? timeout_ms : 0);
        event *e;
        while (!(e = next_event(w)) && !atomic_load(&j->stopping))
            if (pthread_cond_timedwait(&j->events, &j->mu, &ts) != 0)
                break;
        if (e)
            rc = deliver(w, e, out);
        else if (atomic_load(&j->stopping))
            rc = FXS_UNAVAILABLE;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void fxj_watch_close(fxj_watch *w)
{
    if (!w)
        return;
    if (w->job) {
        pthread_mutex_lock(&w->j->mu);
        job_unref(w->job);
        pthread_mutex_unlock(&w->j->mu);
    }
    if (w->static_rec)
        fluxion__v1__job__free_unpacked(w->static_rec, NULL);
    free(w);
}
