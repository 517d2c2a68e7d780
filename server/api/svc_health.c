/*
 * svc_health.c - grpc.health.v1.Health (Check, List, Watch) as published in
 * grpc-proto: what Kubernetes gRPC probes and grpc-health-probe ask. The
 * status of "" (the server) and of every service this daemon registers is
 * SERVING while it takes calls and NOT_SERVING once a drain began (SIGTERM);
 * another name is NOT_FOUND for Check and SERVICE_UNKNOWN for Watch. Public
 * (FXP_PUBLIC): probes carry no credentials, and a status tells nothing of
 * any team's objects.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "fluxion/v1/admin.pb-c.h"
#include "fluxion/v1/cluster.pb-c.h"
#include "fluxion/v1/dataset.pb-c.h"
#include "fluxion/v1/model.pb-c.h"
#include "fluxion/v1/peer.pb-c.h"
#include "fluxion/v1/training.pb-c.h"
#include "grpc_health/v1/health.pb-c.h"
#include "grpcreflect/v1/reflection.pb-c.h"
#include "grpcreflect/v1alpha/reflection.pb-c.h"
#include "inference/grpc_service.pb-c.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

/* How often a watch looks at the status (a drain is seen within this). */
#define WATCH_POLL_MS 100

static const ProtobufCServiceDescriptor *const SERVICES[] = {
    &fluxion__v1__model_service__descriptor,
    &fluxion__v1__dataset_service__descriptor,
    &fluxion__v1__training_service__descriptor,
    &fluxion__v1__cluster_service__descriptor,
    &fluxion__v1__admin_service__descriptor,
    &fluxion__v1__peer_service__descriptor, /* internal, but served: docs/distributed.md */
    &inference__grpcinference_service__descriptor,
    &grpc__health__v1__health__descriptor,
    &grpc__reflection__v1__server_reflection__descriptor,
    &grpc__reflection__v1alpha__server_reflection__descriptor,
};
#define N_SERVICES (sizeof SERVICES / sizeof SERVICES[0])

static bool known(const char *service)
{
    if (!service[0])
        return true; /* the server as a whole */
    for (size_t i = 0; i < N_SERVICES; i++)
        if (strcmp(service, SERVICES[i]->name) == 0)
            return true;
    return false;
}

static serving_status status_of(fxa_daemon *d, fxr_call *call, const char *service)
{
    if (!known(service))
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    return atomic_load(&d->draining) || fxr_draining(call)
               ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
               : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

static void check(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    if (!known(req->service)) {
        fxr_fail(call, FXS_NOT_FOUND, "service '%.200s' is not served here (\"\" is the server)",
                 req->service);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = status_of(data, call, req->service);
    fxr_reply(call, &r.base);
}

static void list(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    (void)msg;
    Grpc__Health__V1__HealthCheckResponse st[N_SERVICES + 1];
    Grpc__Health__V1__HealthListResponse__StatusesEntry ent[N_SERVICES + 1],
        *pent[N_SERVICES + 1];
    for (size_t i = 0; i <= N_SERVICES; i++) {
        const char *name = i < N_SERVICES ? SERVICES[i]->name : "";
        grpc__health__v1__health_check_response__init(&st[i]);
        st[i].status = status_of(data, call, name);
        grpc__health__v1__health_list_response__statuses_entry__init(&ent[i]);
        ent[i].key = (char *)name;
        ent[i].value = &st[i];
        pent[i] = &ent[i];
    }
    Grpc__Health__V1__HealthListResponse r = GRPC__HEALTH__V1__HEALTH_LIST_RESPONSE__INIT;
    r.statuses = pent;
    r.n_statuses = N_SERVICES + 1;
    fxr_reply(call, &r.base);
}

/* The status now, then every change, until the client leaves or the
 * server stops (a drain is sent as NOT_SERVING first). */
static void watch(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    serving_status last = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN;
    for (;;) {
        serving_status now = status_of(d, call, req->service);
        if (now != last) {
            Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
            r.status = now;
            if (fxr_send(call, &r.base) != 0) {
                fxr_fail(call, FXS_CANCELLED, "health watch: the client is gone");
                return;
            }
            last = now;
        }
        if (fxr_cancelled(call)) {
            fxr_fail(call, FXS_CANCELLED, "health watch cancelled");
            return;
        }
        if (now == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING) {
            /* draining: it will not serve again in this process */
            fxr_fail(call, FXS_UNAVAILABLE, "the server is shutting down");
            return;
        }
        nanosleep(&(struct timespec){ 0, WATCH_POLL_MS * 1000000L }, NULL);
    }
}

int fxa_register_health_service(fxa_daemon *d)
{
    static const fxr_method methods[] = {
        { "Check", FXR_UNARY, FXP_PUBLIC, check },
        { "List", FXR_UNARY, FXP_PUBLIC, list },
        { "Watch", FXR_SERVER_STREAM, FXP_PUBLIC, watch },
    };
    return fxr_server_add_service(d->rpc, &grpc__health__v1__health__descriptor, methods,
                                  (int)(sizeof methods / sizeof methods[0]), d);
}
