/* arena.c - the bump allocator behind a context's step-local memory. */
#include "internal.h"

#include <stdlib.h>

#define FX_ARENA_ALIGN 64
#define FX_ARENA_MIN_CHUNK ((size_t)1 << 20)

void fx__arena_init(fx_arena *a, const fx_backend *be, fx_device dev)
{
    a->chunks = NULL;
    a->capacity = a->used = 0;
    a->be = be;
    a->dev = dev;
}

static fx_chunk *chunk_new(fx_arena *a, size_t size)
{
    fx_chunk *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    c->base = a->be ? a->be->mem->alloc(a->dev, size) : aligned_alloc(FX_ARENA_ALIGN, size);
    if (!c->base) {
        free(c);
        return NULL;
    }
    c->size = size;
    c->used = 0;
    c->next = a->chunks;
    a->chunks = c;
    a->capacity += size;
    return c;
}

static void chunk_free(fx_arena *a, fx_chunk *c)
{
    if (a->be)
        a->be->mem->free(a->dev, c->base);
    else
        free(c->base);
    free(c);
}

void *fx__arena_alloc(fx_arena *a, size_t nbytes)
{
    size_t n = (nbytes + FX_ARENA_ALIGN - 1) & ~(size_t)(FX_ARENA_ALIGN - 1);
    if (n < nbytes)
        return NULL; /* overflow */
    if (n == 0)
        n = FX_ARENA_ALIGN;
    fx_chunk *c = a->chunks;
    if (!c || c->size - c->used < n) {
        size_t size = a->capacity > FX_ARENA_MIN_CHUNK ? a->capacity : FX_ARENA_MIN_CHUNK;
        if (size < n)
            size = n;
        c = chunk_new(a, size);
        if (!c)
            return NULL;
    }
    void *p = c->base + c->used;
    c->used += n;
    a->used += n;
    return p;
}

void fx__arena_reset(fx_arena *a)
{
    if (a->chunks && a->chunks->next) {
        /* The step needed several chunks: replace them by one that holds
         * them all, so the next step bumps through one block. */
        size_t total = a->capacity;
        fx__arena_release(a);
        chunk_new(a, total); /* on failure the next alloc retries */
    } else if (a->chunks) {
        a->chunks->used = 0;
    }
    a->used = 0;
}

void fx__arena_release(fx_arena *a)
{
    fx_chunk *c = a->chunks;
    while (c) {
        fx_chunk *next = c->next;
        chunk_free(a, c);
        c = next;
    }
    a->chunks = NULL;
    a->capacity = a->used = 0;
}
