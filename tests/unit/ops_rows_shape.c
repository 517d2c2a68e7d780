/* ops_rows_shape.c - registry rows of the shape and index ops: reshape,
 * transpose, permute, contiguous, concat, slice, split, flatten,
 * index_select and gather. Views go straight into the loss (a strided
 * input to mul) unless a case makes them contiguous. See ops_registry.h. */
#include "ops_registry.h"

#include <stdlib.h>
#include <string.h>

#define S1(a) { 1, { a } }
#define S2(a, b) { 2, { a, b } }
#define S3(a, b, c) { 3, { a, b, c } }
#define S4(a, b, c, d) { 4, { a, b, c, d } }

/* y[c] = x[p(c)]: the output of a permutation perm of x (2-D or more). */
static void permuted(const or_host *x, const int *perm, or_host *out)
{
    int nd = x->ndim, p[FX_MAX_DIMS];
    int64_t shape[FX_MAX_DIMS], yc[FX_MAX_DIMS], xc[FX_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        p[d] = perm[d] < 0 ? perm[d] + nd : perm[d];
        shape[d] = x->shape[p[d]];
    }
    or_host_init(out, nd, shape);
    for (int64_t i = 0; i < out->n; i++) {
        or_coords(nd, shape, i, yc);
        for (int d = 0; d < nd; d++)
            xc[p[d]] = yc[d];
        out->v[i] = x->v[or_offset(nd, x->shape, xc)];
    }
}

/* The permutation of a transpose of axes a0, a1. */
static void swap_perm(int nd, int a0, int a1, int *perm)
{
    a0 = a0 < 0 ? a0 + nd : a0, a1 = a1 < 0 ? a1 + nd : a1;
    for (int d = 0; d < nd; d++)
        perm[d] = d == a0 ? a1 : d == a1 ? a0 : d;
}

/* ---------------------------------------------------------------- reshape */

typedef struct {
    int ndim;
    int64_t shape[4];
    bool transposed; /* reshape x^T (a strided view: copied first) */
    bool two_views;  /* reshape(x, [-1]) of a [3,2] view + 2 * reshape(x, [6]) */
} reshape_arg;

static fx_tensor *f_reshape(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                            const or_case *c)
{
    const reshape_arg *a = c->arg;
    if (a->two_views) {
        fx_tensor *u = fx_reshape(ctx, in[0], 1, (int64_t[]){ 6 });
        fx_tensor *v = fx_reshape(ctx, in[0], 2, (int64_t[]){ 3, 2 });
        return fx_add(ctx, fx_reshape(ctx, v, 1, (int64_t[]){ -1 }), fx_scale(ctx, u, 2.0f));
    }
    fx_tensor *x = a->transposed ? fx_transpose(ctx, in[0], 0, 1) : in[0];
    return fx_reshape(ctx, x, a->ndim, a->shape);
}

static void r_reshape(const or_ref *r)
{
    const reshape_arg *a = r->c->arg;
    const or_host *x = &r->in[0];
    or_host t = { 0 };
    int perm[FX_MAX_DIMS];
    swap_perm(x->ndim, 0, a->transposed ? 1 : 0, perm);
    permuted(x, perm, &t);
    int64_t shape[4], known = 1;
    int free_dim = -1;
    for (int d = 0; d < a->ndim; d++) {
        shape[d] = a->shape[d];
        if (shape[d] < 0)
            free_dim = d;
        else
            known *= shape[d];
    }
    if (free_dim >= 0)
        shape[free_dim] = t.n / known;
    or_host_init(r->out, a->two_views ? 1 : a->ndim, a->two_views ? (int64_t[]){ 6 } : shape);
    for (int64_t i = 0; i < t.n; i++)
        r->out->v[i] = a->two_views ? 3.0 * t.v[i] : t.v[i];
    free(t.v);
}

static const or_case RESHAPE_CASES[] = {
    { "a view of a contiguous tensor", 1, { S3(2, 3, 4) }, 0,
      &(const reshape_arg){ 2, { 4, -1 } } },
    { "a strided input, copied first", 1, { S3(2, 3, 4) }, 0,
      &(const reshape_arg){ 1, { -1 }, true } },
    { "a strided input to 4-D", 1, { S3(2, 3, 4) }, 0,
      &(const reshape_arg){ 4, { 2, 2, 3, 2 }, true } },
    { "two views of one tensor accumulate", 1, { S2(2, 3) }, 0,
      &(const reshape_arg){ 1, { 6 }, false, true } },
};

/* ------------------------------------------------------ transpose, permute */

typedef struct {
    int perm[4]; /* permute */
    int a0, a1;  /* transpose */
    bool twice;  /* permute(transpose(x, 0, 2), perm) */
    bool mul;    /* permute(x, perm) * in[1]: a view into a strided kernel */
} perm_arg;

static fx_tensor *f_transpose(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                              const or_case *c)
{
    const perm_arg *a = c->arg;
    fx_tensor *y = fx_transpose(ctx, in[0], a->a0, a->a1);
    return a->mul ? fx_contiguous(ctx, y) : y;
}

static void r_transpose(const or_ref *r)
{
    const perm_arg *a = r->c->arg;
    int perm[FX_MAX_DIMS];
    swap_perm(r->in[0].ndim, a->a0, a->a1, perm);
    permuted(&r->in[0], perm, r->out);
}

static const or_case TRANSPOSE_CASES[] = {
    { "2-D", 1, { S2(3, 5) }, 0, &(const perm_arg){ { 0 }, 0, 1 } },
    { "negative axis", 1, { S3(2, 3, 4) }, 0, &(const perm_arg){ { 0 }, -1, 0 } },
    { "an axis with itself", 1, { S3(2, 3, 4) }, 0, &(const perm_arg){ { 0 }, 1, 1 } },
    { "outer axes, made contiguous", 1, { S3(2, 3, 4) }, 0,
      &(const perm_arg){ { 0 }, 0, 2, false, true } },
};

static fx_tensor *f_permute(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                            const or_case *c)
{
    const perm_arg *a = c->arg;
    fx_tensor *x = a->twice ? fx_transpose(ctx, in[0], 0, 2) : in[0];
    fx_tensor *y = fx_permute(ctx, x, a->perm);
    return a->mul ? fx_mul(ctx, y, in[1]) : y;
}

static void r_permute(const or_ref *r)
{
    const perm_arg *a = r->c->arg;
    or_host t = { 0 };
    int perm[FX_MAX_DIMS];
    swap_perm(r->in[0].ndim, 0, a->twice ? 2 : 0, perm);
    permuted(&r->in[0], perm, &t);
    permuted(&t, a->perm, r->out);
    for (int64_t i = 0; a->mul && i < r->out->n; i++)
        r->out->v[i] *= r->in[1].v[i];
    free(t.v);
}

static const or_case PERMUTE_CASES[] = {
    { "rotate 3-D", 1, { S3(2, 3, 4) }, 0, &(const perm_arg){ { 2, 0, 1 } } },
    { "negative axis", 1, { S3(2, 3, 4) }, 0, &(const perm_arg){ { 1, -1, 0 } } },
    { "4-D", 1, { S4(2, 3, 2, 3) }, 0, &(const perm_arg){ { 3, 1, 0, 2 } } },
    { "4-D with a size-1 axis", 1, { S4(2, 1, 3, 2) }, 0, &(const perm_arg){ { 0, 2, 3, 1 } } },
    { "of a transposed view", 1, { S3(2, 3, 4) }, 0, &(const perm_arg){ { 1, 2, 0 }, 0, 0, true } },
    { "a view into mul", 2, { S3(3, 4, 2), S3(2, 3, 4) }, 0,
      &(const perm_arg){ { 2, 0, 1 }, 0, 0, false, true } },
};

/* ------------------------------------------------------------- contiguous */

typedef struct {
    int kind; /* 0 transposed view, 1 stepped slice, 2 already contiguous */
} contig_arg;

static fx_tensor *f_contiguous(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                               const or_case *c)
{
    int kind = ((const contig_arg *)c->arg)->kind;
    fx_tensor *x = kind == 0 ? fx_transpose(ctx, in[0], 0, 2)
                   : kind == 1 ? fx_slice(ctx, in[0], 1, 1, 7, 2) : in[0];
    return fx_contiguous(ctx, x);
}

static void r_contiguous(const or_ref *r)
{
    const or_host *x = &r->in[0];
    int kind = ((const contig_arg *)r->c->arg)->kind, perm[FX_MAX_DIMS];
    if (kind == 1) { /* x [3, 8] -> columns 1, 3, 5 */
        or_host_init(r->out, 2, (int64_t[]){ 3, 3 });
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 3; j++)
                r->out->v[i * 3 + j] = x->v[i * 8 + 1 + 2 * j];
        return;
    }
    swap_perm(x->ndim, 0, kind == 0 ? 2 : 0, perm);
    permuted(x, perm, r->out);
}

static const or_case CONTIGUOUS_CASES[] = {
    { "a transposed view", 1, { S3(2, 3, 4) }, 0, &(const contig_arg){ 0 } },
    { "a slice with step 2", 1, { S2(3, 8) }, 0, &(const contig_arg){ 1 } },
    { "already contiguous", 1, { S2(3, 4) }, 0, &(const contig_arg){ 2 } },
};

/* ----------------------------------------------------------------- concat */

typedef struct {
    int axis;
    bool twice; /* the same input twice */
} concat_arg;

static fx_tensor *f_concat(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                           const or_case *c)
{
    const concat_arg *a = c->arg;
    if (a->twice)
        return fx_concat(ctx, 2, (fx_tensor *[]){ in[0], in[0] }, a->axis);
    return fx_concat(ctx, c->nin, in, a->axis);
}

static void r_concat(const or_ref *r)
{
    const concat_arg *a = r->c->arg;
    int n = a->twice ? 2 : r->nin, nd = r->in[0].ndim, axis = a->axis < 0 ? a->axis + nd : a->axis;
    int64_t shape[FX_MAX_DIMS], c[FX_MAX_DIMS];
    memcpy(shape, r->in[0].shape, sizeof shape);
    shape[axis] = 0;
    for (int i = 0; i < n; i++)
        shape[axis] += r->in[a->twice ? 0 : i].shape[axis];
    or_host_init(r->out, nd, shape);
    for (int64_t i = 0; i < r->out->n; i++) {
        or_coords(nd, shape, i, c);
        int t = 0;
        const or_host *h = &r->in[0];
        while (c[axis] >= (h = &r->in[a->twice ? 0 : t])->shape[axis])
            c[axis] -= h->shape[axis], t++;
        r->out->v[i] = h->v[or_offset(nd, h->shape, c)];
    }
}

static const or_case CONCAT_CASES[] = {
    { "three inputs along the middle axis", 3, { S3(2, 1, 3), S3(2, 2, 3), S3(2, 3, 3) }, 0,
      &(const concat_arg){ 1 } },
    { "the same, negative axis", 3, { S3(2, 1, 3), S3(2, 2, 3), S3(2, 3, 3) }, 0,
      &(const concat_arg){ -2 } },
    { "rows", 2, { S2(2, 3), S2(4, 3) }, 0, &(const concat_arg){ 0 } },
    { "one input", 1, { S2(2, 3) }, 0, &(const concat_arg){ 1 } },
    { "columns, negative axis", 2, { S2(3, 2), S2(3, 1) }, 0, &(const concat_arg){ -1 } },
    { "[3,2] and [3,4] on axis 1", 2, { S2(3, 2), S2(3, 4) }, 0, &(const concat_arg){ 1 } },
    { "the same input twice gets both gradients", 1, { S2(2, 3) }, 0,
      &(const concat_arg){ 0, true } },
};

/* ------------------------------------------------------------------ slice */

typedef struct {
    int axis;
    int64_t start, end, step;
} slice_arg;

static fx_tensor *f_slice(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    const slice_arg *a = c->arg;
    return fx_slice(ctx, in[0], a->axis, a->start, a->end, a->step);
}

/* The indices Python's x[start:end:step] picks, written out independently:
 * walk from the normalised start. */
static void r_slice(const or_ref *r)
{
    const slice_arg *a = r->c->arg;
    const or_host *x = &r->in[0];
    int nd = x->ndim, axis = a->axis < 0 ? a->axis + nd : a->axis;
    int64_t size = x->shape[axis], start = a->start, end = a->end, pick[64], n = 0;
    if (start < 0)
        start = start + size < 0 ? 0 : start + size;
    if (end < 0)
        end = end + size < 0 ? 0 : end + size;
    for (int64_t i = start; i < end && i < size; i += a->step)
        pick[n++] = i;
    int64_t shape[FX_MAX_DIMS], c[FX_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = n;
    or_host_init(r->out, nd, shape);
    for (int64_t i = 0; i < r->out->n; i++) {
        or_coords(nd, shape, i, c);
        c[axis] = pick[c[axis]];
        r->out->v[i] = x->v[or_offset(nd, x->shape, c)];
    }
}

static const or_case SLICE_CASES[] = {
    { "step 2", 1, { S3(3, 7, 2) }, 0, &(const slice_arg){ 1, 1, 6, 2 } },
    { "negative bounds", 1, { S3(3, 7, 2) }, 0, &(const slice_arg){ 1, -6, -1, 2 } },
    { "clamped bounds, step 3", 1, { S3(3, 7, 2) }, 0, &(const slice_arg){ -2, -100, 100, 3 } },
    { "the first axis", 1, { S3(3, 7, 2) }, 0, &(const slice_arg){ 0, 1, 3, 1 } },
    { "the last axis", 1, { S3(3, 7, 2) }, 0, &(const slice_arg){ 2, -1, 2, 1 } },
    { "[3,8] 1:7:2", 1, { S2(3, 8) }, 0, &(const slice_arg){ 1, 1, 7, 2 } },
};

/* ------------------------------------------------------------------ split */

/* The parts concatenated in reverse order, so a wrong window in any part's
 * backward shows in the gradient. */
static fx_tensor *f_split(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    fx_tensor *p[3];
    if (fx_split(ctx, in[0], -1, 3, (int64_t[]){ 1, 2, 3 }, p) != FX_OK)
        return NULL;
    return fx_concat(ctx, 3, (fx_tensor *[]){ p[2], p[1], p[0] }, 1);
}

static void r_split(const or_ref *r)
{
    const or_host *x = &r->in[0]; /* [R, 6]: columns 3..5, then 1..2, then 0 */
    static const int from[6] = { 3, 4, 5, 1, 2, 0 };
    or_host_init(r->out, 2, x->shape);
    for (int64_t i = 0; i < x->shape[0]; i++)
        for (int j = 0; j < 6; j++)
            r->out->v[i * 6 + j] = x->v[i * 6 + from[j]];
}

static const or_case SPLIT_CASES[] = {
    { "sizes 1, 2, 3 along the last axis", 1, { S2(4, 6) } },
};

/* ---------------------------------------------------------------- flatten */

static fx_tensor *f_flatten(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                            const or_case *c)
{
    fx_tensor *x = c->arg ? fx_transpose(ctx, in[0], 1, 2) : in[0];
    return l ? fx_layer_forward(l, ctx, x) : fx_flatten(ctx, x);
}

static void r_flatten(const or_ref *r)
{
    const or_host *x = &r->in[0];
    or_host t = { 0 };
    int perm[FX_MAX_DIMS];
    swap_perm(x->ndim, 1, r->c->arg ? 2 : 1, perm);
    permuted(x, perm, &t);
    or_host_init(r->out, 2, (int64_t[]){ x->shape[0], x->n / x->shape[0] });
    memcpy(r->out->v, t.v, (size_t)t.n * sizeof *t.v);
    free(t.v);
}

static fx_layer *l_flatten(const void *arg, const or_case *c, fx_rng *rng)
{
    return fx_flatten_create("flat");
}

static const or_case FLATTEN_CASES[] = {
    { "4-D", 1, { S4(2, 3, 4, 5) } },
    { "a strided (transposed) input", 1, { S4(2, 3, 4, 5) }, 0, "t" },
};

/* ------------------------------------------------------------ index ops */

typedef struct {
    int axis;
    fx_dtype dt;
    int ndim;
    int64_t shape[3];
    int64_t v[16];
} idx_arg;

static fx_tensor *f_index(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    const idx_arg *a = c->arg;
    fx_tensor *idx = or_index(ctx, a->dt, a->ndim, a->shape, a->v);
    return *(const bool *)arg ? fx_gather(ctx, in[0], a->axis, idx)
                              : fx_index_select(ctx, in[0], a->axis, idx);
}

/* index_select: y[c] = x[c with c[axis] := idx[c[axis]]];
 * gather:       y[c] = x[c with c[axis] := idx[c]]. */
static void r_index(const or_ref *r)
{
    const idx_arg *a = r->c->arg;
    const or_host *x = &r->in[0];
    bool gather = *(const bool *)r->arg;
    int nd = x->ndim, axis = a->axis < 0 ? a->axis + nd : a->axis;
    int64_t shape[FX_MAX_DIMS], c[FX_MAX_DIMS];
    for (int d = 0; d < nd; d++)
        shape[d] = gather ? a->shape[d] : d == axis ? a->shape[0] : x->shape[d];
    or_host_init(r->out, nd, shape);
    for (int64_t i = 0; i < r->out->n; i++) {
        or_coords(nd, shape, i, c);
        c[axis] = gather ? a->v[i] : a->v[c[axis]];
        r->out->v[i] = x->v[or_offset(nd, x->shape, c)];
    }
}

/* Repeated indices: the index_add / scatter_add backward must accumulate. */
#define IDX(label, x, ...) { label, 1, { x }, 0, &(const idx_arg){ __VA_ARGS__ } }
/* (Written out, not passed on to IDX: the braces' commas would split.) */
#define BOTH_DT(label, x, axis, nd, shape, ...)                                                  \
    { label ", i32", 1, { x }, 0, &(const idx_arg){ axis, FX_I32, nd, shape, { __VA_ARGS__ } } }, \
    { label ", i64", 1, { x }, 0, &(const idx_arg){ axis, FX_I64, nd, shape, { __VA_ARGS__ } } }
#define SH(...) { __VA_ARGS__ }

static const or_case INDEX_SELECT_CASES[] = {
    BOTH_DT("rows with a repeat", S2(3, 4), 0, 1, SH(4), 2, 0, 2, 1),
    BOTH_DT("middle axis", S3(2, 3, 4), 1, 1, SH(5), 1, 1, 0, 2, 1),
    BOTH_DT("last axis, negative, one index twice", S3(2, 3, 4), -1, 1, SH(2), 3, 3),
    BOTH_DT("a vector", S1(3), 0, 1, SH(5), 1, 1, 0, 2, 1),
    IDX("[2,6,3] axis 1", S3(2, 6, 3), 1, FX_I64, 1, SH(5), { 3, 0, 3, 5, 1 }),
};

static const or_case GATHER_CASES[] = {
    BOTH_DT("last axis, repeats within a row", S2(3, 4), 1, 2, SH(3, 2), 1, 1, 0, 3, 2, 2),
    BOTH_DT("the same, negative axis", S2(3, 4), -1, 2, SH(3, 2), 1, 1, 0, 3, 2, 2),
    BOTH_DT("axis 0, idx longer there and narrower elsewhere", S3(3, 4, 2), 0, 3, SH(5, 2, 1),
            0, 2, 2, 1, 0, 0, 1, 2, 2, 2),
    BOTH_DT("middle axis, a full-size idx", S3(2, 4, 2), 1, 3, SH(2, 3, 2), 0, 1, 1, 1, 2, 0, 3,
            3, 0, 0, 2, 1),
    IDX("[3,4] axis 1 i32", S2(3, 4), 1, FX_I32, 2, SH(3, 2), { 0, 3, 2, 2, 1, 0 }),
};

/* ------------------------------------------------------------------- rows */

#define ROW(nm, cov, cs, fwd_, ref_)                                                             \
    .name = nm, .covers = cov, .ncases = OR_COUNT(cs), .cases = cs, .forward = fwd_,            \
    .reference = ref_, .fwd = OR_FWD_EXACT, .grad = OR_GRAD_STD, .xb = OR_XB_EXACT

const or_row OR_ROWS_SHAPE[] = {
    { ROW("reshape", "fx_reshape", RESHAPE_CASES, f_reshape, r_reshape) },
    { ROW("transpose", "fx_transpose", TRANSPOSE_CASES, f_transpose, r_transpose) },
    { ROW("permute", "fx_permute", PERMUTE_CASES, f_permute, r_permute) },
    { ROW("contiguous", "fx_contiguous", CONTIGUOUS_CASES, f_contiguous, r_contiguous) },
    { ROW("concat", "fx_concat", CONCAT_CASES, f_concat, r_concat) },
    { ROW("slice", "fx_slice", SLICE_CASES, f_slice, r_slice) },
    { ROW("split", "fx_split", SPLIT_CASES, f_split, r_split) },
    { ROW("flatten", "fx_flatten", FLATTEN_CASES, f_flatten, r_flatten) },
    { ROW("flatten_layer", "fx_flatten_create", FLATTEN_CASES, f_flatten, r_flatten),
      .layer = l_flatten },
    { ROW("index_select", "fx_index_select", INDEX_SELECT_CASES, f_index, r_index),
      .arg = &(const bool){ false } },
    { ROW("gather", "fx_gather", GATHER_CASES, f_index, r_index), .arg = &(const bool){ true } },
};
const int OR_NROWS_SHAPE = OR_COUNT(OR_ROWS_SHAPE);
