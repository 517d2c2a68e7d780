/*
 * kservetest.h - what test_kserve.c and test_kserve_errors.c share: infer
 * bodies with a binary tail, a model that returns its inputs (echo), and
 * checks of fxh_infer_response's output.
 */
#ifndef FX_KSERVETEST_H
#define FX_KSERVETEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "http/kserve.h"

typedef Inference__ModelInferRequest infer_req;
typedef Inference__ModelInferResponse infer_resp;
typedef Inference__ModelInferResponse__InferOutputTensor out_tensor;

/* json followed by bin (binlen bytes), malloc'd; *len the total. */
static inline char *body_with(const char *json, const void *bin, size_t binlen, size_t *len)
{
    size_t n = strlen(json);
    char *b = malloc(n + binlen + 1);
    assert_non_null(b);
    memcpy(b, json, n);
    if (binlen)
        memcpy(b + n, bin, binlen);
    *len = n + binlen;
    return b;
}

static inline infer_req *decode(const char *json, const void *bin, size_t binlen)
{
    char err[512] = "";
    size_t len;
    char *body = body_with(json, bin, binlen, &len);
    infer_req *r =
        fxh_infer_request(body, len, binlen ? strlen(json) : SIZE_MAX, "m", "1", err, sizeof err);
    if (!r)
        fail_msg("refused: %s\n  body: %s", err, json);
    free(body);
    return r;
}

/* The response whose outputs are the request's inputs (borrowed: free only
 * the outputs array and the tensors, with echo_free). */
static inline infer_resp *echo(const infer_req *r)
{
    infer_resp *resp = malloc(sizeof *resp);
    assert_non_null(resp);
    inference__model_infer_response__init(resp);
    resp->model_name = r->model_name;
    resp->model_version = r->model_version;
    resp->id = r->id;
    resp->n_outputs = r->n_inputs;
    resp->outputs = calloc(r->n_inputs + 1, sizeof *resp->outputs);
    for (size_t i = 0; i < r->n_inputs; i++) {
        out_tensor *o = malloc(sizeof *o);
        inference__model_infer_response__infer_output_tensor__init(o);
        o->name = r->inputs[i]->name;
        o->datatype = r->inputs[i]->datatype;
        o->n_shape = r->inputs[i]->n_shape;
        o->shape = r->inputs[i]->shape;
        o->contents = r->inputs[i]->contents;
        resp->outputs[i] = o;
    }
    resp->n_raw_output_contents = r->n_raw_input_contents;
    resp->raw_output_contents = r->raw_input_contents;
    return resp;
}

static inline void echo_free(infer_resp *resp)
{
    for (size_t i = 0; i < resp->n_outputs; i++)
        free(resp->outputs[i]);
    free(resp->outputs);
    free(resp);
}

/* fxh_infer_response must succeed with want_json as the JSON part and
 * want_bin as the tail. */
static inline void expect_response(const infer_req *req, const infer_resp *resp,
                                   const char *want_json, const void *want_bin, size_t want_binlen)
{
    char err[512] = "", *body = NULL;
    size_t len = 0, json_len = 0;
    int rc = fxh_infer_response(req, resp, &body, &len, &json_len, err, sizeof err);
    if (rc)
        fail_msg("response refused (%d): %s", rc, err);
    if (json_len != strlen(want_json) || memcmp(body, want_json, json_len))
        fail_msg("response JSON\n  got:  %.*s\n  want: %s", (int)json_len, body, want_json);
    assert_int_equal(len - json_len, want_binlen);
    if (want_binlen)
        assert_memory_equal(body + json_len, want_bin, want_binlen);
    free(body);
}

static inline void expect_response_error(const infer_req *req, const infer_resp *resp,
                                         const char *want)
{
    char err[512] = "", *body = (char *)1;
    size_t len = 1, json_len = 1;
    int rc = fxh_infer_response(req, resp, &body, &len, &json_len, err, sizeof err);
    assert_int_not_equal(rc, 0);
    assert_null(body);
    if (strncmp(err, want, strlen(want)))
        fail_msg("response error\n  got:  %s\n  want: %s...", err, want);
}

#endif
