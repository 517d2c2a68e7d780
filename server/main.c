/*
 * fluxiond - the Fluxion daemon: serves models over gRPC (fluxion.v1 and the
 * Open Inference Protocol). libuv runs the control loop (signals, timers,
 * wake-ups); gRPC threads take calls; per-model batchers run inference, training
 * workers run jobs.
 *
 * This file's libuv loop owns the daemon-wide timers: the debug heartbeat
 * (30 s) and the shutdown's hard deadline (see "control loop" below). The
 * other timers belong to their modules: call deadlines, stream idle limits
 * and the shutdown's grace (rpc/rpc.h), the batcher's reaper thread per
 * served model (serving/batcher.h), the job watchers' timed waits
 * (training/jobs.c). They stay there because each waits on its own module's
 * lock and condition variable; a libuv timer would need a wake-up across
 * threads for each.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "api/api.h"
#include "auth/auth.h"
#include "base/log.h"

typedef struct {
    const char *listen, *data_dir, *devices, *log_level, *log_format;
    const char *tls_cert, *tls_key, *tls_client_ca, *init_admin_token;
    bool tls_require_client_cert, insecure;
    long threads, rpc_threads, poll_threads;
    long max_message_mb, max_import_mb, grace_seconds, max_dataset_mb;
    long team_max_models, team_max_weight_mb, team_max_dataset_mb;
    long train_workers, checkpoint_steps;
    bool inference_first; double training_min_share;
    long max_streams, max_streams_per_client, stream_idle_seconds;
    long long max_model_params;
    fxsv_devices enabled; /* --devices parsed */
} options;

static void usage(FILE *f)
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
"  --max-import-mb N       largest weights upload (ImportWeights), MiB (default 4096)\n"
"  --max-dataset-mb N      largest dataset (tensor data), MiB (default 16384)\n"
"  --team-max-models N     models per team (default 0: no limit)\n"
"  --team-max-weight-mb N  weights of a team's models together, every version,\n"
"                          MiB (default 0: no limit)\n"
"  --team-max-dataset-mb N a team's datasets together, MiB (default 0: no\n"
"                          limit); --dataset-quota-mb is the same flag (older\n"
"                          name). These are the defaults of teams whose own\n"
"                          quota is 0 (fluxion team update); over a quota or\n"
"                          --max-dataset-mb an upload gets RESOURCE_EXHAUSTED\n"
"  --max-model-params N    most parameter elements per model (default 1073741824)\n"
"  --train-workers N       training jobs running at once (default 1)\n"
"  --checkpoint-steps N    checkpoint interval of jobs that do not set one,\n"
"                          in steps (default 500)\n"
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

static int parse_args(int argc, char **argv, options *o)
{
    enum { O_LISTEN = 1000, O_DATA, O_DEVICE, O_THREADS, O_RPC, O_POLL, O_MSG,
           O_IMPORT, O_PARAMS, O_GRACE, O_LEVEL, O_FORMAT, O_VERSION, O_DSMAX, O_DSQUOTA,
           O_TWORKERS, O_CKPT, O_STREAMS, O_PEER_STREAMS, O_IDLE, O_TMODELS, O_TWEIGHTS,
           O_TLS_CERT, O_TLS_KEY, O_TLS_CA, O_TLS_REQUIRE, O_INSECURE, O_INIT_TOKEN,
           O_INFER_FIRST, O_MIN_SHARE };
    static const struct option longs[] = {
        { "listen", required_argument, 0, O_LISTEN },
        { "data-dir", required_argument, 0, O_DATA },
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
        { "tls-cert", required_argument, 0, O_TLS_CERT },
        { "tls-key", required_argument, 0, O_TLS_KEY },
        { "tls-client-ca", required_argument, 0, O_TLS_CA },
        { "tls-require-client-cert", no_argument, 0, O_TLS_REQUIRE },
        { "insecure", no_argument, 0, O_INSECURE },
        { "init-admin-token", required_argument, 0, O_INIT_TOKEN },
        { "train-workers", required_argument, 0, O_TWORKERS },
        { "checkpoint-steps", required_argument, 0, O_CKPT },
        { "inference-first", required_argument, 0, O_INFER_FIRST },
        { "training-min-share", required_argument, 0, O_MIN_SHARE },
        { "grace-seconds", required_argument, 0, O_GRACE },
        { "log-level", required_argument, 0, O_LEVEL },
        { "log-format", required_argument, 0, O_FORMAT },
        { "version", no_argument, 0, O_VERSION },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (options){ .listen = "127.0.0.1:7070", .data_dir = "fluxion-data", .devices = NULL,
                    .log_level = "info", .log_format = "text", .threads = ncpu > 0 ? ncpu : 1,
                    .rpc_threads = 8, .poll_threads = 2,
                    .max_message_mb = 64, .max_import_mb = 4096, .grace_seconds = 5,
                    .max_model_params = 1LL << 30, .max_dataset_mb = 16384,
                    .train_workers = 1, .checkpoint_steps = 500,
                    .inference_first = true, .training_min_share = 0.1,
                    .max_streams = 64, .stream_idle_seconds = 60 };
    int c;
    long v;
    char *end;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case O_LISTEN: o->listen = optarg; break;
        case O_DATA: o->data_dir = optarg; break;
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
        case O_TLS_CERT: o->tls_cert = optarg; break;
        case O_TLS_KEY: o->tls_key = optarg; break;
        case O_TLS_CA: o->tls_client_ca = optarg; break;
        case O_TLS_REQUIRE: o->tls_require_client_cert = true; break;
        case O_INSECURE: o->insecure = true; break;
        case O_INIT_TOKEN: o->init_admin_token = optarg; break;
        case O_TWORKERS: if (parse_long("--train-workers", optarg, 1, 256, &o->train_workers)) return 2; break;
        case O_CKPT: if (parse_long("--checkpoint-steps", optarg, 1, LONG_MAX, &o->checkpoint_steps)) return 2; break;
        case O_INFER_FIRST:
            if ((o->inference_first = !strcmp(optarg, "on")) || !strcmp(optarg, "off")) break;
            fprintf(stderr, "fluxiond: --inference-first: '%s' is not on or off\n", optarg);
            return 2;
        case O_MIN_SHARE:
            o->training_min_share = strtod(optarg, &end);
            if (end != optarg && !*end && o->training_min_share >= 0 && o->training_min_share <= 1) break;
            fprintf(stderr, "fluxiond: --training-min-share: '%s' is not a number in [0, 1]\n", optarg);
            return 2;
        case O_GRACE: if (parse_long("--grace-seconds", optarg, 0, 3600, &o->grace_seconds)) return 2; break;
        case O_LEVEL: o->log_level = optarg; break;
        case O_FORMAT: o->log_format = optarg; break;
        case O_VERSION: printf("fluxiond %s\n", FX_VERSION_STRING); exit(0);
        case 'h': usage(stdout); exit(0);
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
    return 0;
}

/* True when HOST of "HOST:PORT" is a loopback address: 127.0.0.0/8, ::1
 * (written [::1] or ::1), localhost. Anything else (0.0.0.0, [::], a
 * name, another address) can be reached from other machines. */
static bool listen_is_loopback(const char *listen)
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

/* ------------------------------------------------------------ control loop */

/*
 * The shutdown (SIGINT or SIGTERM), on CLOCK_MONOTONIC from the signal:
 *
 *   0                 new calls get UNAVAILABLE; running jobs are told to
 *                     stop (they checkpoint at their next step), in a thread
 *                     of their own, beside the drain of the calls
 *   up to grace       calls in flight finish; no waiting once none is left
 *   grace             calls still in flight are cancelled
 *   + DRAIN_RELEASE   handlers have let go of their calls and the training
 *                     workers have stopped, or the exit goes on without them
 *                     (nothing is freed then: they may still use it)
 *   + DRAIN_HARD      the hard deadline, a libuv timer of this loop: the
 *                     process exits (_exit) whatever still runs, e.g. a
 *                     grpc_shutdown or a store close that blocks
 *
 * so that the exit comes within the grace + 1 s, always. An exit that does
 * not wait loses nothing stored: every write is crash-safe (the kill -9
 * tests), and a job resumes from its last checkpoint.
 */
#define DRAIN_RELEASE_MS 400
#define DRAIN_HARD_MS 800

typedef struct {
    fxa_daemon *d;
    int grace_ms;
    uv_async_t done;     /* the drain thread finished */
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t heartbeat;
    uv_timer_t hard;     /* the hard deadline */
    pthread_t drain_thread;
    bool draining;
    bool clean;          /* the drain freed everything (set before `done`) */
    uint64_t t_signal_ns;
    _Atomic(const char *) waiting_for; /* the drain's current step, for logs */
} control;

static void *jobs_stop_main(void *arg)
{
    fxj_jobs_stop(arg);
    return NULL;
}

/* Joins th by deadline_ns (CLOCK_MONOTONIC); false when it still runs. */
static bool join_by(pthread_t th, uint64_t deadline_ns)
{
    uint64_t now = fxu_mono_ns();
    uint64_t left = deadline_ns > now ? deadline_ns - now : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* pthread_timedjoin_np's clock */
    uint64_t rt = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + left;
    ts.tv_sec = (time_t)(rt / 1000000000u);
    ts.tv_nsec = (long)(rt % 1000000000u);
    return pthread_timedjoin_np(th, NULL, &ts) == 0;
}

static void *drain_main(void *arg)
{
    control *c = arg;
    fxa_daemon *d = c->d;
    uint64_t release_end = c->t_signal_ns + (uint64_t)(c->grace_ms + DRAIN_RELEASE_MS) * 1000000;
    pthread_t jobs_th;
    bool jobs_async = pthread_create(&jobs_th, NULL, jobs_stop_main, d->jobs) == 0;
    if (!jobs_async) {
        atomic_store(&c->waiting_for, "the training jobs to stop");
        fxj_jobs_stop(d->jobs);
    }
    atomic_store(&c->waiting_for, "calls in flight");
    char err[512];
    uint64_t now = fxu_mono_ns();
    int release_ms = now < release_end ? (int)((release_end - now) / 1000000) - c->grace_ms : 0;
    int rc = fxr_server_shutdown(d->rpc, c->grace_ms, release_ms > 0 ? release_ms : 0, err,
                                 sizeof err);
    atomic_store(&c->waiting_for, "the training jobs to stop");
    bool jobs_stopped = !jobs_async || join_by(jobs_th, release_end);
    if (rc || !jobs_stopped) {
        fxl_log(FXL_WARN, "main", "exit without waiting error=\"%s\"",
                rc ? err : "a training step did not end in time; its job resumes from its "
                           "last checkpoint at the next start");
        c->clean = false;
        uv_async_send(&c->done);
        return NULL;
    }
    atomic_store(&c->waiting_for, "gRPC to shut down");
    fxr_server_destroy(d->rpc);
    atomic_store(&c->waiting_for, "the jobs to be freed");
    fxj_jobs_free(d->jobs);
    atomic_store(&c->waiting_for, "the served models to stop");
    fxsv_serving_free(d->serving);
    atomic_store(&c->waiting_for, "the datasets to close");
    fxds_datasets_close(d->datasets);
    atomic_store(&c->waiting_for, "the tokens' last use to be stored");
    fxau_close(d->auth);
    atomic_store(&c->waiting_for, "the store to close");
    fxdb_store_close(d->store);
    c->clean = true;
    uv_async_send(&c->done);
    return NULL;
}

/* The hard deadline passed: exit now. No flush of stdio (a stuck thread may
 * hold a FILE lock); the log line goes to unbuffered stderr. */
static void on_hard_deadline(uv_timer_t *h)
{
    control *c = h->data;
    fxl_log(FXL_WARN, "main", "exit forced after grace_ms=%d + %d ms waiting_for=\"%s\"",
            c->grace_ms, DRAIN_HARD_MS, atomic_load(&c->waiting_for));
    _exit(0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    control *c = h->data;
    if (c->draining) {
        fxl_log(FXL_WARN, "main", "already draining signal=%d", signum);
        return;
    }
    c->draining = true;
    c->t_signal_ns = fxu_mono_ns();
    atomic_store(&c->d->draining, true);
    fxl_log(FXL_INFO, "main", "draining signal=%s in_flight=%llu grace_ms=%d",
            signum == SIGINT ? "SIGINT" : "SIGTERM",
            (unsigned long long)fxr_server_in_flight(c->d->rpc), c->grace_ms);
    /* the drain thread frees what the heartbeat reads */
    uv_timer_stop(&c->heartbeat);
    uv_update_time(h->loop);
    uv_timer_start(&c->hard, on_hard_deadline, (uint64_t)c->grace_ms + DRAIN_HARD_MS, 0);
    if (pthread_create(&c->drain_thread, NULL, drain_main, c) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot start the drain thread; shutting down inline");
        drain_main(c);
        c->draining = false; /* nothing to join */
    }
}

/* SIGHUP: the TLS files are read again; new connections use them. The
 * daemon goes on either way (a bad file keeps the old ones). */
static void on_reload(uv_signal_t *h, int signum)
{
    (void)signum;
    control *c = h->data;
    char err[1024];
    if (c->draining)
        return;
    if (fxr_server_reload_tls(c->d->rpc, err, sizeof err) == 0)
        fxl_log(FXL_INFO, "main", "SIGHUP: TLS certificate reloaded");
    else
        fxl_log(FXL_WARN, "main", "SIGHUP: TLS not reloaded, the current files stay error=\"%s\"",
                err);
}

static void on_done(uv_async_t *h)
{
    uv_stop(h->loop);
}

static void on_heartbeat(uv_timer_t *h)
{
    control *c = h->data;
    fxl_log(FXL_DEBUG, "main", "heartbeat in_flight=%llu calls=%llu models_loaded=%d",
            (unsigned long long)fxr_server_in_flight(c->d->rpc),
            (unsigned long long)fxr_server_total_calls(c->d->rpc),
            fxsv_serving_count_loaded(c->d->serving));
}

static void close_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void rpc_log(void *data, const char *level, const char *msg)
{
    int lv = fxl_parse_level(level);
    fxl_log(lv < 0 ? FXL_INFO : (fxl_level)lv, "rpc", "%s", msg);
}

/* ---------------------------------------------------------------- security */

/* The rpc layer's auth hook: the token or client certificate of a call ->
 * its principal (auth/auth.h; local mode when auth is off). */
static int auth_hook(void *data, const fxr_credentials *c, fxp_principal *out, char *err,
                     size_t errlen)
{
    return fxau_authenticate(data, c->authorization, c->cert_subject, c->cert_cn, out, err,
                             errlen);
}

/* Copies s into out for a quoted logfmt value: no quotes or control
 * characters (the log's parser knows no escapes). */
static const char *log_value(const char *s, char *out, size_t len)
{
    size_t i = 0;
    for (; s && s[i] && i + 1 < len; i++)
        out[i] = s[i] == '"' ? '\'' : (unsigned char)s[i] < 0x20 ? ' ' : s[i];
    out[i] = '\0';
    return out;
}

/* One audit line per write or admin call, and per refused call:
 *   audit principal="token:ci" team=a method=/fluxion.v1.ModelService/DeleteModel
 *   object="model a/mlp" status=OK
 * plus error="..." when the call failed. Never a secret: the rpc layer
 * hands over no credentials, and the auth module's messages name none. */
static void audit_hook(void *data, const fxp_principal *p, const char *method,
                       const char *object, fxs_status code, const char *message)
{
    (void)data;
    char who[FXP_WHO_MAX + 1], obj[600], msg[600];
    fxl_log(code == FXS_UNAUTHENTICATED || code == FXS_PERMISSION_DENIED ? FXL_WARN : FXL_INFO,
            "audit", "audit principal=\"%s\" team=%s method=%s object=\"%s\" status=%s%s%s%s",
            p ? log_value(p->who, who, sizeof who) : "none", p && p->team[0] ? p->team : "-",
            method, log_value(object, obj, sizeof obj), fxs_status_name(code),
            code ? " error=\"" : "", code ? log_value(message, msg, sizeof msg) : "",
            code ? "\"" : "");
}

/* The bootstrap admin token: env FLUXIOND_ADMIN_TOKEN (as an existing
 * file's content), then --init-admin-token FILE. The env value is removed
 * from the environment once read. */
static int bootstrap_tokens(fxau_auth *a, const options *o, bool *given)
{
    *given = false;
    char err[1024];
    const char *env = getenv("FLUXIOND_ADMIN_TOKEN");
    if (env && *env) {
        char *secret = strdup(env);
        unsetenv("FLUXIOND_ADMIN_TOKEN");
        int rc = secret ? fxau_bootstrap_secret(a, secret, err, sizeof err)
                        : fxu_oom(err, sizeof err);
        if (secret) {
            memset(secret, 0, strlen(secret));
            free(secret);
        }
        if (rc) {
            fxl_log(FXL_ERROR, "main", "FLUXIOND_ADMIN_TOKEN refused error=\"%s\"", err);
            return 1;
        }
        fxl_log(FXL_INFO, "main", "admin token from FLUXIOND_ADMIN_TOKEN registered");
        *given = true;
    }
    if (o->init_admin_token) {
        bool created = false;
        if (fxau_bootstrap_file(a, o->init_admin_token, &created, err, sizeof err) != 0) {
            fxl_log(FXL_ERROR, "main", "--init-admin-token failed file=%s error=\"%s\"",
                    o->init_admin_token, err);
            return 1;
        }
        fxl_log(FXL_INFO, "main", "%s file=%s",
                created ? "new admin token written (mode 0600; the secret is only there)"
                        : "admin token from file registered",
                o->init_admin_token);
        *given = true;
    }
    return 0;
}

/* Writes a new admin token to DATA_DIR/admin.token (or registers the one
 * a previous start wrote there). */
static int first_admin_token(fxau_auth *a, const options *o)
{
    char err[1024];
    char *path = fxu_strf("%s/admin.token", o->data_dir);
    bool created = false;
    int rc = path ? fxau_bootstrap_file(a, path, &created, err, sizeof err)
                  : fxu_oom(err, sizeof err);
    if (rc) {
        fxl_log(FXL_ERROR, "main", "cannot create the first admin token file=%s error=\"%s\"",
                path ? path : "?", err);
        free(path);
        return 1;
    }
    fxl_log(FXL_INFO, "main", "authentication on: %s file=%s",
            created ? "first admin token written (mode 0600); use it with fluxion --token-file"
                    : "admin token registered from", path);
    free(path);
    return 0;
}

/* The exposure rule (docs/fluxiond.md, "Security"): a loopback address may
 * serve anything; another needs TLS and auth. With TLS and no token yet
 * (tokens_on: the store's auth setting, or a bootstrap token given now),
 * an admin token is written to DATA_DIR/admin.token; so too with mTLS on
 * any address, which turns auth on: someone must be able to map the
 * certificates. Without TLS the start is refused unless --insecure.
 * Returns 0 or 1 (logged). */
static int check_exposure(fxau_auth *a, const options *o, bool tokens_on)
{
    bool loopback = listen_is_loopback(o->listen);
    if (!tokens_on && (o->tls_client_ca || (o->tls_cert && !loopback)))
        return first_admin_token(a, o);
    if (loopback || o->tls_cert)
        return 0;
    if (!o->insecure) {
        fxl_log(FXL_ERROR, "main", "refusing to serve a non-loopback address without TLS "
                "addr=%s fix=\"give --tls-cert FILE --tls-key FILE (and --init-admin-token "
                "FILE for the first admin token), listen on 127.0.0.1, or pass --insecure "
                "to serve plaintext anyway\"", o->listen);
        fprintf(stderr, "fluxiond: --listen %s is not a loopback address: serving it needs "
                "TLS and authentication (--tls-cert FILE --tls-key FILE, and "
                "--init-admin-token FILE), or --insecure to serve plaintext anyway\n",
                o->listen);
        return 1;
    }
    fxl_log(FXL_WARN, "main", "INSECURE: serving plaintext on a non-loopback address "
            "(--insecure): tokens and data cross the network unencrypted addr=%s", o->listen);
    if (!fxau_enabled(a))
        fxl_log(FXL_WARN, "main", "INSECURE: no authentication either: every caller who "
                "can reach the address is an admin (give --init-admin-token FILE) addr=%s",
                o->listen);
    return 0;
}

/* Serves the models marked loaded in the store. */
static void load_stored(fxa_daemon *d)
{
    char err[1024];
    fxdb_model_rec *recs;
    int n;
    if (fxdb_store_list_models(d->store, NULL, &recs, &n, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot list stored models: %s", err);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (recs[i].loaded && fxsv_serving_load(d->serving, recs[i].name, err, sizeof err) != 0)
            fxl_log(FXL_ERROR, "main", "cannot serve stored model model=%s error=\"%s\"",
                    recs[i].name, err);
        fxdb_model_rec_free(&recs[i]);
    }
    free(recs);
    fxl_log(FXL_INFO, "main", "store opened models=%d", n);
}

int main(int argc, char **argv)
{
    fx_blas_reexec_if_misdetected(argv);
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    fxl_configure((fxl_level)fxl_parse_level(o.log_level), strcmp(o.log_format, "json") == 0);
    fxr_set_core_log(rpc_log, NULL); /* gRPC core's lines through the same logger */
    signal(SIGPIPE, SIG_IGN);
    fx_set_num_threads((int)o.threads);

    fxa_daemon d = { .data_dir = o.data_dir, .start_ms = fxu_now_ms(),
                     .max_params = (uint64_t)o.max_model_params,
                     .max_import_bytes = (uint64_t)o.max_import_mb << 20,
                     .max_message_bytes = (uint64_t)o.max_message_mb << 20,
                     .chunk_bytes = 1u << 20, .engine_threads = (int)o.threads,
                     .devices = o.enabled };
    atomic_init(&d.draining, false);
    char err[1024];
    if (fxdb_store_open(o.data_dir, &d.store, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot open the data directory dir=%s error=\"%s\"",
                o.data_dir, err);
        return 1;
    }
    /* Per-team defaults; the datasets module's own global quota is off:
     * the store enforces the team's inside its write transaction. */
    fxdb_store_set_default_quota(d.store, &(fxdb_quota){
                                              .max_models = (uint64_t)o.team_max_models,
                                              .max_weight_bytes = (uint64_t)o.team_max_weight_mb << 20,
                                              .max_dataset_bytes = (uint64_t)o.team_max_dataset_mb << 20 });
    /* With mTLS, fxau_enabled is true whatever the store says: a first look
     * without it tells whether a token or certificate was ever created. */
    bool tokens_on = false, given = false;
    fxau_auth *probe = NULL;
    if (o.tls_client_ca && fxau_open(d.store, false, &probe, err, sizeof err) == 0) {
        tokens_on = fxau_enabled(probe);
        fxau_close(probe);
    }
    if (fxau_open(d.store, o.tls_client_ca != NULL, &d.auth, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot load the tokens dir=%s error=\"%s\"", o.data_dir, err);
        fxdb_store_close(d.store);
        return 1;
    }
    if (!o.tls_client_ca)
        tokens_on = fxau_enabled(d.auth);
    if (bootstrap_tokens(d.auth, &o, &given) || check_exposure(d.auth, &o, tokens_on || given)) {
        fxau_close(d.auth);
        fxdb_store_close(d.store);
        return 1;
    }
    if (fxds_datasets_open(d.store, &(fxds_datasets_opts){
                               .max_dataset_bytes = (uint64_t)o.max_dataset_mb << 20 },
                           &d.datasets, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot open the datasets dir=%s error=\"%s\"", o.data_dir, err);
        fxau_close(d.auth);
        fxdb_store_close(d.store);
        return 1;
    }
    rc = fxsv_serving_create(d.store, &(fxsv_serving_opts){ .max_params = d.max_params,
                                                            .devices = &d.devices },
                             &d.serving, err, sizeof err);
    fxr_server_opts so = { .listen = o.listen, .poll_threads = (int)o.poll_threads,
                           .handler_threads = (int)o.rpc_threads,
                           .max_recv_bytes = d.max_message_bytes,
                           .max_send_bytes = d.max_message_bytes,
                           .max_streams = (int)o.max_streams,
                           .max_streams_per_peer = (int)o.max_streams_per_client,
                           .stream_idle_ms = o.stream_idle_seconds
                                                 ? (int)o.stream_idle_seconds * 1000 : -1,
                           .log = rpc_log,
                           /* always: auth may turn on while the daemon runs (the first
                            * token created), and fxau_authenticate is local mode till then */
                           .auth = auth_hook, .auth_data = d.auth,
                           .audit = audit_hook,
                           .tls_cert_file = o.tls_cert, .tls_key_file = o.tls_key,
                           .tls_client_ca_file = o.tls_client_ca,
                           .tls_require_client_cert = o.tls_require_client_cert };
    if (!rc)
        rc = fxr_server_create(&so, &d.rpc, err, sizeof err);
    if (rc) {
        fxl_log(FXL_ERROR, "main", "cannot serve addr=%s error=\"%s\"", o.listen, err);
        fxsv_serving_free(d.serving);
        fxds_datasets_close(d.datasets);
        fxau_close(d.auth);
        fxdb_store_close(d.store);
        return 1;
    }
    if (fxa_register_model_service(&d) || fxa_register_inference_service(&d) ||
        fxa_register_cluster_service(&d) || fxa_register_dataset_service(&d) ||
        fxa_register_training_service(&d) || fxa_register_admin_service(&d)) {
        fxl_log(FXL_ERROR, "main", "cannot register the services");
        return 1;
    }
    load_stored(&d);
    if (fxj_jobs_start(d.store, d.datasets, d.serving, &(fxj_jobs_opts){
                           .workers = (int)o.train_workers,
                           .checkpoint_every_steps = o.checkpoint_steps,
                           .max_params = d.max_params,
                           .inference_first = o.inference_first,
                           .training_min_share = o.training_min_share,
                           .devices = &d.devices }, &d.jobs, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot start the training jobs error=\"%s\"", err);
        return 1;
    }
    int port = 0;
    if (fxr_server_start(d.rpc, &port) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot start serving addr=%s", o.listen);
        return 1;
    }

    uv_loop_t *loop = uv_default_loop();
    control c = { .d = &d, .grace_ms = (int)o.grace_seconds * 1000 };
    uv_async_init(loop, &c.done, on_done);
    uv_signal_init(loop, &c.sigint);
    uv_signal_init(loop, &c.sigterm);
    c.sigint.data = c.sigterm.data = &c;
    uv_signal_start(&c.sigint, on_signal, SIGINT);
    uv_signal_start(&c.sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &c.sighup);
    c.sighup.data = &c;
    uv_signal_start(&c.sighup, on_reload, SIGHUP);
    uv_timer_init(loop, &c.heartbeat);
    c.heartbeat.data = &c;
    uv_timer_init(loop, &c.hard);
    c.hard.data = &c;
    atomic_init(&c.waiting_for, "nothing");
    uv_timer_start(&c.heartbeat, on_heartbeat, 30000, 30000);

    int hostlen = (int)(strrchr(o.listen, ':') - o.listen);
    printf("listening on %.*s:%d\n", hostlen, o.listen, port);
    fflush(stdout);
    char devs[256];
    fxl_log(FXL_INFO, "main", "listening addr=%.*s:%d data_dir=%s threads=%ld "
            "devices=\"%s\" tls=%s auth=%s version=%s", hostlen, o.listen, port, o.data_dir,
            o.threads, fxsv_devices_str(&d.devices, devs, sizeof devs),
            !o.tls_cert ? "off" : o.tls_client_ca ? "mtls" : "on",
            fxau_enabled(d.auth) ? "on" : "off(local)", FX_VERSION_STRING);

    uv_run(loop, UV_RUN_DEFAULT);

    if (c.draining)
        pthread_join(c.drain_thread, NULL); /* it has sent `done`: no wait */
    uv_walk(loop, close_cb, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    if (!c.clean) {
        /* threads still use what was not freed: no exit handlers either */
        fxl_log(FXL_INFO, "main", "stopped clean=false");
        _exit(0);
    }
    fxl_log(FXL_INFO, "main", "stopped");
    return 0;
}
