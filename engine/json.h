/*
 * json.h - the engine's private JSON (json.c), internal: a strict reader and
 * a small writer, enough for file headers such as safetensors'.
 *
 * The reader is a cursor over exactly n bytes that never reads past them, so
 * it is safe on untrusted input. It accepts strict JSON only: strings with
 * every escape (\u surrogate pairs included) decoded into valid UTF-8,
 * integers that fit int64 (no fraction, exponent or leading zero), integer
 * arrays, and the punctuation a caller's own grammar asks for with
 * fx__json_expect / fx__json_accept; objects and their keys are walked by
 * the caller, which knows what it wants. Every function skips whitespace
 * first. On the first error a function records a message, with the byte
 * offset, in p->err and returns false; the caller unwinds and returns it.
 *
 * Messages read "<what> (JSON <doc> byte <pos> of <n>)", or, while the
 * caller has set scope (say, the tensor being parsed), "<scope_kind>
 * '<scope>': <what> (...)", e.g. "tensor 'fc1.weight': integer out of range
 * (JSON header byte 40 of 128)".
 */
#ifndef FX_JSON_H
#define FX_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* At most this many bytes of p->scope are shown in a message. */
#define FX_JSON_SCOPE_SHOWN 96

typedef struct {
    const uint8_t *s;
    size_t n, pos;          /* the bytes and the cursor */
    const char *doc;        /* what the bytes are, for messages ("header") */
    const char *scope_kind; /* "tensor" */
    const char *scope;      /* the item being parsed; NULL outside one */
    char *err;              /* message buffer (may be NULL) */
    size_t errlen;
} fx_json;

/* Records "fmt ..." (with the position) and returns false. */
bool fx__json_fail(fx_json *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Describes the byte at the cursor ("'x'", "byte 0x01", "the end of the
 * header") into buf, for "expected X, found Y" messages; returns the text. */
const char *fx__json_found(const fx_json *p, char *buf, size_t n);
/* Skips whitespace. */
void fx__json_ws(fx_json *p);
/* Consumes c or fails with "expected 'c' <what>, found ...". */
bool fx__json_expect(fx_json *p, char c, const char *what);
/* Consumes c if it is next; never fails. */
bool fx__json_accept(fx_json *p, char c);
/* A string into a malloc'd, NUL-terminated UTF-8 string (*out; NULL on
 * failure). Raw control characters, invalid UTF-8, unknown escapes,
 * unpaired surrogates and \u0000 (names are C strings) are refused. */
bool fx__json_string(fx_json *p, char **out);
/* An integer that fits int64. */
bool fx__json_int(fx_json *p, int64_t *v);
/* [i, j, ...] with at most max entries into out (*count gets the number);
 * what names the array in messages. */
bool fx__json_int_array(fx_json *p, const char *what, int max, int64_t *out, int *count);

/* A growable, NUL-terminated byte string; oom is sticky (check it once at
 * the end). Zero-initialise it; free(b.s) when done. */
typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} fx_jbuf;

void fx__jbuf_put(fx_jbuf *b, const char *s, size_t n);
void fx__jbuf_puts(fx_jbuf *b, const char *s);
/* Appends s as a JSON string literal: quotes, backslashes and control
 * characters escaped; other bytes (valid UTF-8) kept as they are. */
void fx__jbuf_string(fx_jbuf *b, const char *s);

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
size_t fx__utf8_len(const uint8_t *s, size_t n);
/* Whether the C string is valid UTF-8. */
bool fx__utf8_valid(const char *str);

#endif /* FX_JSON_H */
