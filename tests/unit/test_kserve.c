/*
 * test_kserve.c - the KServe v2 REST codec (server/http/kserve.c): infer
 * bodies in JSON and with Triton's binary tensor data -> ModelInferRequest,
 * responses -> JSON and binary tails, the other messages in Triton's HTTP
 * form, repository bodies, and malformed bodies each refused with the path
 * of what was wrong. tests/py/check_kserve_tritonclient.py checks the same
 * codec against tritonclient's own encoder and decoder.
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
#include "pbjson.h"

typedef Inference__ModelInferRequest infer_req;
typedef Inference__ModelInferResponse infer_resp;
typedef Inference__ModelInferResponse__InferOutputTensor out_tensor;

/* json followed by bin (binlen bytes), malloc'd; *len the total. */
static char *body_with(const char *json, const void *bin, size_t binlen, size_t *len)
{
    size_t n = strlen(json);
    char *b = malloc(n + binlen + 1);
    assert_non_null(b);
    memcpy(b, json, n);
    if (binlen)
        memcpy(b + n, bin, binlen);
    *len = n + binlen;
    return b;
}

static infer_req *decode(const char *json, const void *bin, size_t binlen)
{
    char err[512] = "";
    size_t len;
    char *body = body_with(json, bin, binlen, &len);
    infer_req *r = fxh_infer_request(body, len, binlen ? strlen(json) : SIZE_MAX, "m", "1", err,
                                     sizeof err);
    if (!r)
        fail_msg("refused: %s\n  body: %s", err, json);
    free(body);
    return r;
}

/* The response whose outputs are the request's inputs (borrowed: free only
 * the outputs array and the tensors, with echo_free). */
static infer_resp *echo(const infer_req *r)
{
    infer_resp *resp = malloc(sizeof *resp);
    assert_non_null(resp);
    inference__model_infer_response__init(resp);
    resp->model_name = r->model_name;
    resp->model_version = r->model_version;
    resp->id = r->id;
    resp->n_outputs = r->n_inputs;
    resp->outputs = calloc(r->n_inputs + 1, sizeof *resp->outputs);
    for (size_t i = 0; i < r->n_inputs; i++) {
        out_tensor *o = malloc(sizeof *o);
        inference__model_infer_response__infer_output_tensor__init(o);
        o->name = r->inputs[i]->name;
        o->datatype = r->inputs[i]->datatype;
        o->n_shape = r->inputs[i]->n_shape;
        o->shape = r->inputs[i]->shape;
        o->contents = r->inputs[i]->contents;
        resp->outputs[i] = o;
    }
    resp->n_raw_output_contents = r->n_raw_input_contents;
    resp->raw_output_contents = r->raw_input_contents;
    return resp;
}

static void echo_free(infer_resp *resp)
{
    for (size_t i = 0; i < resp->n_outputs; i++)
        free(resp->outputs[i]);
    free(resp->outputs);
    free(resp);
}

/* fxh_infer_response must succeed with want_json as the JSON part and
 * want_bin as the tail. */
static void expect_response(const infer_req *req, const infer_resp *resp, const char *want_json,
                            const void *want_bin, size_t want_binlen)
{
    char err[512] = "", *body = NULL;
    size_t len = 0, json_len = 0;
    int rc = fxh_infer_response(req, resp, &body, &len, &json_len, err, sizeof err);
    if (rc)
        fail_msg("response refused (%d): %s", rc, err);
    if (json_len != strlen(want_json) || memcmp(body, want_json, json_len))
        fail_msg("response JSON\n  got:  %.*s\n  want: %s", (int)json_len, body, want_json);
    assert_int_equal(len - json_len, want_binlen);
    if (want_binlen)
        assert_memory_equal(body + json_len, want_bin, want_binlen);
    free(body);
}

static void expect_response_error(const infer_req *req, const infer_resp *resp, const char *want)
{
    char err[512] = "", *body = (char *)1;
    size_t len = 1, json_len = 1;
    int rc = fxh_infer_response(req, resp, &body, &len, &json_len, err, sizeof err);
    assert_int_not_equal(rc, 0);
    assert_null(body);
    if (strncmp(err, want, strlen(want)))
        fail_msg("response error\n  got:  %s\n  want: %s...", err, want);
}

/* --------------------------------------------------------------- requests */

static void test_json_request(void **state)
{
    infer_req *r = decode("{\"id\": \"r1\", \"parameters\": {\"priority\": 2, \"binary_data_output\":"
                          " false, \"tag\": \"a\", \"scale\": 0.5}, \"inputs\": [{\"name\": \"x\","
                          " \"shape\": [2, 2], \"datatype\": \"FP32\", \"data\": [[1, 2], [3, 4.5]],"
                          " \"parameters\": {\"note\": true}}, {\"name\": \"n\", \"shape\": [4],"
                          " \"datatype\": \"INT64\", \"data\": [[1, 2], [3, 4]]}],"
                          " \"outputs\": [{\"name\": \"y\", \"parameters\": {\"binary_data\":"
                          " true}}, {\"name\": \"z\"}]}",
                          NULL, 0);
    assert_string_equal(r->model_name, "m");
    assert_string_equal(r->model_version, "1");
    assert_string_equal(r->id, "r1");
    assert_int_equal(r->n_parameters, 4);
    assert_string_equal(r->parameters[0]->key, "priority");
    assert_int_equal(r->parameters[0]->value->parameter_choice_case,
                     INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM);
    assert_int_equal(r->parameters[0]->value->int64_param, 2);
    assert_int_equal(r->parameters[1]->value->parameter_choice_case,
                     INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM);
    assert_string_equal(r->parameters[2]->value->string_param, "a");
    assert_true(r->parameters[3]->value->double_param == 0.5);
    assert_int_equal(r->n_inputs, 2);
    assert_int_equal(r->n_raw_input_contents, 0);
    assert_int_equal(r->inputs[0]->n_shape, 2);
    assert_int_equal(r->inputs[0]->contents->n_fp32_contents, 4);
    assert_true(r->inputs[0]->contents->fp32_contents[3] == 4.5f);
    assert_int_equal(r->inputs[0]->n_parameters, 1);
    assert_string_equal(r->inputs[0]->parameters[0]->key, "note");
    /* nested data with a flat declared shape: the shape wins */
    assert_int_equal(r->inputs[1]->n_shape, 1);
    assert_int_equal(r->inputs[1]->shape[0], 4);
    assert_int_equal(r->inputs[1]->contents->int64_contents[3], 4);
    assert_int_equal(r->n_outputs, 2);
    assert_string_equal(r->outputs[0]->name, "y");
    assert_int_equal(r->outputs[0]->n_parameters, 1);
    assert_true(r->outputs[0]->parameters[0]->value->bool_param);
    assert_int_equal(r->outputs[1]->n_parameters, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* no version: the latest; no id */
    char err[256];
    const char *body = "{\"inputs\": [{\"name\": \"s\", \"shape\": [], \"datatype\": \"BYTES\","
                       " \"data\": \"hi\"}]}";
    r = fxh_infer_request(body, strlen(body), strlen(body), "m", NULL, err, sizeof err);
    assert_non_null(r);
    assert_string_equal(r->model_version, "");
    assert_string_equal(r->id, "");
    assert_int_equal(r->inputs[0]->n_shape, 0);
    assert_int_equal(r->inputs[0]->contents->n_bytes_contents, 1);
    assert_memory_equal(r->inputs[0]->contents->bytes_contents[0].data, "hi", 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Each datatype: its JSON data (compact, as the codec writes it back) and
 * its raw little-endian bytes. */
static const struct {
    const char *dtype, *data;
    const char *raw;
    size_t rawlen;
} DTYPES[] = {
    {"BOOL", "[true,false,true]", "\x01\x00\x01", 3},
    {"INT8", "[-1,127,-128]", "\xff\x7f\x80", 3},
    {"INT16", "[-2,300,0]", "\xfe\xff\x2c\x01\x00\x00", 6},
    {"INT32", "[-1,65536,7]", "\xff\xff\xff\xff\x00\x00\x01\x00\x07\x00\x00\x00", 12},
    {"INT64", "[-1,4294967296,1]",
     "\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x01\x00\x00\x00"
     "\x01\x00\x00\x00\x00\x00\x00\x00",
     24},
    {"UINT8", "[0,255,1]", "\x00\xff\x01", 3},
    {"UINT16", "[65535,1,2]", "\xff\xff\x01\x00\x02\x00", 6},
    {"UINT32", "[4294967295,0,1]", "\xff\xff\xff\xff\x00\x00\x00\x00\x01\x00\x00\x00", 12},
    {"UINT64", "[9223372036854775807,0,1]",
     "\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x00\x00\x00\x00\x00\x00\x00"
     "\x01\x00\x00\x00\x00\x00\x00\x00",
     24},
    {"FP32", "[1.5,-2.0,0.25]", "\x00\x00\xc0\x3f\x00\x00\x00\xc0\x00\x00\x80\x3e", 12},
    {"FP64", "[1.5,-2.0,0.25]",
     "\x00\x00\x00\x00\x00\x00\xf8\x3f\x00\x00\x00\x00\x00\x00\x00\xc0"
     "\x00\x00\x00\x00\x00\x00\xd0\x3f",
     24},
    {"BYTES", "[\"ab\",\"\",\"xyz\"]", "\x02\x00\x00\x00" "ab" "\x00\x00\x00\x00"
                                       "\x03\x00\x00\x00" "xyz", 17},
};

static void test_every_datatype(void **state)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++) {
        const char *dt = DTYPES[i].dtype;
        char json[512], want[512];

        /* JSON data -> typed contents -> the JSON data back, and the same
         * typed contents as a binary output */
        snprintf(json, sizeof json, "{\"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\":"
                 " \"%s\", \"data\": %s}]}", dt, DTYPES[i].data);
        infer_req *r = decode(json, NULL, 0);
        assert_int_equal(r->n_raw_input_contents, 0);
        assert_non_null(r->inputs[0]->contents);
        infer_resp *resp = echo(r);
        snprintf(want, sizeof want, "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":"
                 "[{\"name\":\"x\",\"datatype\":\"%s\",\"shape\":[3],\"data\":%s}]}", dt,
                 DTYPES[i].data);
        expect_response(r, resp, want, NULL, 0);
        infer_req *binreq = decode("{\"inputs\": [{\"name\": \"q\", \"shape\": [], \"datatype\":"
                                   " \"BOOL\", \"data\": true}], \"parameters\":"
                                   " {\"binary_data_output\": true}}", NULL, 0);
        snprintf(want, sizeof want, "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":"
                 "[{\"name\":\"x\",\"datatype\":\"%s\",\"shape\":[3],\"parameters\":"
                 "{\"binary_data_size\":%zu}}]}", dt, DTYPES[i].rawlen);
        expect_response(binreq, resp, want, DTYPES[i].raw, DTYPES[i].rawlen);
        protobuf_c_message_free_unpacked(&binreq->base, NULL);
        echo_free(resp);
        protobuf_c_message_free_unpacked(&r->base, NULL);

        /* JSON data next to a binary input: converted to raw bytes */
        snprintf(json, sizeof json, "{\"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\":"
                 " \"%s\", \"data\": %s}, {\"name\": \"b\", \"shape\": [1], \"datatype\": \"UINT8\","
                 " \"parameters\": {\"binary_data_size\": 1}}]}", dt, DTYPES[i].data);
        r = decode(json, "\x05", 1);
        assert_int_equal(r->n_raw_input_contents, 2);
        assert_null(r->inputs[0]->contents);
        assert_int_equal(r->raw_input_contents[0].len, DTYPES[i].rawlen);
        assert_memory_equal(r->raw_input_contents[0].data, DTYPES[i].raw, DTYPES[i].rawlen);
        assert_int_equal(r->raw_input_contents[1].len, 1);
        assert_int_equal(r->raw_input_contents[1].data[0], 5);
        assert_int_equal(r->inputs[1]->n_parameters, 0); /* binary_data_size is the codec's */
        protobuf_c_message_free_unpacked(&r->base, NULL);

        /* binary data -> raw contents -> JSON data back */
        snprintf(json, sizeof json, "{\"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\":"
                 " \"%s\", \"parameters\": {\"binary_data_size\": %zu}}]}", dt, DTYPES[i].rawlen);
        r = decode(json, DTYPES[i].raw, DTYPES[i].rawlen);
        assert_int_equal(r->n_raw_input_contents, 1);
        assert_memory_equal(r->raw_input_contents[0].data, DTYPES[i].raw, DTYPES[i].rawlen);
        resp = echo(r);
        snprintf(want, sizeof want, "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":"
                 "[{\"name\":\"x\",\"datatype\":\"%s\",\"shape\":[3],\"data\":%s}]}", dt,
                 DTYPES[i].data);
        expect_response(r, resp, want, NULL, 0);
        echo_free(resp);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
}

static void test_binary_inputs(void **state)
{
    /* three inputs: binary FP32 [2,2], JSON INT32, binary BYTES [2]; the
     * binary part holds them in input order */
    const char bin[] = "\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40"
                       "\x01\x00\x00\x00" "a" "\x02\x00\x00\x00" "bc";
    infer_req *r = decode("{\"inputs\": [{\"name\": \"a\", \"shape\": [2, 2], \"datatype\": \"FP32\","
                          " \"parameters\": {\"binary_data_size\": 16}}, {\"name\": \"b\", \"shape\":"
                          " [2], \"datatype\": \"INT32\", \"data\": [7, -7]}, {\"name\": \"c\","
                          " \"shape\": [2], \"datatype\": \"BYTES\", \"parameters\":"
                          " {\"binary_data_size\": 11, \"tag\": 1}}],"
                          " \"outputs\": [{\"name\": \"a\", \"parameters\": {\"binary_data\": false}},"
                          " {\"name\": \"c\", \"parameters\": {\"binary_data\": true}}]}",
                          bin, sizeof bin - 1);
    assert_int_equal(r->n_inputs, 3);
    assert_int_equal(r->n_raw_input_contents, 3);
    assert_memory_equal(r->raw_input_contents[0].data, bin, 16);
    assert_int_equal(r->raw_input_contents[1].len, 8);
    assert_memory_equal(r->raw_input_contents[1].data, "\x07\x00\x00\x00\xf9\xff\xff\xff", 8);
    assert_int_equal(r->raw_input_contents[2].len, 11);
    assert_memory_equal(r->raw_input_contents[2].data, bin + 16, 11);
    assert_int_equal(r->inputs[2]->n_parameters, 1); /* tag, not binary_data_size */
    assert_string_equal(r->inputs[2]->parameters[0]->key, "tag");
    assert_int_equal(r->inputs[0]->shape[1], 2);

    /* a: JSON as asked; b: not requested, no binary_data_output: JSON;
     * c: binary */
    infer_resp *resp = echo(r);
    expect_response(r, resp,
                    "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":["
                    "{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[2,2],\"data\":[1.0,2.0,3.0,4.0]},"
                    "{\"name\":\"b\",\"datatype\":\"INT32\",\"shape\":[2],\"data\":[7,-7]},"
                    "{\"name\":\"c\",\"datatype\":\"BYTES\",\"shape\":[2],\"parameters\":"
                    "{\"binary_data_size\":11}}]}",
                    bin + 16, 11);
    echo_free(resp);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* empty tensors: shape [0] and binary_data_size 0 */
    r = decode("{\"inputs\": [{\"name\": \"e\", \"shape\": [0, 3], \"datatype\": \"FP32\","
               " \"parameters\": {\"binary_data_size\": 0}}, {\"name\": \"f\", \"shape\": [1],"
               " \"datatype\": \"UINT8\", \"parameters\": {\"binary_data_size\": 1}}],"
               " \"parameters\": {\"binary_data_output\": true}}",
               "\x09", 1);
    assert_int_equal(r->raw_input_contents[0].len, 0);
    assert_int_equal(r->raw_input_contents[1].data[0], 9);
    resp = echo(r);
    expect_response(r, resp,
                    "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":["
                    "{\"name\":\"e\",\"datatype\":\"FP32\",\"shape\":[0,3],\"parameters\":"
                    "{\"binary_data_size\":0}},"
                    "{\"name\":\"f\",\"datatype\":\"UINT8\",\"shape\":[1],\"parameters\":"
                    "{\"binary_data_size\":1}}]}",
                    "\x09", 1);
    echo_free(resp);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

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
    {"{\"inputs\": [], \"inputs\": []}", NULL, 0, 0, "top level: invalid JSON at line 1, column 23: "
                                                    "duplicate object key"},
    {"{\"id\": \"a\\u0000b\", \"inputs\": []}", NULL, 0, 0, "top level: invalid JSON"},
    {"[1]", NULL, 0, 0, "top level: expected an object (inputs, outputs, id, parameters), got an array"},
    {"{}", NULL, 0, 0, "inputs: missing"},
    {"{\"inputs\": {}}", NULL, 0, 0, "inputs: expected an array of input tensors, got an object"},
    {"{\"inputs\": []}", NULL, 0, 0, "inputs: no inputs given"},
    {"{\"inputs\": [1]}", NULL, 0, 0, "inputs[0]: expected an object (name, shape, datatype, data), "
                                     "got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 4], \"datatype\": \"FP32\", \"data\":"
     " [1, 2, 3, 4, 5, 6, 7]}]}", NULL, 0, 0,
     "inputs[0].data: expected 8 elements for shape [2, 4], got 7"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"data\": [1, 2]}]}", NULL, 0, 0,
     "inputs[0].datatype: missing"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": 5, \"data\": [1, 2]}]}", NULL, 0,
     0, "inputs[0].datatype: expected a string, got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"FP16\", \"data\": [1, 2]}]}",
     NULL, 0, 0, "inputs[0].datatype: unsupported datatype \"FP16\""},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"FP16\", " BIN(2) "}]}", "ab",
     2, 0, "inputs[0]: unsupported datatype \"FP16\""},
    {"{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"data\": [1, 2]}]}", NULL, 0, 0,
     "inputs[0].shape: missing"},
    {"{\"inputs\": [" X_FP32 "}]}", NULL, 0, 0,
     "inputs[0].data: missing (or give parameters.binary_data_size and the bytes after the JSON)"},
    {"{\"inputs\": [{\"name\": \"\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1]}]}", NULL,
     0, 0, "inputs[0].name: empty"},
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
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [4294967296, 4294967296, 4294967296], \"datatype\":"
     " \"FP32\", \"data\": [1]}]}", NULL, 0, 0,
     "inputs[0].shape: the shape holds more than 18446744073709551615 elements"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [4294967296, 4294967296], \"datatype\": \"INT8\", "
     BIN(1) "}]}", "a", 1, 0, "inputs[0].shape: the shape holds more than"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [4611686018427387904], \"datatype\": \"FP32\", "
     BIN(4) "}]}", "abcd", 4, 0,
     "inputs[0]: the binary data holds 4 bytes, 4611686018427387904 FP32 elements need more than"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
     "1,1,1,1,1,1,1], \"datatype\": \"FP32\", \"data\": [1]}]}", NULL, 0, 0,
     "inputs[0].shape: 33 dimensions, more than 32"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": "
     "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}", NULL, 0, 0,
     "inputs[0].data: more than 32 nested dimensions"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"INT8\", \"data\": [1, 300]}]}",
     NULL, 0, 0, "inputs[0].data[1]: 300 is out of range for INT8"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"UINT32\", \"data\": [1, -1]}]}",
     NULL, 0, 0, "inputs[0].data[1]: -1 is out of range for UINT32"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"BOOL\", \"data\": [2]}]}", NULL,
     0, 0, "inputs[0].data[0]: expected true or false for BOOL, got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"BYTES\", \"data\": [2]}]}",
     NULL, 0, 0, "inputs[0].data[0]: expected a string for BYTES, got an integer"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 2], \"datatype\": \"INT32\", \"data\":"
     " [[1, 2], [3]]}]}", NULL, 0, 0,
     "inputs[0].data[1]: expected 2 elements like the first array at this depth, got 1"},
    {"{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"FP32\", \"data\": [1, \"a\"]}]}",
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
     "\x01\x00\x00\x00" "a" "\x09\x00\x00\x00", 9, 0,
     "inputs[0]: the binary data ends at 9 bytes, inside BYTES element 1 of 2 (9 bytes long)"},
    {"{\"inputs\": [{\"name\": \"s\", \"shape\": [2], \"datatype\": \"BYTES\", " BIN(7) "}]}",
     "\x01\x00\x00\x00" "a" "\x00\x00", 7, 0,
     "inputs[0]: the binary data ends at 7 bytes, inside the length of BYTES element 1 of 2"},
    {"{\"inputs\": [{\"name\": \"s\", \"shape\": [1], \"datatype\": \"BYTES\", " BIN(6) "}]}",
     "\x01\x00\x00\x00" "ab", 6, 0,
     "inputs[0]: the binary data holds 6 bytes, the 1 BYTES elements end at 5"},
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
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\", \"shape\": []}]}",
     NULL, 0, 0, "outputs[0].shape: unknown member (expected name, parameters)"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\", \"parameters\":"
     " {\"binary_data\": \"yes\"}}]}", NULL, 0, 0,
     "outputs[0].parameters.binary_data: expected true or false, got a string"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\", \"parameters\":"
     " {\"classification\": 3}}]}", NULL, 0, 0, "outputs[0].parameters.classification: not supported"},
    {"{\"inputs\": [" X_FP32 ", \"data\": [1, 2]}], \"outputs\": [{\"name\": \"y\", \"parameters\":"
     " {\"shared_memory_region\": \"r\"}}]}", NULL, 0, 0,
     "outputs[0].parameters.shared_memory_region: not supported"},
};

static void test_malformed_requests(void **state)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        size_t len;
        char *body = body_with(BAD[i].json, BAD[i].bin, BAD[i].binlen, &len);
        size_t json_len = BAD[i].json_len ? BAD[i].json_len
                          : BAD[i].bin   ? strlen(BAD[i].json)
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
    const char *json = "{\"inputs\": [{\"name\": \"s\", \"shape\": [2], \"datatype\": \"BYTES\", "
                       BIN(11) "}, " X_FP32 ", " BIN(8) "}]}";
    const char bin[] = "\x01\x00\x00\x00" "a" "\x02\x00\x00\x00" "bc" "12345678";
    size_t len, json_len = strlen(json);
    char *full = body_with(json, bin, sizeof bin - 1, &len);
    for (size_t cut = 0; cut < len; cut++) {
        char *body = malloc(cut ? cut : 1); /* exactly cut bytes: overreads are caught */
        memcpy(body, full, cut);
        char err[512] = "";
        infer_req *r = fxh_infer_request(body, cut, cut < json_len ? cut : json_len, "m", "", err,
                                         sizeof err);
        assert_null(r);
        assert_true(strlen(err) > 0);
        free(body);
    }
    infer_req *r = decode(json, bin, sizeof bin - 1);
    assert_int_equal(r->n_raw_input_contents, 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    free(full);
}

/* -------------------------------------------------------------- responses */

static void test_response_errors(void **state)
{
    infer_req *r = decode("{\"id\": \"q\", \"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\":"
                          " \"INT8\", \"data\": [1, 2, 3]}], \"outputs\": [{\"name\": \"x\","
                          " \"parameters\": {\"binary_data\": true}}]}", NULL, 0);
    infer_resp *resp = echo(r);
    expect_response(r, resp,
                    "{\"model_name\":\"m\",\"model_version\":\"1\",\"id\":\"q\",\"outputs\":[{"
                    "\"name\":\"x\",\"datatype\":\"INT8\",\"shape\":[3],\"parameters\":"
                    "{\"binary_data_size\":3}}]}", "\x01\x02\x03", 3);
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
               " true}}", "\x00\x00\x80\x3f\x00\x00\x00\x40", 8);
    resp = echo(r);
    r->raw_input_contents[0].len = 6;
    expect_response_error(r, resp, "outputs[0]: raw contents end inside element 1");
    r->raw_input_contents[0].len = 8;
    resp->n_raw_output_contents = 0; /* raw expected, none there */
    expect_response_error(r, resp, "outputs[0]: the shape holds 2 elements, the contents have 0");
    echo_free(resp);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* ------------------------------------------------------- other messages */

static void expect_message_json(const ProtobufCMessage *m, const char *want)
{
    char err[256] = "", *out = NULL;
    size_t len = 0;
    int rc = fxh_message_json(m, &out, &len, err, sizeof err);
    if (rc)
        fail_msg("refused: %s", err);
    assert_int_equal(len, strlen(out));
    if (strcmp(out, want))
        fail_msg("message JSON\n  got:  %s\n  want: %s", out, want);
    free(out);
}

static void test_message_json(void **state)
{
    char *exts[] = {"binary_tensor_data", "statistics"};
    Inference__ServerMetadataResponse sm = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    sm.name = "fluxion";
    sm.version = "0.3.0";
    sm.n_extensions = 2;
    sm.extensions = exts;
    expect_message_json(&sm.base, "{\"name\":\"fluxion\",\"version\":\"0.3.0\",\"extensions\":"
                                  "[\"binary_tensor_data\",\"statistics\"]}");

    Inference__ModelMetadataResponse mm = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    Inference__ModelMetadataResponse__TensorMetadata in =
        INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT;
    Inference__ModelMetadataResponse__TensorMetadata *ins[] = {&in};
    int64_t shape[] = {-1, 4};
    char *versions[] = {"1", "2"};
    in.name = "x";
    in.datatype = "FP32";
    in.n_shape = 2;
    in.shape = shape;
    mm.name = "m";
    mm.platform = "fluxion";
    mm.n_versions = 2;
    mm.versions = versions;
    mm.n_inputs = 1;
    mm.inputs = ins;
    expect_message_json(&mm.base, "{\"name\":\"m\",\"versions\":[\"1\",\"2\"],\"platform\":"
                                  "\"fluxion\",\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
                                  "\"shape\":[-1,4]}],\"outputs\":[]}");

    /* statistics: 64-bit counters as numbers */
    Inference__ModelStatisticsResponse sr = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
    Inference__ModelStatistics st = INFERENCE__MODEL_STATISTICS__INIT;
    Inference__InferStatistics is = INFERENCE__INFER_STATISTICS__INIT;
    Inference__StatisticDuration ok = INFERENCE__STATISTIC_DURATION__INIT;
    Inference__ModelStatistics *sts[] = {&st};
    ok.count = 3;
    ok.ns = 12345678901234ull;
    is.success = &ok;
    st.name = "m";
    st.version = "1";
    st.last_inference = 1700000000000ull;
    st.inference_count = 3;
    st.execution_count = 2;
    st.inference_stats = &is;
    sr.n_model_stats = 1;
    sr.model_stats = sts;
    expect_message_json(&sr.base,
                        "{\"model_stats\":[{\"name\":\"m\",\"version\":\"1\",\"last_inference\":"
                        "1700000000000,\"inference_count\":3,\"execution_count\":2,"
                        "\"inference_stats\":{\"success\":{\"count\":3,\"ns\":12345678901234}},"
                        "\"batch_stats\":[],\"memory_usage\":[]}]}");

    /* the repository index: a bare array */
    Inference__RepositoryIndexResponse ri = INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
    expect_message_json(&ri.base, "[]");
    Inference__RepositoryIndexResponse__ModelIndex a =
        INFERENCE__REPOSITORY_INDEX_RESPONSE__MODEL_INDEX__INIT;
    Inference__RepositoryIndexResponse__ModelIndex b =
        INFERENCE__REPOSITORY_INDEX_RESPONSE__MODEL_INDEX__INIT;
    Inference__RepositoryIndexResponse__ModelIndex *models[] = {&a, &b};
    a.name = "a";
    a.version = "1";
    a.state = "READY";
    b.name = "b";
    b.state = "UNAVAILABLE";
    b.reason = "unloaded";
    ri.n_models = 2;
    ri.models = models;
    expect_message_json(&ri.base,
                        "[{\"name\":\"a\",\"version\":\"1\",\"state\":\"READY\",\"reason\":\"\"},"
                        "{\"name\":\"b\",\"version\":\"\",\"state\":\"UNAVAILABLE\",\"reason\":"
                        "\"unloaded\"}]");

    Inference__ModelReadyResponse rr = INFERENCE__MODEL_READY_RESPONSE__INIT;
    expect_message_json(&rr.base, "{\"ready\":false}");
    Inference__RepositoryModelLoadResponse lr = INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
    expect_message_json(&lr.base, "{}");

    /* a string that is not UTF-8: an error, not broken JSON */
    char err[256] = "", *out = (char *)1;
    size_t len;
    sm.name = "bad\xff";
    assert_int_not_equal(fxh_message_json(&sm.base, &out, &len, err, sizeof err), 0);
    assert_non_null(strstr(err, "name"));
}

static ProtobufCMessage *from_json(const ProtobufCMessageDescriptor *d, const char *body)
{
    char err[256] = "";
    ProtobufCMessage *m = fxh_message_from_json(d, body, strlen(body), err, sizeof err);
    if (!m)
        fail_msg("refused: %s\n  body: %s", err, body);
    assert_ptr_equal(m->descriptor, d);
    return m;
}

static void expect_from_json_error(const ProtobufCMessageDescriptor *d, const char *body,
                                   const char *want)
{
    char err[256] = "";
    assert_null(fxh_message_from_json(d, body, strlen(body), err, sizeof err));
    if (strncmp(err, want, strlen(want)))
        fail_msg("%s\n  got:  %s\n  want: %s...", body, err, want);
}

static void test_message_from_json(void **state)
{
    const ProtobufCMessageDescriptor *load = &inference__repository_model_load_request__descriptor;
    const ProtobufCMessageDescriptor *unload =
        &inference__repository_model_unload_request__descriptor;
    const ProtobufCMessageDescriptor *index = &inference__repository_index_request__descriptor;

    Inference__RepositoryModelLoadRequest *l = (void *)from_json(load, "");
    assert_int_equal(l->n_parameters, 0);
    assert_string_equal(l->model_name, "");
    protobuf_c_message_free_unpacked(&l->base, NULL);
    l = (void *)from_json(load, " \r\n");
    protobuf_c_message_free_unpacked(&l->base, NULL);

    l = (void *)from_json(load, "{\"parameters\": {\"config\": \"{\\\"max_batch_size\\\": 8}\","
                                " \"file:1/w.bin\": \"AAEC\", \"poll\": true, \"n\": 4,"
                                " \"s\": {\"string_param\": \"x\"}}}");
    assert_int_equal(l->n_parameters, 5);
    assert_string_equal(l->parameters[0]->key, "config");
    assert_string_equal(l->parameters[0]->value->string_param, "{\"max_batch_size\": 8}");
    assert_string_equal(l->parameters[1]->key, "file:1/w.bin");
    assert_int_equal(l->parameters[1]->value->parameter_choice_case,
                     INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_BYTES_PARAM);
    assert_int_equal(l->parameters[1]->value->bytes_param.len, 3);
    assert_memory_equal(l->parameters[1]->value->bytes_param.data, "\x00\x01\x02", 3);
    assert_true(l->parameters[2]->value->bool_param);
    assert_int_equal(l->parameters[3]->value->int64_param, 4);
    assert_string_equal(l->parameters[4]->value->string_param, "x");
    protobuf_c_message_free_unpacked(&l->base, NULL);

    Inference__RepositoryModelUnloadRequest *u =
        (void *)from_json(unload, "{\"parameters\": {\"unload_dependents\": true}}");
    assert_int_equal(u->n_parameters, 1);
    assert_true(u->parameters[0]->value->bool_param);
    protobuf_c_message_free_unpacked(&u->base, NULL);

    Inference__RepositoryIndexRequest *ix = (void *)from_json(index, "{\"ready\": true}");
    assert_true(ix->ready);
    protobuf_c_message_free_unpacked(&ix->base, NULL);
    ix = (void *)from_json(index, "{}");
    assert_false(ix->ready);
    protobuf_c_message_free_unpacked(&ix->base, NULL);

    Inference__ModelStatisticsRequest *sq =
        (void *)from_json(&inference__model_statistics_request__descriptor, "{\"name\": \"m\"}");
    assert_string_equal(sq->name, "m");
    protobuf_c_message_free_unpacked(&sq->base, NULL);

    expect_from_json_error(load, "{\"model_name\": \"other\"}",
                           "model_name: unknown member (expected parameters)");
    expect_from_json_error(index, "{\"ready\": true, \"repository_name\": \"r\"}",
                           "repository_name: unknown member (expected ready)");
    expect_from_json_error(index, "{\"ready\": \"yes\"}", "ready: ");
    expect_from_json_error(load, "{\"parameters\": []}", "parameters: expected an object, got an "
                                                         "array");
    expect_from_json_error(load, "{\"parameters\": {\"x\": [1]}}",
                           "parameters.x: expected a string, a bool or an integer, got an array");
    expect_from_json_error(load, "{\"parameters\": {\"x\": 1.5}}",
                           "parameters.x: expected a string, a bool or an integer, got a number");
    expect_from_json_error(load, "{\"parameters\": {\"file:a\": \"not base64!\"}}",
                           "parameters.file:a");
    expect_from_json_error(load, "[]", "top level: expected an object, got an array");
    expect_from_json_error(load, "{\"parameters\": ", "top level: invalid JSON at line 1");
    expect_from_json_error(&inference__model_statistics_request__descriptor, "{\"nme\": \"m\"}",
                           "nme: unknown field");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_request),      cmocka_unit_test(test_every_datatype),
        cmocka_unit_test(test_binary_inputs),     cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_truncated_bodies),  cmocka_unit_test(test_response_errors),
        cmocka_unit_test(test_message_json),      cmocka_unit_test(test_message_from_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
