/*
 * test_store_teams.c - the store's teams: keys "team/name", team filters,
 * teams and their deletion, quotas (models, weights, datasets), tokens,
 * certificate principals, settings, the two-level layout's recovery, and
 * the upgrade of a data directory from before teams (the 0.2.0 fixture),
 * crash-idempotent.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <libgen.h>
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

/* ----------------------------------------------------------- helpers */

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void put_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void sql(fixture *f, const char *q)
{
    sqlite3 *db;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(tu_pathf("%s/fluxion.db", f->data), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", q, msg);
    sqlite3_close(db);
}

static int64_t db_int(fixture *f, const char *query)
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

static void open_store(fixture *f)
{
    if (fxdb_store_open(f->data, &f->st, f->err, sizeof f->err) != 0)
        fail_msg("open: %s", f->err);
}

static void reopen(fixture *f)
{
    fxdb_store_close(f->st);
    f->st = NULL;
    open_store(f);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/fxs-teams-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    open_store(f);
    *state = f;
    return 0;
}

/* The 0.2.0 data directory, extracted to DIR/data, not opened yet. */
static int setup_fixture(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/fxs-teams-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char src[512];
    snprintf(src, sizeof src, "%s", __FILE__);
    const char *tarball = tu_pathf("%s/../fixtures/datadir-0.2.0.tar.gz", dirname(src));
    assert_true(exists(tarball));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "tar -xzf '%s' -C '%s' && mv '%s/fixdata' '%s/data'", tarball,
             f->dir, f->dir, f->dir);
    assert_int_equal(system(cmd), 0);
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
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

static int create_rc(fixture *f, const char *key, const char *weights)
{
    return fxdb_store_create_model(f->st, key, "d", "\x0a\x01x", 3, 1, true, weights,
                                   strlen(weights), "init", f->err, sizeof f->err);
}

static void create(fixture *f, const char *key, const char *weights)
{
    int rc = create_rc(f, key, weights);
    if (rc)
        fail_msg("create %s: %d %s", key, rc, f->err);
}

static void team(fixture *f, const char *name, const fxdb_quota *q)
{
    if (fxdb_team_create(f->st, name, "", q, f->err, sizeof f->err) != 0)
        fail_msg("team %s: %s", name, f->err);
}

static int add_dataset(fixture *f, const char *key, uint64_t bytes)
{
    return fxdb_dataset_insert(f->st, key, "\x01", 1, bytes, 1, NULL, NULL, f->err,
                               sizeof f->err);
}

static int pack_text(void *ctx, int64_t id, int64_t version, void **blob, size_t *len,
                     char *err, size_t errlen)
{
    *blob = strdup("job");
    *len = 3;
    return 0;
}

#define COLS(s, m, d) (&(fxdb_job_cols){ .state = (s), .model = (m), .dataset = (d) })

static int64_t save_job(fixture *f, int64_t id, const char *state, const char *model,
                        const char *dataset)
{
    int rc = fxdb_job_save(f->st, &id, COLS(state, model, dataset), pack_text, NULL, f->err,
                           sizeof f->err);
    if (rc)
        fail_msg("job_save: %d %s", rc, f->err);
    return id;
}

/* The keys of a team's models, "k1,k2" (team NULL: all). */
static const char *model_keys(fixture *f, const char *team)
{
    static char s[512];
    fxdb_model_rec *recs;
    int n;
    if (fxdb_store_list_models(f->st, team, &recs, &n, f->err, sizeof f->err) != 0)
        fail_msg("list_models: %s", f->err);
    s[0] = '\0';
    for (int i = 0; i < n; i++) {
        snprintf(s + strlen(s), sizeof s - strlen(s), "%s%s", i ? "," : "", recs[i].name);
        fxdb_model_rec_free(&recs[i]);
    }
    free(recs);
    return s;
}

static const char *dataset_keys(fixture *f, const char *team)
{
    static char s[512];
    fxdb_row *rows;
    int n;
    if (fxdb_dataset_list(f->st, team, &rows, &n, f->err, sizeof f->err) != 0)
        fail_msg("dataset_list: %s", f->err);
    s[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(s + strlen(s), sizeof s - strlen(s), "%s%s", i ? "," : "", rows[i].name);
    fxdb_rows_free(rows, n);
    return s;
}

static const char *job_ids(fixture *f, const char *team)
{
    static char s[256];
    fxdb_row *rows;
    int n;
    if (fxdb_job_list(f->st, 0, team, NULL, NULL, &rows, &n, f->err, sizeof f->err) != 0)
        fail_msg("job_list: %s", f->err);
    s[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(s + strlen(s), sizeof s - strlen(s), "%s%lld", i ? "," : "",
                 (long long)rows[i].id);
    fxdb_rows_free(rows, n);
    return s;
}

/* ------------------------------------------------------------- keys */

static void test_key_ok(void **state)
{
    char err[512];
    const char *good[] = { "default/mlp", "a/b", "team-1/x.y_z", "0/9" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (!fxdb_key_ok(good[i], err, sizeof err))
            fail_msg("%s refused: %s", good[i], err);
    struct {
        const char *key, *says;
    } bad[] = {
        { "", "empty" },
        { "mlp", "no team part" },
        { "/mlp", "team part" },
        { "Team/mlp", "team part" },
        { "-a/mlp", "team part" },
        { "a/", "name part" },
        { "a/.x", "name part" },
        { "a/b/c", "name part" },
        { "a/b c", "name part" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        if (fxdb_key_ok(bad[i].key, err, sizeof err))
            fail_msg("\"%s\" accepted", bad[i].key);
        if (!strstr(err, bad[i].says))
            fail_msg("\"%s\": \"%s\" does not say \"%s\"", bad[i].key, err, bad[i].says);
    }
    assert_false(fxdb_key_ok(NULL, err, sizeof err));
    assert_false(fxdb_key_ok("x", NULL, 0));
}

static void test_keys_and_layout(void **state)
{
    fixture *f = *state;
    /* the team must exist */
    assert_int_equal(create_rc(f, "nope/m", "w"), FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "team 'nope' not found"));
    assert_false(exists(tu_pathf("%s/models/nope", f->data)));
    assert_int_equal(add_dataset(f, "nope/d", 1), FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "team 'nope' not found"));
    assert_int_equal(create_rc(f, "mlp", "w"), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "no team part"));
    /* every table takes keys */
    void *blob;
    size_t blen;
    assert_int_equal(fxdb_servecfg_put(f->st, "mlp", "c", 1, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_servecfg_get(f->st, "mlp", &blob, &blen, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_servecfg_delete(f->st, "mlp", f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_dataset_get(f->st, "d", &blob, &blen, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(add_dataset(f, "d", 1), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "no team part"));

    team(f, "a", NULL);
    team(f, "b", NULL);
    create(f, "a/mlp", "a-weights");
    create(f, "b/mlp", "b-weights"); /* same name, other team: another model */
    assert_true(exists(tu_pathf("%s/models/a/mlp/v1.safetensors", f->data)));
    assert_true(exists(tu_pathf("%s/models/b/mlp/v1.safetensors", f->data)));
    void *buf;
    size_t len;
    assert_int_equal(fxdb_store_read_weights(f->st, "b/mlp", 0, &buf, &len, f->err,
                                             sizeof f->err), 0);
    assert_int_equal(len, 9);
    assert_memory_equal(buf, "b-weights", 9);
    free(buf);
    assert_int_equal(db_int(f, "SELECT count(*) FROM models WHERE team = 'a'"), 1);

    /* a delete removes the model's directory, not the team's */
    assert_int_equal(fxdb_store_delete_model(f->st, "a/mlp", f->err, sizeof f->err), 0);
    assert_false(exists(tu_pathf("%s/models/a/mlp", f->data)));
    assert_true(exists(tu_pathf("%s/models/a", f->data)));
    reopen(f);
    assert_string_equal(model_keys(f, NULL), "b/mlp");
}

static void test_team_filters(void **state)
{
    fixture *f = *state;
    team(f, "a", NULL);
    team(f, "b", NULL);
    create(f, "a/mlp", "1");
    create(f, "a/zeta", "1");
    create(f, "b/mlp", "1");
    create(f, "default/m", "1");
    assert_string_equal(model_keys(f, "a"), "a/mlp,a/zeta");
    assert_string_equal(model_keys(f, "b"), "b/mlp");
    assert_string_equal(model_keys(f, "c"), "");
    assert_string_equal(model_keys(f, ""), "a/mlp,a/zeta,b/mlp,default/m");
    assert_string_equal(model_keys(f, NULL), "a/mlp,a/zeta,b/mlp,default/m");

    assert_int_equal(add_dataset(f, "a/d", 1), 0);
    assert_int_equal(add_dataset(f, "b/d", 1), 0);
    assert_string_equal(dataset_keys(f, "a"), "a/d");
    assert_string_equal(dataset_keys(f, "b"), "b/d");
    assert_string_equal(dataset_keys(f, NULL), "a/d,b/d");

    int64_t j1 = save_job(f, 0, "QUEUED", "a/mlp", "a/d");
    int64_t j2 = save_job(f, 0, "QUEUED", "b/mlp", "b/d");
    save_job(f, j1, "RUNNING", "a/mlp", "a/d");
    char want[64];
    snprintf(want, sizeof want, "%lld", (long long)j1);
    assert_string_equal(job_ids(f, "a"), want);
    snprintf(want, sizeof want, "%lld", (long long)j2);
    assert_string_equal(job_ids(f, "b"), want);
    snprintf(want, sizeof want, "%lld,%lld", (long long)j1, (long long)j2);
    assert_string_equal(job_ids(f, NULL), want);
    assert_int_equal(db_int(f, "SELECT count(*) FROM jobs WHERE team = 'a'"), 1);
}

/* ------------------------------------------------------------- teams */

static void test_team_crud(void **state)
{
    fixture *f = *state;
    fxdb_team_rec t;
    assert_int_equal(fxdb_team_get(f->st, "default", &t, f->err, sizeof f->err), 0);
    assert_string_equal(t.name, "default");
    assert_true(t.created_ms > 0);
    fxdb_team_rec_free(&t);

    assert_int_equal(fxdb_team_create(f->st, "Bad", "", NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_team_create(f->st, "a/b", "", NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    fxdb_quota q = { .max_models = 3, .max_weight_bytes = 1000, .max_dataset_bytes = 2000 };
    assert_int_equal(fxdb_team_create(f->st, "ml", "ML team", &q, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_team_create(f->st, "ml", "", NULL, f->err, sizeof f->err),
                     FXS_ALREADY_EXISTS);
    assert_non_null(strstr(f->err, "team 'ml' already exists"));
    assert_int_equal(fxdb_team_get(f->st, "ml", &t, f->err, sizeof f->err), 0);
    assert_string_equal(t.display_name, "ML team");
    assert_int_equal(t.quota.max_models, 3);
    assert_int_equal(t.quota.max_weight_bytes, 1000);
    assert_int_equal(t.quota.max_dataset_bytes, 2000);
    fxdb_team_rec_free(&t);

    /* update: "" keeps the name, NULL keeps the quota */
    assert_int_equal(fxdb_team_update(f->st, "ml", "", NULL, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_team_update(f->st, "ml", "Machine learning", NULL, f->err,
                                      sizeof f->err), 0);
    fxdb_quota q2 = { .max_weight_bytes = 5 };
    assert_int_equal(fxdb_team_update(f->st, "ml", NULL, &q2, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_team_get(f->st, "ml", &t, f->err, sizeof f->err), 0);
    assert_string_equal(t.display_name, "Machine learning");
    assert_int_equal(t.quota.max_models, 0);
    assert_int_equal(t.quota.max_weight_bytes, 5);
    fxdb_team_rec_free(&t);
    assert_int_equal(fxdb_team_update(f->st, "nope", "x", NULL, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxdb_team_get(f->st, "nope", &t, f->err, sizeof f->err), FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "team 'nope' not found"));

    fxdb_team_rec *all;
    int n;
    assert_int_equal(fxdb_team_list(f->st, &all, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(all[0].name, "default");
    assert_string_equal(all[1].name, "ml");
    for (int i = 0; i < n; i++)
        fxdb_team_rec_free(&all[i]);
    free(all);

    assert_int_equal(fxdb_team_delete(f->st, "default", f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxdb_team_delete(f->st, "nope", f->err, sizeof f->err), FXS_NOT_FOUND);
    assert_int_equal(fxdb_team_delete(f->st, "ml", f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_team_get(f->st, "ml", &t, f->err, sizeof f->err), FXS_NOT_FOUND);
    /* the name is free again */
    assert_int_equal(fxdb_team_create(f->st, "ml", "", NULL, f->err, sizeof f->err), 0);
}

static void test_team_delete_refused(void **state)
{
    fixture *f = *state;
    team(f, "a", NULL);
    create(f, "a/m", "w");
    assert_int_equal(add_dataset(f, "a/d", 10), 0);
    int64_t job = save_job(f, 0, "QUEUED", "a/m", "a/d");
    fxdb_token_rec tok = { .team = "a", .name = "ci", .role = "member" };
    memset(tok.hash, 7, 32);
    assert_int_equal(fxdb_token_insert(f->st, &tok, NULL, f->err, sizeof f->err), 0);
    fxdb_cert_rec cert = { .subject = "CN=alice", .team = "a", .role = "viewer" };
    assert_int_equal(fxdb_cert_insert(f->st, &cert, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_servecfg_put(f->st, "a/m", "c", 1, f->err, sizeof f->err), 0);

    assert_int_equal(fxdb_team_delete(f->st, "a", f->err, sizeof f->err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(f->err, "team 'a' still owns 1 model, 1 dataset and 1 queued or "
                                   "running job"));
    /* the job finishes; the model and dataset go (the job no longer holds them) */
    save_job(f, job, "SUCCEEDED", "a/m", "a/d");
    assert_int_equal(fxdb_store_delete_model(f->st, "a/m", f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_team_delete(f->st, "a", f->err, sizeof f->err),
                     FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(f->err, "0 models, 1 dataset and 0 queued"));
    assert_int_equal(fxdb_dataset_delete(f->st, "a/d", NULL, NULL, NULL, NULL, f->err,
                                         sizeof f->err), 0);
    assert_true(exists(tu_pathf("%s/models/a", f->data)));
    assert_int_equal(fxdb_team_delete(f->st, "a", f->err, sizeof f->err), 0);
    /* its tokens, certificates, finished jobs' rows and directory went */
    assert_int_equal(db_int(f, "SELECT count(*) FROM tokens"), 0);
    assert_int_equal(db_int(f, "SELECT count(*) FROM cert_principals"), 0);
    assert_int_equal(db_int(f, "SELECT count(*) FROM jobs"), 0);
    assert_false(exists(tu_pathf("%s/models/a", f->data)));
    /* auth stays on */
    char *v;
    assert_int_equal(fxdb_setting_get(f->st, "auth", &v, f->err, sizeof f->err), 0);
    assert_string_equal(v, "on");
    free(v);
}

/* ------------------------------------------------------------ quotas */

static void test_quota_models(void **state)
{
    fixture *f = *state;
    fxdb_quota q = { .max_models = 2 };
    team(f, "a", &q);
    team(f, "b", NULL);
    create(f, "a/m1", "w");
    create(f, "a/m2", "w");
    assert_int_equal(create_rc(f, "a/m3", "w"), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'a' models quota: 2 models allowed, 2 exist"));
    assert_false(exists(tu_pathf("%s/models/a/m3", f->data)));
    create(f, "b/m3", "w"); /* other teams: no quota */
    /* the daemon's default applies where the team's value is 0 */
    fxdb_store_set_default_quota(f->st, &(fxdb_quota){ .max_models = 1 });
    assert_int_equal(create_rc(f, "b/m4", "w"), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'b' models quota: 1 model allowed, 1 exist"));
    fxdb_quota eff;
    assert_int_equal(fxdb_team_effective_quota(f->st, "a", &eff, f->err, sizeof f->err), 0);
    assert_int_equal(eff.max_models, 2); /* the team's own */
    assert_int_equal(fxdb_team_effective_quota(f->st, "b", &eff, f->err, sizeof f->err), 0);
    assert_int_equal(eff.max_models, 1);
    fxdb_store_set_default_quota(f->st, NULL);
    create(f, "b/m4", "w");
    /* deleting makes room */
    assert_int_equal(fxdb_store_delete_model(f->st, "a/m1", f->err, sizeof f->err), 0);
    create(f, "a/m3", "w");
    fxdb_usage u;
    assert_int_equal(fxdb_team_usage(f->st, "a", &u, f->err, sizeof f->err), 0);
    assert_int_equal(u.models, 2);
    assert_int_equal(u.weight_bytes, 2);
    assert_int_equal(fxdb_team_usage(f->st, "nope", &u, f->err, sizeof f->err), FXS_NOT_FOUND);
}

/* The scheduling fields: stored as given, replaced as a whole by an
 * update, 0s filled from the daemon's defaults (then weight 1 and a window
 * of a day), nonsense refused. */
static void test_quota_scheduling(void **state)
{
    fixture *f = *state;
    fxdb_quota q = { .max_models = 4, .weight = 2.5, .cpu_slots = 2, .gpu_slots = 1,
                     .borrow_cpu_slots = 3, .borrow_gpu_slots = 4,
                     .budget_device_seconds = 7200.5, .budget_window_seconds = 3600,
                     .max_running_jobs = 5, .gpu_memory_bytes = (12ULL << 30) + 1 };
    assert_int_equal(fxdb_team_create(f->st, "a", "", &q, f->err, sizeof f->err), 0);
    fxdb_team_rec t;
    assert_int_equal(fxdb_team_get(f->st, "a", &t, f->err, sizeof f->err), 0);
    assert_true(t.quota.weight == 2.5);
    assert_int_equal(t.quota.cpu_slots, 2);
    assert_int_equal(t.quota.gpu_slots, 1);
    assert_int_equal(t.quota.borrow_cpu_slots, 3);
    assert_int_equal(t.quota.borrow_gpu_slots, 4);
    assert_true(t.quota.budget_device_seconds == 7200.5);
    assert_int_equal(t.quota.budget_window_seconds, 3600);
    assert_int_equal(t.quota.max_running_jobs, 5);
    assert_true(t.quota.gpu_memory_bytes == (12ULL << 30) + 1);
    assert_int_equal(t.quota.max_models, 4);
    fxdb_team_rec_free(&t);

    /* the listing reads the same columns */
    fxdb_team_rec *all;
    int n;
    assert_int_equal(fxdb_team_list(f->st, &all, &n, f->err, sizeof f->err), 0);
    bool seen = false;
    for (int i = 0; i < n; i++) {
        if (strcmp(all[i].name, "a") == 0)
            seen = all[i].quota.borrow_gpu_slots == 4 && all[i].quota.weight == 2.5 &&
                   all[i].quota.gpu_memory_bytes == (12ULL << 30) + 1;
        fxdb_team_rec_free(&all[i]);
    }
    free(all);
    assert_true(seen);

    /* an update replaces every value */
    fxdb_quota q2 = { .gpu_slots = 2 };
    assert_int_equal(fxdb_team_update(f->st, "a", NULL, &q2, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_team_get(f->st, "a", &t, f->err, sizeof f->err), 0);
    assert_true(t.quota.weight == 0);
    assert_int_equal(t.quota.cpu_slots, 0);
    assert_int_equal(t.quota.gpu_slots, 2);
    assert_int_equal(t.quota.max_running_jobs, 0);
    assert_true(t.quota.gpu_memory_bytes == 0);
    assert_int_equal(t.quota.max_models, 0);
    fxdb_team_rec_free(&t);

    /* effective: the built-in defaults, then the daemon's, the team's first */
    fxdb_quota eff;
    assert_int_equal(fxdb_team_effective_quota(f->st, "a", &eff, f->err, sizeof f->err), 0);
    assert_true(eff.weight == 1.0);
    assert_int_equal(eff.budget_window_seconds, 86400);
    assert_int_equal(eff.cpu_slots, 0);
    assert_int_equal(eff.gpu_slots, 2);
    assert_true(eff.budget_device_seconds == 0);
    assert_true(eff.gpu_memory_bytes == 0); /* no cap */
    fxdb_store_set_default_quota(f->st, &(fxdb_quota){ .weight = 3, .cpu_slots = 1,
                                                        .gpu_slots = 7, .max_running_jobs = 2,
                                                        .gpu_memory_bytes = 8ULL << 30 });
    assert_int_equal(fxdb_team_effective_quota(f->st, "a", &eff, f->err, sizeof f->err), 0);
    assert_true(eff.weight == 3.0);
    assert_int_equal(eff.cpu_slots, 1);
    assert_int_equal(eff.gpu_slots, 2); /* the team's own */
    assert_int_equal(eff.max_running_jobs, 2);
    assert_true(eff.gpu_memory_bytes == 8ULL << 30); /* the daemon's */
    assert_int_equal(eff.budget_window_seconds, 86400);
    q2.gpu_memory_bytes = 4ULL << 30;
    assert_int_equal(fxdb_team_update(f->st, "a", NULL, &q2, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_team_effective_quota(f->st, "a", &eff, f->err, sizeof f->err), 0);
    assert_true(eff.gpu_memory_bytes == 4ULL << 30); /* the team's own */
    fxdb_store_set_default_quota(f->st, NULL);

    /* nonsense is refused, the row kept */
    fxdb_quota bad = { .weight = -1 };
    assert_int_equal(fxdb_team_update(f->st, "a", NULL, &bad, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "weight"));
    bad.weight = NAN;
    assert_int_equal(fxdb_team_create(f->st, "b", "", &bad, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    bad = (fxdb_quota){ .budget_device_seconds = INFINITY };
    assert_int_equal(fxdb_team_update(f->st, "a", NULL, &bad, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "budget_device_seconds"));
    assert_int_equal(fxdb_team_get(f->st, "a", &t, f->err, sizeof f->err), 0);
    assert_int_equal(t.quota.gpu_slots, 2);
    fxdb_team_rec_free(&t);
    assert_int_equal(fxdb_team_get(f->st, "b", &t, f->err, sizeof f->err), FXS_NOT_FOUND);
}

static int finish_job(fixture *f, int64_t id, const char *model, const char *w, int64_t *v)
{
    return fxdb_job_finish(f->st, id, COLS("SUCCEEDED", model, ""), w, strlen(w), "job",
                           pack_text, NULL, v, f->err, sizeof f->err);
}

static void test_quota_weights(void **state)
{
    fixture *f = *state;
    fxdb_quota q = { .max_weight_bytes = 10 };
    team(f, "a", &q);
    assert_int_equal(create_rc(f, "a/big", "0123456789A"), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'a' weights quota: 10 bytes allowed, 0 used, this "
                                   "model needs 11"));
    create(f, "a/m", "0123"); /* 4 */
    int64_t v;
    assert_int_equal(fxdb_store_add_version(f->st, "a/m", "012345", 6, "", &v, f->err,
                                            sizeof f->err), 0); /* 10: exactly full */
    assert_int_equal(fxdb_store_add_version(f->st, "a/m", "x", 1, "", &v, f->err,
                                            sizeof f->err), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'a' weights quota: 10 bytes allowed, 10 used, this "
                                   "version needs 1"));
    assert_false(exists(tu_pathf("%s/models/a/m/v3.safetensors", f->data)));
    /* a job's result counts too, and a refused one leaves the job unfinished */
    int64_t job = save_job(f, 0, "RUNNING", "a/m", "");
    assert_int_equal(finish_job(f, job, "a/m", "xy", &v), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "weights quota"));
    assert_int_equal(db_int(f, "SELECT count(*) FROM jobs WHERE state = 'RUNNING'"), 1);
    /* a larger quota lets it through */
    fxdb_quota more = { .max_weight_bytes = 12 };
    assert_int_equal(fxdb_team_update(f->st, "a", NULL, &more, f->err, sizeof f->err), 0);
    assert_int_equal(finish_job(f, job, "a/m", "xy", &v), 0);
    assert_int_equal(v, 3);
}

static void test_quota_datasets(void **state)
{
    fixture *f = *state;
    team(f, "a", NULL);
    fxdb_store_set_default_quota(f->st, &(fxdb_quota){ .max_dataset_bytes = 100 });
    assert_int_equal(add_dataset(f, "a/d1", 60), 0);
    assert_int_equal(add_dataset(f, "a/d2", 41), FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->err, "team 'a' datasets quota: 100 bytes allowed, 60 used, this "
                                   "dataset needs 41"));
    assert_int_equal(add_dataset(f, "a/d2", 40), 0);
    assert_int_equal(db_int(f, "SELECT bytes FROM datasets WHERE name = 'a/d2'"), 40);
    fxdb_usage u;
    assert_int_equal(fxdb_team_usage(f->st, "a", &u, f->err, sizeof f->err), 0);
    assert_int_equal(u.dataset_bytes, 100);
    /* a team's own value replaces the default */
    fxdb_quota q = { .max_dataset_bytes = 1000 };
    assert_int_equal(fxdb_team_update(f->st, "a", NULL, &q, f->err, sizeof f->err), 0);
    assert_int_equal(add_dataset(f, "a/d3", 900), 0);
    assert_int_equal(add_dataset(f, "default/d", 101), FXS_RESOURCE_EXHAUSTED);
}

/* Threads racing to create models under a quota: exactly the quota's
 * number succeed (the check is inside the transaction). */
typedef struct {
    fixture *f;
    int k;
    int rc;
} race_arg;

static void *race_create(void *p)
{
    race_arg *a = p;
    char key[32], err[256];
    snprintf(key, sizeof key, "a/m%d", a->k);
    a->rc = fxdb_store_create_model(a->f->st, key, "", NULL, 0, 0, false, "w", 1, "", err,
                                    sizeof err);
    return NULL;
}

static void test_quota_race(void **state)
{
    fixture *f = *state;
    fxdb_quota q = { .max_models = 3 };
    team(f, "a", &q);
    enum { N = 8 };
    pthread_t th[N];
    race_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (race_arg){ f, i, -1 };
        assert_int_equal(pthread_create(&th[i], NULL, race_create, &a[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (a[i].rc == 0)
            ok++;
        else
            assert_int_equal(a[i].rc, FXS_RESOURCE_EXHAUSTED);
    }
    assert_int_equal(ok, 3);
    assert_int_equal(db_int(f, "SELECT count(*) FROM models WHERE team = 'a'"), 3);
}

/* ------------------------------------------- tokens, certs, settings */

static void test_tokens(void **state)
{
    fixture *f = *state;
    char *v = NULL;
    assert_int_equal(fxdb_setting_get(f->st, "auth", &v, f->err, sizeof f->err), FXS_NOT_FOUND);
    team(f, "a", NULL);
    fxdb_token_rec t = { .team = "a", .name = "ci", .role = "member", .expires_ms = 99,
                         .created_by = "token:root" };
    memset(t.hash, 1, 32);
    int64_t id1 = 0, id2 = 0, id3 = 0;
    assert_int_equal(fxdb_token_insert(f->st, &t, &id1, f->err, sizeof f->err), 0);
    assert_true(id1 > 0);
    assert_int_equal(fxdb_setting_get(f->st, "auth", &v, f->err, sizeof f->err), 0);
    assert_string_equal(v, "on");
    free(v);
    /* the same live name in the team; the same hash anywhere */
    memset(t.hash, 2, 32);
    assert_int_equal(fxdb_token_insert(f->st, &t, &id2, f->err, sizeof f->err),
                     FXS_ALREADY_EXISTS);
    assert_non_null(strstr(f->err, "'ci'"));
    fxdb_token_rec other = t;
    other.name = "other";
    memset(other.hash, 1, 32);
    assert_int_equal(fxdb_token_insert(f->st, &other, &id2, f->err, sizeof f->err),
                     FXS_ALREADY_EXISTS);
    assert_non_null(strstr(f->err, "same secret"));
    /* same name in another team is fine */
    fxdb_token_rec def = t;
    def.team = "default";
    memset(def.hash, 3, 32);
    assert_int_equal(fxdb_token_insert(f->st, &def, &id2, f->err, sizeof f->err), 0);
    /* bad inputs */
    other.role = "root";
    memset(other.hash, 4, 32);
    assert_int_equal(fxdb_token_insert(f->st, &other, NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "role 'root'"));
    other.role = "viewer";
    other.team = "nope";
    assert_int_equal(fxdb_token_insert(f->st, &other, NULL, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "team 'nope' not found"));
    other.team = "a";
    other.name = "a b";
    assert_int_equal(fxdb_token_insert(f->st, &other, NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "token name"));

    /* revoke: twice is fine, the first time stays; then the name is free */
    assert_int_equal(fxdb_token_revoke(f->st, id1, 500, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_token_revoke(f->st, id1, 600, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_token_revoke(f->st, 9999, 600, f->err, sizeof f->err), FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "token 9999 not found"));
    memset(t.hash, 5, 32);
    assert_int_equal(fxdb_token_insert(f->st, &t, &id3, f->err, sizeof f->err), 0);
    /* touch */
    assert_int_equal(fxdb_token_touch(f->st, id3, 1234, f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_token_touch(f->st, id3, 1000, f->err, sizeof f->err), 0); /* older */
    assert_int_equal(fxdb_token_touch(f->st, 9999, 1, f->err, sizeof f->err), FXS_NOT_FOUND);

    reopen(f);
    fxdb_token_rec *all;
    int n;
    assert_int_equal(fxdb_token_list(f->st, &all, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(all[0].id, id1);
    assert_int_equal(all[1].id, id2);
    assert_int_equal(all[2].id, id3);
    assert_string_equal(all[0].team, "a");
    assert_string_equal(all[0].name, "ci");
    assert_string_equal(all[0].role, "member");
    assert_string_equal(all[0].created_by, "token:root");
    assert_int_equal(all[0].expires_ms, 99);
    assert_int_equal(all[0].revoked_ms, 500);
    assert_true(all[0].created_ms > 0);
    unsigned char ones[32];
    memset(ones, 1, 32);
    assert_memory_equal(all[0].hash, ones, 32);
    assert_string_equal(all[1].team, "default");
    assert_int_equal(all[1].revoked_ms, 0);
    assert_int_equal(all[2].last_used_ms, 1234);
    fxdb_token_recs_free(all, n);
}

static void test_certs(void **state)
{
    fixture *f = *state;
    team(f, "a", NULL);
    fxdb_cert_rec c = { .subject = "CN=alice,O=a", .team = "a", .role = "member" };
    assert_int_equal(fxdb_cert_insert(f->st, &c, f->err, sizeof f->err), 0);
    char *v;
    assert_int_equal(fxdb_setting_get(f->st, "auth", &v, f->err, sizeof f->err), 0);
    assert_string_equal(v, "on");
    free(v);
    assert_int_equal(fxdb_cert_insert(f->st, &c, f->err, sizeof f->err), FXS_ALREADY_EXISTS);
    assert_non_null(strstr(f->err, "CN=alice,O=a"));
    fxdb_cert_rec bad = { .subject = "CN=bob", .team = "nope", .role = "member" };
    assert_int_equal(fxdb_cert_insert(f->st, &bad, f->err, sizeof f->err), FXS_NOT_FOUND);
    bad.team = "a";
    bad.role = "boss";
    assert_int_equal(fxdb_cert_insert(f->st, &bad, f->err, sizeof f->err), FXS_INVALID_ARGUMENT);
    bad.role = "viewer";
    bad.subject = "";
    assert_int_equal(fxdb_cert_insert(f->st, &bad, f->err, sizeof f->err), FXS_INVALID_ARGUMENT);
    bad.subject = "CN=bob";
    assert_int_equal(fxdb_cert_insert(f->st, &bad, f->err, sizeof f->err), 0);
    fxdb_cert_rec *all;
    int n;
    assert_int_equal(fxdb_cert_list(f->st, &all, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(all[0].subject, "CN=alice,O=a");
    assert_string_equal(all[0].role, "member");
    assert_string_equal(all[1].subject, "CN=bob");
    assert_string_equal(all[1].team, "a");
    assert_true(all[1].created_ms > 0);
    fxdb_cert_recs_free(all, n);
    assert_int_equal(fxdb_cert_delete(f->st, "CN=alice,O=a", f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_cert_delete(f->st, "CN=alice,O=a", f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxdb_cert_list(f->st, &all, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 1);
    fxdb_cert_recs_free(all, n);
}

static void test_settings(void **state)
{
    fixture *f = *state;
    char *v = (char *)1;
    assert_int_equal(fxdb_setting_get(f->st, "k", &v, f->err, sizeof f->err), FXS_NOT_FOUND);
    assert_null(v);
    assert_non_null(strstr(f->err, "'k'"));
    assert_int_equal(fxdb_setting_put(f->st, "k", "one", f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_setting_put(f->st, "k", "two", f->err, sizeof f->err), 0);
    assert_int_equal(fxdb_setting_put(f->st, "", "x", f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    reopen(f);
    assert_int_equal(fxdb_setting_get(f->st, "k", &v, f->err, sizeof f->err), 0);
    assert_string_equal(v, "two");
    free(v);
}

/* ---------------------------------------------------------- recovery */

static void test_recovery_two_levels(void **state)
{
    fixture *f = *state;
    team(f, "a", NULL);
    create(f, "a/m", "w1");
    /* a crash's leftovers: an orphan version, temporaries at both levels, an
     * empty directory of a team that does not exist, a model directory
     * without a model */
    put_file(tu_pathf("%s/models/a/m/v9.safetensors", f->data), "x", 1);
    put_file(tu_pathf("%s/models/a/m/.v2.safetensors.tmp.Ab12Cd", f->data), "x", 1);
    put_file(tu_pathf("%s/models/a/.m.tmp.Zz99Yy", f->data), "x", 1);
    assert_int_equal(mkdir(tu_pathf("%s/models/ghost", f->data), 0755), 0);
    assert_int_equal(mkdir(tu_pathf("%s/models/a/gone", f->data), 0755), 0);
    put_file(tu_pathf("%s/models/a/gone/v1.safetensors", f->data), "x", 1);
    put_file(tu_pathf("%s/models/a/m/NOTES", f->data), "keep", 4);
    reopen(f);
    assert_false(exists(tu_pathf("%s/models/a/m/v9.safetensors", f->data)));
    assert_false(exists(tu_pathf("%s/models/a/m/.v2.safetensors.tmp.Ab12Cd", f->data)));
    assert_false(exists(tu_pathf("%s/models/a/.m.tmp.Zz99Yy", f->data)));
    assert_false(exists(tu_pathf("%s/models/ghost", f->data)));
    assert_false(exists(tu_pathf("%s/models/a/gone", f->data)));
    assert_true(exists(tu_pathf("%s/models/a/m/NOTES", f->data)));
    assert_true(exists(tu_pathf("%s/models/a/m/v1.safetensors", f->data)));
    assert_true(exists(tu_pathf("%s/models/a", f->data))); /* a team's, even when empty */
}

/* ----------------------------------------------------------- upgrade */

static void assert_readable(fixture *f, const char *key, int64_t version, size_t len)
{
    void *buf;
    size_t n;
    int rc = fxdb_store_read_weights(f->st, key, version, &buf, &n, f->err, sizeof f->err);
    if (rc)
        fail_msg("read %s v%lld: %d %s", key, (long long)version, rc, f->err);
    assert_int_equal(n, len);
    free(buf);
}

/* What the 0.2.0 fixture holds, seen after the upgrade (see its README). */
static void assert_upgraded(fixture *f)
{
    assert_string_equal(model_keys(f, "default"), "default/blobs-mlp,default/mlp");
    fxdb_model_rec m;
    assert_int_equal(fxdb_store_get_model(f->st, "default/blobs-mlp", &m, f->err,
                                          sizeof f->err), 0);
    assert_int_equal(m.n_versions, 2); /* both usable: the files moved and verify */
    fxdb_model_rec_free(&m);
    assert_readable(f, "default/blobs-mlp", 1, 1224);
    assert_readable(f, "default/blobs-mlp", 2, 1224);
    assert_readable(f, "default/mlp", 1, 836);
    assert_true(exists(tu_pathf("%s/models/default/blobs-mlp/v2.safetensors", f->data)));
    assert_false(exists(tu_pathf("%s/models/blobs-mlp", f->data)));
    assert_false(exists(tu_pathf("%s/models/mlp", f->data)));
    assert_true(exists(tu_pathf("%s/datasets/default/blobs/shard-0.safetensors", f->data)));
    assert_false(exists(tu_pathf("%s/datasets/blobs", f->data)));

    assert_string_equal(dataset_keys(f, "default"), "default/blobs");
    assert_int_equal(db_int(f, "SELECT bytes FROM datasets WHERE name = 'default/blobs'"),
                     64184);
    assert_string_equal(job_ids(f, "default"), "1");
    assert_int_equal(db_int(f, "SELECT count(*) FROM jobs WHERE model = 'default/blobs-mlp' "
                               "AND dataset = 'default/blobs' AND team = 'default'"), 1);
    int64_t v;
    assert_int_equal(fxdb_job_version(f->st, 1, &v, f->err, sizeof f->err), 0);
    assert_int_equal(v, 2);
    void *cfg;
    size_t len;
    assert_int_equal(fxdb_servecfg_get(f->st, "default/blobs-mlp", &cfg, &len, f->err,
                                       sizeof f->err), 0);
    free(cfg);
    fxdb_usage u;
    assert_int_equal(fxdb_team_usage(f->st, "default", &u, f->err, sizeof f->err), 0);
    assert_int_equal(u.models, 2);
    assert_int_equal(u.weight_bytes, 1224 * 2 + 836);
    assert_int_equal(u.dataset_bytes, 64184);
    assert_int_equal(db_int(f, "SELECT version FROM schema_version"), 9);
    /* 8 -> 9: every old version fits revision 1 (models.spec), no other */
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM versions WHERE spec_revision <> 1"), 0);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM spec_revisions"), 0);
    /* 7 -> 8: every model's production alias is its latest usable version */
    assert_int_equal(db_int(f, "SELECT count(*) FROM aliases WHERE name = 'production'"), 2);
    assert_int_equal(db_int(f, "SELECT count(*) FROM aliases a JOIN models m ON m.id = a.model_id "
                               "WHERE a.version = m.last_version"), 2);
    /* 6 -> 7: the scheduling columns, 0 (the defaults) in the old rows */
    fxdb_team_rec t;
    assert_int_equal(fxdb_team_get(f->st, "default", &t, f->err, sizeof f->err), 0);
    assert_true(t.quota.weight == 0);
    assert_int_equal(t.quota.cpu_slots, 0);
    assert_int_equal(t.quota.budget_window_seconds, 0);
    fxdb_team_rec_free(&t);
}

static void test_upgrade_0_2_0(void **state)
{
    fixture *f = *state;
    assert_int_equal(db_int(f, "SELECT version FROM schema_version"), 5);
    open_store(f);
    assert_upgraded(f);
    /* a second open changes nothing, and the new layout works */
    reopen(f);
    assert_upgraded(f);
    create(f, "default/new", "w");
    reopen(f);
    assert_readable(f, "default/new", 1, 1);
    assert_readable(f, "default/mlp", 1, 836);
}

/* A crash after some of the files moved and before the SQL committed: the
 * next open completes the move and runs the SQL. */
static void test_upgrade_crash_after_move(void **state)
{
    fixture *f = *state;
    assert_int_equal(mkdir(tu_pathf("%s/models/default", f->data), 0755), 0);
    assert_int_equal(rename(tu_pathf("%s/models/blobs-mlp", f->data),
                            tu_pathf("%s/models/default/blobs-mlp", f->data)), 0);
    assert_int_equal(mkdir(tu_pathf("%s/datasets/default", f->data), 0755), 0);
    assert_int_equal(rename(tu_pathf("%s/datasets/blobs", f->data),
                            tu_pathf("%s/datasets/default/blobs", f->data)), 0);
    /* models/mlp has not moved yet */
    open_store(f);
    assert_upgraded(f);
}

/* All files moved, the SQL not run: the same. */
static void test_upgrade_crash_all_moved(void **state)
{
    fixture *f = *state;
    assert_int_equal(mkdir(tu_pathf("%s/models/default", f->data), 0755), 0);
    const char *names[] = { "blobs-mlp", "mlp" };
    for (int i = 0; i < 2; i++)
        assert_int_equal(rename(tu_pathf("%s/models/%s", f->data, names[i]),
                                tu_pathf("%s/models/default/%s", f->data, names[i])), 0);
    assert_int_equal(mkdir(tu_pathf("%s/datasets/default", f->data), 0755), 0);
    assert_int_equal(rename(tu_pathf("%s/datasets/blobs", f->data),
                            tu_pathf("%s/datasets/default/blobs", f->data)), 0);
    open_store(f);
    assert_upgraded(f);
}

/* A model named "default" from before teams: its directory is the one the
 * team needs. Also after a crash in the middle of its move. */
static void model_named_default(fixture *f, int crash_step)
{
    sql(f, "UPDATE models SET name = 'default' WHERE name = 'mlp'");
    assert_int_equal(rename(tu_pathf("%s/models/mlp", f->data),
                            tu_pathf("%s/models/default", f->data)), 0);
    if (crash_step >= 1) /* staged away, the team's directory made */
        assert_int_equal(rename(tu_pathf("%s/models/default", f->data),
                                tu_pathf("%s/models/.migrate-default", f->data)), 0);
    if (crash_step >= 1)
        assert_int_equal(mkdir(tu_pathf("%s/models/default", f->data), 0755), 0);
    if (crash_step >= 2) /* another model moved */
        assert_int_equal(rename(tu_pathf("%s/models/blobs-mlp", f->data),
                                tu_pathf("%s/models/default/blobs-mlp", f->data)), 0);
    if (crash_step >= 3) /* the model "default" moved too */
        assert_int_equal(rename(tu_pathf("%s/models/.migrate-default", f->data),
                                tu_pathf("%s/models/default/default", f->data)), 0);
    open_store(f);
    assert_string_equal(model_keys(f, NULL), "default/blobs-mlp,default/default");
    assert_readable(f, "default/default", 1, 836);
    assert_readable(f, "default/blobs-mlp", 2, 1224);
    assert_true(exists(tu_pathf("%s/models/default/default/v1.safetensors", f->data)));
    assert_false(exists(tu_pathf("%s/models/.migrate-default", f->data)));
    reopen(f);
    assert_readable(f, "default/default", 1, 836);
}

static void test_upgrade_model_named_default(void **state)
{
    model_named_default(*state, 0);
}

static void test_upgrade_model_named_default_crash1(void **state)
{
    model_named_default(*state, 1);
}

static void test_upgrade_model_named_default_crash2(void **state)
{
    model_named_default(*state, 2);
}

static void test_upgrade_model_named_default_crash3(void **state)
{
    model_named_default(*state, 3);
}

/* A data directory of schema 1 (models only, no datasets table yet): the
 * upgrade moves what there is. */
static void test_upgrade_schema_1(void **state)
{
    fixture *f = *state;
    fxdb_store_close(f->st);
    f->st = NULL;
    tu_rmtree(f->data);
    assert_int_equal(mkdir(f->data, 0755), 0);
    assert_int_equal(mkdir(tu_pathf("%s/models", f->data), 0755), 0);
    assert_int_equal(mkdir(tu_pathf("%s/models/m", f->data), 0755), 0);
    put_file(tu_pathf("%s/models/m/v1.safetensors", f->data), "abc", 3);
    sql(f, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
           "INSERT INTO schema_version VALUES (1);"
           "CREATE TABLE models (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL "
           "UNIQUE, description TEXT NOT NULL, spec BLOB NOT NULL, seed INTEGER NOT NULL, "
           "loaded INTEGER NOT NULL CHECK (loaded IN (0, 1)), created_ms INTEGER NOT NULL);"
           "CREATE TABLE versions (model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE "
           "CASCADE, version INTEGER NOT NULL CHECK (version >= 1), created_ms INTEGER NOT "
           "NULL, source TEXT NOT NULL, weights_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, "
           "unusable TEXT, PRIMARY KEY (model_id, version));"
           "INSERT INTO models VALUES (1, 'm', '', x'', 0, 1, 1);"
           "INSERT INTO versions VALUES (1, 1, 1, 'init', 3, "
           "'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', NULL);");
    open_store(f);
    assert_string_equal(model_keys(f, "default"), "default/m");
    assert_readable(f, "default/m", 1, 3);
    assert_true(exists(tu_pathf("%s/models/default/m/v1.safetensors", f->data)));
    assert_int_equal(db_int(f, "SELECT version FROM schema_version"), 9);
    /* 8 -> 9: every old version fits revision 1 (models.spec), no other */
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM versions WHERE spec_revision <> 1"), 0);
    assert_int_equal(db_int(f, "SELECT COUNT(*) FROM spec_revisions"), 0);
    /* 6 -> 7: the scheduling columns, 0 (the defaults) in the old rows */
    fxdb_team_rec t;
    assert_int_equal(fxdb_team_get(f->st, "default", &t, f->err, sizeof f->err), 0);
    assert_true(t.quota.weight == 0);
    assert_int_equal(t.quota.cpu_slots, 0);
    assert_int_equal(t.quota.budget_window_seconds, 0);
    fxdb_team_rec_free(&t);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define U(fn) cmocka_unit_test_setup_teardown(fn, setup_fixture, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_ok),
        T(test_keys_and_layout),
        T(test_team_filters),
        T(test_team_crud),
        T(test_team_delete_refused),
        T(test_quota_models),
        T(test_quota_weights),
        T(test_quota_datasets),
        T(test_quota_race),
        T(test_quota_scheduling),
        T(test_tokens),
        T(test_certs),
        T(test_settings),
        T(test_recovery_two_levels),
        U(test_upgrade_0_2_0),
        U(test_upgrade_crash_after_move),
        U(test_upgrade_crash_all_moved),
        U(test_upgrade_model_named_default),
        U(test_upgrade_model_named_default_crash1),
        U(test_upgrade_model_named_default_crash2),
        U(test_upgrade_model_named_default_crash3),
        T(test_upgrade_schema_1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
