/*
 * fuzz_rpc.c - one gRPC service's request decoding, as server/rpc/call.c
 * does it for every call: fxr_wirecheck over the raw bytes with the
 * method's input descriptor, then protobuf_c_message_unpack. Built once per
 * service (FUZZ_SERVICE, see CMakeLists.txt: fuzz_rpc_admin, ...); the
 * method comes from the first input byte, the request from the rest, and
 * the method table from the protoc-c service descriptor, so a new RPC is
 * fuzzed without a change here.
 *
 * Invariants checked (abort on failure):
 *  - wirecheck.h: a walk that stops at malformed data is always followed
 *    by an unpack that fails (the RPC layer relies on it to say "cannot
 *    parse" rather than pass a half-checked message on);
 *  - a request that passes both packs back to bytes that unpack again and
 *    pass the wire check again (what a handler stores or forwards, e.g. a
 *    ModelSpec, is read back later from its packed form).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/wirecheck.h"
#include "fluxion/v1/admin.pb-c.h"
#include "fluxion/v1/cluster.pb-c.h"
#include "fluxion/v1/dataset.pb-c.h"
#include "fluxion/v1/model.pb-c.h"
#include "fluxion/v1/peer.pb-c.h"
#include "fluxion/v1/training.pb-c.h"
#include "grpc_health/v1/health.pb-c.h"
#include "grpcreflect/v1/reflection.pb-c.h"
#include "grpcreflect/v1alpha/reflection.pb-c.h"
#include "inference/grpc_service.pb-c.h"

#ifndef FUZZ_SERVICE
#error "FUZZ_SERVICE (admin, cluster, ...) must be defined"
#endif

static const struct {
    const char *name;
    const ProtobufCServiceDescriptor *desc;
} SERVICES[] = {
    {"admin", &fluxion__v1__admin_service__descriptor},
    {"cluster", &fluxion__v1__cluster_service__descriptor},
    {"dataset", &fluxion__v1__dataset_service__descriptor},
    {"health", &grpc__health__v1__health__descriptor},
    {"infer", &inference__grpcinference_service__descriptor},
    {"model", &fluxion__v1__model_service__descriptor},
    {"peer", &fluxion__v1__peer_service__descriptor},
    /* both reflection versions: the same messages in two packages */
    {"reflection", &grpc__reflection__v1__server_reflection__descriptor},
    {"reflection", &grpc__reflection__v1alpha__server_reflection__descriptor},
    {"training", &fluxion__v1__training_service__descriptor},
};

#define MAX_METHODS 256
static const ProtobufCMessageDescriptor *g_inputs[MAX_METHODS];
static unsigned g_n;

static void init(void)
{
    if (g_n)
        return;
    for (size_t s = 0; s < sizeof SERVICES / sizeof SERVICES[0]; s++) {
        if (strcmp(SERVICES[s].name, FUZZ_SERVICE) != 0)
            continue;
        for (unsigned m = 0; m < SERVICES[s].desc->n_methods && g_n < MAX_METHODS; m++)
            g_inputs[g_n++] = SERVICES[s].desc->methods[m].input;
    }
    if (!g_n) {
        fprintf(stderr, "fuzz_rpc: no service named %s\n", FUZZ_SERVICE);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *desc = g_inputs[data[0] % g_n];
    data++, size--;

    char err[512];
    bool malformed = false;
    int rc = fxr_wirecheck(desc, data, size, &malformed, err, sizeof err);
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, size, data);
    if (malformed && msg) {
        fprintf(stderr, "fuzz_rpc: %s: the wire check stopped at malformed data that "
                        "protobuf-c unpacks\n", desc->name);
        abort();
    }
    if (rc != 0 || malformed || !msg) {
        if (rc != 0 && !err[0])
            abort(); /* a refusal must say why */
        protobuf_c_message_free_unpacked(msg, NULL);
        return 0;
    }
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        abort();
    if (protobuf_c_message_pack(msg, buf) != n)
        abort();
    bool again_malformed = false;
    err[0] = 0;
    if (fxr_wirecheck(desc, buf, n, &again_malformed, err, sizeof err) != 0 || again_malformed) {
        fprintf(stderr, "fuzz_rpc: %s: refused once packed again: %s\n", desc->name, err);
        abort();
    }
    ProtobufCMessage *again = protobuf_c_message_unpack(desc, NULL, n, buf);
    if (!again)
        abort();
    protobuf_c_message_free_unpacked(again, NULL);
    free(buf);
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}
