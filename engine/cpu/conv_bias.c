/*
 * conv_bias.c - CPU kernels of the conv family (kern_conv.h; listed in
 * conv.c's table) that are element passes, not products: the channel bias
 * (fill, gradient) and the conv + ReLU fusion's loops (the clamp conv.c
 * applies to each block of the forward's output, and the masked gradient
 * with the bias gradient in one pass).
 */
#include "cpu.h"

/* The conv kernels' instruction set override (conv.c; tests set it): 0
 * best, 3 AVX-512, others below it. */
extern int fx__conv_isa;

#if defined(__x86_64__) && defined(__GNUC__)
#define FX_HAVE_X86_LOOPS 1
#endif

/*
 * The ReLU fusions' element loops, in 16-float vectors (one register with
 * AVX-512, four SSE ones without), written once and instantiated per
 * instruction set like the micro-kernels.
 *
 * cpu_conv_relu_rows: v = max(v, 0) over n floats (NaN -> 0, as the ReLU op does).
 * mask_row: m = d where y > 0, else 0, over l floats; returns their sum,
 * taken as cpu_channel_bias_backward's row_sum takes it (16 float lanes,
 * lane q summing the elements i with i % 16 == q, then the lanes and the
 * tail in double), so the fused and separate paths give the same bits.
 */
#define FX_RELU_LOOPS(SUF, ATTR)                                                                \
    ATTR static void relu_rows_##SUF(float *v, int64_t n)                                       \
    {                                                                                           \
        typedef float vf __attribute__((vector_size(64), aligned(4), may_alias));               \
        typedef int32_t vi __attribute__((vector_size(64), aligned(4), may_alias));             \
        int64_t i = 0;                                                                          \
        for (; i + 16 <= n; i += 16) {                                                          \
            vf x = *(vf *)(v + i);                                                              \
            *(vf *)(v + i) = (vf)((x > 0.0f) & (vi)x);                                          \
        }                                                                                       \
        for (; i < n; i++)                                                                      \
            v[i] = v[i] > 0.0f ? v[i] : 0.0f;                                                   \
    }                                                                                           \
    ATTR static double mask_row_##SUF(const float *d, const float *y, float *m, int64_t l)      \
    {                                                                                           \
        typedef float vf __attribute__((vector_size(64), aligned(4), may_alias));               \
        typedef int32_t vi __attribute__((vector_size(64), aligned(4), may_alias));             \
        vf lane = { 0 };                                                                        \
        int64_t i = 0;                                                                          \
        for (; i + 16 <= l; i += 16) {                                                          \
            vf v = (vf)((*(const vf *)(y + i) > 0.0f) & *(const vi *)(d + i));                  \
            *(vf *)(m + i) = v;                                                                 \
            lane += v;                                                                          \
        }                                                                                       \
        double r = 0.0;                                                                         \
        for (int q = 0; q < 16; q++)                                                            \
            r += lane[q];                                                                       \
        for (; i < l; i++) {                                                                    \
            float v = y[i] > 0.0f ? d[i] : 0.0f;                                                \
            m[i] = v;                                                                           \
            r += v;                                                                             \
        }                                                                                       \
        return r;                                                                               \
    }

FX_RELU_LOOPS(generic, )
#ifdef FX_HAVE_X86_LOOPS
FX_RELU_LOOPS(avx512, __attribute__((target("avx512f"))))
#endif

static bool use_avx512_loops(void)
{
#ifdef FX_HAVE_X86_LOOPS
    return __builtin_cpu_supports("avx512f") && (fx__conv_isa == 0 || fx__conv_isa == 3);
#else
    return false;
#endif
}

void cpu_conv_relu_rows(float *v, int64_t n)
{
#ifdef FX_HAVE_X86_LOOPS
    if (use_avx512_loops()) {
        relu_rows_avx512(v, n);
        return;
    }
#endif
    relu_rows_generic(v, n);
}

static double mask_row(const float *d, const float *y, float *m, int64_t l)
{
#ifdef FX_HAVE_X86_LOOPS
    if (use_avx512_loops())
        return mask_row_avx512(d, y, m, l);
#endif
    return mask_row_generic(d, y, m, l);
}

void cpu_channel_bias_fill(const fx_tensor *b, fx_tensor *y, int64_t n, int64_t c, int64_t l)
{
    const float *B = b ? fx_f32(b) : NULL;
    float *Y = fx_f32(y);
    FX_PFOR(n * c * l, p, n * c, {
        float v = B ? B[p % c] : 0.0f, *row = Y + p * l;
        for (int64_t i = 0; i < l; i++)
            row[i] = v;
    });
}

/* The sum of a row in 16 float lanes (vectorised; one accumulator would be
 * a serial chain of adds), the lanes and the tail added in double. */
static double row_sum(const float *row, int64_t l)
{
    float lane[16] = { 0 };
    int64_t i = 0;
    for (; i + 16 <= l; i += 16)
        for (int k = 0; k < 16; k++)
            lane[k] += row[i + k];
    double s = 0.0;
    for (int k = 0; k < 16; k++)
        s += lane[k];
    for (; i < l; i++)
        s += row[i];
    return s;
}

/* Per channel, a sum over samples of row sums. */
void cpu_channel_bias_backward(const fx_tensor *dy, fx_tensor *db, int64_t n, int64_t c,
                                      int64_t l)
{
    const float *D = fx_f32(dy);
    float *G = fx_f32(db);
    FX_PFOR(n * c * l, ch, c, {
        double s = 0.0;
        for (int64_t k = 0; k < n; k++)
            s += row_sum(D + (k * c + ch) * l, l);
        G[ch] += (float)s;
    });
}

/* dm = dy masked by y > 0, and per channel the sum of dm (rows summed as
 * cpu_channel_bias_backward sums them: see mask_row), in one pass. */
void cpu_relu_mask_bias_backward(const fx_tensor *dy, const fx_tensor *y, fx_tensor *dm,
                                        fx_tensor *db, int64_t n, int64_t c, int64_t l)
{
    const float *D = fx_f32(dy), *Y = fx_f32(y);
    float *M = fx_f32(dm), *G = db ? fx_f32(db) : NULL;
    FX_PFOR(n * c * l, ch, c, {
        double s = 0.0;
        for (int64_t k = 0; k < n; k++) {
            int64_t off = (k * c + ch) * l;
            s += mask_row(D + off, Y + off, M + off, l);
        }
        if (G)
            G[ch] += (float)s;
    });
}

