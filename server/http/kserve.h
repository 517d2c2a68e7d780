/*
 * kserve.h - the HTTP/REST bodies of the KServe v2 (Open Inference)
 * protocol and Triton's extensions <-> our gRPC messages. Pure functions:
 * no HTTP, no gRPC; the transport (server/http/) calls them on each side of
 * fxr_server_call_local.
 *
 * Inference (POST /v2/models/{m}[/versions/{v}]/infer):
 *   {"id": "r1", "parameters": {"binary_data_output": true},
 *    "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
 *                "data": [[1, 2], [3, 4]]},                (flat or nested)
 *               {"name": "s", "shape": [1], "datatype": "BYTES",
 *                "parameters": {"binary_data_size": 9}}],  (Triton's binary
 *    "outputs": [{"name": "y", "parameters": {"binary_data": true}}]}
 *   followed, when a binary size is given, by the inputs' bytes in input
 *   order (Triton's binary tensor data extension: the JSON part's length is
 *   the Inference-Header-Content-Length header). Raw bytes are little-
 *   endian, row-major; a BYTES element is a 4-byte little-endian length and
 *   its bytes. When any input is binary, every input goes into
 *   raw_input_contents (the gRPC protocol allows one form per request), the
 *   JSON ones converted.
 * The response:
 *   {"model_name": "m", "model_version": "1", "id": "r1",
 *    "outputs": [{"name": "y", "datatype": "FP32", "shape": [2],
 *                 "data": [1.5, 2]}                            (or)
 *                {"name": "y", "datatype": "FP32", "shape": [2],
 *                 "parameters": {"binary_data_size": 8}}]}
 *   and the binary outputs' bytes after the JSON, in output order.
 *
 * Other responses are proto JSON with the proto's field names and 64-bit
 * integers as numbers (what tritonclient.http reads), with Triton's
 * exceptions: the repository index is a bare array of {"name", "version",
 * "state", "reason"}, and ModelConfig's response is its "config" object.
 * Request bodies of the repository calls take Triton's plain parameter
 * values ({"parameters": {"config": "{...}", "file:1/model.bin": "<base64>"}}).
 *
 * Errors name the JSON path of what was wrong:
 *   "inputs[0].data: expected 8 elements for shape [2, 4], got 7"
 * Every size is checked before it is used (shape products, binary sizes
 * against the body, the JSON length against the body, trailing bytes).
 */
#ifndef FXH_KSERVE_H
#define FXH_KSERVE_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

#include "inference/grpc_service.pb-c.h"

/* POST .../infer body -> a ModelInferRequest for model/version. json_len:
 * the Inference-Header-Content-Length header (the JSON part's length; the
 * binary tensors follow it), or SIZE_MAX when absent (all JSON). Binary
 * inputs ("parameters": {"binary_data_size": N}) go in raw_input_contents.
 * NULL on error with a message naming the JSON path in err. Free with
 * protobuf_c_message_free_unpacked(&r->base, NULL). */
Inference__ModelInferRequest *fxh_infer_request(const char *body, size_t len, size_t json_len,
                                               const char *model, const char *version,
                                               char *err, size_t errlen);
/* A ModelInferResponse -> the HTTP body. Outputs requested with
 * "binary_data": true (or all, with the request parameter
 * "binary_data_output": true) are appended after the JSON as raw bytes and
 * *json_len is set to the JSON part's length (the caller then sends the
 * Inference-Header-Content-Length header); else *json_len = *len. The
 * request (to know which outputs want binary) is given too. 0 or an
 * fxs status with err. *body malloc'd. */
int fxh_infer_response(const Inference__ModelInferRequest *req,
                       const Inference__ModelInferResponse *resp,
                       char **body, size_t *len, size_t *json_len, char *err, size_t errlen);
/* Any other response message -> JSON text in the form Triton's HTTP API
 * gives (proto JSON with original field names, 64-bit integers as numbers;
 * ModelMetadata/ServerMetadata as KServe v2 shows them). *out malloc'd. */
int fxh_message_json(const ProtobufCMessage *m, char **out, size_t *len, char *err, size_t errlen);
/* A JSON body -> a message of type desc (repository load/unload/index
 * bodies, statistics); an empty body is the empty message. Names taken
 * from the URL (model_name) are the caller's to set. */
ProtobufCMessage *fxh_message_from_json(const ProtobufCMessageDescriptor *desc, const char *body,
                                        size_t len, char *err, size_t errlen);

#endif
