/*
 * test_datasets.c - the datasets module: chunked uploads into shards, the
 * checksum, every validation error, aborts and crash leftovers leaving
 * nothing, limits and the per-team quota, shared loading against deletion,
 * corrupt shards and stored records, threads. Datasets are named by their
 * keys "team/name" (store.h): here team "default" (always there) and, for
 * the quota, a team "b" the test creates.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "datasets/datasets.h"
#include "rpc/rpc.h"
#include "store/store.h"
#include "testutil.h"

typedef struct {
    char dir[64];
    fxdb_store *st;
    fxds_datasets *ds;
    fxds_datasets_opts opts;
    uint64_t quota;   /* the store's default dataset quota per team (0: none) */
    char err[1024];
} fixture;

#define F32 FLUXION__V1__DATA_TYPE__FP32
#define I32 FLUXION__V1__DATA_TYPE__INT32
#define I64 FLUXION__V1__DATA_TYPE__INT64

/* ----------------------------------------------------------- helpers */

/* Entries of a directory (not . and ..). */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void open_all(fixture *f)
{
    if (fxdb_store_open(f->dir, &f->st, f->err, sizeof f->err) != 0)
        fail_msg("%s", f->err);
    /* the daemon's default (--dataset-quota-mb): set at every start */
    fxdb_store_set_default_quota(f->st, &(fxdb_quota){ .max_dataset_bytes = f->quota });
    if (fxds_datasets_open(f->st, &f->opts, &f->ds, f->err, sizeof f->err) != 0)
        fail_msg("%s", f->err);
}

static void close_all(fixture *f)
{
    fxds_datasets_close(f->ds);
    fxdb_store_close(f->st);
    f->ds = NULL;
    f->st = NULL;
}

static int setup_opts(void **state, fxds_datasets_opts o, uint64_t quota)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/fxds-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->opts = o;
    f->quota = quota;
    open_all(f);
    *state = f;
    return 0;
}

/* Small shards so that every upload spans several. */
static int setup(void **state)
{
    return setup_opts(state, (fxds_datasets_opts){ .shard_bytes = 100 }, 0);
}

static int setup_limited(void **state)
{
    /* each team's datasets together: 2500 bytes (the store's default) */
    return setup_opts(state, (fxds_datasets_opts){ .max_dataset_bytes = 1000, .shard_bytes = 256 },
                      2500);
}

static int teardown(void **state)
{
    fixture *f = *state;
    close_all(f);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* Nothing of an upload anywhere: DIR/datasets holds only teams'
 * directories (no staging directory, nothing else), those hold exactly
 * datasets_kept entries together (no dataset directory beyond the kept
 * ones, no trash), and tmp/ is empty. */
static void assert_clean(fixture *f, int datasets_kept)
{
    const char *top = tu_pathf("%s/datasets", f->dir);
    DIR *d = opendir(top);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char team[256];
        snprintf(team, sizeof team, "%s", e->d_name);
        if (team[0] == '.' || (strcmp(team, "default") != 0 && strcmp(team, "b") != 0))
            fail_msg("DIR/datasets/%s is not a team's directory", team);
        int k = count_entries(tu_pathf("%s/datasets/%s", f->dir, team));
        if (k < 0)
            fail_msg("DIR/datasets/%s is not a directory", team);
        n += k;
    }
    closedir(d);
    assert_int_equal(n, datasets_kept);
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->dir)), 0);
}

static Fluxion__V1__TensorData piece(const char *name, Fluxion__V1__DataType dt, int ndim,
                                     int64_t *shape, const void *data, size_t len)
{
    Fluxion__V1__TensorData t = FLUXION__V1__TENSOR_DATA__INIT;
    t.name = (char *)name;
    t.dtype = dt;
    t.n_shape = (size_t)ndim;
    t.shape = shape;
    t.data.data = (uint8_t *)data;
    t.data.len = len;
    return t;
}

/* Adds samples [s0, s1) of x ([n,3] f32) and y ([n] i64). */
static int add_xy(fixture *f, fxds_upload *u, const float *x, const int64_t *y, int s0, int s1,
                  bool with_x, bool with_y)
{
    int64_t sx[2] = { s1 - s0, 3 }, sy[1] = { s1 - s0 };
    Fluxion__V1__TensorData tx = piece("x", F32, 2, sx, x + 3 * s0, sizeof(float) * 3 * (size_t)(s1 - s0));
    Fluxion__V1__TensorData ty = piece("y", I64, 1, sy, y + s0, sizeof(int64_t) * (size_t)(s1 - s0));
    int rc = 0;
    if (with_x)
        rc = fxds_upload_add(u, &tx, f->err, sizeof f->err);
    if (!rc && with_y)
        rc = fxds_upload_add(u, &ty, f->err, sizeof f->err);
    return rc;
}

#define N 40
static float X[N * 3];
static int64_t Y[N];

static void fill_xy(void)
{
    for (int i = 0; i < N * 3; i++)
        X[i] = (float)i * 0.5f - 7.0f;
    for (int i = 0; i < N; i++)
        Y[i] = i % 5;
}

/* Uploads X, Y as name in chunks of `step` samples (y lagging x by one
 * chunk, to interleave the tensors); asserts success. */
static Fluxion__V1__Dataset *upload_xy(fixture *f, const char *name, int step)
{
    fxds_upload *u;
    assert_int_equal(fxds_upload_begin(f->ds, name, "desc", &u, f->err, sizeof f->err), 0);
    for (int s = 0; s < N; s += step) {
        int e = s + step < N ? s + step : N;
        assert_int_equal(add_xy(f, u, X, Y, s, e, true, false), 0);
        if (s > 0)
            assert_int_equal(add_xy(f, u, X, Y, s - step, s, false, true), 0);
    }
    int last = ((N - 1) / step) * step;
    assert_int_equal(add_xy(f, u, X, Y, last, N, false, true), 0);
    Fluxion__V1__Dataset *info = NULL;
    int rc = fxds_upload_commit(u, &info, f->err, sizeof f->err);
    if (rc)
        fail_msg("commit: %s", f->err);
    return info;
}

/* The documented checksum, computed here from scratch. */
static void sha_of(const char *const *names, const char *const *dtypes, const char *const *shapes,
                   const void *const *data, const size_t *lens, int n, char out[65])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    for (int i = 0; i < n; i++) {
        unsigned char d[32];
        unsigned int dl;
        EVP_Digest(data[i], lens[i], d, &dl, EVP_sha256(), NULL);
        EVP_DigestUpdate(c, names[i], strlen(names[i]) + 1);
        EVP_DigestUpdate(c, dtypes[i], strlen(dtypes[i]) + 1);
        EVP_DigestUpdate(c, shapes[i], strlen(shapes[i]) + 1);
        EVP_DigestUpdate(c, d, 32);
    }
    unsigned char md[32];
    unsigned int ml;
    EVP_DigestFinal_ex(c, md, &ml);
    EVP_MD_CTX_free(c);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

static void xy_sha(const float *x, const int64_t *y, char out[65])
{
    sha_of((const char *[]){ "x", "y" }, (const char *[]){ "F32", "I64" },
           (const char *[]){ "[40,3]", "[40]" }, (const void *[]){ x, y },
           (size_t[]){ sizeof X, sizeof Y }, 2, out);
}

/* ------------------------------------------------------------- tests */

/* A refused open: its code, and *out NULL (it starts as a pointer that is
 * not). */
static void test_open_errors(void **state)
{
    fixture *f = *state;
    fxds_datasets *ds = (fxds_datasets *)&ds;
    assert_int_equal(fxds_datasets_open(NULL, NULL, &ds, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_null(ds);
    assert_non_null(strstr(f->err, "no store"));
    /* DIR/datasets taken by a file: named, and nothing opened */
    close_all(f);
    tu_rmtree(tu_pathf("%s/datasets", f->dir));
    FILE *fp = fopen(tu_pathf("%s/datasets", f->dir), "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(fxdb_store_open(f->dir, &f->st, f->err, sizeof f->err), 0);
    ds = (fxds_datasets *)&ds;
    assert_int_equal(fxds_datasets_open(f->st, NULL, &ds, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_null(ds);
    assert_non_null(strstr(f->err, "not a directory"));
    assert_int_equal(unlink(tu_pathf("%s/datasets", f->dir)), 0);
    fxdb_store_close(f->st);
    open_all(f);
}

static void test_upload_in_chunks_and_reopen(void **state)
{
    fixture *f = *state;
    fill_xy();
    Fluxion__V1__Dataset *info = upload_xy(f, "default/xy", 7);
    assert_string_equal(info->name, "default/xy"); /* the key */
    assert_string_equal(info->description, "desc");
    assert_int_equal(info->num_samples, N);
    assert_int_equal(info->bytes, sizeof X + sizeof Y);
    assert_int_equal(info->n_tensors, 2);
    assert_string_equal(info->tensors[0]->name, "x");
    assert_int_equal(info->tensors[0]->dtype, F32);
    assert_int_equal(info->tensors[0]->n_sample_shape, 1);
    assert_int_equal(info->tensors[0]->sample_shape[0], 3);
    assert_string_equal(info->tensors[1]->name, "y");
    assert_int_equal(info->tensors[1]->dtype, I64);
    assert_int_equal(info->tensors[1]->n_sample_shape, 0);
    /* a sample is 12 + 8 bytes: 5 per 100-byte shard */
    assert_int_equal(info->num_shards, 8);
    assert_int_equal(count_entries(tu_pathf("%s/datasets/default/xy", f->dir)), 8);
    char want[65];
    xy_sha(X, Y, want);
    assert_string_equal(info->sha256, want);
    assert_true(info->created_unix_ms > 0);
    fluxion__v1__dataset__free_unpacked(info, NULL);
    assert_clean(f, 1);

    close_all(f);
    open_all(f);
    Fluxion__V1__Dataset *again = NULL;
    assert_int_equal(fxds_dataset_get(f->ds, "default/xy", &again, f->err, sizeof f->err), 0);
    assert_string_equal(again->sha256, want);
    assert_int_equal(again->num_samples, N);
    fluxion__v1__dataset__free_unpacked(again, NULL);

    fxds_dataset *d;
    assert_int_equal(fxds_dataset_open(f->ds, "default/xy", &d, f->err, sizeof f->err), 0);
    const fxds_columns *c = fxds_dataset_columns(d);
    assert_int_equal(c->num_samples, N);
    assert_int_equal(c->n, 2);
    assert_int_equal(fxds_columns_find(c, "y"), 1);
    assert_int_equal(fxds_columns_find(c, "z"), -1);
    assert_string_equal(c->cols[0].name, "x");
    assert_int_equal(c->cols[0].dtype, FX_F32);
    assert_int_equal(c->cols[0].sample_ndim, 1);
    assert_int_equal(c->cols[0].sample_shape[0], 3);
    assert_memory_equal(c->cols[0].data, X, sizeof X);
    assert_int_equal(c->cols[1].dtype, FX_I64);
    assert_int_equal(c->cols[1].sample_ndim, 0);
    assert_memory_equal(c->cols[1].data, Y, sizeof Y);
    assert_string_equal(fxds_dataset_sha256(d), want);
    fxds_dataset_release(d);
}

static void test_checksum_stable_and_sensitive(void **state)
{
    fixture *f = *state;
    fill_xy();
    char want[65];
    xy_sha(X, Y, want);
    Fluxion__V1__Dataset *a = upload_xy(f, "default/a", 1);
    Fluxion__V1__Dataset *b = upload_xy(f, "default/b", 40);
    assert_string_equal(a->sha256, want);
    assert_string_equal(b->sha256, want); /* chunking does not matter */
    X[77] += 1.0f;
    Fluxion__V1__Dataset *c = upload_xy(f, "default/c", 13);
    xy_sha(X, Y, want);
    assert_string_equal(c->sha256, want);
    assert_string_not_equal(c->sha256, a->sha256);
    X[77] -= 1.0f;
    /* the same bytes under another shape are other data */
    fxds_upload *u;
    int64_t s6[2] = { 20, 6 }, sy[1] = { 20 };
    Fluxion__V1__TensorData t6 = piece("x", F32, 2, s6, X, sizeof X);
    Fluxion__V1__TensorData ty = piece("y", I64, 1, sy, Y, sizeof Y / 2);
    Fluxion__V1__Dataset *d = NULL;
    assert_int_equal(fxds_upload_begin(f->ds, "default/d", NULL, &u, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, &t6, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, &ty, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_commit(u, &d, f->err, sizeof f->err), 0);
    sha_of((const char *[]){ "x", "y" }, (const char *[]){ "F32", "I64" },
           (const char *[]){ "[20,6]", "[20]" }, (const void *[]){ X, Y },
           (size_t[]){ sizeof X, sizeof Y / 2 }, 2, want);
    assert_string_equal(d->sha256, want);
    assert_string_not_equal(d->sha256, a->sha256);
    Fluxion__V1__Dataset *all[] = { a, b, c, d };
    for (int i = 0; i < 4; i++)
        fluxion__v1__dataset__free_unpacked(all[i], NULL);
}

/* One bad piece after a good one: the add fails with code and a message
 * containing each of want; the abort leaves nothing. */
static void expect_add_error(fixture *f, const Fluxion__V1__TensorData *good,
                             const Fluxion__V1__TensorData *bad, int code, const char *want1,
                             const char *want2)
{
    fxds_upload *u;
    assert_int_equal(fxds_upload_begin(f->ds, "default/v", NULL, &u, f->err, sizeof f->err), 0);
    if (good)
        assert_int_equal(fxds_upload_add(u, good, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, bad, f->err, sizeof f->err), code);
    if (!strstr(f->err, want1) || (want2 && !strstr(f->err, want2)))
        fail_msg("message '%s' should mention '%s' and '%s'", f->err, want1, want2 ? want2 : "");
    fxds_upload_abort(u);
    assert_clean(f, 0);
}

static void test_validation_errors(void **state)
{
    fixture *f = *state;
    float buf[64] = { 0 };
    int32_t ibuf[64] = { 0 };
    int64_t s42[2] = { 4, 2 }, s43[2] = { 4, 3 }, s4[1] = { 4 }, s_neg[2] = { -1, 2 },
            s_zero[2] = { 4, 0 }, s9[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 },
            s_huge[3] = { INT64_MAX / 2, 4, 4 };
    Fluxion__V1__TensorData good = piece("x", F32, 2, s42, buf, 32);
    Fluxion__V1__TensorData t;

    t = piece("x", I32, 2, s42, ibuf, 32);
    expect_add_error(f, &good, &t, FXS_INVALID_ARGUMENT, "'x'", "dtype changed from F32 to I32");
    t = piece("x", F32, 2, s43, buf, 48);
    expect_add_error(f, &good, &t, FXS_INVALID_ARGUMENT, "'x'", "per-sample shape changed");
    t = piece("x", F32, 1, s4, buf, 16);
    expect_add_error(f, &good, &t, FXS_INVALID_ARGUMENT, "'x'", "[4,2]");
    t = piece("x", F32, 2, s42, buf, 31);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "'x'", "31 bytes");
    t = piece("x", F32, 0, NULL, buf, 4);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "'x'", "0 dimensions");
    t = piece("x", F32, 9, s9, buf, 4);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "'x'", "9 dimensions");
    t = piece("x", F32, 2, s_neg, buf, 0);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "'x'", "-1");
    t = piece("x", F32, 2, s_zero, buf, 0);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "'x'", "dimension 1 is 0");
    t = piece("x", F32, 3, s_huge, buf, 4);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "'x'", "too large");
    t = piece("x", (Fluxion__V1__DataType)9, 2, s42, buf, 32);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "'x'", "dtype 9");
    t = piece("", F32, 2, s42, buf, 32);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "tensor name", NULL);
    t = piece("a\"b", F32, 2, s42, buf, 32);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "a\"b", "position 1");
    t = piece("__metadata__", F32, 2, s42, buf, 32);
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "reserved", NULL);
    t = piece("ab\xC0\xAF", F32, 2, s42, buf, 32); /* an overlong '/' */
    expect_add_error(f, NULL, &t, FXS_INVALID_ARGUMENT, "not valid UTF-8", "position 2");

    /* DATA_TYPE_UNSPECIFIED reads as FP32: the same tensor continues */
    fxds_upload *u;
    Fluxion__V1__Dataset *info = NULL;
    t = piece("x", FLUXION__V1__DATA_TYPE__DATA_TYPE_UNSPECIFIED, 2, s42, buf, 32);
    assert_int_equal(fxds_upload_begin(f->ds, "default/ok", NULL, &u, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, &good, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, &t, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_commit(u, &info, f->err, sizeof f->err), 0);
    assert_int_equal(info->num_samples, 8);
    assert_int_equal(info->tensors[0]->dtype, F32);
    fluxion__v1__dataset__free_unpacked(info, NULL);
}

/* Errors found at commit: the upload is freed, nothing is left. */
static void test_commit_errors(void **state)
{
    fixture *f = *state;
    float buf[16] = { 0 };
    int64_t s42[2] = { 4, 2 }, s3[1] = { 3 }, s0[2] = { 0, 2 };
    Fluxion__V1__TensorData x = piece("x", F32, 2, s42, buf, 32);
    Fluxion__V1__TensorData y = piece("y", I64, 1, s3, buf, 24);
    Fluxion__V1__TensorData empty = piece("x", F32, 2, s0, buf, 0);
    struct {
        const Fluxion__V1__TensorData *t[2];
        int n;
        const char *want1, *want2;
    } cases[] = {
        { { &x, &y }, 2, "tensor 'y' has 3 samples", "'x' has 4" },
        { { NULL }, 0, "'default/v'", "no tensors" },
        { { &empty }, 1, "'default/v'", "no samples" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fxds_upload *u;
        Fluxion__V1__Dataset *info = (void *)1;
        assert_int_equal(fxds_upload_begin(f->ds, "default/v", NULL, &u, f->err, sizeof f->err), 0);
        for (int k = 0; k < cases[i].n; k++)
            assert_int_equal(fxds_upload_add(u, cases[i].t[k], f->err, sizeof f->err), 0);
        assert_int_equal(fxds_upload_commit(u, &info, f->err, sizeof f->err), FXS_INVALID_ARGUMENT);
        assert_null(info);
        assert_non_null(strstr(f->err, cases[i].want1));
        assert_non_null(strstr(f->err, cases[i].want2));
        assert_clean(f, 0);
    }
    Fluxion__V1__Dataset **l;
    int n;
    assert_int_equal(fxds_dataset_list(f->ds, NULL, &l, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 0);
    free(l);
}

static void test_names(void **state)
{
    fixture *f = *state;
    fxds_upload *u = (void *)1;
    /* keys "team/name": a bad name part, a bad team part, no team part */
    static const struct {
        const char *key, *says;
    } bad[] = {
        { "", "empty" },
        { "default/", "name part" },
        { "default/.hidden", "name part" },
        { "default/-x", "name part" },
        { "default/a/b", "name part" },
        { "default/..", "name part" },
        { "default/sp ace", "name part" },
        { "default/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "name part" },
        { "../x", "team part" },
        { "Default/x", "team part" },
        { "/x", "team part" },
        { "xy", "has no team part" },
        { "a", "has no team part" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        u = (void *)1;
        int rc = fxds_upload_begin(f->ds, bad[i].key, NULL, &u, f->err, sizeof f->err);
        if (rc != FXS_INVALID_ARGUMENT || !strstr(f->err, "dataset name") ||
            !strstr(f->err, bad[i].says))
            fail_msg("key '%s': %d \"%s\", want INVALID_ARGUMENT saying \"%s\"", bad[i].key, rc,
                     f->err, bad[i].says);
        assert_null(u);
    }
    /* a bare name is refused everywhere, the message naming the missing team part */
    Fluxion__V1__Dataset *info = (void *)1;
    assert_int_equal(fxds_dataset_get(f->ds, "xy", &info, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_null(info);
    assert_non_null(strstr(f->err, "key \"xy\" has no team part"));
    assert_int_equal(fxds_dataset_delete(f->ds, "xy", f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "key \"xy\" has no team part"));
    fxds_dataset *d = (void *)1;
    assert_int_equal(fxds_dataset_open(f->ds, "xy", &d, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_null(d);
    assert_non_null(strstr(f->err, "key \"xy\" has no team part"));
    /* a team that does not exist: NOT_FOUND naming it, and nothing left */
    fill_xy();
    int rc = fxds_upload_begin(f->ds, "ghost/xy", NULL, &u, f->err, sizeof f->err);
    if (rc == 0) {
        rc = add_xy(f, u, X, Y, 0, 10, true, true);
        if (rc == 0) {
            rc = fxds_upload_commit(u, &info, f->err, sizeof f->err);
            assert_null(info);
        } else {
            fxds_upload_abort(u);
        }
    }
    assert_int_equal(rc, FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "team 'ghost' not found"));
    assert_clean(f, 0);

    char longdesc[5000];
    memset(longdesc, 'd', sizeof longdesc - 1);
    longdesc[sizeof longdesc - 1] = '\0';
    assert_int_equal(fxds_upload_begin(f->ds, "default/ok", longdesc, &u, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "description"));

    fill_xy();
    fluxion__v1__dataset__free_unpacked(upload_xy(f, "default/taken", 10), NULL);
    assert_int_equal(fxds_upload_begin(f->ds, "default/taken", NULL, &u, f->err, sizeof f->err),
                     FXS_ALREADY_EXISTS);
    assert_non_null(strstr(f->err, "'default/taken'"));
    /* a name being uploaded is taken too, until that upload ends */
    fxds_upload *first, *second;
    assert_int_equal(fxds_upload_begin(f->ds, "default/busy", NULL, &first, f->err,
                                       sizeof f->err), 0);
    assert_int_equal(fxds_upload_begin(f->ds, "default/busy", NULL, &second, f->err,
                                       sizeof f->err), FXS_ALREADY_EXISTS);
    assert_non_null(strstr(f->err, "in progress"));
    fxds_upload_abort(first);
    assert_int_equal(fxds_upload_begin(f->ds, "default/busy", NULL, &second, f->err,
                                       sizeof f->err), 0);
    assert_string_equal(fxds_upload_name(second), "default/busy");
    fxds_upload_abort(second);

    assert_int_equal(fxds_dataset_get(f->ds, "default/nope", &info, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "'default/nope'"));
    assert_int_equal(fxds_dataset_get(f->ds, "../x", &info, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxds_dataset_get(f->ds, "default/../x", &info, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/nope", f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxds_dataset_open(f->ds, "default/nope", &d, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_null(d);
    assert_clean(f, 1);
}

static void test_abort_leaves_nothing(void **state)
{
    fixture *f = *state;
    fill_xy();
    fxds_upload *u;
    assert_int_equal(fxds_upload_begin(f->ds, "default/gone", NULL, &u, f->err, sizeof f->err), 0);
    assert_int_equal(add_xy(f, u, X, Y, 0, 30, true, true), 0);
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->dir)), 0); /* spill files are unlinked */
    fxds_upload_abort(u);
    fxds_upload_abort(NULL);
    assert_clean(f, 0);
    Fluxion__V1__Dataset *info;
    assert_int_equal(fxds_dataset_get(f->ds, "default/gone", &info, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
}

static void put_file(const char *path)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs("partial", fp);
    fclose(fp);
}

static void test_crash_leftovers_removed_at_open(void **state)
{
    fixture *f = *state;
    fill_xy();
    fluxion__v1__dataset__free_unpacked(upload_xy(f, "default/kept", 10), NULL);
    close_all(f);
    /* a crash during a commit (staging dir, DIR/datasets/.staging-*), after
     * the rename but before the row (a team's dir no row names), during a
     * delete (trash, in the team's dir), or mid-shard (tmp/) */
    const char *dirs[] = { ".staging-a1b2c3", "default/norow", "default/.trash-1-x9y8z7" };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mkdir(tu_pathf("%s/datasets/%s", f->dir, dirs[i]), 0755), 0);
        put_file(tu_pathf("%s/datasets/%s/shard-0.safetensors", f->dir, dirs[i]));
    }
    put_file(tu_pathf("%s/tmp/.shard.tmp.abcdef", f->dir));
    open_all(f);
    assert_clean(f, 1);
    assert_int_equal(count_entries(tu_pathf("%s/datasets/default", f->dir)), 1);
    assert_int_equal(count_entries(tu_pathf("%s/datasets/default/kept", f->dir)), 8);
    fxds_dataset *d;
    assert_int_equal(fxds_dataset_open(f->ds, "default/kept", &d, f->err, sizeof f->err), 0);
    assert_memory_equal(fxds_dataset_columns(d)->cols[0].data, X, sizeof X);
    fxds_dataset_release(d);
}

/* The number of datasets listed for team (NULL: all), and that each listed
 * name is a key of that team. */
static int list_count(fixture *f, const char *team)
{
    Fluxion__V1__Dataset **l;
    int n;
    assert_int_equal(fxds_dataset_list(f->ds, team, &l, &n, f->err, sizeof f->err), 0);
    for (int i = 0; i < n; i++) {
        if (team) {
            size_t tl = strlen(team);
            if (strncmp(l[i]->name, team, tl) != 0 || l[i]->name[tl] != '/')
                fail_msg("team %s's list has '%s'", team, l[i]->name);
        }
        fluxion__v1__dataset__free_unpacked(l[i], NULL);
    }
    free(l);
    return n;
}

static void test_limits_and_quota(void **state)
{
    fixture *f = *state; /* max 1000 bytes per dataset, 2500 per team (the default) */
    float buf[300] = { 0 };
    int64_t s200[2] = { 200, 1 }, s100[2] = { 100, 1 }, s51[2] = { 51, 1 };
    Fluxion__V1__TensorData t200 = piece("x", F32, 2, s200, buf, 800);
    Fluxion__V1__TensorData t100 = piece("x", F32, 2, s100, buf, 400);
    Fluxion__V1__TensorData t51 = piece("x", F32, 2, s51, buf, 204);
    fxds_upload *u, *v, *w;
    Fluxion__V1__Dataset *info;

    /* one dataset over max_dataset_bytes */
    assert_int_equal(fxds_upload_begin(f->ds, "default/big", NULL, &u, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, &t200, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, &t51, f->err, sizeof f->err), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "'default/big'"));
    assert_non_null(strstr(f->err, "1000 bytes"));
    fxds_upload_abort(u);
    assert_clean(f, 0);

    /* the team's quota counts stored datasets and uploads in progress */
    const char *names[] = { "default/q1", "default/q2" };
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fxds_upload_begin(f->ds, names[i], NULL, &u, f->err, sizeof f->err), 0);
        assert_int_equal(fxds_upload_add(u, &t200, f->err, sizeof f->err), 0);
        assert_int_equal(fxds_upload_commit(u, &info, f->err, sizeof f->err), 0);
        assert_int_equal(info->num_shards, 4); /* 64 samples of 4 bytes per 256-byte shard */
        fluxion__v1__dataset__free_unpacked(info, NULL);
    }
    assert_int_equal(fxds_upload_begin(f->ds, "default/q3", NULL, &u, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_begin(f->ds, "default/q4", NULL, &v, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, &t100, f->err, sizeof f->err), 0);   /* 2000 of 2500 */
    assert_int_equal(fxds_upload_add(v, &t200, f->err, sizeof f->err), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'default' dataset quota: 2500 bytes allowed, 2000 "
                                   "stored or being uploaded; tensor 'x' of dataset 'q4' needs "
                                   "800 more"));
    fxds_upload_abort(u); /* gives its reservation back */
    assert_int_equal(fxds_upload_add(v, &t200, f->err, sizeof f->err), 0);   /* 2400 */

    /* the teams' quotas are separate: default is full (2400 of 2500, v in
     * progress), team b (the default quota too, of its own) still uploads */
    assert_int_equal(fxds_upload_begin(f->ds, "default/q5", NULL, &w, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(w, &t51, f->err, sizeof f->err), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'default' dataset quota"));
    fxds_upload_abort(w);
    assert_int_equal(fxdb_team_create(f->st, "b", "team b", NULL, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_begin(f->ds, "b/q1", NULL, &w, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(w, &t200, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_commit(w, &info, f->err, sizeof f->err), 0);
    assert_string_equal(info->name, "b/q1");
    fluxion__v1__dataset__free_unpacked(info, NULL);
    assert_int_equal(count_entries(tu_pathf("%s/datasets/b/q1", f->dir)), 4);
    /* b's 800 bytes are not default's: default still has 100 left, b 1700 */
    assert_int_equal(fxds_upload_begin(f->ds, "default/q5", NULL, &w, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(w, &t51, f->err, sizeof f->err), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "2400 stored or being uploaded"));
    fxds_upload_abort(w);
    assert_int_equal(fxds_upload_begin(f->ds, "b/q2", NULL, &w, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(w, &t200, f->err, sizeof f->err), 0);   /* b: 1600 */
    fxds_upload_abort(w);
    fxds_upload_abort(v);
    /* a team's own quota replaces the default: b at 1000, 800 of them stored */
    assert_int_equal(fxdb_team_update(f->st, "b", NULL, &(fxdb_quota){ .max_dataset_bytes = 1000 },
                                      f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_begin(f->ds, "b/q2", NULL, &w, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(w, &t51, f->err, sizeof f->err), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'b' dataset quota: 1000 bytes allowed, 800 stored or "
                                   "being uploaded; tensor 'x' of dataset 'q2' needs 204 more"));
    fxds_upload_abort(w);
    assert_int_equal(list_count(f, "default"), 2);
    assert_int_equal(list_count(f, "b"), 1);
    assert_int_equal(list_count(f, NULL), 3);

    /* the stored total (1600) survives a restart; a deletion frees its share */
    close_all(f);
    open_all(f);
    assert_int_equal(fxds_upload_begin(f->ds, "default/q3", NULL, &u, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_begin(f->ds, "default/q4", NULL, &v, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(u, &t100, f->err, sizeof f->err), 0);   /* 2000 */
    assert_int_equal(fxds_upload_add(v, &t100, f->err, sizeof f->err), 0);   /* 2400 */
    assert_int_equal(fxds_upload_add(v, &t51, f->err, sizeof f->err), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'default' dataset quota: 2500 bytes allowed, 2400 "
                                   "stored or being uploaded; tensor 'x' of dataset 'q4' needs "
                                   "204 more"));
    assert_int_equal(fxds_dataset_delete(f->ds, "default/q1", f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(v, &t51, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_commit(u, &info, f->err, sizeof f->err), 0);
    fluxion__v1__dataset__free_unpacked(info, NULL);
    assert_int_equal(fxds_upload_commit(v, &info, f->err, sizeof f->err), 0);
    assert_int_equal(info->num_samples, 151);
    fluxion__v1__dataset__free_unpacked(info, NULL);
    /* b's quota and dataset came through the restart too */
    assert_int_equal(fxds_upload_begin(f->ds, "b/q2", NULL, &w, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_upload_add(w, &t51, f->err, sizeof f->err), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'b' dataset quota: 1000 bytes allowed, 800 stored"));
    fxds_upload_abort(w);
    assert_int_equal(list_count(f, "default"), 3);
    assert_int_equal(list_count(f, "b"), 1);
    assert_clean(f, 4);
}

static void test_open_release_vs_delete(void **state)
{
    fixture *f = *state;
    fill_xy();
    fluxion__v1__dataset__free_unpacked(upload_xy(f, "default/shared", 9), NULL);
    fxds_dataset *a, *b;
    assert_int_equal(fxds_dataset_open(f->ds, "default/shared", &a, f->err, sizeof f->err), 0);
    assert_int_equal(fxds_dataset_open(f->ds, "default/shared", &b, f->err, sizeof f->err), 0);
    assert_ptr_equal(a, b); /* loaded once, shared */
    assert_ptr_equal(fxds_dataset_columns(a)->cols[0].data, fxds_dataset_columns(b)->cols[0].data);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/shared", f->err, sizeof f->err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(f->err, "2 training jobs"));
    fxds_dataset_release(b);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/shared", f->err, sizeof f->err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(f->err, "1 training job"));
    Fluxion__V1__Dataset *info;
    assert_int_equal(fxds_dataset_get(f->ds, "default/shared", &info, f->err, sizeof f->err), 0);
    fluxion__v1__dataset__free_unpacked(info, NULL);
    fxds_dataset_release(a);
    fxds_dataset_release(NULL);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/shared", f->err, sizeof f->err), 0);
    assert_int_equal(fxds_dataset_open(f->ds, "default/shared", &a, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_clean(f, 0);
    /* deleted for good: not back after a restart either */
    close_all(f);
    open_all(f);
    assert_int_equal(fxds_dataset_get(f->ds, "default/shared", &info, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
}

static void test_corrupt_shard_is_data_loss(void **state)
{
    fixture *f = *state;
    fill_xy();
    fluxion__v1__dataset__free_unpacked(upload_xy(f, "default/bad", 10), NULL);
    /* flip one data byte (past the header) of shard 3 */
    const char *p = tu_pathf("%s/datasets/default/bad/shard-3.safetensors", f->dir);
    FILE *fp = fopen(p, "r+b");
    assert_non_null(fp);
    fseek(fp, -3, SEEK_END);
    int ch = fgetc(fp);
    fseek(fp, -3, SEEK_END);
    fputc(ch ^ 0x40, fp);
    fclose(fp);
    fxds_dataset *d = (void *)1;
    assert_int_equal(fxds_dataset_open(f->ds, "default/bad", &d, f->err, sizeof f->err),
                     FXS_DATA_LOSS);
    assert_null(d);
    assert_non_null(strstr(f->err, "SHA-256"));
    /* a missing shard too */
    assert_int_equal(unlink(tu_pathf("%s/datasets/default/bad/shard-1.safetensors", f->dir)), 0);
    assert_int_equal(fxds_dataset_open(f->ds, "default/bad", &d, f->err, sizeof f->err),
                     FXS_DATA_LOSS);
    assert_non_null(strstr(f->err, "'default/bad'"));
    /* a failed load holds nothing open: the dataset can be deleted */
    assert_int_equal(fxds_dataset_delete(f->ds, "default/bad", f->err, sizeof f->err), 0);
}

/* The ways a stored record can lie (a corrupt or hostile row). */
enum { BAD_RANK, BAD_NEG_DIM, BAD_ZERO_DIM, BAD_HUGE_DIMS, BAD_SAMPLES, BAD_DTYPE, BAD_DUP_NAME,
       BAD_BYTES, BAD_NO_TENSORS, BAD_SHARDS };

static void corrupt(Fluxion__V1__Dataset *d, int how)
{
    static int64_t ones[40] = { [0 ... 39] = 1 };
    static int64_t neg[1] = { -3 }, zero[1] = { 0 }, huge[2] = { 1ll << 40, 1ll << 40 };
    Fluxion__V1__DatasetTensor *x = d->tensors[0], *y = d->tensors[1];
    switch (how) {
    case BAD_RANK: /* more dimensions than a column has room for; no shards to refuse it */
        y->sample_shape = ones;
        y->n_sample_shape = 40;
        d->num_samples = 0;
        d->num_shards = 0;
        break;
    case BAD_NEG_DIM: x->sample_shape = neg; break;
    case BAD_ZERO_DIM: x->sample_shape = zero; break;
    case BAD_HUGE_DIMS: /* a product that wraps to 0 */
        x->sample_shape = huge;
        x->n_sample_shape = 2;
        break;
    case BAD_SAMPLES: d->num_samples = UINT64_MAX; break;
    case BAD_DTYPE: x->dtype = 77; break;
    case BAD_DUP_NAME: y->name = x->name; break;
    case BAD_BYTES: d->bytes += 1; break;
    case BAD_NO_TENSORS: d->n_tensors = 0; break;
    case BAD_SHARDS: d->num_shards = 41; break;
    }
}

/* Rewrites the stored row of dataset name through the store (its shard
 * files stay) with the record corrupted as `how` says. */
static void rewrite_record(fixture *f, const char *name, int how)
{
    void *blob = NULL;
    size_t len = 0;
    assert_int_equal(fxdb_dataset_delete(f->st, name, NULL, NULL, &blob, &len, f->err,
                                         sizeof f->err), 0);
    Fluxion__V1__Dataset *d = fluxion__v1__dataset__unpack(NULL, len, blob);
    free(blob);
    assert_non_null(d);
    assert_int_equal(d->n_tensors, 2);
    /* corrupt() points fields at static memory: put the originals back before the free */
    Fluxion__V1__Dataset saved = *d;
    Fluxion__V1__DatasetTensor st[2] = { *d->tensors[0], *d->tensors[1] };
    corrupt(d, how);
    len = fluxion__v1__dataset__get_packed_size(d);
    blob = malloc(len + 1);
    fluxion__v1__dataset__pack(d, blob);
    *d = saved;
    *d->tensors[0] = st[0];
    *d->tensors[1] = st[1];
    fluxion__v1__dataset__free_unpacked(d, NULL);
    assert_int_equal(fxdb_dataset_insert(f->st, name, blob, len, 0, 0, NULL, NULL, f->err,
                                         sizeof f->err), 0);
    free(blob);
}

/* A stored record is checked like input from outside: every lie is
 * DATA_LOSS naming the dataset and the lie (under ASan: no overflow of a
 * column's sample_shape, no huge allocation), and the other datasets stay
 * usable. */
static void test_hostile_record_is_data_loss(void **state)
{
    fixture *f = *state;
    fill_xy();
    fluxion__v1__dataset__free_unpacked(upload_xy(f, "default/good", 10), NULL);
    static const struct {
        int how;
        const char *says;
    } cases[] = {
        { BAD_RANK, "tensor 'y' has 40 dimensions per sample (at most 7)" },
        { BAD_NEG_DIM, "tensor 'x': sample dimension 0 is -3" },
        { BAD_ZERO_DIM, "tensor 'x': sample dimension 0 is 0" },
        { BAD_HUGE_DIMS, "tensor 'x' is too large" },
        { BAD_SAMPLES, "18446744073709551615 samples" },
        { BAD_DTYPE, "tensor 'x': dtype 77" },
        { BAD_DUP_NAME, "tensor 'x' twice" },
        { BAD_BYTES, "801 bytes" },
        { BAD_NO_TENSORS, "no tensors" },
        { BAD_SHARDS, "41 shards" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fluxion__v1__dataset__free_unpacked(upload_xy(f, "default/bad", 10), NULL);
        rewrite_record(f, "default/bad", cases[i].how);
        fxds_dataset *d = (void *)1;
        int rc = fxds_dataset_open(f->ds, "default/bad", &d, f->err, sizeof f->err);
        if (rc != FXS_DATA_LOSS || !strstr(f->err, "'default/bad'") ||
            !strstr(f->err, cases[i].says))
            fail_msg("case %zu: status %d \"%s\", want DATA_LOSS saying \"%s\"", i, rc, f->err,
                     cases[i].says);
        assert_null(d);
        /* the rest of the registry works */
        assert_int_equal(fxds_dataset_open(f->ds, "default/good", &d, f->err, sizeof f->err), 0);
        assert_memory_equal(fxds_dataset_columns(d)->cols[0].data, X, sizeof X);
        fxds_dataset_release(d);
        Fluxion__V1__Dataset **l;
        int n;
        assert_int_equal(fxds_dataset_list(f->ds, NULL, &l, &n, f->err, sizeof f->err), 0);
        assert_int_equal(n, 2);
        for (int k = 0; k < n; k++)
            fluxion__v1__dataset__free_unpacked(l[k], NULL);
        free(l);
        assert_int_equal(fxds_dataset_delete(f->ds, "default/bad", f->err, sizeof f->err), 0);
    }
}

typedef struct {
    fixture *f;
    char name[16];
    int id;
    char err[512];
    int rc;
    char sha[65], want[65];
} worker;

static void *upload_worker(void *arg)
{
    worker *w = arg;
    float x[N * 3];
    int64_t y[N];
    for (int i = 0; i < N * 3; i++)
        x[i] = (float)(i + w->id * 1000);
    for (int i = 0; i < N; i++)
        y[i] = w->id;
    fxds_upload *u;
    w->rc = fxds_upload_begin(w->f->ds, w->name, NULL, &u, w->err, sizeof w->err);
    for (int s = 0; !w->rc && s < N; s += 4) {
        int64_t sx[2] = { 4, 3 }, sy[1] = { 4 };
        Fluxion__V1__TensorData tx = piece("x", F32, 2, sx, x + 3 * s, 48);
        Fluxion__V1__TensorData ty = piece("y", I64, 1, sy, y + s, 32);
        w->rc = fxds_upload_add(u, &tx, w->err, sizeof w->err);
        if (!w->rc)
            w->rc = fxds_upload_add(u, &ty, w->err, sizeof w->err);
        if (w->rc)
            fxds_upload_abort(u);
    }
    Fluxion__V1__Dataset *info = NULL;
    if (!w->rc)
        w->rc = fxds_upload_commit(u, &info, w->err, sizeof w->err);
    if (info) {
        snprintf(w->sha, sizeof w->sha, "%s", info->sha256);
        fluxion__v1__dataset__free_unpacked(info, NULL);
    }
    xy_sha(x, y, w->want);
    return NULL;
}

static void test_concurrent_uploads(void **state)
{
    fixture *f = *state;
    enum { W = 6 };
    worker w[W];
    pthread_t th[W];
    for (int i = 0; i < W; i++) {
        w[i] = (worker){ .f = f, .id = i };
        snprintf(w[i].name, sizeof w[i].name, "default/par%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, upload_worker, &w[i]), 0);
    }
    for (int i = 0; i < W; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].rc, 0);
        assert_string_equal(w[i].sha, w[i].want);
    }
    Fluxion__V1__Dataset **l;
    int n;
    assert_int_equal(fxds_dataset_list(f->ds, "default", &l, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, W);
    for (int i = 0; i < n; i++) {
        assert_string_equal(l[i]->name, w[i].name); /* by key */
        fluxion__v1__dataset__free_unpacked(l[i], NULL);
    }
    free(l);
    assert_clean(f, W);
}

typedef struct {
    fxds_datasets *ds;
    fxds_dataset *d;
    int rc;
} opener;

static void *open_worker(void *arg)
{
    opener *o = arg;
    char err[256];
    o->rc = fxds_dataset_open(o->ds, "default/many", &o->d, err, sizeof err);
    return NULL;
}

/* Opens racing one another load the dataset once and share it. */
static void test_concurrent_opens(void **state)
{
    fixture *f = *state;
    fill_xy();
    fluxion__v1__dataset__free_unpacked(upload_xy(f, "default/many", 3), NULL);
    enum { W = 8 };
    opener o[W];
    pthread_t th[W];
    for (int i = 0; i < W; i++) {
        o[i] = (opener){ .ds = f->ds };
        assert_int_equal(pthread_create(&th[i], NULL, open_worker, &o[i]), 0);
    }
    for (int i = 0; i < W; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(o[i].rc, 0);
        assert_ptr_equal(o[i].d, o[0].d);
    }
    assert_memory_equal(fxds_dataset_columns(o[0].d)->cols[1].data, Y, sizeof Y);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/many", f->err, sizeof f->err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(f->err, "8 training jobs"));
    for (int i = 0; i < W; i++)
        fxds_dataset_release(o[i].d);
    assert_int_equal(fxds_dataset_delete(f->ds, "default/many", f->err, sizeof f->err), 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_errors),
        T(test_upload_in_chunks_and_reopen),
        T(test_checksum_stable_and_sensitive),
        T(test_validation_errors),
        T(test_commit_errors),
        T(test_names),
        T(test_abort_leaves_nothing),
        T(test_crash_leftovers_removed_at_open),
        cmocka_unit_test_setup_teardown(test_limits_and_quota, setup_limited, teardown),
        T(test_open_release_vs_delete),
        T(test_corrupt_shard_is_data_loss),
        T(test_hostile_record_is_data_loss),
        T(test_concurrent_uploads),
        T(test_concurrent_opens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
