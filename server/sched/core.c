/*
 * core.c - the scheduler core's state and events (see sched.h and
 * docs/scheduling.md). The admission pass itself (order, starts,
 * preemptions, the reasons a job waits) is in pass.c. Pure: no threads, no
 * clock, no I/O.
 */
#include "sched/core_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"

#define DEFAULT_HALF_LIFE_MS (3600LL * 1000)
#define DEFAULT_MIN_RUN_MS (60LL * 1000)
#define DEFAULT_WINDOW_MS (86400LL * 1000)
#define LN2 0.69314718055994530942

const char *fxsc__kind_name(fxsc_kind k)
{
    return k == FXSC_GPU ? "gpu" : "cpu";
}

bool fxsc__best_effort(const fxsc__team *t, fxsc_kind k)
{
    return t->cfg.nominal_slots[k] <= 0 && t->cfg.borrow_slots[k] <= 0;
}

int fxsc__limit(const fxsc__team *t, fxsc_kind k)
{
    if (fxsc__best_effort(t, k))
        return INT32_MAX;
    return t->cfg.nominal_slots[k] + t->cfg.borrow_slots[k];
}

bool fxsc__budget_spent(const fxsc__team *t)
{
    return t->cfg.budget_device_seconds > 0 && t->budget_used >= t->cfg.budget_device_seconds;
}

/* Grows an array of n elements of size sz to hold one more. */
static int grow(void **arr, int *cap, int n, size_t sz)
{
    if (n < *cap)
        return 0;
    int nc = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, (size_t)nc * sz);
    if (!p)
        return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

static bool name_ok(const char *name)
{
    return name && name[0] && strlen(name) < FXSC_NAME_MAX;
}

int fxsc_new(const fxsc_opts *o, fxsc **out, char *err, size_t errlen)
{
    *out = NULL;
    fxsc_opts opts = o ? *o : (fxsc_opts){0};
    if (opts.half_life_ms < 0 || opts.min_run_ms < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "scheduler: half life and minimum run time must be >= 0");
    if (opts.half_life_ms == 0)
        opts.half_life_ms = DEFAULT_HALF_LIFE_MS;
    if (opts.min_run_ms == 0)
        opts.min_run_ms = DEFAULT_MIN_RUN_MS;
    if (opts.aging_ms == 0)
        opts.aging_ms = opts.half_life_ms;
    fxsc *s = calloc(1, sizeof *s);
    if (!s)
        return fxu_oom(err, errlen);
    s->o = opts;
    *out = s;
    return 0;
}

void fxsc_free(fxsc *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_resv; i++)
        free(s->resv[i].key);
    free(s->resv);
    free(s->devs);
    free(s->teams);
    free(s->jobs);
    free(s);
}

static int find_dev(const fxsc *s, const char *name)
{
    for (int i = 0; i < s->n_devs; i++)
        if (strcmp(s->devs[i].d.name, name) == 0)
            return i;
    return -1;
}

/* The team's index, created with the defaults when new; -1: out of memory. */
static int team_index(fxsc *s, const char *name)
{
    for (int i = 0; i < s->n_teams; i++)
        if (strcmp(s->teams[i].name, name) == 0)
            return i;
    if (grow((void **)&s->teams, &s->cap_teams, s->n_teams, sizeof *s->teams) < 0)
        return -1;
    fxsc__team *t = &s->teams[s->n_teams];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->cfg.weight = 1;
    t->cfg.budget_window_ms = DEFAULT_WINDOW_MS;
    t->window = INT64_MIN;
    return s->n_teams++;
}

/* Binary search by id: the index, or -(insertion point) - 1. */
int fxsc__find_job(const fxsc *s, int64_t id)
{
    int lo = 0, hi = s->n_jobs - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->jobs[mid].j.id == id)
            return mid;
        if (s->jobs[mid].j.id < id)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -lo - 1;
}

int fxsc_add_device(fxsc *s, const fxsc_device *d, char *err, size_t errlen)
{
    if (!d || !name_ok(d->name))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: a device needs a name");
    if (d->slots < 1)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: device %s needs >= 1 slot",
                        d->name);
    if (d->kind != FXSC_CPU && d->kind != FXSC_GPU)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: device %s: unknown kind",
                        d->name);
    if (find_dev(s, d->name) >= 0)
        return fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "scheduler: device %s already exists",
                        d->name);
    if (grow((void **)&s->devs, &s->cap_devs, s->n_devs, sizeof *s->devs) < 0)
        return fxu_oom(err, errlen);
    fxsc__dev *v = &s->devs[s->n_devs++];
    memset(v, 0, sizeof *v);
    v->d = *d;
    return 0;
}

int fxsc_set_team(fxsc *s, const char *team, const fxsc_team_cfg *cfg, char *err, size_t errlen)
{
    if (!name_ok(team))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: a team needs a name");
    fxsc_team_cfg c = cfg ? *cfg : (fxsc_team_cfg){0};
    if (c.weight < 0 || !isfinite(c.weight) || c.budget_device_seconds < 0 ||
        c.budget_window_ms < 0 || c.max_running < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "scheduler: team %s: weight, budget, window and max running must be >= 0",
                        team);
    for (int k = 0; k < FXSC_KINDS; k++)
        if (c.nominal_slots[k] < 0 || c.borrow_slots[k] < 0)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "scheduler: team %s: slots must be >= 0", team);
    if (c.weight == 0)
        c.weight = 1;
    if (c.budget_window_ms == 0)
        c.budget_window_ms = DEFAULT_WINDOW_MS;
    int ti = team_index(s, team);
    if (ti < 0)
        return fxu_oom(err, errlen);
    fxsc__team *t = &s->teams[ti];
    if (t->cfg.budget_window_ms != c.budget_window_ms)
        t->window = INT64_MIN; /* a new window length: a new window */
    t->cfg = c;
    return 0;
}

/* Checks that some device can ever hold the job (its slots, its memory
 * beside the reservations of served models aside). */
static int check_fits(const fxsc *s, const fxsc_job *j, char *err, size_t errlen)
{
    if (j->device[0]) {
        int d = find_dev(s, j->device);
        if (d < 0)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: unknown device %s",
                            j->device);
        const fxsc__dev *v = &s->devs[d];
        if (j->slots > v->d.slots)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "scheduler: job %lld wants %d slots; %s has %d", (long long)j->id,
                            j->slots, v->d.name, v->d.slots);
        if (v->d.memory_bytes && j->memory_bytes > v->d.memory_bytes)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "scheduler: job %lld needs %.1f GiB; %s has %.1f GiB",
                            (long long)j->id, j->memory_bytes / 1073741824.0, v->d.name,
                            v->d.memory_bytes / 1073741824.0);
        return 0;
    }
    bool any = false;
    for (int d = 0; d < s->n_devs; d++) {
        const fxsc__dev *v = &s->devs[d];
        if (v->d.kind != j->kind)
            continue;
        any = true;
        if (j->slots <= v->d.slots && (!v->d.memory_bytes || j->memory_bytes <= v->d.memory_bytes))
            return 0;
    }
    if (!any)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: no %s device",
                        fxsc__kind_name(j->kind));
    return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                    "scheduler: job %lld (%d slots, %.1f GiB) fits no %s device", (long long)j->id,
                    j->slots, j->memory_bytes / 1073741824.0, fxsc__kind_name(j->kind));
}

int fxsc_submit(fxsc *s, const fxsc_job *j, int64_t now_ms, char *err, size_t errlen)
{
    if (!j || j->id <= 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: a job needs an id > 0");
    if (!name_ok(j->team))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: job %lld needs a team",
                        (long long)j->id);
    fxsc_job c = *j;
    if (c.priority == 0)
        c.priority = FXSC_NORMAL;
    if (c.priority < FXSC_LOW || c.priority > FXSC_HIGH)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: job %lld: bad priority %d",
                        (long long)j->id, (int)c.priority);
    if (c.slots <= 0)
        c.slots = 1;
    if (c.device[0]) {
        int d = find_dev(s, c.device);
        if (d >= 0)
            c.kind = s->devs[d].d.kind;
    }
    int rc = check_fits(s, &c, err, errlen);
    if (rc)
        return rc;
    int at = fxsc__find_job(s, c.id);
    if (at >= 0)
        return fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "scheduler: job %lld already exists",
                        (long long)c.id);
    at = -at - 1;
    int ti = team_index(s, c.team);
    if (ti < 0 || grow((void **)&s->jobs, &s->cap_jobs, s->n_jobs, sizeof *s->jobs) < 0)
        return fxu_oom(err, errlen);
    fxsc__advance(s, now_ms);
    memmove(&s->jobs[at + 1], &s->jobs[at], (size_t)(s->n_jobs - at) * sizeof *s->jobs);
    s->n_jobs++;
    fxsc__job *x = &s->jobs[at];
    memset(x, 0, sizeof *x);
    x->j = c;
    x->team = ti;
    x->want_dev = c.device[0] ? find_dev(s, c.device) : -1;
    x->dev = -1;
    x->claim_dev = -1;
    x->queued_ms = s->now_ms;
    s->teams[ti].queued++;
    return 0;
}

/* Takes a running job off its device (its slots and memory are free). */
static void stop_running(fxsc *s, fxsc__job *x)
{
    fxsc__dev *v = &s->devs[x->dev];
    fxsc__team *t = &s->teams[x->team];
    v->slots_used -= x->j.slots;
    v->mem_used -= x->j.memory_bytes;
    t->slots_used[x->j.kind] -= x->j.slots;
    t->mem_used[x->j.kind] -= x->j.memory_bytes;
    t->running--;
    x->running = false;
    x->dev = -1;
    x->preempt_pending = false;
    x->preempt_for = 0;
}

int fxsc_remove(fxsc *s, int64_t id, int64_t now_ms, char *err, size_t errlen)
{
    int at = fxsc__find_job(s, id);
    if (at < 0)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "scheduler: no job %lld", (long long)id);
    fxsc__advance(s, now_ms);
    fxsc__job *x = &s->jobs[at];
    if (x->running)
        stop_running(s, x);
    else
        s->teams[x->team].queued--;
    memmove(&s->jobs[at], &s->jobs[at + 1], (size_t)(s->n_jobs - at - 1) * sizeof *s->jobs);
    s->n_jobs--;
    return 0;
}

int fxsc_preempted(fxsc *s, int64_t id, int64_t now_ms, char *err, size_t errlen)
{
    int at = fxsc__find_job(s, id);
    if (at < 0)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "scheduler: no job %lld", (long long)id);
    fxsc__job *x = &s->jobs[at];
    if (!x->running)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "scheduler: job %lld is not running",
                        (long long)id);
    fxsc__advance(s, now_ms);
    stop_running(s, x);
    x->preemptions++;
    x->queued_ms = s->now_ms;
    x->claim_dev = -1;
    s->teams[x->team].preemptions++;
    s->teams[x->team].queued++;
    return 0;
}

int fxsc_checkpointed(fxsc *s, int64_t id, int64_t now_ms)
{
    int at = fxsc__find_job(s, id);
    if (at < 0)
        return FXS_NOT_FOUND;
    fxsc__advance(s, now_ms);
    if (s->jobs[at].running)
        s->jobs[at].ckpt_ms = s->now_ms;
    return 0;
}

int fxsc_update(fxsc *s, int64_t id, fxsc_priority prio, const char *device, fxsc_kind kind,
                char *err, size_t errlen)
{
    int at = fxsc__find_job(s, id);
    if (at < 0)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "scheduler: no job %lld", (long long)id);
    fxsc__job *x = &s->jobs[at];
    if (x->running)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                        "scheduler: job %lld is running (only a queued job can change)",
                        (long long)id);
    if (prio != 0 && (prio < FXSC_LOW || prio > FXSC_HIGH))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: bad priority %d", (int)prio);
    fxsc_job c = x->j;
    if (prio)
        c.priority = prio;
    if (device) {
        if (strlen(device) >= FXSC_NAME_MAX)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: device name too long");
        snprintf(c.device, sizeof c.device, "%s", device);
        c.kind = kind;
        int d = device[0] ? find_dev(s, device) : -1;
        if (d >= 0)
            c.kind = s->devs[d].d.kind;
        int rc = check_fits(s, &c, err, errlen);
        if (rc)
            return rc;
        x->claim_dev = -1;
        x->want_dev = c.device[0] ? find_dev(s, c.device) : -1;
    }
    x->j = c;
    return 0;
}

int fxsc_reserve(fxsc *s, const char *key, const char *device, uint64_t bytes, char *err,
                 size_t errlen)
{
    if (!key || !key[0])
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: a reservation needs a key");
    int r = -1;
    for (int i = 0; i < s->n_resv; i++)
        if (strcmp(s->resv[i].key, key) == 0)
            r = i;
    if (r >= 0) { /* replaced: take the old one back first */
        fxsc__dev *o = &s->devs[s->resv[r].dev];
        o->mem_reserved -= s->resv[r].bytes;
        o->reservations--;
    }
    if (bytes == 0) {
        if (r >= 0) {
            free(s->resv[r].key);
            s->resv[r] = s->resv[--s->n_resv];
        }
        return 0;
    }
    int d = device ? find_dev(s, device) : -1;
    int rc = 0;
    if (d < 0)
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "scheduler: unknown device %s",
                      device ? device : "(none)");
    else if (s->devs[d].d.memory_bytes &&
             s->devs[d].mem_reserved + bytes > s->devs[d].d.memory_bytes)
        rc = fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED,
                      "scheduler: %s: %.1f GiB asked, %.1f GiB not reserved by served models",
                      device, bytes / 1073741824.0,
                      (s->devs[d].d.memory_bytes - s->devs[d].mem_reserved) / 1073741824.0);
    if (rc) {
        if (r >= 0) { /* keep the old one */
            fxsc__dev *o = &s->devs[s->resv[r].dev];
            o->mem_reserved += s->resv[r].bytes;
            o->reservations++;
        }
        return rc;
    }
    if (r < 0) {
        size_t kl = strlen(key) + 1;
        char *k = malloc(kl);
        if (k)
            memcpy(k, key, kl);
        if (!k || grow((void **)&s->resv, &s->cap_resv, s->n_resv, sizeof *s->resv) < 0) {
            free(k);
            return fxu_oom(err, errlen);
        }
        r = s->n_resv++;
        s->resv[r].key = k;
    }
    s->resv[r].dev = d;
    s->resv[r].bytes = bytes;
    s->devs[d].mem_reserved += bytes;
    s->devs[d].reservations++;
    return 0;
}

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Usage: u(t+dt) = u 2^(-dt/h) + r h/ln2 (1 - 2^(-dt/h)) for r slots
 * running all along (the exact integral of the decayed rate), so the
 * result does not depend on how often the owner calls. */
void fxsc__advance(fxsc *s, int64_t now_ms)
{
    if (!s->clock_set) {
        s->clock_set = true;
        s->now_ms = now_ms;
    }
    if (now_ms < s->now_ms)
        now_ms = s->now_ms;
    int64_t dt = now_ms - s->now_ms;
    double h = (double)s->o.half_life_ms / 1000.0;
    double x = -((double)dt / 1000.0) * LN2 / h;
    double keep = exp(x), gain = -expm1(x) * h / LN2;
    for (int i = 0; i < s->n_teams; i++) {
        fxsc__team *t = &s->teams[i];
        int total = 0;
        for (int k = 0; k < FXSC_KINDS; k++) {
            if (dt > 0)
                t->usage[k] = t->usage[k] * keep + t->slots_used[k] * gain;
            total += t->slots_used[k];
        }
        int64_t w = t->cfg.budget_window_ms;
        int64_t win = floordiv(now_ms, w);
        if (win != t->window) {
            /* a new window: only the part of dt inside it counts */
            int64_t from = win * w > s->now_ms ? win * w : s->now_ms;
            t->budget_used = total * (double)(now_ms - from) / 1000.0;
            t->window = win;
        } else {
            t->budget_used += total * (double)dt / 1000.0;
        }
    }
    s->now_ms = now_ms;
}

void fxsc__plan_free(fxsc__plan *p)
{
    free(p->steps);
    free(p->drop_claim);
    free(p->position);
    free(p->reason);
    memset(p, 0, sizeof *p);
}

int fxsc_decide(fxsc *s, int64_t now_ms, fxsc_decision *out, int max, int *n)
{
    *n = 0;
    fxsc__advance(s, now_ms);
    fxsc__plan p = {0};
    int rc = fxsc__pass(s, &p, false);
    if (rc)
        return rc;
    for (int i = 0; i < p.n_drop; i++)
        s->jobs[p.drop_claim[i]].claim_dev = -1;
    for (int i = 0; i < p.n_steps && *n < max; i++) {
        fxsc__step *st = &p.steps[i];
        fxsc__job *x = &s->jobs[st->job];
        fxsc_decision *d = &out[(*n)++];
        memset(d, 0, sizeof *d);
        d->action = st->action;
        d->job = x->j.id;
        if (st->action == FXSC_START) {
            fxsc__dev *v = &s->devs[st->dev];
            fxsc__team *t = &s->teams[x->team];
            x->running = true;
            x->dev = st->dev;
            x->start_ms = x->ckpt_ms = s->now_ms;
            x->claim_dev = -1;
            v->slots_used += x->j.slots;
            v->mem_used += x->j.memory_bytes;
            t->slots_used[x->j.kind] += x->j.slots;
            t->mem_used[x->j.kind] += x->j.memory_bytes;
            t->running++;
            t->queued--;
            snprintf(d->device, sizeof d->device, "%s", v->d.name);
        } else {
            x->preempt_pending = true;
            x->preempt_for = st->claimer;
            if (st->claimer) {
                int c = fxsc__find_job(s, st->claimer);
                if (c >= 0)
                    s->jobs[c].claim_dev = st->dev;
            }
            snprintf(d->device, sizeof d->device, "%s", s->devs[x->dev].d.name);
            snprintf(d->reason, sizeof d->reason, "%s", st->reason);
        }
    }
    fxsc__plan_free(&p);
    return 0;
}

/* --------------------------------------------------------------- snapshot */

static int cmp_view(const void *a, const void *b)
{
    const fxsc_job_view *x = a, *y = b;
    if (x->running != y->running)
        return x->running ? -1 : 1;
    if (x->running) {
        int c = strcmp(x->device, y->device);
        if (c)
            return c;
        return x->start_ms < y->start_ms ? -1 : x->start_ms > y->start_ms ? 1 : (x->id > y->id) - (x->id < y->id);
    }
    return x->position - y->position;
}

int fxsc_snapshot(fxsc *s, int64_t now_ms, fxsc_view *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    fxsc__advance(s, now_ms);
    fxsc__plan p = {0};
    if (fxsc__pass(s, &p, true))
        return fxu_oom(err, errlen);
    out->jobs = calloc((size_t)s->n_jobs + 1, sizeof *out->jobs);
    out->devices = calloc((size_t)s->n_devs + 1, sizeof *out->devices);
    out->teams = calloc((size_t)s->n_teams + 1, sizeof *out->teams);
    if (!out->jobs || !out->devices || !out->teams) {
        fxsc__plan_free(&p);
        fxsc_view_free(out);
        return fxu_oom(err, errlen);
    }
    for (int i = 0; i < s->n_jobs; i++) {
        const fxsc__job *x = &s->jobs[i];
        fxsc_job_view *v = &out->jobs[out->n_jobs++];
        v->id = x->j.id;
        snprintf(v->team, sizeof v->team, "%s", x->j.team);
        v->running = x->running;
        v->priority = x->j.priority;
        v->preemptible = x->j.preemptible;
        snprintf(v->device, sizeof v->device, "%s",
                 x->running ? s->devs[x->dev].d.name : x->j.device);
        v->position = x->running ? 0 : p.position[i];
        if (!x->running)
            snprintf(v->reason, sizeof v->reason, "%s", p.reason[i]);
        else if (x->preempt_pending)
            snprintf(v->reason, sizeof v->reason, "being preempted");
        v->submit_ms = x->j.submit_ms;
        v->start_ms = x->running ? x->start_ms : 0;
        v->preemptions = x->preemptions;
        v->memory_bytes = x->j.memory_bytes;
    }
    qsort(out->jobs, (size_t)out->n_jobs, sizeof *out->jobs, cmp_view);
    for (int i = 0; i < s->n_devs; i++) {
        const fxsc__dev *d = &s->devs[i];
        fxsc_device_view *v = &out->devices[out->n_devices++];
        snprintf(v->name, sizeof v->name, "%s", d->d.name);
        v->slots = d->d.slots;
        v->slots_used = d->slots_used;
        v->memory_bytes = d->d.memory_bytes;
        v->memory_reserved = d->mem_reserved;
        v->memory_used = d->mem_used;
        v->reservations = d->reservations;
    }
    double all_usage = 0, active_weight = 0;
    for (int i = 0; i < s->n_teams; i++) {
        const fxsc__team *t = &s->teams[i];
        all_usage += t->usage[FXSC_CPU] + t->usage[FXSC_GPU];
        if (t->running + t->queued > 0)
            active_weight += t->cfg.weight;
    }
    for (int i = 0; i < s->n_teams; i++) {
        const fxsc__team *t = &s->teams[i];
        fxsc_team_view *v = &out->teams[out->n_teams++];
        snprintf(v->team, sizeof v->team, "%s", t->name);
        v->weight = t->cfg.weight;
        v->running = t->running;
        v->queued = t->queued;
        for (int k = 0; k < FXSC_KINDS; k++) {
            v->slots_used += t->slots_used[k];
            v->nominal_slots += t->cfg.nominal_slots[k];
            v->borrow_slots += t->cfg.borrow_slots[k];
            v->usage += t->usage[k];
        }
        v->share = all_usage > 0 ? v->usage / all_usage : 0;
        v->fair_share = t->running + t->queued > 0 && active_weight > 0
                            ? t->cfg.weight / active_weight : 0;
        v->budget_used = t->budget_used;
        v->budget = t->cfg.budget_device_seconds;
        v->preemptions = t->preemptions;
    }
    fxsc__plan_free(&p);
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
