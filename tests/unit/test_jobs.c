/*
 * test_jobs.c - the training jobs module (server/jobs.c): submission and its
 * errors, queue order, cancellation, watchers (late, slow, several), resume
 * after a restart, result versions and serve_when_done. Models and datasets
 * are named by their keys "team/name" (store.h), as the API hands them to
 * the module: here all team "default"'s.
 *
 * The trainer is a stand-in defined here (fxt_validate, fxt_run shadow the
 * library's train.o): it steps as the test allows (a gate), reports
 * progress, checkpoints "step=N" and resumes from it, so the jobs module's
 * logic is tested without real training. Real training runs in
 * tests/integration/test_training.py.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sqlite3.h>

#include "api/api.h"
#include "training/jobs.h"
#include "pbjson.h"
#include "rpc/rpc.h"
#include "training/train.h"

/* ------------------------------------------------------ stand-in trainer */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool gate;          /* steps wait for permits */
    int permits;
    int64_t resumed_from; /* step of the checkpoint the last run resumed from; -1: none */
    char order[64];     /* descriptions of the runs, in the order they started */
} fake = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, -1, "" };

static void fake_reset(bool gate)
{
    pthread_mutex_lock(&fake.mu);
    fake.gate = gate;
    fake.permits = 0;
    fake.resumed_from = -1;
    fake.order[0] = '\0';
    pthread_mutex_unlock(&fake.mu);
}

static void allow_steps(int n)
{
    pthread_mutex_lock(&fake.mu);
    fake.permits += n;
    pthread_cond_broadcast(&fake.cv);
    pthread_mutex_unlock(&fake.mu);
}

static void open_gate(void)
{
    pthread_mutex_lock(&fake.mu);
    fake.gate = false;
    pthread_cond_broadcast(&fake.cv);
    pthread_mutex_unlock(&fake.mu);
}

/* false when the run should stop instead of stepping. */
static bool take_step(const fxt_hooks *h, int64_t done)
{
    pthread_mutex_lock(&fake.mu);
    while (fake.gate && fake.permits == 0 && !h->should_stop(h->data, done)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 5000000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&fake.cv, &fake.mu, &ts);
    }
    bool stop = h->should_stop(h->data, done);
    if (!stop && fake.gate)
        fake.permits--;
    pthread_mutex_unlock(&fake.mu);
    return !stop;
}

int fxt_validate(const Fluxion__V1__JobSpec *spec, const fxg_graph *g, const fxds_columns *train,
                 const fxds_columns *val, char *err, size_t errlen)
{
    (void)val;
    assert_non_null(g);
    for (size_t i = 0; i < spec->n_feeds; i++)
        if (fxds_columns_find(train, spec->feeds[i]->tensor) < 0) {
            snprintf(err, errlen, "feeds[%zu].tensor: the dataset has no tensor '%s'", i,
                     spec->feeds[i]->tensor);
            return FXS_INVALID_ARGUMENT;
        }
    return 0;
}

static int checkpoint(const fxt_hooks *h, int64_t step, char *err, size_t errlen)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "step=%lld", (long long)step);
    return h->on_checkpoint(h->data, buf, (size_t)n, step, err, errlen);
}

fxt_result fxt_run(const Fluxion__V1__JobSpec *spec, fxg_graph *g, const fxds_columns *train,
                   const fxds_columns *val, const void *resume, size_t resume_len,
                   const fxt_hooks *h, void **result, size_t *result_len,
                   Fluxion__V1__JobProgress **final, char *err, size_t errlen)
{
    (void)train;
    (void)val;
    int64_t total = spec->steps ? spec->steps : 10, start = 0;
    int64_t every = spec->checkpoint_every_steps ? spec->checkpoint_every_steps
                                                 : h->checkpoint_every_steps;
    pthread_mutex_lock(&fake.mu);
    strncat(fake.order, spec->description, sizeof fake.order - strlen(fake.order) - 1);
    if (resume) {
        char buf[32] = "";
        memcpy(buf, resume, resume_len < 31 ? resume_len : 31);
        start = strtoll(buf + 5, NULL, 10);
        fake.resumed_from = start;
    }
    pthread_mutex_unlock(&fake.mu);
    Fluxion__V1__JobProgress p = FLUXION__V1__JOB_PROGRESS__INIT;
    p.total_steps = total;
    for (int64_t s = start + 1; s <= total; s++) {
        if (!take_step(h, s - 1)) {
            if (checkpoint(h, s - 1, err, errlen))
                return FXT_FAILED;
            return FXT_STOPPED;
        }
        if (!strcmp(spec->description, "fail") && s == 3) {
            snprintf(err, errlen, "loss is not finite at step 3");
            return FXT_FAILED;
        }
        p.step = s;
        p.train_loss = 1.0 / (double)s;
        h->on_progress(h->data, &p);
        h->on_scalar(h->data, "loss", s, p.train_loss);
        if (s % every == 0 && s < total && checkpoint(h, s, err, errlen))
            return FXT_FAILED;
    }
    p.val_loss = 0.5;
    h->on_eval(h->data, &p);
    if (fxg_save_weights(g, result, result_len, err, errlen) != 0)
        return FXT_FAILED;
    uint8_t buf[256];
    size_t len = fluxion__v1__job_progress__pack(&p, buf);
    *final = fluxion__v1__job_progress__unpack(NULL, len, buf);
    return FXT_DONE;
}

/* --------------------------------------------------------------- fixture */

typedef struct {
    char dir[64];
    fxdb_store *st;
    fxds_datasets *ds;
    fxsv_serving *sv;
    fxj_jobs *j;
} fixture;

static ProtobufCMessage *from_json(const ProtobufCMessageDescriptor *d, const char *text)
{
    json_error_t je;
    json_t *js = json_loads(text, 0, &je);
    assert_non_null(js);
    char err[256];
    ProtobufCMessage *m = pbjson_decode(d, js, err, sizeof err);
    json_decref(js);
    if (!m)
        fail_msg("%s", err);
    return m;
}

static const char MODEL_JSON[] =
    "{\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 2]}],"
    " \"nodes\": [{\"name\": \"fc\", \"op\": \"dense\", \"inputs\": [\"x\"],"
    "   \"attrs\": {\"in_features\": 2, \"out_features\": 3}}],"
    " \"outputs\": [{\"name\": \"logits\", \"source\": \"fc\"}]}";

static void create_model(fixture *f, const char *name)
{
    Fluxion__V1__ModelSpec *ms =
        (void *)from_json(&fluxion__v1__model_spec__descriptor, MODEL_JSON);
    char err[512];
    fxg_graph *g = NULL;
    fxg_build(ms, &(fxg_options){ .seed = 1 }, &g, err, sizeof err);
    assert_non_null(g);
    void *w;
    size_t wlen, slen = fluxion__v1__model_spec__get_packed_size(ms);
    uint8_t *spec = malloc(slen);
    fluxion__v1__model_spec__pack(ms, spec);
    assert_int_equal(fxg_save_weights(g, &w, &wlen, err, sizeof err), 0);
    int rc = fxdb_store_create_model(f->st, name, "", spec, slen, 1, false, w, wlen, "init",
                                    err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    free(w);
    free(spec);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(ms, NULL);
}

static void upload(fixture *f, const char *name, int n)
{
    float *x = malloc(sizeof *x * 2 * (size_t)n);
    int64_t *y = malloc(sizeof *y * (size_t)n);
    for (int i = 0; i < n; i++) {
        x[2 * i] = (float)i;
        x[2 * i + 1] = (float)-i;
        y[i] = i % 3;
    }
    int64_t xs[] = { n, 2 }, ys[] = { n };
    Fluxion__V1__TensorData tx = FLUXION__V1__TENSOR_DATA__INIT, ty = tx;
    tx.name = "x";
    tx.dtype = FLUXION__V1__DATA_TYPE__FP32;
    tx.shape = xs;
    tx.n_shape = 2;
    tx.data = (ProtobufCBinaryData){ sizeof *x * 2 * (size_t)n, (uint8_t *)x };
    ty.name = "y";
    ty.dtype = FLUXION__V1__DATA_TYPE__INT64;
    ty.shape = ys;
    ty.n_shape = 1;
    ty.data = (ProtobufCBinaryData){ sizeof *y * (size_t)n, (uint8_t *)y };
    char err[512];
    fxds_upload *u;
    Fluxion__V1__Dataset *info = NULL;
    int rc = fxds_upload_begin(f->ds, name, "", &u, err, sizeof err);
    if (!rc && ((rc = fxds_upload_add(u, &tx, err, sizeof err)) ||
                (rc = fxds_upload_add(u, &ty, err, sizeof err)))) {
        fxds_upload_abort(u);
    } else if (!rc) {
        rc = fxds_upload_commit(u, &info, err, sizeof err);
    }
    if (rc)
        fail_msg("upload: %d %s", rc, err);
    fluxion__v1__dataset__free_unpacked(info, NULL);
    free(x);
    free(y);
}

static void start_jobs(fixture *f)
{
    char err[512];
    if (fxj_jobs_start(f->st, f->ds, f->sv,
                       &(fxj_jobs_opts){ .workers = 1, .checkpoint_every_steps = 4 }, &f->j,
                       err, sizeof err) != 0)
        fail_msg("%s", err);
}

static void open_all(fixture *f)
{
    char err[512];
    assert_int_equal(fxdb_store_open(f->dir, &f->st, err, sizeof err), 0);
    assert_int_equal(fxds_datasets_open(f->st, NULL, &f->ds, err, sizeof err), 0);
    assert_int_equal(fxsv_serving_create(f->st, NULL, &f->sv, err, sizeof err), 0);
    start_jobs(f);
}

static void close_all(fixture *f)
{
    fxj_jobs_free(f->j);
    fxsv_serving_free(f->sv);
    fxds_datasets_close(f->ds);
    fxdb_store_close(f->st);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/fx_jobs_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    fake_reset(false);
    char err[512];
    assert_int_equal(fxdb_store_open(f->dir, &f->st, err, sizeof err), 0);
    assert_int_equal(fxds_datasets_open(f->st, NULL, &f->ds, err, sizeof err), 0);
    assert_int_equal(fxsv_serving_create(f->st, NULL, &f->sv, err, sizeof err), 0);
    create_model(f, "default/m");
    upload(f, "default/blobs", 30);
    start_jobs(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    open_gate();
    close_all(f);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static Fluxion__V1__JobSpec *spec_json(const char *extra)
{
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"model\": \"default/m\", \"dataset\": \"default/blobs\","
             " \"feeds\": [{\"input\": \"x\", \"tensor\": \"x\"}],"
             " \"losses\": [{\"output\": \"logits\", \"kind\": \"cross_entropy\","
             " \"target\": \"y\"}]"
             "%s%s}", *extra ? ", " : "", extra);
    return (void *)from_json(&fluxion__v1__job_spec__descriptor, buf);
}

/* Submits; returns the job id (a new string) or fails the test. */
static char *submit(fixture *f, const char *extra)
{
    Fluxion__V1__JobSpec *s = spec_json(extra);
    Fluxion__V1__Job *job = NULL;
    char err[512];
    int rc = fxj_jobs_submit(f->j, s, &job, err, sizeof err);
    fluxion__v1__job_spec__free_unpacked(s, NULL);
    if (rc)
        fail_msg("submit: %s", err);
    assert_int_equal(job->state, FLUXION__V1__JOB_STATE__QUEUED);
    char *id = strdup(job->id);
    fluxion__v1__job__free_unpacked(job, NULL);
    return id;
}

static void expect_submit_error(fixture *f, const char *extra, int code, const char *frag)
{
    Fluxion__V1__JobSpec *s = extra ? spec_json(extra) : NULL;
    Fluxion__V1__Job *job = (void *)1;
    char err[512] = "";
    int rc = fxj_jobs_submit(f->j, s, &job, err, sizeof err);
    if (s)
        fluxion__v1__job_spec__free_unpacked(s, NULL);
    if (rc != code || !strstr(err, frag))
        fail_msg("spec {%s}: got %d \"%s\", want %d with \"%s\"", extra ? extra : "NULL", rc,
                 err, code, frag);
    assert_null(job);
}

static Fluxion__V1__Job *get(fixture *f, const char *id)
{
    Fluxion__V1__Job *job = NULL;
    char err[512];
    if (fxj_jobs_get(f->j, id, &job, err, sizeof err))
        fail_msg("get %s: %s", id, err);
    return job;
}

/* Polls until the job is in state (and, when step > 0, at that progress or
 * further); fails after 10 s. */
static Fluxion__V1__Job *wait_for(fixture *f, const char *id, Fluxion__V1__JobState state,
                                  int64_t step)
{
    for (int i = 0; i < 2000; i++) {
        Fluxion__V1__Job *job = get(f, id);
        if (job->state == state && (step <= 0 || (job->progress && job->progress->step >= step)))
            return job;
        fluxion__v1__job__free_unpacked(job, NULL);
        usleep(5000);
    }
    fail_msg("job %s never reached state %d step %lld", id, state, (long long)step);
    return NULL;
}

static void wait_done(fixture *f, const char *id, Fluxion__V1__JobState state)
{
    fluxion__v1__job__free_unpacked(wait_for(f, id, state, 0), NULL);
}

static Fluxion__V1__JobEvent *next_event(fxj_watch *w, bool *ended)
{
    Fluxion__V1__JobEvent *ev = NULL;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(fxj_watch_next(w, 100, &ev, ended), 0);
        if (ev || *ended)
            return ev;
    }
    fail_msg("no event for 10 s");
    return NULL;
}

/* Reads a watch to its end: counts events by kind, checks that steps never
 * go back, returns the last event's job state. */
static Fluxion__V1__JobState drain_watch(fxj_watch *w, int counts[9], int64_t *last_step)
{
    Fluxion__V1__JobState last = 0;
    bool ended = false;
    int64_t prev = -1;
    for (;;) {
        Fluxion__V1__JobEvent *ev = next_event(w, &ended);
        if (ended)
            break;
        assert_in_range(ev->kind, 1, 8);
        counts[ev->kind]++;
        assert_non_null(ev->job);
        int64_t step = ev->job->progress ? ev->job->progress->step : 0;
        assert_true(step >= prev);
        prev = step;
        last = ev->job->state;
        fluxion__v1__job_event__free_unpacked(ev, NULL);
    }
    if (last_step)
        *last_step = prev;
    return last;
}

/* ------------------------------------------------------------------ tests */

static void test_submit_errors(void **state)
{
    fixture *f = *state;
    expect_submit_error(f, NULL, FXS_INVALID_ARGUMENT, "spec: missing");
    expect_submit_error(f, "\"model\": \"\"", FXS_INVALID_ARGUMENT, "spec.model: missing");
    expect_submit_error(f, "\"dataset\": \"\"", FXS_INVALID_ARGUMENT, "spec.dataset: missing");
    expect_submit_error(f, "\"model\": \"default/nope\"", FXS_NOT_FOUND, "default/nope");
    expect_submit_error(f, "\"model_version\": 7", FXS_NOT_FOUND, "no version 7");
    expect_submit_error(f, "\"model_version\": -1", FXS_INVALID_ARGUMENT, "model_version");
    expect_submit_error(f, "\"dataset\": \"default/gone\"", FXS_NOT_FOUND, "default/gone");
    expect_submit_error(f, "\"validation_dataset\": \"default/gone2\"", FXS_NOT_FOUND,
                        "default/gone2");
    /* bare names are no keys: INVALID_ARGUMENT naming the missing team part */
    expect_submit_error(f, "\"model\": \"m\"", FXS_INVALID_ARGUMENT,
                        "key \"m\" has no team part");
    expect_submit_error(f, "\"dataset\": \"blobs\"", FXS_INVALID_ARGUMENT,
                        "key \"blobs\" has no team part");
    expect_submit_error(f, "\"validation_dataset\": \"blobs\"", FXS_INVALID_ARGUMENT,
                        "key \"blobs\" has no team part");
    /* no device list given to the module: cpu only (test_devices.c: the rest) */
    expect_submit_error(f, "\"device\": \"cuda:0\"", FXS_FAILED_PRECONDITION,
                        "spec.device: cuda:0 is not ");
    expect_submit_error(f, "\"device\": \"gpu\"", FXS_FAILED_PRECONDITION, "'gpu'");
    expect_submit_error(f, "\"device\": \"tpu\"", FXS_INVALID_ARGUMENT, "'tpu'");
    expect_submit_error(f, "\"checkpoint_every_steps\": -3", FXS_INVALID_ARGUMENT,
                        "checkpoint_every_steps");
    /* the trainer's own validation comes through with its message */
    expect_submit_error(f, "\"feeds\": [{\"input\": \"x\", \"tensor\": \"zz\"}]",
                        FXS_INVALID_ARGUMENT, "feeds[0].tensor");
    /* bad ids everywhere */
    static const char *const bad[] = { "", "abc", "0", "-1", "1x", "99999999999999999999" };
    char err[256];
    Fluxion__V1__Job *job = NULL;
    fxj_watch *w = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(fxj_jobs_get(f->j, bad[i], &job, err, sizeof err), FXS_INVALID_ARGUMENT);
        assert_int_equal(fxj_jobs_cancel(f->j, bad[i], &job, err, sizeof err),
                         FXS_INVALID_ARGUMENT);
        assert_int_equal(fxj_watch_open(f->j, bad[i], &w, err, sizeof err), FXS_INVALID_ARGUMENT);
    }
    assert_int_equal(fxj_jobs_get(f->j, "42", &job, err, sizeof err), FXS_NOT_FOUND);
    assert_non_null(strstr(err, "42"));
    assert_int_equal(fxj_jobs_cancel(f->j, "42", &job, err, sizeof err), FXS_NOT_FOUND);
    assert_int_equal(fxj_watch_open(f->j, "42", &w, err, sizeof err), FXS_NOT_FOUND);
    Fluxion__V1__Job **list;
    int n;
    assert_int_equal(fxj_jobs_list(f->j, 77, "", &list, &n, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    /* nothing was stored by the failures */
    assert_int_equal(fxj_jobs_list(f->j, 0, "", &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    free(list);
}

static void test_record_and_result(void **state)
{
    fixture *f = *state;
    char *id = submit(f, "\"steps\": 6, \"seed\": 9, \"description\": \"r\"");
    Fluxion__V1__Job *job = wait_for(f, id, FLUXION__V1__JOB_STATE__SUCCEEDED, 0);
    assert_string_equal(job->id, "1");
    assert_string_equal(job->spec->description, "r");
    assert_int_equal(job->spec->seed, 9);
    assert_string_equal(job->engine_version, FX_VERSION_STRING);
    assert_int_equal(job->base_version, 1);
    assert_int_equal(job->result_version, 2);
    assert_int_equal(strlen(job->dataset_sha256), 64);
    assert_int_equal(job->progress->step, 6);
    assert_true(job->progress->val_loss == 0.5);
    assert_true(job->started_unix_ms >= job->created_unix_ms);
    assert_true(job->finished_unix_ms >= job->started_unix_ms);
    assert_int_equal(job->checkpoint_step, 4);
    assert_int_equal(job->restarts, 0);
    /* the version is stored with its source; nothing was served */
    fxdb_model_rec mr;
    char err[256];
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", &mr, err, sizeof err), 0);
    assert_int_equal(mr.n_versions, 2);
    assert_string_equal(mr.versions[1].source, "job 1");
    assert_false(mr.loaded);
    fxdb_model_rec_free(&mr);
    assert_false(fxsv_serving_is_loaded(f->sv, "default/m", NULL));
    /* TensorBoard events, and no checkpoint left behind */
    char path[256];
    snprintf(path, sizeof path, "%s/jobs/1/tb", f->dir);
    assert_string_equal(job->tensorboard_dir, path);
    DIR *d = opendir(path);
    assert_non_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d));)
        files += strncmp(e->d_name, "events.out.tfevents.", 20) == 0;
    closedir(d);
    assert_int_equal(files, 1);
    snprintf(path, sizeof path, "%s/jobs/1/checkpoint.safetensors", f->dir);
    assert_int_equal(access(path, F_OK), -1);
    /* the list filters */
    Fluxion__V1__Job **list;
    int n;
    assert_int_equal(fxj_jobs_list(f->j, FLUXION__V1__JOB_STATE__SUCCEEDED, "default/m", &list,
                                   &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    fluxion__v1__job__free_unpacked(list[0], NULL);
    free(list);
    assert_int_equal(fxj_jobs_list(f->j, FLUXION__V1__JOB_STATE__QUEUED, "", &list, &n, err,
                                   sizeof err), 0);
    assert_int_equal(n, 0);
    free(list);
    assert_int_equal(fxj_jobs_list(f->j, 0, "default/other", &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    free(list);
    /* a finished job cannot be cancelled */
    Fluxion__V1__Job *c = NULL;
    assert_int_equal(fxj_jobs_cancel(f->j, id, &c, err, sizeof err), FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "SUCCEEDED"));
    fluxion__v1__job__free_unpacked(job, NULL);
    free(id);
}

static void test_failure(void **state)
{
    fixture *f = *state;
    char *id = submit(f, "\"description\": \"fail\"");
    Fluxion__V1__Job *job = wait_for(f, id, FLUXION__V1__JOB_STATE__FAILED, 0);
    assert_string_equal(job->error, "loss is not finite at step 3");
    assert_int_equal(job->result_version, 0);
    fluxion__v1__job__free_unpacked(job, NULL);
    free(id);
}

static void test_queue_order_and_cancel(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\""), *b = submit(f, "\"description\": \"b\""),
         *c = submit(f, "\"description\": \"c\""), *d = submit(f, "\"description\": \"d\"");
    allow_steps(1);
    fluxion__v1__job__free_unpacked(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 1), NULL);
    Fluxion__V1__Job **list;
    int n;
    char err[256];
    assert_int_equal(fxj_jobs_list(f->j, FLUXION__V1__JOB_STATE__QUEUED, "", &list, &n, err,
                                   sizeof err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0]->id, b);
    assert_string_equal(list[2]->id, d);
    for (int i = 0; i < n; i++)
        fluxion__v1__job__free_unpacked(list[i], NULL);
    free(list);
    /* a queued job is cancelled at once */
    Fluxion__V1__Job *job = NULL;
    assert_int_equal(fxj_jobs_cancel(f->j, c, &job, err, sizeof err), 0);
    assert_int_equal(job->state, FLUXION__V1__JOB_STATE__CANCELLED);
    assert_int_equal(job->queue_position, 0); /* only while queued */
    assert_string_equal(job->wait_reason, "");
    fluxion__v1__job__free_unpacked(job, NULL);
    /* a running one stops at the next step boundary */
    assert_int_equal(fxj_jobs_cancel(f->j, a, &job, err, sizeof err), 0);
    fluxion__v1__job__free_unpacked(job, NULL);
    job = wait_for(f, a, FLUXION__V1__JOB_STATE__CANCELLED, 0);
    assert_int_equal(job->progress->step, 1);
    assert_int_equal(job->result_version, 0);
    fluxion__v1__job__free_unpacked(job, NULL);
    open_gate();
    wait_done(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED);
    wait_done(f, d, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_string_equal(fake.order, "abd"); /* c never ran */
    free(a), free(b), free(c), free(d);
}

static void test_watchers(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    /* a job ahead keeps the watched one QUEUED while the watchers open */
    char *ahead = submit(f, "");
    char *id = submit(f, "\"steps\": 80, \"checkpoint_every_steps\": 1000");
    char err[256];
    fxj_watch *early, *late, *slow;
    assert_int_equal(fxj_watch_open(f->j, id, &early, err, sizeof err), 0);
    assert_int_equal(fxj_watch_open(f->j, id, &slow, err, sizeof err), 0);
    bool ended;
    Fluxion__V1__JobEvent *ev = next_event(early, &ended);
    assert_int_equal(ev->kind, FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT);
    fluxion__v1__job_event__free_unpacked(ev, NULL);
    ev = next_event(slow, &ended);
    assert_int_equal(ev->kind, FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT);
    assert_int_equal(ev->job->state, FLUXION__V1__JOB_STATE__QUEUED);
    fluxion__v1__job_event__free_unpacked(ev, NULL);
    /* nothing new: the watch times out empty */
    ev = (void *)1;
    assert_int_equal(fxj_watch_next(early, 20, &ev, &ended), 0);
    assert_null(ev);
    assert_false(ended);
    Fluxion__V1__Job *c = NULL;
    assert_int_equal(fxj_jobs_cancel(f->j, ahead, &c, err, sizeof err), 0);
    fluxion__v1__job__free_unpacked(c, NULL);
    free(ahead);
    allow_steps(5);
    fluxion__v1__job__free_unpacked(wait_for(f, id, FLUXION__V1__JOB_STATE__RUNNING, 5), NULL);
    /* the early watcher sees the start, then progress */
    ev = next_event(early, &ended);
    assert_int_equal(ev->kind, FLUXION__V1__JOB_EVENT__KIND__STATE);
    assert_int_equal(ev->job->state, FLUXION__V1__JOB_STATE__RUNNING);
    fluxion__v1__job_event__free_unpacked(ev, NULL);
    ev = next_event(early, &ended);
    assert_int_equal(ev->kind, FLUXION__V1__JOB_EVENT__KIND__PROGRESS);
    assert_int_equal(ev->job->progress->step, 1);
    fluxion__v1__job_event__free_unpacked(ev, NULL);
    /* a late watcher gets the current state first */
    assert_int_equal(fxj_watch_open(f->j, id, &late, err, sizeof err), 0);
    ev = next_event(late, &ended);
    assert_int_equal(ev->kind, FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT);
    assert_int_equal(ev->job->state, FLUXION__V1__JOB_STATE__RUNNING);
    assert_int_equal(ev->job->progress->step, 5);
    fluxion__v1__job_event__free_unpacked(ev, NULL);
    open_gate();
    int ce[9] = { 0 }, cl[9] = { 0 }, cs[9] = { 0 };
    int64_t last;
    assert_int_equal(drain_watch(early, ce, &last), FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_int_equal(last, 80);
    assert_int_equal(drain_watch(late, cl, NULL), FLUXION__V1__JOB_STATE__SUCCEEDED);
    /* the slow watcher read nothing during 80 steps: it skipped progress
     * (memory is bounded) but got every state change */
    assert_int_equal(drain_watch(slow, cs, NULL), FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_int_equal(cs[FLUXION__V1__JOB_EVENT__KIND__STATE], 2); /* RUNNING, SUCCEEDED */
    assert_true(cs[FLUXION__V1__JOB_EVENT__KIND__PROGRESS] < 80);
    assert_int_equal(cl[FLUXION__V1__JOB_EVENT__KIND__STATE], 1);
    assert_int_equal(cl[FLUXION__V1__JOB_EVENT__KIND__EVALUATION], 1);
    fxj_watch_close(early);
    fxj_watch_close(late);
    fxj_watch_close(slow);
    /* a finished job: its record as the snapshot, then the end */
    fxj_watch *after;
    assert_int_equal(fxj_watch_open(f->j, id, &after, err, sizeof err), 0);
    ev = next_event(after, &ended);
    assert_int_equal(ev->kind, FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT);
    assert_int_equal(ev->job->state, FLUXION__V1__JOB_STATE__SUCCEEDED);
    fluxion__v1__job_event__free_unpacked(ev, NULL);
    assert_null(next_event(after, &ended));
    assert_true(ended);
    fxj_watch_close(after);
    free(id);
}

static void test_restart_resumes(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"steps\": 12, \"checkpoint_every_steps\": 3, \"description\": \"a\"");
    char *b = submit(f, "\"steps\": 4, \"description\": \"b\"");
    allow_steps(4);
    Fluxion__V1__Job *job = wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 4);
    fluxion__v1__job__free_unpacked(job, NULL);
    /* a watcher is told the server stops */
    fxj_watch *w;
    char err[256];
    assert_int_equal(fxj_watch_open(f->j, a, &w, err, sizeof err), 0);
    fxj_jobs_stop(f->j);
    Fluxion__V1__JobEvent *ev = NULL;
    bool ended;
    int rc;
    while ((rc = fxj_watch_next(w, 100, &ev, &ended)) == 0 && ev)
        fluxion__v1__job_event__free_unpacked(ev, NULL);
    assert_int_equal(rc, FXS_UNAVAILABLE);
    fxj_watch_close(w);
    Fluxion__V1__JobSpec *s = spec_json("");
    assert_int_equal(fxj_jobs_submit(f->j, s, &job, err, sizeof err), FXS_UNAVAILABLE);
    fluxion__v1__job_spec__free_unpacked(s, NULL);
    /* a drained job stays RUNNING with a checkpoint at its last step */
    job = get(f, a);
    assert_int_equal(job->state, FLUXION__V1__JOB_STATE__RUNNING);
    assert_int_equal(job->checkpoint_step, 4);
    fluxion__v1__job__free_unpacked(job, NULL);
    close_all(f);

    fake_reset(false);
    open_all(f);
    wait_done(f, a, FLUXION__V1__JOB_STATE__SUCCEEDED);
    wait_done(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_string_equal(fake.order, "ab"); /* the resumed one first */
    job = get(f, a);
    assert_int_equal(job->restarts, 1);
    assert_int_equal(job->progress->step, 12);
    fluxion__v1__job__free_unpacked(job, NULL);
    job = get(f, b);
    assert_int_equal(job->restarts, 0); /* it was only queued */
    fluxion__v1__job__free_unpacked(job, NULL);
    free(a);
    free(b);
}

static void test_resume_from_checkpoint(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"steps\": 9, \"checkpoint_every_steps\": 3");
    allow_steps(7);
    fluxion__v1__job__free_unpacked(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 7), NULL);
    close_all(f);
    fake_reset(false);
    open_all(f);
    wait_done(f, a, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_int_equal(fake.resumed_from, 7);
    free(a);
}

/* Defect 2: a version whose free-text source says "job 1" (ImportWeights
 * lets clients write anything there) is not job 1's result. Job 1 runs, a
 * client imports weights with source "job 1", the daemon restarts: job 1
 * resumes and stores its own result (version 3), it is not marked SUCCEEDED
 * with the imported version 2. */
static void test_source_is_not_a_job_link(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"steps\": 12, \"checkpoint_every_steps\": 3");
    assert_string_equal(a, "1");
    allow_steps(4);
    fluxion__v1__job__free_unpacked(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 4), NULL);
    char err[256];
    void *w = NULL;
    size_t wlen = 0;
    int64_t v = 0;
    assert_int_equal(fxdb_store_read_weights(f->st, "default/m", 1, &w, &wlen, err, sizeof err),
                     0);
    assert_int_equal(fxdb_store_add_version(f->st, "default/m", w, wlen, "job 1", &v, err,
                                            sizeof err), 0);
    assert_int_equal(v, 2);
    free(w);
    close_all(f);

    fake_reset(false);
    open_all(f);
    Fluxion__V1__Job *job = wait_for(f, a, FLUXION__V1__JOB_STATE__SUCCEEDED, 0);
    assert_int_equal(job->result_version, 3);
    assert_int_equal(job->progress->step, 12); /* it trained to the end */
    assert_int_equal(job->restarts, 1);
    assert_int_equal(fake.resumed_from, 4); /* the drain checkpointed step 4 */
    fluxion__v1__job__free_unpacked(job, NULL);
    fxdb_model_rec mr;
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", &mr, err, sizeof err), 0);
    assert_int_equal(mr.n_versions, 3);
    assert_string_equal(mr.versions[1].source, "job 1"); /* the client's text, kept */
    fxdb_model_rec_free(&mr);
    free(a);
}

/* Defect 3: a model or dataset that queued or running jobs use cannot be
 * deleted (FAILED_PRECONDITION naming the jobs); once they are done, it can. */
static void test_delete_in_use(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    create_model(f, "default/m2");
    upload(f, "default/blobs2", 10);
    upload(f, "default/val2", 10);
    char *a = submit(f, "\"description\": \"a\"");
    char *b = submit(f, "\"model\": \"default/m2\", \"dataset\": \"default/blobs2\", "
                        "\"validation_dataset\": \"default/val2\", \"description\": \"b\"");
    char *c = submit(f, "\"model\": \"default/m2\", \"description\": \"c\"");
    allow_steps(1);
    fluxion__v1__job__free_unpacked(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 1), NULL);
    char err[256];
    /* running job 1 uses m and blobs; queued jobs 2 and 3 use m2, blobs2, val2 */
    assert_int_equal(fxdb_store_delete_model(f->st, "default/m", err, sizeof err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "job 1"));
    assert_int_equal(fxdb_store_delete_model(f->st, "default/m2", err, sizeof err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "jobs 2, 3"));
    assert_int_equal(fxds_dataset_delete(f->ds, "default/blobs", err, sizeof err),
                     FXS_FAILED_PRECONDITION);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/blobs2", err, sizeof err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "job 2"));
    assert_int_equal(fxds_dataset_delete(f->ds, "default/val2", err, sizeof err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "job 2"));
    Fluxion__V1__Dataset *info = NULL;
    assert_int_equal(fxds_dataset_get(f->ds, "default/blobs2", &info, err, sizeof err), 0);
    fluxion__v1__dataset__free_unpacked(info, NULL);
    /* cancelled: the queued job no longer holds them */
    Fluxion__V1__Job *job = NULL;
    assert_int_equal(fxj_jobs_cancel(f->j, b, &job, err, sizeof err), 0);
    fluxion__v1__job__free_unpacked(job, NULL);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/blobs2", err, sizeof err), 0);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/val2", err, sizeof err), 0);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/m2", err, sizeof err),
                     FXS_FAILED_PRECONDITION); /* job 3 still waits */
    assert_non_null(strstr(err, "job 3"));
    assert_int_equal(fxj_jobs_cancel(f->j, c, &job, err, sizeof err), 0);
    fluxion__v1__job__free_unpacked(job, NULL);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/m2", err, sizeof err), 0);
    /* finished: m and blobs are free again */
    open_gate();
    wait_done(f, a, FLUXION__V1__JOB_STATE__SUCCEEDED);
    /* the worker lets go of the loaded dataset just after the final state */
    int rc = FXS_FAILED_PRECONDITION;
    for (int i = 0; i < 400 && rc == FXS_FAILED_PRECONDITION; i++)
        if ((rc = fxds_dataset_delete(f->ds, "default/blobs", err, sizeof err)) != 0)
            usleep(5000);
    assert_int_equal(rc, 0);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/m", err, sizeof err), 0);
    free(a);
    free(b);
    free(c);
}

/* A delete racing a submission that needs what it deletes: exactly one of
 * them succeeds, every time (the store checks both in their transactions).
 * Run under ASan. */
typedef struct {
    fixture *f;
    bool model;        /* delete the model "rm", else the dataset "rd" */
    int rc;
    char err[256];
} deleter;

static void *delete_thread(void *arg)
{
    deleter *d = arg;
    d->rc = d->model ? fxdb_store_delete_model(d->f->st, "default/rm", d->err, sizeof d->err)
                     : fxds_dataset_delete(d->f->ds, "default/rd", d->err, sizeof d->err);
    return NULL;
}

static void test_delete_races_submit(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *blocker = submit(f, "\"description\": \"x\""); /* holds the worker: the rest queue */
    fluxion__v1__job__free_unpacked(wait_for(f, blocker, FLUXION__V1__JOB_STATE__RUNNING, 0),
                                    NULL);
    int won[2] = { 0, 0 };
    for (int i = 0; i < 24; i++) {
        deleter d = { .f = f, .model = i % 2 == 0 };
        if (d.model)
            create_model(f, "default/rm");
        else
            upload(f, "default/rd", 10);
        Fluxion__V1__JobSpec *s = spec_json(d.model ? "\"model\": \"default/rm\""
                                                    : "\"dataset\": \"default/rd\"");
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, delete_thread, &d), 0);
        Fluxion__V1__Job *job = NULL;
        char err[256];
        int rc = fxj_jobs_submit(f->j, s, &job, err, sizeof err);
        pthread_join(t, NULL);
        fluxion__v1__job_spec__free_unpacked(s, NULL);
        if (rc == 0) { /* the job is queued: the delete must have been refused */
            if (d.rc != FXS_FAILED_PRECONDITION)
                fail_msg("round %d: submitted, and the delete gave %d \"%s\"", i, d.rc, d.err);
            Fluxion__V1__Job *c = NULL;
            assert_int_equal(fxj_jobs_cancel(f->j, job->id, &c, err, sizeof err), 0);
            fluxion__v1__job__free_unpacked(c, NULL);
            fluxion__v1__job__free_unpacked(job, NULL);
            delete_thread(&d);
            assert_int_equal(d.rc, 0);
            won[0]++;
        } else {
            if (d.rc != 0 || (rc != FXS_NOT_FOUND && rc != FXS_FAILED_PRECONDITION))
                fail_msg("round %d: submit gave %d \"%s\", the delete %d \"%s\"", i, rc, err,
                         d.rc, d.err);
            won[1]++;
        }
    }
    print_message("submissions won %d rounds, deletes %d\n", won[0], won[1]);
    open_gate();
    wait_done(f, blocker, FLUXION__V1__JOB_STATE__SUCCEEDED);
    free(blocker);
}

/* Job rows written before the store kept a job's datasets (schema 4) get
 * them when the jobs are restored, so a queued job's dataset is protected
 * after an upgrade too. */
static void test_delete_in_use_after_upgrade(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\"");
    char *b = submit(f, "\"description\": \"b\"");
    allow_steps(1);
    fluxion__v1__job__free_unpacked(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 1), NULL);
    close_all(f);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(tu_pathf("%s/fluxion.db", f->dir), &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE jobs SET dataset = ''", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    open_all(f); /* the gate is still closed: a resumes, b stays queued */
    char err[256];
    assert_int_equal(fxds_dataset_delete(f->ds, "default/blobs", err, sizeof err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "jobs 1, 2"));
    open_gate();
    wait_done(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED);
    free(a);
    free(b);
}

/* Jobs whose model or dataset is gone by the restart fail, naming it. */
static void test_vanished_model(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\"");
    create_model(f, "default/m2");
    char *b = submit(f, "\"model\": \"default/m2\", \"description\": \"b\"");
    upload(f, "default/blobs2", 10);
    create_model(f, "default/m3");
    char *c = submit(f, "\"model\": \"default/m3\", \"dataset\": \"default/blobs2\", "
                        "\"description\": \"c\"");
    allow_steps(1);
    fluxion__v1__job__free_unpacked(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 1), NULL);
    close_all(f);
    char err[256];
    /* The store refuses to delete what the jobs need (test_delete_in_use),
     * so they vanish the other way: rows gone behind the daemon's back (a
     * data directory restored from an older backup, say). */
    assert_int_equal(fxdb_store_open(f->dir, &f->st, err, sizeof err), 0);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/m", err, sizeof err),
                     FXS_FAILED_PRECONDITION);
    fxdb_store_close(f->st);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(tu_pathf("%s/fluxion.db", f->dir), &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA foreign_keys=ON;"
                                      "DELETE FROM models WHERE name IN ('default/m', "
                                      "'default/m2');"
                                      "DELETE FROM datasets WHERE name = 'default/blobs2'",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fake_reset(false);
    open_all(f);
    Fluxion__V1__Job *job = wait_for(f, a, FLUXION__V1__JOB_STATE__FAILED, 0);
    assert_non_null(strstr(job->error, "\"default/m\""));
    fluxion__v1__job__free_unpacked(job, NULL);
    job = wait_for(f, b, FLUXION__V1__JOB_STATE__FAILED, 0);
    assert_non_null(strstr(job->error, "\"default/m2\""));
    fluxion__v1__job__free_unpacked(job, NULL);
    job = wait_for(f, c, FLUXION__V1__JOB_STATE__FAILED, 0);
    assert_non_null(strstr(job->error, "dataset"));
    assert_non_null(strstr(job->error, "'default/blobs2'"));
    fluxion__v1__job__free_unpacked(job, NULL);
    assert_string_equal(fake.order, ""); /* none of them trained */
    free(a);
    free(b);
    free(c);
}

static void test_serve_when_done(void **state)
{
    fixture *f = *state;
    char err[256];
    /* not served: serve_when_done loads it (and marks it loaded) */
    char *a = submit(f, "\"serve_when_done\": true, \"steps\": 2");
    wait_done(f, a, FLUXION__V1__JOB_STATE__SUCCEEDED);
    int64_t v = 0;
    assert_true(fxsv_serving_is_loaded(f->sv, "default/m", &v));
    assert_int_equal(v, 2);
    fxdb_model_rec mr;
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", &mr, err, sizeof err), 0);
    assert_true(mr.loaded);
    fxdb_model_rec_free(&mr);
    /* served: a request holding version 2 keeps it while version 3 comes */
    fxsv_served *held;
    assert_int_equal(fxsv_serving_acquire(f->sv, "default/m", 0, &held, err, sizeof err), 0);
    char *b = submit(f, "\"steps\": 2, \"model_version\": 1");
    Fluxion__V1__Job *job = wait_for(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED, 0);
    assert_int_equal(job->base_version, 1);
    assert_int_equal(job->result_version, 3);
    fluxion__v1__job__free_unpacked(job, NULL);
    assert_true(fxsv_serving_is_loaded(f->sv, "default/m", &v));
    assert_int_equal(v, 3);
    assert_int_equal(fxsv_served_version(held), 2);
    fxsv_served_release(held);
    free(a);
    free(b);
}

/* ------------------------------------------------------------ scheduling */

static void free_job(Fluxion__V1__Job *job)
{
    fluxion__v1__job__free_unpacked(job, NULL);
}

/* A queued job's position and reason, as the record shows them. */
static void expect_position(fixture *f, const char *id, int pos)
{
    for (int i = 0; i < 200; i++) { /* the ticker refreshes within 200 ms */
        Fluxion__V1__Job *job = get(f, id);
        bool ok = job->state == FLUXION__V1__JOB_STATE__QUEUED && job->queue_position == pos &&
                  job->wait_reason[0] != '\0';
        free_job(job);
        if (ok)
            return;
        usleep(5000);
    }
    Fluxion__V1__Job *job = get(f, id);
    fail_msg("job %s: position %d reason '%s', want %d", id, job->queue_position,
             job->wait_reason, pos);
}

/* HIGH before NORMAL before LOW, whatever the submission order; the queue
 * positions and reasons say so before they run. */
static void test_priority_order(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\"");
    allow_steps(1);
    free_job(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 1));
    char *b = submit(f, "\"description\": \"b\"");
    expect_position(f, b, 1);
    fxj_watch *w;
    char werr[256];
    assert_int_equal(fxj_watch_open(f->j, b, &w, werr, sizeof werr), 0);
    bool ended;
    Fluxion__V1__JobEvent *ev = next_event(w, &ended);
    assert_int_equal(ev->kind, FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT);
    fluxion__v1__job_event__free_unpacked(ev, NULL);
    char *c = submit(f, "\"description\": \"c\", \"priority\": \"LOW\"");
    char *d = submit(f, "\"description\": \"d\", \"priority\": \"HIGH\"");
    /* d overtakes b: b's watchers hear of its new position */
    ev = next_event(w, &ended);
    assert_int_equal(ev->kind, FLUXION__V1__JOB_EVENT__KIND__QUEUED_AT);
    assert_int_equal(ev->job->queue_position, 2);
    assert_non_null(strstr(ev->message, "position 2"));
    fluxion__v1__job_event__free_unpacked(ev, NULL);
    fxj_watch_close(w);
    expect_position(f, d, 1);
    expect_position(f, b, 2);
    expect_position(f, c, 3);
    Fluxion__V1__Job *job = get(f, a);
    assert_string_equal(job->assigned_device, "cpu");
    assert_int_equal(job->queue_position, 0);
    free_job(job);
    job = get(f, b);
    assert_non_null(strstr(job->wait_reason, "cpu"));
    free_job(job);
    fxsc_view v;
    char err[256];
    assert_int_equal(fxj_jobs_queue(f->j, &v, err, sizeof err), 0);
    assert_int_equal(v.n_jobs, 4);
    assert_true(v.jobs[0].running);
    assert_int_equal(v.jobs[1].id, strtoll(d, NULL, 10));
    assert_int_equal(v.jobs[1].position, 1);
    assert_int_equal(v.n_devices, 1);
    assert_string_equal(v.devices[0].name, "cpu");
    assert_int_equal(v.devices[0].slots_used, 1);
    fxsc_view_free(&v);
    open_gate();
    wait_done(f, c, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_string_equal(fake.order, "adbc");
    free(a), free(b), free(c), free(d);
}

/* UpdateJob: a queued job's priority reorders the queue; a running or
 * finished job, an unknown device, an unknown job are refused. */
static void test_update_queued(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\"");
    allow_steps(1);
    free_job(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 1));
    char *b = submit(f, "\"description\": \"b\"");
    char *c = submit(f, "\"description\": \"c\"");
    expect_position(f, c, 2);
    Fluxion__V1__Job *job = NULL;
    char err[256] = "";
    assert_int_equal(fxj_jobs_update(f->j, c, FLUXION__V1__JOB_PRIORITY__HIGH, NULL, &job, err,
                                     sizeof err), 0);
    assert_int_equal(job->spec->priority, FLUXION__V1__JOB_PRIORITY__HIGH);
    assert_int_equal(job->queue_position, 1);
    free_job(job);
    expect_position(f, b, 2);
    /* the change is stored: a restart would keep it */
    assert_int_equal(fxj_jobs_update(f->j, a, FLUXION__V1__JOB_PRIORITY__LOW, NULL, &job, err,
                                     sizeof err), FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "running"));
    assert_int_equal(fxj_jobs_update(f->j, b, 0, "cuda:7", &job, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxj_jobs_update(f->j, b, 0, "tpu", &job, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxj_jobs_update(f->j, "999", FLUXION__V1__JOB_PRIORITY__HIGH, NULL, &job, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxj_jobs_update(f->j, b, 0, "cpu", &job, err, sizeof err), 0);
    assert_string_equal(job->spec->device, "cpu");
    free_job(job);
    open_gate();
    wait_done(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_string_equal(fake.order, "acb");
    assert_int_equal(fxj_jobs_update(f->j, a, FLUXION__V1__JOB_PRIORITY__LOW, NULL, &job, err,
                                     sizeof err), FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "finished"));
    free(a), free(b), free(c);
}

/* The preemption tests' setting: the jobs module restarted with opts, and
 * a team b with a nominal CPU slot (default stays best-effort), its model
 * b/m and (with_data) its dataset b/blobs. */
static void start_with_team_b(fixture *f, fxj_jobs_opts opts, bool with_data)
{
    char err[512];
    fxj_jobs_free(f->j);
    if (fxj_jobs_start(f->st, f->ds, f->sv, &opts, &f->j, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(fxdb_team_create(f->st, "b", "", NULL, err, sizeof err), 0);
    create_model(f, "b/m");
    if (with_data)
        upload(f, "b/blobs", 30);
    fxj_jobs_set_team(f->j, "b", &(fxsc_team_cfg){ .weight = 1, .nominal_slots = { 1, 0 } });
}

/* Submits a job of team b (spec fields as JSON); returns its id (free it). */
static char *submit_b(fixture *f, const char *json, bool with_data)
{
    char err[512];
    Fluxion__V1__JobSpec *s = spec_json(json);
    free(s->model);
    s->model = strdup("b/m");
    if (with_data) {
        free(s->dataset);
        s->dataset = strdup("b/blobs");
    }
    Fluxion__V1__Job *bj = NULL;
    assert_int_equal(fxj_jobs_submit(f->j, s, &bj, err, sizeof err), 0);
    fluxion__v1__job_spec__free_unpacked(s, NULL);
    char *id = strdup(bj->id);
    free_job(bj);
    return id;
}

/* Team b within its nominal quota reclaims the slot from team default's
 * job (default has no quota: best-effort): the job checkpoints at its next
 * step, goes back to QUEUED (PREEMPTED says for whom), and resumes from
 * that checkpoint when b's job is done (RESUMED), to the same end. */
static void test_preempt_resume(void **state)
{
    fixture *f = *state;
    char err[512];
    start_with_team_b(f, (fxj_jobs_opts){ .workers = 1, .checkpoint_every_steps = 4,
                                          .sched_min_run_ms = 1 }, true);
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\", \"steps\": 12, \"checkpoint_every_steps\": 3");
    allow_steps(5);
    free_job(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 5));
    fxj_watch *w;
    assert_int_equal(fxj_watch_open(f->j, a, &w, err, sizeof err), 0);
    bool ended = false;
    Fluxion__V1__JobEvent *snap = next_event(w, &ended);
    assert_int_equal(snap->kind, FLUXION__V1__JOB_EVENT__KIND__SNAPSHOT);
    fluxion__v1__job_event__free_unpacked(snap, NULL);
    char *b = submit_b(f, "\"description\": \"b\", \"steps\": 4", true);
    /* a is preempted at its step boundary: checkpoint at step 5, QUEUED */
    free_job(wait_for(f, b, FLUXION__V1__JOB_STATE__RUNNING, 0));
    Fluxion__V1__Job *job = get(f, a);
    assert_int_equal(job->state, FLUXION__V1__JOB_STATE__QUEUED);
    assert_int_equal(job->preemptions, 1);
    assert_int_equal(job->checkpoint_step, 5);
    assert_string_equal(job->assigned_device, "");
    free_job(job);
    open_gate();
    wait_done(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED);
    wait_done(f, a, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_string_equal(fake.order, "aba");
    assert_int_equal(fake.resumed_from, 5);
    job = get(f, a);
    assert_int_equal(job->progress->step, 12);
    assert_int_equal(job->preemptions, 1);
    assert_int_equal(job->restarts, 0);
    /* the same weights as an uninterrupted run: the stand-in trainer's
     * result is the base weights; real training is test_sched.py's */
    assert_int_equal(job->result_version, 2);
    free_job(job);
    /* the watcher saw PREEMPTED (for b's job) then RESUMED, in order */
    int counts[9] = { 0 };
    bool preempted = false, resumed = false;
    for (;;) {
        Fluxion__V1__JobEvent *ev = next_event(w, &ended);
        if (ended)
            break;
        if (ev->kind == FLUXION__V1__JOB_EVENT__KIND__PREEMPTED) {
            char want[64];
            snprintf(want, sizeof want, "job %s of team b", b);
            assert_non_null(strstr(ev->message, want));
            assert_int_equal(ev->job->state, FLUXION__V1__JOB_STATE__QUEUED);
            preempted = true;
        }
        if (ev->kind == FLUXION__V1__JOB_EVENT__KIND__RESUMED) {
            assert_true(preempted);
            assert_non_null(strstr(ev->message, "preemption"));
            assert_int_equal(ev->job->state, FLUXION__V1__JOB_STATE__RUNNING);
            resumed = true;
        }
        counts[ev->kind]++;
        fluxion__v1__job_event__free_unpacked(ev, NULL);
    }
    assert_true(resumed);
    assert_int_equal(counts[FLUXION__V1__JOB_EVENT__KIND__PREEMPTED], 1);
    assert_int_equal(counts[FLUXION__V1__JOB_EVENT__KIND__RESUMED], 1);
    fxj_watch_close(w);
    free(a), free(b);
}

/* With a grace (--preempt-grace-steps 3), a job preempted at step 5 whose
 * own next checkpoint is at step 6 runs to it and stops there (checkpoint
 * step 6, not 5); b waits for it. */
static void test_preempt_grace(void **state)
{
    fixture *f = *state;
    start_with_team_b(f, (fxj_jobs_opts){ .workers = 1, .checkpoint_every_steps = 4,
                                          .sched_min_run_ms = 1, .preempt_grace_steps = 3 },
                      true);
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\", \"steps\": 12, \"checkpoint_every_steps\": 3");
    allow_steps(5);
    free_job(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 5));
    char *b = submit_b(f, "\"description\": \"b\", \"steps\": 4", true);
    usleep(300000); /* a tick or more: the preemption is decided, a keeps its slot */
    Fluxion__V1__Job *job = get(f, a);
    assert_int_equal(job->state, FLUXION__V1__JOB_STATE__RUNNING);
    free_job(job);
    allow_steps(1); /* step 6: a's own checkpoint, then it stops */
    free_job(wait_for(f, b, FLUXION__V1__JOB_STATE__RUNNING, 0));
    job = get(f, a);
    assert_int_equal(job->state, FLUXION__V1__JOB_STATE__QUEUED);
    assert_int_equal(job->preemptions, 1);
    assert_int_equal(job->checkpoint_step, 6);
    free_job(job);
    open_gate();
    wait_done(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED);
    wait_done(f, a, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_int_equal(fake.resumed_from, 6);
    assert_string_equal(fake.order, "aba");
    free(a), free(b);
}

/* A job preempted, then the daemon restarts before it ran again: it is
 * QUEUED in the store, and when it starts it resumes from the checkpoint
 * of its preemption and says so (RESUMED). */
static void test_preempted_then_restart(void **state)
{
    fixture *f = *state;
    char err[512];
    start_with_team_b(f, (fxj_jobs_opts){ .workers = 1, .sched_min_run_ms = 1 }, false);
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\", \"steps\": 9");
    allow_steps(3);
    free_job(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 3));
    char *b = submit_b(f, "\"description\": \"b\", \"steps\": 4", false);
    free_job(wait_for(f, b, FLUXION__V1__JOB_STATE__RUNNING, 0));
    free_job(wait_for(f, a, FLUXION__V1__JOB_STATE__QUEUED, 0));
    close_all(f);
    fake_reset(true);
    open_all(f);
    fxj_watch *w;
    assert_int_equal(fxj_watch_open(f->j, a, &w, err, sizeof err), 0);
    bool ended, resumed = false;
    Fluxion__V1__JobEvent *snap = next_event(w, &ended);
    assert_int_equal(snap->job->state, FLUXION__V1__JOB_STATE__QUEUED);
    fluxion__v1__job_event__free_unpacked(snap, NULL);
    open_gate();
    for (;;) {
        Fluxion__V1__JobEvent *ev = next_event(w, &ended);
        if (ended)
            break;
        if (ev->kind == FLUXION__V1__JOB_EVENT__KIND__RESUMED) {
            assert_non_null(strstr(ev->message, "preemption (checkpoint step 3)"));
            resumed = true;
        }
        fluxion__v1__job_event__free_unpacked(ev, NULL);
    }
    fxj_watch_close(w);
    Fluxion__V1__Job *job = get(f, a);
    assert_int_equal(job->state, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_int_equal(job->preemptions, 1);
    assert_int_equal(job->progress->step, 9);
    free_job(job);
    assert_true(resumed);
    assert_int_equal(fake.resumed_from, 3);
    assert_string_equal(fake.order, "ba"); /* b resumed first (it was RUNNING) */
    free(a), free(b);
}

/* A non-preemptible job keeps its slot: b waits with a reason. */
static void test_not_preemptible(void **state)
{
    fixture *f = *state;
    start_with_team_b(f, (fxj_jobs_opts){ .workers = 1, .sched_min_run_ms = 1 }, false);
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\", \"not_preemptible\": true");
    allow_steps(1);
    free_job(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 1));
    char *b = submit_b(f, "\"description\": \"b\"", false);
    expect_position(f, b, 1);
    usleep(300000); /* a tick or more: still not preempted */
    Fluxion__V1__Job *job = get(f, a);
    assert_int_equal(job->state, FLUXION__V1__JOB_STATE__RUNNING);
    assert_int_equal(job->preemptions, 0);
    free_job(job);
    open_gate();
    wait_done(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_string_equal(fake.order, "ab");
    free(a), free(b);
}

/* A restart: the RUNNING job resumes first, then the queued ones by their
 * stored priorities. */
static void test_restart_keeps_priorities(void **state)
{
    fixture *f = *state;
    fake_reset(true);
    char *a = submit(f, "\"description\": \"a\", \"priority\": \"LOW\"");
    allow_steps(1);
    free_job(wait_for(f, a, FLUXION__V1__JOB_STATE__RUNNING, 1));
    char *b = submit(f, "\"description\": \"b\", \"priority\": \"LOW\"");
    char *c = submit(f, "\"description\": \"c\"");
    char *d = submit(f, "\"description\": \"d\", \"priority\": \"HIGH\"");
    close_all(f);
    fake_reset(false);
    open_all(f);
    wait_done(f, b, FLUXION__V1__JOB_STATE__SUCCEEDED);
    assert_string_equal(fake.order, "adcb");
    free(a), free(b), free(c), free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_submit_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_and_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_order_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_from_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_is_not_a_job_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_in_use_after_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_races_submit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vanished_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serve_when_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_preempt_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_preempted_then_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_preempt_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_preemptible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_priorities, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
