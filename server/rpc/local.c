/*
 * local.c - calls of another transport (the HTTP/REST port): an fxr_call
 * without a grpc_call, run through the same steps as a gRPC call, so that
 * both transports answer alike from one set of handlers (rpc.h,
 * fxr_server_call_local).
 *
 * A local call is counted as a gRPC call is (in_flight, total, live_calls)
 * and only while the server is started and not draining, under s->mu: the
 * shutdown then waits for it as for any call in flight. It runs on the
 * caller's thread: the caller (an HTTP connection's thread) waits for its
 * answer anyway, and so a local call never takes a thread of the handler
 * pool from gRPC calls. Its end comes through fxr__call_finish, like every
 * call's, to fxr__local_finish.
 */
#define _GNU_SOURCE
#include "rpc/rpc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/support/alloc.h>
#include <grpc/support/string_util.h>

/* done() with a refusal, for calls that never became an fxr_call. */
static void refuse(fxr_local_done done, void *ud, fxs_status code, const char *fmt, const char *a)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a);
    done(ud, code, msg, NULL, 0);
}

/* Admits a call: counted while the server is started and not draining. */
static bool admit(fxr_server *s)
{
    pthread_mutex_lock(&s->mu);
    bool ok = s->state == S_STARTED && !atomic_load(&s->shutting);
    if (ok) {
        s->live_calls++;
        atomic_fetch_add(&s->in_flight, 1);
        atomic_fetch_add(&s->total, 1);
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void fxr_server_call_local(fxr_server *s, const char *path, const fxr_credentials *cred,
                           const uint8_t *req, size_t req_len, fxr_local_done done, void *ud)
{
    static const fxr_credentials none = { 0 };
    if (!cred)
        cred = &none;
    const route *r = path ? fxr__find_route(s, path, strlen(path)) : NULL;
    if (!r) {
        fxr__log(s, "warn", "rpc: unknown method %.200s from %.200s", path ? path : "(null)",
                 cred->peer ? cred->peer : "local");
        refuse(done, ud, FXS_UNIMPLEMENTED, "unknown method %.200s", path ? path : "(null)");
        return;
    }
    if (!r->fn || (r->kind != FXR_UNARY && r->kind != FXR_UNARY_POLLER)) {
        refuse(done, ud, FXS_UNIMPLEMENTED,
               r->fn ? "method %s is streaming: not callable over this transport"
                     : "method %s is not implemented", r->path);
        return;
    }
    if (!admit(s)) {
        refuse(done, ud, FXS_UNAVAILABLE, "%s",
               "the server is shutting down: call again after its restart");
        return;
    }
    fxr_call *c = fxr__call_new(s);
    if (c) {
        c->path = strdup(r->path);
        c->peer = gpr_strdup(cred->peer ? cred->peer : "local");
    }
    if (!c || !c->path || !c->peer) {
        if (c) {
            c->counted = false; /* uncounted below, once */
            fxr__call_free(c);
        }
        atomic_fetch_sub(&s->in_flight, 1);
        fxr__wake(s, &s->live_calls, -1);
        refuse(done, ud, FXS_RESOURCE_EXHAUSTED, "%s", "server out of memory");
        return;
    }
    c->counted = true; /* fxr__call_free gives back live_calls */
    c->local = true;
    c->local_tls = cred->tls;
    c->local_cred = cred;
    c->local_done = done;
    c->local_ud = ud;
    c->route = r;
    char err[FXS_ERRLEN];
    if (!fxr__authorize(c)) /* refused: finished, done called */
        return;
    c->local_cred = NULL; /* the caller's, valid only until we return */
    if (fxr__unpack_bytes(c, req ? req : (const uint8_t *)"", req ? req_len : 0, &c->req, err,
                          sizeof err) != 0) {
        fxr_fail(c, FXS_INVALID_ARGUMENT, "%s", err);
        return;
    }
    r->fn(c, c->req, r->data); /* may free c */
}

void fxr__local_finish(fxr_call *c, const ProtobufCMessage *resp, fxs_status code,
                       const char *msg)
{
    fxr_server *s = c->s;
    pthread_mutex_lock(&c->mu);
    bool twice = c->finished;
    c->finished = true;
    pthread_mutex_unlock(&c->mu);
    if (twice) {
        fxr__log(s, "error", "rpc: %s finished twice (ignored)", c->path);
        return;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    char over[256];
    if (code == FXS_OK && resp && fxr__reply_too_big(s, c->path, resp, over, sizeof over)) {
        code = FXS_RESOURCE_EXHAUSTED;
        msg = over;
    }
    if (code == FXS_OK && resp) {
        len = protobuf_c_message_get_packed_size(resp);
        buf = malloc(len ? len : 1);
        if (buf) {
            protobuf_c_message_pack(resp, buf);
        } else {
            code = FXS_RESOURCE_EXHAUSTED;
            msg = "server out of memory packing the response";
            len = 0;
        }
    }
    fxr__audit(c, code, msg);
    c->local_done(c->local_ud, code, code == FXS_OK ? NULL : msg ? msg : "", buf,
                  code == FXS_OK ? len : 0);
    free(buf);
    atomic_fetch_sub(&s->in_flight, 1);
    if (atomic_load(&s->shutting)) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    fxr__call_release(c);
}
