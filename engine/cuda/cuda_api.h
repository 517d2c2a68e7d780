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
/* Waits for the calling thread's current stream on the device (see
 * stream.cu); returns the first error recorded on the device since the last
 * call (and clears it), with its message in err. */
fx_status fx__cuda_sync(int index, char *err, size_t n);
/* The message of the last failed allocation on this thread ("" if none). */
const char *fx__cuda_alloc_error(void);
void fx__cuda_set_tf32(bool on);
bool fx__cuda_tf32(void);

/* Context streams (stream.cu). A lane is a CUDA stream of one priority with
 * a cuBLAS handle bound to it and an event; an fx_ctx on a CUDA device holds
 * one (ctx->lane), taken from a per-device pool on first use and given back
 * by fx_ctx_free. */
typedef struct fx__cuda_lane fx__cuda_lane;
/* Makes *lane the calling thread's current stream on dev, taking a lane of
 * priority prio from the pool first when *lane is NULL. On a switch the lane
 * follows (waits for an event on) the stream the thread used before, so one
 * thread's work stays in program order. On failure the error is recorded on
 * the device and the thread keeps its stream. Cheap when already current. */
void fx__cuda_enter(int dev, fx__cuda_lane **lane, fx_priority prio);
/* Makes the lane follow the work queued so far on its device's shared
 * stream (tensors made without a context by other threads); no host wait. */
void fx__cuda_follow_shared(fx__cuda_lane *lane);
/* Waits for the lane's work and gives it back to the pool; threads still
 * bound to it fall back to the shared stream. */
void fx__cuda_release(fx__cuda_lane *lane);
/* The lane's stream (a cudaStream_t) and its CUDA priority
 * (cudaStreamGetPriority); for tests. */
fx_status fx__cuda_lane_info(const fx__cuda_lane *lane, void **stream, int *cuda_priority);
/* Records msg as if a CUDA call had failed in the calling thread's work on
 * dev (its context's stream, else the device); for tests of where errors
 * go. */
void fx__cuda_inject_error(int dev, const char *msg);
/* The CUDA stream priority an fx_priority maps to on dev: LOW is the
 * device's least priority, HIGH its greatest, NORMAL the middle (all 0 on a
 * device without stream priorities). */
int fx__cuda_priority_value(int dev, fx_priority p);

#ifdef __cplusplus
}
#endif
#endif
