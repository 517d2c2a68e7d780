/*
 * batch_policy.h - whether a partial batch should wait for more requests,
 * decided from evidence the batcher gathers about its own model.
 *
 * Waiting pays only when it brings partners and when a bigger batch is
 * cheaper per sample by more than the wait costs. Neither is a constant: a
 * closed-loop client that waits for each answer can never send a partner,
 * however short its gaps, and what a batch of n costs depends on the model
 * and on its kernels (pre-packed weights change the curve). So a batcher
 * keeps, per model (fxb_evidence):
 *
 *  - the cost curve: the decayed mean execution time (inputs merged, forward
 *    pass, outputs copied; on the CPU the thread's CPU time, which load on
 *    the machine does not inflate) of its batches, per batch-size bucket
 *    (1, 2, 3-4, 5-8, ...), from the batches it ran;
 *  - what its waits gathered: per wait (from the first decision to wait
 *    until the batch went), how long it lasted and how many samples joined,
 *    exponentially decayed over the last FXB_WAIT_MEMORY waits: the rate at
 *    which partners arrive while a batch waits (joined / waited time) and the
 *    fraction of waits that gathered any partner (a gauge, not used by the
 *    rule);
 *  - the callers: the peak number of requests in the server at once (queued
 *    or running), decayed over about FXB_CALLER_MEMORY rounds of arrivals
 *    (a round: one arrival per caller). A lone
 *    closed-loop client has exactly one; a batch that holds as many
 *    requests as callers were ever seen at once has nobody left to wait for.
 *
 * The decision (fxb_decide, a pure function of the evidence and the
 * situation, unit-tested on made-up inputs) for a batch of n samples that
 * has room for more and whose oldest request may still wait left_ns:
 *
 *  1. others = callers - requests in the server now: the requests that may
 *     still come. 0 => go now (never wait for a partner that cannot exist).
 *  2. Probe: with no wait ever measured, or none for probe_every_ns
 *     (FXB_PROBE_DELAYS delays, at least FXB_PROBE_MIN_NS), wait to the
 *     end of the delay (or until every caller seen is in), so that a change
 *     in load is noticed: a probe that gathers nothing costs one delay per
 *     FXB_PROBE_DELAYS delays, under 1%. A lone closed-loop client never
 *     probes: step 1 comes first.
 *  3. Else, for waits w in (left/4, left/2, left, and the time the expected
 *     partners take to fill the room or to bring every other caller): the
 *     expected samples joining k = min(rate * w, room, others), and the
 *     server time per sample if the batch waits, (cost(n + k) + w * share)
 *     / (n + k) (the wait is time the instance stays idle, shared by the
 *     bigger batch; share: fxb_situation.wait_share, 1 on an accelerator,
 *     FXB_CPU_WAIT_SHARE on the CPU), against going now, cost(n) / n. The
 *     wait with the lowest figure, when it is below going now, is taken: the batch is decided
 *     again when it ends or when a request arrives, whichever is first.
 *     A cost not measured yet is interpolated between the measured buckets,
 *     or extrapolated from the largest (at the slope of the last two, never
 *     decreasing; with one bucket, proportionally: no gain assumed).
 *
 * max_queue_delay_us stays the bound on any wait: left_ns is measured from
 * the oldest request's arrival. The curve also picks the size to run
 * (fxb_best_size). The batcher applies all this only without preferred
 * batch sizes (with them a partial batch waits the delay for them, as
 * Triton's does). Batching never changes results (batch_io.h).
 */
#ifndef FXB_POLICY_H
#define FXB_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#define FXB_COST_BUCKETS 22  /* batch sizes 1, 2, 3-4, ..., up to 2^20 */
#define FXB_COST_MEMORY 8    /* a bucket's mean weighs a new batch 1/8 */
#define FXB_WAIT_MEMORY 16   /* waits' sums decay by 1/16 per wait */
#define FXB_CALLER_MEMORY 64 /* the caller peak decays by 1/64 per round */
#define FXB_PROBE_DELAYS 100 /* a probe at most once per 100 queue delays */
#define FXB_PROBE_MIN_NS 10000000 /* ... and per 10 ms */

typedef struct {
    double samples, ns; /* decayed means of the batches in this bucket */
    uint32_t count;     /* batches seen (saturates at FXB_COST_MEMORY) */
} fxb_cost_bucket;

typedef struct {
    fxb_cost_bucket cost[FXB_COST_BUCKETS];
    /* waits, decayed: how many, how many gathered a partner, the samples
     * that joined, the time waited */
    double waits, waits_joined, joined, waited_ns;
    uint64_t last_wait_ns; /* when the last wait began; 0: never */
    double callers;        /* the decayed peak of requests in the server */
    uint64_t last_whole_ns; /* when a batch last ran all it could (untrimmed) */
} fxb_evidence;

void fxb_evidence_init(fxb_evidence *e);
/* A batch of samples ran in ns (its execution: merge, forward, copy out). */
void fxb_evidence_batch(fxb_evidence *e, int64_t samples, uint64_t ns);
/* A wait ended after waited_ns, with joined samples more. */
void fxb_evidence_wait(fxb_evidence *e, uint64_t waited_ns, int64_t joined);
/* A request arrived; in_server: requests queued or running, itself included. */
void fxb_evidence_arrival(fxb_evidence *e, int in_server);
/* The cost of a batch of samples (ns), from the curve; < 0: nothing measured. */
double fxb_evidence_cost(const fxb_evidence *e, double samples);
/* Samples that joined per ns of waiting; < 0: no wait measured. */
double fxb_evidence_rate(const fxb_evidence *e);
/* The fraction of recent waits that gathered a partner; < 0: none measured. */
double fxb_evidence_partner_share(const fxb_evidence *e);

typedef struct {
    int64_t samples;        /* in the batch at hand, >= 1 */
    int64_t room;           /* samples it may still take (max size or top preferred) */
    int64_t left_ns;        /* until its oldest request has waited max_queue_delay_us */
    int in_server;          /* requests queued or running now, the batch's included */
    uint64_t now_ns;
    uint64_t probe_every_ns;
    /* The share of a wait that counts as server time in step 3, in (0, 1];
     * 0 is taken as 1. 1 where the device does nothing else while a batch
     * waits (an accelerator): FXB_CPU_WAIT_SHARE on the CPU (the batcher). */
    double wait_share;
} fxb_situation;

/* On the CPU a waiting batch leaves its core to the requests still on
 * their way (their gRPC path, parsing, the client beside the server), which
 * are most of a small model's cost per request: a wait costs next to
 * nothing there, and a batch waits whenever partners are expected within
 * the delay. Measured (README, Serving benchmark): at concurrency 8 the
 * mlp's batches grew from 1.6 to 4.5 samples, at 64 from 5 to 18-24, and
 * the CPU time per request fell by 10-15%. A lone caller is still never
 * held (step 1). */
#define FXB_CPU_WAIT_SHARE 0.01

typedef struct {
    int64_t wait_ns; /* 0: go now; else wait (at most) this long and decide again */
    bool probe;      /* the wait is a probe: keep it to the end of the delay */
} fxb_decision;

fxb_decision fxb_decide(const fxb_evidence *e, const fxb_situation *s);

/* The size (samples) to run out of total queued ones, from the cost curve:
 * the size among 1, 2, 4, 8, ... below total whose cost per sample is the
 * lowest, when it is below FXB_TRIM_SHARE of total's (the rest goes in the
 * next batch); else total. Only sizes whose bucket was measured at least
 * twice count, total's included. Where the engine's kernels make a middle size
 * dearer per sample than a smaller one (a library that packs its operands
 * from some size up), this runs the cheaper size. */
#define FXB_TRIM_SHARE 0.8
int64_t fxb_best_size(const fxb_evidence *e, int64_t total);

/* A batcher's evidence and the wait in progress (from the first decision to
 * wait until a batch goes): when it began, until when the last decision
 * holds, the samples that arrived since it began, the requests since the
 * last decision. Zeroed: no evidence. The batcher calls these under its
 * lock. */
typedef struct {
    fxb_evidence ev;
    uint64_t start, until;
    int64_t joined;
    uint32_t arrivals;
    bool probe;
} fxb_waiter;

/* A request of samples (< 1: one that cannot join) arrived; in_server as
 * in fxb_evidence_arrival. */
void fxb_waiter_arrival(fxb_waiter *w, int in_server, int64_t samples);
/* Whether the partial batch of situation s waits, and until when (*until).
 * Decided again (fxb_decide) when a request has arrived since the last
 * decision; else the last decision holds until its time, and a probe holds
 * to the end of the delay. */
bool fxb_waiter_wait(fxb_waiter *w, const fxb_situation *s, int64_t *until);
/* The size to run (fxb_best_size), except once per probe_every_ns, when a
 * batch runs whole so that the cost of its size stays measured. */
int64_t fxb_waiter_size(fxb_waiter *w, int64_t total, uint64_t now, uint64_t probe_every_ns);
/* A batch goes (or nothing is left to wait for): the wait in progress, if
 * any, becomes evidence. */
void fxb_waiter_end(fxb_waiter *w, uint64_t now);

#endif
