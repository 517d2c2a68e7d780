/*
 * pass.c - the admission pass of the scheduler core: which queued jobs
 * start where, which running jobs are preempted for whom, and why every
 * other queued job waits. One function computes all of it, so fxsc_decide
 * (which applies the plan) and fxsc_snapshot (which only reads the
 * positions and reasons) can never disagree.
 *
 * The order (docs/scheduling.md):
 *   0. jobs that already had jobs preempted for them (their claim);
 *   1. jobs whose team stays within its nominal quota (guaranteed capacity);
 *   2. all others (borrowing, best effort).
 * Inside each: effective priority (aged) high first, then the team's
 * decayed usage of that kind divided by its weight, then submit time.
 * A job that fits its team's limits but not its device holds what is free
 * there (no backfill), so a large job is not starved by small ones.
 */
#include "sched/core_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GIB 1073741824.0

/* snprintf for reasons: a reason cut at FXSC_REASON_MAX is still a reason. */
static int reasonf(char *r, size_t rl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int reasonf(char *r, size_t rl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r, rl, fmt, ap);
    va_end(ap);
    return n;
}

typedef struct {
    int job;
    int eprio;
    double key;                     /* the team's usage of the kind / weight */
    int64_t submit, id;
} qent;

typedef struct {
    fxsc *s;
    fxsc__plan *p;
    bool want;                      /* fill positions and reasons */
    int *free_slots;                /* per device: after running + started */
    int64_t *free_mem;              /* per device (tracked ones) */
    int *held_slots;                /* per device: held by blocked jobs ahead */
    int64_t *held_mem;
    int *holders;                   /* per device: jobs ahead holding it */
    int (*used)[FXSC_KINDS];        /* per team: running + started + claims */
    int (*reclaim)[FXSC_KINDS];     /* per team: running + started - chosen victims */
    int *running;                   /* per team: running + started */
    uint64_t (*mem)[FXSC_KINDS];    /* per team: running + started memory estimates */
    bool *chosen;                   /* per job: a victim (pending or chosen now) */
    int *pending;                   /* per job: victims still pending for it */
    int *first_victim;              /* per job: one of them (index) */
    unsigned char *nofail;          /* per (team, device, prio, mode): no victim at all */
    int *run;                       /* running job indices */
    int *pick;                      /* try_preempt's scratch (n_run) */
    int n_run;
    int pos;
    int cap_steps, cap_drop;
} pass_t;

static int push_step(pass_t *P, int job, fxsc_action a, int dev, int64_t claimer, const char *why)
{
    fxsc__plan *p = P->p;
    if (p->n_steps == P->cap_steps) {
        int nc = P->cap_steps ? P->cap_steps * 2 : 16;
        fxsc__step *ns = realloc(p->steps, (size_t)nc * sizeof *ns);
        if (!ns)
            return -1;
        p->steps = ns;
        P->cap_steps = nc;
    }
    fxsc__step *st = &p->steps[p->n_steps++];
    st->job = job;
    st->action = a;
    st->dev = dev;
    st->claimer = claimer;
    st->reason[0] = 0;
    if (why)
        reasonf(st->reason, sizeof st->reason, "%s", why);
    return 0;
}

static int push_drop(pass_t *P, int job)
{
    fxsc__plan *p = P->p;
    if (p->n_drop == P->cap_drop) {
        int nc = P->cap_drop ? P->cap_drop * 2 : 16;
        int *nd = realloc(p->drop_claim, (size_t)nc * sizeof *nd);
        if (!nd)
            return -1;
        p->drop_claim = nd;
        P->cap_drop = nc;
    }
    p->drop_claim[p->n_drop++] = job;
    return 0;
}

static int cmp_qent(const void *a, const void *b)
{
    const qent *x = a, *y = b;
    if (x->eprio != y->eprio)
        return y->eprio - x->eprio;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    if (x->submit != y->submit)
        return x->submit < y->submit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool candidate(const fxsc *s, const fxsc__job *x, int d)
{
    if (x->want_dev >= 0)
        return d == x->want_dev;
    return s->devs[d].d.kind == x->j.kind;
}

/* Could the device ever hold the job (nothing running, reservations kept)? */
static bool could_fit(const fxsc *s, const fxsc__job *x, int d)
{
    const fxsc__dev *v = &s->devs[d];
    if (x->j.slots > v->d.slots)
        return false;
    return !v->d.memory_bytes || x->j.memory_bytes + v->mem_reserved <= v->d.memory_bytes;
}

static int avail_slots(const pass_t *P, int d)
{
    return P->free_slots[d] - P->held_slots[d];
}

static int64_t avail_mem(const pass_t *P, int d)
{
    return P->free_mem[d] - P->held_mem[d];
}

static bool tracked(const fxsc *s, int d)
{
    return s->devs[d].d.memory_bytes > 0;
}

static bool fits_now(const pass_t *P, const fxsc__job *x, int d)
{
    return avail_slots(P, d) >= x->j.slots &&
           (!tracked(P->s, d) || avail_mem(P, d) >= (int64_t)x->j.memory_bytes);
}

/* The team's slots of the job's kind as the job sees them: its own claim
 * (if any) is not counted against it. */
static int used_for(const pass_t *P, const fxsc__job *x)
{
    return P->used[x->team][x->j.kind] - (x->claim_dev >= 0 ? x->j.slots : 0);
}

static bool within_nominal(const pass_t *P, const fxsc__job *x)
{
    const fxsc__team *t = &P->s->teams[x->team];
    int nominal = t->cfg.nominal_slots[x->j.kind];
    return nominal > 0 && used_for(P, x) + x->j.slots <= nominal;
}

/* The victim ranking: > 0 when a is a better victim than b. Cross-team
 * victims (the team furthest above its nominal first) before the claimer's
 * own lower-priority jobs; then the lowest priority; then the least work
 * lost since the last checkpoint. */
static double victim_score(const pass_t *P, const fxsc__job *v, int claimer_team)
{
    const fxsc__team *t = &P->s->teams[v->team];
    double lost = (double)(P->s->now_ms - v->ckpt_ms);
    double score = 0;
    if (v->team != claimer_team) {
        int over = P->reclaim[v->team][v->j.kind] - t->cfg.nominal_slots[v->j.kind];
        score += 1e15 + over * 1e12;
    }
    score += (FXSC_HIGH - v->j.priority) * 1e11;
    score -= lost > 1e10 ? 1e10 : lost;
    return score;
}

/* Looks for running jobs to preempt so that job ji can start on one of its
 * devices. cross: the job's team is within nominal (it may reclaim from
 * teams above theirs); team_jobs/team_slots: what its own team must give
 * back (its limits block it). Returns the device, or -1. */
static int try_preempt(pass_t *P, int ji, bool cross, int team_slots, int team_jobs,
                       char *why, size_t whylen)
{
    fxsc *s = P->s;
    fxsc__job *x = &s->jobs[ji];
    int t = x->team, k = x->j.kind;
    int *pick = P->pick;
    int found = -1;
    for (int d = 0; d < s->n_devs && found < 0; d++) {
        if (!candidate(s, x, d) || !could_fit(s, x, d))
            continue;
        size_t cache = (((size_t)t * s->n_devs + d) * 4 + x->j.priority) * 2 + cross;
        if (P->nofail[cache])
            continue;
        int need_slots = x->j.slots - avail_slots(P, d);
        int64_t need_mem = tracked(s, d) ? (int64_t)x->j.memory_bytes - avail_mem(P, d) : 0;
        int ts = team_slots, tj = team_jobs, n = 0;
        while (need_slots > 0 || need_mem > 0 || ts > 0 || tj > 0) {
            int best = -1;
            double best_score = 0;
            for (int r = 0; r < P->n_run; r++) {
                const fxsc__job *v = &s->jobs[P->run[r]];
                if (P->chosen[P->run[r]] || !v->j.preemptible || v->dev != d ||
                    (int)v->j.kind != k || s->now_ms - v->start_ms < s->o.min_run_ms)
                    continue;
                if (v->team == t) {
                    if (v->j.priority >= x->j.priority)
                        continue;
                } else {
                    /* another team's job helps only the device, and only a
                     * team within nominal reclaims */
                    if (!cross || ts > 0 || tj > 0)
                        continue;
                    const fxsc__team *vt = &s->teams[v->team];
                    if (P->reclaim[v->team][k] <= vt->cfg.nominal_slots[k])
                        continue;
                }
                double sc = victim_score(P, v, t);
                if (best < 0 || sc > best_score) {
                    best = P->run[r];
                    best_score = sc;
                }
            }
            if (best < 0)
                break;
            const fxsc__job *v = &s->jobs[best];
            pick[n++] = best;
            P->chosen[best] = true;
            P->reclaim[v->team][k] -= v->j.slots;
            need_slots -= v->j.slots;
            need_mem -= (int64_t)v->j.memory_bytes;
            if (v->team == t) {
                ts -= v->j.slots;
                tj--;
            }
        }
        if (need_slots > 0 || need_mem > 0 || ts > 0 || tj > 0) {
            if (n == 0)
                P->nofail[cache] = 1;
            for (int i = 0; i < n; i++) { /* undo */
                P->chosen[pick[i]] = false;
                P->reclaim[s->jobs[pick[i]].team][k] += s->jobs[pick[i]].j.slots;
            }
            continue;
        }
        found = d;
        for (int i = 0; i < n; i++) {
            const fxsc__job *v = &s->jobs[pick[i]];
            char r[FXSC_REASON_MAX];
            reasonf(r, sizeof r, "job %lld of team %s (%s)", (long long)x->j.id, x->j.team,
                     v->team == t ? "higher priority" : "within nominal");
            if (push_step(P, pick[i], FXSC_PREEMPT, d, x->j.id, r) < 0)
                return -2;
        }
        if (why)
            reasonf(why, whylen, "waiting for %s: preempting job %lld of team %s%s",
                     s->devs[d].d.name, (long long)s->jobs[pick[0]].j.id,
                     s->jobs[pick[0]].j.team, n > 1 ? " and others" : "");
    }
    return found;
}

/* The reason a job that fits its team's limits waits for device d. */
static void device_reason(const pass_t *P, const fxsc__job *x, int d, char *r, size_t rl)
{
    const fxsc__dev *v = &P->s->devs[d];
    int ahead = P->holders[d];
    if (P->free_slots[d] < x->j.slots) {
        int n = reasonf(r, rl, "waiting for %s: %d/%d slots in use", v->d.name,
                         v->d.slots - P->free_slots[d], v->d.slots);
        if (ahead > 0 && n > 0 && (size_t)n < rl)
            reasonf(r + n, rl - (size_t)n, ", %d job%s ahead", ahead, ahead > 1 ? "s" : "");
    } else if (tracked(P->s, d) && P->free_mem[d] < (int64_t)x->j.memory_bytes) {
        reasonf(r, rl, "waiting for %s memory: needs %.1f GiB, %.1f GiB free", v->d.name,
                 x->j.memory_bytes / GIB, P->free_mem[d] > 0 ? P->free_mem[d] / GIB : 0.0);
    } else {
        reasonf(r, rl, "behind %d job%s for %s of higher priority or lower usage", ahead,
                 ahead > 1 ? "s" : "", v->d.name);
    }
}

static void start(pass_t *P, int ji, int d)
{
    fxsc__job *x = &P->s->jobs[ji];
    int k = x->j.kind;
    P->free_slots[d] -= x->j.slots;
    P->free_mem[d] -= (int64_t)x->j.memory_bytes;
    if (x->claim_dev < 0)
        P->used[x->team][k] += x->j.slots;
    P->reclaim[x->team][k] += x->j.slots;
    P->mem[x->team][k] += x->j.memory_bytes;
    P->running[x->team]++;
}

/* One queued job: start it, or find why it waits (and maybe preempt). */
static int process(pass_t *P, int ji)
{
    fxsc *s = P->s;
    fxsc__job *x = &s->jobs[ji];
    fxsc__team *t = &s->teams[x->team];
    int k = x->j.kind;
    char r[FXSC_REASON_MAX] = "";
    bool w = P->want;
    if (w)
        P->p->position[ji] = ++P->pos;

    bool waits = true, claims_now = false;
    if (fxsc__budget_spent(t)) {
        if (w)
            reasonf(r, sizeof r, "team %s budget spent: %.0f/%.0f device-seconds in this window",
                     t->name, t->budget_used, t->cfg.budget_device_seconds);
        goto done;
    }
    /* the team's memory cap for the kind: it waits (memory is never a
     * reason to preempt), holding nothing */
    uint64_t cap = t->cfg.max_memory[k];
    if (cap > 0 && (P->mem[x->team][k] > cap || x->j.memory_bytes > cap - P->mem[x->team][k])) {
        if (w)
            reasonf(r, sizeof r,
                     "team %s at memory quota: needs %.1f GiB, %.1f/%.1f GiB in use on %s", t->name,
                     x->j.memory_bytes / GIB, P->mem[x->team][k] / GIB, cap / GIB,
                     fxsc__kind_name(k));
        goto done;
    }
    int team_jobs = t->cfg.max_running > 0 ? P->running[x->team] + 1 - t->cfg.max_running : 0;
    int team_slots = fxsc__best_effort(t, k) ? 0 : used_for(P, x) + x->j.slots - fxsc__limit(t, k);
    if (team_jobs > 0 || team_slots > 0) {
        if (P->pending[ji] == 0 && try_preempt(P, ji, false, team_slots, team_jobs, w ? r : NULL,
                                               sizeof r) >= 0) {
            claims_now = true;
            goto claimed;
        }
        if (P->pending[ji] > 0 && w)
            reasonf(r, sizeof r, "waiting: preempting job %lld of team %s",
                     (long long)s->jobs[P->first_victim[ji]].j.id, t->name);
        else if (w && team_jobs > 0)
            reasonf(r, sizeof r, "team %s at %d/%d running jobs", t->name, P->running[x->team],
                     t->cfg.max_running);
        else if (w) {
            int n = reasonf(r, sizeof r, "team %s at quota %d/%d %s slots (nominal %d + borrow %d)",
                             t->name, used_for(P, x), fxsc__limit(t, k), fxsc__kind_name(k),
                             t->cfg.nominal_slots[k], t->cfg.borrow_slots[k]);
            if (x->j.slots > 1 && n > 0 && (size_t)n < sizeof r)
                reasonf(r + n, sizeof r - (size_t)n, ": the job needs %d", x->j.slots);
        }
        goto done;
    }
    /* the team allows it: a device? */
    int best = -1;
    for (int d = 0; d < s->n_devs; d++) {
        if (!candidate(s, x, d) || !fits_now(P, x, d))
            continue;
        if (best < 0 || avail_slots(P, d) > avail_slots(P, best) ||
            (avail_slots(P, d) == avail_slots(P, best) && avail_mem(P, d) > avail_mem(P, best)))
            best = d;
    }
    if (best >= 0) {
        waits = false;
        start(P, ji, best);
        if (push_step(P, ji, FXSC_START, best, 0, NULL) < 0)
            return -1;
        if (w)
            reasonf(r, sizeof r, "starting on %s", s->devs[best].d.name);
        goto done;
    }
    /* blocked by its device: which one it waits for (its claim's first) */
    int h = -1;
    for (int d = 0; d < s->n_devs; d++) {
        if (!candidate(s, x, d) || !could_fit(s, x, d))
            continue;
        if (h < 0 || d == x->claim_dev ||
            (h != x->claim_dev && avail_slots(P, d) > avail_slots(P, h)))
            h = d;
    }
    if (h < 0) { /* served models' reservations leave too little memory */
        if (w) {
            int m = -1;
            for (int d = 0; d < s->n_devs; d++)
                if (candidate(s, x, d) && (m < 0 || s->devs[d].mem_reserved < s->devs[m].mem_reserved))
                    m = d;
            const fxsc__dev *v = &s->devs[m];
            reasonf(r, sizeof r,
                     "waiting for %s memory: needs %.1f GiB, %.1f GiB free (%.1f GiB reserved by "
                     "served models)",
                     v->d.name, x->j.memory_bytes / GIB, P->free_mem[m] > 0 ? P->free_mem[m] / GIB : 0.0,
                     v->mem_reserved / GIB);
        }
        goto done;
    }
    if (P->pending[ji] > 0) {
        if (w)
            reasonf(r, sizeof r, "waiting for %s: preempting job %lld of team %s", s->devs[h].d.name,
                     (long long)s->jobs[P->first_victim[ji]].j.id,
                     s->jobs[P->first_victim[ji]].j.team);
    } else {
        if (x->claim_dev >= 0) { /* its victims are gone and it still waits: stale */
            if (push_drop(P, ji) < 0)
                return -1;
            P->used[x->team][k] -= x->j.slots;
            x->claim_dev = -1; /* for this pass; decide applies it for good */
        }
        int d = try_preempt(P, ji, within_nominal(P, x), 0, 0, w ? r : NULL, sizeof r);
        if (d == -2)
            return -1;
        if (d >= 0) {
            h = d;
            claims_now = true;
            goto claimed_hold;
        }
        if (w)
            device_reason(P, x, h, r, sizeof r);
    }
    goto hold;
claimed:
    /* its own team gave back: the slots it asked for count as claimed */
    P->used[x->team][k] += x->claim_dev < 0 ? x->j.slots : 0;
    goto done;
claimed_hold:
    P->used[x->team][k] += x->claim_dev < 0 ? x->j.slots : 0;
hold:
    if (avail_slots(P, h) > 0)
        P->held_slots[h] += avail_slots(P, h) < x->j.slots ? avail_slots(P, h) : x->j.slots;
    if (tracked(s, h) && avail_mem(P, h) > 0)
        P->held_mem[h] += avail_mem(P, h) < (int64_t)x->j.memory_bytes ? avail_mem(P, h)
                                                                         : (int64_t)x->j.memory_bytes;
    P->holders[h]++;
done:
    if (waits && !claims_now && x->claim_dev >= 0 && P->pending[ji] == 0) {
        /* its victims are gone and it still waits (its team's limits or
         * budget changed): the claim is stale */
        if (push_drop(P, ji) < 0)
            return -1;
        P->used[x->team][k] -= x->j.slots;
        x->claim_dev = -1;
    }
    if (w)
        memcpy(P->p->reason[ji], r, FXSC_REASON_MAX);
    return 0;
}

int fxsc__pass(fxsc *s, fxsc__plan *p, bool want_reasons)
{
    memset(p, 0, sizeof *p);
    pass_t P = {.s = s, .p = p, .want = want_reasons};
    int nd = s->n_devs + 1, nt = s->n_teams + 1, nj = s->n_jobs + 1;
    /* claim_dev is changed in the pass (stale claims): keep the originals */
    int *claims = malloc((size_t)nj * sizeof *claims);
    P.free_slots = calloc((size_t)nd, sizeof *P.free_slots);
    P.free_mem = calloc((size_t)nd, sizeof *P.free_mem);
    P.held_slots = calloc((size_t)nd, sizeof *P.held_slots);
    P.held_mem = calloc((size_t)nd, sizeof *P.held_mem);
    P.holders = calloc((size_t)nd, sizeof *P.holders);
    P.used = calloc((size_t)nt, sizeof *P.used);
    P.reclaim = calloc((size_t)nt, sizeof *P.reclaim);
    P.running = calloc((size_t)nt, sizeof *P.running);
    P.mem = calloc((size_t)nt, sizeof *P.mem);
    P.chosen = calloc((size_t)nj, sizeof *P.chosen);
    P.pending = calloc((size_t)nj, sizeof *P.pending);
    P.first_victim = calloc((size_t)nj, sizeof *P.first_victim);
    P.nofail = calloc((size_t)nt * (size_t)nd * 8, 1);
    P.run = calloc((size_t)nj, sizeof *P.run);
    P.pick = calloc((size_t)nj, sizeof *P.pick);
    qent *q = calloc((size_t)nj, sizeof *q);
    int *defer = calloc((size_t)nj, sizeof *defer);
    int rc = 0;
    if (want_reasons) {
        p->position = calloc((size_t)nj, sizeof *p->position);
        p->reason = calloc((size_t)nj, sizeof *p->reason);
        if (!p->position || !p->reason)
            rc = -1;
    }
    if (rc || !claims || !P.free_slots || !P.free_mem || !P.held_slots || !P.held_mem ||
        !P.holders || !P.used || !P.reclaim || !P.running || !P.mem || !P.chosen || !P.pending ||
        !P.first_victim || !P.nofail || !P.run || !P.pick || !q || !defer) {
        rc = -1;
        goto out;
    }
    for (int i = 0; i < s->n_jobs; i++)
        claims[i] = s->jobs[i].claim_dev;
    for (int d = 0; d < s->n_devs; d++) {
        const fxsc__dev *v = &s->devs[d];
        P.free_slots[d] = v->d.slots - v->slots_used;
        P.free_mem[d] = (int64_t)v->d.memory_bytes - (int64_t)v->mem_used - (int64_t)v->mem_reserved;
    }
    for (int t = 0; t < s->n_teams; t++) {
        for (int k = 0; k < FXSC_KINDS; k++) {
            P.used[t][k] = P.reclaim[t][k] = s->teams[t].slots_used[k];
            P.mem[t][k] = s->teams[t].mem_used[k];
        }
        P.running[t] = s->teams[t].running;
    }
    int nq = 0;
    for (int i = 0; i < s->n_jobs; i++) {
        fxsc__job *x = &s->jobs[i];
        if (x->running) {
            P.run[P.n_run++] = i;
            if (x->preempt_pending) {
                P.chosen[i] = true;
                int c = x->preempt_for ? fxsc__find_job(s, x->preempt_for) : -1;
                if (c >= 0 && !s->jobs[c].running) {
                    P.pending[c]++;
                    P.first_victim[c] = i;
                }
            }
            continue;
        }
        if (x->claim_dev >= 0)
            P.used[x->team][x->j.kind] += x->j.slots;
        int64_t eprio = x->j.priority;
        if (s->o.aging_ms > 0)
            eprio += (s->now_ms - x->queued_ms) / s->o.aging_ms;
        if (eprio > FXSC_HIGH)
            eprio = FXSC_HIGH;
        const fxsc__team *t = &s->teams[x->team];
        q[nq++] = (qent){i, (int)eprio, t->usage[x->j.kind] / t->cfg.weight, x->j.submit_ms, x->j.id};
    }
    qsort(q, (size_t)nq, sizeof *q, cmp_qent);
    /* a team over its budget gives back what it runs (the one preemption
     * that does not wait for min_run: a budget is a hard limit) */
    for (int r = 0; r < P.n_run; r++) {
        int i = P.run[r];
        fxsc__job *x = &s->jobs[i];
        fxsc__team *t = &s->teams[x->team];
        if (P.chosen[i] || !x->j.preemptible || !fxsc__budget_spent(t))
            continue;
        char why[FXSC_REASON_MAX];
        reasonf(why, sizeof why, "team %s budget spent: %.0f/%.0f device-seconds in this window",
                 t->name, t->budget_used, t->cfg.budget_device_seconds);
        P.chosen[i] = true;
        if (push_step(&P, i, FXSC_PREEMPT, x->dev, 0, why) < 0) {
            rc = -1;
            goto out;
        }
    }
    int nd2 = 0;
    for (int phase = 0; phase < 2 && !rc; phase++)
        for (int i = 0; i < nq && !rc; i++) {
            int ji = q[i].job;
            bool claimer = claims[ji] >= 0;
            if (phase == 0 ? claimer : !claimer) {
                if (phase == 1 && !within_nominal(&P, &s->jobs[ji]))
                    defer[nd2++] = ji;
                else
                    rc = process(&P, ji);
            }
        }
    for (int i = 0; i < nd2 && !rc; i++)
        rc = process(&P, defer[i]);
out:
    if (claims)
        for (int i = 0; i < s->n_jobs; i++)
            s->jobs[i].claim_dev = claims[i];
    free(claims);
    free(P.free_slots);
    free(P.free_mem);
    free(P.held_slots);
    free(P.held_mem);
    free(P.holders);
    free(P.used);
    free(P.reclaim);
    free(P.running);
    free(P.mem);
    free(P.chosen);
    free(P.pending);
    free(P.first_victim);
    free(P.nofail);
    free(P.run);
    free(P.pick);
    free(q);
    free(defer);
    if (rc)
        fxsc__plan_free(p);
    return rc ? 8 /* FXS_RESOURCE_EXHAUSTED */ : 0;
}
