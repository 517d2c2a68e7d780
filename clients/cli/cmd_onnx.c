/*
 * cmd_onnx.c - `fluxion model import-onnx NAME FILE`: streams an ONNX file
 * to ModelService/ImportOnnx (the command's row is in cmd_model.c's table).
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxion/v1/model.pb-c.h"


typedef struct {
    const char *name, *description;
    bool no_load;
    Fluxion__V1__ImportOnnxRequest req;
} onnx_state;

/* The first chunk names the model. */
static const ProtobufCMessage *onnx_chunk(void *ctx, bool first, uint64_t total,
                                          const uint8_t *data, size_t n)
{
    (void)total;
    onnx_state *s = ctx;
    fluxion__v1__import_onnx_request__init(&s->req);
    if (first) {
        s->req.name = (char *)s->name;
        s->req.description = (char *)s->description;
        s->req.no_load = s->no_load;
    }
    s->req.data.data = (uint8_t *)data;
    s->req.data.len = n;
    return &s->req.base;
}

static void print_onnx_model(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Model *m = (const Fluxion__V1__Model *)msg;
    size_t nodes = m->spec ? m->spec->n_nodes : 0;
    printf(
        "imported model %s from ONNX: %zu nodes, %" PRIu64 " parameters, version %" PRId64 ", %s\n",
        m->name, nodes, m->num_parameters, m->latest_version, m->loaded ? "loaded" : "not loaded");
}

int cli_cmd_import_onnx(cli_ctx *c, const cli_args *a)
{
    onnx_state s = {.name = a->pos[0],
                    .description = a->opt[0] ? a->opt[0] : "",
                    .no_load = a->opt[1] != NULL};
    ProtobufCMessage *resp = NULL;
    int rc = cli_stream_file(c, &fluxion__v1__model_service__descriptor, "ImportOnnx", a->pos[1],
                             onnx_chunk, &s, &resp);
    if (rc)
        return rc;
    rc = cli_show(c, resp, print_onnx_model, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
