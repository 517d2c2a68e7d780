/*
 * fluxion_bench.c - training-throughput and sgemm benchmarks.
 *
 *     fluxion-bench train --model M [--threads N] [--steps S] [--warmup W]
 *                         [--device cpu|cuda:N] [--batch B]
 *     fluxion-bench sgemm [--m M] [--n N] [--k K] [--threads N] [--reps R]
 *     fluxion-bench forward --model M [--batch B] [--threads N] [--reps R]
 *                           [--warmup W] [--prepack] [--save-weights FILE]
 *     fluxion-bench peak [--isa auto|avx512|avx2] (bench_peak.c)
 *     fluxion-bench serve --server ADDR --model M ... (bench_serve.c)
 *
 * train runs the step loop a user writes (forward, fx_backward,
 * fx_optim_step, fx_optim_zero_grad, fx_ctx_reset) on synthetic data and
 * prints one JSON line:
 *
 *     {"model":"mlp","threads":2,"samples_per_s":...,"final_loss":...,
 *      "impl":"fluxion","batch":128,"steps":200,"warmup":20,"ms_per_step":...,
 *      "gflops":...,"cpu_util":...}
 *
 * cpu_util is the process's CPU time over the wall time of the timed steps:
 * well below the thread count means the run shared its cores with other
 * work and its samples_per_s is low for that reason. cpu_ms_per_step (and
 * forward's cpu_us) is that CPU time per step (per forward): the figure to
 * compare on a shared machine.
 *
 * The data is a pool of pre-generated batches (inputs N(0,1), random integer
 * labels, fixed seed) held in persistent tensors, so data generation is not
 * timed. Timing starts after the warmup steps (which also grow the arena to
 * its steady size) and uses CLOCK_MONOTONIC. tests/bench/torch_bench.py runs
 * the same models in PyTorch with the same JSON format; tests/bench/compare.sh
 * puts the two side by side.
 *
 * Models are rows of a table (name, builder, batch, input shape, classes,
 * optimizer, learning rate, matmul flop count): adding one (cnn, lstm) is a
 * builder function and a row.
 *
 * forward times the inference path a server takes: the model in no-grad,
 * evaluation mode, one fx_layer_forward per call on a batch of B samples,
 * fx_ctx_reset after each; it prints the median (and p10/p90) time per
 * forward in microseconds. --prepack packs the weights once first through
 * the engine's prepack API (FX_HAVE_PREPACK, from the dense work of issue
 * 17); a build without it says so and exits 2. --save-weights writes the
 * model's parameters as safetensors (names "mlp.fc1.weight", w [out,in]),
 * so tests/bench/onnx_bench.py times ONNX Runtime on the same weights.
 *
 * sgemm times OpenBLAS's C = A B (through the engine's fx_matmul in no-grad
 * mode, which is one cblas_sgemm call) and prints GFLOP/s, to compare a
 * training step's achieved rate with what the BLAS can do on this machine.
 */
#define _POSIX_C_SOURCE 200809L
#include "fluxion.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL 8 /* pre-generated batches, cycled */

/* ------------------------------------------------------------ utilities */

/* Prints a command-line error (printf-style) and exits with status 2. */
static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fluxion-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see fluxion-bench --help)\n");
    va_end(ap);
    exit(2);
}

/* An engine failure at run time: message on stderr, status 1. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fluxion-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static long parse_int(const char *flag, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die_usage("%s needs an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
    return v;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU seconds used by all of the process's threads. */
static double cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fluxion-bench train --model M [--threads N] [--steps S] [--warmup W]\n"
            "                           [--device cpu|cuda:N] [--batch B] [--tf32] [--bf16]\n"
            "       fluxion-bench sgemm [--m M] [--n N] [--k K] [--threads N] [--reps R]\n"
            "       fluxion-bench forward --model M [--batch B] [--threads N] [--reps R] [--warmup W]\n"
            "                             [--prepack] [--bf16] [--save-weights FILE]\n"
            "       fluxion-bench peak [--isa auto|avx512|avx2] [--seconds S]\n"
            "       fluxion-bench serve --server ADDR --model M [--concurrency C] [--duration S]\n"
            "                           [--rate R] [--input FILE.json] [--raw]\n"
            "\n"
            "serve: drives ModelInfer on an Open Inference Protocol server; prints one JSON\n"
            "       line with requests_per_s and latency percentiles (serve --help).\n"
            "train: times training steps on synthetic data (inputs N(0,1), random labels,\n"
            "       a pool of %d pre-generated batches) and prints one JSON line with\n"
            "       samples_per_s and final_loss. Models:\n"
            "         logreg  dense 20->5, batch 256, RMSProp lr 1e-3, cross-entropy\n"
            "         mlp     dense 784->512 relu ->256 relu ->10, batch 128, Adam lr 1e-3\n"
            "       --steps S   timed steps (default: per model, logreg 10000, mlp 200, cnn 50, lstm 200)\n"
            "       --warmup W  untimed steps first (default: per model, logreg 1000, mlp 20, cnn 5, lstm 20)\n"
            "sgemm: times C[M,N] = A[M,K] B[K,N] and prints GFLOP/s as JSON\n"
            "       (defaults: the mlp's first layer, M 128, N 512, K 784; reps 200).\n"
            "       --device D  cpu (default) or cuda:N: model, data pool and context live\n"
            "                   there; the timed loop ends with a device sync\n"
            "       --batch B   samples per step (default: per model)\n"
            "       --tf32      allow TF32 tensor cores in f32 products (CUDA; default off)\n"
            "       --bf16      the context in bf16 precision (fx_ctx_set_precision: dense\n"
            "                   products on bf16 operands, fp32 sums; CPU only)\n"
            "forward: times one no-grad forward (inference) of the model at batch B\n"
            "       (default 8) and prints median/p10/p90 microseconds as JSON; reps default\n"
            "       2000, warmup 200. --prepack: pack the weights once first (engine prepack\n"
            "       API; refused when this build lacks it). --save-weights FILE: write the\n"
            "       parameters as safetensors (for tests/bench/onnx_bench.py).\n"
            "       --bf16: the context in bf16 precision (with --prepack: the weights\n"
            "       packed as bf16; without: packed per call by the ops); adds max_abs_err,\n"
            "       max_rel_err (over the largest |logit| of each sample) and argmax_agree\n"
            "       against the fp32 forward of the same inputs to the JSON.\n"
            "peak:  one core's fp32 FMA peak GFLOP/s (independent AVX-512/AVX2 FMAs).\n"
            "--threads N  threads for OpenBLAS and the engine (default 1)\n"
            "Exit status: 0 ok, 1 engine error, 2 bad command line.\n",
            POOL);
}

/* --------------------------------------------------------------- models */

/* A benchmark model: the layer, its batch geometry and how it trains. */
typedef struct {
    const char *name;
    fx_layer *(*build)(fx_rng *rng);
    int batch;
    int in_ndim;                   /* sample shape, without the batch dim */
    int64_t in_shape[FX_MAX_DIMS - 1];
    int classes;
    fx_optim_kind optim;
    double lr;
    /* Matmul FLOPs of one training step per sample (forward plus the two
     * backward products, 2*M*N*K each), for GFLOP/s; 0 if not counted. */
    double flops_per_sample;
    int steps, warmup; /* defaults */
    fx_dtype in_dtype; /* f32 (default) or i32 token ids in [0, vocab) */
    int vocab;
} bench_model;

static fx_layer *build_logreg(fx_rng *rng)
{
    return fx_dense_create("fc", 20, 5, NULL, rng);
}

static fx_layer *build_mlp(fx_rng *rng)
{
    fx_dense_opts relu = { .act = FX_ACT_RELU };
    return fx_chain_create("mlp", 3,
                           (fx_layer *[]){ fx_dense_create("fc1", 784, 512, &relu, rng),
                                           fx_dense_create("fc2", 512, 256, &relu, rng),
                                           fx_dense_create("fc3", 256, 10, NULL, rng) });
}

/* cnn: 1x28x28 -> conv3x3 1->32 pad 1, relu, maxpool 2 -> conv3x3 32->64
 * pad 1, relu, maxpool 2 -> flatten -> dense 3136->128 relu -> dense 128->10. */
static fx_layer *build_cnn(fx_rng *rng)
{
    fx_conv_opts conv = { .padding = 1, .act = FX_ACT_RELU };
    fx_pool_opts pool = { .kernel = 2 };
    fx_dense_opts relu = { .act = FX_ACT_RELU };
    return fx_chain_create("cnn", 7, (fx_layer *[]){
        fx_conv2d_create("conv1", 1, 32, 3, 3, &conv, rng), fx_maxpool2d_create("pool1", &pool),
        fx_conv2d_create("conv2", 32, 64, 3, 3, &conv, rng), fx_maxpool2d_create("pool2", &pool),
        fx_flatten_create("flat"), fx_dense_create("fc1", 64 * 7 * 7, 128, &relu, rng),
        fx_dense_create("fc2", 128, 10, NULL, rng) });
}

/* The last time step of a sequence output [N, T, H] -> [N, H] (every
 * benchmark sequence has length T, so this is the final hidden state). */
static fx_tensor *last_step(fx_layer *self, fx_ctx *ctx, fx_tensor *x)
{
    (void)self;
    if (!x)
        return NULL;
    fx_tensor *s = fx_slice(ctx, x, 1, -1, x->shape[1], 1);
    return fx_reshape(ctx, s, 2, (int64_t[]){ x->shape[0], x->shape[2] });
}

/* lstm: embedding 100->64, one LSTM layer 64->128 over 32 steps, the last
 * hidden state -> dense 128->10. */
static fx_layer *build_lstm(fx_rng *rng)
{
    return fx_chain_create("lstm", 4, (fx_layer *[]){
        fx_embedding_create("emb", 100, 64, NULL, rng),
        fx_lstm_create("lstm", 64, 128, NULL, rng), fx_layer_create("last", last_step),
        fx_dense_create("fc", 128, 10, NULL, rng) });
}

/* 3 products (forward, d input, d weight) of 2*in*out flops per sample and
 * layer. The first layer's d input is not needed (the data does not require
 * grad), and neither fluxion nor torch computes it, but it is counted the
 * same way for both so the number stays a plain "3 matmuls per layer". */
#define DENSE_FLOPS(in, out) (3.0 * 2.0 * (in) * (out))
/* The same count for a convolution: a dense map of in*k*k -> out per output
 * pixel. */
#define CONV_FLOPS(in, out, k, pixels) (DENSE_FLOPS((in) * (k) * (k), out) * (pixels))
/* An LSTM step: input and hidden products to 4 gates. */
#define LSTM_FLOPS(in, h, steps) ((DENSE_FLOPS(in, 4 * (h)) + DENSE_FLOPS(h, 4 * (h))) * (steps))

static const bench_model MODELS[] = {
    { "logreg", build_logreg, 256, 1, { 20 }, 5, FX_OPT_RMSPROP, 1e-3, DENSE_FLOPS(20, 5), 10000,
      1000, FX_F32, 0 },
    { "mlp", build_mlp, 128, 1, { 784 }, 10, FX_OPT_ADAM, 1e-3,
      DENSE_FLOPS(784, 512) + DENSE_FLOPS(512, 256) + DENSE_FLOPS(256, 10), 200, 20, FX_F32, 0 },
    { "cnn", build_cnn, 64, 3, { 1, 28, 28 }, 10, FX_OPT_ADAM, 1e-3,
      CONV_FLOPS(1, 32, 3, 28 * 28) + CONV_FLOPS(32, 64, 3, 14 * 14) + DENSE_FLOPS(3136, 128) +
          DENSE_FLOPS(128, 10),
      50, 5, FX_F32, 0 },
    { "lstm", build_lstm, 32, 1, { 32 }, 10, FX_OPT_ADAM, 1e-3,
      LSTM_FLOPS(64, 128, 32) + DENSE_FLOPS(128, 10), 200, 20, FX_I32, 100 },
};
#define NMODELS (int)(sizeof MODELS / sizeof *MODELS)

/* ---------------------------------------------------------------- train */

static int cmd_train(int argc, char **argv)
{
    const char *model = NULL;
    int threads = 1, steps = -1, warmup = -1, batch = -1;
    bool bf16 = false;
    fx_device dev = fx_cpu();
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(f, "--model") && strcmp(f, "--threads") && strcmp(f, "--steps") &&
            strcmp(f, "--warmup") && strcmp(f, "--device") && strcmp(f, "--batch") &&
            strcmp(f, "--tf32") && strcmp(f, "--bf16"))
            die_usage("train: unknown option '%s'", f);
        if (!strcmp(f, "--tf32")) { /* a switch: TF32 tensor cores for f32 products */
            fx_set_tf32(true);
            continue;
        }
        if (!strcmp(f, "--bf16")) {
            bf16 = true;
            continue;
        }
        if (i + 1 >= argc)
            die_usage("train: %s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model"))
            model = v;
        else if (!strcmp(f, "--threads"))
            threads = (int)parse_int(f, v, 1, 1024);
        else if (!strcmp(f, "--device")) {
            if (!fx_device_parse(v, &dev))
                die_usage("train: bad --device '%s' (cpu or cuda:N)", v);
        } else if (!strcmp(f, "--batch"))
            batch = (int)parse_int(f, v, 1, 1 << 20);
        else if (!strcmp(f, "--steps"))
            steps = (int)parse_int(f, v, 1, 100000000);
        else
            warmup = (int)parse_int(f, v, 0, 100000000);
    }
    if (!model)
        die_usage("train: --model is required (logreg, mlp, cnn, lstm)");
    const bench_model *m = NULL;
    bench_model mb;
    for (int i = 0; i < NMODELS; i++)
        if (!strcmp(MODELS[i].name, model))
            m = &MODELS[i];
    if (m && batch > 0) { /* the same model at another batch size */
        mb = *m;
        mb.batch = batch;
        m = &mb;
    }
    if (!m) {
        char names[256] = "";
        for (int i = 0; i < NMODELS; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     MODELS[i].name);
        die_usage("train: unknown model '%s' (known: %s)", model, names);
    }
    if (steps < 0)
        steps = m->steps;
    if (warmup < 0)
        warmup = m->warmup;
    fx_set_num_threads(threads);
    char dname[32];
    fx_device_str(dev, dname, sizeof dname);
    if (!fx_device_available(dev))
        die("device %s is not available (%d CUDA devices in this build and machine)", dname,
            fx_device_count(FX_DEV_CUDA));

    fx_rng *rng = fx_rng_create(1234);
    fx_ctx *ctx = fx_ctx_create(dev);
    fx_layer *net = m->build(rng);
    fx_params params;
    fx_params_init(&params);
    if (!rng || !ctx || !net || fx_layer_to_device(net, dev) != FX_OK ||
        fx_layer_collect_params(net, &params) != FX_OK)
        die("could not build model %s on %s", m->name, dname);
    if (bf16 && fx_ctx_set_precision(ctx, FX_PREC_BF16) != FX_OK)
        die("train: --bf16: precision bf16 is for CPU contexts only (device %s)", dname);
    fx_optim *opt = fx_optim_create(m->optim, &(fx_optim_hparams){ .lr = m->lr }, &params);
    if (!opt)
        die("could not create the optimizer: %s", fx_optim_last_create_error());

    /* The data pool: persistent input and label tensors. */
    int64_t xshape[FX_MAX_DIMS] = { m->batch };
    int64_t per_sample = 1;
    for (int d = 0; d < m->in_ndim; d++)
        per_sample *= xshape[d + 1] = m->in_shape[d];
    int64_t nx = m->batch * per_sample;
    float *hx = malloc((size_t)nx * sizeof *hx);
    int32_t *hy = malloc((size_t)m->batch * sizeof *hy);
    fx_tensor *xs[POOL], *ys[POOL];
    if (!hx || !hy)
        die("out of memory");
    for (int p = 0; p < POOL; p++) {
        for (int64_t i = 0; i < nx; i++) {
            if (m->in_dtype == FX_I32) { /* token ids, stored in the same buffer */
                int32_t tok = (int32_t)(fx_rng_u64(rng) % (uint64_t)m->vocab);
                memcpy(&hx[i], &tok, sizeof tok);
            } else {
                hx[i] = (float)fx_rng_normal(rng);
            }
        }
        for (int i = 0; i < m->batch; i++)
            hy[i] = (int32_t)(fx_rng_u64(rng) % (uint64_t)m->classes);
        xs[p] = fx_tensor_create(dev, m->in_dtype, m->in_ndim + 1, xshape);
        ys[p] = fx_tensor_create(dev, FX_I32, 1, (int64_t[]){ m->batch });
        if (!xs[p] || !ys[p] || fx_tensor_copy_from_host(xs[p], hx, (size_t)nx * 4) != FX_OK ||
            fx_tensor_copy_from_host(ys[p], hy, (size_t)m->batch * 4) != FX_OK)
            die("could not make the data pool");
    }

    /* The step loop, as a user writes it. */
    double t0 = 0, c0 = 0, loss = NAN;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) {
            t0 = now_s();
            c0 = cpu_s();
        }
        int p = s % POOL;
        fx_tensor *out = fx_layer_forward(net, ctx, xs[p]);
        fx_tensor *l = fx_cross_entropy(ctx, out, ys[p], FX_MEAN);
        if (fx_backward(ctx, l) != FX_OK)
            die("step %d: %s", s, fx_ctx_error(ctx));
        if (fx_optim_step(opt) != FX_OK)
            die("step %d: %s", s, fx_optim_error(opt));
        fx_optim_zero_grad(opt);
        if (s == warmup + steps - 1)
            loss = fx_tensor_item(l);
        fx_ctx_reset(ctx);
    }
    char err[512];
    if (fx_device_sync(dev, err, sizeof err) != FX_OK) /* queued device work is timed too */
        die("%s: %s", dname, err);
    double dt = now_s() - t0, dc = cpu_s() - c0;
    double sps = (double)steps * m->batch / dt;
    printf("{\"model\":\"%s\",\"threads\":%d,\"samples_per_s\":%.1f,\"final_loss\":%.6f,"
           "\"impl\":\"fluxion\",\"device\":\"%s\",\"batch\":%d,\"steps\":%d,\"warmup\":%d,\"ms_per_step\":%.4f,"
           "\"gflops\":%.3f,\"cpu_util\":%.2f,\"cpu_ms_per_step\":%.4f,\"precision\":\"%s\"}\n",
           m->name, threads, sps, loss, dname, m->batch, steps, warmup, 1e3 * dt / steps,
           sps * m->flops_per_sample * 1e-9, dc / dt, 1e3 * dc / steps, bf16 ? "bf16" : "fp32");

    for (int p = 0; p < POOL; p++) {
        fx_tensor_free(xs[p]);
        fx_tensor_free(ys[p]);
    }
    free(hx);
    free(hy);
    fx_optim_free(opt);
    fx_params_clear(&params);
    fx_layer_free(net);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
    return 0;
}

/* ---------------------------------------------------------------- sgemm */

static int cmd_sgemm(int argc, char **argv)
{
    int64_t M = 128, N = 512, K = 784;
    int threads = 1, reps = 200;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(f, "--m") && strcmp(f, "--n") && strcmp(f, "--k") && strcmp(f, "--threads") &&
            strcmp(f, "--reps"))
            die_usage("sgemm: unknown option '%s'", f);
        if (i + 1 >= argc)
            die_usage("sgemm: %s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--m"))
            M = parse_int(f, v, 1, 65536);
        else if (!strcmp(f, "--n"))
            N = parse_int(f, v, 1, 65536);
        else if (!strcmp(f, "--k"))
            K = parse_int(f, v, 1, 65536);
        else if (!strcmp(f, "--threads"))
            threads = (int)parse_int(f, v, 1, 1024);
        else
            reps = (int)parse_int(f, v, 1, 100000000);
    }
    fx_set_num_threads(threads);
    fx_rng *rng = fx_rng_create(42);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *a = fx_tensor_create(fx_cpu(), FX_F32, 2, (int64_t[]){ M, K });
    fx_tensor *b = fx_tensor_create(fx_cpu(), FX_F32, 2, (int64_t[]){ K, N });
    if (!rng || !ctx || !a || !b ||
        fx_init_tensor(a, FX_INIT_NORMAL, 0, 1, rng) != FX_OK ||
        fx_init_tensor(b, FX_INIT_NORMAL, 0, 1, rng) != FX_OK)
        die("could not make the sgemm operands");
    fx_ctx_set_grad(ctx, false);
    int warm = reps / 10 + 1;
    double t0 = 0;
    for (int r = 0; r < warm + reps; r++) {
        if (r == warm)
            t0 = now_s();
        if (!fx_matmul(ctx, a, b))
            die("sgemm: %s", fx_ctx_error(ctx));
        fx_ctx_reset(ctx);
    }
    double dt = now_s() - t0;
    printf("{\"bench\":\"sgemm\",\"m\":%lld,\"n\":%lld,\"k\":%lld,\"threads\":%d,"
           "\"gflops\":%.3f,\"ms_per_call\":%.4f}\n",
           (long long)M, (long long)N, (long long)K, threads,
           2.0 * M * N * K * reps / dt * 1e-9, 1e3 * dt / reps);
    fx_tensor_free(a);
    fx_tensor_free(b);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
    return 0;
}

/* -------------------------------------------------------------- forward */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Writes net's parameters as safetensors, plus "check.input" (x) and
 * "check.output" (net's no-grad forward of x) so a peer that loads the
 * weights can prove it computes the same function. */
static void save_weights(fx_layer *net, fx_ctx *ctx, fx_tensor *x, const char *path)
{
    fx_params params;
    fx_params_init(&params);
    char err[256] = "";
    fx_tensor *y = fx_layer_forward(net, ctx, x);
    fx_tensor *out = y ? fx_tensor_create(fx_cpu(), FX_F32, y->ndim, y->shape) : NULL;
    if (!out || fx_tensor_copy(out, y) != FX_OK)
        die("forward: %s", y ? "cannot copy the output" : fx_ctx_error(ctx));
    fx_ctx_reset(ctx);
    if (fx_layer_collect_params(net, &params) != FX_OK ||
        fx_params_add(&params, "check.input", x) != FX_OK ||
        fx_params_add(&params, "check.output", out) != FX_OK ||
        fx_safetensors_save(path, &params, 0, NULL, NULL, err, sizeof err) != FX_OK)
        die("forward: cannot save the weights to %s: %s", path, err);
    fx_params_clear(&params);
    fx_tensor_free(out);
}

/* The outputs of one no-grad forward of x as a malloc'd host array. */
static float *forward_values(fx_layer *net, fx_ctx *ctx, fx_tensor *x, int64_t *n)
{
    fx_tensor *y = fx_layer_forward(net, ctx, x);
    float *v = y ? malloc((size_t)fx_tensor_numel(y) * sizeof *v) : NULL;
    if (!v || fx_tensor_to_host(y, v, (size_t)fx_tensor_numel(y) * sizeof *v) != FX_OK)
        die("forward: %s", y ? "cannot copy the output" : fx_ctx_error(ctx));
    *n = fx_tensor_numel(y);
    fx_ctx_reset(ctx);
    return v;
}

static int cmd_forward(int argc, char **argv)
{
    const char *model = NULL, *save = NULL;
    int threads = 1, reps = 2000, warmup = 200, batch = 8;
    bool prepack = false, bf16 = false;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(f, "--prepack")) {
            prepack = true;
            continue;
        }
        if (!strcmp(f, "--bf16")) {
            bf16 = true;
            continue;
        }
        if (strcmp(f, "--model") && strcmp(f, "--threads") && strcmp(f, "--reps") &&
            strcmp(f, "--warmup") && strcmp(f, "--batch") && strcmp(f, "--save-weights"))
            die_usage("forward: unknown option '%s'", f);
        if (i + 1 >= argc)
            die_usage("forward: %s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model"))
            model = v;
        else if (!strcmp(f, "--save-weights"))
            save = v;
        else if (!strcmp(f, "--threads"))
            threads = (int)parse_int(f, v, 1, 1024);
        else if (!strcmp(f, "--batch"))
            batch = (int)parse_int(f, v, 1, 1 << 16);
        else if (!strcmp(f, "--reps"))
            reps = (int)parse_int(f, v, 1, 100000000);
        else
            warmup = (int)parse_int(f, v, 0, 100000000);
    }
    if (!model)
        die_usage("forward: --model is required (logreg, mlp, cnn, lstm)");
    const bench_model *m = NULL;
    for (int i = 0; i < NMODELS; i++)
        if (!strcmp(MODELS[i].name, model))
            m = &MODELS[i];
    if (!m)
        die_usage("forward: unknown model '%s' (logreg, mlp, cnn, lstm)", model);
#ifndef FX_HAVE_PREPACK
#endif
    fx_set_num_threads(threads);
    fx_rng *rng = fx_rng_create(1234);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_layer *net = rng ? m->build(rng) : NULL;
    if (!rng || !ctx || !net)
        die("could not build model %s", m->name);
    fx_ctx_set_grad(ctx, false);
    fx_ctx_set_training(ctx, false);

    int64_t xshape[FX_MAX_DIMS] = { batch };
    int64_t per_sample = 1;
    for (int d = 0; d < m->in_ndim; d++)
        per_sample *= xshape[d + 1] = m->in_shape[d];
    int64_t nx = batch * per_sample;
    float *hx = malloc((size_t)nx * sizeof *hx);
    double *us = malloc((size_t)reps * sizeof *us);
    fx_tensor *xs[POOL];
    if (!hx || !us)
        die("out of memory");
    for (int p = 0; p < POOL; p++) {
        for (int64_t i = 0; i < nx; i++) {
            if (m->in_dtype == FX_I32) {
                int32_t tok = (int32_t)(fx_rng_u64(rng) % (uint64_t)m->vocab);
                memcpy(&hx[i], &tok, sizeof tok);
            } else {
                hx[i] = (float)fx_rng_normal(rng);
            }
        }
        xs[p] = fx_tensor_create(fx_cpu(), m->in_dtype, m->in_ndim + 1, xshape);
        if (!xs[p] || fx_tensor_copy_from_host(xs[p], hx, (size_t)nx * 4) != FX_OK)
            die("could not make the input pool");
    }
    if (save)
        save_weights(net, ctx, xs[0], save);
    /* the fp32 outputs of the pool, before any packing (--bf16 compares) */
    float *ref[POOL] = { 0 };
    int64_t nout = 0;
    for (int p = 0; bf16 && p < POOL; p++)
        ref[p] = forward_values(net, ctx, xs[p], &nout);
    if (prepack && fx_layer_prepack_precision(net, bf16 ? FX_PREC_BF16 : FX_PREC_F32) != FX_OK)
        die("forward: fx_layer_prepack failed on model %s", m->name);
    if (bf16 && fx_ctx_set_precision(ctx, FX_PREC_BF16) != FX_OK)
        die("forward: fx_ctx_set_precision(bf16) failed");
    char acc[160] = "";
    if (bf16) {
        double max_abs = 0, max_rel = 0;
        int64_t agree = 0, rows = 0, cls = nout / batch;
        for (int p = 0; p < POOL; p++) {
            float *y = forward_values(net, ctx, xs[p], &nout);
            for (int64_t r = 0; r < batch; r++) {
                const float *a = y + r * cls, *b = ref[p] + r * cls;
                double scale = 0;
                int64_t ia = 0, ib = 0;
                for (int64_t j = 0; j < cls; j++) {
                    double d = fabs((double)a[j] - b[j]);
                    max_abs = d > max_abs ? d : max_abs;
                    scale = fabs(b[j]) > scale ? fabs(b[j]) : scale;
                    ia = a[j] > a[ia] ? j : ia;
                    ib = b[j] > b[ib] ? j : ib;
                }
                for (int64_t j = 0; j < cls && scale > 0; j++) {
                    double d = fabs((double)a[j] - b[j]) / scale;
                    max_rel = d > max_rel ? d : max_rel;
                }
                agree += ia == ib;
                rows++;
            }
            free(y);
            free(ref[p]);
        }
        snprintf(acc, sizeof acc, ",\"max_abs_err\":%.3g,\"max_rel_err\":%.3g,\"argmax_agree\":%.4f",
                 max_abs, max_rel, (double)agree / (double)rows);
    }
    double sum = 0, c0 = 0, t_all = 0;
    for (int r = 0; r < warmup + reps; r++) {
        if (r == warmup) {
            c0 = cpu_s();
            t_all = now_s();
        }
        double t = now_s();
        fx_tensor *out = fx_layer_forward(net, ctx, xs[r % POOL]);
        if (!out)
            die("forward: %s", fx_ctx_error(ctx));
        fx_ctx_reset(ctx);
        double dt = now_s() - t;
        if (r >= warmup) {
            us[r - warmup] = dt * 1e6;
            sum += dt * 1e6;
        }
    }
    double cpu_total = cpu_s() - c0, cpu = cpu_total / (now_s() - t_all);
    qsort(us, (size_t)reps, sizeof *us, cmp_double);
    printf("{\"bench\":\"forward\",\"impl\":\"fluxion\",\"model\":\"%s\",\"batch\":%d,"
           "\"threads\":%d,\"prepack\":%s,\"reps\":%d,\"median_us\":%.2f,\"p10_us\":%.2f,"
           "\"p90_us\":%.2f,\"mean_us\":%.2f,\"samples_per_s\":%.1f,\"cpu_util\":%.2f,"
           "\"cpu_us\":%.2f,\"precision\":\"%s\"%s}\n",
           m->name, batch, threads, prepack ? "true" : "false", reps, us[reps / 2],
           us[reps / 10], us[reps * 9 / 10], sum / reps, batch * 1e6 / us[reps / 2], cpu,
           cpu_total * 1e6 / reps, bf16 ? "bf16" : "fp32", acc);
    for (int p = 0; p < POOL; p++)
        fx_tensor_free(xs[p]);
    free(hx);
    free(us);
    fx_layer_free(net);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
    return 0;
}

int cmd_peak(int argc, char **argv);  /* bench_peak.c: one core's FMA peak */
int cmd_serve(int argc, char **argv); /* bench_serve.c: a ModelInfer load generator */

int main(int argc, char **argv)
{
    fx_blas_reexec_if_misdetected(argv);
    if (argc < 2)
        die_usage("missing command (train, sgemm, forward, peak or serve)");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "train"))
        return cmd_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "sgemm"))
        return cmd_sgemm(argc - 2, argv + 2);
    if (!strcmp(argv[1], "forward"))
        return cmd_forward(argc - 2, argv + 2);
    if (!strcmp(argv[1], "peak"))
        return cmd_peak(argc - 2, argv + 2);
    if (!strcmp(argv[1], "serve"))
        return cmd_serve(argc - 2, argv + 2);
    die_usage("unknown command '%s' (train, sgemm, forward, peak or serve)", argv[1]);
}
