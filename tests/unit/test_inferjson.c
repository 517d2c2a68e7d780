/*
 * test_inferjson.c - `fluxion predict`'s tensors in JSON <-> ModelInfer
 * messages (common/inferjson.c): nested arrays -> shape + flat data,
 * ragged arrays rejected with their path, the KServe form, every datatype
 * typed and raw, and responses back to JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "inferjson.h"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("bad JSON in the test: %s: %s", e.text, text);
    return j;
}

/* Metadata of a model "m" with inputs "x" (dtype_x) and "k" (INT64). */
typedef struct {
    Inference__ModelMetadataResponse meta;
    Inference__ModelMetadataResponse__TensorMetadata x, k;
    Inference__ModelMetadataResponse__TensorMetadata *inputs[2];
} model_meta;

static void meta_init(model_meta *mm, const char *dtype_x)
{
    inference__model_metadata_response__init(&mm->meta);
    inference__model_metadata_response__tensor_metadata__init(&mm->x);
    inference__model_metadata_response__tensor_metadata__init(&mm->k);
    mm->x.name = "x";
    mm->x.datatype = (char *)dtype_x;
    mm->k.name = "k";
    mm->k.datatype = "INT64";
    mm->inputs[0] = &mm->x;
    mm->inputs[1] = &mm->k;
    mm->meta.name = "m";
    mm->meta.n_inputs = 2;
    mm->meta.inputs = mm->inputs;
}

static Inference__ModelInferRequest *request(const char *text, const char *dtype_x, bool raw)
{
    model_meta mm;
    meta_init(&mm, dtype_x);
    char err[256] = "";
    json_t *j = parse(text);
    Inference__ModelInferRequest *r =
        inferjson_request(j, "m", "3", &mm.meta, raw, err, sizeof err);
    json_decref(j);
    if (!r)
        fail_msg("request failed: %s", err);
    return r;
}

static void expect_error(const char *text, const char *dtype_x, bool raw, const char *want)
{
    model_meta mm;
    meta_init(&mm, dtype_x);
    char err[256] = "";
    json_t *j = parse(text);
    Inference__ModelInferRequest *r =
        inferjson_request(j, "m", NULL, &mm.meta, raw, err, sizeof err);
    json_decref(j);
    if (r) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        fail_msg("accepted %s, expected \"%s\"", text, want);
    }
    assert_string_equal(err, want);
}

static void assert_shape(const Inference__ModelInferRequest__InferInputTensor *t, size_t n,
                         const int64_t *want)
{
    assert_int_equal(t->n_shape, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(t->shape[i], want[i]);
}

/* --------------------------------------------------------- short form */

static void test_nested_arrays(void **state)
{
    Inference__ModelInferRequest *r =
        request("{\"x\": [[1, 2, 3, 4], [5, 6, 7, 8.5]], \"k\": [7]}", "FP32", false);
    assert_string_equal(r->model_name, "m");
    assert_string_equal(r->model_version, "3");
    assert_int_equal(r->n_inputs, 2);
    const Inference__ModelInferRequest__InferInputTensor *x = r->inputs[0];
    assert_string_equal(x->name, "x");
    assert_string_equal(x->datatype, "FP32");
    assert_shape(x, 2, (int64_t[]){2, 4});
    assert_int_equal(x->contents->n_fp32_contents, 8);
    const float want[] = {1, 2, 3, 4, 5, 6, 7, 8.5f};
    assert_memory_equal(x->contents->fp32_contents, want, sizeof want);
    const Inference__ModelInferRequest__InferInputTensor *k = r->inputs[1];
    assert_string_equal(k->datatype, "INT64");
    assert_shape(k, 1, (int64_t[]){1});
    assert_int_equal(k->contents->n_int64_contents, 1);
    assert_int_equal(k->contents->int64_contents[0], 7);
    assert_int_equal(r->n_raw_input_contents, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_scalar_and_empty(void **state)
{
    Inference__ModelInferRequest *r = request("{\"x\": 2.5}", "FP64", false);
    assert_shape(r->inputs[0], 0, NULL);
    assert_int_equal(r->inputs[0]->contents->n_fp64_contents, 1);
    assert_true(r->inputs[0]->contents->fp64_contents[0] == 2.5);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = request("{\"x\": []}", "FP32", false);
    assert_shape(r->inputs[0], 1, (int64_t[]){0});
    assert_int_equal(r->inputs[0]->contents->n_fp32_contents, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = request("{\"x\": [[], []]}", "FP32", true);
    assert_shape(r->inputs[0], 2, (int64_t[]){2, 0});
    assert_int_equal(r->raw_input_contents[0].len, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* A version of "" or NULL asks for the latest. */
    model_meta mm;
    meta_init(&mm, "FP32");
    json_t *j = parse("{\"x\": [1]}");
    char err[64];
    r = inferjson_request(j, "m", "", &mm.meta, false, err, sizeof err);
    assert_non_null(r);
    assert_string_equal(r->model_version, "");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    json_decref(j);
}

static void test_ragged_rejected(void **state)
{
    expect_error("{\"x\": [[1, 2], [3]]}", "FP32", false,
                 "x[1]: expected 2 elements like the first array at this depth, got 1");
    expect_error("{\"x\": [[1, 2], 3]}", "FP32", false,
                 "x[1]: expected an array of 2 elements, got an integer");
    expect_error("{\"x\": [1, [2]]}", "FP32", false,
                 "x[1]: expected a value, got an array (nested deeper than the first element)");
    expect_error("{\"x\": [[[1], [2]], [[3], [4, 5]]]}", "FP32", false,
                 "x[1][1]: expected 1 elements like the first array at this depth, got 2");
    expect_error("{\"x\": [[], [1]]}", "FP32", false,
                 "x[1]: expected 0 elements like the first array at this depth, got 1");
    /* Ragged data whose first elements claim 300^8 elements (more than
     * size_t counts): rejected at the first short element, nothing sized
     * from the claim. */
    json_t *level = json_array();
    for (int i = 0; i < 300; i++)
        json_array_append_new(level, json_integer(i));
    for (int d = 0; d < 7; d++) {
        json_t *up = json_array();
        json_array_append_new(up, level);
        for (int i = 1; i < 300; i++)
            json_array_append_new(up, json_integer(i));
        level = up;
    }
    json_t *in = json_pack("{s:o}", "x", level);
    model_meta mm;
    meta_init(&mm, "FP32");
    char err[256];
    assert_null(inferjson_request(in, "m", NULL, &mm.meta, false, err, sizeof err));
    assert_string_equal(err, "x[0][0][0][0][0][0][1]: expected an array of 300 elements, got an "
                             "integer");
    json_decref(in);
    /* Too deep to be a tensor. */
    char deep[128] = "{\"x\": ";
    for (int i = 0; i < 33; i++)
        strcat(deep, "[");
    strcat(deep, "1");
    for (int i = 0; i < 33; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    expect_error(deep, "FP32", false, "x: more than 32 nested dimensions");
}

static void test_value_errors(void **state)
{
    expect_error("{\"x\": [[1, 1.5]]}", "INT32", false,
                 "x[0][1]: expected an integer for INT32, got 1.5");
    expect_error("{\"x\": [1, \"2\"]}", "INT32", false,
                 "x[1]: expected an integer for INT32, got a string");
    expect_error("{\"x\": [[0, 1], [2, 300]]}", "INT8", true,
                 "x[1][1]: 300 is out of range for INT8");
    expect_error("{\"x\": [-129]}", "INT8", false, "x[0]: -129 is out of range for INT8");
    expect_error("{\"x\": [-1]}", "UINT32", false, "x[0]: -1 is out of range for UINT32");
    expect_error("{\"x\": [4294967296]}", "UINT32", false,
                 "x[0]: 4294967296 is out of range for UINT32");
    expect_error("{\"x\": [2147483648]}", "INT32", false,
                 "x[0]: 2147483648 is out of range for INT32");
    expect_error("{\"x\": [1e19]}", "INT64", false, "x[0]: 1e+19 is out of range for INT64");
    expect_error("{\"x\": [2e19]}", "UINT64", false, "x[0]: 2e+19 is out of range for UINT64");
    expect_error("{\"x\": [1, \"abc\"]}", "FP32", false,
                 "x[1]: expected a number for FP32, got \"abc\"");
    expect_error("{\"x\": [null]}", "FP64", false, "x[0]: expected a number for FP64, got null");
    expect_error("{\"x\": [1e39]}", "FP32", false, "x[0]: 1e+39 is out of range for FP32");
    expect_error("{\"x\": [true, 1]}", "BOOL", false,
                 "x[1]: expected true or false for BOOL, got an integer");
    expect_error("{\"x\": [\"a\", 1]}", "BYTES", true,
                 "x[1]: expected a string for BYTES, got an integer");
    expect_error("{\"x\": [{}]}", "FP32", false, "x[0]: expected a number for FP32, got an object");
    expect_error("{\"y\": [1]}", "FP32", false, "y: model m has no input \"y\" (its inputs: x, k)");
    expect_error("{\"x\": [1]}", "FP16", false, "x: unsupported datatype \"FP16\"");
    expect_error("{}", "FP32", false, "top level: no inputs given");
    expect_error("[1]", "FP32", false, "top level: expected an object of inputs, got an array");

    /* Without metadata, the datatype must be given. */
    char err[128];
    json_t *j = parse("{\"x\": [1]}");
    assert_null(inferjson_request(j, "m", NULL, NULL, false, err, sizeof err));
    assert_string_equal(err, "x: no datatype given for input \"x\" (and no model metadata)");
    json_decref(j);
    assert_null(inferjson_request(NULL, "m", NULL, NULL, false, err, sizeof err));
    assert_string_equal(err, "top level: expected an object of inputs, got nothing");
}

static void test_value_edges(void **state)
{
    Inference__ModelInferRequest *r =
        request("{\"x\": [-128, 127, 2.0], \"k\": [-9223372036854775808, 9223372036854775807]}",
                "INT8", false);
    assert_int_equal(r->inputs[0]->contents->n_int_contents, 3);
    assert_int_equal(r->inputs[0]->contents->int_contents[0], -128);
    assert_int_equal(r->inputs[0]->contents->int_contents[2], 2);
    assert_true(r->inputs[1]->contents->int64_contents[0] == INT64_MIN);
    assert_true(r->inputs[1]->contents->int64_contents[1] == INT64_MAX);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = request("{\"x\": [\"NaN\", \"-Infinity\", 0.1]}", "FP32", false);
    const float *f = r->inputs[0]->contents->fp32_contents;
    assert_true(isnan(f[0]) && isinf(f[1]) && f[1] < 0 && f[2] == 0.1f);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = request("{\"x\": [1.8e19, 0]}", "UINT64", false);
    assert_true(r->inputs[0]->contents->uint64_contents[0] == 18000000000000000000ull);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* ---------------------------------------------------------------- raw */

static void test_raw_encoding(void **state)
{
    Inference__ModelInferRequest *r =
        request("{\"x\": [[1, -2], [3, 4]], \"k\": [-1]}", "INT16", true);
    assert_int_equal(r->n_raw_input_contents, 2);
    assert_null(r->inputs[0]->contents);
    assert_shape(r->inputs[0], 2, (int64_t[]){2, 2});
    assert_int_equal(r->raw_input_contents[0].len, 8);
    assert_memory_equal(r->raw_input_contents[0].data, "\x01\x00\xfe\xff\x03\x00\x04\x00", 8);
    assert_int_equal(r->raw_input_contents[1].len, 8);
    assert_memory_equal(r->raw_input_contents[1].data, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = request("{\"x\": [1.0, -2.0]}", "FP32", true);
    assert_memory_equal(r->raw_input_contents[0].data, "\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = request("{\"x\": [true, false]}", "BOOL", true);
    assert_int_equal(r->raw_input_contents[0].len, 2);
    assert_memory_equal(r->raw_input_contents[0].data, "\x01\x00", 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = request("{\"x\": [\"ab\", \"\"]}", "BYTES", true);
    assert_int_equal(r->raw_input_contents[0].len, 10);
    assert_memory_equal(r->raw_input_contents[0].data,
                        "\x02\x00\x00\x00"
                        "ab\x00\x00\x00\x00",
                        10);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = request("{\"x\": [\"ab\", \"\"]}", "BYTES", false);
    assert_int_equal(r->inputs[0]->contents->n_bytes_contents, 2);
    assert_int_equal(r->inputs[0]->contents->bytes_contents[0].len, 2);
    assert_memory_equal(r->inputs[0]->contents->bytes_contents[0].data, "ab", 2);
    assert_int_equal(r->inputs[0]->contents->bytes_contents[1].len, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* -------------------------------------------------------------- KServe */

static void test_kserve_form(void **state)
{
    Inference__ModelInferRequest *r = request(
        "{\"id\": \"r7\", \"inputs\": [{\"name\": \"x\", \"shape\": [2, 2], \"datatype\": "
        "\"INT32\","
        " \"data\": [1, 2, 3, 4]}, {\"name\": \"k\", \"shape\": [1, 3], \"data\": [[5, 6, 7]]},"
        " {\"name\": \"n\", \"datatype\": \"FP64\", \"data\": [[0.5], [1.5]]}],"
        " \"outputs\": [{\"name\": \"y\"}]}",
        "FP32", false);
    assert_string_equal(r->id, "r7");
    assert_int_equal(r->n_inputs, 3);
    assert_string_equal(r->inputs[0]->datatype, "INT32"); /* given beats metadata */
    assert_shape(r->inputs[0], 2, (int64_t[]){2, 2});
    assert_int_equal(r->inputs[0]->contents->n_int_contents, 4);
    assert_int_equal(r->inputs[0]->contents->int_contents[3], 4);
    assert_string_equal(r->inputs[1]->datatype, "INT64"); /* from metadata */
    assert_shape(r->inputs[1], 2, (int64_t[]){1, 3});
    assert_int_equal(r->inputs[1]->contents->int64_contents[2], 7);
    assert_shape(r->inputs[2], 2, (int64_t[]){2, 1}); /* from the nesting */
    assert_int_equal(r->n_outputs, 1);
    assert_string_equal(r->outputs[0]->name, "y");
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* A short-form input may be called "inputs" when it holds numbers. */
    model_meta mm;
    meta_init(&mm, "FP32");
    mm.x.name = "inputs";
    char err[128];
    json_t *j = parse("{\"inputs\": [1, 2]}");
    r = inferjson_request(j, "m", NULL, &mm.meta, false, err, sizeof err);
    assert_non_null(r);
    assert_string_equal(r->inputs[0]->name, "inputs");
    assert_int_equal(r->inputs[0]->contents->n_fp32_contents, 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    json_decref(j);
}

static void test_kserve_errors(void **state)
{
    expect_error("{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 4], \"data\": [1, 2, 3]}]}",
                 "FP32", false, "inputs[0].data: expected 8 elements for shape [2, 4], got 3");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"shape\": [2, -1], \"data\": [1, 2]}]}", "FP32",
                 false,
                 "inputs[0].shape[1]: expected a dimension (an integer >= 0), got an integer");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"shape\": 2, \"data\": [1, 2]}]}", "FP32", false,
                 "inputs[0].shape: expected an array of dimensions, got an integer");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"shape\": [4294967296, 4294967296, 4294967296],"
                 " \"data\": [1]}]}",
                 "FP32", false,
                 "inputs[0].shape: the shape holds more than 18446744073709551615 elements");
    expect_error("{\"inputs\": [{\"shape\": [1], \"data\": [1]}]}", "FP32", false,
                 "inputs[0].name: missing");
    expect_error("{\"inputs\": [{\"name\": 3, \"data\": [1]}]}", "FP32", false,
                 "inputs[0].name: expected a string, got an integer");
    expect_error("{\"inputs\": [{\"name\": \"x\"}]}", "FP32", false, "inputs[0].data: missing");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"dims\": [1], \"data\": [1]}]}", "FP32", false,
                 "inputs[0].dims: unknown member (expected name, shape, datatype, data)");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"data\": [1]}, 5]}", "FP32", false,
                 "inputs[1]: expected an object (name, shape, datatype, data), got an integer");
    expect_error(
        "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"INT32\", \"data\": [[1], [2, 3]]}]}",
        "FP32", false,
        "inputs[0].data[1]: expected 1 elements like the first array at this depth, "
        "got 2");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\": \"INT32\","
                 " \"data\": [1, 2, 3.5]}]}",
                 "FP32", false, "inputs[0].data[2]: expected an integer for INT32, got 3.5");
    expect_error("{\"inputs\": [{\"name\": \"q\", \"data\": [1]}]}", "FP32", false,
                 "inputs[0]: model m has no input \"q\" (its inputs: x, k)");
    expect_error("{\"inputs\": []}", "FP32", false, "inputs: no inputs given");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"data\": [1]}], \"output\": []}", "FP32", false,
                 "output: unknown member (expected inputs, outputs, id)");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"data\": [1]}], \"id\": 5}", "FP32", false,
                 "id: expected a string, got an integer");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"data\": [1]}], \"outputs\": [\"y\"]}", "FP32",
                 false, "outputs[0]: expected an object {\"name\": ...}, got a string");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"data\": [1]}], \"outputs\": {}}", "FP32", false,
                 "outputs: expected an array of {\"name\": ...}, got an object");
    expect_error("{\"inputs\": [{\"name\": \"x\", \"data\": [1]}], \"outputs\": [{\"nam\": 1}]}",
                 "FP32", false, "outputs[0].nam: unknown member (expected name)");
}

/* ------------------------------------------------------------ response */

typedef Inference__ModelInferResponse__InferOutputTensor out_tensor;

static void expect_response(const Inference__ModelInferResponse *resp, const char *want_text)
{
    char err[256] = "";
    json_t *got = inferjson_response(resp, err, sizeof err);
    if (!got)
        fail_msg("response failed: %s", err);
    json_t *want = parse(want_text);
    char *g = json_dumps(got, JSON_SORT_KEYS);
    if (!json_equal(got, want))
        fail_msg("got %s, want %s", g, want_text);
    free(g);
    json_decref(got);
    json_decref(want);
}

static void expect_response_error(const Inference__ModelInferResponse *resp, const char *want)
{
    char err[256] = "";
    json_t *got = inferjson_response(resp, err, sizeof err);
    if (got) {
        json_decref(got);
        fail_msg("accepted, expected \"%s\"", want);
    }
    assert_string_equal(err, want);
}

static void test_response_typed(void **state)
{
    float yv[] = {0.5f, -1.25f, 2.0f, 3.0f, NAN, -INFINITY};
    int64_t yshape[] = {2, 3};
    Inference__InferTensorContents yc = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    yc.n_fp32_contents = 6;
    yc.fp32_contents = yv;
    out_tensor y = INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
    y.name = "y";
    y.datatype = "FP32";
    y.n_shape = 2;
    y.shape = yshape;
    y.contents = &yc;

    int64_t iv[] = {-3};
    int64_t ishape[] = {1};
    Inference__InferTensorContents ic = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    ic.n_int64_contents = 1;
    ic.int64_contents = iv;
    out_tensor idx = INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
    idx.name = "idx";
    idx.datatype = "INT64";
    idx.n_shape = 1;
    idx.shape = ishape;
    idx.contents = &ic;

    out_tensor *outs[] = {&y, &idx};
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    resp.n_outputs = 2;
    resp.outputs = outs;
    expect_response(&resp, "{\"y\": {\"shape\": [2, 3], \"datatype\": \"FP32\","
                           "  \"data\": [0.5, -1.25, 2.0, 3.0, \"NaN\", \"-Infinity\"]},"
                           " \"idx\": {\"shape\": [1], \"datatype\": \"INT64\", \"data\": [-3]}}");

    /* Output order follows the response. */
    char err[64];
    json_t *j = inferjson_response(&resp, err, sizeof err);
    void *it = json_object_iter(j);
    assert_string_equal(json_object_iter_key(it), "y");
    json_decref(j);

    yc.n_fp32_contents = 5;
    expect_response_error(&resp, "output y: the shape holds 6 elements, the contents have 5");
    yc.n_fp32_contents = 6;
    y.datatype = "FP8";
    expect_response_error(&resp, "output y: unsupported datatype \"FP8\"");
    y.datatype = "FP32";
    yshape[1] = -1;
    expect_response_error(&resp, "output y: bad shape dimension -1");
    yshape[1] = 3;
    idx.name = "i\xff"; /* jansson keys must be UTF-8 (found by fuzz_inferjson) */
    expect_response_error(&resp, "output i\xff: the output's name is not valid UTF-8");
    idx.name = "idx";
    idx.contents = NULL;
    expect_response_error(&resp, "output idx: the shape holds 1 elements, the contents have 0");
}

static void test_response_raw(void **state)
{
    int64_t s2[] = {2};
    out_tensor a = INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
    a.name = "a";
    a.datatype = "INT8";
    a.n_shape = 1;
    a.shape = s2;
    out_tensor b = a, c = a, d = a;
    b.name = "b";
    b.datatype = "UINT16";
    c.name = "c";
    c.datatype = "FP64";
    d.name = "d";
    d.datatype = "BYTES";
    out_tensor *outs[] = {&a, &b, &c, &d};
    double cv[] = {0.25, -8};
    ProtobufCBinaryData raw[] = {
        {2, (uint8_t *)"\xff\x7f"},
        {4, (uint8_t *)"\xff\xff\x01\x00"},
        {16, (uint8_t *)cv},
        {11, (uint8_t *)"\x03\x00\x00\x00"
                        "abc"
                        "\x00\x00\x00\x00"},
    };
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    resp.n_outputs = 4;
    resp.outputs = outs;
    resp.n_raw_output_contents = 4;
    resp.raw_output_contents = raw;
    expect_response(
        &resp, "{\"a\": {\"shape\": [2], \"datatype\": \"INT8\", \"data\": [-1, 127]},"
               " \"b\": {\"shape\": [2], \"datatype\": \"UINT16\", \"data\": [65535, 1]},"
               " \"c\": {\"shape\": [2], \"datatype\": \"FP64\", \"data\": [0.25, -8.0]},"
               " \"d\": {\"shape\": [2], \"datatype\": \"BYTES\", \"data\": [\"abc\", \"\"]}}");

    raw[1].len = 3;
    expect_response_error(&resp, "output b: raw contents end inside element 1");
    raw[1].len = 4;
    raw[2].len = 17;
    expect_response_error(&resp, "output c: raw contents hold 17 bytes, the shape needs 16");
    raw[2].len = 16;
    raw[3].len = 9;
    expect_response_error(&resp, "output d: raw contents end inside element 1");
    raw[3].len = 11;
    resp.n_raw_output_contents = 3;
    expect_response_error(&resp, "output d: no raw contents for this output");
}

/* Every datatype: JSON -> raw request bytes -> a response carrying those
 * bytes -> JSON equal to the input. */
static void test_raw_round_trip(void **state)
{
    struct {
        const char *dtype, *data;
    } cases[] = {
        {"BOOL", "[true, false, true]"},
        {"INT8", "[-128, 0, 127]"},
        {"INT16", "[-32768, 5, 32767]"},
        {"INT32", "[-2147483648, 5, 2147483647]"},
        {"INT64", "[-9223372036854775808, 5, 9223372036854775807]"},
        {"UINT8", "[0, 1, 255]"},
        {"UINT16", "[0, 1, 65535]"},
        {"UINT32", "[0, 1, 4294967295]"},
        {"UINT64", "[0, 1, 9223372036854775807]"},
        {"FP32", "[0.5, -2.0, \"Infinity\"]"},
        {"FP64", "[0.1, -1e300, \"NaN\"]"},
        {"BYTES", "[\"\", \"h\\u00e9\", \"xyz\"]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int raw = 0; raw < 2; raw++) {
            char text[256];
            snprintf(text, sizeof text, "{\"x\": %s}", cases[i].data);
            Inference__ModelInferRequest *r = request(text, cases[i].dtype, raw);
            out_tensor o = INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
            o.name = "x";
            o.datatype = r->inputs[0]->datatype;
            o.n_shape = r->inputs[0]->n_shape;
            o.shape = r->inputs[0]->shape;
            o.contents = (Inference__InferTensorContents *)r->inputs[0]->contents;
            out_tensor *outs[] = {&o};
            Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
            resp.n_outputs = 1;
            resp.outputs = outs;
            resp.n_raw_output_contents = r->n_raw_input_contents;
            resp.raw_output_contents = r->raw_input_contents;
            char want[320];
            snprintf(want, sizeof want,
                     "{\"x\": {\"shape\": [3], \"datatype\": \"%s\", \"data\": %s}}",
                     cases[i].dtype, cases[i].data);
            expect_response(&resp, want);
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_arrays),   cmocka_unit_test(test_scalar_and_empty),
        cmocka_unit_test(test_ragged_rejected), cmocka_unit_test(test_value_errors),
        cmocka_unit_test(test_value_edges),     cmocka_unit_test(test_raw_encoding),
        cmocka_unit_test(test_kserve_form),     cmocka_unit_test(test_kserve_errors),
        cmocka_unit_test(test_response_typed),  cmocka_unit_test(test_response_raw),
        cmocka_unit_test(test_raw_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
