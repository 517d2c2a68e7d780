/* pbarena.c - see pbarena.h. */
#include "base/pbarena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pba_block {
    pba_block *next;
    size_t used, cap;
    max_align_t data[];
};

#define BLOCK_BYTES (16 * 1024)

void *pba_alloc(pba *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    pba_block *b = a->head;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > BLOCK_BYTES ? size : BLOCK_BYTES;
        b = malloc(sizeof *b + cap);
        if (!b) {
            a->failed = 1;
            return NULL;
        }
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

void *pba_array(pba *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        a->failed = 1;
        return NULL;
    }
    size_t bytes = n * size;
    return pba_alloc(a, bytes ? bytes : 1);
}

char *pba_strdup(pba *a, const char *s)
{
    size_t n = strlen(s ? s : "");
    char *p = pba_alloc(a, n + 1);
    if (p)
        memcpy(p, s ? s : "", n);
    return p;
}

char *pba_printf(pba *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = pba_alloc(a, (size_t)n + 1);
    if (p) {
        va_start(ap, fmt);
        vsnprintf(p, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return p;
}

void pba_free(pba *a)
{
    while (a->head) {
        pba_block *b = a->head;
        a->head = b->next;
        free(b);
    }
    a->failed = 0;
}
