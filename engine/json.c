/*
 * json.c - the engine's private JSON: a strict reader over a byte range that
 * never reads past it (for headers of untrusted files, safetensors.c), a
 * writer of string literals into a growable buffer, and UTF-8 validation.
 * See json.h for the contract.
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
size_t fx__utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

bool fx__utf8_valid(const char *str)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t n = strlen(str);
    for (size_t i = 0; i < n;) {
        size_t k = fx__utf8_len(s + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* --------------------------------------------------------------- writer */

void fx__jbuf_put(fx_jbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

void fx__jbuf_puts(fx_jbuf *b, const char *s) { fx__jbuf_put(b, s, strlen(s)); }

/* Appends s as a JSON string literal: quotes, backslashes and control
 * characters are escaped; other bytes (valid UTF-8) are kept as they are. */
void fx__jbuf_string(fx_jbuf *b, const char *s)
{
    fx__jbuf_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            fx__jbuf_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            fx__jbuf_put(b, esc, 6);
        } else
            fx__jbuf_put(b, p, 1);
    }
    fx__jbuf_put(b, "\"", 1);
}

/* --------------------------------------------------------------- reader */

bool fx__json_fail(fx_json *p, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (!p->err || !p->errlen)
        return false;
    const char *doc = p->doc ? p->doc : "text";
    if (p->scope)
        snprintf(p->err, p->errlen, "%s '%.*s': %s (JSON %s byte %zu of %zu)",
                 p->scope_kind ? p->scope_kind : "in", FX_JSON_SCOPE_SHOWN, p->scope, what, doc,
                 p->pos, p->n);
    else
        snprintf(p->err, p->errlen, "%s (JSON %s byte %zu of %zu)", what, doc, p->pos, p->n);
    return false;
}

/* Describes the byte at the cursor for "expected X, found Y" messages. */
const char *fx__json_found(const fx_json *p, char *buf, size_t n)
{
    if (p->pos >= p->n) {
        snprintf(buf, n, "the end of the %s", p->doc ? p->doc : "text");
        return buf;
    }
    uint8_t c = p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, n, "'%c'", c);
    else
        snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

void fx__json_ws(fx_json *p)
{
    while (p->pos < p->n) {
        uint8_t c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* Skips whitespace, then consumes c or fails saying what was expected. */
bool fx__json_expect(fx_json *p, char c, const char *what)
{
    fx__json_ws(p);
    if (p->pos < p->n && p->s[p->pos] == (uint8_t)c) {
        p->pos++;
        return true;
    }
    char buf[48];
    return fx__json_fail(p, "expected '%c' %s, found %s", c, what,
                         fx__json_found(p, buf, sizeof buf));
}

/* Skips whitespace and consumes c if it is next. */
bool fx__json_accept(fx_json *p, char c)
{
    fx__json_ws(p);
    if (p->pos < p->n && p->s[p->pos] == (uint8_t)c) {
        p->pos++;
        return true;
    }
    return false;
}

/* Four hex digits of a \u escape. */
static bool json_hex4(fx_json *p, unsigned *v)
{
    if (p->n - p->pos < 4)
        return fx__json_fail(p, "truncated \\u escape");
    *v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p->s[p->pos++];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else {
            p->pos--;
            return fx__json_fail(p, "bad hex digit in \\u escape");
        }
        *v = *v << 4 | d;
    }
    return true;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * A JSON string (after whitespace) into a malloc'd, NUL-terminated UTF-8
 * string. Raw bytes must be valid UTF-8 and not control characters; escapes
 * are decoded, \u surrogate pairs included. The decoded string is never
 * longer than its source, which bounds the allocation. \u0000 is refused:
 * names are C strings.
 */
bool fx__json_string(fx_json *p, char **out)
{
    *out = NULL;
    if (!fx__json_expect(p, '"', "to start a string"))
        return false;
    size_t start = p->pos, end = start;
    while (end < p->n && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    char *o = malloc((end < p->n ? end : p->n) - start + 1);
    if (!o)
        return fx__json_fail(p, "out of memory");
    size_t k = 0;
    for (;;) {
        if (p->pos >= p->n) {
            p->pos = start - 1;
            fx__json_fail(p, "unterminated string");
            goto fail;
        }
        uint8_t c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            fx__json_fail(p, "control character 0x%02x in a string", c);
            goto fail;
        }
        if (c != '\\') {
            size_t len = fx__utf8_len(p->s + p->pos, p->n - p->pos);
            if (!len) {
                fx__json_fail(p, "invalid UTF-8 in a string");
                goto fail;
            }
            memcpy(o + k, p->s + p->pos, len);
            k += len;
            p->pos += len;
            continue;
        }
        if (++p->pos >= p->n)
            continue; /* reported as unterminated */
        c = p->s[p->pos++];
        const char *simple = strchr("\"\\/bfnrt", c);
        if (c && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            o[k++] = decoded[simple - "\"\\/bfnrt"];
            continue;
        }
        if (c != 'u') {
            p->pos--;
            fx__json_fail(p, "unknown escape '\\%c' in a string", c >= 0x20 && c < 0x7f ? c : '?');
            goto fail;
        }
        unsigned cp, lo;
        if (!json_hex4(p, &cp))
            goto fail;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fx__json_fail(p, "unpaired low surrogate \\u%04x in a string", cp);
            goto fail;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                fx__json_fail(p, "unpaired high surrogate \\u%04x in a string", cp);
                goto fail;
            }
            p->pos += 2;
            if (!json_hex4(p, &lo))
                goto fail;
            if (lo < 0xDC00 || lo > 0xDFFF) {
                fx__json_fail(p, "high surrogate \\u%04x not followed by a low one", cp);
                goto fail;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) {
            fx__json_fail(p, "\\u0000 in a string is not supported");
            goto fail;
        }
        k += put_utf8(o + k, cp);
    }
    o[k] = '\0';
    *out = o;
    return true;
fail:
    free(o);
    return false;
}

/* A JSON integer (after whitespace) that fits int64: no fraction, no
 * exponent, no leading zeros. */
bool fx__json_int(fx_json *p, int64_t *v)
{
    fx__json_ws(p);
    size_t start = p->pos;
    bool neg = p->pos < p->n && p->s[p->pos] == '-';
    if (neg)
        p->pos++;
    if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
        char buf[48];
        p->pos = start;
        return fx__json_fail(p, "expected an integer, found %s",
                             fx__json_found(p, buf, sizeof buf));
    }
    if (p->s[p->pos] == '0' && p->pos + 1 < p->n && p->s[p->pos + 1] >= '0' &&
        p->s[p->pos + 1] <= '9')
        return fx__json_fail(p, "integer with a leading zero");
    uint64_t x = 0;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        unsigned d = p->s[p->pos] - '0';
        if (x > ((uint64_t)INT64_MAX - d) / 10) {
            p->pos = start;
            return fx__json_fail(p, "integer out of range");
        }
        x = x * 10 + d;
        p->pos++;
    }
    if (p->pos < p->n && (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E'))
        return fx__json_fail(p, "expected an integer, found a fraction or exponent");
    *v = neg ? -(int64_t)x : (int64_t)x;
    return true;
}

/* [i, j, ...] with at most max entries into out; *count gets the number. */
bool fx__json_int_array(fx_json *p, const char *what, int max, int64_t *out, int *count)
{
    *count = 0;
    if (!fx__json_expect(p, '[', what))
        return false;
    if (fx__json_accept(p, ']'))
        return true;
    for (;;) {
        if (*count == max)
            return fx__json_fail(p, "%s has more than %d entries", what, max);
        if (!fx__json_int(p, &out[(*count)++]))
            return false;
        if (fx__json_accept(p, ']'))
            return true;
        if (!fx__json_expect(p, ',', "or ']' in an array"))
            return false;
    }
}
