/*
 * rpc_internal.h - private to server/rpc/ (libuv's uv-common.h rule: nothing
 * outside this folder includes it). The state shared by the files of the
 * gRPC layer, and their internal functions, named fxr__*:
 *
 *   server.c    the server's lifecycle: create, start, the pollers of the
 *               completion queue, accepting calls, shutdown and drain
 *   call.c      one call's state: refcount, batches, reply/fail/finish,
 *               send/recv, cancellation, metadata; every request message is
 *               unpacked in fxr__unpack_request
 *   dispatch.c  the method table built from protoc-c descriptors, routing an
 *               accepted call, the handler pool and the streams' threads
 *   guard.c     who is calling: the auth hook, the method's access, the
 *               audit line (once per call, on the handler's thread)
 *   tls.c       the server's certificate, key and client CA: checked at
 *               create, handed to gRPC by its config fetcher, reloaded
 *   local.c     calls of another transport (HTTP) run as gRPC calls are:
 *               fxr_server_call_local
 *   inflight.c  request bytes and calls each client holds in flight, and
 *               the caps on them (inflight.h: no gRPC, unit-tested alone)
 *
 * Locks: s->mu (server state and counters), s->q_mu (the handler pool) and
 * c->mu (one call) are never held together, except that c->mu may be held
 * while fxr__log runs (the log callback takes no rpc lock). The auth and
 * audit hooks run with no rpc lock held; the TLS state's t->mu is taken
 * only by tls.c (gRPC's fetcher and the reload), never with another.
 * The in-flight accounting's lock (inflight.c) is innermost: it may be
 * taken under c->mu (fxr_recv) and takes no other.
 */
#ifndef FXR_RPC_INTERNAL_H
#define FXR_RPC_INTERNAL_H

#include "rpc/rpc.h"
#include "rpc/inflight.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>


#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

#define DEFAULT_POLL_THREADS 2
#define DEFAULT_HANDLER_THREADS 8
#define DEFAULT_MAX_MESSAGE ((size_t)64 << 20)
#define MAX_THREADS 1024
/* 64 streams: dozens of watchers and uploads at once, while the threads
 * they hold stay a small multiple of the handler pool (64 + 8 + 2). */
#define DEFAULT_MAX_STREAMS 64
#define DEFAULT_STREAM_IDLE_MS 60000
/* Accepts kept posted per poller, so a burst of new calls does not wait for
 * a poller to re-post one at a time. */
#define REQUESTS_PER_POLLER 4

/* What a completion-queue event points at. */
typedef struct tag tag;
struct tag {
    void (*done)(tag *t, bool ok);
};

/* ThreadSanitizer does not see gRPC's own synchronisation (the library is
 * not instrumented), so what a thread wrote before handing a tag to gRPC
 * looks unsynchronised with the poller that gets the tag back. These mark
 * that edge (scripts/tsan.sh): released where a tag is handed over,
 * acquired where the completion queue returns it. Nothing without TSan. */
#if defined(__SANITIZE_THREAD__)
#define FXR__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FXR__TSAN 1
#endif
#endif
#ifdef FXR__TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define FXR_TAG_RELEASE(t) __tsan_release(t)
#define FXR_TAG_ACQUIRE(t) __tsan_acquire(t)
#else
#define FXR_TAG_RELEASE(t) ((void)(t))
#define FXR_TAG_ACQUIRE(t) ((void)(t))
#endif

typedef struct {
    char *path;
    size_t path_len;
    const ProtobufCMessageDescriptor *input;
    fxr_kind kind;
    fxp_access access;
    fxr_handler fn;
    void *data;
} route;

struct fxr_call {
    fxr_server *s;
    grpc_call *call; /* set by gRPC when the call is accepted */
    grpc_call_details details;
    grpc_metadata_array md;
    tag accept_tag, close_tag, recv_tag, send_tag, status_tag;

    pthread_mutex_t mu; /* guards everything below, and start_batch */
    pthread_cond_t cv;
    int refs;
    int close_cancelled;   /* written by RECV_CLOSE_ON_SERVER */
    atomic_bool gone;      /* cancelled, deadline passed, disconnected */
    bool finished;         /* fxr_reply/fxr_fail/fxr_finish called */
    bool md_sent;          /* initial metadata went with a send */
    bool sending, send_ok; /* one SEND_MESSAGE at a time */
    bool receiving, recv_ok, recv_end;
    grpc_byte_buffer *recv_bb, *send_bb, *status_bb;
    grpc_slice status_msg;
    bool counted; /* counted in live_calls */
    bool idle_expired; /* fxr_recv ended the call: the client was idle */
    int stream_slot;   /* index in s->stream_peers while a stream thread runs */
    /* What the call holds in s->inflight under its peer's name: a call
     * (charged_call) and request bytes (charged_bytes: the unary request,
     * or a client stream's last message), given back by fxr__call_free,
     * and a stream message's bytes by the next fxr_recv too. */
    bool charged_call;
    uint64_t charged_bytes;

    const route *route;
    /* guard.c: the caller, once authenticated (authed), and whether the
     * call's end goes into the audit (a write, or a refused auth) */
    fxp_principal principal;
    bool authed;
    bool audit;
    char *object; /* fxr_set_object, for the audit line */
    ProtobufCMessage *req;
    char *refused; /* why fxr_recv refused a message's strings (wirecheck.h) */
    char *path;
    char *peer; /* gpr_malloc'd by gRPC */
    int64_t deadline_ns;
    fxr_call *next; /* handler pool queue */
    bool deferred;  /* fxr_defer: authorized and unpacked, for the pool */
    /* local.c: a call of another transport (HTTP): no grpc_call; its end
     * goes to local_done, its credentials are local_cred's (valid while
     * fxr_server_call_local runs: the guard reads them before it returns) */
    bool local, local_tls;
    fxr_local_done local_done;
    void *local_ud;
    const fxr_credentials *local_cred;
};

/* S_ABANDONED: the shutdown gave up with calls still held by handlers; the
 * server's memory stays in use until the process exits. */
enum { S_CREATED, S_STARTED, S_SHUTTING, S_STOPPED, S_ABANDONED };

/* tls.c: the files and their checked contents. gRPC asks for the config at
 * every new handshake (fetch_config); `fresh` says whether there is a new
 * one it has not taken yet. */
typedef struct fxr__tls {
    pthread_mutex_t mu;
    char *cert_file, *key_file, *ca_file; /* set at start, never changed: read without mu */
    char *cert_pem, *key_pem, *ca_pem; /* under mu (a reload swaps them); ca_pem NULL
                                        * without a client CA (ca_file NULL) */
    bool fresh;
    uint64_t reloads; /* how many configs gRPC has taken */
} fxr__tls;

struct fxr_server {
    fxr_server_opts opts;
    char *listen;
    fxr__tls *tls; /* NULL: plaintext */
    grpc_server *srv;
    grpc_completion_queue *cq;
    int port;
    route *routes;
    int n_routes, cap_routes;

    pthread_mutex_t mu; /* state and the counters the shutdown waits on */
    pthread_cond_t cv;
    int state;
    atomic_bool shutting;    /* new calls get UNAVAILABLE; calls in flight get the grace */
    bool closing;            /* gRPC's shutdown started: no more accepts posted (s->mu) */
    atomic_bool past_grace;  /* grace over: calls in flight are cancelled */
    int pending_requests; /* request_call posted, not completed */
    int live_calls;       /* accepted, state not yet freed */
    int stream_threads;   /* streaming calls' handler threads alive */
    /* One slot per admitted streaming call (opts.max_streams of them): a
     * key of its peer address, 0 when free. */
    uint64_t *stream_peers;
    fxr_inflight *inflight; /* request bytes and calls in flight, per client */
    bool shutdown_notified;
    tag shutdown_tag;
    atomic_uint_fast64_t in_flight, total;

    pthread_t *pollers;
    int n_pollers, pollers_joined;

    pthread_mutex_t q_mu; /* the handler pool */
    pthread_cond_t q_cv;
    fxr_call *q_head, *q_tail;
    bool q_stop;
    pthread_t *workers;
    int n_workers, workers_joined;
};

/* ------------------------------------------------------------- server.c */

/* One line to the server's log callback. */
void fxr__log(const fxr_server *s, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds delta to one of the counters the shutdown waits on (under s->mu) and
 * wakes it. */
void fxr__wake(fxr_server *s, int *counter, int delta);

/* --------------------------------------------------------------- call.c */

fxr_call *fxr__call_new(fxr_server *s);
/* Frees the state at once; fxr__call_release when batches may be pending. */
void fxr__call_free(fxr_call *c);
/* Drops one reference; the last frees the call. */
void fxr__call_release(fxr_call *c);
/* Starts a batch under c->mu (held by the caller), taking a reference for
 * it. Returns false (and takes none) when gRPC refuses the batch. */
bool fxr__call_batch(fxr_call *c, const grpc_op *ops, size_t n, tag *t);
/* Every way of finishing a call ends here (see call.c). */
void fxr__call_finish(fxr_call *c, const ProtobufCMessage *resp, fxs_status code,
                      const char *msg);
/* True (with why, logged) when resp packs to more than opts.max_send_bytes:
 * the call is then answered RESOURCE_EXHAUSTED naming --max-message-mb
 * instead (unary replies, gRPC and local). */
bool fxr__reply_too_big(const fxr_server *s, const char *path, const ProtobufCMessage *resp,
                        char *why, size_t whylen);
/* A call was just accepted (on a poller): its path, peer and deadline, and
 * the close notice armed. Returns false when out of memory. */
bool fxr__call_accepted(fxr_call *c);
/* Unpacks a request message of c (bb is consumed) into *msg: 0, or
 * FXS_INVALID_ARGUMENT with "cannot parse TYPE" in err (logged). The one
 * place where request bytes become a message, for unary, server-streaming
 * and client-streamed calls alike. */
int fxr__unpack_request(fxr_call *c, grpc_byte_buffer *bb, ProtobufCMessage **msg, char *err,
                        size_t errlen);
/* The same from bytes (a local call's request; not consumed). */
int fxr__unpack_bytes(fxr_call *c, const uint8_t *data, size_t len, ProtobufCMessage **msg,
                      char *err, size_t errlen);

/* -------------------------------------------------------------- local.c */

/* Finishes a local call (fxr__call_finish sends it here): done once, the
 * audit, the counters. */
void fxr__local_finish(fxr_call *c, const ProtobufCMessage *resp, fxs_status code,
                       const char *msg);

/* -------------------------------------------------------------- guard.c */

/* On the handler's thread, before the request is unpacked: authenticates
 * the call (opts.auth) and checks its method's access. True when the
 * handler may run; else the call is finished (UNAUTHENTICATED,
 * PERMISSION_DENIED, ...) and audited. */
bool fxr__authorize(fxr_call *c);
/* The audit line of a finished call (fxr__call_finish), when it has one. */
void fxr__audit(fxr_call *c, fxs_status code, const char *msg);

/* ---------------------------------------------------------------- tls.c */

/* Reads and checks the TLS files of opts (s->tls NULL when none are
 * given) and makes the credentials for the listener: 0, or
 * FXS_INVALID_ARGUMENT naming the file that is missing or bad. */
int fxr__tls_open(fxr_server *s, char *err, size_t errlen);
grpc_server_credentials *fxr__tls_credentials(fxr_server *s);
void fxr__tls_free(fxr_server *s);

/* ----------------------------------------------------------- dispatch.c */

/* Routes an accepted call (on a poller): UNIMPLEMENTED, the handler pool,
 * or a thread of its own. */
void fxr__dispatch(fxr_server *s, fxr_call *c);
/* The route of a method path, NULL when unknown. */
const route *fxr__find_route(const fxr_server *s, const char *path, size_t len);
/* A thread of the handler pool. */
void *fxr__worker_main(void *arg);

#endif
