/*
 * test_kserve.c - the KServe v2 REST codec (server/http/kserve.c): infer
 * bodies in JSON and with Triton's binary tensor data -> ModelInferRequest,
 * responses -> JSON and binary tails, the other messages in Triton's HTTP
 * form and repository bodies. Malformed bodies: test_kserve_errors.c;
 * tests/py/check_kserve_tritonclient.py checks the same codec against
 * tritonclient's own encoder and decoder.
 */
#include "kservetest.h"

/* --------------------------------------------------------------- requests */

static void test_json_request(void **state)
{
    infer_req *r =
        decode("{\"id\": \"r1\", \"parameters\": {\"priority\": 2, \"binary_data_output\":"
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
    {"BYTES", "[\"ab\",\"\",\"xyz\"]",
     "\x02\x00\x00\x00"
     "ab"
     "\x00\x00\x00\x00"
     "\x03\x00\x00\x00"
     "xyz",
     17},
};

static void test_every_datatype(void **state)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++) {
        const char *dt = DTYPES[i].dtype;
        char json[512], want[512];

        /* JSON data -> typed contents -> the JSON data back, and the same
         * typed contents as a binary output */
        snprintf(json, sizeof json,
                 "{\"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\":"
                 " \"%s\", \"data\": %s}]}",
                 dt, DTYPES[i].data);
        infer_req *r = decode(json, NULL, 0);
        assert_int_equal(r->n_raw_input_contents, 0);
        assert_non_null(r->inputs[0]->contents);
        infer_resp *resp = echo(r);
        snprintf(want, sizeof want,
                 "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":"
                 "[{\"name\":\"x\",\"datatype\":\"%s\",\"shape\":[3],\"data\":%s}]}",
                 dt, DTYPES[i].data);
        expect_response(r, resp, want, NULL, 0);
        infer_req *binreq = decode("{\"inputs\": [{\"name\": \"q\", \"shape\": [], \"datatype\":"
                                   " \"BOOL\", \"data\": true}], \"parameters\":"
                                   " {\"binary_data_output\": true}}",
                                   NULL, 0);
        snprintf(want, sizeof want,
                 "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":"
                 "[{\"name\":\"x\",\"datatype\":\"%s\",\"shape\":[3],\"parameters\":"
                 "{\"binary_data_size\":%zu}}]}",
                 dt, DTYPES[i].rawlen);
        expect_response(binreq, resp, want, DTYPES[i].raw, DTYPES[i].rawlen);
        protobuf_c_message_free_unpacked(&binreq->base, NULL);
        echo_free(resp);
        protobuf_c_message_free_unpacked(&r->base, NULL);

        /* JSON data next to a binary input: converted to raw bytes */
        snprintf(
            json, sizeof json,
            "{\"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\":"
            " \"%s\", \"data\": %s}, {\"name\": \"b\", \"shape\": [1], \"datatype\": \"UINT8\","
            " \"parameters\": {\"binary_data_size\": 1}}]}",
            dt, DTYPES[i].data);
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
        snprintf(json, sizeof json,
                 "{\"inputs\": [{\"name\": \"x\", \"shape\": [3], \"datatype\":"
                 " \"%s\", \"parameters\": {\"binary_data_size\": %zu}}]}",
                 dt, DTYPES[i].rawlen);
        r = decode(json, DTYPES[i].raw, DTYPES[i].rawlen);
        assert_int_equal(r->n_raw_input_contents, 1);
        assert_memory_equal(r->raw_input_contents[0].data, DTYPES[i].raw, DTYPES[i].rawlen);
        resp = echo(r);
        snprintf(want, sizeof want,
                 "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":"
                 "[{\"name\":\"x\",\"datatype\":\"%s\",\"shape\":[3],\"data\":%s}]}",
                 dt, DTYPES[i].data);
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
                       "\x01\x00\x00\x00"
                       "a"
                       "\x02\x00\x00\x00"
                       "bc";
    infer_req *r =
        decode("{\"inputs\": [{\"name\": \"a\", \"shape\": [2, 2], \"datatype\": \"FP32\","
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
    expect_response(
        r, resp,
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

/* Integers beyond int64 (a UINT64 over 2^63 - 1, which jansson cannot
 * hold) arrive exactly and go back exactly; strings and reals around them
 * are left alone. */
static void test_big_integers(void **state)
{
    infer_req *r = decode(
        "{\"id\": \"a\\\"18446744073709551616\\\\\", \"inputs\": [{\"name\": \"u\", \"shape\": [3],"
        " \"datatype\": \"UINT64\", \"data\": [18446744073709551615, 9223372036854775808, 1]},"
        " {\"name\": \"i\", \"shape\": [2], \"datatype\": \"INT64\", \"data\":"
        " [-9223372036854775808, \"-12\"]}, {\"name\": \"f\", \"shape\": [2], \"datatype\":"
        " \"FP64\", \"data\": [100000000000000000000, 1.12345678901234567890123e-2]}]}",
        NULL, 0);
    assert_string_equal(r->id, "a\"18446744073709551616\\");
    assert_true(r->inputs[0]->contents->uint64_contents[0] == UINT64_MAX);
    assert_true(r->inputs[0]->contents->uint64_contents[1] == 9223372036854775808ull);
    assert_true(r->inputs[1]->contents->int64_contents[0] == INT64_MIN);
    assert_true(r->inputs[1]->contents->int64_contents[1] == -12);
    assert_true(r->inputs[2]->contents->fp64_contents[0] == 1e20);
    assert_true(r->inputs[2]->contents->fp64_contents[1] == 1.12345678901234567890123e-2);
    infer_resp *resp = echo(r);
    expect_response(
        r, resp,
        "{\"model_name\":\"m\",\"model_version\":\"1\",\"id\":\"a\\\"18446744073709551616"
        "\\\\\",\"outputs\":[{\"name\":\"u\",\"datatype\":\"UINT64\",\"shape\":[3],"
        "\"data\":[18446744073709551615,9223372036854775808,1]},{\"name\":\"i\","
        "\"datatype\":\"INT64\",\"shape\":[2],\"data\":[-9223372036854775808,-12]},"
        "{\"name\":\"f\",\"datatype\":\"FP64\",\"shape\":[2],\"data\":"
        "[1e20,0.011234567890123457]}]}",
        NULL, 0);
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

/* ModelConfigResponse (the modelconfig RPC's, Triton's schema) answers
 * with its config alone, as Triton's HTTP API does. Its descriptor is
 * stood in for here: the codec knows the message by name only. */
typedef struct {
    ProtobufCMessage base;
    ProtobufCMessage *config;
} fake_config_response;

static const ProtobufCFieldDescriptor FAKE_CONFIG_FIELD = {
    "config",
    1,
    PROTOBUF_C_LABEL_NONE,
    PROTOBUF_C_TYPE_MESSAGE,
    0,
    offsetof(fake_config_response, config),
    &inference__model_metadata_response__descriptor,
    NULL,
    0,
    0,
    NULL,
    NULL};
static const unsigned FAKE_CONFIG_SORTED[] = {0};
static const ProtobufCIntRange FAKE_CONFIG_RANGES[] = {{1, 0}, {0, 1}};
static const ProtobufCMessageDescriptor FAKE_CONFIG_RESPONSE = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "inference.ModelConfigResponse",
    "ModelConfigResponse",
    "Inference__ModelConfigResponse",
    "inference",
    sizeof(fake_config_response),
    1,
    &FAKE_CONFIG_FIELD,
    FAKE_CONFIG_SORTED,
    1,
    FAKE_CONFIG_RANGES,
    NULL,
    NULL,
    NULL,
    NULL};

static void test_config_json(void **state)
{
    Inference__ModelMetadataResponse cfg = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    cfg.name = "m";
    fake_config_response r = {PROTOBUF_C_MESSAGE_INIT(&FAKE_CONFIG_RESPONSE), &cfg.base};
    expect_message_json(&r.base, "{\"name\":\"m\",\"versions\":[],\"platform\":\"\","
                                 "\"inputs\":[],\"outputs\":[]}");
    r.config = NULL;
    expect_message_json(&r.base, "{}");
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
    expect_from_json_error(load, "{\"parameters\": []}",
                           "parameters: expected an object, got an "
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
        cmocka_unit_test(test_binary_inputs),     cmocka_unit_test(test_big_integers),
        cmocka_unit_test(test_message_json),      cmocka_unit_test(test_config_json),
        cmocka_unit_test(test_message_from_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
