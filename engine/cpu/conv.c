/*
 * conv.c - CPU kernels: convolution by im2col + sgemm, and pooling.
 *
 * Convolution. For each sample and group, the input patches are unrolled
 * into a column matrix col [Kc, L] (Kc = C/groups * KH * KW taps, L = OH*OW
 * output positions) and the convolution becomes products with the group's
 * weight W_g [Og, Kc]:
 *
 *     forward          y_g   = W_g col            (Og x L)
 *     backward data    dcol  = W_g^T dy_g, then col2im adds dcol into dx
 *     backward weight  dW_g += dy_g col^T
 *
 * A 1x1 convolution with stride 1 and no padding needs no unrolling: col is
 * the input itself. The column buffer of one sample (a few hundred KB for
 * usual layers) stays in cache between its unrolling and its product.
 *
 * Threads. With at least as many samples as threads, the batch is split into
 * one contiguous run of samples per thread, each with its own column buffer
 * (and, for the weight gradient, its own partial sum, added up in thread
 * order at the end so results do not depend on scheduling); the products
 * run single-threaded inside. With fewer samples (inference on one image),
 * samples run in turn and each step is split instead: im2col over rows,
 * col2im over channels, the products over cpu_gemm's threads.
 */
#include "cpu.h"

#include <cblas.h>
#include <stdint.h>

/* Sizes derived from a geometry. direct: col is the input itself. */
typedef struct {
    int64_t cg, og, kc, l, hw;
    bool direct;
} conv_dims;

static conv_dims dims_of(const fx_conv_geom *g)
{
    conv_dims d;
    d.cg = g->c / g->groups;
    d.og = g->o / g->groups;
    d.kc = d.cg * g->kh * g->kw;
    d.l = g->oh * g->ow;
    d.hw = g->h * g->w;
    d.direct = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 &&
               g->pw == 0 && g->oh == g->h && g->ow == g->w;
    return d;
}

/* Threads that get a run of samples each: all of them when every thread gets
 * a sample, else 1 (the per-sample steps are split instead). */
static int sample_threads(const fx_conv_geom *g)
{
    return g->n >= fx__num_threads ? fx__num_threads : 1;
}

static int64_t cpu_conv2d_workspace(const fx_conv_geom *g)
{
    conv_dims d = dims_of(g);
    int64_t nt = fx__num_threads, col = d.direct ? 0 : d.kc * d.l;
    /* per-thread column buffers + partial weight gradients of threads 1.. */
    return nt * col + (nt - 1) * g->o * d.kc;
}

/* C = op(A) op(B) + beta C on packed row-major matrices, on this thread. */
static void sgemm1(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                   const float *B, float beta, float *C)
{
    int lda = (int)(ta ? M : K), ldb = (int)(tb ? K : N);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, 1.0f, A, lda > 0 ? lda : 1, B, ldb > 0 ? ldb : 1, beta,
                C, N > 0 ? (int)N : 1);
}

/* A stack view of base's storage starting at p, so cpu_gemm (which takes
 * tensors) can run on pointers into the tensors and workspace. */
static fx_tensor view_at(const fx_tensor *base, const float *p)
{
    fx_tensor v = *base;
    v.offset = p - (const float *)base->storage->ptr;
    return v;
}

/* The same product either on this thread or split over every thread by
 * cpu_gemm; the base tensors only name the storages A, B and C live in. */
static void gemm(bool par, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                 const fx_tensor *ta_base, const float *A, const fx_tensor *tb_base,
                 const float *B, float beta, const fx_tensor *tc_base, float *C)
{
    if (!par) {
        sgemm1(ta, tb, M, N, K, A, B, beta, C);
        return;
    }
    fx_tensor a = view_at(ta_base, A), b = view_at(tb_base, B), c = view_at(tc_base, C);
    cpu_gemm(1, ta, tb, M, N, K, 1.0f, &a, 0, &b, 0, beta, &c, 0);
}

/* The output columns j with 0 <= j*s + off < n (an image row seen from an
 * output row), as [*j0, *j1) within [0, on). */
static void valid_range(int64_t off, int64_t s, int64_t n, int64_t on, int64_t *j0, int64_t *j1)
{
    int64_t lo = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t hi = n - 1 - off < 0 ? 0 : (n - 1 - off) / s + 1;
    *j0 = lo < on ? lo : on;
    *j1 = hi < on ? hi : on;
    if (*j1 < *j0)
        *j1 = *j0;
}

/* Rows [r0, r1) of one group's column matrix: row (c, a, b) holds, for each
 * output position (i, j), x[c, i*SH - PH + a*DH, j*SW - PW + b*DW], or 0
 * outside the image. x points at the group's first channel. */
static void im2col_rows(const fx_conv_geom *g, const float *x, float *col, int64_t r0,
                        int64_t r1)
{
    int64_t taps = g->kh * g->kw, l = g->oh * g->ow;
    for (int64_t r = r0; r < r1; r++) {
        int64_t c = r / taps, a = r % taps / g->kw, b = r % g->kw;
        const float *xc = x + c * g->h * g->w;
        float *dst = col + r * l;
        int64_t off = b * g->dw - g->pw, j0, j1;
        valid_range(off, g->sw, g->w, g->ow, &j0, &j1);
        for (int64_t i = 0; i < g->oh; i++, dst += g->ow) {
            int64_t iy = i * g->sh - g->ph + a * g->dh;
            if (iy < 0 || iy >= g->h) {
                memset(dst, 0, (size_t)g->ow * sizeof(float));
                continue;
            }
            const float *src = xc + iy * g->w;
            for (int64_t j = 0; j < j0; j++)
                dst[j] = 0.0f;
            if (g->sw == 1)
                memcpy(dst + j0, src + j0 + off, (size_t)(j1 - j0) * sizeof(float));
            else
                for (int64_t j = j0; j < j1; j++)
                    dst[j] = src[j * g->sw + off];
            for (int64_t j = j1; j < g->ow; j++)
                dst[j] = 0.0f;
        }
    }
}

/* The adjoint of im2col for channels [c0, c1): adds every column entry back
 * into the input position it was copied from. dx points at the group's first
 * channel; channels are independent, so they can be split over threads. */
static void col2im_channels(const fx_conv_geom *g, const float *col, float *dx, int64_t c0,
                            int64_t c1)
{
    int64_t l = g->oh * g->ow;
    for (int64_t c = c0; c < c1; c++) {
        float *dxc = dx + c * g->h * g->w;
        for (int64_t a = 0; a < g->kh; a++)
            for (int64_t b = 0; b < g->kw; b++) {
                const float *src = col + ((c * g->kh + a) * g->kw + b) * l;
                int64_t off = b * g->dw - g->pw, j0, j1;
                valid_range(off, g->sw, g->w, g->ow, &j0, &j1);
                for (int64_t i = 0; i < g->oh; i++, src += g->ow) {
                    int64_t iy = i * g->sh - g->ph + a * g->dh;
                    if (iy < 0 || iy >= g->h)
                        continue;
                    float *dst = dxc + iy * g->w;
                    if (g->sw == 1)
                        for (int64_t j = j0; j < j1; j++)
                            dst[j + off] += src[j];
                    else
                        for (int64_t j = j0; j < j1; j++)
                            dst[j * g->sw + off] += src[j];
                }
            }
    }
}

/* Unrolls one sample's group into col, split over rows when par. */
static void im2col(bool par, const fx_conv_geom *g, int64_t kc, const float *x, float *col)
{
    if (par)
        FX_PFOR(kc * g->oh * g->ow, r, kc, im2col_rows(g, x, col, r, r + 1););
    else
        im2col_rows(g, x, col, 0, kc);
}

static void col2im(bool par, const fx_conv_geom *g, int64_t cg, const float *col, float *dx)
{
    if (par)
        FX_PFOR(cg * g->kh * g->kw * g->oh * g->ow, c, cg, col2im_channels(g, col, dx, c, c + 1););
    else
        col2im_channels(g, col, dx, 0, cg);
}

/* Which product a per-sample step computes. */
typedef enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHT } conv_pass;

/* The operands of one kernel call. For CONV_FWD: x, w, b -> y; for
 * CONV_BWD_DATA: dy (in y), w -> dx (in x); for CONV_BWD_WEIGHT: x, dy (in
 * y) -> dw (in w). */
typedef struct {
    const fx_conv_geom *g;
    conv_dims d;
    conv_pass pass;
    const fx_tensor *x, *w, *y, *ws;
    const float *b;
    bool accumulate;
} conv_job;

/*
 * One sample's work for a pass. col is this thread's column buffer; dw is
 * where this thread's weight gradient goes (beta says whether to add to it);
 * par splits each step over the threads (only when samples run in turn).
 */
static void conv_sample(const conv_job *j, int64_t n, float *col, float *dw, float beta,
                        bool par)
{
    const fx_conv_geom *g = j->g;
    const conv_dims *d = &j->d;
    float *X = fx_f32(j->x), *W = fx_f32(j->w), *Y = fx_f32(j->y);
    float *xn = X + n * g->c * d->hw, *yn = Y + n * g->o * d->l;
    if (j->pass == CONV_FWD && j->b) { /* start from the bias, then add the products */
        for (int64_t o = 0; o < g->o; o++) {
            float *row = yn + o * d->l, bo = j->b[o];
            if (j->accumulate)
                for (int64_t i = 0; i < d->l; i++)
                    row[i] += bo;
            else
                for (int64_t i = 0; i < d->l; i++)
                    row[i] = bo;
        }
    }
    float fwd_beta = (j->b || j->accumulate) ? 1.0f : 0.0f;
    for (int64_t gi = 0; gi < g->groups; gi++) {
        float *xg = xn + gi * d->cg * d->hw, *yg = yn + gi * d->og * d->l;
        float *wg = W + gi * d->og * d->kc;
        switch (j->pass) {
        case CONV_FWD: { /* y_g (Og x L) = W_g (Og x Kc) col (Kc x L) */
            const float *c = d->direct ? xg : col;
            if (!d->direct)
                im2col(par, g, d->kc, xg, col);
            gemm(par, false, false, d->og, d->l, d->kc, j->w, wg, d->direct ? j->x : j->ws, c,
                 fwd_beta, j->y, yg);
            break;
        }
        case CONV_BWD_DATA: /* dcol (Kc x L) = W_g^T (Kc x Og) dy_g (Og x L) */
            if (d->direct) {
                gemm(par, true, false, d->kc, d->l, d->og, j->w, wg, j->y, yg, 1.0f, j->x, xg);
            } else {
                gemm(par, true, false, d->kc, d->l, d->og, j->w, wg, j->y, yg, 0.0f, j->ws, col);
                col2im(par, g, d->cg, col, xg);
            }
            break;
        case CONV_BWD_WEIGHT: { /* dW_g (Og x Kc) += dy_g (Og x L) col^T (L x Kc) */
            const float *c = d->direct ? xg : col;
            if (!d->direct)
                im2col(par, g, d->kc, xg, col);
            gemm(par, false, true, d->og, d->kc, d->l, j->y, yg, d->direct ? j->x : j->ws, c,
                 beta, dw == W ? j->w : j->ws, dw + gi * d->og * d->kc);
            break;
        }
        }
    }
}

/*
 * Runs a pass over the batch. With nt > 1 sample threads, thread t takes
 * samples [t*N/nt, (t+1)*N/nt) with column buffer t; for the weight
 * gradient thread 0 adds into dw itself and thread t > 0 into partial t,
 * which are added to dw in order afterwards.
 */
static void conv_run(const conv_job *j)
{
    const fx_conv_geom *g = j->g;
    int64_t nt = sample_threads(g), colsz = j->d.direct ? 0 : j->d.kc * j->d.l;
    int64_t wsz = g->o * j->d.kc;
    float *ws = j->ws ? fx_f32(j->ws) : NULL, *dw = fx_f32(j->w);
    float *parts = ws ? ws + fx__num_threads * colsz : NULL;
    bool weight = j->pass == CONV_BWD_WEIGHT;
    if (nt == 1) {
        bool par = fx__num_threads > 1;
        for (int64_t n = 0; n < g->n; n++)
            conv_sample(j, n, ws, dw, 1.0f, par);
        return;
    }
    double flops = 2.0 * (double)g->n * g->o * j->d.kc * j->d.l;
    FX_PFOR(flops, t, nt, {
        int64_t lo = t * g->n / nt, hi = (t + 1) * g->n / nt;
        float *mine = t == 0 || !weight ? dw : parts + (t - 1) * wsz;
        float *col = ws ? ws + t * colsz : NULL;
        for (int64_t n = lo; n < hi; n++)
            conv_sample(j, n, col, mine, (t == 0 || n > lo) ? 1.0f : 0.0f, false);
        if (weight && t > 0 && hi == lo)
            memset(mine, 0, (size_t)wsz * sizeof(float));
    });
    if (weight)
        for (int64_t t = 1; t < nt; t++) {
            const float *p = parts + (t - 1) * wsz;
            for (int64_t i = 0; i < wsz; i++)
                dw[i] += p[i];
        }
}

static void cpu_conv2d(const fx_conv_geom *g, const fx_tensor *x, const fx_tensor *w,
                const fx_tensor *b, fx_tensor *y, bool accumulate, fx_tensor *ws)
{
    conv_job j = { g, dims_of(g), CONV_FWD, x, w, y, ws, b ? fx_f32(b) : NULL, accumulate };
    conv_run(&j);
}

static void cpu_conv2d_backward_data(const fx_conv_geom *g, const fx_tensor *dy, const fx_tensor *w,
                              fx_tensor *dx, fx_tensor *ws)
{
    conv_job j = { g, dims_of(g), CONV_BWD_DATA, dx, w, dy, ws, NULL, true };
    conv_run(&j);
}

static void cpu_conv2d_backward_weight(const fx_conv_geom *g, const fx_tensor *x, const fx_tensor *dy,
                                fx_tensor *dw, fx_tensor *ws)
{
    conv_job j = { g, dims_of(g), CONV_BWD_WEIGHT, x, dw, dy, ws, NULL, true };
    conv_run(&j);
}

static void cpu_channel_bias_fill(const fx_tensor *b, fx_tensor *y, int64_t n, int64_t c, int64_t l)
{
    const float *B = b ? fx_f32(b) : NULL;
    float *Y = fx_f32(y);
    FX_PFOR(n * c * l, p, n * c, {
        float v = B ? B[p % c] : 0.0f, *row = Y + p * l;
        for (int64_t i = 0; i < l; i++)
            row[i] = v;
    });
}

/* Per channel: float sums of each row (vectorised), added up in double. */
static void cpu_channel_bias_backward(const fx_tensor *dy, fx_tensor *db, int64_t n, int64_t c,
                               int64_t l)
{
    const float *D = fx_f32(dy);
    float *G = fx_f32(db);
    FX_PFOR(n * c * l, ch, c, {
        double s = 0.0;
        for (int64_t k = 0; k < n; k++) {
            const float *row = D + (k * c + ch) * l;
            float r = 0.0f;
            for (int64_t i = 0; i < l; i++)
                r += row[i];
            s += r;
        }
        G[ch] += (float)s;
    });
}

/* ------------------------------------------------------------- pooling */

/* The window of output index i along one axis: the image range [*lo, *hi)
 * and the number of positions it spans counting padding (*span, the
 * divisor of an average that counts padding). */
static inline void pool_window(int64_t i, int64_t n, int64_t on, int64_t k, int64_t s, int64_t p,
                               bool adaptive, int64_t *lo, int64_t *hi, int64_t *span)
{
    if (adaptive) {
        *lo = i * n / on;
        *hi = ((i + 1) * n + on - 1) / on;
        *span = *hi - *lo;
        return;
    }
    int64_t a = i * s - p, b = a + k < n + p ? a + k : n + p;
    *span = b - a;
    *lo = a > 0 ? a : 0;
    *hi = b < n ? b : n;
}

/* One plane of max pooling; am (may be NULL) gets each maximum's index. A
 * NaN wins, as in PyTorch, so it propagates. */
static void maxpool_plane(const fx_pool_geom *g, const float *x, float *y, int32_t *am)
{
    for (int64_t i = 0; i < g->oh; i++) {
        int64_t r0, r1, rs;
        pool_window(i, g->h, g->oh, g->kh, g->sh, g->ph, g->adaptive, &r0, &r1, &rs);
        for (int64_t j = 0; j < g->ow; j++) {
            int64_t c0, c1, cs;
            pool_window(j, g->w, g->ow, g->kw, g->sw, g->pw, g->adaptive, &c0, &c1, &cs);
            int64_t best_i = r0 * g->w + c0;
            float best = x[best_i];
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) {
                    float v = x[r * g->w + c];
                    if (v > best || (v != v && best == best)) {
                        best = v;
                        best_i = r * g->w + c;
                    }
                }
            y[i * g->ow + j] = best;
            if (am)
                am[i * g->ow + j] = (int32_t)best_i;
        }
    }
}

/* Max pooling 2x2, stride 2, no padding: the common case, without window
 * bookkeeping. */
static void maxpool2_plane(const fx_pool_geom *g, const float *x, float *y, int32_t *am)
{
    for (int64_t i = 0; i < g->oh; i++) {
        const float *r0 = x + 2 * i * g->w, *r1 = r0 + g->w;
        float *yr = y + i * g->ow;
        int32_t *ar = am ? am + i * g->ow : NULL;
        for (int64_t j = 0; j < g->ow; j++) {
            float a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
            int64_t k = 2 * j;
            float m = a;
            if (b > m || (b != b && m == m))
                m = b, k = 2 * j + 1;
            if (c > m || (c != c && m == m))
                m = c, k = g->w + 2 * j;
            if (d > m || (d != d && m == m))
                m = d, k = g->w + 2 * j + 1;
            yr[j] = m;
            if (ar)
                ar[j] = (int32_t)(2 * i * g->w + k);
        }
    }
}

/* Average pooling of one plane (dy == NULL), or its backward: dx += dy /
 * count spread over each window (x is then dx). */
static void avgpool_plane(const fx_pool_geom *g, float *x, float *y, const float *dy)
{
    for (int64_t i = 0; i < g->oh; i++) {
        int64_t r0, r1, rs;
        pool_window(i, g->h, g->oh, g->kh, g->sh, g->ph, g->adaptive, &r0, &r1, &rs);
        for (int64_t j = 0; j < g->ow; j++) {
            int64_t c0, c1, cs;
            pool_window(j, g->w, g->ow, g->kw, g->sw, g->pw, g->adaptive, &c0, &c1, &cs);
            int64_t cnt = g->exclude_pad ? (r1 - r0) * (c1 - c0) : rs * cs;
            float inv = 1.0f / (float)cnt;
            if (dy) {
                float v = dy[i * g->ow + j] * inv;
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++)
                        x[r * g->w + c] += v;
            } else {
                float s = 0.0f;
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++)
                        s += x[r * g->w + c];
                y[i * g->ow + j] = s * inv;
            }
        }
    }
}

static bool is_pool2(const fx_pool_geom *g)
{
    return !g->adaptive && g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 &&
           g->pw == 0;
}

static void cpu_pool2d(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *x, fx_tensor *y,
                fx_tensor *argmax)
{
    float *X = fx_f32(x), *Y = fx_f32(y);
    int32_t *A = argmax ? (int32_t *)fx_data(argmax) : NULL;
    int64_t in = g->h * g->w, out = g->oh * g->ow;
    bool two = is_pool2(g);
    FX_PFOR(g->planes * (in + out), p, g->planes, {
        int32_t *ap = A ? A + p * out : NULL;
        if (kind == FX_POOL_AVG)
            avgpool_plane(g, X + p * in, Y + p * out, NULL);
        else if (two)
            maxpool2_plane(g, X + p * in, Y + p * out, ap);
        else
            maxpool_plane(g, X + p * in, Y + p * out, ap);
    });
}

static void cpu_pool2d_backward(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                         const fx_tensor *argmax, fx_tensor *dx)
{
    const float *D = fx_f32(dy);
    float *DX = fx_f32(dx);
    const int32_t *A = argmax ? (const int32_t *)fx_data(argmax) : NULL;
    int64_t in = g->h * g->w, out = g->oh * g->ow;
    FX_PFOR(g->planes * (in + out), p, g->planes, {
        const float *dp = D + p * out;
        float *xp = DX + p * in;
        if (kind == FX_POOL_AVG) {
            avgpool_plane(g, xp, NULL, dp);
        } else {
            const int32_t *ap = A + p * out;
            for (int64_t k = 0; k < out; k++)
                xp[ap[k]] += dp[k];
        }
    });
}

const fx_conv_kernels fx_cpu_conv = {
    .conv2d_workspace = cpu_conv2d_workspace,
    .conv2d = cpu_conv2d,
    .conv2d_backward_data = cpu_conv2d_backward_data,
    .conv2d_backward_weight = cpu_conv2d_backward_weight,
    .channel_bias_fill = cpu_channel_bias_fill,
    .channel_bias_backward = cpu_channel_bias_backward,
    .pool2d = cpu_pool2d,
    .pool2d_backward = cpu_pool2d_backward,
};
