/* seq.c - CPU kernels: attention helpers and the CTC loss. */
#include "cpu.h"

const fx_seq_kernels fx_cpu_seq = { 0 };
