/*
 * import_data.c - the data of an ONNX file: tensors (initializers, Constant
 * values) read into constants, value_info shapes, and the parameters
 * written out as safetensors at the end of an import.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/import_frame.h"
#include "base/status.h"

/* ------------------------------------------------------------ tensors */

/* IEEE half -> float. */
static float half_to_float(uint16_t h)
{
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023;
    float f;
    if (e == 0)
        f = ldexpf((float)m, -24);
    else if (e == 31)
        f = m ? NAN : INFINITY;
    else
        f = ldexpf((float)(m | 1024), (int)e - 25);
    return s ? -f : f;
}

int fxon__tensor_const(fxon_ctx *cx, const Onnx__TensorProto *t, const char *what, fxon_const **out)
{
    if (t->n_external_data ||
        (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL))
        return fxon_fail(cx,
                         "%s: external data is not supported (save the model with its "
                         "weights inside the file: onnx.save(model, path, "
                         "save_as_external_data=False))",
                         what);
    if (t->segment)
        return fxon_fail(cx, "%s: segmented tensors are not supported", what);
    if (t->n_dims > FXON_MAX_DIMS)
        return fxon_fail(cx, "%s has %zu dims (at most %d)", what, t->n_dims, FXON_MAX_DIMS);
    int dt = t->has_data_type ? t->data_type : 0;
    size_t esz;
    switch (dt) {
    case FXON_FLOAT:
    case FXON_INT32: esz = 4; break;
    case FXON_INT64:
    case FXON_DOUBLE:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: esz = 8; break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: esz = 4; break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case FXON_BOOL: esz = 1; break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16: esz = 2; break;
    default:
        return fxon_fail(cx,
                         "%s: data type %d is not supported (float, double, float16, "
                         "bool and integer types are)",
                         what, dt);
    }
    int64_t shape[FXON_MAX_DIMS];
    for (size_t d = 0; d < t->n_dims; d++)
        shape[d] = t->dims[d];
    bool is_float =
        dt == FXON_FLOAT || dt == FXON_DOUBLE || dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
    int64_t n = 1;
    for (size_t d = 0; d < t->n_dims; d++) {
        if (shape[d] < 0 || (shape[d] && n > FXON_MAX_TENSOR_ELEMS / shape[d]))
            return fxon_fail(cx, "%s: dim %zu is %lld (at most %lld elements in all)", what, d,
                             (long long)shape[d], (long long)FXON_MAX_TENSOR_ELEMS);
        n *= shape[d];
    }
    /* The data must be there before anything is allocated for it. */
    size_t have =
        t->has_raw_data     ? t->raw_data.len / esz
        : dt == FXON_FLOAT  ? t->n_float_data
        : dt == FXON_DOUBLE ? t->n_double_data
        : dt == FXON_INT64  ? t->n_int64_data
        : dt == ONNX__TENSOR_PROTO__DATA_TYPE__UINT32 || dt == ONNX__TENSOR_PROTO__DATA_TYPE__UINT64
            ? t->n_uint64_data
            : t->n_int32_data;
    if (t->has_raw_data && (uint64_t)t->raw_data.len != (uint64_t)n * esz)
        return fxon_fail(cx, "%s: raw_data holds %zu bytes, its shape needs %llu", what,
                         t->raw_data.len, (unsigned long long)n * esz);
    if ((uint64_t)have != (uint64_t)n)
        return fxon_fail(cx, "%s holds %zu values, its shape needs %lld", what, have, (long long)n);
    fxon_const *c = fxon_const_new(cx, is_float ? FXON_FLOAT : FXON_INT64, (int)t->n_dims, shape);
    if (!c)
        return FXS_INVALID_ARGUMENT;
    if (t->has_raw_data) {
        const uint8_t *p = t->raw_data.data;
        for (int64_t k = 0; k < n; k++, p += esz) {
            union {
                float f;
                double d;
                int32_t i32;
                uint32_t u32;
                int64_t i64;
                uint64_t u64;
                int16_t i16;
                uint16_t u16;
                int8_t i8;
                uint8_t u8;
            } u;
            memcpy(&u, p, esz);
            switch (dt) {
            case FXON_FLOAT: c->f[k] = u.f; break;
            case FXON_DOUBLE: c->f[k] = (float)u.d; break;
            case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16: c->f[k] = half_to_float(u.u16); break;
            case FXON_INT32: c->i[k] = u.i32; break;
            case FXON_INT64: c->i[k] = u.i64; break;
            case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: c->i[k] = u.u32; break;
            case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: c->i[k] = (int64_t)u.u64; break;
            case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: c->i[k] = u.i16; break;
            case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: c->i[k] = u.u16; break;
            case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: c->i[k] = u.i8; break;
            default: c->i[k] = u.u8; break; /* uint8, bool */
            }
        }
    } else {
        for (int64_t k = 0; k < n; k++) {
            switch (dt) {
            case FXON_FLOAT: c->f[k] = t->float_data[k]; break;
            case FXON_DOUBLE: c->f[k] = (float)t->double_data[k]; break;
            case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
                c->f[k] = half_to_float((uint16_t)t->int32_data[k]);
                break;
            case FXON_INT64: c->i[k] = t->int64_data[k]; break;
            case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
            case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: c->i[k] = (int64_t)t->uint64_data[k]; break;
            default: c->i[k] = t->int32_data[k]; break;
            }
        }
    }
    *out = c;
    return 0;
}

void fxon__value_info(const Onnx__ValueInfoProto *vi, int *elem, int *ndim, int64_t *shape)
{
    *elem = 0;
    *ndim = -1;
    const Onnx__TypeProto *tp = vi ? vi->type : NULL;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return;
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    *elem = tt->has_elem_type ? tt->elem_type : 0;
    if (!tt->shape || tt->shape->n_dim > FXON_MAX_DIMS)
        return;
    *ndim = (int)tt->shape->n_dim;
    for (int d = 0; d < *ndim; d++) {
        const Onnx__TensorShapeProto__Dimension *dm = tt->shape->dim[d];
        shape[d] = dm && dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
                           dm->dim_value >= 1
                       ? dm->dim_value
                       : -1;
    }
}

/* ------------------------------------------------------------ weights */

int fxon__encode_weights(fxon_ctx *cx, uint8_t **out, size_t *len)
{
    struct fxon_impl *im = cx->impl;
    /* Header: names are clean (clean_name) so no JSON escapes are needed. */
    size_t hcap = 64 + im->n_params * (FXON_MAX_DIMS * 22 + 360), h = 0;
    char *hdr = malloc(hcap);
    if (!hdr)
        return fxon_oom(cx);
    uint64_t off = 0;
    h += (size_t)snprintf(hdr + h, hcap - h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < im->n_params; i++) {
        const fxon_param_rec *p = &im->params[i];
        h += (size_t)snprintf(hdr + h, hcap - h, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", p->name);
        for (int d = 0; d < p->ndim; d++)
            h +=
                (size_t)snprintf(hdr + h, hcap - h, "%s%lld", d ? "," : "", (long long)p->shape[d]);
        uint64_t end = off + (uint64_t)p->numel * 4;
        h += (size_t)snprintf(hdr + h, hcap - h, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)off, (unsigned long long)end);
        off = end;
    }
    h += (size_t)snprintf(hdr + h, hcap - h, "}");
    size_t padded = (h + 7) & ~(size_t)7;
    size_t total = 8 + padded + (size_t)off;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(hdr);
        return fxon_oom(cx);
    }
    uint64_t hl = padded;
    for (int b = 0; b < 8; b++)
        buf[b] = (uint8_t)(hl >> (8 * b));
    memcpy(buf + 8, hdr, h);
    memset(buf + 8 + h, ' ', padded - h);
    free(hdr);
    uint8_t *p = buf + 8 + padded;
    for (size_t i = 0; i < im->n_params; i++) {
        memcpy(p, im->params[i].data, (size_t)im->params[i].numel * 4);
        p += im->params[i].numel * 4;
    }
    *out = buf;
    *len = total;
    return 0;
}

/* ------------------------------------------------------------ constants as tensors */

/* A run-time [1] tensor of ones, made once from the first float graph
 * input: reshape [-1], its first element, the gradient blocked, ^0 (1 even
 * for inf and NaN). The engine's graph has no constant tensors; a dense
 * layer on this is one. */
static const char *ones_ref(fxon_ctx *cx)
{
    struct fxon_impl *im = cx->impl;
    if (im->ones_ref)
        return im->ones_ref;
    const char *src = NULL;
    for (size_t i = 0; i < im->n_graph_inputs && !src; i++)
        if (im->graph_inputs[i]->elem == FXON_FLOAT)
            src = im->graph_inputs[i]->ref;
    if (!src) {
        fxon_fail(cx, "a constant tensor is used as a tensor, and the graph has no float input "
                      "to make it from");
        return NULL;
    }
    static const int64_t flat[1] = {-1};
    Fluxion__V1__Node *r = fxon_emit(cx, "reshape", "const_src_flat", 1, &src);
    if (!r || fxon_set_ints(cx, r, "shape", flat, 1))
        return NULL;
    Fluxion__V1__Node *s = fxon_emit(cx, "slice", "const_src_first", 1, (const char *[]){r->name});
    if (!s || fxon_set_int(cx, s, "axis", 0) || fxon_set_int(cx, s, "start", 0) ||
        fxon_set_int(cx, s, "end", 1))
        return NULL;
    Fluxion__V1__Node *g =
        fxon_emit(cx, "grad_reverse", "const_src_nograd", 1, (const char *[]){s->name});
    if (!g || fxon_set_float(cx, g, "lambda", 0))
        return NULL;
    Fluxion__V1__Node *p = fxon_emit(cx, "pow", "const_ones", 1, (const char *[]){g->name});
    if (!p || fxon_set_float(cx, p, "exponent", 0))
        return NULL;
    return im->ones_ref = p->name;
}

int fxon__materialize(fxon_ctx *cx, fxon_value *v)
{
    const fxon_const *c = v->c;
    if (c->elem != FXON_FLOAT)
        return fxon_fail(cx,
                         "'%.200s' is an integer constant the engine cannot use as a tensor "
                         "here (the graph has no constant tensors)",
                         v->name);
    if (c->numel < 1 || c->numel > FXON_MAX_MATERIALIZED)
        return fxon_fail(cx,
                         "'%.200s' is a constant of %lld elements used as a tensor (1 to %d "
                         "can be)",
                         v->name, (long long)c->numel, FXON_MAX_MATERIALIZED);
    const char *one = ones_ref(cx);
    if (!one)
        return FXS_INVALID_ARGUMENT;
    /* dense(ones [1]) = its weight [K, 1]: the constant, as a parameter. */
    Fluxion__V1__Node *d = fxon_emit(cx, "dense", v->name, 1, &one);
    int rc;
    if (!d || (rc = fxon_set_int(cx, d, "in_features", 1)) ||
        (rc = fxon_set_int(cx, d, "out_features", c->numel)) ||
        (rc = fxon_set_bool(cx, d, "bias", false)))
        return d ? rc : FXS_INVALID_ARGUMENT;
    float *w = fxon_param(cx, d, "weight", 2, (int64_t[]){c->numel, 1});
    if (!w)
        return FXS_INVALID_ARGUMENT;
    memcpy(w, c->f, sizeof *w * (size_t)c->numel);
    const char *ref = d->name;
    if (!(c->ndim == 1)) {
        Fluxion__V1__Node *r =
            fxon_emit(cx, "reshape", fxon_printf(cx, "%s_shape", d->name), 1, &ref);
        if (!r || (rc = fxon_set_ints(cx, r, "shape", c->shape, (size_t)c->ndim)))
            return r ? rc : FXS_INVALID_ARGUMENT;
        ref = r->name;
        v->node = r;
    } else {
        v->node = d;
    }
    v->out_index = 0;
    v->ref = ref;
    return 0;
}
