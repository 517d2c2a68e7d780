/*
 * kern_packed.h - pre-packed weights for inference (engine/cpu/gemm_packed.c).
 *
 * A dense layer's weight W [N = out, K = in] is copied once into panels of
 * FX_PACK_NR output columns: panel p holds, for k = 0..K-1, the FX_PACK_NR
 * floats W[p*NR + j][k] (zero past N), one cache line pair per k step, which
 * is exactly the order the register-tiled micro-kernels read. The bias is
 * padded to whole panels the same way. The layout does not depend on the
 * instruction set, so any kernel (AVX-512, AVX2, portable) reads any pack.
 *
 * A pack is read-only once made: any number of threads may run products
 * from it at once. It remembers the weight's storage and version
 * (fx_storage.version) at packing time; fx__packed_valid says whether the
 * weight has changed since (then the caller falls back to the plain path).
 */
#ifndef FX_KERN_PACKED_H
#define FX_KERN_PACKED_H

#include "internal.h"

#include <string.h>

#define FX_PACK_NR 32

typedef struct fx_packed {
    int64_t N, K, np;    /* outputs, inputs, panels (ceil(N / NR)) */
    fx_precision prec;   /* FX_PREC_BF16: weights rounded to bf16 */
    float *panels;       /* np * K * NR floats, 64-byte aligned (fp32) */
    uint32_t *words;     /* np * ceil(K/2) * NR bf16 pairs (bf16; gemm_bf16.c) */
    float *bias;         /* np * NR floats, or NULL without bias */
    const fx_storage *w_storage, *b_storage; /* what it was packed from */
    uint64_t w_version, b_version;
} fx_packed;

/* Packs w [N,K] (f32, contiguous, on the CPU) and bias [N] (or NULL); NULL
 * on a bad argument or out of memory. */
fx_packed *fx__pack_create(const fx_tensor *w, const fx_tensor *bias);
/* The same in a precision (fx__pack_create is FX_PREC_F32). */
fx_packed *fx__pack_create_precision(const fx_tensor *w, const fx_tensor *bias,
                                     fx_precision prec);
void fx__pack_free(fx_packed *p);
/* True while w and bias are the tensors it was packed from, unchanged. */
bool fx__pack_valid(const fx_packed *p, const fx_tensor *w, const fx_tensor *bias);

/* Leaky relu's slope, as ew.c's. */
#define FX_PACK_LEAKY_SLOPE 0.01f

/*
 * The epilogue the packed micro-kernels share (gemm_packed.c's fp32 and
 * gemm_bf16.c's templates): ACC[MR][NV] vectors of VW floats, types vf
 * (float) and vi (int) of that width in scope; RACT 1 applies relu, 2 leaky
 * relu on the registers; then the tile goes to C (rows LDC floats apart),
 * whole when NCOLS == NV * VW, else its first NCOLS columns.
 */
#define FX_PACK_TILE_STORE(ACC, MR, NV, VW, C, LDC, NCOLS, RACT)                                \
    do {                                                                                        \
        if (RACT) {                                                                             \
            _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++)                             \
                _Pragma("GCC unroll 8") for (int j = 0; j < (NV); j++) {                        \
                    vf v = (ACC)[i][j];                                                         \
                    vi pos = v > (vf){ 0 };                                                     \
                    vf neg = FX_PACK_LEAKY_SLOPE * v;                                           \
                    if ((RACT) != 2)                                                            \
                        neg = (vf){ 0 };                                                        \
                    (ACC)[i][j] = (vf)(((vi)v & pos) | ((vi)neg & ~pos));                       \
                }                                                                               \
        }                                                                                       \
        if ((NCOLS) == (NV) * (VW)) {                                                           \
            _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++)                             \
                _Pragma("GCC unroll 8") for (int j = 0; j < (NV); j++)                          \
                    *(vf *)((C) + i * (LDC) + j * (VW)) = (ACC)[i][j];                          \
        } else {                                                                                \
            for (int i = 0; i < (MR); i++) {                                                    \
                vf row[(NV)];                                                                   \
                for (int j = 0; j < (NV); j++)                                                  \
                    row[j] = (ACC)[i][j];                                                       \
                memcpy((C) + i * (LDC), row, (size_t)(NCOLS) * sizeof(float));                  \
            }                                                                                   \
        }                                                                                       \
    } while (0)

/*
 * Y[M,N] = act(X[M,K] W^T + bias), rows lda / ldc floats apart. act is one
 * of NONE, RELU, LEAKY_RELU (slope 0.01), SIGMOID, TANH, GELU, ELU (alpha 1)
 * (fx__pack_fusable); bias and activation are applied in the kernel's
 * epilogue while the tile is in registers (relu) or in L1 (the others).
 * Splits the panels over fx__num_threads threads for large products.
 */
bool fx__pack_fusable(fx_activation act);
void fx__packed_gemm(const fx_packed *p, int64_t M, const float *X, int64_t lda, float *Y,
                     int64_t ldc, fx_activation act);

/*
 * The forward of linear + act on a pack of (w, b), for grad mode off: y is a
 * new arena tensor. NULL without an error when the pack does not apply
 * (stale, x not f32 on the CPU, features that differ): the caller then takes
 * the plain path; NULL with an error recorded on failure.
 */
fx_tensor *fx__linear_packed(fx_ctx *ctx, fx_tensor *x, const fx_tensor *w, const fx_tensor *b,
                             const fx_packed *p, fx_activation act);

/*
 * relu(linear(x, w, b)) as one tape node (the dense layer's path for relu on
 * the CPU, grad mode on or off): OpenBLAS product, the relu in place, and a
 * backward that masks dY and sums the bias gradient in one pass
 * (fx__relu_backward_bias) before the two BLAS products. Bit-identical to
 * fx_linear + fx_relu (same kernels, same order of every sum). The packed
 * kernels above, packing the weights per call since they change every
 * step, measured no faster than OpenBLAS for the mlp's step. NULL
 * without an error when it does not apply (not f32 contiguous on the CPU,
 * shapes that disagree): the caller then takes fx_linear + fx_relu, which
 * also words the errors; NULL with an error on failure.
 */
fx_tensor *fx__linear_relu(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b);
/* dZ = (Y > 0 ? dY : 0) over R x C (all contiguous), and dbias[c] += the
 * sum of column c of dZ when dbias is not NULL (rows in order). */
void fx__relu_backward_bias(int64_t R, int64_t C, const float *Y, const float *dY, float *dZ,
                            float *dbias);

/* For tests: 1 forces the portable kernel, 2 AVX2, 3 AVX-512 (each only when
 * the CPU has it, else the best below); 0 (default) picks the best. The
 * name of the kernel a product would use now: "avx512", "avx2", "portable". */
extern int fx__packed_isa;
const char *fx__packed_kernel_name(void);

/* ------------------------------------------------------------ bf16 */

/* fp32 -> bf16 as the AVX-512 BF16 conversions do: round to nearest even,
 * subnormals to signed zero, NaN stays a (quiet) NaN. */
static inline uint16_t fx__bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN */
        return (uint16_t)((u >> 16) | 0x40);
    if ((u & 0x7f800000u) == 0) /* zero or subnormal */
        return (uint16_t)((u >> 16) & 0x8000);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
static inline float fx__bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The bf16 side of a pack: its words from W [N, K] (false: out of memory),
 * and fx__packed_gemm on them (each call rounds X to bf16 once). */
bool fx__bf16_pack_weights(fx_packed *p, const float *W);
void fx__bf16_packed_gemm(const fx_packed *p, int64_t M, const float *X, int64_t lda, float *Y,
                          int64_t ldc, fx_activation act);
/* The activations fx__packed_gemm applies after the store (sigmoid, tanh,
 * gelu, elu) on n outputs, with the elementwise ops' formulas; others
 * leave y as it is. */
void fx__pack_act_row(float *y, int n, fx_activation act);

/* For tests: 1 forces the portable bf16 kernel, 2 the AVX-512F one (bf16
 * widened to fp32 in registers), 3 AVX-512 BF16 (vdpbf16ps), each only when
 * the CPU has it, else the best below; 0 (default) picks the best. The name
 * of the kernel a bf16 product would use now: "avx512bf16", "avx512",
 * "portable". */
extern int fx__bf16_isa;
const char *fx__bf16_kernel_name(void);

/* The CPU backend's blas gemm_bf16 entry (engine/cpu/gemm_bf16.c). */
void cpu_gemm_bf16(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const fx_tensor *a, int64_t stride_a, const fx_tensor *b, int64_t stride_b,
                   float beta, fx_tensor *c, int64_t stride_c);

#endif
