/* svc_cluster.c - fluxion.v1.ClusterService: what the daemon runs on and does. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "base/pbarena.h"
#include "fluxion/v1/cluster.pb-c.h"
#include "sched/sched.h"

/* One enabled device: memory as the engine reports it. A device whose
 * driver stopped answering is listed with its name and no figures. */
static void device_msg(const fxa_daemon *d, fx_device dev, Fluxion__V1__Device *m, char *name,
                       char *model, char *cc)
{
    *m = (Fluxion__V1__Device)FLUXION__V1__DEVICE__INIT;
    m->name = (char *)fx_device_str(dev, name, 32);
    m->kind = dev.type == FX_DEV_CPU ? "cpu" : "cuda";
    m->model = model;
    m->compute_capability = cc;
    snprintf(model, 96, "%s", m->name);
    cc[0] = 0;
    fx_device_info info;
    if (fx_device_get_info(dev, &info) != FX_OK)
        return;
    snprintf(model, 96, "%s", info.name);
    m->memory_total_bytes = info.total_bytes;
    m->memory_free_bytes = info.free_bytes;
    m->memory_limit_bytes = info.limit_bytes;
    if (dev.type == FX_DEV_CPU) {
        m->threads = d->engine_threads;
        if (info.total_bytes >= info.free_bytes)
            m->memory_used_bytes = info.total_bytes - info.free_bytes;
        return;
    }
    snprintf(cc, 16, "%d.%d", info.cc_major, info.cc_minor);
    m->memory_used_bytes = info.used_bytes;
    fx_device_mem_stats ms;
    if (fx_device_mem_stats_get(dev, &ms) == FX_OK)
        m->memory_reserved_bytes = ms.reserved;
}

static void get_status(fxr_call *call, const ProtobufCMessage *req, void *data)
{
    fxa_daemon *d = data;
    char err[512];
    fxdb_model_rec *recs = NULL;
    int n = 0;
    /* the caller's team's models (an admin's: all) */
    int rc = fxdb_store_list_models(d->store, fxa_list_team(call), &recs, &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    int loaded = 0;
    for (int i = 0; i < n; i++) {
        loaded += fxsv_serving_is_loaded(d->serving, recs[i].name, NULL);
        fxdb_model_rec_free(&recs[i]);
    }
    free(recs);

    Fluxion__V1__Device devs[FXSV_MAX_DEVICES], *pdevs[FXSV_MAX_DEVICES];
    char names[FXSV_MAX_DEVICES][32], models[FXSV_MAX_DEVICES][96], ccs[FXSV_MAX_DEVICES][16];
    for (int i = 0; i < d->devices.n; i++) {
        device_msg(d, d->devices.dev[i], &devs[i], names[i], models[i], ccs[i]);
        pdevs[i] = &devs[i];
    }
    Fluxion__V1__GetStatusResponse r = FLUXION__V1__GET_STATUS_RESPONSE__INIT;
    r.version = FX_VERSION_STRING;
    r.uptime_ms = fxu_now_ms() - d->start_ms;
    r.devices = pdevs;
    r.n_devices = (size_t)d->devices.n;
    r.models_stored = n;
    r.models_loaded = loaded;
    r.requests_in_flight = fxr_server_in_flight(d->rpc);
    r.requests_total = fxr_server_total_calls(d->rpc);
    /* where the daemon keeps its files is the operator's business */
    r.data_dir = fxr_principal(call)->role == FXP_ADMIN ? (char *)d->data_dir : "";
    fxr_reply(call, &r.base);
}

/* ------------------------------------------------------------ GetQueue */

static const char *priority_name(fxsc_priority p)
{
    return p == FXSC_HIGH ? "HIGH" : p == FXSC_LOW ? "LOW" : "NORMAL";
}

/* One job of the snapshot as the caller sees it; its model from the job's
 * record (a job that ended since the snapshot keeps an empty model). */
static Fluxion__V1__QueuedJob *queued_job_msg(pba *a, fxr_call *call, fxa_daemon *d,
                                              const fxsc_job_view *v)
{
    Fluxion__V1__QueuedJob *m = PBA_NEW(a, Fluxion__V1__QueuedJob,
                                        fluxion__v1__queued_job__init);
    if (!m)
        return NULL;
    char id[24], err[FXS_ERRLEN];
    snprintf(id, sizeof id, "%" PRId64, v->id);
    m->id = pba_strdup(a, id);
    m->team = pba_strdup(a, v->team);
    Fluxion__V1__Job *job = NULL;
    if (fxj_jobs_get(d->jobs, id, &job, err, sizeof err) == 0 && job->spec && job->spec->model)
        m->model = pba_strdup(a, fxa_show(call, job->spec->model));
    if (job)
        fluxion__v1__job__free_unpacked(job, NULL);
    m->state = v->running ? "RUNNING" : "QUEUED";
    m->priority = (char *)priority_name(v->priority);
    m->preemptible = v->preemptible;
    m->device = pba_strdup(a, v->device);
    m->position = v->running ? 0 : v->position;
    m->reason = pba_strdup(a, v->running ? "" : v->reason);
    m->submitted_ms = v->submit_ms;
    m->started_ms = v->start_ms;
    m->preemptions = v->preemptions;
    m->memory_bytes = v->memory_bytes;
    return m;
}

static Fluxion__V1__DeviceQueue *device_queue_msg(pba *a, const fxsc_device_view *v)
{
    Fluxion__V1__DeviceQueue *m = PBA_NEW(a, Fluxion__V1__DeviceQueue,
                                          fluxion__v1__device_queue__init);
    if (m) {
        m->device = pba_strdup(a, v->name);
        m->slots = v->slots;
        m->slots_used = v->slots_used;
        m->memory_bytes = v->memory_bytes;
        m->memory_reserved_bytes = v->memory_reserved;
        m->memory_used_bytes = v->memory_used;
        m->served_models = v->reservations;
    }
    return m;
}

static Fluxion__V1__TeamShare *team_share_msg(pba *a, const fxsc_team_view *v)
{
    Fluxion__V1__TeamShare *m = PBA_NEW(a, Fluxion__V1__TeamShare,
                                        fluxion__v1__team_share__init);
    if (m) {
        m->team = pba_strdup(a, v->team);
        m->weight = v->weight;
        m->running = v->running;
        m->queued = v->queued;
        m->slots_used = v->slots_used;
        m->nominal_slots = v->nominal_slots;
        m->borrow_slots = v->borrow_slots;
        m->usage = v->usage;
        m->share = v->share;
        m->fair_share = v->fair_share;
        m->budget_used_seconds = v->budget_used;
        m->budget_seconds = v->budget;
        m->preemptions = v->preemptions;
    }
    return m;
}

/* The scheduler's snapshot: every device as it is (other teams' jobs count
 * in its totals), and the caller's team's row and jobs (an admin's: all). */
static void get_queue(fxr_call *call, const ProtobufCMessage *req, void *data)
{
    (void)req;
    fxa_daemon *d = data;
    if (!d->jobs) {
        fxr_fail(call, FXS_UNAVAILABLE, "training is not available on this server");
        return;
    }
    char err[FXS_ERRLEN];
    fxsc_view v;
    memset(&v, 0, sizeof v);
    int rc = fxj_jobs_queue(d->jobs, &v, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    const char *team = fxa_list_team(call); /* NULL: every team */
    pba a = { 0 };
    Fluxion__V1__GetQueueResponse r = FLUXION__V1__GET_QUEUE_RESPONSE__INIT;
    r.devices = pba_array(&a, (size_t)v.n_devices + 1, sizeof *r.devices);
    r.teams = pba_array(&a, (size_t)v.n_teams + 1, sizeof *r.teams);
    r.jobs = pba_array(&a, (size_t)v.n_jobs + 1, sizeof *r.jobs);
    for (int i = 0; r.devices && i < v.n_devices; i++)
        if ((r.devices[r.n_devices] = device_queue_msg(&a, &v.devices[i])))
            r.n_devices++;
    for (int i = 0; r.teams && i < v.n_teams; i++)
        if ((!team || strcmp(team, v.teams[i].team) == 0) &&
            (r.teams[r.n_teams] = team_share_msg(&a, &v.teams[i])))
            r.n_teams++;
    for (int i = 0; r.jobs && i < v.n_jobs; i++)
        if ((!team || strcmp(team, v.jobs[i].team) == 0) &&
            (r.jobs[r.n_jobs] = queued_job_msg(&a, call, d, &v.jobs[i])))
            r.n_jobs++;
    if (a.failed || !r.devices || !r.teams || !r.jobs)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &r.base);
    pba_free(&a);
    fxsc_view_free(&v);
}

int fxa_register_cluster_service(fxa_daemon *d)
{
    static const fxr_method methods[] = {
        { "GetStatus", FXR_UNARY, FXP_READ, get_status },
        { "GetQueue", FXR_UNARY, FXP_READ, get_queue },
        { "GetMetrics", FXR_UNARY, FXP_READ, fxa_get_metrics }, /* svc_metrics.c */
    };
    return fxr_server_add_service(d->rpc, &fluxion__v1__cluster_service__descriptor, methods,
                                  (int)(sizeof methods / sizeof methods[0]), d);
}
