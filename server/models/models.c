/*
 * models.c - a stored model as a graph; see models.h.
 */
#include "models/models.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"

int fxm_graph_of(const fxdb_model_rec *rec, uint64_t max_params, fxg_graph **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    Fluxion__V1__ModelSpec *spec = fluxion__v1__model_spec__unpack(NULL, rec->spec_len, rec->spec);
    if (!spec)
        return fxu_fail(err, errlen, FXS_DATA_LOSS, "model '%s': the stored spec does not parse",
                        rec->name);
    fxg_options go = { .seed = rec->seed, .max_params = max_params };
    char gerr[FXS_ERRLEN];
    fxg_graph *g = NULL;
    int rc = fxg_build(spec, &go, &g, gerr, sizeof gerr);
    fluxion__v1__model_spec__free_unpacked(spec, NULL);
    if (rc) /* the spec was valid when it was stored */
        return fxu_fail(err, errlen, rc == FXS_RESOURCE_EXHAUSTED ? rc : FXS_INTERNAL,
                        "model '%s': %s", rec->name, gerr);
    *out = g;
    return 0;
}

int fxm_resolve_version(const fxdb_model_rec *rec, int64_t want, int64_t *version, char *err,
                        size_t errlen)
{
    /* 0: production (the alias serving uses); the latest usable version
     * when production's weights are unusable, as before aliases */
    for (int i = 0; want == 0 && i < rec->n_versions; i++)
        if (rec->versions[i].version == rec->production) {
            *version = rec->production;
            return 0;
        }
    if (want == 0 && rec->n_versions > 0) {
        *version = rec->versions[rec->n_versions - 1].version;
        return 0;
    }
    for (int i = 0; i < rec->n_versions; i++)
        if (rec->versions[i].version == want) {
            *version = want;
            return 0;
        }
    if (rec->n_versions == 0) /* every version's weights are unusable */
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "model '%s' has no usable version",
                        rec->name);
    return fxu_fail(err, errlen, FXS_NOT_FOUND, "model '%s' has no version %" PRId64, rec->name,
                    want);
}

int fxm_use_version_spec(fxdb_store *st, fxdb_model_rec *rec, int64_t version, char *err,
                         size_t errlen)
{
    for (int i = 0; i < rec->n_versions; i++) {
        int64_t r = rec->versions[i].spec_revision;
        if (rec->versions[i].version != version || r == rec->spec_revision || r < 1)
            continue;
        void *spec = NULL;
        size_t len = 0;
        int rc = fxdb_store_read_spec(st, rec->name, rec->id, r, &spec, &len, err, errlen);
        if (rc)
            return rc;
        free(rec->spec);
        rec->spec = spec;
        rec->spec_len = len;
        rec->spec_revision = r;
        return 0;
    }
    return 0;
}

static int load_once(fxdb_store *st, const char *name, int64_t want, const fxm_load_opts *o,
                     fxm_loaded *out, char *err, size_t errlen)
{
    *out = (fxm_loaded){0};
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(st, name, &rec, err, errlen);
    if (rc)
        return rc;
    int64_t v = 0, id = rec.id;
    fxg_graph *g = NULL;
    bool loaded = rec.loaded;
    rc = fxm_resolve_version(&rec, want, &v, err, errlen);
    if (!rc)
        rc = fxm_use_version_spec(st, &rec, v, err, errlen);
    if (!rc && o && o->fresh && o->seed)
        rec.seed = o->seed;
    if (!rc)
        rc = fxm_graph_of(&rec, o ? o->max_params : 0, &g, err, errlen);
    fxdb_model_rec_free(&rec);
    if (rc)
        return rc;
    if (o && o->fresh) {
        *out = (fxm_loaded){ .g = g, .model_id = id, .version = v, .loaded = loaded };
        return 0;
    }
    if (o && o->inference_only) /* given back before the weights are read: the
                                   peak is the graph and the file */
        fxg_drop_grads(g);
    void *w = NULL;
    size_t wlen = 0;
    char gerr[FXS_ERRLEN];
    /* of the model row the graph came from (a model created again since
     * has other weights under the same number: ABORTED) */
    rc = fxdb_store_read_weights_of(st, name, id, v, &w, &wlen, err, errlen);
    if (!rc && fxg_load_weights(g, w, wlen, gerr, sizeof gerr) != 0)
        /* The store checked size and SHA-256: weights that were accepted
         * when stored no longer fit the graph this build makes. */
        rc = fxu_fail(err, errlen, FXS_INTERNAL, "model '%s' version %" PRId64 ": %s", name, v,
                      gerr);
    free(w);
    if (rc) {
        fxg_free(g);
        return rc;
    }
    *out = (fxm_loaded){ .g = g, .model_id = id, .version = v, .loaded = loaded };
    return 0;
}

int fxm_load_version(fxdb_store *st, const char *name, int64_t want, const fxm_load_opts *o,
                     fxm_loaded *out, char *err, size_t errlen)
{
    /* ABORTED: the name is another model's now; that one is what a caller
     * naming it gets (a few tries: it may be created again and again) */
    int rc = FXS_ABORTED;
    for (int i = 0; i < 3 && rc == FXS_ABORTED; i++)
        rc = load_once(st, name, want, o, out, err, errlen);
    return rc;
}

int fxm_check_weights(const fxdb_model_rec *rec, uint64_t max_params, const void *buf,
                      size_t len, char *err, size_t errlen)
{
    fxg_graph *g;
    int rc = fxm_graph_of(rec, max_params, &g, err, errlen);
    if (rc)
        return rc;
    char gerr[FXS_ERRLEN];
    if ((rc = fxg_load_weights(g, buf, len, gerr, sizeof gerr)))
        rc = fxu_fail(err, errlen, rc, "weights for '%s': %s", rec->name, gerr);
    fxg_free(g);
    return rc;
}

static fxm_param_change *report_add(fxm_param_change **arr, int *n, const char *name)
{
    fxm_param_change *a = realloc(*arr, (size_t)(*n + 1) * sizeof *a);
    if (!a)
        return NULL;
    *arr = a;
    fxm_param_change *c = &a[*n];
    memset(c, 0, sizeof *c);
    c->ndim = c->old_ndim = -1;
    if (!(c->name = strdup(name)))
        return NULL;
    (*n)++;
    return c;
}

static void set_shape(int *ndim, int64_t *shape, const fx_tensor *t)
{
    *ndim = t->ndim;
    memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
}

int fxm_carry(const fxg_graph *from, fxg_graph *to, fxm_carry_report *rep, char *err,
              size_t errlen)
{
    memset(rep, 0, sizeof *rep);
    const fx_params *src = fxg_params(from), *dst = fxg_params(to);
    for (int i = 0; i < dst->count; i++) {
        fx_tensor *t = dst->items[i].tensor;
        const fx_tensor *o = fx_params_find(src, dst->items[i].name);
        bool same = o && o->dtype == t->dtype && fx_tensor_same_shape(o, t);
        fxm_param_change *c = same ? report_add(&rep->carried, &rep->n_carried, dst->items[i].name)
                                   : report_add(&rep->reinit, &rep->n_reinit, dst->items[i].name);
        if (!c) {
            fxm_carry_report_free(rep);
            return fxu_oom(err, errlen);
        }
        set_shape(&c->ndim, c->shape, t);
        if (o)
            set_shape(&c->old_ndim, c->old_shape, o);
        if (same && fx_tensor_copy(t, o) != FX_OK) {
            fxm_carry_report_free(rep);
            return fxu_fail(err, errlen, FXS_INTERNAL, "cannot copy '%s'", dst->items[i].name);
        }
    }
    for (int i = 0; i < src->count; i++) {
        if (fx_params_find(dst, src->items[i].name))
            continue;
        fxm_param_change *c = report_add(&rep->dropped, &rep->n_dropped, src->items[i].name);
        if (!c) {
            fxm_carry_report_free(rep);
            return fxu_oom(err, errlen);
        }
        set_shape(&c->old_ndim, c->old_shape, src->items[i].tensor);
    }
    return 0;
}

void fxm_carry_report_free(fxm_carry_report *rep)
{
    fxm_param_change *arrs[3] = {rep->carried, rep->reinit, rep->dropped};
    int ns[3] = {rep->n_carried, rep->n_reinit, rep->n_dropped};
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < ns[k]; i++)
            free(arrs[k][i].name);
        free(arrs[k]);
    }
    memset(rep, 0, sizeof *rep);
}
