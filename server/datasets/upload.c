/*
 * upload.c - uploads of datasets (see datasets.h).
 *
 * An upload appends each tensor's pieces to a spill file in tmp/ (so clients
 * may send the tensors in any interleaving without the daemon holding them
 * in memory); each spill file is unlinked as soon as it exists, so an abort
 * or a crash leaves nothing. The commit cuts shards from the spill files
 * (each written in tmp/, fsynced and renamed into a staging directory
 * datasets/.staging-XXXXXX), fsyncs the staging directory, then, inside one
 * store transaction, renames it to datasets/<name> and inserts the row. A
 * crash before the commit leaves a staging directory or a directory without
 * a row: both removed at open (datasets.c).
 *
 * The name an upload takes and the bytes it reserves against the quota are
 * the registry's (fxds__upload_register, fxds__quota_reserve in datasets.c):
 * this file never takes the registry's lock itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/text.h"
#include "base/util.h"
#include "datasets/datasets_internal.h"

/* ------------------------------------------------------------- helpers */

/* pread of exactly len bytes; -1 with errno on an error or early end. */
static int read_at(int fd, void *buf, size_t len, off_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            errno = EIO; /* the spill file is shorter than its count: say so */
        if (r <= 0)
            return -1;
        p += r;
        len -= (size_t)r;
        off += r;
    }
    return 0;
}

/* Tensor names end up in safetensors JSON headers and in messages: no
 * quoting needed if there are no quotes, backslashes or control bytes; and
 * in Dataset replies, whose string fields must be valid UTF-8. */
static int check_tensor_name(const char *name, char *err, size_t errlen)
{
    size_t n = strlen(name);
    if (n == 0 || n > FXDS__TENSOR_NAME_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "a tensor name must be 1 to %d bytes "
                        "long (got %zu)", FXDS__TENSOR_NAME_MAX, n);
    if (strcmp(name, "__metadata__") == 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor name \"__metadata__\" is "
                        "reserved by safetensors");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor name \"%.64s\" has byte "
                            "0x%02x at position %zu (no quotes, backslashes or control "
                            "characters)", name, c, i);
    }
    /* The RPC layer refuses such names already (rpc/wirecheck.h); this
     * keeps the module's own rule whole for any other caller. */
    size_t bad = fxu_utf8_invalid_at(name, n);
    if (bad < n)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "a tensor name is not valid UTF-8 "
                        "(byte 0x%02x at position %zu)", (unsigned char)name[bad], bad);
    return 0;
}
/* ------------------------------------------------------ placing the data */

/* Commit: the directory is renamed into place first, so a taken name (or a
 * stray directory) fails before the row exists. */
static int place_dir(void *ctx, char *err, size_t errlen)
{
    fxds__move *c = ctx;
    if (rename(c->from, c->to) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY)
            return fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "a dataset named '%s' already exists",
                        c->name);
        return fxu_fail(err, errlen, FXS_INTERNAL, "cannot rename %s to %s: %s", c->from, c->to,
                    strerror(errno));
    }
    c->renamed = true;
    /* the rename must be durable before the row is: a row without its
     * directory would be a dataset that cannot be opened */
    char *parent = strdup(c->to);
    char *slash = parent ? strrchr(parent, '/') : NULL;
    if (slash)
        *slash = '\0';
    int rc = parent ? fxu_fsync_dir(parent, err, errlen) : fxu_oom(err, errlen);
    free(parent);
    return rc;
}

/* ------------------------------------------------------ begin, add, abort */

int fxds_upload_begin(fxds_datasets *ds, const char *name, const char *description,
                     fxds_upload **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = fxds__check_name(name, err, errlen);
    if (rc)
        return rc;
    if (description && strlen(description) > FXDS__DESCRIPTION_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "description: %zu bytes (at most %d)",
                    strlen(description), FXDS__DESCRIPTION_MAX);
    Fluxion__V1__Dataset *old = NULL;
    rc = fxds__get_info(ds->st, name, &old, err, errlen);
    if (rc == 0) {
        fluxion__v1__dataset__free_unpacked(old, NULL);
        return fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "a dataset named '%s' already exists "
                    "(delete it first or choose another name)", name);
    }
    if (rc != FXS_NOT_FOUND)
        return rc;
    rc = 0;
    fxds_upload *u = calloc(1, sizeof *u);
    if (!u || !(u->name = strdup(name)) ||
        !(u->description = strdup(description ? description : ""))) {
        if (u)
            free(u->name);
        free(u);
        return fxu_oom(err, errlen);
    }
    u->ds = ds;
    rc = fxds__upload_register(ds, u, err, errlen);
    if (rc) {
        free(u->name);
        free(u->description);
        free(u);
        return rc;
    }
    *out = u;
    return 0;
}

/* Removes u from the list of uploads, gives back its reservation, frees it. */
static void upload_free(fxds_upload *u)
{
    fxds__upload_unregister(u->ds, u);
    for (int i = 0; i < u->n; i++) {
        free(u->t[i].name);
        if (u->t[i].fd >= 0)
            close(u->t[i].fd);
        EVP_MD_CTX_free(u->t[i].sha);
    }
    free(u->t);
    free(u->name);
    free(u->description);
    free(u);
}

const char *fxds_upload_name(const fxds_upload *u)
{
    return u->name;
}

void fxds_upload_abort(fxds_upload *u)
{
    if (u)
        upload_free(u);
}

/* The spill file is unlinked as soon as it exists: an abort or a crash
 * leaves nothing behind. */
static int spill_open(fxds_datasets *ds, char *err, size_t errlen)
{
    const char *tmp = fxdb_store_tmp_dir(ds->st);
    int fd = open(tmp, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char *p = fxu_strf("%s/.spill.tmp.XXXXXX", tmp);
    fd = p ? mkostemp(p, O_CLOEXEC) : -1;
    if (fd >= 0)
        unlink(p);
    else
        fxu_fail(err, errlen, FXS_INTERNAL, "cannot create a file in %s: %s", tmp, strerror(errno));
    free(p);
    return fd;
}

static fxds__tensor *find_tensor(fxds_upload *u, const char *name)
{
    for (int i = 0; i < u->n; i++)
        if (strcmp(u->t[i].name, name) == 0)
            return &u->t[i];
    return NULL;
}

static int new_tensor(fxds_upload *u, const Fluxion__V1__TensorData *t, fx_dtype dt,
                      fxds__tensor **out, char *err, size_t errlen)
{
    if (u->n >= FXDS__MAX_TENSORS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': a dataset holds at most %d "
                    "tensors", t->name, FXDS__MAX_TENSORS);
    fxds__tensor *nt = realloc(u->t, (size_t)(u->n + 1) * sizeof *nt);
    if (!nt)
        return fxu_oom(err, errlen);
    u->t = nt;
    fxds__tensor *x = &nt[u->n];
    *x = (fxds__tensor){ .dtype = dt, .sample_ndim = (int)t->n_shape - 1, .fd = -1 };
    x->sample_bytes = fx_dtype_size(dt);
    for (int i = 0; i < x->sample_ndim; i++) {
        x->sample_shape[i] = t->shape[i + 1];
        x->sample_bytes *= (uint64_t)t->shape[i + 1];
    }
    if (!(x->name = strdup(t->name)) || !(x->sha = EVP_MD_CTX_new())) {
        free(x->name);
        return fxu_oom(err, errlen);
    }
    EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL);
    if ((x->fd = spill_open(u->ds, err, errlen)) < 0) {
        free(x->name);
        EVP_MD_CTX_free(x->sha);
        return FXS_INTERNAL;
    }
    u->n++;
    *out = x;
    return 0;
}

/* Shape, dtype and size of one piece on its own; *bytes gets its size. */
static int check_piece(const Fluxion__V1__TensorData *t, fx_dtype *dt, uint64_t *bytes,
                       char *err, size_t errlen)
{
    int rc = check_tensor_name(t->name, err, errlen);
    if (rc)
        return rc;
    if (!fxg_dtype_from_proto(t->dtype, dt))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': dtype %d is not FP32, "
                    "INT32 or INT64", t->name, (int)t->dtype);
    if (t->n_shape < 1 || t->n_shape > FX_MAX_DIMS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': shape has %zu dimensions "
                    "(1 to %d: the samples, then one sample's shape)", t->name, t->n_shape,
                    FX_MAX_DIMS);
    uint64_t n = fx_dtype_size(*dt);
    for (size_t i = 0; i < t->n_shape; i++) {
        if (t->shape[i] < (i == 0 ? 0 : 1))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': dimension %zu is "
                        "%" PRId64 " (sample counts must be >= 0, sample dimensions >= 1)",
                        t->name, i, t->shape[i]);
        if (__builtin_mul_overflow(n, (uint64_t)t->shape[i], &n) || n > (1ull << 62))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': shape too large",
                        t->name);
    }
    if (n != t->data.len)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': data has %zu bytes but "
                    "shape and dtype %s need %" PRIu64, t->name, t->data.len, fxds__st_dtype(*dt), n);
    *bytes = n;
    return 0;
}

/* The same tensor again: same dtype, same per-sample shape. */
static int check_same(const fxds__tensor *x, const Fluxion__V1__TensorData *t, fx_dtype dt,
                      char *err, size_t errlen)
{
    if (x->dtype != dt)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': dtype changed from %s to "
                    "%s between chunks", t->name, fxds__st_dtype(x->dtype), fxds__st_dtype(dt));
    bool same = (int)t->n_shape - 1 == x->sample_ndim;
    for (int i = 0; same && i < x->sample_ndim; i++)
        same = x->sample_shape[i] == t->shape[i + 1];
    if (!same) {
        char was[FXDS__SHAPE_STRLEN], now[FXDS__SHAPE_STRLEN];
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': per-sample shape changed "
                        "between chunks (so far %s, this piece %s)", t->name,
                        fxds__shape_str(x->samples, x->sample_ndim, x->sample_shape, was,
                                        sizeof was),
                        fxds__shape_str(t->shape[0], (int)t->n_shape - 1, t->shape + 1, now,
                                        sizeof now));
    }
    return 0;
}

int fxds_upload_add(fxds_upload *u, const Fluxion__V1__TensorData *t, char *err, size_t errlen)
{
    fx_dtype dt = FX_F32;
    uint64_t bytes = 0;
    int rc = check_piece(t, &dt, &bytes, err, errlen);
    fxds__tensor *x = rc ? NULL : find_tensor(u, t->name);
    if (!rc && x)
        rc = check_same(x, t, dt, err, errlen);
    if (!rc)
        rc = fxds__quota_reserve(u->ds, u, t->name, bytes, err, errlen);
    if (!rc && !x)
        rc = new_tensor(u, t, dt, &x, err, errlen);
    if (rc)
        return rc;
    if (bytes && fxu_write_all(x->fd, t->data.data, bytes) != 0)
        return fxu_fail(err, errlen, fxu_errno_status(errno), "cannot stage tensor '%s' of "
                        "dataset '%s': %s", t->name, u->name, strerror(errno));
    EVP_DigestUpdate(x->sha, t->data.data, bytes);
    x->samples += t->shape[0];
    return 0;
}

/* -------------------------------------------------------------- commit */

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const fxds__tensor *)a)->name, ((const fxds__tensor *)b)->name);
}

static int check_counts(fxds_upload *u, char *err, size_t errlen)
{
    if (u->n == 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "dataset '%s' has no tensors", u->name);
    for (int i = 1; i < u->n; i++)
        if (u->t[i].samples != u->t[0].samples)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s' has %" PRId64
                        " samples but tensor '%s' has %" PRId64 " (every tensor needs one per "
                        "sample)", u->t[i].name, u->t[i].samples, u->t[0].name,
                        u->t[0].samples);
    if (u->t[0].samples == 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "dataset '%s' has no samples", u->name);
    return 0;
}

/* The safetensors header of samples [s0, s0 + n) (padded to 8 bytes). */
static char *shard_header(const fxds_upload *u, int64_t n, size_t *len)
{
    size_t cap = 256 + (size_t)u->n * (FXDS__TENSOR_NAME_MAX + 64 + FX_MAX_DIMS * 24);
    char *h = malloc(cap);
    if (!h)
        return NULL;
    size_t o = 8;
    uint64_t off = 0;
    o += (size_t)snprintf(h + o, cap - o, "{\"__metadata__\":{\"format\":\"fluxion-dataset\"}");
    for (int i = 0; i < u->n; i++) {
        const fxds__tensor *x = &u->t[i];
        char shape[FXDS__SHAPE_STRLEN];
        fxds__shape_str(n, x->sample_ndim, x->sample_shape, shape, sizeof shape);
        uint64_t b = x->sample_bytes * (uint64_t)n;
        o += (size_t)snprintf(h + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,"
                              "\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", x->name,
                              fxds__st_dtype(x->dtype), shape, off, off + b);
        off += b;
    }
    h[o++] = '}';
    while ((o - 8) % 8)
        h[o++] = ' ';
    uint64_t hl = o - 8;
    for (int i = 0; i < 8; i++)
        h[i] = (char)(hl >> (8 * i));
    *len = o;
    return h;
}

/* Shard k (samples [s0, s0 + n)) written beside its name in stage, fsynced
 * and renamed into place (base/fsutil.h's atomic file); the rename fsyncs
 * stage, so the last shard's makes the whole directory durable. */
static int write_shard(fxds_upload *u, const char *stage, int k, int64_t s0, int64_t n,
                       char *err, size_t errlen)
{
    size_t hlen = 0;
    char *h = shard_header(u, n, &hlen);
    char *dst = fxu_strf("%s/shard-%d.safetensors", stage, k);
    size_t bufcap = 4 << 20;
    char *buf = malloc(bufcap);
    fxu_atomic a = { .fd = -1 };
    int rc = h && dst && buf ? fxu_atomic_open(&a, dst, err, errlen) : fxu_oom(err, errlen);
    if (!rc && fxu_write_all(a.fd, h, hlen) != 0)
        rc = fxu_fail(err, errlen, fxu_errno_status(errno), "cannot write shard %d of dataset "
                      "'%s': %s", k, u->name, strerror(errno));
    for (int i = 0; !rc && i < u->n; i++) {
        const fxds__tensor *x = &u->t[i];
        uint64_t left = x->sample_bytes * (uint64_t)n;
        off_t off = (off_t)(x->sample_bytes * (uint64_t)s0);
        while (!rc && left > 0) {
            size_t m = left < bufcap ? (size_t)left : bufcap;
            if (read_at(x->fd, buf, m, off) != 0 || fxu_write_all(a.fd, buf, m) != 0)
                rc = fxu_fail(err, errlen, fxu_errno_status(errno), "cannot write shard %d of "
                              "dataset '%s': %s", k, u->name, strerror(errno));
            left -= m;
            off += (off_t)m;
        }
    }
    if (!rc)
        rc = fxu_atomic_commit(&a, err, errlen);
    else
        fxu_atomic_abort(&a);
    free(h);
    free(dst);
    free(buf);
    return rc;
}

static int write_shards(fxds_upload *u, const char *stage, uint32_t *nshards, char *err,
                        size_t errlen)
{
    uint64_t row = 0;
    for (int i = 0; i < u->n; i++)
        row += u->t[i].sample_bytes;
    int64_t total = u->t[0].samples;
    int64_t per = (int64_t)(u->ds->o.shard_bytes / row);
    if (per < 1)
        per = 1;
    int k = 0, rc = 0;
    for (int64_t s0 = 0; !rc && s0 < total; s0 += per, k++)
        rc = write_shard(u, stage, k, s0, total - s0 < per ? total - s0 : per, err, errlen);
    *nshards = (uint32_t)k;
    return rc;
}

/* The Dataset record of a finished upload (tensors in name order). */
static Fluxion__V1__Dataset *build_info(fxds_upload *u, uint32_t nshards, int64_t created)
{
    Fluxion__V1__Dataset *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    fluxion__v1__dataset__init(d);
    fxds__sum_item *items = calloc((size_t)u->n, sizeof *items);
    d->name = strdup(u->name);
    d->description = strdup(u->description);
    d->sha256 = malloc(65);
    d->tensors = calloc((size_t)u->n, sizeof *d->tensors);
    bool ok = items && d->name && d->description && d->sha256 && d->tensors;
    for (int i = 0; ok && i < u->n; i++) {
        fxds__tensor *x = &u->t[i];
        Fluxion__V1__DatasetTensor *t = calloc(1, sizeof *t);
        if (!t)
            break;
        fluxion__v1__dataset_tensor__init(t);
        d->tensors[d->n_tensors++] = t;
        t->name = strdup(x->name);
        t->dtype = fxg_dtype_to_proto(x->dtype);
        t->sample_shape = malloc(sizeof(int64_t) * (size_t)(x->sample_ndim + 1));
        ok = t->name && t->sample_shape;
        if (!ok)
            break;
        memcpy(t->sample_shape, x->sample_shape, sizeof(int64_t) * (size_t)x->sample_ndim);
        t->n_sample_shape = (size_t)x->sample_ndim;
        items[i] = (fxds__sum_item){ x->name, x->dtype, x->samples, x->sample_ndim, x->sample_shape,
                               { 0 } };
        unsigned int mdlen;
        EVP_DigestFinal_ex(x->sha, items[i].digest, &mdlen);
        d->bytes += x->sample_bytes * (uint64_t)x->samples;
    }
    ok = ok && d->n_tensors == (size_t)u->n;
    if (ok)
        fxds__combine_sha(items, u->n, d->sha256);
    free(items);
    if (!ok) {
        if (!d->sha256) /* free_unpacked frees non-default strings */
            d->sha256 = (char *)protobuf_c_empty_string;
        else
            d->sha256[0] = '\0';
        fluxion__v1__dataset__free_unpacked(d, NULL);
        return NULL;
    }
    d->num_samples = (uint64_t)u->t[0].samples;
    d->created_unix_ms = created;
    d->num_shards = nshards;
    return d;
}

/* Rename into place and insert the row, in one transaction. */
static int publish(fxds_upload *u, const char *stage, const Fluxion__V1__Dataset *d, char *err,
                   size_t errlen)
{
    fxds_datasets *ds = u->ds;
    size_t len = fluxion__v1__dataset__get_packed_size(d);
    uint8_t *packed = malloc(len ? len : 1);
    char *final = fxu_strf("%s/%s", ds->dir, u->name);
    if (!packed || !final) {
        free(packed);
        free(final);
        return fxu_oom(err, errlen);
    }
    fluxion__v1__dataset__pack(d, packed);
    fxds__move c = { .ds = ds, .name = u->name, .from = stage, .to = final };
    int rc = fxdb_dataset_insert(ds->st, u->name, packed, len, u->bytes, d->created_unix_ms,
                                 place_dir, &c, err, errlen);
    if (rc && c.renamed && rename(final, stage) != 0)
        fxds__rm_tree(final); /* no row: the next open would remove it anyway */
    free(packed);
    free(final);
    return rc;
}

int fxds_upload_commit(fxds_upload *u, Fluxion__V1__Dataset **info, char *err, size_t errlen)
{
    *info = NULL;
    fxds_datasets *ds = u->ds;
    int rc = check_counts(u, err, errlen);
    if (rc) {
        upload_free(u);
        return rc;
    }
    qsort(u->t, (size_t)u->n, sizeof *u->t, cmp_tensor);
    char *stage = fxu_strf("%s/.staging-XXXXXX", ds->dir);
    if (!stage || !mkdtemp(stage)) {
        rc = stage ? fxu_fail(err, errlen, fxu_errno_status(errno), "cannot create %s: %s",
                              stage, strerror(errno))
                   : fxu_oom(err, errlen);
        free(stage);
        upload_free(u);
        return rc;
    }
    uint32_t nshards = 0;
    rc = write_shards(u, stage, &nshards, err, errlen);
    Fluxion__V1__Dataset *d = NULL;
    if (!rc && !(d = build_info(u, nshards, fxu_now_ms())))
        rc = fxu_oom(err, errlen);
    if (!rc)
        rc = publish(u, stage, d, err, errlen);
    if (rc) {
        fxds__rm_tree(stage);
        if (d)
            fluxion__v1__dataset__free_unpacked(d, NULL);
        d = NULL;
    } else {
        fxds__quota_stored(ds, d->bytes);
        fxl_log(FXL_INFO, "datasets", "dataset stored dataset=%s samples=%" PRIu64 " tensors=%zu "
                "bytes=%" PRIu64 " shards=%u sha256=%s", d->name, d->num_samples, d->n_tensors,
                d->bytes, d->num_shards, d->sha256);
    }
    free(stage);
    upload_free(u);
    *info = d;
    return rc;
}
