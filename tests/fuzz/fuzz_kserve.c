/*
 * fuzz_kserve.c - the HTTP port's request bodies (server/http/kserve.c):
 * POST .../infer (JSON, binary tensors after Inference-Header-Content-
 * Length; common/inferjson*.c decodes the tensors) and the other JSON
 * bodies (repository index/load/unload) via fxh_message_from_json.
 *
 * Input: byte 0 picks the body kind; for infer, bytes 1-2 give the header
 * length (0xffff: absent) and the rest is the body. A decoded infer
 * request must pack (a request that reaches the RPC layer as a message).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/kserve.h"

static const ProtobufCMessageDescriptor *const BODIES[] = {
    &inference__repository_index_request__descriptor,
    &inference__repository_model_load_request__descriptor,
    &inference__repository_model_unload_request__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    unsigned kind = data[0] % 4;
    char err[512] = "";
    if (kind == 0) {
        size_t hdr = (size_t)data[1] << 8 | data[2];
        data += 3, size -= 3;
        size_t json_len = hdr == 0xffff ? SIZE_MAX : hdr;
        Inference__ModelInferRequest *r =
            fxh_infer_request((const char *)data, size, json_len, "m", "1", err, sizeof err);
        if (!r) {
            if (!err[0])
                abort();
            return 0;
        }
        size_t n = protobuf_c_message_get_packed_size(&r->base);
        uint8_t *b = malloc(n ? n : 1);
        if (!b || protobuf_c_message_pack(&r->base, b) != n)
            abort();
        free(b);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return 0;
    }
    data++, size--;
    ProtobufCMessage *m =
        fxh_message_from_json(BODIES[kind - 1], (const char *)data, size, err, sizeof err);
    if (!m && !err[0])
        abort();
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
