/*
 * gemm_micro.c - the mlp's forward (784-512-256-10, relu, relu, none) at
 * batch 1, 8 and 64 on one thread: the plain path (OpenBLAS sgemm, which
 * re-packs the weights every call) against the pre-packed path
 * (fx_layer_prepack, engine/cpu/gemm_packed.c), and, when built with
 * oneDNN (FX_BENCH_DNNL), oneDNN's matmul with constant weights reordered
 * once into its blocked layout and relu as a post-op. A measurement, not a
 * test: prints best and median microseconds per forward over N runs, the
 * GFLOP/s of the best run and its fraction of one core's FMA peak (247
 * GFLOP/s here, override with FX_PEAK_GFLOPS), and the load average.
 *
 *     build/fluxion-gemm-micro [reps [isa]]   (FX_NUM_THREADS=1 by default)
 *
 * isa forces the packed kernel: 1 portable, 2 AVX2, 3 AVX-512 (default: the
 * best this CPU has).
 */
#define _GNU_SOURCE
#include "../../../engine/fluxion.h"
#include "../../../engine/kern_packed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef FX_BENCH_DNNL
#include <dnnl.h>
#endif

static const int64_t dims[4] = { 784, 512, 256, 10 };
static const fx_activation acts[3] = { FX_ACT_RELU, FX_ACT_RELU, FX_ACT_NONE };

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* One core's fp32 FMA peak now (GFLOP/s): 24 independent AVX-512 FMA chains,
 * best of 300 runs of ~0.2 ms; 0 without AVX-512. The machine is shared: the fraction of
 * this figure says how close a kernel is to what the core gives it now. */
#if defined(__x86_64__) && defined(__GNUC__)
#define FMA_PEAK(NAME, ATTR, VW, FEATURE)                                                        \
    ATTR static double NAME(void)                                                                \
    {                                                                                            \
        typedef float vf __attribute__((vector_size(VW * 4)));                                   \
        if (!__builtin_cpu_supports(FEATURE))                                                    \
            return 0;                                                                            \
        double best = 0;                                                                         \
        for (int rep = 0; rep < 300; rep++) {                                                    \
            vf acc[24], m = (vf){ 0 } + 0.999999f, a = (vf){ 0 } + 1e-7f;                       \
            _Pragma("GCC unroll 24") for (int i = 0; i < 24; i++) acc[i] = (vf){ 0 } + (float)i; \
            const long iters = 20000;                                                            \
            struct timespec t0, t1;                                                              \
            clock_gettime(CLOCK_MONOTONIC, &t0);                                                 \
            for (long it = 0; it < iters; it++) {                                                \
                _Pragma("GCC unroll 24") for (int i = 0; i < 24; i++) acc[i] = acc[i] * m + a;   \
            }                                                                                    \
            clock_gettime(CLOCK_MONOTONIC, &t1);                                                 \
            float sink = 0;                                                                      \
            _Pragma("GCC unroll 24") for (int i = 0; i < 24; i++) sink += acc[i][0];             \
            __asm__ volatile("" ::"x"(sink));                                                    \
            double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9; \
            double gf = 24.0 * 2.0 * VW * (double)iters / s / 1e9;                               \
            if (gf > best)                                                                       \
                best = gf;                                                                       \
        }                                                                                        \
        return best;                                                                             \
    }
FMA_PEAK(fma_peak_zmm, __attribute__((target("avx512f,fma"))), 16, "avx512f")
FMA_PEAK(fma_peak_ymm, __attribute__((target("avx2,fma"))), 8, "avx2")
static double fma_peak_now(void)
{
    double z = fma_peak_zmm(), y = fma_peak_ymm();
    printf("FMA peak now: %.1f GFLOP/s with 512-bit FMAs, %.1f with 256-bit\n", z, y);
    return z > y ? z : y;
}
#else
static double fma_peak_now(void) { return 0; }
#endif

static double peak_now;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double flops(int64_t batch)
{
    double f = 0;
    for (int l = 0; l < 3; l++)
        f += 2.0 * (double)batch * (double)dims[l] * (double)dims[l + 1];
    return f;
}

static void report(const char *what, int64_t batch, double *t, int n, double peak)
{
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    double best = t[0], med = t[n / 2], gf = flops(batch) / best / 1e3;
    printf("%-10s batch %3lld  best %8.1f us  median %8.1f us  %6.1f GFLOP/s  %5.1f%% of peak"
           "  %5.1f%% of peak now\n", what, (long long)batch, best, med, gf, 100.0 * gf / peak,
           peak_now > 0 ? 100.0 * gf / peak_now : 0.0);
}

/* One forward through the engine; the packed path when the net is packed. */
static double engine_forward(fx_layer *net, fx_ctx *ctx, fx_tensor *x)
{
    double t0 = now_us();
    fx_tensor *y = fx_layer_forward(net, ctx, x);
    double t1 = now_us();
    if (!y) {
        fprintf(stderr, "forward failed: %s\n", fx_ctx_error(ctx));
        exit(1);
    }
    return t1 - t0;
}

#ifdef FX_BENCH_DNNL
#define DN(call)                                                                                 \
    do {                                                                                         \
        dnnl_status_t s_ = (call);                                                               \
        if (s_ != dnnl_success) {                                                                \
            fprintf(stderr, "%s: %d\n", #call, (int)s_);                                         \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_t src, wts, bias, dst;
} dn_layer;

/* One matmul layer: src [M,K] x weights [K,N] (blocked, reordered once) +
 * bias, relu post-op; dst [M,N]. src is the previous layer's dst memory. */
static void dn_make(dnnl_engine_t eng, dnnl_stream_t st, int64_t M, int64_t K, int64_t N,
                    const float *W, const float *B, bool relu, dnnl_memory_t src, dn_layer *L)
{
    dnnl_memory_desc_t smd, wmd_any, wmd_plain, bmd, dmd;
    DN(dnnl_memory_desc_init_by_tag(&smd, 2, (dnnl_dims_t){ M, K }, dnnl_f32, dnnl_ab));
    DN(dnnl_memory_desc_init_by_tag(&wmd_any, 2, (dnnl_dims_t){ K, N }, dnnl_f32,
                                    dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&wmd_plain, 2, (dnnl_dims_t){ K, N }, dnnl_f32, dnnl_ba));
    DN(dnnl_memory_desc_init_by_tag(&bmd, 2, (dnnl_dims_t){ 1, N }, dnnl_f32, dnnl_ab));
    DN(dnnl_memory_desc_init_by_tag(&dmd, 2, (dnnl_dims_t){ M, N }, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t md;
    DN(dnnl_matmul_desc_init(&md, &smd, &wmd_any, &bmd, &dmd));
    dnnl_primitive_attr_t attr;
    DN(dnnl_primitive_attr_create(&attr));
    if (relu) {
        dnnl_post_ops_t po;
        DN(dnnl_post_ops_create(&po));
        DN(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
        DN(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd;
    DN(dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL));
    dnnl_primitive_attr_destroy(attr);
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t wplain;
    /* W is [N,K] row-major = [K,N] in format ba */
    DN(dnnl_memory_create(&wplain, &wmd_plain, eng, (void *)W));
    DN(dnnl_memory_create(&L->wts, wmd, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t rpd;
    DN(dnnl_reorder_primitive_desc_create(&rpd, &wmd_plain, eng, wmd, eng, NULL));
    dnnl_primitive_t reorder;
    DN(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t rargs[2] = { { DNNL_ARG_FROM, wplain }, { DNNL_ARG_TO, L->wts } };
    DN(dnnl_primitive_execute(reorder, st, 2, rargs));
    DN(dnnl_stream_wait(st));
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(wplain);
    DN(dnnl_memory_create(&L->bias, &bmd, eng, (void *)B));
    DN(dnnl_memory_create(&L->dst, &dmd, eng, DNNL_MEMORY_ALLOCATE));
    L->src = src;
    DN(dnnl_primitive_create(&L->prim, pd));
    dnnl_primitive_desc_destroy(pd);
}

static double dn_forward(dnnl_stream_t st, dn_layer *L)
{
    double t0 = now_us();
    for (int l = 0; l < 3; l++) {
        dnnl_exec_arg_t a[4] = { { DNNL_ARG_SRC, L[l].src }, { DNNL_ARG_WEIGHTS, L[l].wts },
                                 { DNNL_ARG_BIAS, L[l].bias }, { DNNL_ARG_DST, L[l].dst } };
        DN(dnnl_primitive_execute(L[l].prim, st, 4, a));
    }
    DN(dnnl_stream_wait(st));
    return now_us() - t0;
}
#endif

static fx_layer *make_net(uint64_t seed)
{
    fx_rng *rng = fx_rng_create(seed);
    fx_layer *ls[3];
    for (int l = 0; l < 3; l++) {
        fx_dense_opts o = { .act = acts[l] };
        char nm[8];
        snprintf(nm, sizeof nm, "fc%d", l);
        ls[l] = fx_dense_create(nm, dims[l], dims[l + 1], &o, rng);
        if (ls[l])
            fx_init_tensor(fx_layer_param(ls[l], "bias"), FX_INIT_UNIFORM, -0.1, 0.1, rng);
    }
    fx_rng_free(rng);
    return fx_chain_create("mlp", 3, ls);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 2000;
    if (reps < 3)
        reps = 3;
    if (argc > 2)
        fx__packed_isa = atoi(argv[2]);
    if (!getenv("FX_NUM_THREADS"))
        fx_set_num_threads(1);
    double peak = getenv("FX_PEAK_GFLOPS") ? atof(getenv("FX_PEAK_GFLOPS")) : 247.0;
    double la[3] = { 0 };
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3)
            la[0] = la[1] = la[2] = -1;
        fclose(f);
    }
    peak_now = fma_peak_now();
    printf("one core's FMA peak measured now: %.1f GFLOP/s (quiet machine: %.0f)\n", peak_now,
           peak);
    printf("mlp 784-512-256-10 forward, %d threads, packed kernel %s, blas core %s, "
           "load average %.2f %.2f %.2f, %d runs each (interleaved)\n",
           fx_get_num_threads(), fx__packed_kernel_name(), fx_blas_core(), la[0], la[1], la[2],
           reps);
    fx_rng *rng = fx_rng_create(7);
    fx_layer *net = make_net(1), *pnet = make_net(1); /* the same weights */
    if (!net || !pnet || fx_layer_prepack(pnet) != FX_OK || fx_layer_num_packed(pnet) != 3) {
        fprintf(stderr, "could not build or pack the mlp\n");
        return 1;
    }
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_ctx_set_grad(ctx, false);
    fx_ctx_set_training(ctx, false);
    static const int64_t batches[3] = { 1, 8, 64 };
    double *ta = malloc(sizeof(double) * (size_t)reps), *tb = malloc(sizeof(double) * (size_t)reps);
    double *tc = malloc(sizeof(double) * (size_t)reps);
    for (int bi = 0; bi < 3; bi++) {
        int64_t B = batches[bi];
        float *xh = malloc(sizeof(float) * (size_t)(B * dims[0]));
        for (int64_t i = 0; i < B * dims[0]; i++)
            xh[i] = (float)fx_rng_uniform(rng);
#ifdef FX_BENCH_DNNL
        dnnl_engine_t eng;
        dnnl_stream_t st;
        DN(dnnl_engine_create(&eng, dnnl_cpu, 0));
        DN(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
        dnnl_memory_desc_t xmd;
        DN(dnnl_memory_desc_init_by_tag(&xmd, 2, (dnnl_dims_t){ B, dims[0] }, dnnl_f32, dnnl_ab));
        dnnl_memory_t xm;
        DN(dnnl_memory_create(&xm, &xmd, eng, xh));
        dn_layer dl[3];
        for (int l = 0; l < 3; l++) {
            char wn[16], bn[16];
            snprintf(wn, sizeof wn, "fc%d.weight", l);
            snprintf(bn, sizeof bn, "fc%d.bias", l);
            dn_make(eng, st, B, dims[l], dims[l + 1],
                    (const float *)fx_layer_param(net, wn)->storage->ptr,
                    (const float *)fx_layer_param(net, bn)->storage->ptr, acts[l] == FX_ACT_RELU,
                    l ? dl[l - 1].dst : xm, &dl[l]);
        }
#endif
        for (int r = 0; r < reps + 20; r++) {
            int i = r - 20; /* 20 warm-up rounds */
            fx_ctx_reset(ctx);
            fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, (int64_t[]){ B, dims[0] }, xh);
            double a = engine_forward(net, ctx, x);
            double b = engine_forward(pnet, ctx, x);
            double c = 0;
#ifdef FX_BENCH_DNNL
            c = dn_forward(st, dl);
#endif
            if (i >= 0) {
                ta[i] = a;
                tb[i] = b;
                tc[i] = c;
            }
        }
        report("openblas", B, ta, reps, peak);
        report("packed", B, tb, reps, peak);
#ifdef FX_BENCH_DNNL
        report("onednn", B, tc, reps, peak);
        for (int l = 0; l < 3; l++) {
            dnnl_primitive_destroy(dl[l].prim);
            dnnl_memory_destroy(dl[l].wts);
            dnnl_memory_destroy(dl[l].bias);
            dnnl_memory_destroy(dl[l].dst);
        }
        dnnl_memory_destroy(xm);
        dnnl_stream_destroy(st);
        dnnl_engine_destroy(eng);
#endif
        free(xh);
    }
    free(ta);
    free(tb);
    free(tc);
    fx_ctx_free(ctx);
    fx_layer_free(net);
    fx_layer_free(pnet);
    fx_rng_free(rng);
    return 0;
}
