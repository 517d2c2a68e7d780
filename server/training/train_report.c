/*
 * train_report.c - what a training run reports (see train.h, "Reported
 * values"): the names of its values, the accuracy counts behind the metrics,
 * JobProgress messages for on_progress / on_eval and the final record, and
 * the "loss" and "lr" scalars for TensorBoard.
 */
#include "training/train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add_value_name(run_t *r, const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (!s)
        return fxt__rfail(r, "out of memory");
    snprintf(s, n, fmt, a, b);
    r->vname[r->nvals++] = s;
    return 0;
}

int fxt__make_value_names(run_t *r)
{
    const plan_t *p = &r->P;
    int cap = V_FIXED + 2 * p->nlosses + 2 * p->nmetrics + 2;
    r->vname = calloc((size_t)cap, sizeof *r->vname);
    r->vval = calloc((size_t)cap, sizeof *r->vval);
    r->vhave = calloc((size_t)cap, sizeof *r->vhave);
    if (!r->vname || !r->vval || !r->vhave)
        return fxt__rfail(r, "out of memory");
    static const char *const fixed[V_FIXED] = {"loss", "lr", "val_loss"};
    for (int i = 0; i < V_FIXED; i++)
        if (add_value_name(r, "%s%s", fixed[i], ""))
            return -1;
    for (int i = 0; p->nlosses > 1 && i < p->nlosses; i++) {
        const char *o = fxg_output(r->g, p->losses[i].out)->name;
        if (add_value_name(r, "loss:%s%s", o, "") || add_value_name(r, "val_loss:%s%s", o, ""))
            return -1;
    }
    for (int i = 0; i < p->nmetrics; i++)
        if (add_value_name(r, "%s%s", p->metrics[i].name, "") ||
            add_value_name(r, "val_%s%s", p->metrics[i].name, ""))
            return -1;
    if (p->world > 1) { /* data-parallel: docs/distributed.md */
        r->v_comm = r->nvals;
        if (add_value_name(r, "comm_ms%s%s", "", "") ||
            add_value_name(r, "comm_overlap%s%s", "", ""))
            return -1;
    }
    return 0;
}

static float f32_at(const void *p, int64_t i)
{
    float v;
    memcpy(&v, (const unsigned char *)p + (size_t)i * sizeof v, sizeof v);
    return v;
}

/* Index of the largest of n floats at p (any alignment). */
static int64_t argmax(const void *p, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (f32_at(p, i) > f32_at(p, best))
            best = i;
    return best;
}

static int64_t class_of(const fxds_column *c, const unsigned char *row, int64_t k)
{
    if (c->dtype == FX_I32) {
        int32_t v;
        memcpy(&v, row + (size_t)k * 4, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, row + (size_t)k * 8, 8);
    return v;
}

int fxt__count_correct(run_t *r, int j, const fx_tensor *pred, const fxds_column *tc,
                       const int64_t *idx, int64_t base, int64_t b, int64_t *correct,
                       int64_t *total)
{
    const loss_t *l = &r->P.losses[r->P.metrics[j].loss];
    size_t n = (size_t)fx_tensor_numel(pred);
    if (n > r->pred_cap) {
        float *q = realloc(r->pred, n * sizeof *q);
        if (!q)
            return fxt__rfail(r, "out of memory");
        r->pred = q;
        r->pred_cap = n;
    }
    if (fx_tensor_to_host(pred, r->pred, n * sizeof *r->pred) != FX_OK)
        return fxt__rfail(r, "metric %s: could not read the output", r->P.metrics[j].name);
    size_t rb = fxt__row_bytes(tc);
    int64_t per = (int64_t)n / b; /* output values per sample */
    int64_t c = l->kind == LK_BCE ? 1 : pred->shape[pred->ndim - 1];
    const unsigned char *data = tc->data;
    for (int64_t i = 0; i < b; i++) {
        const unsigned char *row = data + (size_t)(base + (idx ? idx[i] : i)) * rb;
        const float *pr = r->pred + i * per;
        for (int64_t k = 0; k < per / c; k++) {
            bool ok;
            if (l->kind == LK_BCE)
                ok = (pr[k] > 0) == (f32_at(row, k) >= 0.5f);
            else if (l->kind == LK_CE)
                ok = argmax(pr + k * c, c) == class_of(tc, row, k);
            else
                ok = argmax(pr + k * c, c) == argmax(row + (size_t)(k * c) * 4, c);
            *correct += ok;
            (*total)++;
        }
    }
    return 0;
}

/* Builds a JobProgress over the run's values (names point into r). */
void fxt__progress_of(run_t *r, Fluxion__V1__JobProgress *pg, Fluxion__V1__MetricValue *mv,
                      Fluxion__V1__MetricValue **mp, double loss)
{
    fluxion__v1__job_progress__init(pg);
    pg->step = r->step;
    pg->total_steps = r->P.total_steps;
    pg->epoch = r->epoch;
    pg->total_epochs = r->P.total_epochs;
    pg->train_loss = loss;
    pg->running_loss = r->win_n > 0 ? r->win_loss / (double)r->win_n : 0;
    pg->val_loss = r->vhave[V_VAL_LOSS] ? r->vval[V_VAL_LOSS] : 0;
    pg->learning_rate = r->vval[V_LR];
    double el = fxt__now_s() - r->t_start;
    int64_t done = r->step - r->step_start;
    if (el > 0 && done > 0) {
        pg->samples_per_second = (double)r->samples / el;
        pg->eta_seconds = (double)(r->P.total_steps - r->step) * el / (double)done;
    }
    size_t n = 0;
    for (int i = 0; i < r->nvals; i++) {
        if (!r->vhave[i])
            continue;
        fluxion__v1__metric_value__init(&mv[n]);
        mv[n].name = r->vname[i];
        mv[n].value = r->vval[i];
        mp[n] = &mv[n];
        n++;
    }
    pg->n_metrics = n;
    pg->metrics = mp;
}

void fxt__report(run_t *r, fxt__progress_hook hook, double loss)
{
    if (!hook)
        return;
    Fluxion__V1__MetricValue mv[r->nvals > 0 ? r->nvals : 1];
    Fluxion__V1__MetricValue *mp[r->nvals > 0 ? r->nvals : 1];
    Fluxion__V1__JobProgress pg;
    fxt__progress_of(r, &pg, mv, mp, loss);
    hook(r->hk->data, &pg);
}

void fxt__scalar(run_t *r, int i)
{
    if (r->hk->on_scalar && r->vhave[i])
        r->hk->on_scalar(r->hk->data, r->vname[i], r->step, r->vval[i]);
}

/* Progress every interval (and when forced) when steps were taken since the
 * last report. Its loss and metrics are those of the last evaluation (none
 * before the first): the timer decides when a report goes out, never what
 * it says (defect 11: the loss was averaged since the last tick, so a job
 * recorded whatever the last 0.5 s happened to hold). */
void fxt__maybe_progress(run_t *r, bool force)
{
    double t = fxt__now_s(), iv = r->hk->progress_interval_s > 0 ? r->hk->progress_interval_s : 0.5;
    if ((!force && t - r->t_last < iv) || r->step == r->pr_step)
        return;
    r->t_last = t;
    r->pr_step = r->step;
    fxt__set_value(r, V_LR, fx_optim_lr(r->opt));
    fxt__report(r, r->hk->on_progress, r->vhave[V_LOSS] ? r->vval[V_LOSS] : 0);
}

/* "loss" (averaged since the last one) and "lr" for TensorBoard, every
 * scalar_every steps whatever the speed, so curves have the same points
 * from run to run. */
void fxt__loss_scalars(run_t *r, bool force)
{
    if (!r->hk->on_scalar || !r->sc_n || (!force && r->step % r->scalar_every))
        return;
    r->hk->on_scalar(r->hk->data, "loss", r->step, r->sc_loss / (double)r->sc_n);
    r->hk->on_scalar(r->hk->data, "lr", r->step, fx_optim_lr(r->opt));
    r->sc_loss = 0;
    r->sc_n = 0;
}
