/* test_conv.c - conv2d, conv1d and conv_transpose2d against the op
 * registry's direct loops (ops_registry.h), with each instruction set's
 * kernels (outputs and gradients equal to the best set's), the transposed
 * convolution as the adjoint of the convolution, bad input, threads and the
 * layers. The finite-difference
 * gradients of every configuration and the cross-backend comparisons are
 * the registry's conv rows (test_ops). */
#include "testutil.h"
#include "ops_registry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One configuration: input [n, c, h, w], weight [o, c/groups, kh, kw]. */
typedef struct {
    int64_t n, c, h, w, o, kh, kw;
    int sh, sw, ph, pw, dh, dw, groups;
    bool bias;
} conv_case;

static const conv_case cases2d[] = {
    { 2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, true },  /* plain 3x3, padding 1 */
    { 2, 2, 7, 6, 3, 3, 2, 2, 2, 1, 0, 1, 1, 1, false }, /* stride 2, non-square, no bias */
    { 1, 2, 7, 7, 2, 3, 3, 1, 1, 2, 2, 2, 2, 1, true },  /* dilation 2 */
    { 2, 4, 5, 4, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, true },  /* groups 2 */
    { 2, 3, 5, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3, false }, /* depthwise, multiplier 2 */
    { 2, 4, 4, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, true },  /* 1x1: no unrolling */
    { 2, 4, 3, 3, 6, 1, 1, 1, 1, 0, 0, 1, 1, 2, true },  /* 1x1 grouped */
    { 1, 2, 8, 7, 2, 2, 3, 3, 2, 0, 1, 1, 2, 1, true },  /* stride > kernel, mixed axes */
};

static fx_conv_opts opts_of(const conv_case *c)
{
    return (fx_conv_opts){ .stride_h = c->sh, .stride_w = c->sw, .padding_h = c->ph,
                           .padding_w = c->pw, .dilation_h = c->dh, .dilation_w = c->dw,
                           .groups = c->groups };
}

static int64_t out_size(int64_t n, int64_t k, int s, int p, int d)
{
    return (n + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* The registry's reference (ops_registry.h) on the values of in (x, w and,
 * with c->bias, b), rounded to float (malloc'd): conv2d (conv1d is H = 1)
 * by or_conv2d, or with transposed conv_transpose2d by or_conv_transpose2d
 * and output padding oph / opw; sets the output size *oh x *ow. */
static float *reference(const conv_case *c, bool transposed, int oph, int opw, fx_tensor **in,
                        int64_t *oh, int64_t *ow)
{
    const or_conv g = { c->n, c->c, c->h, c->w, c->o, c->kh, c->kw,
                        c->sh, c->sw, c->ph, c->pw, c->dh, c->dw, c->groups };
    double *v[3];
    for (int i = 0; i < 3; i++) {
        int64_t n = fx_tensor_numel(in[i]);
        float *f = tu_values(in[i]);
        v[i] = malloc((size_t)n * sizeof *v[i]);
        for (int64_t j = 0; j < n; j++)
            v[i][j] = f[j];
        free(f);
    }
    or_host y = { 0 };
    if (transposed) {
        or_conv_transpose2d(&g, oph, opw, v[0], v[1], c->bias ? v[2] : NULL, &y);
        *oh = y.shape[2], *ow = y.shape[3];
    } else {
        or_conv2d(&g, v[0], v[1], c->bias ? v[2] : NULL, NULL, oh, ow);
        or_host_init(&y, 4, (int64_t[]){ c->n, c->o, *oh, *ow });
        or_conv2d(&g, v[0], v[1], c->bias ? v[2] : NULL, y.v, oh, ow);
    }
    float *ref = malloc((size_t)y.n * sizeof *ref);
    for (int64_t j = 0; j < y.n; j++)
        ref[j] = (float)y.v[j];
    for (int i = 0; i < 3; i++)
        free(v[i]);
    free(y.v);
    return ref;
}

typedef struct {
    fx_conv_opts o;
    int kind; /* 0 conv2d, 1 conv1d, 2 conv_transpose2d */
    bool bias;
} conv_arg;

static fx_tensor *conv_fn(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    conv_arg *a = arg;
    fx_tensor *b = a->bias ? in[2] : NULL;
    if (a->kind == 1)
        return fx_conv1d(ctx, in[0], in[1], b, &a->o);
    if (a->kind == 2)
        return fx_conv_transpose2d(ctx, in[0], in[1], b, &a->o);
    return fx_conv2d(ctx, in[0], in[1], b, &a->o);
}

/* The kernels' instruction set (conv.c, for tests): 1 portable, 2 AVX2,
 * 3 AVX-512 (each when the CPU has it, else the next best); 0 the best. */
extern int fx__conv_isa;

/* The output and the gradients of x, w and b from a fixed seed gradient,
 * with the kernels of one instruction set, concatenated (malloc'd); grads
 * are zeroed after. */
static float *isa_result(int isa, conv_arg *a, fx_tensor **in, int nin, int64_t *n)
{
    fx__conv_isa = isa;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = conv_fn(ctx, in, a);
    if (!y)
        fail_msg("isa %d: %s", isa, fx_ctx_error(ctx));
    int64_t ny = fx_tensor_numel(y);
    *n = ny;
    for (int i = 0; i < nin; i++)
        *n += fx_tensor_numel(in[i]);
    float *res = malloc((size_t)*n * sizeof *res), *seed = malloc((size_t)ny * sizeof *seed);
    for (int64_t i = 0; i < ny; i++)
        seed[i] = (float)(((i * 7919) % 23) - 11) / 7.0f;
    assert_int_equal(fx_backward_seed(ctx, y, fx_tensor_from_host(ctx, FX_F32, y->ndim, y->shape,
                                                                  seed)), FX_OK);
    assert_int_equal(fx_tensor_to_host(y, res, (size_t)ny * sizeof *res), FX_OK);
    int64_t off = ny;
    for (int i = 0; i < nin; i++) {
        int64_t k = fx_tensor_numel(in[i]);
        assert_int_equal(fx_tensor_to_host(in[i]->grad, res + off, (size_t)k * sizeof *res), FX_OK);
        fx_tensor_fill(in[i]->grad, 0.0);
        off += k;
    }
    free(seed);
    fx_ctx_free(ctx);
    fx__conv_isa = 0;
    return res;
}

/* Forward against the direct loop with the kernels of one instruction set,
 * and its output and gradients against those of the best one (isa 0, whose
 * gradients the registry's conv2d row checks by finite differences). */
static void conv2d_cases(int isa)
{
    fx__conv_isa = isa;
    fx_rng *rng = fx_rng_create(11);
    for (size_t k = 0; k < sizeof cases2d / sizeof *cases2d; k++) {
        const conv_case *c = &cases2d[k];
        fx_tensor *in[3] = { tu_randn(rng, 4, TU_SHAPE(c->n, c->c, c->h, c->w), 1, 0),
                             tu_randn(rng, 4, TU_SHAPE(c->o, c->c / c->groups, c->kh, c->kw), 0.5,
                                      0),
                             tu_randn(rng, 1, TU_SHAPE(c->o), 1, 0) };
        conv_arg a = { opts_of(c), 0, c->bias };
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        fx_tensor *y = conv_fn(ctx, in, &a);
        if (!y)
            fail_msg("case %zu: %s", k, fx_ctx_error(ctx));
        int64_t oh = out_size(c->h, c->kh, c->sh, c->ph, c->dh);
        int64_t ow = out_size(c->w, c->kw, c->sw, c->pw, c->dw);
        assert_int_equal(y->ndim, 4);
        assert_int_equal(y->shape[0], c->n);
        assert_int_equal(y->shape[1], c->o);
        assert_int_equal(y->shape[2], oh);
        assert_int_equal(y->shape[3], ow);
        int64_t rh, rw;
        float *yv = tu_values(y), *ref = reference(c, false, 0, 0, in, &rh, &rw);
        tu_assert_close(yv, ref, fx_tensor_numel(y), 1e-4);
        free(yv); free(ref);
        fx_ctx_free(ctx);
        int64_t n0, n1;
        float *best = isa_result(0, &a, in, c->bias ? 3 : 2, &n0);
        float *mine = isa_result(isa, &a, in, c->bias ? 3 : 2, &n1);
        assert_int_equal(n0, n1);
        double scale = 0;
        for (int64_t j = 0; j < n0; j++)
            scale = fmax(scale, fabs(best[j]));
        tu_assert_close(mine, best, n0, 1e-5 * (1 + scale));
        free(best);
        free(mine);
        fx__conv_isa = isa;
        tu_free_all(3, in);
    }
    fx_rng_free(rng);
    fx__conv_isa = 0;
}

static void test_conv2d_cases(void **state)
{
    (void)state;
    for (int isa = 1; isa <= 3; isa++)
        conv2d_cases(isa);
}

/* conv1d is conv2d on [N, C, 1, L]: checked against the 2-D loop with H = 1. */
static void test_conv1d(void **state)
{
    (void)state;
    const conv_case cases[] = {
        { 2, 3, 1, 9, 4, 1, 3, 1, 2, 0, 1, 1, 1, 1, true },
        { 2, 4, 1, 10, 4, 1, 3, 1, 1, 0, 2, 1, 2, 2, false },
        { 1, 2, 1, 6, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, true },
    };
    fx_rng *rng = fx_rng_create(12);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const conv_case *c = &cases[k];
        fx_tensor *in[3] = { tu_randn(rng, 3, TU_SHAPE(c->n, c->c, c->w), 1, 0),
                             tu_randn(rng, 3, TU_SHAPE(c->o, c->c / c->groups, c->kw), 0.5, 0),
                             tu_randn(rng, 1, TU_SHAPE(c->o), 1, 0) };
        conv_arg a = { { .stride = c->sw, .padding = c->pw, .dilation = c->dw,
                         .groups = c->groups }, 1, c->bias };
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        fx_tensor *y = conv_fn(ctx, in, &a);
        if (!y)
            fail_msg("case %zu: %s", k, fx_ctx_error(ctx));
        int64_t ol = out_size(c->w, c->kw, c->sw, c->pw, c->dw);
        assert_int_equal(y->ndim, 3);
        assert_int_equal(y->shape[2], ol);
        int64_t rh, rw;
        float *yv = tu_values(y), *ref = reference(c, false, 0, 0, in, &rh, &rw);
        tu_assert_close(yv, ref, fx_tensor_numel(y), 1e-4);
        free(yv); free(ref);
        fx_ctx_free(ctx);
        tu_free_all(3, in);
    }
    fx_rng_free(rng);
}

/* The output padding that makes conv_transpose2d map conv2d's output size
 * back to its input size. */
static int out_pad(int64_t n, int64_t k, int s, int p, int d)
{
    return (int)((n + 2 * p - d * (k - 1) - 1) % s);
}

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* <conv(x, w), y> == <x, convT(y, w)> for the same weights: conv_transpose2d
 * is the adjoint of conv2d in its input, for every configuration. */
static void test_transpose_adjoint(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(13);
    for (size_t k = 0; k < sizeof cases2d / sizeof *cases2d; k++) {
        const conv_case *c = &cases2d[k];
        int64_t oh = out_size(c->h, c->kh, c->sh, c->ph, c->dh);
        int64_t ow = out_size(c->w, c->kw, c->sw, c->pw, c->dw);
        fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(c->n, c->c, c->h, c->w), 1, 0);
        fx_tensor *w = tu_randn(rng, 4, TU_SHAPE(c->o, c->c / c->groups, c->kh, c->kw), 1, 0);
        fx_tensor *y = tu_randn(rng, 4, TU_SHAPE(c->n, c->o, oh, ow), 1, 0);
        fx_conv_opts o = opts_of(c);
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        fx_tensor *cx = fx_conv2d(ctx, x, w, NULL, &o);
        o.output_padding_h = out_pad(c->h, c->kh, c->sh, c->ph, c->dh);
        o.output_padding_w = out_pad(c->w, c->kw, c->sw, c->pw, c->dw);
        fx_tensor *ty = fx_conv_transpose2d(ctx, y, w, NULL, &o);
        if (!cx || !ty)
            fail_msg("case %zu: %s", k, fx_ctx_error(ctx));
        assert_true(fx_tensor_same_shape(ty, x));
        float *xv = tu_values(x), *yv = tu_values(y), *cxv = tu_values(cx), *tyv = tu_values(ty);
        double lhs = dot(cxv, yv, fx_tensor_numel(y)), rhs = dot(xv, tyv, fx_tensor_numel(x));
        if (fabs(lhs - rhs) > 1e-4 * (1 + fabs(lhs)))
            fail_msg("case %zu: <conv(x), y> = %.8g but <x, convT(y)> = %.8g", k, lhs, rhs);
        free(xv); free(yv); free(cxv); free(tyv);
        fx_ctx_free(ctx);
        fx_tensor *all[3] = { x, w, y };
        tu_free_all(3, all);
    }
    fx_rng_free(rng);
}

/* conv_transpose2d forward by its definition. Here c is the transposed
 * op's view: input channels c, output channels o, weight
 * [c, o/groups, kh, kw]. */
static void test_transpose_cases(void **state)
{
    (void)state;
    const struct { conv_case c; int oph, opw; } cases[] = {
        { { 2, 3, 3, 3, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, true }, 1, 1 },
        { { 1, 4, 3, 4, 6, 3, 2, 1, 2, 0, 1, 2, 1, 2, true }, 0, 1 },
        { { 2, 2, 4, 3, 2, 2, 2, 2, 2, 0, 0, 1, 1, 2, false }, 0, 0 },
        { { 1, 3, 2, 3, 2, 3, 3, 3, 1, 1, 0, 1, 2, 1, true }, 2, 1 },
    };
    fx_rng *rng = fx_rng_create(14);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const conv_case *c = &cases[k].c;
        fx_tensor *in[3] = { tu_randn(rng, 4, TU_SHAPE(c->n, c->c, c->h, c->w), 1, 0),
                             tu_randn(rng, 4, TU_SHAPE(c->c, c->o / c->groups, c->kh, c->kw), 0.5,
                                      0),
                             tu_randn(rng, 1, TU_SHAPE(c->o), 1, 0) };
        conv_arg a = { opts_of(c), 2, c->bias };
        a.o.output_padding_h = cases[k].oph;
        a.o.output_padding_w = cases[k].opw;
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        fx_tensor *y = conv_fn(ctx, in, &a);
        if (!y)
            fail_msg("case %zu: %s", k, fx_ctx_error(ctx));
        int64_t oh, ow;
        float *yv = tu_values(y), *ref = reference(c, true, cases[k].oph, cases[k].opw, in, &oh, &ow);
        assert_int_equal(y->shape[1], c->o);
        assert_int_equal(y->shape[2], oh);
        assert_int_equal(y->shape[3], ow);
        tu_assert_close(yv, ref, fx_tensor_numel(y), 1e-4);
        free(yv); free(ref);
        fx_ctx_free(ctx);
        tu_free_all(3, in);
    }
    fx_rng_free(rng);
}

/* Runs op on (x, w, b) expecting failure with status s and a message that
 * contains every fragment. */
static void expect_fail(int kind, const int64_t *xs, int xn, const int64_t *ws, int wn,
                        const int64_t *bs, const fx_conv_opts *o, fx_status s,
                        const char *const *frags)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = fx_zeros(ctx, FX_F32, xn, xs), *w = fx_zeros(ctx, FX_F32, wn, ws);
    fx_tensor *b = bs ? fx_zeros(ctx, FX_F32, 1, bs) : NULL;
    fx_tensor *y = kind == 1   ? fx_conv1d(ctx, x, w, b, o)
                   : kind == 2 ? fx_conv_transpose2d(ctx, x, w, b, o)
                               : fx_conv2d(ctx, x, w, b, o);
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
    /* the exact message of the example */
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = fx_zeros(ctx, FX_F32, 4, TU_SHAPE(1, 1, 3, 3));
    fx_tensor *w = fx_zeros(ctx, FX_F32, 4, TU_SHAPE(1, 1, 5, 5));
    assert_null(fx_conv2d(ctx, x, w, NULL, NULL));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_string_equal(fx_ctx_error(ctx),
                        "conv2d: kernel 5x5 (dilation 1) is larger than the padded input 3x3");
    /* NULL inputs propagate without touching the recorded error */
    assert_null(fx_conv2d(ctx, NULL, w, NULL, NULL));
    assert_null(fx_conv_transpose2d(ctx, x, NULL, NULL, NULL));
    assert_null(fx_conv1d(ctx, NULL, NULL, NULL, NULL));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "kernel 5x5"));
    fx_ctx_free(ctx);

    int64_t x4[] = { 1, 3, 5, 5 };
    /* dilation makes the kernel too large */
    expect_fail(0, x4, 4, TU_SHAPE(2, 3, 3, 3), 4, NULL, &(fx_conv_opts){ .dilation = 3 },
                FX_ERR_SHAPE, FRAGS("conv2d: kernel 3x3 (dilation 3)", "padded input 5x5"));
    /* channel mismatch */
    expect_fail(0, x4, 4, TU_SHAPE(4, 2, 3, 3), 4, NULL, NULL, FX_ERR_SHAPE,
                FRAGS("conv2d: input has 3 channels", "[4,2,3,3]", "expects 2"));
    /* groups that do not divide the channels */
    expect_fail(0, x4, 4, TU_SHAPE(4, 1, 3, 3), 4, NULL, &(fx_conv_opts){ .groups = 2 },
                FX_ERR_SHAPE, FRAGS("conv2d: groups 2 does not divide", "3 channels"));
    expect_fail(0, TU_SHAPE(1, 4, 5, 5), 4, TU_SHAPE(5, 2, 3, 3), 4, NULL,
                &(fx_conv_opts){ .groups = 2 }, FX_ERR_SHAPE,
                FRAGS("conv2d: groups 2 does not divide", "5 output channels"));
    /* ranks */
    expect_fail(0, TU_SHAPE(3, 5, 5), 3, TU_SHAPE(2, 3, 3, 3), 4, NULL, NULL, FX_ERR_SHAPE,
                FRAGS("conv2d: input must be 4-D", "[3,5,5]"));
    expect_fail(0, x4, 4, TU_SHAPE(2, 3, 3), 3, NULL, NULL, FX_ERR_SHAPE,
                FRAGS("conv2d: weight must be 4-D", "[2,3,3]"));
    /* settings */
    expect_fail(0, x4, 4, TU_SHAPE(2, 3, 3, 3), 4, NULL, &(fx_conv_opts){ .stride = -1 },
                FX_ERR_ARG, FRAGS("conv2d: stride must be positive, got -1x-1"));
    expect_fail(0, x4, 4, TU_SHAPE(2, 3, 3, 3), 4, NULL, &(fx_conv_opts){ .stride_w = -2 },
                FX_ERR_ARG, FRAGS("conv2d: stride must be positive, got 1x-2"));
    expect_fail(0, x4, 4, TU_SHAPE(2, 3, 3, 3), 4, NULL, &(fx_conv_opts){ .padding = -1 },
                FX_ERR_ARG, FRAGS("conv2d: padding must not be negative"));
    expect_fail(0, x4, 4, TU_SHAPE(2, 3, 3, 3), 4, NULL, &(fx_conv_opts){ .dilation_h = -1 },
                FX_ERR_ARG, FRAGS("conv2d: dilation must be positive"));
    expect_fail(0, x4, 4, TU_SHAPE(2, 3, 3, 3), 4, NULL, &(fx_conv_opts){ .groups = -1 },
                FX_ERR_ARG, FRAGS("conv2d: groups must be positive"));
    /* bias */
    expect_fail(0, x4, 4, TU_SHAPE(2, 3, 3, 3), 4, TU_SHAPE(3), NULL, FX_ERR_SHAPE,
                FRAGS("conv2d: bias must be [2], got [3]"));
    /* conv1d speaks in 1-D sizes */
    expect_fail(1, TU_SHAPE(2, 3, 4), 3, TU_SHAPE(2, 3, 3), 3, NULL,
                &(fx_conv_opts){ .dilation = 2 }, FX_ERR_SHAPE,
                FRAGS("conv1d: kernel 3 (dilation 2) is larger than the padded input 4"));
    expect_fail(1, TU_SHAPE(2, 3, 4, 4), 4, TU_SHAPE(2, 3, 3), 3, NULL, NULL, FX_ERR_SHAPE,
                FRAGS("conv1d: input must be 3-D [N,C,L]"));
    /* transposed: channels, output padding, empty output */
    expect_fail(2, x4, 4, TU_SHAPE(4, 2, 3, 3), 4, NULL, NULL, FX_ERR_SHAPE,
                FRAGS("conv_transpose2d: input has 3 channels", "[4,2,3,3]", "expects 4"));
    expect_fail(2, x4, 4, TU_SHAPE(3, 2, 3, 3), 4, NULL,
                &(fx_conv_opts){ .stride = 2, .output_padding = 2 }, FX_ERR_ARG,
                FRAGS("conv_transpose2d: output padding 2x2 must be smaller than the stride 2x2"));
    expect_fail(2, TU_SHAPE(1, 3, 1, 1), 4, TU_SHAPE(3, 2, 1, 1), 4, NULL,
                &(fx_conv_opts){ .padding = 1 }, FX_ERR_SHAPE,
                FRAGS("conv_transpose2d: output would be empty"));
}

/* Output and all gradients with 2 threads equal those with 1 (to rounding:
 * the weight gradient's per-thread partial sums change the order), for a
 * batch split over threads and a single image split inside. */
static void run_threads_case(int kind, const conv_case *c, int oph)
{
    fx_rng *rng = fx_rng_create(15);
    int64_t cw = kind == 2 ? c->o / c->groups : c->c / c->groups, o0 = kind == 2 ? c->c : c->o;
    fx_tensor *in[3] = { tu_randn(rng, 4, TU_SHAPE(c->n, c->c, c->h, c->w), 1, 0),
                         tu_randn(rng, 4, TU_SHAPE(o0, cw, c->kh, c->kw), 0.3, 0),
                         tu_randn(rng, 1, TU_SHAPE(c->o), 1, 0) };
    conv_arg a = { opts_of(c), kind, true };
    a.o.output_padding = oph;
    float *res[2][4];
    int64_t ny = 0;
    for (int t = 0; t < 2; t++) {
        fx_set_num_threads(t + 1);
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        fx_tensor *y = conv_fn(ctx, in, &a);
        assert_non_null(y);
        ny = fx_tensor_numel(y);
        fx_tensor *seed = fx_full(ctx, FX_F32, y->ndim, y->shape, 0.5);
        assert_int_equal(fx_backward_seed(ctx, y, seed), FX_OK);
        res[t][0] = tu_values(y);
        for (int i = 0; i < 3; i++) {
            res[t][i + 1] = tu_values(in[i]->grad);
            fx_tensor_fill(in[i]->grad, 0);
        }
        fx_ctx_free(ctx);
    }
    int64_t n[4] = { ny, fx_tensor_numel(in[0]), fx_tensor_numel(in[1]), fx_tensor_numel(in[2]) };
    for (int i = 0; i < 4; i++) {
        double scale = 0;
        for (int64_t j = 0; j < n[i]; j++)
            scale = fmax(scale, fabs(res[0][i][j]));
        tu_assert_close(res[1][i], res[0][i], n[i], 1e-5 * (1 + scale));
        free(res[0][i]);
        free(res[1][i]);
    }
    tu_free_all(3, in);
    fx_rng_free(rng);
}

static void test_threads(void **state)
{
    (void)state;
    int nt = fx_get_num_threads();
    const conv_case batch = { 6, 8, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, true };
    const conv_case single = { 1, 16, 20, 20, 16, 3, 3, 1, 1, 1, 1, 1, 1, 2, true };
    const conv_case strided = { 3, 8, 15, 13, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, true };
    const conv_case direct = { 4, 32, 16, 16, 32, 1, 1, 1, 1, 0, 0, 1, 1, 1, true };
    run_threads_case(0, &batch, 0);
    run_threads_case(0, &single, 0);
    run_threads_case(0, &strided, 0);
    run_threads_case(0, &direct, 0);
    run_threads_case(2, &strided, 1);
    run_threads_case(2, &single, 0);
    fx_set_num_threads(nt);
}

/* Layers: parameter shapes and names, the default init's range, zero bias,
 * the activation, and bad sizes. */
static void test_layers(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(16);
    fx_layer *l = fx_conv2d_create("c1", 3, 8, 3, 3,
                                   &(fx_conv_opts){ .padding = 1, .act = FX_ACT_RELU }, rng);
    assert_non_null(l);
    fx_tensor *w = fx_layer_param(l, "weight"), *b = fx_layer_param(l, "bias");
    assert_non_null(w);
    assert_non_null(b);
    assert_int_equal(w->ndim, 4);
    assert_int_equal(w->shape[0], 8);
    assert_int_equal(w->shape[1], 3);
    float *wv = tu_values(w), *bv = tu_values(b);
    double bound = 1.0 / sqrt(27.0), mx = 0;
    for (int i = 0; i < 8 * 27; i++)
        mx = fmax(mx, fabs(wv[i]));
    assert_true(mx <= bound && mx > 0.7 * bound);
    for (int i = 0; i < 8; i++)
        assert_float_equal(bv[i], 0.0, 0.0);
    free(wv);
    free(bv);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = fx_full(ctx, FX_F32, 4, TU_SHAPE(2, 3, 6, 5), 1.0);
    fx_tensor *y = fx_layer_forward(l, ctx, x);
    assert_non_null(y);
    assert_int_equal(y->shape[1], 8);
    assert_int_equal(y->shape[2], 6);
    assert_int_equal(y->shape[3], 5);
    float *yv = tu_values(y);
    for (int64_t i = 0; i < fx_tensor_numel(y); i++)
        assert_true(yv[i] >= 0.0f);
    free(yv);
    fx_layer_free(l);

    l = fx_conv2d_create(NULL, 4, 6, 3, 1, &(fx_conv_opts){ .groups = 2, .no_bias = true }, rng);
    assert_non_null(l);
    assert_string_equal(fx_layer_name(l), "conv2d");
    assert_null(fx_layer_param(l, "bias"));
    w = fx_layer_param(l, "weight");
    assert_int_equal(w->shape[1], 2);
    assert_int_equal(w->shape[2], 3);
    assert_int_equal(w->shape[3], 1);
    fx_layer_free(l);

    l = fx_conv1d_create("c", 4, 6, 5, &(fx_conv_opts){ .init = FX_INIT_HE_UNIFORM }, rng);
    assert_non_null(l);
    w = fx_layer_param(l, "weight");
    assert_int_equal(w->ndim, 3);
    assert_int_equal(w->shape[2], 5);
    y = fx_layer_forward(l, ctx, fx_full(ctx, FX_F32, 3, TU_SHAPE(2, 4, 9), 1.0));
    assert_non_null(y);
    assert_int_equal(y->shape[2], 5);
    fx_layer_free(l);

    l = fx_conv_transpose2d_create("up", 6, 4, 2, 2,
                                   &(fx_conv_opts){ .stride = 2, .groups = 2 }, rng);
    assert_non_null(l);
    w = fx_layer_param(l, "weight");
    assert_int_equal(w->shape[0], 6);
    assert_int_equal(w->shape[1], 2);
    y = fx_layer_forward(l, ctx, fx_full(ctx, FX_F32, 4, TU_SHAPE(1, 6, 3, 4), 1.0));
    assert_non_null(y);
    assert_int_equal(y->shape[1], 4);
    assert_int_equal(y->shape[2], 6);
    assert_int_equal(y->shape[3], 8);
    fx_layer_free(l);

    /* a wrong input reaches the user as the op's error */
    l = fx_conv2d_create("c", 3, 4, 3, 3, NULL, rng);
    assert_null(fx_layer_forward(l, ctx, fx_zeros(ctx, FX_F32, 4, TU_SHAPE(1, 2, 5, 5))));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "conv2d: input has 2 channels"));
    fx_layer_free(l);

    assert_null(fx_conv2d_create("c", 3, 4, 3, 3, &(fx_conv_opts){ .groups = 2 }, rng));
    assert_null(fx_conv2d_create("c", 0, 4, 3, 3, NULL, rng));
    assert_null(fx_conv2d_create("c", 3, 4, 0, 3, NULL, rng));
    assert_null(fx_conv_transpose2d_create("c", 4, 3, 3, 3, &(fx_conv_opts){ .groups = 2 }, rng));
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* A small CNN trains: the loss falls on a fixed batch and every parameter
 * gets a gradient. */
static void test_cnn_trains(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(17);
    fx_layer *net = fx_chain_create("cnn", 6, (fx_layer *[]){
        fx_conv2d_create("conv1", 1, 4, 3, 3, &(fx_conv_opts){ .padding = 1, .act = FX_ACT_RELU },
                         rng),
        fx_maxpool2d_create("pool1", &(fx_pool_opts){ .kernel = 2 }),
        fx_conv2d_create("conv2", 4, 8, 3, 3, &(fx_conv_opts){ .padding = 1, .act = FX_ACT_RELU },
                         rng),
        fx_global_avgpool2d_create("gap"),
        fx_dense_create("fc", 8, 3, NULL, rng),
        fx_flatten_create("flat") });
    assert_non_null(net);
    fx_params params;
    fx_params_init(&params);
    assert_int_equal(fx_layer_collect_params(net, &params), FX_OK);
    assert_int_equal(params.count, 6);
    fx_optim *opt = fx_optim_create(FX_OPT_ADAM, &(fx_optim_hparams){ .lr = 1e-2 }, &params);
    fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(6, 1, 8, 8), 1, 0);
    fx_tensor_set_requires_grad(x, false);
    int32_t labels[6] = { 0, 1, 2, 0, 1, 2 };
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    double first = 0, last = 0;
    for (int step = 0; step < 60; step++) {
        fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(6), labels);
        fx_tensor *loss = fx_cross_entropy(ctx, fx_layer_forward(net, ctx, x), y, FX_MEAN);
        if (fx_backward(ctx, loss) != FX_OK)
            fail_msg("%s", fx_ctx_error(ctx));
        last = fx_tensor_item(loss);
        if (step == 0) {
            first = last;
            for (int i = 0; i < params.count; i++)
                assert_non_null(params.items[i].tensor->grad);
        }
        assert_int_equal(fx_optim_step(opt), FX_OK);
        fx_optim_zero_grad(opt);
        fx_ctx_reset(ctx);
    }
    assert_true(last < 0.5 * first);
    fx_ctx_free(ctx);
    fx_optim_free(opt);
    fx_params_clear(&params);
    fx_tensor_free(x);
    fx_layer_free(net);
    fx_rng_free(rng);
}

/* ------------------------------------------------- fused conv + ReLU */

/* A conv layer with FX_ACT_RELU runs one fused op (the clamp in the
 * forward's blocks, the mask and the bias gradient in one backward pass).
 * Its output and the gradients of x, w and b from a fixed seed equal (to
 * 1e-6 relative: the products are the same calls, so in practice bit for
 * bit) those of the separate ops fx_conv2d / fx_conv1d then fx_relu, for
 * ragged shapes (columns not a multiple of 16, groups, stride, 1-D, a 1x1
 * layer, no bias), every instruction set, 1 or 2 threads, with and
 * without the input's gradient. The bias gradient of the weight-pass path
 * sums in another order: 1e-6 relative covers it. */
typedef struct {
    conv_case c;
    bool one_d;
} relu_case;

static float *relu_result(fx_layer *l, const relu_case *rc, bool fused, fx_tensor *x, int64_t *n)
{
    fx_tensor *w = fx_layer_param(l, "weight"), *b = fx_layer_param(l, "bias");
    fx_tensor *ps[3] = { x, w, b };
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y;
    if (fused) {
        y = fx_layer_forward(l, ctx, x);
    } else {
        conv_arg a = { opts_of(&rc->c), rc->one_d ? 1 : 0, rc->c.bias };
        if (rc->one_d)
            a.o.stride = rc->c.sw, a.o.padding = rc->c.pw, a.o.dilation = rc->c.dw;
        y = fx_relu(ctx, conv_fn(ctx, ps, &a));
    }
    if (!y)
        fail_msg("%s", fx_ctx_error(ctx));
    int64_t ny = fx_tensor_numel(y);
    *n = ny;
    for (int i = 0; i < 3; i++)
        *n += ps[i] && fx_tensor_requires_grad(ps[i]) ? fx_tensor_numel(ps[i]) : 0;
    float *res = malloc((size_t)*n * sizeof *res), *seed = malloc((size_t)ny * sizeof *seed);
    for (int64_t i = 0; i < ny; i++)
        seed[i] = (float)(((i * 7919) % 23) - 11) / 7.0f;
    assert_int_equal(fx_backward_seed(ctx, y, fx_tensor_from_host(ctx, FX_F32, y->ndim, y->shape,
                                                                  seed)), FX_OK);
    assert_int_equal(fx_tensor_to_host(y, res, (size_t)ny * sizeof *res), FX_OK);
    int64_t off = ny;
    for (int i = 0; i < 3; i++) {
        if (!ps[i] || !fx_tensor_requires_grad(ps[i]))
            continue;
        int64_t k = fx_tensor_numel(ps[i]);
        assert_non_null(ps[i]->grad);
        assert_int_equal(fx_tensor_to_host(ps[i]->grad, res + off, (size_t)k * sizeof *res), FX_OK);
        fx_tensor_fill(ps[i]->grad, 0.0);
        off += k;
    }
    free(seed);
    fx_ctx_free(ctx);
    return res;
}

static void test_relu_fused(void **state)
{
    (void)state;
    static const relu_case cases[] = {
        { { 3, 1, 13, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, true }, false },  /* one channel */
        { { 2, 4, 9, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2, true }, false },    /* stride, groups */
        { { 5, 3, 6, 6, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1, false }, false },  /* no bias, 17 out */
        { { 2, 8, 5, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, true }, false },    /* 1x1 (direct) */
        { { 3, 2, 1, 37, 4, 1, 5, 1, 1, 0, 2, 1, 1, 1, true }, true },    /* 1-D */
    };
    int nt = fx_get_num_threads();
    fx_rng *rng = fx_rng_create(18);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const relu_case *rc = &cases[ci];
        const conv_case *c = &rc->c;
        fx_conv_opts o = opts_of(c);
        o.act = FX_ACT_RELU;
        o.no_bias = !c->bias;
        fx_layer *l = rc->one_d
                          ? fx_conv1d_create("c", c->c, c->o, c->kw,
                                             &(fx_conv_opts){ .stride = c->sw, .padding = c->pw,
                                                              .dilation = c->dw,
                                                              .groups = c->groups,
                                                              .act = FX_ACT_RELU,
                                                              .no_bias = !c->bias },
                                             rng)
                          : fx_conv2d_create("c", c->c, c->o, c->kh, c->kw, &o, rng);
        assert_non_null(l);
        fx_tensor *b = fx_layer_param(l, "bias");
        if (b) { /* a nonzero bias, so the clamp sees both signs through it */
            float bv[32];
            for (int64_t i = 0; i < c->o; i++)
                bv[i] = (float)((i % 5) - 2) * 0.1f;
            assert_int_equal(fx_tensor_copy_from_host(b, bv, (size_t)c->o * sizeof *bv), FX_OK);
        }
        fx_tensor *x = rc->one_d ? tu_randn(rng, 3, TU_SHAPE(c->n, c->c, c->w), 1, 0)
                                 : tu_randn(rng, 4, TU_SHAPE(c->n, c->c, c->h, c->w), 1, 0);
        for (int isa = 0; isa <= 3; isa++)
            for (int t = 1; t <= 4; t++) {
                /* t 3, 4: the input needs no gradient (a first layer), so
                 * the mask is applied inside the weight pass */
                fx_tensor_set_requires_grad(x, t <= 2);
                fx_set_num_threads(t <= 2 ? t : t - 2);
                fx__conv_isa = isa;
                int64_t n1, n2;
                float *want = relu_result(l, rc, false, x, &n1);
                float *got = relu_result(l, rc, true, x, &n2);
                fx__conv_isa = 0;
                assert_int_equal(n1, n2);
                double scale = 0;
                for (int64_t j = 0; j < n1; j++)
                    scale = fmax(scale, fabs(want[j]));
                tu_assert_close(got, want, n1, 1e-6 * (1 + scale));
                free(want);
                free(got);
            }
        fx_tensor_free(x);
        fx_layer_free(l);
    }
    fx_set_num_threads(nt);
    fx_rng_free(rng);
}

/* The fused layer's gradients by finite differences (the loss weights the
 * output so no sum of ReLUs is flat). */
typedef struct {
    fx_layer *l;
    fx_tensor *x, *wt;
} relu_gc;

static fx_tensor *relu_gc_loss(fx_ctx *ctx, void *user)
{
    relu_gc *g = user;
    return fx_sum(ctx, fx_mul(ctx, fx_layer_forward(g->l, ctx, g->x), g->wt), 0, NULL, false);
}

static void test_relu_fused_gradcheck(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(19);
    fx_layer *l = fx_conv2d_create("c", 3, 5, 3, 3,
                                   &(fx_conv_opts){ .padding = 1, .stride = 2,
                                                    .act = FX_ACT_RELU }, rng);
    assert_non_null(l);
    fx_tensor *b = fx_layer_param(l, "bias");
    float bv[5] = { 0.3f, -0.2f, 0.1f, 0.0f, -0.05f };
    assert_int_equal(fx_tensor_copy_from_host(b, bv, sizeof bv), FX_OK);
    relu_gc g = { l, tu_randn(rng, 4, TU_SHAPE(2, 3, 7, 6), 1, 1),
                  tu_randn(rng, 4, TU_SHAPE(2, 5, 4, 3), 1, 0) };
    fx_tensor *wrt[3] = { g.x, fx_layer_param(l, "weight"), b }; /* x is left out in pass 1 */
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_gradcheck_report rep;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 1: the input needs no gradient (the weight pass masks dy) */
        fx_tensor_set_requires_grad(g.x, pass == 0);
        fx_status st = fx_gradcheck(ctx, relu_gc_loss, &g, 3 - pass, wrt + pass, NULL, &rep);
        if (st != FX_OK)
            fail_msg("gradcheck %d: %s (tensor %d index %lld: %g vs %g)", pass, rep.message,
                     rep.worst_tensor, (long long)rep.worst_index, rep.worst_analytic,
                     rep.worst_numeric);
    }
    fx_ctx_free(ctx);
    fx_tensor_free(g.x);
    fx_tensor_free(g.wt);
    fx_layer_free(l);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d_cases),   cmocka_unit_test(test_conv1d),
        cmocka_unit_test(test_transpose_adjoint), cmocka_unit_test(test_transpose_cases),
        cmocka_unit_test(test_bad_input),      cmocka_unit_test(test_threads),
        cmocka_unit_test(test_layers),         cmocka_unit_test(test_cnn_trains),
        cmocka_unit_test(test_relu_fused),     cmocka_unit_test(test_relu_fused_gradcheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
