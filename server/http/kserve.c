/*
 * kserve.c - KServe v2 REST bodies <-> inference.* messages (see kserve.h).
 *
 * The tensor work (nested data, datatypes, value ranges, raw layouts) is
 * common/inferjson's, shared with the CLI; this file reads and writes the
 * REST protocol around it: the request and output objects, their
 * "parameters", and Triton's binary tensor data extension, where tensors
 * travel as raw bytes after the JSON part.
 */
#include "http/kserve.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "inferjson.h"
#include "jsonpath.h"
#include "pbjson.h"

typedef Inference__ModelInferRequest__InferInputTensor input_tensor;
typedef Inference__ModelInferRequest__InferRequestedOutputTensor output_request;

/* ------------------------------------------------------------ JSON bits */

static json_t *parse_json(jsonpath *c, const char *body, size_t len)
{
    json_error_t je;
    json_t *j = inferjson_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        jsonpath_fail(c, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
    return j;
}

static int dup_string(jsonpath *c, char **dst, const char *s)
{
    if (!(*dst = strdup(s)))
        return jsonpath_fail(c, "out of memory");
    return 0;
}

/* --------------------------------------------------------- parameters */

/* The parameters member of o: absent, or an object (into *params). */
static int get_params(jsonpath *c, const json_t *o, const json_t **params)
{
    *params = json_object_get(o, "parameters");
    if (*params && !json_is_object(*params)) {
        jsonpath_key(c, "parameters");
        return jsonpath_fail(c, "expected an object, got %s", jsonpath_kind(*params));
    }
    return 0;
}

/* Triton's parameters this server has no use for, refused rather than
 * ignored: the answer would not be what the client asked for. */
static int refuse_params(jsonpath *c, const json_t *params, const char *const *refused,
                         const char *why)
{
    for (; params && *refused; refused++)
        if (json_object_get(params, *refused)) {
            jsonpath_key(c, "parameters");
            jsonpath_key(c, *refused);
            return jsonpath_fail(c, "not supported (%s)", why);
        }
    return 0;
}

static const char *const SHM_PARAMS[] = {"shared_memory_region", "shared_memory_byte_size",
                                         "shared_memory_offset", NULL};

/* A boolean parameter's value, when present (path: the object's). */
static int bool_param(jsonpath *c, const json_t *params, const char *key, bool *out)
{
    const json_t *v = json_object_get(params, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v)) {
        jsonpath_key(c, "parameters");
        jsonpath_key(c, key);
        return jsonpath_fail(c, "expected true or false, got %s", jsonpath_kind(v));
    }
    *out = json_is_true(v);
    return 0;
}

/* ------------------------------------------------------------- inputs */

/* The binary part of the body: the bytes after the JSON, handed to the
 * binary inputs in input order. */
typedef struct {
    const unsigned char *data;
    size_t len, pos;
} binary_part;

/* Reads "binary_data_size" of an input's parameters (-1: none). */
static int binary_size(jsonpath *c, const json_t *params, int64_t *size)
{
    const json_t *v = json_object_get(params, "binary_data_size");
    *size = -1;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        jsonpath_key(c, "parameters");
        jsonpath_key(c, "binary_data_size");
        return jsonpath_fail(c, "expected a byte count (an integer >= 0), got %s",
                             jsonpath_kind(v));
    }
    *size = json_integer_value(v);
    return 0;
}

/* An input whose data is in the binary part: shape and datatype from the
 * JSON, the bytes checked against them. */
static int binary_input(jsonpath *c, const json_t *e, const char *datatype, int64_t size,
                        binary_part *bin, input_tensor *t, ProtobufCBinaryData *raw)
{
    int64_t shape[INFERJSON_MAX_DIMS];
    int ndim;
    uint64_t count;
    if (json_object_get(e, "data")) {
        jsonpath_key(c, "data");
        return jsonpath_fail(c, "given together with parameters.binary_data_size (one or the "
                                "other)");
    }
    if (!json_object_get(e, "shape")) {
        jsonpath_key(c, "shape");
        return jsonpath_fail(c, "missing");
    }
    if (inferjson_shape(c, json_object_get(e, "shape"), shape, &ndim, &count))
        return -1;
    size_t left = bin->len - bin->pos;
    if ((uint64_t)size > left) {
        jsonpath_key(c, "parameters");
        jsonpath_key(c, "binary_data_size");
        return jsonpath_fail(c,
                             "%" PRId64 " bytes, but only %zu of the body's binary part "
                             "(%zu bytes after the JSON) are left for this input",
                             size, left, bin->len);
    }
    const unsigned char *bytes = bin->data + bin->pos;
    if (inferjson_check_raw(c, datatype, count, "the binary data", bytes, (size_t)size))
        return -1;
    bin->pos += (size_t)size;
    t->shape = malloc((ndim ? (size_t)ndim : 1) * sizeof *t->shape);
    raw->data = malloc(size ? (size_t)size : 1);
    if (!t->shape || !raw->data || dup_string(c, &t->datatype, datatype))
        return jsonpath_fail(c, "out of memory");
    t->n_shape = (size_t)ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    if (size)
        memcpy(raw->data, bytes, (size_t)size);
    raw->len = (size_t)size;
    return 0;
}

/* inputs[i]; raw is NULL unless the request goes raw. */
static int read_input(jsonpath *c, const json_t *e, binary_part *bin, input_tensor *t,
                      ProtobufCBinaryData *raw)
{
    static const char *const keys[] = {"name", "shape", "datatype", "parameters", "data", NULL};
    const char *name, *datatype;
    const json_t *params;
    int64_t size = -1;
    if (!json_is_object(e))
        return jsonpath_fail(c, "expected an object (name, shape, datatype, data), got %s",
                             jsonpath_kind(e));
    if (jsonpath_only_keys(c, e, keys) || jsonpath_get_string(c, e, "name", true, &name) ||
        jsonpath_get_string(c, e, "datatype", true, &datatype) || get_params(c, e, &params) ||
        refuse_params(c, params, SHM_PARAMS, "no shared memory: send the tensor in the body") ||
        binary_size(c, params, &size))
        return -1;
    if (!*name) {
        jsonpath_key(c, "name");
        return jsonpath_fail(c, "empty");
    }
    if (size >= 0) {
        if (dup_string(c, &t->name, name) || binary_input(c, e, datatype, size, bin, t, raw))
            return -1;
    } else {
        const json_t *data = json_object_get(e, "data"), *shape = json_object_get(e, "shape");
        if (!data || !shape) {
            jsonpath_key(c, data ? "shape" : "data");
            return jsonpath_fail(c, "missing%s",
                                 data ? ""
                                      : " (or give parameters.binary_data_size "
                                        "and the bytes after the JSON)");
        }
        if (inferjson_input(c, name, data, shape, datatype, t, raw))
            return -1;
    }
    if (params && json_object_size(params) > (size >= 0)) {
        size_t old = jsonpath_key(c, "parameters");
        if (inferjson_params_from_json(
                c, params,
                &inference__model_infer_request__infer_input_tensor__parameters_entry__descriptor,
                "binary_data_size", (inferjson_param ***)&t->parameters, &t->n_parameters))
            return -1;
        jsonpath_pop(c, old);
    }
    return 0;
}

/* Whether any input carries binary_data_size: then all go raw. */
static bool any_binary(const json_t *inputs)
{
    for (size_t i = 0; i < json_array_size(inputs); i++) {
        const json_t *p = json_object_get(json_array_get(inputs, i), "parameters");
        if (json_object_get(p, "binary_data_size"))
            return true;
    }
    return false;
}

static int read_inputs(jsonpath *c, const json_t *inputs, binary_part *bin,
                       Inference__ModelInferRequest *req)
{
    size_t n = json_array_size(inputs);
    size_t base = jsonpath_key(c, "inputs");
    if (!inputs)
        return jsonpath_fail(c, "missing");
    if (!json_is_array(inputs))
        return jsonpath_fail(c, "expected an array of input tensors, got %s",
                             jsonpath_kind(inputs));
    if (!n)
        return jsonpath_fail(c, "no inputs given");
    bool raw = any_binary(inputs);
    if (!(req->inputs = calloc(n, sizeof *req->inputs)))
        return jsonpath_fail(c, "out of memory");
    if (raw) {
        if (!(req->raw_input_contents = calloc(n, sizeof *req->raw_input_contents)))
            return jsonpath_fail(c, "out of memory");
        req->n_raw_input_contents = n;
    }
    for (size_t i = 0; i < n; i++) {
        if (!(req->inputs[i] = malloc(sizeof *req->inputs[i])))
            return jsonpath_fail(c, "out of memory");
        inference__model_infer_request__infer_input_tensor__init(req->inputs[i]);
        req->n_inputs++;
        size_t old = jsonpath_index(c, i);
        if (read_input(c, json_array_get(inputs, i), bin, req->inputs[i],
                       raw ? &req->raw_input_contents[i] : NULL))
            return -1;
        jsonpath_pop(c, old);
    }
    jsonpath_pop(c, base);
    return 0;
}

/* ------------------------------------------------------------ outputs */

static int read_outputs(jsonpath *c, const json_t *outs, Inference__ModelInferRequest *req)
{
    static const char *const keys[] = {"name", "parameters", NULL};
    static const char *const refused[] = {"classification", NULL};
    size_t base = jsonpath_key(c, "outputs");
    if (!json_is_array(outs))
        return jsonpath_fail(c, "expected an array of {\"name\": ...}, got %s",
                             jsonpath_kind(outs));
    size_t n = json_array_size(outs);
    if (!(req->outputs = calloc(n ? n : 1, sizeof *req->outputs)))
        return jsonpath_fail(c, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(outs, i), *params;
        const char *name;
        bool binary;
        size_t old = jsonpath_index(c, i);
        if (!json_is_object(e))
            return jsonpath_fail(c, "expected an object {\"name\": ...}, got %s", jsonpath_kind(e));
        if (jsonpath_only_keys(c, e, keys) || jsonpath_get_string(c, e, "name", true, &name) ||
            get_params(c, e, &params) ||
            refuse_params(c, params, SHM_PARAMS, "no shared memory: outputs come in the body") ||
            refuse_params(c, params, refused, "outputs are the model's tensors as they are") ||
            bool_param(c, params, "binary_data", &binary))
            return -1;
        output_request *o = malloc(sizeof *o);
        if (!o)
            return jsonpath_fail(c, "out of memory");
        inference__model_infer_request__infer_requested_output_tensor__init(o);
        req->outputs[req->n_outputs++] = o;
        if (dup_string(c, &o->name, name))
            return -1;
        if (params) {
            jsonpath_key(c, "parameters");
            if (inferjson_params_from_json(
                    c, params,
                    &inference__model_infer_request__infer_requested_output_tensor__parameters_entry__descriptor,
                    NULL, (inferjson_param ***)&o->parameters, &o->n_parameters))
                return -1;
        }
        jsonpath_pop(c, old);
    }
    jsonpath_pop(c, base);
    return 0;
}

/* ------------------------------------------------------------ request */

Inference__ModelInferRequest *fxh_infer_request(const char *body, size_t len, size_t json_len,
                                                const char *model, const char *version, char *err,
                                                size_t errlen)
{
    static const char *const keys[] = {"id", "parameters", "inputs", "outputs", NULL};
    jsonpath c = {.err = err, .errlen = errlen};
    if (json_len == SIZE_MAX)
        json_len = len;
    if (json_len > len) {
        snprintf(err, errlen,
                 "Inference-Header-Content-Length: %zu is beyond the body's %zu "
                 "bytes",
                 json_len, len);
        return NULL;
    }
    json_t *in = parse_json(&c, body, json_len);
    if (!in)
        return NULL;
    Inference__ModelInferRequest *req = malloc(sizeof *req);
    binary_part bin = {(const unsigned char *)body + json_len, len - json_len, 0};
    const json_t *params;
    const char *id;
    bool flag; /* read only to check its type; the response reads it */
    int rc = 0;
    if (!req) {
        json_decref(in);
        jsonpath_fail(&c, "out of memory");
        return NULL;
    }
    inference__model_infer_request__init(req);
    if (!json_is_object(in))
        rc = jsonpath_fail(&c, "expected an object (inputs, outputs, id, parameters), got %s",
                           jsonpath_kind(in));
    if (!rc)
        rc = jsonpath_only_keys(&c, in, keys) || jsonpath_get_string(&c, in, "id", false, &id) ||
             get_params(&c, in, &params) || bool_param(&c, params, "binary_data_output", &flag) ||
             dup_string(&c, &req->model_name, model ? model : "") ||
             (version && *version && dup_string(&c, &req->model_version, version)) ||
             (id && dup_string(&c, &req->id, id));
    if (!rc && params && json_object_size(params)) {
        jsonpath_key(&c, "parameters");
        rc = inferjson_params_from_json(
            &c, params, &inference__model_infer_request__parameters_entry__descriptor, NULL,
            (inferjson_param ***)&req->parameters, &req->n_parameters);
        jsonpath_pop(&c, 0);
    }
    if (!rc)
        rc = read_inputs(&c, json_object_get(in, "inputs"), &bin, req);
    if (!rc && json_object_get(in, "outputs"))
        rc = read_outputs(&c, json_object_get(in, "outputs"), req);
    if (!rc && bin.pos != bin.len)
        rc = jsonpath_fail(&c,
                           "the body has %zu bytes after the JSON part, the inputs' "
                           "binary_data_size claim %zu",
                           bin.len, bin.pos);
    json_decref(in);
    if (rc) {
        protobuf_c_message_free_unpacked(&req->base, NULL);
        return NULL;
    }
    return req;
}

/* ----------------------------------------------------------- response */

/* Whether output `name` goes binary: its own "binary_data", else the
 * request's "binary_data_output", else JSON. */
static bool wants_binary(const Inference__ModelInferRequest *req, const char *name)
{
    if (!req)
        return false;
    bool dflt = inferjson_param_bool((inferjson_param *const *)req->parameters, req->n_parameters,
                                     "binary_data_output", false);
    for (size_t i = 0; i < req->n_outputs; i++)
        if (req->outputs[i]->name && !strcmp(req->outputs[i]->name, name))
            return inferjson_param_bool((inferjson_param *const *)req->outputs[i]->parameters,
                                        req->outputs[i]->n_parameters, "binary_data", dflt);
    return dflt;
}

/* The body being written: JSON text, then the binary outputs. */
typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} strbuf;

static void sb_add(strbuf *b, const void *data, size_t n)
{
    if (b->failed)
        return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n && cap < SIZE_MAX / 2)
            cap *= 2;
        char *bigger = cap - b->len >= n ? realloc(b->p, cap) : NULL;
        if (!bigger) {
            b->failed = true;
            return;
        }
        b->p = bigger;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* Adds j's JSON text; with cut_brace, without its closing brace, for
 * members to follow. Takes j. */
static void sb_json(strbuf *b, json_t *j, bool cut_brace)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        b->failed = true;
        return;
    }
    size_t n = strlen(text);
    sb_add(b, text, cut_brace && n ? n - 1 : n);
    free(text);
}

/* A UINT64 output's data, printed here: jansson holds no integer over
 * 2^63 - 1 and would turn such values into inexact reals. */
static char *uint64_data(jsonpath *c, const Inference__ModelInferResponse *resp, size_t i)
{
    ProtobufCBinaryData raw;
    if (inferjson_output_raw(c, resp, i, &raw))
        return NULL;
    size_t n = raw.len / 8;
    char *text = n <= (SIZE_MAX - 3) / 21 ? malloc(n * 21 + 3) : NULL;
    if (text) {
        size_t o = 0;
        text[o++] = '[';
        for (size_t k = 0; k < n; k++) {
            uint64_t u;
            memcpy(&u, raw.data + 8 * k, 8);
            o += (size_t)sprintf(text + o, "%s%" PRIu64, k ? "," : "", u);
        }
        text[o++] = ']';
        text[o] = '\0';
    } else {
        jsonpath_fail(c, "out of memory");
    }
    free(raw.data);
    return text;
}

/* outputs[i] into b; a binary one's bytes into *bin. */
static int write_output(jsonpath *c, const Inference__ModelInferRequest *req,
                        const Inference__ModelInferResponse *resp, size_t i, strbuf *b,
                        ProtobufCBinaryData *bin)
{
    const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
    const char *name = o->name ? o->name : "";
    bool binary = wants_binary(req, name);
    bool exact = !binary && o->datatype && !strcmp(o->datatype, "UINT64");
    char *data_text = NULL;
    json_t *t = NULL;
    /* Each path checks the datatype, the shape and the data against them;
     * binary outputs never go through JSON (BYTES need not be UTF-8). */
    if (binary  ? inferjson_output_raw(c, resp, i, bin)
        : exact ? !(data_text = uint64_data(c, resp, i))
                : !(t = inferjson_output(c, resp, i)))
        return -1;
    json_t *shape = json_array();
    for (size_t d = 0; shape && d < o->n_shape; d++)
        if (json_array_append_new(shape, json_integer(o->shape[d])))
            json_decref(shape), shape = NULL;
    json_t *params =
        inferjson_params_json((inferjson_param *const *)o->parameters, o->n_parameters);
    json_t *out =
        shape ? json_pack("{s:s, s:s, s:O}", "name", name, "datatype", o->datatype, "shape", shape)
              : NULL;
    int rc = out && params ? 0 : -1;
    if (!rc && binary)
        rc = json_object_set_new(params, "binary_data_size", json_integer((json_int_t)bin->len));
    if (!rc && t)
        rc = json_object_set(out, "data", json_object_get(t, "data"));
    if (!rc && json_object_size(params))
        rc = json_object_set(out, "parameters", params);
    json_decref(t);
    json_decref(params);
    json_decref(shape);
    if (rc) {
        json_decref(out);
        free(data_text);
        return jsonpath_fail(c, "out of memory");
    }
    sb_json(b, out, data_text != NULL);
    if (data_text) {
        sb_add(b, ",\"data\":", 8);
        sb_add(b, data_text, strlen(data_text));
        sb_add(b, "}", 1);
        free(data_text);
    }
    return b->failed ? jsonpath_fail(c, "out of memory") : 0;
}

int fxh_infer_response(const Inference__ModelInferRequest *req,
                       const Inference__ModelInferResponse *resp, char **body, size_t *len,
                       size_t *json_len, char *err, size_t errlen)
{
    jsonpath c = {.err = err, .errlen = errlen};
    size_t n = resp->n_outputs;
    strbuf b = {0};
    *body = NULL;
    *len = *json_len = 0;
    ProtobufCBinaryData *bins = calloc(n ? n : 1, sizeof *bins);
    json_t *head = json_pack("{s:s, s:s}", "model_name", resp->model_name ? resp->model_name : "",
                             "model_version", resp->model_version ? resp->model_version : "");
    int rc = !bins || !head ? jsonpath_fail(&c, "out of memory") : 0;
    if (!rc && resp->id && *resp->id && json_object_set_new(head, "id", json_string(resp->id)))
        rc = jsonpath_fail(&c, "out of memory");
    if (!rc && resp->n_parameters) {
        json_t *p =
            inferjson_params_json((inferjson_param *const *)resp->parameters, resp->n_parameters);
        if (!p || json_object_set_new(head, "parameters", p))
            rc = jsonpath_fail(&c, "out of memory");
    }
    /* {"model_name": ..., "outputs": [...]}: the outputs written one by one */
    if (!rc) {
        sb_json(&b, head, true);
        head = NULL;
        sb_add(&b, ",\"outputs\":[", 12);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        size_t old = jsonpath_push(&c, "outputs[%zu]", i);
        if (i)
            sb_add(&b, ",", 1);
        rc = write_output(&c, req, resp, i, &b, &bins[i]);
        jsonpath_pop(&c, old);
    }
    if (!rc) {
        sb_add(&b, "]}", 2);
        *json_len = b.len;
        for (size_t i = 0; i < n; i++)
            sb_add(&b, bins[i].data, bins[i].len);
        if (b.failed)
            rc = jsonpath_fail(&c, "out of memory");
    }
    for (size_t i = 0; bins && i < n; i++)
        free(bins[i].data);
    free(bins);
    json_decref(head);
    if (rc) {
        free(b.p);
        *json_len = 0;
        return FXS_INTERNAL;
    }
    *body = b.p;
    *len = b.len;
    return 0;
}

/* ------------------------------------------------------ other messages */

enum { JSON_FLAGS = PBJSON_ORIGINAL_NAMES | PBJSON_EMIT_DEFAULTS | PBJSON_INT64_NUMBERS };

int fxh_message_json(const ProtobufCMessage *m, char **out, size_t *len, char *err, size_t errlen)
{
    jsonpath c = {.err = err, .errlen = errlen};
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const ProtobufCFieldDescriptor *config =
        protobuf_c_message_descriptor_get_field_by_name(d, "config");
    json_t *j = NULL;
    *out = NULL;
    *len = 0;
    if (d == &inference__repository_index_response__descriptor) {
        /* Triton answers the index with the bare list */
        const Inference__RepositoryIndexResponse *r = (const void *)m;
        j = json_array();
        for (size_t i = 0; j && i < r->n_models; i++) {
            json_t *e = pbjson_encode(&r->models[i]->base, JSON_FLAGS, err, errlen);
            if (!e || json_array_append_new(j, e)) {
                json_decref(j);
                return FXS_INTERNAL;
            }
        }
    } else if (!strcmp(d->name, "inference.ModelConfigResponse") && config &&
               config->type == PROTOBUF_C_TYPE_MESSAGE) {
        /* ... and the config with the config itself, not {"config": ...} */
        const ProtobufCMessage *cfg =
            *(ProtobufCMessage *const *)((const char *)m + config->offset);
        j = cfg ? pbjson_encode(cfg, JSON_FLAGS, err, errlen) : json_object();
    } else {
        j = pbjson_encode(m, JSON_FLAGS, err, errlen);
    }
    if (!j)
        return FXS_INTERNAL;
    strbuf b = {0};
    sb_json(&b, j, false);
    sb_add(&b, "", 1); /* the text's NUL */
    if (b.failed) {
        free(b.p);
        jsonpath_fail(&c, "out of memory");
        return FXS_INTERNAL;
    }
    *out = b.p;
    *len = b.len - 1;
    return 0;
}

/* Triton's plain parameter values for repository calls -> the proto JSON
 * form of ModelRepositoryParameter: "file:..." parameters carry base64
 * file contents (bytes_param). The object form passes as it is. */
static json_t *repository_params(jsonpath *c, const json_t *params)
{
    json_t *out = json_object();
    const char *key;
    json_t *v;
    if (!out) {
        jsonpath_fail(c, "out of memory");
        return NULL;
    }
    json_object_foreach((json_t *)params, key, v)
    {
        const char *kind = json_is_boolean(v)   ? "bool_param"
                           : json_is_integer(v) ? "int64_param"
                           : json_is_string(v)
                               ? (strncmp(key, "file:", 5) ? "string_param" : "bytes_param")
                               : NULL;
        json_t *e = kind ? json_pack("{s:O}", kind, v) : json_incref(v);
        if (!json_is_object(v) && !kind) {
            json_decref(e);
            json_decref(out);
            size_t old = jsonpath_key(c, key);
            jsonpath_fail(c, "expected a string, a bool or an integer, got %s", jsonpath_kind(v));
            jsonpath_pop(c, old);
            return NULL;
        }
        if (!e || json_object_set_new(out, key, e)) {
            json_decref(out);
            jsonpath_fail(c, "out of memory");
            return NULL;
        }
    }
    return out;
}

ProtobufCMessage *fxh_message_from_json(const ProtobufCMessageDescriptor *desc, const char *body,
                                        size_t len, char *err, size_t errlen)
{
    static const char *const repo_keys[] = {"parameters", NULL};
    static const char *const index_keys[] = {"ready", NULL};
    jsonpath c = {.err = err, .errlen = errlen};
    size_t blank = 0;
    while (blank < len && (body[blank] == ' ' || body[blank] == '\t' || body[blank] == '\r' ||
                           body[blank] == '\n'))
        blank++;
    if (blank == len) {
        ProtobufCMessage *m = malloc(desc->sizeof_message);
        if (!m)
            jsonpath_fail(&c, "out of memory");
        else
            desc->message_init(m);
        return m;
    }
    json_t *j = parse_json(&c, body, len);
    if (!j)
        return NULL;
    bool repo = desc == &inference__repository_model_load_request__descriptor ||
                desc == &inference__repository_model_unload_request__descriptor;
    int rc = 0;
    if (!json_is_object(j))
        rc = jsonpath_fail(&c, "expected an object, got %s", jsonpath_kind(j));
    /* Names come from the URL: a body may not set them. */
    if (!rc && repo)
        rc = jsonpath_only_keys(&c, j, repo_keys);
    if (!rc && desc == &inference__repository_index_request__descriptor)
        rc = jsonpath_only_keys(&c, j, index_keys);
    json_t *params = json_object_get(j, "parameters");
    if (!rc && repo && params) {
        jsonpath_key(&c, "parameters");
        if (!json_is_object(params))
            rc = jsonpath_fail(&c, "expected an object, got %s", jsonpath_kind(params));
        json_t *canon = rc ? NULL : repository_params(&c, params);
        if (!rc && (!canon || json_object_set_new(j, "parameters", canon)))
            rc = -1;
    }
    ProtobufCMessage *m = rc ? NULL : pbjson_decode(desc, j, err, errlen);
    json_decref(j);
    return m;
}
