/*
 * auth_tab.c - the tokens, cert_principals and settings tables (see
 * store.h). auth/ is their only writer; it keeps them in memory and calls
 * here to make each change durable. A token row holds the SHA-256 of the
 * secret, never the secret.
 *
 * "auth" = "on" is written in the transaction that creates the first
 * principal (token or certificate) and never turned off: a daemon that once
 * had principals must not fall back to local mode because the last one was
 * revoked or its team deleted.
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"

static char *dup_col(sqlite3_stmt *s, int col)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    return strdup(t ? t : "");
}

static int role_ok(const char *role, char *err, size_t errlen)
{
    if (!role || fxp_role_from_name(role) == FXP_ROLE_NONE)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "role '%s' is not one of viewer, "
                        "member, admin", role ? role : "");
    return 0;
}

static int put_setting(fxdb_store *st, const char *key, const char *value, char *err,
                       size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", &s,
                           err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
    return fxdb__step_done(st, s, "writing a setting", err, errlen);
}

/* -------------------------------------------------------------- tokens */

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
    const fxdb_token_rec *tok;
    const fxdb_cert_rec *cert;
    int64_t id, when;
    const char *key, *value;
    char **out_value;
    fxdb_token_rec *tokens;
    fxdb_cert_rec *certs;
    int n;
} auth_op;

static int token_insert_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    auth_op *o = ctx;
    const fxdb_token_rec *t = o->tok;
    int rc = fxdb__team_exists(st, t->team, err, errlen);
    int64_t other;
    if (!rc) {
        sqlite3_stmt *q;
        if ((rc = fxdb__prepare(st, "SELECT id FROM tokens WHERE team = ? AND name = ? AND "
                                    "revoked_ms = 0", &q, err, errlen)))
            return rc;
        sqlite3_bind_text(q, 1, t->team, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, t->name, -1, SQLITE_STATIC);
        int r = sqlite3_step(q);
        other = r == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
        if (r != SQLITE_ROW && r != SQLITE_DONE)
            rc = fxdb__fail(st, err, errlen, "finding a token");
        sqlite3_finalize(q);
        if (!rc && other)
            return fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "team '%s' already has a token "
                            "named '%s' (id %" PRId64 "); revoke it first or choose another name",
                            t->team, t->name, other);
    }
    sqlite3_stmt *s;
    if (rc || (rc = fxdb__prepare(st, "INSERT INTO tokens (team, name, role, hash, created_ms, "
                                      "expires_ms, last_used_ms, revoked_ms, created_by) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)", &s, err, errlen)))
        return rc;
    sqlite3_bind_text(s, 1, t->team, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, t->role, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, t->hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, t->created_ms ? t->created_ms : fxu_now_ms());
    sqlite3_bind_int64(s, 6, t->expires_ms);
    sqlite3_bind_int64(s, 7, t->last_used_ms);
    sqlite3_bind_text(s, 8, t->created_by ? t->created_by : "", -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if ((r & 0xff) == SQLITE_CONSTRAINT) /* the name was checked: the hash is taken */
        rc = fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "a token with the same secret already "
                      "exists");
    else if (r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "adding a token");
    sqlite3_finalize(s);
    o->id = sqlite3_last_insert_rowid(st->db);
    return rc ? rc : put_setting(st, "auth", "on", err, errlen);
}

int fxdb_token_insert(fxdb_store *st, const fxdb_token_rec *t, int64_t *id, char *err,
                      size_t errlen)
{
    if (!t || !t->team || !t->name)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: token_insert: missing argument");
    char e[256];
    if (!fxdb_model_name_ok(t->name, e, sizeof e)) /* "model name ..." -> "token name ..." */
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "token %s", e + strlen("model "));
    if (!fxp_team_name_ok(t->team, NULL, 0))
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "team '%s' not found", t->team);
    int rc = role_ok(t->role, err, errlen);
    if (rc)
        return rc;
    auth_op o = { .tok = t };
    rc = fxdb__tx(st, token_insert_fn, &o, err, errlen);
    if (!rc && id)
        *id = o.id;
    return rc;
}

static int token_list_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    auth_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT id, team, name, role, hash, created_ms, expires_ms, "
                               "last_used_ms, revoked_ms, created_by FROM tokens ORDER BY id",
                           &s, err, errlen);
    if (rc)
        return rc;
    int cap = 0, r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (o->n == cap) {
            cap = cap ? 2 * cap : 16;
            fxdb_token_rec *nt = realloc(o->tokens, (size_t)cap * sizeof *nt);
            if (!nt) {
                rc = fxu_oom(err, errlen);
                break;
            }
            o->tokens = nt;
        }
        fxdb_token_rec *t = &o->tokens[o->n++];
        memset(t, 0, sizeof *t);
        t->id = sqlite3_column_int64(s, 0);
        t->team = dup_col(s, 1);
        t->name = dup_col(s, 2);
        t->role = dup_col(s, 3);
        if (sqlite3_column_bytes(s, 4) == 32)
            memcpy(t->hash, sqlite3_column_blob(s, 4), 32);
        t->created_ms = sqlite3_column_int64(s, 5);
        t->expires_ms = sqlite3_column_int64(s, 6);
        t->last_used_ms = sqlite3_column_int64(s, 7);
        t->revoked_ms = sqlite3_column_int64(s, 8);
        t->created_by = dup_col(s, 9);
        if (!t->team || !t->name || !t->role || !t->created_by)
            rc = fxu_oom(err, errlen);
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "listing tokens");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_token_list(fxdb_store *st, fxdb_token_rec **out, int *n, char *err, size_t errlen)
{
    if (!out || !n)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: token_list: missing argument");
    auth_op o = { 0 };
    int rc = fxdb__read(st, token_list_fn, &o, err, errlen);
    if (rc) {
        fxdb_token_recs_free(o.tokens, o.n);
        o.tokens = NULL;
        o.n = 0;
    }
    *out = o.tokens;
    *n = o.n;
    return rc;
}

/* An UPDATE of token ?2 with ?1 = o->when; NOT_FOUND when there is no
 * such token. */
static int token_update(fxdb_store *st, auth_op *o, const char *sql, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT 1 FROM tokens WHERE id = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, o->id);
    int r = sqlite3_step(s);
    if (r == SQLITE_DONE)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "token %" PRId64 " not found", o->id);
    else if (r != SQLITE_ROW)
        rc = fxdb__fail(st, err, errlen, "finding a token");
    sqlite3_finalize(s);
    if (rc || (rc = fxdb__prepare(st, sql, &s, err, errlen)))
        return rc;
    sqlite3_bind_int64(s, 1, o->when);
    sqlite3_bind_int64(s, 2, o->id);
    return fxdb__step_done(st, s, "updating a token", err, errlen);
}

static int revoke_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    /* revoked twice: the first time stays */
    return token_update(st, ctx, "UPDATE tokens SET revoked_ms = ?1 WHERE id = ?2 AND "
                                 "revoked_ms = 0", err, errlen);
}

int fxdb_token_revoke(fxdb_store *st, int64_t id, int64_t revoked_ms, char *err, size_t errlen)
{
    auth_op o = { .id = id, .when = revoked_ms > 0 ? revoked_ms : fxu_now_ms() };
    return fxdb__tx(st, revoke_fn, &o, err, errlen);
}

static int touch_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    return token_update(st, ctx, "UPDATE tokens SET last_used_ms = MAX(last_used_ms, ?1) "
                                 "WHERE id = ?2", err, errlen);
}

int fxdb_token_touch(fxdb_store *st, int64_t id, int64_t last_used_ms, char *err, size_t errlen)
{
    auth_op o = { .id = id, .when = last_used_ms };
    return fxdb__tx(st, touch_fn, &o, err, errlen);
}

/* ------------------------------------------------------- certificates */

void fxdb_cert_recs_free(fxdb_cert_rec *c, int n)
{
    for (int i = 0; c && i < n; i++) {
        free(c[i].subject);
        free(c[i].team);
        free(c[i].role);
    }
    free(c);
}

static int cert_insert_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    auth_op *o = ctx;
    const fxdb_cert_rec *c = o->cert;
    int rc = fxdb__team_exists(st, c->team, err, errlen);
    sqlite3_stmt *s;
    if (rc || (rc = fxdb__prepare(st, "INSERT INTO cert_principals (subject, team, role, "
                                      "created_ms) VALUES (?, ?, ?, ?)", &s, err, errlen)))
        return rc;
    sqlite3_bind_text(s, 1, c->subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, c->team, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, c->role, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, c->created_ms ? c->created_ms : fxu_now_ms());
    int r = sqlite3_step(s);
    if ((r & 0xff) == SQLITE_CONSTRAINT)
        rc = fxu_fail(err, errlen, FXS_ALREADY_EXISTS, "certificate subject '%s' is already "
                      "mapped", c->subject);
    else if (r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "adding a certificate principal");
    sqlite3_finalize(s);
    return rc ? rc : put_setting(st, "auth", "on", err, errlen);
}

int fxdb_cert_insert(fxdb_store *st, const fxdb_cert_rec *c, char *err, size_t errlen)
{
    if (!c || !c->team)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: cert_insert: missing argument");
    if (!c->subject || !*c->subject)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "certificate subject is empty");
    if (!fxp_team_name_ok(c->team, NULL, 0))
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "team '%s' not found", c->team);
    int rc = role_ok(c->role, err, errlen);
    if (rc)
        return rc;
    auth_op o = { .cert = c };
    return fxdb__tx(st, cert_insert_fn, &o, err, errlen);
}

static int cert_list_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    auth_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT subject, team, role, created_ms FROM cert_principals "
                               "ORDER BY subject", &s, err, errlen);
    if (rc)
        return rc;
    int cap = 0, r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (o->n == cap) {
            cap = cap ? 2 * cap : 16;
            fxdb_cert_rec *nc = realloc(o->certs, (size_t)cap * sizeof *nc);
            if (!nc) {
                rc = fxu_oom(err, errlen);
                break;
            }
            o->certs = nc;
        }
        fxdb_cert_rec *c = &o->certs[o->n++];
        c->subject = dup_col(s, 0);
        c->team = dup_col(s, 1);
        c->role = dup_col(s, 2);
        c->created_ms = sqlite3_column_int64(s, 3);
        if (!c->subject || !c->team || !c->role)
            rc = fxu_oom(err, errlen);
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "listing certificate principals");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_cert_list(fxdb_store *st, fxdb_cert_rec **out, int *n, char *err, size_t errlen)
{
    if (!out || !n)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: cert_list: missing argument");
    auth_op o = { 0 };
    int rc = fxdb__read(st, cert_list_fn, &o, err, errlen);
    if (rc) {
        fxdb_cert_recs_free(o.certs, o.n);
        o.certs = NULL;
        o.n = 0;
    }
    *out = o.certs;
    *n = o.n;
    return rc;
}

static int cert_delete_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    auth_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "DELETE FROM cert_principals WHERE subject = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->key, -1, SQLITE_STATIC);
    rc = fxdb__step_done(st, s, "deleting a certificate principal", err, errlen);
    if (!rc && sqlite3_changes(st->db) == 0)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "certificate subject '%s' is not mapped",
                      o->key);
    return rc;
}

int fxdb_cert_delete(fxdb_store *st, const char *subject, char *err, size_t errlen)
{
    if (!subject)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: cert_delete: no subject");
    auth_op o = { .key = subject };
    return fxdb__tx(st, cert_delete_fn, &o, err, errlen);
}

/* ------------------------------------------------------------ settings */

static int setting_get_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    auth_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT value FROM settings WHERE key = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->key, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        if (!(*o->out_value = dup_col(s, 0)))
            rc = fxu_oom(err, errlen);
    } else if (r == SQLITE_DONE) {
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "no setting '%s'", o->key);
    } else {
        rc = fxdb__fail(st, err, errlen, "reading a setting");
    }
    sqlite3_finalize(s);
    return rc;
}

int fxdb_setting_get(fxdb_store *st, const char *key, char **value, char *err, size_t errlen)
{
    if (!key || !value)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: setting_get: missing argument");
    *value = NULL;
    auth_op o = { .key = key, .out_value = value };
    return fxdb__read(st, setting_get_fn, &o, err, errlen);
}

static int setting_put_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    auth_op *o = ctx;
    return put_setting(st, o->key, o->value, err, errlen);
}

int fxdb_setting_put(fxdb_store *st, const char *key, const char *value, char *err,
                     size_t errlen)
{
    if (!key || !*key || !value)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: setting_put: missing argument");
    auth_op o = { .key = key, .value = value };
    return fxdb__tx(st, setting_put_fn, &o, err, errlen);
}
