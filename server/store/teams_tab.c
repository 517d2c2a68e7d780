/*
 * teams_tab.c - the teams table, the teams' quotas and what they use (see
 * store.h, "Quotas"). A team owns the models, datasets and jobs whose key
 * starts with "team/" (their rows carry it in a team column). The check of
 * a quota runs inside the write's transaction (fxdb__quota_check), under
 * the store's lock, so two writes racing cannot both pass it.
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"

void fxdb_team_rec_free(fxdb_team_rec *t)
{
    if (!t)
        return;
    free(t->name);
    free(t->display_name);
    memset(t, 0, sizeof *t);
}

void fxdb__key_team(const char *key, char *out, size_t outlen)
{
    fxp_key_team(key, out, outlen);
}

int fxdb__team_exists(fxdb_store *st, const char *team, char *err, size_t errlen)
{
    int64_t one;
    int rc = fxdb__query_int(st, "SELECT 1 FROM teams WHERE name = ?", team, &one, err, errlen);
    if (rc == FXS_NOT_FOUND)
        fxu_seterr(err, errlen, "team '%s' not found", team);
    return rc;
}

/* A quota value as SQLite stores it (int64), and scheduling numbers that
 * mean something (a weight of NaN would poison every share). */
static int check_quota(const fxdb_quota *q, char *err, size_t errlen)
{
    if (q && (q->max_models > INT64_MAX || q->max_weight_bytes > INT64_MAX ||
              q->max_dataset_bytes > INT64_MAX))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "a quota value is larger than %" PRId64,
                        INT64_MAX);
    if (q && !(isfinite(q->weight) && q->weight >= 0 && q->weight <= 1e6))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "weight: %g is not a number from 0 "
                        "(the default) to 1e6", q->weight);
    if (q && !(isfinite(q->budget_device_seconds) && q->budget_device_seconds >= 0 &&
               q->budget_device_seconds <= 1e15))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "budget_device_seconds: %g is not a "
                        "number from 0 (none) to 1e15", q->budget_device_seconds);
    return 0;
}

/* ------------------------------------------------------------ reading */

#define TEAM_COLS "name, display_name, created_ms, max_models, max_weight_bytes, max_dataset_bytes, " \
                  "weight, cpu_slots, gpu_slots, borrow_cpu_slots, borrow_gpu_slots, " \
                  "budget_device_seconds, budget_window_seconds, max_running_jobs, gpu_memory_bytes"
/* The quota's columns after the first three of TEAM_COLS, in its order. */
#define QUOTA_COLS "max_models = ?, max_weight_bytes = ?, max_dataset_bytes = ?, weight = ?, " \
                   "cpu_slots = ?, gpu_slots = ?, borrow_cpu_slots = ?, borrow_gpu_slots = ?, " \
                   "budget_device_seconds = ?, budget_window_seconds = ?, max_running_jobs = ?, " \
                   "gpu_memory_bytes = ?"
#define N_QUOTA_COLS 12

/* Binds a quota's N_QUOTA_COLS values from parameter first on. */
static void bind_quota(sqlite3_stmt *s, int first, const fxdb_quota *q)
{
    sqlite3_bind_int64(s, first, (int64_t)q->max_models);
    sqlite3_bind_int64(s, first + 1, (int64_t)q->max_weight_bytes);
    sqlite3_bind_int64(s, first + 2, (int64_t)q->max_dataset_bytes);
    sqlite3_bind_double(s, first + 3, q->weight);
    sqlite3_bind_int64(s, first + 4, q->cpu_slots);
    sqlite3_bind_int64(s, first + 5, q->gpu_slots);
    sqlite3_bind_int64(s, first + 6, q->borrow_cpu_slots);
    sqlite3_bind_int64(s, first + 7, q->borrow_gpu_slots);
    sqlite3_bind_double(s, first + 8, q->budget_device_seconds);
    sqlite3_bind_int64(s, first + 9, q->budget_window_seconds);
    sqlite3_bind_int64(s, first + 10, q->max_running_jobs);
    sqlite3_bind_int64(s, first + 11, (int64_t)q->gpu_memory_bytes);
}

static uint32_t col_u32(sqlite3_stmt *s, int i)
{
    int64_t v = sqlite3_column_int64(s, i);
    return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static int load_team(sqlite3_stmt *s, fxdb_team_rec *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->name = strdup((const char *)sqlite3_column_text(s, 0));
    t->display_name = strdup((const char *)sqlite3_column_text(s, 1));
    t->created_ms = sqlite3_column_int64(s, 2);
    t->quota.max_models = (uint64_t)sqlite3_column_int64(s, 3);
    t->quota.max_weight_bytes = (uint64_t)sqlite3_column_int64(s, 4);
    t->quota.max_dataset_bytes = (uint64_t)sqlite3_column_int64(s, 5);
    t->quota.weight = sqlite3_column_double(s, 6);
    t->quota.cpu_slots = col_u32(s, 7);
    t->quota.gpu_slots = col_u32(s, 8);
    t->quota.borrow_cpu_slots = col_u32(s, 9);
    t->quota.borrow_gpu_slots = col_u32(s, 10);
    t->quota.budget_device_seconds = sqlite3_column_double(s, 11);
    t->quota.budget_window_seconds = col_u32(s, 12);
    t->quota.max_running_jobs = col_u32(s, 13);
    t->quota.gpu_memory_bytes = (uint64_t)sqlite3_column_int64(s, 14);
    if (!t->name || !t->display_name) {
        fxdb_team_rec_free(t);
        return fxu_oom(err, errlen);
    }
    return 0;
}

typedef struct {
    const char *name;
    const char *display_name;
    const fxdb_quota *quota;
    fxdb_team_rec *one;     /* get */
    fxdb_team_rec *all;     /* list */
    int n;
    fxdb_usage *usage;
} team_op;

static int get_locked(fxdb_store *st, const char *name, fxdb_team_rec *out, char *err,
                      size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT " TEAM_COLS " FROM teams WHERE name = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        rc = load_team(s, out, err, errlen);
    else if (r == SQLITE_DONE)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "team '%s' not found", name);
    else
        rc = fxdb__fail(st, err, errlen, "reading a team");
    sqlite3_finalize(s);
    return rc;
}

static int get_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_op *o = ctx;
    return get_locked(st, o->name, o->one, err, errlen);
}

int fxdb_team_get(fxdb_store *st, const char *name, fxdb_team_rec *out, char *err,
                  size_t errlen)
{
    if (!name || !out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: team_get: missing argument");
    memset(out, 0, sizeof *out);
    team_op o = { .name = name, .one = out };
    return fxdb__read(st, get_fn, &o, err, errlen);
}

static int list_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT " TEAM_COLS " FROM teams ORDER BY name", &s, err, errlen);
    if (rc)
        return rc;
    int cap = 0, r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (o->n == cap) {
            cap = cap ? 2 * cap : 8;
            fxdb_team_rec *nt = realloc(o->all, (size_t)cap * sizeof *nt);
            if (!nt) {
                rc = fxu_oom(err, errlen);
                break;
            }
            o->all = nt;
        }
        if (!(rc = load_team(s, &o->all[o->n], err, errlen)))
            o->n++;
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "listing teams");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_team_list(fxdb_store *st, fxdb_team_rec **out, int *n, char *err, size_t errlen)
{
    if (!out || !n)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: team_list: missing argument");
    team_op o = { 0 };
    int rc = fxdb__read(st, list_fn, &o, err, errlen);
    if (rc) {
        for (int i = 0; i < o.n; i++)
            fxdb_team_rec_free(&o.all[i]);
        free(o.all);
        o.all = NULL;
        o.n = 0;
    }
    *out = o.all;
    *n = o.n;
    return rc;
}

/* ------------------------------------------------------------ writing */

static int create_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_op *o = ctx;
    fxdb_quota zero = { 0 };
    const fxdb_quota *q = o->quota ? o->quota : &zero;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "INSERT INTO teams (" TEAM_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, "
                           "?, ?, ?, ?, ?, ?, ?, ?)", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, o->display_name ? o->display_name : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, fxu_now_ms());
    bind_quota(s, 4, q);
    int r = sqlite3_step(s);
    if ((r & 0xff) == SQLITE_CONSTRAINT)
        rc = fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "team '%s' already exists", o->name);
    else if (r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "adding a team");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_team_create(fxdb_store *st, const char *name, const char *display_name,
                     const fxdb_quota *q, char *err, size_t errlen)
{
    if (!fxp_team_name_ok(name, err, errlen))
        return FXS_INVALID_ARGUMENT;
    int rc = check_quota(q, err, errlen);
    if (rc)
        return rc;
    team_op o = { .name = name, .display_name = display_name, .quota = q };
    return fxdb__tx(st, create_fn, &o, err, errlen);
}

static int update_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_op *o = ctx;
    int rc = fxdb__team_exists(st, o->name, err, errlen);
    sqlite3_stmt *s;
    if (!rc && o->display_name && *o->display_name &&
        !(rc = fxdb__prepare(st, "UPDATE teams SET display_name = ? WHERE name = ?", &s, err,
                             errlen))) {
        sqlite3_bind_text(s, 1, o->display_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, o->name, -1, SQLITE_STATIC);
        rc = fxdb__step_done(st, s, "updating a team", err, errlen);
    }
    if (!rc && o->quota &&
        !(rc = fxdb__prepare(st, "UPDATE teams SET " QUOTA_COLS " WHERE name = ?", &s, err,
                             errlen))) {
        bind_quota(s, 1, o->quota);
        sqlite3_bind_text(s, 1 + N_QUOTA_COLS, o->name, -1, SQLITE_STATIC);
        rc = fxdb__step_done(st, s, "updating a team's quota", err, errlen);
    }
    return rc;
}

int fxdb_team_update(fxdb_store *st, const char *name, const char *display_name,
                     const fxdb_quota *q, char *err, size_t errlen)
{
    if (!name)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: team_update: no team");
    int rc = check_quota(q, err, errlen);
    if (rc)
        return rc;
    team_op o = { .name = name, .display_name = display_name, .quota = q };
    return fxdb__tx(st, update_fn, &o, err, errlen);
}

/* ---------------------------------------------------------- deleting */

static int count(fxdb_store *st, const char *sql, const char *team, int64_t *n, char *err,
                 size_t errlen)
{
    return fxdb__query_int(st, sql, team, n, err, errlen);
}

static const char *plural(int64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

static int delete_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_op *o = ctx;
    int rc = fxdb__team_exists(st, o->name, err, errlen);
    int64_t models = 0, datasets = 0, jobs = 0;
    if (!rc)
        rc = count(st, "SELECT COUNT(*) FROM models WHERE team = ?", o->name, &models, err, errlen);
    if (!rc)
        rc = count(st, "SELECT COUNT(*) FROM datasets WHERE team = ?", o->name, &datasets, err,
                   errlen);
    if (!rc)
        rc = count(st, "SELECT COUNT(*) FROM jobs WHERE team = ? AND state IN ('QUEUED', "
                       "'RUNNING')", o->name, &jobs, err, errlen);
    if (!rc && (models || datasets || jobs))
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "team '%s' still owns %" PRId64
                        " %s, %" PRId64 " %s and %" PRId64 " queued or running %s; delete them "
                        "(cancel the jobs) first", o->name, models,
                        plural(models, "model", "models"), datasets,
                        plural(datasets, "dataset", "datasets"), jobs, plural(jobs, "job", "jobs"));
    static const char *const sql[] = {
        "DELETE FROM tokens WHERE team = ?1",
        "DELETE FROM cert_principals WHERE team = ?1",
        "DELETE FROM jobs WHERE team = ?1",
        "DELETE FROM serving_config WHERE substr(model, 1, length(?1) + 1) = ?1 || '/'",
        "DELETE FROM teams WHERE name = ?1",
    };
    for (size_t i = 0; !rc && i < sizeof sql / sizeof sql[0]; i++) {
        sqlite3_stmt *s;
        if ((rc = fxdb__prepare(st, sql[i], &s, err, errlen)))
            break;
        sqlite3_bind_text(s, 1, o->name, -1, SQLITE_STATIC);
        rc = fxdb__step_done(st, s, "deleting a team", err, errlen);
    }
    return rc;
}

int fxdb_team_delete(fxdb_store *st, const char *name, char *err, size_t errlen)
{
    if (!name)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: team_delete: no team");
    if (strcmp(name, FXP_DEFAULT_TEAM) == 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "team '%s' cannot be deleted",
                        FXP_DEFAULT_TEAM);
    if (!fxp_team_name_ok(name, NULL, 0)) /* no such team (and no path to build from it) */
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "team '%s' not found", name);
    if (!st)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: no store");
    team_op o = { .name = name };
    pthread_mutex_lock(&st->mu);
    int rc = fxdb__tx_freeing(st, delete_fn, &o, err, errlen);
    if (!rc) {
        char *dir = fxu_strf("%s/%s", st->models_dir, name);
        if (dir && rmdir(dir) == 0)
            fxu_fsync_dir(st->models_dir, NULL, 0);
        else if (dir && errno != ENOENT)
            fxdb__log(FXL_WARN, "cannot remove a team's directory path=%s error=\"%s\"", dir,
                      strerror(errno));
        free(dir);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ------------------------------------------------------ usage, quotas */

static int usage_locked(fxdb_store *st, const char *team, fxdb_usage *u, char *err,
                        size_t errlen)
{
    int64_t m = 0, w = 0, d = 0;
    int rc = count(st, "SELECT COUNT(*) FROM models WHERE team = ?", team, &m, err, errlen);
    if (!rc)
        rc = count(st, "SELECT COALESCE(SUM(v.weights_bytes), 0) FROM versions v JOIN models m "
                       "ON m.id = v.model_id WHERE m.team = ?", team, &w, err, errlen);
    if (!rc)
        rc = count(st, "SELECT COALESCE(SUM(bytes), 0) FROM datasets WHERE team = ?", team, &d,
                   err, errlen);
    u->models = (uint64_t)m;
    u->weight_bytes = (uint64_t)w;
    u->dataset_bytes = (uint64_t)d;
    return rc;
}

static int usage_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_op *o = ctx;
    int rc = fxdb__team_exists(st, o->name, err, errlen);
    return rc ? rc : usage_locked(st, o->name, o->usage, err, errlen);
}

int fxdb_team_usage(fxdb_store *st, const char *team, fxdb_usage *u, char *err, size_t errlen)
{
    if (!team || !u)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: team_usage: missing argument");
    memset(u, 0, sizeof *u);
    team_op o = { .name = team, .usage = u };
    return fxdb__read(st, usage_fn, &o, err, errlen);
}

void fxdb_store_set_default_quota(fxdb_store *st, const fxdb_quota *q)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    if (q)
        st->default_quota = *q;
    else
        memset(&st->default_quota, 0, sizeof st->default_quota);
    pthread_mutex_unlock(&st->mu);
}

/* Under the lock: the team's values, 0s replaced by the defaults. */
static int effective_locked(fxdb_store *st, const char *team, fxdb_quota *q, char *err,
                            size_t errlen)
{
    fxdb_team_rec t;
    int rc = get_locked(st, team, &t, err, errlen);
    if (rc)
        return rc;
    const fxdb_quota *d = &st->default_quota;
    q->max_models = t.quota.max_models ? t.quota.max_models : d->max_models;
    q->max_weight_bytes = t.quota.max_weight_bytes ? t.quota.max_weight_bytes
                                                   : d->max_weight_bytes;
    q->max_dataset_bytes = t.quota.max_dataset_bytes ? t.quota.max_dataset_bytes
                                                     : d->max_dataset_bytes;
#define OR_DEFAULT(f) (t.quota.f ? t.quota.f : d->f)
    q->weight = OR_DEFAULT(weight);
    q->cpu_slots = OR_DEFAULT(cpu_slots);
    q->gpu_slots = OR_DEFAULT(gpu_slots);
    q->borrow_cpu_slots = OR_DEFAULT(borrow_cpu_slots);
    q->borrow_gpu_slots = OR_DEFAULT(borrow_gpu_slots);
    q->budget_device_seconds = OR_DEFAULT(budget_device_seconds);
    q->budget_window_seconds = OR_DEFAULT(budget_window_seconds);
    q->max_running_jobs = OR_DEFAULT(max_running_jobs);
    q->gpu_memory_bytes = OR_DEFAULT(gpu_memory_bytes);
#undef OR_DEFAULT
    if (q->weight <= 0)
        q->weight = FXDB_DEFAULT_WEIGHT;
    if (!q->budget_window_seconds)
        q->budget_window_seconds = FXDB_DEFAULT_BUDGET_WINDOW_SECONDS;
    fxdb_team_rec_free(&t);
    return 0;
}

static int effective_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_op *o = ctx;
    return effective_locked(st, o->name, (fxdb_quota *)o->quota, err, errlen);
}

int fxdb_team_effective_quota(fxdb_store *st, const char *team, fxdb_quota *q, char *err,
                              size_t errlen)
{
    if (!team || !q)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "store: team_effective_quota: missing argument");
    memset(q, 0, sizeof *q);
    team_op o = { .name = team, .quota = q };
    return fxdb__read(st, effective_fn, &o, err, errlen);
}

/* need more on top of used past max (0: no limit)? */
static bool exceeds(uint64_t max, uint64_t used, uint64_t need)
{
    return max && (used > max || need > max - used);
}

int fxdb__quota_check(fxdb_store *st, const char *key, bool new_model, uint64_t weight_bytes,
                      uint64_t dataset_bytes, char *err, size_t errlen)
{
    char team[FXP_TEAM_MAX + 1];
    fxdb__key_team(key, team, sizeof team);
    fxdb_quota q;
    int rc = effective_locked(st, team, &q, err, errlen);
    if (rc)
        return rc;
    if (!q.max_models && !q.max_weight_bytes && !q.max_dataset_bytes)
        return 0;
    fxdb_usage u;
    if ((rc = usage_locked(st, team, &u, err, errlen)))
        return rc;
    if (new_model && exceeds(q.max_models, u.models, 1))
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "team '%s' models quota: %" PRIu64
                        " %s allowed, %" PRIu64 " exist", team, q.max_models,
                        q.max_models == 1 ? "model" : "models", u.models);
    if (weight_bytes && exceeds(q.max_weight_bytes, u.weight_bytes, weight_bytes))
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "team '%s' weights quota: %" PRIu64
                        " bytes allowed, %" PRIu64 " used, this %s needs %" PRIu64, team,
                        q.max_weight_bytes, u.weight_bytes, new_model ? "model" : "version",
                        weight_bytes);
    if (dataset_bytes && exceeds(q.max_dataset_bytes, u.dataset_bytes, dataset_bytes))
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "team '%s' datasets quota: %" PRIu64
                        " bytes allowed, %" PRIu64 " used, this dataset needs %" PRIu64, team,
                        q.max_dataset_bytes, u.dataset_bytes, dataset_bytes);
    return 0;
}
