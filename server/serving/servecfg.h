/*
 * servecfg.h - the batching settings of a model (batcher.h's fxb_config):
 * as a fluxion.v1.BatchingConfig message, from RepositoryModelLoad
 * parameters, and stored per model (the store's serving_config table;
 * the record is the packed message, so fields can grow without
 * migrations).
 */
#ifndef FXSV_SERVECFG_H
#define FXSV_SERVECFG_H

#include <stdbool.h>
#include <stddef.h>

#include "serving/batcher.h"
#include "fluxion/v1/model.pb-c.h"
#include "inference/grpc_service.pb-c.h"
#include "store/store.h"

/* Field names of BatchingConfig, NULL-terminated (for help texts). */
const char *const *fxsv_cfg_fields(void);

/* Sets one field from text ("max_batch_size" "8", "enabled" "false",
 * "preferred_batch_sizes" "4,8"). 0, or INVALID_ARGUMENT with a message
 * naming the field. The result is not checked as a whole (fxb_config_check). */
int fxsv_cfg_set_text(fxb_config *c, const char *field, const char *value, char *err,
                     size_t errlen);

/* Applies SetServingConfig: fields named in mask (all when n_mask is 0)
 * are taken from m. */
int fxsv_cfg_apply(fxb_config *c, const Fluxion__V1__BatchingConfig *m, char *const *mask,
                  size_t n_mask, char *err, size_t errlen);

/* Applies RepositoryModelLoad parameters (bool, int64 or string values). */
int fxsv_cfg_apply_params(fxb_config *c,
                         Inference__RepositoryModelLoadRequest__ParametersEntry *const *p,
                         size_t n, char *err, size_t errlen);

/* Fills m (initialised by the caller) from c; pref is storage for the
 * preferred sizes (FXB_MAX_PREFERRED). m->device points into c: c must
 * outlive m. m->precision is "fp32" or "bf16" (static). */
void fxsv_cfg_to_msg(const fxb_config *c, Fluxion__V1__BatchingConfig *m, uint32_t *pref);

/* Whether the precision setting of c can run on dev (bf16: CPU only): 0, or
 * INVALID_ARGUMENT with a message naming the setting, prefixed by what
 * (may be NULL). */
int fxsv_cfg_check_precision(const fxb_config *c, fx_device dev, const char *what, char *err,
                            size_t errlen);

/* Stored settings of a model; the defaults when none are stored. Saving
 * keeps the stored canary (below). */
int fxsv_cfg_load(fxdb_store *st, const char *model, fxb_config *c, char *err, size_t errlen);
int fxsv_cfg_save(fxdb_store *st, const char *model, const fxb_config *c, char *err,
                 size_t errlen);

/* A model's canary: a second version served beside the main one, taking
 * percent (0..100) of the requests that name no version (serving.h
 * fxsv_serving_set_canary). version 0: none. Stored in the same record as
 * the batching settings (BatchingConfig.canary), so it needs no migration
 * and goes with the model when it is deleted. */
typedef struct {
    int64_t version;
    uint32_t percent;
} fxsv_canary;

/* The stored canary ({0, 0} when none); saving it keeps the batching
 * settings. Status codes as store.h. */
int fxsv_canary_load(fxdb_store *st, const char *model, fxsv_canary *out, char *err,
                    size_t errlen);
int fxsv_canary_save(fxdb_store *st, const char *model, const fxsv_canary *cn, char *err,
                    size_t errlen);
/* The canary version of a packed record (0: none): the store's reader
 * (store.h fxdb_store_set_canary_fn), registered by fxsv_serving_create. */
int64_t fxsv_cfg_canary_version(const void *config, size_t len);

#endif
