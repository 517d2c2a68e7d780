/*
 * stream.cu - one CUDA stream per engine context, of the context's
 * priority, with a cuBLAS handle bound to it ("lanes"), and the per-thread
 * current stream every kernel launches on.
 *
 * Why. With one stream per device, a serving batch queued behind a
 * training step waited for the whole step. Now each fx_ctx on a CUDA device
 * holds a lane: a stream created with cudaStreamCreateWithPriority at the
 * context's priority (fx_ctx_set_priority: serving HIGH, training NORMAL),
 * so the GPU's block scheduler runs a serving context's kernels as soon as
 * SMs free up instead of after the training queue.
 *
 * Who owns what.
 * - A lane (stream, cuBLAS handle bound to it with cublasSetStream, one
 *   event) belongs to one context from its first use to fx_ctx_free, which
 *   waits for the lane's work and gives it back to a per-device,
 *   per-priority pool; lanes are reused, never destroyed (a daemon makes a
 *   context per batcher instance and per job, so the pool stays small).
 * - The device's shared stream and handle (mem.cu) carry the work of
 *   threads that have no context on the device: loading weights, moving
 *   tensors, persistent tensors made before a thread's first op.
 * - Each thread has a current lane per device (thread-local). Every entry
 *   of the engine that takes a context makes that context's lane current
 *   (fx__ctx_enter, ctx.c); work without a context (persistent tensors,
 *   fx_optim_step, fx_tensor_to_host) follows on the thread's current lane.
 *   fx__cuda_stream(dev) returns it, else the shared stream.
 *
 * Ordering rules (what replaces "one stream orders everything").
 * 1. One thread's work stays in program order: when a thread switches
 *    lanes (two contexts on one thread), the new lane waits on an event
 *    recorded on the old one. Concurrency comes from contexts used by
 *    different threads, as serving's batcher instances and training jobs
 *    are.
 * 2. Shared stream before contexts: a lane, when first taken and at every
 *    fx_ctx_reset, waits on an event recorded on the shared stream, so
 *    weights another thread uploaded without a context are there before
 *    the next step reads them. The shared stream never waits on a lane, so
 *    a serving lane never waits for training's queue through it.
 * 3. Between contexts on different threads there is no device-side order:
 *    hand a tensor written under one context to another thread after
 *    fx_device_sync (serving syncs after every batch, training after every
 *    step), and free a persistent tensor only when no other thread's work
 *    still reads it. fx_ctx_free waits for the context's own work.
 * 4. The memory pool does not add cross-stream dependencies of its own
 *    (mem.cu), for the same reason as rule 2.
 *
 * Errors. Each lane has its own sticky error (common.h): a failure while a
 * thread runs on a context's stream is reported by fx_device_sync on that
 * thread only, so a training step's error does not fail a serving batch on
 * the same GPU. fx_device_sync waits for the calling thread's current
 * stream. An error the GPU raises for the whole CUDA context (an illegal
 * address) still reaches every stream's next call.
 */
#include "common.h"

#include <pthread.h>
#include <stdlib.h>

#define FX_LANE_LEVELS 3 /* LOW, NORMAL, HIGH */

struct fx__cuda_lane {
    int dev;
    fx_priority prio;
    cudaStream_t stream;
    cublasHandle_t blas; /* bound to stream */
    cudaEvent_t ev;      /* recorded on a stream this lane must follow */
    unsigned gen;        /* bumped on release: older thread bindings end */
    fx__cuda_error err;  /* of the work on this stream (mem.cu's lock) */
    fx__cuda_lane *next_free;
    fx__cuda_lane *next_all;
};

static pthread_mutex_t g_lanes_lock = PTHREAD_MUTEX_INITIALIZER;
static fx__cuda_lane *g_free[FX_CUDA_MAX_DEVICES][FX_LANE_LEVELS];
static fx__cuda_lane *g_all; /* every lane ever made, for fx_set_tf32 */

/* The calling thread's current lane per device, valid while the lane's
 * generation is the one recorded with it. */
static __thread fx__cuda_lane *t_lane[FX_CUDA_MAX_DEVICES];
static __thread unsigned t_gen[FX_CUDA_MAX_DEVICES];

static int level_of(fx_priority p)
{
    return p <= FX_PRIORITY_LOW ? 0 : p >= FX_PRIORITY_HIGH ? 2 : 1;
}

static unsigned gen_of(const fx__cuda_lane *l)
{
    return __atomic_load_n(&l->gen, __ATOMIC_ACQUIRE);
}

int fx__cuda_priority_value(int dev, fx_priority p)
{
    int least = 0, greatest = 0;
    if (cudaSetDevice(dev) != cudaSuccess ||
        cudaDeviceGetStreamPriorityRange(&least, &greatest) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: the stream gets the default priority */
        return 0;
    }
    if (p <= FX_PRIORITY_LOW)
        return least;
    if (p >= FX_PRIORITY_HIGH)
        return greatest;
    return least + (greatest - least) / 2; /* lower numbers are higher priorities */
}

static cublasMath_t math_mode(void)
{
    return fx__cuda_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
}

static void lane_destroy(fx__cuda_lane *l)
{
    if (l->blas)
        cublasDestroy(l->blas);
    if (l->ev)
        cudaEventDestroy(l->ev);
    if (l->stream)
        cudaStreamDestroy(l->stream);
    free(l);
}

/* A new lane on dev; NULL with the device's error recorded. */
static fx__cuda_lane *lane_new(int dev, fx_priority p)
{
    fx__cuda_lane *l = (fx__cuda_lane *)calloc(1, sizeof *l);
    if (!l) {
        fx__cuda_record_msg(dev, FX_ERR_NOMEM, __FILE__, __LINE__,
                            "out of host memory for a stream");
        return NULL;
    }
    l->dev = dev;
    l->prio = p;
    int cp = fx__cuda_priority_value(dev, p);
    bool ok = CU_CHECK(dev, cudaSetDevice(dev)) &&
              CU_CHECK(dev, cudaStreamCreateWithPriority(&l->stream, cudaStreamNonBlocking, cp)) &&
              CU_CHECK(dev, cudaEventCreateWithFlags(&l->ev, cudaEventDisableTiming)) &&
              CUBLAS_CHECK(dev, cublasCreate(&l->blas)) &&
              CUBLAS_CHECK(dev, cublasSetStream(l->blas, l->stream));
    if (!ok) {
        lane_destroy(l);
        return NULL;
    }
    return l;
}

/* A lane of priority p on dev: a pooled one, else a new one. */
static fx__cuda_lane *acquire(int dev, fx_priority p)
{
    fx__cuda_shared_stream(dev); /* the device's state (pool, shared stream) first */
    int k = level_of(p);
    pthread_mutex_lock(&g_lanes_lock);
    fx__cuda_lane *l = g_free[dev][k];
    if (l)
        g_free[dev][k] = l->next_free;
    pthread_mutex_unlock(&g_lanes_lock);
    if (l)
        return l;
    l = lane_new(dev, p);
    if (!l)
        return NULL;
    pthread_mutex_lock(&g_lanes_lock); /* the math mode under the lock fx_set_tf32 takes */
    CUBLAS_CHECK(dev, cublasSetMathMode(l->blas, math_mode()));
    l->next_all = g_all;
    g_all = l;
    pthread_mutex_unlock(&g_lanes_lock);
    return l;
}

/* The lane waits (on the device, not the host) for everything queued on
 * `from` so far. */
static void follow(fx__cuda_lane *l, cudaStream_t from)
{
    if (from == l->stream)
        return;
    CU_CHECK(l->dev, cudaEventRecord(l->ev, from));
    CU_CHECK(l->dev, cudaStreamWaitEvent(l->stream, l->ev, 0));
}

/* The thread's current lane on dev, or NULL (shared stream). */
static fx__cuda_lane *bound(int dev)
{
    fx__cuda_lane *l = t_lane[dev];
    if (l && gen_of(l) != t_gen[dev]) {
        t_lane[dev] = NULL; /* released by its context (maybe on another thread) */
        l = NULL;
    }
    return l;
}

void fx__cuda_enter(int dev, fx__cuda_lane **slot, fx_priority prio)
{
    if (dev < 0 || dev >= FX_CUDA_MAX_DEVICES)
        return;
    fx__cuda_lane *l = *slot;
    if (l && t_lane[dev] == l && t_gen[dev] == gen_of(l))
        return;
    fx__cuda_lane *cur = bound(dev);
    if (!l) {
        l = acquire(dev, prio);
        if (!l)
            return;
        *slot = l;
        if (cur)
            follow(l, fx__cuda_shared_stream(dev)); /* rule 2; else the line below does it */
    }
    follow(l, cur ? cur->stream : fx__cuda_shared_stream(dev)); /* rule 1 */
    t_lane[dev] = l;
    t_gen[dev] = gen_of(l);
}

void fx__cuda_follow_shared(fx__cuda_lane *l)
{
    if (l)
        follow(l, fx__cuda_shared_stream(l->dev));
}

void fx__cuda_release(fx__cuda_lane *l)
{
    if (!l)
        return;
    int dev = l->dev;
    if (t_lane[dev] == l)
        t_lane[dev] = NULL; /* a failure of the wait below is the device's */
    CU_CHECK(dev, cudaSetDevice(dev));
    CU_CHECK(dev, cudaStreamSynchronize(l->stream));
    __atomic_add_fetch(&l->gen, 1, __ATOMIC_RELEASE);
    fx__cuda_error_hand_over(dev, &l->err); /* the next owner starts clean */
    pthread_mutex_lock(&g_lanes_lock);
    int k = level_of(l->prio);
    l->next_free = g_free[dev][k];
    g_free[dev][k] = l;
    pthread_mutex_unlock(&g_lanes_lock);
}

fx__cuda_error *fx__cuda_lane_error(int dev)
{
    fx__cuda_lane *l = bound(dev);
    return l ? &l->err : NULL;
}

fx_status fx__cuda_lane_info(const fx__cuda_lane *l, void **stream, int *cuda_priority)
{
    if (!l)
        return FX_ERR_STATE;
    if (stream)
        *stream = (void *)l->stream;
    if (cuda_priority && cudaStreamGetPriority(l->stream, cuda_priority) != cudaSuccess) {
        cudaGetLastError();
        return FX_ERR_DEVICE;
    }
    return FX_OK;
}

cudaStream_t fx__cuda_stream(int dev)
{
    fx__cuda_lane *l = bound(dev);
    if (!l)
        return fx__cuda_shared_stream(dev);
    cudaSetDevice(dev); /* cheap when already current */
    return l->stream;
}

cublasHandle_t fx__cuda_blas(int dev)
{
    fx__cuda_lane *l = bound(dev);
    if (!l)
        return fx__cuda_shared_blas(dev);
    cudaSetDevice(dev);
    return l->blas;
}

void fx__cuda_lanes_set_tf32(bool on)
{
    pthread_mutex_lock(&g_lanes_lock);
    for (fx__cuda_lane *l = g_all; l; l = l->next_all)
        CUBLAS_CHECK(l->dev, cublasSetMathMode(l->blas, on ? CUBLAS_TF32_TENSOR_OP_MATH
                                                           : CUBLAS_DEFAULT_MATH));
    pthread_mutex_unlock(&g_lanes_lock);
}

void fx__cuda_inject_error(int dev, const char *msg)
{
    fx__cuda_record_msg(dev, FX_ERR_DEVICE, __FILE__, __LINE__, "%s", msg);
}
