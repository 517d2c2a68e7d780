/*
 * kserve_stub.c - a throwaway stand-in for the KServe codec (kserve.h)
 * until the kserve-codec branch lands; the lead drops it at merge. Every
 * function refuses with UNIMPLEMENTED (501 over HTTP), except that an
 * empty body is the empty message, which the routes without a body need.
 */
#include "http/kserve.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/status.h"

#define NOT_BUILT "the KServe JSON codec is not built into this daemon (server/http/kserve_stub.c)"

Inference__ModelInferRequest *fxh_infer_request(const char *body, size_t len, size_t json_len,
                                               const char *model, const char *version,
                                               char *err, size_t errlen)
{
    (void)body, (void)len, (void)json_len, (void)model, (void)version;
    snprintf(err, errlen, "%s", NOT_BUILT);
    return NULL;
}

int fxh_infer_response(const Inference__ModelInferRequest *req,
                       const Inference__ModelInferResponse *resp, char **body, size_t *len,
                       size_t *json_len, char *err, size_t errlen)
{
    (void)req, (void)resp, (void)body, (void)len, (void)json_len;
    snprintf(err, errlen, "%s", NOT_BUILT);
    return FXS_UNIMPLEMENTED;
}

int fxh_message_json(const ProtobufCMessage *m, char **out, size_t *len, char *err, size_t errlen)
{
    (void)m, (void)out, (void)len;
    snprintf(err, errlen, "%s", NOT_BUILT);
    return FXS_UNIMPLEMENTED;
}

ProtobufCMessage *fxh_message_from_json(const ProtobufCMessageDescriptor *desc, const char *body,
                                        size_t len, char *err, size_t errlen)
{
    (void)body;
    if (len == 0) {
        ProtobufCMessage *m = calloc(1, desc->sizeof_message);
        if (m)
            protobuf_c_message_init(desc, m);
        return m;
    }
    snprintf(err, errlen, "%s", NOT_BUILT);
    return NULL;
}
