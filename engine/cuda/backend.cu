/* backend.cu - the CUDA backend table: one entry per kernel family, each
 * family's table exported by its own file (declared in common.h), as
 * cpu/backend.c does for the CPU. Designated initializers (C++20) name
 * every slot, so two families of the same type cannot be swapped unseen. */
#include "common.h"

static bool cuda_available(int index)
{
    return index >= 0 && index < fx_cuda_device_count(NULL);
}

const fx_backend fx_cuda_backend = {
    .name = "cuda",
    .type = FX_DEV_CUDA,
    .available = cuda_available,
    .mem = &fx_cuda_mem,
    .ew = &fx_cuda_ew,
    .blas = &fx_cuda_blas_k,
    .red = &fx_cuda_reduce,
    .idx = &fx_cuda_index,
    .loss = &fx_cuda_loss,
    .optim = &fx_cuda_optim,
    .conv = &fx_cuda_conv,
    .norm = &fx_cuda_norm,
    .rnn = &fx_cuda_rnn,
    .seq = &fx_cuda_seq,
    .embed = &fx_cuda_embed,
};
