/*
 * loss_ctc.cu - the CTC loss's kernels (kern_loss.h; listed in loss.cu's
 * table). One thread per sample runs the whole log-space recursion, a direct
 * port of the CPU's (engine/cpu/loss_ctc.c), so both backends agree to float
 * rounding; the validation pass runs on one device thread because
 * concatenated targets make each sample's offset depend on the previous
 * ones. Both are correct first; a block-per-sample CTC is the known speed-up.
 */
#include "common.h"

__device__ static inline float lse3(float a, float b, float c)
{
    float hi = a > b ? a : b, lo = a > b ? b : a;
    float m = hi > c ? hi : c, t = hi < c ? hi : c;
    float mid = lo > t ? lo : t, mn = lo < c ? lo : c;
    if (m == -INFINITY)
        return m;
    return m + logf(1.0f + expf(mid - m) + expf(mn - m));
}

struct CA {
    int64_t T, N, C, smax, blank;
    bool zero_infinity;
};

static CA ca_of(const fx_ctc_args *a)
{
    CA c = { a->T, a->N, a->C, a->smax, a->blank, a->zero_infinity };
    return c;
}

/* issue out: [kind, sample, a, b, c, smax]. */
__global__ void k_ctc_check(CA a, const void *tg, bool tg64, int64_t total, int64_t pw,
                            const void *il, bool il64, const void *tl, bool tl64, int64_t *off,
                            float *inv, long long *out)
{
    int64_t pos = 0, smax = 0;
    for (int k = 0; k < 6; k++)
        out[k] = 0;
    for (int64_t n = 0; n < a.N; n++) {
        int64_t iln = idx_at(il, il64, n), tln = idx_at(tl, tl64, n);
        int64_t room = pw >= 0 ? pw : total - pos;
        long long issue[5] = { FX_CTC_OK, n, 0, 0, 0 };
        if (iln < 1 || iln > a.T) {
            issue[0] = FX_CTC_INPUT_LENGTH, issue[2] = iln, issue[3] = a.T;
        } else if (tln < 0 || tln > room) {
            issue[0] = FX_CTC_TARGET_LENGTH, issue[2] = tln, issue[3] = room;
        } else {
            off[n] = pw >= 0 ? n * pw : pos;
            int64_t repeats = 0, prev = -1;
            for (int64_t s = 0; s < tln && issue[0] == FX_CTC_OK; s++) {
                int64_t lab = idx_at(tg, tg64, off[n] + s);
                if (lab < 0 || lab >= a.C || lab == a.blank)
                    issue[0] = FX_CTC_LABEL, issue[2] = s, issue[3] = lab;
                repeats += lab == prev;
                prev = lab;
            }
            if (issue[0] == FX_CTC_OK && !a.zero_infinity && tln + repeats > iln)
                issue[0] = FX_CTC_ALIGN, issue[2] = tln, issue[3] = repeats, issue[4] = iln;
        }
        if (issue[0] != FX_CTC_OK) {
            for (int k = 0; k < 5; k++)
                out[k] = issue[k];
            return;
        }
        pos += tln;
        inv[n] = 1.0f / (float)(tln > 1 ? tln : 1);
        smax = tln > smax ? tln : smax;
    }
    if (pw < 0 && pos != total) {
        out[0] = FX_CTC_TARGET_LENGTH, out[1] = a.N, out[2] = pos, out[3] = total;
        return;
    }
    out[5] = smax;
}

int64_t cu_ctc_check(const fx_ctc_args *a, const fx_tensor *targets, int64_t padded_width,
                     const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                     fx_tensor *offsets, fx_tensor *inv_len, int64_t *smax, fx_ctc_issue *issue)
{
    int dev = tdev(targets);
    long long *c = fx__cuda_counter(dev, 6);
    if (!c) { /* error recorded; blame the first sample */
        *smax = 0;
        *issue = (fx_ctc_issue){ FX_CTC_INPUT_LENGTH, 0, 0, a->T, 0 };
        return 0;
    }
    k_ctc_check<<<1, 1, 0, fx__cuda_stream(dev)>>>(
        ca_of(a), fx_data(targets), targets->dtype == FX_I64, numel(targets), padded_width,
        fx_data(input_lengths), input_lengths->dtype == FX_I64, fx_data(target_lengths),
        target_lengths->dtype == FX_I64, (int64_t *)fx_data(offsets), F(inv_len), c);
    CU_LAUNCHED(dev);
    long long h[6];
    if (!fx__cuda_read_counter(dev, c, h, 6)) {
        *smax = 0;
        *issue = (fx_ctc_issue){ FX_CTC_INPUT_LENGTH, 0, 0, a->T, 0 };
        return 0;
    }
    *smax = h[5];
    issue->kind = (fx_ctc_issue_kind)h[0];
    issue->sample = h[0] == FX_CTC_OK ? -1 : h[1];
    issue->a = h[2];
    issue->b = h[3];
    issue->c = h[4];
    return h[0] == FX_CTC_OK ? -1 : h[1];
}

__device__ static inline void ctc_range(int64_t Sp, int64_t Tn, int64_t t, int64_t *lo,
                                        int64_t *hi)
{
    int64_t l = Sp - 2 * (Tn - t), h = 2 * t + 2;
    *lo = l > 0 ? l : 0;
    *hi = h < Sp ? h : Sp;
}

__global__ void k_ctc_fwd(CA a, const float *LP, const void *tg, bool tg64, const int64_t *off,
                          const void *il, bool il64, const void *tl, bool tl64, int32_t *EXT,
                          float *A, float *NL, float *LO)
{
    GRID_LOOP(n, a.N)
    {
        const int64_t W2 = 2 * a.smax + 1, R = W2 + 2, rs = a.N * a.C;
        const float *lp = LP + n * a.C;
        int32_t *lab = EXT + n * 2 * R, *skip = lab + R;
        int64_t Tn = idx_at(il, il64, n), tln = idx_at(tl, tl64, n), Sp = 2 * tln + 1;
        int64_t repeats = 0;
        for (int64_t i = 0; i < R; i++) {
            bool odd = (i & 1) && i < Sp;
            lab[i] = odd ? (int32_t)idx_at(tg, tg64, off[n] + (i >> 1)) : (int32_t)a.blank;
            bool rep = odd && i >= 3 && lab[i] == lab[i - 2];
            repeats += rep;
            skip[i] = -(int32_t)(odd && i >= 3 && !rep);
        }
        float *row = A + n * a.T * R;
        bool nan = false, able = tln + repeats <= Tn;
        row[0] = row[1] = -INFINITY;
        for (int64_t i = 0; i < Sp; i++) {
            row[2 + i] = i < 2 ? lp[lab[i]] : -INFINITY;
            nan |= row[2 + i] != row[2 + i];
        }
        for (int64_t t = 1; able && t < Tn; t++) {
            const float *prev = row + 2, *lpt = lp + t * rs;
            row += R;
            row[0] = row[1] = -INFINITY;
            float *cur = row + 2;
            int64_t lo, hi;
            ctc_range(Sp, Tn, t, &lo, &hi);
            for (int64_t i = lo; i < hi; i++) {
                float v = lpt[lab[i]];
                nan |= v != v;
                cur[i] = v + lse3(prev[i], prev[i - 1], skip[i] ? prev[i - 2] : -INFINITY);
            }
            for (int64_t i = hi; i < hi + 2 && i < Sp; i++)
                cur[i] = -INFINITY;
        }
        const float *last = row + 2;
        float ll = !able ? -INFINITY : lse3(last[Sp - 1], Sp > 1 ? last[Sp - 2] : -INFINITY, -INFINITY);
        NL[n] = nan ? NAN : -ll;
        LO[n] = (a.zero_infinity && isinf(NL[n])) ? 0.0f : NL[n];
    }
}

void cu_ctc_forward(const fx_ctc_args *a, const fx_tensor *log_probs, const fx_tensor *targets,
                    const fx_tensor *offsets, const fx_tensor *input_lengths,
                    const fx_tensor *target_lengths, fx_tensor *ext, fx_tensor *alpha,
                    fx_tensor *nll, fx_tensor *loss)
{
    LAUNCH(tdev(log_probs), a->N, k_ctc_fwd, ca_of(a), F(log_probs), fx_data(targets),
           targets->dtype == FX_I64, (const int64_t *)fx_data(offsets), fx_data(input_lengths),
           input_lengths->dtype == FX_I64, fx_data(target_lengths),
           target_lengths->dtype == FX_I64, (int32_t *)fx_data(ext), F(alpha), F(nll), F(loss));
}

__global__ void k_ctc_bwd(CA a, const float *LP, const void *il, bool il64, const void *tl,
                          bool tl64, const int32_t *EXT, const float *A, const float *NL,
                          const float *DL, float *SC, float *DG)
{
    GRID_LOOP(n, a.N)
    {
        const int64_t W2 = 2 * a.smax + 1, R = W2 + 2, rs = a.N * a.C;
        const float *lp = LP + n * a.C;
        const int32_t *lab = EXT + n * 2 * R, *skip = lab + R;
        int64_t Tn = idx_at(il, il64, n), tln = idx_at(tl, tl64, n), Sp = 2 * tln + 1;
        const float nl = NL[n], gr = DL[n];
        if (!isfinite(nl) || gr == 0.0f)
            continue;
        float *bufs[2] = { SC + n * 3 * R, SC + n * 3 * R + R }, *occ = SC + n * 3 * R + 2 * R;
        float *dg = DG + n * a.C;
        for (int64_t t = Tn - 1; t >= 0; t--) {
            const float *lpt = lp + t * rs, *nxt = bufs[(t + 1) & 1];
            const float *at = A + (n * a.T + t) * R + 2;
            float *cur = bufs[t & 1];
            int64_t lo, hi;
            ctc_range(Sp, Tn, t, &lo, &hi);
            for (int64_t i = lo; i < hi; i++)
                occ[i] = lpt[lab[i]];
            if (t == Tn - 1)
                for (int64_t i = lo; i < hi; i++)
                    cur[i] = i >= Sp - 2 ? occ[i] : -INFINITY;
            else
                for (int64_t i = lo; i < hi; i++)
                    cur[i] = lse3(nxt[i], nxt[i + 1], skip[i + 2] ? nxt[i + 2] : -INFINITY) + occ[i];
            for (int64_t i = lo - 2 > 0 ? lo - 2 : 0; i < lo; i++)
                cur[i] = -INFINITY;
            cur[Sp] = cur[Sp + 1] = -INFINITY;
            for (int64_t i = lo; i < hi; i++) {
                float x = expf(at[i] + cur[i] - occ[i] + nl);
                occ[i] = (at[i] == -INFINITY || cur[i] == -INFINITY) ? 0.0f : x;
            }
            float *g = dg + t * rs, blank = 0.0f;
            for (int64_t i = lo + (lo & 1); i < hi; i += 2)
                blank += occ[i];
            g[a.blank] -= gr * blank;
            for (int64_t i = lo | 1; i < hi; i += 2)
                g[lab[i]] -= gr * occ[i];
        }
    }
}

void cu_ctc_backward(const fx_ctc_args *a, const fx_tensor *log_probs,
                     const fx_tensor *input_lengths, const fx_tensor *target_lengths,
                     const fx_tensor *ext, const fx_tensor *alpha, const fx_tensor *nll,
                     const fx_tensor *dloss, fx_tensor *scratch, fx_tensor *dlog_probs)
{
    LAUNCH(tdev(log_probs), a->N, k_ctc_bwd, ca_of(a), F(log_probs), fx_data(input_lengths),
           input_lengths->dtype == FX_I64, fx_data(target_lengths),
           target_lengths->dtype == FX_I64, (const int32_t *)fx_data(ext), F(alpha), F(nll),
           F(dloss), F(scratch), F(dlog_probs));
}
