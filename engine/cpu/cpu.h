/*
 * cpu.h - the CPU backend's kernels (OpenBLAS + OpenMP loops) and the loop
 * helpers they share. Each kernel family (backend.h, kern_*.h) lives in its
 * own file, and engine/cuda/ has a file of the same name for each:
 *
 *     mem.c       memory: alloc, host <-> tensor, strided copy, fill
 *     ew.c        elementwise unary/binary ops, where, dropout mask, axpy
 *     blas.c      gemm, bias fill / backward
 *     reduce.c    sum/mean/max, softmax, sums of squares, non-finite counts
 *     index.c     index_select / index_add, gather / scatter_add
 *     loss.c      cross entropy (labels, soft), BCE from logits
 *     loss_ctc.c  the CTC loss (same family as loss.c)
 *     optim.c     optimizer steps
 *     conv.c      convolution (table fx__cpu_conv)
 *     conv_bias.c channel bias, conv + ReLU loops (in the conv family's
 *                 table; CPU only: CUDA's bias is in cuda/conv.cu)
 *     pool.c      pooling (in the conv family's table)
 *     norm.c      batch / layer / group norm (table fx__cpu_norm)
 *     embed.c     embedding lookups (table fx__cpu_embed)
 *     rnn.c       recurrent cells (table fx__cpu_rnn)
 *     seq.c       attention's masked softmax, lengths check (table fx__cpu_seq)
 *
 * The first families (mem to optim) declare their kernels below and
 * backend.c lists them; the later ones export a whole table from their file.
 * backend.c assembles the backend, one designated entry per family.
 */
#ifndef FX_CPU_H
#define FX_CPU_H

#include "../internal.h"

#include <math.h>
#include <string.h>

static inline float *fx_f32(const fx_tensor *t) { return (float *)fx_data(t); }

/*
 * FX_PFOR(work, i, n, body...) runs `for (int64_t i = 0; i < n; i++) { body }`
 * on fx__num_threads threads (static schedule) when `work` (the loop's total
 * element count) exceeds FX_GRAIN, else on the calling thread, so small
 * tensors pay no fork/join. The test sits outside the OpenMP region on
 * purpose: libgomp allocates a team for every region it enters, even one
 * whose if() clause is false, and a steady-state step must not allocate.
 * Without OpenMP the pragma is ignored and both branches are serial.
 */
#define FX_GRAIN 32768
#define FX_STR(x) #x
#define FX_OMP(clause) _Pragma(FX_STR(omp clause))
#define FX_PFOR(work, i, n, ...)                                                              \
    do {                                                                                      \
        const int64_t fx_pfor_n_ = (n);                                                       \
        if ((work) > FX_GRAIN && fx__num_threads > 1) {                                       \
            FX_OMP(parallel for num_threads(fx__num_threads) schedule(static))                \
            for (int64_t i = 0; i < fx_pfor_n_; i++) {                                        \
                __VA_ARGS__                                                                   \
            }                                                                                 \
        } else {                                                                              \
            for (int64_t i = 0; i < fx_pfor_n_; i++) {                                        \
                __VA_ARGS__                                                                   \
            }                                                                                 \
        }                                                                                     \
    } while (0)

/*
 * Walks the elements of an n-d index space in row-major order with up to
 * three operands, each with its own strides (0 on broadcast dims). The last
 * dimension is the inner loop; callers write
 *
 *     fx_iter it; fx_iter_init(&it, ndim, shape, 3, (const int64_t *[]){ sa, sb, so });
 *     do { for (int64_t i = 0; i < it.inner; i++) ... p[k][i * it.step[k]] ...
 *     } while (fx_iter_next(&it));
 *
 * with it.off[k] the current element offset of operand k.
 */
typedef struct {
    int ndim, nops;
    int64_t shape[FX_MAX_DIMS], idx[FX_MAX_DIMS];
    int64_t strides[3][FX_MAX_DIMS];
    int64_t off[3], step[3], inner;
    bool done;
} fx_iter;

static inline void fx_iter_init(fx_iter *it, int ndim, const int64_t *shape, int nops,
                                const int64_t *const *strides)
{
    it->ndim = ndim;
    it->nops = nops;
    it->done = false;
    for (int k = 0; k < nops; k++) {
        it->off[k] = 0;
        for (int d = 0; d < ndim; d++)
            it->strides[k][d] = strides[k][d];
        it->step[k] = ndim ? strides[k][ndim - 1] : 0;
    }
    for (int d = 0; d < ndim; d++) {
        it->shape[d] = shape[d];
        it->idx[d] = 0;
        if (shape[d] == 0)
            it->done = true;
    }
    it->inner = ndim ? shape[ndim - 1] : 1;
}

/* Advances over all dims but the last; false when finished. */
static inline bool fx_iter_next(fx_iter *it)
{
    for (int d = it->ndim - 2; d >= 0; d--) {
        if (++it->idx[d] < it->shape[d]) {
            for (int k = 0; k < it->nops; k++)
                it->off[k] += it->strides[k][d];
            return true;
        }
        for (int k = 0; k < it->nops; k++)
            it->off[k] -= it->strides[k][d] * (it->shape[d] - 1);
        it->idx[d] = 0;
    }
    return false;
}

/* Strides of t in the index space of shape (same ndim): 0 where t has size 1
 * and shape does not, so t is broadcast there. */
static inline void fx_bcast_strides(const fx_tensor *t, const int64_t *shape, int64_t *out)
{
    for (int d = 0; d < t->ndim; d++)
        out[d] = (t->shape[d] == 1 && shape[d] != 1) ? 0 : t->strides[d];
}

/* Views a contiguous shape as (O, A, I) around axis: O the product of the dims
 * before it, A its size, I the product of the dims after it. */
static inline void fx_axis_split(const fx_tensor *t, int axis, int64_t *O, int64_t *A, int64_t *I)
{
    *O = fx__shape_numel(axis, t->shape);
    *A = t->shape[axis];
    *I = fx__shape_numel(t->ndim - axis - 1, t->shape + axis + 1);
}

/* 4-wide float and int vectors for shuffles, selects and sums (any target;
 * SSE on x86-64); unaligned, and allowed to alias the floats they load. */
typedef float fx_v4f __attribute__((vector_size(16), aligned(4), may_alias));
typedef int32_t fx_v4i __attribute__((vector_size(16), aligned(4), may_alias));
/* Lanes i0..i3 of a and b side by side (0-3 from a, 4-7 from b). */
#if defined(__clang__)
#define FX_SHUF(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define FX_SHUF(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (fx_v4i){ i0, i1, i2, i3 })
#endif

/* memory (mem.c) */
void *cpu_alloc(fx_device dev, size_t nbytes);
void cpu_free(fx_device dev, void *p);
void cpu_to_host(const fx_tensor *t, void *dst);
void cpu_from_host(fx_tensor *t, const void *src);
void cpu_copy(fx_tensor *dst, const fx_tensor *src, bool accumulate);
void cpu_fill(fx_tensor *t, double v);

/* elementwise (ew.c) */
int64_t cpu_unary(fx_unary_op op, float a, float b, const fx_tensor *x, fx_tensor *y);
void cpu_unary_backward(fx_unary_op op, float a, float b, const fx_tensor *x, const fx_tensor *y,
                        const fx_tensor *dy, fx_tensor *dx);
int64_t cpu_binary(fx_binary_op op, const fx_tensor *a, const fx_tensor *b, fx_tensor *out);
void cpu_binary_backward(fx_binary_op op, const fx_tensor *a, const fx_tensor *b,
                         const fx_tensor *dy, fx_tensor *da, fx_tensor *db);
void cpu_where(const fx_tensor *cond, const fx_tensor *a, const fx_tensor *b, fx_tensor *out);
void cpu_where_backward(const fx_tensor *cond, const fx_tensor *dy, fx_tensor *da, fx_tensor *db);
void cpu_dropout_mask(fx_tensor *mask, float p, uint64_t seed);
void cpu_axpy(float alpha, const fx_tensor *x, fx_tensor *y);

/* blas (blas.c) */
void cpu_gemm(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
              const fx_tensor *a, int64_t stride_a, const fx_tensor *b, int64_t stride_b,
              float beta, fx_tensor *c, int64_t stride_c);
void cpu_bias_fill(fx_tensor *y, const fx_tensor *bias);
void cpu_bias_backward(const fx_tensor *dy, fx_tensor *dbias);

/* reductions (reduce.c) */
void cpu_reduce(fx_reduce_op op, const fx_tensor *x, fx_tensor *y, fx_tensor *argmax);
void cpu_reduce_backward(fx_reduce_op op, const fx_tensor *dy, const fx_tensor *argmax,
                         fx_tensor *dx);
void cpu_softmax(const fx_tensor *x, int axis, bool log, fx_tensor *y);
void cpu_softmax_backward(const fx_tensor *y, const fx_tensor *dy, int axis, bool log,
                          fx_tensor *dx);
double cpu_sum_squares(const fx_tensor *x);
int64_t cpu_count_nonfinite(const fx_tensor *x);

/* indexing (index.c) */
int64_t cpu_index_select(const fx_tensor *x, int axis, const fx_tensor *idx, fx_tensor *y);
void cpu_index_add(const fx_tensor *dy, int axis, const fx_tensor *idx, fx_tensor *dx);
int64_t cpu_gather(const fx_tensor *x, int axis, const fx_tensor *idx, fx_tensor *y);
void cpu_scatter_add(const fx_tensor *dy, int axis, const fx_tensor *idx, fx_tensor *dx);

/* losses (loss.c) */
int64_t cpu_ce_labels(const fx_tensor *logits, const fx_tensor *labels, fx_tensor *loss);
void cpu_ce_labels_backward(const fx_tensor *logits, const fx_tensor *labels,
                            const fx_tensor *dloss, fx_tensor *dlogits);
void cpu_ce_soft(const fx_tensor *logits, const fx_tensor *probs, fx_tensor *loss);
void cpu_ce_soft_backward(const fx_tensor *logits, const fx_tensor *probs, const fx_tensor *dloss,
                          fx_tensor *dlogits, fx_tensor *dprobs);
void cpu_bce_logits(const fx_tensor *x, const fx_tensor *t, fx_tensor *loss);
void cpu_bce_logits_backward(const fx_tensor *x, const fx_tensor *t, const fx_tensor *dloss,
                             fx_tensor *dx, fx_tensor *dt);

/* the CTC loss (loss_ctc.c) */
int64_t cpu_ctc_check(const fx_ctc_args *a, const fx_tensor *targets, int64_t padded_width,
                      const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                      fx_tensor *offsets, fx_tensor *inv_len, int64_t *smax, fx_ctc_issue *issue);
void cpu_ctc_forward(const fx_ctc_args *a, const fx_tensor *log_probs, const fx_tensor *targets,
                     const fx_tensor *offsets, const fx_tensor *input_lengths,
                     const fx_tensor *target_lengths, fx_tensor *ext, fx_tensor *alpha,
                     fx_tensor *nll, fx_tensor *loss);
void cpu_ctc_backward(const fx_ctc_args *a, const fx_tensor *log_probs,
                      const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                      const fx_tensor *ext, const fx_tensor *alpha, const fx_tensor *nll,
                      const fx_tensor *dloss, fx_tensor *scratch, fx_tensor *dlog_probs);

/* channel bias and the conv + ReLU loops (conv_bias.c; conv.c's table) */
void cpu_channel_bias_fill(const fx_tensor *b, fx_tensor *y, int64_t n, int64_t c, int64_t l);
void cpu_channel_bias_backward(const fx_tensor *dy, fx_tensor *db, int64_t n, int64_t c,
                               int64_t l);
void cpu_relu_mask_bias_backward(const fx_tensor *dy, const fx_tensor *y, fx_tensor *dm,
                                 fx_tensor *db, int64_t n, int64_t c, int64_t l);
void cpu_conv_relu_rows(float *v, int64_t n); /* v = max(v, 0), NaN -> 0 */

/* A weight gradient by dot products (conv_wdot.c; conv.c's weight pass for
 * layers with at most FX_WDOT_KC taps per output, when _ok says the CPU and
 * the forced instruction set run it): for outputs [o0, o1) and taps k < kc,
 * over S samples of L positions, sum col[k*ldc + s*L + l] * dy[s*ys + o*L + l]
 * (dy taken as 0 where ym, when not NULL, is <= 0) and add it to (or, !add,
 * store it in) dst[k*ldd + o]; with sums, add each output's sum of the
 * masked dy to sums[4*o]. */
#define FX_WDOT_KC 12
bool cpu_conv_wgrad_dot_ok(int64_t kc);
void cpu_conv_wgrad_dot(int64_t kc, int64_t o0, int64_t o1, int64_t S, int64_t L,
                        const float *col, int64_t ldc, const float *dy, const float *ym,
                        int64_t ys, float *dst, int64_t ldd, bool add, float *sums);

/* pooling (pool.c; the conv family's table in conv.c lists them) */
void cpu_pool2d(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *x, fx_tensor *y,
                fx_tensor *argmax);
void cpu_pool2d_backward(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                         const fx_tensor *argmax, fx_tensor *dx);
void cpu_pool2d_backward_set(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                             const fx_tensor *argmax, fx_tensor *dx);

/* optimizers (optim.c) */
void cpu_optim_step(fx_optim_kind kind, const fx_optim_step_args *a, fx_tensor *p,
                    const fx_tensor *g, fx_tensor *s1, fx_tensor *s2);

/* An index value of an i32/i64 index tensor. */
static inline int64_t fx_index_at(const fx_tensor *idx, int64_t off)
{
    return idx->dtype == FX_I64 ? ((const int64_t *)fx_data(idx))[off]
                                : ((const int32_t *)fx_data(idx))[off];
}

/*
 * Branch-free selects on the float bits. GCC (under the default
 * -ftrapping-math) will not if-convert a float select whose arms it would
 * have to compute, since that may raise an FP exception the branch avoided,
 * and a loop with a branch does not vectorise; masks on the bits have no
 * such problem. fx_neginf_mask(x) is all ones when x is -inf; fx_pick(mask, a, b)
 * is a where mask is all ones, b where it is 0.
 */
static inline int32_t fx_neginf_mask(float x)
{
    int32_t b;
    memcpy(&b, &x, sizeof b);
    return -(int32_t)(b == (int32_t)0xff800000);
}

static inline float fx_pick(int32_t mask, float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    ia = (ia & mask) | (ib & ~mask);
    memcpy(&a, &ia, sizeof a);
    return a;
}

/*
 * exp(x) within 1e-7 relative of expf for x in [-87, 88], in straight-line
 * code that loops vectorise (a call to expf stops that). Below -87, and for
 * -inf, it returns 0; above 88 it returns exp(88) (finite, which sigmoid and
 * tanh built on it need); NaN stays NaN. Cephes' method: x = n ln2 + r, |r| <= ln2/2,
 * e^r by a degree-6 polynomial, 2^n built in the exponent bits; the clamp
 * compares order-preserving integer keys of the float bits (float compares
 * may trap, which keeps the compiler from if-converting them). Softmax,
 * the recurrent cells and CTC all use it.
 */
static inline float fx_exp_approx(float x)
{
    int32_t k;
    memcpy(&k, &x, sizeof k);
    k ^= (k >> 31) & 0x7fffffff;
    const int32_t lo = (int32_t)(0xc2ae0000u ^ 0x7fffffffu); /* key of -87.0f */
    const int32_t hi = 0x42b00000;                           /* key of 88.0f */
    int32_t keep = k < lo ? 0 : -1;
    k = k < lo ? lo : k;
    k = k > hi ? hi : k;
    k ^= (k >> 31) & 0x7fffffff;
    memcpy(&x, &k, sizeof x);
    float t = x * 1.44269504088896341f + 12582912.0f;
    uint32_t nb;
    memcpy(&nb, &t, sizeof nb);
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t eb = ((nb + 127u) << 23) & (uint32_t)keep;
    float e;
    memcpy(&e, &eb, sizeof e);
    return p * e;
}

/*
 * log(x) for finite normal x > 0, within ~2e-7 relative of logf, vectorisable
 * like fx_exp_approx (Cephes' logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * log(m) by a degree-9 polynomial in m - 1). Zero, denormals, infinities and
 * NaN are not handled: callers select around them.
 */
static inline float fx_log_approx(float x)
{
    int32_t i;
    memcpy(&i, &x, sizeof i);
    int32_t e = ((i >> 23) & 0xff) - 126; /* x = m 2^e, m in [0.5, 1) */
    i = (i & 0x007fffff) | 0x3f000000;
    float m;
    memcpy(&m, &i, sizeof m);
    int32_t small = i < 0x3f3504f3 ? 1 : 0; /* m < sqrt(1/2), on the bits (m > 0) */
    e -= small;
    float twice = small ? m : 0.0f; /* a select of values: both arms computed would trap */
    m = m + twice - 1.0f;
    float z = m * m, fe = (float)e;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

#endif /* FX_CPU_H */
