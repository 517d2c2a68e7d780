/*
 * fuzz_pbjson.c - the JSON <-> protobuf codec (common/pbjson.c) as the CLI
 * uses it: a file's JSON -> a request (`model create`'s CreateModelRequest,
 * `job submit`'s JobSpec, and any request message of the Fluxion
 * services), and the server's answers -> JSON (cli_message_json's flags).
 *
 * Input: byte 0 picks the direction (bit 7: protobuf -> JSON, else JSON ->
 * protobuf), the JSON flags (bits 4-6) and, with byte 1, the message type
 * from the services' method tables; the rest is the JSON text or the
 * packed message.
 *
 * Invariant (abort): a message (decoded from JSON or unpacked) that
 * encodes to JSON with any flags decodes back to a message that encodes to
 * the same JSON. (pbjson.h: its JSON is the proto3 JSON mapping, which
 * round-trips; unknown fields have no JSON form.)
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pbjson.h"
#include "fluxion/v1/admin.pb-c.h"
#include "fluxion/v1/cluster.pb-c.h"
#include "fluxion/v1/dataset.pb-c.h"
#include "fluxion/v1/model.pb-c.h"
#include "fluxion/v1/training.pb-c.h"

static const ProtobufCServiceDescriptor *const SERVICES[] = {
    &fluxion__v1__admin_service__descriptor,   &fluxion__v1__cluster_service__descriptor,
    &fluxion__v1__dataset_service__descriptor, &fluxion__v1__model_service__descriptor,
    &fluxion__v1__training_service__descriptor,
};

#define MAX_TYPES 512
static const ProtobufCMessageDescriptor *g_types[MAX_TYPES];
static unsigned g_n;

static void add(const ProtobufCMessageDescriptor *d)
{
    for (unsigned i = 0; i < g_n; i++)
        if (g_types[i] == d)
            return;
    if (g_n < MAX_TYPES)
        g_types[g_n++] = d;
}

static void init(void)
{
    if (g_n)
        return;
    /* the CLI's own documents first, so that small selectors reach them */
    add(&fluxion__v1__create_model_request__descriptor);
    add(&fluxion__v1__job_spec__descriptor);
    add(&fluxion__v1__model_spec__descriptor);
    for (size_t s = 0; s < sizeof SERVICES / sizeof SERVICES[0]; s++)
        for (unsigned m = 0; m < SERVICES[s]->n_methods; m++) {
            add(SERVICES[s]->methods[m].input);
            add(SERVICES[s]->methods[m].output);
        }
}

/* m -> JSON (flags) -> a message that must pack as m does. */
static void round_trip(const ProtobufCMessage *m, unsigned flags)
{
    char err[512];
    json_t *j = pbjson_encode(m, flags, err, sizeof err);
    if (!j)
        return; /* e.g. a string field holding invalid UTF-8 (refused, named) */
    /* through text, as between the CLI and a file */
    char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (!text)
        abort();
    json_error_t jerr;
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!back) {
        fprintf(stderr, "fuzz_pbjson: %s: encoded JSON does not parse: %s\n%s\n",
                m->descriptor->name, jerr.text, text);
        abort();
    }
    ProtobufCMessage *m2 = pbjson_decode(m->descriptor, back, err, sizeof err);
    json_decref(back);
    if (!m2) {
        fprintf(stderr, "fuzz_pbjson: %s: encoded JSON (flags %u) refused: %s\n%s\n",
                m->descriptor->name, flags, err, text);
        abort();
    }
    /* compared as JSON: unknown fields (kept by protobuf-c) have no JSON form */
    json_t *j2 = pbjson_encode(m2, flags, err, sizeof err);
    char *text2 = j2 ? json_dumps(j2, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!text2 || strcmp(text, text2) != 0) {
        fprintf(stderr, "fuzz_pbjson: %s: JSON (flags %u) does not round-trip:\n%s\n%s\n",
                m->descriptor->name, flags, text, text2 ? text2 : err);
        abort();
    }
    json_decref(j2);
    free(text2);
    free(text);
    protobuf_c_message_free_unpacked(m2, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 2)
        return 0;
    bool to_json = data[0] & 0x80;
    unsigned flags = (data[0] >> 4) & 7;
    const ProtobufCMessageDescriptor *d = g_types[(((unsigned)data[0] & 15) << 8 | data[1]) % g_n];
    data += 2, size -= 2;

    ProtobufCMessage *m;
    if (to_json) {
        m = protobuf_c_message_unpack(d, NULL, size, data);
    } else {
        json_error_t jerr;
        json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
            return 0;
        char err[512] = "";
        m = pbjson_decode(d, j, err, sizeof err);
        json_decref(j);
        if (!m && !err[0])
            abort(); /* a refusal names the path */
    }
    if (m) {
        round_trip(m, flags);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
