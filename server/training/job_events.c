/*
 * job_events.c - a job's events and their watchers. Every change of a
 * job's record that watchers hear of is committed to the store first
 * (fxj__commit), then appended to the job's event list (fxj__announce); a
 * final state removes the checkpoint and retires the job from the active
 * list. Watchers (fxj_watch_*) read the list with a cursor and wait on
 * j->events. All of it runs under j->mu (lock order: jobs_internal.h).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "training/jobs_internal.h"

/* PROGRESS/EVALUATION/CHECKPOINT/QUEUED_AT events kept per job for slow
 * watchers; STATE, PREEMPTED and RESUMED events are always kept (a job has
 * only a handful). */
#define MAX_MINOR_EVENTS 32

static bool is_minor(int kind)
{
    return kind == FLUXION__V1__JOB_EVENT__KIND__PROGRESS ||
           kind == FLUXION__V1__JOB_EVENT__KIND__EVALUATION ||
           kind == FLUXION__V1__JOB_EVENT__KIND__CHECKPOINT ||
           kind == FLUXION__V1__JOB_EVENT__KIND__QUEUED_AT;
}

struct fxj_watch {
    fxj_jobs *j;
    job *job;                       /* NULL: static snapshot of a finished job */
    Fluxion__V1__Job *static_rec;
    uint64_t cursor;
    bool snapshot_sent, done;
};

/* ---------------------------------------------------------- events (mu) */

void fxj__free_events(job *x)
{
    for (event *e = x->events, *n; e; e = n) {
        n = e->next;
        free(e->packed);
        free(e);
    }
    x->events = x->events_tail = NULL;
}

/* Drops the oldest minor event (a slow watcher skips it). */
static void prune_minor(job *x)
{
    event **pp = &x->events, *prev = NULL;
    for (; *pp; prev = *pp, pp = &(*pp)->next) {
        event *e = *pp;
        if (!is_minor(e->kind))
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
void fxj__announce(fxj_jobs *j, job *x, int kind, const char *message)
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
    if (is_minor(kind) && ++x->n_minor > MAX_MINOR_EVENTS)
        prune_minor(x);
    pthread_cond_broadcast(&j->events);
}

/* Commits the job's record, then announces it (kind 0: not announced). */
int fxj__commit(fxj_jobs *j, job *x, int kind, const char *message)
{
    char err[FXS_ERRLEN];
    int64_t id = x->id;
    int rc = fxj__save(j, x->rec, 0, &id, err, sizeof err);
    if (rc)
        fxl_log(FXL_ERROR, "jobs", "cannot save job=%" PRId64 " error=\"%s\"", x->id, err);
    if (kind)
        fxj__announce(j, x, kind, message);
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
    fxj__job_unref(x);
}

static void remove_checkpoint(fxj_jobs *j, int64_t id)
{
    char *path = fxj__job_path(j, id, "checkpoint.safetensors");
    if (path)
        unlink(path);
    free(path);
}

/* After a state is committed: a final state makes the checkpoint useless
 * (only then), except CANCELLED's, which ResumeJob continues from;
 * watchers hear of it, the log says so, a final job retires. */
void fxj__announce_state(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *message)
{
    if (fxj__is_final(s) && s != FLUXION__V1__JOB_STATE__CANCELLED)
        remove_checkpoint(j, x->id);
    fxj__announce(j, x, FLUXION__V1__JOB_EVENT__KIND__STATE, message);
    char quoted[FXS_ERRLEN]; /* logfmt: the value's own quotes become ' */
    snprintf(quoted, sizeof quoted, "%s", message ? message : "");
    for (char *q = quoted; (q = strchr(q, '"'));)
        *q = '\'';
    fxl_log(s == FLUXION__V1__JOB_STATE__FAILED ? FXL_WARN : FXL_INFO, "jobs",
            "job state job=%" PRId64 " model=%s state=%s msg=\"%s\"", x->id,
            x->rec->spec ? x->rec->spec->model : "", fxj__state_name(s), quoted);
    if (fxj__is_final(s))
        retire(j, x);
}

/* ------------------------------------------------------------ watching */

int fxj_watch_open(fxj_jobs *j, const char *id, fxj_watch **out, char *err, size_t errlen)
{
    *out = NULL;
    int64_t n;
    int rc = fxj__parse_id(id, &n, err, errlen);
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
    job *x = fxj__find_active(j, n);
    if (x) {
        x->refs++;
        w->job = x;
    } else {
        rc = fxj__load_one(j, n, &w->static_rec, err, errlen);
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
        w->done = fxj__is_final(rec->state);
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
        fxj__is_final((*out)->job->state))
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
        fxj__job_unref(w->job);
        pthread_mutex_unlock(&w->j->mu);
    }
    if (w->static_rec)
        fluxion__v1__job__free_unpacked(w->static_rec, NULL);
    free(w);
}
