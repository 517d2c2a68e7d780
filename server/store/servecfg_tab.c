/*
 * servecfg_tab.c - the serving_config table (see store.h): a model's
 * batching settings as a packed fluxion.v1.BatchingConfig, written by
 * serving/servecfg.c. A read is a plain read (no transaction); the row of a
 * deleted model goes in the same transaction as the model (models_tab.c).
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <stdlib.h>

#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"

typedef struct {
    const char *model;
    const void *in;
    size_t in_len;
    void **out;
    size_t *out_len;
} cfg_op;

static int get_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    cfg_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT config FROM serving_config WHERE model = ?", &s, err,
                           errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->model, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        rc = fxdb__column_blob(s, 0, o->out, o->out_len, err, errlen);
    else if (r == SQLITE_DONE)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "no serving settings stored for model '%s'",
                      o->model);
    else
        rc = fxdb__fail(st, err, errlen, "reading serving settings");
    sqlite3_finalize(s);
    return rc;
}

int fxdb_servecfg_get(fxdb_store *st, const char *model, void **config, size_t *len, char *err,
                      size_t errlen)
{
    if (!model || !config || !len)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: servecfg_get: missing argument");
    *config = NULL;
    *len = 0;
    int rc = fxdb__check_name(st, model, err, errlen);
    if (rc)
        return rc;
    cfg_op o = { .model = model, .out = config, .out_len = len };
    return fxdb__read(st, get_fn, &o, err, errlen);
}

/* A record naming a canary version that is not stored (deleted meanwhile:
 * SetCanary checked it before this transaction) is refused. */
static int check_canary(fxdb_store *st, const cfg_op *o, char *err, size_t errlen)
{
    int64_t v = st->canary_fn ? st->canary_fn(o->in, o->in_len) : 0;
    if (v <= 0)
        return 0;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT 1 FROM versions v JOIN models m ON m.id = v.model_id "
                           "WHERE m.name = ? AND v.version = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, v);
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    if (r == SQLITE_DONE)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "model '%s' has no version %lld (deleted "
                        "meanwhile): the canary cannot be set to it", fxp_key_name(o->model),
                        (long long)v);
    return r == SQLITE_ROW ? 0 : fxdb__fail(st, err, errlen, "checking the canary's version");
}

static int put_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    cfg_op *o = ctx;
    sqlite3_stmt *s;
    int rc = check_canary(st, o, err, errlen);
    if (rc || (rc = fxdb__prepare(st, "INSERT OR REPLACE INTO serving_config (model, config) "
                                      "VALUES (?, ?)", &s, err, errlen)))
        return rc;
    sqlite3_bind_text(s, 1, o->model, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, o->in_len ? o->in : "", (int)o->in_len, SQLITE_STATIC);
    return fxdb__step_done(st, s, "saving serving settings", err, errlen);
}

int fxdb__canary_of(fxdb_store *st, int64_t model_id, int64_t *version, char *err,
                    size_t errlen)
{
    *version = 0;
    if (!st->canary_fn)
        return 0;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "SELECT c.config FROM serving_config c JOIN models m "
                           "ON c.model = m.name WHERE m.id = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, model_id);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        *version = st->canary_fn(sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0));
    else if (r != SQLITE_DONE)
        rc = fxdb__fail(st, err, errlen, "reading serving settings");
    sqlite3_finalize(s);
    return rc;
}

void fxdb_store_set_canary_fn(fxdb_store *st, fxdb_canary_fn fn)
{
    pthread_mutex_lock(&st->mu);
    st->canary_fn = fn;
    pthread_mutex_unlock(&st->mu);
}

int fxdb_servecfg_put(fxdb_store *st, const char *model, const void *config, size_t len,
                      char *err, size_t errlen)
{
    if (!model || (!config && len) || len > INT32_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "store: servecfg_put: bad argument");
    int rc = fxdb__check_name(st, model, err, errlen);
    if (rc)
        return rc;
    cfg_op o = { .model = model, .in = config, .in_len = len };
    return fxdb__tx(st, put_fn, &o, err, errlen);
}

int fxdb__servecfg_forget(fxdb_store *st, const char *model, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "DELETE FROM serving_config WHERE model = ?", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    return fxdb__step_done(st, s, "forgetting serving settings", err, errlen);
}

static int delete_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    return fxdb__servecfg_forget(st, ((cfg_op *)ctx)->model, err, errlen);
}

int fxdb_servecfg_delete(fxdb_store *st, const char *model, char *err, size_t errlen)
{
    int rc = fxdb__check_name(st, model, err, errlen);
    if (rc)
        return rc;
    cfg_op o = { .model = model };
    return fxdb__tx(st, delete_fn, &o, err, errlen);
}
