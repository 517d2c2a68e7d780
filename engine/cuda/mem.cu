/*
 * mem.cu - per-device state (the shared stream and its cuBLAS handle,
 * sticky error), the stream-ordered memory pool with accounting and limits,
 * host<->device and strided copies, fills, device enumeration.
 *
 * Streams. Work runs on the calling thread's current stream of the device
 * (fx__cuda_stream, stream.cu): the stream of the context the thread last
 * used, or, for a thread that has none, the device's shared stream kept
 * here (created at FX_PRIORITY_NORMAL).
 *
 * Pool: every device allocation is cudaMallocAsync on the current stream
 * from the device's default pool, whose release threshold is raised to "keep
 * everything", so memory freed by one step (arena chunks, temporaries) is
 * reused by the next without a driver call. The pool may not add its own
 * dependencies between streams (cudaMemPoolReuseAllowInternalDependencies
 * off): a block freed on a training stream but not yet reached there is not
 * handed to a serving stream at the price of making serving wait for
 * training's queue; the pool grows instead. driver_grows counts allocations
 * after which the pool's reserved size went up.
 */
#include "common.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    bool init;
    cudaStream_t stream;
    cublasHandle_t blas;
    cudaMemPool_t pool;
    /* accounting (under lock) */
    size_t in_use, peak, limit, reserved_seen;
    uint64_t allocs, frees, grows;
    /* ptr -> size, open addressing (kept small: live allocations only) */
    void **keys;
    size_t *sizes;
    size_t cap, count;
    /* sticky error of the work without a context */
    fx__cuda_error err;
} dev_state;

static dev_state g_dev[FX_CUDA_MAX_DEVICES];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;      /* accounting, errors */
static pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER; /* device set-up only */
static __thread char t_alloc_err[320];
static bool g_tf32;

/* ------------------------------------------------------------- errors */

static void set_error(int dev, fx_status s, const char *msg)
{
    if (dev < 0 || dev >= FX_CUDA_MAX_DEVICES)
        dev = 0;
    fx__cuda_error *lane = fx__cuda_lane_error(dev);
    pthread_mutex_lock(&g_lock);
    fx__cuda_error *e = lane ? lane : &g_dev[dev].err;
    bool first = e->status == FX_OK;
    if (first) {
        e->status = s;
        snprintf(e->msg, sizeof e->msg, "%s", msg);
    }
    pthread_mutex_unlock(&g_lock);
    if (first)
        fprintf(stderr, "fluxion: cuda:%d: %s\n", dev, msg);
}

void fx__cuda_error_hand_over(int dev, fx__cuda_error *e)
{
    pthread_mutex_lock(&g_lock);
    if (e->status != FX_OK && g_dev[dev].err.status == FX_OK)
        g_dev[dev].err = *e;
    e->status = FX_OK;
    e->msg[0] = 0;
    pthread_mutex_unlock(&g_lock);
}

void fx__cuda_record_msg(int dev, fx_status s, const char *file, int line, const char *fmt, ...)
{
    char m[400], full[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "%s (%s:%d)", m, file, line);
    set_error(dev, s, full);
}

bool fx__cuda_record(int dev, cudaError_t err, const char *what, const char *file, int line)
{
    if (err == cudaSuccess)
        return true;
    fx__cuda_record_msg(dev, err == cudaErrorMemoryAllocation ? FX_ERR_NOMEM : FX_ERR_DEVICE, file,
                        line, "%s failed: %s (%s)", what, cudaGetErrorString(err),
                        cudaGetErrorName(err));
    return false;
}

bool fx__cuda_record_blas(int dev, cublasStatus_t st, const char *what, const char *file, int line)
{
    if (st == CUBLAS_STATUS_SUCCESS)
        return true;
    fx__cuda_record_msg(dev, st == CUBLAS_STATUS_ALLOC_FAILED ? FX_ERR_NOMEM : FX_ERR_DEVICE, file,
                        line, "%s failed: %s", what, cublasGetStatusString(st));
    return false;
}

/* -------------------------------------------------------- device state */

static dev_state *state(int dev)
{
    dev_state *d = &g_dev[dev];
    if (d->init)
        return d;
    /* not g_lock: a failing call below records its error under g_lock */
    pthread_mutex_lock(&g_init_lock);
    if (!d->init) {
        CU_CHECK(dev, cudaSetDevice(dev));
        CU_CHECK(dev, cudaStreamCreateWithPriority(&d->stream, cudaStreamNonBlocking,
                                                   fx__cuda_priority_value(dev,
                                                                           FX_PRIORITY_NORMAL)));
        CU_CHECK(dev, cudaDeviceGetDefaultMemPool(&d->pool, dev));
        uint64_t keep = UINT64_MAX;
        CU_CHECK(dev, cudaMemPoolSetAttribute(d->pool, cudaMemPoolAttrReleaseThreshold, &keep));
        int no = 0; /* see the top of the file */
        CU_CHECK(dev, cudaMemPoolSetAttribute(d->pool, cudaMemPoolReuseAllowInternalDependencies,
                                              &no));
        CUBLAS_CHECK(dev, cublasCreate(&d->blas));
        CUBLAS_CHECK(dev, cublasSetStream(d->blas, d->stream));
        CUBLAS_CHECK(dev, cublasSetMathMode(d->blas, g_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                            : CUBLAS_DEFAULT_MATH));
        __sync_synchronize();
        d->init = true;
    }
    pthread_mutex_unlock(&g_init_lock);
    return d;
}

cudaStream_t fx__cuda_shared_stream(int dev)
{
    dev_state *d = state(dev);
    cudaSetDevice(dev); /* cheap when already current */
    return d->stream;
}

cublasHandle_t fx__cuda_shared_blas(int dev)
{
    fx__cuda_shared_stream(dev);
    return g_dev[dev].blas;
}

bool fx__cuda_wait(int dev, const char *file, int line)
{
    cudaStream_t s = fx__cuda_stream(dev);
    bool ok = fx__cuda_record(dev, cudaGetLastError(), "kernel launch", file, line);
    return fx__cuda_record(dev, cudaStreamSynchronize(s), "cudaStreamSynchronize", file, line) &&
           ok;
}

long long *fx__cuda_counter(int dev, int n)
{
    cudaStream_t s = fx__cuda_stream(dev);
    void *p = NULL;
    size_t nb = (size_t)n * sizeof(long long);
    if (!CU_CHECK(dev, cudaMallocAsync(&p, nb, s)))
        return NULL;
    if (!CU_CHECK(dev, cudaMemsetAsync(p, 0, nb, s))) {
        cudaFreeAsync(p, s);
        return NULL;
    }
    return (long long *)p;
}

bool fx__cuda_read_counter(int dev, long long *counter, long long *host, int n)
{
    cudaStream_t s = fx__cuda_stream(dev);
    memset(host, 0, (size_t)n * sizeof *host);
    if (!counter)
        return false;
    bool ok = CU_CHECK(dev, cudaMemcpyAsync(host, counter, (size_t)n * sizeof(long long),
                                            cudaMemcpyDeviceToHost, s));
    CU_CHECK(dev, cudaFreeAsync(counter, s));
    ok = CU_WAIT(dev) && ok;
    if (!ok)
        memset(host, 0, (size_t)n * sizeof *host);
    return ok;
}

void fx__cuda_set_tf32(bool on)
{
    g_tf32 = on;
    for (int i = 0; i < FX_CUDA_MAX_DEVICES; i++)
        if (g_dev[i].init)
            CUBLAS_CHECK(i, cublasSetMathMode(g_dev[i].blas, on ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                : CUBLAS_DEFAULT_MATH));
    fx__cuda_lanes_set_tf32(on);
}

bool fx__cuda_tf32(void) { return g_tf32; }

/* --------------------------------------------------------- enumeration */

/* Asked once: devices do not come and go while a process runs, and every
 * allocation checks its device index. */
static pthread_once_t g_count_once = PTHREAD_ONCE_INIT;
static int g_count;
static const char *g_count_why = "";

static void count_devices(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* not sticky: clear it */
        g_count_why = cudaGetErrorString(e);
        n = 0;
    } else if (n == 0) {
        g_count_why = "the driver reports 0 devices";
    }
    g_count = n > FX_CUDA_MAX_DEVICES ? FX_CUDA_MAX_DEVICES : n;
}

int fx__cuda_device_count(const char **why)
{
    pthread_once(&g_count_once, count_devices);
    if (why)
        *why = g_count_why;
    return g_count;
}

static bool valid(int index) { return index >= 0 && index < fx__cuda_device_count(NULL); }

fx_status fx__cuda_device_info(int index, fx_device_info *out)
{
    if (!valid(index))
        return FX_ERR_DEVICE;
    cudaDeviceProp p;
    if (!CU_CHECK(index, cudaGetDeviceProperties(&p, index)))
        return FX_ERR_DEVICE;
    snprintf(out->name, sizeof out->name, "%.95s", p.name);
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    fx__cuda_stream(index);
    size_t fr = 0, tot = 0;
    if (!CU_CHECK(index, cudaMemGetInfo(&fr, &tot)))
        return FX_ERR_DEVICE;
    out->total_bytes = tot;
    out->free_bytes = fr;
    pthread_mutex_lock(&g_lock);
    out->used_bytes = g_dev[index].in_use;
    out->limit_bytes = g_dev[index].limit;
    pthread_mutex_unlock(&g_lock);
    return FX_OK;
}

fx_status fx__cuda_set_memory_limit(int index, size_t bytes)
{
    if (!valid(index))
        return FX_ERR_DEVICE;
    pthread_mutex_lock(&g_lock);
    g_dev[index].limit = bytes;
    pthread_mutex_unlock(&g_lock);
    return FX_OK;
}

fx_status fx__cuda_mem_stats(int index, fx_device_mem_stats *out)
{
    if (!valid(index))
        return FX_ERR_DEVICE;
    dev_state *d = state(index);
    uint64_t reserved = 0;
    CU_CHECK(index, cudaMemPoolGetAttribute(d->pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
    pthread_mutex_lock(&g_lock);
    out->allocs = d->allocs;
    out->frees = d->frees;
    out->driver_grows = d->grows;
    out->in_use = d->in_use;
    out->peak = d->peak;
    out->reserved = (size_t)reserved;
    pthread_mutex_unlock(&g_lock);
    return FX_OK;
}

fx_status fx__cuda_sync(int index, char *err, size_t n)
{
    if (!valid(index))
        return FX_ERR_DEVICE;
    CU_WAIT(index);
    fx__cuda_error *lane = fx__cuda_lane_error(index);
    pthread_mutex_lock(&g_lock);
    /* this thread's stream's error first, else the device's */
    fx__cuda_error *e = lane && lane->status != FX_OK ? lane : &g_dev[index].err;
    fx_status s = e->status;
    if (err && n)
        snprintf(err, n, "%s", s == FX_OK ? "" : e->msg);
    e->status = FX_OK;
    e->msg[0] = 0;
    pthread_mutex_unlock(&g_lock);
    return s;
}

const char *fx__cuda_alloc_error(void) { return t_alloc_err; }

/* -------------------------------------------------------------- pool */

static size_t slot_of(const dev_state *d, const void *p)
{
    uintptr_t h = (uintptr_t)p >> 6;
    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ULL;
    return (size_t)(h & (d->cap - 1));
}

static bool table_put(dev_state *d, void *p, size_t n)
{
    if ((d->count + 1) * 2 > d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 256;
        void **nk = (void **)calloc(ncap, sizeof *nk);
        size_t *ns = (size_t *)calloc(ncap, sizeof *ns);
        if (!nk || !ns) {
            free(nk);
            free(ns);
            return false;
        }
        void **ok = d->keys;
        size_t *os = d->sizes, ocap = d->cap;
        d->keys = nk;
        d->sizes = ns;
        d->cap = ncap;
        d->count = 0;
        for (size_t i = 0; i < ocap; i++)
            if (ok[i])
                table_put(d, ok[i], os[i]);
        free(ok);
        free(os);
    }
    size_t i = slot_of(d, p);
    while (d->keys[i])
        i = (i + 1) & (d->cap - 1);
    d->keys[i] = p;
    d->sizes[i] = n;
    d->count++;
    return true;
}

/* Removes p; returns its size (0 when unknown). Backward-shift deletion. */
static size_t table_take(dev_state *d, void *p)
{
    if (!d->cap)
        return 0;
    size_t i = slot_of(d, p);
    while (d->keys[i] && d->keys[i] != p)
        i = (i + 1) & (d->cap - 1);
    if (!d->keys[i])
        return 0;
    size_t n = d->sizes[i];
    d->keys[i] = NULL;
    d->count--;
    for (size_t j = (i + 1) & (d->cap - 1); d->keys[j]; j = (j + 1) & (d->cap - 1)) {
        void *k = d->keys[j];
        size_t s = d->sizes[j];
        d->keys[j] = NULL;
        d->count--;
        table_put(d, k, s);
    }
    return n;
}

static void *cuda_alloc(fx_device dev, size_t nbytes)
{
    int i = dev.index;
    t_alloc_err[0] = 0;
    if (!valid(i)) {
        snprintf(t_alloc_err, sizeof t_alloc_err, "cuda:%d does not exist", i);
        return NULL;
    }
    size_t n = (nbytes + 255) & ~(size_t)255;
    if (n < nbytes)
        return NULL;
    dev_state *d = state(i);
    pthread_mutex_lock(&g_lock);
    if (d->limit && (d->in_use + n > d->limit || n > d->limit)) {
        snprintf(t_alloc_err, sizeof t_alloc_err,
                 "cuda:%d memory limit exceeded: %zu bytes requested, %zu in use, limit %zu", i,
                 n, d->in_use, d->limit);
        pthread_mutex_unlock(&g_lock);
        return NULL;
    }
    d->in_use += n; /* reserve before the call so concurrent allocations see it */
    pthread_mutex_unlock(&g_lock);

    void *p = NULL;
    cudaStream_t s = fx__cuda_stream(i);
    cudaError_t e = cudaMallocAsync(&p, n ? n : 256, s);
    uint64_t reserved = 0;
    if (e == cudaSuccess)
        CU_CHECK(i, cudaMemPoolGetAttribute(d->pool, cudaMemPoolAttrReservedMemCurrent,
                                            &reserved));
    pthread_mutex_lock(&g_lock);
    if (e != cudaSuccess || !table_put(d, p, n)) {
        d->in_use -= n;
        pthread_mutex_unlock(&g_lock);
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        snprintf(t_alloc_err, sizeof t_alloc_err,
                 "cuda:%d out of memory: %zu bytes requested, %zu free of %zu (%s)", i, n, fr, tot,
                 e != cudaSuccess ? cudaGetErrorString(e) : "host table");
        if (p)
            cudaFreeAsync(p, s);
        return NULL;
    }
    d->allocs++;
    if (d->in_use > d->peak)
        d->peak = d->in_use;
    if (reserved > d->reserved_seen) {
        d->grows++;
        d->reserved_seen = reserved;
    }
    pthread_mutex_unlock(&g_lock);
    return p;
}

static void cuda_free(fx_device dev, void *p)
{
    if (!p)
        return;
    int i = dev.index;
    dev_state *d = state(i);
    pthread_mutex_lock(&g_lock);
    size_t n = table_take(d, p);
    d->in_use -= n;
    d->frees++;
    pthread_mutex_unlock(&g_lock);
    CU_CHECK(i, cudaFreeAsync(p, fx__cuda_stream(i)));
}

/* ------------------------------------------------------------- copies */

/* Element-size-generic strided copy: dst[off_d(i)] (+)= src[off_s(i)]. */
template <typename T>
__global__ void k_strided(T *dst, const T *src, Dims d, int64_t n)
{
    GRID_LOOP(i, n) dst[dims_off(d, 0, i)] = src[dims_off(d, 1, i)];
}

__global__ void k_strided_acc(float *dst, const float *src, Dims d, int64_t n)
{
    GRID_LOOP(i, n) dst[dims_off(d, 0, i)] += src[dims_off(d, 1, i)];
}

static void strided(int dev, void *dst, const int64_t *dst_st, const void *src,
                    const int64_t *src_st, int nd, const int64_t *shape, size_t es, bool acc)
{
    Dims d = dims_of(nd, shape);
    for (int a = 0; a < nd; a++) {
        d.st[0][a] = dst_st[a];
        d.st[1][a] = src_st[a];
    }
    int64_t n = fx__shape_numel(nd, shape);
    if (acc)
        LAUNCH(dev, n, k_strided_acc, (float *)dst, (const float *)src, d, n);
    else if (es == 8)
        LAUNCH(dev, n, k_strided<int64_t>, (int64_t *)dst, (const int64_t *)src, d, n);
    else if (es == 4)
        LAUNCH(dev, n, k_strided<int32_t>, (int32_t *)dst, (const int32_t *)src, d, n);
    else
        LAUNCH(dev, n, k_strided<int16_t>, (int16_t *)dst, (const int16_t *)src, d, n);
}

static size_t bytes_of(const fx_tensor *t)
{
    return (size_t)numel(t) * fx_dtype_size(t->dtype);
}

/* Host memory the driver knows (pinned) is read asynchronously, so the
 * caller's buffer must outlive the copy: wait for it. Pageable memory is
 * staged by the driver before cudaMemcpyAsync returns. */
static bool pinned(const void *p)
{
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return a.type == cudaMemoryTypeHost;
}

static void cuda_to_host(const fx_tensor *t, void *dst)
{
    int dev = tdev(t);
    cudaStream_t s = fx__cuda_stream(dev);
    size_t nb = bytes_of(t);
    if (!nb)
        return;
    if (fx_tensor_is_contiguous(t)) {
        CU_CHECK(dev, cudaMemcpyAsync(dst, fx_data(t), nb, cudaMemcpyDeviceToHost, s));
    } else { /* gather on the device, then one copy */
        void *tmp = cuda_alloc(t->device, nb);
        if (!tmp) {
            fx__cuda_record_msg(dev, FX_ERR_NOMEM, __FILE__, __LINE__, "to_host: %s",
                                t_alloc_err);
            memset(dst, 0, nb);
            return;
        }
        int64_t cs[FX_MAX_DIMS];
        fx__contiguous_strides(t->ndim, t->shape, cs);
        strided(dev, tmp, cs, fx_data(t), t->strides, t->ndim, t->shape,
                fx_dtype_size(t->dtype), false);
        CU_CHECK(dev, cudaMemcpyAsync(dst, tmp, nb, cudaMemcpyDeviceToHost, s));
        cuda_free(t->device, tmp);
    }
    CU_WAIT(dev); /* the caller reads dst next */
}

static void cuda_from_host(fx_tensor *t, const void *src)
{
    int dev = tdev(t);
    cudaStream_t s = fx__cuda_stream(dev);
    size_t nb = bytes_of(t);
    if (!nb)
        return;
    if (fx_tensor_is_contiguous(t)) {
        CU_CHECK(dev, cudaMemcpyAsync(fx_data(t), src, nb, cudaMemcpyHostToDevice, s));
    } else {
        void *tmp = cuda_alloc(t->device, nb);
        if (!tmp) {
            fx__cuda_record_msg(dev, FX_ERR_NOMEM, __FILE__, __LINE__, "from_host: %s",
                                t_alloc_err);
            return;
        }
        CU_CHECK(dev, cudaMemcpyAsync(tmp, src, nb, cudaMemcpyHostToDevice, s));
        int64_t cs[FX_MAX_DIMS];
        fx__contiguous_strides(t->ndim, t->shape, cs);
        strided(dev, fx_data(t), t->strides, tmp, cs, t->ndim, t->shape,
                fx_dtype_size(t->dtype), false);
        cuda_free(t->device, tmp);
    }
    if (pinned(src))
        CU_WAIT(dev);
}

static void cuda_copy(fx_tensor *dst, const fx_tensor *src, bool accumulate)
{
    int dev = tdev(dst);
    if (!accumulate && fx_tensor_is_contiguous(dst) && fx_tensor_is_contiguous(src)) {
        size_t nb = bytes_of(src);
        if (nb)
            CU_CHECK(dev, cudaMemcpyAsync(fx_data(dst), fx_data(src), nb,
                                          cudaMemcpyDeviceToDevice, fx__cuda_stream(dev)));
        return;
    }
    strided(dev, fx_data(dst), dst->strides, fx_data(src), src->strides, src->ndim, src->shape,
            fx_dtype_size(src->dtype), accumulate);
}

template <typename T> __global__ void k_fill(T *p, T v, int64_t n)
{
    GRID_LOOP(i, n) p[i] = v;
}

static void cuda_fill(fx_tensor *t, double v)
{
    int dev = tdev(t);
    int64_t n = numel(t);
    void *p = fx_data(t);
    bool zero = v == 0.0 && !signbit(v);
    if (zero || t->dtype == FX_F16 || t->dtype == FX_BF16) {
        if (n)
            CU_CHECK(dev, cudaMemsetAsync(p, 0, bytes_of(t), fx__cuda_stream(dev)));
        return;
    }
    switch (t->dtype) {
    case FX_F32: LAUNCH(dev, n, k_fill<float>, (float *)p, (float)v, n); break;
    case FX_I32: LAUNCH(dev, n, k_fill<int32_t>, (int32_t *)p, (int32_t)v, n); break;
    default: LAUNCH(dev, n, k_fill<int64_t>, (int64_t *)p, (int64_t)v, n); break;
    }
}

const fx_mem_kernels fx__cuda_mem = {
    .alloc = cuda_alloc,
    .free = cuda_free,
    .to_host = cuda_to_host,
    .from_host = cuda_from_host,
    .copy = cuda_copy,
    .fill = cuda_fill,
};
