/*
 * test_pbjson.c - JSON <-> protobuf-c (common/pbjson.c): the proto3
 * JSON mapping over every field type (tests/proto/pbjson_test*.proto), the
 * service messages (CreateModelRequest, ModelInferRequest), output of
 * protoc's Python json_format, AttrValue's friendly form, and an error
 * naming its JSON path for every kind of bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pbjson.h"
#include "fluxion/v1/model.pb-c.h"
#include "inference/grpc_service.pb-c.h"
#include "pbjson_test.pb-c.h"
#include "pbjson_test2.pb-c.h"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!j)
        fail_msg("bad JSON in the test: %s: %s", e.text, text);
    return j;
}

static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const char *text)
{
    char err[512] = "";
    json_t *j = parse(text);
    ProtobufCMessage *m = pbjson_decode(d, j, err, sizeof err);
    json_decref(j);
    if (!m)
        fail_msg("decode failed: %s", err);
    return m;
}

static void expect_error(const ProtobufCMessageDescriptor *d, const char *text, const char *want)
{
    char err[512] = "";
    json_t *j = parse(text);
    ProtobufCMessage *m = pbjson_decode(d, j, err, sizeof err);
    json_decref(j);
    if (m) {
        protobuf_c_message_free_unpacked(m, NULL);
        fail_msg("decoded, expected the error \"%s\" for %s", want, text);
    }
    assert_string_equal(err, want);
}

/* The encoding equals the expected JSON (object member order aside). */
static void expect_json(const ProtobufCMessage *m, unsigned flags, const char *want_text)
{
    char err[256] = "";
    json_t *got = pbjson_encode(m, flags, err, sizeof err);
    if (!got)
        fail_msg("encode failed: %s", err);
    json_t *want = parse(want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        char *w = json_dumps(want, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fprintf(stderr, "got  %s\nwant %s\n", g, w);
        free(g);
        free(w);
        json_decref(got);
        json_decref(want);
        fail_msg("encoding differs");
    }
    json_decref(got);
    json_decref(want);
}

/* Same wire bytes: the same message. */
static void assert_same_message(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t na = protobuf_c_message_get_packed_size(a);
    size_t nb = protobuf_c_message_get_packed_size(b);
    assert_int_equal(na, nb);
    uint8_t *pa = malloc(na + 1), *pb = malloc(nb + 1);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    assert_memory_equal(pa, pb, na);
    free(pa);
    free(pb);
}

/* Encodes with flags, decodes the result: the same message comes back. */
static void assert_round_trip(const ProtobufCMessage *m, unsigned flags)
{
    char err[256] = "";
    json_t *j = pbjson_encode(m, flags, err, sizeof err);
    if (!j)
        fail_msg("encode failed: %s", err);
    ProtobufCMessage *back = pbjson_decode(m->descriptor, j, err, sizeof err);
    json_decref(j);
    if (!back)
        fail_msg("decoding the encoding failed: %s", err);
    assert_same_message(m, back);
    protobuf_c_message_free_unpacked(back, NULL);
}

static const unsigned ALL_FLAGS[] = {
    0,
    PBJSON_ORIGINAL_NAMES,
    PBJSON_EMIT_DEFAULTS,
    PBJSON_INT64_NUMBERS,
    PBJSON_CANONICAL_ATTRS,
    PBJSON_ORIGINAL_NAMES | PBJSON_EMIT_DEFAULTS | PBJSON_INT64_NUMBERS,
};

static void assert_round_trips(const ProtobufCMessage *m)
{
    for (size_t i = 0; i < sizeof ALL_FLAGS / sizeof ALL_FLAGS[0]; i++)
        assert_round_trip(m, ALL_FLAGS[i]);
}

/* ------------------------------------------------------------ all types */

static const char ALL_TYPES_JSON[] =
    "{\"i32\": -7, \"i64\": \"-9007199254740993\", \"u32\": 4294967295,"
    " \"u64\": \"18446744073709551615\", \"s32\": -2147483648, \"s64\": 5,"
    " \"f32\": 7, \"f64\": \"8\", \"sf32\": -9, \"sf64\": \"-10\", \"fl\": 0.25,"
    " \"db\": -1.5e300, \"b\": true, \"str\": \"h\\u00e9llo\", \"by\": \"AAEC/w==\","
    " \"color\": \"GREEN\", \"inner\": {\"a\": 1, \"s\": \"in\"},"
    " \"inners\": [{\"a\": 2}, {}], \"colors\": [\"RED\", 2, 0],"
    " \"blobs\": [\"\", \"_-8\"], \"floats\": [1, \"NaN\", \"-Infinity\"],"
    " \"byId\": {\"-3\": \"minus three\", \"7\": \"seven\"},"
    " \"by_flag\": {\"true\": {\"a\": 1}, \"false\": {}},"
    " \"byU64\": {\"18446744073709551615\": 1},"
    " \"cStr\": \"chosen\", \"snakeCaseName\": \"x\"}";

static void test_all_types_decode(void **state)
{
    Pbjsontest__AllTypes *m =
        (Pbjsontest__AllTypes *)decode(&pbjsontest__all_types__descriptor, ALL_TYPES_JSON);
    assert_int_equal(m->i32, -7);
    assert_true(m->i64 == -9007199254740993LL);
    assert_true(m->u32 == 4294967295u);
    assert_true(m->u64 == UINT64_MAX);
    assert_true(m->s32 == INT32_MIN);
    assert_true(m->s64 == 5 && m->f32 == 7 && m->f64 == 8 && m->sf32 == -9 && m->sf64 == -10);
    assert_true(m->fl == 0.25f && m->db == -1.5e300);
    assert_true(m->b);
    assert_string_equal(m->str, "h\xc3\xa9llo");
    assert_int_equal(m->by.len, 4);
    assert_memory_equal(m->by.data, "\x00\x01\x02\xff", 4);
    assert_int_equal(m->color, PBJSONTEST__COLOR__GREEN);
    assert_int_equal(m->inner->a, 1);
    assert_string_equal(m->inner->s, "in");
    assert_int_equal(m->n_inners, 2);
    assert_int_equal(m->inners[0]->a, 2);
    assert_int_equal(m->inners[1]->a, 0);
    assert_int_equal(m->n_colors, 3);
    assert_int_equal(m->colors[0], PBJSONTEST__COLOR__RED);
    assert_int_equal(m->colors[1], PBJSONTEST__COLOR__GREEN);
    assert_int_equal(m->colors[2], PBJSONTEST__COLOR__COLOR_UNSPECIFIED);
    assert_int_equal(m->n_blobs, 2);
    assert_int_equal(m->blobs[0].len, 0);
    assert_int_equal(m->blobs[1].len, 2); /* URL-safe, unpadded: 0xff 0xef */
    assert_memory_equal(m->blobs[1].data, "\xff\xef", 2);
    assert_int_equal(m->n_floats, 3);
    assert_true(m->floats[0] == 1.0f && isnan(m->floats[1]) && isinf(m->floats[2]) &&
                m->floats[2] < 0);
    assert_int_equal(m->n_by_id, 2);
    assert_int_equal(m->by_id[0]->key, -3);
    assert_string_equal(m->by_id[0]->value, "minus three");
    assert_int_equal(m->by_id[1]->key, 7);
    assert_int_equal(m->n_by_flag, 2);
    assert_true(m->by_flag[0]->key && !m->by_flag[1]->key);
    assert_int_equal(m->by_flag[0]->value->a, 1);
    assert_int_equal(m->n_by_u64, 1);
    assert_true(m->by_u64[0]->key == UINT64_MAX);
    assert_int_equal(m->choice_case, PBJSONTEST__ALL_TYPES__CHOICE_C_STR);
    assert_string_equal(m->c_str, "chosen");
    assert_string_equal(m->snake_case_name, "x");
    assert_round_trips(&m->base);
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void test_all_types_encode(void **state)
{
    Pbjsontest__AllTypes *m =
        (Pbjsontest__AllTypes *)decode(&pbjsontest__all_types__descriptor, ALL_TYPES_JSON);
    /* proto3 defaults: lowerCamelCase, 64-bit integers as strings. */
    expect_json(
        &m->base, 0,
        "{\"i32\": -7, \"i64\": \"-9007199254740993\", \"u32\": 4294967295,"
        " \"u64\": \"18446744073709551615\", \"s32\": -2147483648, \"s64\": \"5\","
        " \"f32\": 7, \"f64\": \"8\", \"sf32\": -9, \"sf64\": \"-10\", \"fl\": 0.25,"
        " \"db\": -1.5e300, \"b\": true, \"str\": \"h\\u00e9llo\", \"by\": \"AAEC/w==\","
        " \"color\": \"GREEN\", \"inner\": {\"a\": 1, \"s\": \"in\"},"
        " \"inners\": [{\"a\": 2}, {}], \"colors\": [\"RED\", \"GREEN\", \"COLOR_UNSPECIFIED\"],"
        " \"blobs\": [\"\", \"/+8=\"], \"floats\": [1.0, \"NaN\", \"-Infinity\"],"
        " \"byId\": {\"-3\": \"minus three\", \"7\": \"seven\"},"
        " \"byFlag\": {\"true\": {\"a\": 1}, \"false\": {}},"
        " \"byU64\": {\"18446744073709551615\": 1},"
        " \"cStr\": \"chosen\", \"snakeCaseName\": \"x\"}");
    /* Proto names, numbers for 64-bit integers that fit. */
    Pbjsontest__AllTypes small = PBJSONTEST__ALL_TYPES__INIT;
    small.i64 = -5;
    small.u64 = 6;
    small.f64 = UINT64_MAX;
    small.snake_case_name = "y";
    expect_json(&small.base, PBJSON_ORIGINAL_NAMES | PBJSON_INT64_NUMBERS,
                "{\"i64\": -5, \"u64\": 6, \"f64\": \"18446744073709551615\","
                " \"snake_case_name\": \"y\"}");
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void test_defaults_and_presence(void **state)
{
    Pbjsontest__AllTypes m = PBJSONTEST__ALL_TYPES__INIT;
    expect_json(&m.base, 0, "{}");
    /* Every implicit-presence field; never unset messages or oneofs. */
    expect_json(
        &m.base, PBJSON_EMIT_DEFAULTS | PBJSON_ORIGINAL_NAMES,
        "{\"i32\": 0, \"i64\": \"0\", \"u32\": 0, \"u64\": \"0\", \"s32\": 0, \"s64\": \"0\","
        " \"f32\": 0, \"f64\": \"0\", \"sf32\": 0, \"sf64\": \"0\", \"fl\": 0.0, \"db\": 0.0,"
        " \"b\": false, \"str\": \"\", \"by\": \"\", \"color\": \"COLOR_UNSPECIFIED\","
        " \"inners\": [], \"colors\": [], \"blobs\": [], \"floats\": [], \"by_id\": {},"
        " \"by_flag\": {}, \"by_u64\": {}, \"snake_case_name\": \"\"}");
    /* A oneof member at its default value is still set. */
    m.choice_case = PBJSONTEST__ALL_TYPES__CHOICE_C_INT;
    m.c_int = 0;
    expect_json(&m.base, 0, "{\"cInt\": 0}");
    assert_round_trips(&m.base);
    /* -0.0 is not the default. */
    Pbjsontest__AllTypes z = PBJSONTEST__ALL_TYPES__INIT;
    z.db = -0.0;
    expect_json(&z.base, 0, "{\"db\": -0.0}");
    /* null means "not set". */
    Pbjsontest__AllTypes *n = (Pbjsontest__AllTypes *)decode(
        &pbjsontest__all_types__descriptor,
        "{\"i32\": null, \"inner\": null, \"cMsg\": null, \"cInt\": 3}");
    assert_null(n->inner);
    assert_int_equal(n->choice_case, PBJSONTEST__ALL_TYPES__CHOICE_C_INT);
    protobuf_c_message_free_unpacked(&n->base, NULL);
}

static void test_proto2_presence(void **state)
{
    Pbjsontest2__P2 *m = (Pbjsontest2__P2 *)decode(&pbjsontest2__p2__descriptor, "{\"req\": 0}");
    assert_false(m->has_opt_i32);
    assert_false(m->has_opt_by);
    assert_string_equal(m->opt_str, "dflt");
    expect_json(&m->base, 0, "{\"req\": 0}");
    protobuf_c_message_free_unpacked(&m->base, NULL);

    m = (Pbjsontest2__P2 *)decode(
        &pbjsontest2__p2__descriptor,
        "{\"optI32\": 0, \"opt_str\": \"s\", \"optBy\": \"\", \"req\": 1}");
    assert_true(m->has_opt_i32 && m->has_opt_by);
    assert_string_equal(m->opt_str, "s");
    expect_json(&m->base, 0, "{\"optI32\": 0, \"optStr\": \"s\", \"optBy\": \"\", \"req\": 1}");
    assert_round_trips(&m->base);
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void test_oneof_message_member(void **state)
{
    Pbjsontest__AllTypes *m = (Pbjsontest__AllTypes *)decode(&pbjsontest__all_types__descriptor,
                                                             "{\"c_msg\": {\"a\": 4}}");
    assert_int_equal(m->choice_case, PBJSONTEST__ALL_TYPES__CHOICE_C_MSG);
    assert_int_equal(m->c_msg->a, 4);
    expect_json(&m->base, PBJSON_ORIGINAL_NAMES, "{\"c_msg\": {\"a\": 4}}");
    assert_round_trips(&m->base);
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void test_number_forms(void **state)
{
    /* Integral reals and exponents are integers; strings for every width. */
    Pbjsontest__AllTypes *m = (Pbjsontest__AllTypes *)decode(
        &pbjsontest__all_types__descriptor,
        "{\"i32\": 1e3, \"u32\": \"12\", \"i64\": -2.0, \"u64\": 1.8e19,"
        " \"fl\": \"1.5\", \"db\": \"Infinity\", \"sf64\": \"-9223372036854775808\"}");
    assert_int_equal(m->i32, 1000);
    assert_int_equal(m->u32, 12);
    assert_true(m->i64 == -2);
    assert_true(m->u64 == 18000000000000000000ull);
    assert_true(m->fl == 1.5f);
    assert_true(isinf(m->db) && m->db > 0);
    assert_true(m->sf64 == INT64_MIN);
    expect_json(&m->base, PBJSON_INT64_NUMBERS,
                "{\"i32\": 1000, \"u32\": 12, \"i64\": -2, \"u64\": \"18000000000000000000\","
                " \"fl\": 1.5, \"db\": \"Infinity\", \"sf64\": -9223372036854775808}");
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

/* ---------------------------------------------------- service messages */

static const char MODEL_JSON[] =
    "{\"name\": \"mlp\", \"description\": \"two layers\", \"seed\": 1,"
    " \"spec\": {\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]}],"
    "  \"nodes\": [{\"name\": \"fc1\", \"op\": \"dense\", \"inputs\": [\"x\"],"
    "    \"attrs\": {\"in_features\": 4, \"out_features\": 16, \"activation\": \"relu\","
    "                \"rate\": 0.5, \"bias\": true, \"kernel\": [3, 3],"
    "                \"scales\": [1, 2.5], \"names\": [\"a\", \"b\"], \"none\": []}},"
    "   {\"name\": \"fc2\", \"op\": \"dense\", \"inputs\": [\"fc1\"],"
    "    \"attrs\": {\"in_features\": 16, \"out_features\": 2}}],"
    "  \"outputs\": [{\"name\": \"y\", \"source\": \"fc2\"}]}}";

static const Fluxion__V1__AttrValue *attr(const Fluxion__V1__Node *n, const char *key)
{
    for (size_t i = 0; i < n->n_attrs; i++)
        if (!strcmp(n->attrs[i]->key, key))
            return n->attrs[i]->value;
    fail_msg("no attr %s", key);
    return NULL;
}

static void test_model_request(void **state)
{
    Fluxion__V1__CreateModelRequest *r = (Fluxion__V1__CreateModelRequest *)decode(
        &fluxion__v1__create_model_request__descriptor, MODEL_JSON);
    assert_string_equal(r->name, "mlp");
    assert_string_equal(r->description, "two layers");
    assert_true(r->seed == 1);
    const Fluxion__V1__ModelSpec *s = r->spec;
    assert_int_equal(s->n_inputs, 1);
    assert_int_equal(s->inputs[0]->dtype, FLUXION__V1__DATA_TYPE__FP32);
    assert_int_equal(s->inputs[0]->n_shape, 2);
    assert_true(s->inputs[0]->shape[0] == -1 && s->inputs[0]->shape[1] == 4);
    assert_int_equal(s->n_nodes, 2);
    const Fluxion__V1__Node *n = s->nodes[0];
    assert_string_equal(n->op, "dense");
    assert_int_equal(n->n_inputs, 1);
    assert_string_equal(n->inputs[0], "x");
    assert_int_equal(n->n_attrs, 9);
    const Fluxion__V1__AttrValue *a = attr(n, "out_features");
    assert_int_equal(a->value_case, FLUXION__V1__ATTR_VALUE__VALUE_I);
    assert_int_equal(a->i, 16);
    a = attr(n, "activation");
    assert_int_equal(a->value_case, FLUXION__V1__ATTR_VALUE__VALUE_S);
    assert_string_equal(a->s, "relu");
    a = attr(n, "rate");
    assert_int_equal(a->value_case, FLUXION__V1__ATTR_VALUE__VALUE_F);
    assert_true(a->f == 0.5);
    a = attr(n, "bias");
    assert_int_equal(a->value_case, FLUXION__V1__ATTR_VALUE__VALUE_B);
    assert_true(a->b);
    a = attr(n, "kernel");
    assert_int_equal(a->value_case, FLUXION__V1__ATTR_VALUE__VALUE_INTS);
    assert_int_equal(a->ints->n_values, 2);
    assert_int_equal(a->ints->values[1], 3);
    a = attr(n, "scales");
    assert_int_equal(a->value_case, FLUXION__V1__ATTR_VALUE__VALUE_FLOATS);
    assert_int_equal(a->floats->n_values, 2);
    assert_true(a->floats->values[0] == 1.0 && a->floats->values[1] == 2.5);
    a = attr(n, "names");
    assert_int_equal(a->value_case, FLUXION__V1__ATTR_VALUE__VALUE_STRINGS);
    assert_string_equal(a->strings->values[1], "b");
    a = attr(n, "none");
    assert_int_equal(a->value_case, FLUXION__V1__ATTR_VALUE__VALUE_INTS);
    assert_int_equal(a->ints->n_values, 0);
    assert_string_equal(s->outputs[0]->source, "fc2");

    /* Friendly attrs come back as written ([1, 2.5] as floats 1.0, 2.5). */
    expect_json(
        &r->base, PBJSON_ORIGINAL_NAMES | PBJSON_INT64_NUMBERS,
        "{\"name\": \"mlp\", \"description\": \"two layers\", \"seed\": 1,"
        " \"spec\": {\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]}],"
        "  \"nodes\": [{\"name\": \"fc1\", \"op\": \"dense\", \"inputs\": [\"x\"],"
        "    \"attrs\": {\"in_features\": 4, \"out_features\": 16, \"activation\": \"relu\","
        "                \"rate\": 0.5, \"bias\": true, \"kernel\": [3, 3],"
        "                \"scales\": [1.0, 2.5], \"names\": [\"a\", \"b\"], \"none\": []}},"
        "   {\"name\": \"fc2\", \"op\": \"dense\", \"inputs\": [\"fc1\"],"
        "    \"attrs\": {\"in_features\": 16, \"out_features\": 2}}],"
        "  \"outputs\": [{\"name\": \"y\", \"source\": \"fc2\"}]}}");
    assert_round_trips(&r->base);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* protoc's Python json_format.MessageToJson of the same kind of request
 * (canonical AttrValues, 64-bit integers as strings, lowerCamelCase). */
static const char PYTHON_MODEL_JSON[] =
    "{\"name\": \"mlp\", \"spec\": {\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\","
    " \"shape\": [\"-1\", \"4\"]}], \"nodes\": [{\"name\": \"fc1\", \"op\": \"dense\","
    " \"inputs\": [\"x\"], \"attrs\": {\"kernel\": {\"ints\": {\"values\": [\"3\", \"3\"]}},"
    " \"names\": {\"strings\": {\"values\": [\"a\", \"b\"]}}, \"rate\": {\"f\": 0.5},"
    " \"activation\": {\"s\": \"relu\"}, \"scales\": {\"floats\": {\"values\": [0.5, 2.0]}},"
    " \"in_features\": {\"i\": \"4\"}, \"bias\": {\"b\": true}}}], \"outputs\": [{\"name\":"
    " \"y\", \"source\": \"fc1\"}]}, \"weights\": \"AAEC/w==\", \"seed\": \"7\","
    " \"noLoad\": true}";

static const char PYTHON_INFER_JSON[] =
    "{\"modelName\": \"m\", \"modelVersion\": \"2\", \"id\": \"r1\", \"parameters\":"
    " {\"flag\": {\"boolParam\": true}, \"p\": {\"int64Param\": \"-5\"}}, \"inputs\":"
    " [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [\"1\", \"2\"], \"parameters\":"
    " {\"s\": {\"stringParam\": \"hi\"}}, \"contents\": {\"fp32Contents\": [0.5, -1.25]}}],"
    " \"outputs\": [{\"name\": \"y\"}], \"rawInputContents\": [\"AQID\"]}";

static void test_python_json_format(void **state)
{
    Fluxion__V1__CreateModelRequest *r = (Fluxion__V1__CreateModelRequest *)decode(
        &fluxion__v1__create_model_request__descriptor, PYTHON_MODEL_JSON);
    assert_true(r->seed == 7 && r->no_load);
    assert_int_equal(r->weights.len, 4);
    assert_memory_equal(r->weights.data, "\x00\x01\x02\xff", 4);
    const Fluxion__V1__Node *n = r->spec->nodes[0];
    assert_int_equal(attr(n, "in_features")->i, 4);
    assert_int_equal(attr(n, "kernel")->ints->values[0], 3);
    assert_true(attr(n, "scales")->floats->values[1] == 2.0);
    assert_string_equal(attr(n, "activation")->s, "relu");
    /* Our canonical encoding is what Python wrote. */
    expect_json(&r->base, PBJSON_CANONICAL_ATTRS, PYTHON_MODEL_JSON);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    Inference__ModelInferRequest *q = (Inference__ModelInferRequest *)decode(
        &inference__model_infer_request__descriptor, PYTHON_INFER_JSON);
    assert_string_equal(q->model_version, "2");
    assert_int_equal(q->n_parameters, 2);
    assert_string_equal(q->parameters[0]->key, "flag");
    assert_int_equal(q->parameters[0]->value->parameter_choice_case,
                     INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM);
    assert_true(q->parameters[1]->value->int64_param == -5);
    assert_int_equal(q->inputs[0]->contents->n_fp32_contents, 2);
    assert_true(q->inputs[0]->contents->fp32_contents[1] == -1.25f);
    assert_string_equal(q->inputs[0]->parameters[0]->value->string_param, "hi");
    assert_int_equal(q->n_raw_input_contents, 1);
    assert_memory_equal(q->raw_input_contents[0].data, "\x01\x02\x03", 3);
    assert_string_equal(q->outputs[0]->name, "y");
    expect_json(&q->base, 0, PYTHON_INFER_JSON);
    assert_round_trips(&q->base);
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

/* -------------------------------------------------------------- AttrValue */

static void expect_attr_json(const Fluxion__V1__AttrValue *a, const char *friendly,
                             const char *canonical)
{
    expect_json(&a->base, 0, friendly);
    expect_json(&a->base, PBJSON_CANONICAL_ATTRS, canonical);
    assert_round_trips(&a->base);
}

static void test_attr_encode(void **state)
{
    Fluxion__V1__AttrValue a = FLUXION__V1__ATTR_VALUE__INIT;
    expect_attr_json(&a, "{}", "{}");
    a.value_case = FLUXION__V1__ATTR_VALUE__VALUE_I;
    a.i = -3;
    expect_attr_json(&a, "-3", "{\"i\": \"-3\"}");
    a.value_case = FLUXION__V1__ATTR_VALUE__VALUE_F;
    a.f = 2.0; /* must stay a float: written as 2.0 */
    expect_attr_json(&a, "2.0", "{\"f\": 2.0}");
    a.f = NAN;
    expect_attr_json(&a, "{\"f\": \"NaN\"}", "{\"f\": \"NaN\"}");
    a.value_case = FLUXION__V1__ATTR_VALUE__VALUE_S;
    a.s = "same";
    expect_attr_json(&a, "\"same\"", "{\"s\": \"same\"}");
    a.value_case = FLUXION__V1__ATTR_VALUE__VALUE_B;
    a.b = 0;
    expect_attr_json(&a, "false", "{\"b\": false}");

    int64_t iv[] = {1, -2};
    Fluxion__V1__IntList il = FLUXION__V1__INT_LIST__INIT;
    il.n_values = 2;
    il.values = iv;
    a.value_case = FLUXION__V1__ATTR_VALUE__VALUE_INTS;
    a.ints = &il;
    expect_attr_json(&a, "[1, -2]", "{\"ints\": {\"values\": [\"1\", \"-2\"]}}");
    il.n_values = 0;
    expect_attr_json(&a, "[]", "{\"ints\": {}}");

    double fv[] = {1.0, 0.5};
    Fluxion__V1__FloatList fl = FLUXION__V1__FLOAT_LIST__INIT;
    fl.n_values = 2;
    fl.values = fv;
    a.value_case = FLUXION__V1__ATTR_VALUE__VALUE_FLOATS;
    a.floats = &fl;
    expect_attr_json(&a, "[1.0, 0.5]", "{\"floats\": {\"values\": [1.0, 0.5]}}");
    fl.n_values = 0; /* [] would read back as ints */
    expect_attr_json(&a, "{\"floats\": {}}", "{\"floats\": {}}");
    fv[1] = INFINITY;
    fl.n_values = 2;
    expect_attr_json(&a, "{\"floats\": {\"values\": [1.0, \"Infinity\"]}}",
                     "{\"floats\": {\"values\": [1.0, \"Infinity\"]}}");

    char *sv[] = {"p", "q"};
    Fluxion__V1__StringList sl = FLUXION__V1__STRING_LIST__INIT;
    sl.n_values = 2;
    sl.values = sv;
    a.value_case = FLUXION__V1__ATTR_VALUE__VALUE_STRINGS;
    a.strings = &sl;
    expect_attr_json(&a, "[\"p\", \"q\"]", "{\"strings\": {\"values\": [\"p\", \"q\"]}}");
    sl.n_values = 0;
    expect_attr_json(&a, "{\"strings\": {}}", "{\"strings\": {}}");
}

static void test_attr_decode_forms(void **state)
{
    struct {
        const char *json;
        int value_case;
    } cases[] = {
        {"7", FLUXION__V1__ATTR_VALUE__VALUE_I},
        {"7.0", FLUXION__V1__ATTR_VALUE__VALUE_F},
        {"-1e-3", FLUXION__V1__ATTR_VALUE__VALUE_F},
        {"\"\"", FLUXION__V1__ATTR_VALUE__VALUE_S},
        {"true", FLUXION__V1__ATTR_VALUE__VALUE_B},
        {"[0]", FLUXION__V1__ATTR_VALUE__VALUE_INTS},
        {"[1, 2, 3.5]", FLUXION__V1__ATTR_VALUE__VALUE_FLOATS},
        {"[\"x\"]", FLUXION__V1__ATTR_VALUE__VALUE_STRINGS},
        {"{\"i\": \"9\"}", FLUXION__V1__ATTR_VALUE__VALUE_I},
        {"{\"ints\": {\"values\": [1]}}", FLUXION__V1__ATTR_VALUE__VALUE_INTS},
        {"{}", FLUXION__V1__ATTR_VALUE__VALUE__NOT_SET},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Fluxion__V1__AttrValue *a =
            (Fluxion__V1__AttrValue *)decode(&fluxion__v1__attr_value__descriptor, cases[i].json);
        if ((int)a->value_case != cases[i].value_case)
            fail_msg("%s: case %d, expected %d", cases[i].json, (int)a->value_case,
                     cases[i].value_case);
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
    Fluxion__V1__AttrValue *a =
        (Fluxion__V1__AttrValue *)decode(&fluxion__v1__attr_value__descriptor, "[1, 2, 3.5]");
    assert_true(a->floats->values[0] == 1 && a->floats->values[2] == 3.5);
    protobuf_c_message_free_unpacked(&a->base, NULL);
}

/* ----------------------------------------------------------------- errors */

static void test_errors_name_path(void **state)
{
    const ProtobufCMessageDescriptor *cm = &fluxion__v1__create_model_request__descriptor;
    const ProtobufCMessageDescriptor *at = &pbjsontest__all_types__descriptor;
    expect_error(cm, "[]",
                 "top level: expected an object (fluxion.v1.CreateModelRequest), "
                 "got an array");
    expect_error(cm, "{\"spec\": {\"nodes\": [{\"name\": \"a\"}, {\"atrs\": {}}]}}",
                 "spec.nodes[1].atrs: unknown field of fluxion.v1.Node");
    expect_error(cm, "{\"name\": 5}", "name: expected a string, got an integer");
    expect_error(cm, "{\"name\": \"a\\u0000b\"}", "name: string contains a NUL character");
    expect_error(cm,
                 "{\"spec\": {\"nodes\": [{}, {}, {\"attrs\": {\"units\": null,"
                 " \"k\": [1, \"a\"]}}]}}",
                 "spec.nodes[2].attrs.k[1]: expected a number like the elements before it, "
                 "got a string");
    expect_error(cm, "{\"spec\": {\"nodes\": [{\"attrs\": {\"k\": [\"a\", 1]}}]}}",
                 "spec.nodes[0].attrs.k[1]: expected a string like the elements before it, "
                 "got an integer");
    expect_error(cm, "{\"spec\": {\"nodes\": [{\"attrs\": {\"k\": [true]}}]}}",
                 "spec.nodes[0].attrs.k[0]: expected a number or a string, got a bool");
    expect_error(cm, "{\"spec\": {\"nodes\": [{\"attrs\": {\"units\": {\"q\": 1}}}]}}",
                 "spec.nodes[0].attrs.units.q: unknown field of fluxion.v1.AttrValue");
    expect_error(cm,
                 "{\"spec\": {\"nodes\": [{\"attrs\": {\"units\": {\"i\": 1, \"s\": \"x\"}}}]}}",
                 "spec.nodes[0].attrs.units.s: only one of a oneof may be set, and \"i\" is "
                 "already");
    expect_error(cm, "{\"spec\": {\"nodes\": [{\"attrs\": []}]}}",
                 "spec.nodes[0].attrs: expected an object (a map), got an array");
    expect_error(cm, "{\"spec\": {\"inputs\": {}}}",
                 "spec.inputs: expected an array, got an object");
    expect_error(cm, "{\"spec\": {\"nodes\": [null]}}",
                 "spec.nodes[0]: null is not allowed in an array");
    expect_error(cm, "{\"spec\": {\"inputs\": [{\"shape\": [1, 2.5]}]}}",
                 "spec.inputs[0].shape[1]: expected an integer, got 2.5");
    expect_error(cm, "{\"spec\": {\"inputs\": [{\"shape\": [\"12a\"]}]}}",
                 "spec.inputs[0].shape[0]: expected an integer, got \"12a\"");
    expect_error(cm, "{\"spec\": {\"inputs\": [{\"shape\": [\"99999999999999999999\"]}]}}",
                 "spec.inputs[0].shape[0]: expected an integer, got \"99999999999999999999\"");
    expect_error(cm, "{\"spec\": {\"inputs\": [{\"dtype\": \"FP16\"}]}}",
                 "spec.inputs[0].dtype: unknown fluxion.v1.DataType \"FP16\" (expected one of "
                 "DATA_TYPE_UNSPECIFIED, FP32, INT32, INT64)");
    expect_error(cm, "{\"spec\": {\"inputs\": [{\"dtype\": true}]}}",
                 "spec.inputs[0].dtype: expected a fluxion.v1.DataType name, got a bool");
    expect_error(cm, "{\"seed\": -1}", "seed: -1 is out of range 0..18446744073709551615");
    expect_error(cm, "{\"seed\": \"-\"}", "seed: expected an integer, got \"-\"");
    expect_error(cm, "{\"seed\": \" 1\"}", "seed: expected an integer, got \" 1\"");
    expect_error(cm, "{\"seed\": {}}", "seed: expected an integer, got an object");
    expect_error(cm, "{\"no_load\": \"yes\"}", "no_load: expected true or false, got a string");
    expect_error(cm, "{\"weights\": \"!!!!\"}", "weights: invalid base64");
    expect_error(cm, "{\"weights\": 1}", "weights: expected a base64 string, got an integer");
    expect_error(cm, "{\"no_load\": true, \"noLoad\": false}",
                 "noLoad: field given twice (also as \"no_load\")");
    expect_error(at, "{\"i32\": 2147483648}",
                 "i32: 2147483648 is out of range -2147483648..2147483647");
    expect_error(at, "{\"i32\": -2147483649}",
                 "i32: -2147483649 is out of range -2147483648..2147483647");
    expect_error(at, "{\"u32\": 4294967296}", "u32: 4294967296 is out of range 0..4294967295");
    expect_error(at, "{\"fl\": 1e39}", "fl: 1e+39 is out of range for a float");
    expect_error(at, "{\"db\": \"1e999\"}", "db: expected a number, got \"1e999\"");
    expect_error(at, "{\"db\": [1]}", "db: expected a number, got an array");
    expect_error(at, "{\"inner\": 3}",
                 "inner: expected an object (pbjsontest.Inner), got an integer");
    expect_error(at, "{\"inners\": [{\"a\": 1}, {\"b\": 1}]}",
                 "inners[1].b: unknown field of pbjsontest.Inner");
    expect_error(at, "{\"byId\": {\"x\": \"y\"}}", "byId.x: expected an integer, got \"x\"");
    expect_error(at, "{\"byId\": {\"1\": 2}}", "byId.1: expected a string, got an integer");
    expect_error(at, "{\"by_flag\": {\"yes\": {}}}",
                 "by_flag.yes: map key must be \"true\" or \"false\"");
    expect_error(at, "{\"cInt\": 1, \"c_str\": \"x\"}",
                 "c_str: only one of a oneof may be set, and \"c_int\" is already");
    expect_error(at, "{\"colors\": [\"RED\", \"BLUE\"]}",
                 "colors[1]: unknown pbjsontest.Color \"BLUE\" (expected one of COLOR_UNSPECIFIED, "
                 "RED, GREEN)");
    expect_error(at, "{\"colors\": [4294967296]}",
                 "colors[0]: 4294967296 is out of range -2147483648..2147483647");
    expect_error(at, "{\"blobs\": [\"AAA=\", \"A\"]}", "blobs[1]: invalid base64");

    char err[64];
    assert_null(pbjson_decode(cm, NULL, err, sizeof err));
    assert_string_equal(err, "top level: no JSON value");
}

static void test_error_truncation(void **state)
{
    /* A path longer than the path buffer (300 levels) is cut short. */
    static char text[8192];
    text[0] = '\0';
    for (int i = 0; i < 300; i++)
        strcat(text, "{\"child\": ");
    strcat(text, "{\"zz\": 1}");
    for (int i = 0; i < 300; i++)
        strcat(text, "}");
    char err[2048];
    json_t *j = parse(text);
    assert_null(pbjson_decode(&pbjsontest__all_types__descriptor, j, err, sizeof err));
    assert_memory_equal(err, "child.child.child.", 18);
    assert_true(strlen(err) < 600);
    assert_non_null(strstr(err, ": unknown field of pbjsontest.AllTypes"));
    assert_null(pbjson_decode(&pbjsontest__all_types__descriptor, j, NULL, 0));
    json_decref(j);

    /* A message longer than err: cut at errlen - 1. */
    char small[32];
    j = parse("{\"inners\": [{\"s\": 1}]}");
    assert_null(pbjson_decode(&pbjsontest__all_types__descriptor, j, small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, "inners[0].s: expected a string,", sizeof small - 1);
    json_decref(j);
}

static void test_encode_invalid_utf8(void **state)
{
    char *inputs[] = {"x", "bad\xff"};
    Fluxion__V1__Node node = FLUXION__V1__NODE__INIT;
    node.n_inputs = 2;
    node.inputs = inputs;
    Fluxion__V1__Node *nodes[] = {&node};
    Fluxion__V1__ModelSpec spec = FLUXION__V1__MODEL_SPEC__INIT;
    spec.n_nodes = 1;
    spec.nodes = nodes;
    char err[128];
    assert_null(pbjson_encode(&spec.base, 0, err, sizeof err));
    assert_string_equal(err, "nodes[0].inputs[1]: string is not valid UTF-8");

    /* In a friendly AttrValue, reported at the canonical member. */
    Fluxion__V1__AttrValue a = FLUXION__V1__ATTR_VALUE__INIT;
    a.value_case = FLUXION__V1__ATTR_VALUE__VALUE_S;
    a.s = "\xc3";
    assert_null(pbjson_encode(&a.base, 0, err, sizeof err));
    assert_string_equal(err, "s: string is not valid UTF-8");
}

/* ----------------------------------------------------------------- helpers */

static void test_json_name(void **state)
{
    char buf[32];
    assert_string_equal(pbjson_json_name("no_load", buf, sizeof buf), "noLoad");
    assert_string_equal(pbjson_json_name("raw_input_contents", buf, sizeof buf),
                        "rawInputContents");
    assert_string_equal(pbjson_json_name("i", buf, sizeof buf), "i");
    assert_string_equal(pbjson_json_name("by_u64", buf, sizeof buf), "byU64");
    assert_string_equal(pbjson_json_name("a__b_", buf, sizeof buf), "aB");
    assert_string_equal(pbjson_json_name("long_name", buf, 5), "long");
}

static void test_base64(void **state)
{
    /* RFC 4648 section 10 vectors. */
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *e = pbjson_base64_encode(plain[i], strlen(plain[i]));
        assert_string_equal(e, coded[i]);
        free(e);
        unsigned char *d;
        size_t n;
        assert_int_equal(pbjson_base64_decode(coded[i], strlen(coded[i]), &d, &n), 0);
        assert_int_equal(n, strlen(plain[i]));
        if (n)
            assert_memory_equal(d, plain[i], n);
        free(d);
        /* Unpadded reads the same. */
        size_t len = strlen(coded[i]);
        while (len && coded[i][len - 1] == '=')
            len--;
        assert_int_equal(pbjson_base64_decode(coded[i], len, &d, &n), 0);
        assert_int_equal(n, strlen(plain[i]));
        free(d);
    }
    const char *bad[] = {"Z", "Zg=", "Zg===", "Z=g=", "Zm9v\n", "Zm 9", "Zm9vY", "=", "Zm9v===="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *d = (unsigned char *)"not null";
        size_t n = 99;
        if (pbjson_base64_decode(bad[i], strlen(bad[i]), &d, &n) == 0)
            fail_msg("\"%s\" decoded", bad[i]);
        assert_null(d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_types_decode),
        cmocka_unit_test(test_all_types_encode),
        cmocka_unit_test(test_defaults_and_presence),
        cmocka_unit_test(test_proto2_presence),
        cmocka_unit_test(test_oneof_message_member),
        cmocka_unit_test(test_number_forms),
        cmocka_unit_test(test_model_request),
        cmocka_unit_test(test_python_json_format),
        cmocka_unit_test(test_attr_encode),
        cmocka_unit_test(test_attr_decode_forms),
        cmocka_unit_test(test_errors_name_path),
        cmocka_unit_test(test_error_truncation),
        cmocka_unit_test(test_encode_invalid_utf8),
        cmocka_unit_test(test_json_name),
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
