/* test_alloc.c - a steady-state training step makes no heap allocation.
 *
 * The test replaces malloc and friends for the whole process (the
 * executable's definitions take precedence over libc's), so allocations by
 * OpenBLAS and the OpenMP runtime count too, not only the engine's. After a
 * few warm-up steps (the arena grows, optimizer state is created, thread
 * pools start), ten more steps must allocate nothing. Sanitizer builds
 * replace malloc themselves, so there the test is skipped. */
#include "testutil.h"

#include <stdlib.h>

#include "allochooks.h"

static void run_steps(int threads)
{
#if TU_ALLOC_HOOKS
    fx_set_num_threads(threads);
    fx_rng *rng = fx_rng_create(5);
    fx_layer *net = fx_chain_create("net", 3, (fx_layer *[]){
        fx_dense_create("fc1", 64, 256, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng),
        fx_dense_create("fc2", 256, 128, &(fx_dense_opts){ .act = FX_ACT_TANH }, rng),
        fx_dense_create("fc3", 128, 10, NULL, rng) });
    fx_params params;
    fx_params_init(&params);
    assert_int_equal(fx_layer_collect_params(net, &params), FX_OK);
    fx_optim *opt = fx_optim_create(FX_OPT_ADAM,
                                    &(fx_optim_hparams){ .lr = 1e-3, .clip_norm = 1.0 }, &params);
    assert_non_null(opt);
    enum { B = 256 };
    float *x = malloc(B * 64 * sizeof(float));
    int32_t *y = malloc(B * sizeof(int32_t));
    for (int i = 0; i < B * 64; i++)
        x[i] = (float)fx_rng_normal(rng);
    for (int i = 0; i < B; i++)
        y[i] = (int32_t)(fx_rng_u64(rng) % 10);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (int step = 0; step < 13; step++) {
        if (step == 3)
            tu_alloc_count_start();
        fx_tensor *xt = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(B, 64), x);
        fx_tensor *yt = fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(B), y);
        fx_tensor *h = fx_dropout(ctx, fx_layer_forward(net, ctx, xt), 0.1f);
        fx_tensor *loss = fx_cross_entropy(ctx, h, yt, FX_MEAN);
        fx_status s = fx_backward(ctx, loss);
        fx_status s2 = fx_optim_step(opt);
        fx_optim_zero_grad(opt);
        fx_ctx_reset(ctx);
        if (s != FX_OK || s2 != FX_OK) {
            tu_alloc_count_stop();
            fail_msg("step %d failed: %s %s", step, fx_ctx_error(ctx), fx_optim_error(opt));
        }
    }
    long n = tu_alloc_count_stop();
    fx_ctx_free(ctx);
    free(x);
    free(y);
    fx_optim_free(opt);
    fx_params_clear(&params);
    fx_layer_free(net);
    fx_rng_free(rng);
    if (n != 0)
        fail_msg("%ld heap allocations in 10 steady-state steps with %d threads", n, threads);
#else
    (void)threads;
    skip();
#endif
}

static void test_one_thread(void **state) { (void)state; run_steps(1); }
static void test_two_threads(void **state) { (void)state; run_steps(2); }

int main(void)
{
    tu_alloc_trace(getenv("FX_ALLOC_TRACE") != NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_thread),
        cmocka_unit_test(test_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
