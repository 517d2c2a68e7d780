/*
 * jobs_internal.h - what jobs.c, job_events.c, job_store.c and job_run.c
 * share: the module's state, a job, an event, and the functions one file
 * calls in another (internal prefix fxj__). Not for use outside
 * server/training/ (jobs.h is the module's API).
 */
#ifndef FXJ_JOBS_INTERNAL_H
#define FXJ_JOBS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "training/jobs.h"

/* One of a job's events, packed as a fluxion.v1.JobEvent (job_events.c). */
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

/*
 * Locking: one mutex (j->mu) guards the in-memory jobs, their events and
 * the pending queue; the store's own lock is taken inside it (never the
 * other way round), so a state is committed and announced in one critical
 * section and a watcher never sees an event the store does not have.
 * Training itself and the writing of checkpoint files run outside j->mu.
 */
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

/* jobs.c: helpers. */
bool fxj__is_final(Fluxion__V1__JobState s);
const char *fxj__state_name(Fluxion__V1__JobState s);
ProtobufCMessage *fxj__msg_copy(const ProtobufCMessage *m);
Fluxion__V1__Job *fxj__job_copy(const Fluxion__V1__Job *r);
/* DIR/jobs/<id>[/leaf]; NULL when out of memory. */
char *fxj__job_path(const fxj_jobs *j, int64_t id, const char *leaf);
int fxj__parse_id(const char *s, int64_t *id, char *err, size_t errlen);

/* jobs.c: the active jobs and the state machine (under j->mu). */
job *fxj__find_active(fxj_jobs *j, int64_t id);
void fxj__job_unref(job *x);
void fxj__set_state(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *message);

/* job_store.c: the records in the store's jobs table. */
typedef struct {
    const char *state, *model; /* filters ("": any) */
    int64_t id;                /* > 0: that row only */
    Fluxion__V1__Job **recs;
    int n;
} load_ctx;
int fxj__save(fxj_jobs *j, const Fluxion__V1__Job *rec, int64_t *id, char *err, size_t errlen);
int fxj__load(fxj_jobs *j, load_ctx *c, char *err, size_t errlen);
int fxj__load_one(fxj_jobs *j, int64_t id, Fluxion__V1__Job **out, char *err, size_t errlen);
int fxj__store_result(fxj_jobs *j, int64_t id, const Fluxion__V1__Job *rec, const void *result,
                      size_t len, const char *source, int64_t *version, char *err,
                      size_t errlen);

/* job_events.c: events (under j->mu). */
void fxj__free_events(job *x);
void fxj__announce(fxj_jobs *j, job *x, int kind, const char *message);
int fxj__commit(fxj_jobs *j, job *x, int kind, const char *message);
void fxj__announce_state(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *message);

/* job_run.c: running one job (called by a worker without j->mu). */
int fxj__open_data(fxj_jobs *j, const char *name, const char *what, fxds_dataset **out,
                   char *err, size_t errlen);
void fxj__run_job(fxj_jobs *j, job *x);

#endif
