/*
 * stats_internal.h - serving's statistics records (stats.c), one per
 * (model key, version), shared by the instances that serve that version
 * one after another (serving.c): a record outlives them, so counts go on
 * across reloads and new settings. Reference-counted: the registry holds
 * one reference until the model is forgotten, each instance one.
 *
 * Every request takes its record's lock once, for a few adds (the lock the
 * instance took before); nothing else is shared on that path.
 */
#ifndef FXSV_STATS_INTERNAL_H
#define FXSV_STATS_INTERNAL_H

#include "serving/serving.h"

typedef struct fxsv_record fxsv_record;
typedef struct fxsv_records fxsv_records;

fxsv_records *fxsv_records_new(void);
void fxsv_records_free(fxsv_records *r);
/* The record of (name, version), made on first use; referenced (drop it
 * with fxsv_record_unref). NULL when out of memory. */
fxsv_record *fxsv_record_get(fxsv_records *r, const char *name, int64_t version);
void fxsv_record_unref(fxsv_record *rec);
/* Drops the registry's references to name's records. */
void fxsv_records_forget(fxsv_records *r, const char *name);
/* The same for the records of name's versions other than versions[0..n):
 * a deleted version's figures go with it (each record is ~5 KB: a model
 * whose versions turn over for ever grew by one per version, found by
 * scripts/soak.sh). */
void fxsv_records_keep(fxsv_records *r, const char *name, const int64_t *versions, int n);

/* One answered request: code its status (0: OK), t its timings (queue its
 * own, the rest its batch's), samples its inference_count. */
void fxsv_record_request(fxsv_record *rec, int code, const fxb_timing *t, uint64_t samples);
/* One executed batch (ok ones only count). */
void fxsv_record_batch(fxsv_record *rec, const fxb_timing *t);
void fxsv_record_loaded(fxsv_record *rec);
void fxsv_record_unloaded(fxsv_record *rec);
/* delta: +1 at submit, -1 when answered or refused. */
void fxsv_record_in_flight(fxsv_record *rec, int delta);
void fxsv_record_stats(fxsv_record *rec, fxsv_stats *out);
/* Every record's figures (queue_depth and served left 0 for serving.c). */
int fxsv_records_snapshot(fxsv_records *r, fxsv_model_metrics **out, int *n);

#endif
