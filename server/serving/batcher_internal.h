/*
 * batcher_internal.h - what the batcher's files share; not an API. Only
 * serving/batcher.c and serving/batch_reaper.c include it; its functions
 * carry the internal prefix fxb__.
 *
 *   batcher.c       submit, batch formation, instances, create/free
 *   batch_reaper.c  the reaper thread: answers requests whose deadline passed
 */
#ifndef FXB_BATCHER_INTERNAL_H
#define FXB_BATCHER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "serving/batch_policy.h"
#include "serving/batcher.h"

/* A request's life: QUEUED (in a level's list) -> TAKEN (an instance copies
 * its inputs; nobody else touches it) -> RUNNING (its batch runs; the reaper
 * may answer it) -> DONE (answered). Only QUEUED->DONE (under the lock) and
 * RUNNING->DONE / RUNNING->TAKEN (compare-and-swap) race. */
enum { RQ_QUEUED, RQ_TAKEN, RQ_RUNNING, RQ_DONE };

typedef struct req {
    fxb_request r;
    uint32_t level;      /* 0-based */
    uint64_t received;
    int64_t deadline;    /* INT64_MAX: none */
    int64_t samples;     /* dim 0 of the inputs; -1: cannot join a batch */
    atomic_int state;
    struct req *prev, *next;
} req;

typedef struct batch {
    req **r;
    int n;
    pthread_t thread;   /* running it: an instance's, or the submitter's (inline) */
    struct batch *next; /* in the running list */
} batch;

typedef struct {
    req *head, *tail;
} level;

struct fxb_batcher {
    const fxg_graph *g;
    fxb_config c;
    bool batchable;        /* every input and output has a -1 first dim */
    unsigned *out_var;     /* per output: bit k set when dim k is -1 */
    fxb_batch_fn on_batch;
    void *batch_data;
    int n_in, n_out;

    pthread_mutex_t mu;
    pthread_cond_t cv;     /* instances: work or stop */
    pthread_cond_t reaper_cv;
    level lv[FXB_MAX_LEVELS];
    uint32_t n_queued;
    batch *running;
    int64_t reaper_wake;   /* when the reaper plans to look next */
    bool stop;

    fxb_waiter waiter;     /* whether a partial batch waits (batch_policy.h) */
    double wait_share;     /* fxb_situation.wait_share */

    fx_device device;      /* the graph's: the instances' contexts run there */
    uint64_t weights_bytes;
    atomic_size_t arena[FXB_MAX_INSTANCES]; /* each instance's arena capacity */
    atomic_int next_slot;

    pthread_t threads[FXB_MAX_INSTANCES + 1]; /* instances, then the reaper */
    int nthreads;
    atomic_int refs;       /* the owner + each thread that runs */

    /* A lone request that would go at once runs on the submitting thread
     * (the RPC handler) with this instance, saving the hand-off to an
     * instance thread; at most c.instances batches run at a time either way. */
    struct instance *inl;  /* NULL: not offered (a GPU device, no slot left) */
    bool inl_busy;
    int n_running;         /* batches running, inline included */
    /* Instance threads waiting on cv: for work (the queue was empty), for
     * a slot (an inline batch holds it), or until timed_min at the latest
     * (a partial batch waits; INT64_MIN when unknown: several waited).
     * fxb_submit wakes one only when the new request needs it. */
    int idle_waiters, slot_waiters, timed_waiters;
    int64_t timed_min;

    /* Requests queued or in a running batch: +1 when fxb_submit queues one,
     * -1 just before its done call. Read without the lock (fxb_pressure) by
     * training's inference-first yield at every step boundary. */
    atomic_int pressure;
    _Atomic uint64_t last_active; /* ns: the last submit or answer */
};

extern __thread fxb_batcher *fxb__tl_batcher; /* the batcher whose thread this is */

/* Under b->mu: takes q out of its level's list. */
void fxb__unlink_req(fxb_batcher *b, req *q);
/* Drops one reference; the last frees b. */
void fxb__release(fxb_batcher *b);
void fxb__timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t until_mono);
/* The reaper thread's body (arg: the batcher). */
void *fxb__reaper_main(void *arg);

#endif
