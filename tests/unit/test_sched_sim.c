/*
 * test_sched_sim.c - the scheduler's pure core (server/sched/sched.h):
 * small scenarios that pin each rule and each reason a job waits, then
 * simulations with thousands of jobs on a simulated clock (no threads, no
 * sleeps) that measure the figures docs/scheduling.md states:
 *   - weights 1:2 with unlimited demand give 1:2 of device time (within 5%);
 *   - a job of a team within its nominal quota starts within one checkpoint
 *     interval of asking;
 *   - a LOW job is not starved (aging) beyond a stated bound;
 *   - quotas, borrowing, budgets, max running, device slots and memory are
 *     never exceeded, no non-preemptible job is preempted, none before
 *     min_run, and the snapshot says what decide does next (checked at
 *     every step of a random workload).
 * The simulated owner carries a PREEMPT out at the job's next periodic
 * checkpoint (every CKPT of run time): slower than the daemon (which
 * checkpoints at the next step), so the bounds hold there too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/status.h"
#include "sched/sched.h"

#define GIB (1ULL << 30)
#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

static char err[FXS_ERRLEN];

/* ------------------------------------------------------------ helpers */

static fxsc *new_sched(int64_t half_life, int64_t min_run, int64_t aging)
{
    fxsc_opts o = {.half_life_ms = half_life, .min_run_ms = min_run, .aging_ms = aging};
    fxsc *s = NULL;
    assert_int_equal(fxsc_new(&o, &s, err, sizeof err), 0);
    return s;
}

static void add_dev(fxsc *s, const char *name, fxsc_kind kind, int slots, uint64_t mem)
{
    fxsc_device d = {.kind = kind, .slots = slots, .memory_bytes = mem};
    snprintf(d.name, sizeof d.name, "%s", name);
    assert_int_equal(fxsc_add_device(s, &d, err, sizeof err), 0);
}

static fxsc_job mkjob(int64_t id, const char *team, fxsc_priority prio, const char *dev,
                      fxsc_kind kind, int slots, uint64_t mem)
{
    fxsc_job j = {.id = id, .priority = prio, .preemptible = true, .kind = kind, .slots = slots,
                  .memory_bytes = mem, .submit_ms = id};
    snprintf(j.team, sizeof j.team, "%s", team);
    snprintf(j.device, sizeof j.device, "%s", dev);
    return j;
}

static void submit(fxsc *s, int64_t id, const char *team, fxsc_priority prio, int slots,
                   int64_t now)
{
    fxsc_job j = mkjob(id, team, prio, "cpu", FXSC_CPU, slots, 0);
    assert_int_equal(fxsc_submit(s, &j, now, err, sizeof err), 0);
}

/* decide at now; the decisions in d, their count returned */
static int decide(fxsc *s, int64_t now, fxsc_decision *d)
{
    int n = 0;
    assert_int_equal(fxsc_decide(s, now, d, 64, &n), 0);
    return n;
}

static const fxsc_job_view *jv(const fxsc_view *v, int64_t id)
{
    for (int i = 0; i < v->n_jobs; i++)
        if (v->jobs[i].id == id)
            return &v->jobs[i];
    fail_msg("job %lld not in the snapshot", (long long)id);
    return NULL;
}

static const fxsc_team_view *tv(const fxsc_view *v, const char *team)
{
    for (int i = 0; i < v->n_teams; i++)
        if (strcmp(v->teams[i].team, team) == 0)
            return &v->teams[i];
    fail_msg("team %s not in the snapshot", team);
    return NULL;
}

/* the reason job id waits, at now */
static void reason_is(fxsc *s, int64_t now, int64_t id, const char *want)
{
    fxsc_view v;
    assert_int_equal(fxsc_snapshot(s, now, &v, err, sizeof err), 0);
    const fxsc_job_view *j = jv(&v, id);
    assert_false(j->running);
    assert_string_equal(j->reason, want);
    fxsc_view_free(&v);
}

static fxsc_team_cfg quota(int nominal_cpu, int borrow_cpu)
{
    fxsc_team_cfg c = {.weight = 1};
    c.nominal_slots[FXSC_CPU] = nominal_cpu;
    c.borrow_slots[FXSC_CPU] = borrow_cpu;
    return c;
}

/* ------------------------------------------------------ small scenarios */

static void test_api_errors(void **state)
{
    (void)state;
    fxsc *s = new_sched(0, 0, 0);
    add_dev(s, "cpu", FXSC_CPU, 2, 0);
    fxsc_device dup = {.name = "cpu", .kind = FXSC_CPU, .slots = 1};
    assert_int_equal(fxsc_add_device(s, &dup, err, sizeof err), FXS_ALREADY_EXISTS);
    fxsc_device none = {.name = "x", .kind = FXSC_CPU, .slots = 0};
    assert_int_equal(fxsc_add_device(s, &none, err, sizeof err), FXS_INVALID_ARGUMENT);
    fxsc_job j = mkjob(1, "a", FXSC_NORMAL, "cuda:0", FXSC_GPU, 1, 0);
    assert_int_equal(fxsc_submit(s, &j, 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "unknown device cuda:0"));
    j = mkjob(1, "a", FXSC_NORMAL, "", FXSC_GPU, 1, 0);
    assert_int_equal(fxsc_submit(s, &j, 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "no gpu device"));
    j = mkjob(1, "a", FXSC_NORMAL, "cpu", FXSC_CPU, 3, 0); /* more slots than cpu has */
    assert_int_equal(fxsc_submit(s, &j, 0, err, sizeof err), FXS_INVALID_ARGUMENT);
    submit(s, 1, "a", FXSC_NORMAL, 1, 0);
    j = mkjob(1, "a", FXSC_NORMAL, "cpu", FXSC_CPU, 1, 0);
    assert_int_equal(fxsc_submit(s, &j, 0, err, sizeof err), FXS_ALREADY_EXISTS);
    assert_int_equal(fxsc_remove(s, 9, 0, err, sizeof err), FXS_NOT_FOUND);
    assert_int_equal(fxsc_preempted(s, 1, 0, err, sizeof err), FXS_FAILED_PRECONDITION);
    assert_int_equal(fxsc_checkpointed(s, 9, 0), FXS_NOT_FOUND);
    fxsc_decision d[64];
    assert_int_equal(decide(s, 0, d), 1);
    assert_int_equal(d[0].action, FXSC_START);
    assert_string_equal(d[0].device, "cpu");
    assert_int_equal(decide(s, 0, d), 0); /* a start is decided once */
    assert_int_equal(fxsc_update(s, 1, FXSC_HIGH, NULL, FXSC_CPU, err, sizeof err),
                     FXS_FAILED_PRECONDITION);
    submit(s, 2, "a", FXSC_NORMAL, 2, 0);
    assert_int_equal(fxsc_update(s, 2, FXSC_HIGH, "nope", FXSC_CPU, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxsc_update(s, 2, FXSC_HIGH, NULL, FXSC_CPU, err, sizeof err), 0);
    assert_int_equal(fxsc_reserve(s, "a/m", "nope", 5, err, sizeof err), FXS_INVALID_ARGUMENT);
    fxsc_team_cfg bad = {.weight = -1};
    assert_int_equal(fxsc_set_team(s, "a", &bad, err, sizeof err), FXS_INVALID_ARGUMENT);
    fxsc_free(s);
}

/* Every reason a job waits, word for word. */
static void test_reasons(void **state)
{
    (void)state;
    fxsc_decision d[64];
    fxsc *s = new_sched(HOUR, MIN, -1);
    add_dev(s, "cpu", FXSC_CPU, 4, 0);
    add_dev(s, "cuda:0", FXSC_GPU, 2, 16 * GIB);
    fxsc_team_cfg a = quota(1, 1);
    assert_int_equal(fxsc_set_team(s, "a", &a, err, sizeof err), 0);
    submit(s, 1, "a", FXSC_NORMAL, 1, 0);
    submit(s, 2, "a", FXSC_NORMAL, 1, 0);
    submit(s, 3, "a", FXSC_NORMAL, 1, 0);
    assert_int_equal(decide(s, 0, d), 2);
    reason_is(s, 0, 3, "team a at quota 2/2 cpu slots (nominal 1 + borrow 1)");

    fxsc_team_cfg b = {.weight = 1, .max_running = 1};
    assert_int_equal(fxsc_set_team(s, "b", &b, err, sizeof err), 0);
    submit(s, 4, "b", FXSC_NORMAL, 1, 0);
    submit(s, 5, "b", FXSC_NORMAL, 1, 0);
    assert_int_equal(decide(s, 0, d), 1);
    reason_is(s, 0, 5, "team b at 1/1 running jobs");

    /* cpu: 3/4 used; a 2-slot job holds the free slot (all or nothing, no
     * backfill), so a 1-slot job behind it waits */
    submit(s, 6, "c", FXSC_NORMAL, 2, 0);
    submit(s, 7, "c", FXSC_NORMAL, 1, 0);
    assert_int_equal(decide(s, 0, d), 0);
    reason_is(s, 0, 6, "waiting for cpu: 3/4 slots in use");
    reason_is(s, 0, 7, "behind 1 job for cpu of higher priority or lower usage");

    /* memory: a served model's reservation is never lent */
    assert_int_equal(fxsc_reserve(s, "m/served", "cuda:0", 4 * GIB, err, sizeof err), 0);
    fxsc_job g = mkjob(8, "d", FXSC_NORMAL, "cuda:0", FXSC_GPU, 1, 10 * GIB);
    assert_int_equal(fxsc_submit(s, &g, 0, err, sizeof err), 0);
    assert_int_equal(decide(s, 0, d), 1);
    g = mkjob(9, "d", FXSC_NORMAL, "", FXSC_GPU, 1, 3 * GIB);
    assert_int_equal(fxsc_submit(s, &g, 0, err, sizeof err), 0);
    assert_int_equal(decide(s, 0, d), 0);
    reason_is(s, 0, 9, "waiting for cuda:0 memory: needs 3.0 GiB, 2.0 GiB free");
    g = mkjob(10, "d", FXSC_NORMAL, "cuda:0", FXSC_GPU, 1, 13 * GIB);
    assert_int_equal(fxsc_submit(s, &g, 0, err, sizeof err), 0);
    reason_is(s, 0, 10,
              "waiting for cuda:0 memory: needs 13.0 GiB, 2.0 GiB free (4.0 GiB reserved by "
              "served models)");
    /* the model goes: job 9 fits beside job 8; job 10 still does not */
    assert_int_equal(fxsc_reserve(s, "m/served", "cuda:0", 0, err, sizeof err), 0);
    assert_int_equal(decide(s, 0, d), 1);
    assert_int_equal(d[0].job, 9);

    fxsc_free(s);

    /* a budget: spent after 10 s of one slot; the running job is preempted
     * (a budget is the one preemption min_run does not delay) */
    s = new_sched(HOUR, MIN, -1);
    add_dev(s, "cpu", FXSC_CPU, 4, 0);
    fxsc_team_cfg e = {.weight = 1, .budget_device_seconds = 10, .budget_window_ms = HOUR};
    assert_int_equal(fxsc_set_team(s, "e", &e, err, sizeof err), 0);
    submit(s, 11, "e", FXSC_NORMAL, 1, 0);
    assert_int_equal(decide(s, 0, d), 1);
    assert_int_equal(decide(s, 5 * SEC, d), 0);
    assert_int_equal(decide(s, 10 * SEC, d), 1);
    assert_int_equal(d[0].action, FXSC_PREEMPT);
    assert_int_equal(d[0].job, 11);
    assert_string_equal(d[0].reason, "team e budget spent: 10/10 device-seconds in this window");
    assert_int_equal(fxsc_preempted(s, 11, 10 * SEC, err, sizeof err), 0);
    reason_is(s, 20 * SEC, 11, "team e budget spent: 10/10 device-seconds in this window");
    /* the next window: it runs again */
    bool started = false;
    int n = decide(s, HOUR, d);
    for (int i = 0; i < n; i++)
        started |= d[i].job == 11 && d[i].action == FXSC_START;
    assert_true(started);
    fxsc_free(s);
}

/* Usage accrues one slot-second per slot per second and halves every half
 * life, however often the owner calls. */
static void test_decay(void **state)
{
    (void)state;
    fxsc_decision d[64];
    fxsc *s = new_sched(100 * SEC, MIN, -1);
    add_dev(s, "cpu", FXSC_CPU, 2, 0);
    submit(s, 1, "a", FXSC_NORMAL, 2, 0);
    assert_int_equal(decide(s, 0, d), 1);
    for (int t = 1; t <= 100; t++) /* called every second */
        decide(s, t * SEC, d);
    fxsc_view v;
    assert_int_equal(fxsc_snapshot(s, 100 * SEC, &v, err, sizeof err), 0);
    /* 2 slots for one half life: 2 * h/ln2 * (1 - 1/2) */
    assert_float_equal(tv(&v, "a")->usage, 2 * 100 / 0.69314718 * 0.5, 0.01);
    double u = tv(&v, "a")->usage;
    fxsc_view_free(&v);
    assert_int_equal(fxsc_remove(s, 1, 100 * SEC, err, sizeof err), 0);
    assert_int_equal(fxsc_snapshot(s, 200 * SEC, &v, err, sizeof err), 0); /* one call */
    assert_float_equal(tv(&v, "a")->usage, u / 2, 0.01);
    fxsc_view_free(&v);
    fxsc_free(s);
}

/* Inside a team only a lower priority job is preempted, and only after
 * min_run; a HIGH job overtakes NORMAL ones in the queue. */
static void test_priority(void **state)
{
    (void)state;
    fxsc_decision d[64];
    fxsc *s = new_sched(HOUR, MIN, -1);
    add_dev(s, "cpu", FXSC_CPU, 1, 0);
    submit(s, 1, "a", FXSC_NORMAL, 1, 0);
    assert_int_equal(decide(s, 0, d), 1);
    submit(s, 2, "a", FXSC_NORMAL, 1, 1);
    submit(s, 3, "a", FXSC_HIGH, 1, 2);
    assert_int_equal(decide(s, 30 * SEC, d), 0); /* job 1 ran 30 s < min_run */
    reason_is(s, 30 * SEC, 3, "waiting for cpu: 1/1 slots in use");
    reason_is(s, 30 * SEC, 2, "waiting for cpu: 1/1 slots in use, 1 job ahead");
    assert_int_equal(decide(s, MIN, d), 1);
    assert_int_equal(d[0].action, FXSC_PREEMPT);
    assert_int_equal(d[0].job, 1);
    assert_string_equal(d[0].reason, "job 3 of team a (higher priority)");
    assert_int_equal(decide(s, MIN, d), 0); /* a PREEMPT is decided once */
    reason_is(s, MIN, 3, "waiting for cpu: preempting job 1 of team a");
    assert_int_equal(fxsc_preempted(s, 1, MIN + SEC, err, sizeof err), 0);
    assert_int_equal(decide(s, MIN + SEC, d), 1);
    assert_int_equal(d[0].job, 3);
    /* the same priority never preempts: 1 and 2 wait, 1 first (older) */
    fxsc_view v;
    assert_int_equal(fxsc_snapshot(s, 10 * MIN, &v, err, sizeof err), 0);
    assert_int_equal(jv(&v, 1)->position, 1);
    assert_int_equal(jv(&v, 1)->preemptions, 1);
    assert_int_equal(jv(&v, 2)->position, 2);
    fxsc_view_free(&v);
    assert_int_equal(decide(s, 10 * MIN, d), 0);
    /* re-prioritised while queued: 2 goes first */
    assert_int_equal(fxsc_update(s, 2, FXSC_HIGH, NULL, FXSC_CPU, err, sizeof err), 0);
    assert_int_equal(fxsc_remove(s, 3, 11 * MIN, err, sizeof err), 0);
    assert_int_equal(decide(s, 11 * MIN, d), 1);
    assert_int_equal(d[0].job, 2);
    fxsc_free(s);
}

/* A team within its nominal quota reclaims from a team above its own; a
 * non-preemptible job is never taken; the freed slot is kept for the
 * claimer (not given to an earlier job of the borrowing team). */
static void test_nominal_reclaim(void **state)
{
    (void)state;
    fxsc_decision d[64];
    fxsc *s = new_sched(HOUR, MIN, -1);
    add_dev(s, "cpu", FXSC_CPU, 2, 0);
    fxsc_team_cfg b = quota(1, 0);
    assert_int_equal(fxsc_set_team(s, "b", &b, err, sizeof err), 0);
    fxsc_job j = mkjob(1, "a", FXSC_NORMAL, "cpu", FXSC_CPU, 1, 0);
    j.preemptible = false;
    assert_int_equal(fxsc_submit(s, &j, 0, err, sizeof err), 0);
    submit(s, 2, "a", FXSC_LOW, 1, 0);
    assert_int_equal(decide(s, 0, d), 2);
    submit(s, 3, "a", FXSC_HIGH, 1, 0);
    submit(s, 4, "b", FXSC_LOW, 1, 10 * MIN);
    assert_int_equal(decide(s, 10 * MIN, d), 1);
    assert_int_equal(d[0].action, FXSC_PREEMPT);
    assert_int_equal(d[0].job, 2);
    assert_string_equal(d[0].reason, "job 4 of team b (within nominal)");
    assert_int_equal(fxsc_preempted(s, 2, 10 * MIN + 5 * SEC, err, sizeof err), 0);
    assert_int_equal(decide(s, 10 * MIN + 5 * SEC, d), 1);
    assert_int_equal(d[0].job, 4); /* not a's HIGH job 3 */
    fxsc_view v;
    assert_int_equal(fxsc_snapshot(s, 10 * MIN + 5 * SEC, &v, err, sizeof err), 0);
    assert_int_equal(tv(&v, "a")->preemptions, 1);
    assert_int_equal(tv(&v, "b")->slots_used, 1);
    assert_int_equal(tv(&v, "b")->nominal_slots, 1);
    fxsc_view_free(&v);
    /* b is at nominal: another b job does not reclaim (1 is not preemptible anyway) */
    submit(s, 5, "b", FXSC_LOW, 1, 11 * MIN);
    assert_int_equal(decide(s, 20 * MIN, d), 0);
    reason_is(s, 20 * MIN, 5, "team b at quota 1/1 cpu slots (nominal 1 + borrow 0)");
    fxsc_free(s);
}

/* The snapshot's devices and teams: slots, memory (jobs' estimates and
 * served models' reservations), shares; a reservation the device cannot
 * hold is refused. */
static void test_snapshot_views(void **state)
{
    (void)state;
    fxsc_decision d[64];
    fxsc *s = new_sched(HOUR, MIN, -1);
    add_dev(s, "cpu", FXSC_CPU, 2, 0);
    add_dev(s, "cuda:0", FXSC_GPU, 1, 16 * GIB);
    assert_int_equal(fxsc_reserve(s, "a/m1", "cuda:0", 4 * GIB, err, sizeof err), 0);
    assert_int_equal(fxsc_reserve(s, "a/m2", "cuda:0", 13 * GIB, err, sizeof err),
                     FXS_RESOURCE_EXHAUSTED);
    assert_int_equal(fxsc_reserve(s, "a/m1", "cuda:0", 6 * GIB, err, sizeof err), 0); /* replaced */
    fxsc_team_cfg b = {.weight = 3, .budget_device_seconds = 7200};
    b.nominal_slots[FXSC_CPU] = 1;
    b.nominal_slots[FXSC_GPU] = 1;
    b.borrow_slots[FXSC_CPU] = 1;
    assert_int_equal(fxsc_set_team(s, "b", &b, err, sizeof err), 0);
    fxsc_job g = mkjob(1, "a", FXSC_NORMAL, "cuda:0", FXSC_GPU, 1, 8 * GIB);
    assert_int_equal(fxsc_submit(s, &g, 0, err, sizeof err), 0);
    submit(s, 2, "b", FXSC_NORMAL, 2, 0);
    submit(s, 3, "b", FXSC_NORMAL, 1, 0);
    assert_int_equal(decide(s, 0, d), 2); /* 3 and 1 */
    fxsc_view v;
    assert_int_equal(fxsc_snapshot(s, HOUR, &v, err, sizeof err), 0);
    assert_int_equal(v.n_devices, 2);
    assert_string_equal(v.devices[1].name, "cuda:0");
    assert_int_equal(v.devices[1].slots_used, 1);
    assert_int_equal(v.devices[1].memory_used, 8 * GIB);
    assert_int_equal(v.devices[1].memory_reserved, 6 * GIB);
    assert_int_equal(v.devices[1].reservations, 1);
    assert_int_equal(v.devices[0].slots_used, 1);
    /* running first, then queued by position; job 3 fits b's nominal
     * quota, so it went before job 2, which borrows */
    assert_int_equal(v.n_jobs, 3);
    assert_true(v.jobs[0].running && v.jobs[1].running);
    assert_false(v.jobs[2].running);
    assert_int_equal(v.jobs[2].id, 2);
    assert_int_equal(v.jobs[2].position, 1);
    assert_string_equal(v.jobs[2].reason,
                        "team b at quota 1/2 cpu slots (nominal 1 + borrow 1): the job needs 2");
    const fxsc_team_view *ta = tv(&v, "a"), *tb = tv(&v, "b");
    assert_float_equal(ta->fair_share, 0.25, 1e-9);
    assert_float_equal(tb->fair_share, 0.75, 1e-9);
    assert_int_equal(tb->nominal_slots, 2);
    assert_int_equal(tb->borrow_slots, 1);
    assert_int_equal(tb->slots_used, 1);
    assert_int_equal(tb->queued, 1);
    /* an hour of one slot each: equal shares; b's budget half spent */
    assert_float_equal(ta->share, 0.5, 1e-6);
    assert_float_equal(tb->budget_used, 3600, 1e-6);
    assert_float_equal(tb->budget, 7200, 1e-9);
    fxsc_view_free(&v);
    fxsc_free(s);
}

/* A team at its quota (or its maximum of running jobs) makes room for a
 * higher priority job by preempting its own lower priority one, never
 * another team's; a job moved to another device while queued. */
static void test_quota_priority_and_move(void **state)
{
    (void)state;
    fxsc_decision d[64];
    fxsc *s = new_sched(HOUR, 10 * SEC, -1);
    add_dev(s, "cpu", FXSC_CPU, 3, 0);
    add_dev(s, "cuda:0", FXSC_GPU, 1, 0);
    add_dev(s, "cuda:1", FXSC_GPU, 1, 0);
    fxsc_team_cfg a = quota(1, 0);
    a.max_running = 2;
    assert_int_equal(fxsc_set_team(s, "a", &a, err, sizeof err), 0);
    submit(s, 1, "a", FXSC_LOW, 1, 0);
    submit(s, 2, "c", FXSC_LOW, 1, 0);
    assert_int_equal(decide(s, 0, d), 2);
    submit(s, 3, "a", FXSC_HIGH, 1, 0);
    assert_int_equal(decide(s, 5 * SEC, d), 0); /* min run */
    reason_is(s, 5 * SEC, 3, "team a at quota 1/1 cpu slots (nominal 1 + borrow 0)");
    assert_int_equal(decide(s, 10 * SEC, d), 1);
    assert_int_equal(d[0].action, FXSC_PREEMPT);
    assert_int_equal(d[0].job, 1);
    assert_string_equal(d[0].reason, "job 3 of team a (higher priority)");
    reason_is(s, 11 * SEC, 3, "waiting: preempting job 1 of team a");
    assert_int_equal(fxsc_preempted(s, 1, 12 * SEC, err, sizeof err), 0);
    assert_int_equal(decide(s, 12 * SEC, d), 1);
    assert_int_equal(d[0].job, 3);
    assert_string_equal(d[0].device, "cpu");
    /* max running: a's GPU job waits for a's running count, not a GPU */
    fxsc_job g = mkjob(4, "a", FXSC_NORMAL, "", FXSC_GPU, 1, 0);
    assert_int_equal(fxsc_submit(s, &g, 12 * SEC, err, sizeof err), 0);
    fxsc_job g2 = mkjob(5, "a", FXSC_NORMAL, "", FXSC_GPU, 1, 0);
    assert_int_equal(fxsc_submit(s, &g2, 12 * SEC, err, sizeof err), 0);
    assert_int_equal(decide(s, 12 * SEC, d), 1);
    assert_int_equal(d[0].job, 4);
    assert_string_equal(d[0].device, "cuda:0");
    reason_is(s, 12 * SEC, 5, "team a at 2/2 running jobs");
    /* moved while queued: job 1 (LOW, cpu) to any GPU; a is still at 2/2 */
    assert_int_equal(fxsc_update(s, 1, 0, "", FXSC_GPU, err, sizeof err), 0);
    assert_int_equal(fxsc_remove(s, 3, 13 * SEC, err, sizeof err), 0);
    assert_int_equal(fxsc_remove(s, 5, 13 * SEC, err, sizeof err), 0);
    assert_int_equal(decide(s, 13 * SEC, d), 1);
    assert_int_equal(d[0].job, 1);
    assert_string_equal(d[0].device, "cuda:1");
    fxsc_free(s);
}

/* A team's memory cap per kind: a job over it waits (holding nothing, no
 * preemption), counting jobs started earlier in the same pass, and starts
 * when the memory frees. */
static void test_memory_quota(void **state)
{
    (void)state;
    fxsc_decision d[64];
    fxsc *s = new_sched(HOUR, 10 * SEC, -1);
    add_dev(s, "cuda:0", FXSC_GPU, 4, 32 * GIB);
    fxsc_team_cfg a = {.weight = 1};
    a.max_memory[FXSC_GPU] = 8 * GIB;
    assert_int_equal(fxsc_set_team(s, "a", &a, err, sizeof err), 0);
    fxsc_job j1 = mkjob(1, "a", FXSC_LOW, "cuda:0", FXSC_GPU, 1, 7 * GIB);
    assert_int_equal(fxsc_submit(s, &j1, 0, err, sizeof err), 0);
    assert_int_equal(decide(s, 0, d), 1);
    assert_int_equal(d[0].job, 1);
    /* HIGH over the cap: it waits, preempts nothing (its own LOW job is
     * past min run), and holds nothing (team b starts) */
    fxsc_job j2 = mkjob(2, "a", FXSC_HIGH, "cuda:0", FXSC_GPU, 1, 2 * GIB);
    assert_int_equal(fxsc_submit(s, &j2, 20 * SEC, err, sizeof err), 0);
    fxsc_job j3 = mkjob(3, "b", FXSC_NORMAL, "cuda:0", FXSC_GPU, 1, 3 * GIB);
    assert_int_equal(fxsc_submit(s, &j3, 20 * SEC, err, sizeof err), 0);
    reason_is(s, 20 * SEC, 2, "team a at memory quota: needs 2.0 GiB, 7.0/8.0 GiB in use on gpu");
    assert_int_equal(decide(s, 20 * SEC, d), 1);
    assert_int_equal(d[0].action, FXSC_START);
    assert_int_equal(d[0].job, 3);
    assert_int_equal(decide(s, 30 * SEC, d), 0);
    reason_is(s, 30 * SEC, 2, "team a at memory quota: needs 2.0 GiB, 7.0/8.0 GiB in use on gpu");
    /* the memory frees: it starts */
    assert_int_equal(fxsc_remove(s, 1, 40 * SEC, err, sizeof err), 0);
    assert_int_equal(decide(s, 40 * SEC, d), 1);
    assert_int_equal(d[0].action, FXSC_START);
    assert_int_equal(d[0].job, 2);
    /* two jobs of 5 GiB with 2 GiB in use: the first started in a pass
     * counts against the second */
    fxsc_job j4 = mkjob(4, "a", FXSC_NORMAL, "cuda:0", FXSC_GPU, 1, 5 * GIB);
    fxsc_job j5 = mkjob(5, "a", FXSC_NORMAL, "cuda:0", FXSC_GPU, 1, 5 * GIB);
    assert_int_equal(fxsc_submit(s, &j4, 50 * SEC, err, sizeof err), 0);
    assert_int_equal(fxsc_submit(s, &j5, 50 * SEC, err, sizeof err), 0);
    fxsc_view v;
    assert_int_equal(fxsc_snapshot(s, 50 * SEC, &v, err, sizeof err), 0);
    assert_string_equal(jv(&v, 4)->reason, "starting on cuda:0");
    assert_string_equal(jv(&v, 5)->reason,
                        "team a at memory quota: needs 5.0 GiB, 7.0/8.0 GiB in use on gpu");
    fxsc_view_free(&v);
    assert_int_equal(decide(s, 50 * SEC, d), 1);
    assert_int_equal(d[0].job, 4);
    /* a job larger than the cap waits for it to change */
    fxsc_job j6 = mkjob(6, "a", FXSC_NORMAL, "cuda:0", FXSC_GPU, 1, 9 * GIB);
    assert_int_equal(fxsc_submit(s, &j6, 60 * SEC, err, sizeof err), 0);
    assert_int_equal(fxsc_remove(s, 2, 60 * SEC, err, sizeof err), 0);
    assert_int_equal(fxsc_remove(s, 4, 60 * SEC, err, sizeof err), 0);
    assert_int_equal(decide(s, 60 * SEC, d), 1);
    assert_int_equal(d[0].job, 5);
    reason_is(s, 60 * SEC, 6, "team a at memory quota: needs 9.0 GiB, 5.0/8.0 GiB in use on gpu");
    a.max_memory[FXSC_GPU] = 0; /* no cap */
    assert_int_equal(fxsc_set_team(s, "a", &a, err, sizeof err), 0);
    assert_int_equal(decide(s, 61 * SEC, d), 1);
    assert_int_equal(d[0].job, 6);
    fxsc_free(s);
}

/* ---------------------------------------------------------- the simulator */

enum { UNSUBMITTED, QUEUED, RUNNING, DONE };
#define MAXT 6
#define MAXD 4
#define CKPT (60 * SEC)

typedef struct {
    fxsc_job j;
    int team;
    int state;
    int dev;
    int64_t work, done;       /* ms of run time needed; persisted at checkpoints */
    int64_t run_start, seg;   /* this run's start; since the last checkpoint */
    int64_t asked;            /* when it last entered the queue */
    bool preempt_req, within_at_ask;
    int64_t wait_max;         /* the longest single wait */
} sjob;

typedef struct {
    const char *name;
    fxsc_team_cfg cfg;
} steam;

typedef struct sim sim;
struct sim {
    fxsc *s;
    int64_t now, tick, min_run;
    steam teams[MAXT];
    int n_teams;
    fxsc_device devs[MAXD];
    uint64_t reserved[MAXD];
    int n_devs;
    sjob *jobs;
    int n, cap;
    int *act;                         /* the jobs not DONE (indices), compacted every step */
    int n_act;
    int64_t measure_from;
    double slot_ms[MAXT];             /* in the measure window */
    double budget_ms[MAXT];           /* in the current budget window */
    int budget_slots[MAXT];           /* the most slots it ran in the window */
    int64_t budget_win[MAXT];
    int nominal_team;                 /* the team whose waits within nominal are measured */
    int64_t nominal_waits, nominal_wait_max;
    int64_t starts, preempts, snapshots;
    int64_t memory_waits;             /* queued jobs seen "at memory quota" in snapshots */
    void (*arrive)(sim *m);           /* submits what arrives at m->now */
    int64_t next_arrival;
    unsigned rng;
    bool check_snapshots;
};

/* i: each job that is not DONE */
#define FOR_ACTIVE(m, i) for (int a_ = 0, i; a_ < (m)->n_act && ((i) = (m)->act[a_], 1); a_++)

static unsigned rnd(sim *m)
{
    m->rng = m->rng * 1103515245u + 12345u;
    return (m->rng >> 8) & 0xffffff;
}
static int64_t uniform(sim *m, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd(m) % (unsigned)(hi - lo + 1));
}

static int dev_of(const sim *m, const char *name)
{
    for (int i = 0; i < m->n_devs; i++)
        if (strcmp(m->devs[i].name, name) == 0)
            return i;
    fail_msg("device %s", name);
    return -1;
}

static void sim_team(sim *m, const char *name, fxsc_team_cfg cfg)
{
    m->teams[m->n_teams].name = name;
    if (cfg.weight == 0)
        cfg.weight = 1;
    if (cfg.budget_window_ms == 0)
        cfg.budget_window_ms = 24 * HOUR;
    m->teams[m->n_teams++].cfg = cfg;
    assert_int_equal(fxsc_set_team(m->s, name, &cfg, err, sizeof err), 0);
}

static void sim_dev(sim *m, const char *name, fxsc_kind kind, int slots, uint64_t mem)
{
    add_dev(m->s, name, kind, slots, mem);
    fxsc_device d = {.kind = kind, .slots = slots, .memory_bytes = mem};
    snprintf(d.name, sizeof d.name, "%s", name);
    m->devs[m->n_devs++] = d;
}

static int running_slots(const sim *m, int team, int kind)
{
    int n = 0;
    FOR_ACTIVE(m, i)
        if (m->jobs[i].state == RUNNING && m->jobs[i].team == team && (int)m->jobs[i].j.kind == kind)
            n += m->jobs[i].j.slots;
    return n;
}

static sjob *sim_submit(sim *m, int team, fxsc_priority prio, bool preemptible, const char *dev,
                        fxsc_kind kind, int slots, uint64_t mem, int64_t work)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 1024;
        m->jobs = realloc(m->jobs, (size_t)m->cap * sizeof *m->jobs);
        m->act = realloc(m->act, (size_t)m->cap * sizeof *m->act);
        assert_non_null(m->jobs);
        assert_non_null(m->act);
    }
    sjob *x = &m->jobs[m->n];
    memset(x, 0, sizeof *x);
    x->j = mkjob(m->n + 1, m->teams[team].name, prio, dev, kind, slots, mem);
    x->j.preemptible = preemptible || m->teams[team].cfg.budget_device_seconds > 0;
    x->j.submit_ms = m->now;
    x->team = team;
    x->work = work;
    x->state = QUEUED;
    x->asked = m->now;
    x->dev = -1;
    /* within nominal when it asks: its team's running and queued slots of
     * the kind, this job's included, fit the nominal quota */
    int nominal = m->teams[team].cfg.nominal_slots[kind], mine = slots;
    FOR_ACTIVE(m, i)
        if ((m->jobs[i].state == RUNNING || m->jobs[i].state == QUEUED) &&
            m->jobs[i].team == team && m->jobs[i].j.kind == kind)
            mine += m->jobs[i].j.slots;
    m->act[m->n_act++] = m->n;
    x->within_at_ask = team == m->nominal_team && nominal > 0 && mine <= nominal;
    m->n++;
    assert_int_equal(fxsc_submit(m->s, &x->j, m->now, err, sizeof err), 0);
    return x;
}

static int queued_of(const sim *m, int team)
{
    int n = 0;
    FOR_ACTIVE(m, i)
        n += m->jobs[i].state == QUEUED && m->jobs[i].team == team;
    return n;
}

/* Quotas, max running, device slots and memory, budgets: never exceeded. */
static void check_invariants(sim *m)
{
    int dev_slots[MAXD] = {0};
    uint64_t dev_mem[MAXD] = {0};
    for (int t = 0; t < m->n_teams; t++) {
        const fxsc_team_cfg *c = &m->teams[t].cfg;
        int running = 0, slots = 0;
        for (int k = 0; k < FXSC_KINDS; k++) {
            int used = running_slots(m, t, k);
            slots += used;
            if (c->nominal_slots[k] || c->borrow_slots[k])
                if (used > c->nominal_slots[k] + c->borrow_slots[k])
                    fail_msg("team %s runs %d %s slots over nominal %d + borrow %d at %lld",
                             m->teams[t].name, used, k ? "gpu" : "cpu", c->nominal_slots[k],
                             c->borrow_slots[k], (long long)m->now);
        }
        FOR_ACTIVE(m, i)
            running += m->jobs[i].state == RUNNING && m->jobs[i].team == t;
        if (c->max_running && running > c->max_running)
            fail_msg("team %s runs %d jobs, max %d", m->teams[t].name, running, c->max_running);
        for (int k = 0; k < FXSC_KINDS; k++) {
            uint64_t mem = 0;
            FOR_ACTIVE(m, i)
                if (m->jobs[i].state == RUNNING && m->jobs[i].team == t &&
                    (int)m->jobs[i].j.kind == k)
                    mem += m->jobs[i].j.memory_bytes;
            if (c->max_memory[k] && mem > c->max_memory[k])
                fail_msg("team %s holds %llu bytes of %s memory, cap %llu at %lld",
                         m->teams[t].name, (unsigned long long)mem, k ? "gpu" : "cpu",
                         (unsigned long long)c->max_memory[k], (long long)m->now);
        }
        /* a budget is overrun by at most the preemption latency (one
         * decide tick plus one checkpoint interval) of what the team runs
         * (its jobs with a budget are preemptible here: a non-preemptible
         * one runs to its end, docs/scheduling.md) */
        (void)slots;
        if (c->budget_device_seconds > 0 &&
            m->budget_ms[t] > c->budget_device_seconds * 1000 +
                                  m->budget_slots[t] * (double)(m->tick + CKPT))
            fail_msg("team %s used %.0f ms of a %.0f s budget", m->teams[t].name, m->budget_ms[t],
                     c->budget_device_seconds);
    }
    FOR_ACTIVE(m, i)
        if (m->jobs[i].state == RUNNING) {
            dev_slots[m->jobs[i].dev] += m->jobs[i].j.slots;
            dev_mem[m->jobs[i].dev] += m->jobs[i].j.memory_bytes;
        }
    for (int d = 0; d < m->n_devs; d++) {
        if (dev_slots[d] > m->devs[d].slots)
            fail_msg("%s: %d/%d slots", m->devs[d].name, dev_slots[d], m->devs[d].slots);
        (void)dev_mem;
    }
}

/* The snapshot before a decide says what the decide does: the jobs it
 * starts are exactly those "starting on D", positions are 1..queued, and
 * a PREEMPT's claimer was "waiting ... preempting" or the budget's. */
static void check_snapshot(sim *m, const fxsc_view *v, const fxsc_decision *d, int nd)
{
    int queued = 0, running = 0;
    bool seen_queued = false;
    for (int i = 0; i < v->n_jobs; i++) {
        const fxsc_job_view *j = &v->jobs[i];
        sjob *x = &m->jobs[j->id - 1];
        if (j->running) {
            assert_false(seen_queued); /* running first */
            assert_int_equal(x->state, RUNNING);
            running++;
            continue;
        }
        seen_queued = true;
        assert_int_equal(x->state, QUEUED);
        assert_int_equal(j->position, ++queued); /* in order, 1 = next */
        assert_true(j->reason[0]);
        bool starts = false;
        for (int k = 0; k < nd; k++)
            if (d[k].action == FXSC_START && d[k].job == j->id) {
                char want[FXSC_REASON_MAX];
                snprintf(want, sizeof want, "starting on %s", d[k].device);
                assert_string_equal(j->reason, want);
                starts = true;
            }
        if (getenv("SIMDEBUG") && x->within_at_ask && m->now - x->asked > CKPT)
            print_message("t=%lld job %lld (%s, %d slots) waits %lld s: %s\n", (long long)m->now,
                          (long long)j->id, j->team, x->j.slots,
                          (long long)(m->now - x->asked) / 1000, j->reason);
        if (!starts && strncmp(j->reason, "starting on", 11) == 0)
            fail_msg("job %lld: '%s' but not started", (long long)j->id, j->reason);
        if (strstr(j->reason, "at memory quota")) {
            /* memory is never a reason to preempt: it waits without a claim */
            m->memory_waits++;
            assert_true(m->teams[x->team].cfg.max_memory[x->j.kind] > 0);
        }
        if (strstr(j->reason, "budget spent")) {
            const fxsc_team_view *t = tv(v, j->team);
            assert_true(t->budget > 0 && t->budget_used >= t->budget);
        }
    }
    for (int k = 0; k < nd; k++) {
        if (d[k].action != FXSC_PREEMPT || strstr(d[k].reason, "budget spent"))
            continue;
        long long claimer = 0;
        assert_int_equal(sscanf(d[k].reason, "job %lld of team", &claimer), 1);
        const fxsc_job_view *c = jv(v, claimer);
        assert_false(c->running);
        if (!strstr(c->reason, "preempting"))
            fail_msg("claimer %lld: '%s'", claimer, c->reason);
    }
    int sim_running = 0;
    FOR_ACTIVE(m, i)
        sim_running += m->jobs[i].state == RUNNING;
    assert_int_equal(running, sim_running);
    m->snapshots++;
}

static void apply(sim *m, const fxsc_decision *d, int nd)
{
    for (int k = 0; k < nd; k++) {
        sjob *x = &m->jobs[d[k].job - 1];
        if (d[k].action == FXSC_START) {
            assert_int_equal(x->state, QUEUED);
            const fxsc_team_cfg *c = &m->teams[x->team].cfg;
            if (c->budget_device_seconds > 0)
                assert_true(m->budget_ms[x->team] < c->budget_device_seconds * 1000);
            x->state = RUNNING;
            x->dev = dev_of(m, d[k].device);
            if (x->j.device[0])
                assert_string_equal(x->j.device, d[k].device);
            assert_int_equal(m->devs[x->dev].kind, x->j.kind);
            /* memory: the running jobs' estimates and the reservations fit */
            if (m->devs[x->dev].memory_bytes) {
                uint64_t mem = m->reserved[x->dev];
                FOR_ACTIVE(m, i)
                    if (m->jobs[i].state == RUNNING && m->jobs[i].dev == x->dev)
                        mem += m->jobs[i].j.memory_bytes;
                if (mem > m->devs[x->dev].memory_bytes)
                    fail_msg("%s memory over: %llu", d[k].device, (unsigned long long)mem);
            }
            x->run_start = x->seg = m->now;
            int64_t w = m->now - x->asked;
            if (w > x->wait_max)
                x->wait_max = w;
            if (x->within_at_ask) {
                m->nominal_waits++;
                if (w > m->nominal_wait_max)
                    m->nominal_wait_max = w;
            }
            m->starts++;
        } else {
            assert_int_equal(x->state, RUNNING);
            assert_false(x->preempt_req);
            if (!x->j.preemptible)
                fail_msg("job %lld is not preemptible: '%s'", (long long)x->j.id, d[k].reason);
            if (!strstr(d[k].reason, "budget spent") && m->now - x->run_start < m->min_run)
                fail_msg("job %lld preempted after %lld ms (min run %lld)", (long long)x->j.id,
                         (long long)(m->now - x->run_start), (long long)m->min_run);
            x->preempt_req = true;
            m->preempts++;
        }
    }
}

/* The owner: runs time to `until`, handling finishes, checkpoints (where a
 * requested preemption is carried out), arrivals, and decides at every
 * event and every tick. */
static void sim_run(sim *m, int64_t until)
{
    fxsc_decision d[64];
    while (m->now < until) {
        int64_t next = m->now + m->tick;
        if (m->next_arrival > m->now && m->next_arrival < next)
            next = m->next_arrival;
        FOR_ACTIVE(m, i) {
            sjob *x = &m->jobs[i];
            if (x->state != RUNNING)
                continue;
            int64_t fin = x->seg + (x->work - x->done);
            int64_t ck = x->seg + ((m->now - x->seg) / CKPT + 1) * CKPT;
            if (fin < next)
                next = fin;
            if (ck < next)
                next = ck;
        }
        /* accounting over [now, next) */
        FOR_ACTIVE(m, i) {
            sjob *x = &m->jobs[i];
            if (x->state != RUNNING)
                continue;
            int64_t from = m->now > m->measure_from ? m->now : m->measure_from;
            if (next > from)
                m->slot_ms[x->team] += (double)x->j.slots * (double)(next - from);
        }
        for (int t = 0; t < m->n_teams; t++) {
            int64_t w = m->teams[t].cfg.budget_window_ms, win = next / w;
            int slots = running_slots(m, t, FXSC_CPU) + running_slots(m, t, FXSC_GPU);
            if (slots > m->budget_slots[t])
                m->budget_slots[t] = slots;
            if (win != m->budget_win[t]) {
                m->budget_win[t] = win;
                m->budget_slots[t] = 0;
                m->budget_ms[t] = (double)slots * (double)(next - win * w);
            } else {
                m->budget_ms[t] += (double)slots * (double)(next - m->now);
            }
        }
        m->now = next;
        int na = 0;
        for (int a = 0; a < m->n_act; a++)
            if (m->jobs[m->act[a]].state != DONE)
                m->act[na++] = m->act[a];
        m->n_act = na;
        FOR_ACTIVE(m, i) {
            sjob *x = &m->jobs[i];
            if (x->state != RUNNING)
                continue;
            int64_t ran = m->now - x->seg;
            if (x->done + ran >= x->work) {
                x->state = DONE;
                assert_int_equal(fxsc_remove(m->s, x->j.id, m->now, err, sizeof err), 0);
            } else if (ran > 0 && ran % CKPT == 0) {
                x->done += ran;
                x->seg = m->now;
                assert_int_equal(fxsc_checkpointed(m->s, x->j.id, m->now), 0);
                if (x->preempt_req) {
                    assert_int_equal(fxsc_preempted(m->s, x->j.id, m->now, err, sizeof err), 0);
                    x->state = QUEUED;
                    x->preempt_req = false;
                    x->asked = m->now;
                    x->within_at_ask = false;
                }
            }
        }
        if (m->arrive && m->next_arrival <= m->now)
            m->arrive(m);
        for (;;) {
            fxsc_view v;
            bool snap = m->check_snapshots;
            if (snap)
                assert_int_equal(fxsc_snapshot(m->s, m->now, &v, err, sizeof err), 0);
            int nd = decide(m->s, m->now, d);
            if (snap) {
                check_snapshot(m, &v, d, nd);
                fxsc_view_free(&v);
            }
            apply(m, d, nd);
            if (nd < 64)
                break;
        }
        check_invariants(m);
    }
}

static void sim_init(sim *m, int64_t half_life, int64_t min_run, int64_t aging, int64_t tick)
{
    memset(m, 0, sizeof *m);
    m->s = new_sched(half_life, min_run, aging);
    m->tick = tick;
    m->min_run = min_run;
    m->rng = 12345;
    m->nominal_team = -1;
    for (int t = 0; t < MAXT; t++)
        m->budget_win[t] = -1;
}

static void sim_free(sim *m)
{
    fxsc_free(m->s);
    free(m->jobs);
    free(m->act);
}

/* ------------------------------------------------------------ fair share */

static int64_t fair_gpu;

static void arrive_flood(sim *m)
{
    /* unlimited demand: every team keeps 30 jobs queued */
    for (int t = 0; t < m->n_teams; t++)
        while (queued_of(m, t) < 30)
            sim_submit(m, t, FXSC_NORMAL, true, fair_gpu ? "" : "cpu",
                       fair_gpu ? FXSC_GPU : FXSC_CPU, 1, 0, uniform(m, 60, 300) * SEC);
    m->next_arrival = m->now + m->tick;
}

static void fair_share(bool gpu)
{
    sim m;
    sim_init(&m, HOUR, MIN, -1, 10 * SEC);
    fair_gpu = gpu;
    if (gpu) {
        sim_dev(&m, "cuda:0", FXSC_GPU, 1, 0);
        sim_dev(&m, "cuda:1", FXSC_GPU, 1, 0);
    } else {
        sim_dev(&m, "cpu", FXSC_CPU, 8, 0);
    }
    sim_team(&m, "a", (fxsc_team_cfg){.weight = 1});
    sim_team(&m, "b", (fxsc_team_cfg){.weight = 2});
    m.arrive = arrive_flood;
    m.measure_from = 4 * HOUR;
    sim_run(&m, 30 * HOUR);
    double a = m.slot_ms[0], b = m.slot_ms[1], fa = a / (a + b);
    print_message("fair share (%s): team a %.4f, team b %.4f of %.0f slot-hours (want 1/3, "
                  "2/3 within 5%%); %d jobs\n",
                  gpu ? "2 gpus" : "cpu 8 slots", fa, 1 - fa, (a + b) / HOUR, m.n);
    assert_true(m.n > 1000);
    assert_true(fa > (1.0 / 3) * 0.95 && fa < (1.0 / 3) * 1.05);
    assert_true(1 - fa > (2.0 / 3) * 0.95 && 1 - fa < (2.0 / 3) * 1.05);
    /* the device was never idle with demand */
    assert_true(a + b > 0.99 * (gpu ? 2 : 8) * 26.0 * HOUR);
    sim_free(&m);
}

static void test_fair_share_cpu(void **state)
{
    (void)state;
    fair_share(false);
}

static void test_fair_share_gpu(void **state)
{
    (void)state;
    fair_share(true);
}

/* -------------------------------------------------- nominal start bound */

static void arrive_nominal(sim *m)
{
    /* a (best effort) and c (nominal 2 + borrow 4) flood; b (nominal 3)
     * asks now and then, for 1-4 minute jobs of 1 or 2 slots */
    int a = 0, b = 1, c = 2;
    while (queued_of(m, a) < 20)
        sim_submit(m, a, FXSC_NORMAL, true, "cpu", FXSC_CPU, 1, 0, uniform(m, 5, 20) * MIN);
    while (queued_of(m, c) < 20)
        sim_submit(m, c, (fxsc_priority)uniform(m, 1, 3), true, "cpu", FXSC_CPU, 1, 0,
                   uniform(m, 5, 20) * MIN);
    if (m->now >= m->measure_from && uniform(m, 0, 99) < 3)
        sim_submit(m, b, (fxsc_priority)uniform(m, 1, 3), true, "cpu", FXSC_CPU,
                   (int)uniform(m, 1, 2), 0, uniform(m, 1, 4) * MIN);
    m->next_arrival = m->now + 5 * SEC;
}

static void test_nominal_starts_within_checkpoint(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 10 * MIN, 30 * SEC, -1, SEC);
    m.check_snapshots = getenv("SIMDEBUG") != NULL;
    sim_dev(&m, "cpu", FXSC_CPU, 8, 0);
    sim_team(&m, "a", (fxsc_team_cfg){.weight = 1});
    sim_team(&m, "b", quota(3, 0));
    sim_team(&m, "c", quota(2, 4));
    m.arrive = arrive_nominal;
    m.nominal_team = 1;
    m.measure_from = 30 * MIN;
    sim_run(&m, 16 * HOUR);
    print_message("nominal: %lld jobs of team b asked within nominal quota; longest wait %.1f s "
                  "(bound: one checkpoint interval, %lld s); %lld preemptions, %d jobs\n",
                  (long long)m.nominal_waits, m.nominal_wait_max / 1000.0,
                  (long long)(CKPT / SEC), (long long)m.preempts, m.n);
    assert_true(m.nominal_waits > 100);
    assert_true(m.preempts > 100);
    assert_true(m.nominal_wait_max <= CKPT);
    sim_free(&m);
}

/* ------------------------------------------------------------ starvation */

static int64_t low_wait_max, low_started, low_total;

static void arrive_starve(sim *m)
{
    /* both teams flood with HIGH and NORMAL work (4 jobs always queued:
     * the device is never without newer, higher work); each asks for a LOW
     * job about every 40 minutes */
    for (int t = 0; t < 2; t++) {
        while (queued_of(m, t) < 4)
            sim_submit(m, t, uniform(m, 0, 1) ? FXSC_HIGH : FXSC_NORMAL, true, "cpu", FXSC_CPU,
                       1, 0, uniform(m, 60, 300) * SEC);
        if (uniform(m, 0, 239) == 0)
            sim_submit(m, t, FXSC_LOW, true, "cpu", FXSC_CPU, 1, 0, uniform(m, 60, 300) * SEC);
    }
    m->next_arrival = m->now + 10 * SEC;
}

#define AGING (10 * MIN)
#define DMAX (300 * SEC)
/* the bound (docs/scheduling.md): aging lifts a LOW job to HIGH in 2 aging
 * periods; from there it is first of its team and its team gets one of the
 * next slots to free (at most the longest job) */
#define STARVE_BOUND (2 * AGING + 2 * DMAX)

static void starvation(int64_t aging)
{
    sim m;
    sim_init(&m, 10 * MIN, MIN, aging, 10 * SEC);
    sim_dev(&m, "cpu", FXSC_CPU, 4, 0);
    sim_team(&m, "a", (fxsc_team_cfg){.weight = 1});
    sim_team(&m, "b", (fxsc_team_cfg){.weight = 1});
    m.arrive = arrive_starve;
    sim_run(&m, 24 * HOUR);
    low_wait_max = low_started = low_total = 0;
    for (int i = 0; i < m.n; i++) {
        sjob *x = &m.jobs[i];
        if (x->j.priority != FXSC_LOW)
            continue;
        low_total++;
        int64_t w = x->state == QUEUED ? m.now - x->asked : x->wait_max;
        if (x->state != QUEUED)
            low_started++;
        if (w > low_wait_max)
            low_wait_max = w;
    }
    sim_free(&m);
}

static void test_low_priority_not_starved(void **state)
{
    (void)state;
    starvation(AGING);
    print_message("starvation: %lld LOW jobs, %lld started, longest wait %.1f min "
                  "(bound 2 x aging + 2 x longest job = %.0f min)\n",
                  (long long)low_total, (long long)low_started, low_wait_max / 60000.0,
                  STARVE_BOUND / 60000.0);
    assert_true(low_total > 30);
    assert_true(low_wait_max <= STARVE_BOUND);
    /* without aging the same workload starves them: the bound is aging's */
    starvation(-1);
    print_message("starvation without aging: %lld LOW jobs, %lld started, longest wait %.1f min\n",
                  (long long)low_total, (long long)low_started, low_wait_max / 60000.0);
    assert_true(low_wait_max > STARVE_BOUND);
}

/* ----------------------------------------------------- random invariants */

static void arrive_chaos(sim *m)
{
    int t = (int)uniform(m, 0, m->n_teams - 1);
    int r = (int)uniform(m, 0, 99);
    fxsc_priority prio = (fxsc_priority)uniform(m, 1, 3);
    bool pre = uniform(m, 0, 99) >= 20;
    int64_t work = uniform(m, 20, 240) * SEC;
    if (r < 65) {
        sim_submit(m, t, prio, pre, "cpu", FXSC_CPU, (int)uniform(m, 1, 3) > 2 ? 3 : 1, 0, work);
    } else if (r < 90) {
        const char *dev = r < 75 ? "" : r < 83 ? "cuda:0" : "cuda:1";
        int slots = dev[0] && strcmp(dev, "cuda:0") == 0 ? (int)uniform(m, 1, 2) : 1;
        sim_submit(m, t, prio, pre, dev, FXSC_GPU, slots, (uint64_t)uniform(m, 1, 12) * GIB, work);
    } else if (r < 94) { /* a cancel, queued or running */
        int i = (int)uniform(m, 0, m->n - 1);
        if (m->n && (m->jobs[i].state == QUEUED || m->jobs[i].state == RUNNING)) {
            assert_int_equal(fxsc_remove(m->s, m->jobs[i].j.id, m->now, err, sizeof err), 0);
            m->jobs[i].state = DONE;
        }
    } else if (r < 97) { /* a re-prioritisation */
        int i = (int)uniform(m, 0, m->n - 1);
        if (m->n) {
            int rc = fxsc_update(m->s, m->jobs[i].j.id, prio, NULL, FXSC_CPU, err, sizeof err);
            if (m->jobs[i].state == QUEUED) {
                assert_int_equal(rc, 0);
                m->jobs[i].j.priority = prio;
            } else {
                assert_int_not_equal(rc, 0);
            }
        }
    } else { /* a served model comes or goes */
        int d = (int)uniform(m, 1, 2);
        uint64_t bytes = m->reserved[d] ? 0 : (uint64_t)uniform(m, 2, 6) * GIB;
        char key[32];
        snprintf(key, sizeof key, "m/model%d", d);
        /* only while it fits beside the running jobs (the owner's rule) */
        uint64_t used = 0;
        FOR_ACTIVE(m, i)
            if (m->jobs[i].state == RUNNING && m->jobs[i].dev == d)
                used += m->jobs[i].j.memory_bytes;
        if (!bytes || used + bytes <= m->devs[d].memory_bytes) {
            assert_int_equal(fxsc_reserve(m->s, key, m->devs[d].name, bytes, err, sizeof err), 0);
            m->reserved[d] = bytes;
        }
    }
    m->next_arrival = m->now + uniform(m, 1, 40) * SEC;
}

static void test_invariants_random(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 20 * MIN, MIN, 15 * MIN, 5 * SEC);
    m.check_snapshots = true;
    sim_dev(&m, "cpu", FXSC_CPU, 6, 0);
    sim_dev(&m, "cuda:0", FXSC_GPU, 2, 16 * GIB);
    sim_dev(&m, "cuda:1", FXSC_GPU, 1, 24 * GIB);
    fxsc_team_cfg a = quota(2, 2);
    a.nominal_slots[FXSC_GPU] = 1;
    a.borrow_slots[FXSC_GPU] = 1;
    a.max_running = 4;
    a.max_memory[FXSC_GPU] = 16 * GIB;
    sim_team(&m, "a", a);
    sim_team(&m, "b", (fxsc_team_cfg){.weight = 2, .budget_device_seconds = 1800,
                                      .budget_window_ms = 2 * HOUR});
    fxsc_team_cfg c = quota(3, 0);
    c.nominal_slots[FXSC_GPU] = 1;
    sim_team(&m, "c", c);
    fxsc_team_cfg dd = {.weight = 1};
    dd.max_memory[FXSC_GPU] = 14 * GIB;
    sim_team(&m, "d", dd);
    m.arrive = arrive_chaos;
    sim_run(&m, 8 * HOUR);
    print_message("random: %d jobs, %lld starts, %lld preemptions, %lld snapshots checked, "
                  "%lld waits at a memory quota\n", m.n, (long long)m.starts,
                  (long long)m.preempts, (long long)m.snapshots, (long long)m.memory_waits);
    assert_true(m.n > 1000);
    assert_true(m.memory_waits > 0); /* the caps bind */
    assert_true(m.preempts > 20);
    sim_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_errors),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_decay),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_nominal_reclaim),
        cmocka_unit_test(test_quota_priority_and_move),
        cmocka_unit_test(test_memory_quota),
        cmocka_unit_test(test_snapshot_views),
        cmocka_unit_test(test_fair_share_cpu),
        cmocka_unit_test(test_fair_share_gpu),
        cmocka_unit_test(test_nominal_starts_within_checkpoint),
        cmocka_unit_test(test_low_priority_not_starved),
        cmocka_unit_test(test_invariants_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
