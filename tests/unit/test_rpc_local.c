/*
 * test_rpc_local.c - calls of another transport (server/rpc/local.c,
 * fxr_server_call_local): the same routing, auth hook, access classes,
 * audit, request checks and drain as a gRPC call; done exactly once,
 * from the handler's thread or a later one; and many threads calling
 * while the server shuts down (under ASan in the suite: no leak, no use
 * after free). Service: fxtest.Echo (tests/proto/echo.proto).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "base/util.h"
#include "rpc/rpc.h"
#include "echo.pb-c.h"

/* ------------------------------------------------------------- hooks */

/* "Bearer <role>": that role, team t; anything else refused. */
static int test_auth(void *data, const fxr_credentials *c, fxp_principal *out, char *err,
                     size_t errlen)
{
    (void)data;
    memset(out, 0, sizeof *out);
    if (!c->authorization)
        return fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "no credentials");
    if (strncmp(c->authorization, "Bearer ", 7) != 0 ||
        !(out->role = fxp_role_from_name(c->authorization + 7)))
        return fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "unknown token");
    snprintf(out->team, sizeof out->team, "t");
    snprintf(out->who, sizeof out->who, "token:%s", c->authorization + 7);
    return 0;
}

static atomic_int audits;
static atomic_int last_audit_code;

static void test_audit(void *data, const fxp_principal *p, const char *method, const char *object,
                       fxs_status code, const char *message)
{
    (void)data, (void)p, (void)method, (void)object, (void)message;
    atomic_store(&last_audit_code, (int)code);
    atomic_fetch_add(&audits, 1);
}

static void quiet_log(void *data, const char *level, const char *msg)
{
    (void)data, (void)level, (void)msg;
}

/* ---------------------------------------------------------- handlers */

/* What the call looked like from inside: peer, TLS, metadata, principal. */
static void h_unary(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    const Fxtest__EchoRequest *req = (const void *)m;
    char md[64];
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    r.text = req->text;
    r.peer = (char *)fxr_peer(call);
    r.path = fxr_call_tls(call) ? "tls" : "plaintext";
    r.metadata = fxr_metadata(call, "authorization", md, sizeof md) ? md : "none";
    r.deadline_left_ms = fxr_deadline_ns(call) == INT64_MAX ? -1 : 0;
    r.index = (int)fxr_principal(call)->role;
    fxr_reply(call, &r.base);
}

static void *reply_later(void *arg)
{
    fxr_call *call = arg;
    usleep(2000);
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    r.text = "later";
    fxr_reply(call, &r.base);
    return NULL;
}

/* Finishes the call from another thread, after the handler returned. */
static void h_deferred(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)m, (void)data;
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &a, reply_later, call) != 0)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "no thread");
    pthread_attr_destroy(&a);
}

/* Waits until cancelled (or sleep_ms), then answers CANCELLED or OK. */
static void h_slow(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    const Fxtest__EchoRequest *req = (const void *)m;
    for (int64_t t = 0; t < req->sleep_ms; t++) {
        if (fxr_cancelled(call)) {
            fxr_fail(call, FXS_CANCELLED, "cancelled");
            return;
        }
        usleep(1000);
    }
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    fxr_reply(call, &r.base);
}

static void h_fail(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    const Fxtest__EchoRequest *req = (const void *)m;
    fxr_set_object(call, "thing %s", req->text);
    fxr_fail(call, (fxs_status)req->code, "failing as asked");
}

static void h_stream(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)m, (void)data;
    fxr_finish(call);
}

static const fxr_method methods[] = {
    { "Unary", FXR_UNARY, FXP_READ, h_unary },
    { "Deferred", FXR_UNARY, FXP_ANY, h_deferred },
    { "Slow", FXR_UNARY, FXP_READ, h_slow },
    { "Fail", FXR_UNARY, FXP_WRITE, h_fail },
    { "ServerStream", FXR_SERVER_STREAM, FXP_READ, h_stream },
};

static fxr_server *start(bool auth)
{
    fxr_server *s;
    char err[512];
    fxr_server_opts o = { .listen = "127.0.0.1:0", .log = quiet_log, .audit = test_audit,
                          .auth = auth ? test_auth : NULL };
    if (fxr_server_create(&o, &s, err, sizeof err) != 0)
        fail_msg("fxr_server_create: %s", err);
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, methods,
                                            (int)(sizeof methods / sizeof *methods), NULL),
                     0);
    int port;
    assert_int_equal(fxr_server_start(s, &port), 0);
    return s;
}

/* --------------------------------------------------------- one call */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int dones;
    fxs_status code;
    char msg[512];
    Fxtest__EchoReply *reply;
} result;

static void on_done(void *ud, fxs_status code, const char *message, const uint8_t *resp,
                    size_t len)
{
    result *r = ud;
    pthread_mutex_lock(&r->mu);
    r->code = code;
    snprintf(r->msg, sizeof r->msg, "%s", message ? message : "");
    if (code == FXS_OK) {
        assert_null(message);
        assert_non_null(resp);
        r->reply = fxtest__echo_reply__unpack(NULL, len, resp);
        assert_non_null(r->reply);
    } else {
        assert_null(resp);
        assert_int_equal(len, 0);
    }
    atomic_fetch_add(&r->dones, 1);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Calls method with req (packed) and waits for done; returns its code. */
static fxs_status local_call(fxr_server *s, const char *method, const char *authz, bool tls,
                             const Fxtest__EchoRequest *req, result *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    Fxtest__EchoRequest empty = FXTEST__ECHO_REQUEST__INIT;
    if (!req)
        req = &empty;
    size_t len = fxtest__echo_request__get_packed_size(req);
    uint8_t *buf = malloc(len + 1);
    fxtest__echo_request__pack(req, buf);
    char path[128];
    snprintf(path, sizeof path, "/fxtest.Echo/%s", method);
    fxr_credentials cred = { .authorization = authz, .peer = "http:127.0.0.1:4242", .tls = tls };
    fxr_server_call_local(s, path, &cred, buf, len, on_done, r);
    free(buf);
    pthread_mutex_lock(&r->mu);
    while (atomic_load(&r->dones) == 0)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    return r->code;
}

static void result_free(result *r)
{
    usleep(1000); /* a second done would come now */
    assert_int_equal(atomic_load(&r->dones), 1);
    if (r->reply)
        fxtest__echo_reply__free_unpacked(r->reply, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static void stop(fxr_server *s)
{
    assert_int_equal(fxr_server_shutdown(s, 2000, -1, NULL, 0), 0);
    fxr_server_destroy(s);
}

/* -------------------------------------------------------------- tests */

static void test_unary(void **state)
{
    (void)state;
    fxr_server *s = start(false);
    result r;
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.text = "héllo";
    uint64_t total = fxr_server_total_calls(s);
    assert_int_equal(local_call(s, "Unary", NULL, true, &req, &r), FXS_OK);
    assert_string_equal(r.reply->text, "héllo");
    assert_string_equal(r.reply->peer, "http:127.0.0.1:4242");
    assert_string_equal(r.reply->path, "tls");
    assert_string_equal(r.reply->metadata, "none"); /* no metadata on a local call */
    assert_int_equal(r.reply->deadline_left_ms, -1);
    assert_int_equal(r.reply->index, FXP_ADMIN); /* local mode without a hook */
    result_free(&r);
    assert_int_equal(fxr_server_total_calls(s), total + 1);
    assert_int_equal(fxr_server_in_flight(s), 0);
    assert_int_equal(local_call(s, "Unary", NULL, false, &req, &r), FXS_OK);
    assert_string_equal(r.reply->path, "plaintext");
    result_free(&r);
    stop(s);
}

static void test_unimplemented(void **state)
{
    (void)state;
    fxr_server *s = start(false);
    result r;
    assert_int_equal(local_call(s, "Nope", NULL, false, NULL, &r), FXS_UNIMPLEMENTED);
    assert_non_null(strstr(r.msg, "unknown method /fxtest.Echo/Nope"));
    result_free(&r);
    assert_int_equal(local_call(s, "NoHandler", NULL, false, NULL, &r), FXS_UNIMPLEMENTED);
    assert_non_null(strstr(r.msg, "not implemented"));
    result_free(&r);
    assert_int_equal(local_call(s, "ServerStream", NULL, false, NULL, &r), FXS_UNIMPLEMENTED);
    assert_non_null(strstr(r.msg, "streaming"));
    result_free(&r);
    /* a NULL path and NULL credentials are refused, not a crash */
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    fxr_server_call_local(s, NULL, NULL, NULL, 0, on_done, &r);
    assert_int_equal(r.code, FXS_UNIMPLEMENTED);
    result_free(&r);
    assert_int_equal(fxr_server_in_flight(s), 0);
    stop(s);
}

static void test_bad_request(void **state)
{
    (void)state;
    fxr_server *s = start(false);
    result r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    const uint8_t junk[] = { 0x0a, 0x7f, 'x' }; /* field 1, length 127, 1 byte */
    fxr_credentials cred = { .peer = "http:x" };
    fxr_server_call_local(s, "/fxtest.Echo/Unary", &cred, junk, sizeof junk, on_done, &r);
    assert_int_equal(r.code, FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(r.msg, "fxtest.EchoRequest"));
    result_free(&r);
    /* a string that is not UTF-8: the field is named */
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.text = "bad \xff byte";
    assert_int_equal(local_call(s, "Unary", NULL, false, &req, &r), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(r.msg, "text"));
    result_free(&r);
    /* no request bytes: the empty message */
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    fxr_server_call_local(s, "/fxtest.Echo/Unary", &cred, NULL, 0, on_done, &r);
    assert_int_equal(r.code, FXS_OK);
    result_free(&r);
    stop(s);
}

static void test_auth_and_audit(void **state)
{
    (void)state;
    fxr_server *s = start(true);
    result r;
    int a0 = atomic_load(&audits);
    assert_int_equal(local_call(s, "Unary", NULL, false, NULL, &r), FXS_UNAUTHENTICATED);
    assert_string_equal(r.msg, "no credentials");
    result_free(&r);
    assert_int_equal(atomic_load(&audits), a0 + 1); /* refusals are audited */
    assert_int_equal(local_call(s, "Unary", "Bearer nobody", false, NULL, &r),
                     FXS_UNAUTHENTICATED);
    result_free(&r);
    assert_int_equal(local_call(s, "Unary", "Bearer viewer", false, NULL, &r), FXS_OK);
    assert_int_equal(r.reply->index, FXP_VIEWER);
    result_free(&r);
    int a1 = atomic_load(&audits);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.code = FXS_NOT_FOUND;
    req.text = "x";
    assert_int_equal(local_call(s, "Fail", "Bearer viewer", false, &req, &r),
                     FXS_PERMISSION_DENIED);
    assert_non_null(strstr(r.msg, "role 'viewer' may not call Echo/Fail"));
    result_free(&r);
    assert_int_equal(atomic_load(&audits), a1 + 1);
    assert_int_equal(local_call(s, "Fail", "Bearer member", false, &req, &r), FXS_NOT_FOUND);
    assert_string_equal(r.msg, "failing as asked");
    result_free(&r);
    assert_int_equal(atomic_load(&audits), a1 + 2); /* a write is audited with its code */
    assert_int_equal(atomic_load(&last_audit_code), FXS_NOT_FOUND);
    assert_int_equal(fxr_server_in_flight(s), 0);
    stop(s);
}

static void test_deferred(void **state)
{
    (void)state;
    fxr_server *s = start(false);
    result r;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(local_call(s, "Deferred", NULL, false, NULL, &r), FXS_OK);
        assert_string_equal(r.reply->text, "later");
        result_free(&r);
    }
    stop(s);
}

/* Once draining, new local calls get UNAVAILABLE; one in flight gets the
 * grace, then fxr_cancelled, and the shutdown waits for it. */
typedef struct {
    fxr_server *s;
    result r;
    fxs_status code;
} slow_arg;

static void *slow_main(void *arg)
{
    slow_arg *a = arg;
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.sleep_ms = 60000;
    a->code = local_call(a->s, "Slow", NULL, false, &req, &a->r);
    return NULL;
}

static void test_drain(void **state)
{
    (void)state;
    fxr_server *s = start(false);
    slow_arg a = { .s = s };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_main, &a), 0);
    while (fxr_server_in_flight(s) == 0)
        usleep(1000);
    uint64_t t0 = fxu_mono_ns();
    assert_int_equal(fxr_server_shutdown(s, 300, 5000, NULL, 0), 0);
    uint64_t took_ms = (fxu_mono_ns() - t0) / 1000000;
    assert_true(took_ms >= 300); /* it waited the grace for the call */
    pthread_join(th, NULL);
    assert_int_equal(a.code, FXS_CANCELLED); /* fxr_cancelled after the grace */
    result_free(&a.r);
    result r;
    assert_int_equal(local_call(s, "Unary", NULL, false, NULL, &r), FXS_UNAVAILABLE);
    assert_non_null(strstr(r.msg, "shutting down"));
    result_free(&r);
    fxr_server_destroy(s);
}

/* Many threads calling (direct and deferred) while the server shuts down:
 * every call gets exactly one done, OK or UNAVAILABLE, and nothing leaks. */
typedef struct {
    fxr_server *s;
    int ok, unavailable, other;
} hammer_arg;

static void *hammer_main(void *arg)
{
    hammer_arg *h = arg;
    for (int i = 0; i < 400; i++) {
        result r;
        Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
        req.sleep_ms = i % 7 == 0 ? 3 : 0;
        const char *m = i % 3 == 0 ? "Deferred" : i % 7 == 0 ? "Slow" : "Unary";
        fxs_status code = local_call(h->s, m, NULL, false, &req, &r);
        result_free(&r);
        if (code == FXS_OK)
            h->ok++;
        else if (code == FXS_UNAVAILABLE)
            h->unavailable++;
        else
            h->other++;
    }
    return NULL;
}

static void test_concurrent_shutdown(void **state)
{
    (void)state;
    enum { N = 8 };
    fxr_server *s = start(false);
    hammer_arg h[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        h[i] = (hammer_arg){ .s = s };
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    while (fxr_server_total_calls(s) < 200)
        usleep(1000);
    assert_int_equal(fxr_server_shutdown(s, 2000, 5000, NULL, 0), 0);
    assert_int_equal(fxr_server_in_flight(s), 0);
    /* the callers go on, refused, until their loops end; then destroy */
    int ok = 0, unavailable = 0, other = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += h[i].ok;
        unavailable += h[i].unavailable;
        other += h[i].other;
    }
    assert_true(ok >= 200);
    assert_true(unavailable > 0);
    assert_int_equal(other, 0); /* the grace was enough: none cancelled */
    assert_int_equal(ok + unavailable, N * 400);
    fxr_server_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_unimplemented),
        cmocka_unit_test(test_bad_request),
        cmocka_unit_test(test_auth_and_audit),
        cmocka_unit_test(test_deferred),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_concurrent_shutdown),
    };
    return cmocka_run_group_tests_name("rpc local calls", tests, NULL, NULL);
}
