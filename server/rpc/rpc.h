/*
 * rpc.h - the daemon's gRPC layer: the one module that calls gRPC C core on
 * the server side (the core API is not stable across minor versions; keep
 * every grpc_* call behind this header).
 *
 * Services are registered from protoc-c service descriptors: each method's
 * path is "/" + descriptor->name + "/" + method name, its request type is
 * methods[i].input. protoc-c drops the `stream` keyword, so the streaming
 * kind of each method comes from the fxr_method table given at registration
 * (the side table). Methods with no handler, and unknown paths, are answered
 * UNIMPLEMENTED.
 *
 * Threads: `poll_threads` threads poll one completion queue and never run a
 * handler. Unary handlers run on a pool of `handler_threads` threads; each
 * streaming call (server, client or bidi) gets a thread of its own for its
 * lifetime, so long streams (watches) never starve unary calls. Handlers may
 * block.
 *
 * Streams are bounded, because each holds a thread: at most `max_streams`
 * at once, and `max_streams_per_peer` of them from one client connection, so
 * one client cannot take them all; past either, a new stream is answered
 * RESOURCE_EXHAUSTED at once, on the poller, with a message naming the limit.
 * A client-streamed call whose client sends nothing for `stream_idle_ms`
 * while its handler waits in fxr_recv is ended (DEADLINE_EXCEEDED), which
 * frees its thread. Server streams (watches, exports) count against the
 * limits but are never idle: the handler decides when they end.
 *
 * Timers, and who owns them. This layer starts no timer thread:
 *  - a call's deadline belongs to gRPC, which cancels the call when it
 *    passes (the client sees DEADLINE_EXCEEDED); the close notice marks the
 *    call gone, and handlers learn it from fxr_cancelled/fxr_send/fxr_recv;
 *  - a client stream's idle limit is a timed wait inside fxr_recv, on the
 *    handler's own thread: it runs only while that thread waits for the
 *    client, so it can neither outlive the call nor need a wake-up;
 *  - the shutdown's grace and release limits are timed waits of the thread
 *    that calls fxr_server_shutdown; the process's hard deadline around it
 *    is a libuv timer of main.c.
 *
 * Every call is finished exactly once, by fxr_reply or fxr_fail, either
 * before the handler returns or later from any thread (deferred: hand the
 * call to a worker, return, finish it there). After the client cancels or
 * the deadline passes, fxr_reply/fxr_fail still must be called (they then
 * only release the call); fxr_cancelled() tells a long handler to stop early.
 *
 * Who calls. Every routed call is authenticated once, on its handler's
 * thread and before its request is unpacked, by the opts.auth hook (a
 * bearer token in the "authorization" metadata, or a verified client
 * certificate); then its method's access class must be one the caller's
 * role allows. Refusals never reach the handler. Writes and refusals go to
 * the opts.audit hook. TLS (opts.tls_*) is reloadable without a restart.
 *
 * Files: this header is the module's interface and its documentation.
 * guard.c (auth, access, audit), tls.c (certificates, reload), local.c
 * (calls of another transport: fxr_server_call_local),
 * server.c (lifecycle, pollers, accepting calls, drain), call.c (one call:
 * reply/fail/send/recv, cancellation; every request message, unary or
 * streamed, is unpacked in fxr__unpack_request there), dispatch.c (the method table, routing, the handler pool,
 * the streams' threads), inflight.c (request bytes and calls in flight per
 * client: inflight.h). rpc_internal.h holds their shared state and is
 * private to this folder.
 */
#ifndef FXR_RPC_H
#define FXR_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "base/principal.h"
#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif


typedef enum {
    FXR_UNARY = 0,
    FXR_SERVER_STREAM, /* one request, a stream of responses (fxr_send) */
    FXR_CLIENT_STREAM, /* a stream of requests (fxr_recv), one response */
    FXR_BIDI,          /* both */
    /* Unary, and its handler runs on the poller that received the request,
     * saving the hand-off to the handler pool (a thread wakeup and a
     * context switch per call). Such a handler must not block: where it
     * would (a store lookup, a file read), it calls fxr_defer and returns. */
    FXR_UNARY_POLLER,
} fxr_kind;

typedef struct fxr_server fxr_server;
typedef struct fxr_call fxr_call;

/* A handler. req is the unpacked request for unary and server-streaming
 * methods (owned by the call: valid until the call is finished), NULL for
 * client-streaming and bidi methods (read them with fxr_recv). data is the
 * pointer given at registration. Its string fields are checked before the
 * handler runs (rpc/wirecheck.h: valid UTF-8, no NUL, within the field's
 * limit); a refused request is answered INVALID_ARGUMENT without it. */
/* gRPC core's own log lines (gpr_log: transport errors, and everything
 * GRPC_VERBOSITY=debug asks for) go to log(data, level, "grpc: file:line:
 * message") instead of straight to stderr, so that a daemon logging JSON
 * writes nothing else. Process-wide, as gRPC's log is: call it once at
 * start, before the first server is created. */
void fxr_set_core_log(void (*log)(void *data, const char *level, const char *msg), void *data);

typedef void (*fxr_handler)(fxr_call *call, const ProtobufCMessage *req, void *data);

typedef struct {
    const char *name; /* method name as in the .proto ("ModelInfer") */
    fxr_kind kind;
    fxp_access access; /* what the caller's role must allow (base/principal.h) */
    fxr_handler fn;
} fxr_method;

/* What a call presents, for the auth hook. Pointers valid during the hook
 * only. authorization: the "authorization" metadata value (at most 4 KiB
 * of it) or NULL; cert_subject ("CN=alice,O=a", RFC 2253) and cert_cn: a
 * client certificate's that gRPC verified against opts.tls_client_ca_file
 * in the handshake, else NULL; peer ("ipv4:10.0.0.5:50321") and method (the
 * path) for its messages; tls: the call came over TLS. */
typedef struct {
    const char *authorization;
    const char *cert_subject;
    const char *cert_cn;
    const char *peer;
    const char *method;
    bool tls;
} fxr_credentials;

/* The auth hook (opts.auth): fills *out with the caller's principal and
 * returns 0, or returns FXS_UNAUTHENTICATED with a message saying what is
 * wrong (never the secret): the call is answered with that code and
 * message and its handler never runs. Another non-zero code (the store
 * failed) is answered with that code. Called once per routed call, on the
 * handler's thread, before the request is unpacked; from many threads at
 * once. A principal with role FXP_ROLE_NONE counts as a refusal. */
typedef int (*fxr_auth_fn)(void *data, const fxr_credentials *c, fxp_principal *out, char *err,
                           size_t errlen);

/* The audit hook (opts.audit): called once when a call whose method's
 * access is FXP_WRITE or FXP_MANAGE finishes (fxr_reply/fxr_fail/
 * fxr_finish), and once for every call refused by the auth hook or by its
 * role. p: the caller, NULL when it was not authenticated; method: the
 * path; object: what fxr_set_object said ("" when nothing); code and
 * message: the call's status. From any thread; must not call back into
 * the call. */
typedef void (*fxr_audit_fn)(void *data, const fxp_principal *p, const char *method,
                             const char *object, fxs_status code, const char *message);

typedef struct {
    const char *listen;       /* "127.0.0.1:0" (port 0: a free port) */
    int poll_threads;         /* 0: 2 */
    int handler_threads;      /* 0: 8 */
    size_t max_recv_bytes;    /* per message; 0: 64 MiB. Larger: RESOURCE_EXHAUSTED */
    size_t max_send_bytes;    /* per message; 0: 64 MiB */
    /* Streaming calls (of every kind) open at once, each holding a thread;
     * past it a new stream is answered RESOURCE_EXHAUSTED. 0: 64. */
    int max_streams;
    /* Of them, the most one client connection (one peer address) may hold,
     * so that one client cannot take every slot. 0: max_streams / 4, at
     * least 1. */
    int max_streams_per_peer;
    /* How long fxr_recv waits for the client's next message before it ends
     * the call (DEADLINE_EXCEEDED to the client, -1 to the handler) and so
     * frees its thread. 0: 60 s; < 0: no limit. Server-streaming calls are
     * never idle by this measure: only waits for the client count. */
    int stream_idle_ms;
    /* Request bytes held by calls in flight (rpc/inflight.h): a unary or
     * server-streaming call's request from its receipt until the call's
     * state is freed, a client stream's message from its receipt until the
     * handler's next fxr_recv (or the call's end). Every client together
     * (max_inflight_bytes) and one client connection
     * (max_inflight_bytes_per_peer); and the calls one connection has in
     * flight (max_calls_per_peer, streams too). Past one, the call is
     * answered RESOURCE_EXHAUSTED naming the limit, its flag and the
     * amounts, before its handler runs (a stream: its message is refused
     * and the call ended, as for the idle limit). 0: no limit. */
    uint64_t max_inflight_bytes;
    uint64_t max_inflight_bytes_per_peer;
    int max_calls_per_peer;
    /* Called (from any thread) with one line per event worth logging:
     * level "info"/"warn"/"error". NULL: stderr. */
    void (*log)(void *log_data, const char *level, const char *msg);
    void *log_data;
    /* Who may call what. NULL: every caller is fxp_local_principal (an
     * admin: local mode). With a hook, every routed call is authenticated
     * by it, then its method's access is checked against the principal's
     * role (fxp_allows): PERMISSION_DENIED "role 'viewer' may not call
     * ModelService/DeleteModel (needs member)". Unknown methods and
     * methods without a handler are answered UNIMPLEMENTED first. */
    fxr_auth_fn auth;
    void *auth_data;
    fxr_audit_fn audit; /* NULL: no audit */
    void *audit_data;
    /* TLS: both files, or neither (plaintext). PEM; the key unencrypted and
     * matching the certificate's. Read and checked at create (an error
     * names the file), re-read by fxr_server_reload_tls. */
    const char *tls_cert_file, *tls_key_file;
    /* mTLS: clients may present a certificate signed by one of these CAs
     * (PEM bundle); gRPC verifies it in the handshake and refuses one it
     * cannot verify. Optional for the client (a token may stand in) unless
     * tls_require_client_cert, which refuses handshakes without one. Needs
     * the two files above; tls_require_client_cert needs this. */
    const char *tls_client_ca_file;
    bool tls_require_client_cert;
} fxr_server_opts;

/* Creates a server bound to opts->listen: 0 with the server in *out, or
 * (*out NULL, a message in err) FXS_INVALID_ARGUMENT for an invalid option
 * (no address, a port over 65535, a count out of range, a TLS file that is
 * missing or bad: the message names it, a TLS option without the ones it
 * needs),
 * FXS_FAILED_PRECONDITION when the address cannot be bound (malformed, or
 * in use: gRPC does not tell which), FXS_RESOURCE_EXHAUSTED out of memory. */
int fxr_server_create(const fxr_server_opts *opts, fxr_server **out, char *err, size_t errlen);

/* Registers a service: every method of the descriptor gets a route; the
 * ones named in methods[0..n) get their handler, kind and access. Before
 * start. Returns 0, or (logged, the server left as it was)
 * FXS_INVALID_ARGUMENT for a bad table (a name not in the descriptor, a
 * bad kind, an access FXP_ACCESS_UNSET or out of range: no method is left
 * open by omission),
 * FXS_ALREADY_EXISTS for a service registered twice, FXS_FAILED_PRECONDITION
 * after start, FXS_RESOURCE_EXHAUSTED when out of memory. */
int fxr_server_add_service(fxr_server *s, const ProtobufCServiceDescriptor *desc,
                           const fxr_method *methods, int n, void *data);

/* Starts polling: 0 with the bound port in *port, or (logged)
 * FXS_FAILED_PRECONDITION when started twice, FXS_RESOURCE_EXHAUSTED when
 * its threads cannot start. */
int fxr_server_start(fxr_server *s, int *port);

/* Graceful shutdown, every step bounded. Blocks; call from a non-handler
 * thread.
 *  1. At once: new calls are answered UNAVAILABLE (the listener stays open
 *     meanwhile, so that no call gRPC had received is dropped) and
 *     fxr_draining() turns true; calls in flight go on.
 *  2. When no call is in flight, or grace_ms has passed: gRPC's shutdown
 *     (listener closed, GOAWAY), and every call still in flight cancelled
 *     (its client gets UNAVAILABLE, fxr_cancelled() turns true).
 *  3. Up to release_ms (< 0: no limit) for the handlers to release their
 *     calls and for the server's threads to stop.
 * Returns 0; or FXS_DEADLINE_EXCEEDED, with a message in err, when step 3
 * ran out: handlers still hold calls, the server stays as it is (its memory
 * in use) and the caller should exit the process rather than wait. A
 * second call returns at once. */
int fxr_server_shutdown(fxr_server *s, int grace_ms, int release_ms, char *err, size_t errlen);

/* Re-reads the certificate, key and client CA files given at create and
 * checks them as create does: new handshakes use them, connections already
 * open keep theirs. 0, or (the old ones kept, logged) FXS_INVALID_ARGUMENT
 * naming the file that is missing or bad, FXS_FAILED_PRECONDITION when the
 * server has no TLS. From any thread. */
int fxr_server_reload_tls(fxr_server *s, char *err, size_t errlen);

/* Frees everything; the server must be shut down (or never started). A
 * started one is shut down first (no grace, no limit). One whose shutdown
 * gave up is freed only if its handlers have let go of their calls since;
 * else it is left as it is (see fxr_server_shutdown). */
void fxr_server_destroy(fxr_server *s);

/* Calls in flight (received and not yet finished), and calls so far. */
uint64_t fxr_server_in_flight(const fxr_server *s);
uint64_t fxr_server_total_calls(const fxr_server *s);
/* Streaming calls open now (each holds a stream slot and its thread). */
int fxr_server_open_streams(fxr_server *s);

/* Request bytes held by calls in flight now (opts.max_inflight_bytes), and
 * the refusals of the in-flight limits so far: i in 0..2, *name the
 * limit's name ("inflight_bytes", "inflight_bytes_per_client",
 * "calls_per_client"); past the last, 0 with *name NULL. */
uint64_t fxr_server_inflight_bytes(fxr_server *s);
uint64_t fxr_server_limit_rejections(fxr_server *s, const char **name, int i);

/* For another transport that holds a request's bytes before it makes its
 * local call (the HTTP port buffers bodies): takes bytes for client under
 * the same in-flight limits as gRPC calls. 0, or FXS_RESOURCE_EXHAUSTED
 * with why naming the limit, its flag and the amounts (nothing taken).
 * Give them back with fxr_server_uncharge once the request is freed. */
int fxr_server_charge(fxr_server *s, const char *client, uint64_t bytes, char *why,
                      size_t whylen);
void fxr_server_uncharge(fxr_server *s, const char *client, uint64_t bytes);

/* ------------------------------------------------------- local calls */

/* The end of a local call: code 0 with the packed response, or a non-OK
 * code and its message (resp NULL). Called exactly once, from any thread,
 * possibly before fxr_server_call_local returns. resp and message are
 * valid during the call only. */
typedef void (*fxr_local_done)(void *ud, fxs_status code, const char *message,
                               const uint8_t *resp, size_t resp_len);
/* Runs the unary method `path` ("/inference.GRPCInferenceService/ModelInfer")
 * on the packed request as if it came over gRPC: the same auth hook (cred),
 * access check, audit, request unpack + string checks, handler, drain rules
 * and in-flight count. For another transport (HTTP). Streaming methods and
 * unknown paths: done(UNIMPLEMENTED).
 *
 * cred: what the caller presents (authorization: the raw "Bearer ..."
 * value; tls: it came over TLS; peer: "http:ADDR", fxr_peer's answer);
 * cert_subject/cert_cn are ignored (no client certificates over this path).
 * Read before this returns. The handler runs on the caller's thread; it
 * may finish the call later from another (done then comes from there).
 * Once a shutdown started, or before start/after stop: done(UNAVAILABLE)
 * at once, as a new gRPC call gets. The shutdown counts local calls in
 * flight and waits for them (its grace); past the grace fxr_cancelled()
 * is true for them. fxr_metadata() finds nothing on a local call, and its
 * deadline is none (INT64_MAX). */
void fxr_server_call_local(fxr_server *s, const char *path, const fxr_credentials *cred,
                           const uint8_t *req, size_t req_len, fxr_local_done done, void *ud);

/* ---------------------------------------------------------------- calls */

/* Unary and client-streaming: sends resp (packed at once: the caller keeps
 * ownership of resp) and status OK, finishing the call. */
void fxr_reply(fxr_call *call, const ProtobufCMessage *resp);

/* Finishes the call with a non-OK status and a message (printf format). */
void fxr_fail(fxr_call *call, fxs_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Streaming: sends one message and waits until it is written. Returns 0, or
 * FXS_CANCELLED when the call is gone (cancelled, deadline, disconnect, or
 * the shutdown's grace period is over); the caller then finishes it with
 * fxr_fail. */
int fxr_send(fxr_call *call, const ProtobufCMessage *msg);

/* Server-streaming: finishes with status OK after the messages sent. */
void fxr_finish(fxr_call *call);

/* Client-streaming and bidi: waits for the next request message. Returns 1
 * with *msg (free with protobuf_c_message_free_unpacked), 0 at the end of
 * the client's stream, -1 when the call is gone or the message does not
 * parse (the call is then answered INVALID_ARGUMENT/CANCELLED by the caller
 * via fxr_fail as usual). A read, not a module call: its three outcomes are
 * the exception to the 0-or-status rule. Every message's string fields are
 * checked first (rpc/wirecheck.h), as the request of a unary call is before
 * its handler runs: when one is refused, -1 too, and the caller's fxr_fail
 * with INVALID_ARGUMENT sends the reason that names the field instead of
 * its own message. When the client sends nothing for opts.stream_idle_ms,
 * the call is ended (the client gets DEADLINE_EXCEEDED naming the limit)
 * and this returns -1 with fxr_cancelled() true. */
int fxr_recv(fxr_call *call, ProtobufCMessage **msg);

/* True once the client cancelled, the deadline passed, or the shutdown's
 * grace period is over. Calls in flight when a shutdown starts get the grace
 * period to finish. */
bool fxr_cancelled(const fxr_call *call);

/* True while a FXR_UNARY_POLLER handler runs on a poller (not after
 * fxr_defer, and never for a local call). */
bool fxr_on_poller(const fxr_call *call);
/* From a FXR_UNARY_POLLER handler on a poller, before it has finished the
 * call: hands the call to the handler pool, where the same handler runs
 * again with the same request (fxr_on_poller false then); the handler
 * returns at once and touches the call no more. */
void fxr_defer(fxr_call *call);

/* True once a shutdown started: a handler of an endless stream (a watch)
 * should end it now rather than hold the drain for the whole grace. */
bool fxr_draining(const fxr_call *call);

/* The client's deadline as CLOCK_MONOTONIC nanoseconds; INT64_MAX when none. */
int64_t fxr_deadline_ns(const fxr_call *call);

/* Request metadata value for a lowercase key, copied into buf (NUL
 * terminated, truncated to len). Returns false when absent. */
bool fxr_metadata(const fxr_call *call, const char *key, char *buf, size_t len);

/* The full method path ("/inference.GRPCInferenceService/ModelInfer"). */
const char *fxr_method_path(const fxr_call *call);

/* The peer address ("ipv4:127.0.0.1:50321"), for logs. */
const char *fxr_peer(const fxr_call *call);

/* The caller, as the auth hook named it (fxp_local_principal without a
 * hook). Never NULL inside a handler; valid until the call is finished. */
const fxp_principal *fxr_principal(const fxr_call *call);

/* What the call acts on, for its audit line: fxr_set_object(call, "model
 * %s", key) gives object="model a/mlp". printf format; the last call wins;
 * quotes, backslashes and control characters become '?'. */
void fxr_set_object(fxr_call *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when the call came over TLS. */
bool fxr_call_tls(const fxr_call *call);

#ifdef __cplusplus
}
#endif
#endif
