/*
 * datasets.c - uploaded datasets (see datasets.h).
 *
 * Layout under the data directory:
 *   datasets/<name>/shard-<k>.safetensors  samples [k*S, (k+1)*S) of every tensor
 *   datasets/.staging-XXXXXX/              an upload being committed
 *   datasets/.trash-<k>-<name>/            a dataset being deleted
 *   tmp/.spill-<tensor>.XXXXXX              one upload's data, per tensor
 *
 * An upload appends each tensor's pieces to a spill file in tmp/ (so clients
 * may send the tensors in any interleaving without the daemon holding them
 * in memory). The commit cuts shards from the spill files (each written in
 * tmp/, fsynced and renamed into the staging directory), fsyncs the staging
 * directory, then, inside one store transaction, renames it to
 * datasets/<name> and inserts the row. A crash before the commit leaves a
 * staging directory, spill files or a directory without a row: all removed
 * at open. Deletion renames the directory to a trash name and deletes the
 * row in one transaction, then removes the files.
 *
 * Checksum (identifies the data of a job): SHA-256 over, for each tensor
 * in name order, its name, NUL, dtype ("F32"/"I32"/"I64"), NUL, its full
 * shape as "[n,d1,...]", NUL, and the 32-byte SHA-256 of its data. It does
 * not depend on how the upload was cut into chunks or shards. Opening a
 * dataset recomputes it from the loaded data (DATA_LOSS on a mismatch).
 */
#define _GNU_SOURCE
#include "datasets/datasets.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/log.h"
#include "base/status.h"
#include "base/text.h"
#include "base/util.h"

#define MAX_TENSORS 256
#define TENSOR_NAME_MAX 256
#define DESCRIPTION_MAX 4096
#define DEFAULT_MAX_BYTES (16ull << 30)
#define DEFAULT_SHARD_BYTES (64ull << 20)

struct fxds_dataset {
    fxds_datasets *ds;
    char *name;
    int refs;
    bool loading;    /* another thread is reading the shards */
    int status;      /* of the load, when it failed */
    fxds_column *colv;
    fxds_columns cols;
    char sha[65];
    fxds_dataset *next;
};

struct fxds_datasets {
    fxdb_store *st;
    fxds_datasets_opts o;
    char *dir;                /* DIR/datasets */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fxds_dataset *open;        /* loaded datasets (and ones being loaded) */
    fxds_upload *uploads;      /* in progress: their names are taken */
    uint64_t stored_bytes;    /* committed datasets, for the quota */
    uint64_t reserved_bytes;  /* uploads in progress */
};

typedef struct {
    char *name;
    fx_dtype dtype;
    int sample_ndim;
    int64_t sample_shape[FX_MAX_DIMS];
    uint64_t sample_bytes;
    int64_t samples;
    int fd;                   /* spill file (unlinked at creation: nothing to clean up) */
    EVP_MD_CTX *sha;
} up_tensor;

struct fxds_upload {
    fxds_datasets *ds;
    char *name, *description;
    up_tensor *t;
    int n;
    uint64_t bytes;
    fxds_upload *next;
};

/* -------------------------------------------------------------- helpers */

static int fsync_path(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : fsync(fd);
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        return fxu_fail(err, errlen, FXS_INTERNAL, "cannot fsync %s: %s", path, strerror(e));
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (remove(path) != 0)
        fxl_log(FXL_WARN, "datasets", "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int read_at(int fd, void *buf, size_t len, off_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        len -= (size_t)r;
        off += r;
    }
    return 0;
}

static const char *st_dtype(fx_dtype dt)
{
    return dt == FX_I32 ? "I32" : dt == FX_I64 ? "I64" : "F32";
}

static Fluxion__V1__DataType proto_dtype(fx_dtype dt)
{
    return dt == FX_I32   ? FLUXION__V1__DATA_TYPE__INT32
           : dt == FX_I64 ? FLUXION__V1__DATA_TYPE__INT64
                          : FLUXION__V1__DATA_TYPE__FP32;
}

static bool from_proto_dtype(Fluxion__V1__DataType p, fx_dtype *dt)
{
    switch (p) {
    case FLUXION__V1__DATA_TYPE__DATA_TYPE_UNSPECIFIED:
    case FLUXION__V1__DATA_TYPE__FP32: *dt = FX_F32; return true;
    case FLUXION__V1__DATA_TYPE__INT32: *dt = FX_I32; return true;
    case FLUXION__V1__DATA_TYPE__INT64: *dt = FX_I64; return true;
    default: return false;
    }
}

/* "[n,d1,d2]" */
static void shape_str(int64_t n, int ndim, const int64_t *dims, char *buf, size_t len)
{
    int o = snprintf(buf, len, "[%" PRId64, n);
    for (int i = 0; i < ndim && o > 0 && (size_t)o < len; i++)
        o += snprintf(buf + o, len - (size_t)o, ",%" PRId64, dims[i]);
    if (o > 0 && (size_t)o < len)
        snprintf(buf + o, len - (size_t)o, "]");
}

/* Tensor names end up in safetensors JSON headers and in messages: no
 * quoting needed if there are no quotes, backslashes or control bytes; and
 * in Dataset replies, whose string fields must be valid UTF-8. */
static bool tensor_name_ok(const char *name, char *err, size_t errlen)
{
    size_t n = strlen(name);
    if (n == 0 || n > TENSOR_NAME_MAX) {
        fxu_fail(err, errlen, 0, "a tensor name must be 1 to %d bytes long (got %zu)",
             TENSOR_NAME_MAX, n);
        return false;
    }
    if (strcmp(name, "__metadata__") == 0) {
        fxu_fail(err, errlen, 0, "tensor name \"__metadata__\" is reserved by safetensors");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
            fxu_fail(err, errlen, 0, "tensor name \"%.64s\" has byte 0x%02x at position %zu "
                 "(no quotes, backslashes or control characters)", name, c, i);
            return false;
        }
    }
    /* The RPC layer refuses such names already (rpc/wirecheck.h); this
     * keeps the module's own rule whole for any other caller. */
    size_t bad = fxu_utf8_invalid_at(name, n);
    if (bad < n) {
        fxu_fail(err, errlen, 0, "a tensor name is not valid UTF-8 (byte 0x%02x at position %zu)",
                 (unsigned char)name[bad], bad);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------- checksum */

typedef struct {
    const char *name;
    fx_dtype dtype;
    int64_t samples;
    int sample_ndim;
    const int64_t *sample_shape;
    unsigned char digest[32]; /* of the data */
} sum_item;

static void combine_sha(const sum_item *it, int n, char out[65])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    for (int i = 0; i < n; i++) {
        char shape[FX_MAX_DIMS * 24 + 8];
        shape_str(it[i].samples, it[i].sample_ndim, it[i].sample_shape, shape, sizeof shape);
        EVP_DigestUpdate(c, it[i].name, strlen(it[i].name) + 1);
        EVP_DigestUpdate(c, st_dtype(it[i].dtype), strlen(st_dtype(it[i].dtype)) + 1);
        EVP_DigestUpdate(c, shape, strlen(shape) + 1);
        EVP_DigestUpdate(c, it[i].digest, 32);
    }
    EVP_DigestFinal_ex(c, md, &mdlen);
    EVP_MD_CTX_free(c);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---------------------------------------------------------------- rows */

/* The datasets table belongs to the store (store/datasets_tab.c); its
 * records are packed fluxion.v1.Dataset messages. */

static Fluxion__V1__Dataset *unpack_info(const void *blob, size_t len, const char *name)
{
    Fluxion__V1__Dataset *d = fluxion__v1__dataset__unpack(NULL, len, blob);
    if (!d)
        fxl_log(FXL_ERROR, "datasets", "stored record of dataset %s does not parse", name);
    return d;
}

/* The stored record of a dataset. */
static int get_info(fxdb_store *st, const char *name, Fluxion__V1__Dataset **info, char *err,
                    size_t errlen)
{
    void *blob = NULL;
    size_t len = 0;
    int rc = fxdb_dataset_get(st, name, &blob, &len, err, errlen);
    if (rc)
        return rc;
    *info = unpack_info(blob, len, name);
    free(blob);
    if (!*info)
        return fxu_fail(err, errlen, FXS_DATA_LOSS, "the stored record of dataset '%s' does not "
                        "parse", name);
    return 0;
}

/* Every record that parses, by name; *total gets the sum of their bytes. */
static int list_infos(fxdb_store *st, Fluxion__V1__Dataset ***list, int *n, uint64_t *total,
                      char *err, size_t errlen)
{
    *list = NULL;
    *n = 0;
    *total = 0;
    fxdb_row *rows = NULL;
    int nr = 0;
    int rc = fxdb_dataset_list(st, &rows, &nr, err, errlen);
    if (rc)
        return rc;
    Fluxion__V1__Dataset **l = calloc(nr ? (size_t)nr : 1, sizeof *l);
    if (!l) {
        fxdb_rows_free(rows, nr);
        return fxu_oom(err, errlen);
    }
    int k = 0;
    for (int i = 0; i < nr; i++) {
        Fluxion__V1__Dataset *d = unpack_info(rows[i].blob, rows[i].len, rows[i].name);
        if (!d)
            continue;
        l[k++] = d;
        *total += d->bytes;
    }
    fxdb_rows_free(rows, nr);
    *list = l;
    *n = k;
    return 0;
}

static void free_list(Fluxion__V1__Dataset **l, int n)
{
    for (int i = 0; i < n; i++)
        fluxion__v1__dataset__free_unpacked(l[i], NULL);
    free(l);
}

/* A dataset's directory moved inside the store's transaction for its row
 * (the store calls these hooks under its lock). */
typedef struct {
    fxds_datasets *ds;
    const char *name;
    const char *from, *to;
    bool renamed;
} move_ctx;

/* Commit: the directory is renamed into place first, so a taken name (or a
 * stray directory) fails before the row exists. */
static int place_dir(void *ctx, char *err, size_t errlen)
{
    move_ctx *c = ctx;
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
    int rc = parent ? fsync_path(parent, err, errlen) : fxu_oom(err, errlen);
    free(parent);
    return rc;
}

static fxds_dataset *find_open(fxds_datasets *ds, const char *name);

/* Delete (the store has checked that no queued or running job needs it):
 * a dataset still held open (a submission validating against it) stays;
 * otherwise the directory goes to the trash name, then the row. Runs under
 * ds->mu, held by fxds_dataset_delete: no open may start in between. */
static int unplace_dir(void *ctx, char *err, size_t errlen)
{
    move_ctx *c = ctx;
    fxds_dataset *o = find_open(c->ds, c->name);
    if (o)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "dataset '%s' is in use by %d "
                        "training job%s; cancel %s first", c->name, o->refs,
                        o->refs == 1 ? "" : "s", o->refs == 1 ? "it" : "them");
    if (c->renamed)
        return 0; /* an earlier try of the same transaction moved it */
    if (rename(c->from, c->to) == 0)
        c->renamed = true;
    else if (errno != ENOENT) /* a missing directory: the row goes anyway */
        return fxu_fail(err, errlen, FXS_INTERNAL, "cannot rename %s to %s: %s", c->from, c->to,
                    strerror(errno));
    return 0;
}

/* -------------------------------------------------------- open / close */

typedef struct {
    Fluxion__V1__Dataset **list;
    int n;
} name_set;

static bool has_row(const name_set *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->list[i]->name, name) == 0)
            return true;
    return false;
}

/* Staging and trash directories, and directories no row refers to (a crash
 * between the rename and the commit), go. */
static int recover(fxds_datasets *ds, const name_set *rows, char *err, size_t errlen)
{
    DIR *d = opendir(ds->dir);
    if (!d)
        return fxu_fail(err, errlen, FXS_INTERNAL, "cannot open %s: %s", ds->dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (e->d_name[0] != '.' && has_row(rows, e->d_name))
            continue;
        char *p = fxu_strf("%s/%s", ds->dir, e->d_name);
        if (!p)
            continue;
        fxl_log(FXL_WARN, "datasets", "removing %s (%s)", p,
                e->d_name[0] == '.' ? "an upload or deletion interrupted by a crash"
                                    : "no dataset row refers to it");
        rm_tree(p);
        free(p);
    }
    closedir(d);
    return fsync_path(ds->dir, err, errlen);
}

fxds_datasets *fxds_datasets_open(fxdb_store *st, const fxds_datasets_opts *opts, char *err,
                                size_t errlen)
{
    fxds_datasets *ds = calloc(1, sizeof *ds);
    if (!ds || !st) {
        free(ds);
        fxu_fail(err, errlen, 0, st ? "out of memory" : "datasets: no store");
        return NULL;
    }
    ds->st = st;
    if (opts)
        ds->o = *opts;
    if (!ds->o.max_dataset_bytes)
        ds->o.max_dataset_bytes = DEFAULT_MAX_BYTES;
    if (!ds->o.shard_bytes)
        ds->o.shard_bytes = DEFAULT_SHARD_BYTES;
    pthread_mutex_init(&ds->mu, NULL);
    pthread_cond_init(&ds->cv, NULL);
    ds->dir = fxu_strf("%s/datasets", fxdb_store_dir(st));
    if (!ds->dir) {
        fxu_oom(err, errlen);
        fxds_datasets_close(ds);
        return NULL;
    }
    if (mkdir(ds->dir, 0755) != 0 && errno != EEXIST) {
        fxu_fail(err, errlen, 0, "cannot create %s: %s", ds->dir, strerror(errno));
        fxds_datasets_close(ds);
        return NULL;
    }
    name_set rows = { NULL, 0 };
    uint64_t total = 0;
    int rc = list_infos(st, &rows.list, &rows.n, &total, err, errlen);
    if (!rc)
        rc = recover(ds, &rows, err, errlen);
    ds->stored_bytes = total;
    free_list(rows.list, rows.n);
    if (rc) {
        fxds_datasets_close(ds);
        return NULL;
    }
    return ds;
}

void fxds_datasets_close(fxds_datasets *ds)
{
    if (!ds)
        return;
    if (ds->open || ds->uploads)
        fxl_log(FXL_ERROR, "datasets", "closing with datasets open or uploads in progress");
    pthread_mutex_destroy(&ds->mu);
    pthread_cond_destroy(&ds->cv);
    free(ds->dir);
    free(ds);
}

/* -------------------------------------------------------------- uploads */

static bool name_taken(fxds_datasets *ds, const char *name)
{
    for (fxds_upload *u = ds->uploads; u; u = u->next)
        if (strcmp(u->name, name) == 0)
            return true;
    return false;
}

static int check_name(const char *name, char *err, size_t errlen)
{
    char e[256];
    if (!fxdb_model_name_ok(name, e, sizeof e)) {
        /* the rules are the model names'; the message should say dataset */
        const char *rest = strncmp(e, "model name", 10) == 0 ? e + 10 : e;
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "dataset name%s", rest);
    }
    return 0;
}

int fxds_upload_begin(fxds_datasets *ds, const char *name, const char *description,
                     fxds_upload **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = check_name(name, err, errlen);
    if (rc)
        return rc;
    if (description && strlen(description) > DESCRIPTION_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "description: %zu bytes (at most %d)",
                    strlen(description), DESCRIPTION_MAX);
    Fluxion__V1__Dataset *old = NULL;
    rc = get_info(ds->st, name, &old, err, errlen);
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
    pthread_mutex_lock(&ds->mu);
    if (name_taken(ds, name)) {
        rc = fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "an upload of a dataset named '%s' is "
                  "already in progress", name);
    } else {
        u->next = ds->uploads;
        ds->uploads = u;
    }
    pthread_mutex_unlock(&ds->mu);
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
    fxds_datasets *ds = u->ds;
    pthread_mutex_lock(&ds->mu);
    for (fxds_upload **p = &ds->uploads; *p; p = &(*p)->next)
        if (*p == u) {
            *p = u->next;
            break;
        }
    ds->reserved_bytes -= u->bytes;
    pthread_mutex_unlock(&ds->mu);
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

static up_tensor *find_tensor(fxds_upload *u, const char *name)
{
    for (int i = 0; i < u->n; i++)
        if (strcmp(u->t[i].name, name) == 0)
            return &u->t[i];
    return NULL;
}

static int new_tensor(fxds_upload *u, const Fluxion__V1__TensorData *t, fx_dtype dt,
                      up_tensor **out, char *err, size_t errlen)
{
    if (u->n >= MAX_TENSORS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': a dataset holds at most %d "
                    "tensors", t->name, MAX_TENSORS);
    up_tensor *nt = realloc(u->t, (size_t)(u->n + 1) * sizeof *nt);
    if (!nt)
        return fxu_oom(err, errlen);
    u->t = nt;
    up_tensor *x = &nt[u->n];
    *x = (up_tensor){ .dtype = dt, .sample_ndim = (int)t->n_shape - 1, .fd = -1 };
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
    char e[320];
    if (!tensor_name_ok(t->name, e, sizeof e))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s", e);
    if (!from_proto_dtype(t->dtype, dt))
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
                    "shape and dtype %s need %" PRIu64, t->name, t->data.len, st_dtype(*dt), n);
    *bytes = n;
    return 0;
}

/* The same tensor again: same dtype, same per-sample shape. */
static int check_same(const up_tensor *x, const Fluxion__V1__TensorData *t, fx_dtype dt,
                      char *err, size_t errlen)
{
    if (x->dtype != dt)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': dtype changed from %s to "
                    "%s between chunks", t->name, st_dtype(x->dtype), st_dtype(dt));
    bool same = (int)t->n_shape - 1 == x->sample_ndim;
    for (int i = 0; same && i < x->sample_ndim; i++)
        same = x->sample_shape[i] == t->shape[i + 1];
    if (!same) {
        char was[FX_MAX_DIMS * 24 + 8], now[FX_MAX_DIMS * 24 + 8];
        shape_str(x->samples, x->sample_ndim, x->sample_shape, was, sizeof was);
        shape_str(t->shape[0], (int)t->n_shape - 1, t->shape + 1, now, sizeof now);
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "tensor '%s': per-sample shape changed "
                    "between chunks (so far %s, this piece %s)", t->name, was, now);
    }
    return 0;
}

/* Reserves bytes against the per-dataset limit and the quota. */
static int reserve(fxds_upload *u, const char *tensor, uint64_t bytes, char *err, size_t errlen)
{
    fxds_datasets *ds = u->ds;
    if (bytes > ds->o.max_dataset_bytes - u->bytes)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "dataset '%s' is larger than the limit "
                    "of %" PRIu64 " bytes per dataset (at tensor '%s')", u->name,
                    ds->o.max_dataset_bytes, tensor);
    int rc = 0;
    pthread_mutex_lock(&ds->mu);
    uint64_t used = ds->stored_bytes + ds->reserved_bytes;
    if (ds->o.quota_bytes && bytes > (used > ds->o.quota_bytes ? 0 : ds->o.quota_bytes - used))
        rc = fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "dataset quota of %" PRIu64 " bytes "
                  "exceeded (%" PRIu64 " stored or being uploaded; tensor '%s' of '%s' adds %"
                  PRIu64 ")", ds->o.quota_bytes, used, tensor, u->name, bytes);
    else
        ds->reserved_bytes += bytes;
    pthread_mutex_unlock(&ds->mu);
    if (!rc)
        u->bytes += bytes;
    return rc;
}

int fxds_upload_add(fxds_upload *u, const Fluxion__V1__TensorData *t, char *err, size_t errlen)
{
    fx_dtype dt;
    uint64_t bytes;
    int rc = check_piece(t, &dt, &bytes, err, errlen);
    up_tensor *x = rc ? NULL : find_tensor(u, t->name);
    if (!rc && x)
        rc = check_same(x, t, dt, err, errlen);
    if (!rc)
        rc = reserve(u, t->name, bytes, err, errlen);
    if (!rc && !x)
        rc = new_tensor(u, t, dt, &x, err, errlen);
    if (rc)
        return rc;
    if (bytes && fxu_write_all(x->fd, t->data.data, bytes) != 0)
        return fxu_fail(err, errlen, errno == ENOSPC ? FXS_RESOURCE_EXHAUSTED : FXS_INTERNAL,
                    "cannot stage tensor '%s' of dataset '%s': %s", t->name, u->name,
                    strerror(errno));
    EVP_DigestUpdate(x->sha, t->data.data, bytes);
    x->samples += t->shape[0];
    return 0;
}

/* --------------------------------------------------------------- commit */

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const up_tensor *)a)->name, ((const up_tensor *)b)->name);
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
    size_t cap = 256 + (size_t)u->n * (TENSOR_NAME_MAX + 64 + FX_MAX_DIMS * 24);
    char *h = malloc(cap);
    if (!h)
        return NULL;
    size_t o = 8;
    uint64_t off = 0;
    o += (size_t)snprintf(h + o, cap - o, "{\"__metadata__\":{\"format\":\"fluxion-dataset\"}");
    for (int i = 0; i < u->n; i++) {
        const up_tensor *x = &u->t[i];
        char shape[FX_MAX_DIMS * 24 + 8];
        shape_str(n, x->sample_ndim, x->sample_shape, shape, sizeof shape);
        uint64_t b = x->sample_bytes * (uint64_t)n;
        o += (size_t)snprintf(h + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,"
                              "\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", x->name,
                              st_dtype(x->dtype), shape, off, off + b);
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

/* Shard k (samples [s0, s0 + n)) into tmp/, fsynced, renamed into stage. */
static int write_shard(fxds_upload *u, const char *stage, int k, int64_t s0, int64_t n,
                       char *err, size_t errlen)
{
    size_t hlen;
    char *h = shard_header(u, n, &hlen);
    char *tmp = fxu_strf("%s/.shard.tmp.XXXXXX", fxdb_store_tmp_dir(u->ds->st));
    char *dst = fxu_strf("%s/shard-%d.safetensors", stage, k);
    size_t bufcap = 4 << 20;
    char *buf = malloc(bufcap);
    int fd = h && tmp && dst && buf ? mkostemp(tmp, O_CLOEXEC) : -1;
    int rc = 0;
    if (!h || !tmp || !dst || !buf)
        rc = fxu_oom(err, errlen);
    else if (fd < 0 || fxu_write_all(fd, h, hlen) != 0)
        rc = fxu_fail(err, errlen, FXS_INTERNAL, "cannot write %s: %s", tmp, strerror(errno));
    for (int i = 0; !rc && i < u->n; i++) {
        const up_tensor *x = &u->t[i];
        uint64_t left = x->sample_bytes * (uint64_t)n;
        off_t off = (off_t)(x->sample_bytes * (uint64_t)s0);
        while (!rc && left > 0) {
            size_t m = left < bufcap ? (size_t)left : bufcap;
            if (read_at(x->fd, buf, m, off) != 0 || fxu_write_all(fd, buf, m) != 0)
                rc = fxu_fail(err, errlen, errno == ENOSPC ? FXS_RESOURCE_EXHAUSTED : FXS_INTERNAL,
                          "cannot write shard %d of dataset '%s': %s", k, u->name,
                          strerror(errno));
            left -= m;
            off += (off_t)m;
        }
    }
    if (!rc && fsync(fd) != 0)
        rc = fxu_fail(err, errlen, FXS_INTERNAL, "cannot fsync %s: %s", tmp, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (!rc && rename(tmp, dst) != 0)
        rc = fxu_fail(err, errlen, FXS_INTERNAL, "cannot rename %s to %s: %s", tmp, dst,
                  strerror(errno));
    if (rc && fd >= 0)
        unlink(tmp);
    free(h);
    free(tmp);
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
    return rc ? rc : fsync_path(stage, err, errlen);
}

/* The Dataset record of a finished upload (tensors in name order). */
static Fluxion__V1__Dataset *build_info(fxds_upload *u, uint32_t nshards, int64_t created)
{
    Fluxion__V1__Dataset *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    fluxion__v1__dataset__init(d);
    sum_item *items = calloc((size_t)u->n, sizeof *items);
    d->name = strdup(u->name);
    d->description = strdup(u->description);
    d->sha256 = malloc(65);
    d->tensors = calloc((size_t)u->n, sizeof *d->tensors);
    bool ok = items && d->name && d->description && d->sha256 && d->tensors;
    for (int i = 0; ok && i < u->n; i++) {
        up_tensor *x = &u->t[i];
        Fluxion__V1__DatasetTensor *t = calloc(1, sizeof *t);
        if (!t)
            break;
        fluxion__v1__dataset_tensor__init(t);
        d->tensors[d->n_tensors++] = t;
        t->name = strdup(x->name);
        t->dtype = proto_dtype(x->dtype);
        t->sample_shape = malloc(sizeof(int64_t) * (size_t)(x->sample_ndim + 1));
        ok = t->name && t->sample_shape;
        if (!ok)
            break;
        memcpy(t->sample_shape, x->sample_shape, sizeof(int64_t) * (size_t)x->sample_ndim);
        t->n_sample_shape = (size_t)x->sample_ndim;
        items[i] = (sum_item){ x->name, x->dtype, x->samples, x->sample_ndim, x->sample_shape,
                               { 0 } };
        unsigned int mdlen;
        EVP_DigestFinal_ex(x->sha, items[i].digest, &mdlen);
        d->bytes += x->sample_bytes * (uint64_t)x->samples;
    }
    ok = ok && d->n_tensors == (size_t)u->n;
    if (ok)
        combine_sha(items, u->n, d->sha256);
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
    move_ctx c = { .ds = ds, .name = u->name, .from = stage, .to = final };
    int rc = fxdb_dataset_insert(ds->st, u->name, packed, len, d->created_unix_ms, place_dir, &c,
                                 err, errlen);
    if (rc && c.renamed && rename(final, stage) != 0)
        rm_tree(final); /* no row: the next open would remove it anyway */
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
        rc = stage ? fxu_fail(err, errlen, FXS_INTERNAL, "cannot create %s: %s", stage,
                          strerror(errno))
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
        rm_tree(stage);
        if (d)
            fluxion__v1__dataset__free_unpacked(d, NULL);
        d = NULL;
    } else {
        pthread_mutex_lock(&ds->mu);
        ds->stored_bytes += d->bytes;
        pthread_mutex_unlock(&ds->mu);
        fxl_log(FXL_INFO, "datasets", "dataset stored dataset=%s samples=%" PRIu64 " tensors=%zu "
                "bytes=%" PRIu64 " shards=%u sha256=%s", d->name, d->num_samples, d->n_tensors,
                d->bytes, d->num_shards, d->sha256);
    }
    free(stage);
    upload_free(u);
    *info = d;
    return rc;
}

/* ------------------------------------------------------ get/list/delete */

int fxds_dataset_get(fxds_datasets *ds, const char *name, Fluxion__V1__Dataset **info, char *err,
                    size_t errlen)
{
    *info = NULL;
    int rc = check_name(name, err, errlen);
    if (rc)
        return rc;
    return get_info(ds->st, name, info, err, errlen);
}

int fxds_dataset_list(fxds_datasets *ds, Fluxion__V1__Dataset ***infos, int *n, char *err,
                     size_t errlen)
{
    uint64_t total;
    return list_infos(ds->st, infos, n, &total, err, errlen);
}

static fxds_dataset *find_open(fxds_datasets *ds, const char *name)
{
    for (fxds_dataset *d = ds->open; d; d = d->next)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

int fxds_dataset_delete(fxds_datasets *ds, const char *name, char *err, size_t errlen)
{
    int rc = check_name(name, err, errlen);
    if (rc)
        return rc;
    /* The trash is a new name, not a new directory: creating one needs a
     * free block, and a delete must work on a full disk. The name is unique
     * in this process; leftovers of earlier ones are removed at open. */
    static atomic_ulong trash_seq;
    char *from = fxu_strf("%s/%s", ds->dir, name);
    char *trash = fxu_strf("%s/.trash-%lu-%s", ds->dir, atomic_fetch_add(&trash_seq, 1) + 1,
                           name);
    if (!from || !trash) {
        free(from);
        free(trash);
        return fxu_oom(err, errlen);
    }
    move_ctx c = { .ds = ds, .name = name, .from = from, .to = trash };
    void *old = NULL;
    size_t old_len = 0;
    pthread_mutex_lock(&ds->mu); /* no open may start in between */
    rc = fxdb_dataset_delete(ds->st, name, unplace_dir, &c, &old, &old_len, err, errlen);
    if (rc && c.renamed)
        rename(trash, from);
    if (!rc) {
        Fluxion__V1__Dataset *gone = unpack_info(old, old_len, name);
        uint64_t bytes = gone ? gone->bytes : 0;
        if (gone)
            fluxion__v1__dataset__free_unpacked(gone, NULL);
        ds->stored_bytes -= bytes < ds->stored_bytes ? bytes : ds->stored_bytes;
    }
    free(old);
    pthread_mutex_unlock(&ds->mu);
    rm_tree(trash);
    if (!rc) {
        fsync_path(ds->dir, NULL, 0);
        fxl_log(FXL_INFO, "datasets", "dataset deleted dataset=%s", name);
    }
    free(from);
    free(trash);
    return rc;
}

/* ------------------------------------------------------------- loading */

static void free_columns(fxds_dataset *d)
{
    for (int i = 0; d->colv && i < d->cols.n; i++) {
        free((void *)d->colv[i].name);
        free((void *)d->colv[i].data);
    }
    free(d->colv);
    d->colv = NULL;
}

static int alloc_columns(fxds_dataset *d, const Fluxion__V1__Dataset *info, char *err,
                         size_t errlen)
{
    d->colv = calloc(info->n_tensors ? info->n_tensors : 1, sizeof *d->colv);
    if (!d->colv)
        return fxu_oom(err, errlen);
    d->cols = (fxds_columns){ .num_samples = (int64_t)info->num_samples, .n = 0,
                             .cols = d->colv };
    for (size_t i = 0; i < info->n_tensors; i++) {
        const Fluxion__V1__DatasetTensor *t = info->tensors[i];
        fxds_column *c = &d->colv[d->cols.n++];
        fx_dtype dt = FX_F32;
        from_proto_dtype(t->dtype, &dt);
        c->dtype = dt;
        c->sample_ndim = (int)t->n_sample_shape;
        size_t bytes = fx_dtype_size(dt) * info->num_samples;
        for (size_t k = 0; k < t->n_sample_shape && k < FX_MAX_DIMS; k++) {
            c->sample_shape[k] = t->sample_shape[k];
            bytes *= (size_t)t->sample_shape[k];
        }
        c->name = strdup(t->name);
        c->data = malloc(bytes ? bytes : 1);
        if (!c->name || !c->data)
            return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "out of memory loading dataset "
                        "'%s' (%zu bytes for tensor '%s')", info->name, bytes, t->name);
    }
    return 0;
}

/* One shard's tensors into the columns at sample *at. */
static int load_shard(fxds_datasets *ds, fxds_dataset *d, uint32_t k, int64_t *at, char *err,
                      size_t errlen)
{
    char *path = fxu_strf("%s/%s/shard-%u.safetensors", ds->dir, d->name, k);
    if (!path)
        return fxu_oom(err, errlen);
    fx_params p;
    fx_params_init(&p);
    char e[512];
    int rc = 0;
    if (fx_safetensors_load(path, &p, e, sizeof e) != FX_OK)
        rc = fxu_fail(err, errlen, FXS_DATA_LOSS, "dataset '%s': %s", d->name, e);
    int64_t n = -1;
    for (int i = 0; !rc && i < d->cols.n; i++) {
        const fxds_column *c = &d->colv[i];
        fx_tensor *t = fx_params_find(&p, c->name);
        bool ok = t && t->dtype == c->dtype && t->ndim == c->sample_ndim + 1 &&
                  (n < 0 || t->shape[0] == n) && *at + t->shape[0] <= d->cols.num_samples;
        for (int j = 0; ok && j < c->sample_ndim; j++)
            ok = t->shape[j + 1] == c->sample_shape[j];
        if (!ok) {
            rc = fxu_fail(err, errlen, FXS_DATA_LOSS, "dataset '%s': %s does not match the record "
                      "(tensor '%s')", d->name, path, c->name);
            break;
        }
        n = t->shape[0];
        size_t sb = (size_t)fx_tensor_numel(t) / (size_t)(n ? n : 1) * fx_dtype_size(t->dtype);
        fx_tensor_to_host(t, (char *)c->data + (size_t)*at * sb, (size_t)n * sb);
    }
    if (!rc && p.count != d->cols.n)
        rc = fxu_fail(err, errlen, FXS_DATA_LOSS, "dataset '%s': %s has %d tensors, the record %d",
                  d->name, path, p.count, d->cols.n);
    if (!rc)
        *at += n;
    fx_params_free_tensors(&p);
    free(path);
    return rc;
}

static void column_sha(const fxds_dataset *d, char out[65])
{
    sum_item *items = calloc((size_t)d->cols.n, sizeof *items);
    if (!items) {
        out[0] = '\0';
        return;
    }
    for (int i = 0; i < d->cols.n; i++) {
        const fxds_column *c = &d->colv[i];
        size_t bytes = fx_dtype_size(c->dtype) * (size_t)d->cols.num_samples;
        for (int k = 0; k < c->sample_ndim; k++)
            bytes *= (size_t)c->sample_shape[k];
        items[i] = (sum_item){ c->name, c->dtype, d->cols.num_samples, c->sample_ndim,
                               c->sample_shape, { 0 } };
        unsigned int mdlen;
        EVP_Digest(c->data, bytes, items[i].digest, &mdlen, EVP_sha256(), NULL);
    }
    combine_sha(items, d->cols.n, out);
    free(items);
}

static int load(fxds_datasets *ds, fxds_dataset *d, char *err, size_t errlen)
{
    Fluxion__V1__Dataset *info = NULL;
    int rc = get_info(ds->st, d->name, &info, err, errlen);
    if (rc)
        return rc;
    rc = alloc_columns(d, info, err, errlen);
    int64_t at = 0;
    for (uint32_t k = 0; !rc && k < info->num_shards; k++)
        rc = load_shard(ds, d, k, &at, err, errlen);
    if (!rc && at != d->cols.num_samples)
        rc = fxu_fail(err, errlen, FXS_DATA_LOSS, "dataset '%s': the shards hold %" PRId64
                  " samples, the record %" PRId64, d->name, at, d->cols.num_samples);
    if (!rc) {
        column_sha(d, d->sha);
        if (strcmp(d->sha, info->sha256) != 0)
            rc = fxu_fail(err, errlen, FXS_DATA_LOSS, "dataset '%s': the data on disk has SHA-256 "
                      "%s, the record %s", d->name, d->sha, info->sha256);
    }
    fluxion__v1__dataset__free_unpacked(info, NULL);
    return rc;
}

static void unlink_open(fxds_datasets *ds, fxds_dataset *d)
{
    for (fxds_dataset **p = &ds->open; *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            return;
        }
}

int fxds_dataset_open(fxds_datasets *ds, const char *name, fxds_dataset **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    int rc = check_name(name, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&ds->mu);
    fxds_dataset *d = find_open(ds, name);
    if (d) {
        d->refs++;
        while (d->loading)
            pthread_cond_wait(&ds->cv, &ds->mu);
        rc = d->status;
        if (rc) {
            fxu_fail(err, errlen, rc, "dataset '%s' could not be loaded (see the log)", name);
            if (--d->refs == 0) {
                free(d->name);
                free(d);
            }
        }
        pthread_mutex_unlock(&ds->mu);
        if (!rc)
            *out = d;
        return rc;
    }
    d = calloc(1, sizeof *d);
    if (!d || !(d->name = strdup(name))) {
        free(d);
        pthread_mutex_unlock(&ds->mu);
        return fxu_oom(err, errlen);
    }
    d->ds = ds;
    d->refs = 1;
    d->loading = true;
    d->next = ds->open;
    ds->open = d;
    pthread_mutex_unlock(&ds->mu);

    rc = load(ds, d, err, errlen); /* outside the lock: it may take a while */
    if (rc && rc != FXS_NOT_FOUND)
        fxl_log(FXL_ERROR, "datasets", "cannot load dataset=%s error=\"%s\"", name, err);

    pthread_mutex_lock(&ds->mu);
    d->loading = false;
    d->status = rc;
    if (rc) {
        unlink_open(ds, d); /* waiters hold references; the last one frees it */
        free_columns(d);
        if (--d->refs == 0) {
            free(d->name);
            free(d);
        }
        d = NULL;
    }
    pthread_cond_broadcast(&ds->cv);
    pthread_mutex_unlock(&ds->mu);
    *out = d;
    return rc;
}

const fxds_columns *fxds_dataset_columns(const fxds_dataset *d)
{
    return &d->cols;
}

const char *fxds_dataset_sha256(const fxds_dataset *d)
{
    return d->sha;
}

void fxds_dataset_release(fxds_dataset *d)
{
    if (!d)
        return;
    fxds_datasets *ds = d->ds;
    pthread_mutex_lock(&ds->mu);
    bool last = --d->refs == 0;
    if (last)
        unlink_open(ds, d);
    pthread_mutex_unlock(&ds->mu);
    if (last) {
        free_columns(d);
        free(d->name);
        free(d);
    }
}
