/* op_matmul.c - matmul (batched) and linear: forward, backward, checks. */
#include "internal.h"
#include "kern_packed.h"

#include <limits.h>

/* Batch geometry of a matmul; a side with stride 0 is shared by all. */
typedef struct {
    int64_t batch, M, N, K, sa, sb;
} mm_geom;

/* dA_i += dY_i op(B_i)^T and dB_i += A_i^T dY_i; a shared (unbatched)
 * operand gets the products of every batch summed into its one gradient. */
static void matmul_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *a = n->in[0], *b = n->in[1], *dy = n->out->grad;
    const fx_blas_kernels *k = fx_be(a)->blas;
    mm_geom g = { n->i[0], n->i[1], n->i[2], n->i[3], n->i[4], n->i[5] };
    int64_t sy = g.M * g.N;
    if (fx_tensor_requires_grad(a)) {
        fx_tensor *da = fx__grad(ctx, a);
        if (!da)
            return;
        if (g.sa && !g.sb) /* fold the batch into rows */
            k->gemm(1, false, true, g.batch * g.M, g.K, g.N, 1.0f, dy, 0, b, 0, 1.0f, da, 0);
        else
            k->gemm(g.batch, false, true, g.M, g.K, g.N, 1.0f, dy, sy, b, g.sb, 1.0f, da, g.sa);
    }
    if (fx_tensor_requires_grad(b)) {
        fx_tensor *db = fx__grad(ctx, b);
        if (!db)
            return;
        if (g.sa && !g.sb)
            k->gemm(1, true, false, g.K, g.N, g.batch * g.M, 1.0f, a, 0, dy, 0, 1.0f, db, 0);
        else
            k->gemm(g.batch, true, false, g.K, g.N, g.M, 1.0f, a, g.sa, dy, sy, 1.0f, db, g.sb);
    }
}

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

fx_tensor *fx_matmul(fx_ctx *ctx, fx_tensor *a, fx_tensor *b)
{
    static const char *op = "matmul";
    if (!fx__op_check(ctx, op, 2, (fx_tensor *[]){ a, b }))
        return NULL;
    char sa_[96], sb_[96];
    if (a->ndim < 2 || b->ndim < 2)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "operands must have at least 2 dims: a is %s, "
                           "b is %s", fx_shape_str(a, sa_, 96), fx_shape_str(b, sb_, 96));
    mm_geom g;
    g.M = a->shape[a->ndim - 2];
    g.K = a->shape[a->ndim - 1];
    g.N = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != g.K)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "inner dimensions differ: a is %s, b is %s",
                           fx_shape_str(a, sa_, 96), fx_shape_str(b, sb_, 96));
    const fx_tensor *batched = a->ndim >= b->ndim ? a : b;
    if (a->ndim > 2 && b->ndim > 2) {
        bool same = a->ndim == b->ndim;
        for (int i = 0; same && i < a->ndim - 2; i++)
            same = a->shape[i] == b->shape[i];
        if (!same)
            return fx__op_fail(ctx, FX_ERR_SHAPE, op, "batch dimensions differ: a is %s, b is %s",
                               fx_shape_str(a, sa_, 96), fx_shape_str(b, sb_, 96));
    }
    g.batch = fx__shape_numel(batched->ndim - 2, batched->shape);
    if (!fits_int(g.M) || !fits_int(g.N) || !fits_int(g.K) || g.batch < 0 ||
        !fits_int(g.batch * g.M))
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "dimensions too large for BLAS: a is %s, b is %s",
                           fx_shape_str(a, sa_, 96), fx_shape_str(b, sb_, 96));
    a = fx_contiguous(ctx, a);
    b = fx_contiguous(ctx, b);
    if (!a || !b)
        return NULL;
    g.sa = a->ndim > 2 ? g.M * g.K : 0;
    g.sb = b->ndim > 2 ? g.K * g.N : 0;

    int64_t shape[FX_MAX_DIMS];
    int nd = batched->ndim;
    for (int i = 0; i < nd - 2; i++)
        shape[i] = batched->shape[i];
    shape[nd - 2] = g.M;
    shape[nd - 1] = g.N;
    fx_tensor *y = fx_tensor_new(ctx, FX_F32, nd, shape);
    if (!y)
        return NULL;
    const fx_blas_kernels *k = fx_be(a)->blas;
    if (g.sa && !g.sb)
        k->gemm(1, false, false, g.batch * g.M, g.N, g.K, 1.0f, a, 0, b, 0, 0.0f, y, 0);
    else
        k->gemm(g.batch, false, false, g.M, g.N, g.K, 1.0f, a, g.sa, b, g.sb, 0.0f, y, g.M * g.N);
    fx_node *n = fx__record(ctx, op, matmul_backward, y, 2, (fx_tensor *[]){ a, b });
    if (n) {
        int64_t v[6] = { g.batch, g.M, g.N, g.K, g.sa, g.sb };
        for (int i = 0; i < 6; i++)
            n->i[i] = v[i];
    }
    return y;
}

/* The general product of a dense layer's forward and backward in ctx: the
 * backend's bf16 GEMM (operands rounded to bf16, sums in fp32) in a bf16
 * context where the backend has one, else its fp32 GEMM. Only the dense
 * paths (fx_linear, linear + relu) follow the context's precision; matmul
 * stays fp32. */
typedef void (*gemm_fn)(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                        float alpha, const fx_tensor *a, int64_t stride_a, const fx_tensor *b,
                        int64_t stride_b, float beta, fx_tensor *c, int64_t stride_c);

static gemm_fn dense_gemm(const fx_ctx *ctx, const fx_blas_kernels *k)
{
    return k->gemm_bf16 && fx_ctx_precision(ctx) == FX_PREC_BF16 ? k->gemm_bf16 : k->gemm;
}

static void linear_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0], *w = n->in[1], *b = n->nin > 2 ? n->in[2] : NULL;
    fx_tensor *dy = n->out->grad;
    const fx_blas_kernels *k = fx_be(x)->blas;
    gemm_fn gemm = dense_gemm(ctx, k);
    int64_t R = n->i[0], in = w->shape[1], out = w->shape[0];
    if (fx_tensor_requires_grad(x)) {
        fx_tensor *dx = fx__grad(ctx, x);
        if (!dx)
            return;
        gemm(1, false, false, R, in, out, 1.0f, dy, 0, w, 0, 1.0f, dx, 0);
    }
    if (fx_tensor_requires_grad(w)) {
        fx_tensor *dw = fx__grad(ctx, w);
        if (!dw)
            return;
        gemm(1, true, false, out, in, R, 1.0f, dy, 0, x, 0, 1.0f, dw, 0);
    }
    if (b && fx_tensor_requires_grad(b)) {
        fx_tensor *db = fx__grad(ctx, b);
        if (db)
            k->bias_backward(dy, db);
    }
}

fx_tensor *fx_linear(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b)
{
    static const char *op = "linear";
    int nin = b ? 3 : 2;
    if (!fx__op_check(ctx, op, nin, (fx_tensor *[]){ x, w, b }))
        return NULL;
    char s1[96], s2[96];
    if (w->ndim != 2)
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "weight must be [out,in], got %s",
                           fx_shape_str(w, s1, 96));
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "input %s does not end in %lld features as "
                           "weight %s expects", fx_shape_str(x, s1, 96),
                           (long long)w->shape[1], fx_shape_str(w, s2, 96));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "bias must be [%lld], got %s",
                           (long long)w->shape[0], fx_shape_str(b, s1, 96));
    int64_t in = w->shape[1], out = w->shape[0];
    int64_t R = in ? fx_tensor_numel(x) / in : 0;
    if (!fits_int(R) || !fits_int(in) || !fits_int(out))
        return fx__op_fail(ctx, FX_ERR_SHAPE, op, "dimensions too large for BLAS: x is %s",
                           fx_shape_str(x, s1, 96));
    x = fx_contiguous(ctx, x);
    w = fx_contiguous(ctx, w);
    if (b)
        b = fx_contiguous(ctx, b);
    if (!x || !w || (nin > 2 && !b))
        return NULL;
    int64_t shape[FX_MAX_DIMS];
    for (int i = 0; i < x->ndim - 1; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 1] = out;
    fx_tensor *y = fx_tensor_new(ctx, FX_F32, x->ndim, shape);
    if (!y)
        return NULL;
    const fx_blas_kernels *k = fx_be(x)->blas;
    if (b)
        k->bias_fill(y, b);
    dense_gemm(ctx, k)(1, false, true, R, out, in, 1.0f, x, 0, w, 0, b ? 1.0f : 0.0f, y, 0);
    fx_node *n = fx__record(ctx, op, linear_backward, y, nin, (fx_tensor *[]){ x, w, b });
    if (n)
        n->i[0] = R;
    return y;
}

fx_tensor *fx__linear_packed(fx_ctx *ctx, fx_tensor *x, const fx_tensor *w, const fx_tensor *b,
                             const fx_packed *p, fx_activation act)
{
    if (!ctx || !x || !p || fx_ctx_grad_enabled(ctx) || ctx->status != FX_OK ||
        x->dtype != FX_F32 || x->device.type != FX_DEV_CPU || x->ndim < 1 ||
        x->shape[x->ndim - 1] != p->K || !fx__pack_valid(p, w, b) || !fx__pack_fusable(act))
        return NULL;
    int64_t R = p->K ? fx_tensor_numel(x) / p->K : 0;
    if (!fits_int(R))
        return NULL;
    x = fx_contiguous(ctx, x);
    if (!x)
        return NULL;
    int64_t shape[FX_MAX_DIMS];
    for (int i = 0; i < x->ndim - 1; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 1] = p->N;
    fx_tensor *y = fx_tensor_new(ctx, FX_F32, x->ndim, shape);
    if (!y)
        return NULL;
    fx__packed_gemm(p, R, (const float *)fx_data(x), p->K, (float *)fx_data(y), p->N, act);
    return y;
}

/* ------------------------------------------------------- linear + relu */

/* n->i[0]: rows. dZ, the gradient before the relu, is dY where Y > 0 (Y > 0
 * exactly where the pre-activation is), written in one pass that also sums
 * the bias gradient's columns while dY is in cache (instead of zero-filling
 * dZ, adding the masked dY into it, then reading it again for the bias);
 * then dX += dZ W and dW += dZ^T X on BLAS as linear's backward. */
static void linear_relu_backward(fx_ctx *ctx, fx_node *n)
{
    fx_tensor *x = n->in[0], *w = n->in[1], *b = n->nin > 2 ? n->in[2] : NULL;
    fx_tensor *y = n->out, *dy = y->grad;
    const fx_blas_kernels *k = fx_be(x)->blas;
    gemm_fn gemm = dense_gemm(ctx, k);
    int64_t R = n->i[0], in = w->shape[1], out = w->shape[0];
    fx_tensor *db = NULL;
    if (b && fx_tensor_requires_grad(b) && !(db = fx__grad(ctx, b)))
        return;
    fx_tensor *dz = fx_tensor_new(ctx, FX_F32, y->ndim, y->shape);
    if (!dz)
        return;
    fx__relu_backward_bias(R, out, (const float *)fx_data(y), (const float *)fx_data(dy),
                           (float *)fx_data(dz), db ? (float *)fx_data(db) : NULL);
    if (fx_tensor_requires_grad(x)) {
        fx_tensor *dx = fx__grad(ctx, x);
        if (!dx)
            return;
        gemm(1, false, false, R, in, out, 1.0f, dz, 0, w, 0, 1.0f, dx, 0);
    }
    if (fx_tensor_requires_grad(w)) {
        fx_tensor *dw = fx__grad(ctx, w);
        if (!dw)
            return;
        gemm(1, true, false, out, in, R, 1.0f, dz, 0, x, 0, 1.0f, dw, 0);
    }
}

static bool cpu_f32(const fx_tensor *t)
{
    return t->dtype == FX_F32 && t->device.type == FX_DEV_CPU && fx_tensor_is_contiguous(t);
}

fx_tensor *fx__linear_relu(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b)
{
    if (!ctx || !x || !w || ctx->status != FX_OK || !cpu_f32(x) || !cpu_f32(w) ||
        (b && !cpu_f32(b)) || w->ndim != 2 || x->ndim < 1 ||
        x->shape[x->ndim - 1] != w->shape[1] || (b && (b->ndim != 1 || b->shape[0] != w->shape[0])))
        return NULL;
    int64_t in = w->shape[1], out = w->shape[0];
    int64_t R = in ? fx_tensor_numel(x) / in : 0;
    if (!fits_int(R) || !fits_int(in) || !fits_int(out))
        return NULL;
    int nin = b ? 3 : 2;
    if (!fx__op_check(ctx, "linear", nin, (fx_tensor *[]){ x, w, b }))
        return NULL;
    int64_t shape[FX_MAX_DIMS];
    for (int i = 0; i < x->ndim - 1; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 1] = out;
    fx_tensor *y = fx_tensor_new(ctx, FX_F32, x->ndim, shape);
    if (!y)
        return NULL;
    /* As fx_linear, then the relu in place while y is in cache (no second
     * tensor). The packed kernels with the relu in their epilogue, packing
     * the weights per call (they change every step), measured no faster
     * than OpenBLAS here: the transposing pack costs what the kernel saves. */
    const fx_backend *be = fx_be(x);
    if (b)
        be->blas->bias_fill(y, b);
    dense_gemm(ctx, be->blas)(1, false, true, R, out, in, 1.0f, x, 0, w, 0, b ? 1.0f : 0.0f, y,
                              0);
    be->ew->unary(FX_UN_RELU, 0, 0, y, y);
    fx_node *n = fx__record(ctx, "linear_relu", linear_relu_backward, y, nin,
                            (fx_tensor *[]){ x, w, b });
    if (n)
        n->i[0] = R;
    return y;
}
