/*
 * jsonpath.h - the JSON path of the value a converter is looking at
 * ("spec.nodes[2].attrs.units"), grown and shrunk as it walks down and up,
 * and error messages that start with it. Used by pbjson and inferjson.
 *
 * A path longer than the buffer is cut short, never overflowed; messages
 * are cut to the caller's errlen.
 */
#ifndef FXC_JSONPATH_H
#define FXC_JSONPATH_H

#include <stddef.h>
#include <jansson.h>

typedef struct {
    char path[512];
    size_t len;
    char *err; /* where jsonpath_fail writes; may be NULL */
    size_t errlen;
} jsonpath;

/* Each push returns the old length, for jsonpath_pop. */
size_t jsonpath_push(jsonpath *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ".key" (or "key" at the root). */
size_t jsonpath_key(jsonpath *p, const char *key);
/* "[i]" */
size_t jsonpath_index(jsonpath *p, size_t i);
void jsonpath_pop(jsonpath *p, size_t old);

/* Writes "<path>: <message>" ("top level: ..." at the root); returns -1. */
int jsonpath_fail(jsonpath *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "an object", "an integer", "a number" (a real), "null", ... */
const char *jsonpath_kind(const json_t *j);

#endif
