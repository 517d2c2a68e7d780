/*
 * common.h - what every .cu file of the CUDA backend shares: the current
 * stream and cuBLAS handle, status checks that name file:line, launch
 * geometry and tensor views passed to kernels by value.
 *
 * Streams (stream.cu has the whole story). Each engine context holds a
 * stream of its priority with a cuBLAS handle bound to it; a thread's work
 * on a device runs on the stream of the context it last used there, or on
 * the device's shared stream when it has used none. Kernels ask
 * fx__cuda_stream(dev) / fx__cuda_blas(dev) and never keep a stream: stream
 * order is the only synchronisation they need, and memory from the
 * stream-ordered pool is safe to reuse on the same stream as soon as its
 * free is enqueued. Host reads (to_host, kernels that return a count)
 * synchronise the current stream.
 *
 * Errors. Kernel-table functions mostly return void, so a failed CUDA or
 * cuBLAS call is recorded as a sticky error (first one wins, message with
 * file:line) of the calling thread's context stream, or of the device for a
 * thread without one, printed once to stderr, and returned by
 * fx_device_sync() on that thread (a device's own error goes to whichever
 * thread syncs first, as before streams were per context). Launches are
 * checked with cudaGetLastError after each launch in debug builds
 * (FX_CUDA_DEBUG, set when NDEBUG is not) and at every sync point always.
 */
#ifndef FX_CUDA_COMMON_H
#define FX_CUDA_COMMON_H

#include "../backend.h"
#include "cuda_api.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#ifndef NDEBUG
#define FX_CUDA_DEBUG 1
#endif

#define FX_CUDA_MAX_DEVICES 16

extern "C" {
/* from engine/internal.h (C linkage; not included here: C-only helpers) */
void fx__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
int64_t fx__shape_numel(int ndim, const int64_t *shape);

/* The family tables, one per .cu file, assembled in backend.cu. */
extern const fx_mem_kernels fx__cuda_mem;
extern const fx_ew_kernels fx__cuda_ew;
extern const fx_blas_kernels fx__cuda_blas_k;
extern const fx_reduce_kernels fx__cuda_reduce;
extern const fx_index_kernels fx__cuda_index;
extern const fx_loss_kernels fx__cuda_loss;
extern const fx_optim_kernels fx__cuda_optim;
extern const fx_conv_kernels fx__cuda_conv;
extern const fx_norm_kernels fx__cuda_norm;
extern const fx_rnn_kernels fx__cuda_rnn;
extern const fx_seq_kernels fx__cuda_seq;
extern const fx_embed_kernels fx__cuda_embed;
extern const fx_backend fx__cuda_backend;
}

/* The CTC kernels (loss_ctc.cu), which loss.cu's table lists. */
int64_t cu_ctc_check(const fx_ctc_args *a, const fx_tensor *targets, int64_t padded_width,
                     const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                     fx_tensor *offsets, fx_tensor *inv_len, int64_t *smax, fx_ctc_issue *issue);
void cu_ctc_forward(const fx_ctc_args *a, const fx_tensor *log_probs, const fx_tensor *targets,
                    const fx_tensor *offsets, const fx_tensor *input_lengths,
                    const fx_tensor *target_lengths, fx_tensor *ext, fx_tensor *alpha,
                    fx_tensor *nll, fx_tensor *loss);
void cu_ctc_backward(const fx_ctc_args *a, const fx_tensor *log_probs,
                     const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                     const fx_tensor *ext, const fx_tensor *alpha, const fx_tensor *nll,
                     const fx_tensor *dloss, fx_tensor *scratch, fx_tensor *dlog_probs);

/* The pooling kernels (pool.cu), which conv.cu's table lists. */
void cu_pool2d(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *x, fx_tensor *y,
               fx_tensor *argmax);
void cu_pool2d_backward(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                        const fx_tensor *argmax, fx_tensor *dx);

/* A sticky error: the first one recorded wins, with its message. Each
 * device has one for the work of threads without a context there, each
 * context stream one for its own work (stream.cu); under mem.cu's lock. */
typedef struct {
    fx_status status;
    char msg[512];
} fx__cuda_error;
/* The calling thread's current context stream's error slot on dev, or NULL
 * when the thread runs on the shared stream (stream.cu). */
fx__cuda_error *fx__cuda_lane_error(int dev);
/* Moves an unread error of a stream given back to the pool to its device
 * (unless the device has one), so the next fx_device_sync still reports it,
 * and clears e (mem.cu). */
void fx__cuda_error_hand_over(int dev, fx__cuda_error *e);

/* Records err (if the first on the thread's stream) and returns false on
 * failure. */
bool fx__cuda_record(int dev, cudaError_t err, const char *what, const char *file, int line);
bool fx__cuda_record_blas(int dev, cublasStatus_t st, const char *what, const char *file,
                          int line);
void fx__cuda_record_msg(int dev, fx_status s, const char *file, int line, const char *fmt, ...);

#define CU_CHECK(dev, call) fx__cuda_record((dev), (call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(dev, call) fx__cuda_record_blas((dev), (call), #call, __FILE__, __LINE__)

/* After every <<<>>>: launch-configuration errors always, execution errors
 * (with a device sync) in debug builds. */
#ifdef FX_CUDA_DEBUG
#define CU_LAUNCHED(dev)                                                                          \
    do {                                                                                          \
        CU_CHECK((dev), cudaGetLastError());                                                      \
        CU_CHECK((dev), cudaStreamSynchronize(fx__cuda_stream(dev)));                              \
    } while (0)
#else
#define CU_LAUNCHED(dev) CU_CHECK((dev), cudaGetLastError())
#endif

/* Makes dev current and returns the calling thread's current stream on it
 * (its context's, else the shared one) and the cuBLAS handle bound to that
 * stream (stream.cu). */
cudaStream_t fx__cuda_stream(int dev);
cublasHandle_t fx__cuda_blas(int dev);
/* The device's shared stream and its handle, created with the device's
 * state on first use (mem.cu). */
cudaStream_t fx__cuda_shared_stream(int dev);
cublasHandle_t fx__cuda_shared_blas(int dev);
/* Sets the math mode of every context stream's handle (stream.cu). */
void fx__cuda_lanes_set_tf32(bool on);
/* Synchronises the current stream, recording any error; false on error. */
bool fx__cuda_wait(int dev, const char *file, int line);
#define CU_WAIT(dev) fx__cuda_wait((dev), __FILE__, __LINE__)

/* n zeroed int64 device slots for a kernel that returns a count, from the
 * pool (one per call: several host threads may share a device); NULL, with
 * the device's error recorded, when there is no memory. */
long long *fx__cuda_counter(int dev, int n);
/* Waits for the stream, copies counter[0..n) to host and frees the slots.
 * false (host zeroed) when something failed: the error is recorded. */
bool fx__cuda_read_counter(int dev, long long *counter, long long *host, int n);

/* Position of the first element of the contiguous i32/i64 tensor idx (n
 * elements) outside [lo, hi], or -1 (synchronises the stream). */
int64_t fx__cuda_first_bad(const fx_tensor *idx, int64_t n, int64_t lo, int64_t hi);

__device__ static inline int64_t idx_at(const void *p, bool i64, int64_t j)
{
    return i64 ? ((const int64_t *)p)[j] : (int64_t)((const int32_t *)p)[j];
}

/* Row-major C = alpha op(A) op(B) + beta C on dev's cuBLAS handle, with
 * explicit leading dimensions (blas.cu). */
void fx__cuda_gemm_rm(int dev, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                      float *C, int64_t ldc);

static inline int tdev(const fx_tensor *t) { return t->device.index; }
static inline int64_t numel(const fx_tensor *t) { return fx_tensor_numel(t); }
static inline float *F(const fx_tensor *t) { return (float *)fx_data(t); }

#define TPB 256
static inline unsigned blocks_for(int64_t n)
{
    int64_t b = (n + TPB - 1) / TPB;
    if (b > 65535LL * 32)
        b = 65535LL * 32; /* grid-stride loops cover the rest */
    return (unsigned)(b < 1 ? 1 : b);
}

#define GRID_LOOP(i, n)                                                                           \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                     \
         i += (int64_t)blockDim.x * gridDim.x)

/* Launches kern over n elements on dev's stream and checks the launch. */
#define LAUNCH(dev, n, kern, ...)                                                                 \
    do {                                                                                          \
        int64_t n_ = (n);                                                                         \
        if (n_ > 0) {                                                                             \
            kern<<<blocks_for(n_), TPB, 0, fx__cuda_stream(dev)>>>(__VA_ARGS__);                   \
            CU_LAUNCHED(dev);                                                                     \
        }                                                                                         \
    } while (0)

/* Shape and strides of up to FX_MAX_DIMS dims, passed by value to kernels. */
struct Dims {
    int nd;
    int64_t shape[FX_MAX_DIMS];
    int64_t st[3][FX_MAX_DIMS]; /* up to three operands' strides */
};

/* Offset of flat index i (row-major over shape) in operand k. */
__device__ static inline int64_t dims_off(const Dims &d, int k, int64_t i)
{
    int64_t off = 0;
    for (int a = d.nd - 1; a >= 0; a--) {
        int64_t s = d.shape[a], q = i % s;
        i /= s;
        off += q * d.st[k][a];
    }
    return off;
}

/* Strides of t broadcast to shape (ndim equal; 0 on size-1 dims that
 * broadcast). */
static inline void bcast_strides(const fx_tensor *t, int nd, const int64_t *shape, int64_t *out)
{
    for (int a = 0; a < nd; a++)
        out[a] = (t->shape[a] == 1 && shape[a] != 1) ? 0 : t->strides[a];
}

static inline Dims dims_of(int nd, const int64_t *shape)
{
    Dims d;
    d.nd = nd;
    for (int a = 0; a < FX_MAX_DIMS; a++) {
        d.shape[a] = a < nd ? shape[a] : 1;
        d.st[0][a] = d.st[1][a] = d.st[2][a] = 0;
    }
    return d;
}

__device__ static inline double atomicAddD(double *p, double v) { return atomicAdd(p, v); }

/* Counter-based uniform in [0,1): must equal fx_uniform_at in internal.h. */
__device__ static inline uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
__device__ static inline float uniform_at(uint64_t seed, uint64_t i)
{
    return (float)(mix64(seed ^ mix64(i)) >> 40) * (1.0f / 16777216.0f);
}

/* Block-wide sum of v (blockDim.x a multiple of 32, <= 1024). */
__device__ static inline double block_sum(double v)
{
    __shared__ double sh[32];
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? sh[threadIdx.x] : 0.0;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0)
        sh[0] = v;
    __syncthreads();
    double r = sh[0];
    __syncthreads();
    return r;
}

/* Block-wide max of v (ignoring NaN; -inf when all are). */
__device__ static inline float block_max(float v)
{
    __shared__ float shm[32];
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_down_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0)
        shm[w] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? shm[threadIdx.x] : -INFINITY;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) {
            float u = __shfl_down_sync(0xffffffffu, v, o);
            v = u > v ? u : v;
        }
    if (threadIdx.x == 0)
        shm[0] = v;
    __syncthreads();
    float r = shm[0];
    __syncthreads();
    return r;
}

#endif
