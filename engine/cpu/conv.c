/*
 * conv.c - CPU kernels: convolution (im2col and a register-tiled matrix
 * product of our own). The conv family's table is here; its pooling
 * kernels are in pool.c, the channel bias and the conv + ReLU fusion's
 * element loops in conv_bias.c.
 *
 * Convolution. The input patches of a block of samples are unrolled into a
 * column matrix col [Kc, S*L] (Kc = C/groups * KH * KW taps, L = OH*OW
 * output positions, S samples side by side) and, per group, the convolution
 * becomes products with the group's weight W_g [Og, Kc]:
 *
 *     forward          y_g    = W_g col          M = Og, N = S*L, K = Kc
 *     backward data    dcol   = W_g^T dy_g       M = Kc, N = S*L, K = Og
 *                      then col2im adds dcol into dx (or sets a new one)
 *     backward weight  dW_g^T += col dy_g^T      M = Kc, N = Og,  K = S*L
 *
 * (With at most 12 taps, the weight pass is dot products instead:
 * conv_wdot.c.)
 *
 * Unrolling several samples together gives the products long rows (a 14x14
 * output alone would leave a 32-wide tile 1/8 empty) while col stays in
 * cache. A 1x1 convolution with stride 1 and no padding needs no unrolling
 * in the forward and data passes: the input is col (and dx is dcol).
 *
 * The products run on a register-tiled kernel of our own rather than BLAS:
 * it reads the weights, the unrolled input and dy where they lie (A by row
 * and column strides, B and C in per-sample segments), so nothing is packed
 * but the small dy^T of the weight pass and the edges of each matrix; and
 * the speed does not hang on which kernels the system's BLAS picked for the
 * CPU (OpenBLAS 0.3.21 takes some AVX-512 Xeons for a Prescott and runs
 * SSE3 code).
 *
 * Threads. With at least as many samples as threads, the batch is split into
 * one contiguous run of samples per thread, each with its own buffers (and,
 * for the weight gradient, its own partial sum, added up in thread order at
 * the end, so results do not depend on scheduling). With fewer samples
 * (inference on one image), blocks run in turn and each step is split
 * instead: the unrolling over rows, col2im over channels, the products over
 * tiles.
 */
#include "cpu.h"
#include "micro.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

/* ------------------------------------------------------- micro-kernels */

/* The tile kernel: micro.h (FX_MICRO), shared with rnn.c. */
typedef fx_micro_fn micro_fn;

/* A micro-kernel, its tile and its speed relative to the widest of its set
 * (so a product can trade padded rows against speed). */
typedef struct {
    micro_fn fn;
    int64_t mr, nr;
    double speed;
} micro_kernel;

#define MR_MAX 12
#define NR_MAX 32
#define MR_LCM 24   /* every kernel's MR divides it: padded row counts fit all */
#define KC 256      /* K steps per pass over a tile: B's NR-wide panel stays in L1 */
#define COL_BUDGET (1 << 17) /* floats of unrolled input per block (512 KB: half of L2) */

FX_MICRO(micro_generic, , 4, 4, 2)
#if defined(__x86_64__) && defined(__GNUC__)
#define FX_HAVE_X86_MICRO 1
FX_MICRO(micro_avx2, __attribute__((target("avx2,fma"))), 8, 6, 2)
FX_MICRO(micro_avx512_12, __attribute__((target("avx512f,fma"))), 16, 12, 2)
FX_MICRO(micro_avx512_8, __attribute__((target("avx512f,fma"))), 16, 8, 2)
#endif

/* For tests: 1 forces the portable kernels, 2 AVX2, 3 AVX-512 (each only
 * when the CPU has it); 0 picks the best the CPU has. */
int fx__conv_isa = 0;

/* The kernel for a product with M rows: of the best instruction set's
 * kernels (all with one NR), the one with the least time on padded rows. */
static micro_kernel kernel_for_rows(int64_t M)
{
#ifdef FX_HAVE_X86_MICRO
    bool avx512 = __builtin_cpu_supports("avx512f");
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx512 && (fx__conv_isa == 0 || fx__conv_isa == 3)) {
        micro_kernel k12 = { micro_avx512_12, 12, 32, 1.0 }, k8 = { micro_avx512_8, 8, 32, 0.92 };
        double c12 = (double)((M + 11) / 12 * 12) / k12.speed;
        double c8 = (double)((M + 7) / 8 * 8) / k8.speed;
        return c8 < c12 ? k8 : k12;
    }
    if (avx2 && fx__conv_isa != 1)
        return (micro_kernel){ micro_avx2, 6, 16, 1.0 };
#endif
    (void)M;
    return (micro_kernel){ micro_generic, 4, 8, 1.0 };
}

/* ------------------------------------------------------------ products */

/*
 * One product C = (add ? C : 0) + bias + A B, M x N with inner size K.
 * A(i, k) = a[i*rsa + k*csa]; rows below am may be read (am >= M).
 * B(k, q) and C(i, q) live in segments of bseg (cseg) columns, segment s at
 * b + s*bstride (c + s*cstride), rows ldb (ldc) apart: a block of samples
 * side by side. The first bread columns of a B segment may be read, and the
 * first cm rows and cwrite columns of a C segment written (padding lets full
 * tiles run on the buffers themselves). bias: one per row, readable to M +
 * MR_MAX, or NULL.
 */
typedef struct {
    int64_t M, N, K;
    const float *a;
    int64_t rsa, csa, am;
    const float *b;
    int64_t ldb, bseg, bstride, bread;
    float *c;
    int64_t ldc, cseg, cstride, cm, cwrite;
    bool add;
    const float *bias;
} mm_args;

/* Copies B's columns [j, j+nr) x rows [pc, pc+kc) to panel (rows of nr),
 * reading each run of columns from its segment; columns past N are zero. */
static void copy_b(const mm_args *x, int64_t j, int64_t nr, int64_t pc, int64_t kc, float *panel)
{
    int64_t end = j + nr < x->N ? j + nr : x->N;
    for (int64_t q = j; q < end;) {
        int64_t s = q / x->bseg, off = q % x->bseg;
        int64_t run = (s + 1) * x->bseg < end ? (s + 1) * x->bseg - q : end - q;
        const float *src = x->b + s * x->bstride + off + pc * x->ldb;
        for (int64_t k = 0; k < kc; k++)
            memcpy(panel + k * nr + (q - j), src + k * x->ldb, (size_t)run * sizeof(float));
        q += run;
    }
    for (int64_t k = 0; k < kc; k++)
        for (int64_t q = end; q < j + nr; q++)
            panel[k * nr + (q - j)] = 0.0f;
}

/* Adds or copies the valid part (rows below M, columns below N) of a tile
 * computed at rows i, columns j into C, column runs per segment. */
static void store_tile(const mm_args *x, const float *t, int64_t mr, int64_t nr, int64_t i,
                       int64_t j, bool add)
{
    int64_t rows = x->M - i < mr ? x->M - i : mr, end = j + nr < x->N ? j + nr : x->N;
    for (int64_t q = j; q < end;) {
        int64_t s = q / x->cseg, off = q % x->cseg;
        int64_t run = (s + 1) * x->cseg < end ? (s + 1) * x->cseg - q : end - q;
        for (int64_t r = 0; r < rows; r++) {
            float *dst = x->c + s * x->cstride + off + (i + r) * x->ldc;
            const float *src = t + r * nr + (q - j);
            for (int64_t u = 0; u < run; u++)
                dst[u] = (add ? dst[u] : 0.0f) + src[u];
        }
        q += run;
    }
}

/*
 * The tiles [is0, is1) x [js0, js1) (in slivers of MR rows and NR columns)
 * of a product, K in steps of KC. A sliver of B that crosses a segment or
 * runs past the readable columns is copied to bpanel (KC x NR); the last
 * sliver of A, when it runs past A's readable rows, to apanel (KC x MR,
 * zero rows); a tile that crosses a segment or runs past C's writable part
 * is computed into a local tile and its valid part stored.
 */
static void mm_tiles(const micro_kernel *mk, const mm_args *x, int64_t is0, int64_t is1,
                     int64_t js0, int64_t js1, float *apanel, float *bpanel)
{
    int64_t mr = mk->mr, nr = mk->nr;
    int64_t edge = is1 > is0 && is1 * mr > x->am ? is1 - 1 : -1; /* the A sliver to copy */
    for (int64_t pc = 0; pc < x->K; pc += KC) {
        int64_t kc = x->K - pc < KC ? x->K - pc : KC;
        bool add = x->add || pc > 0;
        const float *bias = pc == 0 ? x->bias : NULL;
        if (edge >= 0)
            for (int64_t k = 0; k < kc; k++)
                for (int64_t r = 0; r < mr; r++) {
                    int64_t i = edge * mr + r;
                    apanel[k * mr + r] = i < x->am ? x->a[i * x->rsa + (pc + k) * x->csa] : 0.0f;
                }
        for (int64_t js = js0; js < js1; js++) {
            int64_t j = js * nr, ldb = x->ldb;
            const float *bp = x->b + j / x->bseg * x->bstride + j % x->bseg + pc * ldb;
            if (j % x->bseg + nr > x->bread) {
                copy_b(x, j, nr, pc, kc, bpanel);
                bp = bpanel;
                ldb = nr;
            }
            bool cdirect = j % x->cseg + nr <= x->cwrite;
            float *cbase = x->c + j / x->cseg * x->cstride + j % x->cseg;
            for (int64_t is = is0; is < is1; is++) {
                int64_t i = is * mr;
                const float *bi = bias ? bias + i : NULL;
                const float *ap = x->a + i * x->rsa + pc * x->csa;
                int64_t rsa = x->rsa, csa = x->csa;
                if (is == edge)
                    ap = apanel, rsa = 1, csa = mr;
                if (cdirect && i + mr <= x->cm) {
                    mk->fn(kc, ap, rsa, csa, bp, ldb, cbase + i * x->ldc, x->ldc, add, bi, NULL);
                } else {
                    float t[MR_MAX * NR_MAX];
                    mk->fn(kc, ap, rsa, csa, bp, ldb, t, nr, false, bi, NULL);
                    store_tile(x, t, mr, nr, i, j, add);
                }
            }
        }
    }
}

/* ------------------------------------------------------------ planning */

/* Sizes of one kernel call, the kernels of its products and its workspace. */
typedef struct {
    const fx_conv_geom *g;
    int64_t cg, og, kc, l, hw; /* per group: channels, outputs, taps; plane sizes */
    bool direct;               /* 1x1, stride 1, no padding: col is the input */
    bool wdot;                 /* the weight pass by dot products (conv_wdot.c) */
    micro_kernel kf, kd, kw;   /* kernels of the forward, data and weight products */
    int64_t nr;                /* their NR (one per instruction set) */
    int64_t nt;                /* threads given a run of samples (1: split each block) */
    int64_t nb;                /* samples unrolled together */
    int64_t kcp, ldn, ogn;     /* Kc to MR_LCM; columns of col (nb*L to NR); Og to NR */
    /* Workspace (floats): the bias padded by MR_MAX per group, shared, then
     * one region per thread: col, an A panel, a B panel, dy^T for nb
     * samples, a weight-gradient sum per group and (fused ReLU) the bias
     * gradient's sums in 4 lanes per output. */
    int64_t shared, apanel, bpanel, bt, dwt, dbt, per_thread;
} conv_plan;

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

static conv_plan plan_of(const fx_conv_geom *g)
{
    conv_plan p;
    p.g = g;
    p.cg = g->c / g->groups;
    p.og = g->o / g->groups;
    p.kc = p.cg * g->kh * g->kw;
    p.l = g->oh * g->ow;
    p.hw = g->h * g->w;
    p.direct = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 &&
               g->pw == 0 && g->oh == g->h && g->ow == g->w;
    p.kf = kernel_for_rows(p.og);
    p.kd = kernel_for_rows(p.kc);
    p.kw = kernel_for_rows(p.kc);
    p.wdot = cpu_conv_wgrad_dot_ok(p.kc);
    p.nr = p.kf.nr;
    p.nt = g->n >= fx__num_threads ? fx__num_threads : 1;
    p.kcp = round_up(p.kc, MR_LCM);
    int64_t per = p.nt > 1 ? g->n / p.nt : g->n, fit = COL_BUDGET / (p.kcp * p.l);
    p.nb = fit < 1 ? 1 : fit < per ? fit : per > 0 ? per : 1;
    p.ldn = round_up(p.nb * p.l, p.nr);
    p.ogn = round_up(p.og, p.nr);
    p.shared = g->groups * (p.og + MR_MAX);
    p.apanel = p.kcp * p.ldn; /* col comes first */
    p.bpanel = p.apanel + KC * MR_MAX;
    p.bt = p.bpanel + KC * NR_MAX;
    p.dwt = p.bt + p.nb * p.l * p.ogn;
    p.dbt = p.dwt + g->groups * p.kcp * p.ogn; /* fused ReLU: 4 bias lanes per output */
    p.per_thread = p.dbt + 4 * g->o;
    return p;
}

static int64_t cpu_conv2d_workspace(const fx_conv_geom *g)
{
    conv_plan p = plan_of(g);
    return p.shared + fx__num_threads * p.per_thread;
}

/* Runs a product on this thread with region t's panels, or split over every
 * thread (region k for part k) along its longer side in slivers. */
static void product(const conv_plan *p, const micro_kernel *mk, const mm_args *x, bool par,
                    float *regions, int64_t t)
{
    int64_t ms = (x->M + mk->mr - 1) / mk->mr, ns = (x->N + mk->nr - 1) / mk->nr;
    if (!par) {
        float *r = regions + t * p->per_thread;
        mm_tiles(mk, x, 0, ms, 0, ns, r + p->apanel, r + p->bpanel);
        return;
    }
    int64_t nt = fx__num_threads, len = ns >= ms ? ns : ms;
    bool by_cols = ns >= ms;
    FX_PFOR(2.0 * (double)x->M * x->N * x->K, k, nt, {
        int64_t lo = k * len / nt, hi = (k + 1) * len / nt;
        float *r = regions + k * p->per_thread;
        if (by_cols)
            mm_tiles(mk, x, 0, ms, lo, hi, r + p->apanel, r + p->bpanel);
        else
            mm_tiles(mk, x, lo, hi, 0, ns, r + p->apanel, r + p->bpanel);
    });
}

/* ---------------------------------------------------- im2col, col2im */

/* The output columns j with 0 <= j*s + off < n (an image row seen from an
 * output row), as [*j0, *j1) within [0, on); the same for rows. */
static void valid_range(int64_t off, int64_t s, int64_t n, int64_t on, int64_t *j0, int64_t *j1)
{
    int64_t lo = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t hi = n - 1 - off < 0 ? 0 : (n - 1 - off) / s + 1;
    *j0 = lo < on ? lo : on;
    *j1 = hi < on ? hi : on;
    if (*j1 < *j0)
        *j1 = *j0;
}

/*
 * Where kernel tap (a, b) reads: output (i, j) sees image (i*SH + dy,
 * j*SW + off); the output rows [i0, i1) and columns [j0, j1) land in the
 * image. In a "same" layer (strides 1, OW == W) the rows [i0, i1) read one
 * contiguous run of the image from src, shifted by off: what the shift
 * carries across a row end (columns outside [j0, j1)) stands for padding.
 */
typedef struct {
    int64_t dy, off, i0, i1, j0, j1, src;
    bool same;
} tap_geom;

static tap_geom tap_of(const fx_conv_geom *g, int64_t a, int64_t b)
{
    tap_geom t;
    t.dy = a * g->dh - g->ph;
    t.off = b * g->dw - g->pw;
    valid_range(t.dy, g->sh, g->h, g->oh, &t.i0, &t.i1);
    valid_range(t.off, g->sw, g->w, g->ow, &t.j0, &t.j1);
    t.same = g->sh == 1 && g->sw == 1 && g->ow == g->w;
    t.src = (t.i0 + t.dy) * g->w + t.off;
    return t;
}

/* Zeroes the columns outside [j0, j1) of rows [i0, i1) of a row of col:
 * column by column (a column or two; a loop along rows would become a
 * memset call per row). */
static void zero_edges(const tap_geom *t, int64_t ow, float *d)
{
    for (int64_t j = 0; j < ow; j++)
        if (j < t->j0 || j >= t->j1)
            for (int64_t i = t->i0; i < t->i1; i++)
                d[i * ow + j] = 0.0f;
}

/* One row of the unrolled input: d[i*OW + j] = xc[(i*SH + dy)*W + j*SW + off]
 * for the positions in the image. The positions outside it are padding and
 * d holds zeros there already (the buffer is zeroed once per call and they
 * are the same for every sample), so only the image part is written. A
 * "same" layer copies its rows as one run and then zeroes what the shift
 * carried across row ends; others copy per output row (short rows in small
 * layers: plain loops, not memcpy calls). */
static void unroll_row(const fx_conv_geom *g, const tap_geom *t, int64_t hw, const float *xc,
                       float *d)
{
    int64_t ow = g->ow;
    if (t->same) {
        int64_t n = (t->i1 - t->i0) * ow, lo = t->src < 0 ? -t->src : 0;
        int64_t hi = hw - t->src < n ? hw - t->src : n;
        if (hi > lo)
            memcpy(d + t->i0 * ow + lo, xc + t->src + lo, (size_t)(hi - lo) * sizeof(float));
        zero_edges(t, ow, d);
        return;
    }
    for (int64_t i = t->i0; i < t->i1; i++) {
        float *row = d + i * ow;
        const float *src = xc + (i * g->sh + t->dy) * g->w + t->off;
        if (g->sw == 1)
            for (int64_t j = t->j0; j < t->j1; j++)
                row[j] = src[j];
        else
            for (int64_t j = t->j0; j < t->j1; j++)
                row[j] = src[j * g->sw];
    }
}

/* The adjoint of unroll_row: adds each entry of a row of dcol into the
 * image position it was read from. A "same" layer first zeroes the entries
 * standing for padding (they would land on a neighbouring row's ends), then
 * adds the rows as one run; the row is scratch. */
static void fold_row(const fx_conv_geom *g, const tap_geom *t, int64_t hw, float *src,
                     float *dxc)
{
    int64_t ow = g->ow;
    if (t->same) {
        zero_edges(t, ow, src);
        int64_t n = (t->i1 - t->i0) * ow, lo = t->src < 0 ? -t->src : 0;
        int64_t hi = hw - t->src < n ? hw - t->src : n;
        if (hi <= lo)
            return;
        float *dd = dxc + t->src + lo;
        const float *ss = src + t->i0 * ow + lo;
        for (int64_t q = 0; q < hi - lo; q++)
            dd[q] += ss[q];
        return;
    }
    for (int64_t i = t->i0; i < t->i1; i++) {
        const float *row = src + i * ow;
        float *dst = dxc + (i * g->sh + t->dy) * g->w + t->off;
        if (g->sw == 1)
            for (int64_t j = t->j0; j < t->j1; j++)
                dst[j] += row[j];
        else
            for (int64_t j = t->j0; j < t->j1; j++)
                dst[j * g->sw] += row[j];
    }
}

/*
 * Unrolls (unfold) or folds back (!unfold) channels [c0, c1) of one sample's
 * group: row r = (c, a, b) of col (rows ld apart) holds tap (a, b) of
 * channel c for every output position. Channels outside, taps inside: col
 * is walked in its row order and a channel's plane stays in L1 across its
 * taps (the taps' geometry is worked out once, for up to TAPS_MAX taps).
 * zero (folding into a new gradient buffer): each plane is zeroed first,
 * while it is about to be in cache, instead of in a pass of its own.
 */
#define TAPS_MAX 64
static void col_channels(const conv_plan *p, bool unfold, bool zero, float *x, float *col,
                         int64_t ld, int64_t c0, int64_t c1)
{
    const fx_conv_geom *g = p->g;
    int64_t taps = g->kh * g->kw;
    tap_geom tg[TAPS_MAX];
    for (int64_t k = 0; k < taps && k < TAPS_MAX; k++)
        tg[k] = tap_of(g, k / g->kw, k % g->kw);
    for (int64_t c = c0; c < c1; c++) {
        float *xc = x + c * p->hw;
        if (zero)
            memset(xc, 0, (size_t)p->hw * sizeof(float));
        for (int64_t k = 0; k < taps; k++) {
            tap_geom t = k < TAPS_MAX ? tg[k] : tap_of(g, k / g->kw, k % g->kw);
            float *row = col + (c * taps + k) * ld;
            if (unfold)
                unroll_row(g, &t, p->hw, xc, row);
            else
                fold_row(g, &t, p->hw, row, xc);
        }
    }
}

/* im2col (unfold) or col2im (fold; zero: into zeroed planes) of one
 * sample's group, split over channels when par (channels are independent
 * both ways). */
static void col_run(const conv_plan *p, bool par, bool unfold, bool zero, float *x, float *col,
                    int64_t ld)
{
    if (par)
        FX_PFOR(p->kc * p->l, c, p->cg, col_channels(p, unfold, zero, x, col, ld, c, c + 1););
    else
        col_channels(p, unfold, zero, x, col, ld, 0, p->cg);
}

/*
 * dst[q*ld + o] = src[o*cols + q] for a rows x cols src, columns rows..ld of
 * dst zero. With AVX-512 and no mask, the first rows / 16 * 16 rows in
 * 16x16 blocks (transpose16_avx512); the others in 4x4 blocks of vector
 * shuffles (the element-wise loop costs more than the weight gradient's
 * product in a layer with few taps), within blocks of 16 columns so the
 * rows written stay in L1.
 *
 * With ym (a ReLU's output, laid out as src), src is first masked where
 * ym <= 0 and each masked row's sum added into sums (4 lanes per row: lane
 * k of row o sums the columns q with q % 4 == k in the vector part, the
 * tail into lane 0), for the fused ReLU's weight and bias gradients.
 */
#ifdef FX_HAVE_X86_MICRO
/* The rows [0, rows16) (a multiple of 16) of transpose_pad without a mask,
 * in 16x16 blocks of AVX-512 shuffles: each group of 16 rows is read along
 * its length (16 streams the prefetchers follow), a masked load for the
 * columns' tail, and each block lands as 16 stores of 16 floats. */
__attribute__((target("avx512f"))) static void transpose16_avx512(const float *src,
                                                                 int64_t rows16, int64_t cols,
                                                                 float *dst, int64_t ld)
{
    for (int64_t o = 0; o < rows16; o += 16)
        for (int64_t q = 0; q < cols; q += 16) {
            int64_t n = cols - q < 16 ? cols - q : 16;
            __mmask16 m = (__mmask16)(n == 16 ? 0xffffu : (1u << n) - 1);
            __m512 r[16], t[16], u[16], v[16];
            for (int i = 0; i < 16; i++)
                r[i] = _mm512_maskz_loadu_ps(m, src + (o + i) * cols + q);
            for (int i = 0; i < 16; i += 2) { /* 32-bit pairs of rows i, i+1 */
                t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 16; i += 4) { /* u[i + j]: column 4k + j of rows i..i+3 */
                __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
                __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
                u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
                u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
                u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
                u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
            }
            for (int h = 0; h < 16; h += 8) /* lanes 0,2 and 1,3 of rows h..h+7 */
                for (int j = 0; j < 4; j++) {
                    v[h + j] = _mm512_shuffle_f32x4(u[h + j], u[h + 4 + j], 0x88);
                    v[h + 4 + j] = _mm512_shuffle_f32x4(u[h + j], u[h + 4 + j], 0xdd);
                }
            for (int j = 0; j < 4; j++) { /* columns j, 4+j, 8+j, 12+j: all 16 rows */
                r[j] = _mm512_shuffle_f32x4(v[j], v[8 + j], 0x88);
                r[4 + j] = _mm512_shuffle_f32x4(v[4 + j], v[12 + j], 0x88);
                r[8 + j] = _mm512_shuffle_f32x4(v[j], v[8 + j], 0xdd);
                r[12 + j] = _mm512_shuffle_f32x4(v[4 + j], v[12 + j], 0xdd);
            }
            for (int i = 0; i < n; i++)
                _mm512_storeu_ps(dst + (q + i) * ld + o, r[i]);
        }
}
#endif

static void transpose_pad(const float *src, const float *ym, float *sums, int64_t rows,
                          int64_t cols, float *dst, int64_t ld)
{
    int64_t o0 = 0; /* the rows done by the AVX-512 blocks */
#ifdef FX_HAVE_X86_MICRO
    if (!ym && rows >= 16 && __builtin_cpu_supports("avx512f") &&
        (fx__conv_isa == 0 || fx__conv_isa == 3)) {
        o0 = rows / 16 * 16;
        transpose16_avx512(src, o0, cols, dst, ld);
    }
#endif
    int64_t r4 = o0 + (rows - o0) / 4 * 4, c4 = cols / 4 * 4;
    const fx_v4f zero = { 0 };
    for (int64_t q0 = 0; q0 < cols; q0 += 16) {
        int64_t q1 = q0 + 16 < cols ? q0 + 16 : cols;
        for (int64_t o = o0; o < r4; o += 4) {
            const float *s0 = src + o * cols;
            const float *m0 = ym ? ym + o * cols : NULL;
            int64_t q = q0;
            for (; q + 4 <= q1; q += 4) {
                fx_v4f a = *(const fx_v4f *)(s0 + q), b = *(const fx_v4f *)(s0 + cols + q);
                fx_v4f c = *(const fx_v4f *)(s0 + 2 * cols + q);
                fx_v4f d = *(const fx_v4f *)(s0 + 3 * cols + q);
                if (m0) {
                    a = (fx_v4f)((*(const fx_v4f *)(m0 + q) > zero) & (fx_v4i)a);
                    b = (fx_v4f)((*(const fx_v4f *)(m0 + cols + q) > zero) & (fx_v4i)b);
                    c = (fx_v4f)((*(const fx_v4f *)(m0 + 2 * cols + q) > zero) & (fx_v4i)c);
                    d = (fx_v4f)((*(const fx_v4f *)(m0 + 3 * cols + q) > zero) & (fx_v4i)d);
                    *(fx_v4f *)(sums + 4 * o) += a;
                    *(fx_v4f *)(sums + 4 * o + 4) += b;
                    *(fx_v4f *)(sums + 4 * o + 8) += c;
                    *(fx_v4f *)(sums + 4 * o + 12) += d;
                }
                fx_v4f t0 = FX_SHUF(a, b, 0, 4, 1, 5), t1 = FX_SHUF(a, b, 2, 6, 3, 7);
                fx_v4f t2 = FX_SHUF(c, d, 0, 4, 1, 5), t3 = FX_SHUF(c, d, 2, 6, 3, 7);
                *(fx_v4f *)(dst + q * ld + o) = FX_SHUF(t0, t2, 0, 1, 4, 5);
                *(fx_v4f *)(dst + (q + 1) * ld + o) = FX_SHUF(t0, t2, 2, 3, 6, 7);
                *(fx_v4f *)(dst + (q + 2) * ld + o) = FX_SHUF(t1, t3, 0, 1, 4, 5);
                *(fx_v4f *)(dst + (q + 3) * ld + o) = FX_SHUF(t1, t3, 2, 3, 6, 7);
            }
            for (; q < q1; q++)
                for (int64_t k = 0; k < 4; k++) {
                    float v = s0[k * cols + q];
                    if (m0) {
                        v = m0[k * cols + q] > 0.0f ? v : 0.0f;
                        sums[4 * (o + k)] += v;
                    }
                    dst[q * ld + o + k] = v;
                }
        }
        for (int64_t o = r4; o < rows; o++)
            for (int64_t q = q0; q < q1; q++) {
                float v = src[o * cols + q];
                if (ym) {
                    v = ym[o * cols + q] > 0.0f ? v : 0.0f;
                    sums[4 * o + (q < c4 ? q % 4 : 0)] += v;
                }
                dst[q * ld + o] = v;
            }
        for (int64_t q = q0; q < q1; q++)
            for (int64_t o = rows; o < ld; o++)
                dst[q * ld + o] = 0.0f;
    }
}

/* ----------------------------------------------------------- the passes */

typedef enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHT } conv_pass;

/* The operands of one kernel call. CONV_FWD: x, w, b -> y; CONV_BWD_DATA:
 * dy (in y), w -> dx (in x); CONV_BWD_WEIGHT: x, dy (in y) -> dw (in w).
 * accumulate: y (CONV_FWD) or dx (CONV_BWD_DATA) is added to, else set. */
typedef struct {
    conv_pass pass;
    float *x, *w, *y;
    const float *b;
    bool accumulate;
    bool relu; /* CONV_FWD: clamp y at 0 after each block's product */
    const float *ym; /* CONV_BWD_WEIGHT: mask dy where this ReLU output is <= 0 */
    float *db;       /* ... and add the masked dy's sums here (may be NULL) */
    float *bias, *regions; /* workspace: padded bias, per-thread regions */
} conv_io;

/*
 * One block of samples [s0, s1) for a pass, with thread region t's buffers;
 * first says it is the region's first block (its weight-gradient sum starts
 * there); par splits each step over the threads.
 */
static void conv_block(const conv_plan *p, const conv_io *io, int64_t s0, int64_t s1, int64_t t,
                       bool first, bool par)
{
    const fx_conv_geom *g = p->g;
    int64_t S = s1 - s0, xs = g->c * p->hw, ys = g->o * p->l;
    float *mine = io->regions + t * p->per_thread, *col = mine;
    for (int64_t gi = 0; gi < g->groups; gi++) {
        float *xg = io->x + s0 * xs + gi * p->cg * p->hw, *yg = io->y + s0 * ys + gi * p->og * p->l;
        float *wg = io->w + gi * p->og * p->kc;
        bool unroll = io->pass == CONV_BWD_WEIGHT || (io->pass == CONV_FWD && !p->direct);
        if (unroll)
            for (int64_t s = 0; s < S; s++)
                col_run(p, par, true, false, xg + s * xs, col + s * p->l, p->ldn);
        mm_args a;
        switch (io->pass) {
        case CONV_FWD: /* y_g (Og x S*L, per-sample segments) = W_g col */
            a = (mm_args){ .M = p->og, .N = S * p->l, .K = p->kc,
                           .a = wg, .rsa = p->kc, .csa = 1, .am = p->og,
                           .b = col, .ldb = p->ldn, .bseg = S * p->l, .bread = p->ldn,
                           .c = yg, .ldc = p->l, .cseg = p->l, .cstride = ys, .cm = p->og,
                           .cwrite = p->l, .add = io->accumulate,
                           .bias = io->b ? io->bias + gi * (p->og + MR_MAX) : NULL };
            if (p->direct) /* col is x itself, in per-sample segments */
                a.b = xg, a.ldb = a.bseg = a.bread = p->hw, a.bstride = xs;
            product(p, &p->kf, &a, par, io->regions, t);
            if (io->relu) /* the block's outputs are still in cache */
                for (int64_t s = 0; s < S; s++)
                    cpu_conv_relu_rows(yg + s * ys, p->og * p->l);
            break;
        case CONV_BWD_DATA: /* dcol (Kc x S*L) = W_g^T dy_g; dx_g itself when 1x1 */
            a = (mm_args){ .M = p->kc, .N = S * p->l, .K = p->og,
                           .a = wg, .rsa = 1, .csa = p->kc, .am = p->kc,
                           .b = yg, .ldb = p->l, .bseg = p->l, .bstride = ys, .bread = p->l,
                           .c = col, .ldc = p->ldn, .cseg = S * p->l, .cm = p->kcp,
                           .cwrite = p->ldn };
            if (p->direct) {
                a.c = xg, a.ldc = a.cseg = a.cwrite = p->hw, a.cstride = xs;
                a.cm = p->kc, a.add = io->accumulate;
                product(p, &p->kd, &a, par, io->regions, t);
                break;
            }
            product(p, &p->kd, &a, par, io->regions, t);
            for (int64_t s = 0; s < S; s++)
                col_run(p, par, false, !io->accumulate, xg + s * xs, col + s * p->l, p->ldn);
            break;
        case CONV_BWD_WEIGHT: { /* dW_g^T (Kc x Og) += col dy_g^T, K = S*L */
            float *dwt = mine + p->dwt + gi * p->kcp * p->ogn;
            if (p->wdot) { /* few taps: dot products, dy read where it lies */
                const float *ymg = io->ym ? io->ym + s0 * ys + gi * p->og * p->l : NULL;
                float *sums = io->ym ? mine + p->dbt + 4 * gi * p->og : NULL;
                int64_t nt = par ? fx__num_threads : 1;
                FX_PFOR(par ? 2.0 * (double)S * p->l * p->og * p->kc : 0, k, nt, {
                    cpu_conv_wgrad_dot(p->kc, k * p->og / nt, (k + 1) * p->og / nt, S, p->l, col,
                                       p->ldn, yg, ymg, ys, dwt, p->ogn, !first, sums);
                });
                break;
            }
            float *bt = mine + p->bt;
            for (int64_t s = 0; s < S; s++)
                transpose_pad(yg + s * ys, io->ym ? io->ym + (s0 + s) * ys + gi * p->og * p->l : NULL,
                              mine + p->dbt + 4 * gi * p->og, p->og, p->l,
                              bt + s * p->l * p->ogn, p->ogn);
            a = (mm_args){ .M = p->kc, .N = p->ogn, .K = S * p->l,
                           .a = col, .rsa = p->ldn, .csa = 1, .am = p->kcp,
                           .b = bt, .ldb = p->ogn, .bseg = p->ogn, .bread = p->ogn,
                           .c = dwt, .ldc = p->ogn,
                           .cseg = p->ogn, .cm = p->kcp, .cwrite = p->ogn, .add = !first };
            product(p, &p->kw, &a, par, io->regions, t);
            break;
        }
        }
    }
}

/*
 * Runs a pass over the batch: either thread t takes the samples [t*N/nt,
 * (t+1)*N/nt) in blocks of nb, or the blocks run in turn with each step
 * split; the weight gradient's per-region sums are then added into dw in
 * region order.
 */
static void conv_run(const conv_plan *p, conv_io *io, fx_tensor *ws)
{
    const fx_conv_geom *g = p->g;
    io->bias = fx_f32(ws);
    io->regions = io->bias + p->shared;
    if (io->b) /* each group's bias, zero past Og */
        for (int64_t gi = 0; gi < g->groups; gi++)
            for (int64_t o = 0; o < p->og + MR_MAX; o++)
                io->bias[gi * (p->og + MR_MAX) + o] = o < p->og ? io->b[gi * p->og + o] : 0.0f;
    /* The unrolling writes only the image part of col: zero the buffers it
     * uses once. (Rows Kc..Kcp are read as the weight product's padding
     * rows of A; what they hold only reaches the discarded rows of its sums.) */
    if (io->pass == CONV_BWD_WEIGHT || (io->pass == CONV_FWD && !p->direct))
        for (int64_t t = 0; t < (p->nt > 1 ? p->nt : 1); t++)
            memset(io->regions + t * p->per_thread, 0, (size_t)(p->kc * p->ldn) * sizeof(float));
    if (io->ym)
        for (int64_t t = 0; t < (p->nt > 1 ? p->nt : 1); t++)
            memset(io->regions + t * p->per_thread + p->dbt, 0, (size_t)(4 * g->o) * sizeof(float));
    int64_t nt = p->nt, nb = p->nb;
    if (nt > 1) {
        double flops = 2.0 * (double)g->n * g->o * p->kc * p->l;
        FX_PFOR(flops, t, nt, {
            int64_t lo = t * g->n / nt, hi = (t + 1) * g->n / nt;
            for (int64_t s = lo; s < hi; s += nb)
                conv_block(p, io, s, s + nb < hi ? s + nb : hi, t, s == lo, false);
        });
    } else {
        for (int64_t s = 0; s < g->n; s += nb)
            conv_block(p, io, s, s + nb < g->n ? s + nb : g->n, 0, s == 0, fx__num_threads > 1);
    }
    if (io->pass != CONV_BWD_WEIGHT || g->n == 0)
        return;
    if (io->ym && io->db) /* the regions' bias sums, lanes then regions in order */
        for (int64_t o = 0; o < g->o; o++) {
            double sum = 0.0;
            for (int64_t t = 0; t < nt; t++)
                for (int k = 0; k < 4; k++)
                    sum += io->regions[t * p->per_thread + p->dbt + 4 * o + k];
            io->db[o] += (float)sum;
        }
    for (int64_t gi = 0; gi < g->groups; gi++)
        for (int64_t o = 0; o < p->og; o++) {
            float *dw = io->w + (gi * p->og + o) * p->kc;
            for (int64_t t = 0; t < nt; t++) {
                const float *s = io->regions + t * p->per_thread + p->dwt + gi * p->kcp * p->ogn;
                for (int64_t r = 0; r < p->kc; r++)
                    dw[r] += s[r * p->ogn + o];
            }
        }
}

static void cpu_conv2d(const fx_conv_geom *g, const fx_tensor *x, const fx_tensor *w,
                       const fx_tensor *b, fx_tensor *y, bool accumulate, fx_tensor *ws)
{
    conv_plan p = plan_of(g);
    conv_io io = { CONV_FWD, fx_f32(x), fx_f32(w), fx_f32(y), b ? fx_f32(b) : NULL, accumulate,
                   false, NULL, NULL, NULL, NULL };
    conv_run(&p, &io, ws);
}

static void cpu_conv2d_relu(const fx_conv_geom *g, const fx_tensor *x, const fx_tensor *w,
                            const fx_tensor *b, fx_tensor *y, fx_tensor *ws)
{
    conv_plan p = plan_of(g);
    conv_io io = { CONV_FWD, fx_f32(x), fx_f32(w), fx_f32(y), b ? fx_f32(b) : NULL, false,
                   true, NULL, NULL, NULL, NULL };
    conv_run(&p, &io, ws);
}

static void cpu_conv2d_backward_data(const fx_conv_geom *g, const fx_tensor *dy,
                                     const fx_tensor *w, fx_tensor *dx, fx_tensor *ws)
{
    conv_plan p = plan_of(g);
    conv_io io = { CONV_BWD_DATA, fx_f32(dx), fx_f32(w), fx_f32(dy), NULL, true, false, NULL,
                   NULL, NULL, NULL };
    conv_run(&p, &io, ws);
}

static void cpu_conv2d_backward_data_set(const fx_conv_geom *g, const fx_tensor *dy,
                                         const fx_tensor *w, fx_tensor *dx, fx_tensor *ws)
{
    conv_plan p = plan_of(g);
    conv_io io = { CONV_BWD_DATA, fx_f32(dx), fx_f32(w), fx_f32(dy), NULL, false, false, NULL,
                   NULL, NULL, NULL };
    conv_run(&p, &io, ws);
}

static void cpu_conv2d_backward_weight(const fx_conv_geom *g, const fx_tensor *x,
                                       const fx_tensor *dy, fx_tensor *dw, fx_tensor *ws)
{
    conv_plan p = plan_of(g);
    conv_io io = { CONV_BWD_WEIGHT, fx_f32(x), fx_f32(dw), fx_f32(dy), NULL, true, false, NULL,
                   NULL, NULL, NULL };
    conv_run(&p, &io, ws);
}

static void cpu_conv2d_backward_weight_relu(const fx_conv_geom *g, const fx_tensor *x,
                                            const fx_tensor *dy, const fx_tensor *y,
                                            fx_tensor *dw, fx_tensor *db, fx_tensor *ws)
{
    conv_plan p = plan_of(g);
    conv_io io = { CONV_BWD_WEIGHT, fx_f32(x), fx_f32(dw), fx_f32(dy), NULL, true, false,
                   fx_f32(y), db ? fx_f32(db) : NULL, NULL, NULL };
    conv_run(&p, &io, ws);
}

const fx_conv_kernels fx__cpu_conv = {
    .conv2d_workspace = cpu_conv2d_workspace,
    .conv2d = cpu_conv2d,
    .conv2d_backward_data = cpu_conv2d_backward_data,
    .conv2d_backward_data_set = cpu_conv2d_backward_data_set,
    .conv2d_backward_weight = cpu_conv2d_backward_weight,
    .channel_bias_fill = cpu_channel_bias_fill,
    .channel_bias_backward = cpu_channel_bias_backward,
    .pool2d = cpu_pool2d,
    .pool2d_backward = cpu_pool2d_backward,
    .pool2d_backward_set = cpu_pool2d_backward_set,
    .conv2d_relu = cpu_conv2d_relu,
    .relu_mask_bias_backward = cpu_relu_mask_bias_backward,
    .conv2d_backward_weight_relu = cpu_conv2d_backward_weight_relu,
};
