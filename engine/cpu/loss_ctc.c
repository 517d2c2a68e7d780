/* loss_ctc.c - CPU kernels of the CTC loss (kern_loss.h): input checks,
 * the alpha recursion and the beta recursion with the gradient.
 *
 * Samples are independent, so each kernel is one FX_PFOR over them. The
 * recursions run in log space: a product of T probabilities underflows
 * float after a few dozen frames, a sum of logs does not. */
#include "cpu.h"

/*
 * log(e^a + e^b + e^c), -inf when all three are: the largest m plus
 * log(1 + e^(mid - m) + e^(min - m)), so the log's argument is in [1, 3].
 */
static inline float lse3(float a, float b, float c)
{
    float hi = a > b ? a : b, lo = a > b ? b : a;
    float m = hi > c ? hi : c, t = hi < c ? hi : c;
    float mid = lo > t ? lo : t, mn = lo < c ? lo : c;
    float r = m + fx_log_approx(1.0f + fx_exp_approx(mid - m) + fx_exp_approx(mn - m));
    return fx_pick(fx_neginf_mask(m), m, r);
}

/*
 * One sample's view of the CTC inputs. The extended label sequence has
 * Sp = 2 tl + 1 positions: blank at even s, target label (s - 1) / 2 at odd
 * s. lab[s] holds it and skip[s] is all ones (a mask for pick) where a path
 * may jump from s - 2 to s (odd s >= 3 whose label differs from that at
 * s - 2), else 0. Both rows have W2 + 2 entries, zero past Sp, so
 * skip[s + 2] is readable for every s < Sp.
 */
typedef struct {
    const float *lp;   /* log_probs of the sample at frame 0: lp[t * rowstride + c] */
    int64_t rowstride; /* N * C */
    int32_t *lab, *skip;
    int64_t Tn, tl, Sp;
} ctc_sample;

static ctc_sample ctc_sample_of(const fx_ctc_args *a, const fx_tensor *log_probs,
                                const fx_tensor *ext, const fx_tensor *il, const fx_tensor *tl,
                                int64_t n)
{
    ctc_sample s;
    const int64_t W2 = 2 * a->smax + 1;
    s.rowstride = a->N * a->C;
    s.lp = fx_f32(log_probs) + n * a->C;
    s.lab = (int32_t *)fx_data(ext) + n * 2 * (W2 + 2);
    s.skip = s.lab + W2 + 2;
    s.Tn = fx_index_at(il, n);
    s.tl = fx_index_at(tl, n);
    s.Sp = 2 * s.tl + 1;
    return s;
}

/* cur[i] += lse(prev[i], prev[i-1], prev[i-2] where skip[i]) for i < Sp;
 * prev[-1] and prev[-2] are -inf guards. One frame of the alpha recursion
 * (cur holds the frame's log_probs); the loop vectorises. */
static void alpha_step(const float *restrict prev, const int32_t *restrict skip, int64_t Sp,
                       float *restrict cur)
{
    for (int64_t i = 0; i < Sp; i++)
        cur[i] += lse3(prev[i], prev[i - 1], fx_pick(skip[i], prev[i - 2], -INFINITY));
}

/* cur[i] = lp[i] + lse(nxt[i], nxt[i+1], nxt[i+2] where skip[i+2]) for
 * i < Sp; nxt[Sp] and nxt[Sp+1] are -inf guards. One frame of the beta
 * recursion. */
static void beta_step(const float *restrict nxt, const int32_t *restrict skip,
                      const float *restrict lp, int64_t Sp, float *restrict cur)
{
    for (int64_t i = 0; i < Sp; i++)
        cur[i] = lse3(nxt[i], nxt[i + 1], fx_pick(skip[i + 2], nxt[i + 2], -INFINITY)) + lp[i];
}

/* In place, occ[i] = exp(alpha[i] + beta[i] - occ[i] + nll) (occ holding
 * the frame's log_probs): the posterior of position i, 0 where alpha or beta
 * is -inf. */
static void posteriors(const float *restrict alpha, const float *restrict beta, float nll,
                       int64_t Sp, float *restrict occ)
{
    for (int64_t i = 0; i < Sp; i++) {
        float x = fx_exp_approx(alpha[i] + beta[i] - occ[i] + nll);
        occ[i] = fx_pick(fx_neginf_mask(alpha[i]) | fx_neginf_mask(beta[i]), 0.0f, x);
    }
}

int64_t cpu_ctc_check(const fx_ctc_args *a, const fx_tensor *targets, int64_t padded_width,
                      const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                      fx_tensor *offsets, fx_tensor *inv_len, int64_t *smax, fx_ctc_issue *issue)
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
 * The extended positions a complete path can occupy at frame t: at most
 * 2t + 1 (two steps per frame from 0), at least Sp - 2 (Tn - t) (the end
 * must still be reachable). Cells outside stay -inf, so the recursions skip
 * them: for targets of length tl in T frames that saves about tl / T of the
 * work. Cells next to the range that the neighbouring frame reads are set
 * to -inf explicitly.
 */
static inline void ctc_range(const ctc_sample *s, int64_t t, int64_t *lo, int64_t *hi)
{
    int64_t l = s->Sp - 2 * (s->Tn - t), h = 2 * t + 2;
    *lo = l > 0 ? l : 0;
    *hi = h < s->Sp ? h : s->Sp;
}

/*
 * alpha_t(s): log-probability of the paths through frames 0..t that end at
 * extended position s, emission at t included:
 *   alpha_0(0) = lp_0(blank), alpha_0(1) = lp_0(l_1),
 *   alpha_t(s) = lp_t(l'_s) + lse(alpha_{t-1}(s), alpha_{t-1}(s-1),
 *                                 alpha_{t-1}(s-2) when skip[s]).
 * -log p = -lse(alpha_{Tn-1}(Sp-1), alpha_{Tn-1}(Sp-2)). Each alpha row has
 * two -inf cells in front so s - 1 and s - 2 need no test. A sample that
 * cannot align (tl + repeats > Tn, only met with zero_infinity) is inf
 * without a recursion.
 */
void cpu_ctc_forward(const fx_ctc_args *a, const fx_tensor *log_probs, const fx_tensor *targets,
                     const fx_tensor *offsets, const fx_tensor *il, const fx_tensor *tl,
                     fx_tensor *ext, fx_tensor *alpha, fx_tensor *nll, fx_tensor *loss)
{
    const int64_t W2 = 2 * a->smax + 1, R = W2 + 2;
    const int64_t *off = fx_data(offsets);
    float *A = fx_f32(alpha), *NL = fx_f32(nll), *LO = fx_f32(loss);
    FX_PFOR(a->N * a->T * W2, n, a->N, {
        ctc_sample s = ctc_sample_of(a, log_probs, ext, il, tl, n);
        int64_t repeats = 0;
        for (int64_t i = 0; i < R; i++) {
            bool odd = (i & 1) && i < s.Sp;
            s.lab[i] = odd ? (int32_t)fx_index_at(targets, off[n] + (i >> 1)) : (int32_t)a->blank;
            bool rep = odd && i >= 3 && s.lab[i] == s.lab[i - 2];
            repeats += rep;
            s.skip[i] = -(int32_t)(odd && i >= 3 && !rep); /* a mask */
        }
        float *row = A + n * a->T * R;
        bool nan = false, able = s.tl + repeats <= s.Tn;
        row[0] = row[1] = -INFINITY;
        for (int64_t i = 0; i < s.Sp; i++) {
            row[2 + i] = i < 2 ? s.lp[s.lab[i]] : -INFINITY;
            nan |= row[2 + i] != row[2 + i];
        }
        for (int64_t t = 1; able && t < s.Tn; t++) {
            const float *prev = row + 2, *lpt = s.lp + t * s.rowstride;
            row += R;
            row[0] = row[1] = -INFINITY;
            float *cur = row + 2;
            int64_t lo, hi;
            ctc_range(&s, t, &lo, &hi);
            for (int64_t i = lo; i < hi; i++) { /* gather first: the next loop vectorises */
                cur[i] = lpt[s.lab[i]];
                nan |= cur[i] != cur[i];
            }
            alpha_step(prev + lo, s.skip + lo, hi - lo, cur + lo);
            for (int64_t i = hi; i < hi + 2 && i < s.Sp; i++)
                cur[i] = -INFINITY;
        }
        const float *last = row + 2;
        float ll = !able ? -INFINITY
                         : lse3(last[s.Sp - 1], s.Sp > 1 ? last[s.Sp - 2] : -INFINITY, -INFINITY);
        NL[n] = nan ? NAN : -ll;
        LO[n] = (a->zero_infinity && isinf(NL[n])) ? 0.0f : NL[n];
    });
}

/*
 * beta_t(s): log-probability of the paths through frames t..Tn-1 that start
 * at extended position s, emission at t included (the mirror of alpha; rows
 * end in two -inf cells so s + 1 and s + 2 need no test). Then
 * alpha_t(s) + beta_t(s) - lp_t(l'_s) + nll is the log of the posterior
 * probability that frame t sits at position s, and
 *   d nll / d lp_t(c) = -sum over s with l'_s = c of that probability,
 * each term <= 1, so it is summed directly. Only two frames of beta are
 * kept (the gradient of frame t is added as soon as beta_t is known); the
 * third scratch row holds the posteriors before they are scattered.
 */
void cpu_ctc_backward(const fx_ctc_args *a, const fx_tensor *log_probs, const fx_tensor *il,
                      const fx_tensor *tl, const fx_tensor *ext, const fx_tensor *alpha,
                      const fx_tensor *nll, const fx_tensor *dloss, fx_tensor *scratch,
                      fx_tensor *dlog_probs)
{
    const int64_t W2 = 2 * a->smax + 1, R = W2 + 2;
    const float *A = fx_f32(alpha), *NL = fx_f32(nll), *DL = fx_f32(dloss);
    float *SC = fx_f32(scratch), *DG = fx_f32(dlog_probs);
    FX_PFOR(a->N * a->T * W2, n, a->N, {
        ctc_sample s = ctc_sample_of(a, log_probs, ext, il, tl, n);
        const float nl = NL[n], gr = DL[n];
        if (isfinite(nl) && gr != 0.0f) {
            float *bufs[2] = { SC + n * 3 * R, SC + n * 3 * R + R }, *occ = SC + n * 3 * R + 2 * R;
            float *dg = DG + n * a->C;
            for (int64_t t = s.Tn - 1; t >= 0; t--) {
                const float *lpt = s.lp + t * s.rowstride, *nxt = bufs[(t + 1) & 1];
                const float *at = A + (n * a->T + t) * R + 2;
                float *cur = bufs[t & 1];
                int64_t lo, hi;
                ctc_range(&s, t, &lo, &hi);
                for (int64_t i = lo; i < hi; i++) /* gather first: the next loops vectorise */
                    occ[i] = lpt[s.lab[i]];
                if (t == s.Tn - 1)
                    for (int64_t i = lo; i < hi; i++)
                        cur[i] = i >= s.Sp - 2 ? occ[i] : -INFINITY;
                else
                    beta_step(nxt + lo, s.skip + lo, occ + lo, hi - lo, cur + lo);
                for (int64_t i = lo - 2 > 0 ? lo - 2 : 0; i < lo; i++)
                    cur[i] = -INFINITY;
                cur[s.Sp] = cur[s.Sp + 1] = -INFINITY;
                posteriors(at + lo, cur + lo, nl, hi - lo, occ + lo);
                float *g = dg + t * s.rowstride, blank = 0.0f;
                for (int64_t i = lo + (lo & 1); i < hi; i += 2)
                    blank += occ[i];
                g[a->blank] -= gr * blank;
                for (int64_t i = lo | 1; i < hi; i += 2)
                    g[s.lab[i]] -= gr * occ[i];
            }
        }
    });
}
