/*
 * store.c - the daemon's persistent model store (see store.h).
 *
 * Layout under DIR:
 *   LOCK                               flock'ed while a store is open (pid inside)
 *   fluxion.db (+ -wal, -shm)          SQLite
 *   models/<name>/v<N>.safetensors     weights
 *   tmp/                               weights being written (emptied at open)
 *
 * Durability. New weights are written to tmp/ and fsynced outside the
 * mutex (the slow part), then, under the mutex and inside a transaction,
 * renamed to models/<name>/v<N>.safetensors, the directory fsynced, the rows
 * inserted and the transaction committed. A crash before the commit leaves
 * a file no row refers to, which the next open removes; after it, both.
 *
 * synchronous=FULL: in WAL mode NORMAL may lose the last commits on power
 * loss (the WAL is only synced at checkpoints). Losing a committed version
 * row would make its weight file an "orphan" that the next open deletes: a
 * model the client was told was stored would be gone. Commits here are rare
 * (one per new model or version) and already follow a weights fsync, so
 * the extra WAL fsync costs nothing that matters.
 *
 * Unusable versions. Opening the store checks every version's file (exists,
 * size, SHA-256); reads check size and SHA-256 again. A version that fails
 * is logged to stderr and marked unusable (versions.unusable holds why)
 * instead of failing the open: the other models keep being served. Unusable
 * versions are left out of fxdb_model_rec.versions (so "latest" falls back to
 * the newest good one), reading one explicitly answers FXS_DATA_LOSS, and
 * their numbers are never reused. The check is redone at every open, so a
 * file restored from a backup makes its version usable again.
 *
 * A database that is new while models/ holds files (fluxion.db deleted or
 * the wrong directory) is refused rather than "recovered": every weight file
 * would look like an orphan.
 */
#define _GNU_SOURCE
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "base/status.h"
#include "base/fsutil.h"
#include "base/util.h"

#define FXDB_NAME_MAX 128
#define BUSY_TIMEOUT_MS 5000

struct fxdb_store {
    pthread_mutex_t mu;
    sqlite3 *db;
    char *dir;
    char *models_dir;
    char *tmp_dir;
    int lock_fd;
};

/* ------------------------------------------------------------- helpers */

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr); /* one line, even with several threads logging */
    fputs("fluxiond: store: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}

/* A malloc'd formatted string, NULL when out of memory. */
static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

static int db_fail(fxdb_store *st, char *err, size_t errlen, const char *what)
{
    fxu_seterr(err, errlen, "store: %s: %s", what, sqlite3_errmsg(st->db));
    return FXS_INTERNAL;
}

/* --------------------------------------------------------------- files */

/* ------------------------------------------------------------- names */

bool fxdb_model_name_ok(const char *name, char *err, size_t errlen)
{
    if (!name || !*name) {
        fxu_seterr(err, errlen, "model name is empty");
        return false;
    }
    size_t n = strlen(name);
    if (n > FXDB_NAME_MAX) {
        fxu_seterr(err, errlen, "model name is %zu characters long (at most %d)", n, FXDB_NAME_MAX);
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

static char *model_dir(const fxdb_store *st, const char *name)
{
    return fxu_strf("%s/%s", st->models_dir, name);
}

static char *weights_path(const fxdb_store *st, const char *name, int64_t version)
{
    return fxu_strf("%s/%s/v%" PRId64 ".safetensors", st->models_dir, name, version);
}

/* v<N>.safetensors with N >= 1 written as we write it: *version gets N.
 * Any other v<digits>.safetensors is still one of ours (*canonical false). */
static bool parse_weights_name(const char *fname, int64_t *version, bool *canonical)
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

/* .<base>.tmp.XXXXXX, as write_temp makes them. */
static bool is_temp_name(const char *fname)
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

/* ----------------------------------------------------------- database */

/* Migrations: entry i takes the schema from version i to i + 1. Later
 * issues append entries (datasets, jobs, teams); never edit one that has
 * shipped. */
static const char *const MIGRATIONS[] = {
    /* 0 -> 1: models and their versions */
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
    /* 1 -> 2: datasets and training jobs. Their modules (datasets.c, jobs.c)
     * own these tables through fxdb_store_tx/fxdb_store_read; the records are
     * packed fluxion.v1 messages, so fields can grow without migrations. */
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
};
#define SCHEMA_VERSION ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

static int exec(fxdb_store *st, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fxu_seterr(err, errlen, "store: %s: %s", sql, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return FXS_INTERNAL;
    }
    return 0;
}

static void rollback(fxdb_store *st)
{
    /* fails harmlessly when SQLite already rolled back (e.g. on SQLITE_FULL) */
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

static int prepare(fxdb_store *st, const char *sql, sqlite3_stmt **stmt, char *err,
                   size_t errlen)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL) != SQLITE_OK) {
        *stmt = NULL;
        return db_fail(st, err, errlen, "prepare");
    }
    return 0;
}

/* Runs a statement that returns no rows, then finalizes it. */
static int step_done(fxdb_store *st, sqlite3_stmt *stmt, const char *what, char *err,
                     size_t errlen)
{
    int rc = sqlite3_step(stmt) == SQLITE_DONE ? 0 : db_fail(st, err, errlen, what);
    sqlite3_finalize(stmt);
    return rc;
}

/* A single integer from a query with one text parameter (or none):
 * 0 and *val, FXS_NOT_FOUND for no row, FXS_INTERNAL. */
static int query_int(fxdb_store *st, const char *sql, const char *param, int64_t *val,
                     char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = prepare(st, sql, &s, err, errlen);
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
        rc = db_fail(st, err, errlen, "query");
    }
    sqlite3_finalize(s);
    return rc;
}

static int model_id(fxdb_store *st, const char *name, int64_t *id, char *err, size_t errlen)
{
    int rc = query_int(st, "SELECT id FROM models WHERE name = ?", name, id, err, errlen);
    if (rc == FXS_NOT_FOUND)
        fxu_seterr(err, errlen, "model \"%s\" not found", name);
    return rc;
}

static int pragma_check(fxdb_store *st, const char *sql, const char *want, char *err,
                        size_t errlen)
{
    sqlite3_stmt *s;
    int rc = prepare(st, sql, &s, err, errlen);
    if (rc)
        return rc;
    if (sqlite3_step(s) != SQLITE_ROW) {
        rc = db_fail(st, err, errlen, sql);
    } else {
        const char *got = (const char *)sqlite3_column_text(s, 0);
        if (!got || strcasecmp(got, want) != 0) {
            fxu_seterr(err, errlen, "store: %s gave \"%s\", need \"%s\"", sql, got ? got : "",
                   want);
            rc = FXS_INTERNAL;
        }
    }
    sqlite3_finalize(s);
    return rc;
}

static int configure_db(fxdb_store *st, char *err, size_t errlen)
{
    sqlite3_extended_result_codes(st->db, 1);
    if (sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS) != SQLITE_OK)
        return db_fail(st, err, errlen, "busy_timeout");
    int rc;
    if ((rc = pragma_check(st, "PRAGMA journal_mode=WAL", "wal", err, errlen)) ||
        (rc = exec(st, "PRAGMA synchronous=FULL", err, errlen)) ||
        (rc = exec(st, "PRAGMA foreign_keys=ON", err, errlen)) ||
        (rc = pragma_check(st, "PRAGMA foreign_keys", "1", err, errlen)))
        return rc;
    return 0;
}

/* Brings the schema to SCHEMA_VERSION; *was gets the version found. */
static int migrate(fxdb_store *st, int *was, char *err, size_t errlen)
{
    int rc = exec(st, "BEGIN IMMEDIATE", err, errlen);
    if (rc)
        return rc;
    rc = exec(st, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", err,
              errlen);
    int64_t v = 0;
    if (!rc) {
        rc = query_int(st, "SELECT version FROM schema_version", NULL, &v, err, errlen);
        if (rc == FXS_NOT_FOUND) {
            v = 0;
            rc = exec(st, "INSERT INTO schema_version VALUES (0)", err, errlen);
        }
    }
    if (!rc && (v < 0 || v > SCHEMA_VERSION)) {
        fxu_seterr(err, errlen, "store: database schema version %" PRId64 " is newer than this "
               "fluxiond knows (%d); use a newer fluxiond", v, SCHEMA_VERSION);
        rc = FXS_FAILED_PRECONDITION;
    }
    for (int64_t i = v; !rc && i < SCHEMA_VERSION; i++)
        rc = exec(st, MIGRATIONS[i], err, errlen);
    if (!rc && v < SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "UPDATE schema_version SET version = %d", SCHEMA_VERSION);
        rc = exec(st, sql, err, errlen);
    }
    if (!rc)
        rc = exec(st, "COMMIT", err, errlen);
    if (rc)
        rollback(st);
    *was = (int)v;
    return rc;
}

/* ------------------------------------------------------------ recovery */

/* Calls fn for each entry of dir but . and ..; stops at the first nonzero
 * return and returns it. -1 if dir cannot be opened. */
typedef int (*entry_fn)(const char *dir, const char *fname, void *ctx);

static int each_entry(const char *dir, entry_fn fn, void *ctx)
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

static int stop_at_first(const char *dir, const char *fname, void *ctx)
{
    return 1;
}

static bool dir_has_entries(const char *path)
{
    return each_entry(path, stop_at_first, NULL) == 1;
}

/* Unlinks dir/fname; logs why (NULL: only failures). */
static void remove_file(const char *dir, const char *fname, const char *why)
{
    char *p = fxu_strf("%s/%s", dir, fname);
    if (!p)
        return;
    if (unlink(p) != 0)
        logmsg("cannot remove %s: %s (retried at the next start)", p, strerror(errno));
    else if (why)
        logmsg("removed %s (%s)", p, why);
    free(p);
}

#define CRASH_TEMP "temporary file left by a crash"

static int remove_any(const char *dir, const char *fname, void *ctx)
{
    remove_file(dir, fname, CRASH_TEMP);
    return 0;
}

static int remove_if_temp(const char *dir, const char *fname, void *ctx)
{
    if (is_temp_name(fname))
        remove_file(dir, fname, CRASH_TEMP);
    return 0;
}

static int version_exists(fxdb_store *st, const char *model, int64_t version, bool *exists,
                          char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = prepare(st, "SELECT 1 FROM versions v JOIN models m ON m.id = v.model_id "
                         "WHERE m.name = ? AND v.version = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, version);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW || r == SQLITE_DONE)
        *exists = r == SQLITE_ROW;
    else
        rc = db_fail(st, err, errlen, "query");
    sqlite3_finalize(s);
    return rc;
}

typedef struct {
    fxdb_store *st;
    const char *model;
    char *err;
    size_t errlen;
} orphan_ctx;

/* An entry of models/<model>/: temporaries and weights no row refers to go. */
static int remove_if_orphan(const char *dir, const char *fname, void *ctx)
{
    orphan_ctx *c = ctx;
    int64_t v;
    bool canonical, exists = false;
    int rc = 0;
    if (is_temp_name(fname)) {
        remove_file(dir, fname, CRASH_TEMP);
    } else if (parse_weights_name(fname, &v, &canonical)) {
        if (canonical)
            rc = version_exists(c->st, c->model, v, &exists, c->err, c->errlen);
        if (!rc && !exists)
            remove_file(dir, fname, "weights no version refers to");
    } else {
        logmsg("leaving unknown file %s/%s", dir, fname);
    }
    return rc;
}

/* An entry of models/: its orphans go, and the directory if it is no
 * model's and is left empty. */
static int remove_orphans_in(const char *models_dir, const char *model, void *ctx)
{
    orphan_ctx c = *(orphan_ctx *)ctx;
    c.model = model;
    char *dir = model_dir(c.st, model);
    if (!dir)
        return fxu_oom(c.err, c.errlen);
    int rc = each_entry(dir, remove_if_orphan, &c);
    if (rc == -1) /* not a directory: not ours, leave it */
        rc = 0;
    int64_t id;
    if (!rc && model_id(c.st, model, &id, NULL, 0) == FXS_NOT_FOUND && rmdir(dir) == 0)
        logmsg("removed %s (no such model)", dir);
    free(dir);
    return rc;
}

typedef struct {
    int64_t model_id, version;
    uint64_t bytes;
    char *name;
    char *path;
    char sha[65];
    char *unusable; /* the verdict */
} check_row;

static void check_rows_free(check_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].name);
        free(rows[i].path);
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
    int rc = prepare(st, "SELECT v.model_id, v.version, v.weights_bytes, v.sha256, m.name "
                         "FROM versions v JOIN models m ON m.id = v.model_id", &s, err, errlen);
    if (rc)
        return rc;
    check_row *rows = NULL;
    size_t cnt = 0, cap = 0;
    int r;
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
        check_row *c = &rows[cnt];
        memset(c, 0, sizeof *c);
        c->model_id = sqlite3_column_int64(s, 0);
        c->version = sqlite3_column_int64(s, 1);
        c->bytes = (uint64_t)sqlite3_column_int64(s, 2);
        snprintf(c->sha, sizeof c->sha, "%s", (const char *)sqlite3_column_text(s, 3));
        c->name = xstrdup((const char *)sqlite3_column_text(s, 4));
        c->path = c->name ? weights_path(st, c->name, c->version) : NULL;
        cnt++;
        if (!c->path)
            rc = fxu_oom(err, errlen);
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_fail(st, err, errlen, "reading versions");
    sqlite3_finalize(s);
    if (rc) {
        check_rows_free(rows, cnt);
        return rc;
    }
    *out = rows;
    *n = cnt;
    return 0;
}

static int set_unusable(fxdb_store *st, int64_t model_id, int64_t version, const char *why,
                        char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = prepare(st, "UPDATE versions SET unusable = ? WHERE model_id = ? AND version = ?",
                     &s, err, errlen);
    if (rc)
        return rc;
    if (why)
        sqlite3_bind_text(s, 1, why, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 1);
    sqlite3_bind_int64(s, 2, model_id);
    sqlite3_bind_int64(s, 3, version);
    return step_done(st, s, "marking a version unusable", err, errlen);
}

/* Checks every version's file and records the verdicts. */
static int verify_versions(fxdb_store *st, char *err, size_t errlen)
{
    check_row *rows = NULL;
    size_t n = 0;
    int rc = load_check_rows(st, &rows, &n, err, errlen);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        rows[i].unusable = check_weights(rows[i].path, rows[i].bytes, rows[i].sha);
        if (rows[i].unusable)
            logmsg("version %" PRId64 " of model \"%s\" is unusable: %s", rows[i].version,
                   rows[i].name, rows[i].unusable);
    }
    rc = exec(st, "BEGIN IMMEDIATE", err, errlen);
    for (size_t i = 0; !rc && i < n; i++)
        rc = set_unusable(st, rows[i].model_id, rows[i].version, rows[i].unusable, err, errlen);
    if (!rc)
        rc = exec(st, "COMMIT", err, errlen);
    if (rc)
        rollback(st);
    check_rows_free(rows, n);
    return rc;
}

static int recover(fxdb_store *st, char *err, size_t errlen)
{
    each_entry(st->tmp_dir, remove_any, NULL);
    each_entry(st->dir, remove_if_temp, NULL);
    orphan_ctx c = { st, NULL, err, errlen };
    int rc = each_entry(st->models_dir, remove_orphans_in, &c);
    if (rc == -1) {
        fxu_seterr(err, errlen, "cannot open %s: %s", st->models_dir, strerror(errno));
        return FXS_INTERNAL;
    }
    if (!rc && fxu_fsync_dir(st->models_dir, err, errlen) != 0)
        rc = FXS_INTERNAL;
    return rc ? rc : verify_versions(st, err, errlen);
}

/* ---------------------------------------------------------- open/close */

static int take_lock(fxdb_store *st, char *err, size_t errlen)
{
    char *path = fxu_strf("%s/LOCK", st->dir);
    if (!path)
        return fxu_oom(err, errlen);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fxu_seterr(err, errlen, "cannot open %s: %s", path, strerror(errno));
        free(path);
        return FXS_INTERNAL;
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
        return FXS_FAILED_PRECONDITION;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        logmsg("cannot write the pid into %s: %s", path, strerror(errno)); /* cosmetic */
    free(path);
    st->lock_fd = fd;
    return 0;
}

void fxdb_store_close(fxdb_store *st)
{
    if (!st)
        return;
    if (st->db && sqlite3_close(st->db) != SQLITE_OK)
        logmsg("closing the database: %s", sqlite3_errmsg(st->db)); /* an unfinalized stmt */
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&st->mu);
    free(st->dir);
    free(st->models_dir);
    free(st->tmp_dir);
    free(st);
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
        return FXS_INTERNAL;
    }
    int rc = configure_db(st, err, errlen);
    int was = 0;
    if (!rc)
        rc = migrate(st, &was, err, errlen);
    if (!rc && was == 0 && dir_has_entries(st->models_dir)) {
        fxu_seterr(err, errlen, "store: %s is a new database but %s holds files; refusing to "
               "treat them as orphans (restore fluxion.db or move models/ away)", path,
               st->models_dir);
        rc = FXS_FAILED_PRECONDITION;
    }
    free(path);
    return rc;
}

fxdb_store *fxdb_store_open(const char *dir, char *err, size_t errlen)
{
    if (!dir || !*dir) {
        fxu_seterr(err, errlen, "store: no data directory given");
        return NULL;
    }
    fxdb_store *st = calloc(1, sizeof *st);
    if (!st) {
        fxu_oom(err, errlen);
        return NULL;
    }
    st->lock_fd = -1;
    pthread_mutex_init(&st->mu, NULL);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    st->dir = strndup(dir, n);
    st->models_dir = st->dir ? fxu_strf("%s/models", st->dir) : NULL;
    st->tmp_dir = st->dir ? fxu_strf("%s/tmp", st->dir) : NULL;
    if (!st->dir || !st->models_dir || !st->tmp_dir) {
        fxu_oom(err, errlen);
        fxdb_store_close(st);
        return NULL;
    }
    if (fxu_mkdir_p(st->dir, err, errlen) != 0 || take_lock(st, err, errlen) != 0 ||
        fxu_mkdir(st->models_dir, err, errlen) != 0 ||
        fxu_mkdir(st->tmp_dir, err, errlen) != 0 || open_db(st, err, errlen) != 0 ||
        recover(st, err, errlen) != 0) {
        fxdb_store_close(st);
        return NULL;
    }
    return st;
}

const char *fxdb_store_dir(const fxdb_store *st)
{
    return st ? st->dir : NULL;
}

/* ----------------------------------------------------------- records */

void fxdb_model_rec_free(fxdb_model_rec *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->description);
    free(m->spec);
    for (int i = 0; i < m->n_versions; i++)
        free(m->versions[i].source);
    free(m->versions);
    memset(m, 0, sizeof *m);
}

static int load_versions(fxdb_store *st, int64_t id, fxdb_model_rec *m, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = prepare(st, "SELECT version, created_ms, source, weights_bytes, sha256 "
                         "FROM versions WHERE model_id = ? AND unusable IS NULL "
                         "ORDER BY version", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    int cap = 0, r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (m->n_versions == cap) {
            cap = cap ? 2 * cap : 4;
            fxdb_version_rec *nv = realloc(m->versions, (size_t)cap * sizeof *nv);
            if (!nv) {
                rc = fxu_oom(err, errlen);
                break;
            }
            m->versions = nv;
        }
        fxdb_version_rec *v = &m->versions[m->n_versions];
        memset(v, 0, sizeof *v);
        v->version = sqlite3_column_int64(s, 0);
        v->created_ms = sqlite3_column_int64(s, 1);
        v->source = xstrdup((const char *)sqlite3_column_text(s, 2));
        v->weights_bytes = (uint64_t)sqlite3_column_int64(s, 3);
        snprintf(v->sha256, sizeof v->sha256, "%s", (const char *)sqlite3_column_text(s, 4));
        m->n_versions++;
        if (!v->source) {
            rc = fxu_oom(err, errlen);
            break;
        }
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_fail(st, err, errlen, "reading versions");
    sqlite3_finalize(s);
    return rc;
}

#define MODEL_COLS "id, name, description, spec, seed, loaded, created_ms"

/* A model record from a row of MODEL_COLS. */
static int load_model(fxdb_store *st, sqlite3_stmt *s, fxdb_model_rec *m, char *err,
                      size_t errlen)
{
    memset(m, 0, sizeof *m);
    m->name = xstrdup((const char *)sqlite3_column_text(s, 1));
    m->description = xstrdup((const char *)sqlite3_column_text(s, 2));
    const void *spec = sqlite3_column_blob(s, 3);
    m->spec_len = (size_t)sqlite3_column_bytes(s, 3);
    if (m->spec_len > 0 && (m->spec = malloc(m->spec_len)) != NULL)
        memcpy(m->spec, spec, m->spec_len);
    m->seed = (uint64_t)sqlite3_column_int64(s, 4);
    m->loaded = sqlite3_column_int(s, 5) != 0;
    m->created_ms = sqlite3_column_int64(s, 6);
    int rc = 0;
    if (!m->name || !m->description || (m->spec_len > 0 && !m->spec))
        rc = fxu_oom(err, errlen);
    if (!rc)
        rc = load_versions(st, sqlite3_column_int64(s, 0), m, err, errlen);
    if (rc)
        fxdb_model_rec_free(m);
    return rc;
}

static int check_args(fxdb_store *st, const char *name, char *err, size_t errlen)
{
    if (!st) {
        fxu_seterr(err, errlen, "store: no store");
        return FXS_INVALID_ARGUMENT;
    }
    return fxdb_model_name_ok(name, err, errlen) ? 0 : FXS_INVALID_ARGUMENT;
}

int fxdb_store_get_model(fxdb_store *st, const char *name, fxdb_model_rec *out, char *err,
                        size_t errlen)
{
    int rc = check_args(st, name, err, errlen);
    if (rc)
        return rc;
    if (!out) {
        fxu_seterr(err, errlen, "store: get_model: no output record");
        return FXS_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    rc = prepare(st, "SELECT " MODEL_COLS " FROM models WHERE name = ?", &s, err, errlen);
    if (!rc) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW)
            rc = load_model(st, s, out, err, errlen);
        else if (r == SQLITE_DONE) {
            fxu_seterr(err, errlen, "model \"%s\" not found", name);
            rc = FXS_NOT_FOUND;
        } else
            rc = db_fail(st, err, errlen, "reading a model");
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fxdb_store_list_models(fxdb_store *st, fxdb_model_rec **out, int *n, char *err, size_t errlen)
{
    if (!st || !out || !n) {
        fxu_seterr(err, errlen, "store: list_models: missing argument");
        return FXS_INVALID_ARGUMENT;
    }
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    int rc = prepare(st, "SELECT " MODEL_COLS " FROM models ORDER BY name", &s, err, errlen);
    fxdb_model_rec *recs = NULL;
    int cnt = 0, cap = 0, r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 8;
            fxdb_model_rec *nr = realloc(recs, (size_t)cap * sizeof *nr);
            if (!nr) {
                rc = fxu_oom(err, errlen);
                break;
            }
            recs = nr;
        }
        rc = load_model(st, s, &recs[cnt], err, errlen);
        if (!rc)
            cnt++;
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_fail(st, err, errlen, "listing models");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->mu);
    if (rc) {
        for (int i = 0; i < cnt; i++)
            fxdb_model_rec_free(&recs[i]);
        free(recs);
        return rc;
    }
    *out = recs;
    *n = cnt;
    return 0;
}

/* ------------------------------------------------------------ writing */

static int insert_version(fxdb_store *st, int64_t id, int64_t version, const char *source,
                          size_t len, const char *sha, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = prepare(st, "INSERT INTO versions (model_id, version, created_ms, source, "
                         "weights_bytes, sha256) VALUES (?, ?, ?, ?, ?, ?)", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_int64(s, 3, fxu_now_ms());
    sqlite3_bind_text(s, 4, source ? source : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (int64_t)len);
    sqlite3_bind_text(s, 6, sha, -1, SQLITE_STATIC);
    return step_done(st, s, "inserting a version", err, errlen);
}

static int insert_model(fxdb_store *st, const char *name, const char *description,
                        const void *spec, size_t spec_len, uint64_t seed, bool loaded,
                        int64_t *id, char *err, size_t errlen)
{
    if (spec_len > INT_MAX) {
        fxu_seterr(err, errlen, "model spec is too large (%zu bytes)", spec_len);
        return FXS_INVALID_ARGUMENT;
    }
    sqlite3_stmt *s;
    int rc = prepare(st, "INSERT INTO models (name, description, spec, seed, loaded, "
                         "created_ms) VALUES (?, ?, ?, ?, ?, ?)", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, description ? description : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 3, spec_len ? spec : "", (int)spec_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (int64_t)seed);
    sqlite3_bind_int(s, 5, loaded ? 1 : 0);
    sqlite3_bind_int64(s, 6, fxu_now_ms());
    rc = step_done(st, s, "inserting a model", err, errlen);
    *id = sqlite3_last_insert_rowid(st->db);
    return rc;
}

/* What a new version needs: its weights, already in tmp/ (fsynced). */
typedef struct {
    const char *name;
    const char *source;
    size_t len;
    char sha[65];
    char *tmp;
} new_weights;

static int stage_weights(fxdb_store *st, new_weights *w, const char *name, const void *data,
                         size_t len, const char *source, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    if (!data && len > 0) {
        fxu_seterr(err, errlen, "store: no weights data (%zu bytes claimed)", len);
        return FXS_INVALID_ARGUMENT;
    }
    w->name = name;
    w->source = source;
    w->len = len;
    fxu_sha256_hex(data, len, w->sha);
    char e[512];
    if (fxu_write_temp(st->tmp_dir, "weights", data, len, &w->tmp, e, sizeof e) != 0) {
        fxu_seterr(err, errlen, "store: %s", e);
        return FXS_INTERNAL;
    }
    return 0;
}

static void unstage_weights(new_weights *w)
{
    if (w->tmp)
        unlink(w->tmp);
    free(w->tmp);
    w->tmp = NULL;
}

/* Commits, or rolls back and returns rc. */
static int finish_tx(fxdb_store *st, int rc, char *err, size_t errlen)
{
    if (!rc)
        rc = exec(st, "COMMIT", err, errlen);
    if (rc)
        rollback(st);
    return rc;
}

/* Decides, inside the transaction, which model (*id) and version number
 * (*version) the staged weights become; may insert the model row. */
typedef int (*version_prelude)(fxdb_store *st, void *ctx, int64_t *id, int64_t *version,
                               char *err, size_t errlen);

/* One transaction: the prelude, the staged weights renamed into place, the
 * version row, commit. On any failure the weights file is removed again. */
static int write_version(fxdb_store *st, new_weights *w, version_prelude prelude, void *ctx,
                         int64_t *version, char *err, size_t errlen)
{
    int64_t id = 0;
    char *path = NULL;
    bool placed = false;
    char e[1024];
    int rc = exec(st, "BEGIN IMMEDIATE", err, errlen);
    if (rc)
        return rc;
    rc = prelude(st, ctx, &id, version, err, errlen);
    if (!rc && !(path = weights_path(st, w->name, *version)))
        rc = fxu_oom(err, errlen);
    if (!rc) {
        if (fxu_rename_durable(w->tmp, path, &placed, e, sizeof e) != 0) {
            fxu_seterr(err, errlen, "store: %s", e);
            rc = FXS_INTERNAL;
        }
        if (placed) {
            /* the temp name is free again: another thread's mkstemp may
             * take it, so it must not be unlinked later */
            free(w->tmp);
            w->tmp = NULL;
        }
    }
    if (!rc)
        rc = insert_version(st, id, *version, w->source, w->len, w->sha, err, errlen);
    rc = finish_tx(st, rc, err, errlen);
    if (rc && placed)
        unlink(path);
    free(path);
    return rc;
}

typedef struct {
    const char *name, *description;
    const void *spec;
    size_t spec_len;
    uint64_t seed;
    bool loaded;
    bool made_dir;
} create_args;

static int create_prelude(fxdb_store *st, void *ctx, int64_t *id, int64_t *version, char *err,
                          size_t errlen)
{
    create_args *a = ctx;
    int rc = query_int(st, "SELECT id FROM models WHERE name = ?", a->name, id, err, errlen);
    if (rc == 0) {
        fxu_seterr(err, errlen, "model \"%s\" already exists", a->name);
        return FXS_ALREADY_EXISTS;
    }
    if (rc != FXS_NOT_FOUND)
        return rc;
    char *dir = model_dir(st, a->name);
    if (!dir)
        return fxu_oom(err, errlen);
    char e[512];
    rc = 0;
    if (mkdir(dir, 0755) == 0) {
        a->made_dir = true;
        if (fxu_fsync_dir(st->models_dir, e, sizeof e) != 0) {
            fxu_seterr(err, errlen, "store: %s", e);
            rc = FXS_INTERNAL;
        }
    } else if (errno != EEXIST) { /* left by a delete that could not remove it */
        fxu_seterr(err, errlen, "store: cannot create %s: %s", dir, strerror(errno));
        rc = FXS_INTERNAL;
    }
    free(dir);
    if (!rc)
        rc = insert_model(st, a->name, a->description, a->spec, a->spec_len, a->seed,
                          a->loaded, id, err, errlen);
    *version = 1;
    return rc;
}

int fxdb_store_create_model(fxdb_store *st, const char *name, const char *description,
                           const void *spec, size_t spec_len, uint64_t seed, bool loaded,
                           const void *weights, size_t weights_len, const char *source,
                           char *err, size_t errlen)
{
    int rc = check_args(st, name, err, errlen);
    if (rc)
        return rc;
    if (!spec && spec_len > 0) {
        fxu_seterr(err, errlen, "store: no spec data (%zu bytes claimed)", spec_len);
        return FXS_INVALID_ARGUMENT;
    }
    new_weights w;
    if ((rc = stage_weights(st, &w, name, weights, weights_len, source, err, errlen)))
        return rc;
    create_args a = { name, description, spec, spec_len, seed, loaded, false };
    int64_t version;
    pthread_mutex_lock(&st->mu);
    rc = write_version(st, &w, create_prelude, &a, &version, err, errlen);
    if (rc && a.made_dir) {
        char *dir = model_dir(st, name);
        if (dir)
            rmdir(dir);
        free(dir);
    }
    pthread_mutex_unlock(&st->mu);
    unstage_weights(&w);
    return rc;
}

static int add_prelude(fxdb_store *st, void *ctx, int64_t *id, int64_t *version, char *err,
                       size_t errlen)
{
    const char *name = ctx;
    int rc = model_id(st, name, id, err, errlen);
    /* unusable versions count: their numbers are never reused */
    if (!rc)
        rc = query_int(st, "SELECT COALESCE(MAX(v.version), 0) + 1 FROM versions v "
                           "JOIN models m ON m.id = v.model_id WHERE m.name = ?",
                       name, version, err, errlen);
    return rc;
}

int fxdb_store_add_version(fxdb_store *st, const char *name, const void *weights,
                          size_t weights_len, const char *source, int64_t *version,
                          char *err, size_t errlen)
{
    int rc = check_args(st, name, err, errlen);
    if (rc)
        return rc;
    new_weights w;
    if ((rc = stage_weights(st, &w, name, weights, weights_len, source, err, errlen)))
        return rc;
    int64_t v = 0;
    pthread_mutex_lock(&st->mu);
    rc = write_version(st, &w, add_prelude, (void *)name, &v, err, errlen);
    pthread_mutex_unlock(&st->mu);
    unstage_weights(&w);
    if (!rc && version)
        *version = v;
    return rc;
}

static int remove_ours(const char *dir, const char *fname, void *ctx)
{
    int64_t v;
    bool canonical;
    if (is_temp_name(fname) || parse_weights_name(fname, &v, &canonical))
        remove_file(dir, fname, NULL);
    return 0;
}

/* Removes models/<name>/ and what we put in it. */
static void remove_model_files(fxdb_store *st, const char *name)
{
    char *dir = model_dir(st, name);
    if (!dir)
        return;
    each_entry(dir, remove_ours, NULL);
    if (rmdir(dir) != 0 && errno != ENOENT)
        logmsg("cannot remove %s: %s", dir, strerror(errno));
    fxu_fsync_dir(st->models_dir, NULL, 0);
    free(dir);
}

int fxdb_store_delete_model(fxdb_store *st, const char *name, char *err, size_t errlen)
{
    int rc = check_args(st, name, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&st->mu);
    int64_t id = 0;
    rc = exec(st, "BEGIN IMMEDIATE", err, errlen);
    if (!rc) {
        sqlite3_stmt *s = NULL;
        rc = model_id(st, name, &id, err, errlen);
        if (!rc)
            rc = prepare(st, "DELETE FROM models WHERE id = ?", &s, err, errlen);
        if (!rc) {
            sqlite3_bind_int64(s, 1, id);
            rc = step_done(st, s, "deleting a model", err, errlen);
        }
        rc = finish_tx(st, rc, err, errlen);
    }
    /* rows first: a crash now leaves only orphan files, removed at open */
    if (!rc)
        remove_model_files(st, name);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fxdb_store_set_loaded(fxdb_store *st, const char *name, bool loaded, char *err,
                         size_t errlen)
{
    int rc = check_args(st, name, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    rc = prepare(st, "UPDATE models SET loaded = ? WHERE name = ?", &s, err, errlen);
    if (!rc) {
        sqlite3_bind_int(s, 1, loaded ? 1 : 0);
        sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
        rc = step_done(st, s, "updating a model", err, errlen);
    }
    if (!rc && sqlite3_changes(st->db) == 0) {
        fxu_seterr(err, errlen, "model \"%s\" not found", name);
        rc = FXS_NOT_FOUND;
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ------------------------------------------------------------ reading */

typedef struct {
    int64_t model_id, version;
    uint64_t bytes;
    char sha[65];
    char *unusable;
} version_row;

/* The row of a version (0: the latest usable one). */
static int find_version(fxdb_store *st, const char *name, int64_t version, version_row *out,
                        char *err, size_t errlen)
{
    int64_t id;
    int rc = model_id(st, name, &id, err, errlen);
    if (rc)
        return rc;
    sqlite3_stmt *s;
    rc = prepare(st, version > 0
                         ? "SELECT version, weights_bytes, sha256, unusable FROM versions "
                           "WHERE model_id = ? AND version = ?"
                         : "SELECT version, weights_bytes, sha256, unusable FROM versions "
                           "WHERE model_id = ? AND unusable IS NULL "
                           "ORDER BY version DESC LIMIT 1",
                 &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    if (version > 0)
        sqlite3_bind_int64(s, 2, version);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        out->model_id = id;
        out->version = sqlite3_column_int64(s, 0);
        out->bytes = (uint64_t)sqlite3_column_int64(s, 1);
        snprintf(out->sha, sizeof out->sha, "%s", (const char *)sqlite3_column_text(s, 2));
        if (sqlite3_column_type(s, 3) != SQLITE_NULL)
            out->unusable = xstrdup((const char *)sqlite3_column_text(s, 3));
    } else if (r == SQLITE_DONE && version > 0) {
        fxu_seterr(err, errlen, "model \"%s\" has no version %" PRId64, name, version);
        rc = FXS_NOT_FOUND;
    } else if (r == SQLITE_DONE) {
        fxu_seterr(err, errlen, "model \"%s\" has no usable version (see the daemon's log)", name);
        rc = FXS_DATA_LOSS;
    } else {
        rc = db_fail(st, err, errlen, "reading a version");
    }
    sqlite3_finalize(s);
    return rc;
}

/* Under the mutex: records and logs why a version cannot be used; err
 * gets the message for the caller (FXS_DATA_LOSS). */
static void mark_unusable(fxdb_store *st, const char *name, const version_row *row,
                          const char *why, char *err, size_t errlen)
{
    logmsg("version %" PRId64 " of model \"%s\" is unusable: %s", row->version, name, why);
    char e[256];
    if (set_unusable(st, row->model_id, row->version, why, e, sizeof e) != 0)
        logmsg("%s", e);
    fxu_seterr(err, errlen, "version %" PRId64 " of model \"%s\" is unusable: %s", row->version,
           name, why);
}

/* Under the mutex: the version's row and its file opened (an open file
 * stays readable even if the model is deleted meanwhile). */
static int open_version(fxdb_store *st, const char *name, int64_t version, version_row *row,
                        int *fd, char **path, char *err, size_t errlen)
{
    memset(row, 0, sizeof *row);
    pthread_mutex_lock(&st->mu);
    int rc = find_version(st, name, version, row, err, errlen);
    if (!rc && row->unusable) {
        fxu_seterr(err, errlen, "version %" PRId64 " of model \"%s\" is unusable: %s", row->version,
               name, row->unusable);
        rc = FXS_DATA_LOSS;
    }
    if (!rc && !(*path = weights_path(st, name, row->version)))
        rc = fxu_oom(err, errlen);
    if (!rc && (*fd = open(*path, O_RDONLY | O_CLOEXEC)) < 0) {
        char *why = fxu_strf("cannot open weights %s: %s", *path, strerror(errno));
        mark_unusable(st, name, row, why ? why : "cannot open weights", err, errlen);
        free(why);
        rc = FXS_DATA_LOSS;
    }
    pthread_mutex_unlock(&st->mu);
    free(row->unusable);
    row->unusable = NULL;
    return rc;
}

int fxdb_store_read_weights(fxdb_store *st, const char *name, int64_t version, void **buf,
                           size_t *len, char *err, size_t errlen)
{
    int rc = check_args(st, name, err, errlen);
    if (rc)
        return rc;
    if (!buf || !len || version < 0) {
        fxu_seterr(err, errlen, version < 0 ? "version %" PRId64 " is negative (0: the latest)"
                                        : "store: read_weights: missing argument",
               version);
        return FXS_INVALID_ARGUMENT;
    }
    version_row row;
    int fd = -1;
    char *path = NULL;
    rc = open_version(st, name, version, &row, &fd, &path, err, errlen);
    void *b = NULL;
    size_t n = 0;
    char e[512];
    if (!rc && fxu_read_fd(fd, path, &b, &n, e, sizeof e) != 0) {
        fxu_seterr(err, errlen, "store: %s", e);
        rc = FXS_INTERNAL;
    }
    char *bad = NULL;
    if (!rc) {
        char hex[65];
        fxu_sha256_hex(b, n, hex);
        if (n != row.bytes)
            bad = fxu_strf("weights %s have %zu bytes, expected %" PRIu64, path, n, row.bytes);
        else if (strcmp(hex, row.sha) != 0)
            bad = fxu_strf("weights %s have SHA-256 %s, expected %s", path, hex, row.sha);
    }
    if (bad) {
        pthread_mutex_lock(&st->mu);
        mark_unusable(st, name, &row, bad, err, errlen);
        pthread_mutex_unlock(&st->mu);
        free(bad);
        free(b);
        rc = FXS_DATA_LOSS;
    }
    if (fd >= 0)
        close(fd);
    free(path);
    if (!rc) {
        *buf = b;
        *len = n;
    }
    return rc;
}

/* ------------------------------------------- tables of other modules */

static int run_locked(fxdb_store *st, bool tx, fxdb_db_fn fn, void *ctx, char *err, size_t errlen)
{
    if (!st || !fn) {
        fxu_seterr(err, errlen, "store: no store or function");
        return FXS_INTERNAL;
    }
    pthread_mutex_lock(&st->mu);
    int rc = tx ? exec(st, "BEGIN IMMEDIATE", err, errlen) : 0;
    if (!rc) {
        rc = fn(st->db, ctx, err, errlen);
        if (tx)
            rc = finish_tx(st, rc, err, errlen);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fxdb_store_tx(fxdb_store *st, fxdb_db_fn fn, void *ctx, char *err, size_t errlen)
{
    return run_locked(st, true, fn, ctx, err, errlen);
}

int fxdb_store_read(fxdb_store *st, fxdb_db_fn fn, void *ctx, char *err, size_t errlen)
{
    return run_locked(st, false, fn, ctx, err, errlen);
}

const char *fxdb_store_tmp_dir(const fxdb_store *st)
{
    return st->tmp_dir;
}
