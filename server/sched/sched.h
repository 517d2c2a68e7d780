/*
 * sched.h - the scheduler's pure core (prefix fxsc_): state + event ->
 * decisions. No threads, no I/O, no clock of its own: every call takes
 * now_ms, so simulations run thousands of jobs in a unit test
 * (tests/unit/test_sched_sim.c). Not thread-safe: its owner (training/'s
 * jobs module) calls it under its own lock.
 *
 * The model (docs/scheduling.md):
 *  - Devices: "cpu" (kind CPU) and "cuda:N" (kind GPU), each with a number
 *    of slots (training jobs it runs at once: CPU thread slots, 1 per GPU)
 *    and optionally memory (bytes the scheduler may hand out; 0: not
 *    tracked). Served models are reservations of memory on a device: never
 *    preempted, never lent.
 *  - Teams: a weight (fair share), a nominal quota of slots per kind
 *    (guaranteed), a borrowing limit beyond it (from idle capacity), an
 *    optional budget of device-seconds per window, a maximum of running
 *    jobs, a cap per kind on the memory its running jobs' estimates hold
 *    (a job over it waits; memory is never a reason to preempt). A team
 *    with no quota at all (nominal 0 and borrow 0 for a kind) is
 *    best-effort for that kind: it may use any idle slot, and everything
 *    it runs counts as above nominal (the first to be reclaimed).
 *  - Jobs: a team, a priority, preemptible or not, a device (a name, or any
 *    device of a kind), slots wanted (all-or-nothing), a memory estimate.
 *  - Admission order: priority (high first), then the team's decayed usage
 *    (device-seconds, halving every half_life_ms) divided by its weight,
 *    then submit time. A job starts when its device has the slots and the
 *    memory, and its team stays within nominal + borrowing, its budget and
 *    its max running jobs. (S1, core.c/pass.c:) jobs that fit their team's
 *    nominal quota are admitted before jobs that borrow (nominal is
 *    guaranteed); a queued job counts one priority level higher per
 *    aging_ms waited, up to HIGH (no starvation); a job that fits its
 *    team's limits but not its device holds what is free there (no
 *    backfill: a 2-slot job is not starved by 1-slot jobs). A team whose
 *    budget is spent has its preemptible jobs preempted (the one
 *    preemption that does not wait for min_run_ms).
 *  - Preemption: a job that cannot start for want of slots, and whose team
 *    is within its nominal quota for that kind, reclaims from teams above
 *    theirs (the team furthest above its nominal first, then the lowest
 *    priority, then the least work lost since its last checkpoint); inside
 *    a team only a lower priority job is preempted. Only preemptible jobs
 *    that have run at least min_run_ms (no thrashing) are preempted. A
 *    PREEMPT decision is carried out by the owner (checkpoint at the next
 *    step) and reported back with fxsc_preempted, after which the job is
 *    queued again (keeping its submit time).
 */
#ifndef FXSC_SCHED_H
#define FXSC_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FXSC_CPU = 0, FXSC_GPU = 1, FXSC_KINDS = 2 } fxsc_kind;
typedef enum { FXSC_LOW = 1, FXSC_NORMAL = 2, FXSC_HIGH = 3 } fxsc_priority;

#define FXSC_NAME_MAX 64     /* device and team names */
#define FXSC_REASON_MAX 160

typedef struct {
    int64_t half_life_ms;    /* usage decay; 0: 1 hour */
    int64_t min_run_ms;      /* a job runs at least this long before it may be preempted; 0: 60 s */
    /* (added by S1) Aging, against starvation: a queued job's place in the
     * order counts one priority level higher per aging_ms it has waited
     * (up to HIGH; preemption still uses its own priority). 0: half_life_ms;
     * < 0: no aging. */
    int64_t aging_ms;
} fxsc_opts;

typedef struct {
    char name[FXSC_NAME_MAX];    /* "cpu", "cuda:0" */
    fxsc_kind kind;
    int slots;                   /* >= 1 */
    uint64_t memory_bytes;       /* 0: not tracked */
} fxsc_device;

typedef struct {
    double weight;                     /* > 0; 0: 1 */
    int nominal_slots[FXSC_KINDS];     /* 0: none */
    int borrow_slots[FXSC_KINDS];      /* beyond nominal */
    double budget_device_seconds;      /* per window; 0: none */
    int64_t budget_window_ms;          /* 0: 24 h */
    int max_running;                   /* 0: no limit */
    /* bytes its running jobs' estimates may hold on devices of the kind; 0: no cap */
    uint64_t max_memory[FXSC_KINDS];
} fxsc_team_cfg;

typedef struct {
    int64_t id;                        /* > 0, unique */
    char team[FXSC_NAME_MAX];
    fxsc_priority priority;
    bool preemptible;
    char device[FXSC_NAME_MAX];        /* a device's name, or "" for any device of kind */
    fxsc_kind kind;
    int slots;                         /* >= 1: all on one device (data-parallel spans are issue 15) */
    uint64_t memory_bytes;             /* estimate; 0: unknown */
    int64_t submit_ms;
} fxsc_job;

typedef enum { FXSC_START = 1, FXSC_PREEMPT = 2 } fxsc_action;

typedef struct {
    fxsc_action action;
    int64_t job;
    char device[FXSC_NAME_MAX];        /* START: where */
    char reason[FXSC_REASON_MAX];      /* PREEMPT: for whom ("job 7 of team a (within nominal)") */
} fxsc_decision;

typedef struct fxsc fxsc;

/* 0 or an fxs_status code (base/status.h) with a message in err. */
int fxsc_new(const fxsc_opts *o, fxsc **out, char *err, size_t errlen);
void fxsc_free(fxsc *s);

int fxsc_add_device(fxsc *s, const fxsc_device *d, char *err, size_t errlen);
/* Sets (or replaces) a team's configuration; a team never set has the
 * default (weight 1, no quota). */
int fxsc_set_team(fxsc *s, const char *team, const fxsc_team_cfg *cfg, char *err, size_t errlen);

/* Events. */
int fxsc_submit(fxsc *s, const fxsc_job *j, int64_t now_ms, char *err, size_t errlen);
/* A queued job leaves (cancelled), or a running one ended (any outcome):
 * its slots and memory are free. NOT_FOUND for an unknown id. */
int fxsc_remove(fxsc *s, int64_t id, int64_t now_ms, char *err, size_t errlen);
/* The owner carried out a PREEMPT: the job is queued again. */
int fxsc_preempted(fxsc *s, int64_t id, int64_t now_ms, char *err, size_t errlen);
/* A running job wrote a checkpoint (the work a preemption would lose
 * restarts from here). */
int fxsc_checkpointed(fxsc *s, int64_t id, int64_t now_ms);
/* A queued job's priority or device changes (FAILED_PRECONDITION when it
 * is not queued). device NULL: unchanged. prio 0: unchanged. An unknown
 * device, or one the job cannot fit: INVALID_ARGUMENT. */
int fxsc_update(fxsc *s, int64_t id, fxsc_priority prio, const char *device, fxsc_kind kind,
                char *err, size_t errlen);
/* Served models: memory reserved on a device (key: the model's); 0 bytes
 * removes it. */
int fxsc_reserve(fxsc *s, const char *key, const char *device, uint64_t bytes, char *err,
                 size_t errlen);

/* Decisions at now_ms: up to max, in *out (*n gets the count). Starting a
 * job is decided at most once (the job is then RUNNING in the core); a
 * PREEMPT is decided once per job until fxsc_preempted or fxsc_remove. */
int fxsc_decide(fxsc *s, int64_t now_ms, fxsc_decision *out, int max, int *n);

/* ------------------------------------------------------------ visibility */

typedef struct {
    int64_t id;
    char team[FXSC_NAME_MAX];
    bool running;
    fxsc_priority priority;
    bool preemptible;
    char device[FXSC_NAME_MAX];        /* running: where; queued: asked ("" any of kind) */
    int position;                      /* queued: 1 = next */
    char reason[FXSC_REASON_MAX];      /* queued: "team a at quota 2/2 cpu slots", "waiting for cpu: 1/1 slots in use", ... */
    int64_t submit_ms, start_ms;
    int preemptions;
    uint64_t memory_bytes;
} fxsc_job_view;

typedef struct {
    char name[FXSC_NAME_MAX];
    int slots, slots_used;
    uint64_t memory_bytes, memory_reserved, memory_used;
    int reservations;
} fxsc_device_view;

typedef struct {
    char team[FXSC_NAME_MAX];
    double weight;
    int running, queued, slots_used, nominal_slots, borrow_slots;
    double usage, share, fair_share;
    double budget_used, budget;
    int preemptions;
} fxsc_team_view;

typedef struct {
    fxsc_job_view *jobs;       /* running first, then queued by position */
    int n_jobs;
    fxsc_device_view *devices;
    int n_devices;
    fxsc_team_view *teams;
    int n_teams;
} fxsc_view;

/* A snapshot at now_ms (positions and reasons as the next decide would
 * see them). Free with fxsc_view_free. */
int fxsc_snapshot(fxsc *s, int64_t now_ms, fxsc_view *out, char *err, size_t errlen);
void fxsc_view_free(fxsc_view *v);

#ifdef __cplusplus
}
#endif
#endif
