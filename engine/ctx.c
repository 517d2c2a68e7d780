/* ctx.c - contexts: arena, grad mode, errors, and the helpers ops share. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef FX_HAVE_CUDA
#include "cuda/cuda_api.h"
#endif

static void threads_default(void);

#ifdef FX_HAVE_CUDA
void fx__ctx_enter(fx_ctx *ctx)
{
    if (ctx->dev.type == FX_DEV_CUDA)
        fx__cuda_enter(ctx->dev.index, (fx__cuda_lane **)&ctx->lane, ctx->priority);
}
#endif

fx_ctx *fx_ctx_create(fx_device dev)
{
    const fx_backend *be = fx__backend_for(dev);
    if (!be || !be->available(dev.index))
        return NULL;
    threads_default();
    fx_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->dev = dev;
    ctx->be = be;
    fx__arena_init(&ctx->meta, NULL, dev);
    fx__arena_init(&ctx->data, be, dev);
    ctx->grad = true;
    ctx->training = true;
    ctx->priority = FX_PRIORITY_NORMAL;
    fx__rng_init(&ctx->rng, 0x5eed);
    return ctx;
}

/* Waits for the context's device work and gives its stream back (CUDA). */
static void release_stream(fx_ctx *ctx)
{
#ifdef FX_HAVE_CUDA
    if (ctx->lane)
        fx__cuda_release((fx__cuda_lane *)ctx->lane);
#endif
    ctx->lane = NULL;
}

void fx_ctx_free(fx_ctx *ctx)
{
    if (!ctx)
        return;
    /* the stream's work is done first, so the arena's memory can be freed
     * on whichever stream the thread is on */
    release_stream(ctx);
    fx__arena_release(&ctx->meta);
    fx__arena_release(&ctx->data);
    free(ctx);
}

void fx_ctx_reset(fx_ctx *ctx)
{
    fx__ctx_enter(ctx);
    fx__arena_reset(&ctx->meta);
    fx__arena_reset(&ctx->data);
    ctx->tape = NULL;
    ctx->tape_len = 0;
    fx_ctx_clear_error(ctx);
#ifdef FX_HAVE_CUDA
    /* the next step sees what other threads queued without a context */
    if (ctx->lane)
        fx__cuda_follow_shared((fx__cuda_lane *)ctx->lane);
#endif
}

fx_status fx_ctx_set_priority(fx_ctx *ctx, fx_priority p)
{
    if (!ctx || p < FX_PRIORITY_LOW || p > FX_PRIORITY_HIGH)
        return FX_ERR_ARG;
    if (p != ctx->priority)
        release_stream(ctx); /* a stream's priority is fixed: the next op takes a new one */
    ctx->priority = p;
    return FX_OK;
}

fx_priority fx_ctx_priority(const fx_ctx *ctx) { return ctx ? ctx->priority : FX_PRIORITY_NORMAL; }

fx_device fx_ctx_device(const fx_ctx *ctx) { return ctx->dev; }

bool fx_ctx_set_grad(fx_ctx *ctx, bool on)
{
    bool old = ctx->grad;
    ctx->grad = on;
    return old;
}

bool fx_ctx_grad_enabled(const fx_ctx *ctx) { return ctx->grad; }
void fx_ctx_set_training(fx_ctx *ctx, bool on) { ctx->training = on; }
bool fx_ctx_training(const fx_ctx *ctx) { return ctx->training; }
void fx_ctx_seed(fx_ctx *ctx, uint64_t seed) { fx__rng_init(&ctx->rng, seed); }
fx_rng *fx_ctx_rng(fx_ctx *ctx) { return &ctx->rng; }
fx_status fx_ctx_status(const fx_ctx *ctx) { return ctx->status; }
const char *fx_ctx_error(const fx_ctx *ctx) { return ctx->err; }
size_t fx_ctx_arena_capacity(const fx_ctx *ctx) { return ctx->meta.capacity + ctx->data.capacity; }
size_t fx_ctx_arena_used(const fx_ctx *ctx) { return ctx->meta.used + ctx->data.used; }
size_t fx_tape_length(const fx_ctx *ctx) { return ctx->tape_len; }

void fx_ctx_clear_error(fx_ctx *ctx)
{
    ctx->status = FX_OK;
    ctx->err[0] = '\0';
}

static void vfail(fx_ctx *ctx, fx_status s, const char *prefix, const char *fmt, va_list ap)
{
    if (ctx->status != FX_OK)
        return; /* the first error is the one worth reading */
    ctx->status = s;
    size_t k = 0;
    if (prefix)
        k = (size_t)snprintf(ctx->err, sizeof ctx->err, "%s: ", prefix);
    if (k < sizeof ctx->err)
        vsnprintf(ctx->err + k, sizeof ctx->err - k, fmt, ap);
}

fx_tensor *fx_ctx_fail(fx_ctx *ctx, fx_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ctx, s, NULL, fmt, ap);
    va_end(ap);
    return NULL;
}

fx_tensor *fx__op_fail(fx_ctx *ctx, fx_status s, const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ctx, s, op, fmt, ap);
    va_end(ap);
    return NULL;
}

void *fx__ctx_alloc_meta(fx_ctx *ctx, size_t nbytes)
{
    fx__ctx_enter(ctx);
    void *p = fx__arena_alloc(&ctx->meta, nbytes);
    if (!p)
        fx_ctx_fail(ctx, FX_ERR_NOMEM, "out of memory (%zu bytes of tape)", nbytes);
    return p;
}

bool fx__op_check_dtype(fx_ctx *ctx, const char *op, const char *what, const fx_tensor *t,
                        fx_dtype want)
{
    if (t->dtype == want)
        return true;
    char b[96];
    fx__op_fail(ctx, FX_ERR_DTYPE, op, "%s must be %s, got %s %s", what, fx_dtype_name(want),
                fx_dtype_name(t->dtype), fx_shape_str(t, b, sizeof b));
    return false;
}

/* The integer tensors of an op (lengths, labels) are checked here so that
 * every op words the errors alike. */
bool fx__op_check_int(fx_ctx *ctx, const char *op, const char *what, const fx_tensor *t)
{
    fx__ctx_enter(ctx);
    char s1[96], s2[32];
    if (t->device.type != ctx->dev.type || t->device.index != ctx->dev.index) {
        fx__op_fail(ctx, FX_ERR_DEVICE, op, "%s are on %s but the context runs on %s", what,
                    fx_device_str(t->device, s1, sizeof s1),
                    fx_device_str(ctx->dev, s2, sizeof s2));
        return false;
    }
    if (t->dtype != FX_I32 && t->dtype != FX_I64) {
        fx__op_fail(ctx, FX_ERR_DTYPE, op, "%s must be i32 or i64, got %s %s", what,
                    fx_dtype_name(t->dtype), fx_shape_str(t, s1, sizeof s1));
        return false;
    }
    return true;
}

bool fx__op_check_lengths(fx_ctx *ctx, const char *op, const char *what, const fx_tensor *t,
                          int64_t n)
{
    if (!fx__op_check_int(ctx, op, what, t))
        return false;
    if (t->ndim == 1 && t->shape[0] == n)
        return true;
    char s[96];
    fx__op_fail(ctx, FX_ERR_SHAPE, op, "%s must be [%lld], one per sample, got %s", what,
                (long long)n, fx_shape_str(t, s, sizeof s));
    return false;
}

long long fx__int_at(fx_ctx *ctx, const fx_tensor *t, int64_t i)
{
    fx_tensor *v = fx__view(ctx, t, 0, NULL, NULL, t->offset + i);
    return v ? (long long)fx_tensor_item(v) : -1LL;
}

/* Inputs non-NULL (silently false: the error is upstream), on the context's
 * device, and either all f32 or, for ops that only move elements, all of
 * input 0's dtype. */
static bool check_inputs(fx_ctx *ctx, const char *op, int n, fx_tensor *const *xs, bool f32)
{
    if (!ctx)
        return false;
    fx__ctx_enter(ctx);
    for (int i = 0; i < n; i++)
        if (!xs[i]) {
            if (ctx->status == FX_OK)
                fx__op_fail(ctx, FX_ERR_ARG, op, "input %d is NULL", i);
            return false;
        }
    for (int i = 0; i < n; i++) {
        char b1[96], b2[32];
        if (xs[i]->device.type != ctx->dev.type || xs[i]->device.index != ctx->dev.index) {
            fx__op_fail(ctx, FX_ERR_DEVICE, op, "input %d is on %s but the context runs on %s", i,
                        fx_device_str(xs[i]->device, b1, sizeof b1),
                        fx_device_str(ctx->dev, b2, sizeof b2));
            return false;
        }
        if (f32 && xs[i]->dtype != FX_F32) {
            fx__op_fail(ctx, FX_ERR_DTYPE, op, "input %d must be f32, got %s %s", i,
                        fx_dtype_name(xs[i]->dtype), fx_shape_str(xs[i], b1, sizeof b1));
            return false;
        }
        if (!f32 && xs[i]->dtype != xs[0]->dtype) {
            fx__op_fail(ctx, FX_ERR_DTYPE, op, "input %d is %s but input 0 is %s", i,
                        fx_dtype_name(xs[i]->dtype), fx_dtype_name(xs[0]->dtype));
            return false;
        }
    }
    return true;
}

bool fx__op_check(fx_ctx *ctx, const char *op, int n, fx_tensor *const *xs)
{
    return check_inputs(ctx, op, n, xs, true);
}

bool fx__op_check_same_dtype(fx_ctx *ctx, const char *op, int n, fx_tensor *const *xs)
{
    return check_inputs(ctx, op, n, xs, false);
}

int fx__axis(fx_ctx *ctx, const char *op, const fx_tensor *x, int axis)
{
    int a = axis < 0 ? axis + x->ndim : axis;
    if (a < 0 || a >= x->ndim) {
        char b[96];
        fx__op_fail(ctx, FX_ERR_AXIS, op, "axis %d is out of range for shape %s", axis,
                    fx_shape_str(x, b, sizeof b));
        return -1;
    }
    return a;
}

bool fx__check_finite(fx_ctx *ctx, const char *op, int64_t nonfinite, const fx_tensor *out)
{
    if (nonfinite == 0)
        return true;
    char b[96];
    fx__op_fail(ctx, FX_ERR_VALUE, op, "%lld of %lld outputs are not finite (shape %s): input "
                "outside the op's domain, or overflow", (long long)nonfinite,
                (long long)fx_tensor_numel(out), fx_shape_str(out, b, sizeof b));
    return false;
}

fx_node *fx__record(fx_ctx *ctx, const char *op, fx_backward_fn backward, fx_tensor *out, int nin,
                    fx_tensor *const *in)
{
    if (!ctx->grad)
        return NULL;
    bool any = false;
    for (int i = 0; i < nin; i++)
        any |= fx_tensor_requires_grad(in[i]);
    if (!any)
        return NULL;
    fx_node *n = fx__ctx_alloc_meta(ctx, sizeof *n + (size_t)nin * sizeof(fx_tensor *));
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->backward = backward;
    n->op = op;
    n->out = out;
    n->in = (fx_tensor **)(n + 1);
    n->nin = nin;
    for (int i = 0; i < nin; i++)
        n->in[i] = in[i];
    n->prev = ctx->tape;
    ctx->tape = n;
    ctx->tape_len++;
    out->flags |= FX_TENSOR_REQUIRES_GRAD;
    return n;
}

fx_tensor *fx__grad(fx_ctx *ctx, fx_tensor *t)
{
    if (!t->grad)
        t->grad = fx_zeros(ctx, t->dtype, t->ndim, t->shape);
    return t->grad;
}

fx_tensor *fx__grad_for_set(fx_ctx *ctx, fx_tensor *t, bool *fresh)
{
    *fresh = !t->grad;
    if (!t->grad)
        t->grad = fx_tensor_new(ctx, t->dtype, t->ndim, t->shape);
    return t->grad;
}

void fx_ctx_set_grad_ready_hook(fx_ctx *ctx, fx_grad_ready_fn fn, void *data)
{
    if (!ctx)
        return;
    ctx->grad_ready = fn;
    ctx->grad_ready_data = data;
}

/* The grad-ready hook's bookkeeping: per persistent tensor that requires
 * grad, the tape records still to walk that have it as an input. An
 * open-addressing table in the meta arena (reset with the step). */
typedef struct {
    fx_tensor *t;
    int64_t left;
} use_slot;

static bool hooked_input(const fx_tensor *t)
{
    return (t->flags & (FX_TENSOR_PERSISTENT | FX_TENSOR_REQUIRES_GRAD)) ==
           (FX_TENSOR_PERSISTENT | FX_TENSOR_REQUIRES_GRAD);
}

static use_slot *use_slot_of(use_slot *tab, size_t cap, const fx_tensor *t)
{
    size_t h = (size_t)(((uint64_t)(uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ull) & (cap - 1);
    while (tab[h].t && tab[h].t != t)
        h = (h + 1) & (cap - 1);
    return &tab[h];
}

/* Counts the remaining uses (NULL when nothing is hooked, or on error with
 * ctx's status set). */
static use_slot *count_uses(fx_ctx *ctx, size_t *cap_out)
{
    size_t n = 0;
    for (fx_node *nd = ctx->tape; nd; nd = nd->prev)
        for (int i = 0; i < nd->nin; i++)
            n += hooked_input(nd->in[i]);
    if (!n)
        return NULL;
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    use_slot *tab = fx__ctx_alloc_meta(ctx, cap * sizeof *tab);
    if (!tab)
        return NULL;
    memset(tab, 0, cap * sizeof *tab);
    for (fx_node *nd = ctx->tape; nd; nd = nd->prev)
        for (int i = 0; i < nd->nin; i++)
            if (hooked_input(nd->in[i])) {
                use_slot *u = use_slot_of(tab, cap, nd->in[i]);
                u->t = nd->in[i];
                u->left++;
            }
    *cap_out = cap;
    return tab;
}

static fx_status run_tape(fx_ctx *ctx)
{
    size_t cap = 0;
    use_slot *uses = ctx->grad_ready ? count_uses(ctx, &cap) : NULL;
    if (ctx->status != FX_OK)
        return ctx->status;
    for (fx_node *n = ctx->tape; n; n = n->prev) {
        if (n->out->grad) { /* else no gradient reached this output */
            n->backward(ctx, n);
            if (ctx->status != FX_OK)
                return ctx->status;
        }
        for (int i = 0; uses && i < n->nin; i++)
            if (hooked_input(n->in[i])) {
                use_slot *u = use_slot_of(uses, cap, n->in[i]);
                if (--u->left == 0)
                    ctx->grad_ready(ctx->grad_ready_data, u->t);
            }
    }
    ctx->tape = NULL;
    ctx->tape_len = 0;
    return FX_OK;
}

fx_status fx_backward_seed(fx_ctx *ctx, fx_tensor *out, const fx_tensor *seed)
{
    if (!ctx)
        return FX_ERR_ARG;
    fx__ctx_enter(ctx);
    if (ctx->status != FX_OK)
        return ctx->status;
    if (!out || !seed) {
        fx_ctx_fail(ctx, FX_ERR_ARG, "backward: output or seed is NULL");
        return ctx->status;
    }
    if (!fx_tensor_requires_grad(out)) {
        fx_ctx_fail(ctx, FX_ERR_STATE, "backward: the output does not depend on any tensor that "
                    "requires grad (was grad mode off, or backward already run?)");
        return ctx->status;
    }
    if (!ctx->tape && !(out->flags & FX_TENSOR_PERSISTENT)) {
        fx_ctx_fail(ctx, FX_ERR_STATE, "backward: the tape is empty (backward already run?)");
        return ctx->status;
    }
    if (!fx_tensor_same_shape(out, seed) || seed->dtype != out->dtype) {
        char b1[96], b2[96];
        fx_ctx_fail(ctx, FX_ERR_SHAPE, "backward: seed %s does not match output %s",
                    fx_shape_str(seed, b1, sizeof b1), fx_shape_str(out, b2, sizeof b2));
        return ctx->status;
    }
    fx_tensor *g = fx__grad(ctx, out);
    if (!g)
        return ctx->status;
    ctx->be->ew->axpy(1.0f, seed, g);
    return run_tape(ctx);
}

fx_status fx_backward(fx_ctx *ctx, fx_tensor *loss)
{
    if (!ctx)
        return FX_ERR_ARG;
    if (ctx->status != FX_OK)
        return ctx->status;
    if (!loss) {
        fx_ctx_fail(ctx, FX_ERR_ARG, "backward: loss is NULL");
        return ctx->status;
    }
    if (fx_tensor_numel(loss) != 1) {
        char b[96];
        fx_ctx_fail(ctx, FX_ERR_SHAPE, "backward: loss must have one element, got shape %s "
                    "(use fx_backward_seed for other outputs)", fx_shape_str(loss, b, sizeof b));
        return ctx->status;
    }
    fx_tensor *seed = fx_full(ctx, loss->dtype, loss->ndim, loss->shape, 1.0);
    if (!seed)
        return ctx->status;
    return fx_backward_seed(ctx, loss, seed);
}

/* ------------------------------------------------------------- threads */

int fx__num_threads = 1;
static bool threads_set;

#ifdef FX_HAVE_OPENBLAS_SET_THREADS
void openblas_set_num_threads(int n);
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

void fx_set_num_threads(int n)
{
    if (n < 1)
        n = 1;
    threads_set = true;
    fx__num_threads = n;
#ifdef FX_HAVE_OPENBLAS_SET_THREADS
    /* OpenBLAS runs on the calling thread; cpu_gemm splits large products
     * across our own OpenMP threads (see engine/cpu/blas.c). */
    openblas_set_num_threads(1);
#endif
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

/* The default, until fx_set_num_threads is called: FX_NUM_THREADS from the
 * environment, else every online core, so OpenBLAS and our loops agree. */
static void threads_default(void)
{
    if (threads_set)
        return;
    const char *env = getenv("FX_NUM_THREADS");
    long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    fx_set_num_threads(n > 0 && n < 4096 ? (int)n : 1);
}

int fx_get_num_threads(void)
{
    threads_default();
    return fx__num_threads;
}
