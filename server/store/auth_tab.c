/*
 * auth_tab.c - STUB written by helper H2 (branch h/auth) so that server/auth/
 * and its unit tests run before H1's store lands. It implements only what
 * auth/ calls: teams (create, get, delete), tokens, certificate principals,
 * settings. Its tables are created on first use (CREATE TABLE IF NOT EXISTS)
 * instead of by a migration, to stay out of db.c. The lead keeps H1's
 * auth_tab.c (and its migrations) and drops this file.
 *
 * Semantics assumed by auth/ (as in the plan): token rows are never deleted;
 * revoked_ms 0 means active; (team, name) is unique among active tokens and
 * the hash among all; fxdb_token_insert and fxdb_cert_insert set the setting
 * auth=on in their transaction; fxdb_team_delete revokes the team's tokens
 * (rows kept) and deletes its certificate principals.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"
#include "store/db.h"

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS teams (name TEXT PRIMARY KEY, display_name TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL, max_models INTEGER NOT NULL DEFAULT 0,"
    "  max_weight_bytes INTEGER NOT NULL DEFAULT 0, max_dataset_bytes INTEGER NOT NULL DEFAULT 0);"
    "INSERT OR IGNORE INTO teams (name, display_name, created_ms) VALUES ('default', 'default', 0);"
    "CREATE TABLE IF NOT EXISTS tokens (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  team TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, hash BLOB NOT NULL UNIQUE,"
    "  created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, last_used_ms INTEGER NOT NULL,"
    "  revoked_ms INTEGER NOT NULL, created_by TEXT NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS tokens_active ON tokens(team, name) WHERE revoked_ms = 0;"
    "CREATE TABLE IF NOT EXISTS cert_principals (subject TEXT PRIMARY KEY, team TEXT NOT NULL,"
    "  role TEXT NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/* Under st->mu. */
static int schema(fxdb_store *st, char *err, size_t errlen)
{
    return fxdb__exec(st, SCHEMA, err, errlen);
}

typedef int (*op_fn)(fxdb_store *st, void *ctx, char *err, size_t errlen);

static int run(fxdb_store *st, bool tx, op_fn fn, void *ctx, char *err, size_t errlen)
{
    if (!st)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: no store");
    pthread_mutex_lock(&st->mu);
    int rc = schema(st, err, errlen);
    if (!rc)
        rc = tx ? fxdb__tx_locked(st, fn, ctx, err, errlen) : fn(st, ctx, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

static char *col_text(sqlite3_stmt *s, int col)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    return strdup(t ? t : "");
}

static int team_exists(fxdb_store *st, const char *team, char *err, size_t errlen)
{
    int64_t one;
    int rc = fxdb__query_int(st, "SELECT 1 FROM teams WHERE name = ?", team, &one, err, errlen);
    if (rc == FXS_NOT_FOUND)
        fxu_seterr(err, errlen, "team '%s' not found", team);
    return rc;
}

static int auth_on(fxdb_store *st, char *err, size_t errlen)
{
    return fxdb__exec(st, "INSERT OR REPLACE INTO settings VALUES ('auth', 'on')", err, errlen);
}

/* ---------------------------------------------------------------- teams */

void fxdb_team_rec_free(fxdb_team_rec *t)
{
    if (!t)
        return;
    free(t->name);
    free(t->display_name);
    memset(t, 0, sizeof *t);
}

typedef struct {
    const char *name, *display;
    fxdb_team_rec *out;
} team_ctx;

static int team_create_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_ctx *c = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "INSERT INTO teams (name, display_name, created_ms) VALUES (?,?,?)",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, c->display ? c->display : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, fxu_now_ms());
    if (sqlite3_step(s) != SQLITE_DONE) {
        bool dup = sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_PRIMARYKEY;
        sqlite3_finalize(s);
        if (dup)
            return fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "team '%s' already exists", c->name);
        return fxdb__fail(st, err, errlen, "insert team");
    }
    sqlite3_finalize(s);
    return 0;
}

int fxdb_team_create(fxdb_store *st, const char *name, const char *display_name,
                     const fxdb_quota *q, char *err, size_t errlen)
{
    (void)q; /* stub: no quotas */
    team_ctx c = { name, display_name, NULL };
    return run(st, true, team_create_fn, &c, err, errlen);
}

static int team_get_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_ctx *c = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT name, display_name, created_ms FROM teams WHERE name = ?",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) {
        memset(c->out, 0, sizeof *c->out);
        c->out->name = col_text(s, 0);
        c->out->display_name = col_text(s, 1);
        c->out->created_ms = sqlite3_column_int64(s, 2);
    } else {
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "team '%s' not found", c->name);
    }
    sqlite3_finalize(s);
    return rc;
}

int fxdb_team_get(fxdb_store *st, const char *name, fxdb_team_rec *out, char *err, size_t errlen)
{
    team_ctx c = { name, NULL, out };
    return run(st, false, team_get_fn, &c, err, errlen);
}

static int team_delete_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    team_ctx *c = ctx;
    int rc = team_exists(st, c->name, err, errlen);
    sqlite3_stmt *s;
    const char *sql[] = { "UPDATE tokens SET revoked_ms = ? WHERE team = ? AND revoked_ms = 0",
                          "DELETE FROM cert_principals WHERE team = ? AND ? IS NOT NULL",
                          "DELETE FROM teams WHERE name = ? AND ? IS NOT NULL" };
    for (int i = 0; !rc && i < 3; i++) {
        rc = fxdb__prepare(st, sql[i], &s, err, errlen);
        if (rc)
            break;
        if (i == 0) {
            sqlite3_bind_int64(s, 1, fxu_now_ms());
            sqlite3_bind_text(s, 2, c->name, -1, SQLITE_STATIC);
        } else {
            sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
            sqlite3_bind_int(s, 2, 1);
        }
        rc = fxdb__step_done(st, s, "delete team", err, errlen);
    }
    return rc;
}

int fxdb_team_delete(fxdb_store *st, const char *name, char *err, size_t errlen)
{
    if (name && strcmp(name, "default") == 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "team 'default' cannot be deleted");
    team_ctx c = { name, NULL, NULL };
    return run(st, true, team_delete_fn, &c, err, errlen);
}

/* --------------------------------------------------------------- tokens */

void fxdb_token_recs_free(fxdb_token_rec *t, int n)
{
    for (int i = 0; t && i < n; i++) {
        free(t[i].team);
        free(t[i].name);
        free(t[i].role);
        free(t[i].created_by);
    }
    free(t);
}

typedef struct {
    const fxdb_token_rec *in;
    int64_t id;
    fxdb_token_rec *out;
    int n;
} token_ctx;

static int token_insert_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    token_ctx *c = ctx;
    const fxdb_token_rec *t = c->in;
    int rc = team_exists(st, t->team, err, errlen);
    if (rc)
        return rc;
    sqlite3_stmt *s;
    rc = fxdb__prepare(st, "SELECT 1 FROM tokens WHERE hash = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_blob(s, 1, t->hash, 32, SQLITE_STATIC);
    bool dup = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    if (dup)
        return fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "a token with this secret already exists");
    rc = fxdb__prepare(st, "INSERT INTO tokens (team, name, role, hash, created_ms, expires_ms,"
                           " last_used_ms, revoked_ms, created_by) VALUES (?,?,?,?,?,?,?,?,?)",
                       &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, t->team, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, t->role, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, t->hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, t->created_ms);
    sqlite3_bind_int64(s, 6, t->expires_ms);
    sqlite3_bind_int64(s, 7, t->last_used_ms);
    sqlite3_bind_int64(s, 8, t->revoked_ms);
    sqlite3_bind_text(s, 9, t->created_by ? t->created_by : "", -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) {
        dup = (sqlite3_extended_errcode(st->db) & 0xff) == SQLITE_CONSTRAINT;
        sqlite3_finalize(s);
        if (dup)
            return fxu_fail(err, errlen, FXS_ALREADY_EXISTS,
                            "team '%s' already has a token named '%s'", t->team, t->name);
        return fxdb__fail(st, err, errlen, "insert token");
    }
    sqlite3_finalize(s);
    c->id = sqlite3_last_insert_rowid(st->db);
    return auth_on(st, err, errlen);
}

int fxdb_token_insert(fxdb_store *st, const fxdb_token_rec *t, int64_t *id, char *err,
                      size_t errlen)
{
    token_ctx c = { .in = t };
    int rc = run(st, true, token_insert_fn, &c, err, errlen);
    if (!rc && id)
        *id = c.id;
    return rc;
}

static int token_list_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    token_ctx *c = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT id, team, name, role, hash, created_ms, expires_ms,"
                               " last_used_ms, revoked_ms, created_by FROM tokens ORDER BY id",
                           &s, err, errlen);
    if (rc)
        return rc;
    int cap = 0;
    while (!rc && sqlite3_step(s) == SQLITE_ROW) {
        if (c->n == cap) {
            cap = cap ? 2 * cap : 16;
            fxdb_token_rec *p = realloc(c->out, (size_t)cap * sizeof *p);
            if (!p) {
                rc = fxu_oom(err, errlen);
                break;
            }
            c->out = p;
        }
        fxdb_token_rec *t = &c->out[c->n++];
        memset(t, 0, sizeof *t);
        t->id = sqlite3_column_int64(s, 0);
        t->team = col_text(s, 1);
        t->name = col_text(s, 2);
        t->role = col_text(s, 3);
        if (sqlite3_column_bytes(s, 4) == 32)
            memcpy(t->hash, sqlite3_column_blob(s, 4), 32);
        t->created_ms = sqlite3_column_int64(s, 5);
        t->expires_ms = sqlite3_column_int64(s, 6);
        t->last_used_ms = sqlite3_column_int64(s, 7);
        t->revoked_ms = sqlite3_column_int64(s, 8);
        t->created_by = col_text(s, 9);
        if (!t->team || !t->name || !t->role || !t->created_by)
            rc = fxu_oom(err, errlen);
    }
    sqlite3_finalize(s);
    return rc;
}

int fxdb_token_list(fxdb_store *st, fxdb_token_rec **out, int *n, char *err, size_t errlen)
{
    token_ctx c = { 0 };
    int rc = run(st, false, token_list_fn, &c, err, errlen);
    if (rc) {
        fxdb_token_recs_free(c.out, c.n);
        return rc;
    }
    *out = c.out;
    *n = c.n;
    return 0;
}

typedef struct {
    int64_t id, ms;
    bool revoke;
} stamp_ctx;

static int token_stamp_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    stamp_ctx *c = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, c->revoke
                                   ? "UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms = 0"
                                   : "UPDATE tokens SET last_used_ms = max(last_used_ms, ?) WHERE id = ?",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, c->ms);
    sqlite3_bind_int64(s, 2, c->id);
    return fxdb__step_done(st, s, "update token", err, errlen);
}

static int token_exists(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    stamp_ctx *c = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT 1 FROM tokens WHERE id = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, c->id);
    rc = sqlite3_step(s) == SQLITE_ROW
             ? 0
             : fxu_fail(err, errlen, FXS_NOT_FOUND, "token %lld not found", (long long)c->id);
    sqlite3_finalize(s);
    return rc;
}

static int token_stamp(fxdb_store *st, int64_t id, int64_t ms, bool revoke, char *err,
                       size_t errlen)
{
    stamp_ctx c = { id, ms, revoke };
    int rc = run(st, false, token_exists, &c, err, errlen);
    return rc ? rc : run(st, true, token_stamp_fn, &c, err, errlen);
}

int fxdb_token_revoke(fxdb_store *st, int64_t id, int64_t revoked_ms, char *err, size_t errlen)
{
    return token_stamp(st, id, revoked_ms, true, err, errlen);
}

int fxdb_token_touch(fxdb_store *st, int64_t id, int64_t last_used_ms, char *err, size_t errlen)
{
    return token_stamp(st, id, last_used_ms, false, err, errlen);
}

/* ---------------------------------------------------------------- certs */

void fxdb_cert_recs_free(fxdb_cert_rec *c, int n)
{
    for (int i = 0; c && i < n; i++) {
        free(c[i].subject);
        free(c[i].team);
        free(c[i].role);
    }
    free(c);
}

typedef struct {
    const fxdb_cert_rec *in;
    const char *subject;
    fxdb_cert_rec *out;
    int n;
} cert_ctx;

static int cert_insert_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    cert_ctx *c = ctx;
    int rc = team_exists(st, c->in->team, err, errlen);
    if (rc)
        return rc;
    sqlite3_stmt *s;
    rc = fxdb__prepare(st, "INSERT INTO cert_principals VALUES (?,?,?,?)", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, c->in->subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, c->in->team, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, c->in->role, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, c->in->created_ms);
    if (sqlite3_step(s) != SQLITE_DONE) {
        bool dup = (sqlite3_extended_errcode(st->db) & 0xff) == SQLITE_CONSTRAINT;
        sqlite3_finalize(s);
        if (dup)
            return fxu_fail(err, errlen, FXS_ALREADY_EXISTS,
                            "certificate principal '%s' already exists", c->in->subject);
        return fxdb__fail(st, err, errlen, "insert certificate principal");
    }
    sqlite3_finalize(s);
    return auth_on(st, err, errlen);
}

int fxdb_cert_insert(fxdb_store *st, const fxdb_cert_rec *c, char *err, size_t errlen)
{
    cert_ctx x = { .in = c };
    return run(st, true, cert_insert_fn, &x, err, errlen);
}

static int cert_list_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    cert_ctx *c = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT subject, team, role, created_ms FROM cert_principals"
                               " ORDER BY subject", &s, err, errlen);
    int cap = 0;
    while (!rc && sqlite3_step(s) == SQLITE_ROW) {
        if (c->n == cap) {
            cap = cap ? 2 * cap : 16;
            fxdb_cert_rec *p = realloc(c->out, (size_t)cap * sizeof *p);
            if (!p) {
                rc = fxu_oom(err, errlen);
                break;
            }
            c->out = p;
        }
        fxdb_cert_rec *r = &c->out[c->n++];
        r->subject = col_text(s, 0);
        r->team = col_text(s, 1);
        r->role = col_text(s, 2);
        r->created_ms = sqlite3_column_int64(s, 3);
        if (!r->subject || !r->team || !r->role)
            rc = fxu_oom(err, errlen);
    }
    sqlite3_finalize(s);
    return rc;
}

int fxdb_cert_list(fxdb_store *st, fxdb_cert_rec **out, int *n, char *err, size_t errlen)
{
    cert_ctx c = { 0 };
    int rc = run(st, false, cert_list_fn, &c, err, errlen);
    if (rc) {
        fxdb_cert_recs_free(c.out, c.n);
        return rc;
    }
    *out = c.out;
    *n = c.n;
    return 0;
}

static int cert_delete_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    cert_ctx *c = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "DELETE FROM cert_principals WHERE subject = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, c->subject, -1, SQLITE_STATIC);
    rc = fxdb__step_done(st, s, "delete certificate principal", err, errlen);
    if (!rc && sqlite3_changes(st->db) == 0)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "certificate principal '%s' not found",
                      c->subject);
    return rc;
}

int fxdb_cert_delete(fxdb_store *st, const char *subject, char *err, size_t errlen)
{
    cert_ctx c = { .subject = subject };
    return run(st, true, cert_delete_fn, &c, err, errlen);
}

/* ------------------------------------------------------------- settings */

typedef struct {
    const char *key, *value;
    char *out;
} setting_ctx;

static int setting_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    setting_ctx *c = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, c->value ? "INSERT OR REPLACE INTO settings VALUES (?, ?)"
                                        : "SELECT value FROM settings WHERE key = ?",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, c->key, -1, SQLITE_STATIC);
    if (c->value) {
        sqlite3_bind_text(s, 2, c->value, -1, SQLITE_STATIC);
        return fxdb__step_done(st, s, "put setting", err, errlen);
    }
    if (sqlite3_step(s) == SQLITE_ROW)
        rc = (c->out = col_text(s, 0)) ? 0 : fxu_oom(err, errlen);
    else
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "setting '%s' not found", c->key);
    sqlite3_finalize(s);
    return rc;
}

int fxdb_setting_get(fxdb_store *st, const char *key, char **value, char *err, size_t errlen)
{
    setting_ctx c = { key, NULL, NULL };
    int rc = run(st, false, setting_fn, &c, err, errlen);
    if (!rc)
        *value = c.out;
    return rc;
}

int fxdb_setting_put(fxdb_store *st, const char *key, const char *value, char *err,
                     size_t errlen)
{
    setting_ctx c = { key, value ? value : "", NULL };
    return run(st, true, setting_fn, &c, err, errlen);
}
