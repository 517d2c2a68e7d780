/*
 * backend.h - the kernel table every op dispatches through.
 *
 * A backend is a table of kernel families, one table per device type. Ops
 * (engine/op_*.c) check shapes and dtypes, allocate outputs and record the
 * tape; kernels do the arithmetic and are the only code that dereferences
 * element memory. A CUDA backend fills the same table with its own kernels.
 *
 * The memory, elementwise, blas, reduction, indexing and optimizer families
 * are defined below; the losses (kern_loss.h), convolution and pooling
 * (kern_conv.h), embedding (kern_embed.h), normalisation (kern_norm.h),
 * recurrence (kern_rnn.h) and attention (kern_seq.h) have a header each.
 * Each backend implements a family in a file of the same name in
 * engine/cpu/ and engine/cuda/ (cpu/cpu.h lists them).
 *
 * Conventions for every kernel:
 * - Arguments are validated by the op: shapes fit, dtypes are the ones named,
 *   outputs are allocated on the same device. Kernels do not re-check.
 * - Unless said otherwise, tensors are contiguous (row-major, offset 0 in
 *   their storage or any offset: use fx_data()).
 * - "dx +=" means the kernel accumulates into an existing gradient buffer.
 * - Kernels that can meet bad *values* (indices out of range) return an
 *   int64 count of offending elements, or -1-index; the op reports it.
 */
#ifndef FX_BACKEND_H
#define FX_BACKEND_H

#include "fluxion.h"

/* Element pointer of a tensor (storage base + offset). For backends only. */
static inline void *fx_data(const fx_tensor *t)
{
    return (char *)t->storage->ptr + t->offset * (int64_t)fx_dtype_size(t->dtype);
}

/* ------------------------------------------------------------ memory */
typedef struct {
    void *(*alloc)(fx_device dev, size_t nbytes); /* 64-byte aligned; NULL on failure */
    void (*free)(fx_device dev, void *p);
    /* Host buffer <-> tensor, any strides (views gather / scatter). */
    void (*to_host)(const fx_tensor *t, void *dst);
    void (*from_host)(fx_tensor *t, const void *src);
    /* dst = src (or dst += src when accumulate, f32 only); any strides,
     * same shape and dtype. Covers permute, slice, concat and their grads. */
    void (*copy)(fx_tensor *dst, const fx_tensor *src, bool accumulate);
    void (*fill)(fx_tensor *t, double v); /* any dtype, contiguous */
} fx_mem_kernels;

/* ------------------------------------------------------- elementwise */
typedef enum {
    FX_UN_NEG = 0, FX_UN_SCALE, /* a*x */
    FX_UN_ADD_SCALAR,           /* x + a */
    FX_UN_EXP, FX_UN_LOG, FX_UN_SQRT, FX_UN_POW, /* x^a */
    FX_UN_ABS, FX_UN_RELU, FX_UN_LEAKY_RELU,     /* slope a */
    FX_UN_ELU,                                   /* alpha a */
    FX_UN_GELU, FX_UN_SIGMOID, FX_UN_TANH,
    FX_UN_CLAMP, /* [a, b] */
    FX_UN_ERF, FX_UN_GELU_EXACT, /* x * Phi(x) */
    FX_UN_COUNT
} fx_unary_op;

typedef enum { FX_BIN_ADD = 0, FX_BIN_SUB, FX_BIN_MUL, FX_BIN_DIV, FX_BIN_COUNT } fx_binary_op;

typedef struct {
    /* y = f(x); returns the number of non-finite outputs. x, y same shape. */
    int64_t (*unary)(fx_unary_op op, float a, float b, const fx_tensor *x, fx_tensor *y);
    /* dx += f'(x) * dy; y is f(x) (some ops use it). */
    void (*unary_backward)(fx_unary_op op, float a, float b, const fx_tensor *x,
                           const fx_tensor *y, const fx_tensor *dy, fx_tensor *dx);
    /* out = a op b, numpy broadcasting into out's shape (a and b have out's
     * ndim; broadcast dims have size 1). Returns non-finite output count. */
    int64_t (*binary)(fx_binary_op op, const fx_tensor *a, const fx_tensor *b, fx_tensor *out);
    /* da += d(out)/da * dy summed over a's broadcast dims; same for db.
     * da or db may be NULL (no gradient wanted). */
    void (*binary_backward)(fx_binary_op op, const fx_tensor *a, const fx_tensor *b,
                            const fx_tensor *dy, fx_tensor *da, fx_tensor *db);
    /* out = cond != 0 ? a : b with broadcasting as binary (cond f32 or i32). */
    void (*where)(const fx_tensor *cond, const fx_tensor *a, const fx_tensor *b, fx_tensor *out);
    /* da += cond ? dy : 0, db += cond ? 0 : dy, reduced over broadcast dims. */
    void (*where_backward)(const fx_tensor *cond, const fx_tensor *dy, fx_tensor *da,
                           fx_tensor *db);
    /* mask[i] = (uniform(seed, i) >= p) ? 1/(1-p) : 0. Counter-based so all
     * backends give the same mask for a seed. */
    void (*dropout_mask)(fx_tensor *mask, float p, uint64_t seed);
    /* y += alpha * x, same shape. */
    void (*axpy)(float alpha, const fx_tensor *x, fx_tensor *y);
} fx_ew_kernels;

/* -------------------------------------------------------------- blas */
typedef struct {
    /* For i in [0, batch): C_i = alpha * op(A_i) op(B_i) + beta * C_i, where
     * op transposes when ta/tb. A_i starts at element i*stride_a of a (0 for
     * a shared operand); all row-major. C is M x N, op(A) M x K, op(B) K x N. */
    void (*gemm)(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const fx_tensor *a, int64_t stride_a, const fx_tensor *b, int64_t stride_b,
                 float beta, fx_tensor *c, int64_t stride_c);
    /* gemm's contract, with every element of A and B rounded to bfloat16
     * (round to nearest even, subnormals to zero) and the products summed in
     * fp32; alpha, beta and C stay fp32. NULL where the backend has none
     * (the op then keeps fp32). */
    void (*gemm_bf16)(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                      float alpha, const fx_tensor *a, int64_t stride_a, const fx_tensor *b,
                      int64_t stride_b, float beta, fx_tensor *c, int64_t stride_c);
    /* y[r, :] = bias for every row r of y [R, C] (bias [C]). */
    void (*bias_fill)(fx_tensor *y, const fx_tensor *bias);
    /* dbias[c] += sum over rows of dy[r, c]. */
    void (*bias_backward)(const fx_tensor *dy, fx_tensor *dbias);
} fx_blas_kernels;

/* ---------------------------------------------------------- reduction */
typedef enum { FX_RED_SUM = 0, FX_RED_MEAN, FX_RED_MAX } fx_reduce_op;

typedef struct {
    /* y has x's ndim with reduced dims of size 1. For MAX, argmax (i64, y's
     * shape, may be NULL) receives the flat index into x of each maximum. */
    void (*reduce)(fx_reduce_op op, const fx_tensor *x, fx_tensor *y, fx_tensor *argmax);
    /* dx += broadcast(dy) (MEAN: / count); MAX: dx[argmax] += dy. */
    void (*reduce_backward)(fx_reduce_op op, const fx_tensor *dy, const fx_tensor *argmax,
                            fx_tensor *dx);
    /* softmax (or log-softmax) along axis. */
    void (*softmax)(const fx_tensor *x, int axis, bool log, fx_tensor *y);
    /* dx += softmax'(y) dy. */
    void (*softmax_backward)(const fx_tensor *y, const fx_tensor *dy, int axis, bool log,
                             fx_tensor *dx);
    /* sum of squares of all elements (global-norm clipping), in double. */
    double (*sum_squares)(const fx_tensor *x);
    /* number of non-finite elements. */
    int64_t (*count_nonfinite)(const fx_tensor *x);
} fx_reduce_kernels;

/* ------------------------------------------------------------ indexing */
typedef struct {
    /* y = x.index_select(axis, idx); returns -1 if all indices are valid,
     * else the position in idx of the first bad index. */
    int64_t (*index_select)(const fx_tensor *x, int axis, const fx_tensor *idx, fx_tensor *y);
    void (*index_add)(const fx_tensor *dy, int axis, const fx_tensor *idx, fx_tensor *dx);
    /* torch.gather / scatter_add along axis; same return rule. */
    int64_t (*gather)(const fx_tensor *x, int axis, const fx_tensor *idx, fx_tensor *y);
    void (*scatter_add)(const fx_tensor *dy, int axis, const fx_tensor *idx, fx_tensor *dx);
} fx_index_kernels;

#include "kern_loss.h"

/* ---------------------------------------------------------- optimizers */
typedef struct {
    double lr, momentum, beta1, beta2, eps, alpha, rho, weight_decay;
    double bias_c1, bias_c2; /* Adam bias corrections 1 - beta^t */
} fx_optim_step_args;

typedef struct {
    /* One update of parameter p with gradient g and state s1, s2 (NULL when
     * the kind needs fewer). */
    void (*step)(fx_optim_kind kind, const fx_optim_step_args *a, fx_tensor *p,
                 const fx_tensor *g, fx_tensor *s1, fx_tensor *s2);
} fx_optim_kernels;

#include "kern_conv.h"
#include "kern_embed.h"
#include "kern_norm.h"
#include "kern_rnn.h"
#include "kern_seq.h"

typedef struct fx_backend {
    const char *name;
    fx_device_type type;
    bool (*available)(int index);
    const fx_mem_kernels *mem;
    const fx_ew_kernels *ew;
    const fx_blas_kernels *blas;
    const fx_reduce_kernels *red;
    const fx_index_kernels *idx;
    const fx_loss_kernels *loss;
    const fx_optim_kernels *optim;
    const fx_conv_kernels *conv;
    const fx_norm_kernels *norm;
    const fx_rnn_kernels *rnn;
    const fx_seq_kernels *seq;
    const fx_embed_kernels *embed;
} fx_backend;

/* The backend for a device type, or NULL when it is not built in. */
const fx_backend *fx__backend_for(fx_device dev);

extern const fx_backend fx__cpu_backend;

#endif /* FX_BACKEND_H */
