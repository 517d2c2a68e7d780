/* test_rnn.c - recurrent stacks (tanh/relu RNN, GRU, LSTM) over variable
 * lengths: outputs and final states against the registry's per-sample
 * double reference (or_rnn, from PyTorch's formulas), padded garbage (huge
 * values, NaN) changing nothing, a batch against each sample run alone,
 * parameter names and init, one tape record, 1 vs 2 threads, every CPU
 * kernel path (portable, AVX2, AVX-512, plain BLAS) against the reference
 * and each other, and refused inputs with their messages. The finite-difference gradients w.r.t. x, h0,
 * c0 and every weight (mixed lengths, both directions, two layers) and the
 * cross-backend comparisons are the registry's rnn_tanh, rnn_relu, gru, lstm
 * and recurrent rows (test_ops). */
#include "testutil.h"
#include "ops_registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A stack to test: cell, layers, directions, sizes, per-sample lengths. */
typedef struct {
    fx_rnn_mode mode;
    int L;
    bool bidir, no_bias;
    int64_t N, T, in, H;
    int64_t len[40];
} cfg;

static int dirs(const cfg *c) { return c->bidir ? 2 : 1; }

static fx_layer *make_layer(const cfg *c, const char *name, fx_rng *rng)
{
    fx_recurrent_opts o = { .num_layers = c->L, .bidirectional = c->bidir,
                            .no_bias = c->no_bias, .relu = c->mode == FX_RNN_RELU };
    fx_layer *l = c->mode == FX_RNN_LSTM  ? fx_lstm_create(name, c->in, c->H, &o, rng)
                  : c->mode == FX_RNN_GRU ? fx_gru_create(name, c->in, c->H, &o, rng)
                                          : fx_rnn_create(name, c->in, c->H, &o, rng);
    assert_non_null(l);
    return l;
}

/* n floats in double (malloc'd); NULL for NULL. */
static double *to_double(const float *v, int64_t n)
{
    if (!v)
        return NULL;
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = v[i];
    return d;
}

/* Host copy of a layer's parameter in double, NULL when it has none of that
 * name. */
static double *param_values(fx_layer *l, const char *what, int layer, int dir)
{
    char name[64];
    snprintf(name, sizeof name, "%s_l%d%s", what, layer, dir ? "_reverse" : "");
    fx_tensor *t = fx_layer_param(l, name);
    if (!t)
        return NULL;
    float *v = tu_values(t);
    double *d = to_double(v, fx_tensor_numel(t));
    free(v);
    return d;
}

/*
 * The registry's double reference (or_rnn, from PyTorch's formulas) on the
 * layer's parameters. x [N,T,in], h0/c0 [L*D,N,H] (may be NULL). Writes out
 * [N,T,D*H] (zero at padded steps), hn and cn [L*D,N,H].
 */
static void reference(const cfg *c, fx_layer *layer, const float *x, const float *h0,
                      const float *c0, double *out, double *hn, double *cn)
{
    static const char *const what[4] = { "weight_ih", "weight_hh", "bias_ih", "bias_hh" };
    int D = dirs(c);
    int64_t states = c->L * D * c->N * c->H;
    double *w[8][4];
    assert_true(c->L * D <= 8);
    for (int l = 0; l < c->L; l++)
        for (int d = 0; d < D; d++)
            for (int k = 0; k < 4; k++)
                w[l * D + d][k] = param_values(layer, what[k], l, d);
    double *xd = to_double(x, c->N * c->T * c->in), *h0d = to_double(h0, states),
           *c0d = to_double(c0, states);
    or_rnn(&(or_rnn_spec){ c->mode, c->L, c->bidir, c->N, c->T, c->in, c->H, c->len },
           (const double *const (*)[4])w, xd, h0d, c0d, out, hn, cn);
    for (int k = 0; k < c->L * D; k++)
        for (int j = 0; j < 4; j++)
            free(w[k][j]);
    free(xd);
    free(h0d);
    free(c0d);
}

static void assert_close_d(const float *got, const double *want, int64_t n, double tol,
                           const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i]))))
            fail_msg("%s element %lld: %.7g vs reference %.7g", what, (long long)i, got[i],
                     want[i]);
}

static fx_tensor *lengths_of(const cfg *c)
{
    return tu_from(FX_I64, 1, (int64_t[]){ c->N }, c->len);
}

/* Forward of one configuration with and without initial states. */
static void check_forward(const cfg *c)
{
    fx_rng *rng = fx_rng_create(7 + c->mode * 10 + c->L);
    fx_layer *layer = make_layer(c, "enc", rng);
    int D = dirs(c);
    int64_t N = c->N, T = c->T, H = c->H, LD = c->L * D;
    fx_tensor *x = tu_randn(rng, 3, (int64_t[]){ N, T, c->in }, 1.0, 0.0);
    fx_tensor *h0 = tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 0.5, 0.0);
    fx_tensor *c0 = tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 0.5, 0.0);
    fx_tensor *len = lengths_of(c);
    float *xv = tu_values(x), *h0v = tu_values(h0), *c0v = tu_values(c0);
    double *out = malloc((size_t)(N * T * D * H) * sizeof *out);
    double *hn = malloc((size_t)(LD * N * H) * sizeof *hn), *cn = malloc((size_t)(LD * N * H) * sizeof *cn);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (int with_states = 0; with_states < 2; with_states++) {
        bool lstm = c->mode == FX_RNN_LSTM;
        fx_tensor *h_n, *c_n;
        fx_tensor *y = fx_recurrent_forward(layer, ctx, x, len, with_states ? h0 : NULL,
                                            with_states && lstm ? c0 : NULL, &h_n, &c_n);
        if (!y)
            fail_msg("forward failed: %s", fx_ctx_error(ctx));
        assert_int_equal(y->ndim, 3);
        assert_int_equal(y->shape[2], D * H);
        assert_int_equal(h_n->shape[0], LD);
        assert_true(lstm ? c_n != NULL : c_n == NULL);
        reference(c, layer, xv, with_states ? h0v : NULL, with_states && lstm ? c0v : NULL, out,
                  hn, cn);
        float *yv = tu_values(y), *hv = tu_values(h_n);
        assert_close_d(yv, out, N * T * D * H, 1e-5, "out");
        assert_close_d(hv, hn, LD * N * H, 1e-5, "h_n");
        if (lstm) {
            float *cv = tu_values(c_n);
            assert_close_d(cv, cn, LD * N * H, 1e-5, "c_n");
            free(cv);
        }
        /* Padded positions are exactly zero. */
        for (int64_t n = 0; n < N; n++)
            for (int64_t t = c->len[n]; t < T; t++)
                for (int64_t j = 0; j < D * H; j++)
                    assert_true(yv[(n * T + t) * D * H + j] == 0.0f);
        free(yv);
        free(hv);
        fx_ctx_reset(ctx);
    }
    fx_ctx_free(ctx);
    free(out);
    free(hn);
    free(cn);
    free(xv);
    free(h0v);
    free(c0v);
    tu_free_all(4, (fx_tensor *[]){ x, h0, c0, len });
    fx_layer_free(layer);
    fx_rng_free(rng);
}

static const fx_rnn_mode MODES[4] = { FX_RNN_TANH, FX_RNN_RELU, FX_RNN_GRU, FX_RNN_LSTM };

static void test_forward_reference(void **state)
{
    (void)state;
    for (int m = 0; m < 4; m++) {
        /* One layer one way, all lengths T; two layers both ways, mixed. */
        check_forward(&(cfg){ MODES[m], 1, false, false, 2, 4, 3, 5, { 4, 4 } });
        check_forward(&(cfg){ MODES[m], 2, true, false, 3, 5, 3, 4, { 5, 2, 3 } });
        check_forward(&(cfg){ MODES[m], 1, true, true, 3, 5, 2, 3, { 1, 5, 3 } });
    }
}

/* ----------------------------------------------- padding and per sample */

/* sum(out * R1) + sum(h_n * R2) (+ sum(c_n * R3)) for fixed R. */
static fx_tensor *weighted_loss(fx_ctx *ctx, fx_tensor *y, fx_tensor *h_n, fx_tensor *c_n,
                                fx_tensor *r1, fx_tensor *r2, fx_tensor *r3)
{
    fx_tensor *loss = fx_add(ctx, fx_sum(ctx, fx_mul(ctx, y, r1), 0, NULL, false),
                             fx_sum(ctx, fx_mul(ctx, h_n, r2), 0, NULL, false));
    return c_n ? fx_add(ctx, loss, fx_sum(ctx, fx_mul(ctx, c_n, r3), 0, NULL, false)) : loss;
}

/* Runs forward + backward; returns host copies of out, h_n and every
 * parameter's gradient (concatenated) and x's gradient. */
typedef struct {
    float *y, *hn, *grads, *dx;
    int64_t ngrads;
} run_result;

static run_result run_once(fx_layer *layer, fx_tensor *x, fx_tensor *len, fx_tensor *h0,
                           fx_tensor *c0, fx_tensor *r1, fx_tensor *r2, fx_tensor *r3)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_params ps;
    fx_params_init(&ps);
    fx_layer_collect_params(layer, &ps);
    for (int i = 0; i < ps.count; i++)
        fx_tensor_fill(ps.items[i].tensor->grad, 0.0);
    fx_tensor_fill(x->grad, 0.0);
    fx_tensor *h_n, *c_n;
    fx_tensor *y = fx_recurrent_forward(layer, ctx, x, len, h0, c0, &h_n, &c_n);
    if (!y)
        fail_msg("forward failed: %s", fx_ctx_error(ctx));
    assert_int_equal(fx_backward(ctx, weighted_loss(ctx, y, h_n, c_n, r1, r2, r3)), FX_OK);
    run_result r = { tu_values(y), tu_values(h_n), NULL, tu_values(x->grad), 0 };
    for (int i = 0; i < ps.count; i++)
        r.ngrads += fx_tensor_numel(ps.items[i].tensor);
    r.grads = malloc((size_t)r.ngrads * sizeof(float));
    int64_t off = 0;
    for (int i = 0; i < ps.count; i++) {
        float *g = tu_values(ps.items[i].tensor->grad);
        int64_t k = fx_tensor_numel(ps.items[i].tensor);
        memcpy(r.grads + off, g, (size_t)k * sizeof(float));
        off += k;
        free(g);
    }
    fx_params_clear(&ps);
    fx_ctx_free(ctx);
    return r;
}

static void free_result(run_result *r)
{
    free(r->y);
    free(r->hn);
    free(r->grads);
    free(r->dx);
}

/* Garbage (huge values, NaN, inf) at padded positions changes no output and
 * no gradient, and those positions get zero gradient; the batch equals each
 * sample run alone over its own steps (weight gradients summed). */
static void check_padding(fx_rnn_mode mode)
{
    cfg c = { mode, 2, true, false, 3, 5, 3, 4, { 5, 2, 3 } };
    fx_rng *rng = fx_rng_create(5 + mode);
    fx_layer *layer = make_layer(&c, "enc", rng);
    int64_t N = c.N, T = c.T, I = c.in, H = c.H, DH = 2 * H, LD = 4;
    bool lstm = mode == FX_RNN_LSTM;
    fx_tensor *x = tu_randn(rng, 3, (int64_t[]){ N, T, I }, 1.0, 0.0);
    fx_tensor *h0 = tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 0.5, 0.0);
    fx_tensor *c0 = lstm ? tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 0.5, 0.0) : NULL;
    fx_tensor *r1 = tu_randn(rng, 3, (int64_t[]){ N, T, DH }, 1.0, 0.0);
    fx_tensor *r2 = tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 1.0, 0.0);
    fx_tensor *r3 = tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 1.0, 0.0);
    fx_tensor *len = lengths_of(&c);
    float *xv = tu_values(x);
    run_result clean = run_once(layer, x, len, h0, c0, r1, r2, r3);

    const float junk[3] = { 1e30f, NAN, -INFINITY };
    for (int64_t n = 0; n < N; n++)
        for (int64_t t = c.len[n]; t < T; t++)
            for (int64_t i = 0; i < I; i++)
                xv[(n * T + t) * I + i] = junk[(n + t + i) % 3];
    fx_tensor *xg = tu_from(FX_F32, 3, x->shape, xv);
    fx_tensor_set_requires_grad(xg, true);
    run_result dirty = run_once(layer, xg, len, h0, c0, r1, r2, r3);
    tu_assert_close(dirty.y, clean.y, N * T * DH, 0.0);
    tu_assert_close(dirty.hn, clean.hn, LD * N * H, 0.0);
    tu_assert_close(dirty.grads, clean.grads, clean.ngrads, 0.0);
    tu_assert_close(dirty.dx, clean.dx, N * T * I, 0.0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t t = c.len[n]; t < T; t++)
            for (int64_t i = 0; i < I; i++)
                assert_true(dirty.dx[(n * T + t) * I + i] == 0.0f);

    /* Each sample alone: x[n, :len], h0[:, n], lengths NULL. */
    float *sum = calloc((size_t)clean.ngrads, sizeof *sum);
    float *h0v = tu_values(h0), *c0v = lstm ? tu_values(c0) : NULL;
    float *r1v = tu_values(r1), *r2v = tu_values(r2), *r3v = tu_values(r3);
    for (int64_t n = 0; n < N; n++) {
        int64_t k = c.len[n];
        float hs[64], cs[64], q2[64], q3[64];
        for (int64_t j = 0; j < LD; j++)
            for (int64_t h = 0; h < H; h++) {
                hs[j * H + h] = h0v[(j * N + n) * H + h];
                cs[j * H + h] = c0v ? c0v[(j * N + n) * H + h] : 0.0f;
                q2[j * H + h] = r2v[(j * N + n) * H + h];
                q3[j * H + h] = r3v[(j * N + n) * H + h];
            }
        fx_tensor *xn = tu_from(FX_F32, 3, (int64_t[]){ 1, k, I }, xv + n * T * I);
        fx_tensor_set_requires_grad(xn, true);
        fx_tensor *hn0 = tu_from(FX_F32, 3, (int64_t[]){ LD, 1, H }, hs);
        fx_tensor *cn0 = lstm ? tu_from(FX_F32, 3, (int64_t[]){ LD, 1, H }, cs) : NULL;
        fx_tensor *p1 = tu_from(FX_F32, 3, (int64_t[]){ 1, k, DH }, r1v + n * T * DH);
        fx_tensor *p2 = tu_from(FX_F32, 3, (int64_t[]){ LD, 1, H }, q2);
        fx_tensor *p3 = tu_from(FX_F32, 3, (int64_t[]){ LD, 1, H }, q3);
        run_result one = run_once(layer, xn, NULL, hn0, cn0, p1, p2, p3);
        tu_assert_close(one.y, clean.y + n * T * DH, k * DH, 1e-5);
        for (int64_t j = 0; j < LD; j++)
            tu_assert_close(one.hn + j * H, clean.hn + (j * N + n) * H, H, 1e-5);
        tu_assert_close(one.dx, clean.dx + n * T * I, k * I, 1e-5);
        for (int64_t i = 0; i < clean.ngrads; i++)
            sum[i] += one.grads[i];
        free_result(&one);
        tu_free_all(6, (fx_tensor *[]){ xn, hn0, cn0, p1, p2, p3 });
    }
    tu_assert_close(sum, clean.grads, clean.ngrads, 1e-4);

    free(sum);
    free(h0v);
    free(c0v);
    free(r1v);
    free(r2v);
    free(r3v);
    free(xv);
    free_result(&clean);
    free_result(&dirty);
    tu_free_all(8, (fx_tensor *[]){ x, xg, h0, c0, r1, r2, r3, len });
    fx_layer_free(layer);
    fx_rng_free(rng);
}

static void test_padding_and_per_sample(void **state)
{
    (void)state;
    for (int m = 0; m < 4; m++)
        check_padding(MODES[m]);
}

/* Only h_n used (the usual classifier): gradients still reach the weights
 * and x, the stack is one tape record, i32 lengths work like i64, and
 * repeated steps stop growing the arena. */
static void test_final_state_only(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_layer *lstm = fx_lstm_create("lstm", 3, 4, NULL, rng);
    fx_tensor *x = tu_randn(rng, 3, (int64_t[]){ 2, 4, 3 }, 1.0, 0.0);
    fx_tensor *len = tu_from(FX_I32, 1, (int64_t[]){ 2 }, (int32_t[]){ 4, 2 });
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *h_n;
    fx_tensor *y = fx_recurrent_forward(lstm, ctx, x, len, NULL, NULL, &h_n, NULL);
    assert_non_null(y);
    assert_int_equal(fx_tape_length(ctx), 1); /* the whole stack is one record */
    assert_int_equal(fx_backward(ctx, fx_sum(ctx, h_n, 0, NULL, false)), FX_OK);
    const char *names[] = { "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0" };
    for (int i = 0; i < 4; i++) {
        fx_tensor *g = fx_layer_param(lstm, names[i])->grad;
        double ss = 0.0;
        float *v = tu_values(g);
        for (int64_t j = 0; j < fx_tensor_numel(g); j++)
            ss += (double)v[j] * v[j];
        free(v);
        assert_true(ss > 0.0);
    }
    /* Sample 1 stops at step 2: its steps 2, 3 get no gradient. */
    float *dx = tu_values(x->grad);
    for (int64_t i = (1 * 4 + 2) * 3; i < 2 * 4 * 3; i++)
        assert_true(dx[i] == 0.0f);
    free(dx);
    /* Later steps reuse the arena: its capacity stops growing. */
    size_t cap = 0;
    for (int step = 0; step < 3; step++) {
        fx_ctx_reset(ctx);
        y = fx_recurrent_forward(lstm, ctx, x, len, NULL, NULL, &h_n, NULL);
        assert_int_equal(fx_backward(ctx, fx_sum(ctx, y, 0, NULL, false)), FX_OK);
        if (step == 2)
            assert_true(fx_ctx_arena_capacity(ctx) == cap);
        cap = fx_ctx_arena_capacity(ctx);
    }
    fx_ctx_free(ctx);
    tu_free_all(2, (fx_tensor *[]){ x, len });
    fx_layer_free(lstm);
    fx_rng_free(rng);
}

/* ---------------------------------------------------------- the layers */

static void test_layer_params(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(11);
    fx_layer *l = fx_lstm_create("lstm", 5, 8, &(fx_recurrent_opts){ .num_layers = 2,
                                                                     .bidirectional = true },
                                 rng);
    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(l, &ps), FX_OK);
    /* PyTorch's state-dict order and shapes. */
    const char *want[16] = {
        "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
        "lstm.weight_ih_l0_reverse", "lstm.weight_hh_l0_reverse", "lstm.bias_ih_l0_reverse",
        "lstm.bias_hh_l0_reverse", "lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.bias_ih_l1",
        "lstm.bias_hh_l1", "lstm.weight_ih_l1_reverse", "lstm.weight_hh_l1_reverse",
        "lstm.bias_ih_l1_reverse", "lstm.bias_hh_l1_reverse"
    };
    assert_int_equal(ps.count, 16);
    for (int i = 0; i < 16; i++) {
        assert_string_equal(ps.items[i].name, want[i]);
        fx_tensor *t = ps.items[i].tensor;
        int kind = i % 4, layer = i / 8;
        assert_int_equal(t->ndim, kind < 2 ? 2 : 1);
        assert_int_equal(t->shape[0], 32);
        if (kind < 2)
            assert_int_equal(t->shape[1], kind == 1 ? 8 : layer ? 16 : 5);
        /* U(-1/sqrt(H), 1/sqrt(H)), and not all equal. */
        float *v = tu_values(t);
        float lo = 1, hi = -1;
        for (int64_t j = 0; j < fx_tensor_numel(t); j++) {
            lo = fminf(lo, v[j]);
            hi = fmaxf(hi, v[j]);
        }
        free(v);
        assert_true(lo >= -1.0 / sqrt(8.0) && hi <= 1.0 / sqrt(8.0) && hi - lo > 0.2);
    }
    fx_params_clear(&ps);
    fx_layer_free(l);

    /* no_bias: weights only; a GRU has 3 gates; fx_layer_forward runs all T. */
    l = fx_gru_create("gru", 3, 4, &(fx_recurrent_opts){ .no_bias = true }, rng);
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(l, &ps), FX_OK);
    assert_int_equal(ps.count, 2);
    assert_int_equal(ps.items[0].tensor->shape[0], 12);
    fx_params_clear(&ps);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 3, (int64_t[]){ 2, 3, 3 }, 1.0, 0.0);
    fx_tensor *y = fx_layer_forward(l, ctx, x);
    assert_non_null(y);
    fx_tensor *y2 = fx_recurrent_forward(l, ctx, x, NULL, NULL, NULL, NULL, NULL);
    float *a = tu_values(y), *b = tu_values(y2);
    tu_assert_close(a, b, 2 * 3 * 4, 0.0);
    free(a);
    free(b);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_layer_free(l);

    assert_null(fx_lstm_create("bad", 0, 4, NULL, rng));
    assert_null(fx_rnn_create("bad", 3, 0, NULL, rng));
    assert_null(fx_gru_create("bad", 3, 4, &(fx_recurrent_opts){ .num_layers = -1 }, rng));
    fx_rng_free(rng);
}

/* 1 and 2 threads agree (the cell kernels split rows over threads for
 * large steps, the gemms split blocks). */
static void test_threads(void **state)
{
    (void)state;
    cfg c = { FX_RNN_LSTM, 1, true, false, 80, 3, 8, 128, { 0 } };
    fx_rng *rng = fx_rng_create(21);
    fx_layer *layer = make_layer(&c, "enc", rng);
    fx_tensor *x = tu_randn(rng, 3, (int64_t[]){ 80, 3, 8 }, 1.0, 0.0);
    fx_tensor *r1 = tu_randn(rng, 3, (int64_t[]){ 80, 3, 256 }, 1.0, 0.0);
    fx_tensor *r2 = tu_randn(rng, 3, (int64_t[]){ 2, 80, 128 }, 1.0, 0.0);
    int32_t lens[80];
    for (int i = 0; i < 80; i++)
        lens[i] = 1 + i % 3;
    fx_tensor *len = tu_from(FX_I32, 1, (int64_t[]){ 80 }, lens);
    int old = fx_get_num_threads();
    fx_set_num_threads(1);
    run_result one = run_once(layer, x, len, NULL, NULL, r1, r2, r2);
    fx_set_num_threads(2);
    run_result two = run_once(layer, x, len, NULL, NULL, r1, r2, r2);
    fx_set_num_threads(old);
    tu_assert_close(two.y, one.y, 80 * 3 * 256, 1e-5);
    tu_assert_close(two.hn, one.hn, 2 * 80 * 128, 1e-5);
    tu_assert_close(two.grads, one.grads, one.ngrads, 1e-3);
    tu_assert_close(two.dx, one.dx, 80 * 3 * 8, 1e-4);
    free_result(&one);
    free_result(&two);
    tu_free_all(4, (fx_tensor *[]){ x, r1, r2, len });
    fx_layer_free(layer);
    fx_rng_free(rng);
}

/* ------------------------------------------------------- kernel paths */

/* engine/cpu/rnn.c: 1 portable vectors, 2 AVX2, 3 AVX-512 (each where the
 * CPU has it, else the next narrower), 4 the plain path (BLAS for every
 * product, the computation before the fused kernels); 0 the best. */
extern int fx__rnn_isa;

/* Every kernel path on one configuration, with initial states and mixed
 * lengths: out and h_n against the double reference (or_rnn: plain loops
 * over PyTorch's formulas) within 2e-5 relative, and every gradient (weights
 * and x) against the plain path within 1e-4 absolute (they sum in other
 * orders; the values are O(1)). The sizes leave partial tiles everywhere:
 * rows (samples) not a multiple of any tile height, hidden and input sizes
 * not a multiple of any panel width. x is drawn xscale times larger than
 * N(0, 1) (the gradients' tolerance scales with it: dW_ih does). */
static void check_paths(const cfg *c, double xscale)
{
    fx_rng *rng = fx_rng_create(31 + c->mode + 7 * c->N);
    fx_layer *layer = make_layer(c, "enc", rng);
    int D = dirs(c);
    bool lstm = c->mode == FX_RNN_LSTM;
    int64_t N = c->N, T = c->T, H = c->H, LD = c->L * D, ny = N * T * D * H, ns = LD * N * H;
    fx_tensor *x = tu_randn(rng, 3, (int64_t[]){ N, T, c->in }, xscale, 0.0);
    fx_tensor *h0 = tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 0.5, 0.0);
    fx_tensor *c0 = lstm ? tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 0.5, 0.0) : NULL;
    fx_tensor *r1 = tu_randn(rng, 3, (int64_t[]){ N, T, D * H }, 1.0, 0.0);
    fx_tensor *r2 = tu_randn(rng, 3, (int64_t[]){ LD, N, H }, 1.0, 0.0);
    fx_tensor *len = lengths_of(c);
    float *xv = tu_values(x), *h0v = tu_values(h0), *c0v = c0 ? tu_values(c0) : NULL;
    double *out = malloc((size_t)ny * sizeof *out), *hn = malloc((size_t)ns * sizeof *hn),
           *cn = malloc((size_t)ns * sizeof *cn);
    reference(c, layer, xv, h0v, c0v, out, hn, cn);
    fx__rnn_isa = 4;
    run_result plain = run_once(layer, x, len, h0, c0, r1, r2, r2);
    for (int isa = 0; isa <= 4; isa++) {
        fx__rnn_isa = isa;
        run_result r = run_once(layer, x, len, h0, c0, r1, r2, r2);
        assert_close_d(r.y, out, ny, 2e-5, "out");
        assert_close_d(r.hn, hn, ns, 2e-5, "h_n");
        tu_assert_close(r.grads, plain.grads, plain.ngrads, 1e-4 * xscale); /* dW_ih scales with x */
        tu_assert_close(r.dx, plain.dx, N * T * c->in, 1e-4);
        free_result(&r);
    }
    fx__rnn_isa = 0;
    free_result(&plain);
    free(out);
    free(hn);
    free(cn);
    free(xv);
    free(h0v);
    free(c0v);
    tu_free_all(6, (fx_tensor *[]){ x, h0, c0, r1, r2, len });
    fx_layer_free(layer);
    fx_rng_free(rng);
}

static void test_kernel_paths(void **state)
{
    (void)state;
    cfg cs[] = {
        { FX_RNN_LSTM, 1, false, false, 13, 7, 19, 21, { 0 } },
        { FX_RNN_LSTM, 2, true, true, 37, 5, 33, 40, { 0 } },
        { FX_RNN_LSTM, 1, false, false, 32, 6, 64, 128, { 0 } }, /* the benchmark's shape */
        /* whole panels and tiles in the CPU's products (rnn.c), and more
         * rows (N * T) than the benchmark's shape */
        { FX_RNN_LSTM, 1, true, false, 16, 20, 32, 64, { 0 } },
        { FX_RNN_TANH, 1, false, false, 16, 17, 24, 96, { 0 } },
        { FX_RNN_GRU, 2, true, false, 37, 5, 33, 40, { 0 } },
        { FX_RNN_GRU, 1, false, true, 9, 4, 5, 17, { 0 } },
        { FX_RNN_TANH, 1, true, false, 13, 7, 19, 70, { 0 } },
        { FX_RNN_RELU, 1, false, false, 8, 3, 4, 5, { 0 } },
        /* gate widths a multiple of 64 (rnn_wgrad.c's weight gradients
         * and bias sums) with input and hidden sizes not a multiple of its 6
         * columns, one way with all lengths T (its W_ih and W_hh pass, the
         * dense LSTM) and with mixed lengths both ways */
        { FX_RNN_LSTM, 1, false, false, 11, 9, 35, 16, { 0 } },
        { FX_RNN_LSTM, 2, true, false, 7, 6, 13, 32, { 0 } },
        /* sizes that are multiples of 6: no spare column for the bias */
        { FX_RNN_LSTM, 1, false, false, 11, 4, 12, 48, { 0 } },
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        cfg *c = &cs[i];
        for (int64_t n = 0; n < c->N; n++) /* mixed lengths, except the benchmark's */
            c->len[n] = c->H == 128 || c->N == 11 ? c->T : 1 + (n * 5 + 2) % c->T;
        check_paths(c, 1.0);
    }
    /* saturated gates (x 40 times larger: pre-activations in the tens, both
     * signs): the AVX-512 cells' exp, reciprocal and tanh at their ends */
    cfg sat[] = {
        { FX_RNN_LSTM, 1, false, false, 9, 5, 17, 23, { 0 } },
        { FX_RNN_LSTM, 1, false, false, 32, 4, 64, 128, { 0 } },
    };
    for (size_t i = 0; i < sizeof sat / sizeof *sat; i++) {
        for (int64_t n = 0; n < sat[i].N; n++)
            sat[i].len[n] = 1 + (n * 3 + 1) % sat[i].T;
        check_paths(&sat[i], 40.0);
    }
}

/* The dense LSTM path (one way, every sample all T steps: the CPU reads
 * the recurrent gate gradients from dxg in place and forms dW_hh by
 * position) against the general one, forced by one more step that every
 * sample leaves padded: same outputs and gradients (x's over the real
 * steps), with and without initial states, on every kernel path (the
 * dense case also takes rnn_wgrad.c's joint W_ih / W_hh pass: G = 64). */
static void test_dense_lstm(void **state)
{
    (void)state;
    for (int k = 0; k < 10; k++) {
        int with_h0 = k % 2;
        fx__rnn_isa = k / 2;
        cfg c = { FX_RNN_LSTM, 1, false, false, 5, 6, 8, 16, { 0 } };
        int64_t N = c.N, T = c.T, I = c.in, H = c.H;
        for (int64_t n = 0; n < N; n++)
            c.len[n] = T;
        fx_rng *rng = fx_rng_create(41 + k);
        fx_layer *layer = make_layer(&c, "enc", rng);
        fx_tensor *x = tu_randn(rng, 3, (int64_t[]){ N, T + 1, I }, 1.0, 0.0);
        fx_tensor *r1 = tu_randn(rng, 3, (int64_t[]){ N, T + 1, H }, 1.0, 0.0);
        fx_tensor *r2 = tu_randn(rng, 3, (int64_t[]){ 1, N, H }, 1.0, 0.0);
        fx_tensor *h0 = with_h0 ? tu_randn(rng, 3, (int64_t[]){ 1, N, H }, 0.5, 0.0) : NULL;
        fx_tensor *c0 = with_h0 ? tu_randn(rng, 3, (int64_t[]){ 1, N, H }, 0.5, 0.0) : NULL;
        float *xv = tu_values(x), *r1v = tu_values(r1);
        float *xs = malloc((size_t)(N * T * I) * sizeof *xs);
        float *rs = malloc((size_t)(N * T * H) * sizeof *rs);
        for (int64_t n = 0; n < N; n++) {
            memcpy(xs + n * T * I, xv + n * (T + 1) * I, (size_t)(T * I) * sizeof *xs);
            memcpy(rs + n * T * H, r1v + n * (T + 1) * H, (size_t)(T * H) * sizeof *rs);
        }
        fx_tensor *xd = tu_from(FX_F32, 3, (int64_t[]){ N, T, I }, xs);
        assert_int_equal(fx_tensor_set_requires_grad(xd, true), FX_OK);
        fx_tensor *r1d = tu_from(FX_F32, 3, (int64_t[]){ N, T, H }, rs);
        fx_tensor *len = lengths_of(&c);
        run_result dense = run_once(layer, xd, len, h0, c0, r1d, r2, r2);
        run_result gen = run_once(layer, x, len, h0, c0, r1, r2, r2);
        tu_assert_close(dense.grads, gen.grads, gen.ngrads, 1e-4);
        tu_assert_close(dense.hn, gen.hn, N * H, 1e-5);
        for (int64_t n = 0; n < N; n++) {
            tu_assert_close(dense.dx + n * T * I, gen.dx + n * (T + 1) * I, T * I, 1e-4);
            tu_assert_close(dense.y + n * T * H, gen.y + n * (T + 1) * H, T * H, 1e-5);
        }
        free_result(&dense);
        free_result(&gen);
        free(xv);
        free(r1v);
        free(xs);
        free(rs);
        tu_free_all(8, (fx_tensor *[]){ x, r1, r2, h0, c0, xd, r1d, len });
        fx_layer_free(layer);
        fx_rng_free(rng);
    }
    fx__rnn_isa = 0;
}

/* ----------------------------------------------------------- bad input */

/* Runs the layer on the given inputs and expects status s with every
 * fragment in the message. */
static void expect_fail(fx_layer *l, fx_tensor *x, fx_tensor *len, fx_tensor *h0,
                        fx_tensor *c0, fx_status s, const char *f1, const char *f2)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *h_n = (fx_tensor *)1, *c_n = (fx_tensor *)1;
    assert_null(fx_recurrent_forward(l, ctx, x, len, h0, c0, &h_n, &c_n));
    assert_null(h_n);
    assert_null(c_n);
    assert_int_equal(fx_ctx_status(ctx), s);
    const char *e = fx_ctx_error(ctx);
    if (!strstr(e, f1) || (f2 && !strstr(e, f2)))
        fail_msg("message '%s' lacks '%s' / '%s'", e, f1, f2 ? f2 : "");
    fx_ctx_free(ctx);
}

static void test_bad_input(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_layer *l = fx_lstm_create("enc", 4, 3, NULL, rng);
    fx_tensor *x = tu_randn(rng, 3, (int64_t[]){ 3, 5, 4 }, 1.0, 0.0);
    const char *who = "lstm 'enc'";
    fx_tensor *bad[] = {
        tu_from(FX_I64, 1, (int64_t[]){ 3 }, (int64_t[]){ 5, 0, 3 }),
        tu_from(FX_I32, 1, (int64_t[]){ 3 }, (int32_t[]){ 5, -2, 3 }),
        tu_from(FX_I64, 1, (int64_t[]){ 3 }, (int64_t[]){ 5, 6, 3 }),
    };
    expect_fail(l, x, bad[0], NULL, NULL, FX_ERR_VALUE, who, "lengths[1] = 0 is outside [1, 5]");
    expect_fail(l, x, bad[1], NULL, NULL, FX_ERR_VALUE, who, "lengths[1] = -2");
    expect_fail(l, x, bad[2], NULL, NULL, FX_ERR_VALUE, "lengths[1] = 6 is outside [1, 5]",
                "[3,5,4]");
    fx_tensor *len4 = tu_from(FX_I64, 1, (int64_t[]){ 4 }, (int64_t[]){ 1, 2, 3, 4 });
    expect_fail(l, x, len4, NULL, NULL, FX_ERR_SHAPE, who, "lengths must be [3]");
    fx_tensor *lenf = tu_from(FX_F32, 1, (int64_t[]){ 3 }, (float[]){ 1, 2, 3 });
    expect_fail(l, x, lenf, NULL, NULL, FX_ERR_DTYPE, who, "lengths must be i32 or i64");
    fx_tensor *len2d = tu_from(FX_I64, 2, (int64_t[]){ 3, 1 }, (int64_t[]){ 1, 2, 3 });
    expect_fail(l, x, len2d, NULL, NULL, FX_ERR_SHAPE, who, "[3,1]");
    /* Input size mismatch names the layer, the weight and both sizes. */
    fx_tensor *x3 = tu_randn(rng, 3, (int64_t[]){ 3, 5, 3 }, 1.0, 0.0);
    expect_fail(l, x3, NULL, NULL, NULL, FX_ERR_SHAPE, "lstm 'enc': x has 3 input features but "
                "weight_ih_l0 is [12,4] (expects 4)", "[3,5,3]");
    fx_tensor *x2 = tu_randn(rng, 2, (int64_t[]){ 5, 4 }, 1.0, 0.0);
    expect_fail(l, x2, NULL, NULL, NULL, FX_ERR_SHAPE, who, "[N, T, input]");
    fx_tensor *h0 = tu_randn(rng, 3, (int64_t[]){ 1, 2, 3 }, 1.0, 0.0);
    expect_fail(l, x, NULL, h0, NULL, FX_ERR_SHAPE, "h0 must be [1,3,3]", "[1,2,3]");
    expect_fail(l, x, NULL, NULL, h0, FX_ERR_SHAPE, "c0 must be [1,3,3]", who);
    fx_tensor *xe = tu_randn(rng, 3, (int64_t[]){ 3, 0, 4 }, 1.0, 0.0);
    expect_fail(l, xe, NULL, NULL, NULL, FX_ERR_SHAPE, who, "empty");

    /* c0 for a GRU; a layer that is not recurrent; a bad spec. */
    fx_layer *g = fx_gru_create("dec", 4, 3, NULL, rng);
    fx_tensor *c0 = tu_randn(rng, 3, (int64_t[]){ 1, 3, 3 }, 1.0, 0.0);
    expect_fail(g, x, NULL, NULL, c0, FX_ERR_ARG, "gru 'dec'", "only an LSTM");
    fx_layer *dense = fx_dense_create("fc", 4, 3, NULL, rng);
    expect_fail(dense, x, NULL, NULL, NULL, FX_ERR_ARG, "layer 'fc' is not an RNN", NULL);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_null(fx_recurrent(ctx, &(fx_recurrent_spec){ .num_layers = 0 }, x, NULL, NULL, NULL,
                             NULL, NULL));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    /* A missing weight is named; a NULL input propagates without a new error. */
    fx_ctx_clear_error(ctx);
    fx_rnn_weights w = { 0 };
    assert_null(fx_recurrent(ctx, &(fx_recurrent_spec){ .mode = FX_RNN_GRU, .num_layers = 1,
                                                        .weights = &w },
                             x, NULL, NULL, NULL, NULL, NULL));
    assert_non_null(strstr(fx_ctx_error(ctx), "gru: weight_hh_l0 is NULL"));
    fx_ctx_clear_error(ctx);
    fx_ctx_fail(ctx, FX_ERR_SHAPE, "upstream");
    assert_null(fx_recurrent_forward(l, ctx, NULL, NULL, NULL, NULL, NULL, NULL));
    assert_string_equal(fx_ctx_error(ctx), "upstream");
    fx_ctx_free(ctx);

    tu_free_all(3, bad);
    tu_free_all(9, (fx_tensor *[]){ x, len4, lenf, len2d, x3, x2, h0, xe, c0 });
    fx_layer_free(l);
    fx_layer_free(g);
    fx_layer_free(dense);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_reference),
        cmocka_unit_test(test_padding_and_per_sample),
        cmocka_unit_test(test_final_state_only),
        cmocka_unit_test(test_layer_params),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_kernel_paths),
        cmocka_unit_test(test_dense_lstm),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
