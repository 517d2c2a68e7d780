/* norm.c - CPU kernels: batch/layer/group normalisation and embedding.
 *
 * Normalisations see x as contiguous (N, C, L) (kern_norm.h). Statistics
 * come from one pass of shifted sums: with K an element of the set,
 * d = x - K, mean = K + sum(d)/M and var = sum(d^2)/M - (sum(d)/M)^2, which
 * does not cancel catastrophically when the mean is large next to the
 * spread. Sums run in float lanes (so they vectorise) flushed into double
 * every few hundred elements, so their error does not grow with the count.
 *
 * Two layouts get their own loops:
 *   L > 1:  each (n, c) is a contiguous run of L elements; a task owns a
 *           channel (batch norm) or a (sample, group) row (group norm);
 *   L == 1: channels are contiguous in each row, so batch norm and the
 *           per-channel sums of group/layer norm work on blocks of
 *           channels, streaming the rows with a vector of accumulators.
 * Every task writes only its own channels or rows, so no loop races, and
 * the sums do not depend on the thread count. */
#include "cpu.h"

#define LANES  16
#define FLUSH  512 /* elements per float partial sum before it goes to double */
#define CBLOCK 64  /* channels per task in the L == 1 loops */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Over a contiguous run of n elements: s1 = sum (p - kp) * w and
 * s2 = sum (p - kp) * w * (q - kq), with w NULL meaning 1. Forward
 * statistics use p = q = x and kp = kq = a shift; backward sums use p = dy,
 * kp = 0, q = x, kq = the mean (and w = gamma for layer norm). */
static void run_sums(const float *p, float kp, const float *w, const float *q, float kq, int64_t n,
                     double *s1, double *s2)
{
    double t1 = 0.0, t2 = 0.0;
    for (int64_t b = 0; b < n; b += FLUSH) {
        int64_t e = min64(n, b + FLUSH), i = b;
        float a1[LANES] = {0}, a2[LANES] = {0};
        for (; i + LANES <= e; i += LANES)
            for (int j = 0; j < LANES; j++) {
                float v = (p[i + j] - kp) * (w ? w[i + j] : 1.0f);
                a1[j] += v;
                a2[j] += v * (q[i + j] - kq);
            }
        for (; i < e; i++) {
            float v = (p[i] - kp) * (w ? w[i] : 1.0f);
            t1 += v;
            t2 += (double)v * (q[i] - kq);
        }
        for (int j = 0; j < LANES; j++) {
            t1 += a1[j];
            t2 += a2[j];
        }
    }
    *s1 = t1;
    *s2 = t2;
}

/* mean and rstd of a set of M elements from its shifted sums s1 = sum(x - K)
 * and s2 = sum((x - K)^2); var (biased) is returned for the running
 * statistics. */
static inline void finish_stats(double s1, double s2, int64_t M, float K, float eps, float *mean,
                                float *rstd, double *var)
{
    double mu = s1 / (double)M, v = s2 / (double)M - mu * mu;
    if (v < 0.0)
        v = 0.0;
    *mean = (float)(K + mu);
    *rstd = (float)(1.0 / sqrt(v + (double)eps));
    if (var)
        *var = v;
}

/* y[i] = (x[i] - m) * r * g[i] + b[i] over a run of channels (L == 1), with
 * m and r one value per channel (per_channel: batch norm) or one for the
 * whole run (group and layer norm: m[0], r[0]); g, b NULL mean 1 and 0. */
static inline void affine_channels(const float *x, float *y, int64_t n, const float *m,
                                   const float *r, bool per_channel, const float *g, const float *b)
{
    if (per_channel) {
        for (int64_t i = 0; i < n; i++)
            y[i] = (x[i] - m[i]) * (r[i] * (g ? g[i] : 1.0f)) + (b ? b[i] : 0.0f);
    } else {
        float m0 = m[0], r0 = r[0];
        for (int64_t i = 0; i < n; i++)
            y[i] = (x[i] - m0) * (r0 * (g ? g[i] : 1.0f)) + (b ? b[i] : 0.0f);
    }
}

/* y[i] = (x[i] - m) * a + b over a run of one channel (L > 1). */
static inline void affine_run(const float *x, float *y, int64_t n, float m, float a, float b)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (x[i] - m) * a + b;
}

/* dx[i] += a * dy[i] - c1 - (x[i] - m) * c2 over a run: the gradient of a
 * normalisation once the set's sums are known (c1 = c2 = 0 for a fixed
 * affine map). */
static inline void dx_run(const float *dy, const float *x, float *dx, int64_t n, float a, float m,
                          float c1, float c2)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] += a * dy[i] - c1 - (x[i] - m) * c2;
}

/* ------------------------------------------------------------ batch norm */

/* Per-channel sums for (N, C) rows (L == 1) over channels [c0, c0 + w):
 * s1[k] = sum_n (p - shift*m[c]) and s2[k] = sum_n (p - shift*m[c]) *
 * (q - m[c]) with c = c0 + k; shift says whether p is shifted too. Rows
 * stream through a block of float accumulators, flushed to double every 64
 * rows so that long batches keep their precision. */
static void bn_col_sums(const float *p, bool shift, const float *q, const float *m, int64_t N,
                        int64_t C, int64_t c0, int64_t w, double *s1, double *s2)
{
    for (int64_t k = 0; k < w; k++)
        s1[k] = s2[k] = 0.0;
    const int64_t rows = 64;
    for (int64_t n0 = 0; n0 < N; n0 += rows) {
        float a1[CBLOCK] = {0}, a2[CBLOCK] = {0};
        for (int64_t n = n0; n < min64(N, n0 + rows); n++) {
            const float *pr = p + n * C + c0, *qr = q + n * C + c0, *mr = m + c0;
            for (int64_t k = 0; k < w; k++) {
                float v = pr[k] - (shift ? mr[k] : 0.0f);
                a1[k] += v;
                a2[k] += v * (qr[k] - mr[k]);
            }
        }
        for (int64_t k = 0; k < w; k++) {
            s1[k] += a1[k];
            s2[k] += a2[k];
        }
    }
}

/* Batch statistics of channel c from its shifted sums; updates the running
 * statistics (unbiased variance) when there are some. */
static inline void bn_finish(int64_t c, double s1, double s2, int64_t M, float K, float eps,
                             float momentum, float *mean, float *rstd, float *rm, float *rv)
{
    double var;
    finish_stats(s1, s2, M, K, eps, &mean[c], &rstd[c], &var);
    if (rm) {
        rm[c] = (1.0f - momentum) * rm[c] + momentum * mean[c];
        rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * var * (double)M / (double)(M - 1));
    }
}

/* Batch norm forward (kern_norm.h). Training computes the statistics
 * channel by channel (blocks of channels when L == 1), then every row is
 * normalised; the shift K of a channel is its first element, parked in
 * mean[c] while the sums run. */
static void cpu_batch_norm(const fx_tensor *x, const fx_tensor *gamma, const fx_tensor *beta,
                           fx_tensor *running_mean, fx_tensor *running_var, bool training,
                           float momentum, float eps, fx_tensor *mean, fx_tensor *rstd,
                           fx_tensor *y)
{
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2], M = N * L, work = N * C * L;
    const float *X = fx_f32(x), *G = gamma ? fx_f32(gamma) : NULL, *B = beta ? fx_f32(beta) : NULL;
    float *Y = fx_f32(y), *Mn = fx_f32(mean), *R = fx_f32(rstd);
    float *rm = running_mean ? fx_f32(running_mean) : NULL;
    float *rv = running_var ? fx_f32(running_var) : NULL;
    if (training && L == 1) {
        int64_t nb = (C + CBLOCK - 1) / CBLOCK;
        FX_PFOR(work, t, nb, int64_t c0 = t * CBLOCK, w = min64(CBLOCK, C - c0);
                double s1[CBLOCK], s2[CBLOCK]; memcpy(Mn + c0, X + c0, (size_t)w * sizeof(float));
                bn_col_sums(X, true, X, Mn, N, C, c0, w, s1, s2); for (int64_t k = 0; k < w; k++)
                    bn_finish(c0 + k, s1[k], s2[k], M, Mn[c0 + k], eps, momentum, Mn, R, rm, rv););
    } else if (training) {
        FX_PFOR(
            work, c, C, float K = X[c * L]; double s1 = 0.0, s2 = 0.0;
            for (int64_t n = 0; n < N; n++) {
                double a, b;
                const float *xr = X + (n * C + c) * L;
                run_sums(xr, K, NULL, xr, K, L, &a, &b);
                s1 += a;
                s2 += b;
            } bn_finish(c, s1, s2, M, K, eps, momentum, Mn, R, rm, rv););
    } else {
        for (int64_t c = 0; c < C; c++) {
            Mn[c] = rm[c];
            R[c] = (float)(1.0 / sqrt((double)rv[c] + (double)eps));
        }
    }
    if (L == 1)
        FX_PFOR(work, n, N, affine_channels(X + n * C, Y + n * C, C, Mn, R, true, G, B););
    else
        FX_PFOR(work, r, N * C, int64_t c = r % C; affine_run(
                    X + r * L, Y + r * L, L, Mn[c], R[c] * (G ? G[c] : 1.0f), B ? B[c] : 0.0f););
}

/* Gradient of channel c from its sums s1 = sum dy, s2 = sum dy * (x - mean)
 * over the M elements: dbeta += s1, dgamma += s2 * rstd, and the
 * coefficients of dx = a * dy - c1 - (x - mean) * c2 (training: through the
 * batch statistics; otherwise the affine map alone). */
static inline void bn_grad_coef(int64_t c, double s1, double s2, int64_t M, const float *G,
                                const float *R, bool training, float *dgamma, float *dbeta,
                                float *a, float *c1, float *c2)
{
    double r = R[c], g = G ? G[c] : 1.0;
    if (dbeta)
        dbeta[c] += (float)s1;
    if (dgamma)
        dgamma[c] += (float)(s2 * r);
    *a = (float)(g * r);
    *c1 = training ? (float)(g * r * s1 / (double)M) : 0.0f;
    *c2 = training ? (float)(g * r * r * r * s2 / (double)M) : 0.0f;
}

/* Batch norm backward (kern_norm.h): a task owns a channel (or a block of
 * channels when L == 1), sums its dy and dy * (x - mean), then writes that
 * channel's dgamma, dbeta and dx. */
static void cpu_batch_norm_backward(const fx_tensor *x, const fx_tensor *gamma,
                                    const fx_tensor *mean, const fx_tensor *rstd,
                                    const fx_tensor *dy, bool training, fx_tensor *dx,
                                    fx_tensor *dgamma, fx_tensor *dbeta)
{
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2], M = N * L, work = N * C * L;
    const float *X = fx_f32(x), *DY = fx_f32(dy), *Mn = fx_f32(mean), *R = fx_f32(rstd);
    const float *G = gamma ? fx_f32(gamma) : NULL;
    float *DX = dx ? fx_f32(dx) : NULL, *DG = dgamma ? fx_f32(dgamma) : NULL,
          *DB = dbeta ? fx_f32(dbeta) : NULL;
    /* Eval mode with only dx wanted needs no sums. */
    bool sums = DG || DB || (training && DX);
    if (L == 1) {
        int64_t nb = (C + CBLOCK - 1) / CBLOCK;
        FX_PFOR(
            work, t, nb, int64_t c0 = t * CBLOCK, w = min64(CBLOCK, C - c0);
            double s1[CBLOCK] = {0}, s2[CBLOCK] = {0}; float a[CBLOCK], c1[CBLOCK], c2[CBLOCK];
            if (sums) bn_col_sums(DY, false, X, Mn, N, C, c0, w, s1, s2);
            for (int64_t k = 0; k < w; k++) bn_grad_coef(c0 + k, s1[k], s2[k], M, G, R, training,
                                                         DG, DB, &a[k], &c1[k], &c2[k]);
            if (DX) for (int64_t n = 0; n < N; n++) {
                const float *dyr = DY + n * C + c0, *xr = X + n * C + c0, *mr = Mn + c0;
                float *dxr = DX + n * C + c0;
                for (int64_t k = 0; k < w; k++)
                    dxr[k] += a[k] * dyr[k] - c1[k] - (xr[k] - mr[k]) * c2[k];
            });
    } else {
        FX_PFOR(
            work, c, C, double s1 = 0.0, s2 = 0.0; float a, c1, c2;
            for (int64_t n = 0; sums && n < N; n++) {
                double u, v;
                int64_t o = (n * C + c) * L;
                run_sums(DY + o, 0.0f, NULL, X + o, Mn[c], L, &u, &v);
                s1 += u;
                s2 += v;
            } bn_grad_coef(c, s1, s2, M, G, R, training, DG, DB, &a, &c1, &c2);
            for (int64_t n = 0; DX && n < N; n++) {
                int64_t o = (n * C + c) * L;
                dx_run(DY + o, X + o, DX + o, L, a, Mn[c], c1, c2);
            });
    }
}

/* ------------------------------------------------------------ group norm */

/* Group norm forward (kern_norm.h): a task owns one (sample, group) row of
 * S = (C / groups) * L contiguous elements; it takes the row's statistics
 * (shift: the row's first element) and normalises the row. */
static void cpu_group_norm(const fx_tensor *x, int64_t groups, const fx_tensor *gamma,
                           const fx_tensor *beta, float eps, fx_tensor *mean, fx_tensor *rstd,
                           fx_tensor *y)
{
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2];
    int64_t Cg = C / groups, S = Cg * L, rows = N * groups;
    const float *X = fx_f32(x), *G = gamma ? fx_f32(gamma) : NULL, *B = beta ? fx_f32(beta) : NULL;
    float *Y = fx_f32(y), *Mn = fx_f32(mean), *R = fx_f32(rstd);
    FX_PFOR(rows * S, r, rows, const float *xr = X + r * S; float *yr = Y + r * S; double s1, s2;
            run_sums(xr, xr[0], NULL, xr, xr[0], S, &s1, &s2);
            finish_stats(s1, s2, S, xr[0], eps, &Mn[r], &R[r], NULL);
            int64_t c0 = (r % groups) * Cg; if (L == 1) affine_channels(
                xr, yr, Cg, &Mn[r], &R[r], false, G ? G + c0 : NULL, B ? B + c0 : NULL);
            else for (int64_t k = 0; k < Cg; k++)
                affine_run(xr + k * L, yr + k * L, L, Mn[r], R[r] * (G ? G[c0 + k] : 1.0f),
                           B ? B[c0 + k] : 0.0f););
}

/* Per-channel sums for group norm's dgamma and dbeta over channels
 * [c0, c0 + w) with L == 1: s1[k] = sum_n dy and s2[k] = sum_n dy * xhat,
 * where xhat uses the statistics of (n, the channel's group). A row of the
 * block is split where it crosses a group boundary. */
static void gn_col_sums(const float *dy, const float *x, const float *mean, const float *rstd,
                        int64_t N, int64_t C, int64_t groups, int64_t c0, int64_t w, double *s1,
                        double *s2)
{
    int64_t Cg = C / groups;
    for (int64_t k = 0; k < w; k++)
        s1[k] = s2[k] = 0.0;
    const int64_t rows = 64;
    for (int64_t n0 = 0; n0 < N; n0 += rows) {
        float a1[CBLOCK] = {0}, a2[CBLOCK] = {0};
        for (int64_t n = n0; n < min64(N, n0 + rows); n++)
            for (int64_t k = 0; k < w;) {
                int64_t g = (c0 + k) / Cg, e = min64(w, (g + 1) * Cg - c0);
                float m = mean[n * groups + g], r = rstd[n * groups + g];
                const float *dyr = dy + n * C + c0, *xr = x + n * C + c0;
                for (; k < e; k++) {
                    a1[k] += dyr[k];
                    a2[k] += dyr[k] * ((xr[k] - m) * r);
                }
            }
        for (int64_t k = 0; k < w; k++) {
            s1[k] += a1[k];
            s2[k] += a2[k];
        }
    }
}

/* Group norm backward (kern_norm.h). dx: a task owns a (sample, group) row;
 * with dxhat = dy * gamma, s1 = sum dxhat, s2 = sum dxhat * (x - mean) over
 * the row's S elements, dx = rstd * dxhat - rstd * s1 / S - (x - mean) *
 * rstd^3 * s2 / S. dgamma, dbeta: a task owns a channel (a block when
 * L == 1) and sums over the samples. */
static void cpu_group_norm_backward(const fx_tensor *x, int64_t groups, const fx_tensor *gamma,
                                    const fx_tensor *mean, const fx_tensor *rstd,
                                    const fx_tensor *dy, fx_tensor *dx, fx_tensor *dgamma,
                                    fx_tensor *dbeta)
{
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2];
    int64_t Cg = C / groups, S = Cg * L, rows = N * groups, work = N * C * L;
    const float *X = fx_f32(x), *DY = fx_f32(dy), *Mn = fx_f32(mean), *R = fx_f32(rstd);
    const float *G = gamma ? fx_f32(gamma) : NULL;
    float *DX = dx ? fx_f32(dx) : NULL, *DG = dgamma ? fx_f32(dgamma) : NULL,
          *DB = dbeta ? fx_f32(dbeta) : NULL;
    if (DX)
        FX_PFOR(
            work, r, rows, int64_t c0 = (r % groups) * Cg, o = r * S; float m = Mn[r], rs = R[r];
            double s1 = 0.0, s2 = 0.0;
            if (L == 1) run_sums(DY + o, 0.0f, G ? G + c0 : NULL, X + o, m, Cg, &s1, &s2);
            else for (int64_t k = 0; k < Cg; k++) {
                double u, v, g = G ? G[c0 + k] : 1.0;
                run_sums(DY + o + k * L, 0.0f, NULL, X + o + k * L, m, L, &u, &v);
                s1 += u * g;
                s2 += v * g;
            } float c1 = (float)(rs * s1 / (double)S);
            float c2 = (float)((double)rs * rs * rs * s2 / (double)S);
            if (L == 1) for (int64_t k = 0; k < Cg; k++) DX[o + k] +=
            rs * (G ? G[c0 + k] : 1.0f) * DY[o + k] - c1 - (X[o + k] - m) * c2;
            else for (int64_t k = 0; k < Cg; k++)
                dx_run(DY + o + k * L, X + o + k * L, DX + o + k * L, L,
                       rs * (G ? G[c0 + k] : 1.0f), m, c1, c2););
    if (!DG && !DB)
        return;
    if (L == 1) {
        int64_t nb = (C + CBLOCK - 1) / CBLOCK;
        FX_PFOR(
            work, t, nb, int64_t c0 = t * CBLOCK, w = min64(CBLOCK, C - c0);
            double s1[CBLOCK], s2[CBLOCK]; gn_col_sums(DY, X, Mn, R, N, C, groups, c0, w, s1, s2);
            for (int64_t k = 0; k < w; k++) {
                if (DB)
                    DB[c0 + k] += (float)s1[k];
                if (DG)
                    DG[c0 + k] += (float)s2[k];
            });
    } else {
        FX_PFOR(
            work, c, C, int64_t g = c / Cg; double s1 = 0.0, s2 = 0.0;
            for (int64_t n = 0; n < N; n++) {
                double u, v;
                int64_t o = (n * C + c) * L;
                run_sums(DY + o, 0.0f, NULL, X + o, Mn[n * groups + g], L, &u, &v);
                s1 += u;
                s2 += v * R[n * groups + g];
            } if (DB) DB[c] += (float)s1;
            if (DG) DG[c] += (float)s2;);
    }
}

/* ------------------------------------------------------------- embedding */

/* y[j, :] = weight[idx[j], :]; every index is checked before any row is
 * copied. */
static int64_t cpu_embedding(const fx_tensor *weight, const fx_tensor *idx, fx_tensor *y)
{
    int64_t num = weight->shape[0], dim = weight->shape[1], n = fx_tensor_numel(idx);
    for (int64_t j = 0; j < n; j++) {
        int64_t v = fx_index_at(idx, j);
        if (v < 0 || v >= num)
            return j;
    }
    const float *W = fx_f32(weight);
    float *Y = fx_f32(y);
    size_t row = (size_t)dim * sizeof(float);
    FX_PFOR(n * dim, j, n, memcpy(Y + j * dim, W + fx_index_at(idx, j) * dim, row););
    return -1;
}

/* dweight[idx[j], :] += dy[j, :] except for padding_idx. In parallel, task t
 * of T owns the rows with idx % T == t and scans all indices for them, so no
 * two tasks write one row; each row still adds its contributions in the
 * order of j, so the result does not depend on T. */
static void cpu_embedding_backward(const fx_tensor *dy, const fx_tensor *idx, int64_t padding_idx,
                                   fx_tensor *dweight)
{
    int64_t num = dweight->shape[0], dim = dweight->shape[1], n = fx_tensor_numel(idx);
    const float *DY = fx_f32(dy);
    float *DW = fx_f32(dweight);
    int64_t work = n * dim, T = work > FX_GRAIN && fx__num_threads > 1 ? fx__num_threads : 1;
    FX_PFOR(
        work, t, T, for (int64_t j = 0; j < n; j++) {
            int64_t v = fx_index_at(idx, j);
            if (v < 0 || v >= num || v == padding_idx || v % T != t)
                continue;
            const float *s = DY + j * dim;
            float *d = DW + v * dim;
            for (int64_t k = 0; k < dim; k++)
                d[k] += s[k];
        });
}

const fx_norm_kernels fx_cpu_norm = {
    .batch_norm = cpu_batch_norm,
    .batch_norm_backward = cpu_batch_norm_backward,
    .group_norm = cpu_group_norm,
    .group_norm_backward = cpu_group_norm_backward,
    .embedding = cpu_embedding,
    .embedding_backward = cpu_embedding_backward,
};
