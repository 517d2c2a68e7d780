/*
 * peers.c - the peer registry, the peer secret and the outbound calls
 * (peers.h). The KV is kv.c.
 */
#define _GNU_SOURCE
#include "peers/peers_internal.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/util.h"
#include "fluxion/v1/peer.pb-c.h"
#include "rpcc.h"

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == ':' || c == '-';
}

/* One entry "NAME=HOST:PORT" or "HOST:PORT" (s[0..n)); where says where
 * it came from, for messages. */
static int add_entry(fxpr_peers *p, const char *s, size_t n, const char *where, char *err,
                     size_t errlen)
{
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (n == 0)
        return 0;
    const char *eq = memchr(s, '=', n);
    size_t nlen = eq ? (size_t)(eq - s) : n;
    const char *addr = eq ? eq + 1 : s;
    size_t alen = n - (size_t)(addr - s);
    if (nlen == 0 || nlen > FXPR_NAME_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: peer '%.*s': the name must be 1..%d characters", where, (int)n, s,
                        FXPR_NAME_MAX);
    for (size_t i = 0; i < nlen; i++)
        if (!name_char(s[i]))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: peer '%.*s': a name has only letters, digits and . _ : -",
                            where, (int)n, s);
    const char *colon = alen ? memrchr(addr, ':', alen) : NULL;
    if (alen == 0 || alen > FXPR_ADDR_MAX || !colon || colon == addr || colon + 1 == addr + alen)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: peer '%.*s' is not HOST:PORT or NAME=HOST:PORT", where, (int)n, s);
    long port = 0;
    for (const char *c = colon + 1; c < addr + alen; c++) {
        if (!isdigit((unsigned char)*c) || (port = port * 10 + (*c - '0')) > 65535)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: peer '%.*s': the port is not a number in 1..65535", where,
                            (int)n, s);
    }
    for (const char *c = addr; c < colon; c++)
        if ((unsigned char)*c <= ' ' || *c == '/' || *c == ',')
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: peer '%.*s': bad host", where, (int)n, s);
    if (port == 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: peer '%.*s': port 0", where, (int)n, s);
    if (p->n == FXPR_MAX_PEERS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: more than %d peers", where,
                        FXPR_MAX_PEERS);
    fxpr__peer *e = &p->peer[p->n];
    snprintf(e->name, sizeof e->name, "%.*s", (int)nlen, s);
    snprintf(e->addr, sizeof e->addr, "%.*s", (int)alen, addr);
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->peer[i].name, e->name) == 0)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: peer '%s' named twice",
                            where, e->name);
    p->n++;
    return 0;
}

static int parse_list(fxpr_peers *p, const char *list, char *err, size_t errlen)
{
    for (const char *s = list; s && *s;) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        int rc = add_entry(p, s, n, "--peers", err, errlen);
        if (rc)
            return rc;
        s = comma ? comma + 1 : s + n;
    }
    return 0;
}

static int parse_file(fxpr_peers *p, const char *path, char *err, size_t errlen)
{
    void *buf = NULL;
    size_t len = 0;
    char e2[512];
    if (fxu_read_file(path, &buf, &len, e2, sizeof e2) != 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "--peers-file %s: %s", path, e2);
    int rc = 0, line = 0;
    char where[FXPR_ADDR_MAX + 64];
    for (char *s = buf, *end = s + len; !rc && s < end; line++) {
        char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
        char *hash = memchr(s, '#', n);
        if (hash)
            n = (size_t)(hash - s);
        snprintf(where, sizeof where, "--peers-file %s:%d", path, line + 1);
        if (memchr(s, '\0', n))
            rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: a NUL byte", where);
        else
            rc = add_entry(p, s, n, where, err, errlen);
        s = nl ? nl + 1 : end;
    }
    free(buf);
    return rc;
}

/* The secret: the file's content without trailing white space. */
static int read_secret(fxpr_peers *p, const char *path, char *err, size_t errlen)
{
    void *buf = NULL;
    size_t len = 0;
    char e2[512];
    if (fxu_read_file(path, &buf, &len, e2, sizeof e2) != 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "--peer-token-file %s: %s", path, e2);
    char *s = buf;
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    int rc = 0;
    if (len == 0)
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "--peer-token-file %s: empty", path);
    else if (len < 32 || len > 256)
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                      "--peer-token-file %s: %zu characters; the secret must be 32..256 "
                      "visible ASCII characters", path, len);
    for (size_t i = 0; !rc && i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                          "--peer-token-file %s: character %zu is not visible ASCII (no "
                          "spaces or control characters in the secret)", path, i + 1);
    if (!rc && !(p->secret = strndup(s, len)))
        rc = fxu_oom(err, errlen);
    memset(buf, 0, len);
    free(buf);
    return rc;
}

int fxpr_open(const fxpr_opts *o, fxpr_peers **out, char *err, size_t errlen)
{
    *out = NULL;
    fxpr_peers *p = calloc(1, sizeof *p);
    if (!p)
        return fxu_oom(err, errlen);
    pthread_mutex_init(&p->mu, NULL);
    p->max_message_bytes = o->max_message_bytes ? o->max_message_bytes : 64u << 20;
    p->tls_client_cert = o->tls_client_cert;
    int rc = 0;
    if (o->node_name) {
        size_t n = strlen(o->node_name);
        if (n == 0 || n > FXPR_NAME_MAX)
            rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                          "--node-name: 1..%d characters", FXPR_NAME_MAX);
        for (size_t i = 0; !rc && i < n; i++)
            if (!name_char(o->node_name[i]))
                rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                              "--node-name '%s': only letters, digits and . _ : -",
                              o->node_name);
        snprintf(p->node, sizeof p->node, "%s", o->node_name);
        p->node_given = true;
    }
    if (!rc)
        rc = parse_list(p, o->peers, err, errlen);
    if (!rc && o->peers_file)
        rc = parse_file(p, o->peers_file, err, errlen);
    if (!rc && o->token_file)
        rc = read_secret(p, o->token_file, err, errlen);
    if (!rc && p->n && !p->secret)
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                      "--peers needs --peer-token-file FILE (the secret the daemons share)");
    if (!rc && o->comm_host && (!*o->comm_host || strlen(o->comm_host) > 255))
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "--comm-host: 1..255 characters");
#define DUP(f) (o->f && !(p->f = strdup(o->f)))
    if (!rc && (DUP(tls_cert_file) || DUP(tls_key_file) || DUP(tls_ca_file) || DUP(comm_host)))
        rc = fxu_oom(err, errlen);
#undef DUP
    snprintf(p->version, sizeof p->version, "%s", o->version ? o->version : "");
    if (!rc)
        rc = fxpr__kv_init(p, err, errlen);
    if (rc) {
        fxpr_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void fxpr_free(fxpr_peers *p)
{
    if (!p)
        return;
    if (p->greeter_started)
        pthread_join(p->greeter, NULL);
    for (int i = 0; i < p->n; i++)
        fxc_channel_free(p->peer[i].ch);
    fxpr__kv_free(p);
    if (p->secret) {
        memset(p->secret, 0, strlen(p->secret));
        free(p->secret);
    }
    free(p->tls_cert_file);
    free(p->tls_key_file);
    free(p->tls_ca_file);
    free(p->comm_host);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

const char *fxpr_secret(const fxpr_peers *p) { return p ? p->secret : NULL; }
const char *fxpr_node(const fxpr_peers *p) { return p->node; }
const char *fxpr_comm_host(const fxpr_peers *p) { return p->comm_host ? p->comm_host : ""; }
const char *fxpr_version(const fxpr_peers *p) { return p->version; }
int fxpr_count(const fxpr_peers *p) { return p ? p->n : 0; }
const char *fxpr_name(const fxpr_peers *p, int i) { return p->peer[i].name; }
const char *fxpr_addr(const fxpr_peers *p, int i) { return p->peer[i].addr; }

void fxpr_set_listen(fxpr_peers *p, const char *listen, int port)
{
    if (!p->node_given) {
        const char *colon = strrchr(listen, ':');
        int hostlen = colon ? (int)(colon - listen) : (int)strlen(listen);
        snprintf(p->node, sizeof p->node, "%.*s:%d", hostlen, listen, port);
    }
    /* this daemon in its own list (one list for a whole set): skipped */
    for (int i = 0; i < p->n; i++)
        p->peer[i].self = strcmp(p->peer[i].name, p->node) == 0;
}

int fxpr_find(const fxpr_peers *p, const char *name)
{
    for (int i = 0; p && name && i < p->n; i++)
        if (!p->peer[i].self && strcmp(p->peer[i].name, name) == 0)
            return i;
    return -1;
}

/* The channel to peer i, opened at its first use. */
static int channel(fxpr_peers *p, int i, fxc_channel **ch, char *err, size_t errlen)
{
    if (!p->secret)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                        "this daemon has no --peer-token-file");
    if (i < 0 || i >= p->n)
        return fxu_fail(err, errlen, FXS_NOT_FOUND, "no such peer");
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    if (!p->peer[i].ch) {
        fxc_channel_opts co = { .max_recv_bytes = p->max_message_bytes,
                                .max_send_bytes = p->max_message_bytes,
                                .tls = p->tls_cert_file != NULL,
                                .tls_ca_file = p->tls_ca_file,
                                .tls_cert_file = p->tls_client_cert ? p->tls_cert_file : NULL,
                                .tls_key_file = p->tls_client_cert ? p->tls_key_file : NULL,
                                .token = p->secret,
                                /* a peer back from a restart is reached within 1 s */
                                .max_reconnect_backoff_ms = 1000 };
        rc = fxc_channel_open(p->peer[i].addr, &co, &p->peer[i].ch, err, errlen);
    }
    *ch = p->peer[i].ch;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* "peer NAME: " before err's message. */
static int named(const fxpr_peers *p, int i, int rc, char *err, size_t errlen)
{
    if (rc && errlen) {
        char tmp[FXS_ERRLEN];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "peer %s: %s", p->peer[i].name, tmp);
    }
    return rc;
}

int fxpr_call(fxpr_peers *p, int peer, const char *method, const ProtobufCMessage *req,
              ProtobufCMessage **resp, int64_t timeout_ms, char *err, size_t errlen)
{
    fxc_channel *ch = NULL;
    int rc = channel(p, peer, &ch, err, errlen);
    if (rc)
        return rc;
    char path[128];
    const ProtobufCMethodDescriptor *m =
        fxc_method_path(&fluxion__v1__peer_service__descriptor, method, path, sizeof path);
    if (!m)
        return fxu_fail(err, errlen, FXS_INTERNAL, "PeerService has no method %s", method);
    fxc_call_opts co = { .timeout_ms = timeout_ms };
    rc = fxc_unary(ch, path, req, m->output, resp, &co, err, errlen);
    return named(p, peer, rc, err, errlen);
}

/* The StartRank stream: the first message, then each blob's chunks. */
typedef struct {
    const ProtobufCMessage *first;
    const fxpr_blob *blobs;
    size_t chunk;
    int blob;      /* -1: the first message not sent yet */
    size_t off;
    Fluxion__V1__StartRankChunk msg;
} start_stream;

static const ProtobufCMessage *start_next(void *data, int *fail)
{
    (void)fail;
    start_stream *s = data;
    if (s->blob < 0) {
        s->blob = 0;
        return s->first;
    }
    while (s->blob < 4 && s->off >= s->blobs[s->blob].len) {
        s->blob++;
        s->off = 0;
    }
    if (s->blob == 4)
        return NULL;
    const fxpr_blob *b = &s->blobs[s->blob];
    size_t n = b->len - s->off < s->chunk ? b->len - s->off : s->chunk;
    s->msg = (Fluxion__V1__StartRankChunk)FLUXION__V1__START_RANK_CHUNK__INIT;
    ProtobufCBinaryData bin = { .len = n, .data = (uint8_t *)b->data + s->off };
    switch (s->blob) {
    case 0: s->msg.weights = bin; break;
    case 1: s->msg.resume = bin; break;
    case 2: s->msg.train = bin; break;
    default: s->msg.val = bin; break;
    }
    s->off += n;
    return &s->msg.base;
}

int fxpr_start_rank(fxpr_peers *p, int peer, const ProtobufCMessage *first,
                    const fxpr_blob blobs[4], size_t chunk, int64_t timeout_ms, char **rank_id,
                    char *err, size_t errlen)
{
    *rank_id = NULL;
    fxc_channel *ch = NULL;
    int rc = channel(p, peer, &ch, err, errlen);
    if (rc)
        return rc;
    char path[128];
    const ProtobufCMethodDescriptor *m =
        fxc_method_path(&fluxion__v1__peer_service__descriptor, "StartRank", path, sizeof path);
    start_stream s = { .first = first, .blobs = blobs, .chunk = chunk ? chunk : 1u << 20,
                       .blob = -1 };
    ProtobufCMessage *resp = NULL;
    fxc_call_opts co = { .timeout_ms = timeout_ms };
    rc = fxc_client_stream(ch, path, start_next, NULL, &s, m->output, &resp, &co, err, errlen);
    if (!rc) {
        Fluxion__V1__StartRankResponse *r = (void *)resp;
        if (!(*rank_id = strdup(r->rank_id)))
            rc = fxu_oom(err, errlen);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return named(p, peer, rc, err, errlen);
}

static void *greeter_main(void *arg)
{
    fxpr_peers *p = arg;
    for (int i = 0; i < p->n; i++) {
        if (p->peer[i].self)
            continue;
        Fluxion__V1__PeerHelloRequest req = FLUXION__V1__PEER_HELLO_REQUEST__INIT;
        req.node = p->node;
        req.version = p->version;
        ProtobufCMessage *resp = NULL;
        char err[FXS_ERRLEN];
        int rc = fxpr_call(p, i, "Hello", &req.base, &resp, 5000, err, sizeof err);
        if (rc) {
            fxl_log(FXL_WARN, "peers", "peer does not answer (yet) peer=%s addr=%s "
                    "status=%s error=\"%s\"", p->peer[i].name, p->peer[i].addr,
                    fxs_status_name(rc), err);
            continue;
        }
        Fluxion__V1__PeerHelloResponse *r = (void *)resp;
        fxl_log(FXL_INFO, "peers", "peer answers peer=%s addr=%s node=%s version=%s devices=%zu",
                p->peer[i].name, p->peer[i].addr, r->node, r->version, r->n_devices);
        if (strcmp(r->node, p->peer[i].name) != 0)
            fxl_log(FXL_WARN, "peers", "peer calls itself otherwise peer=%s node=%s (its "
                    "--node-name should be the name this daemon's --peers gives it)",
                    p->peer[i].name, r->node);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return NULL;
}

void fxpr_greet_async(fxpr_peers *p)
{
    if (!p || !p->secret || p->greeter_started)
        return;
    p->greeter_started = pthread_create(&p->greeter, NULL, greeter_main, p) == 0;
}
