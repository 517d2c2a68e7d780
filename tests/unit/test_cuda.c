/*
 * test_cuda.c - the CUDA backend against the CPU backend.
 *
 * Every op and layer runs on the CPU and on cuda:0 with the same inputs (made
 * on the CPU from a seeded generator and copied over); the outputs and the
 * gradients of every input and parameter (from the seed gradient R, a fixed
 * random tensor of the output's shape, so each output element weighs
 * differently) must agree within the case's tolerance:
 *     |gpu - cpu| <= tol * (1 + |cpu|)   elementwise.
 * Tolerances (column `tol` in the table below):
 *   1e-5  elementwise ops, copies, index ops (same float formula per element)
 *   1e-4  reductions, softmax, losses, norms, embedding (different summation
 *         order; the CPU uses a polynomial exp in softmax / CE / RNN cells)
 *   5e-4  gemm-based ops: matmul, linear, conv, attention, RNN (cuBLAS and
 *         OpenBLAS sum in different orders; TF32 is off)
 *   2e-3  CTC (log-space recursions over T frames, approximate exp/log on
 *         the CPU)
 * Then: optimizers (a few steps of every kind on a small MLP), the memory
 * limit error, pool reuse in steady-state training, device enumeration.
 *
 * Without a CUDA device the test prints "SKIPPED: no CUDA device (...)" and
 * exits 77 (ctest: skipped). Built only when the CUDA backend is.
 */
#include "testutil.h"

#include "cuda/cuda_api.h"
#include "fx_conv.h"
#include "fx_norm.h"
#include "fx_rnn.h"
#include "fx_seq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cuda:0; FX_CUDA_TEST_ON_CPU=1 makes it the CPU, so the cross-backend
 * cases (the runner, shapes, op arguments) can be checked on a machine
 * without a GPU: CPU against CPU must pass with any tolerance. */
static fx_device GPU = { FX_DEV_CUDA, 0 };

/* ------------------------------------------------------------- the cases */

typedef struct {
    const char *name;
    double tol;
    int nin;                 /* float inputs */
    int ndim[4];
    int64_t shape[4][5];
    double lo, hi;           /* inputs ~ U(lo, hi) */
    fx_tensor *(*fn)(fx_ctx *ctx, fx_tensor **in, fx_layer *l);
    fx_layer *(*layer)(fx_rng *rng); /* NULL: an op without parameters */
} op_case;

#define IN1(a, ...) 1, { a }, { { __VA_ARGS__ } }
#define I32(ctx, n, ...) fx_tensor_from_host(ctx, FX_I32, 1, (int64_t[]){ n }, (int32_t[]){ __VA_ARGS__ })
#define I64(ctx, n, ...) fx_tensor_from_host(ctx, FX_I64, 1, (int64_t[]){ n }, (int64_t[]){ __VA_ARGS__ })

static fx_tensor *f_matmul(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_matmul(c, in[0], in[1]); }
static fx_tensor *f_linear(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_linear(c, in[0], in[1], in[2]); }
static fx_tensor *f_add(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_add(c, in[0], in[1]); }
static fx_tensor *f_sub(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_sub(c, in[0], in[1]); }
static fx_tensor *f_mul(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_mul(c, in[0], in[1]); }
static fx_tensor *f_div(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_div(c, in[0], in[1]); }
static fx_tensor *f_neg(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_neg(c, in[0]); }
static fx_tensor *f_scale(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_scale(c, in[0], -1.5f); }
static fx_tensor *f_adds(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_add_scalar(c, in[0], 0.25f); }
static fx_tensor *f_exp(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_exp(c, in[0]); }
static fx_tensor *f_log(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_log(c, in[0]); }
static fx_tensor *f_sqrt(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_sqrt(c, in[0]); }
static fx_tensor *f_pow(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_pow(c, in[0], 1.7f); }
static fx_tensor *f_abs(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_abs(c, in[0]); }
static fx_tensor *f_relu(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_relu(c, in[0]); }
static fx_tensor *f_leaky(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_leaky_relu(c, in[0], 0.1f); }
static fx_tensor *f_elu(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_elu(c, in[0], 0.8f); }
static fx_tensor *f_gelu(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_gelu(c, in[0]); }
static fx_tensor *f_sigmoid(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_sigmoid(c, in[0]); }
static fx_tensor *f_tanh(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_tanh(c, in[0]); }
static fx_tensor *f_clamp(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_clamp(c, in[0], -0.5f, 0.7f); }
static fx_tensor *f_softmax1(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_softmax(c, in[0], 2); }
static fx_tensor *f_softmax0(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_softmax(c, in[0], 1); }
static fx_tensor *f_logsoftmax(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_log_softmax(c, in[0], 2); }
static fx_tensor *f_sum1(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_sum(c, in[0], 1, (int[]){ 1 }, true); }
static fx_tensor *f_sum02(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_sum(c, in[0], 2, (int[]){ 0, 2 }, false); }
static fx_tensor *f_mean_all(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_mean(c, in[0], 0, NULL, false); }
static fx_tensor *f_max2(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_max(c, in[0], 1, (int[]){ 2 }, false); }
static fx_tensor *f_max0(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_max(c, in[0], 1, (int[]){ 0 }, true); }
static fx_tensor *f_transpose(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_contiguous(c, fx_transpose(c, in[0], 0, 2));
}
static fx_tensor *f_permute_mul(fx_ctx *c, fx_tensor **in, fx_layer *l)
{ /* a strided view straight into a kernel that takes strides */
    return fx_mul(c, fx_permute(c, in[0], (int[]){ 2, 0, 1 }), in[1]);
}
static fx_tensor *f_concat(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_concat(c, 2, in, 1); }
static fx_tensor *f_slice(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_contiguous(c, fx_slice(c, in[0], 1, 1, 7, 2));
}
static fx_tensor *f_index_select(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_index_select(c, in[0], 1, I64(c, 5, 3, 0, 3, 5, 1));
}
static fx_tensor *f_gather(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    fx_tensor *idx = fx_tensor_from_host(c, FX_I32, 2, (int64_t[]){ 3, 2 },
                                         (int32_t[]){ 0, 3, 2, 2, 1, 0 });
    return fx_gather(c, in[0], 1, idx);
}
static fx_tensor *f_where(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    fx_tensor *cond = fx_tensor_from_host(c, FX_I32, 2, (int64_t[]){ 1, 4 },
                                          (int32_t[]){ 1, 0, 0, 1 });
    return fx_where(c, cond, in[0], in[1]);
}
static fx_tensor *f_dropout(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_dropout(c, in[0], 0.3f); }
static fx_tensor *f_mse(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_mse_loss(c, in[0], in[1], FX_NONE); }
static fx_tensor *f_ce(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_cross_entropy(c, in[0], I32(c, 6, 0, 4, 2, 9, 9, 1), FX_NONE);
}
static fx_tensor *f_ce_soft(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_cross_entropy_soft(c, in[0], in[1], FX_NONE);
}
static fx_tensor *f_bce(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_bce_with_logits(c, in[0], in[1], FX_NONE); }
static fx_tensor *f_conv2d(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_conv2d(c, in[0], in[1], in[2], &(fx_conv_opts){ .stride = 2, .padding = 1, .groups = 2 });
}
static fx_tensor *f_conv2d_dil(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_conv2d(c, in[0], in[1], NULL, &(fx_conv_opts){ .padding = 2, .dilation = 2 });
}
static fx_tensor *f_conv1d(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_conv1d(c, in[0], in[1], in[2], &(fx_conv_opts){ .padding = 1 });
}
static fx_tensor *f_convt(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_conv_transpose2d(c, in[0], in[1], in[2], &(fx_conv_opts){ .stride = 2, .padding = 1 });
}
static fx_tensor *f_maxpool3(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_maxpool2d(c, in[0], &(fx_pool_opts){ .kernel = 3, .stride = 2, .padding = 1 });
}
static fx_tensor *f_maxpool2(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_maxpool2d(c, in[0], &(fx_pool_opts){ .kernel = 2 });
}
static fx_tensor *f_avgpool(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_avgpool2d(c, in[0], &(fx_pool_opts){ .kernel = 3, .stride = 2, .padding = 1 });
}
static fx_tensor *f_adaptive(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_adaptive_avgpool2d(c, in[0], 3, 2); }
static fx_tensor *f_gap(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_global_avgpool2d(c, in[0]); }
static fx_tensor *f_layer(fx_ctx *c, fx_tensor **in, fx_layer *l) { return fx_layer_forward(l, c, in[0]); }
static fx_tensor *f_embedding(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    fx_tensor *idx = fx_tensor_from_host(c, FX_I64, 2, (int64_t[]){ 2, 4 },
                                         (int64_t[]){ 1, 2, 2, 0, 6, 2, 1, 3 });
    return fx_layer_forward(l, c, idx);
}
static fx_tensor *f_rnn_len(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    fx_tensor *h_n = NULL, *c_n = NULL;
    fx_tensor *out = fx_recurrent_forward(l, c, in[0], I64(c, 3, 5, 2, 4), NULL, NULL, &h_n, &c_n);
    if (!out || !h_n)
        return NULL;
    /* h_n joins the output so its gradient path is checked too */
    return fx_concat(c, 2, (fx_tensor *[]){ fx_reshape(c, out, 1, (int64_t[]){ fx_tensor_numel(out) }),
                                            fx_reshape(c, h_n, 1, (int64_t[]){ fx_tensor_numel(h_n) }) }, 0);
}
static fx_tensor *f_sdpa(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_scaled_dot_product_attention(c, in[0], in[1], in[2], I32(c, 2, 5, 3), true, NULL, 0.0f);
}
static fx_tensor *f_sdpa_mask(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_scaled_dot_product_attention(c, in[0], in[1], in[2], NULL, false, in[3], 0.0f);
}
static fx_tensor *f_mha(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    return fx_multihead_attention_forward(l, c, in[0], in[0], in[0], I64(c, 2, 4, 2), false);
}
static fx_tensor *f_ctc(fx_ctx *c, fx_tensor **in, fx_layer *l)
{
    fx_tensor *tg = fx_tensor_from_host(c, FX_I32, 2, (int64_t[]){ 2, 3 },
                                        (int32_t[]){ 1, 2, 2, 3, 1, 0 });
    return fx_ctc_loss(c, in[0], tg, I32(c, 2, 8, 6), I32(c, 2, 3, 2),
                       &(fx_ctc_opts){ .reduction = FX_NONE, .from_logits = true });
}

static fx_layer *l_bn2d(fx_rng *r) { return fx_batchnorm2d_create("bn", 3, NULL); }
static fx_layer *l_bn1d(fx_rng *r) { return fx_batchnorm1d_create("bn", 5, NULL); }
static fx_layer *l_ln(fx_rng *r) { return fx_layernorm_create("ln", 1, (int64_t[]){ 6 }, NULL); }
static fx_layer *l_gn(fx_rng *r) { return fx_groupnorm_create("gn", 2, 4, NULL); }
static fx_layer *l_emb(fx_rng *r)
{
    return fx_embedding_create("emb", 7, 5, &(fx_embedding_opts){ .has_padding = true, .padding_idx = 2 }, r);
}
static fx_layer *l_lstm(fx_rng *r)
{
    return fx_lstm_create("lstm", 4, 6, &(fx_recurrent_opts){ .num_layers = 2, .bidirectional = true }, r);
}
static fx_layer *l_gru(fx_rng *r) { return fx_gru_create("gru", 4, 5, NULL, r); }
static fx_layer *l_rnn(fx_rng *r) { return fx_rnn_create("rnn", 4, 5, &(fx_recurrent_opts){ .relu = true }, r); }
static fx_layer *l_mha(fx_rng *r) { return fx_multihead_attention_create("mha", 8, 2, true, r); }
static fx_layer *l_dense(fx_rng *r)
{
    return fx_dense_create("fc", 7, 5, &(fx_dense_opts){ .act = FX_ACT_GELU }, r);
}
static fx_layer *l_conv(fx_rng *r)
{
    return fx_conv2d_create("conv", 3, 4, 3, 3, &(fx_conv_opts){ .padding = 1, .act = FX_ACT_RELU }, r);
}

#define S2(a, b) 2, { { a, b } }
static const op_case CASES[] = {
    /* name          tol   inputs                                  range     fn */
    { "matmul", 5e-4, 2, { 2, 2 }, { { 5, 7 }, { 7, 3 } }, -1, 1, f_matmul, NULL },
    { "matmul_batched", 5e-4, 2, { 3, 3 }, { { 2, 4, 5 }, { 2, 5, 3 } }, -1, 1, f_matmul, NULL },
    { "linear", 5e-4, 3, { 2, 2, 1 }, { { 6, 8 }, { 4, 8 }, { 4 } }, -1, 1, f_linear, NULL },
    { "add_bcast", 1e-5, 2, { 2, 2 }, { { 4, 5 }, { 1, 5 } }, -1, 1, f_add, NULL },
    { "sub_bcast", 1e-5, 2, { 3, 3 }, { { 3, 1, 4 }, { 1, 2, 4 } }, -1, 1, f_sub, NULL },
    { "mul_bcast", 1e-5, 2, { 2, 2 }, { { 4, 1 }, { 4, 6 } }, -1, 1, f_mul, NULL },
    { "div", 1e-5, 2, { 2, 2 }, { { 4, 6 }, { 4, 6 } }, 0.5, 2, f_div, NULL },
    { "neg", 1e-5, IN1(1, 33), -1, 1, f_neg, NULL },
    { "scale", 1e-5, IN1(1, 33), -1, 1, f_scale, NULL },
    { "add_scalar", 1e-5, IN1(1, 33), -1, 1, f_adds, NULL },
    { "exp", 1e-5, IN1(1, 33), -2, 2, f_exp, NULL },
    { "log", 1e-5, IN1(1, 33), 0.1, 3, f_log, NULL },
    { "sqrt", 1e-5, IN1(1, 33), 0.1, 3, f_sqrt, NULL },
    { "pow", 1e-5, IN1(1, 33), 0.1, 3, f_pow, NULL },
    { "abs", 1e-5, IN1(1, 33), -1, 1, f_abs, NULL },
    { "relu", 1e-5, IN1(1, 33), -1, 1, f_relu, NULL },
    { "leaky_relu", 1e-5, IN1(1, 33), -1, 1, f_leaky, NULL },
    { "elu", 1e-5, IN1(1, 33), -1, 1, f_elu, NULL },
    { "gelu", 1e-5, IN1(1, 33), -3, 3, f_gelu, NULL },
    { "sigmoid", 1e-5, IN1(1, 33), -4, 4, f_sigmoid, NULL },
    { "tanh", 1e-5, IN1(1, 33), -3, 3, f_tanh, NULL },
    { "clamp", 1e-5, IN1(1, 33), -1, 1, f_clamp, NULL },
    { "softmax_last", 1e-4, IN1(3, 2, 3, 300), -3, 3, f_softmax1, NULL },
    { "softmax_inner", 1e-4, IN1(3, 2, 7, 5), -3, 3, f_softmax0, NULL },
    { "log_softmax", 1e-4, IN1(3, 2, 3, 9), -3, 3, f_logsoftmax, NULL },
    { "sum_axis1", 1e-4, IN1(3, 3, 4, 5), -1, 1, f_sum1, NULL },
    { "sum_axes02", 1e-4, IN1(3, 3, 4, 5), -1, 1, f_sum02, NULL },
    { "mean_all", 1e-4, IN1(3, 3, 4, 500), -1, 1, f_mean_all, NULL },
    { "max_last", 1e-5, IN1(3, 3, 4, 5), -1, 1, f_max2, NULL },
    { "max_first", 1e-5, IN1(3, 3, 4, 5), -1, 1, f_max0, NULL },
    { "transpose", 1e-5, IN1(3, 2, 3, 4), -1, 1, f_transpose, NULL },
    { "permute_view", 1e-5, 2, { 3, 3 }, { { 3, 4, 2 }, { 2, 3, 4 } }, -1, 1, f_permute_mul, NULL },
    { "concat", 1e-5, 2, { 2, 2 }, { { 3, 2 }, { 3, 4 } }, -1, 1, f_concat, NULL },
    { "slice_step", 1e-5, IN1(2, 3, 8), -1, 1, f_slice, NULL },
    { "index_select", 1e-5, IN1(3, 2, 6, 3), -1, 1, f_index_select, NULL },
    { "gather", 1e-5, IN1(2, 3, 4), -1, 1, f_gather, NULL },
    { "where", 1e-5, 2, { 2, 2 }, { { 3, 4 }, { 3, 1 } }, -1, 1, f_where, NULL },
    { "dropout", 1e-5, IN1(2, 16, 40), -1, 1, f_dropout, NULL },
    { "mse", 1e-5, 2, { 2, 2 }, { { 4, 3 }, { 4, 3 } }, -1, 1, f_mse, NULL },
    { "cross_entropy", 1e-4, IN1(2, 6, 10), -3, 3, f_ce, NULL },
    { "cross_entropy_soft", 1e-4, 2, { 2, 2 }, { { 5, 7 }, { 5, 7 } }, 0, 1, f_ce_soft, NULL },
    { "bce_logits", 1e-5, 2, { 2, 2 }, { { 5, 7 }, { 5, 7 } }, 0, 1, f_bce, NULL },
    { "conv2d_grouped", 5e-4, 3, { 4, 4, 1 }, { { 2, 4, 7, 6 }, { 6, 2, 3, 3 }, { 6 } }, -1, 1, f_conv2d, NULL },
    { "conv2d_dilated", 5e-4, 2, { 4, 4 }, { { 2, 3, 8, 8 }, { 5, 3, 3, 3 } }, -1, 1, f_conv2d_dil, NULL },
    { "conv1d", 5e-4, 3, { 3, 3, 1 }, { { 2, 3, 9 }, { 4, 3, 3 }, { 4 } }, -1, 1, f_conv1d, NULL },
    { "conv_transpose2d", 5e-4, 3, { 4, 4, 1 }, { { 2, 3, 4, 5 }, { 3, 2, 3, 3 }, { 2 } }, -1, 1, f_convt, NULL },
    { "maxpool3_s2_p1", 1e-5, IN1(4, 2, 3, 7, 8), -1, 1, f_maxpool3, NULL },
    { "maxpool2", 1e-5, IN1(4, 2, 3, 8, 6), -1, 1, f_maxpool2, NULL },
    { "avgpool", 1e-5, IN1(4, 2, 3, 7, 8), -1, 1, f_avgpool, NULL },
    { "adaptive_avgpool", 1e-5, IN1(4, 2, 3, 7, 5), -1, 1, f_adaptive, NULL },
    { "global_avgpool", 1e-4, IN1(4, 2, 3, 7, 5), -1, 1, f_gap, NULL },
    { "dense_gelu", 5e-4, IN1(2, 9, 7), -1, 1, f_layer, l_dense },
    { "conv_layer_relu", 5e-4, IN1(4, 2, 3, 6, 6), -1, 1, f_layer, l_conv },
    { "batchnorm2d", 1e-4, IN1(4, 4, 3, 5, 6), -1, 3, f_layer, l_bn2d },
    { "batchnorm1d", 1e-4, IN1(2, 70, 5), -1, 3, f_layer, l_bn1d },
    { "layernorm", 1e-4, IN1(3, 2, 5, 6), -1, 3, f_layer, l_ln },
    { "groupnorm", 1e-4, IN1(3, 3, 4, 7), -1, 3, f_layer, l_gn },
    { "embedding_pad", 1e-4, 0, { 0 }, { { 0 } }, 0, 0, f_embedding, l_emb },
    { "lstm_bidir_2layer", 5e-4, IN1(3, 3, 5, 4), -1, 1, f_rnn_len, l_lstm },
    { "gru", 5e-4, IN1(3, 3, 5, 4), -1, 1, f_rnn_len, l_gru },
    { "rnn_relu", 5e-4, IN1(3, 3, 5, 4), -1, 1, f_rnn_len, l_rnn },
    { "sdpa_causal_lengths", 5e-4, 3, { 3, 3, 3 }, { { 2, 4, 6 }, { 2, 5, 6 }, { 2, 5, 3 } }, -1, 1, f_sdpa, NULL },
    { "sdpa_additive_mask", 5e-4, 4, { 3, 3, 3, 3 }, { { 2, 4, 6 }, { 2, 5, 6 }, { 2, 5, 3 }, { 2, 4, 5 } }, -1, 1, f_sdpa_mask, NULL },
    { "mha", 5e-4, IN1(3, 2, 4, 8), -1, 1, f_mha, l_mha },
    { "ctc", 2e-3, IN1(3, 8, 2, 5), -2, 2, f_ctc, NULL },
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

/* ------------------------------------------------------------- the runner */

/* Max over i of |g - c| / (1 + |c|); NaN anywhere counts as infinite unless
 * both are NaN at that position. */
static double rel_err(const float *g, const float *c, int64_t n, int64_t *where)
{
    double worst = 0.0;
    *where = -1;
    for (int64_t i = 0; i < n; i++) {
        double e;
        if (isnan(g[i]) || isnan(c[i]))
            e = isnan(g[i]) && isnan(c[i]) ? 0.0 : INFINITY;
        else if (isinf(g[i]) || isinf(c[i]))
            e = g[i] == c[i] ? 0.0 : INFINITY;
        else
            e = fabs((double)g[i] - c[i]) / (1.0 + fabs((double)c[i]));
        if (e > worst || (*where < 0 && e > 0)) {
            worst = e;
            *where = i;
        }
    }
    return worst;
}

static void expect_close(const char *cs, const char *what, const fx_tensor *gpu,
                         const fx_tensor *cpu, double tol)
{
    assert_non_null(gpu);
    assert_non_null(cpu);
    assert_true(fx_tensor_same_shape(gpu, cpu));
    int64_t n = fx_tensor_numel(cpu), at;
    float *g = tu_values(gpu), *c = tu_values(cpu);
    double e = rel_err(g, c, n, &at);
    if (e > tol)
        fail_msg("%s: %s differs: element %lld gpu %.7g cpu %.7g (rel err %.3g > tol %.1g)", cs,
                 what, (long long)at, at >= 0 ? g[at] : 0.0, at >= 0 ? c[at] : 0.0, e, tol);
    free(g);
    free(c);
}

static void expect_synced(const char *cs)
{
    char err[512];
    fx_status s = fx_device_sync(GPU, err, sizeof err);
    if (s != FX_OK)
        fail_msg("%s: device error: %s", cs, err);
}

/* One side of a case: inputs, layer, context, output and seed. */
typedef struct {
    fx_ctx *ctx;
    fx_tensor *in[4];
    fx_layer *layer;
    fx_tensor *out;
    fx_params params;
} side;

static void side_run(const op_case *c, side *s, const float *seed_vals, int64_t seed_n)
{
    fx_ctx_seed(s->ctx, 7);
    s->out = c->fn(s->ctx, s->in, s->layer);
    if (!s->out)
        fail_msg("%s on %s: %s", c->name,
                 fx_ctx_device(s->ctx).type == FX_DEV_CPU ? "cpu" : "cuda:0",
                 fx_ctx_error(s->ctx));
    if (seed_vals) {
        assert_int_equal(fx_tensor_numel(s->out), seed_n);
        fx_tensor *seed = fx_tensor_from_host(s->ctx, FX_F32, s->out->ndim, s->out->shape, seed_vals);
        assert_non_null(seed);
        if (fx_backward_seed(s->ctx, s->out, seed) != FX_OK)
            fail_msg("%s: backward: %s", c->name, fx_ctx_error(s->ctx));
    }
}

static void run_case(void **state)
{
    const op_case *c = *state;
    fx_rng *rng = fx_rng_create(1234);
    side cpu = { 0 }, gpu = { 0 };
    cpu.ctx = fx_ctx_create(fx_cpu());
    gpu.ctx = fx_ctx_create(GPU);
    assert_non_null(gpu.ctx);
    for (int i = 0; i < c->nin; i++) {
        cpu.in[i] = tu_uniform(rng, c->ndim[i], c->shape[i], c->lo, c->hi);
        gpu.in[i] = fx_tensor_to_device(cpu.in[i], GPU);
        assert_non_null(gpu.in[i]);
        assert_int_equal(fx_tensor_set_requires_grad(gpu.in[i], true), FX_OK);
    }
    fx_params_init(&cpu.params);
    fx_params_init(&gpu.params);
    if (c->layer) { /* two identical layers from one seed; one moves to the GPU */
        fx_rng *r1 = fx_rng_create(99), *r2 = fx_rng_create(99);
        cpu.layer = c->layer(r1);
        gpu.layer = c->layer(r2);
        fx_rng_free(r1);
        fx_rng_free(r2);
        assert_non_null(cpu.layer);
        assert_int_equal(fx_layer_to_device(gpu.layer, GPU), FX_OK);
        assert_int_equal(fx_layer_collect_params(cpu.layer, &cpu.params), FX_OK);
        assert_int_equal(fx_layer_collect_params(gpu.layer, &gpu.params), FX_OK);
        for (int i = 0; i < gpu.params.count; i++)
            assert_int_equal(gpu.params.items[i].tensor->device.type, GPU.type);
    }
    /* the seed gradient: fixed random values of the output's size */
    side_run(c, &cpu, NULL, 0);
    int64_t n = fx_tensor_numel(cpu.out);
    float *seed = malloc((size_t)(n ? n : 1) * sizeof *seed);
    for (int64_t i = 0; i < n; i++)
        seed[i] = (float)(((i * 7919) % 23) - 11) / 7.0f;
    fx_ctx_reset(cpu.ctx);
    if (c->layer) { /* the first run moved batch-norm statistics: start again */
        fx_layer_free(cpu.layer);
        fx_params_clear(&cpu.params);
        fx_rng *r1 = fx_rng_create(99);
        cpu.layer = c->layer(r1);
        fx_rng_free(r1);
        assert_int_equal(fx_layer_collect_params(cpu.layer, &cpu.params), FX_OK);
    }
    side_run(c, &cpu, seed, n);
    side_run(c, &gpu, seed, n);
    expect_synced(c->name);

    expect_close(c->name, "output", gpu.out, cpu.out, c->tol);
    for (int i = 0; i < c->nin; i++) {
        char what[32];
        snprintf(what, sizeof what, "grad of input %d", i);
        if (cpu.in[i]->grad)
            expect_close(c->name, what, gpu.in[i]->grad, cpu.in[i]->grad, c->tol);
    }
    assert_int_equal(cpu.params.count, gpu.params.count);
    for (int i = 0; i < cpu.params.count; i++) {
        fx_tensor *pc = cpu.params.items[i].tensor, *pg = gpu.params.items[i].tensor;
        char what[160];
        snprintf(what, sizeof what, "parameter %s", cpu.params.items[i].name);
        expect_close(c->name, what, pg, pc, c->tol); /* running statistics moved */
        if (pc->grad) {
            snprintf(what, sizeof what, "grad of %s", cpu.params.items[i].name);
            expect_close(c->name, what, pg->grad, pc->grad, c->tol);
        }
    }
    free(seed);
    fx_params_clear(&cpu.params);
    fx_params_clear(&gpu.params);
    fx_layer_free(cpu.layer);
    fx_layer_free(gpu.layer);
    for (int i = 0; i < c->nin; i++) {
        fx_tensor_free(cpu.in[i]);
        fx_tensor_free(gpu.in[i]);
    }
    fx_ctx_free(cpu.ctx);
    fx_ctx_free(gpu.ctx);
    fx_rng_free(rng);
}

/* ----------------------------------------------- training, optimizers */

static fx_layer *mlp(fx_rng *r)
{
    return fx_chain_create("mlp", 2, (fx_layer *[]){
        fx_dense_create("fc1", 12, 32, &(fx_dense_opts){ .act = FX_ACT_RELU }, r),
        fx_dense_create("fc2", 32, 5, NULL, r) });
}

typedef struct {
    fx_ctx *ctx;
    fx_layer *net;
    fx_params params;
    fx_optim *opt;
} trainer;

static void trainer_init(trainer *t, fx_device dev, fx_optim_kind kind)
{
    fx_rng *r = fx_rng_create(5);
    t->net = mlp(r);
    fx_rng_free(r);
    assert_non_null(t->net);
    assert_int_equal(fx_layer_to_device(t->net, dev), FX_OK);
    fx_params_init(&t->params);
    assert_int_equal(fx_layer_collect_params(t->net, &t->params), FX_OK);
    t->opt = fx_optim_create(kind, &(fx_optim_hparams){ .lr = 0.05, .weight_decay = 0.01 },
                             &t->params);
    assert_non_null(t->opt);
    t->ctx = fx_ctx_create(dev);
    assert_non_null(t->ctx);
}

static void trainer_step(trainer *t, int step)
{
    float xs[16 * 12];
    int32_t ys[16];
    for (int i = 0; i < 16 * 12; i++)
        xs[i] = (float)(((i + step * 31) * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (int i = 0; i < 16; i++)
        ys[i] = (i * 3 + step) % 5;
    fx_tensor *x = fx_tensor_from_host(t->ctx, FX_F32, 2, (int64_t[]){ 16, 12 }, xs);
    fx_tensor *y = fx_tensor_from_host(t->ctx, FX_I32, 1, (int64_t[]){ 16 }, ys);
    fx_tensor *loss = fx_cross_entropy(t->ctx, fx_layer_forward(t->net, t->ctx, x), y, FX_MEAN);
    if (fx_backward(t->ctx, loss) != FX_OK)
        fail_msg("training step: %s", fx_ctx_error(t->ctx));
    assert_int_equal(fx_optim_step(t->opt), FX_OK);
    fx_optim_zero_grad(t->opt);
    fx_ctx_reset(t->ctx);
}

static void trainer_free(trainer *t)
{
    fx_optim_free(t->opt);
    fx_params_clear(&t->params);
    fx_layer_free(t->net);
    fx_ctx_free(t->ctx);
}

/* Five steps of each optimizer on both devices end at the same weights. */
static void test_optimizers(void **state)
{
    for (int k = 0; k < FX_OPT_COUNT; k++) {
        trainer c, g;
        trainer_init(&c, fx_cpu(), (fx_optim_kind)k);
        trainer_init(&g, GPU, (fx_optim_kind)k);
        for (int s = 0; s < 5; s++) {
            trainer_step(&c, s);
            trainer_step(&g, s);
        }
        expect_synced("optimizers");
        for (int i = 0; i < c.params.count; i++) {
            char what[96];
            snprintf(what, sizeof what, "optimizer %d: %s", k, c.params.items[i].name);
            expect_close(what, "weights after 5 steps", g.params.items[i].tensor,
                         c.params.items[i].tensor, 1e-4);
        }
        trainer_free(&c);
        trainer_free(&g);
    }
}

/* Steady-state steps take no memory from the driver: the arena keeps its
 * chunk and the pool keeps what was freed. */
static void test_pool_reuse(void **state)
{
    trainer t;
    trainer_init(&t, GPU, FX_OPT_ADAM);
    for (int s = 0; s < 3; s++)
        trainer_step(&t, s);
    fx_device_mem_stats a, b;
    assert_int_equal(fx_device_mem_stats_get(GPU, &a), FX_OK);
    for (int s = 3; s < 20; s++)
        trainer_step(&t, s);
    expect_synced("pool_reuse");
    assert_int_equal(fx_device_mem_stats_get(GPU, &b), FX_OK);
    if (b.driver_grows != a.driver_grows)
        fail_msg("steady-state steps grew the pool %llu times (reserved %zu -> %zu)",
                 (unsigned long long)(b.driver_grows - a.driver_grows), a.reserved, b.reserved);
    assert_int_equal(b.in_use, a.in_use); /* nothing leaks from step to step */
    assert_true(b.reserved >= b.in_use);
    assert_true(a.driver_grows >= 1); /* the counter counts */
    trainer_free(&t);
    /* everything this test allocated went back */
    fx_device_mem_stats c;
    assert_int_equal(fx_device_mem_stats_get(GPU, &c), FX_OK);
    assert_true(c.in_use < b.in_use);
}

/* A memory limit refuses allocations past it with FX_ERR_NOMEM and a
 * message naming the device and the sizes, and lifting it works again. */
static void test_memory_limit(void **state)
{
    fx_device_mem_stats st;
    assert_int_equal(fx_device_mem_stats_get(GPU, &st), FX_OK);
    size_t limit = st.in_use + (1u << 20);
    assert_int_equal(fx_device_set_memory_limit(GPU, limit), FX_OK);
    fx_device_info info;
    assert_int_equal(fx_device_get_info(GPU, &info), FX_OK);
    assert_int_equal(info.limit_bytes, limit);

    fx_tensor *big = fx_tensor_create(GPU, FX_F32, 1, (int64_t[]){ 1 << 20 }); /* 4 MiB */
    assert_null(big);
    const char *why = fx_device_last_error();
    assert_non_null(strstr(why, "cuda:0"));
    assert_non_null(strstr(why, "limit"));
    assert_non_null(strstr(why, "4194304"));

    fx_ctx *ctx = fx_ctx_create(GPU);
    assert_non_null(ctx);
    fx_tensor *z = fx_zeros(ctx, FX_F32, 1, (int64_t[]){ 1 << 21 }); /* 8 MiB in the arena */
    assert_null(z);
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_NOMEM);
    assert_non_null(strstr(fx_ctx_error(ctx), "cuda:0"));
    assert_non_null(strstr(fx_ctx_error(ctx), "limit"));
    fx_ctx_free(ctx);

    assert_int_equal(fx_device_set_memory_limit(GPU, 0), FX_OK);
    big = fx_tensor_create(GPU, FX_F32, 1, (int64_t[]){ 1 << 20 });
    assert_non_null(big);
    fx_tensor_free(big);
    expect_synced("memory_limit");
    assert_int_equal(fx_device_set_memory_limit((fx_device){ FX_DEV_CUDA, 99 }, 1), FX_ERR_DEVICE);
}

/* More than the device has fails cleanly, not with a crash. */
static void test_oom(void **state)
{
    fx_device_info info;
    assert_int_equal(fx_device_get_info(GPU, &info), FX_OK);
    int64_t n = (int64_t)(info.total_bytes / 4) * 2; /* twice the device */
    fx_tensor *t = fx_tensor_create(GPU, FX_F32, 1, &n);
    assert_null(t);
    assert_non_null(strstr(fx_device_last_error(), "cuda:0"));
    expect_synced("oom");
}

static void test_enumeration(void **state)
{
    int n = fx_device_count(FX_DEV_CUDA);
    assert_true(n >= 1);
    assert_int_equal(fx_device_count(FX_DEV_CPU), 1);
    for (int i = 0; i < n; i++) {
        fx_device_info info;
        fx_device d = { FX_DEV_CUDA, i };
        assert_true(fx_device_available(d));
        assert_int_equal(fx_device_get_info(d, &info), FX_OK);
        assert_true(strlen(info.name) > 0);
        assert_true(info.total_bytes > 0);
        assert_true(info.free_bytes <= info.total_bytes);
        assert_true(info.cc_major >= 5);
        printf("  cuda:%d: %s, sm_%d%d, %zu MiB total, %zu MiB free\n", i, info.name,
               info.cc_major, info.cc_minor, info.total_bytes >> 20, info.free_bytes >> 20);
    }
    fx_device bad = { FX_DEV_CUDA, n };
    fx_device_info info;
    assert_false(fx_device_available(bad));
    assert_int_equal(fx_device_get_info(bad, &info), FX_ERR_DEVICE);
    assert_null(fx_ctx_create(bad));
    assert_null(fx_tensor_create(bad, FX_F32, 1, (int64_t[]){ 4 }));
}

/* Moving tensors: values survive cpu -> gpu -> cpu, views and arena tensors
 * cannot be moved in place, a cross-device op is refused. */
static void test_moves(void **state)
{
    float v[6] = { 1, -2, 3.5f, 4, 5, -6 }, back[6];
    fx_tensor *t = tu_from(FX_F32, 2, (int64_t[]){ 2, 3 }, v);
    assert_int_equal(fx_tensor_set_requires_grad(t, true), FX_OK);
    assert_int_equal(fx_tensor_move_to_device(t, GPU), FX_OK);
    assert_int_equal(t->device.type, FX_DEV_CUDA);
    assert_int_equal(t->grad->device.type, FX_DEV_CUDA);
    assert_int_equal(fx_tensor_to_host(t, back, sizeof back), FX_OK);
    assert_memory_equal(back, v, sizeof v);
    fx_ctx *cc = fx_ctx_create(fx_cpu());
    fx_tensor *x = fx_tensor_from_host(cc, FX_F32, 2, (int64_t[]){ 2, 3 }, v);
    assert_null(fx_add(cc, x, t)); /* different devices */
    assert_int_equal(fx_ctx_status(cc), FX_ERR_DEVICE);
    assert_int_equal(fx_tensor_move_to_device(x, GPU), FX_ERR_STATE);
    assert_int_equal(fx_tensor_move_to_device(t, fx_cpu()), FX_OK);
    memset(back, 0, sizeof back);
    assert_int_equal(fx_tensor_to_host(t, back, sizeof back), FX_OK);
    assert_memory_equal(back, v, sizeof v);
    assert_int_equal(fx_tensor_move_to_device(t, (fx_device){ FX_DEV_CUDA, 99 }), FX_ERR_DEVICE);
    fx_ctx_free(cc);
    fx_tensor_free(t);
    expect_synced("moves");
}

/* A bad index on the GPU is reported by the op like on the CPU. */
static void test_bad_values(void **state)
{
    fx_ctx *ctx = fx_ctx_create(GPU);
    fx_tensor *w = fx_zeros(ctx, FX_F32, 2, (int64_t[]){ 4, 3 });
    assert_null(fx_index_select(ctx, w, 0, I64(ctx, 3, 1, 4, 0)));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    fx_ctx_reset(ctx);
    fx_tensor *logits = fx_zeros(ctx, FX_F32, 2, (int64_t[]){ 2, 3 });
    assert_null(fx_cross_entropy(ctx, logits, I32(ctx, 2, 0, -1), FX_MEAN));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    fx_ctx_reset(ctx);
    fx_tensor *x = fx_full(ctx, FX_F32, 1, (int64_t[]){ 3 }, -1.0);
    assert_null(fx_log(ctx, fx_add_scalar(ctx, x, -1.0f))); /* log of negatives: NaN */
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_VALUE);
    fx_ctx_free(ctx);
    expect_synced("bad_values");
}

static void test_parse(void **state)
{
    fx_device d;
    assert_true(fx_device_parse("cpu", &d) && d.type == FX_DEV_CPU);
    assert_true(fx_device_parse("cuda", &d) && d.type == FX_DEV_CUDA && d.index == 0);
    assert_true(fx_device_parse("cuda:3", &d) && d.index == 3);
    assert_false(fx_device_parse("cuda:", &d));
    assert_false(fx_device_parse("cuda:-1", &d));
    assert_false(fx_device_parse("cuda:1x", &d));
    assert_false(fx_device_parse("gpu", &d));
    assert_false(fx_device_parse(NULL, &d));
}

int main(void)
{
    const char *why = "", *on_cpu = getenv("FX_CUDA_TEST_ON_CPU");
    bool cpu_only = on_cpu && *on_cpu && strcmp(on_cpu, "0");
    if (cpu_only) {
        GPU = fx_cpu();
        printf("FX_CUDA_TEST_ON_CPU: the cases run CPU against CPU (no CUDA device used)\n");
    } else if (fx__cuda_device_count(&why) == 0) {
        printf("SKIPPED: no CUDA device (%s)\n", why);
        return 77;
    }
    struct CMUnitTest tests[NCASES + 9];
    int n = 0;
    for (int i = 0; i < NCASES; i++)
        tests[n++] = (struct CMUnitTest){ CASES[i].name, run_case, NULL, NULL, (void *)&CASES[i] };
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_parse);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_bad_values);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_optimizers);
    if (cpu_only)
        return _cmocka_run_group_tests("cuda_cases_on_cpu", tests, (size_t)n, NULL, NULL);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_enumeration);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_moves);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_pool_reuse);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_memory_limit);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_oom);
    return _cmocka_run_group_tests("cuda", tests, (size_t)n, NULL, NULL);
}
