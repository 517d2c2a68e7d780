/* kern_embed.h - kernel family: embedding lookups (rows of a weight matrix
 * picked by integer indices) and their gradient. Part of the backend table
 * (backend.h); the CPU versions live in engine/cpu/embed.c as the table
 * fx__cpu_embed, the CUDA ones in engine/cuda/embed.cu. */
#ifndef FX_KERN_EMBED_H
#define FX_KERN_EMBED_H

#include "fluxion.h"

typedef struct {
    /* y[j, :] = weight[idx[j], :] for weight [num, dim] and idx (i32/i64,
     * any shape, n elements; y [n, dim]). Returns -1 when every index is in
     * [0, num), else the flat position of the first one that is not (y is
     * then not written). */
    int64_t (*embedding)(const fx_tensor *weight, const fx_tensor *idx, fx_tensor *y);
    /* dweight[idx[j], :] += dy[j, :], repeated indices accumulating, except
     * rows whose index is padding_idx (negative: none). */
    void (*embedding_backward)(const fx_tensor *dy, const fx_tensor *idx, int64_t padding_idx,
                               fx_tensor *dweight);
} fx_embed_kernels;

#endif
