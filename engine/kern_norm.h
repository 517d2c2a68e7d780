/* kern_norm.h - kernel family: batch/layer/group normalisation and embedding.
 * Part of the backend table (backend.h); the CPU versions live in
 * engine/cpu/norm.c as the table fx_cpu_norm. */
#ifndef FX_KERN_NORM_H
#define FX_KERN_NORM_H

#include "fluxion.h"

typedef struct {
    int reserved; /* replace with the family's kernels */
} fx_norm_kernels;

#endif
