/*
 * upgrade.c - the file side of migration 5 -> 6 (teams, db.c): a data
 * directory from before teams keeps its models in DIR/models/<name>/ and its
 * datasets in DIR/datasets/<name>/; from 6 on they are
 * DIR/models/<team>/<name>/ and DIR/datasets/<team>/<name>/, and every old
 * object belongs to team 'default'.
 *
 * Crash safety. The files move first, outside the transaction (a rename
 * cannot be rolled back), then the SQL of the migration runs in one
 * transaction. Each move renames only when the source exists and the target
 * does not, and the directories are fsynced before the SQL starts, so a
 * crash anywhere leaves a state that the next open completes: moves already
 * done are skipped, the SQL (not committed) runs again.
 *
 * An object named "default". Its old directory IS DIR/models/default, the
 * name the team directory needs. It is renamed to DIR/models/.migrate-default
 * first (a name no object can have: names never start with '.'), the team
 * directory is created, and it moves to DIR/models/default/default like the
 * others. Its old directory holds only files (weights, shards); a team
 * directory holds only directories: that is how a rerun tells which of the
 * two DIR/models/default is.
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/util.h"

#define STAGE_NAME ".migrate-default"

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* True when dir holds a subdirectory (a team directory, as opposed to an
 * old object's directory of files). */
static bool has_subdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = fxu_strf("%s/%s", dir, e->d_name);
        found = p && is_dir(p);
        free(p);
    }
    closedir(d);
    return found;
}

static int rename_logged(const char *from, const char *to, char *err, size_t errlen)
{
    if (rename(from, to) != 0) {
        int e = errno;
        return fxu_fail(err, errlen, fxu_errno_status(e) == FXS_RESOURCE_EXHAUSTED
                                         ? FXS_RESOURCE_EXHAUSTED : FXS_INTERNAL,
                        "store: upgrading to teams: cannot rename %s to %s: %s", from, to,
                        strerror(e));
    }
    fxdb__log(FXL_INFO, "moved into team default from=%s to=%s", from, to);
    return 0;
}

/* The names (without '/') of a table's rows: what still has to move. */
static int old_names(fxdb_store *st, const char *sql, char ***out, int *n, char *err,
                     size_t errlen)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, sql, &s, err, errlen);
    if (rc)
        return rc;
    int cap = 0, r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(*out, (size_t)cap * sizeof *nn);
            if (!nn) {
                rc = fxu_oom(err, errlen);
                break;
            }
            *out = nn;
        }
        if (!((*out)[*n] = strdup((const char *)sqlite3_column_text(s, 0))))
            rc = fxu_oom(err, errlen);
        else
            (*n)++;
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "reading names to upgrade");
    sqlite3_finalize(s);
    return rc;
}

static void names_free(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Moves parent/<name> to parent/default/<name> for each name (see the top
 * of the file). A parent that does not exist has nothing to move. */
static int move_into_default(const char *parent, char **names, int n, char *err, size_t errlen)
{
    if (!is_dir(parent))
        return 0;
    char *team = fxu_strf("%s/default", parent);
    char *stage = fxu_strf("%s/" STAGE_NAME, parent);
    char *dd = fxu_strf("%s/default/default", parent);
    int rc = team && stage && dd ? 0 : fxu_oom(err, errlen);
    bool has_default = false;
    for (int i = 0; i < n; i++)
        has_default |= strcmp(names[i], "default") == 0;
    if (!rc && has_default && !exists(stage) && !exists(dd) && is_dir(team) &&
        !has_subdir(team)) {
        rc = rename_logged(team, stage, err, errlen);
        if (!rc)
            rc = fxu_fsync_dir(parent, err, errlen);
    }
    if (!rc)
        rc = fxu_mkdir(team, err, errlen);
    for (int i = 0; !rc && i < n; i++) {
        bool is_default = strcmp(names[i], "default") == 0;
        char *src = is_default ? strdup(stage) : fxu_strf("%s/%s", parent, names[i]);
        char *dst = fxu_strf("%s/%s", team, names[i]);
        if (!src || !dst)
            rc = fxu_oom(err, errlen);
        else if (exists(src) && !exists(dst))
            rc = rename_logged(src, dst, err, errlen);
        free(src);
        free(dst);
    }
    if (!rc)
        rc = fxu_fsync_dir(team, err, errlen);
    if (!rc)
        rc = fxu_fsync_dir(parent, err, errlen);
    free(team);
    free(stage);
    free(dd);
    return rc;
}

int fxdb__upgrade_files(fxdb_store *st, char *err, size_t errlen)
{
    static const struct {
        const char *table, *sql, *sub;
    } what[] = {
        { "models", "SELECT name FROM models WHERE instr(name, '/') = 0", "models" },
        { "datasets", "SELECT name FROM datasets WHERE instr(name, '/') = 0", "datasets" },
    };
    int rc = 0;
    for (size_t k = 0; !rc && k < sizeof what / sizeof what[0]; k++) {
        char **names = NULL;
        int n = 0;
        int64_t one;
        /* a schema older than the table (datasets came in 1 -> 2) has none to move */
        rc = fxdb__query_int(st, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             what[k].table, &one, err, errlen);
        if (rc == FXS_NOT_FOUND) {
            rc = 0;
            continue;
        }
        if (!rc)
            rc = old_names(st, what[k].sql, &names, &n, err, errlen);
        char *parent = rc ? NULL : fxu_strf("%s/%s", st->dir, what[k].sub);
        if (!rc && !parent)
            rc = fxu_oom(err, errlen);
        if (!rc && n > 0)
            rc = move_into_default(parent, names, n, err, errlen);
        free(parent);
        names_free(names, n);
    }
    return rc;
}

/* Sum of the sizes of the regular files in dir (not recursive: a dataset's
 * directory holds its shards). */
static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *p = fxu_strf("%s/%s", dir, e->d_name);
        struct stat sb;
        if (p && lstat(p, &sb) == 0 && S_ISREG(sb.st_mode))
            total += (uint64_t)sb.st_size;
        free(p);
    }
    closedir(d);
    return total;
}

int fxdb__upgrade_dataset_bytes(fxdb_store *st, char *err, size_t errlen)
{
    char **names;
    int n;
    int rc = old_names(st, "SELECT name FROM datasets WHERE bytes = 0", &names, &n, err,
                       errlen);
    for (int i = 0; !rc && i < n; i++) {
        char *dir = fxu_strf("%s/datasets/%s", st->dir, names[i]);
        if (!dir) {
            rc = fxu_oom(err, errlen);
            break;
        }
        uint64_t bytes = dir_bytes(dir);
        free(dir);
        sqlite3_stmt *s;
        if ((rc = fxdb__prepare(st, "UPDATE datasets SET bytes = ? WHERE name = ?", &s, err,
                                errlen)))
            break;
        sqlite3_bind_int64(s, 1, (int64_t)bytes);
        sqlite3_bind_text(s, 2, names[i], -1, SQLITE_STATIC);
        rc = fxdb__step_done(st, s, "upgrading a dataset's size", err, errlen);
    }
    names_free(names, n);
    return rc;
}
