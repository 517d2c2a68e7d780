/* ew.cu - elementwise kernels: unary, binary with broadcasting, where,
 * dropout masks (the CPU's counter-based generator, so masks match), axpy.
 * Gradients into broadcast operands accumulate with atomicAdd. */
#include "common.h"

#define GELU_C 0.7978845608028654f
#define GELU_K 0.044715f
#define RSQRT2 0.7071067811865476f
#define TWO_RSQRTPI 1.1283791670955126f
#define RSQRT2PI 0.3989422804014327f

__device__ static inline float un_f(int op, float a, float b, float v)
{
    switch (op) {
    case FX_UN_NEG: return -v;
    case FX_UN_SCALE: return a * v;
    case FX_UN_ADD_SCALAR: return v + a;
    case FX_UN_EXP: return expf(v);
    case FX_UN_LOG: return logf(v);
    case FX_UN_SQRT: return sqrtf(v);
    case FX_UN_POW: return powf(v, a);
    case FX_UN_ABS: return fabsf(v);
    case FX_UN_RELU: return v > 0.0f ? v : 0.0f;
    case FX_UN_LEAKY_RELU: return v > 0.0f ? v : a * v;
    case FX_UN_ELU: return v > 0.0f ? v : a * expm1f(v);
    case FX_UN_GELU: return 0.5f * v * (1.0f + tanhf(GELU_C * (v + GELU_K * v * v * v)));
    case FX_UN_SIGMOID: return v >= 0.0f ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v));
    case FX_UN_TANH: return tanhf(v);
    case FX_UN_ERF: return erff(v);
    case FX_UN_GELU_EXACT: return 0.5f * v * erfcf(-v * RSQRT2); /* as the CPU's */
    default: return v < a ? a : (v > b ? b : v); /* clamp */
    }
}

__device__ static inline float un_d(int op, float a, float b, float v, float o)
{
    switch (op) {
    case FX_UN_NEG: return -1.0f;
    case FX_UN_SCALE: return a;
    case FX_UN_ADD_SCALAR: return 1.0f;
    case FX_UN_EXP: return o;
    case FX_UN_LOG: return 1.0f / v;
    case FX_UN_SQRT: return 0.5f / o;
    case FX_UN_POW: return a * powf(v, a - 1.0f);
    case FX_UN_ABS: return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
    case FX_UN_RELU: return v > 0.0f ? 1.0f : 0.0f;
    case FX_UN_LEAKY_RELU: return v > 0.0f ? 1.0f : a;
    case FX_UN_ELU: return v > 0.0f ? 1.0f : o + a;
    case FX_UN_GELU: {
        float t = tanhf(GELU_C * (v + GELU_K * v * v * v));
        return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_K * v * v);
    }
    case FX_UN_SIGMOID: return o * (1.0f - o);
    case FX_UN_TANH: return 1.0f - o * o;
    case FX_UN_ERF: return TWO_RSQRTPI * expf(-v * v);
    case FX_UN_GELU_EXACT: return 0.5f * erfcf(-v * RSQRT2) + v * RSQRT2PI * expf(-0.5f * v * v);
    default: return (v >= a && v <= b) ? 1.0f : 0.0f;
    }
}

__global__ void k_unary(int op, float a, float b, const float *x, float *y, int64_t n,
                        unsigned long long *bad)
{
    GRID_LOOP(i, n)
    {
        float o = un_f(op, a, b, x[i]);
        y[i] = o;
        if (bad && !isfinite(o))
            atomicAdd(bad, 1ULL);
    }
}

/* Only these turn finite inputs into inf/nan (as the CPU counts them). */
static bool may_overflow(fx_unary_op op)
{
    return op == FX_UN_EXP || op == FX_UN_LOG || op == FX_UN_SQRT || op == FX_UN_POW ||
           op == FX_UN_SCALE || op == FX_UN_ADD_SCALAR;
}

static int64_t cu_unary(fx_unary_op op, float a, float b, const fx_tensor *x, fx_tensor *y)
{
    int dev = tdev(x);
    int64_t n = numel(x);
    if (op < 0 || op >= FX_UN_COUNT)
        return n;
    if (!may_overflow(op)) {
        LAUNCH(dev, n, k_unary, (int)op, a, b, F(x), F(y), n, (unsigned long long *)NULL);
        return 0;
    }
    long long *bad = fx__cuda_counter(dev, 1), h;
    if (!bad)
        return n; /* no memory to count in: the op fails (error recorded) */
    LAUNCH(dev, n, k_unary, (int)op, a, b, F(x), F(y), n, (unsigned long long *)bad);
    return fx__cuda_read_counter(dev, bad, &h, 1) ? h : n;
}

__global__ void k_unary_bw(int op, float a, float b, const float *x, const float *y,
                           const float *dy, float *dx, int64_t n)
{
    GRID_LOOP(i, n) dx[i] += un_d(op, a, b, x[i], y[i]) * dy[i];
}

static void cu_unary_backward(fx_unary_op op, float a, float b, const fx_tensor *x,
                              const fx_tensor *y, const fx_tensor *dy, fx_tensor *dx)
{
    int dev = tdev(x);
    int64_t n = numel(x);
    LAUNCH(dev, n, k_unary_bw, (int)op, a, b, F(x), F(y), F(dy), F(dx), n);
}

__device__ static inline float bin_f(int op, float x, float y)
{
    switch (op) {
    case FX_BIN_ADD: return x + y;
    case FX_BIN_SUB: return x - y;
    case FX_BIN_MUL: return x * y;
    default: return x / y;
    }
}

/* d: operand 0 = a, 1 = b strides over out's shape. */
__global__ void k_binary(int op, const float *A, const float *B, float *O, Dims d, int64_t n,
                         unsigned long long *bad)
{
    GRID_LOOP(i, n)
    {
        float o = bin_f(op, A[dims_off(d, 0, i)], B[dims_off(d, 1, i)]);
        O[i] = o;
        if (bad && !isfinite(o))
            atomicAdd(bad, 1ULL);
    }
}

static Dims bcast2(const fx_tensor *a, const fx_tensor *b, const fx_tensor *out)
{
    Dims d = dims_of(out->ndim, out->shape);
    bcast_strides(a, out->ndim, out->shape, d.st[0]);
    bcast_strides(b, out->ndim, out->shape, d.st[1]);
    return d;
}

static int64_t cu_binary(fx_binary_op op, const fx_tensor *a, const fx_tensor *b, fx_tensor *out)
{
    int dev = tdev(out);
    int64_t n = numel(out);
    Dims d = bcast2(a, b, out);
    if (op != FX_BIN_DIV) {
        LAUNCH(dev, n, k_binary, (int)op, F(a), F(b), F(out), d, n, (unsigned long long *)NULL);
        return 0;
    }
    long long *bad = fx__cuda_counter(dev, 1), h;
    if (!bad)
        return n;
    LAUNCH(dev, n, k_binary, (int)op, F(a), F(b), F(out), d, n, (unsigned long long *)bad);
    return fx__cuda_read_counter(dev, bad, &h, 1) ? h : n;
}

__global__ void k_binary_bw(int op, const float *A, const float *B, const float *G, float *DA,
                            float *DB, Dims d, int64_t n, bool atomic_a, bool atomic_b)
{
    GRID_LOOP(i, n)
    {
        int64_t ia = dims_off(d, 0, i), ib = dims_off(d, 1, i);
        float x = A[ia], y = B[ib], g = G[i], gx, gy;
        switch (op) {
        case FX_BIN_ADD: gx = g; gy = g; break;
        case FX_BIN_SUB: gx = g; gy = -g; break;
        case FX_BIN_MUL: gx = g * y; gy = g * x; break;
        default: gx = g / y; gy = -g * x / (y * y); break;
        }
        if (DA) {
            if (atomic_a) atomicAdd(DA + ia, gx);
            else DA[ia] += gx;
        }
        if (DB) {
            if (atomic_b) atomicAdd(DB + ib, gy);
            else DB[ib] += gy;
        }
    }
}

static void cu_binary_backward(fx_binary_op op, const fx_tensor *a, const fx_tensor *b,
                               const fx_tensor *dy, fx_tensor *da, fx_tensor *db)
{
    int dev = tdev(dy);
    int64_t n = numel(dy);
    Dims d = bcast2(a, b, dy);
    LAUNCH(dev, n, k_binary_bw, (int)op, F(a), F(b), F(dy), da ? F(da) : NULL,
           db ? F(db) : NULL, d, n, numel(a) != n, numel(b) != n);
}

__device__ static inline bool cond_at(const void *c, bool i32, int64_t off)
{
    return i32 ? ((const int32_t *)c)[off] != 0 : ((const float *)c)[off] != 0.0f;
}

static Dims bcast3(const fx_tensor *c, const fx_tensor *a, const fx_tensor *b,
                   const fx_tensor *out)
{
    Dims d = dims_of(out->ndim, out->shape);
    const fx_tensor *ts[3] = { c, a, b };
    for (int k = 0; k < 3; k++) {
        if (ts[k])
            bcast_strides(ts[k], out->ndim, out->shape, d.st[k]);
    }
    return d;
}

__global__ void k_where(const void *C, bool i32, const float *A, const float *B, float *O, Dims d,
                        int64_t n)
{
    GRID_LOOP(i, n)
    O[i] = cond_at(C, i32, dims_off(d, 0, i)) ? A[dims_off(d, 1, i)] : B[dims_off(d, 2, i)];
}

static void cu_where(const fx_tensor *cond, const fx_tensor *a, const fx_tensor *b, fx_tensor *out)
{
    int dev = tdev(out);
    int64_t n = numel(out);
    Dims d = bcast3(cond, a, b, out);
    LAUNCH(dev, n, k_where, fx_data(cond), cond->dtype == FX_I32, F(a), F(b), F(out), d, n);
}

__global__ void k_where_bw(const void *C, bool i32, const float *G, float *DA, float *DB, Dims d,
                           int64_t n)
{
    GRID_LOOP(i, n)
    {
        if (cond_at(C, i32, dims_off(d, 0, i))) {
            if (DA)
                atomicAdd(DA + dims_off(d, 1, i), G[i]);
        } else if (DB) {
            atomicAdd(DB + dims_off(d, 2, i), G[i]);
        }
    }
}

static void cu_where_backward(const fx_tensor *cond, const fx_tensor *dy, fx_tensor *da,
                              fx_tensor *db)
{
    int dev = tdev(dy);
    int64_t n = numel(dy);
    Dims d = bcast3(cond, da, db, dy);
    LAUNCH(dev, n, k_where_bw, fx_data(cond), cond->dtype == FX_I32, F(dy), da ? F(da) : NULL,
           db ? F(db) : NULL, d, n);
}

__global__ void k_dropout(float *m, float p, float keep, uint64_t seed, int64_t n)
{
    GRID_LOOP(i, n) m[i] = uniform_at(seed, (uint64_t)i) >= p ? keep : 0.0f;
}

static void cu_dropout_mask(fx_tensor *mask, float p, uint64_t seed)
{
    int64_t n = numel(mask);
    LAUNCH(tdev(mask), n, k_dropout, F(mask), p, 1.0f / (1.0f - p), seed, n);
}

__global__ void k_axpy(float alpha, const float *x, float *y, int64_t n)
{
    GRID_LOOP(i, n) y[i] += alpha * x[i];
}

static void cu_axpy(float alpha, const fx_tensor *x, fx_tensor *y)
{
    int64_t n = numel(x);
    LAUNCH(tdev(y), n, k_axpy, alpha, F(x), F(y), n);
}

const fx_ew_kernels fx__cuda_ew = {
    .unary = cu_unary,
    .unary_backward = cu_unary_backward,
    .binary = cu_binary,
    .binary_backward = cu_binary_backward,
    .where = cu_where,
    .where_backward = cu_where_backward,
    .dropout_mask = cu_dropout_mask,
    .axpy = cu_axpy,
};
