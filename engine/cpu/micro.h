/*
 * micro.h - the register-tiled micro-kernel the CPU's own products share
 * (conv.c, rnn.c): an MR x NR tile
 *     C = (add ? C : 0) + rbias + cbias + A B
 * over kc steps, with A(i, k) = a[i*rsa + k*csa], B rows of NR floats ldb
 * apart, C's rows ldc apart, rbias MR values (one per row) or NULL, cbias
 * NR values (one per column) or NULL. Written once with GCC vector types
 * and instantiated per instruction set by FX_MICRO: the tile lives in
 * MR * NV vector registers, and each step is NV loads of B, MR broadcasts of
 * A and MR * NV fused multiply-adds. Not an API: engine/cpu/ only.
 */
#ifndef FX_CPU_MICRO_H
#define FX_CPU_MICRO_H

#include <stdbool.h>
#include <stdint.h>

typedef void (*fx_micro_fn)(int64_t kc, const float *a, int64_t rsa, int64_t csa,
                            const float *b, int64_t ldb, float *c, int64_t ldc, bool add,
                            const float *rbias, const float *cbias);

#define FX_MICRO(NAME, ATTR, VW, MR, NV)                                                        \
    ATTR static void NAME(int64_t kc, const float *a, int64_t rsa, int64_t csa, const float *b, \
                          int64_t ldb, float *c, int64_t ldc, bool add, const float *rbias,    \
                          const float *cbias)                                                  \
    {                                                                                           \
        typedef float vf                                                                        \
            __attribute__((vector_size(VW * sizeof(float)), aligned(sizeof(float)), may_alias)); \
        vf acc[MR][NV];                                                                         \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                   \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++)                                \
                acc[i][j] = (cbias ? *(const vf *)(cbias + j * VW) : (vf){ 0 }) +               \
                            (rbias ? rbias[i] : 0.0f);                                          \
        for (int64_t k = 0; k < kc; k++, a += csa, b += ldb) {                                  \
            vf bv[NV];                                                                          \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++)                                \
                bv[j] = *(const vf *)(b + j * VW);                                              \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                               \
                _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++)                            \
                    acc[i][j] += a[i * rsa] * bv[j];                                            \
        }                                                                                       \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                   \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) {                              \
                vf *p = (vf *)(c + i * ldc + j * VW);                                           \
                if (add)                                                                        \
                    *p += acc[i][j];                                                            \
                else                                                                            \
                    *p = acc[i][j];                                                             \
            }                                                                                   \
    }

#endif
