/*
 * server.c - the server's lifecycle behind rpc.h: create, start, the
 * pollers, accepting calls, and the drain at shutdown.
 *
 * One completion queue, polled by opts->poll_threads threads. Everything
 * that completes on it carries a `tag` whose callback runs on the poller:
 * accepted calls, each call's batches, the server's shutdown notice.
 */
#define _GNU_SOURCE
#include "rpc/rpc_internal.h"
#include "base/util.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc_security.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

/* ------------------------------------------------------------- helpers */

static void log_stderr(void *data, const char *level, const char *msg)
{
    (void)data;
    fprintf(stderr, "fluxiond %s: %s\n", level, msg);
}

static void (*core_log)(void *data, const char *level, const char *msg);
static void *core_log_data;

static void core_log_bridge(gpr_log_func_args *a)
{
    const char *level = a->severity == GPR_LOG_SEVERITY_ERROR  ? "error"
                        : a->severity == GPR_LOG_SEVERITY_INFO ? "info"
                                                               : "debug";
    const char *file = a->file ? strrchr(a->file, '/') : NULL;
    char msg[1024];
    snprintf(msg, sizeof msg, "grpc: %s:%d: %s", file ? file + 1 : a->file ? a->file : "?",
             a->line, a->message ? a->message : "");
    core_log(core_log_data, level, msg);
}

void fxr_set_core_log(void (*log)(void *data, const char *level, const char *msg), void *data)
{
    core_log = log;
    core_log_data = data;
    if (log)
        gpr_set_log_function(core_log_bridge);
}

void fxr__log(const fxr_server *s, const char *level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->opts.log(s->opts.log_data, level, msg);
}

void fxr__wake(fxr_server *s, int *counter, int delta)
{
    pthread_mutex_lock(&s->mu);
    *counter += delta;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ----------------------------------------------------- accepting calls */

static void post_request(fxr_server *s);

static void on_accept(tag *t, bool ok)
{
    fxr_call *c = container_of(t, fxr_call, accept_tag);
    fxr_server *s = c->s;
    if (!ok) { /* the server is shutting down */
        fxr__call_free(c);
        fxr__wake(s, &s->pending_requests, -1);
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
    fxr__dispatch(s, c);
}

/* Keeps one more grpc_server_request_call outstanding (the generic kind:
 * it also sees unknown methods, which we answer UNIMPLEMENTED). */
static void post_request(fxr_server *s)
{
    fxr_call *c = fxr__call_new(s);
    if (!c) {
        fxr__log(s, "error", "rpc: out of memory accepting a call");
        return;
    }
    c->accept_tag.done = on_accept;
    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        fxr__call_free(c);
        return;
    }
    s->pending_requests++;
    pthread_mutex_unlock(&s->mu);
    FXR_TAG_RELEASE(&c->accept_tag);
    grpc_call_error e = grpc_server_request_call(s->srv, &c->call, &c->details, &c->md, s->cq,
                                                 s->cq, &c->accept_tag);
    if (e != GRPC_CALL_OK) {
        fxr__log(s, "error", "rpc: cannot accept calls: %s", grpc_call_error_to_string(e));
        fxr__call_free(c);
        fxr__wake(s, &s->pending_requests, -1);
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
            FXR_TAG_ACQUIRE(t);
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

uint64_t fxr_server_in_flight(const fxr_server *s)
{
    return atomic_load(&s->in_flight);
}

uint64_t fxr_server_total_calls(const fxr_server *s)
{
    return atomic_load(&s->total);
}

int fxr_server_open_streams(fxr_server *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->stream_threads;
    pthread_mutex_unlock(&s->mu);
    return n;
}

uint64_t fxr_server_inflight_bytes(fxr_server *s)
{
    return fxr_inflight_bytes(s->inflight);
}

uint64_t fxr_server_limit_rejections(fxr_server *s, const char **name, int i)
{
    if (i < 0 || i >= FXR_LIMIT_COUNT - 1)
        return (*name = NULL), 0;
    *name = fxr_inflight_limit_name((fxr_limit)(i + 1));
    return fxr_inflight_rejected(s->inflight, (fxr_limit)(i + 1));
}

int fxr_server_charge(fxr_server *s, const char *client, uint64_t bytes, char *why,
                      size_t whylen)
{
    if (fxr_inflight_take(s->inflight, client, bytes, false, why, whylen) == FXR_LIMIT_NONE)
        return 0;
    fxr__log(s, "warn", "rpc: refused a request from %s: %s", client ? client : "?", why);
    return FXS_RESOURCE_EXHAUSTED;
}

void fxr_server_uncharge(fxr_server *s, const char *client, uint64_t bytes)
{
    fxr_inflight_give(s->inflight, client, bytes, false);
}

/* ------------------------------------------------------------ lifecycle */

static int check_opts(const fxr_server_opts *o, char *err, size_t errlen)
{
    if (!o || !o->listen || !*o->listen)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpc: no listen address");
    /* gRPC quietly binds a port over 65535 modulo 65536 */
    const char *colon = strrchr(o->listen, ':');
    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
        (strlen(colon + 1) > 5 || atoi(colon + 1) > 65535))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpc: port %s in %s is not in 0..65535",
                        colon + 1, o->listen);
    if (o->poll_threads < 0 || o->poll_threads > MAX_THREADS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpc: poll_threads %d is not in 0..%d",
                        o->poll_threads, MAX_THREADS);
    if (o->handler_threads < 0 || o->handler_threads > MAX_THREADS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "rpc: handler_threads %d is not in 0..%d", o->handler_threads,
                        MAX_THREADS);
    if (o->max_streams < 0 || o->max_streams > MAX_THREADS || o->max_streams_per_peer < 0 ||
        o->max_streams_per_peer > MAX_THREADS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "rpc: max_streams %d or max_streams_per_peer %d is not in 0..%d",
                        o->max_streams, o->max_streams_per_peer, MAX_THREADS);
    if (o->max_calls_per_peer < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpc: max_calls_per_peer %d < 0",
                        o->max_calls_per_peer);
    if (!o->tls_cert_file != !o->tls_key_file)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "rpc: TLS needs both a certificate and a key file (only the %s is given)",
                        o->tls_cert_file ? "certificate" : "key");
    if (o->tls_client_ca_file && !o->tls_cert_file)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "rpc: a client CA (mTLS) needs the server's own certificate and key");
    if (o->tls_require_client_cert && !o->tls_client_ca_file)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "rpc: requiring client certificates needs a client CA file to verify "
                        "them");
    if (o->max_recv_bytes > INT_MAX || o->max_send_bytes > INT_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "rpc: max message size %zu is over gRPC's limit of %d bytes",
                        o->max_recv_bytes > INT_MAX ? o->max_recv_bytes : o->max_send_bytes,
                        INT_MAX);
    return 0;
}

int fxr_server_create(const fxr_server_opts *opts, fxr_server **out, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (!out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "rpc: no place for the server");
    *out = NULL;
    int rc = check_opts(opts, err, errlen);
    if (rc)
        return rc;
    fxr_server *s = calloc(1, sizeof *s);
    if (!s || !(s->listen = strdup(opts->listen))) {
        free(s);
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "rpc: out of memory");
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
    if (!s->opts.max_streams)
        s->opts.max_streams = DEFAULT_MAX_STREAMS;
    if (!s->opts.max_streams_per_peer)
        s->opts.max_streams_per_peer = s->opts.max_streams / 4 ? s->opts.max_streams / 4 : 1;
    if (s->opts.max_streams_per_peer > s->opts.max_streams)
        s->opts.max_streams_per_peer = s->opts.max_streams;
    if (!s->opts.stream_idle_ms)
        s->opts.stream_idle_ms = DEFAULT_STREAM_IDLE_MS;
    s->stream_peers = calloc((size_t)s->opts.max_streams, sizeof *s->stream_peers);
    fxr_inflight_limits lim = { .max_bytes = s->opts.max_inflight_bytes,
                                .max_bytes_per_peer = s->opts.max_inflight_bytes_per_peer,
                                .max_calls_per_peer = s->opts.max_calls_per_peer };
    s->inflight = fxr_inflight_new(&lim);
    if (!s->stream_peers || !s->inflight) {
        free(s->stream_peers);
        fxr_inflight_free(s->inflight);
        free(s->listen);
        free(s);
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "rpc: out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cv, NULL);
    s->shutdown_tag.done = on_server_shutdown;
    if ((rc = fxr__tls_open(s, err, errlen)) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->q_mu);
        pthread_cond_destroy(&s->q_cv);
        free(s->stream_peers);
        fxr_inflight_free(s->inflight);
        free(s->listen);
        free(s);
        return rc;
    }

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
    grpc_server_credentials *creds = fxr__tls_credentials(s);
    s->port = creds ? grpc_server_add_http2_port(s->srv, s->listen, creds) : 0;
    if (creds)
        grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        /* gRPC does not say which; like a locked data directory, the
         * address is something to fix before this server can start. */
        rc = fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                      "rpc: cannot listen on %s (bad address or in use)", s->listen);
        fxr_server_destroy(s);
        return rc;
    }
    *out = s;
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

int fxr_server_start(fxr_server *s, int *port)
{
    *port = 0;
    pthread_mutex_lock(&s->mu);
    if (s->state != S_CREATED) {
        pthread_mutex_unlock(&s->mu);
        fxr__log(s, "error", "rpc: server started twice");
        return FXS_FAILED_PRECONDITION;
    }
    s->state = S_STARTED;
    pthread_mutex_unlock(&s->mu);
    grpc_server_start(s->srv);
    s->workers = start_threads(s, s->opts.handler_threads, fxr__worker_main, &s->n_workers);
    s->pollers = start_threads(s, s->opts.poll_threads, poller_main, &s->n_pollers);
    if (s->n_workers < s->opts.handler_threads || s->n_pollers < s->opts.poll_threads) {
        fxr__log(s, "error", "rpc: cannot start the server's threads");
        fxr_server_shutdown(s, 0, -1, NULL, 0);
        return FXS_RESOURCE_EXHAUSTED;
    }
    for (int i = 0; i < REQUESTS_PER_POLLER * s->n_pollers; i++)
        post_request(s);
    fxr__log(s, "info", "rpc: listening on %s (port %d, %s, %d pollers, %d handler threads)",
             s->listen, s->port,
             !s->tls ? "plaintext" : !s->tls->ca_pem ? "TLS" : s->opts.tls_require_client_cert
                                                             ? "mTLS, client certificate required"
                                                             : "TLS, client certificates verified",
             s->n_pollers, s->n_workers);
    *port = s->port;
    return 0;
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
            fxr__log(s, "warn", "rpc: shutdown waits for %d calls and %d stream handlers",
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

/* Joins th[*joined..n) by deadline_ns (CLOCK_MONOTONIC; INT64_MAX: no
 * limit), counting them in *joined. Returns whether all are joined: a
 * thread left running is left alone (a later call may join it). */
static bool join_threads(pthread_t *th, int n, int *joined, int64_t deadline_ns)
{
    for (int i = *joined; i < n; i++, (*joined)++) {
        if (deadline_ns == INT64_MAX) {
            pthread_join(th[i], NULL);
            continue;
        }
        int64_t left = deadline_ns - (int64_t)fxu_mono_ns();
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts); /* pthread_timedjoin_np's clock */
        int64_t rt = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (left > 0 ? left : 0);
        ts.tv_sec = rt / 1000000000;
        ts.tv_nsec = rt % 1000000000;
        if (pthread_timedjoin_np(th[i], NULL, &ts) != 0)
            return false;
    }
    return true;
}

/* Stops the pollers and the handler pool once every call is released. */
static bool stop_threads(fxr_server *s, int64_t deadline_ns)
{
    grpc_completion_queue_shutdown(s->cq); /* a second time is harmless */
    if (!join_threads(s->pollers, s->n_pollers, &s->pollers_joined, deadline_ns))
        return false;
    pthread_mutex_lock(&s->q_mu);
    s->q_stop = true;
    pthread_cond_broadcast(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    return join_threads(s->workers, s->n_workers, &s->workers_joined, deadline_ns);
}

/* The drain, in the order rpc.h promises. New calls are answered
 * UNAVAILABLE by fxr__dispatch while the listener stays open: had gRPC's
 * own shutdown been started at once, calls its transport had received but
 * not yet handed to us would be dropped, and their clients, whose calls
 * were in flight, would see CANCELLED. */
int fxr_server_shutdown(fxr_server *s, int grace_ms, int release_ms, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    if (s->state != S_STARTED) {
        bool abandoned = s->state == S_ABANDONED;
        pthread_mutex_unlock(&s->mu);
        return abandoned ? fxu_fail(err, errlen, FXS_DEADLINE_EXCEEDED,
                                    "rpc: an earlier shutdown gave up")
                         : 0;
    }
    s->state = S_SHUTTING;
    atomic_store(&s->shutting, true);
    int64_t t0 = (int64_t)fxu_mono_ns();
    int64_t grace_end = t0 + (int64_t)(grace_ms > 0 ? grace_ms : 0) * 1000000;
    bool in_time = wait_until(s, calls_done, grace_end);
    s->closing = true; /* post_request stops re-posting */
    pthread_mutex_unlock(&s->mu);
    if (!in_time)
        fxr__log(s, "info", "rpc: shutdown: cancelling %llu calls still in flight after %d ms",
                 (unsigned long long)atomic_load(&s->in_flight), grace_ms);

    /* Closes the listener, sends GOAWAY, fails our pending accepts. Then the
     * cancel, also when every call is done: gRPC's shutdown notice waits
     * for every connection to close, and an idle client (or a silent TCP
     * peer) may never close its own; cancelling disconnects them. */
    FXR_TAG_RELEASE(&s->shutdown_tag);
    grpc_server_shutdown_and_notify(s->srv, s->cq, &s->shutdown_tag);
    atomic_store(&s->past_grace, true);
    grpc_server_cancel_all_calls(s->srv);

    int64_t now = (int64_t)fxu_mono_ns();
    int64_t release_end = release_ms < 0 ? INT64_MAX : now + (int64_t)release_ms * 1000000;
    pthread_mutex_lock(&s->mu);
    bool released = wait_until(s, all_released, release_end);
    int held = s->live_calls, streams = s->stream_threads;
    pthread_mutex_unlock(&s->mu);
    if (released)
        released = stop_threads(s, release_end);

    pthread_mutex_lock(&s->mu);
    s->state = released ? S_STOPPED : S_ABANDONED;
    pthread_mutex_unlock(&s->mu);
    if (!released) {
        char msg[256];
        snprintf(msg, sizeof msg, "rpc: shutdown gave up %d ms after the cancel: %d calls "
                 "still held by handlers (%d of them streams), or a thread that does not stop",
                 release_ms, held, streams);
        fxr__log(s, "error", "%s", msg);
        return fxu_fail(err, errlen, FXS_DEADLINE_EXCEEDED, "%s", msg);
    }
    fxr__log(s, "info", "rpc: server on port %d stopped after %llu calls", s->port,
             (unsigned long long)atomic_load(&s->total));
    return 0;
}

/* A server that never started may still have a listener: gRPC wants it
 * shut down, and its queue drained, before it is destroyed. */
static void shutdown_unstarted(fxr_server *s)
{
    if (s->port > 0) {
        FXR_TAG_RELEASE(&s->shutdown_tag);
        grpc_server_shutdown_and_notify(s->srv, s->cq, &s->shutdown_tag);
    }
    grpc_completion_queue_shutdown(s->cq);
    poller_main(s);
}

void fxr_server_destroy(fxr_server *s)
{
    if (!s)
        return;
    if (s->state == S_STARTED)
        fxr_server_shutdown(s, 0, -1, NULL, 0);
    if (s->state == S_ABANDONED) {
        /* Freed only if its handlers let go since; else they still use it
         * and it is left to the process's exit. */
        pthread_mutex_lock(&s->mu);
        bool released = all_released(s);
        pthread_mutex_unlock(&s->mu);
        if (!released || !stop_threads(s, (int64_t)fxu_mono_ns() + 1000000000)) {
            fxr__log(s, "warn", "rpc: server on port %d not freed: handlers still hold calls",
                     s->port);
            return;
        }
    }
    if (s->state == S_CREATED)
        shutdown_unstarted(s);
    grpc_server_destroy(s->srv);
    grpc_completion_queue_destroy(s->cq);
    grpc_shutdown();
    fxr__tls_free(s); /* the credentials' fetcher used it until the listener closed */
    for (int i = 0; i < s->n_routes; i++)
        free(s->routes[i].path);
    free(s->routes);
    free(s->pollers);
    free(s->workers);
    free(s->stream_peers);
    fxr_inflight_free(s->inflight);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->q_mu);
    pthread_cond_destroy(&s->q_cv);
    free(s->listen);
    free(s);
}
