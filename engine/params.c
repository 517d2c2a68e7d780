/* params.c - the parameter store: a growable list of (name, tensor) pairs.
 * The list owns its names; it owns the tensors only when the caller says so
 * by freeing them with fx_params_free_tensors. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void fx_params_init(fx_params *p)
{
    if (p)
        memset(p, 0, sizeof *p);
}

/* Appends (a copy of) name with t. Names are unique in a list, because a
 * checkpoint or an optimizer keyed by name could not tell duplicates apart:
 * a repeated name gives FX_ERR_ARG and changes nothing. */
fx_status fx_params_add(fx_params *p, const char *name, fx_tensor *t)
{
    if (!p || !name || !t)
        return FX_ERR_ARG;
    if (fx_params_find(p, name))
        return FX_ERR_ARG;
    if (p->count == p->cap) {
        int cap = p->cap ? 2 * p->cap : 8;
        fx_named_tensor *items = realloc(p->items, (size_t)cap * sizeof *items);
        if (!items)
            return FX_ERR_NOMEM;
        p->items = items;
        p->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return FX_ERR_NOMEM;
    p->items[p->count++] = (fx_named_tensor){ copy, t };
    return FX_OK;
}

fx_tensor *fx_params_find(const fx_params *p, const char *name)
{
    if (!p || !name)
        return NULL;
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->items[i].name, name) == 0)
            return p->items[i].tensor;
    return NULL;
}

void fx_params_free_tensors(fx_params *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->count; i++)
        fx_tensor_free(p->items[i].tensor);
    fx_params_clear(p);
}

void fx_params_clear(fx_params *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->count; i++)
        free(p->items[i].name);
    free(p->items);
    fx_params_init(p);
}

int64_t fx_params_numel(const fx_params *p)
{
    int64_t n = 0;
    for (int i = 0; p && i < p->count; i++)
        n += fx_tensor_numel(p->items[i].tensor);
    return n;
}
