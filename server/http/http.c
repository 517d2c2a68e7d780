/*
 * http.c - the HTTP port's daemon (http.h): libmicrohttpd set up with one
 * thread per connection, the body limit, the request's headers and peer,
 * the wait for a local call's end, and the answer on the wire. What each
 * path means is routes.c's.
 */
#define _GNU_SOURCE
#include "http/http_internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "base/fsutil.h"
#include "base/util.h"

#define DEFAULT_MAX_BODY ((size_t)64 << 20)
#define DEFAULT_MAX_CONNECTIONS 64
#define DEFAULT_IDLE_S 60
/* Headers (Authorization at most 4 KiB, as gRPC's) and MHD's own state
 * per connection. */
#define CONNECTION_MEMORY (64 * 1024)

struct fxh_server {
    fxh_opts opts;
    struct MHD_Daemon *mhd;
    char *cert_pem, *key_pem;
    bool tls;
    int port;
};

/* One connection's request while it is read (MHD's con_cls). */
typedef struct {
    char *body;
    size_t len, cap;
    bool too_large;   /* past the limit: the rest is dropped, then 413 */
    bool answered;
    /* the body's bytes held in the rpc server's in-flight limits under
     * client ("http:ADDR"); limited: a limit refused more (why), the rest
     * is dropped, then 429 */
    char client[80];
    uint64_t charged;
    bool limited;
    char why[512];
} pending;

static void log_line(const fxh_server *h, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void log_line(const fxh_server *h, const char *level, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (h->opts.log)
        h->opts.log(h->opts.log_data, level, msg);
    else
        fprintf(stderr, "fluxiond %s: %s\n", level, msg);
}

int fxh_http_status(fxs_status code)
{
    switch (code) {
    case FXS_OK: return 200;
    case FXS_INVALID_ARGUMENT:
    case FXS_FAILED_PRECONDITION:
    case FXS_OUT_OF_RANGE: return 400;
    case FXS_NOT_FOUND: return 404;
    case FXS_ALREADY_EXISTS: return 409;
    case FXS_UNAUTHENTICATED: return 401;
    case FXS_PERMISSION_DENIED: return 403;
    case FXS_RESOURCE_EXHAUSTED: return 429;
    case FXS_UNIMPLEMENTED: return 501;
    case FXS_UNAVAILABLE: return 503;
    case FXS_DEADLINE_EXCEEDED: return 504;
    default: return 500;
    }
}

/* ------------------------------------------------------------ answers */

/* Appends s to a JSON string body, escaped (control characters as \u00XX;
 * the message is UTF-8 or has been checked to be). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && n + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    out[n] = '\0';
    return n;
}

void fxh__error(fxh_answer *a, fxs_status code, int http_status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    free(a->body);
    memset(a, 0, sizeof *a);
    a->status = code ? fxh_http_status(code) : http_status;
    a->www_authenticate = a->status == 401;
    a->content_type = "application/json";
    size_t cap = 6 * strlen(msg) + 32;
    a->body = malloc(cap);
    if (!a->body)
        return;
    size_t n = (size_t)snprintf(a->body, cap, "{\"error\": \"");
    n += json_escape(a->body + n, cap - n, msg);
    n += (size_t)snprintf(a->body + n, cap - n, "\"}");
    a->len = n;
    a->json_len = SIZE_MAX;
}

/* Queues a on the connection (and frees its body). */
static enum MHD_Result send_answer(struct MHD_Connection *conn, fxh_answer *a)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(a->len, a->body ? a->body : "",
                                                                a->body ? MHD_RESPMEM_MUST_FREE
                                                                        : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(a->body);
        return MHD_NO;
    }
    a->body = NULL;
    if (a->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
    if (a->www_authenticate)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (a->json_len != SIZE_MAX) {
        char n[32];
        snprintf(n, sizeof n, "%zu", a->json_len);
        MHD_add_response_header(resp, "Inference-Header-Content-Length", n);
    }
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)a->status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* ------------------------------------------------------- local calls */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    fxs_status code;
    char *msg;
    uint8_t *resp;
    size_t resp_len;
} waiter;

static void on_done(void *ud, fxs_status code, const char *message, const uint8_t *resp,
                    size_t len)
{
    waiter *w = ud;
    uint8_t *copy = NULL;
    if (code == FXS_OK && !(copy = malloc(len ? len : 1))) {
        code = FXS_RESOURCE_EXHAUSTED;
        message = "server out of memory";
    }
    if (copy)
        memcpy(copy, resp, len);
    char *msg = code != FXS_OK ? strdup(message ? message : "") : NULL;
    pthread_mutex_lock(&w->mu);
    w->code = code;
    w->msg = msg;
    w->resp = copy;
    w->resp_len = len;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int fxh__call(const fxh_request *r, const char *path, const uint8_t *req, size_t req_len,
              uint8_t **resp, size_t *resp_len, char *msg, size_t msglen)
{
    waiter w = { .done = false };
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    fxr_credentials cred = { .authorization = r->authorization, .peer = r->peer, .tls = r->tls,
                             .method = path };
    fxr_server_call_local(r->rpc, path, &cred, req, req_len, on_done, &w);
    /* The rpc server's shutdown bounds this wait: it cancels, then waits
     * for, every call in flight, local ones too. */
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    *resp = w.resp;
    *resp_len = w.resp_len;
    snprintf(msg, msglen, "%s", w.msg ? w.msg : "");
    free(w.msg);
    return w.code;
}

/* ------------------------------------------------------- the daemon */

/* "http:ADDR:PORT" of the connection's peer, for logs and fxr_peer. */
static void peer_of(struct MHD_Connection *conn, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, len, "http:%s:%d", host, port);
}

/* "http:ADDR" of the connection's peer: the client of the in-flight
 * limits (one address, as MHD's per-address connection limit counts). */
static void client_of(struct MHD_Connection *conn, char *out, size_t len)
{
    char peer[80];
    peer_of(conn, peer, sizeof peer);
    char *colon = strrchr(peer, ':');
    if (colon)
        *colon = '\0';
    snprintf(out, len, "%s", peer);
}

/* Holds `total` bytes of p's body in the in-flight limits (what is held
 * already is not taken twice): false when a limit refuses (p->why). */
static bool charge_body(fxh_server *h, pending *p, uint64_t total)
{
    if (total <= p->charged || p->limited)
        return !p->limited;
    if (fxr_server_charge(h->opts.rpc, p->client, total - p->charged, p->why, sizeof p->why)) {
        p->limited = true;
        return false;
    }
    p->charged = total;
    return true;
}

/* Keeps the URL as sent: routes.c splits the path at '/' first and then
 * decodes each segment, so that "%2F" stays inside its segment and "%00"
 * can be refused instead of cutting the string short. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *uri)
{
    (void)cls, (void)conn;
    return strlen(uri);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    fxh_server *h = cls;
    pending *p = *con_cls;
    size_t limit = h->opts.max_body_bytes;
    if (!p) { /* the headers: check the declared length before any body */
        if (!(p = calloc(1, sizeof *p)))
            return MHD_NO;
        *con_cls = p;
        client_of(conn, p->client, sizeof p->client);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
        if (declared > limit) {
            fxh_answer a = { 0 };
            fxh__error(&a, 0, 413, "the request body is %llu bytes, over the limit of %zu "
                       "(--max-message-mb)", declared, limit);
            p->answered = true;
            return send_answer(conn, &a);
        }
        if (!charge_body(h, p, declared)) { /* before the body is read */
            fxh_answer a = { 0 };
            fxh__error(&a, FXS_RESOURCE_EXHAUSTED, 429, "%s", p->why);
            p->answered = true;
            return send_answer(conn, &a);
        }
        return MHD_YES;
    }
    if (*upload_data_size) { /* a piece of the body */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (p->too_large || p->answered || p->limited)
            return MHD_YES;
        if (n > limit - p->len) {
            p->too_large = true;
            return MHD_YES;
        }
        if (!charge_body(h, p, p->len + n)) /* a chunked body, as it arrives */
            return MHD_YES;
        if (p->len + n > p->cap) {
            size_t cap = p->cap ? p->cap : 4096;
            while (cap < p->len + n)
                cap *= 2;
            char *b = realloc(p->body, cap);
            if (!b)
                return MHD_NO;
            p->body = b;
            p->cap = cap;
        }
        memcpy(p->body + p->len, upload_data, n);
        p->len += n;
        return MHD_YES;
    }
    if (p->answered)
        return MHD_YES;
    p->answered = true;
    fxh_answer a = { .json_len = SIZE_MAX };
    if (p->too_large) {
        fxh__error(&a, 0, 413, "the request body is over the limit of %zu bytes "
                   "(--max-message-mb)", limit);
        return send_answer(conn, &a);
    }
    if (p->limited) {
        fxh__error(&a, FXS_RESOURCE_EXHAUSTED, 429, "%s", p->why);
        return send_answer(conn, &a);
    }
    fxh_request r = { .rpc = h->opts.rpc, .method = method, .url = url, .tls = h->tls,
                      .body = p->body ? p->body : "", .body_len = p->len };
    r.authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_AUTHORIZATION);
    r.infer_header_len = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     "Inference-Header-Content-Length");
    peer_of(conn, r.peer, sizeof r.peer);
    fxh__route(&r, &a);
    if (a.status >= 500)
        log_line(h, "warn", "http: %s %.200s from %s: %d", method, url, r.peer, a.status);
    return send_answer(conn, &a);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn, (void)toe;
    fxh_server *h = cls;
    pending *p = *con_cls;
    if (p) {
        if (p->charged)
            fxr_server_uncharge(h->opts.rpc, p->client, p->charged);
        free(p->body);
        free(p);
    }
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_line(cls, "warn", "http: %s", msg);
}

/* "HOST:PORT" ("[::1]:0" too) -> a socket address. */
static int resolve(const char *listen, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || !colon[1] ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) || strlen(colon + 1) > 5 ||
        atoi(colon + 1) > 65535)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "http: '%s' is not HOST:PORT",
                        listen);
    char host[256];
    size_t n = (size_t)(colon - listen);
    if (n >= sizeof host)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "http: host of '%s' is too long",
                        listen);
    memcpy(host, listen, n);
    host[n] = '\0';
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *res = NULL;
    int e = getaddrinfo(host, colon + 1, &hints, &res);
    if (e || !res)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "http: cannot resolve '%s': %s",
                        host, gai_strerror(e));
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static int read_pem(const char *path, char **out, char *err, size_t errlen)
{
    size_t len;
    void *buf = NULL;
    char ferr[512];
    if (fxu_read_file(path, &buf, &len, ferr, sizeof ferr) != 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "http: TLS file %s: %s", path, ferr);
    ((char *)buf)[len] = '\0'; /* one byte more is allocated (fsutil.h) */
    *out = buf;
    return 0;
}

int fxh_start(const fxh_opts *opts, fxh_server **out, int *port, char *err, size_t errlen)
{
    *out = NULL;
    *port = 0;
    if (!opts || !opts->listen || !opts->rpc)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "http: no address or rpc server");
    if (!opts->tls_cert_file != !opts->tls_key_file)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "http: TLS needs both a certificate and a key file");
    if (opts->max_connections < 0 || opts->max_connections > 4096)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "http: max_connections %d is not in 0..4096", opts->max_connections);
    struct sockaddr_storage ss;
    int rc = resolve(opts->listen, &ss, err, errlen);
    if (rc)
        return rc;
    fxh_server *h = calloc(1, sizeof *h);
    if (!h)
        return fxu_oom(err, errlen);
    h->opts = *opts;
    if (!h->opts.max_body_bytes)
        h->opts.max_body_bytes = DEFAULT_MAX_BODY;
    if (!h->opts.max_connections)
        h->opts.max_connections = DEFAULT_MAX_CONNECTIONS;
    if (!h->opts.idle_timeout_s)
        h->opts.idle_timeout_s = DEFAULT_IDLE_S;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (opts->tls_cert_file) {
        if ((rc = read_pem(opts->tls_cert_file, &h->cert_pem, err, errlen)) ||
            (rc = read_pem(opts->tls_key_file, &h->key_pem, err, errlen))) {
            fxh_stop(h);
            return rc;
        }
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            fxh_stop(h);
            return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                            "http: this libmicrohttpd has no TLS support");
        }
        h->tls = true;
        flags |= MHD_USE_TLS;
    }
    struct MHD_OptionItem tls_opts[] = {
        { MHD_OPTION_HTTPS_MEM_CERT, 0, h->cert_pem },
        { MHD_OPTION_HTTPS_MEM_KEY, 0, h->key_pem },
        { MHD_OPTION_END, 0, NULL },
    };
    h->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, /* first: it applies to what follows */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->opts.max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)h->opts.max_connections_per_client,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->opts.idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, h,
        MHD_OPTION_ARRAY, h->tls ? tls_opts : &tls_opts[2],
        MHD_OPTION_END);
    if (!h->mhd) {
        fxh_stop(h);
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                        "http: cannot listen on %s (bad address or in use)", opts->listen);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : 0;
    log_line(h, "info", "http: listening on %s (port %d, %s, up to %d connections, bodies up "
             "to %zu bytes)", opts->listen, h->port, h->tls ? "TLS" : "plaintext",
             h->opts.max_connections, h->opts.max_body_bytes);
    *port = h->port;
    *out = h;
    return 0;
}

void fxh_stop(fxh_server *h)
{
    if (!h)
        return;
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    if (h->key_pem) /* the secret goes no further than this process */
        memset(h->key_pem, 0, strlen(h->key_pem));
    free(h->key_pem);
    free(h->cert_pem);
    free(h);
}
