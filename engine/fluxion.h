/*
 * fluxion.h - the Fluxion autodiff engine: public API.
 *
 * The engine is a C library with no network code. It builds reverse-mode
 * gradients at run time: every op called in grad mode appends a record
 * (backward function, inputs, output, saved values) to the tape of its
 * context; fx_backward() walks that tape in reverse and accumulates into the
 * inputs' gradients. Model code is ordinary C: loops, recursion and branches
 * on values just work, because the tape records what actually ran.
 *
 * A minimal training step:
 *
 *     fx_ctx *ctx = fx_ctx_create(fx_cpu());
 *     fx_layer *net = fx_chain_create("net", 2, (fx_layer *[]){
 *         fx_dense_create("fc1", 20, 64, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng),
 *         fx_dense_create("fc2", 64, 5, NULL, rng) });
 *     fx_params params; fx_params_init(&params);
 *     fx_layer_collect_params(net, &params);
 *     fx_optim *opt = fx_optim_create(FX_OPT_ADAM, &(fx_optim_hparams){ .lr = 1e-3 }, &params);
 *     for (;;) {
 *         fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, (int64_t[]){ 256, 20 }, xs);
 *         fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, (int64_t[]){ 256 }, labels);
 *         fx_tensor *loss = fx_cross_entropy(ctx, fx_layer_forward(net, ctx, x), y, FX_MEAN);
 *         if (fx_backward(ctx, loss) != FX_OK) { puts(fx_ctx_error(ctx)); break; }
 *         fx_optim_step(opt);
 *         fx_optim_zero_grad(opt);
 *         fx_ctx_reset(ctx);                  // frees the step's intermediates
 *     }
 *
 * Memory. Tensors made by ops live in the context's arena until
 * fx_ctx_reset(); the arena keeps its memory, so a steady-state step makes no
 * heap allocation. Parameters, their gradients and optimizer state are
 * persistent tensors (fx_tensor_create / fx_tensor_free).
 *
 * Errors. An op that fails (shape mismatch, bad axis, wrong dtype, a result
 * that is not finite) returns NULL and records a message in its context that
 * names the op and the shapes, e.g.
 *     "matmul: inner dimensions differ: a is [3,4], b is [5,6]".
 * Every op accepts NULL inputs and returns NULL without touching the recorded
 * error, so a whole forward pass can be written without checks and tested
 * once at the end with fx_ctx_status(). The error is sticky until
 * fx_ctx_reset() or fx_ctx_clear_error(). The library never calls exit() or
 * abort() on user input.
 *
 * Devices. Every kernel is reached through a backend table chosen by the
 * tensor's device (engine/backend.h). Nothing outside a backend touches raw
 * element memory: use fx_tensor_to_host / fx_tensor_copy_from_host.
 *
 * Threads. fx_set_num_threads(n) sets one process-wide count honoured by
 * OpenBLAS and by the engine's own loops. A context is used by one thread at
 * a time; different threads use different contexts.
 */
#ifndef FLUXION_H
#define FLUXION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "fx_version.h" /* FX_VERSION_STRING, from CMake */
#define FX_MAX_DIMS 8

/* ------------------------------------------------------------------ status */

typedef enum {
    FX_OK = 0,
    FX_ERR_SHAPE,    /* shapes do not fit the op */
    FX_ERR_AXIS,     /* an axis is out of range or repeated */
    FX_ERR_DTYPE,    /* the op does not take this dtype */
    FX_ERR_DEVICE,   /* tensors on different devices, or no such device */
    FX_ERR_VALUE,    /* a value is out of range, or a result is not finite */
    FX_ERR_ARG,      /* a bad argument (NULL where one is needed, p > 1, ...) */
    FX_ERR_STATE,    /* call out of order (backward twice, no grad mode, ...) */
    FX_ERR_NOMEM,    /* out of memory */
    FX_ERR_IO,       /* a file could not be read or written */
    FX_ERR_FORMAT,   /* a file is truncated or corrupt */
} fx_status;

const char *fx_status_name(fx_status s);

/* ------------------------------------------------------- dtypes, devices */

typedef enum { FX_F32 = 0, FX_F16, FX_BF16, FX_I32, FX_I64, FX_DTYPE_COUNT } fx_dtype;

size_t fx_dtype_size(fx_dtype dt);
const char *fx_dtype_name(fx_dtype dt); /* "f32", "i64", ... */

typedef enum { FX_DEV_CPU = 0, FX_DEV_CUDA = 1 } fx_device_type;

typedef struct {
    fx_device_type type;
    int index;
} fx_device;

static inline fx_device fx_cpu(void) { return (fx_device){ FX_DEV_CPU, 0 }; }
bool fx_device_available(fx_device dev);
/* Writes "cpu" or "cuda:N" into buf. Returns buf. */
const char *fx_device_str(fx_device dev, char *buf, size_t n);

/* Devices present in this build and machine: CPU always 1; CUDA the number
 * of GPUs the driver reports (0 without a driver, a GPU, or a CUDA build). */
int fx_device_count(fx_device_type type);
/* The first device of a type, "cpu" or "cuda:N" parsed; false on bad text. */
bool fx_device_parse(const char *text, fx_device *out);

typedef struct {
    fx_device device;
    char name[96];          /* "cpu", "NVIDIA H200", ... */
    int cc_major, cc_minor; /* compute capability (CUDA), else 0 */
    size_t total_bytes;     /* device memory (CUDA) or physical memory (CPU) */
    size_t free_bytes;      /* as the driver reports it now */
    size_t used_bytes;      /* held by Fluxion on this device (CUDA) */
    size_t limit_bytes;     /* fx_device_set_memory_limit, 0 = none */
} fx_device_info;
fx_status fx_device_get_info(fx_device dev, fx_device_info *out);

/* Caps what Fluxion allocates on a CUDA device (0 removes the cap). An
 * allocation past the cap fails with FX_ERR_NOMEM and a message naming the
 * device and the sizes (fx_device_last_error). */
fx_status fx_device_set_memory_limit(fx_device dev, size_t bytes);

/* Memory accounting of a CUDA device's stream-ordered pool. driver_grows
 * counts the times the pool had to take memory from the driver: it stays
 * put over steady-state training steps. */
typedef struct {
    uint64_t allocs, frees;  /* pool allocations made and returned */
    uint64_t driver_grows;   /* allocations that grew the pool's reservation */
    size_t in_use, peak;     /* bytes held by Fluxion now / at most */
    size_t reserved;         /* bytes the pool holds from the driver */
} fx_device_mem_stats;
fx_status fx_device_mem_stats_get(fx_device dev, fx_device_mem_stats *out);

/* Waits until the device finished the work the calling thread queued on it
 * (its current context's stream: see fx_ctx_set_priority; other threads'
 * contexts run on). Returns FX_OK, or the first CUDA error recorded since
 * the last call by that work, else by work without a context on the device
 * (a failed launch, a kernel fault, out of memory inside a library call),
 * whose message (with file:line) goes into err when err is not NULL. CPU:
 * always FX_OK. */
fx_status fx_device_sync(fx_device dev, char *err, size_t n);
/* The message of the last failed device allocation on this thread. */
const char *fx_device_last_error(void);

/* TF32 tensor-core math for f32 matrix products on CUDA (off by default:
 * results then match the CPU within float rounding). */
void fx_set_tf32(bool on);
bool fx_get_tf32(void);

/* Process-wide thread count for OpenBLAS and the engine's loops (>= 1).
 * Until set: $FX_NUM_THREADS, else the number of online cores. */
void fx_set_num_threads(int n);
int fx_get_num_threads(void);

/* The OpenBLAS kernel family in use ("SkylakeX", "Haswell", "Prescott", ...)
 * and the best one this CPU can run (NULL if none is known). */
const char *fx_blas_core(void);
const char *fx_blas_best_core(void);
/* For programs, first thing in main: when OpenBLAS picked kernels older than
 * the CPU supports (misdetection) and OPENBLAS_CORETYPE is not set, sets it
 * to the best family and re-executes the program with the same argv. Returns
 * 0 when nothing needed doing, -1 if re-executing failed (the program then
 * runs on with the detected kernels); does not return on success. */
int fx_blas_reexec_if_misdetected(char **argv);

/* ----------------------------------------------------------------- tensors */

/* Storage: one block of element memory on one device. Views share it. */
typedef struct fx_storage {
    void *ptr;       /* device memory; only backends dereference it */
    size_t nbytes;
    fx_device device;
    bool owned;      /* freed with the persistent tensor that made it */
    /* Bumped by every write through the API to a tensor on this storage
     * (copy, copy_from_host, fill, init, optimizer step): pre-packed
     * weights (fx_layer_prepack) remember it and are not used once it has
     * changed. Writes through fx_data's pointer do not bump it. */
    uint64_t version;
} fx_storage;

enum {
    FX_TENSOR_REQUIRES_GRAD = 1u << 0, /* gradients flow into this tensor */
    FX_TENSOR_PERSISTENT = 1u << 1,    /* heap tensor, outlives fx_ctx_reset */
};

/*
 * A tensor: the fields are public to read; change them only through the API.
 * strides and offset are in elements. Tensors made by ops are contiguous
 * (row-major) unless documented as views.
 */
typedef struct fx_tensor {
    fx_dtype dtype;
    int ndim;
    int64_t shape[FX_MAX_DIMS];
    int64_t strides[FX_MAX_DIMS];
    int64_t offset;
    fx_device device;
    fx_storage *storage;
    struct fx_tensor *grad; /* same shape; NULL until a gradient reaches it */
    unsigned flags;
} fx_tensor;

int64_t fx_tensor_numel(const fx_tensor *t);
bool fx_tensor_is_contiguous(const fx_tensor *t);
bool fx_tensor_same_shape(const fx_tensor *a, const fx_tensor *b);
static inline bool fx_tensor_requires_grad(const fx_tensor *t)
{
    return t && (t->flags & FX_TENSOR_REQUIRES_GRAD);
}
/* Writes a tensor's shape as "[2,3,4]" into buf; returns buf. */
const char *fx_shape_str(const fx_tensor *t, char *buf, size_t n);
/* Writes the ndim dims as "[2,3,4]" ("[]" for ndim 0) into buf, a buffer
 * of n bytes, always NUL-terminated (truncated when too small; n = 0
 * writes nothing); returns buf. For shapes that are not a tensor's (yet):
 * a requested reshape, a stored spec, a file header. FX_MAX_DIMS dims
 * need at most FX_MAX_DIMS * 21 + 2 bytes. */
const char *fx_dims_str(int ndim, const int64_t *dims, char *buf, size_t n);

/* Persistent tensors (parameters, optimizer state, data sets): heap memory,
 * zero-filled. Return NULL on a bad shape or out of memory. */
fx_tensor *fx_tensor_create(fx_device dev, fx_dtype dt, int ndim, const int64_t *shape);
void fx_tensor_free(fx_tensor *t); /* also frees its grad; NULL is fine */
/* Gives a persistent tensor a persistent, zeroed gradient and marks it. */
fx_status fx_tensor_set_requires_grad(fx_tensor *t, bool on);
/* Makes t's gradient live in caller memory: buf holds numel(t) elements of
 * t's dtype on t's device (e.g. a slice of a flat bucket that is all-reduced
 * in one call). The current gradient's values are copied into buf; t->grad
 * becomes a persistent tensor over buf that is not owned (fx_tensor_free
 * frees the tensor, never buf). Zeroing the gradient (fx_optim_zero_grad,
 * fx_tensor_fill) writes through to buf. buf must outlive t's gradient (or
 * be detached first: buf NULL gives t an owned gradient again, with buf's
 * values). t must be persistent and require grad (FX_ERR_STATE). */
fx_status fx_tensor_set_grad_buffer(fx_tensor *t, void *buf);

/* Host <-> tensor copies; nbytes must equal numel * dtype size. The tensor
 * may be strided (views are gathered / scattered by the backend). */
fx_status fx_tensor_to_host(const fx_tensor *t, void *dst, size_t nbytes);
fx_status fx_tensor_copy_from_host(fx_tensor *t, const void *src, size_t nbytes);
/* Copies between two tensors of one shape and dtype (any devices). */
fx_status fx_tensor_copy(fx_tensor *dst, const fx_tensor *src);
/* A persistent copy of t (contiguous, same shape and dtype) on dev, without
 * gradient; NULL when dev is not available or out of memory. */
fx_tensor *fx_tensor_to_device(const fx_tensor *t, fx_device dev);
/* Moves a persistent tensor (and its gradient) to dev in place: the pointer
 * stays valid, its storage is replaced. FX_ERR_STATE for views and arena
 * tensors, FX_ERR_DEVICE when dev is not available. */
fx_status fx_tensor_move_to_device(fx_tensor *t, fx_device dev);
fx_status fx_tensor_fill(fx_tensor *t, double value);
/* The single element of a tensor with numel 1, as double (NAN on error). */
double fx_tensor_item(const fx_tensor *t);

/* ---------------------------------------------------------------- context */

typedef struct fx_ctx fx_ctx;
typedef struct fx_rng fx_rng;

/* A context runs ops on one device; NULL if the device is not available. */
fx_ctx *fx_ctx_create(fx_device dev);
void fx_ctx_free(fx_ctx *ctx);
/* Ends a step: forgets the tape and every arena tensor, clears the error.
 * Keeps the arena's memory for the next step. */
void fx_ctx_reset(fx_ctx *ctx);
fx_device fx_ctx_device(const fx_ctx *ctx);

/* Grad mode (default on): ops record the tape. Returns the previous mode. */
bool fx_ctx_set_grad(fx_ctx *ctx, bool on);
bool fx_ctx_grad_enabled(const fx_ctx *ctx);
/* Training mode (default on): dropout drops, batch norm uses batch stats. */
void fx_ctx_set_training(fx_ctx *ctx, bool on);
bool fx_ctx_training(const fx_ctx *ctx);
/* Seeds the context's RNG (dropout masks). */
void fx_ctx_seed(fx_ctx *ctx, uint64_t seed);
fx_rng *fx_ctx_rng(fx_ctx *ctx);

fx_status fx_ctx_status(const fx_ctx *ctx);
const char *fx_ctx_error(const fx_ctx *ctx); /* "" when no error */
void fx_ctx_clear_error(fx_ctx *ctx);
/* Records an error (printf-style) unless one is already recorded; for custom
 * layers and ops. Always returns NULL so it can end a forward function. */
fx_tensor *fx_ctx_fail(fx_ctx *ctx, fx_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Priority of a context's device work. On a CUDA device each context has
 * its own stream (created with cudaStreamCreateWithPriority) and cuBLAS
 * handle, so contexts used by different threads run concurrently, and the
 * GPU schedules a higher-priority context's kernels first whenever SMs free
 * up: a serving context (HIGH) is not stuck behind a training context's
 * (NORMAL) queued step. One thread's work stays in program order across its
 * contexts (and work without a context follows the thread's last one); a
 * tensor written under one thread's context is for another thread after
 * fx_device_sync on the writing thread (engine/cuda/stream.cu has the
 * rules). On the CPU the priority is recorded and changes nothing.
 * The default is NORMAL. Best set right after fx_ctx_create; changing it
 * later waits for the context's queued work (its stream is replaced).
 * FX_ERR_ARG for a value outside the enum. */
typedef enum { FX_PRIORITY_LOW = -1, FX_PRIORITY_NORMAL = 0, FX_PRIORITY_HIGH = 1 } fx_priority;
fx_status fx_ctx_set_priority(fx_ctx *ctx, fx_priority p);
fx_priority fx_ctx_priority(const fx_ctx *ctx);

/*
 * Precision of a context's dense-layer products. In FX_PREC_BF16 the matrix
 * products of dense layers (fx_linear, the dense + relu op and both of their
 * backward products) round their two operands to bfloat16 (round to nearest
 * even; fp32 subnormals become signed zeros, as the AVX-512 BF16
 * instructions do) and accumulate the products in fp32. Results, gradients
 * and parameters stay fp32 (master weights); nothing else changes. Other
 * products (convolution, attention, matmul) stay fp32. The default is
 * FX_PREC_F32. CPU contexts only: FX_PREC_BF16 on another device returns
 * FX_ERR_DEVICE and the context keeps fp32; FX_ERR_ARG for a value outside
 * the enum. The setting survives fx_ctx_reset. docs/engine.md states the
 * accuracy.
 */
typedef enum { FX_PREC_F32 = 0, FX_PREC_BF16 = 1 } fx_precision;
const char *fx_precision_name(fx_precision p); /* "fp32", "bf16"; NULL outside the enum */
/* "fp32" or "bf16" (exactly) into *out; false (out untouched) otherwise. */
bool fx_precision_parse(const char *s, fx_precision *out);
fx_status fx_ctx_set_precision(fx_ctx *ctx, fx_precision p);
fx_precision fx_ctx_precision(const fx_ctx *ctx);
/* True when this CPU runs bf16 products natively (AVX-512 BF16); without
 * it the portable kernels give the same roundings of the operands (sums
 * may differ by fp32 rounding), more slowly. */
bool fx_cpu_has_bf16(void);

/* Bytes the arena holds (capacity) and uses now; for tests and tuning. */
size_t fx_ctx_arena_capacity(const fx_ctx *ctx);
size_t fx_ctx_arena_used(const fx_ctx *ctx);

/* Arena tensors, valid until fx_ctx_reset. */
fx_tensor *fx_tensor_new(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape); /* uninitialised */
fx_tensor *fx_zeros(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape);
fx_tensor *fx_full(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape, double v);
fx_tensor *fx_tensor_from_host(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape,
                               const void *data);
/* Contiguous copy of x (a view or any tensor); differentiable. */
fx_tensor *fx_contiguous(fx_ctx *ctx, fx_tensor *x);

/* ---------------------------------------------------------------- autodiff */

/* Backpropagates from a tensor with one element (seed 1). Gradients are
 * accumulated (+=) into every tensor that requires grad; persistent tensors
 * keep them until zeroed. The tape is consumed: a second call fails. */
fx_status fx_backward(fx_ctx *ctx, fx_tensor *loss);
/* Same, from any tensor with an explicit seed gradient of its shape. */
fx_status fx_backward_seed(fx_ctx *ctx, fx_tensor *out, const fx_tensor *seed);
/* Number of records on the tape (for tests). */
size_t fx_tape_length(const fx_ctx *ctx);

/* Grad-ready hook (data-parallel training: start reducing a gradient while
 * backward goes on). During fx_backward / fx_backward_seed on ctx, fn(data,
 * t) is called for each persistent tensor t that is an input of a tape
 * record, as soon as its gradient is final: no record left on the tape
 * will add to it. The remaining uses are counted over the whole tape before
 * the walk; records that are skipped because no gradient reached their
 * output count down too, so each such tensor is reported exactly once per
 * backward, in the order its gradient became final. Persistent tensors that
 * are on no record are not reported (the caller knows they got nothing).
 * The counting uses the context's arena: no heap allocation in a steady
 * state. fn NULL: no hook (the default). */
typedef void (*fx_grad_ready_fn)(void *data, fx_tensor *t);
void fx_ctx_set_grad_ready_hook(fx_ctx *ctx, fx_grad_ready_fn fn, void *data);

/* -------------------------------------------------------------------- ops */
/*
 * Every op returns a new arena tensor (or a view where said), NULL on error.
 * Binary elementwise ops broadcast numpy-style. Axes may be negative.
 */

/* matmul: [..,M,K] x [..,K,N] -> [..,M,N]. Either side may be 2-D; batch
 * dimensions otherwise must be equal. 1-D operands are not promoted. */
fx_tensor *fx_matmul(fx_ctx *ctx, fx_tensor *a, fx_tensor *b);
/* linear: x [..,in] times w^T (w is [out,in]) plus b [out] (b may be NULL). */
fx_tensor *fx_linear(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b);

fx_tensor *fx_add(fx_ctx *ctx, fx_tensor *a, fx_tensor *b);
fx_tensor *fx_sub(fx_ctx *ctx, fx_tensor *a, fx_tensor *b);
fx_tensor *fx_mul(fx_ctx *ctx, fx_tensor *a, fx_tensor *b);
fx_tensor *fx_div(fx_ctx *ctx, fx_tensor *a, fx_tensor *b);

fx_tensor *fx_neg(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_scale(fx_ctx *ctx, fx_tensor *x, float s);
fx_tensor *fx_add_scalar(fx_ctx *ctx, fx_tensor *x, float s);
fx_tensor *fx_exp(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_log(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_sqrt(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_pow(fx_ctx *ctx, fx_tensor *x, float p);
fx_tensor *fx_abs(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_relu(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_leaky_relu(fx_ctx *ctx, fx_tensor *x, float slope);
fx_tensor *fx_elu(fx_ctx *ctx, fx_tensor *x, float alpha);
fx_tensor *fx_gelu(fx_ctx *ctx, fx_tensor *x); /* tanh approximation */
/* Exact gelu: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))) (PyTorch's default). */
fx_tensor *fx_gelu_exact(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_erf(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_sigmoid(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_tanh(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_clamp(fx_ctx *ctx, fx_tensor *x, float lo, float hi);

fx_tensor *fx_softmax(fx_ctx *ctx, fx_tensor *x, int axis);
fx_tensor *fx_log_softmax(fx_ctx *ctx, fx_tensor *x, int axis);

/* Reductions over a set of axes (naxes == 0: all axes). */
fx_tensor *fx_sum(fx_ctx *ctx, fx_tensor *x, int naxes, const int *axes, bool keepdim);
fx_tensor *fx_mean(fx_ctx *ctx, fx_tensor *x, int naxes, const int *axes, bool keepdim);
fx_tensor *fx_max(fx_ctx *ctx, fx_tensor *x, int naxes, const int *axes, bool keepdim);

/* Shapes. reshape takes one -1; it is a view when x is contiguous. */
fx_tensor *fx_reshape(fx_ctx *ctx, fx_tensor *x, int ndim, const int64_t *shape);
/* flatten: [N, d1, d2, ...] -> [N, d1*d2*...] (a view when x is contiguous). */
fx_tensor *fx_flatten(fx_ctx *ctx, fx_tensor *x);
fx_tensor *fx_transpose(fx_ctx *ctx, fx_tensor *x, int axis0, int axis1);
fx_tensor *fx_permute(fx_ctx *ctx, fx_tensor *x, const int *perm);
fx_tensor *fx_concat(fx_ctx *ctx, int n, fx_tensor *const *xs, int axis);
/* slice [start, end) with step >= 1 along axis; negative start/end count
 * from the end. */
fx_tensor *fx_slice(fx_ctx *ctx, fx_tensor *x, int axis, int64_t start, int64_t end, int64_t step);
/* Splits x along axis into n parts of the given sizes (which must add up);
 * writes the parts to out[0..n). Returns the status. */
fx_status fx_split(fx_ctx *ctx, fx_tensor *x, int axis, int n, const int64_t *sizes,
                   fx_tensor **out);
/* index_select: picks entries idx (1-D i32/i64) along axis. */
fx_tensor *fx_index_select(fx_ctx *ctx, fx_tensor *x, int axis, fx_tensor *idx);
/* gather: out[i][j][k] = x[i][idx[i][j][k]][k] for axis 1 (torch.gather);
 * idx has x's rank, i32/i64. */
fx_tensor *fx_gather(fx_ctx *ctx, fx_tensor *x, int axis, fx_tensor *idx);
/* where: cond ? a : b, elementwise with broadcasting; cond is f32 (nonzero =
 * true) or i32. Gradients flow to a and b. */
fx_tensor *fx_where(fx_ctx *ctx, fx_tensor *cond, fx_tensor *a, fx_tensor *b);
/* dropout: in training mode zeroes each element with probability p and scales
 * the rest by 1/(1-p); in eval mode returns x. Uses the context RNG. */
fx_tensor *fx_dropout(fx_ctx *ctx, fx_tensor *x, float p);

/* ----------------------------------------------------------------- losses */

typedef enum { FX_MEAN = 0, FX_SUM = 1, FX_NONE = 2 } fx_reduction;

/* (pred - target)^2, shapes equal. */
fx_tensor *fx_mse_loss(fx_ctx *ctx, fx_tensor *pred, fx_tensor *target, fx_reduction r);
/* logits [N,C], labels [N] i32/i64 in [0,C). FX_NONE gives [N]. */
fx_tensor *fx_cross_entropy(fx_ctx *ctx, fx_tensor *logits, fx_tensor *labels, fx_reduction r);
/* logits [N,C], target probabilities [N,C] (rows sum to 1, not checked). */
fx_tensor *fx_cross_entropy_soft(fx_ctx *ctx, fx_tensor *logits, fx_tensor *probs, fx_reduction r);
/* Binary cross-entropy from logits, targets in [0,1], shapes equal. */
fx_tensor *fx_bce_with_logits(fx_ctx *ctx, fx_tensor *logits, fx_tensor *targets, fx_reduction r);

/* CTC, for sequence labelling without an alignment (speech, handwriting):
 *
 *     // log_probs [T, N, C] from fx_log_softmax(ctx, logits, 2); targets
 *     // concatenated (1-D) or padded [N, S]; lengths i32/i64 [N].
 *     fx_tensor *loss = fx_ctc_loss(ctx, log_probs, targets, in_len, tgt_len,
 *                                   &(fx_ctc_opts){ .blank = 0, .reduction = FX_MEAN });
 */
typedef struct {
    int64_t blank;          /* the blank class, in [0, C); default 0 */
    fx_reduction reduction; /* FX_MEAN (default): each loss / its target
                               length (at least 1), then the batch mean */
    bool zero_infinity;     /* an impossible sample gives loss 0, gradient 0 */
    bool from_logits;       /* the input is logits: log_softmax over C first */
} fx_ctc_opts;

/*
 * Connectionist temporal classification (Graves et al. 2006), as
 * torch.nn.functional.ctc_loss: log_probs [T, N, C] (time first), targets
 * i32/i64, either padded [N, W] or all samples' labels concatenated (1-D,
 * their count the sum of target_lengths); input_lengths and target_lengths
 * i32/i64 [N]. FX_NONE gives the per-sample losses [N]. opts may be NULL.
 *
 * The gradient is the exact derivative w.r.t. log_probs. PyTorch's returns
 * that plus exp(log_probs), which only agrees once it has gone through a
 * log_softmax (where the extra term cancels); w.r.t. the logits before a
 * log_softmax both are the same.
 *
 * Refused, with a message naming the sample and the sizes: an input length
 * outside [1, T]; a negative target length, or one that does not fit the
 * targets; a label outside [0, C) or equal to blank; and, unless
 * zero_infinity, a target that cannot align, i.e. target length plus the
 * number of repeated neighbouring labels exceeds the input length (PyTorch
 * returns inf there). A target length of 0 is allowed (the all-blank path).
 */
fx_tensor *fx_ctc_loss(fx_ctx *ctx, fx_tensor *log_probs, fx_tensor *targets,
                       fx_tensor *input_lengths, fx_tensor *target_lengths,
                       const fx_ctc_opts *opts);

/* -------------------------------------------------------------------- RNG */

/* A seeded, reproducible generator (xoshiro256**). */
fx_rng *fx_rng_create(uint64_t seed);
void fx_rng_free(fx_rng *r);
void fx_rng_seed(fx_rng *r, uint64_t seed);
uint64_t fx_rng_u64(fx_rng *r);
double fx_rng_uniform(fx_rng *r); /* [0,1) */
double fx_rng_normal(fx_rng *r);  /* N(0,1) */
/* Copies the generator's state out / in (for checkpoints): 4 words. */
void fx_rng_get_state(const fx_rng *r, uint64_t state[4]);
void fx_rng_set_state(fx_rng *r, const uint64_t state[4]);

/* ----------------------------------------------------------- initializers */

typedef enum {
    FX_INIT_ZEROS = 0,
    FX_INIT_CONSTANT,
    FX_INIT_UNIFORM,        /* U(a, b) */
    FX_INIT_NORMAL,         /* N(a, b^2): a mean, b std */
    FX_INIT_GLOROT_UNIFORM, /* Xavier */
    FX_INIT_GLOROT_NORMAL,
    FX_INIT_HE_UNIFORM,     /* Kaiming, fan_in, gain sqrt(2) */
    FX_INIT_HE_NORMAL,
    FX_INIT_ORTHOGONAL,     /* gain a (0 means 1) */
    FX_INIT_COUNT           /* the number of kinds (not one itself); add new ones above */
} fx_init_kind;

/* Fills a persistent f32 tensor. Fans follow PyTorch: for [out,in,k...] fan_in
 * = in*prod(k), fan_out = out*prod(k). */
fx_status fx_init_tensor(fx_tensor *t, fx_init_kind kind, double a, double b, fx_rng *rng);

/* ------------------------------------------------------- parameter store */

typedef struct {
    char *name;
    fx_tensor *tensor;
} fx_named_tensor;

/* A growable list of named persistent tensors; it does not own them unless
 * fx_params_free_tensors is called. */
typedef struct {
    fx_named_tensor *items;
    int count, cap;
} fx_params;

void fx_params_init(fx_params *p);
/* Copies name; names are unique in a list (a repeated one: FX_ERR_ARG). */
fx_status fx_params_add(fx_params *p, const char *name, fx_tensor *t);
fx_tensor *fx_params_find(const fx_params *p, const char *name);
void fx_params_free_tensors(fx_params *p); /* frees the tensors too */
void fx_params_clear(fx_params *p);        /* frees the list only */
int64_t fx_params_numel(const fx_params *p);

/* ----------------------------------------------------------------- layers */

typedef struct fx_layer fx_layer;
typedef fx_tensor *(*fx_forward_fn)(fx_layer *self, fx_ctx *ctx, fx_tensor *x);

/*
 * A layer (component) owns its parameters and may own child layers. A custom
 * layer is a forward function plus parameters:
 *
 *     static fx_tensor *scale_fwd(fx_layer *self, fx_ctx *ctx, fx_tensor *x) {
 *         return fx_mul(ctx, x, fx_layer_param(self, "gain"));
 *     }
 *     fx_layer *l = fx_layer_create("scale", scale_fwd);
 *     fx_layer_add_param(l, "gain", fx_param_create(fx_cpu(), 1, (int64_t[]){ 16 },
 *                                                   FX_INIT_CONSTANT, 1.0, 0, rng));
 */
fx_layer *fx_layer_create(const char *name, fx_forward_fn forward);
void fx_layer_free(fx_layer *l); /* frees children and parameters */
const char *fx_layer_name(const fx_layer *l);
fx_tensor *fx_layer_forward(fx_layer *l, fx_ctx *ctx, fx_tensor *x);
/* Takes ownership of t (freed on failure) and marks it as requiring grad. */
fx_status fx_layer_add_param(fx_layer *l, const char *name, fx_tensor *t);
/* Same ownership, but t stays without a gradient: persistent state such as
 * batch norm's running statistics. fx_layer_collect_params and
 * fx_layer_param list it (checkpoints save it); optimizers skip it. */
fx_status fx_layer_add_buffer(fx_layer *l, const char *name, fx_tensor *t);
fx_tensor *fx_layer_param(const fx_layer *l, const char *name);
/* Takes ownership of the child (freed on failure); names must be distinct. */
fx_status fx_layer_add_child(fx_layer *l, fx_layer *child);
int fx_layer_num_children(const fx_layer *l);
fx_layer *fx_layer_child(const fx_layer *l, int i);
/* Opaque user data for custom layers, freed with free_fn (may be NULL). */
void fx_layer_set_data(fx_layer *l, void *data, void (*free_fn)(void *));
void *fx_layer_data(const fx_layer *l);
/* Appends "prefix.child.param" names of every parameter, depth first. */
fx_status fx_layer_collect_params(const fx_layer *l, fx_params *out);
/* Moves every parameter and buffer of l (and its children) to dev in place.
 * Optimizer state follows on the optimizer's next step only if created
 * after the move: move the model before creating its optimizer. */
fx_status fx_layer_to_device(fx_layer *l, fx_device dev);

/* A persistent f32 parameter, initialised, with requires_grad set. */
fx_tensor *fx_param_create(fx_device dev, int ndim, const int64_t *shape, fx_init_kind kind,
                           double a, double b, fx_rng *rng);

/* FX_ACT_COUNT is the number of activations, not one itself: add new ones
 * before it, and every range check (and table indexed by activation) that
 * uses it follows. */
typedef enum {
    FX_ACT_NONE = 0, FX_ACT_RELU, FX_ACT_SIGMOID, FX_ACT_TANH, FX_ACT_GELU,
    FX_ACT_SOFTMAX, FX_ACT_LEAKY_RELU, FX_ACT_ELU, FX_ACT_COUNT
} fx_activation;

fx_tensor *fx_activate(fx_ctx *ctx, fx_tensor *x, fx_activation act);

typedef struct {
    bool no_bias;            /* default: with bias */
    fx_activation act;       /* default: none */
    fx_init_kind init;       /* weight init; default (0) means Glorot uniform */
    fx_device device;        /* default cpu */
} fx_dense_opts;

/* dense/affine: y = act(x w^T + b), w [out,in] ("weight"), b [out] ("bias"). */
fx_layer *fx_dense_create(const char *name, int64_t in, int64_t out, const fx_dense_opts *o,
                          fx_rng *rng);
/*
 * Pre-packed weights for inference. fx_layer_prepack copies the weights of
 * every dense layer in l's tree (on the CPU) once into the panel layout of
 * the engine's register-tiled kernels; from then on a forward with grad
 * mode off (fx_ctx_set_grad(ctx, false)) streams the packed copy with bias
 * and activation fused into the product, instead of OpenBLAS re-packing
 * the weights on every call. Results equal the unpacked path to float
 * rounding (not bit for bit: another order of partial sums; docs/engine.md).
 * A pack is read-only: any number of threads may run forwards through one
 * packed layer (each with its own context). Prepack (and unpack) while no
 * forward runs. A pack remembers its weights' storage version: after any
 * write through the API (copy, load, optimizer step, move) it is ignored
 * (the plain path runs) until packed again, so training never reads stale
 * packs; writes through fx_data's raw pointer are not seen. Packs are freed
 * with the layer or by fx_layer_unpack. Returns FX_ERR_NOMEM when a pack
 * could not be made (the others are kept; unpacked layers run as before).
 * fx_layer_num_packed counts the current (valid) packs in l's tree.
 */
fx_status fx_layer_prepack(fx_layer *l);
/* Like fx_layer_prepack, in a precision: FX_PREC_BF16 packs the weights as
 * bfloat16 (half the bytes) for the bf16 kernels (operands rounded as in
 * fx_ctx_set_precision, inputs once per call; bias and sums in fp32). A
 * layer holds at most one pack per precision (packing again replaces that
 * precision's pack only; fx_layer_unpack drops both), and a forward uses
 * the pack of its context's precision (fx_ctx_set_precision); without one,
 * the plain path in that precision. So a model packed in both precisions
 * serves either without repacking, and an answer is always in the precision
 * its context asks for. fx_layer_num_packed counts the packs of both.
 * FX_ERR_ARG for a value outside the enum. fx_layer_prepack(l) is
 * fx_layer_prepack_precision(l, FX_PREC_F32). */
fx_status fx_layer_prepack_precision(fx_layer *l, fx_precision p);
void fx_layer_unpack(fx_layer *l);
int fx_layer_num_packed(const fx_layer *l);

/* chain: applies the layers in order; takes ownership. */
fx_layer *fx_chain_create(const char *name, int n, fx_layer *const *layers);

/* ------------------------------------------------------------- optimizers */

typedef enum {
    FX_OPT_SGD = 0, FX_OPT_MOMENTUM, FX_OPT_NESTEROV, FX_OPT_RMSPROP, FX_OPT_ADAGRAD,
    FX_OPT_ADADELTA, FX_OPT_ADAM, FX_OPT_ADAMW, FX_OPT_COUNT
} fx_optim_kind;

/* FX_SCHED_COUNT is the number of kinds, not one itself. */
typedef enum {
    FX_SCHED_CONSTANT = 0, FX_SCHED_STEP, FX_SCHED_COSINE, FX_SCHED_COUNT
} fx_sched_kind;

typedef struct {
    fx_sched_kind kind;
    int64_t warmup_steps; /* linear warmup from 0 to lr over these steps */
    int64_t step_size;    /* FX_SCHED_STEP: multiply by gamma every step_size */
    double gamma;
    int64_t total_steps;  /* FX_SCHED_COSINE: decay to min_lr at total_steps */
    double min_lr;
} fx_schedule;

/* Zero fields take the usual defaults (shown). */
typedef struct {
    double lr;           /* required, > 0 (AdaDelta: 1.0 if 0) */
    double momentum;     /* MOMENTUM/NESTEROV: 0.9; RMSPROP: 0 */
    double beta1, beta2; /* ADAM(W): 0.9, 0.999 */
    double eps;          /* ADAM 1e-8, RMSPROP 1e-8, ADAGRAD 1e-10, ADADELTA 1e-6 */
    double alpha;        /* RMSPROP decay 0.99 */
    double rho;          /* ADADELTA 0.9 */
    double weight_decay; /* L2 added to the gradient; ADAMW: decoupled (0.01) */
    double clip_value;   /* > 0: clamp each gradient element to [-c, c] */
    double clip_norm;    /* > 0: scale gradients so their global L2 norm <= c */
    fx_schedule schedule;
    /* Annealed Gaussian gradient noise (Neelakantan et al. 2015, "Adding
     * gradient noise improves learning for very deep networks"): after
     * clipping, step t (counted from 0) adds N(0, sigma_t^2) to every
     * gradient element, sigma_t^2 = noise_eta / (1 + t)^noise_gamma. The
     * noise of a step depends on (noise_seed, t) only, so a run resumed at
     * step t (fx_optim_set_steps) draws what an uninterrupted one does.
     * noise_eta 0: off (the step is bit-identical to no noise). */
    double noise_eta;    /* >= 0 */
    double noise_gamma;  /* >= 0; 0 means the paper's 0.55 */
    uint64_t noise_seed;
} fx_optim_hparams;

typedef struct fx_optim fx_optim;

/* The optimizer keeps a pointer to params' tensors (not the list). Returns
 * NULL on a bad hyper-parameter (lr <= 0, momentum/betas/alpha/rho outside
 * [0,1), eps <= 0, a negative decay or clip, a bad schedule) or a param that
 * is NULL or not persistent; fx_optim_last_create_error says why. State is
 * made for params requiring grad now (others get it at their first step). */
fx_optim *fx_optim_create(fx_optim_kind kind, const fx_optim_hparams *h, const fx_params *params);
/* Why the calling thread's last fx_optim_create failed ("" after success). */
const char *fx_optim_last_create_error(void);
void fx_optim_free(fx_optim *o);
/* One update with the current gradients. Fails with FX_ERR_VALUE (and
 * changes nothing) if a gradient is not finite. */
fx_status fx_optim_step(fx_optim *o);
void fx_optim_zero_grad(fx_optim *o);
double fx_optim_lr(const fx_optim *o);     /* the rate the next step uses */
int64_t fx_optim_steps(const fx_optim *o); /* steps taken */
/* The gradient noise's standard deviation at a step (counted from 0):
 * sqrt(noise_eta / (1 + step)^noise_gamma); 0 when noise is off. */
double fx_optim_noise_sigma(const fx_optim_hparams *h, int64_t step);
/* Global L2 norm of the gradients before clipping, at the last step. */
double fx_optim_last_grad_norm(const fx_optim *o);
const char *fx_optim_error(const fx_optim *o);
const char *fx_optim_kind_name(fx_optim_kind k);
/* Optimizer state ("<param>.m", "<param>.v", ...) for checkpoints. Slots:
 * MOMENTUM/NESTEROV momentum; RMSPROP square_avg (+ momentum when > 0);
 * ADAGRAD sum; ADADELTA square_avg, acc_delta; ADAM(W) m, v. */
fx_status fx_optim_state(const fx_optim *o, fx_params *out);
void fx_optim_set_steps(fx_optim *o, int64_t steps);
/* The learning rate a schedule gives at a step (counted from 0), for a base
 * rate: step s < warmup_steps gives base * (s + 1) / warmup_steps; then, with
 * t = s - warmup_steps, CONSTANT base, STEP base * gamma^floor(t / step_size)
 * (step_size > 0; gamma 0 means 0.1), COSINE min_lr + (base - min_lr) *
 * (1 + cos(pi * t / T)) / 2 with T = total_steps - warmup_steps, t clamped
 * to T (PyTorch's SequentialLR of LinearLR and StepLR / CosineAnnealingLR). */
double fx_schedule_lr(const fx_schedule *s, double base_lr, int64_t step);

/* --------------------------------------------------------- gradient check */

/* Builds a scalar loss from the tensors being checked. */
typedef fx_tensor *(*fx_loss_fn)(fx_ctx *ctx, void *user);

typedef struct {
    double eps;     /* finite-difference step; default 1e-3 */
    double rtol;    /* default 1e-2 */
    double atol;    /* default 1e-3 */
    int64_t max_checks_per_tensor; /* 0: every element */
} fx_gradcheck_opts;

typedef struct {
    int checked;         /* elements compared */
    int failed;          /* elements outside tolerance */
    double max_abs_err, max_rel_err;
    int worst_tensor;    /* index into wrt of the worst element */
    int64_t worst_index;
    double worst_analytic, worst_numeric;
    char message[256];   /* why it failed, or "" */
} fx_gradcheck_report;

/*
 * Compares the gradient of loss_fn w.r.t. each persistent f32 tensor in wrt
 * (computed by fx_backward) with central finite differences
 * (f(x+eps) - f(x-eps)) / 2eps, evaluated in double-checked float. Users can
 * run it on their own models. Returns FX_OK when every element is within
 * |a - n| <= atol + rtol * |n|, FX_ERR_VALUE when not, other codes when the
 * loss could not be computed (the report's message says why). The wrt
 * tensors' grads are zeroed before and after.
 */
fx_status fx_gradcheck(fx_ctx *ctx, fx_loss_fn loss_fn, void *user, int nwrt, fx_tensor **wrt,
                       const fx_gradcheck_opts *opts, fx_gradcheck_report *report);

/* ------------------------------------------------------------ checkpoints */

/*
 * safetensors: 8-byte little-endian header length N, N bytes of JSON
 * {"name":{"dtype":"F32","shape":[..],"data_offsets":[b,e]},...,
 *  "__metadata__":{...}}, then the raw little-endian data.
 * Saving is atomic: a temporary file in the same directory, fsync, rename,
 * fsync of the directory. nmeta string pairs go to "__metadata__" (keys and
 * values may be NULL when nmeta is 0). err (may be NULL) gets a message.
 */
fx_status fx_safetensors_save(const char *path, const fx_params *tensors, int nmeta,
                              const char *const *keys, const char *const *values, char *err,
                              size_t errlen);
/* Encodes to a malloc'd buffer (for the network). */
fx_status fx_safetensors_encode(const fx_params *tensors, int nmeta, const char *const *keys,
                                const char *const *values, uint8_t **out, size_t *outlen,
                                char *err, size_t errlen);
/* Loads every tensor of a file as new persistent CPU tensors into out
 * (names owned by out; free with fx_params_free_tensors). A truncated or
 * corrupt file gives FX_ERR_FORMAT with a message; nothing is added then. */
fx_status fx_safetensors_load(const char *path, fx_params *out, char *err, size_t errlen);
fx_status fx_safetensors_decode(const uint8_t *buf, size_t len, fx_params *out, char *err,
                                size_t errlen);
/* Copies tensors from a file into existing tensors of the same names, shapes
 * and dtypes (e.g. a model's parameters). Every name in dst must be present
 * unless allow_missing; nothing is changed on error. */
fx_status fx_safetensors_load_into(const char *path, const fx_params *dst, bool allow_missing,
                                   char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

/* Layers of the field, one header per family. */
#include "fx_conv.h"
#include "fx_embed.h"
#include "fx_norm.h"
#include "fx_rnn.h"
#include "fx_seq.h"
#include "fx_model.h"

#endif /* FLUXION_H */
