/*
 * allochooks.h - counting heap allocations, for the tests that prove a
 * steady-state step allocates nothing. Linking allochooks.c replaces malloc
 * and friends for the whole process (the executable's definitions take
 * precedence over libc's), so allocations by OpenBLAS and the OpenMP runtime
 * count too. Sanitizer builds replace malloc themselves: there the hooks are
 * compiled out and TU_ALLOC_HOOKS is 0 (tests skip).
 */
#ifndef FX_ALLOCHOOKS_H
#define FX_ALLOCHOOKS_H

#include <stdbool.h>

#if defined(__SANITIZE_ADDRESS__)
#define TU_ALLOC_HOOKS 0
#else
#define TU_ALLOC_HOOKS 1
#endif

/* Zeroes the count and starts counting. */
void tu_alloc_count_start(void);
/* Stops counting and returns the allocations seen since the start. */
long tu_alloc_count_stop(void);
/* On: from now on only the calling thread's allocations count (for a
 * thread among others that allocate on their own, e.g. a library's I/O
 * threads); off: every thread's again. */
void tu_alloc_count_thread(bool on);
/* With trace on, every counted allocation prints its backtrace to stderr. */
void tu_alloc_trace(bool on);

#endif
