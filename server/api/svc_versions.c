/*
 * svc_versions.c - the life of a version in ModelService (docs/versions.md):
 * UpdateVersions (promote, rollback, aliases, pins, retention, deleting a
 * version), what the Model message shows of it, and ModelInfer's
 * model_version as an alias.
 *
 * The store moves an alias and records its history in one transaction;
 * serving then reloads the model, which builds production's version and
 * swaps it in (requests in flight finish on the old instance). Two changes
 * at once each reload under serving's per-model lock and each builds what
 * production is when it runs, so the last one leaves the served version
 * equal to production.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/log.h"

void fxa_versions_describe(pba *a, Fluxion__V1__Model *m, const fxdb_model_rec *rec)
{
    m->production_version = rec->production;
    m->keep_last = rec->keep_last;
    m->aliases = pba_array(a, (size_t)rec->n_aliases + 1, sizeof *m->aliases);
    for (int i = 0; m->aliases && i < rec->n_aliases; i++) {
        Fluxion__V1__VersionAlias *al = PBA_NEW(a, Fluxion__V1__VersionAlias,
                                                fluxion__v1__version_alias__init);
        if (!al)
            return;
        al->name = pba_strdup(a, rec->aliases[i].name);
        al->version = rec->aliases[i].version;
        al->updated_unix_ms = rec->aliases[i].updated_ms;
        m->aliases[m->n_aliases++] = al;
    }
    m->history = pba_array(a, (size_t)rec->n_history + 1, sizeof *m->history);
    for (int i = 0; m->history && i < rec->n_history; i++) {
        const fxdb_history_rec *h = &rec->history[i];
        Fluxion__V1__AliasMove *mv = PBA_NEW(a, Fluxion__V1__AliasMove,
                                             fluxion__v1__alias_move__init);
        if (!mv)
            return;
        mv->alias = pba_strdup(a, h->alias);
        mv->from_version = h->from_version;
        mv->to_version = h->to_version;
        mv->unix_ms = h->at_ms;
        mv->reason = pba_strdup(a, h->reason);
        mv->rolled_back = h->undone;
        m->history[m->n_history++] = mv;
    }
    for (size_t i = 0; i < m->n_versions; i++) {
        Fluxion__V1__ModelVersion *v = m->versions[i];
        const fxdb_version_rec *vr = &rec->versions[i];
        v->pinned = vr->pinned;
        v->job_id = vr->job_id;
        v->metric_name = pba_strdup(a, vr->has_metric ? vr->metric_name : "");
        v->metric = vr->has_metric ? vr->metric : 0;
        v->aliases = pba_array(a, (size_t)rec->n_aliases + 1, sizeof *v->aliases);
        for (int k = 0; v->aliases && k < rec->n_aliases; k++)
            if (rec->aliases[k].version == vr->version)
                v->aliases[v->n_aliases++] = rec->aliases[k].name; /* rec outlives the reply */
    }
}

int fxa_resolve_version(fxa_daemon *d, const char *key, const char *s, int64_t *v, char *err,
                        size_t errlen)
{
    *v = 0;
    if (!s || !*s || strcmp(s, FXDB_PRODUCTION) == 0) /* the served one */
        return 0;
    if (*s >= '0' && *s <= '9') {
        char *end;
        long long x = strtoll(s, &end, 10);
        if (*end || x <= 0)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "version '%.64s' is not a version "
                            "number (1, 2, ...) or an alias name", s);
        *v = x;
        return 0;
    }
    char aerr[FXS_ERRLEN];
    if (!fxdb_alias_name_ok(s, aerr, sizeof aerr))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "model_version: %s", aerr);
    return fxdb_alias_get(d->store, key, s, v, err, errlen);
}

/* The served instance follows production; 0 when the model is not served. */
static int follow(fxa_daemon *d, const char *key, char *err, size_t errlen)
{
    return fxsv_serving_reload(d->serving, key, err, errlen);
}

void fxa_update_versions(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__UpdateVersionsRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    if (!fxa_key(call, "model", req->name, key, sizeof key))
        return;
    const char *reason = req->reason && *req->reason ? req->reason : NULL;
    if (reason && strlen(reason) > 256) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "reason: longer than 256 bytes");
        return;
    }
    int rc = 0;
    int64_t from = 0, to = 0;
    bool moved = false;
    switch (req->action_case) {
    case FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_PROMOTE:
        rc = fxdb_alias_set(d->store, key, FXDB_PRODUCTION, req->promote,
                            reason ? reason : "promote", &from, err, sizeof err);
        to = req->promote;
        moved = true;
        break;
    case FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_ROLLBACK:
        rc = fxdb_alias_rollback(d->store, key, FXDB_PRODUCTION, &from, &to, err, sizeof err);
        moved = true;
        break;
    case FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_SET_ALIAS: {
        const Fluxion__V1__SetAliasAction *sa = req->set_alias;
        if (!sa || !sa->alias) {
            rc = fxu_fail(err, sizeof err, FXS_INVALID_ARGUMENT, "set_alias: no alias");
            break;
        }
        rc = fxdb_alias_set(d->store, key, sa->alias, sa->version, reason ? reason : "alias set",
                            &from, err, sizeof err);
        to = sa->version;
        moved = strcmp(sa->alias, FXDB_PRODUCTION) == 0;
        break;
    }
    case FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_DELETE_ALIAS:
        rc = fxdb_alias_delete(d->store, key, req->delete_alias, err, sizeof err);
        break;
    case FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_PIN:
    case FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_UNPIN: {
        bool pin = req->action_case == FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_PIN;
        rc = fxdb_version_pin(d->store, key, pin ? req->pin : req->unpin, pin, err, sizeof err);
        break;
    }
    case FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_KEEP_LAST: {
        int dropped = 0;
        rc = fxdb_model_set_retention(d->store, key, req->keep_last, &dropped, err, sizeof err);
        if (!rc)
            fxl_log(FXL_INFO, "models", "retention set model=%s keep_last=%u dropped=%d", key,
                    req->keep_last, dropped);
        if (!rc && dropped)
            fxsv_serving_prune(d->serving, key);
        break;
    }
    case FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_DELETE_VERSION:
        rc = fxdb_version_delete(d->store, key, req->delete_version, err, sizeof err);
        if (!rc)
            fxsv_serving_prune(d->serving, key); /* its instance and statistics */
        break;
    default:
        rc = fxu_fail(err, sizeof err, FXS_INVALID_ARGUMENT, "no action: set one of promote, "
                      "rollback, set_alias, delete_alias, pin, unpin, keep_last, delete_version");
    }
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    if (moved) {
        fxl_log(FXL_INFO, "models", "production moved model=%s from=%" PRId64 " to=%" PRId64, key,
                from, to);
        if ((rc = follow(d, key, err, sizeof err)) != 0) {
            fxr_fail(call, rc, "production is version %" PRId64 " now, but it cannot be "
                     "served: %s", to, err);
            return;
        }
    }
    fxa_model_reply(call, d, key, false);
}
