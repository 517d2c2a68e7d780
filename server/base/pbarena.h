/*
 * pbarena.h - a bump allocator for building protobuf-c responses: every
 * nested message, array and string of a response comes from one arena that
 * is freed in one call after the response is packed (fxr_reply packs at once).
 */
#ifndef PBA_PBARENA_H
#define PBA_PBARENA_H

#include <stddef.h>

typedef struct pba_block pba_block;
typedef struct {
    pba_block *head;
    int failed; /* an allocation failed: the response must not be sent */
} pba;

/* Zeroed memory, aligned for any type; NULL (and a->failed set) on failure. */
void *pba_alloc(pba *a, size_t size);
/* calloc-like with overflow check. */
void *pba_array(pba *a, size_t n, size_t size);
char *pba_strdup(pba *a, const char *s);
char *pba_printf(pba *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pba_free(pba *a);

#define PBA_NEW(a, type, init_fn) ({ type *_m = pba_alloc((a), sizeof(type)); if (_m) init_fn(_m); _m; })

#endif
