/*
 * testutil.h - shared helpers for the cmocka tests: persistent tensors from
 * a seeded generator or host data, host copies, closeness, coordinates,
 * temporary paths. The finite-difference gradient check of every op and
 * layer is the op registry's (ops_registry.h, test_ops), not a helper here.
 */
#ifndef FX_TESTUTIL_H
#define FX_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fluxion.h"

#define TU_SHAPE(...) ((int64_t[]){ __VA_ARGS__ })
#define TU_NDIM(...) ((int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)))

/* A persistent f32 tensor with N(0,1)*scale + shift entries, requires_grad. */
fx_tensor *tu_randn(fx_rng *rng, int ndim, const int64_t *shape, double scale, double shift);
/* A persistent f32 tensor with U(lo, hi) entries, requires_grad. */
fx_tensor *tu_uniform(fx_rng *rng, int ndim, const int64_t *shape, double lo, double hi);
/* A persistent tensor from host data (any dtype), no grad. */
fx_tensor *tu_from(fx_dtype dt, int ndim, const int64_t *shape, const void *data);

/* Host copy of a tensor's f32 values (malloc'd). */
float *tu_values(const fx_tensor *t);
/* Asserts |a[i] - b[i]| <= tol for all i. */
void tu_assert_close(const float *a, const float *b, int64_t n, double tol);
/* Row-major offset of coordinates c in shape, and the coordinates of a
 * flat offset i. */
int64_t tu_offset_of(int ndim, const int64_t *shape, const int64_t *c);
void tu_coords_of(int ndim, const int64_t *shape, int64_t i, int64_t *c);
/* Frees n persistent tensors. */
void tu_free_all(int n, fx_tensor **ts);

/* A formatted path in one of 8 rotating static buffers (valid for the next
 * 7 calls), and the removal of a directory tree (tests' mkdtemp dirs). */
char *tu_pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tu_rmtree(const char *dir);

#endif
