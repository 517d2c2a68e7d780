/*
 * revisions_tab.c - a model's spec revisions (see store.h): revision 1 is
 * models.spec, the spec the model was created with; `model update` adds
 * revisions 2, 3, ... to the spec_revisions table, each with its first
 * version in the same transaction, and versions.spec_revision says which
 * spec a version's weights fit. A version added later takes the latest
 * usable version's revision (models_tab.c's insert), a job's result its
 * base version's (jobs_tab.c).
 */
#include "store/db.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"

int fxdb__revision_spec(fxdb_store *st, int64_t model_id, const char *name, int64_t revision,
                        void **spec, size_t *len, char *err, size_t errlen)
{
    *spec = NULL;
    *len = 0;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st,
                           revision == 1
                               ? "SELECT spec FROM models WHERE id = ?1"
                               : "SELECT spec FROM spec_revisions WHERE model_id = ?1 AND "
                                 "revision = ?2",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    if (revision != 1)
        sqlite3_bind_int64(s, 2, revision);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        rc = fxdb__column_blob(s, 0, spec, len, err, errlen);
    else if (r == SQLITE_DONE)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "model \"%s\" has no spec revision %" PRId64,
                      name, revision);
    else
        rc = fxdb__fail(st, err, errlen, "reading a spec revision");
    sqlite3_finalize(s);
    return rc;
}

int fxdb__revision_count(fxdb_store *st, int64_t model_id, int64_t *n, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT COALESCE(MAX(revision), 1) FROM spec_revisions "
                               "WHERE model_id = ?",
                           &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    if (sqlite3_step(s) == SQLITE_ROW)
        *n = sqlite3_column_int64(s, 0);
    else
        rc = fxdb__fail(st, err, errlen, "counting spec revisions");
    sqlite3_finalize(s);
    return rc;
}

typedef struct {
    const char *name;
    int64_t want_id;  /* > 0: the model the caller read (read_fn) */
    int64_t model_id;
    int64_t revision; /* out */
    void *spec;       /* in: the spec; out of read_fn: a copy */
    size_t len;
} rev_op;

static int read_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    rev_op *o = ctx;
    int rc = fxdb__model_id_of(st, o->name, o->want_id, &o->model_id, err, errlen);
    if (!rc)
        rc = fxdb__revision_spec(st, o->model_id, o->name, o->revision, &o->spec, &o->len, err,
                                 errlen);
    return rc;
}

int fxdb_store_read_spec(fxdb_store *st, const char *name, int64_t model_id, int64_t revision,
                         void **spec, size_t *len, char *err, size_t errlen)
{
    int rc = fxdb__check_name(st, name, err, errlen);
    if (rc)
        return rc;
    if (!spec || !len || revision < 1)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "store: read_spec: bad argument (revision %" PRId64 ")", revision);
    rev_op o = {.name = name, .want_id = model_id, .revision = revision};
    rc = fxdb__read(st, read_fn, &o, err, errlen);
    if (rc) {
        free(o.spec);
        return rc;
    }
    *spec = o.spec;
    *len = o.len;
    return 0;
}

/* fxdb__after_fn: inside the new version's transaction, the revision row
 * (the next number) and the version's spec_revision. */
static int add_revision_fn(fxdb_store *st, void *ctx, int64_t version, char *err, size_t errlen)
{
    rev_op *o = ctx;
    int rc = fxdb__model_id(st, o->name, &o->model_id, err, errlen);
    if (!rc)
        rc = fxdb__revision_count(st, o->model_id, &o->revision, err, errlen);
    if (rc)
        return rc;
    o->revision++;
    sqlite3_stmt *s;
    rc = fxdb__prepare(st, "INSERT INTO spec_revisions (model_id, revision, spec, created_ms) "
                           "VALUES (?, ?, ?, ?)",
                       &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, o->model_id);
    sqlite3_bind_int64(s, 2, o->revision);
    sqlite3_bind_blob(s, 3, o->len ? o->spec : "", (int)o->len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, fxu_now_ms());
    if ((rc = fxdb__step_done(st, s, "adding a spec revision", err, errlen)))
        return rc;
    rc = fxdb__prepare(st, "UPDATE versions SET spec_revision = ? WHERE model_id = ? AND "
                           "version = ?",
                       &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, o->revision);
    sqlite3_bind_int64(s, 2, o->model_id);
    sqlite3_bind_int64(s, 3, version);
    return fxdb__step_done(st, s, "recording a version's spec revision", err, errlen);
}

int fxdb_store_update_spec(fxdb_store *st, const char *name, int64_t model_id, const void *spec,
                           size_t spec_len, const void *weights, size_t weights_len,
                           const char *source, int64_t *revision, int64_t *version, char *err,
                           size_t errlen)
{
    if ((!spec && spec_len) || spec_len > INT_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "store: update_spec: a spec of %zu bytes", spec_len);
    rev_op o = {.name = name, .spec = (void *)spec, .len = spec_len};
    /* served at once, as an imported version is (production moves to it) */
    fxdb__vopts vo = {.promote = true, .fits_model_id = model_id, .after = add_revision_fn,
                      .after_ctx = &o};
    int rc = fxdb__add_version(st, name, weights, weights_len, source, &vo, version, err, errlen);
    if (!rc && revision)
        *revision = o.revision;
    return rc;
}
