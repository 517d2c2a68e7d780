/*
 * test_http_status.c - the HTTP port's status mapping (server/http/http.h,
 * fxh_http_status; docs/http.md "Status codes"): every gRPC status once,
 * so that a code added to base/status.h without a row falls to 500 here
 * and is seen. The routes themselves are tested end to end by
 * tests/integration/test_http*.py.
 */
#include "testutil.h"
#include "http/http.h"

static void test_every_code(void **state)
{
    (void)state;
    static const struct {
        fxs_status code;
        int http;
    } rows[] = {
        { FXS_OK, 200 },
        { FXS_CANCELLED, 500 },
        { FXS_UNKNOWN, 500 },
        { FXS_INVALID_ARGUMENT, 400 },
        { FXS_DEADLINE_EXCEEDED, 504 },
        { FXS_NOT_FOUND, 404 },
        { FXS_ALREADY_EXISTS, 409 },
        { FXS_PERMISSION_DENIED, 403 },
        { FXS_RESOURCE_EXHAUSTED, 429 },
        { FXS_FAILED_PRECONDITION, 400 },
        { FXS_ABORTED, 500 },
        { FXS_OUT_OF_RANGE, 400 },
        { FXS_UNIMPLEMENTED, 501 },
        { FXS_INTERNAL, 500 },
        { FXS_UNAVAILABLE, 503 },
        { FXS_DATA_LOSS, 500 },
        { FXS_UNAUTHENTICATED, 401 },
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        if (fxh_http_status(rows[i].code) != rows[i].http)
            fail_msg("%s: %d, want %d", fxs_status_name(rows[i].code),
                     fxh_http_status(rows[i].code), rows[i].http);
    assert_int_equal(fxh_http_status((fxs_status)99), 500); /* out of range: not a 2xx */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code),
    };
    return cmocka_run_group_tests_name("http status", tests, NULL, NULL);
}
