/* test_conv_wgrad.c - a convolution's weight and bias gradients against
 * sums in double written here, for layers with few taps per output (<= 12:
 * engine/cpu/conv_wdot.c's dot products on AVX-512, the transposed product
 * with the other instruction sets) and ones past them (the product with dy
 * transposed: AVX-512 16x16 blocks, then 4x4 ones for the rest), with every
 * instruction set forced, 1 and 2 threads, with and without the input's
 * gradient, plain and with a fused ReLU (the mask taken from the layer's
 * own output). Sizes are ragged: rows of output positions that are not a
 * multiple of 16, or shorter than 16, odd output counts, groups. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

extern int fx__conv_isa;

typedef struct {
    int64_t n, c, h, w, o, kh, kw;
    int sh, sw, ph, pw, dh, dw, groups;
} wg_case;

static int64_t out_size(int64_t n, int64_t k, int s, int p, int d)
{
    return (n + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* dw[o, cl, a, b] = sum over n, i, j of s[n, o, i, j] * x[n, channel, i*sh
 * - ph + a*dh, j*sw - pw + b*dw] (0 outside), db[o] = sum of s[n, o]; mag
 * gets each dw entry's sum of |terms| (the scale of its rounding). */
static void reference(const wg_case *c, const float *x, const float *s, double *dw, double *mag,
                      double *db)
{
    int64_t oh = out_size(c->h, c->kh, c->sh, c->ph, c->dh);
    int64_t ow = out_size(c->w, c->kw, c->sw, c->pw, c->dw);
    int64_t cg = c->c / c->groups, og = c->o / c->groups;
    for (int64_t o = 0; o < c->o; o++) {
        db[o] = 0;
        for (int64_t n = 0; n < c->n; n++)
            for (int64_t q = 0; q < oh * ow; q++)
                db[o] += s[(n * c->o + o) * oh * ow + q];
        for (int64_t cl = 0; cl < cg; cl++)
            for (int64_t a = 0; a < c->kh; a++)
                for (int64_t b = 0; b < c->kw; b++) {
                    int64_t at = ((o * cg + cl) * c->kh + a) * c->kw + b, ch = o / og * cg + cl;
                    double sum = 0, m = 0;
                    for (int64_t n = 0; n < c->n; n++)
                        for (int64_t i = 0; i < oh; i++)
                            for (int64_t j = 0; j < ow; j++) {
                                int64_t iy = i * c->sh - c->ph + a * c->dh;
                                int64_t ix = j * c->sw - c->pw + b * c->dw;
                                if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w)
                                    continue;
                                double t = (double)s[((n * c->o + o) * oh + i) * ow + j] *
                                           x[((n * c->c + ch) * c->h + iy) * c->w + ix];
                                sum += t;
                                m += fabs(t);
                            }
                    dw[at] = sum;
                    mag[at] = m;
                }
    }
}

static void check(const char *what, const wg_case *c, int isa, int t, const float *got,
                  const double *want, const double *mag, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= 1e-5 * (1 + mag[i])))
            fail_msg("%s [%lld,%lld,%lld,%lld] o %lld k %lldx%lld g %d, isa %d, threads %d: "
                     "entry %lld is %.9g, want %.9g", what, (long long)c->n, (long long)c->c,
                     (long long)c->h, (long long)c->w, (long long)c->o, (long long)c->kh,
                     (long long)c->kw, c->groups, isa, t, (long long)i, got[i], want[i]);
}

static void run_case(const wg_case *c, fx_rng *rng)
{
    int64_t cg = c->c / c->groups;
    int64_t nw = c->o * cg * c->kh * c->kw;
    fx_conv_opts o = { .stride_h = c->sh, .stride_w = c->sw, .padding_h = c->ph,
                       .padding_w = c->pw, .dilation_h = c->dh, .dilation_w = c->dw,
                       .groups = c->groups };
    fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(c->n, c->c, c->h, c->w), 1, 0);
    float *xv = tu_values(x);
    double *dw = malloc((size_t)nw * sizeof *dw), *mag = malloc((size_t)nw * sizeof *mag);
    double *db = malloc((size_t)c->o * sizeof *db), *dbmag = malloc((size_t)c->o * sizeof *dbmag);
    for (int relu = 0; relu < 2; relu++) {
        fx_conv_opts lo = o;
        lo.act = relu ? FX_ACT_RELU : FX_ACT_NONE;
        fx_layer *l = fx_conv2d_create("c", c->c, c->o, c->kh, c->kw, &lo, rng);
        assert_non_null(l);
        fx_tensor *w = fx_layer_param(l, "weight"), *b = fx_layer_param(l, "bias");
        float bv[64];
        for (int64_t i = 0; i < c->o; i++) /* both signs through the clamp */
            bv[i] = (float)((i % 5) - 2) * 0.1f;
        assert_int_equal(fx_tensor_copy_from_host(b, bv, (size_t)c->o * sizeof *bv), FX_OK);
        for (int isa = 0; isa <= 3; isa++)
            for (int t = 1; t <= 4; t++) {
                fx_tensor_set_requires_grad(x, t <= 2);
                fx_set_num_threads(t <= 2 ? t : t - 2);
                fx__conv_isa = isa;
                fx_ctx *ctx = fx_ctx_create(fx_cpu());
                fx_tensor *y = fx_layer_forward(l, ctx, x);
                assert_non_null(y);
                int64_t ny = fx_tensor_numel(y);
                float *yv = tu_values(y), *seed = malloc((size_t)ny * sizeof *seed);
                for (int64_t i = 0; i < ny; i++)
                    seed[i] = (float)(((i * 7919) % 23) - 11) / 7.0f;
                assert_int_equal(fx_backward_seed(ctx, y, fx_tensor_from_host(
                                                              ctx, FX_F32, 4, y->shape, seed)),
                                 FX_OK);
                for (int64_t i = 0; relu && i < ny; i++) /* the ReLU's gradient */
                    seed[i] = yv[i] > 0 ? seed[i] : 0.0f;
                reference(c, xv, seed, dw, mag, db);
                int64_t per = ny / c->n / c->o; /* positions per output channel */
                for (int64_t i = 0; i < c->o; i++)
                    dbmag[i] = 0;
                for (int64_t i = 0; i < ny; i++)
                    dbmag[i / per % c->o] += fabs(seed[i]);
                float *gw = tu_values(w->grad), *gb = tu_values(b->grad);
                check(relu ? "relu weight" : "weight", c, isa, t, gw, dw, mag, nw);
                check(relu ? "relu bias" : "bias", c, isa, t, gb, db, dbmag, c->o);
                free(gw);
                free(gb);
                free(yv);
                free(seed);
                fx_tensor_fill(w->grad, 0.0);
                fx_tensor_fill(b->grad, 0.0);
                if (x->grad)
                    fx_tensor_fill(x->grad, 0.0);
                fx_ctx_free(ctx);
                fx__conv_isa = 0;
            }
        fx_layer_free(l);
    }
    free(xv);
    free(dw);
    free(mag);
    free(db);
    free(dbmag);
    fx_tensor_free(x);
}

static void test_few_taps(void **state)
{
    (void)state;
    static const wg_case cases[] = {
        { 3, 1, 13, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1 },  /* 143 positions, 5 outputs */
        { 2, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1 }, /* the benchmark cnn's first layer */
        { 2, 3, 9, 8, 4, 2, 2, 2, 2, 0, 0, 1, 1, 1 },    /* 12 taps, stride 2 */
        { 2, 4, 7, 7, 8, 3, 3, 1, 1, 1, 1, 1, 1, 4 },    /* depthwise: groups of 2 outputs */
        { 2, 1, 1, 37, 3, 1, 5, 1, 1, 0, 2, 1, 1, 1 },   /* one row, 5 taps */
        { 2, 1, 3, 3, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1 },    /* 9 positions: the tail only */
        { 2, 2, 7, 5, 7, 2, 2, 1, 1, 1, 0, 2, 1, 1 },    /* dilation, 8 taps */
        { 2, 13, 5, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1 },   /* 13 taps: the transposed product */
        { 2, 3, 9, 7, 21, 3, 3, 1, 1, 1, 1, 1, 1, 1 },   /* dy^T: 16-row blocks + 5 rows, tail */
        { 2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1 }, /* the benchmark cnn's second layer */
    };
    int nt = fx_get_num_threads();
    fx_rng *rng = fx_rng_create(31);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        run_case(&cases[k], rng);
    fx_rng_free(rng);
    fx_set_num_threads(nt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_few_taps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
