/* test_bf16.c - bf16 products (engine/cpu/gemm_bf16.c): the rounding, the
 * precision API, the packed inference kernels (fx_layer_prepack_precision)
 * and the general per-call product (the blas table's gemm_bf16).
 *
 * Two references per product. Tight: the product in double of the operands
 * rounded to bf16 as the kernels round them (fx__bf16_from_f32); the kernels
 * add only fp32 rounding of the sums, bounded by (K + 1) * 2^-23 *
 * sum_k |a_k b_k| (+1e-6; products of two bf16 are exact in fp32). Loose:
 * the product in double of the fp32 operands, where each operand's rounding
 * costs up to 2^-9 relative, so |diff| <= 2^-7 * sum_k |a_k b_k| (a bound,
 * twice the worst case of 2 * 2^-9 + 2^-18) plus the tight one.
 * Every kernel this CPU can run is forced (fx__bf16_isa); shapes are ragged
 * (M 1..130, odd K and N, K = 1); the threaded split equals the serial
 * result bit for bit. After a warm-up, the products and a bf16-packed
 * forward allocate nothing (the project's steady-state rule; the test links
 * tests/unit/allochooks.c, skipped under sanitizers).
 */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "allochooks.h"
#include "kern_packed.h"

/* The kernels this CPU can run, as fx__bf16_isa values. */
static int isas(int *out)
{
    int n = 0;
    static const char *names[] = { NULL, "portable", "avx512", "avx512bf16" };
    for (int i = 1; i <= 3; i++) {
        fx__bf16_isa = i;
        if (strcmp(fx__bf16_kernel_name(), names[i]) == 0)
            out[n++] = i;
    }
    fx__bf16_isa = 0;
    return n;
}

static double rb(float f) { return fx__bf16_to_f32(fx__bf16_from_f32(f)); }

static float *nan_buf(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    assert_non_null(p);
    memset(p, 0xff, sizeof(float) * (size_t)(n ? n : 1));
    return p;
}

/* ------------------------------------------------------------ rounding */

static void test_round(void **state)
{
    (void)state;
    /* bit patterns and what vcvtneps2bf16 makes of them (checked on an
     * AVX-512 BF16 CPU): ties to even, subnormals to signed zero, NaN kept
     * quiet, the largest float rounds to infinity */
    static const uint32_t in[][2] = {
        { 0x3f800000, 0x3f80 }, { 0x3f808000, 0x3f80 }, { 0x3f818000, 0x3f82 },
        { 0x3f80c000, 0x3f81 }, { 0x3f807fff, 0x3f80 }, { 0x00000001, 0x0000 },
        { 0x80000001, 0x8000 }, { 0x007fffff, 0x0000 }, { 0x7f800001, 0x7fc0 },
        { 0xff800000, 0xff80 }, { 0x7f7fffff, 0x7f80 }, { 0x7fc00001, 0x7fc0 },
        { 0x80000000, 0x8000 }, { 0xc0490fdb, 0xc049 }, { 0x00800000, 0x0080 },
    };
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        float f;
        memcpy(&f, &in[i][0], sizeof f);
        if (fx__bf16_from_f32(f) != in[i][1])
            fail_msg("bf16(0x%08x) = 0x%04x, expected 0x%04x", in[i][0],
                     fx__bf16_from_f32(f), in[i][1]);
    }
    assert_true(fx__bf16_to_f32(0x3f80) == 1.0f);
    assert_true(fx__bf16_to_f32(0xc049) == -3.140625f);
}

/* ----------------------------------------------------------------- API */

static void test_api(void **state)
{
    (void)state;
    fx_precision p = FX_PREC_BF16;
    assert_string_equal(fx_precision_name(FX_PREC_F32), "fp32");
    assert_string_equal(fx_precision_name(FX_PREC_BF16), "bf16");
    assert_null(fx_precision_name((fx_precision)7));
    assert_true(fx_precision_parse("fp32", &p) && p == FX_PREC_F32);
    assert_true(fx_precision_parse("bf16", &p) && p == FX_PREC_BF16);
    assert_false(fx_precision_parse("BF16", &p));
    assert_false(fx_precision_parse("fp16", &p));
    assert_false(fx_precision_parse("", &p));
    assert_false(fx_precision_parse(NULL, &p));
    assert_true(p == FX_PREC_BF16); /* untouched by the failures */

    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_int_equal(fx_ctx_precision(ctx), FX_PREC_F32);
    assert_int_equal(fx_ctx_set_precision(ctx, FX_PREC_BF16), FX_OK);
    assert_int_equal(fx_ctx_precision(ctx), FX_PREC_BF16);
    fx_ctx_reset(ctx);
    assert_int_equal(fx_ctx_precision(ctx), FX_PREC_BF16);
    assert_int_equal(fx_ctx_set_precision(ctx, (fx_precision)2), FX_ERR_ARG);
    assert_int_equal(fx_ctx_set_precision(ctx, (fx_precision)-1), FX_ERR_ARG);
    assert_int_equal(fx_ctx_precision(ctx), FX_PREC_BF16);
    assert_int_equal(fx_ctx_set_precision(ctx, FX_PREC_F32), FX_OK);
    assert_int_equal(fx_ctx_precision(ctx), FX_PREC_F32);
    assert_int_equal(fx_ctx_set_precision(NULL, FX_PREC_BF16), FX_ERR_ARG);
    assert_int_equal(fx_ctx_precision(NULL), FX_PREC_F32);
    fx_ctx_free(ctx);

    /* the CPU backend has the entry; the best kernel is the native one
     * exactly when the CPU has bf16 */
    assert_non_null(fx__cpu_backend.blas->gemm_bf16);
    fx__bf16_isa = 0;
    assert_int_equal(fx_cpu_has_bf16(), strcmp(fx__bf16_kernel_name(), "avx512bf16") == 0);
    assert_int_equal(fx_layer_prepack_precision(NULL, FX_PREC_BF16), FX_ERR_ARG);
}

/* -------------------------------------------------------- packed kernels */

static double act_ref(fx_activation act, double v)
{
    switch (act) {
    case FX_ACT_RELU: return v > 0 ? v : 0;
    case FX_ACT_LEAKY_RELU: return v > 0 ? v : 0.01 * v;
    case FX_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case FX_ACT_TANH: return tanh(v);
    case FX_ACT_GELU: return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    case FX_ACT_ELU: return v > 0 ? v : expm1(v);
    default: return v;
    }
}

static const fx_activation fused[] = { FX_ACT_NONE, FX_ACT_RELU,  FX_ACT_LEAKY_RELU,
                                       FX_ACT_SIGMOID, FX_ACT_TANH, FX_ACT_GELU, FX_ACT_ELU };

static void check_packed(fx_rng *rng, int64_t M, int64_t K, int64_t N, int isa, bool bias)
{
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(M, K), 1.0, 0.0);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(N, K), 1.0 / sqrt((double)K), 0.0);
    fx_tensor *b = bias ? tu_randn(rng, 1, TU_SHAPE(N), 0.5, 0.0) : NULL;
    fx_packed *p = fx__pack_create_precision(w, b, FX_PREC_BF16);
    assert_non_null(p);
    assert_true(fx__pack_valid(p, w, b));
    float *X = tu_values(x), *W = tu_values(w), *Bv = b ? tu_values(b) : NULL;
    size_t mn = (size_t)(M * N);
    double *ref = malloc(sizeof(double) * mn), *ref32 = malloc(sizeof(double) * mn),
           *tol = malloc(sizeof(double) * mn), *sabs = malloc(sizeof(double) * mn);
    float *Y = nan_buf(M * N), *Y0 = nan_buf(M * N);
    assert_true(ref && ref32 && tol && sabs);
    for (int64_t i = 0; i < M; i++)
        for (int64_t n = 0; n < N; n++) {
            double s = Bv ? Bv[n] : 0.0, s32 = s, a = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double t = rb(X[i * K + k]) * rb(W[n * K + k]);
                s += t;
                a += fabs(t);
                s32 += (double)X[i * K + k] * W[n * K + k];
            }
            ref[i * N + n] = s;
            ref32[i * N + n] = s32;
            sabs[i * N + n] = a + (Bv ? fabs(Bv[n]) : 0.0);
            tol[i * N + n] = (double)(K + 1) * 0x1p-23 * sabs[i * N + n] + 1e-6;
        }
    fx__bf16_isa = isa;
    fx__packed_gemm(p, M, X, K, Y0, N, FX_ACT_NONE);
    for (size_t j = 0; j < mn; j++) {
        if (!(fabs(Y0[j] - ref[j]) <= tol[j]))
            fail_msg("isa %d M %lld K %lld N %lld: y[%zu] = %.9g, bf16 reference %.9g", isa,
                     (long long)M, (long long)K, (long long)N, j, Y0[j], ref[j]);
        if (!(fabs(Y0[j] - ref32[j]) <= 0x1p-7 * sabs[j] + tol[j]))
            fail_msg("isa %d M %lld K %lld N %lld: y[%zu] = %.9g, fp32 reference %.9g", isa,
                     (long long)M, (long long)K, (long long)N, j, Y0[j], ref32[j]);
    }
    for (size_t ai = 1; ai < sizeof fused / sizeof *fused; ai++) {
        fx_activation act = fused[ai];
        memset(Y, 0xff, sizeof(float) * mn);
        fx__packed_gemm(p, M, X, K, Y, N, act);
        for (size_t j = 0; j < mn; j++) {
            double want = act_ref(act, Y0[j]);
            if (!(fabs(Y[j] - want) <= 1e-6 * (1.0 + fabs(want))))
                fail_msg("isa %d act %d M %lld K %lld N %lld: y[%zu] = %.9g, act(y) %.9g", isa,
                         (int)act, (long long)M, (long long)K, (long long)N, j, Y[j], want);
        }
    }
    fx__bf16_isa = 0;
    fx__pack_free(p);
    free(ref);
    free(ref32);
    free(tol);
    free(sabs);
    free(Y);
    free(Y0);
    free(X);
    free(W);
    free(Bv);
    tu_free_all(3, (fx_tensor *[]){ x, w, b });
}

static void test_packed_shapes(void **state)
{
    (void)state;
    int set[3], n = isas(set);
    assert_true(n >= 1);
    fx_rng *rng = fx_rng_create(17);
    static const int64_t Ms[] = { 1, 2, 3, 5, 8, 11, 12, 13, 17, 25, 64, 130 };
    static const int64_t KN[][2] = { { 1, 1 }, { 2, 3 }, { 3, 5 }, { 17, 33 }, { 31, 47 },
                                     { 64, 10 }, { 129, 65 }, { 8, 96 } };
    for (int i = 0; i < n; i++)
        for (size_t m = 0; m < sizeof Ms / sizeof *Ms; m++)
            for (size_t s = 0; s < sizeof KN / sizeof *KN; s++)
                check_packed(rng, Ms[m], KN[s][0], KN[s][1], set[i], (m + s) % 3 != 0);
    for (int i = 0; i < n; i++) { /* the mlp's first layer at serving batch sizes */
        check_packed(rng, 1, 784, 512, set[i], true);
        check_packed(rng, 8, 784, 512, set[i], true);
        check_packed(rng, 13, 785, 257, set[i], false);
    }
    fx_rng_free(rng);
}

/* ---------------------------------------------------------- general gemm */

/* C_i = alpha op(A_i) op(B_i) + beta C_i through the CPU table's gemm_bf16,
 * against the double references (C starts as C0; NaN when beta is 0: it
 * must not be read). */
static void check_gemm(fx_rng *rng, int64_t batch, bool ta, bool tb, int64_t M, int64_t N,
                       int64_t K, float alpha, float beta, bool shared_b, bool sum_c, int isa)
{
    int64_t sa = M * K, sb = shared_b ? 0 : K * N, sc = sum_c ? 0 : M * N;
    int64_t nc = sum_c ? M * N : batch * M * N;
    fx_tensor *a = tu_randn(rng, 1, TU_SHAPE(batch * sa + 1), 1.0, 0.0);
    fx_tensor *b = tu_randn(rng, 1, TU_SHAPE(shared_b ? K * N + 1 : batch * sb + 1), 0.3, 0.1);
    fx_tensor *c = tu_randn(rng, 1, TU_SHAPE(nc ? nc : 1), 1.0, 0.0);
    float *A = tu_values(a), *B = tu_values(b), *C = tu_values(c);
    if (beta == 0.0f) {
        memset(C, 0xff, sizeof(float) * (size_t)(nc ? nc : 1));
        assert_int_equal(fx_tensor_copy_from_host(c, C, sizeof(float) * (size_t)(nc ? nc : 1)),
                         FX_OK);
    }
    double *ref = malloc(sizeof(double) * (size_t)(nc ? nc : 1)),
           *tol = malloc(sizeof(double) * (size_t)(nc ? nc : 1));
    assert_true(ref && tol);
    for (int64_t j = 0; j < nc; j++) {
        ref[j] = beta == 0.0f ? 0.0 : C[j];
        tol[j] = 1e-6;
    }
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    for (int64_t t = 0; t < batch; t++) {
        const float *At = A + t * sa, *Bt = B + t * sb;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0.0, s_abs = 0.0;
                for (int64_t k = 0; k < K; k++) {
                    double v = rb(ta ? At[k * lda + i] : At[i * lda + k]) *
                               rb(tb ? Bt[j * ldb + k] : Bt[k * ldb + j]);
                    s += v;
                    s_abs += fabs(v);
                }
                double *r = ref + t * sc + i * N + j;
                *r = beta * *r + alpha * s;
                tol[t * sc + i * N + j] += (double)(K + 2) * 0x1p-23 *
                                           (fabs(alpha) * s_abs + fabs(*r)) + 1e-6;
            }
    }
    fx__bf16_isa = isa;
    fx__cpu_backend.blas->gemm_bf16(batch, ta, tb, M, N, K, alpha, a, sa, b, sb, beta, c, sc);
    fx__bf16_isa = 0;
    float *Y = tu_values(c);
    for (int64_t j = 0; j < nc; j++)
        if (!(fabs(Y[j] - ref[j]) <= tol[j]))
            fail_msg("isa %d batch %lld ta %d tb %d M %lld N %lld K %lld alpha %g beta %g: "
                     "c[%lld] = %.9g, reference %.9g", isa, (long long)batch, ta, tb,
                     (long long)M, (long long)N, (long long)K, alpha, beta, (long long)j, Y[j],
                     ref[j]);
    free(A);
    free(B);
    free(C);
    free(Y);
    free(ref);
    free(tol);
    tu_free_all(3, (fx_tensor *[]){ a, b, c });
}

static void test_gemm(void **state)
{
    (void)state;
    int set[3], n = isas(set);
    fx_rng *rng = fx_rng_create(23);
    static const int64_t shapes[][3] = { { 1, 1, 1 },   { 1, 10, 7 },  { 3, 5, 2 },
                                         { 13, 33, 17 }, { 12, 32, 64 }, { 25, 70, 129 },
                                         { 64, 10, 3 },  { 130, 41, 9 }, { 7, 100, 0 } };
    for (int i = 0; i < n; i++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int t = 0; t < 4; t++) {
                int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                check_gemm(rng, 1, t & 1, t & 2, M, N, K, 1.0f, 0.0f, false, false, set[i]);
                check_gemm(rng, 1, t & 1, t & 2, M, N, K, -0.5f, 1.0f, false, false, set[i]);
                check_gemm(rng, 3, t & 1, t & 2, M, N, K, 2.0f, 0.25f, s % 2, false, set[i]);
            }
    /* the mlp's step: forward (tb), dX (no trans), dW (ta) */
    for (int i = 0; i < n; i++) {
        check_gemm(rng, 1, false, true, 64, 512, 784, 1.0f, 1.0f, false, false, set[i]);
        check_gemm(rng, 1, false, false, 64, 784, 512, 1.0f, 1.0f, false, false, set[i]);
        check_gemm(rng, 1, true, false, 512, 784, 64, 1.0f, 1.0f, false, false, set[i]);
    }
    fx_rng_free(rng);
}

/* Several products summed into one C (stride_c 0), in order. */
static void test_gemm_sum(void **state)
{
    (void)state;
    int set[3], n = isas(set);
    fx_rng *rng = fx_rng_create(29);
    for (int i = 0; i < n; i++) {
        check_gemm(rng, 4, false, true, 9, 21, 13, 1.0f, 1.0f, false, true, set[i]);
        check_gemm(rng, 3, true, false, 40, 33, 5, 0.5f, 1.0f, false, true, set[i]);
    }
    fx_rng_free(rng);
}

/* ------------------------------------------------------------- threads */

static void test_threads(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(3);
    int64_t M = 64, K = 785, N = 500;
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(M, K), 1.0, 0.0);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(N, K), 0.05, 0.0);
    fx_tensor *b = tu_randn(rng, 1, TU_SHAPE(N), 0.5, 0.0);
    fx_tensor *dy = tu_randn(rng, 2, TU_SHAPE(M, N), 1.0, 0.0);
    fx_tensor *c = tu_randn(rng, 2, TU_SHAPE(K, N), 1.0, 0.0);
    fx_packed *p = fx__pack_create_precision(w, b, FX_PREC_BF16);
    float *X = tu_values(x), *C0 = tu_values(c);
    size_t bytes = sizeof(float) * (size_t)(M * N);
    float *Y1 = malloc(bytes), *Y2 = malloc(bytes);
    int old = fx_get_num_threads();
    int set[3], n = isas(set);
    for (int i = 0; i < n; i++) {
        fx__bf16_isa = set[i];
        fx_set_num_threads(1);
        fx__packed_gemm(p, M, X, K, Y1, N, FX_ACT_GELU);
        fx_set_num_threads(3);
        fx__packed_gemm(p, M, X, K, Y2, N, FX_ACT_GELU);
        assert_memory_equal(Y1, Y2, bytes);
        /* the general product: y = x w^T (rows split), dW-like x^T dy into
         * [K, N] (tall), each serial and threaded */
        float *R[2][2];
        for (int nt = 0; nt < 2; nt++) {
            fx_set_num_threads(nt ? 3 : 1);
            fx_tensor *y = tu_randn(rng, 2, TU_SHAPE(M, N), 1.0, 0.0);
            fx__cpu_backend.blas->gemm_bf16(1, false, true, M, N, K, 1.0f, x, 0, w, 0, 0.0f, y,
                                            0);
            R[nt][0] = tu_values(y);
            fx_tensor_copy_from_host(c, C0, sizeof(float) * (size_t)(K * N));
            fx__cpu_backend.blas->gemm_bf16(1, true, false, K, N, M, 1.0f, x, 0, dy, 0, 1.0f, c,
                                            0);
            R[nt][1] = tu_values(c);
            fx_tensor_free(y);
        }
        assert_memory_equal(R[0][0], R[1][0], bytes);
        assert_memory_equal(R[0][1], R[1][1], sizeof(float) * (size_t)(K * N));
        for (int t = 0; t < 4; t++)
            free(R[t / 2][t % 2]);
    }
    fx__bf16_isa = 0;
    fx_set_num_threads(old);
    fx__pack_free(p);
    free(X);
    free(C0);
    free(Y1);
    free(Y2);
    tu_free_all(5, (fx_tensor *[]){ x, w, b, dy, c });
    fx_rng_free(rng);
}

/* A thread's scratch goes with it (the ASan build's leak check sees it
 * otherwise); its products equal the main thread's. */
typedef struct {
    const fx_packed *p;
    const float *X;
    float *Y;
} thread_job;

static void *thread_forward(void *arg)
{
    thread_job *j = arg;
    fx__packed_gemm(j->p, 20, j->X, 45, j->Y, 33, FX_ACT_NONE);
    return NULL;
}

static void test_thread_exit(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(8);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(20, 45), 1.0, 0.0);
    fx_tensor *w = tu_randn(rng, 2, TU_SHAPE(33, 45), 0.2, 0.0);
    fx_packed *p = fx__pack_create_precision(w, NULL, FX_PREC_BF16);
    float *X = tu_values(x), Y0[20 * 33], Y1[20 * 33];
    fx__packed_gemm(p, 20, X, 45, Y0, 33, FX_ACT_NONE);
    for (int i = 0; i < 3; i++) {
        thread_job j = { p, X, Y1 };
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, thread_forward, &j), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_memory_equal(Y0, Y1, sizeof Y0);
    }
    fx__pack_free(p);
    free(X);
    tu_free_all(2, (fx_tensor *[]){ x, w });
    fx_rng_free(rng);
}

/* -------------------------------------------------------------- layers */

static fx_layer *make_net(uint64_t seed)
{
    fx_rng *rng = fx_rng_create(seed);
    fx_layer *l1 = fx_dense_create("fc1", 37, 70, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng);
    fx_layer *l2 = fx_dense_create("fc2", 70, 33, &(fx_dense_opts){ .act = FX_ACT_TANH }, rng);
    fx_layer *l3 = fx_dense_create("fc3", 33, 9, &(fx_dense_opts){ .no_bias = true }, rng);
    fx_layer *net = fx_chain_create("net", 3, (fx_layer *[]){ l1, l2, l3 });
    assert_non_null(net);
    fx_rng_free(rng);
    return net;
}

static float *forward(fx_layer *net, fx_ctx *ctx, fx_tensor *x, fx_precision prec)
{
    fx_ctx_reset(ctx);
    fx_ctx_set_grad(ctx, false);
    assert_int_equal(fx_ctx_set_precision(ctx, prec), FX_OK);
    fx_tensor *y = fx_layer_forward(net, ctx, x);
    if (!y)
        fail_msg("forward: %s", fx_ctx_error(ctx));
    return tu_values(y);
}

/* A bf16-packed net answers, in a bf16 context, within the bf16 bound of
 * the fp32 net (three layers: a few 2^-8 relative of the logits' scale),
 * and an fp32 context does not use the bf16 pack (the plain fp32 path,
 * bit for bit); a weight written through the API makes the pack stale, and
 * packing again in fp32 replaces it. */
static void test_layer(void **state)
{
    (void)state;
    fx_rng *rng = fx_rng_create(5);
    fx_layer *net = make_net(9);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(21, 37), 1.0, 0.0);
    float *ref = forward(net, ctx, x, FX_PREC_F32);
    assert_int_equal(fx_layer_prepack_precision(net, (fx_precision)5), FX_ERR_ARG);
    assert_int_equal(fx_layer_num_packed(net), 0);
    assert_int_equal(fx_layer_prepack_precision(net, FX_PREC_BF16), FX_OK);
    assert_int_equal(fx_layer_num_packed(net), 3);
    int set[3], n = isas(set);
    float *first = NULL;
    double maxd = 0.0;
    for (int i = 0; i < n; i++) {
        fx__bf16_isa = set[i];
        float *y = forward(net, ctx, x, FX_PREC_BF16);
        for (int j = 0; j < 21 * 9; j++) {
            double d = fabs(y[j] - ref[j]);
            maxd = d > maxd ? d : maxd;
            if (!(d <= 0.03 * (1.0 + fabs(ref[j]))))
                fail_msg("isa %d: bf16 y[%d] = %.9g, fp32 %.9g", set[i], j, y[j], ref[j]);
            /* the portable and AVX-512F kernels do the same operations in
             * the same order: equal; vdpbf16ps is specified to as well
             * (odd product, then even, each sum rounded), but flushes
             * subnormals: near */
            if (first && set[i] == 2 && y[j] != first[j])
                fail_msg("isa 2: y[%d] = %.9g, portable %.9g", j, y[j], first[j]);
            if (first && !(fabs(y[j] - first[j]) <= 1e-5 * (1.0 + fabs(first[j]))))
                fail_msg("isa %d: y[%d] = %.9g, isa %d gave %.9g", set[i], j, y[j], set[0],
                         first[j]);
        }
        if (first)
            free(y);
        else
            first = y;
    }
    fx__bf16_isa = 0;
    assert_true(maxd > 0.0); /* it did round: not the fp32 path */
    float *y = forward(net, ctx, x, FX_PREC_F32);
    assert_memory_equal(y, ref, sizeof(float) * 21 * 9);
    free(y);

    /* stale after a write: the layer's own pack is no longer counted */
    fx_tensor *w1 = fx_layer_param(net, "fc1.weight");
    float *W1 = tu_values(w1);
    assert_int_equal(fx_tensor_copy_from_host(w1, W1, sizeof(float) * 70 * 37), FX_OK);
    assert_int_equal(fx_layer_num_packed(net), 2);
    /* fp32 pack over the bf16 one */
    assert_int_equal(fx_layer_prepack_precision(net, FX_PREC_F32), FX_OK);
    y = forward(net, ctx, x, FX_PREC_F32);
    for (int j = 0; j < 21 * 9; j++)
        assert_true(fabs(y[j] - ref[j]) <= 1e-5 * (1.0 + fabs(ref[j])));
    free(y);
    /* both precisions packed side by side: each context takes its own */
    assert_int_equal(fx_layer_num_packed(net), 3 + 2);
    assert_int_equal(fx_layer_prepack_precision(net, FX_PREC_BF16), FX_OK);
    assert_int_equal(fx_layer_num_packed(net), 6);
    y = forward(net, ctx, x, FX_PREC_BF16);
    for (int j = 0; j < 21 * 9; j++)
        assert_true(fabs(y[j] - first[j]) <= 1e-5 * (1.0 + fabs(first[j])));
    free(y);
    y = forward(net, ctx, x, FX_PREC_F32);
    for (int j = 0; j < 21 * 9; j++)
        assert_true(fabs(y[j] - ref[j]) <= 1e-5 * (1.0 + fabs(ref[j])));
    free(y);
    fx_layer_unpack(net);
    assert_int_equal(fx_layer_num_packed(net), 0);
    free(W1);
    free(first);
    free(ref);
    fx_tensor_free(x);
    fx_ctx_free(ctx);
    fx_layer_free(net);
    fx_rng_free(rng);
}

/* ---------------------------------------------------------- allocations */

static void steady(int threads)
{
#if TU_ALLOC_HOOKS
    fx_set_num_threads(threads);
    fx_rng *rng = fx_rng_create(41);
    fx_layer *net = make_net(4);
    assert_int_equal(fx_layer_prepack_precision(net, FX_PREC_BF16), FX_OK);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_int_equal(fx_ctx_set_precision(ctx, FX_PREC_BF16), FX_OK);
    fx_ctx_set_grad(ctx, false);
    fx_tensor *x = tu_randn(rng, 2, TU_SHAPE(64, 37), 1.0, 0.0);
    fx_tensor *a = tu_randn(rng, 2, TU_SHAPE(256, 301), 1.0, 0.0);
    fx_tensor *b = tu_randn(rng, 2, TU_SHAPE(300, 301), 1.0, 0.0);
    fx_tensor *c = tu_randn(rng, 2, TU_SHAPE(301, 301), 1.0, 0.0);
    const fx_blas_kernels *k = fx__cpu_backend.blas;
    long n = -1;
    for (int it = 0; it < 13; it++) {
        if (it == 3)
            tu_alloc_count_start();
        /* forward products, then dX- and dW-shaped ones (every packing) */
        k->gemm_bf16(1, false, true, 256, 300, 301, 1.0f, a, 0, b, 0, 0.0f, c, 0);
        k->gemm_bf16(1, false, false, 256, 301, 300, 1.0f, c, 0, b, 0, 1.0f, a, 0);
        k->gemm_bf16(1, true, false, 300, 301, 256, 1.0f, c, 0, a, 0, 1.0f, b, 0);
        fx_tensor *y = fx_layer_forward(net, ctx, x);
        fx_ctx_reset(ctx);
        if (!y) {
            tu_alloc_count_stop();
            fail_msg("forward: %s", fx_ctx_error(ctx));
        }
    }
    n = tu_alloc_count_stop();
    if (n != 0)
        fail_msg("%d threads: %ld allocations in 10 steady-state rounds", threads, n);
    tu_free_all(4, (fx_tensor *[]){ x, a, b, c });
    fx_ctx_free(ctx);
    fx_layer_free(net);
    fx_rng_free(rng);
    fx_set_num_threads(1);
#else
    (void)threads;
    skip();
#endif
}

static void test_steady_one_thread(void **state)
{
    (void)state;
    steady(1);
}

static void test_steady_two_threads(void **state)
{
    (void)state;
    steady(2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round),         cmocka_unit_test(test_api),
        cmocka_unit_test(test_packed_shapes), cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_gemm_sum),      cmocka_unit_test(test_threads),
        cmocka_unit_test(test_layer),         cmocka_unit_test(test_steady_one_thread),
        cmocka_unit_test(test_steady_two_threads), cmocka_unit_test(test_thread_exit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
