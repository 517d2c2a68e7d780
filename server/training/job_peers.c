/*
 * job_peers.c - the coordinator of a world that spans daemons (ranks.h):
 * rank 0 here, ranks 1.. on the peers its placement names, started with
 * PeerService StartRank all or nothing, then fxt_run as rank 0. Called by
 * job_run.c in place of fxt_run.
 *
 * Every rank gets the same spec, seed, starting weights (rank 0's graph,
 * broadcast again by the trainer), resume checkpoint and data; only rank 0
 * reports and checkpoints. When a member cannot be admitted, or the world
 * does not form, or a collective fails later (a member died, a connection
 * dropped: Gloo's timeout), the members started are stopped and the run
 * ends FXT_LOST with err naming the peer; job_run.c puts the job back to
 * QUEUED, and its next run forms the world again from the last checkpoint.
 */
#define _GNU_SOURCE
#include "training/jobs_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "comm/comm.h"
#include "models/models.h"
#include "training/ranks.h"

/* After a world that could not form, the job waits this long before it
 * goes back to the queue (its slot is held meanwhile; the members are
 * released at once, so two coordinators never wait on each other). */
#define RETRY_BACKOFF_MS 2000
#define START_RANK_TIMEOUT_MS 60000
#define CHUNK_BYTES (1u << 20)

/* The peer of rank r's placement entry "PEER/DEVICE" (index into peers),
 * or -1 for an entry of this daemon; *dev: the DEVICE part. */
static int entry_peer(const fxpr_peers *p, const char *e, const char **dev)
{
    const char *slash = strrchr(e, '/');
    *dev = slash ? slash + 1 : e;
    if (!slash)
        return -1;
    char name[FXPR_NAME_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)(slash - e), e);
    int i = fxpr_find(p, name);
    return i < 0 ? -2 : i;
}

typedef struct {
    int peer;          /* index in the registry */
    const char *device;
    bool out;          /* elastic: left out of this formation (unreachable) */
    char *rank_id;     /* the member's handle once admitted */
} member;

/* Ranks 1.. to the peers the placement names (job_world.c's plan found
 * at least one "PEER/DEVICE" entry, and that every peer is configured). */
static int place(fxpr_peers *p, const Fluxion__V1__JobSpec *s, member *m, char *err,
                 size_t errlen)
{
    for (int r = 1; r < s->world_size; r++) {
        const char *dev = "cpu";
        int i = r < (int)s->n_placement ? entry_peer(p, s->placement[r], &dev) : -1;
        if (i == -2)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "placement[%d] '%s': unknown peer (not in --peers)", r,
                            s->placement[r]);
        if (i < 0)
            return fxu_fail(err, errlen, FXS_UNIMPLEMENTED,
                            "rank %d on this daemon in a world with ranks on peers: not "
                            "supported yet (place every rank but 0 on a peer)", r);
        m[r].peer = i;
        m[r].device = dev;
    }
    return 0;
}

/* The base version's model spec (the graph its weights fit). */
static int model_spec(fxj_jobs *j, job *x, Fluxion__V1__ModelSpec **out, char *err,
                      size_t errlen)
{
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(j->st, x->rec->spec->model, &rec, err, errlen);
    if (rc)
        return rc;
    if (!(rc = fxm_use_version_spec(j->st, &rec, x->rec->base_version, err, errlen)) &&
        !(*out = fluxion__v1__model_spec__unpack(NULL, rec.spec_len, rec.spec)))
        rc = fxu_fail(err, errlen, FXS_DATA_LOSS, "the model's stored spec does not parse");
    fxdb_model_rec_free(&rec);
    return rc;
}

static void stop_members(fxj_jobs *j, member *m, int w, const char *reason)
{
    for (int r = 1; r < w; r++) {
        if (!m[r].rank_id)
            continue;
        Fluxion__V1__StopRankRequest q = FLUXION__V1__STOP_RANK_REQUEST__INIT;
        q.rank_id = m[r].rank_id;
        q.reason = (char *)reason;
        ProtobufCMessage *resp = NULL;
        char err[FXS_ERRLEN];
        if (fxpr_call(j->opts.peers, m[r].peer, "StopRank", &q.base, &resp, 3000, err,
                      sizeof err) == 0)
            protobuf_c_message_free_unpacked(resp, NULL);
        else
            fxl_log(FXL_WARN, "jobs", "could not stop a peer's rank rank_id=%s error=\"%s\"",
                    m[r].rank_id, err);
    }
}

/* Which member failed, for the job's event: the first that does not
 * answer or whose rank ended otherwise than running or done. */
static void blame(fxj_jobs *j, member *m, int w, char *who, size_t wholen)
{
    snprintf(who, wholen, "a peer");
    for (int r = 1; r < w; r++) {
        if (!m[r].rank_id)
            continue;
        Fluxion__V1__RankStatusRequest q = FLUXION__V1__RANK_STATUS_REQUEST__INIT;
        q.rank_id = m[r].rank_id;
        ProtobufCMessage *resp = NULL;
        char err[FXS_ERRLEN];
        const char *name = fxpr_name(j->opts.peers, m[r].peer);
        int rc = fxpr_call(j->opts.peers, m[r].peer, "RankStatus", &q.base, &resp, 2000, err,
                           sizeof err);
        if (rc) {
            snprintf(who, wholen, "peer %s (%s)", name, fxs_status_name(rc));
            return;
        }
        Fluxion__V1__RankStatusResponse *s = (void *)resp;
        if (strcmp(s->state, "RUNNING") && strcmp(s->state, "DONE")) {
            snprintf(who, wholen, "peer %s (rank %d %s: %.120s)", name, r, s->state, s->error);
            protobuf_c_message_free_unpacked(resp, NULL);
            return;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}

/* Elastic worlds (min_world_size > 0): the members that answer Hello now
 * take part; the others are left out of this formation (m[r].out), named
 * in left. Returns the size of the world to form (rank 0 included). */
static int probe(fxj_jobs *j, member *m, int w, char *left, size_t leftlen)
{
    int live = 1;
    size_t used = 0;
    left[0] = 0;
    for (int r = 1; r < w; r++) {
        Fluxion__V1__PeerHelloRequest q = FLUXION__V1__PEER_HELLO_REQUEST__INIT;
        q.node = (char *)fxpr_node(j->opts.peers);
        q.version = (char *)fxpr_version(j->opts.peers);
        ProtobufCMessage *resp = NULL;
        char err[FXS_ERRLEN];
        int rc;
        /* a channel that failed before reconnects within its backoff (1 s) */
        for (int try = 0;; try++) {
            rc = fxpr_call(j->opts.peers, m[r].peer, "Hello", &q.base, &resp, 3000, err,
                           sizeof err);
            if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
            resp = NULL;
            if (rc != FXS_UNAVAILABLE || try == 3)
                break;
            nanosleep(&(struct timespec){ 0, 500 * 1000000L }, NULL);
        }
        m[r].out = rc != 0;
        live += !m[r].out;
        if (m[r].out && used + 1 < leftlen)
            used += (size_t)snprintf(left + used, leftlen - used, "%s%s (%s)", used ? ", " : "",
                                     fxpr_name(j->opts.peers, m[r].peer), fxs_status_name(rc));
    }
    return live;
}

/* Waits up to ms, returning early when the job is cancelled or the daemon
 * stops. */
static void backoff(fxj_jobs *j, job *x, int ms)
{
    for (int t = 0; t < ms && !atomic_load(&x->cancel) && !atomic_load(&j->stopping); t += 100)
        nanosleep(&(struct timespec){ 0, 100 * 1000000L }, NULL);
}

fxt_result fxj__train_peers(fxj_jobs *j, job *x, const fxt_hooks *hooks, fxg_graph *g,
                            const fxds_columns *train, const fxds_columns *val, const void *ckpt,
                            size_t ckpt_len, void **result, size_t *rlen,
                            Fluxion__V1__JobProgress **final, bool *formed, char *err,
                            size_t errlen)
{
    *formed = true;
    const Fluxion__V1__JobSpec *s = x->rec->spec;
    fxpr_peers *p = j->opts.peers;
    int w = s->world_size;
    member *m = calloc((size_t)w, sizeof *m);
    Fluxion__V1__ModelSpec *ms = NULL;
    void *wbuf = NULL, *tbuf = NULL, *vbuf = NULL;
    size_t wlen = 0, tlen = 0, vlen = 0;
    char e2[FXS_ERRLEN - 128] = "", prefix[96] = "", jid[32];
    fxcm_comm *comm = NULL;
    fxt_result res = FXT_FAILED;
    int rc = m ? 0 : fxu_oom(e2, sizeof e2);
    if (!rc)
        rc = place(p, s, m, e2, sizeof e2);
    if (!rc)
        rc = model_spec(j, x, &ms, e2, sizeof e2);
    if (!rc)
        rc = fxg_save_weights(g, &wbuf, &wlen, e2, sizeof e2);
    if (!rc)
        rc = fxj_columns_encode(train, &tbuf, &tlen, e2, sizeof e2);
    if (!rc && val)
        rc = fxj_columns_encode(val, &vbuf, &vlen, e2, sizeof e2);
    if (rc) { /* nothing a retry would change */
        fxu_seterr(err, errlen, "world across daemons: %s", e2);
        goto out;
    }
    snprintf(jid, sizeof jid, "%" PRId64, x->id);
    snprintf(prefix, sizeof prefix, "w/%s/%" PRIu64, jid, fxu_mono_ns());
    fxpr_blob blobs[4] = { { wbuf, wlen }, { ckpt, ckpt_len }, { tbuf, tlen }, { vbuf, vlen } };
    /* elastic: the world that can form now, if it is big enough */
    int live = w, k = 0;
    if (s->min_world_size > 0) {
        char left[512];
        live = probe(j, m, w, left, sizeof left);
        if (live < s->min_world_size) {
            rc = FXS_UNAVAILABLE;
            snprintf(e2, sizeof e2, "%s: %d of the %d ranks could form, min_world_size %d",
                     left, live, w, s->min_world_size);
        } else if (live < w) {
            char msg[700];
            snprintf(msg, sizeof msg, "elastic: a world of %d ranks (of %d; min_world_size %d) "
                     "without %s", live, w, s->min_world_size, left);
            pthread_mutex_lock(&j->mu);
            fxj__announce(j, x, FLUXION__V1__JOB_EVENT__KIND__STATE, msg);
            pthread_mutex_unlock(&j->mu);
            fxl_log(FXL_WARN, "jobs", "job=%" PRId64 " %s", x->id, msg);
        }
    }
    /* all or nothing: any member that cannot take its rank now releases
     * the others */
    for (int r = 1; r < w && !rc; r++) {
        if (m[r].out)
            continue;
        Fluxion__V1__RankAssignment a = FLUXION__V1__RANK_ASSIGNMENT__INIT;
        a.job_id = jid;
        a.attempt = x->rec->preemptions;
        a.rank = ++k;
        a.world = live;
        a.backend = s->comm_backend && s->comm_backend[0] ? s->comm_backend : "gloo";
        a.bucket_bytes = s->bucket_bytes;
        a.comm_prefix = prefix;
        a.coordinator = (char *)fxpr_node(p);
        a.device = (char *)m[r].device;
        a.seed = s->seed;
        a.timeout_ms = FXJ_PEER_COMM_TIMEOUT_MS;
        Fluxion__V1__StartRankChunk first = FLUXION__V1__START_RANK_CHUNK__INIT;
        first.assignment = &a;
        first.spec = (Fluxion__V1__JobSpec *)s;
        first.model = ms;
        first.weights_len = wlen;
        first.resume_len = ckpt_len;
        first.train_len = tlen;
        first.val_len = vlen;
        rc = fxpr_start_rank(p, m[r].peer, &first.base, blobs, CHUNK_BYTES,
                             START_RANK_TIMEOUT_MS, &m[r].rank_id, e2, sizeof e2);
    }
    if (!rc && live > 1) {
        const char *host = fxpr_comm_host(p);
        /* the backend the members were told (NCCL across daemons: its
         * unique id goes through the same store; untested without GPUs) */
        fxcm_backend be = s->comm_backend && s->comm_backend[0]
                              ? fxcm_backend_parse(s->comm_backend) : FXCM_GLOO;
        fxcm_opts o = { .backend = be ? be : FXCM_GLOO, .rank = 0, .world = live,
                        .prefix = prefix, .store = fxpr_kv_store(p),
                        .timeout_ms = FXJ_PEER_COMM_TIMEOUT_MS,
                        .bind_host = host[0] ? host : NULL,
                        .cuda_device = hooks->device.type == FX_DEV_CUDA ? hooks->device.index
                                                                          : 0 };
        char ce[384];
        if ((rc = fxcm_open(&o, &comm, ce, sizeof ce))) {
            char who[256];
            blame(j, m, w, who, sizeof who);
            snprintf(e2, sizeof e2, "%s: the world did not form: %s", who, ce);
        }
    }
    if (rc) {
        stop_members(j, m, w, "the world did not form");
        fxu_seterr(err, errlen, "waiting for %s", e2);
        fxl_log(FXL_WARN, "jobs", "world across daemons not formed job=%" PRId64 " error=\"%s\"",
                x->id, err);
        backoff(j, x, RETRY_BACKOFF_MS);
        *formed = false;
        res = FXT_LOST;
        goto out;
    }
    fxl_log(FXL_INFO, "jobs", "world across daemons formed job=%" PRId64 " world=%d prefix=%s",
            x->id, live, prefix);
    fxt_dist dist = { .rank = 0, .world = live, .comm = comm,
                      .bucket_bytes = (size_t)s->bucket_bytes };
    fxt_hooks h = *hooks;
    h.dist = live > 1 ? &dist : NULL;
    /* a world shrunk to rank 0 alone: one rank of the same per-rank batch */
    Fluxion__V1__JobSpec one = *s;
    one.world_size = 1;
    one.n_placement = 0;
    res = fxt_run(live > 1 ? s : &one, g, train, val, ckpt, ckpt_len, &h, result, rlen, final,
                  err, errlen);
    if (res == FXT_LOST) {
        char who[512], tmp[FXS_ERRLEN];
        blame(j, m, w, who, sizeof who);
        snprintf(tmp, sizeof tmp, "%s", err);
        fxu_seterr(err, errlen, "lost %s: %s", who, tmp);
    }
    if (res != FXT_DONE)
        stop_members(j, m, w, res == FXT_LOST ? "the world lost a rank" : "the job stopped");
out:
    if (comm)
        fxcm_free(comm);
    if (prefix[0])
        fxpr_kv_drop(p, prefix);
    for (int r = 1; m && r < w; r++)
        free(m[r].rank_id);
    free(m);
    if (ms)
        fluxion__v1__model_spec__free_unpacked(ms, NULL);
    free(wbuf);
    free(tbuf);
    free(vbuf);
    return res;
}
