/*
 * inferjson_types.c - the Open Inference Protocol's datatypes and the
 * typed lists of InferTensorContents (inferjson_internal.h).
 */
#include "inferjson_internal.h"

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

