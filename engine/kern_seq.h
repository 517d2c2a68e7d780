/* kern_seq.h - kernel family: attention helpers and the CTC loss.
 * Part of the backend table (backend.h); the CPU versions live in
 * engine/cpu/seq.c as the table fx_cpu_seq. */
#ifndef FX_KERN_SEQ_H
#define FX_KERN_SEQ_H

#include "fluxion.h"

typedef struct {
    int reserved; /* replace with the family's kernels */
} fx_seq_kernels;

#endif
