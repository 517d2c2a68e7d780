/* kern_rnn.h - kernel family: recurrent cells (simple RNN, GRU, LSTM) over variable lengths.
 * Part of the backend table (backend.h); the CPU versions live in
 * engine/cpu/rnn.c as the table fx_cpu_rnn. */
#ifndef FX_KERN_RNN_H
#define FX_KERN_RNN_H

#include "fluxion.h"

typedef struct {
    int reserved; /* replace with the family's kernels */
} fx_rnn_kernels;

#endif
