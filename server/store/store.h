/*
 * store.h - the daemon's persistent state under a data directory:
 *
 *   DIR/fluxion.db                     SQLite (WAL): models, versions, ...
 *   DIR/models/<name>/v<N>.safetensors weights of version N
 *
 * Files are written to a temporary name in the same directory, fsynced,
 * renamed, and the directory fsynced; rows are inserted in a transaction
 * after the file is in place. Opening the store removes temporary files and
 * weight files no row refers to (left by a crash), so a crash at any point
 * leaves either the old state or the new one.
 *
 * Thread-safe: calls may come from any thread (one connection, a mutex).
 * Functions return 0 or an fxs_status code (rpc.h) with a message in err:
 * FXS_NOT_FOUND, FXS_ALREADY_EXISTS, FXS_INVALID_ARGUMENT (bad name),
 * FXS_INTERNAL (I/O, SQLite), FXS_DATA_LOSS (reading an unusable version).
 *
 * A version whose weights file is missing or does not match its size and
 * SHA-256 (checked at open and on every read) is logged and marked
 * unusable: it is left out of fxdb_model_rec.versions, "latest" means the
 * latest usable version, and its number is never reused. fxdb_store_open
 * refuses (NULL, message) a data directory locked by another store (DIR/LOCK),
 * a schema newer than this build, and a new fluxion.db next to existing
 * weight files.
 */
#ifndef FXDB_STORE_H
#define FXDB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fxdb_store fxdb_store;

typedef struct {
    int64_t version;
    int64_t created_ms;     /* ms since the epoch */
    char *source;           /* "init (seed 7)", "import", "job 12" */
    uint64_t weights_bytes;
    char sha256[65];        /* hex of the weights file */
} fxdb_version_rec;

typedef struct {
    char *name;
    char *description;
    void *spec;             /* packed fluxion.v1.ModelSpec */
    size_t spec_len;
    uint64_t seed;
    bool loaded;            /* served */
    int64_t created_ms;
    int n_versions;
    fxdb_version_rec *versions; /* ascending */
} fxdb_model_rec;

void fxdb_model_rec_free(fxdb_model_rec *m); /* frees the contents */

fxdb_store *fxdb_store_open(const char *dir, char *err, size_t errlen);
void fxdb_store_close(fxdb_store *st);
const char *fxdb_store_dir(const fxdb_store *st);

/* Model names: 1..128 of [A-Za-z0-9_.-], not starting with '.' or '-'.
 * Returns true, or false with a message. */
bool fxdb_model_name_ok(const char *name, char *err, size_t errlen);

/* A new model with version 1 (weights = safetensors bytes). */
int fxdb_store_create_model(fxdb_store *st, const char *name, const char *description,
                           const void *spec, size_t spec_len, uint64_t seed, bool loaded,
                           const void *weights, size_t weights_len, const char *source,
                           char *err, size_t errlen);

/* A new version (latest + 1) of an existing model; *version gets it. */
int fxdb_store_add_version(fxdb_store *st, const char *name, const void *weights,
                          size_t weights_len, const char *source, int64_t *version,
                          char *err, size_t errlen);

int fxdb_store_get_model(fxdb_store *st, const char *name, fxdb_model_rec *out, char *err,
                        size_t errlen);
/* All models, by name. *out: array of *n records (free each, then the array). */
int fxdb_store_list_models(fxdb_store *st, fxdb_model_rec **out, int *n, char *err, size_t errlen);
int fxdb_store_delete_model(fxdb_store *st, const char *name, char *err, size_t errlen);
int fxdb_store_set_loaded(fxdb_store *st, const char *name, bool loaded, char *err, size_t errlen);

/* Weights of a version (0: the latest) read into *buf (malloc). */
int fxdb_store_read_weights(fxdb_store *st, const char *name, int64_t version, void **buf,
                           size_t *len, char *err, size_t errlen);

/* Tables of other modules (datasets, jobs; see the migrations in store.c):
 * fn runs with the store's connection under its lock, inside BEGIN
 * IMMEDIATE ... COMMIT for fxdb_store_tx (rolled back when fn returns
 * non-zero), outside a transaction for fxdb_store_read. fn returns 0 or an
 * fxs_status code with a message in err. Keep fn short: it holds the lock. */
struct sqlite3;
typedef int (*fxdb_db_fn)(struct sqlite3 *db, void *ctx, char *err, size_t errlen);
int fxdb_store_tx(fxdb_store *st, fxdb_db_fn fn, void *ctx, char *err, size_t errlen);
int fxdb_store_read(fxdb_store *st, fxdb_db_fn fn, void *ctx, char *err, size_t errlen);

/* DIR/tmp: stage files there (same file system) and rename them into place;
 * the store empties it at open. */
const char *fxdb_store_tmp_dir(const fxdb_store *st);

#ifdef __cplusplus
}
#endif
#endif
