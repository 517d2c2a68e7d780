/* ew.c - elementwise kernels: unary, binary with broadcasting, where,
 * dropout masks, axpy. Unary and same-shape binary loops run in parallel;
 * broadcasting loops walk the index space with fx_iter. */
#include "cpu.h"

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K 0.044715f
#define RSQRT2 0.7071067811865476f     /* 1/sqrt(2) */
#define TWO_RSQRTPI 1.1283791670955126f /* 2/sqrt(pi), erf's slope at 0 */
#define RSQRT2PI 0.3989422804014327f    /* 1/sqrt(2 pi), the normal density at 0 */

/* Expands to one parallel loop per op so the compiler can vectorise each. */
#define MAP(expr)                                                                                  \
    do {                                                                                           \
        FX_PFOR(n, i, n, float v = X[i]; Y[i] = (expr););                                          \
    } while (0)

static int64_t count_nonfinite(const float *p, int64_t n)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !isfinite(p[i]);
    return bad;
}

int64_t cpu_unary(fx_unary_op op, float a, float b, const fx_tensor *x, fx_tensor *y)
{
    int64_t n = fx_tensor_numel(x);
    const float *X = fx_f32(x);
    float *Y = fx_f32(y);
    switch (op) {
    case FX_UN_NEG: MAP(-v); break;
    case FX_UN_SCALE: MAP(a * v); break;
    case FX_UN_ADD_SCALAR: MAP(v + a); break;
    case FX_UN_EXP: MAP(expf(v)); break;
    case FX_UN_LOG: MAP(logf(v)); break;
    case FX_UN_SQRT: MAP(sqrtf(v)); break;
    case FX_UN_POW: MAP(powf(v, a)); break;
    case FX_UN_ABS: MAP(fabsf(v)); break;
    case FX_UN_RELU: MAP(v > 0.0f ? v : 0.0f); break;
    case FX_UN_LEAKY_RELU: MAP(v > 0.0f ? v : a * v); break;
    case FX_UN_ELU: MAP(v > 0.0f ? v : a * expm1f(v)); break;
    case FX_UN_GELU: MAP(0.5f * v * (1.0f + tanhf(GELU_C * (v + GELU_K * v * v * v)))); break;
    case FX_UN_SIGMOID:
        MAP(v >= 0.0f ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v)));
        break;
    case FX_UN_TANH: MAP(tanhf(v)); break;
    case FX_UN_CLAMP: MAP(v < a ? a : (v > b ? b : v)); break;
    case FX_UN_ERF: MAP(erff(v)); break;
    /* x Phi(x) with Phi = erfc(-x/sqrt2)/2: no cancellation for x << 0 */
    case FX_UN_GELU_EXACT: MAP(0.5f * v * erfcf(-v * RSQRT2)); break;
    default: return n;
    }
    switch (op) { /* only these can turn finite inputs into inf/nan */
    case FX_UN_EXP:
    case FX_UN_LOG:
    case FX_UN_SQRT:
    case FX_UN_POW:
    case FX_UN_SCALE:
    case FX_UN_ADD_SCALAR: return count_nonfinite(Y, n);
    default: return 0;
    }
}

/* dx += f'(x) * dy, with y = f(x) available for ops whose derivative is
 * cheapest in terms of the output. */
#define GRAD(expr)                                                                                 \
    do {                                                                                           \
        FX_PFOR(n, i, n, float v = X[i], o = Y[i]; (void)v; (void)o; DX[i] += (expr)*DY[i];);      \
    } while (0)

void cpu_unary_backward(fx_unary_op op, float a, float b, const fx_tensor *x, const fx_tensor *y,
                        const fx_tensor *dy, fx_tensor *dx)
{
    int64_t n = fx_tensor_numel(x);
    const float *X = fx_f32(x), *Y = fx_f32(y), *DY = fx_f32(dy);
    float *DX = fx_f32(dx);
    switch (op) {
    case FX_UN_NEG: GRAD(-1.0f); break;
    case FX_UN_SCALE: GRAD(a); break;
    case FX_UN_ADD_SCALAR: GRAD(1.0f); break;
    case FX_UN_EXP: GRAD(o); break;
    case FX_UN_LOG: GRAD(1.0f / v); break;
    case FX_UN_SQRT: GRAD(0.5f / o); break;
    case FX_UN_POW: GRAD(a * powf(v, a - 1.0f)); break;
    case FX_UN_ABS: GRAD(v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f)); break;
    case FX_UN_RELU: GRAD(v > 0.0f ? 1.0f : 0.0f); break;
    case FX_UN_LEAKY_RELU: GRAD(v > 0.0f ? 1.0f : a); break;
    case FX_UN_ELU: GRAD(v > 0.0f ? 1.0f : o + a); break;
    case FX_UN_GELU: {
        FX_PFOR(n, i, n, float v = X[i], t = tanhf(GELU_C * (v + GELU_K * v * v * v));
                float d = 0.5f * (1.0f + t) +
                          0.5f * v * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_K * v * v);
                DX[i] += d * DY[i];);
        break;
    }
    case FX_UN_SIGMOID: GRAD(o * (1.0f - o)); break;
    case FX_UN_TANH: GRAD(1.0f - o * o); break;
    case FX_UN_CLAMP: GRAD((v >= a && v <= b) ? 1.0f : 0.0f); break;
    case FX_UN_ERF: GRAD(TWO_RSQRTPI * expf(-v * v)); break;
    /* Phi(x) + x phi(x) */
    case FX_UN_GELU_EXACT:
        GRAD(0.5f * erfcf(-v * RSQRT2) + v * RSQRT2PI * expf(-0.5f * v * v));
        break;
    default: break;
    }
}

static inline float bin_apply(fx_binary_op op, float x, float y)
{
    switch (op) {
    case FX_BIN_ADD: return x + y;
    case FX_BIN_SUB: return x - y;
    case FX_BIN_MUL: return x * y;
    default: return x / y;
    }
}

/* Same-shape contiguous operands: one flat loop per op. */
#define ZIP(expr)                                                                                  \
    do {                                                                                           \
        FX_PFOR(n, i, n, O[i] = (expr););                                                          \
    } while (0)

int64_t cpu_binary(fx_binary_op op, const fx_tensor *a, const fx_tensor *b, fx_tensor *out)
{
    int64_t n = fx_tensor_numel(out);
    const float *A = fx_f32(a), *B = fx_f32(b);
    float *O = fx_f32(out);
    if (fx_tensor_numel(a) == n && fx_tensor_numel(b) == n) {
        switch (op) {
        case FX_BIN_ADD: ZIP(A[i] + B[i]); break;
        case FX_BIN_SUB: ZIP(A[i] - B[i]); break;
        case FX_BIN_MUL: ZIP(A[i] * B[i]); break;
        default: ZIP(A[i] / B[i]); break;
        }
    } else if (fx_tensor_numel(b) == 1) {
        float s = B[0];
        switch (op) {
        case FX_BIN_ADD: ZIP(A[i] + s); break;
        case FX_BIN_SUB: ZIP(A[i] - s); break;
        case FX_BIN_MUL: ZIP(A[i] * s); break;
        default: ZIP(A[i] / s); break;
        }
    } else {
        int64_t sa[FX_MAX_DIMS], sb[FX_MAX_DIMS];
        fx_bcast_strides(a, out->shape, sa);
        fx_bcast_strides(b, out->shape, sb);
        fx_iter it;
        fx_iter_init(&it, out->ndim, out->shape, 2, (const int64_t *[]){sa, sb});
        int64_t k = 0;
        if (!it.done)
            do {
                const float *pa = A + it.off[0], *pb = B + it.off[1];
                for (int64_t i = 0; i < it.inner; i++)
                    O[k++] = bin_apply(op, pa[i * it.step[0]], pb[i * it.step[1]]);
            } while (fx_iter_next(&it));
    }
    return op == FX_BIN_DIV ? count_nonfinite(O, n) : 0;
}

/* Partial derivatives of out = a op b times dy, for one element. */
static inline void bin_grads(fx_binary_op op, float x, float y, float g, float *gx, float *gy)
{
    switch (op) {
    case FX_BIN_ADD:
        *gx = g;
        *gy = g;
        break;
    case FX_BIN_SUB:
        *gx = g;
        *gy = -g;
        break;
    case FX_BIN_MUL:
        *gx = g * y;
        *gy = g * x;
        break;
    default:
        *gx = g / y;
        *gy = -g * x / (y * y);
        break;
    }
}

void cpu_binary_backward(fx_binary_op op, const fx_tensor *a, const fx_tensor *b,
                         const fx_tensor *dy, fx_tensor *da, fx_tensor *db)
{
    int64_t n = fx_tensor_numel(dy);
    const float *A = fx_f32(a), *B = fx_f32(b), *G = fx_f32(dy);
    float *DA = da ? fx_f32(da) : NULL, *DB = db ? fx_f32(db) : NULL;
    if (fx_tensor_numel(a) == n && fx_tensor_numel(b) == n) {
        /* No broadcasting: every element is written once, so in parallel. */
        FX_PFOR(n, i, n, float gx, gy; bin_grads(op, A[i], B[i], G[i], &gx, &gy);
                if (DA) DA[i] += gx; if (DB) DB[i] += gy;);
        return;
    }
    /* Broadcast operands receive sums over their repeated positions; the walk
     * is sequential so those sums need no atomics. */
    int64_t sa[FX_MAX_DIMS], sb[FX_MAX_DIMS];
    fx_bcast_strides(a, dy->shape, sa);
    fx_bcast_strides(b, dy->shape, sb);
    fx_iter it;
    fx_iter_init(&it, dy->ndim, dy->shape, 2, (const int64_t *[]){sa, sb});
    int64_t k = 0;
    if (it.done)
        return;
    do {
        for (int64_t i = 0; i < it.inner; i++, k++) {
            int64_t ia = it.off[0] + i * it.step[0], ib = it.off[1] + i * it.step[1];
            float gx, gy;
            bin_grads(op, A[ia], B[ib], G[k], &gx, &gy);
            if (DA)
                DA[ia] += gx;
            if (DB)
                DB[ib] += gy;
        }
    } while (fx_iter_next(&it));
}

static inline bool cond_at(const fx_tensor *c, int64_t off)
{
    return c->dtype == FX_I32 ? ((const int32_t *)fx_data(c))[off] != 0
                              : ((const float *)fx_data(c))[off] != 0.0f;
}

void cpu_where(const fx_tensor *cond, const fx_tensor *a, const fx_tensor *b, fx_tensor *out)
{
    int64_t sc[FX_MAX_DIMS], sa[FX_MAX_DIMS], sb[FX_MAX_DIMS];
    fx_bcast_strides(cond, out->shape, sc);
    fx_bcast_strides(a, out->shape, sa);
    fx_bcast_strides(b, out->shape, sb);
    const float *A = fx_f32(a), *B = fx_f32(b);
    float *O = fx_f32(out);
    fx_iter it;
    fx_iter_init(&it, out->ndim, out->shape, 3, (const int64_t *[]){sc, sa, sb});
    int64_t k = 0;
    if (it.done)
        return;
    do {
        for (int64_t i = 0; i < it.inner; i++)
            O[k++] = cond_at(cond, it.off[0] + i * it.step[0]) ? A[it.off[1] + i * it.step[1]]
                                                               : B[it.off[2] + i * it.step[2]];
    } while (fx_iter_next(&it));
}

void cpu_where_backward(const fx_tensor *cond, const fx_tensor *dy, fx_tensor *da, fx_tensor *db)
{
    int64_t sc[FX_MAX_DIMS], sa[FX_MAX_DIMS] = {0}, sb[FX_MAX_DIMS] = {0};
    fx_bcast_strides(cond, dy->shape, sc);
    if (da)
        fx_bcast_strides(da, dy->shape, sa);
    if (db)
        fx_bcast_strides(db, dy->shape, sb);
    const float *G = fx_f32(dy);
    float *DA = da ? fx_f32(da) : NULL, *DB = db ? fx_f32(db) : NULL;
    fx_iter it;
    fx_iter_init(&it, dy->ndim, dy->shape, 3, (const int64_t *[]){sc, sa, sb});
    int64_t k = 0;
    if (it.done)
        return;
    do {
        for (int64_t i = 0; i < it.inner; i++, k++) {
            if (cond_at(cond, it.off[0] + i * it.step[0])) {
                if (DA)
                    DA[it.off[1] + i * it.step[1]] += G[k];
            } else if (DB) {
                DB[it.off[2] + i * it.step[2]] += G[k];
            }
        }
    } while (fx_iter_next(&it));
}

void cpu_dropout_mask(fx_tensor *mask, float p, uint64_t seed)
{
    int64_t n = fx_tensor_numel(mask);
    float *M = fx_f32(mask), keep = 1.0f / (1.0f - p);
    FX_PFOR(n, i, n, M[i] = fx_uniform_at(seed, (uint64_t)i) >= p ? keep : 0.0f;);
}

void cpu_axpy(float alpha, const fx_tensor *x, fx_tensor *y)
{
    int64_t n = fx_tensor_numel(x);
    const float *X = fx_f32(x);
    float *Y = fx_f32(y);
    FX_PFOR(n, i, n, Y[i] += alpha * X[i];);
}
