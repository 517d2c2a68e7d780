/* serving.c - see serving.h. */
#include "serving/serving.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/status.h"
#include "models/models.h"
#include "serving/servecfg.h"
#include "serving/serving_internal.h"
#include "base/util.h"

#define MAX_OLD_VERSIONS FXSV_MAX_OLD_VERSIONS

typedef fxsv_entry entry;
typedef fxsv_name_lock name_lock;

/* ------------------------------------------------------------ instances */

static void served_unref(fxsv_served *m)
{
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    fxb_free(m->b); /* its requests are all answered: each held a reference */
    fxg_free(m->g);
    fxsv_record_unref(m->rec);
    free(m->name);
    free(m);
}

static fxsv_served *ref(fxsv_served *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void fxsv_served_release(fxsv_served *m) { served_unref(m); }
const fxg_graph *fxsv_served_graph(const fxsv_served *m) { return m->g; }
const char *fxsv_served_name(const fxsv_served *m) { return m->name; }
int64_t fxsv_served_version(const fxsv_served *m) { return m->version; }

static void record_batch(void *data, bool ok, const fxb_timing *t);

/* The memory limit of settings c against what serving g on dev needs at
 * least beyond its weights (fxb_min_need): a limit that leaves no room for
 * a one-sample batch would fail every request, so it is refused when set.
 * RESOURCE_EXHAUSTED as every memory-limit failure (devices.h). */
static int check_one_sample(const char *what, const fxg_graph *g, const fxb_config *c,
                            fx_device dev, char *err, size_t errlen)
{
    if (!c->memory_limit_bytes)
        return 0;
    fxb_need n;
    fxb_min_need(g, c, dev, &n);
    char w[384];
    snprintf(w, sizeof w, "%s: one sample (the weights, %llu bytes, and a one-sample batch's "
             "arena of %llu bytes in each of its %d engine contexts)", what,
             (unsigned long long)n.weights, (unsigned long long)n.arena, n.contexts);
    return fxsv_check_memory_limit(w, dev, n.total, c->memory_limit_bytes, err, errlen);
}

/* Moves the weights to the device the settings ask for, within the
 * model's memory limit. */
static int place(fxsv_serving *sv, const char *name, fxg_graph *g, const fxb_config *c,
                 char *err, size_t errlen)
{
    char what[192], gerr[512];
    snprintf(what, sizeof what, "model '%s': serving setting device", name);
    fx_device dev;
    int rc = fxsv_devices_resolve(sv->o.devices, c->device, what, &dev, err, errlen);
    if (rc)
        return rc;
    snprintf(what, sizeof what, "model '%s': weights", name);
    rc = fxsv_check_memory_limit(what, dev, fxsv_params_bytes(fxg_params(g)),
                                c->memory_limit_bytes, err, errlen);
    if (rc)
        return rc;
    if ((dev.type != fxg_device(g).type || dev.index != fxg_device(g).index) &&
        fxg_to_device(g, dev, gerr, sizeof gerr) != 0) {
        snprintf(err, errlen, "model '%s': %s", name, gerr);
        return FXS_RESOURCE_EXHAUSTED;
    }
    snprintf(what, sizeof what, "model '%s'", name);
    return check_one_sample(what, g, c, dev, err, errlen);
}

/* An instance serving g (taken: freed on failure) as the given version,
 * placed and batched by the model's stored settings. */
static int served_from_graph(fxsv_serving *sv, const char *name, int64_t version, fxg_graph *g,
                             fxsv_served **out, char *err, size_t errlen)
{
    int rc;
    fxsv_served *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name)) || !(m->rec = fxsv_record_get(sv->records, name, version))) {
        if (m)
            free(m->name);
        free(m);
        fxg_free(g);
        snprintf(err, errlen, "out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    atomic_init(&m->refs, 1);
    m->version = version;
    m->g = g;
    fxb_config cfg;
    char berr[512];
    rc = fxsv_cfg_load(sv->st, name, &cfg, err, errlen);
    if (!rc)
        rc = place(sv, name, g, &cfg, err, errlen);
    /* bf16 stored before the device changed (or "" resolves elsewhere now) */
    if (!rc && fxsv_cfg_check_precision(&cfg, fxg_device(g), "", berr, sizeof berr)) {
        snprintf(err, errlen, "model '%s': serving setting %s", name, berr);
        rc = FXS_FAILED_PRECONDITION;
    }
    if (!rc) /* dense weights packed once per served version (CPU), in its precision */
        fxg_prepack_precision(g, cfg.precision);
    if (!rc && (rc = fxb_create(g, &cfg, record_batch, m, &m->b, berr, sizeof berr))) {
        snprintf(err, errlen, "model '%s': batching settings: %s", name, berr);
        if (rc == FXS_INVALID_ARGUMENT) /* stored settings that do not fit */
            rc = FXS_FAILED_PRECONDITION;
    }
    if (rc) {
        served_unref(m);
        return rc;
    }
    fxsv_record_loaded(m->rec);
    *out = m;
    return 0;
}

/* Builds the graph of a stored version (0: production) with its weights;
 * *stored_loaded (optional): the store's "loaded" flag of the model. */
static int build_served(fxsv_serving *sv, const char *name, int64_t version, fxsv_served **out,
                        bool *stored_loaded, char *err, size_t errlen)
{
    fxm_load_opts o = { .max_params = sv->o.max_params, .inference_only = true };
    fxm_loaded l;
    int rc = fxm_load_version(sv->st, name, version, &o, &l, err, errlen);
    if (rc)
        return rc;
    if (stored_loaded)
        *stored_loaded = l.loaded;
    return served_from_graph(sv, name, l.version, l.g, out, err, errlen);
}

/* -------------------------------------------------------------- registry */

static entry *find_entry(fxsv_serving *sv, const char *name)
{
    for (entry *e = sv->entries; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

/* unloaded: an unload (not the daemon stopping) counts it */
static void entry_clear(entry *e, bool unloaded)
{
    if (unloaded)
        fxsv_record_unloaded(e->current->rec);
    served_unref(e->current);
    if (unloaded && e->canary)
        fxsv_record_unloaded(e->canary->rec);
    served_unref(e->canary);
    for (int i = 0; i < e->n_old; i++) {
        if (unloaded)
            fxsv_record_unloaded(e->old[i]->rec);
        served_unref(e->old[i]);
    }
    free(e->name);
    free(e);
}

/* Takes the change lock of a model (see name_lock); NULL when out of memory. */
static name_lock *lock_name(fxsv_serving *sv, const char *name)
{
    pthread_mutex_lock(&sv->mu);
    name_lock *l = sv->locks;
    while (l && strcmp(l->name, name) != 0)
        l = l->next;
    if (!l && (l = calloc(1, sizeof *l)) && !(l->name = strdup(name))) {
        free(l);
        l = NULL;
    } else if (l && !l->users) {
        pthread_mutex_init(&l->mu, NULL);
        l->next = sv->locks;
        sv->locks = l;
    }
    if (l)
        l->users++;
    pthread_mutex_unlock(&sv->mu);
    if (l)
        pthread_mutex_lock(&l->mu);
    return l;
}

static void unlock_name(fxsv_serving *sv, name_lock *l)
{
    pthread_mutex_unlock(&l->mu);
    pthread_mutex_lock(&sv->mu);
    if (--l->users == 0) {
        name_lock **pp = &sv->locks;
        while (*pp != l)
            pp = &(*pp)->next;
        *pp = l->next;
        pthread_mutex_destroy(&l->mu);
        free(l->name);
        free(l);
    }
    pthread_mutex_unlock(&sv->mu);
}

static int lock_failed(char *err, size_t errlen)
{
    snprintf(err, errlen, "out of memory");
    return FXS_RESOURCE_EXHAUSTED;
}

/* Serves m in place of the one served (or as the first), with the canary
 * the stored setting asks for beside it, and marks the model loaded in the
 * store unless it is. Under the model's lock. */
static int swap_in(fxsv_serving *sv, const char *name, fxsv_served *m, bool stored_loaded,
                   char *err, size_t errlen)
{
    int64_t version = m->version; /* m is the entry's once swapped in: not ours to read */
    uint32_t percent = 0;
    fxsv_served *canary = fxsv_canary_for_load(sv, name, version, &percent);
    fxsv_served *prev_canary = NULL, *evicted = NULL;
    pthread_mutex_lock(&sv->mu);
    entry *e = find_entry(sv, name);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->name = strdup(name))) {
            pthread_mutex_unlock(&sv->mu);
            free(e);
            served_unref(m);
            served_unref(canary);
            return lock_failed(err, errlen);
        }
        e->next = sv->entries;
        sv->entries = e;
    }
    fxsv_served *prev = e->current;
    e->current = m;
    if (canary != e->canary) { /* the split goes on: it restarts when set */
        prev_canary = e->canary;
        e->canary = canary;
        evicted = canary ? fxsv_entry_take_old(e, canary->version) : NULL;
    } else {
        served_unref(canary); /* the one served: the entry holds it */
    }
    e->canary_percent = percent;
    pthread_mutex_unlock(&sv->mu);
    served_unref(prev); /* requests in flight hold their own reference */
    served_unref(prev_canary);
    served_unref(evicted);
    fxl_log(FXL_INFO, "serving", "model loaded model=%s version=%lld", name, (long long)version);
    /* Served now; the flag makes a restart serve it too. */
    return stored_loaded ? 0 : fxdb_store_set_loaded(sv->st, name, true, err, errlen);
}

/* Builds production's version and serves it. only_if_loaded: nothing happens
 * when the model is not served. Under the model's lock. */
static int load_locked(fxsv_serving *sv, const char *name, bool only_if_loaded, char *err,
                       size_t errlen)
{
    if (only_if_loaded && !fxsv_serving_is_loaded(sv, name, NULL))
        return 0;
    fxsv_served *m;
    bool stored_loaded = false;
    int rc = build_served(sv, name, 0, &m, &stored_loaded, err, errlen);
    if (!rc && !(rc = swap_in(sv, name, m, stored_loaded, err, errlen)))
        fxsv_serving_prune(sv, name); /* versions retention removed */
    return rc;
}

static int load_or_reload(fxsv_serving *sv, const char *name, bool only_if_loaded, char *err,
                          size_t errlen)
{
    name_lock *l = lock_name(sv, name);
    if (!l)
        return lock_failed(err, errlen);
    int rc = load_locked(sv, name, only_if_loaded, err, errlen);
    unlock_name(sv, l);
    return rc;
}

int fxsv_serving_load(fxsv_serving *sv, const char *name, char *err, size_t errlen)
{
    return load_or_reload(sv, name, false, err, errlen);
}

int fxsv_serving_reload(fxsv_serving *sv, const char *name, char *err, size_t errlen)
{
    return load_or_reload(sv, name, true, err, errlen);
}

int fxsv_serving_load_graph(fxsv_serving *sv, const char *name, int64_t version, fxg_graph *g,
                           char *err, size_t errlen)
{
    name_lock *l = lock_name(sv, name);
    if (!l) {
        fxg_free(g);
        return lock_failed(err, errlen);
    }
    /* Checked under the lock: a delete that came first is seen here, one
     * that comes later unloads after this (fxsv_serving_unload). */
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(sv->st, name, &rec, err, errlen);
    int64_t want = 0;
    bool latest = !rc && !fxm_resolve_version(&rec, 0, &want, NULL, 0) && want == version;
    bool stored_loaded = !rc && rec.loaded;
    if (!rc)
        fxdb_model_rec_free(&rec);
    fxsv_served *m = NULL;
    if (!rc && !latest) { /* production moved meanwhile: that one */
        fxg_free(g);
        rc = load_locked(sv, name, false, err, errlen);
    } else if (!rc && !(rc = served_from_graph(sv, name, version, g, &m, err, errlen))) {
        rc = swap_in(sv, name, m, stored_loaded, err, errlen);
    } else if (rc) {
        fxg_free(g);
    }
    unlock_name(sv, l);
    return rc;
}

/* Whether c can serve the model: the settings against each other and the
 * model's graph (the served one, else its own from the spec), the device,
 * and the memory limit against the weights and a one-sample batch. */
static int check_config(fxsv_serving *sv, const char *name, const fxb_config *c, char *err,
                        size_t errlen)
{
    fxsv_served *m = NULL;
    pthread_mutex_lock(&sv->mu);
    entry *e = find_entry(sv, name);
    if (e)
        m = ref(e->current);
    pthread_mutex_unlock(&sv->mu);
    fxg_graph *own = NULL;
    fxdb_model_rec rec;
    int rc = 0;
    bool need_graph = c->pad_variable_dims || c->memory_limit_bytes;
    if (!m && need_graph && !(rc = fxdb_store_get_model(sv->st, name, &rec, err, errlen))) {
        rc = fxm_graph_of(&rec, sv->o.max_params, &own, err, errlen);
        fxdb_model_rec_free(&rec);
        if (own)
            fxg_drop_grads(own); /* as served */
    }
    if (!rc)
        rc = fxb_config_check(c, m ? m->g : own, err, errlen);
    fx_device dev;
    if (!rc)
        rc = fxsv_devices_resolve(sv->o.devices, c->device, "serving setting device", &dev, err,
                                 errlen);
    if (!rc)
        rc = fxsv_cfg_check_precision(c, dev, "serving setting ", err, errlen);
    /* Not stored when the weights served now (or the model's, when it is
     * not loaded) could not be placed, or would leave no room for a batch. */
    const fxg_graph *g = m ? m->g : own;
    if (!rc && g)
        rc = fxsv_check_memory_limit("serving setting memory_limit_bytes: the weights", dev,
                                    fxsv_params_bytes(fxg_params(g)), c->memory_limit_bytes,
                                    err, errlen);
    if (!rc && g)
        rc = check_one_sample("serving setting memory_limit_bytes", g, c, dev, err, errlen);
    fxg_free(own);
    served_unref(m);
    return rc;
}

int fxsv_serving_set_config(fxsv_serving *sv, const char *name, const fxb_config *c, char *err,
                           size_t errlen)
{
    name_lock *l = lock_name(sv, name);
    if (!l)
        return lock_failed(err, errlen);
    int rc = check_config(sv, name, c, err, errlen);
    if (!rc)
        rc = fxsv_cfg_save(sv->st, name, c, err, errlen);
    /* Older versions are rebuilt on demand with the new settings. */
    fxsv_served *old[MAX_OLD_VERSIONS];
    int n_old = 0;
    pthread_mutex_lock(&sv->mu);
    entry *e = rc ? NULL : find_entry(sv, name);
    fxsv_served *canary = NULL; /* rebuilt with the main one (swap_in) */
    if (e) {
        n_old = e->n_old;
        memcpy(old, e->old, sizeof old[0] * (size_t)n_old);
        e->n_old = 0;
        canary = e->canary;
        e->canary = NULL;
    }
    pthread_mutex_unlock(&sv->mu);
    for (int i = 0; i < n_old; i++)
        served_unref(old[i]);
    served_unref(canary);
    if (e) /* the one served: rebuilt now */
        rc = load_locked(sv, name, false, err, errlen);
    unlock_name(sv, l);
    return rc;
}

int fxsv_serving_unload(fxsv_serving *sv, const char *name, char *err, size_t errlen)
{
    name_lock *l = lock_name(sv, name);
    if (!l)
        return lock_failed(err, errlen);
    pthread_mutex_lock(&sv->mu);
    entry **pp = &sv->entries;
    while (*pp && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    entry *e = *pp;
    if (e)
        *pp = e->next;
    pthread_mutex_unlock(&sv->mu);
    /* Not loaded after a restart either; a deleted model has no flag. */
    char serr[256];
    int rc = fxdb_store_set_loaded(sv->st, name, false, serr, sizeof serr);
    if (rc && rc != FXS_NOT_FOUND)
        snprintf(err, errlen, "%s", serr);
    else if (!e)
        snprintf(err, errlen, "model '%s' is not loaded", name);
    unlock_name(sv, l);
    if (e) {
        entry_clear(e, true);
        fxl_log(FXL_INFO, "serving", "model unloaded model=%s", name);
    }
    return rc && rc != FXS_NOT_FOUND ? rc : e ? 0 : FXS_NOT_FOUND;
}

bool fxsv_serving_is_loaded(fxsv_serving *sv, const char *name, int64_t *version)
{
    pthread_mutex_lock(&sv->mu);
    entry *e = find_entry(sv, name);
    if (e && version)
        *version = e->current->version;
    pthread_mutex_unlock(&sv->mu);
    return e != NULL;
}

void fxsv_serving_forget_version(fxsv_serving *sv, const char *name, int64_t version)
{
    fxsv_served *gone = NULL;
    pthread_mutex_lock(&sv->mu);
    entry *e = find_entry(sv, name);
    for (int i = 0; e && i < e->n_old; i++)
        if (e->old[i]->version == version) {
            gone = e->old[i];
            memmove(e->old + i, e->old + i + 1, sizeof e->old[0] * (size_t)(e->n_old - i - 1));
            e->n_old--;
            break;
        }
    pthread_mutex_unlock(&sv->mu);
    served_unref(gone); /* requests in flight hold their own reference */
}

void fxsv_serving_prune(fxsv_serving *sv, const char *name)
{
    int64_t kept[MAX_OLD_VERSIONS];
    int n = 0;
    pthread_mutex_lock(&sv->mu);
    entry *e = find_entry(sv, name);
    for (int i = 0; e && i < e->n_old; i++)
        kept[n++] = e->old[i]->version;
    pthread_mutex_unlock(&sv->mu);
    fxdb_model_rec rec;
    char err[256];
    if (fxdb_store_get_model(sv->st, name, &rec, err, sizeof err) != 0)
        return; /* a deleted model: its unload drops them all */
    for (int i = 0; i < n; i++) {
        bool stored = false;
        for (int k = 0; k < rec.n_versions && !stored; k++)
            stored = rec.versions[k].version == kept[i];
        if (!stored)
            fxsv_serving_forget_version(sv, name, kept[i]);
    }
    /* and the statistics of the versions gone */
    int64_t *stored = malloc(sizeof *stored * (size_t)(rec.n_versions + 1));
    if (stored) {
        for (int k = 0; k < rec.n_versions; k++)
            stored[k] = rec.versions[k].version;
        fxsv_records_keep(sv->records, name, stored, rec.n_versions);
        free(stored);
    }
    fxdb_model_rec_free(&rec);
}

int fxsv_serving_count_loaded(fxsv_serving *sv)
{
    int n = 0;
    pthread_mutex_lock(&sv->mu);
    for (entry *e = sv->entries; e; e = e->next)
        n++;
    pthread_mutex_unlock(&sv->mu);
    return n;
}

/* The cached instance of a version of e, or NULL. Under sv->mu. */
static fxsv_served *cached(entry *e, int64_t version)
{
    if (version == 0 || e->current->version == version)
        return e->current;
    if (e->canary && e->canary->version == version)
        return e->canary;
    for (int i = 0; i < e->n_old; i++)
        if (e->old[i]->version == version)
            return e->old[i];
    return NULL;
}

fxsv_served *fxsv_entry_cached(entry *e, int64_t version) { return cached(e, version); }

fxsv_served *fxsv_entry_take_old(entry *e, int64_t version)
{
    for (int i = 0; i < e->n_old; i++)
        if (e->old[i]->version == version) {
            fxsv_served *m = e->old[i];
            memmove(e->old + i, e->old + i + 1, sizeof e->old[0] * (size_t)(e->n_old - i - 1));
            e->n_old--;
            return m;
        }
    return NULL;
}

int fxsv_serving_acquire(fxsv_serving *sv, const char *name, int64_t version, fxsv_served **out,
                        char *err, size_t errlen)
{
    pthread_mutex_lock(&sv->mu);
    entry *e = find_entry(sv, name);
    fxsv_served *m = e ? cached(e, version) : NULL;
    if (m)
        *out = ref(m);
    pthread_mutex_unlock(&sv->mu);
    if (m)
        return 0;
    if (!e) {
        fxdb_model_rec rec;
        int rc = fxdb_store_get_model(sv->st, name, &rec, err, errlen);
        if (rc)
            return rc;
        fxdb_model_rec_free(&rec);
        snprintf(err, errlen, "model '%s' is not loaded (load it with RepositoryModelLoad)", name);
        return FXS_FAILED_PRECONDITION;
    }
    /* An older version, loaded on demand (outside the lock: it reads files). */
    fxsv_served *built;
    int rc = build_served(sv, name, version, &built, NULL, err, errlen);
    if (rc)
        return rc;
    fxsv_served *evicted = NULL;
    pthread_mutex_lock(&sv->mu);
    e = find_entry(sv, name);
    m = e ? cached(e, version) : NULL;
    if (m) {                /* another request built it meanwhile, or unloaded */
        *out = ref(m);
    } else if (e) {
        if (e->n_old == MAX_OLD_VERSIONS) {
            evicted = e->old[0];
            memmove(e->old, e->old + 1, sizeof e->old[0] * (MAX_OLD_VERSIONS - 1));
            e->n_old--;
        }
        e->old[e->n_old++] = ref(built);
        *out = ref(built);
    }
    pthread_mutex_unlock(&sv->mu);
    served_unref(built);
    served_unref(evicted);
    if (!e) {
        snprintf(err, errlen, "model '%s' was unloaded", name);
        return FXS_FAILED_PRECONDITION;
    }
    /* A delete of this version that committed while it was being built
     * forgot it before it was kept: look again now that it is (this request
     * still runs on it, as one that had acquired it before the delete). */
    fxsv_serving_prune(sv, name);
    return 0;
}

int fxsv_serving_list(fxsv_serving *sv, fxsv_served ***out, int *n)
{
    pthread_mutex_lock(&sv->mu);
    int count = 0;
    for (entry *e = sv->entries; e; e = e->next)
        count += 1 + (e->canary != NULL) + e->n_old;
    fxsv_served **arr = calloc((size_t)count + 1, sizeof *arr);
    int k = 0;
    if (arr)
        for (entry *e = sv->entries; e; e = e->next) {
            arr[k++] = ref(e->current);
            if (e->canary)
                arr[k++] = ref(e->canary);
            for (int i = 0; i < e->n_old; i++)
                arr[k++] = ref(e->old[i]);
        }
    pthread_mutex_unlock(&sv->mu);
    *out = arr;
    *n = k;
    return arr ? 0 : FXS_RESOURCE_EXHAUSTED;
}

/* serving_internal.h's names of the helpers above, for canary.c */
fxsv_served *fxsv_served_ref(fxsv_served *m) { return ref(m); }
int fxsv_build_served(fxsv_serving *sv, const char *name, int64_t version, fxsv_served **out,
                      bool *stored_loaded, char *err, size_t errlen)
{
    return build_served(sv, name, version, out, stored_loaded, err, errlen);
}
fxsv_entry *fxsv_find_entry(fxsv_serving *sv, const char *name) { return find_entry(sv, name); }
fxsv_name_lock *fxsv_lock_name(fxsv_serving *sv, const char *name) { return lock_name(sv, name); }
void fxsv_unlock_name(fxsv_serving *sv, fxsv_name_lock *l) { unlock_name(sv, l); }

/* ----------------------------------------------------------- statistics */

void fxsv_served_refused(fxsv_served *m, uint64_t received_ns)
{
    fxb_timing t = { .queue_ns = fxu_mono_ns() - received_ns };
    fxsv_record_request(m->rec, FXS_INVALID_ARGUMENT, &t, 0); /* inputs that do not fit */
}

/* One executed batch (from the batcher, before its requests are answered):
 * execution_count and the row of its size in the batch table. */
static void record_batch(void *data, bool ok, const fxb_timing *t)
{
    fxsv_served *m = data;
    if (ok)
        fxsv_record_batch(m->rec, t);
}

/* ------------------------------------------------------------- requests */

/* A submitted request, between the batcher and its caller. */
typedef struct {
    fxsv_served *m; /* held until sent */
    fxsv_request r;
} pending;

/* The batcher's answer: the caller makes its answer (counted as output
 * time), the request is counted, then the answer goes. */
static void request_done(void *user, int status, const char *err, const fxb_output *outs,
                         const fxb_timing *t)
{
    pending *p = user;
    uint64_t t0 = fxu_mono_ns();
    int st = p->r.answer(p->r.user, status, err, outs);
    fxb_timing tm = *t;
    tm.output_ns += fxu_mono_ns() - t0;
    fxsv_record_request(p->m->rec, st, &tm, p->r.samples);
    fxsv_record_in_flight(p->m->rec, -1);
    p->r.send(p->r.user, st, st == status ? err : NULL);
    fxsv_served *m = p->m;
    free(p);
    served_unref(m); /* may be the last reference: done calls may free (batcher.h) */
}

int fxsv_submit(fxsv_served *m, const fxsv_request *r, char *err, size_t errlen)
{
    pending *p = malloc(sizeof *p);
    int rc = FXS_RESOURCE_EXHAUSTED;
    if (!p) {
        snprintf(err, errlen, "out of memory");
    } else {
        *p = (pending){ .m = ref(m), .r = *r };
        fxsv_record_in_flight(m->rec, 1);
        fxb_request br = { .inputs = r->inputs, .priority = r->priority,
                           .timeout_us = r->timeout_us, .deadline_ns = r->deadline_ns,
                           .received_ns = r->received_ns, .done = request_done, .user = p,
                           .may_run_inline = r->may_run_inline,
                           .inline_max_ns = r->inline_max_ns };
        if (!(rc = fxb_submit(m->b, &br, err, errlen)))
            return 0;
        fxsv_record_in_flight(m->rec, -1);
        served_unref(m); /* not the last: the caller holds m */
        free(p);
    }
    fxb_timing t = { .queue_ns = fxu_mono_ns() - r->received_ns };
    fxsv_record_request(m->rec, rc, &t, 0);
    return rc;
}

static bool on_device(const fxsv_served *m, fx_device dev)
{
    fx_device d = fxg_device(m->g);
    return d.type == dev.type && d.index == dev.index;
}

static void add_activity(fxsv_served *m, fx_device dev, int *n, uint64_t *last)
{
    if (!m || !on_device(m, dev))
        return;
    *n += fxb_pressure(m->b);
    uint64_t t = fxb_last_active_ns(m->b);
    *last = t > *last ? t : *last;
}

int fxsv_serving_activity(fxsv_serving *sv, fx_device dev, uint64_t *last_active_ns)
{
    int n = 0;
    uint64_t last = 0;
    pthread_mutex_lock(&sv->mu);
    for (entry *e = sv->entries; e; e = e->next) {
        add_activity(e->current, dev, &n, &last);
        add_activity(e->canary, dev, &n, &last);
        for (int i = 0; i < e->n_old; i++)
            add_activity(e->old[i], dev, &n, &last);
    }
    pthread_mutex_unlock(&sv->mu);
    if (last_active_ns)
        *last_active_ns = last;
    return n;
}

int fxsv_serving_pressure(fxsv_serving *sv, fx_device dev)
{
    return fxsv_serving_activity(sv, dev, NULL);
}

void fxsv_served_stats(fxsv_served *m, fxsv_stats *out) { fxsv_record_stats(m->rec, out); }

/* Adds what is served now (queue depth) to the snapshot's record of m. */
static void add_served(fxsv_served *m, fxsv_model_metrics *arr, int n)
{
    for (int i = 0; m && i < n; i++)
        if (arr[i].version == m->version && strcmp(arr[i].name, m->name) == 0) {
            arr[i].served = true;
            arr[i].queue_depth += fxb_pressure(m->b);
            return;
        }
}

int fxsv_serving_metrics(fxsv_serving *sv, fxsv_model_metrics **out, int *n)
{
    int rc = fxsv_records_snapshot(sv->records, out, n);
    if (rc)
        return rc;
    pthread_mutex_lock(&sv->mu);
    for (entry *e = sv->entries; e; e = e->next) {
        add_served(e->current, *out, *n);
        add_served(e->canary, *out, *n);
        for (int i = 0; i < e->n_old; i++)
            add_served(e->old[i], *out, *n);
    }
    pthread_mutex_unlock(&sv->mu);
    return 0;
}

void fxsv_serving_forget(fxsv_serving *sv, const char *name)
{
    fxsv_records_forget(sv->records, name);
}

int fxsv_serving_create(fxdb_store *st, const fxsv_serving_opts *opts, fxsv_serving **out,
                        char *err, size_t errlen)
{
    if (!out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "serving: no place for the handle");
    *out = NULL;
    if (!st)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "serving: no store");
    fxsv_serving *sv = calloc(1, sizeof *sv);
    if (!sv)
        return fxu_oom(err, errlen);
    sv->st = st;
    fxdb_store_set_canary_fn(st, fxsv_cfg_canary_version); /* the canary's version stays */
    if (!(sv->records = fxsv_records_new())) {
        free(sv);
        return fxu_oom(err, errlen);
    }
    if (opts)
        sv->o = *opts;
    pthread_mutex_init(&sv->mu, NULL);
    *out = sv;
    return 0;
}

void fxsv_serving_free(fxsv_serving *sv)
{
    if (!sv)
        return;
    while (sv->entries) {
        entry *e = sv->entries;
        sv->entries = e->next;
        entry_clear(e, false);
    }
    fxsv_records_free(sv->records); /* after the instances: they hold references */
    pthread_mutex_destroy(&sv->mu);
    free(sv);
}
