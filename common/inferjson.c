/*
 * inferjson.c - tensors in JSON -> inference.ModelInferRequest (see
 * inferjson.h); the response side is inferjson_response.c.
 *
 * An input is turned into a shape and a flat list of JSON leaves first
 * (checking that nested arrays are not ragged), then each leaf is converted
 * for the datatype into either the typed contents list or the raw bytes.
 * The eight typed lists of InferTensorContents are reached through its
 * descriptor, so one code path serves all of them.
 */
#include "inferjson.h"
#include "jsonpath.h"
#include "pbjson.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferjson_internal.h"

/* ------------------------------------------------------- nested -> leaves */

typedef struct {
    int ndim;
    int64_t shape[MAX_DIMS];
    const json_t **leaf; /* borrowed */
    size_t n, cap;
} flat;

/* The shape is read off the first element at each depth; every other
 * element must then agree with it. */
static int nest_shape(jsonpath *c, const json_t *j, flat *f)
{
    f->ndim = 0;
    while (json_is_array(j)) {
        if (f->ndim == MAX_DIMS)
            return jsonpath_fail(c, "more than %d nested dimensions", MAX_DIMS);
        f->shape[f->ndim++] = (int64_t)json_array_size(j);
        j = json_array_get(j, 0);
    }
    return 0;
}

static int collect(jsonpath *c, const json_t *j, int depth, flat *f)
{
    if (depth == f->ndim) {
        if (json_is_array(j))
            return jsonpath_fail(c, "expected a value, got an array (nested deeper than the first "
                                    "element)");
        /* Grown as leaves come, never sized from the shape: the shape is
         * read off first elements only, and ragged data may claim far
         * more elements than it holds. */
        if (f->n == f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 64;
            const json_t **bigger = realloc(f->leaf, cap * sizeof *bigger);
            if (!bigger)
                return jsonpath_fail(c, "out of memory");
            f->leaf = bigger;
            f->cap = cap;
        }
        f->leaf[f->n++] = j;
        return 0;
    }
    if (!json_is_array(j))
        return jsonpath_fail(c, "expected an array of %" PRId64 " elements, got %s",
                             f->shape[depth], jsonpath_kind(j));
    if ((int64_t)json_array_size(j) != f->shape[depth])
        return jsonpath_fail(c,
                             "expected %" PRId64 " elements like the first array at this depth, "
                             "got %zu",
                             f->shape[depth], json_array_size(j));
    for (size_t i = 0; i < json_array_size(j); i++) {
        size_t old = jsonpath_push(c, "[%zu]", i);
        if (collect(c, json_array_get(j, i), depth + 1, f))
            return -1;
        jsonpath_pop(c, old);
    }
    return 0;
}

static int flatten(jsonpath *c, const json_t *data, flat *f)
{
    f->leaf = NULL;
    f->n = f->cap = 0;
    if (nest_shape(c, data, f))
        return -1;
    return collect(c, data, 0, f);
}

/* Path of leaf k: the prefix and its coordinates in the nested data. */
static size_t push_leaf(jsonpath *c, const flat *f, size_t k)
{
    size_t old = c->len;
    int64_t idx[MAX_DIMS];
    for (int d = f->ndim - 1; d >= 0; d--) {
        idx[d] = f->shape[d] ? (int64_t)(k % (size_t)f->shape[d]) : 0;
        k = f->shape[d] ? k / (size_t)f->shape[d] : 0;
    }
    for (int d = 0; d < f->ndim; d++)
        jsonpath_push(c, "[%" PRId64 "]", idx[d]);
    return old;
}

/* ------------------------------------------------------------ leaf values */

typedef union {
    int64_t i;
    uint64_t u;
    double f;
    const json_t *s; /* BYTES: the JSON string */
} value;

static int leaf_integer(jsonpath *c, const dtype *dt, const json_t *j, value *v)
{
    if (json_is_real(j) && json_real_value(j) != floor(json_real_value(j)))
        return jsonpath_fail(c, "expected an integer for %s, got %g", dt->name, json_real_value(j));
    if (!json_is_number(j))
        return jsonpath_fail(c, "expected an integer for %s, got %s", dt->name, jsonpath_kind(j));
    double d = json_number_value(j);
    if (json_is_integer(j)) {
        json_int_t x = json_integer_value(j);
        bool ok = dt->kind == K_INT ? x >= dt->min && (x < 0 || (uint64_t)x <= dt->max)
                                    : x >= 0 && (uint64_t)x <= dt->max;
        if (!ok)
            return jsonpath_fail(c, "%" JSON_INTEGER_FORMAT " is out of range for %s", x, dt->name);
        if (dt->kind == K_INT)
            v->i = x;
        else
            v->u = (uint64_t)x;
        return 0;
    }
    /* An integral real: 2.0, or beyond json_int_t (2^63 and up, UINT64). */
    if (dt->kind == K_INT ? d < (double)dt->min || d >= -(double)dt->min
                          : d < 0 || d >= (double)dt->max + 1.0)
        return jsonpath_fail(c, "%g is out of range for %s", d, dt->name);
    if (dt->kind == K_INT)
        v->i = (int64_t)d;
    else
        v->u = (uint64_t)d;
    return 0;
}

static int leaf_float(jsonpath *c, const dtype *dt, const json_t *j, value *v)
{
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        if (!strcmp(s, "NaN"))
            v->f = NAN;
        else if (!strcmp(s, "Infinity") || !strcmp(s, "-Infinity"))
            v->f = *s == '-' ? -INFINITY : INFINITY;
        else
            return jsonpath_fail(c, "expected a number for %s, got \"%s\"", dt->name, s);
        return 0;
    }
    if (!json_is_number(j))
        return jsonpath_fail(c, "expected a number for %s, got %s", dt->name, jsonpath_kind(j));
    v->f = json_number_value(j);
    if (dt->list == L_FP32 && fabs(v->f) > 3.4028234663852886e38)
        return jsonpath_fail(c, "%g is out of range for FP32", v->f);
    return 0;
}

static int leaf_value(jsonpath *c, const dtype *dt, const json_t *j, value *v)
{
    switch (dt->kind) {
    case K_BOOL:
        if (!json_is_boolean(j))
            return jsonpath_fail(c, "expected true or false for BOOL, got %s", jsonpath_kind(j));
        v->u = json_is_true(j);
        return 0;
    case K_INT:
    case K_UINT: return leaf_integer(c, dt, j, v);
    case K_FLOAT: return leaf_float(c, dt, j, v);
    case K_BYTES:
        if (!json_is_string(j))
            return jsonpath_fail(c, "expected a string for BYTES, got %s", jsonpath_kind(j));
        v->s = j;
        return 0;
    }
    return -1;
}

/* ----------------------------------------------------------- stores */

static int store_typed(int list, void *array, size_t k, const value *v)
{
    switch (list) {
    case L_BOOL: ((protobuf_c_boolean *)array)[k] = (protobuf_c_boolean)v->u; break;
    case L_INT: ((int32_t *)array)[k] = (int32_t)v->i; break;
    case L_INT64: ((int64_t *)array)[k] = v->i; break;
    case L_UINT: ((uint32_t *)array)[k] = (uint32_t)v->u; break;
    case L_UINT64: ((uint64_t *)array)[k] = v->u; break;
    case L_FP32: ((float *)array)[k] = (float)v->f; break;
    case L_FP64: ((double *)array)[k] = v->f; break;
    case L_BYTES: {
        ProtobufCBinaryData *bd = &((ProtobufCBinaryData *)array)[k];
        size_t n = json_string_length(v->s);
        bd->data = malloc(n ? n : 1);
        if (!bd->data)
            return -1;
        memcpy(bd->data, json_string_value(v->s), n);
        bd->len = n;
        break;
    }
    }
    return 0;
}

/* Raw form: little-endian elements of dt->raw_size bytes (the host is
 * little-endian, so the low bytes of the value come first in memory). */
static size_t store_raw(const dtype *dt, unsigned char *out, const value *v)
{
    if (dt->kind == K_BYTES) {
        uint32_t n = (uint32_t)json_string_length(v->s);
        memcpy(out, &n, 4);
        memcpy(out + 4, json_string_value(v->s), n);
        return 4 + (size_t)n;
    }
    if (dt->kind == K_FLOAT && dt->raw_size == 4) {
        float f = (float)v->f;
        memcpy(out, &f, 4);
    } else {
        memcpy(out, dt->kind == K_FLOAT ? (const void *)&v->f : (const void *)&v->u, dt->raw_size);
    }
    return dt->raw_size;
}

/* ------------------------------------------------------------- request */

typedef Inference__ModelInferRequest__InferInputTensor input_tensor;

static size_t raw_bytes(const dtype *dt, const flat *f)
{
    if (dt->kind != K_BYTES)
        return f->n * dt->raw_size;
    size_t total = 0;
    for (size_t k = 0; k < f->n; k++)
        total += 4 + (json_is_string(f->leaf[k]) ? json_string_length(f->leaf[k]) : 0);
    return total;
}

/* Converts the leaves into t->contents (typed) or *raw. */
static int fill_data(jsonpath *c, const dtype *dt, const flat *f, input_tensor *t,
                     ProtobufCBinaryData *raw)
{
    void *array = NULL;
    unsigned char *out = NULL;
    if (raw) {
        size_t n = raw_bytes(dt, f);
        out = raw->data = malloc(n ? n : 1);
        raw->len = n;
    } else {
        t->contents = malloc(sizeof *t->contents);
        if (t->contents) {
            inference__infer_tensor_contents__init(t->contents);
            const ProtobufCFieldDescriptor *lf = ij__list_field(dt->list);
            array = calloc(f->n ? f->n : 1, ij__list_elem_size(dt->list));
            *(void **)MEMBER(t->contents, lf->offset) = array;
            if (array)
                *(size_t *)MEMBER(t->contents, lf->quantifier_offset) = f->n;
        }
    }
    if (raw ? !out : !array)
        return jsonpath_fail(c, "out of memory");
    for (size_t k = 0; k < f->n; k++) {
        value v;
        size_t old = push_leaf(c, f, k);
        if (leaf_value(c, dt, f->leaf[k], &v))
            return -1;
        jsonpath_pop(c, old);
        if (raw)
            out += store_raw(dt, out, &v);
        else if (store_typed(dt->list, array, k, &v))
            return jsonpath_fail(c, "out of memory");
    }
    return 0;
}

static const char *meta_datatype(const Inference__ModelMetadataResponse *meta, const char *name)
{
    for (size_t i = 0; meta && i < meta->n_inputs; i++)
        if (!strcmp(meta->inputs[i]->name, name))
            return meta->inputs[i]->datatype;
    return NULL;
}

static int unknown_input(jsonpath *c, const Inference__ModelMetadataResponse *meta,
                         const char *name)
{
    if (!meta)
        return jsonpath_fail(c, "no datatype given for input \"%s\" (and no model metadata)", name);
    char names[256] = "";
    for (size_t i = 0; i < meta->n_inputs; i++) {
        size_t l = strlen(names);
        snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", meta->inputs[i]->name);
    }
    return jsonpath_fail(c, "model %s has no input \"%s\" (its inputs: %s)", meta->name, name,
                         names);
}

int inferjson_shape(jsonpath *c, const json_t *js, int64_t *shape, int *ndim, uint64_t *count)
{
    size_t base = jsonpath_push(c, ".shape");
    if (!json_is_array(js))
        return jsonpath_fail(c, "expected an array of dimensions, got %s", jsonpath_kind(js));
    if (json_array_size(js) > MAX_DIMS)
        return jsonpath_fail(c, "%zu dimensions, more than %d", json_array_size(js), MAX_DIMS);
    uint64_t total = 1;
    bool overflow = false, zero = false;
    for (size_t d = 0; d < json_array_size(js); d++) {
        json_t *e = json_array_get(js, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0) {
            jsonpath_index(c, d);
            return jsonpath_fail(c, "expected a dimension (an integer >= 0), got %s",
                                 jsonpath_kind(e));
        }
        shape[d] = json_integer_value(e);
        zero |= shape[d] == 0;
        if (!overflow && shape[d] && total > UINT64_MAX / (uint64_t)shape[d])
            overflow = true;
        if (!overflow)
            total *= (uint64_t)shape[d];
    }
    /* a zero dimension makes the product 0 whatever came before it */
    if (zero)
        total = 0;
    else if (overflow)
        return jsonpath_fail(c, "the shape holds more than %" PRIu64 " elements", UINT64_MAX);
    *ndim = (int)json_array_size(js);
    *count = total;
    jsonpath_pop(c, base);
    return 0;
}

/* "[2, 4]" */
static const char *shape_text(const int64_t *shape, int ndim, char *buf, size_t buflen)
{
    size_t n = (size_t)snprintf(buf, buflen, "[");
    for (int d = 0; d < ndim && n < buflen; d++)
        n += (size_t)snprintf(buf + n, buflen - n, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (n < buflen)
        snprintf(buf + n, buflen - n, "]");
    return buf;
}

/* Checks a declared "shape" against the data's element count; the path is
 * the tensor's and data_key names its data. */
static int declared_shape(jsonpath *c, const json_t *js, const char *data_key, flat *f)
{
    int64_t shape[MAX_DIMS];
    int ndim;
    uint64_t total;
    if (inferjson_shape(c, js, shape, &ndim, &total))
        return -1;
    if (total != f->n) {
        char text[MAX_DIMS * 24];
        jsonpath_push(c, ".%s", data_key);
        return jsonpath_fail(c, "expected %" PRIu64 " elements for shape %s, got %zu", total,
                             shape_text(shape, ndim, text, sizeof text), f->n);
    }
    f->ndim = ndim;
    memcpy(f->shape, shape, sizeof(int64_t) * (size_t)ndim);
    return 0;
}

/* One input: name, data (nested or flat), optional declared shape and
 * datatype. The path is the input's on entry; data_key names the member
 * holding the data within it (NULL: the input is the data). The tensor is
 * already owned by the request, so a failure leaves nothing to free. */
static int build_input(jsonpath *c, const char *name, const json_t *data, const char *data_key,
                       const json_t *jshape, const char *datatype,
                       const Inference__ModelMetadataResponse *meta, input_tensor *t,
                       ProtobufCBinaryData *raw)
{
    t->name = strdup(name);
    if (!t->name)
        return jsonpath_fail(c, "out of memory");
    if (!datatype)
        datatype = meta_datatype(meta, name);
    if (!datatype)
        return unknown_input(c, meta, name);
    const dtype *dt = ij__find_dtype(datatype);
    if (!dt) {
        if (data_key)
            jsonpath_push(c, ".datatype");
        return jsonpath_fail(c, "unsupported datatype \"%s\"", datatype);
    }
    t->datatype = strdup(datatype);
    if (!t->datatype)
        return jsonpath_fail(c, "out of memory");

    flat f;
    size_t base = c->len;
    if (data_key)
        jsonpath_push(c, ".%s", data_key);
    int rc = flatten(c, data, &f);
    if (!rc)
        jsonpath_pop(c, base);
    const flat nested = f; /* the data's own nesting, for value paths */
    if (!rc && jshape)
        rc = declared_shape(c, jshape, data_key ? data_key : "data", &f);
    if (!rc) {
        t->shape = malloc(((size_t)f.ndim ? (size_t)f.ndim : 1) * sizeof *t->shape);
        if (!t->shape)
            rc = jsonpath_fail(c, "out of memory");
    }
    if (!rc) {
        t->n_shape = (size_t)f.ndim;
        memcpy(t->shape, f.shape, sizeof(int64_t) * (size_t)f.ndim);
        if (data_key)
            jsonpath_push(c, ".%s", data_key);
        rc = fill_data(c, dt, &nested, t, raw);
        if (!rc)
            jsonpath_pop(c, base);
    }
    free(f.leaf);
    return rc;
}

int inferjson_input(jsonpath *c, const char *name, const json_t *data, const json_t *shape_json,
                    const char *datatype, input_tensor *t, ProtobufCBinaryData *raw)
{
    return build_input(c, name, data, "data", shape_json, datatype, NULL, t, raw);
}

/* Gives the request n empty input tensors (and raw buffers). */
static int alloc_inputs(jsonpath *c, Inference__ModelInferRequest *req, size_t n, bool raw)
{
    req->inputs = calloc(n ? n : 1, sizeof *req->inputs);
    if (!req->inputs)
        return jsonpath_fail(c, "out of memory");
    req->n_inputs = n;
    for (size_t i = 0; i < n; i++) {
        req->inputs[i] = malloc(sizeof *req->inputs[i]);
        if (!req->inputs[i])
            return jsonpath_fail(c, "out of memory");
        inference__model_infer_request__infer_input_tensor__init(req->inputs[i]);
    }
    if (raw) {
        req->raw_input_contents = calloc(n ? n : 1, sizeof *req->raw_input_contents);
        if (!req->raw_input_contents)
            return jsonpath_fail(c, "out of memory");
        req->n_raw_input_contents = n;
    }
    return 0;
}

static int short_form(jsonpath *c, const json_t *in, Inference__ModelInferRequest *req,
                      const Inference__ModelMetadataResponse *meta, bool raw)
{
    if (json_object_size(in) == 0)
        return jsonpath_fail(c, "no inputs given");
    if (alloc_inputs(c, req, json_object_size(in), raw))
        return -1;
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)in, key, val)
    {
        size_t old = jsonpath_push(c, "%s", key);
        if (build_input(c, key, val, NULL, NULL, NULL, meta, req->inputs[i],
                        raw ? &req->raw_input_contents[i] : NULL))
            return -1;
        jsonpath_pop(c, old);
        i++;
    }
    return 0;
}

/* Member `key` of object o as a string (NULL when absent and optional). */
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

/* Every member of o is one of the allowed keys (NULL-terminated). */
static int only_keys(jsonpath *c, const json_t *o, const char *const *allowed, const char *list)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)o, key, val)
    {
        const char *const *a = allowed;
        while (*a && strcmp(*a, key))
            a++;
        if (!*a) {
            jsonpath_key(c, key);
            return jsonpath_fail(c, "unknown member (expected %s)", list);
        }
    }
    return 0;
}

static int kserve_input(jsonpath *c, const json_t *e, const Inference__ModelMetadataResponse *meta,
                        input_tensor *t, ProtobufCBinaryData *raw)
{
    static const char *const keys[] = {"name", "shape", "datatype", "data", NULL};
    const char *name, *datatype;
    if (!json_is_object(e))
        return jsonpath_fail(c, "expected an object (name, shape, datatype, data), got %s",
                             jsonpath_kind(e));
    if (only_keys(c, e, keys, "name, shape, datatype, data") ||
        get_string(c, e, "name", true, &name) || get_string(c, e, "datatype", false, &datatype))
        return -1;
    json_t *data = json_object_get(e, "data");
    if (!data) {
        jsonpath_push(c, ".data");
        return jsonpath_fail(c, "missing");
    }
    return build_input(c, name, data, "data", json_object_get(e, "shape"), datatype, meta, t, raw);
}

static int kserve_outputs(jsonpath *c, const json_t *outs, Inference__ModelInferRequest *req)
{
    static const char *const keys[] = {"name", NULL};
    if (!json_is_array(outs))
        return jsonpath_fail(c, "expected an array of {\"name\": ...}, got %s",
                             jsonpath_kind(outs));
    size_t n = json_array_size(outs);
    req->outputs = calloc(n ? n : 1, sizeof *req->outputs);
    if (!req->outputs)
        return jsonpath_fail(c, "out of memory");
    req->n_outputs = n;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(outs, i);
        const char *name;
        size_t old = jsonpath_push(c, "[%zu]", i);
        if (!json_is_object(e))
            return jsonpath_fail(c, "expected an object {\"name\": ...}, got %s", jsonpath_kind(e));
        if (only_keys(c, e, keys, "name") || get_string(c, e, "name", true, &name))
            return -1;
        jsonpath_pop(c, old);
        Inference__ModelInferRequest__InferRequestedOutputTensor *o = malloc(sizeof *o);
        if (!o)
            return jsonpath_fail(c, "out of memory");
        inference__model_infer_request__infer_requested_output_tensor__init(o);
        req->outputs[i] = o;
        if (!(o->name = strdup(name)))
            return jsonpath_fail(c, "out of memory");
    }
    return 0;
}

static int kserve_form(jsonpath *c, const json_t *in, Inference__ModelInferRequest *req,
                       const Inference__ModelMetadataResponse *meta, bool raw)
{
    static const char *const keys[] = {"inputs", "outputs", "id", NULL};
    const json_t *inputs = json_object_get(in, "inputs");
    const char *id;
    if (only_keys(c, in, keys, "inputs, outputs, id") || get_string(c, in, "id", false, &id))
        return -1;
    if (id && !(req->id = strdup(id)))
        return jsonpath_fail(c, "out of memory");
    if (json_array_size(inputs) == 0) {
        jsonpath_push(c, "inputs");
        return jsonpath_fail(c, "no inputs given");
    }
    if (alloc_inputs(c, req, json_array_size(inputs), raw))
        return -1;
    for (size_t i = 0; i < json_array_size(inputs); i++) {
        size_t old = jsonpath_push(c, "inputs[%zu]", i);
        if (kserve_input(c, json_array_get(inputs, i), meta, req->inputs[i],
                         raw ? &req->raw_input_contents[i] : NULL))
            return -1;
        jsonpath_pop(c, old);
    }
    const json_t *outs = json_object_get(in, "outputs");
    if (outs) {
        jsonpath_push(c, "outputs");
        if (kserve_outputs(c, outs, req))
            return -1;
        jsonpath_pop(c, 0);
    }
    return 0;
}

/* "inputs" holding an array of objects (or nothing) is the KServe form;
 * a short-form tensor named "inputs" holds numbers, strings or arrays. */
static bool is_kserve(const json_t *in)
{
    const json_t *inputs = json_object_get(in, "inputs");
    return json_is_array(inputs) &&
           (json_array_size(inputs) == 0 || json_is_object(json_array_get(inputs, 0)));
}

Inference__ModelInferRequest *inferjson_request(const json_t *in, const char *model,
                                                const char *version,
                                                const Inference__ModelMetadataResponse *meta,
                                                bool raw, char *err, size_t errlen)
{
    jsonpath c = {.err = err, .errlen = errlen};
    if (!json_is_object(in)) {
        jsonpath_fail(&c, "expected an object of inputs, got %s",
                      in ? jsonpath_kind(in) : "nothing");
        return NULL;
    }
    Inference__ModelInferRequest *req = malloc(sizeof *req);
    if (!req) {
        jsonpath_fail(&c, "out of memory");
        return NULL;
    }
    inference__model_infer_request__init(req);
    int rc = 0;
    if (!(req->model_name = strdup(model ? model : "")) ||
        (version && *version && !(req->model_version = strdup(version))))
        rc = jsonpath_fail(&c, "out of memory");
    if (!rc)
        rc = is_kserve(in) ? kserve_form(&c, in, req, meta, raw)
                           : short_form(&c, in, req, meta, raw);
    if (rc) {
        protobuf_c_message_free_unpacked(&req->base, NULL);
        return NULL;
    }
    return req;
}

