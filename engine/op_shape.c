/* op_shape.c - reshape, flatten, transpose/permute, concat, slice and split. They move
 * elements without arithmetic, so they take any dtype (gradients flow for
 * f32). Every copy is the backend's strided mem->copy between a view and a
 * contiguous tensor; backwards run the same copies the other way with
 * accumulate. */
#include "internal.h"

/* A view of t restricted along axis to len elements from start, every step-th
 * (the slice window; concat places inputs with windows of step 1). */
static fx_tensor *window(fx_ctx *ctx, const fx_tensor *t, int axis, int64_t start, int64_t len,
                         int64_t step)
{
    int64_t shape[FX_MAX_DIMS], strides[FX_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        shape[d] = t->shape[d];
        strides[d] = t->strides[d];
    }
    shape[axis] = len;
    strides[axis] *= step;
    return fx__view(ctx, t, t->ndim, shape, strides, t->offset + start * t->strides[axis]);
}

/* ---------------------------------------------------------------- reshape */

/* The output is a view of contiguous x; its gradient (contiguous, the new
 * shape) is the same elements in x's shape. */
static void reshape_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0], *dy = n->out->grad;
    if (!fx_tensor_requires_grad(x))
        return;
    int64_t strides[FX_MAX_DIMS];
    fx__contiguous_strides(x->ndim, x->shape, strides);
    fx_tensor *dx = fx__grad(ctx, x);
    fx_tensor *g = dx ? fx__view(ctx, dy, x->ndim, x->shape, strides, dy->offset) : NULL;
    if (g)
        fx_be(x)->mem->copy(dx, g, true);
}

fx_tensor *fx_reshape(fx_ctx *ctx, fx_tensor *x, int ndim, const int64_t *shape)
{
    static const char *op = "reshape";
    if (!fx__op_check_same_dtype(ctx, op, 1, (fx_tensor *[]){ x }))
        return NULL;
    char b1[96], b2[160];
    if (ndim < 0 || ndim > FX_MAX_DIMS || (ndim > 0 && !shape))
        return fx__op_fail(ctx, FX_ERR_ARG, op, "bad new shape: ndim %d%s", ndim,
                           shape ? "" : ", shape NULL");
    int64_t s[FX_MAX_DIMS];
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0)
                return fx__op_fail(ctx, FX_ERR_SHAPE, op, "more than one -1 in new shape %s",
                                   fx_dims_str(ndim, shape, b2, sizeof b2));
            infer = i;
            s[i] = 1;
        } else if (shape[i] < 0) {
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "negative dim in new shape %s",
                               fx_dims_str(ndim, shape, b2, sizeof b2));
        }
    }
    int64_t numel = fx_tensor_numel(x), known = fx__shape_numel(ndim, s);
    if (infer >= 0 && known == 0)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "cannot infer the -1 of %s: another dim is 0",
                           fx_dims_str(ndim, shape, b2, sizeof b2));
    if (infer >= 0 && known > 0 && numel % known == 0)
        s[infer] = numel / known;
    if (fx__shape_numel(ndim, s) != numel)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "cannot reshape %s (%lld elements) into %s",
                           fx_shape_str(x, b1, sizeof b1), (long long)numel,
                           fx_dims_str(ndim, shape, b2, sizeof b2));
    x = fx_contiguous(ctx, x);
    if (!x)
        return NULL;
    int64_t strides[FX_MAX_DIMS];
    fx__contiguous_strides(ndim, s, strides);
    fx_tensor *y = fx__view(ctx, x, ndim, s, strides, x->offset);
    if (y)
        fx__record(ctx, op, reshape_backward, y, 1, (fx_tensor *[]){ x });
    return y;
}

/* ---------------------------------------------------------------- flatten */

/* flatten is a reshape to [N, rest], so the reshape's record gives its
 * gradient. */
fx_tensor *fx_flatten(fx_ctx *ctx, fx_tensor *x)
{
    if (!ctx || !x)
        return NULL;
    if (x->ndim < 2) {
        char s[96];
        return fx__op_fail(ctx, FX_ERR_SHAPE, "flatten", "input must have at least 2 dims "
                           "[N,...], got %s", fx_shape_str(x, s, 96));
    }
    int64_t rest = fx__shape_numel(x->ndim - 1, x->shape + 1);
    return fx_reshape(ctx, x, 2, (int64_t[]){ x->shape[0], rest });
}

static fx_tensor *flatten_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    return fx_flatten(ctx, x);
}

/* A parameterless layer: no data, nothing to check. */
fx_layer *fx_flatten_create(const char *name)
{
    return fx_layer_create(name ? name : "flatten", flatten_forward);
}

/* -------------------------------------------------------------- permute */

/* x's gradient seen through the permutation (n->i[0..ndim)) has dy's shape;
 * dy accumulates into it. */
static void permute_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0], *dy = n->out->grad;
    if (!fx_tensor_requires_grad(x))
        return;
    fx_tensor *dx = fx__grad(ctx, x);
    if (!dx)
        return;
    int64_t strides[FX_MAX_DIMS];
    for (int d = 0; d < dx->ndim; d++)
        strides[d] = dx->strides[n->i[d]];
    fx_tensor *g = fx__view(ctx, dx, dy->ndim, dy->shape, strides, dx->offset);
    if (g)
        fx_be(x)->mem->copy(g, dy, true);
}

/* y[i0..] = x at the permuted index, y contiguous: a copy from the view of x
 * whose dim d is x's dim perm[d]. */
static fx_tensor *permute(fx_ctx *ctx, const char *op, fx_tensor *x, const int *perm)
{
    char b[96];
    int64_t shape[FX_MAX_DIMS], strides[FX_MAX_DIMS];
    int p[FX_MAX_DIMS];
    unsigned seen = 0;
    for (int d = 0; d < x->ndim; d++) {
        if ((p[d] = fx__axis(ctx, op, x, perm[d])) < 0)
            return NULL;
        if ((seen >> p[d]) & 1u)
            return fx__op_fail(ctx, FX_ERR_AXIS, op, "axis %d appears twice in the permutation "
                               "of shape %s", perm[d], fx_shape_str(x, b, sizeof b));
        seen |= 1u << p[d];
        shape[d] = x->shape[p[d]];
        strides[d] = x->strides[p[d]];
    }
    fx_tensor *v = fx__view(ctx, x, x->ndim, shape, strides, x->offset);
    fx_tensor *y = v ? fx_tensor_new(ctx, x->dtype, x->ndim, shape) : NULL;
    if (!y)
        return NULL;
    fx_be(x)->mem->copy(y, v, false);
    fx_node *n = fx__record(ctx, op, permute_backward, y, 1, (fx_tensor *[]){ x });
    for (int d = 0; n && d < x->ndim; d++)
        n->i[d] = p[d];
    return y;
}

fx_tensor *fx_permute(fx_ctx *ctx, fx_tensor *x, const int *perm)
{
    if (!fx__op_check_same_dtype(ctx, "permute", 1, (fx_tensor *[]){ x }))
        return NULL;
    if (!perm && x->ndim > 0)
        return fx__op_fail(ctx, FX_ERR_ARG, "permute", "perm is NULL");
    return permute(ctx, "permute", x, perm);
}

fx_tensor *fx_transpose(fx_ctx *ctx, fx_tensor *x, int axis0, int axis1)
{
    static const char *op = "transpose";
    if (!fx__op_check_same_dtype(ctx, op, 1, (fx_tensor *[]){ x }))
        return NULL;
    int a0 = fx__axis(ctx, op, x, axis0), a1 = a0 < 0 ? -1 : fx__axis(ctx, op, x, axis1);
    if (a1 < 0)
        return NULL;
    int perm[FX_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        perm[d] = d == a0 ? a1 : d == a1 ? a0 : d;
    return permute(ctx, op, x, perm);
}

/* --------------------------------------------------------------- concat */

/* Each input's gradient gets its window of dy along the axis (n->i[0]). */
static void concat_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *dy = n->out->grad;
    int axis = (int)n->i[0];
    int64_t off = 0;
    for (int i = 0; i < n->nin; i++) {
        fx_tensor *x = n->in[i];
        int64_t len = x->shape[axis];
        if (fx_tensor_requires_grad(x)) {
            fx_tensor *dx = fx__grad(ctx, x);
            fx_tensor *g = dx ? window(ctx, dy, axis, off, len, 1) : NULL;
            if (!g)
                return;
            fx_be(x)->mem->copy(dx, g, true);
        }
        off += len;
    }
}

fx_tensor *fx_concat(fx_ctx *ctx, int n, fx_tensor *const *xs, int axis)
{
    static const char *op = "concat";
    if (!ctx)
        return NULL;
    if (n < 1 || !xs)
        return fx__op_fail(ctx, FX_ERR_ARG, op, "needs at least one input (n is %d%s)", n,
                           xs ? "" : ", inputs NULL");
    if (!fx__op_check_same_dtype(ctx, op, n, xs))
        return NULL;
    int a = fx__axis(ctx, op, xs[0], axis);
    if (a < 0)
        return NULL;
    int64_t shape[FX_MAX_DIMS];
    for (int d = 0; d < xs[0]->ndim; d++)
        shape[d] = xs[0]->shape[d];
    shape[a] = 0;
    for (int i = 0; i < n; i++) {
        bool fits = xs[i]->ndim == xs[0]->ndim;
        for (int d = 0; fits && d < xs[0]->ndim; d++)
            fits = d == a || xs[i]->shape[d] == xs[0]->shape[d];
        if (!fits) {
            char b1[96], b2[96];
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "input %d is %s but input 0 is %s; they "
                               "may differ only along axis %d", i,
                               fx_shape_str(xs[i], b1, sizeof b1),
                               fx_shape_str(xs[0], b2, sizeof b2), a);
        }
        shape[a] += xs[i]->shape[a];
    }
    fx_tensor *y = fx_tensor_new(ctx, xs[0]->dtype, xs[0]->ndim, shape);
    if (!y)
        return NULL;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        fx_tensor *dst = window(ctx, y, a, off, xs[i]->shape[a], 1);
        if (!dst)
            return NULL;
        fx_be(y)->mem->copy(dst, xs[i], false);
        off += xs[i]->shape[a];
    }
    fx_node *nd = fx__record(ctx, op, concat_backward, y, n, xs);
    if (nd)
        nd->i[0] = a;
    return y;
}

/* ----------------------------------------------------------------- slice */

/* dy accumulates into the slice's window of x's gradient (n->i: axis,
 * start, step). */
static void slice_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0], *dy = n->out->grad;
    if (!fx_tensor_requires_grad(x))
        return;
    int axis = (int)n->i[0];
    fx_tensor *dx = fx__grad(ctx, x);
    fx_tensor *g = dx ? window(ctx, dx, axis, n->i[1], dy->shape[axis], n->i[2]) : NULL;
    if (g)
        fx_be(x)->mem->copy(g, dy, true);
}

/* Python's rule for a slice bound: negative counts from the end, then
 * clamped into [0, size]. */
static int64_t slice_bound(int64_t v, int64_t size)
{
    if (v < 0)
        v += size;
    return v < 0 ? 0 : v > size ? size : v;
}

fx_tensor *fx_slice(fx_ctx *ctx, fx_tensor *x, int axis, int64_t start, int64_t end, int64_t step)
{
    static const char *op = "slice";
    if (!fx__op_check_same_dtype(ctx, op, 1, (fx_tensor *[]){ x }))
        return NULL;
    int a = fx__axis(ctx, op, x, axis);
    if (a < 0)
        return NULL;
    if (step < 1) {
        char b[96];
        return fx__op_fail(ctx, FX_ERR_ARG, op, "step %lld must be >= 1 (x is %s)",
                           (long long)step, fx_shape_str(x, b, sizeof b));
    }
    int64_t size = x->shape[a], s = slice_bound(start, size), e = slice_bound(end, size);
    int64_t len = e > s ? (e - s + step - 1) / step : 0;
    fx_tensor *v = window(ctx, x, a, s, len, step);
    fx_tensor *y = v ? fx_tensor_new(ctx, x->dtype, x->ndim, v->shape) : NULL;
    if (!y)
        return NULL;
    fx_be(x)->mem->copy(y, v, false);
    fx_node *n = fx__record(ctx, op, slice_backward, y, 1, (fx_tensor *[]){ x });
    if (n) {
        n->i[0] = a;
        n->i[1] = s;
        n->i[2] = step;
    }
    return y;
}

/* ----------------------------------------------------------------- split */

/* Consecutive slices of the given sizes; on failure every out[i] is NULL. */
fx_status fx_split(fx_ctx *ctx, fx_tensor *x, int axis, int n, const int64_t *sizes,
                   fx_tensor **out)
{
    static const char *op = "split";
    if (!ctx)
        return FX_ERR_ARG;
    for (int i = 0; out && i < n; i++)
        out[i] = NULL;
    if (!fx__op_check_same_dtype(ctx, op, 1, (fx_tensor *[]){ x }))
        return fx_ctx_status(ctx);
    char b[96];
    if (n < 1 || !sizes || !out) {
        fx__op_fail(ctx, FX_ERR_ARG, op, "needs n >= 1 parts (got %d), sizes and out", n);
        return fx_ctx_status(ctx);
    }
    int a = fx__axis(ctx, op, x, axis);
    if (a < 0)
        return fx_ctx_status(ctx);
    int64_t left = x->shape[a]; /* of the axis, not yet given to a part */
    for (int i = 0; i < n && left >= 0; i++)
        left = sizes[i] < 0 || sizes[i] > left ? -1 : left - sizes[i];
    if (left != 0) {
        fx__op_fail(ctx, FX_ERR_SHAPE, op, "the %d sizes do not add up to %lld, the size of axis "
                    "%d of %s (or one is negative)", n, (long long)x->shape[a], a,
                    fx_shape_str(x, b, sizeof b));
        return fx_ctx_status(ctx);
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        out[i] = fx_slice(ctx, x, a, off, off + sizes[i], 1);
        off += sizes[i];
        if (!out[i]) {
            for (int j = 0; j < n; j++)
                out[j] = NULL;
            return fx_ctx_status(ctx);
        }
    }
    return FX_OK;
}
