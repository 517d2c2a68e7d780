/*
 * pbjson.c - JSON <-> protobuf-c messages by reflection (see pbjson.h).
 *
 * Decoding builds the message field by field with malloc, the way
 * protobuf_c_message_unpack does, so that at every step the partial message
 * is one protobuf_c_message_free_unpacked can free: that is the whole error
 * cleanup.
 */
#include "pbjson.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxion/v1/model.pb-c.h"
#include "jsonpath.h"

#define MEMBER(msg, off) ((void *)((char *)(msg) + (off)))

/* The walk: where we are in the JSON (for errors) and the encoder's flags. */
typedef struct {
    jsonpath jp;
    unsigned flags;
} walk;

/* ------------------------------------------------------------- field facts */

char *pbjson_json_name(const char *name, char *buf, size_t buflen)
{
    size_t o = 0;
    bool upper = false;
    for (const char *p = name; *p && o + 1 < buflen; p++) {
        if (*p == '_') {
            upper = true;
        } else {
            buf[o++] = upper && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
            upper = false;
        }
    }
    if (buflen)
        buf[o] = '\0';
    return buf;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 8;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    default: return 4;
    }
}

/* protoc-c keeps no "map entry" flag: a map<K,V> field is a repeated
 * message field whose type is "<Field>Entry" nested in the parent, with
 * exactly the fields key = 1 and value = 2. */
static bool is_map(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2 || strcmp(e->fields[0].name, "key") || e->fields[0].id != 1 ||
        strcmp(e->fields[1].name, "value") || e->fields[1].id != 2)
        return false;
    char camel[160];
    pbjson_json_name(f->name, camel, sizeof camel);
    camel[0] = (char)(camel[0] >= 'a' && camel[0] <= 'z' ? camel[0] - 'a' + 'A' : camel[0]);
    char want[512];
    snprintf(want, sizeof want, "%s.%sEntry", parent->name, camel);
    return strcmp(e->name, want) == 0;
}

static bool is_attr_value(const ProtobufCMessageDescriptor *d)
{
    return d == &fluxion__v1__attr_value__descriptor;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *key)
{
    char camel[160];
    for (unsigned i = 0; i < d->n_fields; i++) {
        const char *name = d->fields[i].name;
        if (!strcmp(key, name) || !strcmp(key, pbjson_json_name(name, camel, sizeof camel)))
            return &d->fields[i];
    }
    return NULL;
}

/* ---------------------------------------------------------- decode scalars */

/* Integers arrive as JSON integers, integral reals (1.0, 1e3) or decimal
 * strings. Signed fields go through *sv, unsigned through *uv. */
static int get_integer(walk *w, const json_t *j, bool is_unsigned, int64_t min, uint64_t max,
                       int64_t *sv, uint64_t *uv)
{
    bool neg = false;
    uint64_t mag = 0;
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        neg = v < 0;
        mag = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    } else if (json_is_real(j)) {
        double v = json_real_value(j);
        if (v != floor(v) || fabs(v) >= 18446744073709551616.0)
            return jsonpath_fail(&w->jp, "expected an integer, got %g", v);
        neg = v < 0;
        mag = (uint64_t)fabs(v);
    } else if (json_is_string(j)) {
        const char *s = json_string_value(j), *digits = s + (*s == '-');
        char *end;
        errno = 0;
        mag = strtoull(digits, &end, 10);
        if (*digits < '0' || *digits > '9' || *end || errno)
            return jsonpath_fail(&w->jp, "expected an integer, got \"%s\"", s);
        neg = *s == '-' && mag;
    } else {
        return jsonpath_fail(&w->jp, "expected an integer, got %s", jsonpath_kind(j));
    }
    if (is_unsigned) {
        if (neg || mag > max)
            return jsonpath_fail(&w->jp, "%s%" PRIu64 " is out of range 0..%" PRIu64,
                                 neg ? "-" : "", mag, max);
        *uv = mag;
        return 0;
    }
    /* min is INT32_MIN or INT64_MIN; compare magnitudes to stay unsigned. */
    if ((neg && mag > (uint64_t)0 - (uint64_t)min) || (!neg && mag > max))
        return jsonpath_fail(&w->jp, "%s%" PRIu64 " is out of range %" PRId64 "..%" PRIu64,
                             neg ? "-" : "", mag, min, max);
    *sv = neg ? (int64_t)((uint64_t)0 - mag) : (int64_t)mag;
    return 0;
}

static int get_double(walk *w, const json_t *j, bool is_float, double *out)
{
    if (json_is_number(j)) {
        *out = json_number_value(j);
    } else if (json_is_string(j)) {
        const char *s = json_string_value(j);
        if (!strcmp(s, "NaN")) {
            *out = NAN;
            return 0;
        }
        if (!strcmp(s, "Infinity") || !strcmp(s, "-Infinity")) {
            *out = *s == '-' ? -INFINITY : INFINITY;
            return 0;
        }
        char *end;
        errno = 0;
        *out = strtod(s, &end);
        if (!*s || *end || errno || !isfinite(*out))
            return jsonpath_fail(&w->jp, "expected a number, got \"%s\"", s);
    } else {
        return jsonpath_fail(&w->jp, "expected a number, got %s", jsonpath_kind(j));
    }
    if (is_float && fabs(*out) > 3.4028234663852886e38)
        return jsonpath_fail(&w->jp, "%g is out of range for a float", *out);
    return 0;
}

static int get_enum(walk *w, const ProtobufCEnumDescriptor *ed, const json_t *j, int32_t *out)
{
    if (json_is_string(j)) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(j));
        if (v) {
            *out = v->value;
            return 0;
        }
        char names[256] = "";
        for (unsigned i = 0; i < ed->n_values; i++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", ed->values[i].name);
        }
        return jsonpath_fail(&w->jp, "unknown %s \"%s\" (expected one of %s)", ed->name,
                             json_string_value(j), names);
    }
    if (json_is_number(j)) {
        /* proto3 enums are open: any int32 is a value. */
        int64_t v;
        if (get_integer(w, j, false, INT32_MIN, INT32_MAX, &v, NULL))
            return -1;
        *out = (int32_t)v;
        return 0;
    }
    return jsonpath_fail(&w->jp, "expected a %s name, got %s", ed->name, jsonpath_kind(j));
}

static int decode_message(walk *w, const ProtobufCMessageDescriptor *d, const json_t *j,
                          ProtobufCMessage **out);

/* One value of a field (an element, for repeated fields) into slot. */
static int decode_value(walk *w, const ProtobufCFieldDescriptor *f, const json_t *j, void *slot)
{
    int64_t s;
    uint64_t u;
    double dv;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (get_integer(w, j, false, INT32_MIN, INT32_MAX, &s, NULL))
            return -1;
        *(int32_t *)slot = (int32_t)s;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (get_integer(w, j, false, INT64_MIN, INT64_MAX, &s, NULL))
            return -1;
        *(int64_t *)slot = s;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (get_integer(w, j, true, 0, UINT32_MAX, NULL, &u))
            return -1;
        *(uint32_t *)slot = (uint32_t)u;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (get_integer(w, j, true, 0, UINT64_MAX, NULL, &u))
            return -1;
        *(uint64_t *)slot = u;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
        if (get_double(w, j, true, &dv))
            return -1;
        *(float *)slot = (float)dv;
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE: return get_double(w, j, false, (double *)slot);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j))
            return jsonpath_fail(&w->jp, "expected true or false, got %s", jsonpath_kind(j));
        *(protobuf_c_boolean *)slot = json_is_true(j);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: return get_enum(w, f->descriptor, j, (int32_t *)slot);
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(j))
            return jsonpath_fail(&w->jp, "expected a string, got %s", jsonpath_kind(j));
        /* Embedded NULs cannot live in a C string field. */
        if (strlen(json_string_value(j)) != json_string_length(j))
            return jsonpath_fail(&w->jp, "string contains a NUL character");
        char *dup = strdup(json_string_value(j));
        if (!dup)
            return jsonpath_fail(&w->jp, "out of memory");
        *(char **)slot = dup;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(j))
            return jsonpath_fail(&w->jp, "expected a base64 string, got %s", jsonpath_kind(j));
        ProtobufCBinaryData *bd = slot;
        unsigned char *data;
        size_t n;
        if (pbjson_base64_decode(json_string_value(j), json_string_length(j), &data, &n))
            return jsonpath_fail(&w->jp, "invalid base64");
        bd->data = data;
        bd->len = n;
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return decode_message(w, f->descriptor, j, (ProtobufCMessage **)slot);
    }
    return jsonpath_fail(&w->jp, "unsupported field type %d", (int)f->type);
}

/* A map key arrives as a JSON object key: a string, parsed per key type. */
static int decode_map_key(walk *w, const ProtobufCFieldDescriptor *kf, const char *key, void *slot)
{
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        if (strcmp(key, "true") && strcmp(key, "false"))
            return jsonpath_fail(&w->jp, "map key must be \"true\" or \"false\"");
        *(protobuf_c_boolean *)slot = !strcmp(key, "true");
        return 0;
    }
    json_t *k = json_string(key);
    if (!k)
        return jsonpath_fail(&w->jp, "out of memory");
    int rc = decode_value(w, kf, k, slot);
    json_decref(k);
    return rc;
}

static ProtobufCMessage *new_message(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = malloc(d->sizeof_message);
    if (m)
        d->message_init(m);
    return m;
}

static int decode_map(walk *w, const ProtobufCFieldDescriptor *f, const json_t *j, size_t *count,
                      void **array)
{
    if (!json_is_object(j))
        return jsonpath_fail(&w->jp, "expected an object (a map), got %s", jsonpath_kind(j));
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    size_t n = json_object_size(j);
    ProtobufCMessage **entries = calloc(n ? n : 1, sizeof *entries);
    if (!entries)
        return jsonpath_fail(&w->jp, "out of memory");
    *array = entries;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)j, key, val)
    {
        size_t old = jsonpath_key(&w->jp, key);
        ProtobufCMessage *e = new_message(ed);
        if (!e)
            return jsonpath_fail(&w->jp, "out of memory");
        entries[(*count)++] = e;
        if (decode_map_key(w, &ed->fields[0], key, MEMBER(e, ed->fields[0].offset)))
            return -1;
        if (!json_is_null(val) &&
            decode_value(w, &ed->fields[1], val, MEMBER(e, ed->fields[1].offset)))
            return -1;
        jsonpath_pop(&w->jp, old);
    }
    return 0;
}

static int decode_repeated(walk *w, const ProtobufCMessageDescriptor *d,
                           const ProtobufCFieldDescriptor *f, const json_t *j, void *msg)
{
    size_t *count = MEMBER(msg, f->quantifier_offset);
    void **array = MEMBER(msg, f->offset);
    if (is_map(d, f))
        return decode_map(w, f, j, count, array);
    if (!json_is_array(j))
        return jsonpath_fail(&w->jp, "expected an array, got %s", jsonpath_kind(j));
    size_t n = json_array_size(j), size = elem_size(f->type);
    /* Zeroed elements are safe for free_unpacked at any point. */
    char *elems = calloc(n ? n : 1, size);
    if (!elems)
        return jsonpath_fail(&w->jp, "out of memory");
    *array = elems;
    *count = n;
    for (size_t i = 0; i < n; i++) {
        size_t old = jsonpath_index(&w->jp, i);
        json_t *e = json_array_get(j, i);
        if (json_is_null(e))
            return jsonpath_fail(&w->jp, "null is not allowed in an array");
        if (decode_value(w, f, e, elems + i * size))
            return -1;
        jsonpath_pop(&w->jp, old);
    }
    return 0;
}

static int decode_field(walk *w, const ProtobufCMessageDescriptor *d,
                        const ProtobufCFieldDescriptor *f, const json_t *j, void *msg)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return decode_repeated(w, d, f, j, msg);
    if (decode_value(w, f, j, MEMBER(msg, f->offset)))
        return -1;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)MEMBER(msg, f->quantifier_offset) = f->id;
    else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
             f->type != PROTOBUF_C_TYPE_STRING)
        *(protobuf_c_boolean *)MEMBER(msg, f->quantifier_offset) = 1;
    return 0;
}

/* AttrValue's friendly form: the JSON type picks the oneof member. */
static int decode_attr_friendly(walk *w, const json_t *j, Fluxion__V1__AttrValue *a)
{
    const ProtobufCMessageDescriptor *d = &fluxion__v1__attr_value__descriptor;
    const char *scalar = json_is_integer(j)   ? "i"
                         : json_is_real(j)    ? "f"
                         : json_is_string(j)  ? "s"
                         : json_is_boolean(j) ? "b"
                                              : NULL;
    if (scalar)
        return decode_field(w, d, find_field(d, scalar), j, a);
    if (!json_is_array(j))
        return jsonpath_fail(&w->jp, "expected a number, string, bool, array or object, got %s",
                             jsonpath_kind(j));
    /* The first element decides numbers vs strings; any real makes floats. */
    size_t n = json_array_size(j);
    bool strings = n && json_is_string(json_array_get(j, 0)), any_real = false;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(j, i);
        if (strings ? !json_is_string(e) : !json_is_number(e)) {
            size_t old = jsonpath_index(&w->jp, i);
            if (i == 0)
                jsonpath_fail(&w->jp, "expected a number or a string, got %s", jsonpath_kind(e));
            else
                jsonpath_fail(&w->jp, "expected %s like the elements before it, got %s",
                              strings ? "a string" : "a number", jsonpath_kind(e));
            jsonpath_pop(&w->jp, old);
            return -1;
        }
        any_real |= json_is_real(e);
    }
    const char *member = strings ? "strings" : any_real ? "floats" : "ints";
    const ProtobufCFieldDescriptor *lf = find_field(d, member);
    ProtobufCMessage *list = new_message(lf->descriptor);
    if (!list)
        return jsonpath_fail(&w->jp, "out of memory");
    /* The list's set-up happens before decoding so that the attr owns it
     * (and frees it) even when an element fails. */
    a->value_case = lf->id;
    *(ProtobufCMessage **)MEMBER(a, lf->offset) = list;
    const ProtobufCMessageDescriptor *ld = lf->descriptor;
    return decode_repeated(w, ld, &ld->fields[0], j, list);
}

static int decode_fields(walk *w, const ProtobufCMessageDescriptor *d, const json_t *j,
                         ProtobufCMessage *m)
{
    const char *given[d->n_fields + 1]; /* the key that set field i */
    memset(given, 0, sizeof given);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)j, key, val)
    {
        const ProtobufCFieldDescriptor *f = find_field(d, key);
        size_t old = jsonpath_key(&w->jp, key);
        if (!f)
            return jsonpath_fail(&w->jp, "unknown field of %s", d->name);
        size_t idx = (size_t)(f - d->fields);
        if (given[idx])
            return jsonpath_fail(&w->jp, "field given twice (also as \"%s\")", given[idx]);
        given[idx] = key;
        if (json_is_null(val)) {
            jsonpath_pop(&w->jp, old);
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t set = *(uint32_t *)MEMBER(m, f->quantifier_offset);
            if (set) {
                const ProtobufCFieldDescriptor *other =
                    protobuf_c_message_descriptor_get_field(d, set);
                return jsonpath_fail(&w->jp,
                                     "only one of a oneof may be set, and \"%s\" is already",
                                     other ? other->name : "?");
            }
        }
        if (decode_field(w, d, f, val, m))
            return -1;
        jsonpath_pop(&w->jp, old);
    }
    return 0;
}

static int decode_message(walk *w, const ProtobufCMessageDescriptor *d, const json_t *j,
                          ProtobufCMessage **out)
{
    if (!json_is_object(j) && !is_attr_value(d))
        return jsonpath_fail(&w->jp, "expected an object (%s), got %s", d->name, jsonpath_kind(j));
    ProtobufCMessage *m = new_message(d);
    if (!m)
        return jsonpath_fail(&w->jp, "out of memory");
    /* Owned by the parent from here on: its cleanup frees it. */
    *out = m;
    if (!json_is_object(j))
        return decode_attr_friendly(w, j, (Fluxion__V1__AttrValue *)m);
    return decode_fields(w, d, j, m);
}

ProtobufCMessage *pbjson_decode(const ProtobufCMessageDescriptor *desc, const json_t *json,
                                char *err, size_t errlen)
{
    walk w = {.jp = {.err = err, .errlen = errlen}};
    ProtobufCMessage *m = NULL;
    if (!json) {
        jsonpath_fail(&w.jp, "no JSON value");
        return NULL;
    }
    if (decode_message(&w, desc, json, &m)) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return m;
}

/* ----------------------------------------------------------------- encode */

static json_t *encode_message(walk *w, const ProtobufCMessage *m);

double pbjson_float_to_double(float f)
{
    if (!isfinite(f))
        return f;
    /* Shorter decimals than 6 digits show up as %.6g with zeros stripped;
     * 9 digits always read back. */
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (prec == 9 || strtof(buf, NULL) == f)
            break;
    }
    return strtod(buf, NULL);
}

static json_t *encode_double(double v)
{
    if (isnan(v))
        return json_string("NaN");
    if (isinf(v))
        return json_string(v < 0 ? "-Infinity" : "Infinity");
    return json_real(v);
}

static json_t *encode_u64(walk *w, uint64_t v)
{
    if ((w->flags & PBJSON_INT64_NUMBERS) && v <= INT64_MAX)
        return json_integer((json_int_t)v);
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return json_string(buf);
}

static json_t *encode_value(walk *w, const ProtobufCFieldDescriptor *f, const void *slot)
{
    json_t *j = NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: j = json_integer(*(const int32_t *)slot); break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: j = json_integer(*(const uint32_t *)slot); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: {
        int64_t v = *(const int64_t *)slot;
        if (w->flags & PBJSON_INT64_NUMBERS) {
            j = json_integer(v);
        } else {
            char buf[24];
            snprintf(buf, sizeof buf, "%" PRId64, v);
            j = json_string(buf);
        }
        break;
    }
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: j = encode_u64(w, *(const uint64_t *)slot); break;
    case PROTOBUF_C_TYPE_FLOAT:
        j = encode_double(pbjson_float_to_double(*(const float *)slot));
        break;
    case PROTOBUF_C_TYPE_DOUBLE: j = encode_double(*(const double *)slot); break;
    case PROTOBUF_C_TYPE_BOOL: j = json_boolean(*(const protobuf_c_boolean *)slot); break;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t v = *(const int32_t *)slot;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        j = ev ? json_string(ev->name) : json_integer(v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)slot;
        j = json_string(s ? s : "");
        if (!j) {
            jsonpath_fail(&w->jp, "string is not valid UTF-8");
            return NULL;
        }
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = slot;
        char *text = pbjson_base64_encode(bd->data, bd->len);
        j = text ? json_string(text) : NULL;
        free(text);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)slot;
        if (sub)
            return encode_message(w, sub);
        j = json_object(); /* a map value or array element left NULL */
        break;
    }
    }
    if (!j)
        jsonpath_fail(&w->jp, "out of memory");
    return j;
}

static json_t *encode_map_key(walk *w, const ProtobufCFieldDescriptor *kf, const void *slot)
{
    json_t *k = kf->type == PROTOBUF_C_TYPE_BOOL
                    ? json_string(*(const protobuf_c_boolean *)slot ? "true" : "false")
                    : encode_value(w, kf, slot);
    if (k && json_is_integer(k)) {
        json_t *s = json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(k));
        json_decref(k);
        k = s;
    }
    return k;
}

static json_t *encode_repeated(walk *w, const ProtobufCMessageDescriptor *d,
                               const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m)
{
    size_t n = *(const size_t *)MEMBER(m, f->quantifier_offset);
    const char *elems = *(char *const *)MEMBER(m, f->offset);
    bool map = is_map(d, f);
    json_t *out = map ? json_object() : json_array();
    if (!out) {
        jsonpath_fail(&w->jp, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v;
        if (map) {
            const ProtobufCMessage *e = ((ProtobufCMessage *const *)elems)[i];
            const ProtobufCMessageDescriptor *ed = f->descriptor;
            json_t *k = encode_map_key(w, &ed->fields[0], MEMBER(e, ed->fields[0].offset));
            if (!k)
                goto fail;
            size_t old = jsonpath_key(&w->jp, json_string_value(k));
            v = encode_value(w, &ed->fields[1], MEMBER(e, ed->fields[1].offset));
            jsonpath_pop(&w->jp, old);
            if (!v || json_object_set_new(out, json_string_value(k), v)) {
                json_decref(k);
                goto fail;
            }
            json_decref(k);
        } else {
            size_t old = jsonpath_index(&w->jp, i);
            v = encode_value(w, f, elems + i * elem_size(f->type));
            jsonpath_pop(&w->jp, old);
            if (!v || json_array_append_new(out, v))
                goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* proto3 implicit presence: a field at its zero value is "not set". */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *slot)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)slot;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)slot)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE: return *(void *const *)slot == NULL;
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)slot == 0 && !signbit(*(const float *)slot);
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)slot == 0 && !signbit(*(const double *)slot);
    default: {
        static const char zero[8];
        return !memcmp(slot, zero, elem_size(f->type));
    }
    }
}

/* Whether a singular field is written: set oneof members, present
 * optionals and required fields always; implicit-presence fields when not
 * default (or when defaults are asked for); unset messages never. */
static bool field_present(walk *w, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m)
{
    const void *slot = MEMBER(m, f->offset);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)MEMBER(m, f->quantifier_offset) == f->id;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        return *(void *const *)slot != NULL;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    /* proto2 optional: a has_ flag, or for strings a pointer other than
     * the default's. */
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING)
        return *(const protobuf_c_boolean *)MEMBER(m, f->quantifier_offset);
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
        return *(char *const *)slot && *(char *const *)slot != f->default_value;
    return (w->flags & PBJSON_EMIT_DEFAULTS) || !is_default(f, slot);
}

static json_t *encode_fields(walk *w, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *obj = json_object();
    if (!obj) {
        jsonpath_fail(&w->jp, "out of memory");
        return NULL;
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char camel[160];
        const char *key = w->flags & PBJSON_ORIGINAL_NAMES
                              ? f->name
                              : pbjson_json_name(f->name, camel, sizeof camel);
        json_t *v = NULL;
        size_t old = jsonpath_key(&w->jp, key);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (*(const size_t *)MEMBER(m, f->quantifier_offset) ||
                (w->flags & PBJSON_EMIT_DEFAULTS))
                v = encode_repeated(w, d, f, m);
            else {
                jsonpath_pop(&w->jp, old);
                continue;
            }
        } else if (field_present(w, f, m)) {
            v = encode_value(w, f, MEMBER(m, f->offset));
        } else {
            jsonpath_pop(&w->jp, old);
            continue;
        }
        jsonpath_pop(&w->jp, old);
        if (!v || json_object_set_new(obj, key, v)) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* Appends to arr, consuming v; false (and arr released) on failure. */
static bool append(json_t **arr, json_t *v)
{
    if (*arr && v && !json_array_append_new(*arr, v))
        return true;
    json_decref(v);
    json_decref(*arr);
    *arr = NULL;
    return false;
}

/* AttrValue as a plain JSON value, or NULL where only the canonical form
 * can carry it: an unset value, NaN or Infinity, an empty float or string
 * list (it would read back as ints), invalid UTF-8 (the canonical encoder
 * then reports it with its path), out of memory (likewise). */
static json_t *encode_attr_friendly(const Fluxion__V1__AttrValue *a)
{
    json_t *arr;
    switch (a->value_case) {
    case FLUXION__V1__ATTR_VALUE__VALUE_I: return json_integer(a->i);
    case FLUXION__V1__ATTR_VALUE__VALUE_F: return isfinite(a->f) ? json_real(a->f) : NULL;
    case FLUXION__V1__ATTR_VALUE__VALUE_B: return json_boolean(a->b);
    case FLUXION__V1__ATTR_VALUE__VALUE_S: return json_string(a->s ? a->s : "");
    case FLUXION__V1__ATTR_VALUE__VALUE_INTS:
        arr = json_array();
        for (size_t i = 0; a->ints && i < a->ints->n_values; i++)
            if (!append(&arr, json_integer(a->ints->values[i])))
                return NULL;
        return arr;
    case FLUXION__V1__ATTR_VALUE__VALUE_FLOATS:
        if (!a->floats || !a->floats->n_values)
            return NULL;
        arr = json_array();
        for (size_t i = 0; i < a->floats->n_values; i++)
            if (!isfinite(a->floats->values[i]) || !append(&arr, json_real(a->floats->values[i])))
                return json_decref(arr), NULL;
        return arr;
    case FLUXION__V1__ATTR_VALUE__VALUE_STRINGS:
        if (!a->strings || !a->strings->n_values)
            return NULL;
        arr = json_array();
        for (size_t i = 0; i < a->strings->n_values; i++)
            if (!append(&arr, json_string(a->strings->values[i])))
                return NULL;
        return arr;
    default: return NULL;
    }
}

static json_t *encode_message(walk *w, const ProtobufCMessage *m)
{
    if (is_attr_value(m->descriptor) && !(w->flags & PBJSON_CANONICAL_ATTRS)) {
        json_t *j = encode_attr_friendly((const Fluxion__V1__AttrValue *)m);
        if (j)
            return j;
    }
    return encode_fields(w, m);
}

json_t *pbjson_encode(const ProtobufCMessage *msg, unsigned flags, char *err, size_t errlen)
{
    walk w = {.jp = {.err = err, .errlen = errlen}, .flags = flags};
    if (err && errlen)
        err[0] = '\0';
    return encode_message(&w, msg);
}
