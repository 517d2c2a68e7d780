/* test_train_models.c - models of the field must train: each is built from
 * the engine's layers and combinators, trained with Adam on synthetic data
 * made here from a fixed seed, and must show its loss falling to under half
 * the initial value and its accuracy rising well above chance.
 *
 *   adversarial: a shared block feeding a classifier and, through a gradient
 *     reversal, a nuisance (domain) head; the shared block's gradient is the
 *     classifier's minus lambda times the nuisance's, and the reversal strips
 *     the nuisance from the shared features.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Adam over every parameter of a layer; the caller frees it and the list. */
static fx_optim *adam_for(fx_layer *net, fx_params *ps, double lr)
{
    fx_params_init(ps);
    assert_int_equal(fx_layer_collect_params(net, ps), FX_OK);
    fx_optim *opt = fx_optim_create(FX_OPT_ADAM, &(fx_optim_hparams){ .lr = lr }, ps);
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
    fx_optim *opt = adam_for(net, &ps, 1e-2);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adversarial_gradient),
        cmocka_unit_test(test_adversarial_train),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
