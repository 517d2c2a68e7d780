/*
 * conv.cu - convolution as im2col + cuBLAS, and the channel bias. The conv
 * family's table is here; its pooling kernels are in pool.cu (as on the CPU:
 * cpu/conv.c, cpu/pool.c).
 *
 * A chunk of S samples is unrolled into col [C*KH*KW, S*OH*OW] (row
 * (c, a, b), column (s, i, j)), so each group's product is one gemm over all
 * S samples: Y' [O, S*OHW] = W [O, Cg*KK] col. Y' is then permuted into y
 * [S, O, OHW]. Backward data forms dcol = W^T dY' and folds it back with a
 * gather (each x element sums its taps: no atomics); backward weight is
 * dW += dY' col^T. The workspace holds col and Y' for one chunk.
 * cuDNN is not used yet (own kernels on every build).
 */
#include "common.h"

#define WS_MAX_FLOATS ((int64_t)1 << 26) /* 256 MiB of workspace per chunk at most */

static int64_t kk(const fx_conv_geom *g) { return g->kh * g->kw; }

/* Samples per chunk: all when they fit WS_MAX_FLOATS, else fewer (>= 1). */
static int64_t chunk_of(const fx_conv_geom *g)
{
    int64_t per = (g->c * kk(g) + g->o) * g->oh * g->ow;
    if (per <= 0)
        return g->n > 0 ? g->n : 1;
    int64_t s = WS_MAX_FLOATS / per;
    if (s < 1)
        s = 1;
    return s < g->n ? s : (g->n > 0 ? g->n : 1);
}

static int64_t cu_conv2d_workspace(const fx_conv_geom *g)
{
    return chunk_of(g) * (g->c * kk(g) + g->o) * g->oh * g->ow;
}

/* Geometry by value for kernels. */
struct CG {
    int64_t c, h, w, o, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw;
};

static CG cg_of(const fx_conv_geom *g)
{
    CG c = { g->c, g->h, g->w, g->o, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw };
    return c;
}

/* col[(c,a,b)][(s,i,j)] = x[n0+s, c, i*sh-ph+a*dh, j*sw-pw+b*dw] (0 outside). */
__global__ void k_im2col(const float *x, float *col, CG g, int64_t n0, int64_t S, int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t ohw = g.oh * g.ow, cols = S * ohw;
        int64_t row = e / cols, q = e % cols;
        int64_t s = q / ohw, p = q % ohw, i = p / g.ow, j = p % g.ow;
        int64_t c = row / (g.kh * g.kw), t = row % (g.kh * g.kw), a = t / g.kw, b = t % g.kw;
        int64_t hh = i * g.sh - g.ph + a * g.dh, ww = j * g.sw - g.pw + b * g.dw;
        col[e] = (hh >= 0 && hh < g.h && ww >= 0 && ww < g.w)
                     ? x[(((n0 + s) * g.c + c) * g.h + hh) * g.w + ww]
                     : 0.0f;
    }
}

/* dx[n0+s, c, h, w] += sum over taps (a, b) whose output position (i, j) is
 * on the grid of dcol[(c,a,b)][(s,i,j)]. */
__global__ void k_col2im(const float *col, float *dx, CG g, int64_t n0, int64_t S, int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t ww = e % g.w, hh = (e / g.w) % g.h, c = (e / (g.w * g.h)) % g.c,
                s = e / (g.w * g.h * g.c);
        int64_t ohw = g.oh * g.ow, cols = S * ohw;
        float acc = 0.0f;
        for (int64_t a = 0; a < g.kh; a++) {
            int64_t ti = hh + g.ph - a * g.dh;
            if (ti < 0 || ti % g.sh)
                continue;
            int64_t i = ti / g.sh;
            if (i >= g.oh)
                continue;
            for (int64_t b = 0; b < g.kw; b++) {
                int64_t tj = ww + g.pw - b * g.dw;
                if (tj < 0 || tj % g.sw)
                    continue;
                int64_t j = tj / g.sw;
                if (j >= g.ow)
                    continue;
                acc += col[((c * g.kh + a) * g.kw + b) * cols + s * ohw + i * g.ow + j];
            }
        }
        dx[(((n0 + s) * g.c + c) * g.h + hh) * g.w + ww] += acc;
    }
}

/* y [S, O, OHW] (=|+=) Y' [O, S*OHW] (+ bias). */
__global__ void k_unpermute(const float *yp, float *y, const float *bias, int64_t O, int64_t S,
                            int64_t ohw, bool acc, int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t p = e % ohw, o = (e / ohw) % O, s = e / (ohw * O);
        float v = yp[o * S * ohw + s * ohw + p] + (bias ? bias[o] : 0.0f);
        y[e] = acc ? y[e] + v : v;
    }
}

/* Y' [O, S*OHW] = dy [S, O, OHW]. */
__global__ void k_permute(const float *dy, float *yp, int64_t O, int64_t S, int64_t ohw,
                          int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t p = e % ohw, o = (e / ohw) % O, s = e / (ohw * O);
        yp[o * S * ohw + s * ohw + p] = dy[e];
    }
}

enum { FWD, BWD_DATA, BWD_WEIGHT };

/* The three passes share the chunk loop; io: x or dx, w or dw, y or dy. */
static void conv_run(int mode, const fx_conv_geom *g, float *X, float *W, float *Y,
                     const float *bias, bool accumulate, fx_tensor *ws)
{
    int dev = tdev(ws);
    CG c = cg_of(g);
    int64_t S0 = chunk_of(g), ohw = g->oh * g->ow, ck = g->c * kk(g);
    int64_t G = g->groups, og = g->o / G, cgk = (g->c / G) * kk(g);
    float *col = F(ws);
    for (int64_t n0 = 0; n0 < g->n; n0 += S0) {
        int64_t S = g->n - n0 < S0 ? g->n - n0 : S0, cols = S * ohw;
        float *yp = col + ck * cols;
        if (mode != BWD_DATA)
            LAUNCH(dev, ck * cols, k_im2col, X, col, c, n0, S, ck * cols);
        if (mode != FWD)
            LAUNCH(dev, g->o * cols, k_permute, Y + n0 * g->o * ohw, yp, g->o, S, ohw,
                   g->o * cols);
        for (int64_t gi = 0; gi < G; gi++) {
            float *Wg = W + gi * og * cgk, *colg = col + gi * cgk * cols, *ypg = yp + gi * og * cols;
            if (mode == FWD) /* Y'_g [og, cols] = W_g [og, cgk] col_g [cgk, cols] */
                fx__cuda_gemm_rm(dev, false, false, og, cols, cgk, 1.0f, Wg, cgk, colg, cols, 0.0f,
                                 ypg, cols);
            else if (mode == BWD_DATA) /* dcol_g [cgk, cols] = W_g^T dY'_g */
                fx__cuda_gemm_rm(dev, true, false, cgk, cols, og, 1.0f, Wg, cgk, ypg, cols, 0.0f,
                                 colg, cols);
            else /* dW_g [og, cgk] += dY'_g [og, cols] col_g^T */
                fx__cuda_gemm_rm(dev, false, true, og, cgk, cols, 1.0f, ypg, cols, colg, cols, 1.0f,
                                 Wg, cgk);
        }
        if (mode == FWD)
            LAUNCH(dev, g->o * cols, k_unpermute, yp, Y + n0 * g->o * ohw, bias, g->o, S, ohw,
                   accumulate, g->o * cols);
        else if (mode == BWD_DATA)
            LAUNCH(dev, S * g->c * g->h * g->w, k_col2im, col, X, c, n0, S,
                   S * g->c * g->h * g->w);
    }
}

static void cu_conv2d(const fx_conv_geom *g, const fx_tensor *x, const fx_tensor *w,
                      const fx_tensor *b, fx_tensor *y, bool accumulate, fx_tensor *ws)
{
    conv_run(FWD, g, F(x), F(w), F(y), b ? F(b) : NULL, accumulate, ws);
}

static void cu_conv2d_backward_data(const fx_conv_geom *g, const fx_tensor *dy, const fx_tensor *w,
                                    fx_tensor *dx, fx_tensor *ws)
{
    conv_run(BWD_DATA, g, F(dx), F(w), F(dy), NULL, true, ws);
}

static void cu_conv2d_backward_weight(const fx_conv_geom *g, const fx_tensor *x,
                                      const fx_tensor *dy, fx_tensor *dw, fx_tensor *ws)
{
    conv_run(BWD_WEIGHT, g, F(x), F(dw), F(dy), NULL, true, ws);
}

__global__ void k_cbias_fill(const float *b, float *y, int64_t c, int64_t l, int64_t total)
{
    GRID_LOOP(e, total) y[e] = b ? b[(e / l) % c] : 0.0f;
}

static void cu_channel_bias_fill(const fx_tensor *b, fx_tensor *y, int64_t n, int64_t c, int64_t l)
{
    int64_t total = n * c * l;
    LAUNCH(tdev(y), total, k_cbias_fill, b ? F(b) : NULL, F(y), c, l, total);
}

/* One block per channel. */
__global__ void k_cbias_bw(const float *dy, float *db, int64_t n, int64_t c, int64_t l)
{
    int64_t ch = blockIdx.x;
    double s = 0.0;
    for (int64_t e = threadIdx.x; e < n * l; e += blockDim.x)
        s += dy[((e / l) * c + ch) * l + e % l];
    s = block_sum(s);
    if (threadIdx.x == 0)
        db[ch] += (float)s;
}

static void cu_channel_bias_backward(const fx_tensor *dy, fx_tensor *db, int64_t n, int64_t c,
                                     int64_t l)
{
    int dev = tdev(dy);
    if (!c)
        return;
    k_cbias_bw<<<(unsigned)c, TPB, 0, fx__cuda_stream(dev)>>>(F(dy), F(db), n, c, l);
    CU_LAUNCHED(dev);
}

const fx_conv_kernels fx__cuda_conv = {
    .conv2d_workspace = cu_conv2d_workspace,
    .conv2d = cu_conv2d,
    .conv2d_backward_data = cu_conv2d_backward_data,
    .conv2d_backward_data_set = NULL, /* the op zero-fills and adds */
    .conv2d_backward_weight = cu_conv2d_backward_weight,
    .channel_bias_fill = cu_channel_bias_fill,
    .channel_bias_backward = cu_channel_bias_backward,
    .pool2d = cu_pool2d,
    .pool2d_backward = cu_pool2d_backward,
    .pool2d_backward_set = NULL, /* the op zero-fills and adds */
    /* the conv + ReLU fusions are CPU-only: the ops run conv2d and ReLU */
    .conv2d_relu = NULL,
    .relu_mask_bias_backward = NULL,
    .conv2d_backward_weight_relu = NULL,
};
