/*
 * svc_model.c - fluxion.v1.ModelService: define, inspect, delete models, and
 * move their weights in and out as safetensors (streamed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "fluxion/v1/model.pb-c.h"
#include "models/graph.h"
#include "models/models.h"
#include "base/log.h"
#include "base/pbarena.h"
#include "serving/servecfg.h"


/* Interface and parameter facts from a graph into m. */
static void describe_graph(pba *a, Fluxion__V1__Model *m, const fxg_graph *g)
{
    int no = fxg_num_outputs(g);
    m->output_specs = pba_array(a, (size_t)no, sizeof *m->output_specs);
    for (int i = 0; m->output_specs && i < no; i++) {
        const fxg_tensor_info *t = fxg_output(g, i);
        Fluxion__V1__TensorSpec *ts = PBA_NEW(a, Fluxion__V1__TensorSpec,
                                              fluxion__v1__tensor_spec__init);
        int64_t *shape = pba_array(a, (size_t)t->ndim, sizeof *shape);
        if (!ts || !shape)
            return;
        ts->name = pba_strdup(a, t->name);
        ts->dtype = fxg_dtype_to_proto(t->dtype);
        memcpy(shape, t->shape, sizeof *shape * (size_t)t->ndim);
        ts->shape = shape;
        ts->n_shape = (size_t)t->ndim;
        m->output_specs[m->n_output_specs++] = ts;
    }
    const fx_params *ps = fxg_params(g);
    m->parameters = pba_array(a, (size_t)ps->count, sizeof *m->parameters);
    for (int i = 0; m->parameters && i < ps->count; i++) {
        const fx_tensor *t = ps->items[i].tensor;
        Fluxion__V1__ParameterInfo *pi = PBA_NEW(a, Fluxion__V1__ParameterInfo,
                                                 fluxion__v1__parameter_info__init);
        int64_t *shape = pba_array(a, (size_t)t->ndim, sizeof *shape);
        if (!pi || !shape)
            return;
        pi->name = pba_strdup(a, ps->items[i].name);
        memcpy(shape, t->shape, sizeof *shape * (size_t)t->ndim);
        pi->shape = shape;
        pi->n_shape = (size_t)t->ndim;
        pi->trainable = fxg_param_trainable(g, i);
        m->parameters[m->n_parameters++] = pi;
    }
    m->num_parameters = (uint64_t)fxg_num_trainable(g);
}

/* A Model message for a stored record (spec unpacked into *spec_out, which
 * the caller frees after the reply); g adds the inferred facts. */
/* The model's batching settings as a message (defaults when none stored). */
static Fluxion__V1__BatchingConfig *config_msg(pba *a, fxdb_store *st, const char *name)
{
    char err[FXS_ERRLEN];
    Fluxion__V1__BatchingConfig *m = PBA_NEW(a, Fluxion__V1__BatchingConfig,
                                             fluxion__v1__batching_config__init);
    uint32_t *pref = pba_array(a, FXB_MAX_PREFERRED, sizeof *pref);
    fxb_config *c = pba_array(a, 1, sizeof *c); /* the message points into it */
    if (!m || !pref || !c)
        return NULL;
    if (fxsv_cfg_load(st, name, c, err, sizeof err) != 0) {
        fxl_log(FXL_WARN, "models", "cannot read serving config model=%s err=\"%s\"", name, err);
        fxb_config_default(c);
    }
    fxsv_cfg_to_msg(c, m, pref);
    fxsv_canary cn;
    if (fxsv_canary_load(st, name, &cn, err, sizeof err) == 0 && cn.version &&
        (m->canary = PBA_NEW(a, Fluxion__V1__CanaryConfig, fluxion__v1__canary_config__init))) {
        m->canary->version = cn.version;
        m->canary->percent = cn.percent;
    }
    return m;
}

Fluxion__V1__Model *fxa_model_msg(pba *a, fxr_call *call, fxdb_store *st,
                                     const fxdb_model_rec *rec, const fxg_graph *g,
                                     Fluxion__V1__ModelSpec **spec_out)
{
    Fluxion__V1__Model *m = PBA_NEW(a, Fluxion__V1__Model, fluxion__v1__model__init);
    if (!m)
        return NULL;
    m->name = pba_strdup(a, fxa_show(call, rec->name));
    m->description = pba_strdup(a, rec->description ? rec->description : "");
    *spec_out = fluxion__v1__model_spec__unpack(NULL, rec->spec_len, rec->spec);
    m->spec = *spec_out;
    m->loaded = rec->loaded;
    m->created_unix_ms = rec->created_ms;
    m->spec_revision = rec->spec_revision;
    m->versions = pba_array(a, (size_t)rec->n_versions, sizeof *m->versions);
    for (int i = 0; m->versions && i < rec->n_versions; i++) {
        const fxdb_version_rec *vr = &rec->versions[i];
        Fluxion__V1__ModelVersion *v = PBA_NEW(a, Fluxion__V1__ModelVersion,
                                               fluxion__v1__model_version__init);
        if (!v)
            break;
        v->version = vr->version;
        v->created_unix_ms = vr->created_ms;
        v->source = pba_strdup(a, vr->source ? vr->source : "");
        v->weights_bytes = vr->weights_bytes;
        v->weights_sha256 = pba_strdup(a, vr->sha256);
        v->spec_revision = vr->spec_revision;
        m->versions[m->n_versions++] = v;
        m->latest_version = vr->version;
    }
    fxa_versions_describe(a, m, rec);
    if (g)
        describe_graph(a, m, g);
    m->serving_config = config_msg(a, st, rec->name);
    return m;
}

void fxa_model_reply(fxr_call *call, fxa_daemon *d, const char *name, bool with_graph)
{
    char err[FXS_ERRLEN];
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(d->store, name, &rec, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    fxsv_served *served = NULL;
    fxg_graph *own = NULL;
    const fxg_graph *g = NULL;
    if (with_graph) {
        if (fxsv_serving_acquire(d->serving, name, 0, &served, err, sizeof err) == 0)
            g = fxsv_served_graph(served);
        else if (fxm_graph_of(&rec, d->max_params, &own, err, sizeof err) == 0)
            g = own;
    }
    pba a = { 0 };
    Fluxion__V1__ModelSpec *spec = NULL;
    Fluxion__V1__Model *m = fxa_model_msg(&a, call, d->store, &rec, g, &spec);
    if (!m || a.failed)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &m->base);
    if (spec)
        fluxion__v1__model_spec__free_unpacked(spec, NULL);
    pba_free(&a);
    fxg_free(own);
    if (served)
        fxsv_served_release(served);
    fxdb_model_rec_free(&rec);
}

/* ------------------------------------------------------------- handlers */

/* Creates model key from a spec and optional safetensors weights (NULL:
 * seeded initialization), stores it as version 1 and serves it unless
 * no_load; replies with the Model or fails the call. source NULL: "init
 * (seed N)" or "create (weights given)". CreateModel and ImportOnnx. */
void fxa_create_model(fxr_call *call, fxa_daemon *d, const char *key, const char *description,
                      const Fluxion__V1__ModelSpec *mspec, const uint8_t *weights, size_t weights_len,
                      uint64_t seed, bool no_load, const char *source_in)
{
    char err[FXS_ERRLEN];
    fxg_options go = { .seed = seed, .max_params = d->max_params };
    fxg_graph *g = NULL;
    int brc = fxg_build(mspec, &go, &g, err, sizeof err);
    if (brc) {
        fxr_fail(call, brc, "spec: %s", err);
        return;
    }
    fxg_drop_grads(g); /* only its weights are stored: not twice the memory */
    char source[256];
    snprintf(source, sizeof source, "init (seed %llu)", (unsigned long long)seed);
    if (weights_len > 0) {
        if ((brc = fxg_load_weights(g, weights, weights_len, err, sizeof err))) {
            fxr_fail(call, brc, "weights: %s", err);
            fxg_free(g);
            return;
        }
        snprintf(source, sizeof source, "create (weights given)");
    }
    if (source_in)
        snprintf(source, sizeof source, "%s", source_in);
    void *w = NULL, *spec = NULL;
    size_t wlen = 0;
    int rc = fxg_save_weights(g, &w, &wlen, err, sizeof err);
    size_t slen = fluxion__v1__model_spec__get_packed_size(mspec);
    if (rc == 0 && !(spec = malloc(slen ? slen : 1))) {
        snprintf(err, sizeof err, "out of memory");
        rc = -1;
    }
    if (rc != 0) {
        fxg_free(g);
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "%s", err);
        free(w);
        return;
    }
    fluxion__v1__model_spec__pack(mspec, spec);
    rc = fxdb_store_create_model(d->store, key, description, spec, slen, seed,
                                !no_load, w, wlen, source, err, sizeof err);
    free(w);
    free(spec);
    if (rc || no_load)
        fxg_free(g);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    fxl_log(FXL_INFO, "models", "model created model=%s weights_bytes=%zu source=\"%s\"", key,
            wlen, source);
    /* Served with the graph made here (version 1), not built again from the
     * store: one copy of the weights less at the peak. */
    if (!no_load && (rc = fxsv_serving_load_graph(d->serving, key, 1, g, err, sizeof err)) != 0) {
        fxr_fail(call, rc, "stored, but cannot be served: %s", err);
        return;
    }
    fxa_model_reply(call, d, key, true);
}

static void create_model(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__CreateModelRequest *req = (const void *)msg;
    char key[FXP_KEY_MAX];
    if (!fxa_key(call, "model", req->name, key, sizeof key))
        return;
    if (!req->spec) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "spec: missing (a model needs inputs, nodes and outputs)");
        return;
    }
    fxa_create_model(call, d, key, req->description, req->spec, req->weights.data,
                     req->weights.len, req->seed, req->no_load, NULL);
}

static void get_model(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    const Fluxion__V1__GetModelRequest *req = (const void *)msg;
    char key[FXP_KEY_MAX];
    if (fxa_key(call, "model", req->name, key, sizeof key))
        fxa_model_reply(call, data, key, true);
}

static void list_models(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    char err[FXS_ERRLEN];
    fxdb_model_rec *recs = NULL;
    int n = 0;
    int rc = fxdb_store_list_models(d->store, fxa_list_team(call), &recs, &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    pba a = { 0 };
    Fluxion__V1__ListModelsResponse resp = FLUXION__V1__LIST_MODELS_RESPONSE__INIT;
    Fluxion__V1__ModelSpec **specs = calloc((size_t)n + 1, sizeof *specs);
    resp.models = pba_array(&a, (size_t)n, sizeof *resp.models);
    for (int i = 0; specs && resp.models && i < n; i++) {
        Fluxion__V1__Model *m = fxa_model_msg(&a, call, d->store, &recs[i], NULL, &specs[i]);
        if (m)
            resp.models[resp.n_models++] = m;
    }
    if (!specs || a.failed)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &resp.base);
    for (int i = 0; specs && i < n; i++)
        if (specs[i])
            fluxion__v1__model_spec__free_unpacked(specs[i], NULL);
    free(specs);
    pba_free(&a);
    for (int i = 0; i < n; i++)
        fxdb_model_rec_free(&recs[i]);
    free(recs);
}

static void delete_model(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__DeleteModelRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    if (!fxa_key(call, "model", req->name, key, sizeof key) ||
        !fxa_model_stored_or_fail(d, call, key))
        return;
    /* The store first: it refuses while jobs use the model (the model then
     * stays served) and forgets the serving settings in the same
     * transaction. Requests in flight finish on the version they hold. */
    int rc = fxdb_store_delete_model(d->store, key, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    /* After the delete: a load racing it ends before this or finds no model. */
    fxsv_serving_unload(d->serving, key, err, sizeof err); /* NOT_FOUND is fine */
    fxsv_serving_forget(d->serving, key); /* its statistics go with it */
    fxl_log(FXL_INFO, "models", "model deleted model=%s", key);
    Fluxion__V1__DeleteModelResponse resp = FLUXION__V1__DELETE_MODEL_RESPONSE__INIT;
    fxr_reply(call, &resp.base);
}

bool fxa_export_target(fxr_call *call, fxa_daemon *d, const char *name, int64_t want,
                       char *key, fxdb_model_rec *rec, int64_t *version)
{
    char err[FXS_ERRLEN];
    if (!fxa_key(call, "model", name, key, FXP_KEY_MAX))
        return false;
    if (want < 0) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "version: %lld is negative (0 means production, the served version)",
                 (long long)want);
        return false;
    }
    int rc = fxdb_store_get_model(d->store, key, rec, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return false;
    }
    *version = want;
    if (!want && (rc = fxm_resolve_version(rec, 0, version, err, sizeof err)) != 0) {
        fxdb_model_rec_free(rec); /* 0: production, the served version */
        fxr_fail(call, rc, "%s", err);
        return false;
    }
    return true;
}

static void export_weights(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__ExportWeightsRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    fxdb_model_rec rec;
    int64_t version;
    if (!fxa_export_target(call, d, req->name, req->version, key, &rec, &version))
        return;
    int64_t model_id = rec.id; /* production was resolved in that model row */
    fxdb_model_rec_free(&rec);
    int rc;
    void *w = NULL;
    size_t wlen = 0;
    rc = fxdb_store_read_weights_of(d->store, key, model_id, version, &w, &wlen, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    size_t chunk = req->chunk_bytes ? req->chunk_bytes : d->chunk_bytes;
    if (chunk < 4096)
        chunk = 4096;
    if (chunk > d->max_message_bytes - 4096)
        chunk = d->max_message_bytes - 4096;
    size_t off = 0;
    do {
        Fluxion__V1__WeightsChunk c = FLUXION__V1__WEIGHTS_CHUNK__INIT;
        if (off == 0) {
            c.name = req->name;
            c.version = version;
            c.total_bytes = wlen;
        }
        size_t n = wlen - off < chunk ? wlen - off : chunk;
        c.data.data = (uint8_t *)w + off;
        c.data.len = n;
        if (fxr_send(call, &c.base) != 0) {
            fxr_fail(call, FXS_CANCELLED, "export of '%s' cancelled", req->name);
            free(w);
            return;
        }
        off += n;
    } while (off < wlen);
    free(w);
    fxr_finish(call);
}

static void import_weights(fxr_call *call, const ProtobufCMessage *unused, void *data)
{
    fxa_daemon *d = data;
    char err[FXS_ERRLEN], name[FXP_KEY_MAX] = "", key[FXP_KEY_MAX], source[256] = "import";
    bool promote = true; /* production moves to it unless the first chunk says no_promote */
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    ProtobufCMessage *msg;
    int r, status = 0;
    while ((r = fxr_recv(call, &msg)) == 1) {
        Fluxion__V1__WeightsChunk *c = (void *)msg;
        if (!name[0]) {
            if (!c->name[0]) {
                status = FXS_INVALID_ARGUMENT;
                snprintf(err, sizeof err, "the first chunk must name the model (field name)");
            } else {
                if (strlen(c->name) >= sizeof name || strlen(c->source) >= sizeof source) {
                    status = FXS_INVALID_ARGUMENT;
                    snprintf(err, sizeof err, "%s", strlen(c->name) >= sizeof name
                             ? "name: longer than any model name"
                             : "source: longer than 255 bytes");
                }
                snprintf(name, sizeof name, "%s", c->name);
                if (c->source[0])
                    snprintf(source, sizeof source, "%s", c->source);
                promote = !c->no_promote;
            }
        }
        if (!status && c->data.len > d->max_import_bytes - len) {
            status = FXS_RESOURCE_EXHAUSTED;
            snprintf(err, sizeof err, "weights larger than the limit of %llu bytes (--max-import-mb)",
                     (unsigned long long)d->max_import_bytes);
        }
        if (!status && len + c->data.len > cap) {
            size_t ncap = cap ? cap : 1 << 20;
            while (ncap < len + c->data.len)
                ncap *= 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                status = FXS_RESOURCE_EXHAUSTED;
                snprintf(err, sizeof err, "out of memory receiving %zu bytes", len + c->data.len);
            } else {
                buf = nb;
                cap = ncap;
            }
        }
        if (!status && c->data.len) {
            memcpy(buf + len, c->data.data, c->data.len);
            len += c->data.len;
        }
        protobuf_c_message_free_unpacked(msg, NULL);
        if (status)
            break;
    }
    if (!status && r < 0) {
        status = fxr_cancelled(call) ? FXS_CANCELLED : FXS_INVALID_ARGUMENT;
        snprintf(err, sizeof err, "%s", fxr_cancelled(call) ? "import cancelled"
                                                             : "a chunk does not parse as WeightsChunk");
    }
    if (!status && !name[0]) {
        status = FXS_INVALID_ARGUMENT;
        snprintf(err, sizeof err, "no chunks received");
    }
    if (!status && !fxa_key(call, "model", name, key, sizeof key)) {
        free(buf);
        return;
    }
    fxdb_model_rec rec;
    int64_t revision = 0, model_id = 0; /* the spec the weights were checked against */
    if (!status && (status = fxdb_store_get_model(d->store, key, &rec, err, sizeof err)) == 0) {
        status = fxm_check_weights(&rec, d->max_params, buf, len, err, sizeof err);
        revision = rec.spec_revision;
        model_id = rec.id;
        fxdb_model_rec_free(&rec);
    }
    int64_t version = 0;
    if (!status)
        status = fxdb_store_add_version_fit(d->store, key, buf, len, source, promote, model_id,
                                            revision, &version, err, sizeof err);
    free(buf);
    if (status) {
        fxr_fail(call, status, "%s", err);
        return;
    }
    fxl_log(FXL_INFO, "models", "weights imported model=%s version=%lld bytes=%zu", key,
            (long long)version, len);
    if (!promote) /* production stays: nothing to reload; retention may have removed some */
        fxsv_serving_prune(d->serving, key);
    else if ((status = fxsv_serving_reload(d->serving, key, err, sizeof err)) != 0) {
        fxr_fail(call, status, "stored as version %lld, but cannot be served: %s",
                 (long long)version, err);
        return;
    }
    if ((status = fxdb_store_get_model(d->store, key, &rec, err, sizeof err)) != 0) {
        fxr_fail(call, status, "%s", err);
        return;
    }
    Fluxion__V1__ModelVersion v = FLUXION__V1__MODEL_VERSION__INIT;
    for (int i = 0; i < rec.n_versions; i++)
        if (rec.versions[i].version == version) {
            v.version = version;
            v.created_unix_ms = rec.versions[i].created_ms;
            v.source = rec.versions[i].source;
            v.weights_bytes = rec.versions[i].weights_bytes;
            v.weights_sha256 = rec.versions[i].sha256;
        }
    fxr_reply(call, &v.base);
    fxdb_model_rec_free(&rec);
}

/* Changes a model's batching settings (stored; a loaded model is reloaded). */
static void set_serving_config(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__SetServingConfigRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    if (!fxa_key(call, "model", req->name, key, sizeof key) ||
        !fxa_model_stored_or_fail(d, call, key))
        return;
    fxb_config c;
    Fluxion__V1__BatchingConfig none = FLUXION__V1__BATCHING_CONFIG__INIT;
    int rc = fxsv_cfg_load(d->store, key, &c, err, sizeof err);
    if (!rc && req->reset)
        fxb_config_default(&c);
    if (!rc && (req->n_fields || (req->config && !req->reset)))
        rc = fxsv_cfg_apply(&c, req->config ? req->config : &none, req->fields, req->n_fields,
                           err, sizeof err);
    if (!rc)
        rc = fxsv_serving_set_config(d->serving, key, &c, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    fxl_log(FXL_INFO, "models", "serving config set model=%s enabled=%d max_batch_size=%u "
            "max_queue_delay_us=%llu instances=%u", key, c.enabled, c.max_batch_size,
            (unsigned long long)c.max_queue_delay_us, c.instances);
    pba a = { 0 };
    Fluxion__V1__BatchingConfig *out = config_msg(&a, d->store, key); /* with the canary */
    if (!out || a.failed)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &out->base);
    pba_free(&a);
}

/* Sets or turns off a model's canary (serving.h fxsv_serving_set_canary). */
static void set_canary(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__SetCanaryRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    if (!fxa_key(call, "model", req->name, key, sizeof key) ||
        !fxa_model_stored_or_fail(d, call, key))
        return;
    if (!req->off && req->version <= 0) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "version: %lld is not a version number (1, 2, ...); "
                 "set off to turn the canary off", (long long)req->version);
        return;
    }
    int64_t version = req->off ? 0 : req->version;
    uint32_t percent = req->off ? 0 : req->percent;
    int rc = fxsv_serving_set_canary(d->serving, key, version, percent, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "model '%s': %s", fxa_show(call, key), err);
        return;
    }
    Fluxion__V1__CanaryConfig out = FLUXION__V1__CANARY_CONFIG__INIT;
    out.version = version;
    out.percent = percent;
    fxr_reply(call, &out.base);
}

int fxa_register_model_service(fxa_daemon *d)
{
    static const fxr_method methods[] = {
        { "CreateModel", FXR_UNARY, FXP_WRITE, create_model },
        { "GetModel", FXR_UNARY, FXP_READ, get_model },
        { "ListModels", FXR_UNARY, FXP_READ, list_models },
        { "DeleteModel", FXR_UNARY, FXP_WRITE, delete_model },
        { "ExportWeights", FXR_SERVER_STREAM, FXP_READ, export_weights },
        { "ImportWeights", FXR_CLIENT_STREAM, FXP_WRITE, import_weights },
        { "ExportOnnx", FXR_SERVER_STREAM, FXP_READ, fxa_export_onnx },
        { "SetServingConfig", FXR_UNARY, FXP_WRITE, set_serving_config },
        { "UpdateModelSpec", FXR_UNARY, FXP_WRITE, fxa_update_model_spec },
        { "ImportOnnx", FXR_CLIENT_STREAM, FXP_WRITE, fxa_import_onnx },
        { "SetCanary", FXR_UNARY, FXP_WRITE, set_canary },
        { "UpdateVersions", FXR_UNARY, FXP_WRITE, fxa_update_versions },
    };
    return fxr_server_add_service(d->rpc, &fluxion__v1__model_service__descriptor, methods,
                                  (int)(sizeof methods / sizeof methods[0]), d);
}
