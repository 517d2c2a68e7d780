/*
 * inferjson.h - tensors in JSON <-> Open Inference Protocol messages
 * (inference.ModelInferRequest / ModelInferResponse), for `fluxion predict`
 * and any C client that takes tensors as JSON.
 *
 * Input JSON, one of two forms:
 *   short:  {"x": [[1, 2, 3, 4], [5, 6, 7, 8]], "mask": 1}
 *           one member per input; nested arrays give the shape ([] nesting:
 *           shape [2, 4] here; a bare value: shape []), the datatype comes
 *           from the model's metadata.
 *   KServe: {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
 *                        "data": [1, 2, 3, 4, 5, 6, 7, 8]}],
 *            "outputs": [{"name": "y"}], "id": "req-1"}
 *           the REST form of the protocol: "data" flat or nested (its
 *           element count must match "shape"; "shape" may be left out to
 *           take the nesting), "datatype" optional where metadata is given.
 *           "outputs" and "id" are optional.
 *   The KServe form is recognised by an "inputs" member holding an array of
 *   objects (or an empty array); anything else is the short form.
 * Datatypes: BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64,
 * FP32, FP64, BYTES (JSON strings). Values are range-checked per datatype;
 * numbers for float types may also be "NaN", "Infinity", "-Infinity".
 *
 * Output JSON, outputs in the response's order:
 *   {"y": {"shape": [2, 3], "datatype": "FP32", "data": [...flat...]}}
 *
 * Errors name the JSON path: "x[1]: expected 4 elements like x[0], got 3".
 */
#ifndef FXC_INFERJSON_H
#define FXC_INFERJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "inference/grpc_service.pb-c.h"
#include "jsonpath.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Builds a request for model (version: NULL or "" for the latest) from
 * input JSON. meta (optional) gives datatypes the JSON leaves out. raw:
 * tensors go in raw_input_contents (little-endian, row-major; BYTES
 * elements as a 4-byte little-endian length and the bytes) instead of
 * typed contents. NULL on error with "<path>: <what>" in err. Free with
 * protobuf_c_message_free_unpacked(&req->base, NULL). */
Inference__ModelInferRequest *inferjson_request(const json_t *in, const char *model,
                                                const char *version,
                                                const Inference__ModelMetadataResponse *meta,
                                                bool raw, char *err, size_t errlen);

/* ---- The pieces, for codecs that read the rest of the JSON themselves
 * (server/http/kserve.c). Each takes the path of the tensor's object in c
 * ("inputs[0]"), extends it for what it reads, and on error leaves it
 * there with "<path>: <what>" in c->err. */

#define INFERJSON_MAX_DIMS 32

/* A declared "shape" (member shape of the tensor's object, path
 * "<c>.shape"): up to INFERJSON_MAX_DIMS integers >= 0 whose product fits
 * 64 bits, into shape[], *ndim and *count. */
int inferjson_shape(jsonpath *c, const json_t *shape_json, int64_t *shape, int *ndim,
                    uint64_t *count);

/* One input tensor: t->name, datatype, shape, and data (the member "data",
 * flat or nested) converted into t->contents, or into *raw when raw is not
 * NULL. shape_json NULL: the data's nesting is the shape; else the data's
 * element count must match it. */
int inferjson_input(jsonpath *c, const char *name, const json_t *data, const json_t *shape_json,
                    const char *datatype, Inference__ModelInferRequest__InferInputTensor *t,
                    ProtobufCBinaryData *raw);

/* Checks raw tensor bytes against a datatype and element count: count *
 * the element size, or for BYTES exactly count length-prefixed elements.
 * what names the bytes in the message ("binary data"). */
int inferjson_check_raw(jsonpath *c, const char *datatype, uint64_t count, const char *what,
                        const void *data, size_t len);

/* Output i of resp as {"shape": [...], "datatype": "...", "data": [...]}
 * (NULL on error). */
json_t *inferjson_output(jsonpath *c, const Inference__ModelInferResponse *resp, size_t i);

/* Output i's elements as raw bytes (a checked copy of
 * raw_output_contents[i], or the typed contents converted) into *out,
 * malloc'd (free out->data). */
int inferjson_output_raw(jsonpath *c, const Inference__ModelInferResponse *resp, size_t i,
                         ProtobufCBinaryData *out);

/* The outputs of a response as JSON (typed contents or raw_output_contents).
 * NULL on error (an element count that does not match the shape, a raw
 * buffer of the wrong size, an unknown datatype) with the reason in err. */
json_t *inferjson_response(const Inference__ModelInferResponse *resp, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
