/*
 * pbjson.h - JSON (jansson) <-> any protobuf-c message, by reflection over
 * its ProtobufCMessageDescriptor.
 *
 * The mapping is proto3's JSON mapping, close enough that the output of
 * protoc's Python json_format parses and that our output reads back:
 *   - field names: lowerCamelCase ("noLoad") or the proto name ("no_load")
 *     on input; the encoder writes one of them (PBJSON_ORIGINAL_NAMES).
 *   - 64-bit integers: JSON numbers or decimal strings on input; strings on
 *     output unless PBJSON_INT64_NUMBERS. 32-bit integers: numbers (strings
 *     accepted). A number with an integral value (1.0, 1e3) is an integer.
 *   - float/double: numbers, or "NaN", "Infinity", "-Infinity".
 *   - bytes: base64 (standard or URL-safe alphabet, padding optional);
 *     written standard with padding.
 *   - enums: the value's name, or its number.
 *   - repeated: arrays; map<K,V> (protoc-c's repeated *Entry messages):
 *     objects keyed by the key as a string.
 *   - null for a field means "not set" (its default).
 *   - oneofs: at most one member may be given.
 * One addition: fluxion.v1.AttrValue also has a friendly form, a plain JSON
 * value: integer -> i, other number -> f, string -> s, bool -> b, array of
 * integers (or []) -> ints, array of numbers with a non-integer -> floats,
 * array of strings -> strings. The canonical object form ({"i": "3"}) is
 * accepted too; the encoder writes the friendly form unless
 * PBJSON_CANONICAL_ATTRS (or the value cannot be written that way: NaN, an
 * empty float or string list, an unset value).
 *
 * Errors name the JSON path of the offending value and what was expected:
 *   "spec.nodes[2].attrs.units: expected an integer, got a string"
 *   "spec.nodes[0].atrs: unknown field of fluxion.v1.Node"
 * Keys in paths are written as the input spelled them.
 *
 * Messages returned are allocated with malloc, field by field, exactly as
 * protobuf_c_message_unpack would with the default allocator: free them with
 * protobuf_c_message_free_unpacked(msg, NULL).
 */
#ifndef FXC_PBJSON_H
#define FXC_PBJSON_H

#include <stddef.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    PBJSON_ORIGINAL_NAMES = 1u << 0,  /* proto field names, not lowerCamelCase */
    PBJSON_EMIT_DEFAULTS = 1u << 1,   /* also fields at their default value
                                         (not unset messages or oneofs) */
    PBJSON_INT64_NUMBERS = 1u << 2,   /* 64-bit integers as JSON numbers
                                         (uint64 over INT64_MAX stays a string) */
    PBJSON_CANONICAL_ATTRS = 1u << 3, /* AttrValue in proto3 form, not friendly */
};

/* JSON -> a new message of type desc. NULL on error, with "<path>: <what>"
 * in err ("top level: ..." for the root value). */
ProtobufCMessage *pbjson_decode(const ProtobufCMessageDescriptor *desc, const json_t *json,
                                char *err, size_t errlen);

/* Message -> a new JSON object (json_decref it). NULL on error (a string
 * field holding invalid UTF-8, out of memory) with the path in err. */
json_t *pbjson_encode(const ProtobufCMessage *msg, unsigned flags, char *err, size_t errlen);

/* lowerCamelCase JSON name of a proto field name ("no_load" -> "noLoad"),
 * as protoc computes it. Truncated to fit; returns buf. */
char *pbjson_json_name(const char *field_name, char *buf, size_t buflen);

/* The double nearest the shortest decimal that reads back as f (0.1f ->
 * 0.1, not 0.10000000149011612): float fields and FP32 tensors go into
 * JSON this way, so that a writer printing shortest doubles (jsonout.h)
 * shows what a person would write. NaN and infinities pass through. */
double pbjson_float_to_double(float f);

/* Base64 (standard alphabet, padded). Returns a malloc'd NUL-terminated
 * string, NULL on out of memory. */
char *pbjson_base64_encode(const void *data, size_t len);
/* Decodes standard or URL-safe base64, padding optional, no whitespace.
 * Returns 0 and a malloc'd buffer in *out (NULL when *outlen is 0), or -1
 * on malformed input or out of memory. */
int pbjson_base64_decode(const char *text, size_t textlen, unsigned char **out, size_t *outlen);

#ifdef __cplusplus
}
#endif
#endif
