/*
 * log.h - structured log lines on stderr, one per event, from any thread:
 *
 *   ts=2026-11-21T02:30:00.123Z level=info comp=rpc msg="listening" addr=127.0.0.1:7070
 *
 * or, with --log-format json, {"ts":"...","level":"info","comp":"rpc","msg":"..."}.
 * Key/value pairs after the message are given as "key=value" strings in the
 * format (logfmt form); the JSON form turns them into fields.
 */
#ifndef FXL_LOG_H
#define FXL_LOG_H

#include <stdbool.h>

typedef enum { FXL_DEBUG = 0, FXL_INFO, FXL_WARN, FXL_ERROR } fxl_level;

void fxl_configure(fxl_level min_level, bool json);
/* "debug" | "info" | "warn" | "error" -> level; -1 when unknown. */
int fxl_parse_level(const char *s);

/* msg is printf-formatted; it may end with " key=value" pairs, which the JSON
 * form splits into fields (a value with spaces must be quoted: key="a b"). */
void fxl_log(fxl_level level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define FXL_INFO_(comp, ...) fxl_log(FXL_INFO, comp, __VA_ARGS__)

#endif
