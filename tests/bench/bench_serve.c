/*
 * bench_serve.c - `fluxion-bench serve`: a load generator for any server of
 * the Open Inference Protocol over gRPC (inference.GRPCInferenceService).
 *
 *     fluxion-bench serve --server ADDR --model M [--concurrency C]
 *         [--duration S] [--rate R] [--input FILE.json] [--raw]
 *         [--warmup S] [--timeout-ms T]
 *
 * The request is built once: from --input (the JSON forms of inferjson.h),
 * or from ModelMetadata (every input, -1 dims as 1, floats 0.5, integers 1)
 * and packed once; each call sends the same bytes. Closed loop: C threads,
 * each sends its next request when the last one is answered. Open loop
 * (--rate R): requests are due at a fixed rate of R per second in all, sent
 * by C threads; a request's latency counts from when it was due, so a server
 * that falls behind shows it (no coordinated omission).
 *
 * Prints one JSON line:
 *     {"model":"mlp","concurrency":64,"rate":0,"duration_s":10.0,
 *      "requests":..., "ok":..., "requests_per_s":..., "p50_us":...,
 *      "p90_us":..., "p99_us":..., "p999_us":..., "mean_us":...,
 *      "calls":..., "client_cpu_us_per_call":..., "errors":{"UNAVAILABLE":3}}
 * requests_per_s counts answered-OK requests. Exit status 0, or 1 when the
 * server cannot be reached or no request succeeded, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "inferjson.h"
#include "inference/grpc_service.pb-c.h"
#include "rpcc.h"

int cmd_serve(int argc, char **argv);

/* Method paths from protoc-c's service descriptor, as the daemon and the
 * CLI derive them (fxc_method_path). */
static char INFER_PATH[128], META_PATH[128];

static void init_paths(void)
{
    const ProtobufCServiceDescriptor *svc = &inference__grpcinference_service__descriptor;
    if (!fxc_method_path(svc, "ModelInfer", INFER_PATH, sizeof INFER_PATH) ||
        !fxc_method_path(svc, "ModelMetadata", META_PATH, sizeof META_PATH)) {
        fprintf(stderr, "fluxion-bench: the inference service lacks ModelInfer/ModelMetadata\n");
        exit(1);
    }
}
#define N_CODES 17

typedef struct {
    const char *server, *model, *input;
    int concurrency;
    double duration, warmup, rate;
    bool raw;
    int64_t timeout_ms;
} opts;

typedef struct {
    const opts *o;
    atomic_uint_fast64_t calls; /* every call answered, warmup included */
    fxc_channel *ch;
    const uint8_t *req;
    size_t req_len;
    uint64_t start_ns, measure_ns, end_ns;
    atomic_uint_fast64_t next_slot; /* open loop: the next due request */
} shared;

typedef struct {
    shared *s;
    pthread_t th;
    uint32_t *lat_us; /* measured latencies */
    size_t n, cap;
    uint64_t codes[N_CODES];
    char last_err[256];
} worker;

static void usage(FILE *f)
{
    fprintf(f,
"usage: fluxion-bench serve --server HOST:PORT --model NAME [options]\n"
"\n"
"Drives ModelInfer (Open Inference Protocol, gRPC) and prints one JSON line:\n"
"requests/s, p50/p90/p99/p99.9 latency in microseconds, errors by status.\n"
"\n"
"  --concurrency C   client threads, each with one call in flight (default 1)\n"
"  --duration S      measured seconds (default 10)\n"
"  --warmup S        seconds run first and not measured (default 1)\n"
"  --rate R          open loop: R requests/s in all, latency from when each\n"
"                    was due (default: closed loop)\n"
"  --input FILE      request inputs as JSON (see `fluxion infer --help`);\n"
"                    default: from ModelMetadata, -1 dims as 1\n"
"  --raw             send raw_input_contents instead of typed contents\n"
"  --timeout-ms T    per-call deadline (default 10000)\n");
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fluxion-bench serve: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double num(const char *flag, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        die("%s: '%s' is not a number in [%g, %g]", flag, s, lo, hi);
    return v;
}

static void parse(int argc, char **argv, opts *o)
{
    *o = (opts){ .concurrency = 1, .duration = 10, .warmup = 1, .timeout_ms = 10000 };
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(f, "--raw")) {
            o->raw = true;
            continue;
        }
        if (i + 1 >= argc)
            die("%s needs a value (see --help)", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--server"))
            o->server = v;
        else if (!strcmp(f, "--model"))
            o->model = v;
        else if (!strcmp(f, "--input"))
            o->input = v;
        else if (!strcmp(f, "--concurrency"))
            o->concurrency = (int)num(f, v, 1, 4096);
        else if (!strcmp(f, "--duration"))
            o->duration = num(f, v, 0.01, 86400);
        else if (!strcmp(f, "--warmup"))
            o->warmup = num(f, v, 0, 3600);
        else if (!strcmp(f, "--rate"))
            o->rate = num(f, v, 0.001, 1e7);
        else if (!strcmp(f, "--timeout-ms"))
            o->timeout_ms = (int64_t)num(f, v, 1, 3600000);
        else
            die("unknown option '%s' (see --help)", f);
    }
    if (!o->server || !o->model)
        die("--server and --model are required (see --help)");
}

/* The inputs from metadata: every input, -1 dims as 1, constant values. */
static json_t *inputs_from_metadata(const Inference__ModelMetadataResponse *m)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < m->n_inputs; i++) {
        const Inference__ModelMetadataResponse__TensorMetadata *t = m->inputs[i];
        json_t *shape = json_array(), *data = json_array();
        size_t n = 1;
        for (size_t k = 0; k < t->n_shape; k++) {
            int64_t d = t->shape[k] < 0 ? 1 : t->shape[k];
            json_array_append_new(shape, json_integer(d));
            n *= (size_t)d;
        }
        bool is_float = t->datatype[0] == 'F' || t->datatype[0] == 'B';
        for (size_t e = 0; e < n; e++)
            json_array_append_new(data, is_float ? json_real(0.5) : json_integer(1));
        json_array_append_new(arr, json_pack("{s:s, s:o, s:s, s:o}", "name", t->name, "shape",
                                             shape, "datatype", t->datatype, "data", data));
    }
    return json_pack("{s:o}", "inputs", arr);
}

/* The packed request, built once. */
static uint8_t *build_request(const opts *o, fxc_channel *ch, size_t *len)
{
    char err[1024];
    Inference__ModelMetadataRequest mr = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mr.name = (char *)o->model;
    ProtobufCMessage *meta = NULL;
    fxc_call_opts co = { .timeout_ms = o->timeout_ms };
    int rc = fxc_unary(ch, META_PATH, &mr.base, &inference__model_metadata_response__descriptor,
                       &meta, &co, err, sizeof err);
    if (rc) {
        fprintf(stderr, "fluxion-bench serve: ModelMetadata %s: %s: %s\n", o->model,
                fxs_status_name(rc), err);
        exit(1);
    }
    json_t *in;
    if (o->input) {
        json_error_t je;
        if (!(in = json_load_file(o->input, 0, &je)))
            die("%s:%d: %s", o->input, je.line, je.text);
    } else {
        in = inputs_from_metadata((const void *)meta);
    }
    Inference__ModelInferRequest *req =
        inferjson_request(in, o->model, NULL, (const void *)meta, o->raw, err, sizeof err);
    json_decref(in);
    protobuf_c_message_free_unpacked(meta, NULL);
    if (!req)
        die("%s: %s", o->input ? o->input : "inputs from metadata", err);
    *len = protobuf_c_message_get_packed_size(&req->base);
    uint8_t *buf = malloc(*len + 1);
    if (!buf)
        die("out of memory");
    protobuf_c_message_pack(&req->base, buf);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return buf;
}

static void record(worker *w, uint64_t t_from, uint64_t t_done, int code)
{
    if (t_from < w->s->measure_ns || t_from >= w->s->end_ns)
        return; /* warmup, or due after the end */
    w->codes[code >= 0 && code < N_CODES ? code : FXS_UNKNOWN]++;
    if (code != FXS_OK)
        return;
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 4096;
        uint32_t *p = realloc(w->lat_us, sizeof *p * w->cap);
        if (!p)
            die("out of memory");
        w->lat_us = p;
    }
    uint64_t us = (t_done - t_from) / 1000u;
    w->lat_us[w->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = { .tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    shared *s = w->s;
    fxc_call_opts co = { .timeout_ms = s->o->timeout_ms };
    for (;;) {
        uint64_t due;
        if (s->o->rate > 0) {
            uint64_t slot = atomic_fetch_add(&s->next_slot, 1);
            due = s->start_ns + (uint64_t)((double)slot * 1e9 / s->o->rate);
            if (due >= s->end_ns)
                break;
            sleep_until(due);
        } else {
            due = mono_ns();
            if (due >= s->end_ns)
                break;
        }
        void *resp = NULL;
        size_t resp_len = 0;
        int rc = fxc_unary_raw(s->ch, INFER_PATH, s->req, s->req_len, &resp, &resp_len, &co,
                               w->last_err, sizeof w->last_err);
        record(w, due, mono_ns(), rc);
        atomic_fetch_add_explicit(&s->calls, 1, memory_order_relaxed);
        free(resp);
    }
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of sorted v (nearest rank). */
static uint32_t quantile(const uint32_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t r = (size_t)ceil(q * (double)n);
    return v[r ? r - 1 : 0];
}

int cmd_serve(int argc, char **argv)
{
    opts o;
    parse(argc, argv, &o);
    init_paths();
    /* a daemon with auth on: the token from the environment, as the CLI */
    fxc_channel_opts co = { .token = getenv("FLUXION_TOKEN") };
    fxc_channel *ch = fxc_channel_create(o.server, &co);
    if (!ch)
        die("cannot open a channel to the server (out of memory, or FLUXION_TOKEN is not a "
            "token)");
    shared s = { .o = &o, .ch = ch };
    s.req = build_request(&o, ch, &s.req_len);
    s.start_ns = mono_ns();
    s.measure_ns = s.start_ns + (uint64_t)(o.warmup * 1e9);
    s.end_ns = s.measure_ns + (uint64_t)(o.duration * 1e9);
    atomic_init(&s.next_slot, 0);
    atomic_init(&s.calls, 0);
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    worker *w = calloc((size_t)o.concurrency, sizeof *w);
    if (!w)
        die("out of memory");
    int started = 0;
    for (int i = 0; i < o.concurrency; i++) {
        w[i].s = &s;
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
            break;
        started++;
    }
    if (started < o.concurrency)
        fprintf(stderr, "fluxion-bench serve: started %d of %d threads\n", started,
                o.concurrency);
    size_t total = 0;
    uint64_t codes[N_CODES] = { 0 };
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].th, NULL);
        total += w[i].n;
        for (int c = 0; c < N_CODES; c++)
            codes[c] += w[i].codes[c];
    }
    uint64_t wall = mono_ns() - s.measure_ns;
    /* this process's CPU time per call (warmup included): on a loaded
     * machine a steadier figure than the rates */
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu_us = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec +
                             ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1e6 +
                    (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec +
                             ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec);
    uint64_t calls = atomic_load(&s.calls);
    uint32_t *all = malloc(sizeof *all * (total + 1));
    if (!all)
        die("out of memory");
    size_t k = 0;
    double sum = 0;
    for (int i = 0; i < started; i++) {
        if (w[i].n)
            memcpy(all + k, w[i].lat_us, sizeof *all * w[i].n);
        k += w[i].n;
    }
    for (size_t i = 0; i < total; i++)
        sum += all[i];
    qsort(all, total, sizeof *all, cmp_u32);
    /* the measured window, or longer when the last calls ran past it */
    double secs = (double)(wall > (uint64_t)(o.duration * 1e9) ? wall : (uint64_t)(o.duration * 1e9)) / 1e9;
    uint64_t requests = 0;
    for (int c = 0; c < N_CODES; c++)
        requests += codes[c];
    printf("{\"model\":\"%s\",\"concurrency\":%d,\"rate\":%g,\"duration_s\":%.3f,"
           "\"requests\":%llu,\"ok\":%zu,\"requests_per_s\":%.1f,\"p50_us\":%u,\"p90_us\":%u,"
           "\"p99_us\":%u,\"p999_us\":%u,\"mean_us\":%.1f,\"calls\":%llu,"
           "\"client_cpu_us_per_call\":%.1f,\"errors\":{",
           o.model, o.concurrency, o.rate, secs, (unsigned long long)requests, total,
           (double)total / secs, quantile(all, total, 0.5), quantile(all, total, 0.9),
           quantile(all, total, 0.99), quantile(all, total, 0.999),
           total ? sum / (double)total : 0.0, (unsigned long long)calls,
           calls ? cpu_us / (double)calls : 0.0);
    int shown = 0;
    for (int c = 1; c < N_CODES; c++)
        if (codes[c])
            printf("%s\"%s\":%llu", shown++ ? "," : "", fxs_status_name(c),
                   (unsigned long long)codes[c]);
    printf("}}\n");
    fflush(stdout);
    if (!total && started && w[0].last_err[0])
        fprintf(stderr, "fluxion-bench serve: no request succeeded; last error: %s\n",
                w[0].last_err);
    for (int i = 0; i < o.concurrency; i++)
        free(w[i].lat_us);
    free(w);
    free(all);
    free((void *)s.req);
    fxc_channel_free(ch);
    return total ? 0 : 1;
}
