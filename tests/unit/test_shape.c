/* test_shape.c - reshape, transpose / permute, concat, slice and split
 * against plain index loops (views and storage, empty and clamped slices,
 * scalars, any dtype), and bad input with its messages; fx_dims_str's
 * text, truncation and documented bound. Their gradients
 * and cross-backend comparisons, views and strided inputs included, are the
 * registry's rows (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void expect_fail(fx_ctx *ctx, fx_tensor *y, fx_status s, const char *op)
{
    assert_null(y);
    assert_int_equal(fx_ctx_status(ctx), s);
    if (strncmp(fx_ctx_error(ctx), op, strlen(op)) != 0)
        fail_msg("message '%s' does not name %s", fx_ctx_error(ctx), op);
    fx_ctx_clear_error(ctx);
}

static void assert_shape(const fx_tensor *t, int ndim, const int64_t *shape)
{
    assert_non_null(t);
    assert_int_equal(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        assert_int_equal(t->shape[d], shape[d]);
}

/* ---------------------------------------------------------------- reshape */

typedef struct {
    int ndim;
    int64_t shape[4];
    bool transpose_first; /* reshape a strided view */
} reshape_case;

static fx_tensor *reshape_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    reshape_case *c = arg;
    fx_tensor *x = c->transpose_first ? fx_transpose(ctx, in[0], 0, 1) : in[0];
    return fx_reshape(ctx, x, c->ndim, c->shape);
}

static void test_reshape(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 3, 4), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());

    /* A view of a contiguous tensor: same storage, same elements. */
    reshape_case c1 = { 2, { 4, -1 }, false };
    fx_tensor *y = reshape_op(ctx, &x, &c1);
    assert_shape(y, 2, TU_SHAPE(4, 6));
    assert_ptr_equal(y->storage, x->storage);
    float *xv = tu_values(x), *yv = tu_values(y);
    tu_assert_close(yv, xv, 24, 0);
    free(yv);

    /* A strided input is copied first: y[i] = x^T in row-major order. */
    reshape_case c2 = { 1, { -1 }, true };
    y = reshape_op(ctx, &x, &c2);
    assert_shape(y, 1, TU_SHAPE(24));
    yv = tu_values(y);
    for (int64_t i = 0; i < 24; i++) { /* x^T has shape [3,2,4] */
        int64_t c[3], xc[3];
        tu_coords_of(3, TU_SHAPE(3, 2, 4), i, c);
        xc[0] = c[1];
        xc[1] = c[0];
        xc[2] = c[2];
        assert_true(yv[i] == xv[tu_offset_of(3, TU_SHAPE(2, 3, 4), xc)]);
    }
    free(yv);
    free(xv);

    /* A scalar and back; any dtype. */
    fx_tensor *one = fx_full(ctx, FX_F32, 1, TU_SHAPE(1), 2.5);
    fx_tensor *s = fx_reshape(ctx, one, 0, NULL);
    assert_shape(s, 0, NULL);
    assert_true(fx_tensor_item(s) == 2.5);
    int64_t iv[6] = { 0, 1, 2, 3, 4, 5 };
    fx_tensor *ints = fx_tensor_from_host(ctx, FX_I64, 1, TU_SHAPE(6), iv);
    fx_tensor *im = fx_reshape(ctx, ints, 2, TU_SHAPE(3, 2));
    assert_shape(im, 2, TU_SHAPE(3, 2));
    assert_int_equal(im->dtype, FX_I64);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

static void test_reshape_bad(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    expect_fail(ctx, fx_reshape(ctx, x, 2, TU_SHAPE(5, 2)), FX_ERR_SHAPE, "reshape");
    expect_fail(ctx, fx_reshape(ctx, x, 2, TU_SHAPE(-1, -1)), FX_ERR_SHAPE, "reshape");
    expect_fail(ctx, fx_reshape(ctx, x, 2, TU_SHAPE(5, -1)), FX_ERR_SHAPE, "reshape");
    expect_fail(ctx, fx_reshape(ctx, x, 2, TU_SHAPE(-2, -6)), FX_ERR_SHAPE, "reshape");
    expect_fail(ctx, fx_reshape(ctx, x, 3, TU_SHAPE(0, -1, 4)), FX_ERR_SHAPE, "reshape");
    expect_fail(ctx, fx_reshape(ctx, x, 9, TU_SHAPE(1, 1, 1, 1, 1, 1, 1, 3, 4)), FX_ERR_ARG,
                "reshape");
    expect_fail(ctx, fx_reshape(ctx, x, 2, NULL), FX_ERR_ARG, "reshape");
    assert_null(fx_reshape(ctx, NULL, 1, TU_SHAPE(12)));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

/* --------------------------------------------------------------- permute */

typedef struct {
    int perm[FX_MAX_DIMS];
    int a0, a1; /* transpose axes when perm[0] < 0 */
} perm_case;

static fx_tensor *permute_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    perm_case *c = arg;
    return c->perm[0] < 0 ? fx_transpose(ctx, in[0], c->a0, c->a1)
                          : fx_permute(ctx, in[0], c->perm);
}

/* Forward against y[c] = x[c permuted back]; the result is contiguous. */
static void check_permute(fx_rng *rng, int ndim, const int64_t *shape, perm_case c)
{
    fx_tensor *x = tu_randn(rng, ndim, shape, 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = permute_op(ctx, &x, &c);
    if (!y)
        fail_msg("permute: %s", fx_ctx_error(ctx));
    int p[FX_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        int a0 = c.a0 < 0 ? c.a0 + ndim : c.a0, a1 = c.a1 < 0 ? c.a1 + ndim : c.a1;
        p[d] = c.perm[0] >= 0 ? (c.perm[d] < 0 ? c.perm[d] + ndim : c.perm[d])
                              : d == a0 ? a1 : d == a1 ? a0 : d;
        assert_int_equal(y->shape[d], shape[p[d]]);
    }
    assert_true(fx_tensor_is_contiguous(y));
    float *xv = tu_values(x), *yv = tu_values(y);
    for (int64_t i = 0; i < fx_tensor_numel(y); i++) {
        int64_t yc[FX_MAX_DIMS], xc[FX_MAX_DIMS];
        tu_coords_of(ndim, y->shape, i, yc);
        for (int d = 0; d < ndim; d++)
            xc[p[d]] = yc[d];
        assert_true(yv[i] == xv[tu_offset_of(ndim, shape, xc)]);
    }
    free(xv);
    free(yv);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

static void test_permute(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(4);
    check_permute(rng, 3, TU_SHAPE(2, 3, 4), (perm_case){ { 2, 0, 1 }, 0, 0 });
    check_permute(rng, 3, TU_SHAPE(2, 3, 4), (perm_case){ { 1, -1, 0 }, 0, 0 });
    check_permute(rng, 4, TU_SHAPE(2, 3, 2, 3), (perm_case){ { 3, 1, 0, 2 }, 0, 0 });
    check_permute(rng, 4, TU_SHAPE(2, 1, 3, 2), (perm_case){ { 0, 2, 3, 1 }, 0, 0 });
    check_permute(rng, 2, TU_SHAPE(3, 5), (perm_case){ { -1 }, 0, 1 });
    check_permute(rng, 3, TU_SHAPE(2, 3, 4), (perm_case){ { -1 }, -1, 0 });
    check_permute(rng, 3, TU_SHAPE(2, 3, 4), (perm_case){ { -1 }, 1, 1 });
    fx_rng_free(rng);
}

static void test_permute_bad(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(5);
    fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 3, 4), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    expect_fail(ctx, fx_permute(ctx, x, (int[]){ 0, 1, 1 }), FX_ERR_AXIS, "permute");
    expect_fail(ctx, fx_permute(ctx, x, (int[]){ 0, 1, 3 }), FX_ERR_AXIS, "permute");
    expect_fail(ctx, fx_permute(ctx, x, NULL), FX_ERR_ARG, "permute");
    expect_fail(ctx, fx_transpose(ctx, x, 0, 3), FX_ERR_AXIS, "transpose");
    expect_fail(ctx, fx_transpose(ctx, x, -4, 0), FX_ERR_AXIS, "transpose");
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

/* ---------------------------------------------------------------- concat */

static fx_tensor *concat_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    int *a = arg; /* a[0]: n, a[1]: axis */
    return fx_concat(ctx, a[0], in, a[1]);
}

static void test_concat(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(6);
    /* Three inputs along the middle axis: y[i, j, k] comes from the input
     * whose range of j holds j. */
    fx_tensor *in[3] = { tu_randn(rng, 3, TU_SHAPE(2, 1, 3), 1, 0),
                         tu_randn(rng, 3, TU_SHAPE(2, 2, 3), 1, 0),
                         tu_randn(rng, 3, TU_SHAPE(2, 3, 3), 1, 0) };
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    int arg[2] = { 3, 1 };
    fx_tensor *y = concat_op(ctx, in, arg);
    assert_shape(y, 3, TU_SHAPE(2, 6, 3));
    float *yv = tu_values(y), *v[3];
    for (int t = 0; t < 3; t++)
        v[t] = tu_values(in[t]);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 6; j++)
            for (int k = 0; k < 3; k++) {
                int t = j < 1 ? 0 : j < 3 ? 1 : 2, j0 = t == 0 ? 0 : t == 1 ? 1 : 3;
                int64_t len = in[t]->shape[1];
                assert_true(yv[(i * 6 + j) * 3 + k] == v[t][(i * len + (j - j0)) * 3 + k]);
            }
    free(yv);
    for (int t = 0; t < 3; t++)
        free(v[t]);
    fx_ctx_free(ctx);
    tu_free_all(3, in);

    /* The same input twice gets both gradients. */
    fx_tensor *rows[2] = { tu_randn(rng, 2, TU_SHAPE(2, 3), 1, 0),
                           tu_randn(rng, 2, TU_SHAPE(4, 3), 1, 0) };
    fx_tensor *twice[2] = { rows[0], rows[0] };
    ctx = fx_ctx_create(fx_cpu());
    fx_tensor *z = fx_concat(ctx, 2, twice, 0);
    assert_shape(z, 2, TU_SHAPE(4, 3));
    assert_int_equal(fx_backward(ctx, fx_sum(ctx, z, 0, NULL, false)), FX_OK);
    float *g = tu_values(rows[0]->grad), twos[6] = { 2, 2, 2, 2, 2, 2 };
    tu_assert_close(g, twos, 6, 0);
    free(g);
    fx_ctx_free(ctx);
    tu_free_all(2, rows);
    fx_rng_free(rng);
}

static void test_concat_bad(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(7);
    fx_tensor *a = tu_randn(rng, 2, TU_SHAPE(2, 3), 1, 0);
    fx_tensor *b = tu_randn(rng, 2, TU_SHAPE(3, 3), 1, 0);
    fx_tensor *c = tu_randn(rng, 3, TU_SHAPE(2, 3, 1), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_null(fx_concat(ctx, 2, (fx_tensor *[]){ a, b }, 1));
    assert_non_null(strstr(fx_ctx_error(ctx), "[3,3]")); /* names both shapes */
    assert_non_null(strstr(fx_ctx_error(ctx), "[2,3]"));
    expect_fail(ctx, NULL, FX_ERR_SHAPE, "concat");
    expect_fail(ctx, fx_concat(ctx, 2, (fx_tensor *[]){ a, c }, 0), FX_ERR_SHAPE, "concat");
    expect_fail(ctx, fx_concat(ctx, 2, (fx_tensor *[]){ a, b }, 2), FX_ERR_AXIS, "concat");
    expect_fail(ctx, fx_concat(ctx, 0, (fx_tensor *[]){ a }, 0), FX_ERR_ARG, "concat");
    expect_fail(ctx, fx_concat(ctx, 1, NULL, 0), FX_ERR_ARG, "concat");
    int32_t iv[6] = { 0 };
    fx_tensor *ints = fx_tensor_from_host(ctx, FX_I32, 2, TU_SHAPE(2, 3), iv);
    expect_fail(ctx, fx_concat(ctx, 2, (fx_tensor *[]){ a, ints }, 0), FX_ERR_DTYPE, "concat");
    assert_null(fx_concat(ctx, 2, (fx_tensor *[]){ a, NULL }, 0));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    fx_ctx_free(ctx);
    fx_tensor_free(a);
    fx_tensor_free(b);
    fx_tensor_free(c);
    fx_rng_free(rng);
}

/* ----------------------------------------------------------------- slice */

typedef struct {
    int axis;
    int64_t start, end, step;
} slice_case;

static fx_tensor *slice_op(fx_ctx *ctx, fx_tensor **in, void *arg)
{
    slice_case *c = arg;
    return fx_slice(ctx, in[0], c->axis, c->start, c->end, c->step);
}

/* The indices Python's x[start:end:step] picks from size, written out
 * independently of the op: walk i from the normalised start. */
static int python_slice(int64_t size, int64_t start, int64_t end, int64_t step, int64_t *out)
{
    if (start < 0)
        start = start + size < 0 ? 0 : start + size;
    if (end < 0)
        end = end + size < 0 ? 0 : end + size;
    int n = 0;
    for (int64_t i = start; i < end && i < size; i += step)
        out[n++] = i;
    return n;
}

static void check_slice(fx_rng *rng, slice_case c)
{
    fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(3, 7, 2), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = slice_op(ctx, &x, &c);
    if (!y)
        fail_msg("slice: %s", fx_ctx_error(ctx));
    int a = c.axis < 0 ? c.axis + 3 : c.axis;
    int64_t pick[16] = { 0 };
    int n = python_slice(x->shape[a], c.start, c.end, c.step, pick);
    int64_t want[3] = { 3, 7, 2 };
    want[a] = n;
    assert_shape(y, 3, want);
    float *xv = tu_values(x), *yv = tu_values(y);
    for (int64_t i = 0; i < fx_tensor_numel(y); i++) {
        int64_t cc[3];
        tu_coords_of(3, want, i, cc);
        cc[a] = pick[cc[a]];
        assert_true(yv[i] == xv[tu_offset_of(3, x->shape, cc)]);
    }
    free(xv);
    free(yv);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
}

static void test_slice(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(8);
    check_slice(rng, (slice_case){ 1, 1, 6, 2 });    /* step 2 */
    check_slice(rng, (slice_case){ 1, -6, -1, 2 });  /* negative bounds */
    check_slice(rng, (slice_case){ -2, -100, 100, 3 }); /* clamped */
    check_slice(rng, (slice_case){ 0, 1, 3, 1 });
    check_slice(rng, (slice_case){ 2, -1, 2, 1 });
    check_slice(rng, (slice_case){ 1, 5, 2, 1 });   /* empty */
    check_slice(rng, (slice_case){ 1, 7, 9, 1 });   /* empty, past the end */
    check_slice(rng, (slice_case){ 1, 0, 7, 10 });  /* one element */

    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    expect_fail(ctx, fx_slice(ctx, x, 1, 0, 4, 0), FX_ERR_ARG, "slice");
    expect_fail(ctx, fx_slice(ctx, x, 1, 0, 4, -1), FX_ERR_ARG, "slice");
    expect_fail(ctx, fx_slice(ctx, x, 2, 0, 4, 1), FX_ERR_AXIS, "slice");
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

/* ----------------------------------------------------------------- split */

static void test_split(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(9);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(4, 6), 1, 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *p[3];
    assert_int_equal(fx_split(ctx, x, 1, 3, TU_SHAPE(1, 2, 3), p), FX_OK);
    float *xv = tu_values(x);
    int64_t off = 0;
    for (int t = 0; t < 3; t++) {
        int64_t w = t + 1;
        assert_shape(p[t], 2, TU_SHAPE(4, w));
        float *pv = tu_values(p[t]);
        for (int64_t i = 0; i < 4; i++)
            for (int64_t j = 0; j < w; j++)
                assert_true(pv[i * w + j] == xv[i * 6 + off + j]);
        free(pv);
        off += w;
    }
    free(xv);
    /* An empty part is fine. */
    assert_int_equal(fx_split(ctx, x, 0, 3, TU_SHAPE(4, 0, 0), p), FX_OK);
    assert_shape(p[1], 2, TU_SHAPE(0, 6));

    assert_int_equal(fx_split(ctx, x, 1, 2, TU_SHAPE(2, 3), p), FX_ERR_SHAPE);
    assert_null(p[0]);
    assert_null(p[1]);
    assert_non_null(strstr(fx_ctx_error(ctx), "split"));
    fx_ctx_clear_error(ctx);
    assert_int_equal(fx_split(ctx, x, 1, 2, TU_SHAPE(8, -2), p), FX_ERR_SHAPE);
    fx_ctx_clear_error(ctx);
    assert_int_equal(fx_split(ctx, x, 1, 2, TU_SHAPE(INT64_MAX, 7), p), FX_ERR_SHAPE);
    fx_ctx_clear_error(ctx);
    assert_int_equal(fx_split(ctx, x, 2, 1, TU_SHAPE(4), p), FX_ERR_AXIS);
    fx_ctx_clear_error(ctx);
    assert_int_equal(fx_split(ctx, x, 0, 0, TU_SHAPE(4), p), FX_ERR_ARG);
    fx_ctx_clear_error(ctx);
    assert_int_equal(fx_split(ctx, NULL, 0, 1, TU_SHAPE(4), p), FX_ERR_ARG);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

/* fx_dims_str: "[]" for no dims, negative dims as written, every buffer
 * size from 1 up giving a NUL-terminated prefix of the full text and
 * nothing written past n, n = 0 writing nothing, and the documented bound
 * (FX_MAX_DIMS * 21 + 2 bytes) holding FX_MAX_DIMS dims of INT64_MIN. */
static void test_dims_str(void **state)
{
    (void)state;
    char buf[FX_MAX_DIMS * 21 + 2 + 8];
    assert_ptr_equal(fx_dims_str(0, NULL, buf, sizeof buf), buf);
    assert_string_equal(buf, "[]");
    const int64_t dims[3] = { 2, -1, 3 };
    assert_string_equal(fx_dims_str(3, dims, buf, sizeof buf), "[2,-1,3]");
    const char *full = "[2,-1,3]";
    for (size_t n = 1; n <= strlen(full) + 1; n++) {
        memset(buf, 'x', sizeof buf);
        assert_ptr_equal(fx_dims_str(3, dims, buf, n), buf);
        if (strlen(buf) != n - 1 || strncmp(buf, full, n - 1) != 0)
            fail_msg("n = %zu: '%s', want the first %zu bytes of '%s'", n, buf, n - 1, full);
        for (size_t i = n; i < sizeof buf; i++)
            if (buf[i] != 'x')
                fail_msg("n = %zu: byte %zu written", n, i);
    }
    memset(buf, 'x', sizeof buf);
    assert_ptr_equal(fx_dims_str(3, dims, buf, 0), buf);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 'x');

    /* The widest dims fit the documented size exactly untruncated. */
    int64_t wide[FX_MAX_DIMS];
    char want[sizeof buf] = "[";
    for (int i = 0; i < FX_MAX_DIMS; i++) {
        wide[i] = INT64_MIN;
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "",
                 (long long)INT64_MIN);
    }
    strcat(want, "]");
    memset(buf, 'x', sizeof buf);
    fx_dims_str(FX_MAX_DIMS, wide, buf, FX_MAX_DIMS * 21 + 2);
    assert_string_equal(buf, want);
    assert_true(strlen(want) + 1 <= FX_MAX_DIMS * 21 + 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reshape),
        cmocka_unit_test(test_reshape_bad),
        cmocka_unit_test(test_permute),
        cmocka_unit_test(test_permute_bad),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_concat_bad),
        cmocka_unit_test(test_slice),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_dims_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
