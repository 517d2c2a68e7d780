/*
 * test_inflight.c - the in-flight accounting of the rpc layer
 * (server/rpc/inflight.c; issue 19, limits): each cap refuses exactly past
 * its amount and takes nothing when it refuses, one client over its cap
 * leaves another served, the message names the limit, its flag and the
 * amounts, refusals are counted by limit, entries go away when a client
 * holds nothing, and many threads taking and giving leave every count at 0.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "rpc/inflight.h"

#define MIB ((uint64_t)1 << 20)

static void test_peer_cap(void **state)
{
    (void)state;
    fxr_inflight_limits l = { .max_bytes_per_peer = 10 * MIB };
    fxr_inflight *f = fxr_inflight_new(&l);
    char why[512];
    assert_int_equal(fxr_inflight_take(f, "a", 6 * MIB, true, why, sizeof why), FXR_LIMIT_NONE);
    assert_int_equal(fxr_inflight_take(f, "a", 4 * MIB, true, why, sizeof why), FXR_LIMIT_NONE);
    /* exactly at the cap: one more byte is refused, nothing taken */
    assert_int_equal(fxr_inflight_take(f, "a", 1, true, why, sizeof why), FXR_LIMIT_PEER_BYTES);
    assert_non_null(strstr(why, "--max-inflight-mb-per-client 10"));
    assert_non_null(strstr(why, "10485761 bytes")); /* what it would have been */
    assert_non_null(strstr(why, "10485760 bytes"));
    assert_int_equal(fxr_inflight_peer_bytes(f, "a"), 10 * MIB);
    assert_int_equal(fxr_inflight_peer_calls(f, "a"), 2);
    /* a call without bytes is not refused by a byte cap */
    assert_int_equal(fxr_inflight_take(f, "a", 0, true, why, sizeof why), FXR_LIMIT_NONE);
    fxr_inflight_give(f, "a", 0, true);
    /* another client is served meanwhile */
    assert_int_equal(fxr_inflight_take(f, "b", 10 * MIB, true, why, sizeof why), FXR_LIMIT_NONE);
    assert_int_equal(fxr_inflight_bytes(f), 20 * MIB);
    assert_int_equal(fxr_inflight_rejected(f, FXR_LIMIT_PEER_BYTES), 1);
    assert_int_equal(fxr_inflight_rejected(f, FXR_LIMIT_BYTES), 0);
    fxr_inflight_give(f, "a", 6 * MIB, true);
    fxr_inflight_give(f, "a", 4 * MIB, true);
    fxr_inflight_give(f, "b", 10 * MIB, true);
    assert_int_equal(fxr_inflight_bytes(f), 0);
    assert_int_equal(fxr_inflight_peers(f), 0);
    fxr_inflight_free(f);
}

static void test_global_cap(void **state)
{
    (void)state;
    fxr_inflight_limits l = { .max_bytes = 8 * MIB, .max_bytes_per_peer = 6 * MIB };
    fxr_inflight *f = fxr_inflight_new(&l);
    char why[512];
    assert_int_equal(fxr_inflight_take(f, "a", 5 * MIB, false, why, sizeof why), FXR_LIMIT_NONE);
    /* b is within its own cap, but the server's is full */
    assert_int_equal(fxr_inflight_take(f, "b", 4 * MIB, false, why, sizeof why), FXR_LIMIT_BYTES);
    assert_non_null(strstr(why, "--max-inflight-mb 8"));
    assert_non_null(strstr(why, "9437184 bytes"));
    assert_int_equal(fxr_inflight_take(f, "b", 3 * MIB, false, why, sizeof why), FXR_LIMIT_NONE);
    /* a client over its own cap is told so, not that the server is full */
    assert_int_equal(fxr_inflight_take(f, "a", 2 * MIB, false, why, sizeof why),
                     FXR_LIMIT_PEER_BYTES);
    /* one request larger than the cap itself */
    assert_int_equal(fxr_inflight_take(f, "c", UINT64_MAX, false, why, sizeof why),
                     FXR_LIMIT_PEER_BYTES);
    assert_int_equal(fxr_inflight_rejected(f, FXR_LIMIT_BYTES), 1);
    assert_int_equal(fxr_inflight_rejected(f, FXR_LIMIT_PEER_BYTES), 2);
    assert_string_equal(fxr_inflight_limit_name(FXR_LIMIT_BYTES), "inflight_bytes");
    fxr_inflight_give(f, "a", 5 * MIB, false);
    fxr_inflight_give(f, "b", 3 * MIB, false);
    assert_int_equal(fxr_inflight_bytes(f), 0);
    assert_int_equal(fxr_inflight_peers(f), 0);
    fxr_inflight_free(f);
}

static void test_calls_cap(void **state)
{
    (void)state;
    fxr_inflight_limits l = { .max_calls_per_peer = 2 };
    fxr_inflight *f = fxr_inflight_new(&l);
    char why[512];
    assert_int_equal(fxr_inflight_take(f, "a", 0, true, why, sizeof why), FXR_LIMIT_NONE);
    assert_int_equal(fxr_inflight_take(f, "a", 0, true, why, sizeof why), FXR_LIMIT_NONE);
    assert_int_equal(fxr_inflight_take(f, "a", 0, true, why, sizeof why), FXR_LIMIT_PEER_CALLS);
    assert_non_null(strstr(why, "--max-calls-per-client 2"));
    /* bytes without a call (a stream's message) are not calls */
    assert_int_equal(fxr_inflight_take(f, "a", 100, false, why, sizeof why), FXR_LIMIT_NONE);
    assert_int_equal(fxr_inflight_take(f, "b", 0, true, why, sizeof why), FXR_LIMIT_NONE);
    fxr_inflight_give(f, "a", 0, true);
    assert_int_equal(fxr_inflight_take(f, "a", 0, true, why, sizeof why), FXR_LIMIT_NONE);
    fxr_inflight_give(f, "a", 0, true);
    fxr_inflight_give(f, "a", 0, true);
    fxr_inflight_give(f, "a", 100, false);
    fxr_inflight_give(f, "b", 0, true);
    assert_int_equal(fxr_inflight_peers(f), 0);
    /* no limits: nothing is refused */
    fxr_inflight *open = fxr_inflight_new(NULL);
    assert_int_equal(fxr_inflight_take(open, "a", UINT64_MAX / 2, true, why, sizeof why),
                     FXR_LIMIT_NONE);
    fxr_inflight_give(open, "a", UINT64_MAX / 2, true);
    assert_int_equal(fxr_inflight_peers(open), 0);
    fxr_inflight_free(open);
    fxr_inflight_free(f);
}

/* Threads of many clients take and give at once, some refused: every
 * count ends at 0 and no entry is left behind. */
typedef struct {
    fxr_inflight *f;
    int id;
    int refused;
} worker;

static void *hammer(void *arg)
{
    worker *w = arg;
    char peer[32], why[512];
    for (int i = 0; i < 20000; i++) {
        snprintf(peer, sizeof peer, "ipv4:127.0.0.1:%d", (w->id + i) % 37);
        uint64_t n = (uint64_t)(i % 13) * 4096;
        if (fxr_inflight_take(w->f, peer, n, i % 2, why, sizeof why) != FXR_LIMIT_NONE) {
            w->refused++;
            continue;
        }
        fxr_inflight_give(w->f, peer, n, i % 2);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    fxr_inflight_limits l = { .max_bytes = 300000, .max_bytes_per_peer = 60000,
                              .max_calls_per_peer = 3 };
    fxr_inflight *f = fxr_inflight_new(&l);
    pthread_t th[8];
    worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker){ .f = f, .id = i * 5 };
        pthread_create(&th[i], NULL, hammer, &w[i]);
    }
    uint64_t refused = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        refused += (uint64_t)w[i].refused;
    }
    assert_int_equal(fxr_inflight_bytes(f), 0);
    assert_int_equal(fxr_inflight_peers(f), 0);
    assert_int_equal(refused, fxr_inflight_rejected(f, FXR_LIMIT_BYTES) +
                                  fxr_inflight_rejected(f, FXR_LIMIT_PEER_BYTES) +
                                  fxr_inflight_rejected(f, FXR_LIMIT_PEER_CALLS));
    fxr_inflight_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peer_cap),
        cmocka_unit_test(test_global_cap),
        cmocka_unit_test(test_calls_cap),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
