/* test_conv_grad_set.c - a convolution's input gradient written into a new
 * gradient buffer (set: no zero-fill first, conv2d_backward_data_set, or a
 * transposed convolution's conv2d without accumulate) and into one a later
 * op's backward has already written (added to), against sums in double
 * written here, every instruction set, 1 and 2 threads. The arena is
 * poisoned with NaNs first, so an element the set path leaves unwritten
 * shows. Geometries: padding, stride larger than the kernel (input
 * positions no tap reads), dilation, groups, 1x1 (the product writes dx
 * itself), and the transposed convolution. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

extern int fx__conv_isa;

typedef struct {
    int64_t n, c, h, w, o, kh, kw;
    int sh, sw, ph, pw, dh, dw, groups;
    bool transposed;
} gs_case;

static int64_t out_size(int64_t n, int64_t k, int s, int p, int d)
{
    return (n + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* For the convolution x [n, c, h, w] -> y [n, o, oh, ow] with weight
 * [o, c/groups, kh, kw]: acc[x index] += s[y index] * w over every tap that
 * reads it (the input gradient); mag gets the sums of |terms|. */
static void conv_adjoint(const gs_case *c, int64_t oh, int64_t ow, const float *s, const float *w,
                         double *acc, double *mag)
{
    int64_t cg = c->c / c->groups, og = c->o / c->groups;
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t o = 0; o < c->o; o++)
            for (int64_t cl = 0; cl < cg; cl++)
                for (int64_t a = 0; a < c->kh; a++)
                    for (int64_t b = 0; b < c->kw; b++)
                        for (int64_t i = 0; i < oh; i++)
                            for (int64_t j = 0; j < ow; j++) {
                                int64_t iy = i * c->sh - c->ph + a * c->dh;
                                int64_t ix = j * c->sw - c->pw + b * c->dw;
                                if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w)
                                    continue;
                                int64_t ch = o / og * cg + cl;
                                int64_t xi = ((n * c->c + ch) * c->h + iy) * c->w + ix;
                                double t = (double)s[((n * c->o + o) * oh + i) * ow + j] *
                                           w[((o * cg + cl) * c->kh + a) * c->kw + b];
                                acc[xi] += t;
                                mag[xi] += fabs(t);
                            }
}

static void run_case(const gs_case *c, size_t ci, fx_rng *rng)
{
    int64_t oh = out_size(c->h, c->kh, c->sh, c->ph, c->dh);
    int64_t ow = out_size(c->w, c->kw, c->sw, c->pw, c->dw);
    /* a transposed op maps the convolution's output [n, o, oh, ow] back to
     * [n, c, h, w]: its input is the former, its weight [o, c/groups, kh, kw] */
    int64_t xs[4] = { c->n, c->c, c->h, c->w }, ys[4] = { c->n, c->o, oh, ow };
    const int64_t *in = c->transposed ? ys : xs, *out = c->transposed ? xs : ys;
    int64_t nin = in[0] * in[1] * in[2] * in[3], nout = out[0] * out[1] * out[2] * out[3];
    fx_tensor *x = tu_randn(rng, 4, in, 1, 0);
    fx_tensor *w = tu_randn(rng, 4, TU_SHAPE(c->o, c->c / c->groups, c->kh, c->kw), 0.5, 0);
    float *wv = tu_values(w), *seed = malloc((size_t)nout * sizeof *seed);
    for (int64_t i = 0; i < nout; i++)
        seed[i] = (float)(((i * 7919) % 23) - 11) / 7.0f;
    double *want = calloc((size_t)nin, sizeof *want), *mag = calloc((size_t)nin, sizeof *mag);
    if (c->transposed) { /* its input gradient is the convolution of the seed */
        int64_t cg = c->c / c->groups, og = c->o / c->groups;
        for (int64_t n = 0; n < c->n; n++)
            for (int64_t o = 0; o < c->o; o++)
                for (int64_t i = 0; i < oh; i++)
                    for (int64_t j = 0; j < ow; j++) {
                        int64_t at = ((n * c->o + o) * oh + i) * ow + j;
                        for (int64_t cl = 0; cl < cg; cl++)
                            for (int64_t a = 0; a < c->kh; a++)
                                for (int64_t b = 0; b < c->kw; b++) {
                                    int64_t iy = i * c->sh - c->ph + a * c->dh;
                                    int64_t ix = j * c->sw - c->pw + b * c->dw;
                                    if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w)
                                        continue;
                                    double t = (double)wv[((o * cg + cl) * c->kh + a) * c->kw + b] *
                                               seed[((n * c->c + o / og * cg + cl) * c->h + iy) *
                                                        c->w + ix];
                                    want[at] += t;
                                    mag[at] += fabs(t);
                                }
                    }
    } else {
        conv_adjoint(c, oh, ow, seed, wv, want, mag);
    }
    fx_conv_opts o = { .stride_h = c->sh, .stride_w = c->sw, .padding_h = c->ph,
                       .padding_w = c->pw, .dilation_h = c->dh, .dilation_w = c->dw,
                       .groups = c->groups };
    for (int isa = 0; isa <= 3; isa++)
        for (int t = 1; t <= 2; t++)
            for (int added = 0; added < 2; added++) {
                fx__conv_isa = isa;
                fx_set_num_threads(t);
                fx_ctx *ctx = fx_ctx_create(fx_cpu());
                for (int r = 0; r < 2; r++) { /* the second time in the one chunk it keeps */
                    assert_non_null(fx_full(ctx, FX_F32, 1, TU_SHAPE(1 << 20), NAN));
                    fx_ctx_reset(ctx);
                }
                /* an op's output: its gradient buffer is made in the backward */
                fx_tensor *x1 = fx_scale(ctx, x, 1.0f);
                fx_tensor *y = c->transposed ? fx_conv_transpose2d(ctx, x1, w, NULL, &o)
                                             : fx_conv2d(ctx, x1, w, NULL, &o);
                if (!y)
                    fail_msg("case %zu: %s", ci, fx_ctx_error(ctx));
                assert_int_equal(fx_tensor_numel(y), nout);
                fx_tensor *dy = fx_tensor_from_host(ctx, FX_F32, 4, y->shape, seed);
                fx_tensor *loss = fx_sum(ctx, fx_mul(ctx, y, dy), 0, NULL, false);
                if (added) /* recorded after the conv: its backward writes x1's gradient first */
                    loss = fx_add(ctx, loss, fx_sum(ctx, fx_scale(ctx, x1, 0.5f), 0, NULL, false));
                if (!loss || fx_backward(ctx, loss) != FX_OK)
                    fail_msg("case %zu: %s", ci, fx_ctx_error(ctx));
                float *got = tu_values(x->grad);
                for (int64_t i = 0; i < nin; i++) {
                    double v = want[i] + (added ? 0.5 : 0.0);
                    if (!(fabs(got[i] - v) <= 1e-5 * (1 + mag[i])))
                        fail_msg("case %zu isa %d threads %d %s: dx %lld is %.9g, want %.9g", ci,
                                 isa, t, added ? "added" : "set", (long long)i, got[i], v);
                }
                free(got);
                fx_tensor_fill(x->grad, 0.0);
                fx_tensor_fill(w->grad, 0.0);
                fx_ctx_free(ctx);
                fx__conv_isa = 0;
            }
    free(wv);
    free(seed);
    free(want);
    free(mag);
    fx_tensor_free(x);
    fx_tensor_free(w);
}

static void test_input_grad_set(void **state)
{
    (void)state;
    static const gs_case cases[] = {
        { 2, 3, 9, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, false },     /* "same" 3x3 */
        { 2, 32, 14, 14, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, false }, /* the benchmark's shape, 16 out */
        { 2, 2, 8, 7, 3, 2, 2, 3, 3, 0, 0, 1, 1, 1, false },     /* stride 3 > kernel: gaps */
        { 1, 2, 9, 9, 2, 3, 3, 1, 1, 2, 2, 2, 2, 1, false },     /* dilation 2 */
        { 2, 4, 5, 6, 6, 3, 3, 2, 1, 1, 0, 1, 1, 2, false },     /* groups, mixed strides */
        { 2, 5, 4, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, false },     /* 1x1: dx is the product */
        { 2, 3, 7, 7, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, true },      /* transposed */
    };
    int nt = fx_get_num_threads();
    fx_rng *rng = fx_rng_create(41);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        run_case(&cases[k], k, rng);
    fx_rng_free(rng);
    fx_set_num_threads(nt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_grad_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
