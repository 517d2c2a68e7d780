/* test_grad_ready.c - the grad-ready hook (fx_ctx_set_grad_ready_hook) and
 * gradients in caller buffers (fx_tensor_set_grad_buffer), the engine's
 * side of data-parallel training: every parameter on the tape is reported
 * exactly once per backward, when no record left will add to its gradient,
 * and gradients that live in one flat buffer equal the usual ones. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

enum { MAXP = 8 };

typedef struct {
    fx_tensor *seen[64];
    int n;
    /* a snapshot of each reported gradient's first value when reported,
     * and the params to compare against at the end */
    float first[64];
} order_t;

static void on_ready(void *data, fx_tensor *t)
{
    order_t *o = data;
    assert_true(o->n < 64);
    o->seen[o->n] = t;
    float *v = tu_values(t->grad);
    o->first[o->n] = v[0];
    free(v);
    o->n++;
}

static int index_of(const order_t *o, const fx_tensor *t)
{
    int k = -1;
    for (int i = 0; i < o->n; i++)
        if (o->seen[i] == t) {
            assert_int_equal(k, -1); /* exactly once */
            k = i;
        }
    return k;
}

/* After backward, every reported gradient still equals what it was when
 * reported: nothing added to it afterwards. */
static void assert_final_when_reported(const order_t *o)
{
    for (int i = 0; i < o->n; i++) {
        float *v = tu_values(o->seen[i]->grad);
        assert_float_equal(v[0], o->first[i], 0);
        free(v);
    }
}

/* An MLP: x W1 + b1 -> tanh -> W2 + b2 -> mean. The last layer's params
 * are final first. */
static void test_mlp_order(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(1);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *w1 = tu_randn(rng, 2, TU_SHAPE(4, 5), 0.5, 0), *b1 = tu_randn(rng, 1, TU_SHAPE(5), 0.5, 0);
    fx_tensor *w2 = tu_randn(rng, 2, TU_SHAPE(5, 3), 0.5, 0), *b2 = tu_randn(rng, 1, TU_SHAPE(3), 0.5, 0);
    fx_tensor *frozen = tu_randn(rng, 1, TU_SHAPE(3), 0.5, 0);
    fx_tensor_set_requires_grad(frozen, false);
    fx_tensor *unused = tu_randn(rng, 1, TU_SHAPE(3), 0.5, 0);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(6, 4), 1, 0);
    fx_tensor_set_requires_grad(x, false);
    order_t o = {0};
    fx_ctx_set_grad_ready_hook(ctx, on_ready, &o);
    for (int rep = 0; rep < 2; rep++) { /* twice: the table lives in the arena */
        o.n = 0;
        fx_tensor *h = fx_tanh(ctx, fx_add(ctx, fx_matmul(ctx, x, w1), b1));
        fx_tensor *y = fx_add(ctx, fx_add(ctx, fx_matmul(ctx, h, w2), b2), frozen);
        assert_int_equal(fx_backward(ctx, fx_mean(ctx, y, 0, NULL, false)), FX_OK);
        assert_int_equal(o.n, 4);
        int iw1 = index_of(&o, w1), ib1 = index_of(&o, b1), iw2 = index_of(&o, w2),
            ib2 = index_of(&o, b2);
        assert_true(iw1 >= 0 && ib1 >= 0 && iw2 >= 0 && ib2 >= 0);
        assert_int_equal(index_of(&o, frozen), -1);
        assert_int_equal(index_of(&o, unused), -1);
        /* reverse order of use */
        assert_true(ib2 < iw2 && iw2 < ib1 && ib1 < iw1);
        assert_final_when_reported(&o);
        fx_ctx_reset(ctx);
    }
    fx_ctx_set_grad_ready_hook(ctx, NULL, NULL);
    o.n = 0;
    fx_tensor *y = fx_matmul(ctx, x, w1);
    assert_int_equal(fx_backward(ctx, fx_mean(ctx, y, 0, NULL, false)), FX_OK);
    assert_int_equal(o.n, 0);
    tu_free_all(7, (fx_tensor *[]){ w1, b1, w2, b2, frozen, unused, x });
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* A shared weight used twice (x W W) and a branching graph (a trunk with
 * two heads whose sum is the loss; one head's records are reached only
 * through the other's skip): each param reported once, after its last use
 * in reverse, i.e. after its first use in forward order. */
static void test_shared_and_branching(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(2);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(4, 4), 0.5, 0);
    fx_tensor *wt = tu_randn(rng, 2, TU_SHAPE(4, 4), 0.5, 0); /* trunk */
    fx_tensor *ha = tu_randn(rng, 2, TU_SHAPE(4, 2), 0.5, 0); /* head a */
    fx_tensor *hb = tu_randn(rng, 2, TU_SHAPE(4, 2), 0.5, 0); /* head b */
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(3, 4), 1, 0);
    fx_tensor_set_requires_grad(x, false);
    order_t o = {0};
    fx_ctx_set_grad_ready_hook(ctx, on_ready, &o);
    fx_tensor *t = fx_relu(ctx, fx_matmul(ctx, x, wt));
    fx_tensor *s = fx_matmul(ctx, fx_tanh(ctx, fx_matmul(ctx, t, w)), w);
    fx_tensor *a = fx_matmul(ctx, s, ha);
    fx_tensor *b = fx_matmul(ctx, t, hb);
    /* a record whose output no gradient reaches: ha used on a dead branch */
    fx_tensor *dead = fx_matmul(ctx, x, ha);
    (void)dead;
    fx_tensor *loss = fx_add(ctx, fx_mean(ctx, a, 0, NULL, false), fx_mean(ctx, b, 0, NULL, false));
    assert_int_equal(fx_backward(ctx, loss), FX_OK);
    assert_int_equal(o.n, 4);
    int iw = index_of(&o, w), iwt = index_of(&o, wt), iha = index_of(&o, ha), ihb = index_of(&o, hb);
    assert_true(iw >= 0 && iwt >= 0 && iha >= 0 && ihb >= 0);
    /* the trunk is last: every head's gradient flows through it */
    assert_int_equal(iwt, 3);
    assert_true(iha < iw); /* ha's last (dead) record comes first in reverse */
    assert_final_when_reported(&o);
    fx_ctx_reset(ctx);
    /* a param reached only by a dead record is still reported */
    o.n = 0;
    fx_tensor *y = fx_matmul(ctx, x, wt);
    fx_tensor *z = fx_matmul(ctx, x, hb); /* not in the loss */
    (void)z;
    assert_int_equal(fx_backward(ctx, fx_mean(ctx, y, 0, NULL, false)), FX_OK);
    assert_int_equal(o.n, 2);
    assert_int_equal(index_of(&o, hb), 0);
    assert_int_equal(index_of(&o, wt), 1);
    fx_ctx_reset(ctx);
    tu_free_all(5, (fx_tensor *[]){ w, wt, ha, hb, x });
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* Gradients in one flat buffer equal the usual ones; zero_grad zeroes
 * through it; freeing leaves the buffer alone; detaching copies back. */
static void test_grad_buffer(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_params ps;
    fx_params_init(&ps);
    fx_tensor *w1 = tu_randn(rng, 2, TU_SHAPE(4, 5), 0.5, 0), *b1 = tu_randn(rng, 1, TU_SHAPE(5), 0.5, 0);
    fx_tensor *w2 = tu_randn(rng, 2, TU_SHAPE(5, 3), 0.5, 0);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(6, 4), 1, 0);
    fx_tensor_set_requires_grad(x, false);
    fx_tensor *p[3] = {w1, b1, w2};
    int64_t n[3] = {20, 5, 15};
    float ref[40];
    for (int pass = 0; pass < 2; pass++) {
        fx_tensor *y = fx_matmul(ctx, fx_tanh(ctx, fx_add(ctx, fx_matmul(ctx, x, w1), b1)), w2);
        assert_int_equal(fx_backward(ctx, fx_mean(ctx, y, 0, NULL, false)), FX_OK);
        fx_ctx_reset(ctx);
        if (pass == 0) {
            int64_t at = 0;
            for (int i = 0; i < 3; i++) {
                float *v = tu_values(p[i]->grad);
                memcpy(ref + at, v, (size_t)n[i] * sizeof(float));
                free(v);
                at += n[i];
                fx_tensor_fill(p[i]->grad, 0.0);
            }
        }
        if (pass == 0) {
            /* into the buffer: the (zero) grads are copied in */
            static float buf[40];
            memset(buf, 0x7f, sizeof buf);
            int64_t at = 0;
            for (int i = 0; i < 3; i++) {
                assert_int_equal(fx_tensor_set_grad_buffer(p[i], buf + at), FX_OK);
                at += n[i];
            }
            for (int i = 0; i < 40; i++)
                assert_float_equal(buf[i], 0, 0);
        }
    }
    float *buf = (float *)w1->grad->storage->ptr;
    tu_assert_close(buf, ref, 40, 0);
    float *v = tu_values(b1->grad);
    tu_assert_close(v, ref + 20, 5, 0);
    free(v);
    assert_int_equal(fx_params_add(&ps, "w1", w1), FX_OK);
    assert_int_equal(fx_params_add(&ps, "b1", b1), FX_OK);
    assert_int_equal(fx_params_add(&ps, "w2", w2), FX_OK);
    fx_optim *opt = fx_optim_create(FX_OPT_SGD, &(fx_optim_hparams){ .lr = 0.1 }, &ps);
    assert_non_null(opt);
    fx_optim_zero_grad(opt);
    for (int i = 0; i < 40; i++)
        assert_float_equal(buf[i], 0, 0);
    buf[3] = 2.5f;
    assert_int_equal(fx_tensor_set_grad_buffer(w1, NULL), FX_OK); /* owned again */
    buf[3] = 0;
    v = tu_values(w1->grad);
    assert_float_equal(v[3], 2.5f, 0);
    free(v);
    /* bad uses */
    assert_int_equal(fx_tensor_set_grad_buffer(NULL, buf), FX_ERR_ARG);
    assert_int_equal(fx_tensor_set_grad_buffer(x, buf), FX_ERR_STATE);
    fx_optim_free(opt);
    fx_params_clear(&ps);
    tu_free_all(4, (fx_tensor *[]){ w1, b1, w2, x }); /* b1, w2: grads over buf, freed here */
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_order),
        cmocka_unit_test(test_shared_and_branching),
        cmocka_unit_test(test_grad_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
