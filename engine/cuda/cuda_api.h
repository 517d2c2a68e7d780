/* cuda_api.h - what the rest of the engine (C) calls in the CUDA backend:
 * device enumeration, memory accounting and limits, TF32, sticky errors.
 * engine/device.c wraps these in the public fx_device_* API. */
#ifndef FX_CUDA_API_H
#define FX_CUDA_API_H

#include "../fluxion.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices; 0 when none or the driver is missing (*why, when
 * not NULL, then says why: a static string). */
int fx__cuda_device_count(const char **why);
fx_status fx__cuda_device_info(int index, fx_device_info *out);
fx_status fx__cuda_set_memory_limit(int index, size_t bytes);
fx_status fx__cuda_mem_stats(int index, fx_device_mem_stats *out);
/* Waits for the device's stream; returns the first error recorded on the
 * device since the last call (and clears it), with its message in err. */
fx_status fx__cuda_sync(int index, char *err, size_t n);
/* The message of the last failed allocation on this thread ("" if none). */
const char *fx__cuda_alloc_error(void);
void fx__cuda_set_tf32(bool on);
bool fx__cuda_tf32(void);

#ifdef __cplusplus
}
#endif
#endif
