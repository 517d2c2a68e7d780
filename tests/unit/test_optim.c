/* test_optim.c - optimizers, clipping and learning-rate schedules.
 *
 * Every kind is checked step by step against a double-precision reference
 * written here from PyTorch's documented algorithms (torch.optim), with the
 * documented defaults filled in by hand, so both the formulas and the
 * defaults of fx_optim_create are under test. Then each kind minimises a
 * convex quadratic built from ops and fx_backward; weight decay, clipping,
 * schedules, non-finite gradients, bad hyper-parameters, state names and the
 * no-allocation rule of a steady-state step are tested one by one. */
#include "testutil.h"
#include "allochooks.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- helpers */

/* A persistent f32 parameter [n] with values v (requires grad). */
static fx_tensor *param_1d(int64_t n, const float *v)
{
    fx_tensor *t = fx_tensor_create(fx_cpu(), FX_F32, 1, &n);
    assert_non_null(t);
    assert_int_equal(fx_tensor_copy_from_host(t, v, (size_t)n * sizeof *v), FX_OK);
    assert_int_equal(fx_tensor_set_requires_grad(t, true), FX_OK);
    return t;
}

static void set_grad(fx_tensor *p, const float *g)
{
    size_t nb = (size_t)fx_tensor_numel(p) * sizeof(float);
    assert_int_equal(fx_tensor_copy_from_host(p->grad, g, nb), FX_OK);
}

static void get(const fx_tensor *t, float *out)
{
    assert_int_equal(fx_tensor_to_host(t, out, (size_t)fx_tensor_numel(t) * sizeof(float)),
                     FX_OK);
}

/* Asserts |got[i] - want[i]| <= tol * (1 + |want[i]|) for all i. */
static void assert_near(const char *what, const float *got, const double *want, int64_t n,
                        double tol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= tol * (1.0 + fabs(want[i]))))
            fail_msg("%s: element %lld is %.9g, reference %.9g", what, (long long)i, got[i],
                     want[i]);
}

/* --------------------------------------------------- double reference */

/* Hyper-parameters of the reference, every value explicit. */
typedef struct {
    double lr, momentum, beta1, beta2, eps, alpha, rho, wd;
} ref_hp;

/* One step t (1-based) of PyTorch's algorithm for one element, written from
 * the torch.optim documentation (dampening 0, no amsgrad, not centered). */
static void ref_step(fx_optim_kind k, const ref_hp *h, int t, double *p, double g, double *s1,
                     double *s2)
{
    if (k != FX_OPT_ADAMW && h->wd != 0)
        g = g + h->wd * *p;
    switch (k) {
    case FX_OPT_SGD:
        *p -= h->lr * g;
        break;
    case FX_OPT_MOMENTUM:
    case FX_OPT_NESTEROV:
        *s1 = t > 1 ? h->momentum * *s1 + g : g; /* b_1 = g */
        if (k == FX_OPT_NESTEROV)
            g = g + h->momentum * *s1;
        else
            g = *s1;
        *p -= h->lr * g;
        break;
    case FX_OPT_RMSPROP:
        *s1 = h->alpha * *s1 + (1 - h->alpha) * g * g;
        if (h->momentum > 0) {
            *s2 = h->momentum * *s2 + g / (sqrt(*s1) + h->eps);
            *p -= h->lr * *s2;
        } else {
            *p -= h->lr * g / (sqrt(*s1) + h->eps);
        }
        break;
    case FX_OPT_ADAGRAD:
        *s1 += g * g;
        *p -= h->lr * g / (sqrt(*s1) + h->eps);
        break;
    case FX_OPT_ADADELTA: {
        *s1 = h->rho * *s1 + (1 - h->rho) * g * g;
        double dx = sqrt(*s2 + h->eps) / sqrt(*s1 + h->eps) * g;
        *s2 = h->rho * *s2 + (1 - h->rho) * dx * dx;
        *p -= h->lr * dx;
        break;
    }
    case FX_OPT_ADAM:
    case FX_OPT_ADAMW: {
        if (k == FX_OPT_ADAMW)
            *p -= h->lr * h->wd * *p;
        *s1 = h->beta1 * *s1 + (1 - h->beta1) * g;
        *s2 = h->beta2 * *s2 + (1 - h->beta2) * g * g;
        double mhat = *s1 / (1 - pow(h->beta1, t));
        double vhat = *s2 / (1 - pow(h->beta2, t));
        *p -= h->lr * mhat / (sqrt(vhat) + h->eps);
        break;
    }
    default:
        fail_msg("no reference for kind %d", (int)k);
    }
}

/* Deterministic, varied test data: initial values and the gradient of
 * element i at step t (some exact zeros, some tiny, some large). */
static double init_value(int64_t i) { return 2.0 * sin(1.3 * (double)i + 0.2); }
static double grad_value(int64_t i, int t)
{
    if (i % 11 == 3)
        return 0.0;
    if (i % 11 == 5) /* tiny: the result depends on eps (and its default) */
        return 1e-9 * (1.0 + t);
    return cos(0.9 * (double)i + 0.5 * t) * (1.0 + 0.5 * t) * (i % 7 == 0 ? 20.0 : 1.0);
}

typedef struct {
    fx_optim_kind kind;
    fx_optim_hparams given; /* what the test passes (zero fields = defaults) */
    ref_hp ref;             /* the same with documented defaults written out */
} ref_case;

static const ref_case cases[] = {
    { FX_OPT_SGD, { .lr = 0.1 }, { .lr = 0.1 } },
    { FX_OPT_SGD, { .lr = 0.1, .weight_decay = 0.05 }, { .lr = 0.1, .wd = 0.05 } },
    { FX_OPT_MOMENTUM, { .lr = 0.05 }, { .lr = 0.05, .momentum = 0.9 } },
    { FX_OPT_MOMENTUM, { .lr = 0.05, .momentum = 0.5, .weight_decay = 0.01 },
      { .lr = 0.05, .momentum = 0.5, .wd = 0.01 } },
    { FX_OPT_NESTEROV, { .lr = 0.05 }, { .lr = 0.05, .momentum = 0.9 } },
    { FX_OPT_NESTEROV, { .lr = 0.02, .momentum = 0.7, .weight_decay = 0.1 },
      { .lr = 0.02, .momentum = 0.7, .wd = 0.1 } },
    { FX_OPT_RMSPROP, { .lr = 0.01 }, { .lr = 0.01, .alpha = 0.99, .eps = 1e-8 } },
    { FX_OPT_RMSPROP, { .lr = 0.01, .momentum = 0.8, .alpha = 0.9, .eps = 1e-6,
                        .weight_decay = 0.01 },
      { .lr = 0.01, .momentum = 0.8, .alpha = 0.9, .eps = 1e-6, .wd = 0.01 } },
    { FX_OPT_ADAGRAD, { .lr = 0.1 }, { .lr = 0.1, .eps = 1e-10 } },
    { FX_OPT_ADAGRAD, { .lr = 0.3, .eps = 1e-5, .weight_decay = 0.02 },
      { .lr = 0.3, .eps = 1e-5, .wd = 0.02 } },
    { FX_OPT_ADADELTA, { .lr = 0 }, { .lr = 1.0, .rho = 0.9, .eps = 1e-6 } },
    { FX_OPT_ADADELTA, { .lr = 0.5, .rho = 0.95, .eps = 1e-4, .weight_decay = 0.01 },
      { .lr = 0.5, .rho = 0.95, .eps = 1e-4, .wd = 0.01 } },
    { FX_OPT_ADAM, { .lr = 0.01 }, { .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8 } },
    { FX_OPT_ADAM, { .lr = 0.02, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.1 },
      { .lr = 0.02, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .wd = 0.1 } },
    { FX_OPT_ADAMW, { .lr = 0.01 },
      { .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .wd = 0.01 } },
    { FX_OPT_ADAMW, { .lr = 0.05, .beta1 = 0.5, .beta2 = 0.9, .weight_decay = 0.2 },
      { .lr = 0.05, .beta1 = 0.5, .beta2 = 0.9, .eps = 1e-8, .wd = 0.2 } },
};

/* Runs `steps` steps of one case on a parameter of n elements and compares
 * the parameter after every step, and the state at the end, with the
 * reference. */
static void check_case(const ref_case *c, int64_t n, int steps)
{
    float *host = malloc((size_t)n * sizeof *host);
    double *p = malloc((size_t)n * sizeof *p), *s1 = calloc((size_t)n, sizeof *s1),
           *s2 = calloc((size_t)n, sizeof *s2);
    for (int64_t i = 0; i < n; i++)
        host[i] = (float)(p[i] = init_value(i));
    fx_tensor *w = param_1d(n, host);
    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_params_add(&ps, "w", w), FX_OK);
    fx_optim *o = fx_optim_create(c->kind, &c->given, &ps);
    if (!o)
        fail_msg("%s: create failed: %s", fx_optim_kind_name(c->kind),
                 fx_optim_last_create_error());
    assert_string_equal(fx_optim_last_create_error(), "");
    char what[64];
    for (int t = 1; t <= steps; t++) {
        for (int64_t i = 0; i < n; i++) {
            double g = grad_value(i, t);
            host[i] = (float)g;
            ref_step(c->kind, &c->ref, t, &p[i], (double)(float)g, &s1[i], &s2[i]);
        }
        set_grad(w, host);
        assert_int_equal(fx_optim_step(o), FX_OK);
        assert_int_equal(fx_optim_steps(o), t);
        get(w, host);
        snprintf(what, sizeof what, "%s (case %d) step %d", fx_optim_kind_name(c->kind),
                 (int)(c - cases), t);
        assert_near(what, host, p, n, 2e-5);
    }
    /* The state slots hold the reference's s1, s2 (in slot order). */
    fx_params st;
    fx_params_init(&st);
    assert_int_equal(fx_optim_state(o, &st), FX_OK);
    for (int j = 0; j < st.count; j++) {
        get(st.items[j].tensor, host);
        snprintf(what, sizeof what, "%s state %s", fx_optim_kind_name(c->kind),
                 st.items[j].name);
        /* Nesterov/momentum buffers and Adam's v can be large: relative tol. */
        assert_near(what, host, j == 0 ? s1 : s2, n, 2e-5);
    }
    fx_params_clear(&st);
    fx_optim_free(o);
    fx_params_clear(&ps);
    fx_tensor_free(w);
    free(host);
    free(p);
    free(s1);
    free(s2);
}

/* Every kind and configuration on a small parameter over several steps. */
static void test_kinds_match_reference(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        check_case(&cases[c], 13, 6);
}

/* The same on a tensor large enough for the parallel loops (two threads). */
static void test_kinds_match_reference_large(void **state)
{
    (void)state;
    int old = fx_get_num_threads();
    fx_set_num_threads(2);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c += 2)
        check_case(&cases[c], 40009, 3);
    fx_set_num_threads(old);
}

/* ------------------------------------------------------- convergence */

/* Minimises sum((p - target)^2) from a fixed start with fx ops and
 * fx_backward; every kind must reach the target. */
static void minimise(fx_optim_kind kind, const fx_optim_hparams *h, int iters, double tol)
{
    const float start[5] = { 3.0f, -2.0f, 0.5f, 4.0f, -1.5f };
    const float target[5] = { 1.0f, 2.0f, -1.0f, 0.5f, -1.5f };
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *p = param_1d(5, start);
    fx_params ps;
    fx_params_init(&ps);
    assert_int_equal(fx_params_add(&ps, "p", p), FX_OK);
    fx_optim *o = fx_optim_create(kind, h, &ps);
    assert_non_null(o);
    double first_loss = NAN, loss = NAN;
    for (int it = 0; it < iters; it++) {
        fx_tensor *tg = fx_tensor_from_host(ctx, FX_F32, 1, TU_SHAPE(5), target);
        fx_tensor *d = fx_sub(ctx, p, tg);
        fx_tensor *l = fx_sum(ctx, fx_mul(ctx, d, d), 0, NULL, false);
        if (!l)
            fail_msg("loss failed: %s", fx_ctx_error(ctx));
        loss = fx_tensor_item(l);
        if (it == 0)
            first_loss = loss;
        assert_int_equal(fx_backward(ctx, l), FX_OK);
        assert_int_equal(fx_optim_step(o), FX_OK);
        fx_optim_zero_grad(o);
        fx_ctx_reset(ctx);
    }
    float got[5];
    get(p, got);
    for (int i = 0; i < 5; i++)
        if (!(fabsf(got[i] - target[i]) <= tol))
            fail_msg("%s: p[%d] = %g after %d steps, target %g (loss %g -> %g)",
                     fx_optim_kind_name(kind), i, got[i], iters, target[i], first_loss, loss);
    fx_optim_free(o);
    fx_params_clear(&ps);
    fx_tensor_free(p);
    fx_ctx_free(ctx);
}

static void test_minimise_quadratic(void **state)
{
    (void)state;
    minimise(FX_OPT_SGD, &(fx_optim_hparams){ .lr = 0.1 }, 100, 1e-4);
    minimise(FX_OPT_MOMENTUM, &(fx_optim_hparams){ .lr = 0.05 }, 300, 1e-4);
    minimise(FX_OPT_NESTEROV, &(fx_optim_hparams){ .lr = 0.05 }, 300, 1e-4);
    minimise(FX_OPT_RMSPROP, &(fx_optim_hparams){ .lr = 0.01 }, 1000, 2e-2);
    minimise(FX_OPT_RMSPROP, &(fx_optim_hparams){ .lr = 0.002, .momentum = 0.9 }, 1000, 2e-2);
    minimise(FX_OPT_ADAGRAD, &(fx_optim_hparams){ .lr = 0.5 }, 1000, 1e-3);
    minimise(FX_OPT_ADADELTA, &(fx_optim_hparams){ .lr = 1.0, .eps = 1e-3 }, 3000, 2e-2);
    minimise(FX_OPT_ADAM, &(fx_optim_hparams){ .lr = 0.05 }, 1000, 1e-2);
    minimise(FX_OPT_ADAMW, &(fx_optim_hparams){ .lr = 0.05 }, 1000, 2e-2);
}

/* ------------------------------------------------------- weight decay */

/* With a zero gradient only the decay moves the weights: L2 SGD shrinks by
 * (1 - lr * wd) per step, AdamW shrinks by exactly (1 - lr * wd) (its Adam
 * part sees g = 0), while Adam's L2 term goes through the normalisation and
 * moves each weight by about lr per step towards 0 (exactly lr on the
 * first step, a bit less later as g' = wd * p shrinks). */
static void test_weight_decay(void **state)
{
    (void)state;
    const float v0[4] = { 2.0f, -1.0f, 0.5f, -4.0f }, zero[4] = { 0 };
    struct {
        fx_optim_kind kind;
        double lr, wd;
    } runs[] = { { FX_OPT_SGD, 0.5, 0.1 }, { FX_OPT_ADAMW, 0.1, 0.1 }, { FX_OPT_ADAM, 0.1, 0.1 } };
    for (int r = 0; r < 3; r++) {
        fx_tensor *p = param_1d(4, v0);
        fx_params ps;
        fx_params_init(&ps);
        fx_params_add(&ps, "p", p);
        fx_optim *o = fx_optim_create(runs[r].kind,
                                      &(fx_optim_hparams){ .lr = runs[r].lr,
                                                           .weight_decay = runs[r].wd },
                                      &ps);
        assert_non_null(o);
        for (int t = 0; t < 3; t++) {
            set_grad(p, zero);
            assert_int_equal(fx_optim_step(o), FX_OK);
        }
        float got[4];
        double want[4];
        get(p, got);
        double f = pow(1.0 - runs[r].lr * runs[r].wd, 3);
        for (int i = 0; i < 4; i++) {
            want[i] = v0[i] * f;
            if (runs[r].kind == FX_OPT_ADAM) { /* moves by about lr per step */
                assert_true(fabs(v0[i] - got[i]) > 2.5 * runs[r].lr);
                assert_true(fabs(v0[i] - got[i]) < 3.0 * runs[r].lr + 1e-6);
                assert_true(fabs(got[i]) < fabs(v0[i]));
                want[i] = got[i];
            }
        }
        assert_near(fx_optim_kind_name(runs[r].kind), got, want, 4, 1e-6);
        fx_optim_free(o);
        fx_params_clear(&ps);
        fx_tensor_free(p);
    }
}

/* ------------------------------------------------------------ clipping */

/* Two parameters a [2], b [1] with lr 1 SGD: the update is the clipped
 * gradient. */
typedef struct {
    fx_tensor *a, *b;
    fx_params ps;
    fx_optim *o;
} two_params;

static void two_setup(two_params *tp, const fx_optim_hparams *h, const float ga[2],
                      const float gb[1])
{
    const float za[2] = { 0, 0 }, zb[1] = { 0 };
    tp->a = param_1d(2, za);
    tp->b = param_1d(1, zb);
    fx_params_init(&tp->ps);
    fx_params_add(&tp->ps, "a", tp->a);
    fx_params_add(&tp->ps, "b", tp->b);
    tp->o = fx_optim_create(FX_OPT_SGD, h, &tp->ps);
    assert_non_null(tp->o);
    set_grad(tp->a, ga);
    set_grad(tp->b, gb);
}

/* Checks the parameters moved by -upd (a then b) and frees. */
static void two_check(two_params *tp, const double upd[3], double norm)
{
    float ga[2], gb[1];
    get(tp->a, ga);
    get(tp->b, gb);
    float got[3] = { ga[0], ga[1], gb[0] };
    double want[3] = { -upd[0], -upd[1], -upd[2] };
    assert_near("clipped update", got, want, 3, 1e-6);
    assert_true(fabs(fx_optim_last_grad_norm(tp->o) - norm) <= 1e-9 * norm);
    fx_optim_free(tp->o);
    fx_params_clear(&tp->ps);
    fx_tensor_free(tp->a);
    fx_tensor_free(tp->b);
}

static void test_clip(void **state)
{
    (void)state;
    const float ga[2] = { 3, -4 }, gb[1] = { 12 };
    two_params tp;

    /* No clipping: the norm is still reported. */
    two_setup(&tp, &(fx_optim_hparams){ .lr = 1 }, ga, gb);
    assert_int_equal(fx_optim_step(tp.o), FX_OK);
    two_check(&tp, (double[]){ 3, -4, 12 }, 13);

    /* By value: each element clamped to [-3.5, 3.5]. */
    two_setup(&tp, &(fx_optim_hparams){ .lr = 1, .clip_value = 3.5 }, ga, gb);
    assert_int_equal(fx_optim_step(tp.o), FX_OK);
    two_check(&tp, (double[]){ 3, -3.5, 3.5 }, 13);

    /* By norm 6.5 of a global norm 13: scaled by 6.5 / (13 + 1e-6). */
    two_setup(&tp, &(fx_optim_hparams){ .lr = 1, .clip_norm = 6.5 }, ga, gb);
    assert_int_equal(fx_optim_step(tp.o), FX_OK);
    double c = 6.5 / (13 + 1e-6);
    two_check(&tp, (double[]){ 3 * c, -4 * c, 12 * c }, 13);

    /* A norm below the limit leaves the gradients alone. */
    two_setup(&tp, &(fx_optim_hparams){ .lr = 1, .clip_norm = 20 }, ga, gb);
    assert_int_equal(fx_optim_step(tp.o), FX_OK);
    two_check(&tp, (double[]){ 3, -4, 12 }, 13);

    /* Both: value first ([3, -3.5], [3.5], norm sqrt(33.5)), then norm. */
    two_setup(&tp, &(fx_optim_hparams){ .lr = 1, .clip_value = 3.5, .clip_norm = 2 }, ga, gb);
    assert_int_equal(fx_optim_step(tp.o), FX_OK);
    c = 2 / (sqrt(33.5) + 1e-6);
    two_check(&tp, (double[]){ 3 * c, -3.5 * c, 3.5 * c }, 13);
}

/* ----------------------------------------------------------- schedules */

static void expect_lr(const fx_schedule *s, double base, int64_t step, double want)
{
    double got = fx_schedule_lr(s, base, step);
    if (!(fabs(got - want) <= 1e-12 * (1 + fabs(want))))
        fail_msg("schedule %d (warmup %lld) at step %lld: %.12g, want %.12g", (int)s->kind,
                 (long long)s->warmup_steps, (long long)step, got, want);
}

static void test_schedules(void **state)
{
    (void)state;
    fx_schedule s = { .kind = FX_SCHED_CONSTANT };
    expect_lr(&s, 0.3, 0, 0.3);
    expect_lr(&s, 0.3, 1000, 0.3);
    expect_lr(NULL, 0.3, 5, 0.3);

    /* Warmup from 0: step s < 4 gives lr * (s + 1) / 4. */
    s.warmup_steps = 4;
    expect_lr(&s, 0.4, 0, 0.1);
    expect_lr(&s, 0.4, 2, 0.3);
    expect_lr(&s, 0.4, 3, 0.4);
    expect_lr(&s, 0.4, 50, 0.4);

    s = (fx_schedule){ .kind = FX_SCHED_STEP, .step_size = 3, .gamma = 0.5 };
    const double step_want[] = { 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125 };
    for (int k = 0; k < 10; k++)
        expect_lr(&s, 1.0, k, step_want[k]);
    s.gamma = 0; /* default 0.1 */
    expect_lr(&s, 1.0, 7, 0.01);
    s = (fx_schedule){ .kind = FX_SCHED_STEP, .step_size = 3, .gamma = 0.5, .warmup_steps = 2 };
    expect_lr(&s, 1.0, 0, 0.5);
    expect_lr(&s, 1.0, 1, 1.0);
    expect_lr(&s, 1.0, 2, 1.0);  /* t = 0 */
    expect_lr(&s, 1.0, 4, 1.0);  /* t = 2 */
    expect_lr(&s, 1.0, 5, 0.5);  /* t = 3 */
    expect_lr(&s, 1.0, 10, 0.25); /* t = 8 */
    expect_lr(&s, 1.0, 11, 0.125); /* t = 9 */

    /* Cosine from 1 to 0.1 over 10 steps; half way is the mean 0.55. */
    s = (fx_schedule){ .kind = FX_SCHED_COSINE, .total_steps = 10, .min_lr = 0.1 };
    expect_lr(&s, 1.0, 0, 1.0);
    expect_lr(&s, 1.0, 5, 0.55);
    expect_lr(&s, 1.0, 2, 0.1 + 0.9 * (1 + cos(M_PI * 0.2)) / 2);
    expect_lr(&s, 1.0, 10, 0.1);
    expect_lr(&s, 1.0, 25, 0.1);
    s.warmup_steps = 2;
    s.total_steps = 12;
    expect_lr(&s, 1.0, 0, 0.5);
    expect_lr(&s, 1.0, 1, 1.0);
    expect_lr(&s, 1.0, 2, 1.0);   /* t = 0 of T = 10 */
    expect_lr(&s, 1.0, 7, 0.55);  /* t = 5 */
    expect_lr(&s, 1.0, 12, 0.1);
    expect_lr(&s, 1.0, 13, 0.1);
}

/* The optimizer uses the schedule's rate at each step: with g = 1, SGD
 * moves p by exactly -lr(step); fx_optim_lr announces it beforehand and
 * fx_optim_set_steps moves along the schedule. */
static void test_schedule_in_optimizer(void **state)
{
    (void)state;
    const float one[1] = { 1 }, zero[1] = { 0 };
    fx_tensor *p = param_1d(1, zero);
    fx_params ps;
    fx_params_init(&ps);
    fx_params_add(&ps, "p", p);
    fx_optim_hparams h = { .lr = 0.8,
                           .schedule = { .kind = FX_SCHED_STEP, .warmup_steps = 2,
                                         .step_size = 2, .gamma = 0.5 } };
    fx_optim *o = fx_optim_create(FX_OPT_SGD, &h, &ps);
    assert_non_null(o);
    const double want[] = { 0.4, 0.8, 0.8, 0.8, 0.4, 0.4, 0.2 };
    double pos = 0;
    for (int k = 0; k < 7; k++) {
        assert_true(fabs(fx_optim_lr(o) - want[k]) < 1e-12);
        set_grad(p, one);
        assert_int_equal(fx_optim_step(o), FX_OK);
        pos -= want[k];
        float got[1];
        get(p, got);
        assert_true(fabs(got[0] - pos) < 1e-5);
    }
    assert_int_equal(fx_optim_steps(o), 7);
    fx_optim_set_steps(o, 100);
    assert_int_equal(fx_optim_steps(o), 100);
    assert_true(fabs(fx_optim_lr(o) - fx_schedule_lr(&h.schedule, 0.8, 100)) < 1e-15);
    fx_optim_set_steps(o, -3);
    assert_int_equal(fx_optim_steps(o), 0);
    fx_optim_free(o);
    fx_params_clear(&ps);
    fx_tensor_free(p);
}

/* ------------------------------------------------- non-finite gradients */

static void test_nonfinite_gradient(void **state)
{
    (void)state;
    const float v[3] = { 1, 2, 3 }, good[3] = { 0.1f, 0.2f, 0.3f };
    float bad[3] = { 0.5f, NAN, 0.5f };
    fx_tensor *a = param_1d(3, v), *b = param_1d(3, v);
    fx_params ps;
    fx_params_init(&ps);
    fx_params_add(&ps, "layer.a", a);
    fx_params_add(&ps, "layer.b", b);
    /* Clipping on: the check must come before any in-place clipping too. */
    fx_optim *o = fx_optim_create(FX_OPT_ADAM,
                                  &(fx_optim_hparams){ .lr = 0.1, .clip_value = 0.25,
                                                       .clip_norm = 0.1 },
                                  &ps);
    assert_non_null(o);
    for (int r = 0; r < 2; r++) {
        bad[1] = r ? -INFINITY : NAN;
        set_grad(a, good); /* a comes first: it must not be updated either */
        set_grad(b, bad);
        assert_int_equal(fx_optim_step(o), FX_ERR_VALUE);
        assert_non_null(strstr(fx_optim_error(o), "layer.b"));
        assert_non_null(strstr(fx_optim_error(o), "non-finite"));
        assert_int_equal(fx_optim_steps(o), 0);
        float got[3];
        get(a, got);
        assert_memory_equal(got, v, sizeof v);
        get(b, got);
        assert_memory_equal(got, v, sizeof v);
        get(a->grad, got); /* not clipped */
        assert_memory_equal(got, good, sizeof good);
        fx_params st;
        fx_params_init(&st);
        assert_int_equal(fx_optim_state(o, &st), FX_OK);
        for (int j = 0; j < st.count; j++) {
            get(st.items[j].tensor, got);
            for (int i = 0; i < 3; i++)
                assert_true(got[i] == 0.0f);
        }
        fx_params_clear(&st);
    }
    /* A good step afterwards works and clears the error. */
    set_grad(b, good);
    assert_int_equal(fx_optim_step(o), FX_OK);
    assert_string_equal(fx_optim_error(o), "");
    assert_int_equal(fx_optim_steps(o), 1);
    fx_optim_free(o);
    fx_params_clear(&ps);
    fx_tensor_free(a);
    fx_tensor_free(b);
}

/* -------------------------------------------------- bad hyper-parameters */

static void expect_rejected(fx_optim_kind k, fx_optim_hparams h, const char *word,
                            const fx_params *ps)
{
    fx_optim *o = fx_optim_create(k, &h, ps);
    if (o)
        fail_msg("%s: expected rejection mentioning '%s'", fx_optim_kind_name(k), word);
    const char *e = fx_optim_last_create_error();
    if (!strstr(e, word))
        fail_msg("error '%s' does not mention '%s'", e, word);
}

static void test_bad_hparams(void **state)
{
    (void)state;
    const float v[2] = { 1, 2 };
    fx_tensor *p = param_1d(2, v);
    fx_params ps;
    fx_params_init(&ps);
    fx_params_add(&ps, "p", p);
    typedef fx_optim_hparams H;
    expect_rejected(FX_OPT_SGD, (H){ 0 }, "lr", &ps);
    expect_rejected(FX_OPT_ADAM, (H){ .lr = -1e-3 }, "lr", &ps);
    expect_rejected(FX_OPT_ADAM, (H){ .lr = NAN }, "lr", &ps);
    expect_rejected(FX_OPT_SGD, (H){ .lr = INFINITY }, "lr", &ps);
    expect_rejected(FX_OPT_ADAM, (H){ .lr = 1e-3, .beta1 = 1.0 }, "beta1", &ps);
    expect_rejected(FX_OPT_ADAM, (H){ .lr = 1e-3, .beta1 = -0.1 }, "beta1", &ps);
    expect_rejected(FX_OPT_ADAMW, (H){ .lr = 1e-3, .beta2 = 1.5 }, "beta2", &ps);
    expect_rejected(FX_OPT_MOMENTUM, (H){ .lr = 0.1, .momentum = -0.5 }, "momentum", &ps);
    expect_rejected(FX_OPT_NESTEROV, (H){ .lr = 0.1, .momentum = 1.0 }, "momentum", &ps);
    expect_rejected(FX_OPT_RMSPROP, (H){ .lr = 0.1, .alpha = 1.0 }, "alpha", &ps);
    expect_rejected(FX_OPT_ADADELTA, (H){ .rho = 2.0 }, "rho", &ps);
    expect_rejected(FX_OPT_ADAM, (H){ .lr = 0.1, .eps = -1e-8 }, "eps", &ps);
    expect_rejected(FX_OPT_SGD, (H){ .lr = 0.1, .weight_decay = -0.1 }, "weight_decay", &ps);
    expect_rejected(FX_OPT_SGD, (H){ .lr = 0.1, .clip_value = -1 }, "clip_value", &ps);
    expect_rejected(FX_OPT_SGD, (H){ .lr = 0.1, .clip_norm = NAN }, "clip_norm", &ps);
    expect_rejected(FX_OPT_ADAMW, (H){ .lr = 2, .weight_decay = 0.5 }, "weight_decay", &ps);
    expect_rejected(FX_OPT_SGD, (H){ .lr = 0.1, .schedule = { .kind = 7 } }, "schedule", &ps);
    expect_rejected(FX_OPT_SGD, (H){ .lr = 0.1, .schedule = { .warmup_steps = -1 } },
                    "warmup_steps", &ps);
    expect_rejected(FX_OPT_SGD, (H){ .lr = 0.1, .schedule = { .kind = FX_SCHED_STEP } },
                    "step_size", &ps);
    expect_rejected(FX_OPT_SGD,
                    (H){ .lr = 0.1, .schedule = { .kind = FX_SCHED_STEP, .step_size = 2,
                                                  .gamma = -0.5 } },
                    "gamma", &ps);
    expect_rejected(FX_OPT_SGD,
                    (H){ .lr = 0.1, .schedule = { .kind = FX_SCHED_COSINE, .total_steps = 5,
                                                  .warmup_steps = 5 } },
                    "total_steps", &ps);
    expect_rejected(FX_OPT_SGD,
                    (H){ .lr = 0.1, .schedule = { .kind = FX_SCHED_COSINE, .total_steps = 5,
                                                  .min_lr = 0.2 } },
                    "min_lr", &ps);
    expect_rejected(FX_OPT_COUNT, (H){ .lr = 0.1 }, "kind", &ps);
    assert_null(fx_optim_create(FX_OPT_SGD, NULL, &ps));
    assert_null(fx_optim_create(FX_OPT_SGD, &(H){ .lr = 0.1 }, NULL));

    /* A parameter that is not persistent (an arena tensor) is refused. */
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_params bad;
    fx_params_init(&bad);
    fx_params_add(&bad, "tmp", fx_zeros(ctx, FX_F32, 1, TU_SHAPE(2)));
    expect_rejected(FX_OPT_SGD, (H){ .lr = 0.1 }, "tmp", &bad);
    fx_params_clear(&bad);
    fx_ctx_free(ctx);

    /* AdaDelta's lr defaults to 1; success clears the last error. */
    fx_optim *o = fx_optim_create(FX_OPT_ADADELTA, &(H){ 0 }, &ps);
    assert_non_null(o);
    assert_string_equal(fx_optim_last_create_error(), "");
    assert_true(fx_optim_lr(o) == 1.0);
    fx_optim_free(o);

    /* NULL optimizers are harmless. */
    assert_int_equal(fx_optim_step(NULL), FX_ERR_ARG);
    fx_optim_zero_grad(NULL);
    fx_optim_free(NULL);
    fx_params_clear(&ps);
    fx_tensor_free(p);
}

/* ---------------------------------------------------- state and params */

/* Looks up a state tensor by name and checks its shape. */
static void expect_state(const fx_params *st, const char *name, int ndim, const int64_t *shape)
{
    fx_tensor *t = fx_params_find(st, name);
    if (!t)
        fail_msg("no state tensor '%s'", name);
    assert_int_equal(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        assert_int_equal(t->shape[d], shape[d]);
    assert_int_equal(t->dtype, FX_F32);
    assert_int_equal(t->device.type, FX_DEV_CPU);
}

static int state_count(fx_optim_kind k, const fx_optim_hparams *h, fx_params *ps)
{
    fx_optim *o = fx_optim_create(k, h, ps);
    assert_non_null(o);
    fx_params st;
    fx_params_init(&st);
    assert_int_equal(fx_optim_state(o, &st), FX_OK);
    int n = st.count;
    fx_params_clear(&st);
    fx_optim_free(o);
    return n;
}

static void test_state_names(void **state)
{
    (void)state;
    fx_tensor *w = fx_tensor_create(fx_cpu(), FX_F32, 2, TU_SHAPE(3, 2));
    fx_tensor *b = fx_tensor_create(fx_cpu(), FX_F32, 1, TU_SHAPE(3));
    fx_tensor *frozen = fx_tensor_create(fx_cpu(), FX_F32, 1, TU_SHAPE(4));
    fx_tensor_set_requires_grad(w, true);
    fx_tensor_set_requires_grad(b, true);
    fx_params ps;
    fx_params_init(&ps);
    fx_params_add(&ps, "fc1.weight", w);
    fx_params_add(&ps, "fc1.bias", b);
    fx_params_add(&ps, "frozen", frozen);

    fx_optim *o = fx_optim_create(FX_OPT_ADAM, &(fx_optim_hparams){ .lr = 1e-3 }, &ps);
    assert_non_null(o);
    fx_params st;
    fx_params_init(&st);
    assert_int_equal(fx_optim_state(o, &st), FX_OK);
    assert_int_equal(st.count, 4);
    expect_state(&st, "fc1.weight.m", 2, TU_SHAPE(3, 2));
    expect_state(&st, "fc1.weight.v", 2, TU_SHAPE(3, 2));
    expect_state(&st, "fc1.bias.m", 1, TU_SHAPE(3));
    expect_state(&st, "fc1.bias.v", 1, TU_SHAPE(3));
    assert_null(fx_params_find(&st, "frozen.m"));
    fx_params_clear(&st);

    /* A parameter that starts requiring grad later gets state at its first
     * step; until then the step skips it. */
    float ones[4] = { 1, 1, 1, 1 }, got[4];
    fx_tensor_set_requires_grad(frozen, true);
    set_grad(frozen, ones);
    fx_tensor_set_requires_grad(frozen, false); /* grad kept, flag off: skipped */
    assert_int_equal(fx_optim_step(o), FX_OK);
    get(frozen, got);
    assert_true(got[0] == 0.0f);
    fx_tensor_set_requires_grad(frozen, true);
    assert_int_equal(fx_optim_step(o), FX_OK);
    get(frozen, got);
    assert_true(got[0] < 0.0f);
    fx_params_init(&st);
    assert_int_equal(fx_optim_state(o, &st), FX_OK);
    assert_int_equal(st.count, 6);
    expect_state(&st, "frozen.m", 1, TU_SHAPE(4));
    expect_state(&st, "frozen.v", 1, TU_SHAPE(4));
    fx_params_clear(&st);

    /* zero_grad zeroes every gradient. */
    fx_optim_zero_grad(o);
    get(frozen->grad, got);
    for (int i = 0; i < 4; i++)
        assert_true(got[i] == 0.0f);
    fx_optim_free(o);

    /* Slots per kind (3 parameters requiring grad now). */
    assert_int_equal(state_count(FX_OPT_SGD, &(fx_optim_hparams){ .lr = 1 }, &ps), 0);
    assert_int_equal(state_count(FX_OPT_MOMENTUM, &(fx_optim_hparams){ .lr = 1 }, &ps), 3);
    assert_int_equal(state_count(FX_OPT_NESTEROV, &(fx_optim_hparams){ .lr = 1 }, &ps), 3);
    assert_int_equal(state_count(FX_OPT_RMSPROP, &(fx_optim_hparams){ .lr = 1 }, &ps), 3);
    assert_int_equal(state_count(FX_OPT_RMSPROP,
                                 &(fx_optim_hparams){ .lr = 1, .momentum = 0.5 }, &ps), 6);
    assert_int_equal(state_count(FX_OPT_ADAGRAD, &(fx_optim_hparams){ .lr = 1 }, &ps), 3);
    assert_int_equal(state_count(FX_OPT_ADADELTA, &(fx_optim_hparams){ .lr = 1 }, &ps), 6);
    assert_int_equal(state_count(FX_OPT_ADAMW, &(fx_optim_hparams){ .lr = 1e-3 }, &ps), 6);
    o = fx_optim_create(FX_OPT_RMSPROP, &(fx_optim_hparams){ .lr = 1, .momentum = 0.5 }, &ps);
    fx_params_init(&st);
    fx_optim_state(o, &st);
    expect_state(&st, "fc1.weight.square_avg", 2, TU_SHAPE(3, 2));
    expect_state(&st, "fc1.weight.momentum", 2, TU_SHAPE(3, 2));
    fx_params_clear(&st);
    fx_optim_free(o);
    o = fx_optim_create(FX_OPT_ADADELTA, &(fx_optim_hparams){ 0 }, &ps);
    fx_params_init(&st);
    fx_optim_state(o, &st);
    expect_state(&st, "fc1.bias.square_avg", 1, TU_SHAPE(3));
    expect_state(&st, "fc1.bias.acc_delta", 1, TU_SHAPE(3));
    fx_params_clear(&st);
    fx_optim_free(o);

    fx_params_clear(&ps);
    fx_tensor_free(w);
    fx_tensor_free(b);
    fx_tensor_free(frozen);
}

/* A tied tensor listed under two names is updated once per step; a
 * parameter whose grad is NULL is skipped. */
static void test_tied_and_gradless(void **state)
{
    (void)state;
    const float v[2] = { 1, 1 }, g[2] = { 1, 2 };
    fx_tensor *t = param_1d(2, v), *q = param_1d(2, v);
    fx_tensor_free(q->grad); /* requires grad but has no gradient */
    q->grad = NULL;
    fx_params ps;
    fx_params_init(&ps);
    fx_params_add(&ps, "enc.embed", t);
    fx_params_add(&ps, "dec.embed", t);
    fx_params_add(&ps, "q", q);
    fx_optim *o = fx_optim_create(FX_OPT_SGD, &(fx_optim_hparams){ .lr = 0.5 }, &ps);
    assert_non_null(o);
    set_grad(t, g);
    assert_int_equal(fx_optim_step(o), FX_OK);
    float got[2];
    get(t, got);
    assert_true(fabsf(got[0] - 0.5f) < 1e-7f && fabsf(got[1] - 0.0f) < 1e-7f);
    get(q, got);
    assert_memory_equal(got, v, sizeof v);
    assert_true(fabs(fx_optim_last_grad_norm(o) - sqrt(5.0)) < 1e-6);
    fx_optim_free(o);
    fx_params_clear(&ps);
    fx_tensor_free(t);
    fx_tensor_free(q);
}

static void test_kind_names(void **state)
{
    (void)state;
    const char *want[] = { "sgd", "momentum", "nesterov", "rmsprop",
                           "adagrad", "adadelta", "adam", "adamw" };
    for (int k = 0; k < FX_OPT_COUNT; k++)
        assert_string_equal(fx_optim_kind_name((fx_optim_kind)k), want[k]);
    assert_string_equal(fx_optim_kind_name(FX_OPT_COUNT), "unknown");
}

/* ------------------------------------------------------- gradient noise */

enum { NOISE_N = 20000 };

/* The noise SGD with lr 1 adds at step t to a fixed gradient of 0.25 on a
 * parameter of NOISE_N zeros: noise = -(p + g) after the step. */
static void noise_at(const fx_optim_hparams *h, int64_t t, float *noise)
{
    static float g[NOISE_N], z[NOISE_N];
    for (int i = 0; i < NOISE_N; i++)
        g[i] = 0.25f;
    fx_tensor *p = param_1d(NOISE_N, z);
    set_grad(p, g);
    fx_params ps;
    fx_params_init(&ps);
    fx_params_add(&ps, "p", p);
    fx_optim_hparams hh = *h;
    hh.lr = 1;
    fx_optim *o = fx_optim_create(FX_OPT_SGD, &hh, &ps);
    assert_non_null(o);
    fx_optim_set_steps(o, t);
    assert_int_equal(fx_optim_step(o), FX_OK);
    get(p, noise);
    for (int i = 0; i < NOISE_N; i++)
        noise[i] = -noise[i] - 0.25f;
    fx_optim_free(o);
    fx_params_clear(&ps);
    fx_tensor_free(p);
}

/* Step t's noise has mean 0 and variance eta / (1 + t)^gamma. For n iid
 * N(0, s^2) draws the sample mean has standard deviation s / sqrt(n) and
 * the sample variance's ratio to s^2 has sqrt(2 / (n - 1)) (chi-square
 * with n - 1 degrees of freedom), so 6 of those (a false alarm about once
 * in 5e8 runs) bound a correct implementation, while a wrong exponent (the
 * variance off by (1 + t)^0.05 = 26% at t = 99, or sigma used as the
 * variance) is far outside. The noise is reproducible from (seed, t) alone
 * (a resumed optimizer draws the same), another seed draws another. */
static void test_gradient_noise_annealing(void **state)
{
    (void)state;
    static float n1[NOISE_N], n2[NOISE_N];
    const fx_optim_hparams h = { .noise_eta = 0.3, .noise_gamma = 0.55, .noise_seed = 11 };
    const int64_t steps[] = { 0, 1, 9, 99, 9999 };
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        int64_t t = steps[k];
        double var = 0.3 / pow(1.0 + (double)t, 0.55);
        assert_true(fabs(fx_optim_noise_sigma(&h, t) - sqrt(var)) <= 1e-15);
        noise_at(&h, t, n1);
        double sum = 0, sq = 0;
        for (int i = 0; i < NOISE_N; i++)
            sum += n1[i];
        double mean = sum / NOISE_N;
        for (int i = 0; i < NOISE_N; i++)
            sq += (n1[i] - mean) * (n1[i] - mean);
        double ratio = sq / (NOISE_N - 1) / var;
        if (!(fabs(mean) <= 6 * sqrt(var / NOISE_N)) ||
            !(fabs(ratio - 1) <= 6 * sqrt(2.0 / (NOISE_N - 1))))
            fail_msg("step %lld: mean %g, variance %g, want 0 and %g", (long long)t, mean,
                     sq / (NOISE_N - 1), var);
        /* the same (seed, step): the same draws, bit for bit */
        noise_at(&h, t, n2);
        assert_memory_equal(n1, n2, sizeof n1);
    }
    fx_optim_hparams other = h;
    other.noise_seed = 12;
    noise_at(&h, 5, n1);
    noise_at(&other, 5, n2);
    assert_memory_not_equal(n1, n2, sizeof n1);
    /* gamma 0 is the paper's 0.55 */
    other = h;
    other.noise_gamma = 0;
    assert_true(fx_optim_noise_sigma(&other, 99) == fx_optim_noise_sigma(&h, 99));
}

/* noise_eta 0 is no noise, bit for bit, whatever the other noise fields
 * (Adam with clipping, several steps); a negative eta or gamma is
 * rejected. */
static void test_gradient_noise_off(void **state)
{
    (void)state;
    float v[64], g[64], a[64], b[64];
    for (int i = 0; i < 64; i++) {
        v[i] = (float)sin(i);
        g[i] = (float)grad_value(i, 1);
    }
    for (int run = 0; run < 2; run++) {
        fx_tensor *p = param_1d(64, v);
        fx_params ps;
        fx_params_init(&ps);
        fx_params_add(&ps, "p", p);
        fx_optim_hparams h = { .lr = 0.01, .clip_norm = 0.5 };
        if (run) {
            h.noise_gamma = 0.7;
            h.noise_seed = 99;
        }
        fx_optim *o = fx_optim_create(FX_OPT_ADAM, &h, &ps);
        assert_non_null(o);
        for (int s = 0; s < 5; s++) {
            set_grad(p, g);
            assert_int_equal(fx_optim_step(o), FX_OK);
        }
        get(p, run ? b : a);
        fx_optim_free(o);
        fx_params_clear(&ps);
        fx_tensor_free(p);
    }
    assert_memory_equal(a, b, sizeof a);
    fx_params empty;
    fx_params_init(&empty);
    expect_rejected(FX_OPT_SGD, (fx_optim_hparams){ .lr = 1, .noise_eta = -1 }, "noise_eta",
                    &empty);
    expect_rejected(FX_OPT_SGD, (fx_optim_hparams){ .lr = 1, .noise_eta = 1, .noise_gamma = -2 },
                    "noise_gamma", &empty);
    expect_rejected(FX_OPT_SGD, (fx_optim_hparams){ .lr = 1, .noise_eta = INFINITY },
                    "noise_eta", &empty);
}

/* ------------------------------------------------------- no allocation */

/* After a warm-up step, steps of every kind (clipping on, both threads
 * paths) allocate nothing. */
static void test_step_allocates_nothing(void **state)
{
    (void)state;
#if TU_ALLOC_HOOKS
    int old = fx_get_num_threads();
    fx_set_num_threads(2);
    int64_t n = 40000;
    float *g = malloc((size_t)n * sizeof *g);
    for (int64_t i = 0; i < n; i++)
        g[i] = (float)grad_value(i, 1);
    fx_tensor *big = param_1d(n, g), *small = param_1d(5, g);
    set_grad(big, g);
    set_grad(small, g);
    fx_params ps;
    fx_params_init(&ps);
    fx_params_add(&ps, "big", big);
    fx_params_add(&ps, "small", small);
    for (int k = 0; k < FX_OPT_COUNT; k++) {
        fx_optim_hparams h = { .lr = 1e-3, .momentum = k == FX_OPT_RMSPROP ? 0.5 : 0,
                               .clip_value = 1.0, .clip_norm = 10.0,
                               .schedule = { .kind = FX_SCHED_COSINE, .total_steps = 10 } };
        fx_optim *o = fx_optim_create((fx_optim_kind)k, &h, &ps);
        assert_non_null(o);
        assert_int_equal(fx_optim_step(o), FX_OK); /* warm-up (thread pool) */
        tu_alloc_count_start();
        for (int r = 0; r < 3; r++)
            assert_int_equal(fx_optim_step(o), FX_OK);
        fx_optim_zero_grad(o);
        long n = tu_alloc_count_stop();
        /* Note: libgomp allocates a team for every OpenMP region it enters,
         * even one whose if-clause is false, so a kernel must not enter a
         * region for a small tensor (see cpu_optim_step). */
        if (n != 0)
            fail_msg("%s: %ld allocations in 3 steps", fx_optim_kind_name((fx_optim_kind)k), n);
        fx_optim_free(o);
    }
    fx_params_clear(&ps);
    fx_tensor_free(big);
    fx_tensor_free(small);
    free(g);
    fx_set_num_threads(old);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds_match_reference),
        cmocka_unit_test(test_kinds_match_reference_large),
        cmocka_unit_test(test_minimise_quadratic),
        cmocka_unit_test(test_weight_decay),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_schedule_in_optimizer),
        cmocka_unit_test(test_nonfinite_gradient),
        cmocka_unit_test(test_bad_hparams),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_tied_and_gradless),
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_step_allocates_nothing),
        cmocka_unit_test(test_gradient_noise_annealing),
        cmocka_unit_test(test_gradient_noise_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
