/* op_elementwise.c - unary and binary elementwise ops, clamp, where and
 * dropout: forward, backward and checks. One generic op per family; the
 * public functions name the kernel and its parameters. */
#include "internal.h"

/* ---------------------------------------------------------------- unary */

/* n->i[0]: the kernel op; n->f[0..1]: its parameters. */
static void unary_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0];
    if (!fx_tensor_requires_grad(x))
        return;
    fx_tensor *dx = fx__grad(ctx, x);
    if (dx)
        fx_be(x)->ew->unary_backward((fx_unary_op)n->i[0], n->f[0], n->f[1], x, n->out,
                                     n->out->grad, dx);
}

/* Runs one unary kernel as an op. Ops whose kernel reports non-finite
 * outputs (log of a negative, exp overflow, ...) fail with FX_ERR_VALUE. */
static fx_tensor *unary(fx_ctx *ctx, const char *name, fx_unary_op op, float a, float b,
                        fx_tensor *x)
{
    if (!fx__op_check(ctx, name, 1, (fx_tensor *[]){ x }))
        return NULL;
    x = fx_contiguous(ctx, x);
    fx_tensor *y = x ? fx__tensor_new_like(ctx, x) : NULL;
    if (!y)
        return NULL;
    int64_t bad = fx_be(x)->ew->unary(op, a, b, x, y);
    if (!fx__check_finite(ctx, name, bad, y))
        return NULL;
    fx_node *n = fx__record(ctx, name, unary_backward, y, 1, (fx_tensor *[]){ x });
    if (n) {
        n->i[0] = op;
        n->f[0] = a;
        n->f[1] = b;
    }
    return y;
}

fx_tensor *fx_neg(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "neg", FX_UN_NEG, 0, 0, x); }
fx_tensor *fx_scale(fx_ctx *ctx, fx_tensor *x, float s) { return unary(ctx, "scale", FX_UN_SCALE, s, 0, x); }
fx_tensor *fx_add_scalar(fx_ctx *ctx, fx_tensor *x, float s) { return unary(ctx, "add_scalar", FX_UN_ADD_SCALAR, s, 0, x); }
fx_tensor *fx_exp(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "exp", FX_UN_EXP, 0, 0, x); }
fx_tensor *fx_log(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "log", FX_UN_LOG, 0, 0, x); }
fx_tensor *fx_sqrt(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "sqrt", FX_UN_SQRT, 0, 0, x); }
fx_tensor *fx_pow(fx_ctx *ctx, fx_tensor *x, float p) { return unary(ctx, "pow", FX_UN_POW, p, 0, x); }
fx_tensor *fx_abs(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "abs", FX_UN_ABS, 0, 0, x); }
fx_tensor *fx_relu(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "relu", FX_UN_RELU, 0, 0, x); }
fx_tensor *fx_leaky_relu(fx_ctx *ctx, fx_tensor *x, float slope) { return unary(ctx, "leaky_relu", FX_UN_LEAKY_RELU, slope, 0, x); }
fx_tensor *fx_elu(fx_ctx *ctx, fx_tensor *x, float alpha) { return unary(ctx, "elu", FX_UN_ELU, alpha, 0, x); }
fx_tensor *fx_gelu(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "gelu", FX_UN_GELU, 0, 0, x); }
fx_tensor *fx_sigmoid(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "sigmoid", FX_UN_SIGMOID, 0, 0, x); }
fx_tensor *fx_tanh(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "tanh", FX_UN_TANH, 0, 0, x); }
fx_tensor *fx_erf(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "erf", FX_UN_ERF, 0, 0, x); }
fx_tensor *fx_gelu_exact(fx_ctx *ctx, fx_tensor *x) { return unary(ctx, "gelu_exact", FX_UN_GELU_EXACT, 0, 0, x); }

fx_tensor *fx_clamp(fx_ctx *ctx, fx_tensor *x, float lo, float hi)
{
    if (ctx && x && !(lo <= hi))
        return fx__op_fail(ctx, FX_ERR_ARG, "clamp", "lower bound %g is above upper bound %g",
                           (double)lo, (double)hi);
    return unary(ctx, "clamp", FX_UN_CLAMP, lo, hi, x);
}

/* --------------------------------------------------------------- binary */

/* t's gradient buffer seen with nd dims (NULL on OOM, recorded). */
static fx_tensor *grad_view(fx_ctx *ctx, fx_tensor *t, int nd)
{
    fx_tensor *g = fx__grad(ctx, t);
    return g ? fx__expand_rank(ctx, g, nd) : NULL;
}

/* Gradients of a and b, as views of their grads with the output's rank. */
static void binary_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *a = n->in[0], *b = n->in[1], *dy = n->out->grad;
    int nd = dy->ndim;
    fx_tensor *da = NULL, *db = NULL;
    if (fx_tensor_requires_grad(a) && !(da = grad_view(ctx, a, nd)))
        return;
    if (fx_tensor_requires_grad(b) && !(db = grad_view(ctx, b, nd)))
        return;
    fx_be(a)->ew->binary_backward((fx_binary_op)n->i[0], fx__expand_rank(ctx, a, nd),
                                  fx__expand_rank(ctx, b, nd), dy, da, db);
}

static fx_tensor *binary(fx_ctx *ctx, const char *name, fx_binary_op op, fx_tensor *a,
                         fx_tensor *b)
{
    if (!fx__op_check(ctx, name, 2, (fx_tensor *[]){ a, b }))
        return NULL;
    int nd;
    int64_t shape[FX_MAX_DIMS];
    if (!fx__broadcast_shape(a, b, &nd, shape)) {
        char s1[96], s2[96];
        return fx__op_fail(ctx, FX_ERR_SHAPE, name, "shapes %s and %s do not broadcast",
                           fx_shape_str(a, s1, 96), fx_shape_str(b, s2, 96));
    }
    a = fx_contiguous(ctx, a);
    b = fx_contiguous(ctx, b);
    fx_tensor *y = (a && b) ? fx_tensor_new(ctx, FX_F32, nd, shape) : NULL;
    fx_tensor *ea = y ? fx__expand_rank(ctx, a, nd) : NULL;
    fx_tensor *eb = ea ? fx__expand_rank(ctx, b, nd) : NULL;
    if (!eb)
        return NULL;
    int64_t bad = fx_be(a)->ew->binary(op, ea, eb, y);
    if (!fx__check_finite(ctx, name, bad, y))
        return NULL;
    fx_node *n = fx__record(ctx, name, binary_backward, y, 2, (fx_tensor *[]){ a, b });
    if (n)
        n->i[0] = op;
    return y;
}

fx_tensor *fx_add(fx_ctx *ctx, fx_tensor *a, fx_tensor *b) { return binary(ctx, "add", FX_BIN_ADD, a, b); }
fx_tensor *fx_sub(fx_ctx *ctx, fx_tensor *a, fx_tensor *b) { return binary(ctx, "sub", FX_BIN_SUB, a, b); }
fx_tensor *fx_mul(fx_ctx *ctx, fx_tensor *a, fx_tensor *b) { return binary(ctx, "mul", FX_BIN_MUL, a, b); }
fx_tensor *fx_div(fx_ctx *ctx, fx_tensor *a, fx_tensor *b) { return binary(ctx, "div", FX_BIN_DIV, a, b); }

/* ---------------------------------------------------------------- where */

static void where_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *cond = n->saved[0], *a = n->in[0], *b = n->in[1], *dy = n->out->grad;
    int nd = dy->ndim;
    fx_tensor *da = NULL, *db = NULL;
    if (fx_tensor_requires_grad(a) && !(da = grad_view(ctx, a, nd)))
        return;
    if (fx_tensor_requires_grad(b) && !(db = grad_view(ctx, b, nd)))
        return;
    fx_be(a)->ew->where_backward(cond, dy, da, db);
}

fx_tensor *fx_where(fx_ctx *ctx, fx_tensor *cond, fx_tensor *a, fx_tensor *b)
{
    static const char *op = "where";
    if (!ctx || !cond || !fx__op_check(ctx, op, 2, (fx_tensor *[]){ a, b }))
        return NULL;
    if (cond->dtype != FX_F32 && cond->dtype != FX_I32) {
        char s[96];
        return fx__op_fail(ctx, FX_ERR_DTYPE, op, "condition must be f32 or i32, got %s %s",
                           fx_dtype_name(cond->dtype), fx_shape_str(cond, s, 96));
    }
    if (cond->device.type != ctx->dev.type || cond->device.index != ctx->dev.index)
        return fx__op_fail(ctx, FX_ERR_DEVICE, op, "condition is on another device");
    int nd, nd2;
    int64_t ab[FX_MAX_DIMS], shape[FX_MAX_DIMS];
    char s1[96], s2[96], s3[96];
    bool ok = fx__broadcast_shape(a, b, &nd, ab);
    if (ok) {
        fx_tensor tmp = *a; /* a stand-in with the broadcast shape of a and b */
        tmp.ndim = nd;
        for (int i = 0; i < nd; i++)
            tmp.shape[i] = ab[i];
        ok = fx__broadcast_shape(cond, &tmp, &nd2, shape);
    }
    if (!ok)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "shapes cond %s, a %s, b %s do not broadcast",
                           fx_shape_str(cond, s1, 96), fx_shape_str(a, s2, 96),
                           fx_shape_str(b, s3, 96));
    cond = fx_contiguous(ctx, cond);
    a = fx_contiguous(ctx, a);
    b = fx_contiguous(ctx, b);
    fx_tensor *y = (cond && a && b) ? fx_tensor_new(ctx, FX_F32, nd2, shape) : NULL;
    fx_tensor *ec = y ? fx__expand_rank(ctx, cond, nd2) : NULL;
    fx_tensor *ea = ec ? fx__expand_rank(ctx, a, nd2) : NULL;
    fx_tensor *eb = ea ? fx__expand_rank(ctx, b, nd2) : NULL;
    if (!eb)
        return NULL;
    fx_be(a)->ew->where(ec, ea, eb, y);
    fx_node *n = fx__record(ctx, op, where_backward, y, 2, (fx_tensor *[]){ a, b });
    if (n)
        n->saved[0] = ec;
    return y;
}

/* -------------------------------------------------------------- dropout */

static void dropout_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0], *mask = n->saved[0];
    fx_tensor *dx = fx_tensor_requires_grad(x) ? fx__grad(ctx, x) : NULL;
    if (dx)
        fx_be(x)->ew->binary_backward(FX_BIN_MUL, x, mask, n->out->grad, dx, NULL);
}

fx_tensor *fx_dropout(fx_ctx *ctx, fx_tensor *x, float p)
{
    static const char *op = "dropout";
    if (!fx__op_check(ctx, op, 1, (fx_tensor *[]){ x }))
        return NULL;
    if (!(p >= 0.0f && p < 1.0f))
        return fx__op_fail(ctx, FX_ERR_ARG, op, "probability must be in [0, 1), got %g",
                           (double)p);
    if (!ctx->training || p == 0.0f)
        return x;
    x = fx_contiguous(ctx, x);
    fx_tensor *mask = x ? fx__tensor_new_like(ctx, x) : NULL;
    fx_tensor *y = mask ? fx__tensor_new_like(ctx, x) : NULL;
    if (!y)
        return NULL;
    const fx_ew_kernels *k = fx_be(x)->ew;
    k->dropout_mask(mask, p, fx_rng_u64(&ctx->rng));
    k->binary(FX_BIN_MUL, x, mask, y);
    fx_node *n = fx__record(ctx, op, dropout_backward, y, 1, (fx_tensor *[]){ x });
    if (n)
        n->saved[0] = mask;
    return y;
}
