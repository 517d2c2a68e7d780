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

#include "sched/sched.h"
#include "training/jobs.h"
#include "training/train.h"

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
    bool requested;        /* resumed: by ResumeJob (a cancelled job) */
    bool pending;          /* QUEUED in the scheduler core (no thread runs it) */
    bool preempted;        /* it was preempted: its next run emits RESUMED */
    bool requeued;         /* its run ended by a preemption or a lost rank (job_sched.c) */
    bool lost_rank;        /* its run ended by a lost rank: its next run says so */
    int lost_in_a_row;     /* data-parallel runs lost without a newer checkpoint */
    int64_t lost_at_step;  /* the checkpoint step of the last lost run */
    atomic_bool cancel;    /* cancel requested while running */
    atomic_bool preempt;   /* PREEMPT decided: checkpoint and requeue at the next step */
    char preempt_for[FXSC_REASON_MAX]; /* PREEMPT's reason: for whom */
    uint64_t memory_bytes; /* the scheduler's estimate (job_sched.c) */
    int64_t queued_at_ms;  /* last QUEUED_AT event (rate limit) */
    bool queued_at_dirty;  /* position or reason changed since it */
    uint64_t seq;          /* last event's */
    event *events, *events_tail;
    int n_minor;
    struct job *next;      /* in j->jobs */
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
    pthread_cond_t tick;   /* wakes the scheduler's timer (stopping) */
    pthread_cond_t idle;   /* a job's thread ended */
    pthread_cond_t events; /* an event was added, or stopping */
    job *jobs;             /* active jobs */
    atomic_bool stopping;
    bool stopped;
    fxsc *sc;              /* the scheduler core (job_sched.c) */
    char **teams;          /* teams whose configuration the core has */
    int n_teams;
    int n_running;         /* job threads alive */
    bool ticking;          /* the timer thread runs */
    pthread_t ticker;
    struct fxj__resv *reserved; /* served models the core holds a reservation for */
    int n_reserved;
    /* peers' ranks in the core (job_sched.c, fxj_jobs_admit_rank) */
    int64_t rank_next;     /* ids FXJ__RANK_ID_BASE + n */
    int64_t rank_admitting; /* the rank whose START the pass looks for; 0: none */
    bool rank_admitted;
};

/* Ids of peers' ranks in the scheduler core (never a job's id). */
#define FXJ__RANK_ID_BASE ((int64_t)1 << 62)

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
int fxj__save(fxj_jobs *j, const Fluxion__V1__Job *rec, int64_t model_id, int64_t *id, char *err,
              size_t errlen);
int fxj__load(fxj_jobs *j, load_ctx *c, char *err, size_t errlen);
int fxj__load_one(fxj_jobs *j, int64_t id, Fluxion__V1__Job **out, char *err, size_t errlen);
/* The result and rec (SUCCEEDED) in one transaction, the promotion gate
 * deciding inside it: rec->promoted and rec->promotion get the decision. */
int fxj__store_result(fxj_jobs *j, int64_t id, Fluxion__V1__Job *rec, const void *result,
                      size_t len, const char *source, int64_t *version, char *err,
                      size_t errlen);

/* job_gate.c: the promotion gate (docs/versions.md). */
#define FXJ_METRIC_MAX 64
typedef struct {
    Fluxion__V1__Job *rec;          /* gets promoted, promotion */
    char metric_name[FXJ_METRIC_MAX];
    double metric;                  /* recorded with the version */
    bool have;                      /* the job reported it */
    bool diverged;                  /* its loss is not finite */
} fxj_gate;
/* The spec's promote fields (INVALID_ARGUMENT naming the field). */
int fxj__gate_check(const Fluxion__V1__JobSpec *spec, char *err, size_t errlen);
/* From rec's spec and final progress. */
void fxj__gate_init(fxj_gate *g, Fluxion__V1__Job *rec);
/* fxdb_gate.decide (store.h) with an fxj_gate as ctx. */
int fxj__gate_decide(void *ctx, int64_t production, const char *cur_name, bool cur_has,
                     double cur, bool *promote, char *err, size_t errlen);

/* job_events.c: events (under j->mu). */
void fxj__free_events(job *x);
void fxj__announce(fxj_jobs *j, job *x, int kind, const char *message);
int fxj__commit(fxj_jobs *j, job *x, int kind, const char *message);
void fxj__announce_state(fxj_jobs *j, job *x, Fluxion__V1__JobState s, const char *message);

/* job_sched.c: the scheduler core's glue. init/fini at start and free;
 * submit puts a job (QUEUED or resumed) into the core; schedule (under
 * j->mu, after every event) carries out the core's decisions and keeps the
 * queue positions and reasons current; the ticker calls it every 200 ms. */
int fxj__sched_init(fxj_jobs *j, char *err, size_t errlen);
int fxj__sched_submit(fxj_jobs *j, job *x, char *err, size_t errlen);
void fxj__schedule(fxj_jobs *j);
int fxj__sched_ticker_start(fxj_jobs *j, char *err, size_t errlen);
/* Stops the ticker and waits for the job threads (not under j->mu). */
void fxj__sched_stop(fxj_jobs *j);
void fxj__sched_fini(fxj_jobs *j);
/* The memory a job needs on a GPU (documented in job_sched.c): from its
 * model's parameter count and batch size; estimate_memory reads the model
 * (0 when it cannot). */
uint64_t fxj__memory_formula(int64_t numel, int64_t batch_size);
uint64_t fxj__estimate_memory(fxj_jobs *j, const Fluxion__V1__JobSpec *spec,
                              int64_t base_version);

/* job_run.c: running one job (called by its thread without j->mu). */
int fxj__open_data(fxj_jobs *j, const char *name, const char *what, fxds_dataset **out,
                   char *err, size_t errlen);
void fxj__run_job(fxj_jobs *j, job *x);
/* job_world.c: a data-parallel job's world (world_size > 1; see the top
 * of job_world.c for the seam remote ranks use). */
typedef struct {
    int world;          /* ranks in all */
    int nlocal, nremote;
    int first_local;    /* 0: rank 0 is here */
    fx_device device;   /* the local ranks' device */
    char request[64];   /* as the spec names it ("cpu", "gpu", ""), for the scheduler */
} fxj__world_plan;
/* Where the ranks of spec run: FAILED_PRECONDITION for a peer that is not
 * configured or local ranks on several devices, the device resolution's
 * errors (naming placement[i] or spec.device). */
int fxj__world_place(const fxj_jobs *j, const Fluxion__V1__JobSpec *spec, fxj__world_plan *out,
                     char *err, size_t errlen);
typedef struct {
    fxj_jobs *j;
    job *x;
    const fxj__world_plan *plan;
    fxg_graph *g0;      /* rank 0's graph (the job's) */
    const fxds_columns *train, *val;
    const void *ckpt;   /* to resume from, or NULL */
    size_t ckpt_len;
    const fxt_hooks *hooks; /* rank 0's (the job's) */
    Fluxion__V1__JobProgress **final;
} fxj__world_args;
/* Runs every local rank (rank 0 on the calling thread) to the end: see
 * job_world.c for the outcome. */
fxt_result fxj__world_run(const fxj__world_args *a, void **result, size_t *result_len,
                          char *err, size_t errlen);

/* job_sched.c: the served models' reservations the core holds, forgotten. */
void fxj__reservations_free(fxj_jobs *j);

/* ---- job_peers.c: worlds across daemons (training/ranks.h) */

/* fxt_run as rank 0 of a world whose other ranks run on peers (the
 * world's plan has nremote > 0: fxj__world_place). FXT_LOST when the world
 * could not form (*formed false: a peer refused or is unreachable; the
 * job waits for it) or lost a rank later (err names the peer). */
fxt_result fxj__train_peers(fxj_jobs *j, job *x, const fxt_hooks *hooks, fxg_graph *g,
                            const fxds_columns *train, const fxds_columns *val, const void *ckpt,
                            size_t ckpt_len, void **result, size_t *rlen,
                            Fluxion__V1__JobProgress **final, bool *formed, char *err,
                            size_t errlen);

#endif
