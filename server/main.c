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
#include "base/fsutil.h"
#include "base/log.h"
#include "flags.h"
#include "http/http.h"
#include "peers/peers.h"
#include "training/ranks.h"

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
    fxh_server *http;    /* the HTTP port, or NULL */
    bool http_tls;
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
    /* No local call is in flight now (the rpc shutdown waited for them, and
     * refuses new ones): the HTTP port closes before the rpc server it
     * calls into is freed. */
    atomic_store(&c->waiting_for, "the HTTP port to close");
    fxh_stop(c->http);
    atomic_store(&c->waiting_for, "gRPC to shut down");
    fxr_server_destroy(d->rpc);
    /* the ranks first: an ending rank gives its slot back to the jobs' scheduler */
    atomic_store(&c->waiting_for, "the ranks for peers to stop");
    fxj_ranks_free(d->ranks);
    d->ranks = NULL;
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
    atomic_store(&c->waiting_for, "the peers' channels to close");
    fxpr_free(d->peers);
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
        fxl_log(FXL_INFO, "main", "SIGHUP: TLS certificate reloaded%s",
                c->http_tls ? " (gRPC port; the HTTP port keeps its own until a restart)" : "");
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
    /* PeerService without a peer secret: nobody may call it (an admin
     * neither), and the caller learns why */
    if (!fxau_peer_enabled(data) && c->method &&
        strncmp(c->method, "/fluxion.v1.PeerService/", 24) == 0) {
        snprintf(err, errlen, "this daemon has no --peer-token-file");
        return FXS_FAILED_PRECONDITION;
    }
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
static int bootstrap_tokens(fxau_auth *a, const fxf_options *o, bool *given)
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
static int first_admin_token(fxau_auth *a, const fxf_options *o)
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
static int check_exposure(fxau_auth *a, const fxf_options *o, bool tokens_on)
{
    /* --http-listen follows the same rule as --listen */
    bool grpc_loopback = fxf_listen_is_loopback(o->listen);
    bool loopback = grpc_loopback && (!o->http_listen || fxf_listen_is_loopback(o->http_listen));
    const char *addr = grpc_loopback && o->http_listen ? o->http_listen : o->listen;
    if (!tokens_on && (o->tls_client_ca || (o->tls_cert && !loopback)))
        return first_admin_token(a, o);
    if (loopback || o->tls_cert)
        return 0;
    if (!o->insecure) {
        fxl_log(FXL_ERROR, "main", "refusing to serve a non-loopback address without TLS "
                "addr=%s fix=\"give --tls-cert FILE --tls-key FILE (and --init-admin-token "
                "FILE for the first admin token), listen on 127.0.0.1, or pass --insecure "
                "to serve plaintext anyway\"", addr);
        fprintf(stderr, "fluxiond: %s is not a loopback address: serving it needs "
                "TLS and authentication (--tls-cert FILE --tls-key FILE, and "
                "--init-admin-token FILE), or --insecure to serve plaintext anyway\n",
                addr);
        return 1;
    }
    fxl_log(FXL_WARN, "main", "INSECURE: serving plaintext on a non-loopback address "
            "(--insecure): tokens and data cross the network unencrypted addr=%s", addr);
    if (!fxau_enabled(a))
        fxl_log(FXL_WARN, "main", "INSECURE: no authentication either: every caller who "
                "can reach the address is an admin (give --init-admin-token FILE) addr=%s",
                addr);
    return 0;
}

static void http_log(void *data, const char *level, const char *msg)
{
    int lv = fxl_parse_level(level);
    fxl_log(lv < 0 ? FXL_INFO : (fxl_level)lv, "http", "%s", msg);
}

/* Starts the HTTP port (--http-listen), once gRPC serves: every route is a
 * local call into d->rpc. Writes --http-port-file. Returns 0 or 1 (logged). */
static int start_http(fxa_daemon *d, const fxf_options *o, fxh_server **out, int *port)
{
    char err[1024];
    fxh_opts ho = { .listen = o->http_listen, .rpc = d->rpc,
                    .max_body_bytes = d->max_message_bytes,
                    .max_connections = (int)o->http_max_connections,
                    .max_connections_per_client = (int)o->http_max_connections_per_client,
                    .tls_cert_file = o->tls_cert, .tls_key_file = o->tls_key, .log = http_log };
    if (fxh_start(&ho, out, port, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot serve HTTP addr=%s error=\"%s\"", o->http_listen, err);
        return 1;
    }
    char text[16];
    int n = snprintf(text, sizeof text, "%d\n", *port);
    if (o->http_port_file &&
        fxu_write_file_atomic(o->http_port_file, text, (size_t)n, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot write --http-port-file file=%s error=\"%s\"",
                o->http_port_file, err);
        return 1;
    }
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

/* The peers module, reachable from here until the process exits: a start
 * that fails after it opened (a refused --http-listen, a port in use)
 * returns from main without tearing the daemon down, while threads that
 * were given it may still run; the clean shutdown frees it (drain_main). */
static fxpr_peers *started_peers;

int main(int argc, char **argv)
{
    fx_blas_reexec_if_misdetected(argv);
    fxf_options o;
    int rc = fxf_parse(argc, argv, &o);
    if (rc)
        return rc;
    fxl_configure((fxl_level)fxl_parse_level(o.log_level), strcmp(o.log_format, "json") == 0);
    fxr_set_core_log(rpc_log, NULL); /* gRPC core's lines through the same logger */
    signal(SIGPIPE, SIG_IGN);
    fx_set_num_threads((int)o.threads);

    fxa_daemon d = { .data_dir = o.data_dir, .start_ms = fxu_now_ms(),
                     .max_dataset_bytes = (uint64_t)o.max_dataset_mb << 20,
                     .max_params = (uint64_t)o.max_model_params,
                     .max_import_bytes = (uint64_t)o.max_import_mb << 20,
                     .max_message_bytes = (uint64_t)o.max_message_mb << 20,
                     .chunk_bytes = 1u << 20, .engine_threads = (int)o.threads,
                     .devices = o.enabled };
    atomic_init(&d.draining, false);
    char err[1024];
    if (fxpr_open(&(fxpr_opts){ .peers = o.peers, .peers_file = o.peers_file,
                                .node_name = o.node_name, .comm_host = o.comm_host,
                                .token_file = o.peer_token_file,
                                .tls_cert_file = o.tls_cert, .tls_key_file = o.tls_key,
                                .tls_ca_file = o.tls_client_ca,
                                .tls_client_cert = o.tls_require_client_cert,
                                .max_message_bytes = d.max_message_bytes,
                                .version = FX_VERSION_STRING },
                  &d.peers, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "peers refused error=\"%s\"", err);
        fprintf(stderr, "fluxiond: %s\n", err);
        return 1;
    }
    started_peers = d.peers;
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
                                              .max_dataset_bytes = (uint64_t)o.team_max_dataset_mb << 20,
                                              .weight = o.team_weight,
                                              .cpu_slots = (uint32_t)o.team_cpu_slots,
                                              .gpu_slots = (uint32_t)o.team_gpu_slots,
                                              .gpu_memory_bytes = (uint64_t)(o.team_gpu_memory_gb *
                                                                             (1 << 30)) });
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
    if (fxpr_secret(d.peers) &&
        fxau_set_peer_secret(d.auth, fxpr_secret(d.peers), err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "--peer-token-file refused error=\"%s\"", err);
        fxau_close(d.auth);
        fxdb_store_close(d.store);
        return 1;
    }
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
                           .max_inflight_bytes = (uint64_t)o.max_inflight_mb << 20,
                           .max_inflight_bytes_per_peer = (uint64_t)o.max_inflight_mb_per_client << 20,
                           .max_calls_per_peer = (int)o.max_calls_per_client,
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
        fxa_register_training_service(&d) || fxa_register_admin_service(&d) ||
        fxa_register_health_service(&d) || fxa_register_peer_service(&d) ||
        fxa_register_reflection_service(&d)) {
        fxl_log(FXL_ERROR, "main", "cannot register the services");
        return 1;
    }
    load_stored(&d);
    if (fxj_jobs_start(d.store, d.datasets, d.serving, &(fxj_jobs_opts){
                           .workers = (int)o.train_workers,
                           .checkpoint_every_steps = o.checkpoint_steps,
                           .max_params = d.max_params,
                           .inference_first = o.inference_first,
                           .preempt_grace_steps = o.preempt_grace_steps,
                           .training_min_share = o.training_min_share,
                           .peers = d.peers,
                           .devices = &d.devices,
                           .sched_half_life_ms = o.sched_half_life_min * 60000,
                           .sched_min_run_ms = o.sched_min_run_s < 0    ? 0
                                               : o.sched_min_run_s == 0 ? 1
                                                                        : o.sched_min_run_s * 1000 }, &d.jobs, err, sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot start the training jobs error=\"%s\"", err);
        return 1;
    }
    /* ranks for peers' jobs: only with a peer secret (nobody else can ask) */
    if (fxpr_secret(d.peers) &&
        fxj_ranks_new(d.peers, (int)o.train_workers, d.max_params, &d.ranks, err,
                      sizeof err) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot take ranks for peers error=\"%s\"", err);
        return 1;
    }
    fxj_ranks_set_jobs(d.ranks, d.jobs); /* admitted by this daemon's scheduler */
    int port = 0, http_port = 0;
    if (fxr_server_start(d.rpc, &port) != 0) {
        fxl_log(FXL_ERROR, "main", "cannot start serving addr=%s", o.listen);
        return 1;
    }
    fxpr_set_listen(d.peers, o.listen, port);
    fxpr_greet_async(d.peers);
    fxh_server *http = NULL;
    if (o.http_listen && start_http(&d, &o, &http, &http_port))
        return 1;

    uv_loop_t *loop = uv_default_loop();
    control c = { .d = &d, .http = http, .http_tls = http && o.tls_cert,
                  .grace_ms = (int)o.grace_seconds * 1000 };
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
    if (http) /* after gRPC's line: the first line stays the gRPC port */
        printf("http listening on %.*s:%d\n",
               (int)(strrchr(o.http_listen, ':') - o.http_listen), o.http_listen, http_port);
    fflush(stdout);
    char devs[256];
    fxl_log(FXL_INFO, "main", "listening addr=%.*s:%d data_dir=%s threads=%ld "
            "devices=\"%s\" tls=%s auth=%s version=%s", hostlen, o.listen, port, o.data_dir,
            o.threads, fxsv_devices_str(&d.devices, devs, sizeof devs),
            !o.tls_cert ? "off" : o.tls_client_ca ? "mtls" : "on",
            fxau_enabled(d.auth) ? "on" : "off(local)", FX_VERSION_STRING);
    if (http)
        fxl_log(FXL_INFO, "main", "http listening addr=%.*s:%d tls=%s",
                (int)(strrchr(o.http_listen, ':') - o.http_listen), o.http_listen, http_port,
                o.tls_cert ? "on" : "off");

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
