/*
 * peers.h - the other daemons this one trains with (prefix fxpr_):
 * the peer registry (fluxiond --peers, --peers-file), this daemon's own
 * name (--node-name), the outbound channels to the peers' PeerService
 * (proto/fluxion/v1/peer.proto), the rendezvous key-value store that
 * PeerService serves, and the fxcm_store a member rank uses to reach its
 * coordinator's (docs/distributed.md, "Peers").
 *
 * Peers. An entry is "NAME=HOST:PORT" or "HOST:PORT" (then NAME is
 * "HOST:PORT" itself). NAME is what job placements say ("B/cpu") and what
 * a daemon calls itself in its Hello (--node-name); HOST is resolved by
 * gRPC when a call connects, not at start, so Kubernetes StatefulSet names
 * (fluxiond-1.fluxiond:50051) that appear only once their pod runs work.
 * An entry whose NAME is this daemon's own --node-name is skipped, so one
 * list can serve every daemon of a set. A peers file has one entry a line;
 * '#' starts a comment; blank lines are skipped.
 *
 * Authentication. Every call to a peer carries the shared secret of
 * --peer-token-file as its bearer token (auth/auth.h: the peer principal,
 * which may call PeerService only). With --tls-cert, peer channels use TLS:
 * they verify the peer against --tls-client-ca (else the system roots);
 * with --tls-require-client-cert they also present --tls-cert/--tls-key as
 * their client certificate (which then needs clientAuth besides
 * serverAuth), otherwise none: the secret is what authenticates a peer.
 *
 * Every function returns 0 or an fxs_status code with a message in err,
 * and is thread-safe.
 */
#ifndef FXPR_PEERS_H
#define FXPR_PEERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "comm/comm.h"

#define FXPR_NAME_MAX 128        /* a peer's name: 1..128 of [A-Za-z0-9._:-] */
#define FXPR_ADDR_MAX 256        /* HOST:PORT */
#define FXPR_MAX_PEERS 256
#define FXPR_KEY_MAX 512         /* KV keys: 1..512 bytes, starting with "w/" */
#define FXPR_VALUE_MAX (1u << 20)
#define FXPR_KV_WAIT_MAX_MS 120000
#define FXPR_KV_WAIT_DEFAULT_MS 30000

typedef struct fxpr_peers fxpr_peers;

typedef struct {
    const char *peers;       /* --peers "NAME=HOST:PORT,HOST:PORT", or NULL */
    const char *peers_file;  /* --peers-file, or NULL */
    const char *node_name;   /* --node-name; NULL: HOST:PORT of --listen (fxpr_set_listen) */
    const char *comm_host;   /* --comm-host: where this daemon's collectives listen */
    const char *token_file;  /* --peer-token-file, or NULL: no peer calls either way */
    /* peer channels' TLS (the daemon's own files; NULL: plaintext) */
    const char *tls_cert_file, *tls_key_file, *tls_ca_file;
    bool tls_client_cert;    /* present the certificate (--tls-require-client-cert) */
    size_t max_message_bytes; /* per peer message; 0: 64 MiB */
    const char *version;     /* this daemon's, for Hello */
} fxpr_opts;

/* Parses the peers and reads the token file. INVALID_ARGUMENT naming the
 * entry, the file or what is wrong with the secret (unreadable, empty, not
 * 32..256 visible ASCII). The secret is in fxpr_secret(). */
int fxpr_open(const fxpr_opts *o, fxpr_peers **out, char *err, size_t errlen);
void fxpr_free(fxpr_peers *p);

/* The peer secret (NULL without --peer-token-file): for auth/. */
const char *fxpr_secret(const fxpr_peers *p);
/* The default node name once the port is bound ("127.0.0.1:7070"); no
 * effect when --node-name was given. Call before the server starts. */
void fxpr_set_listen(fxpr_peers *p, const char *listen, int port);
const char *fxpr_node(const fxpr_peers *p);
const char *fxpr_comm_host(const fxpr_peers *p);
const char *fxpr_version(const fxpr_peers *p);

int fxpr_count(const fxpr_peers *p);
const char *fxpr_name(const fxpr_peers *p, int i);
const char *fxpr_addr(const fxpr_peers *p, int i);
/* The index of the peer named name, or -1. */
int fxpr_find(const fxpr_peers *p, const char *name);

/* ------------------------------------------------------ outbound calls
 * Each peer's channel is opened at its first call and kept. timeout_ms:
 * the call's deadline. The peer's status comes back as it is (UNAVAILABLE
 * when it cannot be reached), with "peer NAME: " before its message. */

/* A unary PeerService call: method "Hello", ...; *resp: free with
 * protobuf_c_message_free_unpacked. */
int fxpr_call(fxpr_peers *p, int peer, const char *method, const ProtobufCMessage *req,
              ProtobufCMessage **resp, int64_t timeout_ms, char *err, size_t errlen);
/* StartRank: sends first (the assignment, specs and declared lengths),
 * then the blobs in chunks of at most chunk bytes. *rank_id gets the
 * member's handle (malloc). */
typedef struct {
    const void *data;
    size_t len;
} fxpr_blob;
int fxpr_start_rank(fxpr_peers *p, int peer, const ProtobufCMessage *first,
                    const fxpr_blob blobs[4], size_t chunk, int64_t timeout_ms, char **rank_id,
                    char *err, size_t errlen);

/* Logs, in a thread of its own, whether each peer answers Hello (one try
 * per peer at start, for the operator: the world forms later anyway). */
void fxpr_greet_async(fxpr_peers *p);

/* ------------------------------------------------------------- the KV
 * What PeerService's KvSet/KvGet serve: a memstore (comm/comm.h). Keys are
 * checked here (INVALID_ARGUMENT: empty, over FXPR_KEY_MAX, not under
 * "w/", control characters; a value over FXPR_VALUE_MAX). */
int fxpr_kv_set(fxpr_peers *p, const char *key, const void *val, size_t len, char *err,
                size_t errlen);
/* timeout_ms 0: FXPR_KV_WAIT_DEFAULT_MS; over FXPR_KV_WAIT_MAX_MS:
 * INVALID_ARGUMENT. DEADLINE_EXCEEDED when the key does not appear. */
int fxpr_kv_get(fxpr_peers *p, const char *key, int64_t timeout_ms, void **val, size_t *len,
                char *err, size_t errlen);
/* The same memstore as a store, for this daemon's own ranks. */
const fxcm_store *fxpr_kv_store(fxpr_peers *p);
/* Forgets a world's keys (prefix "w/..."). */
void fxpr_kv_drop(fxpr_peers *p, const char *prefix);

/* A store over KvSet/KvGet on the peer named coordinator, for a member's
 * rank: fxpr_remote_store(r) is valid while r lives. Its get waits in
 * KvGet calls of at most a second (a coordinator's handler thread is never
 * held longer), and gives up with ABORTED once *cancel (may be NULL) is
 * true. */
typedef struct fxpr_remote fxpr_remote;
int fxpr_remote_open(fxpr_peers *p, const char *coordinator, const atomic_bool *cancel,
                     fxpr_remote **out, char *err, size_t errlen);
const fxcm_store *fxpr_remote_store(fxpr_remote *r);
void fxpr_remote_free(fxpr_remote *r);

#endif
