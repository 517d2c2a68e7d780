/* op_copy.c - ops that copy or pass elements through unchanged:
 * fx_contiguous materialises a view (gradients flow back into the view's
 * layout); fx_grad_reverse is the identity forward with a scaled, negated
 * gradient. */
#include "internal.h"

#include <math.h>

static void contiguous_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0];
    if (!fx_tensor_requires_grad(x))
        return;
    fx_tensor *dx = fx__grad(ctx, x);
    if (dx)
        fx_be(x)->mem->copy(dx, n->out->grad, true);
}

fx_tensor *fx_contiguous(fx_ctx *ctx, fx_tensor *x)
{
    if (!ctx || !x)
        return NULL;
    if (fx_tensor_is_contiguous(x))
        return x;
    fx_tensor *y = fx__tensor_new_like(ctx, x);
    if (!y)
        return NULL;
    fx_be(x)->mem->copy(y, x, false);
    if (x->dtype == FX_F32)
        fx__record(ctx, "contiguous", contiguous_backward, y, 1, (fx_tensor *[]){ x });
    return y;
}

/* --------------------------------------------------------- grad reverse */

/* dx += -lambda * dy (n->f[0] is lambda). */
static void grad_reverse_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0];
    if (!fx_tensor_requires_grad(x))
        return;
    fx_tensor *dx = fx__grad(ctx, x);
    if (dx)
        fx_be(x)->ew->axpy(-n->f[0], n->out->grad, dx);
}

/* The identity as a view (no copy); only the tape record differs. */
fx_tensor *fx_grad_reverse(fx_ctx *ctx, fx_tensor *x, float lambda)
{
    if (!fx__op_check(ctx, "grad_reverse", 1, (fx_tensor *[]){ x }))
        return NULL;
    if (!isfinite(lambda))
        return fx__op_fail(ctx, FX_ERR_ARG, "grad_reverse", "lambda is %g; it must be finite",
                           (double)lambda);
    fx_tensor *y = fx__view(ctx, x, x->ndim, x->shape, x->strides, x->offset);
    if (!y)
        return NULL;
    fx_node *n = fx__record(ctx, "grad_reverse", grad_reverse_backward, y, 1, (fx_tensor *[]){ x });
    if (n)
        n->f[0] = lambda;
    return y;
}
