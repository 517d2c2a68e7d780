/* op_index.c - index_select and gather along an axis, with i32/i64 indices:
 * forward, backward (index_add / scatter_add, so repeated indices
 * accumulate), checks. */
#include "internal.h"

#include <math.h>

/* Checks an index tensor: present, on the context's device, i32 or i64. */
static bool check_indices(fx_ctx *ctx, const char *op, const fx_tensor *idx)
{
    char b[96];
    if (!idx) {
        if (fx_ctx_status(ctx) == FX_OK)
            fx__op_fail(ctx, FX_ERR_ARG, op, "the index tensor is NULL");
        return false;
    }
    if (idx->device.type != ctx->dev.type || idx->device.index != ctx->dev.index) {
        char d1[32], d2[32];
        fx__op_fail(ctx, FX_ERR_DEVICE, op, "the indices are on %s but the context runs on %s",
                    fx_device_str(idx->device, d1, sizeof d1),
                    fx_device_str(ctx->dev, d2, sizeof d2));
        return false;
    }
    if (idx->dtype != FX_I32 && idx->dtype != FX_I64) {
        fx__op_fail(ctx, FX_ERR_DTYPE, op, "indices must be i32 or i64, got %s %s",
                    fx_dtype_name(idx->dtype), fx_shape_str(idx, b, sizeof b));
        return false;
    }
    return true;
}

/* Fails the op for the index at flat position pos of idx (contiguous), which
 * the kernel found outside [0, size of x's axis). The value is read through
 * a one-element view. */
static fx_tensor *bad_index(fx_ctx *ctx, const char *op, const fx_tensor *idx, int64_t pos,
                            const fx_tensor *x, int axis)
{
    fx_tensor *v = fx__view(ctx, idx, 0, NULL, NULL, idx->offset + pos);
    double value = v ? fx_tensor_item(v) : NAN;
    char where[160], b[96];
    int64_t c[FX_MAX_DIMS], rem = pos;
    for (int d = idx->ndim - 1; d >= 0; d--) {
        c[d] = idx->shape[d] ? rem % idx->shape[d] : 0;
        rem = idx->shape[d] ? rem / idx->shape[d] : 0;
    }
    fx_tensor at = { .ndim = idx->ndim };
    for (int d = 0; d < idx->ndim; d++)
        at.shape[d] = c[d];
    fx_shape_str(&at, where, sizeof where);
    return fx__op_fail(ctx, FX_ERR_VALUE, op, "index %lld at position %s of the indices is out of "
                       "range [0, %lld) for axis %d of x %s", (long long)value, where,
                       (long long)x->shape[axis], axis, fx_shape_str(x, b, sizeof b));
}

/* n->i[0]: the axis; n->saved[0]: the (contiguous) indices. n->i[1]: 0 for
 * index_select (backward index_add), 1 for gather (scatter_add). */
static void index_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0];
    if (!fx_tensor_requires_grad(x))
        return;
    fx_tensor *dx = fx__grad(ctx, x);
    if (!dx)
        return;
    const fx_index_kernels *k = fx_be(x)->idx;
    if (n->i[1])
        k->scatter_add(n->out->grad, (int)n->i[0], n->saved[0], dx);
    else
        k->index_add(n->out->grad, (int)n->i[0], n->saved[0], dx);
}

/* What index_select and gather share once the shapes are checked: contiguous
 * operands, the kernel, the error for a bad index, the tape. */
static fx_tensor *index_op(fx_ctx *ctx, const char *op, bool gather, fx_tensor *x, int axis,
                           fx_tensor *idx, int ndim, const int64_t *shape)
{
    x = fx_contiguous(ctx, x);
    idx = x ? fx_contiguous(ctx, idx) : NULL;
    fx_tensor *y = idx ? fx_tensor_new(ctx, FX_F32, ndim, shape) : NULL;
    if (!y)
        return NULL;
    const fx_index_kernels *k = fx_be(x)->idx;
    int64_t bad = gather ? k->gather(x, axis, idx, y) : k->index_select(x, axis, idx, y);
    if (bad >= 0)
        return bad_index(ctx, op, idx, bad, x, axis);
    fx_node *n = fx__record(ctx, op, index_backward, y, 1, (fx_tensor *[]){ x });
    if (n) {
        n->i[0] = axis;
        n->i[1] = gather;
        n->saved[0] = idx;
    }
    return y;
}

/* y = x with axis replaced by the entries idx (1-D) picks. */
fx_tensor *fx_index_select(fx_ctx *ctx, fx_tensor *x, int axis, fx_tensor *idx)
{
    static const char *op = "index_select";
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){ x }) || !check_indices(ctx, op, idx))
        return NULL;
    char b[96];
    if (idx->ndim != 1)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "indices must be 1-D, got %s",
                           fx_shape_str(idx, b, sizeof b));
    int a = fx__axis(ctx, op, x, axis);
    if (a < 0)
        return NULL;
    int64_t shape[FX_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = d == a ? idx->shape[0] : x->shape[d];
    return index_op(ctx, op, false, x, a, idx, x->ndim, shape);
}

/* torch.gather: idx has x's rank and no dim larger than x's, except along
 * axis; y has idx's shape. */
fx_tensor *fx_gather(fx_ctx *ctx, fx_tensor *x, int axis, fx_tensor *idx)
{
    static const char *op = "gather";
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){ x }) || !check_indices(ctx, op, idx))
        return NULL;
    int a = fx__axis(ctx, op, x, axis);
    if (a < 0)
        return NULL;
    bool fits = idx->ndim == x->ndim;
    for (int d = 0; fits && d < x->ndim; d++)
        fits = d == a || idx->shape[d] <= x->shape[d];
    if (!fits) {
        char b1[96], b2[96];
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "indices %s must have the rank of x %s and no "
                           "larger dim except along axis %d", fx_shape_str(idx, b1, sizeof b1),
                           fx_shape_str(x, b2, sizeof b2), a);
    }
    return index_op(ctx, op, true, x, a, idx, idx->ndim, idx->shape);
}
