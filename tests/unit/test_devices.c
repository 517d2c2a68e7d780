/* test_devices.c - device lists and requests (server/devices.c), moving a
 * graph to a device (fxg_to_device), the serving settings "device" and
 * "memory_limit_bytes" (servecfg.c) and the batcher's memory limit.
 *
 * Written for either machine: where no GPU is present, every CUDA request
 * must fail with a message naming the device and what there is; where one
 * is, the graph moved to cuda:0 must give the CPU's outputs. */
#include "testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serving/batcher.h"
#include "serving/devices.h"
#include "models/graph.h"
#include "pbjson.h"
#include "rpc/rpc.h"
#include "serving/servecfg.h"
#include "servertest.h"

static bool have_gpu(void) { return fx_device_count(FX_DEV_CUDA) > 0; }

static void assert_contains(const char *s, const char *part)
{
    if (!strstr(s, part))
        fail_msg("'%s' should mention '%s'", s, part);
}

static fx_device cuda(int i) { return (fx_device){ FX_DEV_CUDA, i }; }

/* ------------------------------------------------------------ --devices */

static void test_parse_default(void **state)
{
    (void)state;
    fxsv_devices d;
    char err[256] = "";
    for (int k = 0; k < 2; k++) {
        memset(&d, 0x5a, sizeof d);
        assert_int_equal(fxsv_devices_parse(k ? "" : NULL, &d, err, sizeof err), 0);
        assert_int_equal(d.n, 1 + fx_device_count(FX_DEV_CUDA));
        assert_int_equal(d.dev[0].type, FX_DEV_CPU);
        for (int i = 1; i < d.n; i++) {
            assert_int_equal(d.dev[i].type, FX_DEV_CUDA);
            assert_int_equal(d.dev[i].index, i - 1);
        }
    }
    char buf[64];
    fxsv_devices cpu = { .n = 1, .dev = { fx_cpu() } };
    assert_string_equal(fxsv_devices_str(&cpu, buf, sizeof buf), "cpu");
    fxsv_devices two = { .n = 3, .dev = { cuda(1), fx_cpu(), cuda(0) } };
    assert_string_equal(fxsv_devices_str(&two, buf, sizeof buf), "cuda:1, cpu, cuda:0");
    assert_string_equal(fxsv_devices_str(&two, buf, 6), "cuda:");
}

static void test_parse_list(void **state)
{
    (void)state;
    fxsv_devices d;
    char err[256];
    assert_int_equal(fxsv_devices_parse("cpu", &d, err, sizeof err), 0);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.dev[0].type, FX_DEV_CPU);
    if (have_gpu()) {
        assert_int_equal(fxsv_devices_parse("cuda:0,cpu", &d, err, sizeof err), 0);
        assert_int_equal(d.n, 2);
        assert_int_equal(d.dev[0].type, FX_DEV_CUDA);
        assert_int_equal(d.dev[1].type, FX_DEV_CPU);
    }
}

static void parse_fails(const char *list, const char *const *mentions)
{
    fxsv_devices d;
    char err[256] = "";
    if (fxsv_devices_parse(list, &d, err, sizeof err) == 0)
        fail_msg("--devices '%s' should fail", list);
    for (; *mentions; mentions++)
        assert_contains(err, *mentions);
}

static void test_parse_errors(void **state)
{
    (void)state;
    parse_fails("cuda:63", (const char *[]){ "cuda:63", "not available", "present: cpu", NULL });
    if (!have_gpu()) {
        parse_fails("cuda:0", (const char *[]){ "cuda:0", "not available", "present: cpu", NULL });
        parse_fails("cpu,cuda", (const char *[]){ "cuda:0", "present: cpu", NULL });
    }
    parse_fails("cpu,cpu", (const char *[]){ "cpu", "twice", NULL });
    parse_fails("tpu", (const char *[]){ "'tpu'", "not a device", "present: cpu", NULL });
    parse_fails("gpu", (const char *[]){ "'gpu'", "not a device", NULL });
    parse_fails("cuda:x", (const char *[]){ "'cuda:x'", NULL });
    parse_fails("cuda:-1", (const char *[]){ "'cuda:-1'", NULL });
    parse_fails("CPU", (const char *[]){ "'CPU'", NULL });
    parse_fails("cpu,", (const char *[]){ "empty entry", NULL });
    parse_fails(",cpu", (const char *[]){ "empty entry", NULL });
    parse_fails("cpu,,cpu", (const char *[]){ "empty entry", NULL });
    char longer[200];
    memset(longer, 'c', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    parse_fails(longer, (const char *[]){ "too long", NULL });
}

/* ------------------------------------------------------------- requests */

static int resolve(const fxsv_devices *d, const char *req, fx_device *out, char *err)
{
    return fxsv_devices_resolve(d, req, "spec.device", out, err, 256);
}

static void test_resolve(void **state)
{
    (void)state;
    fx_device out;
    char err[256];
    fxsv_devices cpu = { .n = 1, .dev = { fx_cpu() } };
    /* "" and NULL take the first enabled device; NULL devices: cpu only */
    const fxsv_devices *sets[] = { &cpu, NULL };
    for (int s = 0; s < 2; s++) {
        out = cuda(5);
        assert_int_equal(resolve(sets[s], "", &out, err), 0);
        assert_int_equal(out.type, FX_DEV_CPU);
        out = cuda(5);
        assert_int_equal(resolve(sets[s], NULL, &out, err), 0);
        assert_int_equal(out.type, FX_DEV_CPU);
        out = cuda(5);
        assert_int_equal(resolve(sets[s], "cpu", &out, err), 0);
        assert_int_equal(out.type, FX_DEV_CPU);
    }
    /* the order given decides the default; only the enabled ones count */
    fxsv_devices gpu_first = { .n = 2, .dev = { cuda(3), fx_cpu() } };
    assert_int_equal(resolve(&gpu_first, "", &out, err), 0);
    assert_int_equal(out.type, FX_DEV_CUDA);
    assert_int_equal(out.index, 3);
    assert_int_equal(resolve(&gpu_first, "cuda:3", &out, err), 0);
    assert_int_equal(out.index, 3);
    fxsv_devices gpu_only = { .n = 1, .dev = { cuda(0) } };
    assert_int_equal(resolve(&gpu_only, "cpu", &out, err), FXS_FAILED_PRECONDITION);
    assert_contains(err, "spec.device: cpu is not enabled");
    assert_contains(err, "enabled: cuda:0");
}

static void test_resolve_errors(void **state)
{
    (void)state;
    fx_device out = fx_cpu();
    char err[256];
    fxsv_devices cpu = { .n = 1, .dev = { fx_cpu() } };
    assert_int_equal(resolve(&cpu, "cuda:7", &out, err), FXS_FAILED_PRECONDITION);
    assert_contains(err, "spec.device: cuda:7");
    assert_contains(err, "enabled: cpu");
    if (!have_gpu()) {
        assert_int_equal(resolve(&cpu, "cuda:0", &out, err), FXS_FAILED_PRECONDITION);
        assert_contains(err, "cuda:0 is not present");
        assert_int_equal(resolve(&cpu, "cuda", &out, err), FXS_FAILED_PRECONDITION);
        assert_contains(err, "cuda:0");
    }
    assert_int_equal(resolve(&cpu, "gpu", &out, err), FXS_FAILED_PRECONDITION);
    assert_contains(err, "'gpu'");
    assert_contains(err, "none enabled (enabled: cpu)");
    assert_int_equal(resolve(NULL, "gpu", &out, err), FXS_FAILED_PRECONDITION);
    static const char *const bad[] = { "tpu", "cuda:", "cuda:1x", "GPU", " cpu", "cpu,cuda:0" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_equal(resolve(&cpu, bad[i], &out, err), FXS_INVALID_ARGUMENT);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        assert_contains(err, quoted);
        assert_contains(err, "enabled: cpu");
    }
    assert_int_equal(out.type, FX_DEV_CPU); /* untouched by the failures */
}

static void test_most_free(void **state)
{
    (void)state;
    assert_int_equal(fxsv_devices_most_free(NULL, 0), -1);
    assert_int_equal(fxsv_devices_most_free((size_t[]){ 7 }, 1), 0);
    assert_int_equal(fxsv_devices_most_free((size_t[]){ 5, 9, 9, 1 }, 4), 1);
    assert_int_equal(fxsv_devices_most_free((size_t[]){ 0, 0, 3 }, 3), 2);
    assert_int_equal(fxsv_devices_most_free((size_t[]){ (size_t)1 << 40, 1 }, 2), 0);
}

/* --------------------------------------------------------- memory limits */

static void test_memory_limit(void **state)
{
    (void)state;
    char err[256] = "";
    assert_int_equal(fxsv_check_memory_limit("x", fx_cpu(), 1u << 30, 0, err, sizeof err), 0);
    assert_int_equal(fxsv_check_memory_limit("x", fx_cpu(), 100, 100, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_int_equal(fxsv_check_memory_limit("the job", cuda(2), 3145728, 1048576, err,
                                            sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    assert_string_equal(err, "the job on cuda:2: needs 3145728 bytes (3.0 MiB), over its memory "
                             "limit of 1048576 bytes (1.0 MiB)");
    assert_int_equal(fxsv_check_memory_limit("m", fx_cpu(), 101, 100, err, sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    assert_contains(err, "m on cpu: needs 101 bytes");
}

static void test_params_bytes(void **state)
{
    (void)state;
    fx_params p;
    fx_params_init(&p);
    assert_int_equal(fxsv_params_bytes(&p), 0);
    assert_int_equal(fxsv_params_bytes(NULL), 0);
    fx_tensor *w = fx_tensor_create(fx_cpu(), FX_F32, 2, TU_SHAPE(2, 3));
    fx_tensor *ix = fx_tensor_create(fx_cpu(), FX_I64, 1, TU_SHAPE(4));
    assert_int_equal(fx_params_add(&p, "w", w), FX_OK);
    assert_int_equal(fx_params_add(&p, "ix", ix), FX_OK);
    assert_int_equal(fxsv_params_bytes(&p), 6 * 4 + 4 * 8);
    assert_int_equal(fx_tensor_set_requires_grad(w, true), FX_OK); /* a gradient: 6 more */
    assert_int_equal(fxsv_params_bytes(&p), 6 * 4 * 2 + 4 * 8);
    fx_params_free_tensors(&p);
}

/* ------------------------------------------------------------- graphs */

/* x [-1, 4] -> dense 3: 12 weights and 3 biases */
static const char *MLP = "{\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]}],"
    "\"nodes\": [{\"name\": \"fc\", \"op\": \"dense\", \"inputs\": [\"x\"],"
    "             \"attrs\": {\"in_features\": 4, \"out_features\": 3}}],"
    "\"outputs\": [{\"name\": \"y\", \"source\": \"fc\"}]}";
#define MLP_WEIGHT_BYTES ((4 * 3 + 3) * 4)

static const float X[2 * 4] = { 1, -2, 0.5f, 3, -1, 0, 2, 0.25f };

/* y = fc(X) run on dev, copied to host */
static void forward_on(fxg_graph *g, fx_device dev, float *y)
{
    fx_ctx *ctx = fx_ctx_create(dev);
    assert_non_null(ctx);
    fx_ctx_set_grad(ctx, false);
    fx_tensor *in = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(2, 4), X), *out = NULL;
    char err[256];
    if (fxg_forward(g, ctx, &in, &out, err, sizeof err))
        fail_msg("forward: %s", err);
    assert_int_equal(fx_tensor_to_host(out, y, 6 * sizeof *y), FX_OK);
    fx_ctx_free(ctx);
}

/* y = X w^T + b from the weights, on the host */
static void forward_ref(const fxg_graph *g, float *y)
{
    float w[12], b[3];
    const fx_params *p = fxg_params(g);
    assert_int_equal(fx_tensor_to_host(fx_params_find(p, "fc.weight"), w, sizeof w), FX_OK);
    assert_int_equal(fx_tensor_to_host(fx_params_find(p, "fc.bias"), b, sizeof b), FX_OK);
    for (int r = 0; r < 2; r++)
        for (int o = 0; o < 3; o++) {
            float s = b[o];
            for (int k = 0; k < 4; k++)
                s += X[r * 4 + k] * w[o * 4 + k];
            y[r * 3 + o] = s;
        }
}

static void test_graph_to_device(void **state)
{
    (void)state;
    fxg_graph *g = st_graph_json(MLP, 7);
    float ref[6], y[6];
    forward_ref(g, ref);
    assert_int_equal(fxg_device(g).type, FX_DEV_CPU);
    char err[256] = "";
    assert_int_equal(fxg_to_device(g, fx_cpu(), err, sizeof err), 0);
    forward_on(g, fx_cpu(), y);
    tu_assert_close(y, ref, 6, 1e-5);

    assert_int_equal(fxg_to_device(g, cuda(63), err, sizeof err), FXS_FAILED_PRECONDITION);
    assert_contains(err, "cuda:63 is not available");
    if (!have_gpu()) {
        assert_int_equal(fxg_to_device(g, cuda(0), err, sizeof err), FXS_FAILED_PRECONDITION);
        assert_contains(err, "cuda:0");
    } else {
        assert_int_equal(fxg_to_device(g, cuda(0), err, sizeof err), 0);
        assert_int_equal(fxg_device(g).type, FX_DEV_CUDA);
        const fx_params *p = fxg_params(g);
        for (int i = 0; i < p->count; i++)
            assert_int_equal(p->items[i].tensor->device.type, FX_DEV_CUDA);
        forward_on(g, cuda(0), y);
        tu_assert_close(y, ref, 6, 1e-4);
        /* weights saved from the device are the host's */
        void *buf;
        size_t len;
        assert_int_equal(fxg_save_weights(g, &buf, &len, err, sizeof err), 0);
        assert_int_equal(fxg_to_device(g, fx_cpu(), err, sizeof err), 0);
        void *buf2;
        size_t len2;
        assert_int_equal(fxg_save_weights(g, &buf2, &len2, err, sizeof err), 0);
        assert_int_equal(len, len2);
        assert_memory_equal(buf, buf2, len);
        free(buf);
        free(buf2);
    }
    /* still whole and on the CPU after the failures */
    assert_int_equal(fxg_device(g).type, FX_DEV_CPU);
    forward_on(g, fx_cpu(), y);
    tu_assert_close(y, ref, 6, 1e-5);
    assert_int_equal(fxg_to_device(NULL, fx_cpu(), err, sizeof err), FXS_INTERNAL);
    fxg_free(g);
}

/* -------------------------------------------------------- serving config */

static void test_config_fields(void **state)
{
    (void)state;
    fxb_config c;
    fxb_config_default(&c);
    assert_string_equal(c.device, "");
    assert_int_equal(c.memory_limit_bytes, 0);
    char err[256];
    assert_int_equal(fxsv_cfg_set_text(&c, "device", "cuda:1", err, sizeof err), 0);
    assert_string_equal(c.device, "cuda:1");
    assert_int_equal(fxsv_cfg_set_text(&c, "memory_limit_bytes", "1048576", err, sizeof err), 0);
    assert_int_equal(c.memory_limit_bytes, 1048576);
    assert_int_equal(fxsv_cfg_set_text(&c, "memory_limit_bytes", "-1", err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_contains(err, "memory_limit_bytes");
    char longer[64];
    memset(longer, 'g', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    assert_int_equal(fxsv_cfg_set_text(&c, "device", longer, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_contains(err, "device");
    assert_string_equal(c.device, "cuda:1"); /* unchanged */
    /* the message round trip, as stored */
    Fluxion__V1__BatchingConfig m = FLUXION__V1__BATCHING_CONFIG__INIT;
    uint32_t pref[FXB_MAX_PREFERRED];
    fxsv_cfg_to_msg(&c, &m, pref);
    assert_string_equal(m.device, "cuda:1");
    assert_int_equal(m.memory_limit_bytes, 1048576);
    fxb_config back;
    fxb_config_default(&back);
    assert_int_equal(fxsv_cfg_apply(&back, &m, NULL, 0, err, sizeof err), 0);
    assert_string_equal(back.device, "cuda:1");
    assert_int_equal(back.memory_limit_bytes, 1048576);
    /* only the named field */
    fxb_config_default(&back);
    char *mask[] = { "device" };
    assert_int_equal(fxsv_cfg_apply(&back, &m, mask, 1, err, sizeof err), 0);
    assert_string_equal(back.device, "cuda:1");
    assert_int_equal(back.memory_limit_bytes, 0);
    bool listed = false;
    for (const char *const *f = fxsv_cfg_fields(); *f; f++)
        listed |= strcmp(*f, "device") == 0;
    assert_true(listed);
}

/* -------------------------------------------------------------- batcher */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
    char err[512];
    float y[64 * 3];
} answer;

static void on_done(void *user, int status, const char *err, const fxb_output *outs,
                    const fxb_timing *t)
{
    (void)t;
    answer *a = user;
    pthread_mutex_lock(&a->mu);
    a->status = status;
    snprintf(a->err, sizeof a->err, "%s", err ? err : "");
    if (!status && outs[0].bytes <= sizeof a->y)
        memcpy(a->y, outs[0].data, outs[0].bytes);
    a->done = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* One request of rows samples (rows of X repeated) through b. */
static void infer(fxb_batcher *b, int rows, answer *a)
{
    float *x = malloc((size_t)rows * 4 * sizeof *x);
    assert_non_null(x);
    for (int i = 0; i < rows * 4; i++)
        x[i] = X[i % 8];
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    fxb_input in = { .ndim = 2, .shape = { rows, 4 }, .data = x };
    fxb_request r = { .inputs = &in, .done = on_done, .user = a };
    char err[256];
    assert_int_equal(fxb_submit(b, &r, err, sizeof err), 0);
    pthread_mutex_lock(&a->mu);
    while (!a->done)
        pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
    free(x);
}

static void test_batcher_memory_limit(void **state)
{
    (void)state;
    fxg_graph *g = st_graph_json(MLP, 7);
    float ref[6];
    forward_ref(g, ref);
    fxb_config c;
    fxb_config_default(&c);
    char err[256];
    /* room for the weights, none for a batch */
    c.memory_limit_bytes = MLP_WEIGHT_BYTES + 1;
    fxb_batcher *b;
    assert_int_equal(fxb_create(g, &c, NULL, NULL, &b, err, sizeof err), 0);
    answer a;
    infer(b, 2, &a);
    assert_int_equal(a.status, FXS_RESOURCE_EXHAUSTED);
    assert_contains(a.err, "on cpu: needs");
    assert_contains(a.err, "over its memory limit of 61 bytes");
    infer(b, 2, &a); /* the instance started afresh: the same answer, no crash */
    assert_int_equal(a.status, FXS_RESOURCE_EXHAUSTED);
    fxb_free(b);
    /* a limit with room: served as without one */
    c.memory_limit_bytes = 64u << 20;
    c.instances = 2;
    assert_int_equal(fxb_create(g, &c, NULL, NULL, &b, err, sizeof err), 0);
    infer(b, 2, &a);
    assert_int_equal(a.status, 0);
    tu_assert_close(a.y, ref, 6, 1e-5);
    fxb_free(b);
    fxg_free(g);
}

/* The least a served model needs (issue 11, defect 12): its weights and a
 * one-sample batch's arena per engine context; a batcher held to exactly
 * that serves a one-sample request (the figure is not an underestimate). */
static void test_min_need(void **state)
{
    (void)state;
    fxg_graph *g = st_graph_json(MLP, 7);
    fxb_config c;
    fxb_config_default(&c);
    fxb_need n;
    fxb_min_need(g, &c, fx_cpu(), &n);
    assert_int_equal(n.weights, fxsv_params_bytes(fxg_params(g)));
    assert_true(n.arena > 0);
    assert_int_equal(n.contexts, 2); /* one instance and the inline one */
    assert_int_equal(n.total, n.weights + 2 * n.arena);
    c.instances = 3;
    fxb_need n3;
    fxb_min_need(g, &c, fx_cpu(), &n3);
    assert_int_equal(n3.contexts, 4);
    assert_int_equal(n3.arena, n.arena);
    c.instances = 1;
    c.memory_limit_bytes = n.total;
    char err[256];
    fxb_batcher *b;
    assert_int_equal(fxb_create(g, &c, NULL, NULL, &b, err, sizeof err), 0);
    answer a;
    for (int i = 0; i < 3; i++) { /* the instance keeps its arena: still within */
        infer(b, 1, &a);
        if (a.status)
            fail_msg("one sample within the need of %llu bytes: %s",
                     (unsigned long long)n.total, a.err);
    }
    fxb_free(b);
    fxg_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_default),
        cmocka_unit_test(test_parse_list),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_resolve_errors),
        cmocka_unit_test(test_most_free),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_params_bytes),
        cmocka_unit_test(test_graph_to_device),
        cmocka_unit_test(test_config_fields),
        cmocka_unit_test(test_batcher_memory_limit),
        cmocka_unit_test(test_min_need),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
