/*
 * rpcc.h - the client side of gRPC for C programs (the `fluxion` CLI,
 * fluxion-bench, tests): the one client module that calls gRPC C core.
 *
 * A channel is thread-safe; calls on it may run from several threads at
 * once. Every call has a deadline (timeout_ms > 0) and returns a status of
 * base/status.h, the daemon's own table (gRPC's codes): FXS_OK, or the
 * server's code, or the library's (UNAVAILABLE for a refused connection,
 * DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED for an oversize message), with the
 * status message copied into the call's err. fxs_status_name() names them.
 */
#ifndef FXC_RPCC_H
#define FXC_RPCC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fxc_channel fxc_channel;

typedef struct {
    size_t max_recv_bytes; /* 0: 64 MiB */
    size_t max_send_bytes; /* 0: 64 MiB */
    /* TLS: when tls is set or any of the three files is given. tls_ca_file:
     * the PEM roots that verify the server (NULL: gRPC's default roots);
     * tls_cert_file + tls_key_file (both or neither): the client's own
     * certificate chain and key, for mutual TLS. */
    bool tls;
    const char *tls_ca_file, *tls_cert_file, *tls_key_file;
    /* A bearer token sent on EVERY call of the channel as the metadata
     * `authorization: Bearer <token>` (copied; NULL or "": none). */
    const char *token;
    /* The longest wait between reconnection attempts after the server
     * could not be reached (gRPC's default 120 s; 0: that default). A
     * daemon calling its peers keeps it short, so that a peer that comes
     * back is reached within it. */
    int max_reconnect_backoff_ms;
} fxc_channel_opts;

/* target "HOST:PORT". Returns 0 and *out, or a status code with err set:
 * FXS_INVALID_ARGUMENT for a TLS file that cannot be read or is not PEM, a
 * certificate without its key (or the reverse), a token with characters
 * that cannot go in metadata; FXS_RESOURCE_EXHAUSTED out of memory. A bad
 * or unreachable target shows up as UNAVAILABLE on the first call, a
 * server certificate that does not verify too. */
int fxc_channel_open(const char *target, const fxc_channel_opts *opts, fxc_channel **out,
                     char *err, size_t errlen);
/* fxc_channel_open without the error text: NULL on any failure. */
fxc_channel *fxc_channel_create(const char *target, const fxc_channel_opts *opts);
void fxc_channel_free(fxc_channel *ch);
/* True when the channel uses TLS. */
bool fxc_channel_tls(const fxc_channel *ch);

/* The path of a method, "/" + service->name + "/" + method (as the daemon's
 * rpc/ derives it from the same protoc-c descriptor), into path[len]. Returns
 * the method's descriptor (its request and response types), or NULL when the
 * service has no such method or path is too short. */
const ProtobufCMethodDescriptor *fxc_method_path(const ProtobufCServiceDescriptor *service,
                                                 const char *method, char *path, size_t len);

/* One metadata entry to send with a call (key lowercase). */
typedef struct { const char *key, *value; } fxc_metadata;

typedef struct {
    int64_t timeout_ms;          /* <= 0: 30 s */
    const fxc_metadata *md;      /* optional; sent after the channel's token */
    int n_md;
} fxc_call_opts;

/* Unary call. path "/pkg.Service/Method". On FXS_OK *resp is the unpacked
 * response (free with protobuf_c_message_free_unpacked). Returns the status
 * code (0 OK); err gets the status message. */
int fxc_unary(fxc_channel *ch, const char *path, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
              const fxc_call_opts *opts, char *err, size_t errlen);

/* Server-streaming call: on_msg is called for every response in order (the
 * message is freed after it returns); a non-zero return from on_msg cancels
 * the call (the result is then CANCELLED). Returns the final status. */
int fxc_server_stream(fxc_channel *ch, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc,
                      int (*on_msg)(const ProtobufCMessage *msg, void *data), void *data,
                      const fxc_call_opts *opts, char *err, size_t errlen);

/* Client-streaming call: next() is called for each request until it
 * returns NULL (end of stream) or sets *fail (cancels the call, result
 * CANCELLED); the message returned is packed and then given to
 * release() if not NULL. On FXS_OK *resp is the response. */
int fxc_client_stream(fxc_channel *ch, const char *path,
                      const ProtobufCMessage *(*next)(void *data, int *fail),
                      void (*release)(const ProtobufCMessage *msg, void *data), void *data,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      const fxc_call_opts *opts, char *err, size_t errlen);

/* Raw unary call on packed bytes (for load generators and tests of bad
 * input): sends req_len bytes, returns the response bytes in *resp (malloc,
 * caller frees) and *resp_len. */
int fxc_unary_raw(fxc_channel *ch, const char *path, const void *req, size_t req_len,
                  void **resp, size_t *resp_len, const fxc_call_opts *opts,
                  char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
