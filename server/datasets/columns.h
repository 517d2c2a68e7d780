/*
 * columns.h - a dataset in memory as the trainer sees it: named columns,
 * each a tensor whose first dimension is the sample index.
 */
#ifndef FXDS_COLUMNS_H
#define FXDS_COLUMNS_H

#include <stdint.h>

#include "fluxion.h"

typedef struct {
    const char *name;
    fx_dtype dtype;
    int sample_ndim;                      /* rank of one sample */
    int64_t sample_shape[FX_MAX_DIMS];
    const void *data;                     /* num_samples x sample, row-major */
} fxds_column;

typedef struct {
    int64_t num_samples;
    int n;
    const fxds_column *cols;
} fxds_columns;

/* Index of the column named name, or -1. */
static inline int fxds_columns_find(const fxds_columns *c, const char *name)
{
    for (int i = 0; c && i < c->n; i++)
        if (__builtin_strcmp(c->cols[i].name, name) == 0)
            return i;
    return -1;
}

#endif
