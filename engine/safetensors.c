/*
 * safetensors.c - checkpoints in the safetensors format: reading (header
 * grammar, validation, decoding). Writing is in safetensors_write.c, what
 * both share in safetensors_format.h.
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
 * small strict JSON reader (json.c) that accepts exactly what the format needs
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
#include "json.h"
#include "safetensors_format.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

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

/* ------------------------------------------------------- header grammar */

/*
 * The header is read with the strict JSON reader of json.h over exactly its
 * n bytes. The nesting is fixed by the format (object of objects of arrays),
 * so nothing recurses on input. Every error is recorded once, with the
 * header byte where it happened and the tensor being parsed (the reader's
 * scope), and makes the caller unwind.
 */

/* {"dtype":"F32","shape":[..],"data_offsets":[b,e]}: each field exactly
 * once, no others. */
static bool st_tensor(fx_json *p, st_entry *e)
{
    static const char *fields[] = { "dtype", "shape", "data_offsets" };
    bool seen[3] = { false, false, false };
    if (!fx__json_expect(p, '{', "to start the tensor's entry"))
        return false;
    if (fx__json_accept(p, '}'))
        return fx__json_fail(p, "missing field 'dtype'");
    for (;;) {
        char *key;
        size_t at = p->pos;
        if (!fx__json_string(p, &key))
            return false;
        int f = 0;
        while (f < 3 && strcmp(key, fields[f]) != 0)
            f++;
        if (f == 3) {
            p->pos = at;
            fx__json_fail(p, "unknown field '%.*s'", ST_NAME_SHOWN, key);
            free(key);
            return false;
        }
        free(key);
        if (seen[f]) {
            p->pos = at;
            return fx__json_fail(p, "field '%s' appears twice", fields[f]);
        }
        seen[f] = true;
        if (!fx__json_expect(p, ':', "after a field name"))
            return false;
        if (f == 0) {
            char *dt;
            fx__json_ws(p);
            at = p->pos;
            if (!fx__json_string(p, &dt))
                return false;
            if (!st_dtype_parse(dt, &e->dtype)) {
                p->pos = at;
                fx__json_fail(p, "unsupported dtype '%.*s' (Fluxion reads F32, F16, BF16, I32, "
                              "I64)", 32, dt);
                free(dt);
                return false;
            }
            free(dt);
        } else if (f == 1) {
            char what[48];
            snprintf(what, sizeof what, "shape (at most %d dimensions)", FX_MAX_DIMS);
            if (!fx__json_int_array(p, what, FX_MAX_DIMS, e->shape, &e->ndim))
                return false;
        } else {
            int64_t off[2];
            int n;
            if (!fx__json_int_array(p, "data_offsets", 2, off, &n))
                return false;
            if (n != 2)
                return fx__json_fail(p, "data_offsets must have 2 entries, not %d", n);
            e->begin = off[0];
            e->end = off[1];
        }
        if (fx__json_accept(p, '}'))
            break;
        if (!fx__json_expect(p, ',', "or '}' after a field"))
            return false;
    }
    for (int f = 0; f < 3; f++)
        if (!seen[f])
            return fx__json_fail(p, "missing field '%s'", fields[f]);
    return true;
}

/* "__metadata__": {"key":"value",...}: values must be strings. The API has
 * no way to return metadata yet, so it is checked and dropped. */
static bool st_metadata(fx_json *p)
{
    if (!fx__json_expect(p, '{', "to start " ST_META_KEY))
        return false;
    if (fx__json_accept(p, '}'))
        return true;
    for (;;) {
        char *s;
        if (!fx__json_string(p, &s))
            return false;
        free(s);
        if (!fx__json_expect(p, ':', "after a " ST_META_KEY " key"))
            return false;
        fx__json_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != '"')
            return fx__json_fail(p, ST_META_KEY " values must be strings");
        if (!fx__json_string(p, &s))
            return false;
        free(s);
        if (fx__json_accept(p, '}'))
            return true;
        if (!fx__json_expect(p, ',', "or '}' in " ST_META_KEY))
            return false;
    }
}

static bool st_push(fx_json *p, st_header *h, const st_entry *e)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        st_entry *v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v)
            return fx__json_fail(p, "out of memory");
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = *e;
    return true;
}

/* The whole header: one object whose members are tensors and at most one
 * "__metadata__", then nothing but whitespace. */
static bool st_parse(fx_json *p, st_header *h)
{
    bool meta = false;
    fx__json_ws(p);
    if (p->pos >= p->n || p->s[p->pos] != '{') {
        char buf[48];
        return fx__json_fail(p, "the header is not a JSON object: expected '{', found %s",
                             fx__json_found(p, buf, sizeof buf));
    }
    p->pos++;
    if (!fx__json_accept(p, '}')) {
        for (;;) {
            char *name;
            size_t at;
            fx__json_ws(p);
            at = p->pos;
            if (!fx__json_string(p, &name))
                return false;
            if (strcmp(name, ST_META_KEY) == 0) {
                free(name);
                if (meta) {
                    p->pos = at;
                    return fx__json_fail(p, ST_META_KEY " appears twice");
                }
                meta = true;
                if (!fx__json_expect(p, ':', "after " ST_META_KEY) || !st_metadata(p))
                    return false;
            } else {
                st_entry e = { .name = name };
                p->scope = name;
                bool ok = fx__json_expect(p, ':', "after the tensor's name") && st_tensor(p, &e) &&
                          st_push(p, h, &e);
                p->scope = NULL;
                if (!ok) {
                    free(name);
                    return false;
                }
            }
            if (fx__json_accept(p, '}'))
                break;
            if (!fx__json_expect(p, ',', "or '}' after a tensor"))
                return false;
        }
    }
    fx__json_ws(p);
    if (p->pos != p->n) {
        char buf[48];
        return fx__json_fail(p, "unexpected %s after the JSON object",
                             fx__json_found(p, buf, sizeof buf));
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
    fx_json p = { .s = buf + 8, .n = (size_t)hlen, .doc = "header", .scope_kind = "tensor",
                  .err = err, .errlen = errlen };
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

/* ---------------------------------------------------------------- files */

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
