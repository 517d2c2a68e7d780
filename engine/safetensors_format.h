/*
 * safetensors_format.h - what the two halves of the safetensors code share
 * (internal): safetensors.c reads files (header grammar, validation,
 * decoding), safetensors_write.c writes them (data layout, header, atomic
 * save). The format is described at the top of safetensors.c.
 */
#ifndef FX_SAFETENSORS_FORMAT_H
#define FX_SAFETENSORS_FORMAT_H

#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The data buffer is copied to and from tensors byte for byte. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000u /* the reference implementation's limit, 100 MB */
#define ST_NAME_SHOWN 96         /* at most this many bytes of a name in a message */
#define ST_META_KEY "__metadata__"

/* Writes a printf-style message into err (which may be NULL). */
static inline void __attribute__((format(printf, 3, 4)))
st_msg(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The dtypes Fluxion reads and writes, by their names in the header. */
static const struct {
    const char *name;
    fx_dtype dtype;
} st_dtypes[] = {
    { "F32", FX_F32 }, { "F16", FX_F16 }, { "BF16", FX_BF16 }, { "I32", FX_I32 }, { "I64", FX_I64 },
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof *st_dtypes))

/* The header's name of dt; NULL for a dtype the format cannot hold. */
static inline const char *st_dtype_str(fx_dtype dt)
{
    for (int i = 0; i < ST_NDTYPES; i++)
        if (st_dtypes[i].dtype == dt)
            return st_dtypes[i].name;
    return NULL;
}

/* The dtype named name into *dt; false for an unknown name. */
static inline bool st_dtype_parse(const char *name, fx_dtype *dt)
{
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(name, st_dtypes[i].name) == 0) {
            *dt = st_dtypes[i].dtype;
            return true;
        }
    return false;
}

/* qsort / bsearch order of C-string pointers. */
static inline int st_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

#endif /* FX_SAFETENSORS_FORMAT_H */
