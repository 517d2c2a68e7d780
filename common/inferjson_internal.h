/*
 * inferjson_internal.h - what inferjson.c (requests) and
 * inferjson_response.c (responses) share: the Open Inference Protocol's
 * datatypes and the typed lists of InferTensorContents. Private to
 * common/; the prefix ij__ marks it.
 */
#ifndef FXC_INFERJSON_INTERNAL_H
#define FXC_INFERJSON_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "inference/grpc_service.pb-c.h"
#include "inferjson.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "raw tensor contents are little-endian: this code assumes a little-endian host"
#endif

#define MEMBER(msg, off) ((void *)((char *)(msg) + (off)))
#define MAX_DIMS         INFERJSON_MAX_DIMS

/* The lists of InferTensorContents, in field order (id - 1). */
enum { L_BOOL, L_INT, L_INT64, L_UINT, L_UINT64, L_FP32, L_FP64, L_BYTES };

typedef enum { K_BOOL, K_INT, K_UINT, K_FLOAT, K_BYTES } kind;

typedef struct {
    const char *name;
    kind kind;
    unsigned raw_size; /* bytes per element in raw form; 0 for BYTES */
    int list;
    int64_t min;
    uint64_t max;
} dtype;

/* The datatype named name ("FP32", ...), NULL for an unknown one. */
const dtype *ij__find_dtype(const char *name);
/* The InferTensorContents field of a list, and the size of its elements. */
const ProtobufCFieldDescriptor *ij__list_field(int list);
size_t ij__list_elem_size(int list);

#endif
