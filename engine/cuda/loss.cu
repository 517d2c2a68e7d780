/* loss.cu - cross-entropy from labels or soft targets (one block per row,
 * max-subtracted log-sum-exp as the CPU), binary cross-entropy from logits. */
#include "common.h"

/* Row max and sum of exp(x - max) of a block's row. */
__device__ static void row_stats(const float *x, int64_t C, float *m_out, double *s_out)
{
    float m = -INFINITY;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
        m = x[c] > m ? x[c] : m;
    m = block_max(m);
    double s = 0.0;
    if (!isinf(m))
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            s += expf(x[c] - m);
    *s_out = block_sum(s);
    *m_out = m;
}

__device__ static float lse_of(float m, double s, int64_t C)
{
    if (C == 0)
        return -INFINITY;
    return isinf(m) ? m : m + logf((float)s);
}

__global__ void k_ce_labels(const float *X, const void *lab, bool i64, float *L, int64_t C)
{
    const float *x = X + (int64_t)blockIdx.x * C;
    float m;
    double s;
    row_stats(x, C, &m, &s);
    if (threadIdx.x == 0)
        L[blockIdx.x] = lse_of(m, s, C) - x[idx_at(lab, i64, blockIdx.x)];
}

static int64_t cu_ce_labels(const fx_tensor *logits, const fx_tensor *labels, fx_tensor *loss)
{
    int dev = tdev(logits);
    int64_t N = logits->shape[0], C = logits->shape[1];
    int64_t bad = fx__cuda_first_bad(labels, N, 0, C - 1);
    if (bad >= 0 || N == 0)
        return bad;
    k_ce_labels<<<(unsigned)N, TPB, 0, fx__cuda_stream(dev)>>>(F(logits), fx_data(labels),
                                                             labels->dtype == FX_I64, F(loss), C);
    CU_LAUNCHED(dev);
    return -1;
}

__global__ void k_ce_labels_bw(const float *X, const void *lab, bool i64, const float *G, float *D,
                               int64_t C)
{
    int64_t n = blockIdx.x;
    const float *x = X + n * C;
    float *d = D + n * C, m;
    double s;
    row_stats(x, C, &m, &s);
    float k = G[n] / (float)s;
    int64_t y = idx_at(lab, i64, n);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
        d[c] += k * expf(x[c] - m) - (c == y ? G[n] : 0.0f);
}

static void cu_ce_labels_backward(const fx_tensor *logits, const fx_tensor *labels,
                                  const fx_tensor *dloss, fx_tensor *dlogits)
{
    int dev = tdev(logits);
    int64_t N = logits->shape[0], C = logits->shape[1];
    if (!N)
        return;
    k_ce_labels_bw<<<(unsigned)N, TPB, 0, fx__cuda_stream(dev)>>>(
        F(logits), fx_data(labels), labels->dtype == FX_I64, F(dloss), F(dlogits), C);
    CU_LAUNCHED(dev);
}

__global__ void k_ce_soft(const float *X, const float *P, const float *G, float *L, float *DX,
                          float *DP, int64_t C)
{
    int64_t n = blockIdx.x;
    const float *x = X + n * C, *p = P + n * C;
    float m;
    double s;
    row_stats(x, C, &m, &s);
    float lse = lse_of(m, s, C);
    if (L) { /* forward */
        double acc = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            acc -= (double)p[c] * (double)(x[c] - lse);
        acc = block_sum(acc);
        if (threadIdx.x == 0)
            L[n] = (float)acc;
        return;
    }
    float g = G[n];
    if (DX) {
        double ps = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            ps += p[c];
        float gs = g * (float)block_sum(ps);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            DX[n * C + c] += gs * expf(x[c] - lse) - g * p[c];
    }
    if (DP)
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            DP[n * C + c] -= g * (x[c] - lse);
}

static void ce_soft_launch(const fx_tensor *logits, const fx_tensor *probs, const fx_tensor *dloss,
                           fx_tensor *loss, fx_tensor *dlogits, fx_tensor *dprobs)
{
    int dev = tdev(logits);
    int64_t N = logits->shape[0], C = logits->shape[1];
    if (!N)
        return;
    k_ce_soft<<<(unsigned)N, TPB, 0, fx__cuda_stream(dev)>>>(
        F(logits), F(probs), dloss ? F(dloss) : NULL, loss ? F(loss) : NULL,
        dlogits ? F(dlogits) : NULL, dprobs ? F(dprobs) : NULL, C);
    CU_LAUNCHED(dev);
}

static void cu_ce_soft(const fx_tensor *logits, const fx_tensor *probs, fx_tensor *loss)
{
    ce_soft_launch(logits, probs, NULL, loss, NULL, NULL);
}

static void cu_ce_soft_backward(const fx_tensor *logits, const fx_tensor *probs,
                                const fx_tensor *dloss, fx_tensor *dlogits, fx_tensor *dprobs)
{
    ce_soft_launch(logits, probs, dloss, NULL, dlogits, dprobs);
}

__global__ void k_bce(const float *X, const float *T, float *L, int64_t n)
{
    GRID_LOOP(i, n)
    {
        float v = X[i];
        L[i] = fmaxf(v, 0.0f) - v * T[i] + log1pf(expf(-fabsf(v)));
    }
}

static void cu_bce_logits(const fx_tensor *x, const fx_tensor *t, fx_tensor *loss)
{
    int64_t n = numel(x);
    LAUNCH(tdev(x), n, k_bce, F(x), F(t), F(loss), n);
}

__global__ void k_bce_bw(const float *X, const float *T, const float *G, float *DX, float *DT,
                         int64_t n)
{
    GRID_LOOP(i, n)
    {
        float v = X[i];
        if (DX) {
            float sg = v >= 0.0f ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v));
            DX[i] += G[i] * (sg - T[i]);
        }
        if (DT)
            DT[i] -= G[i] * v;
    }
}

static void cu_bce_logits_backward(const fx_tensor *x, const fx_tensor *t, const fx_tensor *dloss,
                                   fx_tensor *dx, fx_tensor *dt)
{
    int64_t n = numel(x);
    LAUNCH(tdev(x), n, k_bce_bw, F(x), F(t), F(dloss), dx ? F(dx) : NULL, dt ? F(dt) : NULL, n);
}

const fx_loss_kernels fx__cuda_loss = {
    .ce_labels = cu_ce_labels,
    .ce_labels_backward = cu_ce_labels_backward,
    .ce_soft = cu_ce_soft,
    .ce_soft_backward = cu_ce_soft_backward,
    .bce_logits = cu_bce_logits,
    .bce_logits_backward = cu_bce_logits_backward,
    .ctc_check = cu_ctc_check,
    .ctc_forward = cu_ctc_forward,
    .ctc_backward = cu_ctc_backward,
};
