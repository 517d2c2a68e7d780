/* backend.c - device -> backend table. A CUDA build adds its entry here. */
#include "backend.h"

#ifdef FX_HAVE_CUDA
extern const fx_backend fx_cuda_backend;
#endif

const fx_backend *fx_backend_for(fx_device dev)
{
    switch (dev.type) {
    case FX_DEV_CPU:
        return &fx_cpu_backend;
#ifdef FX_HAVE_CUDA
    case FX_DEV_CUDA:
        return &fx_cuda_backend;
#endif
    default:
        return NULL;
    }
}
