/*
 * test_kserve_errors.c - the KServe v2 REST codec (server/http/kserve.c)
 * on bodies it must refuse: a table of malformed requests, each refused
 * with the JSON path of what was wrong, every prefix of a binary body, and
 * responses that do not match their own shapes (the suite's ASan build
 * checks that none of it reads out of bounds).
 */
#include "kservetest.h"

/* ------------------------------------------------------ malformed bodies */

#define X_FP32 "{\"name\": \"x\", \"shape\": [2], \"datatype\": \"FP32\""
#define BIN(n) "\"parameters\": {\"binary_data_size\": " #n "}"

/* Each body is refused with an error starting with want. json_len: the
 * header's value (0: the JSON text's length when bin is given, else
 * absent). */
static const struct {
    const char *json, *bin;
    size_t binlen, json_len;
    const char *want;
} BAD[] = {
    {"", NULL, 0, 0, "top level: invalid JSON at line 1"},
    {"{\"inputs\": [", NULL, 0, 0, "top level: invalid JSON at line 1"},
    {"{\"inputs\": [], \"inputs\": []}", NULL, 0, 0,
     "top level: invalid JSON at line 1, column 23: "
     "duplicate object key"},
    {"{\"id\": \"a\\u0000b\", \"inputs\": []}", NULL, 0, 0, "top level: invalid JSON"},
    {"[1]", NULL, 0, 0,
     "top level: expected an object (inputs, outputs, id, parameters), got an array"},
    {"{}", NULL, 0, 0, "inputs: missing"},
    {"{\"inputs\": {}}", NULL, 0, 0, "inputs: expected an array of input tensors, got an object"},
    {"{\"inputs\": []}", NULL, 0, 0, "inputs: no inputs given"},
    {"{\"inputs\": [1]}", NULL, 0, 0,
     "inputs[0]: expected an object (name, shape, datatype, data), "
     "got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 4], \"datatype\": \"FP32\", \"data\":"
     " [1, 2, 3, 4, 5, 6, 7]}]}",
     NULL, 0, 0, "inputs[0].data: expected 8 elements for shape [2, 4], got 7"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"data\": [1, 2]}]}", NULL, 0, 0,
     "inputs[0].datatype: missing"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": 5, \"data\": [1, 2]}]}", NULL,
     0, 0, "inputs[0].datatype: expected a string, got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"FP16\", \"data\": [1, 2]}]}",
     NULL, 0, 0, "inputs[0].datatype: unsupported datatype \"FP16\""},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"FP16\", " BIN(2) "}]}", "ab",
     2, 0, "inputs[0]: unsupported datatype \"FP16\""},
    {"{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"data\": [1, 2]}]}", NULL, 0, 0,
     "inputs[0].shape: missing"},
    {"{\"inputs\": [" X_FP32 "}]}", NULL, 0, 0,
     "inputs[0].data: missing (or give parameters.binary_data_size and the bytes after the JSON)"},
    {"{\"inputs\": [{\"name\": \"\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}]}",
     NULL, 0, 0, "inputs[0].name: empty"},
    {"{\"inputs\": [{\"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}]}", NULL, 0, 0,
     "inputs[0].name: missing"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2], \"dims\": [2]}]}", NULL, 0, 0,
     "inputs[0].dims: unknown member (expected name, shape, datatype, parameters, data)"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2, -1], \"datatype\": \"FP32\", \"data\": [1]}]}",
     NULL, 0, 0, "inputs[0].shape[1]: expected a dimension (an integer >= 0), got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": \"2\", \"datatype\": \"FP32\", \"data\": [1]}]}",
     NULL, 0, 0, "inputs[0].shape: expected an array of dimensions, got a string"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1.5], \"datatype\": \"FP32\", \"data\": [1]}]}",
     NULL, 0, 0, "inputs[0].shape[0]: expected a dimension (an integer >= 0), got a number"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [4294967296, 4294967296, 4294967296], "
     "\"datatype\":"
     " \"FP32\", \"data\": [1]}]}",
     NULL, 0, 0, "inputs[0].shape: the shape holds more than 18446744073709551615 elements"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [4294967296, 4294967296], \"datatype\": "
     "\"INT8\", " BIN(1) "}]}",
     "a", 1, 0, "inputs[0].shape: the shape holds more than"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [4611686018427387904], \"datatype\": "
     "\"FP32\", " BIN(4) "}]}",
     "abcd", 4, 0,
     "inputs[0]: the binary data holds 4 bytes, 4611686018427387904 FP32 elements need more than"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": "
     "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
     "1,1,1,1,1,1,1], \"datatype\": \"FP32\", \"data\": [1]}]}",
     NULL, 0, 0, "inputs[0].shape: 33 dimensions, more than 32"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": "
     "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}",
     NULL, 0, 0, "inputs[0].data: more than 32 nested dimensions"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"INT8\", \"data\": [1, "
     "300]}]}",
     NULL, 0, 0, "inputs[0].data[1]: 300 is out of range for INT8"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"UINT32\", \"data\": [1, "
     "-1]}]}",
     NULL, 0, 0, "inputs[0].data[1]: -1 is out of range for UINT32"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"INT64\", \"data\":"
     " [9223372036854775808]}]}",
     NULL, 0, 0, "inputs[0].data[0]: 9223372036854775808 is out of range for INT64"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"UINT64\", \"data\":"
     " [18446744073709551616]}]}",
     NULL, 0, 0, "inputs[0].data[0]: 18446744073709551616 is out of range for UINT64"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"UINT64\", \"data\":"
     " [\"-1\"]}]}",
     NULL, 0, 0, "inputs[0].data[0]: -1 is out of range for UINT64"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"UINT8\", \"data\":"
     " [18446744073709551616]}]}",
     NULL, 0, 0, "inputs[0].data[0]: 18446744073709551616 is out of range for UINT8"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"INT32\", \"data\":"
     " [\"7\"]}]}",
     NULL, 0, 0, "inputs[0].data[0]: expected an integer for INT32, got a string"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"INT32\", \"data\":"
     " [012]}]}",
     NULL, 0, 0, "top level: invalid JSON"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"BOOL\", \"data\": [2]}]}",
     NULL, 0, 0, "inputs[0].data[0]: expected true or false for BOOL, got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"BYTES\", \"data\": [2]}]}",
     NULL, 0, 0, "inputs[0].data[0]: expected a string for BYTES, got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 2], \"datatype\": \"INT32\", \"data\":"
     " [[1, 2], [3]]}]}",
     NULL, 0, 0,
     "inputs[0].data[1]: expected 2 elements like the first array at this depth, got 1"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [1, "
     "\"a\"]}]}",
     NULL, 0, 0, "inputs[0].data[1]: expected a number for FP32, got \"a\""},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"model\": \"m\"}", NULL, 0, 0,
     "model: unknown member (expected id, parameters, inputs, outputs)"},
    {"{\"id\": 7, \"inputs\": [" X_FP32 ", \"data\": [1, 2]}]}", NULL, 0, 0,
     "id: expected a string, got an integer"},
    {"{\"parameters\": [], \"inputs\": [" X_FP32 ", \"data\": [1, 2]}]}", NULL, 0, 0,
     "parameters: expected an object, got an array"},
    {"{\"parameters\": {\"binary_data_output\": 1}, \"inputs\": [" X_FP32 ", \"data\": [1, 2]}]}",
     NULL, 0, 0, "parameters.binary_data_output: expected true or false, got an integer"},
    {"{\"parameters\": {\"x\": null}, \"inputs\": [" X_FP32 ", \"data\": [1, 2]}]}", NULL, 0, 0,
     "parameters.x: expected a bool, a number or a string, got null"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2], \"parameters\": {\"t\": [1]}}]}", NULL, 0, 0,
     "inputs[0].parameters.t: expected a bool, a number or a string, got an array"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2], \"parameters\": 3}]}", NULL, 0, 0,
     "inputs[0].parameters: expected an object, got an integer"},
    {"{\"inputs\": [" X_FP32 ", \"parameters\": {\"shared_memory_region\": \"r\"}}]}", NULL, 0, 0,
     "inputs[0].parameters.shared_memory_region: not supported (no shared memory"},
    /* binary data */
    {"{\"inputs\": [" X_FP32 ", \"parameters\": {\"binary_data_size\": -8}}]}", "12345678", 8, 0,
     "inputs[0].parameters.binary_data_size: expected a byte count (an integer >= 0), got an "
     "integer"},
    {"{\"inputs\": [" X_FP32 ", \"parameters\": {\"binary_data_size\": \"8\"}}]}", "12345678", 8, 0,
     "inputs[0].parameters.binary_data_size: expected a byte count"},
    {"{\"inputs\": [" X_FP32 ", " BIN(100) "}]}", "12345678", 8, 0,
     "inputs[0].parameters.binary_data_size: 100 bytes, but only 8 of the body's binary part "
     "(8 bytes after the JSON) are left for this input"},
    {"{\"inputs\": [" X_FP32 ", " BIN(8) "}, " X_FP32 ", " BIN(8) "}]}", "12345678abcd", 12, 0,
     "inputs[1].parameters.binary_data_size: 8 bytes, but only 4 of the body's binary part "
     "(12 bytes after the JSON) are left for this input"},
    {"{\"inputs\": [" X_FP32 ", " BIN(9223372036854775807) "}]}", "12345678", 8, 0,
     "inputs[0].parameters.binary_data_size: 9223372036854775807 bytes, but only 8"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2], " BIN(8) "}]}", "12345678", 8, 0,
     "inputs[0].data: given together with parameters.binary_data_size (one or the other)"},
    {"{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", " BIN(8) "}]}", "12345678", 8, 0,
     "inputs[0].shape: missing"},
    {"{\"inputs\": [" X_FP32 ", " BIN(4) "}]}", "1234", 4, 0,
     "inputs[0]: the binary data holds 4 bytes, 2 FP32 elements need 8"},
    {"{\"inputs\": [{\"name\": \"s\", \"shape\": [2], \"datatype\": \"BYTES\", " BIN(9) "}]}",
     "\x01\x00\x00\x00"
     "a"
     "\x09\x00\x00\x00",
     9, 0,
     "inputs[0]: the binary data ends at 9 bytes, inside BYTES element 1 of 2 (9 bytes long)"},
    {"{\"inputs\": [{\"name\": \"s\", \"shape\": [2], \"datatype\": \"BYTES\", " BIN(7) "}]}",
     "\x01\x00\x00\x00"
     "a"
     "\x00\x00",
     7, 0, "inputs[0]: the binary data ends at 7 bytes, inside the length of BYTES element 1 of 2"},
    {"{\"inputs\": [{\"name\": \"s\", \"shape\": [1], \"datatype\": \"BYTES\", " BIN(6) "}]}",
     "\x01\x00\x00\x00"
     "ab",
     6, 0, "inputs[0]: the binary data holds 6 bytes, the 1 BYTES elements end at 5"},
    {"{\"inputs\": [" X_FP32 ", " BIN(8) "}]}", "12345678xy", 10, 0,
     "top level: the body has 10 bytes after the JSON part, the inputs' binary_data_size claim 8"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}]}", "xy", 2, 0,
     "top level: the body has 2 bytes after the JSON part, the inputs' binary_data_size claim 0"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}]}", "xy", 2, 1000,
     "Inference-Header-Content-Length: 1000 is beyond the body's"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}]}", "xy", 2, 10, "top level: invalid JSON"},
    /* outputs */
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": {}}", NULL, 0, 0,
     "outputs: expected an array of {\"name\": ...}, got an object"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [\"y\"]}", NULL, 0, 0,
     "outputs[0]: expected an object {\"name\": ...}, got a string"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\"}, {}]}", NULL, 0,
     0, "outputs[1].name: missing"},
    {"{\"inputs\": [" X_FP32
     ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\", \"shape\": []}]}",
     NULL, 0, 0, "outputs[0].shape: unknown member (expected name, parameters)"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\", \"parameters\":"
     " {\"binary_data\": \"yes\"}}]}",
     NULL, 0, 0, "outputs[0].parameters.binary_data: expected true or false, got a string"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\", \"parameters\":"
     " {\"classification\": 3}}]}",
     NULL, 0, 0, "outputs[0].parameters.classification: not supported"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\", \"parameters\":"
     " {\"shared_memory_region\": \"r\"}}]}",
     NULL, 0, 0, "outputs[0].parameters.shared_memory_region: not supported"},
};

static void test_malformed_requests(void **state)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        size_t len;
        char *body = body_with(BAD[i].json, BAD[i].bin, BAD[i].binlen, &len);
        size_t json_len = BAD[i].json_len ? BAD[i].json_len
                          : BAD[i].bin    ? strlen(BAD[i].json)
                                          : SIZE_MAX;
        char err[512] = "";
        infer_req *r = fxh_infer_request(body, len, json_len, "m", "", err, sizeof err);
        if (r)
            fail_msg("case %zu accepted: %s", i, BAD[i].json);
        if (strncmp(err, BAD[i].want, strlen(BAD[i].want)))
            fail_msg("case %zu: %s\n  got:  %s\n  want: %s...", i, BAD[i].json, err, BAD[i].want);
        /* a small err buffer is cut, never overrun */
        char small[8];
        assert_null(fxh_infer_request(body, len, json_len, "m", "", small, sizeof small));
        assert_true(strlen(small) < sizeof small);
        free(body);
    }
}

/* Every prefix of a good binary body, with the header kept: refused with
 * a message, never read past (ASan builds check the reads). */
static void test_truncated_bodies(void **state)
{
    const char *json =
        "{\"inputs\": [{\"name\": \"s\", \"shape\": [2], \"datatype\": \"BYTES\", " BIN(
            11) "}, " X_FP32 ", " BIN(8) "}]}";
    const char bin[] = "\x01\x00\x00\x00"
                       "a"
                       "\x02\x00\x00\x00"
                       "bc"
                       "12345678";
    size_t len, json_len = strlen(json);
    char *full = body_with(json, bin, sizeof bin - 1, &len);
    for (size_t cut = 0; cut < len; cut++) {
        char *body = malloc(cut ? cut : 1); /* exactly cut bytes: overreads are caught */
        memcpy(body, full, cut);
        char err[512] = "";
        infer_req *r =
            fxh_infer_request(body, cut, cut < json_len ? cut : json_len, "m", "", err, sizeof err);
        assert_null(r);
        assert_true(strlen(err) > 0);
        free(body);
    }
    infer_req *r = decode(json, bin, sizeof bin - 1);
    assert_int_equal(r->n_raw_input_contents, 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    free(full);
}

/* Bodies with a few bytes changed (a fixed seed, so a failure repeats):
 * each accepted, then answered, or refused with a message; never a crash
 * or a read out of bounds (the ASan build checks). */
static void test_mutated_bodies(void **state)
{
    static const char *const seeds[] = {
        "{\"id\": \"r\", \"parameters\": {\"binary_data_output\": true}, \"inputs\": [{\"name\":"
        " \"s\", \"shape\": [2], \"datatype\": \"BYTES\", " BIN(11) "}, " X_FP32 ", " BIN(
            8) "},"
               " {\"name\": \"n\", \"shape\": [2, 1], \"datatype\": \"INT16\", \"data\": [[1], "
               "[-2]]}],"
               " \"outputs\": [{\"name\": \"s\", \"parameters\": {\"binary_data\": false}}]}",
        "{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 2], \"datatype\": \"UINT64\", \"data\":"
        " [[18446744073709551615, 0], [1, 2]]}, {\"name\": \"b\", \"shape\": [], \"datatype\":"
        " \"BOOL\", \"data\": true}]}",
    };
    static const char tail[] = "\x01\x00\x00\x00"
                               "a"
                               "\x02\x00\x00\x00"
                               "bc"
                               "\x00\x00\x80\x3f\x00\x00\x00\x40";
    static const char alphabet[] = "{}[]\",:0123456789-.e \\\x00\xff\x01tfn";
    uint32_t rng = 12345;
    size_t accepted = 0, runs = 0;
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        size_t binlen = s == 0 ? sizeof tail - 1 : 0, len;
        char *good = body_with(seeds[s], tail, binlen, &len);
        for (int iter = 0; iter < 4000; iter++, runs++) {
            char *body = malloc(len);
            memcpy(body, good, len);
            int edits = 1 + (int)((rng = rng * 1103515245u + 12345u) >> 16) % 3;
            for (int e = 0; e < edits; e++) {
                rng = rng * 1103515245u + 12345u;
                size_t at = (rng >> 8) % len;
                rng = rng * 1103515245u + 12345u;
                body[at] = alphabet[(rng >> 8) % (sizeof alphabet - 1)];
            }
            size_t json_len = binlen ? strlen(seeds[s]) : SIZE_MAX;
            char err[512] = "";
            infer_req *r = fxh_infer_request(body, len, json_len, "m", "1", err, sizeof err);
            if (r) {
                accepted++;
                infer_resp *resp = echo(r);
                char *out = NULL;
                size_t olen, ojson;
                if (!fxh_infer_response(r, resp, &out, &olen, &ojson, err, sizeof err))
                    assert_true(ojson <= olen);
                else
                    assert_true(strlen(err) > 0);
                free(out);
                echo_free(resp);
                protobuf_c_message_free_unpacked(&r->base, NULL);
            } else {
                assert_true(strlen(err) > 0);
            }
            free(body);
        }
        free(good);
    }
    /* both sides of the check ran */
    assert_true(accepted > 0 && accepted < runs);
}

/* -------------------------------------------------------------- responses */

static void test_response_errors(void **state)
{
    infer_req *r =
        decode("{\"id\": \"q\", \"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\":"
               " \"INT8\", \"data\": [1, 2, 3]}], \"outputs\": [{\"name\": \"x\","
               " \"parameters\": {\"binary_data\": true}}]}",
               NULL, 0);
    infer_resp *resp = echo(r);
    expect_response(r, resp,
                    "{\"model_name\":\"m\",\"model_version\":\"1\",\"id\":\"q\",\"outputs\":[{"
                    "\"name\":\"x\",\"datatype\":\"INT8\",\"shape\":[3],\"parameters\":"
                    "{\"binary_data_size\":3}}]}",
                    "\x01\x02\x03", 3);
    /* an INT8 value beyond its range in the 32-bit list */
    r->inputs[0]->contents->int_contents[1] = 300;
    expect_response_error(r, resp, "outputs[0]: element 1: 300 is out of range for INT8");
    r->inputs[0]->contents->int_contents[1] = 2;
    /* more elements than the shape */
    resp->outputs[0]->shape[0] = 4;
    expect_response_error(r, resp, "outputs[0]: the shape holds 4 elements, the contents have 3");
    resp->outputs[0]->shape[0] = -1;
    expect_response_error(r, resp, "outputs[0]: bad shape dimension -1");
    resp->outputs[0]->shape[0] = 3;
    resp->outputs[0]->datatype = "FP8";
    expect_response_error(r, resp, "outputs[0]: unsupported datatype \"FP8\"");
    resp->outputs[0]->datatype = "INT8";
    echo_free(resp);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* raw contents of the wrong size, JSON and binary */
    r = decode("{\"inputs\": [" X_FP32 ", " BIN(8) "}], \"parameters\": {\"binary_data_output\":"
                                                   " true}}",
               "\x00\x00\x80\x3f\x00\x00\x00\x40", 8);
    resp = echo(r);
    r->raw_input_contents[0].len = 6;
    expect_response_error(r, resp,
                          "outputs[0]: raw_output_contents[0] holds 6 bytes, 2 FP32 "
                          "elements need 8");
    r->parameters[0]->value->bool_param = false; /* as JSON */
    expect_response_error(r, resp, "outputs[0]: raw contents end inside element 1");
    r->parameters[0]->value->bool_param = true;
    r->raw_input_contents[0].len = 8;
    resp->n_raw_output_contents = 0; /* raw expected, none there */
    expect_response_error(r, resp, "outputs[0]: the shape holds 2 elements, the contents have 0");
    echo_free(resp);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_truncated_bodies),
        cmocka_unit_test(test_mutated_bodies),
        cmocka_unit_test(test_response_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
