/* devices.c - see devices.h. */
#include "serving/devices.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"

void fxsv_devices_default(fxsv_devices *out)
{
    memset(out, 0, sizeof *out);
    out->dev[out->n++] = fx_cpu();
    int ncuda = fx_device_count(FX_DEV_CUDA);
    for (int i = 0; i < ncuda && out->n < FXSV_MAX_DEVICES; i++)
        out->dev[out->n++] = (fx_device){ FX_DEV_CUDA, i };
}

static const char *list_str(const fx_device *devs, int n, char *buf, size_t len)
{
    if (!len)
        return buf;
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        char one[32];
        size_t at = strlen(buf);
        snprintf(buf + at, len - at, "%s%s", i ? ", " : "", fx_device_str(devs[i], one, sizeof one));
    }
    return buf;
}

const char *fxsv_devices_str(const fxsv_devices *d, char *buf, size_t n)
{
    return list_str(d->dev, d->n, buf, n);
}

const char *fxsv_devices_present_str(char *buf, size_t n)
{
    fxsv_devices all;
    fxsv_devices_default(&all);
    return fxsv_devices_str(&all, buf, n);
}

bool fxsv_devices_has(const fxsv_devices *d, fx_device dev)
{
    for (int i = 0; i < d->n; i++)
        if (d->dev[i].type == dev.type && d->dev[i].index == dev.index)
            return true;
    return false;
}

int fxsv_devices_parse(const char *list, fxsv_devices *out, char *err, size_t errlen)
{
    if (!list || !*list) {
        fxsv_devices_default(out);
        return 0;
    }
    memset(out, 0, sizeof *out);
    char present[256];
    fxsv_devices_present_str(present, sizeof present);
    const char *p = list;
    for (;;) {
        size_t len = strcspn(p, ",");
        char item[64];
        if (len == 0 || len >= sizeof item) {
            snprintf(err, errlen, "'%s': %s (give devices like cpu,cuda:0; present: %s)", list,
                     len ? "an entry is too long" : "an empty entry", present);
            return FXS_INVALID_ARGUMENT;
        }
        memcpy(item, p, len);
        item[len] = 0;
        fx_device dev;
        if (!fx_device_parse(item, &dev)) {
            snprintf(err, errlen, "'%s' is not a device (cpu or cuda:N; present: %s)", item,
                     present);
            return FXS_INVALID_ARGUMENT;
        }
        char name[32];
        fx_device_str(dev, name, sizeof name);
        if (!fx_device_available(dev)) {
            snprintf(err, errlen, "%s is not available on this machine (present: %s)", name,
                     present);
            return FXS_INVALID_ARGUMENT;
        }
        if (fxsv_devices_has(out, dev)) {
            snprintf(err, errlen, "%s is listed twice", name);
            return FXS_INVALID_ARGUMENT;
        }
        if (out->n == FXSV_MAX_DEVICES) {
            snprintf(err, errlen, "more than %d devices", FXSV_MAX_DEVICES);
            return FXS_INVALID_ARGUMENT;
        }
        out->dev[out->n++] = dev;
        if (!p[len])
            return 0;
        p += len + 1;
    }
}

int fxsv_devices_most_free(const size_t *free_bytes, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (best < 0 || free_bytes[i] > free_bytes[best])
            best = i;
    return best;
}

/* "gpu": the enabled CUDA device with the most free memory. */
static int pick_gpu(const fxsv_devices *d, const char *what, const char *enabled,
                    fx_device *out, char *err, size_t errlen)
{
    fx_device gpus[FXSV_MAX_DEVICES];
    size_t freeb[FXSV_MAX_DEVICES];
    int n = 0;
    for (int i = 0; d && i < d->n; i++) {
        fx_device_info info;
        if (d->dev[i].type != FX_DEV_CUDA || fx_device_get_info(d->dev[i], &info) != FX_OK)
            continue;
        gpus[n] = d->dev[i];
        freeb[n++] = info.free_bytes;
    }
    int k = fxsv_devices_most_free(freeb, n);
    if (k < 0) {
        snprintf(err, errlen, "%s: 'gpu' asks for a GPU, and this server has none enabled "
                 "(enabled: %s)", what, enabled);
        return FXS_FAILED_PRECONDITION;
    }
    *out = gpus[k];
    return 0;
}

int fxsv_devices_resolve(const fxsv_devices *d, const char *request, const char *what,
                        fx_device *out, char *err, size_t errlen)
{
    fxsv_devices cpu_only = { .n = 1, .dev = { fx_cpu() } };
    if (!d)
        d = &cpu_only;
    char enabled[256];
    fxsv_devices_str(d, enabled, sizeof enabled);
    if (!request || !*request) {
        *out = d->dev[0];
        return 0;
    }
    if (strcmp(request, "gpu") == 0)
        return pick_gpu(d, what, enabled, out, err, errlen);
    fx_device dev;
    if (!fx_device_parse(request, &dev)) {
        snprintf(err, errlen, "%s: '%s' is not a device (cpu, cuda:N or gpu; enabled: %s)", what,
                 request, enabled);
        return FXS_INVALID_ARGUMENT;
    }
    if (!fxsv_devices_has(d, dev)) {
        char name[32];
        snprintf(err, errlen, "%s: %s is not %s on this server (enabled: %s)", what,
                 fx_device_str(dev, name, sizeof name),
                 fx_device_available(dev) ? "enabled" : "present", enabled);
        return FXS_FAILED_PRECONDITION;
    }
    *out = dev;
    return 0;
}

static uint64_t tensor_bytes(const fx_tensor *t)
{
    return t ? (uint64_t)fx_tensor_numel(t) * fx_dtype_size(t->dtype) : 0;
}

uint64_t fxsv_params_bytes(const fx_params *p)
{
    uint64_t n = 0;
    for (int i = 0; p && i < p->count; i++) {
        const fx_tensor *t = p->items[i].tensor;
        n += tensor_bytes(t) + (t ? tensor_bytes(t->grad) : 0);
    }
    return n;
}

int fxsv_check_memory_limit(const char *what, fx_device dev, uint64_t used, uint64_t limit,
                           char *err, size_t errlen)
{
    if (!limit || used <= limit)
        return 0;
    char name[32];
    snprintf(err, errlen,
             "%s on %s: needs %" PRIu64 " bytes (%.1f MiB), over its memory limit of %" PRIu64
             " bytes (%.1f MiB)",
             what, fx_device_str(dev, name, sizeof name), used, (double)used / 1048576.0, limit,
             (double)limit / 1048576.0);
    return FXS_RESOURCE_EXHAUSTED;
}
