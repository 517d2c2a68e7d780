/*
 * svc_training.c - fluxion.v1.TrainingService: submit, inspect, cancel and
 * watch training jobs (jobs.h does the work; this file only translates).
 */
#include <stdio.h>
#include <stdlib.h>

#include "daemon.h"
#include "fluxion/v1/training.pb-c.h"
#include "jobs.h"
#include "log.h"

#define ERRLEN 1024
/* How long a watch waits for an event before it checks the call. */
#define WATCH_POLL_MS 200

static bool ready(fxs_call *call, fxd_daemon *d)
{
    if (!d->jobs) {
        fxs_fail(call, FXS_UNAVAILABLE, "training is not available on this server");
        return false;
    }
    return true;
}

/* Replies with a job record (or the failure) and frees it. */
static void reply_job(fxs_call *call, int rc, Fluxion__V1__Job *job, const char *err)
{
    if (rc)
        fxs_fail(call, rc, "%s", err);
    else
        fxs_reply(call, &job->base);
    if (job)
        fluxion__v1__job__free_unpacked(job, NULL);
}

static void submit_job(fxs_call *call, const ProtobufCMessage *msg, void *data)
{
    fxd_daemon *d = data;
    const Fluxion__V1__SubmitJobRequest *req = (const void *)msg;
    if (!ready(call, d))
        return;
    char err[ERRLEN];
    Fluxion__V1__Job *job = NULL;
    int rc = fxd_jobs_submit(d->jobs, req->spec, &job, err, sizeof err);
    reply_job(call, rc, job, err);
}

static void get_job(fxs_call *call, const ProtobufCMessage *msg, void *data)
{
    fxd_daemon *d = data;
    const Fluxion__V1__GetJobRequest *req = (const void *)msg;
    if (!ready(call, d))
        return;
    char err[ERRLEN];
    Fluxion__V1__Job *job = NULL;
    int rc = fxd_jobs_get(d->jobs, req->id, &job, err, sizeof err);
    reply_job(call, rc, job, err);
}

static void cancel_job(fxs_call *call, const ProtobufCMessage *msg, void *data)
{
    fxd_daemon *d = data;
    const Fluxion__V1__CancelJobRequest *req = (const void *)msg;
    if (!ready(call, d))
        return;
    char err[ERRLEN];
    Fluxion__V1__Job *job = NULL;
    int rc = fxd_jobs_cancel(d->jobs, req->id, &job, err, sizeof err);
    reply_job(call, rc, job, err);
}

static void list_jobs(fxs_call *call, const ProtobufCMessage *msg, void *data)
{
    fxd_daemon *d = data;
    const Fluxion__V1__ListJobsRequest *req = (const void *)msg;
    if (!ready(call, d))
        return;
    char err[ERRLEN];
    Fluxion__V1__Job **jobs = NULL;
    int n = 0;
    int rc = fxd_jobs_list(d->jobs, req->state, req->model, &jobs, &n, err, sizeof err);
    if (rc) {
        fxs_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__ListJobsResponse resp = FLUXION__V1__LIST_JOBS_RESPONSE__INIT;
    resp.jobs = jobs;
    resp.n_jobs = (size_t)n;
    fxs_reply(call, &resp.base);
    for (int i = 0; i < n; i++)
        fluxion__v1__job__free_unpacked(jobs[i], NULL);
    free(jobs);
}

/* Streams the job's events until it ends, the client leaves or the server
 * drains (the client then watches again after the restart). */
static void watch_job(fxs_call *call, const ProtobufCMessage *msg, void *data)
{
    fxd_daemon *d = data;
    const Fluxion__V1__WatchJobRequest *req = (const void *)msg;
    if (!ready(call, d))
        return;
    char err[ERRLEN];
    fxd_watch *w = NULL;
    int rc = fxd_watch_open(d->jobs, req->id, &w, err, sizeof err);
    if (rc) {
        fxs_fail(call, rc, "%s", err);
        return;
    }
    for (;;) {
        if (fxs_cancelled(call)) {
            fxs_fail(call, FXS_CANCELLED, "watch of job %s cancelled", req->id);
            break;
        }
        if (fxs_draining(call) || atomic_load(&d->draining)) {
            fxs_fail(call, FXS_UNAVAILABLE, "the server is shutting down; job %s continues "
                     "after its restart: watch it again then", req->id);
            break;
        }
        Fluxion__V1__JobEvent *ev = NULL;
        bool ended = false;
        rc = fxd_watch_next(w, WATCH_POLL_MS, &ev, &ended);
        if (rc) {
            fxs_fail(call, rc, "watch of job %s: %s", req->id,
                     rc == FXS_UNAVAILABLE ? "the server is shutting down" : "out of memory");
            break;
        }
        if (ended) {
            fxs_finish(call);
            break;
        }
        if (!ev)
            continue;
        int sent = fxs_send(call, &ev->base);
        fluxion__v1__job_event__free_unpacked(ev, NULL);
        if (sent != 0) {
            fxs_fail(call, FXS_CANCELLED, "watch of job %s: the client is gone", req->id);
            break;
        }
    }
    fxd_watch_close(w);
}

int fxd_register_training_service(fxd_daemon *d)
{
    static const fxs_method methods[] = {
        { "SubmitJob", FXS_UNARY, submit_job },
        { "GetJob", FXS_UNARY, get_job },
        { "ListJobs", FXS_UNARY, list_jobs },
        { "CancelJob", FXS_UNARY, cancel_job },
        { "WatchJob", FXS_SERVER_STREAM, watch_job },
    };
    return fxs_server_add_service(d->rpc, &fluxion__v1__training_service__descriptor, methods,
                                  (int)(sizeof methods / sizeof methods[0]), d);
}
