/*
 * svc_dataset.c - fluxion.v1.DatasetService: streamed uploads, and looking
 * at and deleting stored datasets (the work is in datasets/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/log.h"
#include "base/status.h"
#include "datasets/datasets.h"
#include "fluxion/v1/dataset.pb-c.h"

/* Feeds one chunk to the upload, beginning it at the first; 0 or a status. */
/* Feeds one chunk to the upload, beginning it at the first; 0 or a status.
 * -1: the call was failed already (a name the caller may not use). */
static int take_chunk(fxa_daemon *d, fxr_call *call, fxds_upload **u, char *key,
                      const Fluxion__V1__UploadDatasetChunk *c, char *err, size_t errlen)
{
    if (!*u) {
        if (!c->name[0]) {
            snprintf(err, errlen, "name: the first chunk must name the dataset");
            return FXS_INVALID_ARGUMENT;
        }
        if (!fxa_key(call, "dataset", c->name, key, FXP_KEY_MAX))
            return -1;
        int rc = fxds_upload_begin(d->datasets, key, c->description, u, err, errlen);
        if (rc)
            return rc;
    } else if (c->name[0] && strcmp(c->name, fxds_upload_name(*u)) != 0 &&
               strcmp(c->name, fxa_show(call, fxds_upload_name(*u))) != 0) {
        snprintf(err, errlen, "name: chunk names dataset '%.200s' but the upload is of '%s'",
                 c->name, fxa_show(call, fxds_upload_name(*u)));
        return FXS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < c->n_tensors; i++) {
        int rc = fxds_upload_add(*u, c->tensors[i], err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

static void upload_dataset(fxr_call *call, const ProtobufCMessage *unused, void *data)
{
    fxa_daemon *d = data;
    char err[FXS_ERRLEN] = "", key[FXP_KEY_MAX];
    fxds_upload *u = NULL;
    ProtobufCMessage *msg;
    int r, rc = 0;
    while (!rc && (r = fxr_recv(call, &msg)) == 1) {
        rc = take_chunk(d, call, &u, key, (const void *)msg, err, sizeof err);
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    if (rc < 0)
        return; /* answered */
    if (!rc && r < 0) {
        bool cancelled = fxr_cancelled(call);
        rc = cancelled ? FXS_CANCELLED : FXS_INVALID_ARGUMENT;
        snprintf(err, sizeof err, "%s", cancelled ? "upload cancelled"
                                                  : "a chunk does not parse as UploadDatasetChunk");
    }
    if (!rc && !u) {
        rc = FXS_INVALID_ARGUMENT;
        snprintf(err, sizeof err, "no chunks received (the first must name the dataset)");
    }
    if (rc) {
        if (u)
            fxl_log(FXL_INFO, "datasets", "upload aborted dataset=%s status=%s error=\"%s\"",
                    fxds_upload_name(u), fxs_status_name(rc), err);
        fxds_upload_abort(u);
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__Dataset *info = NULL;
    rc = fxds_upload_commit(u, &info, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    fxa_show_in_place(call, info->name);
    fxr_reply(call, &info->base);
    fluxion__v1__dataset__free_unpacked(info, NULL);
}

static void get_dataset(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__GetDatasetRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    Fluxion__V1__Dataset *info = NULL;
    if (!fxa_key(call, "dataset", req->name, key, sizeof key))
        return;
    int rc = fxds_dataset_get(d->datasets, key, &info, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    fxa_show_in_place(call, info->name);
    fxr_reply(call, &info->base);
    fluxion__v1__dataset__free_unpacked(info, NULL);
}

static void list_datasets(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    char err[FXS_ERRLEN];
    Fluxion__V1__Dataset **infos = NULL;
    int n = 0;
    int rc = fxds_dataset_list(d->datasets, fxa_list_team(call), &infos, &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    for (int i = 0; i < n; i++)
        fxa_show_in_place(call, infos[i]->name);
    Fluxion__V1__ListDatasetsResponse resp = FLUXION__V1__LIST_DATASETS_RESPONSE__INIT;
    resp.datasets = infos;
    resp.n_datasets = (size_t)n;
    fxr_reply(call, &resp.base);
    for (int i = 0; i < n; i++)
        fluxion__v1__dataset__free_unpacked(infos[i], NULL);
    free(infos);
}

static void delete_dataset(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__DeleteDatasetRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    if (!fxa_key(call, "dataset", req->name, key, sizeof key))
        return;
    int rc = fxds_dataset_delete(d->datasets, key, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__DeleteDatasetResponse resp = FLUXION__V1__DELETE_DATASET_RESPONSE__INIT;
    fxr_reply(call, &resp.base);
}

int fxa_register_dataset_service(fxa_daemon *d)
{
    static const fxr_method methods[] = {
        { "UploadDataset", FXR_CLIENT_STREAM, FXP_WRITE, upload_dataset },
        { "GetDataset", FXR_UNARY, FXP_READ, get_dataset },
        { "ListDatasets", FXR_UNARY, FXP_READ, list_datasets },
        { "DeleteDataset", FXR_UNARY, FXP_WRITE, delete_dataset },
    };
    return fxr_server_add_service(d->rpc, &fluxion__v1__dataset_service__descriptor, methods,
                                  (int)(sizeof methods / sizeof methods[0]), d);
}
