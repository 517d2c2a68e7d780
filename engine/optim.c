/*
 * optim.c - optimizers: hyper-parameter defaults and checks, persistent
 * state, gradient checks and clipping, learning-rate schedules.
 *
 * The arithmetic of an update lives in the backend (be->optim->step, see
 * engine/cpu/optim.c); this file decides what to update and with which
 * coefficients. A step is two passes over the parameters:
 *   1. validate every gradient and sum its squares (red->sum_squares): a
 *      non-finite gradient stops the step before anything is written;
 *   2. clip (ew->unary CLAMP / SCALE, in place on the gradients) and update.
 * State tensors are made when the optimizer is created (or, for a parameter
 * that starts requiring grad later, at its first step), so a steady-state
 * step allocates nothing.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One parameter and its state slots (NULL when the kind needs fewer). */
typedef struct {
    char *name;
    fx_tensor *p;
    fx_tensor *state[2];
} optim_param;

struct fx_optim {
    fx_optim_kind kind;
    fx_optim_hparams h; /* defaults resolved */
    optim_param *params;
    int nparams;
    int64_t steps;
    double last_norm;
    fx_rng *noise_rng; /* reseeded at every step from (noise_seed, step) */
    float *noise_buf;  /* one gradient, host side */
    size_t noise_cap;
    char err[512];
};

/* Why the last fx_optim_create of this thread failed. */
static _Thread_local char create_err[512];

const char *fx_optim_last_create_error(void) { return create_err; }

const char *fx_optim_kind_name(fx_optim_kind k)
{
    static const char *names[FX_OPT_COUNT] = { "sgd",     "momentum", "nesterov", "rmsprop",
                                               "adagrad", "adadelta", "adam",     "adamw" };
    return (unsigned)k < FX_OPT_COUNT ? names[k] : "unknown";
}

/* The state slot names of a kind (suffixes of "<param>.<slot>"); returns how
 * many there are (0..2). RMSprop keeps a momentum buffer only when asked. */
static int slot_names(fx_optim_kind k, const fx_optim_hparams *h, const char *names[2])
{
    switch (k) {
    case FX_OPT_MOMENTUM:
    case FX_OPT_NESTEROV:
        names[0] = "momentum";
        return 1;
    case FX_OPT_RMSPROP:
        names[0] = "square_avg";
        names[1] = "momentum";
        return h->momentum > 0 ? 2 : 1;
    case FX_OPT_ADAGRAD:
        names[0] = "sum";
        return 1;
    case FX_OPT_ADADELTA:
        names[0] = "square_avg";
        names[1] = "acc_delta";
        return 2;
    case FX_OPT_ADAM:
    case FX_OPT_ADAMW:
        names[0] = "m";
        names[1] = "v";
        return 2;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------- schedules */

/* Linear warmup over the first warmup_steps steps (step s gives
 * base * (s + 1) / warmup), then the schedule proper on t = s - warmup:
 * CONSTANT base; STEP base * gamma^floor(t / step_size); COSINE
 * min + (base - min) * (1 + cos(pi * t / T)) / 2 with T = total - warmup and
 * t clamped to T, so the rate reaches min_lr at step total_steps. This is
 * PyTorch's SequentialLR([LinearLR, StepLR | CosineAnnealingLR]). */
double fx_schedule_lr(const fx_schedule *s, double base_lr, int64_t step)
{
    if (!s)
        return base_lr;
    if (step < 0)
        step = 0;
    if (s->warmup_steps > 0 && step < s->warmup_steps)
        return base_lr * (double)(step + 1) / (double)s->warmup_steps;
    int64_t t = step - (s->warmup_steps > 0 ? s->warmup_steps : 0);
    switch (s->kind) {
    case FX_SCHED_STEP: {
        if (s->step_size <= 0)
            return base_lr;
        double gamma = s->gamma != 0 ? s->gamma : 0.1;
        return base_lr * pow(gamma, (double)(t / s->step_size));
    }
    case FX_SCHED_COSINE: {
        int64_t T = s->total_steps - (s->warmup_steps > 0 ? s->warmup_steps : 0);
        if (T <= 0 || t >= T)
            return s->min_lr;
        return s->min_lr + (base_lr - s->min_lr) * (1.0 + cos(M_PI * (double)t / (double)T)) / 2.0;
    }
    default:
        return base_lr;
    }
}

/* -------------------------------------------------------------- creation */

/* Records why creation failed (printf-style); returns false. */
static bool create_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool create_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(create_err, sizeof create_err, fmt, ap);
    va_end(ap);
    return false;
}

/* Checks lo <= v < hi (or <= hi when hi_incl) and that v is finite. */
static bool check_range(fx_optim_kind k, const char *what, double v, double lo, double hi,
                        bool hi_incl)
{
    if (isfinite(v) && v >= lo && (hi_incl ? v <= hi : v < hi))
        return true;
    if (isinf(hi))
        return create_fail("%s: %s must be a finite value >= %g, got %g", fx_optim_kind_name(k),
                           what, lo, v);
    return create_fail("%s: %s must be in [%g, %g%c, got %g", fx_optim_kind_name(k), what, lo,
                       hi, hi_incl ? ']' : ')', v);
}

/* Fills the documented defaults into zero fields and validates every
 * hyper-parameter; false (with create_err set) on a bad one. */
static bool resolve_hparams(fx_optim_kind k, fx_optim_hparams *h)
{
    if (h->lr == 0 && k == FX_OPT_ADADELTA)
        h->lr = 1.0;
    if (h->momentum == 0 && (k == FX_OPT_MOMENTUM || k == FX_OPT_NESTEROV))
        h->momentum = 0.9;
    if (h->beta1 == 0)
        h->beta1 = 0.9;
    if (h->beta2 == 0)
        h->beta2 = 0.999;
    if (h->eps == 0)
        h->eps = k == FX_OPT_ADAGRAD ? 1e-10 : k == FX_OPT_ADADELTA ? 1e-6 : 1e-8;
    if (h->alpha == 0)
        h->alpha = 0.99;
    if (h->rho == 0)
        h->rho = 0.9;
    if (h->weight_decay == 0 && k == FX_OPT_ADAMW)
        h->weight_decay = 0.01;
    if (h->schedule.kind == FX_SCHED_STEP && h->schedule.gamma == 0)
        h->schedule.gamma = 0.1;
    if (h->noise_gamma == 0)
        h->noise_gamma = 0.55;

    const double inf = INFINITY;
    if (!(isfinite(h->lr) && h->lr > 0))
        return create_fail("%s: lr must be a finite value > 0, got %g", fx_optim_kind_name(k),
                           h->lr);
    if (!check_range(k, "momentum", h->momentum, 0, 1, false) ||
        !check_range(k, "beta1", h->beta1, 0, 1, false) ||
        !check_range(k, "beta2", h->beta2, 0, 1, false) ||
        !check_range(k, "alpha", h->alpha, 0, 1, false) ||
        !check_range(k, "rho", h->rho, 0, 1, false) ||
        !check_range(k, "weight_decay", h->weight_decay, 0, inf, false) ||
        !check_range(k, "clip_value", h->clip_value, 0, inf, false) ||
        !check_range(k, "clip_norm", h->clip_norm, 0, inf, false) ||
        !check_range(k, "noise_eta", h->noise_eta, 0, inf, false) ||
        !check_range(k, "noise_gamma", h->noise_gamma, 0, inf, false))
        return false;
    if (!(isfinite(h->eps) && h->eps > 0))
        return create_fail("%s: eps must be a finite value > 0, got %g", fx_optim_kind_name(k),
                           h->eps);
    if (k == FX_OPT_ADAMW && h->lr * h->weight_decay >= 1)
        return create_fail("adamw: lr * weight_decay must be < 1, got %g * %g", h->lr,
                           h->weight_decay);

    const fx_schedule *s = &h->schedule;
    if ((unsigned)s->kind >= FX_SCHED_COUNT)
        return create_fail("%s: unknown schedule kind %d", fx_optim_kind_name(k), (int)s->kind);
    if (s->warmup_steps < 0)
        return create_fail("%s: schedule warmup_steps must be >= 0, got %lld",
                           fx_optim_kind_name(k), (long long)s->warmup_steps);
    if (s->kind == FX_SCHED_STEP) {
        if (s->step_size <= 0)
            return create_fail("%s: step schedule needs step_size > 0, got %lld",
                               fx_optim_kind_name(k), (long long)s->step_size);
        if (!check_range(k, "schedule gamma", s->gamma, 0, inf, false)) /* 0 became 0.1 */
            return false;
    }
    if (s->kind == FX_SCHED_COSINE) {
        if (s->total_steps <= s->warmup_steps)
            return create_fail("%s: cosine schedule needs total_steps > warmup_steps, got "
                               "%lld and %lld", fx_optim_kind_name(k),
                               (long long)s->total_steps, (long long)s->warmup_steps);
        if (!check_range(k, "schedule min_lr", s->min_lr, 0, h->lr, true))
            return false;
    }
    return true;
}

/* Makes the zeroed state slots of one parameter on its device. */
static fx_status make_state(const fx_optim *o, optim_param *e)
{
    const char *names[2];
    int ns = slot_names(o->kind, &o->h, names);
    for (int j = 0; j < ns; j++) {
        if (e->state[j])
            continue;
        e->state[j] = fx_tensor_create(e->p->device, FX_F32, e->p->ndim, e->p->shape);
        if (!e->state[j])
            return FX_ERR_NOMEM;
    }
    return FX_OK;
}

void fx_optim_free(fx_optim *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->nparams; i++) {
        free(o->params[i].name);
        fx_tensor_free(o->params[i].state[0]);
        fx_tensor_free(o->params[i].state[1]);
    }
    free(o->params);
    fx_rng_free(o->noise_rng);
    free(o->noise_buf);
    free(o);
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Keeps the params' tensors (each once, in order) and makes the state of
 * those that require grad now. */
fx_optim *fx_optim_create(fx_optim_kind kind, const fx_optim_hparams *h, const fx_params *params)
{
    create_err[0] = '\0';
    if ((unsigned)kind >= FX_OPT_COUNT) {
        create_fail("optim: unknown optimizer kind %d", (int)kind);
        return NULL;
    }
    if (!h || !params || params->count < 0 || (params->count && !params->items)) {
        create_fail("%s: hyper-parameters and params must not be NULL", fx_optim_kind_name(kind));
        return NULL;
    }
    fx_optim_hparams hp = *h;
    if (!resolve_hparams(kind, &hp))
        return NULL;
    for (int i = 0; i < params->count; i++) {
        const fx_named_tensor *it = &params->items[i];
        const char *nm = it->name ? it->name : "?";
        if (!it->tensor) {
            create_fail("%s: parameter %d ('%s') is NULL", fx_optim_kind_name(kind), i, nm);
            return NULL;
        }
        if (!(it->tensor->flags & FX_TENSOR_PERSISTENT) || !fx_tensor_is_contiguous(it->tensor)) {
            create_fail("%s: parameter '%s' must be a persistent tensor (fx_tensor_create)",
                        fx_optim_kind_name(kind), nm);
            return NULL;
        }
    }

    fx_optim *o = calloc(1, sizeof *o);
    if (!o || !(o->params = calloc((size_t)(params->count ? params->count : 1),
                                   sizeof *o->params))) {
        free(o);
        create_fail("%s: out of memory", fx_optim_kind_name(kind));
        return NULL;
    }
    o->kind = kind;
    o->h = hp;
    for (int i = 0; i < params->count; i++) {
        const fx_named_tensor *it = &params->items[i];
        bool dup = false; /* a tied weight listed twice is updated once */
        for (int j = 0; j < o->nparams && !dup; j++)
            dup = o->params[j].p == it->tensor;
        if (dup)
            continue;
        optim_param *e = &o->params[o->nparams++];
        e->p = it->tensor;
        e->name = dup_str(it->name ? it->name : "");
        if (!e->name ||
            (fx_tensor_requires_grad(e->p) && e->p->dtype == FX_F32 && make_state(o, e) != FX_OK)) {
            fx_optim_free(o);
            create_fail("%s: out of memory for optimizer state", fx_optim_kind_name(kind));
            return NULL;
        }
    }
    return o;
}

/* ------------------------------------------------------------------ steps */

/* Records "kind: message" as the optimizer's error and returns s. */
static fx_status step_fail(fx_optim *o, fx_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static fx_status step_fail(fx_optim *o, fx_status s, const char *fmt, ...)
{
    int k = snprintf(o->err, sizeof o->err, "%s: ", fx_optim_kind_name(o->kind));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->err + k, sizeof o->err - (size_t)k, fmt, ap);
    va_end(ap);
    return s;
}

/* True for a parameter the step updates: it requires grad and has one. */
static bool is_active(const optim_param *e)
{
    return fx_tensor_requires_grad(e->p) && e->p->grad && e->p->dtype == FX_F32;
}

/* Sum of squares of every active gradient (one pass, in double). */
static double grad_sum_squares(const fx_optim *o)
{
    double total = 0;
    for (int i = 0; i < o->nparams; i++)
        if (is_active(&o->params[i]))
            total += fx_be(o->params[i].p)->red->sum_squares(o->params[i].p->grad);
    return total;
}

/* Pass 1: checks that every active gradient fits its parameter, that the
 * kernels exist, that the state is there (made now for a parameter that
 * started requiring grad after creation) and that every gradient is finite;
 * stores the global norm. Writes nothing the user sees on failure. */
static fx_status check_grads(fx_optim *o)
{
    const bool clip = o->h.clip_value > 0 || o->h.clip_norm > 0;
    double total = 0;
    for (int i = 0; i < o->nparams; i++) {
        optim_param *e = &o->params[i];
        if (!is_active(e))
            continue;
        const fx_tensor *g = e->p->grad;
        char b1[96], b2[96];
        if (g->dtype != FX_F32 || !fx_tensor_same_shape(g, e->p) ||
            !fx_tensor_is_contiguous(g) || g->device.type != e->p->device.type ||
            g->device.index != e->p->device.index)
            return step_fail(o, FX_ERR_SHAPE, "the gradient of '%s' (%s %s) does not fit the "
                             "parameter (f32 %s, contiguous, same device)", e->name,
                             fx_dtype_name(g->dtype), fx_shape_str(g, b1, sizeof b1),
                             fx_shape_str(e->p, b2, sizeof b2));
        const fx_backend *be = fx_be(e->p);
        if (!be->red->sum_squares || !be->optim->step || (clip && !be->ew->unary))
            return step_fail(o, FX_ERR_DEVICE, "the %s backend lacks a kernel the step needs "
                             "(sum_squares, optim step or unary)", be->name);
        if (make_state(o, e) != FX_OK)
            return step_fail(o, FX_ERR_NOMEM, "out of memory for the state of '%s'", e->name);
        double ss = be->red->sum_squares(g);
        if (!isfinite(ss)) {
            long long bad = be->red->count_nonfinite ? (long long)be->red->count_nonfinite(g) : -1;
            return step_fail(o, FX_ERR_VALUE, "the gradient of '%s' %s has %lld non-finite "
                             "value(s); no parameter was changed", e->name,
                             fx_shape_str(g, b1, sizeof b1), bad);
        }
        total += ss;
    }
    o->last_norm = sqrt(total);
    return FX_OK;
}

/* Pass 2a: clips the active gradients in place. Value clipping first, then
 * norm clipping against the norm of the (value-clipped) gradients, with
 * PyTorch's clip_grad_norm_ coefficient c / (norm + 1e-6) when it is < 1. */
static void clip_grads(fx_optim *o)
{
    const double cv = o->h.clip_value, cn = o->h.clip_norm;
    if (cv > 0)
        for (int i = 0; i < o->nparams; i++)
            if (is_active(&o->params[i])) {
                fx_tensor *g = o->params[i].p->grad;
                fx_be(g)->ew->unary(FX_UN_CLAMP, (float)-cv, (float)cv, g, g);
            }
    if (cn > 0) {
        double norm = cv > 0 ? sqrt(grad_sum_squares(o)) : o->last_norm;
        double coef = cn / (norm + 1e-6);
        if (coef < 1)
            for (int i = 0; i < o->nparams; i++)
                if (is_active(&o->params[i])) {
                    fx_tensor *g = o->params[i].p->grad;
                    fx_be(g)->ew->unary(FX_UN_SCALE, (float)coef, 0, g, g);
                }
    }
}

double fx_optim_noise_sigma(const fx_optim_hparams *h, int64_t step)
{
    if (!h || !(h->noise_eta > 0))
        return 0;
    double gamma = h->noise_gamma ? h->noise_gamma : 0.55;
    return sqrt(h->noise_eta / pow(1.0 + (double)(step > 0 ? step : 0), gamma));
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Pass 2b: the step's gradient noise, drawn on the host from a generator
 * seeded by (noise_seed, step) and added to each active gradient in
 * parameter order. Noise is off the fast path by design: it is an option
 * for small, hard-to-train models, where the copies do not matter. */
static fx_status add_noise(fx_optim *o)
{
    double sigma = fx_optim_noise_sigma(&o->h, o->steps);
    if (!(sigma > 0))
        return FX_OK;
    if (!o->noise_rng && !(o->noise_rng = fx_rng_create(0)))
        return step_fail(o, FX_ERR_NOMEM, "out of memory for the gradient noise");
    fx_rng_seed(o->noise_rng, splitmix64(o->h.noise_seed ^ splitmix64((uint64_t)o->steps)));
    for (int i = 0; i < o->nparams; i++) {
        optim_param *e = &o->params[i];
        if (!is_active(e))
            continue;
        fx_tensor *g = e->p->grad;
        size_t n = (size_t)fx_tensor_numel(g);
        if (n > o->noise_cap) {
            float *b = realloc(o->noise_buf, n * sizeof *b);
            if (!b)
                return step_fail(o, FX_ERR_NOMEM, "out of memory for the gradient noise of '%s'",
                                 e->name);
            o->noise_buf = b;
            o->noise_cap = n;
        }
        if (fx_tensor_to_host(g, o->noise_buf, n * sizeof *o->noise_buf) != FX_OK)
            return step_fail(o, FX_ERR_DEVICE, "could not read the gradient of '%s'", e->name);
        for (size_t j = 0; j < n; j++)
            o->noise_buf[j] += (float)(sigma * fx_rng_normal(o->noise_rng));
        if (fx_tensor_copy_from_host(g, o->noise_buf, n * sizeof *o->noise_buf) != FX_OK)
            return step_fail(o, FX_ERR_DEVICE, "could not write the gradient of '%s'", e->name);
    }
    return FX_OK;
}

fx_status fx_optim_step(fx_optim *o)
{
    if (!o)
        return FX_ERR_ARG;
    o->err[0] = '\0';
    fx_status s = check_grads(o);
    if (s != FX_OK)
        return s;
    clip_grads(o);
    if ((s = add_noise(o)) != FX_OK)
        return s;

    const fx_optim_hparams *h = &o->h;
    fx_optim_step_args a = {
        .lr = fx_schedule_lr(&h->schedule, h->lr, o->steps),
        .momentum = h->momentum,
        .beta1 = h->beta1,
        .beta2 = h->beta2,
        .eps = h->eps,
        .alpha = h->alpha,
        .rho = h->rho,
        .weight_decay = h->weight_decay,
    };
    o->steps++;
    /* Bias corrections of step t = 1, 2, ...: 1 - beta^t. */
    a.bias_c1 = 1.0 - pow(h->beta1, (double)o->steps);
    a.bias_c2 = 1.0 - pow(h->beta2, (double)o->steps);
    for (int i = 0; i < o->nparams; i++) {
        optim_param *e = &o->params[i];
        if (is_active(e)) {
            fx_be(e->p)->optim->step(o->kind, &a, e->p, e->p->grad, e->state[0], e->state[1]);
            e->p->storage->version++;
        }
    }
    return FX_OK;
}

void fx_optim_zero_grad(fx_optim *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->nparams; i++)
        if (o->params[i].p->grad)
            fx_tensor_fill(o->params[i].p->grad, 0.0);
}

double fx_optim_lr(const fx_optim *o)
{
    return o ? fx_schedule_lr(&o->h.schedule, o->h.lr, o->steps) : NAN;
}

int64_t fx_optim_steps(const fx_optim *o) { return o ? o->steps : 0; }
double fx_optim_last_grad_norm(const fx_optim *o) { return o ? o->last_norm : NAN; }
const char *fx_optim_error(const fx_optim *o) { return o ? o->err : "optim: NULL optimizer"; }

void fx_optim_set_steps(fx_optim *o, int64_t steps)
{
    if (o)
        o->steps = steps > 0 ? steps : 0;
}

/* Appends "<param>.<slot>" for every state tensor that exists. */
fx_status fx_optim_state(const fx_optim *o, fx_params *out)
{
    if (!o || !out)
        return FX_ERR_ARG;
    const char *names[2];
    int ns = slot_names(o->kind, &o->h, names);
    for (int i = 0; i < o->nparams; i++) {
        const optim_param *e = &o->params[i];
        for (int j = 0; j < ns; j++) {
            if (!e->state[j])
                continue;
            size_t len = strlen(e->name) + strlen(names[j]) + 2;
            char *full = malloc(len);
            if (!full)
                return FX_ERR_NOMEM;
            snprintf(full, len, "%s.%s", e->name, names[j]);
            fx_status s = fx_params_add(out, full, e->state[j]);
            free(full);
            if (s != FX_OK)
                return s;
        }
    }
    return FX_OK;
}
