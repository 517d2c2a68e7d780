/*
 * datasets_tab.c - the datasets table (see store.h): one row per dataset,
 * its record a packed fluxion.v1.Dataset, its name a key "team/name", its
 * team and the size of its files (for the quota) in columns. datasets/ owns the shard files
 * and moves them in and out of place through the hooks, inside the same
 * transaction as the row.
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <stdlib.h>
#include <string.h>

#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"

typedef struct {
    const char *name;     /* a key */
    const char *team;     /* list: "" for all */
    const void *info;     /* insert: in */
    size_t len;
    uint64_t bytes;       /* insert: the size of the dataset's files */
    int64_t created_ms;
    fxdb_hook hook;
    void *hook_ctx;
    void **out;           /* get, delete: the record */
    size_t *out_len;
    fxdb_row *rows;       /* list */
    int n;
} ds_op;

static int get_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    ds_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT info FROM datasets WHERE name = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->name, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        if (o->out) {
            free(*o->out); /* from an earlier try of a delete's transaction */
            *o->out = NULL;
            rc = fxdb__column_blob(s, 0, o->out, o->out_len, err, errlen);
        }
    } else if (r == SQLITE_DONE) {
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "no dataset named '%s'", o->name);
    } else {
        rc = fxdb__fail(st, err, errlen, "reading a dataset");
    }
    sqlite3_finalize(s);
    return rc;
}

int fxdb_dataset_get(fxdb_store *st, const char *name, void **info, size_t *len, char *err,
                     size_t errlen)
{
    if (!name || !info || !len)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: dataset_get: missing argument");
    *info = NULL;
    *len = 0;
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    ds_op o = { .name = name, .out = info, .out_len = len };
    return fxdb__read(st, get_fn, &o, err, errlen);
}

static int list_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    ds_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT name, info FROM datasets WHERE ?1 = '' OR team = ?1 "
                               "ORDER BY name", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->team, -1, SQLITE_STATIC);
    int r = SQLITE_DONE, cap = 0;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        fxdb_row *row = fxdb__rows_add(&o->rows, &o->n, &cap);
        if (!row || !(row->name = strdup((const char *)sqlite3_column_text(s, 0))))
            rc = fxu_oom(err, errlen);
        else
            rc = fxdb__column_blob(s, 1, &row->blob, &row->len, err, errlen);
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "listing datasets");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_dataset_list(fxdb_store *st, const char *team, fxdb_row **rows, int *n, char *err,
                      size_t errlen)
{
    if (!rows || !n)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: dataset_list: missing argument");
    ds_op o = { .team = team ? team : "" };
    int rc = fxdb__read(st, list_fn, &o, err, errlen);
    if (rc) {
        fxdb_rows_free(o.rows, o.n);
        o.rows = NULL;
        o.n = 0;
    }
    *rows = o.rows;
    *n = o.n;
    return rc;
}

static int insert_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    ds_op *o = ctx;
    /* the team exists (NOT_FOUND otherwise) and has room for the files */
    int rc = fxdb__quota_check(st, o->name, false, 0, o->bytes, err, errlen);
    if (!rc && o->hook)
        rc = o->hook(o->hook_ctx, err, errlen);
    if (rc)
        return rc;
    sqlite3_stmt *s;
    if ((rc = fxdb__prepare(st, "INSERT INTO datasets (name, info, created_ms, team, bytes) "
                                "VALUES (?, ?, ?, ?, ?)", &s, err, errlen)))
        return rc;
    char team[FXP_TEAM_MAX + 1];
    fxdb__key_team(o->name, team, sizeof team);
    sqlite3_bind_text(s, 1, o->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, o->len ? o->info : "", (int)o->len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, o->created_ms);
    sqlite3_bind_text(s, 4, team, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, (int64_t)o->bytes);
    int r = sqlite3_step(s);
    if ((r & 0xff) == SQLITE_CONSTRAINT)
        rc = fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "a dataset named '%s' already exists",
                      o->name);
    else if (r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "adding a dataset");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_dataset_insert(fxdb_store *st, const char *name, const void *info, size_t len,
                        uint64_t bytes, int64_t created_ms, fxdb_hook place, void *ctx,
                        char *err, size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    if ((!info && len) || len > INT32_MAX || bytes > INT64_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: a dataset record of %zu bytes",
                        len);
    ds_op o = { .name = name, .info = info, .len = len, .bytes = bytes, .created_ms = created_ms,
                .hook = place, .hook_ctx = ctx };
    pthread_mutex_lock(&st->mu);
    rc = fxdb__reserve_ensure(st, err, errlen);
    if (!rc)
        rc = fxdb__tx_locked(st, insert_fn, &o, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

static int delete_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    ds_op *o = ctx;
    int rc = get_fn(st, ctx, err, errlen);
    if (!rc)
        rc = fxdb__refuse_if_jobs_use(st, "dataset", o->name, err, errlen);
    if (!rc && o->hook)
        rc = o->hook(o->hook_ctx, err, errlen);
    sqlite3_stmt *s;
    if (!rc && !(rc = fxdb__prepare(st, "DELETE FROM datasets WHERE name = ?", &s, err, errlen))) {
        sqlite3_bind_text(s, 1, o->name, -1, SQLITE_STATIC);
        rc = fxdb__step_done(st, s, "deleting a dataset", err, errlen);
    }
    return rc;
}

int fxdb_dataset_delete(fxdb_store *st, const char *name, fxdb_hook unplace, void *ctx,
                        void **info, size_t *len, char *err, size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    void *rec = NULL;
    size_t rec_len = 0;
    ds_op o = { .name = name, .hook = unplace, .hook_ctx = ctx, .out = &rec,
                .out_len = &rec_len };
    pthread_mutex_lock(&st->mu);
    rc = fxdb__tx_freeing(st, delete_fn, &o, err, errlen); /* works on a full disk */
    pthread_mutex_unlock(&st->mu);
    if (!rc && info) {
        *info = rec;
        *len = rec_len;
    } else {
        free(rec);
    }
    return rc;
}
