/*
 * flags.h - fluxiond's command line (prefix fxf_): the options, their help
 * text and their parsing, and the loopback rule of --listen. main.c wires
 * what they say; this file only reads them.
 */
#ifndef FXF_FLAGS_H
#define FXF_FLAGS_H

#include <stdbool.h>
#include <stdio.h>

#include "serving/devices.h"

typedef struct {
    const char *listen, *data_dir, *devices, *log_level, *log_format;
    const char *tls_cert, *tls_key, *tls_client_ca, *init_admin_token;
    const char *http_listen, *http_port_file; /* the HTTP port (server/http/); NULL: off */
    long http_max_connections;
    long http_max_connections_per_client; /* 0: no limit */
    /* in-flight request bytes (MiB; -1 until parsed: derived from
     * --max-message-mb) and calls per client; 0: no limit */
    long max_inflight_mb, max_inflight_mb_per_client, max_calls_per_client;
    bool tls_require_client_cert, insecure;
    long threads, rpc_threads, poll_threads;
    long max_message_mb, max_import_mb, grace_seconds, max_dataset_mb;
    long team_max_models, team_max_weight_mb, team_max_dataset_mb;
    double team_weight; long team_cpu_slots, team_gpu_slots; /* teams' scheduling defaults */
    double team_gpu_memory_gb;
    long train_workers, checkpoint_steps;
    bool inference_first; double training_min_share;
    long sched_half_life_min; /* 0: the core's default */
    long preempt_grace_steps;
    long sched_min_run_s;     /* -1: the core's default; 0: none (1 ms) */
    long max_streams, max_streams_per_client, stream_idle_seconds;
    long long max_model_params;
    /* peers (server/peers/, docs/distributed.md "Peers"); NULL: none */
    const char *peers, *peers_file, *peer_token_file, *node_name, *comm_host;
    fxsv_devices enabled; /* --devices parsed */
} fxf_options;

/* The help text. */
void fxf_usage(FILE *f);
/* Parses argv into o (defaults first): 0, 1 after --help/--version
 * (printed; exit 0), 2 for a usage error (printed to stderr). */
int fxf_parse(int argc, char **argv, fxf_options *o);
/* True when HOST of "HOST:PORT" is a loopback address. */
/* (--listen and --http-listen follow the same rule: docs/fluxiond.md.) */
bool fxf_listen_is_loopback(const char *listen);

#endif
