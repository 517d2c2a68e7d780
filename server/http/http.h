/*
 * http.h - the daemon's HTTP/REST port (prefix fxh_): the Open Inference
 * Protocol's HTTP form (KServe v2, as Triton serves it) and GET /metrics,
 * on libmicrohttpd. Every route is translated to one gRPC method and run by
 * fxr_server_call_local (rpc/rpc.h): the same auth hook, access classes,
 * audit, request checks, handlers, drain and counts as a gRPC call; the
 * gRPC status maps to the HTTP status (fxh_http_status). docs/http.md has
 * the routes.
 *
 * Threads: one thread per connection (libmicrohttpd's
 * MHD_USE_THREAD_PER_CONNECTION), at most opts.max_connections of them. A
 * request holds its connection's thread until its handler answers (an
 * inference may wait for a batch): with a pool of polling threads, one
 * blocked request would stall every other connection its thread polls.
 * The connection limit bounds the threads and, with the body limit, the
 * memory (max_connections * max_body_bytes at worst).
 *
 * Bodies: a Content-Length over opts.max_body_bytes is answered 413 before
 * the body is read; a chunked body is counted as it arrives and answered
 * 413 once it passes the limit. A body's bytes are also held in the rpc
 * server's in-flight limits (fxr_server_charge, the client being
 * "http:ADDR", its address) from the headers (the declared length) or as
 * they arrive (chunked) until the request is freed: past one, 429 naming
 * the limit and its flag, before the body is read when its length is
 * declared.
 *
 * TLS: with cert and key files the port serves HTTPS with them (read at
 * start, kept in memory). They are not re-read on SIGHUP: a new
 * certificate needs a restart for this port (gRPC's port reloads). Client
 * certificates are not asked for: callers authenticate with a bearer token.
 */
#ifndef FXH_HTTP_H
#define FXH_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "rpc/rpc.h"

typedef struct fxh_server fxh_server;

typedef struct {
    const char *listen;      /* "HOST:PORT"; port 0 picks a free one */
    fxr_server *rpc;         /* started; must outlive this server */
    size_t max_body_bytes;   /* a request body past it: 413. 0: 64 MiB */
    int max_connections;     /* 0: 64 */
    /* from one client address (MHD's per-IP limit): more are refused at
     * accept; 0: no limit */
    int max_connections_per_client;
    int idle_timeout_s;      /* a connection idle this long is closed; 0: 60 */
    const char *tls_cert_file, *tls_key_file; /* both or neither (PEM) */
    void (*log)(void *data, const char *level, const char *msg); /* NULL: stderr */
    void *log_data;
} fxh_opts;

/* Starts serving: 0 with the server in *out and the bound port in *port,
 * or (*out NULL, err says why) FXS_INVALID_ARGUMENT for a bad option or a
 * TLS file that cannot be read (named), FXS_FAILED_PRECONDITION when the
 * address cannot be bound or resolved. */
int fxh_start(const fxh_opts *opts, fxh_server **out, int *port, char *err, size_t errlen);

/* Stops accepting, closes every connection (waiting for the requests in
 * them: call it once the rpc server's shutdown has returned, so that no
 * local call is left in flight) and frees the server. NULL: nothing. */
void fxh_stop(fxh_server *h);

/* The HTTP status of a gRPC status (docs/http.md): OK 200,
 * INVALID_ARGUMENT/FAILED_PRECONDITION/OUT_OF_RANGE 400, NOT_FOUND 404,
 * ALREADY_EXISTS 409, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
 * RESOURCE_EXHAUSTED 429, UNIMPLEMENTED 501, UNAVAILABLE 503,
 * DEADLINE_EXCEEDED 504, anything else 500. */
int fxh_http_status(fxs_status code);

#endif
