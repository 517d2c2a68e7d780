/*
 * test_principal.c - base/principal: what each role may do, team names,
 * and the names a caller writes <-> the keys ("team/name") the daemon
 * keeps. The access matrix over the network is
 * tests/integration/test_auth_matrix.py; this is its pure core.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "base/principal.h"
#include "base/status.h"

static fxp_principal who(const char *team, fxp_role role)
{
    fxp_principal p;
    memset(&p, 0, sizeof p);
    snprintf(p.team, sizeof p.team, "%s", team);
    p.role = role;
    snprintf(p.who, sizeof p.who, "token:t");
    return p;
}

static void test_roles_and_access(void **state)
{
    (void)state;
    /* rows: role; columns: any, read, infer, write, manage */
    static const struct {
        fxp_role r;
        bool any, read, infer, write, manage;
    } M[] = {
        { FXP_ROLE_NONE, false, false, false, false, false },
        { FXP_VIEWER, true, true, true, false, false },
        { FXP_MEMBER, true, true, true, true, false },
        { FXP_ADMIN, true, true, true, true, true },
    };
    for (size_t i = 0; i < sizeof M / sizeof M[0]; i++) {
        assert_int_equal(fxp_allows(M[i].r, FXP_ANY), M[i].any);
        assert_int_equal(fxp_allows(M[i].r, FXP_READ), M[i].read);
        assert_int_equal(fxp_allows(M[i].r, FXP_INFER), M[i].infer);
        assert_int_equal(fxp_allows(M[i].r, FXP_WRITE), M[i].write);
        assert_int_equal(fxp_allows(M[i].r, FXP_MANAGE), M[i].manage);
        /* an access nobody stated is never allowed, not even to an admin */
        assert_false(fxp_allows(M[i].r, FXP_ACCESS_UNSET));
        /* a public method (health) is everyone's, even with no role */
        assert_true(fxp_allows(M[i].r, FXP_PUBLIC));
        /* PeerService is the peer principal's only: no other role's */
        assert_false(fxp_allows(M[i].r, FXP_PEER_ONLY));
    }
    /* the peer principal (another fluxiond) may call PeerService and
     * nothing else, and no token can be given its role */
    assert_true(fxp_allows(FXP_PEER, FXP_PEER_ONLY));
    assert_true(fxp_allows(FXP_PEER, FXP_PUBLIC));
    assert_false(fxp_allows(FXP_PEER, FXP_ANY));
    assert_false(fxp_allows(FXP_PEER, FXP_READ));
    assert_false(fxp_allows(FXP_PEER, FXP_MANAGE));
    assert_int_equal(fxp_role_from_name("peer"), FXP_ROLE_NONE);
    assert_string_equal(fxp_role_name(FXP_PEER), "peer");
    assert_int_equal(fxp_access_role(FXP_PEER_ONLY), FXP_PEER);
    assert_int_equal(fxp_role_from_name("viewer"), FXP_VIEWER);
    assert_int_equal(fxp_role_from_name("member"), FXP_MEMBER);
    assert_int_equal(fxp_role_from_name("admin"), FXP_ADMIN);
    assert_int_equal(fxp_role_from_name("Admin"), FXP_ROLE_NONE);
    assert_int_equal(fxp_role_from_name(""), FXP_ROLE_NONE);
    assert_int_equal(fxp_role_from_name(NULL), FXP_ROLE_NONE);
    for (fxp_role r = FXP_VIEWER; r <= FXP_ADMIN; r++)
        assert_int_equal(fxp_role_from_name(fxp_role_name(r)), r);
    assert_int_equal(fxp_access_role(FXP_WRITE), FXP_MEMBER);
    assert_int_equal(fxp_access_role(FXP_MANAGE), FXP_ADMIN);
}

static void test_team_names(void **state)
{
    (void)state;
    char err[256];
    const char *good[] = { "a", "default", "team-1", "ml_research", "0x" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(fxp_team_name_ok(good[i], err, sizeof err));
    const char *bad[] = { "", "-a", "_a", "A", "a/b", "a b", "a.b", "\xc3\xa9" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_false(fxp_team_name_ok(bad[i], err, sizeof err));
        assert_non_null(strstr(err, "team name"));
    }
    char long_name[FXP_TEAM_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    assert_false(fxp_team_name_ok(long_name, err, sizeof err));
    assert_non_null(strstr(err, "at most 63"));
    long_name[FXP_TEAM_MAX] = 0;
    assert_true(fxp_team_name_ok(long_name, err, sizeof err));
}

static void test_qualify(void **state)
{
    (void)state;
    char key[FXP_KEY_MAX], err[256];
    fxp_principal a = who("a", FXP_MEMBER), admin = who("ops", FXP_ADMIN);
    assert_int_equal(fxp_qualify(&a, "model", "mlp", key, sizeof key, err, sizeof err), 0);
    assert_string_equal(key, "a/mlp");
    assert_int_equal(fxp_qualify(&a, "model", "a/mlp", key, sizeof key, err, sizeof err), 0);
    assert_string_equal(key, "a/mlp");
    /* another team's name: not found, in the words of a missing object */
    assert_int_equal(fxp_qualify(&a, "model", "b/mlp", key, sizeof key, err, sizeof err),
                     FXS_NOT_FOUND);
    assert_string_equal(err, "model 'b/mlp' not found");
    /* an admin reaches any team's, and its own by the bare name */
    assert_int_equal(fxp_qualify(&admin, "model", "b/mlp", key, sizeof key, err, sizeof err), 0);
    assert_string_equal(key, "b/mlp");
    assert_int_equal(fxp_qualify(&admin, "dataset", "x", key, sizeof key, err, sizeof err), 0);
    assert_string_equal(key, "ops/x");
    const char *bad[] = { "", "/x", "a/", "a/b/c", "B/x", "-a/x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fxp_qualify(&admin, "model", bad[i], key, sizeof key, err, sizeof err),
                         FXS_INVALID_ARGUMENT);
        assert_non_null(strstr(err, "model"));
    }
    assert_int_equal(fxp_qualify(&a, "model", NULL, key, sizeof key, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    /* a key that does not fit */
    char small[6];
    assert_int_equal(fxp_qualify(&a, "model", "mlp-long", small, sizeof small, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
}

static void test_display_and_owns(void **state)
{
    (void)state;
    fxp_principal a = who("a", FXP_VIEWER), ab = who("ab", FXP_MEMBER),
                  admin = who("default", FXP_ADMIN);
    assert_string_equal(fxp_display(&a, "a/mlp"), "mlp");
    assert_string_equal(fxp_display(&a, "b/mlp"), "b/mlp");
    /* a prefix of another team's name is not the team */
    assert_string_equal(fxp_display(&a, "ab/mlp"), "ab/mlp");
    assert_string_equal(fxp_display(&ab, "a/mlp"), "a/mlp");
    assert_string_equal(fxp_display(&admin, "default/mlp"), "mlp");
    assert_string_equal(fxp_display(&admin, "a/mlp"), "a/mlp");
    assert_true(fxp_owns(&a, "a/mlp"));
    assert_false(fxp_owns(&a, "ab/mlp"));
    assert_false(fxp_owns(&ab, "a/mlp"));
    assert_false(fxp_owns(&a, "b/mlp"));
    assert_false(fxp_owns(&a, "mlp"));
    assert_true(fxp_owns(&admin, "a/mlp"));
    char team[FXP_TEAM_MAX + 1];
    fxp_key_team("a/mlp", team, sizeof team);
    assert_string_equal(team, "a");
    fxp_key_team("mlp", team, sizeof team);
    assert_string_equal(team, "");
    assert_string_equal(fxp_key_name("a/mlp"), "mlp");
    assert_string_equal(fxp_key_name("mlp"), "mlp");
    fxp_principal local;
    fxp_local_principal(&local);
    assert_true(local.local);
    assert_int_equal(local.role, FXP_ADMIN);
    assert_string_equal(local.team, FXP_DEFAULT_TEAM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles_and_access),
        cmocka_unit_test(test_team_names),
        cmocka_unit_test(test_qualify),
        cmocka_unit_test(test_display_and_owns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
