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
 * Context streams (engine/cuda/stream.cu): contexts get distinct streams of
 * the priorities asked for (cudaStreamGetPriority) and a freed context's
 * stream is reused; work on several contexts, from several threads or
 * interleaved on one, gives the results of one stream; an error goes to
 * the thread whose context's work failed; a high-priority
 * context's small kernels are not stuck behind a low-priority context's
 * long queue (timed loosely); fx_ctx_set_priority's contract (also on the
 * CPU, where it changes nothing).
 *
 * Without a CUDA device the test prints "SKIPPED: no CUDA device (...)" and
 * exits 77 (ctest: skipped). FX_CUDA_TEST_ON_CPU=1 runs the tests that do
 * not need one (parsing, bad values, optimizers, the priority API) CPU
 * against CPU (ctest test_cuda_on_cpu). Built only when the CUDA backend is.
 */
#include "testutil.h"

#include "cuda/cuda_api.h"
#include "internal.h" /* ctx->lane, for the stream tests */

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
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

/* ------------------------------------------------------ context streams */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The priority API: NORMAL by default, set and read back, values outside
 * the enum refused; ops keep working after a change (on the GPU the
 * context then runs on a new stream). */
static void test_priority_api(void **state)
{
    fx_ctx *ctx = fx_ctx_create(GPU);
    assert_non_null(ctx);
    assert_int_equal(fx_ctx_priority(ctx), FX_PRIORITY_NORMAL);
    fx_tensor *a = fx_full(ctx, FX_F32, 1, (int64_t[]){ 4 }, 2.0);
    assert_int_equal(fx_ctx_set_priority(ctx, FX_PRIORITY_HIGH), FX_OK);
    assert_int_equal(fx_ctx_priority(ctx), FX_PRIORITY_HIGH);
    assert_int_equal(fx_ctx_set_priority(ctx, (fx_priority)7), FX_ERR_ARG);
    assert_int_equal(fx_ctx_set_priority(ctx, (fx_priority)-2), FX_ERR_ARG);
    assert_int_equal(fx_ctx_priority(ctx), FX_PRIORITY_HIGH);
    assert_int_equal(fx_ctx_set_priority(NULL, FX_PRIORITY_LOW), FX_ERR_ARG);
    /* a tensor made before the change is read after it */
    fx_tensor *b = fx_add_scalar(ctx, a, 1.0f);
    float v[4];
    assert_int_equal(fx_tensor_to_host(b, v, sizeof v), FX_OK);
    for (int i = 0; i < 4; i++)
        assert_true(v[i] == 3.0f);
    assert_int_equal(fx_ctx_set_priority(ctx, FX_PRIORITY_LOW), FX_OK);
    fx_ctx_reset(ctx);
    fx_tensor *c = fx_full(ctx, FX_F32, 1, (int64_t[]){ 4 }, -1.0);
    assert_int_equal(fx_tensor_to_host(c, v, sizeof v), FX_OK);
    assert_true(v[3] == -1.0f);
    fx_ctx_free(ctx);
    expect_synced("priority_api");
}

/* The context's stream and its CUDA priority (the context has run
 * something, so it has one). */
static void *stream_of(fx_ctx *ctx, int *prio)
{
    void *s = NULL;
    assert_non_null(ctx->lane);
    assert_int_equal(fx__cuda_lane_info((const fx__cuda_lane *)ctx->lane, &s, prio), FX_OK);
    assert_non_null(s);
    return s;
}

/* Three contexts, three streams, each of the priority asked for; a
 * priority change gives the context a stream of the new priority; a freed
 * context's stream goes back to a pool and serves the next context. */
static void test_stream_priorities(void **state)
{
    int lo = fx__cuda_priority_value(0, FX_PRIORITY_LOW);
    int mid = fx__cuda_priority_value(0, FX_PRIORITY_NORMAL);
    int hi = fx__cuda_priority_value(0, FX_PRIORITY_HIGH);
    printf("  cuda:0 stream priorities: LOW %d, NORMAL %d, HIGH %d\n", lo, mid, hi);
    assert_true(hi <= mid && mid <= lo); /* lower numbers run first */
    fx_priority want[3] = { FX_PRIORITY_HIGH, FX_PRIORITY_NORMAL, FX_PRIORITY_LOW };
    int expect[3] = { hi, mid, lo };
    fx_ctx *c[3];
    void *s[3];
    for (int i = 0; i < 3; i++) {
        c[i] = fx_ctx_create(GPU);
        assert_non_null(c[i]);
        assert_null(c[i]->lane); /* taken on first use only */
        assert_int_equal(fx_ctx_set_priority(c[i], want[i]), FX_OK);
        assert_non_null(fx_zeros(c[i], FX_F32, 1, (int64_t[]){ 8 }));
        int p = 99;
        s[i] = stream_of(c[i], &p);
        assert_int_equal(p, expect[i]);
    }
    assert_true(s[0] != s[1] && s[1] != s[2] && s[0] != s[2]);
    if (hi < lo) /* the device has priorities: HIGH is above the others */
        assert_true(expect[0] < expect[2]);

    /* NORMAL -> HIGH: a new stream of the new priority */
    assert_int_equal(fx_ctx_set_priority(c[1], FX_PRIORITY_HIGH), FX_OK);
    assert_null(c[1]->lane);
    fx_ctx_reset(c[1]);
    int p = 99;
    void *s1 = stream_of(c[1], &p);
    assert_int_equal(p, hi);
    assert_true(s1 != s[0]); /* c[0] still holds its HIGH stream */

    /* a freed context's stream is reused, not leaked */
    void *s0 = s[0];
    fx_ctx_free(c[0]);
    fx_ctx *d = fx_ctx_create(GPU);
    fx_ctx_set_priority(d, FX_PRIORITY_HIGH);
    fx_ctx_reset(d);
    assert_true(stream_of(d, &p) == s0);
    fx_ctx_free(d);
    fx_ctx_free(c[1]);
    fx_ctx_free(c[2]);
    expect_synced("stream_priorities");
}

/* A workload with a result to compare: tanh(relu(x w) w / 100) summed over
 * rows, x filled from seed. Returns the [WN] result (malloc'd), or NULL on
 * an error (no cmocka asserts: worker threads call it). */
enum { WN = 384 };

static void fill_values(float *p, int64_t n, unsigned seed)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(((uint64_t)(i + seed * 7919u) * 2654435761u) % 2001u) / 1000.0f - 1.0f;
}

static float *workload(fx_ctx *ctx, const fx_tensor *w, unsigned seed)
{
    static _Thread_local float xs[WN * WN];
    fill_values(xs, WN * WN, seed);
    fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, (int64_t[]){ WN, WN }, xs);
    fx_tensor *y = fx_relu(ctx, fx_matmul(ctx, x, (fx_tensor *)w));
    y = fx_matmul(ctx, y, (fx_tensor *)w);
    fx_tensor *r = fx_sum(ctx, fx_tanh(ctx, fx_scale(ctx, y, 0.01f)), 1, (int[]){ 0 }, false);
    float *out = r ? malloc(WN * sizeof *out) : NULL;
    if (out && fx_tensor_to_host(r, out, WN * sizeof *out) != FX_OK) {
        free(out);
        out = NULL;
    }
    return out;
}

typedef struct {
    fx_priority prio;
    const fx_tensor *w;
    unsigned seed;
    const float *ref;
    atomic_int *go;
    int bad; /* iterations that differed */
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    fx_ctx *ctx = fx_ctx_create(GPU);
    fx_ctx_set_priority(ctx, a->prio);
    fx_ctx_set_grad(ctx, false);
    while (!atomic_load(a->go))
        ;
    for (int it = 0; it < 20; it++) {
        fx_ctx_reset(ctx);
        float *got = workload(ctx, a->w, a->seed);
        int64_t at;
        if (!got || rel_err(got, a->ref, WN, &at) > 1e-6)
            a->bad++;
        free(got);
    }
    fx_ctx_free(ctx);
    return NULL;
}

typedef struct {
    fx_tensor *t;
    const float *src;
    size_t n;
    fx_status status;
} upload_arg;

/* A thread with no context: its upload runs on the shared stream. */
static void *uploader(void *p)
{
    upload_arg *a = p;
    a->status = fx_tensor_copy_from_host(a->t, a->src, a->n * sizeof(float));
    return NULL;
}

/* Contexts on two threads at once (HIGH and LOW) give the results of one
 * context alone; on one thread, a result made on one context and read on
 * another is complete (the second stream waits for the first); a tensor
 * uploaded by a thread without a context is complete for a context's next
 * step (fx_ctx_reset follows the shared stream). */
static void test_stream_results(void **state)
{
    fx_tensor *w = fx_tensor_create(GPU, FX_F32, 2, (int64_t[]){ WN, WN });
    float *wv = malloc(WN * WN * sizeof *wv);
    fill_values(wv, WN * WN, 99);
    for (int i = 0; i < WN * WN; i++)
        wv[i] *= 0.05f;
    assert_int_equal(fx_tensor_copy_from_host(w, wv, WN * WN * sizeof *wv), FX_OK);

    fx_ctx *one = fx_ctx_create(GPU);
    fx_ctx_set_grad(one, false);
    float *ref_a = workload(one, w, 1);
    fx_ctx_reset(one);
    float *ref_b = workload(one, w, 2);
    assert_non_null(ref_a);
    assert_non_null(ref_b);

    atomic_int go = 0;
    worker_arg wa = { FX_PRIORITY_HIGH, w, 1, ref_a, &go, 0 };
    worker_arg wb = { FX_PRIORITY_LOW, w, 2, ref_b, &go, 0 };
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, worker, &wa), 0);
    assert_int_equal(pthread_create(&tb, NULL, worker, &wb), 0);
    atomic_store(&go, 1);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(wa.bad, 0);
    assert_int_equal(wb.bad, 0);

    /* one thread, two contexts, a dependency between them: a big product on
     * the LOW context, read at once on the HIGH one */
    fx_ctx *lo = fx_ctx_create(GPU), *hi = fx_ctx_create(GPU);
    fx_ctx_set_priority(lo, FX_PRIORITY_LOW);
    fx_ctx_set_priority(hi, FX_PRIORITY_HIGH);
    for (int it = 0; it < 5; it++) {
        fx_ctx_reset(lo);
        fx_ctx_reset(hi);
        fx_tensor *x = fx_full(lo, FX_F32, 2, (int64_t[]){ 2048, 2048 }, 0.01);
        fx_tensor *big = fx_matmul(lo, x, x); /* queued on lo's stream */
        for (int k = 0; k < 4; k++)
            big = fx_matmul(lo, big, x);
        fx_tensor *s = fx_sum(hi, big, 0, NULL, false); /* on hi's stream */
        float got;
        assert_int_equal(fx_tensor_to_host(s, &got, sizeof got), FX_OK);
        /* every element is 2048^5 * 0.01^6 */
        double want = pow(2048.0, 5) * pow(0.01, 6) * 2048.0 * 2048.0;
        if (fabs(got - want) > 1e-3 * want)
            fail_msg("a sum on the HIGH context of a product on the LOW one: %.7g, want %.7g",
                     got, want);
    }

    /* a tensor uploaded by a context-less thread, read by a context's step */
    size_t n = (size_t)16 << 20; /* 64 MiB: the copy takes a while */
    float *src = malloc(n * sizeof *src);
    for (size_t i = 0; i < n; i++)
        src[i] = 1.0f;
    fx_tensor *up = fx_tensor_create(GPU, FX_F32, 1, (int64_t[]){ (int64_t)n });
    assert_non_null(up);
    expect_synced("upload: made on this thread's stream, handed to another thread");
    fx_ctx_reset(hi);
    assert_non_null(fx_zeros(hi, FX_F32, 1, (int64_t[]){ 1 })); /* hi has its stream */
    upload_arg ua = { up, src, n, FX_ERR_STATE };
    pthread_t tu;
    assert_int_equal(pthread_create(&tu, NULL, uploader, &ua), 0);
    pthread_join(tu, NULL);
    assert_int_equal(ua.status, FX_OK);
    fx_ctx_reset(hi); /* the next step */
    fx_tensor *total = fx_sum(hi, up, 0, NULL, false);
    float tv = 0;
    assert_int_equal(fx_tensor_to_host(total, &tv, sizeof tv), FX_OK);
    if (fabs(tv - (double)n) > 1e-3 * (double)n)
        fail_msg("sum of an upload by another thread: %.7g, want %zu", tv, n);

    fx_tensor_free(up);
    free(src);
    fx_ctx_free(lo);
    fx_ctx_free(hi);
    fx_ctx_free(one);
    free(ref_a);
    free(ref_b);
    free(wv);
    fx_tensor_free(w);
    expect_synced("stream_results");
}

typedef struct {
    fx_ctx *ctx;
    fx_status seen;
    char err[512];
    atomic_int *step;
} err_arg;

/* Thread B: syncs while A's stream holds an error, then lets A go on. */
static void *other_syncs(void *p)
{
    err_arg *a = p;
    while (atomic_load(a->step) != 1)
        ;
    fx_ctx_reset(a->ctx);
    fx_zeros(a->ctx, FX_F32, 1, (int64_t[]){ 4 });
    a->seen = fx_device_sync(GPU, a->err, sizeof a->err);
    atomic_store(a->step, 2);
    return NULL;
}

/* An error in one context's work is reported to the thread that ran it,
 * not to another context's thread that syncs first; an error left unread
 * when its context is freed goes to the device's next sync. */
static void test_stream_errors(void **state)
{
    atomic_int step = 0;
    err_arg b = { fx_ctx_create(GPU), FX_OK, "", &step };
    fx_ctx_set_priority(b.ctx, FX_PRIORITY_HIGH);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_syncs, &b), 0);
    fx_ctx *a = fx_ctx_create(GPU);
    assert_non_null(fx_zeros(a, FX_F32, 1, (int64_t[]){ 4 })); /* a's stream is current */
    fx__cuda_inject_error(0, "injected: training step failed");
    atomic_store(&step, 1);
    while (atomic_load(&step) != 2)
        ;
    pthread_join(t, NULL);
    if (b.seen != FX_OK)
        fail_msg("another context's thread got the error: %s", b.err);
    char err[512];
    assert_int_equal(fx_device_sync(GPU, err, sizeof err), FX_ERR_DEVICE);
    assert_non_null(strstr(err, "injected: training step failed"));
    assert_int_equal(fx_device_sync(GPU, err, sizeof err), FX_OK); /* read once */

    fx__cuda_inject_error(0, "injected: never read");
    fx_ctx_free(a);
    assert_int_equal(fx_device_sync(GPU, err, sizeof err), FX_ERR_DEVICE);
    assert_non_null(strstr(err, "injected: never read"));
    fx_ctx_free(b.ctx);
    expect_synced("stream_errors");
}

enum { QN = 4096 };

typedef struct {
    atomic_int ready, go, issued;
    int k;                 /* products to queue */
    double t_start, t_end; /* queue issued .. done (ms) */
    char err[512];         /* cmocka's asserts are for the test's own thread */
} queue_arg;

/* Records the thread's first failure (ctx or device) in err. */
static bool queue_ok(queue_arg *a, fx_ctx *ctx)
{
    char e[400];
    if (!a->err[0] && fx_ctx_status(ctx) != FX_OK)
        snprintf(a->err, sizeof a->err, "long queue: %s", fx_ctx_error(ctx));
    if (fx_device_sync(GPU, e, sizeof e) != FX_OK && !a->err[0])
        snprintf(a->err, sizeof a->err, "long queue: device: %s", e);
    return !a->err[0];
}

/* The LOW context's long queue: k products of QN x QN matrices. */
static void *long_queue(void *p)
{
    queue_arg *a = p;
    fx_ctx *ctx = fx_ctx_create(GPU);
    fx_ctx_set_priority(ctx, FX_PRIORITY_LOW);
    fx_ctx_set_grad(ctx, false);
    /* a first pass grows the arena, so the timed one queues its k products
     * with no driver call in between (the queue builds up at once) */
    for (int pass = 0; pass < 2; pass++) {
        fx_ctx_reset(ctx);
        fx_tensor *x = fx_full(ctx, FX_F32, 2, (int64_t[]){ QN, QN }, 1e-3);
        if (pass == 0) {
            for (int i = 0; i < a->k; i++)
                fx_matmul(ctx, x, x);
            queue_ok(a, ctx);
            continue;
        }
        queue_ok(a, ctx);
        atomic_store(&a->ready, 1);
        while (!atomic_load(&a->go))
            ;
        a->t_start = now_ms();
        for (int i = 0; i < a->k; i++)
            fx_matmul(ctx, x, x);
        atomic_store(&a->issued, 1);
        queue_ok(a, ctx);
        a->t_end = now_ms();
    }
    fx_ctx_free(ctx);
    return NULL;
}

/* How long k products take on a context of their own (ms). */
static double queue_ms(int k)
{
    queue_arg a = { .k = k };
    atomic_store(&a.go, 1);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, long_queue, &a), 0);
    pthread_join(t, NULL);
    if (a.err[0])
        fail_msg("%s", a.err);
    return a.t_end - a.t_start;
}

/* While a LOW context has a long queue of big products (about half a
 * second), a HIGH context on another thread runs a small op and reads it
 * back in under a quarter of that queue and before its end, i.e. it did not
 * wait for it. With one stream per device it would come back after the
 * whole queue. */
static void test_high_not_stuck(void **state)
{
    double one = queue_ms(4) / 4;
    int k = (int)(500.0 / (one > 0.05 ? one : 0.05));
    if (k < 8)
        k = 8;
    if (k > 100) /* 64 MiB each, in the LOW context's arena */
        k = 100;
    fx_ctx *hi = fx_ctx_create(GPU);
    fx_ctx_set_priority(hi, FX_PRIORITY_HIGH);
    fx_ctx_set_grad(hi, false);
    float v[256], back[256];
    for (int i = 0; i < 256; i++)
        v[i] = (float)i;
    fx_tensor *x = fx_tensor_from_host(hi, FX_F32, 1, (int64_t[]){ 256 }, v);
    assert_int_equal(fx_tensor_to_host(fx_add_scalar(hi, x, 1.0f), back, sizeof back), FX_OK);

    queue_arg a = { .k = k };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, long_queue, &a), 0);
    while (!atomic_load(&a.ready))
        ;
    atomic_store(&a.go, 1);
    while (!atomic_load(&a.issued))
        ;
    double t0 = now_ms();
    fx_ctx_reset(hi);
    x = fx_tensor_from_host(hi, FX_F32, 1, (int64_t[]){ 256 }, v);
    fx_tensor *y = fx_add_scalar(hi, fx_scale(hi, x, 2.0f), 1.0f);
    assert_int_equal(fx_tensor_to_host(y, back, sizeof back), FX_OK);
    double t1 = now_ms();
    pthread_join(t, NULL);
    if (a.err[0])
        fail_msg("%s", a.err);
    for (int i = 0; i < 256; i++)
        assert_true(back[i] == 2.0f * i + 1.0f);
    double queue = a.t_end - a.t_start, waited = t1 - t0;
    printf("  LOW queue of %d products: %.1f ms (issued in %.1f ms); a HIGH op issued behind "
           "it came back in %.2f ms, %.1f ms before the queue ended\n", k, queue,
           t0 - a.t_start, waited, a.t_end - t1);
    if (queue < 50)
        fail_msg("the LOW queue took only %.1f ms: too short to tell", queue);
    if (waited > queue / 4 || t1 > a.t_end)
        fail_msg("the HIGH op took %.1f ms behind a LOW queue of %.1f ms: it waited for the "
                 "queue", waited, queue);
    fx_ctx_free(hi);
    expect_synced("high_not_stuck");
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
    struct CMUnitTest tests[16];
    int n = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_parse);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_bad_values);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_optimizers);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_priority_api);
    if (cpu_only)
        return _cmocka_run_group_tests("cuda_on_cpu", tests, (size_t)n, NULL, NULL);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_enumeration);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_moves);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_pool_reuse);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_memory_limit);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_oom);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_stream_priorities);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_stream_results);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_stream_errors);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_high_not_stuck);
    return _cmocka_run_group_tests("cuda", tests, (size_t)n, NULL, NULL);
}
