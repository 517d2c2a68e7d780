/* reduce.c - reductions (sum, mean, max with argmax), softmax and
 * log-softmax along any axis, and the whole-tensor sums the optimizers use
 * (sum of squares, non-finite count).
 *
 * A reduction first merges adjacent dims of one kind (kept or reduced) and
 * drops size-1 dims, which turns most calls into one of two fast shapes:
 *   rows:    x (O, R) reduced over R (last axis, or all axes when O == 1);
 *   columns: x (O, R, I) reduced over R (leading or middle axes).
 * Everything else walks the reduced dims of each output with fx_iter. Sums
 * accumulate in double, in fixed-size chunks, so results do not depend on the
 * thread count. Inputs are contiguous (the ops make them so). */
#include "cpu.h"

/* ------------------------------------------------------------ accumulators */

/* What a run of elements reduces to: a sum, or a maximum and its flat index
 * (arg < 0 while empty). */
typedef struct {
    double sum;
    float max;
    int64_t arg;
} red_acc;

/* Kinds of run beyond fx_reduce_op, for the whole-tensor helpers. */
enum { RUN_SUMSQ = FX_RED_MAX + 1, RUN_NONFINITE };

static inline red_acc acc_empty(void) { return (red_acc){0.0, -INFINITY, -1}; }

/* True when v (at a later index) replaces the current maximum m: larger, or
 * the first NaN, which then sticks (maxima propagate NaN like torch.max). */
static inline bool max_beats(float v, float m, int64_t marg)
{
    return marg < 0 || v > m || (v != v && m == m);
}

/* Merges b, which covers later elements than a, into a. */
static inline void acc_merge(red_acc *a, red_acc b)
{
    a->sum += b.sum;
    if (b.arg >= 0 && max_beats(b.max, a->max, a->arg)) {
        a->max = b.max;
        a->arg = b.arg;
    }
}

/* Sum of p[i] (q NULL) or of p[i] * q[i] over a contiguous run, in 8 double
 * lanes that the compiler vectorises (one accumulator would be a serial
 * chain of dependent adds). */
static inline double run_sum(const float *p, const float *q, int64_t n)
{
    double lane[8] = {0}, total = 0.0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] += q ? (double)p[i + j] * q[i + j] : (double)p[i + j];
    for (; i < n; i++)
        total += q ? (double)p[i] * q[i] : p[i];
    for (int j = 0; j < 8; j++)
        total += lane[j];
    return total;
}

/* Maximum of a contiguous run (NaN ignored; -inf when empty), in 8 lanes so
 * the compares do not form one serial chain. */
static inline float run_max(const float *p, int64_t n)
{
    float lane[8], m = -INFINITY;
    for (int j = 0; j < 8; j++)
        lane[j] = -INFINITY;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] = p[i + j] > lane[j] ? p[i + j] : lane[j];
    for (; i < n; i++)
        m = p[i] > m ? p[i] : m;
    for (int j = 0; j < 8; j++)
        m = lane[j] > m ? lane[j] : m;
    return m;
}

/* Reduces the contiguous run p[0..n) whose first element has flat index base
 * in x. kind is an fx_reduce_op or a RUN_ kind. */
static red_acc reduce_run(int kind, const float *p, int64_t n, int64_t base)
{
    red_acc a = acc_empty();
    switch (kind) {
    case FX_RED_MAX:
        for (int64_t i = 0; i < n; i++)
            if (max_beats(p[i], a.max, a.arg)) {
                a.max = p[i];
                a.arg = base + i;
            }
        break;
    case RUN_NONFINITE: { /* exponent all ones: inf or NaN; an integer test vectorises */
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            uint32_t b;
            memcpy(&b, p + i, sizeof b);
            bad += (b & 0x7f800000u) == 0x7f800000u;
        }
        a.sum = (double)bad;
        break;
    }
    default: a.sum = run_sum(p, kind == RUN_SUMSQ ? p : NULL, n); break;
    }
    return a;
}

/* reduce_run over a long run, split into at most 64 chunks that run in
 * parallel and are merged in order (deterministic for any thread count). */
#define RUN_CHUNKS 64
static red_acc reduce_run_par(int kind, const float *p, int64_t n, int64_t base)
{
    if (n <= FX_GRAIN) /* one chunk (the split depends on n only, not on threads) */
        return reduce_run(kind, p, n, base);
    int64_t nch = (n + FX_GRAIN - 1) / FX_GRAIN;
    if (nch > RUN_CHUNKS)
        nch = RUN_CHUNKS;
    int64_t len = (n + nch - 1) / nch;
    red_acc part[RUN_CHUNKS];
    FX_PFOR(n, c, nch, int64_t b = c * len, e = b + len < n ? b + len : n;
            part[c] = b < e ? reduce_run(kind, p + b, e - b, base + b) : acc_empty(););
    red_acc a = part[0];
    for (int64_t c = 1; c < nch; c++)
        acc_merge(&a, part[c]);
    return a;
}

/* -------------------------------------------------------------- geometry */

/* A reduction after merging dims: the kept dims (the output's index space,
 * row-major) and the reduced dims, each with its stride in contiguous x. */
typedef struct {
    int nk, nr;
    int64_t kshape[FX_MAX_DIMS], kstride[FX_MAX_DIMS];
    int64_t rshape[FX_MAX_DIMS], rstride[FX_MAX_DIMS];
    int64_t nout, count; /* outputs; inputs per output */
} red_geom;

/* Builds the geometry of reducing x (contiguous) to y's shape, where a dim is
 * reduced when y has size 1 there. Adjacent dims of one kind merge into one
 * (valid because x is contiguous); size-1 dims are dropped. */
static void red_geom_init(red_geom *g, const fx_tensor *x, const fx_tensor *y)
{
    int64_t xs[FX_MAX_DIMS];
    fx__contiguous_strides(x->ndim, x->shape, xs);
    g->nk = g->nr = 0;
    g->nout = g->count = 1;
    int last = -1; /* kind of the previous kept group: 0 kept, 1 reduced */
    for (int d = 0; d < x->ndim; d++) {
        int64_t n = x->shape[d];
        if (n == 1)
            continue;
        int red = y->shape[d] == 1;
        int *cnt = red ? &g->nr : &g->nk;
        int64_t *shp = red ? g->rshape : g->kshape, *str = red ? g->rstride : g->kstride;
        if (last == red) { /* merge with the group just before */
            shp[*cnt - 1] *= n;
            str[*cnt - 1] = xs[d];
        } else {
            shp[*cnt] = n;
            str[*cnt] = xs[d];
            (*cnt)++;
        }
        last = red;
        *(red ? &g->count : &g->nout) *= n;
    }
}

/* Offset in x of the first input of output o (row-major over kept dims). */
static inline int64_t red_base(const red_geom *g, int64_t o)
{
    int64_t off = 0;
    for (int d = g->nk - 1; d >= 0; d--) {
        off += (o % g->kshape[d]) * g->kstride[d];
        o /= g->kshape[d];
    }
    return off;
}

/* Writes one finished output. */
static inline void red_store(fx_reduce_op op, red_acc a, int64_t count, float *Y, int64_t *A,
                             int64_t o)
{
    if (op == FX_RED_MAX) {
        Y[o] = a.max;
        if (A)
            A[o] = a.arg;
    } else {
        Y[o] = (float)(op == FX_RED_MEAN ? a.sum / (double)count : a.sum);
    }
}

/* Column reduction x (O, R, I) -> y (O, I): tasks of (o, block of columns)
 * keep a block of accumulators while streaming the R rows. */
#define COL_BLOCK 64
static void reduce_columns(fx_reduce_op op, const float *X, int64_t O, int64_t R, int64_t I,
                           float *Y, int64_t *A)
{
    int64_t nb = (I + COL_BLOCK - 1) / COL_BLOCK, ntasks = O * nb, work = O * R * I;
    FX_PFOR(
        work, t, ntasks, int64_t o = t / nb, k0 = (t % nb) * COL_BLOCK;
        int w = (int)(I - k0 < COL_BLOCK ? I - k0 : COL_BLOCK); const float *x = X + o * R * I + k0;
        red_acc acc[COL_BLOCK]; for (int k = 0; k < w; k++) acc[k] = acc_empty();
        if (op == FX_RED_MAX) {
            for (int64_t r = 0; r < R; r++)
                for (int k = 0; k < w; k++)
                    if (max_beats(x[r * I + k], acc[k].max, acc[k].arg)) {
                        acc[k].max = x[r * I + k];
                        acc[k].arg = o * R * I + r * I + k0 + k;
                    }
        } else {
            double s[COL_BLOCK] = {0};
            for (int64_t r = 0; r < R; r++)
                for (int k = 0; k < w; k++)
                    s[k] += x[r * I + k];
            for (int k = 0; k < w; k++)
                acc[k].sum = s[k];
        } for (int k = 0; k < w; k++) red_store(op, acc[k], R, Y, A, o * I + k0 + k););
}

/* y (x's shape with reduced dims of size 1) = op over the reduced dims of x;
 * argmax (i64, y's shape) gets the flat index into x of each maximum. */
void cpu_reduce(fx_reduce_op op, const fx_tensor *x, fx_tensor *y, fx_tensor *argmax)
{
    red_geom g;
    red_geom_init(&g, x, y);
    const float *X = fx_f32(x);
    float *Y = fx_f32(y);
    int64_t *A = op == FX_RED_MAX && argmax ? (int64_t *)fx_data(argmax) : NULL;
    int64_t work = g.nout * g.count;

    if (g.nr == 1 && g.rstride[0] == 1) { /* rows: (O, R), reduced run contiguous */
        if (g.nout >= 8 || work <= FX_GRAIN) {
            FX_PFOR(work, o, g.nout,
                    red_store(op, reduce_run(op, X + o * g.count, g.count, o * g.count), g.count, Y,
                              A, o););
        } else {
            for (int64_t o = 0; o < g.nout; o++)
                red_store(op, reduce_run_par(op, X + o * g.count, g.count, o * g.count), g.count, Y,
                          A, o);
        }
        return;
    }
    if (g.nr == 1 && g.nk >= 1 && g.kstride[g.nk - 1] == 1) { /* columns: (O, R, I) */
        int64_t I = g.kshape[g.nk - 1], O = g.nk == 2 ? g.kshape[0] : 1;
        reduce_columns(op, X, O, g.rshape[0], I, Y, A);
        return;
    }
    /* General: each output walks its reduced dims (nr == 0 walks one element). */
    FX_PFOR(
        work, o, g.nout, int64_t base = red_base(&g, o); red_acc a = acc_empty(); fx_iter it;
        fx_iter_init(&it, g.nr, g.rshape, 1, (const int64_t *[]){g.rstride});
        if (!it.done) /* a reduced dim of size 0: an empty reduction */
        do {
            const float *p = X + base + it.off[0];
            for (int64_t i = 0; i < it.inner; i++) {
                float v = p[i * it.step[0]];
                if (op != FX_RED_MAX)
                    a.sum += v;
                else if (max_beats(v, a.max, a.arg)) {
                    a.max = v;
                    a.arg = base + it.off[0] + i * it.step[0];
                }
            }
        } while (fx_iter_next(&it));
        red_store(op, a, g.count, Y, A, o););
}

/* dx += broadcast(dy) (MEAN: divided by the count); MAX: dx[argmax] += dy.
 * dy has dx's ndim with reduced dims of size 1; the outputs' input sets are
 * disjoint, so every loop below parallelises without races. */
void cpu_reduce_backward(fx_reduce_op op, const fx_tensor *dy, const fx_tensor *argmax,
                         fx_tensor *dx)
{
    const float *DY = fx_f32(dy);
    float *DX = fx_f32(dx);
    if (op == FX_RED_MAX) {
        const int64_t *A = fx_data(argmax);
        int64_t n = fx_tensor_numel(dy);
        FX_PFOR(n, o, n, if (A[o] >= 0) DX[A[o]] += DY[o];);
        return;
    }
    red_geom g;
    red_geom_init(&g, dx, dy);
    float s = op == FX_RED_MEAN ? (float)(1.0 / (double)g.count) : 1.0f;
    int64_t work = g.nout * g.count;

    if (g.nr == 1 && g.rstride[0] == 1) { /* rows: dx (O, R) */
        if (g.nout == 1) {
            float v = DY[0] * s;
            FX_PFOR(work, i, g.count, DX[i] += v;);
        } else {
            FX_PFOR(work, o, g.nout, float v = DY[o] * s, *d = DX + o * g.count;
                    for (int64_t i = 0; i < g.count; i++) d[i] += v;);
        }
        return;
    }
    if (g.nr == 1 && g.nk >= 1 && g.kstride[g.nk - 1] == 1) { /* columns: dx (O, R, I) */
        int64_t I = g.kshape[g.nk - 1], R = g.rshape[0], rows = work / I;
        FX_PFOR(work, q, rows, const float *src = DY + (q / R) * I; float *d = DX + q * I;
                for (int64_t k = 0; k < I; k++) d[k] += src[k] * s;);
        return;
    }
    FX_PFOR(
        work, o, g.nout, int64_t base = red_base(&g, o); float v = DY[o] * s; fx_iter it;
        fx_iter_init(&it, g.nr, g.rshape, 1, (const int64_t *[]){g.rstride}); if (!it.done) do {
            float *p = DX + base + it.off[0];
            for (int64_t i = 0; i < it.inner; i++)
                p[i * it.step[0]] += v;
        } while (fx_iter_next(&it)););
}

/* ---------------------------------------------------------------- softmax */


/* Softmax of w <= COL_BLOCK interleaved rows of A elements (element a of row
 * k at x[a * I + k]): y = exp(x - max) / sum, or for the log form
 * y = (x - max) - log(sum). Subtracting the max keeps exp <= 1. Rows advance
 * together so each pass streams memory in order and vectorises across k;
 * called with the constants I = w = 1 it inlines (always_inline: a shared
 * clone would lose the constants) into the loops of one contiguous row, whose
 * max and sum then run in lanes. */
static inline __attribute__((always_inline)) void softmax_tile(const float *x, float *y, int64_t A,
                                                               int64_t I, int w, bool lg)
{
    float m[COL_BLOCK];
    double s[COL_BLOCK];
    for (int k = 0; k < w; k++) {
        m[k] = -INFINITY;
        s[k] = 0.0;
    }
    if (I == 1) {
        m[0] = run_max(x, A);
    } else {
        for (int64_t a = 0; a < A; a++)
            for (int k = 0; k < w; k++)
                m[k] = x[a * I + k] > m[k] ? x[a * I + k] : m[k];
    }
    for (int64_t a = 0; a < A; a++)
        for (int k = 0; k < w; k++)
            y[a * I + k] = fx_exp_approx(x[a * I + k] - m[k]);
    if (I == 1) {
        s[0] = run_sum(y, NULL, A);
    } else {
        for (int64_t a = 0; a < A; a++)
            for (int k = 0; k < w; k++)
                s[k] += y[a * I + k];
    }
    float f[COL_BLOCK];
    for (int k = 0; k < w; k++)
        f[k] = lg ? (float)log(s[k]) : (float)(1.0 / s[k]);
    for (int64_t a = 0; a < A; a++)
        for (int k = 0; k < w; k++)
            y[a * I + k] = lg ? (x[a * I + k] - m[k]) - f[k] : y[a * I + k] * f[k];
}

/* Backward of a tile of interleaved rows (as above): softmax
 * dx += y * (dy - sum(dy * y)); log-softmax dx += dy - exp(y) * sum(dy). */
static inline __attribute__((always_inline)) void
softmax_back_tile(const float *y, const float *dy, float *dx, int64_t A, int64_t I, int w, bool lg)
{
    double s[COL_BLOCK] = {0};
    if (I == 1) {
        s[0] = run_sum(dy, lg ? NULL : y, A);
    } else {
        for (int64_t a = 0; a < A; a++)
            for (int k = 0; k < w; k++)
                s[k] += lg ? dy[a * I + k] : dy[a * I + k] * y[a * I + k];
    }
    float f[COL_BLOCK];
    for (int k = 0; k < w; k++)
        f[k] = (float)s[k];
    for (int64_t a = 0; a < A; a++)
        for (int k = 0; k < w; k++) {
            int64_t i = a * I + k;
            dx[i] += lg ? dy[i] - fx_exp_approx(y[i]) * f[k] : y[i] * (dy[i] - f[k]);
        }
}

/* Runs TILE over rows (I == 1, the last axis: w = I = 1 are constants there)
 * or over (o, block of COL_BLOCK inner positions) otherwise. TILE sees off
 * (the tile's first element), A, I and w. */
#define SOFTMAX_LOOP(TILE)                                                                         \
    do {                                                                                           \
        int64_t O, A, I;                                                                           \
        fx_axis_split(ref, axis, &O, &A, &I);                                                      \
        int64_t work = O * A * I;                                                                  \
        if (I == 1) {                                                                              \
            FX_PFOR(work, o, O, const int64_t off = o * A, I = 1; /* shadows: a constant */        \
                    const int w = 1; TILE;);                                                       \
        } else {                                                                                   \
            int64_t nb = (I + COL_BLOCK - 1) / COL_BLOCK, ntasks = O * nb;                         \
            FX_PFOR(work, t, ntasks, int64_t k0 = (t % nb) * COL_BLOCK,                            \
                    off = (t / nb) * A * I + k0;                                                   \
                    int w = (int)(I - k0 < COL_BLOCK ? I - k0 : COL_BLOCK); TILE;);                \
        }                                                                                          \
                                                                                                   \
    } while (0)

/* y = softmax(x) or log_softmax(x) along axis; x, y contiguous. */
void cpu_softmax(const fx_tensor *x, int axis, bool lg, fx_tensor *y)
{
    const fx_tensor *ref = x;
    const float *X = fx_f32(x);
    float *Y = fx_f32(y);
    SOFTMAX_LOOP(softmax_tile(X + off, Y + off, A, I, w, lg));
}

/* dx += the softmax (or log-softmax) Jacobian applied to dy, from y. */
void cpu_softmax_backward(const fx_tensor *y, const fx_tensor *dy, int axis, bool lg, fx_tensor *dx)
{
    const fx_tensor *ref = y;
    const float *Y = fx_f32(y), *DY = fx_f32(dy);
    float *DX = fx_f32(dx);
    SOFTMAX_LOOP(softmax_back_tile(Y + off, DY + off, DX + off, A, I, w, lg));
}

/* ------------------------------------------------------- whole-tensor sums */

/* Reduces every element of x with a RUN_ kind: contiguous tensors in
 * parallel chunks, strided views with fx_iter. */
static double reduce_all(int kind, const fx_tensor *x)
{
    const float *X = fx_f32(x);
    if (fx_tensor_is_contiguous(x))
        return reduce_run_par(kind, X, fx_tensor_numel(x), 0).sum;
    red_acc a = acc_empty();
    fx_iter it;
    fx_iter_init(&it, x->ndim, x->shape, 1, (const int64_t *[]){x->strides});
    if (it.done)
        return 0.0;
    do {
        for (int64_t i = 0; i < it.inner; i++)
            acc_merge(&a, reduce_run(kind, X + it.off[0] + i * it.step[0], 1, 0));
    } while (fx_iter_next(&it));
    return a.sum;
}

double cpu_sum_squares(const fx_tensor *x) { return reduce_all(RUN_SUMSQ, x); }

int64_t cpu_count_nonfinite(const fx_tensor *x) { return (int64_t)reduce_all(RUN_NONFINITE, x); }
