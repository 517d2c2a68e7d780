/*
 * auth.c - authentication: the cache of tokens and certificate principals
 * (loaded from the store, swapped whole on every change), and
 * fxau_authenticate, the RPC hook. The administration (tokens, certificate
 * principals, bootstrap) is admin.c.
 */
#define _GNU_SOURCE
#include "auth/auth_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base/log.h"
#include "base/status.h"
#include "base/util.h"

void fxau__sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL))
        memset(out, 0, 32); /* unreachable in practice; matches no stored hash */
}

/* ---------------------------------------------------------------- cache */

static void free_certs(fxau__cert *c, int n)
{
    for (int i = 0; c && i < n; i++)
        free(c[i].subject);
    free(c);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void fill_token(fxau__token *t, const fxdb_token_rec *r)
{
    memset(t, 0, sizeof *t);
    t->id = r->id;
    copy_str(t->team, sizeof t->team, r->team);
    copy_str(t->name, sizeof t->name, r->name);
    t->role = fxp_role_from_name(r->role ? r->role : "");
    t->expires_ms = r->expires_ms;
    t->revoked_ms = r->revoked_ms;
    atomic_store(&t->last_used_ms, r->last_used_ms);
    atomic_store(&t->stored_ms, r->last_used_ms);
}

int fxau__reload(fxau_auth *a, char *err, size_t errlen)
{
    fxdb_token_rec *recs = NULL;
    fxdb_cert_rec *crecs = NULL;
    int n = 0, nc = 0;
    int rc = fxdb_token_list(a->st, &recs, &n, err, errlen);
    if (!rc)
        rc = fxdb_cert_list(a->st, &crecs, &nc, err, errlen);
    unsigned char(*hashes)[32] = NULL;
    fxau__token *tokens = NULL;
    fxau__cert *certs = NULL;
    if (!rc && n > 0) {
        hashes = malloc((size_t)n * sizeof *hashes);
        tokens = malloc((size_t)n * sizeof *tokens);
        if (!hashes || !tokens)
            rc = fxu_oom(err, errlen);
    }
    if (!rc && nc > 0 && !(certs = calloc((size_t)nc, sizeof *certs)))
        rc = fxu_oom(err, errlen);
    for (int i = 0; !rc && i < n; i++) {
        memcpy(hashes[i], recs[i].hash, 32);
        fill_token(&tokens[i], &recs[i]);
        if (tokens[i].role == FXP_ROLE_NONE)
            fxl_log(FXL_WARN, "auth", "token has an unknown role: it cannot authenticate "
                    "id=%lld role=\"%s\"", (long long)recs[i].id, recs[i].role ? recs[i].role : "");
    }
    for (int i = 0; !rc && i < nc; i++) {
        if (!(certs[i].subject = strdup(crecs[i].subject ? crecs[i].subject : ""))) {
            rc = fxu_oom(err, errlen);
            break;
        }
        copy_str(certs[i].team, sizeof certs[i].team, crecs[i].team);
        certs[i].role = fxp_role_from_name(crecs[i].role ? crecs[i].role : "");
    }
    fxdb_token_recs_free(recs, n);
    fxdb_cert_recs_free(crecs, nc);
    if (rc) {
        free(hashes);
        free(tokens);
        free_certs(certs, nc);
        return rc;
    }
    pthread_rwlock_wrlock(&a->lock);
    /* Keep the last uses seen in memory: both arrays are sorted by id. */
    for (int i = 0, j = 0; i < n && j < a->ntokens;) {
        if (tokens[i].id < a->tokens[j].id) {
            i++;
        } else if (tokens[i].id > a->tokens[j].id) {
            j++;
        } else {
            int64_t mem = atomic_load(&a->tokens[j].last_used_ms);
            int64_t stored = atomic_load(&a->tokens[j].stored_ms);
            if (mem > atomic_load(&tokens[i].last_used_ms))
                atomic_store(&tokens[i].last_used_ms, mem);
            if (stored > atomic_load(&tokens[i].stored_ms))
                atomic_store(&tokens[i].stored_ms, stored);
            i++, j++;
        }
    }
    unsigned char(*old_hashes)[32] = a->hashes;
    fxau__token *old_tokens = a->tokens;
    fxau__cert *old_certs = a->certs;
    int old_nc = a->ncerts;
    a->hashes = hashes;
    a->tokens = tokens;
    a->ntokens = n;
    a->certs = certs;
    a->ncerts = nc;
    pthread_rwlock_unlock(&a->lock);
    free(old_hashes);
    free(old_tokens);
    free_certs(old_certs, old_nc);
    return 0;
}

int fxau__cache_add(fxau_auth *a, const unsigned char hash[32], int64_t id, const char *team,
                    const char *name, fxp_role role, int64_t expires_ms, int64_t revoked_ms)
{
    pthread_rwlock_wrlock(&a->lock);
    int n = a->ntokens;
    unsigned char(*h)[32] = realloc(a->hashes, (size_t)(n + 1) * sizeof *h);
    if (h)
        a->hashes = h;
    fxau__token *t = h ? realloc(a->tokens, (size_t)(n + 1) * sizeof *t) : NULL;
    if (!t) {
        pthread_rwlock_unlock(&a->lock);
        return FXS_RESOURCE_EXHAUSTED;
    }
    a->tokens = t;
    memcpy(a->hashes[n], hash, 32);
    fxdb_token_rec r = { .id = id, .team = (char *)team, .name = (char *)name,
                         .role = (char *)fxp_role_name(role), .expires_ms = expires_ms,
                         .revoked_ms = revoked_ms };
    fill_token(&t[n], &r);
    atomic_store(&t[n].stored_ms, INT64_MAX); /* never written to the store */
    a->ntokens = n + 1;
    pthread_rwlock_unlock(&a->lock);
    return 0;
}

uint64_t fxau__compare_count(fxau_auth *a)
{
    return atomic_load(&a->compares);
}

/* ---------------------------------------------------------- open, close */

int fxau_open(fxdb_store *st, bool mtls, fxau_auth **out, char *err, size_t errlen)
{
    if (!st || !out)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "auth: no store");
    fxau_auth *a = calloc(1, sizeof *a);
    if (!a)
        return fxu_oom(err, errlen);
    a->st = st;
    a->mtls = mtls;
    pthread_mutex_init(&a->admin_mu, NULL);
    /* Writers first: a steady stream of calls (readers) must not hold off
     * a revoke indefinitely (glibc prefers readers by default). */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&a->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    char *v = NULL;
    int rc = fxdb_setting_get(st, "auth", &v, err, errlen);
    if (rc == FXS_NOT_FOUND)
        rc = 0;
    atomic_store(&a->on, v && strcmp(v, "on") == 0);
    free(v);
    if (!rc)
        rc = fxau__reload(a, err, errlen);
    if (rc) {
        fxau_close(a);
        return rc;
    }
    *out = a;
    return 0;
}

void fxau_close(fxau_auth *a)
{
    if (!a)
        return;
    char err[FXS_ERRLEN];
    for (int i = 0; i < a->ntokens; i++) {
        fxau__token *t = &a->tokens[i];
        int64_t used = atomic_load(&t->last_used_ms);
        if (used > atomic_load(&t->stored_ms) && fxdb_token_touch(a->st, t->id, used, err, sizeof err))
            fxl_log(FXL_WARN, "auth", "could not store a token's last use id=%lld error=\"%s\"",
                    (long long)t->id, err);
    }
    free(a->hashes);
    free(a->tokens);
    free_certs(a->certs, a->ncerts);
    pthread_rwlock_destroy(&a->lock);
    pthread_mutex_destroy(&a->admin_mu);
    free(a);
}

bool fxau_enabled(const fxau_auth *a)
{
    return a && (a->mtls || atomic_load(&((fxau_auth *)a)->on));
}

/* ------------------------------------------------------- authentication */

/* "Bearer <token>": the scheme case-insensitive, one or more spaces, then
 * the token (visible ASCII, nothing after it). *tok, *toklen: the token, or
 * the whole value when malformed (it is hashed all the same). */
static bool parse_bearer(const char *h, size_t len, const char **tok, size_t *toklen)
{
    *tok = h;
    *toklen = len;
    if (len > FXAU_HEADER_MAX) {
        *toklen = FXAU_HEADER_MAX;
        return false;
    }
    if (len < 7 || strncasecmp(h, "bearer", 6) != 0 || h[6] != ' ')
        return false;
    size_t i = 6;
    while (i < len && h[i] == ' ')
        i++;
    if (i == len)
        return false;
    for (size_t j = i; j < len; j++)
        if (h[j] < 0x21 || h[j] > 0x7e)
            return false;
    *tok = h + i;
    *toklen = len - i;
    return true;
}

static void token_principal(const fxau__token *t, fxp_principal *out)
{
    memset(out, 0, sizeof *out);
    copy_str(out->team, sizeof out->team, t->team);
    out->role = t->role;
    snprintf(out->who, sizeof out->who, "token:%s", t->name);
    out->token_id = t->id;
    out->expires_ms = t->expires_ms;
}

static int token_auth(fxau_auth *a, const char *header, fxp_principal *out, char *err,
                      size_t errlen)
{
    const char *tok;
    size_t len = strnlen(header, FXAU_HEADER_MAX + 1), toklen;
    bool wellformed = parse_bearer(header, len, &tok, &toklen);
    unsigned char h[32];
    fxau__sha256(tok, toklen, h);

    pthread_rwlock_rdlock(&a->lock);
    /* Every hash, no early exit; the match is selected with masks. */
    uint64_t found = 0, visited = 0;
    size_t idx = 0;
    for (size_t i = 0; i < (size_t)a->ntokens; i++) {
        uint64_t eq = (uint64_t)(CRYPTO_memcmp(h, a->hashes[i], 32) == 0);
        uint64_t mask = (uint64_t)0 - eq;
        idx = (size_t)(((uint64_t)idx & ~mask) | ((uint64_t)i & mask));
        found |= eq;
        visited++;
    }
    atomic_fetch_add(&a->compares, visited);
    OPENSSL_cleanse(h, sizeof h);

    int rc = 0;
    int64_t now = fxu_now_ms(), touch_id = 0;
    if (!wellformed && len > FXAU_HEADER_MAX) {
        rc = fxu_fail(err, errlen, FXS_UNAUTHENTICATED,
                      "malformed authorization header: longer than %d bytes", FXAU_HEADER_MAX);
    } else if (!wellformed) {
        rc = fxu_fail(err, errlen, FXS_UNAUTHENTICATED,
                      "malformed authorization header: expected 'Bearer <token>'");
    } else if (!found) {
        rc = fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "unknown token");
    } else {
        fxau__token *t = &a->tokens[idx];
        if (t->revoked_ms)
            rc = fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "token '%s' of team '%s' was revoked",
                          t->name, t->team);
        else if (t->expires_ms && now >= t->expires_ms)
            rc = fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "token '%s' of team '%s' has expired",
                          t->name, t->team);
        else if (t->role == FXP_ROLE_NONE)
            rc = fxu_fail(err, errlen, FXS_UNAUTHENTICATED,
                          "token '%s' of team '%s' has no valid role", t->name, t->team);
        if (!rc) {
            token_principal(t, out);
            atomic_store(&t->last_used_ms, now);
            int64_t stored = atomic_load(&t->stored_ms);
            if (now - stored >= FXAU_TOUCH_EVERY_MS &&
                atomic_compare_exchange_strong(&t->stored_ms, &stored, now))
                touch_id = t->id;
        }
    }
    pthread_rwlock_unlock(&a->lock);
    if (touch_id) {
        char terr[FXS_ERRLEN];
        if (fxdb_token_touch(a->st, touch_id, now, terr, sizeof terr))
            fxl_log(FXL_WARN, "auth", "could not store a token's last use id=%lld error=\"%s\"",
                    (long long)touch_id, terr);
    }
    return rc;
}

static int cert_auth(fxau_auth *a, const char *subject, const char *cn, fxp_principal *out,
                     char *err, size_t errlen)
{
    int rc = 0;
    pthread_rwlock_rdlock(&a->lock);
    const fxau__cert *hit = NULL;
    for (int i = 0; subject && !hit && i < a->ncerts; i++)
        if (strcmp(a->certs[i].subject, subject) == 0)
            hit = &a->certs[i];
    for (int i = 0; cn && *cn && !hit && i < a->ncerts; i++)
        if (strcmp(a->certs[i].subject, cn) == 0)
            hit = &a->certs[i];
    if (!hit) {
        rc = fxu_fail(err, errlen, FXS_UNAUTHENTICATED,
                      "client certificate '%.200s' is not mapped to a team (an admin maps it "
                      "with `fluxion cert add`), and no token was sent",
                      subject && *subject ? subject : cn ? cn : "");
    } else if (hit->role == FXP_ROLE_NONE) {
        rc = fxu_fail(err, errlen, FXS_UNAUTHENTICATED,
                      "certificate principal '%.200s' has no valid role", hit->subject);
    } else {
        memset(out, 0, sizeof *out);
        copy_str(out->team, sizeof out->team, hit->team);
        out->role = hit->role;
        snprintf(out->who, sizeof out->who, "cert:%.*s", (int)(sizeof out->who - 6),
                 subject && *subject ? subject : hit->subject);
    }
    pthread_rwlock_unlock(&a->lock);
    return rc;
}

int fxau_set_peer_secret(fxau_auth *a, const char *secret, char *err, size_t errlen)
{
    size_t n = secret ? strlen(secret) : 0;
    if (n < FXAU_BOOTSTRAP_MIN || n > FXAU_BOOTSTRAP_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "peer secret: %zu characters; it must be %d..%d", n, FXAU_BOOTSTRAP_MIN,
                        FXAU_BOOTSTRAP_MAX);
    for (size_t i = 0; i < n; i++)
        if (secret[i] < 0x21 || secret[i] > 0x7e)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "peer secret: character %zu is not visible ASCII", i + 1);
    fxau__sha256(secret, n, a->peer_hash);
    a->peer_set = true;
    return 0;
}

bool fxau_peer_enabled(const fxau_auth *a)
{
    return a && a->peer_set;
}

/* True when authorization is "Bearer <the peer secret>". Constant time in
 * the secret: the presented token is hashed and the hashes compared with
 * CRYPTO_memcmp. */
static bool peer_match(const fxau_auth *a, const char *authorization)
{
    const char *tok;
    size_t len = strnlen(authorization, FXAU_HEADER_MAX + 1), toklen;
    bool wellformed = parse_bearer(authorization, len, &tok, &toklen);
    unsigned char h[32];
    fxau__sha256(tok, toklen, h);
    bool eq = CRYPTO_memcmp(h, a->peer_hash, 32) == 0;
    OPENSSL_cleanse(h, sizeof h);
    return wellformed && eq;
}

int fxau_authenticate(fxau_auth *a, const char *authorization, const char *cert_subject,
                      const char *cert_cn, fxp_principal *out, char *err, size_t errlen)
{
    if (!a || !out)
        return fxu_fail(err, errlen, FXS_INTERNAL, "auth: not set up");
    if (a->peer_set && authorization && *authorization && peer_match(a, authorization)) {
        memset(out, 0, sizeof *out);
        snprintf(out->team, sizeof out->team, "%s", FXP_DEFAULT_TEAM);
        out->role = FXP_PEER;
        snprintf(out->who, sizeof out->who, "peer");
        return 0;
    }
    if (!fxau_enabled(a)) {
        fxp_local_principal(out);
        return 0;
    }
    if (authorization && *authorization)
        return token_auth(a, authorization, out, err, errlen);
    if ((cert_subject && *cert_subject) || (cert_cn && *cert_cn))
        return cert_auth(a, cert_subject, cert_cn, out, err, errlen);
    return fxu_fail(err, errlen, FXS_UNAUTHENTICATED,
                    "no credentials: send the metadata 'authorization: Bearer <token>'%s",
                    a->mtls ? " or a client certificate" : "");
}
