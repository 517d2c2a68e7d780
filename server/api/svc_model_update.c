/*
 * svc_model_update.c - ModelService/UpdateModelSpec: a new spec revision
 * for an existing model (models/models.h fxm_carry, store/store.h
 * fxdb_store_update_spec). The new spec is built as CreateModel builds
 * one, initialized from the request's seed (else the model's), the latest
 * version's weights are carried over by name where the shape and dtype
 * match, and the result is stored as the next revision with its first
 * version, in one transaction; a served model serves it at once (as after
 * ImportWeights). The reply says what was carried, re-initialized and
 * dropped.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/log.h"
#include "models/models.h"

/* The report's entries as ParameterChange messages in a's memory. */
static Fluxion__V1__ParameterChange **changes(pba *a, const fxm_param_change *c, int n,
                                              size_t *count)
{
    Fluxion__V1__ParameterChange **out = pba_array(a, (size_t)n + 1, sizeof *out);
    *count = 0;
    for (int i = 0; out && i < n; i++) {
        Fluxion__V1__ParameterChange *m = PBA_NEW(a, Fluxion__V1__ParameterChange,
                                                  fluxion__v1__parameter_change__init);
        if (!m)
            break;
        m->name = pba_strdup(a, c[i].name);
        if (c[i].ndim >= 0 &&
            (m->shape = pba_array(a, (size_t)c[i].ndim + 1, sizeof *m->shape))) {
            memcpy(m->shape, c[i].shape, (size_t)c[i].ndim * sizeof *m->shape);
            m->n_shape = (size_t)c[i].ndim;
        }
        if (c[i].old_ndim >= 0 &&
            (m->old_shape = pba_array(a, (size_t)c[i].old_ndim + 1, sizeof *m->old_shape))) {
            memcpy(m->old_shape, c[i].old_shape, (size_t)c[i].old_ndim * sizeof *m->old_shape);
            m->n_old_shape = (size_t)c[i].old_ndim;
        }
        out[(*count)++] = m;
    }
    return out;
}

static void reply(fxr_call *call, fxa_daemon *d, const char *key, int64_t revision,
                  int64_t version, int64_t from, const fxm_carry_report *rep)
{
    char err[FXS_ERRLEN];
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(d->store, key, &rec, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    pba a = {0};
    Fluxion__V1__ModelSpec *spec = NULL;
    Fluxion__V1__UpdateModelSpecResponse *r = PBA_NEW(
        &a, Fluxion__V1__UpdateModelSpecResponse, fluxion__v1__update_model_spec_response__init);
    if (r) {
        r->model = fxa_model_msg(&a, call, d->store, &rec, NULL, &spec);
        r->revision = revision;
        r->version = version;
        r->from_version = from;
        r->carried = changes(&a, rep->carried, rep->n_carried, &r->n_carried);
        r->reinitialized = changes(&a, rep->reinit, rep->n_reinit, &r->n_reinitialized);
        r->dropped = changes(&a, rep->dropped, rep->n_dropped, &r->n_dropped);
    }
    if (!r || a.failed)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &r->base);
    if (spec)
        fluxion__v1__model_spec__free_unpacked(spec, NULL);
    pba_free(&a);
    fxdb_model_rec_free(&rec);
}

/* The new graph (built and initialized from seed) with the latest
 * version's weights carried in, as safetensors *w; *from: that version. */
static int carried_weights(fxa_daemon *d, const char *key,
                           const Fluxion__V1__UpdateModelSpecRequest *req, fxm_carry_report *rep,
                           void **w, size_t *wlen, int64_t *from, int64_t *model_id, char *err,
                           size_t errlen)
{
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(d->store, key, &rec, err, errlen);
    if (rc)
        return rc;
    uint64_t seed = req->seed ? req->seed : rec.seed;
    int64_t seed_of = rec.id;
    fxdb_model_rec_free(&rec);
    char gerr[FXS_ERRLEN - 16];
    fxg_graph *g = NULL;
    fxg_options go = {.seed = seed, .max_params = d->max_params};
    if ((rc = fxg_build(req->spec, &go, &g, gerr, sizeof gerr)))
        return fxu_fail(err, errlen, rc, "spec: %s", gerr);
    fxg_drop_grads(g);
    fxm_load_opts lo = {.max_params = d->max_params, .inference_only = true};
    fxm_loaded old;
    rc = fxm_load_version(d->store, key, 0, &lo, &old, err, errlen);
    if (!rc) {
        *from = old.version;
        *model_id = old.model_id;
        rc = old.model_id != seed_of /* the seed was another model's */
                 ? fxu_fail(err, errlen, FXS_ABORTED, "model '%s' was deleted and created "
                            "again meanwhile: try again", req->name)
                 : fxm_carry(old.g, g, rep, err, errlen);
        fxg_free(old.g);
    }
    if (!rc)
        rc = fxg_save_weights(g, w, wlen, err, errlen) ? FXS_RESOURCE_EXHAUSTED : 0;
    fxg_free(g);
    return rc;
}

void fxa_update_model_spec(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__UpdateModelSpecRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    if (!fxa_key(call, "model", req->name, key, sizeof key))
        return;
    if (!req->spec) {
        fxr_fail(call, FXS_INVALID_ARGUMENT,
                 "spec: missing (the model's new inputs, nodes and outputs)");
        return;
    }
    if (!fxa_model_stored_or_fail(d, call, key))
        return;
    fxm_carry_report rep;
    memset(&rep, 0, sizeof rep);
    void *w = NULL, *spec = NULL;
    size_t wlen = 0, slen = fluxion__v1__model_spec__get_packed_size(req->spec);
    int64_t from = 0, revision = 0, version = 0, model_id = 0;
    int rc = carried_weights(d, key, req, &rep, &w, &wlen, &from, &model_id, err, sizeof err);
    if (!rc && !(spec = malloc(slen ? slen : 1)))
        rc = fxu_oom(err, sizeof err);
    if (!rc) {
        fluxion__v1__model_spec__pack(req->spec, spec);
        char source[96];
        snprintf(source, sizeof source, "update (from v%" PRId64 ": %d carried, %d new)", from,
                 rep.n_carried, rep.n_reinit);
        /* into the model carried from: not one created again since */
        rc = fxdb_store_update_spec(d->store, key, model_id, spec, slen, w, wlen, source,
                                    &revision, &version, err, sizeof err);
    }
    free(w);
    free(spec);
    if (rc) {
        fxm_carry_report_free(&rep);
        fxr_fail(call, rc, "%s", err);
        return;
    }
    fxl_log(FXL_INFO, "models",
            "spec updated model=%s revision=%" PRId64 " version=%" PRId64 " carried=%d "
            "reinitialized=%d dropped=%d",
            key, revision, version, rep.n_carried, rep.n_reinit, rep.n_dropped);
    if ((rc = fxsv_serving_reload(d->serving, key, err, sizeof err)) != 0)
        fxr_fail(call, rc, "stored as revision %" PRId64 " version %" PRId64
                 ", but cannot be served: %s", revision, version, err);
    else
        reply(call, d, key, revision, version, from, &rep);
    fxm_carry_report_free(&rep);
}
