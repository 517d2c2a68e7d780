/* loss.c - loss kernels: cross-entropy from labels or soft targets, and
 * binary cross-entropy from logits. Every formula is the numerically stable
 * one: log-sum-exp subtracts the row maximum, and BCE never exponentiates a
 * positive number. Rows (or elements) are independent, so large inputs are
 * split over threads. */
#include "cpu.h"

/* log(sum_c exp(x[c])) of one row of C logits, computed as
 * max + log(sum exp(x - max)) so no exp overflows. -inf for C == 0. The
 * terms are in (0, 1] with at least one 1, so a float sum loses nothing that
 * matters, and fx_exp_approx lets the loop vectorise (expf and a double log
 * were most of a small model's step). */
static float row_logsumexp(const float *x, int64_t C)
{
    if (C == 0)
        return -INFINITY;
    float m = x[0];
    for (int64_t c = 1; c < C; c++)
        m = x[c] > m ? x[c] : m;
    if (isinf(m)) /* all -inf, or a +inf: exp(x - m) would give NaN */
        return m;
    float s = 0.0f;
    for (int64_t c = 0; c < C; c++)
        s += fx_exp_approx(x[c] - m);
    return m + logf(s);
}

/* With few classes the per-row loops are too short to vectorise (the
 * logreg's 5 classes: the label losses were half its step). Rows then go in
 * blocks of CE_BLOCK / C: m[r] = the row maximum, e = exp(x - m[row]) as
 * one flat loop over the block, which vectorises. The same values as the
 * row at a time code (same operations, same order of the sums). */
#define CE_BLOCK 1024
static void exp_flat_base(float *e, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        e[i] = fx_exp_approx(e[i]);
}

/* 16 wide where the CPU has AVX-512; no "fma", so the same operations as
 * the baseline copy and the same results. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void exp_flat_avx512(float *e, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        e[i] = fx_exp_approx(e[i]);
}
#endif

static void exp_flat(float *e, int64_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx512f")) {
        exp_flat_avx512(e, n);
        return;
    }
#endif
    exp_flat_base(e, n);
}

static void block_exp(const float *X, int64_t rows, int64_t C, float *m, float *e)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *x = X + r * C;
        float mr = x[0];
        for (int64_t c = 1; c < C; c++)
            mr = x[c] > mr ? x[c] : mr;
        m[r] = mr;
        for (int64_t c = 0; c < C; c++)
            e[r * C + c] = x[c] - mr;
    }
    exp_flat(e, rows * C);
}

/* loss[n] = logsumexp(logits[n]) - logits[n, labels[n]].
 * logits (N, C), labels (N) i32/i64, loss (N). Returns -1, or the first
 * sample whose label is outside [0, C) (nothing is written then). */
int64_t cpu_ce_labels(const fx_tensor *logits, const fx_tensor *labels, fx_tensor *loss)
{
    int64_t N = logits->shape[0], C = logits->shape[1];
    for (int64_t n = 0; n < N; n++) {
        int64_t y = fx_index_at(labels, n);
        if (y < 0 || y >= C)
            return n;
    }
    const float *X = fx_f32(logits);
    float *L = fx_f32(loss);
    int64_t work = N * C;
    if (C > 0 && C <= CE_BLOCK) { /* few classes: whole blocks of rows */
        const int64_t B = CE_BLOCK / C, nb = (N + B - 1) / B;
        FX_PFOR(work, q, nb, float e[CE_BLOCK], m[CE_BLOCK];
                int64_t r0 = q * B, rows = N - r0 < B ? N - r0 : B;
                block_exp(X + r0 * C, rows, C, m, e);
                for (int64_t r = 0; r < rows; r++) {
                    const float *x = X + (r0 + r) * C;
                    float s = 0.0f;
                    for (int64_t c = 0; c < C; c++)
                        s += e[r * C + c];
                    float lse = isinf(m[r]) ? m[r] : m[r] + logf(s);
                    L[r0 + r] = lse - x[fx_index_at(labels, r0 + r)];
                });
        return -1;
    }
    FX_PFOR(work, n, N, const float *x = X + n * C;
            L[n] = row_logsumexp(x, C) - x[fx_index_at(labels, n)];);
    return -1;
}

/* dlogits[n, c] += dloss[n] * (softmax(logits[n])[c] - [c == labels[n]]).
 * Labels were validated by the forward. */
void cpu_ce_labels_backward(const fx_tensor *logits, const fx_tensor *labels,
                            const fx_tensor *dloss, fx_tensor *dlogits)
{
    int64_t N = logits->shape[0], C = logits->shape[1];
    const float *X = fx_f32(logits), *G = fx_f32(dloss);
    float *D = fx_f32(dlogits);
    int64_t work = N * C;
    if (C > 0 && C <= CE_BLOCK) { /* few classes: whole blocks of rows */
        const int64_t B = CE_BLOCK / C, nb = (N + B - 1) / B;
        FX_PFOR(work, q, nb, float e[CE_BLOCK], m[CE_BLOCK];
                int64_t r0 = q * B, rows = N - r0 < B ? N - r0 : B;
                block_exp(X + r0 * C, rows, C, m, e);
                for (int64_t r = 0; r < rows; r++) {
                    const float *er = e + r * C;
                    float *d = D + (r0 + r) * C, g = G[r0 + r], s = 0.0f;
                    for (int64_t c = 0; c < C; c++)
                        s += er[c];
                    float k = g / s;
                    for (int64_t c = 0; c < C; c++)
                        d[c] += k * er[c];
                    d[fx_index_at(labels, r0 + r)] -= g;
                });
        return;
    }
    FX_PFOR(work, n, N, const float *x = X + n * C;
            float *d = D + n * C, g = G[n], m = x[0], s = 0.0f;
            /* softmax = exp(x - max) / sum: no log needed here */
            for (int64_t c = 1; c < C; c++) m = x[c] > m ? x[c] : m;
            for (int64_t c = 0; c < C; c++) s += fx_exp_approx(x[c] - m);
            float k = g / s;
            for (int64_t c = 0; c < C; c++) d[c] += k * fx_exp_approx(x[c] - m);
            d[fx_index_at(labels, n)] -= g;);
}

/* loss[n] = -sum_c probs[n,c] * (logits[n,c] - lse[n]); logits, probs (N, C),
 * loss (N). */
void cpu_ce_soft(const fx_tensor *logits, const fx_tensor *probs, fx_tensor *loss)
{
    int64_t N = logits->shape[0], C = logits->shape[1];
    const float *X = fx_f32(logits), *P = fx_f32(probs);
    float *L = fx_f32(loss);
    int64_t work = N * C;
    FX_PFOR(work, n, N, const float *x = X + n * C, *p = P + n * C; float lse = row_logsumexp(x, C);
            double s = 0.0;
            for (int64_t c = 0; c < C; c++) s -= (double)p[c] * (double)(x[c] - lse);
            L[n] = (float)s;);
}

/* dlogits[n] += dloss[n] * (softmax(logits[n]) * sum(probs[n]) - probs[n]);
 * dprobs[n] += -dloss[n] * log_softmax(logits[n]). Either may be NULL. The
 * sum(probs) factor keeps the gradient exact for targets that do not sum
 * to one. */
void cpu_ce_soft_backward(const fx_tensor *logits, const fx_tensor *probs, const fx_tensor *dloss,
                          fx_tensor *dlogits, fx_tensor *dprobs)
{
    int64_t N = logits->shape[0], C = logits->shape[1];
    const float *X = fx_f32(logits), *P = fx_f32(probs), *G = fx_f32(dloss);
    float *DX = dlogits ? fx_f32(dlogits) : NULL, *DP = dprobs ? fx_f32(dprobs) : NULL;
    int64_t work = N * C;
    FX_PFOR(
        work, n, N, const float *x = X + n * C, *p = P + n * C;
        float g = G[n], lse = row_logsumexp(x, C); if (DX) {
            double psum = 0.0;
            for (int64_t c = 0; c < C; c++)
                psum += p[c];
            float *d = DX + n * C, gs = g * (float)psum;
            for (int64_t c = 0; c < C; c++)
                d[c] += gs * expf(x[c] - lse) - g * p[c];
        } if (DP) {
            float *d = DP + n * C;
            for (int64_t c = 0; c < C; c++)
                d[c] -= g * (x[c] - lse);
        });
}

/* loss = max(x, 0) - x t + log1p(exp(-|x|)): log(1 + e^x) - x t without
 * overflow for large |x|. x, t, loss of one shape. */
void cpu_bce_logits(const fx_tensor *x, const fx_tensor *t, fx_tensor *loss)
{
    int64_t n = fx_tensor_numel(x);
    const float *X = fx_f32(x), *T = fx_f32(t);
    float *L = fx_f32(loss);
    FX_PFOR(n, i, n, float v = X[i]; L[i] = fmaxf(v, 0.0f) - v * T[i] + log1pf(expf(-fabsf(v))););
}

/* sigmoid(v) from exp of a non-positive number only. */
static inline float stable_sigmoid(float v)
{
    if (v >= 0.0f)
        return 1.0f / (1.0f + expf(-v));
    float e = expf(v);
    return e / (1.0f + e);
}

/* dx += dloss * (sigmoid(x) - t); dt += -dloss * x. Either may be NULL. */
void cpu_bce_logits_backward(const fx_tensor *x, const fx_tensor *t, const fx_tensor *dloss,
                             fx_tensor *dx, fx_tensor *dt)
{
    int64_t n = fx_tensor_numel(x);
    const float *X = fx_f32(x), *T = fx_f32(t), *G = fx_f32(dloss);
    float *DX = dx ? fx_f32(dx) : NULL, *DT = dt ? fx_f32(dt) : NULL;
    if (DX) {
        FX_PFOR(n, i, n, DX[i] += G[i] * (stable_sigmoid(X[i]) - T[i]););
    }
    if (DT) {
        FX_PFOR(n, i, n, DT[i] -= G[i] * X[i];);
    }
}
