/*
 * dispatch.c - from a method path to a handler: the method table built from
 * protoc-c service descriptors (plus the streaming kinds of the side table),
 * routing each accepted call, the pool of handler threads for unary calls,
 * and the threads of streaming calls.
 *
 * Pollers run only FXR_UNARY_POLLER handlers (ModelInfer: they never
 * block, and hand themselves to the pool with fxr_defer where they would);
 * other unary calls go to the pool; each streaming
 * call (server, client or bidi) gets a thread of its own for its lifetime,
 * so long streams (watches, uploads) never hold a thread of the pool.
 */
#define _GNU_SOURCE
#include "rpc/rpc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------- the table */

/* Appends the route of method m: 0 or FXS_RESOURCE_EXHAUSTED. */
static int add_route(fxr_server *s, const ProtobufCServiceDescriptor *desc,
                     const ProtobufCMethodDescriptor *m)
{
    if (s->n_routes == s->cap_routes) {
        int cap = s->cap_routes ? 2 * s->cap_routes : 16;
        route *r = realloc(s->routes, (size_t)cap * sizeof *r);
        if (!r)
            return FXS_RESOURCE_EXHAUSTED;
        s->routes = r;
        s->cap_routes = cap;
    }
    route *r = &s->routes[s->n_routes];
    memset(r, 0, sizeof *r);
    if (asprintf(&r->path, "/%s/%s", desc->name, m->name) < 0)
        return FXS_RESOURCE_EXHAUSTED;
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
        fxr__log(s, "error", "rpc: add_service: no descriptor or a bad method table");
        return FXS_INVALID_ARGUMENT;
    }
    if (s->state != S_CREATED) {
        fxr__log(s, "error", "rpc: add_service %s after start", desc->name);
        return FXS_FAILED_PRECONDITION;
    }
    for (int i = 0; i < n; i++) {
        if (!methods[i].name || !find_method(desc, methods[i].name)) {
            fxr__log(s, "error", "rpc: service %s has no method %s", desc->name,
                     methods[i].name ? methods[i].name : "(null)");
            return FXS_INVALID_ARGUMENT;
        }
        if (methods[i].kind < FXR_UNARY || methods[i].kind > FXR_UNARY_POLLER) {
            fxr__log(s, "error", "rpc: %s/%s: bad streaming kind %d", desc->name,
                     methods[i].name, (int)methods[i].kind);
            return FXS_INVALID_ARGUMENT;
        }
        if (methods[i].access <= FXP_ACCESS_UNSET || methods[i].access > FXP_PEER_ONLY) {
            fxr__log(s, "error", "rpc: %s/%s: no access class (%d): every method must state "
                     "who may call it (base/principal.h)", desc->name, methods[i].name,
                     (int)methods[i].access);
            return FXS_INVALID_ARGUMENT;
        }
    }
    for (int i = 0; i < s->n_routes; i++) {
        size_t len = strlen(desc->name);
        if (strncmp(s->routes[i].path + 1, desc->name, len) == 0 &&
            s->routes[i].path[len + 1] == '/') {
            fxr__log(s, "error", "rpc: service %s registered twice", desc->name);
            return FXS_ALREADY_EXISTS;
        }
    }
    return 0;
}

int fxr_server_add_service(fxr_server *s, const ProtobufCServiceDescriptor *desc,
                           const fxr_method *methods, int n, void *data)
{
    int rc = check_service(s, desc, methods, n);
    if (rc)
        return rc;
    int first = s->n_routes;
    for (unsigned i = 0; i < desc->n_methods; i++) {
        if ((rc = add_route(s, desc, &desc->methods[i])) != 0) {
            fxr__log(s, "error", "rpc: out of memory registering %s", desc->name);
            while (s->n_routes > first) /* as it was */
                free(s->routes[--s->n_routes].path);
            return rc;
        }
    }
    for (int i = 0; i < n; i++) {
        route *r = &s->routes[first + (find_method(desc, methods[i].name) - desc->methods)];
        r->fn = methods[i].fn;
        r->kind = methods[i].kind;
        r->access = methods[i].access;
        r->data = data;
    }
    return 0;
}

const route *fxr__find_route(const fxr_server *s, const char *path, size_t len)
{
    for (int i = 0; i < s->n_routes; i++)
        if (s->routes[i].path_len == len && memcmp(s->routes[i].path, path, len) == 0)
            return &s->routes[i];
    return NULL;
}

static const route *find_route(const fxr_server *s, grpc_slice method)
{
    return fxr__find_route(s, (const char *)GRPC_SLICE_START_PTR(method),
                           GRPC_SLICE_LENGTH(method));
}

/* ------------------------------------------------- handlers and threads */

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

/* On a handler thread: check the caller (guard.c), parse the request
 * (here, not on a poller: it may be big; and only for a caller let in) and
 * run the handler. */
static void run_queued(fxr_call *c)
{
    grpc_byte_buffer *bb = c->recv_bb;
    char err[256];
    c->recv_bb = NULL;
    if (c->deferred) { /* fxr_defer: checked and unpacked on the poller */
        c->deferred = false;
        if (atomic_load(&c->gone))
            fxr__call_finish(c, NULL, FXS_CANCELLED, NULL);
        else
            c->route->fn(c, c->req, c->route->data); /* may free c */
    } else if (atomic_load(&c->gone)) { /* timed out or cancelled while queued */
        grpc_byte_buffer_destroy(bb);
        fxr__call_finish(c, NULL, FXS_CANCELLED, NULL);
    } else if (!fxr__authorize(c)) {
        grpc_byte_buffer_destroy(bb); /* refused: the call is finished */
    } else if (fxr__unpack_request(c, bb, &c->req, err, sizeof err) != 0) {
        fxr_fail(c, FXS_INVALID_ARGUMENT, "%s", err);
    } else {
        c->route->fn(c, c->req, c->route->data); /* may free c */
    }
}

void *fxr__worker_main(void *arg)
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

/* Takes a call or request bytes for c in the in-flight limits (rpc.h),
 * on a poller, before the handler runs: false with why (logged) when a
 * limit refuses them. fxr__call_free gives them back. */
static bool charge(fxr_call *c, uint64_t bytes, bool call, char *why, size_t whylen)
{
    if (fxr_inflight_take(c->s->inflight, fxr_peer(c), bytes, call, why, whylen) !=
        FXR_LIMIT_NONE) {
        fxr__log(c->s, "warn", "rpc: refused %s from %s: %s", c->path, fxr_peer(c), why);
        return false;
    }
    c->charged_bytes += bytes;
    c->charged_call |= call;
    return true;
}

/* A FXR_UNARY_POLLER call's handler, here on the poller: the request is
 * checked and unpacked as on a handler thread (run_queued). */
static __thread const fxr_call *tl_poller_call; /* its handler runs here, now */

static void run_on_poller(fxr_call *c)
{
    tl_poller_call = c;
    run_queued(c); /* the recv batch's reference keeps c until the caller releases it */
    tl_poller_call = NULL;
}

bool fxr_on_poller(const fxr_call *c)
{
    return c && tl_poller_call == c;
}

void fxr_defer(fxr_call *c)
{
    if (!fxr_on_poller(c))
        return;
    tl_poller_call = NULL;
    c->deferred = true;
    enqueue_handler(c->s, c);
}

/* The request message of a unary or server-streaming call arrived (on a
 * poller): hand the call to the pool (unary) or a thread of its own (server
 * stream), c->recv_bb with it, or run a FXR_UNARY_POLLER handler here. */
static void on_unary_request(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, recv_tag);
    char why[512];
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
        fxr__call_finish(c, NULL, FXS_CANCELLED, NULL);
    } else if (!bb) {
        fxr_fail(c, FXS_INVALID_ARGUMENT, "%s: no request message", c->path);
    } else if (!charge(c, grpc_byte_buffer_length(bb), false, why, sizeof why)) {
        c->recv_bb = NULL;
        grpc_byte_buffer_destroy(bb);
        fxr_fail(c, FXS_RESOURCE_EXHAUSTED, "%s", why);
    } else if (c->route->kind == FXR_SERVER_STREAM) {
        start_stream_thread(c->s, c);
    } else if (c->route->kind == FXR_UNARY_POLLER) {
        run_on_poller(c);
    } else {
        enqueue_handler(c->s, c);
    }
    fxr__call_release(c);
}

/* ------------------------------------------------------------- streams */

/* A stream slot's key for a peer address ("ipv4:127.0.0.1:50321": one
 * client connection): FNV-1a, never 0 (0 marks a free slot). */
static uint64_t peer_key(const char *peer)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)peer; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h ? h : 1;
}

/* Takes a stream slot for c, or says (in why) which limit refuses it. The
 * scan is over opts.max_streams slots (64 by default), under s->mu. */
static bool stream_admit(fxr_server *s, fxr_call *c, char *why, size_t whylen)
{
    uint64_t key = peer_key(fxr_peer(c));
    int free_slot = -1, open = 0, mine = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->opts.max_streams; i++) {
        if (!s->stream_peers[i]) {
            if (free_slot < 0)
                free_slot = i;
            continue;
        }
        open++;
        mine += s->stream_peers[i] == key;
    }
    bool ok = free_slot >= 0 && mine < s->opts.max_streams_per_peer;
    if (ok) {
        s->stream_peers[free_slot] = key;
        c->stream_slot = free_slot;
        s->stream_threads++;
    }
    pthread_mutex_unlock(&s->mu);
    if (ok)
        return true;
    if (mine >= s->opts.max_streams_per_peer)
        snprintf(why, whylen, "this client already has %d streaming calls open, the most one "
                 "client may hold (--max-streams-per-client %d): finish or cancel one first",
                 mine, s->opts.max_streams_per_peer);
    else
        snprintf(why, whylen, "the server has %d streaming calls open, its limit "
                 "(--max-streams %d): try again later", open, s->opts.max_streams);
    return false;
}

/* Gives back a stream's slot (its thread ends, or never started) and wakes
 * the shutdown, which waits for every stream thread. */
static void stream_release(fxr_server *s, int slot)
{
    pthread_mutex_lock(&s->mu);
    s->stream_peers[slot] = 0;
    s->stream_threads--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* A streaming call's thread: client-streaming and bidi handlers read their
 * requests themselves; a server-streaming one gets its request parsed here.
 * Streams may last as long as a training job: they never hold a thread of
 * the handler pool, which stays free for unary calls. */
static void *stream_main(void *arg)
{
    fxr_call *c = arg;
    fxr_server *s = c->s;
    int slot = c->stream_slot; /* read now: the handler may free c */
    if (c->route->kind == FXR_SERVER_STREAM)
        run_queued(c);
    else if (fxr__authorize(c)) /* else refused: finished */
        c->route->fn(c, NULL, c->route->data);
    stream_release(s, slot);
    return NULL;
}

/* Every streaming call (server, client or bidi) gets a thread of its own,
 * within the limits of opts.max_streams and opts.max_streams_per_peer.
 * Past them it is refused here, on the poller, at once: a refusal blocks
 * no other call. */
static void start_stream_thread(fxr_server *s, fxr_call *c)
{
    char why[256];
    if (!stream_admit(s, c, why, sizeof why)) {
        fxr__log(s, "warn", "rpc: refused %s from %s: %s", c->path, fxr_peer(c), why);
        fxr_fail(c, FXS_RESOURCE_EXHAUSTED, "%s", why);
        return;
    }
    pthread_attr_t attr;
    pthread_t th;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int slot = c->stream_slot;
    int e = pthread_create(&th, &attr, stream_main, c);
    pthread_attr_destroy(&attr);
    if (e != 0) {
        stream_release(s, slot);
        fxr__log(s, "error", "rpc: %s: cannot start a handler thread: %s", c->path, strerror(e));
        fxr_fail(c, FXS_RESOURCE_EXHAUSTED, "server cannot start a thread for %s", c->path);
    }
}

/* A new call was accepted (on a poller): route it. */
void fxr__dispatch(fxr_server *s, fxr_call *c)
{
    char why[512];
    bool named = fxr__call_accepted(c);
    c->route = named ? find_route(s, c->details.method) : NULL;
    if (!named) {
        fxr_fail(c, FXS_RESOURCE_EXHAUSTED, "server out of memory");
    } else if (atomic_load(&s->shutting)) {
        fxr_fail(c, FXS_UNAVAILABLE, "the server is shutting down: call again after its restart");
    } else if (!c->route) {
        fxr__log(s, "warn", "rpc: unknown method %s from %s", c->path, fxr_peer(c));
        fxr_fail(c, FXS_UNIMPLEMENTED, "unknown method %s", c->path);
    } else if (!c->route->fn) {
        fxr__log(s, "warn", "rpc: method %s is not implemented (from %s)", c->path, fxr_peer(c));
        fxr_fail(c, FXS_UNIMPLEMENTED, "method %s is not implemented", c->path);
    } else if (!charge(c, 0, true, why, sizeof why)) {
        fxr_fail(c, FXS_RESOURCE_EXHAUSTED, "%s", why);
    } else if (c->route->kind == FXR_UNARY || c->route->kind == FXR_UNARY_POLLER ||
               c->route->kind == FXR_SERVER_STREAM) {
        pthread_mutex_lock(&c->mu);
        grpc_op rop = { .op = GRPC_OP_RECV_MESSAGE };
        rop.data.recv_message.recv_message = &c->recv_bb;
        c->recv_tag.done = on_unary_request;
        bool started = fxr__call_batch(c, &rop, 1, &c->recv_tag);
        pthread_mutex_unlock(&c->mu);
        if (!started)
            fxr_fail(c, FXS_INTERNAL, "server cannot read the request of %s", c->path);
    } else {
        start_stream_thread(s, c);
    }
}
