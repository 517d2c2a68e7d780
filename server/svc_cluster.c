/* svc_cluster.c - fluxion.v1.ClusterService: what the daemon runs on and does. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "fluxion/v1/cluster.pb-c.h"

int64_t fxd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t fxd_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void get_status(fxs_call *call, const ProtobufCMessage *req, void *data)
{
    fxd_daemon *d = data;
    char err[512];
    fxs_model_rec *recs = NULL;
    int n = 0;
    int rc = fxs_store_list_models(d->store, &recs, &n, err, sizeof err);
    if (rc) {
        fxs_fail(call, rc, "%s", err);
        return;
    }
    for (int i = 0; i < n; i++)
        fxs_model_rec_free(&recs[i]);
    free(recs);

    Fluxion__V1__Device cpu = FLUXION__V1__DEVICE__INIT;
    cpu.name = "cpu";
    cpu.kind = "cpu";
    cpu.threads = d->engine_threads;
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES),
         psize = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psize > 0) {
        cpu.memory_total_bytes = (uint64_t)pages * (uint64_t)psize;
        if (avail > 0)
            cpu.memory_used_bytes = (uint64_t)(pages - avail) * (uint64_t)psize;
    }
    Fluxion__V1__Device *devs[] = { &cpu };
    Fluxion__V1__GetStatusResponse r = FLUXION__V1__GET_STATUS_RESPONSE__INIT;
    r.version = FLUXION_VERSION;
    r.uptime_ms = fxd_now_ms() - d->start_ms;
    r.devices = devs;
    r.n_devices = 1;
    r.models_stored = n;
    r.models_loaded = fxd_serving_count_loaded(d->serving);
    r.requests_in_flight = fxs_server_in_flight(d->rpc);
    r.requests_total = fxs_server_total_calls(d->rpc);
    r.data_dir = (char *)d->data_dir;
    fxs_reply(call, &r.base);
}

int fxd_register_cluster_service(fxd_daemon *d)
{
    static const fxs_method methods[] = { { "GetStatus", FXS_UNARY, get_status } };
    return fxs_server_add_service(d->rpc, &fluxion__v1__cluster_service__descriptor, methods, 1, d);
}
