/*
 * core_internal.h - the scheduler core's state, shared by core.c (state,
 * events, snapshot) and pass.c (the admission pass: order, starts,
 * preemptions, reasons). Not an API: only server/sched/ includes it.
 */
#ifndef FXSC_CORE_INTERNAL_H
#define FXSC_CORE_INTERNAL_H

#include "sched/sched.h"

typedef struct {
    fxsc_device d;
    int slots_used;          /* running jobs (preemption pending included) */
    uint64_t mem_used;       /* running jobs' estimates */
    uint64_t mem_reserved;   /* served models' reservations */
    int reservations;
} fxsc__dev;

typedef struct {
    char *key;
    int dev;
    uint64_t bytes;
} fxsc__resv;

typedef struct {
    char name[FXSC_NAME_MAX];
    fxsc_team_cfg cfg;           /* defaults filled: weight > 0, window > 0 */
    double usage[FXSC_KINDS];    /* decayed slot-seconds */
    double budget_used;          /* slot-seconds in the current window */
    int64_t window;              /* index of the current budget window */
    int slots_used[FXSC_KINDS];  /* running jobs */
    uint64_t mem_used[FXSC_KINDS]; /* running jobs' memory estimates */
    int running, queued;
    int preemptions;
} fxsc__team;

typedef struct {
    fxsc_job j;
    int team;                    /* index in s->teams */
    int want_dev;                /* j.device's index; -1: any of j.kind */
    bool running;
    int dev;                     /* running: where (index) */
    int64_t start_ms, ckpt_ms;   /* running: since; last checkpoint */
    int64_t queued_ms;           /* queued: since (aging) */
    bool preempt_pending;        /* running: a PREEMPT was decided */
    int64_t preempt_for;         /* the job it was preempted for (0: budget) */
    int claim_dev;               /* queued: device its victims free, or -1 */
    int preemptions;
} fxsc__job;

struct fxsc {
    fxsc_opts o;                 /* defaults filled */
    fxsc__dev *devs;
    int n_devs, cap_devs;
    fxsc__team *teams;
    int n_teams, cap_teams;
    fxsc__job *jobs;             /* sorted by id */
    int n_jobs, cap_jobs;
    fxsc__resv *resv;
    int n_resv, cap_resv;
    int64_t now_ms;              /* the clock as far as it was advanced */
    bool clock_set;
};

/* A plan: what a pass decided, applied by fxsc_decide or only read by
 * fxsc_snapshot (a dry run). */
typedef struct {
    int job;                     /* index in s->jobs */
    fxsc_action action;
    int dev;                     /* START: where; PREEMPT: the claimer's device */
    int64_t claimer;             /* PREEMPT: for whom (0: the budget) */
    char reason[FXSC_REASON_MAX];
} fxsc__step;

typedef struct {
    fxsc__step *steps;
    int n_steps;
    int *drop_claim;             /* job indices whose claim is stale */
    int n_drop;
    /* dry run only (NULL otherwise): per job index */
    int *position;               /* queued: 1 = next; 0: running */
    char (*reason)[FXSC_REASON_MAX];
} fxsc__plan;

/* Advances usage and budgets to now_ms (clamped: the clock never goes back). */
void fxsc__advance(fxsc *s, int64_t now_ms);
/* The admission pass at s->now_ms. want_reasons: fill position/reason. */
int fxsc__pass(fxsc *s, fxsc__plan *p, bool want_reasons);
void fxsc__plan_free(fxsc__plan *p);

/* Team limits. */
bool fxsc__best_effort(const fxsc__team *t, fxsc_kind k);
int fxsc__limit(const fxsc__team *t, fxsc_kind k);   /* nominal + borrow; INT32_MAX for best effort */
bool fxsc__budget_spent(const fxsc__team *t);

const char *fxsc__kind_name(fxsc_kind k);
/* A job's index by id, or -(insertion point) - 1. */
int fxsc__find_job(const fxsc *s, int64_t id);

#endif
