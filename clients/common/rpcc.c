/*
 * rpcc.c - the client side of gRPC C core behind rpcc.h.
 *
 * Each call has a pluck completion queue of its own (the only waiter on it
 * is the calling thread, which plucks the tags of its own batches), so
 * calls on one channel from many threads never see each other's events and
 * need no lock of ours. No threads are created: gRPC's own pollers and the
 * plucking caller do the work.
 */
#define _GNU_SOURCE
#include "rpcc.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "fsutil.h"
#include "util.h"

#define DEFAULT_MAX_MESSAGE ((size_t)64 << 20)
#define DEFAULT_TIMEOUT_MS 30000
#define MD_ON_STACK 8

struct fxc_channel {
    grpc_channel *ch;
    bool tls;
    char *auth; /* "Bearer <token>", or NULL */
};

static int clamp_int(size_t v)
{
    return v > INT_MAX ? INT_MAX : (int)v;
}

#define MAX_TOKEN 4096

/* A token goes into a metadata value: printable ASCII, no spaces (gRPC
 * refuses other bytes at the first call with a less helpful message). */
static int check_token(const char *token, char *err, size_t errlen)
{
    size_t n = strlen(token);
    if (n > MAX_TOKEN)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "the token is %zu bytes long (at most %d)", n, MAX_TOKEN);
    for (size_t i = 0; i < n; i++)
        if (token[i] <= ' ' || token[i] > '~')
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "the token has a %s at byte %zu (a token is printable ASCII "
                            "without spaces)",
                            token[i] == ' ' ? "space" : "control or non-ASCII byte", i + 1);
    return 0;
}

/* A PEM file's content, NUL-terminated (malloc). what: "--tls-ca" etc. for
 * the message. */
static int read_pem(const char *path, const char *what, char **out, char *err, size_t errlen)
{
    void *buf = NULL;
    size_t len = 0;
    char why[512];
    if (fxu_read_file(path, &buf, &len, why, sizeof why))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: %s", what, why);
    char *text = buf;
    text[len] = '\0'; /* fxu_read_file allocates one byte more */
    if (strlen(text) != len || !strstr(text, "-----BEGIN ")) {
        free(buf);
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: %s is not a PEM file "
                        "(no -----BEGIN line)", what, path);
    }
    *out = text;
    return 0;
}

/* The channel credentials the options ask for. */
static int make_creds(const fxc_channel_opts *o, bool *tls, grpc_channel_credentials **out,
                      char *err, size_t errlen)
{
    *tls = o && (o->tls || o->tls_ca_file || o->tls_cert_file || o->tls_key_file);
    if (!*tls) {
        *out = grpc_insecure_credentials_create();
        return 0;
    }
    if (!o->tls_cert_file != !o->tls_key_file)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "a client certificate needs its key "
                        "and the reverse (give both --tls-cert and --tls-key, or neither)");
    char *ca = NULL, *cert = NULL, *key = NULL;
    int rc = 0;
    if (o->tls_ca_file)
        rc = read_pem(o->tls_ca_file, "TLS CA", &ca, err, errlen);
    if (!rc && o->tls_cert_file)
        rc = read_pem(o->tls_cert_file, "TLS client certificate", &cert, err, errlen);
    if (!rc && o->tls_key_file)
        rc = read_pem(o->tls_key_file, "TLS client key", &key, err, errlen);
    if (!rc) {
        grpc_ssl_pem_key_cert_pair pair = { .private_key = key, .cert_chain = cert };
        /* gRPC copies the PEM strings. */
        *out = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
        if (!*out)
            rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "gRPC refused the TLS settings");
    }
    free(ca);
    free(cert);
    if (key) {
        memset(key, 0, strlen(key)); /* a private key: do not leave it in freed memory */
        free(key);
    }
    return rc;
}

int fxc_channel_open(const char *target, const fxc_channel_opts *opts, fxc_channel **out,
                     char *err, size_t errlen)
{
    *out = NULL;
    if (!target || !*target)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "no server address (HOST:PORT)");
    const char *token = opts && opts->token && *opts->token ? opts->token : NULL;
    if (token && check_token(token, err, errlen))
        return FXS_INVALID_ARGUMENT;
    fxc_channel *c = calloc(1, sizeof *c);
    if (!c)
        return fxu_oom(err, errlen);
    if (token && !(c->auth = fxu_strf("Bearer %s", token))) {
        free(c);
        return fxu_oom(err, errlen);
    }
    size_t recv = opts && opts->max_recv_bytes ? opts->max_recv_bytes : DEFAULT_MAX_MESSAGE;
    size_t send = opts && opts->max_send_bytes ? opts->max_send_bytes : DEFAULT_MAX_MESSAGE;
    grpc_init();
    grpc_channel_credentials *creds = NULL;
    int rc = make_creds(opts, &c->tls, &creds, err, errlen);
    if (rc) {
        free(c->auth);
        free(c);
        grpc_shutdown();
        return rc;
    }
    int backoff = opts && opts->max_reconnect_backoff_ms > 0 ? opts->max_reconnect_backoff_ms : 0;
    grpc_arg args[4] = {
        { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
          .value.integer = clamp_int(recv) },
        { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
          .value.integer = clamp_int(send) },
        { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
          .value.integer = backoff },
        { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
          .value.integer = backoff < 1000 ? backoff : 1000 },
    };
    grpc_channel_args cargs = { .num_args = backoff ? 4 : 2, .args = args };
    c->ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    if (!c->ch) {
        free(c->auth);
        free(c);
        grpc_shutdown();
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "cannot create a channel to %s", target);
    }
    *out = c;
    return 0;
}

fxc_channel *fxc_channel_create(const char *target, const fxc_channel_opts *opts)
{
    fxc_channel *c = NULL;
    char err[256];
    return fxc_channel_open(target, opts, &c, err, sizeof err) ? NULL : c;
}

bool fxc_channel_tls(const fxc_channel *ch) { return ch && ch->tls; }

void fxc_channel_free(fxc_channel *c)
{
    if (!c)
        return;
    grpc_channel_destroy(c->ch);
    if (c->auth) {
        memset(c->auth, 0, strlen(c->auth));
        free(c->auth);
    }
    free(c);
    grpc_shutdown();
}

const ProtobufCMethodDescriptor *fxc_method_path(const ProtobufCServiceDescriptor *service,
                                                 const char *method, char *path, size_t len)
{
    const ProtobufCMethodDescriptor *m =
        service && method ? protobuf_c_service_descriptor_get_method_by_name(service, method) : NULL;
    if (!m || !path)
        return NULL;
    int n = snprintf(path, len, "/%s/%s", service->name, m->name);
    return n > 0 && (size_t)n < len ? m : NULL;
}

/* ------------------------------------------------------------ one call */

typedef struct {
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_metadata md_stack[MD_ON_STACK];
    grpc_metadata *md;
    size_t n_md;
    /* filled by the status batch */
    grpc_metadata_array init_md, trail_md;
    grpc_status_code code;
    grpc_slice details;
    int next_tag; /* tags are small integers: each batch its own */
    grpc_call_error start_err; /* the first batch gRPC refused */
} ccall;

/* Creates the call. Returns 0, or a status code with err set. */
static int call_open(fxc_channel *ch, const char *path, const fxc_call_opts *opts, ccall *cc,
                     char *err, size_t errlen)
{
    memset(cc, 0, sizeof *cc);
    if (err && errlen)
        err[0] = '\0';
    if (!ch || !path || path[0] != '/')
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpcc: bad call: %s", !ch ? "no channel"
                                                                 : "path must be /pkg.Service/Method");
    int n_md = opts ? opts->n_md : 0;
    if (n_md < 0 || (n_md > 0 && !opts->md))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpcc: bad metadata (n_md %d)", n_md);
    size_t n_all = (size_t)n_md + (ch->auth ? 1 : 0); /* the channel's token first */
    cc->md = n_all <= MD_ON_STACK ? cc->md_stack : calloc(n_all, sizeof *cc->md);
    if (!cc->md)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "rpcc: out of memory");
    size_t k = 0;
    if (ch->auth) {
        memset(&cc->md[k], 0, sizeof cc->md[k]);
        cc->md[k].key = grpc_slice_from_static_string("authorization");
        cc->md[k].value = grpc_slice_from_static_string(ch->auth); /* lives as long as ch */
        k++;
    }
    for (int i = 0; i < n_md; i++, k++) {
        if (!opts->md[i].key || !opts->md[i].value) {
            if (cc->md != cc->md_stack)
                free(cc->md);
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpcc: metadata entry %d has no key or value", i);
        }
        memset(&cc->md[k], 0, sizeof cc->md[k]);
        cc->md[k].key = grpc_slice_from_static_string(opts->md[i].key);
        cc->md[k].value = grpc_slice_from_static_string(opts->md[i].value);
    }
    cc->n_md = n_all;

    int64_t ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(ms, GPR_TIMESPAN));
    cc->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice method = grpc_slice_from_static_string(path);
    cc->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cc->cq, method,
                                        NULL, deadline, NULL);
    grpc_metadata_array_init(&cc->init_md);
    grpc_metadata_array_init(&cc->trail_md);
    cc->details = grpc_empty_slice();
    cc->code = GRPC_STATUS_UNKNOWN;
    return 0;
}

static void call_close(ccall *cc)
{
    grpc_call_unref(cc->call);
    grpc_completion_queue_shutdown(cc->cq);
    grpc_completion_queue_destroy(cc->cq);
    grpc_metadata_array_destroy(&cc->init_md);
    grpc_metadata_array_destroy(&cc->trail_md);
    grpc_slice_unref(cc->details);
    if (cc->md != cc->md_stack)
        free(cc->md);
}

/* Starts a batch; returns its tag, or NULL when gRPC refused it. */
static void *batch_start(ccall *cc, const grpc_op *ops, size_t n)
{
    void *t = (void *)(intptr_t)++cc->next_tag;
    grpc_call_error e = grpc_call_start_batch(cc->call, ops, n, t, NULL);
    if (e == GRPC_CALL_OK)
        return t;
    if (cc->start_err == GRPC_CALL_OK)
        cc->start_err = e;
    return NULL;
}

/* Closes a call that failed on our side (no status from anywhere), with
 * the reason in err. */
static int call_failed(ccall *cc, const char *path, char *err, size_t errlen)
{
    grpc_call_error e = cc->start_err;
    call_close(cc);
    if (e == GRPC_CALL_ERROR_INVALID_METADATA)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                       "rpcc: %s: metadata rejected (keys: lowercase a-z 0-9 - _ .; values: "
                       "printable ASCII)", path);
    return fxu_fail(err, errlen, FXS_INTERNAL, "rpcc: %s: the call failed locally (%s)", path,
                   grpc_call_error_to_string(e));
}

/* Waits for a batch started by batch_start (the call's deadline bounds it). */
static bool batch_wait(ccall *cc, void *t)
{
    if (!t)
        return false;
    grpc_event ev = grpc_completion_queue_pluck(cc->cq, t, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static bool batch_run(ccall *cc, const grpc_op *ops, size_t n)
{
    return batch_wait(cc, batch_start(cc, ops, n));
}

static void op_send_md(ccall *cc, grpc_op *op)
{
    memset(op, 0, sizeof *op);
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = cc->n_md;
    op->data.send_initial_metadata.metadata = cc->md;
}

static void op_simple(grpc_op *op, grpc_op_type type)
{
    memset(op, 0, sizeof *op);
    op->op = type;
}

static void op_send_msg(grpc_op *op, grpc_byte_buffer *bb)
{
    op_simple(op, GRPC_OP_SEND_MESSAGE);
    op->data.send_message.send_message = bb;
}

static void op_recv_msg(grpc_op *op, grpc_byte_buffer **bb)
{
    op_simple(op, GRPC_OP_RECV_MESSAGE);
    op->data.recv_message.recv_message = bb;
}

/* Adds RECV_INITIAL_METADATA and RECV_STATUS_ON_CLIENT; returns 2. */
static size_t op_recv_status(ccall *cc, grpc_op *ops)
{
    op_simple(&ops[0], GRPC_OP_RECV_INITIAL_METADATA);
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &cc->init_md;
    op_simple(&ops[1], GRPC_OP_RECV_STATUS_ON_CLIENT);
    ops[1].data.recv_status_on_client.trailing_metadata = &cc->trail_md;
    ops[1].data.recv_status_on_client.status = &cc->code;
    ops[1].data.recv_status_on_client.status_details = &cc->details;
    return 2;
}

/* The call's final status, its message copied into err; closes the call. */
static int call_result(ccall *cc, char *err, size_t errlen)
{
    int code = (int)cc->code;
    if (err && errlen) {
        size_t n = GRPC_SLICE_LENGTH(cc->details);
        if (n > errlen - 1)
            n = errlen - 1;
        memcpy(err, GRPC_SLICE_START_PTR(cc->details), n);
        err[n] = '\0';
    }
    call_close(cc);
    return code;
}

static grpc_byte_buffer *pack_message(const ProtobufCMessage *msg)
{
    grpc_slice slice = grpc_slice_malloc(protobuf_c_message_get_packed_size(msg));
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* The bytes of a received buffer as one slice (the caller unrefs it). */
static grpc_slice buffer_bytes(grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    grpc_slice slice = grpc_empty_slice();
    if (grpc_byte_buffer_reader_init(&reader, bb)) {
        slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
    }
    return slice;
}

/* Unpacks a received buffer (consumed) into *out; a status code. */
static int unpack_reply(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                        ProtobufCMessage **out, char *err, size_t errlen)
{
    if (!bb)
        return fxu_fail(err, errlen, FXS_INTERNAL, "rpcc: the server sent OK without a response");
    grpc_slice slice = buffer_bytes(bb);
    grpc_byte_buffer_destroy(bb);
    *out = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(slice),
                                     GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    if (!*out)
        return fxu_fail(err, errlen, FXS_INTERNAL, "rpcc: cannot parse the response as %s", desc->name);
    return 0;
}

/* One request out, at most one response back: the whole call is one
 * batch. On OK, *resp_bb is the response (or NULL when none came). */
static int unary_call(fxc_channel *ch, const char *path, grpc_byte_buffer *req,
                      grpc_byte_buffer **resp_bb, const fxc_call_opts *opts, char *err,
                      size_t errlen)
{
    ccall cc;
    *resp_bb = NULL;
    int rc = call_open(ch, path, opts, &cc, err, errlen);
    if (rc != 0) {
        grpc_byte_buffer_destroy(req);
        return rc;
    }
    grpc_op ops[6];
    op_send_md(&cc, &ops[0]);
    op_send_msg(&ops[1], req);
    op_simple(&ops[2], GRPC_OP_SEND_CLOSE_FROM_CLIENT);
    op_recv_msg(&ops[3], resp_bb);
    size_t n = 4 + op_recv_status(&cc, &ops[4]);
    bool ok = batch_run(&cc, ops, n);
    grpc_byte_buffer_destroy(req);
    if (!ok) {
        if (*resp_bb)
            grpc_byte_buffer_destroy(*resp_bb);
        *resp_bb = NULL;
        return call_failed(&cc, path, err, errlen);
    }
    rc = call_result(&cc, err, errlen);
    if (rc != 0 && *resp_bb) {
        grpc_byte_buffer_destroy(*resp_bb);
        *resp_bb = NULL;
    }
    return rc;
}

int fxc_unary(fxc_channel *ch, const char *path, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
              const fxc_call_opts *opts, char *err, size_t errlen)
{
    if (resp)
        *resp = NULL;
    if (!req || !resp_desc || !resp)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpcc: fxc_unary needs a request, a response type and "
                                       "a place for the response");
    grpc_byte_buffer *resp_bb;
    int rc = unary_call(ch, path, pack_message(req), &resp_bb, opts, err, errlen);
    if (rc != 0)
        return rc;
    return unpack_reply(resp_bb, resp_desc, resp, err, errlen);
}

int fxc_unary_raw(fxc_channel *ch, const char *path, const void *req, size_t req_len,
                  void **resp, size_t *resp_len, const fxc_call_opts *opts, char *err,
                  size_t errlen)
{
    if (resp)
        *resp = NULL;
    if (resp_len)
        *resp_len = 0;
    if ((!req && req_len) || !resp || !resp_len)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpcc: fxc_unary_raw needs request bytes and a place "
                                       "for the response");
    grpc_slice slice = grpc_slice_from_copied_buffer(req, req_len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    grpc_byte_buffer *resp_bb;
    int rc = unary_call(ch, path, bb, &resp_bb, opts, err, errlen);
    if (rc != 0)
        return rc;
    if (!resp_bb)
        return fxu_fail(err, errlen, FXS_INTERNAL, "rpcc: the server sent OK without a response");
    grpc_slice out = buffer_bytes(resp_bb);
    grpc_byte_buffer_destroy(resp_bb);
    size_t n = GRPC_SLICE_LENGTH(out);
    *resp = malloc(n ? n : 1);
    if (*resp) {
        memcpy(*resp, GRPC_SLICE_START_PTR(out), n);
        *resp_len = n;
    }
    grpc_slice_unref(out);
    return *resp ? 0 : fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "rpcc: out of memory for a %zu-byte response", n);
}

int fxc_server_stream(fxc_channel *ch, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc,
                      int (*on_msg)(const ProtobufCMessage *msg, void *data), void *data,
                      const fxc_call_opts *opts, char *err, size_t errlen)
{
    if (!req || !resp_desc || !on_msg)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpcc: fxc_server_stream needs a request, a response "
                                       "type and a callback");
    ccall cc;
    int rc = call_open(ch, path, opts, &cc, err, errlen);
    if (rc != 0)
        return rc;
    grpc_byte_buffer *req_bb = pack_message(req);
    grpc_op ops[3];
    op_send_md(&cc, &ops[0]);
    op_send_msg(&ops[1], req_bb);
    op_simple(&ops[2], GRPC_OP_SEND_CLOSE_FROM_CLIENT);
    void *sent = batch_start(&cc, ops, 3);
    size_t n = op_recv_status(&cc, ops);
    void *status = batch_start(&cc, ops, n);
    if (!sent || !status)
        grpc_call_cancel(cc.call, NULL);
    bool cancelled = false, bad_reply = false;
    while (sent && status) {
        grpc_byte_buffer *bb = NULL;
        grpc_op rop;
        op_recv_msg(&rop, &bb);
        if (!batch_run(&cc, &rop, 1) || !bb)
            break;
        ProtobufCMessage *msg = NULL;
        if (unpack_reply(bb, resp_desc, &msg, err, errlen) != 0) {
            bad_reply = true;
        } else {
            cancelled = on_msg(msg, data) != 0;
            protobuf_c_message_free_unpacked(msg, NULL);
        }
        if (cancelled || bad_reply) {
            grpc_call_cancel(cc.call, NULL);
            break;
        }
    }
    batch_wait(&cc, sent);
    grpc_byte_buffer_destroy(req_bb);
    if (!batch_wait(&cc, status) || cc.start_err != GRPC_CALL_OK)
        return call_failed(&cc, path, err, errlen);
    if (bad_reply) { /* keep unpack_reply's message, not "Cancelled" */
        call_close(&cc);
        return FXS_INTERNAL;
    }
    return call_result(&cc, err, errlen);
}

/* Sends the client's stream: next() until NULL. Returns false when the
 * caller asked to fail (the call is then cancelled). */
static bool send_stream(ccall *cc, const ProtobufCMessage *(*next)(void *data, int *fail),
                        void (*release)(const ProtobufCMessage *msg, void *data), void *data)
{
    for (;;) {
        int fail = 0;
        const ProtobufCMessage *msg = next(data, &fail);
        if (fail) {
            if (msg && release)
                release(msg, data);
            grpc_call_cancel(cc->call, NULL);
            return false;
        }
        if (!msg)
            break;
        grpc_byte_buffer *bb = pack_message(msg);
        if (release)
            release(msg, data);
        grpc_op op;
        op_send_msg(&op, bb);
        bool ok = batch_run(cc, &op, 1);
        grpc_byte_buffer_destroy(bb);
        if (!ok) /* the server has finished already: its status says why */
            return true;
    }
    grpc_op op;
    op_simple(&op, GRPC_OP_SEND_CLOSE_FROM_CLIENT);
    batch_run(cc, &op, 1);
    return true;
}

int fxc_client_stream(fxc_channel *ch, const char *path,
                      const ProtobufCMessage *(*next)(void *data, int *fail),
                      void (*release)(const ProtobufCMessage *msg, void *data), void *data,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      const fxc_call_opts *opts, char *err, size_t errlen)
{
    if (resp)
        *resp = NULL;
    if (!next || !resp_desc || !resp)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpcc: fxc_client_stream needs a next callback, a "
                                       "response type and a place for the response");
    ccall cc;
    int rc = call_open(ch, path, opts, &cc, err, errlen);
    if (rc != 0)
        return rc;
    grpc_byte_buffer *resp_bb = NULL;
    grpc_op ops[3];
    op_send_md(&cc, &ops[0]);
    void *md_sent = batch_start(&cc, ops, 1);
    op_recv_msg(&ops[0], &resp_bb);
    size_t n = 1 + op_recv_status(&cc, &ops[1]);
    void *status = batch_start(&cc, ops, n);
    if (md_sent && status)
        send_stream(&cc, next, release, data);
    else
        grpc_call_cancel(cc.call, NULL);
    batch_wait(&cc, md_sent);
    bool ok = batch_wait(&cc, status);
    if (!ok || cc.start_err != GRPC_CALL_OK) {
        if (resp_bb)
            grpc_byte_buffer_destroy(resp_bb);
        return call_failed(&cc, path, err, errlen);
    }
    rc = call_result(&cc, err, errlen);
    if (rc != 0) {
        if (resp_bb)
            grpc_byte_buffer_destroy(resp_bb);
        return rc;
    }
    return unpack_reply(resp_bb, resp_desc, resp, err, errlen);
}
