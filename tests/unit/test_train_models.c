/* test_train_models.c - models of the field must train: each is built from
 * the engine's layers and combinators, trained with Adam on synthetic data
 * made here from a fixed seed, and must show its loss falling to under half
 * the initial value and its accuracy rising well above chance.
 *
 *   adversarial: a shared block feeding a classifier and, through a gradient
 *     reversal, a nuisance (domain) head; the shared block's gradient is the
 *     classifier's minus lambda times the nuisance's, and the reversal strips
 *     the nuisance from the shared features.
 *   resnet: an AlphaGo Zero style net (conv stem, two residual blocks with
 *     batch norm, a tanh value head and a softmax policy head; loss = value
 *     MSE + policy cross-entropy) on synthetic boards.
 *   lstm: an LSTM classifier on variable-length sequences: does a token
 *     occur in the valid part (the padding holds decoys)?
 *   ctc: per-frame dense layers trained with the CTC loss to transcribe
 *     frames of symbols with repeats and blanks; greedy decoding.
 *
 * Sizes are small so the file runs in a few seconds in Release; under
 * AddressSanitizer the LSTM trains for fewer steps and the ResNet runs only
 * a few (its learning checks are skipped, with a message).
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Under ASan (~10x slower) the long trainings use fewer steps; the models
 * still pass their thresholds, just with less margin. */
#if defined(__SANITIZE_ADDRESS__)
#define FX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FX_ASAN 1
#endif
#endif
#ifndef FX_ASAN
#define FX_ASAN 0
#endif

/* --------------------------------------------------------------- helpers */

/* Fraction of rows of logits [N,C] whose argmax is the label. */
static double accuracy(const fx_tensor *logits, const int32_t *labels)
{
    int64_t n = logits->shape[0], c = logits->shape[1];
    float *v = tu_values(logits);
    int64_t hit = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t best = 0;
        for (int64_t k = 1; k < c; k++)
            if (v[i * c + k] > v[i * c + best])
                best = k;
        hit += best == labels[i];
    }
    free(v);
    return (double)hit / (double)n;
}

/* Adam over every parameter of a layer, the rate decaying to lr/20 over
 * steps by a cosine (steps 0: constant); the caller frees it and the list. */
static fx_optim *adam_for(fx_layer *net, fx_params *ps, double lr, int steps)
{
    fx_params_init(ps);
    assert_int_equal(fx_layer_collect_params(net, ps), FX_OK);
    fx_schedule sched = { .kind = steps ? FX_SCHED_COSINE : FX_SCHED_CONSTANT,
                          .total_steps = steps, .min_lr = lr / 20 };
    fx_optim *opt = fx_optim_create(FX_OPT_ADAM, &(fx_optim_hparams){ .lr = lr, .schedule = sched },
                                    ps);
    if (!opt)
        fail_msg("optimizer: %s", fx_optim_last_create_error());
    return opt;
}

static void check_step(fx_ctx *ctx, fx_tensor *loss, const char *model, int step)
{
    if (!loss || fx_backward(ctx, loss) != FX_OK)
        fail_msg("%s, step %d: %s", model, step, fx_ctx_error(ctx));
}

/* Prints and checks a model's progress: final loss under half the initial,
 * final accuracy at least min_acc (and above the initial one). */
static void check_learned(const char *model, double loss0, double loss1, double acc0, double acc1,
                          double min_acc)
{
    printf("# %s: loss %.4f -> %.4f, accuracy %.3f -> %.3f (need < %.4f and >= %.2f)\n", model,
           loss0, loss1, acc0, acc1, 0.5 * loss0, min_acc);
    if (!(loss1 < 0.5 * loss0))
        fail_msg("%s: loss went from %g to %g, not under half", model, loss0, loss1);
    if (!(acc1 >= min_acc && acc1 > acc0))
        fail_msg("%s: accuracy went from %g to %g, wanted >= %g", model, acc0, acc1, min_acc);
}

/* ----------------------------------------------------------- adversarial */

enum { ADV_N = 256, ADV_D = 8, ADV_H = 16 };

/* x ~ N(0,1)^8; the class is x0 + x1 - x3 > 0 and the nuisance (domain) is
 * x2 + 0.5 x4 > 0: independent, carried by different inputs. */
typedef struct {
    float x[ADV_N * ADV_D];
    int32_t y[ADV_N], d[ADV_N];
} adv_data;

static void adv_make(adv_data *a, uint64_t seed)
{
    fx_rng *rng = fx_rng_create(seed);
    for (int i = 0; i < ADV_N; i++) {
        float *x = a->x + i * ADV_D;
        for (int j = 0; j < ADV_D; j++)
            x[j] = (float)fx_rng_normal(rng);
        a->y[i] = x[0] + x[1] - x[3] > 0;
        a->d[i] = x[2] + 0.5f * x[4] > 0;
    }
    fx_rng_free(rng);
}

/* shared: dense+relu; heads: "cls" and "adv" = grad_reverse then "dom". */
static fx_layer *adv_net(float lambda, fx_rng *rng)
{
    fx_layer *shared = fx_dense_create("shared", ADV_D, ADV_H, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng);
    fx_layer *cls = fx_dense_create("cls", ADV_H, 2, NULL, rng);
    fx_layer *adv = fx_chain_create("adv", 2, (fx_layer *[]){ fx_grad_reverse_create("grl", lambda),
                                                              fx_dense_create("dom", ADV_H, 2, NULL, rng) });
    fx_layer *net = fx_heads_create("net", shared, 2, (fx_layer *[]){ cls, adv });
    assert_non_null(net);
    return net;
}

/* The combined loss CE(cls, y) + CE(dom, d) of one forward; out gets the two
 * heads' logits. */
static fx_tensor *adv_loss(fx_ctx *ctx, fx_layer *net, const adv_data *a, fx_tensor **out)
{
    fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(ADV_N, ADV_D), a->x);
    fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(ADV_N), a->y);
    fx_tensor *d = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(ADV_N), a->d);
    if (fx_layer_forward_multi(net, ctx, x, 2, out) != FX_OK)
        return NULL;
    return fx_add(ctx, fx_cross_entropy(ctx, out[0], y, FX_MEAN),
                  fx_cross_entropy(ctx, out[1], d, FX_MEAN));
}

/* The gradient of the shared block is the combined one: with the reversal
 * at lambda it equals g_cls - lambda * g_dom, where g_cls and g_dom are the
 * gradients of each loss alone computed without any reversal. */
static void test_adversarial_gradient(void **state)
{
    (void)state;
    static adv_data a;
    adv_make(&a, 11);
    fx_rng *rng = fx_rng_create(12);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *net = adv_net(0.0f, rng);
    fx_layer *shared = fx_layer_child(net, 0), *cls = fx_layer_child(net, 1);
    fx_layer *dom = fx_layer_child(fx_layer_child(net, 2), 1);
    fx_tensor *w = fx_layer_param(shared, "weight");
    int64_t nw = fx_tensor_numel(w);
    fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(ADV_N, ADV_D), a.x);
    fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(ADV_N), a.y);
    fx_tensor *d = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(ADV_N), a.d);

    /* each loss alone, by hand, no reversal */
    float *g[2];
    for (int k = 0; k < 2; k++) {
        fx_tensor_fill(w->grad, 0.0);
        fx_tensor *h = fx_layer_forward(shared, ctx, x);
        fx_tensor *loss = k ? fx_cross_entropy(ctx, fx_layer_forward(dom, ctx, h), d, FX_MEAN)
                            : fx_cross_entropy(ctx, fx_layer_forward(cls, ctx, h), y, FX_MEAN);
        check_step(ctx, loss, "adversarial gradient", k);
        g[k] = tu_values(w->grad);
        x = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(ADV_N, ADV_D), a.x);
    }
    float lambdas[] = { 0.0f, 0.7f, 1.5f };
    float *want = malloc((size_t)nw * sizeof *want);
    double gdom = 0;
    for (int64_t i = 0; i < nw; i++)
        gdom = fmax(gdom, fabs(g[1][i]));
    assert_true(gdom > 1e-4); /* the nuisance loss does reach the shared block */
    for (int k = 0; k < 3; k++) {
        assert_int_equal(fx_grad_reverse_set_lambda(fx_layer_child(fx_layer_child(net, 2), 0),
                                                    lambdas[k]), FX_OK);
        fx_tensor_fill(w->grad, 0.0);
        fx_tensor *out[2];
        check_step(ctx, adv_loss(ctx, net, &a, out), "adversarial gradient", 2 + k);
        float *got = tu_values(w->grad);
        for (int64_t i = 0; i < nw; i++)
            want[i] = g[0][i] - lambdas[k] * g[1][i];
        tu_assert_close(got, want, nw, 1e-6);
        free(got);
        fx_ctx_reset(ctx);
    }
    free(want);
    free(g[0]);
    free(g[1]);
    fx_layer_free(net);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Trains the adversarial net at lambda; returns the final nuisance-head
 * accuracy and checks that the classifier learned. */
static double adv_train(float lambda, const adv_data *a, const adv_data *test, const char *model)
{
    fx_rng *rng = fx_rng_create(13);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *net = adv_net(lambda, rng);
    fx_params ps;
    fx_optim *opt = adam_for(net, &ps, 1e-2, 0);
    fx_tensor *out[2];
    double loss0 = 0, acc0 = 0;
    const int steps = 300;
    for (int step = 0; step < steps; step++) {
        fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(ADV_N), a->y);
        fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(ADV_N, ADV_D), a->x);
        assert_int_equal(fx_layer_forward_multi(net, ctx, x, 2, out), FX_OK);
        fx_tensor *lc = fx_cross_entropy(ctx, out[0], y, FX_MEAN);
        fx_tensor *d = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(ADV_N), a->d);
        fx_tensor *loss = fx_add(ctx, lc, fx_cross_entropy(ctx, out[1], d, FX_MEAN));
        if (step == 0) {
            loss0 = fx_tensor_item(lc);
            acc0 = accuracy(out[0], a->y);
        }
        check_step(ctx, loss, model, step);
        assert_int_equal(fx_optim_step(opt), FX_OK);
        fx_optim_zero_grad(opt);
        fx_ctx_reset(ctx);
    }
    /* held-out data, eval mode */
    fx_ctx_set_grad(ctx, false);
    fx_tensor *loss = adv_loss(ctx, net, test, out);
    assert_non_null(loss);
    fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(ADV_N), test->y);
    double loss1 = fx_tensor_item(fx_cross_entropy(ctx, out[0], y, FX_MEAN));
    double acc1 = accuracy(out[0], test->y), nuis = accuracy(out[1], test->d);
    check_learned(model, loss0, loss1, acc0, acc1, 0.9);
    printf("# %s: nuisance accuracy %.3f\n", model, nuis);
    fx_optim_free(opt);
    fx_params_clear(&ps);
    fx_layer_free(net);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
    return nuis;
}

/* With the reversal the classifier still learns while the nuisance head,
 * trained just as hard, is pushed toward chance; without it (lambda 0, the
 * shared block ignores the nuisance loss) the nuisance stays predictable. */
static void test_adversarial_train(void **state)
{
    (void)state;
    static adv_data a, t;
    adv_make(&a, 21);
    adv_make(&t, 22);
    double plain = adv_train(0.0f, &a, &t, "adversarial lambda=0");
    double adv = adv_train(1.0f, &a, &t, "adversarial lambda=1");
    if (!(plain > 0.8 && adv < plain - 0.15))
        fail_msg("nuisance accuracy %.3f with the reversal vs %.3f without: not removed", adv, plain);
}

/* ---------------------------------------------------------------- resnet */

enum { RN_N = 256, RN_P = 3, RN_S = 5, RN_C = 8, RN_A = RN_S * RN_S, RN_STEPS = 100 };

/* Boards of 5x5 with three planes: the player's stones, the opponent's
 * (disjoint, each cell 30%) and a one-hot "hint" cell. The value target is
 * +1 when the player has more stones, -1 when fewer (ties are redrawn); the
 * policy target is the cell right of the hint (wrapping around the row). */
typedef struct {
    float x[RN_N * RN_P * RN_A];
    float z[RN_N];
    int32_t move[RN_N];
} rn_data;

static void rn_make(rn_data *d, uint64_t seed)
{
    fx_rng *rng = fx_rng_create(seed);
    memset(d->x, 0, sizeof d->x);
    for (int i = 0; i < RN_N; i++) {
        float *b = d->x + i * RN_P * RN_A;
        int diff;
        do {
            diff = 0;
            for (int c = 0; c < RN_A; c++) {
                double u = fx_rng_uniform(rng);
                b[c] = u < 0.3;
                b[RN_A + c] = u >= 0.3 && u < 0.6;
                diff += (int)b[c] - (int)b[RN_A + c];
            }
        } while (diff == 0);
        int hint = (int)(fx_rng_u64(rng) % RN_A), r = hint / RN_S, c = hint % RN_S;
        b[2 * RN_A + hint] = 1.0f;
        d->z[i] = diff > 0 ? 1.0f : -1.0f;
        d->move[i] = r * RN_S + (c + 1) % RN_S;
    }
    fx_rng_free(rng);
}

/* A k x k convolution (same padding, no bias: the batch norm has one), a
 * batch norm and optionally an activation, as a chain. */
static fx_layer *conv_bn(const char *name, int64_t in, int64_t out, int k, fx_activation act,
                         fx_rng *rng)
{
    fx_layer *ls[3] = { fx_conv2d_create("conv", in, out, k, k,
                                         &(fx_conv_opts){ .padding = k / 2, .no_bias = true }, rng),
                        fx_batchnorm2d_create("bn", out, NULL),
                        act ? fx_activation_create("act", act) : NULL };
    return fx_chain_create(name, act ? 3 : 2, ls);
}

/* The AlphaGo Zero network in miniature: a stem and a tower of residual
 * blocks relu(x + bn(conv(relu(bn(conv(x)))))), then a value head ending in
 * tanh and a policy head ending in softmax over the board's cells. */
static fx_layer *rn_net(fx_rng *rng)
{
    fx_layer *block[2];
    for (int i = 0; i < 2; i++) {
        fx_layer *body = fx_chain_create("body", 2, (fx_layer *[]){
            conv_bn("a", RN_C, RN_C, 3, FX_ACT_RELU, rng), conv_bn("b", RN_C, RN_C, 3, 0, rng) });
        block[i] = fx_residual_create(i ? "res2" : "res1", body, NULL, FX_ACT_RELU);
    }
    fx_layer *tower = fx_chain_create("tower", 3, (fx_layer *[]){
        conv_bn("stem", RN_P, RN_C, 3, FX_ACT_RELU, rng), block[0], block[1] });
    fx_layer *value = fx_chain_create("value", 4, (fx_layer *[]){
        conv_bn("reduce", RN_C, 1, 1, FX_ACT_RELU, rng), fx_flatten_create("flat"),
        fx_dense_create("fc1", RN_A, 16, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng),
        fx_dense_create("fc2", 16, 1, &(fx_dense_opts){ .act = FX_ACT_TANH }, rng) });
    fx_layer *policy = fx_chain_create("policy", 3, (fx_layer *[]){
        conv_bn("reduce", RN_C, 2, 1, FX_ACT_RELU, rng), fx_flatten_create("flat"),
        fx_dense_create("fc", 2 * RN_A, RN_A, &(fx_dense_opts){ .act = FX_ACT_SOFTMAX }, rng) });
    fx_layer *net = fx_heads_create("net", tower, 2, (fx_layer *[]){ value, policy });
    assert_non_null(net);
    return net;
}

/* Value MSE + policy cross-entropy -mean(log p[move]) on the softmax output;
 * *vloss and *ploss get the two parts. */
static fx_tensor *rn_loss(fx_ctx *ctx, fx_tensor **out, const rn_data *d, fx_tensor **vloss,
                          fx_tensor **ploss)
{
    fx_tensor *z = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(RN_N, 1), d->z);
    fx_tensor *mv = fx_tensor_from_host(ctx, FX_I32, 2, TU_SHAPE(RN_N, 1), d->move);
    *vloss = fx_mse_loss(ctx, out[0], z, FX_MEAN);
    *ploss = fx_neg(ctx, fx_mean(ctx, fx_gather(ctx, fx_log(ctx, out[1]), 1, mv), 0, NULL, false));
    return fx_add(ctx, *vloss, *ploss);
}

/* Accuracy of the value's sign and of the policy's top move. */
static void rn_accuracy(fx_tensor **out, const rn_data *d, double *vacc, double *pacc)
{
    float *v = tu_values(out[0]);
    int hit = 0;
    for (int i = 0; i < RN_N; i++)
        hit += (v[i] > 0) == (d->z[i] > 0);
    free(v);
    *vacc = (double)hit / RN_N;
    *pacc = accuracy(out[1], d->move);
}

static void test_resnet_train(void **state)
{
    (void)state;
    static rn_data train, test;
    rn_make(&test, 32);
    fx_rng *rng = fx_rng_create(33);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *net = rn_net(rng);
    /* Under ASan the convolutions in a Debug build take ~1 s a step: a few
     * steps check memory and finite losses; the learning checks are skipped. */
    const int steps = FX_ASAN ? 4 : RN_STEPS;
    fx_params ps;
    fx_optim *opt = adam_for(net, &ps, 1e-2, steps);
    assert_non_null(fx_params_find(&ps, "net.tower.res1.body.a.conv.weight"));
    assert_non_null(fx_params_find(&ps, "net.policy.reduce.bn.running_mean"));
    fx_tensor *out[2], *vl, *pl;
    double loss0 = 0, v0 = 0, p0 = 0, vacc0 = 0, pacc0 = 0;
    for (int step = 0; step < steps; step++) {
        rn_make(&train, 1000 + (uint64_t)step); /* fresh boards: no memorising */
        fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 4, TU_SHAPE(RN_N, RN_P, RN_S, RN_S), train.x);
        assert_int_equal(fx_layer_forward_multi(net, ctx, x, 2, out), FX_OK);
        fx_tensor *loss = rn_loss(ctx, out, &train, &vl, &pl);
        if (step == 0) {
            loss0 = fx_tensor_item(loss);
            v0 = fx_tensor_item(vl);
            p0 = fx_tensor_item(pl);
            rn_accuracy(out, &train, &vacc0, &pacc0);
        }
        check_step(ctx, loss, "resnet", step);
        assert_int_equal(fx_optim_step(opt), FX_OK);
        fx_optim_zero_grad(opt);
        fx_ctx_reset(ctx);
    }
    /* held-out boards, eval mode: batch norm uses its running statistics */
    fx_ctx_set_training(ctx, false);
    fx_ctx_set_grad(ctx, false);
    fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 4, TU_SHAPE(RN_N, RN_P, RN_S, RN_S), test.x);
    assert_int_equal(fx_layer_forward_multi(net, ctx, x, 2, out), FX_OK);
    double loss1 = fx_tensor_item(rn_loss(ctx, out, &test, &vl, &pl)), vacc, pacc;
    double v1 = fx_tensor_item(vl), p1 = fx_tensor_item(pl);
    printf("# resnet: loss %.4f -> %.4f\n", loss0, loss1);
    rn_accuracy(out, &test, &vacc, &pacc);
    if (FX_ASAN) {
        printf("# resnet: SKIPPED the learning checks under AddressSanitizer (%d steps only; "
               "value accuracy %.3f, policy accuracy %.3f)\n", steps, vacc, pacc);
        assert_true(isfinite(loss1));
    } else {
        check_learned("resnet value (sign)", v0, v1, vacc0, vacc, 0.85);
        check_learned("resnet policy (top move)", p0, p1, pacc0, pacc, 0.9);
    }
    fx_optim_free(opt);
    fx_params_clear(&ps);
    fx_layer_free(net);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ------------------------------------------------------------------ lstm */

enum { LS_N = 128, LS_T = 12, LS_V = 6, LS_E = 8, LS_H = 16, LS_KEY = 5 };

/* Token sequences of lengths 3..12 over 0..5; the label (balanced) says
 * whether token 5 occurs in the valid part. Half the paddings hold a 5, so a
 * model that reads past the length is wrong. */
typedef struct {
    int32_t tok[LS_N * LS_T], len[LS_N], y[LS_N];
} ls_data;

static void ls_make(ls_data *d, uint64_t seed)
{
    fx_rng *rng = fx_rng_create(seed);
    for (int i = 0; i < LS_N; i++) {
        int32_t *t = d->tok + i * LS_T;
        int len = 3 + (int)(fx_rng_u64(rng) % (LS_T - 2));
        d->len[i] = len;
        d->y[i] = (int32_t)(fx_rng_u64(rng) % 2);
        for (int j = 0; j < LS_T; j++)
            t[j] = (int32_t)(fx_rng_u64(rng) % (j < len ? LS_KEY : LS_V));
        if (d->y[i])
            t[fx_rng_u64(rng) % len] = LS_KEY;
        if (len < LS_T && fx_rng_u64(rng) % 2)
            t[len + fx_rng_u64(rng) % (LS_T - len)] = LS_KEY;
    }
    fx_rng_free(rng);
}

/* embedding -> LSTM -> the final state h_n (at each sample's own last
 * step) -> dense logits [N,2]. The holder layer only groups the parameters. */
static fx_tensor *ls_forward(fx_layer *model, fx_ctx *ctx, const ls_data *d)
{
    fx_tensor *tok = fx_tensor_from_host(ctx, FX_I32, 2, TU_SHAPE(LS_N, LS_T), d->tok);
    fx_tensor *len = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(LS_N), d->len);
    fx_tensor *e = fx_layer_forward(fx_layer_child(model, 0), ctx, tok);
    fx_tensor *h_n = NULL;
    fx_recurrent_forward(fx_layer_child(model, 1), ctx, e, len, NULL, NULL, &h_n, NULL);
    fx_tensor *h = h_n ? fx_reshape(ctx, h_n, 2, TU_SHAPE(LS_N, LS_H)) : NULL;
    return h ? fx_layer_forward(fx_layer_child(model, 2), ctx, h) : NULL;
}

static void test_lstm_train(void **state)
{
    (void)state;
    static ls_data train, test;
    ls_make(&train, 41);
    ls_make(&test, 42);
    fx_rng *rng = fx_rng_create(43);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *model = fx_layer_create("model", NULL);
    assert_int_equal(fx_layer_add_child(model, fx_embedding_create("emb", LS_V, LS_E, NULL, rng)), FX_OK);
    assert_int_equal(fx_layer_add_child(model, fx_lstm_create("lstm", LS_E, LS_H, NULL, rng)), FX_OK);
    assert_int_equal(fx_layer_add_child(model, fx_dense_create("cls", LS_H, 2, NULL, rng)), FX_OK);
    const int steps = FX_ASAN ? 120 : 250;
    fx_params ps;
    fx_optim *opt = adam_for(model, &ps, 1e-2, steps);
    double loss0 = 0, acc0 = 0;
    for (int step = 0; step < steps; step++) {
        fx_tensor *logits = ls_forward(model, ctx, &train);
        fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(LS_N), train.y);
        fx_tensor *loss = fx_cross_entropy(ctx, logits, y, FX_MEAN);
        if (step == 0) {
            loss0 = fx_tensor_item(loss);
            acc0 = accuracy(logits, train.y);
        }
        check_step(ctx, loss, "lstm", step);
        assert_int_equal(fx_optim_step(opt), FX_OK);
        fx_optim_zero_grad(opt);
        fx_ctx_reset(ctx);
    }
    fx_ctx_set_grad(ctx, false);
    fx_tensor *logits = ls_forward(model, ctx, &test);
    fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(LS_N), test.y);
    double loss1 = fx_tensor_item(fx_cross_entropy(ctx, logits, y, FX_MEAN));
    check_learned("lstm", loss0, loss1, acc0, accuracy(logits, test.y), 0.9);
    fx_optim_free(opt);
    fx_params_clear(&ps);
    fx_layer_free(model);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ------------------------------------------------------------------- ctc */

enum { CT_N = 64, CT_T = 16, CT_C = 5, CT_F = 8, CT_S = 4 };

/* Transcriptions of 1..4 symbols from 1..4 (blank is 0), spoken as frames:
 * each symbol lasts 1 or 2 frames, a blank frame separates equal neighbours
 * (and others with probability 0.3), a blank may lead and trail. A frame's
 * features are a random code of its symbol (the same in every set) plus
 * noise; frames past the
 * input length are noise. Inputs are time first: x [T, N, F]. */
typedef struct {
    float x[CT_T * CT_N * CT_F];
    int32_t tgt[CT_N * CT_S], in_len[CT_N], tgt_len[CT_N];
} ct_data;

static void ct_make(ct_data *d, uint64_t seed)
{
    fx_rng *rng = fx_rng_create(50); /* the symbols' codes: one for all sets */
    float code[CT_C * CT_F];
    for (int i = 0; i < CT_C * CT_F; i++)
        code[i] = (float)fx_rng_normal(rng);
    fx_rng_seed(rng, seed);
    for (int n = 0; n < CT_N; n++) {
        int32_t *tg = d->tgt + n * CT_S, frames[CT_T];
        int S = 1 + (int)(fx_rng_u64(rng) % CT_S), T = 0;
        memset(tg, 0, CT_S * sizeof *tg);
        if (fx_rng_uniform(rng) < 0.5)
            frames[T++] = 0;
        for (int s = 0; s < S; s++) {
            tg[s] = 1 + (int32_t)(fx_rng_u64(rng) % (CT_C - 1));
            if (s > 0 && (tg[s] == tg[s - 1] || fx_rng_uniform(rng) < 0.3))
                frames[T++] = 0;
            for (int r = 1 + (int)(fx_rng_u64(rng) % 2); r > 0; r--)
                frames[T++] = tg[s];
        }
        if (fx_rng_uniform(rng) < 0.5)
            frames[T++] = 0;
        d->tgt_len[n] = S;
        d->in_len[n] = T;
        for (int t = 0; t < CT_T; t++)
            for (int f = 0; f < CT_F; f++)
                d->x[(t * CT_N + n) * CT_F + f] =
                    (t < T ? code[frames[t] * CT_F + f] : 0.0f) + 0.3f * (float)fx_rng_normal(rng);
    }
    fx_rng_free(rng);
}

/* log-probabilities [T, N, C] of a per-frame net. */
static fx_tensor *ct_forward(fx_layer *net, fx_ctx *ctx, const ct_data *d)
{
    fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 3, TU_SHAPE(CT_T, CT_N, CT_F), d->x);
    return fx_log_softmax(ctx, fx_layer_forward(net, ctx, x), 2);
}

static fx_tensor *ct_loss(fx_ctx *ctx, fx_tensor *logp, const ct_data *d)
{
    fx_tensor *tg = fx_tensor_from_host(ctx, FX_I32, 2, TU_SHAPE(CT_N, CT_S), d->tgt);
    fx_tensor *il = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(CT_N), d->in_len);
    fx_tensor *tl = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(CT_N), d->tgt_len);
    return fx_ctc_loss(ctx, logp, tg, il, tl, &(fx_ctc_opts){ .blank = 0, .reduction = FX_MEAN });
}

/* Greedy decoding (best class per frame, repeats merged, blanks dropped):
 * the fraction of samples transcribed exactly. */
static double ct_accuracy(const fx_tensor *logp, const ct_data *d)
{
    float *v = tu_values(logp);
    int exact = 0;
    for (int n = 0; n < CT_N; n++) {
        int32_t out[CT_T];
        int len = 0, prev = 0;
        for (int t = 0; t < d->in_len[n]; t++) {
            const float *p = v + (t * CT_N + n) * CT_C;
            int best = 0;
            for (int c = 1; c < CT_C; c++)
                if (p[c] > p[best])
                    best = c;
            if (best != 0 && best != prev)
                out[len++] = best;
            prev = best;
        }
        exact += len == d->tgt_len[n] &&
                 memcmp(out, d->tgt + n * CT_S, (size_t)len * sizeof *out) == 0;
    }
    free(v);
    return (double)exact / CT_N;
}

static void test_ctc_train(void **state)
{
    (void)state;
    static ct_data train, test;
    ct_make(&train, 51);
    ct_make(&test, 52);
    fx_rng *rng = fx_rng_create(53);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *net = fx_chain_create("frame", 2, (fx_layer *[]){
        fx_dense_create("fc1", CT_F, 16, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng),
        fx_dense_create("fc2", 16, CT_C, NULL, rng) });
    const int steps = 200;
    fx_params ps;
    fx_optim *opt = adam_for(net, &ps, 1e-2, steps);
    double loss0 = 0, acc0 = 0;
    for (int step = 0; step < steps; step++) {
        fx_tensor *logp = ct_forward(net, ctx, &train);
        fx_tensor *loss = ct_loss(ctx, logp, &train);
        if (step == 0) {
            loss0 = fx_tensor_item(loss);
            acc0 = ct_accuracy(logp, &train);
        }
        check_step(ctx, loss, "ctc", step);
        assert_int_equal(fx_optim_step(opt), FX_OK);
        fx_optim_zero_grad(opt);
        fx_ctx_reset(ctx);
    }
    fx_ctx_set_grad(ctx, false);
    fx_tensor *logp = ct_forward(net, ctx, &test);
    double loss1 = fx_tensor_item(ct_loss(ctx, logp, &test));
    check_learned("ctc", loss0, loss1, acc0, ct_accuracy(logp, &test), 0.9);
    fx_optim_free(opt);
    fx_params_clear(&ps);
    fx_layer_free(net);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adversarial_gradient),
        cmocka_unit_test(test_adversarial_train),
        cmocka_unit_test(test_resnet_train),
        cmocka_unit_test(test_lstm_train),
        cmocka_unit_test(test_ctc_train),
    };
    if (getenv("TM_ONLY")) /* e.g. TM_ONLY=test_lstm_train: run one model */
        cmocka_set_test_filter(getenv("TM_ONLY"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
