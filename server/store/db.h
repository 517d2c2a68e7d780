/*
 * db.h - internal to store/: the store's state and the helpers its files
 * share (the connection, its lock, statements, transactions, paths). No
 * file outside server/store/ includes it; the public interface is store.h.
 *
 * Internal names carry a double underscore (fxdb__), libuv's uv__ rule: a
 * reader knows at once that a function is not part of the module's API.
 *
 * Locking: st->mu guards the connection. Every public function takes it
 * (through fxdb__tx / fxdb__read or directly) and releases it before
 * returning; nothing in store/ calls out to another module while holding it
 * except the caller's own hooks (store.h says which, and why that is safe).
 */
#ifndef FXDB_DB_H
#define FXDB_DB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "store/store.h"

#define FXDB_NAME_MAX 128

struct fxdb_store {
    pthread_mutex_t mu;
    sqlite3 *db;
    char *dir;
    char *models_dir;
    char *tmp_dir;
    char *reserve_path;   /* DIR/RESERVE (see store.h, "A full disk") */
    bool reserve_ok;      /* it exists at full size */
    int lock_fd;
    fxdb_quota default_quota; /* under mu; 0 values: none (teams_tab.c) */
    fxdb_canary_fn canary_fn;  /* the canary of a serving_config record (NULL: none) */
};

/* ------------------------------------------------------------ logging */

/* A line through the daemon's logger (base/log.h), component "store": the
 * store never writes to stderr itself. */
void fxdb__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --------------------------------------------------------- statements */

/* The status of the connection's last error: FXS_RESOURCE_EXHAUSTED for a
 * full disk (SQLITE_FULL), FXS_INTERNAL otherwise; err gets "store: what:
 * SQLite's message". */
int fxdb__fail(fxdb_store *st, char *err, size_t errlen, const char *what);
int fxdb__exec(fxdb_store *st, const char *sql, char *err, size_t errlen);
int fxdb__prepare(fxdb_store *st, const char *sql, sqlite3_stmt **stmt, char *err,
                  size_t errlen);
/* Runs a statement that returns no rows, then finalizes it. */
int fxdb__step_done(fxdb_store *st, sqlite3_stmt *stmt, const char *what, char *err,
                    size_t errlen);
/* A single integer from a query with one text parameter (or none):
 * 0 and *val, FXS_NOT_FOUND for no row. */
int fxdb__query_int(fxdb_store *st, const char *sql, const char *param, int64_t *val,
                    char *err, size_t errlen);
/* A blob column as a malloc'd copy (one byte more than *len is allocated). */
int fxdb__column_blob(sqlite3_stmt *s, int col, void **out, size_t *len, char *err,
                      size_t errlen);
/* A new zeroed row at the end of *rows (n rows, room for cap); NULL when
 * out of memory (the rows so far stay, for fxdb_rows_free). */
fxdb_row *fxdb__rows_add(fxdb_row **rows, int *n, int *cap);
/* The id of a model row; FXS_NOT_FOUND ("model \"x\" not found"). */
int fxdb__model_id(fxdb_store *st, const char *name, int64_t *id, char *err, size_t errlen);
/* fxdb__model_id, and ABORTED (fxdb__recreated) when want > 0 and the name
 * is another row's now. */
int fxdb__model_id_of(fxdb_store *st, const char *name, int64_t want, int64_t *id, char *err,
                      size_t errlen);
/* ABORTED: the model named name was deleted and created again since the
 * caller read it (fxdb_model_rec.id). */
int fxdb__recreated(const char *name, char *err, size_t errlen);
/* The packed spec of a model row's revision (under st->mu; revisions_tab.c):
 * revision 1 is models.spec. *spec malloc'd; NOT_FOUND naming it. */
int fxdb__revision_spec(fxdb_store *st, int64_t model_id, const char *name, int64_t revision,
                        void **spec, size_t *len, char *err, size_t errlen);
/* How many spec revisions a model row has (under st->mu). */
int fxdb__revision_count(fxdb_store *st, int64_t model_id, int64_t *n, char *err,
                         size_t errlen);

/* ------------------------------------------------------- transactions */

void fxdb__rollback(fxdb_store *st);
/* Commits, or rolls back and returns rc. */
int fxdb__finish_tx(fxdb_store *st, int rc, char *err, size_t errlen);

/* fn runs with st->mu held: inside BEGIN IMMEDIATE ... COMMIT for
 * fxdb__tx (rolled back when fn returns non-zero), outside a transaction
 * for fxdb__read (one statement at a time sees committed rows). */
typedef int (*fxdb__fn)(fxdb_store *st, void *ctx, char *err, size_t errlen);
int fxdb__tx(fxdb_store *st, fxdb__fn fn, void *ctx, char *err, size_t errlen);
/* fxdb__tx for a caller that holds st->mu already. */
int fxdb__tx_locked(fxdb_store *st, fxdb__fn fn, void *ctx, char *err, size_t errlen);
int fxdb__read(fxdb_store *st, fxdb__fn fn, void *ctx, char *err, size_t errlen);

/* ------------------------------------------------------- a full disk */

/* Under st->mu: makes sure DIR/RESERVE holds its space. Writes that add
 * data call it first: FXS_RESOURCE_EXHAUSTED when the space cannot be
 * reserved (the disk is full; deleting makes room). */
int fxdb__reserve_ensure(fxdb_store *st, char *err, size_t errlen);
/* fxdb__tx_locked for a delete: when it fails for a full disk, the reserve
 * is given up (its space is what SQLite's WAL needs) and the transaction
 * runs once more. fn may run twice: it must be repeatable. */
int fxdb__tx_freeing(fxdb_store *st, fxdb__fn fn, void *ctx, char *err, size_t errlen);

/* Argument checks shared by the table files: a store, and a valid key
 * "team/name" (fxdb_key_ok). */
int fxdb__check_name(fxdb_store *st, const char *name, char *err, size_t errlen);

/* ---------------------------------------------------------- migrations */

/* Brings the schema to the newest version; *was gets the version found
 * (0 for a new database). db.c holds the one migration list. */
int fxdb__migrate(fxdb_store *st, int *was, char *err, size_t errlen);

/* Migration 5 -> 6 (upgrade.c): before its transaction, the directories of
 * models and datasets move into DIR/{models,datasets}/default/ (crash-safe,
 * repeatable); inside it, datasets.bytes of old rows from their files. */
int fxdb__upgrade_files(fxdb_store *st, char *err, size_t errlen);
int fxdb__upgrade_dataset_bytes(fxdb_store *st, char *err, size_t errlen);

/* --------------------------------------------------------------- files */

char *fxdb__model_dir(const fxdb_store *st, const char *name);
char *fxdb__weights_path(const fxdb_store *st, const char *name, int64_t version);
/* v<N>.safetensors: *version gets N; *canonical tells whether the name is
 * exactly as the store writes it (N >= 1, no leading zeros). */
bool fxdb__parse_weights_name(const char *fname, int64_t *version, bool *canonical);
/* .<base>.tmp.XXXXXX, as fxu_write_temp makes them. */
bool fxdb__is_temp_name(const char *fname);

/* Calls fn for each entry of dir but . and ..; stops at the first nonzero
 * return and returns it. -1 if dir cannot be opened. */
typedef int (*fxdb__entry_fn)(const char *dir, const char *fname, void *ctx);
int fxdb__each_entry(const char *dir, fxdb__entry_fn fn, void *ctx);
/* Unlinks dir/fname; logs why (NULL: only failures). */
void fxdb__remove_file(const char *dir, const char *fname, const char *why);

/* -------------------------------------------------------------- models */

/* Runs inside a version's transaction once its row is in. */
typedef int (*fxdb__after_fn)(fxdb_store *st, void *ctx, int64_t version, char *err,
                              size_t errlen);
/* How a version is added (fxdb__add_version). */
typedef struct {
    bool promote;            /* production moves to it (when gate is NULL) */
    const fxdb_gate *gate;   /* a job's promotion gate (store.h); NULL: promote decides */
    int64_t job_id;          /* > 0: versions.job_id */
    int64_t fits_revision;   /* > 0: the spec revision the weights were checked against */
    int64_t fits_model_id;   /* > 0: the model (row id) they were checked against or made
                                from: ABORTED when the name is another model's now */
    fxdb__after_fn after;    /* runs once the row is in and production settled (may be NULL) */
    void *after_ctx;
} fxdb__vopts;
/* fxdb_store_add_version with o (NULL: promote, no job) in the same
 * transaction, then retention (models_tab.c). */
int fxdb__add_version(fxdb_store *st, const char *name, const void *weights, size_t weights_len,
                      const char *source, const fxdb__vopts *o, int64_t *version, char *err,
                      size_t errlen);

/* ------------------------------------------- aliases and retention */

/* (versions_tab.c) Into m, for the model row id: its aliases (production
 * too), the newest history rows, and per version pinned/metric/job_id. */
int fxdb__load_version_meta(fxdb_store *st, int64_t id, fxdb_model_rec *m, char *err,
                            size_t errlen);
void fxdb__free_version_meta(fxdb_model_rec *m);
/* Inside a version's transaction, its row in: the metric of o's gate
 * recorded, and production moved to it when o says so. */
int fxdb__settle_version(fxdb_store *st, int64_t model_id, int64_t version, const fxdb__vopts *o,
                         char *err, size_t errlen);
/* Inside a transaction: retention applied to the model (versions.c);
 * *dropped (malloc, *n) gets the numbers whose rows went, for
 * fxdb__remove_version_files after the commit. */
int fxdb__retain(fxdb_store *st, int64_t model_id, int64_t **dropped, int *n, char *err,
                 size_t errlen);
/* After the commit, under st->mu: the files of dropped versions. */
void fxdb__remove_version_files(fxdb_store *st, const char *name, const int64_t *dropped, int n);

/* ---------------------------------------------------- across the tables */

/* Inside a delete's transaction: FXS_FAILED_PRECONDITION, naming the jobs,
 * when QUEUED or RUNNING jobs use the model (what "model") or the dataset
 * (what "dataset": as dataset or validation_dataset); 0 when none do
 * (jobs_tab.c). */
int fxdb__refuse_if_jobs_use(fxdb_store *st, const char *what, const char *name, char *err,
                             size_t errlen);
/* Inside a transaction: the canary version the serving_config record of
 * the model with row id names (0: none, or no reader registered). */
int fxdb__canary_of(fxdb_store *st, int64_t model_id, int64_t *version, char *err,
                    size_t errlen);
/* Inside a model's delete transaction: its serving settings go too
 * (servecfg_tab.c). */
int fxdb__servecfg_forget(fxdb_store *st, const char *model, char *err, size_t errlen);

/* --------------------------------------------------- teams and quotas */

/* The team of a key into out (FXP_TEAM_MAX + 1 bytes). */
void fxdb__key_team(const char *key, char *out, size_t outlen);
/* Inside a transaction: 0 when the team exists, FXS_NOT_FOUND ("team 'x'
 * not found") when not (teams_tab.c). */
int fxdb__team_exists(fxdb_store *st, const char *team, char *err, size_t errlen);
/* Inside a write's transaction: FXS_RESOURCE_EXHAUSTED when the team of
 * key would exceed its quota with one more model (new_model) and
 * weight_bytes more weights, or dataset_bytes more datasets; 0 when not. */
int fxdb__quota_check(fxdb_store *st, const char *key, bool new_model, uint64_t weight_bytes,
                      uint64_t dataset_bytes, char *err, size_t errlen);

/* ------------------------------------------------------------ recovery */

/* At open, after the migrations: removes what a crash left (recovery.c). */
int fxdb__recover(fxdb_store *st, char *err, size_t errlen);
/* Records why a version cannot be used (NULL: it can). */
int fxdb__set_unusable(fxdb_store *st, int64_t model_id, int64_t version, const char *why,
                       char *err, size_t errlen);

#endif
