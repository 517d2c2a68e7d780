/*
 * optim.c - CPU optimizer kernels: one fused, elementwise update per kind.
 *
 * Every formula follows PyTorch's torch.optim implementation (defaults:
 * dampening 0, lr_decay 0, centered false, amsgrad false), because that is
 * what users compare their curves against. Weight decay is L2 added to the
 * gradient, g' = g + wd * p, for every kind except AdamW, whose decay is
 * decoupled (p *= 1 - lr * wd before the Adam update).
 *
 * p, g, s1 and s2 are contiguous f32 tensors of one shape (the optimizer
 * creates its state that way and checks the gradient before calling).
 * Coefficients are formed once in double and cast, so the inner loops are
 * plain float arithmetic that vectorises.
 */
#include "cpu.h"

/* Applies one update of the given kind to n elements of p with gradient g
 * and state s1 / s2 (pointers to the block's first element):
 *   SGD       p -= lr * g'
 *   MOMENTUM  s1 = mu * s1 + g';            p -= lr * s1
 *   NESTEROV  s1 = mu * s1 + g';            p -= lr * (g' + mu * s1)
 *   RMSPROP   s1 = alpha * s1 + (1 - alpha) * g'^2;  u = g' / (sqrt(s1) + eps);
 *             with momentum: s2 = mu * s2 + u, u = s2;   p -= lr * u
 *   ADAGRAD   s1 += g'^2;                   p -= lr * g' / (sqrt(s1) + eps)
 *   ADADELTA  s1 = rho * s1 + (1 - rho) * g'^2;
 *             d = sqrt(s2 + eps) / sqrt(s1 + eps) * g';
 *             s2 = rho * s2 + (1 - rho) * d^2;       p -= lr * d
 *   ADAM      s1 = b1 * s1 + (1 - b1) * g';  s2 = b2 * s2 + (1 - b2) * g'^2;
 *             p -= lr / bc1 * s1 / (sqrt(s2) / sqrt(bc2) + eps)
 *   ADAMW     p *= 1 - lr * wd, then ADAM with g (no L2 term).
 * S2 is NULL for RMSPROP without momentum and for the kinds with one slot.
 * The body is inlined into a baseline and an AVX-512 copy (step_block picks
 * one at run time). The AVX-512 copy is compiled without "fma", so both do
 * the same IEEE operations in the same order (no contraction): the update
 * is bit-identical on either path, only wider. */
static inline __attribute__((always_inline)) void
step_body(fx_optim_kind kind, const fx_optim_step_args *a, float *restrict P,
          const float *restrict G, float *restrict S1, float *restrict S2, int64_t n)
{
    const float lr = (float)a->lr, wd = (float)a->weight_decay, mu = (float)a->momentum;
    const float eps = (float)a->eps;

    switch (kind) {
    case FX_OPT_SGD:
        for (int64_t i = 0; i < n; i++)
            P[i] -= lr * (G[i] + wd * P[i]);
        break;

    case FX_OPT_MOMENTUM:
    case FX_OPT_NESTEROV: {
        /* PyTorch seeds the buffer with the first gradient; a zero buffer
         * gives the same value: mu * 0 + g. */
        const bool nesterov = kind == FX_OPT_NESTEROV;
        for (int64_t i = 0; i < n; i++) {
            float gi = G[i] + wd * P[i];
            float b = mu * S1[i] + gi;
            S1[i] = b;
            P[i] -= lr * (nesterov ? gi + mu * b : b); /* loop-invariant branch */
        }
        break;
    }

    case FX_OPT_RMSPROP: {
        const float al = (float)a->alpha, one_al = (float)(1.0 - a->alpha);
        for (int64_t i = 0; i < n; i++) {
            float gi = G[i] + wd * P[i];
            float sq = al * S1[i] + one_al * gi * gi;
            S1[i] = sq;
            float u = gi / (sqrtf(sq) + eps);
            if (S2) { /* loop-invariant: the compiler unswitches it */
                u = mu * S2[i] + u;
                S2[i] = u;
            }
            P[i] -= lr * u;
        }
        break;
    }

    case FX_OPT_ADAGRAD:
        for (int64_t i = 0; i < n; i++) {
            float gi = G[i] + wd * P[i];
            float sum = S1[i] + gi * gi;
            S1[i] = sum;
            P[i] -= lr * gi / (sqrtf(sum) + eps);
        }
        break;

    case FX_OPT_ADADELTA: {
        const float rho = (float)a->rho, one_rho = (float)(1.0 - a->rho);
        for (int64_t i = 0; i < n; i++) {
            float gi = G[i] + wd * P[i];
            float sq = rho * S1[i] + one_rho * gi * gi;
            S1[i] = sq;
            float d = sqrtf(S2[i] + eps) / sqrtf(sq + eps) * gi;
            S2[i] = rho * S2[i] + one_rho * d * d;
            P[i] -= lr * d;
        }
        break;
    }

    case FX_OPT_ADAM:
    case FX_OPT_ADAMW: {
        /* Adam: L2 term l2 = wd, no decay factor. AdamW: l2 = 0 and every
         * weight shrinks by 1 - lr * wd before the moment update. */
        const bool decoupled = kind == FX_OPT_ADAMW;
        const float l2 = decoupled ? 0.0f : wd;
        const float shrink = decoupled ? (float)(1.0 - a->lr * a->weight_decay) : 1.0f;
        const float b1 = (float)a->beta1, one_b1 = (float)(1.0 - a->beta1);
        const float b2 = (float)a->beta2, one_b2 = (float)(1.0 - a->beta2);
        const float step_size = (float)(a->lr / a->bias_c1);
        const float inv_sqrt_bc2 = (float)(1.0 / sqrt(a->bias_c2));
        for (int64_t i = 0; i < n; i++) {
            float pi = P[i] * shrink;
            float gi = G[i] + l2 * P[i];
            float m = b1 * S1[i] + one_b1 * gi;
            float v = b2 * S2[i] + one_b2 * gi * gi;
            S1[i] = m;
            S2[i] = v;
            P[i] = pi - step_size * m / (sqrtf(v) * inv_sqrt_bc2 + eps);
        }
        break;
    }

    default:
        break; /* fx_optim_create rejects unknown kinds */
    }
}

static void step_block_base(fx_optim_kind kind, const fx_optim_step_args *a, float *restrict P,
                            const float *restrict G, float *restrict S1, float *restrict S2,
                            int64_t n)
{
    step_body(kind, a, P, G, S1, S2, n);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void
step_block_avx512(fx_optim_kind kind, const fx_optim_step_args *a, float *restrict P,
                  const float *restrict G, float *restrict S1, float *restrict S2, int64_t n)
{
    step_body(kind, a, P, G, S1, S2, n);
}
#endif

/* The mlp's Adam update over its 535k parameters was 9% of a training step
 * with 4-wide SSE; 16-wide halves it where the CPU has AVX-512. */
static void step_block(fx_optim_kind kind, const fx_optim_step_args *a, float *P, const float *G,
                       float *S1, float *S2, int64_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static int isa = -1; /* 0 baseline, 1 AVX-512; racing threads store the same value */
    int v = __atomic_load_n(&isa, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") ? 1 : 0;
        __atomic_store_n(&isa, v, __ATOMIC_RELAXED);
    }
    if (v) {
        step_block_avx512(kind, a, P, G, S1, S2, n);
        return;
    }
#endif
    step_block_base(kind, a, P, G, S1, S2, n);
}

/* Splits the update into blocks of FX_GRAIN elements, run on the engine's
 * threads when there are several. A tensor of one block calls step_block
 * directly instead of entering an OpenMP region with a false if-clause:
 * libgomp allocates a team for every region it enters, even a serial one,
 * and a steady-state optimizer step must not allocate. */
void cpu_optim_step(fx_optim_kind kind, const fx_optim_step_args *a, fx_tensor *p,
                    const fx_tensor *g, fx_tensor *s1, fx_tensor *s2)
{
    const int64_t n = fx_tensor_numel(p), nblocks = (n + FX_GRAIN - 1) / FX_GRAIN;
    float *P = fx_f32(p);
    const float *G = fx_f32(g);
    float *S1 = s1 ? fx_f32(s1) : NULL;
    float *S2 = s2 ? fx_f32(s2) : NULL;
    if (nblocks <= 1 || fx__num_threads <= 1) {
        step_block(kind, a, P, G, S1, S2, n);
        return;
    }
    FX_OMP(parallel for num_threads(fx__num_threads) schedule(static))
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t lo = b * FX_GRAIN, len = n - lo < FX_GRAIN ? n - lo : FX_GRAIN;
        step_block(kind, a, P + lo, G + lo, S1 ? S1 + lo : NULL, S2 ? S2 + lo : NULL, len);
    }
}
