/*
 * tls.c - the server side of TLS behind rpc.h: the certificate chain, its
 * private key and (for mTLS) the client CA, read from files.
 *
 * The files are checked here with OpenSSL before gRPC sees them (a PEM
 * certificate, an unencrypted PEM key that matches it, a PEM CA bundle), so
 * that a bad file is an error naming that file, at create and at reload,
 * instead of a handshake failure later. gRPC gets them through its
 * certificate config fetcher (grpc_ssl_server_credentials_create_options_
 * using_config_fetcher), which it calls at the listener's start and before
 * every new handshake: a reload stores the new contents and marks them
 * fresh, and the next handshake takes them. Connections already open keep
 * the session they negotiated.
 */
#define _GNU_SOURCE
#include "rpc/rpc_internal.h"
#include "base/fsutil.h"
#include "base/util.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* No PEM file we read is near this; a bigger one is a mistake. */
#define MAX_PEM_BYTES (1 << 20)

/* Frees a PEM held in memory; a key's bytes are wiped first. */
static void free_pem(char *pem)
{
    if (pem)
        OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
}

/* Reads path (what: "certificate", ...) into a NUL-terminated string. */
static int read_pem(const char *what, const char *path, char **out, char *err, size_t errlen)
{
    void *buf = NULL;
    size_t len = 0;
    char why[FXS_ERRLEN];
    *out = NULL;
    if (fxu_read_file(path, &buf, &len, why, sizeof why) != 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "TLS %s file %s cannot be read: %s",
                        what, path, why);
    if (len == 0 || len > MAX_PEM_BYTES || memchr(buf, 0, len)) {
        OPENSSL_cleanse(buf, len);
        free(buf);
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "TLS %s file %s is %s, not PEM text", what, path,
                        len == 0 ? "empty" : len > MAX_PEM_BYTES ? "over 1 MiB" : "binary");
    }
    char *pem = malloc(len + 1);
    if (!pem) {
        OPENSSL_cleanse(buf, len);
        free(buf);
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
    }
    memcpy(pem, buf, len);
    pem[len] = '\0';
    OPENSSL_cleanse(buf, len);
    free(buf);
    *out = pem;
    return 0;
}

/* The certificates of a PEM text: how many parse (0: none), the first in
 * *first when asked (X509_free it). */
static int count_certs(const char *pem, X509 **first)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    int n = 0;
    X509 *x;
    if (first)
        *first = NULL;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (first && !*first)
            *first = x;
        else
            X509_free(x);
        n++;
    }
    BIO_free(bio);
    ERR_clear_error(); /* the read that ended the loop */
    return n;
}

/* A passphrase callback that gives none: an encrypted key fails to load
 * instead of OpenSSL prompting on the daemon's terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* The loaded, checked contents of a set of files. */
typedef struct {
    char *cert_pem, *key_pem, *ca_pem;
} pems;

static void pems_free(pems *p)
{
    free_pem(p->cert_pem);
    free_pem(p->key_pem);
    free_pem(p->ca_pem);
    memset(p, 0, sizeof *p);
}

/* Reads and checks the three files (ca may be NULL). */
static int load_pems(fxr_server *s, const char *cert, const char *key, const char *ca, pems *p,
                     char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    int rc = read_pem("certificate", cert, &p->cert_pem, err, errlen);
    if (!rc)
        rc = read_pem("key", key, &p->key_pem, err, errlen);
    if (!rc && ca)
        rc = read_pem("client CA", ca, &p->ca_pem, err, errlen);
    if (rc) {
        pems_free(p);
        return rc;
    }
    X509 *leaf = NULL;
    EVP_PKEY *pkey = NULL;
    if (count_certs(p->cert_pem, &leaf) == 0) {
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                      "TLS certificate file %s has no valid PEM certificate "
                      "(-----BEGIN CERTIFICATE-----)", cert);
    } else {
        BIO *bio = BIO_new_mem_buf(p->key_pem, -1);
        pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
        BIO_free(bio);
        ERR_clear_error();
        if (!pkey)
            rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                          "TLS key file %s has no unencrypted PEM private key", key);
        else if (X509_check_private_key(leaf, pkey) != 1)
            rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                          "TLS key file %s does not match the certificate in %s", key, cert);
        ERR_clear_error();
    }
    if (!rc && ca && count_certs(p->ca_pem, NULL) == 0)
        rc = fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                      "TLS client CA file %s has no valid PEM certificate", ca);
    if (!rc && X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
        fxr__log(s, "warn", "rpc: the TLS certificate in %s has expired: clients will refuse "
                 "it", cert);
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    if (rc)
        pems_free(p);
    return rc;
}

/* gRPC's certificate config fetcher: at the listener's start and before
 * each new handshake. Hands over the current files' contents once after
 * each (re)load; gRPC owns and frees the config it gets. */
static grpc_ssl_certificate_config_reload_status fetch_config(
    void *data, grpc_ssl_server_certificate_config **config)
{
    fxr__tls *t = data;
    grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    pthread_mutex_lock(&t->mu);
    if (t->fresh) {
        grpc_ssl_pem_key_cert_pair pair = { .private_key = t->key_pem,
                                            .cert_chain = t->cert_pem };
        /* Copies the strings. gRPC 1.51 asserts that a fetched config has
         * root certificates even when no client certificate is asked for
         * (ssl_security_connector.cc): without a client CA, the server's
         * own chain stands in, unused, as no client is asked for one. */
        *config = grpc_ssl_server_certificate_config_create(t->ca_pem ? t->ca_pem : t->cert_pem,
                                                            &pair, 1);
        st = *config ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW
                     : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
        t->fresh = false;
        t->reloads++;
    }
    pthread_mutex_unlock(&t->mu);
    return st;
}

int fxr__tls_open(fxr_server *s, char *err, size_t errlen)
{
    const fxr_server_opts *o = &s->opts;
    s->tls = NULL;
    if (!o->tls_cert_file && !o->tls_key_file)
        return 0;
    pems p;
    int rc = load_pems(s, o->tls_cert_file, o->tls_key_file, o->tls_client_ca_file, &p, err,
                       errlen);
    if (rc)
        return rc;
    fxr__tls *t = calloc(1, sizeof *t);
    if (!t || !(t->cert_file = strdup(o->tls_cert_file)) ||
        !(t->key_file = strdup(o->tls_key_file)) ||
        (o->tls_client_ca_file && !(t->ca_file = strdup(o->tls_client_ca_file)))) {
        if (t) {
            free(t->cert_file);
            free(t->key_file);
        }
        free(t);
        pems_free(&p);
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "rpc: out of memory");
    }
    pthread_mutex_init(&t->mu, NULL);
    t->cert_pem = p.cert_pem;
    t->key_pem = p.key_pem;
    t->ca_pem = p.ca_pem;
    t->fresh = true; /* the listener's start takes them */
    s->tls = t;
    return 0;
}

grpc_server_credentials *fxr__tls_credentials(fxr_server *s)
{
    if (!s->tls)
        return grpc_insecure_server_credentials_create();
    /* A client certificate is asked for only with a CA to verify it: gRPC
     * then puts a verified certificate's subject into the call's auth
     * context (guard.c), and refuses the handshake of one it cannot
     * verify. Without tls_require_client_cert, a client without one still
     * connects (it may send a token instead). */
    grpc_ssl_client_certificate_request_type req = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    if (s->tls->ca_pem)
        req = s->opts.tls_require_client_cert
                  ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                  : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
    grpc_ssl_server_credentials_options *so =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(req, fetch_config,
                                                                        s->tls);
    return so ? grpc_ssl_server_credentials_create_with_options(so) : NULL;
}

void fxr__tls_free(fxr_server *s)
{
    fxr__tls *t = s->tls;
    if (!t)
        return;
    free_pem(t->cert_pem);
    free_pem(t->key_pem);
    free_pem(t->ca_pem);
    free(t->cert_file);
    free(t->key_file);
    free(t->ca_file);
    pthread_mutex_destroy(&t->mu);
    free(t);
    s->tls = NULL;
}

int fxr_server_reload_tls(fxr_server *s, char *err, size_t errlen)
{
    fxr__tls *t = s->tls;
    if (!t)
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION,
                        "rpc: TLS is not configured (--tls-cert, --tls-key): nothing to reload");
    pems p;
    int rc = load_pems(s, t->cert_file, t->key_file, t->ca_file, &p, err, errlen);
    if (rc) {
        fxr__log(s, "error", "rpc: TLS reload failed, the current certificate stays: %s", err);
        return rc;
    }
    pthread_mutex_lock(&t->mu);
    free_pem(t->cert_pem);
    free_pem(t->key_pem);
    free_pem(t->ca_pem);
    t->cert_pem = p.cert_pem;
    t->key_pem = p.key_pem;
    t->ca_pem = p.ca_pem;
    t->fresh = true; /* the next handshake takes them */
    pthread_mutex_unlock(&t->mu);
    fxr__log(s, "info", "rpc: TLS files reloaded (%s, %s%s%s): new connections use them",
             t->cert_file, t->key_file, t->ca_file ? ", client CA " : "",
             t->ca_file ? t->ca_file : "");
    return 0;
}

bool fxr_call_tls(const fxr_call *call)
{
    return call->local ? call->local_tls : call->s->tls != NULL;
}
