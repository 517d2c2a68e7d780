/* tensor.c - tensor metadata, persistent tensors and host copies. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *fx_status_name(fx_status s)
{
    static const char *names[] = { "ok", "shape error", "axis error", "dtype error",
                                   "device error", "value error", "bad argument",
                                   "state error", "out of memory", "I/O error",
                                   "format error" };
    return (unsigned)s < sizeof names / sizeof *names ? names[s] : "unknown status";
}

size_t fx_dtype_size(fx_dtype dt)
{
    switch (dt) {
    case FX_F32: case FX_I32: return 4;
    case FX_F16: case FX_BF16: return 2;
    case FX_I64: return 8;
    default: return 0;
    }
}

const char *fx_dtype_name(fx_dtype dt)
{
    switch (dt) {
    case FX_F32: return "f32";
    case FX_F16: return "f16";
    case FX_BF16: return "bf16";
    case FX_I32: return "i32";
    case FX_I64: return "i64";
    default: return "invalid";
    }
}

const char *fx_device_str(fx_device dev, char *buf, size_t n)
{
    if (dev.type == FX_DEV_CPU)
        snprintf(buf, n, "cpu");
    else
        snprintf(buf, n, "cuda:%d", dev.index);
    return buf;
}

bool fx_device_available(fx_device dev)
{
    const fx_backend *be = fx__backend_for(dev);
    return be && be->available(dev.index);
}

int64_t fx__shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i])
            return -1;
        n *= shape[i];
    }
    return n;
}

int64_t fx_tensor_numel(const fx_tensor *t) { return fx__shape_numel(t->ndim, t->shape); }

void fx__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

bool fx_tensor_is_contiguous(const fx_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != s)
            return false;
        s *= t->shape[i];
    }
    return true;
}

bool fx_tensor_same_shape(const fx_tensor *a, const fx_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

const char *fx_dims_str(int ndim, const int64_t *dims, char *buf, size_t n)
{
    size_t k = 0;
    if (n == 0)
        return buf;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)dims[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

const char *fx_shape_str(const fx_tensor *t, char *buf, size_t n)
{
    return fx_dims_str(t->ndim, t->shape, buf, n);
}

/* Fills the metadata of a contiguous tensor; false on a bad shape. */
static bool init_meta(fx_tensor *t, fx_device dev, fx_dtype dt, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > FX_MAX_DIMS || fx_dtype_size(dt) == 0)
        return false;
    if (ndim > 0 && !shape)
        return false;
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    if (fx__shape_numel(ndim, shape) < 0)
        return false;
    fx__contiguous_strides(ndim, shape, t->strides);
    t->device = dev;
    return true;
}

static size_t tensor_bytes(const fx_tensor *t)
{
    int64_t n = fx_tensor_numel(t);
    size_t es = fx_dtype_size(t->dtype);
    if (n < 0 || (uint64_t)n > SIZE_MAX / es)
        return SIZE_MAX;
    return (size_t)n * es;
}

fx_tensor *fx_tensor_create(fx_device dev, fx_dtype dt, int ndim, const int64_t *shape)
{
    const fx_backend *be = fx__backend_for(dev);
    if (!be || !be->available(dev.index))
        return NULL;
    fx_tensor *t = malloc(sizeof *t);
    fx_storage *st = malloc(sizeof *st);
    if (!t || !st || !init_meta(t, dev, dt, ndim, shape))
        goto fail;
    size_t nbytes = tensor_bytes(t);
    if (nbytes == SIZE_MAX)
        goto fail;
    st->ptr = be->mem->alloc(dev, nbytes ? nbytes : 1);
    if (!st->ptr)
        goto fail;
    st->nbytes = nbytes;
    st->device = dev;
    st->owned = true;
    t->storage = st;
    t->flags = FX_TENSOR_PERSISTENT;
    be->mem->fill(t, 0.0);
    return t;
fail:
    free(t);
    free(st);
    return NULL;
}

void fx_tensor_free(fx_tensor *t)
{
    if (!t)
        return;
    if (!(t->flags & FX_TENSOR_PERSISTENT))
        return; /* arena tensors die with fx_ctx_reset */
    fx_tensor_free(t->grad);
    if (t->storage && t->storage->owned) {
        fx_be(t)->mem->free(t->device, t->storage->ptr);
        free(t->storage);
    }
    free(t);
}

fx_status fx_tensor_set_requires_grad(fx_tensor *t, bool on)
{
    if (!t)
        return FX_ERR_ARG;
    if (!on) {
        t->flags &= ~FX_TENSOR_REQUIRES_GRAD;
        return FX_OK;
    }
    if (t->dtype != FX_F32)
        return FX_ERR_DTYPE;
    if (!(t->flags & FX_TENSOR_PERSISTENT))
        return FX_ERR_STATE;
    if (!t->grad) {
        t->grad = fx_tensor_create(t->device, t->dtype, t->ndim, t->shape);
        if (!t->grad)
            return FX_ERR_NOMEM;
    }
    t->flags |= FX_TENSOR_REQUIRES_GRAD;
    return FX_OK;
}

fx_status fx_tensor_set_grad_buffer(fx_tensor *t, void *buf)
{
    if (!t)
        return FX_ERR_ARG;
    if (!(t->flags & FX_TENSOR_PERSISTENT) || !(t->flags & FX_TENSOR_REQUIRES_GRAD) || !t->grad)
        return FX_ERR_STATE;
    fx_tensor *g;
    if (buf) {
        /* the tensor and its storage record in one block: fx_tensor_free
         * frees the block and leaves the (not owned) memory alone */
        g = malloc(sizeof *g + sizeof(fx_storage));
        if (!g || !init_meta(g, t->device, t->dtype, t->ndim, t->shape)) {
            free(g);
            return FX_ERR_NOMEM;
        }
        fx_storage *st = (fx_storage *)(g + 1);
        st->ptr = buf;
        st->nbytes = tensor_bytes(g);
        st->device = t->device;
        st->owned = false;
        g->storage = st;
        g->flags = FX_TENSOR_PERSISTENT;
    } else {
        g = fx_tensor_create(t->device, t->dtype, t->ndim, t->shape);
        if (!g)
            return FX_ERR_NOMEM;
    }
    fx_status s = fx_tensor_copy(g, t->grad);
    if (s != FX_OK) {
        fx_tensor_free(g);
        return s;
    }
    fx_tensor_free(t->grad);
    t->grad = g;
    return FX_OK;
}

fx_status fx_tensor_to_host(const fx_tensor *t, void *dst, size_t nbytes)
{
    if (!t || (!dst && nbytes))
        return FX_ERR_ARG;
    if (tensor_bytes(t) != nbytes)
        return FX_ERR_SHAPE;
    if (nbytes)
        fx_be(t)->mem->to_host(t, dst);
    return FX_OK;
}

fx_status fx_tensor_copy_from_host(fx_tensor *t, const void *src, size_t nbytes)
{
    if (!t || (!src && nbytes))
        return FX_ERR_ARG;
    if (tensor_bytes(t) != nbytes)
        return FX_ERR_SHAPE;
    if (nbytes)
        fx_be(t)->mem->from_host(t, src);
    return FX_OK;
}

fx_status fx_tensor_copy(fx_tensor *dst, const fx_tensor *src)
{
    if (!dst || !src)
        return FX_ERR_ARG;
    if (!fx_tensor_same_shape(dst, src))
        return FX_ERR_SHAPE;
    if (dst->dtype != src->dtype)
        return FX_ERR_DTYPE;
    if (dst->device.type == src->device.type && dst->device.index == src->device.index) {
        fx_be(dst)->mem->copy(dst, src, false);
        return FX_OK;
    }
    /* Across devices: through a host buffer. Not a hot path. */
    size_t n = tensor_bytes(src);
    void *tmp = malloc(n ? n : 1);
    if (!tmp)
        return FX_ERR_NOMEM;
    fx_be(src)->mem->to_host(src, tmp);
    fx_be(dst)->mem->from_host(dst, tmp);
    free(tmp);
    return FX_OK;
}

fx_status fx_tensor_fill(fx_tensor *t, double value)
{
    if (!t)
        return FX_ERR_ARG;
    if (!fx_tensor_is_contiguous(t))
        return FX_ERR_ARG;
    fx_be(t)->mem->fill(t, value);
    return FX_OK;
}

double fx_tensor_item(const fx_tensor *t)
{
    if (!t || fx_tensor_numel(t) != 1)
        return NAN;
    union { float f; double d; int32_t i; int64_t l; uint16_t h; } u;
    fx_be(t)->mem->to_host(t, &u);
    switch (t->dtype) {
    case FX_F32: return u.f;
    case FX_I32: return u.i;
    case FX_I64: return (double)u.l;
    default: return NAN;
    }
}

/* ---------------------------------------------------------- arena tensors */

fx_tensor *fx_tensor_new(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape)
{
    if (!ctx)
        return NULL;
    fx__ctx_enter(ctx);
    fx_tensor *t = fx__arena_alloc(&ctx->meta, sizeof *t + sizeof(fx_storage));
    if (!t)
        return fx_ctx_fail(ctx, FX_ERR_NOMEM, "out of memory for a tensor");
    if (!init_meta(t, ctx->dev, dt, ndim, shape))
        return fx_ctx_fail(ctx, FX_ERR_SHAPE, "bad tensor shape (ndim %d)", ndim);
    size_t nbytes = tensor_bytes(t);
    if (nbytes == SIZE_MAX)
        return fx_ctx_fail(ctx, FX_ERR_SHAPE, "tensor size overflows");
    fx_storage *st = (fx_storage *)(t + 1);
    st->ptr = fx__arena_alloc(&ctx->data, nbytes);
    if (!st->ptr) {
        char b[96];
        char d[24];
        const char *why = ctx->dev.type == FX_DEV_CPU ? "" : fx_device_last_error();
        return fx_ctx_fail(ctx, FX_ERR_NOMEM,
                           "out of memory on %s for a tensor of shape %s (%zu bytes)%s%s",
                           fx_device_str(ctx->dev, d, sizeof d), fx_shape_str(t, b, sizeof b),
                           nbytes, *why ? ": " : "", why);
    }
    st->nbytes = nbytes;
    st->device = ctx->dev;
    st->owned = false;
    t->storage = st;
    return t;
}

fx_tensor *fx_zeros(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape)
{
    return fx_full(ctx, dt, ndim, shape, 0.0);
}

fx_tensor *fx_full(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape, double v)
{
    fx_tensor *t = fx_tensor_new(ctx, dt, ndim, shape);
    if (t)
        ctx->be->mem->fill(t, v);
    return t;
}

fx_tensor *fx_tensor_from_host(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape,
                               const void *data)
{
    fx_tensor *t = fx_tensor_new(ctx, dt, ndim, shape);
    if (t && tensor_bytes(t))
        ctx->be->mem->from_host(t, data);
    return t;
}

fx_tensor *fx__tensor_new_like(fx_ctx *ctx, const fx_tensor *x)
{
    return fx_tensor_new(ctx, x->dtype, x->ndim, x->shape);
}

fx_tensor *fx__view(fx_ctx *ctx, const fx_tensor *x, int ndim, const int64_t *shape,
                    const int64_t *strides, int64_t offset)
{
    fx__ctx_enter(ctx);
    fx_tensor *t = fx__arena_alloc(&ctx->meta, sizeof *t);
    if (!t)
        return fx_ctx_fail(ctx, FX_ERR_NOMEM, "out of memory for a view");
    memset(t, 0, sizeof *t);
    t->dtype = x->dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->strides[i] = strides[i];
    }
    t->offset = offset;
    t->device = x->device;
    t->storage = x->storage;
    return t;
}

fx_tensor *fx__expand_rank(fx_ctx *ctx, const fx_tensor *t, int ndim)
{
    int64_t shape[FX_MAX_DIMS], strides[FX_MAX_DIMS];
    int pad = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        shape[i] = i < pad ? 1 : t->shape[i - pad];
        strides[i] = i < pad ? 0 : t->strides[i - pad];
    }
    return fx__view(ctx, t, ndim, shape, strides, t->offset);
}

bool fx__broadcast_shape(const fx_tensor *a, const fx_tensor *b, int *ndim, int64_t *shape)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return false;
        shape[i] = da == 1 ? db : da;
    }
    *ndim = n;
    return true;
}
