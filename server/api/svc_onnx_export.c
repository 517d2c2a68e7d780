/*
 * svc_onnx_export.c - ModelService/ExportOnnx: a stored version (its spec
 * and weights) converted by onnx/export.c and streamed in chunks, as
 * ExportWeights streams the safetensors file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "models/models.h"
#include "fluxion/v1/model.pb-c.h"
#include "onnx/export.h"
#include "base/log.h"

void fxa_export_onnx(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__ExportOnnxRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    fxdb_model_rec rec;
    int64_t version;
    if (!fxa_export_target(call, d, req->name, req->version, key, &rec, &version))
        return;
    /* an explicit version must exist; the version's own spec revision (a
     * `model update` since changes the latest's) */
    int rc = fxm_resolve_version(&rec, version, &version, err, sizeof err);
    if (!rc)
        rc = fxm_use_version_spec(d->store, &rec, version, err, sizeof err);
    if (rc) {
        fxdb_model_rec_free(&rec);
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__ModelSpec *spec = fluxion__v1__model_spec__unpack(NULL, rec.spec_len, rec.spec);
    int64_t model_id = rec.id; /* the weights of that model row, not of one created again
                                  since under the name (ABORTED): another spec maybe */
    fxdb_model_rec_free(&rec);
    if (!spec) {
        fxr_fail(call, FXS_INTERNAL, "the stored spec of '%s' does not parse", req->name);
        return;
    }
    void *w = NULL;
    size_t wlen = 0;
    uint8_t *onnx = NULL;
    size_t olen = 0;
    rc = fxdb_store_read_weights_of(d->store, key, model_id, version, &w, &wlen, err, sizeof err);
    if (!rc)
        rc = fxon_export(spec, w, wlen, fxa_show(call, key), &onnx, &olen, err, sizeof err);
    free(w);
    protobuf_c_message_free_unpacked(&spec->base, NULL);
    if (rc) {
        fxr_fail(call, rc, "model '%s' version %lld: %s", req->name, (long long)version, err);
        return;
    }
    fxl_log(FXL_INFO, "models", "onnx export model=%s version=%lld bytes=%zu", key,
            (long long)version, olen);
    size_t chunk = req->chunk_bytes ? req->chunk_bytes : d->chunk_bytes;
    if (chunk < 4096)
        chunk = 4096;
    if (chunk > d->max_message_bytes - 4096)
        chunk = d->max_message_bytes - 4096;
    size_t off = 0;
    do {
        Fluxion__V1__OnnxChunk c = FLUXION__V1__ONNX_CHUNK__INIT;
        if (off == 0) {
            c.version = version;
            c.total_bytes = olen;
        }
        size_t n = olen - off < chunk ? olen - off : chunk;
        c.data.data = onnx + off;
        c.data.len = n;
        if (fxr_send(call, &c.base) != 0) {
            fxr_fail(call, FXS_CANCELLED, "ONNX export of '%s' cancelled", req->name);
            free(onnx);
            return;
        }
        off += n;
    } while (off < olen);
    free(onnx);
    fxr_finish(call);
}
