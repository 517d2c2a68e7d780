/* norm.c - CPU kernels: batch/layer/group normalisation and embedding. */
#include "cpu.h"

const fx_norm_kernels fx_cpu_norm = { 0 };
