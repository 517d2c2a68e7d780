/* batcher.c - see batcher.h. */
#include "serving/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "serving/devices.h"
#include "base/status.h"
#include "base/util.h"

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

/* Staging buffers of one instance, grown as needed. */
typedef struct {
    void **buf;
    size_t *cap;
    int n;
} stage;

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
    uint64_t last_arrival; /* ns */
    double gap_ns;         /* moving average of the time between arrivals */
    bool stop;

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
};

static __thread fxb_batcher *tl_batcher; /* the batcher whose thread this is */

uint64_t fxb_mono_ns(void) { return fxu_mono_ns(); }

/* ---------------------------------------------------------------- config */

void fxb_config_default(fxb_config *c)
{
    *c = (fxb_config){ .enabled = true, .max_batch_size = FXB_DEFAULT_MAX_BATCH,
                       .max_queue_delay_us = FXB_DEFAULT_DELAY_US,
                       .max_queue_size = FXB_DEFAULT_QUEUE, .priority_levels = 1,
                       .default_priority = 1, .instances = 1,
                       .arena_keep_bytes = FXB_ARENA_KEEP_BYTES };
}

static bool has_lengths_input(const fxg_graph *g)
{
    for (int i = 0; i < fxg_num_inputs(g); i++) {
        const fxg_tensor_info *t = fxg_input(g, i);
        if (t->ndim == 1 && (t->dtype == FX_I32 || t->dtype == FX_I64))
            return true;
    }
    return false;
}

int fxb_config_check(const fxb_config *c, const fxg_graph *g, char *err, size_t errlen)
{
    if (c->max_batch_size < 1 || c->max_batch_size > 1u << 20) {
        snprintf(err, errlen, "max_batch_size %u is not in [1, 1048576]", c->max_batch_size);
        return -1;
    }
    if (c->max_queue_delay_us > 10000000) {
        snprintf(err, errlen, "max_queue_delay_us %llu is over 10 s",
                 (unsigned long long)c->max_queue_delay_us);
        return -1;
    }
    if (c->n_preferred < 0 || c->n_preferred > FXB_MAX_PREFERRED) {
        snprintf(err, errlen, "at most %d preferred_batch_sizes", FXB_MAX_PREFERRED);
        return -1;
    }
    for (int i = 0; i < c->n_preferred; i++) {
        if (c->preferred[i] < 1 || c->preferred[i] > c->max_batch_size) {
            snprintf(err, errlen, "preferred batch size %u is not in [1, max_batch_size %u]",
                     c->preferred[i], c->max_batch_size);
            return -1;
        }
        if (i && c->preferred[i] <= c->preferred[i - 1]) {
            snprintf(err, errlen, "preferred_batch_sizes must be ascending without repeats");
            return -1;
        }
    }
    if (c->max_queue_size < 1 || c->max_queue_size > 1u << 20) {
        snprintf(err, errlen, "max_queue_size %u is not in [1, 1048576]", c->max_queue_size);
        return -1;
    }
    if (c->timeout_us > 3600ull * 1000000u) {
        snprintf(err, errlen, "timeout_us %llu is over an hour",
                 (unsigned long long)c->timeout_us);
        return -1;
    }
    if (c->priority_levels < 1 || c->priority_levels > FXB_MAX_LEVELS) {
        snprintf(err, errlen, "priority_levels %u is not in [1, %d]", c->priority_levels,
                 FXB_MAX_LEVELS);
        return -1;
    }
    if (c->default_priority < 1 || c->default_priority > c->priority_levels) {
        snprintf(err, errlen, "default_priority %u is not in [1, priority_levels %u]",
                 c->default_priority, c->priority_levels);
        return -1;
    }
    if (c->instances < 1 || c->instances > FXB_MAX_INSTANCES) {
        snprintf(err, errlen, "instances %u is not in [1, %d]", c->instances, FXB_MAX_INSTANCES);
        return -1;
    }
    if (c->pad_variable_dims && g && !has_lengths_input(g)) {
        snprintf(err, errlen, "pad_variable_dims: the model has no per-sample lengths input "
                 "(1-D INT32/INT64), so padding would change its results; requests of "
                 "different lengths are batched by length instead");
        return -1;
    }
    return 0;
}

/* The arena capacity of one one-sample forward pass of g in a fresh
 * context on its device; 0 when none runs. Integer inputs are 0, except 1-D
 * ones (per-sample lengths: 1 is within every probe size). */
static uint64_t one_sample_arena(const fxg_graph *g)
{
    fx_ctx *ctx = fx_ctx_create(fxg_device(g));
    int n_in = fxg_num_inputs(g), n_out = fxg_num_outputs(g);
    fx_tensor **t = calloc((size_t)(n_in + n_out) + 1, sizeof *t);
    uint64_t bytes = 0;
    static const int64_t sizes[] = { 1, 8, 32 };
    for (int a = 0; ctx && t && !bytes && a < 3; a++) {
        fx_ctx_set_grad(ctx, false);
        fx_ctx_set_training(ctx, false);
        for (int i = 0; i < n_in; i++) {
            const fxg_tensor_info *x = fxg_input(g, i);
            int64_t shape[FX_MAX_DIMS];
            for (int k = 0; k < x->ndim; k++)
                shape[k] = x->shape[k] >= 0 ? x->shape[k] : k == 0 ? 1 : sizes[a];
            double v = x->dtype == FX_F32 ? 0.5 : x->ndim == 1 ? 1 : 0;
            t[i] = fx_full(ctx, x->dtype, x->ndim, shape, v);
        }
        char err[256];
        if (fxg_forward(g, ctx, t, t + n_in, err, sizeof err) == 0)
            bytes = fx_ctx_arena_capacity(ctx);
        fx_ctx_free(ctx); /* a fresh one per try: capacity is the high-water mark */
        ctx = bytes || a == 2 ? NULL : fx_ctx_create(fxg_device(g));
    }
    fx_ctx_free(ctx);
    free(t);
    return bytes;
}

void fxb_min_need(const fxg_graph *g, const fxb_config *c, fx_device dev, fxb_need *out)
{
    out->weights = fxsv_params_bytes(fxg_params(g));
    out->contexts = (int)c->instances + (dev.type == FX_DEV_CPU && c->instances < FXB_MAX_INSTANCES);
    out->arena = one_sample_arena(g);
    out->total = out->weights + (uint64_t)out->contexts * out->arena;
}

/* ----------------------------------------------------------------- queue */

static void unlink_req(fxb_batcher *b, req *q)
{
    level *l = &b->lv[q->level];
    if (q->prev)
        q->prev->next = q->next;
    else
        l->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        l->tail = q->prev;
    q->prev = q->next = NULL;
    b->n_queued--;
}

static int64_t req_samples(const fxb_batcher *b, const fxb_request *r)
{
    if (!b->batchable)
        return -1;
    int64_t n = r->inputs[0].ndim ? r->inputs[0].shape[0] : -1;
    for (int i = 0; i < b->n_in; i++)
        if (r->inputs[i].ndim < 1 || r->inputs[i].shape[0] != n)
            return -1;
    return n;
}

static int pick(fxb_batcher *b, req **out, int64_t *wait_until);
static void run(fxb_batcher *b, struct instance *in, req **r, int n);
static void release(fxb_batcher *b);

/* Under b->mu, just after a request was queued: when the next batch would
 * go at once and a slot is free, runs it on this thread with the inline
 * instance; returns true then, with b->mu released. */
static bool run_inline(fxb_batcher *b)
{
    if (!b->inl || b->inl_busy || b->stop || b->n_running >= (int)b->c.instances)
        return false;
    req *stackr[64];
    size_t cap = b->c.enabled ? b->c.max_batch_size : 1;
    req **rr = cap <= 64 ? stackr : malloc(cap * sizeof *rr);
    int64_t until = 0;
    int n = rr ? pick(b, rr, &until) : -1;
    if (n <= 0) { /* it should wait for more: the instances do that */
        if (rr != stackr)
            free(rr);
        return false;
    }
    b->inl_busy = true;
    b->n_running++;
    batch bt = { rr, n, pthread_self(), b->running };
    b->running = &bt;
    atomic_fetch_add(&b->refs, 1); /* a done call may free the model, and b's owner */
    pthread_mutex_unlock(&b->mu);
    fxb_batcher *prev = tl_batcher;
    tl_batcher = b; /* fxb_free from a done call here must not wait for this batch */
    run(b, b->inl, rr, n);
    tl_batcher = prev;
    pthread_mutex_lock(&b->mu);
    b->n_running--;
    b->inl_busy = false;
    batch **pp = &b->running;
    while (*pp != &bt)
        pp = &(*pp)->next;
    *pp = bt.next;
    pthread_cond_broadcast(&b->cv); /* instances waiting for the slot, or for work */
    if (b->stop)
        pthread_cond_signal(&b->reaper_cv); /* it ends once nothing runs */
    pthread_mutex_unlock(&b->mu);
    for (int j = 0; j < n; j++)
        free(rr[j]);
    if (rr != stackr)
        free(rr);
    release(b);
    return true;
}

int fxb_submit(fxb_batcher *b, const fxb_request *r, char *err, size_t errlen)
{
    uint32_t prio = r->priority ? r->priority : b->c.default_priority;
    if (prio > b->c.priority_levels) {
        snprintf(err, errlen, "priority %u is not in [1, %u] (the model's priority_levels)", prio,
                 b->c.priority_levels);
        return FXS_INVALID_ARGUMENT;
    }
    req *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    q->r = *r;
    q->level = prio - 1;
    q->received = r->received_ns ? r->received_ns : fxb_mono_ns();
    q->deadline = r->deadline_ns > 0 ? r->deadline_ns : INT64_MAX;
    uint64_t tmo = r->timeout_us ? r->timeout_us : b->c.timeout_us;
    if (tmo && (int64_t)(q->received + tmo * 1000u) < q->deadline)
        q->deadline = (int64_t)(q->received + tmo * 1000u);
    q->samples = req_samples(b, r);
    atomic_init(&q->state, RQ_QUEUED);

    pthread_mutex_lock(&b->mu);
    if (b->stop || b->n_queued >= b->c.max_queue_size) {
        bool stopping = b->stop;
        pthread_mutex_unlock(&b->mu);
        free(q);
        if (stopping)
            snprintf(err, errlen, "the model is being unloaded");
        else
            snprintf(err, errlen, "the model's queue is full (max_queue_size %u requests); "
                     "retry later", b->c.max_queue_size);
        return FXS_UNAVAILABLE;
    }
    if (b->last_arrival) {
        double gap = (double)(q->received > b->last_arrival ? q->received - b->last_arrival : 0);
        b->gap_ns += (gap - b->gap_ns) / 8;
    }
    b->last_arrival = q->received;
    level *l = &b->lv[q->level];
    q->prev = l->tail;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    b->n_queued++;
    if (q->deadline < b->reaper_wake)
        pthread_cond_signal(&b->reaper_cv);
    if (r->may_run_inline && run_inline(b))
        return 0; /* ran here, answered, b->mu released */
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

const fxb_config *fxb_get_config(const fxb_batcher *b) { return &b->c; }

/* ----------------------------------------------------- forming a batch */

/* Whether q can join a batch whose first request is h. */
static bool compatible(const fxb_batcher *b, const req *h, const req *q)
{
    if (h->samples < 0 || q->samples < 0)
        return false;
    for (int i = 0; i < b->n_in; i++) {
        const fxb_input *x = &h->r.inputs[i], *y = &q->r.inputs[i];
        const fxg_tensor_info *t = fxg_input(b->g, i);
        if (x->ndim != y->ndim)
            return false;
        for (int k = 1; k < x->ndim; k++) {
            bool var = k < t->ndim && t->shape[k] < 0;
            if (x->shape[k] != y->shape[k] && !(var && b->c.pad_variable_dims))
                return false;
        }
    }
    return true;
}

static int64_t clamp_ns(uint64_t t) { return t > INT64_MAX ? INT64_MAX : (int64_t)t; }

/* Picks the next batch from the queue into out (capacity max_batch_size or
 * 1): returns its request count, 0 when the queue is empty, or -1 with
 * *wait_until when the batch should wait for more requests. Under b->mu. */
static int pick(fxb_batcher *b, req **out, int64_t *wait_until)
{
    req *h = NULL;
    for (uint32_t l = 0; l < b->c.priority_levels && !h; l++)
        h = b->lv[l].head;
    if (!h)
        return 0;
    int n = 0;
    out[n++] = h;
    int64_t total = h->samples, cap = b->c.max_batch_size;
    uint64_t oldest = h->received;
    if (b->c.enabled && h->samples >= 0 && h->samples < cap) {
        for (uint32_t l = 0; l < b->c.priority_levels && total < cap; l++)
            for (req *q = b->lv[l].head; q && total < cap; q = q->next)
                if (q != h && total + q->samples <= cap && compatible(b, h, q)) {
                    out[n++] = q;
                    total += q->samples;
                    if (q->received < oldest)
                        oldest = q->received;
                }
    }
    int64_t top_pref = b->c.n_preferred ? b->c.preferred[b->c.n_preferred - 1] : cap;
    /* a batch of the largest preferred size goes at once, like a full one */
    bool full = !b->c.enabled || h->samples < 0 || total >= cap || total >= top_pref;
    int64_t due = clamp_ns(oldest + b->c.max_queue_delay_us * 1000u);
    /* Waiting only pays when another request is likely before the delay
     * ends: when requests come further apart than that (a lone client),
     * the batch goes at once instead of adding the delay to its latency. */
    bool expect_more = (double)b->last_arrival + b->gap_ns < (double)due;
    if (!full && !b->stop && expect_more && (int64_t)fxb_mono_ns() < due) {
        *wait_until = due;
        return -1;
    }
    if (b->c.enabled && b->c.n_preferred && h->samples >= 0 && total < cap) {
        /* send the largest preferred size there is (all when none fits) */
        int64_t best = 0;
        for (int i = 0; i < b->c.n_preferred; i++)
            if (b->c.preferred[i] <= total)
                best = b->c.preferred[i];
        if (best >= h->samples) {
            int64_t sum = 0;
            int k = 0;
            for (int i = 0; i < n; i++)
                if (sum + out[i]->samples <= best) {
                    sum += out[i]->samples;
                    out[k++] = out[i];
                }
            n = k;
        }
    }
    for (int i = 0; i < n; i++) {
        unlink_req(b, out[i]);
        atomic_store(&out[i]->state, RQ_TAKEN);
    }
    return n;
}

/* ------------------------------------------------------------ execution */

static void *grow(stage *s, int i, size_t bytes)
{
    if (s->cap[i] < bytes) {
        void *p = realloc(s->buf[i], bytes);
        if (!p)
            return NULL;
        s->buf[i] = p;
        s->cap[i] = bytes;
    }
    return s->buf[i];
}

static size_t numel(const int64_t *shape, int ndim)
{
    size_t n = 1;
    for (int k = 0; k < ndim; k++)
        n *= (size_t)shape[k];
    return n;
}

/* Copies a block of shape s between itself (small) and the rows
 * [row, row + s[0]) of a tensor of shape S (big), S[k] >= s[k]: the padding
 * of big is left alone. */
static void block_copy(char *big, const int64_t *S, char *small, const int64_t *s, int ndim,
                       size_t esize, int64_t row, bool to_big)
{
    if (numel(s, ndim) == 0)
        return;
    if (ndim <= 1) {
        size_t off = ndim ? (size_t)row * esize : 0, len = ndim ? (size_t)s[0] * esize : esize;
        if (to_big)
            memcpy(big + off, small, len);
        else
            memcpy(small, big + off, len);
        return;
    }
    size_t run = esize * (size_t)s[ndim - 1];
    int64_t outer = 1;
    for (int k = 0; k < ndim - 1; k++)
        outer *= s[k];
    int64_t idx[FX_MAX_DIMS] = { 0 };
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = 0;
        for (int k = 0; k < ndim - 1; k++)
            off = off * S[k] + idx[k] + (k == 0 ? row : 0);
        off *= S[ndim - 1];
        if (to_big)
            memcpy(big + (size_t)off * esize, small, run);
        else
            memcpy(small, big + (size_t)off * esize, run);
        small += run;
        for (int k = ndim - 2; k >= 0; k--) {
            if (++idx[k] < s[k])
                break;
            idx[k] = 0;
        }
    }
}


typedef struct instance {
    fx_ctx *ctx;
    int slot;                       /* in fxb_batcher.arena */
    stage in, out;
    fx_tensor **tin, **tout;
    fxb_output *outs;
    int64_t (*bshape)[FX_MAX_DIMS]; /* per input: the batch's shape */
    void **owned;                   /* per output: a request's cut copy */
} instance;

/* Builds input i of the batch r[0..n) as a tensor of ctx. */
static fx_tensor *batch_input(fxb_batcher *b, instance *in, req **r, int n, int i,
                              int64_t *shape)
{
    const fxg_tensor_info *t = fxg_input(b->g, i);
    const fxb_input *x0 = &r[0]->r.inputs[i];
    if (n == 1)
        return fx_tensor_from_host(in->ctx, t->dtype, x0->ndim, x0->shape, x0->data);
    memcpy(shape, x0->shape, sizeof(int64_t) * (size_t)x0->ndim);
    shape[0] = 0;
    bool padded = false;
    for (int j = 0; j < n; j++) {
        const fxb_input *x = &r[j]->r.inputs[i];
        shape[0] += x->shape[0];
        for (int k = 1; k < x->ndim; k++) {
            padded |= x->shape[k] != shape[k];
            if (x->shape[k] > shape[k])
                shape[k] = x->shape[k];
        }
    }
    size_t esize = fx_dtype_size(t->dtype), bytes = numel(shape, x0->ndim) * esize;
    char *buf = grow(&in->in, i, bytes ? bytes : 1);
    if (!buf)
        return NULL;
    if (padded)
        memset(buf, 0, bytes);
    int64_t row = 0;
    for (int j = 0; j < n; j++) {
        const fxb_input *x = &r[j]->r.inputs[i];
        block_copy(buf, shape, (char *)x->data, x->shape, x->ndim, esize, row, true);
        row += x->shape[0];
    }
    return fx_tensor_from_host(in->ctx, t->dtype, x0->ndim, shape, buf);
}

/* The size request q had alone along output dim k whose batch size is sz: a
 * padded size is cut back to q's size along the input dim it came from. */
static int64_t own_size(const fxb_batcher *b, const req *q, int64_t (*bshape)[FX_MAX_DIMS],
                        int64_t sz)
{
    if (!b->c.pad_variable_dims)
        return sz;
    for (int i = 0; i < b->n_in; i++)
        for (int k = 1; k < q->r.inputs[i].ndim; k++)
            if (bshape[i][k] == sz && q->r.inputs[i].shape[k] != sz)
                return q->r.inputs[i].shape[k];
    return sz;
}

/* Answers q (unless the reaper did) with status/err or its outputs. */
static void finish(req *q, int status, const char *err, const fxb_output *outs,
                   const fxb_timing *t)
{
    int expect = RQ_RUNNING;
    if (!atomic_compare_exchange_strong(&q->state, &expect, RQ_DONE))
        return;
    q->r.done(q->r.user, status, err, outs, t);
}

static void run(fxb_batcher *b, instance *in, req **r, int n);

static fx_ctx *instance_ctx(const fxb_batcher *b)
{
    fx_ctx *ctx = fx_ctx_create(b->device);
    if (ctx) {
        fx_ctx_set_grad(ctx, false);
        fx_ctx_set_training(ctx, false);
    }
    return ctx;
}

/* After a batch: a device error queued by its kernels (INTERNAL), then the
 * model's memory limit over the weights and every instance's arena
 * (RESOURCE_EXHAUSTED; *fresh: this instance should drop its arena). */
static int device_check(fxb_batcher *b, instance *in, char *err, size_t errlen, bool *fresh)
{
    char msg[384], name[32];
    if (fx_device_sync(b->device, msg, sizeof msg) != FX_OK) {
        snprintf(err, errlen, "device %s: %s", fx_device_str(b->device, name, sizeof name),
                 msg[0] ? msg : "the device reported an error");
        return FXS_INTERNAL;
    }
    atomic_store(&b->arena[in->slot], fx_ctx_arena_capacity(in->ctx));
    uint64_t used = b->weights_bytes;
    for (int i = 0; i < FXB_MAX_INSTANCES; i++) /* unused slots stay 0 */
        used += atomic_load(&b->arena[i]);
    int rc = fxsv_check_memory_limit("the model's weights and batches", b->device, used,
                                    b->c.memory_limit_bytes, err, errlen);
    *fresh = rc != 0;
    return rc;
}

static uint64_t stage_bytes(const stage *s)
{
    uint64_t n = 0;
    for (int i = 0; i < s->n; i++)
        n += s->cap[i];
    return n;
}

static void stage_release(stage *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->buf[i]);
        s->buf[i] = NULL;
        s->cap[i] = 0;
    }
}

/* What an instance holds between batches: its arena and staging buffers. */
static uint64_t instance_bytes(const instance *in)
{
    return fx_ctx_arena_capacity(in->ctx) + stage_bytes(&in->in) + stage_bytes(&in->out);
}

/* Gives back what the instance holds: a new, empty context in place of its
 * own (the engine has no call that shrinks an arena; the old context stays
 * when no new one can be made), and no staging buffers. After a batch over
 * the memory limit, or one that left more than arena_keep_bytes. */
static void instance_refresh(fxb_batcher *b, instance *in)
{
    stage_release(&in->in);
    stage_release(&in->out);
    fx_ctx *ctx = instance_ctx(b);
    if (!ctx)
        return;
    fx_ctx_free(in->ctx);
    in->ctx = ctx;
    atomic_store(&b->arena[in->slot], 0);
}

/* The batch did not work as one (a forward error, an output whose first dim
 * is not the batch): runs each request that is still unanswered alone, so a
 * request gets the result it would have alone. */
static void run_each(fxb_batcher *b, instance *in, req **r, int n)
{
    for (int j = 0; j < n; j++) {
        int expect = RQ_RUNNING;
        if (atomic_compare_exchange_strong(&r[j]->state, &expect, RQ_TAKEN))
            run(b, in, &r[j], 1);
    }
}

static void run(fxb_batcher *b, instance *in, req **r, int n)
{
    fx_ctx_reset(in->ctx);
    uint64_t t0 = fxb_mono_ns();
    int64_t (*bshape)[FX_MAX_DIMS] = in->bshape;
    char err[512] = "";
    int status = 0;
    uint64_t total = 0;
    for (int j = 0; j < n; j++)
        total += r[j]->samples > 0 ? (uint64_t)r[j]->samples : 1;
    for (int i = 0; i < b->n_in && !status; i++) {
        in->tin[i] = batch_input(b, in, r, n, i, bshape[i]);
        if (n == 1)
            memcpy(bshape[i], r[0]->r.inputs[i].shape, sizeof bshape[i]);
        if (!in->tin[i]) {
            status = FXS_RESOURCE_EXHAUSTED;
            snprintf(err, sizeof err, "input '%s': %s", fxg_input(b->g, i)->name,
                     fx_ctx_error(in->ctx)[0] ? fx_ctx_error(in->ctx) : "out of memory");
        }
    }
    /* The inputs are copied: the requests' memory is no longer needed. */
    for (int j = 0; j < n; j++)
        atomic_store(&r[j]->state, RQ_RUNNING);
    uint64_t t1 = fxb_mono_ns();
    if (!status && fxg_forward(b->g, in->ctx, in->tin, in->tout, err, sizeof err) != 0) {
        if (n > 1) {
            run_each(b, in, r, n);
            return;
        }
        /* out of memory is the server's limit, not the request's fault;
         * anything else: inputs that pass the checks but disagree */
        status = fx_ctx_status(in->ctx) == FX_ERR_NOMEM ? FXS_RESOURCE_EXHAUSTED
                                                        : FXS_INVALID_ARGUMENT;
    }
    uint64_t t2 = fxb_mono_ns();
    for (int o = 0; o < b->n_out && !status; o++) {
        const fx_tensor *t = in->tout[o];
        if (n > 1 && (t->ndim < 1 || (uint64_t)t->shape[0] != total)) {
            run_each(b, in, r, n);
            return;
        }
        size_t bytes = (size_t)fx_tensor_numel(t) * fx_dtype_size(t->dtype);
        void *buf = grow(&in->out, o, bytes ? bytes : 1);
        if (!buf || fx_tensor_to_host(t, buf, bytes) != FX_OK) {
            status = FXS_RESOURCE_EXHAUSTED;
            snprintf(err, sizeof err, "out of memory copying output '%s'",
                     fxg_output(b->g, o)->name);
        }
    }
    /* a device error explains whatever else failed (an output copy), so it
     * comes first; the memory limit only matters for a batch that worked */
    bool fresh = false;
    char derr[512];
    int dst = device_check(b, in, derr, sizeof derr, &fresh);
    if (dst == FXS_INTERNAL || (dst && !status)) {
        status = dst;
        snprintf(err, sizeof err, "%s", derr);
    }
    uint64_t t3 = fxb_mono_ns();
    /* Statistics first: the last done call may free what on_batch reports to. */
    if (b->on_batch)
        b->on_batch(b->batch_data, status == 0, total, t1 - t0, t2 - t1, t3 - t2);
    fxb_timing tm = { .input_ns = t1 - t0, .infer_ns = t2 - t1, .output_ns = t3 - t2,
                      .batch_size = total };
    int64_t row = 0;
    for (int j = 0; j < n; j++) {
        req *q = r[j];
        tm.queue_ns = t0 > q->received ? t0 - q->received : 0;
        if (atomic_load(&q->state) != RQ_RUNNING) { /* answered by the reaper */
            row += q->samples;
            continue;
        }
        if (status) {
            finish(q, status, err, NULL, &tm);
            continue;
        }
        void **owned = in->owned;
        memset(owned, 0, sizeof *owned * (size_t)b->n_out);
        int fail = 0;
        for (int o = 0; o < b->n_out && !fail; o++) {
            const fx_tensor *t = in->tout[o];
            fxb_output *ou = &in->outs[o];
            size_t esize = fx_dtype_size(t->dtype);
            ou->dtype = t->dtype;
            ou->ndim = t->ndim;
            memcpy(ou->shape, t->shape, sizeof ou->shape);
            if (n == 1) {
                ou->data = in->out.buf[o];
                ou->bytes = numel(t->shape, t->ndim) * esize;
                continue;
            }
            ou->shape[0] = q->samples;
            bool cut = false;
            for (int k = 1; k < t->ndim; k++) {
                ou->shape[k] = b->out_var[o] & (1u << k) ? own_size(b, q, bshape, t->shape[k])
                                                         : t->shape[k];
                cut |= ou->shape[k] != t->shape[k];
            }
            ou->bytes = numel(ou->shape, ou->ndim) * esize;
            if (!cut) {
                size_t rowbytes = numel(t->shape + 1, t->ndim - 1) * esize;
                ou->data = (char *)in->out.buf[o] + (size_t)row * rowbytes;
                continue;
            }
            if (!(owned[o] = malloc(ou->bytes ? ou->bytes : 1))) {
                fail = 1;
                break;
            }
            block_copy(in->out.buf[o], t->shape, owned[o], ou->shape, ou->ndim, esize, row,
                       false);
            ou->data = owned[o];
        }
        if (fail)
            finish(q, FXS_RESOURCE_EXHAUSTED, "out of memory splitting the batch", NULL, &tm);
        else
            finish(q, 0, "", in->outs, &tm);
        for (int o = 0; o < b->n_out; o++)
            free(owned[o]);
        row += q->samples;
    }
    if (fresh || instance_bytes(in) > b->c.arena_keep_bytes)
        instance_refresh(b, in);
}

static void instance_free(instance *in);

static void release(fxb_batcher *b)
{
    if (atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    if (b->inl) {
        instance_free(b->inl);
        free(b->inl);
    }
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_cond_destroy(&b->reaper_cv);
    free(b->out_var);
    free(b);
}

static bool instance_init(fxb_batcher *b, instance *in)
{
    memset(in, 0, sizeof *in);
    in->ctx = instance_ctx(b);
    in->slot = atomic_fetch_add(&b->next_slot, 1);
    in->in.n = b->n_in;
    in->out.n = b->n_out;
    in->in.buf = calloc((size_t)b->n_in + 1, sizeof(void *));
    in->in.cap = calloc((size_t)b->n_in + 1, sizeof(size_t));
    in->out.buf = calloc((size_t)b->n_out + 1, sizeof(void *));
    in->out.cap = calloc((size_t)b->n_out + 1, sizeof(size_t));
    in->tin = calloc((size_t)b->n_in + 1, sizeof(fx_tensor *));
    in->tout = calloc((size_t)b->n_out + 1, sizeof(fx_tensor *));
    in->outs = calloc((size_t)b->n_out + 1, sizeof(fxb_output));
    in->bshape = calloc((size_t)b->n_in + 1, sizeof *in->bshape);
    in->owned = calloc((size_t)b->n_out + 1, sizeof(void *));
    if (!in->ctx || !in->in.buf || !in->in.cap || !in->out.buf || !in->out.cap || !in->tin ||
        !in->tout || !in->outs || !in->bshape || !in->owned)
        return false;
    return true;
}

static void instance_free(instance *in)
{
    for (int i = 0; in->in.buf && i < in->in.n; i++)
        free(in->in.buf[i]);
    for (int i = 0; in->out.buf && i < in->out.n; i++)
        free(in->out.buf[i]);
    free(in->in.buf);
    free(in->in.cap);
    free(in->out.buf);
    free(in->out.cap);
    free(in->tin);
    free(in->tout);
    free(in->outs);
    free(in->bshape);
    free(in->owned);
    fx_ctx_free(in->ctx);
}

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t until_mono)
{
    struct timespec ts = { .tv_sec = until_mono / 1000000000, .tv_nsec = until_mono % 1000000000 };
    pthread_cond_timedwait(cv, mu, &ts);
}

static void *instance_main(void *arg)
{
    fxb_batcher *b = arg;
    tl_batcher = b;
    /* wake at the end of the queue delay, not up to 50 us later (the
     * default timer slack): the delay is what a lone request pays */
    prctl(PR_SET_TIMERSLACK, 1000UL);
    instance in;
    bool ok = instance_init(b, &in);
    size_t cap = b->c.enabled ? b->c.max_batch_size : 1;
    req **r = calloc(cap, sizeof *r);
    pthread_mutex_lock(&b->mu);
    while (ok && r) {
        if (!b->stop && b->n_running >= (int)b->c.instances) {
            pthread_cond_wait(&b->cv, &b->mu); /* an inline batch holds the slot */
            continue;
        }
        int64_t until = 0;
        int n = pick(b, r, &until);
        if (n == 0 && b->stop)
            break;
        if (n <= 0) {
            if (n < 0)
                timed_wait(&b->cv, &b->mu, until);
            else
                pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        batch bt = { r, n, pthread_self(), b->running };
        b->running = &bt;
        b->n_running++;
        pthread_mutex_unlock(&b->mu);
        run(b, &in, r, n);
        pthread_mutex_lock(&b->mu);
        b->n_running--;
        batch **pp = &b->running;
        while (*pp != &bt)
            pp = &(*pp)->next;
        *pp = bt.next;
        if (b->stop) {
            pthread_cond_signal(&b->reaper_cv); /* it ends once nothing runs */
            pthread_cond_broadcast(&b->cv);     /* fxb_free waits for running batches */
        }
        pthread_mutex_unlock(&b->mu);
        for (int j = 0; j < n; j++)
            free(r[j]);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    free(r);
    instance_free(&in);
    release(b);
    return NULL;
}

/* Answers every request whose deadline passed; sleeps until the next one. */
static void *reaper_main(void *arg)
{
    fxb_batcher *b = arg;
    tl_batcher = b;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        int64_t now = (int64_t)fxb_mono_ns(), next = INT64_MAX;
        req *expired = NULL;   /* queued ones, linked through next */
        struct { fxb_done_fn done; void *user; } late[64]; /* running ones */
        int n_late = 0;
        for (uint32_t l = 0; l < b->c.priority_levels; l++)
            for (req *q = b->lv[l].head, *nx; q; q = nx) {
                nx = q->next;
                if (q->deadline <= now) {
                    unlink_req(b, q);
                    atomic_store(&q->state, RQ_DONE);
                    q->next = expired;
                    expired = q;
                } else if (q->deadline < next) {
                    next = q->deadline;
                }
            }
        for (batch *bt = b->running; bt; bt = bt->next)
            for (int j = 0; j < bt->n; j++) {
                req *q = bt->r[j];
                int st = atomic_load(&q->state);
                if (st == RQ_DONE)
                    continue;
                if (q->deadline <= now && st == RQ_RUNNING && n_late < 64) {
                    int expect = RQ_RUNNING;
                    /* copied: the instance frees q once its batch ends */
                    if (atomic_compare_exchange_strong(&q->state, &expect, RQ_DONE))
                        late[n_late++] = (typeof(late[0])){ q->r.done, q->r.user };
                } else if (q->deadline <= now) {
                    next = now + 100000; /* still copying its inputs: look again soon */
                } else if (q->deadline < next) {
                    next = q->deadline;
                }
            }
        if (!expired && !n_late && b->stop && !b->running && b->n_queued == 0)
            break;
        if (!expired && !n_late) {
            b->reaper_wake = next;
            if (next == INT64_MAX)
                pthread_cond_wait(&b->reaper_cv, &b->mu);
            else
                timed_wait(&b->reaper_cv, &b->mu, next);
            b->reaper_wake = 0;
            continue;
        }
        pthread_mutex_unlock(&b->mu);
        for (int j = 0; j < n_late; j++) {
            fxb_timing tm = { .queue_ns = 0 };
            late[j].done(late[j].user, FXS_DEADLINE_EXCEEDED,
                         "the request's deadline passed while its batch ran", NULL, &tm);
        }
        while (expired) {
            req *q = expired;
            expired = q->next;
            fxb_timing tm = { .queue_ns = fxb_mono_ns() - q->received };
            q->r.done(q->r.user, FXS_DEADLINE_EXCEEDED,
                      "the request's deadline passed while it waited in the queue", NULL, &tm);
            free(q);
        }
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    release(b);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static bool first_dim_free(const fxg_tensor_info *t) { return t->ndim >= 1 && t->shape[0] < 0; }

fxb_batcher *fxb_create(const fxg_graph *g, const fxb_config *c, fxb_batch_fn on_batch,
                        void *batch_data, char *err, size_t errlen)
{
    if (fxb_config_check(c, g, err, errlen) != 0)
        return NULL;
    /* an instance that cannot make its context would leave requests queued:
     * find out here, where the caller hears of it */
    char name[32];
    fx_ctx *probe = fx_ctx_create(fxg_device(g));
    if (!probe) {
        snprintf(err, errlen, "cannot run on device %s (no engine context there)",
                 fx_device_str(fxg_device(g), name, sizeof name));
        return NULL;
    }
    fx_ctx_free(probe);
    fxb_batcher *b = calloc(1, sizeof *b);
    if (!b || !(b->out_var = calloc((size_t)fxg_num_outputs(g) + 1, sizeof *b->out_var))) {
        free(b);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->g = g;
    b->c = *c;
    b->device = fxg_device(g);
    b->weights_bytes = fxsv_params_bytes(fxg_params(g));
    b->on_batch = on_batch;
    b->batch_data = batch_data;
    b->n_in = fxg_num_inputs(g);
    b->n_out = fxg_num_outputs(g);
    b->batchable = b->n_in > 0;
    for (int i = 0; i < b->n_in; i++)
        b->batchable &= first_dim_free(fxg_input(g, i));
    for (int i = 0; i < b->n_out; i++) {
        const fxg_tensor_info *t = fxg_output(g, i);
        b->batchable &= first_dim_free(t);
        for (int k = 1; k < t->ndim; k++)
            if (t->shape[k] < 0)
                b->out_var[i] |= 1u << k;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_cond_init(&b->reaper_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&b->refs, 1);
    if (b->device.type == FX_DEV_CPU && c->instances < FXB_MAX_INSTANCES) {
        b->inl = calloc(1, sizeof *b->inl);
        if (b->inl && !instance_init(b, b->inl)) {
            instance_free(b->inl);
            free(b->inl);
            b->inl = NULL; /* not offered: requests go to the instance threads */
        }
    }
    int want = (int)c->instances + 1;
    for (int i = 0; i < want; i++) {
        atomic_fetch_add(&b->refs, 1);
        void *(*fn)(void *) = i < (int)c->instances ? instance_main : reaper_main;
        if (pthread_create(&b->threads[i], NULL, fn, b) != 0) {
            atomic_fetch_sub(&b->refs, 1);
            snprintf(err, errlen, "cannot start batcher threads: %s", strerror(errno));
            fxb_free(b);
            return NULL;
        }
        b->nthreads++;
    }
    return b;
}

void fxb_free(fxb_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    req *drop = NULL;
    for (uint32_t l = 0; l < b->c.priority_levels; l++)
        while (b->lv[l].head) {
            req *q = b->lv[l].head;
            unlink_req(b, q);
            q->next = drop;
            drop = q;
        }
    pthread_cond_broadcast(&b->cv);
    pthread_cond_broadcast(&b->reaper_cv);
    pthread_mutex_unlock(&b->mu);
    while (drop) {
        req *q = drop;
        drop = q->next;
        fxb_timing tm = { .queue_ns = fxb_mono_ns() - q->received };
        q->r.done(q->r.user, FXS_UNAVAILABLE, "the model was unloaded while the request waited",
                  NULL, &tm);
        free(q);
    }
    /* The caller frees the graph next: every batch that runs it must end
     * first, the inline ones on submitting threads included (their requests
     * may all have been answered by the reaper, so nothing else keeps the
     * graph). A batch of this thread is the exception: fxb_free was called
     * from one of its done calls, and it touches the graph no more. */
    pthread_mutex_lock(&b->mu);
    for (;;) {
        batch *bt = b->running;
        while (bt && pthread_equal(bt->thread, pthread_self()))
            bt = bt->next;
        if (!bt)
            break;
        pthread_cond_wait(&b->cv, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    /* Called from a done call on one of b's threads (the model's last
     * reference went with a request): that thread's batch is still in the
     * running list, and the reaper ends only once the list is empty, so
     * neither can be joined here; both end by themselves once the batch
     * returns (each holds a reference to b). The other instances are joined. */
    bool own = tl_batcher == b;
    for (int i = 0; i < b->nthreads; i++) {
        bool reaper = i == (int)b->c.instances;
        if (own && (reaper || pthread_equal(b->threads[i], pthread_self())))
            pthread_detach(b->threads[i]);
        else
            pthread_join(b->threads[i], NULL);
    }
    release(b);
}
