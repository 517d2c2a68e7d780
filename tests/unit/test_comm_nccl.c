/*
 * test_comm_nccl.c - the NCCL backend of the collectives (comm.h) on a
 * world of one rank: allreduce (the identity, through NCCL's kernels),
 * broadcast, barrier, several operations in flight, abort. Needs a build
 * with NCCL (FX_TEST_NCCL: CMake found nccl.h) and a GPU; otherwise every
 * test is skipped with a visible message. Without NCCL it checks that the
 * backend answers UNIMPLEMENTED.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "comm/comm.h"

#ifdef FX_TEST_NCCL
#include <cuda_runtime.h>
#endif

static fxcm_memstore *store_mem;
static fxcm_store store;

#ifdef FX_TEST_NCCL
/* A 1-rank NCCL comm, or NULL after a visible skip. */
static fxcm_comm *open_one(const char *prefix) {
    if (!fxcm_available(FXCM_NCCL)) {
        print_message("skipped: built without NCCL\n");
        return NULL;
    }
    fxcm_opts o = {.backend = FXCM_NCCL, .rank = 0, .world = 1, .prefix = prefix,
                   .store = &store, .timeout_ms = 30000, .cuda_device = 0};
    fxcm_comm *c = NULL;
    char err[FXS_ERRLEN];
    int rc = fxcm_open(&o, &c, err, sizeof err);
    if (rc == FXS_FAILED_PRECONDITION) {
        print_message("skipped: no GPU (%s)\n", err);
        return NULL;
    }
    if (rc)
        fail_msg("open: %s: %s", fxs_status_name(rc), err);
    return c;
}
#endif

static void test_not_built(void **state) {
    (void)state;
    if (fxcm_available(FXCM_NCCL)) {
        print_message("skipped: built with NCCL\n");
        skip();
    }
    fxcm_opts o = {.backend = FXCM_NCCL, .rank = 0, .world = 1, .prefix = "x", .store = &store};
    fxcm_comm *c = NULL;
    char err[FXS_ERRLEN];
    assert_int_equal(fxcm_open(&o, &c, err, sizeof err), FXS_UNIMPLEMENTED);
    assert_null(c);
    assert_string_equal(err, "fluxion was built without NCCL (nccl.h not found)");
}

#ifdef FX_TEST_NCCL
static float *dev_from(const float *h, size_t n) {
    float *d = NULL;
    assert_int_equal(cudaMalloc((void **)&d, n * sizeof(float)), cudaSuccess);
    assert_int_equal(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

static void host_of(float *h, const float *d, size_t n) {
    assert_int_equal(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
}

static void test_one_rank_ops(void **state) {
    (void)state;
    fxcm_comm *c = open_one("nccl-ops");
    if (!c)
        skip();
    enum { N = 1 << 16 };
    float *h = malloc(N * sizeof(float)), *back = malloc(N * sizeof(float));
    assert_non_null(h);
    assert_non_null(back);
    for (int i = 0; i < N; i++)
        h[i] = (float)(i % 101) - 50.0f;
    float *d = dev_from(h, N);
    char err[FXS_ERRLEN];
    assert_int_equal(fxcm_allreduce(c, d, N, err, sizeof err), 0);
    host_of(back, d, N);
    assert_memory_equal(back, h, N * sizeof(float)); /* the sum over one rank */
    assert_int_equal(fxcm_broadcast(c, d, N, 0, err, sizeof err), 0);
    host_of(back, d, N);
    assert_memory_equal(back, h, N * sizeof(float));
    assert_int_equal(fxcm_barrier(c, err, sizeof err), 0);
    /* several in flight, waited by the last ticket */
    uint64_t t[8];
    for (int k = 0; k < 8; k++)
        assert_int_equal(fxcm_allreduce_start(c, d, N, &t[k], err, sizeof err), 0);
    assert_int_equal(fxcm_wait(c, t[7], err, sizeof err), 0);
    assert_int_equal(fxcm_wait(c, t[0], err, sizeof err), 0);
    host_of(back, d, N);
    assert_memory_equal(back, h, N * sizeof(float));
    assert_int_equal(fxcm_broadcast(c, d, N, 1, err, sizeof err), FXS_INVALID_ARGUMENT);
    fxcm_free(c);
    cudaFree(d);
    free(h);
    free(back);
}

static void test_one_rank_abort(void **state) {
    (void)state;
    fxcm_comm *c = open_one("nccl-abort");
    if (!c)
        skip();
    float h[256] = {0};
    float *d = dev_from(h, 256);
    char err[FXS_ERRLEN];
    uint64_t t;
    assert_int_equal(fxcm_allreduce_start(c, d, 256, &t, err, sizeof err), 0);
    fxcm_abort(c);
    /* aborted before the wait: ABORTED; later operations too, at once */
    assert_int_equal(fxcm_wait(c, t, err, sizeof err), FXS_ABORTED);
    assert_int_equal(fxcm_allreduce(c, d, 256, err, sizeof err), FXS_ABORTED);
    assert_int_equal(fxcm_barrier(c, err, sizeof err), FXS_ABORTED);
    fxcm_free(c);
    cudaFree(d);
}
#else
static void test_one_rank_ops(void **state) {
    (void)state;
    print_message("skipped: built without NCCL\n");
    skip();
}

static void test_one_rank_abort(void **state) {
    (void)state;
    print_message("skipped: built without NCCL\n");
    skip();
}
#endif

int main(void) {
    store_mem = fxcm_memstore_new();
    store = fxcm_memstore_store(store_mem);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_built),
        cmocka_unit_test(test_one_rank_ops),
        cmocka_unit_test(test_one_rank_abort),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fxcm_memstore_free(store_mem);
    return rc;
}
