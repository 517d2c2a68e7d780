/*
 * test_canary.c - a model's canary (serving.h fxsv_serving_set_canary,
 * fxsv_serving_route): the exact counter-based split, the checks of the
 * setting, and the canary turned on, off and changed (with new batching
 * settings and explicit versions between) while threads send requests
 * without pause: no request fails and, under ASan (the sanitizer suite),
 * no instance is used after it is freed.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"
#include "fluxion/v1/model.pb-c.h"
#include "models/graph.h"
#include "serving/servecfg.h"
#include "serving/serving.h"
#include "store/store.h"
#include "servertest.h"

static const char MLP_JSON[] =
    "{\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]}],"
    " \"nodes\": [{\"name\": \"fc\", \"op\": \"dense\", \"inputs\": [\"x\"],"
    "   \"attrs\": {\"in_features\": 4, \"out_features\": 2}}],"
    " \"outputs\": [{\"name\": \"y\", \"source\": \"fc\"}]}";

typedef struct {
    char dir[64];
    fxdb_store *st;
    fxsv_serving *sv;
} fixture;

/* A store with model default/m, versions 1 and 2 (seeds 1 and 2), served. */
static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[512];
    snprintf(f->dir, sizeof f->dir, "/tmp/fx_canary_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(fxdb_store_open(f->dir, &f->st, err, sizeof err), 0);
    assert_int_equal(fxsv_serving_create(f->st, NULL, &f->sv, err, sizeof err), 0);
    json_error_t je;
    json_t *j = json_loads(MLP_JSON, 0, &je);
    Fluxion__V1__ModelSpec *ms =
        (void *)pbjson_decode(&fluxion__v1__model_spec__descriptor, j, err, sizeof err);
    json_decref(j);
    assert_non_null(ms);
    size_t slen = fluxion__v1__model_spec__get_packed_size(ms);
    uint8_t *spec = malloc(slen);
    fluxion__v1__model_spec__pack(ms, spec);
    for (int seed = 1; seed <= 2; seed++) {
        fxg_graph *g = st_graph_json(MLP_JSON, (uint64_t)seed);
        void *w;
        size_t wlen;
        int64_t v;
        assert_int_equal(fxg_save_weights(g, &w, &wlen, err, sizeof err), 0);
        int rc = seed == 1 ? fxdb_store_create_model(f->st, "default/m", "", spec, slen, 1, false,
                                                     w, wlen, "init", err, sizeof err)
                           : fxdb_store_add_version(f->st, "default/m", w, wlen, "v2", &v, err,
                                                    sizeof err);
        if (rc)
            fail_msg("%s", err);
        free(w);
        fxg_free(g);
    }
    free(spec);
    fluxion__v1__model_spec__free_unpacked(ms, NULL);
    if (fxsv_serving_load(f->sv, "default/m", err, sizeof err))
        fail_msg("%s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fxsv_serving_free(f->sv);
    fxdb_store_close(f->st);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* The version the next request without a version is routed to. */
static int64_t route(fixture *f)
{
    char err[512];
    fxsv_served *m;
    if (fxsv_serving_route(f->sv, "default/m", 0, &m, err, sizeof err))
        fail_msg("%s", err);
    int64_t v = fxsv_served_version(m);
    fxsv_served_release(m);
    return v;
}

/* Of N requests since it was set, floor(N * P / 100) go to the canary, turn
 * n when floor((n + 1) P / 100) passes floor(n P / 100); explicit versions
 * bypass the split and do not move it. */
static void test_split_is_exact(void **state)
{
    fixture *f = *state;
    char err[512];
    static const uint32_t percents[] = { 0, 1, 7, 25, 30, 50, 99, 100 };
    for (size_t k = 0; k < sizeof percents / sizeof percents[0]; k++) {
        uint32_t p = percents[k];
        if (fxsv_serving_set_canary(f->sv, "default/m", 1, p, err, sizeof err))
            fail_msg("%s", err);
        int canary = 0;
        for (uint32_t n = 0; n < 250; n++) {
            int64_t v = route(f);
            uint32_t t = n % 100;
            assert_int_equal(v, (t + 1) * p / 100 > t * p / 100 ? 1 : 2);
            canary += v == 1;
            if (n % 50 == 0) { /* an explicit version between: not counted */
                fxsv_served *m;
                assert_int_equal(fxsv_serving_route(f->sv, "default/m", 2, &m, err, sizeof err), 0);
                assert_int_equal(fxsv_served_version(m), 2);
                fxsv_served_release(m);
            }
        }
        assert_int_equal(canary, 250 * p / 100);
    }
    /* off: every request to the main version, and acquire as ever */
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", 0, 0, err, sizeof err), 0);
    for (int n = 0; n < 10; n++)
        assert_int_equal(route(f), 2);
    fxsv_canary cn;
    assert_int_equal(fxsv_canary_load(f->st, "default/m", &cn, err, sizeof err), 0);
    assert_int_equal(cn.version, 0);
}

static void test_bad_settings_are_refused(void **state)
{
    fixture *f = *state;
    char err[512];
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", 3, 10, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(err, "canary version 3"));
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", 2, 10, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "main version"));
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", 1, 101, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "101"));
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", -1, 10, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/x", 1, 10, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/x", 0, 0, err, sizeof err),
                     FXS_NOT_FOUND);
    fxsv_canary cn;
    assert_int_equal(fxsv_canary_load(f->st, "default/m", &cn, err, sizeof err), 0);
    assert_int_equal(cn.version, 0); /* nothing stored by the refusals */
    /* the batching settings and the canary keep each other */
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", 1, 40, err, sizeof err), 0);
    fxb_config c;
    fxb_config_default(&c);
    c.max_batch_size = 3;
    assert_int_equal(fxsv_serving_set_config(f->sv, "default/m", &c, err, sizeof err), 0);
    assert_int_equal(fxsv_canary_load(f->st, "default/m", &cn, err, sizeof err), 0);
    assert_int_equal(cn.version, 1);
    assert_int_equal(cn.percent, 40);
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", 1, 60, err, sizeof err), 0);
    assert_int_equal(fxsv_cfg_load(f->st, "default/m", &c, err, sizeof err), 0);
    assert_int_equal(c.max_batch_size, 3);
}

/* The canary set while the model is not loaded is served from its load;
 * when the main version becomes the canary's (here: version 2's file is
 * damaged, so after a restart the latest usable version is 1), the canary
 * is turned off: it has been promoted. */
static void test_load_serves_it_and_promotion_ends_it(void **state)
{
    fixture *f = *state;
    char err[512];
    assert_int_equal(fxsv_serving_unload(f->sv, "default/m", err, sizeof err), 0);
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", 1, 50, err, sizeof err), 0);
    fxsv_served **all;
    int n;
    assert_int_equal(fxsv_serving_list(f->sv, &all, &n), 0);
    assert_int_equal(n, 0); /* stored only */
    free(all);
    assert_int_equal(fxsv_serving_load(f->sv, "default/m", err, sizeof err), 0);
    assert_int_equal(route(f), 2);
    assert_int_equal(route(f), 1);
    /* a restart with version 2 unusable */
    fxsv_serving_free(f->sv);
    fxdb_store_close(f->st);
    FILE *w = fopen(tu_pathf("%s/models/default/m/v2.safetensors", f->dir), "ab");
    assert_non_null(w);
    fputs("damage", w);
    fclose(w);
    assert_int_equal(fxdb_store_open(f->dir, &f->st, err, sizeof err), 0);
    assert_int_equal(fxsv_serving_create(f->st, NULL, &f->sv, err, sizeof err), 0);
    if (fxsv_serving_load(f->sv, "default/m", err, sizeof err))
        fail_msg("%s", err);
    for (int i = 0; i < 4; i++)
        assert_int_equal(route(f), 1);
    fxsv_canary cn;
    assert_int_equal(fxsv_canary_load(f->st, "default/m", &cn, err, sizeof err), 0);
    assert_int_equal(cn.version, 0);
    assert_int_equal(fxsv_serving_list(f->sv, &all, &n), 0);
    assert_int_equal(n, 1);
    fxsv_served_release(all[0]);
    free(all);
}

/* ------------------------------------------------------------ the race */

#define MAX_PENDING 64

typedef struct {
    fixture *f;
    atomic_bool stop;
    atomic_int failed, answered[3];
    char first_err[1024];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending; /* submitted, not yet sent */
} race;

typedef struct {
    race *r;
    int64_t version;
} req_user;

static int race_answer(void *user, int status, const char *err, const fxsv_output *outputs)
{
    (void)user;
    (void)err;
    if (!status && (outputs[0].ndim != 2 || outputs[0].shape[0] != 1 || outputs[0].shape[1] != 2))
        return FXS_INTERNAL;
    return status;
}

static void note_failure(race *r, const char *what, int status, const char *err)
{
    pthread_mutex_lock(&r->mu);
    if (!atomic_load(&r->failed))
        snprintf(r->first_err, sizeof r->first_err, "%s: status %d: %s", what, status,
                 err ? err : "");
    atomic_fetch_add(&r->failed, 1);
    pthread_mutex_unlock(&r->mu);
}

static void race_send(void *user, int status, const char *err)
{
    req_user *u = user;
    race *r = u->r;
    if (status)
        note_failure(r, "answer", status, err);
    else
        atomic_fetch_add(&r->answered[u->version], 1);
    pthread_mutex_lock(&r->mu);
    r->pending--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(u);
}

/* Routes and submits requests without a version (every eighth names
 * version 1) until told to stop; each is answered on a serving thread or
 * inline. */
/* The requests' input: read until each is sent, which may be after its
 * sender thread has ended, so not on that thread's stack. */
static const float X[4] = { 1, 2, 3, 4 };
static const fxsv_input IN = { .ndim = 2, .shape = { 1, 4 }, .data = X };

static void *sender(void *arg)
{
    race *r = arg;
    char err[512];
    for (int i = 0; !atomic_load(&r->stop); i++) {
        fxsv_served *m;
        int64_t want = i % 8 == 7 ? 1 : 0;
        int rc = fxsv_serving_route(r->f->sv, "default/m", want, &m, err, sizeof err);
        if (rc) {
            note_failure(r, "route", rc, err);
            continue;
        }
        req_user *u = malloc(sizeof *u);
        *u = (req_user){ r, fxsv_served_version(m) };
        if (u->version < 1 || u->version > 2 || (want && u->version != want))
            note_failure(r, "wrong version", 0, NULL);
        pthread_mutex_lock(&r->mu);
        while (r->pending >= MAX_PENDING) /* within the queue: a full one refuses */
            pthread_cond_wait(&r->cv, &r->mu);
        r->pending++;
        pthread_mutex_unlock(&r->mu);
        fxsv_request q = { .inputs = &IN, .samples = 1, .received_ns = fxu_mono_ns(),
                           .answer = race_answer, .send = race_send, .user = u,
                           .may_run_inline = i % 2 == 0 };
        rc = fxsv_submit(m, &q, err, sizeof err);
        /* released at once: the request holds the instance until sent, so
         * an instance swapped out meanwhile lives until its requests end */
        fxsv_served_release(m);
        if (rc) {
            note_failure(r, "submit", rc, err);
            pthread_mutex_lock(&r->mu);
            r->pending--;
            pthread_mutex_unlock(&r->mu);
            free(u);
        }
    }
    return NULL;
}

static void test_changes_while_requests_flow(void **state)
{
    fixture *f = *state;
    race r = { .f = f, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    enum { SENDERS = 6 };
    pthread_t th[SENDERS];
    for (int i = 0; i < SENDERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, sender, &r), 0);
    char err[512];
    int changes = 0;
    for (int i = 0; i < 300; i++, changes++) {
        int rc;
        switch (i % 6) {
        case 0: case 1: case 3:
            rc = fxsv_serving_set_canary(f->sv, "default/m", 1, (uint32_t)(i * 37 % 101), err,
                                        sizeof err);
            break;
        case 2: case 4:
            rc = fxsv_serving_set_canary(f->sv, "default/m", 0, 0, err, sizeof err);
            break;
        default: { /* new batching settings rebuild both instances */
            fxb_config c;
            fxb_config_default(&c);
            c.max_batch_size = 1 + (uint32_t)(i % 7);
            c.max_queue_delay_us = (uint64_t)(i % 3) * 100;
            rc = fxsv_serving_set_config(f->sv, "default/m", &c, err, sizeof err);
        }
        }
        if (rc)
            fail_msg("change %d: %s", i, err);
        if (i % 50 == 49) /* a reload of the main version, as ImportWeights does */
            assert_int_equal(fxsv_serving_reload(f->sv, "default/m", err, sizeof err), 0);
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < SENDERS; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_lock(&r.mu);
    while (r.pending > 0)
        pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    if (atomic_load(&r.failed))
        fail_msg("%d requests failed; the first: %s", atomic_load(&r.failed), r.first_err);
    assert_true(atomic_load(&r.answered[1]) > 0);
    assert_true(atomic_load(&r.answered[2]) > 0);
    if (getenv("FX_TEST_VERBOSE"))
        printf("%d changes, answered v1 %d v2 %d\n", changes, atomic_load(&r.answered[1]),
               atomic_load(&r.answered[2]));
    /* The statistics count every answer, by version (both served now). */
    assert_int_equal(fxsv_serving_set_canary(f->sv, "default/m", 1, 50, err, sizeof err), 0);
    fxsv_served **all;
    int n;
    assert_int_equal(fxsv_serving_list(f->sv, &all, &n), 0);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++) {
        fxsv_stats st;
        fxsv_served_stats(all[i], &st);
        int64_t v = fxsv_served_version(all[i]);
        assert_int_equal(st.success.count, (uint64_t)atomic_load(&r.answered[v]));
        assert_int_equal(st.fail.count, 0);
        fxsv_served_release(all[i]);
    }
    free(all);
    /* Unloading with the canary on frees both (ASan: no leak). */
    assert_int_equal(fxsv_serving_unload(f->sv, "default/m", err, sizeof err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_is_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_settings_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_serves_it_and_promotion_ends_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_changes_while_requests_flow, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
