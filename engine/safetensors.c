/*
 * safetensors.c - checkpoints in the safetensors format.
 *
 * A file is
 *
 *     [8 bytes]  N, the header length, unsigned little-endian
 *     [N bytes]  a UTF-8 JSON object:
 *                {"fc1.weight":{"dtype":"F32","shape":[64,20],"data_offsets":[0,5120]},
 *                 ..., "__metadata__":{"epoch":"3"}}
 *                padded with spaces so that N is a multiple of 8
 *     [rest]     the data buffer: every tensor's elements, row-major,
 *                little-endian, at [begin,end) relative to the buffer start
 *
 * as written by the reference implementation (huggingface/safetensors).
 * Readers of untrusted bytes must not crash, so the header is parsed by a
 * small strict JSON parser that accepts exactly what the format needs
 * (objects, strings with every JSON escape, integer arrays, string metadata)
 * and never reads past the bytes it was given. A loaded header is then
 * validated the way the reference does: known dtypes, shapes whose element
 * count does not overflow, offsets inside the data buffer that match the
 * shape, and tensors that neither overlap nor leave holes, covering the
 * buffer exactly. Every refusal is FX_ERR_FORMAT with a message saying what
 * is wrong and where (the tensor's name, or the byte of the header).
 *
 * Element memory is only reached through fx_tensor_to_host and
 * fx_tensor_copy_from_host, so tensors of any device can be saved, and
 * loaded tensors are plain persistent CPU tensors.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The data buffer is copied to and from tensors byte for byte. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000u /* the reference implementation's limit, 100 MB */
#define ST_NAME_SHOWN 96         /* at most this many bytes of a name in a message */
#define ST_META_KEY "__metadata__"

/* ------------------------------------------------------------ utilities */

/* Writes a printf-style message into err (which may be NULL). */
static void __attribute__((format(printf, 3, 4)))
st_msg(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const struct {
    const char *name;
    fx_dtype dtype;
} st_dtypes[] = {
    { "F32", FX_F32 }, { "F16", FX_F16 }, { "BF16", FX_BF16 }, { "I32", FX_I32 }, { "I64", FX_I64 },
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof *st_dtypes))

static const char *st_dtype_str(fx_dtype dt)
{
    for (int i = 0; i < ST_NDTYPES; i++)
        if (st_dtypes[i].dtype == dt)
            return st_dtypes[i].name;
    return NULL;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t st_utf8_len(const uint8_t *s, size_t n)
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

static bool st_valid_utf8(const char *str)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t n = strlen(str);
    for (size_t i = 0; i < n;) {
        size_t k = st_utf8_len(s + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* A growable byte string; oom is sticky. */
typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} st_buf;

static void st_put(st_buf *b, const char *s, size_t n)
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

static void st_puts(st_buf *b, const char *s) { st_put(b, s, strlen(s)); }

/* Appends s as a JSON string literal: quotes, backslashes and control
 * characters are escaped; other bytes (valid UTF-8) are kept as they are. */
static void st_put_json_string(st_buf *b, const char *s)
{
    st_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            st_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            st_put(b, esc, 6);
        } else
            st_put(b, p, 1);
    }
    st_put(b, "\"", 1);
}

/* --------------------------------------------------------------- header */

/* One tensor entry of a header. begin/end are relative to the data buffer. */
typedef struct {
    char *name;
    fx_dtype dtype;
    int ndim;
    int64_t shape[FX_MAX_DIMS];
    int64_t begin, end;
    uint64_t nbytes; /* numel * dtype size, set by st_validate */
} st_entry;

typedef struct {
    st_entry *v;
    int n, cap;
} st_header;

static void st_header_free(st_header *h)
{
    for (int i = 0; i < h->n; i++)
        free(h->v[i].name);
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

/* --------------------------------------------------------- JSON parser */

/*
 * A strict recursive-descent parser over exactly n bytes. The nesting is
 * fixed by the format (object of objects of arrays), so nothing recurses
 * on input. Every error is recorded once, with the header byte where it
 * happened and the tensor being parsed, and makes the caller unwind.
 */
typedef struct {
    const uint8_t *s;
    size_t n, pos;
    const char *tensor; /* the entry being parsed, for messages; NULL outside */
    char *err;
    size_t errlen;
} st_parser;

static bool __attribute__((format(printf, 2, 3))) st_fail(st_parser *p, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (p->tensor)
        st_msg(p->err, p->errlen, "tensor '%.*s': %s (JSON header byte %zu of %zu)", ST_NAME_SHOWN,
               p->tensor, what, p->pos, p->n);
    else
        st_msg(p->err, p->errlen, "%s (JSON header byte %zu of %zu)", what, p->pos, p->n);
    return false;
}

/* Describes the byte at the cursor for "expected X, found Y" messages. */
static const char *st_found(const st_parser *p, char *buf, size_t n)
{
    if (p->pos >= p->n)
        return "the end of the header";
    uint8_t c = p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, n, "'%c'", c);
    else
        snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

static void st_ws(st_parser *p)
{
    while (p->pos < p->n) {
        uint8_t c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* Skips whitespace, then consumes c or fails saying what was expected. */
static bool st_expect(st_parser *p, char c, const char *what)
{
    st_ws(p);
    if (p->pos < p->n && p->s[p->pos] == (uint8_t)c) {
        p->pos++;
        return true;
    }
    char buf[16];
    return st_fail(p, "expected '%c' %s, found %s", c, what, st_found(p, buf, sizeof buf));
}

/* Skips whitespace and consumes c if it is next. */
static bool st_accept(st_parser *p, char c)
{
    st_ws(p);
    if (p->pos < p->n && p->s[p->pos] == (uint8_t)c) {
        p->pos++;
        return true;
    }
    return false;
}

/* Four hex digits of a \u escape. */
static bool st_hex4(st_parser *p, unsigned *v)
{
    if (p->n - p->pos < 4)
        return st_fail(p, "truncated \\u escape");
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
            return st_fail(p, "bad hex digit in \\u escape");
        }
        *v = *v << 4 | d;
    }
    return true;
}

static size_t st_put_utf8(char *o, unsigned cp)
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
static bool st_string(st_parser *p, char **out)
{
    *out = NULL;
    if (!st_expect(p, '"', "to start a string"))
        return false;
    size_t start = p->pos, end = start;
    while (end < p->n && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    char *o = malloc((end < p->n ? end : p->n) - start + 1);
    if (!o)
        return st_fail(p, "out of memory");
    size_t k = 0;
    for (;;) {
        if (p->pos >= p->n) {
            p->pos = start - 1;
            st_fail(p, "unterminated string");
            goto fail;
        }
        uint8_t c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            st_fail(p, "control character 0x%02x in a string", c);
            goto fail;
        }
        if (c != '\\') {
            size_t len = st_utf8_len(p->s + p->pos, p->n - p->pos);
            if (!len) {
                st_fail(p, "invalid UTF-8 in a string");
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
            st_fail(p, "unknown escape '\\%c' in a string", c >= 0x20 && c < 0x7f ? c : '?');
            goto fail;
        }
        unsigned cp, lo;
        if (!st_hex4(p, &cp))
            goto fail;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            st_fail(p, "unpaired low surrogate \\u%04x in a string", cp);
            goto fail;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                st_fail(p, "unpaired high surrogate \\u%04x in a string", cp);
                goto fail;
            }
            p->pos += 2;
            if (!st_hex4(p, &lo))
                goto fail;
            if (lo < 0xDC00 || lo > 0xDFFF) {
                st_fail(p, "high surrogate \\u%04x not followed by a low one", cp);
                goto fail;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) {
            st_fail(p, "\\u0000 in a string is not supported");
            goto fail;
        }
        k += st_put_utf8(o + k, cp);
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
static bool st_int(st_parser *p, int64_t *v)
{
    st_ws(p);
    size_t start = p->pos;
    bool neg = p->pos < p->n && p->s[p->pos] == '-';
    if (neg)
        p->pos++;
    if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
        char buf[16];
        p->pos = start;
        return st_fail(p, "expected an integer, found %s", st_found(p, buf, sizeof buf));
    }
    if (p->s[p->pos] == '0' && p->pos + 1 < p->n && p->s[p->pos + 1] >= '0' &&
        p->s[p->pos + 1] <= '9')
        return st_fail(p, "integer with a leading zero");
    uint64_t x = 0;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        unsigned d = p->s[p->pos] - '0';
        if (x > ((uint64_t)INT64_MAX - d) / 10) {
            p->pos = start;
            return st_fail(p, "integer out of range");
        }
        x = x * 10 + d;
        p->pos++;
    }
    if (p->pos < p->n && (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E'))
        return st_fail(p, "expected an integer, found a fraction or exponent");
    *v = neg ? -(int64_t)x : (int64_t)x;
    return true;
}

/* [i, j, ...] with at most max entries into out; *count gets the number. */
static bool st_int_array(st_parser *p, const char *what, int max, int64_t *out, int *count)
{
    *count = 0;
    if (!st_expect(p, '[', what))
        return false;
    if (st_accept(p, ']'))
        return true;
    for (;;) {
        if (*count == max)
            return st_fail(p, "%s has more than %d entries", what, max);
        if (!st_int(p, &out[(*count)++]))
            return false;
        if (st_accept(p, ']'))
            return true;
        if (!st_expect(p, ',', "or ']' in an array"))
            return false;
    }
}

/* {"dtype":"F32","shape":[..],"data_offsets":[b,e]}: each field exactly
 * once, no others. */
static bool st_tensor(st_parser *p, st_entry *e)
{
    static const char *fields[] = { "dtype", "shape", "data_offsets" };
    bool seen[3] = { false, false, false };
    if (!st_expect(p, '{', "to start the tensor's entry"))
        return false;
    if (st_accept(p, '}'))
        return st_fail(p, "missing field 'dtype'");
    for (;;) {
        char *key;
        size_t at = p->pos;
        if (!st_string(p, &key))
            return false;
        int f = 0;
        while (f < 3 && strcmp(key, fields[f]) != 0)
            f++;
        if (f == 3) {
            p->pos = at;
            st_fail(p, "unknown field '%.*s'", ST_NAME_SHOWN, key);
            free(key);
            return false;
        }
        free(key);
        if (seen[f]) {
            p->pos = at;
            return st_fail(p, "field '%s' appears twice", fields[f]);
        }
        seen[f] = true;
        if (!st_expect(p, ':', "after a field name"))
            return false;
        if (f == 0) {
            char *dt;
            st_ws(p);
            at = p->pos;
            if (!st_string(p, &dt))
                return false;
            int i = 0;
            while (i < ST_NDTYPES && strcmp(dt, st_dtypes[i].name) != 0)
                i++;
            if (i == ST_NDTYPES) {
                p->pos = at;
                st_fail(p, "unsupported dtype '%.*s' (Fluxion reads F32, F16, BF16, I32, I64)", 32,
                        dt);
                free(dt);
                return false;
            }
            free(dt);
            e->dtype = st_dtypes[i].dtype;
        } else if (f == 1) {
            char what[48];
            snprintf(what, sizeof what, "shape (at most %d dimensions)", FX_MAX_DIMS);
            if (!st_int_array(p, what, FX_MAX_DIMS, e->shape, &e->ndim))
                return false;
        } else {
            int64_t off[2];
            int n;
            if (!st_int_array(p, "data_offsets", 2, off, &n))
                return false;
            if (n != 2)
                return st_fail(p, "data_offsets must have 2 entries, not %d", n);
            e->begin = off[0];
            e->end = off[1];
        }
        if (st_accept(p, '}'))
            break;
        if (!st_expect(p, ',', "or '}' after a field"))
            return false;
    }
    for (int f = 0; f < 3; f++)
        if (!seen[f])
            return st_fail(p, "missing field '%s'", fields[f]);
    return true;
}

/* "__metadata__": {"key":"value",...}: values must be strings. The API has
 * no way to return metadata yet, so it is checked and dropped. */
static bool st_metadata(st_parser *p)
{
    if (!st_expect(p, '{', "to start " ST_META_KEY))
        return false;
    if (st_accept(p, '}'))
        return true;
    for (;;) {
        char *s;
        if (!st_string(p, &s))
            return false;
        free(s);
        if (!st_expect(p, ':', "after a " ST_META_KEY " key"))
            return false;
        st_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != '"')
            return st_fail(p, ST_META_KEY " values must be strings");
        if (!st_string(p, &s))
            return false;
        free(s);
        if (st_accept(p, '}'))
            return true;
        if (!st_expect(p, ',', "or '}' in " ST_META_KEY))
            return false;
    }
}

static bool st_push(st_parser *p, st_header *h, const st_entry *e)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        st_entry *v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v)
            return st_fail(p, "out of memory");
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = *e;
    return true;
}

/* The whole header: one object whose members are tensors and at most one
 * "__metadata__", then nothing but whitespace. */
static bool st_parse(st_parser *p, st_header *h)
{
    bool meta = false;
    st_ws(p);
    if (p->pos >= p->n || p->s[p->pos] != '{') {
        char buf[16];
        return st_fail(p, "the header is not a JSON object: expected '{', found %s",
                       st_found(p, buf, sizeof buf));
    }
    p->pos++;
    if (!st_accept(p, '}')) {
        for (;;) {
            char *name;
            size_t at;
            st_ws(p);
            at = p->pos;
            if (!st_string(p, &name))
                return false;
            if (strcmp(name, ST_META_KEY) == 0) {
                free(name);
                if (meta) {
                    p->pos = at;
                    return st_fail(p, ST_META_KEY " appears twice");
                }
                meta = true;
                if (!st_expect(p, ':', "after " ST_META_KEY) || !st_metadata(p))
                    return false;
            } else {
                st_entry e = { .name = name };
                p->tensor = name;
                bool ok = st_expect(p, ':', "after the tensor's name") && st_tensor(p, &e) &&
                          st_push(p, h, &e);
                p->tensor = NULL;
                if (!ok) {
                    free(name);
                    return false;
                }
            }
            if (st_accept(p, '}'))
                break;
            if (!st_expect(p, ',', "or '}' after a tensor"))
                return false;
        }
    }
    st_ws(p);
    if (p->pos != p->n) {
        char buf[16];
        return st_fail(p, "unexpected %s after the JSON object", st_found(p, buf, sizeof buf));
    }
    return true;
}

/* ----------------------------------------------------------- validation */

static int st_by_name(const void *a, const void *b)
{
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

static int st_by_offset(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/*
 * Checks each entry against a data buffer of dlen bytes (dims, sizes,
 * offsets) and the entries together (unique names; no overlap, no holes,
 * the buffer covered exactly). Fills each entry's nbytes. On success
 * *by_name (if not NULL) gets the entries sorted by name, for lookups.
 */
static fx_status st_validate(st_header *h, uint64_t dlen, st_entry ***by_name, char *err,
                             size_t errlen)
{
    char sh[256];
    for (int i = 0; i < h->n; i++) {
        st_entry *e = &h->v[i];
        const char *dt = st_dtype_str(e->dtype);
        fx_dims_str(e->ndim, e->shape, sh, sizeof sh);
        for (int d = 0; d < e->ndim; d++)
            if (e->shape[d] < 0) {
                st_msg(err, errlen, "tensor '%.*s': shape %s has a negative dimension",
                       ST_NAME_SHOWN, e->name, sh);
                return FX_ERR_FORMAT;
            }
        int64_t numel = fx__shape_numel(e->ndim, e->shape);
        uint64_t es = fx_dtype_size(e->dtype);
        if (numel < 0 || (uint64_t)numel > UINT64_MAX / es) {
            st_msg(err, errlen, "tensor '%.*s': shape %s has too many elements", ST_NAME_SHOWN,
                   e->name, sh);
            return FX_ERR_FORMAT;
        }
        e->nbytes = (uint64_t)numel * es;
        if (e->begin < 0 || e->end < e->begin || (uint64_t)e->end > dlen) {
            st_msg(err, errlen,
                   "tensor '%.*s': data_offsets [%lld,%lld] are not a range inside the "
                   "data buffer of %llu bytes",
                   ST_NAME_SHOWN, e->name, (long long)e->begin, (long long)e->end,
                   (unsigned long long)dlen);
            return FX_ERR_FORMAT;
        }
        if ((uint64_t)(e->end - e->begin) != e->nbytes) {
            st_msg(err, errlen,
                   "tensor '%.*s': data_offsets [%lld,%lld] do not match shape %s %s "
                   "(%llu bytes)",
                   ST_NAME_SHOWN, e->name, (long long)e->begin, (long long)e->end, sh, dt,
                   (unsigned long long)e->nbytes);
            return FX_ERR_FORMAT;
        }
    }

    st_entry **idx = malloc((size_t)(h->n ? h->n : 1) * sizeof *idx);
    if (!idx) {
        st_msg(err, errlen, "out of memory");
        return FX_ERR_NOMEM;
    }
    for (int i = 0; i < h->n; i++)
        idx[i] = &h->v[i];

    qsort(idx, (size_t)h->n, sizeof *idx, st_by_offset);
    int64_t pos = 0;
    for (int i = 0; i < h->n; i++) {
        const st_entry *e = idx[i];
        if (e->begin < pos) {
            const st_entry *q = idx[i - 1];
            st_msg(err, errlen,
                   "tensors '%.*s' [%lld,%lld] and '%.*s' [%lld,%lld] overlap in the data buffer",
                   ST_NAME_SHOWN, q->name, (long long)q->begin, (long long)q->end, ST_NAME_SHOWN,
                   e->name, (long long)e->begin, (long long)e->end);
            free(idx);
            return FX_ERR_FORMAT;
        }
        if (e->begin > pos) {
            st_msg(err, errlen,
                   "bytes [%lld,%lld) of the data buffer belong to no tensor (before "
                   "tensor '%.*s')",
                   (long long)pos, (long long)e->begin, ST_NAME_SHOWN, e->name);
            free(idx);
            return FX_ERR_FORMAT;
        }
        pos = e->end;
    }
    if ((uint64_t)pos != dlen) {
        st_msg(err, errlen,
               "the data buffer has %llu bytes but the tensors cover only the first %lld",
               (unsigned long long)dlen, (long long)pos);
        free(idx);
        return FX_ERR_FORMAT;
    }

    qsort(idx, (size_t)h->n, sizeof *idx, st_by_name);
    for (int i = 1; i < h->n; i++)
        if (strcmp(idx[i - 1]->name, idx[i]->name) == 0) {
            st_msg(err, errlen, "tensor '%.*s' appears twice in the header", ST_NAME_SHOWN,
                   idx[i]->name);
            free(idx);
            return FX_ERR_FORMAT;
        }
    if (by_name)
        *by_name = idx;
    else
        free(idx);
    return FX_OK;
}

/*
 * Parses and validates the header of the file in buf[0..len). On success
 * *data points at the data buffer (inside buf) and the entries are in h.
 */
static fx_status st_read_header(const uint8_t *buf, size_t len, st_header *h,
                                const uint8_t **data, st_entry ***by_name, char *err,
                                size_t errlen)
{
    *h = (st_header){ 0 };
    if (!buf && len) {
        st_msg(err, errlen, "buffer is NULL");
        return FX_ERR_ARG;
    }
    if (len < 8) {
        st_msg(err, errlen, "%zu bytes is too short for a safetensors file (8-byte header length)",
               len);
        return FX_ERR_FORMAT;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > ST_MAX_HEADER) {
        st_msg(err, errlen, "header length %llu exceeds the limit of %u bytes",
               (unsigned long long)hlen, ST_MAX_HEADER);
        return FX_ERR_FORMAT;
    }
    if (hlen > len - 8) {
        st_msg(err, errlen, "header length %llu exceeds the %zu bytes after it (truncated file?)",
               (unsigned long long)hlen, len - 8);
        return FX_ERR_FORMAT;
    }
    st_parser p = { .s = buf + 8, .n = (size_t)hlen, .err = err, .errlen = errlen };
    if (!st_parse(&p, h)) {
        st_header_free(h);
        return FX_ERR_FORMAT;
    }
    fx_status s = st_validate(h, len - 8 - hlen, by_name, err, errlen);
    if (s != FX_OK) {
        st_header_free(h);
        return s;
    }
    *data = buf + 8 + hlen;
    return FX_OK;
}

/* ------------------------------------------------------------- encoding */

static int st_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* False if two tensors of the list share a name (*dup gets it) or on out of
 * memory (*dup stays NULL). Sorts copies of the name pointers: n log n. */
static bool st_unique_names(const fx_params *ts, const char **dup)
{
    *dup = NULL;
    if (ts->count < 2)
        return true;
    const char **names = malloc((size_t)ts->count * sizeof *names);
    if (!names)
        return false;
    for (int i = 0; i < ts->count; i++)
        names[i] = ts->items[i].name;
    qsort(names, (size_t)ts->count, sizeof *names, st_cmp_str);
    for (int i = 1; i < ts->count && !*dup; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            *dup = names[i];
    free(names);
    return !*dup;
}

/*
 * Where each tensor's bytes go in the data buffer. Like the reference
 * writer, the data is ordered by decreasing element size (8, 4, then 2
 * bytes; list order within a size), so that with the header padded to a
 * multiple of 8 every tensor is aligned to its element size in the file, as
 * readers that map the file without copying want. The header itself keeps
 * the list's order.
 */
typedef struct {
    int *order;     /* tensor indices in data order */
    uint64_t *off;  /* per tensor (list index), from the start of the data */
    uint64_t dlen;  /* size of the data buffer */
    uint64_t maxbytes; /* the largest tensor */
} st_layout;

static void st_layout_free(st_layout *l)
{
    free(l->order);
    free(l->off);
}

static size_t st_nbytes(const fx_tensor *t)
{
    return (size_t)fx_tensor_numel(t) * fx_dtype_size(t->dtype);
}

/*
 * Checks the tensors and metadata to save, lays the data out (lay) and
 * builds the padded header (without the 8-byte length) into hdr.
 */
static fx_status st_build_header(const fx_params *ts, int nmeta, const char *const *keys,
                                 const char *const *values, st_buf *hdr, st_layout *lay,
                                 char *err, size_t errlen)
{
    *lay = (st_layout){ 0 };
    if (!ts || nmeta < 0 || (nmeta > 0 && (!keys || !values)) || ts->count < 0 ||
        (ts->count > 0 && !ts->items)) {
        st_msg(err, errlen, "safetensors: bad arguments (NULL tensor list or metadata arrays)");
        return FX_ERR_ARG;
    }
    for (int i = 0; i < ts->count; i++) {
        const fx_named_tensor *it = &ts->items[i];
        if (!it->name || !it->tensor) {
            st_msg(err, errlen, "safetensors: entry %d has a NULL %s", i,
                   it->name ? "tensor" : "name");
            return FX_ERR_ARG;
        }
        if (!st_valid_utf8(it->name) || strcmp(it->name, ST_META_KEY) == 0 ||
            !st_dtype_str(it->tensor->dtype)) {
            st_msg(err, errlen, "safetensors: tensor name '%.*s' is not valid UTF-8, is reserved, "
                                "or its dtype cannot be saved",
                   ST_NAME_SHOWN, it->name);
            return FX_ERR_ARG;
        }
    }
    const char *dup = NULL;
    if (!st_unique_names(ts, &dup)) {
        if (!dup) {
            st_msg(err, errlen, "safetensors: out of memory");
            return FX_ERR_NOMEM;
        }
        st_msg(err, errlen, "safetensors: tensor name '%.*s' appears twice", ST_NAME_SHOWN, dup);
        return FX_ERR_ARG;
    }
    for (int i = 0; i < nmeta; i++)
        if (!keys[i] || !values[i] || !st_valid_utf8(keys[i]) || !st_valid_utf8(values[i])) {
            st_msg(err, errlen, "safetensors: metadata entry %d is NULL or not valid UTF-8", i);
            return FX_ERR_ARG;
        }

    size_t n = (size_t)(ts->count ? ts->count : 1);
    lay->order = malloc(n * sizeof *lay->order);
    lay->off = malloc(n * sizeof *lay->off);
    if (!lay->order || !lay->off) {
        st_msg(err, errlen, "safetensors: out of memory");
        return FX_ERR_NOMEM;
    }
    int k = 0;
    for (size_t es = 8; es >= 1; es /= 2)
        for (int i = 0; i < ts->count; i++) {
            const fx_tensor *t = ts->items[i].tensor;
            if (fx_dtype_size(t->dtype) != es)
                continue;
            uint64_t nb = st_nbytes(t);
            lay->order[k++] = i;
            lay->off[i] = lay->dlen;
            lay->dlen += nb;
            if (nb > lay->maxbytes)
                lay->maxbytes = nb;
        }

    st_puts(hdr, "{");
    for (int i = 0; i < ts->count; i++) {
        const fx_tensor *t = ts->items[i].tensor;
        uint64_t off = lay->off[i], nb = st_nbytes(t);
        char num[64], dims[FX_MAX_DIMS * 21 + 2];
        if (i)
            st_puts(hdr, ",");
        st_put_json_string(hdr, ts->items[i].name);
        st_puts(hdr, ":{\"dtype\":\"");
        st_puts(hdr, st_dtype_str(t->dtype));
        st_puts(hdr, "\",\"shape\":");
        st_puts(hdr, fx_dims_str(t->ndim, t->shape, dims, sizeof dims)); /* a JSON array */
        snprintf(num, sizeof num, ",\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nb));
        st_puts(hdr, num);
    }
    if (nmeta > 0) {
        st_puts(hdr, ts->count ? ",\"" ST_META_KEY "\":{" : "\"" ST_META_KEY "\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i)
                st_puts(hdr, ",");
            st_put_json_string(hdr, keys[i]);
            st_puts(hdr, ":");
            st_put_json_string(hdr, values[i]);
        }
        st_puts(hdr, "}");
    }
    st_puts(hdr, "}");
    while (!hdr->oom && hdr->n % 8)
        st_puts(hdr, " ");
    if (hdr->oom || lay->dlen > SIZE_MAX / 2) {
        st_msg(err, errlen, "safetensors: out of memory building the header");
        return FX_ERR_NOMEM;
    }
    if (hdr->n > ST_MAX_HEADER) {
        st_msg(err, errlen, "safetensors: the header would be %zu bytes, over the %u-byte limit",
               hdr->n, ST_MAX_HEADER);
        return FX_ERR_ARG;
    }
    return FX_OK;
}

static void st_put_u64le(uint8_t *o, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        o[i] = (uint8_t)(v >> (8 * i));
}

fx_status fx_safetensors_encode(const fx_params *tensors, int nmeta, const char *const *keys,
                                const char *const *values, uint8_t **out, size_t *outlen,
                                char *err, size_t errlen)
{
    st_msg(err, errlen, "%s", "");
    if (!out || !outlen) {
        st_msg(err, errlen, "safetensors: NULL output pointer");
        return FX_ERR_ARG;
    }
    *out = NULL;
    *outlen = 0;
    st_buf hdr = { 0 };
    st_layout lay;
    fx_status s = st_build_header(tensors, nmeta, keys, values, &hdr, &lay, err, errlen);
    size_t total = 8 + hdr.n + (size_t)lay.dlen;
    uint8_t *buf = s == FX_OK ? malloc(total) : NULL;
    if (s == FX_OK && !buf) {
        st_msg(err, errlen, "safetensors: out of memory for %zu bytes", total);
        s = FX_ERR_NOMEM;
    }
    if (s == FX_OK) {
        st_put_u64le(buf, hdr.n);
        memcpy(buf + 8, hdr.s, hdr.n);
    }
    for (int i = 0; s == FX_OK && i < tensors->count; i++) {
        const fx_tensor *t = tensors->items[i].tensor;
        s = fx_tensor_to_host(t, buf + 8 + hdr.n + lay.off[i], st_nbytes(t));
        if (s != FX_OK)
            st_msg(err, errlen, "safetensors: cannot read tensor '%.*s' to the host: %s",
                   ST_NAME_SHOWN, tensors->items[i].name, fx_status_name(s));
    }
    free(hdr.s);
    st_layout_free(&lay);
    if (s != FX_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    *outlen = total;
    return FX_OK;
}

/* ---------------------------------------------------------------- files */

/* fwrite that records an I/O error naming the file. */
static fx_status st_fwrite(FILE *f, const void *p, size_t n, const char *path, char *err,
                           size_t errlen)
{
    if (n && fwrite(p, 1, n, f) != n) {
        st_msg(err, errlen, "cannot write '%s': %s", path, strerror(errno ? errno : EIO));
        return FX_ERR_IO;
    }
    return FX_OK;
}

/* fsyncs the directory holding path, so that a rename into it is durable.
 * File systems that cannot sync directories (EINVAL) are not an error. */
static fx_status st_sync_dir(const char *path, char *err, size_t errlen)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) {
        st_msg(err, errlen, "out of memory");
        return FX_ERR_NOMEM;
    }
    fx_status s = FX_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL)) {
        st_msg(err, errlen, "cannot sync directory '%s': %s", dir, strerror(errno));
        s = FX_ERR_IO;
    }
    if (fd >= 0)
        close(fd);
    free(dir);
    return s;
}

/*
 * Writes "<path>.tmp.<pid>" (header, then each tensor through a scratch
 * buffer of the largest tensor's size), flushes and fsyncs it, renames it
 * over path and fsyncs the directory. A reader sees the old file or the new
 * one, never a part; the temporary file is removed on any error.
 */
fx_status fx_safetensors_save(const char *path, const fx_params *tensors, int nmeta,
                              const char *const *keys, const char *const *values, char *err,
                              size_t errlen)
{
    st_msg(err, errlen, "%s", "");
    if (!path || !*path) {
        st_msg(err, errlen, "safetensors: empty or NULL path");
        return FX_ERR_ARG;
    }
    st_buf hdr = { 0 };
    st_layout lay;
    fx_status s = st_build_header(tensors, nmeta, keys, values, &hdr, &lay, err, errlen);
    size_t tmplen = strlen(path) + 32;
    char *tmp = malloc(tmplen);
    void *scratch = s == FX_OK ? malloc(lay.maxbytes ? (size_t)lay.maxbytes : 1) : NULL;
    FILE *f = NULL;
    if (s == FX_OK && (!tmp || !scratch)) {
        st_msg(err, errlen, "safetensors: out of memory");
        s = FX_ERR_NOMEM;
    }
    if (s == FX_OK) {
        snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());
        f = fopen(tmp, "wb");
        if (!f) {
            st_msg(err, errlen, "cannot create '%s': %s", tmp, strerror(errno));
            s = FX_ERR_IO;
        }
    }
    if (s == FX_OK) {
        uint8_t len8[8];
        st_put_u64le(len8, hdr.n);
        errno = 0;
        s = st_fwrite(f, len8, 8, tmp, err, errlen);
        if (s == FX_OK)
            s = st_fwrite(f, hdr.s, hdr.n, tmp, err, errlen);
    }
    for (int k = 0; s == FX_OK && k < tensors->count; k++) {
        int i = lay.order[k];
        const fx_tensor *t = tensors->items[i].tensor;
        size_t nb = st_nbytes(t);
        s = fx_tensor_to_host(t, scratch, nb);
        if (s != FX_OK)
            st_msg(err, errlen, "safetensors: cannot read tensor '%.*s' to the host: %s",
                   ST_NAME_SHOWN, tensors->items[i].name, fx_status_name(s));
        else
            s = st_fwrite(f, scratch, nb, tmp, err, errlen);
    }
    if (s == FX_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0)) {
        st_msg(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
        s = FX_ERR_IO;
    }
    if (f) {
        int rc = fclose(f);
        if (s == FX_OK && rc != 0) {
            st_msg(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
            s = FX_ERR_IO;
        }
    }
    if (s == FX_OK && rename(tmp, path) != 0) {
        st_msg(err, errlen, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        s = FX_ERR_IO;
    }
    if (f && s != FX_OK)
        unlink(tmp);
    if (s == FX_OK)
        s = st_sync_dir(path, err, errlen);
    free(scratch);
    free(tmp);
    free(hdr.s);
    st_layout_free(&lay);
    return s;
}

/* Reads a whole regular file into a malloc'd buffer. */
static fx_status st_read_file(const char *path, uint8_t **buf, size_t *len, char *err,
                              size_t errlen)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        st_msg(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return FX_ERR_IO;
    }
    struct stat st;
    int ok = fstat(fileno(f), &st) == 0;
    if (!ok || !S_ISREG(st.st_mode)) {
        int e = !ok ? errno : S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        st_msg(err, errlen, "cannot read '%s': %s", path, strerror(e));
        fclose(f);
        return FX_ERR_IO;
    }
    if ((uint64_t)st.st_size > SIZE_MAX - 1) {
        st_msg(err, errlen, "cannot read '%s': file too large", path);
        fclose(f);
        return FX_ERR_IO;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        st_msg(err, errlen, "out of memory reading '%s' (%zu bytes)", path, n);
        fclose(f);
        return FX_ERR_NOMEM;
    }
    size_t got = fread(b, 1, n, f);
    if (got != n && ferror(f)) {
        st_msg(err, errlen, "cannot read '%s': %s", path, strerror(errno ? errno : EIO));
        fclose(f);
        free(b);
        return FX_ERR_IO;
    }
    fclose(f);
    *buf = b;
    *len = got; /* shorter if the file shrank meanwhile: then it is truncated */
    return FX_OK;
}

/* Prefixes a message with the file's path. */
static void st_with_path(const char *path, const char *msg, char *err, size_t errlen)
{
    st_msg(err, errlen, "'%s': %s", path, msg);
}

/* ------------------------------------------------------------- decoding */

/* True if one of the header's names is already in the list (the first such
 * name in *clash). Sorted lookups: n log n, not n * count. */
static bool st_clashes(const fx_params *out, const st_header *h, const char **clash, bool *oom)
{
    *oom = false;
    if (out->count == 0 || h->n == 0)
        return false;
    const char **names = malloc((size_t)out->count * sizeof *names);
    if (!names) {
        *oom = true;
        return false;
    }
    for (int i = 0; i < out->count; i++)
        names[i] = out->items[i].name;
    qsort(names, (size_t)out->count, sizeof *names, st_cmp_str);
    bool hit = false;
    for (int i = 0; i < h->n && !hit; i++) {
        const char *key = h->v[i].name;
        if (bsearch(&key, names, (size_t)out->count, sizeof *names, st_cmp_str)) {
            *clash = key;
            hit = true;
        }
    }
    free(names);
    return hit;
}

/*
 * Creates every tensor first and appends them all at the end, so that a
 * failure adds nothing. The entries are appended to the list directly, not
 * through fx_params_add: their names are already known to be unique, and
 * fx_params_add's linear uniqueness scan would make a crafted header with
 * millions of entries take quadratic time. fx_params is a public struct
 * whose items grow with realloc and whose names it owns and free()s; the
 * parser's malloc'd names are handed over as they are.
 */
fx_status fx_safetensors_decode(const uint8_t *buf, size_t len, fx_params *out, char *err,
                                size_t errlen)
{
    st_msg(err, errlen, "%s", "");
    if (!out || out->count < 0 || (out->count > 0 && !out->items)) {
        st_msg(err, errlen, "safetensors: NULL or invalid output list");
        return FX_ERR_ARG;
    }
    st_header h;
    const uint8_t *data;
    fx_status s = st_read_header(buf, len, &h, &data, NULL, err, errlen);
    if (s != FX_OK)
        return s;
    const char *clash = NULL;
    bool oom;
    if (st_clashes(out, &h, &clash, &oom)) {
        st_msg(err, errlen, "tensor '%.*s' is already in the output list", ST_NAME_SHOWN, clash);
        s = FX_ERR_ARG;
    } else if (oom || out->count > INT32_MAX - h.n) {
        st_msg(err, errlen, "out of memory");
        s = FX_ERR_NOMEM;
    }
    if (s == FX_OK && out->count + h.n > out->cap) {
        fx_named_tensor *items = realloc(out->items, (size_t)(out->count + h.n) * sizeof *items);
        if (!items) {
            st_msg(err, errlen, "out of memory");
            s = FX_ERR_NOMEM;
        } else {
            out->items = items;
            out->cap = out->count + h.n;
        }
    }

    fx_tensor **ts = s == FX_OK ? calloc((size_t)(h.n ? h.n : 1), sizeof *ts) : NULL;
    if (s == FX_OK && !ts) {
        st_msg(err, errlen, "out of memory");
        s = FX_ERR_NOMEM;
    }
    for (int i = 0; s == FX_OK && i < h.n; i++) {
        const st_entry *e = &h.v[i];
        ts[i] = fx_tensor_create(fx_cpu(), e->dtype, e->ndim, e->shape);
        s = ts[i] ? fx_tensor_copy_from_host(ts[i], data + e->begin, (size_t)e->nbytes)
                  : FX_ERR_NOMEM;
        if (s != FX_OK)
            st_msg(err, errlen, "tensor '%.*s': cannot create it (%s)", ST_NAME_SHOWN, e->name,
                   fx_status_name(s));
    }
    for (int i = 0; s == FX_OK && i < h.n; i++) {
        out->items[out->count++] = (fx_named_tensor){ h.v[i].name, ts[i] };
        h.v[i].name = NULL; /* now the list's */
    }
    if (s != FX_OK && ts)
        for (int i = 0; i < h.n; i++)
            fx_tensor_free(ts[i]);
    free(ts);
    st_header_free(&h);
    return s;
}

fx_status fx_safetensors_load(const char *path, fx_params *out, char *err, size_t errlen)
{
    st_msg(err, errlen, "%s", "");
    if (!path || !out) {
        st_msg(err, errlen, "safetensors: NULL path or output list");
        return FX_ERR_ARG;
    }
    uint8_t *buf;
    size_t len;
    fx_status s = st_read_file(path, &buf, &len, err, errlen);
    if (s != FX_OK)
        return s;
    char msg[512];
    s = fx_safetensors_decode(buf, len, out, msg, sizeof msg);
    if (s != FX_OK)
        st_with_path(path, msg, err, errlen);
    free(buf);
    return s;
}

/*
 * Checks every destination against the file first (present unless
 * allow_missing, same dtype, same shape), and only then copies, so that a
 * mismatch leaves every destination as it was. A missing tensor is
 * FX_ERR_ARG, a dtype mismatch FX_ERR_DTYPE, a shape mismatch FX_ERR_SHAPE.
 * Tensors of the file that no destination names are ignored.
 */
fx_status fx_safetensors_load_into(const char *path, const fx_params *dst, bool allow_missing,
                                   char *err, size_t errlen)
{
    st_msg(err, errlen, "%s", "");
    if (!path || !dst || dst->count < 0 || (dst->count > 0 && !dst->items)) {
        st_msg(err, errlen, "safetensors: NULL path or destination list");
        return FX_ERR_ARG;
    }
    uint8_t *buf;
    size_t len;
    fx_status s = st_read_file(path, &buf, &len, err, errlen);
    if (s != FX_OK)
        return s;
    char msg[512];
    st_header h;
    st_entry **by_name = NULL;
    const uint8_t *data;
    s = st_read_header(buf, len, &h, &data, &by_name, msg, sizeof msg);
    if (s != FX_OK) {
        st_with_path(path, msg, err, errlen);
        free(buf);
        return s;
    }
    const st_entry **src = calloc((size_t)(dst->count ? dst->count : 1), sizeof *src);
    if (!src) {
        st_msg(err, errlen, "out of memory");
        s = FX_ERR_NOMEM;
    }
    for (int i = 0; s == FX_OK && i < dst->count; i++) {
        const fx_named_tensor *d = &dst->items[i];
        if (!d->name || !d->tensor) {
            st_msg(err, errlen, "safetensors: destination %d has a NULL name or tensor", i);
            s = FX_ERR_ARG;
            break;
        }
        st_entry key = { .name = d->name }, *kp = &key;
        st_entry **hit = bsearch(&kp, by_name, (size_t)h.n, sizeof *by_name, st_by_name);
        if (!hit) {
            if (allow_missing)
                continue;
            st_msg(err, errlen, "'%s' has no tensor '%.*s'", path, ST_NAME_SHOWN, d->name);
            s = FX_ERR_ARG;
            break;
        }
        const st_entry *e = *hit;
        char a[256], b[256];
        if (e->dtype != d->tensor->dtype) {
            st_msg(err, errlen, "tensor '%.*s': the file has %s, the destination is %s",
                   ST_NAME_SHOWN, d->name, st_dtype_str(e->dtype),
                   fx_dtype_name(d->tensor->dtype));
            s = FX_ERR_DTYPE;
        } else if (e->ndim != d->tensor->ndim ||
                   memcmp(e->shape, d->tensor->shape, (size_t)e->ndim * sizeof *e->shape) != 0) {
            st_msg(err, errlen, "tensor '%.*s': the file has shape %s, the destination %s",
                   ST_NAME_SHOWN, d->name, fx_dims_str(e->ndim, e->shape, a, sizeof a),
                   fx_shape_str(d->tensor, b, sizeof b));
            s = FX_ERR_SHAPE;
        }
        src[i] = e;
    }
    for (int i = 0; s == FX_OK && i < dst->count; i++) {
        if (!src[i])
            continue;
        s = fx_tensor_copy_from_host(dst->items[i].tensor, data + src[i]->begin,
                                     (size_t)src[i]->nbytes);
        if (s != FX_OK)
            st_msg(err, errlen, "tensor '%.*s': copy failed (%s)", ST_NAME_SHOWN,
                   dst->items[i].name, fx_status_name(s));
    }
    free(src);
    free(by_name);
    st_header_free(&h);
    free(buf);
    return s;
}
