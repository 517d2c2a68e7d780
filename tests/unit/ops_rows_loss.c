/* ops_rows_loss.c - registry rows of the losses: mse, cross-entropy (labels
 * and soft targets), binary cross-entropy from logits and CTC, each with
 * every reduction. See ops_registry.h. */
#include "ops_registry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S1(a) { 1, { a } }
#define S2(a, b) { 2, { a, b } }
#define S3(a, b, c) { 3, { a, b, c } }

/* Reduces per-sample losses as red asks into out (a scalar unless FX_NONE,
 * then [n] with the given shape). */
static void reduce_into(const double *per, int64_t n, fx_reduction red, int ndim,
                        const int64_t *shape, or_host *out)
{
    if (red == FX_NONE) {
        or_host_init(out, ndim, shape);
        memcpy(out->v, per, (size_t)n * sizeof *per);
        return;
    }
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += per[i];
    or_host_init(out, 0, NULL);
    out->v[0] = red == FX_SUM ? s : s / (double)n;
}

typedef struct {
    fx_reduction red;
    fx_dtype dt;       /* of the labels */
    int64_t labels[16];
    bool scaled;       /* soft targets times 1.7: rows that do not sum to 1 */
} loss_arg;

/* log(sum exp(x[0..C))) in double, max-shifted. */
static double lse(const double *x, int64_t C)
{
    double m = x[0], s = 0.0;
    for (int64_t c = 1; c < C; c++)
        m = fmax(m, x[c]);
    for (int64_t c = 0; c < C; c++)
        s += exp(x[c] - m);
    return m + log(s);
}

/* -------------------------------------------------------------------- mse */

static fx_tensor *f_mse(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                        const or_case *c)
{
    return fx_mse_loss(ctx, in[0], in[1], ((const loss_arg *)c->arg)->red);
}

static void r_mse(const or_ref *r)
{
    const or_host *p = &r->in[0], *t = &r->in[1];
    double *per = malloc((size_t)p->n * sizeof *per);
    for (int64_t i = 0; i < p->n; i++)
        per[i] = (p->v[i] - t->v[i]) * (p->v[i] - t->v[i]);
    reduce_into(per, p->n, ((const loss_arg *)r->c->arg)->red, p->ndim, p->shape, r->out);
    free(per);
}

/* Each shape with every reduction. */
#define REDS3(label, nin, shapes)                                                                \
    { label ", mean", nin, shapes, 0, &(const loss_arg){ FX_MEAN } },                           \
    { label ", sum", nin, shapes, 0, &(const loss_arg){ FX_SUM } },                             \
    { label ", none", nin, shapes, 0, &(const loss_arg){ FX_NONE } }
#define PAIR(s) { s, s }

static const or_case MSE_CASES[] = {
    REDS3("[4]", 2, PAIR(S1(4))),
    REDS3("[2,3]", 2, PAIR(S2(2, 3))),
    REDS3("[3,5]", 2, PAIR(S2(3, 5))),
    { "[4,3], none", 2, PAIR(S2(4, 3)), 0, &(const loss_arg){ FX_NONE } },
};

/* --------------------------------------------------------- cross-entropy */

static fx_tensor *f_ce(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                       const or_case *c)
{
    const loss_arg *a = c->arg;
    int64_t N = c->in[0].shape[0];
    fx_tensor *labels = or_index(ctx, a->dt, 1, &N, a->labels);
    return fx_cross_entropy(ctx, in[0], labels, a->red);
}

static void r_ce(const or_ref *r)
{
    const loss_arg *a = r->c->arg;
    const or_host *x = &r->in[0];
    int64_t N = x->shape[0], C = x->shape[1];
    double per[64];
    for (int64_t n = 0; n < N; n++)
        per[n] = lse(x->v + n * C, C) - x->v[n * C + a->labels[n]];
    reduce_into(per, N, a->red, 1, &N, r->out);
}

#define CE(label, shape, dt, ...)                                                                \
    { label ", mean", 1, { shape }, 0, &(const loss_arg){ FX_MEAN, dt, { __VA_ARGS__ } } },     \
    { label ", sum", 1, { shape }, 0, &(const loss_arg){ FX_SUM, dt, { __VA_ARGS__ } } },       \
    { label ", none", 1, { shape }, 0, &(const loss_arg){ FX_NONE, dt, { __VA_ARGS__ } } }

static const or_case CE_CASES[] = {
    CE("[4,3] i32", S2(4, 3), FX_I32, 2, 0, 1, 2),
    CE("[2,6] i64", S2(2, 6), FX_I64, 5, 0),
    CE("[1,1] i32", S2(1, 1), FX_I32, 0),
    CE("[5,2] i64", S2(5, 2), FX_I64, 1, 0, 0, 1, 1),
    CE("[5,4] i32", S2(5, 4), FX_I32, 3, 0, 1, 1, 2),
    CE("[3,7] i64", S2(3, 7), FX_I64, 6, 0, 3),
    CE("[8,2] i32", S2(8, 2), FX_I32, 0, 1, 1, 0, 0, 0, 1, 1),
    { "[6,10] i32, none", 1, { S2(6, 10) }, 0,
      &(const loss_arg){ FX_NONE, FX_I32, { 0, 4, 2, 9, 9, 1 } } },
};

/* ------------------------------------------------ cross-entropy, soft targets */

static fx_tensor *f_ce_soft(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                            const or_case *c)
{
    const loss_arg *a = c->arg;
    fx_tensor *p = a->scaled ? fx_scale(ctx, in[1], 1.7f) : in[1];
    return fx_cross_entropy_soft(ctx, in[0], p, a->red);
}

static void r_ce_soft(const or_ref *r)
{
    const loss_arg *a = r->c->arg;
    const or_host *x = &r->in[0], *p = &r->in[1];
    int64_t N = x->shape[0], C = x->shape[1];
    double per[64];
    for (int64_t n = 0; n < N; n++) {
        double l = lse(x->v + n * C, C);
        per[n] = 0.0;
        for (int64_t c = 0; c < C; c++)
            per[n] -= (a->scaled ? (double)1.7f : 1.0) * p->v[n * C + c] * (x->v[n * C + c] - l);
    }
    reduce_into(per, N, a->red, 1, &N, r->out);
}

#define SOFT(label, shape, scaled)                                                               \
    { label ", mean", 2, { shape, shape }, 0, &(const loss_arg){ FX_MEAN, 0, { 0 }, scaled } }, \
    { label ", sum", 2, { shape, shape }, 0, &(const loss_arg){ FX_SUM, 0, { 0 }, scaled } },   \
    { label ", none", 2, { shape, shape }, 0, &(const loss_arg){ FX_NONE, 0, { 0 }, scaled } }

static const or_case CE_SOFT_CASES[] = {
    SOFT("[3,4]", S2(3, 4), false),
    SOFT("[1,5]", S2(1, 5), false),
    SOFT("[4,1]", S2(4, 1), false),
    SOFT("[2,3] rows summing to 1.7", S2(2, 3), true),
    SOFT("[4,5]", S2(4, 5), false),
    { "[5,7] rows summing to 1.7, none", 2, PAIR(S2(5, 7)), 0,
      &(const loss_arg){ FX_NONE, 0, { 0 }, true } },
};

/* -------------------------------------------------------------------- bce */

static fx_tensor *f_bce(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                        const or_case *c)
{
    return fx_bce_with_logits(ctx, in[0], in[1], ((const loss_arg *)c->arg)->red);
}

static void r_bce(const or_ref *r)
{
    const or_host *x = &r->in[0], *t = &r->in[1];
    double *per = malloc((size_t)x->n * sizeof *per);
    for (int64_t i = 0; i < x->n; i++) { /* log(1 + e^x) - x t, stable for large |x| */
        double v = x->v[i];
        per[i] = (v > 0 ? v + log1p(exp(-v)) : log1p(exp(v))) - v * t->v[i];
    }
    reduce_into(per, x->n, ((const loss_arg *)r->c->arg)->red, x->ndim, x->shape, r->out);
    free(per);
}

static const or_case BCE_CASES[] = {
    REDS3("[5]", 2, PAIR(S1(5))),
    REDS3("[3,4]", 2, PAIR(S2(3, 4))),
    REDS3("[2,1,3]", 2, PAIR(S3(2, 1, 3))),
    REDS3("[2,3,2]", 2, PAIR(S3(2, 3, 2))),
    { "[5,7], none", 2, PAIR(S2(5, 7)), 0, &(const loss_arg){ FX_NONE } },
};

/* -------------------------------------------------------------------- ctc */

/* The batches test_ctc shares (ops_registry.h). */
const or_ctc_batch OR_CTC_MIXED = {
    .T = 6, .N = 5, .C = 4, .blank = 0, .il = { 6, 4, 5, 1, 6 }, .tl = { 3, 2, 0, 1, 4 },
    .tg = { { 1, 2, 1 }, { 3, 3 }, { 0 }, { 2 }, { 1, 1, 2, 2 } },
};
const or_ctc_batch OR_CTC_BLANK_LAST = {
    .T = 5, .N = 3, .C = 4, .blank = 3, .il = { 5, 3, 4 }, .tl = { 2, 3, 3 },
    .tg = { { 0, 0 }, { 0, 1, 2 }, { 1, 0, 2 } },
};
/* The cross-backend table's batch. */
static const or_ctc_batch BATCH2 = {
    .T = 8, .N = 2, .C = 5, .blank = 0, .il = { 8, 6 }, .tl = { 3, 2 },
    .tg = { { 1, 2, 2 }, { 3, 1 } },
};

typedef struct {
    const or_ctc_batch *b;
    bool padded, i32, logits;
    fx_reduction red;
} ctc_arg;

/* Targets padded [N, 6] (padding 99, which must be ignored) or
 * concatenated; input lengths in one dtype, target lengths in the other. */
static fx_tensor *f_ctc(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                        const or_case *c)
{
    const ctc_arg *a = c->arg;
    const or_ctc_batch *b = a->b;
    int64_t flat[36], W = 6, total = 0;
    for (int64_t n = 0; n < b->N; n++)
        for (int64_t s = 0; s < (a->padded ? W : b->tl[n]); s++)
            flat[a->padded ? n * W + s : total++] = s < b->tl[n] ? b->tg[n][s] : 99;
    fx_dtype dt = a->i32 ? FX_I32 : FX_I64, other = a->i32 ? FX_I64 : FX_I32;
    fx_tensor *tg = a->padded ? or_index(ctx, dt, 2, (int64_t[]){ b->N, W }, flat)
                              : or_index(ctx, dt, 1, &total, flat);
    fx_tensor *il = or_index(ctx, dt, 1, &b->N, b->il), *tl = or_index(ctx, other, 1, &b->N, b->tl);
    return fx_ctc_loss(ctx, in[0], tg, il, tl, &(fx_ctc_opts){ .blank = b->blank,
                                                               .reduction = a->red,
                                                               .from_logits = a->logits });
}

/* The brute force is or_ctc_brute (declared in ops_registry.h), shared
 * with test_ctc. */
double or_ctc_brute(const double *lp, int64_t N, int64_t C, int64_t n, int64_t Tn,
                    const int64_t *tgt, int64_t tl, int64_t blank)
{
    int64_t paths = 1, lab[16], out[16];
    for (int64_t t = 0; t < Tn; t++)
        paths *= C;
    double total = 0.0;
    for (int64_t p = 0; p < paths; p++) {
        int64_t rem = p, len = 0, prev = -1;
        for (int64_t t = 0; t < Tn; t++) {
            lab[t] = rem % C;
            rem /= C;
        }
        for (int64_t t = 0; t < Tn; t++) {
            if (lab[t] != prev && lab[t] != blank)
                out[len++] = lab[t];
            prev = lab[t];
        }
        if (len != tl || (len && memcmp(out, tgt, (size_t)len * sizeof *out) != 0))
            continue;
        double s = 0.0;
        for (int64_t t = 0; t < Tn; t++)
            s += lp[(t * N + n) * C + lab[t]];
        total += exp(s);
    }
    return -log(total);
}

static void r_ctc(const or_ref *r)
{
    const ctc_arg *a = r->c->arg;
    const or_ctc_batch *b = a->b;
    double *lp = malloc((size_t)r->in[0].n * sizeof *lp), per[6];
    memcpy(lp, r->in[0].v, (size_t)r->in[0].n * sizeof *lp);
    for (int64_t row = 0; a->logits && row < b->T * b->N; row++)
        or_softmax(lp + row * b->C, b->C, 1, true);
    for (int64_t n = 0; n < b->N; n++) {
        per[n] = or_ctc_brute(lp, b->N, b->C, n, b->il[n], b->tg[n], b->tl[n], b->blank);
        if (a->red == FX_MEAN) /* each loss over its target length (at least 1) */
            per[n] /= (double)(b->tl[n] > 1 ? b->tl[n] : 1);
    }
    reduce_into(per, b->N, a->red, 1, &b->N, r->out);
    free(lp);
}

/* Both batches, every reduction, from log-probabilities and from logits,
 * the target layouts and index dtypes alternating. */
#define CTC(label, batch, shape, padded, i32)                                                    \
    { label ", none", 1, { shape }, 0, &(const ctc_arg){ batch, padded, i32, false, FX_NONE } }, \
    { label ", none, logits", 1, { shape }, 0,                                                  \
      &(const ctc_arg){ batch, padded, i32, true, FX_NONE } },                                  \
    { label ", mean", 1, { shape }, 0, &(const ctc_arg){ batch, !padded, !i32, false, FX_MEAN } }, \
    { label ", mean, logits", 1, { shape }, 0,                                                  \
      &(const ctc_arg){ batch, !padded, !i32, true, FX_MEAN } },                                \
    { label ", sum", 1, { shape }, 0, &(const ctc_arg){ batch, padded, i32, false, FX_SUM } },  \
    { label ", sum, logits", 1, { shape }, 0, &(const ctc_arg){ batch, padded, i32, true, FX_SUM } }

static const or_case CTC_CASES[] = {
    CTC("mixed lengths, blank 0", &OR_CTC_MIXED, S3(6, 5, 4), false, false),
    CTC("blank last, a one-path target", &OR_CTC_BLANK_LAST, S3(5, 3, 4), true, false),
    { "T 8, C 5, from logits, none", 1, { S3(8, 2, 5) }, 0,
      &(const ctc_arg){ &BATCH2, true, true, true, FX_NONE } },
};

/* ------------------------------------------------------------------- rows */

#define LOSS_FWD { 1e-5, "float log-sum-exps and sums of at most 70 terms against double" }

const or_row OR_ROWS_LOSS[] = {
    { .name = "mse_loss", .covers = "fx_mse_loss", .ncases = OR_COUNT(MSE_CASES),
      .cases = MSE_CASES, .forward = f_mse, .reference = r_mse, .fwd = LOSS_FWD,
      .grad = OR_GRAD_STD, .xb = OR_XB_EXACT },
    { .name = "cross_entropy", .covers = "fx_cross_entropy", .ncases = OR_COUNT(CE_CASES),
      .cases = CE_CASES, .fill = { { OR_NORMAL, 1.5, 0, 0 } }, .forward = f_ce,
      .reference = r_ce, .fwd = LOSS_FWD, .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "cross_entropy_soft", .covers = "fx_cross_entropy_soft",
      .ncases = OR_COUNT(CE_SOFT_CASES), .cases = CE_SOFT_CASES,
      .fill = { { OR_NORMAL, 1, 0, 0 }, { OR_PROBS, 0.05, 1.0, 0 } }, .forward = f_ce_soft,
      .reference = r_ce_soft, .fwd = LOSS_FWD, .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "bce_with_logits", .covers = "fx_bce_with_logits", .ncases = OR_COUNT(BCE_CASES),
      .cases = BCE_CASES, .fill = { { OR_NORMAL, 2, 0, 0 }, { OR_UNIFORM, 0, 1, 0 } },
      .forward = f_bce, .reference = r_bce, .fwd = LOSS_FWD, .grad = OR_GRAD_STD,
      .xb = OR_XB_EXACT },
    { .name = "ctc_loss", .covers = "fx_ctc_loss", .ncases = OR_COUNT(CTC_CASES),
      .cases = CTC_CASES, .fill = { { OR_NORMAL, 0.7, -1.0, 0 } }, .forward = f_ctc,
      .reference = r_ctc,
      .fwd = { 1e-5, "log-space recursions in float against a brute force in double" },
      .grad = { 1e-2, 5e-3, 1e-3,
                "the loss is a chain of float log-sum-exps of size ~25, whose rounding "
                "(~1e-6) over the 2e-3 step is noise of a few 1e-3; test_ctc checks the exact "
                "gradient to 1e-4 against the brute force", NULL },
      .xb = OR_XB_CTC },
};
const int OR_NROWS_LOSS = OR_COUNT(OR_ROWS_LOSS);
