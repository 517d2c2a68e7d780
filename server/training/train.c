/*
 * train.c - one training job on the engine (see train.h): fxt_run executes
 * the plan (train_plan.c) as a mini-batch loop: a step, the evaluations
 * (training window and validation rows, in eval mode), early stopping with
 * the best weights, periodic checkpoints (train_ckpt.c) and reports
 * (train_report.c), and the result weights at the end.
 */
#include "training/train_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serving/devices.h"

int fxt__rfail(run_t *r, const char *fmt, ...)
{
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A batch of rows idx[0..b) of column c (from row offset base) as an arena
 * tensor. */
static fx_tensor *gather(run_t *r, const fxds_column *c, const int64_t *idx, int64_t base,
                         int64_t b)
{
    size_t rb = fxt__row_bytes(c);
    if ((size_t)b * rb > r->stage_cap) {
        unsigned char *s = realloc(r->stage, (size_t)b * rb);
        if (!s)
            return fx_ctx_fail(r->ctx, FX_ERR_NOMEM, "out of memory gathering '%s'", c->name);
        r->stage = s;
        r->stage_cap = (size_t)b * rb;
    }
    const unsigned char *src = c->data;
    for (int64_t i = 0; i < b; i++)
        memcpy(r->stage + (size_t)i * rb, src + (size_t)(base + (idx ? idx[i] : i)) * rb, rb);
    int64_t shape[FX_MAX_DIMS];
    shape[0] = b;
    memcpy(shape + 1, c->sample_shape, (size_t)c->sample_ndim * sizeof *shape);
    return fx_tensor_from_host(r->ctx, c->dtype, c->sample_ndim + 1, shape, r->stage);
}

/* One loss term; classification losses see [rows, C] logits. *count gets
 * what FX_MEAN divides by. */
static fx_tensor *loss_term(fx_ctx *ctx, int kind, fx_tensor *pred, fx_tensor *target,
                            fx_reduction red, int64_t *count)
{
    if (!pred || !target)
        return NULL;
    if (kind == LK_MSE || kind == LK_BCE) {
        *count = fx_tensor_numel(pred);
        return (kind == LK_MSE ? fx_mse_loss : fx_bce_with_logits)(ctx, pred, target, red);
    }
    int64_t c = pred->shape[pred->ndim - 1];
    *count = c ? fx_tensor_numel(pred) / c : 0;
    fx_tensor *logits = fx_reshape(ctx, pred, 2, (int64_t[]){-1, c});
    if (kind == LK_CE)
        return fx_cross_entropy(ctx, logits, fx_reshape(ctx, target, 1, (int64_t[]){-1}), red);
    return fx_cross_entropy_soft(ctx, logits, fx_reshape(ctx, target, 2, (int64_t[]){-1, c}), red);
}

/* The batch mean of a ctc loss (each sample's loss over its target length,
 * as the engine's FX_MEAN) or of an output that is the loss. */
static fx_tensor *batch_mean_loss(run_t *r, const loss_t *l, bool val, const fxds_columns *cols,
                                  const int64_t *idx, int64_t base, int64_t b)
{
    fx_tensor *pred = r->out[l->out];
    if (!pred)
        return NULL;
    if (l->kind == LK_OUTPUT)
        return pred->ndim == 0 ? pred : fx_mean(r->ctx, pred, 0, NULL, false);
    fx_tensor *targets = gather(r, &cols->cols[val ? l->vcol : l->col], idx, base, b);
    fx_tensor *tlen = gather(r, &cols->cols[val ? l->vtlen : l->tlen], idx, base, b);
    int ic = val ? l->vilen : l->ilen;
    fx_tensor *ilen = ic >= 0 ? gather(r, &cols->cols[ic], idx, base, b)
                              : fx_full(r->ctx, FX_I64, 1, &b, (double)pred->shape[1]);
    fx_ctc_opts o = {.blank = l->blank, .reduction = FX_MEAN};
    return fx_ctc_loss(r->ctx, fx_transpose(r->ctx, pred, 0, 1), targets, ilen, tlen, &o);
}

/* Loss l of a batch: rows idx (NULL: consecutive) from base of cols (val:
 * the validation column indices). FX_SUM of ctc and output losses is the
 * batch mean times the rows, so that a validation's sum over count is the
 * same mean as training's. */
static fx_tensor *loss_of(run_t *r, const loss_t *l, bool val, const fxds_columns *cols,
                          const int64_t *idx, int64_t base, int64_t b, fx_reduction red,
                          int64_t *count)
{
    if (l->kind == LK_CTC || l->kind == LK_OUTPUT) {
        *count = b;
        fx_tensor *t = batch_mean_loss(r, l, val, cols, idx, base, b);
        return t && red == FX_SUM ? fx_scale(r->ctx, t, (float)b) : t;
    }
    return loss_term(r->ctx, l->kind, r->out[l->out],
                     gather(r, &cols->cols[val ? l->vcol : l->col], idx, base, b), red, count);
}

/* Forward of a batch: rows idx (NULL: consecutive) from base of the
 * columns cols (val: the validation column indices). */
static int forward(run_t *r, const fxds_columns *cols, bool val, const int64_t *idx, int64_t base,
                   int64_t b)
{
    const plan_t *p = &r->P;
    for (int i = 0; i < p->nfeeds; i++) {
        const feed_t *f = &p->feeds[i];
        r->in[f->input] = gather(r, &cols->cols[val ? f->vcol : f->col], idx, base, b);
    }
    char msg[512];
    if (fx_ctx_status(r->ctx) != FX_OK)
        return fxt__rfail(r, "%s", fx_ctx_error(r->ctx));
    if (fxg_forward(r->g, r->ctx, r->in, r->out, msg, sizeof msg))
        return fxt__rfail(r, "%s", msg);
    return 0;
}

/* Surfaces an error the device recorded while running the queued work
 * (what: "step 12", "evaluation at step 12"). */
static int device_ok(run_t *r, const char *what)
{
    char msg[384], name[32];
    if (fx_device_sync(r->hk->device, msg, sizeof msg) != FX_OK)
        return fxt__rfail(r, "%s: device %s: %s", what,
                          fx_device_str(r->hk->device, name, sizeof name),
                          msg[0] ? msg : "the device reported an error");
    return 0;
}

/* The job's memory limit over what it holds on its device. The persistent
 * part is measured once, after the first step made the gradients and the
 * optimizer state. */
static int memory_ok(run_t *r, const char *what)
{
    if (!r->hk->memory_limit_bytes)
        return 0;
    if (!r->persist_bytes) {
        fx_params ostate;
        fx_params_init(&ostate);
        if (fx_optim_state(r->opt, &ostate) != FX_OK)
            return fxt__rfail(r, "out of memory");
        r->persist_bytes = fxsv_params_bytes(fxg_params(r->g)) + fxsv_params_bytes(&ostate);
        fx_params_clear(&ostate);
    }
    char msg[384];
    uint64_t used = r->persist_bytes + fx_ctx_arena_capacity(r->ctx);
    if (fxsv_check_memory_limit("the job's weights, optimizer state and batches", r->hk->device,
                                used, r->hk->memory_limit_bytes, msg, sizeof msg))
        return fxt__rfail(r, "%s: %s", what, msg);
    return 0;
}

/* One optimizer step on the batch at the current position. */
/* Diverged: the run ends here and is done, its loss the non-finite value
 * (and no validation loss to trust), so that the job stores what it made
 * and its promotion gate never serves it (docs/versions.md). */
static int diverged(run_t *r, double loss)
{
    fx_ctx_reset(r->ctx);
    fxt__set_value(r, V_LOSS, loss);
    if (r->P.n_val)
        fxt__set_value(r, V_VAL_LOSS, NAN);
    r->stop_early = true;
    r->win_n = 0;
    return 0;
}

/* A step that failed on non-finite values after this run updated the
 * weights has diverged (the engine refuses non-finite outputs and losses,
 * FX_ERR_VALUE); before any update they come from the data or the version
 * trained from, and fail the job. */
static bool is_divergence(run_t *r, const char *msg)
{
    return r->step > r->step_start && fx_ctx_status(r->ctx) == FX_ERR_VALUE &&
           strstr(msg, "not finite") != NULL;
}

/* Forward and losses of this rank's rows of the step: the summed loss to
 * backpropagate (scaled by the rank's share of the global batch), its value
 * in *loss; NULL with *loss NAN when the step diverged; NULL with -1 in *rc
 * on an error. x: the data-parallel scalars (NULL with one rank). */
static fx_tensor *step_loss(run_t *r, const int64_t *idx, int64_t b, double share, float *x,
                            double *loss, int *rc)
{
    const plan_t *p = &r->P;
    int64_t stepno = r->step + 1;
    *loss = NAN;
    *rc = 0;
    if (forward(r, p->train, false, idx, 0, b)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", r->err);
        if (is_divergence(r, msg))
            return NULL;
        *rc = fxt__rfail(r, "step %" PRId64 ": %s", stepno, msg);
        return NULL;
    }
    fx_tensor *total = NULL;
    for (int i = 0; i < p->nlosses; i++) {
        const loss_t *l = &p->losses[i];
        int64_t cnt;
        fx_tensor *t = loss_of(r, l, false, p->train, idx, 0, b, FX_MEAN, &cnt);
        if (t && p->nlosses > 1) {
            if (x)
                x[1 + i] = (float)(share * fx_tensor_item(t));
            else
                r->win_loss_out[i] += fx_tensor_item(t);
        }
        if (l->weight != 1.0)
            t = fx_scale(r->ctx, t, (float)l->weight);
        total = total ? fx_add(r->ctx, total, t) : t;
    }
    *loss = total ? fx_tensor_item(total) : NAN;
    if (fx_ctx_status(r->ctx) != FX_OK && is_divergence(r, fx_ctx_error(r->ctx))) {
        *loss = NAN;
        return NULL;
    }
    if (fx_ctx_status(r->ctx) != FX_OK) {
        *rc = fxt__rfail(r, "step %" PRId64 ": %s", stepno, fx_ctx_error(r->ctx));
        return NULL;
    }
    if (!isfinite(*loss))
        return NULL;
    int xm = 1 + (p->nlosses > 1 ? p->nlosses : 0);
    for (int j = 0; j < p->nmetrics; j++) {
        const loss_t *l = &p->losses[p->metrics[j].loss];
        int64_t c = 0, n = 0;
        if (fxt__count_correct(r, j, r->out[l->out], &p->train->cols[l->col], idx, 0, b,
                               x ? &c : &r->win_correct[j], x ? &n : &r->win_total[j])) {
            *rc = -1;
            return NULL;
        }
        if (x) {
            x[xm + 2 * j] = (float)c;
            x[xm + 2 * j + 1] = (float)n;
        }
    }
    /* the sum over the ranks of share * (their mean) is the global mean */
    return share != 1.0 ? fx_scale(r->ctx, total, (float)share) : total;
}

/* Data-parallel: what the ranks summed, into the window (the loss
 * itself is x[0]). */
static void add_global_scalars(run_t *r, const float *x)
{
    const plan_t *p = &r->P;
    int xm = 1 + (p->nlosses > 1 ? p->nlosses : 0);
    for (int i = 0; p->nlosses > 1 && i < p->nlosses; i++)
        r->win_loss_out[i] += x[1 + i];
    for (int j = 0; j < p->nmetrics; j++) {
        r->win_correct[j] += (int64_t)x[xm + 2 * j];
        r->win_total[j] += (int64_t)x[xm + 2 * j + 1];
    }
    r->stop_vote = x[xm + 2 * p->nmetrics] > 0;
    if (r->v_comm >= 0) {
        double ms, ov;
        fxt__dist_comm_stats(r, &ms, &ov);
        fxt__set_value(r, r->v_comm, ms);
        fxt__set_value(r, r->v_comm + 1, ov);
    }
}

/* One optimizer step on the global batch at the current position (with
 * several ranks: this rank's share of it, the gradients summed). */
static int train_step(run_t *r)
{
    const plan_t *p = &r->P;
    int64_t gb = p->n_train - r->pos < p->batch * p->world ? p->n_train - r->pos
                                                           : p->batch * p->world;
    int64_t off = 0, b = gb;
    fxt__dist_share(r, gb, &off, &b);
    const int64_t *idx = r->perm + r->pos + off;
    int64_t stepno = r->step + 1;
    float *x = r->dist ? fxt__dist_scalars(r) : NULL;
    fx_ctx_reset(r->ctx);
    double loss = 0;
    fx_tensor *total = NULL;
    if (b > 0) { /* a rank may have no rows of a last partial batch */
        int rc;
        total = step_loss(r, idx, b, (double)b / (double)gb, x, &loss, &rc);
        if (rc)
            return -1;
        if (!total && !x)
            return diverged(r, loss);
        if (total && fx_backward(r->ctx, total) != FX_OK)
            return fxt__rfail(r, "step %" PRId64 ": backward: %s", stepno, fx_ctx_error(r->ctx));
    }
    if (x) {
        x[0] = b > 0 ? (float)((double)b / (double)gb * loss) : 0.0f;
        int xm = 1 + (p->nlosses > 1 ? p->nlosses : 0);
        x[xm + 2 * p->nmetrics] = r->stop_vote ? 1.0f : 0.0f;
        if (fxt__dist_reduce(r, stepno))
            return -1;
        loss = x[0];
        add_global_scalars(r, x);
        if (!isfinite(loss)) /* on every rank alike: the sum carries a NaN */
            return diverged(r, loss);
    }
    if (fx_optim_step(r->opt) != FX_OK)
        return fxt__rfail(r, "step %" PRId64 ": %s", stepno, fx_optim_error(r->opt));
    fx_optim_zero_grad(r->opt);
    if (r->dist && fxt__dist_sync_buffers(r, stepno))
        return -1;
    char what[48];
    snprintf(what, sizeof what, "step %" PRId64, stepno);
    if (device_ok(r, what) || memory_ok(r, what))
        return -1;
    fx_ctx_reset(r->ctx);
    r->win_loss += loss;
    r->win_n++;
    r->sc_loss += loss;
    r->sc_n++;
    r->step++;
    r->samples += gb;
    r->pos += gb;
    if (r->pos >= p->n_train) {
        r->pos = 0;
        r->epoch++;
    }
    return 0;
}

/* Validation loss and metrics over the validation rows, in eval mode. */
static int validate_all(run_t *r)
{
    const plan_t *p = &r->P;
    double *sum = calloc((size_t)p->nlosses * 2 + (size_t)p->nmetrics * 2 + 1, sizeof *sum);
    if (!sum)
        return fxt__rfail(r, "out of memory");
    double *cnt = sum + p->nlosses;
    int64_t *correct = calloc((size_t)p->nmetrics * 2 + 1, sizeof *correct), *total;
    if (!correct) {
        free(sum);
        return fxt__rfail(r, "out of memory");
    }
    total = correct + p->nmetrics;
    bool grad = fx_ctx_set_grad(r->ctx, false);
    fx_ctx_set_training(r->ctx, false);
    int rc = 0;
    for (int64_t at = 0; at < p->n_val && !rc; at += p->batch) {
        int64_t b = p->n_val - at < p->batch ? p->n_val - at : p->batch;
        fx_ctx_reset(r->ctx);
        rc = forward(r, p->valc, true, NULL, p->val_offset + at, b);
        for (int i = 0; i < p->nlosses && !rc; i++) {
            const loss_t *l = &p->losses[i];
            int64_t c = 0;
            fx_tensor *t = loss_of(r, l, true, p->valc, NULL, p->val_offset + at, b, FX_SUM, &c);
            sum[i] += t ? fx_tensor_item(t) : 0;
            cnt[i] += (double)c;
            if (fx_ctx_status(r->ctx) != FX_OK)
                rc = fxt__rfail(r, "validation: %s", fx_ctx_error(r->ctx));
        }
        for (int j = 0; j < p->nmetrics && !rc; j++) {
            const loss_t *l = &p->losses[p->metrics[j].loss];
            rc = fxt__count_correct(r, j, r->out[l->out], &p->valc->cols[l->vcol], NULL,
                                    p->val_offset + at, b, &correct[j], &total[j]);
        }
    }
    fx_ctx_reset(r->ctx);
    fx_ctx_set_grad(r->ctx, grad);
    fx_ctx_set_training(r->ctx, true);
    double vloss = 0;
    for (int i = 0; i < p->nlosses && !rc; i++) {
        double m = cnt[i] > 0 ? sum[i] / cnt[i] : 0;
        vloss += p->losses[i].weight * m;
        int k = fxt__loss_value(r, i);
        fxt__set_value(r, k < 0 ? -1 : k + 1, m);
    }
    for (int j = 0; j < p->nmetrics && !rc; j++)
        fxt__set_value(r, fxt__metric_value(r, j) + 1,
                       total[j] ? (double)correct[j] / (double)total[j] : 0);
    if (!rc)
        fxt__set_value(r, V_VAL_LOSS, vloss);
    free(sum);
    free(correct);
    return rc;
}

static int copy_params(const fx_params *dst, const fx_params *src)
{
    for (int i = 0; i < dst->count; i++)
        if (fx_tensor_copy(dst->items[i].tensor, src->items[i].tensor) != FX_OK)
            return -1;
    return 0;
}

int fxt__keep_best(run_t *r)
{
    const fx_params *ps = fxg_params(r->g);
    if (!r->best_w.count) {
        for (int i = 0; i < ps->count; i++) {
            const fx_tensor *t = ps->items[i].tensor;
            fx_tensor *c = fx_tensor_create(fx_cpu(), t->dtype, t->ndim, t->shape);
            if (!c || fx_params_add(&r->best_w, ps->items[i].name, c) != FX_OK) {
                fx_tensor_free(c);
                return fxt__rfail(r, "out of memory keeping the best weights");
            }
        }
    }
    if (copy_params(&r->best_w, ps))
        return fxt__rfail(r, "could not copy the best weights");
    r->has_best = true;
    return 0;
}

static int early_stopping(run_t *r)
{
    const plan_t *p = &r->P;
    int k = -1;
    for (int i = 0; i < r->nvals && k < 0; i++)
        if (strcmp(r->vname[i], p->es_metric) == 0)
            k = i;
    if (k < 0 || !r->vhave[k])
        return 0;
    double v = r->vval[k];
    bool better = !r->has_best ||
                  (p->es_higher ? v > r->best + p->es_min_delta : v < r->best - p->es_min_delta);
    if (better) {
        r->best = v;
        r->wait = 0;
        return fxt__keep_best(r);
    }
    if (++r->wait >= p->es_patience)
        r->stop_early = true;
    return 0;
}

/* An evaluation: the training window's mean loss and metrics, the
 * validation ones. These means are what the job records as its loss: they
 * depend on the steps alone, never on when progress was reported. */
static int evaluate(run_t *r)
{
    const plan_t *p = &r->P;
    if (r->win_n) {
        fxt__set_value(r, V_LOSS, r->win_loss / (double)r->win_n);
        for (int i = 0; p->nlosses > 1 && i < p->nlosses; i++)
            fxt__set_value(r, fxt__loss_value(r, i), r->win_loss_out[i] / (double)r->win_n);
    }
    for (int j = 0; j < p->nmetrics; j++)
        if (r->win_total[j])
            fxt__set_value(r, fxt__metric_value(r, j),
                           (double)r->win_correct[j] / (double)r->win_total[j]);
    char what[64];
    snprintf(what, sizeof what, "evaluation at step %" PRId64, r->step);
    if (p->n_val && (validate_all(r) || device_ok(r, what)))
        return -1;
    fxt__set_value(r, V_LR, fx_optim_lr(r->opt));
    for (int i = 0; i < r->nvals; i++)
        if (i != V_LR && i != V_LOSS) /* those two: see loss_scalars */
            fxt__scalar(r, i);
    fxt__report(r, r->hk->on_eval, r->vval[V_LOSS]);
    r->win_loss = 0;
    r->win_n = 0;
    for (int i = 0; i < p->nlosses; i++)
        r->win_loss_out[i] = 0;
    for (int j = 0; j < p->nmetrics; j++)
        r->win_correct[j] = r->win_total[j] = 0;
    return p->es ? early_stopping(r) : 0;
}

/* ---------------------------------------------------------------- the loop */

static void shuffle(run_t *r)
{
    for (int64_t i = r->P.n_train - 1; i > 0; i--) {
        int64_t j = (int64_t)(fx_rng_u64(r->rng) % (uint64_t)(i + 1));
        int64_t t = r->perm[i];
        r->perm[i] = r->perm[j];
        r->perm[j] = t;
    }
}

static int run_init(run_t *r, const Fluxion__V1__JobSpec *spec)
{
    const plan_t *p = &r->P;
    int nin = fxg_num_inputs(r->g), nout = fxg_num_outputs(r->g);
    r->ctx = fx_ctx_create(r->hk->device);
    r->rng = fx_rng_create(spec->seed);
    r->perm = malloc((size_t)p->n_train * sizeof *r->perm);
    r->in = calloc((size_t)nin + 1, sizeof *r->in);
    r->out = calloc((size_t)nout + 1, sizeof *r->out);
    r->win_correct = calloc((size_t)p->nmetrics * 2 + 1, sizeof *r->win_correct);
    r->win_loss_out = calloc((size_t)p->nlosses, sizeof *r->win_loss_out);
    if (!r->ctx || !r->rng || !r->perm || !r->in || !r->out || !r->win_correct || !r->win_loss_out)
        return fxt__rfail(r, "out of memory");
    r->win_total = r->win_correct + p->nmetrics;
    /* the dense products in bf16 (parameters, gradients, optimizer state and
     * the saved weights stay fp32); every rank makes its context here */
    if (p->precision != FX_PREC_F32 && fx_ctx_set_precision(r->ctx, p->precision) != FX_OK) {
        char name[32];
        return fxt__rfail(r, "precision: %s runs on CPU devices only, and the job runs on %s",
                          fx_precision_name(p->precision),
                          fx_device_str(r->hk->device, name, sizeof name));
    }
    /* dropout masks: a stream of their own, derived from the seed */
    fx_ctx_seed(r->ctx, spec->seed ^ 0x9E3779B97F4A7C15ull);
    fx_ctx_set_training(r->ctx, true);
    /* below the served models' streams on a shared GPU (batcher.c: HIGH) */
    fx_ctx_set_priority(r->ctx, FX_PRIORITY_NORMAL);
    for (int64_t i = 0; i < p->n_train; i++)
        r->perm[i] = i;
    r->opt = fx_optim_create(p->opt_kind, &p->hp, fxg_trainable_params(r->g));
    if (!r->opt)
        return fxt__rfail(r, "optimizer: %s", fx_optim_last_create_error());
    fx_params_init(&r->best_w);
    r->v_comm = -1;
    return fxt__make_value_names(r);
}

static void run_free(run_t *r)
{
    fxt__dist_free(r);
    fx_ctx_free(r->ctx);
    fx_rng_free(r->rng);
    fx_optim_free(r->opt);
    free(r->perm);
    free(r->in);
    free(r->out);
    free(r->win_correct);
    free(r->win_loss_out);
    free(r->stage);
    free(r->pred);
    fx_params_free_tensors(&r->best_w);
    for (int i = 0; i < r->nvals; i++)
        free(r->vname[i]);
    free(r->vname);
    free(r->vval);
    free(r->vhave);
    fxt__plan_free(&r->P);
}

static bool eval_due(const run_t *r, bool epoch_end)
{
    if (r->P.eval_every > 0)
        return r->step % r->P.eval_every == 0;
    return epoch_end;
}

static fxt_result loop(run_t *r)
{
    const plan_t *p = &r->P;
    int64_t every = p->ckpt_every                       ? p->ckpt_every
                    : r->hk->checkpoint_every_steps > 0 ? r->hk->checkpoint_every_steps
                                                        : 500;
    int64_t last_eval = -1;
    while (r->step < p->total_steps && !r->stop_early) {
        if (r->hk->yield)
            r->hk->yield(r->hk->yield_data ? r->hk->yield_data : r->hk->data);
        bool stop = r->hk->should_stop && r->hk->should_stop(r->hk->data, r->step);
        /* data-parallel: a vote carried by the next step's scalars, so that
         * every rank stops after the same step */
        if (r->dist && stop)
            r->stop_vote = true;
        if (!r->dist && stop) {
            if (r->ckpt_stored != r->step) /* the one just written is this step's */
                fxt__checkpoint(r, true); /* not stored: resumed from the one before */
            return FXT_STOPPED;
        }
        if (r->pos == 0 && p->n_train > 1 && r->shuffle)
            shuffle(r);
        int64_t epoch = r->epoch;
        if (train_step(r))
            return r->lost ? FXT_LOST : FXT_FAILED;
        if (r->dist && r->stop_vote && r->step < p->total_steps && !r->stop_early) {
            fxt__checkpoint(r, true);
            return FXT_STOPPED;
        }
        if (r->vhave[V_LOSS] && !isfinite(r->vval[V_LOSS]))
            break; /* diverged (train_step) */
        if (eval_due(r, r->epoch != epoch)) {
            if (evaluate(r))
                return FXT_FAILED;
            last_eval = r->step;
        }
        if (r->step % every == 0 && r->step < p->total_steps && !r->stop_early &&
            fxt__checkpoint(r, false))
            return FXT_FAILED;
        fxt__loss_scalars(r, false);
        fxt__maybe_progress(r, false);
    }
    /* a last evaluation when the end was not one (steps mid-epoch) */
    if (last_eval != r->step && !r->stop_early && (r->win_n || p->n_val) && evaluate(r))
        return FXT_FAILED;
    fxt__loss_scalars(r, true);
    fxt__maybe_progress(r, true);
    return FXT_DONE;
}

/* The result: the best weights with early stopping, else the last ones. */
static int finish(run_t *r, void **result, size_t *result_len, Fluxion__V1__JobProgress **final)
{
    if (r->has_best && copy_params(fxg_params(r->g), &r->best_w))
        return fxt__rfail(r, "could not restore the best weights");
    if (fxg_save_weights(r->g, result, result_len, r->err, r->errlen))
        return -1;
    if (!final)
        return 0;
    /* a heap copy the caller frees with free_unpacked: pack and unpack */
    Fluxion__V1__MetricValue mv[r->nvals > 0 ? r->nvals : 1];
    Fluxion__V1__MetricValue *mp[r->nvals > 0 ? r->nvals : 1];
    Fluxion__V1__JobProgress pg;
    fxt__progress_of(r, &pg, mv, mp, r->vval[V_LOSS]);
    size_t n = fluxion__v1__job_progress__get_packed_size(&pg);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        fluxion__v1__job_progress__pack(&pg, buf);
        *final = fluxion__v1__job_progress__unpack(NULL, n, buf);
    }
    free(buf);
    if (!*final) {
        free(*result);
        *result = NULL;
        *result_len = 0;
        return fxt__rfail(r, "out of memory");
    }
    return 0;
}

fxt_result fxt_run(const Fluxion__V1__JobSpec *spec, fxg_graph *g, const fxds_columns *train,
                   const fxds_columns *val, const void *resume_buf, size_t resume_len,
                   const fxt_hooks *hooks, void **result, size_t *result_len,
                   Fluxion__V1__JobProgress **final, char *err, size_t errlen)
{
    static const fxt_hooks no_hooks;
    char local[512];
    /* data-parallel: only rank 0 reports and checkpoints; the plan counts
     * steps of the world's global batch */
    const fxt_dist *dist = hooks && hooks->dist && hooks->dist->world > 1 ? hooks->dist : NULL;
    fxt_hooks quiet;
    Fluxion__V1__JobSpec wspec;
    if (dist && spec) {
        wspec = *spec;
        wspec.world_size = dist->world;
        spec = &wspec;
    }
    if (dist && dist->rank != 0) {
        quiet = *hooks;
        quiet.on_progress = quiet.on_eval = NULL;
        quiet.on_checkpoint = NULL;
        quiet.on_scalar = NULL;
        hooks = &quiet;
    }
    run_t r = {.g = g,
               .hk = hooks ? hooks : &no_hooks,
               .err = err && errlen ? err : local,
               .errlen = err && errlen ? errlen : sizeof local};
    if (final)
        *final = NULL;
    if (result)
        *result = NULL;
    if (result_len)
        *result_len = 0;
    if (!result || !result_len) {
        fxt__rfail(&r, "fxt_run: NULL argument");
        return FXT_FAILED;
    }
    if (fxt__plan_build(spec, g, train, val, &r.P, r.err, r.errlen))
        return FXT_FAILED;
    /* before the optimizer exists: its state is made where the weights are */
    if ((fxg_device(g).type != r.hk->device.type || fxg_device(g).index != r.hk->device.index) &&
        fxg_to_device(g, r.hk->device, r.err, r.errlen)) {
        fxt__plan_free(&r.P);
        return FXT_FAILED;
    }
    r.shuffle = spec->shuffle;
    r.scalar_every = r.P.total_steps / 100 > 1 ? r.P.total_steps / 100 : 1;
    fxt_result res = FXT_FAILED;
    if (!run_init(&r, spec) && (!resume_buf || !fxt__resume(&r, resume_buf, resume_len)) &&
        !fxt__dist_init(&r)) {
        fxt__set_value(&r, V_LR, fx_optim_lr(r.opt));
        r.t_start = r.t_last = fxt__now_s();
        r.step_start = r.pr_step = r.step;
        r.ckpt_stored = resume_buf ? r.step : -1;
        res = loop(&r);
    } else if (r.lost) {
        res = FXT_LOST;
    }
    if (res == FXT_DONE && finish(&r, result, result_len, final))
        res = FXT_FAILED;
    run_free(&r);
    return res;
}
