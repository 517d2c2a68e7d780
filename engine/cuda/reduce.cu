/* reduce.cu - reductions (sum, mean, max with argmax: one block per output),
 * softmax / log-softmax along an axis, whole-tensor sums of squares and
 * non-finite counts. Inputs are contiguous (op contract). Sums accumulate in
 * double like the CPU's; maxima propagate the first NaN and keep the first
 * index among equal values, as the CPU does. */
#include "common.h"

/* Kept and reduced index spaces of x reduced to y's shape: kd.st[0] gives the
 * offset of output o's first input, rd.st[0] the offset of its r-th input. */
static void red_dims(const fx_tensor *x, const fx_tensor *y, Dims *kd, Dims *rd, int64_t *nout,
                     int64_t *count)
{
    int64_t xs[FX_MAX_DIMS], ks[FX_MAX_DIMS], rs[FX_MAX_DIMS];
    fx__contiguous_strides(x->ndim, x->shape, xs);
    *nout = *count = 1;
    for (int a = 0; a < x->ndim; a++) {
        bool red = y->shape[a] == 1;
        ks[a] = red ? 1 : x->shape[a];
        rs[a] = red ? x->shape[a] : 1;
        *(red ? count : nout) *= x->shape[a];
    }
    *kd = dims_of(x->ndim, ks);
    *rd = dims_of(x->ndim, rs);
    for (int a = 0; a < x->ndim; a++)
        kd->st[0][a] = rd->st[0][a] = xs[a];
}

/* (v, i) replaces (m, j), both positions in x: the first NaN wins, else the
 * larger value, ties to the earlier index. */
__device__ static inline bool beats(float v, int64_t i, float m, int64_t j)
{
    if (j < 0)
        return i >= 0;
    if (i < 0)
        return false;
    bool vn = v != v, mn = m != m;
    if (vn || mn)
        return vn && (!mn || i < j);
    return v > m || (v == m && i < j);
}

__global__ void k_reduce(int op, const float *x, float *y, int64_t *argmax, Dims kd, Dims rd,
                         int64_t count)
{
    int64_t o = blockIdx.x;
    int64_t base = dims_off(kd, 0, o);
    if (op == FX_RED_MAX) {
        __shared__ float sv[TPB];
        __shared__ int64_t si[TPB];
        float m = -INFINITY;
        int64_t j = -1;
        for (int64_t r = threadIdx.x; r < count; r += blockDim.x) {
            int64_t off = base + dims_off(rd, 0, r);
            if (beats(x[off], off, m, j)) {
                m = x[off];
                j = off;
            }
        }
        sv[threadIdx.x] = m;
        si[threadIdx.x] = j;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s && beats(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x],
                                         si[threadIdx.x])) {
                sv[threadIdx.x] = sv[threadIdx.x + s];
                si[threadIdx.x] = si[threadIdx.x + s];
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            y[o] = sv[0];
            if (argmax)
                argmax[o] = si[0];
        }
        return;
    }
    double s = 0.0;
    for (int64_t r = threadIdx.x; r < count; r += blockDim.x)
        s += x[base + dims_off(rd, 0, r)];
    s = block_sum(s);
    if (threadIdx.x == 0)
        y[o] = (float)(op == FX_RED_MEAN ? s / (double)count : s);
}

static void cu_reduce(fx_reduce_op op, const fx_tensor *x, fx_tensor *y, fx_tensor *argmax)
{
    int dev = tdev(x);
    Dims kd, rd;
    int64_t nout, count;
    red_dims(x, y, &kd, &rd, &nout, &count);
    if (nout == 0)
        return;
    if (count == 0) { /* empty reductions: sum 0, mean NaN, max -inf with no index */
        fx__cuda_mem.fill(y, op == FX_RED_SUM ? 0.0 : op == FX_RED_MEAN ? NAN : -INFINITY);
        if (argmax)
            fx__cuda_mem.fill(argmax, -1.0);
        return;
    }
    if (nout > INT32_MAX) {
        fx__cuda_record_msg(dev, FX_ERR_SHAPE, __FILE__, __LINE__, "reduce: %lld outputs exceed "
                            "the grid limit", (long long)nout);
        return;
    }
    k_reduce<<<(unsigned)nout, TPB, 0, fx__cuda_stream(dev)>>>(
        (int)op, F(x), F(y), argmax ? (int64_t *)fx_data(argmax) : NULL, kd, rd, count);
    CU_LAUNCHED(dev);
}

/* dx[i] += dy[y index of i] * s, or for MAX dx[argmax[o]] += dy[o]. */
__global__ void k_reduce_bw(const float *dy, float *dx, Dims d, float s, int64_t n)
{
    GRID_LOOP(i, n) dx[i] += dy[dims_off(d, 0, i)] * s;
}

__global__ void k_max_bw(const float *dy, const int64_t *arg, float *dx, int64_t n)
{
    GRID_LOOP(o, n)
    if (arg[o] >= 0)
        atomicAdd(dx + arg[o], dy[o]);
}

static void cu_reduce_backward(fx_reduce_op op, const fx_tensor *dy, const fx_tensor *argmax,
                               fx_tensor *dx)
{
    int dev = tdev(dx);
    if (op == FX_RED_MAX) {
        int64_t n = numel(dy);
        LAUNCH(dev, n, k_max_bw, F(dy), (const int64_t *)fx_data(argmax), F(dx), n);
        return;
    }
    int64_t n = numel(dx), count = 1;
    Dims d = dims_of(dx->ndim, dx->shape);
    int64_t ys[FX_MAX_DIMS];
    fx__contiguous_strides(dy->ndim, dy->shape, ys);
    for (int a = 0; a < dx->ndim; a++) {
        bool red = dy->shape[a] == 1;
        d.st[0][a] = red ? 0 : ys[a];
        if (red)
            count *= dx->shape[a];
    }
    float s = op == FX_RED_MEAN ? (float)(1.0 / (double)(count ? count : 1)) : 1.0f;
    LAUNCH(dev, n, k_reduce_bw, F(dy), F(dx), d, s, n);
}

/* ---------------------------------------------------------------- softmax */

/* Last axis: one block per row. */
__global__ void k_softmax_rows(const float *x, float *y, int64_t A, bool lg)
{
    const float *xr = x + (int64_t)blockIdx.x * A;
    float *yr = y + (int64_t)blockIdx.x * A;
    float m = -INFINITY;
    for (int64_t a = threadIdx.x; a < A; a += blockDim.x)
        m = xr[a] > m ? xr[a] : m;
    m = block_max(m);
    double s = 0.0;
    for (int64_t a = threadIdx.x; a < A; a += blockDim.x)
        s += expf(xr[a] - m);
    s = block_sum(s);
    float f = lg ? (float)log(s) : (float)(1.0 / s);
    for (int64_t a = threadIdx.x; a < A; a += blockDim.x)
        yr[a] = lg ? (xr[a] - m) - f : expf(xr[a] - m) * f;
}

/* Inner axis: one thread per (o, k) line of stride I. */
__global__ void k_softmax_lines(const float *x, float *y, int64_t O, int64_t A, int64_t I, bool lg)
{
    GRID_LOOP(t, O * I)
    {
        int64_t off = (t / I) * A * I + t % I;
        float m = -INFINITY;
        for (int64_t a = 0; a < A; a++)
            m = x[off + a * I] > m ? x[off + a * I] : m;
        double s = 0.0;
        for (int64_t a = 0; a < A; a++)
            s += expf(x[off + a * I] - m);
        float f = lg ? (float)log(s) : (float)(1.0 / s);
        for (int64_t a = 0; a < A; a++) {
            float v = x[off + a * I];
            y[off + a * I] = lg ? (v - m) - f : expf(v - m) * f;
        }
    }
}

static void axis_split(const fx_tensor *t, int axis, int64_t *O, int64_t *A, int64_t *I)
{
    *O = fx__shape_numel(axis, t->shape);
    *A = t->shape[axis];
    *I = fx__shape_numel(t->ndim - axis - 1, t->shape + axis + 1);
}

static void cu_softmax(const fx_tensor *x, int axis, bool lg, fx_tensor *y)
{
    int dev = tdev(x);
    int64_t O, A, I;
    axis_split(x, axis, &O, &A, &I);
    if (!O || !A || !I)
        return;
    if (I == 1) {
        k_softmax_rows<<<(unsigned)O, TPB, 0, fx__cuda_stream(dev)>>>(F(x), F(y), A, lg);
        CU_LAUNCHED(dev);
    } else {
        LAUNCH(dev, O * I, k_softmax_lines, F(x), F(y), O, A, I, lg);
    }
}

__global__ void k_softmax_bw_rows(const float *y, const float *dy, float *dx, int64_t A, bool lg)
{
    int64_t r = (int64_t)blockIdx.x * A;
    double s = 0.0;
    for (int64_t a = threadIdx.x; a < A; a += blockDim.x)
        s += lg ? dy[r + a] : dy[r + a] * y[r + a];
    float f = (float)block_sum(s);
    for (int64_t a = threadIdx.x; a < A; a += blockDim.x) {
        int64_t i = r + a;
        dx[i] += lg ? dy[i] - expf(y[i]) * f : y[i] * (dy[i] - f);
    }
}

__global__ void k_softmax_bw_lines(const float *y, const float *dy, float *dx, int64_t O,
                                   int64_t A, int64_t I, bool lg)
{
    GRID_LOOP(t, O * I)
    {
        int64_t off = (t / I) * A * I + t % I;
        double s = 0.0;
        for (int64_t a = 0; a < A; a++) {
            int64_t i = off + a * I;
            s += lg ? dy[i] : dy[i] * y[i];
        }
        float f = (float)s;
        for (int64_t a = 0; a < A; a++) {
            int64_t i = off + a * I;
            dx[i] += lg ? dy[i] - expf(y[i]) * f : y[i] * (dy[i] - f);
        }
    }
}

static void cu_softmax_backward(const fx_tensor *y, const fx_tensor *dy, int axis, bool lg,
                                fx_tensor *dx)
{
    int dev = tdev(y);
    int64_t O, A, I;
    axis_split(y, axis, &O, &A, &I);
    if (!O || !A || !I)
        return;
    if (I == 1) {
        k_softmax_bw_rows<<<(unsigned)O, TPB, 0, fx__cuda_stream(dev)>>>(F(y), F(dy), F(dx), A, lg);
        CU_LAUNCHED(dev);
    } else {
        LAUNCH(dev, O * I, k_softmax_bw_lines, F(y), F(dy), F(dx), O, A, I, lg);
    }
}

/* --------------------------------------------------- whole-tensor sums */

/* Any strides. sumsq into out[0] (double), non-finite count into out[1]. */
__global__ void k_all(const float *x, Dims d, int64_t n, bool sq, double *sum,
                      unsigned long long *bad)
{
    double s = 0.0;
    unsigned long long b = 0;
    GRID_LOOP(i, n)
    {
        float v = x[dims_off(d, 0, i)];
        if (sq)
            s += (double)v * v;
        else
            b += !isfinite(v);
    }
    if (sq) {
        s = block_sum(s);
        if (threadIdx.x == 0)
            atomicAdd(sum, s);
    } else if (b) {
        atomicAdd(bad, b);
    }
}

/* false when the device failed (error recorded). */
static bool run_all(const fx_tensor *x, bool sq, long long *host)
{
    int dev = tdev(x);
    int64_t n = numel(x);
    long long *c = fx__cuda_counter(dev, 1);
    if (!c)
        return false;
    Dims d = dims_of(x->ndim, x->shape);
    for (int a = 0; a < x->ndim; a++)
        d.st[0][a] = x->strides[a];
    unsigned blocks = blocks_for(n) < 1024 ? blocks_for(n) : 1024;
    if (n > 0) {
        k_all<<<blocks, TPB, 0, fx__cuda_stream(dev)>>>(F(x), d, n, sq, (double *)c,
                                                        (unsigned long long *)c);
        CU_LAUNCHED(dev);
    }
    return fx__cuda_read_counter(dev, c, host, 1);
}

static double cu_sum_squares(const fx_tensor *x)
{
    long long h;
    if (!run_all(x, true, &h))
        return NAN; /* the optimizer reports a non-finite gradient norm */
    double d;
    memcpy(&d, &h, sizeof d);
    return d;
}

static int64_t cu_count_nonfinite(const fx_tensor *x)
{
    long long h;
    if (!run_all(x, false, &h))
        return numel(x) ? numel(x) : 1;
    return h;
}

const fx_reduce_kernels fx__cuda_reduce = {
    .reduce = cu_reduce,
    .reduce_backward = cu_reduce_backward,
    .softmax = cu_softmax,
    .softmax_backward = cu_softmax_backward,
    .sum_squares = cu_sum_squares,
    .count_nonfinite = cu_count_nonfinite,
};
