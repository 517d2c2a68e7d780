/* batcher.c - see batcher.h. */
#include "serving/batcher.h"
#include "serving/batcher_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "serving/batch_io.h"
#include "serving/batch_policy.h"
#include "serving/devices.h"
#include "base/status.h"
#include "base/util.h"

__thread fxb_batcher *fxb__tl_batcher; /* the batcher whose thread this is */

uint64_t fxb_mono_ns(void) { return fxu_mono_ns(); }

/* ----------------------------------------------------------------- queue */

void fxb__unlink_req(fxb_batcher *b, req *q)
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

static int form(fxb_batcher *b, req **out, int64_t *wait_until);
static void take(fxb_batcher *b, req **out, int n);
static void run(fxb_batcher *b, struct instance *in, req **r, int n);

/* What fxb_submit learnt of the next batch: nothing, it goes now, it waits
 * (until a time), or an inline batch runs and its thread looks at the
 * queue when it ends. */
enum { NEXT_UNKNOWN, NEXT_GOES, NEXT_WAITS, NEXT_INLINE };

/* Inline batches one thread runs back to back (the first one included)
 * before it leaves the queue to the instances: a poller's own calls wait
 * for it meanwhile. */
#define INLINE_ROUNDS 3

/* Whether the batch r[0..n) may run inline: its cost by the curve is at
 * most max_ns (0: any); a size not measured yet goes to an instance. */
static bool inline_fits(const fxb_batcher *b, req **r, int n, uint64_t max_ns)
{
    if (!max_ns)
        return true;
    int64_t samples = 0;
    for (int j = 0; j < n; j++)
        samples += r[j]->samples > 0 ? r[j]->samples : 1;
    double cost = fxb_evidence_cost(&b->waiter.ev, (double)samples);
    return cost >= 0 && cost <= (double)max_ns;
}

/* Under b->mu, just after a request was queued: when the next batch would
 * go at once, a slot is free and the batch fits max_ns (inline_fits), runs
 * it on this thread with the inline instance, then the batches that are
 * due next and fit as well (INLINE_ROUNDS at most), and returns true with
 * b->mu released. Else *next says what it found (NEXT_WAITS: until
 * *until). */
static bool run_inline(fxb_batcher *b, uint64_t max_ns, int *next, int64_t *until)
{
    *next = NEXT_UNKNOWN;
    if (!b->inl || b->inl_busy || b->stop || b->n_running >= (int)b->c.instances) {
        if (b->inl_busy && !b->stop)
            *next = NEXT_INLINE;
        return false;
    }
    req *stackr[64];
    size_t cap = b->c.enabled ? b->c.max_batch_size : 1;
    req **rr = cap <= 64 ? stackr : malloc(cap * sizeof *rr);
    int n = rr ? form(b, rr, until) : 0;
    *next = n < 0 ? NEXT_WAITS : n > 0 ? NEXT_GOES : NEXT_UNKNOWN;
    if (n <= 0 || !inline_fits(b, rr, n, max_ns)) {
        /* it should wait for more, or it is a batch for an instance */
        if (rr != stackr)
            free(rr);
        return false;
    }
    take(b, rr, n);
    b->inl_busy = true;
    b->n_running++;
    batch bt = { rr, n, pthread_self(), b->running };
    b->running = &bt;
    atomic_fetch_add(&b->refs, 1); /* a done call may free the model, and b's owner */
    for (int round = 1;; round++) {
        pthread_mutex_unlock(&b->mu);
        fxb_batcher *prev = fxb__tl_batcher;
        fxb__tl_batcher = b; /* fxb_free from a done call here must not wait for this batch */
        run(b, b->inl, rr, n);
        fxb__tl_batcher = prev;
        pthread_mutex_lock(&b->mu);
        for (int j = 0; j < n; j++) /* the reaper reads them under b->mu only */
            free(rr[j]);
        bt.n = 0;
        int64_t u;
        if (b->stop || round >= INLINE_ROUNDS || (n = form(b, rr, &u)) <= 0 ||
            !inline_fits(b, rr, n, max_ns))
            break;
        take(b, rr, n); /* the next batch is due too, and short: run it here */
        bt.n = n;
    }
    b->n_running--;
    b->inl_busy = false;
    batch **pp = &b->running;
    while (*pp != &bt)
        pp = &(*pp)->next;
    *pp = bt.next;
    /* instances waiting for the slot, or (while this ran, submits left the
     * queue to this thread) for requests that are queued now; fxb_free
     * waits for running batches */
    if (b->slot_waiters || b->stop || (b->n_queued && (b->idle_waiters || b->timed_waiters)))
        pthread_cond_broadcast(&b->cv);
    if (b->stop)
        pthread_cond_signal(&b->reaper_cv); /* it ends once nothing runs */
    pthread_mutex_unlock(&b->mu);
    if (rr != stackr)
        free(rr);
    fxb__release(b);
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
    level *l = &b->lv[q->level];
    q->prev = l->tail;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    b->n_queued++;
    fxb_waiter_arrival(&b->waiter, atomic_fetch_add(&b->pressure, 1) + 1, q->samples);
    atomic_store_explicit(&b->last_active, q->received, memory_order_relaxed);
    if (q->deadline < b->reaper_wake)
        pthread_cond_signal(&b->reaper_cv);
    int next = NEXT_UNKNOWN;
    int64_t until = 0;
    if (r->may_run_inline && run_inline(b, r->inline_max_ns, &next, &until))
        return 0; /* ran here, answered, b->mu released */
    /* An instance is woken when it has something to do now: one waiting
     * for work, or one waiting for a partial batch when the batch goes now
     * or must go earlier than it waits for. One that runs a batch picks the
     * next one itself, and so does (or wakes one) an inline batch's thread;
     * one waiting for a slot is woken by the slot. */
    bool later = next == NEXT_WAITS && b->timed_min != INT64_MIN && until >= b->timed_min;
    if (next != NEXT_INLINE && (b->idle_waiters || (b->timed_waiters && !later))) {
        if (b->idle_waiters + b->timed_waiters + b->slot_waiters > 1)
            pthread_cond_broadcast(&b->cv); /* the right one among them */
        else
            pthread_cond_signal(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    return 0;
}

const fxb_config *fxb_get_config(const fxb_batcher *b) { return &b->c; }

int fxb_pressure(fxb_batcher *b) { return atomic_load(&b->pressure); }
uint64_t fxb_last_active_ns(fxb_batcher *b) { return atomic_load(&b->last_active); }

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

/* Forms the next batch from the queue into out (capacity max_batch_size or
 * 1), leaving it queued: returns its request count, 0 when the queue is
 * empty, or -1 with *wait_until when the batch should wait for more
 * requests. Under b->mu. */
static int form(fxb_batcher *b, req **out, int64_t *wait_until)
{
    req *h = NULL;
    for (uint32_t l = 0; l < b->c.priority_levels && !h; l++)
        h = b->lv[l].head;
    if (!h) {
        fxb_waiter_end(&b->waiter, fxb_mono_ns()); /* its requests' deadlines passed */
        return 0;
    }
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
    uint64_t now = fxb_mono_ns(), every = b->c.max_queue_delay_us * 1000u * FXB_PROBE_DELAYS;
    if (every < FXB_PROBE_MIN_NS)
        every = FXB_PROBE_MIN_NS;
    if (!full && !b->stop && b->c.n_preferred && (int64_t)now < due) {
        *wait_until = due; /* the user's sizes: wait the delay for them */
        return -1;
    }
    if (!full && !b->stop && !b->c.n_preferred) {
        fxb_situation s = { .samples = total, .room = (top_pref < cap ? top_pref : cap) - total,
                            .left_ns = due - (int64_t)now, .in_server = atomic_load(&b->pressure),
                            .now_ns = now, .probe_every_ns = every,
                            .wait_share = b->wait_share };
        if (fxb_waiter_wait(&b->waiter, &s, wait_until))
            return -1;
    }
    fxb_waiter_end(&b->waiter, now);
    /* the size to send: the largest preferred size there is (all when none
     * fits), or without preferred sizes the cheapest per sample by the cost
     * curve (batch_policy.h); the rest waits for the next batch */
    int64_t best = 0;
    if (b->c.enabled && b->c.n_preferred && h->samples >= 0 && total < cap) {
        for (int i = 0; i < b->c.n_preferred; i++)
            if (b->c.preferred[i] <= total)
                best = b->c.preferred[i];
    } else if (b->c.enabled && !b->c.n_preferred && n > 1) {
        best = fxb_waiter_size(&b->waiter, total, now, every);
    }
    if (best >= h->samples && best < total) {
        int64_t sum = 0;
        int k = 0;
        for (int i = 0; i < n; i++)
            if (sum + out[i]->samples <= best) {
                sum += out[i]->samples;
                out[k++] = out[i];
            }
        n = k;
    }
    return n;
}

/* Takes the batch form returned out of the queue. Under b->mu. */
static void take(fxb_batcher *b, req **out, int n)
{
    for (int i = 0; i < n; i++) {
        fxb__unlink_req(b, out[i]);
        atomic_store(&out[i]->state, RQ_TAKEN);
    }
}

/* form, then take: the next batch to run, as form counts. Under b->mu. */
static int pick(fxb_batcher *b, req **out, int64_t *wait_until)
{
    int n = form(b, out, wait_until);
    if (n > 0)
        take(b, out, n);
    return n;
}

/* ------------------------------------------------------------ execution */

typedef struct instance {
    fx_ctx *ctx;
    int slot;                 /* in fxb_batcher.arena */
    fxb_io io;                /* the batch's data (batch_io.h) */
    const fxb_input **xs;     /* per request of the batch: its inputs */
} instance;

/* Answers q (unless the reaper did) with status/err or its outputs. */
static void finish(fxb_batcher *b, req *q, int status, const char *err, const fxb_output *outs,
                   const fxb_timing *t)
{
    int expect = RQ_RUNNING;
    if (!atomic_compare_exchange_strong(&q->state, &expect, RQ_DONE))
        return;
    atomic_store_explicit(&b->last_active, fxb_mono_ns(), memory_order_relaxed);
    atomic_fetch_sub(&b->pressure, 1); /* before the done call, which may free b */
    q->r.done(q->r.user, status, err, outs, t);
}

static void run(fxb_batcher *b, instance *in, req **r, int n);

static fx_ctx *instance_ctx(const fxb_batcher *b)
{
    fx_ctx *ctx = fx_ctx_create(b->device);
    if (ctx) {
        fx_ctx_set_grad(ctx, false);
        fx_ctx_set_training(ctx, false);
        /* on CUDA: a stream of higher priority than training's (a no-op on the CPU) */
        fx_ctx_set_priority(ctx, FX_PRIORITY_HIGH);
        /* dense products the packs do not cover (a layer left unpacked, a
         * linear op) in the model's precision too; bf16 is CPU-only, which
         * the config check ensured */
        fx_ctx_set_precision(ctx, b->c.precision);
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

/* What an instance holds between batches: its arena and staging buffers. */
static uint64_t instance_bytes(const instance *in)
{
    return fx_ctx_arena_capacity(in->ctx) + fxb_io_bytes(&in->io);
}

/* Gives back what the instance holds: a new, empty context in place of its
 * own (the engine has no call that shrinks an arena; the old context stays
 * when no new one can be made), and no staging buffers. After a batch over
 * the memory limit, or one that left more than arena_keep_bytes. */
static void instance_refresh(fxb_batcher *b, instance *in)
{
    fxb_io_release(&in->io);
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

/* Answers each request of the batch that the reaper has not: its part of
 * the outputs, or the batch's error. */
static void answer(fxb_batcher *b, instance *in, req **r, int n, int status, const char *err,
                   fxb_timing *tm, uint64_t t0)
{
    int64_t row = 0;
    for (int j = 0; j < n; j++) {
        req *q = r[j];
        tm->queue_ns = t0 > q->received ? t0 - q->received : 0;
        if (atomic_load(&q->state) == RQ_RUNNING) {
            int st = status ? status
                            : fxb_io_split(&in->io, n == 1, q->r.inputs, q->samples, row,
                                           b->out_var, b->c.pad_variable_dims);
            finish(b, q, st, status ? err : st ? "out of memory splitting the batch" : "",
                   st ? NULL : in->io.outs, tm);
            fxb_io_unsplit(&in->io);
        }
        row += q->samples;
    }
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Runs the batch r[0..n): merges the inputs, runs the forward pass, copies
 * the outputs to the host, checks the device and the memory limit, and
 * answers each request (batch_io.h moves the data). */
static void run(fxb_batcher *b, instance *in, req **r, int n)
{
    fx_ctx_reset(in->ctx);
    fxb_io *io = &in->io;
    fxb_timing tm = { 0 };
    uint64_t t0 = fxb_mono_ns(), cpu0 = thread_cpu_ns();
    char err[512] = "";
    int status = 0;
    for (int j = 0; j < n; j++) {
        tm.batch_size += r[j]->samples > 0 ? (uint64_t)r[j]->samples : 1;
        in->xs[j] = r[j]->r.inputs;
    }
    for (int i = 0; i < b->n_in && !status; i++)
        if (!fxb_io_merge(io, in->ctx, b->g, in->xs, n, i)) {
            status = FXS_RESOURCE_EXHAUSTED;
            snprintf(err, sizeof err, "input '%s': %s", fxg_input(b->g, i)->name,
                     fx_ctx_error(in->ctx)[0] ? fx_ctx_error(in->ctx) : "out of memory");
        }
    /* The inputs are copied: the requests' memory is no longer needed. */
    for (int j = 0; j < n; j++)
        atomic_store(&r[j]->state, RQ_RUNNING);
    uint64_t t1 = fxb_mono_ns();
    if (!status && fxg_forward(b->g, in->ctx, io->tin, io->tout, err, sizeof err) != 0) {
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
        const fx_tensor *t = io->tout[o];
        if (n > 1 && (t->ndim < 1 || (uint64_t)t->shape[0] != tm.batch_size)) {
            run_each(b, in, r, n);
            return;
        }
        if (fxb_io_fetch(io, o) != 0) {
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
    tm.input_ns = t1 - t0;
    tm.infer_ns = t2 - t1;
    tm.output_ns = fxb_mono_ns() - t2;
    if (!status) { /* the cost curve (batch_policy.h) */
        /* on the CPU the thread's own time: time preempted by other work
         * on a loaded machine is not the batch's cost (and would weigh
         * more on longer batches) */
        uint64_t cost = b->device.type == FX_DEV_CPU ? thread_cpu_ns() - cpu0
                                                     : tm.input_ns + tm.infer_ns + tm.output_ns;
        pthread_mutex_lock(&b->mu);
        fxb_evidence_batch(&b->waiter.ev, (int64_t)tm.batch_size, cost);
        pthread_mutex_unlock(&b->mu);
    }
    /* Statistics first: the last done call may free what on_batch reports to. */
    if (b->on_batch)
        b->on_batch(b->batch_data, status == 0, &tm);
    answer(b, in, r, n, status, err, &tm, t0);
    if (fresh || instance_bytes(in) > b->c.arena_keep_bytes)
        instance_refresh(b, in);
}

static void instance_free(instance *in);

void fxb__release(fxb_batcher *b)
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
    in->xs = calloc(b->c.enabled ? b->c.max_batch_size : 1, sizeof *in->xs);
    return fxb_io_init(&in->io, b->n_in, b->n_out) && in->ctx && in->xs;
}

static void instance_free(instance *in)
{
    fxb_io_free(&in->io);
    free(in->xs);
    fx_ctx_free(in->ctx);
}

static void *instance_main(void *arg)
{
    fxb_batcher *b = arg;
    fxb__tl_batcher = b;
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
            b->slot_waiters++;
            pthread_cond_wait(&b->cv, &b->mu); /* an inline batch holds the slot */
            b->slot_waiters--;
            continue;
        }
        int64_t until = 0;
        int n = pick(b, r, &until);
        if (n == 0 && b->stop)
            break;
        if (n < 0) {
            b->timed_min = b->timed_waiters ? INT64_MIN : until;
            b->timed_waiters++;
            fxb__timed_wait(&b->cv, &b->mu, until);
            if (--b->timed_waiters == 0)
                b->timed_min = INT64_MAX;
            else
                b->timed_min = INT64_MIN; /* which of the others wakes first: unknown */
            continue;
        }
        if (n == 0) {
            b->idle_waiters++;
            pthread_cond_wait(&b->cv, &b->mu);
            b->idle_waiters--;
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
    fxb__release(b);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static bool first_dim_free(const fxg_tensor_info *t) { return t->ndim >= 1 && t->shape[0] < 0; }

int fxb_create(const fxg_graph *g, const fxb_config *c, fxb_batch_fn on_batch, void *batch_data,
               fxb_batcher **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = fxb_config_check(c, g, err, errlen);
    if (rc)
        return rc;
    /* an instance that cannot make its context would leave requests queued:
     * find out here, where the caller hears of it */
    char name[32];
    fx_ctx *probe = fx_ctx_create(fxg_device(g));
    if (!probe) {
        snprintf(err, errlen, "cannot run on device %s (no engine context there)",
                 fx_device_str(fxg_device(g), name, sizeof name));
        return FXS_FAILED_PRECONDITION;
    }
    fx_ctx_free(probe);
    fxb_batcher *b = calloc(1, sizeof *b);
    if (!b || !(b->out_var = calloc((size_t)fxg_num_outputs(g) + 1, sizeof *b->out_var))) {
        free(b);
        snprintf(err, errlen, "out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    b->g = g;
    b->c = *c;
    b->device = fxg_device(g);
    b->weights_bytes = fxsv_params_bytes(fxg_params(g));
    b->on_batch = on_batch;
    b->batch_data = batch_data;
    b->n_in = fxg_num_inputs(g);
    b->n_out = fxg_num_outputs(g);
    b->wait_share = b->device.type == FX_DEV_CPU ? FXB_CPU_WAIT_SHARE : 1;
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
    atomic_init(&b->pressure, 0);
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
        void *(*fn)(void *) = i < (int)c->instances ? instance_main : fxb__reaper_main;
        if (pthread_create(&b->threads[i], NULL, fn, b) != 0) {
            atomic_fetch_sub(&b->refs, 1);
            snprintf(err, errlen, "cannot start batcher threads: %s", strerror(errno));
            fxb_free(b);
            return FXS_RESOURCE_EXHAUSTED;
        }
        b->nthreads++;
    }
    *out = b;
    return 0;
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
            fxb__unlink_req(b, q);
            atomic_fetch_sub(&b->pressure, 1);
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
    bool own = fxb__tl_batcher == b;
    for (int i = 0; i < b->nthreads; i++) {
        bool reaper = i == (int)b->c.instances;
        if (own && (reaper || pthread_equal(b->threads[i], pthread_self())))
            pthread_detach(b->threads[i]);
        else
            pthread_join(b->threads[i], NULL);
    }
    fxb__release(b);
}
