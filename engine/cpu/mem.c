/* mem.c - CPU memory: allocation, host copies, strided copies, fills. */
#include "cpu.h"

#include <stdlib.h>

void *cpu_alloc(fx_device dev, size_t nbytes)
{
    (void)dev;
    size_t n = (nbytes + 63) & ~(size_t)63;
    if (n < nbytes)
        return NULL;
    return aligned_alloc(64, n ? n : 64);
}

void cpu_free(fx_device dev, void *p)
{
    (void)dev;
    free(p);
}

/* Copies between two element layouts of one shape, element size es. */
static void strided_copy(void *dst, const int64_t *dstrides, const void *src,
                         const int64_t *sstrides, int ndim, const int64_t *shape, size_t es,
                         bool accumulate)
{
    int64_t one = 1, zero_shape = 1;
    const int64_t *strides[2] = { dstrides, sstrides };
    if (ndim == 0) { /* a scalar */
        strides[0] = strides[1] = &one;
        shape = &zero_shape;
        ndim = 1;
    }
    fx_iter it;
    fx_iter_init(&it, ndim, shape, 2, strides);
    if (it.done)
        return;
    do {
        char *d = (char *)dst + it.off[0] * (int64_t)es;
        const char *s = (const char *)src + it.off[1] * (int64_t)es;
        int64_t sd = it.step[0] * (int64_t)es, ss = it.step[1] * (int64_t)es;
        if (accumulate) {
            for (int64_t i = 0; i < it.inner; i++)
                *(float *)(d + i * sd) += *(const float *)(s + i * ss);
        } else if (sd == (int64_t)es && ss == (int64_t)es) {
            memcpy(d, s, (size_t)it.inner * es);
        } else {
            for (int64_t i = 0; i < it.inner; i++)
                memcpy(d + i * sd, s + i * ss, es);
        }
    } while (fx_iter_next(&it));
}

void cpu_to_host(const fx_tensor *t, void *dst)
{
    size_t es = fx_dtype_size(t->dtype);
    if (fx_tensor_is_contiguous(t)) {
        memcpy(dst, fx_data(t), (size_t)fx_tensor_numel(t) * es);
        return;
    }
    int64_t cs[FX_MAX_DIMS];
    fx__contiguous_strides(t->ndim, t->shape, cs);
    strided_copy(dst, cs, fx_data(t), t->strides, t->ndim, t->shape, es, false);
}

void cpu_from_host(fx_tensor *t, const void *src)
{
    size_t es = fx_dtype_size(t->dtype);
    if (fx_tensor_is_contiguous(t)) {
        memcpy(fx_data(t), src, (size_t)fx_tensor_numel(t) * es);
        return;
    }
    int64_t cs[FX_MAX_DIMS];
    fx__contiguous_strides(t->ndim, t->shape, cs);
    strided_copy(fx_data(t), t->strides, src, cs, t->ndim, t->shape, es, false);
}

void cpu_copy(fx_tensor *dst, const fx_tensor *src, bool accumulate)
{
    size_t es = fx_dtype_size(src->dtype);
    if (!accumulate && fx_tensor_is_contiguous(dst) && fx_tensor_is_contiguous(src)) {
        memcpy(fx_data(dst), fx_data(src), (size_t)fx_tensor_numel(src) * es);
        return;
    }
    strided_copy(fx_data(dst), dst->strides, fx_data(src), src->strides, src->ndim, src->shape,
                 es, accumulate);
}

void cpu_fill(fx_tensor *t, double v)
{
    int64_t n = fx_tensor_numel(t);
    void *p = fx_data(t);
    switch (t->dtype) {
    case FX_F32: {
        float *f = p, fv = (float)v;
        if (fv == 0.0f && !signbit(fv)) {
            memset(f, 0, (size_t)n * sizeof *f);
            break;
        }
        for (int64_t i = 0; i < n; i++)
            f[i] = fv;
        break;
    }
    case FX_I32: {
        int32_t *q = p;
        for (int64_t i = 0; i < n; i++)
            q[i] = (int32_t)v;
        break;
    }
    case FX_I64: {
        int64_t *q = p;
        for (int64_t i = 0; i < n; i++)
            q[i] = (int64_t)v;
        break;
    }
    default: /* f16/bf16: only zero fills are defined until they get kernels */
        memset(p, 0, (size_t)n * fx_dtype_size(t->dtype));
        break;
    }
}
