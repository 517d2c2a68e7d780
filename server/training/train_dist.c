/*
 * train_dist.c - data-parallel training, as PyTorch DDP does it (see
 * train.h's fxt_dist and docs/distributed.md, "Data parallelism"):
 *
 * - At the start (after a resume) every parameter and buffer is broadcast
 *   from rank 0, so that all ranks start from the same weights.
 * - The trainable parameters are grouped into buckets of about bucket_bytes
 *   in reverse parameter order (the order backward finishes them). Each
 *   bucket is one flat buffer, allocated once, that its parameters'
 *   gradients live in (fx_tensor_set_grad_buffer), so that a bucket is
 *   reduced in one call and a steady-state step makes no heap allocation.
 * - During backward the engine's grad-ready hook reports each parameter as
 *   its gradient becomes final; a bucket whose parameters are all final is
 *   started (fxcm_allreduce_start) at once, overlapping the rest of
 *   backward. Buckets start strictly in bucket order (a ready bucket waits
 *   for the ones before it), so every rank starts the same sequence of
 *   collectives whatever its graph did (a rank with no samples starts them
 *   all after its empty backward).
 * - Each rank scales its loss by its share of the global batch, so the SUM
 *   of the rank gradients is the gradient of the mean over the global batch.
 * - The step's scalars (the weighted loss, the per-loss values, the metric
 *   counts, the stop vote) are summed in one more small allreduce started
 *   after the last bucket.
 * - After the waits every rank steps its optimizer on identical gradients;
 *   buffers (batch norm's running statistics) are then broadcast from rank
 *   0 (DDP's broadcast_buffers), so evaluations agree on every rank.
 * - A collective that fails makes the run FXT_LOST (r->lost), err naming it.
 */
#include "training/train_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

#define DEFAULT_BUCKET_BYTES (25u << 20)

typedef struct {
    fx_tensor *buf;   /* [n] f32 on the training device: the gradients live here */
    size_t n;
    int pending;      /* parameters not final yet in this step */
    int nparams;
    uint64_t ticket;
    bool started;
} bucket_t;

struct fxt__dist {
    const fxt_dist *d;
    fxcm_comm *comm;
    const fx_params *ps; /* the trainable parameters */
    int *bucket_of;      /* per parameter */
    bool *ready;         /* per parameter, this step */
    /* parameter pointer -> index (open addressing over cap slots) */
    fx_tensor **key;
    int *val;
    size_t cap;
    bucket_t *b;
    int nb, next; /* next: the first bucket not started this step */
    uint64_t last; /* the last operation started (its wait covers all) */
    bool inflight; /* operations started and not waited for */
    /* the step's scalars, summed over the ranks */
    fx_tensor *xt;
    float *x;
    int nx;
    uint64_t x_ticket;
    /* the buffers (parameters that are not trainable) */
    fx_tensor **bufs;
    int nbufs;
    float *stage; /* host staging for non-CPU tensors at broadcast */
    size_t stage_n;
    int fail;     /* the first comm failure in this step (0: none) */
    char ferr[384];
    /* timing of this step's collectives */
    double t_first, t_bw_end;
    double comm_s, overlap_s; /* summed over the run's steps */
    int64_t steps;
};

static int lost(run_t *r, const char *what, const char *msg)
{
    r->lost = true;
    return fxt__rfail(r, "%s: collective failed (rank %d of %d): %s", what, r->dist->d->rank,
                      r->dist->d->world, msg);
}

static size_t slot_of(const fxt__dist *D, const fx_tensor *t)
{
    size_t h = (size_t)(((uint64_t)(uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ull) & (D->cap - 1);
    while (D->key[h] && D->key[h] != t)
        h = (h + 1) & (D->cap - 1);
    return h;
}

/* Starts every bucket from D->next on that is complete, in order. */
static void start_ready(run_t *r)
{
    fxt__dist *D = r->dist;
    while (D->next < D->nb && !D->fail && D->b[D->next].pending == 0) {
        bucket_t *b = &D->b[D->next];
        if (D->t_first == 0)
            D->t_first = fxt__now_s();
        D->fail = fxcm_allreduce_start(D->comm, (float *)b->buf->storage->ptr, b->n, &b->ticket,
                                       D->ferr, sizeof D->ferr);
        b->started = !D->fail;
        if (b->started) {
            D->last = b->ticket;
            D->inflight = true;
        }
        D->next++;
    }
}

/* The engine's grad-ready hook: t's gradient is final. */
static void grad_ready(void *data, fx_tensor *t)
{
    run_t *r = data;
    fxt__dist *D = r->dist;
    size_t h = slot_of(D, t);
    if (!D->key[h])
        return; /* not a trainable parameter of this run */
    int i = D->val[h];
    if (D->ready[i])
        return;
    D->ready[i] = true;
    D->b[D->bucket_of[i]].pending--;
    start_ready(r);
}

/* Broadcasts a tensor's bytes from rank 0 (floats of any 4-byte dtype; the
 * others through their f32 bytes when their size allows). */
static int bcast_tensor(run_t *r, fx_tensor *t, const char *what)
{
    fxt__dist *D = r->dist;
    size_t bytes = (size_t)fx_tensor_numel(t) * fx_dtype_size(t->dtype);
    if (!bytes)
        return 0;
    if (bytes % sizeof(float))
        return fxt__rfail(r, "%s: a tensor of %zu bytes cannot be broadcast as f32", what, bytes);
    size_t n = bytes / sizeof(float);
    char msg[384];
    int rc;
    /* Gloo reduces host memory, NCCL device memory: tensors where the
     * backend reads them go directly */
    bool host = fxcm_comm_backend(D->comm) == FXCM_GLOO;
    if ((t->device.type == FX_DEV_CPU) == host && fx_tensor_is_contiguous(t)) {
        float *p = (float *)((unsigned char *)t->storage->ptr +
                             (size_t)t->offset * fx_dtype_size(t->dtype));
        rc = fxcm_broadcast(D->comm, p, n, 0, msg, sizeof msg);
    } else {
        if (!host)
            return fxt__rfail(r, "%s: NCCL broadcasts device memory; a host or strided tensor "
                              "cannot be broadcast", what);
        /* not a hot path: a strided tensor, through the host */
        if (n > D->stage_n) {
            float *s = realloc(D->stage, n * sizeof *s);
            if (!s)
                return fxt__rfail(r, "%s: out of memory", what);
            D->stage = s;
            D->stage_n = n;
        }
        if (fx_tensor_to_host(t, D->stage, bytes) != FX_OK)
            return fxt__rfail(r, "%s: could not read a tensor", what);
        rc = fxcm_broadcast(D->comm, D->stage, n, 0, msg, sizeof msg);
        if (!rc && fx_tensor_copy_from_host(t, D->stage, bytes) != FX_OK)
            return fxt__rfail(r, "%s: could not write a tensor", what);
    }
    return rc ? lost(r, what, msg) : 0;
}

static bool is_trainable(const fx_params *ps, const fx_tensor *t)
{
    for (int i = 0; i < ps->count; i++)
        if (ps->items[i].tensor == t)
            return true;
    return false;
}

static int make_buckets(run_t *r)
{
    fxt__dist *D = r->dist;
    const fx_params *ps = D->ps;
    size_t cap_bytes = D->d->bucket_bytes ? D->d->bucket_bytes : DEFAULT_BUCKET_BYTES;
    int np = ps->count;
    D->bucket_of = calloc((size_t)np + 1, sizeof *D->bucket_of);
    D->ready = calloc((size_t)np + 1, sizeof *D->ready);
    D->b = calloc((size_t)np + 1, sizeof *D->b);
    D->cap = 16;
    while (D->cap < 2 * (size_t)np)
        D->cap *= 2;
    D->key = calloc(D->cap, sizeof *D->key);
    D->val = calloc(D->cap, sizeof *D->val);
    if (!D->bucket_of || !D->ready || !D->b || !D->key || !D->val)
        return fxt__rfail(r, "out of memory");
    /* reverse parameter order: bucket 0 holds the last parameters; a step
     * starts every bucket and the scalars before it waits, so there are
     * fewer buckets than the comm's pending operations (larger buckets
     * when bucket_bytes would make too many) */
    for (;;) {
        memset(D->b, 0, ((size_t)np + 1) * sizeof *D->b);
        D->nb = 0;
        size_t in_bucket = 0;
        for (int i = np - 1; i >= 0; i--) {
            size_t n = (size_t)fx_tensor_numel(ps->items[i].tensor);
            if (D->b[D->nb].nparams && (in_bucket + n) * sizeof(float) > cap_bytes) {
                D->nb++;
                in_bucket = 0;
            }
            D->bucket_of[i] = D->nb;
            D->b[D->nb].nparams++;
            D->b[D->nb].n += n;
            in_bucket += n;
        }
        if (np)
            D->nb++;
        if (D->nb < FXCM_MAX_PENDING / 2)
            break;
        cap_bytes *= 2;
    }
    for (int i = 0; i < np; i++) {
        size_t h = slot_of(D, ps->items[i].tensor);
        D->key[h] = ps->items[i].tensor;
        D->val[h] = i;
    }
    for (int k = 0; k < D->nb; k++) {
        D->b[k].buf = fx_tensor_create(r->hk->device, FX_F32, 1, (int64_t[]){(int64_t)D->b[k].n});
        if (!D->b[k].buf)
            return fxt__rfail(r, "out of memory for gradient buckets (%zu floats)", D->b[k].n);
    }
    /* each parameter's gradient into its slot, in parameter order within
     * its bucket */
    size_t *at = calloc((size_t)D->nb + 1, sizeof *at);
    if (!at)
        return fxt__rfail(r, "out of memory");
    for (int i = np - 1; i >= 0; i--) {
        fx_tensor *t = ps->items[i].tensor;
        bucket_t *b = &D->b[D->bucket_of[i]];
        float *p = (float *)b->buf->storage->ptr + at[D->bucket_of[i]];
        at[D->bucket_of[i]] += (size_t)fx_tensor_numel(t);
        if (!t->grad && fx_tensor_set_requires_grad(t, true) != FX_OK) {
            free(at);
            return fxt__rfail(r, "out of memory for gradients");
        }
        if (fx_tensor_set_grad_buffer(t, p) != FX_OK) {
            free(at);
            return fxt__rfail(r, "could not place gradient '%s' in its bucket",
                              ps->items[i].name);
        }
    }
    free(at);
    return 0;
}

int fxt__dist_init(run_t *r)
{
    const fxt_dist *d = r->hk->dist;
    if (!d || d->world <= 1)
        return 0;
    if (!d->comm || d->rank < 0 || d->rank >= d->world)
        return fxt__rfail(r, "data-parallel: rank %d of %d without a comm", d->rank, d->world);
    if ((fxcm_comm_backend(d->comm) == FXCM_GLOO) != (r->hk->device.type == FX_DEV_CPU))
        return fxt__rfail(r, "data-parallel: %s cannot reduce gradients on this device (gloo: "
                          "cpu ranks, nccl: cuda ranks)", fxcm_backend_name(fxcm_comm_backend(d->comm)));
    fxt__dist *D = calloc(1, sizeof *D);
    if (!D)
        return fxt__rfail(r, "out of memory");
    r->dist = D;
    D->d = d;
    D->comm = d->comm;
    D->ps = fxg_trainable_params(r->g);
    const fx_params *all = fxg_params(r->g);
    D->bufs = calloc((size_t)all->count + 1, sizeof *D->bufs);
    if (!D->bufs)
        return fxt__rfail(r, "out of memory");
    for (int i = 0; i < all->count; i++)
        if (!is_trainable(D->ps, all->items[i].tensor))
            D->bufs[D->nbufs++] = all->items[i].tensor;
    /* scalars: loss, per-loss values (several losses), metric correct and
     * total counts, the stop vote */
    const plan_t *p = &r->P;
    D->nx = 1 + (p->nlosses > 1 ? p->nlosses : 0) + 2 * p->nmetrics + 1;
    D->x = calloc((size_t)D->nx, sizeof *D->x);
    D->xt = fx_tensor_create(r->hk->device, FX_F32, 1, (int64_t[]){D->nx});
    if (!D->x || !D->xt)
        return fxt__rfail(r, "out of memory");
    if (make_buckets(r))
        return -1;
    for (int i = 0; i < all->count; i++)
        if (bcast_tensor(r, all->items[i].tensor, "broadcasting rank 0's weights"))
            return -1;
    fx_ctx_set_grad_ready_hook(r->ctx, grad_ready, r);
    return 0;
}

void fxt__dist_free(run_t *r)
{
    fxt__dist *D = r->dist;
    if (!D)
        return;
    if (r->ctx)
        fx_ctx_set_grad_ready_hook(r->ctx, NULL, NULL);
    /* the graph outlives the run: its gradients own their memory again */
    for (int i = 0; D->ps && i < D->ps->count; i++) {
        fx_tensor *t = D->ps->items[i].tensor;
        if (t->grad && !t->grad->storage->owned)
            fx_tensor_set_grad_buffer(t, NULL);
    }
    /* A step that failed in backward after buckets were started: stop them
     * (the run ends anyway). The backend may read a bucket until its own
     * timeout after the abort, so those buffers are left allocated: a
     * failed run's bounded leak rather than a read of freed memory. */
    bool leak = D->inflight;
    if (D->inflight) {
        char werr[64];
        fxcm_abort(D->comm);
        fxcm_wait(D->comm, D->last, werr, sizeof werr);
    }
    for (int k = 0; k < D->nb && !leak; k++)
        fx_tensor_free(D->b[k].buf);
    if (!leak)
        fx_tensor_free(D->xt);
    free(D->b);
    free(D->bucket_of);
    free(D->ready);
    free(D->key);
    free(D->val);
    free(D->x);
    free(D->bufs);
    free(D->stage);
    free(D);
    r->dist = NULL;
}

void fxt__dist_share(const run_t *r, int64_t global, int64_t *off, int64_t *n)
{
    int w = r->dist ? r->dist->d->world : 1, k = r->dist ? r->dist->d->rank : 0;
    int64_t base = global / w, rem = global % w;
    *off = (int64_t)k * base + (k < rem ? k : rem);
    *n = base + (k < rem ? 1 : 0);
}

float *fxt__dist_scalars(run_t *r)
{
    fxt__dist *D = r->dist;
    memset(D->x, 0, (size_t)D->nx * sizeof *D->x);
    D->fail = 0;
    D->ferr[0] = '\0';
    D->next = 0;
    D->t_first = 0;
    for (int i = 0; i < D->ps->count; i++)
        D->ready[i] = false;
    for (int k = 0; k < D->nb; k++) {
        D->b[k].pending = D->b[k].nparams;
        D->b[k].started = false;
    }
    return D->x;
}

int fxt__dist_reduce(run_t *r, int64_t stepno)
{
    fxt__dist *D = r->dist;
    char what[48];
    snprintf(what, sizeof what, "step %" PRId64, stepno);
    D->t_bw_end = fxt__now_s();
    /* parameters backward never reached (unused by this rank's graph, or no
     * samples on this rank): their gradient is what it is (zero) */
    for (int i = 0; i < D->ps->count; i++)
        if (!D->ready[i]) {
            D->ready[i] = true;
            D->b[D->bucket_of[i]].pending--;
        }
    start_ready(r);
    if (D->t_first == 0)
        D->t_first = fxt__now_s();
    if (!D->fail && fx_tensor_copy_from_host(D->xt, D->x, (size_t)D->nx * sizeof *D->x) != FX_OK)
        return fxt__rfail(r, "%s: could not stage the step's scalars", what);
    if (!D->fail)
        D->fail = fxcm_allreduce_start(D->comm, (float *)D->xt->storage->ptr, (size_t)D->nx,
                                       &D->x_ticket, D->ferr, sizeof D->ferr);
    if (!D->fail) {
        D->last = D->x_ticket;
        D->inflight = true;
    }
    /* the last operation's wait covers every one before it; after a failed
     * start too, so that no operation still reads a bucket */
    if (D->inflight) {
        char werr[sizeof D->ferr];
        int rc = fxcm_wait(D->comm, D->last, werr, sizeof werr);
        D->inflight = false;
        if (rc && !D->fail) {
            D->fail = rc;
            snprintf(D->ferr, sizeof D->ferr, "%s", werr);
        }
    }
    if (D->fail)
        return lost(r, what, D->ferr);
    if (fx_tensor_to_host(D->xt, D->x, (size_t)D->nx * sizeof *D->x) != FX_OK)
        return fxt__rfail(r, "%s: could not read the step's scalars", what);
    double t_end = fxt__now_s(), span = t_end - D->t_first;
    D->comm_s += span > 0 ? span : 0;
    double ov = D->t_bw_end - D->t_first;
    D->overlap_s += ov > 0 ? (ov < span ? ov : span) : 0;
    D->steps++;
    return 0;
}

int fxt__dist_sync_buffers(run_t *r, int64_t stepno)
{
    fxt__dist *D = r->dist;
    char what[64];
    snprintf(what, sizeof what, "step %" PRId64 ": broadcasting buffers", stepno);
    for (int i = 0; i < D->nbufs; i++)
        if (bcast_tensor(r, D->bufs[i], what))
            return -1;
    return 0;
}

void fxt__dist_comm_stats(const run_t *r, double *comm_ms, double *overlap)
{
    const fxt__dist *D = r->dist;
    *comm_ms = D && D->steps ? 1e3 * D->comm_s / (double)D->steps : 0;
    *overlap = D && D->comm_s > 0 ? D->overlap_s / D->comm_s : 0;
}
