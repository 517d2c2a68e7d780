/* conv.c - CPU kernels: convolution (im2col/col2im or direct) and pooling. */
#include "cpu.h"

const fx_conv_kernels fx_cpu_conv = { 0 };
