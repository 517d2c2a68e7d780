/* norm.c - CPU kernels: batch/layer/group normalisation.
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
 *   L == 1: channels are contiguous in each row; per-channel sums are
 *           column sums over chunks of FX_NORM_CHUNK rows (partials in the
 *           op's workspace, added up per channel afterwards), so every
 *           pass streams memory in order instead of striding down columns.
 * Every task writes only its own channels, rows or chunk partials, so no
 * loop races, and no sum depends on the thread count. */
#include "cpu.h"

#define FLUSH 512 /* elements per float partial sum before it goes to double */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Over a contiguous run of n elements: s1 = sum (p - kp) * w and
 * s2 = sum (p - kp) * w * (q - kq), with w NULL meaning 1. Forward
 * statistics use p = q = x and kp = kq = a shift; backward sums use p = dy,
 * kp = 0, q = x, kq = the mean (and w = gamma for layer norm). Sixteen
 * float lanes (four vectors, so the adds do not form one serial chain)
 * are flushed into double every FLUSH elements. */
static void run_sums(const float *p, float kp, const float *w, const float *q, float kq, int64_t n,
                     double *s1, double *s2)
{
    double t1 = 0.0, t2 = 0.0;
    int64_t i = 0;
    while (i + 16 <= n) {
        int64_t e = min64(n, i + FLUSH);
        fx_v4f a1[4] = {0}, a2[4] = {0};
        for (; i + 16 <= e; i += 16)
            for (int j = 0; j < 4; j++) {
                fx_v4f v = *(const fx_v4f *)(p + i + 4 * j) - kp;
                if (w)
                    v *= *(const fx_v4f *)(w + i + 4 * j);
                a1[j] += v;
                a2[j] += v * (*(const fx_v4f *)(q + i + 4 * j) - kq);
            }
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 4; l++) {
                t1 += a1[j][l];
                t2 += a2[j][l];
            }
    }
    for (; i < n; i++) {
        float v = (p[i] - kp) * (w ? w[i] : 1.0f);
        t1 += v;
        t2 += (double)v * (q[i] - kq);
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

#define V4(p) (*(const fx_v4f *)(p))

/* y[i] = (x[i] - m) * r * g[i] + b[i] over a run of channels (L == 1), with
 * m and r one value per channel (per_channel: batch norm) or one for the
 * whole run (group and layer norm: m[0], r[0]); g, b NULL mean 1 and 0.
 * Written with vectors: the optional operands are tests the branch
 * predictor always gets right, where a scalar loop would not vectorise. */
static void affine_channels(const float *x, float *y, int64_t n, const float *m, const float *r,
                            bool per_channel, const float *g, const float *b)
{
    fx_v4f m0 = {0}, r0 = {0};
    m0 += m[0];
    r0 += r[0];
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        fx_v4f a = per_channel ? V4(r + i) : r0, v = V4(x + i) - (per_channel ? V4(m + i) : m0);
        if (g)
            a *= V4(g + i);
        v *= a;
        if (b)
            v += V4(b + i);
        *(fx_v4f *)(y + i) = v;
    }
    for (; i < n; i++)
        y[i] = (x[i] - m[per_channel ? i : 0]) * (r[per_channel ? i : 0] * (g ? g[i] : 1.0f)) +
               (b ? b[i] : 0.0f);
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

/* ------------------------------------------------------ L == 1 columns */

static inline int64_t num_chunks(int64_t N) { return (N + FX_NORM_CHUNK - 1) / FX_NORM_CHUNK; }

/* a1[k] += p[k] - kp[k] and a2[k] += (p[k] - kp[k]) * (q[k] - kq[k]) over
 * one row of a tile (kp NULL means 0); restrict lets it vectorise without
 * alias checks. */
static inline void col_accum(float *restrict a1, float *restrict a2, const float *restrict p,
                             const float *restrict kp, const float *restrict q,
                             const float *restrict kq, int64_t w)
{
    if (kp)
        for (int64_t k = 0; k < w; k++) {
            float v = p[k] - kp[k];
            a1[k] += v;
            a2[k] += v * (q[k] - kq[k]);
        }
    else
        for (int64_t k = 0; k < w; k++) {
            a1[k] += p[k];
            a2[k] += p[k] * (q[k] - kq[k]);
        }
}

/*
 * Partial column sums of (N, C) rows: for chunk h (rows [h, h + 1) *
 * FX_NORM_CHUNK) and channel c, part[2h*C + c] = sum (p - kp[c]) and
 * part[(2h+1)*C + c] = sum (p - kp[c]) * (q - kq[c]). Tiles of (chunk,
 * TILE_C channels) run in parallel, each streaming its rows in order; a
 * chunk's floats never sum more than FX_NORM_CHUNK terms, and the chunks
 * are added in double by col_totals.
 */
#define TILE_C 256
static void col_partials(const float *p, const float *kp, const float *q, const float *kq,
                         int64_t N, int64_t C, float *part)
{
    int64_t H = num_chunks(N), nb = (C + TILE_C - 1) / TILE_C;
    FX_PFOR(
        N * C, t, H * nb, int64_t h = t / nb, c0 = (t % nb) * TILE_C;
        int64_t w = min64(TILE_C, C - c0); float *a1 = part + 2 * h * C + c0, *a2 = a1 + C;
        memset(a1, 0, (size_t)w * sizeof *a1); memset(a2, 0, (size_t)w * sizeof *a2);
        for (int64_t n = h * FX_NORM_CHUNK; n < min64(N, (h + 1) * FX_NORM_CHUNK); n++)
            col_accum(a1, a2, p + n * C + c0, kp ? kp + c0 : NULL, q + n * C + c0, kq + c0, w););
}

/* s1[k], s2[k]: the chunks' partial sums of channel c0 + k added in double
 * (in chunk order, so the result does not depend on the thread count). */
static void col_totals(const float *part, int64_t N, int64_t C, int64_t c0, int64_t w, double *s1,
                       double *s2)
{
    for (int64_t k = 0; k < w; k++)
        s1[k] = s2[k] = 0.0;
    for (int64_t h = 0; h < num_chunks(N); h++) {
        const float *a1 = part + 2 * h * C + c0, *a2 = a1 + C;
        for (int64_t k = 0; k < w; k++) {
            s1[k] += a1[k];
            s2[k] += a2[k];
        }
    }
}

/* ------------------------------------------------------------ batch norm */

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

/* Batch norm forward (kern_norm.h). Training takes the statistics channel
 * by channel (L > 1) or by column sums over row chunks (L == 1, the shift
 * of a channel being its entry in the first row, parked in mean while the
 * sums run); then every row is normalised in parallel. */
static void cpu_batch_norm(const fx_tensor *x, const fx_tensor *gamma, const fx_tensor *beta,
                           fx_tensor *running_mean, fx_tensor *running_var, bool training,
                           float momentum, float eps, fx_tensor *mean, fx_tensor *rstd,
                           fx_tensor *y, fx_tensor *work)
{
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2], M = N * L, n_el = N * C * L;
    const float *X = fx_f32(x), *G = gamma ? fx_f32(gamma) : NULL, *B = beta ? fx_f32(beta) : NULL;
    float *Y = fx_f32(y), *Mn = fx_f32(mean), *R = fx_f32(rstd);
    float *rm = running_mean ? fx_f32(running_mean) : NULL;
    float *rv = running_var ? fx_f32(running_var) : NULL;
    if (training && L == 1) {
        float *part = fx_f32(work);
        memcpy(Mn, X, (size_t)C * sizeof *Mn);
        col_partials(X, Mn, X, Mn, N, C, part);
        int64_t nb = (C + TILE_C - 1) / TILE_C;
        FX_PFOR(num_chunks(N) * C, t, nb, int64_t c0 = t * TILE_C, w = min64(TILE_C, C - c0);
                double s1[TILE_C], s2[TILE_C]; col_totals(part, N, C, c0, w, s1, s2);
                for (int64_t k = 0; k < w; k++)
                    bn_finish(c0 + k, s1[k], s2[k], M, Mn[c0 + k], eps, momentum, Mn, R, rm, rv););
    } else if (training) {
        FX_PFOR(
            n_el, c, C, float K = X[c * L]; double s1 = 0.0, s2 = 0.0;
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
        FX_PFOR(n_el, n, N, affine_channels(X + n * C, Y + n * C, C, Mn, R, true, G, B););
    else
        FX_PFOR(n_el, r, N * C, int64_t c = r % C; affine_run(
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

/* dx[k] += a[k] * dy[k] - c1[k] - (x[k] - m[k]) * c2[k] over a row of
 * channels (L == 1). */
static inline void dx_channels(const float *restrict dy, const float *restrict x,
                               float *restrict dx, int64_t n, const float *restrict a,
                               const float *restrict c1, const float *restrict c2,
                               const float *restrict m)
{
    for (int64_t k = 0; k < n; k++)
        dx[k] += a[k] * dy[k] - c1[k] - (x[k] - m[k]) * c2[k];
}

/* Batch norm backward (kern_norm.h). L > 1: a task owns a channel, sums its
 * dy and dy * (x - mean), then writes its dgamma, dbeta and dx. L == 1: the
 * sums are column sums over row chunks; the per-channel coefficients go to
 * the end of work, then the rows of dx are written in parallel. */
static void cpu_batch_norm_backward(const fx_tensor *x, const fx_tensor *gamma,
                                    const fx_tensor *mean, const fx_tensor *rstd,
                                    const fx_tensor *dy, bool training, fx_tensor *dx,
                                    fx_tensor *dgamma, fx_tensor *dbeta, fx_tensor *work)
{
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2], M = N * L, n_el = N * C * L;
    const float *X = fx_f32(x), *DY = fx_f32(dy), *Mn = fx_f32(mean), *R = fx_f32(rstd);
    const float *G = gamma ? fx_f32(gamma) : NULL;
    float *DX = dx ? fx_f32(dx) : NULL, *DG = dgamma ? fx_f32(dgamma) : NULL,
          *DB = dbeta ? fx_f32(dbeta) : NULL;
    /* Eval mode with only dx wanted needs no sums. */
    bool sums = DG || DB || (training && DX);
    if (L == 1) {
        float *part = fx_f32(work), *a = part + 2 * num_chunks(N) * C, *c1 = a + C, *c2 = c1 + C;
        if (sums)
            col_partials(DY, NULL, X, Mn, N, C, part);
        int64_t nb = (C + TILE_C - 1) / TILE_C;
        FX_PFOR(num_chunks(N) * C, t, nb, int64_t c0 = t * TILE_C, w = min64(TILE_C, C - c0);
                double s1[TILE_C] = {0}, s2[TILE_C] = {0};
                if (sums) col_totals(part, N, C, c0, w, s1, s2); for (int64_t k = 0; k < w; k++)
                    bn_grad_coef(c0 + k, s1[k], s2[k], M, G, R, training, DG, DB, &a[c0 + k],
                                 &c1[c0 + k], &c2[c0 + k]););
        if (DX)
            FX_PFOR(n_el, n, N, dx_channels(DY + n * C, X + n * C, DX + n * C, C, a, c1, c2, Mn););
    } else {
        FX_PFOR(
            n_el, c, C, double s1 = 0.0, s2 = 0.0; float a, c1, c2;
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

/* The gradient of one (sample, group) row of S elements with statistics m,
 * rs. With dxhat = dy * gamma, s1 = sum dxhat and s2 = sum dxhat * (x - m):
 * dx += rs * dxhat - rs * s1 / S - (x - m) * rs^3 * s2 / S, run by run
 * (Cg runs of L elements, gamma constant along a run). */
static void gn_row_dx(const float *dy, const float *x, float *dx, const float *gam, int64_t Cg,
                      int64_t L, float m, float rs)
{
    int64_t S = Cg * L;
    double s1 = 0.0, s2 = 0.0;
    if (L == 1) {
        run_sums(dy, 0.0f, gam, x, m, Cg, &s1, &s2);
    } else {
        for (int64_t k = 0; k < Cg; k++) {
            double u, v, g = gam ? gam[k] : 1.0;
            run_sums(dy + k * L, 0.0f, NULL, x + k * L, m, L, &u, &v);
            s1 += u * g;
            s2 += v * g;
        }
    }
    float c1 = (float)(rs * s1 / (double)S), c2 = (float)((double)rs * rs * rs * s2 / (double)S);
    if (L == 1 && gam)
        for (int64_t k = 0; k < Cg; k++)
            dx[k] += rs * gam[k] * dy[k] - c1 - (x[k] - m) * c2;
    else if (L == 1)
        dx_run(dy, x, dx, Cg, rs, m, c1, c2);
    else
        for (int64_t k = 0; k < Cg; k++)
            dx_run(dy + k * L, x + k * L, dx + k * L, L, rs * (gam ? gam[k] : 1.0f), m, c1, c2);
}

/* a1[k] += dy[k], a2[k] += dy[k] * (x[k] - m) * rs over a row of channels
 * (L == 1): one row's share of dbeta and dgamma. */
static inline void gn_accum(float *restrict a1, float *restrict a2, const float *restrict dy,
                            const float *restrict x, int64_t n, float m, float rs)
{
    for (int64_t k = 0; k < n; k++) {
        a1[k] += dy[k];
        a2[k] += dy[k] * ((x[k] - m) * rs);
    }
}

/* Group norm backward (kern_norm.h). L == 1 (layer norm, group norm of
 * [N, C]): a task owns a chunk of samples and, row by row, writes dx and
 * adds the row's dgamma / dbeta shares to the chunk's partial sums, which
 * are then added up per channel. L > 1: a task owns a (sample, group) row
 * for dx, then a task owns a channel for dgamma and dbeta. */
static void cpu_group_norm_backward(const fx_tensor *x, int64_t groups, const fx_tensor *gamma,
                                    const fx_tensor *mean, const fx_tensor *rstd,
                                    const fx_tensor *dy, fx_tensor *dx, fx_tensor *dgamma,
                                    fx_tensor *dbeta, fx_tensor *work)
{
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2];
    int64_t Cg = C / groups, S = Cg * L, rows = N * groups, n_el = N * C * L;
    const float *X = fx_f32(x), *DY = fx_f32(dy), *Mn = fx_f32(mean), *R = fx_f32(rstd);
    const float *G = gamma ? fx_f32(gamma) : NULL;
    float *DX = dx ? fx_f32(dx) : NULL, *DG = dgamma ? fx_f32(dgamma) : NULL,
          *DB = dbeta ? fx_f32(dbeta) : NULL;
    bool params = DG || DB;
    if (L == 1) {
        float *part = fx_f32(work);
        FX_PFOR(
            n_el, h, num_chunks(N), float *a1 = part + 2 * h * C, *a2 = a1 + C; if (params) {
                memset(a1, 0, (size_t)C * sizeof *a1);
                memset(a2, 0, (size_t)C * sizeof *a2);
            } for (int64_t n = h * FX_NORM_CHUNK; n < min64(N, (h + 1) * FX_NORM_CHUNK);
                   n++) for (int64_t g = 0; g < groups; g++) {
                int64_t o = n * C + g * Cg, r = n * groups + g;
                if (DX)
                    gn_row_dx(DY + o, X + o, DX + o, G ? G + g * Cg : NULL, Cg, 1, Mn[r], R[r]);
                if (params)
                    gn_accum(a1 + g * Cg, a2 + g * Cg, DY + o, X + o, Cg, Mn[r], R[r]);
            });
        if (params) {
            int64_t nb = (C + TILE_C - 1) / TILE_C;
            FX_PFOR(
                num_chunks(N) * C, t, nb, int64_t c0 = t * TILE_C, w = min64(TILE_C, C - c0);
                double s1[TILE_C], s2[TILE_C]; col_totals(part, N, C, c0, w, s1, s2);
                for (int64_t k = 0; k < w; k++) {
                    if (DB)
                        DB[c0 + k] += (float)s1[k];
                    if (DG)
                        DG[c0 + k] += (float)s2[k];
                });
        }
        return;
    }
    if (DX)
        FX_PFOR(n_el, r, rows, int64_t c0 = (r % groups) * Cg; gn_row_dx(
                    DY + r * S, X + r * S, DX + r * S, G ? G + c0 : NULL, Cg, L, Mn[r], R[r]););
    if (params)
        FX_PFOR(
            n_el, c, C, int64_t g = c / Cg; double s1 = 0.0, s2 = 0.0;
            for (int64_t n = 0; n < N; n++) {
                double u, v;
                int64_t o = (n * C + c) * L;
                run_sums(DY + o, 0.0f, NULL, X + o, Mn[n * groups + g], L, &u, &v);
                s1 += u;
                s2 += v * R[n * groups + g];
            } if (DB) DB[c] += (float)s1;
            if (DG) DG[c] += (float)s2;);
}

const fx_norm_kernels fx__cpu_norm = {
    .batch_norm = cpu_batch_norm,
    .batch_norm_backward = cpu_batch_norm_backward,
    .group_norm = cpu_group_norm,
    .group_norm_backward = cpu_group_norm_backward,
};
