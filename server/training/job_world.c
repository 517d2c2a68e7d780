/*
 * job_world.c - a data-parallel job's world (JobSpec.world_size > 1; see
 * docs/distributed.md, "Ranks on one daemon"): where its ranks run, and
 * running them.
 *
 * Placement (fxj__world_place): rank i runs where placement[i] says:
 * "DEVICE" is this daemon ("cpu", "cuda:N", "gpu"), "PEER/DEVICE" a daemon
 * named in fluxiond --peers. With no placement every rank is on this
 * daemon, on spec.device. The local ranks of one job share one device and
 * are admitted by the scheduler all-or-nothing as one job with that many
 * slots (job_sched.c), so a world of 2 CPU ranks needs 2 CPU slots
 * (fluxiond --workers 2).
 *
 * Running (fxj__world_run, on the job's thread): rank 0 is the job's own
 * fxt_run with its hooks (progress, checkpoints, TensorBoard: rank 0
 * only); every other local rank is a thread of its own with its own graph
 * (the base version loaded again; rank 0's weights are broadcast at the
 * start anyway) and quiet hooks. The ranks form a Gloo world (NCCL for
 * CUDA ranks) through one fxcm_memstore per world, keys under the prefix
 * "job-ID/ATTEMPT". When a rank fails or is lost, every other rank's comm
 * is aborted so that they stop at once instead of waiting for the
 * timeout; the world's outcome is rank 0's when every rank agrees, else
 * FXT_FAILED with the first failing rank's error, else FXT_LOST (a rank
 * lost: job_run.c puts the job back in the queue, to resume from its last
 * checkpoint).
 *
 * Remote ranks (the seam for server/peers/, branch h/peers): placement
 * entries "PEER/DEVICE" are refused today (FAILED_PRECONDITION "no peer
 * named X"). To add them:
 *   - fxj__world_find_peer: answer whether a peer of that name exists (the
 *     --peers list) instead of false;
 *   - fxj__world_place: counts them in fxj__world_plan.nremote (done here)
 *     and records each rank's peer name in plan.peer[rank];
 *   - fxj__world_start_remote: before the local ranks form the world, ask
 *     each remote rank's peer to admit and start its rank (rank, world,
 *     prefix, the job's spec, seed and checkpoint), serving this world's
 *     memstore to them as the rendezvous (fxcm_store over the peer
 *     service); today it has nothing to start;
 *   - fxj__world_abort_remote / fxj__world_join_remote: tell them to stop,
 *     collect their outcome (a remote rank's FAILED is the job's, a dead
 *     peer is FXT_LOST through the collectives' timeouts).
 * The local part (threads, memstore, outcome) stays as it is.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "comm/comm.h"
#include "models/models.h"
#include "peers/peers.h"
#include "training/jobs_internal.h"

#define WORLD_TIMEOUT_MS 60000

/* ------------------------------------------------------------- placement */

/* Whether a peer of that name is configured (fluxiond --peers). */
static bool fxj__world_find_peer(const fxj_jobs *j, const char *name)
{
    return j->opts.peers && fxpr_find(j->opts.peers, name) >= 0;
}

int fxj__world_place(const fxj_jobs *j, const Fluxion__V1__JobSpec *spec, fxj__world_plan *out,
                     char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->world = spec->world_size > 1 ? spec->world_size : 1;
    const char *first = NULL;
    for (int i = 0; i < out->world; i++) {
        char field[32];
        const char *d = spec->n_placement ? spec->placement[i] : spec->device;
        if (spec->n_placement)
            snprintf(field, sizeof field, "placement[%d]", i);
        else
            snprintf(field, sizeof field, "spec.device");
        const char *slash = spec->n_placement ? strchr(d, '/') : NULL;
        if (slash) {
            char peer[128];
            snprintf(peer, sizeof peer, "%.*s", (int)(slash - d), d);
            if (!fxj__world_find_peer(j, peer)) {
                fxu_seterr(err, errlen, "%s: no peer named %s (fluxiond --peers)", field, peer);
                return FXS_FAILED_PRECONDITION;
            }
            out->nremote++;
            continue;
        }
        fx_device dev;
        int rc = fxsv_devices_resolve(j->opts.devices, d, field, &dev, err, errlen);
        if (rc)
            return rc;
        if (out->nlocal && (dev.type != out->device.type || dev.index != out->device.index ||
                            strcasecmp(d ? d : "", first ? first : "") != 0)) {
            char a[32], b[32];
            fxu_seterr(err, errlen, "%s: '%s', but rank %d is on '%s': the ranks of one job on "
                       "this daemon share one device",
                       field, fx_device_str(dev, a, sizeof a), out->first_local,
                       fx_device_str(out->device, b, sizeof b));
            return FXS_FAILED_PRECONDITION;
        }
        if (!out->nlocal) {
            out->device = dev;
            out->first_local = i;
            first = d;
            snprintf(out->request, sizeof out->request, "%s", d ? d : "");
        }
        out->nlocal++;
    }
    /* the scheduler admits the local ranks as one job of nlocal slots on
     * their device: refuse what could never be admitted */
    int workers = j->opts.workers > 0 ? j->opts.workers : 1;
    if (out->nlocal > 1 && out->device.type == FX_DEV_CPU && out->nlocal > workers) {
        fxu_seterr(err, errlen, "world_size: %d ranks on cpu need %d CPU training slots; this "
                   "fluxiond has %d (fluxiond --train-workers)", out->nlocal, out->nlocal, workers);
        return FXS_FAILED_PRECONDITION;
    }
    if (out->nlocal > 1 && out->device.type == FX_DEV_CUDA) {
        char b[32];
        fxu_seterr(err, errlen, "world_size: %d ranks on %s: a GPU runs one rank (NCCL needs a "
                   "device per rank); place the ranks on several daemons' GPUs", out->nlocal,
                   fx_device_str(out->device, b, sizeof b));
        return FXS_FAILED_PRECONDITION;
    }
    if (out->world > 1 && out->first_local != 0) {
        fxu_seterr(err, errlen, "placement[0]: rank 0 runs on the daemon the job is submitted to "
                   "(a device, not a peer)");
        return FXS_INVALID_ARGUMENT;
    }
    return 0;
}

/* ----------------------------------------------------------------- ranks */

typedef struct world world;

typedef struct {
    world *w;
    int rank;
    fxg_graph *g;       /* ranks > 0: their own */
    fxcm_comm *comm;
    fxt_result res;
    char err[FXS_ERRLEN];
    void *result;
    size_t result_len;
    pthread_t thread;
    bool started;
} rank_t;

struct world {
    const fxj__world_args *a;
    fxcm_memstore *mem;
    fxcm_store store;
    char prefix[64];
    fxcm_backend backend;
    pthread_mutex_t mu; /* comm pointers, first_bad */
    int first_bad;      /* the first rank that failed or was lost (-1: none) */
    rank_t *r;
    int n;
};

/* Stops every rank's collectives (their pending and later operations fail
 * at once), after a rank failed. Comms are freed only after every rank
 * ended, so they are valid here. */
static void abort_all(world *w, int bad)
{
    pthread_mutex_lock(&w->mu);
    if (w->first_bad < 0)
        w->first_bad = bad;
    for (int i = 0; i < w->n; i++)
        if (w->r[i].comm)
            fxcm_abort(w->r[i].comm);
    pthread_mutex_unlock(&w->mu);
}

/* Ranks > 0 stop when the job is cancelled or the daemon drains; rank 0's
 * hooks add preemption. A stop on any rank stops them all after the same
 * step (train_dist.c). */
static bool rank_stop(void *data, int64_t step)
{
    (void)step;
    rank_t *k = data;
    return atomic_load(&k->w->a->x->cancel) || atomic_load(&k->w->a->j->stopping);
}

static void run_rank(rank_t *k)
{
    world *w = k->w;
    const fxj__world_args *a = w->a;
    fxcm_opts o = {.backend = w->backend, .rank = k->rank, .world = w->n, .prefix = w->prefix,
                   .store = &w->store, .timeout_ms = WORLD_TIMEOUT_MS,
                   .cuda_device = a->hooks->device.type == FX_DEV_CUDA ? a->hooks->device.index
                                                                       : 0};
    fxcm_comm *c = NULL;
    k->res = FXT_LOST;
    int rc = fxcm_open(&o, &c, k->err, sizeof k->err);
    pthread_mutex_lock(&w->mu);
    k->comm = c;
    bool gone = w->first_bad >= 0;
    pthread_mutex_unlock(&w->mu);
    if (rc || gone) {
        if (!rc)
            snprintf(k->err, sizeof k->err, "another rank failed first");
        abort_all(w, k->rank);
        return;
    }
    fxt_dist d = {.rank = k->rank, .world = w->n, .comm = c,
                  .bucket_bytes = (size_t)a->x->rec->spec->bucket_bytes};
    fxt_hooks h;
    if (k->rank == 0) {
        h = *a->hooks;
    } else {
        h = (fxt_hooks){.should_stop = rank_stop, .data = k, .device = a->hooks->device,
                        .memory_limit_bytes = a->hooks->memory_limit_bytes,
                        .checkpoint_every_steps = a->hooks->checkpoint_every_steps};
    }
    h.dist = &d;
    k->res = fxt_run(a->x->rec->spec, k->rank ? k->g : a->g0, a->train, a->val, a->ckpt,
                     a->ckpt_len, &h, &k->result, &k->result_len,
                     k->rank == 0 ? a->final : NULL, k->err, sizeof k->err);
    if (k->res == FXT_FAILED || k->res == FXT_LOST)
        abort_all(w, k->rank);
}

static void *rank_thread(void *arg)
{
    run_rank(arg);
    return NULL;
}

/* Remote ranks: nothing to start until the peers module hooks in (see the
 * top of this file). */
static int fxj__world_start_remote(world *w, char *err, size_t errlen)
{
    (void)w, (void)err, (void)errlen;
    return 0;
}

/* A graph of the job's model for rank k (its weights are replaced by rank
 * 0's broadcast). */
static int load_graph(world *w, rank_t *k)
{
    const fxj__world_args *a = w->a;
    const Fluxion__V1__JobSpec *spec = a->x->rec->spec;
    fxm_load_opts lo = {.max_params = a->j->opts.max_params, .fresh = spec->from_scratch,
                        .seed = spec->seed};
    fxm_loaded l;
    char e[FXS_ERRLEN - 100];
    if (fxm_load_version(a->j->st, spec->model, a->x->rec->base_version, &lo, &l, e, sizeof e)) {
        snprintf(k->err, sizeof k->err, "rank %d: base version %" PRId64 ": %s", k->rank,
                 a->x->rec->base_version, e);
        return -1;
    }
    k->g = l.g;
    return 0;
}

fxt_result fxj__world_run(const fxj__world_args *a, void **result, size_t *result_len,
                          char *err, size_t errlen)
{
    static atomic_long attempts;
    const Fluxion__V1__JobSpec *spec = a->x->rec->spec;
    world w = {.a = a, .first_bad = -1, .n = a->plan->world};
    *result = NULL;
    *result_len = 0;
    if (a->plan->nremote) { /* refused by fxj__world_place until peers exist */
        fxu_seterr(err, errlen, "remote ranks are not supported by this fluxiond");
        return FXT_FAILED;
    }
    const char *be = spec->comm_backend && *spec->comm_backend ? spec->comm_backend : NULL;
    w.backend = be ? fxcm_backend_parse(be)
                   : a->hooks->device.type == FX_DEV_CUDA ? FXCM_NCCL : FXCM_GLOO;
    if (!fxcm_available(w.backend)) {
        fxu_seterr(err, errlen, "comm_backend: %s is not built into this fluxiond",
                   fxcm_backend_name(w.backend));
        return FXT_FAILED;
    }
    snprintf(w.prefix, sizeof w.prefix, "job-%" PRId64 "/%ld", a->x->id,
             atomic_fetch_add(&attempts, 1) + 1);
    w.mem = fxcm_memstore_new();
    w.r = calloc((size_t)w.n, sizeof *w.r);
    if (!w.mem || !w.r) {
        fxcm_memstore_free(w.mem);
        free(w.r);
        fxu_seterr(err, errlen, "out of memory forming the world");
        return FXT_FAILED;
    }
    w.store = fxcm_memstore_store(w.mem);
    pthread_mutex_init(&w.mu, NULL);
    int rc = 0;
    for (int i = 0; i < w.n; i++) {
        w.r[i] = (rank_t){.w = &w, .rank = i, .res = FXT_FAILED};
        if (i && !rc && load_graph(&w, &w.r[i])) {
            snprintf(err, errlen, "%s", w.r[i].err);
            rc = -1;
        }
    }
    if (!rc && fxj__world_start_remote(&w, err, errlen))
        rc = -1;
    fxl_log(FXL_INFO, "jobs", "world forming job=%" PRId64 " world=%d backend=%s prefix=%s",
            a->x->id, w.n, fxcm_backend_name(w.backend), w.prefix);
    for (int i = 1; i < w.n && !rc; i++) {
        if (pthread_create(&w.r[i].thread, NULL, rank_thread, &w.r[i]) != 0) {
            fxu_seterr(err, errlen, "cannot start a thread for rank %d", i);
            abort_all(&w, i);
            rc = -1;
            break;
        }
        w.r[i].started = true;
    }
    if (!rc)
        run_rank(&w.r[0]);
    for (int i = 1; i < w.n; i++)
        if (w.r[i].started)
            pthread_join(w.r[i].thread, NULL);
    fxt_result res = FXT_FAILED;
    if (!rc) {
        /* rank 0's outcome when every rank agrees; else the first failure */
        int bad = w.first_bad;
        res = w.r[0].res;
        for (int i = 0; i < w.n; i++)
            if (w.r[i].res != res)
                res = FXT_LOST;
        if (bad >= 0 && w.r[bad].res == FXT_FAILED)
            res = FXT_FAILED;
        if (res == FXT_DONE) {
            *result = w.r[0].result;
            *result_len = w.r[0].result_len;
            w.r[0].result = NULL;
        } else if (res == FXT_FAILED || res == FXT_LOST) {
            int k = bad >= 0 ? bad : 0;
            fxu_seterr(err, errlen, "rank %d of %d: %s", k, w.n, w.r[k].err);
        } else {
            snprintf(err, errlen, "%s", w.r[0].err);
        }
    }
    for (int i = 0; i < w.n; i++) {
        fxcm_free(w.r[i].comm);
        free(w.r[i].result);
        fxg_free(w.r[i].g);
    }
    fxcm_memstore_free(w.mem);
    pthread_mutex_destroy(&w.mu);
    free(w.r);
    fxl_log(FXL_INFO, "jobs", "world ended job=%" PRId64 " world=%d result=%d", a->x->id,
            w.n, (int)res);
    return res;
}
