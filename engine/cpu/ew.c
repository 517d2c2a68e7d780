/* ew.c - elementwise kernels: unary, binary with broadcasting, where,
 * dropout masks, axpy. */
#include "cpu.h"

void cpu_axpy(float alpha, const fx_tensor *x, fx_tensor *y)
{
    int64_t n = fx_tensor_numel(x);
    const float *X = fx_f32(x);
    float *Y = fx_f32(y);
    FX_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++)
        Y[i] += alpha * X[i];
}
