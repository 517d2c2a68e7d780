/* test_batch_policy.c - whether a partial batch waits (server/serving/
 * batch_policy.c), as pure functions of made-up evidence: arrivals and
 * callers, what earlier waits gathered, the cost curve -> wait or go, and
 * which batch size to run. No threads, no clock: every input is given. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "serving/batch_policy.h"

#define US 1000ll
#define MS 1000000ll

/* A cost curve: batch sizes and their times (ns). */
static void curve(fxb_evidence *e, const int64_t *sizes, const uint64_t *ns, int n)
{
    for (int i = 0; i < n; i++)
        fxb_evidence_batch(e, sizes[i], ns[i]);
}

/* Evidence of callers: one arrival with `in_server` requests in the server. */
static void callers(fxb_evidence *e, int in_server) { fxb_evidence_arrival(e, in_server); }

/* A situation: a batch of n samples with room for more, left_ns of its
 * delay left, in_server requests in the server, at now_ns. */
static fxb_situation at(int64_t n, int64_t room, int64_t left_ns, int in_server, int64_t now_ns)
{
    return (fxb_situation){ .samples = n, .room = room, .left_ns = left_ns,
                            .in_server = in_server, .now_ns = (uint64_t)now_ns,
                            .probe_every_ns = 20 * MS };
}

static fxb_decision decide(const fxb_evidence *e, fxb_situation s) { return fxb_decide(e, &s); }

/* A curve with a fixed cost: 60 us + 1 us per sample (packed weights). */
static void fixed_cost_curve(fxb_evidence *e)
{
    int64_t sizes[] = { 1, 2, 4, 8, 16, 32, 64 };
    uint64_t ns[7];
    for (int i = 0; i < 7; i++)
        ns[i] = 60 * US + (uint64_t)sizes[i] * US;
    curve(e, sizes, ns, 7);
}

/* A lone closed-loop client: one caller, always in the server when a
 * decision is made. Never a wait, whatever the evidence says about costs
 * and earlier waits, and no probe either. */
static void test_lone_caller_goes_at_once(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    fixed_cost_curve(&e);
    for (int i = 0; i < 1000; i++)
        callers(&e, 1);
    fxb_decision d = decide(&e, at(1, 63, 200 * US, 1, 5 * MS));
    assert_int_equal(d.wait_ns, 0);
    /* even with waits on record that gathered many partners (an old load) */
    for (int i = 0; i < 16; i++)
        fxb_evidence_wait(&e, 50 * US, 8);
    e.last_wait_ns = 1;
    d = decide(&e, at(1, 63, 200 * US, 1, 5 * MS));
    assert_int_equal(d.wait_ns, 0);
    /* a batch holding every caller seen at once goes too */
    callers(&e, 4);
    d = decide(&e, at(4, 60, 200 * US, 4, 5 * MS));
    assert_int_equal(d.wait_ns, 0);
}

/* Other callers seen, no wait measured yet: a probe of the whole delay
 * left; then none until probe_every_ns has passed since the last wait. */
static void test_probe_when_no_evidence_then_rarely(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    fixed_cost_curve(&e);
    callers(&e, 8);
    fxb_decision d = decide(&e, at(2, 62, 150 * US, 2, 5 * MS));
    assert_true(d.probe);
    assert_int_equal(d.wait_ns, 150 * US);
    /* the probe gathered nothing: no wait on that evidence ... */
    e.last_wait_ns = 5 * MS;
    fxb_evidence_wait(&e, 150 * US, 0);
    d = decide(&e, at(2, 62, 200 * US, 2, 6 * MS));
    assert_int_equal(d.wait_ns, 0);
    assert_false(d.probe);
    /* ... until the probe interval (20 ms here) has passed */
    d = decide(&e, at(2, 62, 200 * US, 2, 25 * MS + 1));
    assert_true(d.probe);
    assert_int_equal(d.wait_ns, 200 * US);
}

/* Waits that gathered partners quickly, and a fixed cost per batch: the
 * batch waits, at most the delay left. */
static void test_wait_when_partners_come_and_batches_pay(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    fixed_cost_curve(&e);
    callers(&e, 16);
    for (int i = 0; i < 16; i++)
        fxb_evidence_wait(&e, 40 * US, 8); /* 8 samples per 40 us */
    e.last_wait_ns = 4 * MS;
    assert_true(fabs(fxb_evidence_rate(&e) - 8.0 / (40 * US)) < 1e-9);
    assert_true(fxb_evidence_partner_share(&e) > 0.99);
    fxb_decision d = decide(&e, at(1, 63, 200 * US, 1, 5 * MS));
    assert_false(d.probe);
    assert_true(d.wait_ns > 0);
    assert_true(d.wait_ns <= 200 * US);
    /* going now costs 61 us per sample; the expected 15 others in 75 us
     * (the time to bring every other caller) cost (76 + 75) / 16 per sample */
    assert_true(d.wait_ns >= 75 * US && d.wait_ns <= 75 * US + 1);
    /* no delay left: go */
    d = decide(&e, at(1, 63, 0, 1, 5 * MS));
    assert_int_equal(d.wait_ns, 0);
    /* no room left: go */
    d = decide(&e, at(64, 0, 200 * US, 16, 5 * MS));
    assert_int_equal(d.wait_ns, 0);
}

/* Partners come, but slowly against what a batch saves: go now. */
static void test_no_wait_when_it_does_not_pay(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    /* cost proportional to the batch (nothing shared): 40 us per sample */
    int64_t sizes[] = { 1, 2, 4, 8 };
    uint64_t ns[] = { 40 * US, 80 * US, 160 * US, 320 * US };
    curve(&e, sizes, ns, 4);
    callers(&e, 8);
    for (int i = 0; i < 16; i++)
        fxb_evidence_wait(&e, 100 * US, 2);
    e.last_wait_ns = 4 * MS;
    assert_int_equal(decide(&e, at(1, 63, 200 * US, 1, 5 * MS)).wait_ns, 0);
    /* a fixed cost, but partners only one per 10 ms: no wait either */
    fxb_evidence_init(&e);
    fixed_cost_curve(&e);
    callers(&e, 8);
    for (int i = 0; i < 16; i++)
        fxb_evidence_wait(&e, 10 * MS, 1);
    e.last_wait_ns = 4 * MS;
    assert_int_equal(decide(&e, at(1, 63, 200 * US, 1, 5 * MS)).wait_ns, 0);
    /* no cost measured: no wait (a probe aside) */
    fxb_evidence_init(&e);
    callers(&e, 8);
    fxb_evidence_wait(&e, 10 * US, 5);
    e.last_wait_ns = 4 * MS;
    assert_int_equal(decide(&e, at(1, 63, 200 * US, 1, 5 * MS)).wait_ns, 0);
}

/* On the CPU (wait_share FXB_CPU_WAIT_SHARE) a wait costs next to nothing:
 * a partner expected within the delay is worth waiting for where the same
 * evidence on an accelerator (share 1) says go now; a lone caller still
 * goes at once. */
static void test_cpu_wait_share(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    /* the mlp's curve: 26 us alone, 75 us for 8, 600 us for 64 */
    int64_t sizes[] = { 1, 8, 64 };
    uint64_t ns[] = { 26 * US, 75 * US, 600 * US };
    curve(&e, sizes, ns, 3);
    callers(&e, 8);
    for (int i = 0; i < 16; i++)
        fxb_evidence_wait(&e, 100 * US, 2); /* 2 partners per 100 us */
    e.last_wait_ns = 4 * MS;
    fxb_situation s = at(1, 63, 200 * US, 2, 5 * MS);
    assert_int_equal(fxb_decide(&e, &s).wait_ns, 0); /* share 0 is 1 */
    s.wait_share = 1;
    assert_int_equal(fxb_decide(&e, &s).wait_ns, 0);
    s.wait_share = FXB_CPU_WAIT_SHARE;
    fxb_decision d = fxb_decide(&e, &s);
    assert_false(d.probe);
    assert_true(d.wait_ns > 0 && d.wait_ns <= 200 * US);
    /* the lone caller: no wait whatever the share */
    fxb_evidence_init(&e);
    curve(&e, sizes, ns, 3);
    callers(&e, 1);
    for (int i = 0; i < 16; i++)
        fxb_evidence_wait(&e, 100 * US, 2);
    e.last_wait_ns = 4 * MS;
    s = at(1, 63, 200 * US, 1, 5 * MS);
    s.wait_share = FXB_CPU_WAIT_SHARE;
    assert_int_equal(fxb_decide(&e, &s).wait_ns, 0);
}

/* The cost curve: decayed means per bucket, interpolated between buckets,
 * proportional below the first and with one bucket, extrapolated at the
 * last slope (never decreasing) beyond the last. */
static void test_cost_curve(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    assert_true(fxb_evidence_cost(&e, 4) < 0);
    fxb_evidence_batch(&e, 2, 100 * US);
    assert_true(fabs(fxb_evidence_cost(&e, 2) - 100 * US) < 1);
    assert_true(fabs(fxb_evidence_cost(&e, 1) - 50 * US) < 1);   /* proportional */
    assert_true(fabs(fxb_evidence_cost(&e, 6) - 300 * US) < 1);  /* one bucket: proportional */
    fxb_evidence_batch(&e, 8, 160 * US);
    assert_true(fabs(fxb_evidence_cost(&e, 5) - 130 * US) < 1);  /* between 2 and 8 */
    assert_true(fabs(fxb_evidence_cost(&e, 14) - 220 * US) < 1); /* slope 10 us */
    /* the first batches of a bucket: their plain mean; later ones weigh 1/8 */
    fxb_evidence_batch(&e, 8, 200 * US);
    assert_true(fabs(fxb_evidence_cost(&e, 8) - 180 * US) < 1);
    for (int i = 0; i < 200; i++)
        fxb_evidence_batch(&e, 8, 400 * US);
    assert_true(fabs(fxb_evidence_cost(&e, 8) - 400 * US) < 1 * US);
    /* sizes 5-8 share a bucket: its point is their mean size */
    fxb_evidence_init(&e);
    fxb_evidence_batch(&e, 5, 100 * US);
    fxb_evidence_batch(&e, 7, 140 * US);
    assert_true(fabs(e.cost[3].samples - 6) < 1e-9);
    assert_true(fabs(fxb_evidence_cost(&e, 6) - 120 * US) < 1);
    /* a falling slope beyond the last bucket is not extrapolated down */
    fxb_evidence_batch(&e, 16, 90 * US);
    assert_true(fabs(fxb_evidence_cost(&e, 64) - 90 * US) < 1);
}

/* The decayed evidence of waits: rate and share follow recent waits. */
static void test_wait_evidence_decays(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    assert_true(fxb_evidence_rate(&e) < 0);
    assert_true(fxb_evidence_partner_share(&e) < 0);
    for (int i = 0; i < 50; i++)
        fxb_evidence_wait(&e, 100 * US, 4);
    assert_true(fxb_evidence_partner_share(&e) > 0.99);
    for (int i = 0; i < 50; i++)
        fxb_evidence_wait(&e, 200 * US, 0);
    assert_true(fxb_evidence_partner_share(&e) < 0.05);
    assert_true(fxb_evidence_rate(&e) < 0.05 * 4.0 / (100 * US));
}

/* The callers' peak follows the most requests in the server at once, and
 * decays by about 1/64 per round of arrivals (one per caller). */
static void test_callers_peak_decays_per_round(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    callers(&e, 64);
    for (int i = 0; i < 64; i++) /* one round: 64 arrivals, fewer in the server */
        callers(&e, 10);
    assert_true(e.callers > 62 && e.callers < 64);
    for (int i = 0; i < 64 * 400; i++) /* a lone caller for a long while */
        callers(&e, 1);
    assert_true(e.callers < 1.5);
}

/* The size to run from a queue of total: the cheapest per sample. */
static void test_best_size(void **state)
{
    fxb_evidence e;
    fxb_evidence_init(&e);
    assert_int_equal(fxb_best_size(&e, 5), 5); /* nothing measured */
    /* a library that packs from 3 samples up: 2 costs 40 us, 3-8 ~200 us */
    int64_t sizes[] = { 1, 2, 4, 8, 64 };
    uint64_t ns[] = { 38 * US, 40 * US, 200 * US, 260 * US, 1000 * US };
    curve(&e, sizes, ns, 5);
    assert_int_equal(fxb_best_size(&e, 5), 5); /* each measured once: not enough */
    curve(&e, sizes, ns, 5);
    assert_int_equal(fxb_best_size(&e, 1), 1);
    assert_int_equal(fxb_best_size(&e, 2), 2);
    assert_int_equal(fxb_best_size(&e, 5), 2);
    assert_int_equal(fxb_best_size(&e, 8), 2);
    assert_int_equal(fxb_best_size(&e, 64), 64); /* 15.6 us per sample */
    /* a fixed cost: the whole queue */
    fxb_evidence_init(&e);
    fixed_cost_curve(&e);
    fixed_cost_curve(&e);
    for (int64_t n = 1; n <= 64; n++)
        assert_int_equal(fxb_best_size(&e, n), n);
    /* trimmed sizes still run whole once per probe interval */
    fxb_waiter w;
    memset(&w, 0, sizeof w);
    curve(&w.ev, sizes, ns, 5);
    curve(&w.ev, sizes, ns, 5);
    assert_int_equal(fxb_waiter_size(&w, 6, 100 * MS, 20 * MS), 6); /* never whole yet */
    assert_int_equal(fxb_waiter_size(&w, 6, 101 * MS, 20 * MS), 2);
    assert_int_equal(fxb_waiter_size(&w, 6, 121 * MS, 20 * MS), 6);
}

/* The waiter: a wait holds until its time unless a request arrives (then it
 * is decided again); a probe holds to the delay's end unless every caller
 * is in; the wait's result becomes evidence when the batch goes. */
static void test_waiter(void **state)
{
    fxb_waiter w;
    memset(&w, 0, sizeof w);
    fixed_cost_curve(&w.ev);
    fxb_waiter_arrival(&w, 1, 1);
    fxb_waiter_arrival(&w, 3, 1); /* three callers seen at once */
    int64_t until = 0;
    fxb_situation s = at(1, 63, 200 * US, 1, 10 * MS);
    assert_true(fxb_waiter_wait(&w, &s, &until)); /* a probe: no evidence */
    assert_int_equal(until, 10 * MS + 200 * US);
    assert_true(w.probe);
    s = at(1, 63, 100 * US, 1, 10 * MS + 100 * US); /* woken early, nothing new */
    assert_true(fxb_waiter_wait(&w, &s, &until));
    assert_int_equal(until, 10 * MS + 200 * US);
    fxb_waiter_arrival(&w, 2, 1);
    s = at(2, 62, 50 * US, 2, 10 * MS + 150 * US);
    assert_true(fxb_waiter_wait(&w, &s, &until)); /* one caller still out */
    fxb_waiter_arrival(&w, 3, 2);
    s = at(4, 60, 40 * US, 3, 10 * MS + 160 * US);
    assert_false(fxb_waiter_wait(&w, &s, &until)); /* every caller is in: go */
    fxb_waiter_end(&w, 10 * MS + 160 * US);
    assert_int_equal(w.start, 0);
    assert_true(fabs(fxb_evidence_rate(&w.ev) - 3.0 / (160 * US)) < 1e-12);
    assert_true(fabs(fxb_evidence_partner_share(&w.ev) - 1) < 1e-12);
    /* the delay bounds every wait: none past it */
    s = at(1, 63, 0, 1, 11 * MS);
    assert_false(fxb_waiter_wait(&w, &s, &until));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lone_caller_goes_at_once),
        cmocka_unit_test(test_probe_when_no_evidence_then_rarely),
        cmocka_unit_test(test_wait_when_partners_come_and_batches_pay),
        cmocka_unit_test(test_no_wait_when_it_does_not_pay),
        cmocka_unit_test(test_cost_curve),
        cmocka_unit_test(test_cpu_wait_share),
        cmocka_unit_test(test_wait_evidence_decays),
        cmocka_unit_test(test_callers_peak_decays_per_round),
        cmocka_unit_test(test_best_size),
        cmocka_unit_test(test_waiter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
