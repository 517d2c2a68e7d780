/*
 * test_cuda.c - the CUDA backend's device tests, against the CPU where
 * there is something to compare: optimizers (a few steps of every kind on a
 * small MLP end at the same weights, within 1e-4), pool reuse in
 * steady-state training, the memory limit and out-of-memory errors, device
 * enumeration, moving tensors, bad values reported by the kernels, device
 * names.
 *
 * Every op and layer's CPU-vs-GPU comparison, with its tolerance and the
 * reason for it, is a row of the op registry (tests/unit/ops_registry.h):
 * test_ops runs it against cuda:0 (ctest test_ops_cuda, or test_ops when a
 * GPU is present).
 *
 * Without a CUDA device the test prints "SKIPPED: no CUDA device (...)" and
 * exits 77 (ctest: skipped). FX_CUDA_TEST_ON_CPU=1 runs the tests that do
 * not need one (parsing, bad values, optimizers) CPU against CPU (ctest
 * test_cuda_on_cpu). Built only when the CUDA backend is.
 */
#include "testutil.h"

#include "cuda/cuda_api.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cuda:0; FX_CUDA_TEST_ON_CPU=1 makes it the CPU, so the tests that do not
 * need a GPU run on a machine without one: CPU against CPU must pass. */
static fx_device GPU = { FX_DEV_CUDA, 0 };

#define I32(ctx, n, ...) fx_tensor_from_host(ctx, FX_I32, 1, (int64_t[]){ n }, (int32_t[]){ __VA_ARGS__ })
#define I64(ctx, n, ...) fx_tensor_from_host(ctx, FX_I64, 1, (int64_t[]){ n }, (int64_t[]){ __VA_ARGS__ })

/* ---------------------------------------------------------- comparisons */

/* Max over i of |g - c| / (1 + |c|); NaN anywhere counts as infinite unless
 * both are NaN at that position. */
static double rel_err(const float *g, const float *c, int64_t n, int64_t *where)
{
    double worst = 0.0;
    *where = -1;
    for (int64_t i = 0; i < n; i++) {
        double e;
        if (isnan(g[i]) || isnan(c[i]))
            e = isnan(g[i]) && isnan(c[i]) ? 0.0 : INFINITY;
        else if (isinf(g[i]) || isinf(c[i]))
            e = g[i] == c[i] ? 0.0 : INFINITY;
        else
            e = fabs((double)g[i] - c[i]) / (1.0 + fabs((double)c[i]));
        if (e > worst || (*where < 0 && e > 0)) {
            worst = e;
            *where = i;
        }
    }
    return worst;
}

static void expect_close(const char *cs, const char *what, const fx_tensor *gpu,
                         const fx_tensor *cpu, double tol)
{
    assert_non_null(gpu);
    assert_non_null(cpu);
    assert_true(fx_tensor_same_shape(gpu, cpu));
    int64_t n = fx_tensor_numel(cpu), at;
    float *g = tu_values(gpu), *c = tu_values(cpu);
    double e = rel_err(g, c, n, &at);
    if (e > tol)
        fail_msg("%s: %s differs: element %lld gpu %.7g cpu %.7g (rel err %.3g > tol %.1g)", cs,
                 what, (long long)at, at >= 0 ? g[at] : 0.0, at >= 0 ? c[at] : 0.0, e, tol);
    free(g);
    free(c);
}

static void expect_synced(const char *cs)
{
    char err[512];
    fx_status s = fx_device_sync(GPU, err, sizeof err);
    if (s != FX_OK)
        fail_msg("%s: device error: %s", cs, err);
}

/* ----------------------------------------------- training, optimizers */

static fx_layer *mlp(fx_rng *r)
{
    return fx_chain_create("mlp", 2, (fx_layer *[]){
        fx_dense_create("fc1", 12, 32, &(fx_dense_opts){ .act = FX_ACT_RELU }, r),
        fx_dense_create("fc2", 32, 5, NULL, r) });
}

typedef struct {
    fx_ctx *ctx;
    fx_layer *net;
    fx_params params;
    fx_optim *opt;
} trainer;

static void trainer_init(trainer *t, fx_device dev, fx_optim_kind kind)
{
    fx_rng *r = fx_rng_create(5);
    t->net = mlp(r);
    fx_rng_free(r);
    assert_non_null(t->net);
    assert_int_equal(fx_layer_to_device(t->net, dev), FX_OK);
    fx_params_init(&t->params);
    assert_int_equal(fx_layer_collect_params(t->net, &t->params), FX_OK);
    t->opt = fx_optim_create(kind, &(fx_optim_hparams){ .lr = 0.05, .weight_decay = 0.01 },
                             &t->params);
    assert_non_null(t->opt);
    t->ctx = fx_ctx_create(dev);
    assert_non_null(t->ctx);
}

static void trainer_step(trainer *t, int step)
{
    float xs[16 * 12];
    int32_t ys[16];
    for (int i = 0; i < 16 * 12; i++)
        xs[i] = (float)(((i + step * 31) * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (int i = 0; i < 16; i++)
        ys[i] = (i * 3 + step) % 5;
    fx_tensor *x = fx_tensor_from_host(t->ctx, FX_F32, 2, (int64_t[]){ 16, 12 }, xs);
    fx_tensor *y = fx_tensor_from_host(t->ctx, FX_I32, 1, (int64_t[]){ 16 }, ys);
    fx_tensor *loss = fx_cross_entropy(t->ctx, fx_layer_forward(t->net, t->ctx, x), y, FX_MEAN);
    if (fx_backward(t->ctx, loss) != FX_OK)
        fail_msg("training step: %s", fx_ctx_error(t->ctx));
    assert_int_equal(fx_optim_step(t->opt), FX_OK);
    fx_optim_zero_grad(t->opt);
    fx_ctx_reset(t->ctx);
}

static void trainer_free(trainer *t)
{
    fx_optim_free(t->opt);
    fx_params_clear(&t->params);
    fx_layer_free(t->net);
    fx_ctx_free(t->ctx);
}

/* Five steps of each optimizer on both devices end at the same weights. */
static void test_optimizers(void **state)
{
    for (int k = 0; k < FX_OPT_COUNT; k++) {
        trainer c, g;
        trainer_init(&c, fx_cpu(), (fx_optim_kind)k);
        trainer_init(&g, GPU, (fx_optim_kind)k);
        for (int s = 0; s < 5; s++) {
            trainer_step(&c, s);
            trainer_step(&g, s);
        }
        expect_synced("optimizers");
        for (int i = 0; i < c.params.count; i++) {
            char what[96];
            snprintf(what, sizeof what, "optimizer %d: %s", k, c.params.items[i].name);
            expect_close(what, "weights after 5 steps", g.params.items[i].tensor,
                         c.params.items[i].tensor, 1e-4);
        }
        trainer_free(&c);
        trainer_free(&g);
    }
}

/* Steady-state steps take no memory from the driver: the arena keeps its
 * chunk and the pool keeps what was freed. */
static void test_pool_reuse(void **state)
{
    trainer t;
    trainer_init(&t, GPU, FX_OPT_ADAM);
    for (int s = 0; s < 3; s++)
        trainer_step(&t, s);
    fx_device_mem_stats a, b;
    assert_int_equal(fx_device_mem_stats_get(GPU, &a), FX_OK);
    for (int s = 3; s < 20; s++)
        trainer_step(&t, s);
    expect_synced("pool_reuse");
    assert_int_equal(fx_device_mem_stats_get(GPU, &b), FX_OK);
    if (b.driver_grows != a.driver_grows)
        fail_msg("steady-state steps grew the pool %llu times (reserved %zu -> %zu)",
                 (unsigned long long)(b.driver_grows - a.driver_grows), a.reserved, b.reserved);
    assert_int_equal(b.in_use, a.in_use); /* nothing leaks from step to step */
    assert_true(b.reserved >= b.in_use);
    assert_true(a.driver_grows >= 1); /* the counter counts */
    trainer_free(&t);
    /* everything this test allocated went back */
    fx_device_mem_stats c;
    assert_int_equal(fx_device_mem_stats_get(GPU, &c), FX_OK);
    assert_true(c.in_use < b.in_use);
}

/* A memory limit refuses allocations past it with FX_ERR_NOMEM and a
 * message naming the device and the sizes, and lifting it works again. */
static void test_memory_limit(void **state)
{
    fx_device_mem_stats st;
    assert_int_equal(fx_device_mem_stats_get(GPU, &st), FX_OK);
    size_t limit = st.in_use + (1u << 20);
    assert_int_equal(fx_device_set_memory_limit(GPU, limit), FX_OK);
    fx_device_info info;
    assert_int_equal(fx_device_get_info(GPU, &info), FX_OK);
    assert_int_equal(info.limit_bytes, limit);

    fx_tensor *big = fx_tensor_create(GPU, FX_F32, 1, (int64_t[]){ 1 << 20 }); /* 4 MiB */
    assert_null(big);
    const char *why = fx_device_last_error();
    assert_non_null(strstr(why, "cuda:0"));
    assert_non_null(strstr(why, "limit"));
    assert_non_null(strstr(why, "4194304"));

    fx_ctx *ctx = fx_ctx_create(GPU);
    assert_non_null(ctx);
    fx_tensor *z = fx_zeros(ctx, FX_F32, 1, (int64_t[]){ 1 << 21 }); /* 8 MiB in the arena */
    assert_null(z);
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_NOMEM);
    assert_non_null(strstr(fx_ctx_error(ctx), "cuda:0"));
    assert_non_null(strstr(fx_ctx_error(ctx), "limit"));
    fx_ctx_free(ctx);

    assert_int_equal(fx_device_set_memory_limit(GPU, 0), FX_OK);
    big = fx_tensor_create(GPU, FX_F32, 1, (int64_t[]){ 1 << 20 });
    assert_non_null(big);
    fx_tensor_free(big);
    expect_synced("memory_limit");
    assert_int_equal(fx_device_set_memory_limit((fx_device){ FX_DEV_CUDA, 99 }, 1), FX_ERR_DEVICE);
}

/* More than the device has fails cleanly, not with a crash. */
static void test_oom(void **state)
{
    fx_device_info info;
    assert_int_equal(fx_device_get_info(GPU, &info), FX_OK);
    int64_t n = (int64_t)(info.total_bytes / 4) * 2; /* twice the device */
    fx_tensor *t = fx_tensor_create(GPU, FX_F32, 1, &n);
    assert_null(t);
    assert_non_null(strstr(fx_device_last_error(), "cuda:0"));
    expect_synced("oom");
}

static void test_enumeration(void **state)
{
    int n = fx_device_count(FX_DEV_CUDA);
    assert_true(n >= 1);
    assert_int_equal(fx_device_count(FX_DEV_CPU), 1);
    for (int i = 0; i < n; i++) {
        fx_device_info info;
        fx_device d = { FX_DEV_CUDA, i };
        assert_true(fx_device_available(d));
        assert_int_equal(fx_device_get_info(d, &info), FX_OK);
        assert_true(strlen(info.name) > 0);
        assert_true(info.total_bytes > 0);
        assert_true(info.free_bytes <= info.total_bytes);
        assert_true(info.cc_major >= 5);
        printf("  cuda:%d: %s, sm_%d%d, %zu MiB total, %zu MiB free\n", i, info.name,
               info.cc_major, info.cc_minor, info.total_bytes >> 20, info.free_bytes >> 20);
    }
    fx_device bad = { FX_DEV_CUDA, n };
    fx_device_info info;
    assert_false(fx_device_available(bad));
    assert_int_equal(fx_device_get_info(bad, &info), FX_ERR_DEVICE);
    assert_null(fx_ctx_create(bad));
    assert_null(fx_tensor_create(bad, FX_F32, 1, (int64_t[]){ 4 }));
}

/* Moving tensors: values survive cpu -> gpu -> cpu, views and arena tensors
 * cannot be moved in place, a cross-device op is refused. */
static void test_moves(void **state)
{
    float v[6] = { 1, -2, 3.5f, 4, 5, -6 }, back[6];
    fx_tensor *t = tu_from(FX_F32, 2, (int64_t[]){ 2, 3 }, v);
    assert_int_equal(fx_tensor_set_requires_grad(t, true), FX_OK);
    assert_int_equal(fx_tensor_move_to_device(t, GPU), FX_OK);
    assert_int_equal(t->device.type, FX_DEV_CUDA);
    assert_int_equal(t->grad->device.type, FX_DEV_CUDA);
    assert_int_equal(fx_tensor_to_host(t, back, sizeof back), FX_OK);
    assert_memory_equal(back, v, sizeof v);
    fx_ctx *cc = fx_ctx_create(fx_cpu());
    fx_tensor *x = fx_tensor_from_host(cc, FX_F32, 2, (int64_t[]){ 2, 3 }, v);
    assert_null(fx_add(cc, x, t)); /* different devices */
    assert_int_equal(fx_ctx_status(cc), FX_ERR_DEVICE);
    assert_int_equal(fx_tensor_move_to_device(x, GPU), FX_ERR_STATE);
    assert_int_equal(fx_tensor_move_to_device(t, fx_cpu()), FX_OK);
    memset(back, 0, sizeof back);
    assert_int_equal(fx_tensor_to_host(t, back, sizeof back), FX_OK);
    assert_memory_equal(back, v, sizeof v);
    assert_int_equal(fx_tensor_move_to_device(t, (fx_device){ FX_DEV_CUDA, 99 }), FX_ERR_DEVICE);
    fx_ctx_free(cc);
    fx_tensor_free(t);
    expect_synced("moves");
}

/* A bad index on the GPU is reported by the op like on the CPU. */
static void test_bad_values(void **state)
{
    fx_ctx *ctx = fx_ctx_create(GPU);
    fx_tensor *w = fx_zeros(ctx, FX_F32, 2, (int64_t[]){ 4, 3 });
    assert_null(fx_index_select(ctx, w, 0, I64(ctx, 3, 1, 4, 0)));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    fx_ctx_reset(ctx);
    fx_tensor *logits = fx_zeros(ctx, FX_F32, 2, (int64_t[]){ 2, 3 });
    assert_null(fx_cross_entropy(ctx, logits, I32(ctx, 2, 0, -1), FX_MEAN));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    fx_ctx_reset(ctx);
    fx_tensor *x = fx_full(ctx, FX_F32, 1, (int64_t[]){ 3 }, -1.0);
    assert_null(fx_log(ctx, fx_add_scalar(ctx, x, -1.0f))); /* log of negatives: NaN */
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    fx_ctx_free(ctx);
    expect_synced("bad_values");
}

static void test_parse(void **state)
{
    fx_device d;
    assert_true(fx_device_parse("cpu", &d) && d.type == FX_DEV_CPU);
    assert_true(fx_device_parse("cuda", &d) && d.type == FX_DEV_CUDA && d.index == 0);
    assert_true(fx_device_parse("cuda:3", &d) && d.index == 3);
    assert_false(fx_device_parse("cuda:", &d));
    assert_false(fx_device_parse("cuda:-1", &d));
    assert_false(fx_device_parse("cuda:1x", &d));
    assert_false(fx_device_parse("gpu", &d));
    assert_false(fx_device_parse(NULL, &d));
}

int main(void)
{
    const char *why = "", *on_cpu = getenv("FX_CUDA_TEST_ON_CPU");
    bool cpu_only = on_cpu && *on_cpu && strcmp(on_cpu, "0");
    if (cpu_only) {
        GPU = fx_cpu();
        printf("FX_CUDA_TEST_ON_CPU: CPU against CPU (no CUDA device used)\n");
    } else if (fx__cuda_device_count(&why) == 0) {
        printf("SKIPPED: no CUDA device (%s)\n", why);
        return 77;
    }
    struct CMUnitTest tests[8];
    int n = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_parse);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_bad_values);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_optimizers);
    if (cpu_only)
        return _cmocka_run_group_tests("cuda_on_cpu", tests, (size_t)n, NULL, NULL);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_enumeration);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_moves);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_pool_reuse);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_memory_limit);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_oom);
    return _cmocka_run_group_tests("cuda", tests, (size_t)n, NULL, NULL);
}
