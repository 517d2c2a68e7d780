/*
 * db.c - the store's connection: opening the data directory (its lock,
 * fluxion.db), the one migration list, statements and transactions shared
 * by the table files, and closing.
 *
 * Layout under DIR:
 *   LOCK                               flock'ed while a store is open (pid inside)
 *   RESERVE                            space kept for deletes on a full disk
 *   fluxion.db (+ -wal, -shm)          SQLite
 *   models/<team>/<name>/v<N>.safetensors  weights (models_tab.c)
 *   tmp/                               files being written (emptied at open)
 *
 * synchronous=FULL: in WAL mode NORMAL may lose the last commits on power
 * loss (the WAL is only synced at checkpoints). Losing a committed version
 * row would make its weight file an "orphan" that the next open deletes: a
 * model the client was told was stored would be gone. Commits here are rare
 * (one per new model, version, dataset or job state) and most follow a file
 * fsync anyway, so the extra WAL fsync costs nothing that matters.
 *
 * A database that is new while models/ holds files (fluxion.db deleted or
 * the wrong directory) is refused rather than "recovered": every weight file
 * would look like an orphan.
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"

#define BUSY_TIMEOUT_MS 5000

/* ------------------------------------------------------------ logging */

/* Everything the store logs goes through the daemon's logger, so that
 * --log-format json is JSON on every line (the store used to write plain
 * text to stderr). */
void fxdb__log(int level, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fxl_log((fxl_level)level, "store", "%s", msg);
}

/* ---------------------------------------------------------- migrations */

/* Migrations: entry i takes the schema from version i to i + 1. Append new
 * entries; never edit one that has shipped. Every table of the daemon is
 * created here, whichever module's data it holds. */
static const char *const MIGRATIONS[] = {
    /* 0 -> 1: models and their versions (models_tab.c) */
    "CREATE TABLE models ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT," /* never reused: reads mark rows by id */
    "  name TEXT NOT NULL UNIQUE,"
    "  description TEXT NOT NULL,"
    "  spec BLOB NOT NULL,"
    "  seed INTEGER NOT NULL,"          /* uint64 stored as its int64 bit pattern */
    "  loaded INTEGER NOT NULL CHECK (loaded IN (0, 1)),"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE versions ("
    "  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
    "  version INTEGER NOT NULL CHECK (version >= 1),"
    "  created_ms INTEGER NOT NULL,"
    "  source TEXT NOT NULL,"
    "  weights_bytes INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  unusable TEXT,"                  /* NULL, or why the file cannot be used */
    "  PRIMARY KEY (model_id, version));",
    /* 1 -> 2: datasets (datasets_tab.c) and training jobs (jobs_tab.c). The
     * records are packed fluxion.v1 messages, so fields can grow without
     * migrations. */
    "CREATE TABLE datasets ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE,"
    "  info BLOB NOT NULL,"            /* packed fluxion.v1.Dataset */
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  state TEXT NOT NULL,"           /* QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED */
    "  model TEXT NOT NULL,"
    "  record BLOB NOT NULL,"          /* packed fluxion.v1.Job (spec included) */
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE INDEX jobs_by_state ON jobs(state);",
    /* 2 -> 3: the serving settings of a model (servecfg_tab.c). Daemons
     * before this migration created the table on first use, outside the
     * migrations: IF NOT EXISTS keeps their data directories opening. */
    "CREATE TABLE IF NOT EXISTS serving_config ("
    "  model TEXT PRIMARY KEY,"
    "  config BLOB NOT NULL);",         /* packed fluxion.v1.BatchingConfig */
    /* 3 -> 4: the job that made a version, written in the transaction that
     * marks the job SUCCEEDED (jobs_tab.c). Versions made before have none:
     * their source text ("job 12") was never a reliable link. */
    "ALTER TABLE versions ADD COLUMN job_id INTEGER;"
    "CREATE INDEX versions_by_job ON versions(job_id) WHERE job_id IS NOT NULL;",
    /* 4 -> 5: the datasets a job reads, so that deleting one that a queued
     * or running job needs is refused in the delete's transaction. Rows
     * written before get them when training/ restores its unfinished jobs
     * (it saves each), before any delete can be asked for. */
    "ALTER TABLE jobs ADD COLUMN dataset TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN validation_dataset TEXT NOT NULL DEFAULT '';",
    /* 5 -> 6: teams (teams_tab.c), tokens, certificate principals and
     * settings (auth_tab.c); every object is named by its key "team/name":
     * the rows of a data directory from before teams move to team
     * 'default', their files too (migrate_files, run before this, see
     * there). datasets.bytes counts the dataset's files for the quota (old
     * rows: summed from the files, migrate_dataset_bytes). */
    "CREATE TABLE teams ("
    "  name TEXT PRIMARY KEY,"
    "  display_name TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL,"
    "  max_models INTEGER NOT NULL DEFAULT 0,"        /* 0: the daemon's default */
    "  max_weight_bytes INTEGER NOT NULL DEFAULT 0,"
    "  max_dataset_bytes INTEGER NOT NULL DEFAULT 0);"
    "INSERT INTO teams (name, display_name, created_ms) VALUES ('default', 'Default team',"
    "  CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));"
    "CREATE TABLE tokens ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  team TEXT NOT NULL REFERENCES teams(name),"
    "  name TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32)," /* SHA-256 of the secret */
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL DEFAULT 0,"         /* 0: never */
    "  last_used_ms INTEGER NOT NULL DEFAULT 0,"
    "  revoked_ms INTEGER NOT NULL DEFAULT 0,"         /* 0: not revoked */
    "  created_by TEXT NOT NULL DEFAULT '');"
    "CREATE UNIQUE INDEX tokens_live_name ON tokens(team, name) WHERE revoked_ms = 0;"
    "CREATE TABLE cert_principals ("
    "  subject TEXT PRIMARY KEY,"
    "  team TEXT NOT NULL REFERENCES teams(name),"
    "  role TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "UPDATE models SET name = 'default/' || name WHERE instr(name, '/') = 0;"
    "UPDATE datasets SET name = 'default/' || name WHERE instr(name, '/') = 0;"
    "UPDATE serving_config SET model = 'default/' || model WHERE instr(model, '/') = 0;"
    "UPDATE jobs SET model = 'default/' || model WHERE model <> '' AND instr(model, '/') = 0;"
    "UPDATE jobs SET dataset = 'default/' || dataset "
    "  WHERE dataset <> '' AND instr(dataset, '/') = 0;"
    "UPDATE jobs SET validation_dataset = 'default/' || validation_dataset "
    "  WHERE validation_dataset <> '' AND instr(validation_dataset, '/') = 0;"
    "ALTER TABLE models ADD COLUMN team TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE datasets ADD COLUMN team TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE datasets ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN team TEXT NOT NULL DEFAULT '';"
    "UPDATE models SET team = substr(name, 1, instr(name, '/') - 1);"
    "UPDATE datasets SET team = substr(name, 1, instr(name, '/') - 1);"
    "UPDATE jobs SET team = substr(model, 1, instr(model, '/') - 1) WHERE instr(model, '/') > 0;"
    "CREATE INDEX models_by_team ON models(team);"
    "CREATE INDEX datasets_by_team ON datasets(team);"
    "CREATE INDEX jobs_by_team ON jobs(team);",
    /* 6 -> 7: the teams' scheduling quota (docs/scheduling.md, teams_tab.c):
     * a fair-share weight, nominal and borrowed training slots per device
     * kind, a budget of device-seconds per window, a cap on running jobs,
     * a cap on the GPU memory its running jobs' estimates hold (bytes).
     * 0 everywhere: the daemon's default (--team-weight etc.). */
    "ALTER TABLE teams ADD COLUMN weight REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE teams ADD COLUMN cpu_slots INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE teams ADD COLUMN gpu_slots INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE teams ADD COLUMN borrow_cpu_slots INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE teams ADD COLUMN borrow_gpu_slots INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE teams ADD COLUMN budget_device_seconds REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE teams ADD COLUMN budget_window_seconds INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE teams ADD COLUMN max_running_jobs INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE teams ADD COLUMN gpu_memory_bytes INTEGER NOT NULL DEFAULT 0;",
    /* 7 -> 8: the life of a version (versions_tab.c, docs/versions.md).
     * aliases: name -> version per model; 'production' is the version
     * serving uses, set here to each model's latest usable version (what
     * was served before aliases). alias_history: every move of an alias
     * (rollback walks it back). versions.pinned: kept by retention;
     * versions.metric: the value a job's promotion gate compared (NULL:
     * none). jobs.base_version: the version a job trains from (0: not
     * known yet; training/ saves its unfinished jobs at start, which fills
     * it), so that deleting another version is not refused for it.
     * models.keep_last: retention (0: keep every version);
     * models.last_version: the highest number ever given, so a deleted
     * version's number is never reused. */
    "CREATE TABLE aliases ("
    "  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (model_id, name));"
    "CREATE TABLE alias_history ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
    "  alias TEXT NOT NULL,"
    "  from_version INTEGER NOT NULL,"  /* 0: the alias was new */
    "  to_version INTEGER NOT NULL,"    /* 0: the alias was deleted */
    "  at_ms INTEGER NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  undone INTEGER NOT NULL DEFAULT 0);" /* 1: a rollback walked back over it */
    "CREATE INDEX alias_history_by_model ON alias_history(model_id, alias);"
    "ALTER TABLE versions ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE versions ADD COLUMN metric_name TEXT;"
    "ALTER TABLE versions ADD COLUMN metric REAL;"
    "ALTER TABLE models ADD COLUMN keep_last INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN base_version INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE models ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;"
    "UPDATE models SET last_version = "
    "  (SELECT COALESCE(MAX(version), 0) FROM versions WHERE model_id = models.id);"
    "INSERT INTO aliases (model_id, name, version, updated_ms) "
    "  SELECT m.id, 'production', COALESCE("
    "    (SELECT MAX(version) FROM versions v WHERE v.model_id = m.id AND unusable IS NULL),"
    "    m.last_version), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) "
    "  FROM models m WHERE m.last_version > 0;",
    /* 8 -> 9: spec revisions (revisions_tab.c): `model update` stores a
     * model's new spec as revision 2, 3, ... here (revision 1 stays
     * models.spec, the spec it was created with), and every version
     * records the revision whose graph its weights fit. */
    "CREATE TABLE spec_revisions ("
    "  model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
    "  revision INTEGER NOT NULL CHECK (revision >= 2),"
    "  spec BLOB NOT NULL,"             /* packed fluxion.v1.ModelSpec */
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (model_id, revision));"
    "ALTER TABLE versions ADD COLUMN spec_revision INTEGER NOT NULL DEFAULT 1;",
};
#define SCHEMA_VERSION ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

/* The migration that moves objects into teams (its files move first,
 * upgrade.c). */
#define TEAMS_MIGRATION 5

int fxdb__migrate(fxdb_store *st, int *was, char *err, size_t errlen)
{
    /* The files of the teams migration move before its transaction (see
     * upgrade.c); the data directory is ours alone (LOCK). */
    int64_t before = 0;
    int rc = fxdb__query_int(st, "SELECT version FROM schema_version", NULL, &before, NULL, 0);
    if (rc == 0 && before > 0 && before <= TEAMS_MIGRATION) {
        if ((rc = fxdb__upgrade_files(st, err, errlen)) != 0)
            return rc;
    }
    rc = fxdb__exec(st, "BEGIN IMMEDIATE", err, errlen);
    if (rc)
        return rc;
    rc = fxdb__exec(st, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                    err, errlen);
    int64_t v = 0;
    if (!rc) {
        rc = fxdb__query_int(st, "SELECT version FROM schema_version", NULL, &v, err, errlen);
        if (rc == FXS_NOT_FOUND) {
            v = 0;
            rc = fxdb__exec(st, "INSERT INTO schema_version VALUES (0)", err, errlen);
        }
    }
    if (!rc && (v < 0 || v > SCHEMA_VERSION)) {
        fxu_seterr(err, errlen, "store: database schema version %" PRId64 " is newer than this "
                   "fluxiond knows (%d); use a newer fluxiond", v, SCHEMA_VERSION);
        rc = FXS_FAILED_PRECONDITION;
    }
    for (int64_t i = v; !rc && i < SCHEMA_VERSION; i++) {
        rc = fxdb__exec(st, MIGRATIONS[i], err, errlen);
        if (!rc && i == TEAMS_MIGRATION && v > 0)
            rc = fxdb__upgrade_dataset_bytes(st, err, errlen);
    }
    if (!rc && v < SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "UPDATE schema_version SET version = %d", SCHEMA_VERSION);
        rc = fxdb__exec(st, sql, err, errlen);
    }
    rc = fxdb__finish_tx(st, rc, err, errlen);
    *was = (int)v;
    return rc;
}

/* --------------------------------------------------------- statements */

/* A full disk is SQLITE_FULL, or an I/O error whose errno says so (an
 * fsync on some file systems). */
static int status_of(fxdb_store *st, int code)
{
    int e = sqlite3_system_errno(st->db);
    if ((code & 0xff) == SQLITE_FULL || e == ENOSPC || e == EDQUOT)
        return FXS_RESOURCE_EXHAUSTED;
    return FXS_INTERNAL;
}

int fxdb__fail(fxdb_store *st, char *err, size_t errlen, const char *what)
{
    fxu_seterr(err, errlen, "store: %s: %s", what, sqlite3_errmsg(st->db));
    return status_of(st, sqlite3_extended_errcode(st->db));
}

int fxdb__exec(fxdb_store *st, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int r = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
    if (r != SQLITE_OK) {
        fxu_seterr(err, errlen, "store: %s: %s", sql, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return status_of(st, r);
    }
    return 0;
}

int fxdb__prepare(fxdb_store *st, const char *sql, sqlite3_stmt **stmt, char *err,
                  size_t errlen)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL) != SQLITE_OK) {
        *stmt = NULL;
        return fxdb__fail(st, err, errlen, "prepare");
    }
    return 0;
}

int fxdb__step_done(fxdb_store *st, sqlite3_stmt *stmt, const char *what, char *err,
                    size_t errlen)
{
    int rc = sqlite3_step(stmt) == SQLITE_DONE ? 0 : fxdb__fail(st, err, errlen, what);
    sqlite3_finalize(stmt);
    return rc;
}

int fxdb__query_int(fxdb_store *st, const char *sql, const char *param, int64_t *val,
                    char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, sql, &s, err, errlen);
    if (rc)
        return rc;
    if (param)
        sqlite3_bind_text(s, 1, param, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        *val = sqlite3_column_int64(s, 0);
        rc = 0;
    } else if (r == SQLITE_DONE) {
        rc = FXS_NOT_FOUND;
    } else {
        rc = fxdb__fail(st, err, errlen, "query");
    }
    sqlite3_finalize(s);
    return rc;
}

int fxdb__column_blob(sqlite3_stmt *s, int col, void **out, size_t *len, char *err,
                      size_t errlen)
{
    const void *b = sqlite3_column_blob(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    void *p = malloc(n + 1);
    if (!p)
        return fxu_oom(err, errlen);
    if (n)
        memcpy(p, b, n);
    *out = p;
    *len = n;
    return 0;
}

int fxdb__model_id(fxdb_store *st, const char *name, int64_t *id, char *err, size_t errlen)
{
    int rc = fxdb__query_int(st, "SELECT id FROM models WHERE name = ?", name, id, err, errlen);
    if (rc == FXS_NOT_FOUND)
        fxu_seterr(err, errlen, "model \"%s\" not found", name);
    return rc;
}

int fxdb__recreated(const char *name, char *err, size_t errlen)
{
    return fxu_fail(err, errlen, FXS_ABORTED, "model '%s' was deleted and created again "
                    "meanwhile (its versions are numbered anew, maybe for another spec): "
                    "try again", fxp_key_name(name));
}

int fxdb__model_id_of(fxdb_store *st, const char *name, int64_t want, int64_t *id, char *err,
                      size_t errlen)
{
    int rc = fxdb__model_id(st, name, id, err, errlen);
    if (!rc && want > 0 && *id != want)
        rc = fxdb__recreated(name, err, errlen);
    return rc;
}

/* ------------------------------------------------------- transactions */

void fxdb__rollback(fxdb_store *st)
{
    /* fails harmlessly when SQLite already rolled back (e.g. on SQLITE_FULL) */
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

int fxdb__finish_tx(fxdb_store *st, int rc, char *err, size_t errlen)
{
    if (!rc)
        rc = fxdb__exec(st, "COMMIT", err, errlen);
    if (rc)
        fxdb__rollback(st);
    return rc;
}

int fxdb__tx_locked(fxdb_store *st, fxdb__fn fn, void *ctx, char *err, size_t errlen)
{
    int rc = fxdb__exec(st, "BEGIN IMMEDIATE", err, errlen);
    if (rc)
        return rc;
    return fxdb__finish_tx(st, fn(st, ctx, err, errlen), err, errlen);
}

static int run_locked(fxdb_store *st, bool tx, fxdb__fn fn, void *ctx, char *err,
                      size_t errlen)
{
    if (!st)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: no store");
    pthread_mutex_lock(&st->mu);
    int rc = tx ? fxdb__tx_locked(st, fn, ctx, err, errlen) : fn(st, ctx, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fxdb__tx(fxdb_store *st, fxdb__fn fn, void *ctx, char *err, size_t errlen)
{
    return run_locked(st, true, fn, ctx, err, errlen);
}

int fxdb__read(fxdb_store *st, fxdb__fn fn, void *ctx, char *err, size_t errlen)
{
    return run_locked(st, false, fn, ctx, err, errlen);
}

/* ------------------------------------------------------- a full disk */

/* What a delete writes: a few pages of the tables and indexes to the WAL
 * (a WAL frame is a 4 KiB page plus 24 bytes), tens of KiB at most; the
 * reserve holds several times that. */
#define RESERVE_BYTES (256 * 1024)

int fxdb__reserve_ensure(fxdb_store *st, char *err, size_t errlen)
{
    if (st->reserve_ok)
        return 0;
    int fd = open(st->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    int e = fd < 0 ? errno : posix_fallocate(fd, 0, RESERVE_BYTES);
    if (fd >= 0 && (e == EOPNOTSUPP || e == EINVAL)) { /* no fallocate: write the bytes */
        static const char zeros[4096];
        e = 0;
        for (off_t at = 0; !e && at < RESERVE_BYTES; at += (off_t)sizeof zeros) {
            ssize_t w = pwrite(fd, zeros, sizeof zeros, at);
            if (w != (ssize_t)sizeof zeros)
                e = w < 0 ? errno : ENOSPC;
        }
    }
    if (fd >= 0)
        close(fd);
    if (e) {
        unlink(st->reserve_path); /* a part of it would only hide the space */
        int code = fxu_errno_status(e);
        return fxu_fail(err, errlen, code, "store: cannot keep %d KiB free for deletes (%s: "
                        "%s)%s", RESERVE_BYTES / 1024, st->reserve_path, strerror(e),
                        code == FXS_RESOURCE_EXHAUSTED
                            ? "; the disk is full: delete models or datasets to make room" : "");
    }
    st->reserve_ok = true;
    return 0;
}

int fxdb__tx_freeing(fxdb_store *st, fxdb__fn fn, void *ctx, char *err, size_t errlen)
{
    int rc = fxdb__tx_locked(st, fn, ctx, err, errlen);
    if (rc != FXS_RESOURCE_EXHAUSTED || !st->reserve_ok)
        return rc;
    if (unlink(st->reserve_path) != 0 && errno != ENOENT)
        return rc;
    st->reserve_ok = false;
    fxdb__log(FXL_WARN, "the disk is full: gave up the reserve so that a delete can proceed "
              "path=%s bytes=%d", st->reserve_path, RESERVE_BYTES);
    return fxdb__tx_locked(st, fn, ctx, err, errlen);
}

/* ------------------------------------------------------------- names */

bool fxdb_model_name_ok(const char *name, char *err, size_t errlen)
{
    if (!name || !*name) {
        fxu_seterr(err, errlen, "model name is empty");
        return false;
    }
    size_t n = strlen(name);
    if (n > FXDB_NAME_MAX) {
        fxu_seterr(err, errlen, "model name is %zu characters long (at most %d)", n,
                   FXDB_NAME_MAX);
        return false;
    }
    if (name[0] == '.' || name[0] == '-') {
        fxu_seterr(err, errlen, "model name \"%s\" starts with '%c' (names start with a letter, "
                   "digit or '_')", name, name[0]);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok) {
            if (c >= 0x20 && c < 0x7f)
                fxu_seterr(err, errlen, "model name \"%s\" has '%c' at position %zu (allowed: "
                           "A-Z a-z 0-9 _ . -)", name, c, i);
            else
                fxu_seterr(err, errlen, "model name has byte 0x%02x at position %zu (allowed: "
                           "A-Z a-z 0-9 _ . -)", c, i);
            return false;
        }
    }
    return true;
}

bool fxdb_key_ok(const char *key, char *err, size_t errlen)
{
    if (!key || !*key) {
        fxu_seterr(err, errlen, "key is empty (keys are \"team/name\")");
        return false;
    }
    const char *slash = strchr(key, '/');
    if (!slash) {
        fxu_seterr(err, errlen, "key \"%.*s\" has no team part (keys are \"team/name\")",
                   FXDB_NAME_MAX, key);
        return false;
    }
    char team[FXP_TEAM_MAX + 2];
    size_t tl = (size_t)(slash - key);
    if (tl >= sizeof team)
        tl = sizeof team - 1; /* too long: fxp_team_name_ok says so */
    memcpy(team, key, tl);
    team[tl] = '\0';
    char e[256];
    if (!fxp_team_name_ok(team, e, sizeof e)) {
        fxu_seterr(err, errlen, "team part of key \"%.*s\": %s", FXP_KEY_MAX, key, e);
        return false;
    }
    if (!fxdb_model_name_ok(slash + 1, e, sizeof e)) {
        fxu_seterr(err, errlen, "name part of key \"%.*s\": %s", FXP_KEY_MAX, key, e);
        return false;
    }
    return true;
}

int fxdb__check_name(fxdb_store *st, const char *name, char *err, size_t errlen)
{
    if (!st)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: no store");
    return fxdb_key_ok(name, err, errlen) ? 0 : FXS_INVALID_ARGUMENT;
}

fxdb_row *fxdb__rows_add(fxdb_row **rows, int *n, int *cap)
{
    if (*n == *cap) {
        int ncap = *cap ? 2 * *cap : 16;
        fxdb_row *nr = realloc(*rows, (size_t)ncap * sizeof *nr);
        if (!nr)
            return NULL;
        *rows = nr;
        *cap = ncap;
    }
    fxdb_row *row = &(*rows)[(*n)++];
    memset(row, 0, sizeof *row);
    return row;
}

void fxdb_rows_free(fxdb_row *rows, int n)
{
    for (int i = 0; rows && i < n; i++) {
        free(rows[i].name);
        free(rows[i].blob);
    }
    free(rows);
}

/* ---------------------------------------------------------- open/close */

static int take_lock(fxdb_store *st, char *err, size_t errlen)
{
    char *path = fxu_strf("%s/LOCK", st->dir);
    if (!path)
        return fxu_oom(err, errlen);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        fxu_seterr(err, errlen, "cannot open %s: %s", path, strerror(e));
        free(path);
        return fxu_errno_status(e);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t r = pread(fd, pid, sizeof pid - 1, 0);
        pid[r > 0 ? r : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (e == EWOULDBLOCK)
            fxu_seterr(err, errlen, "data directory %s is in use by another fluxiond%s%s (%s is "
                       "locked); stop it or use another data directory", st->dir,
                       pid[0] ? " with pid " : "", pid, path);
        else
            fxu_seterr(err, errlen, "cannot lock %s: %s", path, strerror(e));
        close(fd);
        free(path);
        /* Only a lock held by another process is the caller's to resolve;
         * any other flock failure (ENOLCK, ...) is an I/O error. */
        return e == EWOULDBLOCK ? FXS_FAILED_PRECONDITION : fxu_errno_status(e);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) /* cosmetic */
        fxdb__log(FXL_WARN, "cannot write the pid path=%s error=\"%s\"", path, strerror(errno));
    free(path);
    st->lock_fd = fd;
    return 0;
}

void fxdb_store_close(fxdb_store *st)
{
    if (!st)
        return;
    if (st->db && sqlite3_close(st->db) != SQLITE_OK) /* an unfinalized statement */
        fxdb__log(FXL_ERROR, "closing the database error=\"%s\"", sqlite3_errmsg(st->db));
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&st->mu);
    free(st->dir);
    free(st->models_dir);
    free(st->tmp_dir);
    free(st->reserve_path);
    free(st);
}

static int pragma_check(fxdb_store *st, const char *sql, const char *want, char *err,
                        size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, sql, &s, err, errlen);
    if (rc)
        return rc;
    if (sqlite3_step(s) != SQLITE_ROW) {
        rc = fxdb__fail(st, err, errlen, sql);
    } else {
        const char *got = (const char *)sqlite3_column_text(s, 0);
        if (!got || strcasecmp(got, want) != 0)
            rc = fxu_fail(err, errlen, FXS_INTERNAL, "store: %s gave \"%s\", need \"%s\"", sql,
                          got ? got : "", want);
    }
    sqlite3_finalize(s);
    return rc;
}

static int configure_db(fxdb_store *st, char *err, size_t errlen)
{
    sqlite3_extended_result_codes(st->db, 1);
    if (sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS) != SQLITE_OK)
        return fxdb__fail(st, err, errlen, "busy_timeout");
    int rc;
    if ((rc = pragma_check(st, "PRAGMA journal_mode=WAL", "wal", err, errlen)) ||
        (rc = fxdb__exec(st, "PRAGMA synchronous=FULL", err, errlen)) ||
        (rc = fxdb__exec(st, "PRAGMA foreign_keys=ON", err, errlen)) ||
        (rc = pragma_check(st, "PRAGMA foreign_keys", "1", err, errlen)))
        return rc;
    return 0;
}

static int stop_at_first(const char *dir, const char *fname, void *ctx)
{
    return 1;
}

static int open_db(fxdb_store *st, char *err, size_t errlen)
{
    char *path = fxu_strf("%s/fluxion.db", st->dir);
    if (!path)
        return fxu_oom(err, errlen);
    int r = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (r != SQLITE_OK) {
        fxu_seterr(err, errlen, "store: cannot open %s: %s", path,
                   st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(r));
        free(path);
        if (r == SQLITE_NOMEM)
            return FXS_RESOURCE_EXHAUSTED;
        return st->db ? status_of(st, r) : FXS_INTERNAL;
    }
    int rc = configure_db(st, err, errlen);
    int was = 0;
    if (!rc)
        rc = fxdb__migrate(st, &was, err, errlen);
    if (!rc && was == 0 && fxdb__each_entry(st->models_dir, stop_at_first, NULL) == 1) {
        fxu_seterr(err, errlen, "store: %s is a new database but %s holds files; refusing to "
                   "treat them as orphans (restore fluxion.db or move models/ away)", path,
                   st->models_dir);
        rc = FXS_FAILED_PRECONDITION;
    }
    free(path);
    return rc;
}

int fxdb_store_open(const char *dir, fxdb_store **out, char *err, size_t errlen)
{
    if (!out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: no place for the store");
    *out = NULL;
    if (!dir || !*dir)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: no data directory given");
    fxdb_store *st = calloc(1, sizeof *st);
    if (!st)
        return fxu_oom(err, errlen);
    st->lock_fd = -1;
    pthread_mutex_init(&st->mu, NULL);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    st->dir = strndup(dir, n);
    st->models_dir = st->dir ? fxu_strf("%s/models", st->dir) : NULL;
    st->tmp_dir = st->dir ? fxu_strf("%s/tmp", st->dir) : NULL;
    st->reserve_path = st->dir ? fxu_strf("%s/RESERVE", st->dir) : NULL;
    if (!st->dir || !st->models_dir || !st->tmp_dir || !st->reserve_path) {
        fxdb_store_close(st);
        return fxu_oom(err, errlen);
    }
    int rc = fxu_mkdir_p(st->dir, err, errlen);
    /* ENOENT while creating the data directory itself: a dangling symlink
     * in the path given, so the path is what is wrong. (A component that is
     * not a directory is already INVALID_ARGUMENT.) */
    if (rc == FXS_NOT_FOUND)
        rc = FXS_INVALID_ARGUMENT;
    if (!rc)
        rc = take_lock(st, err, errlen);
    if (!rc)
        rc = fxu_mkdir(st->models_dir, err, errlen);
    if (!rc)
        rc = fxu_mkdir(st->tmp_dir, err, errlen);
    if (!rc)
        rc = open_db(st, err, errlen);
    if (!rc)
        rc = fxdb__recover(st, err, errlen);
    if (rc) {
        fxdb_store_close(st);
        /* A file of ours that vanished during the open (NOT_FOUND) or
         * anything else unexpected is an I/O failure, not the caller's. */
        if (rc != FXS_INVALID_ARGUMENT && rc != FXS_FAILED_PRECONDITION &&
            rc != FXS_RESOURCE_EXHAUSTED)
            rc = FXS_INTERNAL;
        return rc;
    }
    /* A full disk must not keep the daemon from starting: deleting is how
     * it gets room again. */
    char e[512];
    if (fxdb__reserve_ensure(st, e, sizeof e) != 0)
        fxdb__log(FXL_WARN, "%s", e);
    *out = st;
    return 0;
}

const char *fxdb_store_dir(const fxdb_store *st)
{
    return st ? st->dir : NULL;
}

const char *fxdb_store_tmp_dir(const fxdb_store *st)
{
    return st ? st->tmp_dir : NULL;
}
