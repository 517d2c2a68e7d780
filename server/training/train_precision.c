/*
 * train_precision.c - JobSpec.precision (docs/training.md, `precision`):
 * its value and the devices bf16 needs (CPU), for the submission checks
 * (jobs.c, before and after the job's device is resolved) and the plan
 * (fxt_validate). A module of its own so that the queue's tests, which
 * stand in for the plan and the run, still link the real check.
 */
#include "training/train.h"

#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"

/* spec.precision's value (*out), and the devices the spec names: bf16 runs
 * on CPU devices only. A device or placement that is not a device name is
 * check_world's to report; the daemon's default device ("") is checked once
 * resolved (dev). */
int fxt_check_precision(const Fluxion__V1__JobSpec *spec, const fx_device *dev,
                        fx_precision *out, char *err, size_t errlen)
{
    const char *s = spec->precision ? spec->precision : "";
    fx_precision pr = FX_PREC_F32;
    if (*s && !fx_precision_parse(s, &pr))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "precision: '%.64s' is not fp32 or bf16 (\"\": fp32)", s);
    if (out)
        *out = pr;
    if (pr == FX_PREC_F32)
        return 0;
    char name[32];
    if (dev && !spec->n_placement && dev->type != FX_DEV_CPU)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "precision: %s runs on CPU devices only, and the job's device is %s "
                        "(set device cpu, or precision fp32)", fx_precision_name(pr),
                        fx_device_str(*dev, name, sizeof name));
    size_t nd = spec->n_placement ? spec->n_placement : 1;
    for (size_t i = 0; i < nd; i++) {
        const char *d = spec->n_placement ? spec->placement[i] : spec->device;
        const char *slash = d && spec->n_placement ? strchr(d, '/') : NULL;
        const char *dn = slash ? slash + 1 : d;
        fx_device fd = {.type = FX_DEV_CUDA}; /* "gpu" */
        if (!dn || !*dn || (strcmp(dn, "gpu") != 0 && !fx_device_parse(dn, &fd)))
            continue;
        if (fd.type != FX_DEV_CPU)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "precision: %s runs on CPU devices only, and %s is '%.64s' "
                            "(use cpu, or precision fp32)", fx_precision_name(pr),
                            spec->n_placement ? "a placement" : "device", d);
    }
    return 0;
}
