/* allochooks.c - see allochooks.h. */
#include "allochooks.h"

#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <unistd.h>

#if TU_ALLOC_HOOKS
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_int counting;
static atomic_long allocations;
static int trace;
/* tu_alloc_count_thread: only the marked threads count */
static atomic_int thread_filter;
static _Thread_local int thread_marked;

static void note(void)
{
    if (!atomic_load_explicit(&counting, memory_order_relaxed))
        return;
    if (atomic_load_explicit(&thread_filter, memory_order_relaxed) && !thread_marked)
        return;
    atomic_fetch_add(&allocations, 1);
    if (trace) {
        void *frames[12];
        int n = backtrace(frames, 12); /* primed in tu_alloc_trace: no allocation */
        backtrace_symbols_fd(frames, n, 2);
        write(2, "--\n", 3);
    }
}

void *malloc(size_t n) { note(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { note(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { note(); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { note(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { note(); return __libc_memalign(a, n); }
int posix_memalign(void **p, size_t a, size_t n)
{
    note();
    *p = __libc_memalign(a, n);
    return *p ? 0 : ENOMEM;
}
void free(void *p) { __libc_free(p); }

void tu_alloc_count_start(void)
{
    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
}

long tu_alloc_count_stop(void)
{
    atomic_store(&counting, 0);
    return atomic_load(&allocations);
}

void tu_alloc_count_thread(bool on)
{
    thread_marked = on;
    atomic_store(&thread_filter, on);
}

void tu_alloc_trace(bool on)
{
    void *prime[2];
    backtrace(prime, 2);
    trace = on;
}
#else
void tu_alloc_count_start(void) {}
long tu_alloc_count_stop(void) { return 0; }
void tu_alloc_trace(bool on) { (void)on; }
void tu_alloc_count_thread(bool on) { (void)on; }
#endif
