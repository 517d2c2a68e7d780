/*
 * seq.cu - attention's masked softmax and the lengths check (kern_seq.h).
 *
 * Attention: one thread per row of scores (a query against its keys).
 */
#include "common.h"


static int64_t cu_check_lengths(const fx_tensor *len, int64_t lo, int64_t hi)
{
    return fx__cuda_first_bad(len, numel(len), lo, hi);
}

/* ------------------------------------------------------------ attention */

struct AM {
    int64_t batch, L, S, per_length;
    int nbd;
    int64_t bshape[FX_MAX_DIMS], mstride[FX_MAX_DIMS];
    const float *add;
    const int32_t *keep;
    const void *klen;
    bool klen64, causal;
};

__global__ void k_attn_softmax(AM m, float *P, unsigned long long *bad)
{
    GRID_LOOP(r, m.batch * m.L)
    {
        int64_t b = r / m.L, i = r % m.L, S = m.S, limit = S;
        if (m.klen) {
            int64_t len = idx_at(m.klen, m.klen64, b / m.per_length);
            limit = len < limit ? len : limit;
        }
        if (m.causal && i + 1 < limit)
            limit = i + 1;
        bool mk = m.add || m.keep;
        int64_t msL = mk ? m.mstride[m.nbd] : 0, msS = mk ? m.mstride[m.nbd + 1] : 0;
        int64_t mo = i * msL;
        for (int d = m.nbd - 1; mk && d >= 0; d--) {
            int64_t q = b / m.bshape[d];
            mo += (b - q * m.bshape[d]) * m.mstride[d];
            b = q;
        }
        float *row = P + r * S;
        for (int64_t j = 0; j < limit; j++) {
            if (m.add)
                row[j] += m.add[mo + j * msS];
            else if (m.keep && m.keep[mo + j * msS] == 0)
                row[j] = -INFINITY;
        }
        float mx = -INFINITY;
        bool nan = false;
        for (int64_t j = 0; j < limit; j++) {
            nan |= row[j] != row[j];
            mx = row[j] > mx ? row[j] : mx;
        }
        if (nan || mx == INFINITY) {
            for (int64_t j = 0; j < S; j++)
                row[j] = NAN;
            atomicAdd(bad, 1ULL);
            continue;
        }
        if (mx == -INFINITY) {
            for (int64_t j = 0; j < S; j++)
                row[j] = 0.0f;
            continue;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < limit; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < limit; j++)
            row[j] *= inv;
        for (int64_t j = limit; j < S; j++)
            row[j] = 0.0f;
    }
}

static int64_t cu_attn_softmax(const fx_attn_mask *m, fx_tensor *p)
{
    int dev = tdev(p);
    AM a;
    a.batch = m->batch;
    a.L = m->L;
    a.S = m->S;
    a.per_length = m->per_length;
    a.nbd = m->nbd;
    memcpy(a.bshape, m->bshape, sizeof a.bshape);
    memcpy(a.mstride, m->mstride, sizeof a.mstride);
    a.add = m->mask && m->mask->dtype == FX_F32 ? F(m->mask) : NULL;
    a.keep = m->mask && m->mask->dtype == FX_I32 ? (const int32_t *)fx_data(m->mask) : NULL;
    a.klen = m->key_lengths ? fx_data(m->key_lengths) : NULL;
    a.klen64 = m->key_lengths && m->key_lengths->dtype == FX_I64;
    a.causal = m->causal;
    int64_t rows = m->batch * m->L;
    if (rows == 0)
        return 0;
    long long *c = fx__cuda_counter(dev, 1), h;
    if (!c)
        return rows;
    LAUNCH(dev, rows, k_attn_softmax, a, F(p), (unsigned long long *)c);
    return fx__cuda_read_counter(dev, c, &h, 1) ? h : rows;
}

__global__ void k_attn_bw(const float *P, const float *M, float *G, int64_t S, int64_t rows)
{
    GRID_LOOP(r, rows)
    {
        const float *pr = P + r * S;
        float *g = G + r * S;
        if (M)
            for (int64_t j = 0; j < S; j++)
                g[j] *= M[r * S + j];
        double dot = 0.0;
        for (int64_t j = 0; j < S; j++)
            dot += (double)pr[j] * g[j];
        float fd = (float)dot;
        for (int64_t j = 0; j < S; j++)
            g[j] = pr[j] * (g[j] - fd);
    }
}

static void cu_attn_softmax_backward(const fx_tensor *p, const fx_tensor *drop, fx_tensor *dp)
{
    int64_t S = p->shape[p->ndim - 1], rows = S ? numel(p) / S : 0;
    LAUNCH(tdev(p), rows, k_attn_bw, F(p), drop ? F(drop) : NULL, F(dp), S, rows);
}

const fx_seq_kernels fx__cuda_seq = {
    .check_lengths = cu_check_lengths,
    .attn_softmax = cu_attn_softmax,
    .attn_softmax_backward = cu_attn_softmax_backward,
};
