/* util.c - see util.h. */
#define _GNU_SOURCE /* vasprintf */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "rpc.h"

static void vseterr(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
}

int fxu_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vseterr(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

void fxu_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vseterr(err, errlen, fmt, ap);
    va_end(ap);
}

int fxu_oom(char *err, size_t errlen)
{
    return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "out of memory");
}

char *fxu_strf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}
