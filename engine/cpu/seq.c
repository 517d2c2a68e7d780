/* seq.c - CPU kernels: attention's masked softmax and the lengths check.
 *
 * Attention rows (one query against its keys) are independent, so each
 * kernel is one FX_PFOR over them. */
#include "cpu.h"

/* -------------------------------------------------------------- lengths */

static int64_t cpu_check_lengths(const fx_tensor *len, int64_t lo, int64_t hi)
{
    int64_t n = fx_tensor_numel(len);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = fx_index_at(len, i);
        if (v < lo || v > hi)
            return i;
    }
    return -1;
}

/* ------------------------------------------------------------ attention */

/*
 * One row of attention weights, in place: row holds the scaled scores of
 * query i against S keys. Keys at or past `limit` (key length, causal
 * diagonal) are dropped, and so are keys the mask drops (keep[j * ms] == 0,
 * or add[j * ms] == -inf); add, when given, is added first. The kept keys get
 * exp(x - max) / sum; a row with nothing kept is zeros. Returns whether the
 * row came out finite.
 */
static bool attn_row(float *row, int64_t S, int64_t limit, const float *add, const int32_t *keep,
                     int64_t ms)
{
    if (add)
        for (int64_t j = 0; j < limit; j++)
            row[j] += add[j * ms];
    else if (keep)
        for (int64_t j = 0; j < limit; j++)
            row[j] = fx_pick(-(int32_t)(keep[j * ms] != 0), row[j], -INFINITY);
    float mx = -INFINITY;
    bool nan = false;
    for (int64_t j = 0; j < limit; j++) {
        nan |= row[j] != row[j];
        mx = row[j] > mx ? row[j] : mx;
    }
    if (nan || mx == INFINITY) {
        for (int64_t j = 0; j < S; j++)
            row[j] = NAN;
        return false;
    }
    if (mx == -INFINITY) { /* every key dropped: no weight anywhere */
        memset(row, 0, (size_t)S * sizeof(float));
        return true;
    }
    for (int64_t j = 0; j < limit; j++) /* exactly 0 for a dropped key */
        row[j] = fx_exp_approx(row[j] - mx);
    double sum = 0.0;
    for (int64_t j = 0; j < limit; j++)
        sum += row[j];
    float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < limit; j++)
        row[j] *= inv;
    for (int64_t j = limit; j < S; j++)
        row[j] = 0.0f;
    return true;
}

static int64_t cpu_attn_softmax(const fx_attn_mask *m, fx_tensor *p)
{
    const int64_t L = m->L, S = m->S, rows = m->batch * L;
    float *P = fx_f32(p);
    const fx_tensor *mk = m->mask;
    const float *add = mk && mk->dtype == FX_F32 ? fx_f32(mk) : NULL;
    const int32_t *keep = mk && mk->dtype == FX_I32 ? (const int32_t *)fx_data(mk) : NULL;
    const int64_t msL = mk ? m->mstride[m->nbd] : 0, msS = mk ? m->mstride[m->nbd + 1] : 0;
    int64_t bad = 0;
    FX_PFOR(rows * S, r, rows, {
        int64_t b = r / L, i = r % L, limit = S;
        if (m->key_lengths) {
            int64_t len = fx_index_at(m->key_lengths, b / m->per_length);
            limit = len < limit ? len : limit;
        }
        if (m->causal && i + 1 < limit)
            limit = i + 1;
        int64_t mo = i * msL; /* the mask's offset for (b, i): unravel b */
        for (int d = m->nbd - 1; mk && d >= 0; d--) {
            int64_t q = b / m->bshape[d];
            mo += (b - q * m->bshape[d]) * m->mstride[d];
            b = q;
        }
        if (!attn_row(P + r * S, S, limit, add ? add + mo : NULL, keep ? keep + mo : NULL, msS)) {
            FX_OMP(atomic)
            bad++;
        }
    });
    return bad;
}

/* dS = p * (g - sum_j p_j g_j) row by row, g = dp (times drop), in place. */
static void cpu_attn_softmax_backward(const fx_tensor *p, const fx_tensor *drop, fx_tensor *dp)
{
    const int64_t S = p->shape[p->ndim - 1];
    const int64_t rows = S ? fx_tensor_numel(p) / S : 0;
    const float *P = fx_f32(p), *M = drop ? fx_f32(drop) : NULL;
    float *G = fx_f32(dp);
    FX_PFOR(rows * S, r, rows, {
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
    });
}

const fx_seq_kernels fx__cpu_seq = {
    .check_lengths = cpu_check_lengths,
    .attn_softmax = cpu_attn_softmax,
    .attn_softmax_backward = cpu_attn_softmax_backward,
};
