/*
 * serving_internal.h - what serving.c shares with canary.c (the canary: a
 * second version served beside the main one, serving.h
 * fxsv_serving_set_canary): the registry of loaded models and the helpers
 * that build, reference and lock them.
 */
#ifndef FXSV_SERVING_INTERNAL_H
#define FXSV_SERVING_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "serving/serving.h"
#include "serving/stats_internal.h"

#define FXSV_MAX_OLD_VERSIONS 4

struct fxsv_served {
    atomic_int refs;
    char *name;
    int64_t version;
    fxg_graph *g;
    fxb_batcher *b;     /* runs its requests */
    fxsv_record *rec;   /* its version's statistics (outlive it) */
};

/* A loaded model. Its instances are swapped under sv->mu; each holds a
 * reference of its own, released outside the lock. */
typedef struct fxsv_entry {
    char *name;
    fxsv_served *current; /* the main instance */
    fxsv_served *canary;  /* the canary instance, or NULL (canary.c) */
    uint32_t canary_percent;
    /* Requests without a version since the canary was set (or the model
     * loaded), modulo 100 (the period of the split, canary.c). */
    uint32_t canary_turn;
    fxsv_served *old[FXSV_MAX_OLD_VERSIONS]; /* other versions asked for by number */
    int n_old;
    struct fxsv_entry *next;
} fxsv_entry;

/* One model's changes (load, reload, unload, new settings, canary) run one
 * at a time: each builds an instance outside sv->mu and swaps it in under
 * it, and two at once could swap the older build in last, or serve a model
 * again that an unload (or a delete) had just stopped. */
typedef struct fxsv_name_lock {
    char *name;
    int users;          /* holders and waiters; freed at 0 (under sv->mu) */
    pthread_mutex_t mu;
    struct fxsv_name_lock *next;
} fxsv_name_lock;

struct fxsv_serving {
    fxdb_store *st;
    fxsv_serving_opts o;
    pthread_mutex_t mu; /* entries, locks */
    fxsv_entry *entries;
    fxsv_name_lock *locks;
    fxsv_records *records; /* statistics per (model, version) */
};

/* Another reference (drop it with fxsv_served_release, which takes NULL). */
fxsv_served *fxsv_served_ref(fxsv_served *m);
/* The instance of a stored version (0: the main one) built from the store
 * and batched by the model's stored settings; *stored_loaded (optional):
 * the store's "loaded" flag of the model. Status codes as store.h. */
int fxsv_build_served(fxsv_serving *sv, const char *name, int64_t version, fxsv_served **out,
                      bool *stored_loaded, char *err, size_t errlen);
/* The entry of a loaded model, or NULL. Under sv->mu. */
fxsv_entry *fxsv_find_entry(fxsv_serving *sv, const char *name);
/* The instance of version (0: the main one) kept in e, or NULL. Under sv->mu. */
fxsv_served *fxsv_entry_cached(fxsv_entry *e, int64_t version);
/* Takes the instance of version out of e's older versions (the caller
 * drops its reference), or NULL. Under sv->mu. */
fxsv_served *fxsv_entry_take_old(fxsv_entry *e, int64_t version);
/* Takes the change lock of a model (see fxsv_name_lock); NULL when out of
 * memory. */
fxsv_name_lock *fxsv_lock_name(fxsv_serving *sv, const char *name);
void fxsv_unlock_name(fxsv_serving *sv, fxsv_name_lock *l);

/* canary.c: the canary instance to serve beside a main instance of
 * main_version, as the stored setting says: the one served now when it is
 * of that version, else built; *percent its share. NULL when none is set,
 * when it is the main version now (the setting is then cleared: it was
 * promoted), or when it cannot be built (logged: the main instance serves
 * every request). Under the model's change lock. */
fxsv_served *fxsv_canary_for_load(fxsv_serving *sv, const char *name, int64_t main_version,
                                  uint32_t *percent);

#endif
