/*
 * job_store.c - the jobs module's records in the store: a job is a row of
 * the store's jobs table holding a packed fluxion.v1.Job, with the columns
 * the store filters on and checks deletes against.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/principal.h"
#include "base/status.h"
#include "base/util.h"
#include "training/jobs_internal.h"

/* The jobs table belongs to the store (store/jobs_tab.c); its records are
 * packed fluxion.v1.Job messages. */

typedef struct {
    const Fluxion__V1__Job *rec;
    bool fresh;          /* a new row: its id and tensorboard_dir are set here */
    const char *dir;     /* DIR/jobs, for a new row's tensorboard_dir */
} pack_ctx;

/* fxdb_pack_fn: the record as stored (run by the store under its lock);
 * version > 0: the result version fxdb_job_finish is storing with it. */
static int pack_job(void *vctx, int64_t id, int64_t version, void **blob, size_t *len,
                    char *err, size_t errlen)
{
    pack_ctx *c = vctx;
    Fluxion__V1__Job tmp = *c->rec;
    if (version > 0)
        tmp.result_version = version;
    char idbuf[24], tbdir[4200];
    if (c->fresh) {
        snprintf(idbuf, sizeof idbuf, "%" PRId64, id);
        snprintf(tbdir, sizeof tbdir, "%s/%" PRId64 "/tb", c->dir, id);
        tmp.id = idbuf;
        tmp.tensorboard_dir = tbdir;
    }
    *len = protobuf_c_message_get_packed_size(&tmp.base);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (!buf) {
        fxu_seterr(err, errlen, "jobs: out of memory packing job %" PRId64, id);
        return FXS_RESOURCE_EXHAUSTED;
    }
    protobuf_c_message_pack(&tmp.base, buf);
    *blob = buf;
    return 0;
}

/* What the store filters on and checks deletes against (a queued or
 * running job's model and datasets cannot be deleted). */
static fxdb_job_cols job_cols(const Fluxion__V1__Job *rec, Fluxion__V1__JobState state)
{
    const Fluxion__V1__JobSpec *sp = rec->spec;
    return (fxdb_job_cols){ .state = fxj__state_name(state), .model = sp ? sp->model : "",
                            .dataset = sp ? sp->dataset : "",
                            .validation_dataset = sp ? sp->validation_dataset : "",
                            .base_version = rec->base_version };
}

/* Commits rec (a new row when *id is 0; *id gets it; model_id: the model
 * row it was validated against, see fxdb_job_cols). */
int fxj__save(fxj_jobs *j, const Fluxion__V1__Job *rec, int64_t model_id, int64_t *id, char *err,
              size_t errlen)
{
    pack_ctx c = { .rec = rec, .fresh = *id == 0, .dir = j->dir };
    fxdb_job_cols cols = job_cols(rec, rec->state);
    cols.model_id = model_id;
    return fxdb_job_save(j->st, id, &cols, pack_job, &c, err, errlen);
}

/* A record written before teams names its model and datasets without a
 * team: they are the default team's (the store moved them there). */
static void keys_from_names(Fluxion__V1__Job *r)
{
    char **fields[3] = { NULL, NULL, NULL };
    if (!r->spec)
        return;
    fields[0] = &r->spec->model;
    fields[1] = &r->spec->dataset;
    fields[2] = &r->spec->validation_dataset;
    for (int k = 0; k < 3; k++) {
        char *v = *fields[k];
        if (!v || !v[0] || strchr(v, '/'))
            continue;
        char *key = fxu_strf("%s/%s", FXP_DEFAULT_TEAM, v);
        if (!key)
            continue;
        if (v != protobuf_c_empty_string)
            free(v);
        *fields[k] = key;
    }
}

int fxj__load(fxj_jobs *j, load_ctx *c, char *err, size_t errlen)
{
    fxdb_row *rows = NULL;
    int n = 0;
    int rc = fxdb_job_list(j->st, c->id, NULL, c->state, c->model, &rows, &n, err, errlen);
    if (rc)
        return rc;
    c->recs = calloc(n ? (size_t)n : 1, sizeof *c->recs);
    if (!c->recs) {
        fxdb_rows_free(rows, n);
        fxu_seterr(err, errlen, "jobs: out of memory listing jobs");
        return FXS_RESOURCE_EXHAUSTED;
    }
    for (int i = 0; i < n; i++) {
        Fluxion__V1__Job *r = fluxion__v1__job__unpack(NULL, rows[i].len, rows[i].blob);
        if (!r) {
            fxl_log(FXL_ERROR, "jobs", "stored record does not parse job=%" PRId64, rows[i].id);
            continue;
        }
        keys_from_names(r);
        c->recs[c->n++] = r;
    }
    fxdb_rows_free(rows, n);
    return 0;
}

/* The stored record of one job. */
int fxj__load_one(fxj_jobs *j, int64_t id, Fluxion__V1__Job **out, char *err, size_t errlen)
{
    load_ctx c = { .state = "", .model = "", .id = id };
    int rc = fxj__load(j, &c, err, errlen);
    if (rc)
        return rc;
    if (c.n == 0) {
        free(c.recs);
        fxu_seterr(err, errlen, "job %" PRId64 " not found", id);
        return FXS_NOT_FOUND;
    }
    *out = c.recs[0];
    free(c.recs);
    return 0;
}

/* The job's result and its final record in one transaction (see
 * fxdb_job_finish): *version gets the new version of the job's model. */
int fxj__store_result(fxj_jobs *j, int64_t id, Fluxion__V1__Job *rec, const void *result,
                      size_t len, const char *source, int64_t *version, char *err,
                      size_t errlen)
{
    pack_ctx c = { .rec = rec, .fresh = false, .dir = j->dir };
    fxdb_job_cols cols = job_cols(rec, rec->state);
    fxj_gate g;
    fxj__gate_init(&g, rec);
    /* NaN is no metric to record (SQLite would store NULL anyway) */
    fxdb_gate gate = { .metric_name = g.have && isfinite(g.metric) ? g.metric_name : NULL,
                       .metric = g.metric, .decide = fxj__gate_decide, .ctx = &g };
    return fxdb_job_finish_gated(j->st, id, &cols, result, len, source, &gate, pack_job, &c,
                                 version, err, errlen);
}
