/* yield.c - see yield.h. */
#include "training/yield.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "base/util.h"

static uint64_t now_ns(const fxt_yield *y)
{
    return y->o.now_ns ? y->o.now_ns(y->o.clock) : fxu_mono_ns();
}

static void sleep_ns(const fxt_yield *y, uint64_t ns)
{
    if (y->o.sleep_ns) {
        y->o.sleep_ns(y->o.clock, ns);
        return;
    }
    struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
    nanosleep(&ts, NULL);
}

/* Ages the window to now and adds the time since the last mark to training
 * or to waiting. A constant state over dt seconds weighs, in a window that
 * decays as exp(-t / W), the integral of that: W (1 - exp(-dt / W)). */
static void account(fxt_yield *y, uint64_t now, bool training)
{
    double dt = now > y->mark ? (double)(now - y->mark) / 1e9 : 0;
    double w = y->o.window_s, f = exp(-dt / w);
    y->train *= f;
    y->wait *= f;
    if (training)
        y->train += w * (1 - f);
    else
        y->wait += w * (1 - f);
    y->mark = now;
}

void fxt_yield_init(fxt_yield *y, const fxt_yield_opts *o)
{
    memset(y, 0, sizeof *y);
    if (o)
        y->o = *o;
    if (!(y->o.window_s > 0))
        y->o.window_s = FXT_YIELD_WINDOW_S;
    if (!(y->o.max_wait_s > 0))
        y->o.max_wait_s = FXT_YIELD_MAX_WAIT_S;
    if (!(y->o.poll_s > 0))
        y->o.poll_s = FXT_YIELD_POLL_S;
    if (!(y->o.min_share >= 0)) /* NaN too */
        y->o.min_share = 0;
    if (y->o.min_share > 1)
        y->o.min_share = 1;
    y->mark = now_ns(y);
}

double fxt_yield_share(const fxt_yield *y)
{
    double all = y->train + y->wait;
    return all > 0 ? y->train / all : 1;
}

/* Whether waiting p more seconds keeps training's share at min_share. */
static bool may_wait(const fxt_yield *y, double p)
{
    double w = y->o.window_s, f = exp(-p / w);
    double train = y->train * f, wait = y->wait * f + w * (1 - f);
    return train > 0 && train / (train + wait) >= y->o.min_share;
}

uint64_t fxt_yield_step(fxt_yield *y)
{
    account(y, now_ns(y), true);
    y->boundaries++;
    uint64_t waited = 0, max_wait = (uint64_t)(y->o.max_wait_s * 1e9);
    while (waited < max_wait && y->o.pressure && y->o.pressure(y->o.pressure_data) > 0) {
        uint64_t p = (uint64_t)(y->o.poll_s * 1e9);
        if (p > max_wait - waited)
            p = max_wait - waited;
        if (!may_wait(y, (double)p / 1e9))
            break;
        uint64_t before = y->mark;
        sleep_ns(y, p);
        account(y, now_ns(y), false);
        uint64_t d = y->mark - before;
        waited += d ? d : p; /* a clock that did not move still ends the wait */
    }
    if (waited) {
        y->yields++;
        y->waited_ns += waited;
    }
    return waited;
}

void fxt_yield_hook(void *data) { fxt_yield_step(data); }

/* The requests on the job's device, or 1 while the last one there was
 * submitted or answered less than FXT_YIELD_LINGER_S ago: a closed-loop
 * client sends its next request a round trip after its answer, and most of
 * a request's time is spent outside the batcher (gRPC, the network), where
 * the count does not see it. */
static int serving_pressure(void *data)
{
    const fxt_yield *y = data;
    uint64_t last = 0;
    int n = fxsv_serving_activity(y->sv, y->dev, &last);
    if (n > 0)
        return n;
    uint64_t now = fxu_mono_ns();
    return last && now - last < (uint64_t)(FXT_YIELD_LINGER_S * 1e9) ? 1 : 0;
}

void fxt_yield_serving(fxt_yield *y, fxsv_serving *sv, fx_device dev, double min_share)
{
    fxt_yield_opts o = { .min_share = min_share };
    fxt_yield_init(y, &o);
    y->sv = sv;
    y->dev = dev;
    if (sv) {
        y->o.pressure = serving_pressure;
        y->o.pressure_data = y; /* y must not move after this (the job's frame) */
    }
}
