/*
 * routes.c - from an HTTP request to one gRPC method and back (http.h,
 * docs/http.md): the path split at '/' and each segment %-decoded, the
 * request message built (path segments, or the body through the codec,
 * kserve.h), the local call, and the response turned into the answer.
 *
 * Path segments (model, version) are checked here only for what a C
 * string cannot carry (a NUL byte, a bad %-escape); UTF-8 and length are
 * the handler's own checks (rpc/wirecheck.h), as over gRPC.
 *
 * ModelConfig and GetMetrics come from other parts of the daemon and may
 * be missing from a build: their methods are looked up in the service
 * descriptors by name, and their messages read by field name, so that
 * without them the answer is 501, not a build error.
 */
#define _GNU_SOURCE
#include "http/http_internal.h"
#include "http/kserve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxion/v1/cluster.pb-c.h"
#include "grpc_health/v1/health.pb-c.h"
#include "inference/grpc_service.pb-c.h"

#define INFER_SVC "/inference.GRPCInferenceService/"
#define MAX_SEGMENTS 8
/* A decoded segment may be longer than a name may be; the handler says so
 * (a name's limit is its field's, rpc/wirecheck.h). This only bounds the
 * copy. */
#define MAX_SEGMENT 4096

typedef struct {
    char *seg[MAX_SEGMENTS];
    int n;
} path;

static void path_free(path *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->seg[i]);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Splits url's path (before '?') at '/' and decodes each segment. False
 * with an error answer for a bad escape, a NUL, too many segments (and
 * nothing left in p). */
static bool split_segments(const char *url, path *p, fxh_answer *a)
{
    memset(p, 0, sizeof *p);
    const char *s = url;
    if (*s != '/') {
        fxh__error(a, 0, 400, "the request path must start with '/'");
        return false;
    }
    while (*s == '/' && s[1] && s[1] != '?') {
        s++;
        size_t n = strcspn(s, "/?");
        if (p->n == MAX_SEGMENTS || n > MAX_SEGMENT) {
            fxh__error(a, 0, p->n == MAX_SEGMENTS ? 404 : 414, "no route for this path (%s)",
                       p->n == MAX_SEGMENTS ? "too many segments" : "a segment is too long");
            return false;
        }
        char *d = malloc(n + 1);
        if (!d) {
            fxh__error(a, FXS_RESOURCE_EXHAUSTED, 0, "server out of memory");
            return false;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] != '%') {
                d[k++] = s[i];
                continue;
            }
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                fxh__error(a, 0, 400, "path segment %d has a bad %%-escape (want %%XX)",
                           p->n + 1);
                free(d);
                return false;
            }
            d[k] = (char)(hi * 16 + lo);
            if (!d[k]) {
                fxh__error(a, 0, 400, "path segment %d contains a NUL byte (%%00)", p->n + 1);
                free(d);
                return false;
            }
            k++;
            i += 2;
        }
        d[k] = '\0';
        p->seg[p->n++] = d;
        s += n;
    }
    return true;
}

static bool split(const char *url, path *p, fxh_answer *a)
{
    if (split_segments(url, p, a))
        return true;
    path_free(p); /* the segments before the bad one */
    p->n = 0;
    return false;
}

/* ------------------------------------------------------------ calls */

/* Packs req, runs path, unpacks the response as out: the message, or NULL
 * with the error answer in a. */
static ProtobufCMessage *call(const fxh_request *r, const char *path,
                              const ProtobufCMessage *req, const ProtobufCMessageDescriptor *out,
                              fxh_answer *a)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        fxh__error(a, FXS_RESOURCE_EXHAUSTED, 0, "server out of memory");
        return NULL;
    }
    protobuf_c_message_pack(req, buf);
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    char msg[1024];
    int code = fxh__call(r, path, buf, len, &resp, &resp_len, msg, sizeof msg);
    free(buf);
    if (code) {
        fxh__error(a, (fxs_status)code, 0, "%s", msg);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(out, NULL, resp_len, resp);
    free(resp);
    if (!m)
        fxh__error(a, FXS_INTERNAL, 0, "cannot parse the %s the server answered", out->name);
    return m;
}

/* The answer: m as JSON (the codec), 200. */
static void json_answer(const ProtobufCMessage *m, fxh_answer *a)
{
    char err[1024];
    char *body = NULL;
    size_t len = 0;
    int rc = fxh_message_json(m, &body, &len, err, sizeof err);
    if (rc) {
        fxh__error(a, rc, 0, "%s", err);
        return;
    }
    a->status = 200;
    a->content_type = "application/json";
    a->body = body;
    a->len = len;
    a->json_len = SIZE_MAX;
}

static void empty_answer(fxh_answer *a, int status)
{
    a->status = status;
    a->content_type = NULL;
    a->body = NULL;
    a->len = 0;
    a->json_len = SIZE_MAX;
}

/* Runs path on req and answers its response as JSON. */
static void call_json(const fxh_request *r, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *out, fxh_answer *a)
{
    ProtobufCMessage *m = call(r, path, req, out, a);
    if (m) {
        json_answer(m, a);
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

/* ---------------------------------------------------------- routes */

static void health(const fxh_request *r, bool ready, fxh_answer *a)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp =
        (void *)call(r, "/grpc.health.v1.Health/Check", &req.base,
                     &grpc__health__v1__health_check_response__descriptor, a);
    if (!resp)
        return;
    bool serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    empty_answer(a, !ready || serving ? 200 : 503);
}

static void model_ready(const fxh_request *r, char *model, char *version, fxh_answer *a)
{
    Inference__ModelReadyRequest req = INFERENCE__MODEL_READY_REQUEST__INIT;
    req.name = model;
    req.version = version;
    Inference__ModelReadyResponse *resp = (void *)call(
        r, INFER_SVC "ModelReady", &req.base, &inference__model_ready_response__descriptor, a);
    if (!resp)
        return;
    bool ready = resp->ready; /* not ready: 400, as Triton answers */
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    empty_answer(a, ready ? 200 : 400);
}

/* "Inference-Header-Content-Length: N": the JSON part's length, within
 * the body; SIZE_MAX when absent. */
static bool json_part(const fxh_request *r, size_t *json_len, fxh_answer *a)
{
    *json_len = SIZE_MAX;
    const char *h = r->infer_header_len;
    if (!h)
        return true;
    char *end;
    unsigned long long v = strtoull(h, &end, 10);
    if (!*h || *end || h[0] == '-' || v > r->body_len) {
        fxh__error(a, 0, 400, "Inference-Header-Content-Length: '%.40s' is not a length within "
                   "the %zu-byte body", h, r->body_len);
        return false;
    }
    *json_len = (size_t)v;
    return true;
}

static void infer(const fxh_request *r, char *model, char *version, fxh_answer *a)
{
    char err[1024];
    size_t json_len;
    if (!json_part(r, &json_len, a))
        return;
    Inference__ModelInferRequest *req =
        fxh_infer_request(r->body, r->body_len, json_len, model, version, err, sizeof err);
    if (!req) {
        fxh__error(a, 0, 400, "%s", err);
        return;
    }
    Inference__ModelInferResponse *resp = (void *)call(
        r, INFER_SVC "ModelInfer", &req->base, &inference__model_infer_response__descriptor, a);
    if (resp) {
        char *body = NULL;
        size_t len = 0, jl = 0;
        int rc = fxh_infer_response(req, resp, &body, &len, &jl, err, sizeof err);
        if (rc) {
            fxh__error(a, rc, 0, "%s", err);
        } else {
            a->status = 200;
            a->body = body;
            a->len = len;
            a->json_len = jl < len ? jl : SIZE_MAX;
            a->content_type = jl < len ? "application/octet-stream" : "application/json";
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* A method that another part of the daemon adds (ModelConfig, GetMetrics):
 * its descriptor, or NULL with a 501 answer. */
static const ProtobufCMethodDescriptor *optional_method(const ProtobufCServiceDescriptor *svc,
                                                        const char *name, fxh_answer *a)
{
    const ProtobufCMethodDescriptor *m = protobuf_c_service_descriptor_get_method_by_name(svc,
                                                                                          name);
    if (!m)
        fxh__error(a, FXS_UNIMPLEMENTED, 0, "%s/%s is not built into this daemon", svc->name,
                   name);
    return m;
}

/* Sets string field `name` of m to v (m built here: the strings stay the
 * caller's, and m is freed with free()). */
static void set_string(ProtobufCMessage *m, const char *name, char *v)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED)
        *(char **)((char *)m + f->offset) = v;
}

static const void *get_field(const ProtobufCMessage *m, const char *name,
                             ProtobufCType type)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (!f || f->type != type || f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return *(const void *const *)((const char *)m + f->offset);
}

/* GET .../config: ModelConfig's `config`, as JSON. */
static void model_config(const fxh_request *r, char *model, char *version, fxh_answer *a)
{
    const ProtobufCMethodDescriptor *md =
        optional_method(&inference__grpcinference_service__descriptor, "ModelConfig", a);
    if (!md)
        return;
    ProtobufCMessage *req = calloc(1, md->input->sizeof_message);
    if (!req) {
        fxh__error(a, FXS_RESOURCE_EXHAUSTED, 0, "server out of memory");
        return;
    }
    protobuf_c_message_init(md->input, req);
    set_string(req, "name", model);
    set_string(req, "version", version);
    ProtobufCMessage *resp = call(r, INFER_SVC "ModelConfig", req, md->output, a);
    free(req);
    if (!resp)
        return;
    const ProtobufCMessage *cfg = get_field(resp, "config", PROTOBUF_C_TYPE_MESSAGE);
    if (cfg)
        json_answer(cfg, a);
    else
        fxh__error(a, FXS_INTERNAL, 0, "the server answered ModelConfig without a config");
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* GET /metrics: GetMetrics' text, the Prometheus text exposition. */
static void metrics(const fxh_request *r, fxh_answer *a)
{
    const ProtobufCMethodDescriptor *md =
        optional_method(&fluxion__v1__cluster_service__descriptor, "GetMetrics", a);
    if (!md)
        return;
    ProtobufCMessage *req = calloc(1, md->input->sizeof_message);
    if (!req) {
        fxh__error(a, FXS_RESOURCE_EXHAUSTED, 0, "server out of memory");
        return;
    }
    protobuf_c_message_init(md->input, req);
    ProtobufCMessage *resp = call(r, "/fluxion.v1.ClusterService/GetMetrics", req, md->output, a);
    free(req);
    if (!resp)
        return;
    const char *text = get_field(resp, "text", PROTOBUF_C_TYPE_STRING);
    a->status = 200;
    a->content_type = "text/plain; version=0.0.4; charset=utf-8";
    a->body = strdup(text ? text : "");
    a->len = a->body ? strlen(a->body) : 0;
    a->json_len = SIZE_MAX;
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* A body through the codec into a message of desc; NULL with a 400. */
static ProtobufCMessage *from_body(const fxh_request *r, const ProtobufCMessageDescriptor *desc,
                                   fxh_answer *a)
{
    char err[1024];
    ProtobufCMessage *m = fxh_message_from_json(desc, r->body, r->body_len, err, sizeof err);
    if (!m)
        fxh__error(a, 0, 400, "%s", err);
    return m;
}

static void repo_index(const fxh_request *r, fxh_answer *a)
{
    ProtobufCMessage *req = from_body(r, &inference__repository_index_request__descriptor, a);
    if (!req)
        return;
    call_json(r, INFER_SVC "RepositoryIndex", req,
              &inference__repository_index_response__descriptor, a);
    protobuf_c_message_free_unpacked(req, NULL);
}

/* POST /v2/repository/models/{m}/load|unload: the body's parameters, the
 * path's model. Both messages have the same fields. */
static void repo_load(const fxh_request *r, const char *model, bool load, fxh_answer *a)
{
    const ProtobufCMessageDescriptor *in = load
        ? &inference__repository_model_load_request__descriptor
        : &inference__repository_model_unload_request__descriptor;
    ProtobufCMessage *req = from_body(r, in, a);
    if (!req)
        return;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(in, "model_name");
    char **slot = (char **)((char *)req + f->offset);
    char *name = strdup(model);
    if (!name) {
        protobuf_c_message_free_unpacked(req, NULL);
        fxh__error(a, FXS_RESOURCE_EXHAUSTED, 0, "server out of memory");
        return;
    }
    if (*slot && *slot != (char *)protobuf_c_empty_string)
        free(*slot);
    *slot = name; /* freed with req */
    ProtobufCMessage *resp = call(r, load ? INFER_SVC "RepositoryModelLoad"
                                          : INFER_SVC "RepositoryModelUnload", req,
                                  load ? &inference__repository_model_load_response__descriptor
                                       : &inference__repository_model_unload_response__descriptor,
                                  a);
    protobuf_c_message_free_unpacked(req, NULL);
    if (resp) {
        protobuf_c_message_free_unpacked(resp, NULL);
        empty_answer(a, 200);
    }
}

static void stats(const fxh_request *r, char *model, char *version, fxh_answer *a)
{
    Inference__ModelStatisticsRequest req = INFERENCE__MODEL_STATISTICS_REQUEST__INIT;
    req.name = model;
    req.version = version;
    call_json(r, INFER_SVC "ModelStatistics", &req.base,
              &inference__model_statistics_response__descriptor, a);
}

static void model_metadata(const fxh_request *r, char *model, char *version, fxh_answer *a)
{
    Inference__ModelMetadataRequest req = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    req.name = model;
    req.version = version;
    call_json(r, INFER_SVC "ModelMetadata", &req.base,
              &inference__model_metadata_response__descriptor, a);
}

/* True when the request's method is want; else a 405 answer. */
static bool method_is(const fxh_request *r, const char *want, fxh_answer *a)
{
    if (strcmp(r->method, want) == 0)
        return true;
    fxh__error(a, 0, 405, "%s is not allowed here: use %s", r->method, want);
    return false;
}

/* /v2/models/{m}[/versions/{v}][/ready|infer|stats|config] */
static void model_route(const fxh_request *r, path *p, fxh_answer *a)
{
    char *model = p->seg[2], *version = "";
    int i = 3;
    if (i < p->n && strcmp(p->seg[i], "versions") == 0) {
        if (i + 1 >= p->n) {
            fxh__error(a, 0, 404, "no route: /versions needs a version after it");
            return;
        }
        version = p->seg[i + 1];
        i += 2;
    }
    const char *what = i < p->n ? p->seg[i] : "";
    if (i + 1 < p->n) {
        fxh__error(a, 0, 404, "no route for this path");
    } else if (!*what) {
        if (method_is(r, "GET", a))
            model_metadata(r, model, version, a);
    } else if (strcmp(what, "ready") == 0) {
        if (method_is(r, "GET", a))
            model_ready(r, model, version, a);
    } else if (strcmp(what, "infer") == 0) {
        if (method_is(r, "POST", a))
            infer(r, model, version, a);
    } else if (strcmp(what, "stats") == 0) {
        if (method_is(r, "GET", a))
            stats(r, model, version, a);
    } else if (strcmp(what, "config") == 0) {
        if (method_is(r, "GET", a))
            model_config(r, model, version, a);
    } else {
        fxh__error(a, 0, 404, "no route for this path (after the model: ready, infer, stats "
                   "or config)");
    }
}

void fxh__route(const fxh_request *r, fxh_answer *a)
{
    path p;
    if (!split(r->url, &p, a))
        return;
    const char *s0 = p.n > 0 ? p.seg[0] : "", *s1 = p.n > 1 ? p.seg[1] : "";
    const char *s2 = p.n > 2 ? p.seg[2] : "";
    if (p.n == 1 && strcmp(s0, "metrics") == 0) {
        if (method_is(r, "GET", a))
            metrics(r, a);
    } else if (strcmp(s0, "v2") != 0) {
        fxh__error(a, 0, 404, "no route for this path (the API is under /v2, and /metrics)");
    } else if (p.n == 1) {
        if (method_is(r, "GET", a)) {
            Inference__ServerMetadataRequest req = INFERENCE__SERVER_METADATA_REQUEST__INIT;
            call_json(r, INFER_SVC "ServerMetadata", &req.base,
                      &inference__server_metadata_response__descriptor, a);
        }
    } else if (strcmp(s1, "health") == 0 && p.n == 3 &&
               (strcmp(s2, "live") == 0 || strcmp(s2, "ready") == 0)) {
        if (method_is(r, "GET", a))
            health(r, strcmp(s2, "ready") == 0, a);
    } else if (strcmp(s1, "models") == 0 && p.n == 3 && strcmp(s2, "stats") == 0) {
        if (method_is(r, "GET", a))
            stats(r, "", "", a);
    } else if (strcmp(s1, "models") == 0 && p.n >= 3) {
        model_route(r, &p, a);
    } else if (strcmp(s1, "repository") == 0 && p.n == 3 && strcmp(s2, "index") == 0) {
        if (method_is(r, "POST", a))
            repo_index(r, a);
    } else if (strcmp(s1, "repository") == 0 && p.n == 5 && strcmp(s2, "models") == 0 &&
               (strcmp(p.seg[4], "load") == 0 || strcmp(p.seg[4], "unload") == 0)) {
        if (method_is(r, "POST", a))
            repo_load(r, p.seg[3], strcmp(p.seg[4], "load") == 0, a);
    } else {
        fxh__error(a, 0, 404, "no route for this path (docs/http.md lists them)");
    }
    path_free(&p);
}
