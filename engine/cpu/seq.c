/* seq.c - CPU kernels: attention's masked softmax and the CTC loss.
 *
 * Attention rows (one query against its keys) and CTC samples are
 * independent, so each kernel is one FX_PFOR over them. The CTC recursions
 * run in log space: a product of T probabilities underflows float after a
 * few dozen frames, a sum of logs does not. */
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
    float mx = -INFINITY;
    bool nan = false;
    for (int64_t j = 0; j < limit; j++) {
        float x = row[j];
        if (add)
            x += add[j * ms];
        else if (keep && keep[j * ms] == 0)
            x = -INFINITY;
        nan |= x != x;
        row[j] = x;
        mx = x > mx ? x : mx;
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
    double sum = 0.0;
    for (int64_t j = 0; j < limit; j++) {
        float e = expf(row[j] - mx); /* exactly 0 for a dropped key */
        row[j] = e;
        sum += e;
    }
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

/* ------------------------------------------------------------------ CTC */

/* log(e^a + e^b + e^c), -inf when all three are. */
static inline float lse3(float a, float b, float c)
{
    float m = a > b ? a : b;
    m = c > m ? c : m;
    if (m == -INFINITY)
        return -INFINITY;
    return m + logf(expf(a - m) + expf(b - m) + expf(c - m));
}

/* One sample's view of the CTC inputs: extended label s is blank for even s
 * and target label (s - 1) / 2 for odd s. */
typedef struct {
    const float *lp;        /* log_probs, [T, N, C] */
    int64_t rowstride;      /* N * C: from frame t to t + 1 */
    const fx_tensor *tg;    /* targets */
    int64_t off;            /* where the sample's labels start in tg */
    int64_t Tn, tl, Sp;     /* input length, target length, 2 tl + 1 */
    int64_t blank;
} ctc_sample;

static inline int64_t ext_label(const ctc_sample *s, int64_t i)
{
    return (i & 1) ? fx_index_at(s->tg, s->off + (i >> 1)) : s->blank;
}

/* Whether the path may skip from extended position i - 2 (resp. to i + 2)
 * to i: only between distinct labels, across the blank between them. */
static inline bool can_skip(const ctc_sample *s, int64_t i, int64_t j)
{
    return (i & 1) && j >= 1 && j < s->Sp && ext_label(s, i) != ext_label(s, j);
}

static ctc_sample ctc_sample_of(const fx_ctc_args *a, const fx_tensor *log_probs,
                                const fx_tensor *targets, const fx_tensor *offsets,
                                const fx_tensor *il, const fx_tensor *tl, int64_t n)
{
    ctc_sample s;
    s.rowstride = a->N * a->C;
    s.lp = fx_f32(log_probs) + n * a->C;
    s.tg = targets;
    s.off = ((const int64_t *)fx_data(offsets))[n];
    s.Tn = fx_index_at(il, n);
    s.tl = fx_index_at(tl, n);
    s.Sp = 2 * s.tl + 1;
    s.blank = a->blank;
    return s;
}

static int64_t cpu_ctc_check(const fx_ctc_args *a, const fx_tensor *targets, int64_t padded_width,
                             const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                             fx_tensor *offsets, fx_tensor *inv_len, int64_t *smax,
                             fx_ctc_issue *issue)
{
    int64_t *off = fx_data(offsets);
    float *inv = fx_f32(inv_len);
    int64_t total = fx_tensor_numel(targets), pos = 0;
    *smax = 0;
    *issue = (fx_ctc_issue){ FX_CTC_OK, -1, 0, 0, 0 };
    for (int64_t n = 0; n < a->N; n++) {
        int64_t il = fx_index_at(input_lengths, n), tl = fx_index_at(target_lengths, n);
        int64_t room = padded_width >= 0 ? padded_width : total - pos;
        if (il < 1 || il > a->T) {
            *issue = (fx_ctc_issue){ FX_CTC_INPUT_LENGTH, n, il, a->T, 0 };
            return n;
        }
        if (tl < 0 || tl > room) {
            *issue = (fx_ctc_issue){ FX_CTC_TARGET_LENGTH, n, tl, room, 0 };
            return n;
        }
        off[n] = padded_width >= 0 ? n * padded_width : pos;
        int64_t repeats = 0, prev = -1;
        for (int64_t s = 0; s < tl; s++) {
            int64_t lab = fx_index_at(targets, off[n] + s);
            if (lab < 0 || lab >= a->C || lab == a->blank) {
                *issue = (fx_ctc_issue){ FX_CTC_LABEL, n, s, lab, 0 };
                return n;
            }
            repeats += lab == prev;
            prev = lab;
        }
        if (!a->zero_infinity && tl + repeats > il) {
            *issue = (fx_ctc_issue){ FX_CTC_ALIGN, n, tl, repeats, il };
            return n;
        }
        pos += tl;
        inv[n] = 1.0f / (float)(tl > 1 ? tl : 1);
        *smax = tl > *smax ? tl : *smax;
    }
    if (padded_width < 0 && pos != total) { /* labels left over: lengths and targets disagree */
        *issue = (fx_ctc_issue){ FX_CTC_TARGET_LENGTH, a->N, pos, total, 0 };
        return a->N;
    }
    return -1;
}

/*
 * alpha_t(s): log-probability of the paths through frames 0..t that end at
 * extended position s, emission at t included:
 *   alpha_0(0) = lp_0(blank), alpha_0(1) = lp_0(l_1),
 *   alpha_t(s) = lp_t(l'_s) + lse(alpha_{t-1}(s), alpha_{t-1}(s-1),
 *                                 alpha_{t-1}(s-2) when the skip is allowed).
 * -log p = -lse(alpha_{Tn-1}(Sp-1), alpha_{Tn-1}(Sp-2)).
 */
static void cpu_ctc_forward(const fx_ctc_args *a, const fx_tensor *log_probs,
                            const fx_tensor *targets, const fx_tensor *offsets,
                            const fx_tensor *il, const fx_tensor *tl, fx_tensor *alpha,
                            fx_tensor *nll, fx_tensor *loss)
{
    const int64_t W2 = 2 * a->smax + 1;
    float *A = fx_f32(alpha), *NL = fx_f32(nll), *LO = fx_f32(loss);
    FX_PFOR(a->N * a->T * W2, n, a->N, {
        ctc_sample s = ctc_sample_of(a, log_probs, targets, offsets, il, tl, n);
        float *al = A + n * a->T * W2;
        for (int64_t i = 0; i < s.Sp; i++)
            al[i] = i < 2 ? s.lp[ext_label(&s, i)] : -INFINITY;
        for (int64_t t = 1; t < s.Tn; t++) {
            const float *prev = al + (t - 1) * W2, *lp = s.lp + t * s.rowstride;
            float *cur = al + t * W2;
            for (int64_t i = 0; i < s.Sp; i++) {
                float x1 = i >= 1 ? prev[i - 1] : -INFINITY;
                float x2 = can_skip(&s, i, i - 2) ? prev[i - 2] : -INFINITY;
                cur[i] = lse3(prev[i], x1, x2) + lp[ext_label(&s, i)];
            }
        }
        const float *last = al + (s.Tn - 1) * W2;
        float ll = lse3(last[s.Sp - 1], s.Sp > 1 ? last[s.Sp - 2] : -INFINITY, -INFINITY);
        NL[n] = -ll;
        LO[n] = (a->zero_infinity && isinf(-ll)) ? 0.0f : -ll;
    });
}

/*
 * beta_t(s): log-probability of the paths through frames t..Tn-1 that start
 * at extended position s, emission at t included (the mirror of alpha).
 * alpha_t(s) + beta_t(s) - lp_t(l'_s) is then the log-probability of the
 * paths through s at t, and d(-log p)/d lp_t(c) = -sum over s with l'_s = c
 * of exp(alpha_t(s) + beta_t(s) - lp_t(c) + nll): each term is an occupancy
 * probability (<= 1), so it is summed directly. Only two frames of beta are
 * kept; the gradient of frame t is added as soon as beta_t is known.
 */
static void cpu_ctc_backward(const fx_ctc_args *a, const fx_tensor *log_probs,
                             const fx_tensor *targets, const fx_tensor *offsets,
                             const fx_tensor *il, const fx_tensor *tl, const fx_tensor *alpha,
                             const fx_tensor *nll, const fx_tensor *dloss, fx_tensor *beta,
                             fx_tensor *dlog_probs)
{
    const int64_t W2 = 2 * a->smax + 1;
    const float *A = fx_f32(alpha), *NL = fx_f32(nll), *DL = fx_f32(dloss);
    float *BT = fx_f32(beta), *DG = fx_f32(dlog_probs);
    FX_PFOR(a->N * a->T * W2, n, a->N, {
        ctc_sample s = ctc_sample_of(a, log_probs, targets, offsets, il, tl, n);
        float nl = NL[n], gr = DL[n];
        if (isfinite(nl) && gr != 0.0f) {
            const float *al = A + n * a->T * W2;
            float *bufs[2] = { BT + n * 2 * W2, BT + n * 2 * W2 + W2 };
            float *dg = DG + n * a->C;
            for (int64_t t = s.Tn - 1; t >= 0; t--) {
                const float *lp = s.lp + t * s.rowstride, *nxt = bufs[(t + 1) & 1];
                float *cur = bufs[t & 1];
                for (int64_t i = 0; i < s.Sp; i++) {
                    float x;
                    if (t == s.Tn - 1)
                        x = i >= s.Sp - 2 ? 0.0f : -INFINITY;
                    else
                        x = lse3(nxt[i], i + 1 < s.Sp ? nxt[i + 1] : -INFINITY,
                                 can_skip(&s, i, i + 2) ? nxt[i + 2] : -INFINITY);
                    cur[i] = x + lp[ext_label(&s, i)];
                }
                const float *at = al + t * W2;
                float *g = dg + t * s.rowstride;
                for (int64_t i = 0; i < s.Sp; i++) {
                    if (at[i] == -INFINITY || cur[i] == -INFINITY)
                        continue;
                    int64_t c = ext_label(&s, i);
                    g[c] -= gr * expf(at[i] + cur[i] - lp[c] + nl);
                }
            }
        }
    });
}

const fx_seq_kernels fx_cpu_seq = {
    .check_lengths = cpu_check_lengths,
    .attn_softmax = cpu_attn_softmax,
    .attn_softmax_backward = cpu_attn_softmax_backward,
    .ctc_check = cpu_ctc_check,
    .ctc_forward = cpu_ctc_forward,
    .ctc_backward = cpu_ctc_backward,
};
