/*
 * store.h - the daemon's persistent state under a data directory. store/
 * owns persistence: the data directory and its lock, every table's schema
 * and SQL (one migration list, db.c), and crash recovery at open
 * (recovery.c). No other module includes sqlite3.h or writes SQL; they
 * call the typed functions below, one file per table:
 *
 *   models_tab.c    models, versions   DIR/models/<team>/<name>/v<N>.safetensors
 *   versions_tab.c  aliases, alias_history, pins, retention, deleting a version
 *   datasets_tab.c  datasets           (the shards are datasets/'s files,
 *                                       DIR/datasets/<team>/<name>/)
 *   jobs_tab.c      jobs               (checkpoints are training/'s files)
 *   servecfg_tab.c  serving_config
 *   teams_tab.c     teams, quotas and usage
 *   auth_tab.c      tokens, cert_principals, settings
 *   upgrade.c       moving a data directory from before teams into 'default'
 *
 * Keys. Every model, dataset and served model is named by its key
 * "team/name" (base/principal.h): each function below that takes a name
 * takes a key, checked by fxdb_key_ok. The team must exist to create
 * anything under it (FXS_NOT_FOUND "team 'x' not found"). Opening a data
 * directory from before teams moves every object to team 'default' ("mlp"
 * -> "default/mlp"), rows and files (upgrade.c).
 *
 * Quotas. A team's models count, weight bytes (all its models' versions)
 * and dataset bytes are checked inside the write transactions (so two
 * concurrent writes cannot both pass): FXS_RESOURCE_EXHAUSTED naming the
 * team, what is allowed, used and asked for. A team's quota value 0 means
 * the daemon's default (fxdb_store_set_default_quota), whose 0 means none.
 *
 *   DIR/fluxion.db     SQLite (WAL)
 *   DIR/tmp/           stage files there (same file system), emptied at open
 *   DIR/RESERVE        room kept for deletes on a full disk (below)
 *
 * Files are written to a temporary name in the same directory, fsynced,
 * renamed, and the directory fsynced; rows are inserted in a transaction
 * after the file is in place. Opening the store removes temporary files and
 * weight files no row refers to (left by a crash), so a crash at any point
 * leaves either the old state or the new one.
 *
 * Thread-safe: calls may come from any thread (one connection, a mutex).
 * Functions return 0 or an fxs_status code (base/status.h) with a message in
 * err: FXS_NOT_FOUND, FXS_ALREADY_EXISTS, FXS_INVALID_ARGUMENT (bad name),
 * FXS_FAILED_PRECONDITION (a delete of what queued or running jobs use),
 * FXS_RESOURCE_EXHAUSTED (the disk is full: SQLITE_FULL, ENOSPC; or out of
 * memory), FXS_INTERNAL (other I/O and SQLite errors), FXS_DATA_LOSS
 * (reading an unusable version).
 *
 * A full disk. Deletes are how a full disk gets room again, but SQLite
 * needs room to delete: the rows go through the WAL, which grows. So the
 * store keeps DIR/RESERVE, a file of 256 KiB (several times what a delete
 * writes) allocated at open. When a delete's transaction fails for a full
 * disk, the store removes the reserve and runs the transaction again; the
 * files the delete frees are then removed. Writes that add data (a model,
 * a version, a dataset) first re-create the reserve and answer
 * RESOURCE_EXHAUSTED when they cannot, so the room the deletes freed goes
 * to the reserve first and a full disk can always be freed through the API.
 * Opening a store on a full disk works (it writes nothing when there is
 * nothing to repair); the reserve comes back with the first room.
 *
 * A version whose weights file is missing or does not match its size and
 * SHA-256 (checked at open and on every read) is logged and marked
 * unusable: it is left out of fxdb_model_rec.versions, "latest" means the
 * latest usable version, and its number is never reused.
 *
 * fxdb_store_open sets *out to the open store and returns 0, or leaves
 * *out NULL and returns a code with the message in err:
 * FXS_FAILED_PRECONDITION for a data directory locked by another store
 * (DIR/LOCK), a schema newer than this build, or a new fluxion.db next to
 * existing weight files; FXS_INVALID_ARGUMENT for no directory, or a path
 * that is not (and cannot become) a directory; FXS_RESOURCE_EXHAUSTED for a
 * full disk or out of memory; FXS_INTERNAL for other I/O and SQLite errors.
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

int fxdb_store_open(const char *dir, fxdb_store **out, char *err, size_t errlen);
void fxdb_store_close(fxdb_store *st);
const char *fxdb_store_dir(const fxdb_store *st);
/* DIR/tmp: stage files there (same file system) and rename them into place;
 * the store empties it at open. */
const char *fxdb_store_tmp_dir(const fxdb_store *st);

/* Model names: 1..128 of [A-Za-z0-9_.-], not starting with '.' or '-'.
 * Returns true, or false with a message. (Dataset names follow the same
 * rules.) */
bool fxdb_model_name_ok(const char *name, char *err, size_t errlen);
/* Object keys "team/name": the team part per fxp_team_name_ok, the name part
 * per fxdb_model_name_ok. Returns true, or false with a message that names
 * the part that is wrong. */
bool fxdb_key_ok(const char *key, char *err, size_t errlen);

/* A row of a table whose records are packed fluxion.v1 messages (datasets,
 * jobs): the store keeps them as bytes, their modules pack and unpack. */
typedef struct {
    int64_t id;     /* jobs: the job's id */
    char *name;     /* datasets: the dataset's key (NULL for jobs) */
    void *blob;     /* the packed record (malloc) */
    size_t len;
} fxdb_row;
/* Frees rows[0..n) and the array. */
void fxdb_rows_free(fxdb_row *rows, int n);

/* A step of the caller's that must happen inside a store transaction (a
 * directory renamed into place with its row, say). It runs under the
 * store's lock: keep it short and never call the store from it. A non-zero
 * return (an fxs_status code with a message in err) rolls the transaction
 * back. */
typedef int (*fxdb_hook)(void *ctx, char *err, size_t errlen);

/* ---------------------------------------------------- models, versions */

typedef struct {
    int64_t version;
    int64_t created_ms;     /* ms since the epoch */
    char *source;           /* free text ("init (seed 7)", "import", "job 12"): only
                             * ever shown; a job's version is found by job id */
    uint64_t weights_bytes;
    char sha256[65];        /* hex of the weights file */
    int64_t spec_revision;  /* the spec revision its weights fit (1: the first) */
    bool pinned;            /* kept by retention (fxdb_version_pin) */
    bool has_metric;        /* a job's gate recorded metric_name = metric */
    char *metric_name;      /* "" when none */
    double metric;
    int64_t job_id;         /* the job that made it; 0: none */
} fxdb_version_rec;

/* An alias of a model: name -> version (docs/versions.md). The alias
 * FXDB_PRODUCTION is the version serving uses. */
#define FXDB_PRODUCTION "production"
#define FXDB_ALIAS_MAX 32
typedef struct {
    char *name;
    int64_t version;
    int64_t updated_ms;
} fxdb_alias_rec;

/* A move of an alias: from_version 0 when it was new, to_version 0 when it
 * was deleted; undone: a rollback walked back over it. */
typedef struct {
    char *alias;
    int64_t from_version, to_version;
    int64_t at_ms;
    char *reason;
    bool undone;
} fxdb_history_rec;

typedef struct {
    int64_t id;             /* the model's row: never reused, so a model deleted and created
                               again under its name is another id (its versions, numbered
                               from 1 again, are other weights of maybe another spec) */
    char *name;
    char *description;
    void *spec;             /* packed fluxion.v1.ModelSpec: of spec_revision */
    size_t spec_len;
    int64_t spec_revision;  /* the latest version's (the one it serves by default) */
    int64_t revisions;      /* how many revisions the model has */
    uint64_t seed;
    bool loaded;            /* served */
    int64_t created_ms;
    int n_versions;
    fxdb_version_rec *versions; /* ascending */
    int64_t production;     /* the alias FXDB_PRODUCTION's version; 0: none */
    uint32_t keep_last;     /* retention: 0 keeps every version */
    int n_aliases;
    fxdb_alias_rec *aliases; /* by name */
    int n_history;
    fxdb_history_rec *history; /* newest first, at most FXDB_HISTORY_SHOWN */
} fxdb_model_rec;
#define FXDB_HISTORY_SHOWN 20
/* The alias moves kept per model (the oldest go): a model promoted forever
 * (a job with a promotion gate, a deploy script) would otherwise grow the
 * store by a row per move (found by scripts/soak.sh); rollback walks back at
 * most this far. */
#define FXDB_HISTORY_KEPT 1000

void fxdb_model_rec_free(fxdb_model_rec *m); /* frees the contents */

/* A new model with version 1 (weights = safetensors bytes). name is the key
 * "team/name"; NOT_FOUND when the team does not exist; RESOURCE_EXHAUSTED
 * when the team's models or weights quota would be exceeded. */
int fxdb_store_create_model(fxdb_store *st, const char *name, const char *description,
                           const void *spec, size_t spec_len, uint64_t seed, bool loaded,
                           const void *weights, size_t weights_len, const char *source,
                           char *err, size_t errlen);

/* A new version (latest + 1) of an existing model; *version gets it.
 * RESOURCE_EXHAUSTED past the team's weights quota. */
int fxdb_store_add_version(fxdb_store *st, const char *name, const void *weights,
                          size_t weights_len, const char *source, int64_t *version,
                          char *err, size_t errlen);

/* Spec revisions (revisions_tab.c). A model's spec can change (`model
 * update`): each new spec is the next revision, stored with its first
 * version in one transaction; a version records the revision its weights
 * fit (a new version takes the latest version's, a job's result its base
 * version's). fxdb_store_get_model's spec is the latest version's revision. */
/* The packed spec of a revision (*spec malloc'd); NOT_FOUND naming it.
 * model_id > 0 (fxdb_model_rec.id): the revision of that model only;
 * ABORTED when the name is another model's now (deleted and created again
 * since the record was read). */
int fxdb_store_read_spec(fxdb_store *st, const char *name, int64_t model_id, int64_t revision,
                         void **spec, size_t *len, char *err, size_t errlen);
/* A new revision (*revision gets it) with spec, and a new version of it
 * (*version) with weights, in one transaction. model_id > 0: the model
 * (fxdb_model_rec.id) the weights were carried from; ABORTED, nothing
 * stored, when the name is another model's now. */
int fxdb_store_update_spec(fxdb_store *st, const char *name, int64_t model_id, const void *spec,
                           size_t spec_len, const void *weights, size_t weights_len,
                           const char *source, int64_t *revision, int64_t *version, char *err,
                           size_t errlen);

int fxdb_store_get_model(fxdb_store *st, const char *name, fxdb_model_rec *out, char *err,
                        size_t errlen);
/* The models of a team (NULL or "": of all teams), by key. *out: array of
 * *n records (free each, then the array). */
int fxdb_store_list_models(fxdb_store *st, const char *team, fxdb_model_rec **out, int *n,
                           char *err, size_t errlen);
/* The model, its versions' rows and files, and its serving settings, in one
 * transaction. FAILED_PRECONDITION (naming the jobs) while QUEUED or RUNNING
 * jobs train it. */
int fxdb_store_delete_model(fxdb_store *st, const char *name, char *err, size_t errlen);
int fxdb_store_set_loaded(fxdb_store *st, const char *name, bool loaded, char *err, size_t errlen);

/* fxdb_store_add_version choosing whether the new version becomes
 * production (ImportWeights with no_promote keeps the served one). */
int fxdb_store_add_version_opt(fxdb_store *st, const char *name, const void *weights,
                               size_t weights_len, const char *source, bool promote,
                               int64_t *version, char *err, size_t errlen);
/* The same for weights checked against the spec of revision fits_revision
 * of the model whose fxdb_model_rec.id is model_id (ImportWeights):
 * ABORTED, nothing stored, when another revision became the latest
 * meanwhile (UpdateModelSpec), as the version would take it, or when the
 * model was deleted and created again (its revision numbers start again
 * from 1, for another spec). */
int fxdb_store_add_version_fit(fxdb_store *st, const char *name, const void *weights,
                               size_t weights_len, const char *source, bool promote,
                               int64_t model_id, int64_t fits_revision, int64_t *version,
                               char *err, size_t errlen);

/* ----------------------------------------- aliases, pins, retention
 * (versions_tab.c, docs/versions.md). Each is one transaction; an alias
 * move and its history row commit together. A version is added with
 * production moved to it (create, import, a job whose gate allows it), and
 * retention applied in the same transaction: the model keeps its last
 * keep_last versions plus every aliased or pinned one and every version a
 * queued or running job trains from (all while one's is not known); the
 * files of the versions it
 * drops are removed after the commit (a crash between leaves files no row
 * refers to, removed at open). */

/* Alias names: [a-z][a-z0-9_-]{0,31}. true, or false with a message. */
bool fxdb_alias_name_ok(const char *alias, char *err, size_t errlen);
/* alias -> version (a usable one: NOT_FOUND naming the version
 * otherwise), recording the move with reason in the history. *previous
 * (may be NULL) gets the version it pointed to (0: none). */
int fxdb_alias_set(fxdb_store *st, const char *name, const char *alias, int64_t version,
                   const char *reason, int64_t *previous, char *err, size_t errlen);
/* NOT_FOUND when the model has no such alias; FAILED_PRECONDITION for
 * FXDB_PRODUCTION (serving needs it: promote another version instead). */
int fxdb_alias_delete(fxdb_store *st, const char *name, const char *alias, char *err,
                      size_t errlen);
/* The version of an alias: NOT_FOUND ("model 'x' has no alias 'y'"). */
int fxdb_alias_get(fxdb_store *st, const char *name, const char *alias, int64_t *version,
                   char *err, size_t errlen);
/* The alias back to the version it pointed to before its last move that
 * was not rolled back already (so rolling back twice goes back twice);
 * *from and *to get the versions. FAILED_PRECONDITION when there is no
 * such move, or the version it would go back to was deleted. */
int fxdb_alias_rollback(fxdb_store *st, const char *name, const char *alias, int64_t *from,
                        int64_t *to, char *err, size_t errlen);
/* Pins (pinned true) or unpins a version. NOT_FOUND. */
int fxdb_version_pin(fxdb_store *st, const char *name, int64_t version, bool pinned, char *err,
                     size_t errlen);
/* Retention: keep the last keep_last versions (0: every version), applied
 * now and whenever a version is added. *dropped (may be NULL) gets how
 * many versions it removed now. */
int fxdb_model_set_retention(fxdb_store *st, const char *name, uint32_t keep_last,
                             int *dropped, char *err, size_t errlen);
/* Deletes a version's row, then its file. FAILED_PRECONDITION saying why
 * while it is production (served), aliased, pinned, or a queued or running
 * job trains from it (fxdb_job_cols.base_version; 0 counts as any version);
 * NOT_FOUND. */
int fxdb_version_delete(fxdb_store *st, const char *name, int64_t version, char *err,
                        size_t errlen);

/* Weights of a version (0: production, or the latest usable version when
 * production's is unusable) read into *buf (malloc). */
int fxdb_store_read_weights(fxdb_store *st, const char *name, int64_t version, void **buf,
                           size_t *len, char *err, size_t errlen);
/* The same for a version of the model whose fxdb_model_rec.id is model_id
 * (0: whichever has the name): ABORTED when the name is another model's
 * now (deleted and created again since the record was read: its version
 * numbers start again from 1, for other weights of maybe another spec). A
 * caller that read the record first, then the weights, reads them so. */
int fxdb_store_read_weights_of(fxdb_store *st, const char *name, int64_t model_id,
                               int64_t version, void **buf, size_t *len, char *err,
                               size_t errlen);

/* ------------------------------------------------------------ datasets */

/* The packed fluxion.v1.Dataset of a dataset (*info: malloc). NOT_FOUND
 * ("no dataset named 'x'"). */
int fxdb_dataset_get(fxdb_store *st, const char *name, void **info, size_t *len, char *err,
                     size_t errlen);
/* The datasets of a team (NULL or "": of all teams) by key (row.name,
 * row.blob). */
int fxdb_dataset_list(fxdb_store *st, const char *team, fxdb_row **rows, int *n, char *err,
                      size_t errlen);
/* One transaction: the team's datasets quota checked (bytes: the size of
 * the dataset's files; RESOURCE_EXHAUSTED), place(ctx) (the caller moves
 * the files into place), then the row. ALREADY_EXISTS when the name is
 * taken, NOT_FOUND when the team does not exist. */
int fxdb_dataset_insert(fxdb_store *st, const char *name, const void *info, size_t len,
                        uint64_t bytes, int64_t created_ms, fxdb_hook place, void *ctx,
                        char *err, size_t errlen);
/* One transaction: the row is found (NOT_FOUND), QUEUED or RUNNING jobs
 * that read it (dataset or validation_dataset) refuse the delete
 * (FAILED_PRECONDITION naming them), unplace(ctx) runs (the caller moves the
 * files away), the row goes. *info gets the deleted record (malloc; info
 * may be NULL when the caller does not want it). */
int fxdb_dataset_delete(fxdb_store *st, const char *name, fxdb_hook unplace, void *ctx,
                        void **info, size_t *len, char *err, size_t errlen);

/* ---------------------------------------------------------------- jobs */

/* The columns of a job row that the store filters and checks deletes on;
 * the rest of the job is its packed fluxion.v1.Job. */
typedef struct {
    const char *state;      /* QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED */
    const char *model;
    const char *dataset;
    const char *validation_dataset; /* "" or NULL: none */
    int64_t base_version;   /* the version it trains from; 0: not known (any);
                               finish: the result records this version's spec
                               revision (0: the model's latest) */
    int64_t model_id;       /* a new row: > 0, the model row the job was validated
                               against (fxdb_model_rec.id): ABORTED when the name is
                               another model's now (deleted and created again) */
} fxdb_job_cols;

/* Packs a job's record for the row being written (*blob: malloc). id is the
 * job's (known only inside the transaction for a new job); version is the
 * version fxdb_job_finish stores (0 for fxdb_job_save). Runs under the
 * store's lock, like fxdb_hook. */
typedef int (*fxdb_pack_fn)(void *ctx, int64_t id, int64_t version, void **blob, size_t *len,
                            char *err, size_t errlen);

/* Writes a job row in one transaction: a new one when *id is 0 (*id gets
 * it; NOT_FOUND unless its model and datasets exist then), else the row *id
 * (NOT_FOUND when it has none). The row's team is its model key's team. */
int fxdb_job_save(fxdb_store *st, int64_t *id, const fxdb_job_cols *cols, fxdb_pack_fn pack,
                  void *ctx, char *err, size_t errlen);
/* A job's result: the weights become the next version of cols->model with
 * versions.job_id = id, and the job's row is written (cols, pack), in ONE
 * transaction: after a crash the job either is unfinished and has no
 * version, or is finished with it. *version gets the version. */
int fxdb_job_finish(fxdb_store *st, int64_t id, const fxdb_job_cols *cols, const void *weights,
                    size_t weights_len, const char *source, fxdb_pack_fn pack, void *ctx,
                    int64_t *version, char *err, size_t errlen);
/* A job's promotion gate (docs/versions.md): the metric recorded with
 * the new version, and decide, called inside fxdb_job_finish_gated's
 * transaction (under the store's lock, before pack) with production's
 * version and the metric recorded with it (cur_name, cur_metric; cur_has
 * false: none), sets
 * *promote: true moves production to the new version in the same
 * transaction. decide may keep its reason in its ctx for pack. */
typedef struct {
    const char *metric_name; /* NULL or "": none recorded */
    double metric;
    int (*decide)(void *ctx, int64_t production, const char *cur_name, bool cur_has,
                  double cur_metric, bool *promote, char *err, size_t errlen);
    void *ctx;
} fxdb_gate;
/* fxdb_job_finish with a gate (NULL: production always moves, as
 * fxdb_job_finish does). */
int fxdb_job_finish_gated(fxdb_store *st, int64_t id, const fxdb_job_cols *cols,
                          const void *weights, size_t weights_len, const char *source,
                          const fxdb_gate *gate, fxdb_pack_fn pack, void *ctx, int64_t *version,
                          char *err, size_t errlen);
/* The version a job stored as its result (by versions.job_id, never by the
 * source text); *version 0 when there is none. */
int fxdb_job_version(fxdb_store *st, int64_t id, int64_t *version, char *err, size_t errlen);
/* Job rows (row.id, row.blob) by id, filtered: id > 0 that job only; team,
 * state and model "" (or NULL) for any. */
int fxdb_job_list(fxdb_store *st, int64_t id, const char *team, const char *state,
                  const char *model, fxdb_row **rows, int *n, char *err, size_t errlen);

/* ------------------------------------------------------ serving_config */

/* The packed fluxion.v1.BatchingConfig stored for a model (*config:
 * malloc); NOT_FOUND when none is stored. */
int fxdb_servecfg_get(fxdb_store *st, const char *model, void **config, size_t *len, char *err,
                      size_t errlen);
int fxdb_servecfg_put(fxdb_store *st, const char *model, const void *config, size_t len,
                      char *err, size_t errlen);
/* Forgets a model's settings (none stored is fine). */
int fxdb_servecfg_delete(fxdb_store *st, const char *model, char *err, size_t errlen);
/* The canary version a packed record names (0: none). The store keeps the
 * record's bytes without reading them; serving registers this reader
 * (serving/servecfg.c) so that the store keeps the canary's version, in
 * the transaction that decides: delete_version refuses it, retention
 * skips it, and a record naming a version that is not stored is refused
 * (NOT_FOUND), so no canary outlives its version. */
typedef int64_t (*fxdb_canary_fn)(const void *config, size_t len);
void fxdb_store_set_canary_fn(fxdb_store *st, fxdb_canary_fn fn);

/* --------------------------------------------------------------- teams */

/* Quota values: 0 means none (or, in a team's row, the daemon's default).
 * The scheduling fields (docs/scheduling.md) follow the same rule, except
 * that an effective quota always has a weight (default 1) and a budget
 * window (default 86400 s). weight and budget_device_seconds must be
 * finite and >= 0 (INVALID_ARGUMENT otherwise). */
typedef struct {
    uint64_t max_models, max_weight_bytes, max_dataset_bytes;
    double weight;                     /* fair-share weight */
    uint32_t cpu_slots, gpu_slots;     /* nominal: training slots guaranteed per kind */
    uint32_t borrow_cpu_slots, borrow_gpu_slots; /* beyond nominal, from idle capacity */
    double budget_device_seconds;      /* per window */
    uint32_t budget_window_seconds;
    uint32_t max_running_jobs;
    uint64_t gpu_memory_bytes;         /* GPU memory its running jobs' estimates may hold */
} fxdb_quota;
#define FXDB_DEFAULT_WEIGHT 1.0
#define FXDB_DEFAULT_BUDGET_WINDOW_SECONDS 86400u
typedef struct { uint64_t models, weight_bytes, dataset_bytes; } fxdb_usage;
typedef struct {
    char *name;
    char *display_name;
    int64_t created_ms;
    fxdb_quota quota;       /* the team's own values (0: the default) */
} fxdb_team_rec;
void fxdb_team_rec_free(fxdb_team_rec *t); /* frees the contents */

/* The row 'default' always exists. q may be NULL (all 0). INVALID_ARGUMENT
 * (a bad name), ALREADY_EXISTS. */
int fxdb_team_create(fxdb_store *st, const char *name, const char *display_name,
                     const fxdb_quota *q, char *err, size_t errlen);
int fxdb_team_get(fxdb_store *st, const char *name, fxdb_team_rec *out, char *err,
                  size_t errlen); /* NOT_FOUND */
/* All teams by name; free each record, then the array. */
int fxdb_team_list(fxdb_store *st, fxdb_team_rec **out, int *n, char *err, size_t errlen);
/* display_name NULL or "": kept; q NULL: kept (else every value replaced). NOT_FOUND. */
int fxdb_team_update(fxdb_store *st, const char *name, const char *display_name,
                     const fxdb_quota *q, char *err, size_t errlen);
/* One transaction: INVALID_ARGUMENT for 'default', NOT_FOUND, and
 * FAILED_PRECONDITION naming the counts while the team owns models,
 * datasets or queued/running jobs. Otherwise the team's rows go: its token
 * rows and certificate principals are DELETED (not kept as revoked), and
 * its finished jobs' rows too (their files under DIR/jobs/ are training/'s
 * to remove). The empty DIR/models/<team>/ is removed. */
int fxdb_team_delete(fxdb_store *st, const char *name, char *err, size_t errlen);
/* What a team uses now (NOT_FOUND when there is no such team). */
int fxdb_team_usage(fxdb_store *st, const char *team, fxdb_usage *u, char *err, size_t errlen);
/* The daemon's defaults for teams whose values are 0 (flags
 * --team-max-models etc.); 0 values: none. */
void fxdb_store_set_default_quota(fxdb_store *st, const fxdb_quota *q);
/* A team's values with its 0s replaced by the defaults (0: none; the
 * weight and the budget window then take FXDB_DEFAULT_*). */
int fxdb_team_effective_quota(fxdb_store *st, const char *team, fxdb_quota *q, char *err,
                              size_t errlen);

/* ------------------------------------------------ tokens, certificates */

/* Token rows: role is fxp_role_name's ("viewer", "member", "admin"); hash
 * the SHA-256 of the secret (the secret is never stored); times in ms since
 * the epoch, 0: never/none. */
typedef struct {
    int64_t id;
    char *team;
    char *name;
    char *role;
    unsigned char hash[32];
    int64_t created_ms, expires_ms, last_used_ms, revoked_ms;
    char *created_by;
} fxdb_token_rec;
void fxdb_token_recs_free(fxdb_token_rec *t, int n); /* the records and the array */
/* t->id is ignored; *id (may be NULL) gets the new id. In the same
 * transaction the setting "auth" becomes "on". INVALID_ARGUMENT (bad name or
 * role), NOT_FOUND (team), ALREADY_EXISTS (a live token of that team has the
 * name, or any token has the hash). */
int fxdb_token_insert(fxdb_store *st, const fxdb_token_rec *t, int64_t *id, char *err,
                      size_t errlen);
/* All rows (revoked ones too), by id. */
int fxdb_token_list(fxdb_store *st, fxdb_token_rec **out, int *n, char *err, size_t errlen);
/* NOT_FOUND; revoking a revoked token is OK (the first time is kept). */
int fxdb_token_revoke(fxdb_store *st, int64_t id, int64_t revoked_ms, char *err, size_t errlen);
/* Records a last use (NOT_FOUND). */
int fxdb_token_touch(fxdb_store *st, int64_t id, int64_t last_used_ms, char *err, size_t errlen);

typedef struct {
    char *subject;
    char *team;
    char *role;
    int64_t created_ms;
} fxdb_cert_rec;
void fxdb_cert_recs_free(fxdb_cert_rec *c, int n); /* the records and the array */
/* Sets "auth" = "on" in the same transaction. INVALID_ARGUMENT (empty
 * subject, bad role), NOT_FOUND (team), ALREADY_EXISTS (subject). */
int fxdb_cert_insert(fxdb_store *st, const fxdb_cert_rec *c, char *err, size_t errlen);
int fxdb_cert_list(fxdb_store *st, fxdb_cert_rec **out, int *n, char *err, size_t errlen);
int fxdb_cert_delete(fxdb_store *st, const char *subject, char *err, size_t errlen); /* NOT_FOUND */

/* ------------------------------------------------------------ settings */

/* *value: malloc. NOT_FOUND when the key has none. */
int fxdb_setting_get(fxdb_store *st, const char *key, char **value, char *err, size_t errlen);
int fxdb_setting_put(fxdb_store *st, const char *key, const char *value, char *err,
                     size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
