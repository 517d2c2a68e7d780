/*
 * internal.h - what the engine's modules share and users do not see: the
 * context, the arena, tape records and the helpers every op uses.
 *
 * How an op is written (see op_matmul.c for a complete one):
 *
 *     fx_tensor *fx_relu(fx_ctx *ctx, fx_tensor *x) {
 *         if (!fx__op_check(ctx, "relu", 1, (fx_tensor *[]){ x })) return NULL;
 *         fx_tensor *y = fx__tensor_new_like(ctx, x);             // arena
 *         if (!y) return NULL;
 *         fx_be(x)->ew->unary(FX_UN_RELU, 0, 0, x, y);            // kernel
 *         fx_node *n = fx__record(ctx, "relu", relu_backward, y, 1, (fx_tensor *[]){ x });
 *         (void)n;                                                // save extras in n
 *         return y;
 *     }
 *     static void relu_backward(fx_ctx *ctx, fx_node *n) {
 *         fx_tensor *x = n->in[0];
 *         if (fx_tensor_requires_grad(x))
 *             fx_be(x)->ew->unary_backward(FX_UN_RELU, 0, 0, x, n->out, n->out->grad,
 *                                          fx__grad(ctx, x));
 *     }
 *
 * fx__op_check returns false for a NULL input (error already recorded
 * upstream) and records an error for a device or dtype mismatch.
 *
 * Names (libuv's uv__ rule): every function or table the engine's files
 * share but users must not call has the internal prefix fx__ (two
 * underscores), so `fx_` in a name means public API, declared in fluxion.h
 * or an fx_*.h header. Static inline helpers in the internal headers
 * (fx_be, fx_data) leave no symbol behind and keep the short form.
 */
#ifndef FX_INTERNAL_H
#define FX_INTERNAL_H

#include "backend.h"
#include "fluxion.h"

#include <stdarg.h>
#include <stdio.h>

/* ------------------------------------------------------------------ rng */
struct fx_rng {
    uint64_t s[4];
};
void fx__rng_init(struct fx_rng *r, uint64_t seed);
/* Counter-based uniform in [0,1) from (seed, i): the same on every backend. */
static inline uint64_t fx_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline float fx_uniform_at(uint64_t seed, uint64_t i)
{
    return (float)(fx_mix64(seed ^ fx_mix64(i)) >> 40) * (1.0f / 16777216.0f);
}

/* ---------------------------------------------------------------- arena */
typedef struct fx_chunk {
    struct fx_chunk *next;
    char *base;
    size_t size, used;
} fx_chunk;

/* A bump allocator. Host arenas malloc their chunks; device arenas get them
 * from the backend. Reset keeps the memory (coalesced into one chunk when the
 * step needed several), so steady-state steps do not allocate. */
typedef struct {
    fx_chunk *chunks; /* newest first */
    size_t capacity, used;
    const fx_backend *be; /* NULL: host memory */
    fx_device dev;
} fx_arena;

void fx__arena_init(fx_arena *a, const fx_backend *be, fx_device dev);
void *fx__arena_alloc(fx_arena *a, size_t nbytes); /* 64-byte aligned, NULL on OOM */
void fx__arena_reset(fx_arena *a);
void fx__arena_release(fx_arena *a);

/* ----------------------------------------------------------------- tape */
typedef struct fx_node fx_node;
typedef void (*fx_backward_fn)(fx_ctx *ctx, fx_node *n);

#define FX_NODE_INTS (2 * FX_MAX_DIMS + 4)

/* One tape record: what the op's backward needs. */
struct fx_node {
    fx_backward_fn backward;
    const char *op;
    fx_tensor *out;
    fx_tensor **in;
    int nin;
    fx_tensor *saved[3];
    float f[4];
    int64_t i[FX_NODE_INTS];
    fx_node *prev;
};

struct fx_ctx {
    fx_device dev;
    const fx_backend *be;
    fx_arena meta; /* tensor structs, tape records (host) */
    fx_arena data; /* element memory (device) */
    fx_node *tape;
    size_t tape_len;
    bool grad, training;
    struct fx_rng rng;
    fx_status status;
    char err[512];
    fx_priority priority;
    fx_precision precision; /* fx_ctx_set_precision (dense products) */
    fx_grad_ready_fn grad_ready; /* fx_ctx_set_grad_ready_hook */
    void *grad_ready_data;
    /* CUDA: the context's stream and cuBLAS handle (engine/cuda/stream.cu,
     * an fx__cuda_lane), NULL until the context first runs something. */
    void *lane;
};

/* Makes ctx's stream the calling thread's current one on its device (CUDA;
 * nothing on the CPU). Every engine entry that takes a context calls it
 * before queuing work: op checks, tensor and tape allocation, backward,
 * reset. Cheap when it is already current. */
#ifdef FX_HAVE_CUDA
void fx__ctx_enter(fx_ctx *ctx);
#else
static inline void fx__ctx_enter(fx_ctx *ctx) { (void)ctx; }
#endif

/* ------------------------------------------------------- op helpers */

static inline const fx_backend *fx_be(const fx_tensor *t) { return fx__backend_for(t->device); }

/* Checks n inputs: none NULL (returns false silently: the error is already
 * recorded), all on the context's device (records FX_ERR_DEVICE) and all f32
 * (FX_ERR_DTYPE). Use fx__op_check_dtype for other dtypes. */
bool fx__op_check(fx_ctx *ctx, const char *op, int n, fx_tensor *const *xs);
/* Like fx__op_check for ops that only move elements: any dtype, but one. */
bool fx__op_check_same_dtype(fx_ctx *ctx, const char *op, int n, fx_tensor *const *xs);
bool fx__op_check_dtype(fx_ctx *ctx, const char *op, const char *what, const fx_tensor *t,
                        fx_dtype want);
/* Checks an integer tensor argument (lengths, labels, indices named by
 * what, plural): on the context's device and i32 or i64. */
bool fx__op_check_int(fx_ctx *ctx, const char *op, const char *what, const fx_tensor *t);
/* Checks a lengths tensor: as fx__op_check_int, and [n] (one per sample). */
bool fx__op_check_lengths(fx_ctx *ctx, const char *op, const char *what, const fx_tensor *t,
                          int64_t n);
/* The integer at flat index i of a contiguous i32/i64 tensor, read through a
 * one-element view (any device); for error messages. -1 on OOM. */
long long fx__int_at(fx_ctx *ctx, const fx_tensor *t, int64_t i);
/* Records "op: message" and returns NULL. */
fx_tensor *fx__op_fail(fx_ctx *ctx, fx_status s, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Normalises a possibly negative axis; -1 if out of range (and records
 * FX_ERR_AXIS naming op and shape). */
int fx__axis(fx_ctx *ctx, const char *op, const fx_tensor *x, int axis);

/* Arena tensors. */
fx_tensor *fx__tensor_new_like(fx_ctx *ctx, const fx_tensor *x);
/* A tensor struct sharing x's storage with a new shape/strides/offset. */
fx_tensor *fx__view(fx_ctx *ctx, const fx_tensor *x, int ndim, const int64_t *shape,
                    const int64_t *strides, int64_t offset);
void fx__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* Checked product of a shape; -1 on overflow or a negative dim. */
int64_t fx__shape_numel(int ndim, const int64_t *shape);
void *fx__ctx_alloc_meta(fx_ctx *ctx, size_t nbytes); /* records NOMEM on failure */

/* Broadcast shapes of a and b into out (ndim = max); false if they do not
 * broadcast. */
bool fx__broadcast_shape(const fx_tensor *a, const fx_tensor *b, int *ndim, int64_t *shape);
/* A view of t with ndim dims (leading 1s prepended), for kernels that want
 * equal ranks. */
fx_tensor *fx__expand_rank(fx_ctx *ctx, const fx_tensor *t, int ndim);

/* Appends a tape record when grad mode is on and some input requires grad;
 * then marks out as requiring grad. Returns the record (to save extras in) or
 * NULL when nothing was recorded (or on OOM, which is recorded). */
fx_node *fx__record(fx_ctx *ctx, const char *op, fx_backward_fn backward, fx_tensor *out, int nin,
                    fx_tensor *const *in);
/* The gradient buffer of t: its existing grad, or a new zeroed arena tensor
 * of t's shape (contiguous). NULL only on OOM. */
fx_tensor *fx__grad(fx_ctx *ctx, fx_tensor *t);
/* The same for a backward pass that can set every element of the gradient
 * instead of adding to it: a new buffer is left unfilled (no zero pass the
 * pass would overwrite) and *fresh says so; an existing one (*fresh false)
 * must be added to. NULL only on OOM. */
fx_tensor *fx__grad_for_set(fx_ctx *ctx, fx_tensor *t, bool *fresh);

/* Fails the op with FX_ERR_VALUE when a kernel reported non-finite outputs. */
bool fx__check_finite(fx_ctx *ctx, const char *op, int64_t nonfinite, const fx_tensor *out);

/* The forward function a layer was created with (layer.c); lets combinators
 * recognise their own layer kinds. NULL for a NULL layer. */
fx_forward_fn fx__layer_forward_fn(const fx_layer *l);

/* After a failure inside layer l's forward: prefixes the recorded message
 * with "layer '<name>': " (once), so the user learns which layer failed. */
void fx__layer_name_error(fx_ctx *ctx, const fx_layer *l);

/* Thread count for the engine's loops (set by fx_set_num_threads). */
extern int fx__num_threads;

#endif /* FX_INTERNAL_H */
