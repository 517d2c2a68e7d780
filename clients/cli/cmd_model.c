/*
 * cmd_model.c - `fluxion model ...`: create, list, get, delete, export,
 * import (fluxion.v1.ModelService), load, unload (RepositoryModelLoad /
 * Unload of the inference service).
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fluxion/v1/model.pb-c.h"
#include "fsutil.h"
#include "inference/grpc_service.pb-c.h"
#include "jsonout.h"
#include "util.h"
#include "pbjson.h"


/* --------------------------------------------------------------- printing */

static void print_shape(FILE *f, size_t n, const int64_t *shape)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%" PRId64, i ? ", " : "", shape[i]);
    fputc(']', f);
}

static const char *dtype_name(int dtype)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&fluxion__v1__data_type__descriptor, dtype);
    return v ? v->name : "?";
}

static void print_tensor_specs(const char *title, size_t n, Fluxion__V1__TensorSpec **specs)
{
    printf("%s:\n", title);
    for (size_t i = 0; i < n; i++) {
        printf("  %-16s %-6s ", specs[i]->name, dtype_name(specs[i]->dtype));
        print_shape(stdout, specs[i]->n_shape, specs[i]->shape);
        putchar('\n');
    }
}

/* "units=16 activation=\"relu\"": each attr in its friendly JSON form. */
static void print_attrs(const Fluxion__V1__Node *n)
{
    for (size_t i = 0; i < n->n_attrs; i++) {
        const Fluxion__V1__Node__AttrsEntry *e = n->attrs[i];
        char err[128];
        json_t *j = e->value ? pbjson_encode(&e->value->base, 0, err, sizeof err) : NULL;
        char *text = j ? jsonout_string(j, JSONOUT_LINE) : NULL;
        printf(" %s=%s", e->key, text ? text : "?");
        free(text);
        json_decref(j);
    }
}

/* "version 3, 10% of the requests without a version" or "none". */
static void print_canary_line(const char *title, const Fluxion__V1__CanaryConfig *cn)
{
    if (cn && cn->version)
        printf("%sversion %" PRId64 ", %u%% of the requests without a version\n", title,
               cn->version, cn->percent);
    else
        printf("%snone\n", title);
}

static void print_model(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Model *m = (const Fluxion__V1__Model *)msg;
    char t[32];
    printf("name:        %s\n", m->name);
    if (*m->description)
        printf("description: %s\n", m->description);
    printf("loaded:      %s\n", m->loaded ? "yes" : "no");
    printf("created:     %s\n", cli_time(m->created_unix_ms, t, sizeof t));
    printf("latest:      version %" PRId64 "\n", m->latest_version);
    printf("parameters:  %" PRIu64 " trainable\n", m->num_parameters);
    const Fluxion__V1__ModelSpec *s = m->spec;
    if (s) {
        print_tensor_specs("inputs", s->n_inputs, s->inputs);
        printf("outputs:\n");
        for (size_t i = 0; i < s->n_outputs; i++) {
            const Fluxion__V1__TensorSpec *spec = i < m->n_output_specs ? m->output_specs[i] : NULL;
            printf("  %-16s ", s->outputs[i]->name);
            if (spec) {
                printf("%-6s ", dtype_name(spec->dtype));
                print_shape(stdout, spec->n_shape, spec->shape);
            }
            printf(" from %s\n", s->outputs[i]->source);
        }
        printf("nodes:\n");
        for (size_t i = 0; i < s->n_nodes; i++) {
            const Fluxion__V1__Node *n = s->nodes[i];
            printf("  %-16s %-10s (", n->name, n->op);
            for (size_t k = 0; k < n->n_inputs; k++)
                printf("%s%s", k ? ", " : "", n->inputs[k]);
            putchar(')');
            print_attrs(n);
            putchar('\n');
        }
    }
    if (m->n_parameters) {
        printf("weights:\n");
        for (size_t i = 0; i < m->n_parameters; i++) {
            printf("  %-24s ", m->parameters[i]->name);
            print_shape(stdout, m->parameters[i]->n_shape, m->parameters[i]->shape);
            printf("%s\n", m->parameters[i]->trainable ? "" : "  (buffer)");
        }
    }
    print_canary_line("canary:      ", m->serving_config ? m->serving_config->canary : NULL);
    cli_print_model_versions(m); /* production, aliases, pins, history (cmd_versions.c) */
}

/* ----------------------------------------------------------------- create */

static int create_request(const cli_args *a, Fluxion__V1__CreateModelRequest **out)
{
    json_t *j;
    int rc = cli_load_json(a->pos[0], &j);
    if (rc)
        return rc;
    char err[512];
    Fluxion__V1__CreateModelRequest *req = (Fluxion__V1__CreateModelRequest *)pbjson_decode(
        &fluxion__v1__create_model_request__descriptor, j, err, sizeof err);
    json_decref(j);
    if (!req)
        return cli_local_error("%s: %s", cli_path_name(a->pos[0]), err);
    if (a->opt[0] && !cli_set_string(&req->name, a->opt[0]))
        rc = cli_local_error("out of memory");
    if (!rc && a->opt[1]) {
        unsigned char *w;
        size_t n;
        rc = cli_read_file(a->opt[1], &w, &n);
        if (!rc) {
            free(req->weights.data);
            req->weights.data = w;
            req->weights.len = n;
        }
    }
    if (!rc && !*req->name)
        rc = cli_usage_error("model create: %s gives the model no name (add \"name\" or use "
                             "--name NAME)",
                             cli_path_name(a->pos[0]));
    if (rc) {
        protobuf_c_message_free_unpacked(&req->base, NULL);
        return rc;
    }
    *out = req;
    return CLI_OK;
}

static void print_created(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Model *m = (const Fluxion__V1__Model *)msg;
    printf("created model %s: version %" PRId64 ", %" PRIu64 " parameters, %s\n", m->name,
           m->latest_version, m->num_parameters, m->loaded ? "loaded" : "not loaded");
}

static int cmd_create(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__CreateModelRequest *req;
    int rc = create_request(a, &req);
    if (rc)
        return rc;
    rc = cli_call_print(c, &fluxion__v1__model_service__descriptor, "CreateModel", &req->base, print_created, NULL);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return rc;
}

/* ------------------------------------------------------------------- list */

static int by_name(const void *a, const void *b)
{
    return strcmp((*(Fluxion__V1__Model *const *)a)->name, (*(Fluxion__V1__Model *const *)b)->name);
}

static void print_models(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__ListModelsResponse *l = (const Fluxion__V1__ListModelsResponse *)msg;
    if (!l->n_models) {
        printf("no models\n");
        return;
    }
    int w = 4;
    for (size_t i = 0; i < l->n_models; i++)
        if ((int)strlen(l->models[i]->name) > w)
            w = (int)strlen(l->models[i]->name);
    printf("%-*s  %6s  %-6s  %-20s  %s\n", w, "NAME", "LATEST", "LOADED", "CREATED",
           "DESCRIPTION");
    for (size_t i = 0; i < l->n_models; i++) {
        const Fluxion__V1__Model *m = l->models[i];
        char t[32];
        printf("%-*s  %6" PRId64 "  %-6s  %-20s  %s\n", w, m->name, m->latest_version,
               m->loaded ? "yes" : "no", cli_time(m->created_unix_ms, t, sizeof t),
               m->description);
    }
}

static int cmd_list(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__ListModelsRequest req = FLUXION__V1__LIST_MODELS_REQUEST__INIT;
    ProtobufCMessage *resp;
    int rc = cli_unary(c, &fluxion__v1__model_service__descriptor, "ListModels", &req.base, &resp);
    if (rc)
        return rc;
    Fluxion__V1__ListModelsResponse *l = (Fluxion__V1__ListModelsResponse *)resp;
    /* Deterministic output whatever order the server keeps. */
    if (l->n_models > 1)
        qsort(l->models, l->n_models, sizeof *l->models, by_name);
    rc = cli_show(c, resp, print_models, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ------------------------------------------------------------ get, delete */

static int cmd_get(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__GetModelRequest req = FLUXION__V1__GET_MODEL_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    return cli_call_print(c, &fluxion__v1__model_service__descriptor, "GetModel", &req.base, print_model, NULL);
}

static int cmd_delete(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__DeleteModelRequest req = FLUXION__V1__DELETE_MODEL_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    return cli_call_print(c, &fluxion__v1__model_service__descriptor, "DeleteModel", &req.base, cli_print_done,
                          &(cli_done){ "deleted", "model", a->pos[0] });
}

static int cmd_load(cli_ctx *c, const cli_args *a)
{
    Inference__RepositoryModelLoadRequest req = INFERENCE__REPOSITORY_MODEL_LOAD_REQUEST__INIT;
    req.model_name = (char *)a->pos[0];
    return cli_call_print(c, &inference__grpcinference_service__descriptor,
                          "RepositoryModelLoad", &req.base, cli_print_done,
                          &(cli_done){ "loaded", "model", a->pos[0] });
}

static int cmd_unload(cli_ctx *c, const cli_args *a)
{
    Inference__RepositoryModelUnloadRequest req = INFERENCE__REPOSITORY_MODEL_UNLOAD_REQUEST__INIT;
    req.model_name = (char *)a->pos[0];
    return cli_call_print(c, &inference__grpcinference_service__descriptor,
                          "RepositoryModelUnload", &req.base, cli_print_done,
                          &(cli_done){ "unloaded", "model", a->pos[0] });
}

/* ----------------------------------------------------------------- export */

typedef struct {
    int fd;
    const char *path;
    uint64_t written, total;
    int64_t version;      /* the server's, from the first chunk */
    int64_t want_version; /* 0: the latest */
    bool first;
    bool onnx;       /* ExportOnnx rather than ExportWeights */
    int write_errno; /* set: the call was cancelled by us */
} export_state;

static int export_chunk(const ProtobufCMessage *msg, void *data)
{
    export_state *s = data;
    const Fluxion__V1__WeightsChunk *ch = (const Fluxion__V1__WeightsChunk *)msg;
    const Fluxion__V1__OnnxChunk *oc = (const Fluxion__V1__OnnxChunk *)msg;
    const ProtobufCBinaryData *d = s->onnx ? &oc->data : &ch->data;
    if (s->first) {
        s->version = s->onnx ? oc->version : ch->version;
        s->total = s->onnx ? oc->total_bytes : ch->total_bytes;
        s->first = false;
    }
    if (fxu_write_all(s->fd, d->data, d->len) != 0) {
        s->write_errno = errno;
        return 1;
    }
    s->written += d->len;
    return 0;
}

static int export_stream(cli_ctx *c, const cli_args *a, export_state *s)
{
    Fluxion__V1__ExportWeightsRequest req = FLUXION__V1__EXPORT_WEIGHTS_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    req.version = s->want_version;
    Fluxion__V1__ExportOnnxRequest oreq = FLUXION__V1__EXPORT_ONNX_REQUEST__INIT;
    oreq.name = req.name;
    oreq.version = req.version;
    fxc_channel *ch = cli_channel(c);
    if (!ch)
        return CLI_ERR_LOCAL;
    char err[1024] = "";
    fxc_call_opts o = cli_call_opts(c);
    cli_rpc r = cli_rpc_of(&fluxion__v1__model_service__descriptor,
                           s->onnx ? "ExportOnnx" : "ExportWeights");
    int code = fxc_server_stream(ch, r.path, s->onnx ? &oreq.base : &req.base, r.resp,
                                 export_chunk, s, &o, err, sizeof err);
    if (s->write_errno)
        return cli_local_error("%s: %s", s->path, strerror(s->write_errno));
    if (code)
        return cli_status_error(c, code, err);
    if (s->total && s->written != s->total) {
        snprintf(err, sizeof err, "the server sent %" PRIu64 " of %" PRIu64 " bytes", s->written,
                 s->total);
        return cli_status_error(c, FXS_DATA_LOSS, err);
    }
    return CLI_OK;
}

/* model export and model export-onnx: the same stream into FILE. */
static int export_to(cli_ctx *c, const cli_args *a, bool onnx)
{
    const char *path = a->opt[1], *cmd = onnx ? "model export-onnx" : "model export";
    if (cli_no_names(c, cmd))
        return CLI_ERR_USAGE;
    if (!path)
        return cli_usage_error("%s: -o FILE is required (- for stdout)", cmd);
    export_state s = {.path = path, .first = true, .onnx = onnx};
    if (a->opt[0] && cli_parse_positive("--version", a->opt[0], &s.want_version))
        return CLI_ERR_USAGE;
    bool to_stdout = !strcmp(path, "-");
    fxu_atomic out;
    char err[FXS_ERRLEN];
    if (to_stdout) {
        s.fd = STDOUT_FILENO; /* written unbuffered: nothing else goes to stdout */
        s.path = "stdout";
    } else {
        if (fxu_atomic_open(&out, path, err, sizeof err))
            return cli_local_error("%s", err);
        /* The temporary file is 0600; an export gets a plain file's mode. */
        mode_t mask = umask(0);
        umask(mask);
        fchmod(out.fd, 0666 & ~mask);
        s.fd = out.fd;
    }
    int rc = export_stream(c, a, &s);
    if (to_stdout)
        return rc;
    if (rc) {
        fxu_atomic_abort(&out);
        return rc;
    }
    if (fxu_atomic_commit(&out, err, sizeof err))
        return cli_local_error("%s", err);
    if (c->json) {
        json_t *j = json_pack("{s:s, s:I, s:I, s:s}", "name", a->pos[0], "version",
                              (json_int_t)s.version, "bytes", (json_int_t)s.written, "file", path);
        rc = j ? cli_print_json(c, j) : cli_local_error("out of memory");
        json_decref(j);
    } else {
        char b[32];
        printf("exported model %s version %" PRId64 "%s (%s) to %s\n", a->pos[0], s.version,
               onnx ? " as ONNX" : "", cli_bytes(s.written, b, sizeof b), path);
    }
    return rc;
}

static int cmd_export(cli_ctx *c, const cli_args *a) { return export_to(c, a, false); }
static int cmd_export_onnx(cli_ctx *c, const cli_args *a) { return export_to(c, a, true); }

/* ----------------------------------------------------------------- import */

typedef struct {
    const char *name, *source;
    bool no_promote; /* --no-promote: production stays */
    Fluxion__V1__WeightsChunk chunk;
} import_state;

/* The first chunk names the model, its source, total size and promotion. */
static const ProtobufCMessage *import_chunk(void *ctx, bool first, uint64_t total,
                                            const uint8_t *data, size_t n)
{
    import_state *s = ctx;
    fluxion__v1__weights_chunk__init(&s->chunk);
    if (first) {
        s->chunk.name = (char *)s->name;
        s->chunk.source = (char *)s->source;
        s->chunk.total_bytes = total;
        s->chunk.no_promote = s->no_promote;
    }
    s->chunk.data.data = (uint8_t *)data;
    s->chunk.data.len = n;
    return &s->chunk.base;
}

static void print_imported(const ProtobufCMessage *msg, const void *name)
{
    const Fluxion__V1__ModelVersion *v = (const Fluxion__V1__ModelVersion *)msg;
    char b[32];
    printf("imported model %s version %" PRId64 " (%s, sha256 %s)\n", (const char *)name,
           v->version, cli_bytes(v->weights_bytes, b, sizeof b), v->weights_sha256);
}

static int cmd_import(cli_ctx *c, const cli_args *a)
{
    import_state s = {.name = a->pos[0],
                      .source = a->opt[0] ? a->opt[0] : "import",
                      .no_promote = a->opt[1] != NULL};
    ProtobufCMessage *resp = NULL;
    int rc = cli_stream_file(c, &fluxion__v1__model_service__descriptor, "ImportWeights",
                             a->pos[1], import_chunk, &s, &resp);
    if (rc)
        return rc;
    rc = cli_show(c, resp, print_imported, a->pos[0]);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ----------------------------------------------------------------- config */

/* The options of `model config`, in cli_command order: the BatchingConfig
 * field each sets and how its value is read. */
typedef enum { V_BOOL, V_U32, V_U64, V_LIST, V_TEXT } value_kind;
static const struct {
    const char *field;
    value_kind kind;
} CONFIG_OPTS[] = {
    { "enabled", V_BOOL }, { "max_batch_size", V_U32 }, { "max_queue_delay_us", V_U64 },
    { "preferred_batch_sizes", V_LIST }, { "max_queue_size", V_U32 }, { "timeout_us", V_U64 },
    { "priority_levels", V_U32 }, { "default_priority", V_U32 }, { "instances", V_U32 },
    { "pad_variable_dims", V_BOOL }, { "device", V_TEXT }, { "memory_limit_bytes", V_U64 },
    { "precision", V_TEXT },
};
#define N_CONFIG_OPTS (sizeof CONFIG_OPTS / sizeof CONFIG_OPTS[0])

static int parse_u64(const char *flag, const char *text, uint64_t max, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(text, &end, 10);
    if (errno || end == text || *end || *text == '-' || x > max)
        return cli_usage_error("model config: --%s: '%s' is not an integer in [0, %" PRIu64 "]",
                               flag, text, max);
    *v = x;
    return CLI_OK;
}

/* Sets field i of m from text. */
static int config_value(Fluxion__V1__BatchingConfig *m, size_t i, const char *flag,
                        const char *text, uint32_t *pref)
{
    uint64_t v = 0;
    int rc = CLI_OK;
    switch (CONFIG_OPTS[i].kind) {
    case V_BOOL:
        if (!strcmp(text, "on") || !strcmp(text, "true"))
            v = 1;
        else if (strcmp(text, "off") && strcmp(text, "false"))
            return cli_usage_error("model config: --%s: '%s' is not on or off", flag, text);
        break;
    case V_U32: rc = parse_u64(flag, text, UINT32_MAX, &v); break;
    case V_U64: rc = parse_u64(flag, text, UINT64_MAX, &v); break;
    case V_TEXT: /* the server checks them (devices, "fp32" or "bf16") */
        if (i == 10)
            m->device = (char *)text;
        else
            m->precision = (char *)text;
        return CLI_OK;
    case V_LIST: {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", text);
        m->preferred_batch_sizes = pref;
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && !rc;
             t = strtok_r(NULL, ",", &save)) {
            if (m->n_preferred_batch_sizes == 16)
                return cli_usage_error("model config: --%s: at most 16 sizes", flag);
            rc = parse_u64(flag, t, UINT32_MAX, &v);
            pref[m->n_preferred_batch_sizes++] = (uint32_t)v;
        }
        return rc;
    }
    }
    if (rc)
        return rc;
    switch (i) {
    case 0: m->enabled = v != 0; break;
    case 1: m->max_batch_size = (uint32_t)v; break;
    case 2: m->max_queue_delay_us = v; break;
    case 4: m->max_queue_size = (uint32_t)v; break;
    case 5: m->timeout_us = v; break;
    case 6: m->priority_levels = (uint32_t)v; break;
    case 7: m->default_priority = (uint32_t)v; break;
    case 8: m->instances = (uint32_t)v; break;
    case 9: m->pad_variable_dims = v != 0; break;
    case 11: m->memory_limit_bytes = v; break;
    }
    return CLI_OK;
}

static void print_config(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__BatchingConfig *m = (const Fluxion__V1__BatchingConfig *)msg;
    printf("batching:              %s\n", m->enabled ? "on" : "off");
    printf("max_batch_size:        %u\n", m->max_batch_size);
    printf("max_queue_delay_us:    %" PRIu64 "\n", m->max_queue_delay_us);
    printf("preferred_batch_sizes: ");
    for (size_t i = 0; i < m->n_preferred_batch_sizes; i++)
        printf("%s%u", i ? "," : "", m->preferred_batch_sizes[i]);
    printf("%s\n", m->n_preferred_batch_sizes ? "" : "(none)");
    printf("max_queue_size:        %u\n", m->max_queue_size);
    printf("timeout_us:            %" PRIu64 "%s\n", m->timeout_us, m->timeout_us ? "" : " (none)");
    printf("priority_levels:       %u (default priority %u)\n", m->priority_levels,
           m->default_priority);
    printf("instances:             %u\n", m->instances);
    printf("pad_variable_dims:     %s\n", m->pad_variable_dims ? "on" : "off");
    printf("device:                %s\n", m->device && *m->device ? m->device
                                                                 : "(the server's first)");
    printf("memory_limit_bytes:    %" PRIu64 "%s\n", m->memory_limit_bytes,
           m->memory_limit_bytes ? "" : " (none)");
    printf("precision:             %s\n", m->precision && *m->precision ? m->precision : "fp32");
    print_canary_line("canary:                ", m->canary);
}

/* `model config NAME [--setting VALUE ...] [--reset]`: with no setting,
 * shows the model's settings (GetModel). */
static int cmd_config(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__SetServingConfigRequest req = FLUXION__V1__SET_SERVING_CONFIG_REQUEST__INIT;
    Fluxion__V1__BatchingConfig cfg = FLUXION__V1__BATCHING_CONFIG__INIT;
    uint32_t pref[16];
    char *fields[N_CONFIG_OPTS];
    req.name = (char *)a->pos[0];
    req.config = &cfg;
    req.fields = fields;
    req.reset = a->opt[N_CONFIG_OPTS] != NULL;
    for (size_t i = 0; i < N_CONFIG_OPTS; i++) {
        if (!a->opt[i])
            continue;
        char flag[64]; /* the option as typed: max_batch_size -> max-batch-size */
        snprintf(flag, sizeof flag, "%s", i == 0 ? "batching" : CONFIG_OPTS[i].field);
        for (char *p = flag; *p; p++)
            *p = *p == '_' ? '-' : *p;
        int rc = config_value(&cfg, i, flag, a->opt[i], pref);
        if (rc)
            return rc;
        fields[req.n_fields++] = (char *)CONFIG_OPTS[i].field;
    }
    if (req.n_fields || req.reset)
        return cli_call_print(c, &fluxion__v1__model_service__descriptor, "SetServingConfig", &req.base, print_config, NULL);
    Fluxion__V1__GetModelRequest get = FLUXION__V1__GET_MODEL_REQUEST__INIT;
    get.name = (char *)a->pos[0];
    ProtobufCMessage *resp;
    int rc = cli_unary(c, &fluxion__v1__model_service__descriptor, "GetModel", &get.base, &resp);
    if (rc)
        return rc;
    const Fluxion__V1__Model *m = (const void *)resp;
    Fluxion__V1__BatchingConfig none = FLUXION__V1__BATCHING_CONFIG__INIT;
    rc = cli_show(c, m->serving_config ? &m->serving_config->base : &none.base, print_config, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ----------------------------------------------------------------- canary */

static void print_canary(const ProtobufCMessage *msg, const void *arg)
{
    print_canary_line("canary: ", (const Fluxion__V1__CanaryConfig *)msg);
}

/* `model canary NAME VERSION --percent P` / `model canary NAME --off`;
 * `model canary NAME` shows it (GetModel). */
static int cmd_canary(cli_ctx *c, const cli_args *a)
{
    bool off = a->opt[1] != NULL;
    Fluxion__V1__SetCanaryRequest req = FLUXION__V1__SET_CANARY_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    req.off = off;
    if (off && (a->pos[1] || a->opt[0]))
        return cli_usage_error("model canary: --off takes no VERSION or --percent");
    if (!off && a->pos[1] && !a->opt[0])
        return cli_usage_error("model canary: --percent P is required with VERSION");
    if (!off && !a->pos[1] && a->opt[0])
        return cli_usage_error("model canary: --percent needs the canary VERSION");
    if (!off && a->pos[1]) {
        if (cli_parse_positive("VERSION", a->pos[1], &req.version))
            return CLI_ERR_USAGE;
        char *end;
        errno = 0;
        unsigned long long x = strtoull(a->opt[0], &end, 10);
        if (errno || end == a->opt[0] || *end || *a->opt[0] == '-' || x > 100)
            return cli_usage_error("model canary: --percent: '%s' is not an integer in [0, 100]",
                                   a->opt[0]);
        req.percent = (uint32_t)x;
    }
    if (off || a->pos[1])
        return cli_call_print(c, &fluxion__v1__model_service__descriptor, "SetCanary",
                              &req.base, print_canary, NULL);
    Fluxion__V1__GetModelRequest get = FLUXION__V1__GET_MODEL_REQUEST__INIT;
    get.name = (char *)a->pos[0];
    ProtobufCMessage *resp;
    int rc = cli_unary(c, &fluxion__v1__model_service__descriptor, "GetModel", &get.base, &resp);
    if (rc)
        return rc;
    const Fluxion__V1__Model *m = (const void *)resp;
    Fluxion__V1__CanaryConfig none = FLUXION__V1__CANARY_CONFIG__INIT;
    const Fluxion__V1__CanaryConfig *cn = m->serving_config ? m->serving_config->canary : NULL;
    rc = cli_show(c, cn ? &cn->base : &none.base, print_canary, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ------------------------------------------------------------------ table */

const cli_command cli_model_commands[] = {
    {"model create",
     "FILE [--name NAME] [--weights FILE.safetensors]",
     "define a model from a JSON model file (- for stdin)",
     "The model file is JSON of a fluxion.v1.CreateModelRequest:\n"
     "  {\"name\": \"mlp\", \"description\": \"...\", \"seed\": 1,\n"
     "   \"spec\": {\"inputs\": [{\"name\": \"x\", \"dtype\": \"FP32\", \"shape\": [-1, 4]}],\n"
     "            \"nodes\": [{\"name\": \"fc1\", \"op\": \"dense\", \"inputs\": [\"x\"],\n"
     "                       \"attrs\": {\"in_features\": 4, \"out_features\": 2}}],\n"
     "            \"outputs\": [{\"name\": \"y\", \"source\": \"fc1\"}]}}\n"
     "Attribute values are plain JSON: an integer, a number, a string, a bool, or an\n"
     "array of integers, numbers or strings. Weights not given are initialized\n"
     "from \"seed\"; \"no_load\": true stores the model without serving it.\n",
     1,
     1,
     {{"name", 0, "NAME", "the model's name (overrides the file's)"},
      {"weights", 0, "FILE", "initial weights, a safetensors file"}},
     cmd_create},
    {"model update",
     "NAME SPECFILE [--seed N]",
     "a new spec revision for a model, carrying its weights over by name",
     "SPECFILE is JSON: a model file as `model create` takes (its \"spec\") or a\n"
     "bare ModelSpec. The new spec becomes the model's next revision with a new\n"
     "version: the latest version's weights where a parameter keeps its name,\n"
     "shape and dtype, the rest initialized from --seed (default: the model's).\n"
     "Prints what was carried, re-initialized (new or reshaped) and dropped. A\n"
     "served model serves the new version at once; every version keeps its own\n"
     "revision's spec (jobs and serving of older versions use it).\n",
     2,
     2,
     {{"seed", 0, "N", "initializes what is not carried (default: the model's seed)"}},
     cli_cmd_model_update},
    {"model list", "", "list the models on the server, by name", NULL, 0, 0, {{0}}, cmd_list},
    {"model get",
     "NAME",
     "show a model: interface, nodes, weights, versions",
     NULL,
     1,
     1,
     {{0}},
     cmd_get},
    {"model delete", "NAME", "delete a model and all its versions", NULL, 1, 1, {{0}}, cmd_delete},
    {"model export",
     "NAME [--version N] -o FILE",
     "save a model's weights as a safetensors file",
     "The file is written under a temporary name and renamed when complete: an\n"
     "interrupted export leaves no partial FILE. -o - writes to stdout.\n",
     1,
     1,
     {{"version", 0, "N", "the version to export (default: the latest)"},
      {"output", 'o', "FILE", "where to write the weights (required)"}},
     cmd_export},
    {"model export-onnx",
     "NAME [--version N] -o FILE",
     "save a model version as an ONNX model (onnxruntime, onnxruntime-web, ...)",
     "The spec and weights become an ONNX graph (opset 17) with the model's input,\n"
     "output and node names and a dynamic batch dimension; outputs computed from a\n"
     "loss are left out (docs/onnx-export.md). Written as model export writes.\n",
     1,
     1,
     {{"version", 0, "N", "the version to export (default: the latest)"},
      {"output", 'o', "FILE", "where to write the ONNX model (required)"}},
     cmd_export_onnx},
    {"model import",
     "NAME FILE [--source TEXT]",
     "upload weights (safetensors, - for stdin) as a new version",
     "The file is streamed in 1 MiB chunks; the server checks every tensor against\n"
     "the model before it stores the version.\n",
     2,
     2,
     {{"source", 0, "TEXT", "recorded as the version's source (default: import)"},
      {"no-promote", 0, NULL, "store it without serving it (production stays)"}},
     cmd_import},
    {"model import-onnx",
     "NAME FILE [--description D] [--no-load]",
     "create a model from an ONNX file (- for stdin)",
     "The graph becomes the model's spec and its initializers version 1's weights\n"
     "(Gemm and MatMul weights become dense layers, so the model can be trained).\n"
     "Opsets 13 and newer; an unsupported operator is refused naming its node, op\n"
     "type and opset. docs/onnx.md lists the operators.\n",
     2,
     2,
     {{"description", 0, "D", "the model's description"},
      {"no-load", 0, NULL, "store without serving"}},
     cli_cmd_import_onnx},
    {"model load",
     "NAME",
     "serve a model for inference (RepositoryModelLoad)",
     NULL,
     1,
     1,
     {{0}},
     cmd_load},
    {"model unload",
     "NAME",
     "stop serving a model (RepositoryModelUnload)",
     NULL,
     1,
     1,
     {{0}},
     cmd_unload},
    {"model config",
     "NAME [--max-batch-size N] [--max-queue-delay-us US] [--batching on|off] ...",
     "show or change how a model's inference requests are batched",
     "With no setting, shows the settings. Settings given change; the others keep\n"
     "their values (--reset: start from the defaults). They are stored with the\n"
     "model and applied at once when it is loaded (SetServingConfig). The same\n"
     "settings can be given as RepositoryModelLoad parameters (\"max_batch_size\").\n"
     "Requests agreeing on every dim but the first are concatenated along dim 0;\n"
     "requests of different lengths along a -1 dim are batched by length, or padded\n"
     "with --pad-variable-dims on (only for models whose lengths inputs mask the\n"
     "padding: rnn, gru, lstm, attention key_lengths). --precision bf16 runs the\n"
     "dense layers on bfloat16 operands with fp32 sums (CPU only; outputs stay FP32;\n"
     "accuracy and cost: docs/serving.md, Precision).\n",
     1,
     1,
     {{"batching", 0, "on|off", "batch requests (default on); off: each runs alone"},
      {"max-batch-size", 0, "N", "samples per batch (default 32)"},
      {"max-queue-delay-us", 0, "US", "longest wait for a fuller batch (default 200)"},
      {"preferred-batch-sizes", 0, "N,N", "sizes sent at once when reached (\"\": none)"},
      {"max-queue-size", 0, "N", "queued requests; more: UNAVAILABLE (default 1024)"},
      {"timeout-us", 0, "US", "per request, queued or running; 0: none (default)"},
      {"priority-levels", 0, "N", "priorities 1 (highest) .. N (default 1)"},
      {"default-priority", 0, "P", "for requests without one (default 1)"},
      {"instances", 0, "N", "batches run in parallel (default 1)"},
      {"pad-variable-dims", 0, "on|off", "pad along -1 dims (default off)"},
      {"device", 0, "DEV", "cpu, cuda:N or gpu (default: the server's first device)"},
      {"memory-limit-bytes", 0, "N", "weights + batches on the device; 0: none (default)"},
      {"precision", 0, "P", "fp32 (default) or bf16: dense products in bfloat16 (CPU)"},
      {"reset", 0, NULL, "start from the defaults"}},
     cmd_config},
    {"model canary",
     "NAME [VERSION --percent P | --off]",
     "show, set or stop a model's canary (a second version taking P% of requests)",
     "Serves VERSION beside the main version, with the same batching settings:\n"
     "P% of the inference requests that name no version go to it (exactly: of\n"
     "every N requests, floor(N * P / 100), spread evenly); requests naming a\n"
     "version go to that version. ModelStatistics and the metrics are per\n"
     "version, so they show the split. Stored with the model's serving settings:\n"
     "a restart serves it again. --off stops it; with neither, shows it.\n",
     1,
     2,
     {{"percent", 0, "P", "the canary's share of requests without a version, 0..100"},
      {"off", 0, NULL, "stop the canary: every request goes to the main version"}},
     cmd_canary},
    /* the life of a version: cmd_versions.c, docs/versions.md */
    {"model promote", "NAME VERSION [--reason TEXT]",
     "serve VERSION: move the alias production to it (recorded in the history)",
     "The served instance is swapped at once; requests in flight finish on the old one.\n",
     2, 2, {{"reason", 0, "TEXT", "recorded in the history"}}, cli_cmd_model_promote},
    {"model rollback", "NAME", "serve the version production pointed to before its last move",
     "Again: one move further back.\n", 1, 1, {{0}}, cli_cmd_model_rollback},
    {"model alias", "NAME ALIAS VERSION | NAME ALIAS --delete",
     "point an alias at a version (or delete it); inference accepts it as the version",
     "Alias names: [a-z][a-z0-9_-]{0,31}. 'production' is the served version.\n",
     2, 3, {{"delete", 0, NULL, "delete the alias"}}, cli_cmd_model_alias},
    {"model pin", "NAME VERSION", "keep a version: retention and delete-version spare it", NULL,
     2, 2, {{0}}, cli_cmd_model_pin},
    {"model unpin", "NAME VERSION", "let retention remove a version again", NULL, 2, 2, {{0}},
     cli_cmd_model_unpin},
    {"model retain", "NAME N",
     "keep the last N versions + aliased and pinned ones (0: every version)",
     "Applied now and whenever a version is added; the others' files are removed.\n",
     2, 2, {{0}}, cli_cmd_model_retain},
    {"model delete-version", "NAME VERSION",
     "delete one version (refused while served, aliased, pinned or trained on)", NULL, 2, 2,
     {{0}}, cli_cmd_model_delete_version},
};
const size_t cli_n_model_commands = sizeof cli_model_commands / sizeof cli_model_commands[0];
