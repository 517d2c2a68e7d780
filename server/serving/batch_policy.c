/* batch_policy.c - see batch_policy.h. */
#include "serving/batch_policy.h"

#include <math.h>
#include <string.h>

void fxb_evidence_init(fxb_evidence *e) { memset(e, 0, sizeof *e); }

/* Bucket b holds batch sizes (2^(b-1), 2^b]: 1, 2, 3-4, 5-8, ... */
static int bucket_of(int64_t samples)
{
    int b = 0;
    while (b < FXB_COST_BUCKETS - 1 && ((int64_t)1 << b) < samples)
        b++;
    return b;
}

void fxb_evidence_batch(fxb_evidence *e, int64_t samples, uint64_t ns)
{
    if (samples < 1)
        return;
    fxb_cost_bucket *c = &e->cost[bucket_of(samples)];
    /* the plain mean of the first batches, then a moving one */
    if (c->count < FXB_COST_MEMORY)
        c->count++;
    c->samples += ((double)samples - c->samples) / c->count;
    c->ns += ((double)ns - c->ns) / c->count;
}

void fxb_evidence_wait(fxb_evidence *e, uint64_t waited_ns, int64_t joined)
{
    const double keep = 1.0 - 1.0 / FXB_WAIT_MEMORY;
    e->waits = e->waits * keep + 1;
    e->waits_joined = e->waits_joined * keep + (joined > 0);
    e->joined = e->joined * keep + (double)(joined > 0 ? joined : 0);
    e->waited_ns = e->waited_ns * keep + (double)waited_ns;
}

void fxb_evidence_arrival(fxb_evidence *e, int in_server)
{
    /* by 1/FXB_CALLER_MEMORY per round of arrivals from every caller, not
     * per arrival: 64 callers bring 64 arrivals per round, and the peak
     * comes once per round at most */
    e->callers *= 1.0 - 1.0 / (FXB_CALLER_MEMORY * (e->callers > 1 ? e->callers : 1));
    if ((double)in_server > e->callers)
        e->callers = in_server;
}

double fxb_evidence_cost(const fxb_evidence *e, double samples)
{
    /* the measured points (mean size, mean time), ascending in size */
    double x[FXB_COST_BUCKETS], y[FXB_COST_BUCKETS];
    int n = 0;
    for (int b = 0; b < FXB_COST_BUCKETS; b++)
        if (e->cost[b].count) {
            x[n] = e->cost[b].samples;
            y[n++] = e->cost[b].ns;
        }
    if (n == 0)
        return -1;
    if (samples <= x[0]) /* below the smallest: proportionally (no cheaper per sample) */
        return y[0] * samples / x[0];
    for (int i = 1; i < n; i++)
        if (samples <= x[i])
            return y[i - 1] + (y[i] - y[i - 1]) * (samples - x[i - 1]) / (x[i] - x[i - 1]);
    if (n == 1)
        return y[0] * samples / x[0];
    double slope = (y[n - 1] - y[n - 2]) / (x[n - 1] - x[n - 2]);
    return y[n - 1] + (slope > 0 ? slope : 0) * (samples - x[n - 1]);
}

double fxb_evidence_rate(const fxb_evidence *e)
{
    if (e->waits <= 0)
        return -1;
    return e->joined / (e->waited_ns > 1 ? e->waited_ns : 1);
}

double fxb_evidence_partner_share(const fxb_evidence *e)
{
    return e->waits > 0 ? e->waits_joined / e->waits : -1;
}

fxb_decision fxb_decide(const fxb_evidence *e, const fxb_situation *s)
{
    fxb_decision go = { 0, false };
    if (s->room <= 0 || s->left_ns <= 0 || s->samples < 1)
        return go;
    /* 1. nobody else to wait for: every caller seen at once is here */
    int64_t others = (int64_t)floor(e->callers + 0.5) - s->in_server;
    if (others <= 0)
        return go;
    /* 2. a probe: no wait measured yet, or none for a while */
    double rate = fxb_evidence_rate(e);
    if (rate < 0 || !e->last_wait_ns || s->now_ns - e->last_wait_ns >= s->probe_every_ns)
        return (fxb_decision){ s->left_ns, true };
    /* 3. the wait with the lowest server time per sample, if below going now */
    double n = (double)s->samples, now_cost = fxb_evidence_cost(e, n);
    if (rate <= 0 || now_cost < 0)
        return go;
    double kmax = (double)(s->room < others ? s->room : others);
    double left = (double)s->left_ns;
    double cand[4] = { left / 4, left / 2, left, kmax / rate };
    double share = s->wait_share > 0 && s->wait_share < 1 ? s->wait_share : 1;
    double best = now_cost / n, best_w = 0;
    for (int i = 0; i < 4; i++) {
        double w = cand[i] < left ? cand[i] : left;
        if (w < 1)
            continue;
        double k = rate * w < kmax ? rate * w : kmax;
        double per = (fxb_evidence_cost(e, n + k) + w * share) / (n + k);
        if (per < best) {
            best = per;
            best_w = w;
        }
    }
    return (fxb_decision){ (int64_t)ceil(best_w), false };
}

int64_t fxb_best_size(const fxb_evidence *e, int64_t total)
{
    double whole = fxb_evidence_cost(e, (double)total);
    /* only on sizes measured more than once: one batch is an anecdote */
    if (total < 2 || whole <= 0 || e->cost[bucket_of(total)].count < 2)
        return total;
    double best = whole / (double)total * FXB_TRIM_SHARE;
    int64_t size = total;
    for (int64_t m = 1; m < total; m *= 2) {
        if (e->cost[bucket_of(m)].count < 2)
            continue;
        double c = fxb_evidence_cost(e, (double)m) / (double)m;
        if (c < best) {
            best = c;
            size = m;
        }
    }
    return size;
}

int64_t fxb_waiter_size(fxb_waiter *w, int64_t total, uint64_t now, uint64_t probe_every_ns)
{
    int64_t size = fxb_best_size(&w->ev, total);
    if (size < total && now - w->ev.last_whole_ns >= probe_every_ns)
        size = total;
    if (size == total)
        w->ev.last_whole_ns = now;
    return size;
}

void fxb_waiter_arrival(fxb_waiter *w, int in_server, int64_t samples)
{
    fxb_evidence_arrival(&w->ev, in_server);
    if (w->start) {
        w->joined += samples > 0 ? samples : 1;
        w->arrivals++;
    }
}

bool fxb_waiter_wait(fxb_waiter *w, const fxb_situation *s, int64_t *until)
{
    if (s->left_ns <= 0 || (int64_t)floor(w->ev.callers + 0.5) <= s->in_server)
        return false; /* every caller seen at once is here: a probe ends too */
    uint64_t due = s->now_ns + (uint64_t)s->left_ns;
    if (w->start && (w->probe || !w->arrivals)) {
        uint64_t end = w->probe ? due : w->until < due ? w->until : due;
        *until = (int64_t)end;
        return s->now_ns < end;
    }
    fxb_decision d = fxb_decide(&w->ev, s);
    if (d.wait_ns <= 0)
        return false;
    if (!w->start) {
        w->start = s->now_ns;
        w->joined = 0;
        w->ev.last_wait_ns = s->now_ns;
    }
    w->probe = d.probe;
    w->arrivals = 0;
    w->until = s->now_ns + (uint64_t)d.wait_ns;
    *until = (int64_t)(w->until < due ? w->until : due);
    return true;
}

void fxb_waiter_end(fxb_waiter *w, uint64_t now)
{
    if (!w->start)
        return;
    fxb_evidence_wait(&w->ev, now > w->start ? now - w->start : 0, w->joined);
    w->start = 0;
    w->probe = false;
}
