/*
 * kserve.h - the KServe v2 / Triton HTTP JSON codec (prefix fxh_): pure
 * functions, no HTTP, no gRPC. Owned by the kserve-codec helper; this is
 * the interface of the shared plan (OPS_SPEC section 3), so the HTTP
 * transport builds against it before the codec lands.
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
 * bodies, statistics); an empty body is the empty message. */
ProtobufCMessage *fxh_message_from_json(const ProtobufCMessageDescriptor *desc, const char *body,
                                        size_t len, char *err, size_t errlen);

#endif
