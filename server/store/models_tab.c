/*
 * models_tab.c - the models and versions tables and the weights files
 * under DIR/models/<team>/<name>/ (see store.h). name is always a key.
 *
 * Durability. New weights are written to tmp/ and fsynced outside the
 * mutex (the slow part), then, under the mutex and inside a transaction,
 * renamed to models/<team>/<name>/v<N>.safetensors, the directory fsynced, the rows
 * inserted and the transaction committed. A crash before the commit leaves
 * a file no row refers to, which the next open removes (recovery.c); after
 * it, both. A delete removes the rows first, then the files.
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"

/* A copy of a column's text ("" for NULL); NULL when out of memory. */
static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

/* ----------------------------------------------------------- records */

void fxdb_model_rec_free(fxdb_model_rec *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->description);
    free(m->spec);
    fxdb__free_version_meta(m);
    for (int i = 0; i < m->n_versions; i++) {
        free(m->versions[i].source);
        free(m->versions[i].metric_name);
    }
    free(m->versions);
    memset(m, 0, sizeof *m);
}

static int load_versions(fxdb_store *st, int64_t id, fxdb_model_rec *m, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT version, created_ms, source, weights_bytes, sha256, "
                           "spec_revision, pinned, metric_name, metric, COALESCE(job_id, 0) "
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
        v->spec_revision = sqlite3_column_int64(s, 5);
        v->pinned = sqlite3_column_int(s, 6) != 0;
        v->has_metric = sqlite3_column_type(s, 8) != SQLITE_NULL;
        v->metric_name = xstrdup((const char *)sqlite3_column_text(s, 7));
        v->metric = sqlite3_column_double(s, 8);
        v->job_id = sqlite3_column_int64(s, 9);
        m->n_versions++;
        if (!v->source || !v->metric_name) {
            rc = fxu_oom(err, errlen);
            break;
        }
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "reading versions");
    sqlite3_finalize(s);
    return rc;
}

#define MODEL_COLS "id, name, description, spec, seed, loaded, created_ms, keep_last"

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
    m->keep_last = (uint32_t)sqlite3_column_int64(s, 7);
    int rc = 0;
    if (!m->name || !m->description || (m->spec_len > 0 && !m->spec))
        rc = fxu_oom(err, errlen);
    int64_t id = sqlite3_column_int64(s, 0);
    m->id = id;
    if (!rc)
        rc = load_versions(st, id, m, err, errlen);
    /* the spec is the latest version's revision (revision 1: models.spec) */
    m->spec_revision = m->n_versions ? m->versions[m->n_versions - 1].spec_revision : 1;
    if (!rc)
        rc = fxdb__revision_count(st, id, &m->revisions, err, errlen);
    if (!rc && m->spec_revision != 1) {
        free(m->spec);
        m->spec = NULL;
        rc = fxdb__revision_spec(st, id, m->name, m->spec_revision, &m->spec, &m->spec_len, err,
                                 errlen);
    }
    if (!rc)
        rc = fxdb__load_version_meta(st, id, m, err, errlen);
    if (rc)
        fxdb_model_rec_free(m);
    return rc;
}

int fxdb_store_get_model(fxdb_store *st, const char *name, fxdb_model_rec *out, char *err,
                        size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    if (!out) {
        fxu_seterr(err, errlen, "store: get_model: no output record");
        return FXS_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    rc = fxdb__prepare(st, "SELECT " MODEL_COLS " FROM models WHERE name = ?", &s, err, errlen);
    if (!rc) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW)
            rc = load_model(st, s, out, err, errlen);
        else if (r == SQLITE_DONE) {
            fxu_seterr(err, errlen, "model \"%s\" not found", name);
            rc = FXS_NOT_FOUND;
        } else
            rc = fxdb__fail(st, err, errlen, "reading a model");
        sqlite3_finalize(s);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fxdb_store_list_models(fxdb_store *st, const char *team, fxdb_model_rec **out, int *n,
                           char *err, size_t errlen)
{
    if (!st || !out || !n) {
        fxu_seterr(err, errlen, "store: list_models: missing argument");
        return FXS_INVALID_ARGUMENT;
    }
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT " MODEL_COLS " FROM models WHERE ?1 = '' OR team = ?1 "
                           "ORDER BY name", &s, err, errlen);
    if (!rc)
        sqlite3_bind_text(s, 1, team ? team : "", -1, SQLITE_STATIC);
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
        rc = fxdb__fail(st, err, errlen, "listing models");
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

/* job_id 0: no job made it (NULL in the row). */
static int insert_version(fxdb_store *st, int64_t id, int64_t version, const char *source,
                          size_t len, const char *sha, int64_t job_id, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    /* its spec revision: the latest usable version's (revisions_tab.c) */
    int rc = fxdb__prepare(st, "INSERT INTO versions (model_id, version, created_ms, source, "
                           "weights_bytes, sha256, job_id, spec_revision) VALUES (?1, ?2, ?3, "
                           "?4, ?5, ?6, ?7, COALESCE((SELECT spec_revision FROM versions WHERE "
                           "model_id = ?1 AND unusable IS NULL ORDER BY version DESC LIMIT 1), "
                           "1))", &s, err, errlen);
    if (rc)
        return rc;
    if (job_id > 0)
        sqlite3_bind_int64(s, 7, job_id);
    else
        sqlite3_bind_null(s, 7);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_int64(s, 3, fxu_now_ms());
    sqlite3_bind_text(s, 4, source ? source : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (int64_t)len);
    sqlite3_bind_text(s, 6, sha, -1, SQLITE_STATIC);
    rc = fxdb__step_done(st, s, "inserting a version", err, errlen);
    if (!rc && !(rc = fxdb__prepare(st, "UPDATE models SET last_version = MAX(last_version, ?) "
                                        "WHERE id = ?", &s, err, errlen))) {
        sqlite3_bind_int64(s, 1, version);
        sqlite3_bind_int64(s, 2, id);
        rc = fxdb__step_done(st, s, "numbering a version", err, errlen);
    }
    return rc;
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
    int rc = fxdb__prepare(st, "INSERT INTO models (name, description, spec, seed, loaded, "
                           "created_ms, team) VALUES (?, ?, ?, ?, ?, ?, ?)", &s, err, errlen);
    if (rc)
        return rc;
    char team[FXP_TEAM_MAX + 1];
    fxdb__key_team(name, team, sizeof team);
    sqlite3_bind_text(s, 7, team, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, description ? description : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 3, spec_len ? spec : "", (int)spec_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (int64_t)seed);
    sqlite3_bind_int(s, 5, loaded ? 1 : 0);
    sqlite3_bind_int64(s, 6, fxu_now_ms());
    rc = fxdb__step_done(st, s, "inserting a model", err, errlen);
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
    fxdb__vopts o;           /* promotion, the job, the after hook */
    int64_t *dropped;        /* retention: versions whose files go after the commit */
    int n_dropped;
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
    int rc = fxu_write_temp(st->tmp_dir, "weights", data, len, &w->tmp, e, sizeof e);
    if (rc) /* a full disk: RESOURCE_EXHAUSTED */
        fxu_seterr(err, errlen, "store: %s", e);
    return rc;
}

static void unstage_weights(new_weights *w)
{
    if (w->tmp)
        unlink(w->tmp);
    free(w->tmp);
    w->tmp = NULL;
    free(w->dropped);
    w->dropped = NULL;
}

/* Decides, inside the transaction, which model (*id) and version number
 * (*version) the staged weights become; may insert the model row. */
typedef int (*version_prelude)(fxdb_store *st, void *ctx, int64_t *id, int64_t *version,
                               char *err, size_t errlen);

/* One transaction: the prelude, the staged weights renamed into place, the
 * version row, w->after, commit. On any failure the weights file is removed
 * again. */
static int write_version(fxdb_store *st, new_weights *w, version_prelude prelude, void *ctx,
                         int64_t *version, char *err, size_t errlen)
{
    int64_t id = 0;
    char *path = NULL;
    bool placed = false;
    char e[1024];
    int rc = fxdb__exec(st, "BEGIN IMMEDIATE", err, errlen);
    if (rc)
        return rc;
    rc = prelude(st, ctx, &id, version, err, errlen);
    if (!rc && !(path = fxdb__weights_path(st, w->name, *version)))
        rc = fxu_oom(err, errlen);
    if (!rc) {
        if ((rc = fxu_rename_durable(w->tmp, path, &placed, e, sizeof e)) != 0)
            fxu_seterr(err, errlen, "store: %s", e);
        if (placed) {
            /* the temp name is free again: another thread's mkstemp may
             * take it, so it must not be unlinked later */
            free(w->tmp);
            w->tmp = NULL;
        }
    }
    if (!rc)
        rc = insert_version(st, id, *version, w->source, w->len, w->sha, w->o.job_id, err,
                            errlen);
    if (!rc)
        rc = fxdb__settle_version(st, id, *version, &w->o, err, errlen);
    if (!rc && w->o.after)
        rc = w->o.after(st, w->o.after_ctx, *version, err, errlen);
    if (!rc)
        rc = fxdb__retain(st, id, &w->dropped, &w->n_dropped, err, errlen);
    rc = fxdb__finish_tx(st, rc, err, errlen);
    if (rc && placed)
        unlink(path);
    if (!rc) /* rows first: a crash before this leaves orphans, removed at open */
        fxdb__remove_version_files(st, w->name, w->dropped, w->n_dropped);
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
    size_t weights_len;
} create_args;

/* mkdir of a directory whose parent is fsynced when it is new; *made tells
 * whether it was (EEXIST is fine: left by a delete that could not remove
 * it, or the team's directory). */
static int make_dir(const char *dir, const char *parent, bool *made, char *err, size_t errlen)
{
    char e[512];
    *made = false;
    if (mkdir(dir, 0755) == 0) {
        *made = true;
        if (fxu_fsync_dir(parent, e, sizeof e) != 0)
            return fxu_fail(err, errlen, FXS_INTERNAL, "store: %s", e);
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    int en = errno;
    return fxu_fail(err, errlen, fxu_errno_status(en), "store: cannot create %s: %s", dir,
                    strerror(en));
}

static int create_prelude(fxdb_store *st, void *ctx, int64_t *id, int64_t *version, char *err,
                          size_t errlen)
{
    create_args *a = ctx;
    int rc = fxdb__query_int(st, "SELECT id FROM models WHERE name = ?", a->name, id, err, errlen);
    if (rc == 0) {
        fxu_seterr(err, errlen, "model \"%s\" already exists", a->name);
        return FXS_ALREADY_EXISTS;
    }
    if (rc != FXS_NOT_FOUND)
        return rc;
    /* the team exists (NOT_FOUND otherwise) and has room */
    if ((rc = fxdb__quota_check(st, a->name, true, a->weights_len, 0, err, errlen)))
        return rc;
    char team[FXP_TEAM_MAX + 1];
    fxdb__key_team(a->name, team, sizeof team);
    char *tdir = fxu_strf("%s/%s", st->models_dir, team);
    char *dir = fxdb__model_dir(st, a->name);
    bool made_team = false;
    if (!tdir || !dir)
        rc = fxu_oom(err, errlen);
    if (!rc)
        rc = make_dir(tdir, st->models_dir, &made_team, err, errlen);
    if (!rc)
        rc = make_dir(dir, tdir, &a->made_dir, err, errlen);
    free(tdir);
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
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    if (!spec && spec_len > 0) {
        fxu_seterr(err, errlen, "store: no spec data (%zu bytes claimed)", spec_len);
        return FXS_INVALID_ARGUMENT;
    }
    new_weights w;
    if ((rc = stage_weights(st, &w, name, weights, weights_len, source, err, errlen)))
        return rc;
    w.o.promote = true;
    create_args a = { name, description, spec, spec_len, seed, loaded, false, weights_len };
    int64_t version;
    pthread_mutex_lock(&st->mu);
    rc = fxdb__reserve_ensure(st, err, errlen);
    if (!rc)
        rc = write_version(st, &w, create_prelude, &a, &version, err, errlen);
    if (rc && a.made_dir) {
        char *dir = fxdb__model_dir(st, name);
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
    const new_weights *w = ctx;
    const char *name = w->name;
    /* weights checked against (or carried from) a model deleted and
     * created again since: its revision numbers start again from 1, for
     * another spec, so fits_revision below would not tell */
    int rc = fxdb__model_id_of(st, name, w->o.fits_model_id, id, err, errlen);
    if (!rc)
        rc = fxdb__quota_check(st, name, false, w->len, 0, err, errlen);
    /* unusable and deleted versions count: their numbers are never reused */
    if (!rc)
        rc = fxdb__query_int(st, "SELECT MAX(m.last_version, COALESCE(MAX(v.version), 0)) + 1 "
                             "FROM models m LEFT JOIN versions v ON m.id = v.model_id "
                             "WHERE m.name = ?", name, version, err, errlen);
    /* The new row takes the latest usable version's revision (insert_version):
     * if UpdateModelSpec made another one since the weights were checked
     * against fits_revision, the version would not fit its own spec and
     * could never be served. */
    int64_t latest = 0;
    if (!rc && w->o.fits_revision > 0 &&
        !(rc = fxdb__query_int(st, "SELECT COALESCE((SELECT v.spec_revision FROM versions v "
                               "JOIN models m ON m.id = v.model_id WHERE m.name = ?1 AND "
                               "v.unusable IS NULL ORDER BY v.version DESC LIMIT 1), 1)",
                               name, &latest, err, errlen)) &&
        latest != w->o.fits_revision)
        rc = fxu_fail(err, errlen, FXS_ABORTED,
                      "model '%s': its spec changed (revision %lld, now %lld) while the "
                      "weights were checked: send them again", fxp_key_name(name),
                      (long long)w->o.fits_revision, (long long)latest);
    return rc;
}

int fxdb__add_version(fxdb_store *st, const char *name, const void *weights, size_t weights_len,
                      const char *source, const fxdb__vopts *o, int64_t *version, char *err,
                      size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    new_weights w;
    if ((rc = stage_weights(st, &w, name, weights, weights_len, source, err, errlen)))
        return rc;
    if (o)
        w.o = *o;
    else
        w.o.promote = true;
    int64_t v = 0;
    pthread_mutex_lock(&st->mu);
    rc = fxdb__reserve_ensure(st, err, errlen);
    if (!rc)
        rc = write_version(st, &w, add_prelude, &w, &v, err, errlen);
    pthread_mutex_unlock(&st->mu);
    unstage_weights(&w);
    if (!rc && version)
        *version = v;
    return rc;
}

int fxdb_store_add_version(fxdb_store *st, const char *name, const void *weights,
                          size_t weights_len, const char *source, int64_t *version,
                          char *err, size_t errlen)
{
    return fxdb__add_version(st, name, weights, weights_len, source, NULL, version, err, errlen);
}

int fxdb_store_add_version_opt(fxdb_store *st, const char *name, const void *weights,
                               size_t weights_len, const char *source, bool promote,
                               int64_t *version, char *err, size_t errlen)
{
    fxdb__vopts o = { .promote = promote };
    return fxdb__add_version(st, name, weights, weights_len, source, &o, version, err, errlen);
}

int fxdb_store_add_version_fit(fxdb_store *st, const char *name, const void *weights,
                               size_t weights_len, const char *source, bool promote,
                               int64_t model_id, int64_t fits_revision, int64_t *version,
                               char *err, size_t errlen)
{
    fxdb__vopts o = { .promote = promote, .fits_revision = fits_revision,
                      .fits_model_id = model_id };
    return fxdb__add_version(st, name, weights, weights_len, source, &o, version, err, errlen);
}

static int remove_ours(const char *dir, const char *fname, void *ctx)
{
    int64_t v;
    bool canonical;
    if (fxdb__is_temp_name(fname) || fxdb__parse_weights_name(fname, &v, &canonical))
        fxdb__remove_file(dir, fname, NULL);
    return 0;
}

/* Removes models/<team>/<name>/ and what we put in it (the team's
 * directory stays). */
static void remove_model_files(fxdb_store *st, const char *name)
{
    char *dir = fxdb__model_dir(st, name);
    if (!dir)
        return;
    fxdb__each_entry(dir, remove_ours, NULL);
    if (rmdir(dir) != 0 && errno != ENOENT)
        fxdb__log(FXL_WARN, "cannot remove a directory path=%s error=\"%s\"", dir, strerror(errno));
    char *slash = strrchr(dir, '/');
    *slash = '\0'; /* models/<team> */
    fxu_fsync_dir(dir, NULL, 0);
    free(dir);
}

/* In the transaction: the rows of the model (its versions cascade) and of
 * its serving settings, unless jobs still need the model. */
static int delete_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    const char *name = ctx;
    int64_t id = 0;
    int rc = fxdb__model_id(st, name, &id, err, errlen);
    if (!rc)
        rc = fxdb__refuse_if_jobs_use(st, "model", name, err, errlen);
    sqlite3_stmt *s;
    if (!rc && !(rc = fxdb__prepare(st, "DELETE FROM models WHERE id = ?", &s, err, errlen))) {
        sqlite3_bind_int64(s, 1, id);
        rc = fxdb__step_done(st, s, "deleting a model", err, errlen);
    }
    if (!rc)
        rc = fxdb__servecfg_forget(st, name, err, errlen);
    return rc;
}

int fxdb_store_delete_model(fxdb_store *st, const char *name, char *err, size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&st->mu);
    rc = fxdb__tx_freeing(st, delete_fn, (void *)name, err, errlen); /* works on a full disk */
    /* rows first: a crash now leaves only orphan files, removed at open */
    if (!rc) {
        remove_model_files(st, name);
        fxdb__reserve_ensure(st, NULL, 0); /* with the room the files left, if it was given up */
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fxdb_store_set_loaded(fxdb_store *st, const char *name, bool loaded, char *err,
                         size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    rc = fxdb__prepare(st, "UPDATE models SET loaded = ? WHERE name = ?", &s, err, errlen);
    if (!rc) {
        sqlite3_bind_int(s, 1, loaded ? 1 : 0);
        sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
        rc = fxdb__step_done(st, s, "updating a model", err, errlen);
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
/* model_id > 0: of that model row only (ABORTED when the name is another's) */
static int find_version(fxdb_store *st, const char *name, int64_t model_id, int64_t version,
                        version_row *out, char *err, size_t errlen)
{
    int64_t id;
    int rc = fxdb__model_id_of(st, name, model_id, &id, err, errlen);
    if (rc)
        return rc;
    sqlite3_stmt *s;
    rc = fxdb__prepare(st, version > 0
                               ? "SELECT version, weights_bytes, sha256, unusable FROM versions "
                                 "WHERE model_id = ? AND version = ?"
                               /* production, or the latest usable one when
                                * production's file is unusable (as before aliases) */
                               : "SELECT v.version, v.weights_bytes, v.sha256, v.unusable "
                                 "FROM versions v LEFT JOIN aliases a ON a.model_id = v.model_id "
                                 "AND a.name = 'production' AND a.version = v.version "
                                 "WHERE v.model_id = ?1 AND v.unusable IS NULL "
                                 "ORDER BY a.version IS NULL, v.version DESC LIMIT 1",
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
        rc = fxdb__fail(st, err, errlen, "reading a version");
    }
    sqlite3_finalize(s);
    return rc;
}

/* Under the mutex: records and logs why a version cannot be used; err
 * gets the message for the caller (FXS_DATA_LOSS). */
static void mark_unusable(fxdb_store *st, const char *name, const version_row *row,
                          const char *why, char *err, size_t errlen)
{
    fxdb__log(FXL_ERROR, "a version is unusable model=%s version=%" PRId64 " reason=\"%s\"", name,
              row->version, why);
    char e[256];
    if (fxdb__set_unusable(st, row->model_id, row->version, why, e, sizeof e) != 0)
        fxdb__log(FXL_ERROR, "cannot mark a version unusable error=\"%s\"", e);
    fxu_seterr(err, errlen, "version %" PRId64 " of model \"%s\" is unusable: %s", row->version,
           name, why);
}

/* Under the mutex: the version's row and its file opened (an open file
 * stays readable even if the model is deleted meanwhile). */
static int open_version(fxdb_store *st, const char *name, int64_t model_id, int64_t version,
                        version_row *row, int *fd, char **path, char *err, size_t errlen)
{
    memset(row, 0, sizeof *row);
    pthread_mutex_lock(&st->mu);
    int rc = find_version(st, name, model_id, version, row, err, errlen);
    if (!rc && row->unusable) {
        fxu_seterr(err, errlen, "version %" PRId64 " of model \"%s\" is unusable: %s", row->version,
               name, row->unusable);
        rc = FXS_DATA_LOSS;
    }
    if (!rc && !(*path = fxdb__weights_path(st, name, row->version)))
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
    return fxdb_store_read_weights_of(st, name, 0, version, buf, len, err, errlen);
}

int fxdb_store_read_weights_of(fxdb_store *st, const char *name, int64_t model_id,
                               int64_t version, void **buf, size_t *len, char *err,
                               size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
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
    rc = open_version(st, name, model_id, version, &row, &fd, &path, err, errlen);
    void *b = NULL;
    size_t n = 0;
    char e[512];
    if (!rc && (rc = fxu_read_fd(fd, path, &b, &n, e, sizeof e)) != 0)
        fxu_seterr(err, errlen, "store: %s", e);
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

