/*
 * ops_registry.c - the op test registry: the list of row families and the
 * helpers their references share. See ops_registry.h for what a row is.
 *
 * THE RULE: adding an op = its file + one row. Every public op and layer of
 * the engine (fluxion.h and fx_*.h) has a row in one of the families below,
 * with a reference written from the math, tolerances with their reasons, and
 * cases that keep it differentiable (away from kinks, no ties for max). That
 * row is the one place that checks the op's gradient by finite differences
 * and compares the backends; the op's own test file keeps what is specific
 * to it (error messages, masks, lengths, threads, allocation counts).
 * test_ops prints the number of rows: a new op without a row shows there.
 *
 * Families and the public functions their rows cover:
 *   POINTWISE  fx_neg .. fx_clamp, fx_add/sub/mul/div, fx_where, fx_dropout,
 *              fx_grad_reverse(_create), fx_activate, fx_activation_create
 *   LINEAR     fx_matmul, fx_linear, fx_dense_create, fx_chain_create,
 *              fx_residual_create, fx_parallel_create, fx_heads_create
 *              (fx_layer_forward_multi)
 *   REDUCE     fx_sum, fx_mean, fx_max, fx_softmax, fx_log_softmax
 *   SHAPE      fx_reshape, fx_transpose, fx_permute, fx_contiguous,
 *              fx_concat, fx_slice, fx_split, fx_flatten, fx_index_select,
 *              fx_gather
 *   LOSS       fx_mse_loss, fx_cross_entropy, fx_cross_entropy_soft,
 *              fx_bce_with_logits, fx_ctc_loss
 *   CONV       fx_conv2d, fx_conv1d, fx_conv_transpose2d, fx_maxpool2d,
 *              fx_avgpool2d, fx_adaptive_avgpool2d, fx_global_avgpool2d and
 *              their layers, fx_flatten_create
 *   NORM       fx_batch_norm, fx_layer_norm, fx_group_norm, fx_embedding and
 *              their layers
 *   RNN        fx_recurrent, fx_recurrent_forward, fx_rnn/gru/lstm_create
 *   ATTN       fx_scaled_dot_product_attention,
 *              fx_multihead_attention_create / _forward
 * Not rows: optimizers (no gradient; test_optim), fx_gradcheck itself
 * (test_core), custom layers (fx_layer_create; test_layer).
 */
#include "ops_registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const or_family *or_families(int *n)
{
    static const or_family families[] = {
        { "pointwise", OR_ROWS_POINTWISE, &OR_NROWS_POINTWISE },
        { "linear", OR_ROWS_LINEAR, &OR_NROWS_LINEAR },
        { "reduce", OR_ROWS_REDUCE, &OR_NROWS_REDUCE },
        { "shape", OR_ROWS_SHAPE, &OR_NROWS_SHAPE },
        { "loss", OR_ROWS_LOSS, &OR_NROWS_LOSS },
        { "conv", OR_ROWS_CONV, &OR_NROWS_CONV },
        { "norm", OR_ROWS_NORM, &OR_NROWS_NORM },
        { "rnn", OR_ROWS_RNN, &OR_NROWS_RNN },
        { "attn", OR_ROWS_ATTN, &OR_NROWS_ATTN },
    };
    *n = OR_COUNT(families);
    return families;
}

void or_host_init(or_host *h, int ndim, const int64_t *shape)
{
    h->ndim = ndim;
    h->n = 1;
    for (int d = 0; d < ndim; d++) {
        h->shape[d] = shape[d];
        h->n *= shape[d];
    }
    free(h->v);
    h->v = calloc((size_t)(h->n ? h->n : 1), sizeof *h->v);
}

const or_host *or_param(const or_ref *r, const char *name)
{
    for (int i = 0; i < r->nparams; i++)
        if (strcmp(r->param_names[i], name) == 0)
            return &r->params[i];
    return NULL;
}

int64_t or_offset(int ndim, const int64_t *shape, const int64_t *c)
{
    int64_t off = 0;
    for (int d = 0; d < ndim; d++)
        off = off * shape[d] + c[d];
    return off;
}

void or_coords(int ndim, const int64_t *shape, int64_t i, int64_t *c)
{
    for (int d = ndim - 1; d >= 0; d--) {
        c[d] = i % shape[d];
        i /= shape[d];
    }
}

int64_t or_bcast_index(const int64_t *fs, int fd, const int64_t *ms, int md, int64_t i)
{
    int64_t idx = 0, stride = 1;
    for (int d = fd - 1; d >= 0; d--) {
        int64_t c = i % fs[d];
        i /= fs[d];
        int dm = d - (fd - md);
        if (dm >= 0) {
            if (ms[dm] != 1)
                idx += c * stride;
            stride *= ms[dm];
        }
    }
    return idx;
}

double or_act(double v, fx_activation act)
{
    switch (act) {
    case FX_ACT_RELU: return v > 0 ? v : 0.0;
    case FX_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case FX_ACT_TANH: return tanh(v);
    case FX_ACT_GELU: return 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    case FX_ACT_LEAKY_RELU: return v > 0 ? v : 0.01 * v;
    case FX_ACT_ELU: return v > 0 ? v : exp(v) - 1.0;
    default: return v;
    }
}

void or_softmax(double *v, int64_t n, int64_t stride, bool lg)
{
    double mx = -INFINITY, s = 0.0;
    for (int64_t i = 0; i < n; i++)
        mx = fmax(mx, v[i * stride]);
    for (int64_t i = 0; i < n; i++)
        s += exp(v[i * stride] - mx);
    for (int64_t i = 0; i < n; i++)
        v[i * stride] = lg ? v[i * stride] - mx - log(s) : exp(v[i * stride] - mx) / s;
}

void or_dense(const double *x, int64_t R, int64_t in, const double *w, const double *b,
              int64_t out, fx_activation act, double *y)
{
    for (int64_t r = 0; r < R; r++) {
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int64_t i = 0; i < in; i++)
                s += x[r * in + i] * w[o * in + i];
            y[r * out + o] = act == FX_ACT_SOFTMAX ? s : or_act(s, act);
        }
        if (act == FX_ACT_SOFTMAX)
            or_softmax(y + r * out, out, 1, false);
    }
}

fx_tensor *or_index(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape, const int64_t *v)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    if (dt == FX_I64)
        return fx_tensor_from_host(ctx, FX_I64, ndim, shape, v);
    int32_t w[256];
    if (n > 256)
        return fx_ctx_fail(ctx, FX_ERR_ARG, "or_index: %lld indices (at most 256)", (long long)n);
    for (int64_t i = 0; i < n; i++)
        w[i] = (int32_t)v[i];
    return fx_tensor_from_host(ctx, FX_I32, ndim, shape, w);
}

double *or_dense_named(const or_ref *r, const char *prefix, const double *x, int64_t R,
                       fx_activation act, int64_t *out)
{
    char wn[128], bn[128];
    snprintf(wn, sizeof wn, "%s%sweight", prefix, *prefix ? "." : "");
    snprintf(bn, sizeof bn, "%s%sbias", prefix, *prefix ? "." : "");
    const or_host *w = or_param(r, wn), *b = or_param(r, bn);
    if (!w || w->ndim != 2) {
        *out = 0;
        return NULL;
    }
    *out = w->shape[0];
    double *y = calloc((size_t)(R * w->shape[0] > 0 ? R * w->shape[0] : 1), sizeof *y);
    or_dense(x, R, w->shape[1], w->v, b ? b->v : NULL, w->shape[0], act, y);
    return y;
}

void or_randomise(fx_tensor *t, fx_rng *rng, double scale)
{
    if (!t)
        return;
    int64_t n = fx_tensor_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(scale * fx_rng_normal(rng));
    fx_tensor_copy_from_host(t, v, (size_t)n * sizeof *v);
    free(v);
}

fx_tensor *or_flat_concat(fx_ctx *ctx, int n, fx_tensor **ts)
{
    fx_tensor *flat[8];
    int64_t all = -1;
    if (n > 8)
        return fx_ctx_fail(ctx, FX_ERR_ARG, "or_flat_concat: %d tensors (at most 8)", n);
    for (int i = 0; i < n; i++)
        flat[i] = fx_reshape(ctx, ts[i] ? fx_contiguous(ctx, ts[i]) : NULL, 1, &all);
    return n == 1 ? flat[0] : fx_concat(ctx, n, flat, 0);
}

void or_conv2d(const or_conv *g, const double *x, const double *w, const double *b, double *y,
               int64_t *ohp, int64_t *owp)
{
    int64_t oh = (g->h + 2 * g->ph - g->dh * (g->kh - 1) - 1) / g->sh + 1;
    int64_t ow = (g->w + 2 * g->pw - g->dw * (g->kw - 1) - 1) / g->sw + 1;
    *ohp = oh, *owp = ow;
    if (!y)
        return;
    int64_t cg = g->c / g->groups, og = g->o / g->groups;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t o = 0; o < g->o; o++)
            for (int64_t i = 0; i < oh; i++)
                for (int64_t j = 0; j < ow; j++) {
                    double s = b ? b[o] : 0.0;
                    int64_t gi = o / og;
                    for (int64_t ci = 0; ci < cg; ci++)
                        for (int64_t a = 0; a < g->kh; a++)
                            for (int64_t e = 0; e < g->kw; e++) {
                                int64_t iy = i * g->sh - g->ph + a * g->dh;
                                int64_t ix = j * g->sw - g->pw + e * g->dw;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                                    continue;
                                s += x[((n * g->c + gi * cg + ci) * g->h + iy) * g->w + ix] *
                                     w[((o * cg + ci) * g->kh + a) * g->kw + e];
                            }
                    y[((n * g->o + o) * oh + i) * ow + j] = s;
                }
}

void or_norm(const double *x, int64_t N, int64_t C, int64_t L, int64_t groups, double eps,
             const double *gamma, const double *beta, const double *mean, const double *var,
             double *y)
{
    int64_t S = groups ? N * groups : C;
    double *m = calloc((size_t)S, sizeof *m), *v = calloc((size_t)S, sizeof *v);
    double *cnt = calloc((size_t)S, sizeof *cnt);
#define OR_SET(n, c) (groups ? (n) * groups + (c) / (C / groups) : (c))
    for (int pass = 0; pass < 2; pass++) /* two passes: the mean, then the variance */
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t l = 0; l < L; l++) {
                    int64_t s = OR_SET(n, c);
                    double xv = x[(n * C + c) * L + l];
                    if (pass == 0) {
                        m[s] += xv;
                        cnt[s] += 1;
                    } else {
                        v[s] += (xv - m[s] / cnt[s]) * (xv - m[s] / cnt[s]);
                    }
                }
    for (int64_t s = 0; s < S; s++) {
        m[s] = mean ? mean[s] : m[s] / cnt[s];
        v[s] = var ? var[s] : v[s] / cnt[s];
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t l = 0; l < L; l++) {
                int64_t s = OR_SET(n, c), i = (n * C + c) * L + l;
                y[i] = (x[i] - m[s]) / sqrt(v[s] + eps) * (gamma ? gamma[c] : 1.0) +
                       (beta ? beta[c] : 0.0);
            }
#undef OR_SET
    free(m);
    free(v);
    free(cnt);
}
