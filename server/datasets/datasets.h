/*
 * datasets.h - the datasets module (prefix fxds_). It owns the uploaded
 * datasets: their files under DIR/datasets/, the uploads in progress, the
 * per-dataset limit and the quota, and the datasets loaded for training
 * (shared, reference counted). Their rows (packed fluxion.v1.Dataset) are
 * the store's datasets table (store/datasets_tab.c); this module never
 * writes SQL.
 *
 * DIR/datasets/<name>/ holds safetensors shards (each a slice of samples of
 * every tensor), written and fsynced in a staging directory and moved into
 * place only when the whole upload is valid; the store's transaction that
 * inserts the row makes it visible. A half-uploaded or cancelled dataset
 * leaves nothing; directories without a row are removed at open.
 *
 * Files: datasets.c (the registry: open/close and crash recovery, uploads'
 * names and the quota, get/list/delete, loading and references), upload.c
 * (begin/add/commit/abort: spill files, shards, the commit), columns.h (a
 * loaded dataset as the trainer sees it), datasets_internal.h (what the two
 * .c files share, prefix fxds__).
 *
 * Error contract: every function that can fail returns 0 or an fxs_status
 * code (base/status.h) with a message in err (FXS_ERRLEN bytes suffice).
 * The handles a function makes go to its out parameter, which is NULL on
 * failure.
 */
#ifndef FXDS_DATASETS_H
#define FXDS_DATASETS_H

#include <stddef.h>
#include <stdint.h>

#include "datasets/columns.h"
#include "fluxion/v1/dataset.pb-c.h"
#include "store/store.h"

typedef struct fxds_datasets fxds_datasets;

typedef struct {
    uint64_t max_dataset_bytes; /* one dataset's tensor data; 0: 16 GiB */
    /* The quota of all a team's datasets together is the team's (store.h:
     * fxdb_team_effective_quota). */
    uint64_t shard_bytes;       /* target shard size; 0: 64 MiB */
} fxds_datasets_opts;

/* Opens the registry on st (which must outlive it): creates DIR/datasets/
 * and removes what a crash left there. *out is NULL on failure. */
int fxds_datasets_open(fxdb_store *st, const fxds_datasets_opts *opts, fxds_datasets **out,
                       char *err, size_t errlen);
void fxds_datasets_close(fxds_datasets *ds);

/* An upload: begun with the first chunk's name, fed each chunk's tensors,
 * then committed (validates sample counts, writes the last shard, makes the
 * dataset visible) or aborted (removes everything staged). Validation errors
 * (dtype or per-sample shape changing between chunks, data size not
 * matching the shape, a name already taken, over max_dataset_bytes or the
 * quota: RESOURCE_EXHAUSTED) are reported by the call that finds them; the
 * caller then aborts. */
typedef struct fxds_upload fxds_upload;
int fxds_upload_begin(fxds_datasets *ds, const char *name, const char *description,
                     fxds_upload **out, char *err, size_t errlen);
int fxds_upload_add(fxds_upload *u, const Fluxion__V1__TensorData *t, char *err, size_t errlen);
/* On success *info (free with fluxion__v1__dataset__free_unpacked) is the
 * stored description. The upload is freed either way. */
int fxds_upload_commit(fxds_upload *u, Fluxion__V1__Dataset **info, char *err, size_t errlen);
void fxds_upload_abort(fxds_upload *u);
/* The dataset name the upload was begun with. */
const char *fxds_upload_name(const fxds_upload *u);

int fxds_dataset_get(fxds_datasets *ds, const char *name, Fluxion__V1__Dataset **info, char *err,
                    size_t errlen);
/* A team's datasets (team NULL or "": every team's) by key; *infos: array
 * of *n (free each, then the array). Names are keys ("team/name"). */
int fxds_dataset_list(fxds_datasets *ds, const char *team, Fluxion__V1__Dataset ***infos,
                      int *n, char *err, size_t errlen);
/* NOT_FOUND, or FAILED_PRECONDITION while a job holds it open (the message
 * names the job count). */
int fxds_dataset_delete(fxds_datasets *ds, const char *name, char *err, size_t errlen);

/* A dataset loaded for training: every tensor in memory, read-only, shared
 * by the jobs that use it (reference counted). */
typedef struct fxds_dataset fxds_dataset;
int fxds_dataset_open(fxds_datasets *ds, const char *name, fxds_dataset **out, char *err,
                     size_t errlen);
const fxds_columns *fxds_dataset_columns(const fxds_dataset *d);
const char *fxds_dataset_sha256(const fxds_dataset *d);
void fxds_dataset_release(fxds_dataset *d);

#endif
