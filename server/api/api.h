/*
 * api.h - the services of fluxiond (api/, prefix fxa_): one file per gRPC
 * service (svc_model.c, svc_infer.c, svc_dataset.c, svc_training.c,
 * svc_cluster.c). A handler only translates: it reads the request, calls the
 * domain modules (store/, models/, serving/, datasets/, training/) and
 * builds the reply or fails the call with their status and message. No SQL
 * and no graph building here; the domain modules never include api/ or rpc/.
 *
 * fxa_daemon is what the services share: the store, the served models,
 * limits and state. main.c builds one and registers the services.
 */
#ifndef FXA_API_H
#define FXA_API_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth/auth.h"
#include "datasets/datasets.h"
#include "serving/devices.h"
#include "training/jobs.h"
#include "rpc/rpc.h"
#include "serving/serving.h"
#include "store/store.h"
#include "base/pbarena.h"
#include "base/util.h"
#include "fluxion/v1/model.pb-c.h"
#include "models/graph.h"

typedef struct {
    fxdb_store *store;
    fxsv_serving *serving;
    fxr_server *rpc;
    fxds_datasets *datasets;
    fxj_jobs *jobs;              /* training jobs */
    fxau_auth *auth;             /* tokens and certificate principals */
    const char *data_dir;
    int64_t start_ms;
    atomic_bool draining;        /* SIGTERM seen: not ready, finishing calls */
    uint64_t max_params;         /* per model */
    uint64_t max_import_bytes;   /* ImportWeights total */
    uint64_t max_message_bytes;  /* per gRPC message */
    uint32_t chunk_bytes;        /* ExportWeights default chunk */
    int engine_threads;
    fxsv_devices devices;         /* enabled (--devices) */
    struct fxpr_peers *peers;     /* peers/peers.h: the other daemons (never NULL once started) */
    struct fxj_ranks *ranks;      /* training/ranks.h: ranks run for peers (NULL: none taken) */
    uint64_t max_dataset_bytes;   /* --max-dataset-mb: a member's StartRank data limit */
} fxa_daemon;

int fxa_register_model_service(fxa_daemon *d);
int fxa_register_inference_service(fxa_daemon *d);
int fxa_register_cluster_service(fxa_daemon *d);
int fxa_register_dataset_service(fxa_daemon *d);
int fxa_register_training_service(fxa_daemon *d);
int fxa_register_admin_service(fxa_daemon *d);
int fxa_register_health_service(fxa_daemon *d);
int fxa_register_reflection_service(fxa_daemon *d); /* svc_reflection.c */
int fxa_register_peer_service(fxa_daemon *d);       /* svc_peer.c: internal */

/* ---- peer_ranks.c: the ranks this daemon runs for other daemons' jobs
 * (PeerService StartRank/StopRank/RankStatus). first: StartRank's first
 * message (assignment, specs); the blobs as they arrived (NULL, 0 when
 * empty). *rank_id: the handle (malloc). 0 or a status with err. */
typedef struct Fluxion__V1__StartRankChunk Fluxion__V1__StartRankChunk;
int fxa_rank_start(fxa_daemon *d, const Fluxion__V1__StartRankChunk *first,
                   const void *weights, size_t weights_len, const void *resume,
                   size_t resume_len, const void *train, size_t train_len, const void *val,
                   size_t val_len, char **rank_id, char *err, size_t errlen);
int fxa_rank_stop(fxa_daemon *d, const char *rank_id, const char *reason, char *err,
                  size_t errlen);
int fxa_rank_status(fxa_daemon *d, const char *rank_id, char *state, size_t statelen,
                    char *why, size_t whylen, int64_t *step, char *err, size_t errlen);

/* ClusterService/GetMetrics (svc_metrics.c): the Prometheus text of the
 * daemon's metrics, filtered to the caller's team unless an admin. */
void fxa_get_metrics(fxr_call *call, const ProtobufCMessage *req, void *data);

/* A Model message of rec (svc_model.c) in a's memory; with g, its interface
 * and parameters; *spec_out: the unpacked spec the message points to (free
 * it after the reply). */
Fluxion__V1__Model *fxa_model_msg(pba *a, fxr_call *call, fxdb_store *st,
                                  const fxdb_model_rec *rec, const fxg_graph *g,
                                  Fluxion__V1__ModelSpec **spec_out);
/* ModelService/UpdateModelSpec (svc_model_update.c). */
void fxa_update_model_spec(fxr_call *call, const ProtobufCMessage *msg, void *data);
/* ModelService/ExportOnnx (svc_onnx_export.c): a stored version as an
 * ONNX model, streamed in chunks. */
void fxa_export_onnx(fxr_call *call, const ProtobufCMessage *msg, void *data);

/* What an export (ExportWeights, ExportOnnx) reads: the model named (its
 * key into key, FXP_KEY_MAX), its record (free it) and the version (want;
 * 0: production, the served one). false after failing the call. */
bool fxa_export_target(fxr_call *call, fxa_daemon *d, const char *name, int64_t want,
                       char *key, fxdb_model_rec *rec, int64_t *version);

/* True when the model (a key) is stored; otherwise fails the call
 * (NOT_FOUND) and returns false. */
bool fxa_model_stored_or_fail(fxa_daemon *d, fxr_call *call, const char *key);
/* Replies with the Model message of a stored model (with_graph: its
 * inferred outputs and parameters too). */
void fxa_model_reply(fxr_call *call, fxa_daemon *d, const char *name, bool with_graph);

/* ---- svc_versions.c: aliases, promote/rollback, pins, retention */

/* Into a Model message: its production version, aliases, history and
 * retention, and each version's pin, aliases, metric and job. */
void fxa_versions_describe(pba *a, Fluxion__V1__Model *m, const fxdb_model_rec *rec);
/* ModelService.UpdateVersions. */
void fxa_update_versions(fxr_call *call, const ProtobufCMessage *msg, void *data);
/* A ModelInfer model_version: "" (and "production": the served one) 0, a
 * number, or an alias of the model resolved in the store. INVALID_ARGUMENT
 * or NOT_FOUND with a message. */
int fxa_resolve_version(fxa_daemon *d, const char *key, const char *s, int64_t *v, char *err,
                        size_t errlen);

/* ---- svc_model.c, svc_onnx.c: creating models */

/* Builds, stores (version 1) and serves (unless no_load) model key from a
 * spec and optional safetensors weights, then replies with the Model, or
 * fails the call. source: the version's source (NULL: CreateModel's). */
void fxa_create_model(fxr_call *call, fxa_daemon *d, const char *key, const char *description,
                      const Fluxion__V1__ModelSpec *spec, const uint8_t *weights,
                      size_t weights_len, uint64_t seed, bool no_load, const char *source);
/* ModelService/ImportOnnx (client stream of ImportOnnxRequest). */
void fxa_import_onnx(fxr_call *call, const ProtobufCMessage *msg, void *data);

/* ---- svc_infer.c, svc_infer_config.c: the inference service */

/* The served instance of the model the caller names at version ("": the
 * one served), acquired (release it); NULL after failing the call. */
fxsv_served *fxa_acquire_served(fxr_call *call, fxa_daemon *d, const char *name,
                                const char *version);
/* inference.GRPCInferenceService/ModelConfig (svc_infer_config.c). */
void fxa_model_config(fxr_call *call, const ProtobufCMessage *msg, void *data);

/* ---- scope.c: names as the caller writes them <-> keys ("team/name") */

/* The key (FXP_KEY_MAX) of the object the caller names: "mlp" is the
 * caller's team's, "b/mlp" team b's (NOT_FOUND unless the caller is an
 * admin or in b). Checks the name (INVALID_ARGUMENT naming kind) and sets
 * the call's audit object. false after failing the call. */
bool fxa_key(fxr_call *call, const char *kind, const char *name, char *key, size_t keylen);
/* A key as the caller sees it (its own team's without the prefix). */
const char *fxa_show(const fxr_call *call, const char *key);
/* Rewrites a key (a malloc'd string of a reply) as the caller sees it. */
void fxa_show_in_place(const fxr_call *call, char *key);
/* True when the caller may see the object of key. */
bool fxa_sees(const fxr_call *call, const char *key);
/* The team a list is filtered to: the caller's, or NULL (every team) for
 * an admin. */
const char *fxa_list_team(const fxr_call *call);


#endif
