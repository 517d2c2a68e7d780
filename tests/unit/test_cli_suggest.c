/*
 * test_cli_suggest.c - the CLI's "did you mean" (clients/common/suggest.c):
 * the edit distance (swaps count once, case ignored), the threshold growing
 * with the word and bounded by a third of it, prefix matches, ties all listed in the candidates'
 * order, duplicates dropped, the out array's bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "suggest.h"

static const char *const COMMANDS[] = {"model",  "dataset", "train",     "job",     "team",
                                       "token",  "cert",    "config",    "predict", "status",
                                       "whoami", "queue",   "completion"};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void test_distance(void **state)
{
    (void)state;
    assert_int_equal(fxc_edit_distance("", ""), 0);
    assert_int_equal(fxc_edit_distance("model", "model"), 0);
    assert_int_equal(fxc_edit_distance("modle", "model"), 1); /* a swap is one edit */
    assert_int_equal(fxc_edit_distance("MODEL", "model"), 0);
    assert_int_equal(fxc_edit_distance("mode", "model"), 1);
    assert_int_equal(fxc_edit_distance("modelx", "model"), 1);
    assert_int_equal(fxc_edit_distance("kitten", "sitting"), 3);
    assert_int_equal(fxc_edit_distance("", "abc"), 3);
    assert_int_equal(fxc_edit_distance("ca", "abc"), 3); /* OSA: no edit of a swapped pair */
    char longer[200];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    /* compared by the first FXC_SUGGEST_MAXLEN letters, not past a buffer */
    assert_int_equal(fxc_edit_distance(longer, "a"), FXC_SUGGEST_MAXLEN - 1);
}

static size_t suggest(const char *word, const char **out, size_t max)
{
    return fxc_suggest(word, COMMANDS, N_COMMANDS, out, max);
}

static void test_one(void **state)
{
    (void)state;
    const char *out[8];
    assert_int_equal(suggest("modle", out, 8), 1);
    assert_string_equal(out[0], "model");
    assert_int_equal(suggest("Model", out, 8), 1); /* case */
    assert_string_equal(out[0], "model");
    assert_int_equal(suggest("jbo", out, 8), 1);
    assert_string_equal(out[0], "job");
    assert_int_equal(suggest("whomai", out, 8), 1);
    assert_string_equal(out[0], "whoami");
    assert_int_equal(suggest("completoin", out, 8), 1);
    assert_string_equal(out[0], "completion");
    assert_int_equal(suggest("stats", out, 8), 1);
    assert_string_equal(out[0], "status");
}

static void test_none(void **state)
{
    (void)state;
    const char *out[8] = {0};
    assert_int_equal(suggest("", out, 8), 0);
    assert_int_equal(suggest("frobnicate", out, 8), 0);
    assert_int_equal(suggest("x", out, 8), 0); /* one letter: one edit, nothing that short */
    assert_int_equal(suggest("zzzzz", out, 8), 0);
    assert_int_equal(suggest("model", out, 0), 0);
    assert_null(out[0]);
    /* half the word changed is not a typo */
    static const char *const FORMATS[] = {"table", "json", "name"};
    assert_int_equal(fxc_suggest("yaml", FORMATS, 3, out, 8), 0);
    static const char *const SHELLS[] = {"bash", "zsh"};
    assert_int_equal(fxc_suggest("fish", SHELLS, 2, out, 8), 0);
    assert_int_equal(fxc_suggest("bahs", SHELLS, 2, out, 8), 1);
    assert_string_equal(out[0], "bash");
    assert_int_equal(fxc_suggest("bsh", SHELLS, 2, out, 8), 2); /* one edit from each */
}

static void test_prefix_and_ties(void **state)
{
    (void)state;
    const char *out[8];
    /* every prefix match, in the table's order */
    assert_int_equal(suggest("t", out, 8), 3);
    assert_string_equal(out[0], "train");
    assert_string_equal(out[1], "team");
    assert_string_equal(out[2], "token");
    assert_int_equal(suggest("co", out, 8), 2);
    assert_string_equal(out[0], "config");
    assert_string_equal(out[1], "completion");
    /* a tie at the smallest distance lists both: "tean" is one edit from
     * "team", and "tken" one from "token" only */
    assert_int_equal(suggest("tean", out, 8), 1);
    assert_string_equal(out[0], "team");
    static const char *const SUBS[] = {"get", "set", "list", "delete"};
    assert_int_equal(fxc_suggest("xet", SUBS, 4, out, 8), 2);
    assert_string_equal(out[0], "get");
    assert_string_equal(out[1], "set");
    /* the bound on out */
    assert_int_equal(suggest("t", out, 2), 2);
    assert_string_equal(out[1], "team");
}

static void test_duplicates_and_nulls(void **state)
{
    (void)state;
    static const char *const OPTS[] = {"server", NULL, "timeout", "server", "token"};
    const char *out[8];
    assert_int_equal(fxc_suggest("sever", OPTS, 5, out, 8), 1);
    assert_string_equal(out[0], "server");
    assert_int_equal(fxc_suggest("se", OPTS, 5, out, 8), 1);
    assert_string_equal(out[0], "server");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance),
        cmocka_unit_test(test_one),
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_prefix_and_ties),
        cmocka_unit_test(test_duplicates_and_nulls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
