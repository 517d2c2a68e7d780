/*
 * util.h - the few helpers every daemon module needs for its error messages
 * (a status code plus a message in a caller's buffer) and strings.
 */
#ifndef FXU_UTIL_H
#define FXU_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Writes the printf message into err (when err and errlen) and returns code. */
int fxu_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The same without a code, for callers that return their own. */
void fxu_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "out of memory" into err; returns FXS_RESOURCE_EXHAUSTED. */
int fxu_oom(char *err, size_t errlen);

/* A malloc'd formatted string; NULL when out of memory. */
char *fxu_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes all of data to fd (retrying short writes and EINTR): 0, or -1 with
 * errno set. */
int fxu_write_all(int fd, const void *data, size_t len);

int64_t fxu_now_ms(void);   /* wall clock, ms since the epoch */
uint64_t fxu_mono_ns(void); /* CLOCK_MONOTONIC, ns */

#endif
