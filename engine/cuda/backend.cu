/* backend.cu - the CUDA backend table: one entry per kernel family, each
 * family's table exported by its own file (declared in common.h), as
 * cpu/backend.c does for the CPU. Designated initializers (C++20) name
 * every slot, so two families of the same type cannot be swapped unseen. */
#include "common.h"

static bool cuda_available(int index)
{
    return index >= 0 && index < fx__cuda_device_count(NULL);
}

const fx_backend fx__cuda_backend = {
    .name = "cuda",
    .type = FX_DEV_CUDA,
    .available = cuda_available,
    .mem = &fx__cuda_mem,
    .ew = &fx__cuda_ew,
    .blas = &fx__cuda_blas_k,
    .red = &fx__cuda_reduce,
    .idx = &fx__cuda_index,
    .loss = &fx__cuda_loss,
    .optim = &fx__cuda_optim,
    .conv = &fx__cuda_conv,
    .norm = &fx__cuda_norm,
    .rnn = &fx__cuda_rnn,
    .seq = &fx__cuda_seq,
    .embed = &fx__cuda_embed,
};
