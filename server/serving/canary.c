/*
 * canary.c - a second version served beside the main one (serving.h
 * fxsv_serving_set_canary): its setting (stored with the batching settings,
 * servecfg.h), its instance (built and swapped like the main one, under the
 * model's change lock), and the split of the requests that name no version.
 *
 * The split is a counter, not a coin: the entry counts those requests
 * modulo 100, and turn n goes to the canary when floor((n + 1) * P / 100)
 * passes floor(n * P / 100). Of every N requests since the canary was set
 * (or the model loaded), exactly floor(N * P / 100) go to it, spread evenly
 * (P = 25: every fourth), so tests and dashboards can check the split
 * exactly. The count goes on across a reload (a new main version, new
 * batching settings).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "models/models.h"
#include "serving/servecfg.h"
#include "serving/serving_internal.h"

/* Whether turn n (0..99) of the split goes to a canary of percent. */
static bool canary_turn(uint32_t n, uint32_t percent)
{
    return (n + 1) * percent / 100 > n * percent / 100;
}

bool fxsv_serving_route_at_hand(fxsv_serving *sv, const char *name, int64_t version,
                                fxsv_served **out)
{
    fxsv_served *m = NULL;
    pthread_mutex_lock(&sv->mu);
    fxsv_entry *e = fxsv_find_entry(sv, name);
    if (e && version == 0 && e->canary) {
        bool to_canary = canary_turn(e->canary_turn, e->canary_percent);
        e->canary_turn = (e->canary_turn + 1) % 100;
        m = fxsv_served_ref(to_canary ? e->canary : e->current);
    } else if (e) {
        m = fxsv_entry_cached(e, version);
        if (m)
            m = fxsv_served_ref(m);
    }
    pthread_mutex_unlock(&sv->mu);
    *out = m;
    return m != NULL;
}

int fxsv_serving_route(fxsv_serving *sv, const char *name, int64_t version, fxsv_served **out,
                      char *err, size_t errlen)
{
    if (version == 0) {
        fxsv_served *m = NULL;
        pthread_mutex_lock(&sv->mu);
        fxsv_entry *e = fxsv_find_entry(sv, name);
        if (e && e->canary) {
            bool to_canary = canary_turn(e->canary_turn, e->canary_percent);
            e->canary_turn = (e->canary_turn + 1) % 100;
            m = fxsv_served_ref(to_canary ? e->canary : e->current);
        }
        pthread_mutex_unlock(&sv->mu);
        if (m) {
            *out = m;
            return 0;
        }
    }
    return fxsv_serving_acquire(sv, name, version, out, err, errlen);
}

/* The instance of the canary version: the canary or older version served
 * now when it is that version (another reference), else built from the
 * store. */
static int canary_instance(fxsv_serving *sv, const char *name, int64_t version,
                           fxsv_served **out, char *err, size_t errlen)
{
    pthread_mutex_lock(&sv->mu);
    fxsv_entry *e = fxsv_find_entry(sv, name);
    *out = NULL;
    if (e && e->canary && e->canary->version == version)
        *out = fxsv_served_ref(e->canary);
    for (int i = 0; e && !*out && i < e->n_old; i++)
        if (e->old[i]->version == version)
            *out = fxsv_served_ref(e->old[i]);
    pthread_mutex_unlock(&sv->mu);
    return *out ? 0 : fxsv_build_served(sv, name, version, out, NULL, err, errlen);
}

fxsv_served *fxsv_canary_for_load(fxsv_serving *sv, const char *name, int64_t main_version,
                                  uint32_t *percent)
{
    char err[FXS_ERRLEN];
    fxsv_canary cn;
    *percent = 0;
    if (fxsv_canary_load(sv->st, name, &cn, err, sizeof err) != 0) {
        fxl_log(FXL_WARN, "serving", "canary setting unreadable model=%s err=\"%s\"", name, err);
        return NULL;
    }
    if (!cn.version)
        return NULL;
    if (cn.version == main_version) {
        /* The canary became the main version (a new import, a promotion):
         * it has nothing left to compare, so the split ends. */
        fxsv_canary off = { 0, 0 };
        if (fxsv_canary_save(sv->st, name, &off, err, sizeof err) != 0)
            fxl_log(FXL_WARN, "serving", "canary not cleared model=%s err=\"%s\"", name, err);
        fxl_log(FXL_INFO, "serving", "canary off: it is the main version now model=%s "
                "version=%" PRId64, name, main_version);
        return NULL;
    }
    fxsv_served *m;
    if (canary_instance(sv, name, cn.version, &m, err, sizeof err) != 0) {
        fxl_log(FXL_WARN, "serving", "canary not served (the main version takes every request) "
                "model=%s version=%" PRId64 " err=\"%s\"", name, cn.version, err);
        return NULL;
    }
    *percent = cn.percent;
    return m;
}

/* The version served as the main one: the loaded instance's, or for a
 * model not loaded the one a load would serve (production). */
static int64_t main_version(fxsv_serving *sv, const fxdb_model_rec *rec)
{
    int64_t v = 0;
    char err[FXS_ERRLEN];
    if (fxm_resolve_version(rec, 0, &v, err, sizeof err) != 0)
        v = 0;
    pthread_mutex_lock(&sv->mu);
    fxsv_entry *e = fxsv_find_entry(sv, rec->name);
    if (e)
        v = e->current->version;
    pthread_mutex_unlock(&sv->mu);
    return v;
}

/* Checks a canary against the stored model: a stored version other than
 * the main one, percent 0..100. */
static int check_canary(fxsv_serving *sv, const char *name, int64_t version, uint32_t percent,
                        char *err, size_t errlen)
{
    if (version < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "canary version %" PRId64 " is not a version number (1, 2, ...)",
                        version);
    if (percent > 100)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "canary percent %" PRIu32 " is not in [0, 100]", percent);
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(sv->st, name, &rec, err, errlen);
    if (rc)
        return rc;
    bool stored = false;
    for (int i = 0; i < rec.n_versions; i++)
        stored = stored || rec.versions[i].version == version;
    if (!stored)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND,
                      "canary version %" PRId64 " is not stored (its versions: %" PRId64
                      " to %" PRId64 ")", version, rec.n_versions ? rec.versions[0].version : 0,
                      rec.n_versions ? rec.versions[rec.n_versions - 1].version : 0);
    else if (version == main_version(sv, &rec))
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                      "canary version %" PRId64 " is the main version (the one served without "
                      "a canary): give another version, or turn the canary off", version);
    fxdb_model_rec_free(&rec);
    return rc;
}

int fxsv_serving_set_canary(fxsv_serving *sv, const char *name, int64_t version,
                           uint32_t percent, char *err, size_t errlen)
{
    fxsv_name_lock *l = fxsv_lock_name(sv, name);
    if (!l)
        return fxu_oom(err, errlen);
    int rc;
    fxsv_served *built = NULL;
    if (version) {
        rc = check_canary(sv, name, version, percent, err, errlen);
    } else { /* off: the model must be stored */
        fxdb_model_rec rec;
        percent = 0;
        if (!(rc = fxdb_store_get_model(sv->st, name, &rec, err, errlen)))
            fxdb_model_rec_free(&rec);
    }
    /* A loaded model serves the canary at once: built before the setting
     * is stored, so a version that cannot be served is refused. */
    if (!rc && version && fxsv_serving_is_loaded(sv, name, NULL))
        rc = canary_instance(sv, name, version, &built, err, errlen);
    fxsv_canary cn = { version, percent };
    if (!rc)
        rc = fxsv_canary_save(sv->st, name, &cn, err, errlen);
    fxsv_served *prev = NULL, *evicted = NULL;
    bool dropped = false; /* the version served as canary until now no longer is */
    if (!rc) {
        pthread_mutex_lock(&sv->mu);
        fxsv_entry *e = fxsv_find_entry(sv, name);
        if (e) { /* loaded: built is its canary now (NULL when off) */
            prev = e->canary;
            dropped = prev && prev != built;
            e->canary = built;
            e->canary_percent = percent;
            e->canary_turn = 0; /* a new split: exact from its first request */
            evicted = built ? fxsv_entry_take_old(e, version) : NULL;
            built = NULL;
        }
        pthread_mutex_unlock(&sv->mu);
        fxl_log(FXL_INFO, "serving", "canary set model=%s version=%" PRId64 " percent=%" PRIu32,
                name, version, percent);
    }
    fxsv_unlock_name(sv, l);
    if (dropped)
        fxsv_record_unloaded(prev->rec);
    fxsv_served_release(prev); /* requests in flight hold their own references */
    fxsv_served_release(evicted);
    fxsv_served_release(built);
    return rc;
}
