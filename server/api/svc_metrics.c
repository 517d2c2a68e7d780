/*
 * svc_metrics.c - ClusterService/GetMetrics: the daemon's metrics as the
 * Prometheus text exposition (docs/metrics.md lists every family). It reads
 * each module's own snapshot (serving's statistics records, the devices,
 * training jobs, the scheduler, the rpc server, /proc/self) and writes them
 * with metrics/metrics.h, which escapes what clients named (model names).
 *
 * Team scoping: an admin sees every team's series; another caller those
 * whose team label is its own, and the process-wide ones (no team label:
 * the process, the rpc server, the devices as GetQueue shows them to all).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "api/api.h"
#include "base/log.h"
#include "base/principal.h"
#include "fluxion/v1/cluster.pb-c.h"
#include "metrics/metrics.h"
#include "sched/sched.h"

#define NS 1e-9

/* The view of one call: the team it may see (NULL: every team). */
typedef struct {
    fxm_writer w;
    const char *team;
    fxa_daemon *d;
} collector;

static bool sees(const collector *c, const char *team)
{
    return !c->team || strcmp(c->team, team) == 0;
}

static void gauge(collector *c, const char *name, const char *help, double v)
{
    fxm_family(&c->w, name, FXM_GAUGE, help);
    fxm_sample(&c->w, NULL, 0, v);
}

/* ------------------------------------------------------------- process */

/* VmRSS (bytes) and Threads from /proc/self/status; -1 when unreadable. */
static void proc_status(double *rss, double *threads)
{
    *rss = *threads = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    unsigned long long v;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &v) == 1)
            *rss = (double)v * 1024;
        else if (sscanf(line, "Threads: %llu", &v) == 1)
            *threads = (double)v;
    }
    fclose(f);
}

static double open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(dir));)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n - 1; /* the directory's own descriptor */
}

static void process_metrics(collector *c)
{
    fxa_daemon *d = c->d;
    fxm_label v[] = { { "version", FX_VERSION_STRING } };
    fxm_family(&c->w, "fluxion_build_info", FXM_GAUGE, "The daemon's version (always 1).");
    fxm_sample(&c->w, v, 1, 1);
    gauge(c, "fluxion_uptime_seconds", "Seconds since the daemon started.",
          (double)(fxu_now_ms() - d->start_ms) / 1000);
    double rss, threads, fds = open_fds();
    proc_status(&rss, &threads);
    if (rss >= 0)
        gauge(c, "fluxion_process_resident_memory_bytes", "Resident memory (VmRSS).", rss);
    if (threads >= 0)
        gauge(c, "fluxion_process_threads", "Threads of the daemon.", threads);
    if (fds >= 0)
        gauge(c, "fluxion_process_open_fds", "Open file descriptors.", fds);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        fxm_family(&c->w, "fluxion_process_cpu_seconds_total", FXM_COUNTER,
                   "CPU time (user and system) of the daemon.");
        fxm_sample(&c->w, NULL, 0,
                   (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6);
    }
    fxm_family(&c->w, "fluxion_grpc_calls_total", FXM_COUNTER,
               "gRPC calls received (every service; local HTTP calls too).");
    fxm_sample(&c->w, NULL, 0, (double)fxr_server_total_calls(d->rpc));
    gauge(c, "fluxion_grpc_calls_in_flight", "Calls received and not yet finished.",
          (double)fxr_server_in_flight(d->rpc));
    gauge(c, "fluxion_grpc_open_streams", "Streaming calls open (watches, uploads, exports).",
          (double)fxr_server_open_streams(d->rpc));
    gauge(c, "fluxion_rpc_inflight_bytes",
          "Request bytes held by calls in flight, gRPC and HTTP (--max-inflight-mb).",
          (double)fxr_server_inflight_bytes(d->rpc));
    fxm_family(&c->w, "fluxion_rpc_limit_rejections_total", FXM_COUNTER,
               "Calls refused by an in-flight limit (RESOURCE_EXHAUSTED, HTTP 429), by limit.");
    const char *name;
    for (int i = 0; fxr_server_limit_rejections(d->rpc, &name, i), name; i++) {
        fxm_label l[] = { { "limit", name } };
        fxm_sample(&c->w, l, 1, (double)fxr_server_limit_rejections(d->rpc, &name, i));
    }
}

/* ------------------------------------------------------------- devices */

static void device_metrics(collector *c)
{
    fxa_daemon *d = c->d;
    static const char *names[] = { "fluxion_device_memory_total_bytes",
                                   "fluxion_device_memory_free_bytes",
                                   "fluxion_device_memory_used_bytes" };
    static const char *helps[] = {
        "Device memory (CUDA) or physical memory (CPU).",
        "Free memory as the driver (or the kernel) reports it.",
        "Memory held by Fluxion on the device (CUDA); total minus free on the CPU.",
    };
    char dn[FXSV_MAX_DEVICES][32];
    fx_device_info info[FXSV_MAX_DEVICES];
    bool ok[FXSV_MAX_DEVICES];
    for (int i = 0; i < d->devices.n; i++) {
        fx_device_str(d->devices.dev[i], dn[i], sizeof dn[i]);
        ok[i] = fx_device_get_info(d->devices.dev[i], &info[i]) == FX_OK;
    }
    for (int f = 0; f < 3; f++) {
        fxm_family(&c->w, names[f], FXM_GAUGE, helps[f]);
        for (int i = 0; i < d->devices.n; i++) {
            if (!ok[i])
                continue; /* a driver that stopped answering: no figures */
            fxm_label l[] = { { "device", dn[i] } };
            double used = d->devices.dev[i].type == FX_DEV_CPU
                              ? (info[i].total_bytes >= info[i].free_bytes
                                     ? (double)(info[i].total_bytes - info[i].free_bytes) : 0)
                              : (double)info[i].used_bytes;
            double v = f == 0 ? (double)info[i].total_bytes
                     : f == 1 ? (double)info[i].free_bytes : used;
            fxm_sample(&c->w, l, 1, v);
        }
    }
    fxm_family(&c->w, "fluxion_device_inference_pending", FXM_GAUGE,
               "Inference requests queued or running on the device (every team's).");
    for (int i = 0; i < d->devices.n; i++) {
        fxm_label l[] = { { "device", dn[i] } };
        fxm_sample(&c->w, l, 1, fxsv_serving_pressure(d->serving, d->devices.dev[i]));
    }
}

/* ------------------------------------------------------------- serving */

/* The labels of a record: team, model (the name part), version. */
typedef struct {
    char team[FXP_TEAM_MAX + 1], version[24];
    fxm_label l[4];
} model_labels;

static void labels_of(const fxsv_model_metrics *m, model_labels *ml)
{
    fxp_key_team(m->name, ml->team, sizeof ml->team);
    snprintf(ml->version, sizeof ml->version, "%lld", (long long)m->version);
    ml->l[0] = (fxm_label){ "team", ml->team };
    ml->l[1] = (fxm_label){ "model", fxp_key_name(m->name) };
    ml->l[2] = (fxm_label){ "version", ml->version };
}

enum { F_LOADED, F_SAMPLES, F_EXECUTIONS, F_QUEUE_DEPTH, F_IN_FLIGHT, F_LOADS, F_UNLOADS,
       F_COUNT };

static void model_family(collector *c, const fxsv_model_metrics *ms, int n, int f)
{
    static const struct { const char *name, *help; fxm_type t; } fams[F_COUNT] = {
        { "fluxion_model_loaded", "1 while a version is served (loaded), else 0.", FXM_GAUGE },
        { "fluxion_inference_samples_total", "Samples inferred (inference_count of "
          "ModelStatistics).", FXM_COUNTER },
        { "fluxion_inference_executions_total", "Batches run (execution_count).", FXM_COUNTER },
        { "fluxion_inference_queue_depth", "Requests queued or in a running batch.", FXM_GAUGE },
        { "fluxion_inference_in_flight", "Requests submitted and not yet answered.", FXM_GAUGE },
        { "fluxion_model_loads_total", "Instances built: load, reload, new serving settings, "
          "an older version on demand.", FXM_COUNTER },
        { "fluxion_model_unloads_total", "Instances unloaded (RepositoryModelUnload, delete).",
          FXM_COUNTER },
    };
    fxm_family(&c->w, fams[f].name, fams[f].t, fams[f].help);
    for (int i = 0; i < n; i++) {
        const fxsv_model_metrics *m = &ms[i];
        model_labels ml;
        labels_of(m, &ml);
        if (!sees(c, ml.team))
            continue;
        double v = f == F_LOADED ? m->served
                 : f == F_SAMPLES ? (double)m->stats.inference_count
                 : f == F_EXECUTIONS ? (double)m->stats.execution_count
                 : f == F_QUEUE_DEPTH ? m->queue_depth
                 : f == F_IN_FLIGHT ? (m->in_flight > 0 ? m->in_flight : 0)
                 : f == F_LOADS ? (double)m->loads : (double)m->unloads;
        fxm_sample(&c->w, ml.l, 3, v);
    }
}

static void duration_family(collector *c, const fxsv_model_metrics *ms, int n, const char *name,
                            const char *help, size_t offset)
{
    fxm_family(&c->w, name, FXM_HISTOGRAM, help);
    for (int i = 0; i < n; i++) {
        model_labels ml;
        labels_of(&ms[i], &ml);
        if (!sees(c, ml.team))
            continue;
        const fxsv_duration_hist *h = (const void *)((const char *)&ms[i] + offset);
        fxm_histogram(&c->w, ml.l, 3, fxsv_duration_bounds_s, h->counts, FXSV_DURATION_BOUNDS,
                      (double)h->sum_ns * NS);
    }
}

static void serving_metrics(collector *c)
{
    fxsv_model_metrics *ms;
    int n;
    if (fxsv_serving_metrics(c->d->serving, &ms, &n) != 0) {
        fxm_family(&c->w, "fluxion_metrics_out_of_memory", FXM_GAUGE, "");
        fxm_sample(&c->w, NULL, 0, 1);
        return;
    }
    fxm_family(&c->w, "fluxion_inference_requests_total", FXM_COUNTER,
               "Inference requests answered, by status code (OK, or the failure's gRPC code).");
    for (int i = 0; i < n; i++) {
        model_labels ml;
        labels_of(&ms[i], &ml);
        if (!sees(c, ml.team))
            continue;
        for (int code = 0; code < FXSV_CODES; code++) {
            if (code && !ms[i].requests[code])
                continue; /* OK always; a failure's code once it happened */
            ml.l[3] = (fxm_label){ "code", fxs_status_name(code) };
            fxm_sample(&c->w, ml.l, 4, (double)ms[i].requests[code]);
        }
    }
    duration_family(c, ms, n, "fluxion_inference_request_duration_seconds",
                    "Received to answered, of the requests that succeeded.",
                    offsetof(fxsv_model_metrics, request));
    duration_family(c, ms, n, "fluxion_inference_queue_duration_seconds",
                    "Received to its batch starting, of the requests that succeeded.",
                    offsetof(fxsv_model_metrics, queue));
    duration_family(c, ms, n, "fluxion_inference_compute_duration_seconds",
                    "Its batch's input, forward pass and output, of the requests that succeeded.",
                    offsetof(fxsv_model_metrics, compute));
    fxm_family(&c->w, "fluxion_inference_batch_size", FXM_HISTOGRAM,
               "Samples per batch run.");
    for (int i = 0; i < n; i++) {
        model_labels ml;
        labels_of(&ms[i], &ml);
        if (sees(c, ml.team))
            fxm_histogram(&c->w, ml.l, 3, fxsv_batch_bounds, ms[i].batch_counts,
                          FXSV_BATCH_BOUNDS, (double)ms[i].batch_samples);
    }
    for (int f = 0; f < F_COUNT; f++)
        model_family(c, ms, n, f);
    fxsv_model_metrics_free(ms, n);
}

/* ------------------------------------------------------------ training */

static const char *state_names[] = { "unspecified", "queued", "running", "succeeded", "failed",
                                     "cancelled" };
#define N_STATES 6

typedef struct {
    char team[FXP_TEAM_MAX + 1];
    int n[N_STATES];
} team_jobs;

static void training_metrics(collector *c)
{
    fxa_daemon *d = c->d;
    Fluxion__V1__Job **jobs = NULL;
    int n = 0;
    char err[FXS_ERRLEN];
    if (fxj_jobs_list(d->jobs, FLUXION__V1__JOB_STATE__JOB_STATE_UNSPECIFIED, NULL, &jobs, &n,
                      err, sizeof err) != 0) {
        fxl_log(FXL_WARN, "metrics", "cannot list jobs err=\"%s\"", err);
        return;
    }
    team_jobs *tj = calloc((size_t)n + 1, sizeof *tj);
    int nt = 0;
    fxm_family(&c->w, "fluxion_training_samples_per_second", FXM_GAUGE,
               "Training throughput of each running job.");
    for (int i = 0; tj && i < n; i++) {
        const Fluxion__V1__Job *j = jobs[i];
        if (!j->spec || !j->spec->model)
            continue;
        char team[FXP_TEAM_MAX + 1];
        fxp_key_team(j->spec->model, team, sizeof team);
        if (!sees(c, team))
            continue;
        int k = 0;
        while (k < nt && strcmp(tj[k].team, team) != 0)
            k++;
        if (k == nt)
            snprintf(tj[nt++].team, sizeof tj[0].team, "%s", team);
        int st = j->state >= 0 && j->state < N_STATES ? (int)j->state : 0;
        tj[k].n[st]++;
        if (j->state == FLUXION__V1__JOB_STATE__RUNNING && j->progress) {
            fxm_label l[] = { { "team", team }, { "job", j->id }, { "model",
                              fxp_key_name(j->spec->model) } };
            fxm_sample(&c->w, l, 3, j->progress->samples_per_second);
        }
    }
    fxm_family(&c->w, "fluxion_training_jobs", FXM_GAUGE,
               "Training jobs by state (stored jobs, finished ones included).");
    for (int k = 0; k < nt; k++)
        for (int s = 1; s < N_STATES; s++) {
            fxm_label l[] = { { "team", tj[k].team }, { "state", state_names[s] } };
            fxm_sample(&c->w, l, 2, tj[k].n[s]);
        }
    free(tj);
    for (int i = 0; i < n; i++)
        fluxion__v1__job__free_unpacked(jobs[i], NULL);
    free(jobs);
}

/* ----------------------------------------------------------- scheduler */

enum { S_RUNNING, S_QUEUED, S_SLOTS_USED, S_QUOTA, S_BORROW, S_USAGE, S_SHARE, S_FAIR,
       S_BUDGET_USED, S_BUDGET, S_PREEMPTIONS, S_COUNT };

static double team_value(const fxsc_team_view *t, int f)
{
    switch (f) {
    case S_RUNNING: return t->running;
    case S_QUEUED: return t->queued;
    case S_SLOTS_USED: return t->slots_used;
    case S_QUOTA: return t->nominal_slots;
    case S_BORROW: return t->borrow_slots;
    case S_USAGE: return t->usage;
    case S_SHARE: return t->share;
    case S_FAIR: return t->fair_share;
    case S_BUDGET_USED: return t->budget_used;
    case S_BUDGET: return t->budget;
    default: return t->preemptions;
    }
}

static void sched_metrics(collector *c)
{
    static const struct { const char *name, *help; fxm_type t; } fams[S_COUNT] = {
        { "fluxion_scheduler_team_running_jobs", "The team's running jobs.", FXM_GAUGE },
        { "fluxion_scheduler_team_queued_jobs", "The team's queued jobs.", FXM_GAUGE },
        { "fluxion_scheduler_team_slots_used", "Device slots the team's jobs hold.", FXM_GAUGE },
        { "fluxion_scheduler_team_quota_slots", "The team's nominal quota in slots (0: none, "
          "fair share only).", FXM_GAUGE },
        { "fluxion_scheduler_team_borrow_slots", "Slots the team may borrow beyond its quota.",
          FXM_GAUGE },
        { "fluxion_scheduler_team_usage_device_seconds", "The team's decayed device usage.",
          FXM_GAUGE },
        { "fluxion_scheduler_team_share", "The team's usage over all usage (0..1).", FXM_GAUGE },
        { "fluxion_scheduler_team_fair_share", "The team's weight over the weights of teams "
          "with work (0..1).", FXM_GAUGE },
        { "fluxion_scheduler_team_budget_used_seconds", "Device time used in the budget window.",
          FXM_GAUGE },
        { "fluxion_scheduler_team_budget_seconds", "The team's budget per window (0: none).",
          FXM_GAUGE },
        { "fluxion_scheduler_team_preemptions_total", "The team's jobs preempted since the "
          "daemon started.", FXM_COUNTER },
    };
    fxsc_view v;
    memset(&v, 0, sizeof v);
    char err[FXS_ERRLEN];
    if (fxj_jobs_queue(c->d->jobs, &v, err, sizeof err) != 0) {
        fxl_log(FXL_WARN, "metrics", "cannot read the scheduler err=\"%s\"", err);
        return;
    }
    for (int f = 0; f < S_COUNT; f++) {
        fxm_family(&c->w, fams[f].name, fams[f].t, fams[f].help);
        for (int i = 0; i < v.n_teams; i++) {
            fxm_label l[] = { { "team", v.teams[i].team } };
            if (sees(c, v.teams[i].team))
                fxm_sample(&c->w, l, 1, team_value(&v.teams[i], f));
        }
    }
    /* every team's jobs count in a device's figures, as GetQueue shows them */
    fxm_family(&c->w, "fluxion_scheduler_device_slots", FXM_GAUGE, "Training slots of the device.");
    for (int i = 0; i < v.n_devices; i++) {
        fxm_label l[] = { { "device", v.devices[i].name } };
        fxm_sample(&c->w, l, 1, v.devices[i].slots);
    }
    fxm_family(&c->w, "fluxion_scheduler_device_slots_used", FXM_GAUGE,
               "Training slots in use (the device's training utilisation).");
    for (int i = 0; i < v.n_devices; i++) {
        fxm_label l[] = { { "device", v.devices[i].name } };
        fxm_sample(&c->w, l, 1, v.devices[i].slots_used);
    }
    fxm_family(&c->w, "fluxion_scheduler_device_memory_reserved_bytes", FXM_GAUGE,
               "Device memory reserved by running jobs and served models.");
    for (int i = 0; i < v.n_devices; i++) {
        fxm_label l[] = { { "device", v.devices[i].name } };
        fxm_sample(&c->w, l, 1, (double)v.devices[i].memory_reserved);
    }
    fxsc_view_free(&v);
}

void fxa_get_metrics(fxr_call *call, const ProtobufCMessage *req, void *data)
{
    (void)req;
    collector c = { .team = fxa_list_team(call), .d = data };
    fxm_init(&c.w);
    process_metrics(&c);
    device_metrics(&c);
    serving_metrics(&c);
    if (c.d->jobs) {
        training_metrics(&c);
        sched_metrics(&c);
    }
    char *text, err[256];
    int rc = fxm_finish(&c.w, &text, NULL, err, sizeof err);
    fxm_free(&c.w);
    if (rc) {
        /* a writer refusal is our bug (names are ours, values escaped) */
        fxr_fail(call, rc == FXS_RESOURCE_EXHAUSTED ? rc : FXS_INTERNAL, "%s", err);
        return;
    }
    Fluxion__V1__GetMetricsResponse r = FLUXION__V1__GET_METRICS_RESPONSE__INIT;
    r.text = text;
    fxr_reply(call, &r.base);
    free(text);
}
