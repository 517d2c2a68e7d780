/*
 * versions_tab.c - the life of a version (see store.h, docs/versions.md):
 * aliases (name -> version; 'production' is what serving uses), the
 * history of their moves (which rollback walks back), pins, retention and
 * deleting a version.
 *
 * Every change is one transaction: an alias and its history row commit
 * together, and a version added by a job moves production (or not) in the
 * transaction that stores it and finishes the job. Deleting versions
 * removes the rows first and the files after the commit, under the store's
 * mutex: a reader opens a version's file under the same mutex it finds the
 * row with (models_tab.c open_version), so it either holds the file open
 * before the delete (and reads it whole) or finds no row. A crash between
 * the commit and the unlink leaves files no row refers to, which the next
 * open removes (recovery.c).
 *
 * alias_history.undone: 0 a move rollback may walk back, 1 one it walked
 * back already, 2 a move that is never walked back (a rollback itself, a
 * deleted alias).
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/util.h"

#define HIST_WALKABLE 0
#define HIST_UNDONE 1
#define HIST_FINAL 2

bool fxdb_alias_name_ok(const char *alias, char *err, size_t errlen)
{
    size_t n = alias ? strlen(alias) : 0;
    bool ok = n >= 1 && n <= FXDB_ALIAS_MAX && alias[0] >= 'a' && alias[0] <= 'z';
    for (size_t i = 1; ok && i < n; i++) {
        char c = alias[i];
        ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    }
    if (!ok)
        fxu_seterr(err, errlen, "alias '%.64s' is not a valid alias name: 1 to %d of "
                   "[a-z0-9_-], starting with a letter", alias ? alias : "", FXDB_ALIAS_MAX);
    return ok;
}

/* ------------------------------------------------------------ reading */

void fxdb__free_version_meta(fxdb_model_rec *m)
{
    for (int i = 0; i < m->n_aliases; i++)
        free(m->aliases[i].name);
    free(m->aliases);
    for (int i = 0; i < m->n_history; i++) {
        free(m->history[i].alias);
        free(m->history[i].reason);
    }
    free(m->history);
    m->aliases = NULL;
    m->history = NULL;
    m->n_aliases = m->n_history = 0;
}

static char *dup_col(sqlite3_stmt *s, int col)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    return strdup(t ? t : "");
}

int fxdb__load_version_meta(fxdb_store *st, int64_t id, fxdb_model_rec *m, char *err,
                            size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT name, version, updated_ms FROM aliases WHERE model_id = ? "
                           "ORDER BY name", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    int r, cap = 0;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (m->n_aliases == cap) {
            cap = cap ? 2 * cap : 4;
            fxdb_alias_rec *na = realloc(m->aliases, (size_t)cap * sizeof *na);
            if (!na) {
                rc = fxu_oom(err, errlen);
                break;
            }
            m->aliases = na;
        }
        fxdb_alias_rec *a = &m->aliases[m->n_aliases];
        a->version = sqlite3_column_int64(s, 1);
        a->updated_ms = sqlite3_column_int64(s, 2);
        if (!(a->name = dup_col(s, 0))) {
            rc = fxu_oom(err, errlen);
            break;
        }
        m->n_aliases++;
        if (strcmp(a->name, FXDB_PRODUCTION) == 0)
            m->production = a->version;
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "reading aliases");
    sqlite3_finalize(s);
    if (rc)
        return rc;
    if ((rc = fxdb__prepare(st, "SELECT alias, from_version, to_version, at_ms, reason, undone "
                            "FROM alias_history WHERE model_id = ? ORDER BY id DESC LIMIT ?",
                            &s, err, errlen)))
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, FXDB_HISTORY_SHOWN);
    m->history = calloc(FXDB_HISTORY_SHOWN, sizeof *m->history);
    if (!m->history)
        rc = fxu_oom(err, errlen);
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        fxdb_history_rec *h = &m->history[m->n_history++];
        h->alias = dup_col(s, 0);
        h->from_version = sqlite3_column_int64(s, 1);
        h->to_version = sqlite3_column_int64(s, 2);
        h->at_ms = sqlite3_column_int64(s, 3);
        h->reason = dup_col(s, 4);
        h->undone = sqlite3_column_int(s, 5) == HIST_UNDONE;
        if (!h->alias || !h->reason)
            rc = fxu_oom(err, errlen);
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "reading the alias history");
    sqlite3_finalize(s);
    return rc;
}

/* ------------------------------------------------- inside transactions */

/* The version an alias points to: 0 when the model has no such alias. */
static int alias_version(fxdb_store *st, int64_t model_id, const char *alias, int64_t *v,
                         char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT version FROM aliases WHERE model_id = ? AND name = ?", &s,
                           err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    sqlite3_bind_text(s, 2, alias, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    *v = r == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    if (r != SQLITE_ROW && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "reading an alias");
    sqlite3_finalize(s);
    return rc;
}

/* NOT_FOUND unless the model has the version, usable. */
static int check_usable(fxdb_store *st, int64_t model_id, const char *name, int64_t version,
                        char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT unusable FROM versions WHERE model_id = ? AND version = ?",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    sqlite3_bind_int64(s, 2, version);
    int r = sqlite3_step(s);
    if (r == SQLITE_DONE)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "model \"%s\" has no version %" PRId64, name,
                      version);
    else if (r == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        rc = fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "version %" PRId64 " of model \"%s\" "
                      "is unusable: %s", version, name, (const char *)sqlite3_column_text(s, 0));
    else if (r != SQLITE_ROW)
        rc = fxdb__fail(st, err, errlen, "reading a version");
    sqlite3_finalize(s);
    return rc;
}

static int add_history(fxdb_store *st, int64_t model_id, const char *alias, int64_t from,
                       int64_t to, const char *reason, int undone, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "INSERT INTO alias_history (model_id, alias, from_version, "
                           "to_version, at_ms, reason, undone) VALUES (?, ?, ?, ?, ?, ?, ?)", &s,
                           err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    sqlite3_bind_text(s, 2, alias, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, from);
    sqlite3_bind_int64(s, 4, to);
    sqlite3_bind_int64(s, 5, fxu_now_ms());
    sqlite3_bind_text(s, 6, reason ? reason : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 7, undone);
    if ((rc = fxdb__step_done(st, s, "recording an alias move", err, errlen)))
        return rc;
    if ((rc = fxdb__prepare(st, "DELETE FROM alias_history WHERE model_id = ?1 AND id <= "
                             "(SELECT id FROM alias_history WHERE model_id = ?1 "
                             "ORDER BY id DESC LIMIT 1 OFFSET ?2)", &s, err, errlen)))
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    sqlite3_bind_int(s, 2, FXDB_HISTORY_KEPT);
    return fxdb__step_done(st, s, "pruning the alias history", err, errlen);
}

/* alias -> to (a version row that exists), with its history row; a move to
 * where it points already records nothing. */
static int move_alias(fxdb_store *st, int64_t model_id, const char *alias, int64_t to,
                      const char *reason, int undone, int64_t *prev, char *err, size_t errlen)
{
    int64_t from = 0;
    int rc = alias_version(st, model_id, alias, &from, err, errlen);
    if (prev)
        *prev = from;
    if (rc || from == to)
        return rc;
    sqlite3_stmt *s;
    if ((rc = fxdb__prepare(st, "INSERT OR REPLACE INTO aliases (model_id, name, version, "
                            "updated_ms) VALUES (?, ?, ?, ?)", &s, err, errlen)))
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    sqlite3_bind_text(s, 2, alias, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, to);
    sqlite3_bind_int64(s, 4, fxu_now_ms());
    if ((rc = fxdb__step_done(st, s, "moving an alias", err, errlen)))
        return rc;
    return add_history(st, model_id, alias, from, to, reason, undone, err, errlen);
}

int fxdb__settle_version(fxdb_store *st, int64_t model_id, int64_t version, const fxdb__vopts *o,
                         char *err, size_t errlen)
{
    const fxdb_gate *g = o->gate;
    sqlite3_stmt *s;
    int rc = 0;
    if (g && g->metric_name && *g->metric_name &&
        !(rc = fxdb__prepare(st, "UPDATE versions SET metric_name = ?, metric = ? "
                             "WHERE model_id = ? AND version = ?", &s, err, errlen))) {
        sqlite3_bind_text(s, 1, g->metric_name, -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 2, g->metric); /* SQLite stores NaN as NULL: no metric */
        sqlite3_bind_int64(s, 3, model_id);
        sqlite3_bind_int64(s, 4, version);
        rc = fxdb__step_done(st, s, "recording a version's metric", err, errlen);
    }
    if (rc)
        return rc;
    bool promote = o->promote;
    if (g && g->decide) {
        int64_t prod = 0;
        bool has = false;
        double cur = 0;
        char cur_name[64] = "";
        if ((rc = alias_version(st, model_id, FXDB_PRODUCTION, &prod, err, errlen)))
            return rc;
        if (prod > 0 &&
            !(rc = fxdb__prepare(st, "SELECT metric, metric_name FROM versions WHERE "
                                 "model_id = ? AND version = ?", &s, err, errlen))) {
            sqlite3_bind_int64(s, 1, model_id);
            sqlite3_bind_int64(s, 2, prod);
            if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
                has = true;
                cur = sqlite3_column_double(s, 0);
                snprintf(cur_name, sizeof cur_name, "%s",
                         (const char *)sqlite3_column_text(s, 1));
            }
            sqlite3_finalize(s);
        }
        if (!rc)
            rc = g->decide(g->ctx, prod, cur_name, has, cur, &promote, err, errlen);
        if (rc)
            return rc;
    }
    if (!promote)
        return 0;
    char reason[64];
    if (o->job_id > 0)
        snprintf(reason, sizeof reason, "job %" PRId64, o->job_id);
    else
        snprintf(reason, sizeof reason, "new version");
    return move_alias(st, model_id, FXDB_PRODUCTION, version, reason, HIST_WALKABLE, NULL, err,
                      errlen);
}

/* How many queued or running jobs of the model train from a version not
 * known yet (jobs.base_version 0: a row from before it was recorded). */
static int jobs_unknown_base(fxdb_store *st, int64_t model_id, int64_t *n, char *err,
                             size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT COUNT(*) FROM jobs j JOIN models m ON j.model = m.name "
                           "WHERE m.id = ? AND j.state IN ('QUEUED', 'RUNNING') "
                           "AND j.base_version = 0", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    if (sqlite3_step(s) == SQLITE_ROW)
        *n = sqlite3_column_int64(s, 0);
    else
        rc = fxdb__fail(st, err, errlen, "finding a model's jobs");
    sqlite3_finalize(s);
    return rc;
}

static int delete_row(fxdb_store *st, int64_t model_id, int64_t version, char *err,
                      size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "DELETE FROM versions WHERE model_id = ? AND version = ?", &s, err,
                           errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    sqlite3_bind_int64(s, 2, version);
    return fxdb__step_done(st, s, "deleting a version", err, errlen);
}

int fxdb__retain(fxdb_store *st, int64_t model_id, int64_t **dropped, int *n, char *err,
                 size_t errlen)
{
    free(*dropped); /* a repeated transaction (fxdb__tx_freeing) starts over */
    *dropped = NULL;
    *n = 0;
    int64_t keep = 0, jobs = 0;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT keep_last FROM models WHERE id = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    if (sqlite3_step(s) == SQLITE_ROW)
        keep = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    /* the versions queued or running jobs train from stay; a job whose
     * version is not known keeps them all until it has finished (the next
     * version added applies retention) */
    if (keep <= 0 || (rc = jobs_unknown_base(st, model_id, &jobs, err, errlen)) || jobs > 0)
        return rc;
    /* and so does the canary's (SetCanary; its record names it) */
    int64_t canary = 0;
    if ((rc = fxdb__canary_of(st, model_id, &canary, err, errlen)))
        return rc;
    if ((rc = fxdb__prepare(st, "SELECT version FROM versions v WHERE model_id = ?1 "
                            "AND pinned = 0 AND version != ?3 AND version NOT IN "
                            "(SELECT version FROM aliases WHERE model_id = ?1) "
                            "AND version NOT IN (SELECT j.base_version FROM jobs j "
                            "JOIN models m ON j.model = m.name WHERE m.id = ?1 "
                            "AND j.state IN ('QUEUED', 'RUNNING')) "
                            "AND version NOT IN (SELECT version FROM versions "
                            "WHERE model_id = ?1 ORDER BY version DESC LIMIT ?2)",
                            &s, err, errlen)))
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    sqlite3_bind_int64(s, 2, keep);
    sqlite3_bind_int64(s, 3, canary);
    int cap = 0, r;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            int64_t *nd = realloc(*dropped, (size_t)cap * sizeof *nd);
            if (!nd) {
                rc = fxu_oom(err, errlen);
                break;
            }
            *dropped = nd;
        }
        (*dropped)[(*n)++] = sqlite3_column_int64(s, 0);
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "applying retention");
    sqlite3_finalize(s);
    for (int i = 0; !rc && i < *n; i++)
        rc = delete_row(st, model_id, (*dropped)[i], err, errlen);
    return rc;
}

void fxdb__remove_version_files(fxdb_store *st, const char *name, const int64_t *dropped, int n)
{
    for (int i = 0; i < n; i++) {
        char *path = fxdb__weights_path(st, name, dropped[i]);
        if (path && unlink(path) != 0)
            fxdb__log(FXL_WARN, "cannot remove a version's weights path=%s", path);
        else if (path)
            fxdb__log(FXL_INFO, "version deleted model=%s version=%" PRId64, name, dropped[i]);
        free(path);
    }
    if (n > 0) {
        char *dir = fxdb__model_dir(st, name);
        if (dir)
            fxu_fsync_dir(dir, NULL, 0);
        free(dir);
    }
}

/* --------------------------------------------------------- operations */

typedef struct {
    const char *name, *alias, *reason;
    int64_t version;    /* set, pin, delete: the version */
    bool pinned;
    uint32_t keep_last;
    int64_t from, to;   /* out */
    int64_t *dropped;   /* versions whose files go after the commit */
    int n_dropped;
} op;

static int set_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    op *o = ctx;
    int64_t id;
    int rc = fxdb__model_id(st, o->name, &id, err, errlen);
    if (!rc)
        rc = check_usable(st, id, o->name, o->version, err, errlen);
    if (!rc)
        rc = move_alias(st, id, o->alias, o->version, o->reason, HIST_WALKABLE, &o->from, err,
                        errlen);
    return rc;
}

static int check_args(fxdb_store *st, const char *name, const char *alias, char *err,
                      size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
    if (!rc && alias && !fxdb_alias_name_ok(alias, err, errlen))
        rc = FXS_INVALID_ARGUMENT;
    return rc;
}

int fxdb_alias_set(fxdb_store *st, const char *name, const char *alias, int64_t version,
                   const char *reason, int64_t *previous, char *err, size_t errlen)
{
    int rc = check_args(st, name, alias, err, errlen);
    if (rc)
        return rc;
    if (version <= 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "version %" PRId64 " is not a version "
                        "number (1, 2, ...)", version);
    op o = { .name = name, .alias = alias, .version = version, .reason = reason };
    rc = fxdb__tx(st, set_fn, &o, err, errlen);
    if (!rc && previous)
        *previous = o.from;
    return rc;
}

static int delete_alias_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    op *o = ctx;
    int64_t id, v = 0;
    int rc = fxdb__model_id(st, o->name, &id, err, errlen);
    if (!rc)
        rc = alias_version(st, id, o->alias, &v, err, errlen);
    if (!rc && v == 0)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "model \"%s\" has no alias '%s'", o->name,
                      o->alias);
    sqlite3_stmt *s;
    if (!rc && !(rc = fxdb__prepare(st, "DELETE FROM aliases WHERE model_id = ? AND name = ?", &s,
                                    err, errlen))) {
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_text(s, 2, o->alias, -1, SQLITE_STATIC);
        rc = fxdb__step_done(st, s, "deleting an alias", err, errlen);
    }
    if (!rc)
        rc = add_history(st, id, o->alias, v, 0, "alias deleted", HIST_FINAL, err, errlen);
    return rc;
}

int fxdb_alias_delete(fxdb_store *st, const char *name, const char *alias, char *err,
                      size_t errlen)
{
    int rc = check_args(st, name, alias, err, errlen);
    if (rc)
        return rc;
    if (strcmp(alias, FXDB_PRODUCTION) == 0)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "the alias '%s' is the version "
                        "served and cannot be deleted; promote another version instead",
                        FXDB_PRODUCTION);
    op o = { .name = name, .alias = alias };
    return fxdb__tx(st, delete_alias_fn, &o, err, errlen);
}

static int get_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    op *o = ctx;
    int64_t id;
    int rc = fxdb__model_id(st, o->name, &id, err, errlen);
    if (!rc)
        rc = alias_version(st, id, o->alias, &o->to, err, errlen);
    if (!rc && o->to == 0)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "model '%s' has no alias '%s'", o->name,
                      o->alias);
    return rc;
}

int fxdb_alias_get(fxdb_store *st, const char *name, const char *alias, int64_t *version,
                   char *err, size_t errlen)
{
    int rc = check_args(st, name, alias, err, errlen);
    if (rc)
        return rc;
    op o = { .name = name, .alias = alias };
    rc = fxdb__read(st, get_fn, &o, err, errlen);
    *version = rc ? 0 : o.to;
    return rc;
}

static int rollback_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    op *o = ctx;
    int64_t id, cur = 0;
    int rc = fxdb__model_id(st, o->name, &id, err, errlen);
    if (!rc)
        rc = alias_version(st, id, o->alias, &cur, err, errlen);
    if (rc)
        return rc;
    sqlite3_stmt *s;
    if ((rc = fxdb__prepare(st, "SELECT id, from_version, to_version FROM alias_history "
                            "WHERE model_id = ? AND alias = ? AND undone = 0 "
                            "ORDER BY id DESC LIMIT 1", &s, err, errlen)))
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_text(s, 2, o->alias, -1, SQLITE_STATIC);
    int64_t hid = 0, from = 0, to = 0;
    if (sqlite3_step(s) == SQLITE_ROW) {
        hid = sqlite3_column_int64(s, 0);
        from = sqlite3_column_int64(s, 1);
        to = sqlite3_column_int64(s, 2);
    }
    sqlite3_finalize(s);
    if (hid == 0 || from == 0 || to != cur)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "model '%s': the alias '%s' "
                        "(version %" PRId64 ") has no earlier version to roll back to", o->name,
                        o->alias, cur);
    if ((rc = check_usable(st, id, o->name, from, err, errlen)))
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "model '%s': cannot roll '%s' back "
                        "to version %" PRId64 ": %s", o->name, o->alias, from,
                        rc == FXS_NOT_FOUND ? "it was deleted" : "it is unusable");
    if (!(rc = fxdb__prepare(st, "UPDATE alias_history SET undone = 1 WHERE id = ?", &s, err,
                             errlen))) {
        sqlite3_bind_int64(s, 1, hid);
        rc = fxdb__step_done(st, s, "recording a rollback", err, errlen);
    }
    if (!rc)
        rc = move_alias(st, id, o->alias, from, "rollback", HIST_FINAL, NULL, err, errlen);
    o->from = cur;
    o->to = from;
    return rc;
}

int fxdb_alias_rollback(fxdb_store *st, const char *name, const char *alias, int64_t *from,
                        int64_t *to, char *err, size_t errlen)
{
    int rc = check_args(st, name, alias, err, errlen);
    if (rc)
        return rc;
    op o = { .name = name, .alias = alias };
    rc = fxdb__tx(st, rollback_fn, &o, err, errlen);
    if (!rc && from)
        *from = o.from;
    if (!rc && to)
        *to = o.to;
    return rc;
}

static int pin_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    op *o = ctx;
    int64_t id;
    int rc = fxdb__model_id(st, o->name, &id, err, errlen);
    sqlite3_stmt *s;
    if (!rc && !(rc = fxdb__prepare(st, "UPDATE versions SET pinned = ? WHERE model_id = ? AND "
                                    "version = ?", &s, err, errlen))) {
        sqlite3_bind_int(s, 1, o->pinned ? 1 : 0);
        sqlite3_bind_int64(s, 2, id);
        sqlite3_bind_int64(s, 3, o->version);
        rc = fxdb__step_done(st, s, "pinning a version", err, errlen);
    }
    if (!rc && sqlite3_changes(st->db) == 0)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "model \"%s\" has no version %" PRId64, o->name,
                      o->version);
    return rc;
}

int fxdb_version_pin(fxdb_store *st, const char *name, int64_t version, bool pinned, char *err,
                     size_t errlen)
{
    int rc = check_args(st, name, NULL, err, errlen);
    if (rc)
        return rc;
    if (version <= 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "version %" PRId64 " is not a version "
                        "number (1, 2, ...)", version);
    op o = { .name = name, .version = version, .pinned = pinned };
    return fxdb__tx(st, pin_fn, &o, err, errlen);
}

static int retention_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    op *o = ctx;
    int64_t id;
    int rc = fxdb__model_id(st, o->name, &id, err, errlen);
    sqlite3_stmt *s;
    if (!rc && !(rc = fxdb__prepare(st, "UPDATE models SET keep_last = ? WHERE id = ?", &s, err,
                                    errlen))) {
        sqlite3_bind_int64(s, 1, o->keep_last);
        sqlite3_bind_int64(s, 2, id);
        rc = fxdb__step_done(st, s, "setting retention", err, errlen);
    }
    if (!rc)
        rc = fxdb__retain(st, id, &o->dropped, &o->n_dropped, err, errlen);
    return rc;
}

/* The ids in the message: enough to act on, bounded. */
#define MAX_NAMED_JOBS 10

/* FAILED_PRECONDITION naming the queued or running jobs that train from
 * the version (or from one not known yet: rows from before
 * jobs.base_version, which training/ fills when it starts). */
static int refuse_if_jobs_train_from(fxdb_store *st, const op *o, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT id FROM jobs WHERE model = ? AND state IN ('QUEUED', "
                           "'RUNNING') AND base_version IN (?, 0) ORDER BY id", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, o->version);
    char ids[MAX_NAMED_JOBS * 24 + 32] = "";
    size_t used = 0;
    int n = 0, r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (n < MAX_NAMED_JOBS)
            used += (size_t)snprintf(ids + used, sizeof ids - used, "%s%" PRId64, n ? ", " : "",
                                     (int64_t)sqlite3_column_int64(s, 0));
        n++;
    }
    if (r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "finding the jobs that train from a version");
    sqlite3_finalize(s);
    if (rc || n == 0)
        return rc;
    if (n > MAX_NAMED_JOBS)
        snprintf(ids + used, sizeof ids - used, " and %d more", n - MAX_NAMED_JOBS);
    return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "version %" PRId64 " of model '%s' is "
                    "used by queued or running training job%s %s; cancel %s (or wait until %s "
                    "finished) first", o->version, o->name, n == 1 ? "" : "s", ids,
                    n == 1 ? "it" : "them", n == 1 ? "it has" : "they have");
}

static int delete_version_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    op *o = ctx;
    o->n_dropped = 0;
    int64_t id;
    int rc = fxdb__model_id(st, o->name, &id, err, errlen);
    sqlite3_stmt *s;
    if (rc || (rc = fxdb__prepare(st, "SELECT pinned FROM versions WHERE model_id = ? AND "
                                  "version = ?", &s, err, errlen)))
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, o->version);
    int r = sqlite3_step(s);
    bool pinned = r == SQLITE_ROW && sqlite3_column_int(s, 0) != 0;
    sqlite3_finalize(s);
    if (r != SQLITE_ROW)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "model \"%s\" has no version %" PRId64,
                        o->name, o->version);
    /* the aliases that point to it, named in the message */
    char names[512] = "";
    size_t used = 0;
    bool served = false;
    if ((rc = fxdb__prepare(st, "SELECT name FROM aliases WHERE model_id = ? AND version = ? "
                            "ORDER BY name", &s, err, errlen)))
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, o->version);
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(s, 0);
        served |= strcmp(a, FXDB_PRODUCTION) == 0;
        if (used < sizeof names - 40)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s'%s'", used ? ", " : "",
                                     a);
    }
    sqlite3_finalize(s);
    if (served)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "version %" PRId64 " of model '%s' "
                        "is served (alias 'production'); promote another version first",
                        o->version, o->name);
    if (used)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "version %" PRId64 " of model '%s' "
                        "is aliased as %s; move or delete the alias first", o->version, o->name,
                        names);
    if (pinned)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "version %" PRId64 " of model '%s' "
                        "is pinned; unpin it first", o->version, o->name);
    int64_t canary = 0;
    if ((rc = fxdb__canary_of(st, id, &canary, err, errlen)))
        return rc;
    if (canary == o->version)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "version %" PRId64 " of model '%s' "
                        "is the canary; turn the canary off or set it to another version first",
                        o->version, o->name);
    if ((rc = refuse_if_jobs_train_from(st, o, err, errlen)))
        return rc;
    if ((rc = delete_row(st, id, o->version, err, errlen)))
        return rc;
    o->n_dropped = 1;
    return 0;
}

/* One transaction that may drop versions, then their files (see the top). */
static int tx_dropping(fxdb_store *st, fxdb__fn fn, op *o, char *err, size_t errlen)
{
    pthread_mutex_lock(&st->mu);
    int rc = fxdb__tx_freeing(st, fn, o, err, errlen); /* works on a full disk */
    if (!rc) {
        fxdb__remove_version_files(st, o->name, o->dropped, o->n_dropped);
        fxdb__reserve_ensure(st, NULL, 0);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fxdb_model_set_retention(fxdb_store *st, const char *name, uint32_t keep_last,
                             int *dropped, char *err, size_t errlen)
{
    int rc = check_args(st, name, NULL, err, errlen);
    if (rc)
        return rc;
    if (keep_last > 1000000)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "keep_last %u is too large (at most "
                        "1000000; 0 keeps every version)", keep_last);
    op o = { .name = name, .keep_last = keep_last };
    rc = tx_dropping(st, retention_fn, &o, err, errlen);
    if (!rc && dropped)
        *dropped = o.n_dropped;
    free(o.dropped);
    return rc;
}

int fxdb_version_delete(fxdb_store *st, const char *name, int64_t version, char *err,
                        size_t errlen)
{
    int rc = check_args(st, name, NULL, err, errlen);
    if (rc)
        return rc;
    if (version <= 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "version %" PRId64 " is not a version "
                        "number (1, 2, ...)", version);
    op o = { .name = name, .version = version, .dropped = &o.version };
    return tx_dropping(st, delete_version_fn, &o, err, errlen);
}
