/*
 * flags.c - fluxiond's command line (flags.h).
 */
#define _GNU_SOURCE
#include "flags.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "base/log.h"


void fxf_usage(FILE *f)
{
    fprintf(f,
"usage: fluxiond [options]\n"
"\n"
"The Fluxion daemon: defines, stores and serves neural network models for\n"
"remote clients over gRPC (fluxion.v1.* services and the Open Inference\n"
"Protocol, inference.GRPCInferenceService). Prints 'listening on HOST:PORT'\n"
"on stdout once it accepts calls; logs go to stderr. SIGINT/SIGTERM drain:\n"
"new calls get UNAVAILABLE, calls in flight finish (up to --grace-seconds),\n"
"running jobs checkpoint; exit 0 within the grace + 1 s, always.\n"
"\n"
"  --listen HOST:PORT      address to serve on (default 127.0.0.1:7070;\n"
"                          port 0 picks a free port)\n"
"  --data-dir DIR          models and metadata (default ./fluxion-data)\n"
"  --devices LIST          devices jobs and models may use, comma-separated:\n"
"                          cpu, cuda:N (default: cpu and every GPU found);\n"
"                          requests without a device get the first one.\n"
"                          --device is the same flag (older name)\n"
"  --threads N             engine threads per operation (default: CPUs online)\n"
"  --http-listen HOST:PORT also serve the Open Inference Protocol's HTTP/REST\n"
"                          form (KServe v2) and GET /metrics here (default off;\n"
"                          docs/http.md); same TLS files and loopback rule as\n"
"                          --listen; prints 'http listening on HOST:PORT'\n"
"  --http-port-file FILE   write the HTTP port there once it listens (for\n"
"                          port 0)\n"
"  --http-max-connections N  HTTP connections at once, each with a thread\n"
"                          (default 64)\n"
"  --http-max-connections-per-client N  of them, the most from one client\n"
"                          address (default 32; 0: no limit); more are refused\n"
"  --max-inflight-mb N     request bytes all calls in flight may hold, MiB\n"
"                          (gRPC and HTTP; default 16 x --max-message-mb;\n"
"                          0: no limit); past it RESOURCE_EXHAUSTED (HTTP 429)\n"
"  --max-inflight-mb-per-client N  of them, what one client may hold (a gRPC\n"
"                          connection, an HTTP address; default 4 x\n"
"                          --max-message-mb; 0: no limit)\n"
"  --max-calls-per-client N  calls one gRPC connection may have in flight,\n"
"                          queued ones too (default 1024; 0: no limit)\n"
"  --rpc-threads N         threads running RPC handlers (default 8)\n"
"  --poll-threads N        threads polling gRPC completion queues (default 2)\n"
"  --max-streams N         streaming calls open at once (uploads, imports,\n"
"                          exports, watches; each holds a thread); more get\n"
"                          RESOURCE_EXHAUSTED (default 64)\n"
"  --max-streams-per-client N\n"
"                          of them, the most one client connection may hold\n"
"                          (default: a quarter of --max-streams)\n"
"  --stream-idle-seconds S an upload or import whose client sends nothing for\n"
"                          S seconds is ended (DEADLINE_EXCEEDED); 0: never\n"
"                          (default 60)\n"
"  --max-message-mb N      largest gRPC message in or out, MiB (default 64);\n"
"                          larger requests get RESOURCE_EXHAUSTED\n"
"  --max-import-mb N       largest weights or ONNX upload, MiB (default 4096)\n"
"  --max-dataset-mb N      largest dataset (tensor data), MiB (default 16384)\n"
"  --team-max-models N     models per team (default 0: no limit)\n"
"  --team-max-weight-mb N  weights of a team's models together, every version,\n"
"                          MiB (default 0: no limit)\n"
"  --team-max-dataset-mb N a team's datasets together, MiB (default 0: no\n"
"                          limit); --dataset-quota-mb is the same flag (older\n"
"                          name). These are the defaults of teams whose own\n"
"                          quota is 0 (fluxion team update); over a quota or\n"
"                          --max-dataset-mb an upload gets RESOURCE_EXHAUSTED\n"
"  --team-weight W         fair-share weight of teams that set none (default 1)\n"
"  --team-cpu-slots N, --team-gpu-slots N  CPU slots, GPUs guaranteed to teams\n"
"                          that set none (default 0; docs/scheduling.md)\n"
"  --team-gpu-memory-gb G  GPU memory a team's running jobs may hold, for teams\n"
"                          that set none (default 0: no cap)\n"
"  --max-model-params N    most parameter elements per model (default 1073741824)\n"
"  --cpu-slots N           CPU training jobs running at once (default 1; each\n"
"                          enabled GPU runs 1); --train-workers is the same\n"
"  --sched-half-life-minutes M  a team's past usage halves every M minutes\n"
"                          in the scheduler's fair order (default 60)\n"
"  --sched-min-run-seconds S  a job runs at least S seconds before it may be\n"
"                          preempted (default 60; docs/scheduling.md)\n"
"  --checkpoint-steps N    checkpoint interval of jobs that do not set one,\n"
"                          in steps (default 500)\n"
"  --preempt-grace-steps N a preempted job runs up to N more steps to reach its\n"
"                          own next checkpoint (default 0: it checkpoints at once)\n"
"  --inference-first on|off  training yields to inference on its device (default on)\n"
"  --training-min-share F  keeping this share of the time at least (default 0.1)\n"
"\n"
"Security (docs/fluxiond.md, \"Security\"). Without tokens or mTLS the daemon\n"
"runs in local mode: every caller is an admin, allowed on a loopback address\n"
"only. Another address needs TLS, and auth: the first start with TLS there\n"
"(or with mTLS anywhere) and no token writes an admin token to\n"
"DATA_DIR/admin.token (mode 0600).\n"
"  --tls-cert FILE         serve TLS with this PEM certificate chain ...\n"
"  --tls-key FILE          ... and its PEM private key (unencrypted); SIGHUP\n"
"                          re-reads both (and --tls-client-ca): new connections\n"
"                          use the new files, open ones keep theirs\n"
"  --tls-client-ca FILE    mTLS: verify client certificates against this PEM\n"
"                          CA bundle; a verified certificate mapped with\n"
"                          `fluxion cert add` authenticates without a token\n"
"  --tls-require-client-cert\n"
"                          refuse connections without a client certificate\n"
"  --init-admin-token FILE register FILE's content (32..256 visible ASCII) as\n"
"                          admin token 'bootstrap' of team default; a missing\n"
"                          FILE gets a new token (mode 0600). Env\n"
"                          FLUXIOND_ADMIN_TOKEN=SECRET does the same as an\n"
"                          existing file. Either turns authentication on\n"
"  --insecure              allow a non-loopback --listen without TLS (and,\n"
"                          without tokens, without authentication): a warning\n"
"                          is logged; for trusted networks only\n"
"\n"
"Peers: training across daemons (docs/distributed.md, \"Peers\").\n"
"  --peers LIST            other daemons this one trains with, comma-separated:\n"
"                          NAME=HOST:PORT or HOST:PORT (NAME: HOST:PORT); job\n"
"                          placements name them (\"B/cpu\"). Host names are\n"
"                          resolved at each connection (StatefulSet names\n"
"                          work); this daemon's own entry is skipped\n"
"  --peers-file FILE       the same, one a line ('#' comments)\n"
"  --peer-token-file FILE  the secret the daemons share (32..256 visible\n"
"                          ASCII); peer calls carry it, and only it reaches\n"
"                          the internal PeerService. Needed with --peers\n"
"  --node-name NAME        this daemon's name among its peers (default: the\n"
"                          HOST:PORT of --listen)\n"
"  --comm-host HOST        the address this daemon's collectives listen on,\n"
"                          which its peers must reach (default 127.0.0.1)\n"
"\n"
"  --grace-seconds S       time calls in flight get to finish on shutdown\n"
"                          (default 5); the exit follows within 1 s\n"
"  --log-level LEVEL       debug, info, warn, error (default info)\n"
"  --log-format FORMAT     text (logfmt) or json (default text)\n"
"  --version               print the version and exit\n"
"  -h, --help              this help\n");
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "fluxiond: %s: '%s' is not a number in [%ld, %ld]\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int fxf_parse(int argc, char **argv, fxf_options *o)
{
    enum { O_TWEIGHT = 2000, O_TCPU_SLOTS, O_TGPU_SLOTS, O_TGPU_MEM }; /* teams' scheduling defaults */
    enum { O_LISTEN = 1000, O_DATA, O_DEVICE, O_THREADS, O_RPC, O_POLL, O_MSG,
           O_IMPORT, O_PARAMS, O_GRACE, O_LEVEL, O_FORMAT, O_VERSION, O_DSMAX, O_DSQUOTA,
           O_TWORKERS, O_CKPT, O_STREAMS, O_PEER_STREAMS, O_IDLE, O_TMODELS, O_TWEIGHTS,
           O_TLS_CERT, O_TLS_KEY, O_TLS_CA, O_TLS_REQUIRE, O_INSECURE, O_INIT_TOKEN, O_HALF_LIFE, O_MIN_RUN,
           O_INFER_FIRST, O_MIN_SHARE, O_GRACE_STEPS };
    enum { O_HTTP = 3000, O_HTTP_PORT_FILE, O_HTTP_CONNS, O_HTTP_PEER_CONNS }; /* the HTTP port */
    enum { O_INFLIGHT = 4000, O_PEER_INFLIGHT, O_PEER_CALLS }; /* limits under load */
    enum { O_PEERS = 5000, O_PEERS_FILE, O_PEER_TOKEN, O_NODE_NAME, O_COMM_HOST }; /* peers */
    static const struct option longs[] = {
        { "listen", required_argument, 0, O_LISTEN },
        { "data-dir", required_argument, 0, O_DATA },
        { "http-listen", required_argument, 0, O_HTTP },
        { "http-port-file", required_argument, 0, O_HTTP_PORT_FILE },
        { "http-max-connections", required_argument, 0, O_HTTP_CONNS },
        { "http-max-connections-per-client", required_argument, 0, O_HTTP_PEER_CONNS },
        { "max-inflight-mb", required_argument, 0, O_INFLIGHT },
        { "max-inflight-mb-per-client", required_argument, 0, O_PEER_INFLIGHT },
        { "max-calls-per-client", required_argument, 0, O_PEER_CALLS },
        { "devices", required_argument, 0, O_DEVICE },
        { "device", required_argument, 0, O_DEVICE },
        { "threads", required_argument, 0, O_THREADS },
        { "rpc-threads", required_argument, 0, O_RPC },
        { "poll-threads", required_argument, 0, O_POLL },
        { "max-streams", required_argument, 0, O_STREAMS },
        { "max-streams-per-client", required_argument, 0, O_PEER_STREAMS },
        { "stream-idle-seconds", required_argument, 0, O_IDLE },
        { "max-message-mb", required_argument, 0, O_MSG },
        { "max-import-mb", required_argument, 0, O_IMPORT },
        { "max-model-params", required_argument, 0, O_PARAMS },
        { "max-dataset-mb", required_argument, 0, O_DSMAX },
        { "dataset-quota-mb", required_argument, 0, O_DSQUOTA },
        { "team-max-dataset-mb", required_argument, 0, O_DSQUOTA },
        { "team-max-models", required_argument, 0, O_TMODELS },
        { "team-max-weight-mb", required_argument, 0, O_TWEIGHTS },
        { "team-weight", required_argument, 0, O_TWEIGHT },
        { "team-cpu-slots", required_argument, 0, O_TCPU_SLOTS },
        { "team-gpu-slots", required_argument, 0, O_TGPU_SLOTS },
        { "team-gpu-memory-gb", required_argument, 0, O_TGPU_MEM },
        { "tls-cert", required_argument, 0, O_TLS_CERT },
        { "tls-key", required_argument, 0, O_TLS_KEY },
        { "tls-client-ca", required_argument, 0, O_TLS_CA },
        { "tls-require-client-cert", no_argument, 0, O_TLS_REQUIRE },
        { "insecure", no_argument, 0, O_INSECURE },
        { "init-admin-token", required_argument, 0, O_INIT_TOKEN },
        { "train-workers", required_argument, 0, O_TWORKERS },
        { "cpu-slots", required_argument, 0, O_TWORKERS },
        { "sched-half-life-minutes", required_argument, 0, O_HALF_LIFE },
        { "sched-min-run-seconds", required_argument, 0, O_MIN_RUN },
        { "checkpoint-steps", required_argument, 0, O_CKPT },
        { "inference-first", required_argument, 0, O_INFER_FIRST },
        { "preempt-grace-steps", required_argument, 0, O_GRACE_STEPS },
        { "training-min-share", required_argument, 0, O_MIN_SHARE },
        { "grace-seconds", required_argument, 0, O_GRACE },
        { "log-level", required_argument, 0, O_LEVEL },
        { "log-format", required_argument, 0, O_FORMAT },
        { "version", no_argument, 0, O_VERSION },
        { "peers", required_argument, 0, O_PEERS },
        { "peers-file", required_argument, 0, O_PEERS_FILE },
        { "peer-token-file", required_argument, 0, O_PEER_TOKEN },
        { "node-name", required_argument, 0, O_NODE_NAME },
        { "comm-host", required_argument, 0, O_COMM_HOST },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (fxf_options){ .listen = "127.0.0.1:7070", .data_dir = "fluxion-data", .devices = NULL,
                    .log_level = "info", .log_format = "text", .threads = ncpu > 0 ? ncpu : 1,
                    .rpc_threads = 8, .poll_threads = 2,
                    .max_message_mb = 64, .max_import_mb = 4096, .grace_seconds = 5,
                    .max_model_params = 1LL << 30, .max_dataset_mb = 16384,
                    .train_workers = 1, .checkpoint_steps = 500,
                    .inference_first = true, .training_min_share = 0.1, .sched_min_run_s = -1,
                    .max_streams = 64, .stream_idle_seconds = 60, .http_max_connections = 64,
                    .http_max_connections_per_client = 32, .max_inflight_mb = -1,
                    .max_inflight_mb_per_client = -1, .max_calls_per_client = 1024 };
    int c;
    long v;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case O_LISTEN: o->listen = optarg; break;
        case O_DATA: o->data_dir = optarg; break;
        case O_HTTP: o->http_listen = optarg; break;
        case O_HTTP_PORT_FILE: o->http_port_file = optarg; break;
        case O_HTTP_CONNS:
            if (parse_long("--http-max-connections", optarg, 1, 4096, &o->http_max_connections))
                return 2;
            break;
        case O_HTTP_PEER_CONNS:
            if (parse_long("--http-max-connections-per-client", optarg, 0, 4096,
                           &o->http_max_connections_per_client))
                return 2;
            break;
        case O_INFLIGHT:
            if (parse_long("--max-inflight-mb", optarg, 0, 1L << 30, &o->max_inflight_mb)) return 2;
            break;
        case O_PEER_INFLIGHT:
            if (parse_long("--max-inflight-mb-per-client", optarg, 0, 1L << 30,
                           &o->max_inflight_mb_per_client))
                return 2;
            break;
        case O_PEER_CALLS:
            if (parse_long("--max-calls-per-client", optarg, 0, 1L << 20, &o->max_calls_per_client))
                return 2;
            break;
        case O_DEVICE: o->devices = optarg; break;
        case O_THREADS: if (parse_long("--threads", optarg, 1, 1024, &o->threads)) return 2; break;
        case O_RPC: if (parse_long("--rpc-threads", optarg, 1, 1024, &o->rpc_threads)) return 2; break;
        case O_POLL: if (parse_long("--poll-threads", optarg, 1, 64, &o->poll_threads)) return 2; break;
        case O_STREAMS: if (parse_long("--max-streams", optarg, 1, 1024, &o->max_streams)) return 2; break;
        case O_PEER_STREAMS:
            if (parse_long("--max-streams-per-client", optarg, 1, 1024, &o->max_streams_per_client))
                return 2;
            break;
        case O_IDLE: if (parse_long("--stream-idle-seconds", optarg, 0, 86400, &o->stream_idle_seconds)) return 2; break;
        case O_MSG: if (parse_long("--max-message-mb", optarg, 1, 2047, &o->max_message_mb)) return 2; break;
        case O_IMPORT: if (parse_long("--max-import-mb", optarg, 1, 1L << 20, &o->max_import_mb)) return 2; break;
        case O_PARAMS:
            if (parse_long("--max-model-params", optarg, 1, LONG_MAX, &v)) return 2;
            o->max_model_params = v;
            break;
        case O_DSMAX: if (parse_long("--max-dataset-mb", optarg, 1, 1L << 30, &o->max_dataset_mb)) return 2; break;
        case O_DSQUOTA: if (parse_long("--team-max-dataset-mb", optarg, 0, 1L << 40, &o->team_max_dataset_mb)) return 2; break;
        case O_TMODELS: if (parse_long("--team-max-models", optarg, 0, 1L << 40, &o->team_max_models)) return 2; break;
        case O_TWEIGHTS: if (parse_long("--team-max-weight-mb", optarg, 0, 1L << 40, &o->team_max_weight_mb)) return 2; break;
        case O_TWEIGHT: { char *end; o->team_weight = strtod(optarg, &end);
            if (end == optarg || *end || !(o->team_weight > 0 && o->team_weight <= 1e6))
                return fprintf(stderr, "fluxiond: --team-weight: '%s' is not a number in (0, 1e6]\n", optarg), 2;
            break; }
        case O_TCPU_SLOTS: if (parse_long("--team-cpu-slots", optarg, 0, 4096, &o->team_cpu_slots)) return 2; break;
        case O_TGPU_MEM: {
            char *end;
            o->team_gpu_memory_gb = strtod(optarg, &end);
            if (end != optarg && !*end && o->team_gpu_memory_gb >= 0 &&
                o->team_gpu_memory_gb <= 1 << 20)
                break;
            fprintf(stderr, "fluxiond: --team-gpu-memory-gb: '%s' is not a number of GiB in "
                    "[0, 1048576]\n", optarg);
            return 2;
        }
        case O_TGPU_SLOTS: if (parse_long("--team-gpu-slots", optarg, 0, 4096, &o->team_gpu_slots)) return 2; break;
        case O_TLS_CERT: o->tls_cert = optarg; break;
        case O_TLS_KEY: o->tls_key = optarg; break;
        case O_TLS_CA: o->tls_client_ca = optarg; break;
        case O_TLS_REQUIRE: o->tls_require_client_cert = true; break;
        case O_INSECURE: o->insecure = true; break;
        case O_INIT_TOKEN: o->init_admin_token = optarg; break;
        case O_TWORKERS: if (parse_long("--cpu-slots", optarg, 1, 256, &o->train_workers)) return 2; break;
        case O_HALF_LIFE: if (parse_long("--sched-half-life-minutes", optarg, 1, 525600, &o->sched_half_life_min)) return 2; break;
        case O_MIN_RUN: if (parse_long("--sched-min-run-seconds", optarg, 0, 86400, &o->sched_min_run_s)) return 2; break;
        case O_GRACE_STEPS:
            if (parse_long("--preempt-grace-steps", optarg, 0, LONG_MAX, &o->preempt_grace_steps))
                return 2;
            break;
        case O_INFER_FIRST:
            if ((o->inference_first = !strcmp(optarg, "on")) || !strcmp(optarg, "off")) break;
            fprintf(stderr, "fluxiond: --inference-first: '%s' is not on or off\n", optarg);
            return 2;
        case O_MIN_SHARE: {
            char *end;
            o->training_min_share = strtod(optarg, &end);
            if (end != optarg && !*end && o->training_min_share >= 0 && o->training_min_share <= 1)
                break;
            fprintf(stderr, "fluxiond: --training-min-share: '%s' is not a number in [0, 1]\n",
                    optarg);
            return 2;
        }
        case O_CKPT: if (parse_long("--checkpoint-steps", optarg, 1, LONG_MAX, &o->checkpoint_steps)) return 2; break;
        case O_GRACE: if (parse_long("--grace-seconds", optarg, 0, 3600, &o->grace_seconds)) return 2; break;
        case O_PEERS: o->peers = optarg; break;
        case O_PEERS_FILE: o->peers_file = optarg; break;
        case O_PEER_TOKEN: o->peer_token_file = optarg; break;
        case O_NODE_NAME: o->node_name = optarg; break;
        case O_COMM_HOST: o->comm_host = optarg; break;
        case O_LEVEL: o->log_level = optarg; break;
        case O_FORMAT: o->log_format = optarg; break;
        case O_VERSION: printf("fluxiond %s\n", FX_VERSION_STRING); exit(0);
        case 'h': fxf_usage(stdout); exit(0);
        default:
            fprintf(stderr, "fluxiond: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fluxiond: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (fxl_parse_level(o->log_level) < 0) {
        fprintf(stderr, "fluxiond: --log-level: '%s' is not debug, info, warn or error\n", o->log_level);
        return 2;
    }
    if (strcmp(o->log_format, "text") != 0 && strcmp(o->log_format, "json") != 0) {
        fprintf(stderr, "fluxiond: --log-format: '%s' is not text or json\n", o->log_format);
        return 2;
    }
    char derr[512];
    if (fxsv_devices_parse(o->devices, &o->enabled, derr, sizeof derr) != 0) {
        fprintf(stderr, "fluxiond: --devices: %s\n", derr);
        return 2;
    }
    const char *colon = strrchr(o->listen, ':');
    if (!colon || colon == o->listen || !colon[1]) {
        fprintf(stderr, "fluxiond: --listen: '%s' is not HOST:PORT\n", o->listen);
        return 2;
    }
    if (parse_long("--listen port", colon + 1, 0, 65535, &v))
        return 2;
    if (o->http_listen) {
        colon = strrchr(o->http_listen, ':');
        if (!colon || colon == o->http_listen || !colon[1]) {
            fprintf(stderr, "fluxiond: --http-listen: '%s' is not HOST:PORT\n", o->http_listen);
            return 2;
        }
        if (parse_long("--http-listen port", colon + 1, 0, 65535, &v))
            return 2;
        if (o->tls_require_client_cert) {
            fprintf(stderr, "fluxiond: --http-listen does not ask for client certificates, so "
                    "it cannot go with --tls-require-client-cert (docs/http.md)\n");
            return 2;
        }
    } else if (o->http_port_file) {
        fprintf(stderr, "fluxiond: --http-port-file needs --http-listen HOST:PORT\n");
        return 2;
    }
    if (!o->tls_cert != !o->tls_key) {
        fprintf(stderr, "fluxiond: TLS needs both --tls-cert FILE and --tls-key FILE\n");
        return 2;
    }
    if (o->tls_client_ca && !o->tls_cert) {
        fprintf(stderr, "fluxiond: --tls-client-ca needs --tls-cert and --tls-key\n");
        return 2;
    }
    if (o->tls_require_client_cert && !o->tls_client_ca) {
        fprintf(stderr, "fluxiond: --tls-require-client-cert needs --tls-client-ca FILE\n");
        return 2;
    }
    if (o->init_admin_token && !*o->init_admin_token) {
        fprintf(stderr, "fluxiond: --init-admin-token: no file name\n");
        return 2;
    }
    if ((o->peers && *o->peers) || o->peers_file) {
        if (!o->peer_token_file) {
            fprintf(stderr, "fluxiond: --peers and --peers-file need --peer-token-file FILE "
                    "(the secret the daemons share)\n");
            return 2;
        }
    }
    /* room for several messages of the largest size at once, so that the
     * in-flight limits never refuse one lone request the message limit
     * lets through */
    if (o->max_inflight_mb < 0)
        o->max_inflight_mb = 16 * o->max_message_mb;
    if (o->max_inflight_mb_per_client < 0)
        o->max_inflight_mb_per_client = 4 * o->max_message_mb;
    return 0;
}

/* True when HOST of "HOST:PORT" is a loopback address: 127.0.0.0/8, ::1
 * (written [::1] or ::1), localhost. Anything else (0.0.0.0, [::], a
 * name, another address) can be reached from other machines. */
bool fxf_listen_is_loopback(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    size_t n = (size_t)(colon - listen);
    char host[256];
    if (n >= sizeof host)
        return false;
    memcpy(host, listen, n);
    host[n] = '\0';
    if (strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 ||
        strcmp(host, "::1") == 0)
        return true;
    unsigned a, b, c, d;
    char extra;
    return sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
           c < 256 && d < 256;
}

