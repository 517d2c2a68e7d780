/*
 * train_ckpt.c - checkpoints of a training run (see train_internal.h).
 *
 * A checkpoint holds the loop's whole state (weights, buffers, optimizer
 * state, step, epoch, position in the shuffle order, both RNGs,
 * early-stopping state and best weights, the evaluation window's
 * accumulators), so a resumed run takes exactly the steps the uninterrupted
 * one would have.
 *
 * Layout (one safetensors buffer): "model/<param>" (parameters and
 * buffers), "optim/<param>.<slot>", "best/<param>" (early stopping),
 * "trainer/state" (i64 words, see enum st_word), "trainer/perm" (the
 * shuffle order), "trainer/window" (accuracy counts since the last
 * evaluation), "trainer/window_loss" (per loss, the sum of its unweighted
 * values since the last evaluation, doubles by their bits); the metadata
 * repeats step and epoch for people.
 */
#include "training/train_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

static double bits_to_double(int64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static int64_t double_bits(double d)
{
    int64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

enum st_word {
    ST_MAGIC,
    ST_STEP,
    ST_EPOCH,
    ST_POS,
    ST_NTRAIN,
    ST_TOTAL,
    ST_NMETRICS,
    ST_HAS_BEST,
    ST_BEST,
    ST_WAIT,
    ST_WIN_LOSS,
    ST_WIN_N,
    ST_RNG,
    ST_CTX_RNG = ST_RNG + 4,
    ST_COUNT = ST_CTX_RNG + 4
};
#define CKPT_MAGIC 0x46585431 /* "FXT1" */
#define CKPT_EXTRA 4          /* the trainer/ tensors */

static fx_tensor *i64_tensor(int64_t n, const int64_t *v)
{
    fx_tensor *t = fx_tensor_create(fx_cpu(), FX_I64, 1, (int64_t[]){n});
    if (t && fx_tensor_copy_from_host(t, v, (size_t)n * sizeof *v) != FX_OK) {
        fx_tensor_free(t);
        t = NULL;
    }
    return t;
}

static int add_prefixed(fx_params *out, const char *prefix, const fx_params *src)
{
    char name[1024];
    for (int i = 0; i < src->count; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, src->items[i].name);
        if (fx_params_add(out, name, src->items[i].tensor) != FX_OK)
            return -1;
    }
    return 0;
}

/* The loop's scalar state as i64 words (doubles by their bits). */
static void pack_state(run_t *r, int64_t st[ST_COUNT])
{
    memset(st, 0, ST_COUNT * sizeof *st);
    st[ST_MAGIC] = CKPT_MAGIC;
    st[ST_STEP] = r->step;
    st[ST_EPOCH] = r->epoch;
    st[ST_POS] = r->pos;
    st[ST_NTRAIN] = r->P.n_train;
    st[ST_TOTAL] = r->P.total_steps;
    st[ST_NMETRICS] = r->P.nmetrics;
    st[ST_HAS_BEST] = r->has_best;
    st[ST_BEST] = double_bits(r->best);
    st[ST_WAIT] = r->wait;
    st[ST_WIN_LOSS] = double_bits(r->win_loss);
    st[ST_WIN_N] = r->win_n;
    fx_rng_get_state(r->rng, (uint64_t *)&st[ST_RNG]);
    fx_rng_get_state(fx_ctx_rng(r->ctx), (uint64_t *)&st[ST_CTX_RNG]);
}

static void unpack_state(run_t *r, const int64_t st[ST_COUNT])
{
    r->step = st[ST_STEP];
    r->epoch = st[ST_EPOCH];
    r->pos = st[ST_POS];
    r->has_best = st[ST_HAS_BEST] != 0;
    r->best = bits_to_double(st[ST_BEST]);
    r->wait = st[ST_WAIT];
    r->win_loss = bits_to_double(st[ST_WIN_LOSS]);
    r->win_n = st[ST_WIN_N];
    fx_rng_set_state(r->rng, (const uint64_t *)&st[ST_RNG]);
    fx_rng_set_state(fx_ctx_rng(r->ctx), (const uint64_t *)&st[ST_CTX_RNG]);
    fx_optim_set_steps(r->opt, r->step); /* the schedule's position */
}

/* Every tensor of the checkpoint, by its name there. */
static int checkpoint_tensors(run_t *r, fx_params *all, fx_params *ostate, fx_params *extra,
                              fx_tensor **ts)
{
    int64_t st[ST_COUNT];
    pack_state(r, st);
    ts[0] = i64_tensor(ST_COUNT, st);
    ts[1] = i64_tensor(r->P.n_train, r->perm);
    ts[2] = i64_tensor(2 * r->P.nmetrics + 1, r->win_correct); /* then win_total */
    /* the doubles' bytes, as state does with its words */
    ts[3] = i64_tensor(r->P.nlosses, (const int64_t *)(const void *)r->win_loss_out);
    static const char *const names[CKPT_EXTRA] = {"state", "perm", "window", "window_loss"};
    for (int i = 0; i < CKPT_EXTRA; i++)
        if (!ts[i] || fx_params_add(extra, names[i], ts[i]) != FX_OK)
            return -1;
    if (fx_optim_state(r->opt, ostate) != FX_OK)
        return -1;
    return add_prefixed(all, "model/", fxg_params(r->g)) || add_prefixed(all, "optim/", ostate) ||
           (r->has_best && add_prefixed(all, "best/", &r->best_w)) ||
           add_prefixed(all, "trainer/", extra);
}

/* The checkpoint of the current step as safetensors bytes (*buf: malloc):
 * 0 or an fxs_status with the message in msg. */
static int encode_checkpoint(run_t *r, uint8_t **buf, size_t *len, char *msg, size_t msglen)
{
    fx_params all, ostate, extra;
    fx_params_init(&all);
    fx_params_init(&ostate);
    fx_params_init(&extra);
    fx_tensor *ts[CKPT_EXTRA] = {NULL};
    int rc = checkpoint_tensors(r, &all, &ostate, &extra, ts) ? fxu_oom(msg, msglen) : 0;
    char sstep[32], sepoch[32];
    snprintf(sstep, sizeof sstep, "%" PRId64, r->step);
    snprintf(sepoch, sizeof sepoch, "%" PRId64, r->epoch);
    const char *keys[] = {"format", "step", "epoch"};
    const char *vals[] = {"fluxion-train-checkpoint-1", sstep, sepoch};
    if (!rc && fx_safetensors_encode(&all, 3, keys, vals, buf, len, msg, msglen) != FX_OK)
        rc = FXS_INTERNAL;
    for (int i = 0; i < CKPT_EXTRA; i++)
        fx_tensor_free(ts[i]);
    fx_params_clear(&all);
    fx_params_clear(&ostate);
    fx_params_clear(&extra);
    return rc;
}

int fxt__checkpoint(run_t *r, bool stopping)
{
    if (!r->hk->on_checkpoint)
        return 0;
    char msg[512] = "";
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = encode_checkpoint(r, &buf, &len, msg, sizeof msg);
    if (!rc)
        rc = r->hk->on_checkpoint(r->hk->data, buf, len, r->step, msg, sizeof msg);
    free(buf);
    if (!rc) {
        r->ckpt_failures = 0;
        r->ckpt_stored = r->step;
        return 0;
    }
    /* Not stored: the previous checkpoint stays the one to resume from. A
     * full disk is often freed again, so the run goes on and the next
     * interval tries again; a stop stops all the same. */
    r->ckpt_failures++;
    int max = r->hk->max_checkpoint_failures > 0 ? r->hk->max_checkpoint_failures
                                                 : FXT_MAX_CHECKPOINT_FAILURES;
    if (stopping || r->ckpt_failures < max)
        return 0;
    char last[64] = "no checkpoint of this run was stored";
    if (r->ckpt_stored >= 0)
        snprintf(last, sizeof last, "the last stored is of step %" PRId64, r->ckpt_stored);
    return fxt__rfail(r,
                      "checkpoint at step %" PRId64 ": %s: %s (%d checkpoints in a row were "
                      "not stored; %s)",
                      r->step, fxs_status_name(rc > 0 ? rc : FXS_UNKNOWN),
                      msg[0] ? msg : "not stored", r->ckpt_failures, last);
}

/* Copies "<prefix><name>" of src into every tensor of dst (checked first,
 * so nothing changes on error). */
static int restore(run_t *r, const fx_params *dst, const char *prefix, const fx_params *src)
{
    char name[1024], s1[160], s2[160];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < dst->count; i++) {
            snprintf(name, sizeof name, "%s%s", prefix, dst->items[i].name);
            const fx_tensor *s = fx_params_find(src, name), *d = dst->items[i].tensor;
            if (!s)
                return fxt__rfail(r, "resume: the checkpoint has no '%s'", name);
            if (s->dtype != d->dtype || !fx_tensor_same_shape(s, d))
                return fxt__rfail(r, "resume: '%s' is %s %s in the checkpoint, %s %s here", name,
                                  fx_dtype_name(s->dtype), fx_shape_str(s, s1, sizeof s1),
                                  fx_dtype_name(d->dtype), fx_shape_str(d, s2, sizeof s2));
            if (pass && fx_tensor_copy(dst->items[i].tensor, s) != FX_OK)
                return fxt__rfail(r, "resume: could not copy '%s'", name);
        }
    }
    return 0;
}

static int read_i64(run_t *r, const fx_params *src, const char *name, int64_t n, int64_t *out)
{
    const fx_tensor *t = fx_params_find(src, name);
    if (!t || t->dtype != FX_I64 || t->ndim != 1 || t->shape[0] != n)
        return fxt__rfail(r,
                          "resume: '%s' is missing or not i64[%" PRId64 "] (not a checkpoint of "
                          "this job?)",
                          name, n);
    return fx_tensor_to_host(t, out, (size_t)n * sizeof *out) == FX_OK
               ? 0
               : fxt__rfail(r, "resume: could not read '%s'", name);
}

/* The checkpoint's state words, checked against this job. */
static int read_state(run_t *r, const fx_params *in, int64_t st[ST_COUNT])
{
    const plan_t *p = &r->P;
    if (read_i64(r, in, "trainer/state", ST_COUNT, st))
        return -1;
    if (st[ST_MAGIC] != CKPT_MAGIC || st[ST_NTRAIN] != p->n_train ||
        st[ST_TOTAL] != p->total_steps || st[ST_NMETRICS] != p->nmetrics || st[ST_STEP] < 0 ||
        st[ST_STEP] > p->total_steps || st[ST_POS] < 0 || st[ST_POS] >= p->n_train)
        return fxt__rfail(r,
                          "resume: the checkpoint does not fit this job (step %" PRId64
                          " of %" PRId64 ", %" PRId64 " training samples; the job has %" PRId64
                          " steps, %" PRId64 ")",
                          st[ST_STEP], st[ST_TOTAL], st[ST_NTRAIN], p->total_steps, p->n_train);
    return 0;
}

int fxt__resume(run_t *r, const void *buf, size_t len)
{
    const plan_t *p = &r->P;
    fx_params in, ostate;
    fx_params_init(&in);
    fx_params_init(&ostate);
    char msg[512];
    if (fx_safetensors_decode(buf, len, &in, msg, sizeof msg) != FX_OK)
        return fxt__rfail(r, "resume: %s", msg);
    int64_t st[ST_COUNT];
    int rc = read_state(r, &in, st) || read_i64(r, &in, "trainer/perm", p->n_train, r->perm) ||
             read_i64(r, &in, "trainer/window", 2 * p->nmetrics + 1, r->win_correct);
    /* absent from the checkpoints of older versions: the window's per-loss
     * sums start from zero there */
    if (!rc && fx_params_find(&in, "trainer/window_loss"))
        rc =
            read_i64(r, &in, "trainer/window_loss", p->nlosses, (int64_t *)(void *)r->win_loss_out);
    for (int64_t i = 0; !rc && i < p->n_train; i++)
        if (r->perm[i] < 0 || r->perm[i] >= p->n_train)
            rc = fxt__rfail(r, "resume: trainer/perm holds %" PRId64 ", not a sample index",
                            r->perm[i]);
    if (!rc && fx_optim_state(r->opt, &ostate) != FX_OK)
        rc = fxt__rfail(r, "out of memory");
    rc = rc || restore(r, fxg_params(r->g), "model/", &in) || restore(r, &ostate, "optim/", &in) ||
         (st[ST_HAS_BEST] && (fxt__keep_best(r) || restore(r, &r->best_w, "best/", &in)));
    if (!rc)
        unpack_state(r, st);
    fx_params_clear(&ostate);
    fx_params_free_tensors(&in);
    return rc;
}
