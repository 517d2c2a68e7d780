/* testutil.c - see testutil.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "testutil.h"

#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static fx_tensor *make(fx_rng *rng, int ndim, const int64_t *shape, int kind, double a, double b)
{
    fx_tensor *t = fx_tensor_create(fx_cpu(), FX_F32, ndim, shape);
    assert_non_null(t);
    int64_t n = fx_tensor_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(kind ? a + (b - a) * fx_rng_uniform(rng) : fx_rng_normal(rng) * a + b);
    assert_int_equal(fx_tensor_copy_from_host(t, v, (size_t)n * sizeof(float)), FX_OK);
    free(v);
    assert_int_equal(fx_tensor_set_requires_grad(t, true), FX_OK);
    return t;
}

fx_tensor *tu_randn(fx_rng *rng, int ndim, const int64_t *shape, double scale, double shift)
{
    return make(rng, ndim, shape, 0, scale, shift);
}

fx_tensor *tu_uniform(fx_rng *rng, int ndim, const int64_t *shape, double lo, double hi)
{
    return make(rng, ndim, shape, 1, lo, hi);
}

fx_tensor *tu_from(fx_dtype dt, int ndim, const int64_t *shape, const void *data)
{
    fx_tensor *t = fx_tensor_create(fx_cpu(), dt, ndim, shape);
    assert_non_null(t);
    size_t nb = (size_t)fx_tensor_numel(t) * fx_dtype_size(dt);
    assert_int_equal(fx_tensor_copy_from_host(t, data, nb), FX_OK);
    return t;
}

float *tu_values(const fx_tensor *t)
{
    int64_t n = fx_tensor_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof(float));
    assert_int_equal(fx_tensor_to_host(t, v, (size_t)n * sizeof(float)), FX_OK);
    return v;
}

void tu_assert_close(const float *a, const float *b, int64_t n, double tol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - (double)b[i]) <= tol))
            fail_msg("element %lld: %.7g vs %.7g (tol %g)", (long long)i, a[i], b[i], tol);
}

void tu_free_all(int n, fx_tensor **ts)
{
    for (int i = 0; i < n; i++)
        fx_tensor_free(ts[i]);
}

int64_t tu_offset_of(int ndim, const int64_t *shape, const int64_t *c)
{
    int64_t off = 0;
    for (int d = 0; d < ndim; d++)
        off = off * shape[d] + c[d];
    return off;
}

void tu_coords_of(int ndim, const int64_t *shape, int64_t i, int64_t *c)
{
    for (int d = ndim - 1; d >= 0; d--) {
        c[d] = i % shape[d];
        i /= shape[d];
    }
}

char *tu_pathf(const char *fmt, ...)
{
    static _Thread_local char bufs[8][512]; /* per thread: tests call it from several */
    static _Thread_local int next;
    char *b = bufs[next++ % 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof bufs[0], fmt, ap);
    va_end(ap);
    return b;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

void tu_rmtree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
