/* test_init.c - initializers: sample statistics against the theoretical
 * mean and variance, uniform bounds, PyTorch's fans, orthogonality,
 * reproducibility by seed, and refused inputs. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double mean, var, min, max;
} stats;

/* Initialises a fresh f32 tensor of the shape and returns its statistics. */
static stats init_stats(int ndim, const int64_t *shape, fx_init_kind kind, double a, double b,
                        uint64_t seed)
{
    fx_tensor *t = fx_tensor_create(fx_cpu(), FX_F32, ndim, shape);
    assert_non_null(t);
    fx_rng *rng = fx_rng_create(seed);
    assert_int_equal(fx_init_tensor(t, kind, a, b, rng), FX_OK);
    int64_t n = fx_tensor_numel(t);
    float *v = tu_values(t);
    stats s = { 0.0, 0.0, INFINITY, -INFINITY };
    for (int64_t i = 0; i < n; i++) {
        s.mean += v[i];
        s.min = fmin(s.min, v[i]);
        s.max = fmax(s.max, v[i]);
    }
    s.mean /= (double)n;
    for (int64_t i = 0; i < n; i++)
        s.var += (v[i] - s.mean) * (v[i] - s.mean);
    s.var /= (double)(n - 1);
    free(v);
    fx_rng_free(rng);
    fx_tensor_free(t);
    return s;
}

/* Sample mean within 5 standard errors and variance within 4% of theory. */
static void assert_moments(stats s, double mean, double var, int64_t n, const char *what)
{
    double se = sqrt(var / (double)n);
    if (!(fabs(s.mean - mean) <= 5.0 * se + 1e-12))
        fail_msg("%s: mean %.6g, expected %.6g (+-%.3g)", what, s.mean, mean, 5.0 * se);
    if (!(fabs(s.var - var) <= 0.04 * var + 1e-12))
        fail_msg("%s: variance %.6g, expected %.6g", what, s.var, var);
}

/* A uniform sample fills [-bound, bound]: inside it and close to its ends. */
static void assert_uniform_bound(stats s, double lo, double hi, const char *what)
{
    double w = hi - lo;
    if (!(s.min >= lo && s.max <= hi))
        fail_msg("%s: values [%.6g, %.6g] leave [%.6g, %.6g]", what, s.min, s.max, lo, hi);
    if (!(s.min < lo + 0.01 * w && s.max > hi - 0.01 * w))
        fail_msg("%s: values [%.6g, %.6g] do not fill [%.6g, %.6g]", what, s.min, s.max, lo, hi);
}

static void test_constant_kinds(void **state)
{
    (void)state;
    stats z = init_stats(2, TU_SHAPE(64, 32), FX_INIT_ZEROS, 5.0, 0, 1);
    assert_true(z.min == 0.0 && z.max == 0.0);
    stats c = init_stats(3, TU_SHAPE(4, 5, 6), FX_INIT_CONSTANT, 2.5, 0, 1);
    assert_true(c.min == 2.5 && c.max == 2.5);
    /* a constant kind needs no generator */
    fx_tensor *t = fx_tensor_create(fx_cpu(), FX_F32, 1, TU_SHAPE(7));
    assert_int_equal(fx_init_tensor(t, FX_INIT_CONSTANT, -1.0, 0, NULL), FX_OK);
    float *v = tu_values(t);
    for (int i = 0; i < 7; i++)
        assert_float_equal(v[i], -1.0, 0.0);
    free(v);
    fx_tensor_free(t);
}

static void test_uniform_normal(void **state)
{
    (void)state;
    const int64_t *shape = TU_SHAPE(256, 128);
    int64_t n = 256 * 128;
    stats u = init_stats(2, shape, FX_INIT_UNIFORM, -2.0, 3.0, 2);
    assert_moments(u, 0.5, 25.0 / 12.0, n, "uniform(-2,3)");
    assert_uniform_bound(u, -2.0, 3.0, "uniform(-2,3)");
    stats g = init_stats(2, shape, FX_INIT_NORMAL, 1.0, 2.0, 3);
    assert_moments(g, 1.0, 4.0, n, "normal(1,2)");
}

/* Glorot and He on a linear weight and on a conv kernel, whose fans count
 * the receptive field (PyTorch's rule). */
static void test_fan_based(void **state)
{
    (void)state;
    struct {
        int ndim;
        int64_t shape[4];
        double fan_in, fan_out;
    } cases[] = {
        { 2, { 256, 128 }, 128, 256 },
        { 4, { 64, 32, 3, 3 }, 288, 576 },
        { 3, { 40, 20, 16 }, 320, 640 },
        { 1, { 20000 }, 20000, 20000 },
    };
    for (int k = 0; k < 4; k++) {
        int nd = cases[k].ndim;
        const int64_t *sh = cases[k].shape;
        int64_t n = 1;
        for (int d = 0; d < nd; d++)
            n *= sh[d];
        double fi = cases[k].fan_in, fo = cases[k].fan_out;
        double gvar = 2.0 / (fi + fo), hvar = 2.0 / fi;
        stats s = init_stats(nd, sh, FX_INIT_GLOROT_UNIFORM, 0, 0, 10 + k);
        assert_moments(s, 0.0, gvar, n, "glorot_uniform");
        assert_uniform_bound(s, -sqrt(6.0 / (fi + fo)), sqrt(6.0 / (fi + fo)), "glorot_uniform");
        s = init_stats(nd, sh, FX_INIT_GLOROT_NORMAL, 0, 0, 20 + k);
        assert_moments(s, 0.0, gvar, n, "glorot_normal");
        s = init_stats(nd, sh, FX_INIT_HE_UNIFORM, 0, 0, 30 + k);
        assert_moments(s, 0.0, hvar, n, "he_uniform");
        assert_uniform_bound(s, -sqrt(6.0 / fi), sqrt(6.0 / fi), "he_uniform");
        s = init_stats(nd, sh, FX_INIT_HE_NORMAL, 0, 0, 40 + k);
        assert_moments(s, 0.0, hvar, n, "he_normal");
    }
}

/* W W^T (rows <= cols) or W^T W (rows > cols) equals gain^2 I within 1e-4,
 * with W seen as [shape[0], numel / shape[0]]. */
static void check_orthogonal(int ndim, const int64_t *shape, double gain)
{
    fx_tensor *t = fx_tensor_create(fx_cpu(), FX_F32, ndim, shape);
    fx_rng *rng = fx_rng_create(99);
    assert_int_equal(fx_init_tensor(t, FX_INIT_ORTHOGONAL, gain, 0, rng), FX_OK);
    int64_t rows = shape[0], cols = fx_tensor_numel(t) / rows;
    float *w = tu_values(t);
    bool by_rows = rows <= cols;
    int64_t k = by_rows ? rows : cols, m = by_rows ? cols : rows;
    double g2 = gain == 0.0 ? 1.0 : gain * gain;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < k; j++) {
            double dot = 0.0;
            for (int64_t l = 0; l < m; l++)
                dot += by_rows ? (double)w[i * cols + l] * w[j * cols + l]
                               : (double)w[l * cols + i] * w[l * cols + j];
            double want = i == j ? g2 : 0.0;
            if (!(fabs(dot - want) <= 1e-4 * g2))
                fail_msg("orthogonal [%lld x %lld]: product (%lld,%lld) is %.8g, wanted %g",
                         (long long)rows, (long long)cols, (long long)i, (long long)j, dot, want);
        }
    free(w);
    fx_rng_free(rng);
    fx_tensor_free(t);
}

static void test_orthogonal(void **state)
{
    (void)state;
    check_orthogonal(2, TU_SHAPE(8, 20), 0.0);
    check_orthogonal(2, TU_SHAPE(20, 8), 0.0);
    check_orthogonal(2, TU_SHAPE(32, 32), 1.0);
    check_orthogonal(2, TU_SHAPE(64, 48), 2.0);
    check_orthogonal(4, TU_SHAPE(6, 3, 2, 2), 0.5);
    check_orthogonal(2, TU_SHAPE(1, 5), 0.0);
    check_orthogonal(2, TU_SHAPE(5, 1), 0.0);
    /* entries of a large orthogonal matrix look like N(0, 1/n) */
    stats s = init_stats(2, TU_SHAPE(200, 200), FX_INIT_ORTHOGONAL, 0, 0, 5);
    assert_moments(s, 0.0, 1.0 / 200.0, 200 * 200, "orthogonal");
}

/* Same seed, same values; another seed, other values; for every random kind. */
static void test_seeds(void **state)
{
    (void)state;
    fx_init_kind kinds[] = { FX_INIT_UNIFORM, FX_INIT_NORMAL, FX_INIT_GLOROT_UNIFORM,
                             FX_INIT_GLOROT_NORMAL, FX_INIT_HE_UNIFORM, FX_INIT_HE_NORMAL,
                             FX_INIT_ORTHOGONAL };
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        float *v[3];
        uint64_t seeds[3] = { 42, 42, 43 };
        for (int r = 0; r < 3; r++) {
            fx_tensor *t = fx_tensor_create(fx_cpu(), FX_F32, 2, TU_SHAPE(6, 10));
            fx_rng *rng = fx_rng_create(seeds[r]);
            assert_int_equal(fx_init_tensor(t, kinds[k], -1.0, 1.0, rng), FX_OK);
            v[r] = tu_values(t);
            fx_rng_free(rng);
            fx_tensor_free(t);
        }
        assert_memory_equal(v[0], v[1], 60 * sizeof(float));
        int same = 0;
        for (int i = 0; i < 60; i++)
            same += v[0][i] == v[2][i];
        assert_true(same < 3);
        for (int r = 0; r < 3; r++)
            free(v[r]);
    }
}

static void test_bad_inputs(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_tensor *i32 = fx_tensor_create(fx_cpu(), FX_I32, 2, TU_SHAPE(3, 3));
    fx_tensor *v = fx_tensor_create(fx_cpu(), FX_F32, 1, TU_SHAPE(5));
    fx_tensor *m = fx_tensor_create(fx_cpu(), FX_F32, 2, TU_SHAPE(3, 3));
    fx_tensor *empty = fx_tensor_create(fx_cpu(), FX_F32, 2, TU_SHAPE(0, 3));
    assert_int_equal(fx_init_tensor(i32, FX_INIT_NORMAL, 0, 1, rng), FX_ERR_DTYPE);
    assert_int_equal(fx_init_tensor(i32, FX_INIT_ZEROS, 0, 0, rng), FX_ERR_DTYPE);
    assert_int_equal(fx_init_tensor(v, FX_INIT_ORTHOGONAL, 0, 0, rng), FX_ERR_SHAPE);
    assert_int_equal(fx_init_tensor(NULL, FX_INIT_ZEROS, 0, 0, rng), FX_ERR_ARG);
    assert_int_equal(fx_init_tensor(m, FX_INIT_HE_NORMAL, 0, 0, NULL), FX_ERR_ARG);
    assert_int_equal(fx_init_tensor(m, (fx_init_kind)42, 0, 0, rng), FX_ERR_ARG);
    /* an empty tensor is fine for every kind but orthogonal's shape rule */
    assert_int_equal(fx_init_tensor(empty, FX_INIT_GLOROT_UNIFORM, 0, 0, rng), FX_OK);
    assert_int_equal(fx_init_tensor(empty, FX_INIT_ORTHOGONAL, 0, 0, rng), FX_OK);
    tu_free_all(4, (fx_tensor *[]){ i32, v, m, empty });
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_kinds), cmocka_unit_test(test_uniform_normal),
        cmocka_unit_test(test_fan_based),      cmocka_unit_test(test_orthogonal),
        cmocka_unit_test(test_seeds),          cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
