/* test_norm.c - batch, layer and group normalisation: forwards against
 * references computed here in double, running statistics against PyTorch's
 * formula over several steps, large inputs that take the parallel loops
 * (against the double reference, and equal for 1 and 4 threads), the
 * layers (parameters, buffers, optimizer, modes) and refused inputs with
 * their status and message. The finite-difference gradients (batch norm in
 * training and eval mode, affine or not) and the cross-backend comparisons
 * are the registry's norm rows (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------- references */

/*
 * x is seen as (N, C, L). G == 0: batch norm, one set per channel (over N
 * and L); G > 0: group norm, one set per (n, group of C/G channels).
 */
static int64_t set_of(int64_t n, int64_t c, int64_t C, int64_t G)
{
    return G ? n * G + c / (C / G) : c;
}

static int64_t num_sets(int64_t N, int64_t C, int64_t G) { return G ? N * G : C; }

/* Mean and biased variance of every set, two passes in double. */
static void ref_stats(const float *x, int64_t N, int64_t C, int64_t L, int64_t G, double *mean,
                      double *var, int64_t *count)
{
    int64_t S = num_sets(N, C, G);
    for (int64_t s = 0; s < S; s++)
        mean[s] = var[s] = 0.0, count[s] = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t l = 0; l < L; l++) {
                int64_t s = set_of(n, c, C, G);
                mean[s] += x[(n * C + c) * L + l];
                count[s]++;
            }
    for (int64_t s = 0; s < S; s++)
        mean[s] /= (double)count[s];
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t l = 0; l < L; l++) {
                int64_t s = set_of(n, c, C, G);
                double d = x[(n * C + c) * L + l] - mean[s];
                var[s] += d * d;
            }
    for (int64_t s = 0; s < S; s++)
        var[s] /= (double)count[s];
}

/* y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c] (NULL: 1, 0). */
static void ref_apply(const float *x, int64_t N, int64_t C, int64_t L, int64_t G,
                      const double *mean, const double *var, double eps, const float *gamma,
                      const float *beta, double *y)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t l = 0; l < L; l++) {
                int64_t s = set_of(n, c, C, G), i = (n * C + c) * L + l;
                y[i] = (x[i] - mean[s]) / sqrt(var[s] + eps) * (gamma ? gamma[c] : 1.0) +
                       (beta ? beta[c] : 0.0);
            }
}

/* Gradients of sum(y * dy) for a normalisation with batch statistics:
 * xhat = (x - mean) * r, dxhat = dy * gamma, dx = r * (dxhat - mean(dxhat)
 * - xhat * mean(dxhat * xhat)) per set; dgamma[c] = sum dy * xhat, dbeta[c]
 * = sum dy. */
static void ref_backward(const float *x, const float *dy, int64_t N, int64_t C, int64_t L,
                         int64_t G, double eps, const float *gamma, double *dx, double *dgamma,
                         double *dbeta)
{
    int64_t S = num_sets(N, C, G), *cnt = calloc((size_t)S, sizeof *cnt);
    double *mean = calloc((size_t)S, sizeof *mean), *var = calloc((size_t)S, sizeof *var);
    double *s1 = calloc((size_t)S, sizeof *s1), *s2 = calloc((size_t)S, sizeof *s2);
    ref_stats(x, N, C, L, G, mean, var, cnt);
    for (int64_t c = 0; c < C; c++)
        dgamma[c] = dbeta[c] = 0.0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t l = 0; l < L; l++) {
                    int64_t s = set_of(n, c, C, G), i = (n * C + c) * L + l;
                    double r = 1.0 / sqrt(var[s] + eps), xh = (x[i] - mean[s]) * r;
                    double dxh = dy[i] * (gamma ? gamma[c] : 1.0);
                    if (pass == 0) {
                        s1[s] += dxh;
                        s2[s] += dxh * xh;
                        dgamma[c] += dy[i] * xh;
                        dbeta[c] += dy[i];
                    } else {
                        dx[i] = r * (dxh - s1[s] / cnt[s] - xh * s2[s] / cnt[s]);
                    }
                }
    free(cnt);
    free(mean);
    free(var);
    free(s1);
    free(s2);
}

/* |got - want| <= tol * (1 + |want|) elementwise. */
static void assert_close_d(const float *got, const double *want, int64_t n, double tol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i]))))
            fail_msg("element %lld: %.7g vs reference %.7g", (long long)i, got[i], want[i]);
}

/* A persistent f32 tensor without grad holding values. */
static fx_tensor *vec(int64_t n, const float *v) { return tu_from(FX_F32, 1, (int64_t[]){n}, v); }

static void fill_const(fx_tensor *t, double v) { assert_int_equal(fx_tensor_fill(t, v), FX_OK); }

/* x [N, C, *] split into (N, C, L). */
static void ncl(const fx_tensor *x, int64_t *N, int64_t *C, int64_t *L)
{
    *N = x->shape[0];
    *C = x->shape[1];
    *L = fx_tensor_numel(x) / (*N * *C);
}

/* Finite-difference checks (the registry's batch_norm, layer_norm and
 * group_norm rows) run on inputs of at most a few hundred elements: the f32
 * loss sum(y * R) carries rounding noise of about sqrt(n) * 6e-8 * |yR| /
 * (2 eps), which passes atol 1e-3 at a few hundred outputs. The larger
 * shapes below (long runs, channel blocks) have their gradients checked
 * against the double reference at 1e-4 in test_norm_reference. */

/* ------------------------------------------------------------ batch norm */

typedef struct {
    int ndim;
    int64_t shape[4];
} shape_case;

/* The last two: L == 1 with a channel block boundary at 64, and runs longer
 * than the kernel's flush length (512). */
static const shape_case bn_shapes[] = {
    {2, {4, 3}}, {3, {5, 2, 3}}, {4, {3, 4, 2, 2}}, {2, {3, 70}}, {3, {2, 3, 520}},
};

/* Training forward against the batch statistics, the running statistics
 * after the step against the formula, then an eval forward against the
 * running statistics; with and without the affine map, and for data with
 * a large mean next to its spread. */
static void test_batch_norm_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (size_t k = 0; k < sizeof bn_shapes / sizeof *bn_shapes; k++)
        for (int affine = 0; affine < 2; affine++) {
            double shift = k == 1 ? 300.0 : 0.5, eps = 1e-5, mom = 0.1;
            fx_tensor *x = tu_randn(rng, bn_shapes[k].ndim, bn_shapes[k].shape, 2.0, shift);
            int64_t N, C, L;
            ncl(x, &N, &C, &L);
            fx_tensor *g = affine ? tu_randn(rng, 1, &C, 1.0, 1.0) : NULL;
            fx_tensor *b = affine ? tu_randn(rng, 1, &C, 1.0, 0.0) : NULL;
            fx_tensor *rm = fx_tensor_create(fx_cpu(), FX_F32, 1, &C);
            fx_tensor *rv = fx_tensor_create(fx_cpu(), FX_F32, 1, &C);
            fill_const(rv, 1.0);
            int64_t n = fx_tensor_numel(x), cnt[128];
            float *xv = tu_values(x), *gv = g ? tu_values(g) : NULL, *bv = b ? tu_values(b) : NULL;
            double *want = malloc((size_t)n * sizeof *want), mean[128], var[128];
            ref_stats(xv, N, C, L, 0, mean, var, cnt);

            fx_ctx_set_training(ctx, true);
            fx_tensor *y = fx_batch_norm(ctx, x, g, b, rm, rv, (float)mom, (float)eps);
            if (!y)
                fail_msg("batch_norm: %s", fx_ctx_error(ctx));
            assert_true(fx_tensor_same_shape(y, x));
            float *yv = tu_values(y);
            ref_apply(xv, N, C, L, 0, mean, var, eps, gv, bv, want);
            assert_close_d(yv, want, n, 1e-4);
            free(yv);

            double rmw[128], rvw[128];
            for (int64_t c = 0; c < C; c++) {
                rmw[c] = mom * mean[c];
                rvw[c] = (1 - mom) + mom * var[c] * (double)cnt[c] / (double)(cnt[c] - 1);
            }
            float *rmv = tu_values(rm), *rvv = tu_values(rv);
            assert_close_d(rmv, rmw, C, 1e-5);
            assert_close_d(rvv, rvw, C, 1e-5);

            fx_ctx_set_training(ctx, false);
            y = fx_batch_norm(ctx, x, g, b, rm, rv, (float)mom, (float)eps);
            assert_non_null(y);
            yv = tu_values(y);
            float *rm2 = tu_values(rm);
            assert_memory_equal(rm2, rmv, (size_t)C * sizeof(float)); /* eval leaves them */
            ref_apply(xv, N, C, L, 0, rmw, rvw, eps, gv, bv, want);
            assert_close_d(yv, want, n, 1e-4);
            free(yv);
            free(rm2);
            free(rmv);
            free(rvv);
            free(xv);
            free(gv);
            free(bv);
            free(want);
            fx_ctx_reset(ctx);
            fx_tensor *ts[] = {x, g, b, rm, rv};
            tu_free_all(5, ts);
        }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Several training steps on different batches: the running statistics
 * follow running = (1 - m) running + m batch (unbiased variance), computed
 * here in double. momentum 1 keeps the last batch's statistics. */
static void test_batch_norm_running(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(2);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    const double moms[] = {0.3, 1.0};
    for (int mk = 0; mk < 2; mk++) {
        int64_t N = 6, C = 3, L = 4, cnt[3];
        fx_tensor *rm = fx_tensor_create(fx_cpu(), FX_F32, 1, &C);
        fx_tensor *rv = fx_tensor_create(fx_cpu(), FX_F32, 1, &C);
        fill_const(rv, 1.0);
        double wm[3] = {0, 0, 0}, wv[3] = {1, 1, 1}, mean[3], var[3];
        for (int step = 0; step < 5; step++) {
            fx_tensor *x = tu_randn(rng, 3, (int64_t[]){N, C, L}, 1.0 + step, step - 2.0);
            float *xv = tu_values(x);
            ref_stats(xv, N, C, L, 0, mean, var, cnt);
            for (int c = 0; c < C; c++) {
                wm[c] = (1 - moms[mk]) * wm[c] + moms[mk] * mean[c];
                wv[c] = (1 - moms[mk]) * wv[c] + moms[mk] * var[c] * cnt[c] / (cnt[c] - 1.0);
            }
            assert_non_null(fx_batch_norm(ctx, x, NULL, NULL, rm, rv, (float)moms[mk], 1e-5f));
            fx_ctx_reset(ctx);
            free(xv);
            fx_tensor_free(x);
        }
        float *rmv = tu_values(rm), *rvv = tu_values(rv);
        assert_close_d(rmv, wm, C, 1e-5);
        assert_close_d(rvv, wv, C, 1e-5);
        free(rmv);
        free(rvv);
        fx_tensor_free(rm);
        fx_tensor_free(rv);
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Without running statistics, eval mode uses the batch's (PyTorch's
 * track_running_stats=False): the same output as training mode. */
static void test_batch_norm_no_running(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(4, 3, 5), 1.0, 0.0);
    fx_tensor *y1 = fx_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 0.1f, 1e-5f);
    fx_ctx_set_training(ctx, false);
    fx_tensor *y2 = fx_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 0.1f, 1e-5f);
    assert_non_null(y1);
    assert_non_null(y2);
    float *a = tu_values(y1), *b = tu_values(y2);
    assert_memory_equal(a, b, 60 * sizeof(float));
    free(a);
    free(b);
    fx_tensor_free(x);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ------------------------------------------------------ layer/group norm */

typedef struct {
    int ndim;
    int64_t shape[4];
    int64_t groups; /* group norm; layer norm: number of trailing dims */
} norm_case;

/* The last two: rows longer than the kernel's flush length, and a channel
 * block boundary at 64 in the dgamma sums. */
static const norm_case ln_cases[] = {
    {2, {4, 5}, 1}, {3, {2, 3, 4}, 2}, {3, {2, 3, 4}, 1}, {2, {2, 520}, 1}, {3, {2, 2, 70}, 1},
};

/* Layer norm is group norm of x viewed as (rows, D, 1) with one group. */
static void ln_geom(const norm_case *nc, int64_t *R, int64_t *D)
{
    *D = 1;
    for (int d = nc->ndim - (int)nc->groups; d < nc->ndim; d++)
        *D *= nc->shape[d];
    int64_t n = 1;
    for (int d = 0; d < nc->ndim; d++)
        n *= nc->shape[d];
    *R = n / *D;
}

static void test_layer_norm_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(5);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (size_t k = 0; k < sizeof ln_cases / sizeof *ln_cases; k++)
        for (int affine = 0; affine < 2; affine++) {
            const norm_case *nc = &ln_cases[k];
            int ns = (int)nc->groups;
            const int64_t *nshape = nc->shape + nc->ndim - ns;
            int64_t R, D;
            ln_geom(nc, &R, &D);
            fx_tensor *x = tu_randn(rng, nc->ndim, nc->shape, 3.0, k == 0 ? 1000.0 : -1.0);
            fx_tensor *g = affine ? tu_randn(rng, ns, nshape, 1.0, 1.0) : NULL;
            fx_tensor *b = affine ? tu_randn(rng, ns, nshape, 1.0, 0.0) : NULL;
            fx_tensor *y = fx_layer_norm(ctx, x, ns, nshape, g, b, 1e-5f);
            if (!y)
                fail_msg("layer_norm: %s", fx_ctx_error(ctx));
            assert_true(fx_tensor_same_shape(x, y));
            float *xv = tu_values(x), *yv = tu_values(y);
            float *gv = g ? tu_values(g) : NULL, *bv = b ? tu_values(b) : NULL;
            double *want = malloc((size_t)(R * D) * sizeof *want);
            double *mean = malloc((size_t)R * sizeof *mean), *var = malloc((size_t)R * sizeof *var);
            int64_t *cnt = malloc((size_t)R * sizeof *cnt);
            ref_stats(xv, R, D, 1, 1, mean, var, cnt);
            ref_apply(xv, R, D, 1, 1, mean, var, 1e-5, gv, bv, want);
            /* a mean of 1000 next to a spread of 3 leaves float x ~5 digits */
            assert_close_d(yv, want, R * D, k == 0 ? 2e-3 : 1e-4);
            free(xv);
            free(yv);
            free(gv);
            free(bv);
            free(want);
            free(mean);
            free(var);
            free(cnt);
            fx_ctx_reset(ctx);
            fx_tensor *ts[] = {x, g, b};
            tu_free_all(3, ts);
        }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* In order: L > 1; 4-D; L == 1; instance norm (groups == C); one group;
 * L == 1 with channel blocks crossing group boundaries. */
static const norm_case gn_cases[] = {
    {3, {2, 4, 3}, 2}, {4, {2, 6, 2, 2}, 3}, {2, {3, 4}, 2},
    {3, {2, 4, 3}, 4}, {3, {2, 4, 3}, 1},    {2, {3, 70}, 5},
};

static void test_group_norm_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(7);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (size_t k = 0; k < sizeof gn_cases / sizeof *gn_cases; k++)
        for (int affine = 0; affine < 2; affine++) {
            const norm_case *nc = &gn_cases[k];
            fx_tensor *x = tu_randn(rng, nc->ndim, nc->shape, 2.0, 0.7);
            int64_t N, C, L, G = nc->groups;
            ncl(x, &N, &C, &L);
            fx_tensor *g = affine ? tu_randn(rng, 1, &C, 1.0, 1.0) : NULL;
            fx_tensor *b = affine ? tu_randn(rng, 1, &C, 1.0, 0.0) : NULL;
            fx_tensor *y = fx_group_norm(ctx, x, G, g, b, 1e-5f);
            if (!y)
                fail_msg("group_norm: %s", fx_ctx_error(ctx));
            int64_t n = fx_tensor_numel(x), cnt[64];
            float *xv = tu_values(x), *yv = tu_values(y);
            float *gv = g ? tu_values(g) : NULL, *bv = b ? tu_values(b) : NULL;
            double *want = malloc((size_t)n * sizeof *want), mean[64], var[64];
            ref_stats(xv, N, C, L, G, mean, var, cnt);
            ref_apply(xv, N, C, L, G, mean, var, 1e-5, gv, bv, want);
            assert_close_d(yv, want, n, 1e-4);
            free(xv);
            free(yv);
            free(gv);
            free(bv);
            free(want);
            fx_ctx_reset(ctx);
            fx_tensor *ts[] = {x, g, b};
            tu_free_all(3, ts);
        }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* --------------------------------------------------------- large inputs */

/* Runs one normalisation on x (kind 0 batch norm, 1 group norm, 2
 * layer norm over the last dim) with nthreads and backpropagates seed dy;
 * returns y, dx, dgamma, dbeta concatenated (malloc'd). */
static float *run_large(int kind, fx_tensor *x, fx_tensor *g, fx_tensor *b, int64_t groups,
                        fx_tensor *dy, int nthreads)
{
    fx_set_num_threads(nthreads);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = kind == 0   ? fx_batch_norm(ctx, x, g, b, NULL, NULL, 0.1f, 1e-5f)
                   : kind == 1 ? fx_group_norm(ctx, x, groups, g, b, 1e-5f)
                               : fx_layer_norm(ctx, x, 1, x->shape + x->ndim - 1, g, b, 1e-5f);
    if (!y)
        fail_msg("large: %s", fx_ctx_error(ctx));
    fx_tensor *ts[] = {x, g, b};
    for (int i = 0; i < 3; i++)
        fx_tensor_fill(ts[i]->grad, 0.0);
    assert_int_equal(fx_backward_seed(ctx, y, dy), FX_OK);
    int64_t n = fx_tensor_numel(x), C = fx_tensor_numel(g);
    float *out = malloc((size_t)(2 * n + 2 * C) * sizeof *out);
    fx_tensor_to_host(y, out, (size_t)n * sizeof(float));
    fx_tensor_to_host(x->grad, out + n, (size_t)n * sizeof(float));
    fx_tensor_to_host(g->grad, out + 2 * n, (size_t)C * sizeof(float));
    fx_tensor_to_host(b->grad, out + 2 * n + C, (size_t)C * sizeof(float));
    fx_ctx_free(ctx);
    return out;
}

/* Forward and all gradients against the double references for the shapes
 * too large for finite differences: the edge cases of the kernels (channel
 * blocks, runs longer than the flush length) and inputs above the parallel
 * threshold for every L == 1 / L > 1 loop, which must also give the same
 * bits with 1 and 4 threads (the sums do not depend on the thread count). */
static void test_norm_reference(void **state)
{
    (void)state;
    int threads0 = fx_get_num_threads();
    fx_rng *rng = fx_rng_create(9);
    const struct {
        int kind;
        int ndim;
        int64_t shape[4];
        int64_t groups;
    } cases[] = {
        {0, 2, {8, 70}, 0},      {0, 3, {2, 3, 520}, 0}, {2, 2, {2, 520}, 1},
        {2, 3, {2, 2, 70}, 1},   {1, 2, {3, 70}, 5},     {1, 2, {4, 140}, 7},
        {0, 3, {64, 40, 16}, 0}, {0, 2, {1024, 48}, 0},  {1, 4, {8, 32, 16, 16}, 8},
        {1, 2, {2048, 24}, 4},   {2, 2, {256, 160}, 1},  {0, 2, {130, 300}, 0},
        {2, 2, {130, 300}, 1}, /* partial chunks and channel tiles */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        fx_tensor *x = tu_randn(rng, cases[k].ndim, cases[k].shape, 1.0, 2.0);
        int64_t N, C, L, n = fx_tensor_numel(x);
        ncl(x, &N, &C, &L);
        if (cases[k].kind == 2) { /* layer norm: rows of the last dim */
            C = x->shape[x->ndim - 1];
            N = n / C;
            L = 1;
        }
        int64_t G = cases[k].kind == 0 ? 0 : cases[k].kind == 1 ? cases[k].groups : 1;
        fx_tensor *g = tu_randn(rng, 1, &C, 0.5, 1.0), *b = tu_randn(rng, 1, &C, 0.5, 0.0);
        fx_tensor *dy = tu_randn(rng, x->ndim, x->shape, 1.0, 0.0);
        float *p1 = run_large(cases[k].kind, x, g, b, G, dy, 1);
        float *p4 = run_large(cases[k].kind, x, g, b, G, dy, 4);
        assert_memory_equal(p1, p4, (size_t)(2 * n + 2 * C) * sizeof(float));

        float *xv = tu_values(x), *gv = tu_values(g), *bv = tu_values(b), *dv = tu_values(dy);
        int64_t S = num_sets(N, C, G), *cnt = malloc((size_t)S * sizeof *cnt);
        double *mean = malloc((size_t)S * sizeof *mean), *var = malloc((size_t)S * sizeof *var);
        double *want = malloc((size_t)(2 * n + 2 * C) * sizeof *want);
        ref_stats(xv, N, C, L, G, mean, var, cnt);
        ref_apply(xv, N, C, L, G, mean, var, 1e-5, gv, bv, want);
        ref_backward(xv, dv, N, C, L, G, 1e-5, gv, want + n, want + 2 * n, want + 2 * n + C);
        assert_close_d(p1, want, n, 1e-4);
        assert_close_d(p1 + n, want + n, n, 1e-4);
        assert_close_d(p1 + 2 * n, want + 2 * n, 2 * C, 1e-4);
        free(p1);
        free(p4);
        free(xv);
        free(gv);
        free(bv);
        free(dv);
        free(cnt);
        free(mean);
        free(var);
        free(want);
        fx_tensor *ts[] = {x, g, b, dy};
        tu_free_all(4, ts);
    }
    fx_set_num_threads(threads0);
    fx_rng_free(rng);
}

/* --------------------------------------------------------------- layers */

static bool has_name(const fx_params *p, const char *name)
{
    return fx_params_find(p, name) != NULL;
}

/* batchnorm2d: parameters and buffers under their PyTorch names, buffers
 * without grad; a training forward moves the running statistics, an
 * optimizer step moves the weights but not the buffers, eval mode uses the
 * running statistics. */
static void test_batchnorm_layer(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(10);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *bn = fx_batchnorm2d_create("bn", 3, NULL);
    assert_non_null(bn);
    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(bn, &ps), FX_OK);
    assert_int_equal(ps.count, 4);
    assert_true(has_name(&ps, "bn.weight") && has_name(&ps, "bn.bias"));
    assert_true(has_name(&ps, "bn.running_mean") && has_name(&ps, "bn.running_var"));
    fx_tensor *w = fx_layer_param(bn, "weight"), *rm = fx_layer_param(bn, "running_mean");
    fx_tensor *rv = fx_layer_param(bn, "running_var");
    assert_true(fx_tensor_requires_grad(w));
    assert_false(fx_tensor_requires_grad(rm));
    assert_false(fx_tensor_requires_grad(rv));
    const char *names[] = {"weight", "bias", "running_mean", "running_var"};
    const double init[] = {1, 0, 0, 1};
    for (int i = 0; i < 4; i++) {
        float *v = tu_values(fx_layer_param(bn, names[i]));
        for (int c = 0; c < 3; c++)
            assert_float_equal(v[c], init[i], 0.0);
        free(v);
    }

    fx_optim *opt = fx_optim_create(FX_OPT_SGD, &(fx_optim_hparams){.lr = 0.1}, &ps);
    assert_non_null(opt);
    fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(2, 3, 2, 2), 1.0, 3.0);
    fx_tensor *y = fx_layer_forward(bn, ctx, x);
    assert_non_null(y);
    fx_tensor *r = tu_randn(rng, 4, TU_SHAPE(2, 3, 2, 2), 1.0, 0.0);
    assert_int_equal(fx_backward(ctx, fx_sum(ctx, fx_mul(ctx, y, r), 0, NULL, false)), FX_OK);
    float *rm1 = tu_values(rm), *rv1 = tu_values(rv);
    for (int c = 0; c < 3; c++)
        assert_true(fabs(rm1[c] - 0.3) < 0.2); /* 0.1 * a batch mean near 3 */
    assert_int_equal(fx_optim_step(opt), FX_OK);
    float *rm2 = tu_values(rm), *rv2 = tu_values(rv), *wv = tu_values(w);
    assert_memory_equal(rm1, rm2, 3 * sizeof(float));
    assert_memory_equal(rv1, rv2, 3 * sizeof(float));
    assert_true(wv[0] != 1.0f || wv[1] != 1.0f || wv[2] != 1.0f);
    fx_ctx_reset(ctx);

    /* eval: the running statistics, the same as the op with them */
    fx_ctx_set_training(ctx, false);
    y = fx_layer_forward(bn, ctx, x);
    fx_tensor *y2 = fx_batch_norm(ctx, x, w, fx_layer_param(bn, "bias"), rm, rv, 0.1f, 1e-5f);
    assert_non_null(y);
    assert_non_null(y2);
    float *a = tu_values(y), *b = tu_values(y2), *rm3 = tu_values(rm);
    assert_memory_equal(a, b, 24 * sizeof(float));
    assert_memory_equal(rm1, rm3, 3 * sizeof(float));
    free(a);
    free(b);
    free(rm1);
    free(rv1);
    free(rm2);
    free(rv2);
    free(rm3);
    free(wv);
    fx_optim_free(opt);
    fx_params_clear(&ps);
    fx_tensor_free(x);
    fx_tensor_free(r);
    fx_layer_free(bn);

    /* options: no affine map, no running statistics (batch stats in eval) */
    bn = fx_batchnorm1d_create("bn1", 4,
                               &(fx_norm_opts){.no_affine = true, .no_running_stats = true});
    assert_non_null(bn);
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(bn, &ps), FX_OK);
    assert_int_equal(ps.count, 0);
    fx_params_clear(&ps);
    x = tu_randn(rng, 3, TU_SHAPE(3, 4, 5), 1.0, 0.0);
    y = fx_layer_forward(bn, ctx, x); /* eval mode still */
    y2 = fx_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 0.1f, 1e-5f);
    assert_non_null(y);
    a = tu_values(y);
    b = tu_values(y2);
    assert_memory_equal(a, b, 60 * sizeof(float));
    free(a);
    free(b);
    fx_tensor_free(x);
    x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0); /* [N,C] too */
    assert_non_null(fx_layer_forward(bn, ctx, x));
    fx_tensor_free(x);
    fx_layer_free(bn);

    /* bad options */
    assert_null(fx_batchnorm2d_create("bn", 0, NULL));
    assert_null(fx_batchnorm2d_create("bn", 3, &(fx_norm_opts){.eps = -1}));
    assert_null(fx_batchnorm2d_create("bn", 3, &(fx_norm_opts){.momentum = 1.5}));
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* layernorm and groupnorm layers: their parameters and the op's output
 * (the gradient check through the layers is the registry's layernorm and
 * groupnorm rows). */
static void test_ln_gn_layers(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(11);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *ln = fx_layernorm_create("ln", 2, TU_SHAPE(3, 4), NULL);
    fx_layer *gn = fx_groupnorm_create("gn", 2, 6, &(fx_norm_opts){.eps = 1e-3});
    assert_non_null(ln);
    assert_non_null(gn);
    fx_tensor *lw = fx_layer_param(ln, "weight"), *gw = fx_layer_param(gn, "weight");
    assert_true(lw && lw->ndim == 2 && lw->shape[0] == 3 && lw->shape[1] == 4);
    assert_true(gw && gw->ndim == 1 && gw->shape[0] == 6);
    assert_null(fx_layer_param(ln, "running_mean"));
    fx_tensor *b = fx_layer_param(gn, "bias");
    fx_tensor *rb = tu_randn(rng, 1, TU_SHAPE(6), 1.0, 0.0);
    fx_tensor_copy(b, rb);

    fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 3, 4), 1.0, 0.0);
    fx_tensor *y = fx_layer_forward(ln, ctx, x);
    fx_tensor *y2 = fx_layer_norm(ctx, x, 2, TU_SHAPE(3, 4), lw, fx_layer_param(ln, "bias"), 1e-5f);
    assert_non_null(y);
    float *a = tu_values(y), *c = tu_values(y2);
    assert_memory_equal(a, c, 24 * sizeof(float));
    free(a);
    free(c);
    fx_tensor *x2 = tu_randn(rng, 3, TU_SHAPE(2, 6, 3), 1.0, 0.0);
    y = fx_layer_forward(gn, ctx, x2);
    y2 = fx_group_norm(ctx, x2, 2, gw, b, 1e-3f);
    assert_non_null(y);
    a = tu_values(y);
    c = tu_values(y2);
    assert_memory_equal(a, c, 36 * sizeof(float));
    free(a);
    free(c);
    fx_ctx_reset(ctx);
    assert_null(fx_groupnorm_create("gn", 4, 6, NULL));
    assert_null(fx_groupnorm_create("gn", 0, 6, NULL));
    assert_null(fx_layernorm_create("ln", 0, TU_SHAPE(3), NULL));
    fx_tensor *ts[] = {x, x2, rb};
    tu_free_all(3, ts);
    fx_layer_free(ln);
    fx_layer_free(gn);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ------------------------------------------------------------ bad input */

/* Asserts the context failed with status s and a message containing each
 * of the NULL-terminated strings, then clears the error. */
static void expect_error(fx_ctx *ctx, fx_tensor *y, fx_status s, ...)
{
    assert_null(y);
    if (fx_ctx_status(ctx) != s)
        fail_msg("status %s, wanted %s: %s", fx_status_name(fx_ctx_status(ctx)), fx_status_name(s),
                 fx_ctx_error(ctx));
    va_list ap;
    va_start(ap, s);
    for (const char *w; (w = va_arg(ap, const char *));)
        if (!strstr(fx_ctx_error(ctx), w))
            fail_msg("message '%s' lacks '%s'", fx_ctx_error(ctx), w);
    va_end(ap);
    fx_ctx_reset(ctx);
}

static void test_norm_bad(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(12);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(2, 3), 1.0, 0.0);
    fx_tensor *v4 = vec(4, (float[]){0, 0, 1, 1}), *v3 = vec(3, (float[]){1, 1, 1});
    fx_tensor *xi = tu_from(FX_I32, 2, TU_SHAPE(2, 3), (int32_t[]){1, 2, 3, 4, 5, 6});
    fx_tensor *x14 = tu_randn(rng, 2, TU_SHAPE(1, 4), 1.0, 0.0);
    fx_tensor *x1d = tu_randn(rng, 1, TU_SHAPE(5), 1.0, 0.0);
    fx_tensor *x3 = tu_randn(rng, 3, TU_SHAPE(2, 4, 5), 1.0, 0.0);
    fx_tensor *m22 = tu_randn(rng, 2, TU_SHAPE(2, 2), 1.0, 0.0);

    expect_error(ctx, fx_batch_norm(ctx, x, NULL, NULL, v4, v4, 0.1f, 1e-5f), FX_ERR_SHAPE,
                 "batch_norm: x has 3 channels, running_mean has 4", NULL);
    expect_error(ctx, fx_batch_norm(ctx, x, v4, NULL, NULL, NULL, 0.1f, 1e-5f), FX_ERR_SHAPE,
                 "batch_norm: x has 3 channels, gamma has 4", NULL);
    expect_error(ctx, fx_batch_norm(ctx, x, NULL, m22, NULL, NULL, 0.1f, 1e-5f), FX_ERR_SHAPE,
                 "batch_norm: beta must be [3]", "[2,2]", NULL);
    expect_error(ctx, fx_batch_norm(ctx, xi, NULL, NULL, NULL, NULL, 0.1f, 1e-5f), FX_ERR_DTYPE,
                 "batch_norm", "i32", NULL);
    fx_tensor *ri = tu_from(FX_I32, 1, TU_SHAPE(3), (int32_t[]){0, 0, 0});
    expect_error(ctx, fx_batch_norm(ctx, x, NULL, NULL, ri, v3, 0.1f, 1e-5f), FX_ERR_DTYPE,
                 "batch_norm: running_mean must be f32", NULL);
    expect_error(ctx, fx_batch_norm(ctx, x, NULL, NULL, v3, NULL, 0.1f, 1e-5f), FX_ERR_ARG,
                 "batch_norm: running_mean and running_var go together", NULL);
    expect_error(ctx, fx_batch_norm(ctx, x14, NULL, NULL, NULL, NULL, 0.1f, 1e-5f), FX_ERR_SHAPE,
                 "batch_norm", "more than one value per channel", "[1,4]", NULL);
    expect_error(ctx, fx_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 0.1f, -1.0f), FX_ERR_ARG,
                 "batch_norm: eps", NULL);
    expect_error(ctx, fx_batch_norm(ctx, x, NULL, NULL, v3, v3, 2.0f, 1e-5f), FX_ERR_ARG,
                 "batch_norm: momentum", NULL);
    expect_error(ctx, fx_batch_norm(ctx, x1d, NULL, NULL, NULL, NULL, 0.1f, 1e-5f), FX_ERR_SHAPE,
                 "batch_norm: x must be [N,C,...]", "[5]", NULL);
    /* eval mode with running statistics accepts a single sample */
    fx_ctx_set_training(ctx, false);
    fx_tensor *r4 = vec(4, (float[]){0, 0, 0, 0}), *o4 = vec(4, (float[]){1, 1, 1, 1});
    assert_non_null(fx_batch_norm(ctx, x14, NULL, NULL, r4, o4, 0.1f, 1e-5f));
    fx_ctx_set_training(ctx, true);

    expect_error(ctx, fx_group_norm(ctx, x3, 3, NULL, NULL, 1e-5f), FX_ERR_SHAPE,
                 "group_norm: 3 groups do not divide the 4 channels of x [2,4,5]", NULL);
    expect_error(ctx, fx_group_norm(ctx, x3, 0, NULL, NULL, 1e-5f), FX_ERR_ARG,
                 "group_norm: groups is 0", NULL);
    expect_error(ctx, fx_group_norm(ctx, x3, 2, v3, NULL, 1e-5f), FX_ERR_SHAPE,
                 "group_norm: x has 4 channels, gamma has 3", NULL);
    expect_error(ctx, fx_group_norm(ctx, xi, 1, NULL, NULL, 1e-5f), FX_ERR_DTYPE, "group_norm",
                 NULL);

    expect_error(ctx, fx_layer_norm(ctx, x3, 2, TU_SHAPE(3, 5), NULL, NULL, 1e-5f), FX_ERR_SHAPE,
                 "layer_norm: x [2,4,5] does not end in the normalised shape [3,5]", NULL);
    expect_error(ctx, fx_layer_norm(ctx, x3, 4, TU_SHAPE(1, 2, 4, 5), NULL, NULL, 1e-5f),
                 FX_ERR_SHAPE, "layer_norm", NULL);
    expect_error(ctx, fx_layer_norm(ctx, x3, 1, TU_SHAPE(5), v4, NULL, 1e-5f), FX_ERR_SHAPE,
                 "layer_norm: gamma is [4] but the normalised shape is [5]", NULL);
    expect_error(ctx, fx_layer_norm(ctx, x3, 0, TU_SHAPE(5), NULL, NULL, 1e-5f), FX_ERR_ARG,
                 "layer_norm", NULL);
    expect_error(ctx, fx_layer_norm(ctx, xi, 1, TU_SHAPE(3), NULL, NULL, 1e-5f), FX_ERR_DTYPE,
                 "layer_norm", NULL);

    /* through layers: the layer's name comes first */
    fx_layer *bn = fx_batchnorm2d_create("bn1", 4, NULL);
    fx_tensor *x4 = tu_randn(rng, 4, TU_SHAPE(2, 3, 2, 2), 1.0, 0.0);
    expect_error(ctx, fx_layer_forward(bn, ctx, x4), FX_ERR_SHAPE,
                 "layer 'bn1': batch_norm: x has 3 channels, running_mean has 4", NULL);
    expect_error(ctx, fx_layer_forward(bn, ctx, x3), FX_ERR_SHAPE,
                 "layer 'bn1': batchnorm2d: x must be [N,C,H,W], got [2,4,5]", NULL);
    fx_layer *gn = fx_groupnorm_create("gn1", 2, 6, NULL);
    expect_error(ctx, fx_layer_forward(gn, ctx, x3), FX_ERR_SHAPE,
                 "layer 'gn1': group_norm: x has 4 channels, gamma has 6", NULL);
    fx_layer *b1 = fx_batchnorm1d_create("b1", 4, NULL);
    expect_error(ctx, fx_layer_forward(b1, ctx, x4), FX_ERR_SHAPE, "layer 'b1': batchnorm1d", NULL);

    /* NULL propagates without replacing the first error */
    expect_error(ctx, fx_batch_norm(ctx, NULL, NULL, NULL, NULL, NULL, 0.1f, 1e-5f), FX_ERR_ARG,
                 "batch_norm", NULL);
    fx_group_norm(ctx, x3, 3, NULL, NULL, 1e-5f);
    assert_null(fx_layer_norm(ctx, NULL, 1, TU_SHAPE(3), NULL, NULL, 1e-5f));
    expect_error(ctx, fx_batch_norm(ctx, NULL, NULL, NULL, NULL, NULL, 0.1f, 1e-5f), FX_ERR_SHAPE,
                 "group_norm", NULL);

    fx_tensor *ts[] = {x, v4, v3, xi, x14, x1d, x3, m22, ri, r4, o4, x4};
    tu_free_all(12, ts);
    fx_layer_free(bn);
    fx_layer_free(gn);
    fx_layer_free(b1);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_norm_forward),    cmocka_unit_test(test_batch_norm_running),
        cmocka_unit_test(test_batch_norm_no_running), cmocka_unit_test(test_layer_norm_forward),
        cmocka_unit_test(test_group_norm_forward),
        cmocka_unit_test(test_norm_reference),        cmocka_unit_test(test_batchnorm_layer),
        cmocka_unit_test(test_ln_gn_layers),          cmocka_unit_test(test_norm_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
