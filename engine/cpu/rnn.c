/* rnn.c - CPU kernels: recurrent cells (simple RNN, GRU, LSTM) over variable lengths. */
#include "cpu.h"

const fx_rnn_kernels fx_cpu_rnn = { 0 };
