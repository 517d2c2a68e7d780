/*
 * wirecheck.h - every string field of an incoming request, checked on the
 * wire before protobuf-c unpacks it and before any handler sees it.
 *
 * protobuf-c accepts any bytes in a `string` field and hands them over as a
 * C string. Stored and sent back, invalid UTF-8 makes standard protobuf
 * clients (Python, Go, Java) refuse every later reply that carries it
 * (ListModels for everyone, across restarts); a NUL byte silently cuts a
 * name short; and free text without a limit makes every listing as big as
 * the biggest description. So the RPC layer walks the serialized message
 * with its descriptor and checks each string field, at any depth (nested,
 * repeated, map and oneof fields): valid UTF-8, no NUL byte, and at most
 * the field's byte limit (the table in wirecheck.c, by field name;
 * docs/limits.md). `bytes` fields are not text and are not checked. Domain
 * modules keep their own, stricter rules (model names, graph names).
 *
 * A field number 0 (a multi-byte tag can spell it, and protobuf-c keeps it
 * as an unknown field that it cannot pack back readably) is refused too.
 *
 * Malformed wire data is protobuf_c_message_unpack's to refuse: the walk
 * stops there and says so (it never reads outside data[0..len), whatever
 * the bytes). Its idea of well-formed is protobuf-c's, so a walk that
 * stops early is always followed by an unpack that fails.
 */
#ifndef FXR_WIRECHECK_H
#define FXR_WIRECHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

/* The limit of a string field the table does not name. */
#define FXR_STRING_LIMIT_DEFAULT ((size_t)64 << 10)
/* Messages nested deeper than this are refused (no Fluxion message nests
 * past 5; only a recursive type could, and the walk recurses). */
#define FXR_WIRECHECK_MAX_DEPTH 64

/* Checks the string fields of data[0..len), a serialized `desc` message.
 * Returns 0, or FXS_INVALID_ARGUMENT with the field's path and the reason
 * in err ("spec.inputs[0].name: invalid UTF-8 at byte 3",
 * "spec.nodes[1].attrs[\"activation\"].s: 70000 bytes, the limit is 65536",
 * "name: contains a NUL byte at byte 3"). Paths use the .proto field names;
 * a repeated field's index counts its occurrences on the wire; a map entry
 * shows its string key when it has a printable one.
 * *malformed (may be NULL) is set to whether the walk stopped at data that
 * is not well-formed protobuf (0 is returned then, unless a string before
 * that point was refused). */
int fxr_wirecheck(const ProtobufCMessageDescriptor *desc, const void *data, size_t len,
                  bool *malformed, char *err, size_t errlen);

/* The byte limit of a string field by its .proto name: the table's entry
 * ("description", "name", "*_name", ...) or FXR_STRING_LIMIT_DEFAULT. */
size_t fxr_string_limit(const char *field_name);

#endif
