/*
 * models.c - a stored model as a graph; see models.h.
 */
#include "models/models.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

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

int fxm_load_version(fxdb_store *st, const char *name, int64_t want, const fxm_load_opts *o,
                     fxm_loaded *out, char *err, size_t errlen)
{
    *out = (fxm_loaded){0};
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(st, name, &rec, err, errlen);
    if (rc)
        return rc;
    int64_t v = 0;
    fxg_graph *g = NULL;
    bool loaded = rec.loaded;
    rc = fxm_resolve_version(&rec, want, &v, err, errlen);
    if (!rc)
        rc = fxm_graph_of(&rec, o ? o->max_params : 0, &g, err, errlen);
    fxdb_model_rec_free(&rec);
    if (rc)
        return rc;
    if (o && o->inference_only) /* given back before the weights are read: the
                                   peak is the graph and the file */
        fxg_drop_grads(g);
    void *w = NULL;
    size_t wlen = 0;
    char gerr[FXS_ERRLEN];
    rc = fxdb_store_read_weights(st, name, v, &w, &wlen, err, errlen);
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
    *out = (fxm_loaded){ .g = g, .version = v, .loaded = loaded };
    return 0;
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
