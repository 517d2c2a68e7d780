/* test_ctc.c - the CTC loss.
 *
 * Forward against a brute force (the registry's or_ctc_brute) that
 * enumerates all C^T frame labellings, collapses each (merge repeats, drop
 * blanks) and sums the probabilities of those that give the target, for a
 * batch with mixed input and target lengths (an empty target, repeated
 * labels, a tight alignment), padded and concatenated targets, i32 and i64,
 * blank first or last; the reductions; a long sequence against a path count
 * (stability in log space); threads; the exact gradient against central
 * differences of the brute force in double; zero_infinity; refused inputs.
 * The finite-difference checks of the float loss (both batches, every
 * reduction, from log_probs and from logits) and the cross-backend
 * comparison are the registry's ctc_loss row (test_ops). */
#include "testutil.h"
#include "ops_registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ reference */

/* The batches are the registry's (ops_registry.h): OR_CTC_MIXED (mixed
 * lengths, an empty target, a tight one, blank 0) and OR_CTC_BLANK_LAST. */

/* Persistent tensors of a batch: lp [T, N, C] (random, with grad), targets
 * padded [N, W] (padding 99, which must be ignored) or concatenated, and the
 * lengths, in i64 or i32. */
typedef struct {
    or_ctc_batch b;
    fx_tensor *lp, *targets, *il, *tl;
    fx_ctc_opts o;
} ctc_run;

static fx_tensor *int_tensor(bool i32, int ndim, const int64_t *shape, const int64_t *v)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    if (!i32)
        return tu_from(FX_I64, ndim, shape, v);
    int32_t *w = malloc((size_t)(n ? n : 1) * sizeof *w);
    for (int64_t i = 0; i < n; i++)
        w[i] = (int32_t)v[i];
    fx_tensor *t = tu_from(FX_I32, ndim, shape, w);
    free(w);
    return t;
}

static void run_setup(ctc_run *r, const or_ctc_batch *b, bool padded, bool i32, fx_rng *rng,
                      double scale)
{
    memset(r, 0, sizeof *r);
    r->b = *b;
    r->o.blank = b->blank;
    r->o.reduction = FX_NONE;
    r->lp = tu_randn(rng, 3, TU_SHAPE(b->T, b->N, b->C), scale, -1.0);
    int64_t flat[36], W = 6, total = 0;
    for (int64_t n = 0; n < b->N; n++)
        for (int64_t s = 0; s < (padded ? W : b->tl[n]); s++)
            flat[padded ? n * W + s : total++] = s < b->tl[n] ? b->tg[n][s] : 99;
    r->targets = padded ? int_tensor(i32, 2, TU_SHAPE(b->N, W), flat)
                        : int_tensor(i32, 1, TU_SHAPE(total), flat);
    r->il = int_tensor(i32, 1, TU_SHAPE(b->N), b->il);
    r->tl = int_tensor(!i32, 1, TU_SHAPE(b->N), b->tl); /* the other dtype: both mix */
}

static void run_free(ctc_run *r) { tu_free_all(4, (fx_tensor *[]){ r->lp, r->targets, r->il, r->tl }); }

static fx_tensor *ctc_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    ctc_run *r = arg;
    return fx_ctc_loss(ctx, in[0], r->targets, r->il, r->tl, &r->o);
}

/* lp's values in double, the brute force's input. */
static double *lp_double(const ctc_run *r)
{
    float *v = tu_values(r->lp);
    int64_t n = fx_tensor_numel(r->lp);
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = v[i];
    free(v);
    return d;
}

/* The reference per-sample losses of a run, from lp as log-probabilities
 * (or as logits, log-softmaxed here in double first). */
static void ref_losses(const ctc_run *r, bool logits, double *out)
{
    const or_ctc_batch *b = &r->b;
    double *lp = lp_double(r);
    for (int64_t row = 0; logits && row < b->T * b->N; row++)
        or_softmax(lp + row * b->C, b->C, 1, true);
    for (int64_t n = 0; n < b->N; n++)
        out[n] = or_ctc_brute(lp, b->N, b->C, n, b->il[n], b->tg[n], b->tl[n], b->blank);
    free(lp);
}

static void assert_close_d(const float *got, const double *want, int64_t n, double tol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i]))))
            fail_msg("element %lld: %.7g vs reference %.7g", (long long)i, got[i], want[i]);
}

/* ---------------------------------------------------------------- tests */

static void test_ctc_forward_brute_force(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(31);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const or_ctc_batch *bs[2] = { &OR_CTC_MIXED, &OR_CTC_BLANK_LAST };
    for (int bi = 0; bi < 2; bi++)
        for (int layout = 0; layout < 4; layout++)
            for (int logits = 0; logits < 2; logits++) {
                ctc_run r;
                run_setup(&r, bs[bi], layout & 1, layout >> 1, rng, 1.5);
                r.o.from_logits = logits;
                fx_tensor *y = ctc_op(ctx, (fx_tensor *[]){ r.lp }, &r);
                if (!y)
                    fail_msg("batch %d layout %d: %s", bi, layout, fx_ctx_error(ctx));
                assert_int_equal(y->ndim, 1);
                assert_int_equal(y->shape[0], r.b.N);
                double want[6];
                ref_losses(&r, logits, want);
                float *got = tu_values(y);
                assert_close_d(got, want, r.b.N, 1e-5);
                /* The reductions: sum, and mean of loss / max(target length, 1). */
                double sum = 0.0, mean = 0.0;
                for (int64_t n = 0; n < r.b.N; n++) {
                    sum += want[n];
                    mean += want[n] / (double)(r.b.tl[n] > 1 ? r.b.tl[n] : 1) / (double)r.b.N;
                }
                r.o.reduction = FX_SUM;
                double s = fx_tensor_item(ctc_op(ctx, (fx_tensor *[]){ r.lp }, &r));
                r.o.reduction = FX_MEAN;
                double m = fx_tensor_item(ctc_op(ctx, (fx_tensor *[]){ r.lp }, &r));
                assert_true(fabs(s - sum) <= 1e-5 * (1.0 + fabs(sum)));
                assert_true(fabs(m - mean) <= 1e-5 * (1.0 + fabs(mean)));
                assert_int_equal(fx_ctx_status(ctx), FX_OK);
                free(got);
                run_free(&r);
                fx_ctx_reset(ctx);
            }
    /* opts NULL: blank 0, mean. */
    ctc_run r;
    run_setup(&r, &OR_CTC_MIXED, true, false, rng, 1.0);
    double want[6], mean = 0.0;
    ref_losses(&r, false, want);
    for (int64_t n = 0; n < r.b.N; n++)
        mean += want[n] / (double)(r.b.tl[n] > 1 ? r.b.tl[n] : 1) / (double)r.b.N;
    double m = fx_tensor_item(fx_ctc_loss(ctx, r.lp, r.targets, r.il, r.tl, NULL));
    assert_true(fabs(m - mean) <= 1e-5 * (1.0 + fabs(mean)));
    run_free(&r);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Number of frame labellings of length T that collapse to tgt, by dynamic
 * programming over (frames, labels emitted so far, last frame blank or not). */
static double count_alignments(int64_t T, const int64_t *tgt, int64_t tl)
{
    /* ways[k][0]: k labels emitted, last frame blank; ways[k][1]: last frame
     * is label k-1 (still open for repeats). */
    double ways[64][2] = { { 0 } }, next[64][2];
    ways[0][0] = 1.0; /* before any frame: nothing emitted, nothing open */
    for (int64_t t = 0; t < T; t++) {
        memset(next, 0, sizeof next);
        for (int64_t k = 0; k <= tl; k++)
            for (int o = 0; o < 2; o++) {
                double w = ways[k][o];
                if (w == 0.0)
                    continue;
                next[k][0] += w;     /* a blank */
                if (o)
                    next[k][1] += w; /* repeat the open label */
                if (k < tl && !(o && tgt[k] == tgt[k - 1]))
                    next[k + 1][1] += w; /* the next label */
            }
        memcpy(ways, next, sizeof ways);
    }
    return ways[tl][0] + ways[tl][1];
}

/* T = 150 frames of uniform probabilities 1/C: every labelling has
 * probability C^-T (about 1e-105, far below float), so the loss is
 * T log C - log(number of alignments). */
static void test_ctc_long_sequence(void **state)
{
    (void)state;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t T = 150, C = 5, N = 2;
    int64_t tg[2][20], tl[2] = { 20, 7 }, il[2] = { 150, 90 };
    for (int n = 0; n < 2; n++)
        for (int s = 0; s < tl[n]; s++)
            tg[n][s] = 1 + (s / 2 + n) % 4; /* pairs: repeated neighbours */
    int64_t flat[40];
    for (int n = 0; n < 2; n++)
        for (int s = 0; s < 20; s++)
            flat[n * 20 + s] = s < tl[n] ? tg[n][s] : 0;
    fx_tensor *lp = fx_full(ctx, FX_F32, 3, TU_SHAPE(T, N, C), -log((double)C));
    fx_tensor *targets = fx_tensor_from_host(ctx, FX_I64, 2, TU_SHAPE(N, 20), flat);
    fx_tensor *til = fx_tensor_from_host(ctx, FX_I64, 1, TU_SHAPE(N), il);
    fx_tensor *ttl = fx_tensor_from_host(ctx, FX_I64, 1, TU_SHAPE(N), tl);
    fx_tensor *y = fx_ctc_loss(ctx, lp, targets, til, ttl, &(fx_ctc_opts){ .reduction = FX_NONE });
    assert_non_null(y);
    float *got = tu_values(y);
    for (int n = 0; n < 2; n++) {
        double want = (double)il[n] * log((double)C) - log(count_alignments(il[n], tg[n], tl[n]));
        if (!(fabs(got[n] - want) <= 1e-4 * want))
            fail_msg("sample %d: %.7g vs %.7g", n, got[n], want);
    }
    free(got);
    fx_ctx_free(ctx);
}

/* The per-sample losses and the gradient of sum(loss * w) w.r.t. lp. */
static void loss_and_grad(ctc_run *r, float **loss, float **grad)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor_fill(r->lp->grad, 0.0);
    fx_tensor *y = ctc_op(ctx, (fx_tensor *[]){ r->lp }, r);
    if (!y)
        fail_msg("%s", fx_ctx_error(ctx));
    fx_tensor *w = fx_full(ctx, FX_F32, 1, y->shape, 1.0);
    assert_int_equal(fx_backward(ctx, fx_sum(ctx, fx_mul(ctx, y, w), 0, NULL, false)), FX_OK);
    *loss = tu_values(y);
    *grad = tu_values(r->lp->grad);
    fx_ctx_free(ctx);
}

/* A batch big enough to split over threads gives the same bits on 1 and 2
 * threads (samples are independent; each is computed by one thread). */
static void test_ctc_threads(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(32);
    enum { T = 100, N = 32, C = 8, W = 12 };
    int64_t il[N], tl[N], tg[N * W];
    for (int n = 0; n < N; n++) {
        il[n] = T - 2 * n;
        tl[n] = W - n % 5;
        for (int s = 0; s < W; s++)
            tg[n * W + s] = 1 + (n + 3 * s) % (C - 1);
    }
    ctc_run r = { .o = { .reduction = FX_NONE } };
    r.lp = tu_randn(rng, 3, TU_SHAPE(T, N, C), 1.0, -2.0);
    r.targets = tu_from(FX_I64, 2, TU_SHAPE(N, W), tg);
    r.il = tu_from(FX_I64, 1, TU_SHAPE(N), il);
    r.tl = tu_from(FX_I64, 1, TU_SHAPE(N), tl);
    int nt = fx_get_num_threads();
    float *l1, *g1, *l2, *g2;
    fx_set_num_threads(1);
    loss_and_grad(&r, &l1, &g1);
    fx_set_num_threads(2);
    loss_and_grad(&r, &l2, &g2);
    fx_set_num_threads(nt);
    for (int n = 0; n < N; n++)
        assert_true(isfinite(l1[n]) && l1[n] > 0.0f);
    assert_memory_equal(l1, l2, N * sizeof(float));
    assert_memory_equal(g1, g2, (size_t)fx_tensor_numel(r.lp) * sizeof(float));
    free(l1), free(g1), free(l2), free(g2);
    run_free(&r);
    fx_rng_free(rng);
}

/* The gradient of sum_n loss_n (unnormalised log_probs, so the exact
 * derivative is needed, not one that assumes a log_softmax) against central
 * differences of the brute force in double. */
static void test_ctc_gradient_brute_force(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(37);
    const or_ctc_batch *bs[2] = { &OR_CTC_MIXED, &OR_CTC_BLANK_LAST };
    for (int bi = 0; bi < 2; bi++) {
        ctc_run r;
        run_setup(&r, bs[bi], true, false, rng, 1.0);
        const or_ctc_batch *b = &r.b;
        float *loss, *g;
        loss_and_grad(&r, &loss, &g);
        double *lp = lp_double(&r);
        int64_t n = fx_tensor_numel(r.lp);
        for (int64_t i = 0; i < n; i++) {
            const double h = 1e-3;
            float orig = (float)lp[i];
            double f[2];
            for (int side = 0; side < 2; side++) {
                lp[i] = (float)(orig + (side ? -h : h)); /* the float input's own step */
                f[side] = 0.0;
                for (int64_t s = 0; s < b->N; s++)
                    f[side] += or_ctc_brute(lp, b->N, b->C, s, b->il[s], b->tg[s], b->tl[s],
                                            b->blank);
            }
            lp[i] = orig;
            double num = (f[0] - f[1]) / ((double)(float)(orig + h) - (double)(float)(orig - h));
            if (!(fabs(g[i] - num) <= 1e-4 + 1e-3 * fabs(num)))
                fail_msg("batch %d element %lld: analytic %.7g, brute force %.7g", bi,
                         (long long)i, g[i], num);
        }
        free(lp), free(loss), free(g);
        run_free(&r);
    }
    fx_rng_free(rng);
}

/* After a log_softmax, the gradient w.r.t. the logits is softmax - gamma per
 * frame (gamma the label posteriors, summing to 1): so each frame's
 * gradient sums to 0 inside the input length and is 0 past it. */
static void test_ctc_logits_gradient_rows(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(34);
    ctc_run r;
    run_setup(&r, &OR_CTC_MIXED, true, true, rng, 1.0);
    r.o.from_logits = true;
    float *loss, *g;
    loss_and_grad(&r, &loss, &g);
    const or_ctc_batch *b = &r.b;
    for (int64_t t = 0; t < b->T; t++)
        for (int64_t n = 0; n < b->N; n++) {
            double s = 0.0, a = 0.0;
            for (int64_t c = 0; c < b->C; c++) {
                s += g[(t * b->N + n) * b->C + c];
                a += fabs(g[(t * b->N + n) * b->C + c]);
            }
            assert_true(fabs(s) < 1e-5);
            if (t >= b->il[n])
                assert_true(a == 0.0);
            else
                assert_true(a > 0.0);
        }
    free(loss), free(g);
    run_free(&r);
    fx_rng_free(rng);
}

static void expect_fail(fx_ctx *ctx, fx_tensor *y, fx_status s, const char *needle)
{
    assert_null(y);
    if (fx_ctx_status(ctx) != s)
        fail_msg("expected %s, got %s: %s", fx_status_name(s), fx_status_name(fx_ctx_status(ctx)),
                 fx_ctx_error(ctx));
    if (!strstr(fx_ctx_error(ctx), "ctc_loss") || !strstr(fx_ctx_error(ctx), needle))
        fail_msg("message '%s' does not name ctc_loss and '%s'", fx_ctx_error(ctx), needle);
    fx_ctx_clear_error(ctx);
}

/* An impossible sample: refused naming it, or with zero_infinity a zero
 * loss and zero gradient while the others keep theirs. The same for a
 * sample that can align but whose labels have probability 0. */
static void test_ctc_zero_infinity(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(35);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    or_ctc_batch b = OR_CTC_MIXED;
    b.il[1] = 3; /* target {3, 3} needs 3 frames: fits */
    b.il[4] = 5; /* target {1, 1, 2, 2} needs 6 frames: impossible */
    ctc_run r;
    run_setup(&r, &b, false, false, rng, 1.0);
    expect_fail(ctx, ctc_op(ctx, (fx_tensor *[]){ r.lp }, &r), FX_ERR_VALUE,
                "sample 4: target length 4 with 2 repeated neighbouring labels needs at least 6 "
                "frames but its input length is 5");
    r.o.zero_infinity = true;
    float *loss, *g;
    loss_and_grad(&r, &loss, &g);
    double want[6];
    ref_losses(&r, false, want);
    assert_true(loss[4] == 0.0f);
    assert_true(isinf(want[4]));
    assert_close_d(loss, want, 4, 1e-5);
    for (int64_t t = 0; t < b.T; t++)
        for (int64_t c = 0; c < b.C; c++) {
            assert_true(g[(t * b.N + 4) * b.C + c] == 0.0f);
            assert_true(isfinite(g[(t * b.N + 0) * b.C + c]));
        }
    free(loss), free(g);
    /* Probability 0: label 2 can never be emitted for sample 0. */
    float *lp = tu_values(r.lp);
    for (int64_t t = 0; t < b.T; t++)
        lp[(t * b.N + 0) * b.C + 2] = -INFINITY;
    fx_tensor_copy_from_host(r.lp, lp, (size_t)fx_tensor_numel(r.lp) * sizeof(float));
    free(lp);
    r.o.zero_infinity = false;
    fx_tensor_free(r.il); /* sample 4 would still be impossible: make it possible */
    b.il[4] = 6;
    r.il = tu_from(FX_I64, 1, TU_SHAPE(5), b.il);
    expect_fail(ctx, ctc_op(ctx, (fx_tensor *[]){ r.lp }, &r), FX_ERR_VALUE,
                "loss of sample 0 (input length 6, target length 3) is infinite");
    r.o.zero_infinity = true;
    loss_and_grad(&r, &loss, &g);
    assert_true(loss[0] == 0.0f);
    for (int64_t i = 0; i < fx_tensor_numel(r.lp); i++)
        assert_true(isfinite(g[i]));
    for (int64_t t = 0; t < b.T; t++)
        for (int64_t c = 0; c < b.C; c++)
            assert_true(g[(t * b.N + 0) * b.C + c] == 0.0f);
    free(loss), free(g);
    run_free(&r);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

static void test_ctc_bad_input(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(36);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *lp = tu_randn(rng, 3, TU_SHAPE(4, 2, 3), 1.0, 0.0);
    fx_tensor *lp2 = tu_randn(rng, 2, TU_SHAPE(4, 3), 1.0, 0.0);
    fx_tensor *tg = tu_from(FX_I64, 2, TU_SHAPE(2, 2), (int64_t[]){ 1, 2, 2, 2 });
    fx_tensor *tg_blank = tu_from(FX_I64, 2, TU_SHAPE(2, 2), (int64_t[]){ 1, 2, 0, 1 });
    fx_tensor *tg_big = tu_from(FX_I32, 2, TU_SHAPE(2, 2), (int32_t[]){ 1, 3, 2, 1 });
    fx_tensor *tg_neg = tu_from(FX_I32, 2, TU_SHAPE(2, 2), (int32_t[]){ 1, 2, -1, 1 });
    fx_tensor *tg_cat = tu_from(FX_I64, 1, TU_SHAPE(4), (int64_t[]){ 1, 2, 2, 1 });
    fx_tensor *tg_f = tu_from(FX_F32, 2, TU_SHAPE(2, 2), (float[]){ 1, 2, 2, 1 });
    fx_tensor *tg_n3 = tu_from(FX_I64, 2, TU_SHAPE(3, 2), (int64_t[]){ 1, 2, 2, 1, 1, 1 });
    fx_tensor *il = tu_from(FX_I64, 1, TU_SHAPE(2), (int64_t[]){ 4, 3 });
    fx_tensor *il_big = tu_from(FX_I64, 1, TU_SHAPE(2), (int64_t[]){ 4, 5 });
    fx_tensor *il_zero = tu_from(FX_I64, 1, TU_SHAPE(2), (int64_t[]){ 0, 3 });
    fx_tensor *il_f = tu_from(FX_F32, 1, TU_SHAPE(2), (float[]){ 4, 3 });
    fx_tensor *il_3 = tu_from(FX_I64, 1, TU_SHAPE(3), (int64_t[]){ 4, 3, 3 });
    fx_tensor *tl = tu_from(FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 2, 1 });
    fx_tensor *tl_neg = tu_from(FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 2, -1 });
    fx_tensor *tl_long = tu_from(FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 3, 1 });
    fx_tensor *tl_sum5 = tu_from(FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 2, 3 });
    fx_tensor *tl_sum3 = tu_from(FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 2, 1 });
    fx_tensor *tl_rep = tu_from(FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 2, 2 });
    fx_ctc_opts o = { .reduction = FX_MEAN };

    /* The good call works, so each failure below is its argument's. */
    assert_non_null(fx_ctc_loss(ctx, lp, tg, il, tl, &o));
    expect_fail(ctx, fx_ctc_loss(ctx, lp2, tg, il, tl, &o), FX_ERR_SHAPE, "[T,N,C]");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il, tl, &(fx_ctc_opts){ .blank = 3 }), FX_ERR_ARG,
                "blank 3 is outside [0, C = 3)");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il, tl, &(fx_ctc_opts){ .blank = -1 }), FX_ERR_ARG,
                "blank -1");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il, tl, &(fx_ctc_opts){ .reduction = 7 }), FX_ERR_ARG,
                "reduction");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg_blank, il, tl, &o), FX_ERR_VALUE,
                "sample 1: label 0 at position 0 of its target is the blank");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg_big, il, tl, &o), FX_ERR_VALUE,
                "sample 0: label 3 at position 1 of its target is out of range");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg_neg, il, tl, &o), FX_ERR_VALUE, "label -1");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il_big, tl, &o), FX_ERR_VALUE,
                "sample 1: input length 5 is outside [1, T = 4]");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il_zero, tl, &o), FX_ERR_VALUE,
                "sample 0: input length 0");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il, tl_neg, &o), FX_ERR_VALUE,
                "sample 1: target length -1 is negative");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il, tl_long, &o), FX_ERR_VALUE,
                "sample 0: target length 3 is too long");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg_cat, il, tl_sum5, &o), FX_ERR_VALUE,
                "sample 1: target length 3 is too long");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg_cat, il, tl_sum3, &o), FX_ERR_SHAPE,
                "target_lengths add up to 3");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg_cat, il_3, tl, &o), FX_ERR_SHAPE,
                "input_lengths must be [2]");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il_f, tl, &o), FX_ERR_DTYPE, "input_lengths");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg_f, il, tl, &o), FX_ERR_DTYPE, "targets");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg_n3, il, tl, &o), FX_ERR_SHAPE, "padded [N = 2, W]");
    /* {2, 2} needs 3 frames; sample 1 has 3: fine. Sample 0 {1, 2} in 1 frame is not. */
    assert_non_null(fx_ctc_loss(ctx, lp, tg, il, tl_rep, &o));
    fx_tensor *il1 = tu_from(FX_I64, 1, TU_SHAPE(2), (int64_t[]){ 1, 2 });
    expect_fail(ctx, fx_ctc_loss(ctx, lp, tg, il1, tl_rep, &o), FX_ERR_VALUE,
                "sample 0: target length 2 with 0 repeated neighbouring labels needs at least 2 "
                "frames but its input length is 1");
    expect_fail(ctx, fx_ctc_loss(ctx, lp, NULL, il, tl, &o), FX_ERR_ARG, "NULL");
    fx_ctx_fail(ctx, FX_ERR_SHAPE, "earlier");
    assert_null(fx_ctc_loss(ctx, NULL, tg, il, tl, &o));
    assert_string_equal(fx_ctx_error(ctx), "earlier");
    fx_ctx_clear_error(ctx);
    tu_free_all(21, (fx_tensor *[]){ lp, lp2, tg, tg_blank, tg_big, tg_neg, tg_cat, tg_f, tg_n3,
                                     il, il_big, il_zero, il_f, il_3, tl, tl_neg, tl_long,
                                     tl_sum5, tl_sum3, tl_rep, il1 });
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctc_forward_brute_force),
        cmocka_unit_test(test_ctc_long_sequence),
        cmocka_unit_test(test_ctc_threads),
        cmocka_unit_test(test_ctc_gradient_brute_force),
        cmocka_unit_test(test_ctc_logits_gradient_rows),
        cmocka_unit_test(test_ctc_zero_infinity),
        cmocka_unit_test(test_ctc_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
