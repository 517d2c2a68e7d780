/*
 * datasets.c - the registry of datasets (see datasets.h): opening the
 * module (crash recovery of the datasets directory), the names of uploads in
 * progress and the quota they reserve against, get/list/delete, and the
 * cache of datasets loaded for training with their reference counts.
 * Uploads themselves are in upload.c.
 *
 * Layout under the data directory:
 *   datasets/<name>/shard-<k>.safetensors  samples [k*S, (k+1)*S) of every tensor
 *   datasets/.staging-XXXXXX/              an upload being committed (upload.c)
 *   datasets/.trash-<k>-<name>/            a dataset being deleted
 *
 * At open, staging and trash directories and directories without a row (a
 * crash between a commit's rename and its transaction) are removed. Deletion
 * renames the directory to a trash name and deletes the row in one
 * transaction, then removes the files.
 *
 * Checksum (identifies the data of a job): SHA-256 over, for each tensor
 * in name order, its name, NUL, dtype ("F32"/"I32"/"I64"), NUL, its full
 * shape as "[n,d1,...]", NUL, and the 32-byte SHA-256 of its data. It does
 * not depend on how the upload was cut into chunks or shards. Opening a
 * dataset recomputes it from the loaded data (DATA_LOSS on a mismatch).
 *
 * The stored record and the shards are checked like input from outside
 * before anything is sized from them (check_record): a corrupt or hostile
 * one is DATA_LOSS for that dataset only.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "datasets/datasets_internal.h"

#define DEFAULT_MAX_BYTES (16ull << 30)
#define DEFAULT_SHARD_BYTES (64ull << 20)

/* ------------------------------------------------------------- helpers */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (remove(path) != 0)
        fxl_log(FXL_WARN, "datasets", "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

void fxds__rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The dtypes a dataset holds. The names are safetensors' (the shards'
 * headers and the checksum use them); the first row is the default. */
/* Safetensors' name of a dtype (the proto mapping is models/graph.h's
 * fxg_dtype_from_proto / fxg_dtype_to_proto, one table for the server). */
const char *fxds__st_dtype(fx_dtype dt)
{
    return dt == FX_I32 ? "I32" : dt == FX_I64 ? "I64" : "F32";
}

const char *fxds__shape_str(int64_t n, int ndim, const int64_t *dims, char *buf, size_t len)
{
    int64_t full[FX_MAX_DIMS + 1];
    if (ndim > FX_MAX_DIMS)
        ndim = FX_MAX_DIMS;
    full[0] = n;
    for (int i = 0; i < ndim; i++)
        full[i + 1] = dims[i];
    return fx_dims_str(ndim + 1, full, buf, len);
}

int fxds__check_name(const char *name, char *err, size_t errlen)
{
    char e[512];
    if (!fxdb_key_ok(name, e, sizeof e)) {
        /* the rules are the model names'; the message should say dataset */
        char *m = strstr(e, "model name");
        if (m)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "dataset name: %.*sdataset name%s",
                            (int)(m - e), e, m + 10);
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "dataset name: %s", e);
    }
    return 0;
}

/* ------------------------------------------------------------- checksum */

void fxds__combine_sha(const fxds__sum_item *it, int n, char out[65])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    for (int i = 0; i < n; i++) {
        char shape[FXDS__SHAPE_STRLEN];
        fxds__shape_str(it[i].samples, it[i].sample_ndim, it[i].sample_shape, shape,
                        sizeof shape);
        EVP_DigestUpdate(c, it[i].name, strlen(it[i].name) + 1);
        EVP_DigestUpdate(c, fxds__st_dtype(it[i].dtype), strlen(fxds__st_dtype(it[i].dtype)) + 1);
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
int fxds__get_info(fxdb_store *st, const char *name, Fluxion__V1__Dataset **info, char *err,
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
    fxds__name_is_key(*info, name);
    return 0;
}

/* A record written before teams names the dataset without its team: its
 * name is the row's key. */
void fxds__name_is_key(Fluxion__V1__Dataset *d, const char *key)
{
    if (!key || strcmp(d->name, key) == 0)
        return;
    char *k = strdup(key);
    if (!k)
        return;
    if (d->name != protobuf_c_empty_string)
        free(d->name);
    d->name = k;
}

/* Every record that parses (of one team; NULL: all), by key. */
static int list_infos(fxdb_store *st, const char *team, Fluxion__V1__Dataset ***list, int *n,
                      char *err, size_t errlen)
{
    *list = NULL;
    *n = 0;
    fxdb_row *rows = NULL;
    int nr = 0;
    int rc = fxdb_dataset_list(st, team, &rows, &nr, err, errlen);
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
        fxds__name_is_key(d, rows[i].name);
        l[k++] = d;
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

/* The loaded (or loading) dataset of that name; under ds->mu. */
static fxds_dataset *find_open(fxds_datasets *ds, const char *name)
{
    for (fxds_dataset *d = ds->open; d; d = d->next)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

/* Delete (the store has checked that no queued or running job needs it):
 * a dataset still held open (a submission validating against it) stays;
 * otherwise the directory goes to the trash name, then the row. Runs under
 * ds->mu, held by fxds_dataset_delete: no open may start in between. */
static int unplace_dir(void *ctx, char *err, size_t errlen)
{
    fxds__move *c = ctx;
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

/* In dir (DIR/datasets, or a team's DIR/datasets/TEAM when team is not
 * NULL): staging and trash directories, and directories no row refers to
 * (a crash between the rename and the commit), go. The layout is
 * DIR/datasets/TEAM/NAME. */
static int recover_dir(const char *dir, const char *team, const name_set *rows, char *err,
                       size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d)
        return fxu_fail(err, errlen, FXS_INTERNAL, "cannot open %s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = fxu_strf("%s/%s", dir, e->d_name);
        if (!p)
            continue;
        const char *why = NULL;
        if (e->d_name[0] == '.') {
            why = "an upload or deletion interrupted by a crash";
        } else if (team) {
            char key[FXP_KEY_MAX + 256];
            int kn = snprintf(key, sizeof key, "%s/%s", team, e->d_name);
            if (kn < 0 || (size_t)kn >= sizeof key || !has_row(rows, key))
                why = "no dataset row refers to it";
        } else {
            struct stat sb;
            if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                rc = recover_dir(p, e->d_name, rows, err, errlen);
            else
                why = "not a team's directory";
        }
        if (why) {
            fxl_log(FXL_WARN, "datasets", "removing %s (%s)", p, why);
            fxds__rm_tree(p);
        }
        free(p);
    }
    closedir(d);
    return rc ? rc : fxu_fsync_dir(dir, err, errlen);
}

static int recover(fxds_datasets *ds, const name_set *rows, char *err, size_t errlen)
{
    return recover_dir(ds->dir, NULL, rows, err, errlen);
}

int fxds_datasets_open(fxdb_store *st, const fxds_datasets_opts *opts, fxds_datasets **out,
                       char *err, size_t errlen)
{
    if (!out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "datasets: no place for the handle");
    *out = NULL;
    if (!st)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "datasets: no store");
    fxds_datasets *ds = calloc(1, sizeof *ds);
    if (!ds)
        return fxu_oom(err, errlen);
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
        fxds_datasets_close(ds);
        return fxu_oom(err, errlen);
    }
    name_set rows = { NULL, 0 };
    int rc = fxu_mkdir(ds->dir, err, errlen);
    if (!rc)
        rc = list_infos(st, NULL, &rows.list, &rows.n, err, errlen);
    if (!rc)
        rc = recover(ds, &rows, err, errlen);
    free_list(rows.list, rows.n);
    if (rc) {
        fxds_datasets_close(ds);
        return rc;
    }
    *out = ds;
    return 0;
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

/* ------------------------------------------------- uploads and the quota */

int fxds__upload_register(fxds_datasets *ds, fxds_upload *u, char *err, size_t errlen)
{
    int rc = 0;
    pthread_mutex_lock(&ds->mu);
    for (fxds_upload *o = ds->uploads; o && !rc; o = o->next)
        if (strcmp(o->name, u->name) == 0)
            rc = fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "an upload of a dataset named '%s' "
                          "is already in progress", u->name);
    if (!rc) {
        u->next = ds->uploads;
        ds->uploads = u;
    }
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

void fxds__upload_unregister(fxds_datasets *ds, fxds_upload *u)
{
    pthread_mutex_lock(&ds->mu);
    for (fxds_upload **p = &ds->uploads; *p; p = &(*p)->next)
        if (*p == u) {
            *p = u->next;
            break;
        }
    pthread_mutex_unlock(&ds->mu);
}

/* Against the per-dataset limit first (u->bytes is the upload's own: only
 * its owner's thread changes it), then against the quota under the lock. */
int fxds__quota_reserve(fxds_datasets *ds, fxds_upload *u, const char *tensor, uint64_t bytes,
                        char *err, size_t errlen)
{
    if (bytes > ds->o.max_dataset_bytes - u->bytes)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "dataset '%s' is larger than the limit "
                    "of %" PRIu64 " bytes per dataset (at tensor '%s')", u->name,
                    ds->o.max_dataset_bytes, tensor);
    char team[FXP_TEAM_MAX + 1];
    fxp_key_team(u->name, team, sizeof team);
    fxdb_quota q;
    int rc = fxdb_team_effective_quota(ds->st, team, &q, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&ds->mu);
    if (q.max_dataset_bytes) {
        /* stored (the store's sum) + this team's uploads in progress */
        fxdb_usage use;
        rc = fxdb_team_usage(ds->st, team, &use, err, errlen);
        uint64_t used = use.dataset_bytes;
        for (fxds_upload *o = ds->uploads; !rc && o; o = o->next) {
            char ot[FXP_TEAM_MAX + 1];
            fxp_key_team(o->name, ot, sizeof ot);
            if (strcmp(ot, team) == 0)
                used += o->bytes;
        }
        if (!rc && bytes > (used > q.max_dataset_bytes ? 0 : q.max_dataset_bytes - used))
            rc = fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "team '%s' dataset quota: %"
                          PRIu64 " bytes allowed, %" PRIu64 " stored or being uploaded; tensor "
                          "'%s' of dataset '%s' needs %" PRIu64 " more", team,
                          q.max_dataset_bytes, used, tensor, fxp_key_name(u->name), bytes);
    }
    if (!rc)
        u->bytes += bytes;
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

/* ------------------------------------------------------ get/list/delete */

int fxds_dataset_get(fxds_datasets *ds, const char *name, Fluxion__V1__Dataset **info, char *err,
                    size_t errlen)
{
    *info = NULL;
    int rc = fxds__check_name(name, err, errlen);
    if (rc)
        return rc;
    return fxds__get_info(ds->st, name, info, err, errlen);
}

int fxds_dataset_list(fxds_datasets *ds, const char *team, Fluxion__V1__Dataset ***infos,
                      int *n, char *err, size_t errlen)
{
    return list_infos(ds->st, team, infos, n, err, errlen);
}

int fxds_dataset_delete(fxds_datasets *ds, const char *name, char *err, size_t errlen)
{
    int rc = fxds__check_name(name, err, errlen);
    if (rc)
        return rc;
    /* The trash is a new name, not a new directory: creating one needs a
     * free block, and a delete must work on a full disk. The name is unique
     * in this process; leftovers of earlier ones are removed at open. */
    static atomic_ulong trash_seq;
    char team[FXP_TEAM_MAX + 1];
    fxp_key_team(name, team, sizeof team);
    char *from = fxu_strf("%s/%s", ds->dir, name);
    char *trash = fxu_strf("%s/%s/.trash-%lu-%s", ds->dir, team,
                           atomic_fetch_add(&trash_seq, 1) + 1, fxp_key_name(name));
    if (!from || !trash) {
        free(from);
        free(trash);
        return fxu_oom(err, errlen);
    }
    fxds__move c = { .ds = ds, .name = name, .from = from, .to = trash };
    void *old = NULL;
    size_t old_len = 0;
    pthread_mutex_lock(&ds->mu); /* no open may start in between */
    rc = fxdb_dataset_delete(ds->st, name, unplace_dir, &c, &old, &old_len, err, errlen);
    if (rc && c.renamed)
        rename(trash, from);
    free(old);
    pthread_mutex_unlock(&ds->mu);
    fxds__rm_tree(trash);
    if (!rc) {
        char *tdir = fxu_strf("%s/%s", ds->dir, team);
        fxu_fsync_dir(tdir ? tdir : ds->dir, NULL, 0);
        free(tdir);
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

/* A stored record is checked like input from outside before anything is
 * sized from it (a corrupt or hostile row must not overrun a column's
 * sample_shape or size an allocation): what a commit can write (upload.c),
 * else DATA_LOSS naming the dataset and the lie. *col_bytes (n_tensors
 * entries) gets each tensor's data size. */
static int check_record(const Fluxion__V1__Dataset *info, const char *name, uint64_t *col_bytes,
                        char *err, size_t errlen)
{
#define LIE(...) fxu_fail(err, errlen, FXS_DATA_LOSS, "the stored record of dataset '%s' is " \
                          "corrupt: " __VA_ARGS__)
    if (info->n_tensors < 1 || info->n_tensors > FXDS__MAX_TENSORS)
        return info->n_tensors ? LIE("%zu tensors (at most %d)", name, info->n_tensors,
                                     FXDS__MAX_TENSORS)
                               : LIE("no tensors", name);
    for (size_t i = 0; i < info->n_tensors; i++) {
        const Fluxion__V1__DatasetTensor *t = info->tensors[i];
        fx_dtype dt;
        if (!t->name[0] || strlen(t->name) > FXDS__TENSOR_NAME_MAX)
            return LIE("tensor %zu has a name of %zu bytes", name, i, strlen(t->name));
        for (size_t j = 0; j < i; j++)
            if (strcmp(info->tensors[j]->name, t->name) == 0)
                return LIE("it lists tensor '%s' twice", name, t->name);
        if (!fxg_dtype_from_proto(t->dtype, &dt))
            return LIE("tensor '%s': dtype %d", name, t->name, (int)t->dtype);
        /* a shard holds the sample index and the sample's dimensions */
        if (t->n_sample_shape > FX_MAX_DIMS - 1)
            return LIE("tensor '%s' has %zu dimensions per sample (at most %d)", name, t->name,
                       t->n_sample_shape, FX_MAX_DIMS - 1);
        for (size_t k = 0; k < t->n_sample_shape; k++)
            if (t->sample_shape[k] < 1)
                return LIE("tensor '%s': sample dimension %zu is %" PRId64, name, t->name, k,
                           t->sample_shape[k]);
    }
    if (info->num_samples < 1 || info->num_samples > INT64_MAX)
        return LIE("%" PRIu64 " samples", name, info->num_samples);
    if (info->num_shards < 1 || info->num_shards > info->num_samples)
        return LIE("%" PRIu32 " shards for %" PRIu64 " samples", name, info->num_shards,
                   info->num_samples);
    uint64_t total = 0;
    for (size_t i = 0; i < info->n_tensors; i++) {
        const Fluxion__V1__DatasetTensor *t = info->tensors[i];
        fx_dtype dt = FX_F32;
        fxg_dtype_from_proto(t->dtype, &dt);
        uint64_t n = fx_dtype_size(dt);
        bool over = __builtin_mul_overflow(n, info->num_samples, &n);
        for (size_t k = 0; k < t->n_sample_shape && !over; k++)
            over = __builtin_mul_overflow(n, (uint64_t)t->sample_shape[k], &n);
        if (over || n > (1ull << 62)) /* upload.c's limit for one tensor */
            return LIE("tensor '%s' is too large", name, t->name);
        col_bytes[i] = n;
        total += n; /* at most FXDS__MAX_TENSORS * 2^62: no overflow */
    }
    if (total != info->bytes)
        return LIE("it says %" PRIu64 " bytes of data, its tensors hold %" PRIu64, name,
                   info->bytes, total);
    return 0;
#undef LIE
}

static int alloc_columns(fxds_dataset *d, const Fluxion__V1__Dataset *info, char *err,
                         size_t errlen)
{
    uint64_t *col_bytes = calloc(info->n_tensors ? info->n_tensors : 1, sizeof *col_bytes);
    d->colv = calloc(info->n_tensors ? info->n_tensors : 1, sizeof *d->colv);
    if (!d->colv || !col_bytes) {
        free(col_bytes);
        return fxu_oom(err, errlen);
    }
    int rc = check_record(info, d->name, col_bytes, err, errlen);
    d->cols = (fxds_columns){ .num_samples = (int64_t)info->num_samples, .n = 0,
                             .cols = d->colv };
    for (size_t i = 0; !rc && i < info->n_tensors; i++) {
        const Fluxion__V1__DatasetTensor *t = info->tensors[i];
        fxds_column *c = &d->colv[d->cols.n++];
        fx_dtype dt = FX_F32;
        fxg_dtype_from_proto(t->dtype, &dt);
        c->dtype = dt;
        c->sample_ndim = (int)t->n_sample_shape; /* checked: fits sample_shape */
        for (size_t k = 0; k < t->n_sample_shape; k++)
            c->sample_shape[k] = t->sample_shape[k];
        c->name = strdup(t->name);
        c->data = col_bytes[i] <= SIZE_MAX ? malloc((size_t)col_bytes[i]) : NULL;
        if (!c->name || !c->data)
            rc = fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "out of memory loading dataset "
                          "'%s' (%" PRIu64 " bytes for tensor '%s')", d->name, col_bytes[i],
                          t->name);
    }
    free(col_bytes);
    return rc;
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
                  t->shape[0] >= 1 && (n < 0 || t->shape[0] == n) &&
                  *at + t->shape[0] <= d->cols.num_samples;
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
    fxds__sum_item *items = calloc((size_t)d->cols.n, sizeof *items);
    if (!items) {
        out[0] = '\0';
        return;
    }
    for (int i = 0; i < d->cols.n; i++) {
        const fxds_column *c = &d->colv[i];
        size_t bytes = fx_dtype_size(c->dtype) * (size_t)d->cols.num_samples;
        for (int k = 0; k < c->sample_ndim; k++)
            bytes *= (size_t)c->sample_shape[k];
        items[i] = (fxds__sum_item){ c->name, c->dtype, d->cols.num_samples, c->sample_ndim,
                               c->sample_shape, { 0 } };
        unsigned int mdlen;
        EVP_Digest(c->data, bytes, items[i].digest, &mdlen, EVP_sha256(), NULL);
    }
    fxds__combine_sha(items, d->cols.n, out);
    free(items);
}

static int load(fxds_datasets *ds, fxds_dataset *d, char *err, size_t errlen)
{
    Fluxion__V1__Dataset *info = NULL;
    int rc = fxds__get_info(ds->st, d->name, &info, err, errlen);
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
    int rc = fxds__check_name(name, err, errlen);
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
