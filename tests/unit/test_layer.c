/* test_layer.c - layers and the parameter store: dense against x W^T + b
 * computed here, activations, a custom layer that trains, dotted parameter
 * names, ownership (ASan checks that fx_layer_free leaves no leak), and
 * refused inputs. The finite-difference gradients through dense and chain
 * and their cross-backend comparisons are the registry's dense and chain
 * rows (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* y[r, o] = act(sum_i x[r, i] w[o, i] + b[o]) in double; b may be NULL. */
static void ref_dense(const float *x, const float *w, const float *b, int64_t R, int64_t in,
                      int64_t out, fx_activation act, double *y)
{
    for (int64_t r = 0; r < R; r++) {
        double *row = y + r * out, mx = -INFINITY, s = 0.0;
        for (int64_t o = 0; o < out; o++) {
            double v = b ? b[o] : 0.0;
            for (int64_t i = 0; i < in; i++)
                v += (double)x[r * in + i] * w[o * in + i];
            row[o] = v;
            mx = fmax(mx, v);
        }
        for (int64_t o = 0; o < out; o++) {
            double v = row[o];
            switch (act) {
            case FX_ACT_RELU: row[o] = v > 0 ? v : 0; break;
            case FX_ACT_TANH: row[o] = tanh(v); break;
            case FX_ACT_SIGMOID: row[o] = 1.0 / (1.0 + exp(-v)); break;
            case FX_ACT_LEAKY_RELU: row[o] = v > 0 ? v : 0.01 * v; break;
            case FX_ACT_ELU: row[o] = v > 0 ? v : exp(v) - 1.0; break;
            case FX_ACT_GELU:
                row[o] = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
                break;
            case FX_ACT_SOFTMAX: row[o] = exp(v - mx); s += row[o]; break;
            default: break;
            }
        }
        if (act == FX_ACT_SOFTMAX)
            for (int64_t o = 0; o < out; o++)
                row[o] /= s;
    }
}

static void assert_close_d(const float *got, const double *want, int64_t n, double tol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i]))))
            fail_msg("element %lld: %.7g vs reference %.7g", (long long)i, got[i], want[i]);
}

/* Gives a persistent tensor N(0, scale^2) values (e.g. a non-zero bias). */
static void randomise(fx_tensor *t, fx_rng *rng, double scale)
{
    fx_tensor *r = tu_randn(rng, t->ndim, t->shape, scale, 0.0);
    fx_tensor_copy(t, r);
    fx_tensor_free(r);
}

/* ----------------------------------------------------------------- dense */

static void test_dense_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_activation acts[] = { FX_ACT_NONE, FX_ACT_RELU, FX_ACT_TANH, FX_ACT_SIGMOID,
                             FX_ACT_LEAKY_RELU, FX_ACT_ELU, FX_ACT_GELU, FX_ACT_SOFTMAX };
    for (size_t k = 0; k < sizeof acts / sizeof *acts; k++) {
        for (int nb = 0; nb < 2; nb++) {
            fx_dense_opts o = { .act = acts[k], .no_bias = nb };
            fx_layer *l = fx_dense_create("fc", 4, 3, &o, rng);
            assert_non_null(l);
            assert_string_equal(fx_layer_name(l), "fc");
            fx_tensor *w = fx_layer_param(l, "weight"), *b = fx_layer_param(l, "bias");
            assert_non_null(w);
            assert_true(w->ndim == 2 && w->shape[0] == 3 && w->shape[1] == 4);
            assert_true(fx_tensor_requires_grad(w));
            if (nb) {
                assert_null(b);
            } else {
                assert_true(b && b->ndim == 1 && b->shape[0] == 3);
                float *bv = tu_values(b); /* biases start at zero */
                for (int i = 0; i < 3; i++)
                    assert_float_equal(bv[i], 0.0, 0.0);
                free(bv);
                randomise(b, rng, 1.0);
            }
            /* a 3-D input: [2,5,4] -> [2,5,3] */
            fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 5, 4), 1.0, 0.0);
            fx_tensor *y = fx_layer_forward(l, ctx, x);
            if (!y)
                fail_msg("dense: %s", fx_ctx_error(ctx));
            assert_true(y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 5 && y->shape[2] == 3);
            float *xv = tu_values(x), *wv = tu_values(w), *bv = nb ? NULL : tu_values(b);
            float *yv = tu_values(y);
            double ref[30];
            ref_dense(xv, wv, bv, 10, 4, 3, acts[k], ref);
            assert_close_d(yv, ref, 30, 1e-5);
            free(xv);
            free(wv);
            free(bv);
            free(yv);
            fx_tensor_free(x);
            fx_layer_free(l);
            fx_ctx_reset(ctx);
        }
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* The default weight init is Glorot uniform: inside sqrt(6 / (in + out)). */
static void test_dense_init(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(2);
    fx_layer *l = fx_dense_create("fc", 100, 60, NULL, rng);
    float *w = tu_values(fx_layer_param(l, "weight"));
    double bound = sqrt(6.0 / 160.0), mx = 0.0;
    for (int i = 0; i < 6000; i++)
        mx = fmax(mx, fabs(w[i]));
    assert_true(mx <= bound && mx > 0.98 * bound);
    free(w);
    fx_layer_free(l);
    /* another kind on request: He normal has std sqrt(2 / in) */
    l = fx_dense_create("fc", 100, 60, &(fx_dense_opts){ .init = FX_INIT_HE_NORMAL }, rng);
    w = tu_values(fx_layer_param(l, "weight"));
    double ss = 0.0;
    for (int i = 0; i < 6000; i++)
        ss += (double)w[i] * w[i];
    assert_float_equal(ss / 6000.0, 2.0 / 100.0, 0.1 * 2.0 / 100.0);
    free(w);
    fx_layer_free(l);
    /* with the same seed, the same layer */
    fx_rng *r1 = fx_rng_create(5), *r2 = fx_rng_create(5);
    fx_layer *a = fx_dense_create("a", 7, 3, NULL, r1), *b = fx_dense_create("b", 7, 3, NULL, r2);
    float *wa = tu_values(fx_layer_param(a, "weight"));
    float *wb = tu_values(fx_layer_param(b, "weight"));
    assert_memory_equal(wa, wb, 21 * sizeof(float));
    free(wa);
    free(wb);
    fx_layer_free(a);
    fx_layer_free(b);
    fx_rng_free(r1);
    fx_rng_free(r2);
    fx_rng_free(rng);
}

/* ----------------------------------------------------------------- chain */

static void test_chain(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(4);
    fx_layer *net = fx_chain_create("chain", 3, (fx_layer *[]){
        fx_dense_create("fc1", 4, 8, &(fx_dense_opts){ .act = FX_ACT_TANH }, rng),
        fx_dense_create("fc2", 8, 6, &(fx_dense_opts){ .act = FX_ACT_SIGMOID }, rng),
        fx_dense_create("fc3", 6, 3, NULL, rng) });
    assert_non_null(net);
    assert_int_equal(fx_layer_num_children(net), 3);
    assert_string_equal(fx_layer_name(fx_layer_child(net, 1)), "fc2");
    assert_null(fx_layer_child(net, 3));
    assert_null(fx_layer_child(net, -1));

    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(net, &ps), FX_OK);
    const char *names[] = { "chain.fc1.weight", "chain.fc1.bias", "chain.fc2.weight",
                            "chain.fc2.bias",   "chain.fc3.weight", "chain.fc3.bias" };
    assert_int_equal(ps.count, 6);
    for (int i = 0; i < 6; i++)
        assert_string_equal(ps.items[i].name, names[i]);
    assert_int_equal(fx_params_numel(&ps), 4 * 8 + 8 + 8 * 6 + 6 + 6 * 3 + 3);
    for (int i = 0; i < 6; i++)
        if (strstr(names[i], "bias"))
            randomise(ps.items[i].tensor, rng, 0.3);

    /* forward equals the three layers composed by hand */
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(5, 4), 1.0, 0.0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *y = fx_layer_forward(net, ctx, x);
    assert_non_null(y);
    float *h = tu_values(x);
    const int64_t dims[4] = { 4, 8, 6, 3 };
    const fx_activation acts[3] = { FX_ACT_TANH, FX_ACT_SIGMOID, FX_ACT_NONE };
    for (int k = 0; k < 3; k++) {
        float *w = tu_values(ps.items[2 * k].tensor), *b = tu_values(ps.items[2 * k + 1].tensor);
        double out[40];
        ref_dense(h, w, b, 5, dims[k], dims[k + 1], acts[k], out);
        free(h);
        h = malloc(40 * sizeof *h);
        for (int i = 0; i < 5 * dims[k + 1]; i++)
            h[i] = (float)out[i];
        free(w);
        free(b);
    }
    float *yv = tu_values(y);
    tu_assert_close(yv, h, 15, 1e-5);
    free(yv);
    free(h);
    fx_ctx_free(ctx);

    fx_params_clear(&ps);
    assert_int_equal(ps.count, 0);
    fx_tensor_free(x);
    fx_layer_free(net);
    fx_rng_free(rng);
}

/* --------------------------------------------------------- custom layers */

/* The example of fluxion.h: y = x * gain, gain [16]. */
static fx_tensor *scale_fwd(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    return fx_mul(ctx, x, fx_layer_param(self, "gain"));
}

static int data_frees;
static void count_free(void *p)
{
    data_frees++;
    free(p);
}

/* The custom layer fits y = x * c for a fixed vector c by plain gradient
 * descent (host updates, so only the layer API is under test). */
static void test_custom_layer_trains(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(6);
    fx_layer *l = fx_layer_create("scale", scale_fwd);
    assert_int_equal(fx_layer_add_param(l, "gain", fx_param_create(fx_cpu(), 1, TU_SHAPE(16),
                                                                   FX_INIT_CONSTANT, 1.0, 0, rng)),
                     FX_OK);
    fx_tensor *gain = fx_layer_param(l, "gain");
    float c[16], xs[8 * 16], ts[8 * 16];
    for (int j = 0; j < 16; j++)
        c[j] = (float)(0.5 + 0.1 * j - 0.05 * (j % 3));
    for (int i = 0; i < 8 * 16; i++) {
        double u = fx_rng_uniform(rng); /* |x| in [0.5, 1.5): every column learns fast */
        xs[i] = (float)((i % 2 ? 1.0 : -1.0) * (0.5 + u));
        ts[i] = xs[i] * c[i % 16];
    }
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    double first = 0.0, last = 0.0;
    for (int step = 0; step < 200; step++) {
        fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(8, 16), xs);
        fx_tensor *t = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(8, 16), ts);
        fx_tensor *loss = fx_mse_loss(ctx, fx_layer_forward(l, ctx, x), t, FX_MEAN);
        if (fx_backward(ctx, loss) != FX_OK)
            fail_msg("step %d: %s", step, fx_ctx_error(ctx));
        last = fx_tensor_item(loss);
        if (step == 0)
            first = last;
        float g[16], v[16];
        fx_tensor_to_host(gain->grad, g, sizeof g);
        fx_tensor_to_host(gain, v, sizeof v);
        for (int j = 0; j < 16; j++)
            v[j] -= 2.0f * g[j];
        fx_tensor_copy_from_host(gain, v, sizeof v);
        fx_tensor_fill(gain->grad, 0.0);
        fx_ctx_reset(ctx);
    }
    assert_true(first > 0.01);
    assert_true(last < 1e-6 * first);
    float v[16];
    fx_tensor_to_host(gain, v, sizeof v);
    tu_assert_close(v, c, 16, 1e-3);

    /* user data belongs to the layer: replaced data is freed, the rest
     * goes with the layer */
    data_frees = 0;
    fx_layer_set_data(l, malloc(32), count_free);
    assert_non_null(fx_layer_data(l));
    fx_layer_set_data(l, malloc(32), count_free);
    assert_int_equal(data_frees, 1);
    fx_layer_free(l);
    assert_int_equal(data_frees, 2);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Nested names, dotted lookup, and the clash rules. */
static void test_collect_params(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(8);
    fx_layer *scale = fx_layer_create("scale", scale_fwd);
    fx_layer_add_param(scale, "gain",
                       fx_param_create(fx_cpu(), 1, TU_SHAPE(5), FX_INIT_CONSTANT, 1.0, 0, rng));
    fx_layer *block = fx_chain_create("block", 2, (fx_layer *[]){
        fx_dense_create("fc", 3, 5, NULL, rng), scale });
    fx_layer *net = fx_chain_create("net", 2, (fx_layer *[]){
        block, fx_dense_create("head", 5, 2, &(fx_dense_opts){ .no_bias = true }, rng) });
    assert_non_null(net);

    fx_params ps;
    fx_params_init(&ps);
    fx_tensor *extra = fx_tensor_create(fx_cpu(), FX_F32, 1, TU_SHAPE(2));
    assert_int_equal(fx_params_add(&ps, "other", extra), FX_OK);
    assert_int_equal(fx_layer_collect_params(net, &ps), FX_OK);
    const char *names[] = { "other", "net.block.fc.weight", "net.block.fc.bias",
                            "net.block.scale.gain", "net.head.weight" };
    assert_int_equal(ps.count, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(ps.items[i].name, names[i]);
    assert_ptr_equal(fx_params_find(&ps, "net.block.scale.gain"), fx_layer_param(scale, "gain"));
    assert_ptr_equal(fx_layer_param(net, "block.fc.bias"),
                     fx_layer_param(fx_layer_child(block, 0), "bias"));
    assert_null(fx_layer_param(net, "block.fc.nothing"));
    assert_null(fx_layer_param(net, "head.bias"));
    assert_int_equal(fx_params_numel(&ps), 2 + 15 + 5 + 5 + 10);

    /* collecting again clashes: the list is left as it was */
    assert_int_equal(fx_layer_collect_params(net, &ps), FX_ERR_ARG);
    assert_int_equal(ps.count, 5);
    assert_string_equal(ps.items[4].name, "net.head.weight");

    /* children and parameters need distinct names; refused ones are freed */
    assert_int_equal(fx_layer_add_child(block, fx_dense_create("fc", 1, 1, NULL, rng)),
                     FX_ERR_ARG);
    assert_int_equal(fx_layer_num_children(block), 2);
    assert_int_equal(fx_layer_add_param(scale, "gain", fx_param_create(fx_cpu(), 1, TU_SHAPE(5),
                                        FX_INIT_ZEROS, 0, 0, NULL)), FX_ERR_ARG);
    assert_int_equal(fx_layer_add_param(scale, "gain2", fx_layer_param(scale, "gain")),
                     FX_ERR_ARG);
    assert_int_equal(fx_layer_add_child(net, block), FX_ERR_ARG);
    assert_int_equal(fx_layer_num_children(net), 2);
    fx_params_clear(&ps);
    fx_tensor_free(extra);
    fx_layer_free(net);
    fx_rng_free(rng);
}

/* The parameter store itself. */
static void test_params_store(void **state)
{
    (void)state;
    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_params_numel(&ps), 0);
    char name[16];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "t%d", i);
        fx_tensor *t = fx_tensor_create(fx_cpu(), FX_F32, 2, TU_SHAPE(i + 1, 2));
        assert_int_equal(fx_params_add(&ps, name, t), FX_OK);
    }
    strcpy(name, "changed"); /* the list keeps its own copy */
    assert_string_equal(ps.items[19].name, "t19");
    assert_int_equal(ps.count, 20);
    assert_int_equal(fx_params_numel(&ps), 2 * (20 * 21 / 2));
    assert_non_null(fx_params_find(&ps, "t7"));
    assert_int_equal(fx_params_find(&ps, "t7")->shape[0], 8);
    assert_null(fx_params_find(&ps, "t20"));
    assert_null(fx_params_find(&ps, NULL));
    assert_int_equal(fx_params_add(&ps, "t3", ps.items[0].tensor), FX_ERR_ARG);
    assert_int_equal(fx_params_add(&ps, NULL, ps.items[0].tensor), FX_ERR_ARG);
    assert_int_equal(fx_params_add(&ps, "x", NULL), FX_ERR_ARG);
    assert_int_equal(ps.count, 20);
    fx_params_free_tensors(&ps); /* ASan: every tensor and name freed */
    assert_int_equal(ps.count, 0);
    assert_null(ps.items);
    fx_params_clear(&ps); /* on an empty list: harmless */
}

/* -------------------------------------------------------------- failures */

static fx_tensor *null_fwd(fx_layer *self, fx_ctx *ctx, fx_tensor *x) { return NULL; }

static void test_errors(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(9);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *l = fx_dense_create("fc", 4, 3, NULL, rng);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(2, 5), 1.0, 0.0);

    /* a wrong feature count: linear names the shapes */
    assert_null(fx_layer_forward(l, ctx, x));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_non_null(strstr(fx_ctx_error(ctx), "linear"));
    assert_non_null(strstr(fx_ctx_error(ctx), "[2,5]"));
    /* the error is sticky; a NULL input propagates silently */
    assert_null(fx_layer_forward(l, ctx, NULL));
    assert_non_null(strstr(fx_ctx_error(ctx), "linear"));
    fx_ctx_reset(ctx);

    assert_null(fx_layer_forward(NULL, ctx, x));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    fx_ctx_reset(ctx);
    assert_null(fx_layer_forward(l, ctx, NULL));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    assert_non_null(strstr(fx_ctx_error(ctx), "fc"));
    fx_ctx_reset(ctx);

    /* a custom forward that returns NULL without saying why gets a message */
    fx_layer *bad = fx_layer_create("quiet", null_fwd);
    assert_null(fx_layer_forward(bad, ctx, x));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_STATE);
    assert_non_null(strstr(fx_ctx_error(ctx), "quiet"));
    fx_ctx_reset(ctx);
    fx_layer *nofwd = fx_layer_create("nofwd", NULL);
    assert_null(fx_layer_forward(nofwd, ctx, x));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    fx_ctx_reset(ctx);

    assert_null(fx_activate(ctx, x, (fx_activation)99));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_ARG);
    assert_non_null(strstr(fx_ctx_error(ctx), "activate"));
    fx_ctx_reset(ctx);
    assert_ptr_equal(fx_activate(ctx, x, FX_ACT_NONE), x);

    /* parameters: not f32 is refused (and freed, ownership was given) */
    fx_tensor *i32 = fx_tensor_create(fx_cpu(), FX_I32, 1, TU_SHAPE(3));
    assert_int_equal(fx_layer_add_param(bad, "idx", i32), FX_ERR_DTYPE);
    assert_int_equal(fx_layer_add_param(bad, "p", NULL), FX_ERR_ARG);
    fx_tensor *arena = fx_zeros(ctx, FX_F32, 1, TU_SHAPE(3));
    assert_int_equal(fx_layer_add_param(bad, "p", arena), FX_ERR_STATE);
    assert_null(fx_layer_param(bad, "idx"));
    assert_int_equal(fx_layer_add_child(bad, bad), FX_ERR_ARG);

    /* dense needs positive sizes and a generator for random kinds */
    assert_null(fx_dense_create("fc", 0, 3, NULL, rng));
    assert_null(fx_dense_create("fc", 3, -1, NULL, rng));
    assert_null(fx_dense_create("fc", 3, 3, NULL, NULL));
    assert_null(fx_dense_create("fc", 3, 3, &(fx_dense_opts){ .init = (fx_init_kind)77 }, rng));
    assert_null(fx_param_create(fx_cpu(), 1, TU_SHAPE(3), FX_INIT_ORTHOGONAL, 0, 0, rng));
    /* a chain with a failed member frees the others */
    assert_null(fx_chain_create("c", 2, (fx_layer *[]){ fx_dense_create("a", 2, 2, NULL, rng),
                                                        NULL }));

    fx_layer_free(bad);
    fx_layer_free(nofwd);
    fx_layer_free(l);
    fx_layer_free(NULL);
    fx_tensor_free(x);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_forward),  cmocka_unit_test(test_dense_init),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_custom_layer_trains), cmocka_unit_test(test_collect_params),
        cmocka_unit_test(test_params_store),   cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
