/* svc_cluster.c - fluxion.v1.ClusterService: what the daemon runs on and does. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "api/api.h"
#include "fluxion/v1/cluster.pb-c.h"

/* One enabled device: memory as the engine reports it. A device whose
 * driver stopped answering is listed with its name and no figures. */
static void device_msg(const fxa_daemon *d, fx_device dev, Fluxion__V1__Device *m, char *name,
                       char *model, char *cc)
{
    *m = (Fluxion__V1__Device)FLUXION__V1__DEVICE__INIT;
    m->name = (char *)fx_device_str(dev, name, 32);
    m->kind = dev.type == FX_DEV_CPU ? "cpu" : "cuda";
    m->model = model;
    m->compute_capability = cc;
    snprintf(model, 96, "%s", m->name);
    cc[0] = 0;
    fx_device_info info;
    if (fx_device_get_info(dev, &info) != FX_OK)
        return;
    snprintf(model, 96, "%s", info.name);
    m->memory_total_bytes = info.total_bytes;
    m->memory_free_bytes = info.free_bytes;
    m->memory_limit_bytes = info.limit_bytes;
    if (dev.type == FX_DEV_CPU) {
        m->threads = d->engine_threads;
        if (info.total_bytes >= info.free_bytes)
            m->memory_used_bytes = info.total_bytes - info.free_bytes;
        return;
    }
    snprintf(cc, 16, "%d.%d", info.cc_major, info.cc_minor);
    m->memory_used_bytes = info.used_bytes;
    fx_device_mem_stats ms;
    if (fx_device_mem_stats_get(dev, &ms) == FX_OK)
        m->memory_reserved_bytes = ms.reserved;
}

static void get_status(fxr_call *call, const ProtobufCMessage *req, void *data)
{
    fxa_daemon *d = data;
    char err[512];
    fxdb_model_rec *recs = NULL;
    int n = 0;
    int rc = fxdb_store_list_models(d->store, NULL, &recs, &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    for (int i = 0; i < n; i++)
        fxdb_model_rec_free(&recs[i]);
    free(recs);

    Fluxion__V1__Device devs[FXSV_MAX_DEVICES], *pdevs[FXSV_MAX_DEVICES];
    char names[FXSV_MAX_DEVICES][32], models[FXSV_MAX_DEVICES][96], ccs[FXSV_MAX_DEVICES][16];
    for (int i = 0; i < d->devices.n; i++) {
        device_msg(d, d->devices.dev[i], &devs[i], names[i], models[i], ccs[i]);
        pdevs[i] = &devs[i];
    }
    Fluxion__V1__GetStatusResponse r = FLUXION__V1__GET_STATUS_RESPONSE__INIT;
    r.version = FX_VERSION_STRING;
    r.uptime_ms = fxu_now_ms() - d->start_ms;
    r.devices = pdevs;
    r.n_devices = (size_t)d->devices.n;
    r.models_stored = n;
    r.models_loaded = fxsv_serving_count_loaded(d->serving);
    r.requests_in_flight = fxr_server_in_flight(d->rpc);
    r.requests_total = fxr_server_total_calls(d->rpc);
    r.data_dir = (char *)d->data_dir;
    fxr_reply(call, &r.base);
}

int fxa_register_cluster_service(fxa_daemon *d)
{
    static const fxr_method methods[] = { { "GetStatus", FXR_UNARY, FXP_READ, get_status } };
    return fxr_server_add_service(d->rpc, &fluxion__v1__cluster_service__descriptor, methods, 1, d);
}
