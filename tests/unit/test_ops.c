/*
 * test_ops.c - runs every row of the op registry (ops_registry.h), case by
 * case:
 *   (a) the forward against the row's double reference, within its fwd
 *       tolerance;
 *   (b) fx_gradcheck of sum(op(inputs) * R), R a fixed random tensor of the
 *       output's shape (so a wrong index in a backward cannot cancel out),
 *       w.r.t. every input and every parameter that takes a gradient;
 *   (c) the cross-backend comparison: the op on the CPU and on another
 *       device from the same inputs and layer (cuda:0 when the CUDA backend
 *       is built and a GPU is present, else the CPU again, so the path runs
 *       everywhere), forward and backward from one seed gradient; outputs,
 *       input gradients, inputs changed in place (running statistics),
 *       parameters and their gradients must agree within the row's xb
 *       tolerance: |other - cpu| <= tol * (1 + |cpu|).
 * One line per row, then a summary with the number of rows.
 *
 * Usage: test_ops [-k NAME] [--xb auto|cpu|cuda] [--xb-only] [--list]
 *   -k NAME     only the row NAME (or, when no row has that name, the rows
 *               whose names contain it)
 *   --xb cuda   the other backend must be cuda:0; without a GPU the run
 *               prints "SKIPPED: ..." and exits 77 (ctest: skipped)
 *   --xb-only   only (c) (the GPU machine's quick check)
 * It runs on one thread unless FX_NUM_THREADS is set.
 */
#include "ops_registry.h"

#ifdef FX_TEST_CUDA
#include "cuda/cuda_api.h"
#endif

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ failures */

/* The first failure of a case, with the case's label. */
typedef struct {
    const or_row *row;
    const or_case *c;
    int ci;
    char msg[1024];
    bool failed;
} checker;

static bool fail(checker *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(checker *k, const char *fmt, ...)
{
    if (k->failed)
        return false;
    k->failed = true;
    int n = snprintf(k->msg, sizeof k->msg, "case %d (%s): ", k->ci,
                     k->c->label ? k->c->label : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->msg + n, sizeof k->msg - (size_t)n, fmt, ap);
    va_end(ap);
    return false;
}

/* ---------------------------------------------------------- the inputs */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static fx_tensor *make_input(const or_fill *f, const or_shape *s, fx_rng *rng, bool grad)
{
    fx_tensor *t = fx_tensor_create(fx_cpu(), FX_F32, s->ndim, s->shape);
    if (!t)
        return NULL;
    int64_t n = fx_tensor_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    double a = f->a, b = f->b;
    for (int64_t i = 0; i < n; i++) {
        double u = fx_rng_uniform(rng);
        switch (f->kind) {
        case OR_UNIFORM: v[i] = (float)(a + (b - a) * u); break;
        case OR_AWAY:
            v[i] = (float)((a + (b - a) * u) * (fx_rng_uniform(rng) < 0.5 ? -1 : 1));
            break;
        case OR_DISTINCT: v[i] = (float)((a ? a : 0.05) * ((double)i - 0.5 * (double)n)); break;
        case OR_PROBS: v[i] = (float)(a == b ? 0.05 + 0.95 * u : a + (b - a) * u); break;
        default: v[i] = (float)(b + (a ? a : 1.0) * fx_rng_normal(rng)); break;
        }
        if (f->avoid > 0 && fabs(fabs(v[i]) - f->avoid) < 0.05)
            v[i] *= 1.2f;
    }
    if (f->kind == OR_DISTINCT)
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(fx_rng_u64(rng) % (uint64_t)(i + 1));
            float tmp = v[i];
            v[i] = v[j];
            v[j] = tmp;
        }
    if (f->kind == OR_PROBS && s->ndim > 0) {
        int64_t C = s->shape[s->ndim - 1];
        for (int64_t r = 0; C > 0 && r < n / C; r++) {
            double sum = 0.0;
            for (int64_t c = 0; c < C; c++)
                sum += v[r * C + c];
            for (int64_t c = 0; c < C; c++)
                v[r * C + c] = (float)(v[r * C + c] / sum);
        }
    }
    fx_tensor_copy_from_host(t, v, (size_t)n * sizeof *v);
    free(v);
    if (grad)
        fx_tensor_set_requires_grad(t, true);
    return t;
}

/* Everything one side of a case owns: inputs, layer, its parameters. */
typedef struct {
    fx_tensor *in[OR_MAX_IN];
    fx_layer *layer;
    fx_params params;
    const char *names[64]; /* parameter names without the layer prefix */
    fx_tensor *wrt[OR_MAX_IN + 64];
    int nwrt;
} side;

static bool side_make(checker *k, side *s, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    fx_params_init(&s->params);
    fx_rng *rng = fx_rng_create(seed);
    for (int i = 0; i < k->c->nin; i++) {
        bool grad = !(k->c->nograd & (1u << i));
        s->in[i] = make_input(&k->row->fill[i], &k->c->in[i], rng, grad);
        if (!s->in[i]) {
            fx_rng_free(rng);
            return fail(k, "input %d: bad shape", i);
        }
        if (grad)
            s->wrt[s->nwrt++] = s->in[i];
    }
    fx_rng_free(rng);
    if (!k->row->layer)
        return true;
    fx_rng *lr = fx_rng_create(99);
    s->layer = k->row->layer(k->row->arg, k->c, lr);
    fx_rng_free(lr);
    if (!s->layer)
        return fail(k, "the layer could not be made");
    if (fx_layer_collect_params(s->layer, &s->params) != FX_OK || s->params.count > 64)
        return fail(k, "the layer's parameters could not be collected");
    for (int i = 0; i < s->params.count; i++) {
        const char *dot = strchr(s->params.items[i].name, '.');
        s->names[i] = dot ? dot + 1 : s->params.items[i].name;
        if (fx_tensor_requires_grad(s->params.items[i].tensor))
            s->wrt[s->nwrt++] = s->params.items[i].tensor;
    }
    return true;
}

static void side_free(side *s)
{
    fx_params_clear(&s->params);
    fx_layer_free(s->layer);
    for (int i = 0; i < OR_MAX_IN; i++)
        fx_tensor_free(s->in[i]);
}

/* Host copy of a tensor in double (any device). */
static void to_host(const fx_tensor *t, or_host *h)
{
    memset(h, 0, sizeof *h);
    or_host_init(h, t->ndim, t->shape);
    float *f = malloc((size_t)(h->n ? h->n : 1) * sizeof *f);
    fx_tensor_to_host(t, f, (size_t)h->n * sizeof *f);
    for (int64_t i = 0; i < h->n; i++)
        h->v[i] = f[i];
    free(f);
}

/* The callers seed the context's RNG first (dropout), each forward with
 * the same seed: the check, each backend, and fx_gradcheck, which must
 * replay that RNG for every evaluation itself (the loss does not reseed). */
static fx_tensor *run_forward(checker *k, fx_ctx *ctx, side *s)
{
    return k->row->forward(ctx, s->in, s->layer, k->row->arg, k->c);
}

/* ------------------------------------------------- (a) forward vs reference */

static double worst_err(const double *got, const double *want, int64_t n, int64_t *at)
{
    double worst = 0.0;
    *at = -1;
    for (int64_t i = 0; i < n; i++) {
        double e;
        if (isnan(got[i]) || isnan(want[i]))
            e = isnan(got[i]) && isnan(want[i]) ? 0.0 : INFINITY;
        else if (isinf(got[i]) || isinf(want[i]))
            e = got[i] == want[i] ? 0.0 : INFINITY;
        else
            e = fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
        if (e > worst || (*at < 0 && e > 0)) {
            worst = e;
            *at = i;
        }
    }
    return worst;
}

static bool check_forward(checker *k, side *s, fx_tensor **shape_out, double *err)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_ctx_seed(ctx, 7);
    fx_tensor *y = run_forward(k, ctx, s);
    if (!y) {
        fail(k, "forward failed: %s", fx_ctx_error(ctx));
        fx_ctx_free(ctx);
        return false;
    }
    or_host in[OR_MAX_IN] = { 0 }, params[64] = { 0 }, got, want = { 0 };
    for (int i = 0; i < k->c->nin; i++)
        to_host(s->in[i], &in[i]);
    for (int i = 0; i < s->params.count; i++)
        to_host(s->params.items[i].tensor, &params[i]);
    to_host(y, &got);
    *shape_out = fx_tensor_create(fx_cpu(), FX_F32, y->ndim, y->shape); /* the shape, for R */
    const char *unchecked = NULL;
    or_ref r = { k->c,    k->row->arg, k->c->nin, in,         s->params.count,
                 params,  s->names,    &got,      &want,      &unchecked };
    k->row->reference(&r);
    bool ok = true;
    char gs[64], ws[64];
    fx_shape_str(y, gs, sizeof gs);
    fx_tensor tmp = { .ndim = want.ndim };
    memcpy(tmp.shape, want.shape, sizeof tmp.shape);
    fx_shape_str(&tmp, ws, sizeof ws);
    if (unchecked) {
        /* the reference cannot follow the engine's random numbers here */
    } else if (!want.v || strcmp(gs, ws) != 0) {
        ok = fail(k, "output shape %s, reference %s", gs, ws);
    } else {
        int64_t at;
        *err = worst_err(got.v, want.v, got.n, &at);
        if (*err > k->row->fwd.tol)
            ok = fail(k, "forward element %lld: %.7g, reference %.7g (rel err %.3g > %.1g)",
                      (long long)at, got.v[at], want.v[at], *err, k->row->fwd.tol);
    }
    for (int i = 0; i < OR_MAX_IN; i++)
        free(in[i].v);
    for (int i = 0; i < 64; i++)
        free(params[i].v);
    free(got.v);
    free(want.v);
    fx_ctx_free(ctx);
    return ok;
}

/* ------------------------------------------------------- (b) gradcheck */

typedef struct {
    checker *k;
    side *s;
    fx_tensor *r;
} loss_arg;

static fx_tensor *weighted_sum(fx_ctx *ctx, void *user)
{
    loss_arg *a = user;
    fx_tensor *y = run_forward(a->k, ctx, a->s);
    return fx_sum(ctx, fx_mul(ctx, y, a->r), 0, NULL, false);
}

static bool check_grad(checker *k, side *s, const fx_tensor *shape, int *checked)
{
    if (s->nwrt == 0)
        return true;
    fx_rng *rng = fx_rng_create(1234);
    or_fill normal = { OR_NORMAL, 1.0, 0.0, 0 };
    or_shape rs = { shape->ndim, { 0 } };
    memcpy(rs.shape, shape->shape, sizeof rs.shape);
    loss_arg a = { k, s, make_input(&normal, &rs, rng, false) };
    fx_rng_free(rng);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_gradcheck_opts o = { .eps = k->row->grad.eps, .rtol = k->row->grad.rtol,
                            .atol = k->row->grad.atol };
    fx_gradcheck_report rep;
    fx_ctx_seed(ctx, 7);
    fx_status st = fx_gradcheck(ctx, weighted_sum, &a, s->nwrt, s->wrt, &o, &rep);
    fx_ctx_free(ctx);
    fx_tensor_free(a.r);
    *checked += rep.checked;
    if (st != FX_OK) {
        int t = rep.worst_tensor;
        const char *what = "?";
        char buf[32];
        if (t >= 0 && t < s->nwrt) {
            what = buf;
            snprintf(buf, sizeof buf, "input %d", t);
            for (int i = 0; i < s->params.count; i++)
                if (s->params.items[i].tensor == s->wrt[t])
                    what = s->names[i];
        }
        return fail(k, "gradcheck (%s): %s [worst in %s]", fx_status_name(st), rep.message, what);
    }
    return true;
}

/* ------------------------------------------------------ (c) cross-backend */

static const char *dev_name(fx_device d) { return d.type == FX_DEV_CPU ? "cpu" : "cuda:0"; }

static bool expect_close(checker *k, const char *what, const fx_tensor *o, const fx_tensor *c,
                         double tol, double *worst)
{
    if (!o || !c)
        return (!o && !c) ? true : fail(k, "xb: %s exists on one side only", what);
    if (!fx_tensor_same_shape(o, c))
        return fail(k, "xb: %s has different shapes", what);
    or_host oh, ch;
    to_host(o, &oh);
    to_host(c, &ch);
    int64_t at;
    double e = worst_err(oh.v, ch.v, ch.n, &at);
    bool ok = true;
    if (e > *worst)
        *worst = e;
    if (e > tol)
        ok = fail(k, "xb: %s element %lld: other %.7g cpu %.7g (rel err %.3g > tol %.1g)", what,
                  (long long)at, oh.v[at], ch.v[at], e, tol);
    free(oh.v);
    free(ch.v);
    return ok;
}

/* Runs the forward and the backward from seed on one side. */
static fx_tensor *xb_run(checker *k, fx_ctx *ctx, side *s, const float *seed, int64_t n)
{
    fx_ctx_seed(ctx, 7);
    fx_tensor *y = run_forward(k, ctx, s);
    if (!y) {
        fail(k, "xb: forward on %s failed: %s", dev_name(fx_ctx_device(ctx)), fx_ctx_error(ctx));
        return NULL;
    }
    if (fx_tensor_numel(y) != n) {
        fail(k, "xb: the output changed size");
        return NULL;
    }
    fx_tensor *t = fx_tensor_from_host(ctx, FX_F32, y->ndim, y->shape, seed);
    if (fx_backward_seed(ctx, y, t) != FX_OK) {
        fail(k, "xb: backward on %s failed: %s", dev_name(fx_ctx_device(ctx)), fx_ctx_error(ctx));
        return NULL;
    }
    return y;
}

static bool check_xb(checker *k, fx_device dev, uint64_t seed, const fx_tensor *shape,
                     double *worst)
{
    side cpu = { 0 }, other = { 0 }; /* zeroed: side_free is safe if a make fails */
    bool ok = side_make(k, &cpu, seed) && side_make(k, &other, seed);
    for (int i = 0; ok && i < k->c->nin; i++) { /* the same values, moved over */
        bool grad = fx_tensor_requires_grad(other.in[i]);
        if (fx_tensor_move_to_device(other.in[i], dev) != FX_OK)
            ok = fail(k, "xb: input %d cannot move to %s", i, dev_name(dev));
        else if (grad && !other.in[i]->grad)
            ok = fail(k, "xb: input %d lost its gradient on the move", i);
    }
    if (ok && other.layer && fx_layer_to_device(other.layer, dev) != FX_OK)
        ok = fail(k, "xb: the layer cannot move to %s", dev_name(dev));
    int64_t n = fx_tensor_numel(shape);
    float *sv = malloc((size_t)(n ? n : 1) * sizeof *sv);
    for (int64_t i = 0; i < n; i++)
        sv[i] = (float)(((i * 7919) % 23) - 11) / 7.0f;
    fx_ctx *cc = fx_ctx_create(fx_cpu()), *oc = ok ? fx_ctx_create(dev) : NULL;
    if (ok && !oc)
        ok = fail(k, "xb: no context on %s", dev_name(dev));
    fx_tensor *yc = ok ? xb_run(k, cc, &cpu, sv, n) : NULL;
    fx_tensor *yo = yc ? xb_run(k, oc, &other, sv, n) : NULL;
    ok = ok && yc && yo;
    char err[512];
    if (ok && dev.type != FX_DEV_CPU && fx_device_sync(dev, err, sizeof err) != FX_OK)
        ok = fail(k, "xb: device error: %s", err);
    double tol = k->row->xb.tol;
    ok = ok && expect_close(k, "output", yo, yc, tol, worst);
    for (int i = 0; ok && i < k->c->nin; i++) {
        char what[48];
        snprintf(what, sizeof what, "input %d (after the step)", i);
        ok = expect_close(k, what, other.in[i], cpu.in[i], tol, worst);
        snprintf(what, sizeof what, "grad of input %d", i);
        ok = ok && expect_close(k, what, other.in[i]->grad, cpu.in[i]->grad, tol, worst);
    }
    for (int i = 0; ok && i < cpu.params.count; i++) {
        fx_tensor *pc = cpu.params.items[i].tensor, *po = other.params.items[i].tensor;
        char what[160];
        snprintf(what, sizeof what, "parameter %s", cpu.names[i]);
        ok = expect_close(k, what, po, pc, tol, worst); /* running statistics move */
        snprintf(what, sizeof what, "grad of %s", cpu.names[i]);
        ok = ok && expect_close(k, what, po->grad, pc->grad, tol, worst);
    }
    free(sv);
    fx_ctx_free(cc);
    fx_ctx_free(oc);
    side_free(&cpu);
    side_free(&other);
    return ok && !k->failed;
}

/* ------------------------------------------------------------ the rows */

typedef struct {
    bool xb_only;
    fx_device xb_dev;
} run_opts;

typedef struct {
    int cases, checked;
    double fwd_err, xb_err;
} row_stats;

static bool run_row(const or_row *row, const run_opts *o, row_stats *st, char *msg, size_t n)
{
    memset(st, 0, sizeof *st);
    if (!row->fwd.why || !row->xb.why || (!row->grad.why && !row->grad.skip)) {
        snprintf(msg, n, "the row must give a reason for each tolerance");
        return false;
    }
    for (int ci = 0; ci < row->ncases; ci++) {
        checker k = { row, &row->cases[ci], ci, "", false };
        uint64_t seed = hash_name(row->name) + (uint64_t)ci;
        side s = { 0 };
        fx_tensor *shape = NULL;
        bool ok = side_make(&k, &s, seed);
        double e = 0.0;
        if (ok)
            ok = check_forward(&k, &s, &shape, &e); /* also gives the output's shape */
        if (e > st->fwd_err)
            st->fwd_err = e;
        if (ok && !o->xb_only && !row->grad.skip && !k.c->no_gradcheck)
            ok = check_grad(&k, &s, shape, &st->checked);
        side_free(&s);
        if (ok)
            ok = check_xb(&k, o->xb_dev, seed, shape, &st->xb_err);
        fx_tensor_free(shape);
        st->cases++;
        if (!ok) {
            snprintf(msg, n, "%s", k.msg);
            return false;
        }
    }
    return true;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int usage(void)
{
    fprintf(stderr, "usage: test_ops [-k NAME] [--xb auto|cpu|cuda] [--xb-only] [--list]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *only = NULL, *xb = "auto";
    bool list = false;
    run_opts o = { false, fx_cpu() };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-k") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--xb") == 0 && i + 1 < argc)
            xb = argv[++i];
        else if (strcmp(argv[i], "--xb-only") == 0)
            o.xb_only = true;
        else if (strcmp(argv[i], "--list") == 0)
            list = true;
        else
            return usage();
    }
    /* One thread unless FX_NUM_THREADS says otherwise: the shapes are small,
     * mostly under the kernels' parallel grain, and a thread handoff per op
     * on a loaded machine costs more than the op; the threaded paths are the
     * op files' own thread tests. */
    if (!getenv("FX_NUM_THREADS"))
        fx_set_num_threads(1);
    const char *why = "the CUDA backend is not built";
    int gpus = 0;
#ifdef FX_TEST_CUDA
    gpus = fx__cuda_device_count(&why);
#endif
    if (strcmp(xb, "cuda") == 0 && gpus == 0) {
        printf("SKIPPED: no CUDA device (%s)\n", why);
        return 77;
    }
    if (strcmp(xb, "cpu") != 0 && strcmp(xb, "cuda") != 0 && strcmp(xb, "auto") != 0)
        return usage();
    if (strcmp(xb, "cpu") != 0 && gpus > 0)
        o.xb_dev = (fx_device){ FX_DEV_CUDA, 0 };

    int nfam, total = 0;
    const or_family *fam = or_families(&nfam);
    bool exact = false;
    for (int f = 0; f < nfam; f++)
        for (int r = 0; r < *fam[f].nrows; r++) {
            total++;
            exact |= only && strcmp(fam[f].rows[r].name, only) == 0;
        }
    if (list) {
        for (int f = 0; f < nfam; f++)
            for (int r = 0; r < *fam[f].nrows; r++)
                printf("%-24s %-10s %d cases  %s\n", fam[f].rows[r].name, fam[f].family,
                       fam[f].rows[r].ncases, fam[f].rows[r].covers);
        printf("%d rows\n", total);
        return 0;
    }
    if (o.xb_dev.type == FX_DEV_CPU)
        printf("test_ops: %d rows; cross-backend: cpu against cpu (%s)\n", total,
               strcmp(xb, "cpu") == 0 ? "asked for" : why);
    else
        printf("test_ops: %d rows; cross-backend: cpu against cuda:0\n", total);
    int ran = 0, failed = 0, cases = 0;
    double t0 = now();
    for (int f = 0; f < nfam; f++)
        for (int r = 0; r < *fam[f].nrows; r++) {
            const or_row *row = &fam[f].rows[r];
            if (only && (exact ? strcmp(row->name, only) != 0 : !strstr(row->name, only)))
                continue;
            row_stats st;
            char msg[1024] = "";
            double t1 = now();
            bool ok = run_row(row, &o, &st, msg, sizeof msg);
            ran++;
            cases += st.cases;
            failed += !ok;
            printf("%-4s %-24s %3d cases  fwd %.1e  grad %6d el%s  xb %.1e  %6.2f s\n",
                   ok ? "ok" : "FAIL", row->name, st.cases, st.fwd_err, st.checked,
                   row->grad.skip ? " (skip)" : "       ", st.xb_err, now() - t1);
            if (!ok)
                printf("     %s: %s\n", row->name, msg);
            fflush(stdout);
        }
    if (only && ran == 0) {
        fprintf(stderr, "test_ops: no row matches '%s' (--list shows them)\n", only);
        return 2;
    }
    printf("test_ops: %d of %d rows run, %d cases, %d failed, %.1f s (cross-backend: cpu "
           "against %s)\n", ran, total, cases, failed, now() - t0, dev_name(o.xb_dev));
    return failed ? 1 : 0;
}
