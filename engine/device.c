/* device.c - device enumeration, memory limits and statistics, moving
 * persistent tensors and layers between devices. CUDA specifics live in
 * engine/cuda (cuda_api.h); without a CUDA build only the CPU exists. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef FX_HAVE_CUDA
#include "cuda/cuda_api.h"
#endif

int fx_device_count(fx_device_type type)
{
    switch (type) {
    case FX_DEV_CPU: return 1;
#ifdef FX_HAVE_CUDA
    case FX_DEV_CUDA: return fx__cuda_device_count(NULL);
#endif
    default: return 0;
    }
}

bool fx_device_parse(const char *text, fx_device *out)
{
    if (!text || !out)
        return false;
    if (strcmp(text, "cpu") == 0) {
        *out = fx_cpu();
        return true;
    }
    if (strncmp(text, "cuda", 4) != 0)
        return false;
    const char *p = text + 4;
    long idx = 0;
    if (*p == ':') {
        char *end;
        if (p[1] < '0' || p[1] > '9')
            return false;
        idx = strtol(p + 1, &end, 10);
        if (*end || idx > 1024)
            return false;
    } else if (*p) {
        return false;
    }
    *out = (fx_device){ FX_DEV_CUDA, (int)idx };
    return true;
}

fx_status fx_device_get_info(fx_device dev, fx_device_info *out)
{
    if (!out)
        return FX_ERR_ARG;
    memset(out, 0, sizeof *out);
    out->device = dev;
    if (dev.type == FX_DEV_CPU) {
        if (dev.index != 0)
            return FX_ERR_DEVICE;
        snprintf(out->name, sizeof out->name, "cpu");
        long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES),
             psz = sysconf(_SC_PAGESIZE);
        if (pages > 0 && psz > 0) {
            out->total_bytes = (size_t)pages * (size_t)psz;
            out->free_bytes = avail > 0 ? (size_t)avail * (size_t)psz : 0;
        }
        return FX_OK;
    }
#ifdef FX_HAVE_CUDA
    if (dev.type == FX_DEV_CUDA)
        return fx__cuda_device_info(dev.index, out);
#endif
    return FX_ERR_DEVICE;
}

fx_status fx_device_set_memory_limit(fx_device dev, size_t bytes)
{
#ifdef FX_HAVE_CUDA
    if (dev.type == FX_DEV_CUDA)
        return fx__cuda_set_memory_limit(dev.index, bytes);
#endif
    (void)bytes;
    return FX_ERR_DEVICE;
}

fx_status fx_device_mem_stats_get(fx_device dev, fx_device_mem_stats *out)
{
    if (!out)
        return FX_ERR_ARG;
    memset(out, 0, sizeof *out);
#ifdef FX_HAVE_CUDA
    if (dev.type == FX_DEV_CUDA)
        return fx__cuda_mem_stats(dev.index, out);
#endif
    return FX_ERR_DEVICE;
}

fx_status fx_device_sync(fx_device dev, char *err, size_t n)
{
    if (err && n)
        err[0] = 0;
    if (dev.type == FX_DEV_CPU)
        return dev.index == 0 ? FX_OK : FX_ERR_DEVICE;
#ifdef FX_HAVE_CUDA
    if (dev.type == FX_DEV_CUDA)
        return fx__cuda_sync(dev.index, err, n);
#endif
    return FX_ERR_DEVICE;
}

const char *fx_device_last_error(void)
{
#ifdef FX_HAVE_CUDA
    return fx__cuda_alloc_error();
#else
    return "";
#endif
}

void fx_set_tf32(bool on)
{
#ifdef FX_HAVE_CUDA
    fx__cuda_set_tf32(on);
#else
    (void)on;
#endif
}

bool fx_get_tf32(void)
{
#ifdef FX_HAVE_CUDA
    return fx__cuda_tf32();
#else
    return false;
#endif
}

fx_tensor *fx_tensor_to_device(const fx_tensor *t, fx_device dev)
{
    if (!t)
        return NULL;
    fx_tensor *c = fx_tensor_create(dev, t->dtype, t->ndim, t->shape);
    if (c && fx_tensor_copy(c, t) != FX_OK) {
        fx_tensor_free(c);
        return NULL;
    }
    return c;
}

/* Gives persistent tensor t (and its gradient) storage on dev, in place, so
 * layers that hold the pointer keep working. */
static fx_status move_one(fx_tensor *t, fx_device dev)
{
    if (!(t->flags & FX_TENSOR_PERSISTENT) || !t->storage || !t->storage->owned)
        return FX_ERR_STATE;
    if (t->device.type == dev.type && t->device.index == dev.index)
        return FX_OK;
    fx_tensor *c = fx_tensor_to_device(t, dev);
    if (!c)
        return FX_ERR_NOMEM;
    if (t->grad) {
        fx_status s = move_one(t->grad, dev);
        if (s != FX_OK) {
            fx_tensor_free(c);
            return s;
        }
    }
    /* Swap storages: c takes the old one and frees it. */
    fx_storage *old = t->storage;
    fx_device olddev = t->device;
    t->storage = c->storage;
    t->storage->version = old->version + 1; /* new memory: earlier packs are stale */
    t->device = dev;
    memcpy(t->strides, c->strides, sizeof t->strides);
    t->offset = 0;
    c->storage = old;
    c->device = olddev;
    fx_tensor_free(c);
    return FX_OK;
}

fx_status fx_tensor_move_to_device(fx_tensor *t, fx_device dev)
{
    if (!t)
        return FX_ERR_ARG;
    if (!fx_device_available(dev))
        return FX_ERR_DEVICE;
    return move_one(t, dev);
}

fx_status fx_layer_to_device(fx_layer *l, fx_device dev)
{
    if (!l)
        return FX_ERR_ARG;
    if (!fx_device_available(dev))
        return FX_ERR_DEVICE;
    fx_params ps;
    fx_params_init(&ps);
    fx_status s = fx_layer_collect_params(l, &ps);
    for (int i = 0; s == FX_OK && i < ps.count; i++)
        s = move_one(ps.items[i].tensor, dev);
    fx_params_clear(&ps);
    return s;
}
