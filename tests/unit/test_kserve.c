/*
 * test_kserve.c - the KServe v2 REST codec (server/http/kserve.c): infer
 * bodies in JSON and with Triton's binary tensor data -> ModelInferRequest,
 * responses -> JSON and binary tails, the other messages in Triton's HTTP
 * form, repository bodies, and malformed bodies each refused with the path
 * of what was wrong.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "http/kserve.h"

typedef Inference__ModelInferRequest infer_req;

static infer_req *request_ok(const char *body, size_t len, size_t json_len)
{
    char err[512] = "";
    infer_req *r = fxh_infer_request(body, len, json_len, "m", "1", err, sizeof err);
    if (!r)
        fail_msg("refused: %s\n  body: %.*s", err, (int)(json_len == SIZE_MAX ? len : json_len),
                 body);
    return r;
}

static void test_json_request(void **state)
{
    const char *body = "{\"id\": \"r1\", \"inputs\": [{\"name\": \"x\", \"shape\": [2, 2], "
                       "\"datatype\": \"FP32\", \"data\": [[1, 2], [3, 4.5]]}]}";
    infer_req *r = request_ok(body, strlen(body), SIZE_MAX);
    assert_string_equal(r->model_name, "m");
    assert_string_equal(r->model_version, "1");
    assert_string_equal(r->id, "r1");
    assert_int_equal(r->n_inputs, 1);
    assert_int_equal(r->n_raw_input_contents, 0);
    assert_int_equal(r->inputs[0]->n_shape, 2);
    assert_int_equal(r->inputs[0]->contents->n_fp32_contents, 4);
    assert_true(r->inputs[0]->contents->fp32_contents[3] == 4.5f);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
