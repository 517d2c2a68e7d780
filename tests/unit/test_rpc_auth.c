/*
 * test_rpc_auth.c - who calls the gRPC layer (server/rpc/guard.c, tls.c):
 * the auth hook (once per call, on the handler's thread, before the request
 * is unpacked), the access classes and their PERMISSION_DENIED, the audit
 * hook, and TLS: a server certificate made here with the openssl CLI, a
 * gRPC C client with SSL credentials, mTLS client certificates, and a
 * reload that changes the certificate new connections see while an open
 * connection keeps working. Service: fxtest.Echo (tests/proto/echo.proto).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "base/fsutil.h"
#include "base/util.h"
#include "rpc/rpc.h"
#include "rpcc.h"
#include "echo.pb-c.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#define REPLY_DESC (&fxtest__echo_reply__descriptor)

/* --------------------------------------------------------------- hooks */

static atomic_int hook_calls;
static atomic_int handler_runs;
/* The path of the call the hook last saw on this thread: a handler finds
 * its own there when the hook ran on its thread, before it. */
static _Thread_local const char *tl_hook_path;

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static char seen_subject[256], seen_cn[256];
static bool seen_tls;

/* Tokens of the test: "Bearer <role>-<team>", and a few special ones. */
static int test_auth(void *data, const fxr_credentials *c, fxp_principal *out, char *err,
                     size_t errlen)
{
    (void)data;
    atomic_fetch_add(&hook_calls, 1);
    tl_hook_path = c->method;
    pthread_mutex_lock(&seen_mu);
    snprintf(seen_subject, sizeof seen_subject, "%s", c->cert_subject ? c->cert_subject : "");
    snprintf(seen_cn, sizeof seen_cn, "%s", c->cert_cn ? c->cert_cn : "");
    seen_tls = c->tls;
    pthread_mutex_unlock(&seen_mu);
    memset(out, 0, sizeof *out);
    if (c->authorization) {
        const char *tok = c->authorization;
        if (strncmp(tok, "Bearer ", 7) != 0)
            return fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "malformed authorization header");
        tok += 7;
        if (strcmp(tok, "broken") == 0)
            return fxu_fail(err, errlen, FXS_INTERNAL, "the token store failed");
        if (strcmp(tok, "norole") == 0)
            return 0; /* a hook bug: no role */
        char role[16], team[64];
        if (sscanf(tok, "%15[a-z]-%63s", role, team) != 2 || !fxp_role_from_name(role))
            return fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "unknown token");
        out->role = fxp_role_from_name(role);
        snprintf(out->team, sizeof out->team, "%s", team);
        snprintf(out->who, sizeof out->who, "token:%s", role);
        return 0;
    }
    if (c->cert_subject && strcmp(c->cert_subject, "CN=alice") == 0) {
        out->role = FXP_MEMBER;
        snprintf(out->team, sizeof out->team, "a");
        snprintf(out->who, sizeof out->who, "cert:%s", c->cert_subject);
        return 0;
    }
    if (c->cert_subject)
        return fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "certificate %s is not mapped",
                        c->cert_subject);
    return fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "no credentials");
}

typedef struct {
    char who[200], team[64], method[128], object[256], message[256];
    bool anonymous;
    fxs_status code;
} audit_rec;

static pthread_mutex_t audit_mu = PTHREAD_MUTEX_INITIALIZER;
static audit_rec audits[64];
static int n_audits;

static void test_audit(void *data, const fxp_principal *p, const char *method, const char *object,
                       fxs_status code, const char *message)
{
    (void)data;
    pthread_mutex_lock(&audit_mu);
    if (n_audits < 64) {
        audit_rec *a = &audits[n_audits++];
        memset(a, 0, sizeof *a);
        a->anonymous = p == NULL;
        if (p) {
            snprintf(a->who, sizeof a->who, "%s", p->who);
            snprintf(a->team, sizeof a->team, "%s", p->team);
        }
        snprintf(a->method, sizeof a->method, "%s", method);
        snprintf(a->object, sizeof a->object, "%s", object);
        snprintf(a->message, sizeof a->message, "%s", message);
        a->code = code;
    }
    pthread_mutex_unlock(&audit_mu);
}

static int audit_count(void)
{
    pthread_mutex_lock(&audit_mu);
    int n = n_audits;
    pthread_mutex_unlock(&audit_mu);
    return n;
}

/* The audit hook runs as the call finishes, maybe just after the client
 * has its reply: wait for it a little. */
static audit_rec last_audit(int want_count)
{
    for (int i = 0; i < 200 && audit_count() < want_count; i++)
        usleep(5000);
    assert_int_equal(audit_count(), want_count);
    pthread_mutex_lock(&audit_mu);
    audit_rec a = audits[n_audits - 1];
    pthread_mutex_unlock(&audit_mu);
    return a;
}

static void quiet_log(void *data, const char *level, const char *msg)
{
    (void)data, (void)level, (void)msg;
}

/* ------------------------------------------------------------ handlers */

/* Unary (read): who the caller is, and whether the hook ran on this
 * thread for this call (sum 1). */
static void reply_who(fxr_call *call)
{
    const fxp_principal *p = fxr_principal(call);
    assert_non_null(p);
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    r.text = (char *)p->who;
    r.metadata = (char *)p->team;
    r.index = (int)p->role;
    r.sum = tl_hook_path == fxr_method_path(call);
    r.path = fxr_call_tls(call) ? "tls" : "plaintext";
    fxr_reply(call, &r.base);
}

static void h_who(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)m, (void)data;
    atomic_fetch_add(&handler_runs, 1);
    reply_who(call);
}

/* Fail (write): names its object for the audit; fails with req->code. */
static void h_write(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    const Fxtest__EchoRequest *req = (const Fxtest__EchoRequest *)m;
    atomic_fetch_add(&handler_runs, 1);
    fxr_set_object(call, "model %s/%s", fxr_principal(call)->team, req->text);
    if (req->code)
        fxr_fail(call, (fxs_status)req->code, "failing as asked");
    else
        reply_who(call);
}

/* Slow (manage): replies at once. */
static void h_manage(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    h_who(call, m, data);
}

static void h_stream(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    const Fxtest__EchoRequest *req = (const Fxtest__EchoRequest *)m;
    atomic_fetch_add(&handler_runs, 1);
    for (int i = 0; i < req->count; i++) {
        Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
        r.text = (char *)fxr_principal(call)->who;
        r.index = i;
        if (fxr_send(call, &r.base) != 0) {
            fxr_fail(call, FXS_CANCELLED, "stream stopped");
            return;
        }
    }
    fxr_finish(call);
}

static void h_upload(fxr_call *call, const ProtobufCMessage *m, void *data)
{
    (void)m, (void)data;
    atomic_fetch_add(&handler_runs, 1);
    Fxtest__EchoReply r = FXTEST__ECHO_REPLY__INIT;
    ProtobufCMessage *msg;
    int rc;
    while ((rc = fxr_recv(call, &msg)) == 1) {
        r.sum += ((Fxtest__EchoRequest *)msg)->value;
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    if (rc < 0) {
        fxr_fail(call, FXS_CANCELLED, "upload broken");
        return;
    }
    r.text = (char *)fxr_principal(call)->who;
    fxr_reply(call, &r.base);
}

static const fxr_method auth_methods[] = {
    { "Unary", FXR_UNARY, FXP_READ, h_who },
    { "Deferred", FXR_UNARY, FXP_ANY, h_who },
    { "Big", FXR_UNARY, FXP_INFER, h_who },
    { "Fail", FXR_UNARY, FXP_WRITE, h_write },
    { "Slow", FXR_UNARY, FXP_MANAGE, h_manage },
    { "ServerStream", FXR_SERVER_STREAM, FXP_READ, h_stream },
    { "ClientStream", FXR_CLIENT_STREAM, FXP_WRITE, h_upload },
};
#define N_AUTH_METHODS ((int)(sizeof auth_methods / sizeof *auth_methods))

/* ------------------------------------------------------------- fixture */

typedef struct {
    fxr_server *srv;
    fxc_channel *ch;
    int port;
} env;

static env start(fxr_server_opts o)
{
    env e = { 0 };
    char err[512];
    if (!o.listen)
        o.listen = "127.0.0.1:0";
    o.log = quiet_log;
    if (fxr_server_create(&o, &e.srv, err, sizeof err) != 0)
        fail_msg("fxr_server_create: %s", err);
    assert_int_equal(fxr_server_add_service(e.srv, &fxtest__echo__descriptor, auth_methods,
                                            N_AUTH_METHODS, NULL),
                     0);
    assert_int_equal(fxr_server_start(e.srv, &e.port), 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", e.port);
    e.ch = fxc_channel_create(target, &(fxc_channel_opts){ 0 });
    assert_non_null(e.ch);
    return e;
}

static void stop(env *e)
{
    fxc_channel_free(e->ch);
    assert_int_equal(fxr_server_shutdown(e->srv, 1000, -1, NULL, 0), 0);
    fxr_server_destroy(e->srv);
}

/* A unary Echo call with an optional authorization value. */
static int call(env *e, const char *method, const char *authz, const Fxtest__EchoRequest *req,
                Fxtest__EchoReply **rep, char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof path, "/fxtest.Echo/%s", method);
    fxc_metadata md = { "authorization", authz };
    fxc_call_opts co = { .timeout_ms = 10000, .md = authz ? &md : NULL, .n_md = authz ? 1 : 0 };
    Fxtest__EchoRequest empty = FXTEST__ECHO_REQUEST__INIT;
    *rep = NULL;
    err[0] = '\0';
    return fxc_unary(e->ch, path, req ? &req->base : &empty.base, REPLY_DESC,
                     (ProtobufCMessage **)rep, &co, err, errlen);
}

/* Calls method with authz and expects code (and, when not OK, a message
 * with needle). */
static void expect(env *e, const char *method, const char *authz, int code, const char *needle)
{
    Fxtest__EchoReply *rep;
    char err[512];
    int rc = call(e, method, authz, NULL, &rep, err, sizeof err);
    if (rc != code)
        fail_msg("%s with %s: code %d (%s), want %d", method, authz ? authz : "no token", rc, err,
                 code);
    if (needle && !strstr(err, needle))
        fail_msg("%s with %s: message '%s' lacks '%s'", method, authz ? authz : "no token", err,
                 needle);
    if (rep)
        protobuf_c_message_free_unpacked(&rep->base, NULL);
}

static int count_msg(const ProtobufCMessage *msg, void *data)
{
    (void)msg;
    (*(int *)data)++;
    return 0;
}

static const ProtobufCMessage *no_more(void *data, int *fail)
{
    (void)data, (void)fail;
    return NULL;
}

/* --------------------------------------------------------- auth tests */

/* The hook runs exactly once per call, on the handler's own thread and
 * before it, for unary and streaming calls alike; the handler sees the
 * principal it returned. */
static void test_hook_once_before_handler(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ .auth = test_auth });
    Fxtest__EchoReply *rep;
    char err[512];
    for (int i = 0; i < 5; i++) {
        int before = atomic_load(&hook_calls);
        assert_int_equal(call(&e, "Unary", "Bearer viewer-a", NULL, &rep, err, sizeof err), 0);
        assert_int_equal(atomic_load(&hook_calls) - before, 1);
        assert_string_equal(rep->text, "token:viewer");
        assert_string_equal(rep->metadata, "a");
        assert_int_equal(rep->index, FXP_VIEWER);
        assert_int_equal(rep->sum, 1); /* the hook ran on this thread, for this call */
        assert_string_equal(rep->path, "plaintext");
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    /* a server stream: once, not per message */
    int before = atomic_load(&hook_calls);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.count = 3;
    fxc_metadata md = { "authorization", "Bearer member-a" };
    fxc_call_opts co = { .timeout_ms = 10000, .md = &md, .n_md = 1 };
    int got = 0;
    assert_int_equal(fxc_server_stream(e.ch, "/fxtest.Echo/ServerStream", &req.base, REPLY_DESC,
                                       count_msg, &got, &co, err, sizeof err),
                     0);
    assert_int_equal(got, 3);
    assert_int_equal(atomic_load(&hook_calls) - before, 1);
    /* a client stream: once */
    before = atomic_load(&hook_calls);
    Fxtest__EchoReply *up = NULL;
    assert_int_equal(fxc_client_stream(e.ch, "/fxtest.Echo/ClientStream", no_more, NULL, NULL,
                                       REPLY_DESC, (ProtobufCMessage **)&up, &co, err,
                                       sizeof err),
                     0);
    assert_string_equal(up->text, "token:member");
    protobuf_c_message_free_unpacked(&up->base, NULL);
    assert_int_equal(atomic_load(&hook_calls) - before, 1);
    /* a method without handler: UNIMPLEMENTED, no hook */
    before = atomic_load(&hook_calls);
    expect(&e, "NoHandler", "Bearer admin-a", FXS_UNIMPLEMENTED, "not implemented");
    assert_int_equal(atomic_load(&hook_calls) - before, 0);
    stop(&e);
}

/* A refused caller never reaches the handler, whatever the method, and
 * its request is not even parsed: junk bytes get UNAUTHENTICATED, not
 * INVALID_ARGUMENT. */
static void test_unauthenticated(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ .auth = test_auth });
    int runs = atomic_load(&handler_runs);
    expect(&e, "Unary", NULL, FXS_UNAUTHENTICATED, "no credentials");
    expect(&e, "Unary", "Basic dXNlcg==", FXS_UNAUTHENTICATED, "malformed authorization");
    expect(&e, "Fail", "Bearer nobody", FXS_UNAUTHENTICATED, "unknown token");
    expect(&e, "Slow", "Bearer norole", FXS_UNAUTHENTICATED, "no valid credentials");
    /* the hook's own failure keeps its code */
    expect(&e, "Unary", "Bearer broken", FXS_INTERNAL, "token store failed");
    /* streams too */
    char err[512];
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    req.count = 2;
    fxc_call_opts co = { .timeout_ms = 10000 };
    int got = 0;
    assert_int_equal(fxc_server_stream(e.ch, "/fxtest.Echo/ServerStream", &req.base, REPLY_DESC,
                                       count_msg, &got, &co, err, sizeof err),
                     FXS_UNAUTHENTICATED);
    assert_int_equal(got, 0);
    Fxtest__EchoReply *up = NULL;
    assert_int_equal(fxc_client_stream(e.ch, "/fxtest.Echo/ClientStream", no_more, NULL, NULL,
                                       REPLY_DESC, (ProtobufCMessage **)&up, &co, err,
                                       sizeof err),
                     FXS_UNAUTHENTICATED);
    /* junk that does not parse: the caller is refused first */
    const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
    void *resp = NULL;
    size_t len = 0;
    assert_int_equal(fxc_unary_raw(e.ch, "/fxtest.Echo/Unary", junk, sizeof junk, &resp, &len,
                                   &co, err, sizeof err),
                     FXS_UNAUTHENTICATED);
    /* with a token, the same junk is INVALID_ARGUMENT */
    fxc_metadata md = { "authorization", "Bearer viewer-a" };
    fxc_call_opts co2 = { .timeout_ms = 10000, .md = &md, .n_md = 1 };
    assert_int_equal(fxc_unary_raw(e.ch, "/fxtest.Echo/Unary", junk, sizeof junk, &resp, &len,
                                   &co2, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(atomic_load(&handler_runs), runs);
    stop(&e);
}

/* Each access class against each role. */
static void test_permission_denied(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ .auth = test_auth });
    int runs = atomic_load(&handler_runs);
    expect(&e, "Fail", "Bearer viewer-a", FXS_PERMISSION_DENIED,
           "role 'viewer' may not call Echo/Fail (needs member)");
    expect(&e, "Slow", "Bearer viewer-a", FXS_PERMISSION_DENIED,
           "role 'viewer' may not call Echo/Slow (needs admin)");
    expect(&e, "Slow", "Bearer member-a", FXS_PERMISSION_DENIED,
           "role 'member' may not call Echo/Slow (needs admin)");
    assert_int_equal(atomic_load(&handler_runs), runs);
    expect(&e, "Unary", "Bearer viewer-a", FXS_OK, NULL);
    expect(&e, "Big", "Bearer viewer-a", FXS_OK, NULL);
    expect(&e, "Deferred", "Bearer viewer-a", FXS_OK, NULL);
    expect(&e, "Fail", "Bearer member-a", FXS_OK, NULL);
    expect(&e, "Slow", "Bearer admin-b", FXS_OK, NULL);
    assert_int_equal(atomic_load(&handler_runs), runs + 5);
    stop(&e);
}

/* Without a hook every caller is the local principal, an admin. */
static void test_local_mode(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ 0 });
    Fxtest__EchoReply *rep;
    char err[512];
    assert_int_equal(call(&e, "Slow", NULL, NULL, &rep, err, sizeof err), 0);
    assert_string_equal(rep->text, "local");
    assert_string_equal(rep->metadata, FXP_DEFAULT_TEAM);
    assert_int_equal(rep->index, FXP_ADMIN);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    stop(&e);
}

/* Writes and refusals are audited, once each; reads are not. */
static void test_audit_lines(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ .auth = test_auth, .audit = test_audit });
    int n = audit_count();
    expect(&e, "Unary", "Bearer viewer-a", FXS_OK, NULL); /* a read: none */
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    Fxtest__EchoReply *rep;
    char err[512];
    req.text = "mlp\"x";
    assert_int_equal(call(&e, "Fail", "Bearer member-a", &req, &rep, err, sizeof err), 0);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    audit_rec a = last_audit(n + 1);
    assert_string_equal(a.who, "token:member");
    assert_string_equal(a.team, "a");
    assert_string_equal(a.method, "/fxtest.Echo/Fail");
    assert_string_equal(a.object, "model a/mlp?x"); /* the quote cannot break the line */
    assert_int_equal(a.code, FXS_OK);
    /* a failing write */
    req.code = FXS_NOT_FOUND;
    assert_int_equal(call(&e, "Fail", "Bearer admin-a", &req, &rep, err, sizeof err),
                     FXS_NOT_FOUND);
    a = last_audit(n + 2);
    assert_int_equal(a.code, FXS_NOT_FOUND);
    assert_string_equal(a.message, "failing as asked");
    /* refused: no principal */
    expect(&e, "Unary", "Bearer nobody", FXS_UNAUTHENTICATED, "unknown token");
    a = last_audit(n + 3);
    assert_true(a.anonymous);
    assert_int_equal(a.code, FXS_UNAUTHENTICATED);
    assert_string_equal(a.method, "/fxtest.Echo/Unary");
    assert_string_equal(a.message, "unknown token");
    /* denied: the principal, and the reason */
    expect(&e, "Slow", "Bearer viewer-b", FXS_PERMISSION_DENIED, "needs admin");
    a = last_audit(n + 4);
    assert_false(a.anonymous);
    assert_string_equal(a.team, "b");
    assert_int_equal(a.code, FXS_PERMISSION_DENIED);
    assert_string_equal(a.object, "");
    /* a manage call */
    expect(&e, "Slow", "Bearer admin-a", FXS_OK, NULL);
    a = last_audit(n + 5);
    assert_string_equal(a.method, "/fxtest.Echo/Slow");
    stop(&e);
}

/* A method without an access class is refused at registration: none is
 * left open by omission. */
static void test_unset_access_refused(void **state)
{
    (void)state;
    fxr_server *s;
    char err[256];
    fxr_server_opts o = { .listen = "127.0.0.1:0", .log = quiet_log };
    assert_int_equal(fxr_server_create(&o, &s, err, sizeof err), 0);
    fxr_method bad[] = { { "Unary", FXR_UNARY, FXP_READ, h_who },
                         { "Fail", FXR_UNARY, FXP_ACCESS_UNSET, h_write } };
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, bad, 2, NULL),
                     FXS_INVALID_ARGUMENT);
    bad[1].access = (fxp_access)99;
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, bad, 2, NULL),
                     FXS_INVALID_ARGUMENT);
    bad[1].access = FXP_WRITE; /* the server was left as it was: this one goes in */
    assert_int_equal(fxr_server_add_service(s, &fxtest__echo__descriptor, bad, 2, NULL), 0);
    fxr_server_destroy(s);
}

/* ---------------------------------------------------------------- TLS */

static char tdir[64];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[2300];
    snprintf(full, sizeof full, "cd %s && (%s) >/dev/null 2>openssl.err", tdir, cmd);
    if (system(full) != 0)
        fail_msg("command failed: %s (see %s/openssl.err)", cmd, tdir);
}

#define EC "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

/* A CA NAME.crt/NAME.key. */
static void make_ca(const char *name)
{
    sh("openssl req -x509 " EC " -keyout %s.key -out %s.crt -days 2 -subj /CN=%s-ca", name, name,
       name);
}

/* NAME.crt/NAME.key with subject CN=cn, signed by ca. */
static void make_cert(const char *name, const char *ca, const char *cn, int serial)
{
    sh("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > "
       "%s.ext && openssl req " EC " -keyout %s.key -out %s.csr -subj /CN=%s && "
       "openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -set_serial %d -days 2 "
       "-extfile %s.ext -out %s.crt",
       name, name, name, cn, name, ca, ca, serial, name, name);
}

static char *slurp(const char *name)
{
    void *buf;
    size_t len;
    char err[256];
    if (fxu_read_file(tu_pathf("%s/%s", tdir, name), &buf, &len, err, sizeof err) != 0)
        fail_msg("%s", err);
    char *s = realloc(buf, len + 1);
    s[len] = '\0';
    return s;
}

static int tls_setup(void **state)
{
    (void)state;
    snprintf(tdir, sizeof tdir, "/tmp/fx_rpc_tls_XXXXXX");
    assert_non_null(mkdtemp(tdir));
    make_ca("ca1");
    make_ca("ca2");
    make_ca("clientca");
    make_ca("otherca");
    make_cert("srv1", "ca1", "localhost", 11);
    make_cert("srv2", "ca2", "localhost", 12);
    make_cert("srv3", "ca1", "localhost", 13);
    make_cert("alice", "clientca", "alice", 21);
    make_cert("mallory", "otherca", "alice", 22); /* same name, wrong CA */
    make_cert("bob", "clientca", "bob", 23);
    sh("cp srv1.crt tls.crt && cp srv1.key tls.key");
    sh("echo 'not a certificate' > junk.pem && : > empty.pem");
    grpc_init();
    return 0;
}

static int tls_teardown(void **state)
{
    (void)state;
    grpc_shutdown();
    tu_rmtree(tdir);
    return 0;
}

typedef struct {
    grpc_channel *ch;
} tls_client;

/* A channel to port trusting the PEM CA file ca, with a client
 * certificate NAME.crt/NAME.key when cert is not NULL. Its own subchannel
 * pool: a new client is a new connection (a new handshake). */
static tls_client tls_connect(int port, const char *ca, const char *cert)
{
    char *ca_pem = slurp(tu_pathf("%s.crt", ca));
    char *crt = cert ? slurp(tu_pathf("%s.crt", cert)) : NULL;
    char *key = cert ? slurp(tu_pathf("%s.key", cert)) : NULL;
    grpc_ssl_pem_key_cert_pair pair = { .private_key = key, .cert_chain = crt };
    grpc_channel_credentials *cr = grpc_ssl_credentials_create(ca_pem, cert ? &pair : NULL,
                                                               NULL, NULL);
    grpc_arg args[] = {
        { .type = GRPC_ARG_STRING, .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
          .value.string = (char *)"localhost" },
        { .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
          .value.integer = 1 },
    };
    grpc_channel_args ca_args = { .num_args = 2, .args = args };
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    tls_client c = { grpc_channel_create(target, cr, &ca_args) };
    grpc_channel_credentials_release(cr);
    free(ca_pem);
    free(crt);
    free(key);
    return c;
}

static void tls_close(tls_client *c)
{
    grpc_channel_destroy(c->ch);
}

/* One unary call to /fxtest.Echo/<method> over a gRPC C channel: the
 * status code; *who gets the reply's text (the caller as the server saw
 * it), err the status message. */
static int tls_call(tls_client *c, const char *method, const char *authz, char *who,
                    size_t wholen, char *err, size_t errlen)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    char path[128];
    snprintf(path, sizeof path, "/fxtest.Echo/%s", method);
    grpc_slice mslice = grpc_slice_from_copied_string(path);
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                   gpr_time_from_millis(10000, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, mslice,
                                               NULL, dl, NULL);
    Fxtest__EchoRequest req = FXTEST__ECHO_REQUEST__INIT;
    grpc_slice body = grpc_slice_malloc(fxtest__echo_request__get_packed_size(&req));
    fxtest__echo_request__pack(&req, GRPC_SLICE_START_PTR(body));
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_metadata md = { .key = grpc_slice_from_static_string("authorization"),
                         .value = grpc_slice_from_copied_string(authz ? authz : "") };
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_byte_buffer *recv = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = authz ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    assert_int_equal(grpc_call_start_batch(call, ops, 6, (void *)1, NULL), GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    who[0] = '\0';
    if (recv) {
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, recv);
        grpc_slice s = grpc_byte_buffer_reader_readall(&r);
        Fxtest__EchoReply *rep = fxtest__echo_reply__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                            GRPC_SLICE_START_PTR(s));
        if (rep) {
            snprintf(who, wholen, "%s%s", rep->text, strcmp(rep->path, "tls") ? " (no tls)" : "");
            fxtest__echo_reply__free_unpacked(rep, NULL);
        }
        grpc_slice_unref(s);
        grpc_byte_buffer_reader_destroy(&r);
        grpc_byte_buffer_destroy(recv);
    }
    snprintf(err, errlen, "%.*s", (int)GRPC_SLICE_LENGTH(details),
             (const char *)GRPC_SLICE_START_PTR(details));
    grpc_slice_unref(details);
    grpc_slice_unref(md.value);
    grpc_slice_unref(mslice);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(body);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return (int)status;
}

/* Calls once with a fresh connection and expects code. */
static void tls_expect(int port, const char *ca, const char *cert, const char *authz, int code,
                       const char *who_want)
{
    tls_client c = tls_connect(port, ca, cert);
    char who[256], err[512];
    int rc = tls_call(&c, "Unary", authz, who, sizeof who, err, sizeof err);
    tls_close(&c);
    if (rc != code)
        fail_msg("TLS call trusting %s, client cert %s, %s: code %d (%s), want %d", ca,
                 cert ? cert : "none", authz ? authz : "no token", rc, err, code);
    if (who_want)
        assert_string_equal(who, who_want);
}

static const char *tp(const char *name)
{
    return tu_pathf("%s/%s", tdir, name);
}

static void expect_create_fails(fxr_server_opts o, const char *needle)
{
    fxr_server *s = NULL;
    char err[512] = "";
    o.listen = "127.0.0.1:0";
    o.log = quiet_log;
    int rc = fxr_server_create(&o, &s, err, sizeof err);
    if (rc == 0) {
        fxr_server_destroy(s);
        fail_msg("create succeeded; wanted an error with '%s'", needle);
    }
    assert_int_equal(rc, FXS_INVALID_ARGUMENT);
    assert_null(s);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
}

/* Bad TLS files are refused at create, with the file named. */
static void test_tls_create_errors(void **state)
{
    (void)state;
    char want[256];
    expect_create_fails((fxr_server_opts){ .tls_cert_file = tp("tls.crt") },
                        "both a certificate and a key");
    expect_create_fails((fxr_server_opts){ .tls_key_file = tp("tls.key") },
                        "only the key is given");
    expect_create_fails((fxr_server_opts){ .tls_client_ca_file = tp("ca1.crt") },
                        "needs the server's own certificate");
    expect_create_fails((fxr_server_opts){ .tls_cert_file = tp("tls.crt"),
                                           .tls_key_file = tp("tls.key"),
                                           .tls_require_client_cert = true },
                        "needs a client CA");
    snprintf(want, sizeof want, "TLS certificate file %s cannot be read", tp("nope.crt"));
    expect_create_fails((fxr_server_opts){ .tls_cert_file = tp("nope.crt"),
                                           .tls_key_file = tp("tls.key") },
                        want);
    snprintf(want, sizeof want, "TLS certificate file %s has no valid PEM certificate",
             tp("junk.pem"));
    expect_create_fails((fxr_server_opts){ .tls_cert_file = tp("junk.pem"),
                                           .tls_key_file = tp("tls.key") },
                        want);
    snprintf(want, sizeof want, "TLS key file %s is empty", tp("empty.pem"));
    expect_create_fails((fxr_server_opts){ .tls_cert_file = tp("tls.crt"),
                                           .tls_key_file = tp("empty.pem") },
                        want);
    snprintf(want, sizeof want, "TLS key file %s has no unencrypted PEM private key",
             tp("tls.crt"));
    expect_create_fails((fxr_server_opts){ .tls_cert_file = tp("tls.crt"),
                                           .tls_key_file = tp("tls.crt") },
                        want);
    snprintf(want, sizeof want, "TLS key file %s does not match the certificate in %s",
             tp("srv2.key"), tp("tls.crt"));
    expect_create_fails((fxr_server_opts){ .tls_cert_file = tp("tls.crt"),
                                           .tls_key_file = tp("srv2.key") },
                        want);
    snprintf(want, sizeof want, "TLS client CA file %s has no valid PEM certificate",
             tp("junk.pem"));
    expect_create_fails((fxr_server_opts){ .tls_cert_file = tp("tls.crt"),
                                           .tls_key_file = tp("tls.key"),
                                           .tls_client_ca_file = tp("junk.pem") },
                        want);
    /* a plaintext server has nothing to reload */
    env e = start((fxr_server_opts){ 0 });
    char err[256];
    assert_int_equal(fxr_server_reload_tls(e.srv, err, sizeof err), FXS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "TLS is not configured"));
    stop(&e);
}

/* TLS: a client trusting the server's CA gets through (and the handler
 * sees a TLS call); one trusting another CA, or speaking plaintext, does
 * not. */
static void test_tls_serves(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ .auth = test_auth, .tls_cert_file = tp("tls.crt"),
                                     .tls_key_file = tp("tls.key") });
    tls_expect(e.port, "ca1", NULL, "Bearer viewer-a", FXS_OK, "token:viewer");
    pthread_mutex_lock(&seen_mu);
    assert_true(seen_tls);
    assert_string_equal(seen_subject, ""); /* no client CA: no certificate asked for */
    pthread_mutex_unlock(&seen_mu);
    tls_expect(e.port, "ca1", NULL, NULL, FXS_UNAUTHENTICATED, NULL);
    tls_expect(e.port, "ca2", NULL, "Bearer viewer-a", FXS_UNAVAILABLE, NULL);
    /* a client certificate is not asked for: it counts for nothing */
    tls_expect(e.port, "ca1", "alice", NULL, FXS_UNAUTHENTICATED, NULL);
    expect(&e, "Unary", "Bearer viewer-a", FXS_UNAVAILABLE, NULL); /* plaintext */
    stop(&e);
}

/* Reload: a new connection sees the new certificate, a connection opened
 * before keeps working; a bad file keeps the old ones. */
static void test_tls_reload(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ .auth = test_auth, .tls_cert_file = tp("tls.crt"),
                                     .tls_key_file = tp("tls.key") });
    char who[256], err[512];
    tls_client old = tls_connect(e.port, "ca1", NULL);
    assert_int_equal(tls_call(&old, "Unary", "Bearer viewer-a", who, sizeof who, err, sizeof err),
                     0);

    /* a broken key: refused, the old certificate stays */
    sh("cp tls.key tls.key.good && echo broken > tls.key");
    assert_int_equal(fxr_server_reload_tls(e.srv, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, tp("tls.key")));
    tls_expect(e.port, "ca1", NULL, "Bearer viewer-a", FXS_OK, "token:viewer");

    /* the new pair, written over the files */
    sh("cp srv2.crt tls.crt.new && cp srv2.key tls.key.new && mv tls.crt.new tls.crt && "
       "mv tls.key.new tls.key");
    assert_int_equal(fxr_server_reload_tls(e.srv, err, sizeof err), 0);
    tls_expect(e.port, "ca2", NULL, "Bearer viewer-a", FXS_OK, "token:viewer");
    tls_expect(e.port, "ca1", NULL, "Bearer viewer-a", FXS_UNAVAILABLE, NULL);
    /* the connection made before the reload is still there and works */
    assert_int_equal(tls_call(&old, "Unary", "Bearer viewer-a", who, sizeof who, err, sizeof err),
                     0);
    assert_string_equal(who, "token:viewer");
    tls_close(&old);
    stop(&e);
    sh("cp srv1.crt tls.crt && cp srv1.key tls.key");
}

static atomic_int reload_bad_calls;

static void *connect_loop(void *arg)
{
    int port = *(int *)arg;
    for (int i = 0; i < 15; i++) {
        tls_client c = tls_connect(port, "ca1", NULL);
        char who[256], err[512];
        if (tls_call(&c, "Unary", "Bearer viewer-a", who, sizeof who, err, sizeof err) != 0)
            atomic_fetch_add(&reload_bad_calls, 1);
        tls_close(&c);
    }
    return NULL;
}

/* Reloads while clients keep making new connections (each a handshake
 * that asks for the config): both pairs are signed by the same CA, so
 * every call must pass; under ASan this is the race test of the fetcher
 * against the reload. */
static void test_tls_reload_under_load(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ .auth = test_auth, .tls_cert_file = tp("tls.crt"),
                                     .tls_key_file = tp("tls.key") });
    pthread_t th[3];
    atomic_store(&reload_bad_calls, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, connect_loop, &e.port), 0);
    char err[512];
    for (int i = 0; i < 20; i++) {
        const char *pair = i % 2 ? "srv1" : "srv3";
        sh("cp %s.crt tls.crt && cp %s.key tls.key", pair, pair);
        assert_int_equal(fxr_server_reload_tls(e.srv, err, sizeof err), 0);
        usleep(10000);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&reload_bad_calls), 0);
    stop(&e);
    sh("cp srv1.crt tls.crt && cp srv1.key tls.key");
}

/* mTLS: a verified client certificate reaches the hook (subject and CN);
 * one from another CA fails the handshake; without one a token works,
 * unless certificates are required. */
static void test_mtls(void **state)
{
    (void)state;
    env e = start((fxr_server_opts){ .auth = test_auth, .tls_cert_file = tp("tls.crt"),
                                     .tls_key_file = tp("tls.key"),
                                     .tls_client_ca_file = tp("clientca.crt") });
    tls_expect(e.port, "ca1", "alice", NULL, FXS_OK, "cert:CN=alice");
    pthread_mutex_lock(&seen_mu);
    assert_string_equal(seen_subject, "CN=alice");
    assert_string_equal(seen_cn, "alice");
    pthread_mutex_unlock(&seen_mu);
    tls_expect(e.port, "ca1", "bob", NULL, FXS_UNAUTHENTICATED, NULL); /* not mapped */
    tls_expect(e.port, "ca1", "mallory", NULL, FXS_UNAVAILABLE, NULL);  /* wrong CA */
    tls_expect(e.port, "ca1", NULL, "Bearer member-a", FXS_OK, "token:member");
    tls_expect(e.port, "ca1", "alice", "Bearer viewer-b", FXS_OK, "token:viewer");
    stop(&e);

    e = start((fxr_server_opts){ .auth = test_auth, .tls_cert_file = tp("tls.crt"),
                                 .tls_key_file = tp("tls.key"),
                                 .tls_client_ca_file = tp("clientca.crt"),
                                 .tls_require_client_cert = true });
    tls_expect(e.port, "ca1", "alice", NULL, FXS_OK, "cert:CN=alice");
    tls_expect(e.port, "ca1", NULL, "Bearer member-a", FXS_UNAVAILABLE, NULL);
    stop(&e);
}

int main(void)
{
    const struct CMUnitTest auth_tests[] = {
        cmocka_unit_test(test_hook_once_before_handler),
        cmocka_unit_test(test_unauthenticated),
        cmocka_unit_test(test_permission_denied),
        cmocka_unit_test(test_local_mode),
        cmocka_unit_test(test_audit_lines),
        cmocka_unit_test(test_unset_access_refused),
    };
    const struct CMUnitTest tls_tests[] = {
        cmocka_unit_test(test_tls_create_errors),
        cmocka_unit_test(test_tls_serves),
        cmocka_unit_test(test_tls_reload),
        cmocka_unit_test(test_tls_reload_under_load),
        cmocka_unit_test(test_mtls),
    };
    int rc = cmocka_run_group_tests_name("rpc auth", auth_tests, NULL, NULL);
    rc |= cmocka_run_group_tests_name("rpc tls", tls_tests, tls_setup, tls_teardown);
    return rc;
}
