/*
 * test_wirecheck.c - the string fields of incoming requests, checked on the
 * wire (server/rpc/wirecheck.c, server/base/text.c; issue 11, defects 4 and
 * 5): UTF-8 validity against an independent decoder, every kind of bad
 * string caught with its field's path (nested, repeated, map, oneof and
 * recursive fields), the limits table, malformed wire data left to
 * protobuf-c, and random mutations of valid messages never reading out of
 * bounds (run it under ASan) nor letting a bad string through.
 *
 * Messages are written as JSON (pbjson, the CLI's codec), packed, and then a
 * marker "~~~~" in a string is replaced on the wire by bad bytes of the same
 * length: a valid message but for that one string.
 *
 * FX_WIRECHECK_FUZZ_ITERS sets the mutations per seed message (default 4000).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pbjson.h"
#include "base/status.h"
#include "base/text.h"
#include "rpc/wirecheck.h"
#include "fluxion/v1/dataset.pb-c.h"
#include "fluxion/v1/model.pb-c.h"
#include "fluxion/v1/training.pb-c.h"
#include "inference/grpc_service.pb-c.h"
#include "pbjson_test.pb-c.h"

#define MARK "~~~~"

typedef struct {
    uint8_t *data;
    size_t len;
} wire;

/* desc's JSON form packed, with every MARK replaced by the 4 bytes at bad
 * (when not NULL): the length prefixes stay right. */
static wire packed(const ProtobufCMessageDescriptor *desc, const char *json, const char *bad)
{
    json_error_t je;
    json_t *j = json_loads(json, JSON_ALLOW_NUL, &je);
    if (!j)
        fail_msg("bad JSON in the test: %s: %s", je.text, json);
    char err[512] = "";
    ProtobufCMessage *m = pbjson_decode(desc, j, err, sizeof err);
    json_decref(j);
    if (!m)
        fail_msg("pbjson_decode: %s: %s", err, json);
    wire w = { .len = protobuf_c_message_get_packed_size(m) };
    w.data = malloc(w.len ? w.len : 1);
    assert_non_null(w.data);
    protobuf_c_message_pack(m, w.data);
    protobuf_c_message_free_unpacked(m, NULL);
    int found = 0;
    for (size_t i = 0; bad && i + 4 <= w.len; i++)
        if (memcmp(w.data + i, MARK, 4) == 0) {
            memcpy(w.data + i, bad, 4);
            found++;
        }
    if (bad)
        assert_true(found > 0);
    return w;
}

static int check(const ProtobufCMessageDescriptor *desc, wire w, bool *malformed, char *err,
                 size_t errlen)
{
    err[0] = 0;
    return fxr_wirecheck(desc, w.data, w.len, malformed, err, errlen);
}

/* ------------------------------------------------------------- UTF-8 */

/* An independent reading of RFC 3629: decode by the bit patterns, then
 * refuse overlong forms by the code point's minimal length, surrogates and
 * code points above U+10FFFF. Returns the sequence length, 0 if invalid. */
static size_t ref_utf8(const uint8_t *s, size_t n)
{
    uint32_t cp;
    size_t len;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xE0) == 0xC0)
        len = 2, cp = s[0] & 0x1F;
    else if ((s[0] & 0xF0) == 0xE0)
        len = 3, cp = s[0] & 0x0F;
    else if ((s[0] & 0xF8) == 0xF0)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    size_t minimal = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (minimal != len || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return 0;
    return len;
}

static size_t ref_invalid_at(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = ref_utf8(s + i, n - i);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

/* Every string of 1 or 2 bytes, every 3-byte string that does not start
 * with ASCII (8.4 M), and random 4- to 8-byte strings of the interesting
 * bytes agree with the reference. */
static void test_utf8_against_reference(void **state)
{
    (void)state;
    uint8_t b[8];
    for (uint32_t v = 0; v < (1u << 16); v++) {
        b[0] = (uint8_t)(v >> 8), b[1] = (uint8_t)v;
        for (size_t n = 1; n <= 2; n++)
            if (fxu_utf8_invalid_at(b, n) != ref_invalid_at(b, n))
                fail_msg("%02x %02x (%zu bytes): %zu, the reference says %zu", b[0], b[1], n,
                         fxu_utf8_invalid_at(b, n), ref_invalid_at(b, n));
    }
    for (uint32_t v = 0x800000; v < (1u << 24); v++) {
        b[0] = (uint8_t)(v >> 16), b[1] = (uint8_t)(v >> 8), b[2] = (uint8_t)v;
        if (fxu_utf8_invalid_at(b, 3) != ref_invalid_at(b, 3))
            fail_msg("%02x %02x %02x: %zu, the reference says %zu", b[0], b[1], b[2],
                     fxu_utf8_invalid_at(b, 3), ref_invalid_at(b, 3));
    }
    static const uint8_t pick[] = { 0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0,
                                    0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1,
                                    0xF3, 0xF4, 0xF5, 0xF8, 0xFE, 0xFF };
    uint64_t x = 88172645463325252ull;
    for (int it = 0; it < 500000; it++) {
        size_t n = 4 + it % 5;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            b[i] = pick[x % sizeof pick];
        }
        if (fxu_utf8_invalid_at(b, n) != ref_invalid_at(b, n))
            fail_msg("%zu bytes from %02x %02x %02x %02x: %zu, the reference says %zu", n, b[0],
                     b[1], b[2], b[3], fxu_utf8_invalid_at(b, n), ref_invalid_at(b, n));
    }
    /* every code point's encoding is valid, and the boundaries by hand */
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        static const uint8_t lead[] = { 0, 0, 0xC0, 0xE0, 0xF0 };
        for (size_t i = n - 1; i > 0; i--)
            b[i] = 0x80 | ((cp >> (6 * (n - 1 - i))) & 0x3F);
        b[0] = n == 1 ? (uint8_t)cp : (uint8_t)(lead[n] | (cp >> (6 * (n - 1))));
        if (fxu_utf8_invalid_at(b, n) != n)
            fail_msg("U+%04X is refused", cp);
    }
    static const struct {
        const char *s;
        size_t at;
    } cases[] = {
        { "\xC0\xAF", 0 },         { "\xC1\xBF", 0 },     { "\xE0\x9F\xBF", 0 },
        { "\xF0\x8F\xBF\xBF", 0 }, { "\xED\xA0\x80", 0 }, { "\xED\xBF\xBF", 0 },
        { "\xF4\x90\x80\x80", 0 }, { "\xF5\x80\x80\x80", 0 }, { "ab\xE2\x82", 2 },
        { "a\x80", 1 },            { "\xFF", 0 },         { "\xED\x9F\xBF\xEE\x80\x80", 6 },
        { "\xF4\x8F\xBF\xBF", 4 }, { "\xC2\x80\xDF\xBF", 4 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(fxu_utf8_invalid_at(cases[i].s, strlen(cases[i].s)), cases[i].at);
}

static void test_text_check_messages(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(fxu_text_check("f", "h\xC3\xA9llo", 6, 6, err, sizeof err), 0);
    assert_int_equal(fxu_text_check("f", "", 0, 1, err, sizeof err), 0);
    assert_int_equal(fxu_text_check("desc", "abcdefg", 7, 6, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "desc: 7 bytes, the limit is 6");
    assert_int_equal(fxu_text_check("a.b[1]", "ab\0c", 4, 0, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "a.b[1]: contains a NUL byte at byte 2");
    /* the first fault wins: NUL before bad UTF-8, and bad UTF-8 before NUL */
    assert_int_equal(fxu_text_check("x", "a\0\xFF", 3, 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "x: contains a NUL byte at byte 1");
    assert_int_equal(fxu_text_check("x", "a\xFF\0", 3, 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "x: invalid UTF-8 at byte 1");
    /* no err buffer: just the code */
    assert_int_equal(fxu_text_check("x", "\xFF", 1, 0, NULL, 0), FXS_INVALID_ARGUMENT);
}

/* ------------------------------------------------- paths and kinds */

static const char *MODEL_JSON =
    "{\"name\": \"%s\", \"description\": \"%s\", \"weights\": \"/w==\", \"spec\": {"
    " \"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]},"
    "              {\"name\": \"%s\", \"shape\": [3]}],"
    " \"nodes\": [{\"name\": \"fc\", \"op\": \"dense\", \"inputs\": [\"x\"],"
    "              \"attrs\": {\"units\": {\"i\": 8}, \"%s\": {\"s\": \"relu\"}}},"
    "             {\"name\": \"cat\", \"op\": \"concat\", \"inputs\": [\"fc\", \"%s\", \"x:1\"],"
    "              \"attrs\": {\"names\": {\"strings\": {\"values\": [\"a\", \"%s\"]}},"
    "                          \"act\": {\"s\": \"%s\"}}}],"
    " \"outputs\": [{\"name\": \"y\", \"source\": \"%s\"}]}}";

/* MODEL_JSON with MARK in slot k (0..7) and plain text elsewhere. */
static wire model_with_mark(int k, const char *bad)
{
    const char *v[8] = { "m", "desc", "x2", "activation", "fc", "b", "tanh", "cat" };
    v[k] = k == 3 || k == 2 ? "k" MARK : MARK;
    char json[2048];
    snprintf(json, sizeof json, MODEL_JSON, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
    return packed(&fluxion__v1__create_model_request__descriptor, json, bad);
}

static void test_valid_messages_pass(void **state)
{
    (void)state;
    char err[1024];
    bool malformed = true;
    /* bytes fields may hold anything: weights "/w==" is 0xFF */
    wire w = model_with_mark(1, NULL);
    assert_int_equal(check(&fluxion__v1__create_model_request__descriptor, w, &malformed, err,
                           sizeof err), 0);
    assert_false(malformed);
    assert_string_equal(err, "");
    free(w.data);
    w = packed(&pbjsontest__all_types__descriptor,
               "{\"i32\": -1, \"i64\": \"-5\", \"u32\": 7, \"u64\": \"18446744073709551615\","
               " \"s32\": -3, \"s64\": \"-9\", \"f32\": 1, \"f64\": \"2\", \"sf32\": -1,"
               " \"sf64\": \"-2\", \"fl\": 1.5, \"db\": 2.5, \"b\": true,"
               " \"str\": \"h\\u00e9llo \\ud834\\udd1e\", \"by\": \"AP8A\", \"color\": \"RED\","
               " \"inner\": {\"a\": 1, \"s\": \"\\u20ac\"}, \"inners\": [{\"s\": \"a\"}, {}],"
               " \"colors\": [\"RED\", \"GREEN\"], \"blobs\": [\"/w==\", \"\"],"
               " \"floats\": [1, 2, 3], \"byId\": {\"1\": \"one\", \"-2\": \"\"},"
               " \"byFlag\": {\"true\": {\"s\": \"t\"}}, \"byU64\": {\"5\": 6},"
               " \"cStr\": \"choice\", \"snakeCaseName\": \"s\","
               " \"child\": {\"child\": {\"str\": \"deep\", \"cMsg\": {\"s\": \"m\"}}}}",
               NULL);
    assert_int_equal(check(&pbjsontest__all_types__descriptor, w, &malformed, err, sizeof err), 0);
    assert_false(malformed);
    free(w.data);
    /* the empty message */
    assert_int_equal(fxr_wirecheck(&pbjsontest__all_types__descriptor, "", 0, &malformed, err,
                                   sizeof err), 0);
    assert_false(malformed);
}

/* Each slot of MODEL_JSON, refused with its path; each kind of bad bytes. */
static void test_paths(void **state)
{
    (void)state;
    static const char *const paths[8] = {
        "name", "description", "spec.inputs[1].name",
        "spec.nodes[0].attrs[1].key", /* a bad key cannot name the entry */
        "spec.nodes[1].inputs[1]", "spec.nodes[1].attrs[\"names\"].strings.values[1]",
        "spec.nodes[1].attrs[\"act\"].s", "spec.outputs[0].source",
    };
    char err[1024], want[1024];
    for (int k = 0; k < 8; k++) {
        bool malformed = true;
        wire w = model_with_mark(k, "a\xC0\xAF!");
        size_t at = (k == 2 || k == 3) ? 2 : 1; /* "k" MARK: the bad byte is at 2 */
        assert_int_equal(check(&fluxion__v1__create_model_request__descriptor, w, &malformed,
                               err, sizeof err), FXS_INVALID_ARGUMENT);
        assert_false(malformed);
        snprintf(want, sizeof want, "%s: invalid UTF-8 at byte %zu", paths[k], at);
        assert_string_equal(err, want);
        free(w.data);
    }
    /* the map entry's index counts entries on the wire, whatever the key */
    static const struct {
        const char *bad, *why;
    } kinds[] = {
        { "\xC0\xAF!!", "invalid UTF-8 at byte 0" },  /* overlong '/' */
        { "!\xED\xA0\x80", "invalid UTF-8 at byte 1" }, /* surrogate */
        { "\xF4\x90\x80\x80", "invalid UTF-8 at byte 0" }, /* above U+10FFFF */
        { "\xF5\x80\x80\x80", "invalid UTF-8 at byte 0" },
        { "!!\x80!", "invalid UTF-8 at byte 2" },       /* lone continuation */
        { "!!!\xE2", "invalid UTF-8 at byte 3" },       /* cut off by the field's end */
        { "\xFE\xFF!!", "invalid UTF-8 at byte 0" },
        { "!!\0!", "contains a NUL byte at byte 2" },
        { "\xC3\xA9\xC3\xA9", NULL },                   /* valid: two e-acute */
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        wire w = model_with_mark(1, kinds[i].bad);
        int rc = check(&fluxion__v1__create_model_request__descriptor, w, NULL, err, sizeof err);
        if (!kinds[i].why) {
            assert_int_equal(rc, 0);
        } else {
            snprintf(want, sizeof want, "description: %s", kinds[i].why);
            assert_int_equal(rc, FXS_INVALID_ARGUMENT);
            assert_string_equal(err, want);
        }
        free(w.data);
    }
}

/* Oneofs, maps with non-string keys, recursion, repeated messages. */
static void test_paths_all_types(void **state)
{
    (void)state;
    static const struct {
        const char *json, *path;
    } cases[] = {
        { "{\"str\": \"~~~~\"}", "str" },
        { "{\"inner\": {\"s\": \"~~~~\"}}", "inner.s" },
        { "{\"inners\": [{}, {\"s\": \"x\"}, {\"s\": \"~~~~\"}]}", "inners[2].s" },
        { "{\"byId\": {\"1\": \"a\", \"7\": \"~~~~\"}}", "by_id[1].value" },
        { "{\"byFlag\": {\"false\": {\"s\": \"~~~~\"}}}", "by_flag[0].value.s" },
        { "{\"cStr\": \"~~~~\"}", "c_str" },
        { "{\"cMsg\": {\"s\": \"~~~~\"}}", "c_msg.s" },
        { "{\"child\": {\"inners\": [{}], \"child\": {\"inners\": [{}, {\"s\": \"~~~~\"}]}}}",
          "child.child.inners[1].s" },
        { "{\"snakeCaseName\": \"~~~~\"}", "snake_case_name" },
    };
    char err[1024], want[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wire w = packed(&pbjsontest__all_types__descriptor, cases[i].json, "\xFF!!!");
        assert_int_equal(check(&pbjsontest__all_types__descriptor, w, NULL, err, sizeof err),
                         FXS_INVALID_ARGUMENT);
        snprintf(want, sizeof want, "%s: invalid UTF-8 at byte 0", cases[i].path);
        assert_string_equal(err, want);
        free(w.data);
    }
    /* the open inference protocol: maps of oneofs, by their string keys */
    wire w = packed(&inference__model_infer_request__descriptor,
                    "{\"modelName\": \"m\", \"parameters\": {\"p\": {\"stringParam\": \"ok\"}},"
                    " \"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [\"1\"]},"
                    "  {\"name\": \"y\", \"parameters\": {\"q\": {\"int64Param\": \"1\"},"
                    "   \"r\": {\"stringParam\": \"~~~~\"}}}]}",
                    "!\xFF!!");
    assert_int_equal(check(&inference__model_infer_request__descriptor, w, NULL, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "inputs[1].parameters[\"r\"].string_param: invalid UTF-8 at byte 1");
    free(w.data);
    /* a training job and a dataset upload */
    w = packed(&fluxion__v1__submit_job_request__descriptor,
               "{\"spec\": {\"model\": \"m\", \"feeds\": [{\"input\": \"x\", \"tensor\": \"t~~~~\"}],"
               " \"metrics\": [\"accuracy\"], \"description\": \"d\"}}",
               "\0!!!");
    assert_int_equal(check(&fluxion__v1__submit_job_request__descriptor, w, NULL, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "spec.feeds[0].tensor: contains a NUL byte at byte 1");
    free(w.data);
    w = packed(&fluxion__v1__upload_dataset_chunk__descriptor,
               "{\"name\": \"d\", \"tensors\": [{\"name\": \"a\", \"shape\": [\"1\"], \"data\": \"/w==\"},"
               " {\"name\": \"~~~~\", \"data\": \"AA==\"}]}",
               "\xE2\x82\xAC\xFF");
    assert_int_equal(check(&fluxion__v1__upload_dataset_chunk__descriptor, w, NULL, err,
                           sizeof err), FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "tensors[1].name: invalid UTF-8 at byte 3");
    free(w.data);
}

static void fill(char *s, char c, size_t n)
{
    memset(s, c, n);
    s[n] = 0;
}

static void test_limits(void **state)
{
    (void)state;
    assert_int_equal(fxr_string_limit("description"), 4096);
    assert_int_equal(fxr_string_limit("name"), 256);
    assert_int_equal(fxr_string_limit("model_name"), 256);
    assert_int_equal(fxr_string_limit("repository_name"), 256);
    assert_int_equal(fxr_string_limit("_name"), FXR_STRING_LIMIT_DEFAULT);
    assert_int_equal(fxr_string_limit("names"), FXR_STRING_LIMIT_DEFAULT);
    assert_int_equal(fxr_string_limit("source"), 272);
    assert_int_equal(fxr_string_limit("s"), 64 * 1024);
    static const struct {
        const ProtobufCMessageDescriptor *desc;
        const char *fmt, *path;
        size_t limit;
    } cases[] = {
        { &fluxion__v1__create_model_request__descriptor, "{\"description\": \"%s\"}",
          "description", 4096 },
        { &fluxion__v1__create_model_request__descriptor, "{\"name\": \"%s\"}", "name", 256 },
        { &fluxion__v1__submit_job_request__descriptor, "{\"spec\": {\"description\": \"%s\"}}",
          "spec.description", 4096 },
        { &fluxion__v1__weights_chunk__descriptor, "{\"source\": \"%s\"}", "source", 272 },
        { &inference__model_infer_request__descriptor, "{\"modelName\": \"%s\"}", "model_name",
          256 },
        { &fluxion__v1__create_model_request__descriptor,
          "{\"spec\": {\"nodes\": [{\"attrs\": {\"a\": {\"s\": \"%s\"}}}]}}",
          "spec.nodes[0].attrs[\"a\"].s", 65536 },
    };
    char *text = malloc(70000), *json = malloc(70100), err[1024], want[1024];
    assert_non_null(text);
    assert_non_null(json);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t n = cases[i].limit; n <= cases[i].limit + 1; n++) {
            fill(text, 'x', n);
            snprintf(json, 70100, cases[i].fmt, text);
            wire w = packed(cases[i].desc, json, NULL);
            int rc = check(cases[i].desc, w, NULL, err, sizeof err);
            if (n == cases[i].limit) {
                assert_int_equal(rc, 0);
            } else {
                snprintf(want, sizeof want, "%s: %zu bytes, the limit is %zu", cases[i].path, n,
                         cases[i].limit);
                assert_int_equal(rc, FXS_INVALID_ARGUMENT);
                assert_string_equal(err, want);
            }
            free(w.data);
        }
    }
    free(text);
    free(json);
}

/* ------------------------------------------------ the wire itself */

static void expect_malformed(const ProtobufCMessageDescriptor *d, const uint8_t *b, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1); /* exactly n bytes: ASan sees a read past them */
    assert_non_null(copy);
    memcpy(copy, b, n);
    bool malformed = false;
    char err[256];
    assert_int_equal(fxr_wirecheck(d, copy, n, &malformed, err, sizeof err), 0);
    assert_true(malformed);
    assert_null(protobuf_c_message_unpack(d, NULL, n, copy));
    free(copy);
}

static void expect_passes(const ProtobufCMessageDescriptor *d, const uint8_t *b, size_t n)
{
    bool malformed = true;
    char err[256];
    assert_int_equal(fxr_wirecheck(d, b, n, &malformed, err, sizeof err), 0);
    assert_false(malformed);
}

static void test_wire_forms(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &pbjsontest__all_types__descriptor;
    /* str is field 14 (tag 0x72 as a string); child 31 (0xFA 0x01) */
    expect_malformed(d, (const uint8_t[]){ 0x72, 0x05, 'a', 'b' }, 4);       /* past the end */
    expect_malformed(d, (const uint8_t[]){ 0x72 }, 1);                       /* no length */
    expect_malformed(d, (const uint8_t[]){ 0x72, 0x80, 0x80 }, 3);           /* cut length */
    expect_malformed(d, (const uint8_t[]){ 0x72, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 }, 7);
    expect_malformed(d, (const uint8_t[]){ 0x72, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F }, 6); /* > 2 GiB */
    expect_malformed(d, (const uint8_t[]){ 0x08, 0x80 }, 2);                 /* cut varint */
    expect_malformed(d, (const uint8_t[]){ 0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                           0x80, 0x80, 0x01 }, 12);          /* 11-byte varint */
    expect_malformed(d, (const uint8_t[]){ 0x41, 1, 2, 3 }, 4);              /* fixed64, 3 bytes */
    expect_malformed(d, (const uint8_t[]){ 0x3D, 1, 2 }, 3);                 /* fixed32, 2 bytes */
    expect_malformed(d, (const uint8_t[]){ 0x0B, 0x0C }, 2);                 /* a group */
    expect_malformed(d, (const uint8_t[]){ 0x0E, 0x00 }, 2);                 /* wire type 6 */
    expect_malformed(d, (const uint8_t[]){ 0x02, 0x00 }, 2);                 /* field 0 */
    expect_malformed(d, (const uint8_t[]){ 0x8A, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00 }, 7);
    /* malformed inside a known message field: child { str: past its end } */
    expect_malformed(d, (const uint8_t[]){ 0xFA, 0x01, 0x02, 0x72, 0x05 }, 5);
    /* a string refused before the malformed part is reported as refused */
    char err[256];
    bool malformed = false;
    assert_int_equal(fxr_wirecheck(d, (const uint8_t[]){ 0x72, 0x01, 0xFF, 0x72, 0x09 }, 5,
                                   &malformed, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "str: invalid UTF-8 at byte 0");
    /* field number 0 in a multi-byte tag: protobuf-c keeps it as an unknown
     * field and packs it back as the invalid tag 0x00, so it is refused */
    assert_int_equal(fxr_wirecheck(d, (const uint8_t[]){ 0x80, 0x00, 0x01 }, 3, &malformed, err,
                                   sizeof err), FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "top level: field number 0 at byte 0 (not a valid field number)");
    assert_int_equal(fxr_wirecheck(d, (const uint8_t[]){ 0x08, 0x01, 0xFA, 0x01, 0x03, 0x80, 0x00,
                                                        0x01 }, 8, &malformed, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_string_equal(err, "child: field number 0 at byte 5 (not a valid field number)");
    /* unknown fields are not strings we know of: field 100 with 0xFF passes */
    expect_passes(d, (const uint8_t[]){ 0xA2, 0x06, 0x01, 0xFF }, 4);
    /* a string field sent as a varint is skipped (protobuf-c refuses it) */
    expect_passes(d, (const uint8_t[]){ 0x70, 0x01 }, 2);
    /* unpacked (one by one) and packed repeated floats (field 21) */
    expect_passes(d, (const uint8_t[]){ 0xAD, 0x01, 0, 0, 0x80, 0x3F, 0xAA, 0x01, 0x04, 0, 0,
                                        0x80, 0x3F }, 13);
    /* a field given twice: both are checked, though the last one wins */
    assert_int_equal(fxr_wirecheck(d, (const uint8_t[]){ 0x72, 0x01, 0xFF, 0x72, 0x01, 'a' }, 6,
                                   NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    /* a 10-byte varint and a 5-byte tag are well-formed */
    expect_passes(d, (const uint8_t[]){ 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                        0xFF, 0x01 }, 11);
    expect_passes(d, (const uint8_t[]){ 0xF8, 0xFF, 0xFF, 0xFF, 0x0F, 0x00 }, 6);
}

/* child { child { ... } } nested n deep, str "x" at the bottom. */
static wire nested(int n)
{
    wire w = { .data = malloc(4 * (size_t)n + 8) };
    assert_non_null(w.data);
    /* built from the inside out: each level is 0xFA 0x01 LEN(varint) */
    size_t cap = 4 * (size_t)n + 8, start = cap - 3;
    w.data[start] = 0x72, w.data[start + 1] = 1, w.data[start + 2] = 'x';
    for (int i = 0; i < n; i++) {
        size_t inner = cap - start;
        uint8_t len[2];
        size_t k = 0;
        len[k++] = inner < 128 ? (uint8_t)inner : (uint8_t)(0x80 | (inner & 0x7F));
        if (inner >= 128)
            len[k++] = (uint8_t)(inner >> 7);
        start -= 2 + k;
        w.data[start] = 0xFA, w.data[start + 1] = 0x01;
        memcpy(w.data + start + 2, len, k);
    }
    memmove(w.data, w.data + start, cap - start);
    w.len = cap - start;
    return w;
}

static void test_depth(void **state)
{
    (void)state;
    char err[1024];
    bool malformed;
    wire w = nested(FXR_WIRECHECK_MAX_DEPTH - 1); /* the string is the 64th frame */
    assert_int_equal(fxr_wirecheck(&pbjsontest__all_types__descriptor, w.data, w.len, &malformed,
                                   err, sizeof err), 0);
    free(w.data);
    w = nested(FXR_WIRECHECK_MAX_DEPTH);
    assert_int_equal(fxr_wirecheck(&pbjsontest__all_types__descriptor, w.data, w.len, &malformed,
                                   err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "child.child.child."));
    assert_non_null(strstr(err, ": messages nested deeper than 64"));
    free(w.data);
}

/* ----------------------------------------------------- random mutations */

/* Every string of an unpacked message is valid UTF-8 within its limit: what
 * the walk let through, protobuf-c's own reading agrees with. */
static void strings_ok(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        size_t n = 1;
        const void *const *items = (const void *const *)(base + f->offset);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            items = *(const void *const *const *)(base + f->offset);
        }
        for (size_t k = 0; k < n; k++) {
            if (!items[k])
                continue;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                strings_ok(items[k]);
            } else {
                const char *s = items[k];
                size_t len = strlen(s);
                assert_int_equal(fxu_utf8_invalid_at(s, len), len);
                assert_true(len <= fxr_string_limit(f->name));
            }
        }
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return rng_state;
}

/* A mutated copy of seed, in a buffer of exactly its length. */
static wire mutate(wire seed)
{
    size_t cap = seed.len + 16;
    uint8_t *b = malloc(cap);
    assert_non_null(b);
    memcpy(b, seed.data, seed.len);
    size_t n = seed.len;
    static const uint8_t special[] = { 0x00, 0x7F, 0x80, 0xBF, 0xC0, 0xC2, 0xE0, 0xED,
                                       0xF0, 0xF4, 0xF5, 0xFF, 0x0A, 0x12, 0x72, 0x01 };
    int edits = 1 + (int)(rnd() % 4);
    for (int e = 0; e < edits && n > 0; e++) {
        size_t at = rnd() % n;
        switch (rnd() % 6) {
        case 0: b[at] = (uint8_t)rnd(); break;
        case 1: b[at] = special[rnd() % sizeof special]; break;
        case 2: b[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
        case 3: n = at; break; /* truncate */
        case 4: /* delete a byte */
            memmove(b + at, b + at + 1, n - at - 1);
            n--;
            break;
        case 5: /* insert a byte */
            if (n < cap) {
                memmove(b + at + 1, b + at, n - at);
                b[at] = special[rnd() % sizeof special];
                n++;
            }
            break;
        }
    }
    wire w = { .data = malloc(n ? n : 1), .len = n };
    assert_non_null(w.data);
    memcpy(w.data, b, n);
    free(b);
    return w;
}

static void test_random_mutations(void **state)
{
    (void)state;
    const char *env = getenv("FX_WIRECHECK_FUZZ_ITERS");
    long iters = env ? atol(env) : 4000;
    struct {
        const ProtobufCMessageDescriptor *d;
        wire w;
    } seeds[] = {
        { &fluxion__v1__create_model_request__descriptor, model_with_mark(1, NULL) },
        { &pbjsontest__all_types__descriptor,
          packed(&pbjsontest__all_types__descriptor,
                 "{\"i32\": 300, \"str\": \"caf\\u00e9\", \"inner\": {\"s\": \"in\"},"
                 " \"inners\": [{\"s\": \"a\"}, {\"a\": 5}], \"floats\": [1, 2],"
                 " \"byId\": {\"1\": \"one\"}, \"byFlag\": {\"true\": {\"s\": \"t\"}},"
                 " \"cMsg\": {\"s\": \"m\"}, \"child\": {\"str\": \"c\", \"child\": {}}}",
                 NULL) },
        { &inference__model_infer_request__descriptor,
          packed(&inference__model_infer_request__descriptor,
                 "{\"modelName\": \"m\", \"id\": \"r1\", \"parameters\": {\"p\": "
                 "{\"stringParam\": \"v\"}}, \"inputs\": [{\"name\": \"x\", \"datatype\": "
                 "\"FP32\", \"shape\": [\"2\"], \"contents\": {\"fp32Contents\": [1, 2]}}],"
                 " \"rawInputContents\": [\"AAECAw==\"]}",
                 NULL) },
    };
    long refused = 0, malformed_n = 0, passed = 0;
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        for (long it = 0; it < iters; it++) {
            wire w = mutate(seeds[s].w);
            char err[1024] = "";
            bool malformed = false;
            int rc = fxr_wirecheck(seeds[s].d, w.data, w.len, &malformed, err, sizeof err);
            ProtobufCMessage *m = protobuf_c_message_unpack(seeds[s].d, NULL, w.len, w.data);
            if (rc) {
                assert_int_equal(rc, FXS_INVALID_ARGUMENT);
                assert_non_null(strchr(err, ':'));
                refused++;
            } else if (malformed) {
                /* the walk's idea of malformed is protobuf-c's */
                if (m)
                    fail_msg("seed %zu, mutation %ld: the walk found it malformed, "
                             "protobuf-c unpacked it", s, it);
                malformed_n++;
            } else if (m) {
                strings_ok(m);
                passed++;
            }
            if (m)
                protobuf_c_message_free_unpacked(m, NULL);
            free(w.data);
        }
        free(seeds[s].w.data);
    }
    print_message("%ld mutations: %ld refused, %ld malformed, %ld passed and unpacked\n",
                  iters * 3, refused, malformed_n, passed);
    assert_true(refused > 0 && malformed_n > 0 && passed > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_against_reference),
        cmocka_unit_test(test_text_check_messages),
        cmocka_unit_test(test_valid_messages_pass),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_paths_all_types),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_wire_forms),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
