/* rnn.cu - the recurrence of RNN / GRU / LSTM over variable-length
 * sequences (kern_rnn.h): per step one cuBLAS product with W_hh and one
 * fused cell kernel (a thread per (sample, unit)), all on the device's
 * stream; lengths are read on the device. Own kernels; cuDNN RNN is not
 * used (the op owns the input and weight products). */
#include "common.h"

struct RG {
    int64_t N, T, H, GH, Y, col;
    const int64_t *len;
    bool reverse;
    int kind;
};

static RG rg_of(const fx_rnn_seq_args *a)
{
    RG g;
    g.N = a->hs->shape[1];
    g.H = a->hs->shape[2];
    g.T = a->xg ? a->xg->shape[1] : a->dxg->shape[1];
    g.GH = a->xg ? a->xg->shape[2] : a->dxg->shape[2];
    g.Y = a->y ? a->y->shape[2] : a->dy->shape[2];
    g.col = a->col;
    g.len = (const int64_t *)fx_data(a->lengths);
    g.reverse = a->reverse;
    g.kind = (int)a->kind;
    return g;
}

__device__ static inline float sig(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ static inline int64_t pos_of(const RG &g, int64_t n, int64_t s)
{
    return g.reverse ? g.len[n] - 1 - s : s;
}

/* Step s, thread (n, j). */
__global__ void k_cell_fwd(RG g, int64_t s, const float *XG, const float *HG, const float *B,
                           const float *Hp, float *Hn, const float *Cp, float *Cn, float *Act,
                           float *Y)
{
    GRID_LOOP(e, g.N * g.H)
    {
        int64_t n = e / g.H, j = e % g.H, H = g.H;
        if (s >= g.len[n]) {
            Hn[e] = Hp[e];
            if (Cn)
                Cn[e] = Cp[e];
            continue;
        }
        int64_t t = pos_of(g, n, s);
        const float *xg = XG + (n * g.T + t) * g.GH, *hg = HG + n * g.GH;
        float *y = Y + (n * g.T + t) * g.Y + g.col, h;
        if (g.kind == FX_CELL_LSTM) {
            float *act = Act + n * 4 * H;
            float pre[4];
            for (int k = 0; k < 4; k++)
                pre[k] = xg[k * H + j] + hg[k * H + j] + (B ? B[k * H + j] : 0.0f);
            float i = sig(pre[0]), f = sig(pre[1]), gg = tanhf(pre[2]), o = sig(pre[3]);
            float c = f * Cp[e] + i * gg;
            h = o * tanhf(c);
            act[j] = i;
            act[H + j] = f;
            act[2 * H + j] = gg;
            act[3 * H + j] = o;
            Cn[e] = c;
        } else if (g.kind == FX_CELL_GRU) {
            float *act = Act + n * 4 * H;
            float r0 = hg[j] + (B ? B[j] : 0.0f), z0 = hg[H + j] + (B ? B[H + j] : 0.0f);
            float hn = hg[2 * H + j] + (B ? B[2 * H + j] : 0.0f);
            float r = sig(xg[j] + r0), z = sig(xg[H + j] + z0);
            float nn = tanhf(xg[2 * H + j] + r * hn);
            h = (1.0f - z) * nn + z * Hp[e];
            act[j] = r;
            act[H + j] = z;
            act[2 * H + j] = nn;
            act[3 * H + j] = hn;
        } else {
            float v = xg[j] + hg[j] + (B ? B[j] : 0.0f);
            h = g.kind == FX_CELL_RELU ? (v > 0.0f ? v : 0.0f) : tanhf(v);
        }
        Hn[e] = h;
        y[j] = h;
    }
}

static void cu_rnn_forward(const fx_rnn_seq_args *a)
{
    RG g = rg_of(a);
    int dev = tdev(a->hs);
    int64_t N = g.N, H = g.H, GH = g.GH;
    float *HS = F(a->hs), *HG = F(a->hg);
    for (int64_t s = 0; s < a->steps; s++) {
        const float *Hp = HS + s * N * H;
        if (s == 0 && a->h0_zero)
            CU_CHECK(dev, cudaMemsetAsync(HG, 0, (size_t)(N * GH) * sizeof(float),
                                          fx__cuda_stream(dev)));
        else /* hg [N, GH] = h [N, H] W_hh^T */
            fx__cuda_gemm_rm(dev, false, true, N, GH, H, 1.0f, Hp, H, F(a->w_hh), H, 0.0f, HG, GH);
        LAUNCH(dev, N * H, k_cell_fwd, g, s, F(a->xg), HG, a->b_hh ? F(a->b_hh) : NULL, Hp,
               HS + (s + 1) * N * H, a->cs ? F(a->cs) + s * N * H : NULL,
               a->cs ? F(a->cs) + (s + 1) * N * H : NULL,
               a->act ? F(a->act) + s * N * 4 * H : NULL, F(a->y));
    }
}

__global__ void k_cell_bwd(RG g, int64_t s, const float *DY, const float *Hp, const float *Hn,
                           const float *Cp, const float *Cn, const float *Act, float *DH,
                           float *DC, float *DXG, float *DHG)
{
    GRID_LOOP(e, g.N * g.H)
    {
        int64_t n = e / g.H, j = e % g.H, H = g.H;
        float *dhg = DHG + n * g.GH;
        if (s >= g.len[n]) {
            for (int k = 0; k < g.GH / H; k++)
                dhg[k * H + j] = 0.0f;
            continue;
        }
        int64_t t = pos_of(g, n, s);
        float *dxg = DXG + (n * g.T + t) * g.GH;
        float d = DH[e] + DY[(n * g.T + t) * g.Y + g.col + j];
        if (g.kind == FX_CELL_LSTM) {
            const float *act = Act + n * 4 * H;
            float i = act[j], f = act[H + j], gg = act[2 * H + j], o = act[3 * H + j];
            float tc = tanhf(Cn[e]);
            float dcj = DC[e] + d * o * (1.0f - tc * tc);
            float v[4] = { dcj * gg * i * (1.0f - i), dcj * Cp[e] * f * (1.0f - f),
                           dcj * i * (1.0f - gg * gg), d * tc * o * (1.0f - o) };
            for (int k = 0; k < 4; k++)
                dxg[k * H + j] = dhg[k * H + j] = v[k];
            DC[e] = dcj * f;
            DH[e] = 0.0f;
        } else if (g.kind == FX_CELL_GRU) {
            const float *act = Act + n * 4 * H;
            float r = act[j], z = act[H + j], nn = act[2 * H + j], hn = act[3 * H + j];
            float dpn = d * (1.0f - z) * (1.0f - nn * nn);
            float dpz = d * (Hp[e] - nn) * z * (1.0f - z);
            float dpr = dpn * hn * r * (1.0f - r);
            dxg[j] = dhg[j] = dpr;
            dxg[H + j] = dhg[H + j] = dpz;
            dxg[2 * H + j] = dpn;
            dhg[2 * H + j] = dpn * r;
            DH[e] = d * z;
        } else {
            float h = Hn[e];
            float v = g.kind == FX_CELL_RELU ? (h > 0.0f ? d : 0.0f) : d * (1.0f - h * h);
            dxg[j] = dhg[j] = v;
            DH[e] = 0.0f;
        }
    }
}

static void cu_rnn_backward(const fx_rnn_seq_args *a)
{
    RG g = rg_of(a);
    int dev = tdev(a->hs);
    int64_t N = g.N, H = g.H, GH = g.GH;
    const float *HS = F(a->hs);
    for (int64_t s = a->steps - 1; s >= 0; s--) {
        float *DHG = F(a->dhg) + s * N * GH;
        LAUNCH(dev, N * H, k_cell_bwd, g, s, F(a->dy), HS + s * N * H, HS + (s + 1) * N * H,
               a->cs ? F(a->cs) + s * N * H : NULL, a->cs ? F(a->cs) + (s + 1) * N * H : NULL,
               a->act ? F(a->act) + s * N * 4 * H : NULL, F(a->dh), a->dc ? F(a->dc) : NULL,
               F(a->dxg), DHG);
        if (s > 0 || a->want_dh0) /* dh [N, H] += dhg [N, GH] W_hh [GH, H] */
            fx__cuda_gemm_rm(dev, false, false, N, H, GH, 1.0f, DHG, GH, F(a->w_hh), H, 1.0f,
                             F(a->dh), H);
    }
}

__global__ void k_mask_steps(const float *x, const int64_t *len, float *y, int64_t T, int64_t C,
                             int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t t = (e / C) % T, n = e / (C * T);
        y[e] = t < len[n] ? x[e] : 0.0f;
    }
}

static void cu_rnn_mask_steps(const fx_tensor *x, const fx_tensor *lengths, fx_tensor *y)
{
    int64_t N = x->shape[0], T = x->shape[1], C = x->shape[2], total = N * T * C;
    LAUNCH(tdev(x), total, k_mask_steps, F(x), (const int64_t *)fx_data(lengths), F(y), T, C,
           total);
}

const fx_rnn_kernels fx__cuda_rnn = {
    .forward = cu_rnn_forward,
    .backward = cu_rnn_backward,
    .mask_steps = cu_rnn_mask_steps,
    .gates = NULL, /* the input gates run on cuBLAS (the op's bias fill and gemm) */
    .grad_input = NULL,  /* the input gradient too */
    .grad_weights = NULL, /* and the weight gradients */
    .fused_gates = false, /* the input gates come formed (xg) */
    .dense_lstm = false, /* the general backward (dhg per step) */
};
