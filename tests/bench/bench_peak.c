/*
 * bench_peak.c - `fluxion-bench peak`: one core's fp32 FMA peak.
 *
 *     fluxion-bench peak [--isa auto|avx512|avx2] [--seconds S]
 *
 * Runs a loop of independent fused multiply-adds (12 accumulators, enough
 * to cover the FMA latency on every x86 core of the last decade with two
 * FMA ports) on one thread and prints one JSON line:
 *
 *     {"bench":"peak","isa":"avx512","threads":1,"gflops":...,"seconds":...}
 *
 * Each FMA counts 2 flops per lane (16 lanes with AVX-512, 8 with AVX2).
 * It runs in ~2 ms windows for --seconds and reports the best window, so a
 * shared machine (where most windows lose time to other work) still shows
 * the core's rate.
 * The ISA is detected at run time (AVX-512F, else AVX2+FMA); the code is
 * compiled with target attributes so the binary runs on any x86-64. This
 * is the ceiling compare.sh divides the mlp step's GFLOP/s by.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cmd_peak(int argc, char **argv);

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_X86 1

/* iters rounds of 12 independent 16-lane FMAs; returns a value that
 * depends on every accumulator so the loop is not optimised away. */
__attribute__((target("avx512f"), noipa)) static float fma_loop_avx512(long iters)
{
    __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    __m512 c0 = _mm512_set1_ps(0.f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0,
           c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    /* opaque to the compiler: twelve chains it cannot merge into one */
    __asm__("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5));
    __asm__("" : "+v"(c6), "+v"(c7), "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11));
    for (long i = 0; i < iters; i++) {
        c0 = _mm512_fmadd_ps(c0, a, b);
        c1 = _mm512_fmadd_ps(c1, a, b);
        c2 = _mm512_fmadd_ps(c2, a, b);
        c3 = _mm512_fmadd_ps(c3, a, b);
        c4 = _mm512_fmadd_ps(c4, a, b);
        c5 = _mm512_fmadd_ps(c5, a, b);
        c6 = _mm512_fmadd_ps(c6, a, b);
        c7 = _mm512_fmadd_ps(c7, a, b);
        c8 = _mm512_fmadd_ps(c8, a, b);
        c9 = _mm512_fmadd_ps(c9, a, b);
        c10 = _mm512_fmadd_ps(c10, a, b);
        c11 = _mm512_fmadd_ps(c11, a, b);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                             _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"), noipa)) static float fma_loop_avx2(long iters)
{
    __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0,
           c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    __asm__("" : "+x"(c0), "+x"(c1), "+x"(c2), "+x"(c3), "+x"(c4), "+x"(c5));
    __asm__("" : "+x"(c6), "+x"(c7), "+x"(c8), "+x"(c9), "+x"(c10), "+x"(c11));
    for (long i = 0; i < iters; i++) {
        c0 = _mm256_fmadd_ps(c0, a, b);
        c1 = _mm256_fmadd_ps(c1, a, b);
        c2 = _mm256_fmadd_ps(c2, a, b);
        c3 = _mm256_fmadd_ps(c3, a, b);
        c4 = _mm256_fmadd_ps(c4, a, b);
        c5 = _mm256_fmadd_ps(c5, a, b);
        c6 = _mm256_fmadd_ps(c6, a, b);
        c7 = _mm256_fmadd_ps(c7, a, b);
        c8 = _mm256_fmadd_ps(c8, a, b);
        c9 = _mm256_fmadd_ps(c9, a, b);
        c10 = _mm256_fmadd_ps(c10, a, b);
        c11 = _mm256_fmadd_ps(c11, a, b);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float v[8];
    _mm256_storeu_ps(v, s);
    return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}
#endif

static void peak_usage(FILE *f)
{
    fprintf(f, "usage: fluxion-bench peak [--isa auto|avx512|avx2] [--seconds S]\n"
               "One core's fp32 FMA peak (independent FMAs), as one JSON line.\n"
               "  --isa      auto (default: AVX-512 when the CPU has it, else AVX2)\n"
               "  --seconds  timed seconds (default 0.5), in ~2 ms windows; the best counts\n");
}

int cmd_peak(int argc, char **argv)
{
    const char *isa = "auto";
    double seconds = 0.5;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            peak_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc || (strcmp(argv[i], "--isa") && strcmp(argv[i], "--seconds"))) {
            fprintf(stderr, "fluxion-bench peak: bad option '%s'\n", argv[i]);
            peak_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(argv[i - 1], "--isa")) {
            isa = v;
        } else {
            char *end;
            seconds = strtod(v, &end);
            if (end == v || *end || !(seconds >= 0.01 && seconds <= 60)) {
                fprintf(stderr, "fluxion-bench peak: --seconds needs a number in [0.01, 60]\n");
                return 2;
            }
        }
    }
#ifdef HAVE_X86
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f");
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int use512;
    if (!strcmp(isa, "auto"))
        use512 = has512;
    else if (!strcmp(isa, "avx512"))
        use512 = 1;
    else if (!strcmp(isa, "avx2"))
        use512 = 0;
    else {
        fprintf(stderr, "fluxion-bench peak: --isa must be auto, avx512 or avx2\n");
        return 2;
    }
    if ((use512 && !has512) || (!use512 && !has2)) {
        fprintf(stderr, "fluxion-bench peak: this CPU lacks %s\n",
                use512 ? "AVX-512F" : "AVX2+FMA");
        return 1;
    }
    int lanes = use512 ? 16 : 8;
    float sink = 0;
    /* Short windows, the best one counts: a window the scheduler did not
     * interrupt shows the core's rate even on a shared machine. Calibrate
     * one call to about 2 ms. */
    long iters = 1 << 10;
    for (;;) {
        double t = mono_s();
        sink += use512 ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
        if (mono_s() - t >= 0.002 || iters > (1L << 40))
            break;
        iters *= 2;
    }
    double best = 0, t0 = mono_s();
    long windows = 0;
    while (mono_s() - t0 < seconds || windows < 10) {
        double t = mono_s();
        sink += use512 ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
        double g = (double)iters * 12.0 * lanes * 2.0 / (mono_s() - t) * 1e-9;
        if (g > best)
            best = g;
        windows++;
    }
    volatile float keep = sink; /* the loops' results are used */
    (void)keep;
    printf("{\"bench\":\"peak\",\"isa\":\"%s\",\"threads\":1,\"gflops\":%.3f,\"seconds\":%.2f}\n",
           use512 ? "avx512" : "avx2", best, seconds);
    return 0;
#else
    (void)isa;
    (void)seconds;
    fprintf(stderr, "fluxion-bench peak: needs x86-64 (AVX-512 or AVX2)\n");
    return 1;
#endif
}
