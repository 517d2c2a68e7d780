/* test_packed.c - pre-packed dense weights (engine/cpu/gemm_packed.c,
 * fx_layer_prepack).
 *
 * The packed products against a double-precision reference and against the
 * unpacked path (OpenBLAS + the elementwise activation ops) over shapes
 * that are and are not multiples of the tiles (M 1..130, odd K and N, tiny
 * and mlp-sized), every fused activation and every kernel this CPU can run
 * (forced through fx__packed_isa); the split over threads; layers: packed
 * and unpacked forwards agree, grad mode keeps the plain path, a weight
 * written through the API makes the pack stale (never used again until
 * packed again); several threads share one packed layer.
 *
 * Not bit-exact against the unpacked path: OpenBLAS sums the K products in
 * another order (its own blocking and tails), so outputs differ by float
 * rounding. The bound used is the classic one for a dot product of length
 * K accumulated in fp32, K * 2^-23 * sum_k |x_k w_k| (+1e-6), times 1.2 for
 * the activations (all have slope <= 1.13). Packed results are
 * deterministic: the threaded split must equal the serial result exactly.
 */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kern_packed.h"

static const fx_activation fused[] = { FX_ACT_NONE, FX_ACT_RELU,  FX_ACT_LEAKY_RELU,
                                       FX_ACT_SIGMOID, FX_ACT_TANH, FX_ACT_GELU, FX_ACT_ELU };

/* The kernels this CPU can run, as fx__packed_isa values. */
static int isas(int *out)
{
    int n = 0;
    static const char *names[] = { NULL, "portable", "avx2", "avx512" };
    for (int i = 1; i <= 3; i++) {
        fx__packed_isa = i;
        if (strcmp(fx__packed_kernel_name(), names[i]) == 0)
            out[n++] = i;
    }
    fx__packed_isa = 0;
    return n;
}

/* y = act(x w^T + b) through the engine's plain ops (OpenBLAS). */
static float *unpacked(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b, fx_activation a)
{
    fx_tensor *y = fx_activate(ctx, fx_linear(ctx, x, w, b), a);
    assert_non_null(y);
    return tu_values(y);
}

static void check_shape(fx_ctx *ctx, fx_rng *rng, int64_t M, int64_t K, int64_t N, int isa,
                        bool bias)
{
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(M, K), 1.0, 0.0);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(N, K), 1.0 / sqrt((double)K), 0.0);
    fx_tensor *b = bias ? tu_randn(rng, 1, TU_SHAPE(N), 0.5, 0.0) : NULL;
    fx_packed *p = fx__pack_create(w, b);
    assert_non_null(p);
    assert_true(fx__pack_valid(p, w, b));
    float *X = tu_values(x), *W = tu_values(w), *Bv = b ? tu_values(b) : NULL;
    double *ref = malloc(sizeof(double) * (size_t)(M * N)), *tol = malloc(sizeof(double) * (size_t)(M * N));
    float *Y = malloc(sizeof(float) * (size_t)(M * N));
    assert_true(ref && tol && Y);
    for (int64_t i = 0; i < M; i++)
        for (int64_t n = 0; n < N; n++) {
            double s = Bv ? Bv[n] : 0.0, a = Bv ? fabs(Bv[n]) : 0.0;
            for (int64_t k = 0; k < K; k++) {
                s += (double)X[i * K + k] * W[n * K + k];
                a += fabs((double)X[i * K + k] * W[n * K + k]);
            }
            ref[i * N + n] = s;
            tol[i * N + n] = 1.2 * ((double)(K + 1) * 0x1p-23 * a + 1e-6);
        }
    fx__packed_isa = isa;
    fx_ctx_set_grad(ctx, false);
    for (size_t ai = 0; ai < sizeof fused / sizeof *fused; ai++) {
        fx_activation act = fused[ai];
        memset(Y, 0xff, sizeof(float) * (size_t)(M * N)); /* NaN: every output must be written */
        fx__packed_gemm(p, M, X, K, Y, N, act);
        float *U = unpacked(ctx, x, w, b, act);
        for (int64_t j = 0; j < M * N; j++) {
            if (act == FX_ACT_NONE && fabs(Y[j] - ref[j]) > tol[j])
                fail_msg("isa %d M %lld K %lld N %lld: y[%lld] = %.9g, reference %.9g",
                         isa, (long long)M, (long long)K, (long long)N, (long long)j, Y[j],
                         ref[j]);
            if (!(fabs(Y[j] - U[j]) <= 2 * tol[j]))
                fail_msg("isa %d act %d M %lld K %lld N %lld: packed y[%lld] = %.9g, unpacked "
                         "%.9g", isa, (int)act, (long long)M, (long long)K, (long long)N,
                         (long long)j, Y[j], U[j]);
        }
        free(U);
        fx_ctx_reset(ctx);
    }
    fx__packed_isa = 0;
    fx_ctx_set_grad(ctx, true);
    fx__pack_free(p);
    free(ref);
    free(tol);
    free(Y);
    free(X);
    free(W);
    free(Bv);
    tu_free_all(3, (fx_tensor *[]){ x, w, b });
}

static void test_shapes(void **state)
{
    (void)state;
    int set[3], n = isas(set);
    assert_true(n >= 1);
    fx_rng *rng = fx_rng_create(17);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    static const int64_t Ms[] = { 1, 2, 3, 5, 7, 8, 11, 12, 13, 17, 24, 31, 64, 100, 130 };
    static const int64_t KN[][2] = { { 1, 1 }, { 3, 5 }, { 17, 33 }, { 31, 47 }, { 64, 10 },
                                     { 129, 65 }, { 7, 96 } };
    for (int i = 0; i < n; i++)
        for (size_t m = 0; m < sizeof Ms / sizeof *Ms; m++)
            for (size_t s = 0; s < sizeof KN / sizeof *KN; s++)
                check_shape(ctx, rng, Ms[m], KN[s][0], KN[s][1], set[i], (m + s) % 3 != 0);
    /* the mlp's first layer at the serving batch sizes */
    for (int i = 0; i < n; i++) {
        check_shape(ctx, rng, 1, 784, 512, set[i], true);
        check_shape(ctx, rng, 8, 784, 512, set[i], true);
        check_shape(ctx, rng, 13, 785, 257, set[i], false);
    }
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* The split over panels equals the serial product bit for bit. */
static void test_threads(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    int64_t M = 64, K = 784, N = 500;
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(M, K), 1.0, 0.0);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(N, K), 0.05, 0.0);
    fx_tensor *b = tu_randn(rng, 1, TU_SHAPE(N), 0.5, 0.0);
    fx_packed *p = fx__pack_create(w, b);
    float *X = tu_values(x), *Y1 = malloc(sizeof(float) * (size_t)(M * N)),
          *Y2 = malloc(sizeof(float) * (size_t)(M * N));
    int old = fx_get_num_threads();
    fx_set_num_threads(1);
    fx__packed_gemm(p, M, X, K, Y1, N, FX_ACT_GELU);
    fx_set_num_threads(3);
    fx__packed_gemm(p, M, X, K, Y2, N, FX_ACT_GELU);
    fx_set_num_threads(old);
    assert_memory_equal(Y1, Y2, sizeof(float) * (size_t)(M * N));
    fx__pack_free(p);
    free(X);
    free(Y1);
    free(Y2);
    tu_free_all(3, (fx_tensor *[]){ x, w, b });
    fx_rng_free(rng);
}

/* ------------------------------------------------------------- layers */

static fx_layer *make_net(uint64_t seed, fx_activation last)
{
    fx_rng *rng = fx_rng_create(seed);
    fx_layer *l1 = fx_dense_create("fc1", 37, 70, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng);
    fx_layer *l2 = fx_dense_create("fc2", 70, 33, &(fx_dense_opts){ .act = FX_ACT_TANH }, rng);
    fx_layer *l3 = fx_dense_create("fc3", 33, 9, &(fx_dense_opts){ .act = last, .no_bias = true },
                                   rng);
    fx_layer *net = fx_chain_create("net", 3, (fx_layer *[]){ l1, l2, l3 });
    assert_non_null(net);
    fx_tensor *b = fx_layer_param(net, "fc1.bias");
    assert_int_equal(fx_init_tensor(b, FX_INIT_UNIFORM, -0.3, 0.3, rng), FX_OK);
    fx_rng_free(rng);
    return net;
}

static float *forward(fx_layer *net, fx_ctx *ctx, fx_tensor *x, bool grad, int64_t *n)
{
    fx_ctx_reset(ctx);
    fx_ctx_set_grad(ctx, grad);
    fx_tensor *y = fx_layer_forward(net, ctx, x);
    if (!y)
        fail_msg("forward: %s", fx_ctx_error(ctx));
    *n = fx_tensor_numel(y);
    return tu_values(y);
}

static void expect_close(const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= 1e-5f * (1.0f + fabsf(b[i]))))
            fail_msg("y[%lld] = %.9g, expected %.9g", (long long)i, a[i], b[i]);
}

static void test_layer(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(5);
    for (int last = 0; last < 2; last++) { /* softmax: not fused, runs after */
        fx_layer *net = make_net(9, last ? FX_ACT_SOFTMAX : FX_ACT_NONE);
        fx_ctx *ctx = fx_ctx_create(fx_cpu());
        fx_tensor *x = tu_randn(rng, 3, TU_SHAPE(2, 13, 37), 1.0, 0.0); /* 26 rows */
        int64_t n;
        float *plain = forward(net, ctx, x, false, &n);
        float *plain_grad = forward(net, ctx, x, true, &n);
        assert_int_equal(fx_layer_num_packed(net), 0);
        assert_int_equal(fx_layer_prepack(net), FX_OK);
        assert_int_equal(fx_layer_num_packed(net), 3);
        float *packed = forward(net, ctx, x, false, &n);
        expect_close(packed, plain, n);
        { /* no rows: an empty result, as unpacked */
            fx_ctx_reset(ctx);
            fx_ctx_set_grad(ctx, false);
            fx_tensor *x0 = fx_zeros(ctx, FX_F32, 2, TU_SHAPE(0, 37));
            fx_tensor *y0 = fx_layer_forward(net, ctx, x0);
            assert_non_null(y0);
            assert_int_equal(y0->ndim, 2);
            assert_int_equal(y0->shape[0], 0);
            assert_int_equal(y0->shape[1], 9);
        }
        /* grad mode on: the plain path, bit for bit, and it trains */
        float *g = forward(net, ctx, x, true, &n);
        assert_memory_equal(g, plain_grad, (size_t)n * sizeof(float));
        /* a weight written through the API: the pack is stale and unused */
        fx_tensor *w2 = fx_layer_param(net, "fc2.weight");
        assert_int_equal(fx_init_tensor(w2, FX_INIT_UNIFORM, -0.2, 0.2, rng), FX_OK);
        assert_int_equal(fx_layer_num_packed(net), 2);
        float *plain2 = forward(net, ctx, x, false, &n);
        fx_layer_unpack(net);
        float *ref2 = forward(net, ctx, x, false, &n);
        expect_close(plain2, ref2, n); /* the new weights, not the stale pack's */
        bool moved = false;
        for (int64_t i = 0; i < n; i++)
            moved = moved || fabsf(plain2[i] - packed[i]) > 1e-3f * (1.0f + fabsf(packed[i]));
        assert_true(moved);
        assert_int_equal(fx_layer_prepack(net), FX_OK);
        float *packed2 = forward(net, ctx, x, false, &n);
        expect_close(packed2, ref2, n);
        /* an optimizer step makes packs stale too */
        fx_ctx_reset(ctx);
        fx_ctx_set_grad(ctx, true);
        fx_params ps;
        fx_params_init(&ps);
        assert_int_equal(fx_layer_collect_params(net, &ps), FX_OK);
        fx_optim *opt = fx_optim_create(FX_OPT_SGD, &(fx_optim_hparams){ .lr = 0.1 }, &ps);
        assert_non_null(opt);
        fx_tensor *loss = fx_sum(ctx, fx_layer_forward(net, ctx, x), 0, NULL, false);
        assert_int_equal(fx_backward(ctx, loss), FX_OK);
        assert_int_equal(fx_optim_step(opt), FX_OK);
        assert_int_equal(fx_layer_num_packed(net), 0);
        fx_optim_free(opt);
        fx_params_clear(&ps);
        free(plain);
        free(plain_grad);
        free(packed);
        free(g);
        free(plain2);
        free(ref2);
        free(packed2);
        fx_tensor_free(x);
        fx_ctx_free(ctx);
        fx_layer_free(net);
    }
    assert_int_equal(fx_layer_prepack(NULL), FX_ERR_ARG);
    fx_layer_unpack(NULL);
    assert_int_equal(fx_layer_num_packed(NULL), 0);
    fx_rng_free(rng);
}

/* ------------------------------------------------- shared by threads */

typedef struct {
    fx_layer *net;
    fx_tensor *x;
    const float *expect;
    int64_t n;
    int bad;
} share_arg;

static void *share_run(void *p)
{
    share_arg *a = p;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_ctx_set_grad(ctx, false);
    for (int r = 0; r < 200 && ctx; r++) {
        fx_ctx_reset(ctx);
        fx_tensor *y = fx_layer_forward(a->net, ctx, a->x);
        float *v = y ? tu_values(y) : NULL;
        if (!v || memcmp(v, a->expect, (size_t)a->n * sizeof(float)) != 0)
            a->bad++;
        free(v);
    }
    fx_ctx_free(ctx);
    return NULL;
}

static void test_shared(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(8);
    fx_layer *net = make_net(4, FX_ACT_SIGMOID);
    assert_int_equal(fx_layer_prepack(net), FX_OK);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(11, 37), 1.0, 0.0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    int64_t n;
    float *expect = forward(net, ctx, x, false, &n);
    share_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (share_arg){ net, x, expect, n, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, share_run, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    free(expect);
    fx_ctx_free(ctx);
    fx_tensor_free(x);
    fx_layer_free(net);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_layer),
        cmocka_unit_test(test_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
