/* test_model.c - combinators: residual blocks (identity and projection
 * shortcuts), parallel branches joined by add and by concat, heads (several
 * outputs from one trunk), gradient reversal and the activation layer.
 * Forwards are compared with dense layers recomputed here in double from
 * the layers' parameters; the identity path's gradient and gradient
 * reversal are checked exactly; bad shapes must fail with messages naming
 * the combinator and the sizes; ASan checks that constructors free what
 * they were given. The finite-difference gradients w.r.t. the input and
 * every parameter and the cross-backend comparisons are the registry's
 * residual, parallel, heads, grad_reverse and activation_layer rows
 * (test_ops). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- helpers */

/* A dense layer whose bias is random too (a zero bias would hide a bias
 * that is never added). */
static fx_layer *dense(const char *name, int64_t in, int64_t out, fx_activation act, fx_rng *rng)
{
    fx_layer *l = fx_dense_create(name, in, out, &(fx_dense_opts){ .act = act }, rng);
    assert_non_null(l);
    fx_tensor *b = fx_layer_param(l, "bias"), *r = tu_randn(rng, 1, TU_SHAPE(out), 0.5, 0.0);
    fx_tensor_copy(b, r);
    fx_tensor_free(r);
    return l;
}

static double act_ref(double v, fx_activation act)
{
    switch (act) {
    case FX_ACT_RELU: return v > 0 ? v : 0;
    case FX_ACT_TANH: return tanh(v);
    case FX_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    default: return v;
    }
}

/* Host values of a tensor in double. */
static double *dvalues(const fx_tensor *t)
{
    float *f = tu_values(t);
    int64_t n = fx_tensor_numel(t);
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

/* y [R,out] = act(x [R,in] w^T + b), the reference for a dense layer l
 * (reads its "weight" and "bias"). Returns a malloc'd array. */
static double *ref_dense(fx_layer *l, const double *x, int64_t R, fx_activation act)
{
    fx_tensor *w = fx_layer_param(l, "weight"), *b = fx_layer_param(l, "bias");
    int64_t out = w->shape[0], in = w->shape[1];
    double *W = dvalues(w), *B = b ? dvalues(b) : NULL;
    double *y = malloc((size_t)(R * out) * sizeof *y);
    for (int64_t r = 0; r < R; r++)
        for (int64_t o = 0; o < out; o++) {
            double v = B ? B[o] : 0.0;
            for (int64_t i = 0; i < in; i++)
                v += x[r * in + i] * W[o * in + i];
            y[r * out + o] = act_ref(v, act);
        }
    free(W);
    free(B);
    return y;
}

static void assert_matches(const fx_tensor *got, const double *want, int64_t n, double tol)
{
    assert_non_null(got);
    assert_int_equal(fx_tensor_numel(got), n);
    float *g = tu_values(got);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(g[i] - want[i]) <= tol * (1.0 + fabs(want[i]))))
            fail_msg("element %lld: %.7g vs reference %.7g", (long long)i, g[i], want[i]);
    free(g);
}

static void assert_shape(const fx_tensor *t, int ndim, const int64_t *shape)
{
    assert_non_null(t);
    assert_int_equal(t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        assert_int_equal(t->shape[i], shape[i]);
}

/* Asserts the context failed with status s and a message containing every
 * string of a NULL-terminated list. */
static void assert_error(fx_ctx *ctx, fx_status s, const char *const *parts)
{
    if (fx_ctx_status(ctx) != s)
        fail_msg("status %s, wanted %s (\"%s\")", fx_status_name(fx_ctx_status(ctx)),
                 fx_status_name(s), fx_ctx_error(ctx));
    for (int i = 0; parts[i]; i++)
        if (!strstr(fx_ctx_error(ctx), parts[i]))
            fail_msg("message \"%s\" does not contain \"%s\"", fx_ctx_error(ctx), parts[i]);
}
#define ASSERT_ERROR(ctx, s, ...) assert_error(ctx, s, (const char *const[]){ __VA_ARGS__, NULL })

/* ------------------------------------------------------------- residual */

/* relu(body(x) + x) with a two-layer body, against the reference. */
static void test_residual_identity_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *fc1 = dense("fc1", 4, 6, FX_ACT_TANH, rng), *fc2 = dense("fc2", 6, 4, 0, rng);
    fx_layer *res = fx_residual_create("block", fx_chain_create("body", 2, (fx_layer *[]){ fc1, fc2 }),
                                       NULL, FX_ACT_RELU);
    assert_non_null(res);
    assert_string_equal(fx_layer_name(res), "block");
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(5, 4), 1.0, 0.0);
    fx_tensor *y = fx_layer_forward(res, ctx, x);
    if (!y)
        fail_msg("%s", fx_ctx_error(ctx));
    assert_shape(y, 2, TU_SHAPE(5, 4));

    double *xv = dvalues(x), *h = ref_dense(fc1, xv, 5, FX_ACT_TANH), *b = ref_dense(fc2, h, 5, 0);
    for (int i = 0; i < 20; i++)
        b[i] = act_ref(b[i] + xv[i], FX_ACT_RELU);
    assert_matches(y, b, 20, 1e-5);
    free(xv);
    free(h);
    free(b);

    /* parameters get the combinator's dotted names */
    fx_params p;
    fx_params_init(&p);
    assert_int_equal(fx_layer_collect_params(res, &p), FX_OK);
    assert_int_equal(p.count, 4);
    assert_non_null(fx_params_find(&p, "block.body.fc1.weight"));
    assert_non_null(fx_params_find(&p, "block.body.fc2.bias"));
    assert_ptr_equal(fx_layer_param(res, "body.fc1.weight"), fx_layer_param(fc1, "weight"));
    fx_params_clear(&p);

    fx_tensor_free(x);
    fx_layer_free(res);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* tanh(body(x) + proj(x)) where the body changes the width 4 -> 6, on a
 * 3-D input, and no activation after the sum. */
static void test_residual_projection_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(2);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (int k = 0; k < 2; k++) {
        fx_activation act = k ? FX_ACT_NONE : FX_ACT_TANH;
        fx_layer *body = dense("body", 4, 6, FX_ACT_RELU, rng), *proj = dense("proj", 4, 6, 0, rng);
        fx_layer *res = fx_residual_create("down", body, proj, act);
        assert_non_null(res);
        fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 3, 4), 1.0, 0.0);
        fx_tensor *y = fx_layer_forward(res, ctx, x);
        if (!y)
            fail_msg("%s", fx_ctx_error(ctx));
        assert_shape(y, 3, TU_SHAPE(2, 3, 6));
        double *xv = dvalues(x), *a = ref_dense(body, xv, 6, FX_ACT_RELU), *s = ref_dense(proj, xv, 6, 0);
        for (int i = 0; i < 36; i++)
            a[i] = act_ref(a[i] + s[i], act);
        assert_matches(y, a, 36, 1e-5);
        free(xv);
        free(a);
        free(s);
        fx_params p;
        fx_params_init(&p);
        assert_int_equal(fx_layer_collect_params(res, &p), FX_OK);
        assert_non_null(fx_params_find(&p, "down.proj.weight"));
        assert_non_null(fx_params_find(&p, "down.body.weight"));
        fx_params_clear(&p);
        fx_tensor_free(x);
        fx_layer_free(res);
        fx_ctx_reset(ctx);
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* The identity path alone: body = x * 0 + const has zero gradient, so
 * d sum(res(x) * R) / dx must be exactly R. (The finite differences through
 * both kinds of shortcut and a tower of blocks are the registry's residual
 * row.) */
static void test_residual_identity_gradient(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *c = fx_residual_create("c", dense("fc", 4, 4, 0, rng), NULL, FX_ACT_NONE);
    fx_tensor_fill(fx_layer_param(c, "fc.weight"), 0.0);
    fx_tensor *r = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);
    fx_tensor_fill(x->grad, 0.0);
    fx_tensor *y = fx_layer_forward(c, ctx, x);
    assert_int_equal(fx_backward_seed(ctx, y, r), FX_OK);
    float *g = tu_values(x->grad), *rv = tu_values(r);
    tu_assert_close(g, rv, 12, 1e-6);
    free(g);
    free(rv);
    fx_tensor_free(r);
    fx_layer_free(c);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_rng_free(rng);
}

/* A convolutional block with a 1x1 conv + batch norm projection (2 -> 4
 * channels, stride 2): the forward equals the hand composition of its
 * children (finite differences through conv, batch norm and the sum are the
 * registry's residual row). */
static fx_layer *conv_bn(const char *name, int64_t in, int64_t out, int k, int stride,
                         fx_rng *rng)
{
    fx_layer *l = fx_chain_create(name, 2, (fx_layer *[]){
        fx_conv2d_create("conv", in, out, k, k,
                         &(fx_conv_opts){ .padding = k / 2, .stride = stride, .no_bias = true }, rng),
        fx_batchnorm2d_create("bn", out, NULL) });
    assert_non_null(l);
    return l;
}

static void test_residual_conv_projection(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(12);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *body = conv_bn("body", 2, 4, 3, 2, rng), *proj = conv_bn("proj", 2, 4, 1, 2, rng);
    fx_layer *res = fx_residual_create("down", body, proj, FX_ACT_TANH);
    assert_non_null(res);
    fx_tensor *x = tu_randn(rng, 4, TU_SHAPE(3, 2, 4, 4), 1.0, 0.0);
    fx_tensor *y = fx_layer_forward(res, ctx, x);
    if (!y)
        fail_msg("%s", fx_ctx_error(ctx));
    assert_shape(y, 4, TU_SHAPE(3, 4, 2, 2));
    fx_tensor *h = fx_tanh(ctx, fx_add(ctx, fx_layer_forward(body, ctx, x),
                                       fx_layer_forward(proj, ctx, x)));
    float *yv = tu_values(y), *hv = tu_values(h);
    tu_assert_close(yv, hv, 48, 1e-6);
    free(yv);
    free(hv);
    fx_params p;
    fx_params_init(&p);
    assert_int_equal(fx_layer_collect_params(res, &p), FX_OK);
    assert_non_null(fx_params_find(&p, "down.proj.conv.weight"));
    assert_non_null(fx_params_find(&p, "down.proj.bn.weight"));
    fx_params_clear(&p);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_layer_free(res);
    fx_rng_free(rng);
}

/* ------------------------------------------------------------- parallel */

/* Three branches summed, and two concatenated along the last axis and along
 * axis 0 (a negative axis is counted on the outputs' rank). */
static void test_parallel_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(4);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);
    double *xv = dvalues(x);

    fx_layer *b0 = dense("a", 4, 5, FX_ACT_TANH, rng), *b1 = dense("b", 4, 5, 0, rng);
    fx_layer *b2 = dense("c", 4, 5, FX_ACT_RELU, rng);
    fx_layer *sum = fx_parallel_create("sum", 3, (fx_layer *[]){ b0, b1, b2 }, FX_JOIN_ADD, 0);
    assert_non_null(sum);
    fx_tensor *y = fx_layer_forward(sum, ctx, x);
    assert_shape(y, 2, TU_SHAPE(3, 5));
    double *r0 = ref_dense(b0, xv, 3, FX_ACT_TANH), *r1 = ref_dense(b1, xv, 3, 0);
    double *r2 = ref_dense(b2, xv, 3, FX_ACT_RELU);
    for (int i = 0; i < 15; i++)
        r0[i] += r1[i] + r2[i];
    assert_matches(y, r0, 15, 1e-5);
    free(r0);
    free(r1);
    free(r2);

    fx_layer *c0 = dense("wide", 4, 3, FX_ACT_SIGMOID, rng), *c1 = dense("narrow", 4, 2, 0, rng);
    fx_layer *cat = fx_parallel_create("cat", 2, (fx_layer *[]){ c0, c1 }, FX_JOIN_CONCAT, -1);
    assert_non_null(cat);
    y = fx_layer_forward(cat, ctx, x);
    assert_shape(y, 2, TU_SHAPE(3, 5));
    double *q0 = ref_dense(c0, xv, 3, FX_ACT_SIGMOID), *q1 = ref_dense(c1, xv, 3, 0), want[15];
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 5; c++)
            want[r * 5 + c] = c < 3 ? q0[r * 3 + c] : q1[r * 2 + c - 3];
    assert_matches(y, want, 15, 1e-5);
    free(q0);
    free(q1);

    fx_layer *d0 = dense("p", 4, 2, 0, rng), *d1 = dense("q", 4, 2, FX_ACT_TANH, rng);
    fx_layer *rows = fx_parallel_create("rows", 2, (fx_layer *[]){ d0, d1 }, FX_JOIN_CONCAT, 0);
    y = fx_layer_forward(rows, ctx, x);
    assert_shape(y, 2, TU_SHAPE(6, 2));
    double *s0 = ref_dense(d0, xv, 3, 0), *s1 = ref_dense(d1, xv, 3, FX_ACT_TANH);
    memcpy(want, s0, 6 * sizeof *want);
    memcpy(want + 6, s1, 6 * sizeof *want);
    assert_matches(y, want, 12, 1e-5);
    free(s0);
    free(s1);

    /* one branch: the join is the branch itself */
    fx_layer *e0 = dense("only", 4, 2, 0, rng);
    fx_layer *one = fx_parallel_create("one", 1, (fx_layer *[]){ e0 }, FX_JOIN_CONCAT, 1);
    y = fx_layer_forward(one, ctx, x);
    double *t0 = ref_dense(e0, xv, 3, 0);
    assert_matches(y, t0, 6, 1e-5);
    free(t0);

    fx_params p;
    fx_params_init(&p);
    assert_int_equal(fx_layer_collect_params(cat, &p), FX_OK);
    assert_non_null(fx_params_find(&p, "cat.wide.weight"));
    assert_non_null(fx_params_find(&p, "cat.narrow.bias"));
    fx_params_clear(&p);

    free(xv);
    fx_tensor_free(x);
    fx_layer_free(sum);
    fx_layer_free(cat);
    fx_layer_free(rows);
    fx_layer_free(one);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ---------------------------------------------------------------- heads */

/* A value head (tanh, 1 unit) and a policy head (softmax over 3) on a
 * shared relu trunk: each output against the reference, the trunk run once
 * (the tape is as long as trunk + heads run by hand). */
static void test_heads_forward(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(6);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *trunk = dense("trunk", 4, 5, FX_ACT_RELU, rng);
    fx_layer *value = dense("value", 5, 1, FX_ACT_TANH, rng);
    fx_layer *policy = fx_dense_create("policy", 5, 3, &(fx_dense_opts){ .act = FX_ACT_SOFTMAX }, rng);
    fx_layer *net = fx_heads_create("net", trunk, 2, (fx_layer *[]){ value, policy });
    assert_non_null(net);
    assert_int_equal(fx_layer_num_outputs(net), 2);
    assert_int_equal(fx_layer_num_outputs(trunk), 1);
    assert_int_equal(fx_layer_num_outputs(NULL), 0);

    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(4, 4), 1.0, 0.0);
    fx_tensor *out[2];
    assert_int_equal(fx_layer_forward_multi(net, ctx, x, 2, out), FX_OK);
    size_t taped = fx_tape_length(ctx);
    assert_shape(out[0], 2, TU_SHAPE(4, 1));
    assert_shape(out[1], 2, TU_SHAPE(4, 3));

    double *xv = dvalues(x), *h = ref_dense(trunk, xv, 4, FX_ACT_RELU);
    double *v = ref_dense(value, h, 4, FX_ACT_TANH), *p = ref_dense(policy, h, 4, 0);
    for (int r = 0; r < 4; r++) {
        double m = -INFINITY, s = 0;
        for (int c = 0; c < 3; c++)
            m = fmax(m, p[r * 3 + c]);
        for (int c = 0; c < 3; c++)
            s += (p[r * 3 + c] = exp(p[r * 3 + c] - m));
        for (int c = 0; c < 3; c++)
            p[r * 3 + c] /= s;
    }
    assert_matches(out[0], v, 4, 1e-5);
    assert_matches(out[1], p, 12, 1e-5);
    free(xv);
    free(h);
    free(v);
    free(p);

    fx_ctx_reset(ctx);
    fx_tensor *hh = fx_layer_forward(trunk, ctx, x);
    fx_layer_forward(value, ctx, hh);
    fx_layer_forward(policy, ctx, hh);
    assert_int_equal(fx_tape_length(ctx), taped);

    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_layer_collect_params(net, &ps), FX_OK);
    assert_int_equal(ps.count, 6);
    assert_non_null(fx_params_find(&ps, "net.trunk.weight"));
    assert_non_null(fx_params_find(&ps, "net.value.bias"));
    assert_non_null(fx_params_find(&ps, "net.policy.weight"));
    fx_params_clear(&ps);

    /* no trunk: the heads read the input; one head works as a plain layer */
    fx_ctx_reset(ctx);
    fx_layer *h1 = dense("h", 4, 2, 0, rng);
    fx_layer *solo = fx_heads_create("solo", NULL, 1, (fx_layer *[]){ h1 });
    assert_int_equal(fx_layer_num_outputs(solo), 1);
    double *xv2 = dvalues(x), *want = ref_dense(h1, xv2, 4, 0);
    assert_matches(fx_layer_forward(solo, ctx, x), want, 8, 1e-5);
    assert_int_equal(fx_layer_forward_multi(solo, ctx, x, 1, out), FX_OK);
    assert_matches(out[0], want, 8, 1e-5);
    /* any layer runs through forward_multi with one output */
    assert_int_equal(fx_layer_forward_multi(h1, ctx, x, 1, out), FX_OK);
    assert_matches(out[0], want, 8, 1e-5);
    free(xv2);
    free(want);

    fx_layer_free(solo);
    fx_layer_free(net);
    fx_tensor_free(x);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* --------------------------------------------------------- grad reverse */

/* Forward: the same values (a view, no copy). Backward: -lambda * seed into
 * x; lambda 0 blocks; upstream layers get the reversed gradient. */
static void test_grad_reverse(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(8);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 3, 2), 1.0, 0.0);
    fx_tensor *seed = tu_randn(rng, 3, TU_SHAPE(2, 3, 2), 1.0, 0.0);
    float *xv = tu_values(x), *sv = tu_values(seed), want[12];
    float lambdas[] = { 0.5f, 1.0f, 0.0f, -2.0f };
    for (int k = 0; k < 4; k++) {
        fx_tensor_fill(x->grad, 0.0);
        fx_tensor *y = fx_grad_reverse(ctx, x, lambdas[k]);
        assert_shape(y, 3, x->shape);
        float *yv = tu_values(y);
        tu_assert_close(yv, xv, 12, 0.0);
        free(yv);
        assert_int_equal(fx_backward_seed(ctx, y, seed), FX_OK);
        float *g = tu_values(x->grad);
        for (int i = 0; i < 12; i++)
            want[i] = -lambdas[k] * sv[i];
        tu_assert_close(g, want, 12, 1e-6);
        free(g);
        fx_ctx_reset(ctx);
    }

    /* on a non-contiguous view, through the layer form, after a dense:
     * loss = sum(grl(dense(x))^T * R) gives the dense's weight the gradient
     * -lambda times the one without the reversal. */
    fx_layer *fc = dense("fc", 2, 3, FX_ACT_TANH, rng);
    fx_layer *grl = fx_grad_reverse_create("grl", 0.75f);
    assert_non_null(grl);
    fx_tensor *r = tu_randn(rng, 3, TU_SHAPE(2, 3, 3), 1.0, 0.0);
    fx_tensor *w = fx_layer_param(fc, "weight");
    float *gw[2];
    for (int k = 0; k < 2; k++) {
        fx_tensor_fill(w->grad, 0.0);
        fx_tensor *h = fx_transpose(ctx, fx_layer_forward(fc, ctx, x), 1, 2); /* [2,3,3] view */
        fx_tensor *y = k ? fx_layer_forward(grl, ctx, h) : h;
        assert_non_null(y);
        assert_int_equal(fx_backward(ctx, fx_sum(ctx, fx_mul(ctx, y, r), 0, NULL, false)), FX_OK);
        gw[k] = tu_values(w->grad);
        fx_ctx_reset(ctx);
    }
    for (int i = 0; i < 6; i++)
        want[i] = -0.75f * gw[0][i];
    tu_assert_close(gw[1], want, 6, 1e-5);
    free(gw[0]);
    free(gw[1]);

    /* set_lambda changes the layer; only grad_reverse layers take it */
    assert_int_equal(fx_grad_reverse_set_lambda(grl, 2.0f), FX_OK);
    fx_tensor_fill(x->grad, 0.0);
    assert_int_equal(fx_backward_seed(ctx, fx_layer_forward(grl, ctx, x), seed), FX_OK);
    float *g = tu_values(x->grad);
    for (int i = 0; i < 12; i++)
        want[i] = -2.0f * sv[i];
    tu_assert_close(g, want, 12, 1e-6);
    free(g);
    fx_ctx_reset(ctx);
    assert_int_equal(fx_grad_reverse_set_lambda(fc, 1.0f), FX_ERR_ARG);
    assert_int_equal(fx_grad_reverse_set_lambda(grl, NAN), FX_ERR_ARG);
    assert_int_equal(fx_grad_reverse_set_lambda(NULL, 1.0f), FX_ERR_ARG);
    assert_null(fx_grad_reverse_create("bad", INFINITY));

    /* grad mode off: a plain view, nothing on the tape */
    fx_ctx_set_grad(ctx, false);
    assert_non_null(fx_grad_reverse(ctx, x, 1.0f));
    assert_int_equal(fx_tape_length(ctx), 0);
    fx_ctx_set_grad(ctx, true);

    /* errors: a non-finite lambda names the op; a NULL input keeps an
     * upstream error, and is explained when there is none */
    assert_null(fx_grad_reverse(ctx, x, NAN));
    ASSERT_ERROR(ctx, FX_ERR_ARG, "grad_reverse", "lambda");
    fx_ctx_reset(ctx);
    assert_null(fx_grad_reverse(ctx, NULL, 1.0f));
    ASSERT_ERROR(ctx, FX_ERR_ARG, "grad_reverse", "NULL");
    fx_ctx_reset(ctx);
    fx_ctx_fail(ctx, FX_ERR_SHAPE, "upstream");
    assert_null(fx_grad_reverse(ctx, NULL, 1.0f));
    assert_string_equal(fx_ctx_error(ctx), "upstream");
    fx_ctx_reset(ctx);

    free(xv);
    free(sv);
    fx_tensor_free(x);
    fx_tensor_free(seed);
    fx_tensor_free(r);
    fx_layer_free(fc);
    fx_layer_free(grl);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ----------------------------------------------------------- activation */

/* The activation layer equals fx_activate's reference on each kind and has
 * no parameters (its gradients are the registry's activation_layer row). */
static void test_activation_layer(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(11);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 3, 4), 1.0, 0.0);
    double *xv = dvalues(x), want[24];
    fx_activation acts[] = { FX_ACT_NONE, FX_ACT_RELU, FX_ACT_TANH, FX_ACT_SIGMOID };
    for (int k = 0; k < 4; k++) {
        fx_layer *l = fx_activation_create("act", acts[k]);
        assert_non_null(l);
        for (int i = 0; i < 24; i++)
            want[i] = act_ref(xv[i], acts[k]);
        assert_matches(fx_layer_forward(l, ctx, x), want, 24, 1e-6);
        fx_params p;
        fx_params_init(&p);
        assert_int_equal(fx_layer_collect_params(l, &p), FX_OK);
        assert_int_equal(p.count, 0);
        fx_params_clear(&p);
        fx_layer_free(l);
        fx_ctx_reset(ctx);
    }
    assert_null(fx_activation_create("bad", (fx_activation)42));
    fx_layer *d = fx_activation_create(NULL, FX_ACT_RELU);
    assert_string_equal(fx_layer_name(d), "activation");
    fx_layer_free(d);
    free(xv);
    fx_tensor_free(x);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ------------------------------------------------------------ bad input */

/* A layer [R,C] -> [R,1,C], then l: a branch of a different rank. */
static fx_tensor *unsqueeze_fwd(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    fx_tensor *y = fx_layer_forward(fx_layer_child(self, 0), ctx, x);
    return y ? fx_reshape(ctx, y, 3, TU_SHAPE(y->shape[0], 1, y->shape[1])) : NULL;
}

static fx_layer *unsqueeze_after(fx_layer *l)
{
    fx_layer *u = fx_layer_create("unsq", unsqueeze_fwd);
    assert_int_equal(fx_layer_add_child(u, l), FX_OK);
    return u;
}

/* Shapes that do not add or concatenate fail with FX_ERR_SHAPE (or AXIS),
 * naming the combinator, the layer and both shapes. */
static void test_bad_shapes(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(9);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1.0, 0.0);

    /* identity shortcut around a body that changes the width */
    fx_layer *r1 = fx_residual_create("block1", dense("fc", 4, 6, 0, rng), NULL, FX_ACT_RELU);
    assert_null(fx_layer_forward(r1, ctx, x));
    ASSERT_ERROR(ctx, FX_ERR_SHAPE, "residual", "'block1'", "[3,6]", "[3,4]", "projection");
    fx_ctx_reset(ctx);
    /* a projection of the wrong width (broadcastable [3,1]: still refused) */
    fx_layer *r2 = fx_residual_create("block2", dense("fc", 4, 6, 0, rng), dense("proj", 4, 1, 0, rng),
                                      FX_ACT_NONE);
    assert_null(fx_layer_forward(r2, ctx, x));
    ASSERT_ERROR(ctx, FX_ERR_SHAPE, "residual", "'block2'", "[3,6]", "[3,1]", "shortcut");
    fx_ctx_reset(ctx);

    fx_layer *p1 = fx_parallel_create("join", 2, (fx_layer *[]){ dense("a", 4, 3, 0, rng),
                                                                  dense("b", 4, 2, 0, rng) },
                                      FX_JOIN_ADD, 0);
    assert_null(fx_layer_forward(p1, ctx, x));
    ASSERT_ERROR(ctx, FX_ERR_SHAPE, "parallel", "'join'", "branch 1", "[3,2]", "[3,3]", "add");
    fx_ctx_reset(ctx);

    /* concat along axis 0 of [3,2] and [3,5] */
    fx_layer *p2 = fx_parallel_create("cat", 2, (fx_layer *[]){ dense("a", 4, 2, 0, rng),
                                                                 dense("c", 4, 5, 0, rng) },
                                      FX_JOIN_CONCAT, 0);
    assert_null(fx_layer_forward(p2, ctx, x));
    ASSERT_ERROR(ctx, FX_ERR_SHAPE, "parallel", "'cat'", "branch 1", "[3,5]", "[3,2]", "axis 0");
    fx_ctx_reset(ctx);
    /* ranks differ: [3,2] and [3,1,2] */
    fx_layer *p3 = fx_parallel_create("rank", 2, (fx_layer *[]){ dense("a", 4, 2, 0, rng),
                                                                  unsqueeze_after(dense("b", 4, 2, 0, rng)) },
                                      FX_JOIN_CONCAT, -1);
    assert_null(fx_layer_forward(p3, ctx, x));
    ASSERT_ERROR(ctx, FX_ERR_SHAPE, "parallel", "'rank'", "branch 1", "[3,1,2]", "[3,2]", "rank");
    fx_ctx_reset(ctx);
    fx_layer *p4 = fx_parallel_create("axis", 2, (fx_layer *[]){ dense("a", 4, 2, 0, rng),
                                                                  dense("b", 4, 2, 0, rng) },
                                      FX_JOIN_CONCAT, 2);
    assert_null(fx_layer_forward(p4, ctx, x));
    ASSERT_ERROR(ctx, FX_ERR_AXIS, "parallel", "'axis'", "axis 2", "rank 2");
    fx_ctx_reset(ctx);

    /* an error inside a branch is the branch's own, not overwritten */
    fx_tensor *x5 = tu_randn(rng, 2, TU_SHAPE(3, 5), 1.0, 0.0);
    assert_null(fx_layer_forward(p1, ctx, x5));
    assert_int_equal(fx_ctx_status(ctx), FX_ERR_SHAPE);
    assert_null(strstr(fx_ctx_error(ctx), "parallel"));
    fx_ctx_reset(ctx);

    /* heads: output counts */
    fx_layer *net = fx_heads_create("net", dense("trunk", 4, 3, 0, rng), 2,
                                    (fx_layer *[]){ dense("v", 3, 1, 0, rng), dense("p", 3, 2, 0, rng) });
    fx_tensor *out[3] = { x, x, x };
    assert_int_equal(fx_layer_forward_multi(net, ctx, x, 3, out), FX_ERR_ARG);
    ASSERT_ERROR(ctx, FX_ERR_ARG, "heads 'net'", "2 outputs", "asked for 3");
    assert_null(out[0]);
    assert_null(out[2]);
    fx_ctx_reset(ctx);
    assert_null(fx_layer_forward(net, ctx, x));
    ASSERT_ERROR(ctx, FX_ERR_ARG, "heads", "'net'", "2 outputs", "fx_layer_forward_multi");
    fx_ctx_reset(ctx);
    assert_int_equal(fx_layer_forward_multi(r1, ctx, x, 2, out), FX_ERR_ARG);
    ASSERT_ERROR(ctx, FX_ERR_ARG, "'block1'", "1 output,");
    fx_ctx_reset(ctx);
    /* a head that does not fit the trunk: the error is the head's, outputs NULL */
    fx_layer *bad = fx_heads_create("bad", dense("trunk", 4, 3, 0, rng), 2,
                                    (fx_layer *[]){ dense("v", 3, 1, 0, rng), dense("p", 7, 2, 0, rng) });
    assert_int_equal(fx_layer_forward_multi(bad, ctx, x, 2, out), FX_ERR_SHAPE);
    assert_null(out[0]);
    assert_null(out[1]);
    fx_ctx_reset(ctx);
    /* NULL input and NULL layer */
    assert_int_equal(fx_layer_forward_multi(net, ctx, NULL, 2, out), FX_ERR_ARG);
    ASSERT_ERROR(ctx, FX_ERR_ARG, "input is NULL");
    fx_ctx_reset(ctx);
    assert_int_equal(fx_layer_forward_multi(NULL, ctx, x, 1, out), FX_ERR_ARG);
    fx_ctx_reset(ctx);
    assert_int_equal(fx_layer_forward_multi(net, ctx, x, 0, out), FX_ERR_ARG);
    fx_ctx_reset(ctx);
    assert_int_equal(fx_layer_forward_multi(net, NULL, x, 2, out), FX_ERR_ARG);
    /* an upstream NULL keeps the upstream error */
    fx_ctx_fail(ctx, FX_ERR_VALUE, "upstream");
    assert_int_equal(fx_layer_forward_multi(net, ctx, NULL, 2, out), FX_ERR_VALUE);
    assert_string_equal(fx_ctx_error(ctx), "upstream");
    fx_ctx_reset(ctx);

    fx_layer *all[] = { r1, r2, p1, p2, p3, p4, net, bad };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        fx_layer_free(all[i]);
    fx_tensor_free(x);
    fx_tensor_free(x5);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Constructors refuse bad arguments and free the layers they were given
 * (ASan reports a leak otherwise). */
static void test_bad_constructors(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(10);
    assert_null(fx_residual_create("r", NULL, dense("s", 2, 2, 0, rng), FX_ACT_NONE));
    assert_null(fx_residual_create("r", dense("b", 2, 2, 0, rng), NULL, (fx_activation)99));
    /* body and shortcut with one name: their parameters would clash */
    assert_null(fx_residual_create("r", dense("fc", 2, 2, 0, rng), dense("fc", 2, 2, 0, rng),
                                   FX_ACT_NONE));
    assert_null(fx_parallel_create("p", 0, NULL, FX_JOIN_ADD, 0));
    assert_null(fx_parallel_create("p", 2, (fx_layer *[]){ dense("a", 2, 2, 0, rng), NULL },
                                   FX_JOIN_ADD, 0));
    assert_null(fx_parallel_create("p", 1, (fx_layer *[]){ dense("a", 2, 2, 0, rng) },
                                   (fx_join_mode)7, 0));
    assert_null(fx_parallel_create("p", 2, (fx_layer *[]){ dense("a", 2, 2, 0, rng),
                                                           dense("a", 2, 2, 0, rng) },
                                   FX_JOIN_CONCAT, 0));
    assert_null(fx_heads_create("h", dense("t", 2, 2, 0, rng), 0, NULL));
    assert_null(fx_heads_create("h", dense("t", 2, 2, 0, rng), 2,
                                (fx_layer *[]){ dense("a", 2, 2, 0, rng), NULL }));
    assert_null(fx_heads_create("h", dense("t", 2, 2, 0, rng), 1,
                                (fx_layer *[]){ dense("t", 2, 2, 0, rng) }));
    /* default names */
    fx_layer *l = fx_grad_reverse_create(NULL, 1.0f);
    assert_string_equal(fx_layer_name(l), "grad_reverse");
    fx_layer_free(l);
    l = fx_residual_create(NULL, dense("b", 2, 2, 0, rng), NULL, FX_ACT_NONE);
    assert_string_equal(fx_layer_name(l), "residual");
    fx_layer_free(l);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_residual_identity_forward),
        cmocka_unit_test(test_residual_projection_forward),
        cmocka_unit_test(test_residual_identity_gradient),
        cmocka_unit_test(test_residual_conv_projection),
        cmocka_unit_test(test_parallel_forward),
        cmocka_unit_test(test_heads_forward),
        cmocka_unit_test(test_grad_reverse),
        cmocka_unit_test(test_activation_layer),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_bad_constructors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
