/*
 * rpc.c - the server side of gRPC C core behind rpc.h.
 *
 * One completion queue, polled by opts->poll_threads threads. Everything
 * that completes on it carries a `tag` whose callback runs on the poller:
 * accepted calls, each call's batches, the server's shutdown notice.
 * Pollers never run handlers: unary and server-streaming calls go to a pool
 * of handler threads; client-streaming and bidi calls get a thread each.
 *
 * A call is refcounted: one reference for its owner (the handler, dropped
 * when it finishes the call with fxr_reply/fxr_fail/fxr_finish) and one per
 * batch started on it, so its state is freed only after gRPC has completed
 * every batch. Batches on one call are started under the call's mutex,
 * because a deferred reply may come from any thread.
 */
#define _GNU_SOURCE
#include "rpc/rpc.h"
#include "rpc/wirecheck.h"
#include "base/util.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

#define DEFAULT_POLL_THREADS 2
#define DEFAULT_HANDLER_THREADS 8
#define DEFAULT_MAX_MESSAGE ((size_t)64 << 20)
#define MAX_THREADS 1024
/* Accepts kept posted per poller, so a burst of new calls does not wait for
 * a poller to re-post one at a time. */
#define REQUESTS_PER_POLLER 4

/* What a completion-queue event points at. */
typedef struct tag tag;
struct tag {
    void (*done)(tag *t, bool ok);
};

typedef struct {
    char *path;
    size_t path_len;
    const ProtobufCMessageDescriptor *input;
    fxr_kind kind;
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

    const route *route;
    ProtobufCMessage *req;
    char *refused; /* why fxr_recv refused a message's strings (wirecheck.h) */
    char *path;
    char *peer; /* gpr_malloc'd by gRPC */
    int64_t deadline_ns;
    fxr_call *next; /* handler pool queue */
};

enum { S_CREATED, S_STARTED, S_SHUTTING, S_STOPPED };

struct fxr_server {
    fxr_server_opts opts;
    char *listen;
    grpc_server *srv;
    grpc_completion_queue *cq;
    int port;
    route *routes;
    int n_routes, cap_routes;

    pthread_mutex_t mu; /* state and the counters the shutdown waits on */
    pthread_cond_t cv;
    int state;
    atomic_bool shutting;    /* no new calls; calls in flight get the grace period */
    atomic_bool past_grace;  /* grace over: calls in flight are cancelled */
    int pending_requests; /* request_call posted, not completed */
    int live_calls;       /* accepted, state not yet freed */
    int stream_threads;   /* client-stream/bidi handler threads alive */
    bool shutdown_notified;
    tag shutdown_tag;
    atomic_uint_fast64_t in_flight, total;

    pthread_t *pollers;
    int n_pollers;

    pthread_mutex_t q_mu; /* the handler pool */
    pthread_cond_t q_cv;
    fxr_call *q_head, *q_tail;
    bool q_stop;
    pthread_t *workers;
    int n_workers;
};

/* ------------------------------------------------------------- helpers */

static void log_stderr(void *data, const char *level, const char *msg)
{
    (void)data;
    fprintf(stderr, "fluxiond %s: %s\n", level, msg);
}

static void slog(const fxr_server *s, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void slog(const fxr_server *s, const char *level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->opts.log(s->opts.log_data, level, msg);
}

/* gRPC's clocks need not share CLOCK_MONOTONIC's origin: carry the time
 * left over to our clock instead of the absolute value. */
static int64_t deadline_to_mono_ns(gpr_timespec d)
{
    if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec left = gpr_time_sub(gpr_convert_clock_type(d, GPR_CLOCK_MONOTONIC),
                                     gpr_now(GPR_CLOCK_MONOTONIC));
    int64_t left_ns = left.tv_sec * 1000000000 + left.tv_nsec;
    return (int64_t)fxu_mono_ns() + left_ns;
}

/* Packs msg into a new byte buffer (NULL for a NULL msg). */
static grpc_byte_buffer *pack_message(const ProtobufCMessage *msg)
{
    if (!msg)
        return NULL;
    grpc_slice slice = grpc_slice_malloc(protobuf_c_message_get_packed_size(msg));
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* Unpacks a received buffer (consumed) once its string fields pass
 * fxr_wirecheck; NULL when it does not parse (refused[0] == 0) or a string
 * is refused (why, naming the field, in refused). */
static ProtobufCMessage *unpack_message(const ProtobufCMessageDescriptor *desc,
                                        grpc_byte_buffer *bb, char *refused, size_t len)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *msg = NULL;
    refused[0] = 0;
    if (grpc_byte_buffer_reader_init(&reader, bb)) {
        grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
        bool malformed = false; /* then unpack fails too: see wirecheck.h */
        if (fxr_wirecheck(desc, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice), &malformed,
                          refused, len) == 0 && !malformed)
            msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(slice),
                                            GRPC_SLICE_START_PTR(slice));
        grpc_slice_unref(slice);
        grpc_byte_buffer_reader_destroy(&reader);
    }
    grpc_byte_buffer_destroy(bb);
    return msg;
}

static void log_unpack_failure(const fxr_call *c, const char *refused)
{
    if (refused[0])
        slog(c->s, "warn", "rpc: %s: refused a %s from %s: %s", c->path, c->route->input->name,
             c->peer, refused);
    else
        slog(c->s, "warn", "rpc: %s: cannot parse %s from %s", c->path, c->route->input->name,
             c->peer);
}

static void wake_shutdown(fxr_server *s, int *counter, int delta)
{
    pthread_mutex_lock(&s->mu);
    *counter += delta;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------- call state */

static fxr_call *call_new(fxr_server *s)
{
    fxr_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->refs = 1;
    c->deadline_ns = INT64_MAX;
    return c;
}

static void call_free(fxr_call *c)
{
    fxr_server *s = c->s;
    bool counted = c->counted;
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->recv_bb)
        grpc_byte_buffer_destroy(c->recv_bb);
    if (c->req)
        protobuf_c_message_free_unpacked(c->req, NULL);
    free(c->path);
    free(c->refused);
    gpr_free(c->peer);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
    if (counted)
        wake_shutdown(s, &s->live_calls, -1);
}

static void call_release(fxr_call *c)
{
    pthread_mutex_lock(&c->mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        call_free(c);
}

/* Starts a batch under c->mu (held by the caller), taking a reference for
 * it. Returns false (and takes none) when gRPC refuses the batch. */
static bool call_batch(fxr_call *c, const grpc_op *ops, size_t n, tag *t)
{
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
    if (e == GRPC_CALL_OK)
        return true;
    c->refs--;
    slog(c->s, "error", "rpc: %s: cannot start a batch: %s", c->path,
         grpc_call_error_to_string(e));
    return false;
}

/* Appends SEND_INITIAL_METADATA to ops when no send has carried it yet. */
static size_t add_initial_metadata(fxr_call *c, grpc_op *ops)
{
    if (c->md_sent)
        return 0;
    c->md_sent = true;
    memset(ops, 0, sizeof *ops);
    ops->op = GRPC_OP_SEND_INITIAL_METADATA;
    return 1;
}

static void on_status_sent(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, status_tag);
    pthread_mutex_lock(&c->mu);
    if (c->status_bb)
        grpc_byte_buffer_destroy(c->status_bb);
    c->status_bb = NULL;
    grpc_slice_unref(c->status_msg);
    pthread_mutex_unlock(&c->mu);
    call_release(c);
}

/* Finishes the call: sends resp (may be NULL) and the status, unless the
 * call is gone, then drops the owner's reference. Every way of finishing a
 * call ends here. */
static void call_finish(fxr_call *c, const ProtobufCMessage *resp, fxs_status code,
                        const char *msg)
{
    fxr_server *s = c->s;
    /* packed before locking: a big response must not hold up the pollers */
    grpc_byte_buffer *bb = atomic_load(&c->gone) ? NULL : pack_message(resp);
    pthread_mutex_lock(&c->mu);
    if (c->finished) {
        pthread_mutex_unlock(&c->mu);
        if (bb)
            grpc_byte_buffer_destroy(bb);
        slog(s, "error", "rpc: %s finished twice (ignored)", c->path ? c->path : "?");
        return;
    }
    c->finished = true;
    while (c->sending) /* a stream's last fxr_send from another thread */
        pthread_cond_wait(&c->cv, &c->mu);
    if (atomic_load(&c->gone) && bb) {
        grpc_byte_buffer_destroy(bb);
    } else if (!atomic_load(&c->gone)) {
        grpc_op ops[3];
        size_t n = add_initial_metadata(c, ops);
        c->status_bb = bb;
        if (c->status_bb) {
            memset(&ops[n], 0, sizeof ops[n]);
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n++].data.send_message.send_message = c->status_bb;
        }
        c->status_msg = grpc_slice_from_copied_string(msg ? msg : "");
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)code;
        ops[n++].data.send_status_from_server.status_details = &c->status_msg;
        c->status_tag.done = on_status_sent;
        if (!call_batch(c, ops, n, &c->status_tag)) {
            if (c->status_bb)
                grpc_byte_buffer_destroy(c->status_bb);
            c->status_bb = NULL;
            grpc_slice_unref(c->status_msg);
        }
    }
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_sub(&s->in_flight, 1);
    if (atomic_load(&s->shutting)) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    call_release(c);
}

/* ------------------------------------------------------------ the API */

void fxr_reply(fxr_call *call, const ProtobufCMessage *resp)
{
    call_finish(call, resp, FXS_OK, NULL);
}

void fxr_fail(fxr_call *call, fxs_status code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code == FXS_OK) { /* a failure must not read as success */
        fxr_server *s = call->s;
        slog(s, "error", "rpc: %s: fxr_fail with OK turned into UNKNOWN", call->path);
        code = FXS_UNKNOWN;
    }
    if (code == FXS_INVALID_ARGUMENT && call->refused) /* the field at fault, not "cannot parse" */
        snprintf(msg, sizeof msg, "%s", call->refused);
    call_finish(call, NULL, code, msg);
}

void fxr_finish(fxr_call *call)
{
    call_finish(call, NULL, FXS_OK, NULL);
}

static void on_sent(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, send_tag);
    pthread_mutex_lock(&c->mu);
    if (c->send_bb)
        grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    c->sending = false;
    c->send_ok = ok;
    if (!ok) /* before the close notice, maybe: fxr_cancelled must agree */
        atomic_store(&c->gone, true);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    call_release(c);
}

/* Sends bb, or the initial metadata alone when bb is NULL, and waits until
 * it is written; c->mu held. Takes bb. Returns 0, or -1 when the call is
 * gone. */
static int send_locked(fxr_call *c, grpc_byte_buffer *bb)
{
    while (c->sending)
        pthread_cond_wait(&c->cv, &c->mu);
    if (c->finished || atomic_load(&c->gone) || (bb && atomic_load(&c->s->past_grace))) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return -1;
    }
    grpc_op ops[2];
    size_t n = add_initial_metadata(c, ops);
    if (bb) {
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
    }
    if (n == 0)
        return 0;
    c->send_bb = bb;
    c->send_tag.done = on_sent;
    c->sending = true;
    if (!call_batch(c, ops, n, &c->send_tag)) {
        c->sending = false;
        if (bb)
            grpc_byte_buffer_destroy(bb);
        c->send_bb = NULL;
        return -1;
    }
    while (c->sending)
        pthread_cond_wait(&c->cv, &c->mu);
    return c->send_ok ? 0 : -1;
}

int fxr_send(fxr_call *c, const ProtobufCMessage *msg)
{
    if (!msg)
        return -1;
    grpc_byte_buffer *bb = pack_message(msg);
    pthread_mutex_lock(&c->mu);
    int rc = send_locked(c, bb);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void on_stream_recv(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, recv_tag);
    pthread_mutex_lock(&c->mu);
    c->receiving = false;
    c->recv_ok = ok;
    if (!ok) /* before the close notice, maybe: fxr_cancelled must agree */
        atomic_store(&c->gone, true);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    call_release(c);
}

int fxr_recv(fxr_call *c, ProtobufCMessage **msg)
{
    *msg = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->recv_end) {
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    if (c->finished || c->receiving || atomic_load(&c->gone)) {
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    grpc_op op = { .op = GRPC_OP_RECV_MESSAGE };
    op.data.recv_message.recv_message = &c->recv_bb;
    c->recv_tag.done = on_stream_recv;
    c->receiving = true;
    if (!call_batch(c, &op, 1, &c->recv_tag)) {
        c->receiving = false;
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    while (c->receiving)
        pthread_cond_wait(&c->cv, &c->mu);
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    bool ok = c->recv_ok;
    /* A client's cancel ends its stream too, and the close notice that
     * tells them apart may come later. Sending our initial metadata fails
     * on a reset stream: a failed upload must not look complete. */
    if (ok && !bb && !c->md_sent && send_locked(c, NULL) != 0)
        ok = false;
    if (ok && !bb)
        c->recv_end = true;
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return -1;
    }
    if (!bb)
        return 0;
    char refused[FXS_ERRLEN];
    *msg = unpack_message(c->route->input, bb, refused, sizeof refused);
    if (!*msg) {
        log_unpack_failure(c, refused);
        if (refused[0] && !c->refused)
            c->refused = strdup(refused); /* for the handler's fxr_fail (rpc.h) */
        return -1;
    }
    return 1;
}

/* The deadline is gRPC's to enforce: it cancels the call then (the client
 * sees DEADLINE_EXCEEDED) and RECV_CLOSE_ON_SERVER sets `gone`. Checking
 * the clock here as well would let a handler's own status race it. */
bool fxr_cancelled(const fxr_call *c)
{
    return atomic_load(&c->gone) || atomic_load(&c->s->past_grace);
}

bool fxr_draining(const fxr_call *c)
{
    return atomic_load(&c->s->shutting);
}

int64_t fxr_deadline_ns(const fxr_call *c)
{
    return c->deadline_ns;
}

bool fxr_metadata(const fxr_call *c, const char *key, char *buf, size_t len)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *m = &c->md.metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) != klen ||
            memcmp(GRPC_SLICE_START_PTR(m->key), key, klen) != 0)
            continue;
        if (len > 0) {
            size_t n = GRPC_SLICE_LENGTH(m->value);
            if (n > len - 1)
                n = len - 1;
            memcpy(buf, GRPC_SLICE_START_PTR(m->value), n);
            buf[n] = '\0';
        }
        return true;
    }
    return false;
}

const char *fxr_method_path(const fxr_call *c)
{
    return c->path;
}

const char *fxr_peer(const fxr_call *c)
{
    return c->peer ? c->peer : "unknown";
}

uint64_t fxr_server_in_flight(const fxr_server *s)
{
    return atomic_load(&s->in_flight);
}

uint64_t fxr_server_total_calls(const fxr_server *s)
{
    return atomic_load(&s->total);
}

/* ------------------------------------------------------------ dispatch */

static void on_close(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, close_tag);
    pthread_mutex_lock(&c->mu);
    if (!ok || c->close_cancelled)
        atomic_store(&c->gone, true);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    call_release(c);
}

static void enqueue_handler(fxr_server *s, fxr_call *c)
{
    pthread_mutex_lock(&s->q_mu);
    c->next = NULL;
    if (s->q_tail)
        s->q_tail->next = c;
    else
        s->q_head = c;
    s->q_tail = c;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
}

/* On a handler thread: parse the request (here, not on a poller: it may be
 * big) and run the handler. */
static void run_queued(fxr_call *c)
{
    char refused[FXS_ERRLEN];
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (atomic_load(&c->gone)) { /* timed out or cancelled while queued */
        grpc_byte_buffer_destroy(bb);
        call_finish(c, NULL, FXS_CANCELLED, NULL);
    } else if (!(c->req = unpack_message(c->route->input, bb, refused, sizeof refused))) {
        log_unpack_failure(c, refused);
        fxr_fail(c, FXS_INVALID_ARGUMENT, "%s%s", refused[0] ? "" : "cannot parse ",
                 refused[0] ? refused : c->route->input->name);
    } else {
        c->route->fn(c, c->req, c->route->data); /* may free c */
    }
}

static void *worker_main(void *arg)
{
    fxr_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->q_mu);
        while (!s->q_head && !s->q_stop)
            pthread_cond_wait(&s->q_cv, &s->q_mu);
        fxr_call *c = s->q_head;
        if (!c) {
            pthread_mutex_unlock(&s->q_mu);
            return NULL;
        }
        s->q_head = c->next;
        if (!s->q_head)
            s->q_tail = NULL;
        pthread_mutex_unlock(&s->q_mu);
        run_queued(c);
    }
}

static void start_stream_thread(fxr_server *s, fxr_call *c);

/* The request message of a unary or server-streaming call arrived (on a
 * poller): hand the call to the pool (unary) or a thread of its own (server
 * stream), c->recv_bb with it. */
static void on_unary_request(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, recv_tag);
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer *bb = c->recv_bb;
    pthread_mutex_unlock(&c->mu);
    if (!ok || !bb) {
        c->recv_bb = NULL;
        if (bb)
            grpc_byte_buffer_destroy(bb);
    }
    if (!ok) {
        /* gRPC cancelled the call (an oversize message, the client went
         * away) and told the client why: only release it. */
        atomic_store(&c->gone, true);
        call_finish(c, NULL, FXS_CANCELLED, NULL);
    } else if (!bb) {
        fxr_fail(c, FXS_INVALID_ARGUMENT, "%s: no request message", c->path);
    } else if (c->route->kind == FXR_SERVER_STREAM) {
        start_stream_thread(c->s, c);
    } else {
        enqueue_handler(c->s, c);
    }
    call_release(c);
}

/* A streaming call's thread: client-streaming and bidi handlers read their
 * requests themselves; a server-streaming one gets its request parsed here.
 * Streams may last as long as a training job: they never hold a thread of
 * the handler pool, which stays free for unary calls. */
static void *stream_main(void *arg)
{
    fxr_call *c = arg;
    fxr_server *s = c->s;
    if (c->route->kind == FXR_SERVER_STREAM)
        run_queued(c); /* may free c */
    else
        c->route->fn(c, NULL, c->route->data); /* may free c */
    wake_shutdown(s, &s->stream_threads, -1);
    return NULL;
}

static void start_stream_thread(fxr_server *s, fxr_call *c)
{
    pthread_attr_t attr;
    pthread_t th;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    wake_shutdown(s, &s->stream_threads, +1);
    int e = pthread_create(&th, &attr, stream_main, c);
    pthread_attr_destroy(&attr);
    if (e != 0) {
        wake_shutdown(s, &s->stream_threads, -1);
        slog(s, "error", "rpc: %s: cannot start a handler thread: %s", c->path, strerror(e));
        fxr_fail(c, FXS_RESOURCE_EXHAUSTED, "server cannot start a thread for %s", c->path);
    }
}

static const route *find_route(const fxr_server *s, grpc_slice method)
{
    size_t len = GRPC_SLICE_LENGTH(method);
    for (int i = 0; i < s->n_routes; i++)
        if (s->routes[i].path_len == len &&
            memcmp(s->routes[i].path, GRPC_SLICE_START_PTR(method), len) == 0)
            return &s->routes[i];
    return NULL;
}

/* A new call was accepted (on a poller): arm the close notice and route it. */
static void call_start(fxr_server *s, fxr_call *c)
{
    c->path = strndup((const char *)GRPC_SLICE_START_PTR(c->details.method),
                      GRPC_SLICE_LENGTH(c->details.method));
    for (char *p = c->path; p && *p; p++) /* it goes into one-line logs */
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    c->peer = grpc_call_get_peer(c->call);
    c->deadline_ns = deadline_to_mono_ns(c->details.deadline);
    c->route = find_route(s, c->details.method);

    pthread_mutex_lock(&c->mu);
    grpc_op op = { .op = GRPC_OP_RECV_CLOSE_ON_SERVER };
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    c->close_tag.done = on_close;
    call_batch(c, &op, 1, &c->close_tag);
    pthread_mutex_unlock(&c->mu);

    if (!c->path) {
        fxr_fail(c, FXS_RESOURCE_EXHAUSTED, "server out of memory");
    } else if (!c->route) {
        slog(s, "warn", "rpc: unknown method %s from %s", c->path, fxr_peer(c));
        fxr_fail(c, FXS_UNIMPLEMENTED, "unknown method %s", c->path);
    } else if (!c->route->fn) {
        slog(s, "warn", "rpc: method %s is not implemented (from %s)", c->path, fxr_peer(c));
        fxr_fail(c, FXS_UNIMPLEMENTED, "method %s is not implemented", c->path);
    } else if (c->route->kind == FXR_UNARY || c->route->kind == FXR_SERVER_STREAM) {
        pthread_mutex_lock(&c->mu);
        grpc_op rop = { .op = GRPC_OP_RECV_MESSAGE };
        rop.data.recv_message.recv_message = &c->recv_bb;
        c->recv_tag.done = on_unary_request;
        bool started = call_batch(c, &rop, 1, &c->recv_tag);
        pthread_mutex_unlock(&c->mu);
        if (!started)
            fxr_fail(c, FXS_INTERNAL, "server cannot read the request of %s", c->path);
    } else {
        start_stream_thread(s, c);
    }
}

static void post_request(fxr_server *s);

static void on_accept(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, accept_tag);
    fxr_server *s = c->s;
    if (!ok) { /* the server is shutting down */
        call_free(c);
        wake_shutdown(s, &s->pending_requests, -1);
        return;
    }
    post_request(s);
    pthread_mutex_lock(&s->mu);
    s->pending_requests--;
    s->live_calls++;
    pthread_mutex_unlock(&s->mu);
    c->counted = true;
    atomic_fetch_add(&s->in_flight, 1);
    atomic_fetch_add(&s->total, 1);
    call_start(s, c);
}

/* Keeps one more grpc_server_request_call outstanding (the generic kind:
 * it also sees unknown methods, which we answer UNIMPLEMENTED). */
static void post_request(fxr_server *s)
{
    fxr_call *c = call_new(s);
    if (!c) {
        slog(s, "error", "rpc: out of memory accepting a call");
        return;
    }
    c->accept_tag.done = on_accept;
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->shutting)) {
        pthread_mutex_unlock(&s->mu);
        call_free(c);
        return;
    }
    s->pending_requests++;
    pthread_mutex_unlock(&s->mu);
    grpc_call_error e = grpc_server_request_call(s->srv, &c->call, &c->details, &c->md, s->cq,
                                                 s->cq, &c->accept_tag);
    if (e != GRPC_CALL_OK) {
        slog(s, "error", "rpc: cannot accept calls: %s", grpc_call_error_to_string(e));
        call_free(c);
        wake_shutdown(s, &s->pending_requests, -1);
    }
}

static void *poller_main(void *arg)
{
    fxr_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type == GRPC_OP_COMPLETE) {
            tag *t = ev.tag;
            t->done(t, ev.success != 0);
        }
    }
}

static void on_server_shutdown(tag *t, bool ok)
{
    fxr_server *s = container_of(t, fxr_server, shutdown_tag);
    pthread_mutex_lock(&s->mu);
    s->shutdown_notified = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ lifecycle */

static int check_opts(const fxr_server_opts *o, char *err, size_t errlen)
{
    if (!o || !o->listen || !*o->listen) {
        snprintf(err, errlen, "rpc: no listen address");
        return -1;
    }
    /* gRPC quietly binds a port over 65535 modulo 65536 */
    const char *colon = strrchr(o->listen, ':');
    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
        (strlen(colon + 1) > 5 || atoi(colon + 1) > 65535)) {
        snprintf(err, errlen, "rpc: port %s in %s is not in 0..65535", colon + 1, o->listen);
        return -1;
    }
    if (o->poll_threads < 0 || o->poll_threads > MAX_THREADS) {
        snprintf(err, errlen, "rpc: poll_threads %d is not in 0..%d", o->poll_threads,
                 MAX_THREADS);
        return -1;
    }
    if (o->handler_threads < 0 || o->handler_threads > MAX_THREADS) {
        snprintf(err, errlen, "rpc: handler_threads %d is not in 0..%d", o->handler_threads,
                 MAX_THREADS);
        return -1;
    }
    if (o->max_recv_bytes > INT_MAX || o->max_send_bytes > INT_MAX) {
        snprintf(err, errlen, "rpc: max message size %zu is over gRPC's limit of %d bytes",
                 o->max_recv_bytes > INT_MAX ? o->max_recv_bytes : o->max_send_bytes, INT_MAX);
        return -1;
    }
    return 0;
}

fxr_server *fxr_server_create(const fxr_server_opts *opts, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (check_opts(opts, err, errlen) != 0)
        return NULL;
    fxr_server *s = calloc(1, sizeof *s);
    if (!s || !(s->listen = strdup(opts->listen))) {
        free(s);
        snprintf(err, errlen, "rpc: out of memory");
        return NULL;
    }
    s->opts = *opts;
    s->opts.listen = s->listen;
    if (!s->opts.poll_threads)
        s->opts.poll_threads = DEFAULT_POLL_THREADS;
    if (!s->opts.handler_threads)
        s->opts.handler_threads = DEFAULT_HANDLER_THREADS;
    if (!s->opts.max_recv_bytes)
        s->opts.max_recv_bytes = DEFAULT_MAX_MESSAGE;
    if (!s->opts.max_send_bytes)
        s->opts.max_send_bytes = DEFAULT_MAX_MESSAGE;
    if (!s->opts.log)
        s->opts.log = log_stderr;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cv, NULL);
    s->shutdown_tag.done = on_server_shutdown;

    grpc_init();
    grpc_arg args[] = {
        { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
          .value.integer = (int)s->opts.max_recv_bytes },
        { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
          .value.integer = (int)s->opts.max_send_bytes },
        /* a port already taken is an error, not a port to share */
        { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT,
          .value.integer = 0 },
    };
    grpc_channel_args cargs = { .num_args = sizeof args / sizeof *args, .args = args };
    s->srv = grpc_server_create(&cargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->srv, s->cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    s->port = grpc_server_add_http2_port(s->srv, s->listen, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        snprintf(err, errlen, "rpc: cannot listen on %s (bad address or in use)", s->listen);
        fxr_server_destroy(s);
        return NULL;
    }
    return s;
}

static int add_route(fxr_server *s, const ProtobufCServiceDescriptor *desc,
                     const ProtobufCMethodDescriptor *m)
{
    if (s->n_routes == s->cap_routes) {
        int cap = s->cap_routes ? 2 * s->cap_routes : 16;
        route *r = realloc(s->routes, (size_t)cap * sizeof *r);
        if (!r)
            return -1;
        s->routes = r;
        s->cap_routes = cap;
    }
    route *r = &s->routes[s->n_routes];
    memset(r, 0, sizeof *r);
    if (asprintf(&r->path, "/%s/%s", desc->name, m->name) < 0)
        return -1;
    r->path_len = strlen(r->path);
    r->input = m->input;
    r->kind = FXR_UNARY;
    s->n_routes++;
    return 0;
}

static const ProtobufCMethodDescriptor *find_method(const ProtobufCServiceDescriptor *desc,
                                                    const char *name)
{
    for (unsigned i = 0; i < desc->n_methods; i++)
        if (strcmp(desc->methods[i].name, name) == 0)
            return &desc->methods[i];
    return NULL;
}

/* Checks the whole table before anything is added, so a bad registration
 * leaves the server as it was. */
static int check_service(fxr_server *s, const ProtobufCServiceDescriptor *desc,
                         const fxr_method *methods, int n)
{
    if (!desc || n < 0 || (n > 0 && !methods)) {
        slog(s, "error", "rpc: add_service: no descriptor or a bad method table");
        return -1;
    }
    if (s->state != S_CREATED) {
        slog(s, "error", "rpc: add_service %s after start", desc->name);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!methods[i].name || !find_method(desc, methods[i].name)) {
            slog(s, "error", "rpc: service %s has no method %s", desc->name,
                 methods[i].name ? methods[i].name : "(null)");
            return -1;
        }
        if (methods[i].kind < FXR_UNARY || methods[i].kind > FXR_BIDI) {
            slog(s, "error", "rpc: %s/%s: bad streaming kind %d", desc->name, methods[i].name,
                 (int)methods[i].kind);
            return -1;
        }
    }
    for (int i = 0; i < s->n_routes; i++) {
        size_t len = strlen(desc->name);
        if (strncmp(s->routes[i].path + 1, desc->name, len) == 0 &&
            s->routes[i].path[len + 1] == '/') {
            slog(s, "error", "rpc: service %s registered twice", desc->name);
            return -1;
        }
    }
    return 0;
}

int fxr_server_add_service(fxr_server *s, const ProtobufCServiceDescriptor *desc,
                           const fxr_method *methods, int n, void *data)
{
    if (check_service(s, desc, methods, n) != 0)
        return -1;
    int first = s->n_routes;
    for (unsigned i = 0; i < desc->n_methods; i++) {
        if (add_route(s, desc, &desc->methods[i]) != 0) {
            slog(s, "error", "rpc: out of memory registering %s", desc->name);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        route *r = &s->routes[first + (find_method(desc, methods[i].name) - desc->methods)];
        r->fn = methods[i].fn;
        r->kind = methods[i].kind;
        r->data = data;
    }
    return 0;
}

static pthread_t *start_threads(fxr_server *s, int n, void *(*fn)(void *), int *started)
{
    pthread_t *th = calloc((size_t)n, sizeof *th);
    *started = 0;
    if (!th)
        return NULL;
    while (*started < n && pthread_create(&th[*started], NULL, fn, s) == 0)
        (*started)++;
    return th;
}

int fxr_server_start(fxr_server *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->state != S_CREATED) {
        pthread_mutex_unlock(&s->mu);
        slog(s, "error", "rpc: server started twice");
        return -1;
    }
    s->state = S_STARTED;
    pthread_mutex_unlock(&s->mu);
    grpc_server_start(s->srv);
    s->workers = start_threads(s, s->opts.handler_threads, worker_main, &s->n_workers);
    s->pollers = start_threads(s, s->opts.poll_threads, poller_main, &s->n_pollers);
    if (s->n_workers < s->opts.handler_threads || s->n_pollers < s->opts.poll_threads) {
        slog(s, "error", "rpc: cannot start the server's threads");
        fxr_server_shutdown(s, 0);
        return -1;
    }
    for (int i = 0; i < REQUESTS_PER_POLLER * s->n_pollers; i++)
        post_request(s);
    slog(s, "info", "rpc: listening on %s (port %d, %d pollers, %d handler threads)", s->listen,
         s->port, s->n_pollers, s->n_workers);
    return s->port;
}

/* Waits on s->cv (s->mu held) until done(s) or until deadline_ns; with
 * deadline INT64_MAX, logs every 5 s what it is still waiting for. */
static bool wait_until(fxr_server *s, bool (*done)(const fxr_server *), int64_t deadline_ns)
{
    int64_t next_log = (int64_t)fxu_mono_ns() + 5000000000LL;
    while (!done(s)) {
        int64_t now = (int64_t)fxu_mono_ns();
        if (now >= deadline_ns)
            return false;
        if (now >= next_log) {
            slog(s, "warn", "rpc: shutdown waits for %d calls and %d stream handlers",
                 s->live_calls, s->stream_threads);
            next_log = now + 5000000000LL;
        }
        /* timed, for the deadline and the progress log */
        int64_t until = now + 100000000;
        if (until > deadline_ns)
            until = deadline_ns;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t rt = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (until - now);
        ts.tv_sec = rt / 1000000000;
        ts.tv_nsec = rt % 1000000000;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    return true;
}

static bool calls_done(const fxr_server *s)
{
    return atomic_load(&s->in_flight) == 0 && s->live_calls == 0;
}

static bool all_released(const fxr_server *s)
{
    return s->live_calls == 0 && s->stream_threads == 0 && s->pending_requests == 0 &&
           s->shutdown_notified;
}

static void join_threads(pthread_t *th, int n)
{
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

void fxr_server_shutdown(fxr_server *s, int grace_ms)
{
    pthread_mutex_lock(&s->mu);
    if (s->state != S_STARTED) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->state = S_SHUTTING;
    atomic_store(&s->shutting, true);
    pthread_mutex_unlock(&s->mu);

    grpc_server_shutdown_and_notify(s->srv, s->cq, &s->shutdown_tag);
    pthread_mutex_lock(&s->mu);
    int64_t grace_end = (int64_t)fxu_mono_ns() + (int64_t)(grace_ms > 0 ? grace_ms : 0) * 1000000;
    if (!wait_until(s, calls_done, grace_end))
        slog(s, "info", "rpc: shutdown: cancelling %llu calls still in flight after %d ms",
             (unsigned long long)atomic_load(&s->in_flight), grace_ms);
    /* Also when every call is done: gRPC's shutdown notice waits for every
     * connection to close, and an idle client (or a silent TCP peer) may
     * never close its own; cancelling disconnects them. */
    atomic_store(&s->past_grace, true);
    pthread_mutex_unlock(&s->mu);
    grpc_server_cancel_all_calls(s->srv);
    pthread_mutex_lock(&s->mu);
    wait_until(s, all_released, INT64_MAX);
    pthread_mutex_unlock(&s->mu);

    grpc_completion_queue_shutdown(s->cq);
    join_threads(s->pollers, s->n_pollers);
    pthread_mutex_lock(&s->q_mu);
    s->q_stop = true;
    pthread_cond_broadcast(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    join_threads(s->workers, s->n_workers);

    pthread_mutex_lock(&s->mu);
    s->state = S_STOPPED;
    pthread_mutex_unlock(&s->mu);
    slog(s, "info", "rpc: server on port %d stopped after %llu calls", s->port,
         (unsigned long long)atomic_load(&s->total));
}

/* A server that never started may still have a listener: gRPC wants it
 * shut down, and its queue drained, before it is destroyed. */
static void shutdown_unstarted(fxr_server *s)
{
    if (s->port > 0)
        grpc_server_shutdown_and_notify(s->srv, s->cq, &s->shutdown_tag);
    grpc_completion_queue_shutdown(s->cq);
    poller_main(s);
}

void fxr_server_destroy(fxr_server *s)
{
    if (!s)
        return;
    if (s->state == S_STARTED)
        fxr_server_shutdown(s, 0);
    if (s->state == S_CREATED)
        shutdown_unstarted(s);
    grpc_server_destroy(s->srv);
    grpc_completion_queue_destroy(s->cq);
    grpc_shutdown();
    for (int i = 0; i < s->n_routes; i++)
        free(s->routes[i].path);
    free(s->routes);
    free(s->pollers);
    free(s->workers);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->q_mu);
    pthread_cond_destroy(&s->q_cv);
    free(s->listen);
    free(s);
}
