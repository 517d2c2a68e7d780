/*
 * wirecheck.c - see wirecheck.h.
 *
 * The walk reads the protobuf wire format as protobuf-c 1.4 does
 * (protobuf_c_message_unpack's scan): a tag is a varint of at most 5 bytes
 * whose field number is not 0; wire types 0 (varint, at most 10 bytes),
 * 1 (8 bytes), 2 (a length of at most 5 bytes, at most INT_MAX, then that
 * many bytes) and 5 (4 bytes); anything else (groups, types 6 and 7) is
 * malformed. Only length-delimited fields can be strings or messages: a
 * known field of type string is checked, one of type message is walked;
 * everything else (scalars, packed repeated scalars, bytes, unknown fields,
 * a known field sent with another wire type, which unpack refuses) is
 * skipped by its wire type.
 *
 * The happy path builds no path and counts no indices: only a refused
 * string pays for its path, by scanning again the (already checked) bytes
 * before it for the repeated fields' indices and a map entry's key.
 */
#include "rpc/wirecheck.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "base/text.h"
#include "base/util.h"

/* Byte limits of string fields by .proto field name (docs/limits.md).
 * "*_x" matches a name ending in "_x". A name or a reference to a node's
 * output ("node:K") must also pass its module's own rules, which are
 * stricter (model names: 128 bytes of [A-Za-z0-9_.-]). */
static const struct {
    const char *field;
    size_t max_bytes;
} LIMITS[] = {
    { "description", 4096 },       /* models, datasets, jobs: free text */
    { "name", 256 },               /* models, datasets, tensors, nodes, inputs, outputs */
    { "*_name", 256 },             /* model_name, repository_name */
    { "model", 256 },              /* JobSpec, ListJobsRequest: a model name */
    { "dataset", 256 },            /* JobSpec: a dataset name */
    { "validation_dataset", 256 }, /* JobSpec */
    { "source", 272 },             /* ImportWeights: free text; OutputSpec: "node:K" */
    { "inputs", 272 },             /* Node: "node:K" references */
};
/* The least limit above: a string no longer than this needs no lookup
 * (most are names; the lookup's strcmps would double the walk's cost). */
#define SMALLEST_LIMIT 256

size_t fxr_string_limit(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof LIMITS / sizeof LIMITS[0]; i++) {
        const char *f = LIMITS[i].field;
        if (f[0] == '*') {
            size_t k = strlen(f + 1);
            if (n > k && strcmp(name + n - k, f + 1) == 0)
                return LIMITS[i].max_bytes;
        } else if (strcmp(name, f) == 0) {
            return LIMITS[i].max_bytes;
        }
    }
    return FXR_STRING_LIMIT_DEFAULT;
}

/* ------------------------------------------------------------ wire format */

/* The tag at p (n > 0 bytes), as protobuf-c's parse_tag_and_wiretype reads
 * it. Returns the bytes it takes, 0 when malformed. */
static size_t read_tag(const uint8_t *p, size_t n, uint32_t *id, unsigned *wire_type)
{
    size_t max = n > 5 ? 5 : n;
    if ((p[0] & 0xf8) == 0) /* field number 0 */
        return 0;
    *wire_type = p[0] & 7;
    uint32_t v = (p[0] & 0x7f) >> 3;
    if (!(p[0] & 0x80)) {
        *id = v;
        return 1;
    }
    unsigned shift = 4;
    for (size_t i = 1; i < max; i++) {
        v |= (uint32_t)(p[i] & 0x7f) << shift;
        if (!(p[i] & 0x80)) {
            *id = v;
            return i + 1;
        }
        shift += 7;
    }
    return 0;
}

/* The bytes of a field's value after its tag (p: n bytes left), the length
 * prefix included for wire type 2 (its size in *hdr). 0 when malformed. */
static size_t value_len(const uint8_t *p, size_t n, unsigned wire_type, size_t *hdr)
{
    *hdr = 0;
    switch (wire_type) {
    case PROTOBUF_C_WIRE_TYPE_VARINT: {
        size_t max = n < 10 ? n : 10;
        for (size_t i = 0; i < max; i++)
            if (!(p[i] & 0x80))
                return i + 1;
        return 0;
    }
    case PROTOBUF_C_WIRE_TYPE_64BIT:
        return n >= 8 ? 8 : 0;
    case PROTOBUF_C_WIRE_TYPE_32BIT:
        return n >= 4 ? 4 : 0;
    case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED: {
        size_t max = n < 5 ? n : 5, val = 0, i;
        for (i = 0; i < max; i++) {
            val |= ((size_t)p[i] & 0x7f) << (7 * i);
            if (!(p[i] & 0x80))
                break;
        }
        if (i == max || val > INT_MAX || val > n - (i + 1))
            return 0;
        *hdr = i + 1;
        return i + 1 + val;
    }
    default: /* groups (3, 4), 6, 7: protobuf-c refuses them */
        return 0;
    }
}

/* One field of the message being walked, at one depth: where the message
 * starts and ends, where the field's tag is. */
typedef struct {
    const uint8_t *msg, *end, *tag;
    const ProtobufCFieldDescriptor *field;
} frame;

typedef struct {
    frame stack[FXR_WIRECHECK_MAX_DEPTH];
    int depth;
    bool malformed;
    char *err;
    size_t errlen;
    const uint8_t *start; /* the request's first byte, for offsets in errors */
} walker;

/* How many fields numbered `id` come before `upto` in [msg, upto). The
 * bytes were walked already, but the scan stays bounded regardless. */
static unsigned count_before(const uint8_t *msg, const uint8_t *upto, uint32_t id)
{
    unsigned count = 0;
    size_t n = (size_t)(upto - msg), i = 0;
    while (i < n) {
        uint32_t fid;
        unsigned wt;
        size_t hdr, used = read_tag(msg + i, n - i, &fid, &wt);
        size_t body = used ? value_len(msg + i + used, n - i - used, wt, &hdr) : 0;
        if (!body)
            break;
        count += fid == id;
        i += used + body;
    }
    return count;
}

/* protoc's map<K, V> entries: a nested "XEntry" message with key = 1 and
 * value = 2. */
static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
    size_t n = strlen(d->short_name);
    return d->n_fields == 2 && d->fields[0].id == 1 && d->fields[1].id == 2 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0 &&
           n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0;
}

/* The string key of the map entry [p, end) when it is short and printable
 * (as it would read in a path): its length, with *key pointing at it; 0
 * otherwise. */
static size_t map_key(const uint8_t *p, const uint8_t *end, const uint8_t **key)
{
    size_t n = (size_t)(end - p), i = 0, found = 0;
    while (i < n) {
        uint32_t id;
        unsigned wt;
        size_t hdr, used = read_tag(p + i, n - i, &id, &wt);
        size_t body = used ? value_len(p + i + used, n - i - used, wt, &hdr) : 0;
        if (!body)
            return 0;
        if (id == 1 && wt == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) { /* the last one wins */
            *key = p + i + used + hdr;
            found = body - hdr;
        }
        i += used + body;
    }
    if (found == 0 || found > 64 || fxu_utf8_invalid_at(*key, found) < found)
        return 0;
    for (size_t k = 0; k < found; k++)
        if ((*key)[k] < 0x20 || (*key)[k] == 0x7f || (*key)[k] == '"' || (*key)[k] == '\\')
            return 0;
    return found;
}

/* The path of the field at the top of the stack: "spec.nodes[2].inputs[0]",
 * "parameters[\"k\"].string_param". */
static void format_path(const walker *w, char *out, size_t len)
{
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < w->depth && o < len; i++) {
        const frame *f = &w->stack[i];
        o += (size_t)snprintf(out + o, len - o, "%s%s", i ? "." : "", f->field->name);
        if (o >= len || f->field->label != PROTOBUF_C_LABEL_REPEATED)
            continue;
        const uint8_t *key = NULL;
        size_t klen = 0;
        /* A map entry's value reads as name["key"]: the ".value" is dropped. */
        if (f->field->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->field->descriptor) &&
            i + 1 < w->depth && w->stack[i + 1].field->id == 2 &&
            (klen = map_key(w->stack[i + 1].msg, w->stack[i + 1].end, &key)) > 0) {
            o += (size_t)snprintf(out + o, len - o, "[\"%.*s\"]", (int)klen, (const char *)key);
            i++; /* skip "value"; what follows it is joined with "." */
        } else {
            o += (size_t)snprintf(out + o, len - o, "[%u]",
                                  count_before(f->msg, f->tag, f->field->id));
        }
    }
}

static int check_string(walker *w, const uint8_t *s, size_t n)
{
    size_t limit = n > SMALLEST_LIMIT ? fxr_string_limit(w->stack[w->depth - 1].field->name) : 0;
    if (fxu_text_check("", s, n, limit, NULL, 0) == 0)
        return 0;
    char path[512];
    format_path(w, path, sizeof path);
    return fxu_text_check(path, s, n, limit, w->err, w->errlen);
}

static int walk(walker *w, const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t id;
        unsigned wt;
        size_t hdr, used = read_tag(p + i, n - i, &id, &wt);
        size_t body = used ? value_len(p + i + used, n - i - used, wt, &hdr) : 0;
        if (!body) {
            w->malformed = true;
            return 0;
        }
        if (id == 0) {
            /* A multi-byte tag can spell field number 0, which protobuf-c
             * accepts and keeps as an unknown field but packs back as the
             * one-byte tag 0 that no reader accepts: a spec stored with it
             * (CreateModel packs the request's spec) would not read back. */
            char path[512];
            format_path(w, path, sizeof path);
            return fxu_fail(w->err, w->errlen, FXS_INVALID_ARGUMENT,
                            "%s: field number 0 at byte %zu (not a valid field number)",
                            path[0] ? path : "top level", (size_t)(p + i - w->start));
        }
        const ProtobufCFieldDescriptor *f = NULL;
        if (wt == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            f = protobuf_c_message_descriptor_get_field(desc, id);
        if (f && (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
            if (w->depth == FXR_WIRECHECK_MAX_DEPTH) {
                char path[512];
                format_path(w, path, sizeof path);
                return fxu_fail(w->err, w->errlen, FXS_INVALID_ARGUMENT,
                                "%s: messages nested deeper than %d", path,
                                FXR_WIRECHECK_MAX_DEPTH);
            }
            w->stack[w->depth++] = (frame){ .msg = p, .end = p + n, .tag = p + i, .field = f };
            const uint8_t *v = p + i + used + hdr;
            int rc = f->type == PROTOBUF_C_TYPE_STRING ? check_string(w, v, body - hdr)
                                                       : walk(w, f->descriptor, v, body - hdr);
            w->depth--;
            if (rc || w->malformed)
                return rc;
        }
        i += used + body;
    }
    return 0;
}

int fxr_wirecheck(const ProtobufCMessageDescriptor *desc, const void *data, size_t len,
                  bool *malformed, char *err, size_t errlen)
{
    walker w = { .err = err, .errlen = errlen, .start = data };
    int rc = walk(&w, desc, data, len);
    if (malformed)
        *malformed = w.malformed;
    return rc;
}
