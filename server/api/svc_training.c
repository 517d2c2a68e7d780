/*
 * svc_training.c - fluxion.v1.TrainingService: submit, inspect, cancel and
 * watch training jobs (jobs.h does the work; this file only translates).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "fluxion/v1/training.pb-c.h"
#include "training/jobs.h"
#include "base/log.h"

/* How long a watch waits for an event before it checks the call. */
#define WATCH_POLL_MS 200

static bool ready(fxr_call *call, fxa_daemon *d)
{
    if (!d->jobs) {
        fxr_fail(call, FXS_UNAVAILABLE, "training is not available on this server");
        return false;
    }
    return true;
}

/* The names in a job record, rewritten in place as the caller sees them. */
static void show_job(fxr_call *call, Fluxion__V1__Job *job)
{
    if (!job || !job->spec)
        return;
    fxa_show_in_place(call, job->spec->model);
    fxa_show_in_place(call, job->spec->dataset);
    fxa_show_in_place(call, job->spec->validation_dataset);
}

/* The job of id when the caller may see it (its model is the caller's
 * team's); another team's job is NOT_FOUND with the words of a missing one.
 * false after failing the call. */
static bool job_visible(fxr_call *call, fxa_daemon *d, const char *id)
{
    char err[FXS_ERRLEN];
    Fluxion__V1__Job *job = NULL;
    fxr_set_object(call, "job %s", id);
    int rc = fxj_jobs_get(d->jobs, id, &job, err, sizeof err);
    if (rc == 0 && !(job->spec && fxa_sees(call, job->spec->model)))
        rc = fxu_fail(err, sizeof err, FXS_NOT_FOUND, "job %s not found", job->id);
    if (job)
        fluxion__v1__job__free_unpacked(job, NULL);
    if (rc)
        fxr_fail(call, rc, "%s", err);
    return rc == 0;
}

/* SubmitJob, GetJob, CancelJob and ResumeJob answer with one Job record: each is a row
 * of JOB_RPCS, its request type and the jobs.h call that reads it; job_rpc,
 * their handler, finds the row by the request's type and does the rest. */
typedef int (*job_call_fn)(fxj_jobs *j, const ProtobufCMessage *req, Fluxion__V1__Job **job,
                           char *err, size_t errlen);

static int submit(fxj_jobs *j, const ProtobufCMessage *req, Fluxion__V1__Job **job, char *err,
                  size_t errlen)
{
    return fxj_jobs_submit(j, ((const Fluxion__V1__SubmitJobRequest *)req)->spec, job, err,
                           errlen);
}

static int get(fxj_jobs *j, const ProtobufCMessage *req, Fluxion__V1__Job **job, char *err,
               size_t errlen)
{
    return fxj_jobs_get(j, ((const Fluxion__V1__GetJobRequest *)req)->id, job, err, errlen);
}

static int cancel(fxj_jobs *j, const ProtobufCMessage *req, Fluxion__V1__Job **job, char *err,
                  size_t errlen)
{
    return fxj_jobs_cancel(j, ((const Fluxion__V1__CancelJobRequest *)req)->id, job, err, errlen);
}

static int resume(fxj_jobs *j, const ProtobufCMessage *req, Fluxion__V1__Job **job, char *err,
                  size_t errlen)
{
    return fxj_jobs_resume(j, ((const Fluxion__V1__ResumeJobRequest *)req)->id, job, err, errlen);
}

static const struct {
    const ProtobufCMessageDescriptor *request;
    job_call_fn call;
} JOB_RPCS[] = {
    { &fluxion__v1__submit_job_request__descriptor, submit },
    { &fluxion__v1__get_job_request__descriptor, get },
    { &fluxion__v1__cancel_job_request__descriptor, cancel },
    { &fluxion__v1__resume_job_request__descriptor, resume },
};
#define N_JOB_RPCS (sizeof JOB_RPCS / sizeof JOB_RPCS[0])

/* Runs the row of the request's type and replies with the job record (or
 * the failure). */
static void job_rpc(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    if (!ready(call, d))
        return;
    size_t i = 0;
    while (i < N_JOB_RPCS && JOB_RPCS[i].request != msg->descriptor)
        i++;
    if (i == N_JOB_RPCS) { /* a method given job_rpc without a row */
        fxr_fail(call, FXS_INTERNAL, "no job call for a %s", msg->descriptor->name);
        return;
    }
    char err[FXS_ERRLEN];
    Fluxion__V1__Job *job = NULL;
    /* names -> keys: a shallow copy of the spec with the keys (the request
     * is the call's) */
    Fluxion__V1__SubmitJobRequest sub;
    Fluxion__V1__JobSpec spec;
    char model[FXP_KEY_MAX], ds[FXP_KEY_MAX], vds[FXP_KEY_MAX] = "";
    if (msg->descriptor == &fluxion__v1__submit_job_request__descriptor) {
        sub = *(const Fluxion__V1__SubmitJobRequest *)msg;
        if (sub.spec) {
            spec = *sub.spec;
            if (!fxa_key(call, "model", spec.model, model, sizeof model) ||
                !fxa_key(call, "dataset", spec.dataset, ds, sizeof ds) ||
                (spec.validation_dataset && spec.validation_dataset[0] &&
                 !fxa_key(call, "dataset", spec.validation_dataset, vds, sizeof vds)))
                return;
            spec.model = model;
            spec.dataset = ds;
            spec.validation_dataset = vds;
            sub.spec = &spec;
            fxr_set_object(call, "model %s", model);
        }
        msg = &sub.base;
    } else if (!job_visible(call, d, ((const Fluxion__V1__GetJobRequest *)msg)->id)) {
        return; /* GetJob, CancelJob and ResumeJob: the id is field 1 of each */
    }
    int rc = JOB_RPCS[i].call(d->jobs, msg, &job, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
    } else {
        if (msg->descriptor == &fluxion__v1__submit_job_request__descriptor)
            fxr_set_object(call, "job %s (model %s)", job->id, model);
        show_job(call, job);
        fxr_reply(call, &job->base);
    }
    if (job)
        fluxion__v1__job__free_unpacked(job, NULL);
}

static void list_jobs(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__ListJobsRequest *req = (const void *)msg;
    if (!ready(call, d))
        return;
    char err[FXS_ERRLEN], model[FXP_KEY_MAX] = "";
    if (req->model && req->model[0] && !fxa_key(call, "model", req->model, model, sizeof model))
        return;
    Fluxion__V1__Job **jobs = NULL;
    int n = 0;
    int rc = fxj_jobs_list(d->jobs, req->state, model, &jobs, &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    /* the caller's team's jobs only */
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (jobs[i]->spec && fxa_sees(call, jobs[i]->spec->model)) {
            show_job(call, jobs[i]);
            jobs[kept++] = jobs[i];
        } else {
            fluxion__v1__job__free_unpacked(jobs[i], NULL);
        }
    }
    n = kept;
    Fluxion__V1__ListJobsResponse resp = FLUXION__V1__LIST_JOBS_RESPONSE__INIT;
    resp.jobs = jobs;
    resp.n_jobs = (size_t)n;
    fxr_reply(call, &resp.base);
    for (int i = 0; i < n; i++)
        fluxion__v1__job__free_unpacked(jobs[i], NULL);
    free(jobs);
}

/* Re-prioritises or moves a QUEUED job of the caller's team (an admin's:
 * any); the scheduler answers FAILED_PRECONDITION once it runs. */
static void update_job(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__UpdateJobRequest *req = (const void *)msg;
    if (!ready(call, d))
        return;
    if (!protobuf_c_enum_descriptor_get_value(&fluxion__v1__job_priority__descriptor,
                                              (int)req->priority)) {
        fxr_set_object(call, "job %s", req->id);
        fxr_fail(call, FXS_INVALID_ARGUMENT, "priority: %d is not one of LOW, NORMAL, HIGH",
                 (int)req->priority);
        return;
    }
    if (!job_visible(call, d, req->id))
        return;
    const char *device = req->device && req->device[0] ? req->device : NULL;
    if (req->priority == FLUXION__V1__JOB_PRIORITY__JOB_PRIORITY_UNSPECIFIED && !device) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "nothing to change: give a priority or a device");
        return;
    }
    char err[FXS_ERRLEN];
    Fluxion__V1__Job *job = NULL;
    int rc = fxj_jobs_update(d->jobs, req->id, req->priority, device, &job, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
    } else {
        show_job(call, job);
        fxr_reply(call, &job->base);
    }
    if (job)
        fluxion__v1__job__free_unpacked(job, NULL);
}

/* Streams the job's events until it ends, the client leaves or the server
 * drains (the client then watches again after the restart). */
static void watch_job(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__WatchJobRequest *req = (const void *)msg;
    if (!ready(call, d))
        return;
    char err[FXS_ERRLEN];
    fxj_watch *w = NULL;
    if (!job_visible(call, d, req->id))
        return;
    int rc = fxj_watch_open(d->jobs, req->id, &w, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    for (;;) {
        if (fxr_cancelled(call)) {
            fxr_fail(call, FXS_CANCELLED, "watch of job %s cancelled", req->id);
            break;
        }
        if (fxr_draining(call) || atomic_load(&d->draining)) {
            fxr_fail(call, FXS_UNAVAILABLE, "the server is shutting down; job %s continues "
                     "after its restart: watch it again then", req->id);
            break;
        }
        Fluxion__V1__JobEvent *ev = NULL;
        bool ended = false;
        rc = fxj_watch_next(w, WATCH_POLL_MS, &ev, &ended);
        if (rc) {
            fxr_fail(call, rc, "watch of job %s: %s", req->id,
                     rc == FXS_UNAVAILABLE ? "the server is shutting down" : "out of memory");
            break;
        }
        if (ended) {
            fxr_finish(call);
            break;
        }
        if (!ev)
            continue;
        show_job(call, ev->job);
        int sent = fxr_send(call, &ev->base);
        fluxion__v1__job_event__free_unpacked(ev, NULL);
        if (sent != 0) {
            fxr_fail(call, FXS_CANCELLED, "watch of job %s: the client is gone", req->id);
            break;
        }
    }
    fxj_watch_close(w);
}

int fxa_register_training_service(fxa_daemon *d)
{
    static const fxr_method methods[] = {
        { "SubmitJob", FXR_UNARY, FXP_WRITE, job_rpc },
        { "GetJob", FXR_UNARY, FXP_READ, job_rpc },
        { "ListJobs", FXR_UNARY, FXP_READ, list_jobs },
        { "CancelJob", FXR_UNARY, FXP_WRITE, job_rpc },
        { "WatchJob", FXR_SERVER_STREAM, FXP_READ, watch_job },
        { "UpdateJob", FXR_UNARY, FXP_WRITE, update_job },
        { "ResumeJob", FXR_UNARY, FXP_WRITE, job_rpc },
    };
    return fxr_server_add_service(d->rpc, &fluxion__v1__training_service__descriptor, methods,
                                  (int)(sizeof methods / sizeof methods[0]), d);
}
