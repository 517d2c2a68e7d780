/*
 * svc_peer.c - fluxion.v1.PeerService: what another fluxiond asks of this
 * one (proto/fluxion/v1/peer.proto, docs/distributed.md "Peers"). Only the
 * peer principal reaches these handlers (access FXP_PEER_ONLY; main.c's
 * auth hook answers FAILED_PRECONDITION when this daemon has no
 * --peer-token-file). The work is in peers/ (registry, KV) and training/
 * (the ranks a member runs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/log.h"
#include "base/status.h"
#include "fluxion/v1/peer.pb-c.h"
#include "peers/peers.h"

/* A StartRank chunk's bytes, at most (the stream carries the blobs in
 * pieces this size or smaller). */
#define CHUNK_MAX (4u << 20)

static bool peers_or_fail(fxr_call *call, fxa_daemon *d)
{
    if (d->peers && fxpr_secret(d->peers))
        return true;
    fxr_fail(call, FXS_FAILED_PRECONDITION, "this daemon has no --peer-token-file");
    return false;
}

static void hello(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__PeerHelloRequest *req = (const void *)msg;
    if (!peers_or_fail(call, d))
        return;
    if (fxpr_find(d->peers, req->node) < 0) {
        fxr_fail(call, FXS_NOT_FOUND, "unknown peer '%.128s': not in this daemon's --peers "
                 "(this daemon is '%s')", req->node, fxpr_node(d->peers));
        return;
    }
    char names[FXSV_MAX_DEVICES][32];
    char *pnames[FXSV_MAX_DEVICES];
    for (int i = 0; i < d->devices.n; i++)
        pnames[i] = (char *)fx_device_str(d->devices.dev[i], names[i], sizeof names[i]);
    Fluxion__V1__PeerHelloResponse r = FLUXION__V1__PEER_HELLO_RESPONSE__INIT;
    r.node = (char *)fxpr_node(d->peers);
    r.version = FX_VERSION_STRING;
    r.devices = pnames;
    r.n_devices = (size_t)d->devices.n;
    r.comm_host = (char *)fxpr_comm_host(d->peers);
    fxr_reply(call, &r.base);
}

static void kv_set(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__PeerKvSetRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    if (!peers_or_fail(call, d))
        return;
    int rc = fxpr_kv_set(d->peers, req->key, req->value.data, req->value.len, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__PeerKvSetResponse r = FLUXION__V1__PEER_KV_SET_RESPONSE__INIT;
    fxr_reply(call, &r.base);
}

static void kv_get(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__PeerKvGetRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    if (!peers_or_fail(call, d))
        return;
    void *val = NULL;
    size_t len = 0;
    int rc = fxpr_kv_get(d->peers, req->key, req->timeout_ms, &val, &len, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__PeerKvGetResponse r = FLUXION__V1__PEER_KV_GET_RESPONSE__INIT;
    r.value = (ProtobufCBinaryData){ .len = len, .data = val };
    fxr_reply(call, &r.base);
    free(val);
}

/* One blob of StartRank: declared length, and what arrived. */
typedef struct {
    const char *name;
    uint64_t declared;
    uint8_t *buf;
    size_t len;
} blob;

/* Appends a chunk's piece to b, checked against the declared total. */
static int blob_add(blob *b, const ProtobufCBinaryData *piece, char *err, size_t errlen)
{
    if (!piece->len)
        return 0;
    if (piece->len > b->declared - b->len)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: %zu bytes more than the %llu declared in the first message",
                        b->name, (size_t)(b->len + piece->len - b->declared),
                        (unsigned long long)b->declared);
    if (!b->buf && !(b->buf = malloc(b->declared)))
        return fxu_oom(err, errlen);
    memcpy(b->buf + b->len, piece->data, piece->len);
    b->len += piece->len;
    return 0;
}

/* The first message's declared sizes against this daemon's limits,
 * before anything is buffered. */
static int check_first(fxa_daemon *d, const Fluxion__V1__StartRankChunk *c, char *err,
                       size_t errlen)
{
    if (!c->assignment || !c->spec || !c->model)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "the first message must carry the assignment, the job spec and the "
                        "model spec");
    const Fluxion__V1__RankAssignment *a = c->assignment;
    if (a->world < 2 || a->rank < 1 || a->rank >= a->world)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "assignment: rank %d of world %d (a member's rank is 1..world-1)",
                        a->rank, a->world);
    if (!a->job_id[0] || !a->comm_prefix[0] || strncmp(a->comm_prefix, "w/", 2) != 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "assignment: a job id and a comm prefix under \"w/\" are needed");
    if (fxpr_find(d->peers, a->coordinator) < 0)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                        "unknown peer '%.128s': the coordinator is not in this daemon's "
                        "--peers", a->coordinator);
    uint64_t wmax = d->max_import_bytes, dmax = d->max_dataset_bytes;
    if (c->weights_len > wmax || c->resume_len > wmax)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED,
                        "%s: %llu bytes declared; this daemon takes at most %llu "
                        "(--max-import-mb)", c->weights_len > wmax ? "weights" : "resume",
                        (unsigned long long)(c->weights_len > wmax ? c->weights_len
                                                                   : c->resume_len),
                        (unsigned long long)wmax);
    if (c->train_len > dmax || c->val_len > dmax)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED,
                        "%s data: %llu bytes declared; this daemon takes at most %llu "
                        "(--max-dataset-mb)", c->train_len > dmax ? "training" : "validation",
                        (unsigned long long)(c->train_len > dmax ? c->train_len : c->val_len),
                        (unsigned long long)dmax);
    return 0;
}

static void start_rank(fxr_call *call, const ProtobufCMessage *unused, void *data)
{
    (void)unused;
    fxa_daemon *d = data;
    char err[FXS_ERRLEN] = "";
    if (!peers_or_fail(call, d))
        return;
    Fluxion__V1__StartRankChunk *first = NULL;
    blob b[4] = { { .name = "weights" }, { .name = "resume" }, { .name = "train" },
                  { .name = "val" } };
    ProtobufCMessage *msg;
    int r, rc = 0;
    while (!rc && (r = fxr_recv(call, &msg)) == 1) {
        Fluxion__V1__StartRankChunk *c = (void *)msg;
        size_t bytes = c->weights.len + c->resume.len + c->train.len + c->val.len;
        if (bytes > CHUNK_MAX) {
            rc = fxu_fail(err, sizeof err, FXS_RESOURCE_EXHAUSTED,
                          "a StartRank chunk of %zu bytes; at most %u a message", bytes,
                          CHUNK_MAX);
        } else if (!first) {
            rc = check_first(d, c, err, sizeof err);
            b[0].declared = c->weights_len, b[1].declared = c->resume_len;
            b[2].declared = c->train_len, b[3].declared = c->val_len;
        } else if (c->assignment || c->spec || c->model) {
            rc = fxu_fail(err, sizeof err, FXS_INVALID_ARGUMENT,
                          "only the first message carries the assignment and specs");
        }
        if (!rc)
            rc = blob_add(&b[0], &c->weights, err, sizeof err);
        if (!rc)
            rc = blob_add(&b[1], &c->resume, err, sizeof err);
        if (!rc)
            rc = blob_add(&b[2], &c->train, err, sizeof err);
        if (!rc)
            rc = blob_add(&b[3], &c->val, err, sizeof err);
        if (!first && !rc)
            first = c;
        else
            protobuf_c_message_free_unpacked(msg, NULL);
    }
    if (!rc && r < 0)
        rc = fxr_cancelled(call) ? FXS_CANCELLED : FXS_INVALID_ARGUMENT;
    if (!rc && !first)
        rc = fxu_fail(err, sizeof err, FXS_INVALID_ARGUMENT, "StartRank: no message");
    for (int i = 0; !rc && i < 4; i++)
        if (b[i].len != b[i].declared)
            rc = fxu_fail(err, sizeof err, FXS_INVALID_ARGUMENT,
                          "%s: %zu bytes arrived, %llu declared", b[i].name, b[i].len,
                          (unsigned long long)b[i].declared);
    char *rank_id = NULL;
    if (!rc)
        rc = fxa_rank_start(d, first, b[0].buf, b[0].len, b[1].buf, b[1].len, b[2].buf,
                            b[2].len, b[3].buf, b[3].len, &rank_id, err, sizeof err);
    if (first)
        protobuf_c_message_free_unpacked(&first->base, NULL);
    for (int i = 0; i < 4; i++)
        free(b[i].buf);
    if (rc) {
        fxr_fail(call, rc, "%s", err[0] ? err : fxs_status_name(rc));
        return;
    }
    Fluxion__V1__StartRankResponse resp = FLUXION__V1__START_RANK_RESPONSE__INIT;
    resp.rank_id = rank_id;
    fxr_reply(call, &resp.base);
    free(rank_id);
}

static void stop_rank(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__StopRankRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    if (!peers_or_fail(call, d))
        return;
    int rc = fxa_rank_stop(d, req->rank_id, req->reason, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__StopRankResponse r = FLUXION__V1__STOP_RANK_RESPONSE__INIT;
    fxr_reply(call, &r.base);
}

static void rank_status(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__RankStatusRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], state[32] = "", why[FXS_ERRLEN] = "";
    int64_t step = 0;
    if (!peers_or_fail(call, d))
        return;
    int rc = fxa_rank_status(d, req->rank_id, state, sizeof state, why, sizeof why, &step, err,
                             sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__RankStatusResponse r = FLUXION__V1__RANK_STATUS_RESPONSE__INIT;
    r.state = state;
    r.error = why;
    r.step = step;
    fxr_reply(call, &r.base);
}

int fxa_register_peer_service(fxa_daemon *d)
{
    static const fxr_method methods[] = {
        { "Hello", FXR_UNARY, FXP_PEER_ONLY, hello },
        { "KvSet", FXR_UNARY, FXP_PEER_ONLY, kv_set },
        { "KvGet", FXR_UNARY, FXP_PEER_ONLY, kv_get },
        { "StartRank", FXR_CLIENT_STREAM, FXP_PEER_ONLY, start_rank },
        { "StopRank", FXR_UNARY, FXP_PEER_ONLY, stop_rank },
        { "RankStatus", FXR_UNARY, FXP_PEER_ONLY, rank_status },
    };
    return fxr_server_add_service(d->rpc, &fluxion__v1__peer_service__descriptor, methods,
                                  (int)(sizeof methods / sizeof methods[0]), d);
}
