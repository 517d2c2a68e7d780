/*
 * jsonpath.c - JSON paths for error messages (see jsonpath.h).
 */
#include "jsonpath.h"

#include <stdarg.h>
#include <stdio.h>

static size_t vpush(jsonpath *p, const char *fmt, va_list ap)
{
    size_t old = p->len;
    int n = vsnprintf(p->path + p->len, sizeof p->path - p->len, fmt, ap);
    if (n > 0)
        p->len = p->len + (size_t)n < sizeof p->path ? p->len + (size_t)n : sizeof p->path - 1;
    return old;
}

size_t jsonpath_push(jsonpath *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t old = vpush(p, fmt, ap);
    va_end(ap);
    return old;
}

size_t jsonpath_key(jsonpath *p, const char *key)
{
    return jsonpath_push(p, "%s%s", p->len ? "." : "", key);
}

size_t jsonpath_index(jsonpath *p, size_t i) { return jsonpath_push(p, "[%zu]", i); }

void jsonpath_pop(jsonpath *p, size_t old)
{
    p->len = old;
    p->path[old] = '\0';
}

int jsonpath_fail(jsonpath *p, const char *fmt, ...)
{
    if (!p->err || !p->errlen)
        return -1;
    int n = snprintf(p->err, p->errlen, "%s: ", p->len ? p->path : "top level");
    if (n < 0 || (size_t)n >= p->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

const char *jsonpath_kind(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a bool";
    default: return "null";
    }
}
