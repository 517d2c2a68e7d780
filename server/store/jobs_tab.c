/*
 * jobs_tab.c - the jobs table (see store.h): one row per training job, its
 * record a packed fluxion.v1.Job, with the columns the store filters and
 * checks deletes on (state, model, datasets) kept beside it. training/ owns
 * the queue, checkpoints and TensorBoard files.
 *
 * A job's result version is linked to the job by versions.job_id, written
 * in the transaction that marks the job finished (fxdb_job_finish). The
 * version's source text is the client's to write; it links nothing.
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"

typedef struct {
    int64_t id;
    int64_t version;      /* finish: the result version */
    const fxdb_job_cols *cols;
    fxdb_pack_fn pack;
    void *pack_ctx;
} save_op;

static const char *col(const char *s)
{
    return s ? s : "";
}

/* UPDATE of the row's columns and record, packed now that the id is known. */
static int update_row(fxdb_store *st, save_op *o, int64_t now, char *err, size_t errlen)
{
    void *blob = NULL;
    size_t len = 0;
    int rc = o->pack(o->pack_ctx, o->id, o->version, &blob, &len, err, errlen);
    if (rc)
        return rc;
    sqlite3_stmt *s = NULL;
    if (len > INT32_MAX)
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: job %" PRId64 ": a record of "
                      "%zu bytes", o->id, len);
    if (!rc)
        rc = fxdb__prepare(st, "UPDATE jobs SET state = ?1, model = ?2, record = ?3, "
                               "updated_ms = ?4, dataset = ?6, validation_dataset = ?7, "
                               "base_version = ?8, "
                               "team = CASE WHEN instr(?2, '/') > 0 "
                               "THEN substr(?2, 1, instr(?2, '/') - 1) ELSE team END "
                               "WHERE id = ?5", &s, err, errlen);
    if (!rc) {
        sqlite3_bind_text(s, 1, col(o->cols->state), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, col(o->cols->model), -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 3, len ? blob : "", (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, now);
        sqlite3_bind_int64(s, 5, o->id);
        sqlite3_bind_text(s, 6, col(o->cols->dataset), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 7, col(o->cols->validation_dataset), -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 8, o->cols->base_version);
        rc = fxdb__step_done(st, s, "saving a job", err, errlen);
    }
    if (!rc && sqlite3_changes(st->db) != 1)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "store: job %" PRId64 " has no row", o->id);
    free(blob);
    return rc;
}

/* A new job needs its model and datasets to exist at the moment its row
 * goes in: with the deletes' check of the jobs (fxdb__refuse_if_jobs_use),
 * a delete and a submission racing each other cannot both succeed. So does
 * the version it trains from (versions_tab.c keeps it from then on), of
 * the model it was validated against, not one created again since under
 * its name (whose versions are numbered anew, maybe for another spec). */
static int check_inputs(fxdb_store *st, const fxdb_job_cols *c, char *err, size_t errlen)
{
    int64_t id, model_id;
    int rc = fxdb__model_id_of(st, col(c->model), c->model_id, &model_id, err, errlen);
    if (!rc && c->base_version > 0) {
        sqlite3_stmt *s;
        if ((rc = fxdb__prepare(st, "SELECT 1 FROM versions WHERE model_id = ? AND version = ?",
                                &s, err, errlen)))
            return rc;
        sqlite3_bind_int64(s, 1, model_id);
        sqlite3_bind_int64(s, 2, c->base_version);
        int r = sqlite3_step(s);
        if (r == SQLITE_DONE)
            rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "model '%s' has no version %" PRId64
                          " (deleted meanwhile): the job would train from it",
                          fxp_key_name(col(c->model)), c->base_version);
        else if (r != SQLITE_ROW)
            rc = fxdb__fail(st, err, errlen, "finding a job's base version");
        sqlite3_finalize(s);
    }
    const char *ds[2] = { col(c->dataset), col(c->validation_dataset) };
    for (int i = 0; !rc && i < 2; i++) {
        if (!*ds[i])
            continue;
        rc = fxdb__query_int(st, "SELECT id FROM datasets WHERE name = ?", ds[i], &id, err,
                             errlen);
        if (rc == FXS_NOT_FOUND)
            fxu_seterr(err, errlen, "no dataset named '%s'", ds[i]);
    }
    return rc;
}

static int save_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    save_op *o = ctx;
    int64_t now = fxu_now_ms();
    if (!o->id) {
        sqlite3_stmt *s;
        int rc = check_inputs(st, o->cols, err, errlen);
        if (rc)
            return rc;
        rc = fxdb__prepare(st, "INSERT INTO jobs (state, model, record, created_ms, "
                                   "updated_ms, team) VALUES (?1, ?2, x'', ?3, ?3, ?4)", &s, err,
                           errlen);
        if (rc)
            return rc;
        char team[FXP_TEAM_MAX + 1];
        fxdb__key_team(col(o->cols->model), team, sizeof team);
        sqlite3_bind_text(s, 1, col(o->cols->state), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, col(o->cols->model), -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, now);
        sqlite3_bind_text(s, 4, team, -1, SQLITE_TRANSIENT);
        if ((rc = fxdb__step_done(st, s, "adding a job", err, errlen)))
            return rc;
        o->id = sqlite3_last_insert_rowid(st->db);
    }
    return update_row(st, o, now, err, errlen);
}

int fxdb_job_save(fxdb_store *st, int64_t *id, const fxdb_job_cols *cols, fxdb_pack_fn pack,
                  void *ctx, char *err, size_t errlen)
{
    if (!id || *id < 0 || !cols || !pack)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: job_save: missing argument");
    save_op o = { .id = *id, .cols = cols, .pack = pack, .pack_ctx = ctx };
    int rc = fxdb__tx(st, save_fn, &o, err, errlen);
    if (!rc)
        *id = o.id;
    return rc;
}

/* fxdb__after_fn: inside the version's transaction, the job's row. */
static int finish_fn(fxdb_store *st, void *ctx, int64_t version, char *err, size_t errlen)
{
    save_op *o = ctx;
    o->version = version;
    /* The weights fit the base version's spec revision (revisions_tab.c),
     * which a `model update` since the job started is not. The base stays
     * while the job is queued or running (versions_tab.c refuses to delete
     * it, retention keeps it); were it gone, the result's spec would be
     * unknown: refused rather than stored under the latest revision, which
     * a `model update` may have made another shape. */
    if (o->cols->base_version > 0) {
        sqlite3_stmt *s;
        int rc = fxdb__prepare(st, "SELECT b.spec_revision FROM versions b JOIN models m ON "
                               "m.id = b.model_id WHERE m.name = ?1 AND b.version = ?2",
                               &s, err, errlen);
        if (rc)
            return rc;
        sqlite3_bind_text(s, 1, o->cols->model, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, o->cols->base_version);
        int r = sqlite3_step(s);
        int64_t revision = r == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        if (r == SQLITE_DONE)
            rc = fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "model '%s': version %" PRId64
                          ", which the job trained from, is gone, so the spec its result "
                          "fits is unknown", fxp_key_name(o->cols->model),
                          o->cols->base_version);
        else if (r != SQLITE_ROW)
            rc = fxdb__fail(st, err, errlen, "reading the base version's spec revision");
        sqlite3_finalize(s);
        if (rc)
            return rc;
        if ((rc = fxdb__prepare(st, "UPDATE versions SET spec_revision = ?1 WHERE version = ?2 "
                                "AND model_id = (SELECT id FROM models WHERE name = ?3)",
                                &s, err, errlen)))
            return rc;
        sqlite3_bind_int64(s, 1, revision);
        sqlite3_bind_int64(s, 2, version);
        sqlite3_bind_text(s, 3, o->cols->model, -1, SQLITE_STATIC);
        if ((rc = fxdb__step_done(st, s, "recording the result's spec revision", err, errlen)))
            return rc;
    }
    return update_row(st, o, fxu_now_ms(), err, errlen);
}

int fxdb_job_finish(fxdb_store *st, int64_t id, const fxdb_job_cols *cols, const void *weights,
                    size_t weights_len, const char *source, fxdb_pack_fn pack, void *ctx,
                    int64_t *version, char *err, size_t errlen)
{
    return fxdb_job_finish_gated(st, id, cols, weights, weights_len, source, NULL, pack, ctx,
                                 version, err, errlen);
}

int fxdb_job_finish_gated(fxdb_store *st, int64_t id, const fxdb_job_cols *cols,
                          const void *weights, size_t weights_len, const char *source,
                          const fxdb_gate *gate, fxdb_pack_fn pack, void *ctx, int64_t *version,
                          char *err, size_t errlen)
{
    if (id <= 0 || !cols || !cols->model || !pack)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: job_finish: missing argument");
    save_op o = { .id = id, .cols = cols, .pack = pack, .pack_ctx = ctx };
    /* the gate decides inside the transaction, before the record is packed */
    fxdb__vopts vo = { .promote = true, .gate = gate, .job_id = id, .after = finish_fn,
                       .after_ctx = &o };
    return fxdb__add_version(st, cols->model, weights, weights_len, source, &vo, version, err,
                             errlen);
}

typedef struct {
    int64_t id, version;
} version_op;

static int version_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    version_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT COALESCE(MAX(version), 0) FROM versions WHERE job_id = ?",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, o->id);
    if (sqlite3_step(s) == SQLITE_ROW)
        o->version = sqlite3_column_int64(s, 0);
    else
        rc = fxdb__fail(st, err, errlen, "finding a job's version");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_job_version(fxdb_store *st, int64_t id, int64_t *version, char *err, size_t errlen)
{
    if (!version)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: job_version: missing argument");
    version_op o = { .id = id };
    int rc = fxdb__read(st, version_fn, &o, err, errlen);
    *version = rc ? 0 : o.version;
    return rc;
}

typedef struct {
    int64_t id;
    const char *team, *state, *model;
    fxdb_row *rows;
    int n;
} list_op;

static int list_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    list_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT id, record FROM jobs WHERE (?1 = 0 OR id = ?1) AND "
                               "(?2 = '' OR state = ?2) AND (?3 = '' OR model = ?3) AND "
                               "(?4 = '' OR team = ?4) ORDER BY id", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 4, o->team, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 1, o->id);
    sqlite3_bind_text(s, 2, o->state, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, o->model, -1, SQLITE_STATIC);
    int r = SQLITE_DONE, cap = 0;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        fxdb_row *row = fxdb__rows_add(&o->rows, &o->n, &cap);
        if (!row) {
            rc = fxu_oom(err, errlen);
            break;
        }
        row->id = sqlite3_column_int64(s, 0);
        rc = fxdb__column_blob(s, 1, &row->blob, &row->len, err, errlen);
    }
    if (!rc && r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "reading jobs");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_job_list(fxdb_store *st, int64_t id, const char *team, const char *state,
                  const char *model, fxdb_row **rows, int *n, char *err, size_t errlen)
{
    if (!rows || !n)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: job_list: missing argument");
    list_op o = { .id = id > 0 ? id : 0, .team = col(team), .state = col(state),
                  .model = col(model) };
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

/* The ids in the message: enough to act on, bounded. */
#define MAX_NAMED_JOBS 10

int fxdb__refuse_if_jobs_use(fxdb_store *st, const char *what, const char *name, char *err,
                             size_t errlen)
{
    bool model = strcmp(what, "model") == 0;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, model ? "SELECT id FROM jobs WHERE state IN ('QUEUED', 'RUNNING') "
                                       "AND model = ?1 ORDER BY id"
                                     : "SELECT id FROM jobs WHERE state IN ('QUEUED', 'RUNNING') "
                                       "AND (dataset = ?1 OR validation_dataset = ?1) ORDER BY id",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
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
        rc = fxdb__fail(st, err, errlen, "finding the jobs that use a model or dataset");
    sqlite3_finalize(s);
    if (rc || n == 0)
        return rc;
    if (n > MAX_NAMED_JOBS)
        snprintf(ids + used, sizeof ids - used, " and %d more", n - MAX_NAMED_JOBS);
    return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "%s '%s' is used by queued or running "
                    "training job%s %s; cancel %s (or wait until %s finished) first", what, name,
                    n == 1 ? "" : "s", ids, n == 1 ? "it" : "them", n == 1 ? "it has" : "they have");
}
