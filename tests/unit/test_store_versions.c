/*
 * test_store_versions.c - the store's life of a version (versions_tab.c,
 * docs/versions.md): production set at create and moved by added versions
 * (or not), alias names, set/delete/get, history and rollback (twice goes
 * back twice, a deleted target refused), pins, retention (last N + aliased
 * + pinned; files removed; numbers never reused), deleting a version and
 * its refusals, a job's gate deciding inside fxdb_job_finish_gated's
 * transaction (the metric stored, production moved or not), reads of
 * version 0 following production, and two threads promoting, rolling back
 * and deleting at once (the suite runs it under ASan); the canary's version
 * kept, and imported weights refused across a spec update (test_stress.py
 * found both); a model deleted and created again under its name: reads and
 * writes that name the model row read before are ABORTED, and a job's result
 * whose base version is gone is refused (test_stress.py, test_recreate_race.py).
 */
#define _GNU_SOURCE
#include <math.h>
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
#include <sqlite3.h>

#include "base/status.h"
#include "store/store.h"
#include "testutil.h"

typedef struct {
    char dir[64];
    char data[128];
    fxdb_store *st;
    char err[512];
} fixture;

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void open_store(fixture *f)
{
    if (fxdb_store_open(f->data, &f->st, f->err, sizeof f->err) != 0)
        fail_msg("open: %s", f->err);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/fxs-vers-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    open_store(f);
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

#define KEY "default/m"

/* A model with versions 1..n, version v's weights "w<v>". */
static void make(fixture *f, int n)
{
    assert_int_equal(fxdb_store_create_model(f->st, KEY, "d", "\x0a\x01x", 3, 1, true, "w1", 2,
                                             "init", f->err, sizeof f->err), 0);
    for (int v = 2; v <= n; v++) {
        char w[16];
        int64_t got;
        snprintf(w, sizeof w, "w%d", v);
        assert_int_equal(fxdb_store_add_version(f->st, KEY, w, strlen(w), "import", &got, f->err,
                                                sizeof f->err), 0);
        assert_int_equal(got, v);
    }
}

static fxdb_model_rec get(fixture *f)
{
    fxdb_model_rec m;
    if (fxdb_store_get_model(f->st, KEY, &m, f->err, sizeof f->err) != 0)
        fail_msg("get: %s", f->err);
    return m;
}

static int64_t production(fixture *f)
{
    fxdb_model_rec m = get(f);
    int64_t p = m.production;
    fxdb_model_rec_free(&m);
    return p;
}

/* The version numbers as "1,2,3". */
static const char *versions(fixture *f)
{
    static char buf[256];
    fxdb_model_rec m = get(f);
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < m.n_versions; i++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%lld", i ? "," : "",
                                 (long long)m.versions[i].version);
    fxdb_model_rec_free(&m);
    return buf;
}

/* What reading version 0 (the served one) gives. */
static void assert_reads(fixture *f, int64_t version, const char *want)
{
    void *buf;
    size_t len;
    assert_int_equal(fxdb_store_read_weights(f->st, KEY, version, &buf, &len, f->err,
                                             sizeof f->err), 0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    free(buf);
}

static void expect(fixture *f, int rc, int code, const char *contains)
{
    assert_int_equal(rc, code);
    if (contains && !strstr(f->err, contains))
        fail_msg("message '%s' should contain '%s'", f->err, contains);
}

static void test_production_follows(void **state)
{
    fixture *f = *state;
    make(f, 1);
    assert_int_equal(production(f), 1);
    int64_t v;
    assert_int_equal(fxdb_store_add_version_opt(f->st, KEY, "w2", 2, "import", false, &v, f->err,
                                                sizeof f->err), 0);
    assert_int_equal(production(f), 1); /* not promoted */
    assert_reads(f, 0, "w1");
    assert_int_equal(fxdb_store_add_version(f->st, KEY, "w3", 2, "import", &v, f->err,
                                            sizeof f->err), 0);
    assert_int_equal(production(f), 3);
    assert_reads(f, 0, "w3");
    assert_reads(f, 2, "w2");
}

static void test_alias_names(void **state)
{
    (void)state;
    char err[256];
    const char *good[] = { "production", "a", "canary-2", "x_y", "abcdefghijklmnopqrstuvwxyz012345" };
    const char *bad[] = { "", "A", "1a", "-a", "a b", "a/b", "abcdefghijklmnopqrstuvwxyz0123456",
                          "é" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_true(fxdb_alias_name_ok(good[i], err, sizeof err));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_false(fxdb_alias_name_ok(bad[i], err, sizeof err));
        assert_non_null(strstr(err, "alias"));
    }
    assert_false(fxdb_alias_name_ok(NULL, err, sizeof err));
}

static void test_aliases_history_rollback(void **state)
{
    fixture *f = *state;
    make(f, 3);
    int64_t prev, v, from, to;
    assert_int_equal(fxdb_alias_set(f->st, KEY, "canary", 2, "try", &prev, f->err,
                                    sizeof f->err), 0);
    assert_int_equal(prev, 0);
    assert_int_equal(fxdb_alias_get(f->st, KEY, "canary", &v, f->err, sizeof f->err), 0);
    assert_int_equal(v, 2);
    expect(f, fxdb_alias_get(f->st, KEY, "nope", &v, f->err, sizeof f->err), FXS_NOT_FOUND,
           "no alias 'nope'");
    expect(f, fxdb_alias_set(f->st, KEY, "canary", 9, NULL, NULL, f->err, sizeof f->err),
           FXS_NOT_FOUND, "no version 9");
    expect(f, fxdb_alias_set(f->st, KEY, "Bad", 1, NULL, NULL, f->err, sizeof f->err),
           FXS_INVALID_ARGUMENT, "alias");
    expect(f, fxdb_alias_delete(f->st, KEY, FXDB_PRODUCTION, f->err, sizeof f->err),
           FXS_FAILED_PRECONDITION, "promote another version");
    /* production 3 -> 1 -> 2, then back twice */
    assert_int_equal(fxdb_alias_set(f->st, KEY, FXDB_PRODUCTION, 1, "bad v3", &prev, f->err,
                                    sizeof f->err), 0);
    assert_int_equal(prev, 3);
    assert_int_equal(fxdb_alias_set(f->st, KEY, FXDB_PRODUCTION, 2, NULL, NULL, f->err,
                                    sizeof f->err), 0);
    assert_int_equal(fxdb_alias_rollback(f->st, KEY, FXDB_PRODUCTION, &from, &to, f->err,
                                         sizeof f->err), 0);
    assert_int_equal(from, 2);
    assert_int_equal(to, 1);
    assert_int_equal(fxdb_alias_rollback(f->st, KEY, FXDB_PRODUCTION, &from, &to, f->err,
                                         sizeof f->err), 0);
    assert_int_equal(to, 3);
    assert_reads(f, 0, "w3");
    fxdb_model_rec m = get(f);
    assert_int_equal(m.production, 3);
    assert_true(m.n_history >= 5);
    assert_string_equal(m.history[0].reason, "rollback");
    assert_int_equal(m.history[0].from_version, 1);
    assert_int_equal(m.history[0].to_version, 3);
    /* the two moves rolled back over: 1 -> 2, then 3 -> 1 */
    assert_int_equal(m.history[2].to_version, 2);
    assert_true(m.history[2].undone);
    assert_string_equal(m.history[3].reason, "bad v3");
    assert_true(m.history[3].undone);
    assert_false(m.history[0].undone);
    assert_string_equal(m.history[4].alias, "canary");
    assert_string_equal(m.history[5].reason, "new version"); /* 2 -> 3 by the add */
    assert_int_equal(m.n_aliases, 2);
    assert_string_equal(m.aliases[0].name, "canary");
    assert_string_equal(m.aliases[1].name, "production");
    fxdb_model_rec_free(&m);
    /* rolling back to a deleted version is refused, naming it */
    assert_int_equal(fxdb_version_delete(f->st, KEY, 2, f->err, sizeof f->err),
                     FXS_FAILED_PRECONDITION); /* canary */
    assert_int_equal(fxdb_alias_delete(f->st, KEY, "canary", f->err, sizeof f->err), 0);
    expect(f, fxdb_alias_delete(f->st, KEY, "canary", f->err, sizeof f->err), FXS_NOT_FOUND,
           "no alias");
    assert_int_equal(fxdb_version_delete(f->st, KEY, 2, f->err, sizeof f->err), 0);
    expect(f, fxdb_alias_rollback(f->st, KEY, FXDB_PRODUCTION, &from, &to, f->err,
                                  sizeof f->err), FXS_FAILED_PRECONDITION, "deleted");
    assert_int_equal(production(f), 3);
}

static int64_t history_rows(fixture *f)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open_v2(tu_pathf("%s/fluxion.db", f->data), &db,
                                     SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM alias_history", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/* A model promoted for ever keeps its last FXDB_HISTORY_KEPT moves, not a
 * row per move (the soak found the table growing); what is kept still rolls
 * back. */
static void test_history_bounded(void **state)
{
    fixture *f = *state;
    make(f, 3);
    for (int i = 0; i < FXDB_HISTORY_KEPT + 50; i++)
        assert_int_equal(fxdb_alias_set(f->st, KEY, FXDB_PRODUCTION, 1 + i % 3, "again", NULL,
                                        f->err, sizeof f->err), 0);
    assert_int_equal(history_rows(f), FXDB_HISTORY_KEPT);
    fxdb_model_rec m = get(f);
    assert_int_equal(m.n_history, FXDB_HISTORY_SHOWN);
    int64_t last = m.production;
    assert_int_equal(m.history[0].to_version, last);
    fxdb_model_rec_free(&m);
    int64_t from, to;
    assert_int_equal(fxdb_alias_rollback(f->st, KEY, FXDB_PRODUCTION, &from, &to, f->err,
                                         sizeof f->err), 0);
    assert_int_equal(from, last);
    assert_int_equal(to, 1 + (FXDB_HISTORY_KEPT + 48) % 3);
    assert_int_equal(history_rows(f), FXDB_HISTORY_KEPT);
}

static void test_delete_version(void **state)
{
    fixture *f = *state;
    make(f, 3);
    expect(f, fxdb_version_delete(f->st, KEY, 3, f->err, sizeof f->err), FXS_FAILED_PRECONDITION,
           "is served");
    assert_int_equal(fxdb_version_pin(f->st, KEY, 1, true, f->err, sizeof f->err), 0);
    expect(f, fxdb_version_delete(f->st, KEY, 1, f->err, sizeof f->err), FXS_FAILED_PRECONDITION,
           "pinned");
    expect(f, fxdb_version_pin(f->st, KEY, 7, true, f->err, sizeof f->err), FXS_NOT_FOUND,
           "no version 7");
    expect(f, fxdb_version_delete(f->st, KEY, 7, f->err, sizeof f->err), FXS_NOT_FOUND,
           "no version 7");
    expect(f, fxdb_version_delete(f->st, KEY, 0, f->err, sizeof f->err), FXS_INVALID_ARGUMENT,
           "not a version number");
    assert_int_equal(fxdb_version_delete(f->st, KEY, 2, f->err, sizeof f->err), 0);
    assert_string_equal(versions(f), "1,3");
    assert_false(exists(tu_pathf("%s/models/default/m/v2.safetensors", f->data)));
    int64_t v;
    assert_int_equal(fxdb_store_add_version(f->st, KEY, "w4", 2, "import", &v, f->err,
                                            sizeof f->err), 0);
    assert_int_equal(v, 4); /* 2's number is not given again */
    assert_int_equal(fxdb_version_delete(f->st, KEY, 3, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_store_add_version(f->st, KEY, "w5", 2, "import", &v, f->err,
                                            sizeof f->err), 0);
    assert_int_equal(v, 5);
    /* nor after a restart, when the deleted one was the highest */
    assert_int_equal(fxdb_store_add_version_opt(f->st, KEY, "w6", 2, "import", false, &v, f->err,
                                                sizeof f->err), 0);
    assert_int_equal(fxdb_version_delete(f->st, KEY, 6, f->err, sizeof f->err), 0);
    fxdb_store_close(f->st);
    open_store(f);
    assert_int_equal(fxdb_store_add_version(f->st, KEY, "w7", 2, "import", &v, f->err,
                                            sizeof f->err), 0);
    assert_int_equal(v, 7);
    fxdb_model_rec m = get(f);
    assert_true(m.versions[0].pinned);
    fxdb_model_rec_free(&m);
}

static void test_retention(void **state)
{
    fixture *f = *state;
    make(f, 6);
    assert_int_equal(fxdb_alias_set(f->st, KEY, "keep", 1, NULL, NULL, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_version_pin(f->st, KEY, 2, true, f->err, sizeof f->err), 0);
    int dropped;
    assert_int_equal(fxdb_model_set_retention(f->st, KEY, 2, &dropped, f->err, sizeof f->err), 0);
    assert_int_equal(dropped, 2); /* 3 and 4 */
    assert_string_equal(versions(f), "1,2,5,6");
    assert_false(exists(tu_pathf("%s/models/default/m/v3.safetensors", f->data)));
    assert_false(exists(tu_pathf("%s/models/default/m/v4.safetensors", f->data)));
    assert_true(exists(tu_pathf("%s/models/default/m/v5.safetensors", f->data)));
    int64_t v;
    assert_int_equal(fxdb_store_add_version(f->st, KEY, "w7", 2, "import", &v, f->err,
                                            sizeof f->err), 0);
    assert_string_equal(versions(f), "1,2,6,7"); /* applied as the version is added */
    assert_int_equal(fxdb_store_add_version_opt(f->st, KEY, "w8", 2, "import", false, &v,
                                                f->err, sizeof f->err), 0);
    assert_string_equal(versions(f), "1,2,7,8"); /* 7 is production */
    fxdb_model_rec m = get(f);
    assert_int_equal(m.keep_last, 2);
    fxdb_model_rec_free(&m);
    expect(f, fxdb_model_set_retention(f->st, KEY, 2000000, NULL, f->err, sizeof f->err),
           FXS_INVALID_ARGUMENT, "too large");
    assert_int_equal(fxdb_model_set_retention(f->st, KEY, 0, &dropped, f->err, sizeof f->err), 0);
    assert_int_equal(dropped, 0);
}

/* The gate: records what it was called with, decides as told. */
typedef struct {
    bool promote;
    int64_t production;
    bool cur_has;
    double cur;
    char cur_name[32];
} gate_ctx;

static int decide(void *ctx, int64_t production, const char *cur_name, bool cur_has, double cur,
                  bool *promote, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    gate_ctx *g = ctx;
    g->production = production;
    g->cur_has = cur_has;
    g->cur = cur;
    snprintf(g->cur_name, sizeof g->cur_name, "%s", cur_name);
    *promote = g->promote;
    return 0;
}

static int pack(void *ctx, int64_t id, int64_t version, void **blob, size_t *len, char *err,
                size_t errlen)
{
    (void)ctx;
    (void)id;
    (void)version;
    (void)err;
    (void)errlen;
    *blob = strdup("x");
    *len = 1;
    return 0;
}

static int64_t finish_job(fixture *f, gate_ctx *g, double metric)
{
    fxdb_job_cols cols = { .state = "RUNNING", .model = KEY };
    int64_t id = 0, v = 0;
    assert_int_equal(fxdb_job_save(f->st, &id, &cols, pack, NULL, f->err, sizeof f->err), 0);
    cols.state = "SUCCEEDED";
    fxdb_gate gate = { .metric_name = "val_loss", .metric = metric, .decide = decide, .ctx = g };
    assert_int_equal(fxdb_job_finish_gated(f->st, id, &cols, "wj", 2, "job", &gate, pack, NULL,
                                           &v, f->err, sizeof f->err), 0);
    return v;
}

static void test_job_gate(void **state)
{
    fixture *f = *state;
    make(f, 1);
    gate_ctx g = { .promote = true };
    int64_t v2 = finish_job(f, &g, 0.5);
    assert_int_equal(g.production, 1);
    assert_false(g.cur_has); /* version 1 has no metric */
    assert_int_equal(production(f), v2);
    g.promote = false;
    int64_t v3 = finish_job(f, &g, 0.7);
    assert_int_equal(g.production, v2);
    assert_true(g.cur_has);
    assert_true(g.cur == 0.5);
    assert_string_equal(g.cur_name, "val_loss");
    assert_int_equal(production(f), v2); /* stored, not served */
    int64_t v4 = finish_job(f, &g, NAN);
    fxdb_model_rec m = get(f);
    assert_int_equal(m.n_versions, 4);
    assert_int_equal(m.versions[2].version, v3);
    assert_true(m.versions[2].has_metric);
    assert_true(m.versions[2].metric == 0.7);
    assert_int_equal(m.versions[2].job_id, 2);
    assert_int_equal(m.versions[3].version, v4);
    assert_false(m.versions[3].has_metric); /* NaN: none */
    fxdb_model_rec_free(&m);
    /* a running job whose base version is not known keeps retention and
     * delete-version off for every version */
    fxdb_job_cols cols = { .state = "RUNNING", .model = KEY };
    int64_t id = 0;
    assert_int_equal(fxdb_job_save(f->st, &id, &cols, pack, NULL, f->err, sizeof f->err), 0);
    expect(f, fxdb_version_delete(f->st, KEY, v4, f->err, sizeof f->err),
           FXS_FAILED_PRECONDITION, "training job 4");
    int dropped;
    assert_int_equal(fxdb_model_set_retention(f->st, KEY, 1, &dropped, f->err, sizeof f->err), 0);
    assert_int_equal(dropped, 0);
    /* known: only the version it trains from is kept for it */
    cols.base_version = v3;
    assert_int_equal(fxdb_job_save(f->st, &id, &cols, pack, NULL, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_model_set_retention(f->st, KEY, 1, &dropped, f->err, sizeof f->err), 0);
    assert_int_equal(dropped, 1); /* 1; 2 is production, 3 the job's, 4 the last */
    expect(f, fxdb_version_delete(f->st, KEY, v3, f->err, sizeof f->err),
           FXS_FAILED_PRECONDITION, "version 3 of model 'default/m' is used by queued or "
           "running training job 4");
    assert_int_equal(fxdb_version_delete(f->st, KEY, v4, f->err, sizeof f->err), 0);
    cols.state = "CANCELLED";
    assert_int_equal(fxdb_job_save(f->st, &id, &cols, pack, NULL, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_version_delete(f->st, KEY, v3, f->err, sizeof f->err), 0);
}

/* Two threads moving production and deleting versions at once. */
typedef struct {
    fixture *f;
    int which;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    char err[512];
    int64_t from, to;
    for (int i = 0; i < 200; i++) {
        switch (r->which) {
        case 0:
            fxdb_alias_set(r->f->st, KEY, FXDB_PRODUCTION, 1 + i % 4, NULL, NULL, err, sizeof err);
            break;
        case 1:
            fxdb_alias_rollback(r->f->st, KEY, FXDB_PRODUCTION, &from, &to, err, sizeof err);
            break;
        case 2:
            fxdb_version_delete(r->f->st, KEY, 5 + i % 4, err, sizeof err);
            break;
        default: {
            void *buf;
            size_t len;
            if (fxdb_store_read_weights(r->f->st, KEY, 5 + i % 4, &buf, &len, err, sizeof err) ==
                0)
                free(buf);
        }
        }
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    fixture *f = *state;
    make(f, 8);
    assert_int_equal(fxdb_alias_set(f->st, KEY, FXDB_PRODUCTION, 1, NULL, NULL, f->err,
                                    sizeof f->err), 0);
    pthread_t t[4];
    racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (racer){ f, i };
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    int64_t p = production(f);
    assert_true(p >= 1 && p <= 8);
    char want[8];
    snprintf(want, sizeof want, "w%lld", (long long)p);
    assert_reads(f, 0, want);
    /* the deleted versions' files are gone, the rest readable: no half state */
    fxdb_model_rec m = get(f);
    for (int v = 1; v <= 8; v++) {
        bool row = false;
        for (int i = 0; i < m.n_versions; i++)
            row |= m.versions[i].version == v;
        assert_int_equal(row, exists(tu_pathf("%s/models/default/m/v%d.safetensors", f->data, v)));
    }
    fxdb_model_rec_free(&m);
    fxdb_store_close(f->st);
    open_store(f); /* nothing unusable after a reopen */
    assert_int_equal(production(f), p);
}

/* The canary version of these tests' serving records, "canary=<N>" (the
 * store never reads a record; serving's reader parses the packed
 * BatchingConfig). */
static int64_t canary_of_record(const void *config, size_t len)
{
    char buf[32];
    long long v;
    if (len == 0 || len >= sizeof buf)
        return 0;
    memcpy(buf, config, len);
    buf[len] = '\0';
    return sscanf(buf, "canary=%lld", &v) == 1 ? v : 0;
}

/* Found by test_stress.py: delete_version and retention removed the
 * canary's version, leaving a canary that named nothing. */
static void test_canary_version_kept(void **state)
{
    fixture *f = *state;
    make(f, 4); /* production 4 */
    fxdb_store_set_canary_fn(f->st, canary_of_record);
    assert_int_equal(fxdb_servecfg_put(f->st, KEY, "canary=2", 8, f->err, sizeof f->err), 0);
    expect(f, fxdb_version_delete(f->st, KEY, 2, f->err, sizeof f->err), FXS_FAILED_PRECONDITION,
           "is the canary");
    int dropped = 0;
    assert_int_equal(fxdb_model_set_retention(f->st, KEY, 1, &dropped, f->err, sizeof f->err), 0);
    assert_int_equal(dropped, 2);
    assert_string_equal(versions(f), "2,4");
    /* a canary set to a version deleted meanwhile: refused, nothing stored */
    expect(f, fxdb_servecfg_put(f->st, KEY, "canary=3", 8, f->err, sizeof f->err), FXS_NOT_FOUND,
           "no version 3");
    void *cfg;
    size_t len;
    assert_int_equal(fxdb_servecfg_get(f->st, KEY, &cfg, &len, f->err, sizeof f->err), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(cfg, "canary=2", 8);
    free(cfg);
    /* turned off, its version can go */
    assert_int_equal(fxdb_servecfg_put(f->st, KEY, "canary=0", 8, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_version_delete(f->st, KEY, 2, f->err, sizeof f->err), 0);
    assert_string_equal(versions(f), "4");
}

/* Found by test_stress.py: weights checked against revision 1 were stored
 * as a version of revision 2 when UpdateModelSpec ran in between (a
 * version that could never be served). */
static void test_import_checked_revision(void **state)
{
    fixture *f = *state;
    make(f, 1);
    int64_t rev = 0, v = 0;
    assert_int_equal(fxdb_store_update_spec(f->st, KEY, 0, "\x0a\x01y", 3, "w2", 2, "update",
                                            &rev, &v, f->err, sizeof f->err), 0);
    assert_int_equal(rev, 2);
    expect(f, fxdb_store_add_version_fit(f->st, KEY, "w3", 2, "import", true, 0, 1, &v, f->err,
                                         sizeof f->err), FXS_ABORTED, "spec changed");
    assert_string_equal(versions(f), "1,2");
    assert_int_equal(production(f), 2);
    assert_int_equal(fxdb_store_add_version_fit(f->st, KEY, "w3", 2, "import", true, 0, 2, &v,
                                                f->err, sizeof f->err), 0);
    assert_int_equal(v, 3);
    fxdb_model_rec m = get(f);
    assert_int_equal(m.versions[m.n_versions - 1].spec_revision, 2);
    fxdb_model_rec_free(&m);
}

/* Found by test_stress.py ("model 'm1' version N: tensor 'fc1.weight':
 * shape [8,4], expected [6,4]"): a model deleted and created again under
 * its name numbers its versions and spec revisions from 1 again, for other
 * weights of maybe another spec. A caller that read the model's record and
 * then reads a version's spec or weights, or stores weights checked
 * against its revision, names the model row it read (fxdb_model_rec.id):
 * the new model's are ABORTED, never mixed with the old record (ExportOnnx
 * and loads answered the message above; ImportWeights stored weights that
 * no spec of the new model fits). */
static void test_recreated_model(void **state)
{
    fixture *f = *state;
    make(f, 2);
    fxdb_model_rec m = get(f);
    int64_t old = m.id, rev = 0, v = 0;
    assert_true(old > 0);
    assert_int_equal(m.spec_revision, 1);
    fxdb_model_rec_free(&m);
    assert_int_equal(fxdb_store_update_spec(f->st, KEY, old, "\x0a\x01y", 3, "w3", 2, "update",
                                            &rev, &v, f->err, sizeof f->err), 0);
    assert_int_equal(rev, 2);
    assert_int_equal(v, 3);
    /* created again, another spec: version 1 and revision 1 are other ones */
    assert_int_equal(fxdb_store_delete_model(f->st, KEY, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_store_create_model(f->st, KEY, "d", "\x0a\x01z", 3, 1, true, "n1", 2,
                                             "init", f->err, sizeof f->err), 0);
    void *buf = NULL, *spec = NULL;
    size_t len = 0;
    for (int64_t want = 0; want <= 3; want++) /* production, numbers it has and has not */
        expect(f, fxdb_store_read_weights_of(f->st, KEY, old, want, &buf, &len, f->err,
                                             sizeof f->err), FXS_ABORTED, "created again");
    expect(f, fxdb_store_read_spec(f->st, KEY, old, 1, &spec, &len, f->err, sizeof f->err),
           FXS_ABORTED, "model 'm' was deleted and created again");
    expect(f, fxdb_store_add_version_fit(f->st, KEY, "w1", 2, "import", true, old, 1, &v, f->err,
                                         sizeof f->err), FXS_ABORTED, "created again");
    expect(f, fxdb_store_update_spec(f->st, KEY, old, "\x0a\x01y", 3, "w3", 2, "update", &rev, &v,
                                     f->err, sizeof f->err), FXS_ABORTED, "created again");
    fxdb_job_cols cols = { .state = "QUEUED", .model = KEY, .model_id = old, .base_version = 1 };
    int64_t job = 0;
    expect(f, fxdb_job_save(f->st, &job, &cols, pack, NULL, f->err, sizeof f->err), FXS_ABORTED,
           "created again");
    assert_string_equal(versions(f), "1");
    /* the new model's own reads and writes */
    m = get(f);
    int64_t now = m.id;
    assert_int_equal(m.revisions, 1);
    fxdb_model_rec_free(&m);
    assert_true(now != old);
    assert_int_equal(fxdb_store_read_weights_of(f->st, KEY, now, 1, &buf, &len, f->err,
                                                sizeof f->err), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(buf, "n1", 2);
    free(buf);
    assert_int_equal(fxdb_store_read_spec(f->st, KEY, now, 1, &spec, &len, f->err,
                                          sizeof f->err), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(spec, "\x0a\x01z", 3);
    free(spec);
    assert_int_equal(fxdb_store_add_version_fit(f->st, KEY, "n2", 2, "import", true, now, 1, &v,
                                                f->err, sizeof f->err), 0);
    assert_int_equal(v, 2);
    cols.model_id = now;
    assert_int_equal(fxdb_job_save(f->st, &job, &cols, pack, NULL, f->err, sizeof f->err), 0);
    /* 0: whichever model has the name (the callers that read no record) */
    assert_int_equal(fxdb_store_read_weights_of(f->st, KEY, 0, 2, &buf, &len, f->err,
                                                sizeof f->err), 0);
    free(buf);
}

/* A job's result fits its base version's spec revision. The base stays
 * while the job is queued or running; were it gone all the same, the
 * result was stored under the latest version's revision (COALESCE), which
 * an UpdateModelSpec since may have made another shape: now refused,
 * nothing stored. */
static void test_job_result_base_gone(void **state)
{
    fixture *f = *state;
    make(f, 1);
    int64_t rev = 0, v = 0, id = 0;
    assert_int_equal(fxdb_store_update_spec(f->st, KEY, 0, "\x0a\x01y", 3, "w2", 2, "update",
                                            &rev, &v, f->err, sizeof f->err), 0);
    assert_int_equal(rev, 2);
    /* a job from version 1 (revision 1): its result is of revision 1 */
    fxdb_job_cols cols = { .state = "RUNNING", .model = KEY, .base_version = 1 };
    assert_int_equal(fxdb_job_save(f->st, &id, &cols, pack, NULL, f->err, sizeof f->err), 0);
    cols.state = "SUCCEEDED";
    assert_int_equal(fxdb_job_finish(f->st, id, &cols, "wj", 2, "job", pack, NULL, &v, f->err,
                                     sizeof f->err), 0);
    assert_int_equal(v, 3);
    fxdb_model_rec m = get(f);
    assert_int_equal(m.versions[2].spec_revision, 1);
    assert_int_equal(m.spec_revision, 1);
    fxdb_model_rec_free(&m);
    /* no job row goes in for a base version that is not there (deleted
     * since the job was validated) */
    id = 0;
    cols = (fxdb_job_cols){ .state = "QUEUED", .model = KEY, .base_version = 9 };
    expect(f, fxdb_job_save(f->st, &id, &cols, pack, NULL, f->err, sizeof f->err),
           FXS_NOT_FOUND, "model 'm' has no version 9 (deleted meanwhile)");
    /* a base version gone all the same (deleted while the job was
     * cancelled, then the row running again as a resume does it): the
     * result's spec is unknown, refused */
    cols.base_version = 1;
    cols.state = "CANCELLED";
    assert_int_equal(fxdb_job_save(f->st, &id, &cols, pack, NULL, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_version_delete(f->st, KEY, 1, f->err, sizeof f->err), 0);
    cols.state = "RUNNING";
    assert_int_equal(fxdb_job_save(f->st, &id, &cols, pack, NULL, f->err, sizeof f->err), 0);
    cols.state = "SUCCEEDED";
    expect(f, fxdb_job_finish(f->st, id, &cols, "wk", 2, "job", pack, NULL, &v, f->err,
                              sizeof f->err), FXS_FAILED_PRECONDITION,
           "version 1, which the job trained from, is gone");
    assert_string_equal(versions(f), "2,3");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_production_follows),
        cmocka_unit_test(test_alias_names),
        T(test_aliases_history_rollback),
        T(test_history_bounded),
        T(test_delete_version),
        T(test_retention),
        T(test_job_gate),
        T(test_concurrent),
        T(test_canary_version_kept),
        T(test_import_checked_revision),
        T(test_recreated_model),
        T(test_job_result_base_gone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
