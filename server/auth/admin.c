/*
 * admin.c - the administration of authentication: tokens (create, list,
 * revoke), certificate principals, a team's deletion, and the operator's
 * bootstrap admin token. Every change goes to the store, then the cache is
 * reloaded (auth.c) before the function returns, all under admin_mu.
 */
#define _GNU_SOURCE
#include "auth/auth_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "base/status.h"
#include "base/util.h"

#define TTL_MAX_SECONDS ((int64_t)100 * 365 * 24 * 3600)

void fxau_token_rec_clear(fxdb_token_rec *t)
{
    if (!t)
        return;
    free(t->team);
    free(t->name);
    free(t->role);
    free(t->created_by);
    memset(t, 0, sizeof *t);
}

void fxau_cert_rec_clear(fxdb_cert_rec *c)
{
    if (!c)
        return;
    free(c->subject);
    free(c->team);
    free(c->role);
    memset(c, 0, sizeof *c);
}

bool fxau_token_name_ok(const char *name, char *err, size_t errlen)
{
    if (!name || !*name) {
        fxu_seterr(err, errlen, "token name is empty");
        return false;
    }
    size_t n = strlen(name);
    if (n > FXAU_TOKEN_NAME_MAX) {
        fxu_seterr(err, errlen, "token name is %zu characters long (at most %d)", n,
                   FXAU_TOKEN_NAME_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (i == 0 && !alnum) {
            fxu_seterr(err, errlen, "token name '%s' must start with a letter or digit", name);
            return false;
        }
        if (!alnum && c != '.' && c != '_' && c != '-') {
            fxu_seterr(err, errlen, "token name '%.64s' has a character other than letters, "
                       "digits, '.', '_' and '-' at position %zu", name, i + 1);
            return false;
        }
    }
    return true;
}

static int check_team_role(const char *team, fxp_role role, char *err, size_t errlen)
{
    char why[256];
    if (!team || !fxp_team_name_ok(team, why, sizeof why))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s", team ? why : "team is empty");
    if (role != FXP_VIEWER && role != FXP_MEMBER && role != FXP_ADMIN)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "role must be viewer, member or admin (got %d)", (int)role);
    return 0;
}

/* Copies a record for the caller, hash zeroed. */
static int copy_token(const fxdb_token_rec *r, fxdb_token_rec *out, char *err, size_t errlen)
{
    *out = *r;
    memset(out->hash, 0, sizeof out->hash);
    out->team = strdup(r->team ? r->team : "");
    out->name = strdup(r->name ? r->name : "");
    out->role = strdup(r->role ? r->role : "");
    out->created_by = strdup(r->created_by ? r->created_by : "");
    if (!out->team || !out->name || !out->role || !out->created_by) {
        fxau_token_rec_clear(out);
        return fxu_oom(err, errlen);
    }
    return 0;
}

/* The store's row of a token, by id (0: by team and name, active only),
 * into out (the caller's; hash zeroed). */
static int find_token(fxau_auth *a, int64_t id, const char *team, const char *name,
                      fxdb_token_rec *out, char *err, size_t errlen)
{
    fxdb_token_rec *recs = NULL;
    int n = 0;
    int rc = fxdb_token_list(a->st, &recs, &n, err, errlen);
    if (rc)
        return rc;
    int hit = -1;
    for (int i = 0; i < n && hit < 0; i++) {
        if (id > 0 ? recs[i].id == id && (!team || !*team || strcmp(recs[i].team, team) == 0)
                   : !recs[i].revoked_ms && strcmp(recs[i].team, team) == 0 &&
                         strcmp(recs[i].name, name) == 0)
            hit = i;
    }
    if (hit >= 0)
        rc = copy_token(&recs[hit], out, err, errlen);
    else if (id > 0)
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "token %lld not found", (long long)id);
    else
        rc = fxu_fail(err, errlen, FXS_NOT_FOUND, "token '%s' of team '%s' not found", name, team);
    fxdb_token_recs_free(recs, n);
    return rc;
}

/* Inserts a token and reloads the cache; caller holds admin_mu. */
static int register_locked(fxau_auth *a, fxdb_token_rec *r, char *err, size_t errlen)
{
    int rc = fxdb_token_insert(a->st, r, &r->id, err, errlen);
    if (rc)
        return rc;
    atomic_store(&a->on, true);
    return fxau__reload(a, err, errlen);
}

/* "fxn_" + 64 lowercase hex digits of 32 bytes from getrandom(), NUL-terminated. */
static int new_secret(char secret[69], char *err, size_t errlen)
{
    unsigned char raw[32];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return fxu_fail(err, errlen, FXS_INTERNAL, "getrandom: %s", strerror(errno));
        got += (size_t)r;
    }
    static const char hex[] = "0123456789abcdef";
    memcpy(secret, "fxn_", 4);
    for (size_t i = 0; i < sizeof raw; i++) {
        secret[4 + 2 * i] = hex[raw[i] >> 4];
        secret[5 + 2 * i] = hex[raw[i] & 15];
    }
    secret[FXAU_SECRET_LEN] = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

/* ---------------------------------------------------------------- tokens */

int fxau_token_create(fxau_auth *a, const fxp_principal *by, const char *team, const char *name,
                      fxp_role role, int64_t ttl_seconds, char secret[69], fxdb_token_rec *out,
                      char *err, size_t errlen)
{
    if (!a || !secret)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "auth: no secret buffer");
    int rc = check_team_role(team, role, err, errlen);
    if (rc)
        return rc;
    char why[256];
    if (!fxau_token_name_ok(name, why, sizeof why))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s", why);
    if (ttl_seconds < 0 || ttl_seconds > TTL_MAX_SECONDS)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "ttl %lld seconds is out of range (0: no expiry, at most %lld)",
                        (long long)ttl_seconds, (long long)TTL_MAX_SECONDS);

    rc = new_secret(secret, err, errlen);
    if (rc)
        return rc;

    int64_t now = fxu_now_ms();
    fxdb_token_rec r = { .team = (char *)team, .name = (char *)name,
                         .role = (char *)fxp_role_name(role), .created_ms = now,
                         .expires_ms = ttl_seconds ? now + ttl_seconds * 1000 : 0,
                         .created_by = (char *)(by ? by->who : "local") };
    fxau__sha256(secret, FXAU_SECRET_LEN, r.hash);
    pthread_mutex_lock(&a->admin_mu);
    rc = register_locked(a, &r, err, errlen);
    pthread_mutex_unlock(&a->admin_mu);
    if (!rc && out)
        rc = copy_token(&r, out, err, errlen);
    if (rc)
        OPENSSL_cleanse(secret, 69);
    return rc;
}

int fxau_token_list(fxau_auth *a, const char *team, bool include_revoked, fxdb_token_rec **out,
                    int *n, char *err, size_t errlen)
{
    if (!a || !out || !n)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "auth: no output");
    fxdb_token_rec *recs = NULL;
    int nr = 0;
    int rc = fxdb_token_list(a->st, &recs, &nr, err, errlen);
    if (rc)
        return rc;
    int kept = 0;
    pthread_rwlock_rdlock(&a->lock);
    for (int i = 0; i < nr; i++) {
        bool keep = (include_revoked || !recs[i].revoked_ms) &&
                    (!team || !*team || strcmp(recs[i].team, team) == 0);
        if (!keep) {
            fxau_token_rec_clear(&recs[i]);
            continue;
        }
        for (int j = 0; j < a->ntokens; j++) {
            if (a->tokens[j].id == recs[i].id) {
                int64_t used = atomic_load(&a->tokens[j].last_used_ms);
                if (used > recs[i].last_used_ms)
                    recs[i].last_used_ms = used;
                break;
            }
        }
        memset(recs[i].hash, 0, sizeof recs[i].hash);
        recs[kept++] = recs[i];
    }
    pthread_rwlock_unlock(&a->lock);
    *out = recs;
    *n = kept;
    return 0;
}

int fxau_token_revoke(fxau_auth *a, int64_t id, const char *team, const char *name,
                      fxdb_token_rec *out, char *err, size_t errlen)
{
    if (!a)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "auth: not set up");
    if (id <= 0 && (!team || !*team || !name || !*name))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "revoke needs a token id, or a team and a token name");
    pthread_mutex_lock(&a->admin_mu);
    fxdb_token_rec r;
    int rc = find_token(a, id, team, name, &r, err, errlen);
    if (!rc) {
        if (!r.revoked_ms)
            rc = fxdb_token_revoke(a->st, r.id, fxu_now_ms(), err, errlen);
        if (!rc)
            rc = fxau__reload(a, err, errlen);
        int64_t rid = r.id;
        fxau_token_rec_clear(&r);
        if (!rc && out)
            rc = find_token(a, rid, NULL, NULL, out, err, errlen);
    }
    pthread_mutex_unlock(&a->admin_mu);
    return rc;
}

/* ---------------------------------------------------------------- certs */

static bool subject_ok(const char *s, char *err, size_t errlen)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > FXAU_SUBJECT_MAX) {
        fxu_seterr(err, errlen, "certificate subject must be 1 to %d characters (got %zu)",
                   FXAU_SUBJECT_MAX, n);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e) {
            fxu_seterr(err, errlen, "certificate subject has a control or non-ASCII byte at "
                       "position %zu", i + 1);
            return false;
        }
    }
    if (s[0] == ' ' || s[n - 1] == ' ') {
        fxu_seterr(err, errlen, "certificate subject '%.200s' starts or ends with a space", s);
        return false;
    }
    return true;
}

int fxau_cert_add(fxau_auth *a, const char *subject, const char *team, fxp_role role,
                  fxdb_cert_rec *out, char *err, size_t errlen)
{
    if (!a)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "auth: not set up");
    char why[256];
    if (!subject_ok(subject, why, sizeof why))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s", why);
    int rc = check_team_role(team, role, err, errlen);
    if (rc)
        return rc;
    fxdb_cert_rec c = { .subject = (char *)subject, .team = (char *)team,
                        .role = (char *)fxp_role_name(role), .created_ms = fxu_now_ms() };
    pthread_mutex_lock(&a->admin_mu);
    rc = fxdb_cert_insert(a->st, &c, err, errlen);
    if (!rc) {
        atomic_store(&a->on, true);
        rc = fxau__reload(a, err, errlen);
    }
    pthread_mutex_unlock(&a->admin_mu);
    if (!rc && out) {
        *out = c;
        out->subject = strdup(subject);
        out->team = strdup(team);
        out->role = strdup(c.role);
        if (!out->subject || !out->team || !out->role) {
            fxau_cert_rec_clear(out);
            rc = fxu_oom(err, errlen);
        }
    }
    return rc;
}

int fxau_cert_list(fxau_auth *a, fxdb_cert_rec **out, int *n, char *err, size_t errlen)
{
    if (!a || !out || !n)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "auth: no output");
    return fxdb_cert_list(a->st, out, n, err, errlen);
}

/* Runs a store change that removes principals, then reloads the cache. */
static int remove_and_reload(fxau_auth *a, int (*fn)(fxdb_store *, const char *, char *, size_t),
                             const char *arg, char *err, size_t errlen)
{
    pthread_mutex_lock(&a->admin_mu);
    int rc = fn(a->st, arg, err, errlen);
    if (!rc)
        rc = fxau__reload(a, err, errlen);
    pthread_mutex_unlock(&a->admin_mu);
    return rc;
}

int fxau_cert_remove(fxau_auth *a, const char *subject, char *err, size_t errlen)
{
    if (!a || !subject || !*subject)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "certificate subject is empty");
    return remove_and_reload(a, fxdb_cert_delete, subject, err, errlen);
}

int fxau_team_delete(fxau_auth *a, const char *team, char *err, size_t errlen)
{
    if (!a || !team || !*team)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "team is empty");
    return remove_and_reload(a, fxdb_team_delete, team, err, errlen);
}

/* ------------------------------------------------------------ bootstrap */

/* Trims white space at both ends into [*s, *s + *n) and checks the length
 * and the characters; what names the source in messages. */
static int bootstrap_check(const char **s, size_t *n, const char *what, char *err, size_t errlen)
{
    const char *p = *s;
    size_t len = *n;
    while (len && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++, len--;
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\n' ||
                   p[len - 1] == '\r'))
        len--;
    if (len < FXAU_BOOTSTRAP_MIN || len > FXAU_BOOTSTRAP_MAX)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: the admin token must be %d to %d visible ASCII characters "
                        "(it has %zu)", what, FXAU_BOOTSTRAP_MIN, FXAU_BOOTSTRAP_MAX, len);
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x21 || p[i] > 0x7e)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: the admin token has a character that is not visible ASCII "
                            "at position %zu", what, i + 1);
    *s = p;
    *n = len;
    return 0;
}

/* Registers a checked bootstrap secret (see auth.h). */
static int bootstrap_register(fxau_auth *a, const char *secret, size_t len, const char *what,
                              char *err, size_t errlen)
{
    unsigned char h[32];
    fxau__sha256(secret, len, h);
    pthread_mutex_lock(&a->admin_mu);
    int rc = 0;
    bool known = false, revoked = false;
    char name[FXAU_TOKEN_NAME_MAX + 1];
    pthread_rwlock_rdlock(&a->lock);
    for (int i = 0; i < a->ntokens; i++) {
        if (CRYPTO_memcmp(h, a->hashes[i], 32) == 0) {
            known = true;
            revoked = a->tokens[i].revoked_ms != 0;
            snprintf(name, sizeof name, "%s", a->tokens[i].name);
        }
    }
    pthread_rwlock_unlock(&a->lock);
    if (known) {
        if (revoked)
            fxl_log(FXL_WARN, "auth", "the bootstrap admin token was revoked: it stays revoked "
                    "source=\"%s\" token=%s", what, name);
        else
            fxl_log(FXL_INFO, "auth", "bootstrap admin token already registered source=\"%s\" "
                    "token=%s", what, name);
    }
    for (int k = 1; !known && k <= 100; k++) {
        if (k == 1)
            snprintf(name, sizeof name, "%s", FXAU_BOOTSTRAP_NAME);
        else
            snprintf(name, sizeof name, "%s-%d", FXAU_BOOTSTRAP_NAME, k);
        fxdb_token_rec r = { .team = FXP_DEFAULT_TEAM, .name = name,
                             .role = (char *)fxp_role_name(FXP_ADMIN),
                             .created_ms = fxu_now_ms(), .created_by = "bootstrap" };
        memcpy(r.hash, h, 32);
        rc = register_locked(a, &r, err, errlen);
        if (rc != FXS_ALREADY_EXISTS) {
            if (!rc)
                fxl_log(FXL_INFO, "auth", "bootstrap admin token registered source=\"%s\" "
                        "token=%s team=%s", what, name, FXP_DEFAULT_TEAM);
            break;
        }
    }
    pthread_mutex_unlock(&a->admin_mu);
    OPENSSL_cleanse(h, sizeof h);
    return rc;
}

int fxau_bootstrap_secret(fxau_auth *a, const char *secret, char *err, size_t errlen)
{
    if (!a || !secret)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "auth: no bootstrap secret");
    const char *p = secret;
    size_t n = strnlen(secret, FXAU_BOOTSTRAP_MAX * 4);
    int rc = bootstrap_check(&p, &n, "FLUXIOND_ADMIN_TOKEN", err, errlen);
    return rc ? rc : bootstrap_register(a, p, n, "FLUXIOND_ADMIN_TOKEN", err, errlen);
}

/* A new secret into path (0600, atomic). */
static int bootstrap_write(const char *path, char secret[69], char *err, size_t errlen)
{
    int rc = new_secret(secret, err, errlen);
    if (rc)
        return rc;
    secret[FXAU_SECRET_LEN] = '\n';
    fxu_atomic f;
    rc = fxu_atomic_open(&f, path, err, errlen);
    if (rc)
        return rc;
    if (fxu_write_all(f.fd, secret, FXAU_SECRET_LEN + 1) != 0) {
        int e = errno;
        fxu_atomic_abort(&f);
        return fxu_fail(err, errlen, fxu_errno_status(e), "%s: write: %s", path, strerror(e));
    }
    secret[FXAU_SECRET_LEN] = '\0';
    return fxu_atomic_commit(&f, err, errlen);
}

int fxau_bootstrap_file(fxau_auth *a, const char *path, bool *created, char *err,
                        size_t errlen)
{
    if (created)
        *created = false;
    if (!a || !path || !*path)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "--init-admin-token: no file");
    struct stat sb;
    if (stat(path, &sb) != 0 && errno == ENOENT) {
        char secret[69];
        int rc = bootstrap_write(path, secret, err, errlen);
        if (!rc)
            rc = bootstrap_register(a, secret, FXAU_SECRET_LEN, path, err, errlen);
        OPENSSL_cleanse(secret, sizeof secret);
        if (!rc && created)
            *created = true;
        return rc;
    }
    void *buf = NULL;
    size_t len = 0;
    int rc = fxu_read_file(path, &buf, &len, err, errlen);
    if (rc)
        return rc;
    if (stat(path, &sb) == 0 && (sb.st_mode & 077))
        fxl_log(FXL_WARN, "auth", "the admin token file is readable by others: chmod 600 it "
                "path=\"%s\" mode=%03o", path, (unsigned)(sb.st_mode & 0777));
    const char *p = buf;
    size_t n = len;
    rc = bootstrap_check(&p, &n, path, err, errlen);
    if (!rc)
        rc = bootstrap_register(a, p, n, path, err, errlen);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return rc;
}
