/*
 * devices.h - the compute devices a daemon may use (`fluxiond --devices`)
 * and how requests name them: a training job's JobSpec.device, a served
 * model's "device" serving setting.
 *
 * Request text: "" (the first enabled device: cpu by default), "cpu",
 * "cuda:N" ("cuda" is cuda:0), or "gpu": the enabled CUDA device with the
 * most free memory now. A device that is enabled is also present (checked at
 * start), so a request fails only for bad text (INVALID_ARGUMENT) or a
 * device that is not enabled on this daemon (FAILED_PRECONDITION); both
 * messages name the device and the enabled ones.
 *
 * Memory limits (per job, per served model) are the daemon's own
 * accounting, the same on every device: the bytes a job or model holds on
 * its device (parameters, buffers, gradients, optimizer state, and the
 * engine contexts' arenas, which hold each step's or batch's activations).
 * They are checked when the weights are placed and after every step or
 * batch; going over answers RESOURCE_EXHAUSTED naming the device and sizes.
 *
 * Immutable after fxsv_devices_parse: read from any thread.
 */
#ifndef FXSV_DEVICES_H
#define FXSV_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fluxion.h"

#define FXSV_MAX_DEVICES 17 /* cpu and 16 GPUs */

typedef struct {
    int n;
    fx_device dev[FXSV_MAX_DEVICES]; /* in the order given; no repeats */
} fxsv_devices;

/* The default set: cpu, then every CUDA device present. */
void fxsv_devices_default(fxsv_devices *out);

/* Parses a comma-separated list ("cpu,cuda:0"); NULL or "" gives the
 * default. 0, or INVALID_ARGUMENT with a message naming the bad or missing
 * device and the devices present (a repeat, an empty entry, unknown text). */
int fxsv_devices_parse(const char *list, fxsv_devices *out, char *err, size_t errlen);

/* "cpu, cuda:0" into buf (size n); returns buf. */
const char *fxsv_devices_str(const fxsv_devices *d, char *buf, size_t n);
/* The devices present on this machine and build, as above. */
const char *fxsv_devices_present_str(char *buf, size_t n);

bool fxsv_devices_has(const fxsv_devices *d, fx_device dev);

/* The device a request names (see above). d NULL: only the CPU is enabled.
 * 0, or an fxs status (INVALID_ARGUMENT, FAILED_PRECONDITION) with a
 * message that starts with what (e.g. "spec.device"). */
int fxsv_devices_resolve(const fxsv_devices *d, const char *request, const char *what,
                        fx_device *out, char *err, size_t errlen);

/* The index among n candidates with the most free bytes (the first on a
 * tie); -1 when n is 0. "gpu" requests choose with it. */
int fxsv_devices_most_free(const size_t *free_bytes, int n);

/* Bytes held by persistent tensors (with their gradients): parameters,
 * buffers, optimizer state. */
uint64_t fxsv_params_bytes(const fx_params *p);

/* The memory-limit check: 0 when limit is 0 or used <= limit, else
 * FXS_RESOURCE_EXHAUSTED with "<what> on <device>: needs N bytes (X MiB),
 * over its memory limit of L bytes (Y MiB)". */
int fxsv_check_memory_limit(const char *what, fx_device dev, uint64_t used, uint64_t limit,
                           char *err, size_t errlen);

#endif
