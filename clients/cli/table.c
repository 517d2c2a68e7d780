/*
 * table.c - `-o table`'s lists: columns as wide as their widest cell, two
 * spaces apart, under a header line; the last column unpadded (no trailing
 * blanks). Cells are copied, so callers may pass stack buffers.
 */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cli_table {
    int ncols;
    size_t nrows, cap; /* rows of ncols cells each, the header first */
    char **cells;
    bool oom;
};

static void add_row(cli_table *t, const char *const *cells)
{
    if (t->oom)
        return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **grown = realloc(t->cells, cap * (size_t)t->ncols * sizeof *grown);
        if (!grown) {
            t->oom = true;
            return;
        }
        t->cells = grown;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * (size_t)t->ncols;
    for (int c = 0; c < t->ncols; c++)
        if (!(row[c] = strdup(cells[c] ? cells[c] : "")))
            t->oom = true;
    t->nrows++;
}

cli_table *cli_table_new(int ncols, const char *const *headers)
{
    cli_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ncols = ncols;
    add_row(t, headers);
    return t;
}

void cli_table_row(cli_table *t, ...)
{
    const char *cells[CLI_TABLE_MAX_COLS] = {0};
    va_list ap;
    va_start(ap, t);
    for (int c = 0; c < t->ncols && c < CLI_TABLE_MAX_COLS; c++)
        cells[c] = va_arg(ap, const char *);
    va_end(ap);
    add_row(t, cells);
}

int cli_table_print(cli_table *t)
{
    if (!t)
        return cli_local_error("out of memory");
    int rc = CLI_OK;
    if (t->oom) {
        rc = cli_local_error("out of memory");
    } else {
        int width[CLI_TABLE_MAX_COLS] = {0};
        for (size_t r = 0; r < t->nrows; r++)
            for (int c = 0; c < t->ncols; c++) {
                int w = (int)strlen(t->cells[r * (size_t)t->ncols + c]);
                width[c] = w > width[c] ? w : width[c];
            }
        for (size_t r = 0; r < t->nrows; r++)
            for (int c = 0; c < t->ncols; c++) {
                const char *cell = t->cells[r * (size_t)t->ncols + c];
                if (c + 1 < t->ncols)
                    printf("%-*s  ", width[c], cell);
                else
                    printf("%s\n", cell);
            }
    }
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
    return rc;
}
