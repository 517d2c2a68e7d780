/* norm.cu - batch / group (and so layer) normalisation.
 * x is (N, C, L) contiguous. Statistics: one block per set (a channel for
 * batch norm, a (sample, group) row for group norm), shifted sums in double
 * (shift: the set's first element) as the CPU does. The `work` tensor of
 * the CPU's column layout is not needed here. */
#include "common.h"

/* Element k of batch-norm channel c's set (n-major, then l). */
__device__ static inline int64_t bn_at(int64_t c, int64_t k, int64_t C, int64_t L)
{
    return ((k / L) * C + c) * L + k % L;
}

__global__ void k_bn_stats(const float *x, int64_t C, int64_t L, int64_t M, float eps,
                           float momentum, float *mean, float *rstd, float *rm, float *rv)
{
    int64_t c = blockIdx.x;
    float K = x[bn_at(c, 0, C, L)];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t k = threadIdx.x; k < M; k += blockDim.x) {
        double d = (double)x[bn_at(c, k, C, L)] - K;
        s1 += d;
        s2 += d * d;
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    if (threadIdx.x)
        return;
    double mu = s1 / (double)M, v = s2 / (double)M - mu * mu;
    if (v < 0.0)
        v = 0.0;
    mean[c] = (float)(K + mu);
    rstd[c] = (float)(1.0 / sqrt(v + (double)eps));
    if (rm) {
        rm[c] = (1.0f - momentum) * rm[c] + momentum * mean[c];
        rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * v * (double)M / (double)(M - 1));
    }
}

__global__ void k_bn_eval_stats(const float *rm, const float *rv, float eps, float *mean,
                                float *rstd, int64_t C)
{
    GRID_LOOP(c, C)
    {
        mean[c] = rm[c];
        rstd[c] = (float)(1.0 / sqrt((double)rv[c] + (double)eps));
    }
}

/* y = (x - mean) * rstd * gamma + beta with the stats of set (n, c) given by
 * sidx = c (batch norm) or n * groups + c / Cg (group norm). */
__global__ void k_affine(const float *x, float *y, const float *mean, const float *rstd,
                         const float *g, const float *b, int64_t C, int64_t L, int64_t groups,
                         int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t c = (e / L) % C, n = e / (L * C);
        int64_t s = groups ? n * groups + c / (C / groups) : c;
        y[e] = (x[e] - mean[s]) * (rstd[s] * (g ? g[c] : 1.0f)) + (b ? b[c] : 0.0f);
    }
}

static void cu_batch_norm(const fx_tensor *x, const fx_tensor *gamma, const fx_tensor *beta,
                          fx_tensor *running_mean, fx_tensor *running_var, bool training,
                          float momentum, float eps, fx_tensor *mean, fx_tensor *rstd,
                          fx_tensor *y, fx_tensor *work)
{
    int dev = tdev(x);
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2], total = N * C * L;
    float *rm = running_mean ? F(running_mean) : NULL, *rv = running_var ? F(running_var) : NULL;
    if (!C)
        return;
    if (training) {
        if (N * L == 0)
            return;
        k_bn_stats<<<(unsigned)C, TPB, 0, fx__cuda_stream(dev)>>>(F(x), C, L, N * L, eps, momentum,
                                                                F(mean), F(rstd), rm, rv);
        CU_LAUNCHED(dev);
    } else {
        LAUNCH(dev, C, k_bn_eval_stats, rm, rv, eps, F(mean), F(rstd), C);
    }
    LAUNCH(dev, total, k_affine, F(x), F(y), F(mean), F(rstd), gamma ? F(gamma) : NULL,
           beta ? F(beta) : NULL, C, L, (int64_t)0, total);
}

/* Per channel: s1 = sum dy, s2 = sum dy (x - mean); then dbeta, dgamma and
 * the dx coefficients a, c1, c2 (coef [3, C]). */
__global__ void k_bn_bw_sums(const float *x, const float *dy, const float *mean,
                             const float *rstd, const float *G, int64_t C, int64_t L, int64_t M,
                             bool training, float *dgamma, float *dbeta, float *coef)
{
    int64_t c = blockIdx.x;
    double s1 = 0.0, s2 = 0.0;
    for (int64_t k = threadIdx.x; k < M; k += blockDim.x) {
        int64_t i = bn_at(c, k, C, L);
        s1 += dy[i];
        s2 += (double)dy[i] * (x[i] - mean[c]);
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    if (threadIdx.x)
        return;
    double r = rstd[c], g = G ? G[c] : 1.0;
    if (dbeta)
        dbeta[c] += (float)s1;
    if (dgamma)
        dgamma[c] += (float)(s2 * r);
    coef[c] = (float)(g * r);
    coef[C + c] = training ? (float)(g * r * s1 / (double)M) : 0.0f;
    coef[2 * C + c] = training ? (float)(g * r * r * r * s2 / (double)M) : 0.0f;
}

__global__ void k_bn_bw_dx(const float *x, const float *dy, const float *mean, const float *coef,
                           float *dx, int64_t C, int64_t L, int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t c = (e / L) % C;
        dx[e] += coef[c] * dy[e] - coef[C + c] - (x[e] - mean[c]) * coef[2 * C + c];
    }
}

static void cu_batch_norm_backward(const fx_tensor *x, const fx_tensor *gamma,
                                   const fx_tensor *mean, const fx_tensor *rstd,
                                   const fx_tensor *dy, bool training, fx_tensor *dx,
                                   fx_tensor *dgamma, fx_tensor *dbeta, fx_tensor *work)
{
    int dev = tdev(x);
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2], total = N * C * L;
    if (!C || !total)
        return;
    float *coef = (float *)fx__cuda_mem.alloc(x->device, (size_t)(3 * C) * sizeof(float));
    if (!coef) {
        fx__cuda_record_msg(dev, FX_ERR_NOMEM, __FILE__, __LINE__, "batch_norm_backward: %s",
                            fx__cuda_alloc_error());
        return;
    }
    k_bn_bw_sums<<<(unsigned)C, TPB, 0, fx__cuda_stream(dev)>>>(
        F(x), F(dy), F(mean), F(rstd), gamma ? F(gamma) : NULL, C, L, N * L, training,
        dgamma ? F(dgamma) : NULL, dbeta ? F(dbeta) : NULL, coef);
    CU_LAUNCHED(dev);
    if (dx)
        LAUNCH(dev, total, k_bn_bw_dx, F(x), F(dy), F(mean), coef, F(dx), C, L, total);
    fx__cuda_mem.free(x->device, coef);
}

/* ------------------------------------------------------------ group norm */

/* One block per (sample, group) row of S contiguous elements. */
__global__ void k_gn_stats(const float *x, int64_t S, float eps, float *mean, float *rstd)
{
    const float *xr = x + (int64_t)blockIdx.x * S;
    float K = xr[0];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t k = threadIdx.x; k < S; k += blockDim.x) {
        double d = (double)xr[k] - K;
        s1 += d;
        s2 += d * d;
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    if (threadIdx.x)
        return;
    double mu = s1 / (double)S, v = s2 / (double)S - mu * mu;
    if (v < 0.0)
        v = 0.0;
    mean[blockIdx.x] = (float)(K + mu);
    rstd[blockIdx.x] = (float)(1.0 / sqrt(v + (double)eps));
}

static void cu_group_norm(const fx_tensor *x, int64_t groups, const fx_tensor *gamma,
                          const fx_tensor *beta, float eps, fx_tensor *mean, fx_tensor *rstd,
                          fx_tensor *y)
{
    int dev = tdev(x);
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2], total = N * C * L;
    int64_t rows = N * groups, S = (C / groups) * L;
    if (!rows || !S)
        return;
    k_gn_stats<<<(unsigned)rows, TPB, 0, fx__cuda_stream(dev)>>>(F(x), S, eps, F(mean), F(rstd));
    CU_LAUNCHED(dev);
    LAUNCH(dev, total, k_affine, F(x), F(y), F(mean), F(rstd), gamma ? F(gamma) : NULL,
           beta ? F(beta) : NULL, C, L, groups, total);
}

/* dx of one row: dxhat = dy * gamma; s1 = sum dxhat, s2 = sum dxhat (x - m);
 * dx += rs * dxhat - rs s1 / S - (x - m) rs^3 s2 / S. */
__global__ void k_gn_bw_dx(const float *x, const float *dy, const float *G, const float *mean,
                           const float *rstd, float *dx, int64_t C, int64_t L, int64_t groups)
{
    int64_t r = blockIdx.x, Cg = C / groups, S = Cg * L, c0 = (r % groups) * Cg;
    const float *xr = x + r * S, *dr = dy + r * S;
    float m = mean[r], rs = rstd[r];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t k = threadIdx.x; k < S; k += blockDim.x) {
        double d = (double)dr[k] * (G ? G[c0 + k / L] : 1.0f);
        s1 += d;
        s2 += d * (xr[k] - m);
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    float c1 = (float)(rs * s1 / (double)S), c2 = (float)((double)rs * rs * rs * s2 / (double)S);
    for (int64_t k = threadIdx.x; k < S; k += blockDim.x)
        dx[r * S + k] += rs * (G ? G[c0 + k / L] : 1.0f) * dr[k] - c1 - (xr[k] - m) * c2;
}

/* dgamma[c] += sum dy (x - m) rs, dbeta[c] += sum dy over samples and L. */
__global__ void k_gn_bw_affine(const float *x, const float *dy, const float *mean,
                               const float *rstd, float *dg, float *db, int64_t N, int64_t C,
                               int64_t L, int64_t groups)
{
    int64_t c = blockIdx.x, Cg = C / groups;
    double s1 = 0.0, s2 = 0.0;
    for (int64_t k = threadIdx.x; k < N * L; k += blockDim.x) {
        int64_t n = k / L, i = (n * C + c) * L + k % L, s = n * groups + c / Cg;
        s1 += dy[i];
        s2 += (double)dy[i] * (x[i] - mean[s]) * rstd[s];
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    if (threadIdx.x)
        return;
    if (db)
        db[c] += (float)s1;
    if (dg)
        dg[c] += (float)s2;
}

static void cu_group_norm_backward(const fx_tensor *x, int64_t groups, const fx_tensor *gamma,
                                   const fx_tensor *mean, const fx_tensor *rstd,
                                   const fx_tensor *dy, fx_tensor *dx, fx_tensor *dgamma,
                                   fx_tensor *dbeta, fx_tensor *work)
{
    int dev = tdev(x);
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2];
    if (!N || !C)
        return;
    cudaStream_t s = fx__cuda_stream(dev);
    if (dx && L) {
        k_gn_bw_dx<<<(unsigned)(N * groups), TPB, 0, s>>>(F(x), F(dy), gamma ? F(gamma) : NULL,
                                                          F(mean), F(rstd), F(dx), C, L, groups);
        CU_LAUNCHED(dev);
    }
    if (dgamma || dbeta) {
        k_gn_bw_affine<<<(unsigned)C, TPB, 0, s>>>(F(x), F(dy), F(mean), F(rstd),
                                                   dgamma ? F(dgamma) : NULL,
                                                   dbeta ? F(dbeta) : NULL, N, C, L, groups);
        CU_LAUNCHED(dev);
    }
}

const fx_norm_kernels fx__cuda_norm = {
    .batch_norm = cu_batch_norm,
    .batch_norm_backward = cu_batch_norm_backward,
    .group_norm = cu_group_norm,
    .group_norm_backward = cu_group_norm_backward,
};
