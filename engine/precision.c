/* precision.c - a context's precision for dense-layer products (fp32 or
 * bf16; fluxion.h, fx_ctx_set_precision) and whether the CPU has bf16. */
#include "internal.h"

#include <string.h>

const char *fx_precision_name(fx_precision p)
{
    switch (p) {
    case FX_PREC_F32: return "fp32";
    case FX_PREC_BF16: return "bf16";
    }
    return NULL;
}

bool fx_precision_parse(const char *s, fx_precision *out)
{
    if (!s || !out)
        return false;
    if (strcmp(s, "fp32") == 0)
        *out = FX_PREC_F32;
    else if (strcmp(s, "bf16") == 0)
        *out = FX_PREC_BF16;
    else
        return false;
    return true;
}

fx_status fx_ctx_set_precision(fx_ctx *ctx, fx_precision p)
{
    if (!ctx || (p != FX_PREC_F32 && p != FX_PREC_BF16))
        return FX_ERR_ARG;
    /* only the CPU backend has bf16 kernels (blas gemm_bf16) */
    if (p == FX_PREC_BF16 && (ctx->dev.type != FX_DEV_CPU || !ctx->be->blas->gemm_bf16))
        return FX_ERR_DEVICE;
    ctx->precision = p;
    return FX_OK;
}

fx_precision fx_ctx_precision(const fx_ctx *ctx) { return ctx ? ctx->precision : FX_PREC_F32; }

bool fx_cpu_has_bf16(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* what gemm_bf16.c's native kernel and packing need */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}
