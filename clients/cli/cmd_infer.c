/*
 * cmd_infer.c - `fluxion predict` (ModelMetadata + ModelInfer) and
 * `fluxion status` (ServerLive, ServerReady, ClusterService.GetStatus).
 */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fluxion/v1/cluster.pb-c.h"
#include "inference/grpc_service.pb-c.h"
#include "inferjson.h"

/* ---------------------------------------------------------------- predict */

static int infer(cli_ctx *c, const char *model, const char *version, const json_t *in,
                 const char *input_name, bool raw, json_t **out)
{
    Inference__ModelMetadataRequest mreq = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mreq.name = (char *)model;
    mreq.version = (char *)version;
    ProtobufCMessage *meta;
    int rc = cli_unary(c, &inference__grpcinference_service__descriptor, "ModelMetadata",
                       &mreq.base, &meta);
    if (rc)
        return rc;
    char err[512];
    Inference__ModelInferRequest *req = inferjson_request(
        in, model, version, (const Inference__ModelMetadataResponse *)meta, raw, err, sizeof err);
    protobuf_c_message_free_unpacked(meta, NULL);
    if (!req)
        return cli_local_error("%s: %s", input_name, err);
    ProtobufCMessage *resp;
    rc = cli_unary(c, &inference__grpcinference_service__descriptor, "ModelInfer", &req->base,
                   &resp);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    if (rc)
        return rc;
    *out = inferjson_response((const Inference__ModelInferResponse *)resp, err, sizeof err);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!*out) {
        fprintf(stderr, "fluxion: the server's answer does not hold together: %s\n", err);
        return CLI_ERR_SERVER;
    }
    return CLI_OK;
}

static int cmd_predict(cli_ctx *c, const cli_args *a)
{
    char version[24] = "";
    if (cli_no_names(c, "predict"))
        return CLI_ERR_USAGE;
    if (a->opt[0]) {
        int64_t v;
        if (cli_parse_positive("--version", a->opt[0], &v))
            return CLI_ERR_USAGE;
        snprintf(version, sizeof version, "%" PRId64, v);
    }
    const char *input = a->opt[1] ? a->opt[1] : "-";
    /* Waiting on a terminal would look like a hang: no prompts. */
    if (!a->opt[1] && isatty(STDIN_FILENO))
        return cli_usage_error("predict: give the inputs with --input FILE or on stdin");
    json_t *in, *out;
    int rc = cli_load_json(input, &in);
    if (rc)
        return rc;
    rc = infer(c, a->pos[0], version, in, cli_path_name(input), a->opt[2] != NULL, &out);
    json_decref(in);
    if (rc)
        return rc;
    rc = cli_print_json(c, out);
    json_decref(out);
    return rc;
}

/* ----------------------------------------------------------------- status */

/* ServerLive / ServerReady: an empty request, an answer of one bool. */
static int probe(cli_ctx *c, const char *method, const ProtobufCMessage *req, bool *flag)
{
    ProtobufCMessage *resp;
    int rc = cli_unary(c, &inference__grpcinference_service__descriptor, method, req, &resp);
    if (rc)
        return rc;
    const ProtobufCFieldDescriptor *f = &resp->descriptor->fields[0];
    *flag = *(const protobuf_c_boolean *)((const char *)resp + f->offset);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_OK;
}

static void print_status(const cli_ctx *c, bool live, bool ready,
                         const Fluxion__V1__GetStatusResponse *s)
{
    char b1[32], b2[32];
    int64_t up = s->uptime_ms / 1000;
    printf("server:    %s\n", c->server);
    printf("live:      %s\n", live ? "yes" : "no");
    printf("ready:     %s\n", ready ? "yes" : "no");
    printf("version:   %s\n", s->version);
    printf("uptime:    %" PRId64 "d %02" PRId64 ":%02" PRId64 ":%02" PRId64 "\n", up / 86400,
           up / 3600 % 24, up / 60 % 60, up % 60);
    printf("data dir:  %s\n", s->data_dir);
    printf("models:    %d stored, %d loaded\n", s->models_stored, s->models_loaded);
    printf("requests:  %" PRIu64 " in flight, %" PRIu64 " total\n", s->requests_in_flight,
           s->requests_total);
    printf("devices:\n");
    for (size_t i = 0; i < s->n_devices; i++) {
        const Fluxion__V1__Device *d = s->devices[i];
        char b3[32];
        printf("  %-8s %-22s memory %s used, %s free of %s", d->name,
               d->model && *d->model ? d->model : d->kind,
               cli_bytes(d->memory_used_bytes, b1, sizeof b1),
               cli_bytes(d->memory_free_bytes, b3, sizeof b3),
               cli_bytes(d->memory_total_bytes, b2, sizeof b2));
        if (d->threads)
            printf(", %d threads", d->threads);
        if (d->memory_limit_bytes)
            printf(", limit %s", cli_bytes(d->memory_limit_bytes, b3, sizeof b3));
        printf("\n");
    }
}

static int cmd_status(cli_ctx *c, const cli_args *a)
{
    bool live, ready;
    if (cli_no_names(c, "status"))
        return CLI_ERR_USAGE;
    Inference__ServerLiveRequest lreq = INFERENCE__SERVER_LIVE_REQUEST__INIT;
    Inference__ServerReadyRequest rreq = INFERENCE__SERVER_READY_REQUEST__INIT;
    int rc = probe(c, "ServerLive", &lreq.base, &live);
    if (!rc)
        rc = probe(c, "ServerReady", &rreq.base, &ready);
    if (rc)
        return rc;
    Fluxion__V1__GetStatusRequest req = FLUXION__V1__GET_STATUS_REQUEST__INIT;
    ProtobufCMessage *resp;
    rc = cli_unary(c, &fluxion__v1__cluster_service__descriptor, "GetStatus", &req.base, &resp);
    if (rc)
        return rc;
    if (c->json) {
        json_t *status = cli_message_json(resp);
        json_t *j =
            status ? json_pack("{s:s, s:b, s:b}", "server", c->server, "live", live, "ready", ready)
                   : NULL;
        if (j && !json_object_update(j, status))
            rc = cli_print_json(c, j);
        else
            rc = cli_local_error("out of memory");
        json_decref(j);
        json_decref(status);
    } else {
        print_status(c, live, ready, (const Fluxion__V1__GetStatusResponse *)resp);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ------------------------------------------------------------------ table */

const cli_command cli_other_commands[] = {
    {"predict",
     "MODEL [--version N] [--input FILE|-] [--raw]",
     "run a model on inputs given as JSON; prints its outputs as JSON",
     "Inputs (from FILE, or stdin by default), one of:\n"
     "  {\"x\": [[1, 2, 3, 4], [5, 6, 7, 8]]}\n"
     "      one member per input; nested arrays give the shape (here [2, 4]),\n"
     "      the datatype comes from the model's metadata;\n"
     "  {\"inputs\": [{\"name\": \"x\", \"shape\": [2, 4], \"datatype\": \"FP32\",\n"
     "              \"data\": [1, 2, 3, 4, 5, 6, 7, 8]}]}\n"
     "      the KServe v2 form (\"outputs\": [{\"name\": ...}] and \"id\" optional).\n"
     "Outputs, in the model's order:\n"
     "  {\"y\": {\"shape\": [2, 2], \"datatype\": \"FP32\", \"data\": [...]}}\n"
     "Floats may also be written \"NaN\", \"Infinity\", \"-Infinity\".\n",
     1,
     1,
     {{"version", 0, "N", "the model version (default: the latest)"},
      {"input", 'i', "FILE", "the inputs' JSON (default: - for stdin)"},
      {"raw", 0, NULL, "send tensors as raw_input_contents (little-endian bytes)"}},
     cmd_predict},
    {"status",
     "",
     "show the server: live, ready, version, devices, models, requests",
     NULL,
     0,
     0,
     {{0}},
     cmd_status},
};
const size_t cli_n_other_commands = sizeof cli_other_commands / sizeof cli_other_commands[0];
