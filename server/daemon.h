/*
 * daemon.h - what the RPC services of fluxiond share: the store, the served
 * models, limits and state. main.c builds one and registers the services.
 */
#ifndef FXD_DAEMON_H
#define FXD_DAEMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "datasets.h"
#include "devices.h"
#include "jobs.h"
#include "rpc.h"
#include "serving.h"
#include "store.h"
#include "util.h"

#define FLUXION_VERSION "0.2.0"

typedef struct {
    fxs_store *store;
    fxd_serving *serving;
    fxs_server *rpc;
    fxd_datasets *datasets;
    fxd_jobs *jobs;              /* training jobs */
    const char *data_dir;
    int64_t start_ms;
    atomic_bool draining;        /* SIGTERM seen: not ready, finishing calls */
    uint64_t max_params;         /* per model */
    uint64_t max_import_bytes;   /* ImportWeights total */
    uint64_t max_message_bytes;  /* per gRPC message */
    uint32_t chunk_bytes;        /* ExportWeights default chunk */
    int engine_threads;
    fxd_devices devices;         /* enabled (--devices) */
} fxd_daemon;

int fxd_register_model_service(fxd_daemon *d);
int fxd_register_inference_service(fxd_daemon *d);
int fxd_register_cluster_service(fxd_daemon *d);
int fxd_register_dataset_service(fxd_daemon *d);
int fxd_register_training_service(fxd_daemon *d);

/* True when the model is stored; otherwise fails the call (NOT_FOUND, or
 * INVALID_ARGUMENT for a bad name) and returns false. */
bool fxd_model_stored_or_fail(fxd_daemon *d, fxs_call *call, const char *name);


#endif
