/*
 * call.c - one call of the gRPC layer: its state, the batches started on it,
 * and the calls of rpc.h a handler makes (reply, fail, finish, send, recv,
 * cancelled, metadata).
 *
 * A call is refcounted: one reference for its owner (the handler, dropped
 * when it finishes the call with fxr_reply/fxr_fail/fxr_finish) and one per
 * batch started on it, so its state is freed only after gRPC has completed
 * every batch. Batches on one call are started under the call's mutex,
 * because a deferred reply may come from any thread.
 */
#define _GNU_SOURCE
#include "rpc/rpc_internal.h"
#include "rpc/wirecheck.h"
#include "base/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

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

/* Every request message, of every kind of call and transport, is unpacked
 * here, once its string fields pass fxr_wirecheck: a refused string is
 * INVALID_ARGUMENT naming the field. */
int fxr__unpack_bytes(fxr_call *c, const uint8_t *data, size_t len, ProtobufCMessage **msg,
                      char *err, size_t errlen)
{
    const ProtobufCMessageDescriptor *desc = c->route->input;
    char refused[FXS_ERRLEN];
    refused[0] = 0;
    bool malformed = false; /* then unpack fails too: see wirecheck.h */
    *msg = NULL;
    if (fxr_wirecheck(desc, data, len, &malformed, refused, sizeof refused) == 0 && !malformed)
        *msg = protobuf_c_message_unpack(desc, NULL, len, data);
    if (*msg)
        return 0;
    if (refused[0]) {
        fxr__log(c->s, "warn", "rpc: %s: refused a %s from %s: %s", c->path, desc->name,
                 fxr_peer(c), refused);
        if (!c->refused)
            c->refused = strdup(refused); /* for the handler's fxr_fail (rpc.h) */
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s", refused);
    }
    fxr__log(c->s, "warn", "rpc: %s: cannot parse %s from %s", c->path, desc->name,
             fxr_peer(c));
    return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "cannot parse %s", desc->name);
}

/* bb is consumed. */
int fxr__unpack_request(fxr_call *c, grpc_byte_buffer *bb, ProtobufCMessage **msg, char *err,
                        size_t errlen)
{
    grpc_byte_buffer_reader reader;
    int rc;
    *msg = NULL;
    if (grpc_byte_buffer_reader_init(&reader, bb)) {
        grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
        rc = fxr__unpack_bytes(c, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice), msg, err,
                               errlen);
        grpc_slice_unref(slice);
        grpc_byte_buffer_reader_destroy(&reader);
    } else {
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "cannot parse %s", c->route->input->name);
    }
    grpc_byte_buffer_destroy(bb);
    return rc;
}

bool fxr__reply_too_big(const fxr_server *s, const char *path, const ProtobufCMessage *resp,
                        char *why, size_t whylen)
{
    size_t n = protobuf_c_message_get_packed_size(resp);
    if (n <= s->opts.max_send_bytes)
        return false;
    snprintf(why, whylen, "the reply to %s would be %zu bytes, over the message limit of %zu "
             "bytes (--max-message-mb): ask for less", path ? path : "?", n,
             s->opts.max_send_bytes);
    fxr__log(s, "warn", "rpc: %s", why);
    return true;
}

/* ---------------------------------------------------------- call state */

fxr_call *fxr__call_new(fxr_server *s)
{
    fxr_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    pthread_mutex_init(&c->mu, NULL);
    /* CLOCK_MONOTONIC: fxr_recv's idle limit must not move with the wall
     * clock */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->refs = 1;
    c->stream_slot = -1;
    c->deadline_ns = INT64_MAX;
    return c;
}

void fxr__call_free(fxr_call *c)
{
    fxr_server *s = c->s;
    bool counted = c->counted;
    if (c->charged_call || c->charged_bytes)
        fxr_inflight_give(s->inflight, fxr_peer(c), c->charged_bytes, c->charged_call);
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
    free(c->object);
    gpr_free(c->peer);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
    if (counted)
        fxr__wake(s, &s->live_calls, -1);
}

void fxr__call_release(fxr_call *c)
{
    pthread_mutex_lock(&c->mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        fxr__call_free(c);
}

/* Starts a batch under c->mu (held by the caller), taking a reference for
 * it. Returns false (and takes none) when gRPC refuses the batch. */
bool fxr__call_batch(fxr_call *c, const grpc_op *ops, size_t n, tag *t)
{
    c->refs++;
    FXR_TAG_RELEASE(t);
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
    if (e == GRPC_CALL_OK)
        return true;
    c->refs--;
    fxr__log(c->s, "error", "rpc: %s: cannot start a batch: %s", c->path,
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
    fxr__call_release(c);
}

/* Finishes the call: sends resp (may be NULL) and the status, unless the
 * call is gone, then drops the owner's reference. Every way of finishing a
 * call ends here. */
void fxr__call_finish(fxr_call *c, const ProtobufCMessage *resp, fxs_status code,
                      const char *msg)
{
    fxr_server *s = c->s;
    if (c->local) {
        fxr__local_finish(c, resp, code, msg);
        return;
    }
    /* A reply over the message limit would be refused by gRPC on the way
     * out with its own words: answer so here, naming the flag, and before
     * packing it. */
    char over[256];
    if (resp && fxr__reply_too_big(s, c->path, resp, over, sizeof over)) {
        resp = NULL;
        code = FXS_RESOURCE_EXHAUSTED;
        msg = over;
    }
    /* packed before locking: a big response must not hold up the pollers */
    grpc_byte_buffer *bb = atomic_load(&c->gone) ? NULL : pack_message(resp);
    pthread_mutex_lock(&c->mu);
    if (c->finished) {
        pthread_mutex_unlock(&c->mu);
        if (bb)
            grpc_byte_buffer_destroy(bb);
        fxr__log(s, "error", "rpc: %s finished twice (ignored)", c->path ? c->path : "?");
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
        if (!fxr__call_batch(c, ops, n, &c->status_tag)) {
            if (c->status_bb)
                grpc_byte_buffer_destroy(c->status_bb);
            c->status_bb = NULL;
            grpc_slice_unref(c->status_msg);
        }
    }
    pthread_mutex_unlock(&c->mu);
    fxr__audit(c, code, msg); /* outside c->mu: the hook logs */
    atomic_fetch_sub(&s->in_flight, 1);
    if (atomic_load(&s->shutting)) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    fxr__call_release(c);
}

/* The client's close notice (RECV_CLOSE_ON_SERVER): cancel, deadline or
 * disconnect mark the call gone. */
static void on_close(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, close_tag);
    pthread_mutex_lock(&c->mu);
    if (!ok || c->close_cancelled)
        atomic_store(&c->gone, true);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    fxr__call_release(c);
}

bool fxr__call_accepted(fxr_call *c)
{
    c->path = strndup((const char *)GRPC_SLICE_START_PTR(c->details.method),
                      GRPC_SLICE_LENGTH(c->details.method));
    for (char *p = c->path; p && *p; p++) /* it goes into one-line logs */
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    c->peer = grpc_call_get_peer(c->call);
    c->deadline_ns = deadline_to_mono_ns(c->details.deadline);

    pthread_mutex_lock(&c->mu);
    grpc_op op = { .op = GRPC_OP_RECV_CLOSE_ON_SERVER };
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    c->close_tag.done = on_close;
    fxr__call_batch(c, &op, 1, &c->close_tag);
    pthread_mutex_unlock(&c->mu);
    return c->path != NULL;
}

/* ------------------------------------------------------------ the API */

void fxr_reply(fxr_call *call, const ProtobufCMessage *resp)
{
    fxr__call_finish(call, resp, FXS_OK, NULL);
}

/* Messages name objects as the caller sees them (base/principal.h): the
 * domain modules quote keys ('a/mlp'), and the caller's own team's are
 * its bare names ('mlp'). Drops "TEAM/" after every quote, in place. */
static void own_names(char *msg, const char *team)
{
    size_t tn = strlen(team);
    if (!tn)
        return;
    char *w = msg;
    for (const char *r = msg; *r;) {
        bool quote = *r == '\'' || *r == '"';
        *w++ = *r++;
        if (quote && strncmp(r, team, tn) == 0 && r[tn] == '/')
            r += tn + 1;
    }
    *w = 0;
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
        fxr__log(s, "error", "rpc: %s: fxr_fail with OK turned into UNKNOWN", call->path);
        code = FXS_UNKNOWN;
    }
    if (code == FXS_INVALID_ARGUMENT && call->refused) /* the field at fault, not "cannot parse" */
        snprintf(msg, sizeof msg, "%s", call->refused);
    if (call->authed)
        own_names(msg, call->principal.team);
    fxr__call_finish(call, NULL, code, msg);
}

void fxr_finish(fxr_call *call)
{
    fxr__call_finish(call, NULL, FXS_OK, NULL);
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
    fxr__call_release(c);
}

/* Sends bb, or the initial metadata alone when bb is NULL, and waits until
 * it is written; c->mu held. Takes bb. Returns 0, or FXS_CANCELLED when
 * the call is gone. */
static int send_locked(fxr_call *c, grpc_byte_buffer *bb)
{
    while (c->sending)
        pthread_cond_wait(&c->cv, &c->mu);
    if (c->finished || atomic_load(&c->gone) || (bb && atomic_load(&c->s->past_grace))) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return FXS_CANCELLED;
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
    if (!fxr__call_batch(c, ops, n, &c->send_tag)) {
        c->sending = false;
        if (bb)
            grpc_byte_buffer_destroy(bb);
        c->send_bb = NULL;
        return FXS_CANCELLED;
    }
    while (c->sending)
        pthread_cond_wait(&c->cv, &c->mu);
    return c->send_ok ? 0 : FXS_CANCELLED;
}

int fxr_send(fxr_call *c, const ProtobufCMessage *msg)
{
    if (!msg)
        return FXS_INVALID_ARGUMENT;
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
    fxr__call_release(c);
}

/* The client sent nothing for opts.stream_idle_ms while fxr_recv waited
 * (c->mu held): end the call with DEADLINE_EXCEEDED and a message naming
 * the limit. gRPC then completes the pending RECV_MESSAGE (failed), so the
 * handler's fxr_recv returns -1 at once and its thread is freed. */
static void expire_idle(fxr_call *c)
{
    char msg[256];
    snprintf(msg, sizeof msg, "no message from the client for %g s, the stream idle limit "
             "(--stream-idle-seconds): the call is ended", c->s->opts.stream_idle_ms / 1000.0);
    c->idle_expired = true;
    atomic_store(&c->gone, true);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, msg, NULL);
    fxr__log(c->s, "info", "rpc: %s from %s: %s", c->path, fxr_peer(c), msg);
}

/* Waits (c->mu held) for the RECV_MESSAGE batch started by fxr_recv, at
 * most the idle limit: the timer of a client-streamed call is this timed
 * wait on its own handler thread, no thread or timer of its own. */
static void wait_received(fxr_call *c)
{
    int idle_ms = c->s->opts.stream_idle_ms;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += idle_ms / 1000;
    until.tv_nsec += (long)(idle_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (c->receiving) {
        if (idle_ms < 0 || c->idle_expired)
            pthread_cond_wait(&c->cv, &c->mu);
        else if (pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT && c->receiving)
            expire_idle(c);
    }
}

/* A client stream's message is counted in flight from its receipt until
 * the handler asks for the next one (it is done with it then, or keeps
 * what it needs under its own limit, as ImportWeights does): past an
 * in-flight limit the call is ended, as expire_idle does, so the handler's
 * fxr_recv returns -1 and its fxr_fail only releases the call. c->mu held. */
static bool charge_stream_message(fxr_call *c, grpc_byte_buffer *bb)
{
    char why[512];
    uint64_t n = grpc_byte_buffer_length(bb);
    if (fxr_inflight_take(c->s->inflight, fxr_peer(c), n, false, why, sizeof why) ==
        FXR_LIMIT_NONE) {
        c->charged_bytes = n;
        return true;
    }
    atomic_store(&c->gone, true);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED, why, NULL);
    fxr__log(c->s, "warn", "rpc: refused %s from %s: %s", c->path, fxr_peer(c), why);
    return false;
}

int fxr_recv(fxr_call *c, ProtobufCMessage **msg)
{
    *msg = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->charged_bytes) { /* the handler is done with the last message */
        fxr_inflight_give(c->s->inflight, fxr_peer(c), c->charged_bytes, false);
        c->charged_bytes = 0;
    }
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
    if (!fxr__call_batch(c, &op, 1, &c->recv_tag)) {
        c->receiving = false;
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    wait_received(c);
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
    if (ok && bb && !charge_stream_message(c, bb))
        ok = false;
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return -1;
    }
    if (!bb)
        return 0;
    char err[256];
    return fxr__unpack_request(c, bb, msg, err, sizeof err) == 0 ? 1 : -1;
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
