/*
 * test_comm.c - the collectives (server/comm/comm.h) on Gloo: the
 * in-process rendezvous store; worlds of 1 to 4 ranks as threads over
 * 127.0.0.1 (allreduce of exact small-integer sums, broadcast from a
 * non-zero root, barrier, several operations in flight, many iterations);
 * and the faults: a rank that frees its comm or is SIGKILLed (a forked
 * process) mid-world, a rank that never arrives, fxcm_abort from another
 * thread. A fault must end the others' operations with UNAVAILABLE or
 * DEADLINE_EXCEEDED well before a generous bound, never hang.
 *
 * cmocka's asserts may only run on the main thread: a rank's thread
 * records its first failed check, and the main thread asserts on it.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "allochooks.h"
#include "base/status.h"
#include "base/util.h"
#include "comm/comm.h"

#define MAXW 4
/* A healthy world's timeout: long, so that a loaded machine never trips it. */
#define HEALTHY_MS 30000
/* The faults' timeout, and the bound within which every fault must have
 * been noticed (generous: the machine may be loaded). */
#define FAULT_MS 3000
#define FAULT_BOUND_MS 30000

static double now_ms(void) { return (double)fxu_mono_ns() / 1e6; }

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static const char *new_prefix(void) {
    static atomic_int n;
    return tu_pathf("test-%d-%d", (int)getpid(), atomic_fetch_add(&n, 1));
}

/* --------------------------------------------------------------- worlds */

typedef struct rank_ctx rank_ctx;
typedef void (*rank_fn)(rank_ctx *r);

typedef struct {
    int world;
    const char *prefix;
    fxcm_store store;
    int64_t timeout_ms;
    rank_fn fn;
    void *arg;
    atomic_int arrived; /* for the barrier test */
    fxcm_comm *comms[MAXW];
} world_t;

struct rank_ctx {
    world_t *w;
    int rank;
    pthread_t th;
    fxcm_comm *c;
    int open_rc;
    char err[FXS_ERRLEN];
    bool failed;
    char why[2 * FXS_ERRLEN];
    int last_rc; /* for the fault tests */
    double failed_after_ms;
};

#define CHECK(r, cond, ...)                                                               \
    do {                                                                                  \
        if (!(cond) && !(r)->failed) {                                                    \
            (r)->failed = true;                                                           \
            int k_ = snprintf((r)->why, sizeof (r)->why, "rank %d, line %d: ", (r)->rank, \
                              __LINE__);                                                  \
            snprintf((r)->why + k_, sizeof (r)->why - (size_t)k_, __VA_ARGS__);           \
        }                                                                                 \
    } while (0)

static void *rank_main(void *arg) {
    rank_ctx *r = arg;
    fxcm_opts o = {.backend = FXCM_GLOO,
                   .rank = r->rank,
                   .world = r->w->world,
                   .prefix = r->w->prefix,
                   .store = &r->w->store,
                   .timeout_ms = r->w->timeout_ms};
    r->open_rc = fxcm_open(&o, &r->c, r->err, sizeof r->err);
    r->w->comms[r->rank] = r->c;
    if (r->open_rc == 0 && r->w->fn)
        r->w->fn(r);
    return NULL;
}

/* Runs fn on ranks [0, nrun) of a world of w->world (the others never
 * arrive); keeps the comms open when keep (caller frees them). */
static void run_world(world_t *w, int nrun, rank_ctx *rs, bool keep) {
    for (int i = 0; i < nrun; i++) {
        rs[i] = (rank_ctx){.w = w, .rank = i};
        assert_int_equal(pthread_create(&rs[i].th, NULL, rank_main, &rs[i]), 0);
    }
    for (int i = 0; i < nrun; i++)
        pthread_join(rs[i].th, NULL);
    for (int i = 0; i < nrun; i++) {
        if (rs[i].failed)
            fail_msg("%s", rs[i].why);
        if (!keep) {
            fxcm_free(rs[i].c);
            rs[i].c = NULL;
        }
    }
}

/* A healthy world of n ranks on a fresh memstore running fn everywhere. */
static void healthy_world(int n, rank_fn fn, void *arg) {
    fxcm_memstore *m = fxcm_memstore_new();
    assert_non_null(m);
    world_t w = {.world = n, .prefix = new_prefix(), .store = fxcm_memstore_store(m),
                 .timeout_ms = HEALTHY_MS, .fn = fn, .arg = arg};
    rank_ctx rs[MAXW];
    run_world(&w, n, rs, false);
    for (int i = 0; i < n; i++)
        if (rs[i].open_rc)
            fail_msg("rank %d: open: %s (%s)", i, fxs_status_name(rs[i].open_rc), rs[i].err);
    fxcm_memstore_drop_prefix(m, w.prefix);
    fxcm_memstore_free(m);
}

/* ------------------------------------------------------------ memstore */

typedef struct {
    fxcm_store s;
    const char *key;
} late_set;

static void *set_later(void *arg) {
    late_set *ls = arg;
    sleep_ms(100);
    char err[FXS_ERRLEN];
    ls->s.set(ls->s.data, ls->key, "late", 4, err, sizeof err);
    return NULL;
}

static void test_memstore(void **state) {
    (void)state;
    fxcm_memstore *m = fxcm_memstore_new();
    assert_non_null(m);
    fxcm_store s = fxcm_memstore_store(m);
    char err[FXS_ERRLEN];
    void *v;
    size_t len;
    assert_int_equal(s.set(s.data, "a/x", "hello", 5, err, sizeof err), 0);
    assert_int_equal(s.get(s.data, "a/x", &v, &len, 0, err, sizeof err), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(v, "hello", 5);
    free(v);
    /* overwrite; an empty value */
    assert_int_equal(s.set(s.data, "a/x", "bye", 3, err, sizeof err), 0);
    assert_int_equal(s.set(s.data, "b/empty", NULL, 0, err, sizeof err), 0);
    assert_int_equal(s.get(s.data, "a/x", &v, &len, 0, err, sizeof err), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(v, "bye", 3);
    free(v);
    assert_int_equal(s.get(s.data, "b/empty", &v, &len, 0, err, sizeof err), 0);
    assert_int_equal(len, 0);
    free(v);
    /* a missing key: DEADLINE_EXCEEDED after the timeout, not before */
    double t0 = now_ms();
    assert_int_equal(s.get(s.data, "a/missing", &v, &len, 200, err, sizeof err),
                     FXS_DEADLINE_EXCEEDED);
    double took = now_ms() - t0;
    assert_true(took >= 199.0);
    assert_true(took < FAULT_BOUND_MS);
    assert_non_null(strstr(err, "a/missing"));
    assert_null(v);
    /* a blocking get sees a key set by another thread meanwhile */
    late_set ls = {s, "a/late"};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, set_later, &ls), 0);
    assert_int_equal(s.get(s.data, "a/late", &v, &len, HEALTHY_MS, err, sizeof err), 0);
    pthread_join(th, NULL);
    assert_int_equal(len, 4);
    assert_memory_equal(v, "late", 4);
    free(v);
    /* drop_prefix forgets a/... only */
    fxcm_memstore_drop_prefix(m, "a/");
    assert_int_equal(s.get(s.data, "a/x", &v, &len, 0, err, sizeof err), FXS_DEADLINE_EXCEEDED);
    assert_int_equal(s.get(s.data, "b/empty", &v, &len, 0, err, sizeof err), 0);
    free(v);
    /* bad arguments */
    assert_int_equal(s.set(s.data, NULL, "x", 1, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(s.set(s.data, "", "x", 1, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(s.set(s.data, "k", NULL, 1, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(s.get(s.data, NULL, &v, &len, 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    fxcm_memstore_free(m);
    fxcm_memstore_free(NULL);
}

/* ---------------------------------------------------------- allreduce */

/* rank r's value at i in iteration it: small integers, so sums are exact */
static float val(int r, size_t i, int it) { return (float)((r + 1) * (int)((i + (size_t)it) % 13 + 1)); }
static float sum_of(int world, size_t i, int it) {
    return (float)((world * (world + 1) / 2) * (int)((i + (size_t)it) % 13 + 1));
}

static void allreduce_sizes(rank_ctx *r) {
    static const size_t sizes[] = {1, 7, 1u << 20};
    int W = r->w->world;
    float *buf = malloc(sizeof(float) << 20);
    CHECK(r, buf, "out of memory");
    if (!buf)
        return;
    for (int it = 0; it < 3; it++) {
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            size_t n = sizes[k];
            for (size_t i = 0; i < n; i++)
                buf[i] = val(r->rank, i, it);
            int rc = fxcm_allreduce(r->c, buf, n, r->err, sizeof r->err);
            CHECK(r, rc == 0, "allreduce of %zu: %s", n, r->err);
            for (size_t i = 0; i < n && !r->failed; i++)
                CHECK(r, buf[i] == sum_of(W, i, it), "allreduce of %zu: [%zu] = %g, not %g", n,
                      i, buf[i], sum_of(W, i, it));
        }
    }
    free(buf);
}

static void test_allreduce_worlds(void **state) {
    (void)state;
    for (int n = 1; n <= 4; n++)
        healthy_world(n, allreduce_sizes, NULL);
}

/* Several operations in flight; the same buffer reduced three times in a
 * row shows they ran in order (v -> W*S... only in order). */
static void async_in_flight(rank_ctx *r) {
    enum { K = 12 };
    int W = r->w->world;
    float bufs[K][33];
    float same[5];
    uint64_t t[K + 3];
    for (int k = 0; k < K; k++)
        for (int i = 0; i < 33; i++)
            bufs[k][i] = val(r->rank, (size_t)i, k);
    for (int i = 0; i < 5; i++)
        same[i] = (float)(r->rank + 1);
    int nt = 0;
    for (int k = 0; k < K; k++) {
        int rc = fxcm_allreduce_start(r->c, bufs[k], (size_t)(k + 22), &t[nt++], r->err,
                                      sizeof r->err);
        CHECK(r, rc == 0, "start %d: %s", k, r->err);
        if (k % 4 == 0) {
            rc = fxcm_allreduce_start(r->c, same, 5, &t[nt++], r->err, sizeof r->err);
            CHECK(r, rc == 0, "start same: %s", r->err);
        }
    }
    for (int i = 1; i < nt; i++)
        CHECK(r, t[i] > t[i - 1], "tickets not increasing");
    /* the last ticket covers every earlier one */
    int rc = fxcm_wait(r->c, t[nt - 1], r->err, sizeof r->err);
    CHECK(r, rc == 0, "wait last: %s", r->err);
    for (int i = 0; i < nt; i++) {
        rc = fxcm_wait(r->c, t[i], r->err, sizeof r->err);
        CHECK(r, rc == 0, "wait %d again: %s", i, r->err);
    }
    for (int k = 0; k < K; k++)
        for (int i = 0; i < 33; i++) {
            float want = i < k + 22 ? sum_of(W, (size_t)i, k) : val(r->rank, (size_t)i, k);
            CHECK(r, bufs[k][i] == want, "buf %d[%d] = %g, not %g", k, i, bufs[k][i], want);
        }
    float s = (float)(W * (W + 1) / 2) * (float)W * (float)W; /* three sums in order */
    for (int i = 0; i < 5; i++)
        CHECK(r, same[i] == s, "same[%d] = %g, not %g", i, same[i], s);
}

static void test_async_in_flight(void **state) {
    (void)state;
    healthy_world(3, async_in_flight, NULL);
    healthy_world(2, async_in_flight, NULL);
}

/* ---------------------------------------------------- broadcast, barrier */

static void broadcasts(rank_ctx *r) {
    int W = r->w->world;
    float buf[100];
    for (int root = W - 1; root >= 0; root--) {
        for (int i = 0; i < 100; i++)
            buf[i] = r->rank == root ? (float)(i * 3 + root) : -1.0f;
        int rc = fxcm_broadcast(r->c, buf, 100, root, r->err, sizeof r->err);
        CHECK(r, rc == 0, "broadcast from %d: %s", root, r->err);
        for (int i = 0; i < 100; i++)
            CHECK(r, buf[i] == (float)(i * 3 + root), "broadcast from %d: [%d] = %g", root, i,
                  buf[i]);
    }
}

static void test_broadcast(void **state) {
    (void)state;
    for (int n = 2; n <= 4; n++)
        healthy_world(n, broadcasts, NULL);
}

static void barriers(rank_ctx *r) {
    for (int round = 1; round <= 3; round++) {
        sleep_ms(30 * r->rank); /* the later ranks arrive later */
        atomic_fetch_add(&r->w->arrived, 1);
        int rc = fxcm_barrier(r->c, r->err, sizeof r->err);
        CHECK(r, rc == 0, "barrier: %s", r->err);
        int seen = atomic_load(&r->w->arrived);
        CHECK(r, seen >= round * r->w->world, "left barrier %d with %d arrivals of %d", round,
              seen, round * r->w->world);
        /* a second barrier so that nobody counts the next round early */
        rc = fxcm_barrier(r->c, r->err, sizeof r->err);
        CHECK(r, rc == 0, "barrier: %s", r->err);
    }
}

static void test_barrier(void **state) {
    (void)state;
    healthy_world(3, barriers, NULL);
    healthy_world(4, barriers, NULL);
}

/* Many small operations, mixed. */
static void many(rank_ctx *r) {
    int W = r->w->world;
    float buf[64];
    for (int it = 0; it < 300 && !r->failed; it++) {
        for (int i = 0; i < 64; i++)
            buf[i] = val(r->rank, (size_t)i, it);
        int rc = fxcm_allreduce(r->c, buf, 64, r->err, sizeof r->err);
        CHECK(r, rc == 0, "iteration %d: %s", it, r->err);
        for (int i = 0; i < 64; i++)
            CHECK(r, buf[i] == sum_of(W, (size_t)i, it), "iteration %d: [%d] = %g", it, i,
                  buf[i]);
        if (it % 50 == 0) {
            rc = fxcm_barrier(r->c, r->err, sizeof r->err);
            CHECK(r, rc == 0, "barrier %d: %s", it, r->err);
        }
        if (it % 30 == 0) {
            rc = fxcm_broadcast(r->c, buf, 64, it % W, r->err, sizeof r->err);
            CHECK(r, rc == 0, "broadcast %d: %s", it, r->err);
        }
    }
}

static void test_many_iterations(void **state) {
    (void)state;
    healthy_world(3, many, NULL);
}

/* ------------------------------------------------------------- faults */

static bool peer_gone_code(int rc) { return rc == FXS_UNAVAILABLE || rc == FXS_DEADLINE_EXCEEDED; }

/* Ranks but the last: a barrier, then an allreduce that the last rank
 * never joins (it frees its comm instead). */
static void survivor_or_leaver(rank_ctx *r) {
    int W = r->w->world;
    int rc = fxcm_barrier(r->c, r->err, sizeof r->err);
    CHECK(r, rc == 0, "barrier: %s", r->err);
    if (r->rank == W - 1) {
        sleep_ms(200); /* the others are waiting in their allreduce by now */
        fxcm_free(r->c);
        r->c = NULL;
        return;
    }
    float buf[1000];
    for (int i = 0; i < 1000; i++)
        buf[i] = 1;
    double t0 = now_ms();
    r->last_rc = fxcm_allreduce(r->c, buf, 1000, r->err, sizeof r->err);
    r->failed_after_ms = now_ms() - t0;
    /* a failed comm fails every later operation at once, with ABORTED */
    char err2[FXS_ERRLEN];
    t0 = now_ms();
    int rc2 = fxcm_barrier(r->c, err2, sizeof err2);
    CHECK(r, rc2 == FXS_ABORTED, "after the failure: %s (%s)", fxs_status_name(rc2), err2);
    CHECK(r, now_ms() - t0 < FAULT_MS, "after the failure: not at once");
}

static void fault_world(int n, rank_fn fn, rank_ctx *rs) {
    fxcm_memstore *m = fxcm_memstore_new();
    assert_non_null(m);
    world_t w = {.world = n, .prefix = new_prefix(), .store = fxcm_memstore_store(m),
                 .timeout_ms = FAULT_MS, .fn = fn};
    run_world(&w, n, rs, false);
    fxcm_memstore_free(m);
}

static void test_rank_frees_mid_world(void **state) {
    (void)state;
    for (int n = 2; n <= 4; n++) {
        rank_ctx rs[MAXW];
        fault_world(n, survivor_or_leaver, rs);
        for (int i = 0; i < n - 1; i++) {
            assert_int_equal(rs[i].open_rc, 0);
            print_message("world %d, rank %d: %s after %.0f ms: %s\n", n, i,
                          fxs_status_name(rs[i].last_rc), rs[i].failed_after_ms, rs[i].err);
            assert_true(peer_gone_code(rs[i].last_rc));
            assert_true(rs[i].failed_after_ms < FAULT_BOUND_MS);
        }
    }
}

/* A rank that never arrives: the others' rendezvous ends with
 * DEADLINE_EXCEEDED after about the timeout. */
static void test_rank_never_arrives(void **state) {
    (void)state;
    fxcm_memstore *m = fxcm_memstore_new();
    world_t w = {.world = 3, .prefix = new_prefix(), .store = fxcm_memstore_store(m),
                 .timeout_ms = 1500};
    rank_ctx rs[MAXW];
    double t0 = now_ms();
    run_world(&w, 2, rs, false);
    double took = now_ms() - t0;
    for (int i = 0; i < 2; i++) {
        print_message("rank %d: %s (%s)\n", i, fxs_status_name(rs[i].open_rc), rs[i].err);
        assert_int_equal(rs[i].open_rc, FXS_DEADLINE_EXCEEDED);
        assert_null(rs[i].c);
    }
    assert_true(took >= 1400.0);
    assert_true(took < FAULT_BOUND_MS);
    fxcm_memstore_free(m);
}

/* fxcm_abort from another thread: rank 0's pending allreduce (rank 1 never
 * joins it) fails with ABORTED at once, not by its timeout; rank 1's next
 * operation sees rank 0's connection closed. */
typedef struct {
    fxcm_comm *c;
    atomic_int started;
    int rc;
    double took_ms;
    char err[FXS_ERRLEN];
} pending_op;

static void *pending_allreduce(void *arg) {
    pending_op *p = arg;
    float buf[16] = {0};
    uint64_t t;
    p->rc = fxcm_allreduce_start(p->c, buf, 16, &t, p->err, sizeof p->err);
    atomic_store(&p->started, 1);
    if (p->rc)
        return NULL;
    double t0 = now_ms();
    p->rc = fxcm_wait(p->c, t, p->err, sizeof p->err);
    p->took_ms = now_ms() - t0;
    return NULL;
}

static void open_world(int n, int64_t timeout_ms, fxcm_memstore *m, rank_ctx *rs) {
    world_t *w = calloc(1, sizeof *w); /* the ranks keep a pointer: freed by the test */
    assert_non_null(w);
    *w = (world_t){.world = n, .prefix = new_prefix(), .store = fxcm_memstore_store(m),
                   .timeout_ms = timeout_ms};
    run_world(w, n, rs, true);
    for (int i = 0; i < n; i++)
        assert_int_equal(rs[i].open_rc, 0);
}

static void test_abort_from_another_thread(void **state) {
    (void)state;
    const int64_t timeout = 8000; /* far above what an abort may take */
    fxcm_memstore *m = fxcm_memstore_new();
    rank_ctx rs[2];
    open_world(2, timeout, m, rs);
    pending_op p = {.c = rs[0].c};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pending_allreduce, &p), 0);
    while (!atomic_load(&p.started))
        sleep_ms(5);
    sleep_ms(200);
    fxcm_abort(rs[0].c);
    fxcm_abort(rs[0].c); /* twice is harmless */
    pthread_join(th, NULL);
    print_message("rank 0: %s after %.0f ms: %s\n", fxs_status_name(p.rc), p.took_ms, p.err);
    assert_int_equal(p.rc, FXS_ABORTED);
    assert_true(p.took_ms < timeout / 2);
    char err[FXS_ERRLEN];
    float x = 1;
    assert_int_equal(fxcm_allreduce(rs[0].c, &x, 1, err, sizeof err), FXS_ABORTED);
    /* rank 1: its peer's connection is closed. Usually UNAVAILABLE at once;
     * when its send is written before Gloo's event loop has read the
     * close, Gloo leaves that send to the timeout (docs/distributed.md,
     * "Gloo's limits"): DEADLINE_EXCEEDED, still bounded. */
    double t0 = now_ms();
    int rc = fxcm_allreduce(rs[1].c, &x, 1, err, sizeof err);
    double took = now_ms() - t0;
    print_message("rank 1: %s after %.0f ms: %s\n", fxs_status_name(rc), took, err);
    assert_true(peer_gone_code(rc));
    assert_true(took < FAULT_BOUND_MS);
    fxcm_free(rs[0].c);
    fxcm_free(rs[1].c);
    free(rs[0].w);
    fxcm_memstore_free(m);
}

/* FXCM_MAX_PENDING operations pending: the next start is refused; freeing
 * the comm ends its running operation at once. */
static void test_ring_full(void **state) {
    (void)state;
    fxcm_memstore *m = fxcm_memstore_new();
    rank_ctx rs[2];
    open_world(2, HEALTHY_MS, m, rs);
    static float bufs[FXCM_MAX_PENDING + 1];
    char err[FXS_ERRLEN];
    uint64_t t;
    for (int i = 0; i < FXCM_MAX_PENDING; i++)
        assert_int_equal(fxcm_allreduce_start(rs[0].c, &bufs[i], 1, &t, err, sizeof err), 0);
    assert_int_equal(fxcm_allreduce_start(rs[0].c, &bufs[FXCM_MAX_PENDING], 1, &t, err,
                                          sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    double t0 = now_ms();
    fxcm_free(rs[0].c);
    fxcm_free(rs[1].c);
    assert_true(now_ms() - t0 < HEALTHY_MS / 2);
    free(rs[0].w);
    fxcm_memstore_free(m);
}

/* ------------------------------------------- a killed process as a rank */

/* A rendezvous store in a directory (one file per key), for ranks in
 * other processes. */
static int dir_set(void *data, const char *key, const void *val, size_t len, char *err,
                   size_t errlen) {
    char path[512], tmp[520];
    snprintf(path, sizeof path, "%s/", (const char *)data);
    size_t o = strlen(path);
    for (const char *k = key; *k && o + 1 < sizeof path; k++)
        path[o++] = *k == '/' ? '_' : *k;
    path[o] = 0;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || fxu_write_all(fd, val, len) != 0 || close(fd) != 0 || rename(tmp, path) != 0)
        return fxu_fail(err, errlen, FXS_INTERNAL, "dir store: %s: %s", path, strerror(errno));
    return 0;
}

static int dir_get(void *data, const char *key, void **val, size_t *len, int64_t timeout_ms,
                   char *err, size_t errlen) {
    char path[512];
    snprintf(path, sizeof path, "%s/", (const char *)data);
    size_t o = strlen(path);
    for (const char *k = key; *k && o + 1 < sizeof path; k++)
        path[o++] = *k == '/' ? '_' : *k;
    path[o] = 0;
    double until = now_ms() + (double)timeout_ms;
    for (;;) {
        FILE *f = fopen(path, "rb");
        if (f) {
            char *buf = malloc(65536);
            size_t n = buf ? fread(buf, 1, 65536, f) : 0;
            fclose(f);
            *val = buf;
            *len = n;
            return buf ? 0 : fxu_oom(err, errlen);
        }
        if (now_ms() >= until)
            return fxu_fail(err, errlen, FXS_DEADLINE_EXCEEDED, "dir store: no %s", key);
        sleep_ms(5);
    }
}

/* A survivor of the killed rank's world: the barrier (with the killed
 * rank still alive), then an allreduce that the killed rank never joins. */
static void killed_survivor(rank_ctx *r) {
    int rc = fxcm_barrier(r->c, r->err, sizeof r->err);
    CHECK(r, rc == 0, "barrier: %s", r->err);
    atomic_fetch_add(&r->w->arrived, 1);
    float buf[4096];
    for (int i = 0; i < 4096; i++)
        buf[i] = 1;
    double t0 = now_ms();
    r->last_rc = fxcm_allreduce(r->c, buf, 4096, r->err, sizeof r->err);
    r->failed_after_ms = now_ms() - t0;
}

static void test_killed_rank(void **state) {
    (void)state;
    enum { W = 3 };
    const int64_t timeout = 20000; /* the kill, not the timeout, must end it */
    char dir[] = "/tmp/fxcm-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    world_t w = {.world = W, .prefix = new_prefix(), .store = {dir_set, dir_get, dir},
                 .timeout_ms = timeout, .fn = killed_survivor};
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* rank W-1: joins, passes the barrier, then idles */
        fxcm_opts o = {.backend = FXCM_GLOO, .rank = W - 1, .world = W, .prefix = w.prefix,
                       .store = &w.store, .timeout_ms = timeout};
        fxcm_comm *c;
        char err[FXS_ERRLEN];
        if (fxcm_open(&o, &c, err, sizeof err) || fxcm_barrier(c, err, sizeof err)) {
            fprintf(stderr, "child rank: %s\n", err);
            _exit(1);
        }
        for (;;)
            pause();
    }
    rank_ctx rs[W - 1];
    for (int i = 0; i < W - 1; i++) {
        rs[i] = (rank_ctx){.w = &w, .rank = i};
        assert_int_equal(pthread_create(&rs[i].th, NULL, rank_main, &rs[i]), 0);
    }
    /* both survivors past the barrier, and waiting in their allreduce */
    double t0 = now_ms();
    while (atomic_load(&w.arrived) < W - 1 && now_ms() - t0 < 2.0 * timeout)
        sleep_ms(10);
    sleep_ms(300);
    kill(pid, SIGKILL);
    double killed_at = now_ms();
    int status = 0;
    waitpid(pid, &status, 0);
    for (int i = 0; i < W - 1; i++)
        pthread_join(rs[i].th, NULL);
    double joined = now_ms() - killed_at;
    for (int i = 0; i < W - 1; i++) {
        if (rs[i].failed)
            fail_msg("%s", rs[i].why);
        assert_int_equal(rs[i].open_rc, 0);
        print_message("rank %d: %s %.0f ms after the kill: %s\n", i,
                      fxs_status_name(rs[i].last_rc), joined, rs[i].err);
        assert_true(peer_gone_code(rs[i].last_rc));
        fxcm_free(rs[i].c);
    }
    assert_true(WIFSIGNALED(status)); /* the child was still in the world */
    assert_true(joined < timeout / 2); /* noticed by the closed connection */
    tu_rmtree(dir);
}

/* ------------------------------------------------------- bad arguments */

static void test_bad_args(void **state) {
    (void)state;
    fxcm_memstore *m = fxcm_memstore_new();
    fxcm_store s = fxcm_memstore_store(m);
    char err[FXS_ERRLEN];
    fxcm_comm *c = (fxcm_comm *)&c;
    fxcm_opts ok = {.backend = FXCM_GLOO, .rank = 0, .world = 2, .prefix = "bad",
                    .store = &s, .timeout_ms = 100};
    fxcm_opts o = ok;
    o.rank = 2;
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_null(c);
    assert_non_null(strstr(err, "rank 2"));
    o = ok, o.rank = -1;
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    o = ok, o.world = 0;
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    o = ok, o.store = NULL;
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    o = ok, o.prefix = NULL;
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    o = ok, o.prefix = "";
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    o = ok, o.timeout_ms = -1;
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    o = ok, o.backend = 7;
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_open(NULL, &c, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_open(&ok, NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    if (!fxcm_available(FXCM_NCCL)) {
        o = ok, o.backend = FXCM_NCCL;
        assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_UNIMPLEMENTED);
        assert_non_null(strstr(err, "without NCCL"));
    }
    /* an address this machine does not have (TEST-NET-1): refused at once */
    o = ok, o.bind_host = "192.0.2.1";
    double t0 = now_ms();
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_UNAVAILABLE);
    assert_null(c);
    assert_true(now_ms() - t0 < FAULT_BOUND_MS);
    print_message("bind_host 192.0.2.1: %s\n", err);
    assert_non_null(strstr(err, "192.0.2.1"));
    /* names */
    assert_true(fxcm_available(FXCM_GLOO));
    assert_string_equal(fxcm_backend_name(FXCM_GLOO), "gloo");
    assert_string_equal(fxcm_backend_name(FXCM_NCCL), "nccl");
    assert_int_equal(fxcm_backend_parse("gloo"), FXCM_GLOO);
    assert_int_equal(fxcm_backend_parse("nccl"), FXCM_NCCL);
    assert_int_equal(fxcm_backend_parse("mpi"), 0);
    assert_int_equal(fxcm_backend_parse(NULL), 0);
    /* operations: a world of 1 (every operation is the identity) */
    o = ok, o.world = 1;
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), 0);
    assert_int_equal(fxcm_rank(c), 0);
    assert_int_equal(fxcm_world(c), 1);
    assert_int_equal(fxcm_comm_backend(c), FXCM_GLOO);
    float x[3] = {1, 2, 3};
    uint64_t t;
    assert_int_equal(fxcm_allreduce(c, x, 3, err, sizeof err), 0);
    assert_true(x[0] == 1 && x[1] == 2 && x[2] == 3);
    assert_int_equal(fxcm_broadcast(c, x, 3, 0, err, sizeof err), 0);
    assert_int_equal(fxcm_barrier(c, err, sizeof err), 0);
    assert_int_equal(fxcm_allreduce(c, NULL, 0, err, sizeof err), 0);
    assert_int_equal(fxcm_allreduce(c, NULL, 3, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_allreduce(NULL, x, 3, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_allreduce_start(c, x, 3, NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_broadcast(c, x, 3, 1, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_broadcast(c, x, 3, -1, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_wait(c, 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_wait(c, 1000, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_barrier(NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxcm_allreduce_start(c, x, 3, &t, err, sizeof err), 0);
    assert_int_equal(fxcm_wait(c, t, err, sizeof err), 0);
    fxcm_abort(c);
    assert_int_equal(fxcm_barrier(c, err, sizeof err), FXS_ABORTED);
    assert_int_equal(fxcm_wait(c, t, err, sizeof err), 0); /* done before the abort */
    fxcm_free(c);
    fxcm_free(NULL);
    fxcm_abort(NULL);
    fxcm_memstore_free(m);
}

/* Starting and waiting allocate nothing (the ring is the comm's). A world
 * of 1: Gloo itself allocates inside its worker for every operation of a
 * larger world, and the hooks count every thread. */
#if defined(__SANITIZE_THREAD__) || !TU_ALLOC_HOOKS
static void test_no_allocation(void **state) {
    (void)state;
    print_message("skipped: no allocation hooks under the sanitizers\n");
    skip();
}
#else
static void test_no_allocation(void **state) {
    (void)state;
    fxcm_memstore *m = fxcm_memstore_new();
    fxcm_store s = fxcm_memstore_store(m);
    fxcm_opts o = {.backend = FXCM_GLOO, .rank = 0, .world = 1, .prefix = "alloc", .store = &s};
    fxcm_comm *c;
    char err[FXS_ERRLEN];
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), 0);
    float buf[64] = {0};
    uint64_t t[8];
    assert_int_equal(fxcm_allreduce(c, buf, 64, err, sizeof err), 0); /* warm-up */
    tu_alloc_count_start();
    for (int step = 0; step < 20; step++) {
        for (int k = 0; k < 8; k++)
            if (fxcm_allreduce_start(c, buf, 64, &t[k], err, sizeof err))
                break;
        if (fxcm_wait(c, t[7], err, sizeof err) || fxcm_barrier(c, err, sizeof err) ||
            fxcm_broadcast(c, buf, 64, 0, err, sizeof err))
            break;
    }
    long n = tu_alloc_count_stop();
    assert_int_equal(fxcm_barrier(c, err, sizeof err), 0);
    if (n != 0)
        fail_msg("%ld allocations in 20 steps of start/wait", n);
    fxcm_free(c);
    fxcm_memstore_free(m);
}
#endif

/* ------------------------------------------- measurement (not a test) */

/* `test_comm --bench [WORLD]`: allreduce time on loopback per size, for
 * the docs and the scaling estimates; prints, asserts nothing. */
typedef struct {
    size_t n;
    int iters;
    double ms; /* per operation, rank 0 */
} bench_row;

static bench_row bench_rows[] = {{256, 200, 0}, {1u << 16, 50, 0}, {1u << 20, 20, 0},
                                 {25u << 18, 10, 0}}; /* 1 KB, 256 KB, 4 MB, 25 MB */

static void bench_rank(rank_ctx *r) {
    size_t maxn = 25u << 18;
    float *buf = calloc(maxn, sizeof(float));
    CHECK(r, buf, "out of memory");
    if (!buf)
        return;
    for (size_t k = 0; k < sizeof bench_rows / sizeof *bench_rows; k++) {
        bench_row *b = &bench_rows[k];
        int rc = fxcm_allreduce(r->c, buf, b->n, r->err, sizeof r->err); /* warm-up */
        double t0 = now_ms();
        for (int i = 0; i < b->iters && !rc; i++)
            rc = fxcm_allreduce(r->c, buf, b->n, r->err, sizeof r->err);
        CHECK(r, rc == 0, "allreduce: %s", r->err);
        if (r->rank == 0)
            b->ms = (now_ms() - t0) / b->iters;
    }
    free(buf);
}

static int bench(int world) {
    if (world < 2 || world > MAXW)
        world = 2;
    healthy_world(world, bench_rank, NULL);
    double load[3] = {0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = -1;
        fclose(f);
    }
    printf("gloo allreduce, %d ranks as threads on 127.0.0.1 (load average %.2f)\n", world,
           load[0]);
    printf("%12s %10s %12s %14s\n", "floats", "bytes", "ms/op", "busbw GB/s");
    for (size_t k = 0; k < sizeof bench_rows / sizeof *bench_rows; k++) {
        const bench_row *b = &bench_rows[k];
        double bytes = (double)b->n * 4;
        /* a ring allreduce moves 2 (W-1)/W of the buffer per rank (NCCL's bus bandwidth) */
        double busbw = bytes * 2.0 * (world - 1) / world / (b->ms / 1e3) / 1e9;
        printf("%12zu %10.0f %12.3f %14.3f\n", b->n, bytes, b->ms, busbw);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--bench") == 0)
        return bench(argc >= 3 ? atoi(argv[2]) : 2);
    /* first: the fork happens while this process has one thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_killed_rank),
        cmocka_unit_test(test_memstore),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_allreduce_worlds),
        cmocka_unit_test(test_async_in_flight),
        cmocka_unit_test(test_broadcast),
        cmocka_unit_test(test_barrier),
        cmocka_unit_test(test_many_iterations),
        cmocka_unit_test(test_rank_frees_mid_world),
        cmocka_unit_test(test_rank_never_arrives),
        cmocka_unit_test(test_abort_from_another_thread),
        cmocka_unit_test(test_ring_full),
        cmocka_unit_test(test_no_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
