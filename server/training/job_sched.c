/*
 * job_sched.c - the jobs module's glue to the scheduler core (sched.h):
 * the devices and teams it tells the core about, a job's scheduling facts
 * (team, priority, preemptibility, device, memory estimate), carrying out
 * the core's decisions (START: a thread of its own on the decided device;
 * PREEMPT: the job checkpoints at its next step and is queued again,
 * job_run.c), the queue positions and reasons kept in the records (with a
 * QUEUED_AT event when they change, at most 4 a second per job), and the
 * API for api/ (queue, update, set_team). Everything here but the threads'
 * bodies runs under j->mu (lock order: jobs_internal.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"
#include "models/models.h"
#include "peers/peers.h"
#include "training/jobs_internal.h"

#define TICK_MS 200           /* decisions also run this often (usage, budgets) */
#define QUEUED_AT_EVERY_MS 250 /* at most 4 QUEUED_AT events a second per job */

/* ------------------------------------------------------------ devices */

int fxj__sched_init(fxj_jobs *j, char *err, size_t errlen)
{
    fxsc_opts o = { .half_life_ms = j->opts.sched_half_life_ms,
                    .min_run_ms = j->opts.sched_min_run_ms };
    int rc = fxsc_new(&o, &j->sc, err, errlen);
    if (rc)
        return rc;
    fxsc_device cpu = { .name = "cpu", .kind = FXSC_CPU, .slots = j->opts.workers };
    if ((rc = fxsc_add_device(j->sc, &cpu, err, errlen)))
        return rc;
    for (int i = 0; j->opts.devices && i < j->opts.devices->n; i++) {
        fx_device d = j->opts.devices->dev[i];
        if (d.type != FX_DEV_CUDA)
            continue;
        fxsc_device g = { .kind = FXSC_GPU, .slots = 1 };
        fx_device_str(d, g.name, sizeof g.name);
        fx_device_info info;
        if (fx_device_get_info(d, &info) == FX_OK)
            g.memory_bytes = info.limit_bytes ? info.limit_bytes : info.total_bytes;
        if ((rc = fxsc_add_device(j->sc, &g, err, errlen)))
            return rc;
    }
    return 0;
}

void fxj__sched_fini(fxj_jobs *j)
{
    fxsc_free(j->sc);
    j->sc = NULL;
    fxj__reservations_free(j);
    for (int i = 0; i < j->n_teams; i++)
        free(j->teams[i]);
    free(j->teams);
    j->teams = NULL;
    j->n_teams = 0;
}

/* ------------------------------------------------------------ teams */

static bool team_known(fxj_jobs *j, const char *team)
{
    for (int i = 0; i < j->n_teams; i++)
        if (!strcmp(j->teams[i], team))
            return true;
    return false;
}

static void team_remember(fxj_jobs *j, const char *team)
{
    char **n = realloc(j->teams, sizeof *n * (size_t)(j->n_teams + 1));
    if (!n)
        return;
    j->teams = n;
    if ((n[j->n_teams] = strdup(team)))
        j->n_teams++;
}

static int clamp_int(uint32_t v)
{
    return v > INT_MAX ? INT_MAX : (int)v;
}

void fxj_team_cfg(const fxdb_quota *q, fxsc_team_cfg *cfg)
{
    *cfg = (fxsc_team_cfg){ 0 };
    cfg->weight = q->weight > 0 ? q->weight : FXDB_DEFAULT_WEIGHT;
    cfg->nominal_slots[FXSC_CPU] = clamp_int(q->cpu_slots);
    cfg->nominal_slots[FXSC_GPU] = clamp_int(q->gpu_slots);
    cfg->borrow_slots[FXSC_CPU] = clamp_int(q->borrow_cpu_slots);
    cfg->borrow_slots[FXSC_GPU] = clamp_int(q->borrow_gpu_slots);
    cfg->budget_device_seconds = q->budget_device_seconds;
    cfg->budget_window_ms = (int64_t)(q->budget_window_seconds
                                          ? q->budget_window_seconds
                                          : FXDB_DEFAULT_BUDGET_WINDOW_SECONDS) * 1000;
    cfg->max_running = clamp_int(q->max_running_jobs);
    cfg->max_memory[FXSC_GPU] = q->gpu_memory_bytes;
}

/* A team's configuration from the store's effective quota (the defaults,
 * weight 1 and no quota, when it cannot be read). */
static void team_cfg_from_store(fxj_jobs *j, const char *team, fxsc_team_cfg *cfg)
{
    *cfg = (fxsc_team_cfg){ .weight = 1 };
    fxdb_quota q;
    char err[FXS_ERRLEN];
    if (fxdb_team_effective_quota(j->st, team, &q, err, sizeof err) != 0)
        fxl_log(FXL_WARN, "jobs", "no quota for the scheduler team=%s error=\"%s\"", team, err);
    else
        fxj_team_cfg(&q, cfg);
}

void fxj_jobs_team_changed(fxj_jobs *j, const char *team)
{
    fxsc_team_cfg cfg;
    team_cfg_from_store(j, team, &cfg);
    fxj_jobs_set_team(j, team, &cfg);
}

static void team_ensure(fxj_jobs *j, const char *team)
{
    if (team_known(j, team))
        return;
    fxsc_team_cfg cfg;
    team_cfg_from_store(j, team, &cfg);
    char err[FXS_ERRLEN];
    if (fxsc_set_team(j->sc, team, &cfg, err, sizeof err) == 0)
        team_remember(j, team);
}

void fxj_jobs_set_team(fxj_jobs *j, const char *team, const fxsc_team_cfg *cfg)
{
    char err[FXS_ERRLEN];
    pthread_mutex_lock(&j->mu);
    if (fxsc_set_team(j->sc, team, cfg, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "jobs", "cannot configure team=%s error=\"%s\"", team, err);
    } else {
        if (!team_known(j, team))
            team_remember(j, team);
        fxj__schedule(j);
    }
    pthread_mutex_unlock(&j->mu);
}

/* ------------------------------------------------------------ a job's facts */

/*
 * The memory a job needs on its device, for the scheduler (a rough
 * estimate; the engine's own accounting still enforces the job's
 * memory_limit_bytes): with P the bytes of the parameters and buffers,
 *   weights P + gradients P + optimizer state 2P (Adam's two moments)
 *   + activations: batch_size x 4 bytes x (sqrt(P / 4) x 8), i.e. about
 *     eight activation vectors per sample as wide as a square layer,
 * plus 64 MiB for the engine's arenas. Computed at submission (from the
 * graph validation builds) and handed to the core for every job; a device
 * that does not track memory (the CPU) ignores it. A job restored at start
 * gets it only when it asks for a GPU (building its graph costs time); 0:
 * unknown.
 */
uint64_t fxj__memory_formula(int64_t numel, int64_t batch_size)
{
    uint64_t params = numel > 0 ? 4u * (uint64_t)numel : 0; /* fp32 */
    uint64_t batch = batch_size > 0 ? (uint64_t)batch_size : 32;
    uint64_t act = batch * 4u * (uint64_t)(sqrt((double)params / 4.0) * 8.0);
    return 4 * params + act + (64u << 20);
}

uint64_t fxj__estimate_memory(fxj_jobs *j, const Fluxion__V1__JobSpec *spec,
                              int64_t base_version)
{
    fxdb_model_rec mr;
    char err[FXS_ERRLEN];
    if (fxdb_store_get_model(j->st, spec->model, &mr, err, sizeof err) != 0)
        return 0;
    fxg_graph *g = NULL;
    /* the shapes of the base version's spec revision */
    int rc = fxm_use_version_spec(j->st, &mr, base_version, err, sizeof err);
    if (!rc)
        rc = fxm_graph_of(&mr, j->opts.max_params, &g, err, sizeof err);
    fxdb_model_rec_free(&mr);
    if (rc)
        return 0;
    uint64_t m = fxj__memory_formula(fx_params_numel(fxg_params(g)), spec->batch_size);
    fxg_free(g);
    return m;
}

static fxsc_priority prio_of(Fluxion__V1__JobPriority p)
{
    return p == FLUXION__V1__JOB_PRIORITY__LOW    ? FXSC_LOW
           : p == FLUXION__V1__JOB_PRIORITY__HIGH ? FXSC_HIGH
                                                  : FXSC_NORMAL;
}

/* A request's device for the core: "gpu" is any GPU (name ""), anything
 * else the device it resolves to ("": the first enabled). */
static int target_of(fxj_jobs *j, const char *request, const char *what, char *name,
                     fxsc_kind *kind, char *err, size_t errlen)
{
    fx_device d;
    int rc = fxsv_devices_resolve(j->opts.devices, request, what, &d, err, errlen);
    if (rc)
        return rc;
    *kind = d.type == FX_DEV_CUDA ? FXSC_GPU : FXSC_CPU;
    if (request && !strcasecmp(request, "gpu"))
        name[0] = '\0';
    else
        fx_device_str(d, name, FXSC_NAME_MAX);
    return 0;
}

int fxj__sched_submit(fxj_jobs *j, job *x, char *err, size_t errlen)
{
    const Fluxion__V1__JobSpec *spec = x->rec->spec;
    fxsc_job sj = { .id = x->id, .priority = prio_of(spec->priority),
                    .preemptible = !spec->not_preemptible, .slots = 1,
                    .submit_ms = x->rec->created_unix_ms };
    fxp_key_team(spec->model, sj.team, sizeof sj.team);
    const char *request = spec->device;
    fxj__world_plan wp;
    if (spec->world_size > 1) { /* data-parallel: its local ranks, all-or-nothing (job_world.c) */
        int rc = fxj__world_place(j, spec, &wp, err, errlen);
        if (rc)
            return rc;
        sj.slots = wp.nlocal;
        request = wp.request;
    }
    int rc = target_of(j, request, spec->n_placement ? "placement[0]" : "spec.device", sj.device,
                       &sj.kind, err, errlen);
    if (rc)
        return rc;
    if (sj.kind == FXSC_GPU && !x->memory_bytes)
        x->memory_bytes = fxj__estimate_memory(j, spec, x->rec->base_version);
    sj.memory_bytes = x->memory_bytes;
    team_ensure(j, sj.team);
    if ((rc = fxsc_submit(j->sc, &sj, fxu_now_ms(), err, errlen)))
        return rc;
    x->pending = true;
    return 0;
}

/* ------------------------------------------------------------ decisions */

typedef struct {
    fxj_jobs *j;
    job *x;
} run_arg;

/* A job's thread: runs it, then tells the core how it ended. */
static void *job_thread(void *arg)
{
    run_arg a = *(run_arg *)arg;
    free(arg);
    fxj_jobs *j = a.j;
    job *x = a.x;
    fxj__run_job(j, x);
    pthread_mutex_lock(&j->mu);
    char err[FXS_ERRLEN];
    int64_t now = fxu_now_ms();
    if (fxj__is_final(x->rec->state)) {
        fxsc_remove(j->sc, x->id, now, err, sizeof err);
    } else if (x->requeued) {
        x->requeued = false;
        if (fxsc_preempted(j->sc, x->id, now, err, sizeof err) == 0)
            x->pending = true;
        else
            fxl_log(FXL_ERROR, "jobs", "preempted job=%" PRId64 " error=\"%s\"", x->id, err);
    } /* else paused for the shutdown: it stays RUNNING for the next start */
    j->n_running--;
    pthread_cond_broadcast(&j->idle);
    fxj__job_unref(x);
    if (!atomic_load(&j->stopping))
        fxj__schedule(j);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static void start_job(fxj_jobs *j, job *x, const char *device)
{
    char err[FXS_ERRLEN];
    x->pending = false;
    atomic_store(&x->preempt, false);
    if (x->rec->assigned_device && x->rec->assigned_device != protobuf_c_empty_string)
        free(x->rec->assigned_device);
    x->rec->assigned_device = strdup(device);
    x->rec->queue_position = 0;
    if (x->rec->wait_reason && x->rec->wait_reason != protobuf_c_empty_string)
        free(x->rec->wait_reason);
    x->rec->wait_reason = strdup("");
    run_arg *a = malloc(sizeof *a);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int e = a ? 0 : ENOMEM;
    if (a) {
        *a = (run_arg){ j, x };
        x->refs++; /* retire() may drop the list's reference */
        j->n_running++;
        if ((e = pthread_create(&t, &at, job_thread, a)) != 0) {
            free(a);
            x->refs--;
            j->n_running--;
        }
    }
    pthread_attr_destroy(&at);
    if (!e)
        return;
    snprintf(err, sizeof err, "cannot start a thread for the job: %s", strerror(e));
    fxsc_remove(j->sc, x->id, fxu_now_ms(), err, sizeof err);
    x->refs++;
    fxj__set_state(j, x, FLUXION__V1__JOB_STATE__FAILED, err);
    fxj__job_unref(x);
}

static void set_reason(Fluxion__V1__Job *r, const char *reason)
{
    char *n = strdup(reason);
    if (!n)
        return;
    if (r->wait_reason && r->wait_reason != protobuf_c_empty_string)
        free(r->wait_reason);
    r->wait_reason = n;
}

/* Positions and reasons into the records; QUEUED_AT when they changed (at
 * most every QUEUED_AT_EVERY_MS per job: a change in between is announced
 * by a later call, the ticker's at the latest). */
static void refresh_positions(fxj_jobs *j, int64_t now)
{
    fxsc_view v;
    char err[FXS_ERRLEN];
    if (fxsc_snapshot(j->sc, now, &v, err, sizeof err) != 0)
        return;
    for (int i = 0; i < v.n_jobs; i++) {
        const fxsc_job_view *jv = &v.jobs[i];
        if (jv->running)
            continue;
        job *x = fxj__find_active(j, jv->id);
        if (!x || !x->pending)
            continue;
        Fluxion__V1__Job *r = x->rec;
        if (r->queue_position != jv->position || strcmp(r->wait_reason, jv->reason)) {
            r->queue_position = jv->position;
            set_reason(r, jv->reason);
            x->queued_at_dirty = true;
        }
        if (x->queued_at_dirty && now - x->queued_at_ms >= QUEUED_AT_EVERY_MS) {
            x->queued_at_dirty = false;
            x->queued_at_ms = now;
            char msg[FXSC_REASON_MAX + 32];
            snprintf(msg, sizeof msg, "position %d: %s", jv->position, jv->reason);
            fxj__announce(j, x, FLUXION__V1__JOB_EVENT__KIND__QUEUED_AT, msg);
        }
    }
    fxsc_view_free(&v);
}

void fxj__schedule(fxj_jobs *j)
{
    if (!j->sc || atomic_load(&j->stopping))
        return;
    int64_t now = fxu_now_ms();
    fxsc_decision d[32];
    int n;
    do {
        if (fxsc_decide(j->sc, now, d, 32, &n) != 0)
            break;
        for (int i = 0; i < n; i++) {
            if (d[i].job >= FXJ__RANK_ID_BASE) { /* a peer's rank: never preempted */
                if (d[i].action == FXSC_START && d[i].job == j->rank_admitting)
                    j->rank_admitted = true;
                continue;
            }
            job *x = fxj__find_active(j, d[i].job);
            if (!x) {
                char err[FXS_ERRLEN];
                fxsc_remove(j->sc, d[i].job, now, err, sizeof err);
                continue;
            }
            if (d[i].action == FXSC_START) {
                fxl_log(FXL_INFO, "jobs", "job scheduled job=%" PRId64 " device=%s", x->id,
                        d[i].device);
                start_job(j, x, d[i].device);
            } else if (d[i].action == FXSC_PREEMPT) {
                snprintf(x->preempt_for, sizeof x->preempt_for, "%s", d[i].reason);
                atomic_store(&x->preempt, true);
                fxl_log(FXL_INFO, "jobs", "job preempting job=%" PRId64 " for=\"%s\"", x->id,
                        d[i].reason);
            }
        }
    } while (n == 32);
    refresh_positions(j, now);
}

/* ------------------------------------------------------ peers' ranks */

/* A queued job's reason in the core ("" when it has none). */
static void reason_of(fxj_jobs *j, int64_t id, char *out, size_t outlen)
{
    fxsc_view v;
    char err[FXS_ERRLEN];
    snprintf(out, outlen, "%s", "");
    if (fxsc_snapshot(j->sc, fxu_now_ms(), &v, err, sizeof err) != 0)
        return;
    for (int i = 0; i < v.n_jobs; i++)
        if (v.jobs[i].id == id)
            snprintf(out, outlen, "%s", v.jobs[i].reason);
    fxsc_view_free(&v);
}

int fxj_jobs_admit_rank(fxj_jobs *j, const char *device, int64_t *ticket, char *err,
                        size_t errlen)
{
    *ticket = 0;
    fxsc_job sj = { .priority = FXSC_NORMAL, .preemptible = false, .slots = 1 };
    snprintf(sj.team, sizeof sj.team, "%s", FXJ_PEERS_TEAM);
    int rc = target_of(j, device && *device ? device : "cpu", "assignment.device", sj.device,
                       &sj.kind, err, errlen);
    if (rc)
        return rc;
    const char *node = j->opts.peers ? fxpr_node(j->opts.peers) : "";
    pthread_mutex_lock(&j->mu);
    if (!j->sc || atomic_load(&j->stopping)) {
        pthread_mutex_unlock(&j->mu);
        return fxu_fail(err, errlen, FXS_UNAVAILABLE, "%s is shutting down", node);
    }
    if (!team_known(j, FXJ_PEERS_TEAM)) { /* best-effort: no quota, weight 1 */
        fxsc_team_cfg cfg = { .weight = 1 };
        if (fxsc_set_team(j->sc, FXJ_PEERS_TEAM, &cfg, err, errlen) == 0)
            team_remember(j, FXJ_PEERS_TEAM);
    }
    int64_t now = fxu_now_ms();
    sj.id = FXJ__RANK_ID_BASE + ++j->rank_next;
    sj.submit_ms = now;
    if (!(rc = fxsc_submit(j->sc, &sj, now, err, errlen))) {
        j->rank_admitting = sj.id;
        j->rank_admitted = false;
        fxj__schedule(j);
        j->rank_admitting = 0;
        if (j->rank_admitted) {
            *ticket = sj.id;
        } else {
            char why[FXSC_REASON_MAX];
            reason_of(j, sj.id, why, sizeof why);
            fxsc_remove(j->sc, sj.id, fxu_now_ms(), err, errlen);
            fxj__schedule(j); /* what it held (no backfill) is free again */
            rc = fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "no free slot on %s of %s: %s",
                          sj.device[0] ? sj.device : "a GPU", node, why[0] ? why : "busy");
        }
    }
    pthread_mutex_unlock(&j->mu);
    if (!rc)
        fxl_log(FXL_INFO, "jobs", "peer rank admitted ticket=%" PRId64 " device=%s", sj.id,
                sj.device);
    return rc;
}

void fxj_jobs_release_rank(fxj_jobs *j, int64_t ticket)
{
    if (!j || !ticket)
        return;
    char err[FXS_ERRLEN];
    pthread_mutex_lock(&j->mu);
    if (j->sc) {
        fxsc_remove(j->sc, ticket, fxu_now_ms(), err, sizeof err);
        fxj__schedule(j);
    }
    pthread_mutex_unlock(&j->mu);
}

/* ------------------------------------------------- served models' memory */

/* A served model's reservation: its weights on its device (GPUs, where the
 * core tracks memory; the CPU's memory is not handed out). */
typedef struct fxj__resv {
    char *key;
    char device[FXSC_NAME_MAX];
    uint64_t bytes;
} resv;

/* Read from serving without j->mu (serving has its own lock). */
static int collect_reservations(fxsv_serving *sv, resv **out)
{
    *out = NULL;
    fxsv_served **all = NULL;
    int n = 0, k = 0;
    if (!sv || fxsv_serving_list(sv, &all, &n) != 0)
        return 0;
    resv *r = calloc(n ? (size_t)n : 1, sizeof *r);
    for (int i = 0; i < n; i++) {
        const fxg_graph *g = fxsv_served_graph(all[i]);
        fx_device dev = fxg_device(g);
        if (r && dev.type != FX_DEV_CPU && (r[k].key = strdup(fxsv_served_name(all[i])))) {
            const fx_params *ps = fxg_params(g);
            for (int p = 0; p < ps->count; p++)
                r[k].bytes += (uint64_t)fx_tensor_numel(ps->items[p].tensor) *
                              fx_dtype_size(ps->items[p].tensor->dtype);
            fx_device_str(dev, r[k].device, sizeof r[k].device);
            k++;
        }
        fxsv_served_release(all[i]);
    }
    free(all);
    *out = r;
    return k;
}

static bool has_key(const resv *r, int n, const char *key, const char *device)
{
    for (int i = 0; i < n; i++)
        if (strcmp(r[i].key, key) == 0 && strcmp(r[i].device, device) == 0)
            return true;
    return false;
}

/* Under j->mu: the core's reservations become r[0..n) (taken): the new and
 * changed ones set, the ones gone (unloaded, moved) released. */
static void apply_reservations(fxj_jobs *j, resv *r, int n)
{
    char err[FXS_ERRLEN];
    for (int i = 0; i < n; i++)
        if (fxsc_reserve(j->sc, r[i].key, r[i].device, r[i].bytes, err, sizeof err) != 0)
            fxl_log(FXL_WARN, "jobs", "served model not reserved model=%s device=%s error=\"%s\"",
                    r[i].key, r[i].device, err);
    for (int i = 0; i < j->n_reserved; i++) {
        if (!has_key(r, n, j->reserved[i].key, j->reserved[i].device))
            fxsc_reserve(j->sc, j->reserved[i].key, j->reserved[i].device, 0, err, sizeof err);
        free(j->reserved[i].key);
    }
    free(j->reserved);
    j->reserved = r;
    j->n_reserved = r ? n : 0;
}

void fxj__reservations_free(fxj_jobs *j)
{
    for (int i = 0; i < j->n_reserved; i++)
        free(j->reserved[i].key);
    free(j->reserved);
    j->reserved = NULL;
    j->n_reserved = 0;
}

/* ------------------------------------------------------------ the ticker */

static void *ticker_main(void *arg)
{
    fxj_jobs *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!atomic_load(&j->stopping)) {
        pthread_mutex_unlock(&j->mu);
        resv *r = NULL;
        int nr = collect_reservations(j->sv, &r);
        pthread_mutex_lock(&j->mu);
        apply_reservations(j, r, nr);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&j->tick, &j->mu, &ts);
        fxj__schedule(j);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int fxj__sched_ticker_start(fxj_jobs *j, char *err, size_t errlen)
{
    int e = pthread_create(&j->ticker, NULL, ticker_main, j);
    if (e)
        return fxu_fail(err, errlen, e == EAGAIN ? FXS_RESOURCE_EXHAUSTED : FXS_INTERNAL,
                        "jobs: cannot start the scheduler's thread: %s", strerror(e));
    j->ticking = true;
    return 0;
}

void fxj__sched_stop(fxj_jobs *j)
{
    if (j->ticking) {
        pthread_join(j->ticker, NULL);
        j->ticking = false;
    }
    pthread_mutex_lock(&j->mu);
    while (j->n_running > 0)
        pthread_cond_wait(&j->idle, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

/* ------------------------------------------------------------ the API */

int fxj_jobs_queue(fxj_jobs *j, fxsc_view *out, char *err, size_t errlen)
{
    pthread_mutex_lock(&j->mu);
    int rc = fxsc_snapshot(j->sc, fxu_now_ms(), out, err, errlen);
    pthread_mutex_unlock(&j->mu);
    return rc;
}

static void set_spec_str(char **slot, const char *v)
{
    char *n = strdup(v);
    if (!n)
        return;
    if (*slot && *slot != protobuf_c_empty_string)
        free(*slot);
    *slot = n;
}

int fxj_jobs_update(fxj_jobs *j, const char *id, Fluxion__V1__JobPriority prio,
                    const char *device, Fluxion__V1__Job **out, char *err, size_t errlen)
{
    *out = NULL;
    int64_t n;
    int rc = fxj__parse_id(id, &n, err, errlen);
    if (rc)
        return rc;
    if (prio != FLUXION__V1__JOB_PRIORITY__JOB_PRIORITY_UNSPECIFIED &&
        !protobuf_c_enum_descriptor_get_value(&fluxion__v1__job_priority__descriptor, (int)prio))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "priority: %d is not a priority",
                        (int)prio);
    char name[FXSC_NAME_MAX];
    fxsc_kind kind = FXSC_CPU;
    bool move = device && *device;
    if (move && (rc = target_of(j, device, "device", name, &kind, err, errlen)))
        return FXS_INVALID_ARGUMENT; /* bad text, or a device not enabled here */
    pthread_mutex_lock(&j->mu);
    job *x = fxj__find_active(j, n);
    if (!x) {
        Fluxion__V1__Job *r = NULL;
        rc = fxj__load_one(j, n, &r, err, errlen);
        if (!rc) {
            rc = fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "job %" PRId64
                          " already finished (%s): only a queued job can be changed", n,
                          fxj__state_name(r->state));
            fluxion__v1__job__free_unpacked(r, NULL);
        }
    } else if (!x->pending) {
        rc = fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                      "job %" PRId64 " is running: only a queued job can be changed", n);
    } else {
        /* sched.h's fxsc_update keeps the memory estimate given at submission
         * (a job restored at start on the CPU has none: 0, unknown). */
        fxsc_priority p = prio ? prio_of(prio) : prio_of(x->rec->spec->priority);
        rc = fxsc_update(j->sc, n, p, move ? name : NULL, kind, err, errlen);
        if (!rc) {
            if (prio)
                x->rec->spec->priority = prio;
            if (move)
                set_spec_str(&x->rec->spec->device, device);
            fxj__commit(j, x, 0, NULL);
            fxl_log(FXL_INFO, "jobs", "job updated job=%" PRId64 " priority=%d device=%s", n,
                    (int)x->rec->spec->priority, x->rec->spec->device);
            fxj__schedule(j);
            if (!(*out = fxj__job_copy(x->rec)))
                rc = fxu_oom(err, errlen);
        }
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}
