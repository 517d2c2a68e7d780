/*
 * kserve_tool.c - the KServe REST codec (server/http/kserve.c) from the
 * command line, for tests/py/check_kserve_tritonclient.py, which feeds it
 * bodies made by tritonclient.http's own encoder and reads its answers with
 * tritonclient's decoder:
 *
 *   kserve_tool decode BODY JSON_LEN    the ModelInferRequest as proto JSON
 *                                       (proto names, raw bytes as base64)
 *   kserve_tool echo BODY JSON_LEN OUT  the response of a model that returns
 *                                       its inputs as outputs, into OUT; prints
 *                                       the JSON part's length
 *
 * JSON_LEN is the Inference-Header-Content-Length header, "-" for none.
 * A refused body: "error: <message>" on stderr and exit status 1.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/kserve.h"
#include "pbjson.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The response a model returning its inputs would give: the outputs borrow
 * the request's tensors. */
static int echo(const Inference__ModelInferRequest *req, const char *out_path)
{
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    Inference__ModelInferResponse__InferOutputTensor *outs =
        calloc(req->n_inputs + 1, sizeof *outs);
    Inference__ModelInferResponse__InferOutputTensor **ptrs =
        calloc(req->n_inputs + 1, sizeof *ptrs);
    if (!outs || !ptrs)
        return 1;
    for (size_t i = 0; i < req->n_inputs; i++) {
        inference__model_infer_response__infer_output_tensor__init(&outs[i]);
        outs[i].name = req->inputs[i]->name;
        outs[i].datatype = req->inputs[i]->datatype;
        outs[i].n_shape = req->inputs[i]->n_shape;
        outs[i].shape = req->inputs[i]->shape;
        outs[i].contents = req->inputs[i]->contents;
        ptrs[i] = &outs[i];
    }
    resp.model_name = req->model_name;
    resp.model_version = req->model_version;
    resp.id = req->id;
    resp.n_outputs = req->n_inputs;
    resp.outputs = ptrs;
    resp.n_raw_output_contents = req->n_raw_input_contents;
    resp.raw_output_contents = req->raw_input_contents;
    char err[512], *body;
    size_t len, json_len;
    int rc = fxh_infer_response(req, &resp, &body, &len, &json_len, err, sizeof err);
    free(outs);
    free(ptrs);
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    FILE *f = fopen(out_path, "wb");
    if (!f || fwrite(body, 1, len, f) != len || fclose(f)) {
        fprintf(stderr, "error: cannot write %s\n", out_path);
        free(body);
        return 1;
    }
    free(body);
    printf("%zu\n", json_len);
    return 0;
}

int main(int argc, char **argv)
{
    bool decode = argc == 4 && !strcmp(argv[1], "decode");
    if (!decode && !(argc == 5 && !strcmp(argv[1], "echo"))) {
        fprintf(stderr, "usage: kserve_tool decode BODY JSON_LEN | echo BODY JSON_LEN OUT\n");
        return 2;
    }
    size_t len;
    char *body = slurp(argv[2], &len);
    if (!body) {
        fprintf(stderr, "error: cannot read %s\n", argv[2]);
        return 2;
    }
    size_t json_len = strcmp(argv[3], "-") ? strtoull(argv[3], NULL, 10) : SIZE_MAX;
    char err[512];
    Inference__ModelInferRequest *req =
        fxh_infer_request(body, len, json_len, "m", "1", err, sizeof err);
    free(body);
    if (!req) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (decode) {
        json_t *j = pbjson_encode(&req->base, PBJSON_ORIGINAL_NAMES | PBJSON_INT64_NUMBERS, err,
                                  sizeof err);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (text)
            puts(text);
        else
            rc = 1, fprintf(stderr, "error: %s\n", j ? "out of memory" : err);
        free(text);
        json_decref(j);
    } else {
        rc = echo(req, argv[4]);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return rc;
}
