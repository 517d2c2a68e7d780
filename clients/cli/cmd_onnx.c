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

#define ONNX_CHUNK_BYTES (1u << 20)

typedef struct {
    FILE *f;
    const char *name, *description;
    bool no_load;
    unsigned char *buf;
    Fluxion__V1__ImportOnnxRequest req;
    bool first, done;
    int read_errno;
} onnx_state;

/* Chunks of up to 1 MiB; the first names the model (and is sent even for
 * an empty file, so that the server answers about it). */
static const ProtobufCMessage *onnx_next(void *data, int *fail)
{
    onnx_state *s = data;
    if (s->done)
        return NULL;
    size_t n = fread(s->buf, 1, ONNX_CHUNK_BYTES, s->f);
    if (n < ONNX_CHUNK_BYTES && ferror(s->f)) {
        s->read_errno = errno ? errno : EIO;
        *fail = 1;
        return NULL;
    }
    if (n == 0 && !s->first)
        return NULL;
    s->done = n < ONNX_CHUNK_BYTES;
    fluxion__v1__import_onnx_request__init(&s->req);
    if (s->first) {
        s->req.name = (char *)s->name;
        s->req.description = (char *)s->description;
        s->req.no_load = s->no_load;
        s->first = false;
    }
    s->req.data.data = s->buf;
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
    const char *path = a->pos[1];
    onnx_state s = {.name = a->pos[0],
                    .description = a->opt[0] ? a->opt[0] : "",
                    .no_load = a->opt[1] != NULL,
                    .first = true};
    bool is_stdin = !strcmp(path, "-");
    s.f = is_stdin ? stdin : fopen(path, "rb");
    if (!s.f)
        return cli_local_error("%s: %s", path, strerror(errno));
    s.buf = malloc(ONNX_CHUNK_BYTES);
    fxc_channel *ch = s.buf ? cli_channel(c) : NULL;
    int rc = CLI_OK;
    if (!s.buf)
        rc = cli_local_error("out of memory");
    else if (!ch)
        rc = CLI_ERR_LOCAL;
    ProtobufCMessage *resp = NULL;
    if (!rc) {
        char err[1024] = "";
        fxc_call_opts o = cli_call_opts(c);
        cli_rpc r = cli_rpc_of(&fluxion__v1__model_service__descriptor, "ImportOnnx");
        int code =
            fxc_client_stream(ch, r.path, onnx_next, NULL, &s, r.resp, &resp, &o, err, sizeof err);
        if (s.read_errno)
            rc = cli_local_error("%s: %s", cli_path_name(path), strerror(s.read_errno));
        else if (code)
            rc = cli_status_error(c, code, err);
    }
    free(s.buf);
    if (!is_stdin)
        fclose(s.f);
    if (rc)
        return rc;
    rc = cli_show(c, resp, print_onnx_model, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
