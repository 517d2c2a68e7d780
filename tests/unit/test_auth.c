/*
 * test_auth.c - auth/: tokens (format, create, authenticate, revoke,
 * expire, malformed and unknown headers, roles), certificate principals,
 * the bootstrap admin token (file and env), local mode, persistence across
 * a restart, a team's deletion, threads, and the constant-time compare
 * (every cached hash visited on every call; failing and passing calls cost
 * the same). A real store in a temporary directory.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "auth/auth.h"
#include "auth/auth_internal.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "base/util.h"
#include "store/store.h"
#include "testutil.h"

typedef struct {
    char dir[64];
    char data[128];
    fxdb_store *st;
    fxau_auth *a;
    char err[FXS_ERRLEN];
} fixture;

static void open_all(fixture *f, bool mtls)
{
    if (fxdb_store_open(f->data, &f->st, f->err, sizeof f->err) != 0)
        fail_msg("store open: %s", f->err);
    if (fxau_open(f->st, mtls, &f->a, f->err, sizeof f->err) != 0)
        fail_msg("auth open: %s", f->err);
}

static void close_all(fixture *f)
{
    fxau_close(f->a);
    fxdb_store_close(f->st);
    f->a = NULL;
    f->st = NULL;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/fxs-auth-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    open_all(f, false);
    if (fxdb_team_create(f->st, "a", "Team A", NULL, f->err, sizeof f->err) != 0)
        fail_msg("team a: %s", f->err);
    if (fxdb_team_create(f->st, "b", "Team B", NULL, f->err, sizeof f->err) != 0)
        fail_msg("team b: %s", f->err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close_all(f);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* A new token; returns its id, the secret in secret. */
static int64_t mint(fixture *f, const char *team, const char *name, fxp_role role, int64_t ttl,
                    char secret[69])
{
    fxdb_token_rec r;
    fxp_principal by;
    fxp_local_principal(&by);
    int rc = fxau_token_create(f->a, &by, team, name, role, ttl, secret, &r, f->err,
                               sizeof f->err);
    if (rc)
        fail_msg("token create %s/%s: %d %s", team, name, rc, f->err);
    int64_t id = r.id;
    assert_true(id > 0);
    assert_string_equal(r.team, team);
    assert_string_equal(r.name, name);
    assert_string_equal(r.role, fxp_role_name(role));
    assert_string_equal(r.created_by, "local");
    fxau_token_rec_clear(&r);
    return id;
}

static char *bearer(const char *secret)
{
    return tu_pathf("Bearer %s", secret);
}

/* Authenticates with a header; returns the status, the principal in p. */
static int auth_hdr(fixture *f, const char *hdr, fxp_principal *p)
{
    memset(p, 0, sizeof *p);
    f->err[0] = '\0';
    return fxau_authenticate(f->a, hdr, NULL, NULL, p, f->err, sizeof f->err);
}

static void expect_unauth(fixture *f, const char *hdr, const char *words)
{
    fxp_principal p;
    int rc = auth_hdr(f, hdr, &p);
    if (rc != FXS_UNAUTHENTICATED)
        fail_msg("header '%.40s': %d %s (wanted UNAUTHENTICATED)", hdr ? hdr : "(null)", rc,
                 f->err);
    if (!strstr(f->err, words))
        fail_msg("message '%s' does not say '%s'", f->err, words);
}

/* ------------------------------------------------------------- tokens */

static void test_local_mode(void **state)
{
    fixture *f = *state;
    assert_false(fxau_enabled(f->a));
    fxp_principal p;
    /* whatever is presented: the local principal */
    const char *hdrs[] = { NULL, "", "Bearer nonsense", "garbage" };
    for (size_t i = 0; i < sizeof hdrs / sizeof *hdrs; i++) {
        assert_int_equal(auth_hdr(f, hdrs[i], &p), 0);
        assert_true(p.local);
        assert_int_equal(p.role, FXP_ADMIN);
        assert_string_equal(p.team, FXP_DEFAULT_TEAM);
        assert_string_equal(p.who, "local");
    }
    /* still local after a restart with nothing created */
    close_all(f);
    open_all(f, false);
    assert_false(fxau_enabled(f->a));
}

static void test_mtls_turns_auth_on(void **state)
{
    fixture *f = *state;
    fxau_close(f->a);
    assert_int_equal(fxau_open(f->st, true, &f->a, f->err, sizeof f->err), 0);
    assert_true(fxau_enabled(f->a));
    expect_unauth(f, NULL, "no credentials");
    fxp_principal p;
    assert_int_equal(fxau_authenticate(f->a, NULL, "CN=nobody", "nobody", &p, f->err,
                                       sizeof f->err), FXS_UNAUTHENTICATED);
    assert_non_null(strstr(f->err, "not mapped"));
}

static void test_create_and_authenticate(void **state)
{
    fixture *f = *state;
    char secret[69];
    int64_t id = mint(f, "a", "ci", FXP_MEMBER, 0, secret);
    /* the format: fxn_ + 64 lowercase hex */
    assert_int_equal(strlen(secret), FXAU_SECRET_LEN);
    assert_memory_equal(secret, "fxn_", 4);
    for (int i = 4; i < FXAU_SECRET_LEN; i++)
        assert_non_null(strchr("0123456789abcdef", secret[i]));
    /* the first token turns auth on, for good */
    assert_true(fxau_enabled(f->a));
    char *v = NULL;
    assert_int_equal(fxdb_setting_get(f->st, "auth", &v, f->err, sizeof f->err), 0);
    assert_string_equal(v, "on");
    free(v);
    /* only the SHA-256 of the secret is stored */
    fxdb_token_rec *recs;
    int n;
    assert_int_equal(fxdb_token_list(f->st, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 1);
    unsigned char h[32];
    fxau__sha256(secret, strlen(secret), h);
    assert_memory_equal(recs[0].hash, h, 32);
    char hex[65];
    fxu_sha256_hex(secret, strlen(secret), hex);
    assert_string_not_equal(hex, secret + 4);
    fxdb_token_recs_free(recs, n);

    fxp_principal p;
    const char *forms[] = { "Bearer %s", "bearer %s", "BEARER   %s" };
    for (size_t i = 0; i < 3; i++) {
        char *hdr = tu_pathf(forms[i], secret);
        if (auth_hdr(f, hdr, &p))
            fail_msg("%s: %s", forms[i], f->err);
        assert_string_equal(p.team, "a");
        assert_int_equal(p.role, FXP_MEMBER);
        assert_string_equal(p.who, "token:ci");
        assert_int_equal(p.token_id, id);
        assert_int_equal(p.expires_ms, 0);
        assert_false(p.local);
    }
    /* listed, with its last use; the hash is not handed out */
    assert_int_equal(fxau_token_list(f->a, "a", false, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 1);
    assert_true(recs[0].last_used_ms > 0);
    unsigned char zero[32] = { 0 };
    assert_memory_equal(recs[0].hash, zero, 32);
    fxdb_token_recs_free(recs, n);
    assert_int_equal(fxau_token_list(f->a, "b", false, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 0);
    fxdb_token_recs_free(recs, n);
}

static void test_bad_token_arguments(void **state)
{
    fixture *f = *state;
    char secret[69];
    fxdb_token_rec r;
    struct {
        const char *team, *name;
        fxp_role role;
        int64_t ttl;
        int code;
        const char *words;
    } cases[] = {
        { "nope", "x", FXP_MEMBER, 0, FXS_NOT_FOUND, "team 'nope' not found" },
        { "Bad/Team", "x", FXP_MEMBER, 0, FXS_INVALID_ARGUMENT, "team" },
        { "a", "", FXP_MEMBER, 0, FXS_INVALID_ARGUMENT, "token name is empty" },
        { "a", "-x", FXP_MEMBER, 0, FXS_INVALID_ARGUMENT, "must start with a letter" },
        { "a", "a b", FXP_MEMBER, 0, FXS_INVALID_ARGUMENT, "position 2" },
        { "a", "x", FXP_ROLE_NONE, 0, FXS_INVALID_ARGUMENT, "role must be" },
        { "a", "x", (fxp_role)9, 0, FXS_INVALID_ARGUMENT, "role must be" },
        { "a", "x", FXP_VIEWER, -1, FXS_INVALID_ARGUMENT, "ttl -1 seconds" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = fxau_token_create(f->a, NULL, cases[i].team, cases[i].name, cases[i].role,
                                   cases[i].ttl, secret, &r, f->err, sizeof f->err);
        if (rc != cases[i].code || !strstr(f->err, cases[i].words))
            fail_msg("case %zu: %d '%s'", i, rc, f->err);
    }
    /* nothing was created, auth is still off */
    assert_false(fxau_enabled(f->a));
    /* a name is unique among a team's active tokens, and free again once revoked */
    int64_t id = mint(f, "a", "ci", FXP_VIEWER, 0, secret);
    assert_int_equal(fxau_token_create(f->a, NULL, "a", "ci", FXP_VIEWER, 0, secret, NULL,
                                       f->err, sizeof f->err), FXS_ALREADY_EXISTS);
    mint(f, "b", "ci", FXP_VIEWER, 0, secret); /* another team's "ci" */
    assert_int_equal(fxau_token_revoke(f->a, id, NULL, NULL, NULL, f->err, sizeof f->err), 0);
    mint(f, "a", "ci", FXP_VIEWER, 0, secret);
}

static void test_roles(void **state)
{
    fixture *f = *state;
    fxp_role roles[] = { FXP_VIEWER, FXP_MEMBER, FXP_ADMIN };
    const char *names[] = { "v", "m", "adm" };
    char secrets[3][69];
    for (int i = 0; i < 3; i++)
        mint(f, i == 2 ? "default" : "b", names[i], roles[i], 0, secrets[i]);
    for (int i = 0; i < 3; i++) {
        fxp_principal p;
        assert_int_equal(auth_hdr(f, bearer(secrets[i]), &p), 0);
        assert_int_equal(p.role, roles[i]);
        assert_string_equal(p.team, i == 2 ? "default" : "b");
        assert_string_equal(p.who, tu_pathf("token:%s", names[i]));
    }
}

static void test_revoke(void **state)
{
    fixture *f = *state;
    char s1[69], s2[69];
    int64_t id1 = mint(f, "a", "one", FXP_MEMBER, 0, s1);
    mint(f, "a", "two", FXP_MEMBER, 0, s2);
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(s1), &p), 0);
    fxdb_token_rec r;
    assert_int_equal(fxau_token_revoke(f->a, id1, NULL, NULL, &r, f->err, sizeof f->err), 0);
    assert_true(r.revoked_ms > 0);
    int64_t when = r.revoked_ms;
    fxau_token_rec_clear(&r);
    /* the very next call fails, and says why */
    expect_unauth(f, bearer(s1), "token 'one' of team 'a' was revoked");
    assert_null(strstr(f->err, s1 + 4));
    /* revoking twice is fine and keeps the first time */
    assert_int_equal(fxau_token_revoke(f->a, id1, NULL, NULL, &r, f->err, sizeof f->err), 0);
    assert_int_equal(r.revoked_ms, when);
    fxau_token_rec_clear(&r);
    /* by team and name */
    assert_int_equal(auth_hdr(f, bearer(s2), &p), 0);
    assert_int_equal(fxau_token_revoke(f->a, 0, "a", "two", NULL, f->err, sizeof f->err), 0);
    expect_unauth(f, bearer(s2), "revoked");
    /* not found: an id, a name, the wrong team for an id */
    assert_int_equal(fxau_token_revoke(f->a, 999, NULL, NULL, NULL, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(f->err, "token 999 not found"));
    assert_int_equal(fxau_token_revoke(f->a, 0, "a", "two", NULL, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxau_token_revoke(f->a, id1, "b", NULL, NULL, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxau_token_revoke(f->a, 0, "a", NULL, NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    /* listing: revoked ones only on request */
    fxdb_token_rec *recs;
    int n;
    assert_int_equal(fxau_token_list(f->a, NULL, false, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 0);
    fxdb_token_recs_free(recs, n);
    assert_int_equal(fxau_token_list(f->a, "", true, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 2);
    assert_true(recs[0].id < recs[1].id);
    assert_true(recs[0].revoked_ms > 0 && recs[1].revoked_ms > 0);
    fxdb_token_recs_free(recs, n);
}

static void test_expire(void **state)
{
    fixture *f = *state;
    char s[69];
    mint(f, "a", "short", FXP_VIEWER, 1, s);
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(s), &p), 0);
    assert_true(p.expires_ms > fxu_now_ms());
    assert_true(p.expires_ms <= fxu_now_ms() + 1000);
    usleep(1100 * 1000);
    expect_unauth(f, bearer(s), "token 'short' of team 'a' has expired");
}

static void test_malformed_and_unknown(void **state)
{
    fixture *f = *state;
    char s[69];
    mint(f, "a", "ci", FXP_MEMBER, 0, s);
    char *huge = malloc(FXAU_HEADER_MAX + 100);
    assert_non_null(huge);
    memcpy(huge, "Bearer ", 7);
    memset(huge + 7, 'x', FXAU_HEADER_MAX + 100 - 8);
    huge[FXAU_HEADER_MAX + 99] = '\0';
    const char *malformed[] = { "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer  ",
                                "Bearerfxn_00", tu_pathf("Bearer %s extra", s),
                                tu_pathf("Bearer %s\n", s), tu_pathf("Token %s", s), s };
    for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) {
        uint64_t before = fxau__compare_count(f->a);
        expect_unauth(f, malformed[i], "malformed authorization header: expected 'Bearer <token>'");
        /* a malformed header is hashed and compared like any other */
        assert_int_equal(fxau__compare_count(f->a) - before, 1);
        assert_null(strstr(f->err, s + 4));
    }
    expect_unauth(f, huge, "longer than 4096 bytes");
    free(huge);
    /* unknown: same length as a real one, one digit off */
    char wrong[69];
    strcpy(wrong, s);
    wrong[10] = wrong[10] == '0' ? '1' : '0';
    expect_unauth(f, bearer(wrong), "unknown token");
    assert_null(strstr(f->err, wrong + 4));
    expect_unauth(f, "Bearer short", "unknown token");
    /* the real one still works */
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(s), &p), 0);
}

/* -------------------------------------------------------------- certs */

static int cert_auth(fixture *f, const char *subject, const char *cn, fxp_principal *p)
{
    memset(p, 0, sizeof *p);
    return fxau_authenticate(f->a, NULL, subject, cn, p, f->err, sizeof f->err);
}

static void test_certs(void **state)
{
    fixture *f = *state;
    fxdb_cert_rec c;
    assert_int_equal(fxau_cert_add(f->a, "CN=alice,O=a", "a", FXP_MEMBER, &c, f->err,
                                   sizeof f->err), 0);
    assert_string_equal(c.subject, "CN=alice,O=a");
    assert_string_equal(c.role, "member");
    fxau_cert_rec_clear(&c);
    /* a certificate principal turns auth on */
    assert_true(fxau_enabled(f->a));
    assert_int_equal(fxau_cert_add(f->a, "bob", "b", FXP_VIEWER, NULL, f->err, sizeof f->err), 0);
    /* duplicates, bad arguments */
    assert_int_equal(fxau_cert_add(f->a, "bob", "b", FXP_VIEWER, NULL, f->err, sizeof f->err),
                     FXS_ALREADY_EXISTS);
    assert_int_equal(fxau_cert_add(f->a, "", "b", FXP_VIEWER, NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxau_cert_add(f->a, "CN=x\n", "b", FXP_VIEWER, NULL, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxau_cert_add(f->a, "CN=x", "zz", FXP_VIEWER, NULL, f->err, sizeof f->err),
                     FXS_NOT_FOUND);
    assert_int_equal(fxau_cert_add(f->a, "CN=x", "b", FXP_ROLE_NONE, NULL, f->err,
                                   sizeof f->err), FXS_INVALID_ARGUMENT);

    fxp_principal p;
    /* the exact subject */
    assert_int_equal(cert_auth(f, "CN=alice,O=a", "alice", &p), 0);
    assert_string_equal(p.team, "a");
    assert_int_equal(p.role, FXP_MEMBER);
    assert_string_equal(p.who, "cert:CN=alice,O=a");
    assert_int_equal(p.token_id, 0);
    /* else the CN */
    assert_int_equal(cert_auth(f, "CN=bob,O=anything", "bob", &p), 0);
    assert_string_equal(p.team, "b");
    assert_int_equal(p.role, FXP_VIEWER);
    assert_string_equal(p.who, "cert:CN=bob,O=anything");
    /* a subject that is only a prefix or another's CN does not match */
    assert_int_equal(cert_auth(f, "CN=alice", "alice", &p), FXS_UNAUTHENTICATED);
    assert_non_null(strstr(f->err, "'CN=alice' is not mapped"));
    /* a token wins over a certificate: a bad token is not rescued */
    assert_int_equal(fxau_authenticate(f->a, "Bearer fxn_nope_nope_nope", "CN=alice,O=a",
                                       "alice", &p, f->err, sizeof f->err), FXS_UNAUTHENTICATED);
    assert_non_null(strstr(f->err, "unknown token"));
    char s[69];
    mint(f, "default", "ops", FXP_ADMIN, 0, s);
    assert_int_equal(fxau_authenticate(f->a, bearer(s), "CN=alice,O=a", "alice", &p, f->err,
                                       sizeof f->err), 0);
    assert_string_equal(p.who, "token:ops");
    /* list, remove: the next call fails */
    fxdb_cert_rec *cs;
    int n;
    assert_int_equal(fxau_cert_list(f->a, &cs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 2);
    fxdb_cert_recs_free(cs, n);
    assert_int_equal(fxau_cert_remove(f->a, "CN=alice,O=a", f->err, sizeof f->err), 0);
    assert_int_equal(cert_auth(f, "CN=alice,O=a", "alice", &p), FXS_UNAUTHENTICATED);
    assert_int_equal(fxau_cert_remove(f->a, "CN=alice,O=a", f->err, sizeof f->err),
                     FXS_NOT_FOUND);
}

/* ---------------------------------------------------------- bootstrap */

static char *slurp(const char *path)
{
    void *buf;
    size_t len;
    char err[256];
    if (fxu_read_file(path, &buf, &len, err, sizeof err))
        fail_msg("%s", err);
    ((char *)buf)[len] = '\0'; /* room for it is allocated, the NUL is not written */
    return buf;
}

static int count_tokens(fixture *f)
{
    fxdb_token_rec *recs;
    int n;
    assert_int_equal(fxau_token_list(f->a, NULL, true, &recs, &n, f->err, sizeof f->err), 0);
    fxdb_token_recs_free(recs, n);
    return n;
}

static void test_bootstrap_file_new(void **state)
{
    fixture *f = *state;
    char path[256];
    snprintf(path, sizeof path, "%s/admin.token", f->dir);
    bool created = false;
    assert_int_equal(fxau_bootstrap_file(f->a, path, &created, f->err, sizeof f->err), 0);
    assert_true(created);
    assert_true(fxau_enabled(f->a));
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char *content = slurp(path);
    assert_int_equal(strlen(content), FXAU_SECRET_LEN + 1);
    assert_int_equal(content[FXAU_SECRET_LEN], '\n');
    content[FXAU_SECRET_LEN] = '\0';
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(content), &p), 0);
    assert_int_equal(p.role, FXP_ADMIN);
    assert_string_equal(p.team, FXP_DEFAULT_TEAM);
    assert_string_equal(p.who, "token:bootstrap");
    /* no temporary file left beside it: only data/ and admin.token */
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        entries += e->d_name[0] != '.' || strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    assert_int_equal(entries, 2);
    /* twice (a restart with the same flag): the existing file, not duplicated */
    assert_int_equal(fxau_bootstrap_file(f->a, path, &created, f->err, sizeof f->err), 0);
    assert_false(created);
    assert_int_equal(count_tokens(f), 1);
    close_all(f);
    open_all(f, false);
    assert_int_equal(fxau_bootstrap_file(f->a, path, &created, f->err, sizeof f->err), 0);
    assert_int_equal(count_tokens(f), 1);
    assert_int_equal(auth_hdr(f, bearer(content), &p), 0);
    free(content);
    /* a file in a directory that does not exist */
    assert_int_not_equal(fxau_bootstrap_file(f->a, tu_pathf("%s/no/such/file", f->dir), &created,
                                             f->err, sizeof f->err), 0);
}

static void test_bootstrap_file_existing(void **state)
{
    fixture *f = *state;
    const char *secret = "operator-chosen-secret-0123456789-abcdef";
    char path[256];
    snprintf(path, sizeof path, "%s/given.token", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "  %s \n\n", secret);
    fclose(fp);
    bool created = true;
    assert_int_equal(fxau_bootstrap_file(f->a, path, &created, f->err, sizeof f->err), 0);
    assert_false(created);
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(secret), &p), 0);
    assert_int_equal(p.role, FXP_ADMIN);
    assert_int_equal(fxau_bootstrap_file(f->a, path, &created, f->err, sizeof f->err), 0);
    assert_int_equal(count_tokens(f), 1);
    /* a different secret in the file: registered as bootstrap-2, both work */
    const char *second = "another-operator-secret-0123456789-abcdef";
    fp = fopen(path, "w");
    fprintf(fp, "%s", second);
    fclose(fp);
    assert_int_equal(fxau_bootstrap_file(f->a, path, &created, f->err, sizeof f->err), 0);
    assert_int_equal(auth_hdr(f, bearer(second), &p), 0);
    assert_string_equal(p.who, "token:bootstrap-2");
    assert_int_equal(auth_hdr(f, bearer(secret), &p), 0);
    /* too short, or not visible ASCII: refused, never echoed */
    fp = fopen(path, "w");
    fprintf(fp, "tooshort-secret\n");
    fclose(fp);
    assert_int_equal(fxau_bootstrap_file(f->a, path, &created, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "32 to 256 visible ASCII"));
    assert_null(strstr(f->err, "tooshort"));
    fp = fopen(path, "w");
    fprintf(fp, "operator chosen secret with spaces inside");
    fclose(fp);
    assert_int_equal(fxau_bootstrap_file(f->a, path, &created, f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
    assert_null(strstr(f->err, "chosen"));
    assert_int_equal(count_tokens(f), 2);
}

static void test_bootstrap_env(void **state)
{
    fixture *f = *state;
    const char *secret = "env-given-secret-from-docker-0123456789abcdef";
    assert_int_equal(fxau_bootstrap_secret(f->a, secret, f->err, sizeof f->err), 0);
    assert_true(fxau_enabled(f->a));
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(secret), &p), 0);
    assert_int_equal(p.role, FXP_ADMIN);
    assert_string_equal(p.who, "token:bootstrap");
    assert_int_equal(fxau_bootstrap_secret(f->a, secret, f->err, sizeof f->err), 0);
    assert_int_equal(count_tokens(f), 1);
    /* revoked, it stays revoked when given again */
    assert_int_equal(fxau_token_revoke(f->a, p.token_id, NULL, NULL, NULL, f->err,
                                       sizeof f->err), 0);
    assert_int_equal(fxau_bootstrap_secret(f->a, secret, f->err, sizeof f->err), 0);
    expect_unauth(f, bearer(secret), "revoked");
    assert_int_equal(count_tokens(f), 1);
    assert_int_equal(fxau_bootstrap_secret(f->a, "short", f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
}

/* ------------------------------------------------ restart, team delete */

static void test_persistence(void **state)
{
    fixture *f = *state;
    char s1[69], s2[69];
    int64_t id1 = mint(f, "a", "keep", FXP_MEMBER, 0, s1);
    int64_t id2 = mint(f, "a", "gone", FXP_MEMBER, 0, s2);
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(s1), &p), 0);
    assert_int_equal(fxau_token_revoke(f->a, id2, NULL, NULL, NULL, f->err, sizeof f->err), 0);
    assert_int_equal(fxau_cert_add(f->a, "CN=carol", "b", FXP_ADMIN, NULL, f->err,
                                   sizeof f->err), 0);
    close_all(f);
    open_all(f, false);
    assert_true(fxau_enabled(f->a));
    assert_int_equal(auth_hdr(f, bearer(s1), &p), 0);
    assert_int_equal(p.token_id, id1);
    expect_unauth(f, bearer(s2), "revoked");
    assert_int_equal(cert_auth(f, "CN=carol", "carol", &p), 0);
    assert_int_equal(p.role, FXP_ADMIN);
    /* the last use was written at close */
    fxdb_token_rec *recs;
    int n;
    assert_int_equal(fxdb_token_list(f->st, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 2);
    assert_true(recs[0].last_used_ms > 0);
    assert_int_equal(recs[1].last_used_ms, 0);
    fxdb_token_recs_free(recs, n);
}

static void test_team_delete(void **state)
{
    fixture *f = *state;
    char s[69], keep[69];
    mint(f, "b", "bt", FXP_MEMBER, 0, s);
    mint(f, "a", "at", FXP_MEMBER, 0, keep);
    assert_int_equal(fxau_cert_add(f->a, "CN=dave", "b", FXP_MEMBER, NULL, f->err,
                                   sizeof f->err), 0);
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(s), &p), 0);
    assert_int_equal(fxau_team_delete(f->a, "b", f->err, sizeof f->err), 0);
    assert_int_not_equal(auth_hdr(f, bearer(s), &p), 0);
    assert_int_equal(cert_auth(f, "CN=dave", "dave", &p), FXS_UNAUTHENTICATED);
    assert_int_equal(auth_hdr(f, bearer(keep), &p), 0);
    assert_int_equal(fxau_team_delete(f->a, "default", f->err, sizeof f->err),
                     FXS_INVALID_ARGUMENT);
}

/* The last use goes to the store on the first use, then at most once a
 * minute (the rest stays in memory until close). */
static int64_t stored_last_use(fixture *f, int64_t id)
{
    fxdb_token_rec *recs;
    int n;
    assert_int_equal(fxdb_token_list(f->st, &recs, &n, f->err, sizeof f->err), 0);
    int64_t v = -1;
    for (int i = 0; i < n; i++)
        if (recs[i].id == id)
            v = recs[i].last_used_ms;
    fxdb_token_recs_free(recs, n);
    return v;
}

static void test_last_use_throttled(void **state)
{
    fixture *f = *state;
    char s[69];
    int64_t id = mint(f, "a", "busy", FXP_MEMBER, 0, s);
    assert_int_equal(stored_last_use(f, id), 0);
    fxp_principal p;
    assert_int_equal(auth_hdr(f, bearer(s), &p), 0);
    int64_t first = stored_last_use(f, id);
    assert_true(first > 0);
    usleep(20 * 1000);
    for (int i = 0; i < 50; i++)
        assert_int_equal(auth_hdr(f, bearer(s), &p), 0);
    assert_int_equal(stored_last_use(f, id), first); /* not written again within a minute */
    fxdb_token_rec *recs;
    int n;
    assert_int_equal(fxau_token_list(f->a, "a", false, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 1);
    assert_true(recs[0].last_used_ms >= first + 20); /* the list shows memory's */
    int64_t latest = recs[0].last_used_ms;
    fxdb_token_recs_free(recs, n);
    /* a reload (any change) keeps memory's value */
    char other[69];
    mint(f, "a", "other", FXP_MEMBER, 0, other);
    assert_int_equal(fxau_token_list(f->a, "a", false, &recs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(recs[0].last_used_ms, latest);
    fxdb_token_recs_free(recs, n);
    close_all(f);
    open_all(f, false);
    assert_int_equal(stored_last_use(f, id), latest); /* written at close */
}

/* ------------------------------------------------------------ threads */

typedef struct {
    fixture *f;
    const char *good;          /* never revoked: must always pass */
    atomic_bool stop;
    atomic_int failures;
    atomic_long calls;
} race;

static void *authenticator(void *arg)
{
    race *r = arg;
    char hdr[128], err[FXS_ERRLEN];
    snprintf(hdr, sizeof hdr, "Bearer %s", r->good);
    while (!atomic_load(&r->stop)) {
        fxp_principal p;
        if (fxau_authenticate(r->f->a, hdr, NULL, NULL, &p, err, sizeof err) != 0 ||
            strcmp(p.who, "token:stable") != 0)
            atomic_fetch_add(&r->failures, 1);
        /* a wrong one, for the failing path under contention */
        fxau_authenticate(r->f->a, "Bearer fxn_wrong_wrong_wrong", NULL, NULL, &p, err,
                          sizeof err);
        atomic_fetch_add(&r->calls, 1);
    }
    return NULL;
}

static void test_threads(void **state)
{
    fixture *f = *state;
    char good[69];
    mint(f, "a", "stable", FXP_VIEWER, 0, good);
    race r = { .f = f, .good = good };
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, authenticator, &r), 0);
    for (int i = 0; i < 15; i++) {
        char s[69];
        char *name = tu_pathf("churn%d", i);
        int64_t id = mint(f, "b", name, FXP_MEMBER, 0, s);
        fxp_principal p;
        assert_int_equal(auth_hdr(f, bearer(s), &p), 0);
        assert_int_equal(fxau_token_revoke(f->a, id, NULL, NULL, NULL, f->err, sizeof f->err),
                         0);
        assert_int_equal(auth_hdr(f, bearer(s), &p), FXS_UNAUTHENTICATED);
        assert_int_equal(fxau_cert_add(f->a, name, "b", FXP_VIEWER, NULL, f->err,
                                       sizeof f->err), 0);
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&r.failures), 0);
    assert_true(atomic_load(&r.calls) > 0);
}

/* ----------------------------------------------------- constant time */

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static uint64_t median(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    return v[n / 2];
}

/* Every call visits every cached hash, whether it passes or fails; and with
 * the valid token FIRST in a large cache (where an early exit would make a
 * passing call far cheaper than a failing one) the median costs agree. */
static void test_constant_time(void **state)
{
    fixture *f = *state;
    char s[69];
    mint(f, "a", "first", FXP_MEMBER, 0, s);
    enum { FILL = 4000, ITERS = 3000 };
    for (int i = 0; i < FILL; i++) {
        unsigned char h[32];
        char *fake = tu_pathf("fake-secret-%d", i);
        fxau__sha256(fake, strlen(fake), h);
        assert_int_equal(fxau__cache_add(f->a, h, 1000 + i, "b", tu_pathf("fake%d", i),
                                         FXP_VIEWER, 0, 0), 0);
    }
    int total = FILL + 1;
    char *pass = bearer(s);
    char wrong[69];
    strcpy(wrong, s);
    wrong[FXAU_SECRET_LEN - 1] = wrong[FXAU_SECRET_LEN - 1] == 'a' ? 'b' : 'a';
    char *fail = bearer(wrong);
    fxp_principal p;

    uint64_t before = fxau__compare_count(f->a);
    assert_int_equal(auth_hdr(f, pass, &p), 0);
    assert_int_equal(fxau__compare_count(f->a) - before, (uint64_t)total);
    before = fxau__compare_count(f->a);
    assert_int_equal(auth_hdr(f, fail, &p), FXS_UNAUTHENTICATED);
    assert_int_equal(fxau__compare_count(f->a) - before, (uint64_t)total);
    before = fxau__compare_count(f->a);
    assert_int_equal(auth_hdr(f, "nonsense", &p), FXS_UNAUTHENTICATED);
    assert_int_equal(fxau__compare_count(f->a) - before, (uint64_t)total);

    uint64_t *tp = malloc(ITERS * sizeof *tp), *tf = malloc(ITERS * sizeof *tf);
    assert_non_null(tp);
    assert_non_null(tf);
    for (int i = 0; i < ITERS; i++) { /* interleaved: load changes hit both alike */
        uint64_t t0 = fxu_mono_ns();
        int rp = fxau_authenticate(f->a, pass, NULL, NULL, &p, f->err, sizeof f->err);
        uint64_t t1 = fxu_mono_ns();
        int rf = fxau_authenticate(f->a, fail, NULL, NULL, &p, f->err, sizeof f->err);
        uint64_t t2 = fxu_mono_ns();
        assert_int_equal(rp, 0);
        assert_int_equal(rf, FXS_UNAUTHENTICATED);
        tp[i] = t1 - t0;
        tf[i] = t2 - t1;
    }
    double mp = (double)median(tp, ITERS), mf = (double)median(tf, ITERS);
    print_message("constant time: %d tokens, median pass %.0f ns, fail %.0f ns\n", total, mp, mf);
    /* An early exit on the first token would make a pass ~1/4000 of a fail.
     * A factor 3 either way is generous for a loaded 2-core machine. */
    assert_true(mf < 3 * mp);
    assert_true(mp < 3 * mf);
    free(tp);
    free(tf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_local_mode),
        T(test_mtls_turns_auth_on),
        T(test_create_and_authenticate),
        T(test_bad_token_arguments),
        T(test_roles),
        T(test_revoke),
        T(test_expire),
        T(test_malformed_and_unknown),
        T(test_certs),
        T(test_bootstrap_file_new),
        T(test_bootstrap_file_existing),
        T(test_bootstrap_env),
        T(test_persistence),
        T(test_team_delete),
        T(test_last_use_throttled),
        T(test_threads),
        T(test_constant_time),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
