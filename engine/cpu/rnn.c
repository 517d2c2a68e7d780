/*
 * rnn.c - CPU kernels: the recurrence of simple RNN, GRU and LSTM cells over
 * variable-length sequences, and the sequence-wide products around it (see
 * kern_rnn.h for the layouts).
 *
 * What a direction costs: one product for the input gates of all steps
 * (x W_ih^T + both biases, outside GRU), then per step a small product
 * with W_hh (M = the batch, 32 in the benchmark, against [H, G*H]) and one
 * fused pointwise pass; backward the same in reverse, then one product each
 * for dW_hh (over all steps), dW_ih and dx. An LSTM (gates_pending) has no
 * product for the input gates: each step's product is [x_t | h] times
 * [W_ih^T; W_hh^T] with the bias in its accumulators, so the gates of all
 * steps (2 MB in the benchmark, read back by position, i.e. scattered) are
 * never written and read again.
 *
 * The per-step products (rnn_prod.c). Handed to BLAS, a product this small
 * is dominated by overheads: OpenBLAS re-packs the whole W_hh (256 KB at
 * H = 128) on every call, 2 x S times per training step. So W_hh is packed
 * once per call, in the panel layout our register-tiled micro-kernel reads
 * (micro.h: an MR x NR tile in vector registers, each of K steps NV loads
 * of B, MR broadcasts of A and MR * NV fused multiply-adds), for the
 * forward as W_hh^T [H, G*H] (or [W_ih^T; W_hh^T]) and for the backward as
 * W_hh [G*H, H], for AVX-512, AVX2+FMA or portable 4-wide vectors, the
 * best the CPU runs (fx__rnn_isa forces one for tests; 4 forces the plain
 * path, BLAS for every product, kept for out of memory and as the measured
 * baseline). The same kernel does the input gates of the other cells (bias
 * loaded into the accumulators) and, for GRU or where H is not whole
 * panels, the input gradient dG W_ih of all steps. The weight gradients
 * (dG^T A over all steps) run in rnn_wgrad.c, W_ih's and W_hh's in one pass
 * over dG that also sums the bias gradient (AVX-512; elsewhere BLAS).
 *
 * Per step and block of rows: the product into a buffer of gate
 * pre-activations that stays in cache (N x G*H padded to whole panels),
 * then the cell reads it (with the input gates, outside a fused LSTM) in
 * one pass that applies the nonlinearities and writes the saved
 * activations (after the nonlinearities, once), c, h and y; meanwhile the
 * next rows the cells read are prefetched (they are scattered by position).
 * Backward: the cell's backward for the block (gate gradients into dxg by
 * position and dhg by step; a dense LSTM, one way with every sample all T
 * steps, has no dhg and the product reads dxg's rows in place), then dh =
 * (or +=) dhg_s W_hh with the packed W_hh, outside GRU as dhg_s [W_hh |
 * W_ih], whose second part, the step's input gradient, goes to dx.
 *
 * Threads: samples are independent through time, so the rows are split
 * into one block per thread and each thread runs its block through every
 * step on its own: one parallel region per direction instead of a fork and
 * join per step, which matters most when the cores are shared.
 *
 * The pointwise loops over H are straight-line float code that the compiler
 * vectorises (target clones for AVX2 and AVX-512), which is why the
 * nonlinearities use the polynomial exp of cpu.h instead of calls to expf /
 * tanhf. Measured against double over [-30, 30] in steps of 1e-4: sigmoid
 * within 1.5e-7 relative, tanh within 9e-8 absolute (so 1.3e-5 relative
 * where |tanh| is 1e-3, more nearer 0); whole stacks stay within 2e-5 of a
 * double-precision reference (tests/unit/test_rnn.c, every kernel path).
 * The LSTM's rows have an AVX-512 version in intrinsics (rnn_cells.c, the
 * same polynomial without divisions), used at fx__rnn_isa 0 and 3.
 */
#include "cpu.h"
#include "micro.h"
#include "rnn_parts.h"

#include <cblas.h>
#include <stdlib.h>

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
    bool cells512; /* LSTM rows: rnn_cells.c's AVX-512 ones */
    bool fused;    /* the input gates are in the step's products (xg not read) */
} seq_geom;

static seq_geom geom(const fx_rnn_seq_args *a)
{
    seq_geom g;
    g.N = a->hs->shape[1];
    g.H = a->hs->shape[2];
    g.T = a->y ? a->y->shape[1] : a->dy->shape[1];
    g.GH = a->w_hh->shape[0];
    g.Y = a->y ? a->y->shape[2] : a->dy->shape[2];
    g.col = a->col;
    g.len = (const int64_t *)fx_data(a->lengths);
    g.reverse = a->reverse;
    g.cells512 = fx__rnn_cells_avx512() && (fx__rnn_isa == 0 || fx__rnn_isa == 3);
    g.fused = false;
    return g;
}

/* The position of sample n at step s (only asked for active samples). */
static inline int64_t position(const seq_geom *g, int64_t n, int64_t s)
{
    return g->reverse ? g->len[n] - 1 - s : s;
}

static int64_t row_block_count(int64_t N)
{
    int64_t nb = N / 8 < fx__num_threads ? N / 8 : fx__num_threads;
    return nb < 1 ? 1 : nb;
}

/* Runs body(r0, r1) over row blocks [r0, r1) of N rows, one block per
 * thread (blocks of at least 8 rows, so each product keeps some height). */
#define ROW_BLOCKS(N, r0, r1, ...)                                                             \
    do {                                                                                       \
        int64_t nb_ = row_block_count(N);                                                      \
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

/* One active row of an LSTM in one pass: gates i, f, g, o from xg + hg
 * (+ b: the op folds b_hh into xg, so usually NULL; xg NULL: hg holds the
 * whole pre-activations) into act after their nonlinearities, then c and
 * h. */
RNN_CLONES static void lstm_row(int64_t H, const float *restrict xg, float *restrict hg,
                     const float *restrict b, const float *restrict cp, float *restrict c,
                     float *restrict h, float *restrict act, float *restrict y)
{
    if (b) /* rare: added to the products (a scratch buffer) first */
        for (int64_t j = 0; j < 4 * H; j++)
            hg[j] += b[j];
    for (int64_t j = 0; j < H; j++) {
        float xi = xg ? xg[j] : 0.0f, xf = xg ? xg[H + j] : 0.0f;
        float xgg = xg ? xg[2 * H + j] : 0.0f, xo = xg ? xg[3 * H + j] : 0.0f;
        float i = rnn_sigmoid(xi + hg[j]), f = rnn_sigmoid(xf + hg[H + j]);
        float g = rnn_tanh(xgg + hg[2 * H + j]);
        float o = rnn_sigmoid(xo + hg[3 * H + j]);
        float cj = f * cp[j] + i * g, hj = o * rnn_tanh(cj);
        act[j] = i;
        act[H + j] = f;
        act[2 * H + j] = g;
        act[3 * H + j] = o;
        c[j] = cj;
        h[j] = hj;
        y[j] = hj;
    }
}

/* The cells of step s for rows [r0, r1), whose products hs[s] W_hh^T are in
 * HG (row n at HG + (n - r0) * ldh). */
static void cells_forward(const fx_rnn_seq_args *a, const seq_geom *g, int64_t s, int64_t r0,
                          int64_t r1, float *HG, int64_t ldh)
{
    int64_t N = g->N, H = g->H, GH = g->GH, A = 4 * H;
    const float *Hp = fx_f32(a->hs) + s * N * H;
    float *Hn = fx_f32(a->hs) + (s + 1) * N * H, *Y = fx_f32(a->y);
    const float *Cp = a->cs ? fx_f32(a->cs) + s * N * H : NULL;
    float *Cn = a->cs ? fx_f32(a->cs) + (s + 1) * N * H : NULL;
    float *Act = a->act ? fx_f32(a->act) + s * N * A : NULL;
    const float *XG = g->fused ? NULL : fx_f32(a->xg), *B = a->b_hh ? fx_f32(a->b_hh) : NULL;
    for (int64_t n = r0; n < r1; n++) {
        if (s >= g->len[n]) { /* done: carry the state */
            memcpy(Hn + n * H, Hp + n * H, (size_t)H * sizeof(float));
            if (Cn)
                memcpy(Cn + n * H, Cp + n * H, (size_t)H * sizeof(float));
            continue;
        }
        int64_t t = position(g, n, s);
        const float *xg = XG ? XG + (n * g->T + t) * GH : NULL;
        float *hg = HG + (n - r0) * ldh;
        float *y = Y + (n * g->T + t) * g->Y + g->col;
        if (a->kind == FX_CELL_LSTM && g->cells512 && !B)
            fx__lstm_row_avx512(H, xg, hg, Cp + n * H, Cn + n * H, Hn + n * H, Act + n * A, y);
        else if (a->kind == FX_CELL_LSTM)
            lstm_row(H, xg, hg, B, Cp + n * H, Cn + n * H, Hn + n * H, Act + n * A, y);
        else if (a->kind == FX_CELL_GRU)
            gru_row(H, xg, hg, B, Hp + n * H, Hn + n * H, Act + n * A, y);
        else
            rnn_row(a->kind == FX_CELL_RELU, H, xg, hg, B, Hn + n * H, y);
    }
}

/* Asks for the cache lines [p, p + bytes) (for writing when write). */
static void prefetch_lines(const void *p, int64_t bytes, bool write)
{
    const char *b = p;
    for (int64_t o = 0; o < bytes; o += 64) {
        if (write)
            __builtin_prefetch(b + o, 1, 2);
        else
            __builtin_prefetch(b + o, 0, 2);
    }
}

/* What the cells of step s touch in rows [r0, r1) and that is not in cache
 * yet, asked for while the step's product runs (which reads little beyond
 * the packed W_hh): the rows of the input gates (forward) or of their
 * gradient (backward), 4H floats each spread over the sequence by position,
 * which the hardware prefetchers miss, and the step's saved activations. */
static void prefetch_step(const fx_rnn_seq_args *a, const seq_geom *g, int64_t s, int64_t r0,
                          int64_t r1, bool backward)
{
    int64_t N = g->N, H = g->H, GH = g->GH, A = 4 * H;
    const float *rows = backward ? fx_f32(a->dxg) : g->fused ? fx_f32(a->x) : fx_f32(a->xg);
    int64_t width = g->fused && !backward ? a->x->shape[2] : GH;
    for (int64_t n = r0; n < r1; n++)
        if (s < g->len[n]) {
            int64_t t = position(g, n, s);
            prefetch_lines(rows + (n * g->T + t) * width, width * (int64_t)sizeof(float),
                           backward);
            if (backward)
                prefetch_lines(fx_f32(a->dy) + (n * g->T + t) * g->Y + g->col,
                               H * (int64_t)sizeof(float), false);
        }
    if (a->act)
        prefetch_lines(fx_f32(a->act) + (s * N + r0) * A, (r1 - r0) * A * (int64_t)sizeof(float),
                       !backward);
}

/* Per-thread buffers of the packed path: the products of a row block and
 * the partial-block pad. */
typedef struct {
    float *hg, *pad, *a; /* a: the fused products' rows [x | h] */
} rows_scratch;

static bool scratch_alloc(rows_scratch *sc, int64_t rows, int64_t width, int64_t K, bool fused)
{
    sc->hg = malloc((size_t)(rows * width) * sizeof(float));
    sc->pad = malloc((size_t)(MR_MAX * K) * sizeof(float));
    sc->a = fused ? malloc((size_t)(rows * K) * sizeof(float)) : NULL;
    return sc->hg && sc->pad && (sc->a || !fused);
}

static void scratch_free(rows_scratch *sc)
{
    free(sc->hg);
    free(sc->pad);
    free(sc->a);
}

/* The rows [r0, r1) of step s's fused product: x at the row's position,
 * then hs[s] (zeros for inactive rows, whose products are not used). */
static void fused_rows(const fx_rnn_seq_args *a, const seq_geom *g, int64_t s, int64_t r0,
                       int64_t r1, int64_t In, float *dst)
{
    int64_t H = g->H, K = In + H;
    const float *X = fx_f32(a->x), *Hs = fx_f32(a->hs) + s * g->N * H;
    for (int64_t n = r0; n < r1; n++) {
        float *d = dst + (n - r0) * K;
        if (s >= g->len[n]) {
            memset(d, 0, (size_t)K * sizeof(float));
            continue;
        }
        memcpy(d, X + (n * g->T + position(g, n, s)) * In, (size_t)In * sizeof(float));
        memcpy(d + In, Hs + n * H, (size_t)H * sizeof(float));
    }
}

/* The input gates of every step into a->xg, for a call with gates_pending
 * that does not fuse them (the plain path, out of memory). */
static bool cpu_rnn_gates(int64_t R, const fx_tensor *x, const fx_tensor *w,
                          const fx_tensor *bias, fx_tensor *y);

static void pending_gates(const fx_rnn_seq_args *a)
{
    int64_t R = a->x->shape[0] * a->x->shape[1], In = a->x->shape[2], G = a->w_ih->shape[0];
    if (cpu_rnn_gates(R, a->x, a->w_ih, a->b_in, (fx_tensor *)a->xg)) /* the op's, writable */
        return;
    float *Y = fx_f32(a->xg);
    for (int64_t r = 0; a->b_in && r < R; r++)
        memcpy(Y + r * G, fx_f32(a->b_in), (size_t)G * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)G, (int)In, 1.0f,
                fx_f32(a->x), (int)In, fx_f32(a->w_ih), (int)In, a->b_in ? 1.0f : 0.0f, Y, (int)G);
}

/* The plain path for rows [r0, r1), step s: one cblas_sgemm into a->hg. */
static void forward_rows_blas(const fx_rnn_seq_args *a, const seq_geom *g, int64_t s,
                              int64_t r0, int64_t r1)
{
    int64_t H = g->H, GH = g->GH;
    float *HG = fx_f32(a->hg) + r0 * GH;
    if (s == 0 && a->h0_zero)
        memset(HG, 0, (size_t)((r1 - r0) * GH) * sizeof(float));
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)GH, (int)H,
                    1.0f, fx_f32(a->hs) + (s * g->N + r0) * H, (int)H, fx_f32(a->w_hh), (int)H,
                    0.0f, HG, (int)GH);
    cells_forward(a, g, s, r0, r1, HG, GH);
}

/*
 * The forward. With gates_pending (an LSTM; see kern_rnn.h) each step's
 * product is [x_t | h] [W_ih^T; W_hh^T] + the bias, K = I + H, so the input
 * gates are never written to memory and read back (xg: 2 MB in the
 * benchmark, read by position, i.e. scattered); the plain path and out of
 * memory form xg first instead.
 */
static void cpu_rnn_forward(const fx_rnn_seq_args *a)
{
    seq_geom g = geom(a);
    int64_t H = g.H, GH = g.GH, In = a->gates_pending ? a->x->shape[2] : 0, K = In + H;
    packed_b pb = { 0 };
    micro_kernel mk = fx__rnn_kernel_for_rows(g.N);
    bool packed = fx__rnn_isa != 4;
    if (packed && a->gates_pending)
        packed = fx__rnn_pack_cat(&pb, fx_f32(a->w_ih), In, fx_f32(a->w_hh), H, GH, mk.nr);
    else if (packed)
        packed = fx__rnn_pack_b(&pb, fx_f32(a->w_hh), H, true, H, GH, mk.nr);
    int64_t ldh = pb.panels * mk.nr, nb = row_block_count(g.N), per = (g.N + nb - 1) / nb;
    /* every block's buffers first: a block must not fall back alone once
     * the gates are left to the products */
    rows_scratch *sc = packed ? calloc((size_t)nb, sizeof *sc) : NULL;
    float *bias = packed && a->b_in ? calloc((size_t)ldh, sizeof(float)) : NULL;
    packed = sc && (bias || !a->b_in || !a->gates_pending);
    for (int64_t b = 0; packed && b < nb; b++)
        packed = scratch_alloc(&sc[b], per, ldh, K, a->gates_pending);
    if (!packed) {
        for (int64_t b = 0; sc && b < nb; b++)
            scratch_free(&sc[b]);
        free(sc);
        sc = NULL;
    }
    if (bias)
        memcpy(bias, fx_f32(a->b_in), (size_t)GH * sizeof(float));
    if (a->gates_pending && !packed)
        pending_gates(a);
    g.fused = a->gates_pending && packed;
    ROW_BLOCKS(g.N, r0, r1, {
        rows_scratch *my = sc ? &sc[r0 / per] : NULL;
        micro_kernel k = fx__rnn_kernel_for_rows(r1 - r0);
        for (int64_t s = 0; s < a->steps; s++) {
            if (!my) {
                forward_rows_blas(a, &g, s, r0, r1);
                continue;
            }
            prefetch_step(a, &g, s, r0, r1, false);
            if (g.fused) {
                fused_rows(a, &g, s, r0, r1, In, my->a);
                /* a zero initial state: the x part of the product only */
                int64_t kx = s == 0 && a->h0_zero ? In : K;
                fx__rnn_product(&k, &(prod_args){ .M = r1 - r0, .N = GH, .K = kx, .a = my->a,
                                                  .rsa = K, .csa = 1, .pb = &pb, .bias = bias,
                                                  .c = my->hg, .ldc = ldh, .c_padded = true,
                                                  .bias_padded = true, .pad = my->pad },
                                false);
            } else if (s == 0 && a->h0_zero) {
                memset(my->hg, 0, (size_t)((r1 - r0) * ldh) * sizeof(float));
            } else {
                fx__rnn_product(&k, &(prod_args){ .M = r1 - r0, .N = GH, .K = H,
                                                  .a = fx_f32(a->hs) + (s * g.N + r0) * H,
                                                  .rsa = H, .csa = 1, .pb = &pb, .c = my->hg,
                                                  .ldc = ldh, .c_padded = true, .pad = my->pad },
                                false);
            }
            cells_forward(a, &g, s, r0, r1, my->hg, ldh);
        }
    });
    for (int64_t b = 0; sc && b < nb; b++)
        scratch_free(&sc[b]);
    free(sc);
    free(bias);
    free(pb.p);
}

/* --------------------------------------------------------------- backward */

/* dh_t = dh + dy for one active row: the total gradient of the new state. */
static void add_dy(int64_t H, float *restrict dh, const float *restrict dy)
{
    for (int64_t j = 0; j < H; j++)
        dh[j] += dy[j];
}

/* tanh / relu cell: one gradient for the input and recurrent products,
 * stored to both (dxg by position, dhg by step). dy is added here; dh
 * leaves zero when clear (else the caller overwrites it). */
RNN_CLONES static void rnn_row_backward(bool relu, int64_t H, const float *restrict h,
                                        const float *restrict dy, float *restrict dh,
                                        float *restrict dxg, float *restrict dhg, bool clear)
{
    if (relu)
        for (int64_t j = 0; j < H; j++)
            dxg[j] = dhg[j] = (float)(h[j] > 0.0f) * (dh[j] + dy[j]);
    else
        for (int64_t j = 0; j < H; j++)
            dxg[j] = dhg[j] = (dh[j] + dy[j]) * (1.0f - h[j] * h[j]);
    if (clear)
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
 * gradient of h goes through the gates (the caller clears dh, or
 * overwrites it). */
RNN_CLONES static void lstm_row_backward(int64_t H, const float *restrict act,
                                         const float *restrict cp, const float *restrict c,
                                         float *restrict dh, float *restrict dc,
                                         float *restrict dxg, float *restrict dhg)
{
    const float *gi = act, *gf = act + H, *gg = act + 2 * H, *go = act + 3 * H;
    for (int64_t j = 0; j < H; j++) {
        float i = gi[j], f = gf[j], g = gg[j], o = go[j], tc = rnn_tanh(c[j]);
        float d = dh[j];
        float dcj = dc[j] + d * o * (1.0f - tc * tc);
        float di = dcj * g * i * (1.0f - i), df = dcj * cp[j] * f * (1.0f - f);
        float dg = dcj * i * (1.0f - g * g), dout = d * tc * o * (1.0f - o);
        dxg[j] = di;
        dxg[H + j] = df;
        dxg[2 * H + j] = dg;
        dxg[3 * H + j] = dout;
        dc[j] = dcj * f;
    }
    if (dhg)
        memcpy(dhg, dxg, (size_t)(4 * H) * sizeof *dhg);
}

/* The cells' backward of step s for rows [r0, r1): writes dxg at the active
 * positions and dhg[s] (zero rows for inactive samples). True when every
 * row's dh was consumed and left as garbage (LSTM and tanh/relu with all
 * rows active, and may_skip): the caller then overwrites dh (dh = dhg[s]
 * W_hh instead of +=, saving the clear and a read); else dh is exact. */
static bool cells_backward(const fx_rnn_seq_args *a, const seq_geom *g, int64_t s, int64_t r0,
                           int64_t r1, bool may_skip)
{
    bool skip = may_skip && a->kind != FX_CELL_GRU;
    for (int64_t n = r0; n < r1 && skip; n++)
        skip = s < g->len[n];
    int64_t N = g->N, H = g->H, GH = g->GH, A = 4 * H;
    const float *DY = fx_f32(a->dy);
    const float *Hp = fx_f32(a->hs) + s * N * H, *Hn = Hp + N * H;
    const float *Cp = a->cs ? fx_f32(a->cs) + s * N * H : NULL;
    const float *Cn = Cp ? Cp + N * H : NULL;
    const float *Act = a->act ? fx_f32(a->act) + s * N * A : NULL;
    float *DH = fx_f32(a->dh), *DC = a->dc ? fx_f32(a->dc) : NULL;
    float *DXG = fx_f32(a->dxg), *DHG = a->dhg ? fx_f32(a->dhg) + s * N * GH : NULL;
    for (int64_t n = r0; n < r1; n++) {
        float *dhg = DHG ? DHG + n * GH : NULL, *dh = DH + n * H;
        if (s >= g->len[n]) { /* done: the state was carried, so is its gradient */
            if (dhg)
                memset(dhg, 0, (size_t)GH * sizeof(float));
            continue;
        }
        int64_t t = position(g, n, s);
        float *dxg = DXG + (n * g->T + t) * GH;
        const float *dy = DY + (n * g->T + t) * g->Y + g->col;
        if (a->kind == FX_CELL_LSTM && g->cells512) {
            fx__lstm_row_backward_avx512(H, Act + n * A, Cp + n * H, Cn + n * H, dy, dh,
                                         DC + n * H, dxg, dhg, !skip);
        } else if (a->kind == FX_CELL_LSTM) {
            add_dy(H, dh, dy);
            lstm_row_backward(H, Act + n * A, Cp + n * H, Cn + n * H, dh, DC + n * H, dxg, dhg);
            if (!skip)
                memset(dh, 0, (size_t)H * sizeof *dh);
        } else if (a->kind == FX_CELL_GRU) {
            add_dy(H, dh, dy);
            gru_row_backward(H, Act + n * A, Hp + n * H, dh, dxg, dhg);
        } else {
            rnn_row_backward(a->kind == FX_CELL_RELU, H, Hn + n * H, dy, dh, dxg, dhg, !skip);
        }
    }
    return skip;
}

/* d = c (set) or d += c, n floats. */
RNN_CLONES static void add_row(int64_t n, float *restrict d, const float *restrict c, bool set)
{
    if (set)
        memcpy(d, c, (size_t)n * sizeof *d);
    else
        for (int64_t j = 0; j < n; j++)
            d[j] += c[j];
}

/* After a fused backward product of step s for rows [r0, r1) (C, rows
 * ldw apart: H columns for dh, then In for dx): dh = (skip ? 0 : dh) + C's
 * first part (dh NULL: none), dx at each active row's position += the
 * second. */
static void add_step(const fx_rnn_seq_args *a, const seq_geom *g, int64_t s, int64_t r0,
                     int64_t r1, const float *C, int64_t ldw, float *dh, bool skip, int64_t In)
{
    int64_t H = g->H;
    float *DX = fx_f32(a->dx);
    for (int64_t n = r0; n < r1; n++) {
        const float *c = C + (n - r0) * ldw;
        if (dh)
            add_row(H, dh + (n - r0) * H, c, skip);
        if (s < g->len[n])
            add_row(In, DX + (n * g->T + position(g, n, s)) * In, c + H, false);
    }
}

/*
 * The backward. With a->dx (not GRU; H whole panels) each step's product
 * is dhg_s [W_hh | W_ih], whose second part is the input gradient of the
 * step's active positions, added into dx: the rows of dxg are still in
 * cache, instead of a product over all of dxg afterwards. Every row
 * block's buffers come first: the input gradient is all or nothing.
 */
static void cpu_rnn_backward(const fx_rnn_seq_args *a)
{
    seq_geom g = geom(a);
    int64_t H = g.H, GH = g.GH, N = g.N;
    packed_b pb = { 0 };
    bool packed = fx__rnn_isa != 4;
    micro_kernel mk = fx__rnn_kernel_for_rows(N);
    bool fdx = packed && a->dx && a->dx_added && a->kind != FX_CELL_GRU && H % mk.nr == 0;
    int64_t In = fdx ? a->w_ih->shape[1] : 0, ldw = 0;
    if (fdx)
        packed = fx__rnn_pack_side(&pb, fx_f32(a->w_hh), H, fx_f32(a->w_ih), In, GH, mk.nr);
    else if (packed)
        packed = fx__rnn_pack_b(&pb, fx_f32(a->w_hh), H, false, GH, H, mk.nr);
    fdx = fdx && packed;
    ldw = pb.panels * mk.nr;
    int64_t nb = row_block_count(N), per = (N + nb - 1) / nb;
    rows_scratch *sc = packed ? calloc((size_t)nb, sizeof *sc) : NULL;
    packed = sc != NULL;
    for (int64_t b = 0; packed && b < nb; b++) {
        sc[b].pad = malloc((size_t)(MR_MAX * GH) * sizeof(float));
        sc[b].hg = fdx ? malloc((size_t)(per * ldw) * sizeof(float)) : NULL;
        packed = sc[b].pad && (sc[b].hg || !fdx);
    }
    if (!packed) {
        for (int64_t b = 0; sc && b < nb; b++)
            scratch_free(&sc[b]);
        free(sc);
        sc = NULL;
        fdx = false;
    }
    packed_b pbx = pb; /* W_ih's panels alone */
    pbx.p = pb.p + (H / mk.nr) * GH * mk.nr;
    pbx.cols = In;
    pbx.panels = pb.panels - H / mk.nr;
    ROW_BLOCKS(N, r0, r1, {
        float *pad = sc ? sc[r0 / per].pad : NULL, *C = sc ? sc[r0 / per].hg : NULL;
        micro_kernel k = fx__rnn_kernel_for_rows(r1 - r0);
        for (int64_t s = a->steps - 1; s >= 0; s--) {
            /* the last step run keeps dh exact when the caller wants it */
            bool last = s == 0 && !a->want_dh0;
            bool skip = cells_backward(a, &g, s, r0, r1, pad && !last);
            if (last && !fdx)
                continue;
            /* dh += dhg[s] W_hh (then the gradient of hs[s]); without dhg
             * (dense LSTM) its rows are dxg's at position s */
            const float *dhg = a->dhg ? fx_f32(a->dhg) + (s * N + r0) * GH
                                      : fx_f32(a->dxg) + (r0 * g.T + s) * GH;
            int64_t lda = a->dhg ? GH : g.T * GH;
            float *dh = fx_f32(a->dh) + r0 * H;
            if (s > 0)
                prefetch_step(a, &g, s - 1, r0, r1, true);
            if (fdx) {
                fx__rnn_product(&k, &(prod_args){ .M = r1 - r0, .N = last ? In : H + In,
                                                  .K = GH, .a = dhg, .rsa = lda, .csa = 1,
                                                  .pb = last ? &pbx : &pb, .c = last ? C + H : C,
                                                  .ldc = ldw, .c_padded = true, .pad = pad },
                                false);
                add_step(a, &g, s, r0, r1, C, ldw, last ? NULL : dh, skip, In);
            } else if (pad) {
                fx__rnn_product(&k, &(prod_args){ .M = r1 - r0, .N = H, .K = GH, .a = dhg,
                                                  .rsa = lda, .csa = 1, .pb = &pb, .c = dh,
                                                  .ldc = H, .add = !skip, .pad = pad },
                                false);
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)H,
                            (int)GH, 1.0f, dhg, (int)lda, fx_f32(a->w_hh), (int)H, 1.0f, dh,
                            (int)H);
            }
        }
    });
    for (int64_t b = 0; sc && b < nb; b++)
        scratch_free(&sc[b]);
    free(sc);
    free(pb.p);
    if (fdx)
        *a->dx_added = true;
}

/* ------------------------------------------------- sequence-wide products */

/* y [R, G] = x [R, C] w^T + bias, w [G, C] packed once (transposed). */
static bool cpu_rnn_gates(int64_t R, const fx_tensor *x, const fx_tensor *w,
                          const fx_tensor *bias, fx_tensor *y)
{
    if (fx__rnn_isa == 4)
        return false;
    int64_t G = w->shape[0], C = w->shape[1];
    micro_kernel mk = fx__rnn_kernel_for_rows(R);
    packed_b pb;
    if (!fx__rnn_pack_b(&pb, fx_f32(w), C, true, C, G, mk.nr))
        return false;
    bool ok = fx__rnn_product(&mk, &(prod_args){ .M = R, .N = G, .K = C, .a = fx_f32(x),
                                                 .rsa = C, .csa = 1, .pb = &pb,
                                                 .bias = bias ? fx_f32(bias) : NULL,
                                                 .c = fx_f32(y), .ldc = G }, true);
    free(pb.p);
    return ok;
}

/* dx [R, C] += dg [R, G] w, w [G, C] packed once (as is). */
static bool cpu_rnn_grad_input(int64_t R, const fx_tensor *dg, const fx_tensor *w,
                               fx_tensor *dx)
{
    if (fx__rnn_isa == 4)
        return false;
    int64_t G = w->shape[0], C = w->shape[1];
    micro_kernel mk = fx__rnn_kernel_for_rows(R);
    packed_b pb;
    if (!fx__rnn_pack_b(&pb, fx_f32(w), C, false, G, C, mk.nr))
        return false;
    bool ok = fx__rnn_product(&mk, &(prod_args){ .M = R, .N = C, .K = G, .a = fx_f32(dg),
                                                 .rsa = G, .csa = 1, .pb = &pb, .c = fx_f32(dx),
                                                 .ldc = C, .add = true }, true);
    free(pb.p);
    return ok;
}

/* gw[s] += dg^T x[s] (and gb += dg's column sums): rnn_wgrad.c (false
 * where it does not run). */
static bool cpu_rnn_grad_weights(int64_t R, const fx_tensor *dg, int n,
                                 const fx_tensor *const *x, fx_tensor *const *gw, fx_tensor *gb)
{
    const float *xs[2];
    float *gs[2];
    int64_t C[2];
    if (n < 1 || n > 2)
        return false;
    for (int s = 0; s < n; s++) {
        xs[s] = fx_f32(x[s]);
        gs[s] = fx_f32(gw[s]);
        C[s] = x[s]->shape[x[s]->ndim - 1];
    }
    return fx__rnn_grad_weights(R, dg->shape[dg->ndim - 1], fx_f32(dg), n, xs, C, gs,
                                gb ? fx_f32(gb) : NULL);
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
    .gates = cpu_rnn_gates,
    .grad_input = cpu_rnn_grad_input,
    .grad_weights = cpu_rnn_grad_weights,
    .fused_gates = true,
    .dense_lstm = true,
};
