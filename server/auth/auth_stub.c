/*
 * auth_stub.c - TEMPORARY STUB (helper H3, branch h/rpc): a stand-in for
 * H2's auth module and H1's default quota, so that fluxiond links and runs
 * before they are merged. THE LEAD DROPS THIS FILE AT THE MERGE.
 *
 * It keeps the bootstrap secrets in memory (not in the store): a token given
 * by --init-admin-token FILE, FLUXIOND_ADMIN_TOKEN, or written to a new FILE,
 * authenticates as admin of team default; auth is on once one was given, or
 * with mTLS. Not constant time, not persistent: a stub.
 */
#define _GNU_SOURCE
#include "auth/auth.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "base/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>

#define MAX_SECRETS 8

struct fxau_auth {
    bool mtls;
    int n;
    char secrets[MAX_SECRETS][257];
};

void fxdb_store_set_default_quota(fxdb_store *st, const fxdb_quota *q)
{
    (void)st, (void)q;
}

int fxau_open(fxdb_store *st, bool mtls, fxau_auth **out, char *err, size_t errlen)
{
    (void)st;
    *out = calloc(1, sizeof **out);
    if (!*out)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "out of memory");
    (*out)->mtls = mtls;
    return 0;
}

void fxau_close(fxau_auth *a)
{
    free(a);
}

bool fxau_enabled(const fxau_auth *a)
{
    return a->mtls || a->n > 0;
}

int fxau_authenticate(fxau_auth *a, const char *authorization, const char *cert_subject,
                      const char *cert_cn, fxp_principal *out, char *err, size_t errlen)
{
    (void)cert_cn;
    memset(out, 0, sizeof *out);
    if (!fxau_enabled(a)) {
        fxp_local_principal(out);
        return 0;
    }
    if (!authorization)
        return fxu_fail(err, errlen, FXS_UNAUTHENTICATED,
                        cert_subject ? "certificate %s is not mapped" : "no credentials",
                        cert_subject);
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return fxu_fail(err, errlen, FXS_UNAUTHENTICATED,
                        "malformed authorization header (want 'Bearer <token>')");
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->secrets[i], authorization + 7) == 0) {
            out->role = FXP_ADMIN;
            snprintf(out->team, sizeof out->team, "%s", FXP_DEFAULT_TEAM);
            snprintf(out->who, sizeof out->who, "token:bootstrap");
            return 0;
        }
    return fxu_fail(err, errlen, FXS_UNAUTHENTICATED, "unknown token");
}

int fxau_bootstrap_secret(fxau_auth *a, const char *secret, char *err, size_t errlen)
{
    size_t len = strlen(secret);
    while (len && isspace((unsigned char)secret[len - 1]))
        len--;
    while (len && isspace((unsigned char)*secret))
        secret++, len--;
    if (len < 32 || len > 256)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "a bootstrap secret is 32..256 visible ASCII characters, not %zu", len);
    for (int i = 0; i < a->n; i++)
        if (strlen(a->secrets[i]) == len && memcmp(a->secrets[i], secret, len) == 0)
            return 0;
    if (a->n == MAX_SECRETS)
        return fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "stub: too many secrets");
    memcpy(a->secrets[a->n], secret, len);
    a->secrets[a->n++][len] = '\0';
    return 0;
}

int fxau_bootstrap_file(fxau_auth *a, const char *path, bool *created, char *err,
                        size_t errlen)
{
    void *buf;
    size_t len;
    *created = false;
    int rc = fxu_read_file(path, &buf, &len, err, errlen);
    if (rc == 0) {
        char *s = strndup(buf, len);
        free(buf);
        rc = s ? fxau_bootstrap_secret(a, s, err, errlen) : FXS_RESOURCE_EXHAUSTED;
        free(s);
        return rc;
    }
    if (rc != FXS_NOT_FOUND)
        return rc;
    unsigned char rnd[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return fxu_fail(err, errlen, FXS_INTERNAL, "getrandom failed");
    char secret[70] = "fxn_";
    for (int i = 0; i < 32; i++)
        snprintf(secret + 4 + 2 * i, 3, "%02x", rnd[i]);
    char line[72];
    snprintf(line, sizeof line, "%s\n", secret);
    mode_t old = umask(077);
    rc = fxu_write_file_atomic(path, line, strlen(line), err, errlen);
    umask(old);
    if (rc)
        return rc;
    *created = true;
    return fxau_bootstrap_secret(a, secret, err, errlen);
}
