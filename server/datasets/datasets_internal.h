/*
 * datasets_internal.h - what datasets.c (the registry: open datasets and
 * their references, the names of uploads in progress, the quota, loading)
 * and upload.c (uploads: spill files, shards, the commit) share. Not for
 * other folders: the prefix is fxds__.
 */
#ifndef FXDS_DATASETS_INTERNAL_H
#define FXDS_DATASETS_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "base/principal.h"
#include "datasets/datasets.h"
#include "models/graph.h" /* fxg_dtype_from_proto, fxg_dtype_to_proto */

#define FXDS__MAX_TENSORS 256
#define FXDS__TENSOR_NAME_MAX 256
#define FXDS__DESCRIPTION_MAX 4096
/* Room for "[n,d1,...]" of a tensor with FX_MAX_DIMS dimensions. */
#define FXDS__SHAPE_STRLEN (FX_MAX_DIMS * 24 + 8)

struct fxds_dataset {
    fxds_datasets *ds;
    char *name;
    int refs;
    bool loading;    /* another thread is reading the shards */
    int status;      /* of the load, when it failed */
    fxds_column *colv;
    fxds_columns cols;
    char sha[65];
    fxds_dataset *next;
};

struct fxds_datasets {
    fxdb_store *st;
    fxds_datasets_opts o;
    char *dir;                /* DIR/datasets */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fxds_dataset *open;        /* loaded datasets (and ones being loaded) */
    fxds_upload *uploads;      /* in progress: their names are taken */
};

/* One tensor of an upload. */
typedef struct {
    char *name;
    fx_dtype dtype;
    int sample_ndim;
    int64_t sample_shape[FX_MAX_DIMS];
    uint64_t sample_bytes;
    int64_t samples;
    int fd;                   /* spill file (unlinked at creation: nothing to clean up) */
    EVP_MD_CTX *sha;
} fxds__tensor;

struct fxds_upload {
    fxds_datasets *ds;
    char *name, *description;
    fxds__tensor *t;
    int n;
    uint64_t bytes;           /* reserved against its team's quota (changed under ds->mu) */
    fxds_upload *next;
};

/* ------------------------------------------------------ shared helpers */

/* The dtypes a dataset may hold: safetensors name ("F32"), proto value.
 * from_proto takes UNSPECIFIED as FP32; false for any other value. */
const char *fxds__st_dtype(fx_dtype dt);

/* "[n,d1,d2]": n samples of shape dims, into buf (FXDS__SHAPE_STRLEN). */
const char *fxds__shape_str(int64_t n, int ndim, const int64_t *dims, char *buf, size_t len);

/* INVALID_ARGUMENT unless name follows the dataset (= model) name rules. */
int fxds__check_name(const char *name, char *err, size_t errlen);

/* Removes a directory tree; failures are logged, not returned. */
void fxds__rm_tree(const char *path);

/* The stored record of a dataset: NOT_FOUND, or DATA_LOSS if it does not
 * parse. */
int fxds__get_info(fxdb_store *st, const char *name, Fluxion__V1__Dataset **info, char *err,
                   size_t errlen);

/* The dataset checksum (datasets.c's top comment) of tensors in name order. */
typedef struct {
    const char *name;
    fx_dtype dtype;
    int64_t samples;
    int sample_ndim;
    const int64_t *sample_shape;
    unsigned char digest[32]; /* of the data */
} fxds__sum_item;
void fxds__combine_sha(const fxds__sum_item *it, int n, char out[65]);

/* A dataset's directory moved inside the store's transaction for its row
 * (the store calls the hook, place or unplace, under its lock). */
typedef struct {
    fxds_datasets *ds;
    const char *name;
    const char *from, *to;
    bool renamed;
} fxds__move;

/* Sets a stored record's name to its row's key (records from before teams
 * hold the bare name). */
void fxds__name_is_key(Fluxion__V1__Dataset *d, const char *key);

/* ------------------------------------ the registry's side of an upload */

/* Takes u->name for u (ALREADY_EXISTS while another upload has it). */
int fxds__upload_register(fxds_datasets *ds, fxds_upload *u, char *err, size_t errlen);
/* Gives the name and u's reservation back. */
void fxds__upload_unregister(fxds_datasets *ds, fxds_upload *u);
/* Reserves bytes more for u against the per-dataset limit and its team's
 * dataset quota: the team's stored datasets (the store's count) and its
 * uploads in progress (RESOURCE_EXHAUSTED naming the team and the sizes).
 * The store checks the quota again when the dataset is inserted. */
int fxds__quota_reserve(fxds_datasets *ds, fxds_upload *u, const char *tensor, uint64_t bytes,
                        char *err, size_t errlen);

#endif
