/* backend.c - device -> backend table. A CUDA build adds its entry here. */
#include "backend.h"

#ifdef FX_HAVE_CUDA
extern const fx_backend fx__cuda_backend;
#endif

const fx_backend *fx__backend_for(fx_device dev)
{
    switch (dev.type) {
    case FX_DEV_CPU:
        return &fx__cpu_backend;
#ifdef FX_HAVE_CUDA
    case FX_DEV_CUDA:
        return &fx__cuda_backend;
#endif
    default:
        return NULL;
    }
}
