/*
 * recovery.c - what opening the store does after a crash, and the file
 * helpers it shares with models_tab.c.
 *
 * Every write puts a file in place before the row that refers to it is
 * committed (models_tab.c), so a crash leaves at worst files no row refers
 * to: temporaries in tmp/ or next to the weights, and weights of a version
 * whose row was never committed. The weights are models/<team>/<name>/
 * v<N>.safetensors: the walk is two levels deep. Opening removes them (and logs each), then
 * checks every version's file.
 *
 * Unusable versions. Every version's file is checked (exists, size,
 * SHA-256); reads check size and SHA-256 again (models_tab.c). A version
 * that fails is logged and marked unusable (versions.unusable holds why)
 * instead of failing the open: the other models keep being served. The check
 * is redone at every open, so a file restored from a backup makes its
 * version usable again. Only verdicts that changed are written, so an open
 * with nothing to repair writes nothing (it must work on a full disk).
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/util.h"

/* --------------------------------------------------------------- files */

char *fxdb__model_dir(const fxdb_store *st, const char *name)
{
    return fxu_strf("%s/%s", st->models_dir, name);
}

char *fxdb__weights_path(const fxdb_store *st, const char *name, int64_t version)
{
    return fxu_strf("%s/%s/v%" PRId64 ".safetensors", st->models_dir, name, version);
}

bool fxdb__parse_weights_name(const char *fname, int64_t *version, bool *canonical)
{
    if (fname[0] != 'v')
        return false;
    const char *p = fname + 1;
    const char *digits = p;
    while (*p >= '0' && *p <= '9')
        p++;
    if (p == digits || strcmp(p, ".safetensors") != 0)
        return false;
    errno = 0;
    long long v = strtoll(digits, NULL, 10);
    char canon[64];
    snprintf(canon, sizeof canon, "v%lld.safetensors", v);
    *version = v;
    *canonical = errno == 0 && v >= 1 && strcmp(canon, fname) == 0;
    return true;
}

bool fxdb__is_temp_name(const char *fname)
{
    if (fname[0] != '.')
        return false;
    const char *t = strstr(fname, ".tmp.");
    if (!t || t == fname)
        return false;
    /* the last ".tmp." must be followed by exactly mkstemp's 6 characters */
    const char *last = t;
    while ((t = strstr(last + 1, ".tmp.")) != NULL)
        last = t;
    return strlen(last + 5) == 6;
}

int fxdb__each_entry(const char *dir, fxdb__entry_fn fn, void *ctx)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            rc = fn(dir, e->d_name, ctx);
    }
    closedir(d);
    return rc;
}

void fxdb__remove_file(const char *dir, const char *fname, const char *why)
{
    char *p = fxu_strf("%s/%s", dir, fname);
    if (!p)
        return;
    if (unlink(p) != 0)
        fxdb__log(FXL_WARN, "cannot remove a file (retried at the next start) path=%s "
                  "error=\"%s\"", p, strerror(errno));
    else if (why)
        fxdb__log(FXL_INFO, "removed a file path=%s reason=\"%s\"", p, why);
    free(p);
}

/* ------------------------------------------------------------- orphans */

#define CRASH_TEMP "temporary file left by a crash"

static int remove_any(const char *dir, const char *fname, void *ctx)
{
    fxdb__remove_file(dir, fname, CRASH_TEMP);
    return 0;
}

static int remove_if_temp(const char *dir, const char *fname, void *ctx)
{
    if (fxdb__is_temp_name(fname))
        fxdb__remove_file(dir, fname, CRASH_TEMP);
    return 0;
}

static int version_exists(fxdb_store *st, const char *model, int64_t version, bool *exists,
                          char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT 1 FROM versions v JOIN models m ON m.id = v.model_id "
                               "WHERE m.name = ? AND v.version = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, version);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW || r == SQLITE_DONE)
        *exists = r == SQLITE_ROW;
    else
        rc = fxdb__fail(st, err, errlen, "query");
    sqlite3_finalize(s);
    return rc;
}

typedef struct {
    fxdb_store *st;
    const char *model;
    char *err;
    size_t errlen;
} orphan_ctx;

/* An entry of models/<team>/<name>/ (c->model: the key): temporaries and
 * weights no row refers to go. */
static int remove_if_orphan(const char *dir, const char *fname, void *ctx)
{
    orphan_ctx *c = ctx;
    int64_t v;
    bool canonical, exists = false;
    int rc = 0;
    if (fxdb__is_temp_name(fname)) {
        fxdb__remove_file(dir, fname, CRASH_TEMP);
    } else if (fxdb__parse_weights_name(fname, &v, &canonical)) {
        if (canonical)
            rc = version_exists(c->st, c->model, v, &exists, c->err, c->errlen);
        if (!rc && !exists)
            fxdb__remove_file(dir, fname, "weights no version refers to");
    } else {
        fxdb__log(FXL_WARN, "leaving an unknown file path=%s/%s", dir, fname);
    }
    return rc;
}

/* An entry of models/<team>/: its orphans go, and the directory if it is
 * no model's and is left empty. */
static int remove_orphans_in(const char *team_dir, const char *fname, void *ctx)
{
    orphan_ctx c = *(orphan_ctx *)ctx;
    if (fxdb__is_temp_name(fname)) {
        fxdb__remove_file(team_dir, fname, CRASH_TEMP);
        return 0;
    }
    char *model = fxu_strf("%s/%s", c.model, fname); /* c.model: the team, here */
    if (!model)
        return fxu_oom(c.err, c.errlen);
    c.model = model;
    char *dir = fxdb__model_dir(c.st, model);
    if (!dir) {
        free(model);
        return fxu_oom(c.err, c.errlen);
    }
    int rc = fxdb__each_entry(dir, remove_if_orphan, &c);
    if (rc == -1) /* not a directory: not ours, leave it */
        rc = 0;
    int64_t id;
    if (!rc && fxdb__model_id(c.st, model, &id, NULL, 0) == FXS_NOT_FOUND && rmdir(dir) == 0)
        fxdb__log(FXL_INFO, "removed a directory path=%s reason=\"no such model\"", dir);
    free(dir);
    free(model);
    return rc;
}

/* An entry of models/: a team's directory (models/<team>/<name>/ are its
 * models); removed when left empty and no team has its name. */
static int remove_orphans_of_team(const char *models_dir, const char *team, void *ctx)
{
    orphan_ctx c = *(orphan_ctx *)ctx;
    if (fxdb__is_temp_name(team)) {
        fxdb__remove_file(models_dir, team, CRASH_TEMP);
        return 0;
    }
    c.model = team;
    char *dir = fxu_strf("%s/%s", models_dir, team);
    if (!dir)
        return fxu_oom(c.err, c.errlen);
    int rc = fxdb__each_entry(dir, remove_orphans_in, &c);
    if (rc == -1) { /* not a directory: not ours, leave it */
        fxdb__log(FXL_WARN, "leaving an unknown file path=%s", dir);
        rc = 0;
    } else if (!rc && fxdb__team_exists(c.st, team, NULL, 0) == FXS_NOT_FOUND && rmdir(dir) == 0) {
        fxdb__log(FXL_INFO, "removed a directory path=%s reason=\"no such team\"", dir);
    } else if (!rc) {
        rc = fxu_fsync_dir(dir, c.err, c.errlen); /* the removals in it */
    }
    free(dir);
    return rc;
}

/* ------------------------------------------------------------ versions */

typedef struct {
    int64_t model_id, version;
    uint64_t bytes;
    char *name;
    char *path;
    char sha[65];
    char *was;      /* the verdict recorded before */
    char *unusable; /* the verdict now */
} check_row;

static void check_rows_free(check_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].name);
        free(rows[i].path);
        free(rows[i].was);
        free(rows[i].unusable);
    }
    free(rows);
}

/* Why a version's file cannot be used, NULL when it can (malloc). */
static char *check_weights(const char *path, uint64_t bytes, const char *sha)
{
    char e[256], hex[65];
    uint64_t size;
    if (fxu_hash_file(path, &size, hex, e, sizeof e) != 0)
        return fxu_strf("cannot read weights %s: %s", path, e);
    if (size != bytes)
        return fxu_strf("weights %s have %" PRIu64 " bytes, expected %" PRIu64, path, size, bytes);
    if (strcmp(hex, sha) != 0)
        return fxu_strf("weights %s have SHA-256 %s, expected %s", path, hex, sha);
    return NULL;
}

static int load_check_rows(fxdb_store *st, check_row **out, size_t *n, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT v.model_id, v.version, v.weights_bytes, v.sha256, m.name, "
                               "v.unusable FROM versions v JOIN models m ON m.id = v.model_id",
                           &s, err, errlen);
    if (rc)
        return rc;
    check_row *rows = NULL;
    size_t cnt = 0, cap = 0;
    int r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            check_row *nr = realloc(rows, cap * sizeof *rows);
            if (!nr) {
                rc = fxu_oom(err, errlen);
                break;
            }
            rows = nr;
        }
        check_row *c = &rows[cnt++];
        memset(c, 0, sizeof *c);
        c->model_id = sqlite3_column_int64(s, 0);
        c->version = sqlite3_column_int64(s, 1);
        c->bytes = (uint64_t)sqlite3_column_int64(s, 2);
        snprintf(c->sha, sizeof c->sha, "%s", (const char *)sqlite3_column_text(s, 3));
        c->name = strdup((const char *)sqlite3_column_text(s, 4));
        c->path = c->name ? fxdb__weights_path(st, c->name, c->version) : NULL;
        bool was_bad = sqlite3_column_type(s, 5) != SQLITE_NULL;
        if (was_bad)
            c->was = strdup((const char *)sqlite3_column_text(s, 5));
        if (!c->path || (was_bad && !c->was))
            rc = fxu_oom(err, errlen);
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "reading versions");
    sqlite3_finalize(s);
    if (rc) {
        check_rows_free(rows, cnt);
        return rc;
    }
    *out = rows;
    *n = cnt;
    return 0;
}

int fxdb__set_unusable(fxdb_store *st, int64_t model_id, int64_t version, const char *why,
                       char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "UPDATE versions SET unusable = ? WHERE model_id = ? AND "
                               "version = ?", &s, err, errlen);
    if (rc)
        return rc;
    if (why)
        sqlite3_bind_text(s, 1, why, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 1);
    sqlite3_bind_int64(s, 2, model_id);
    sqlite3_bind_int64(s, 3, version);
    return fxdb__step_done(st, s, "marking a version unusable", err, errlen);
}

static bool same_verdict(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Checks every version's file and records the verdicts that changed. */
static int verify_versions(fxdb_store *st, char *err, size_t errlen)
{
    check_row *rows = NULL;
    size_t n = 0;
    int rc = load_check_rows(st, &rows, &n, err, errlen);
    if (rc)
        return rc;
    size_t changed = 0;
    for (size_t i = 0; i < n; i++) {
        rows[i].unusable = check_weights(rows[i].path, rows[i].bytes, rows[i].sha);
        if (rows[i].unusable)
            fxdb__log(FXL_ERROR, "a version is unusable model=%s version=%" PRId64
                      " reason=\"%s\"", rows[i].name, rows[i].version, rows[i].unusable);
        changed += !same_verdict(rows[i].was, rows[i].unusable);
    }
    if (changed) {
        rc = fxdb__exec(st, "BEGIN IMMEDIATE", err, errlen);
        for (size_t i = 0; !rc && i < n; i++)
            if (!same_verdict(rows[i].was, rows[i].unusable))
                rc = fxdb__set_unusable(st, rows[i].model_id, rows[i].version,
                                        rows[i].unusable, err, errlen);
        rc = fxdb__finish_tx(st, rc, err, errlen);
    }
    check_rows_free(rows, n);
    return rc;
}

int fxdb__recover(fxdb_store *st, char *err, size_t errlen)
{
    fxdb__each_entry(st->tmp_dir, remove_any, NULL);
    fxdb__each_entry(st->dir, remove_if_temp, NULL);
    orphan_ctx c = { st, NULL, err, errlen };
    int rc = fxdb__each_entry(st->models_dir, remove_orphans_of_team, &c);
    if (rc == -1) {
        int e = errno;
        fxu_seterr(err, errlen, "cannot open %s: %s", st->models_dir, strerror(e));
        return fxu_errno_status(e);
    }
    if (!rc)
        rc = fxu_fsync_dir(st->models_dir, err, errlen);
    return rc ? rc : verify_versions(st, err, errlen);
}
