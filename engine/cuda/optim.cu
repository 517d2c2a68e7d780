/* optim.cu - one fused elementwise update per optimizer kind; the formulas
 * and their float coefficients are the CPU's (engine/cpu/optim.c). */
#include "common.h"

struct Coef {
    float lr, wd, mu, eps, al, one_al, rho, one_rho, l2, shrink, b1, one_b1, b2, one_b2,
        step_size, inv_sqrt_bc2;
};

__global__ void k_step(int kind, Coef c, float *P, const float *G, float *S1, float *S2, int64_t n)
{
    GRID_LOOP(i, n)
    {
        switch (kind) {
        case FX_OPT_SGD: P[i] -= c.lr * (G[i] + c.wd * P[i]); break;
        case FX_OPT_MOMENTUM:
        case FX_OPT_NESTEROV: {
            float gi = G[i] + c.wd * P[i], b = c.mu * S1[i] + gi;
            S1[i] = b;
            P[i] -= c.lr * (kind == FX_OPT_NESTEROV ? gi + c.mu * b : b);
            break;
        }
        case FX_OPT_RMSPROP: {
            float gi = G[i] + c.wd * P[i], sq = c.al * S1[i] + c.one_al * gi * gi;
            S1[i] = sq;
            float u = gi / (sqrtf(sq) + c.eps);
            if (S2) {
                u = c.mu * S2[i] + u;
                S2[i] = u;
            }
            P[i] -= c.lr * u;
            break;
        }
        case FX_OPT_ADAGRAD: {
            float gi = G[i] + c.wd * P[i], sum = S1[i] + gi * gi;
            S1[i] = sum;
            P[i] -= c.lr * gi / (sqrtf(sum) + c.eps);
            break;
        }
        case FX_OPT_ADADELTA: {
            float gi = G[i] + c.wd * P[i], sq = c.rho * S1[i] + c.one_rho * gi * gi;
            S1[i] = sq;
            float d = sqrtf(S2[i] + c.eps) / sqrtf(sq + c.eps) * gi;
            S2[i] = c.rho * S2[i] + c.one_rho * d * d;
            P[i] -= c.lr * d;
            break;
        }
        case FX_OPT_ADAM:
        case FX_OPT_ADAMW: {
            float pi = P[i] * c.shrink, gi = G[i] + c.l2 * P[i];
            float m = c.b1 * S1[i] + c.one_b1 * gi, v = c.b2 * S2[i] + c.one_b2 * gi * gi;
            S1[i] = m;
            S2[i] = v;
            P[i] = pi - c.step_size * m / (sqrtf(v) * c.inv_sqrt_bc2 + c.eps);
            break;
        }
        default: break;
        }
    }
}

static void cu_step(fx_optim_kind kind, const fx_optim_step_args *a, fx_tensor *p,
                    const fx_tensor *g, fx_tensor *s1, fx_tensor *s2)
{
    bool dec = kind == FX_OPT_ADAMW;
    Coef c;
    c.lr = (float)a->lr;
    c.wd = (float)a->weight_decay;
    c.mu = (float)a->momentum;
    c.eps = (float)a->eps;
    c.al = (float)a->alpha;
    c.one_al = (float)(1.0 - a->alpha);
    c.rho = (float)a->rho;
    c.one_rho = (float)(1.0 - a->rho);
    c.l2 = dec ? 0.0f : c.wd;
    c.shrink = dec ? (float)(1.0 - a->lr * a->weight_decay) : 1.0f;
    c.b1 = (float)a->beta1;
    c.one_b1 = (float)(1.0 - a->beta1);
    c.b2 = (float)a->beta2;
    c.one_b2 = (float)(1.0 - a->beta2);
    bool adam = kind == FX_OPT_ADAM || dec;
    c.step_size = adam ? (float)(a->lr / a->bias_c1) : 0.0f;
    c.inv_sqrt_bc2 = adam ? (float)(1.0 / sqrt(a->bias_c2)) : 0.0f;
    int64_t n = numel(p);
    LAUNCH(tdev(p), n, k_step, (int)kind, c, F(p), F(g), s1 ? F(s1) : NULL, s2 ? F(s2) : NULL, n);
}

const fx_optim_kernels fx__cuda_optim = {
    .step = cu_step,
};
