/*
 * yield.h - inference before training: the policy a training job follows at
 * each step boundary (train.h fxt_hooks.yield) while requests for served
 * models wait on its device.
 *
 * At a step boundary the job asks for the pressure on its device (serving.h
 * fxsv_serving_activity: requests queued or running there, or one submitted
 * or answered less than FXT_YIELD_LINGER_S ago, since a client's next
 * request follows its answer by a round trip). While it is above 0 the job
 * sleeps in short polls (FXT_YIELD_POLL_S), so the batchers
 * have the device, and the CPU cores on the CPU, to themselves; it goes on
 * as soon as the pressure is gone. Two bounds keep the job alive under
 * steady load:
 *   - its share: training's share of the wall time, over a window of
 *     FXT_YIELD_WINDOW_S (an exponentially decayed window: time t seconds
 *     ago weighs exp(-t / window)), never drops below min_share because of
 *     a wait: a poll that would take it there is not slept;
 *   - a wait at one boundary lasts at most max_wait_s (FXT_YIELD_MAX_WAIT_S),
 *     so a stop or cancel is seen within that, whatever the share allows.
 * So a job whose step takes s seconds runs at least at min_share of its
 * speed alone (less only by what serving's own CPU or device use takes),
 * and serving waits for at most one step in progress.
 *
 * CPU threads: the engine's thread count is process-wide (fx_set_num_threads)
 * and shared by training and serving, so this module does not change it:
 * the yield is the thread budget. While serving has work on the CPU the
 * job's step loop (and its engine threads) does not run, except for its
 * min_share, so the two do not oversubscribe the cores beyond that share and
 * the one step in progress when requests arrive.
 *
 * The clock and the sleep can be injected (tests: a simulated clock); the
 * pressure is a callback (fxt_yield_serving below: a serving module's).
 * Not thread-safe: one job's thread owns its fxt_yield.
 */
#ifndef FXT_YIELD_H
#define FXT_YIELD_H

#include <stdbool.h>
#include <stdint.h>

#include "fluxion.h"
#include "serving/serving.h"

#define FXT_YIELD_MIN_SHARE 0.1  /* fluxiond --training-min-share's default */
#define FXT_YIELD_WINDOW_S 2.0
#define FXT_YIELD_MAX_WAIT_S 0.2
#define FXT_YIELD_POLL_S 0.0002
#define FXT_YIELD_LINGER_S 0.003 /* fxt_yield_serving: see yield.c */

typedef struct {
    double min_share;  /* [0, 1]: training's least share of the window */
    double window_s;   /* 0: FXT_YIELD_WINDOW_S */
    double max_wait_s; /* per step boundary; 0: FXT_YIELD_MAX_WAIT_S */
    double poll_s;     /* 0: FXT_YIELD_POLL_S */
    /* > 0: inference is waiting on the job's device. */
    int (*pressure)(void *data);
    void *pressure_data;
    /* NULL: CLOCK_MONOTONIC and nanosleep (tests inject a clock). */
    uint64_t (*now_ns)(void *clock);
    void (*sleep_ns)(void *clock, uint64_t ns);
    void *clock;
} fxt_yield_opts;

typedef struct {
    fxt_yield_opts o;
    uint64_t mark;      /* the clock at the last accounting */
    double train, wait; /* decayed seconds of each in the window */
    /* totals since init, for reports and tests */
    uint64_t waited_ns;
    int64_t boundaries, yields; /* step boundaries; those that waited */
    /* fxt_yield_serving's pressure source */
    fxsv_serving *sv;
    fx_device dev;
} fxt_yield;

/* Starts the accounting now (training runs from here). */
void fxt_yield_init(fxt_yield *y, const fxt_yield_opts *o);
/* The step-boundary policy: accounts the time since the last call as
 * training, then waits while the pressure is > 0 within the bounds above.
 * Returns the nanoseconds it waited. */
uint64_t fxt_yield_step(fxt_yield *y);
/* fxt_yield_step as a train.h hook (data: the fxt_yield). */
void fxt_yield_hook(void *data);
/* Training's share of the window now, in [0, 1] (1 before any wait). */
double fxt_yield_share(const fxt_yield *y);

/* Sets y up for a job on dev with sv's pressure there (fxsv_serving_pressure)
 * and the given min_share; the jobs module's wiring:
 *     fxt_yield y;
 *     fxt_yield_serving(&y, j->sv, in->device, j->opts.training_min_share);
 *     hooks.yield = j->opts.inference_first && j->sv ? fxt_yield_hook : NULL;
 *     hooks.yield_data = &y;
 * sv may be NULL (no pressure ever). */
void fxt_yield_serving(fxt_yield *y, fxsv_serving *sv, fx_device dev, double min_share);

#endif
