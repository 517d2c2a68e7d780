/*
 * inferjson_types.c - the Open Inference Protocol's datatypes and the
 * typed lists of InferTensorContents (inferjson_internal.h).
 */
#include "inferjson_internal.h"

#include <inttypes.h>
#include <string.h>

const dtype IJ_DTYPES[] = {
    {"BOOL", K_BOOL, 1, L_BOOL, 0, 1},
    {"INT8", K_INT, 1, L_INT, INT8_MIN, INT8_MAX},
    {"INT16", K_INT, 2, L_INT, INT16_MIN, INT16_MAX},
    {"INT32", K_INT, 4, L_INT, INT32_MIN, INT32_MAX},
    {"INT64", K_INT, 8, L_INT64, INT64_MIN, INT64_MAX},
    {"UINT8", K_UINT, 1, L_UINT, 0, UINT8_MAX},
    {"UINT16", K_UINT, 2, L_UINT, 0, UINT16_MAX},
    {"UINT32", K_UINT, 4, L_UINT, 0, UINT32_MAX},
    {"UINT64", K_UINT, 8, L_UINT64, 0, UINT64_MAX},
    {"FP32", K_FLOAT, 4, L_FP32, 0, 0},
    {"FP64", K_FLOAT, 8, L_FP64, 0, 0},
    {"BYTES", K_BYTES, 0, L_BYTES, 0, 0},
};

const dtype *ij__find_dtype(const char *name)
{
    for (size_t i = 0; i < sizeof IJ_DTYPES / sizeof IJ_DTYPES[0]; i++)
        if (!strcmp(IJ_DTYPES[i].name, name))
            return &IJ_DTYPES[i];
    return NULL;
}

const ProtobufCFieldDescriptor *ij__list_field(int list)
{
    return &inference__infer_tensor_contents__descriptor.fields[list];
}

size_t ij__list_elem_size(int list)
{
    switch (list) {
    case L_INT64:
    case L_UINT64:
    case L_FP64: return 8;
    case L_BYTES: return sizeof(ProtobufCBinaryData);
    case L_BOOL: return sizeof(protobuf_c_boolean);
    default: return 4;
    }
}


int inferjson_check_raw(jsonpath *c, const char *datatype, uint64_t count, const char *what,
                        const void *data, size_t len)
{
    const dtype *dt = ij__find_dtype(datatype);
    if (!dt)
        return jsonpath_fail(c, "unsupported datatype \"%s\"", datatype);
    if (dt->kind != K_BYTES) {
        /* count * size compared without the product, which may not fit */
        if (count > len / dt->raw_size || count * dt->raw_size != len)
            return jsonpath_fail(c, "%s holds %zu bytes, %" PRIu64 " %s elements need %s%" PRIu64,
                                 what, len, count, dt->name,
                                 count > UINT64_MAX / dt->raw_size ? "more than " : "",
                                 count > UINT64_MAX / dt->raw_size ? UINT64_MAX
                                                                   : count * dt->raw_size);
        return 0;
    }
    const unsigned char *p = data;
    size_t pos = 0;
    for (uint64_t k = 0; k < count; k++) {
        uint32_t n;
        if (len - pos < 4)
            return jsonpath_fail(c, "%s ends at %zu bytes, inside the length of BYTES element %" PRIu64
                                    " of %" PRIu64, what, len, k, count);
        memcpy(&n, p + pos, 4);
        pos += 4;
        if (len - pos < n)
            return jsonpath_fail(c, "%s ends at %zu bytes, inside BYTES element %" PRIu64 " of %"
                                    PRIu64 " (%" PRIu32 " bytes long)", what, len, k, count, n);
        pos += n;
    }
    if (pos != len)
        return jsonpath_fail(c, "%s holds %zu bytes, the %" PRIu64 " BYTES elements end at %zu",
                             what, len, count, pos);
    return 0;
}
