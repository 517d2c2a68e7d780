/* op_copy.c - fx_contiguous: materialises a view; gradients flow back into
 * the view's layout. */
#include "internal.h"

static void contiguous_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0];
    if (!fx_tensor_requires_grad(x))
        return;
    fx_tensor *dx = fx_grad(ctx, x);
    if (dx)
        fx_be(x)->mem->copy(dx, n->out->grad, true);
}

fx_tensor *fx_contiguous(fx_ctx *ctx, fx_tensor *x)
{
    if (!ctx || !x)
        return NULL;
    if (fx_tensor_is_contiguous(x))
        return x;
    fx_tensor *y = fx_tensor_new_like(ctx, x);
    if (!y)
        return NULL;
    fx_be(x)->mem->copy(y, x, false);
    if (x->dtype == FX_F32)
        fx_record(ctx, "contiguous", contiguous_backward, y, 1, (fx_tensor *[]){ x });
    return y;
}
