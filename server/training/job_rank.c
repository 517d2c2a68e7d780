/*
 * job_rank.c - the ranks this daemon runs for other daemons' jobs, and the
 * columns codec they travel in (ranks.h).
 */
#define _GNU_SOURCE
#include "training/ranks.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "comm/comm.h"
#include "models/graph.h"
#include "training/jobs.h"
#include "training/train.h"

#define KEEP_FINISHED 64 /* finished ranks kept for RankStatus */

typedef struct rank {
    struct rank *next;
    fxj_ranks *rs;
    char id[96];
    Fluxion__V1__RankAssignment *a;
    Fluxion__V1__JobSpec *spec;
    fxg_graph *g;
    fxj_columns *train, *val;
    void *resume;
    size_t resume_len;
    fxpr_remote *remote;
    fxcm_comm *comm;          /* under rs->mu while the thread may free it */
    int64_t ticket;           /* its slot in the jobs' scheduler (0: none) */
    atomic_bool stop;
    atomic_llong step;
    bool running;             /* under rs->mu */
    char state[16];           /* under rs->mu */
    char why[FXS_ERRLEN];
    pthread_t th;
} rank;

struct fxj_ranks {
    pthread_mutex_t mu;
    fxpr_peers *peers;
    fxj_jobs *jobs;           /* admits the ranks (fxj_jobs_admit_rank); NULL: none */
    int max_ranks;
    uint64_t max_params;
    uint64_t next_id;
    int starting;             /* admitted, being built (counted as running) */
    rank *head;
};

/* ------------------------------------------------------------ columns */

struct fxj_columns {
    fx_params ps;
    fxds_column *cols;
    fxds_columns c;
};

int fxj_columns_encode(const fxds_columns *c, void **out, size_t *len, char *err, size_t errlen)
{
    fx_params ps;
    fx_params_init(&ps);
    int rc = 0;
    for (int i = 0; !rc && c && i < c->n; i++) {
        const fxds_column *col = &c->cols[i];
        int64_t shape[FX_MAX_DIMS];
        if (col->sample_ndim + 1 > FX_MAX_DIMS) {
            rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "column %s: too many dimensions",
                          col->name);
            break;
        }
        shape[0] = c->num_samples;
        memcpy(shape + 1, col->sample_shape, (size_t)col->sample_ndim * sizeof shape[0]);
        fx_tensor *t = fx_tensor_create(fx_cpu(), col->dtype, col->sample_ndim + 1, shape);
        if (!t) {
            rc = fxu_oom(err, errlen);
            break;
        }
        size_t nbytes = (size_t)fx_tensor_numel(t) * fx_dtype_size(col->dtype);
        if (fx_tensor_copy_from_host(t, col->data, nbytes) != FX_OK ||
            fx_params_add(&ps, col->name, t) != FX_OK) {
            fx_tensor_free(t);
            rc = fxu_fail(err, errlen, FXS_INTERNAL, "column %s: cannot be encoded", col->name);
        }
    }
    uint8_t *buf = NULL;
    if (!rc && fx_safetensors_encode(&ps, 0, NULL, NULL, &buf, len, err, errlen) != FX_OK)
        rc = FXS_INTERNAL;
    fx_params_free_tensors(&ps);
    *out = buf;
    return rc;
}

int fxj_columns_decode(const void *buf, size_t len, fxj_columns **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    fxj_columns *c = calloc(1, sizeof *c);
    if (!c)
        return fxu_oom(err, errlen);
    fx_params_init(&c->ps);
    char e2[512];
    if (fx_safetensors_decode(buf, len, &c->ps, e2, sizeof e2) != FX_OK) {
        fxj_columns_free(c);
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "dataset columns: %s", e2);
    }
    int n = c->ps.count;
    if (n > 0 && !(c->cols = calloc((size_t)n, sizeof *c->cols))) {
        fxj_columns_free(c);
        return fxu_oom(err, errlen);
    }
    for (int i = 0; i < n; i++) {
        const fx_tensor *t = c->ps.items[i].tensor;
        if (t->ndim < 1 || (i > 0 && t->shape[0] != c->c.num_samples)) {
            fxj_columns_free(c);
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "dataset columns: column %s has no sample dimension or another "
                            "sample count", c->ps.items[i].name);
        }
        c->c.num_samples = t->shape[0];
        fxds_column *col = &c->cols[i];
        col->name = c->ps.items[i].name;
        col->dtype = t->dtype;
        col->sample_ndim = t->ndim - 1;
        memcpy(col->sample_shape, t->shape + 1, (size_t)(t->ndim - 1) * sizeof t->shape[0]);
        col->data = (const char *)t->storage->ptr + t->offset * (int64_t)fx_dtype_size(t->dtype);
    }
    c->c.n = n;
    c->c.cols = c->cols;
    *out = c;
    return 0;
}

const fxds_columns *fxj_columns_get(const fxj_columns *c) { return c ? &c->c : NULL; }

void fxj_columns_free(fxj_columns *c)
{
    if (!c)
        return;
    fx_params_free_tensors(&c->ps);
    free(c->cols);
    free(c);
}

/* -------------------------------------------------------------- ranks */

int fxj_ranks_new(fxpr_peers *peers, int max_ranks, uint64_t max_params, fxj_ranks **out,
                  char *err, size_t errlen)
{
    fxj_ranks *rs = calloc(1, sizeof *rs);
    if (!rs)
        return fxu_oom(err, errlen);
    pthread_mutex_init(&rs->mu, NULL);
    rs->peers = peers;
    rs->max_ranks = max_ranks > 0 ? max_ranks : 1;
    rs->max_params = max_params;
    *out = rs;
    return 0;
}

void fxj_ranks_set_jobs(fxj_ranks *rs, struct fxj_jobs *j)
{
    if (rs)
        rs->jobs = j;
}

static void rank_free(rank *r)
{
    if (r->a)
        fluxion__v1__rank_assignment__free_unpacked(r->a, NULL);
    if (r->spec)
        fluxion__v1__job_spec__free_unpacked(r->spec, NULL);
    fxg_free(r->g);
    fxj_columns_free(r->train);
    fxj_columns_free(r->val);
    free(r->resume);
    fxpr_remote_free(r->remote);
    free(r);
}

static bool stop_hook(void *data, int64_t step)
{
    rank *r = data;
    atomic_store(&r->step, step);
    return atomic_load(&r->stop);
}

static void set_end(rank *r, const char *state, const char *why)
{
    pthread_mutex_lock(&r->rs->mu);
    snprintf(r->state, sizeof r->state, "%s", state);
    snprintf(r->why, sizeof r->why, "%s", why ? why : "");
    r->running = false;
    int64_t ticket = r->ticket;
    r->ticket = 0;
    pthread_mutex_unlock(&r->rs->mu);
    fxj_jobs_release_rank(r->rs->jobs, ticket); /* its slot is the scheduler's again */
    fxl_log(strcmp(state, "DONE") && strcmp(state, "STOPPED") ? FXL_WARN : FXL_INFO, "ranks",
            "peer rank ended rank_id=%s job=%s rank=%d state=%s error=\"%s\"", r->id,
            r->a->job_id, r->a->rank, state, why ? why : "");
}

static void *rank_main(void *arg)
{
    rank *r = arg;
    fxj_ranks *rs = r->rs;
    char err[FXS_ERRLEN] = "";
    fxcm_backend b = r->a->backend[0] ? fxcm_backend_parse(r->a->backend) : FXCM_GLOO;
    const char *host = fxpr_comm_host(rs->peers);
    fxcm_opts o = { .backend = b ? b : FXCM_GLOO, .rank = r->a->rank, .world = r->a->world,
                    .prefix = r->a->comm_prefix, .store = fxpr_remote_store(r->remote),
                    .timeout_ms = r->a->timeout_ms > 0 ? r->a->timeout_ms
                                                       : FXJ_PEER_COMM_TIMEOUT_MS,
                    .bind_host = host[0] ? host : NULL };
    fx_device dev = fx_cpu();
    if (r->a->device[0] && fx_device_parse(r->a->device, &dev) && dev.type == FX_DEV_CUDA)
        o.cuda_device = dev.index;
    fxcm_comm *comm = NULL;
    int rc = fxcm_open(&o, &comm, err, sizeof err);
    if (rc) {
        set_end(r, "LOST", err);
        return NULL;
    }
    pthread_mutex_lock(&rs->mu);
    r->comm = comm;
    if (atomic_load(&r->stop))
        fxcm_abort(comm);
    pthread_mutex_unlock(&rs->mu);
    fxt_dist dist = { .rank = r->a->rank, .world = r->a->world, .comm = comm,
                      .bucket_bytes = (size_t)r->a->bucket_bytes };
    fxt_hooks h = { .should_stop = stop_hook, .data = r, .dist = &dist };
    if (r->a->device[0] && !fx_device_parse(r->a->device, &h.device))
        h.device = fx_cpu();
    void *result = NULL;
    size_t rlen = 0;
    fxt_result res = fxt_run(r->spec, r->g, fxj_columns_get(r->train),
                             r->val ? fxj_columns_get(r->val) : NULL, r->resume, r->resume_len,
                             &h, &result, &rlen, NULL, err, sizeof err);
    free(result);
    pthread_mutex_lock(&rs->mu);
    r->comm = NULL;
    pthread_mutex_unlock(&rs->mu);
    fxcm_free(comm);
    set_end(r, res == FXT_DONE ? "DONE" : res == FXT_STOPPED ? "STOPPED"
               : res == FXT_LOST ? "LOST" : "FAILED", err);
    return NULL;
}

/* A copy of a message (the request is freed when the call ends). */
static ProtobufCMessage *dup_msg(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
    free(buf);
    return c;
}

/* Forgets finished ranks past KEEP_FINISHED (their threads joined). */
static void prune(fxj_ranks *rs)
{
    int kept = 0;
    for (rank **pp = &rs->head; *pp;) {
        rank *r = *pp;
        if (!r->running && ++kept > KEEP_FINISHED) {
            *pp = r->next;
            pthread_join(r->th, NULL);
            rank_free(r);
        } else {
            pp = &r->next;
        }
    }
}

static int build(fxj_ranks *rs, rank *r, const Fluxion__V1__StartRankChunk *first,
                 const void *weights, size_t weights_len, const void *resume, size_t resume_len,
                 const void *train, size_t train_len, const void *val, size_t val_len,
                 char *err, size_t errlen)
{
    if (!(r->a = (void *)dup_msg(&first->assignment->base)) ||
        !(r->spec = (void *)dup_msg(&first->spec->base)))
        return fxu_oom(err, errlen);
    fx_device dev = fx_cpu();
    if (r->a->device[0] && (!fx_device_parse(r->a->device, &dev) || !fx_device_available(dev)))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "device '%.32s': not a device of this daemon", r->a->device);
    fxg_options go = { .seed = r->a->seed, .max_params = rs->max_params };
    char e2[FXS_ERRLEN - 64];
    int rc = fxg_build(first->model, &go, &r->g, e2, sizeof e2);
    if (rc)
        return fxu_fail(err, errlen, rc, "model spec: %s", e2);
    if (weights_len && (rc = fxg_load_weights(r->g, weights, weights_len, e2, sizeof e2)))
        return fxu_fail(err, errlen, rc, "weights: %s", e2);
    if (!train_len)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "no training data");
    if ((rc = fxj_columns_decode(train, train_len, &r->train, err, errlen)))
        return rc;
    if (val_len && (rc = fxj_columns_decode(val, val_len, &r->val, err, errlen)))
        return rc;
    if (resume_len) {
        if (!(r->resume = malloc(resume_len)))
            return fxu_oom(err, errlen);
        memcpy(r->resume, resume, resume_len);
        r->resume_len = resume_len;
    }
    /* the spec as the coordinator checked it, against this graph and data */
    if ((rc = fxt_validate(r->spec, r->g, fxj_columns_get(r->train), fxj_columns_get(r->val),
                           e2, sizeof e2)))
        return fxu_fail(err, errlen, rc, "job spec: %s", e2);
    return fxpr_remote_open(rs->peers, r->a->coordinator, &r->stop, &r->remote, err, errlen);
}

int fxj_rank_start(fxj_ranks *rs, const Fluxion__V1__StartRankChunk *first, const void *weights,
                   size_t weights_len, const void *resume, size_t resume_len, const void *train,
                   size_t train_len, const void *val, size_t val_len, char **rank_id, char *err,
                   size_t errlen)
{
    *rank_id = NULL;
    /* admission first: nothing is built for a rank that cannot run now */
    pthread_mutex_lock(&rs->mu);
    int running = rs->starting;
    for (rank *r = rs->head; r; r = r->next)
        running += r->running;
    uint64_t id = ++rs->next_id;
    if (running < rs->max_ranks)
        rs->starting++; /* the slot is this rank's while it is built */
    pthread_mutex_unlock(&rs->mu);
    if (running >= rs->max_ranks)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED,
                        "this daemon runs %d ranks for peers already (at most %d: --cpu-slots)",
                        running, rs->max_ranks);
    /* then the scheduler's: a slot on the asked device now, or a refusal */
    int64_t ticket = 0;
    int rc = rs->jobs ? fxj_jobs_admit_rank(rs->jobs, first->assignment->device, &ticket, err,
                                            errlen)
                      : 0;
    if (rc) {
        pthread_mutex_lock(&rs->mu);
        rs->starting--;
        pthread_mutex_unlock(&rs->mu);
        fxl_log(FXL_INFO, "ranks", "peer rank refused job=%s rank=%d error=\"%s\"",
                first->assignment->job_id, first->assignment->rank, err);
        return rc;
    }
    rank *r = calloc(1, sizeof *r);
    rc = r ? 0 : fxu_oom(err, errlen);
    if (r) {
        r->ticket = ticket;
        r->rs = rs;
        snprintf(r->id, sizeof r->id, "rank-%" PRIu64 "-%.40s-%d", id,
                 first->assignment->job_id, first->assignment->rank);
        rc = build(rs, r, first, weights, weights_len, resume, resume_len, train, train_len,
                   val, val_len, err, errlen);
    }
    pthread_mutex_lock(&rs->mu);
    rs->starting--;
    if (rc) {
        pthread_mutex_unlock(&rs->mu);
        if (r)
            rank_free(r);
        fxj_jobs_release_rank(rs->jobs, ticket);
        return rc;
    }
    snprintf(r->state, sizeof r->state, "RUNNING");
    r->running = true;
    if (pthread_create(&r->th, NULL, rank_main, r) != 0) {
        pthread_mutex_unlock(&rs->mu);
        rank_free(r);
        fxj_jobs_release_rank(rs->jobs, ticket);
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "cannot start a thread");
    }
    r->next = rs->head;
    rs->head = r;
    prune(rs);
    pthread_mutex_unlock(&rs->mu);
    fxl_log(FXL_INFO, "ranks", "peer rank started rank_id=%s job=%s rank=%d world=%d "
            "coordinator=%s", r->id, r->a->job_id, r->a->rank, r->a->world, r->a->coordinator);
    if (!(*rank_id = strdup(r->id)))
        return fxu_oom(err, errlen); /* it runs; the coordinator's world times out */
    return 0;
}

static rank *find(fxj_ranks *rs, const char *id)
{
    for (rank *r = rs->head; r; r = r->next)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

int fxj_rank_stop(fxj_ranks *rs, const char *rank_id, const char *reason, char *err,
                  size_t errlen)
{
    pthread_mutex_lock(&rs->mu);
    rank *r = find(rs, rank_id);
    if (r) {
        atomic_store(&r->stop, true);
        if (r->comm)
            fxcm_abort(r->comm);
    }
    pthread_mutex_unlock(&rs->mu);
    if (!r)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "no rank '%.64s' on this daemon", rank_id);
    fxl_log(FXL_INFO, "ranks", "peer rank stopped by its coordinator rank_id=%s reason=\"%.200s\"",
            rank_id, reason ? reason : "");
    return 0;
}

int fxj_rank_status(fxj_ranks *rs, const char *rank_id, char *state, size_t statelen, char *why,
                    size_t whylen, int64_t *step, char *err, size_t errlen)
{
    pthread_mutex_lock(&rs->mu);
    rank *r = find(rs, rank_id);
    if (r) {
        snprintf(state, statelen, "%s", r->state);
        snprintf(why, whylen, "%s", r->why);
        *step = atomic_load(&r->step);
    }
    pthread_mutex_unlock(&rs->mu);
    if (!r)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "no rank '%.64s' on this daemon", rank_id);
    return 0;
}

int fxj_ranks_running(fxj_ranks *rs)
{
    int n = 0;
    pthread_mutex_lock(&rs->mu);
    for (rank *r = rs->head; r; r = r->next)
        n += r->running;
    pthread_mutex_unlock(&rs->mu);
    return n;
}

void fxj_ranks_free(fxj_ranks *rs)
{
    if (!rs)
        return;
    pthread_mutex_lock(&rs->mu);
    for (rank *r = rs->head; r; r = r->next) {
        atomic_store(&r->stop, true);
        if (r->comm)
            fxcm_abort(r->comm);
    }
    rank *head = rs->head;
    rs->head = NULL;
    pthread_mutex_unlock(&rs->mu);
    for (rank *r = head, *n; r; r = n) {
        n = r->next;
        pthread_join(r->th, NULL);
        rank_free(r);
    }
    pthread_mutex_destroy(&rs->mu);
    free(rs);
}
