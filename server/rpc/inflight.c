/*
 * inflight.c - the in-flight accounting of inflight.h: totals, and one
 * entry per client holding anything, in a chained hash table. An entry is
 * dropped as soon as its client holds nothing, so the table's size follows
 * the clients with calls in flight, not every client ever seen.
 */
#define _GNU_SOURCE
#include "rpc/inflight.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 256

typedef struct entry {
    struct entry *next;
    uint64_t bytes;
    int calls;
    char peer[]; /* the key */
} entry;

struct fxr_inflight {
    pthread_mutex_t mu;
    fxr_inflight_limits lim;
    uint64_t bytes;
    int peers;
    uint64_t rejected[FXR_LIMIT_COUNT];
    entry *bucket[BUCKETS];
};

static const double MIB = 1024.0 * 1024.0;

fxr_inflight *fxr_inflight_new(const fxr_inflight_limits *l)
{
    fxr_inflight *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    pthread_mutex_init(&f->mu, NULL);
    if (l)
        f->lim = *l;
    return f;
}

void fxr_inflight_free(fxr_inflight *f)
{
    if (!f)
        return;
    for (int i = 0; i < BUCKETS; i++)
        for (entry *e = f->bucket[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* FNV-1a of the peer string. */
static entry **slot_of(fxr_inflight *f, const char *peer)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)peer; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    entry **e = &f->bucket[h % BUCKETS];
    while (*e && strcmp((*e)->peer, peer) != 0)
        e = &(*e)->next;
    return e; /* the entry, or the NULL link where it would go */
}

/* held + bytes > cap (0: no cap), without overflow */
static bool over(uint64_t held, uint64_t bytes, uint64_t cap)
{
    return cap && bytes && (held >= cap || bytes > cap - held);
}

const char *fxr_inflight_limit_name(fxr_limit which)
{
    switch (which) {
    case FXR_LIMIT_BYTES: return "inflight_bytes";
    case FXR_LIMIT_PEER_BYTES: return "inflight_bytes_per_client";
    case FXR_LIMIT_PEER_CALLS: return "calls_per_client";
    default: return "none";
    }
}

fxr_limit fxr_inflight_take(fxr_inflight *f, const char *peer, uint64_t bytes, bool call,
                            char *why, size_t whylen)
{
    if (!peer)
        peer = "";
    fxr_limit refused = FXR_LIMIT_NONE;
    pthread_mutex_lock(&f->mu);
    entry **slot = slot_of(f, peer);
    entry *e = *slot;
    uint64_t mine = e ? e->bytes : 0;
    int calls = e ? e->calls : 0;
    const fxr_inflight_limits *l = &f->lim;
    /* the client's own limits first: a client over its share is told so,
     * not that the server is busy */
    if (call && l->max_calls_per_peer > 0 && calls >= l->max_calls_per_peer) {
        refused = FXR_LIMIT_PEER_CALLS;
        snprintf(why, whylen, "this client already has %d calls in flight, the most one client "
                 "may have (--max-calls-per-client %d): wait for some to finish", calls,
                 l->max_calls_per_peer);
    } else if (over(mine, bytes, l->max_bytes_per_peer)) {
        refused = FXR_LIMIT_PEER_BYTES;
        snprintf(why, whylen, "a request of %" PRIu64 " bytes would bring this client's requests "
                 "in flight to %" PRIu64 " bytes, over its limit of %" PRIu64 " bytes "
                 "(--max-inflight-mb-per-client %g): wait for its calls to finish, or send "
                 "smaller requests", bytes, mine + bytes, l->max_bytes_per_peer,
                 l->max_bytes_per_peer / MIB);
    } else if (over(f->bytes, bytes, l->max_bytes)) {
        refused = FXR_LIMIT_BYTES;
        snprintf(why, whylen, "a request of %" PRIu64 " bytes would bring the server's requests in "
                 "flight to %" PRIu64 " bytes, over its limit of %" PRIu64 " bytes "
                 "(--max-inflight-mb %g): try again later", bytes, f->bytes + bytes,
                 l->max_bytes, l->max_bytes / MIB);
    } else if (!e) {
        size_t n = strlen(peer) + 1;
        if (!(e = calloc(1, sizeof *e + n))) {
            refused = FXR_LIMIT_PEER_BYTES;
            snprintf(why, whylen, "server out of memory accounting a request of %" PRIu64
                     " bytes (--max-inflight-mb-per-client)", bytes);
        } else {
            memcpy(e->peer, peer, n);
            *slot = e;
            f->peers++;
        }
    }
    if (refused) {
        f->rejected[refused]++;
    } else {
        e->bytes += bytes;
        e->calls += call;
        f->bytes += bytes;
    }
    pthread_mutex_unlock(&f->mu);
    return refused;
}

void fxr_inflight_give(fxr_inflight *f, const char *peer, uint64_t bytes, bool call)
{
    if (!peer)
        peer = "";
    pthread_mutex_lock(&f->mu);
    entry **slot = slot_of(f, peer);
    entry *e = *slot;
    if (e) { /* else: never taken (a caller's bug); nothing to give back */
        uint64_t b = bytes < e->bytes ? bytes : e->bytes;
        e->bytes -= b;
        f->bytes -= b < f->bytes ? b : f->bytes;
        if (call && e->calls > 0)
            e->calls--;
        if (!e->bytes && !e->calls) {
            *slot = e->next;
            free(e);
            f->peers--;
        }
    }
    pthread_mutex_unlock(&f->mu);
}

uint64_t fxr_inflight_bytes(fxr_inflight *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t b = f->bytes;
    pthread_mutex_unlock(&f->mu);
    return b;
}

uint64_t fxr_inflight_peer_bytes(fxr_inflight *f, const char *peer)
{
    pthread_mutex_lock(&f->mu);
    entry *e = *slot_of(f, peer ? peer : "");
    uint64_t b = e ? e->bytes : 0;
    pthread_mutex_unlock(&f->mu);
    return b;
}

int fxr_inflight_peer_calls(fxr_inflight *f, const char *peer)
{
    pthread_mutex_lock(&f->mu);
    entry *e = *slot_of(f, peer ? peer : "");
    int n = e ? e->calls : 0;
    pthread_mutex_unlock(&f->mu);
    return n;
}

int fxr_inflight_peers(fxr_inflight *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->peers;
    pthread_mutex_unlock(&f->mu);
    return n;
}

uint64_t fxr_inflight_rejected(fxr_inflight *f, fxr_limit which)
{
    if (which <= FXR_LIMIT_NONE || which >= FXR_LIMIT_COUNT)
        return 0;
    pthread_mutex_lock(&f->mu);
    uint64_t n = f->rejected[which];
    pthread_mutex_unlock(&f->mu);
    return n;
}
