/*
 * servecfg_tab.c - the serving_config table (see store.h): a model's
 * batching settings as a packed fluxion.v1.BatchingConfig, written by
 * serving/servecfg.c. A read is a plain read (no transaction); the row of a
 * deleted model goes in the same transaction as the model (models_tab.c).
 */
#define _GNU_SOURCE
#include "store/db.h"

#include <stdlib.h>

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

static int put_fn(fxdb_store *st, void *ctx, char *err, size_t errlen)
{
    cfg_op *o = ctx;
    sqlite3_stmt *s;
    int rc = fxdb__prepare(st, "INSERT OR REPLACE INTO serving_config (model, config) "
                               "VALUES (?, ?)", &s, err, errlen);
    if (rc)
        return rc;
    sqlite3_bind_text(s, 1, o->model, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, o->in_len ? o->in : "", (int)o->in_len, SQLITE_STATIC);
    return fxdb__step_done(st, s, "saving serving settings", err, errlen);
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
