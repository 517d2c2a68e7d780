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
#include <math.h>
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

/* Every map<string, InferParameter> entry type protoc-c generates has this
 * layout; its own descriptor initialises it. */
typedef struct {
    ProtobufCMessage base;
    char *key;
    Inference__InferParameter *value;
} param_entry;

/* ------------------------------------------------------------ JSON bits */

static json_t *parse_json(jsonpath *c, const char *body, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        jsonpath_fail(c, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
    return j;
}

/* Every member of o is one of the allowed keys (NULL-terminated). */
static int only_keys(jsonpath *c, const json_t *o, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)o, key, val)
    {
        const char *const *a = allowed;
        while (*a && strcmp(*a, key))
            a++;
        if (*a)
            continue;
        char list[128] = "";
        for (a = allowed; *a; a++) {
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", a == allowed ? "" : ", ", *a);
        }
        jsonpath_key(c, key);
        return jsonpath_fail(c, "unknown member (expected %s)", list);
    }
    return 0;
}

/* Member key of o as a string; NULL and no error when absent and optional. */
static int get_string(jsonpath *c, const json_t *o, const char *key, bool required,
                      const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v && !required)
        return 0;
    size_t old = jsonpath_key(c, key);
    if (!v)
        return jsonpath_fail(c, "missing");
    if (!json_is_string(v))
        return jsonpath_fail(c, "expected a string, got %s", jsonpath_kind(v));
    jsonpath_pop(c, old);
    *out = json_string_value(v);
    return 0;
}

static int dup_string(jsonpath *c, char **dst, const char *s)
{
    if (!(*dst = strdup(s)))
        return jsonpath_fail(c, "out of memory");
    return 0;
}

/* --------------------------------------------------------- parameters */

/* A plain JSON value -> an InferParameter: true/false, an integer, a real
 * (an integral one beyond int64 as uint64) or a string. */
static Inference__InferParameter *param_from_json(jsonpath *c, const json_t *v)
{
    Inference__InferParameter *p = malloc(sizeof *p);
    if (!p) {
        jsonpath_fail(c, "out of memory");
        return NULL;
    }
    inference__infer_parameter__init(p);
    if (json_is_boolean(v)) {
        p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
        p->bool_param = json_is_true(v);
    } else if (json_is_integer(v)) {
        p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
        p->int64_param = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d >= 9223372036854775808.0 && d < 18446744073709551616.0) {
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM;
            p->uint64_param = (uint64_t)d;
        } else {
            p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM;
            p->double_param = d;
        }
    } else if (json_is_string(v)) {
        p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
        if (!(p->string_param = strdup(json_string_value(v)))) {
            free(p);
            jsonpath_fail(c, "out of memory");
            return NULL;
        }
    } else {
        free(p);
        jsonpath_fail(c, "expected a bool, a number or a string, got %s", jsonpath_kind(v));
        return NULL;
    }
    return p;
}

static json_t *param_to_json(const Inference__InferParameter *p)
{
    switch (p->parameter_choice_case) {
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM:
        return json_boolean(p->bool_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM:
        return json_integer(p->int64_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM:
        return json_string(p->string_param ? p->string_param : "");
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM:
        return isfinite(p->double_param) ? json_real(p->double_param) : json_null();
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM:
        return p->uint64_param <= INT64_MAX ? json_integer((json_int_t)p->uint64_param)
                                            : json_real((double)p->uint64_param);
    default: return json_null();
    }
}

/* "parameters" of a request, input or output -> its map entries (of type
 * entry, a map<string, InferParameter> entry), leaving out the key skip.
 * The path is the parameters object's. The array is owned by the message
 * as soon as it is set, so a failure leaves nothing to free. */
static int params_from_json(jsonpath *c, const json_t *obj, const ProtobufCMessageDescriptor *entry,
                            const char *skip, param_entry ***out, size_t *n_out)
{
    size_t n = json_object_size(obj);
    *out = calloc(n ? n : 1, sizeof **out);
    if (!*out)
        return jsonpath_fail(c, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (skip && !strcmp(key, skip))
            continue;
        size_t old = jsonpath_key(c, key);
        param_entry *e = malloc(entry->sizeof_message);
        if (!e)
            return jsonpath_fail(c, "out of memory");
        entry->message_init(&e->base);
        (*out)[(*n_out)++] = e;
        if (dup_string(c, &e->key, key) || !(e->value = param_from_json(c, val)))
            return -1;
        jsonpath_pop(c, old);
    }
    return 0;
}

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
        return jsonpath_fail(c, "%" PRId64 " bytes, but only %zu of the body's binary part "
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
    if (only_keys(c, e, keys) || get_string(c, e, "name", true, &name) ||
        get_string(c, e, "datatype", true, &datatype) || get_params(c, e, &params) ||
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
            return jsonpath_fail(c, "missing%s", data ? ""
                                                      : " (or give parameters.binary_data_size "
                                                        "and the bytes after the JSON)");
        }
        if (inferjson_input(c, name, data, shape, datatype, t, raw))
            return -1;
    }
    if (params && json_object_size(params) > (size >= 0)) {
        size_t old = jsonpath_key(c, "parameters");
        if (params_from_json(c, params, &inference__model_infer_request__infer_input_tensor__parameters_entry__descriptor,
                             "binary_data_size", (param_entry ***)&t->parameters,
                             &t->n_parameters))
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
        if (only_keys(c, e, keys) || get_string(c, e, "name", true, &name) ||
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
            if (params_from_json(c, params, &inference__model_infer_request__infer_requested_output_tensor__parameters_entry__descriptor,
                                 NULL, (param_entry ***)&o->parameters, &o->n_parameters))
                return -1;
        }
        jsonpath_pop(c, old);
    }
    jsonpath_pop(c, base);
    return 0;
}

/* ------------------------------------------------------------ request */

Inference__ModelInferRequest *fxh_infer_request(const char *body, size_t len, size_t json_len,
                                               const char *model, const char *version,
                                               char *err, size_t errlen)
{
    static const char *const keys[] = {"id", "parameters", "inputs", "outputs", NULL};
    jsonpath c = {.err = err, .errlen = errlen};
    if (json_len == SIZE_MAX)
        json_len = len;
    if (json_len > len) {
        snprintf(err, errlen, "Inference-Header-Content-Length: %zu is beyond the body's %zu "
                 "bytes", json_len, len);
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
        rc = only_keys(&c, in, keys) || get_string(&c, in, "id", false, &id) ||
             get_params(&c, in, &params) ||
             bool_param(&c, params, "binary_data_output", &flag) ||
             dup_string(&c, &req->model_name, model ? model : "") ||
             (version && *version && dup_string(&c, &req->model_version, version)) ||
             (id && dup_string(&c, &req->id, id));
    if (!rc && params && json_object_size(params)) {
        jsonpath_key(&c, "parameters");
        rc = params_from_json(&c, params, &inference__model_infer_request__parameters_entry__descriptor,
                              NULL, (param_entry ***)&req->parameters, &req->n_parameters);
        jsonpath_pop(&c, 0);
    }
    if (!rc)
        rc = read_inputs(&c, json_object_get(in, "inputs"), &bin, req);
    if (!rc && json_object_get(in, "outputs"))
        rc = read_outputs(&c, json_object_get(in, "outputs"), req);
    if (!rc && bin.pos != bin.len)
        rc = jsonpath_fail(&c, "the body has %zu bytes after the JSON part, the inputs' "
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

/* A bool parameter of a map, or dflt when absent or not a bool. */
static bool find_bool(param_entry *const *params, size_t n, const char *key, bool dflt)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(params[i]->key, key) && params[i]->value &&
            params[i]->value->parameter_choice_case ==
                INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM)
            return params[i]->value->bool_param;
    return dflt;
}

/* Whether output `name` goes binary: its own "binary_data", else the
 * request's "binary_data_output", else JSON. */
static bool wants_binary(const Inference__ModelInferRequest *req, const char *name)
{
    if (!req)
        return false;
    bool dflt = find_bool((param_entry *const *)req->parameters, req->n_parameters,
                          "binary_data_output", false);
    for (size_t i = 0; i < req->n_outputs; i++)
        if (req->outputs[i]->name && !strcmp(req->outputs[i]->name, name))
            return find_bool((param_entry *const *)req->outputs[i]->parameters,
                             req->outputs[i]->n_parameters, "binary_data", dflt);
    return dflt;
}

/* A parameters map -> a JSON object (NULL on out of memory). */
static json_t *params_json(param_entry *const *params, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++)
        if (params[i]->key && params[i]->value &&
            json_object_set_new(o, params[i]->key, param_to_json(params[i]->value))) {
            json_decref(o);
            return NULL;
        }
    return o;
}

/* outputs[i] as its JSON object; a binary one's bytes into *bin. */
static json_t *output_json(jsonpath *c, const Inference__ModelInferRequest *req,
                           const Inference__ModelInferResponse *resp, size_t i,
                           ProtobufCBinaryData *bin)
{
    const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
    const char *name = o->name ? o->name : "";
    json_t *t = inferjson_output(c, resp, i); /* checks shape, datatype and data */
    if (!t)
        return NULL;
    json_t *params = params_json((param_entry *const *)o->parameters, o->n_parameters);
    json_t *out = json_pack("{s:s, s:O, s:O}", "name", name, "datatype",
                            json_object_get(t, "datatype"), "shape", json_object_get(t, "shape"));
    bool ok = out && params;
    if (ok && wants_binary(req, name)) {
        ok = !inferjson_output_raw(c, resp, i, bin);
        if (ok && json_object_set_new(params, "binary_data_size", json_integer((json_int_t)bin->len)))
            ok = false;
    } else if (ok) {
        ok = !json_object_set(out, "data", json_object_get(t, "data"));
    }
    if (ok && json_object_size(params))
        ok = !json_object_set(out, "parameters", params);
    json_decref(t);
    json_decref(params);
    if (!ok) {
        json_decref(out);
        if (c->err && !*c->err)
            jsonpath_fail(c, "out of memory");
        return NULL;
    }
    return out;
}

static int dump(jsonpath *c, json_t *j, size_t tail, char **out, size_t *len)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return jsonpath_fail(c, "out of memory");
    size_t n = strlen(text);
    *out = tail ? realloc(text, n + tail) : text;
    if (!*out) {
        free(text);
        return jsonpath_fail(c, "out of memory");
    }
    *len = n;
    return 0;
}

int fxh_infer_response(const Inference__ModelInferRequest *req,
                       const Inference__ModelInferResponse *resp, char **body, size_t *len,
                       size_t *json_len, char *err, size_t errlen)
{
    jsonpath c = {.err = err, .errlen = errlen};
    size_t n = resp->n_outputs, tail = 0;
    *body = NULL;
    *len = *json_len = 0;
    if (err && errlen)
        *err = '\0';
    ProtobufCBinaryData *bins = calloc(n ? n : 1, sizeof *bins);
    json_t *outs = json_array();
    json_t *root = json_pack("{s:s, s:s}", "model_name", resp->model_name ? resp->model_name : "",
                             "model_version", resp->model_version ? resp->model_version : "");
    int rc = !bins || !outs || !root ? jsonpath_fail(&c, "out of memory") : 0;
    if (!rc && resp->id && *resp->id && json_object_set_new(root, "id", json_string(resp->id)))
        rc = jsonpath_fail(&c, "out of memory");
    if (!rc && resp->n_parameters) {
        json_t *p = params_json((param_entry *const *)resp->parameters, resp->n_parameters);
        if (!p || json_object_set_new(root, "parameters", p))
            rc = jsonpath_fail(&c, "out of memory");
    }
    for (size_t i = 0; !rc && i < n; i++) {
        size_t old = jsonpath_push(&c, "outputs[%zu]", i);
        json_t *o = output_json(&c, req, resp, i, &bins[i]);
        if (!o || json_array_append_new(outs, o))
            rc = -1;
        else if (bins[i].len > SIZE_MAX - tail)
            rc = jsonpath_fail(&c, "the binary outputs add up to more than %zu bytes", SIZE_MAX);
        tail += bins[i].len;
        jsonpath_pop(&c, old);
    }
    if (!rc) {
        rc = json_object_set_new(root, "outputs", outs);
        outs = NULL;
        if (rc)
            jsonpath_fail(&c, "out of memory");
    }
    if (!rc) {
        rc = dump(&c, root, tail, body, json_len);
        root = NULL;
    }
    if (!rc) {
        *len = *json_len;
        for (size_t i = 0; i < n; i++) {
            if (bins[i].len)
                memcpy(*body + *len, bins[i].data, bins[i].len);
            *len += bins[i].len;
        }
    }
    for (size_t i = 0; bins && i < n; i++)
        free(bins[i].data);
    free(bins);
    json_decref(outs);
    json_decref(root);
    return rc ? FXS_INTERNAL : 0;
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
        const ProtobufCMessage *cfg = *(ProtobufCMessage *const *)((const char *)m + config->offset);
        j = cfg ? pbjson_encode(cfg, JSON_FLAGS, err, errlen) : json_object();
    } else {
        j = pbjson_encode(m, JSON_FLAGS, err, errlen);
    }
    if (!j)
        return FXS_INTERNAL;
    return dump(&c, j, 0, out, len) ? FXS_INTERNAL : 0;
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
                           : json_is_string(v)  ? (strncmp(key, "file:", 5) ? "string_param"
                                                                             : "bytes_param")
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
    while (blank < len && strchr(" \t\r\n", body[blank]))
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
        rc = only_keys(&c, j, repo_keys);
    if (!rc && desc == &inference__repository_index_request__descriptor)
        rc = only_keys(&c, j, index_keys);
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
