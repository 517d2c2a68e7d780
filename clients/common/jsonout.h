/*
 * jsonout.h - JSON text for people and scripts, from jansson values.
 *
 * jansson prints reals with 17 significant digits (0.1 -> 0.10000000000000001);
 * this writer prints the shortest form that reads back as the same double
 * (0.1), with a ".0" where it would otherwise look like an integer (2.0), so
 * that a real stays a real. Members keep their insertion order. Two layouts:
 *   JSONOUT_LINE:   one line, Python-style separators: {"a": [1, 2], "b": {}}
 *   JSONOUT_PRETTY: objects and arrays of containers one member per line,
 *                   indented by two; arrays of scalars stay on one line (a
 *                   tensor's data is one line, not one line per number).
 */
#ifndef FXC_JSONOUT_H
#define FXC_JSONOUT_H

#include <stdio.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { JSONOUT_LINE = 0, JSONOUT_PRETTY = 1 };

/* Writes j (any value) and no trailing newline. Returns 0, or -1 on a write
 * error (errno set by stdio) or a value jansson cannot hold. */
int jsonout_write(FILE *f, const json_t *j, int layout);

/* The same text in a malloc'd string (NULL on out of memory). */
char *jsonout_string(const json_t *j, int layout);

/* Shortest "%.*g" text of a finite double that strtod reads back exactly,
 * with ".0" added to integral values. buf needs 32 bytes. */
char *jsonout_real(double v, char *buf);

#ifdef __cplusplus
}
#endif
#endif
