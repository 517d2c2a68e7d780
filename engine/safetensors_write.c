/*
 * safetensors_write.c - checkpoints in the safetensors format: writing (the
 * data layout, the JSON header, encoding to memory and the atomic save).
 * The format is described in safetensors.c.
 */
#include "json.h"
#include "safetensors_format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/* ------------------------------------------------------------- encoding */

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
                                 const char *const *values, fx_jbuf *hdr, st_layout *lay,
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
        if (!fx__utf8_valid(it->name) || strcmp(it->name, ST_META_KEY) == 0 ||
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
        if (!keys[i] || !values[i] || !fx__utf8_valid(keys[i]) || !fx__utf8_valid(values[i])) {
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

    fx__jbuf_puts(hdr, "{");
    for (int i = 0; i < ts->count; i++) {
        const fx_tensor *t = ts->items[i].tensor;
        uint64_t off = lay->off[i], nb = st_nbytes(t);
        char num[64], dims[FX_MAX_DIMS * 21 + 2];
        if (i)
            fx__jbuf_puts(hdr, ",");
        fx__jbuf_string(hdr, ts->items[i].name);
        fx__jbuf_puts(hdr, ":{\"dtype\":\"");
        fx__jbuf_puts(hdr, st_dtype_str(t->dtype));
        fx__jbuf_puts(hdr, "\",\"shape\":");
        fx__jbuf_puts(hdr, fx_dims_str(t->ndim, t->shape, dims, sizeof dims)); /* a JSON array */
        snprintf(num, sizeof num, ",\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nb));
        fx__jbuf_puts(hdr, num);
    }
    if (nmeta > 0) {
        fx__jbuf_puts(hdr, ts->count ? ",\"" ST_META_KEY "\":{" : "\"" ST_META_KEY "\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i)
                fx__jbuf_puts(hdr, ",");
            fx__jbuf_string(hdr, keys[i]);
            fx__jbuf_puts(hdr, ":");
            fx__jbuf_string(hdr, values[i]);
        }
        fx__jbuf_puts(hdr, "}");
    }
    fx__jbuf_puts(hdr, "}");
    while (!hdr->oom && hdr->n % 8)
        fx__jbuf_puts(hdr, " ");
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
    fx_jbuf hdr = { 0 };
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
    fx_jbuf hdr = { 0 };
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
