/*
 * kv.c - the rendezvous store PeerService serves (KvSet/KvGet on the
 * coordinator), and the store a member's rank uses to reach it (peers.h).
 */
#include "peers/peers_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"
#include "fluxion/v1/peer.pb-c.h"

int fxpr__kv_init(fxpr_peers *p, char *err, size_t errlen)
{
    if (!(p->kv = fxcm_memstore_new()))
        return fxu_oom(err, errlen);
    p->kv_store = fxcm_memstore_store(p->kv);
    return 0;
}

void fxpr__kv_free(fxpr_peers *p)
{
    fxcm_memstore_free(p->kv);
}

static int check_key(const char *key, char *err, size_t errlen)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > FXPR_KEY_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "key: %zu bytes; it must be 1..%d",
                        n, FXPR_KEY_MAX);
    if (strncmp(key, "w/", 2) != 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "key '%.64s': not under a world's prefix (\"w/...\")", key);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "key: a control character at byte %zu", i + 1);
    return 0;
}

int fxpr_kv_set(fxpr_peers *p, const char *key, const void *val, size_t len, char *err,
                size_t errlen)
{
    int rc = check_key(key, err, errlen);
    if (rc)
        return rc;
    if (len > FXPR_VALUE_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "value: %zu bytes; at most %u", len, FXPR_VALUE_MAX);
    return p->kv_store.set(p->kv_store.data, key, val, len, err, errlen);
}

int fxpr_kv_get(fxpr_peers *p, const char *key, int64_t timeout_ms, void **val, size_t *len,
                char *err, size_t errlen)
{
    int rc = check_key(key, err, errlen);
    if (rc)
        return rc;
    if (timeout_ms < 0 || timeout_ms > FXPR_KV_WAIT_MAX_MS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "timeout_ms: %lld; it must be 0..%d", (long long)timeout_ms,
                        FXPR_KV_WAIT_MAX_MS);
    return p->kv_store.get(p->kv_store.data, key, val, len,
                           timeout_ms ? timeout_ms : FXPR_KV_WAIT_DEFAULT_MS, err, errlen);
}

const fxcm_store *fxpr_kv_store(fxpr_peers *p)
{
    return &p->kv_store;
}

void fxpr_kv_drop(fxpr_peers *p, const char *prefix)
{
    fxcm_memstore_drop_prefix(p->kv, prefix);
}

/* ------------------------------------------------- a member's remote store */

struct fxpr_remote {
    fxpr_peers *p;
    int peer;
    const atomic_bool *cancel;
    fxcm_store store;
};

#define REMOTE_POLL_MS 1000

static int remote_set(void *data, const char *key, const void *val, size_t len, char *err,
                      size_t errlen)
{
    fxpr_remote *r = data;
    Fluxion__V1__PeerKvSetRequest req = FLUXION__V1__PEER_KV_SET_REQUEST__INIT;
    req.key = (char *)key;
    req.value = (ProtobufCBinaryData){ .len = len, .data = (uint8_t *)val };
    ProtobufCMessage *resp = NULL;
    int rc = fxpr_call(r->p, r->peer, "KvSet", &req.base, &resp, 10000, err, errlen);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int remote_get(void *data, const char *key, void **val, size_t *len, int64_t timeout_ms,
                      char *err, size_t errlen)
{
    fxpr_remote *r = data;
    if (timeout_ms <= 0 || timeout_ms > FXPR_KV_WAIT_MAX_MS)
        timeout_ms = timeout_ms <= 0 ? FXPR_KV_WAIT_DEFAULT_MS : FXPR_KV_WAIT_MAX_MS;
    Fluxion__V1__PeerKvGetRequest req = FLUXION__V1__PEER_KV_GET_REQUEST__INIT;
    req.key = (char *)key;
    ProtobufCMessage *resp = NULL;
    uint64_t end = fxu_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    int rc;
    for (;;) {
        if (r->cancel && atomic_load(r->cancel))
            return fxu_fail(err, errlen, FXS_ABORTED, "rendezvous: stopped");
        uint64_t now = fxu_mono_ns();
        int64_t left = now < end ? (int64_t)((end - now) / 1000000u) : 0;
        req.timeout_ms = left < REMOTE_POLL_MS ? (left > 0 ? left : 1) : REMOTE_POLL_MS;
        /* the call's deadline a little past the wait: the answer is the
         * coordinator's DEADLINE_EXCEEDED, with its message */
        rc = fxpr_call(r->p, r->peer, "KvGet", &req.base, &resp, req.timeout_ms + 5000, err,
                       errlen);
        if (rc != FXS_DEADLINE_EXCEEDED || left <= REMOTE_POLL_MS)
            break;
    }
    if (rc)
        return rc;
    Fluxion__V1__PeerKvGetResponse *g = (void *)resp;
    *len = g->value.len;
    *val = malloc(g->value.len ? g->value.len : 1);
    if (!*val)
        rc = fxu_oom(err, errlen);
    else if (g->value.len)
        memcpy(*val, g->value.data, g->value.len);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int fxpr_remote_open(fxpr_peers *p, const char *coordinator, const atomic_bool *cancel,
                     fxpr_remote **out, char *err, size_t errlen)
{
    int i = fxpr_find(p, coordinator);
    if (i < 0)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                        "unknown peer '%.128s': not in this daemon's --peers", coordinator);
    fxpr_remote *r = calloc(1, sizeof *r);
    if (!r)
        return fxu_oom(err, errlen);
    r->p = p;
    r->peer = i;
    r->cancel = cancel;
    r->store = (fxcm_store){ .set = remote_set, .get = remote_get, .data = r };
    *out = r;
    return 0;
}

const fxcm_store *fxpr_remote_store(fxpr_remote *r)
{
    return &r->store;
}

void fxpr_remote_free(fxpr_remote *r)
{
    free(r);
}
