/*
 * fuzz_inferjson.c - the CLI's side of inference in JSON (common/
 * inferjson*.c): `fluxion infer`'s input file -> a ModelInferRequest
 * (inferjson_request, with the model's metadata for the datatypes the file
 * leaves out, typed or raw contents), and the server's ModelInferResponse
 * -> JSON (inferjson_response: raw output bytes against their datatypes
 * and shapes). The daemon's HTTP decoding of the same JSON is fuzz_kserve.
 *
 * Input: byte 0 bit 0: 0 = request (bit 1: raw, bit 2: with metadata;
 * the rest is the JSON file), 1 = response (the rest is the packed
 * ModelInferResponse). A request built must pack; a response that is
 * refused says why.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "inferjson.h"

/* A model with an FP32 [-1, 4] input, an INT64 [-1] one and a BYTES one. */
static Inference__ModelMetadataResponse *meta(void)
{
    static Inference__ModelMetadataResponse m = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    static Inference__ModelMetadataResponse__TensorMetadata t[3] = {
        INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT,
        INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT,
        INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT};
    static Inference__ModelMetadataResponse__TensorMetadata *in[3] = {&t[0], &t[1], &t[2]};
    static int64_t s0[] = {-1, 4}, s1[] = {-1}, s2[] = {-1};
    if (!m.n_inputs) {
        t[0].name = "x", t[0].datatype = "FP32", t[0].n_shape = 2, t[0].shape = s0;
        t[1].name = "ids", t[1].datatype = "INT64", t[1].n_shape = 1, t[1].shape = s1;
        t[2].name = "text", t[2].datatype = "BYTES", t[2].n_shape = 1, t[2].shape = s2;
        m.name = "m";
        m.inputs = in;
        m.n_inputs = 3;
    }
    return &m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    data++, size--;
    char err[512] = "";
    if (mode & 1) {
        Inference__ModelInferResponse *r = inference__model_infer_response__unpack(NULL, size, data);
        if (!r)
            return 0;
        json_t *j = inferjson_response(r, err, sizeof err);
        if (!j && !err[0])
            abort();
        if (j) {
            char *text = json_dumps(j, JSON_COMPACT);
            if (!text)
                abort();
            free(text);
            json_decref(j);
        }
        inference__model_infer_response__free_unpacked(r, NULL);
        return 0;
    }
    json_error_t jerr;
    json_t *in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!in)
        return 0;
    Inference__ModelInferRequest *req =
        inferjson_request(in, "m", NULL, (mode & 4) ? meta() : NULL, mode & 2, err, sizeof err);
    json_decref(in);
    if (!req) {
        if (!err[0])
            abort();
        return 0;
    }
    size_t n = protobuf_c_message_get_packed_size(&req->base);
    uint8_t *b = malloc(n ? n : 1);
    if (!b || protobuf_c_message_pack(&req->base, b) != n)
        abort();
    free(b);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return 0;
}
