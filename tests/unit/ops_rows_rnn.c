/* ops_rows_rnn.c - registry rows of the recurrent stacks (tanh / relu RNN,
 * GRU, LSTM; several layers, both directions, per-sample lengths) and the
 * op under them. The output checked is out, h_n (and c_n) flattened into
 * one tensor, so every output reaches the gradient check. See
 * ops_registry.h. */
#include "ops_registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S1(a) { 1, { a } }
#define S2(a, b) { 2, { a, b } }
#define S3(a, b, c) { 3, { a, b, c } }

/* A stack: layers, directions, sizes, per-sample lengths; with_h0: h0 (and
 * c0 for an LSTM) are inputs 1 (and 2), else zeros. */
typedef struct {
    int L;
    bool bidir, no_bias;
    int64_t N, T, in, H;
    int64_t len[4];
    bool with_h0;
} rnn_cfg;

static int gates(fx_rnn_mode m) { return m == FX_RNN_LSTM ? 4 : m == FX_RNN_GRU ? 3 : 1; }

static double sig(double v) { return 1.0 / (1.0 + exp(-v)); }

/* See ops_registry.h; test_rnn checks the layers' forwards against it too. */
void or_rnn(const or_rnn_spec *c, const double *const (*w)[4], const double *x, const double *h0,
            const double *c0, double *out, double *hn, double *cn)
{
    int D = c->bidir ? 2 : 1, G = gates(c->mode);
    int64_t N = c->N, T = c->T, H = c->H, GH = G * H, DH = D * H;
    /* The step's state and gate sums, sized by the spec (no limit on H). */
    double *h = malloc((size_t)(2 * H + 2 * GH) * sizeof *h), *cc = h + H, *gx = cc + H,
           *gh = gx + GH;
    for (int64_t n = 0; n < N; n++) {
        int64_t len = c->len[n], width = c->in;
        double *seq = calloc((size_t)(T * (c->in > DH ? c->in : DH)), sizeof *seq);
        for (int64_t t = 0; t < len; t++)
            for (int64_t i = 0; i < c->in; i++)
                seq[t * c->in + i] = x[(n * T + t) * c->in + i];
        for (int l = 0; l < c->L; l++) {
            double *o = calloc((size_t)(T * DH), sizeof *o);
            for (int d = 0; d < D; d++) {
                int k = l * D + d;
                const double *wih = w[k][0], *whh = w[k][1], *bih = w[k][2], *bhh = w[k][3];
                for (int64_t j = 0; j < H; j++) {
                    h[j] = h0 ? h0[(k * N + n) * H + j] : 0.0;
                    cc[j] = c0 ? c0[(k * N + n) * H + j] : 0.0;
                }
                for (int64_t s = 0; s < len; s++) {
                    int64_t t = d ? len - 1 - s : s;
                    for (int64_t g = 0; g < GH; g++) {
                        gx[g] = bih ? bih[g] : 0.0;
                        gh[g] = bhh ? bhh[g] : 0.0;
                        for (int64_t i = 0; i < width; i++)
                            gx[g] += wih[g * width + i] * seq[t * width + i];
                        for (int64_t j = 0; j < H; j++)
                            gh[g] += whh[g * H + j] * h[j];
                    }
                    for (int64_t j = 0; j < H; j++) {
                        if (c->mode == FX_RNN_LSTM) {
                            double i = sig(gx[j] + gh[j]), f = sig(gx[H + j] + gh[H + j]);
                            double g = tanh(gx[2 * H + j] + gh[2 * H + j]);
                            double og = sig(gx[3 * H + j] + gh[3 * H + j]);
                            cc[j] = f * cc[j] + i * g;
                            h[j] = og * tanh(cc[j]);
                        } else if (c->mode == FX_RNN_GRU) {
                            double r = sig(gx[j] + gh[j]), z = sig(gx[H + j] + gh[H + j]);
                            double nn = tanh(gx[2 * H + j] + r * gh[2 * H + j]);
                            h[j] = (1.0 - z) * nn + z * h[j];
                        } else {
                            double v = gx[j] + gh[j];
                            h[j] = c->mode == FX_RNN_RELU ? (v > 0 ? v : 0.0) : tanh(v);
                        }
                    }
                    for (int64_t j = 0; j < H; j++)
                        o[t * DH + d * H + j] = h[j];
                }
                for (int64_t j = 0; j < H; j++) {
                    hn[(k * N + n) * H + j] = h[j];
                    if (cn)
                        cn[(k * N + n) * H + j] = cc[j];
                }
            }
            memcpy(seq, o, (size_t)(T * DH) * sizeof *o);
            width = DH;
            free(o);
        }
        memset(out + n * T * DH, 0, (size_t)(T * DH) * sizeof *out);
        memcpy(out + n * T * DH, seq, (size_t)(len * DH) * sizeof *out);
        free(seq);
    }
    free(h);
}

/* or_rnn on a row's stack, out, h_n and (LSTM) c_n written one after the
 * other into y, as the row's forward concatenates them. */
static void rnn_ref(fx_rnn_mode mode, const rnn_cfg *c, const double *const (*w)[4],
                    const double *x, const double *h0, const double *c0, double *y)
{
    or_rnn_spec s = { mode, c->L, c->bidir, c->N, c->T, c->in, c->H, c->len };
    int64_t D = c->bidir ? 2 : 1;
    double *hn = y + c->N * c->T * D * c->H, *cn = hn + c->L * D * c->N * c->H;
    /* y has room for c_n only for an LSTM. */
    or_rnn(&s, w, x, h0, c0, y, hn, mode == FX_RNN_LSTM ? cn : NULL);
}

/* The size of out, h_n and (LSTM) c_n together. */
static int64_t flat_size(fx_rnn_mode mode, const rnn_cfg *c)
{
    int64_t D = c->bidir ? 2 : 1, states = c->L * D * c->N * c->H;
    return c->N * c->T * D * c->H + states * (mode == FX_RNN_LSTM ? 2 : 1);
}

/* ----------------------------------------------------------------- layers */

static fx_layer *l_rnn(const void *arg, const or_case *c, fx_rng *rng)
{
    fx_rnn_mode mode = *(const fx_rnn_mode *)arg;
    const rnn_cfg *r = c->arg;
    fx_recurrent_opts o = { .num_layers = r->L, .bidirectional = r->bidir, .no_bias = r->no_bias,
                            .relu = mode == FX_RNN_RELU };
    return mode == FX_RNN_LSTM  ? fx_lstm_create("enc", r->in, r->H, &o, rng)
           : mode == FX_RNN_GRU ? fx_gru_create("enc", r->in, r->H, &o, rng)
                                : fx_rnn_create("enc", r->in, r->H, &o, rng);
}

static fx_tensor *f_rnn(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                        const or_case *c)
{
    const rnn_cfg *r = c->arg;
    bool lstm = *(const fx_rnn_mode *)arg == FX_RNN_LSTM;
    fx_tensor *len = or_index(ctx, FX_I64, 1, &r->N, r->len), *h_n, *c_n;
    fx_tensor *h0 = r->with_h0 ? in[1] : NULL, *c0 = r->with_h0 && lstm ? in[2] : NULL;
    fx_tensor *y = fx_recurrent_forward(l, ctx, in[0], len, h0, c0, &h_n, &c_n);
    return or_flat_concat(ctx, lstm ? 3 : 2, (fx_tensor *[]){ y, h_n, c_n });
}

static void r_rnn(const or_ref *r)
{
    fx_rnn_mode mode = *(const fx_rnn_mode *)r->arg;
    const rnn_cfg *c = r->c->arg;
    int D = c->bidir ? 2 : 1;
    const double *w[8][4];
    static const char *const what[4] = { "weight_ih", "weight_hh", "bias_ih", "bias_hh" };
    for (int l = 0; l < c->L; l++)
        for (int d = 0; d < D; d++)
            for (int k = 0; k < 4; k++) {
                char name[64];
                snprintf(name, sizeof name, "%s_l%d%s", what[k], l, d ? "_reverse" : "");
                const or_host *p = or_param(r, name);
                w[l * D + d][k] = p ? p->v : NULL;
            }
    int64_t n = flat_size(mode, c);
    or_host_init(r->out, 1, &n);
    bool lstm = mode == FX_RNN_LSTM;
    rnn_ref(mode, c, (const double *const (*)[4])w, r->in[0].v, c->with_h0 ? r->in[1].v : NULL,
            c->with_h0 && lstm ? r->in[2].v : NULL, r->out->v);
}

/* Two layers both ways with mixed lengths and one layer one way with a
 * length-1 sample, from given initial states; then the cross-backend
 * table's stacks from zero states. */
#define X_H0(n, t, in, ld, h) { S3(n, t, in), S3(ld, n, h), S3(ld, n, h) }
#define RNN_CASES(name, nst, ...)                                                                \
    static const or_case name[] = {                                                             \
        { "2 layers, both ways, lengths 4 2 3", 1 + (nst), X_H0(3, 4, 3, 4, 3), 0,               \
          &(const rnn_cfg){ 2, true, false, 3, 4, 3, 3, { 4, 2, 3 }, true } },                   \
        { "1 layer, lengths 1 3", 1 + (nst), X_H0(2, 3, 2, 1, 3), 0,                             \
          &(const rnn_cfg){ 1, false, false, 2, 3, 2, 3, { 1, 3 }, true } },                     \
        { "2 layers, both ways, no bias", 1 + (nst), X_H0(3, 4, 3, 4, 3), 0,                     \
          &(const rnn_cfg){ 2, true, true, 3, 4, 3, 3, { 2, 4, 1 }, true } },                    \
        { "[3,5,4] from zeros, lengths 5 2 4", 1, { S3(3, 5, 4) }, 0,                            \
          &(const rnn_cfg){ 1, false, false, 3, 5, 4, 5, { 5, 2, 4 }, false } },                 \
        __VA_ARGS__                                                                             \
    }
RNN_CASES(RNN_STACK_CASES, 1);
RNN_CASES(LSTM_STACK_CASES, 2,
          { "2 layers both ways, hidden 6, from zeros", 1, { S3(3, 5, 4) }, 0,
            &(const rnn_cfg){ 2, true, false, 3, 5, 4, 6, { 5, 2, 4 }, false } });

/* ------------------------------------------------------------------- op */

/* fx_recurrent with the weights as inputs: x, w_ih, w_hh, b_ih, b_hh. */
static fx_tensor *f_recurrent(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                              const or_case *c)
{
    const rnn_cfg *r = c->arg;
    fx_rnn_weights w = { in[1], in[2], in[3], in[4] };
    fx_recurrent_spec spec = { .mode = FX_RNN_GRU, .num_layers = 1, .weights = &w,
                               .name = "gru" };
    fx_tensor *len = or_index(ctx, FX_I32, 1, &r->N, r->len), *h_n;
    fx_tensor *y = fx_recurrent(ctx, &spec, in[0], len, NULL, NULL, &h_n, NULL);
    return or_flat_concat(ctx, 2, (fx_tensor *[]){ y, h_n });
}

static void r_recurrent(const or_ref *r)
{
    const rnn_cfg *c = r->c->arg;
    const double *w[1][4] = { { r->in[1].v, r->in[2].v, r->in[3].v, r->in[4].v } };
    int64_t n = flat_size(FX_RNN_GRU, c);
    or_host_init(r->out, 1, &n);
    rnn_ref(FX_RNN_GRU, c, (const double *const (*)[4])w, r->in[0].v, NULL, NULL, r->out->v);
}

static const or_case RECURRENT_CASES[] = {
    { "a GRU, i32 lengths 3 1", 5, { S3(2, 3, 2), S2(9, 2), S2(9, 3), S1(9), S1(9) }, 0,
      &(const rnn_cfg){ 1, false, false, 2, 3, 2, 3, { 3, 1 }, false } },
};

/* ------------------------------------------------------------------- rows */

#define RNN_FWD { 1e-5, "float gemms and cell formulas over at most 5 steps against double" }
#define RNN_FILL { { OR_NORMAL, 1, 0, 0 }, { OR_NORMAL, 0.5, 0, 0 }, { OR_NORMAL, 0.5, 0, 0 } }
#define RNN_ROW(nm, cov, mode, cs)                                                               \
    { .name = nm, .covers = cov, .arg = &(const fx_rnn_mode){ mode }, .ncases = OR_COUNT(cs),   \
      .cases = cs, .fill = RNN_FILL, .layer = l_rnn, .forward = f_rnn, .reference = r_rnn,      \
      .fwd = RNN_FWD, .grad = OR_GRAD_STD, .xb = OR_XB_GEMM }

const or_row OR_ROWS_RNN[] = {
    { .name = "recurrent", .covers = "fx_recurrent", .ncases = OR_COUNT(RECURRENT_CASES),
      .cases = RECURRENT_CASES, .fill = { { OR_NORMAL, 1, 0, 0 }, { OR_UNIFORM, -0.5, 0.5, 0 },
                                          { OR_UNIFORM, -0.5, 0.5, 0 }, { OR_NORMAL, 0.3, 0, 0 },
                                          { OR_NORMAL, 0.3, 0, 0 } },
      .forward = f_recurrent, .reference = r_recurrent, .fwd = RNN_FWD, .grad = OR_GRAD_STD,
      .xb = OR_XB_GEMM },
    RNN_ROW("rnn_tanh", "fx_rnn_create, fx_recurrent_forward", FX_RNN_TANH, RNN_STACK_CASES),
    RNN_ROW("rnn_relu", "fx_rnn_create (relu)", FX_RNN_RELU, RNN_STACK_CASES),
    RNN_ROW("gru", "fx_gru_create", FX_RNN_GRU, RNN_STACK_CASES),
    RNN_ROW("lstm", "fx_lstm_create", FX_RNN_LSTM, LSTM_STACK_CASES),
};
const int OR_NROWS_RNN = OR_COUNT(OR_ROWS_RNN);
