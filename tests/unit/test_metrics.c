/*
 * test_metrics.c - the exposition writer (server/metrics/metrics.h): the
 * exact text of each kind of family, escaping, and every refusal (a family
 * twice, a counter without _total, a sample outside its family, bad names,
 * bad bounds); the first failure sticks. And serving's statistics records
 * (serving/stats_internal.h), which the histograms come from: bucket edges
 * (le is inclusive), codes, and records shared until forgotten.
 *
 * `test_metrics --promtool` writes an exposition with every feature (and
 * hostile label values) to a file and runs `promtool check metrics` on it:
 * the format's own checker, not ours (ctest metrics_promtool; exits 77 when
 * promtool is not installed: Debian package prometheus).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <math.h>
#include <cmocka.h>

#include "base/status.h"
#include "metrics/metrics.h"
#include "serving/stats_internal.h"

static char err[256];

static char *finish_ok(fxm_writer *w)
{
    char *text;
    size_t len;
    assert_int_equal(fxm_finish(w, &text, &len, err, sizeof err), 0);
    assert_int_equal(len, strlen(text));
    fxm_free(w);
    return text;
}

static void test_counter_gauge(void **state)
{
    (void)state;
    fxm_writer w;
    fxm_init(&w);
    fxm_label l[] = { { "team", "a" }, { "model", "m" } };
    assert_int_equal(fxm_family(&w, "fx_requests_total", FXM_COUNTER, "Requests."), 0);
    assert_int_equal(fxm_sample(&w, l, 2, 3), 0);
    assert_int_equal(fxm_sample(&w, NULL, 0, 1e20), 0);
    assert_int_equal(fxm_family(&w, "fx_depth", FXM_GAUGE, "Depth."), 0);
    assert_int_equal(fxm_sample(&w, l, 1, -2.5), 0);
    assert_int_equal(fxm_sample(&w, NULL, 0, NAN), 0);
    assert_int_equal(fxm_sample(&w, NULL, 0, -INFINITY), 0);
    assert_int_equal(fxm_sample(&w, NULL, 0, 0.005), 0);
    char *t = finish_ok(&w);
    assert_string_equal(t, "# HELP fx_requests_total Requests.\n"
                           "# TYPE fx_requests_total counter\n"
                           "fx_requests_total{team=\"a\",model=\"m\"} 3\n"
                           "fx_requests_total 1e+20\n"
                           "# HELP fx_depth Depth.\n"
                           "# TYPE fx_depth gauge\n"
                           "fx_depth{team=\"a\"} -2.5\n"
                           "fx_depth NaN\n"
                           "fx_depth -Inf\n"
                           "fx_depth 0.005\n");
    free(t);
}

static void test_histogram(void **state)
{
    (void)state;
    fxm_writer w;
    fxm_init(&w);
    double b[] = { 0.001, 0.5, 2 };
    uint64_t c[] = { 1, 0, 2, 4 };
    fxm_label l[] = { { "model", "m" } };
    assert_int_equal(fxm_family(&w, "fx_seconds", FXM_HISTOGRAM, "Time."), 0);
    assert_int_equal(fxm_histogram(&w, l, 1, b, c, 3, 9.25), 0);
    uint64_t z[] = { 0 };
    assert_int_equal(fxm_histogram(&w, NULL, 0, NULL, z, 0, 0), 0);
    char *t = finish_ok(&w);
    assert_string_equal(t, "# HELP fx_seconds Time.\n"
                           "# TYPE fx_seconds histogram\n"
                           "fx_seconds_bucket{model=\"m\",le=\"0.001\"} 1\n"
                           "fx_seconds_bucket{model=\"m\",le=\"0.5\"} 1\n"
                           "fx_seconds_bucket{model=\"m\",le=\"2\"} 3\n"
                           "fx_seconds_bucket{model=\"m\",le=\"+Inf\"} 7\n"
                           "fx_seconds_sum{model=\"m\"} 9.25\n"
                           "fx_seconds_count{model=\"m\"} 7\n"
                           "fx_seconds_bucket{le=\"+Inf\"} 0\n"
                           "fx_seconds_sum 0\n"
                           "fx_seconds_count 0\n");
    free(t);
}

static void test_escaping(void **state)
{
    (void)state;
    fxm_writer w;
    fxm_init(&w);
    fxm_label l[] = { { "model", "a\\b\"c\nd}{,=" } };
    assert_int_equal(fxm_family(&w, "fx_g", FXM_GAUGE, "back\\slash\nnew \"quoted\""), 0);
    assert_int_equal(fxm_sample(&w, l, 1, 1), 0);
    char *t = finish_ok(&w);
    assert_string_equal(t, "# HELP fx_g back\\\\slash\\nnew \"quoted\"\n"
                           "# TYPE fx_g gauge\n"
                           "fx_g{model=\"a\\\\b\\\"c\\nd}{,=\"} 1\n");
    free(t);
}

/* Each refusal: its status and a message naming what was wrong; the
 * failure sticks (a later valid call does not clear it). */
static void refused(void (*fn)(fxm_writer *), const char *needle)
{
    fxm_writer w;
    fxm_init(&w);
    fn(&w);
    assert_int_equal(fxm_family(&w, "fx_later", FXM_GAUGE, "after"), FXS_INVALID_ARGUMENT);
    char *t = (char *)1;
    assert_int_equal(fxm_finish(&w, &t, NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_null(t);
    if (!strstr(err, needle))
        fail_msg("'%s' does not name '%s'", err, needle);
    fxm_free(&w);
}

static void twice(fxm_writer *w)
{
    fxm_family(w, "fx_a", FXM_GAUGE, "");
    fxm_sample(w, NULL, 0, 1);
    fxm_family(w, "fx_b", FXM_GAUGE, "");
    fxm_family(w, "fx_a", FXM_GAUGE, "");
}
static void no_total(fxm_writer *w) { fxm_family(w, "fx_requests", FXM_COUNTER, ""); }
static void gauge_total(fxm_writer *w) { fxm_family(w, "fx_x_total", FXM_GAUGE, ""); }
static void bad_name(fxm_writer *w) { fxm_family(w, "fx-a", FXM_GAUGE, ""); }
static void digit_name(fxm_writer *w) { fxm_family(w, "1fx", FXM_GAUGE, ""); }
static void no_family(fxm_writer *w) { fxm_sample(w, NULL, 0, 1); }
static void sample_in_hist(fxm_writer *w)
{
    fxm_family(w, "fx_h", FXM_HISTOGRAM, "");
    fxm_sample(w, NULL, 0, 1);
}
static void hist_in_gauge(fxm_writer *w)
{
    uint64_t c[] = { 1 };
    fxm_family(w, "fx_g", FXM_GAUGE, "");
    fxm_histogram(w, NULL, 0, NULL, c, 0, 1);
}
static void bad_label(fxm_writer *w)
{
    fxm_label l[] = { { "mo del", "x" } };
    fxm_family(w, "fx_g", FXM_GAUGE, "");
    fxm_sample(w, l, 1, 1);
}
static void reserved_label(fxm_writer *w)
{
    fxm_label l[] = { { "__name__", "x" } };
    fxm_family(w, "fx_g", FXM_GAUGE, "");
    fxm_sample(w, l, 1, 1);
}
static void le_label(fxm_writer *w)
{
    fxm_label l[] = { { "le", "1" } };
    fxm_family(w, "fx_g", FXM_GAUGE, "");
    fxm_sample(w, l, 1, 1);
}
static void dup_label(fxm_writer *w)
{
    fxm_label l[] = { { "a", "1" }, { "a", "2" } };
    fxm_family(w, "fx_g", FXM_GAUGE, "");
    fxm_sample(w, l, 2, 1);
}
static void negative_counter(fxm_writer *w)
{
    fxm_family(w, "fx_c_total", FXM_COUNTER, "");
    fxm_sample(w, NULL, 0, -1);
}
static void unsorted_bounds(fxm_writer *w)
{
    double b[] = { 1, 1 };
    uint64_t c[] = { 0, 0, 0 };
    fxm_family(w, "fx_h", FXM_HISTOGRAM, "");
    fxm_histogram(w, NULL, 0, b, c, 2, 0);
}
static void inf_bound(fxm_writer *w)
{
    double b[] = { INFINITY };
    uint64_t c[] = { 0, 0 };
    fxm_family(w, "fx_h", FXM_HISTOGRAM, "");
    fxm_histogram(w, NULL, 0, b, c, 1, 0);
}

static void test_refusals(void **state)
{
    (void)state;
    refused(twice, "family fx_a declared twice");
    refused(no_total, "must end in _total");
    refused(gauge_total, "only a counter ends in _total");
    refused(bad_name, "'fx-a' is not a metric name");
    refused(digit_name, "'1fx' is not a metric name");
    refused(no_family, "outside a counter or gauge family");
    refused(sample_in_hist, "outside a counter or gauge family");
    refused(hist_in_gauge, "outside a histogram family");
    refused(bad_label, "'mo del' is not a label name");
    refused(reserved_label, "'__name__' is not a label name");
    refused(le_label, "'le' is not a label name");
    refused(dup_label, "label a given twice");
    refused(negative_counter, "counter fx_c_total: value -1");
    refused(unsorted_bounds, "not finite and ascending at 1");
    refused(inf_bound, "not finite and ascending at 0");
}

static void test_empty(void **state)
{
    (void)state;
    fxm_writer w;
    fxm_init(&w);
    char *t = finish_ok(&w);
    assert_string_equal(t, "");
    free(t);
}

static const fxsv_model_metrics *find(const fxsv_model_metrics *m, int n, const char *name,
                                      int64_t version)
{
    for (int i = 0; i < n; i++)
        if (strcmp(m[i].name, name) == 0 && m[i].version == version)
            return &m[i];
    return NULL;
}

static void test_records(void **state)
{
    (void)state;
    fxsv_records *r = fxsv_records_new();
    assert_non_null(r);
    fxsv_record *a = fxsv_record_get(r, "t/m", 1), *a2 = fxsv_record_get(r, "t/m", 1);
    fxsv_record *b = fxsv_record_get(r, "t/m", 2);
    assert_ptr_equal(a, a2); /* one record per (model, version): instances share it */
    assert_ptr_not_equal(a, b);
    /* 1 ms exactly is in le="0.001"; 1 ms + 1 ns in le="0.0025" */
    fxb_timing t1 = { .queue_ns = 400000, .input_ns = 100000, .infer_ns = 400000,
                      .output_ns = 100000, .batch_size = 2 };
    fxb_timing t2 = t1;
    t2.output_ns++;
    fxsv_record_request(a, 0, &t1, 2);
    fxsv_record_request(a2, 0, &t2, 3);
    fxsv_record_request(a, FXS_INVALID_ARGUMENT, &t1, 0);
    fxsv_record_request(a, 99, &t1, 0); /* not a code: UNKNOWN */
    fxsv_record_batch(a, &t1);
    t1.batch_size = 1025;
    fxsv_record_batch(a, &t1);
    fxsv_record_loaded(a);
    fxsv_record_unloaded(a);
    fxsv_record_in_flight(a, 1);
    fxsv_model_metrics *ms;
    int n;
    assert_int_equal(fxsv_records_snapshot(r, &ms, &n), 0);
    assert_int_equal(n, 2);
    const fxsv_model_metrics *m = find(ms, n, "t/m", 1);
    assert_non_null(m);
    assert_int_equal(m->requests[0], 2);
    assert_int_equal(m->requests[FXS_INVALID_ARGUMENT], 1);
    assert_int_equal(m->requests[FXS_UNKNOWN], 1);
    assert_int_equal(m->stats.inference_count, 5);
    assert_int_equal(m->stats.fail.count, 2);
    assert_int_equal(m->request.counts[3], 1); /* le 0.001 */
    assert_int_equal(m->request.counts[4], 1); /* le 0.0025 */
    assert_int_equal(m->request.sum_ns, 2000001);
    assert_int_equal(m->queue.counts[2], 2);   /* 0.4 ms: le 0.0005 */
    assert_int_equal(m->compute.counts[3], 2); /* 0.6 ms (+ 1 ns): le 0.001 */
    assert_int_equal(m->batch_counts[1], 1);   /* 2: le 2 */
    assert_int_equal(m->batch_counts[FXSV_BATCH_BOUNDS], 1); /* 1025: +Inf */
    assert_int_equal(m->batch_samples, 1027);
    assert_int_equal(m->stats.execution_count, 2);
    assert_int_equal(m->loads, 1);
    assert_int_equal(m->unloads, 1);
    assert_int_equal(m->in_flight, 1);
    fxsv_model_metrics_free(ms, n);
    /* forgotten (the model deleted): gone from the registry; an instance
     * still holding it records into it harmlessly; a new one starts at 0 */
    fxsv_records_forget(r, "t/m");
    assert_int_equal(fxsv_records_snapshot(r, &ms, &n), 0);
    assert_int_equal(n, 0);
    fxsv_model_metrics_free(ms, n);
    fxsv_record_request(a, 0, &t2, 1);
    fxsv_record *c = fxsv_record_get(r, "t/m", 1);
    assert_ptr_not_equal(c, a);
    assert_int_equal(fxsv_records_snapshot(r, &ms, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ms[0].requests[0], 0);
    fxsv_model_metrics_free(ms, n);
    fxsv_record_unref(a);
    fxsv_record_unref(a2);
    fxsv_record_unref(b);
    fxsv_record_unref(c);
    fxsv_records_free(r);
}

/* Every feature, with label values a client could choose, through promtool. */
static int run_promtool(void)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        printf("SKIPPED: promtool is not installed (Debian package prometheus)\n");
        return 77;
    }
    fxm_writer w;
    fxm_init(&w);
    fxm_label l[] = { { "team", "t" }, { "model", "we\"ird\\na\nme{}" }, { "code", "OK" } };
    double b[] = { 0.0001, 0.005, 1, 10 };
    uint64_t c[] = { 1, 2, 0, 3, 1 };
    fxm_family(&w, "fx_requests_total", FXM_COUNTER, "Requests \"so far\".\nTwo lines \\ here.");
    fxm_sample(&w, l, 3, 5);
    fxm_sample(&w, l, 2, 0);
    fxm_family(&w, "fx_duration_seconds", FXM_HISTOGRAM, "Durations.");
    fxm_histogram(&w, l, 2, b, c, 4, 12.5);
    fxm_histogram(&w, l, 1, b, c, 4, 0.25);
    fxm_family(&w, "fx_memory_bytes", FXM_GAUGE, "Memory.");
    fxm_sample(&w, NULL, 0, 123456789012.0);
    fxm_sample(&w, l, 1, NAN);
    char *t;
    size_t len;
    if (fxm_finish(&w, &t, &len, err, sizeof err) != 0) {
        printf("FAIL: %s\n", err);
        return 1;
    }
    fxm_free(&w);
    char path[] = "/tmp/fx_metrics_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, t, len) != (ssize_t)len) {
        printf("FAIL: cannot write %s\n", path);
        return 1;
    }
    close(fd);
    fputs(t, stdout);
    free(t);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    printf("%s: promtool check metrics\n", rc == 0 ? "PASS" : "FAIL");
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--promtool") == 0)
        return run_promtool();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_gauge), cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_escaping),      cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_empty),         cmocka_unit_test(test_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
