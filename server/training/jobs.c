/*
 * jobs.c - training jobs: starting and stopping the module, the queue and
 * its worker threads, the state machine (fxj__set_state), and the requests
 * (submit, get, list, cancel). Events and watchers are in job_events.c,
 * the store records in job_store.c, running one job in job_run.c; what
 * they share, and the lock order, in jobs_internal.h.
 */
#define _GNU_SOURCE
#include "training/jobs.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fx_version.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "models/models.h"
#include "training/jobs_internal.h"
#include "training/train.h"

/* ------------------------------------------------------------ helpers */

bool fxj__is_final(Fluxion__V1__JobState s)
{
    return s == FLUXION__V1__JOB_STATE__SUCCEEDED || s == FLUXION__V1__JOB_STATE__FAILED ||
           s == FLUXION__V1__JOB_STATE__CANCELLED;
}

const char *fxj__state_name(Fluxion__V1__JobState s)
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
ProtobufCMessage *fxj__msg_copy(const ProtobufCMessage *m)
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

Fluxion__V1__Job *fxj__job_copy(const Fluxion__V1__Job *r)
{
    return (Fluxion__V1__Job *)fxj__msg_copy(&r->base);
}

char *fxj__job_path(const fxj_jobs *j, int64_t id, const char *leaf)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%" PRId64 "%s%s", j->dir, id, leaf ? "/" : "", leaf ? leaf : "") < 0)
        return NULL;
    return p;
}

/* "12" -> 12; INVALID_ARGUMENT for anything but a positive decimal. */
int fxj__parse_id(const char *s, int64_t *id, char *err, size_t errlen)
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

/* ------------------------------------------------------ the jobs (mu) */

job *fxj__find_active(fxj_jobs *j, int64_t id)
{
    for (job *x = j->jobs; x; x = x->next)
        if (x->id == id)
            return x;
    return NULL;
}

void fxj__job_unref(job *x)
{
    if (--x->refs > 0)
        return;
    fxj__free_events(x);
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
    atomic_init(&x->preempt, false);
    return x;
}

/* Sets a final or running state, commits and announces it. */
void fxj__set_state(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *message)
{
    x->rec->state = s;
    if (s != FLUXION__V1__JOB_STATE__QUEUED) { /* a position and reason only while queued */
        x->rec->queue_position = 0;
        set_str(&x->rec->wait_reason, "");
    }
    if (s == FLUXION__V1__JOB_STATE__RUNNING && !x->rec->started_unix_ms)
        x->rec->started_unix_ms = fxu_now_ms();
    if (fxj__is_final(s)) {
        x->rec->finished_unix_ms = fxu_now_ms();
        if (s == FLUXION__V1__JOB_STATE__FAILED)
            set_str(&x->rec->error, message);
    }
    fxj__commit(j, x, 0, NULL);
    fxj__announce_state(j, x, s, message);
}

/* ------------------------------------------------------------ start/stop */

/* Loads the unfinished jobs into the scheduler: RUNNING ones first (they
 * resume from their checkpoints), then QUEUED, each group in submission
 * order. A job the scheduler cannot take (its device is no longer enabled)
 * fails. The RUNNING group is scheduled before the QUEUED one is loaded,
 * so the jobs a restart interrupted get the slots first whatever the
 * priorities. Under j->mu. */
static int restore_group(fxj_jobs *j, const char *state, bool resumed, char *err, size_t errlen)
{
    load_ctx c = { .state = state, .model = "" };
    int rc = fxj__load(j, &c, err, errlen);
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
        if (resumed) {
            x->resumed = true;
            x->rec->restarts++;
        }
        x->preempted = x->rec->preemptions > 0; /* its next start emits RESUMED */
        /* Also fills the dataset columns of rows written before the
         * store had them (they protect the datasets from deletion). */
        fxj__commit(j, x, 0, NULL);
        x->next = j->jobs;
        j->jobs = x;
        char serr[FXS_ERRLEN];
        if (fxj__sched_submit(j, x, serr, sizeof serr) != 0) {
            x->refs++;
            fxj__set_state(j, x, FLUXION__V1__JOB_STATE__FAILED, serr);
            fxj__job_unref(x);
        }
    }
    free(c.recs);
    if (c.n)
        fxl_log(FXL_INFO, "jobs", "jobs restored state=%s count=%d", state, c.n);
    if (resumed)
    fxj__schedule(j);
    return 0;
}

static int restore(fxj_jobs *j, char *err, size_t errlen)
{
    static const char *const states[] = { "RUNNING", "QUEUED" };
    pthread_mutex_lock(&j->mu);
    int rc = 0;
    for (int s = 0; s < 2 && !rc; s++)
        rc = restore_group(j, states[s], s == 0, err, errlen);
    pthread_mutex_unlock(&j->mu);
    return rc;
}

/* Whether a file name is base/fsutil.h's temporary name: .BASE.tmp.XXXXXX. */
static bool is_temp_name(const char *name)
{
    const char *t = name[0] == '.' ? strstr(name, ".tmp.") : NULL;
    return t && t != name && strlen(t + 5) == 6;
}

/* A kill while a checkpoint was being written leaves its temporary file
 * (.checkpoint.safetensors.tmp.XXXXXX) in the job's directory, where
 * nothing else would ever remove it: removed at start, before any job runs
 * (found by tests/integration/test_crash_injection.py). */
static void remove_temps(const fxj_jobs *j)
{
    DIR *d = opendir(j->dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue; /* job directories are named by their id */
        char *sub = fxu_strf("%s/%s", j->dir, e->d_name);
        DIR *s = sub ? opendir(sub) : NULL;
        struct dirent *f;
        while (s && (f = readdir(s)) != NULL) {
            if (!is_temp_name(f->d_name))
                continue;
            char *p = fxu_strf("%s/%s", sub, f->d_name);
            if (p && unlink(p) == 0)
                fxl_log(FXL_INFO, "jobs", "removed a temporary file path=%s", p);
            free(p);
        }
        if (s)
            closedir(s);
        free(sub);
    }
    if (d)
        closedir(d);
}

int fxj_jobs_start(fxdb_store *st, fxds_datasets *ds, fxsv_serving *sv, const fxj_jobs_opts *opts,
                   fxj_jobs **out, char *err, size_t errlen)
{
    if (!out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "jobs: no place for the handle");
    *out = NULL;
    if (!st || !ds)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "jobs: %s",
                        st ? "no datasets" : "no store");
    fxj_jobs *j = calloc(1, sizeof *j);
    if (!j)
        return fxu_oom(err, errlen);
    /* Absolute: tensorboard_dir in the records is for users' shells. */
    char *root = realpath(fxdb_store_dir(st), NULL);
    if (asprintf(&j->dir, "%s/jobs", root ? root : fxdb_store_dir(st)) < 0) {
        free(root);
        free(j);
        return fxu_oom(err, errlen);
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
    pthread_cond_init(&j->tick, NULL);
    pthread_cond_init(&j->idle, NULL);
    pthread_cond_init(&j->events, NULL);
    atomic_init(&j->stopping, false);
    int rc = fxu_mkdir_p(j->dir, err, errlen);
    if (!rc)
        remove_temps(j);
    if (!rc)
        rc = fxj__sched_init(j, err, errlen);
    if (!rc)
        rc = restore(j, err, errlen);
    if (!rc)
        rc = fxj__sched_ticker_start(j, err, errlen);
    if (rc) {
        fxj_jobs_free(j);
        return rc;
    }
    pthread_mutex_lock(&j->mu);
    fxj__schedule(j);
    pthread_mutex_unlock(&j->mu);
    fxl_log(FXL_INFO, "jobs", "jobs started cpu_slots=%d checkpoint_every_steps=%" PRId64,
            j->opts.workers, j->opts.checkpoint_every_steps);
    *out = j;
    return 0;
}

void fxj_jobs_stop(fxj_jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    bool was = j->stopped;
    j->stopped = true;
    atomic_store(&j->stopping, true);
    pthread_cond_broadcast(&j->tick);
    pthread_cond_broadcast(&j->events);
    pthread_mutex_unlock(&j->mu);
    if (was)
        return;
    fxj__sched_stop(j); /* running jobs checkpoint and their threads end */
    fxl_log(FXL_INFO, "jobs", "jobs stopped");
}

void fxj_jobs_free(fxj_jobs *j)
{
    if (!j)
        return;
    fxj_jobs_stop(j);
    for (job *x = j->jobs, *n; x; x = n) {
        n = x->next;
        fxj__job_unref(x);
    }
    fxj__sched_fini(j);
    pthread_cond_destroy(&j->tick);
    pthread_cond_destroy(&j->idle);
    pthread_cond_destroy(&j->events);
    pthread_mutex_destroy(&j->mu);
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
    /* before the devices are placed: bf16 on a GPU named is a precision error */
    int rc = fxt_check_precision(spec, NULL, NULL, err, errlen);
    if (!rc)
        rc = fxj__gate_check(spec, err, errlen);
    fxj__world_plan wp; /* data-parallel ranks: peers and devices (job_world.c) */
    if (!rc && spec->world_size > 1 && spec->world_size <= 256 &&
        (!spec->n_placement || spec->n_placement == (size_t)spec->world_size))
        rc = fxj__world_place(j, spec, &wp, err, errlen);
    if (rc)
        return rc;
    fx_device dev;
    rc = fxsv_devices_resolve(j->opts.devices, spec->device, "spec.device", &dev, err, errlen);
    return rc ? rc : fxt_check_precision(spec, &dev, NULL, err, errlen);
}

/* Everything that can be checked before queueing; rec gets the facts to
 * record (base version, dataset checksum). */
static int validate(fxj_jobs *j, const Fluxion__V1__JobSpec *spec, Fluxion__V1__Job *rec,
                    int64_t *model_id, char *sha, uint64_t *mem, char *err, size_t errlen)
{
    int rc = check_fields(j, spec, err, errlen);
    if (rc)
        return rc;
    fxdb_model_rec mr;
    if ((rc = fxdb_store_get_model(j->st, spec->model, &mr, err, errlen)))
        return rc;
    *model_id = mr.id; /* the row is added only while this model has the name */
    fxg_graph *g = NULL;
    rc = fxm_resolve_version(&mr, spec->model_version, &rec->base_version, err, errlen);
    if (!rc) /* the base version's spec revision */
        rc = fxm_use_version_spec(j->st, &mr, rec->base_version, err, errlen);
    if (!rc)
        rc = fxm_graph_of(&mr, j->opts.max_params, &g, err, errlen);
    fxdb_model_rec_free(&mr);
    fxds_dataset *train = NULL, *val = NULL;
    if (!rc)
        rc = fxj__open_data(j, spec->dataset, "spec.dataset", &train, err, errlen);
    if (!rc && spec->validation_dataset && *spec->validation_dataset)
        rc = fxj__open_data(j, spec->validation_dataset, "spec.validation_dataset", &val, err,
                            errlen);
    if (!rc)
        rc = fxt_validate(spec, g, fxds_dataset_columns(train),
                          val ? fxds_dataset_columns(val) : NULL, err, errlen);
    if (!rc)
        snprintf(sha, 65, "%s", fxds_dataset_sha256(train));
    if (!rc) /* the scheduler's estimate (job_sched.c), kept for a move to a GPU */
        *mem = fxj__memory_formula(fx_params_numel(fxg_params(g)), spec->batch_size);
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
    uint64_t mem = 0;
    int64_t model_id = 0;
    int rc = validate(j, spec, &rec, &model_id, sha, &mem, err, errlen);
    if (rc)
        return rc;
    rec.spec = (Fluxion__V1__JobSpec *)spec;
    rec.state = FLUXION__V1__JOB_STATE__QUEUED;
    rec.created_unix_ms = fxu_now_ms();
    rec.dataset_sha256 = sha;
    rec.engine_version = FX_VERSION_STRING;
    Fluxion__V1__Job *copy = fxj__job_copy(&rec);
    if (!copy) {
        fxu_seterr(err, errlen, "jobs: out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    pthread_mutex_lock(&j->mu);
    int64_t id = 0;
    char idbuf[24];
    rc = fxj__save(j, copy, model_id, &id, err, errlen);
    job *x = NULL;
    if (!rc) {
        snprintf(idbuf, sizeof idbuf, "%" PRId64, id);
        set_str(&copy->id, idbuf);
        char *tb = fxj__job_path(j, id, "tb");
        set_str(&copy->tensorboard_dir, tb);
        free(tb);
    }
    /* Only these two fail for want of memory: a save that failed keeps its
     * own message (a full disk is RESOURCE_EXHAUSTED too, and "out of
     * memory" would send its reader the wrong way). */
    if (!rc && (!(x = job_new(copy, id)) || !(*out = fxj__job_copy(copy)))) {
        fxu_seterr(err, errlen, "jobs: out of memory");
        rc = FXS_RESOURCE_EXHAUSTED;
    }
    if (rc) {
        pthread_mutex_unlock(&j->mu);
        free(x);
        fluxion__v1__job__free_unpacked(copy, NULL);
        return rc;
    }
    x->memory_bytes = mem;
    x->next = j->jobs;
    j->jobs = x;
    fxj__announce(j, x, FLUXION__V1__JOB_EVENT__KIND__STATE, "queued");
    char serr[FXS_ERRLEN];
    if (fxj__sched_submit(j, x, serr, sizeof serr) != 0) {
        /* Validated above: only a device disabled since, or no memory. */
        x->refs++;
        fxj__set_state(j, x, FLUXION__V1__JOB_STATE__FAILED, serr);
        fxj__job_unref(x);
    }
    fxj__schedule(j);
    pthread_mutex_unlock(&j->mu);
    fxl_log(FXL_INFO, "jobs", "job queued job=%" PRId64 " model=%s dataset=%s", id, spec->model,
            spec->dataset);
    return 0;
}

int fxj_jobs_get(fxj_jobs *j, const char *id, Fluxion__V1__Job **out, char *err, size_t errlen)
{
    int64_t n;
    int rc = fxj__parse_id(id, &n, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&j->mu);
    job *x = fxj__find_active(j, n);
    if (x) {
        *out = fxj__job_copy(x->rec);
        if (!*out) {
            fxu_seterr(err, errlen, "jobs: out of memory");
            rc = FXS_RESOURCE_EXHAUSTED;
        }
    } else {
        rc = fxj__load_one(j, n, out, err, errlen);
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
    load_ctx c = { .state = state ? fxj__state_name(state) : "", .model = model ? model : "" };
    pthread_mutex_lock(&j->mu);
    int rc = fxj__load(j, &c, err, errlen);
    /* Running jobs: the in-memory record has the latest progress. */
    for (int i = 0; !rc && i < c.n; i++) {
        job *x = fxj__find_active(j, strtoll(c.recs[i]->id, NULL, 10));
        Fluxion__V1__Job *live = x ? fxj__job_copy(x->rec) : NULL;
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
    int rc = fxj__parse_id(id, &n, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&j->mu);
    job *x = fxj__find_active(j, n);
    if (!x) {
        Fluxion__V1__Job *r = NULL;
        rc = fxj__load_one(j, n, &r, err, errlen);
        if (!rc) {
            fxu_seterr(err, errlen, "job %" PRId64 " already finished (%s)", n,
                   fxj__state_name(r->state));
            fluxion__v1__job__free_unpacked(r, NULL);
            rc = FXS_FAILED_PRECONDITION;
        }
    } else if (x->pending) {
        x->pending = false;
        char serr[FXS_ERRLEN];
        fxsc_remove(j->sc, x->id, fxu_now_ms(), serr, sizeof serr);
        x->refs++;
        fxj__set_state(j, x, FLUXION__V1__JOB_STATE__CANCELLED,
                  x->resumed ? "cancelled before it resumed" : "cancelled before it started");
        *out = fxj__job_copy(x->rec);
        fxj__job_unref(x);
        fxj__schedule(j);
    } else {
        /* RUNNING: the worker stops it at a step boundary. */
        atomic_store(&x->cancel, true);
        *out = fxj__job_copy(x->rec);
        fxl_log(FXL_INFO, "jobs", "cancel requested job=%" PRId64, n);
    }
    pthread_mutex_unlock(&j->mu);
    if (!rc && !*out) {
        fxu_seterr(err, errlen, "jobs: out of memory");
        rc = FXS_RESOURCE_EXHAUSTED;
    }
    return rc;
}

int fxj_jobs_resume(fxj_jobs *j, const char *id, Fluxion__V1__Job **out, char *err, size_t errlen)
{
    *out = NULL;
    if (atomic_load(&j->stopping))
        return fxu_fail(err, errlen, FXS_UNAVAILABLE, "the server is shutting down: no resumes");
    int64_t n;
    int rc = fxj__parse_id(id, &n, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&j->mu);
    job *x = fxj__find_active(j, n);
    Fluxion__V1__Job *rec = NULL;
    if (x)
        rc = fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                      "job %" PRId64 " is %s; only a cancelled job can be resumed", n,
                      fxj__state_name(x->rec->state));
    else
        rc = fxj__load_one(j, n, &rec, err, errlen);
    if (!rc && rec->state != FLUXION__V1__JOB_STATE__CANCELLED)
        rc = fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                      "job %" PRId64 " is %s; only a cancelled job can be resumed", n,
                      fxj__state_name(rec->state));
    char *path = rc ? NULL : fxj__job_path(j, n, "checkpoint.safetensors");
    if (!rc && !path)
        rc = fxu_oom(err, errlen);
    if (!rc && access(path, F_OK) != 0)
        rc = fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                      "job %" PRId64 " has no checkpoint to resume from (it was cancelled "
                      "before its first one): submit it again",
                      n);
    free(path);
    if (!rc && !(x = job_new(rec, n)))
        rc = fxu_oom(err, errlen);
    if (rc) {
        pthread_mutex_unlock(&j->mu);
        if (rec)
            fluxion__v1__job__free_unpacked(rec, NULL);
        return rc;
    }
    /* As a job found RUNNING at start: its run reads the checkpoint. */
    rec->state = FLUXION__V1__JOB_STATE__QUEUED;
    rec->finished_unix_ms = 0;
    set_str(&rec->assigned_device, "");
    x->resumed = true;
    x->requested = true;
    x->preempted = rec->preemptions > 0;
    /* The scheduler first: a run cancelled a moment ago is CANCELLED (and
     * retired) before its thread ends and leaves the scheduler, and a
     * resume in between must not mark the job FAILED (test_stress.py). */
    char serr[FXS_ERRLEN];
    int src = fxj__sched_submit(j, x, serr, sizeof serr);
    if (src == FXS_ALREADY_EXISTS) {
        pthread_mutex_unlock(&j->mu);
        fxj__job_unref(x); /* and rec with it: nothing was stored */
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "job %" PRId64 " is still "
                        "stopping (its cancelled run has not ended yet): resume it again in "
                        "a moment", n);
    }
    fxj__commit(j, x, 0, NULL);
    x->next = j->jobs;
    j->jobs = x;
    char msg[96];
    snprintf(msg, sizeof msg, "queued to resume from checkpoint step %" PRId64,
             rec->checkpoint_step);
    fxj__announce(j, x, FLUXION__V1__JOB_EVENT__KIND__STATE, msg);
    if (src != 0) {
        x->refs++;
        fxj__set_state(j, x, FLUXION__V1__JOB_STATE__FAILED, serr);
        *out = fxj__job_copy(x->rec); /* before the unref: a final job is retired, x freed */
        fxj__job_unref(x);
    } else {
        *out = fxj__job_copy(x->rec);
    }
    fxj__schedule(j);
    pthread_mutex_unlock(&j->mu);
    fxl_log(FXL_INFO, "jobs", "job resumed on request job=%" PRId64, n);
    if (!*out)
        return fxu_oom(err, errlen);
    return 0;
}
