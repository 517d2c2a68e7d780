/* ops_rows_reduce.c - registry rows of the reductions (sum, mean, max over
 * axis sets, keepdim or not) and softmax / log-softmax along an axis. See
 * ops_registry.h. */
#include "ops_registry.h"

#include <math.h>
#include <string.h>

enum { R_SUM, R_MEAN, R_MAX };

typedef struct {
    int naxes, axes[4];
    bool keepdim;
    bool transposed; /* reduce a transposed (strided) view of a 2-D input */
} red_arg;

static fx_tensor *f_reduce(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                           const or_case *c)
{
    const red_arg *a = c->arg;
    fx_tensor *x = a->transposed ? fx_transpose(ctx, in[0], 0, 1) : in[0];
    switch (*(const int *)arg) {
    case R_SUM: return fx_sum(ctx, x, a->naxes, a->axes, a->keepdim);
    case R_MEAN: return fx_mean(ctx, x, a->naxes, a->axes, a->keepdim);
    default: return fx_max(ctx, x, a->naxes, a->axes, a->keepdim);
    }
}

/* Every element of x adds into (or maxes) the output element at its
 * coordinates with the reduced ones set to 0; reduced dims are dropped
 * unless keepdim. */
static void r_reduce(const or_ref *r)
{
    const red_arg *a = r->c->arg;
    int op = *(const int *)r->arg;
    or_host x = r->in[0];
    double tv[64];
    if (a->transposed) { /* x^T of a small 2-D input */
        for (int64_t i = 0; i < x.shape[0]; i++)
            for (int64_t j = 0; j < x.shape[1]; j++)
                tv[j * x.shape[0] + i] = r->in[0].v[i * x.shape[1] + j];
        x.shape[0] = r->in[0].shape[1], x.shape[1] = r->in[0].shape[0], x.v = tv;
    }
    int nd = x.ndim;
    bool red[FX_MAX_DIMS];
    for (int d = 0; d < nd; d++)
        red[d] = a->naxes == 0;
    for (int i = 0; i < a->naxes; i++)
        red[a->axes[i] < 0 ? a->axes[i] + nd : a->axes[i]] = true;
    int64_t kshape[FX_MAX_DIMS], oshape[FX_MAX_DIMS], count = 1;
    int k = 0;
    for (int d = 0; d < nd; d++) {
        kshape[d] = red[d] ? 1 : x.shape[d];
        count *= red[d] ? x.shape[d] : 1;
        if (a->keepdim || !red[d])
            oshape[k++] = kshape[d];
    }
    or_host_init(r->out, k, oshape);
    for (int64_t o = 0; o < r->out->n; o++)
        r->out->v[o] = op == R_MAX ? -INFINITY : 0.0;
    for (int64_t i = 0; i < x.n; i++) {
        int64_t rem = i, o = 0, mul = 1;
        for (int d = nd - 1; d >= 0; d--) {
            int64_t coord = rem % x.shape[d];
            rem /= x.shape[d];
            o += (red[d] ? 0 : coord) * mul;
            mul *= kshape[d];
        }
        r->out->v[o] = op == R_MAX ? fmax(r->out->v[o], x.v[i]) : r->out->v[o] + x.v[i];
    }
    if (op == R_MEAN)
        for (int64_t o = 0; o < r->out->n; o++)
            r->out->v[o] /= (double)count;
}

#define RED(label, shape, n, keep, ...)                                                          \
    { label, 1, { shape }, 0, &(const red_arg){ n, { __VA_ARGS__ }, keep, false } }
#define S1(a) { 1, { a } }
#define S2(a, b) { 2, { a, b } }
#define S3(a, b, c) { 3, { a, b, c } }
#define S4(a, b, c, d) { 4, { a, b, c, d } }
/* (The shape is written out twice, not passed on to RED: its braces hold
 * commas that a nested macro call would split.) */
#define BOTH(label, shape, n, ...)                                                               \
    { label, 1, { shape }, 0, &(const red_arg){ n, { __VA_ARGS__ }, false, false } },           \
    { label ", keepdim", 1, { shape }, 0, &(const red_arg){ n, { __VA_ARGS__ }, true, false } }

static const or_case REDUCE_CASES[] = {
    BOTH("all of a vector", S1(7), 0, 0),
    BOTH("leading axis: columns", S2(4, 5), 1, 0),
    BOTH("last axis, negative: rows", S2(4, 5), 1, -1),
    BOTH("all of a matrix", S2(4, 5), 0, 0),
    BOTH("middle axis", S3(3, 4, 5), 1, 1),
    BOTH("non-adjacent axes: the general walk", S3(3, 4, 5), 2, 0, 2),
    BOTH("two trailing, negative", S3(3, 4, 5), 2, -1, -2),
    BOTH("two leading, unordered", S3(3, 4, 5), 2, 1, 0),
    BOTH("a size-1 axis", S3(3, 1, 5), 1, 1),
    BOTH("interleaved", S4(2, 3, 2, 3), 2, 1, 3),
    BOTH("three of four", S4(2, 3, 2, 3), 3, 0, 2, 3),
    RED("last axis of 3-D", S3(3, 4, 5), 1, false, 2),
    RED("first axis of 3-D, keepdim", S3(3, 4, 5), 1, true, 0),
    { "a transposed (strided) input, keepdim", 1, { S2(3, 4) }, 0,
      &(const red_arg){ 1, { 1 }, true, true } },
    { "all of [3,4,500]: the parallel kernels", 1, { S3(3, 4, 500) }, 0,
      &(const red_arg){ 0, { 0 }, false, false },
      "6000 float terms: their rounding over the 2e-3 step exceeds atol; the backward is the "
      "broadcast of the small cases" },
};

/* ---------------------------------------------------------------- softmax */

typedef struct {
    int axis;
} sm_arg;

static fx_tensor *f_softmax(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                            const or_case *c)
{
    int axis = ((const sm_arg *)c->arg)->axis;
    return *(const bool *)arg ? fx_log_softmax(ctx, in[0], axis) : fx_softmax(ctx, in[0], axis);
}

/* Along axis of x (any rank), straight from the definition. */
static void r_softmax(const or_ref *r)
{
    const or_host *x = &r->in[0];
    int axis = ((const sm_arg *)r->c->arg)->axis;
    if (axis < 0)
        axis += x->ndim;
    int64_t O = 1, A = x->shape[axis], I = 1;
    for (int d = 0; d < axis; d++)
        O *= x->shape[d];
    for (int d = axis + 1; d < x->ndim; d++)
        I *= x->shape[d];
    or_host_init(r->out, x->ndim, x->shape);
    memcpy(r->out->v, x->v, (size_t)x->n * sizeof *x->v);
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++)
            or_softmax(r->out->v + o * A * I + i, A, I, *(const bool *)r->arg);
}

#define SM(label, shape, axis) { label, 1, { shape }, 0, &(const sm_arg){ axis } }
static const or_case SOFTMAX_CASES[] = {
    SM("a vector", S1(6), 0),
    SM("columns", S2(3, 5), 0),
    SM("rows, negative axis", S2(3, 5), -1),
    SM("middle of 3-D", S3(2, 4, 3), 1),
    SM("first of 3-D", S3(2, 4, 3), 0),
    SM("last of 3-D", S3(2, 4, 3), 2),
    SM("an axis of size 1", S2(4, 1), 1),
    { "rows of 300: the parallel kernels", 1, { S3(2, 3, 300) }, 0, &(const sm_arg){ 2 },
      "1800 log-probabilities near -6: the float loss's rounding over the 2e-3 step exceeds "
      "atol (forward and cross-backend only, as before)" },
    SM("an inner axis of [2,7,5]", S3(2, 7, 5), 1),
    SM("rows of 9", S3(2, 3, 9), 2),
};

/* ------------------------------------------------------------------- rows */

/* Distinct values 0.05 apart: max has no ties and a finite-difference step
 * never changes which element is the maximum. */
#define DISTINCT { OR_DISTINCT, 0.05, 0, 0 }
#define REDUCE(nm, op)                                                                           \
    { .name = nm, .covers = "fx_" nm, .arg = &(const int){ op },                                \
      .ncases = OR_COUNT(REDUCE_CASES), .cases = REDUCE_CASES, .fill = { DISTINCT },            \
      .forward = f_reduce, .reference = r_reduce, .fwd = OR_FWD_SUM, .grad = OR_GRAD_STD,       \
      .xb = OR_XB_SUM }
#define SOFTMAX(nm, lg)                                                                          \
    { .name = nm, .covers = "fx_" nm, .arg = &(const bool){ lg },                               \
      .ncases = OR_COUNT(SOFTMAX_CASES), .cases = SOFTMAX_CASES,                                \
      .fill = { { OR_NORMAL, 2.0, 0.0, 0 } }, .forward = f_softmax, .reference = r_softmax,     \
      .fwd = OR_FWD_POINT, .grad = SMOOTH_GRAD, .xb = OR_XB_SUM }

/* Log-probabilities of N(0, 2^2) logits reach -10: the float loss over 54 of
 * them rounds at ~2e-6, 1e-3 after dividing by a 2e-3 step. A 5e-3 step
 * cuts that 2.5x, and softmax is smooth: the truncation error
 * eps^2 |f'''| / 6 stays under 1e-5. */
#define SMOOTH_GRAD                                                                              \
    { 1e-2, 1e-3, 5e-3, "smooth: step 5e-3 keeps the loss's float rounding under atol", NULL }

const or_row OR_ROWS_REDUCE[] = {
    REDUCE("sum", R_SUM),
    REDUCE("mean", R_MEAN),
    REDUCE("max", R_MAX),
    SOFTMAX("softmax", false),
    SOFTMAX("log_softmax", true),
};
const int OR_NROWS_REDUCE = OR_COUNT(OR_ROWS_REDUCE);
