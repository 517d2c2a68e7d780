/*
 * test_rpc.c - the gRPC layer (server/rpc.c, clients/common/rpcc.c): a real
 * server on 127.0.0.1:0 and a real client in one process, talking over the
 * test-only service fxtest.Echo (tests/proto/echo.proto).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "testutil.h"
#include "rpc/rpc.h"
#include "rpcc.h"
#include "echo.pb-c.h"

#define REQ_DESC (&fxtest__echo_request__descriptor)
#define REPLY_DESC (&fxtest__echo_reply__descriptor)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

/* Polls cond until true or timeout; returns its last value. */
static bool wait_for(bool (*cond)(void), int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (!cond() && now_ms() < end)
        sleep_ms(5);
    return cond();
}

/* ------------------------------------------------------------- the log */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[1 << 16];
static size_t log_len;

static void capture_log(void *data, const char *level, const char *msg)
{
    (void)data;
    pthread_mutex_lock(&log_mu);
    int n = snprintf(log_buf + log_len, sizeof log_buf - log_len, "%s: %s\n", level, msg);
    if (n > 0 && log_len + (size_t)n < sizeof log_buf)
        log_len += (size_t)n;
    else
        log_len = 0; /* full: start over, the tests look for recent lines */
    pthread_mutex_unlock(&log_mu);
}

static bool log_has(const char *needle)
{
    pthread_mutex_lock(&log_mu);
    bool found = strstr(log_buf, needle) != NULL;
    pthread_mutex_unlock(&log_mu);
    return found;
}

static int log_count(const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&log_mu);
    for (const char *p = log_buf; (p = strstr(p, needle)) != NULL; p++)
        n++;
    pthread_mutex_unlock(&log_mu);
    return n;
}

/* ------------------------------------------------------------ handlers */

static atomic_int slow_saw_cancel;
static atomic_int stream_saw_cancel;
static atomic_int unary_runs;
static atomic_int upload_saw_cancel;
static atomic_llong upload_broken_ms; /* when h_client_stream's fxr_recv last failed */

static void reply_text(fxr_call *call, const char *text, int index)
{
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    r.text = (char *)text;
    r.index = index;
    fxr_reply(call, &r.base);
}

static void h_unary(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    const Fxtest__EchoRequest *req = (const Fxtest__EchoRequest *)m;
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    char team[64] = "";
    atomic_fetch_add(&unary_runs, 1);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    int64_t dl = fxr_deadline_ns(call);
    r.text = req->text;
    r.data = req->blob;
    r.index = *(int *)data;
    r.deadline_left_ms = dl == INT64_MAX ? -1 : (dl - now_ns) / 1000000;
    if (fxr_metadata(call, "x-team", team, sizeof team))
        r.metadata = team;
    r.peer = (char *)fxr_peer(call);
    r.path = (char *)fxr_method_path(call);
    fxr_reply(call, &r.base);
}

/* FXR_UNARY_POLLER: answers where it ran ("poller:" or "pool:" before the
 * text, index 1 when the pool's run followed a deferral); text "defer"
 * hands the call to the pool from the poller. */
static atomic_int poller_deferrals;
static void h_on_poller(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    const Fxtest__EchoRequest *req = (const Fxtest__EchoRequest *)m;
    bool poller = fxr_on_poller(call);
    if (poller && strcmp(req->text, "defer") == 0) {
        atomic_fetch_add(&poller_deferrals, 1);
        fxr_defer(call);
        return;
    }
    char text[64];
    snprintf(text, sizeof text, "%s:%s", poller ? "poller" : "pool", req->text);
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    r.text = text;
    r.index = !poller && strcmp(req->text, "defer") == 0 ? atomic_load(&poller_deferrals) : 0;
    fxr_reply(call, &r.base);
}

static void h_server_stream(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    const Fxtest__EchoRequest *req = (const Fxtest__EchoRequest *)m;
    for (int i = 0; i < req->count; i++) {
        Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
        r.text = req->text;
        r.index = i;
        if (fxr_send(call, &r.base) != 0) {
            atomic_fetch_add(&stream_saw_cancel, 1);
            fxr_fail(call, FXS_CANCELLED, "stream stopped at %d", i);
            return;
        }
        if (req->sleep_ms)
            sleep_ms((int)req->sleep_ms);
    }
    fxr_finish(call);
}

static void h_client_stream(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    assert_null(m);
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    ProtobufCMessage *msg;
    int rc;
    while ((rc = fxr_recv(call, &msg)) == 1) {
        r.sum += ((Fxtest__EchoRequest *)msg)->value;
        r.index++;
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    if (rc < 0) {
        atomic_store(&upload_broken_ms, now_ms());
        if (fxr_cancelled(call))
            atomic_fetch_add(&upload_saw_cancel, 1);
        fxr_fail(call, fxr_cancelled(call) ? FXS_CANCELLED : FXS_INVALID_ARGUMENT,
                 "client stream broken after %d messages", r.index);
        return;
    }
    fxr_reply(call, &r.base);
}

static void h_bidi(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    ProtobufCMessage *msg;
    int rc;
    while ((rc = fxr_recv(call, &msg)) == 1) {
        Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
        r.text = ((Fxtest__EchoRequest *)msg)->text;
        int sent = fxr_send(call, &r.base);
        protobuf_c_message_free_unpacked(msg, NULL);
        if (sent != 0) {
            rc = -1;
            break;
        }
    }
    if (rc < 0)
        fxr_fail(call, FXS_CANCELLED, "bidi stream broken");
    else
        fxr_finish(call);
}

static void h_slow(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    const Fxtest__EchoRequest *req = (const Fxtest__EchoRequest *)m;
    int64_t end = now_ms() + req->sleep_ms;
    while (now_ms() < end) {
        if (fxr_cancelled(call) && !req->ignore_cancel) {
            atomic_fetch_add(&slow_saw_cancel, 1);
            fxr_fail(call, FXS_CANCELLED, "slow: cancelled");
            return;
        }
        sleep_ms(2);
    }
    reply_text(call, "slept", 0);
}

static void h_big(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    const Fxtest__EchoRequest *req = (const Fxtest__EchoRequest *)m;
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    uint8_t *buf = malloc(req->size ? (size_t)req->size : 1);
    if (!buf) {
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "big: no memory for %lld bytes",
                 (long long)req->size);
        return;
    }
    for (int64_t i = 0; i < req->size; i++)
        buf[i] = (uint8_t)(i * 7 % 251);
    r.data.data = buf;
    r.data.len = (size_t)req->size;
    fxr_reply(call, &r.base);
    free(buf);
}

static void h_fail(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    const Fxtest__EchoRequest *req = (const Fxtest__EchoRequest *)m;
    fxr_fail(call, (fxs_status)req->code, "failing as asked: %s", req->text);
}

typedef struct {
    fxr_call *call;
    const Fxtest__EchoRequest *req;
    atomic_int returned;
} deferred;

static void *deferred_main(void *arg)
{
    deferred *d = arg;
    /* the handler has returned by now: the reply really is deferred */
    while (!atomic_load(&d->returned))
        sleep_ms(1);
    if (d->req->sleep_ms)
        sleep_ms((int)d->req->sleep_ms);
    char text[128];
    snprintf(text, sizeof text, "deferred:%s", d->req->text);
    reply_text(d->call, text, 0);
    free(d);
    return NULL;
}

static void h_deferred(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    deferred *d = malloc(sizeof *d);
    pthread_t th;
    assert_non_null(d);
    d->call = call;
    d->req = (const Fxtest__EchoRequest *)m;
    atomic_init(&d->returned, 0);
    assert_int_equal(pthread_create(&th, NULL, deferred_main, d), 0);
    pthread_detach(th);
    atomic_store(&d->returned, 1);
}

static int handler_tag = 42; /* the registration's data, seen by h_unary */

static const fxr_method echo_methods[] = {
    { "Unary", FXR_UNARY, FXP_ANY, h_unary },
    { "ServerStream", FXR_SERVER_STREAM, FXP_ANY, h_server_stream },
    { "ClientStream", FXR_CLIENT_STREAM, FXP_ANY, h_client_stream },
    { "Bidi", FXR_BIDI, FXP_ANY, h_bidi },
    { "Slow", FXR_UNARY, FXP_ANY, h_slow },
    { "Big", FXR_UNARY, FXP_ANY, h_big },
    { "Fail", FXR_UNARY, FXP_ANY, h_fail },
    { "Deferred", FXR_UNARY, FXP_ANY, h_deferred },
    { "OnPoller", FXR_UNARY_POLLER, FXP_ANY, h_on_poller },
    /* NoHandler: routed, no handler -> UNIMPLEMENTED */
};
#define N_ECHO_METHODS ((int)(sizeof echo_methods / sizeof *echo_methods))

/* ------------------------------------------------------------- fixture */

typedef struct {
    fxr_server *srv;
    fxc_channel *ch;
    int port;
} env;

static env start_env_opts(const fxr_server_opts *o, size_t client_max_recv)
{
    env e = { 0 };
    char err[256];
    if (fxr_server_create(o, &e.srv, err, sizeof err) != 0)
        fail_msg("fxr_server_create: %s", err);
    assert_int_equal(fxr_server_add_service(e.srv, &fxtest__echo__descriptor, echo_methods,
                                            N_ECHO_METHODS, &handler_tag),
                     0);
    assert_int_equal(fxr_server_start(e.srv, &e.port), 0);
    assert_true(e.port > 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", e.port);
    fxc_channel_opts co = { .max_recv_bytes = client_max_recv };
    e.ch = fxc_channel_create(target, &co);
    assert_non_null(e.ch);
    return e;
}

static env start_env(size_t server_max_recv, size_t client_max_recv)
{
    fxr_server_opts o = { .listen = "127.0.0.1:0", .max_recv_bytes = server_max_recv,
                          .log = capture_log };
    return start_env_opts(&o, client_max_recv);
}

static void stop_env(env *e)
{
    fxc_channel_free(e->ch);
    assert_int_equal(fxr_server_shutdown(e->srv, 1000, -1, NULL, 0), 0);
    assert_int_equal(fxr_server_in_flight(e->srv), 0);
    fxr_server_destroy(e->srv);
}

static env shared; /* most tests share one server and channel */

static int setup_shared(void **state)
{
    shared = start_env(0, 0);
    return 0;
}

static int teardown_shared(void **state)
{
    stop_env(&shared);
    return 0;
}

static int call_echo(fxc_channel *ch, const char *method, const Fxtest__EchoRequest *req,
                     Fxtest__EchoReply **reply, int64_t timeout_ms, char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof path, "/fxtest.Echo/%s", method);
    fxc_call_opts co = { .timeout_ms = timeout_ms };
    return fxc_unary(ch, path, &req->base, REPLY_DESC, (ProtobufCMessage **)reply, &co, err,
                     errlen);
}

/* --------------------------------------------------------------- tests */

static void test_status_names(void **state)
{
    assert_string_equal(fxs_status_name(FXS_OK), "OK");
    assert_string_equal(fxs_status_name(FXS_INVALID_ARGUMENT), "INVALID_ARGUMENT");
    assert_string_equal(fxs_status_name(FXS_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(fxs_status_name(-1), "UNKNOWN_CODE");
    assert_string_equal(fxs_status_name(17), "UNKNOWN_CODE");
    assert_string_equal(fxs_status_name(14), "UNAVAILABLE");
    assert_string_equal(fxs_status_name(4), "DEADLINE_EXCEEDED");
    assert_string_equal(fxs_status_name(99), "UNKNOWN_CODE");
}

/* Clients derive a method's path from the service descriptor the way the
 * server routes it: a call on the derived path reaches the handler. */
static void test_method_path(void **state)
{
    char path[64];
    const ProtobufCMethodDescriptor *m =
        fxc_method_path(&fxtest__echo__descriptor, "Unary", path, sizeof path);
    assert_non_null(m);
    assert_string_equal(path, "/fxtest.Echo/Unary");
    assert_ptr_equal(m->input, &fxtest__echo_request__descriptor);
    assert_ptr_equal(m->output, REPLY_DESC);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.text = "path";
    Fxtest__EchoReply *rep = NULL;
    char err[256] = "";
    fxc_call_opts co = { .timeout_ms = 5000 };
    assert_int_equal(fxc_unary(shared.ch, path, &req.base, m->output, (ProtobufCMessage **)&rep,
                               &co, err, sizeof err),
                     FXS_OK);
    assert_string_equal(rep->text, "path");
    fxtest__echo_reply__free_unpacked(rep, NULL);
    /* no such method, or no room for the path */
    assert_null(fxc_method_path(&fxtest__echo__descriptor, "Nope", path, sizeof path));
    assert_null(fxc_method_path(&fxtest__echo__descriptor, NULL, path, sizeof path));
    assert_null(fxc_method_path(&fxtest__echo__descriptor, "Unary", path, 10));
}

/* The create fails with code, *out NULL (it starts as a pointer that is
 * not), and a message that has needle. */
static void expect_create_fails(const fxr_server_opts *o, int code, const char *needle)
{
    char err[256] = "";
    fxr_server *s = (fxr_server *)&s;
    int rc = fxr_server_create(o, &s, err, sizeof err);
    if (rc == 0) {
        fxr_server_destroy(s);
        fail_msg("fxr_server_create(%s) succeeded", o && o->listen ? o->listen : "NULL");
    }
    assert_null(s);
    if (rc != code)
        fail_msg("fxr_server_create(%s): code %d, want %d (%s)",
                 o && o->listen ? o->listen : "NULL", rc, code, err);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void test_create_errors(void **state)
{
    fxr_server_opts o = { .log = capture_log };
    expect_create_fails(NULL, FXS_INVALID_ARGUMENT, "no listen address");
    expect_create_fails(&o, FXS_INVALID_ARGUMENT, "no listen address");
    o.listen = "127.0.0.1:99999";
    expect_create_fails(&o, FXS_INVALID_ARGUMENT,
                        "port 99999 in 127.0.0.1:99999 is not in 0..65535");
    o.listen = "no-such-host.invalid:1";
    expect_create_fails(&o, FXS_FAILED_PRECONDITION, "cannot listen on no-such-host.invalid:1");
    o.listen = "127.0.0.1:0";
    o.max_recv_bytes = (size_t)1 << 40;
    expect_create_fails(&o, FXS_INVALID_ARGUMENT, "over gRPC's limit");
    o.max_recv_bytes = 0;
    o.poll_threads = -1;
    expect_create_fails(&o, FXS_INVALID_ARGUMENT, "poll_threads -1");
    o.poll_threads = 0;
    o.handler_threads = 100000;
    expect_create_fails(&o, FXS_INVALID_ARGUMENT, "handler_threads 100000");
    o.handler_threads = 0;

    /* A port in use: the second server must not share it. */
    char err[256];
    fxr_server *a;
    assert_int_equal(fxr_server_create(&o, &a, err, sizeof err), 0);
    assert_non_null(a);
    int port = 0;
    assert_int_equal(fxr_server_start(a, &port), 0);
    assert_true(port > 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    o.listen = addr;
    expect_create_fails(&o, FXS_FAILED_PRECONDITION, "cannot listen on");
    assert_int_equal(fxr_server_shutdown(a, 0, -1, NULL, 0), 0);
    fxr_server_destroy(a);

    /* Created, never started: destroy must still release everything. */
    o.listen = "127.0.0.1:0";
    fxr_server *b;
    assert_int_equal(fxr_server_create(&o, &b, err, sizeof err), 0);
    assert_non_null(b);
    fxr_server_destroy(b);
    fxr_server_destroy(NULL);
}

static void test_add_service_errors(void **state)
{
    char err[256];
    fxr_server_opts o = { .listen = "127.0.0.1:0", .log = capture_log };
    fxr_server *s;
    assert_int_equal(fxr_server_create(&o, &s, err, sizeof err), 0);
    assert_non_null(s);
    fxr_method bad[] = { { "Unary", FXR_UNARY, FXP_ANY, h_unary }, { "Nope", FXR_UNARY, FXP_ANY, h_unary } };
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, bad, 2, NULL),
                     FXS_INVALID_ARGUMENT);
    assert_true(log_has("rpc: service fxtest.Echo has no method Nope"));
    fxr_method bad_kind[] = { { "Unary", (fxr_kind)7, FXP_ANY, h_unary } };
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, bad_kind, 1, NULL),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxr_server_add_service(s, NULL, NULL, 0, NULL), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, NULL, 1, NULL),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, echo_methods,
                                            N_ECHO_METHODS, NULL),
                     0);
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, echo_methods,
                                            N_ECHO_METHODS, NULL),
                     FXS_ALREADY_EXISTS);
    assert_true(log_has("rpc: service fxtest.Echo registered twice"));
    int port = 0;
    assert_int_equal(fxr_server_start(s, &port), 0);
    assert_true(port > 0);
    assert_int_equal(fxr_server_start(s, &port), FXS_FAILED_PRECONDITION);
    assert_int_equal(port, 0);
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, NULL, 0, NULL),
                     FXS_FAILED_PRECONDITION);
    assert_int_equal(fxr_server_shutdown(s, 0, -1, NULL, 0), 0);
    assert_int_equal(fxr_server_shutdown(s, 0, -1, NULL, 0), 0); /* twice is harmless */
    fxr_server_destroy(s);
}

static void test_unary(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256] = "junk";
    req.text = "hello";
    fxc_metadata md[] = { { "x-team", "blue" }, { "x-other", "1" } };
    fxc_call_opts co = { .timeout_ms = 5000, .md = md, .n_md = 2 };
    uint64_t before = fxr_server_total_calls(shared.srv);
    int rc = fxc_unary(shared.ch, "/fxtest.Echo/Unary", &req.base, REPLY_DESC,
                       (ProtobufCMessage **)&rep, &co, err, sizeof err);
    assert_int_equal(rc, FXS_OK);
    assert_string_equal(err, "");
    assert_non_null(rep);
    assert_string_equal(rep->text, "hello");
    assert_int_equal(rep->index, 42);
    assert_string_equal(rep->metadata, "blue");
    assert_string_equal(rep->path, "/fxtest.Echo/Unary");
    assert_true(strncmp(rep->peer, "ipv4:127.0.0.1:", 15) == 0);
    assert_true(rep->deadline_left_ms > 4000 && rep->deadline_left_ms <= 5100);
    assert_int_equal(fxr_server_total_calls(shared.srv), before + 1);
    protobuf_c_message_free_unpacked(&rep->base, NULL);

    /* Without metadata the handler sees none; an empty request is valid. */
    Fxtest__EchoRequest empty = FXTEST__ECHO_REQUEST__INIT;
    assert_int_equal(call_echo(shared.ch, "Unary", &empty, &rep, 0, err, sizeof err), FXS_OK);
    assert_string_equal(rep->text, "");
    assert_string_equal(rep->metadata, "");
    /* timeout_ms 0 means 30 s (the grpc-timeout header rounds up a little) */
    assert_true(rep->deadline_left_ms > 25000 && rep->deadline_left_ms <= 30500);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

typedef struct {
    int n, last, bad_order, stop_after;
} stream_seen;

static int on_stream_msg(const ProtobufCMessage *m, void *data)
{
    stream_seen *s = data;
    const Fxtest__EchoReply *r = (const Fxtest__EchoReply *)m;
    if (r->index != s->n || strcmp(r->text, "s") != 0)
        s->bad_order++;
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

static void test_client_bad_args(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *rep = (ProtobufCMessage *)&req; /* must be reset to NULL */
    char err[256];
    assert_int_equal(fxc_unary(shared.ch, NULL, &req.base, REPLY_DESC, &rep, NULL, err,
                               sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_null(rep);
    assert_non_null(strstr(err, "path"));
    assert_int_equal(fxc_unary(shared.ch, "no-slash", &req.base, REPLY_DESC, &rep, NULL, err,
                               sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxc_unary(NULL, "/fxtest.Echo/Unary", &req.base, REPLY_DESC, &rep, NULL,
                               err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "no channel"));
    assert_int_equal(fxc_unary(shared.ch, "/fxtest.Echo/Unary", NULL, REPLY_DESC, &rep, NULL,
                               err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    fxc_metadata md[] = { { "x-team", NULL } };
    fxc_call_opts co = { .md = md, .n_md = 1 };
    assert_int_equal(fxc_unary(shared.ch, "/fxtest.Echo/Unary", &req.base, REPLY_DESC, &rep,
                               &co, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "metadata entry 0"));
    /* gRPC's own rule: keys are lowercase */
    fxc_metadata upper[] = { { "X-Team", "blue" } };
    fxc_call_opts co_upper = { .md = upper, .n_md = 1, .timeout_ms = 5000 };
    assert_int_equal(fxc_unary(shared.ch, "/fxtest.Echo/Unary", &req.base, REPLY_DESC, &rep,
                               &co_upper, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "metadata rejected"));
    stream_seen seen = { 0 };
    assert_int_equal(fxc_server_stream(shared.ch, "/fxtest.Echo/ServerStream", &req.base,
                                       REPLY_DESC, on_stream_msg, &seen, &co_upper, err,
                                       sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "metadata rejected"));
    co.n_md = -1;
    assert_int_equal(fxc_unary(shared.ch, "/fxtest.Echo/Unary", &req.base, REPLY_DESC, &rep,
                               &co, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_null(fxc_channel_create(NULL, NULL));
    fxc_channel_free(NULL);
    /* A response that does not parse as the type asked for. */
    Fxtest__EchoRequest big = FXTEST__ECHO_REQUEST__INIT;
    big.size = 16; /* EchoReply.data = field 5, length-delimited */
    assert_int_equal(call_echo(shared.ch, "Big", &big, (Fxtest__EchoReply **)&rep, 5000, err,
                               sizeof err),
                     FXS_OK);
    protobuf_c_message_free_unpacked(rep, NULL);
    fxc_call_opts co2 = { .timeout_ms = 5000 };
    /* field 5 as an int64 (EchoRequest.size is field 4, value is 6) would
     * parse; ask for a type whose field 5 is a varint instead */
    assert_int_equal(fxc_unary(shared.ch, "/fxtest.Echo/Big", &big.base, REQ_DESC, &rep, &co2,
                               err, sizeof err),
                     FXS_INTERNAL);
    assert_null(rep);
    assert_non_null(strstr(err, "cannot parse the response as fxtest.EchoRequest"));
}

static void test_server_stream(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    char err[256];
    fxc_call_opts co = { .timeout_ms = 5000 };
    req.text = "s";
    req.count = 50;
    stream_seen seen = { 0 };
    assert_int_equal(fxc_server_stream(shared.ch, "/fxtest.Echo/ServerStream", &req.base,
                                       REPLY_DESC, on_stream_msg, &seen, &co, err, sizeof err),
                     FXS_OK);
    assert_int_equal(seen.n, 50);
    assert_int_equal(seen.bad_order, 0);

    stream_seen none = { 0 };
    req.count = 0;
    assert_int_equal(fxc_server_stream(shared.ch, "/fxtest.Echo/ServerStream", &req.base,
                                       REPLY_DESC, on_stream_msg, &none, &co, err, sizeof err),
                     FXS_OK);
    assert_int_equal(none.n, 0);

    /* An error status on a stream reaches the caller as well. */
    req.code = FXS_PERMISSION_DENIED;
    req.text = "no";
    assert_int_equal(fxc_server_stream(shared.ch, "/fxtest.Echo/Fail", &req.base, REPLY_DESC,
                                       on_stream_msg, &none, &co, err, sizeof err),
                     FXS_PERMISSION_DENIED);
    assert_string_equal(err, "failing as asked: no");
    assert_int_equal(none.n, 0);
    assert_int_equal(fxc_server_stream(shared.ch, "/fxtest.Echo/ServerStream", &req.base,
                                       REPLY_DESC, NULL, NULL, &co, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
}

/* No bidi client in rpcc.h: a server-streaming call (one message, then
 * half-close) still drives the bidi path's fxr_recv and fxr_send. */
static void test_bidi(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    char err[256];
    fxc_call_opts co = { .timeout_ms = 5000 };
    req.text = "s";
    stream_seen seen = { 0 };
    assert_int_equal(fxc_server_stream(shared.ch, "/fxtest.Echo/Bidi", &req.base, REPLY_DESC,
                                       on_stream_msg, &seen, &co, err, sizeof err),
                     FXS_OK);
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.bad_order, 0);
    /* a message that does not parse ends the stream with the handler's status */
    const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
    void *resp = NULL;
    size_t len = 0;
    assert_int_equal(fxc_unary_raw(shared.ch, "/fxtest.Echo/Bidi", junk, sizeof junk, &resp,
                                   &len, &co, err, sizeof err),
                     FXS_CANCELLED);
    assert_string_equal(err, "bidi stream broken");
}

static bool stream_cancel_seen(void)
{
    return atomic_load(&stream_saw_cancel) > 0;
}

static void test_server_stream_client_cancel(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    char err[256];
    fxc_call_opts co = { .timeout_ms = 10000 };
    req.text = "s";
    req.count = 1000000;
    req.sleep_ms = 1;
    stream_seen seen = { .stop_after = 3 };
    atomic_store(&stream_saw_cancel, 0);
    int64_t t0 = now_ms();
    int rc = fxc_server_stream(shared.ch, "/fxtest.Echo/ServerStream", &req.base, REPLY_DESC,
                               on_stream_msg, &seen, &co, err, sizeof err);
    assert_int_equal(rc, FXS_CANCELLED);
    assert_int_equal(seen.n, 3);
    assert_true(now_ms() - t0 < 5000);
    /* the server's fxr_send noticed and the handler stopped */
    assert_true(wait_for(stream_cancel_seen, 5000));
}

typedef struct {
    int sent, released, n, fail_at;
    Fxtest__EchoRequest msgs[8];
} upload;

static const ProtobufCMessage *next_chunk(void *data, int *fail)
{
    upload *u = data;
    if (u->fail_at && u->sent == u->fail_at) {
        *fail = 1;
        return NULL;
    }
    if (u->sent == u->n)
        return NULL;
    Fxtest__EchoRequest *m = &u->msgs[u->sent % 8];
    fxtest__echo_request__init(m);
    m->value = ++u->sent;
    return &m->base;
}

static void release_chunk(const ProtobufCMessage *m, void *data)
{
    ((upload *)data)->released++;
}

static bool upload_cancel_seen(void)
{
    return atomic_load(&upload_saw_cancel) > 0;
}

static void test_client_stream(void **state)
{
    char err[256];
    fxc_call_opts co = { .timeout_ms = 5000 };
    Fxtest__EchoReply *rep = NULL;
    upload u = { .n = 100 };
    assert_int_equal(fxc_client_stream(shared.ch, "/fxtest.Echo/ClientStream", next_chunk,
                                       release_chunk, &u, REPLY_DESC, (ProtobufCMessage **)&rep,
                                       &co, err, sizeof err),
                     FXS_OK);
    assert_int_equal(rep->sum, 5050);
    assert_int_equal(rep->index, 100);
    assert_int_equal(u.released, 100);
    protobuf_c_message_free_unpacked(&rep->base, NULL);

    upload empty = { .n = 0 };
    assert_int_equal(fxc_client_stream(shared.ch, "/fxtest.Echo/ClientStream", next_chunk, NULL,
                                       &empty, REPLY_DESC, (ProtobufCMessage **)&rep, &co, err,
                                       sizeof err),
                     FXS_OK);
    assert_int_equal(rep->sum, 0);
    assert_int_equal(rep->index, 0);
    protobuf_c_message_free_unpacked(&rep->base, NULL);

    /* next() asks to fail: the call is cancelled, and the server's
     * fxr_recv says so. */
    upload failing = { .n = 100, .fail_at = 10 };
    atomic_store(&upload_saw_cancel, 0);
    assert_int_equal(fxc_client_stream(shared.ch, "/fxtest.Echo/ClientStream", next_chunk,
                                       release_chunk, &failing, REPLY_DESC,
                                       (ProtobufCMessage **)&rep, &co, err, sizeof err),
                     FXS_CANCELLED);
    assert_null(rep);
    assert_int_equal(failing.released, 10);
    assert_true(wait_for(upload_cancel_seen, 5000));
}

static void test_unimplemented(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    assert_int_equal(call_echo(shared.ch, "Nope", &req, &rep, 5000, err, sizeof err),
                     FXS_UNIMPLEMENTED);
    assert_null(rep);
    assert_string_equal(err, "unknown method /fxtest.Echo/Nope");
    assert_true(log_has("warn: rpc: unknown method /fxtest.Echo/Nope from ipv4:127.0.0.1:"));

    assert_int_equal(call_echo(shared.ch, "NoHandler", &req, &rep, 5000, err, sizeof err),
                     FXS_UNIMPLEMENTED);
    assert_string_equal(err, "method /fxtest.Echo/NoHandler is not implemented");

    fxc_call_opts co = { .timeout_ms = 5000 };
    assert_int_equal(fxc_unary(shared.ch, "/other.Service/Unary", &req.base, REPLY_DESC,
                               (ProtobufCMessage **)&rep, &co, err, sizeof err),
                     FXS_UNIMPLEMENTED);
    assert_string_equal(err, "unknown method /other.Service/Unary");
    /* a client-streaming call to an unknown method is answered too */
    upload u = { .n = 3 };
    assert_int_equal(fxc_client_stream(shared.ch, "/fxtest.Echo/Missing", next_chunk, NULL, &u,
                                       REPLY_DESC, (ProtobufCMessage **)&rep, &co, err,
                                       sizeof err),
                     FXS_UNIMPLEMENTED);
}

static void test_status_propagation(void **state)
{
    const int codes[] = { FXS_CANCELLED, FXS_INVALID_ARGUMENT, FXS_NOT_FOUND,
                          FXS_FAILED_PRECONDITION, FXS_INTERNAL, FXS_UNAUTHENTICATED };
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
        Fxtest__EchoReply *rep = NULL;
        char err[256], want[64];
        req.code = codes[i];
        req.text = "tensor 'x' has shape [2,3], expected [2,4]";
        assert_int_equal(call_echo(shared.ch, "Fail", &req, &rep, 5000, err, sizeof err),
                         codes[i]);
        assert_null(rep);
        assert_string_equal(err, "failing as asked: tensor 'x' has shape [2,3], expected [2,4]");
        /* a short err buffer gets a truncated, terminated message */
        assert_int_equal(call_echo(shared.ch, "Fail", &req, &rep, 5000, want, 8), codes[i]);
        assert_string_equal(want, "failing");
    }
    /* fxr_fail with OK must not read as success */
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    req.text = "ok?";
    assert_int_equal(call_echo(shared.ch, "Fail", &req, &rep, 5000, err, sizeof err),
                     FXS_UNKNOWN);
}

static bool slow_cancel_seen(void)
{
    return atomic_load(&slow_saw_cancel) > 0;
}

static void test_deadline(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    req.sleep_ms = 10000;
    atomic_store(&slow_saw_cancel, 0);
    int64_t t0 = now_ms();
    assert_int_equal(call_echo(shared.ch, "Slow", &req, &rep, 200, err, sizeof err),
                     FXS_DEADLINE_EXCEEDED);
    int64_t took = now_ms() - t0;
    assert_true(took >= 150 && took < 3000);
    assert_true(wait_for(slow_cancel_seen, 5000));
    /* a slow call within its deadline succeeds */
    req.sleep_ms = 50;
    assert_int_equal(call_echo(shared.ch, "Slow", &req, &rep, 5000, err, sizeof err), FXS_OK);
    assert_string_equal(rep->text, "slept");
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

static void test_big_messages(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    /* over gRPC's 4 MiB default, under our 64 MiB */
    req.size = 8 << 20;
    assert_int_equal(call_echo(shared.ch, "Big", &req, &rep, 20000, err, sizeof err), FXS_OK);
    assert_int_equal(rep->data.len, 8 << 20);
    size_t bad = 0;
    for (size_t i = 0; i < rep->data.len; i++)
        bad += rep->data.data[i] != (uint8_t)(i * 7 % 251);
    assert_int_equal(bad, 0);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    /* and a big request (in a bytes field: a string over 64 KiB is refused) */
    char *text = malloc(6 << 20);
    assert_non_null(text);
    memset(text, 'a', (6 << 20) - 1);
    text[(6 << 20) - 1] = '\0';
    req.size = 0;
    req.blob.data = (uint8_t *)text;
    req.blob.len = 6 << 20;
    assert_int_equal(call_echo(shared.ch, "Unary", &req, &rep, 20000, err, sizeof err), FXS_OK);
    assert_int_equal(rep->data.len, 6 << 20);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    req.blob.len = 0;
    req.text = text;
    assert_int_equal(call_echo(shared.ch, "Unary", &req, &rep, 20000, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "text: 6291455 bytes, the limit is 65536");
    free(text);
}

static void test_oversize(void **state)
{
    env e = start_env(64 << 10, 32 << 10);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    char *text = malloc(100 << 10);
    assert_non_null(text);
    memset(text, 'x', (100 << 10) - 1);
    text[(100 << 10) - 1] = '\0';
    req.text = text;
    assert_int_equal(call_echo(e.ch, "Unary", &req, &rep, 5000, err, sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    assert_null(rep);
    free(text);
    /* the server keeps serving */
    req.text = "small";
    assert_int_equal(call_echo(e.ch, "Unary", &req, &rep, 5000, err, sizeof err), FXS_OK);
    assert_string_equal(rep->text, "small");
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    /* a response over the client's limit */
    req.size = 40 << 10;
    assert_int_equal(call_echo(e.ch, "Big", &req, &rep, 5000, err, sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    assert_null(rep);
    req.size = 1000;
    assert_int_equal(call_echo(e.ch, "Big", &req, &rep, 5000, err, sizeof err), FXS_OK);
    assert_int_equal(rep->data.len, 1000);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    stop_env(&e);
}

/* A reply over the server's send limit is answered RESOURCE_EXHAUSTED
 * naming the flag (gRPC's own refusal does not), and the in-flight
 * accounting of the requests is back at 0 after each call, a refused one
 * too (issue 19, limits). */
static void test_reply_over_send_limit(void **state)
{
    fxr_server_opts o = { .listen = "127.0.0.1:0", .max_send_bytes = 64 << 10,
                          .max_inflight_bytes_per_peer = 48 << 10, .log = capture_log };
    env e = start_env_opts(&o, 1 << 20);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    req.size = 100 << 10;
    assert_int_equal(call_echo(e.ch, "Big", &req, &rep, 5000, err, sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    assert_null(rep);
    assert_non_null(strstr(err, "over the message limit of 65536 bytes (--max-message-mb)"));
    req.size = 1000;
    assert_int_equal(call_echo(e.ch, "Big", &req, &rep, 5000, err, sizeof err), FXS_OK);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    /* a request over the client's in-flight cap, refused before its handler */
    uint8_t *blob = calloc(1, 50 << 10);
    req.size = 0;
    req.blob.data = blob;
    req.blob.len = 50 << 10;
    assert_int_equal(call_echo(e.ch, "Unary", &req, &rep, 5000, err, sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "(--max-inflight-mb-per-client"));
    free(blob);
    const char *name;
    assert_int_equal(fxr_server_limit_rejections(e.srv, &name, 1), 1);
    assert_string_equal(name, "inflight_bytes_per_client");
    for (int i = 0; i < 100 && fxr_server_inflight_bytes(e.srv); i++)
        usleep(10000); /* the call's state is freed just after its status is sent */
    assert_int_equal(fxr_server_inflight_bytes(e.srv), 0);
    stop_env(&e);
}

static void test_unparseable(void **state)
{
    char err[256];
    void *resp = (void *)1;
    size_t len = 99;
    fxc_call_opts co = { .timeout_ms = 5000 };
    /* field 0 is invalid and wire type 7 does not exist */
    const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
    assert_int_equal(fxc_unary_raw(shared.ch, "/fxtest.Echo/Unary", junk, sizeof junk, &resp,
                                   &len, &co, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_null(resp);
    assert_int_equal(len, 0);
    assert_string_equal(err, "cannot parse fxtest.EchoRequest");
    assert_true(log_has("cannot parse fxtest.EchoRequest from ipv4:"));
    /* a truncated string field */
    const uint8_t cut[] = { 0x0a, 0x10, 'a', 'b' };
    assert_int_equal(fxc_unary_raw(shared.ch, "/fxtest.Echo/ServerStream", cut, sizeof cut, &resp,
                                   &len, &co, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    /* good bytes by hand: text = "hi" */
    const uint8_t good[] = { 0x0a, 0x02, 'h', 'i' };
    assert_int_equal(fxc_unary_raw(shared.ch, "/fxtest.Echo/Unary", good, sizeof good, &resp,
                                   &len, &co, err, sizeof err),
                     FXS_OK);
    Fxtest__EchoReply *rep = fxtest__echo_reply__unpack(NULL, len, resp);
    assert_non_null(rep);
    assert_string_equal(rep->text, "hi");
    fxtest__echo_reply__free_unpacked(rep, NULL);
    free(resp);
    /* zero bytes is a valid (empty) message */
    assert_int_equal(fxc_unary_raw(shared.ch, "/fxtest.Echo/Unary", NULL, 0, &resp, &len, &co,
                                   err, sizeof err),
                     FXS_OK);
    free(resp);
    /* an unparseable message in a client stream: the handler sees -1 */
    const uint8_t *none = NULL;
    assert_int_equal(fxc_unary_raw(shared.ch, "/fxtest.Echo/ClientStream", junk, sizeof junk,
                                   &resp, &len, &co, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "client stream broken after 0 messages");
    assert_int_equal(fxc_unary_raw(shared.ch, "/fxtest.Echo/Unary", none, 3, &resp, &len, &co,
                                   err, sizeof err),
                     FXS_INVALID_ARGUMENT);
}

#define N_THREADS 8
#define N_CALLS 200

static void *hammer(void *arg)
{
    intptr_t id = (intptr_t)arg;
    intptr_t bad = 0;
    for (int i = 0; i < N_CALLS; i++) {
        Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
        Fxtest__EchoReply *rep = NULL;
        char text[32], err[128];
        snprintf(text, sizeof text, "t%d-%d", (int)id, i);
        req.text = text;
        if (call_echo(shared.ch, i % 10 == 9 ? "Deferred" : "Unary", &req, &rep, 10000, err,
                      sizeof err) != FXS_OK) {
            bad++;
            continue;
        }
        if (i % 10 == 9) {
            char want[64];
            snprintf(want, sizeof want, "deferred:%s", text);
            bad += strcmp(rep->text, want) != 0;
        } else {
            bad += strcmp(rep->text, text) != 0;
        }
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    return (void *)bad;
}

static void test_concurrent(void **state)
{
    pthread_t th[N_THREADS];
    uint64_t before = fxr_server_total_calls(shared.srv);
    int64_t t0 = now_ms();
    for (intptr_t i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, (void *)i), 0);
    intptr_t bad = 0;
    for (int i = 0; i < N_THREADS; i++) {
        void *r;
        pthread_join(th[i], &r);
        bad += (intptr_t)r;
    }
    int64_t took = now_ms() - t0;
    print_message("%d threads x %d calls on one channel: %lld ms (%.0f calls/s)\n", N_THREADS,
                  N_CALLS, (long long)took, N_THREADS * N_CALLS * 1000.0 / (took ? took : 1));
    assert_int_equal(bad, 0);
    assert_int_equal(fxr_server_total_calls(shared.srv) - before, N_THREADS * N_CALLS);
}

static bool shared_idle(void)
{
    return fxr_server_in_flight(shared.srv) == 0;
}

static void *poller_caller(void *arg)
{
    int i = (int)(intptr_t)arg;
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    bool ok = true;
    req.text = i % 2 ? "defer" : "x";
    for (int k = 0; k < 20 && ok; k++) {
        ok = call_echo(shared.ch, "OnPoller", &req, &rep, 5000, err, sizeof err) == FXS_OK &&
             strcmp(rep->text, i % 2 ? "pool:defer" : "poller:x") == 0;
        if (rep)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        rep = NULL;
    }
    return ok ? (char *)arg + 1 : NULL;
}

static void test_deferred(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    req.text = "later";
    assert_int_equal(call_echo(shared.ch, "Deferred", &req, &rep, 5000, err, sizeof err), FXS_OK);
    assert_string_equal(rep->text, "deferred:later");
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    /* a deferred reply after the deadline only releases the call */
    req.sleep_ms = 1000;
    assert_int_equal(call_echo(shared.ch, "Deferred", &req, &rep, 100, err, sizeof err),
                     FXS_DEADLINE_EXCEEDED);
    assert_null(rep);
    assert_int_equal(fxr_server_in_flight(shared.srv), 1);
    assert_true(wait_for(shared_idle, 3000));
}

/* A FXR_UNARY_POLLER handler runs on the poller (fxr_on_poller); one that
 * defers runs again on the pool with the same request, and is answered
 * once. Other unary handlers never see fxr_on_poller. */
static void test_on_poller(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    req.text = "here";
    assert_int_equal(call_echo(shared.ch, "OnPoller", &req, &rep, 5000, err, sizeof err), FXS_OK);
    assert_string_equal(rep->text, "poller:here");
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    int before = atomic_load(&poller_deferrals);
    req.text = "defer";
    assert_int_equal(call_echo(shared.ch, "OnPoller", &req, &rep, 5000, err, sizeof err), FXS_OK);
    assert_string_equal(rep->text, "pool:defer");
    assert_int_equal(rep->index, before + 1);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    /* many at once, half of them deferred: each answered once */
    enum { N = 16 };
    pthread_t th[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&th[i], NULL, poller_caller, (void *)(intptr_t)i), 0);
    for (int i = 0; i < N; i++) {
        void *ok;
        pthread_join(th[i], &ok);
        assert_non_null(ok);
    }
    assert_true(wait_for(shared_idle, 3000));
}

static void test_metadata_truncated(void **state)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256], value[101];
    memset(value, 'v', 100);
    value[100] = '\0';
    fxc_metadata md[] = { { "x-team", value } };
    fxc_call_opts co = { .timeout_ms = 5000, .md = md, .n_md = 1 };
    assert_int_equal(fxc_unary(shared.ch, "/fxtest.Echo/Unary", &req.base, REPLY_DESC,
                               (ProtobufCMessage **)&rep, &co, err, sizeof err),
                     FXS_OK);
    /* h_unary's buffer holds 64 bytes: 63 and the terminator */
    assert_int_equal(strlen(rep->metadata), 63);
    assert_memory_equal(rep->metadata, value, 63);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_refused(void **state)
{
    char target[64], err[256];
    snprintf(target, sizeof target, "127.0.0.1:%d", free_port());
    fxc_channel *ch = fxc_channel_create(target, NULL);
    assert_non_null(ch);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(call_echo(ch, "Unary", &req, &rep, 10000, err, sizeof err),
                     FXS_UNAVAILABLE);
    assert_true(now_ms() - t0 < 3000);
    assert_true(strlen(err) > 0);
    stream_seen seen = { 0 };
    fxc_call_opts co = { .timeout_ms = 10000 };
    assert_int_equal(fxc_server_stream(ch, "/fxtest.Echo/ServerStream", &req.base, REPLY_DESC,
                                       on_stream_msg, &seen, &co, err, sizeof err),
                     FXS_UNAVAILABLE);
    upload u = { .n = 5 };
    assert_int_equal(fxc_client_stream(ch, "/fxtest.Echo/ClientStream", next_chunk,
                                       release_chunk, &u, REPLY_DESC, (ProtobufCMessage **)&rep,
                                       &co, err, sizeof err),
                     FXS_UNAVAILABLE);
    assert_int_equal(u.released, u.sent); /* whatever was taken was released */
    assert_true(now_ms() - t0 < 6000);
    fxc_channel_free(ch);

    /* a target that does not parse shows up on the first call */
    ch = fxc_channel_create("bad target:::x", NULL);
    assert_non_null(ch);
    assert_int_equal(call_echo(ch, "Unary", &req, &rep, 2000, err, sizeof err),
                     FXS_UNAVAILABLE);
    fxc_channel_free(ch);
}

typedef struct {
    fxc_channel *ch;
    bool ignore_cancel;
    int rc;
    int64_t took_ms;
    int sleep_ms; /* 0: 800 when ignoring the cancel, else 20000 */
} slow_client;

static void *slow_call(void *arg)
{
    slow_client *c = arg;
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    req.sleep_ms = c->sleep_ms ? c->sleep_ms : c->ignore_cancel ? 800 : 20000;
    req.ignore_cancel = c->ignore_cancel;
    int64_t t0 = now_ms();
    c->rc = call_echo(c->ch, "Slow", &req, &rep, 30000, err, sizeof err);
    c->took_ms = now_ms() - t0;
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    return NULL;
}

static fxr_server *shutdown_srv;

static bool five_in_flight(void)
{
    return fxr_server_in_flight(shutdown_srv) == 5;
}

static bool one_in_flight(void)
{
    return fxr_server_in_flight(shutdown_srv) == 1;
}

static void test_shutdown_in_flight(void **state)
{
    env e = start_env(0, 0);
    slow_client c[5];
    pthread_t th[5];
    for (int i = 0; i < 5; i++) {
        c[i] = (slow_client){ .ch = e.ch, .ignore_cancel = i == 4, .rc = -1 };
        assert_int_equal(pthread_create(&th[i], NULL, slow_call, &c[i]), 0);
    }
    shutdown_srv = e.srv;
    assert_true(wait_for(five_in_flight, 5000));
    atomic_store(&slow_saw_cancel, 0);
    int64_t t0 = now_ms();
    assert_int_equal(fxr_server_shutdown(e.srv, 200, -1, NULL, 0), 0);
    int64_t took = now_ms() - t0;
    /* the ignoring handler holds its call for 800 ms; nothing waits longer */
    assert_true(took < 800 + 1500);
    assert_int_equal(fxr_server_in_flight(e.srv), 0);
    for (int i = 0; i < 5; i++) {
        pthread_join(th[i], NULL);
        assert_true(c[i].rc != FXS_OK || i == 4);
        assert_true(c[i].took_ms < 5000);
    }
    assert_int_equal(atomic_load(&slow_saw_cancel), 4);
    /* the honouring ones saw the cancel once the grace was over; their
     * clients get CANCELLED, or UNAVAILABLE when the connection closed first */
    for (int i = 0; i < 4; i++)
        assert_true(c[i].rc == FXS_CANCELLED || c[i].rc == FXS_UNAVAILABLE);
    /* the ignoring one was cancelled by the server after the grace */
    assert_true(c[4].rc != FXS_OK);
    fxr_server_destroy(e.srv);

    /* new calls to a stopped server fail fast */
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    assert_int_equal(call_echo(e.ch, "Unary", &req, &rep, 5000, err, sizeof err),
                     FXS_UNAVAILABLE);
    fxc_channel_free(e.ch);
}

/* One handler thread, kept busy: a unary call queues behind it and times
 * out (its handler then never runs), while a client stream, which has a
 * thread of its own, is served at once. */
static void test_busy_pool(void **state)
{
    fxr_server_opts o = { .listen = "127.0.0.1:0", .handler_threads = 1, .poll_threads = 1,
                          .log = capture_log };
    env e = start_env_opts(&o, 0);
    slow_client busy = { .ch = e.ch, .ignore_cancel = true, .rc = -1 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_call, &busy), 0);
    shutdown_srv = e.srv;
    assert_true(wait_for(one_in_flight, 5000));

    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    int runs = atomic_load(&unary_runs);
    assert_int_equal(call_echo(e.ch, "Unary", &req, &rep, 100, err, sizeof err),
                     FXS_DEADLINE_EXCEEDED);
    upload u = { .n = 10 };
    fxc_call_opts co = { .timeout_ms = 300 };
    assert_int_equal(fxc_client_stream(e.ch, "/fxtest.Echo/ClientStream", next_chunk, NULL, &u,
                                       REPLY_DESC, (ProtobufCMessage **)&rep, &co, err,
                                       sizeof err),
                     FXS_OK);
    assert_int_equal(rep->sum, 55);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    pthread_join(th, NULL);
    assert_int_equal(busy.rc, FXS_OK);
    /* the pool is free again; the expired call was dropped, not run */
    assert_int_equal(call_echo(e.ch, "Unary", &req, &rep, 5000, err, sizeof err), FXS_OK);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    assert_int_equal(atomic_load(&unary_runs), runs + 1);
    stop_env(&e);
}

typedef struct {
    fxc_channel *ch;
    int rc;
    upload u;
} slow_upload;

/* next() for an upload that dawdles: 20 ms per chunk, 500 chunks */
static const ProtobufCMessage *next_slow_chunk(void *data, int *fail)
{
    sleep_ms(20);
    return next_chunk(data, fail);
}

static void *slow_upload_main(void *arg)
{
    slow_upload *su = arg;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    fxc_call_opts co = { .timeout_ms = 30000 };
    su->rc = fxc_client_stream(su->ch, "/fxtest.Echo/ClientStream", next_slow_chunk, NULL,
                               &su->u, REPLY_DESC, (ProtobufCMessage **)&rep, &co, err,
                               sizeof err);
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    return NULL;
}

/* A client stream (a thread of its own) still uploading at shutdown: it is
 * cancelled after the grace, its handler's fxr_recv fails, its thread ends. */
static void test_shutdown_upload(void **state)
{
    env e = start_env(0, 0);
    slow_upload su = { .ch = e.ch, .rc = -1, .u = { .n = 500 } };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_upload_main, &su), 0);
    shutdown_srv = e.srv;
    assert_true(wait_for(one_in_flight, 5000));
    sleep_ms(100);
    atomic_store(&upload_saw_cancel, 0);
    int64_t t0 = now_ms();
    assert_int_equal(fxr_server_shutdown(e.srv, 200, -1, NULL, 0), 0);
    assert_true(now_ms() - t0 < 200 + 1500);
    assert_int_equal(atomic_load(&upload_saw_cancel), 1);
    pthread_join(th, NULL);
    assert_true(su.rc != FXS_OK);
    assert_true(su.u.sent < 500);
    fxr_server_destroy(e.srv);
    fxc_channel_free(e.ch);
}

typedef struct {
    fxr_server *srv;
    int grace_ms, release_ms, rc;
    char err[256];
    int64_t took_ms;
} shutdown_run;

static void *shutdown_main(void *arg)
{
    shutdown_run *r = arg;
    int64_t t0 = now_ms();
    r->rc = fxr_server_shutdown(r->srv, r->grace_ms, r->release_ms, r->err, sizeof r->err);
    r->took_ms = now_ms() - t0;
    return NULL;
}

static bool shutdown_idle(void)
{
    return fxr_server_in_flight(shutdown_srv) == 0;
}

/* Defect 9: during the grace, a call in flight finishes OK while a new one
 * is answered UNAVAILABLE by the server itself (gRPC's own shutdown, which
 * drops calls it received but had not handed over, comes after). */
static void test_shutdown_new_calls_unavailable(void **state)
{
    env e = start_env(0, 0);
    static slow_client slow; /* static: a failed assertion leaves its thread */
    slow = (slow_client){ .ch = e.ch, .ignore_cancel = true, .rc = -1 };
    pthread_t th, sd;
    assert_int_equal(pthread_create(&th, NULL, slow_call, &slow), 0); /* 800 ms */
    shutdown_srv = e.srv;
    assert_true(wait_for(one_in_flight, 5000));
    static shutdown_run run;
    run = (shutdown_run){ .srv = e.srv, .grace_ms = 5000, .release_ms = 1000 };
    assert_int_equal(pthread_create(&sd, NULL, shutdown_main, &run), 0);
    sleep_ms(100);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    assert_int_equal(call_echo(e.ch, "Unary", &req, &rep, 5000, err, sizeof err),
                     FXS_UNAVAILABLE);
    if (!strstr(err, "the server is shutting down"))
        fail_msg("a call during the drain: '%s'", err);
    pthread_join(th, NULL);
    assert_int_equal(slow.rc, FXS_OK); /* in flight at the start: finished */
    pthread_join(sd, NULL);
    assert_int_equal(run.rc, 0);
    assert_true(run.took_ms < 800 + 1000); /* no waiting out the grace */
    fxr_server_destroy(e.srv);
    fxc_channel_free(e.ch);
}

/* Defect 9: a handler that ignores the cancel cannot hold the shutdown
 * past release_ms: it returns DEADLINE_EXCEEDED, naming what is held, and
 * leaves the server alone; once the handler lets go, destroy frees it. */
static void test_shutdown_gives_up(void **state)
{
    env e = start_env(0, 0);
    static slow_client slow; /* static: a failed assertion leaves its thread */
    slow = (slow_client){ .ch = e.ch, .ignore_cancel = true, .rc = -1, .sleep_ms = 1500 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_call, &slow), 0);
    shutdown_srv = e.srv;
    assert_true(wait_for(one_in_flight, 5000));
    char err[256] = "";
    int64_t t0 = now_ms();
    assert_int_equal(fxr_server_shutdown(e.srv, 100, 200, err, sizeof err),
                     FXS_DEADLINE_EXCEEDED);
    int64_t took = now_ms() - t0;
    print_message("shutdown gave up after %lld ms (grace 100 ms, release 200 ms): %s\n",
                  (long long)took, err);
    assert_true(took >= 250 && took < 800);
    if (!strstr(err, "1 calls still held"))
        fail_msg("'%s' does not say what is held", err);
    assert_int_equal(fxr_server_shutdown(e.srv, 0, 0, err, sizeof err), FXS_DEADLINE_EXCEEDED);
    fxr_server_destroy(e.srv); /* the handler still holds its call: not freed */
    assert_true(log_has("not freed: handlers still hold calls"));
    pthread_join(th, NULL);
    assert_true(slow.rc != FXS_OK); /* cancelled after the grace */
    assert_true(wait_for(shutdown_idle, 3000));
    fxr_server_destroy(e.srv); /* now it is */
    fxc_channel_free(e.ch);
}

static void test_shutdown_idle_fast(void **state)
{
    env e = start_env(0, 0);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    assert_int_equal(call_echo(e.ch, "Unary", &req, &rep, 5000, err, sizeof err), FXS_OK);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    int64_t t0 = now_ms();
    assert_int_equal(fxr_server_shutdown(e.srv, 5000, -1, NULL, 0), 0);
    assert_true(now_ms() - t0 < 1000); /* nothing in flight: no waiting out the grace */
    fxr_server_destroy(e.srv);
    fxc_channel_free(e.ch);
}

/* ------------------------------------------------------ stream limits */

/* next() of an upload that sends u->n chunks, each after u->gap_ms, then
 * (when hold is set) waits until hold is cleared before ending its stream:
 * an idle client. */
typedef struct {
    upload u;
    int gap_ms;
    atomic_int *hold;
    fxc_channel *ch;
    const char *path;
    int rc;
    char err[256];
    atomic_int done;
    int64_t took_ms;
} idle_stream;

static const ProtobufCMessage *next_idle_chunk(void *data, int *fail)
{
    idle_stream *is = data;
    if (is->u.sent < is->u.n) {
        if (is->gap_ms)
            sleep_ms(is->gap_ms);
        return next_chunk(&is->u, fail);
    }
    while (is->hold && atomic_load(is->hold))
        sleep_ms(5);
    return NULL;
}

static void *idle_stream_main(void *arg)
{
    idle_stream *is = arg;
    Fxtest__EchoReply *rep = NULL;
    fxc_call_opts co = { .timeout_ms = 20000 };
    int64_t t0 = now_ms();
    is->rc = fxc_client_stream(is->ch, is->path ? is->path : "/fxtest.Echo/ClientStream",
                               next_idle_chunk, NULL, is, REPLY_DESC,
                               (ProtobufCMessage **)&rep, &co, is->err, sizeof is->err);
    is->took_ms = now_ms() - t0;
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    atomic_store(&is->done, 1);
    return NULL;
}

static fxr_server *limits_srv;

static bool limits_idle(void)
{
    return fxr_server_in_flight(limits_srv) == 0;
}

/* Defect 7: a client stream whose client sends nothing for the idle limit
 * is ended (DEADLINE_EXCEEDED with a message naming the limit) and its
 * handler thread freed, long before the client would have gone on; a slow
 * but steady client, and a server stream that is slow to send, are not
 * idle. */
static void test_stream_idle_timeout(void **state)
{
    fxr_server_opts o = { .listen = "127.0.0.1:0", .stream_idle_ms = 300, .log = capture_log };
    env e = start_env_opts(&o, 0);
    limits_srv = e.srv;
    /* static: a failed assertion leaves the client thread running */
    static atomic_int hold;
    static idle_stream is;
    atomic_store(&hold, 1);
    is = (idle_stream){ .u = { .n = 1 }, .hold = &hold, .ch = e.ch };
    pthread_t th;
    atomic_store(&upload_broken_ms, 0);
    int64_t t0 = now_ms();
    assert_int_equal(pthread_create(&th, NULL, idle_stream_main, &is), 0);
    /* the handler's fxr_recv fails after the idle limit, the call ends */
    sleep_ms(100);
    assert_true(wait_for(limits_idle, 2000));
    int64_t broken = atomic_load(&upload_broken_ms);
    assert_true(broken > 0);
    print_message("idle client stream ended after %lld ms (limit 300 ms)\n",
                  (long long)(broken - t0));
    assert_true(broken - t0 >= 250 && broken - t0 < 1500);
    assert_int_equal(atomic_load(&hold), 1); /* the client was still there */
    atomic_store(&hold, 0);
    pthread_join(th, NULL);
    assert_int_equal(is.rc, FXS_DEADLINE_EXCEEDED);
    if (!strstr(is.err, "stream idle limit") || !strstr(is.err, "--stream-idle-seconds"))
        fail_msg("message '%s' does not name the idle limit", is.err);
    assert_true(log_has("rpc: /fxtest.Echo/ClientStream from ipv4:127.0.0.1:"));

    /* 9 chunks 100 ms apart: 900 ms in all, never 300 ms without one (a
     * third of the limit: the TSan build is slow enough to stretch a gap) */
    idle_stream steady = { .u = { .n = 9 }, .gap_ms = 100, .ch = e.ch };
    idle_stream_main(&steady);
    assert_int_equal(steady.rc, FXS_OK);
    /* a server stream that waits 400 ms between messages */
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.text = "s";
    req.count = 3;
    req.sleep_ms = 400;
    stream_seen seen = { 0 };
    fxc_call_opts co = { .timeout_ms = 10000 };
    char err[256];
    assert_int_equal(fxc_server_stream(e.ch, "/fxtest.Echo/ServerStream", &req.base, REPLY_DESC,
                                       on_stream_msg, &seen, &co, err, sizeof err),
                     FXS_OK);
    assert_int_equal(seen.n, 3);
    stop_env(&e);
}

static const char *peer_of(fxc_channel *ch, char *buf, size_t len)
{
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep = NULL;
    char err[256];
    assert_int_equal(call_echo(ch, "Unary", &req, &rep, 5000, err, sizeof err), FXS_OK);
    snprintf(buf, len, "%s", rep->peer);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    return buf;
}

/* Waits until the server counts `want` calls in flight and has logged
 * `refusals` refused streams (or 5 s). The clients cannot tell: a refused
 * upload's client learns it only once its next() returns. */
static bool wait_server(int want, int refusals)
{
    int64_t end = now_ms() + 5000;
    while ((fxr_server_in_flight(limits_srv) != (uint64_t)want ||
            log_count("warn: rpc: refused") != refusals) && now_ms() < end)
        sleep_ms(5);
    return fxr_server_in_flight(limits_srv) == (uint64_t)want &&
           log_count("warn: rpc: refused") == refusals;
}

static void expect_refused(const idle_stream *is, const char *needle)
{
    assert_int_equal(is->rc, FXS_RESOURCE_EXHAUSTED);
    if (!strstr(is->err, needle))
        fail_msg("refusal '%s' does not name '%s'", is->err, needle);
}

/* Defect 7: at most max_streams streaming calls at once, and at most
 * max_streams_per_peer from one client connection; past either a new
 * stream (client or server streaming) is refused RESOURCE_EXHAUSTED at
 * once, naming the limit, while unary calls go on. */
static void test_stream_limits(void **state)
{
    fxr_server_opts o = { .listen = "127.0.0.1:0", .max_streams = 4, .max_streams_per_peer = 2,
                          .stream_idle_ms = -1, .log = capture_log };
    env e = start_env_opts(&o, 0);
    limits_srv = e.srv;
    /* channels with different arguments do not share a connection */
    char t[64];
    snprintf(t, sizeof t, "127.0.0.1:%d", e.port);
    fxc_channel *b = fxc_channel_create(t, &(fxc_channel_opts){ .max_recv_bytes = 1 << 20 });
    fxc_channel *c = fxc_channel_create(t, &(fxc_channel_opts){ .max_recv_bytes = 2 << 20 });
    char pa[128], pb[128], pc[128];
    peer_of(e.ch, pa, sizeof pa);
    peer_of(b, pb, sizeof pb);
    peer_of(c, pc, sizeof pc);
    assert_true(strcmp(pa, pb) != 0 && strcmp(pb, pc) != 0 && strcmp(pa, pc) != 0);

    static atomic_int hold; /* static: see test_stream_idle_timeout */
    static idle_stream is[6];
    pthread_t th[6];
    atomic_store(&hold, 1);
    int refusals = log_count("warn: rpc: refused");
    /* A: 2 held, its third refused (its own limit); B: 2 held, the server's
     * 4; C: refused (the server's limit). In that order, one at a time. */
    fxc_channel *chans[6] = { e.ch, e.ch, e.ch, b, b, c };
    const int in_flight[6] = { 1, 2, 2, 3, 4, 4 };
    for (int i = 0; i < 6; i++) {
        is[i] = (idle_stream){ .u = { .n = 1 }, .hold = &hold, .ch = chans[i], .rc = -1 };
        assert_int_equal(pthread_create(&th[i], NULL, idle_stream_main, &is[i]), 0);
        refusals += i == 2 || i == 5;
        if (!wait_server(in_flight[i], refusals))
            fail_msg("stream %d: %d calls in flight, %d refused; want %d and %d", i,
                     (int)fxr_server_in_flight(limits_srv), log_count("warn: rpc: refused"),
                     in_flight[i], refusals);
    }
    assert_true(log_has("warn: rpc: refused /fxtest.Echo/ClientStream from"));
    /* a server stream counts too */
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.text = "s";
    req.count = 1;
    stream_seen seen = { 0 };
    fxc_call_opts co = { .timeout_ms = 5000 };
    char err[256];
    assert_int_equal(fxc_server_stream(c, "/fxtest.Echo/ServerStream", &req.base, REPLY_DESC,
                                       on_stream_msg, &seen, &co, err, sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    /* unary calls are not held up, from any client */
    int64_t t0 = now_ms();
    peer_of(c, pc, sizeof pc);
    peer_of(e.ch, pa, sizeof pa);
    assert_true(now_ms() - t0 < 1000);
    /* the held streams end normally when their clients finish */
    atomic_store(&hold, 0);
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        if (i != 2 && i != 5)
            assert_int_equal(is[i].rc, FXS_OK);
    }
    expect_refused(&is[2], "--max-streams-per-client 2");
    expect_refused(&is[5], "--max-streams 4");
    /* and the slots are free again */
    assert_true(wait_for(limits_idle, 2000));
    assert_int_equal(fxc_server_stream(c, "/fxtest.Echo/ServerStream", &req.base, REPLY_DESC,
                                       on_stream_msg, &seen, &co, err, sizeof err),
                     FXS_OK);
    fxc_channel_free(b);
    fxc_channel_free(c);
    stop_env(&e);
}

#define HAMMER_THREADS 8
#define HAMMER_STREAMS 30

static void *stream_hammer(void *arg)
{
    fxc_channel *ch = arg;
    intptr_t bad = 0;
    for (int i = 0; i < HAMMER_STREAMS; i++) {
        idle_stream is = { .u = { .n = 3 }, .ch = ch };
        if (i % 3 == 2) { /* a server stream takes a slot too */
            Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
            req.text = "s";
            req.count = 2;
            stream_seen seen = { 0 };
            fxc_call_opts co = { .timeout_ms = 10000 };
            is.rc = fxc_server_stream(ch, "/fxtest.Echo/ServerStream", &req.base, REPLY_DESC,
                                      on_stream_msg, &seen, &co, is.err, sizeof is.err);
        } else {
            idle_stream_main(&is);
        }
        bad += is.rc != FXS_OK && is.rc != FXS_RESOURCE_EXHAUSTED;
    }
    return (void *)bad;
}

/* The stream slots under contention: 8 threads open 240 short streams
 * against 3 slots; each ends OK or RESOURCE_EXHAUSTED, and afterwards every
 * slot is free again. */
static void test_stream_limits_hammer(void **state)
{
    fxr_server_opts o = { .listen = "127.0.0.1:0", .max_streams = 3, .max_streams_per_peer = 3,
                          .log = capture_log };
    env e = start_env_opts(&o, 0);
    limits_srv = e.srv;
    pthread_t th[HAMMER_THREADS];
    for (int i = 0; i < HAMMER_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, stream_hammer, e.ch), 0);
    intptr_t bad = 0;
    for (int i = 0; i < HAMMER_THREADS; i++) {
        void *r;
        pthread_join(th[i], &r);
        bad += (intptr_t)r;
    }
    assert_int_equal(bad, 0);
    assert_true(wait_for(limits_idle, 3000));
    /* all 3 slots free: 3 held streams fit, a 4th does not */
    static atomic_int hold; /* static: see test_stream_idle_timeout */
    static idle_stream is[4];
    pthread_t h[4];
    atomic_store(&hold, 1);
    int refusals = log_count("warn: rpc: refused");
    for (int i = 0; i < 4; i++) {
        is[i] = (idle_stream){ .u = { .n = 1 }, .hold = &hold, .ch = e.ch, .rc = -1 };
        assert_int_equal(pthread_create(&h[i], NULL, idle_stream_main, &is[i]), 0);
        assert_true(wait_server(i < 3 ? i + 1 : 3, refusals + (i == 3)));
    }
    atomic_store(&hold, 0);
    for (int i = 0; i < 4; i++)
        pthread_join(h[i], NULL);
    assert_int_equal(is[3].rc, FXS_RESOURCE_EXHAUSTED);
    stop_env(&e);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Not an assertion: prints the unary round trip at concurrency 1. */
static void test_latency_report(void **state)
{
    enum { N = 2000 };
    static int64_t us[N];
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.text = "ping";
    for (int i = 0; i < N; i++) {
        Fxtest__EchoReply *rep = NULL;
        char err[128];
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        assert_int_equal(call_echo(shared.ch, "Unary", &req, &rep, 5000, err, sizeof err),
                         FXS_OK);
        clock_gettime(CLOCK_MONOTONIC, &b);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
        us[i] = (b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000;
    }
    qsort(us, N, sizeof *us, cmp_i64);
    print_message("unary round trip, concurrency 1, %d calls: p50 %lld us, p90 %lld us, "
                  "p99 %lld us\n",
                  N, (long long)us[N / 2], (long long)us[N * 9 / 10],
                  (long long)us[N * 99 / 100]);
}

int main(void)
{
    const struct CMUnitTest standalone[] = {
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_add_service_errors),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_reply_over_send_limit),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_shutdown_in_flight),
        cmocka_unit_test(test_shutdown_idle_fast),
        cmocka_unit_test(test_shutdown_upload),
        cmocka_unit_test(test_shutdown_new_calls_unavailable),
        cmocka_unit_test(test_shutdown_gives_up),
        cmocka_unit_test(test_busy_pool),
        cmocka_unit_test(test_stream_idle_timeout),
        cmocka_unit_test(test_stream_limits),
        cmocka_unit_test(test_stream_limits_hammer),
    };
    const struct CMUnitTest with_shared[] = {
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_method_path),
        cmocka_unit_test(test_client_bad_args),
        cmocka_unit_test(test_server_stream),
        cmocka_unit_test(test_server_stream_client_cancel),
        cmocka_unit_test(test_bidi),
        cmocka_unit_test(test_client_stream),
        cmocka_unit_test(test_unimplemented),
        cmocka_unit_test(test_status_propagation),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_big_messages),
        cmocka_unit_test(test_unparseable),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_deferred),
        cmocka_unit_test(test_on_poller),
        cmocka_unit_test(test_metadata_truncated),
        cmocka_unit_test(test_latency_report),
    };
    int failed = cmocka_run_group_tests_name("rpc", standalone, NULL, NULL);
    failed += cmocka_run_group_tests_name("rpc_shared", with_shared, setup_shared,
                                          teardown_shared);
    return failed;
}
