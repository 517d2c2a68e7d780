/*
 * test_yield.c - inference before training (training/yield.h): the policy a
 * training job follows at its step boundaries, on a simulated clock (steps
 * of a known length, pressure switched on and off by time), and the
 * pressure serving reports (fxsv_serving_pressure) for queued requests.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "base/util.h"
#include "fluxion/v1/model.pb-c.h"
#include "models/graph.h"
#include "serving/serving.h"
#include "store/store.h"
#include "training/yield.h"
#include "servertest.h"

/* ------------------------------------------------------ simulated clock */

typedef struct {
    uint64_t t;                 /* ns */
    uint64_t on_from, on_until; /* pressure 1 in [on_from, on_until) */
    uint64_t sleeps;
} sim;

static uint64_t sim_now(void *c) { return ((sim *)c)->t; }
static void sim_sleep(void *c, uint64_t ns)
{
    ((sim *)c)->t += ns;
    ((sim *)c)->sleeps++;
}
static int sim_pressure(void *c)
{
    const sim *s = c;
    return s->t >= s->on_from && s->t < s->on_until ? 3 : 0;
}

#define MS 1000000ull
#define SEC 1000000000ull

static void sim_yield(fxt_yield *y, sim *s, double min_share)
{
    fxt_yield_opts o = { .min_share = min_share, .pressure = sim_pressure, .pressure_data = s,
                         .now_ns = sim_now, .sleep_ns = sim_sleep, .clock = s };
    fxt_yield_init(y, &o);
}

/* A run of steps of step_ns each until the clock passes end_ns; per
 * boundary, when it started and how long it waited (caller frees). */
typedef struct {
    uint64_t *at, *waited;
    int n;
} trace;

static trace run_steps(fxt_yield *y, sim *s, uint64_t step_ns, uint64_t end_ns)
{
    trace tr = { 0 };
    int cap = 0;
    while (s->t < end_ns) {
        s->t += step_ns; /* a training step */
        if (tr.n == cap) {
            cap = cap ? 2 * cap : 1024;
            tr.at = realloc(tr.at, sizeof *tr.at * (size_t)cap);
            tr.waited = realloc(tr.waited, sizeof *tr.waited * (size_t)cap);
            assert_non_null(tr.at);
            assert_non_null(tr.waited);
        }
        tr.at[tr.n] = s->t;
        tr.waited[tr.n] = fxt_yield_step(y);
        assert_int_equal(s->t, tr.at[tr.n] + tr.waited[tr.n]);
        tr.n++;
    }
    return tr;
}

static void trace_free(trace *tr)
{
    free(tr->at);
    free(tr->waited);
}

/* Training's share of the wall time in [from, to): the steps of step_ns
 * that ended at tr.at[i] ran in [at - step_ns, at). */
static double share_between(const trace *tr, uint64_t step_ns, uint64_t from, uint64_t to)
{
    uint64_t train = 0;
    for (int i = 0; i < tr->n; i++) {
        uint64_t a = tr->at[i] - step_ns, b = tr->at[i];
        a = a < from ? from : a;
        b = b > to ? to : b;
        if (b > a)
            train += b - a;
    }
    return (double)train / (double)(to - from);
}

/* Under steady pressure the job waits at its boundaries, but never so much
 * that its share of any 2 s of wall time falls below min_share: it keeps
 * running at about min_share of its speed alone, not less, not much more. */
static void test_yields_under_pressure_within_min_share(void **state)
{
    (void)state;
    const double shares[] = { 0.1, 0.25, 0.5 };
    const uint64_t steps[] = { 1 * MS, 7 * MS, 40 * MS };
    for (size_t k = 0; k < sizeof shares / sizeof shares[0]; k++)
        for (size_t m = 0; m < sizeof steps / sizeof steps[0]; m++) {
            sim s = { .on_from = 0, .on_until = UINT64_MAX };
            fxt_yield y;
            sim_yield(&y, &s, shares[k]);
            trace tr = run_steps(&y, &s, steps[m], 30 * SEC);
            assert_true(y.yields > 0);
            /* the real share of every 2 s window (after the first one) */
            double lo = 1, total = share_between(&tr, steps[m], 0, s.t);
            for (uint64_t from = 2 * SEC; from + 2 * SEC <= 30 * SEC; from += 100 * MS) {
                double sh = share_between(&tr, steps[m], from, from + 2 * SEC);
                lo = sh < lo ? sh : lo;
            }
            /* what it should get: min_share, or more where the per-step
             * bound on a wait (max_wait_s) gives a long step more */
            double step_s = (double)steps[m] / 1e9;
            double want = fmax(shares[k], step_s / (step_s + FXT_YIELD_MAX_WAIT_S));
            if (getenv("FX_TEST_VERBOSE"))
                printf("min_share %.2f, step %4.0f ms: lowest 2 s share %.3f, overall %.3f\n",
                       shares[k], step_s * 1e3, lo, total);
            if (lo < shares[k] * 0.95 || total > want * 1.1 + 0.01)
                fail_msg("min_share %.2f, steps of %llu ms: lowest 2 s share %.3f, overall %.3f",
                         shares[k], (unsigned long long)(steps[m] / MS), lo, total);
            trace_free(&tr);
        }
}

/* The share the policy keeps never drops below min_share at a boundary. */
static void test_share_never_below_min(void **state)
{
    (void)state;
    sim s = { .on_from = 0, .on_until = UINT64_MAX };
    fxt_yield y;
    sim_yield(&y, &s, 0.2);
    for (int i = 0; i < 20000; i++) {
        s.t += (uint64_t)(i % 13 + 1) * 300000; /* steps of 0.3 to 3.9 ms */
        fxt_yield_step(&y);
        assert_true(fxt_yield_share(&y) >= 0.2 - 1e-9);
    }
    assert_true(y.yields > 0);
}

/* Without pressure nothing waits, and the pressure is all it looks at. */
static void test_no_pressure_no_wait(void **state)
{
    (void)state;
    sim s = { .on_from = 0, .on_until = 0 };
    fxt_yield y;
    sim_yield(&y, &s, 0.1);
    trace tr = run_steps(&y, &s, 2 * MS, 5 * SEC);
    assert_int_equal(y.yields, 0);
    assert_int_equal(y.waited_ns, 0);
    assert_int_equal(s.sleeps, 0);
    assert_true(fabs(fxt_yield_share(&y) - 1) < 1e-12);
    trace_free(&tr);
    /* no pressure source at all (no serving): the same */
    fxt_yield_opts o = { .min_share = 0, .now_ns = sim_now, .sleep_ns = sim_sleep, .clock = &s };
    fxt_yield_init(&y, &o);
    s.t += MS;
    assert_int_equal(fxt_yield_step(&y), 0);
}

/* When the pressure goes, the job stops yielding: a wait in progress ends
 * within one poll of it, and the boundaries after it do not wait. */
static void test_stops_yielding_when_pressure_goes(void **state)
{
    (void)state;
    sim s = { .on_from = 1 * SEC, .on_until = 3 * SEC + 123457 };
    fxt_yield y;
    sim_yield(&y, &s, 0.1);
    trace tr = run_steps(&y, &s, 5 * MS, 6 * SEC);
    uint64_t poll = (uint64_t)(FXT_YIELD_POLL_S * 1e9);
    bool waited_during = false;
    for (int i = 0; i < tr.n; i++) {
        uint64_t end = tr.at[i] + tr.waited[i];
        if (tr.at[i] < s.on_from || tr.at[i] >= s.on_until)
            assert_int_equal(tr.waited[i], 0); /* before and after: none */
        else
            waited_during |= tr.waited[i] > 0;
        if (tr.waited[i] && end > s.on_until) /* the wait that saw it go */
            assert_true(end - s.on_until <= poll);
    }
    assert_true(waited_during);
    trace_free(&tr);
}

/* One boundary waits at most max_wait_s, even where the share allows more
 * (a long step, min_share 0), so a stop is seen within that. */
static void test_wait_is_bounded_per_step(void **state)
{
    (void)state;
    sim s = { .on_from = 0, .on_until = UINT64_MAX };
    fxt_yield y;
    sim_yield(&y, &s, 0);
    trace tr = run_steps(&y, &s, 1 * SEC, 20 * SEC);
    uint64_t bound = (uint64_t)(FXT_YIELD_MAX_WAIT_S * 1e9);
    for (int i = 0; i < tr.n; i++)
        assert_true(tr.waited[i] > 0 && tr.waited[i] <= bound);
    trace_free(&tr);
}

/* ------------------------------------------------ serving's pressure */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sent;
    int status[8];
} answers;

static int ans_answer(void *user, int status, const char *err, const fxsv_output *outputs)
{
    (void)user;
    (void)err;
    (void)outputs;
    return status;
}

static uint64_t A_last_sent;
static answers A = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, { 0 } };

static void ans_send(void *user, int status, const char *err)
{
    (void)err;
    pthread_mutex_lock(&A.mu);
    A.status[(intptr_t)user] = status;
    A.sent++;
    A_last_sent = fxu_mono_ns();
    pthread_cond_broadcast(&A.cv);
    pthread_mutex_unlock(&A.mu);
}

static const char MLP_JSON[] =
    "{\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]}],"
    " \"nodes\": [{\"name\": \"fc\", \"op\": \"dense\", \"inputs\": [\"x\"],"
    "   \"attrs\": {\"in_features\": 4, \"out_features\": 2}}],"
    " \"outputs\": [{\"name\": \"y\", \"source\": \"fc\"}]}";

static void store_model(fxdb_store *st, const char *name)
{
    json_error_t je;
    json_t *j = json_loads(MLP_JSON, 0, &je);
    char err[512];
    Fluxion__V1__ModelSpec *ms =
        (void *)pbjson_decode(&fluxion__v1__model_spec__descriptor, j, err, sizeof err);
    json_decref(j);
    assert_non_null(ms);
    fxg_graph *g = st_graph_json(MLP_JSON, 1);
    void *w;
    size_t wlen, slen = fluxion__v1__model_spec__get_packed_size(ms);
    uint8_t *spec = malloc(slen);
    fluxion__v1__model_spec__pack(ms, spec);
    assert_int_equal(fxg_save_weights(g, &w, &wlen, err, sizeof err), 0);
    if (fxdb_store_create_model(st, name, "", spec, slen, 1, false, w, wlen, "init", err,
                                sizeof err))
        fail_msg("%s", err);
    free(w);
    free(spec);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(ms, NULL);
}

/* Requests queued for a served model count on its device (and only
 * there) until they are answered; none left: 0. */
static void test_serving_pressure_counts_queued(void **state)
{
    (void)state;
    char dir[] = "/tmp/fx_yield_XXXXXX", err[512];
    assert_non_null(mkdtemp(dir));
    fxdb_store *st;
    fxsv_serving *sv;
    assert_int_equal(fxdb_store_open(dir, &st, err, sizeof err), 0);
    assert_int_equal(fxsv_serving_create(st, NULL, &sv, err, sizeof err), 0);
    store_model(st, "default/m");
    /* a batch waits up to 2 s for more requests than will come (a
     * preferred size: it waits the delay for it) */
    fxb_config c;
    fxb_config_default(&c);
    c.max_batch_size = 64;
    c.max_queue_delay_us = 2000000;
    c.preferred[0] = 64;
    c.n_preferred = 1;
    if (fxsv_serving_set_config(sv, "default/m", &c, err, sizeof err) ||
        fxsv_serving_load(sv, "default/m", err, sizeof err))
        fail_msg("%s", err);
    uint64_t last = 1;
    assert_int_equal(fxsv_serving_activity(sv, fx_cpu(), &last), 0);
    assert_int_equal(last, 0); /* never a request */

    uint64_t t0 = fxu_mono_ns();
    fxsv_served *m;
    assert_int_equal(fxsv_serving_acquire(sv, "default/m", 0, &m, err, sizeof err), 0);
    float x[3][4] = { { 1, 2, 3, 4 }, { 0 }, { -1 } };
    fxsv_input in[3];
    for (int i = 0; i < 3; i++) {
        in[i] = (fxsv_input){ .ndim = 2, .shape = { 1, 4 }, .data = x[i] };
        fxsv_request r = { .inputs = &in[i], .samples = 1, .received_ns = fxu_mono_ns(),
                           .answer = ans_answer, .send = ans_send, .user = (void *)(intptr_t)i };
        assert_int_equal(fxsv_submit(m, &r, err, sizeof err), 0);
        assert_int_equal(fxsv_serving_pressure(sv, fx_cpu()), i + 1);
    }
    fx_device gpu = { .type = FX_DEV_CUDA, .index = 0 };
    assert_int_equal(fxsv_serving_pressure(sv, gpu), 0);
    assert_int_equal(A.sent, 0);
    assert_int_equal(fxsv_serving_activity(sv, fx_cpu(), &last), 3);
    assert_true(last >= t0);
    /* answered (one batch, after the delay): no pressure left, and the
     * activity is the answer's */
    pthread_mutex_lock(&A.mu);
    while (A.sent < 3)
        pthread_cond_wait(&A.cv, &A.mu);
    pthread_mutex_unlock(&A.mu);
    for (int i = 0; i < 3; i++)
        assert_int_equal(A.status[i], 0);
    assert_int_equal(fxsv_serving_activity(sv, fx_cpu(), &last), 0);
    assert_true(last >= t0 + 1000000000u);
    fxsv_served_release(m);

    /* served again with no delay: answered requests leave no pressure */
    c.max_queue_delay_us = 0;
    if (fxsv_serving_set_config(sv, "default/m", &c, err, sizeof err) ||
        fxsv_serving_load(sv, "default/m", err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(fxsv_serving_acquire(sv, "default/m", 0, &m, err, sizeof err), 0);
    A.sent = 0;
    fxsv_request r = { .inputs = &in[0], .samples = 1, .received_ns = fxu_mono_ns(),
                       .answer = ans_answer, .send = ans_send, .user = (void *)(intptr_t)0 };
    assert_int_equal(fxsv_submit(m, &r, err, sizeof err), 0);
    pthread_mutex_lock(&A.mu);
    while (A.sent < 1)
        pthread_cond_wait(&A.cv, &A.mu);
    pthread_mutex_unlock(&A.mu);
    assert_int_equal(A.status[0], 0);
    assert_int_equal(fxsv_serving_pressure(sv, fx_cpu()), 0);
    /* a job on the CPU just after it waits for the linger (the client's next
     * request is near), then no more; a job on another device not at all */
    fxt_yield y, other;
    fxt_yield_serving(&y, sv, fx_cpu(), 0);
    fxt_yield_serving(&other, sv, gpu, 0);
    assert_int_equal(fxt_yield_step(&other), 0);
    uint64_t linger = (uint64_t)(FXT_YIELD_LINGER_S * 1e9);
    bool fresh = fxu_mono_ns() - A_last_sent < linger / 2; /* not so on a loaded machine */
    uint64_t waited = fxt_yield_step(&y);
    assert_true(waited <= (uint64_t)(FXT_YIELD_MAX_WAIT_S * 1e9) + 50000000u);
    if (fresh)
        assert_true(waited > 0);
    /* it waited until the linger was over (less the send's own time) */
    assert_true(fxu_mono_ns() - A_last_sent + 1000000u >= linger);
    usleep(10000);
    assert_int_equal(fxt_yield_step(&y), 0);
    /* what a boundary costs a job when nothing is waiting: a lock, a walk
     * of the loaded models, two clock reads (a step is tens of us at least) */
    uint64_t c0 = fxu_mono_ns();
    for (int i = 0; i < 100000; i++)
        fxt_yield_step(&y);
    double per = (double)(fxu_mono_ns() - c0) / 100000;
    if (getenv("FX_TEST_VERBOSE"))
        printf("a step boundary with nothing waiting: %.0f ns\n", per);
    assert_true(per < 20000);
    fxsv_served_release(m);

    fxsv_serving_free(sv);
    fxdb_store_close(st);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yields_under_pressure_within_min_share),
        cmocka_unit_test(test_share_never_below_min),
        cmocka_unit_test(test_no_pressure_no_wait),
        cmocka_unit_test(test_stops_yielding_when_pressure_goes),
        cmocka_unit_test(test_wait_is_bounded_per_step),
        cmocka_unit_test(test_serving_pressure_counts_queued),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
