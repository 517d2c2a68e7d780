/*
 * logreg.c - softmax regression on a synthetic Gaussian mixture, measured
 * against the Bayes classifier of the distribution that made the data.
 *
 * The data: 5 classes with equal priors in 20 dimensions; class k is
 * N(mu_k, I), and the means mu_k are drawn once per seed from N(0, s^2 I).
 * With equal priors and one shared identity covariance, the Bayes classifier
 * is "nearest true mean", argmin_k ||x - mu_k||^2, which is a linear rule:
 * softmax regression can represent it exactly, so a well-trained model must
 * approach the Bayes error and the gap measures how well training worked.
 *
 * The model: one dense layer 20 -> 5 (no activation) trained with RMSProp
 * on the mean cross-entropy, in shuffled minibatches. Each epoch prints the
 * mean training loss and the error rates on the training and test sets.
 * At the end the Bayes error is estimated twice: on the same test set, and
 * on a large fresh Monte-Carlo sample (the honest number, since it does not
 * share the test set's sampling noise with itself).
 *
 *     logreg [--epochs N] [--lr R] [--batch B] [--seed S] [--threads T]
 *            [--quiet] [--check GAP]
 *
 * Exit status: 0 when the run completed (and, with --check, the model's
 * test error is within GAP of the Monte-Carlo Bayes error); 1 on a failed
 * check or an engine error; 2 on a bad command line.
 */
#include "fluxion.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 20
#define CLASSES 5
#define N_TRAIN 10000
#define N_TEST 10000
#define N_MC 200000
/* Spread of the class means. Pairs of means are about s*sqrt(2*DIM) = 4.1
 * standard deviations apart, so each competing class takes ~2% and the
 * Bayes error is 7-13% depending on the seed (about 7% for seed 1). */
#define MEAN_SPREAD 0.65
#define EVAL_CHUNK 2500

typedef struct {
    int epochs, batch, threads;
    double lr, check_gap;
    uint64_t seed;
    bool quiet, check;
} options;

/* A labelled sample set held on the host: x [n, DIM], y [n]. */
typedef struct {
    int n;
    float *x;
    int32_t *y;
} dataset;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: logreg [options]\n"
            "Softmax regression (dense 20->5, RMSProp, cross-entropy) on a synthetic\n"
            "5-class Gaussian mixture in 20 dimensions, compared with the Bayes error.\n"
            "\n"
            "  --epochs N     training epochs (default 30)\n"
            "  --lr R         RMSProp learning rate (default 0.01)\n"
            "  --batch B      minibatch size (default 256)\n"
            "  --seed S       seed for the class means, the data and the shuffles (default 1)\n"
            "  --threads T    threads for OpenBLAS and the engine (default 1)\n"
            "  --quiet        print only the final summary, not one line per epoch\n"
            "  --check GAP    exit 1 if test error exceeds the Monte-Carlo Bayes error by\n"
            "                 more than GAP (e.g. 0.02)\n"
            "  --help         show this help\n"
            "\n"
            "Exit status: 0 done, 1 failed check or engine error, 2 bad command line.\n");
}

/* Prints a command-line error (printf-style) and exits with status 2. */
static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "logreg: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see logreg --help)\n");
    va_end(ap);
    exit(2);
}

/* Parses an integer in [lo, hi] for flag; exits 2 when it is not one. */
static long parse_int(const char *flag, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die_usage("%s needs an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
    return v;
}

/* Parses a finite number > 0 (or >= 0 when zero_ok) for flag; exits 2
 * otherwise. */
static double parse_pos(const char *flag, const char *s, bool zero_ok)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || (v == 0 && !zero_ok))
        die_usage("%s needs a number %s 0, got '%s'", flag, zero_ok ? ">=" : ">", s);
    return v;
}

static options parse_args(int argc, char **argv)
{
    options o = { .epochs = 30, .batch = 256, .threads = 1, .lr = 0.01, .seed = 1 };
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(f, "--quiet")) {
            o.quiet = true;
            continue;
        }
        static const char *valued[] = { "--epochs", "--lr", "--batch", "--seed", "--threads",
                                        "--check" };
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof *valued; k++)
            known |= !strcmp(f, valued[k]);
        if (!known)
            die_usage("unknown option '%s'", f);
        if (i + 1 >= argc)
            die_usage("%s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--epochs"))
            o.epochs = (int)parse_int(f, v, 1, 100000);
        else if (!strcmp(f, "--batch"))
            o.batch = (int)parse_int(f, v, 1, N_TRAIN);
        else if (!strcmp(f, "--threads"))
            o.threads = (int)parse_int(f, v, 1, 1024);
        else if (!strcmp(f, "--seed"))
            o.seed = (uint64_t)parse_int(f, v, 0, 0x7fffffffL);
        else if (!strcmp(f, "--lr"))
            o.lr = parse_pos(f, v, false);
        else {
            o.check_gap = parse_pos(f, v, true);
            o.check = true;
        }
    }
    return o;
}

/* ------------------------------------------------------------ the data */

/* Draws one sample of the mixture into x (DIM floats); returns its label. */
static int32_t draw(fx_rng *rng, const double *means, float *x)
{
    int32_t k = (int32_t)(fx_rng_u64(rng) % CLASSES);
    for (int d = 0; d < DIM; d++)
        x[d] = (float)(means[k * DIM + d] + fx_rng_normal(rng));
    return k;
}

static bool dataset_make(dataset *ds, int n, fx_rng *rng, const double *means)
{
    ds->n = n;
    ds->x = malloc((size_t)n * DIM * sizeof *ds->x);
    ds->y = malloc((size_t)n * sizeof *ds->y);
    if (!ds->x || !ds->y)
        return false;
    for (int i = 0; i < n; i++)
        ds->y[i] = draw(rng, means, ds->x + (size_t)i * DIM);
    return true;
}

static void dataset_free(dataset *ds)
{
    free(ds->x);
    free(ds->y);
}

/* The Bayes decision for equal priors and identity covariance: the class
 * whose true mean is nearest. */
static int32_t bayes_predict(const double *means, const float *x)
{
    int32_t best = 0;
    double best_d = INFINITY;
    for (int k = 0; k < CLASSES; k++) {
        double d2 = 0;
        for (int d = 0; d < DIM; d++) {
            double t = x[d] - means[k * DIM + d];
            d2 += t * t;
        }
        if (d2 < best_d)
            best_d = d2, best = k;
    }
    return best;
}

static double bayes_error_on(const double *means, const dataset *ds)
{
    int64_t wrong = 0;
    for (int i = 0; i < ds->n; i++)
        wrong += bayes_predict(means, ds->x + (size_t)i * DIM) != ds->y[i];
    return (double)wrong / ds->n;
}

/* Bayes error on n fresh samples, drawn one at a time (nothing stored). */
static double bayes_error_mc(const double *means, int n, fx_rng *rng)
{
    float x[DIM];
    int64_t wrong = 0;
    for (int i = 0; i < n; i++) {
        int32_t y = draw(rng, means, x);
        wrong += bayes_predict(means, x) != y;
    }
    return (double)wrong / n;
}

/* ----------------------------------------------------------- the model */

/* Prints the context's error and returns false when an engine call failed. */
static bool ok(fx_ctx *ctx, const char *what)
{
    if (fx_ctx_status(ctx) == FX_OK)
        return true;
    fprintf(stderr, "logreg: %s failed: %s\n", what, fx_ctx_error(ctx));
    return false;
}

/* Error rate of the model on ds, in eval mode without a tape; -1 on an
 * engine error. Runs in chunks so the arena stays small. */
static double model_error(fx_layer *net, fx_ctx *ctx, const dataset *ds)
{
    bool grad = fx_ctx_set_grad(ctx, false);
    fx_ctx_set_training(ctx, false);
    float logits[EVAL_CHUNK * CLASSES];
    int64_t wrong = 0;
    for (int i0 = 0; i0 < ds->n && wrong >= 0; i0 += EVAL_CHUNK) {
        int m = ds->n - i0 < EVAL_CHUNK ? ds->n - i0 : EVAL_CHUNK;
        fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, (int64_t[]){ m, DIM },
                                           ds->x + (size_t)i0 * DIM);
        fx_tensor *z = fx_layer_forward(net, ctx, x); /* (m, CLASSES) */
        if (!ok(ctx, "evaluation") ||
            fx_tensor_to_host(z, logits, (size_t)m * CLASSES * sizeof(float)) != FX_OK) {
            wrong = -1;
            break;
        }
        for (int i = 0; i < m; i++) {
            const float *row = logits + (size_t)i * CLASSES;
            int best = 0;
            for (int k = 1; k < CLASSES; k++)
                if (row[k] > row[best])
                    best = k;
            wrong += best != ds->y[i0 + i];
        }
        fx_ctx_reset(ctx);
    }
    fx_ctx_set_training(ctx, true);
    fx_ctx_set_grad(ctx, grad);
    return wrong < 0 ? -1.0 : (double)wrong / ds->n;
}

/* One pass over the training set in a fresh random order; returns the mean
 * training loss (weighted by batch size), or NAN on an engine error. */
static double train_epoch(fx_layer *net, fx_optim *opt, fx_ctx *ctx, const dataset *ds,
                          int batch, int *perm, fx_rng *rng, float *xb, int32_t *yb)
{
    for (int i = ds->n - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)(fx_rng_u64(rng) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    double loss_sum = 0;
    for (int i0 = 0; i0 < ds->n; i0 += batch) {
        int m = ds->n - i0 < batch ? ds->n - i0 : batch;
        for (int i = 0; i < m; i++) {
            int s = perm[i0 + i];
            memcpy(xb + (size_t)i * DIM, ds->x + (size_t)s * DIM, DIM * sizeof(float));
            yb[i] = ds->y[s];
        }
        fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, (int64_t[]){ m, DIM }, xb);
        fx_tensor *y = fx_tensor_from_host(ctx, FX_I32, 1, (int64_t[]){ m }, yb);
        fx_tensor *loss = fx_cross_entropy(ctx, fx_layer_forward(net, ctx, x), y, FX_MEAN);
        if (!ok(ctx, "forward") || fx_backward(ctx, loss) != FX_OK) {
            ok(ctx, "backward");
            return NAN;
        }
        if (fx_optim_step(opt) != FX_OK) {
            fprintf(stderr, "logreg: optimizer step failed: %s\n", fx_optim_error(opt));
            return NAN;
        }
        fx_optim_zero_grad(opt);
        loss_sum += fx_tensor_item(loss) * m;
        fx_ctx_reset(ctx);
    }
    return loss_sum / ds->n;
}

int main(int argc, char **argv)
{
    fx_blas_reexec_if_misdetected(argv);
    options o = parse_args(argc, argv);
    fx_set_num_threads(o.threads);

    /* One stream for the distribution and the data, one for the model
     * (initialisation and shuffles), so changing the training does not
     * change the data. */
    fx_rng *data_rng = fx_rng_create(o.seed);
    fx_rng *model_rng = fx_rng_create(o.seed ^ 0x5eedf00dULL);
    double means[CLASSES * DIM];
    dataset train = { 0 }, test = { 0 };
    int *perm = malloc(N_TRAIN * sizeof *perm);
    float *xb = malloc((size_t)o.batch * DIM * sizeof *xb);
    int32_t *yb = malloc((size_t)o.batch * sizeof *yb);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    if (!data_rng || !model_rng || !perm || !xb || !yb || !ctx) {
        fprintf(stderr, "logreg: out of memory\n");
        return 1;
    }
    for (int i = 0; i < CLASSES * DIM; i++)
        means[i] = MEAN_SPREAD * fx_rng_normal(data_rng);
    if (!dataset_make(&train, N_TRAIN, data_rng, means) ||
        !dataset_make(&test, N_TEST, data_rng, means)) {
        fprintf(stderr, "logreg: out of memory\n");
        return 1;
    }
    for (int i = 0; i < N_TRAIN; i++)
        perm[i] = i;

    fx_layer *net = fx_dense_create("fc", DIM, CLASSES, NULL, model_rng);
    fx_params params;
    fx_params_init(&params);
    fx_optim *opt = NULL;
    if (net && fx_layer_collect_params(net, &params) == FX_OK)
        opt = fx_optim_create(FX_OPT_RMSPROP, &(fx_optim_hparams){ .lr = o.lr }, &params);
    if (!opt) {
        fprintf(stderr, "logreg: could not build the model: %s\n",
                net ? fx_optim_last_create_error() : "dense layer");
        return 1;
    }

    if (!o.quiet)
        printf("# %d train / %d test samples, %d features, %d classes; batch %d, RMSProp lr %g, "
               "seed %llu\n",
               N_TRAIN, N_TEST, DIM, CLASSES, o.batch, o.lr, (unsigned long long)o.seed);
    double test_err = 1.0, train_err = 1.0, loss = NAN;
    for (int e = 1; e <= o.epochs; e++) {
        loss = train_epoch(net, opt, ctx, &train, o.batch, perm, model_rng, xb, yb);
        train_err = model_error(net, ctx, &train);
        test_err = model_error(net, ctx, &test);
        if (isnan(loss) || train_err < 0 || test_err < 0)
            return 1;
        if (!o.quiet)
            printf("epoch %3d  loss %.4f  train_err %.4f  test_err %.4f\n", e, loss, train_err,
                   test_err);
    }

    double bayes_test = bayes_error_on(means, &test);
    double bayes_mc = bayes_error_mc(means, N_MC, data_rng);
    double se = sqrt(bayes_mc * (1 - bayes_mc) / N_MC);
    double gap = test_err - bayes_mc;
    printf("final: loss %.4f  train_err %.4f  test_err %.4f after %d epochs\n", loss, train_err,
           test_err, o.epochs);
    printf("bayes error (nearest true mean): test set %.4f, monte-carlo %.4f +- %.4f (%d fresh "
           "samples)\n",
           bayes_test, bayes_mc, se, N_MC);
    printf("gap: test_err - bayes_mc = %+.4f  (test_err - bayes on test set = %+.4f)\n", gap,
           test_err - bayes_test);

    int status = 0;
    if (o.check) {
        status = gap <= o.check_gap ? 0 : 1;
        printf("check: gap %+.4f %s %.4f: %s\n", gap, status ? ">" : "<=", o.check_gap,
               status ? "FAILED" : "ok");
    }
    fx_optim_free(opt);
    fx_params_clear(&params);
    fx_layer_free(net);
    fx_ctx_free(ctx);
    dataset_free(&train);
    dataset_free(&test);
    free(perm);
    free(xb);
    free(yb);
    fx_rng_free(data_rng);
    fx_rng_free(model_rng);
    return status;
}
