/*
 * datasets.h - datasets under the data directory: DIR/datasets/<name>/ holds
 * safetensors shards (each a slice of samples of every tensor), written to
 * DIR/tmp, fsynced, and moved into place only when the whole upload is
 * valid; the datasets table of the store (packed fluxion.v1.Dataset) makes
 * it visible in the same transaction. A half-uploaded or cancelled dataset
 * leaves nothing; directories without a row are removed at open.
 *
 * Status codes are fxs_status values (rpc.h) with a message in err.
 */
#ifndef FXD_DATASETS_H
#define FXD_DATASETS_H

#include <stddef.h>
#include <stdint.h>

#include "columns.h"
#include "fluxion/v1/dataset.pb-c.h"
#include "store.h"

typedef struct fxd_datasets fxd_datasets;

typedef struct {
    uint64_t max_dataset_bytes; /* one dataset's tensor data; 0: 16 GiB */
    uint64_t quota_bytes;       /* all datasets together; 0: no limit */
    uint64_t shard_bytes;       /* target shard size; 0: 64 MiB */
} fxd_datasets_opts;

fxd_datasets *fxd_datasets_open(fxs_store *st, const fxd_datasets_opts *opts, char *err,
                                size_t errlen);
void fxd_datasets_close(fxd_datasets *ds);

/* An upload: begun with the first chunk's name, fed each chunk's tensors,
 * then committed (validates sample counts, writes the last shard, makes the
 * dataset visible) or aborted (removes everything staged). Validation errors
 * (dtype or per-sample shape changing between chunks, data size not
 * matching the shape, a name already taken, over max_dataset_bytes or the
 * quota: RESOURCE_EXHAUSTED) are reported by the call that finds them; the
 * caller then aborts. */
typedef struct fxd_upload fxd_upload;
int fxd_upload_begin(fxd_datasets *ds, const char *name, const char *description,
                     fxd_upload **out, char *err, size_t errlen);
int fxd_upload_add(fxd_upload *u, const Fluxion__V1__TensorData *t, char *err, size_t errlen);
/* On success *info (free with fluxion__v1__dataset__free_unpacked) is the
 * stored description. The upload is freed either way. */
int fxd_upload_commit(fxd_upload *u, Fluxion__V1__Dataset **info, char *err, size_t errlen);
void fxd_upload_abort(fxd_upload *u);
/* The dataset name the upload was begun with. */
const char *fxd_upload_name(const fxd_upload *u);

int fxd_dataset_get(fxd_datasets *ds, const char *name, Fluxion__V1__Dataset **info, char *err,
                    size_t errlen);
/* All datasets by name; *infos: array of *n (free each, then the array). */
int fxd_dataset_list(fxd_datasets *ds, Fluxion__V1__Dataset ***infos, int *n, char *err,
                     size_t errlen);
/* NOT_FOUND, or FAILED_PRECONDITION while a job holds it open (the message
 * names the job count). */
int fxd_dataset_delete(fxd_datasets *ds, const char *name, char *err, size_t errlen);

/* A dataset loaded for training: every tensor in memory, read-only, shared
 * by the jobs that use it (reference counted). */
typedef struct fxd_dataset fxd_dataset;
int fxd_dataset_open(fxd_datasets *ds, const char *name, fxd_dataset **out, char *err,
                     size_t errlen);
const fxd_columns *fxd_dataset_columns(const fxd_dataset *d);
const char *fxd_dataset_sha256(const fxd_dataset *d);
void fxd_dataset_release(fxd_dataset *d);

#endif
