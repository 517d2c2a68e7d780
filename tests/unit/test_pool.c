/* test_pool.c - max, average, adaptive and global average pooling against
 * direct loops written here, the routing of max's gradient, bad input,
 * threads, flatten and the layers. Their finite-difference gradients and
 * cross-backend comparisons are the registry's pooling and flatten rows
 * (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t n, c, h, w;
    int kh, kw, sh, sw, ph, pw;
    bool exclude_pad;
} pool_case;

static fx_pool_opts opts_of(const pool_case *c)
{
    return (fx_pool_opts){ .kernel_h = c->kh, .kernel_w = c->kw, .stride_h = c->sh,
                           .stride_w = c->sw, .padding_h = c->ph, .padding_w = c->pw,
                           .exclude_pad = c->exclude_pad };
}

static int64_t out_size(int64_t n, int k, int s, int p) { return (n + 2 * p - k) / s + 1; }

/* PyTorch's pooling by its definition: max over the window's in-image
 * elements (padding is -inf); average of them divided by the window's size
 * clipped to the padded image, or by the in-image count when exclude_pad. */
static void naive_pool(const pool_case *c, bool max, const float *x, float *y)
{
    int64_t oh = out_size(c->h, c->kh, c->sh, c->ph), ow = out_size(c->w, c->kw, c->sw, c->pw);
    for (int64_t p = 0; p < c->n * c->c; p++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) {
                double m = -INFINITY, s = 0;
                int64_t cnt = 0, span = 0;
                for (int64_t a = 0; a < c->kh; a++)
                    for (int64_t b = 0; b < c->kw; b++) {
                        int64_t iy = i * c->sh - c->ph + a, ix = j * c->sw - c->pw + b;
                        if (iy < c->h + c->ph && ix < c->w + c->pw)
                            span++;
                        if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w)
                            continue;
                        double v = x[(p * c->h + iy) * c->w + ix];
                        m = fmax(m, v);
                        s += v;
                        cnt++;
                    }
                y[(p * oh + i) * ow + j] = (float)(max ? m : s / (c->exclude_pad ? cnt : span));
            }
}

/* A persistent tensor whose entries are distinct and 0.01 apart (a
 * shuffled ramp around 0), so a finite-difference step (1e-3) never changes
 * which element of a window is the maximum, and the values stay small
 * enough that the loss's float rounding stays far below the tolerance. */
static fx_tensor *distinct(fx_rng *rng, int64_t n, int64_t c, int64_t h, int64_t w)
{
    int64_t k = n * c * h * w;
    float *v = malloc((size_t)k * sizeof(float));
    for (int64_t i = 0; i < k; i++)
        v[i] = 0.01f * (float)i - 0.005f * (float)k;
    for (int64_t i = k - 1; i > 0; i--) {
        int64_t j = (int64_t)(fx_rng_uniform(rng) * (double)(i + 1));
        float t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    fx_tensor *t = tu_from(FX_F32, 4, TU_SHAPE(n, c, h, w), v);
    free(v);
    fx_tensor_set_requires_grad(t, true);
    return t;
}

typedef struct {
    int kind; /* 0 max, 1 avg, 2 adaptive, 3 global */
    fx_pool_opts o;
    int64_t oh, ow;
} pool_arg;

static fx_tensor *pool_fn(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    pool_arg *a = arg;
    switch (a->kind) {
    case 0: return fx_maxpool2d(ctx, in[0], &a->o);
    case 1: return fx_avgpool2d(ctx, in[0], &a->o);
    case 2: return fx_adaptive_avgpool2d(ctx, in[0], a->oh, a->ow);
    default: return fx_global_avgpool2d(ctx, in[0]);
    }
}

/* Forward of op against ref (the gradients of these cases are the
 * registry's pooling rows). */
static void check_case(fx_tensor *x, pool_arg *a, const float *ref, int64_t oh, int64_t ow)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = pool_fn(ctx, &x, a);
    if (!y)
        fail_msg("%s", fx_ctx_error(ctx));
    if (a->kind == 3) {
        assert_int_equal(y->ndim, 2);
    } else {
        assert_int_equal(y->ndim, 4);
        assert_int_equal(y->shape[2], oh);
        assert_int_equal(y->shape[3], ow);
    }
    float *yv = tu_values(y);
    tu_assert_close(yv, ref, fx_tensor_numel(y), 1e-5);
    free(yv);
    fx_ctx_free(ctx);
}

static const pool_case max_cases[] = {
    { 2, 3, 6, 6, 2, 2, 2, 2, 0, 0, false }, /* the common 2x2 */
    { 2, 2, 7, 6, 2, 2, 2, 2, 0, 0, false }, /* odd height: the last row is dropped */
    { 2, 2, 9, 11, 2, 2, 2, 2, 0, 0, false }, /* 2x2 four at a time, then one */
    { 2, 2, 7, 7, 3, 3, 2, 2, 1, 1, false }, /* overlapping windows with padding */
    { 1, 2, 5, 7, 2, 3, 1, 2, 0, 1, false }, /* non-square */
    { 1, 1, 5, 5, 3, 3, 3, 3, 0, 0, false }, /* one window, the rest dropped */
};

static void test_maxpool(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(21);
    for (size_t k = 0; k < sizeof max_cases / sizeof *max_cases; k++) {
        const pool_case *c = &max_cases[k];
        fx_tensor *x = distinct(rng, c->n, c->c, c->h, c->w);
        int64_t oh = out_size(c->h, c->kh, c->sh, c->ph), ow = out_size(c->w, c->kw, c->sw, c->pw);
        float *xv = tu_values(x), *ref = malloc((size_t)(c->n * c->c * oh * ow) * sizeof(float));
        naive_pool(c, true, xv, ref);
        pool_arg a = { 0, opts_of(c), 0, 0 };
        check_case(x, &a, ref, oh, ow);
        free(xv);
        free(ref);
        fx_tensor_free(x);
    }
    fx_rng_free(rng);
}

/* The conv family's instruction set override (conv.c): 1 portable, 3
 * AVX-512, 0 the best. */
extern int fx__conv_isa;

/* The 2x2 max pool's AVX-512 kernel (sixteen outputs a step, masked tails)
 * against the portable one: the same values, and the gradient routed to
 * the same elements (bit for bit: a maximum is a choice, not a sum), on
 * rows of 1 to 35 outputs with ties (values on a coarse grid), NaNs and
 * an odd height. */
static void test_maxpool2_isa(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(22);
    static const int64_t widths[] = { 2, 7, 14, 28, 32, 33, 34, 70 };
    for (size_t k = 0; k < sizeof widths / sizeof *widths; k++) {
        int64_t n = 2, c = 3, h = 5, w = widths[k], numel = n * c * h * w;
        float *xv = malloc((size_t)numel * sizeof *xv);
        for (int64_t i = 0; i < numel; i++)
            xv[i] = (float)(fx_rng_u64(rng) % 7); /* many ties */
        xv[numel / 3] = NAN;
        xv[numel - 1] = NAN;
        fx_tensor *x = tu_from(FX_F32, 4, TU_SHAPE(n, c, h, w), xv);
        fx_tensor_set_requires_grad(x, true);
        float *res[2][2];
        int64_t ny = 0;
        for (int v = 0; v < 2; v++) {
            fx__conv_isa = v ? 3 : 1;
            fx_ctx *ctx = fx_ctx_create(fx_cpu());
            fx_tensor *y = fx_maxpool2d(ctx, x, &(fx_pool_opts){ .kernel = 2 });
            assert_non_null(y);
            ny = fx_tensor_numel(y);
            float *seed = malloc((size_t)ny * sizeof *seed);
            for (int64_t i = 0; i < ny; i++)
                seed[i] = (float)(i + 1);
            assert_int_equal(fx_backward_seed(ctx, y, fx_tensor_from_host(ctx, FX_F32, 4,
                                                                          y->shape, seed)),
                             FX_OK);
            res[v][0] = tu_values(y);
            res[v][1] = tu_values(x->grad);
            fx_tensor_fill(x->grad, 0);
            free(seed);
            fx_ctx_free(ctx);
        }
        fx__conv_isa = 0;
        for (int64_t i = 0; i < ny; i++)
            if (isnan(res[0][0][i]) != isnan(res[1][0][i]) ||
                (!isnan(res[0][0][i]) && res[0][0][i] != res[1][0][i]))
                fail_msg("width %lld: output %lld: %g vs %g", (long long)w, (long long)i,
                         res[1][0][i], res[0][0][i]);
        for (int64_t i = 0; i < numel; i++)
            if (res[0][1][i] != res[1][1][i])
                fail_msg("width %lld: grad %lld: %g vs %g", (long long)w, (long long)i,
                         res[1][1][i], res[0][1][i]);
        for (int v = 0; v < 2; v++)
            for (int j = 0; j < 2; j++)
                free(res[v][j]);
        free(xv);
        fx_tensor_free(x);
    }
    fx_rng_free(rng);
}

/* The gradient of each window goes to its maximum (and only there), and an
 * element that is the maximum of two windows gets both. */
static void test_maxpool_routes(void **state)
{
    (void)state;
    float xv[9] = { 1, 2, 0, 0, 9, 0, 3, 0, 4 }; /* 3x3, kernel 2, stride 1: 9 wins all */
    fx_tensor *x = tu_from(FX_F32, 4, TU_SHAPE(1, 1, 3, 3), xv);
    fx_tensor_set_requires_grad(x, true);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = fx_maxpool2d(ctx, x, &(fx_pool_opts){ .kernel = 2, .stride = 1 });
    assert_non_null(y);
    float dyv[4] = { 1, 10, 100, 1000 };
    fx_tensor *dy = fx_tensor_from_host(ctx, FX_F32, 4, TU_SHAPE(1, 1, 2, 2), dyv);
    assert_int_equal(fx_backward_seed(ctx, y, dy), FX_OK);
    float *g = tu_values(x->grad);
    for (int i = 0; i < 9; i++)
        assert_float_equal(g[i], i == 4 ? 1111.0 : 0.0, 0.0);
    free(g);
    /* a NaN wins its window (it propagates, as in PyTorch), in the vector
     * part of a row and in its tail */
    fx_ctx_reset(ctx);
    float nv[2 * 10];
    for (int i = 0; i < 20; i++)
        nv[i] = (float)i;
    nv[13] = NAN; /* output 1 */
    nv[18] = NAN; /* output 4, the tail */
    fx_tensor *xn = fx_tensor_from_host(ctx, FX_F32, 4, TU_SHAPE(1, 1, 2, 10), nv);
    float *yn = tu_values(fx_maxpool2d(ctx, xn, &(fx_pool_opts){ .kernel = 2 }));
    for (int j = 0; j < 5; j++)
        if (j == 1 || j == 4)
            assert_true(isnan(yn[j]));
        else
            assert_float_equal(yn[j], 11 + 2 * j, 0.0);
    free(yn);
    /* no grad mode: no argmax, no record, same values */
    fx_ctx_reset(ctx);
    fx_ctx_set_grad(ctx, false);
    y = fx_maxpool2d(ctx, x, &(fx_pool_opts){ .kernel = 2, .stride = 1 });
    assert_non_null(y);
    assert_int_equal(fx_tape_length(ctx), 0);
    assert_float_equal(fx_tensor_item(fx_max(ctx, y, 0, NULL, false)), 9.0, 0.0);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

static void test_avgpool(void **state)
{
    (void)state;
    const pool_case cases[] = {
        { 2, 2, 6, 6, 2, 2, 2, 2, 0, 0, false },
        { 2, 2, 7, 5, 3, 3, 2, 2, 1, 1, false }, /* padding counted */
        { 2, 2, 7, 5, 3, 3, 2, 2, 1, 1, true },  /* padding not counted */
        { 1, 3, 5, 5, 3, 2, 1, 1, 1, 1, false }, /* non-square, window past the padded edge */
        { 1, 3, 5, 5, 3, 2, 1, 1, 1, 1, true },
    };
    fx_rng *rng = fx_rng_create(22);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const pool_case *c = &cases[k];
        fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(c->n, c->c, c->h, c->w), 1, 0);
        int64_t oh = out_size(c->h, c->kh, c->sh, c->ph), ow = out_size(c->w, c->kw, c->sw, c->pw);
        float *xv = tu_values(x), *ref = malloc((size_t)(c->n * c->c * oh * ow) * sizeof(float));
        naive_pool(c, false, xv, ref);
        pool_arg a = { 1, opts_of(c), 0, 0 };
        check_case(x, &a, ref, oh, ow);
        free(xv);
        free(ref);
        fx_tensor_free(x);
    }
    fx_rng_free(rng);
}

/* Adaptive windows: rows floor(i*H/OH) .. ceil((i+1)*H/OH) - 1. */
static void naive_adaptive(int64_t p, int64_t h, int64_t w, int64_t oh, int64_t ow,
                           const float *x, float *y)
{
    for (int64_t q = 0; q < p; q++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) {
                int64_t r0 = (int64_t)floor((double)i * h / oh);
                int64_t r1 = (int64_t)ceil((double)(i + 1) * h / oh);
                int64_t c0 = (int64_t)floor((double)j * w / ow);
                int64_t c1 = (int64_t)ceil((double)(j + 1) * w / ow);
                double s = 0;
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++)
                        s += x[(q * h + r) * w + c];
                y[(q * oh + i) * ow + j] = (float)(s / (double)((r1 - r0) * (c1 - c0)));
            }
}

static void test_adaptive(void **state)
{
    (void)state;
    const int64_t cases[][4] = {
        { 7, 7, 3, 3 }, { 5, 6, 2, 4 }, { 4, 4, 4, 4 }, { 3, 3, 5, 5 }, { 10, 7, 1, 1 },
    };
    fx_rng *rng = fx_rng_create(23);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int64_t h = cases[k][0], w = cases[k][1], oh = cases[k][2], ow = cases[k][3];
        fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(2, 2, h, w), 1, 0);
        float *xv = tu_values(x), *ref = malloc((size_t)(4 * oh * ow) * sizeof(float));
        naive_adaptive(4, h, w, oh, ow, xv, ref);
        pool_arg a = { 2, { 0 }, oh, ow };
        check_case(x, &a, ref, oh, ow);
        if (oh == 1 && ow == 1) { /* global pooling is the same numbers as [N, C] */
            pool_arg gl = { 3, { 0 }, 0, 0 };
            check_case(x, &gl, ref, 1, 1);
        }
        free(xv);
        free(ref);
        fx_tensor_free(x);
    }
    fx_rng_free(rng);
}

/* Runs a pooling op expecting failure with status s and message fragments. */
static void expect_fail(int kind, const int64_t *xs, int xn, const fx_pool_opts *o, int64_t oh,
                        int64_t ow, fx_status s, const char *const *frags)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = fx_zeros(ctx, FX_F32, xn, xs);
    pool_arg a = { kind, o ? *o : (fx_pool_opts){ 0 }, oh, ow };
    fx_tensor *y = kind == 0 && !o ? fx_maxpool2d(ctx, x, NULL) : pool_fn(ctx, &x, &a);
    assert_null(y);
    if (fx_ctx_status(ctx) != s)
        fail_msg("status %s, want %s: %s", fx_status_name(fx_ctx_status(ctx)), fx_status_name(s),
                 fx_ctx_error(ctx));
    for (; *frags; frags++)
        if (!strstr(fx_ctx_error(ctx), *frags))
            fail_msg("message '%s' lacks '%s'", fx_ctx_error(ctx), *frags);
    fx_ctx_free(ctx);
}

#define FRAGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void test_bad_input(void **state)
{
    (void)state;
    int64_t x4[] = { 1, 2, 3, 3 };
    expect_fail(0, x4, 4, &(fx_pool_opts){ .kernel = 5 }, 0, 0, FX_ERR_SHAPE,
                FRAGS("maxpool2d: kernel 5x5 is larger than the padded input 3x3"));
    expect_fail(1, x4, 4, &(fx_pool_opts){ .kernel_h = 2, .kernel_w = 4 }, 0, 0, FX_ERR_SHAPE,
                FRAGS("avgpool2d: kernel 2x4 is larger than the padded input 3x3"));
    expect_fail(0, x4, 4, NULL, 0, 0, FX_ERR_ARG,
                FRAGS("maxpool2d: kernel size must be positive, got 0x0"));
    expect_fail(0, x4, 4, &(fx_pool_opts){ .kernel = 2, .stride = -1 }, 0, 0, FX_ERR_ARG,
                FRAGS("maxpool2d: stride must be positive, got -1x-1"));
    expect_fail(1, x4, 4, &(fx_pool_opts){ .kernel = 2, .padding = 2 }, 0, 0, FX_ERR_ARG,
                FRAGS("avgpool2d: padding 2x2 must be between 0 and half the kernel 2x2"));
    expect_fail(0, TU_SHAPE(2, 3, 3), 3, &(fx_pool_opts){ .kernel = 2 }, 0, 0, FX_ERR_SHAPE,
                FRAGS("maxpool2d: input must be 4-D [N,C,H,W], got [2,3,3]"));
    expect_fail(2, x4, 4, NULL, 0, 2, FX_ERR_ARG,
                FRAGS("adaptive_avgpool2d: output size must be positive, got 0x2"));
    expect_fail(3, TU_SHAPE(1, 2, 0, 3), 4, NULL, 0, 0, FX_ERR_SHAPE,
                FRAGS("global_avgpool2d: input [1,2,0,3]"));
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_null(fx_flatten(ctx, fx_zeros(ctx, FX_F32, 1, TU_SHAPE(4))));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "flatten: input must have at least 2 dims"));
    /* NULL inputs propagate without touching the recorded error */
    assert_null(fx_maxpool2d(ctx, NULL, &(fx_pool_opts){ .kernel = 2 }));
    assert_null(fx_global_avgpool2d(ctx, NULL));
    assert_null(fx_flatten(ctx, NULL));
    assert_non_null(strstr(fx_ctx_error(ctx), "flatten: input must have at least 2 dims"));
    fx_ctx_free(ctx);
}

/* The gradient a backward pass routes to a pool's input, by the
 * definition: max to its window's maximum (the values are distinct), the
 * average spread over the window (divided as naive_pool divides). */
static void naive_pool_backward(const pool_case *c, bool max, const float *x, const float *dy,
                                double *dx)
{
    int64_t oh = out_size(c->h, c->kh, c->sh, c->ph), ow = out_size(c->w, c->kw, c->sw, c->pw);
    for (int64_t p = 0; p < c->n * c->c; p++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) {
                double d = dy[(p * oh + i) * ow + j], m = -INFINITY;
                int64_t best = -1, cnt = 0, span = 0;
                for (int pass = 0; pass < 2; pass++)
                    for (int64_t a = 0; a < c->kh; a++)
                        for (int64_t b = 0; b < c->kw; b++) {
                            int64_t iy = i * c->sh - c->ph + a, ix = j * c->sw - c->pw + b;
                            if (pass == 0 && iy < c->h + c->ph && ix < c->w + c->pw)
                                span++;
                            if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w)
                                continue;
                            int64_t at = (p * c->h + iy) * c->w + ix;
                            if (pass == 0) {
                                cnt++;
                                if (x[at] > m)
                                    m = x[at], best = at;
                            } else if (!max) {
                                dx[at] += d / (double)(c->exclude_pad ? cnt : span);
                            }
                        }
                if (max)
                    dx[best] += d;
            }
}

/* A pool's backward into a new gradient buffer (set, with no zero pass
 * first: every element, reached by a window or not, must be written) and
 * into one a later op's backward has already written (added to), against
 * the definition, with every instruction set: planes the 2x2 windows cover
 * (set directly), odd sizes (an uncovered last row and column), overlapping
 * windows with padding, average pooling. */
static void test_backward_set(void **state)
{
    (void)state;
    static const pool_case cases[] = {
        { 2, 3, 6, 8, 2, 2, 2, 2, 0, 0, false },   /* covered: set directly */
        { 2, 2, 28, 28, 2, 2, 2, 2, 0, 0, false }, /* covered, 14-output rows (masked) */
        { 2, 3, 4, 36, 2, 2, 2, 2, 0, 0, false },  /* covered, 18-output rows (two steps) */
        { 2, 2, 7, 9, 2, 2, 2, 2, 0, 0, false },   /* odd: last row and column unreached */
        { 2, 2, 7, 7, 3, 3, 2, 2, 1, 1, false },   /* overlapping, padding */
        { 2, 2, 7, 5, 3, 3, 2, 2, 1, 1, true },    /* average */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const pool_case *c = &cases[k];
        bool max = k < 5;
        int64_t numel = c->n * c->c * c->h * c->w;
        int64_t oh = out_size(c->h, c->kh, c->sh, c->ph), ow = out_size(c->w, c->kw, c->sw, c->pw);
        int64_t ny = c->n * c->c * oh * ow;
        float *xv = malloc((size_t)numel * sizeof *xv), *dyv = malloc((size_t)ny * sizeof *dyv);
        for (int64_t i = 0; i < numel; i++) /* distinct: one maximum per window */
            xv[i] = (float)((i * 7919) % numel) * 0.01f - 1.0f;
        for (int64_t i = 0; i < ny; i++)
            dyv[i] = (float)((i % 7) + 1) * 0.5f;
        double *want = calloc((size_t)numel, sizeof *want);
        naive_pool_backward(c, max, xv, dyv, want);
        for (int isa = 0; isa <= 3; isa++)
            for (int added = 0; added < 2; added++) {
                fx__conv_isa = isa;
                fx_ctx *ctx = fx_ctx_create(fx_cpu());
                /* NaNs where the arena will place the gradient: an element
                 * the set path does not write shows */
                for (int r = 0; r < 2; r++) { /* the second time in the one chunk it keeps */
                    assert_non_null(fx_full(ctx, FX_F32, 1, TU_SHAPE(1 << 16), NAN));
                    fx_ctx_reset(ctx);
                }
                fx_tensor *x = tu_from(FX_F32, 4, TU_SHAPE(c->n, c->c, c->h, c->w), xv);
                fx_tensor_set_requires_grad(x, true);
                /* an op's output: its gradient buffer is made in the backward */
                fx_tensor *x1 = fx_scale(ctx, x, 1.0f);
                fx_pool_opts o = opts_of(c);
                fx_tensor *y = max ? fx_maxpool2d(ctx, x1, &o) : fx_avgpool2d(ctx, x1, &o);
                assert_non_null(y);
                fx_tensor *dy = fx_tensor_from_host(ctx, FX_F32, 4, y->shape, dyv);
                fx_tensor *loss = fx_sum(ctx, fx_mul(ctx, y, dy), 0, NULL, false);
                if (added) /* recorded after the pool: its backward writes x's gradient first */
                    loss = fx_add(ctx, loss, fx_sum(ctx, fx_scale(ctx, x1, 0.5f), 0, NULL, false));
                assert_non_null(loss);
                if (fx_backward(ctx, loss) != FX_OK)
                    fail_msg("case %zu isa %d: %s", k, isa, fx_ctx_error(ctx));
                float *got = tu_values(x->grad);
                for (int64_t i = 0; i < numel; i++) {
                    double w = want[i] + (added ? 0.5 : 0.0);
                    if (!(fabs(got[i] - w) <= 1e-6 * (1 + fabs(w))))
                        fail_msg("case %zu isa %d %s: grad %lld is %g, want %g", k, isa,
                                 added ? "added" : "set", (long long)i, got[i], w);
                }
                free(got);
                fx_ctx_free(ctx);
                fx_tensor_free(x);
                fx__conv_isa = 0;
            }
        free(xv);
        free(dyv);
        free(want);
    }
}

/* Pooling split over planes gives exactly the one-thread result. */
static void test_threads(void **state)
{
    (void)state;
    int nt = fx_get_num_threads();
    fx_rng *rng = fx_rng_create(24);
    fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(8, 16, 32, 30), 1, 0);
    pool_arg args[] = {
        { 0, { .kernel = 2 }, 0, 0 },
        { 0, { .kernel = 3, .stride = 2, .padding = 1 }, 0, 0 },
        { 1, { .kernel = 3, .stride = 2, .padding = 1 }, 0, 0 },
        { 2, { 0 }, 5, 7 },
    };
    for (size_t k = 0; k < sizeof args / sizeof *args; k++) {
        float *res[2][2];
        int64_t ny = 0;
        for (int t = 0; t < 2; t++) {
            fx_set_num_threads(t + 1);
            fx_ctx *ctx = fx_ctx_create(fx_cpu());
            fx_tensor *y = pool_fn(ctx, &x, &args[k]);
            assert_non_null(y);
            ny = fx_tensor_numel(y);
            fx_tensor *seed = fx_full(ctx, FX_F32, y->ndim, y->shape, 0.25);
            assert_int_equal(fx_backward_seed(ctx, y, seed), FX_OK);
            res[t][0] = tu_values(y);
            res[t][1] = tu_values(x->grad);
            fx_tensor_fill(x->grad, 0);
            fx_ctx_free(ctx);
        }
        assert_memory_equal(res[0][0], res[1][0], (size_t)ny * sizeof(float));
        assert_memory_equal(res[0][1], res[1][1], (size_t)fx_tensor_numel(x) * sizeof(float));
        for (int t = 0; t < 2; t++)
            free(res[t][0]), free(res[t][1]);
    }
    fx_tensor_free(x);
    fx_rng_free(rng);
    fx_set_num_threads(nt);
}

static void test_flatten(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(25);
    fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(2, 3, 4, 5), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = fx_flatten(ctx, x);
    assert_non_null(y);
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[0], 2);
    assert_int_equal(y->shape[1], 60);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

static void test_layers(void **state)
{
    (void)state;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = fx_full(ctx, FX_F32, 4, TU_SHAPE(2, 3, 8, 6), 2.0);
    struct { fx_layer *l; int64_t shape[4]; int nd; } cases[] = {
        { fx_maxpool2d_create("mp", &(fx_pool_opts){ .kernel = 2 }), { 2, 3, 4, 3 }, 4 },
        { fx_avgpool2d_create(NULL, &(fx_pool_opts){ .kernel = 3, .stride = 1, .padding = 1,
                                                     .exclude_pad = true }), { 2, 3, 8, 6 }, 4 },
        { fx_adaptive_avgpool2d_create("ap", 2, 3), { 2, 3, 2, 3 }, 4 },
        { fx_global_avgpool2d_create("gap"), { 2, 3 }, 2 },
        { fx_flatten_create("flat"), { 2, 144 }, 2 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        assert_non_null(cases[k].l);
        fx_tensor *y = fx_layer_forward(cases[k].l, ctx, x);
        if (!y)
            fail_msg("layer %zu: %s", k, fx_ctx_error(ctx));
        assert_int_equal(y->ndim, cases[k].nd);
        for (int d = 0; d < cases[k].nd; d++)
            assert_int_equal(y->shape[d], cases[k].shape[d]);
        float *v = tu_values(y);
        for (int64_t i = 0; i < fx_tensor_numel(y); i++)
            assert_float_equal(v[i], 2.0, 1e-6); /* windows of a constant, no padding counted */
        free(v);
        fx_layer_free(cases[k].l);
    }
    fx_layer *avg = fx_avgpool2d_create(NULL, &(fx_pool_opts){ .kernel = 2 });
    assert_string_equal(fx_layer_name(avg), "avgpool2d");
    fx_layer_free(avg);
    assert_null(fx_maxpool2d_create("mp", NULL));
    assert_null(fx_maxpool2d_create("mp", &(fx_pool_opts){ .kernel = 2, .stride = -1 }));
    assert_null(fx_adaptive_avgpool2d_create("ap", 0, 1));
    fx_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maxpool),   cmocka_unit_test(test_maxpool_routes),
        cmocka_unit_test(test_maxpool2_isa), cmocka_unit_test(test_backward_set),
        cmocka_unit_test(test_avgpool),   cmocka_unit_test(test_adaptive),
        cmocka_unit_test(test_bad_input), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_flatten),   cmocka_unit_test(test_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
