/* kern_conv.h - kernel family: convolution (im2col/col2im or direct) and pooling.
 * Part of the backend table (backend.h); the CPU versions live in
 * engine/cpu/conv.c as the table fx_cpu_conv. */
#ifndef FX_KERN_CONV_H
#define FX_KERN_CONV_H

#include "fluxion.h"

typedef struct {
    int reserved; /* replace with the family's kernels */
} fx_conv_kernels;

#endif
