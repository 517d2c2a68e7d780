/*
 * inflight.h - the request bytes and calls that clients hold in the server
 * at once (part of the rpc module, prefix fxr_inflight_; no gRPC here, so
 * that the accounting is tested on its own: tests/unit/test_inflight.c).
 *
 * Why: a request's bytes stay in memory from their receipt until its call
 * finishes (the byte buffer, then the unpacked message the handler reads),
 * and a unary call waits in the handler pool's queue meanwhile. Without a
 * cap, one client sending big requests faster than they are served fills
 * the memory for everyone. So the server takes each request's bytes here
 * before its handler runs, and gives them back when the call's state is
 * freed; past a cap the request is refused whole (RESOURCE_EXHAUSTED) and
 * costs nothing more.
 *
 * A client is a peer string as the transport names it: gRPC's
 * "ipv4:127.0.0.1:50321" (one connection, as the streams' limits count)
 * or the HTTP port's "http:127.0.0.1" (one address: the HTTP port also
 * caps connections per address). Every function is thread-safe.
 */
#ifndef FXR_INFLIGHT_H
#define FXR_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fxr_inflight fxr_inflight;

/* 0 in any field: that cap is off. */
typedef struct {
    uint64_t max_bytes;          /* every client together (--max-inflight-mb) */
    uint64_t max_bytes_per_peer; /* one client (--max-inflight-mb-per-client) */
    int max_calls_per_peer;      /* calls one client has in flight (--max-calls-per-client) */
} fxr_inflight_limits;

/* Which limit refused a take (the metric's label: fxr_inflight_limit_name). */
typedef enum {
    FXR_LIMIT_NONE = 0,
    FXR_LIMIT_BYTES,          /* "inflight_bytes" */
    FXR_LIMIT_PEER_BYTES,     /* "inflight_bytes_per_client" */
    FXR_LIMIT_PEER_CALLS,     /* "calls_per_client" */
    FXR_LIMIT_COUNT,
} fxr_limit;

/* NULL when out of memory. */
fxr_inflight *fxr_inflight_new(const fxr_inflight_limits *l);
void fxr_inflight_free(fxr_inflight *f);

/* Takes `bytes` (and one call when `call`) for peer: FXR_LIMIT_NONE, or
 * the limit that refuses them, with nothing taken, the refusal counted and
 * a message in why naming the limit, its flag and the amounts. Out of
 * memory for a new peer's entry counts as FXR_LIMIT_PEER_BYTES (said so in
 * why): the accounting must never lose a take it let through. */
fxr_limit fxr_inflight_take(fxr_inflight *f, const char *peer, uint64_t bytes, bool call,
                            char *why, size_t whylen);
/* Gives back what a take took (the same peer, bytes and call). */
void fxr_inflight_give(fxr_inflight *f, const char *peer, uint64_t bytes, bool call);

/* Bytes held now: all clients, or one (0 for a peer holding nothing). */
uint64_t fxr_inflight_bytes(fxr_inflight *f);
uint64_t fxr_inflight_peer_bytes(fxr_inflight *f, const char *peer);
int fxr_inflight_peer_calls(fxr_inflight *f, const char *peer);
/* Clients holding anything now (entries are dropped when they hold nothing). */
int fxr_inflight_peers(fxr_inflight *f);
/* Refusals so far by one limit. */
uint64_t fxr_inflight_rejected(fxr_inflight *f, fxr_limit which);
const char *fxr_inflight_limit_name(fxr_limit which);

#endif
