/*
 * test_jsonout.c - the CLI's JSON writer (clients/common/jsonout.c):
 * shortest reals that read back, float32 values as people write them,
 * string escapes, the two layouts, write errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jsonout.h"
#include "pbjson.h"

static void expect_text(const json_t *j, int layout, const char *want)
{
    char *got = jsonout_string(j, layout);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_reals(void **state)
{
    struct {
        double v;
        const char *text;
    } cases[] = {
        {0.1, "0.1"},
        {2.0, "2.0"},
        {-0.0, "-0.0"},
        {1e20, "1e+20"},
        {1.5e-7, "1.5e-07"},
        {1.0 / 3, "0.3333333333333333"},
        {DBL_MAX, "1.7976931348623157e+308"},
        {5e-324, "5e-324"},
        {123456789012.0, "123456789012.0"},
        {0.30000000000000004, "0.30000000000000004"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_string_equal(jsonout_real(cases[i].v, buf), cases[i].text);
        assert_true(strtod(buf, NULL) == cases[i].v);
    }
}

static void test_float_values(void **state)
{
    struct {
        float f;
        const char *text;
    } cases[] = {
        {0.1f, "0.1"},
        {1.0f / 3, "0.33333334"},
        {16777216.0f, "16777216.0"},
        {FLT_MAX, "3.4028235e+38"},
        {FLT_MIN, "1.1754944e-38"},
        {-2.5f, "-2.5"},
        {1e-45f, "1.4013e-45"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double d = pbjson_float_to_double(cases[i].f);
        assert_true((float)d == cases[i].f);
        assert_string_equal(jsonout_real(d, buf), cases[i].text);
    }
    assert_true(isnan(pbjson_float_to_double(NAN)));
    assert_true(isinf(pbjson_float_to_double(-INFINITY)));
}

static void test_strings(void **state)
{
    json_t *j = json_string("a\"b\\c\n\t\x01\x7f\xc3\xa9/");
    expect_text(j, JSONOUT_LINE, "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f\xc3\xa9/\"");
    json_decref(j);
    j = json_stringn("a\0b", 3);
    expect_text(j, JSONOUT_LINE, "\"a\\u0000b\"");
    json_decref(j);
}

static void test_layouts(void **state)
{
    json_t *j = json_loads("{\"a\": [1, 2.5], \"b\": {\"c\": [[1], [true, null]]},"
                           " \"d\": {}, \"e\": [], \"f\": \"s\"}",
                           0, NULL);
    assert_non_null(j);
    expect_text(j, JSONOUT_LINE,
                "{\"a\": [1, 2.5], \"b\": {\"c\": [[1], [true, null]]},"
                " \"d\": {}, \"e\": [], \"f\": \"s\"}");
    expect_text(j, JSONOUT_PRETTY,
                "{\n"
                "  \"a\": [1, 2.5],\n"
                "  \"b\": {\n"
                "    \"c\": [\n"
                "      [1],\n"
                "      [true, null]\n"
                "    ]\n"
                "  },\n"
                "  \"d\": {},\n"
                "  \"e\": [],\n"
                "  \"f\": \"s\"\n"
                "}");
    json_decref(j);
    j = json_integer(-7);
    expect_text(j, JSONOUT_PRETTY, "-7");
    json_decref(j);
}

static void test_write_errors(void **state)
{
    assert_int_equal(jsonout_write(stdout, NULL, JSONOUT_LINE), -1);
    FILE *f = fopen("/dev/full", "w");
    if (!f)
        skip();
    setvbuf(f, NULL, _IONBF, 0);
    json_t *j = json_pack("{s:[i,i]}", "x", 1, 2);
    assert_int_equal(jsonout_write(f, j, JSONOUT_PRETTY), -1);
    json_decref(j);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reals),        cmocka_unit_test(test_float_values),
        cmocka_unit_test(test_strings),      cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_write_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
