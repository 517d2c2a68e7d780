/*
 * svc_onnx.c - fluxion.v1.ModelService's ONNX methods: ImportOnnx (a
 * client stream of ImportOnnxRequest) turns an ONNX file into a model
 * through server/onnx/ and creates it exactly as CreateModel does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/log.h"
#include "fluxion/v1/model.pb-c.h"
#include "onnx/onnx.h"

/* The first message's fields, kept while the file's bytes arrive. */
typedef struct {
    char name[FXP_KEY_MAX];
    char *description;
    bool no_load;
    bool named;
} onnx_head;

/* Receives the whole stream into *buf, the total checked against the
 * daemon's import limit before each chunk is kept. 0 or a status with err. */
static int receive_file(fxr_call *call, fxa_daemon *d, onnx_head *h, uint8_t **buf, size_t *len,
                        char *err, size_t errlen)
{
    size_t cap = 0;
    ProtobufCMessage *msg;
    int r, status = 0;
    while ((r = fxr_recv(call, &msg)) == 1) {
        Fluxion__V1__ImportOnnxRequest *c = (void *)msg;
        if (!h->named) {
            if (!c->name[0]) {
                status = FXS_INVALID_ARGUMENT;
                snprintf(err, errlen, "the first message must name the model (field name)");
            } else if (strlen(c->name) >= sizeof h->name) {
                status = FXS_INVALID_ARGUMENT;
                snprintf(err, errlen, "name: longer than any model name");
            } else if (!(h->description = strdup(c->description))) {
                status = FXS_RESOURCE_EXHAUSTED;
                snprintf(err, errlen, "out of memory");
            } else {
                snprintf(h->name, sizeof h->name, "%s", c->name);
                h->no_load = c->no_load;
                h->named = true;
            }
        }
        if (!status && c->data.len > d->max_import_bytes - *len) {
            status = FXS_RESOURCE_EXHAUSTED;
            snprintf(err, errlen,
                     "the ONNX file is larger than the limit of %llu bytes "
                     "(--max-import-mb)",
                     (unsigned long long)d->max_import_bytes);
        }
        if (!status && *len + c->data.len > cap) {
            size_t ncap = cap ? cap : 1 << 20;
            while (ncap < *len + c->data.len)
                ncap *= 2;
            uint8_t *nb = realloc(*buf, ncap);
            if (!nb) {
                status = FXS_RESOURCE_EXHAUSTED;
                snprintf(err, errlen, "out of memory receiving %zu bytes", *len + c->data.len);
            } else {
                *buf = nb;
                cap = ncap;
            }
        }
        if (!status && c->data.len) {
            memcpy(*buf + *len, c->data.data, c->data.len);
            *len += c->data.len;
        }
        protobuf_c_message_free_unpacked(msg, NULL);
        if (status)
            return status;
    }
    if (r < 0) {
        snprintf(err, errlen, "%s",
                 fxr_cancelled(call) ? "import cancelled"
                                     : "a message does not parse as ImportOnnxRequest");
        return fxr_cancelled(call) ? FXS_CANCELLED : FXS_INVALID_ARGUMENT;
    }
    if (!h->named) {
        snprintf(err, errlen, "no messages received");
        return FXS_INVALID_ARGUMENT;
    }
    if (!*len) {
        snprintf(err, errlen, "the ONNX file is empty (no data received)");
        return FXS_INVALID_ARGUMENT;
    }
    return 0;
}

void fxa_import_onnx(fxr_call *call, const ProtobufCMessage *unused, void *data)
{
    (void)unused;
    fxa_daemon *d = data;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    onnx_head h = {.named = false};
    uint8_t *buf = NULL, *weights = NULL;
    size_t len = 0, wlen = 0;
    Fluxion__V1__ModelSpec *spec = NULL;
    int status = receive_file(call, d, &h, &buf, &len, err, sizeof err);
    if (status) {
        fxr_fail(call, status, "%s", err);
        goto out;
    }
    /* The name first: a bad or foreign name fails before any work. */
    if (!fxa_key(call, "model", h.name, key, sizeof key))
        goto out;
    /* A name in use fails before the conversion (the store checks again). */
    fxdb_model_rec rec;
    if (fxdb_store_get_model(d->store, key, &rec, err, sizeof err) == 0) {
        fxdb_model_rec_free(&rec);
        fxr_fail(call, FXS_ALREADY_EXISTS, "model \"%s\" already exists", h.name);
        goto out;
    }
    status = fxon_import(buf, len, &spec, &weights, &wlen, err, sizeof err);
    free(buf);
    buf = NULL;
    if (status) {
        fxl_log(FXL_INFO, "models", "onnx import refused model=%s err=\"%s\"", key, err);
        fxr_fail(call, status, "onnx: %s", err);
        goto out;
    }
    char source[64];
    snprintf(source, sizeof source, "onnx import (%zu bytes)", len);
    fxa_create_model(call, d, key, h.description, spec, weights, wlen, 0, h.no_load, source);
out:
    free(buf);
    free(weights);
    free(h.description);
    if (spec)
        protobuf_c_message_free_unpacked(&spec->base, NULL);
}
