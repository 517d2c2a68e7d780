/*
 * comm.c - the common part of the collectives (comm.h): the in-process
 * rendezvous store, argument checks, the ring of pending operations, error
 * latching and abort, and dispatch to the backends (gloo.cpp, nccl.c).
 *
 * Tickets are 1, 2, ... in start order; ticket t lives in ring[t % MAX]
 * until it is done. `done` counts the operations completed in order, so
 * ticket t is complete when done >= t. The first failure is latched
 * (status, msg): the operations pending then fail with that code, the ones
 * started later with ABORTED, and the backend is told to fail everything
 * it holds so that the peers notice at once.
 *
 * Gloo: the operations run on the comm's worker thread (here), one after
 * the other, each bounded by the backend's timeout. A waiter also gives up
 * by itself when the comm made no progress for timeout_ms + a grace (the
 * backend's own timeout normally fires first, with a better message).
 * NCCL: the operations are enqueued on the comm's stream when started; a
 * waiter polls the event recorded after its operation.
 */
#include "comm/comm.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/status.h"
#include "base/util.h"
#include "comm/comm_internal.h"

#define FXCM_DEFAULT_TIMEOUT_MS 60000
/* A waiter's own limit past the backend's timeout (see above). */
#define FXCM_WAIT_GRACE_MS 1000

/* ---------------------------------------------------------------- time */

static void cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

static uint64_t now_ns(void) { return fxu_mono_ns(); }

static struct timespec ts_of_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    return ts;
}

static uint64_t deadline_ns(int64_t timeout_ms) {
    if (timeout_ms < 0)
        timeout_ms = 0;
    return now_ns() + (uint64_t)timeout_ms * 1000000u;
}

/* ------------------------------------------------------------ memstore */

typedef struct {
    char *key;
    void *val;
    size_t len;
} memstore_entry;

struct fxcm_memstore {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a key was set */
    memstore_entry *e;
    size_t n, cap;
};

fxcm_memstore *fxcm_memstore_new(void) {
    fxcm_memstore *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    cond_init_mono(&m->cv);
    return m;
}

void fxcm_memstore_free(fxcm_memstore *m) {
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].key);
        free(m->e[i].val);
    }
    free(m->e);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static memstore_entry *memstore_find(fxcm_memstore *m, const char *key) {
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->e[i].key, key) == 0)
            return &m->e[i];
    return NULL;
}

static int memstore_set(void *data, const char *key, const void *val, size_t len, char *err,
                        size_t errlen) {
    fxcm_memstore *m = data;
    if (!m || !key || !*key || (len && !val))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "memstore set: no key or no value");
    void *copy = malloc(len ? len : 1);
    if (!copy)
        return fxu_oom(err, errlen);
    if (len)
        memcpy(copy, val, len);
    pthread_mutex_lock(&m->mu);
    memstore_entry *e = memstore_find(m, key);
    if (e) {
        free(e->val);
    } else {
        char *k = strdup(key);
        if (k && m->n == m->cap) {
            size_t cap = m->cap ? 2 * m->cap : 16;
            memstore_entry *ne = realloc(m->e, cap * sizeof *ne);
            if (!ne) {
                free(k);
                k = NULL;
            } else {
                m->e = ne;
                m->cap = cap;
            }
        }
        if (!k) {
            pthread_mutex_unlock(&m->mu);
            free(copy);
            return fxu_oom(err, errlen);
        }
        e = &m->e[m->n++];
        e->key = k;
    }
    e->val = copy;
    e->len = len;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

static int memstore_get(void *data, const char *key, void **val, size_t *len,
                        int64_t timeout_ms, char *err, size_t errlen) {
    fxcm_memstore *m = data;
    if (!m || !key || !*key || !val || !len)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "memstore get: no key");
    *val = NULL;
    *len = 0;
    struct timespec dl = ts_of_ns(deadline_ns(timeout_ms));
    pthread_mutex_lock(&m->mu);
    memstore_entry *e;
    while (!(e = memstore_find(m, key))) {
        int rc = pthread_cond_timedwait(&m->cv, &m->mu, &dl);
        if (rc == ETIMEDOUT && !(e = memstore_find(m, key))) {
            pthread_mutex_unlock(&m->mu);
            return fxu_fail(err, errlen, FXS_DEADLINE_EXCEEDED,
                            "rendezvous: key '%s' did not appear within %lld ms", key,
                            (long long)timeout_ms);
        }
        if (e)
            break;
    }
    void *copy = malloc(e->len ? e->len : 1);
    if (copy) {
        memcpy(copy, e->val, e->len);
        *val = copy;
        *len = e->len;
    }
    pthread_mutex_unlock(&m->mu);
    return copy ? 0 : fxu_oom(err, errlen);
}

fxcm_store fxcm_memstore_store(fxcm_memstore *m) {
    fxcm_store s = {memstore_set, memstore_get, m};
    return s;
}

void fxcm_memstore_drop_prefix(fxcm_memstore *m, const char *prefix) {
    if (!m || !prefix)
        return;
    size_t pl = strlen(prefix);
    pthread_mutex_lock(&m->mu);
    size_t w = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (strncmp(m->e[i].key, prefix, pl) == 0) {
            free(m->e[i].key);
            free(m->e[i].val);
        } else {
            m->e[w++] = m->e[i];
        }
    }
    m->n = w;
    pthread_mutex_unlock(&m->mu);
}

/* ------------------------------------------------------------ backends */

bool fxcm_available(fxcm_backend b) {
    if (b == FXCM_GLOO)
        return true;
#ifdef FXCM_HAVE_NCCL
    if (b == FXCM_NCCL)
        return true;
#endif
    return false;
}

const char *fxcm_backend_name(fxcm_backend b) {
    switch (b) {
    case FXCM_GLOO:
        return "gloo";
    case FXCM_NCCL:
        return "nccl";
    }
    return "unknown";
}

fxcm_backend fxcm_backend_parse(const char *name) {
    if (!name)
        return 0;
    if (strcmp(name, "gloo") == 0)
        return FXCM_GLOO;
    if (strcmp(name, "nccl") == 0)
        return FXCM_NCCL;
    return 0;
}

const char *fxcm__kind_name(fxcm__kind k) {
    switch (k) {
    case FXCM__ALLREDUCE:
        return "allreduce";
    case FXCM__BROADCAST:
        return "broadcast";
    case FXCM__BARRIER:
        return "barrier";
    }
    return "operation";
}

/* ---------------------------------------------------------------- comm */

struct fxcm_comm {
    fxcm_backend backend;
    int rank, world;
    int64_t timeout_ms;
    fxcm__gloo *gloo;
    fxcm__nccl *nccl;

    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* Gloo worker: an operation was started, or closing */
    pthread_cond_t done_cv; /* an operation completed, or the comm failed */
    fxcm__op ring[FXCM_MAX_PENDING];
    uint64_t started, done;
    uint64_t progress_ns; /* when done last moved (or the comm opened) */
    int status;           /* the latched failure: 0 or a code */
    char msg[FXS_ERRLEN];
    atomic_bool aborted;
    bool closing;
    bool has_worker;
    pthread_t worker;
    char worker_err[FXS_ERRLEN];
};

/* Latches the first failure (c->mu held). Returns whether it was the first. */
static bool latch(fxcm_comm *c, int code, const char *msg) {
    if (c->status)
        return false;
    c->status = code;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    pthread_cond_broadcast(&c->done_cv);
    return true;
}

/* Tells the backend to fail everything it holds (c->mu not held). */
static void backend_fail_all(fxcm_comm *c, const char *why) {
    if (c->gloo)
        fxcm__gloo_fail_all(c->gloo, why);
#ifdef FXCM_HAVE_NCCL
    if (c->nccl)
        fxcm__nccl_abort(c->nccl);
#endif
}

static void *gloo_worker(void *arg) {
    fxcm_comm *c = arg;
    /* Gloo's writes raise SIGPIPE on a connection the peer closed: EPIPE
     * instead, in a process that does not ignore SIGPIPE (see gloo.cpp) */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->closing && (c->status || c->done == c->started))
            pthread_cond_wait(&c->work_cv, &c->mu);
        if (c->closing)
            break;
        fxcm__op op = c->ring[(c->done + 1) % FXCM_MAX_PENDING];
        pthread_mutex_unlock(&c->mu);
        int rc = fxcm__gloo_run(c->gloo, &op, c->worker_err, sizeof c->worker_err);
        pthread_mutex_lock(&c->mu);
        if (rc) {
            bool first = latch(c, rc, c->worker_err);
            pthread_mutex_unlock(&c->mu);
            /* every other pair closes too: the peers fail at once instead
             * of waiting for their timeouts */
            if (first)
                fxcm__gloo_fail_all(c->gloo, c->worker_err);
            pthread_mutex_lock(&c->mu);
        } else {
            c->done++;
            c->progress_ns = now_ns();
            pthread_cond_broadcast(&c->done_cv);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int check_opts(const fxcm_opts *o, char *err, size_t errlen) {
    if (!o)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: no options");
    if (o->backend != FXCM_GLOO && o->backend != FXCM_NCCL)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: unknown backend %d",
                        (int)o->backend);
    if (o->world < 1 || o->rank < 0 || o->rank >= o->world)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "comm: rank %d is not in a world of %d (0 <= rank < world)", o->rank,
                        o->world);
    if (!o->prefix || !*o->prefix)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "comm: no prefix (each world needs its own key prefix)");
    if (strlen(o->prefix) > 512)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: prefix over 512 bytes");
    if (!o->store || !o->store->set || !o->store->get)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: no rendezvous store");
    if (o->timeout_ms < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: negative timeout_ms %lld",
                        (long long)o->timeout_ms);
    if (o->bind_host && strlen(o->bind_host) > 255)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: bind_host over 255 bytes");
    if (o->backend == FXCM_NCCL && o->cuda_device < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: negative cuda_device %d",
                        o->cuda_device);
    return 0;
}

int fxcm_open(const fxcm_opts *o, fxcm_comm **out, char *err, size_t errlen) {
    if (!out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: no output");
    *out = NULL;
    int rc = check_opts(o, err, errlen);
    if (rc)
        return rc;
    if (!fxcm_available(o->backend))
        return fxu_fail(err, errlen, FXS_UNIMPLEMENTED,
                        "fluxion was built without NCCL (nccl.h not found)");
    fxcm_comm *c = calloc(1, sizeof *c);
    if (!c)
        return fxu_oom(err, errlen);
    c->backend = o->backend;
    c->rank = o->rank;
    c->world = o->world;
    c->timeout_ms = o->timeout_ms ? o->timeout_ms : FXCM_DEFAULT_TIMEOUT_MS;
    pthread_mutex_init(&c->mu, NULL);
    cond_init_mono(&c->work_cv);
    cond_init_mono(&c->done_cv);
    if (o->backend == FXCM_GLOO) {
        rc = fxcm__gloo_open(o, c->timeout_ms, &c->gloo, err, errlen);
        if (!rc) {
            int prc = pthread_create(&c->worker, NULL, gloo_worker, c);
            if (prc)
                rc = fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED,
                              "comm: cannot start its thread: %s", strerror(prc));
            else
                c->has_worker = true;
        }
    } else {
#ifdef FXCM_HAVE_NCCL
        rc = fxcm__nccl_open(o, c->timeout_ms, &c->nccl, err, errlen);
#endif
    }
    if (rc) {
        fxcm_free(c);
        return rc;
    }
    c->progress_ns = now_ns();
    *out = c;
    return 0;
}

/* Starts op (c->mu held): a ticket, or a code (ABORTED after a failure). */
static int start_locked(fxcm_comm *c, fxcm__op *op, uint64_t *ticket, char *err, size_t errlen) {
    if (c->status)
        return fxu_fail(err, errlen, FXS_ABORTED, "comm (rank %d of %d) failed earlier: %s",
                        c->rank, c->world, c->msg);
    if (c->started - c->done >= FXCM_MAX_PENDING)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED,
                        "comm: %d operations are pending already (wait for some)",
                        FXCM_MAX_PENDING);
    op->ticket = c->started + 1;
    unsigned slot = (unsigned)(op->ticket % FXCM_MAX_PENDING);
#ifdef FXCM_HAVE_NCCL
    if (c->nccl) {
        int rc = fxcm__nccl_launch(c->nccl, op, slot, err, errlen);
        if (rc) {
            latch(c, rc, err ? err : "launch failed");
            return rc;
        }
    }
#endif
    c->ring[slot] = *op;
    if (c->done == c->started)
        c->progress_ns = now_ns(); /* the no-progress clock starts with the queue */
    c->started = op->ticket;
    *ticket = op->ticket;
    pthread_cond_signal(&c->work_cv);
    return 0;
}

static int start(fxcm_comm *c, fxcm__op *op, uint64_t *ticket, char *err, size_t errlen) {
    pthread_mutex_lock(&c->mu);
    int rc = start_locked(c, op, ticket, err, errlen);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int check_buf(fxcm_comm *c, const float *buf, size_t n, const char *what, char *err,
                     size_t errlen) {
    if (!c)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: %s on no comm", what);
    if (n && !buf)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: %s of %zu floats at NULL",
                        what, n);
    if (n > SIZE_MAX / sizeof(float) / 2)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: %s of %zu floats: too many",
                        what, n);
    return 0;
}

int fxcm_allreduce_start(fxcm_comm *c, float *buf, size_t n, uint64_t *ticket, char *err,
                         size_t errlen) {
    int rc = check_buf(c, buf, n, "allreduce", err, errlen);
    if (rc)
        return rc;
    if (!ticket)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: allreduce without a ticket");
    fxcm__op op = {.kind = FXCM__ALLREDUCE, .buf = buf, .n = n};
    return start(c, &op, ticket, err, errlen);
}

/* The result of ticket t once it is done or the comm failed (c->mu held). */
static int outcome_locked(fxcm_comm *c, uint64_t t, char *err, size_t errlen) {
    if (c->done >= t)
        return 0;
    return fxu_fail(err, errlen, c->status, "%s", c->msg);
}

static int wait_gloo(fxcm_comm *c, uint64_t t, char *err, size_t errlen) {
    pthread_mutex_lock(&c->mu);
    while (c->done < t && !c->status) {
        uint64_t limit = c->progress_ns +
                         (uint64_t)(c->timeout_ms + FXCM_WAIT_GRACE_MS) * 1000000u;
        if (now_ns() >= limit) {
            char why[256];
            snprintf(why, sizeof why,
                     "gloo (rank %d of %d): no operation completed in %lld ms (the timeout)",
                     c->rank, c->world, (long long)c->timeout_ms);
            bool first = latch(c, FXS_DEADLINE_EXCEEDED, why);
            pthread_mutex_unlock(&c->mu);
            if (first)
                backend_fail_all(c, why);
            pthread_mutex_lock(&c->mu);
            break;
        }
        struct timespec dl = ts_of_ns(limit);
        pthread_cond_timedwait(&c->done_cv, &c->mu, &dl);
    }
    int rc = outcome_locked(c, t, err, errlen);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

#ifdef FXCM_HAVE_NCCL
static int wait_nccl(fxcm_comm *c, uint64_t t, char *err, size_t errlen) {
    pthread_mutex_lock(&c->mu);
    if (c->done >= t || c->status) {
        int rc = outcome_locked(c, t, err, errlen);
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    pthread_mutex_unlock(&c->mu);
    /* the stream completes in order: t's event covers every earlier one */
    char why[FXS_ERRLEN];
    int rc = fxcm__nccl_wait(c->nccl, (unsigned)(t % FXCM_MAX_PENDING), c->timeout_ms, why,
                             sizeof why);
    pthread_mutex_lock(&c->mu);
    bool first = false;
    if (rc)
        first = latch(c, rc, why);
    else if (c->done < t && !c->status) {
        c->done = t;
        pthread_cond_broadcast(&c->done_cv);
    }
    rc = outcome_locked(c, t, err, errlen);
    pthread_mutex_unlock(&c->mu);
    if (first)
        backend_fail_all(c, why);
    return rc;
}
#endif

int fxcm_wait(fxcm_comm *c, uint64_t ticket, char *err, size_t errlen) {
    if (!c)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: wait on no comm");
    pthread_mutex_lock(&c->mu);
    uint64_t started = c->started;
    pthread_mutex_unlock(&c->mu);
    if (ticket == 0 || ticket > started)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "comm: ticket %llu was never started (last: %llu)",
                        (unsigned long long)ticket, (unsigned long long)started);
#ifdef FXCM_HAVE_NCCL
    if (c->nccl)
        return wait_nccl(c, ticket, err, errlen);
#endif
    return wait_gloo(c, ticket, err, errlen);
}

static int run_blocking(fxcm_comm *c, fxcm__op *op, char *err, size_t errlen) {
    uint64_t t = 0;
    int rc = start(c, op, &t, err, errlen);
    return rc ? rc : fxcm_wait(c, t, err, errlen);
}

int fxcm_allreduce(fxcm_comm *c, float *buf, size_t n, char *err, size_t errlen) {
    int rc = check_buf(c, buf, n, "allreduce", err, errlen);
    if (rc)
        return rc;
    fxcm__op op = {.kind = FXCM__ALLREDUCE, .buf = buf, .n = n};
    return run_blocking(c, &op, err, errlen);
}

int fxcm_broadcast(fxcm_comm *c, float *buf, size_t n, int root, char *err, size_t errlen) {
    int rc = check_buf(c, buf, n, "broadcast", err, errlen);
    if (rc)
        return rc;
    if (root < 0 || root >= c->world)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "comm: broadcast root %d is not in a world of %d", root, c->world);
    fxcm__op op = {.kind = FXCM__BROADCAST, .buf = buf, .n = n, .root = root};
    return run_blocking(c, &op, err, errlen);
}

int fxcm_barrier(fxcm_comm *c, char *err, size_t errlen) {
    if (!c)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "comm: barrier on no comm");
    fxcm__op op = {.kind = FXCM__BARRIER};
    return run_blocking(c, &op, err, errlen);
}

void fxcm_abort(fxcm_comm *c) {
    if (!c || atomic_exchange(&c->aborted, true))
        return;
    char why[128];
    snprintf(why, sizeof why, "comm (rank %d of %d) aborted", c->rank, c->world);
#ifdef FXCM_HAVE_NCCL
    /* first: a start may hold c->mu while NCCL settles an enqueue; the
     * abort ends that wait */
    if (c->nccl)
        fxcm__nccl_abort(c->nccl);
#endif
    pthread_mutex_lock(&c->mu);
    /* an earlier failure keeps its code: it says why better */
    latch(c, FXS_ABORTED, why);
    pthread_mutex_unlock(&c->mu);
    /* after the latch: the worker's operation then fails with an
     * IoException, but the comm already says ABORTED */
    if (c->gloo)
        fxcm__gloo_fail_all(c->gloo, why);
}

void fxcm_free(fxcm_comm *c) {
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    latch(c, FXS_ABORTED, "comm closed");
    pthread_cond_broadcast(&c->work_cv);
    pthread_mutex_unlock(&c->mu);
    if (c->gloo) {
        /* wakes the worker out of a running operation; the peers see the
         * connections close */
        fxcm__gloo_fail_all(c->gloo, "comm closed by its rank");
    }
    if (c->has_worker)
        pthread_join(c->worker, NULL);
    fxcm__gloo_free(c->gloo);
#ifdef FXCM_HAVE_NCCL
    fxcm__nccl_free(c->nccl);
#endif
    pthread_cond_destroy(&c->work_cv);
    pthread_cond_destroy(&c->done_cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int fxcm_rank(const fxcm_comm *c) { return c ? c->rank : -1; }
int fxcm_world(const fxcm_comm *c) { return c ? c->world : 0; }
fxcm_backend fxcm_comm_backend(const fxcm_comm *c) { return c ? c->backend : 0; }
