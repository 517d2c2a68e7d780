/*
 * op_rnn.c - recurrent stacks (simple RNN, GRU, LSTM) over variable-length
 * sequences: the op, its backward through time, and the layers that own the
 * weights under PyTorch's names. Layouts and formulas: fx_rnn.h; kernels:
 * kern_rnn.h.
 *
 * The whole stack is one op with one tape record. Per layer and direction:
 *   forward   xg = x W_ih^T + b_ih (+ b_hh outside GRU) for every step
 *             (one gemm), then the backend's recurrence kernel: per step
 *             hg = h W_hh^T and the fused cell, which adds a GRU's b_hh,
 *             applies the gates and writes the new state and the output;
 *   backward  the backend's recurrence backward: per step (last to first)
 *             the cell's backward, which writes the gate gradients dxg (by
 *             position) and dhg (by step), then dh += dhg_s W_hh; after it
 *             one gemm each for dW_hh (over all steps), dW_ih and the layer
 *             input's gradient.
 * A backend's kernels may take some of these products on (kern_rnn.h): the
 * CPU forms an LSTM's input gates inside its per-step products, the input
 * gradient in the backward's, and both weight gradients (and the bias's)
 * in one pass.
 * The states, cells and gate activations of every step are kept for the
 * backward. Rows of h0, h_n and the like are addressed through tensor structs
 * on the stack (block()); every buffer comes from the context's arena.
 */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *mode_name(fx_rnn_mode m)
{
    return m == FX_RNN_LSTM ? "lstm" : m == FX_RNN_GRU ? "gru" : "rnn";
}

static int64_t mode_gates(fx_rnn_mode m)
{
    return m == FX_RNN_LSTM ? 4 : m == FX_RNN_GRU ? 3 : 1;
}

static fx_cell_kind mode_cell(fx_rnn_mode m)
{
    return m == FX_RNN_LSTM ? FX_CELL_LSTM
           : m == FX_RNN_GRU ? FX_CELL_GRU
           : m == FX_RNN_RELU ? FX_CELL_RELU
                              : FX_CELL_TANH;
}

/* A contiguous view, as a struct on the stack, of the elements of t from
 * element off on with the given shape. The step loops hand kernels per-step
 * blocks this way without allocating. */
static fx_tensor block(const fx_tensor *t, int64_t off, int ndim, const int64_t *shape)
{
    fx_tensor v = *t;
    v.offset = t->offset + off;
    v.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        v.shape[i] = shape[i];
    fx__contiguous_strides(ndim, shape, v.strides);
    v.grad = NULL;
    v.flags = 0;
    return v;
}

/* "weight_ih_l1_reverse" and the like: PyTorch's parameter names. */
static const char *param_name(char *buf, size_t n, const char *what, int layer, int dir)
{
    snprintf(buf, n, "%s_l%d%s", what, layer, dir ? "_reverse" : "");
    return buf;
}

/* The buffers one layer and direction keeps for the backward. */
typedef struct {
    fx_tensor *xg;  /* [N, T, G*H] input gates */
    fx_tensor *hs;  /* [S+1, N, H] states by step */
    fx_tensor *cs;  /* LSTM cells [S+1, N, H] */
    fx_tensor *act; /* GRU / LSTM gate values [S, N, 4H] */
} rnn_saved;

/* Everything the op and its backward share; lives in the meta arena. */
typedef struct {
    fx_rnn_mode mode;
    int L, D;
    int64_t N, T, S, H, G; /* S: steps run, the longest length */
    bool padded;           /* some length < T */
    fx_tensor *len;        /* i64 [N] */
    fx_tensor *x;          /* the op's input as recorded */
    fx_tensor **lin;       /* [L] each layer's input (lin[0]: x, masked when padded) */
    fx_tensor **lout;      /* [L] each layer's output; lout[L-1] is y */
    rnn_saved *sv;         /* [L*D] */
    fx_rnn_weights *w;     /* [L*D] */
    fx_tensor *h0, *c0, *y, *h_n, *c_n;
} rnn_tape;

/* ------------------------------------------------------------- checks */

/* fx__op_fail for the checks, which return bool. */
#define FAIL(...) (fx__op_fail(__VA_ARGS__), false)

/* A named input is present, on the context's device and f32. A missing one
 * records an error unless one is already recorded (the usual NULL chain). */
static bool check_tensor(fx_ctx *ctx, const char *who, const char *what, const fx_tensor *t)
{
    if (!t) {
        if (fx_ctx_status(ctx) == FX_OK)
            fx__op_fail(ctx, FX_ERR_ARG, who, "%s is NULL", what);
        return false;
    }
    if (t->device.type != ctx->dev.type || t->device.index != ctx->dev.index) {
        char d1[32], d2[32];
        fx__op_fail(ctx, FX_ERR_DEVICE, who, "%s is on %s but the context runs on %s", what,
                    fx_device_str(t->device, d1, sizeof d1),
                    fx_device_str(ctx->dev, d2, sizeof d2));
        return false;
    }
    return fx__op_check_dtype(ctx, who, what, t, FX_F32);
}

/* t has exactly the shape dims[0..nd); else an FX_ERR_SHAPE naming it. */
static bool check_shape(fx_ctx *ctx, const char *who, const char *what, const fx_tensor *t,
                        int nd, const int64_t *dims, const char *meaning)
{
    bool ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++)
        ok = t->shape[i] == dims[i];
    if (ok)
        return true;
    char b1[96], b2[96];
    fx_tensor want = { .ndim = nd };
    for (int i = 0; i < nd; i++)
        want.shape[i] = dims[i];
    fx__op_fail(ctx, FX_ERR_SHAPE, who, "%s must be %s (%s), got %s", what,
                fx_shape_str(&want, b1, sizeof b1), meaning, fx_shape_str(t, b2, sizeof b2));
    return false;
}

/* The weights of layer l, direction d: present, f32, and of the shapes the
 * stack needs, given the layer's input width in and the hidden size H. */
static bool check_weights(fx_ctx *ctx, const char *who, const fx_rnn_weights *w, int l, int d,
                          int64_t GH, int64_t in, int64_t H, const fx_tensor *x)
{
    char name[4][48], b1[96], b2[96];
    param_name(name[0], 48, "weight_ih", l, d);
    param_name(name[1], 48, "weight_hh", l, d);
    param_name(name[2], 48, "bias_ih", l, d);
    param_name(name[3], 48, "bias_hh", l, d);
    if (!check_tensor(ctx, who, name[0], w->w_ih) || !check_tensor(ctx, who, name[1], w->w_hh) ||
        (w->b_ih && !check_tensor(ctx, who, name[2], w->b_ih)) ||
        (w->b_hh && !check_tensor(ctx, who, name[3], w->b_hh)))
        return false;
    const fx_tensor *wi = w->w_ih;
    if (wi->ndim == 2 && wi->shape[0] == GH && wi->shape[1] != in) {
        if (l == 0)
            fx__op_fail(ctx, FX_ERR_SHAPE, who, "x has %lld input features but %s is %s (expects "
                        "%lld); x is %s", (long long)in, name[0], fx_shape_str(wi, b1, 96),
                        (long long)wi->shape[1], fx_shape_str(x, b2, 96));
        else
            fx__op_fail(ctx, FX_ERR_SHAPE, who, "%s is %s but layer %d gets %lld features from "
                        "the layer below", name[0], fx_shape_str(wi, b1, 96), l, (long long)in);
        return false;
    }
    return check_shape(ctx, who, name[0], wi, 2, (int64_t[]){ GH, in }, "gates x input") &&
           check_shape(ctx, who, name[1], w->w_hh, 2, (int64_t[]){ GH, H }, "gates x hidden") &&
           (!w->b_ih || check_shape(ctx, who, name[2], w->b_ih, 1, &GH, "gates")) &&
           (!w->b_hh || check_shape(ctx, who, name[3], w->b_hh, 1, &GH, "gates"));
}

/* Reads and checks the lengths: an i32/i64 [N] tensor with every value in
 * [1, T], or NULL for all T. Writes them to host array out (N entries);
 * returns the longest, or -1 after recording an error. */
static int64_t read_lengths(fx_ctx *ctx, const char *who, const fx_tensor *lengths,
                            const fx_tensor *x, int64_t *out)
{
    int64_t N = x->shape[0], T = x->shape[1], S = 0;
    char b1[96], b2[96];
    if (!lengths) {
        for (int64_t n = 0; n < N; n++)
            out[n] = T;
        return T;
    }
    if (lengths->dtype != FX_I32 && lengths->dtype != FX_I64) {
        fx__op_fail(ctx, FX_ERR_DTYPE, who, "lengths must be i32 or i64, got %s %s",
                    fx_dtype_name(lengths->dtype), fx_shape_str(lengths, b1, 96));
        return -1;
    }
    if (lengths->device.type != ctx->dev.type || lengths->device.index != ctx->dev.index) {
        fx__op_fail(ctx, FX_ERR_DEVICE, who, "lengths are on another device than the context");
        return -1;
    }
    if (lengths->ndim != 1 || lengths->shape[0] != N) {
        fx__op_fail(ctx, FX_ERR_SHAPE, who, "lengths must be [%lld] (one per sample of x %s), "
                    "got %s", (long long)N, fx_shape_str(x, b1, 96),
                    fx_shape_str(lengths, b2, 96));
        return -1;
    }
    int32_t *v = lengths->dtype == FX_I32 ? fx__ctx_alloc_meta(ctx, (size_t)N * sizeof *v) : NULL;
    if (lengths->dtype == FX_I32 && !v)
        return -1;
    fx_status st = v ? fx_tensor_to_host(lengths, v, (size_t)N * sizeof *v)
                     : fx_tensor_to_host(lengths, out, (size_t)N * sizeof *out);
    if (st != FX_OK) {
        fx__op_fail(ctx, st, who, "lengths %s could not be read", fx_shape_str(lengths, b1, 96));
        return -1;
    }
    for (int64_t n = 0; v && n < N; n++)
        out[n] = v[n];
    for (int64_t n = 0; n < N; n++) {
        if (out[n] < 1 || out[n] > T) {
            fx__op_fail(ctx, FX_ERR_VALUE, who, "lengths[%lld] = %lld is outside [1, %lld]: every "
                        "sample needs at least one step and at most T = %lld (x is %s)",
                        (long long)n, (long long)out[n], (long long)T, (long long)T,
                        fx_shape_str(x, b1, 96));
            return -1;
        }
        S = out[n] > S ? out[n] : S;
    }
    return S;
}

/* Checks the spec, x and the states; sets *H. */
static bool check_inputs(fx_ctx *ctx, const char *who, const fx_recurrent_spec *sp,
                         const fx_tensor *x, const fx_tensor *h0, const fx_tensor *c0,
                         int64_t *H)
{
    char b1[96], b2[96];
    if (!check_tensor(ctx, who, "x", x))
        return false;
    if (x->ndim != 3)
        return FAIL(ctx, FX_ERR_SHAPE, who, "x must be [N, T, input] (batch first), got %s",
                          fx_shape_str(x, b1, 96));
    int64_t N = x->shape[0], T = x->shape[1], in = x->shape[2];
    if (N < 1 || T < 1 || in < 1)
        return FAIL(ctx, FX_ERR_SHAPE, who, "x %s is empty: batch, steps and features "
                          "must all be at least 1", fx_shape_str(x, b1, 96));
    int D = sp->bidirectional ? 2 : 1, L = sp->num_layers;
    const fx_tensor *whh = sp->weights[0].w_hh;
    if (!check_tensor(ctx, who, "weight_hh_l0", whh))
        return false;
    if (whh->ndim != 2 || whh->shape[1] < 1)
        return FAIL(ctx, FX_ERR_SHAPE, who, "weight_hh_l0 must be [gates x hidden, "
                          "hidden], got %s", fx_shape_str(whh, b1, 96));
    *H = whh->shape[1];
    int64_t GH = mode_gates(sp->mode) * *H;
    if (GH > INT_MAX / 4 || N * T > INT_MAX || in > INT_MAX || D * *H > INT_MAX)
        return FAIL(ctx, FX_ERR_SHAPE, who, "dimensions too large for BLAS: x is %s, "
                          "weight_hh_l0 is %s", fx_shape_str(x, b1, 96),
                          fx_shape_str(whh, b2, 96));
    for (int l = 0; l < L; l++)
        for (int d = 0; d < D; d++)
            if (!check_weights(ctx, who, &sp->weights[l * D + d], l, d, GH, l ? D * *H : in, *H,
                               x))
                return false;
    int64_t st[3] = { (int64_t)L * D, N, *H };
    if (h0 && !(check_tensor(ctx, who, "h0", h0) &&
                check_shape(ctx, who, "h0", h0, 3, st, "layers*directions, batch, hidden")))
        return false;
    if (c0 && sp->mode != FX_RNN_LSTM)
        return FAIL(ctx, FX_ERR_ARG, who, "c0 is given but only an LSTM has a cell "
                          "state");
    if (c0 && !(check_tensor(ctx, who, "c0", c0) &&
                check_shape(ctx, who, "c0", c0, 3, st, "layers*directions, batch, hidden")))
        return false;
    return true;
}

/* ------------------------------------------------------------ forward */

/* Runs layer l, direction d over its input lin[l] into lout[l] and keeps
 * its buffers in tp->sv. False on out of memory (recorded). */
static bool run_direction(fx_ctx *ctx, rnn_tape *tp, int l, int d)
{
    const fx_backend *be = ctx->be;
    int k = l * tp->D + d;
    const fx_rnn_weights *w = &tp->w[k];
    rnn_saved *r = &tp->sv[k];
    fx_tensor *in = tp->lin[l];
    int64_t N = tp->N, T = tp->T, S = tp->S, H = tp->H, GH = tp->G * H, I = in->shape[2];
    bool lstm = tp->mode == FX_RNN_LSTM, gated = lstm || tp->mode == FX_RNN_GRU;
    int64_t st[3] = { S + 1, N, H }, nh[2] = { N, H };
    r->xg = fx_tensor_new(ctx, FX_F32, 3, (int64_t[]){ N, T, GH });
    r->hs = fx_tensor_new(ctx, FX_F32, 3, st);
    r->cs = lstm ? fx_tensor_new(ctx, FX_F32, 3, st) : NULL;
    r->act = gated ? fx_tensor_new(ctx, FX_F32, 3, (int64_t[]){ S, N, 4 * H }) : NULL;
    fx_tensor *hg = fx_tensor_new(ctx, FX_F32, 2, (int64_t[]){ N, GH });
    if (!r->xg || !r->hs || (lstm && !r->cs) || (gated && !r->act) || !hg)
        return false;

    /* The input gates of every step at once: xg = in W_ih^T + b_ih, and for
     * LSTM and the simple RNN + b_hh too (both biases add to the same
     * pre-activation; a GRU's b_hn sits inside r * (.), so it stays with the
     * per-step product). */
    const fx_tensor *bias = w->b_ih, *b_step = w->b_hh;
    if (tp->mode != FX_RNN_GRU && w->b_hh) {
        bias = w->b_hh;
        b_step = NULL;
        if (w->b_ih) {
            fx_tensor *sum = fx__tensor_new_like(ctx, w->b_ih);
            if (!sum)
                return false;
            be->mem->copy(sum, w->b_ih, false);
            be->ew->axpy(1.0f, w->b_hh, sum);
            bias = sum;
        }
    }
    /* an LSTM on kernels that form them in their per-step products: left
     * to the kernel (xg stays allocated for its fallback) */
    bool pending = lstm && be->rnn->fused_gates;
    if (!pending && (!be->rnn->gates || !be->rnn->gates(N * T, in, w->w_ih, bias, r->xg))) {
        if (bias)
            be->blas->bias_fill(r->xg, bias);
        be->blas->gemm(1, false, true, N * T, GH, I, 1.0f, in, 0, w->w_ih, 0,
                       bias ? 1.0f : 0.0f, r->xg, 0);
    }

    /* Initial states: this row of h0 / c0, or zeros. */
    fx_tensor *init[2] = { tp->h0, tp->c0 }, *dst[2] = { r->hs, r->cs };
    for (int i = 0; i < (lstm ? 2 : 1); i++) {
        fx_tensor b0 = block(dst[i], 0, 2, nh);
        if (init[i]) {
            fx_tensor src = block(init[i], k * N * H, 2, nh);
            be->mem->copy(&b0, &src, false);
        } else {
            be->mem->fill(&b0, 0.0);
        }
    }

    /* The recurrence (kernel), starting from hs[0]. */
    be->rnn->forward(&(fx_rnn_seq_args){
        .kind = mode_cell(tp->mode), .reverse = d == 1, .steps = S, .col = d * H,
        .lengths = tp->len, .w_hh = w->w_hh, .hs = r->hs, .cs = r->cs, .act = r->act,
        .xg = r->xg, .b_hh = b_step, .h0_zero = !tp->h0, .gates_pending = pending, .x = in,
        .w_ih = w->w_ih, .b_in = bias, .hg = hg, .y = tp->lout[l] });
    return true;
}

/* ----------------------------------------------------------- backward */

/* Bias gradients: column sums of the gate gradients, db_ih from dxg and
 * db_hh from dhg. Outside GRU the two hold the same values (dhg by step,
 * dxg by position, zero elsewhere), so one sum serves both; sum, when not
 * NULL, is that sum already formed (by the backend's grad_weights). */
static bool bias_grads(fx_ctx *ctx, fx_rnn_mode mode, const fx_rnn_weights *w,
                       const fx_tensor *dxg, const fx_tensor *dhg, const fx_tensor *sum)
{
    const fx_blas_kernels *k = ctx->be->blas;
    bool need_i = fx_tensor_requires_grad(w->b_ih), need_h = fx_tensor_requires_grad(w->b_hh);
    fx_tensor *gi = need_i ? fx__grad(ctx, w->b_ih) : NULL;
    fx_tensor *gh = need_h ? fx__grad(ctx, w->b_hh) : NULL;
    if ((need_i && !gi) || (need_h && !gh))
        return false;
    if (sum && mode != FX_RNN_GRU) {
        if (gi)
            ctx->be->ew->axpy(1.0f, sum, gi);
        if (gh)
            ctx->be->ew->axpy(1.0f, sum, gh);
        return true;
    }
    if (gi && gh && mode != FX_RNN_GRU) {
        fx_tensor *both = fx_zeros(ctx, FX_F32, 1, gi->shape);
        if (!both)
            return false;
        k->bias_backward(dxg, both);
        ctx->be->ew->axpy(1.0f, both, gi);
        ctx->be->ew->axpy(1.0f, both, gh);
        return true;
    }
    if (gi)
        k->bias_backward(dxg, gi);
    if (gh) /* dhg NULL: dense LSTM, where dxg holds the same values */
        k->bias_backward(dhg ? dhg : dxg, gh);
    return true;
}

/* Backward of layer l, direction d: dy is the gradient of lout[l], din
 * (may be NULL) receives the gradient of lin[l]. */
static bool backward_direction(fx_ctx *ctx, rnn_tape *tp, int l, int d, const fx_tensor *dy,
                               fx_tensor *din)
{
    const fx_backend *be = ctx->be;
    int k = l * tp->D + d;
    const fx_rnn_weights *w = &tp->w[k];
    rnn_saved *r = &tp->sv[k];
    fx_tensor *in = tp->lin[l];
    int64_t N = tp->N, T = tp->T, S = tp->S, H = tp->H, GH = tp->G * H, I = in->shape[2];
    bool lstm = tp->mode == FX_RNN_LSTM;
    int64_t nh[2] = { N, H }, xshape[3] = { N, T, GH };
    fx_tensor *dh = fx_tensor_new(ctx, FX_F32, 2, nh);
    fx_tensor *dc = lstm ? fx_tensor_new(ctx, FX_F32, 2, nh) : NULL;
    /* Padded positions are never written by the kernel and must add zero. */
    fx_tensor *dxg = tp->padded ? fx_zeros(ctx, FX_F32, 3, xshape)
                                : fx_tensor_new(ctx, FX_F32, 3, xshape);
    /* Dense LSTM (forward, every sample active at every step): the kernel
     * reads the recurrent gate gradients from dxg in place, no dhg. */
    bool dense = lstm && d == 0 && !tp->padded && be->rnn->dense_lstm;
    fx_tensor *dhg = dense ? NULL : fx_tensor_new(ctx, FX_F32, 3, (int64_t[]){ S, N, GH });
    if (!dh || (lstm && !dc) || !dxg || (!dense && !dhg))
        return false;

    /* The running state gradients start from those of h_n and c_n. */
    fx_tensor src = block(tp->h_n->grad, k * N * H, 2, nh);
    be->mem->copy(dh, &src, false);
    if (lstm) {
        src = block(tp->c_n->grad, k * N * H, 2, nh);
        be->mem->copy(dc, &src, false);
    }
    bool need_h0 = fx_tensor_requires_grad(tp->h0), need_c0 = fx_tensor_requires_grad(tp->c0);
    bool dx_added = false; /* the kernel may form din's share in its steps (not GRU) */
    be->rnn->backward(&(fx_rnn_seq_args){
        .kind = mode_cell(tp->mode), .reverse = d == 1, .steps = S, .col = d * H,
        .lengths = tp->len, .w_hh = w->w_hh, .hs = r->hs, .cs = r->cs, .act = r->act,
        .dy = dy, .want_dh0 = need_h0, .dh = dh, .dc = dc, .dxg = dxg, .dhg = dhg,
        .w_ih = w->w_ih, .dx = tp->mode == FX_RNN_GRU ? NULL : din, .dx_added = &dx_added });

    fx_tensor *init[2] = { tp->h0, tp->c0 }, *dstate[2] = { dh, dc };
    bool need[2] = { need_h0, lstm && need_c0 };
    for (int i = 0; i < 2; i++) {
        if (!need[i])
            continue;
        fx_tensor *g = fx__grad(ctx, init[i]);
        if (!g)
            return false;
        fx_tensor row = block(g, k * N * H, 2, nh);
        be->ew->axpy(1.0f, dstate[i], &row);
    }

    /* Weight gradients, each one product over all steps (both in one call
     * of the backend's grad_weights where it has one and they share the
     * gate gradients). Rows of dhg for inactive samples are zero, so
     * hs[0..S) can be used whole; a zero initial state adds nothing, so
     * step 0 is left out then. */
    bool need_hh = fx_tensor_requires_grad(w->w_hh), need_ih = fx_tensor_requires_grad(w->w_ih);
    fx_tensor *g_hh = need_hh ? fx__grad(ctx, w->w_hh) : NULL;
    fx_tensor *g_ih = need_ih ? fx__grad(ctx, w->w_ih) : NULL;
    if ((need_hh && !g_hh) || (need_ih && !g_ih))
        return false;
    fx_tensor gv, hv;
    const fx_tensor *hsrc = NULL, *hdg = NULL; /* the states and their gate gradients */
    int64_t hrows = 0;
    if (need_hh && dense) { /* by position: the states hs[t] of sample n as row n*T + t */
        fx_tensor *hp = fx_tensor_new(ctx, FX_F32, 3, (int64_t[]){ N, T, H });
        if (!hp)
            return false;
        fx_tensor v = block(r->hs, 0, 3, (int64_t[]){ N, T, H });
        v.strides[0] = H;
        v.strides[1] = N * H;
        be->mem->copy(hp, &v, false);
        hsrc = hp;
        hdg = dxg;
        hrows = N * T;
    } else if (need_hh) {
        int64_t s0 = tp->h0 ? 0 : 1;
        hrows = (S - s0) * N;
        gv = block(dhg, s0 * N * GH, 2, (int64_t[]){ hrows, GH });
        hv = block(r->hs, s0 * N * H, 2, (int64_t[]){ hrows, H });
        hsrc = hrows > 0 ? &hv : NULL;
        hdg = &gv;
    }
    bool done_hh = !hsrc, done_ih = !need_ih, done_b = false;
    bool (*gw)(int64_t, const fx_tensor *, int, const fx_tensor *const *, fx_tensor *const *,
               fx_tensor *) = be->rnn->grad_weights;
    /* outside GRU the biases' one gradient (bias_grads) comes with dxg's pass */
    bool need_b = tp->mode != FX_RNN_GRU &&
                  (fx_tensor_requires_grad(w->b_ih) || fx_tensor_requires_grad(w->b_hh));
    fx_tensor *bsum = gw && need_b ? fx_zeros(ctx, FX_F32, 1, (int64_t[]){ GH }) : NULL;
    if (gw && need_b && !bsum)
        return false;
    if (gw && !done_hh && !done_ih && hdg == dxg) {
        done_hh = done_ih = done_b = gw(N * T, dxg, 2, (const fx_tensor *[]){ in, hsrc },
                                        (fx_tensor *[]){ g_ih, g_hh }, bsum);
    } else if (gw) {
        done_hh = done_hh || gw(hrows, hdg, 1, &hsrc, &g_hh, NULL);
        if (!done_ih)
            done_ih = done_b = gw(N * T, dxg, 1, (const fx_tensor *[]){ in }, &g_ih, bsum);
    }
    if (!done_hh)
        be->blas->gemm(1, true, false, GH, H, hrows, 1.0f, hdg, 0, hsrc, 0, 1.0f, g_hh, 0);
    if (!done_ih)
        be->blas->gemm(1, true, false, GH, I, N * T, 1.0f, dxg, 0, in, 0, 1.0f, g_ih, 0);
    if (!bias_grads(ctx, tp->mode, w, dxg, dhg, done_b ? bsum : NULL))
        return false;
    if (din && !dx_added &&
        (!be->rnn->grad_input || !be->rnn->grad_input(N * T, dxg, w->w_ih, din)))
        be->blas->gemm(1, false, false, N * T, I, GH, 1.0f, dxg, 0, w->w_ih, 0, 1.0f, din, 0);
    return true;
}

/* Layers from the top down; each layer's input gradient is the gradient of
 * the output of the layer below. n->i[0] holds the rnn_tape. */
static void recurrent_backward(fx_ctx *ctx, fx_node *n)
{
    rnn_tape *tp = (rnn_tape *)(intptr_t)n->i[0];
    const fx_tensor *dy = tp->y->grad;
    for (int l = tp->L - 1; l >= 0; l--) {
        fx_tensor *din = NULL;
        if (l > 0)
            din = fx_zeros(ctx, FX_F32, 3, tp->lin[l]->shape);
        else if (fx_tensor_requires_grad(tp->x))
            din = fx__grad(ctx, tp->x);
        if ((l > 0 || fx_tensor_requires_grad(tp->x)) && !din)
            return;
        for (int d = 0; d < tp->D; d++)
            if (!backward_direction(ctx, tp, l, d, dy, din))
                return;
        dy = din;
    }
}

/* -------------------------------------------------------------- the op */

fx_tensor *fx_recurrent(fx_ctx *ctx, const fx_recurrent_spec *spec, fx_tensor *x,
                        fx_tensor *lengths, fx_tensor *h0, fx_tensor *c0, fx_tensor **h_n,
                        fx_tensor **c_n)
{
    if (h_n)
        *h_n = NULL;
    if (c_n)
        *c_n = NULL;
    if (!ctx)
        return NULL;
    if (!spec || !spec->weights || spec->num_layers < 1 || (unsigned)spec->mode >= FX_RNN_COUNT)
        return fx__op_fail(ctx, FX_ERR_ARG, "recurrent", "needs a spec with a mode, weights and "
                           "num_layers >= 1");
    char who[128];
    if (spec->name)
        snprintf(who, sizeof who, "%s '%s'", mode_name(spec->mode), spec->name);
    else
        snprintf(who, sizeof who, "%s", mode_name(spec->mode));
    int64_t H;
    if (!check_inputs(ctx, who, spec, x, h0, c0, &H))
        return NULL;
    int L = spec->num_layers, D = spec->bidirectional ? 2 : 1;
    int64_t N = x->shape[0], T = x->shape[1];

    rnn_tape *tp = fx__ctx_alloc_meta(ctx, sizeof *tp);
    int64_t *lens = fx__ctx_alloc_meta(ctx, (size_t)N * sizeof *lens);
    if (!tp || !lens)
        return NULL;
    memset(tp, 0, sizeof *tp);
    int64_t S = read_lengths(ctx, who, lengths, x, lens);
    if (S < 0)
        return NULL;
    bool padded = false;
    for (int64_t n = 0; n < N; n++)
        padded |= lens[n] < T;
    *tp = (rnn_tape){ .mode = spec->mode, .L = L, .D = D, .N = N, .T = T, .S = S, .H = H,
                      .G = mode_gates(spec->mode), .padded = padded };
    tp->lin = fx__ctx_alloc_meta(ctx, (size_t)L * sizeof *tp->lin);
    tp->lout = fx__ctx_alloc_meta(ctx, (size_t)L * sizeof *tp->lout);
    tp->sv = fx__ctx_alloc_meta(ctx, (size_t)(L * D) * sizeof *tp->sv);
    tp->w = fx__ctx_alloc_meta(ctx, (size_t)(L * D) * sizeof *tp->w);
    if (!tp->lin || !tp->lout || !tp->sv || !tp->w)
        return NULL;
    tp->len = fx_tensor_from_host(ctx, FX_I64, 1, &N, lens);
    tp->x = x = fx_contiguous(ctx, x);
    tp->h0 = h0 = h0 ? fx_contiguous(ctx, h0) : NULL;
    tp->c0 = c0 = c0 ? fx_contiguous(ctx, c0) : NULL;
    bool ok = tp->len && x && (h0 || !tp->h0) && (c0 || !tp->c0);
    for (int k = 0; ok && k < L * D; k++) {
        const fx_rnn_weights *w = &spec->weights[k];
        tp->w[k] = (fx_rnn_weights){ fx_contiguous(ctx, w->w_ih), fx_contiguous(ctx, w->w_hh),
                                     fx_contiguous(ctx, w->b_ih), fx_contiguous(ctx, w->b_hh) };
        ok = tp->w[k].w_ih && tp->w[k].w_hh && (tp->w[k].b_ih || !w->b_ih) &&
             (tp->w[k].b_hh || !w->b_hh);
    }
    if (!ok)
        return NULL;

    /* Layer 0 reads x with its padded steps zeroed, so garbage there (even
     * NaN) cannot reach the input gates or dW_ih. */
    const fx_backend *be = ctx->be;
    tp->lin[0] = x;
    if (padded) {
        if (!(tp->lin[0] = fx__tensor_new_like(ctx, x)))
            return NULL;
        be->rnn->mask_steps(x, tp->len, tp->lin[0]);
    }
    int64_t oshape[3] = { N, T, D * H }, sshape[3] = { (int64_t)L * D, N, H };
    for (int l = 0; l < L; l++) {
        if (l > 0)
            tp->lin[l] = tp->lout[l - 1];
        /* Only active positions are written; padded ones must read zero. */
        tp->lout[l] = padded ? fx_zeros(ctx, FX_F32, 3, oshape)
                             : fx_tensor_new(ctx, FX_F32, 3, oshape);
        if (!tp->lout[l])
            return NULL;
        for (int d = 0; d < D; d++)
            if (!run_direction(ctx, tp, l, d))
                return NULL;
    }
    tp->y = tp->lout[L - 1];

    /* Final states: every sample's state after step S-1 is the one of its
     * last valid step (shorter samples carried theirs). */
    bool lstm = spec->mode == FX_RNN_LSTM;
    tp->h_n = fx_tensor_new(ctx, FX_F32, 3, sshape);
    tp->c_n = lstm ? fx_tensor_new(ctx, FX_F32, 3, sshape) : NULL;
    if (!tp->h_n || (lstm && !tp->c_n))
        return NULL;
    for (int k = 0; k < L * D; k++) {
        int64_t nh[2] = { N, H };
        fx_tensor dst = block(tp->h_n, k * N * H, 2, nh), src = block(tp->sv[k].hs, S * N * H, 2, nh);
        be->mem->copy(&dst, &src, false);
        if (lstm) {
            dst = block(tp->c_n, k * N * H, 2, nh);
            src = block(tp->sv[k].cs, S * N * H, 2, nh);
            be->mem->copy(&dst, &src, false);
        }
    }

    /* One record for the stack. Its three outputs get their gradient
     * buffers now, so that the backward runs whichever of them the loss
     * used (the tape only looks at the first). */
    int nin = 3 + 4 * L * D;
    fx_tensor **in = fx__ctx_alloc_meta(ctx, (size_t)nin * sizeof *in);
    if (!in)
        return NULL;
    in[0] = x;
    in[1] = h0;
    in[2] = c0;
    for (int k = 0; k < L * D; k++) {
        in[3 + 4 * k] = tp->w[k].w_ih;
        in[4 + 4 * k] = tp->w[k].w_hh;
        in[5 + 4 * k] = tp->w[k].b_ih;
        in[6 + 4 * k] = tp->w[k].b_hh;
    }
    fx_node *node = fx__record(ctx, mode_name(spec->mode), recurrent_backward, tp->y, nin, in);
    if (node) {
        node->i[0] = (int64_t)(intptr_t)tp;
        fx_tensor *outs[3] = { tp->y, tp->h_n, tp->c_n };
        for (int i = 0; i < 3; i++) {
            if (!outs[i])
                continue;
            if (!(outs[i]->grad = fx_zeros(ctx, FX_F32, outs[i]->ndim, outs[i]->shape)))
                return NULL;
            outs[i]->flags |= FX_TENSOR_REQUIRES_GRAD;
        }
    } else if (fx_ctx_status(ctx) != FX_OK) {
        return NULL;
    }
    if (h_n)
        *h_n = tp->h_n;
    if (c_n)
        *c_n = tp->c_n;
    return tp->y;
}

/* ------------------------------------------------------------- layers */

#define RECURRENT_MAGIC 0x726e6e31u /* "rnn1": marks the data of our layers */

/* A recurrent layer's configuration, with direct pointers to its weights
 * (owned by the layer's parameter store) so a forward does no lookup. */
typedef struct {
    uint32_t magic;
    fx_rnn_mode mode;
    int num_layers;
    bool bidirectional;
    fx_rnn_weights *w; /* [num_layers * D] */
} recurrent_data;

static void recurrent_data_free(void *p)
{
    recurrent_data *d = p;
    if (d)
        free(d->w);
    free(d);
}

static fx_tensor *recurrent_layer_forward(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    return fx_recurrent_forward(self, ctx, x, NULL, NULL, NULL, NULL, NULL);
}

fx_tensor *fx_recurrent_forward(fx_layer *layer, fx_ctx *ctx, fx_tensor *x, fx_tensor *lengths,
                                fx_tensor *h0, fx_tensor *c0, fx_tensor **h_n, fx_tensor **c_n)
{
    if (h_n)
        *h_n = NULL;
    if (c_n)
        *c_n = NULL;
    if (!ctx)
        return NULL;
    /* Our layers, and only they, have weight_hh_l0 and data marked as ours. */
    recurrent_data *d = fx_layer_param(layer, "weight_hh_l0") ? fx_layer_data(layer) : NULL;
    if (!d || d->magic != RECURRENT_MAGIC)
        return fx_ctx_fail(ctx, FX_ERR_ARG, "recurrent_forward: layer '%s' is not an RNN, GRU "
                           "or LSTM layer", layer ? fx_layer_name(layer) : "(null)");
    fx_recurrent_spec spec = { .mode = d->mode, .num_layers = d->num_layers,
                               .bidirectional = d->bidirectional, .weights = d->w,
                               .name = fx_layer_name(layer) };
    return fx_recurrent(ctx, &spec, x, lengths, h0, c0, h_n, c_n);
}

/* Makes the layer and its parameters, in PyTorch's order (per layer, per
 * direction: weight_ih, weight_hh, bias_ih, bias_hh), all U(-k, k) with k =
 * 1/sqrt(H). */
static fx_layer *recurrent_create(const char *name, fx_rnn_mode mode, int64_t in, int64_t H,
                                  const fx_recurrent_opts *o, fx_rng *rng)
{
    fx_recurrent_opts opts = o ? *o : (fx_recurrent_opts){ 0 };
    int L = opts.num_layers ? opts.num_layers : 1, D = opts.bidirectional ? 2 : 1;
    if (in < 1 || H < 1 || L < 1 || !rng)
        return NULL;
    if (mode == FX_RNN_TANH && opts.relu)
        mode = FX_RNN_RELU;
    fx_layer *l = fx_layer_create(name ? name : mode_name(mode), recurrent_layer_forward);
    recurrent_data *d = calloc(1, sizeof *d);
    fx_rnn_weights *w = calloc((size_t)(L * D), sizeof *w);
    if (!l || !d || !w) {
        free(w);
        free(d);
        fx_layer_free(l);
        return NULL;
    }
    *d = (recurrent_data){ RECURRENT_MAGIC, mode, L, opts.bidirectional, w };
    fx_layer_set_data(l, d, recurrent_data_free);
    double k = 1.0 / sqrt((double)H);
    int64_t GH = mode_gates(mode) * H;
    for (int layer = 0; layer < L; layer++) {
        for (int dir = 0; dir < D; dir++) {
            fx_rnn_weights *p = &w[layer * D + dir];
            int64_t width = layer ? D * H : in;
            const char *what[4] = { "weight_ih", "weight_hh", "bias_ih", "bias_hh" };
            fx_tensor **slot[4] = { &p->w_ih, &p->w_hh, &p->b_ih, &p->b_hh };
            for (int i = 0; i < (opts.no_bias ? 2 : 4); i++) {
                char pname[48];
                int64_t shape[2] = { GH, i == 0 ? width : H };
                fx_tensor *t = fx_param_create(opts.device, i < 2 ? 2 : 1, shape,
                                               FX_INIT_UNIFORM, -k, k, rng);
                if (fx_layer_add_param(l, param_name(pname, sizeof pname, what[i], layer, dir),
                                       t) != FX_OK) {
                    fx_layer_free(l);
                    return NULL;
                }
                *slot[i] = t;
            }
        }
    }
    return l;
}

fx_layer *fx_rnn_create(const char *name, int64_t input_size, int64_t hidden_size,
                        const fx_recurrent_opts *o, fx_rng *rng)
{
    return recurrent_create(name, FX_RNN_TANH, input_size, hidden_size, o, rng);
}

fx_layer *fx_gru_create(const char *name, int64_t input_size, int64_t hidden_size,
                        const fx_recurrent_opts *o, fx_rng *rng)
{
    return recurrent_create(name, FX_RNN_GRU, input_size, hidden_size, o, rng);
}

fx_layer *fx_lstm_create(const char *name, int64_t input_size, int64_t hidden_size,
                         const fx_recurrent_opts *o, fx_rng *rng)
{
    return recurrent_create(name, FX_RNN_LSTM, input_size, hidden_size, o, rng);
}
