/*
 * core_stub.c - TEMPORARY stand-in for the scheduler core (sched.h) so that
 * the jobs glue (training/job_sched.c) builds and is tested before the real
 * core (server/sched/core.c, helper S1) lands. The lead drops this file at
 * the merge. FIFO-ish: priority, then submit time; nominal + borrowing and
 * max running per team; preemption of a job above its team's nominal quota
 * (or of a lower priority job of the same team) for a job within its
 * team's nominal quota, after min_run_ms. No usage decay, no budgets.
 */
#define _GNU_SOURCE
#include "sched/sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"

typedef struct {
    fxsc_job j;
    bool running, preempting;
    char dev[FXSC_NAME_MAX];
    int64_t start_ms;
    int preemptions;
} sjob;

typedef struct {
    char name[FXSC_NAME_MAX];
    fxsc_team_cfg cfg;
} steam;

struct fxsc {
    fxsc_opts o;
    fxsc_device dev[32];
    int n_dev;
    steam *teams;
    int n_teams;
    sjob *jobs;
    int n_jobs, cap;
};

int fxsc_new(const fxsc_opts *o, fxsc **out, char *err, size_t errlen)
{
    fxsc *s = calloc(1, sizeof *s);
    if (!s)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "sched: out of memory");
    s->o = o ? *o : (fxsc_opts){ 0 };
    if (s->o.min_run_ms <= 0)
        s->o.min_run_ms = 60000;
    *out = s;
    return 0;
}

void fxsc_free(fxsc *s)
{
    if (!s)
        return;
    free(s->teams);
    free(s->jobs);
    free(s);
}

int fxsc_add_device(fxsc *s, const fxsc_device *d, char *err, size_t errlen)
{
    if (s->n_dev >= 32)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "sched: too many devices");
    s->dev[s->n_dev++] = *d;
    return 0;
}

static steam *team_of(fxsc *s, const char *name, bool add)
{
    for (int i = 0; i < s->n_teams; i++)
        if (!strcmp(s->teams[i].name, name))
            return &s->teams[i];
    if (!add)
        return NULL;
    steam *t = realloc(s->teams, sizeof *t * (size_t)(s->n_teams + 1));
    if (!t)
        return NULL;
    s->teams = t;
    t = &s->teams[s->n_teams++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->cfg.weight = 1;
    return t;
}

int fxsc_set_team(fxsc *s, const char *team, const fxsc_team_cfg *cfg, char *err, size_t errlen)
{
    steam *t = team_of(s, team, true);
    if (!t)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "sched: out of memory");
    t->cfg = *cfg;
    return 0;
}

static sjob *find(fxsc *s, int64_t id)
{
    for (int i = 0; i < s->n_jobs; i++)
        if (s->jobs[i].j.id == id)
            return &s->jobs[i];
    return NULL;
}

int fxsc_submit(fxsc *s, const fxsc_job *j, int64_t now_ms, char *err, size_t errlen)
{
    (void)now_ms;
    if (find(s, j->id))
        return fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "sched: job %lld exists",
                        (long long)j->id);
    if (s->n_jobs == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        sjob *n = realloc(s->jobs, sizeof *n * (size_t)cap);
        if (!n)
            return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "sched: out of memory");
        s->jobs = n;
        s->cap = cap;
    }
    sjob *x = &s->jobs[s->n_jobs++];
    memset(x, 0, sizeof *x);
    x->j = *j;
    if (x->j.slots < 1)
        x->j.slots = 1;
    return 0;
}

int fxsc_remove(fxsc *s, int64_t id, int64_t now_ms, char *err, size_t errlen)
{
    (void)now_ms;
    sjob *x = find(s, id);
    if (!x)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "sched: no job %lld", (long long)id);
    *x = s->jobs[--s->n_jobs];
    return 0;
}

int fxsc_preempted(fxsc *s, int64_t id, int64_t now_ms, char *err, size_t errlen)
{
    (void)now_ms;
    sjob *x = find(s, id);
    if (!x || !x->running)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "sched: no running job %lld",
                        (long long)id);
    x->running = x->preempting = false;
    x->dev[0] = '\0';
    x->preemptions++;
    return 0;
}

int fxsc_checkpointed(fxsc *s, int64_t id, int64_t now_ms)
{
    (void)s, (void)id, (void)now_ms;
    return 0;
}

int fxsc_update(fxsc *s, int64_t id, fxsc_priority prio, const char *device, fxsc_kind kind,
                char *err, size_t errlen)
{
    sjob *x = find(s, id);
    if (!x)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "sched: no job %lld", (long long)id);
    if (x->running)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "sched: job %lld runs",
                        (long long)id);
    if (prio)
        x->j.priority = prio;
    if (device) {
        snprintf(x->j.device, sizeof x->j.device, "%s", device);
        x->j.kind = kind;
    }
    return 0;
}

int fxsc_reserve(fxsc *s, const char *key, const char *device, uint64_t bytes, char *err,
                 size_t errlen)
{
    (void)s, (void)key, (void)device, (void)bytes, (void)err, (void)errlen;
    return 0;
}

/* ---------------------------------------------------------- the decisions */

static int used_on(fxsc *s, const char *dev)
{
    int n = 0;
    for (int i = 0; i < s->n_jobs; i++)
        if (s->jobs[i].running && !strcmp(s->jobs[i].dev, dev))
            n += s->jobs[i].j.slots;
    return n;
}

static int team_used(fxsc *s, const char *team, fxsc_kind k, int *running)
{
    int n = 0, r = 0;
    for (int i = 0; i < s->n_jobs; i++)
        if (s->jobs[i].running && !strcmp(s->jobs[i].j.team, team)) {
            r++;
            if (s->jobs[i].j.kind == k)
                n += s->jobs[i].j.slots;
        }
    if (running)
        *running = r;
    return n;
}

static bool dev_fits(const fxsc_device *d, const sjob *x)
{
    return d->kind == x->j.kind && (!x->j.device[0] || !strcmp(d->name, x->j.device));
}

static fxsc *g_sorting; /* the stub is single-threaded under its owner's lock */

static int team_used(fxsc *s, const char *team, fxsc_kind k, int *running);

/* 0: the job's team is below its nominal quota (it goes first), else 1. */
static int above(fxsc *s, const sjob *x)
{
    steam *t = team_of(s, x->j.team, false);
    int nominal = t ? t->cfg.nominal_slots[x->j.kind] : 0;
    return team_used(s, x->j.team, x->j.kind, NULL) + x->j.slots <= nominal ? 0 : 1;
}

static int cmp_queued(const void *a, const void *b)
{
    const sjob *x = *(sjob *const *)a, *y = *(sjob *const *)b;
    if (x->j.priority != y->j.priority)
        return y->j.priority - x->j.priority;
    int ax = above(g_sorting, x), ay = above(g_sorting, y);
    if (ax != ay)
        return ax - ay;
    if (x->j.submit_ms != y->j.submit_ms)
        return x->j.submit_ms < y->j.submit_ms ? -1 : 1;
    return x->j.id < y->j.id ? -1 : 1;
}

/* The queued jobs in order (a new array). */
static sjob **queued(fxsc *s, int *n)
{
    sjob **q = malloc(sizeof *q * (size_t)(s->n_jobs + 1));
    *n = 0;
    if (!q)
        return NULL;
    for (int i = 0; i < s->n_jobs; i++)
        if (!s->jobs[i].running)
            q[(*n)++] = &s->jobs[i];
    g_sorting = s;
    qsort(q, (size_t)*n, sizeof *q, cmp_queued);
    return q;
}

/* Why x cannot start now ("" when it can; *dev the device). */
static void why(fxsc *s, sjob *x, char *reason, size_t rn, const fxsc_device **dev)
{
    const char *kn = x->j.kind == FXSC_GPU ? "gpu" : "cpu";
    steam *t = team_of(s, x->j.team, false);
    fxsc_team_cfg cfg = t ? t->cfg : (fxsc_team_cfg){ 0 };
    int running, used = team_used(s, x->j.team, x->j.kind, &running);
    int lim = cfg.nominal_slots[x->j.kind] + cfg.borrow_slots[x->j.kind];
    *dev = NULL;
    reason[0] = '\0';
    if (lim > 0 && used + x->j.slots > lim) {
        snprintf(reason, rn, "team %s at quota %d/%d %s slots (nominal %d + borrow %d)",
                 x->j.team, used, lim, kn, cfg.nominal_slots[x->j.kind],
                 cfg.borrow_slots[x->j.kind]);
        return;
    }
    if (cfg.max_running > 0 && running >= cfg.max_running) {
        snprintf(reason, rn, "team %s at %d/%d running jobs", x->j.team, running,
                 cfg.max_running);
        return;
    }
    const fxsc_device *busy = NULL;
    for (int i = 0; i < s->n_dev; i++) {
        if (!dev_fits(&s->dev[i], x))
            continue;
        if (used_on(s, s->dev[i].name) + x->j.slots <= s->dev[i].slots) {
            *dev = &s->dev[i];
            return;
        }
        busy = &s->dev[i];
    }
    if (busy)
        snprintf(reason, rn, "waiting for %s: %d/%d slots in use", busy->name,
                 used_on(s, busy->name), busy->slots);
    else
        snprintf(reason, rn, "no device %s", x->j.device[0] ? x->j.device : kn);
}

/* A running job to preempt for x, or NULL. */
static sjob *victim(fxsc *s, sjob *x, int64_t now_ms)
{
    steam *t = team_of(s, x->j.team, false);
    int nominal = t ? t->cfg.nominal_slots[x->j.kind] : 0;
    if (team_used(s, x->j.team, x->j.kind, NULL) + x->j.slots > nominal)
        return NULL;
    sjob *best = NULL;
    for (int i = 0; i < s->n_jobs; i++) {
        sjob *v = &s->jobs[i];
        if (!v->running || v->preempting || !v->j.preemptible || v->j.kind != x->j.kind ||
            now_ms - v->start_ms < s->o.min_run_ms ||
            (x->j.device[0] && strcmp(v->dev, x->j.device)))
            continue;
        bool same = !strcmp(v->j.team, x->j.team);
        steam *vt = team_of(s, v->j.team, false);
        int vn = vt ? vt->cfg.nominal_slots[v->j.kind] : 0;
        if (same ? v->j.priority >= x->j.priority
                 : team_used(s, v->j.team, v->j.kind, NULL) <= vn)
            continue;
        if (!best || v->j.priority < best->j.priority)
            best = v;
    }
    return best;
}

int fxsc_decide(fxsc *s, int64_t now_ms, fxsc_decision *out, int max, int *n)
{
    *n = 0;
    int nq;
    sjob **q = queued(s, &nq);
    if (!q)
        return FXS_RESOURCE_EXHAUSTED;
    /* Pointers into s->jobs stay valid: nothing is added or removed here. */
    for (int i = 0; i < nq && *n < max; i++) {
        sjob *x = q[i];
        char reason[FXSC_REASON_MAX];
        const fxsc_device *d;
        why(s, x, reason, sizeof reason, &d);
        if (d) {
            x->running = true;
            x->start_ms = now_ms;
            snprintf(x->dev, sizeof x->dev, "%s", d->name);
            fxsc_decision *o = &out[(*n)++];
            memset(o, 0, sizeof *o);
            o->action = FXSC_START;
            o->job = x->j.id;
            snprintf(o->device, sizeof o->device, "%s", d->name);
            continue;
        }
        if (!strstr(reason, "slots in use"))
            continue;
        sjob *v = victim(s, x, now_ms);
        if (!v)
            continue;
        v->preempting = true;
        fxsc_decision *o = &out[(*n)++];
        memset(o, 0, sizeof *o);
        o->action = FXSC_PREEMPT;
        o->job = v->j.id;
        snprintf(o->reason, sizeof o->reason, "job %lld of team %s (within nominal)",
                 (long long)x->j.id, x->j.team);
    }
    free(q);
    return 0;
}

int fxsc_snapshot(fxsc *s, int64_t now_ms, fxsc_view *out, char *err, size_t errlen)
{
    (void)now_ms;
    memset(out, 0, sizeof *out);
    int nq;
    sjob **q = queued(s, &nq);
    out->jobs = calloc((size_t)s->n_jobs + 1, sizeof *out->jobs);
    out->devices = calloc((size_t)s->n_dev + 1, sizeof *out->devices);
    out->teams = calloc((size_t)s->n_teams + 1, sizeof *out->teams);
    if (!q || !out->jobs || !out->devices || !out->teams) {
        free(q);
        fxsc_view_free(out);
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "sched: out of memory");
    }
    for (int i = 0; i < s->n_jobs; i++) {
        sjob *x = &s->jobs[i];
        if (!x->running)
            continue;
        fxsc_job_view *v = &out->jobs[out->n_jobs++];
        v->id = x->j.id;
        snprintf(v->team, sizeof v->team, "%s", x->j.team);
        v->running = true;
        v->priority = x->j.priority;
        v->preemptible = x->j.preemptible;
        snprintf(v->device, sizeof v->device, "%s", x->dev);
        v->submit_ms = x->j.submit_ms;
        v->start_ms = x->start_ms;
        v->preemptions = x->preemptions;
        v->memory_bytes = x->j.memory_bytes;
    }
    for (int i = 0; i < nq; i++) {
        sjob *x = q[i];
        fxsc_job_view *v = &out->jobs[out->n_jobs++];
        v->id = x->j.id;
        snprintf(v->team, sizeof v->team, "%s", x->j.team);
        v->priority = x->j.priority;
        v->preemptible = x->j.preemptible;
        snprintf(v->device, sizeof v->device, "%s", x->j.device);
        v->position = i + 1;
        const fxsc_device *d;
        why(s, x, v->reason, sizeof v->reason, &d);
        if (d)
            snprintf(v->reason, sizeof v->reason, "behind %d jobs of higher priority or lower usage", i);
        v->submit_ms = x->j.submit_ms;
        v->preemptions = x->preemptions;
        v->memory_bytes = x->j.memory_bytes;
    }
    free(q);
    for (int i = 0; i < s->n_dev; i++) {
        fxsc_device_view *d = &out->devices[out->n_devices++];
        snprintf(d->name, sizeof d->name, "%s", s->dev[i].name);
        d->slots = s->dev[i].slots;
        d->slots_used = used_on(s, s->dev[i].name);
        d->memory_bytes = s->dev[i].memory_bytes;
    }
    for (int i = 0; i < s->n_teams; i++) {
        fxsc_team_view *t = &out->teams[out->n_teams++];
        snprintf(t->team, sizeof t->team, "%s", s->teams[i].name);
        t->weight = s->teams[i].cfg.weight;
        t->slots_used = team_used(s, t->team, FXSC_CPU, &t->running);
    }
    return 0;
}

void fxsc_view_free(fxsc_view *v)
{
    if (!v)
        return;
    free(v->jobs);
    free(v->devices);
    free(v->teams);
    memset(v, 0, sizeof *v);
}
