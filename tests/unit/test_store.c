/*
 * test_store.c - the model store: records, versions, files on disk, crash
 * recovery, the data-directory lock, threads.
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
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "rpc/rpc.h"
#include "base/fsutil.h"
#include "store/store.h"
#include "testutil.h"

/* SHA-256 test vectors (FIPS 180-2). */
#define SHA_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA_448 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
#define MSG_448 "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"

typedef struct {
    char dir[64];   /* the test's mkdtemp directory */
    char data[128]; /* the store's data dir inside it (created by the store) */
    fxdb_store *st;
    char err[512];
} fixture;

/* ----------------------------------------------------------- helpers */

static void put_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Entries of a directory other than . and .., -1 if it cannot be opened. */
static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* One integer from the store's database, read through a connection of
 * the test's own (WAL lets it read while the store is open). */
static int64_t db_int(const fixture *f, const char *query)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    if (sqlite3_open_v2(tu_pathf("%s/fluxion.db", f->data), &db, SQLITE_OPEN_READONLY, NULL) ||
        sqlite3_prepare_v2(db, query, -1, &s, NULL) != SQLITE_OK)
        fail_msg("%s: %s", query, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/fxs-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->data, sizeof f->data, "%s/data/nested", f->dir);
    if (fxdb_store_open(f->data, &f->st, f->err, sizeof f->err) != 0)
        fail_msg("open: %s", f->err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fxdb_store_close(f->st);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

static void reopen(fixture *f)
{
    fxdb_store_close(f->st);
    if (fxdb_store_open(f->data, &f->st, f->err, sizeof f->err) != 0)
        fail_msg("reopen: %s", f->err);
}

static void create(fixture *f, const char *name, const char *weights)
{
    int rc = fxdb_store_create_model(f->st, name, "desc", "\x0a\x01x", 3, 7, true, weights,
                                    strlen(weights), "init (seed 7)", f->err, sizeof f->err);
    if (rc)
        fail_msg("create %s: %d %s", name, rc, f->err);
}

static int64_t add(fixture *f, const char *name, const char *weights)
{
    int64_t v = -1;
    int rc = fxdb_store_add_version(f->st, name, weights, strlen(weights), "job 1", &v, f->err,
                                   sizeof f->err);
    if (rc)
        fail_msg("add_version %s: %d %s", name, rc, f->err);
    return v;
}

/* Asserts that reading the version gives exactly `want`. */
static void assert_weights(fixture *f, const char *name, int64_t version, const char *want)
{
    void *buf = NULL;
    size_t len = 0;
    int rc = fxdb_store_read_weights(f->st, name, version, &buf, &len, f->err, sizeof f->err);
    if (rc)
        fail_msg("read_weights %s v%lld: %d %s", name, (long long)version, rc, f->err);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    free(buf);
}

static int read_rc(fixture *f, const char *name, int64_t version)
{
    void *buf = (void *)1;
    size_t len = 0;
    f->err[0] = '\0';
    int rc = fxdb_store_read_weights(f->st, name, version, &buf, &len, f->err, sizeof f->err);
    if (rc == 0)
        free(buf);
    else
        assert_true(f->err[0] != '\0');
    return rc;
}

/* The model's usable version numbers, as a string "1,2,3". */
static const char *versions_of(fixture *f, const char *name)
{
    static char s[256];
    fxdb_model_rec m;
    int rc = fxdb_store_get_model(f->st, name, &m, f->err, sizeof f->err);
    if (rc)
        fail_msg("get %s: %d %s", name, rc, f->err);
    s[0] = '\0';
    for (int i = 0; i < m.n_versions; i++)
        snprintf(s + strlen(s), sizeof s - strlen(s), "%s%lld", i ? "," : "",
                 (long long)m.versions[i].version);
    fxdb_model_rec_free(&m);
    return s;
}

/* ------------------------------------------------------------- tests */

static void test_sha256_vectors(void **state)
{
    char hex[65];
    fxu_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, SHA_ABC);
    fxu_sha256_hex("", 0, hex);
    assert_string_equal(hex, SHA_EMPTY);
    fxu_sha256_hex(NULL, 0, hex);
    assert_string_equal(hex, SHA_EMPTY);
    fxu_sha256_hex(MSG_448, strlen(MSG_448), hex);
    assert_string_equal(hex, SHA_448);
}

static void test_name_ok(void **state)
{
    char err[256];
    char max[129], over[130];
    memset(max, 'a', 128);
    max[128] = '\0';
    memset(over, 'a', 129);
    over[129] = '\0';
    const char *good[] = { "a", "Model_1", "x.y-z", "9", "_", max, "a..b" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        err[0] = '\0';
        if (!fxdb_model_name_ok(good[i], err, sizeof err))
            fail_msg("\"%s\" refused: %s", good[i], err);
    }
    const char *bad[] = { "", over, "a/b", "/", "..", ".", ".hidden", "-x", "a b", "a\nb",
                          "é", "a\\b", "a:b" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        if (fxdb_model_name_ok(bad[i], err, sizeof err))
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
    assert_false(fxdb_model_name_ok(NULL, err, sizeof err));
    assert_false(fxdb_model_name_ok("..", NULL, 0)); /* no err buffer: no crash */
    assert_false(fxdb_model_name_ok(over, err, sizeof err));
    assert_non_null(strstr(err, "129"));
}

static void test_create_get(void **state)
{
    fixture *f = *state;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t before = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    assert_int_equal(fxdb_store_create_model(f->st, "default/m1", "a model", "\x00\x01\x02", 3,
                                            UINT64_MAX, true, "abc", 3, "init (seed 7)",
                                            f->err, sizeof f->err),
                     0);
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t after = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;

    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/m1", &m, f->err, sizeof f->err), 0);
    assert_string_equal(m.name, "default/m1");
    assert_string_equal(m.description, "a model");
    assert_int_equal(m.spec_len, 3);
    assert_memory_equal(m.spec, "\x00\x01\x02", 3);
    assert_true(m.seed == UINT64_MAX);
    assert_true(m.loaded);
    assert_in_range(m.created_ms, before, after);
    assert_int_equal(m.n_versions, 1);
    assert_int_equal(m.versions[0].version, 1);
    assert_string_equal(m.versions[0].source, "init (seed 7)");
    assert_int_equal(m.versions[0].weights_bytes, 3);
    assert_string_equal(m.versions[0].sha256, SHA_ABC);
    assert_in_range(m.versions[0].created_ms, before, after);
    fxdb_model_rec_free(&m);
    assert_null(m.name); /* the record is reset: a second free is harmless */
    fxdb_model_rec_free(&m);
    fxdb_model_rec_free(NULL);

    assert_true(exists(tu_pathf("%s/models/default/m1/v1.safetensors", f->data)));
    assert_true(exists(tu_pathf("%s/fluxion.db", f->data)));
    assert_string_equal(fxdb_store_dir(f->st), f->data);
    assert_weights(f, "default/m1", 1, "abc");
}

static void test_create_empty_fields(void **state)
{
    fixture *f = *state;
    /* no description, spec, source; empty weights */
    assert_int_equal(fxdb_store_create_model(f->st, "default/e", NULL, NULL, 0, 0, false, NULL, 0,
                                             NULL,
                                            f->err, sizeof f->err),
                     0);
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/e", &m, f->err, sizeof f->err), 0);
    assert_string_equal(m.description, "");
    assert_int_equal(m.spec_len, 0);
    assert_false(m.loaded);
    assert_int_equal(m.seed, 0);
    assert_string_equal(m.versions[0].source, "");
    assert_string_equal(m.versions[0].sha256, SHA_EMPTY);
    assert_int_equal(m.versions[0].weights_bytes, 0);
    fxdb_model_rec_free(&m);
    assert_weights(f, "default/e", 0, "");
}

static void test_bad_arguments(void **state)
{
    fixture *f = *state;
    /* data pointers missing while lengths say there is data */
    assert_int_equal(fxdb_store_create_model(f->st, "default/m", "", NULL, 4, 0, true, "w", 1, "",
                                            f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_store_create_model(f->st, "default/m", "", NULL, 0, 0, true, NULL, 5, "",
                                            f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    create(f, "default/m", "w1");
    int64_t v = 0;
    assert_int_equal(fxdb_store_add_version(f->st, "default/m", NULL, 5, "", &v, f->err,
                                            sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(read_rc(f, "default/m", -1), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_store_read_weights(f->st, "default/m", 0, NULL, NULL, f->err,
                                             sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_store_list_models(f->st, NULL, NULL, NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_store_get_model(NULL, "default/m", NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    /* nothing was added by the refused calls, and no temp file is left */
    assert_string_equal(versions_of(f, "default/m"), "1");
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->data)), 0);
}

static void test_bad_names(void **state)
{
    fixture *f = *state;
    char over[130];
    memset(over, 'n', 129);
    over[129] = '\0';
    /* names without a team, bad team parts, bad name parts */
    const char *bad[] = { "", over, "m", "../x", "..", "/m", "default/", "default/a/b",
                          "default/../x", "default/..", "default/.hidden", "Default/m",
                          "-team/m", "default/-x", NULL };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fxdb_model_rec m;
        int64_t v;
        f->err[0] = '\0';
        assert_int_equal(fxdb_store_create_model(f->st, bad[i], "", NULL, 0, 0, true, "w", 1,
                                                "", f->err, sizeof f->err),
                         FXS_INVALID_ARGUMENT);
        assert_true(f->err[0] != '\0');
        assert_int_equal(fxdb_store_add_version(f->st, bad[i], "w", 1, "", &v, f->err,
                                               sizeof f->err),
                         FXS_INVALID_ARGUMENT);
        assert_int_equal(fxdb_store_get_model(f->st, bad[i], &m, f->err, sizeof f->err),
                         FXS_INVALID_ARGUMENT);
        assert_int_equal(fxdb_store_delete_model(f->st, bad[i], f->err, sizeof f->err),
                         FXS_INVALID_ARGUMENT);
        assert_int_equal(fxdb_store_set_loaded(f->st, bad[i], true, f->err, sizeof f->err),
                         FXS_INVALID_ARGUMENT);
        assert_int_equal(read_rc(f, bad[i], 0), FXS_INVALID_ARGUMENT);
    }
    /* nothing reached the disk */
    assert_int_equal(count_entries(tu_pathf("%s/models", f->data)), 0);
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->data)), 0);
    assert_false(exists(tu_pathf("%s/x", f->dir)));
    assert_false(exists(tu_pathf("%s/data/x", f->dir)));
}

static void test_list_by_name(void **state)
{
    fixture *f = *state;
    fxdb_model_rec *recs = (fxdb_model_rec *)1;
    int n = -1;
    assert_int_equal(fxdb_store_list_models(f->st, NULL, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 0);
    free(recs);

    create(f, "default/beta", "b");
    create(f, "default/alpha", "a");
    create(f, "default/gamma", "g");
    add(f, "default/beta", "b2");
    assert_int_equal(fxdb_store_list_models(f->st, NULL, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(recs[0].name, "default/alpha");
    assert_string_equal(recs[1].name, "default/beta");
    assert_string_equal(recs[2].name, "default/gamma");
    assert_int_equal(recs[0].n_versions, 1);
    assert_int_equal(recs[1].n_versions, 2);
    assert_int_equal(recs[1].versions[1].version, 2);
    assert_string_equal(recs[1].versions[1].source, "job 1");
    for (int i = 0; i < n; i++)
        fxdb_model_rec_free(&recs[i]);
    free(recs);
}

static void test_versions_ascending(void **state)
{
    fixture *f = *state;
    create(f, "default/m", "one");
    assert_int_equal(add(f, "default/m", "two"), 2);
    assert_int_equal(add(f, "default/m", "three"), 3);
    assert_string_equal(versions_of(f, "default/m"), "1,2,3");
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", &m, f->err, sizeof f->err), 0);
    assert_string_equal(m.versions[0].sha256,
                        "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"); /* "one" */
    fxdb_model_rec_free(&m);
    assert_weights(f, "default/m", 0, "three");
    assert_weights(f, "default/m", 1, "one");
    assert_weights(f, "default/m", 2, "two");
    assert_weights(f, "default/m", 3, "three");
    assert_int_equal(read_rc(f, "default/m", 4), FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "no version 4"));
    /* a NULL version pointer is allowed */
    assert_int_equal(fxdb_store_add_version(f->st, "default/m", "four", 4, "x", NULL, f->err,
                                           sizeof f->err),
                     0);
    assert_weights(f, "default/m", 0, "four");
}

static void test_already_exists(void **state)
{
    fixture *f = *state;
    create(f, "default/m", "first");
    assert_int_equal(fxdb_store_create_model(f->st, "default/m", "other", NULL, 0, 1, false,
                                             "second",
                                            6, "", f->err, sizeof f->err),
                     FXS_ALREADY_EXISTS);
    assert_non_null(strstr(f->err, "\"default/m\""));
    assert_non_null(strstr(f->err, "already exists"));
    /* the first model is untouched, the refused weights left nothing behind */
    assert_string_equal(versions_of(f, "default/m"), "1");
    assert_weights(f, "default/m", 0, "first");
    assert_int_equal(count_entries(tu_pathf("%s/models/default/m", f->data)), 1);
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->data)), 0);
}

static void test_not_found(void **state)
{
    fixture *f = *state;
    fxdb_model_rec m;
    int64_t v = 0;
    create(f, "default/present", "p");
    assert_int_equal(fxdb_store_get_model(f->st, "default/absent", &m, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "\"default/absent\""));
    assert_int_equal(fxdb_store_add_version(f->st, "default/absent", "w", 1, "", &v, f->err,
                                           sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/absent", f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxdb_store_set_loaded(f->st, "default/absent", true, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(read_rc(f, "default/absent", 0), FXS_NOT_FOUND);
    assert_int_equal(read_rc(f, "default/absent", 1), FXS_NOT_FOUND);
    /* the failed add_version left no file and no directory */
    assert_false(exists(tu_pathf("%s/models/default/absent", f->data)));
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->data)), 0);
    assert_string_equal(versions_of(f, "default/present"), "1");
}

static void test_set_loaded(void **state)
{
    fixture *f = *state;
    create(f, "default/m", "w");
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_set_loaded(f->st, "default/m", false, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", &m, f->err, sizeof f->err), 0);
    assert_false(m.loaded);
    fxdb_model_rec_free(&m);
    /* unchanged value: still found */
    assert_int_equal(fxdb_store_set_loaded(f->st, "default/m", false, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_store_set_loaded(f->st, "default/m", true, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", &m, f->err, sizeof f->err), 0);
    assert_true(m.loaded);
    fxdb_model_rec_free(&m);
}

static void test_reopen_keeps_everything(void **state)
{
    fixture *f = *state;
    assert_int_equal(fxdb_store_create_model(f->st, "default/keep", "kept", "\x08\x02", 2,
                                             123456789,
                                            true, "abc", 3, "import", f->err, sizeof f->err),
                     0);
    add(f, "default/keep", "v2 bytes");
    create(f, "default/other", "o");
    assert_int_equal(fxdb_store_set_loaded(f->st, "default/keep", false, f->err, sizeof f->err), 0);
    fxdb_model_rec before;
    assert_int_equal(fxdb_store_get_model(f->st, "default/keep", &before, f->err, sizeof f->err),
                     0);
    reopen(f);
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/keep", &m, f->err, sizeof f->err), 0);
    assert_string_equal(m.description, "kept");
    assert_int_equal(m.spec_len, 2);
    assert_memory_equal(m.spec, "\x08\x02", 2);
    assert_int_equal(m.seed, 123456789);
    assert_false(m.loaded);
    assert_int_equal(m.created_ms, before.created_ms);
    assert_int_equal(m.n_versions, 2);
    assert_string_equal(m.versions[0].source, "import");
    assert_string_equal(m.versions[0].sha256, SHA_ABC);
    assert_int_equal(m.versions[1].created_ms, before.versions[1].created_ms);
    assert_int_equal(m.versions[1].weights_bytes, 8);
    fxdb_model_rec_free(&m);
    fxdb_model_rec_free(&before);
    assert_weights(f, "default/keep", 0, "v2 bytes");
    assert_weights(f, "default/keep", 1, "abc");
    assert_weights(f, "default/other", 0, "o");
    /* numbering continues after the reopen */
    assert_int_equal(add(f, "default/keep", "v3"), 3);
}

static void test_delete_removes_files(void **state)
{
    fixture *f = *state;
    create(f, "default/gone", "g1");
    add(f, "default/gone", "g2");
    create(f, "default/stays", "s");
    const char *mdir = tu_pathf("%s/models/default/gone", f->data);
    assert_int_equal(count_entries(mdir), 2);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM versions"), 3);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/gone", f->err, sizeof f->err), 0);
    assert_false(exists(tu_pathf("%s/models/default/gone", f->data)));
    /* the version rows went with the model (foreign keys are on) */
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM versions"), 1);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM models"), 1);
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/gone", &m, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/gone", f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_weights(f, "default/stays", 0, "s");
    /* the name is free again and numbering starts over */
    create(f, "default/gone", "new");
    assert_string_equal(versions_of(f, "default/gone"), "1");
    assert_weights(f, "default/gone", 0, "new");
    reopen(f);
    assert_weights(f, "default/gone", 0, "new");
    assert_string_equal(versions_of(f, "default/gone"), "1");
}

static void test_write_file_atomic(void **state)
{
    fixture *f = *state;
    const char *p = tu_pathf("%s/plain/file.bin", f->dir);
    assert_int_equal(mkdir(tu_pathf("%s/plain", f->dir), 0755), 0);
    assert_int_equal(fxu_write_file_atomic(p, "hello", 5, f->err, sizeof f->err), 0);
    assert_int_equal(fxu_write_file_atomic(p, "bye", 3, f->err, sizeof f->err), 0);
    /* only the file itself: no temporary left next to it */
    assert_int_equal(count_entries(tu_pathf("%s/plain", f->dir)), 1);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(fxu_read_file(p, &buf, &len, f->err, sizeof f->err), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "bye", 3);
    free(buf);

    assert_int_equal(fxu_write_file_atomic(p, NULL, 0, f->err, sizeof f->err), 0);
    assert_int_equal(fxu_read_file(p, &buf, &len, f->err, sizeof f->err), 0);
    assert_int_equal(len, 0);
    free(buf);

    /* a directory that does not exist: the message names it */
    const char *bad = tu_pathf("%s/nodir/file.bin", f->dir);
    assert_int_equal(fxu_write_file_atomic(bad, "x", 1, f->err, sizeof f->err), FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "nodir"));
    assert_int_equal(fxu_write_file_atomic(tu_pathf("%s/plain/", f->dir), "x", 1, f->err,
                                           sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxu_write_file_atomic(NULL, "x", 1, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxu_write_file_atomic(p, NULL, 1, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(count_entries(tu_pathf("%s/plain", f->dir)), 1);

    assert_int_equal(fxu_read_file(bad, &buf, &len, f->err, sizeof f->err), FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "nodir/file.bin"));
    assert_int_equal(fxu_read_file(tu_pathf("%s/plain", f->dir), &buf, &len, f->err,
                                   sizeof f->err),
                     FXS_INTERNAL); /* a directory is not a regular file */

    /* the store's own writes leave no temporary either */
    create(f, "default/m", "w");
    add(f, "default/m", "w2");
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->data)), 0);
    assert_int_equal(count_entries(tu_pathf("%s/models/default/m", f->data)), 2);
}

static void test_crash_recovery(void **state)
{
    fixture *f = *state;
    create(f, "default/a", "a-one");
    add(f, "default/a", "a-two");
    create(f, "default/b", "b-one");
    fxdb_store_close(f->st);
    f->st = NULL;
    /* what a crash can leave: temporaries, weights written but never
     * committed (v3 of a; a model whose row never made it) */
    const char *junk_names[] = {
        "tmp/.weights.tmp.Ab12Cd",    "tmp/anything",
        ".config.tmp.Zz99Yy",         "models/default/a/.v3.safetensors.tmp.q1w2e3",
        "models/default/a/v3.safetensors",    "models/default/a/v007.safetensors",
    };
    char junk[6][256];
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
        snprintf(junk[i], sizeof junk[i], "%s/%s", f->data, junk_names[i]);
        put_file(junk[i], "junk", 4);
    }
    assert_int_equal(mkdir(tu_pathf("%s/models/default/ghost", f->data), 0755), 0);
    put_file(tu_pathf("%s/models/default/ghost/v1.safetensors", f->data), "boo", 3);
    /* files the store did not write are left alone */
    put_file(tu_pathf("%s/models/default/a/NOTES", f->data), "mine", 4);
    put_file(tu_pathf("%s/keep.txt", f->data), "mine", 4);

    reopen(f);
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++)
        if (exists(junk[i]))
            fail_msg("%s survived the reopen", junk[i]);
    assert_false(exists(tu_pathf("%s/models/default/ghost", f->data)));
    assert_true(exists(tu_pathf("%s/models/default/a/NOTES", f->data)));
    assert_true(exists(tu_pathf("%s/keep.txt", f->data)));
    assert_int_equal(count_entries(tu_pathf("%s/models/default/a", f->data)),
                     3); /* v1, v2, NOTES */
    assert_string_equal(versions_of(f, "default/a"), "1,2");
    assert_string_equal(versions_of(f, "default/b"), "1");
    assert_weights(f, "default/a", 0, "a-two");
    assert_weights(f, "default/a", 1, "a-one");
    assert_weights(f, "default/b", 0, "b-one");
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/ghost", &m, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    /* the slot of the orphan v3 is free for the next real version */
    assert_int_equal(add(f, "default/a", "a-three"), 3);
    assert_weights(f, "default/a", 3, "a-three");
}

static void test_unusable_versions(void **state)
{
    fixture *f = *state;
    create(f, "default/m", "version-1");
    add(f, "default/m", "version-2");
    add(f, "default/m", "version-3");
    create(f, "default/ok", "fine");
    fxdb_store_close(f->st);
    f->st = NULL;
    const char *v2 = tu_pathf("%s/models/default/m/v2.safetensors", f->data);
    const char *v3 = tu_pathf("%s/models/default/m/v3.safetensors", f->data);
    put_file(v2, "VERSION-2", 9); /* same size, other bytes */
    assert_int_equal(rename(v3, tu_pathf("%s/v3.saved", f->dir)), 0);

    reopen(f); /* opens despite the damage */
    assert_string_equal(versions_of(f, "default/m"), "1");
    assert_weights(f, "default/m", 0, "version-1"); /* latest usable */
    assert_int_equal(read_rc(f, "default/m", 2), FXS_DATA_LOSS);
    assert_non_null(strstr(f->err, "SHA-256"));
    assert_int_equal(read_rc(f, "default/m", 3), FXS_DATA_LOSS);
    assert_non_null(strstr(f->err, "v3.safetensors"));
    assert_weights(f, "default/ok", 0, "fine");
    /* numbers of unusable versions are not reused */
    assert_int_equal(add(f, "default/m", "version-4"), 4);
    assert_string_equal(versions_of(f, "default/m"), "1,4");
    assert_weights(f, "default/m", 0, "version-4");
    /* the damaged file was not deleted as an orphan */
    assert_true(exists(v2));

    /* files restored: usable again at the next open */
    fxdb_store_close(f->st);
    f->st = NULL;
    put_file(v2, "version-2", 9);
    assert_int_equal(rename(tu_pathf("%s/v3.saved", f->dir), v3), 0);
    reopen(f);
    assert_string_equal(versions_of(f, "default/m"), "1,2,3,4");
    assert_weights(f, "default/m", 2, "version-2");
    assert_weights(f, "default/m", 3, "version-3");
}

static void test_damage_while_open(void **state)
{
    fixture *f = *state;
    create(f, "default/m", "good-1");
    add(f, "default/m", "good-2");
    put_file(tu_pathf("%s/models/default/m/v2.safetensors", f->data), "longer now", 10);
    assert_int_equal(read_rc(f, "default/m", 0), FXS_DATA_LOSS);
    assert_non_null(strstr(f->err, "bytes"));
    /* from then on the version is left out, and latest falls back */
    assert_string_equal(versions_of(f, "default/m"), "1");
    assert_weights(f, "default/m", 0, "good-1");
    assert_int_equal(unlink(tu_pathf("%s/models/default/m/v1.safetensors", f->data)), 0);
    assert_int_equal(read_rc(f, "default/m", 1), FXS_DATA_LOSS);
    assert_string_equal(versions_of(f, "default/m"), "");
    assert_int_equal(read_rc(f, "default/m", 0), FXS_DATA_LOSS);
    assert_non_null(strstr(f->err, "no usable version"));
}

typedef struct {
    fxdb_store *st;
    int64_t got[8];
    int rc;
    char err[256];
} adder;

static void *add_thread(void *arg)
{
    adder *a = arg;
    for (int i = 0; i < 8 && !a->rc; i++) {
        char w[32];
        snprintf(w, sizeof w, "weights %d", i);
        a->rc = fxdb_store_add_version(a->st, "default/m", w, strlen(w), "thread", &a->got[i],
                                       a->err,
                                      sizeof a->err);
    }
    return NULL;
}

static void test_concurrent_add_version(void **state)
{
    fixture *f = *state;
    create(f, "default/m", "base");
    adder a[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].st = f->st;
        assert_int_equal(pthread_create(&t[i], NULL, add_thread, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    bool seen[34] = { false };
    for (int i = 0; i < 4; i++) {
        if (a[i].rc)
            fail_msg("thread %d: %d %s", i, a[i].rc, a[i].err);
        for (int j = 0; j < 8; j++) {
            assert_in_range(a[i].got[j], 2, 33);
            assert_false(seen[a[i].got[j]]);
            seen[a[i].got[j]] = true;
            if (j > 0) /* each thread's own versions increase */
                assert_true(a[i].got[j] > a[i].got[j - 1]);
        }
    }
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/m", &m, f->err, sizeof f->err), 0);
    assert_int_equal(m.n_versions, 33);
    for (int i = 0; i < 33; i++)
        assert_int_equal(m.versions[i].version, i + 1);
    fxdb_model_rec_free(&m);
    assert_int_equal(count_entries(tu_pathf("%s/models/default/m", f->data)), 33);
}

/* A failed fxdb_store_open: its code, after checking that *out is NULL
 * (it starts as a pointer that is not). */
static int refused_open(const char *dir, char *err, size_t errlen)
{
    fxdb_store *st = (fxdb_store *)&st;
    int rc = fxdb_store_open(dir, &st, err, errlen);
    assert_null(st);
    return rc;
}

static void test_lock_refuses_second_open(void **state)
{
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(refused_open(f->data, err, sizeof err), FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "in use by another fluxiond"));
    assert_non_null(strstr(err, f->data));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(err, pid));
    /* the refused open changed nothing; after a close the dir opens again */
    create(f, "default/m", "w");
    fxdb_store_close(f->st);
    f->st = NULL;
    reopen(f);
    assert_weights(f, "default/m", 0, "w");
}

static void test_open_errors(void **state)
{
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(refused_open(NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_true(err[0] != '\0');
    assert_int_equal(refused_open("", err, sizeof err), FXS_INVALID_ARGUMENT);
    /* a data dir that is a file, and one below a file */
    const char *file = tu_pathf("%s/afile", f->dir);
    put_file(file, "x", 1);
    err[0] = '\0';
    assert_int_equal(refused_open(file, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "afile"));
    err[0] = '\0';
    assert_int_equal(refused_open(tu_pathf("%s/afile/sub", f->dir), err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "afile"));
    /* no err buffer: no crash */
    assert_int_equal(refused_open(file, NULL, 0), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_store_open(f->data, NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
}

static void test_new_db_with_files_is_refused(void **state)
{
    fixture *f = *state;
    create(f, "default/precious", "weights");
    fxdb_store_close(f->st);
    f->st = NULL;
    const char *db = tu_pathf("%s/fluxion.db", f->data);
    assert_int_equal(unlink(db), 0);
    unlink(tu_pathf("%s-wal", db));
    unlink(tu_pathf("%s-shm", db));
    char err[512] = "";
    assert_int_equal(refused_open(f->data, err, sizeof err), FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "new database"));
    assert_true(exists(tu_pathf("%s/models/default/precious/v1.safetensors", f->data)));
}

static void test_schema(void **state)
{
    fixture *f = *state;
    create(f, "default/m", "w");
    fxdb_store_close(f->st);
    f->st = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(tu_pathf("%s/fluxion.db", f->data), &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 8); /* models; datasets + jobs; serving_config;
                                                    * versions.job_id; jobs' datasets; teams;
                                                    * teams' scheduling quota; aliases */
    assert_int_equal(sqlite3_step(s), SQLITE_DONE); /* one row */
    sqlite3_finalize(s);
    /* a schema from a newer fluxiond is refused, not downgraded */
    assert_int_equal(sqlite3_exec(db, "UPDATE schema_version SET version = 99", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    char err[512] = "";
    assert_int_equal(refused_open(f->data, err, sizeof err), FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "schema version 99"));
    assert_true(exists(tu_pathf("%s/models/default/m/v1.safetensors", f->data)));
}

static void sql(sqlite3 *db, const char *q)
{
    char *msg = NULL;
    if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", q, msg);
}

/* An SQLite failure after the weights are in place: FXS_INTERNAL with
 * SQLite's message, and the file is removed again. */
static void test_sqlite_failure_removes_file(void **state)
{
    fixture *f = *state;
    create(f, "default/a", "a1");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(tu_pathf("%s/fluxion.db", f->data), &db), SQLITE_OK);
    sql(db, "CREATE TRIGGER boom BEFORE INSERT ON versions "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    assert_int_equal(fxdb_store_create_model(f->st, "default/b", "", NULL, 0, 0, true, "b1", 2, "",
                                            f->err, sizeof f->err),
                     FXS_INTERNAL);
    assert_non_null(strstr(f->err, "injected failure"));
    int64_t v = 0;
    assert_int_equal(fxdb_store_add_version(f->st, "default/a", "a2", 2, "", &v, f->err,
                                            sizeof f->err),
                     FXS_INTERNAL);
    assert_non_null(strstr(f->err, "injected failure"));
    /* no trace: no model b (row or directory), no v2, no temporaries */
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/b", &m, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_false(exists(tu_pathf("%s/models/default/b", f->data)));
    assert_false(exists(tu_pathf("%s/models/default/a/v2.safetensors", f->data)));
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->data)), 0);
    assert_string_equal(versions_of(f, "default/a"), "1");

    sql(db, "DROP TRIGGER boom");
    /* another writer holding the database: the store waits, then says so */
    sql(db, "BEGIN IMMEDIATE");
    time_t t0 = time(NULL);
    assert_int_equal(fxdb_store_add_version(f->st, "default/a", "a2", 2, "", &v, f->err,
                                            sizeof f->err),
                     FXS_INTERNAL);
    assert_true(time(NULL) - t0 >= 2); /* the busy timeout, not an instant failure */
    assert_non_null(strstr(f->err, "locked"));
    sql(db, "ROLLBACK");
    sqlite3_close(db);
    assert_int_equal(add(f, "default/a", "a2"), 2);
    create(f, "default/b", "b1");
    assert_weights(f, "default/b", 0, "b1");
}


/* The tables of other modules through their typed functions: a failing
 * hook rolls its transaction back; rows are durable across a reopen. */
static int hook_fail(void *ctx, char *err, size_t errlen)
{
    int *calls = ctx;
    (*calls)++;
    snprintf(err, errlen, "asked to fail");
    return FXS_INVALID_ARGUMENT;
}

static int hook_count(void *ctx, char *err, size_t errlen)
{
    (*(int *)ctx)++;
    return 0;
}

static void test_datasets_table(void **state)
{
    fixture *f = *state;
    char err[256];
    int calls = 0, n = -1;
    void *info = NULL;
    size_t len = 0;
    assert_int_equal(fxdb_dataset_insert(f->st, "default/d", "\x01\x02", 2, 0, 5, hook_fail,
                                         &calls, err,
                                         sizeof err), FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "asked to fail");
    assert_int_equal(calls, 1);
    assert_int_equal(fxdb_dataset_get(f->st, "default/d", &info, &len, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(err, "no dataset named 'default/d'"));
    assert_int_equal(fxdb_dataset_insert(f->st, "default/d", "\x01\x02", 2, 0, 5, hook_count,
                                         &calls, err,
                                         sizeof err), 0);
    assert_int_equal(calls, 2);
    assert_int_equal(fxdb_dataset_insert(f->st, "default/d", "\x03", 1, 0, 6, NULL, NULL, err,
                                         sizeof err),
                     FXS_ALREADY_EXISTS);
    assert_int_equal(fxdb_dataset_insert(f->st, "default/c", "", 0, 0, 7, NULL, NULL, err,
                                         sizeof err), 0);
    assert_int_equal(fxdb_dataset_insert(f->st, "../x", "", 0, 0, 7, NULL, NULL, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    reopen(f);
    fxdb_row *rows = NULL;
    assert_int_equal(fxdb_dataset_list(f->st, NULL, &rows, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].name, "default/c"); /* by name */
    assert_int_equal(rows[0].len, 0);
    assert_string_equal(rows[1].name, "default/d");
    assert_int_equal(rows[1].len, 2);
    assert_memory_equal(rows[1].blob, "\x01\x02", 2);
    fxdb_rows_free(rows, n);
    /* a failing hook keeps the row; a delete hands back the record */
    assert_int_equal(fxdb_dataset_delete(f->st, "default/d", hook_fail, &calls, &info, &len, err,
                                         sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_dataset_get(f->st, "default/d", &info, &len, err, sizeof err), 0);
    assert_int_equal(len, 2);
    free(info);
    info = NULL;
    assert_int_equal(fxdb_dataset_delete(f->st, "default/d", hook_count, &calls, &info, &len, err,
                                         sizeof err), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(info, "\x01\x02", 2);
    free(info);
    assert_int_equal(fxdb_dataset_delete(f->st, "default/d", NULL, NULL, NULL, NULL, err,
                                         sizeof err),
                     FXS_NOT_FOUND);
    reopen(f);
    assert_int_equal(fxdb_dataset_list(f->st, NULL, &rows, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    fxdb_rows_free(rows, n);
}

/* A job row's columns (datasets: none). */
#define COLS(s, m) (&(fxdb_job_cols){ .state = (s), .model = (m) })

typedef struct {
    const char *text;
    int calls;
} pack_arg;

static int pack_text(void *ctx, int64_t id, int64_t version, void **blob, size_t *len, char *err,
                     size_t errlen)
{
    pack_arg *a = ctx;
    a->calls++;
    /* the id (and a result's version) are known inside the transaction */
    char s[128]; /* no tu_pathf: its buffers are not for threads */
    if (version)
        snprintf(s, sizeof s, "%s#%lld v%lld", a->text, (long long)id, (long long)version);
    else
        snprintf(s, sizeof s, "%s#%lld", a->text, (long long)id);
    *blob = strdup(s);
    *len = strlen(s);
    return *blob ? 0 : FXS_RESOURCE_EXHAUSTED;
}

static int pack_fail(void *ctx, int64_t id, int64_t version, void **blob, size_t *len, char *err,
                     size_t errlen)
{
    snprintf(err, errlen, "no pack");
    return FXS_INTERNAL;
}

static void test_jobs_table(void **state)
{
    fixture *f = *state;
    char err[256];
    int64_t id = 0;
    pack_arg a = { "first", 0 };
    /* a new job's model and datasets must exist as its row goes in */
    assert_int_equal(fxdb_job_save(f->st, &id, COLS("QUEUED", "default/m"), pack_text, &a, err,
                                   sizeof err), FXS_NOT_FOUND);
    assert_non_null(strstr(err, "model \"default/m\" not found"));
    create(f, "default/m", "w1");
    create(f, "default/other", "w1");
    fxdb_job_cols with_data = { .state = "QUEUED", .model = "default/m", .dataset = "default/d",
                                .validation_dataset = "" };
    assert_int_equal(fxdb_job_save(f->st, &id, &with_data, pack_text, &a, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(err, "no dataset named 'default/d'"));
    assert_int_equal(fxdb_dataset_insert(f->st, "default/d", "", 0, 0, 1, NULL, NULL, err,
                                         sizeof err), 0);
    with_data.validation_dataset = "default/v";
    assert_int_equal(fxdb_job_save(f->st, &id, &with_data, pack_text, &a, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(err, "no dataset named 'default/v'"));
    assert_int_equal(id, 0);
    assert_int_equal(db_int(f, "SELECT count(*) FROM jobs"), 0);
    assert_int_equal(fxdb_job_save(f->st, &id, COLS("QUEUED", "default/m"), pack_text, &a,
                                   err, sizeof err), 0);
    assert_int_equal(id, 1);
    int64_t id2 = 0;
    a.text = "second";
    assert_int_equal(fxdb_job_save(f->st, &id2, COLS("QUEUED", "default/other"), pack_text,
                                   &a, err, sizeof err), 0);
    assert_int_equal(id2, 2);
    a.text = "running";
    assert_int_equal(fxdb_job_save(f->st, &id, COLS("RUNNING", "default/m"), pack_text, &a,
                                   err, sizeof err), 0);
    assert_int_equal(id, 1);
    /* a failed pack leaves no row behind */
    int64_t id3 = 0;
    assert_int_equal(fxdb_job_save(f->st, &id3, COLS("QUEUED", "default/m"), pack_fail, NULL,
                                   err, sizeof err), FXS_INTERNAL);
    assert_string_equal(err, "no pack");
    int64_t missing = 99;
    assert_int_equal(fxdb_job_save(f->st, &missing, COLS("QUEUED", "default/m"), pack_text,
                                   &a, err, sizeof err), FXS_NOT_FOUND);
    reopen(f);
    fxdb_row *rows;
    int n;
    assert_int_equal(fxdb_job_list(f->st, 0, NULL, "", "", &rows, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].id, 1);
    assert_int_equal(rows[0].len, strlen("running#1"));
    assert_memory_equal(rows[0].blob, "running#1", rows[0].len);
    assert_memory_equal(rows[1].blob, "second#2", rows[1].len);
    fxdb_rows_free(rows, n);
    assert_int_equal(fxdb_job_list(f->st, 0, NULL, "QUEUED", NULL, &rows, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].id, 2);
    fxdb_rows_free(rows, n);
    assert_int_equal(fxdb_job_list(f->st, 0, NULL, "", "default/m", &rows, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].id, 1);
    fxdb_rows_free(rows, n);
    assert_int_equal(fxdb_job_list(f->st, 2, NULL, "", "", &rows, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    fxdb_rows_free(rows, n);
    assert_int_equal(fxdb_job_list(f->st, 7, NULL, "", "", &rows, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    fxdb_rows_free(rows, n);
}

/* A job's result: the version (with its job id) and the job's row in one
 * transaction. A failure in either leaves neither; a version whose source
 * text says "job N" is not job N's. */
static void test_job_finish(void **state)
{
    fixture *f = *state;
    char err[256];
    create(f, "default/m", "w1");
    assert_int_equal(add(f, "default/m", "imported"), 2); /* source "job 1", from a client */
    int64_t id = 0, v = -1;
    pack_arg a = { "queued", 0 };
    assert_int_equal(fxdb_job_save(f->st, &id, COLS("RUNNING", "default/m"), pack_text, &a,
                                   err, sizeof err), 0);
    assert_int_equal(id, 1);
    assert_int_equal(fxdb_job_version(f->st, 1, &v, err, sizeof err), 0);
    assert_int_equal(v, 0); /* the source text links nothing */
    /* the record cannot be packed: no version either */
    assert_int_equal(fxdb_job_finish(f->st, 1, COLS("SUCCEEDED", "default/m"), "w3", 2,
                                     "job 1", pack_fail, NULL, &v, err, sizeof err),
                     FXS_INTERNAL);
    assert_string_equal(versions_of(f, "default/m"), "1,2");
    assert_false(exists(tu_pathf("%s/models/default/m/v3.safetensors", f->data)));
    /* a job without a row: no version */
    assert_int_equal(fxdb_job_finish(f->st, 9, COLS("SUCCEEDED", "default/m"), "w3", 2,
                                     "job 9", pack_text, &a, &v, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_string_equal(versions_of(f, "default/m"), "1,2");
    assert_int_equal(count_entries(tu_pathf("%s/tmp", f->data)), 0);
    /* both, together */
    a.text = "done";
    assert_int_equal(fxdb_job_finish(f->st, 1, COLS("SUCCEEDED", "default/m"), "w3", 2,
                                     "job 1", pack_text, &a, &v, err, sizeof err), 0);
    assert_int_equal(v, 3);
    reopen(f);
    assert_weights(f, "default/m", 3, "w3");
    assert_int_equal(fxdb_job_version(f->st, 1, &v, err, sizeof err), 0);
    assert_int_equal(v, 3);
    assert_int_equal(db_int(f, "SELECT job_id FROM versions WHERE version = 3"), 1);
    assert_int_equal(db_int(f, "SELECT count(*) FROM versions WHERE job_id IS NULL"), 2);
    fxdb_row *rows;
    int n;
    assert_int_equal(fxdb_job_list(f->st, 1, NULL, "SUCCEEDED", "default/m", &rows, &n, err,
                                   sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].len, strlen("done#1 v3"));
    assert_memory_equal(rows[0].blob, "done#1 v3", rows[0].len);
    fxdb_rows_free(rows, n);
}

/* Jobs finishing, clients importing versions (with sources that look like
 * job links) and deletes of the model, all at once: every job gets exactly
 * its own version, imports never become a job's result, and the model
 * cannot go while a job runs. Run under ASan. */
#define RACE_ROUNDS 6

typedef struct {
    fxdb_store *st;
    int kind;          /* 0: a job finishing each round; 1: imports; 2: deletes */
    int n;             /* thread number */
    int64_t jobs[RACE_ROUNDS], versions[RACE_ROUNDS];
    int rc, refused;
    char err[256];
} racer;

static void *race_thread(void *arg)
{
    racer *r = arg;
    pack_arg a = { "job", 0 };
    for (int k = 0; k < RACE_ROUNDS && !r->rc; k++) {
        char w[32];
        snprintf(w, sizeof w, "w-%d-%d-%d", r->kind, r->n, k);
        if (r->kind == 0) {
            int64_t id = 0;
            r->rc = fxdb_job_save(r->st, &id, COLS("RUNNING", "default/m"), pack_text, &a, r->err,
                                  sizeof r->err);
            char src[32];
            snprintf(src, sizeof src, "job %lld", (long long)id);
            if (!r->rc)
                r->rc = fxdb_job_finish(r->st, id, COLS("SUCCEEDED", "default/m"), w, strlen(w),
                                        src,
                                        pack_text, &a, &r->versions[k], r->err, sizeof r->err);
            r->jobs[k] = id;
        } else if (r->kind == 1) {
            char src[32];
            snprintf(src, sizeof src, "job %d", k + 1);
            r->rc = fxdb_store_add_version(r->st, "default/m", w, strlen(w), src, &r->versions[k],
                                          r->err, sizeof r->err);
        } else {
            int rc = fxdb_store_delete_model(r->st, "default/m", r->err, sizeof r->err);
            if (rc == FXS_FAILED_PRECONDITION)
                r->refused++;
            else
                r->rc = rc ? rc : -1; /* deleted: wrong */
        }
    }
    return NULL;
}

static void test_concurrent_job_finish(void **state)
{
    fixture *f = *state;
    char err[256];
    create(f, "default/m", "base");
    int64_t blocker = 0; /* keeps the model in use throughout */
    pack_arg a = { "blocker", 0 };
    assert_int_equal(fxdb_job_save(f->st, &blocker, COLS("RUNNING", "default/m"), pack_text, &a,
                                   err,
                                   sizeof err), 0);
    racer r[7];
    pthread_t t[7];
    for (int i = 0; i < 7; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].st = f->st;
        r[i].kind = i < 4 ? 0 : i < 6 ? 1 : 2;
        r[i].n = i;
        assert_int_equal(pthread_create(&t[i], NULL, race_thread, &r[i]), 0);
    }
    for (int i = 0; i < 7; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 7; i++)
        if (r[i].rc)
            fail_msg("thread %d: %d %s", i, r[i].rc, r[i].err);
    assert_int_equal(r[6].refused, RACE_ROUNDS);
    assert_int_equal(db_int(f, "SELECT count(*) FROM versions"), 1 + 6 * RACE_ROUNDS);
    assert_int_equal(db_int(f, "SELECT count(DISTINCT job_id) FROM versions"), 4 * RACE_ROUNDS);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < RACE_ROUNDS; k++) {
            int64_t v = 0;
            assert_int_equal(fxdb_job_version(f->st, r[i].jobs[k], &v, err, sizeof err), 0);
            assert_int_equal(v, r[i].versions[k]);
            char w[32];
            snprintf(w, sizeof w, "w-0-%d-%d", i, k);
            assert_weights(f, "default/m", v, w);
        }
    int64_t v = -1;
    assert_int_equal(fxdb_job_version(f->st, blocker, &v, err, sizeof err), 0);
    assert_int_equal(v, 0);
}

static void test_servecfg_table(void **state)
{
    fixture *f = *state;
    char err[256];
    void *cfg = NULL;
    size_t len = 0;
    assert_int_equal(fxdb_servecfg_get(f->st, "default/m", &cfg, &len, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxdb_servecfg_delete(f->st, "default/m", err, sizeof err),
                     0); /* none is fine */
    assert_int_equal(fxdb_servecfg_put(f->st, "default/m", "ab", 2, err, sizeof err), 0);
    assert_int_equal(fxdb_servecfg_put(f->st, "default/m", "xyz", 3, err, sizeof err),
                     0); /* replaces */
    reopen(f);
    assert_int_equal(fxdb_servecfg_get(f->st, "default/m", &cfg, &len, err, sizeof err), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(cfg, "xyz", 3);
    free(cfg);
    assert_int_equal(fxdb_servecfg_delete(f->st, "default/m", err, sizeof err), 0);
    assert_int_equal(fxdb_servecfg_get(f->st, "default/m", &cfg, &len, err, sizeof err),
                     FXS_NOT_FOUND);
}

/* Defect 3 (store part): a model's serving settings go with the model, in
 * the same transaction: a model created again under the name starts from
 * the defaults. */
static void test_delete_forgets_serving_config(void **state)
{
    fixture *f = *state;
    char err[256];
    create(f, "default/m", "w1");
    assert_int_equal(fxdb_servecfg_put(f->st, "default/m", "cfg", 3, err, sizeof err), 0);
    assert_int_equal(fxdb_servecfg_put(f->st, "default/other", "cfg", 3, err, sizeof err), 0);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/m", err, sizeof err), 0);
    void *cfg = NULL;
    size_t len = 0;
    assert_int_equal(fxdb_servecfg_get(f->st, "default/m", &cfg, &len, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxdb_servecfg_get(f->st, "default/other", &cfg, &len, err, sizeof err), 0);
    free(cfg);
    /* a delete that fails keeps both */
    create(f, "default/m", "w1");
    assert_int_equal(fxdb_servecfg_put(f->st, "default/m", "cfg", 3, err, sizeof err), 0);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(tu_pathf("%s/fluxion.db", f->data), &db), SQLITE_OK);
    sql(db, "CREATE TRIGGER boom BEFORE DELETE ON models "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    sqlite3_close(db);
    assert_int_equal(fxdb_store_delete_model(f->st, "default/m", err, sizeof err), FXS_INTERNAL);
    assert_int_equal(fxdb_servecfg_get(f->st, "default/m", &cfg, &len, err, sizeof err), 0);
    free(cfg);
    assert_string_equal(versions_of(f, "default/m"), "1");
}

/* A data directory of a daemon from before serving_config had a migration
 * (schema version 2; that daemon created serving_config on first use). It
 * opens, keeps its rows, and reaches the current schema. */
static void test_servecfg_table_before_migration(void **state)
{
    fixture *f = *state;
    fxdb_store_close(f->st);
    f->st = NULL;
    const char *path = tu_pathf("%s/fluxion.db", f->data);
    char *paths[3] = { strdup(path), strdup(tu_pathf("%s-wal", path)),
                       strdup(tu_pathf("%s-shm", path)) };
    for (int i = 0; i < 3; i++) {
        unlink(paths[i]);
        free(paths[i]);
    }
    sqlite3 *db;
    assert_int_equal(sqlite3_open(tu_pathf("%s/fluxion.db", f->data), &db), SQLITE_OK);
    sql(db, "PRAGMA journal_mode=WAL");
    sql(db, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
            "INSERT INTO schema_version VALUES (2);"
            "CREATE TABLE models (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL "
            "UNIQUE, description TEXT NOT NULL, spec BLOB NOT NULL, seed INTEGER NOT NULL, "
            "loaded INTEGER NOT NULL CHECK (loaded IN (0, 1)), created_ms INTEGER NOT NULL);"
            "CREATE TABLE versions (model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE "
            "CASCADE, version INTEGER NOT NULL CHECK (version >= 1), created_ms INTEGER NOT "
            "NULL, source TEXT NOT NULL, weights_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, "
            "unusable TEXT, PRIMARY KEY (model_id, version));"
            "CREATE TABLE datasets (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL "
            "UNIQUE, info BLOB NOT NULL, created_ms INTEGER NOT NULL);"
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, "
            "model TEXT NOT NULL, record BLOB NOT NULL, created_ms INTEGER NOT NULL, "
            "updated_ms INTEGER NOT NULL);"
            "CREATE INDEX jobs_by_state ON jobs(state);"
            "CREATE TABLE IF NOT EXISTS serving_config (model TEXT PRIMARY KEY, config BLOB NOT "
            "NULL);"
            "INSERT INTO serving_config VALUES ('m', x'0102');");
    sqlite3_close(db);
    reopen(f);
    char err[256];
    void *cfg = NULL;
    size_t len = 0;
    assert_int_equal(fxdb_servecfg_get(f->st, "default/m", &cfg, &len, err, sizeof err), 0);
    assert_int_equal(len, 2);
    free(cfg);
    assert_int_equal(db_int(f, "SELECT version FROM schema_version"), 8);
    create(f, "default/m", "w1"); /* the new columns work */
    assert_int_equal(db_int(f, "SELECT count(*) FROM versions WHERE job_id IS NULL"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_name_ok),
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_create_get),
        T(test_create_empty_fields),
        T(test_bad_arguments),
        T(test_bad_names),
        T(test_list_by_name),
        T(test_versions_ascending),
        T(test_already_exists),
        T(test_not_found),
        T(test_set_loaded),
        T(test_reopen_keeps_everything),
        T(test_delete_removes_files),
        T(test_write_file_atomic),
        T(test_crash_recovery),
        T(test_unusable_versions),
        T(test_damage_while_open),
        T(test_concurrent_add_version),
        T(test_lock_refuses_second_open),
        T(test_open_errors),
        T(test_new_db_with_files_is_refused),
        T(test_schema),
        T(test_datasets_table),
        T(test_jobs_table),
        T(test_job_finish),
        T(test_concurrent_job_finish),
        T(test_servecfg_table),
        T(test_delete_forgets_serving_config),
        T(test_servecfg_table_before_migration),
        T(test_sqlite_failure_removes_file),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
