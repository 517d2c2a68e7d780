/*
 * inferjson_response.c - inference.ModelInferResponse -> tensors in JSON
 * (see inferjson.h): typed or raw contents, every datatype, outputs in the
 * response's order.
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

/* ------------------------------------------------------------- response */

static json_t *float_json(double v)
{
    if (isnan(v))
        return json_string("NaN");
    if (isinf(v))
        return json_string(v < 0 ? "-Infinity" : "Infinity");
    return json_real(v);
}

static json_t *typed_elem(const dtype *dt, const void *array, size_t k)
{
    switch (dt->list) {
    case L_BOOL: return json_boolean(((const protobuf_c_boolean *)array)[k]);
    case L_INT: return json_integer(((const int32_t *)array)[k]);
    case L_INT64: return json_integer(((const int64_t *)array)[k]);
    case L_UINT: return json_integer(((const uint32_t *)array)[k]);
    case L_UINT64: {
        uint64_t u = ((const uint64_t *)array)[k];
        return u <= INT64_MAX ? json_integer((json_int_t)u) : json_real((double)u);
    }
    case L_FP32: return float_json(pbjson_float_to_double(((const float *)array)[k]));
    case L_FP64: return float_json(((const double *)array)[k]);
    default: {
        const ProtobufCBinaryData *bd = &((const ProtobufCBinaryData *)array)[k];
        return json_stringn((const char *)bd->data, bd->len);
    }
    }
}

static json_t *raw_elem(const dtype *dt, const unsigned char *p)
{
    if (dt->kind == K_FLOAT) {
        if (dt->raw_size == 4) {
            float f;
            memcpy(&f, p, 4);
            return float_json(pbjson_float_to_double(f));
        }
        double d;
        memcpy(&d, p, 8);
        return float_json(d);
    }
    uint64_t u = 0;
    memcpy(&u, p, dt->raw_size);
    if (dt->kind == K_BOOL)
        return json_boolean(u != 0);
    if (dt->kind == K_INT && dt->raw_size < 8 && (u >> (dt->raw_size * 8 - 1) & 1))
        u |= ~(uint64_t)0 << (dt->raw_size * 8); /* sign-extend */
    if (dt->kind == K_INT)
        return json_integer((json_int_t)u);
    return u <= INT64_MAX ? json_integer((json_int_t)u) : json_real((double)u);
}

/* Appends `count` elements of one output to data. */
/* An output's typed contents of dt's list (the array and its length),
 * which must hold count elements. */
static int typed_contents(jsonpath *c, const dtype *dt,
                          const Inference__ModelInferResponse__InferOutputTensor *o,
                          uint64_t count, const void **array, size_t *have)
{
    *have = 0;
    *array = NULL;
    if (o->contents) {
        const ProtobufCFieldDescriptor *lf = ij__list_field(dt->list);
        *have = *(const size_t *)MEMBER(o->contents, lf->quantifier_offset);
        *array = *(void *const *)MEMBER(o->contents, lf->offset);
    }
    if (*have != count)
        return jsonpath_fail(c, "the shape holds %" PRIu64 " elements, the contents have %zu",
                             count, *have);
    return 0;
}

static int output_data(jsonpath *c, const dtype *dt, const Inference__ModelInferResponse *resp,
                       size_t i, uint64_t count, json_t *data)
{
    const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
    if (resp->n_raw_output_contents) {
        if (i >= resp->n_raw_output_contents)
            return jsonpath_fail(c, "no raw contents for this output");
        const ProtobufCBinaryData *r = &resp->raw_output_contents[i];
        size_t pos = 0;
        for (uint64_t k = 0; k < count; k++) {
            size_t n = dt->raw_size;
            uint32_t len = 0;
            if (dt->kind == K_BYTES) {
                if (r->len - pos < 4)
                    return jsonpath_fail(c, "raw contents end inside element %" PRIu64, k);
                memcpy(&len, r->data + pos, 4);
                pos += 4;
                n = len;
            }
            if (r->len - pos < n)
                return jsonpath_fail(c, "raw contents end inside element %" PRIu64, k);
            json_t *v = dt->kind == K_BYTES ? json_stringn((const char *)r->data + pos, n)
                                            : raw_elem(dt, r->data + pos);
            if (!v || json_array_append_new(data, v))
                return jsonpath_fail(c, "element %" PRIu64 " cannot be written as JSON%s", k,
                                     dt->kind == K_BYTES ? " (BYTES that are not UTF-8 text)" : "");
            pos += n;
        }
        if (pos != r->len)
            return jsonpath_fail(c, "raw contents hold %zu bytes, the shape needs %zu", r->len,
                                 pos);
        return 0;
    }
    size_t have;
    const void *array;
    if (typed_contents(c, dt, o, count, &array, &have))
        return -1;
    for (size_t k = 0; k < have; k++) {
        json_t *v = typed_elem(dt, array, k);
        if (!v || json_array_append_new(data, v))
            return jsonpath_fail(c, "element %zu cannot be written as JSON%s", k,
                                 dt->kind == K_BYTES ? " (BYTES that are not UTF-8 text)" : "");
    }
    return 0;
}

json_t *inferjson_output(jsonpath *c, const Inference__ModelInferResponse *resp, size_t i)
{
    const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
    const dtype *dt = ij__find_dtype(o->datatype ? o->datatype : "");
    if (!dt) {
        jsonpath_fail(c, "unsupported datatype \"%s\"", o->datatype ? o->datatype : "");
        return NULL;
    }
    json_t *shape = json_array(), *data = json_array();
    json_t *out = json_pack("{s:o, s:s, s:o}", "shape", shape, "datatype", dt->name, "data", data);
    if (!out) {
        jsonpath_fail(c, "out of memory");
        return NULL;
    }
    uint64_t count = 1;
    for (size_t d = 0; d < o->n_shape; d++) {
        if (o->shape[d] < 0 || (o->shape[d] && count > UINT64_MAX / (uint64_t)o->shape[d])) {
            jsonpath_fail(c, "bad shape dimension %" PRId64, o->shape[d]);
            json_decref(out);
            return NULL;
        }
        count *= (uint64_t)o->shape[d];
        json_array_append_new(shape, json_integer(o->shape[d]));
    }
    if (output_data(c, dt, resp, i, count, data)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* The element count of output o's shape. */
static int shape_count(jsonpath *c, const Inference__ModelInferResponse__InferOutputTensor *o,
                       uint64_t *count)
{
    *count = 1;
    for (size_t d = 0; d < o->n_shape; d++) {
        if (o->shape[d] < 0 || (o->shape[d] && *count > UINT64_MAX / (uint64_t)o->shape[d]))
            return jsonpath_fail(c, "bad shape dimension %" PRId64, o->shape[d]);
        *count *= (uint64_t)o->shape[d];
    }
    return 0;
}

/* Typed element k -> its raw form at out (raw_size bytes, or BYTES' length
 * and bytes); returns the bytes written. The 32-bit lists carry the 8- and
 * 16-bit types too, so their values are range-checked here. */
static int typed_to_raw(jsonpath *c, const dtype *dt, const void *array, size_t k,
                        unsigned char *out, size_t *n)
{
    uint64_t u = 0;
    switch (dt->list) {
    case L_BOOL: u = ((const protobuf_c_boolean *)array)[k] != 0; break;
    case L_INT: {
        int32_t v = ((const int32_t *)array)[k];
        if (v < dt->min || (v > 0 && (uint64_t)v > dt->max))
            return jsonpath_fail(c, "element %zu: %" PRId32 " is out of range for %s", k, v,
                                 dt->name);
        u = (uint64_t)(int64_t)v;
        break;
    }
    case L_UINT: {
        uint32_t v = ((const uint32_t *)array)[k];
        if (v > dt->max)
            return jsonpath_fail(c, "element %zu: %" PRIu32 " is out of range for %s", k, v,
                                 dt->name);
        u = v;
        break;
    }
    case L_INT64: u = (uint64_t)((const int64_t *)array)[k]; break;
    case L_UINT64: u = ((const uint64_t *)array)[k]; break;
    case L_FP32:
        memcpy(out, &((const float *)array)[k], 4);
        *n = 4;
        return 0;
    case L_FP64:
        memcpy(out, &((const double *)array)[k], 8);
        *n = 8;
        return 0;
    default: {
        const ProtobufCBinaryData *bd = &((const ProtobufCBinaryData *)array)[k];
        if (bd->len > UINT32_MAX)
            return jsonpath_fail(c, "element %zu: %zu bytes, over the 4 GiB of a BYTES element", k,
                                 bd->len);
        uint32_t len = (uint32_t)bd->len;
        memcpy(out, &len, 4);
        if (len)
            memcpy(out + 4, bd->data, len);
        *n = 4 + (size_t)len;
        return 0;
    }
    }
    memcpy(out, &u, dt->raw_size); /* little-endian: the low bytes first */
    *n = dt->raw_size;
    return 0;
}

int inferjson_output_raw(jsonpath *c, const Inference__ModelInferResponse *resp, size_t i,
                         ProtobufCBinaryData *out)
{
    const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
    const dtype *dt = ij__find_dtype(o->datatype ? o->datatype : "");
    uint64_t count;
    out->data = NULL;
    out->len = 0;
    if (!dt)
        return jsonpath_fail(c, "unsupported datatype \"%s\"", o->datatype ? o->datatype : "");
    if (shape_count(c, o, &count))
        return -1;
    if (resp->n_raw_output_contents) {
        if (i >= resp->n_raw_output_contents)
            return jsonpath_fail(c, "no raw contents for this output");
        const ProtobufCBinaryData *r = &resp->raw_output_contents[i];
        char what[48];
        snprintf(what, sizeof what, "raw_output_contents[%zu]", i);
        if (inferjson_check_raw(c, dt->name, count, what, r->data, r->len))
            return -1;
        if (!(out->data = malloc(r->len ? r->len : 1)))
            return jsonpath_fail(c, "out of memory");
        if (r->len)
            memcpy(out->data, r->data, r->len);
        out->len = r->len;
        return 0;
    }
    size_t have;
    const void *array;
    if (typed_contents(c, dt, o, count, &array, &have))
        return -1;
    size_t total = 0;
    for (size_t k = 0; k < have; k++) /* sizes fit: the elements are in memory already */
        total +=
            dt->kind == K_BYTES ? 4 + ((const ProtobufCBinaryData *)array)[k].len : dt->raw_size;
    unsigned char *p = malloc(total ? total : 1);
    if (!p)
        return jsonpath_fail(c, "out of memory");
    size_t pos = 0;
    for (size_t k = 0; k < have; k++) {
        size_t n = 0;
        if (typed_to_raw(c, dt, array, k, p + pos, &n)) {
            free(p);
            return -1;
        }
        pos += n;
    }
    out->data = p;
    out->len = total;
    return 0;
}

json_t *inferjson_response(const Inference__ModelInferResponse *resp, char *err, size_t errlen)
{
    jsonpath c = {.err = err, .errlen = errlen};
    json_t *out = json_object();
    if (!out) {
        jsonpath_fail(&c, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < resp->n_outputs; i++) {
        const char *name = resp->outputs[i]->name ? resp->outputs[i]->name : "";
        size_t old = jsonpath_push(&c, "output %s", name);
        json_t *o = inferjson_output(&c, resp, i);
        if (!o) {
            json_decref(out);
            return NULL;
        }
        /* jansson refuses a key that is not UTF-8 (and then says nothing) */
        if (json_object_set_new(out, name, o)) {
            jsonpath_fail(&c, "the output's name is not valid UTF-8");
            json_decref(out);
            return NULL;
        }
        jsonpath_pop(&c, old);
    }
    return out;
}
