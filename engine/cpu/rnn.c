/*
 * rnn.c - CPU kernels: the recurrence of simple RNN, GRU and LSTM cells over
 * variable-length sequences (see kern_rnn.h for the layouts).
 *
 * The op forms the input gates of all steps and the weight gradients with
 * large gemms; what is left is the time loop, per step a small product with
 * W_hh and one fused pointwise pass over the N x G*H gates. Samples are
 * independent through time, so the rows are split into one block per thread
 * and each thread runs its block through every step on its own: one
 * parallel region per direction instead of a fork and join per step, which
 * matters most when the cores are shared. Each block's product is a
 * single-threaded sgemm. The pointwise loops over H are straight-line float
 * code that the compiler vectorises, which is why the nonlinearities use the
 * polynomial exp below instead of calls to expf / tanhf.
 */
#include "cpu.h"

#include <cblas.h>


static inline float rnn_sigmoid(float x) { return 1.0f / (1.0f + fx_exp_approx(-x)); }

/* tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): absolute error
 * about 1e-7 (relative error grows near 0, where it does not matter). */
static inline float rnn_tanh(float x)
{
    float e = fx_exp_approx(-2.0f * fabsf(x));
    return copysignf((1.0f - e) / (1.0f + e), x);
}

/* The row functions below are also compiled for AVX2+FMA and AVX-512 and
 * the best one the CPU runs is chosen when the library loads: the engine is
 * built for x86-64-v2 (SSE4), and outside the gemms these loops are most of
 * a step. Not under ThreadSanitizer: it instruments the resolver, which the
 * dynamic loader runs before TSan's runtime is set up (a crash at start). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && \
    !defined(__SANITIZE_THREAD__)
#define RNN_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define RNN_CLONES
#endif

/* The geometry of a sequence, read from the tensors. */
typedef struct {
    int64_t N, T, H, GH, Y, col;
    const int64_t *len;
    bool reverse;
} seq_geom;

static seq_geom geom(const fx_rnn_seq_args *a)
{
    seq_geom g;
    g.N = a->hs->shape[1];
    g.H = a->hs->shape[2];
    g.T = a->xg ? a->xg->shape[1] : a->dxg->shape[1];
    g.GH = a->xg ? a->xg->shape[2] : a->dxg->shape[2];
    g.Y = a->y ? a->y->shape[2] : a->dy->shape[2];
    g.col = a->col;
    g.len = (const int64_t *)fx_data(a->lengths);
    g.reverse = a->reverse;
    return g;
}

/* The position of sample n at step s (only asked for active samples). */
static inline int64_t position(const seq_geom *g, int64_t n, int64_t s)
{
    return g->reverse ? g->len[n] - 1 - s : s;
}

/* Runs body(r0, r1) over row blocks [r0, r1) of N rows, one block per
 * thread (blocks of at least 8 rows, so each product keeps some height). */
#define ROW_BLOCKS(N, r0, r1, ...)                                                             \
    do {                                                                                       \
        int64_t nb_ = (N) / 8 < fx__num_threads ? (N) / 8 : fx__num_threads;                   \
        nb_ = nb_ < 1 ? 1 : nb_;                                                               \
        int64_t per_ = ((N) + nb_ - 1) / nb_;                                                  \
        FX_PFOR(nb_ > 1 ? INT64_MAX : 0, b_, nb_, {                                            \
            int64_t r0 = b_ * per_, r1 = r0 + per_ < (N) ? r0 + per_ : (N);                    \
            __VA_ARGS__                                                                        \
        });                                                                                    \
    } while (0)

/* ---------------------------------------------------------------- forward */

/* One active row of a tanh / relu cell: h = act(xg + hg + b). */
RNN_CLONES static void rnn_row(bool relu, int64_t H, const float *restrict xg, const float *restrict hg,
                    const float *restrict b, float *restrict h, float *restrict y)
{
    if (b)
        for (int64_t j = 0; j < H; j++)
            h[j] = xg[j] + hg[j] + b[j];
    else
        for (int64_t j = 0; j < H; j++)
            h[j] = xg[j] + hg[j];
    if (relu)
        for (int64_t j = 0; j < H; j++)
            h[j] = h[j] > 0.0f ? h[j] : 0.0f;
    else
        for (int64_t j = 0; j < H; j++)
            h[j] = rnn_tanh(h[j]);
    memcpy(y, h, (size_t)H * sizeof *y);
}

/* One active row of a GRU: pre-activations into act, then the cell. */
RNN_CLONES static void gru_row(int64_t H, const float *restrict xg, const float *restrict hg,
                    const float *restrict b, const float *restrict hp, float *restrict h,
                    float *restrict act, float *restrict y)
{
    float *r = act, *z = act + H, *nn = act + 2 * H, *hn = act + 3 * H;
    if (b)
        for (int64_t j = 0; j < H; j++) {
            r[j] = hg[j] + b[j];
            z[j] = hg[H + j] + b[H + j];
            hn[j] = hg[2 * H + j] + b[2 * H + j];
        }
    else
        for (int64_t j = 0; j < H; j++) {
            r[j] = hg[j];
            z[j] = hg[H + j];
            hn[j] = hg[2 * H + j];
        }
    for (int64_t j = 0; j < H; j++) {
        float rj = rnn_sigmoid(xg[j] + r[j]), zj = rnn_sigmoid(xg[H + j] + z[j]);
        float nj = rnn_tanh(xg[2 * H + j] + rj * hn[j]);
        float hj = (1.0f - zj) * nj + zj * hp[j];
        r[j] = rj;
        z[j] = zj;
        nn[j] = nj;
        h[j] = hj;
        y[j] = hj;
    }
}

/* One active row of an LSTM: gates i, f, g, o into act, then c and h. */
RNN_CLONES static void lstm_row(int64_t H, const float *restrict xg, const float *restrict hg,
                     const float *restrict b, const float *restrict cp, float *restrict c,
                     float *restrict h, float *restrict act, float *restrict y)
{
    int64_t GH = 4 * H;
    if (b)
        for (int64_t j = 0; j < GH; j++)
            act[j] = xg[j] + hg[j] + b[j];
    else
        for (int64_t j = 0; j < GH; j++)
            act[j] = xg[j] + hg[j];
    float *gi = act, *gf = act + H, *gg = act + 2 * H, *go = act + 3 * H;
    for (int64_t j = 0; j < H; j++) {
        float i = rnn_sigmoid(gi[j]), f = rnn_sigmoid(gf[j]), g = rnn_tanh(gg[j]);
        float o = rnn_sigmoid(go[j]);
        float cj = f * cp[j] + i * g, hj = o * rnn_tanh(cj);
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
        c[j] = cj;
        h[j] = hj;
        y[j] = hj;
    }
}

/* Step s of rows [r0, r1): hg = hs[s] W_hh^T, then the cells. */
static void forward_rows(const fx_rnn_seq_args *a, const seq_geom *g, int64_t s, int64_t r0,
                         int64_t r1)
{
    int64_t N = g->N, H = g->H, GH = g->GH, A = 4 * H;
    const float *Hp = fx_f32(a->hs) + s * N * H;
    float *Hn = fx_f32(a->hs) + (s + 1) * N * H, *HG = fx_f32(a->hg), *Y = fx_f32(a->y);
    const float *Cp = a->cs ? fx_f32(a->cs) + s * N * H : NULL;
    float *Cn = a->cs ? fx_f32(a->cs) + (s + 1) * N * H : NULL;
    float *Act = a->act ? fx_f32(a->act) + s * N * A : NULL;
    const float *XG = fx_f32(a->xg), *B = a->b_hh ? fx_f32(a->b_hh) : NULL;
    if (s == 0 && a->h0_zero)
        memset(HG + r0 * GH, 0, (size_t)((r1 - r0) * GH) * sizeof(float));
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)GH, (int)H,
                    1.0f, Hp + r0 * H, (int)H, fx_f32(a->w_hh), (int)H, 0.0f, HG + r0 * GH,
                    (int)GH);
    for (int64_t n = r0; n < r1; n++) {
        if (s >= g->len[n]) { /* done: carry the state */
            memcpy(Hn + n * H, Hp + n * H, (size_t)H * sizeof(float));
            if (Cn)
                memcpy(Cn + n * H, Cp + n * H, (size_t)H * sizeof(float));
            continue;
        }
        int64_t t = position(g, n, s);
        const float *xg = XG + (n * g->T + t) * GH, *hg = HG + n * GH;
        float *y = Y + (n * g->T + t) * g->Y + g->col;
        if (a->kind == FX_CELL_LSTM)
            lstm_row(H, xg, hg, B, Cp + n * H, Cn + n * H, Hn + n * H, Act + n * A, y);
        else if (a->kind == FX_CELL_GRU)
            gru_row(H, xg, hg, B, Hp + n * H, Hn + n * H, Act + n * A, y);
        else
            rnn_row(a->kind == FX_CELL_RELU, H, xg, hg, B, Hn + n * H, y);
    }
}

static void cpu_rnn_forward(const fx_rnn_seq_args *a)
{
    seq_geom g = geom(a);
    ROW_BLOCKS(g.N, r0, r1, {
        for (int64_t s = 0; s < a->steps; s++)
            forward_rows(a, &g, s, r0, r1);
    });
}

/* --------------------------------------------------------------- backward */

/* dh_t = dh + dy for one active row: the total gradient of the new state. */
static void add_dy(int64_t H, float *restrict dh, const float *restrict dy)
{
    for (int64_t j = 0; j < H; j++)
        dh[j] += dy[j];
}

/* tanh / relu cell: one gradient for the input and recurrent products. */
RNN_CLONES static void rnn_row_backward(bool relu, int64_t H, const float *restrict h, float *restrict dh,
                             float *restrict dxg, float *restrict dhg)
{
    if (relu)
        for (int64_t j = 0; j < H; j++)
            dxg[j] = (float)(h[j] > 0.0f) * dh[j];
    else
        for (int64_t j = 0; j < H; j++)
            dxg[j] = dh[j] * (1.0f - h[j] * h[j]);
    memcpy(dhg, dxg, (size_t)H * sizeof *dhg);
    memset(dh, 0, (size_t)H * sizeof *dh);
}

/* GRU: h' = (1-z) n + z h, n = tanh(x_n + r hn). The n gate's recurrent
 * gradient is r times its input gradient; dh keeps z dh'. */
RNN_CLONES static void gru_row_backward(int64_t H, const float *restrict act, const float *restrict hp,
                             float *restrict dh, float *restrict dxg, float *restrict dhg)
{
    const float *r = act, *z = act + H, *nn = act + 2 * H, *hn = act + 3 * H;
    for (int64_t j = 0; j < H; j++) {
        float d = dh[j], rj = r[j], zj = z[j], nj = nn[j];
        float dpn = d * (1.0f - zj) * (1.0f - nj * nj);
        float dpz = d * (hp[j] - nj) * zj * (1.0f - zj);
        float dpr = dpn * hn[j] * rj * (1.0f - rj);
        dxg[j] = dhg[j] = dpr;
        dxg[H + j] = dhg[H + j] = dpz;
        dxg[2 * H + j] = dpn;
        dhg[2 * H + j] = dpn * rj;
        dh[j] = d * zj;
    }
}

/* LSTM: c' = f c + i g, h' = o tanh(c'). dc leaves as d c * f; the whole
 * gradient of h goes through the gates (dh leaves zero). */
RNN_CLONES static void lstm_row_backward(int64_t H, const float *restrict act, const float *restrict cp,
                              const float *restrict c, float *restrict dh, float *restrict dc,
                              float *restrict dxg, float *restrict dhg)
{
    const float *gi = act, *gf = act + H, *gg = act + 2 * H, *go = act + 3 * H;
    for (int64_t j = 0; j < H; j++) {
        float i = gi[j], f = gf[j], g = gg[j], o = go[j], tc = rnn_tanh(c[j]), d = dh[j];
        float dcj = dc[j] + d * o * (1.0f - tc * tc);
        float di = dcj * g * i * (1.0f - i), df = dcj * cp[j] * f * (1.0f - f);
        float dg = dcj * i * (1.0f - g * g), dout = d * tc * o * (1.0f - o);
        dxg[j] = di;
        dxg[H + j] = df;
        dxg[2 * H + j] = dg;
        dxg[3 * H + j] = dout;
        dc[j] = dcj * f;
    }
    memcpy(dhg, dxg, (size_t)(4 * H) * sizeof *dhg);
    memset(dh, 0, (size_t)H * sizeof *dh);
}

/* Step s of rows [r0, r1): the cells' backward, then dh += dhg[s] W_hh
 * (after step 0 only when the gradient of hs[0] is wanted). */
static void backward_rows(const fx_rnn_seq_args *a, const seq_geom *g, int64_t s, int64_t r0,
                          int64_t r1)
{
    int64_t N = g->N, H = g->H, GH = g->GH, A = 4 * H;
    const float *DY = fx_f32(a->dy);
    const float *Hp = fx_f32(a->hs) + s * N * H, *Hn = Hp + N * H;
    const float *Cp = a->cs ? fx_f32(a->cs) + s * N * H : NULL;
    const float *Cn = Cp ? Cp + N * H : NULL;
    const float *Act = a->act ? fx_f32(a->act) + s * N * A : NULL;
    float *DH = fx_f32(a->dh), *DC = a->dc ? fx_f32(a->dc) : NULL;
    float *DXG = fx_f32(a->dxg), *DHG = fx_f32(a->dhg) + s * N * GH;
    for (int64_t n = r0; n < r1; n++) {
        float *dhg = DHG + n * GH, *dh = DH + n * H;
        if (s >= g->len[n]) { /* done: the state was carried, so is its gradient */
            memset(dhg, 0, (size_t)GH * sizeof(float));
            continue;
        }
        int64_t t = position(g, n, s);
        float *dxg = DXG + (n * g->T + t) * GH;
        add_dy(H, dh, DY + (n * g->T + t) * g->Y + g->col);
        if (a->kind == FX_CELL_LSTM)
            lstm_row_backward(H, Act + n * A, Cp + n * H, Cn + n * H, dh, DC + n * H, dxg, dhg);
        else if (a->kind == FX_CELL_GRU)
            gru_row_backward(H, Act + n * A, Hp + n * H, dh, dxg, dhg);
        else
            rnn_row_backward(a->kind == FX_CELL_RELU, H, Hn + n * H, dh, dxg, dhg);
    }
    if (s > 0 || a->want_dh0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)H, (int)GH,
                    1.0f, DHG + r0 * GH, (int)GH, fx_f32(a->w_hh), (int)H, 1.0f, DH + r0 * H,
                    (int)H);
}

static void cpu_rnn_backward(const fx_rnn_seq_args *a)
{
    seq_geom g = geom(a);
    ROW_BLOCKS(g.N, r0, r1, {
        for (int64_t s = a->steps - 1; s >= 0; s--)
            backward_rows(a, &g, s, r0, r1);
    });
}

/* ------------------------------------------------------------------ masks */

static void cpu_rnn_mask_steps(const fx_tensor *x, const fx_tensor *lengths, fx_tensor *y)
{
    int64_t N = x->shape[0], T = x->shape[1], C = x->shape[2];
    const int64_t *len = (const int64_t *)fx_data(lengths);
    const float *X = fx_f32(x);
    float *Y = fx_f32(y);
    FX_PFOR(N * T * C, n, N, {
        int64_t k = len[n] < T ? len[n] : T;
        memcpy(Y + n * T * C, X + n * T * C, (size_t)(k * C) * sizeof(float));
        memset(Y + (n * T + k) * C, 0, (size_t)((T - k) * C) * sizeof(float));
    });
}

const fx_rnn_kernels fx__cpu_rnn = {
    .forward = cpu_rnn_forward,
    .backward = cpu_rnn_backward,
    .mask_steps = cpu_rnn_mask_steps,
};
