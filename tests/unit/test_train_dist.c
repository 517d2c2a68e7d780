/* test_train_dist.c - data-parallel training (server/training/train_dist.c)
 * with real collectives: W ranks as threads of this process, one
 * fxcm_memstore rendezvous, Gloo over 127.0.0.1.
 *
 * Exactness: W ranks with batch b per rank end with the weights of one rank
 * with batch W*b (SGD and Adam, shuffle on, a partial last batch, a rank
 * with no samples in the last batch), within a stated tolerance: every
 * weight within TOL_ABS + TOL_REL * |w| of the single rank's (the sums are
 * taken in another order, nothing else differs). The ranks start from
 * different initial weights (another model seed): rank 0's broadcast must
 * make them equal. All ranks end with identical weights.
 * A stop requested on one rank stops every rank after the same step, and a
 * resume from rank 0's checkpoint ends with the uninterrupted run's weights.
 * Faults: a rank that aborts its comm mid-run makes the others' fxt_run
 * end FXT_LOST (not hang), the error naming the collective failure.
 * The JobSpec's data-parallel fields are validated naming the field. */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "allochooks.h"
#include "base/status.h"
#include "comm/comm.h"
#include "models/graph.h"
#include "training/train.h"

#if defined(__SANITIZE_THREAD__)
#define DIST_ALLOC_COUNT 0 /* TSan keeps its own allocator: no hooks linked */
#else
#define DIST_ALLOC_COUNT TU_ALLOC_HOOKS
#endif

#define TOL_ABS 1e-5
#define TOL_REL 1e-4

typedef Fluxion__V1__ModelSpec mspec;
typedef Fluxion__V1__JobSpec jspec;

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    assert_non_null(p);
    return p;
}

#define GROW(arr, n)                                                                               \
    ((arr) = realloc((arr), ((n) + 1) * sizeof *(arr)), assert_non_null(arr), &(arr)[(n)++])

static Fluxion__V1__Node__AttrsEntry *attr_i(const char *key, int64_t i, const char *str)
{
    Fluxion__V1__Node__AttrsEntry *e = xcalloc(1, sizeof *e);
    fluxion__v1__node__attrs_entry__init(e);
    e->key = xstrdup(key);
    e->value = xcalloc(1, sizeof *e->value);
    fluxion__v1__attr_value__init(e->value);
    if (str) {
        e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_S;
        e->value->s = xstrdup(str);
    } else {
        e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_I;
        e->value->i = i;
    }
    return e;
}

static void m_dense(mspec *s, const char *name, const char *input, int64_t in, int64_t out,
                    const char *act)
{
    Fluxion__V1__Node *n = xcalloc(1, sizeof *n);
    fluxion__v1__node__init(n);
    n->name = xstrdup(name);
    n->op = xstrdup("dense");
    *GROW(n->inputs, n->n_inputs) = xstrdup(input);
    *GROW(n->attrs, n->n_attrs) = attr_i("in_features", in, NULL);
    *GROW(n->attrs, n->n_attrs) = attr_i("out_features", out, NULL);
    if (act)
        *GROW(n->attrs, n->n_attrs) = attr_i("activation", 0, act);
    *GROW(s->nodes, s->n_nodes) = n;
}

/* x [N,2] -> 16 tanh -> 16 relu -> logits [N,2] */
static mspec *mlp_spec(void)
{
    mspec *s = xcalloc(1, sizeof *s);
    fluxion__v1__model_spec__init(s);
    Fluxion__V1__TensorSpec *t = xcalloc(1, sizeof *t);
    fluxion__v1__tensor_spec__init(t);
    t->name = xstrdup("x");
    t->dtype = FLUXION__V1__DATA_TYPE__FP32;
    t->n_shape = 2;
    t->shape = xcalloc(2, sizeof *t->shape);
    t->shape[0] = -1;
    t->shape[1] = 2;
    *GROW(s->inputs, s->n_inputs) = t;
    m_dense(s, "fc1", "x", 2, 16, "tanh");
    m_dense(s, "fc2", "fc1", 16, 16, "relu");
    m_dense(s, "fc3", "fc2", 16, 2, NULL);
    Fluxion__V1__OutputSpec *o = xcalloc(1, sizeof *o);
    fluxion__v1__output_spec__init(o);
    o->name = xstrdup("logits");
    o->source = xstrdup("fc3");
    *GROW(s->outputs, s->n_outputs) = o;
    return s;
}

static fxg_graph *build(const mspec *s, uint64_t seed)
{
    char err[512];
    fxg_graph *g = NULL;
    fxg_build(s, &(fxg_options){.seed = seed}, &g, err, sizeof err);
    if (!g)
        fail_msg("fxg_build: %s", err);
    return g;
}

static jspec *job_new(const char *opt, double lr, int64_t batch, int64_t epochs)
{
    jspec *j = xcalloc(1, sizeof *j);
    fluxion__v1__job_spec__init(j);
    j->model = xstrdup("m");
    j->dataset = xstrdup("d");
    j->optimizer = xcalloc(1, sizeof *j->optimizer);
    fluxion__v1__optimizer_spec__init(j->optimizer);
    j->optimizer->kind = xstrdup(opt);
    j->optimizer->lr = lr;
    j->batch_size = batch;
    j->epochs = epochs;
    j->seed = 11;
    j->shuffle = true;
    Fluxion__V1__Feed *f = xcalloc(1, sizeof *f);
    fluxion__v1__feed__init(f);
    f->input = xstrdup("x");
    f->tensor = xstrdup("x");
    *GROW(j->feeds, j->n_feeds) = f;
    Fluxion__V1__LossSpec *l = xcalloc(1, sizeof *l);
    fluxion__v1__loss_spec__init(l);
    l->output = xstrdup("logits");
    l->kind = xstrdup("cross_entropy");
    l->target = xstrdup("y");
    l->weight = 1.0;
    *GROW(j->losses, j->n_losses) = l;
    *GROW(j->metrics, j->n_metrics) = xstrdup("accuracy");
    return j;
}

/* XOR of 4 Gaussian clusters: x f32 [2], y i32 []. */
typedef struct {
    fxds_column cols[2];
    fxds_columns c;
    float *x;
    int32_t *y;
} data_t;

static void xor_data(data_t *d, int64_t n)
{
    fx_rng *rng = fx_rng_create(3);
    d->x = xcalloc((size_t)n * 2, sizeof *d->x);
    d->y = xcalloc((size_t)n, sizeof *d->y);
    for (int64_t i = 0; i < n; i++) {
        int a = (int)(fx_rng_u64(rng) & 1), b = (int)(fx_rng_u64(rng) & 1);
        d->x[2 * i] = (float)((a ? 3 : -3) + fx_rng_normal(rng));
        d->x[2 * i + 1] = (float)((b ? 3 : -3) + fx_rng_normal(rng));
        d->y[i] = a != b;
    }
    fx_rng_free(rng);
    d->cols[0] = (fxds_column){"x", FX_F32, 1, {2}, d->x};
    d->cols[1] = (fxds_column){"y", FX_I32, 0, {0}, d->y};
    d->c = (fxds_columns){n, 2, d->cols};
}

static void data_free(data_t *d)
{
    free(d->x);
    free(d->y);
}

/* ------------------------------------------------------------------ ranks */

typedef struct {
    const mspec *ms;
    const jspec *js;
    const fxds_columns *data;
    fxcm_memstore *mem;
    const char *prefix;
    int rank, world;
    int64_t timeout_ms;
    /* faults and stops */
    int abort_at_poll;   /* > 0: this rank aborts its comm at that poll */
    int stop_at_poll;    /* > 0: should_stop true from that poll */
    int polls;
    int count_from, count_to; /* > 0: count heap allocations between these polls */
    long allocs;
    fxcm_comm *comm;
    const void *resume;
    size_t resume_len;
    /* results */
    fxt_result res;
    char err[512];
    void *w;
    size_t wlen;
    void *ckpt;
    size_t ckpt_len;
    int ckpts;
    double seconds;
} rank_t;

static bool poll_stop(void *data, int64_t step)
{
    (void)step;
    rank_t *k = data;
    k->polls++;
#if DIST_ALLOC_COUNT
    if (k->count_from && k->polls == k->count_from) {
        tu_alloc_count_thread(true);
        tu_alloc_count_start();
    }
    if (k->count_to && k->polls == k->count_to) {
        k->allocs = tu_alloc_count_stop();
        tu_alloc_count_thread(false);
    }
#endif
    if (k->abort_at_poll && k->polls == k->abort_at_poll)
        fxcm_abort(k->comm);
    return k->stop_at_poll && k->polls >= k->stop_at_poll;
}

static int keep_ckpt(void *data, const void *ckpt, size_t len, int64_t step, char *err,
                     size_t errlen)
{
    (void)step, (void)err, (void)errlen;
    rank_t *k = data;
    free(k->ckpt);
    k->ckpt = malloc(len);
    assert_non_null(k->ckpt);
    memcpy(k->ckpt, ckpt, len);
    k->ckpt_len = len;
    k->ckpts++;
    return 0;
}

static void *rank_main(void *arg)
{
    rank_t *k = arg;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    /* another model seed on every rank: rank 0's broadcast must win */
    fxg_graph *g = build(k->ms, 100 + (uint64_t)k->rank);
    fxcm_store st = fxcm_memstore_store(k->mem);
    fxcm_opts o = {.backend = FXCM_GLOO, .rank = k->rank, .world = k->world,
                   .prefix = k->prefix, .store = &st, .timeout_ms = k->timeout_ms};
    k->res = FXT_FAILED;
    if (fxcm_open(&o, &k->comm, k->err, sizeof k->err)) {
        fxg_free(g);
        return NULL;
    }
    fxt_dist d = {.rank = k->rank, .world = k->world, .comm = k->comm, .bucket_bytes = 1024};
    fxt_hooks h = {.data = k, .dist = &d, .should_stop = poll_stop,
                   .on_checkpoint = keep_ckpt, .checkpoint_every_steps = 1000000};
    k->res = fxt_run(k->js, g, k->data, NULL, k->resume, k->resume_len, &h, &k->w, &k->wlen,
                     NULL, k->err, sizeof k->err);
    fxcm_free(k->comm);
    fxg_free(g);
    clock_gettime(CLOCK_MONOTONIC, &b);
    k->seconds = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    return NULL;
}

/* Runs `world` ranks; ks[] filled by the caller (only the fault fields). */
static void run_world(rank_t *ks, int world, const mspec *ms, const jspec *js,
                      const fxds_columns *data, const char *prefix)
{
    fxcm_memstore *mem = fxcm_memstore_new();
    assert_non_null(mem);
    pthread_t th[8];
    for (int r = 0; r < world; r++) {
        ks[r].ms = ms;
        ks[r].js = js;
        ks[r].data = data;
        ks[r].mem = mem;
        ks[r].prefix = prefix;
        ks[r].rank = r;
        ks[r].world = world;
        if (!ks[r].timeout_ms)
            ks[r].timeout_ms = 60000;
        assert_int_equal(pthread_create(&th[r], NULL, rank_main, &ks[r]), 0);
    }
    for (int r = 0; r < world; r++)
        pthread_join(th[r], NULL);
    fxcm_memstore_free(mem);
}

static void rank_free(rank_t *k)
{
    free(k->w);
    free(k->ckpt);
}

/* One rank, no comm: the reference. */
static void *single(const mspec *ms, const jspec *js, const fxds_columns *data, size_t *len,
                    const void *resume, size_t resume_len)
{
    fxg_graph *g = build(ms, 100);
    void *w = NULL;
    char err[512];
    fxt_result res = fxt_run(js, g, data, NULL, resume, resume_len, NULL, &w, len, NULL, err,
                             sizeof err);
    if (res != FXT_DONE)
        fail_msg("single rank: %d: %s", res, err);
    fxg_free(g);
    return w;
}

/* The weights of a safetensors result as one float vector. */
static float *weights_of(const mspec *ms, const void *w, size_t len, int64_t *n)
{
    fxg_graph *g = build(ms, 1);
    char err[512];
    if (fxg_load_weights(g, w, len, err, sizeof err))
        fail_msg("load: %s", err);
    const fx_params *ps = fxg_params(g);
    *n = fx_params_numel(ps);
    float *v = xcalloc((size_t)*n, sizeof *v);
    int64_t at = 0;
    for (int i = 0; i < ps->count; i++) {
        int64_t m = fx_tensor_numel(ps->items[i].tensor);
        assert_int_equal(fx_tensor_to_host(ps->items[i].tensor, v + at, (size_t)m * sizeof *v),
                         FX_OK);
        at += m;
    }
    fxg_free(g);
    return v;
}

/* max |a - b| / (TOL_ABS + TOL_REL |b|) <= 1; returns the max abs diff. */
static double assert_weights_close(const mspec *ms, const void *a, size_t alen, const void *b,
                                   size_t blen, const char *what)
{
    int64_t na, nb;
    float *va = weights_of(ms, a, alen, &na), *vb = weights_of(ms, b, blen, &nb);
    assert_int_equal(na, nb);
    double worst = 0, maxdiff = 0;
    for (int64_t i = 0; i < na; i++) {
        double d = fabs((double)va[i] - (double)vb[i]);
        double q = d / (TOL_ABS + TOL_REL * fabs((double)vb[i]));
        if (d > maxdiff)
            maxdiff = d;
        if (q > worst)
            worst = q;
    }
    free(va);
    free(vb);
    if (worst > 1)
        fail_msg("%s: weights differ by up to %g (%.2f x the tolerance)", what, maxdiff, worst);
    printf("  %s: max abs diff %.3g (%.3f of the tolerance)\n", what, maxdiff, worst);
    return maxdiff;
}

/* W ranks of batch b vs one rank of batch W*b. */
static void exactness(const char *opt, double lr, int world, int64_t b, int64_t n,
                      int64_t epochs)
{
    mspec *ms = mlp_spec();
    data_t d;
    xor_data(&d, n);
    jspec *js = job_new(opt, lr, b, epochs);
    jspec *j1 = job_new(opt, lr, b * world, epochs);
    size_t len1;
    void *w1 = single(ms, j1, &d.c, &len1, NULL, 0);
    rank_t ks[8];
    memset(ks, 0, sizeof ks);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "test-%s-%d-%lld", opt, world, (long long)b);
    run_world(ks, world, ms, js, &d.c, prefix);
    for (int r = 0; r < world; r++)
        if (ks[r].res != FXT_DONE)
            fail_msg("rank %d: result %d: %s", r, ks[r].res, ks[r].err);
    char what[96];
    snprintf(what, sizeof what, "%s, %d ranks x batch %lld vs 1 x %lld, %lld samples", opt,
             world, (long long)b, (long long)(b * world), (long long)n);
    assert_weights_close(ms, ks[0].w, ks[0].wlen, w1, len1, what);
    for (int r = 1; r < world; r++) { /* every rank holds the same weights */
        assert_int_equal(ks[r].wlen, ks[0].wlen);
        assert_memory_equal(ks[r].w, ks[0].w, ks[0].wlen);
        assert_int_equal(ks[r].ckpts, 0); /* only rank 0 checkpoints */
    }
    for (int r = 0; r < world; r++)
        rank_free(&ks[r]);
    free(w1);
    fluxion__v1__job_spec__free_unpacked(js, NULL);
    fluxion__v1__job_spec__free_unpacked(j1, NULL);
    fluxion__v1__model_spec__free_unpacked(ms, NULL);
    data_free(&d);
}

/* 100 = 6 * 16 + 4: the last global batch is 4 (2 + 2). */
static void test_two_ranks_sgd(void **state)
{
    (void)state;
    exactness("sgd", 0.1, 2, 8, 100, 3);
}

static void test_two_ranks_adam(void **state)
{
    (void)state;
    exactness("adam", 0.01, 2, 8, 100, 3);
}

/* 100 = 6 * 15 + 10: the last global batch is 4 + 3 + 3; 97 = 8 * 12 + 1:
 * ranks 1 and 2 have no rows in it and still join the collectives. */
static void test_three_ranks(void **state)
{
    (void)state;
    exactness("adam", 0.01, 3, 5, 100, 2);
    exactness("sgd", 0.1, 3, 4, 97, 2);
}

/* A stop on rank 1 only stops every rank after the same step; rank 0
 * checkpoints it, and both ranks resumed from it end where an
 * uninterrupted run ends. */
static void test_stop_and_resume(void **state)
{
    (void)state;
    mspec *ms = mlp_spec();
    data_t d;
    xor_data(&d, 100);
    jspec *js = job_new("adam", 0.01, 8, 3);
    rank_t full[2], part[2], rest[2];
    memset(full, 0, sizeof full);
    memset(part, 0, sizeof part);
    memset(rest, 0, sizeof rest);
    run_world(full, 2, ms, js, &d.c, "stop-full");
    assert_int_equal(full[0].res, FXT_DONE);
    part[1].stop_at_poll = 5;
    run_world(part, 2, ms, js, &d.c, "stop-part");
    assert_int_equal(part[0].res, FXT_STOPPED);
    assert_int_equal(part[1].res, FXT_STOPPED);
    assert_int_equal(part[0].ckpts, 1);
    assert_int_equal(part[1].ckpts, 0);
    for (int r = 0; r < 2; r++) {
        rest[r].resume = part[0].ckpt;
        rest[r].resume_len = part[0].ckpt_len;
    }
    run_world(rest, 2, ms, js, &d.c, "stop-rest");
    assert_int_equal(rest[0].res, FXT_DONE);
    assert_int_equal(rest[1].res, FXT_DONE);
    assert_weights_close(ms, rest[0].w, rest[0].wlen, full[0].w, full[0].wlen,
                         "stopped at step 5 and resumed vs uninterrupted");
    for (int r = 0; r < 2; r++) {
        rank_free(&full[r]);
        rank_free(&part[r]);
        rank_free(&rest[r]);
    }
    fluxion__v1__job_spec__free_unpacked(js, NULL);
    fluxion__v1__model_spec__free_unpacked(ms, NULL);
    data_free(&d);
}

/* Rank 1 aborts its comm at its 4th step boundary (and then closes it):
 * rank 0 ends FXT_LOST, its error naming the collective, well within the
 * timeout (a generous bound: the machine may be loaded). */
static void test_lost_rank(void **state)
{
    (void)state;
    mspec *ms = mlp_spec();
    data_t d;
    xor_data(&d, 400);
    jspec *js = job_new("sgd", 0.1, 8, 50);
    rank_t ks[3];
    memset(ks, 0, sizeof ks);
    for (int r = 0; r < 3; r++)
        ks[r].timeout_ms = 20000;
    ks[1].abort_at_poll = 4;
    run_world(ks, 3, ms, js, &d.c, "lost");
    for (int r = 0; r < 3; r++) {
        printf("  rank %d: result %d after %.2f s: %s\n", r, ks[r].res, ks[r].seconds, ks[r].err);
        assert_int_equal(ks[r].res, FXT_LOST);
        assert_non_null(strstr(ks[r].err, "collective failed"));
        assert_true(ks[r].seconds < 20.0 + 40.0);
    }
    for (int r = 0; r < 3; r++)
        rank_free(&ks[r]);
    fluxion__v1__job_spec__free_unpacked(js, NULL);
    fluxion__v1__model_spec__free_unpacked(ms, NULL);
    data_free(&d);
}

#if DIST_ALLOC_COUNT
/* Counts the allocations of the calling thread between polls. */
typedef struct {
    int polls, from, to;
    long allocs;
} counter_t;

static bool count_polls(void *data, int64_t step)
{
    (void)step;
    counter_t *c = data;
    c->polls++;
    if (c->polls == c->from) {
        tu_alloc_count_thread(true);
        tu_alloc_count_start();
    }
    if (c->polls == c->to) {
        c->allocs = tu_alloc_count_stop();
        tu_alloc_count_thread(false);
    }
    return false;
}
#endif

/* Data parallelism adds no heap allocation to a steady-state step (inside
 * an epoch: no evaluation): rank 0's thread allocates in steps 6..19
 * exactly what one rank's does (the gradient buckets are allocated once;
 * the grad-ready hook counts in the arena; starting and waiting for the
 * collectives allocate nothing on the training thread). Gloo's own
 * transport threads allocate per operation (its unbound buffers) and are
 * not counted. */
static void test_steady_state_allocates_nothing(void **state)
{
    (void)state;
#if DIST_ALLOC_COUNT
    mspec *ms = mlp_spec();
    data_t d;
    xor_data(&d, 400);
    jspec *js = job_new("adam", 0.01, 8, 1); /* 25 steps */
    jspec *j1 = job_new("adam", 0.01, 16, 1);
    counter_t one = {.from = 6, .to = 20};
    fxg_graph *g = build(ms, 100);
    void *w = NULL;
    size_t wlen;
    char err[512];
    fxt_hooks h1 = {.data = &one, .should_stop = count_polls};
    assert_int_equal(fxt_run(j1, g, &d.c, NULL, NULL, 0, &h1, &w, &wlen, NULL, err, sizeof err),
                     FXT_DONE);
    free(w);
    fxg_free(g);
    rank_t ks[2];
    memset(ks, 0, sizeof ks);
    ks[0].count_from = 6;
    ks[0].count_to = 20;
    run_world(ks, 2, ms, js, &d.c, "allocs");
    assert_int_equal(ks[0].res, FXT_DONE);
    assert_int_equal(ks[1].res, FXT_DONE);
    printf("  heap allocations on the training thread in steps 6..19: one rank %ld, rank 0 of "
           "2 %ld\n", one.allocs, ks[0].allocs);
    assert_int_equal(ks[0].allocs, one.allocs);
    for (int r = 0; r < 2; r++)
        rank_free(&ks[r]);
    fluxion__v1__job_spec__free_unpacked(js, NULL);
    fluxion__v1__job_spec__free_unpacked(j1, NULL);
    fluxion__v1__model_spec__free_unpacked(ms, NULL);
    data_free(&d);
#else
    skip();
#endif
}

/* The data-parallel fields are validated with messages naming the field. */
static void test_validation(void **state)
{
    (void)state;
    mspec *ms = mlp_spec();
    data_t d;
    xor_data(&d, 40);
    fxg_graph *g = build(ms, 1);
    static char *p2[] = {"cpu", "cpu"}, *p1[] = {"cpu"}, *pe[] = {"cpu", ""},
                *pb[] = {"cpu", "tpu:0"}, *pp[] = {"cpu", "/cpu"}, *pc[] = {"cuda:0", "cuda:1"},
                *pr[] = {"cpu", "box-1/cpu"};
    struct {
        int world;
        char **placement;
        size_t np;
        int min_world;
        int64_t bucket;
        const char *backend;
        const char *want; /* NULL: valid */
    } cases[] = {
        {2, p2, 2, 0, 0, "", NULL},
        {2, pr, 2, 2, 1024, "gloo", NULL}, /* peers: checked by the daemon */
        {256, NULL, 0, 0, 1 << 30, "", NULL},
        {-1, NULL, 0, 0, 0, "", "world_size: -1 is not in [0, 256]"},
        {257, NULL, 0, 0, 0, "", "world_size: 257 is not in [0, 256]"},
        {2, p1, 1, 0, 0, "", "placement: 1 entries for world_size 2"},
        {2, pe, 2, 0, 0, "", "placement[1]: empty"},
        {2, pb, 2, 0, 0, "", "placement[1]: 'tpu:0' is not a device"},
        {2, pp, 2, 0, 0, "", "placement[1]: '/cpu' has an empty peer name"},
        {2, p2, 2, 3, 0, "", "min_world_size: 3 is not in [0, world_size 2]"},
        {2, p2, 2, 0, 1023, "", "bucket_bytes: 1023 is not in [1024, 1073741824]"},
        {2, p2, 2, 0, (1ll << 30) + 1, "", "bucket_bytes: 1073741825 is not in"},
        {2, p2, 2, 0, 0, "mpi", "comm_backend: 'mpi' is not one of gloo, nccl"},
        {2, p2, 2, 0, 0, "nccl", "comm_backend: nccl reduces CUDA memory"},
        {2, pc, 2, 0, 0, "gloo", "comm_backend: gloo reduces host memory"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jspec *j = job_new("sgd", 0.1, 8, 1);
        j->world_size = cases[i].world;
        j->n_placement = cases[i].np;
        j->placement = cases[i].placement;
        j->min_world_size = cases[i].min_world;
        j->bucket_bytes = cases[i].bucket;
        j->comm_backend = (char *)cases[i].backend;
        char err[512] = "";
        int rc = fxt_validate(j, g, &d.c, NULL, err, sizeof err);
        j->n_placement = 0; /* static strings: not the spec's to free */
        j->placement = NULL;
        j->comm_backend = (char *)protobuf_c_empty_string;
        fluxion__v1__job_spec__free_unpacked(j, NULL);
        if (!cases[i].want) {
            if (rc)
                fail_msg("case %zu: refused: %s", i, err);
            continue;
        }
        if (rc != FXS_INVALID_ARGUMENT || !strstr(err, cases[i].want))
            fail_msg("case %zu: rc %d, '%s'; expected INVALID_ARGUMENT with '%s'", i, rc, err,
                     cases[i].want);
    }
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(ms, NULL);
    data_free(&d);
}

int main(void)
{
    if (!fxcm_available(FXCM_GLOO)) {
        printf("SKIPPED: Gloo is not built in (libgloo-dev)\n");
        return 77;
    }
    fx_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_two_ranks_sgd),
        cmocka_unit_test(test_two_ranks_adam),
        cmocka_unit_test(test_three_ranks),
        cmocka_unit_test(test_stop_and_resume),
        cmocka_unit_test(test_lost_rank),
        cmocka_unit_test(test_steady_state_allocates_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
