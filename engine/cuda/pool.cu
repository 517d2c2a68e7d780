/*
 * pool.cu - max and average pooling over 2-D planes, window or adaptive, and
 * their backward passes (kern_conv.h; listed in conv.cu's table).
 */
#include "common.h"

struct PG {
    int64_t planes, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
    bool adaptive, exclude_pad;
};

static PG pg_of(const fx_pool_geom *g)
{
    PG p = { g->planes, g->h, g->w, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw,
             g->adaptive, g->exclude_pad };
    return p;
}

__device__ static inline void pool_window(int64_t i, int64_t n, int64_t on, int64_t k, int64_t s,
                                          int64_t p, bool adaptive, int64_t *lo, int64_t *hi,
                                          int64_t *span)
{
    if (adaptive) {
        *lo = i * n / on;
        *hi = ((i + 1) * n + on - 1) / on;
        *span = *hi - *lo;
        return;
    }
    int64_t a = i * s - p, b = a + k < n + p ? a + k : n + p;
    *span = b - a;
    *lo = a > 0 ? a : 0;
    *hi = b < n ? b : n;
}

/* One thread per output; dy != NULL: backward (scatter with atomics). */
__global__ void k_pool(PG g, int kind, const float *x, float *y, int32_t *am, const float *dy,
                       float *dx, int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t out = g.oh * g.ow, p = e / out, q = e % out, i = q / g.ow, j = q % g.ow;
        int64_t r0, r1, rs, c0, c1, cs;
        pool_window(i, g.h, g.oh, g.kh, g.sh, g.ph, g.adaptive, &r0, &r1, &rs);
        pool_window(j, g.w, g.ow, g.kw, g.sw, g.pw, g.adaptive, &c0, &c1, &cs);
        int64_t in = g.h * g.w;
        if (kind == FX_POOL_MAX) {
            const float *xp = x + p * in;
            int64_t bi = r0 * g.w + c0;
            float best = xp[bi];
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) {
                    float v = xp[r * g.w + c];
                    if (v > best || (v != v && best == best)) {
                        best = v;
                        bi = r * g.w + c;
                    }
                }
            y[e] = best;
            if (am)
                am[e] = (int32_t)bi;
            continue;
        }
        int64_t cnt = g.exclude_pad ? (r1 - r0) * (c1 - c0) : rs * cs;
        float inv = 1.0f / (float)cnt;
        if (dy) {
            float v = dy[e] * inv;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    atomicAdd(dx + p * in + r * g.w + c, v);
        } else {
            float s = 0.0f;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    s += x[p * in + r * g.w + c];
            y[e] = s * inv;
        }
    }
}

void cu_pool2d(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *x, fx_tensor *y,
               fx_tensor *argmax)
{
    int64_t total = g->planes * g->oh * g->ow;
    LAUNCH(tdev(x), total, k_pool, pg_of(g), (int)kind, F(x), F(y),
           argmax ? (int32_t *)fx_data(argmax) : NULL, (const float *)NULL, (float *)NULL, total);
}

__global__ void k_maxpool_bw(const float *dy, const int32_t *am, float *dx, int64_t in,
                             int64_t out, int64_t total)
{
    GRID_LOOP(e, total) atomicAdd(dx + (e / out) * in + am[e], dy[e]);
}

void cu_pool2d_backward(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                        const fx_tensor *argmax, fx_tensor *dx)
{
    int dev = tdev(dy);
    int64_t out = g->oh * g->ow, total = g->planes * out;
    if (kind == FX_POOL_MAX)
        LAUNCH(dev, total, k_maxpool_bw, F(dy), (const int32_t *)fx_data(argmax), F(dx),
               g->h * g->w, out, total);
    else
        LAUNCH(dev, total, k_pool, pg_of(g), (int)kind, (const float *)NULL, (float *)NULL,
               (int32_t *)NULL, F(dy), F(dx), total);
}
