/* test_attention.c - scaled dot-product and multi-head attention.
 *
 * Forward results against the registry's reference in double (or_sdpa) (padding,
 * causal, boolean and additive masks, broadcast masks, a fully masked row);
 * masked keys get exactly zero weight, and changing keys/values there
 * changes neither the output nor any gradient; dropout; PyTorch parameter
 * names; refused inputs. The finite-difference gradients w.r.t. q, k, v, an
 * additive mask and the multi-head layer's weights, and the cross-backend
 * comparisons, are the registry's sdpa and multihead_attention rows
 * (test_ops). */
#include "testutil.h"
#include "ops_registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- reference */

/* The values of t in double (malloc'd). */
static double *dvalues(const fx_tensor *t)
{
    int64_t n = fx_tensor_numel(t);
    float *f = tu_values(t);
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

static void assert_close_d(const float *got, const double *want, int64_t n, double tol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i]))))
            fail_msg("element %lld: %.7g vs reference %.7g", (long long)i, got[i], want[i]);
}

/* Gives a persistent tensor N(0, scale^2) values. */
static void randomise(fx_tensor *t, fx_rng *rng, double scale)
{
    fx_tensor *r = tu_randn(rng, t->ndim, t->shape, scale, 0.0);
    fx_tensor_copy(t, r);
    fx_tensor_free(r);
}

/* --------------------------------------------------------- test cases */

/* One attention problem: q [bd.., L, E], k [bd.., S, E], v [bd.., S, Ev],
 * optional lengths (i64 or i32 values), causal, and a mask of shape ms
 * (md dims, i32 keep or f32 add) broadcast to [bd.., L, S]. */
typedef struct {
    int nbd;
    int64_t bd[3], L, S, E, Ev;
    int nlens;
    int64_t lens[4];
    bool lens_i32;
    bool causal;
    int md;
    int64_t ms[4];
    int mask_kind; /* 0 none, 1 i32 keep, 2 f32 add, 3 f32 add with -inf entries */
} attn_case;

/* Runtime state of a case: persistent inputs and the op's arguments. */
typedef struct {
    attn_case c;
    fx_tensor *q, *k, *v, *lens, *mask;
} attn_run;

static int64_t prod(const int64_t *s, int n)
{
    int64_t p = 1;
    for (int i = 0; i < n; i++)
        p *= s[i];
    return p;
}

static void run_setup(attn_run *r, const attn_case *c, fx_rng *rng)
{
    memset(r, 0, sizeof *r);
    r->c = *c;
    int nd = c->nbd + 2;
    int64_t s[FX_MAX_DIMS];
    for (int d = 0; d < c->nbd; d++)
        s[d] = c->bd[d];
    s[nd - 2] = c->L, s[nd - 1] = c->E;
    r->q = tu_randn(rng, nd, s, 1.0, 0.0);
    s[nd - 2] = c->S;
    r->k = tu_randn(rng, nd, s, 1.0, 0.0);
    s[nd - 1] = c->Ev;
    r->v = tu_randn(rng, nd, s, 1.0, 0.0);
    if (c->nlens) {
        if (c->lens_i32) {
            int32_t l32[4];
            for (int i = 0; i < c->nlens; i++)
                l32[i] = (int32_t)c->lens[i];
            r->lens = tu_from(FX_I32, 1, (int64_t[]){ c->nlens }, l32);
        } else {
            r->lens = tu_from(FX_I64, 1, (int64_t[]){ c->nlens }, c->lens);
        }
    }
    int64_t mn = prod(c->ms, c->md);
    if (c->mask_kind == 1) {
        int32_t *keep = malloc((size_t)mn * sizeof *keep);
        for (int64_t i = 0; i < mn; i++)
            keep[i] = fx_rng_uniform(rng) < 0.7;
        keep[0] = 0; /* some entry masked whatever the draw */
        r->mask = tu_from(FX_I32, c->md, c->ms, keep);
        free(keep);
    } else if (c->mask_kind >= 2) {
        r->mask = tu_randn(rng, c->md, c->ms, 1.0, 0.0);
        if (c->mask_kind == 3) {
            float *m = tu_values(r->mask);
            for (int64_t i = 0; i < mn; i += 3)
                m[i] = -INFINITY;
            fx_tensor_copy_from_host(r->mask, m, (size_t)mn * sizeof *m);
            free(m);
        }
        fx_tensor_set_requires_grad(r->mask, false);
    }
}

static void run_free(attn_run *r)
{
    tu_free_all(5, (fx_tensor *[]){ r->q, r->k, r->v, r->lens, r->mask });
}

/* The reference's expanded masks for a case (caller frees). */
static or_sdpa_spec run_spec(const attn_run *r, int **keep, double **add)
{
    const attn_case *c = &r->c;
    int nd = c->nbd + 2;
    int64_t fs[FX_MAX_DIMS];
    for (int d = 0; d < c->nbd; d++)
        fs[d] = c->bd[d];
    fs[nd - 2] = c->L, fs[nd - 1] = c->S;
    int64_t B = prod(c->bd, c->nbd), n = B * c->L * c->S;
    *keep = NULL;
    *add = NULL;
    if (c->mask_kind == 1) {
        int32_t *m = malloc((size_t)prod(c->ms, c->md) * sizeof *m);
        fx_tensor_to_host(r->mask, m, (size_t)prod(c->ms, c->md) * sizeof *m);
        *keep = malloc((size_t)n * sizeof **keep);
        for (int64_t i = 0; i < n; i++)
            (*keep)[i] = m[or_bcast_index(fs, nd, c->ms, c->md, i)] != 0;
        free(m);
    } else if (c->mask_kind >= 2) {
        float *m = tu_values(r->mask);
        *add = malloc((size_t)n * sizeof **add);
        for (int64_t i = 0; i < n; i++)
            (*add)[i] = m[or_bcast_index(fs, nd, c->ms, c->md, i)];
        free(m);
    }
    return (or_sdpa_spec){ B, c->L, c->S, c->E, c->Ev, c->nlens ? c->lens : NULL,
                       c->nlens ? B / c->nlens : 1, c->causal, *keep, *add };
}

static fx_tensor *attn_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    attn_run *r = arg;
    return fx_scaled_dot_product_attention(ctx, in[0], in[1], in[2], r->lens, r->c.causal,
                                           r->mask, 0.0f);
}

static const attn_case cases[] = {
    /* plain 3-D, L != S, Ev != E */
    { .nbd = 1, .bd = { 2 }, .L = 3, .S = 5, .E = 4, .Ev = 3 },
    /* heads [N, H, L, E] with key lengths (one per N, shared by the heads) and causal */
    { .nbd = 2, .bd = { 2, 2 }, .L = 3, .S = 5, .E = 4, .Ev = 2, .nlens = 2, .lens = { 5, 2 },
      .causal = true },
    /* causal self-attention with i32 lengths, one of them 1 */
    { .nbd = 1, .bd = { 2 }, .L = 4, .S = 4, .E = 3, .Ev = 3, .nlens = 2, .lens = { 3, 1 },
      .lens_i32 = true, .causal = true },
    /* additive [L, S] mask broadcast over the batch, with lengths */
    { .nbd = 1, .bd = { 3 }, .L = 4, .S = 5, .E = 2, .Ev = 3, .nlens = 3, .lens = { 5, 3, 4 },
      .md = 2, .ms = { 4, 5 }, .mask_kind = 2 },
    /* boolean [N, 1, L, S] mask over heads */
    { .nbd = 2, .bd = { 2, 2 }, .L = 3, .S = 5, .E = 4, .Ev = 2, .md = 4, .ms = { 2, 1, 3, 5 },
      .mask_kind = 1 },
    /* additive mask with -inf entries, [1, S] broadcast over queries */
    { .nbd = 1, .bd = { 2 }, .L = 3, .S = 6, .E = 4, .Ev = 4, .md = 2, .ms = { 1, 6 },
      .mask_kind = 3 },
    /* unbatched 2-D, causal with L < S */
    { .nbd = 0, .L = 3, .S = 5, .E = 4, .Ev = 2, .causal = true },
};
#define NCASES ((int)(sizeof cases / sizeof *cases))

/* ---------------------------------------------------------------- tests */

static void test_sdpa_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(11);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (int ci = 0; ci < NCASES; ci++) {
        attn_run r;
        run_setup(&r, &cases[ci], rng);
        fx_tensor *y = attn_op(ctx, (fx_tensor *[]){ r.q, r.k, r.v, NULL }, &r);
        if (!y)
            fail_msg("case %d: %s", ci, fx_ctx_error(ctx));
        int *keep;
        double *add;
        or_sdpa_spec sp = run_spec(&r, &keep, &add);
        int64_t n = sp.B * sp.L * sp.Ev;
        assert_int_equal(fx_tensor_numel(y), n);
        assert_int_equal(y->ndim, r.c.nbd + 2);
        assert_int_equal(y->shape[y->ndim - 1], r.c.Ev);
        double *want = malloc((size_t)n * sizeof *want);
        double *q = dvalues(r.q), *k = dvalues(r.k), *v = dvalues(r.v);
        float *got = tu_values(y);
        or_sdpa(&sp, q, k, v, want);
        assert_close_d(got, want, n, 1e-5);
        free(want), free(q), free(k), free(v), free(got), free(keep), free(add);
        run_free(&r);
        fx_ctx_reset(ctx);
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* With v the identity (Ev = S), the output is the weights themselves:
 * masked keys must get exactly 0, rows with a key left sum to 1, and a row
 * whose keys are all masked is exactly zero (not NaN). */
static void test_sdpa_masked_weights_zero(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(12);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t N = 2, L = 4, S = 5;
    fx_tensor *q = tu_randn(rng, 3, TU_SHAPE(N, L, 3), 2.0, 0.0);
    fx_tensor *k = tu_randn(rng, 3, TU_SHAPE(N, S, 3), 2.0, 0.0);
    float eye[2 * 5 * 5] = { 0 };
    for (int n = 0; n < N; n++)
        for (int j = 0; j < S; j++)
            eye[(n * S + j) * S + j] = 1.0f;
    fx_tensor *v = tu_from(FX_F32, 3, TU_SHAPE(N, S, S), eye);
    fx_tensor *lens = tu_from(FX_I64, 1, TU_SHAPE(N), (int64_t[]){ 2, 5 });
    int32_t keep[4 * 5];
    for (int i = 0; i < L * S; i++)
        keep[i] = 1;
    for (int j = 0; j < S; j++)
        keep[2 * S + j] = 0; /* query 2 may see nothing */
    keep[3 * S + 1] = 0;
    fx_tensor *mask = tu_from(FX_I32, 2, TU_SHAPE(L, S), keep);
    for (int causal = 0; causal < 2; causal++) {
        fx_tensor *w = fx_scaled_dot_product_attention(ctx, q, k, v, lens, causal, mask, 0.0f);
        assert_non_null(w);
        float *p = tu_values(w);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < L; i++) {
                double sum = 0.0;
                int kept = 0;
                for (int j = 0; j < S; j++) {
                    float x = p[(n * L + i) * S + j];
                    bool on = j < (n ? 5 : 2) && keep[i * S + j] && (!causal || j <= i);
                    assert_true(isfinite(x));
                    if (!on)
                        assert_true(x == 0.0f);
                    else
                        assert_true(x > 0.0f);
                    sum += x;
                    kept += on;
                }
                if (kept)
                    assert_true(fabs(sum - 1.0) < 1e-5);
                else
                    assert_true(sum == 0.0);
            }
        free(p);
    }
    tu_free_all(5, (fx_tensor *[]){ q, k, v, lens, mask });
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Output and gradients of sum(y * R) for the run's tensors (grads zeroed
 * first). */
static float *out_and_grads(attn_run *r, fx_tensor *R, float **gq, float **gk, float **gv)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *ts[4] = { r->q, r->k, r->v, NULL };
    for (int i = 0; i < 3; i++)
        fx_tensor_fill(ts[i]->grad, 0.0);
    fx_tensor *y = attn_op(ctx, ts, r);
    assert_non_null(y);
    fx_tensor *loss = fx_sum(ctx, fx_mul(ctx, y, R), 0, NULL, false);
    assert_int_equal(fx_backward(ctx, loss), FX_OK);
    float *out = tu_values(y);
    *gq = tu_values(r->q->grad);
    *gk = tu_values(r->k->grad);
    *gv = tu_values(r->v->grad);
    fx_ctx_free(ctx);
    return out;
}

/* Keys and values past a sample's length, or masked for every query, can be
 * anything: the output and the gradients of q (and of k, v elsewhere) do not
 * move, and the gradients of k and v there are exactly zero. */
static void test_sdpa_masked_values_irrelevant(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(13);
    attn_case c = { .nbd = 2, .bd = { 2, 2 }, .L = 3, .S = 6, .E = 4, .Ev = 3, .nlens = 2,
                    .lens = { 4, 2 }, .causal = false };
    for (int causal = 0; causal < 2; causal++) {
        c.causal = causal;
        attn_run r;
        run_setup(&r, &c, rng);
        fx_tensor *R = tu_randn(rng, 4, TU_SHAPE(2, 2, 3, 3), 1.0, 0.0);
        float *gq0, *gk0, *gv0, *gq1, *gk1, *gv1;
        float *y0 = out_and_grads(&r, R, &gq0, &gk0, &gv0);
        /* Overwrite keys and values at masked positions with large values. */
        float *k = tu_values(r.k), *v = tu_values(r.v);
        for (int n = 0; n < 2; n++)
            for (int h = 0; h < 2; h++)
                for (int j = (int)c.lens[n]; j < c.S; j++) {
                    for (int e = 0; e < c.E; e++)
                        k[((n * 2 + h) * c.S + j) * c.E + e] = 1e4f * (float)(j + e + 1);
                    for (int e = 0; e < c.Ev; e++)
                        v[((n * 2 + h) * c.S + j) * c.Ev + e] = -3e5f * (float)(e + 1);
                }
        fx_tensor_copy_from_host(r.k, k, (size_t)fx_tensor_numel(r.k) * sizeof(float));
        fx_tensor_copy_from_host(r.v, v, (size_t)fx_tensor_numel(r.v) * sizeof(float));
        float *y1 = out_and_grads(&r, R, &gq1, &gk1, &gv1);
        tu_assert_close(y0, y1, fx_tensor_numel(r.q) / c.E * c.Ev, 1e-6);
        tu_assert_close(gq0, gq1, fx_tensor_numel(r.q), 1e-6);
        tu_assert_close(gk0, gk1, fx_tensor_numel(r.k), 1e-6);
        tu_assert_close(gv0, gv1, fx_tensor_numel(r.v), 1e-6);
        for (int n = 0; n < 2; n++)
            for (int h = 0; h < 2; h++)
                for (int j = (int)c.lens[n]; j < c.S; j++) {
                    for (int e = 0; e < c.E; e++)
                        assert_true(gk1[((n * 2 + h) * c.S + j) * c.E + e] == 0.0f);
                    for (int e = 0; e < c.Ev; e++)
                        assert_true(gv1[((n * 2 + h) * c.S + j) * c.Ev + e] == 0.0f);
                }
        free(k), free(v), free(y0), free(y1);
        free(gq0), free(gk0), free(gv0), free(gq1), free(gk1), free(gv1);
        fx_tensor_free(R);
        run_free(&r);
    }
    fx_rng_free(rng);
}

/* Dropout: a no-op in eval mode; in training mode each weight is either
 * dropped or scaled by 1/(1-p) (its gradient with the mask repeated from
 * the seed is the registry's sdpa row). */
static void test_sdpa_dropout(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(15);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t N = 2, L = 8, S = 8;
    fx_tensor *q = tu_randn(rng, 3, TU_SHAPE(N, L, 4), 1.0, 0.0);
    fx_tensor *k = tu_randn(rng, 3, TU_SHAPE(N, S, 4), 1.0, 0.0);
    float eye[2 * 8 * 8] = { 0 };
    for (int n = 0; n < N; n++)
        for (int j = 0; j < S; j++)
            eye[(n * S + j) * S + j] = 1.0f;
    fx_tensor *v = tu_from(FX_F32, 3, TU_SHAPE(N, S, S), eye);
    fx_tensor *w0 = fx_scaled_dot_product_attention(ctx, q, k, v, NULL, false, NULL, 0.0f);
    fx_ctx_set_training(ctx, false);
    fx_tensor *we = fx_scaled_dot_product_attention(ctx, q, k, v, NULL, false, NULL, 0.5f);
    fx_ctx_set_training(ctx, true);
    fx_tensor *wt = fx_scaled_dot_product_attention(ctx, q, k, v, NULL, false, NULL, 0.5f);
    assert_non_null(w0);
    assert_non_null(we);
    assert_non_null(wt);
    float *p0 = tu_values(w0), *pe = tu_values(we), *pt = tu_values(wt);
    int dropped = 0, n = (int)(N * L * S);
    for (int i = 0; i < n; i++) {
        assert_true(pe[i] == p0[i]);
        if (pt[i] == 0.0f)
            dropped++;
        else
            assert_true(fabsf(pt[i] - 2.0f * p0[i]) <= 1e-6f * (1.0f + p0[i]));
    }
    assert_true(dropped > n / 4 && dropped < 3 * n / 4);
    free(p0), free(pe), free(pt);
    fx_ctx_free(ctx);
    tu_free_all(3, (fx_tensor *[]){ q, k, v });
    fx_rng_free(rng);
}

static void expect_fail(fx_ctx *ctx, fx_tensor *y, fx_status s, const char *needle)
{
    assert_null(y);
    if (fx_ctx_status(ctx) != s)
        fail_msg("expected %s, got %s: %s", fx_status_name(s), fx_status_name(fx_ctx_status(ctx)),
                 fx_ctx_error(ctx));
    if (!strstr(fx_ctx_error(ctx), needle))
        fail_msg("message '%s' does not name '%s'", fx_ctx_error(ctx), needle);
    fx_ctx_clear_error(ctx);
}

static void test_sdpa_bad_input(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(16);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const char *op = "scaled_dot_product_attention";
    fx_tensor *q = tu_randn(rng, 3, TU_SHAPE(2, 3, 4), 1.0, 0.0);
    fx_tensor *k = tu_randn(rng, 3, TU_SHAPE(2, 5, 4), 1.0, 0.0);
    fx_tensor *v = tu_randn(rng, 3, TU_SHAPE(2, 5, 2), 1.0, 0.0);
    fx_tensor *k3 = tu_randn(rng, 3, TU_SHAPE(2, 5, 3), 1.0, 0.0);
    fx_tensor *kb = tu_randn(rng, 3, TU_SHAPE(3, 5, 4), 1.0, 0.0);
    fx_tensor *v4 = tu_randn(rng, 3, TU_SHAPE(2, 4, 2), 1.0, 0.0);
    fx_tensor *q1 = tu_randn(rng, 1, TU_SHAPE(4), 1.0, 0.0);
    fx_tensor *q2 = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);
    fx_tensor *k2 = tu_randn(rng, 2, TU_SHAPE(5, 4), 1.0, 0.0);
    fx_tensor *v2 = tu_randn(rng, 2, TU_SHAPE(5, 2), 1.0, 0.0);
    fx_tensor *l0 = tu_from(FX_I64, 1, TU_SHAPE(2), (int64_t[]){ 3, 0 });
    fx_tensor *l6 = tu_from(FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 6, 2 });
    fx_tensor *lneg = tu_from(FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 2, -1 });
    fx_tensor *l3 = tu_from(FX_I64, 1, TU_SHAPE(3), (int64_t[]){ 1, 2, 3 });
    fx_tensor *lf = tu_from(FX_F32, 1, TU_SHAPE(2), (float[]){ 1, 2 });
    fx_tensor *mbad = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);
    fx_tensor *mi64 = tu_from(FX_I64, 2, TU_SHAPE(1, 5), (int64_t[]){ 1, 1, 1, 1, 1 });
    float nanv[2 * 3 * 4];
    for (int i = 0; i < 24; i++)
        nanv[i] = (float)i;
    nanv[5] = NAN;
    fx_tensor *qnan = tu_from(FX_F32, 3, TU_SHAPE(2, 3, 4), nanv);

    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k3, v, NULL, 0, NULL, 0), FX_ERR_SHAPE, op);
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, kb, v, NULL, 0, NULL, 0), FX_ERR_SHAPE, op);
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v4, NULL, 0, NULL, 0), FX_ERR_SHAPE, op);
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q1, q1, q1, NULL, 0, NULL, 0), FX_ERR_SHAPE, op);
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, l0, 0, NULL, 0), FX_ERR_VALUE, "key_lengths[1] = 0");
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, l6, 0, NULL, 0), FX_ERR_VALUE, "[1, 5]");
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, lneg, 0, NULL, 0), FX_ERR_VALUE, op);
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, l3, 0, NULL, 0), FX_ERR_SHAPE, "key_lengths");
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, lf, 0, NULL, 0), FX_ERR_DTYPE, "key_lengths");
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q2, k2, v2, l0, 0, NULL, 0), FX_ERR_SHAPE, "batch dim");
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, NULL, 0, mbad, 0), FX_ERR_SHAPE, "mask");
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, NULL, 0, mi64, 0), FX_ERR_DTYPE, "mask");
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, NULL, 0, NULL, 1.0f), FX_ERR_ARG, op);
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, q, k, v, NULL, 0, NULL, -0.1f), FX_ERR_ARG, op);
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, qnan, k, v, NULL, 0, NULL, 0), FX_ERR_VALUE, op);
    /* A NULL input: an error of its own, or the earlier error kept. */
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, NULL, k, v, NULL, 0, NULL, 0), FX_ERR_ARG, op);
    fx_ctx_fail(ctx, FX_ERR_SHAPE, "earlier");
    expect_fail(ctx, fx_scaled_dot_product_attention(ctx, NULL, k, v, NULL, 0, NULL, 0), FX_ERR_SHAPE, "earlier");
    tu_free_all(17, (fx_tensor *[]){ q, k, v, k3, kb, v4, q1, q2, k2, v2, l0, l6, lneg, l3, lf,
                                     mbad, mi64 });
    fx_tensor_free(qnan);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ---------------------------------------------------------- multi-head */

/* nn.MultiheadAttention in double: in-projection rows [0,E) q, [E,2E) k,
 * [2E,3E) v; heads of D = E/H features; out-projection. b_in, b_out may be
 * NULL; lens may be NULL. */
static void ref_mha(int64_t E, int64_t H, int64_t N, int64_t L, int64_t S, const float *w_in,
                    const float *b_in, const float *w_out, const float *b_out, const float *x_q,
                    const float *x_k, const float *x_v, const int64_t *lens, bool causal,
                    double *out)
{
    int64_t D = E / H;
    const float *xs[3] = { x_q, x_k, x_v };
    int64_t T[3] = { L, S, S };
    double *proj[3]; /* [N, H, T, D] rounded to float, the reference's own layout */
    for (int p = 0; p < 3; p++) {
        proj[p] = malloc((size_t)(N * T[p] * E) * sizeof(double));
        for (int64_t n = 0; n < N; n++)
            for (int64_t t = 0; t < T[p]; t++)
                for (int64_t e = 0; e < E; e++) {
                    double a = b_in ? b_in[p * E + e] : 0.0;
                    for (int64_t f = 0; f < E; f++)
                        a += (double)xs[p][(n * T[p] + t) * E + f] * w_in[(p * E + e) * E + f];
                    int64_t h = e / D, d = e % D;
                    proj[p][((n * H + h) * T[p] + t) * D + d] = (float)a;
                }
    }
    double *att = malloc((size_t)(N * H * L * D) * sizeof(double));
    or_sdpa_spec sp = { N * H, L, S, D, D, lens, H, causal, NULL, NULL };
    or_sdpa(&sp, proj[0], proj[1], proj[2], att);
    for (int64_t n = 0; n < N; n++)
        for (int64_t l = 0; l < L; l++)
            for (int64_t o = 0; o < E; o++) {
                double a = b_out ? b_out[o] : 0.0;
                for (int64_t e = 0; e < E; e++)
                    a += att[((n * H + e / D) * L + l) * D + e % D] * w_out[o * E + e];
                out[(n * L + l) * E + o] = a;
            }
    for (int p = 0; p < 3; p++)
        free(proj[p]);
    free(att);
}

static void test_mha_params_and_names(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(21);
    fx_layer *l = fx_multihead_attention_create("attn", 8, 2, true, rng);
    assert_non_null(l);
    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(l, &ps), FX_OK);
    const char *names[] = { "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                            "attn.out_proj.bias" };
    const int64_t rows[] = { 24, 24, 8, 8 };
    assert_int_equal(ps.count, 4);
    for (int i = 0; i < 4; i++) {
        fx_tensor *t = fx_params_find(&ps, names[i]);
        if (!t)
            fail_msg("no parameter %s", names[i]);
        assert_int_equal(t->shape[0], rows[i]);
        assert_int_equal(t->ndim, strstr(names[i], "bias") ? 1 : 2);
        float *v = tu_values(t);
        double bound = i == 0 ? sqrt(6.0 / (8 + 24)) : 1.0 / sqrt(8.0), mx = 0.0;
        for (int64_t j = 0; j < fx_tensor_numel(t); j++)
            mx = fmax(mx, fabs(v[j]));
        if (strstr(names[i], "bias"))
            assert_true(mx == 0.0);
        else
            assert_true(mx > 0.3 * bound && mx <= bound);
        free(v);
    }
    fx_params_clear(&ps);
    fx_layer_free(l);
    /* Without bias: only the weights. */
    l = fx_multihead_attention_create("attn", 8, 4, false, rng);
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(l, &ps), FX_OK);
    assert_int_equal(ps.count, 2);
    assert_non_null(fx_params_find(&ps, "attn.in_proj_weight"));
    assert_non_null(fx_params_find(&ps, "attn.out_proj.weight"));
    fx_params_clear(&ps);
    fx_layer_free(l);
    assert_null(fx_multihead_attention_create("attn", 8, 3, true, rng));
    assert_null(fx_multihead_attention_create("attn", 0, 1, true, rng));
    assert_null(fx_multihead_attention_create("attn", 8, 0, true, rng));
    fx_rng_free(rng);
}

/* The three projection paths (self: q = k = v; k = v; all distinct) against
 * the reference, with lengths and causal masks, with and without bias. */
static void test_mha_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(22);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const int64_t E = 6, H = 3, N = 2, L = 4, S = 5;
    int64_t lens[2] = { 5, 3 };
    fx_tensor *len = tu_from(FX_I64, 1, TU_SHAPE(N), lens);
    for (int bias = 0; bias < 2; bias++) {
        fx_layer *l = fx_multihead_attention_create("attn", E, H, bias, rng);
        fx_tensor *p[4] = { fx_layer_param(l, "in_proj_weight"), fx_layer_param(l, "in_proj_bias"),
                            fx_layer_param(l, "out_proj.weight"), fx_layer_param(l, "out_proj.bias") };
        for (int i = 0; i < 4; i++)
            if (p[i])
                randomise(p[i], rng, 0.5);
        float *w_in = tu_values(p[0]), *w_out = tu_values(p[2]);
        float *b_in = bias ? tu_values(p[1]) : NULL, *b_out = bias ? tu_values(p[3]) : NULL;
        fx_tensor *xq = tu_randn(rng, 3, TU_SHAPE(N, L, E), 1.0, 0.0);
        fx_tensor *xk = tu_randn(rng, 3, TU_SHAPE(N, S, E), 1.0, 0.0);
        fx_tensor *xv = tu_randn(rng, 3, TU_SHAPE(N, S, E), 1.0, 0.0);
        float *hq = tu_values(xq), *hk = tu_values(xk), *hv = tu_values(xv);
        double *want = malloc((size_t)(N * S * E) * sizeof(double));
        for (int path = 0; path < 3; path++)
            for (int masked = 0; masked < 2; masked++) {
                fx_tensor *q = path == 0 ? xk : xq, *k = xk, *v = path == 2 ? xv : xk;
                const float *rq = path == 0 ? hk : hq, *rv = path == 2 ? hv : hk;
                int64_t Lq = path == 0 ? S : L;
                fx_tensor *y = fx_multihead_attention_forward(l, ctx, q, k, v,
                                                              masked ? len : NULL, masked);
                if (!y)
                    fail_msg("path %d: %s", path, fx_ctx_error(ctx));
                assert_int_equal(y->ndim, 3);
                assert_int_equal(y->shape[1], Lq);
                assert_int_equal(y->shape[2], E);
                ref_mha(E, H, N, Lq, S, w_in, b_in, w_out, b_out, rq, hk, rv,
                        masked ? lens : NULL, masked, want);
                float *got = tu_values(y);
                assert_close_d(got, want, N * Lq * E, 1e-5);
                free(got);
                fx_ctx_reset(ctx);
            }
        /* fx_layer_forward is self-attention without masks. */
        fx_tensor *y = fx_layer_forward(l, ctx, xq);
        assert_non_null(y);
        ref_mha(E, H, N, L, L, w_in, b_in, w_out, b_out, hq, hq, hq, NULL, false, want);
        float *got = tu_values(y);
        assert_close_d(got, want, N * L * E, 1e-5);
        free(got), free(want), free(hq), free(hk), free(hv);
        free(w_in), free(w_out), free(b_in), free(b_out);
        tu_free_all(3, (fx_tensor *[]){ xq, xk, xv });
        fx_layer_free(l);
        fx_ctx_reset(ctx);
    }
    fx_tensor_free(len);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

static fx_tensor *identity_fwd(fx_layer *self, fx_ctx *ctx, fx_tensor *x) { return x; }

static void test_mha_bad_input(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(24);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *l = fx_multihead_attention_create("enc_attn", 4, 2, true, rng);
    fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 3, 4), 1.0, 0.0);
    fx_tensor *x5 = tu_randn(rng, 3, TU_SHAPE(2, 3, 5), 1.0, 0.0);
    fx_tensor *x2 = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);
    fx_tensor *kn = tu_randn(rng, 3, TU_SHAPE(3, 3, 4), 1.0, 0.0);
    fx_tensor *vs = tu_randn(rng, 3, TU_SHAPE(2, 2, 4), 1.0, 0.0);
    fx_tensor *lbad = tu_from(FX_I64, 1, TU_SHAPE(2), (int64_t[]){ 3, 4 });
    expect_fail(ctx, fx_multihead_attention_forward(l, ctx, x5, x5, x5, NULL, false), FX_ERR_SHAPE,
                "enc_attn");
    expect_fail(ctx, fx_layer_forward(l, ctx, x5), FX_ERR_SHAPE, "[N,L,4]");
    expect_fail(ctx, fx_multihead_attention_forward(l, ctx, x2, x2, x2, NULL, false), FX_ERR_SHAPE,
                "multihead_attention");
    expect_fail(ctx, fx_multihead_attention_forward(l, ctx, x, kn, kn, NULL, false), FX_ERR_SHAPE,
                "enc_attn");
    expect_fail(ctx, fx_multihead_attention_forward(l, ctx, x, x, vs, NULL, false), FX_ERR_SHAPE,
                "enc_attn");
    expect_fail(ctx, fx_multihead_attention_forward(l, ctx, x, x, x, lbad, false), FX_ERR_VALUE,
                "key_lengths[1] = 4");
    fx_multihead_attention_forward(l, ctx, x, x, x, lbad, false);
    assert_non_null(strstr(fx_ctx_error(ctx), "enc_attn"));
    fx_ctx_clear_error(ctx);
    fx_layer *other = fx_layer_create("plain", identity_fwd);
    expect_fail(ctx, fx_multihead_attention_forward(other, ctx, x, x, x, NULL, false), FX_ERR_ARG,
                "plain");
    expect_fail(ctx, fx_multihead_attention_forward(l, ctx, x, NULL, x, NULL, false), FX_ERR_ARG,
                "enc_attn");
    assert_int_equal(fx_multihead_attention_set_dropout(l, 1.0f), FX_ERR_ARG);
    assert_int_equal(fx_multihead_attention_set_dropout(other, 0.1f), FX_ERR_ARG);
    assert_int_equal(fx_multihead_attention_set_dropout(l, 0.1f), FX_OK);
    fx_layer_free(other);
    tu_free_all(6, (fx_tensor *[]){ x, x5, x2, kn, vs, lbad });
    fx_layer_free(l);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sdpa_forward),
        cmocka_unit_test(test_sdpa_masked_weights_zero),
        cmocka_unit_test(test_sdpa_masked_values_irrelevant),
        cmocka_unit_test(test_sdpa_dropout),
        cmocka_unit_test(test_sdpa_bad_input),
        cmocka_unit_test(test_mha_params_and_names),
        cmocka_unit_test(test_mha_forward),
        cmocka_unit_test(test_mha_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
