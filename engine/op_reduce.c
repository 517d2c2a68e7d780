/* op_reduce.c - sum, mean and max over a set of axes; softmax and
 * log-softmax along an axis: forward, backward, checks. */
#include "internal.h"

/* x's shape with the dims in mask (bit d: dim d) set to 1: the shape the
 * kernels see for a reduction's output and its gradient. */
static void keepdim_shape(const fx_tensor *x, unsigned mask, int64_t *shape)
{
    for (int d = 0; d < x->ndim; d++)
        shape[d] = (mask >> d) & 1u ? 1 : x->shape[d];
}

/* t (contiguous, any of the shapes with t's elements) seen with x's rank and
 * the dims in mask reduced to 1. */
static fx_tensor *keepdim_view(fx_ctx *ctx, const fx_tensor *t, const fx_tensor *x, unsigned mask)
{
    int64_t shape[FX_MAX_DIMS], strides[FX_MAX_DIMS];
    keepdim_shape(x, mask, shape);
    fx__contiguous_strides(x->ndim, shape, strides);
    return fx__view(ctx, t, x->ndim, shape, strides, t->offset);
}

/* n->i[0]: the kernel op; n->i[1]: the mask of reduced dims; n->saved[0]:
 * argmax (MAX). The output may have its reduced dims squeezed, so dy is
 * seen in the keepdim shape the kernel expects. */
static void reduce_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0];
    if (!fx_tensor_requires_grad(x))
        return;
    fx_tensor *dx = fx__grad(ctx, x);
    fx_tensor *dy = dx ? keepdim_view(ctx, n->out->grad, x, (unsigned)n->i[1]) : NULL;
    if (dy)
        fx_be(x)->red->reduce_backward((fx_reduce_op)n->i[0], dy, n->saved[0], dx);
}

/* The reduction ops: checks the axes (naxes == 0: all; negative axes count
 * from the end; a repeated axis is an error), runs the kernel into the
 * keepdim view of the output and records the tape. */
static fx_tensor *reduce(fx_ctx *ctx, const char *name, fx_reduce_op op, fx_tensor *x, int naxes,
                         const int *axes, bool keepdim)
{
    if (!fx__op_check(ctx, name, 1, (fx_tensor *[]){ x }))
        return NULL;
    char b[96];
    if (naxes < 0 || (naxes > 0 && !axes))
        return fx__op_fail(ctx, FX_ERR_ARG, name, "bad axis list: naxes %d, axes %s", naxes,
                           axes ? "given" : "NULL");
    if (naxes > x->ndim)
        return fx__op_fail(ctx, FX_ERR_AXIS, name, "%d axes given for shape %s", naxes,
                           fx_shape_str(x, b, sizeof b));
    unsigned mask = naxes == 0 ? (1u << x->ndim) - 1u : 0u;
    for (int i = 0; i < naxes; i++) {
        int a = fx__axis(ctx, name, x, axes[i]);
        if (a < 0)
            return NULL;
        if ((mask >> a) & 1u)
            return fx__op_fail(ctx, FX_ERR_AXIS, name, "axis %d is repeated (shape %s)", axes[i],
                               fx_shape_str(x, b, sizeof b));
        mask |= 1u << a;
    }
    for (int d = 0; op == FX_RED_MAX && d < x->ndim; d++)
        if (((mask >> d) & 1u) && x->shape[d] == 0)
            return fx__op_fail(ctx, FX_ERR_SHAPE, name, "max over an empty dim %d of shape %s", d,
                               fx_shape_str(x, b, sizeof b));
    x = fx_contiguous(ctx, x);
    if (!x)
        return NULL;

    int64_t shape[FX_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < x->ndim; d++)
        if (keepdim || !((mask >> d) & 1u))
            shape[nd++] = (mask >> d) & 1u ? 1 : x->shape[d];
    fx_tensor *y = fx_tensor_new(ctx, FX_F32, nd, shape);
    fx_tensor *yk = y ? keepdim_view(ctx, y, x, mask) : NULL;
    if (!yk)
        return NULL;
    fx_tensor *argmax = NULL;
    if (op == FX_RED_MAX && fx_ctx_grad_enabled(ctx) && fx_tensor_requires_grad(x)) {
        keepdim_shape(x, mask, shape);
        if (!(argmax = fx_tensor_new(ctx, FX_I64, x->ndim, shape)))
            return NULL;
    }
    const fx_reduce_kernels *k = fx_be(x)->red;
    k->reduce(op, x, yk, argmax);
    if (!fx__check_finite(ctx, name, k->count_nonfinite(y), y))
        return NULL;
    fx_node *n = fx__record(ctx, name, reduce_backward, y, 1, (fx_tensor *[]){ x });
    if (n) {
        n->i[0] = op;
        n->i[1] = mask;
        n->saved[0] = argmax;
    }
    return y;
}

fx_tensor *fx_sum(fx_ctx *ctx, fx_tensor *x, int naxes, const int *axes, bool keepdim)
{
    return reduce(ctx, "sum", FX_RED_SUM, x, naxes, axes, keepdim);
}

fx_tensor *fx_mean(fx_ctx *ctx, fx_tensor *x, int naxes, const int *axes, bool keepdim)
{
    return reduce(ctx, "mean", FX_RED_MEAN, x, naxes, axes, keepdim);
}

fx_tensor *fx_max(fx_ctx *ctx, fx_tensor *x, int naxes, const int *axes, bool keepdim)
{
    return reduce(ctx, "max", FX_RED_MAX, x, naxes, axes, keepdim);
}

/* ---------------------------------------------------------------- softmax */

/* n->i[0]: the axis; n->i[1]: log form. The kernel works from the output. */
static void softmax_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0];
    if (!fx_tensor_requires_grad(x))
        return;
    fx_tensor *dx = fx__grad(ctx, x);
    if (dx)
        fx_be(x)->red->softmax_backward(n->out, n->out->grad, (int)n->i[0], n->i[1] != 0, dx);
}

/* softmax / log-softmax along one axis. Finite inputs give finite outputs;
 * an infinite or NaN input fails the op (an all -inf row would be NaN). */
static fx_tensor *softmax(fx_ctx *ctx, const char *name, fx_tensor *x, int axis, bool lg)
{
    if (!fx__op_check(ctx, name, 1, (fx_tensor *[]){ x }))
        return NULL;
    int a = fx__axis(ctx, name, x, axis);
    if (a < 0)
        return NULL;
    x = fx_contiguous(ctx, x);
    fx_tensor *y = x ? fx__tensor_new_like(ctx, x) : NULL;
    if (!y)
        return NULL;
    const fx_reduce_kernels *k = fx_be(x)->red;
    k->softmax(x, a, lg, y);
    if (!fx__check_finite(ctx, name, k->count_nonfinite(y), y))
        return NULL;
    fx_node *n = fx__record(ctx, name, softmax_backward, y, 1, (fx_tensor *[]){ x });
    if (n) {
        n->i[0] = a;
        n->i[1] = lg;
    }
    return y;
}

fx_tensor *fx_softmax(fx_ctx *ctx, fx_tensor *x, int axis)
{
    return softmax(ctx, "softmax", x, axis, false);
}

fx_tensor *fx_log_softmax(fx_ctx *ctx, fx_tensor *x, int axis)
{
    return softmax(ctx, "log_softmax", x, axis, true);
}
