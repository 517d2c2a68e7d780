/*
 * train.c - one training job on the engine (see train.h).
 *
 * fxt_validate resolves the spec against the graph and the columns into a
 * plan (column and output indices, defaults applied); fxt_run executes that
 * plan: a mini-batch loop whose whole state (weights, buffers, optimizer
 * state, step, epoch, position in the shuffle order, both RNGs, early-stopping
 * state and best weights, the evaluation window's accumulators) goes into
 * each checkpoint, so a resumed run takes exactly the steps the uninterrupted
 * one would have.
 *
 * Checkpoint layout (one safetensors buffer): "model/<param>" (parameters and
 * buffers), "optim/<param>.<slot>", "best/<param>" (early stopping),
 * "trainer/state" (i64 words, see enum st_word), "trainer/perm" (the
 * shuffle order), "trainer/window" (accuracy counts since the last
 * evaluation); the metadata repeats step and epoch for people.
 */
#include "training/train.h"
#include "base/util.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serving/devices.h"
#include "base/status.h"

/* ------------------------------------------------------------------- plan */

enum { LK_MSE, LK_CE, LK_CE_SOFT, LK_BCE, LK_COUNT };
static const char *const loss_kinds[LK_COUNT] = {"mse", "cross_entropy", "cross_entropy_soft",
                                                 "bce_with_logits"};

typedef struct {
    int input;     /* graph input */
    int col, vcol; /* column in train / in the validation columns */
} feed_t;

typedef struct {
    int out; /* graph output */
    int kind;
    int col, vcol;
    double weight;
} loss_t;

typedef struct {
    const char *name; /* as the spec says: "accuracy" or "accuracy:OUT" */
    int loss;         /* the loss whose output and targets it compares */
} metric_t;

typedef struct {
    const fxg_graph *g;
    const fxds_columns *train, *valc; /* valc: where validation rows live */
    feed_t *feeds;
    int nfeeds;
    loss_t *losses;
    int nlosses;
    metric_t *metrics;
    int nmetrics;
    int64_t batch, n_train, n_val, val_offset;
    int64_t steps_per_epoch, total_steps, total_epochs, eval_every, ckpt_every;
    fx_optim_kind opt_kind;
    fx_optim_hparams hp;
    bool es; /* early stopping on */
    const char *es_metric;
    bool es_higher;
    double es_min_delta;
    int es_patience;
} plan_t;

static int nomem(char *err, size_t errlen) { return fxu_oom(err, errlen); }

static void plan_free(plan_t *p)
{
    free(p->feeds);
    free(p->losses);
    free(p->metrics);
    memset(p, 0, sizeof *p);
}

/* "a, b, c" of up to n names from get(i), for messages. */
static const char *name_list(char *buf, size_t n, int count, const void *obj,
                             const char *(*get)(const void *, int))
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < count && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? ", " : "", get(obj, i));
    if (!count)
        snprintf(buf, n, "none");
    return buf;
}

static const char *col_name(const void *c, int i) { return ((const fxds_columns *)c)->cols[i].name; }
static const char *in_name(const void *g, int i) { return fxg_input(g, i)->name; }
static const char *out_name(const void *g, int i) { return fxg_output(g, i)->name; }

static const char *dims_str(int ndim, const int64_t *d, char *buf, size_t n)
{
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%" PRId64, i ? "," : "", d[i]);
    if (off < n)
        snprintf(buf + off, n - off, "]");
    return buf;
}

/* Per-sample shape of a column against a graph tensor's shape after the
 * batch dimension (-1 there matches any size). */
static bool sample_fits(const fxds_column *c, const fxg_tensor_info *t, int drop_last)
{
    int want = t->ndim - 1 - drop_last;
    if (c->sample_ndim != want)
        return false;
    for (int d = 0; d < want; d++)
        if (t->shape[d + 1] != -1 && t->shape[d + 1] != c->sample_shape[d])
            return false;
    return true;
}

/* The column of name in cols, checked for dtype and sample shape against the
 * graph tensor t; what names the spec field. which: "" or " of the
 * validation dataset". */
static int find_column(const fxds_columns *cols, const char *name, const char *what,
                       const char *which, char *err, size_t errlen, int *out)
{
    char list[512];
    *out = fxds_columns_find(cols, name);
    if (*out < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: no column '%s' in the%s dataset (columns: %s)", what, name, which,
                        name_list(list, sizeof list, cols->n, cols, col_name));
    return 0;
}

static int check_feed(const plan_t *p, const Fluxion__V1__Feed *f, int i, char *err, size_t errlen,
                      feed_t *out)
{
    char what[64], list[512], s1[160], s2[160];
    snprintf(what, sizeof what, "feeds[%d].input", i);
    out->input = fxg_find_input(p->g, f->input);
    if (out->input < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: no input '%s' in the model (inputs: %s)", what, f->input,
                        name_list(list, sizeof list, fxg_num_inputs(p->g), p->g, in_name));
    const fxg_tensor_info *t = fxg_input(p->g, out->input);
    if (t->ndim < 1 || t->shape[0] != -1)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: input '%s' has shape %s; training needs a batch "
                        "dimension of any size (-1) first",
                        what, t->name, dims_str(t->ndim, t->shape, s1, sizeof s1));
    snprintf(what, sizeof what, "feeds[%d].tensor", i);
    for (int v = 0; v < 2; v++) {
        const fxds_columns *cols = v ? p->valc : p->train;
        if (v && (!cols || cols == p->train))
            break;
        const char *which = v ? " validation" : "";
        int *ci = v ? &out->vcol : &out->col;
        if (find_column(cols, f->tensor, what, which, err, errlen, ci))
            return FXS_INVALID_ARGUMENT;
        const fxds_column *c = &cols->cols[*ci];
        if (c->dtype != t->dtype)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: column '%s'%s is %s, input '%s' takes %s", what, c->name,
                            v ? " of the validation dataset" : "", fx_dtype_name(c->dtype), t->name,
                            fx_dtype_name(t->dtype));
        if (!sample_fits(c, t, 0))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: column '%s'%s has samples of shape %s, input '%s' "
                            "takes %s (the first dimension is the batch; -1: any size)",
                            what, c->name, v ? " of the validation dataset" : "",
                            dims_str(c->sample_ndim, c->sample_shape, s1, sizeof s1), t->name,
                            dims_str(t->ndim, t->shape, s2, sizeof s2));
    }
    if (p->valc == p->train)
        out->vcol = out->col;
    return 0;
}

static int check_feeds(const Fluxion__V1__JobSpec *spec, plan_t *p, char *err, size_t errlen)
{
    p->nfeeds = (int)spec->n_feeds;
    p->feeds = calloc(spec->n_feeds + 1, sizeof *p->feeds);
    if (!p->feeds)
        return nomem(err, errlen);
    for (int i = 0; i < p->nfeeds; i++) {
        int rc = check_feed(p, spec->feeds[i], i, err, errlen, &p->feeds[i]);
        if (rc)
            return rc;
        for (int j = 0; j < i; j++)
            if (p->feeds[j].input == p->feeds[i].input)
                return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                                "feeds[%d].input: '%s' is already fed by feeds[%d]", i,
                                spec->feeds[i]->input, j);
    }
    for (int k = 0; k < fxg_num_inputs(p->g); k++) {
        bool fed = false;
        for (int i = 0; i < p->nfeeds && !fed; i++)
            fed = p->feeds[i].input == k;
        if (!fed)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "feeds: model input '%s' is not fed (every input needs a "
                            "dataset tensor)",
                            fxg_input(p->g, k)->name);
    }
    return 0;
}

static int loss_kind(const char *s)
{
    for (int k = 0; k < LK_COUNT; k++)
        if (strcmp(s, loss_kinds[k]) == 0)
            return k;
    return -1;
}

/* Target column c against output t for a loss kind. */
static int check_target(const fxds_column *c, const fxg_tensor_info *t, int kind, const char *what,
                        const char *which, char *err, size_t errlen)
{
    char s1[160], s2[160];
    bool classes = kind == LK_CE;
    if (classes && c->dtype != FX_I32 && c->dtype != FX_I64)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: column '%s'%s is %s; cross_entropy takes class indices "
                        "(i32 or i64)",
                        what, c->name, which, fx_dtype_name(c->dtype));
    if (!classes && c->dtype != FX_F32)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: column '%s'%s is %s; %s takes f32 targets", what, c->name, which,
                        fx_dtype_name(c->dtype), loss_kinds[kind]);
    if (!sample_fits(c, t, classes ? 1 : 0)) {
        int nd = t->ndim - 1 - (classes ? 1 : 0);
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: column '%s'%s has samples of shape %s; %s on output '%s' "
                        "(shape %s) needs %s (-1: any size)",
                        what, c->name, which,
                        dims_str(c->sample_ndim, c->sample_shape, s1, sizeof s1), loss_kinds[kind],
                        t->name, dims_str(t->ndim, t->shape, s2, sizeof s2),
                        dims_str(nd < 0 ? 0 : nd, t->shape + 1, s1, sizeof s1));
    }
    return 0;
}

static int check_loss(const plan_t *p, const Fluxion__V1__LossSpec *l, int i, char *err,
                      size_t errlen, loss_t *out)
{
    char what[64], list[512], s1[160];
    snprintf(what, sizeof what, "losses[%d].output", i);
    out->out = fxg_find_output(p->g, l->output);
    if (out->out < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: no output '%s' in the model (outputs: %s)", what, l->output,
                        name_list(list, sizeof list, fxg_num_outputs(p->g), p->g, out_name));
    const fxg_tensor_info *t = fxg_output(p->g, out->out);
    if (t->dtype != FX_F32)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: output '%s' is %s; losses take f32 outputs", what, t->name,
                        fx_dtype_name(t->dtype));
    snprintf(what, sizeof what, "losses[%d].kind", i);
    out->kind = loss_kind(l->kind);
    if (out->kind < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: '%s' is not one of mse, cross_entropy, cross_entropy_soft, "
                        "bce_with_logits",
                        what, l->kind);
    if (t->ndim < (out->kind == LK_CE || out->kind == LK_CE_SOFT ? 2 : 1) ||
        (t->shape[0] != -1 && t->ndim >= 1))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: output '%s' has shape %s; %s needs a batch dimension "
                        "(-1) first%s",
                        what, t->name, dims_str(t->ndim, t->shape, s1, sizeof s1), l->kind,
                        out->kind == LK_CE || out->kind == LK_CE_SOFT ? " and classes last" : "");
    snprintf(what, sizeof what, "losses[%d].weight", i);
    if (!(l->weight >= 0) || !isfinite(l->weight))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: %g must be >= 0 (0 means 1)", what,
                        l->weight);
    out->weight = l->weight > 0 ? l->weight : 1.0;
    snprintf(what, sizeof what, "losses[%d].target", i);
    for (int v = 0; v < 2; v++) {
        const fxds_columns *cols = v ? p->valc : p->train;
        if (v && (!cols || cols == p->train))
            break;
        int *ci = v ? &out->vcol : &out->col;
        if (find_column(cols, l->target, what, v ? " validation" : "", err, errlen, ci))
            return FXS_INVALID_ARGUMENT;
        if (check_target(&cols->cols[*ci], t, out->kind, what,
                         v ? " of the validation dataset" : "", err, errlen))
            return FXS_INVALID_ARGUMENT;
    }
    if (p->valc == p->train)
        out->vcol = out->col;
    return 0;
}

static int check_losses(const Fluxion__V1__JobSpec *spec, plan_t *p, char *err, size_t errlen)
{
    if (!spec->n_losses)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "losses: at least one loss is needed");
    p->nlosses = (int)spec->n_losses;
    p->losses = calloc(spec->n_losses, sizeof *p->losses);
    if (!p->losses)
        return nomem(err, errlen);
    for (int i = 0; i < p->nlosses; i++) {
        int rc = check_loss(p, spec->losses[i], i, err, errlen, &p->losses[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int check_metrics(const Fluxion__V1__JobSpec *spec, plan_t *p, char *err, size_t errlen)
{
    char list[512];
    p->nmetrics = (int)spec->n_metrics;
    p->metrics = calloc(spec->n_metrics + 1, sizeof *p->metrics);
    if (!p->metrics)
        return nomem(err, errlen);
    for (int i = 0; i < p->nmetrics; i++) {
        const char *m = spec->metrics[i];
        const char *out = NULL;
        if (strncmp(m, "accuracy:", 9) == 0)
            out = m + 9;
        else if (strcmp(m, "accuracy") != 0)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "metrics[%d]: '%s' is not one of accuracy, "
                            "accuracy:OUTPUT",
                            i, m);
        if (out && fxg_find_output(p->g, out) < 0)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "metrics[%d]: no output '%s' in the model (outputs: %s)", i, out,
                            name_list(list, sizeof list, fxg_num_outputs(p->g), p->g, out_name));
        for (int j = 0; j < i; j++)
            if (strcmp(p->metrics[j].name, m) == 0)
                return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                                "metrics[%d]: '%s' is listed twice", i, m);
        /* plain "accuracy": the first classification loss's output */
        p->metrics[i] = (metric_t){.name = m, .loss = -1};
        for (int k = 0; k < p->nlosses && p->metrics[i].loss < 0; k++) {
            const loss_t *l = &p->losses[k];
            if (l->kind != LK_MSE && (!out || l->out == fxg_find_output(p->g, out)))
                p->metrics[i].loss = k;
        }
        if (p->metrics[i].loss < 0)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "metrics[%d]: '%s' needs %s with a cross_entropy, "
                            "cross_entropy_soft or bce_with_logits loss (for its targets)",
                            i, m, out ? "that output" : "an output");
    }
    return 0;
}

/* Schedule and clipping fields (their ranges; the engine checks the rest). */
static int check_schedule_clip(const Fluxion__V1__ScheduleSpec *s, const Fluxion__V1__ClipSpec *c,
                               fx_schedule *out, char *err, size_t errlen)
{
    const char *sk = s->kind && *s->kind ? s->kind : "constant";
    static const char *const sched[] = {"constant", "step", "cosine"};
    int si = -1;
    for (int k = 0; k < 3; k++)
        if (strcmp(sk, sched[k]) == 0)
            si = k;
    if (si < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "schedule.kind: '%s' is not one of constant, step, cosine", sk);
    if (si == FX_SCHED_STEP && s->step_size <= 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "schedule.step_size: %" PRId64 " must be > 0 for kind 'step'",
                        s->step_size);
    if (s->warmup_steps < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "schedule.warmup_steps: %" PRId64 " must be >= 0", s->warmup_steps);
    if (!(s->gamma >= 0) || !(s->min_lr >= 0))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "schedule.%s: %g must be >= 0",
                        s->gamma >= 0 ? "min_lr" : "gamma", s->gamma >= 0 ? s->min_lr : s->gamma);
    if (!(c->max_norm >= 0) || !(c->max_value >= 0) || isinf(c->max_norm) || isinf(c->max_value))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "clip.%s: %g must be >= 0 and finite (0: off)",
                        c->max_norm >= 0 && !isinf(c->max_norm) ? "max_value" : "max_norm",
                        c->max_norm >= 0 && !isinf(c->max_norm) ? c->max_value : c->max_norm);
    *out = (fx_schedule){.kind = (fx_sched_kind)si,
                         .warmup_steps = s->warmup_steps,
                         .step_size = s->step_size,
                         .gamma = s->gamma,
                         .min_lr = s->min_lr};
    return 0;
}

static int check_optimizer(const Fluxion__V1__JobSpec *spec, plan_t *p, char *err, size_t errlen)
{
    static const Fluxion__V1__OptimizerSpec none = FLUXION__V1__OPTIMIZER_SPEC__INIT;
    static const Fluxion__V1__ScheduleSpec no_sched = FLUXION__V1__SCHEDULE_SPEC__INIT;
    static const Fluxion__V1__ClipSpec no_clip = FLUXION__V1__CLIP_SPEC__INIT;
    const Fluxion__V1__OptimizerSpec *o = spec->optimizer ? spec->optimizer : &none;
    const Fluxion__V1__ScheduleSpec *s = spec->schedule ? spec->schedule : &no_sched;
    const Fluxion__V1__ClipSpec *c = spec->clip ? spec->clip : &no_clip;
    const char *kind = o->kind && *o->kind ? o->kind : "adam";
    p->opt_kind = FX_OPT_COUNT;
    for (int k = 0; k < FX_OPT_COUNT; k++)
        if (strcmp(kind, fx_optim_kind_name((fx_optim_kind)k)) == 0)
            p->opt_kind = (fx_optim_kind)k;
    if (p->opt_kind == FX_OPT_COUNT)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "optimizer.kind: '%s' is not one of sgd, momentum, nesterov, "
                        "rmsprop, adagrad, adadelta, adam, adamw",
                        kind);
    const double vals[] = {o->lr, o->momentum, o->beta1, o->beta2, o->eps, o->weight_decay, o->rho};
    static const char *const names[] = {"lr",  "momentum",     "beta1", "beta2",
                                        "eps", "weight_decay", "rho"};
    for (int k = 0; k < 7; k++)
        if (!isfinite(vals[k]))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "optimizer.%s: %g is not a number",
                            names[k], vals[k]);
    static const double default_lr[FX_OPT_COUNT] = {0.01, 0.01, 0.01, 0.01, 0.01, 1.0, 1e-3, 1e-3};
    fx_optim_hparams *h = &p->hp;
    *h = (fx_optim_hparams){.lr = o->lr ? o->lr : default_lr[p->opt_kind],
                            .momentum = o->momentum,
                            .beta1 = o->beta1,
                            .beta2 = o->beta2,
                            .eps = o->eps,
                            .weight_decay = o->weight_decay,
                            .clip_norm = c->max_norm,
                            .clip_value = c->max_value};
    if (p->opt_kind == FX_OPT_RMSPROP)
        h->alpha = o->rho; /* the spec's one decay field */
    else
        h->rho = o->rho;
    if (check_schedule_clip(s, c, &h->schedule, err, errlen))
        return FXS_INVALID_ARGUMENT;
    h->schedule.total_steps = p->total_steps;
    /* the engine's own checks (ranges of every hyper-parameter), on no params */
    fx_params empty;
    fx_params_init(&empty);
    fx_optim *probe = fx_optim_create(p->opt_kind, h, &empty);
    if (!probe)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "optimizer: %s",
                        fx_optim_last_create_error());
    fx_optim_free(probe);
    return 0;
}

static int check_sizes(const Fluxion__V1__JobSpec *spec, plan_t *p, char *err, size_t errlen)
{
    if (spec->batch_size < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "batch_size: %" PRId64 " must be > 0 (0 means 32)", spec->batch_size);
    p->batch = spec->batch_size ? spec->batch_size : 32;
    if (spec->epochs < 0 || spec->steps < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: %" PRId64 " must be >= 0",
                        spec->epochs < 0 ? "epochs" : "steps",
                        spec->epochs < 0 ? spec->epochs : spec->steps);
    if (!spec->epochs && !spec->steps)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "epochs, steps: neither is set (one must be > 0)");
    if (spec->eval_every_steps < 0 || spec->checkpoint_every_steps < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: %" PRId64 " must be >= 0",
                        spec->eval_every_steps < 0 ? "eval_every_steps" : "checkpoint_every_steps",
                        spec->eval_every_steps < 0 ? spec->eval_every_steps
                                                   : spec->checkpoint_every_steps);
    double split = spec->validation_split;
    if (!(split >= 0 && split < 1))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "validation_split: %g is not in [0, 1)",
                        split);
    int64_t n = p->train->num_samples;
    if (n <= 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "dataset: it has no samples");
    if (spec->validation_dataset && *spec->validation_dataset && !p->valc)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "validation_dataset: '%s' was not given to the trainer",
                        spec->validation_dataset);
    if (split > 0 && p->valc)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "validation_split: %g and a validation dataset%s%s%s exclude "
                        "each other",
                        split, spec->validation_dataset && *spec->validation_dataset ? " ('" : "",
                        spec->validation_dataset ? spec->validation_dataset : "",
                        spec->validation_dataset && *spec->validation_dataset ? "')" : "");
    p->n_val = split > 0 ? (int64_t)floor(split * (double)n) : 0;
    if (split > 0 && p->n_val == 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "validation_split: %g of %" PRId64 " samples holds out none", split, n);
    p->n_train = n - p->n_val;
    if (p->n_train <= 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "validation_split: %g of %" PRId64 " samples leaves none to "
                        "train on",
                        split, n);
    if (p->valc) {
        if (p->valc->num_samples <= 0)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "validation_dataset: it has no samples");
        p->n_val = p->valc->num_samples;
    } else if (p->n_val) {
        p->valc = p->train;
        p->val_offset = p->n_train;
    }
    p->steps_per_epoch = (p->n_train + p->batch - 1) / p->batch;
    if (spec->steps <= 0 && spec->epochs > INT64_MAX / p->steps_per_epoch)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "epochs: %" PRId64 " is too many",
                        spec->epochs);
    p->total_steps = spec->steps > 0 ? spec->steps : spec->epochs * p->steps_per_epoch;
    p->total_epochs = spec->steps > 0 ? (spec->steps + p->steps_per_epoch - 1) / p->steps_per_epoch
                                      : spec->epochs;
    p->eval_every = spec->eval_every_steps;
    p->ckpt_every = spec->checkpoint_every_steps;
    return 0;
}

/* Whether name is a value the run reports (and so early stopping can use). */
static bool reported(const plan_t *p, const char *name)
{
    const char *base = strncmp(name, "val_", 4) == 0 ? name + 4 : name;
    if (strcmp(base, "loss") == 0)
        return true;
    if (strncmp(base, "loss:", 5) == 0) {
        int o = fxg_find_output(p->g, base + 5);
        for (int i = 0; i < p->nlosses && p->nlosses > 1; i++)
            if (p->losses[i].out == o)
                return true;
        return false;
    }
    for (int i = 0; i < p->nmetrics; i++)
        if (strcmp(base, p->metrics[i].name) == 0)
            return true;
    return false;
}

static int check_early_stopping(const Fluxion__V1__JobSpec *spec, plan_t *p, char *err,
                                size_t errlen)
{
    const Fluxion__V1__EarlyStopping *e = spec->early_stopping;
    if (!e)
        return 0;
    if (e->patience < 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "early_stopping.patience: %d must be >= 0 (0: off)", e->patience);
    if (!(e->min_delta >= 0))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "early_stopping.min_delta: %g must be >= 0", e->min_delta);
    if (!e->patience)
        return 0;
    const char *m = e->metric && *e->metric ? e->metric : "val_loss";
    if (!reported(p, m))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "early_stopping.metric: '%s' is not reported (losses: loss, "
                        "val_loss%s; metrics listed in metrics, with val_ for validation)",
                        m, p->nlosses > 1 ? ", loss:OUTPUT, val_loss:OUTPUT" : "");
    if (strncmp(m, "val_", 4) == 0 && !p->n_val)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "early_stopping.metric: '%s' needs validation data "
                        "(validation_split or validation_dataset)",
                        m);
    p->es = true;
    p->es_metric = m;
    p->es_higher = strstr(m, "accuracy") != NULL;
    p->es_min_delta = e->min_delta;
    p->es_patience = e->patience;
    return 0;
}

static int plan_build(const Fluxion__V1__JobSpec *spec, const fxg_graph *g,
                      const fxds_columns *train, const fxds_columns *val, plan_t *p, char *err,
                      size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (!spec || !g || !train)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "fxt: NULL argument");
    p->g = g;
    p->train = train;
    p->valc = val;
    int rc = check_sizes(spec, p, err, errlen);
    if (!rc)
        rc = check_feeds(spec, p, err, errlen);
    if (!rc)
        rc = check_losses(spec, p, err, errlen);
    if (!rc)
        rc = check_metrics(spec, p, err, errlen);
    if (!rc)
        rc = check_optimizer(spec, p, err, errlen);
    if (!rc)
        rc = check_early_stopping(spec, p, err, errlen);
    if (rc)
        plan_free(p);
    return rc;
}

int fxt_validate(const Fluxion__V1__JobSpec *spec, const fxg_graph *g, const fxds_columns *train,
                 const fxds_columns *val, char *err, size_t errlen)
{
    plan_t p;
    int rc = plan_build(spec, g, train, val, &p, err, errlen);
    plan_free(&p);
    return rc;
}

/* -------------------------------------------------------------------- run */

/* Reported values: "loss", "lr", "val_loss", per loss (when several)
 * "loss:OUT" and "val_loss:OUT", per metric NAME and "val_NAME". */
enum { V_LOSS, V_LR, V_VAL_LOSS, V_FIXED };

typedef struct {
    plan_t P;
    fxg_graph *g;
    const fxt_hooks *hk;
    fx_ctx *ctx;
    fx_optim *opt;
    fx_rng *rng; /* shuffling */
    int64_t *perm;
    int64_t step, epoch, pos;
    bool shuffle;
    unsigned char *stage; /* one batch of one column, host side */
    size_t stage_cap;
    float *pred; /* one output, host side, for accuracy */
    size_t pred_cap;
    fx_tensor **in, **out;
    /* since the last evaluation (in checkpoints: they feed early stopping) */
    double win_loss;
    int64_t win_n;
    int64_t *win_correct, *win_total; /* per metric */
    /* since the last progress report / "loss" scalar (not checkpointed) */
    double pr_loss, sc_loss;
    int64_t pr_n, sc_n, scalar_every;
    double t_start, t_last;
    int64_t step_start, samples; /* this process's */
    /* early stopping */
    bool has_best, stop_early;
    double best;
    int64_t wait;
    fx_params best_w; /* persistent copies of every parameter and buffer (host) */
    uint64_t persist_bytes; /* parameters, gradients, optimizer state; 0: not yet */
    /* values for reports */
    int nvals;
    char **vname;
    double *vval;
    bool *vhave;
    char *err;
    size_t errlen;
} run_t;

static double now_s(void) { return (double)fxu_mono_ns() / 1e9; }

static int rfail(run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rfail(run_t *r, const char *fmt, ...)
{
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static size_t row_bytes(const fxds_column *c)
{
    size_t n = fx_dtype_size(c->dtype);
    for (int d = 0; d < c->sample_ndim; d++)
        n *= (size_t)c->sample_shape[d];
    return n;
}

static int add_value_name(run_t *r, const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (!s)
        return rfail(r, "out of memory");
    snprintf(s, n, fmt, a, b);
    r->vname[r->nvals++] = s;
    return 0;
}

static int make_value_names(run_t *r)
{
    const plan_t *p = &r->P;
    int cap = V_FIXED + 2 * p->nlosses + 2 * p->nmetrics;
    r->vname = calloc((size_t)cap, sizeof *r->vname);
    r->vval = calloc((size_t)cap, sizeof *r->vval);
    r->vhave = calloc((size_t)cap, sizeof *r->vhave);
    if (!r->vname || !r->vval || !r->vhave)
        return rfail(r, "out of memory");
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
    return 0;
}

/* Index of the value "loss:OUT" of loss i (val: +1), -1 with one loss. */
static int loss_value(const run_t *r, int i) { return r->P.nlosses > 1 ? V_FIXED + 2 * i : -1; }
static int metric_value(const run_t *r, int j)
{
    return V_FIXED + (r->P.nlosses > 1 ? 2 * r->P.nlosses : 0) + 2 * j;
}

static void set_value(run_t *r, int i, double v)
{
    if (i >= 0) {
        r->vval[i] = v;
        r->vhave[i] = true;
    }
}

/* A batch of rows idx[0..b) of column c (from row offset base) as an arena
 * tensor. */
static fx_tensor *gather(run_t *r, const fxds_column *c, const int64_t *idx, int64_t base, int64_t b)
{
    size_t rb = row_bytes(c);
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

/* Adds metric j's correct and total counts for a batch (rows idx of the
 * target column from base; pred is the output). */
static int count_correct(run_t *r, int j, const fx_tensor *pred, const fxds_column *tc,
                         const int64_t *idx, int64_t base, int64_t b, int64_t *correct,
                         int64_t *total)
{
    const loss_t *l = &r->P.losses[r->P.metrics[j].loss];
    size_t n = (size_t)fx_tensor_numel(pred);
    if (n > r->pred_cap) {
        float *q = realloc(r->pred, n * sizeof *q);
        if (!q)
            return rfail(r, "out of memory");
        r->pred = q;
        r->pred_cap = n;
    }
    if (fx_tensor_to_host(pred, r->pred, n * sizeof *r->pred) != FX_OK)
        return rfail(r, "metric %s: could not read the output", r->P.metrics[j].name);
    size_t rb = row_bytes(tc);
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
        return rfail(r, "%s", fx_ctx_error(r->ctx));
    if (fxg_forward(r->g, r->ctx, r->in, r->out, msg, sizeof msg))
        return rfail(r, "%s", msg);
    return 0;
}

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

/* Surfaces an error the device recorded while running the queued work
 * (what: "step 12", "evaluation at step 12"). */
static int device_ok(run_t *r, const char *what)
{
    char msg[384], name[32];
    if (fx_device_sync(r->hk->device, msg, sizeof msg) != FX_OK)
        return rfail(r, "%s: device %s: %s", what, fx_device_str(r->hk->device, name, sizeof name),
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
            return rfail(r, "out of memory");
        r->persist_bytes = fxsv_params_bytes(fxg_params(r->g)) + fxsv_params_bytes(&ostate);
        fx_params_clear(&ostate);
    }
    char msg[384];
    uint64_t used = r->persist_bytes + fx_ctx_arena_capacity(r->ctx);
    if (fxsv_check_memory_limit("the job's weights, optimizer state and batches",
                               r->hk->device, used, r->hk->memory_limit_bytes, msg, sizeof msg))
        return rfail(r, "%s: %s", what, msg);
    return 0;
}

/* One optimizer step on the batch at the current position. */
static int train_step(run_t *r)
{
    const plan_t *p = &r->P;
    int64_t b = p->n_train - r->pos < p->batch ? p->n_train - r->pos : p->batch;
    const int64_t *idx = r->perm + r->pos;
    int64_t stepno = r->step + 1;
    fx_ctx_reset(r->ctx);
    if (forward(r, p->train, false, idx, 0, b)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", r->err);
        return rfail(r, "step %" PRId64 ": %s", stepno, msg);
    }
    fx_tensor *total = NULL;
    for (int i = 0; i < p->nlosses; i++) {
        const loss_t *l = &p->losses[i];
        int64_t cnt;
        fx_tensor *t = loss_term(r->ctx, l->kind, r->out[l->out],
                                 gather(r, &p->train->cols[l->col], idx, 0, b), FX_MEAN, &cnt);
        if (t && p->nlosses > 1)
            set_value(r, loss_value(r, i), fx_tensor_item(t));
        if (l->weight != 1.0)
            t = fx_scale(r->ctx, t, (float)l->weight);
        total = total ? fx_add(r->ctx, total, t) : t;
    }
    double loss = total ? fx_tensor_item(total) : NAN;
    if (fx_ctx_status(r->ctx) != FX_OK)
        return rfail(r, "step %" PRId64 ": %s", stepno, fx_ctx_error(r->ctx));
    if (!isfinite(loss))
        return rfail(r,
                     "step %" PRId64 ": the loss is not finite (%g); try a lower learning "
                     "rate or gradient clipping",
                     stepno, loss);
    for (int j = 0; j < p->nmetrics; j++) {
        const loss_t *l = &p->losses[p->metrics[j].loss];
        if (count_correct(r, j, r->out[l->out], &p->train->cols[l->col], idx, 0, b,
                          &r->win_correct[j], &r->win_total[j]))
            return -1;
    }
    if (fx_backward(r->ctx, total) != FX_OK)
        return rfail(r, "step %" PRId64 ": backward: %s", stepno, fx_ctx_error(r->ctx));
    if (fx_optim_step(r->opt) != FX_OK)
        return rfail(r, "step %" PRId64 ": %s", stepno, fx_optim_error(r->opt));
    fx_optim_zero_grad(r->opt);
    char what[48];
    snprintf(what, sizeof what, "step %" PRId64, stepno);
    if (device_ok(r, what) || memory_ok(r, what))
        return -1;
    fx_ctx_reset(r->ctx);
    r->win_loss += loss;
    r->win_n++;
    r->pr_loss += loss;
    r->pr_n++;
    r->sc_loss += loss;
    r->sc_n++;
    r->step++;
    r->samples += b;
    r->pos += b;
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
        return rfail(r, "out of memory");
    double *cnt = sum + p->nlosses;
    int64_t *correct = calloc((size_t)p->nmetrics * 2 + 1, sizeof *correct), *total;
    if (!correct) {
        free(sum);
        return rfail(r, "out of memory");
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
            fx_tensor *t = loss_term(
                r->ctx, l->kind, r->out[l->out],
                gather(r, &p->valc->cols[l->vcol], NULL, p->val_offset + at, b), FX_SUM, &c);
            sum[i] += t ? fx_tensor_item(t) : 0;
            cnt[i] += (double)c;
            if (fx_ctx_status(r->ctx) != FX_OK)
                rc = rfail(r, "validation: %s", fx_ctx_error(r->ctx));
        }
        for (int j = 0; j < p->nmetrics && !rc; j++) {
            const loss_t *l = &p->losses[p->metrics[j].loss];
            rc = count_correct(r, j, r->out[l->out], &p->valc->cols[l->vcol], NULL,
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
        int k = loss_value(r, i);
        set_value(r, k < 0 ? -1 : k + 1, m);
    }
    for (int j = 0; j < p->nmetrics && !rc; j++)
        set_value(r, metric_value(r, j) + 1, total[j] ? (double)correct[j] / (double)total[j] : 0);
    if (!rc)
        set_value(r, V_VAL_LOSS, vloss);
    free(sum);
    free(correct);
    return rc;
}

/* Builds a JobProgress over the run's values (names point into r). */
static void progress_of(run_t *r, Fluxion__V1__JobProgress *pg, Fluxion__V1__MetricValue *mv,
                        Fluxion__V1__MetricValue **mp, double loss)
{
    fluxion__v1__job_progress__init(pg);
    pg->step = r->step;
    pg->total_steps = r->P.total_steps;
    pg->epoch = r->epoch;
    pg->total_epochs = r->P.total_epochs;
    pg->train_loss = loss;
    pg->val_loss = r->vhave[V_VAL_LOSS] ? r->vval[V_VAL_LOSS] : 0;
    pg->learning_rate = r->vval[V_LR];
    double el = now_s() - r->t_start;
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

typedef void (*progress_hook)(void *, const Fluxion__V1__JobProgress *);

static void report(run_t *r, progress_hook hook, double loss)
{
    if (!hook)
        return;
    Fluxion__V1__MetricValue mv[r->nvals > 0 ? r->nvals : 1];
    Fluxion__V1__MetricValue *mp[r->nvals > 0 ? r->nvals : 1];
    Fluxion__V1__JobProgress pg;
    progress_of(r, &pg, mv, mp, loss);
    hook(r->hk->data, &pg);
}

static void scalar(run_t *r, int i)
{
    if (r->hk->on_scalar && r->vhave[i])
        r->hk->on_scalar(r->hk->data, r->vname[i], r->step, r->vval[i]);
}

/* Progress every interval (and when forced): train loss averaged since the
 * last report. */
static void maybe_progress(run_t *r, bool force)
{
    double t = now_s(), iv = r->hk->progress_interval_s > 0 ? r->hk->progress_interval_s : 0.5;
    if ((!force && t - r->t_last < iv) || !r->pr_n)
        return;
    r->t_last = t;
    double loss = r->pr_loss / (double)r->pr_n;
    r->pr_loss = 0;
    r->pr_n = 0;
    set_value(r, V_LOSS, loss);
    set_value(r, V_LR, fx_optim_lr(r->opt));
    report(r, r->hk->on_progress, loss);
}

/* "loss" (averaged since the last one) and "lr" for TensorBoard, every
 * scalar_every steps whatever the speed, so curves have the same points
 * from run to run. */
static void loss_scalars(run_t *r, bool force)
{
    if (!r->hk->on_scalar || !r->sc_n || (!force && r->step % r->scalar_every))
        return;
    r->hk->on_scalar(r->hk->data, "loss", r->step, r->sc_loss / (double)r->sc_n);
    r->hk->on_scalar(r->hk->data, "lr", r->step, fx_optim_lr(r->opt));
    r->sc_loss = 0;
    r->sc_n = 0;
}

static int copy_params(const fx_params *dst, const fx_params *src)
{
    for (int i = 0; i < dst->count; i++)
        if (fx_tensor_copy(dst->items[i].tensor, src->items[i].tensor) != FX_OK)
            return -1;
    return 0;
}

static int keep_best(run_t *r)
{
    const fx_params *ps = fxg_params(r->g);
    if (!r->best_w.count) {
        for (int i = 0; i < ps->count; i++) {
            const fx_tensor *t = ps->items[i].tensor;
            fx_tensor *c = fx_tensor_create(fx_cpu(), t->dtype, t->ndim, t->shape);
            if (!c || fx_params_add(&r->best_w, ps->items[i].name, c) != FX_OK) {
                fx_tensor_free(c);
                return rfail(r, "out of memory keeping the best weights");
            }
        }
    }
    if (copy_params(&r->best_w, ps))
        return rfail(r, "could not copy the best weights");
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
        return keep_best(r);
    }
    if (++r->wait >= p->es_patience)
        r->stop_early = true;
    return 0;
}

/* An evaluation: training-window loss and metrics, validation ones. */
static int evaluate(run_t *r)
{
    const plan_t *p = &r->P;
    if (r->win_n)
        set_value(r, V_LOSS, r->win_loss / (double)r->win_n);
    for (int j = 0; j < p->nmetrics; j++)
        if (r->win_total[j])
            set_value(r, metric_value(r, j), (double)r->win_correct[j] / (double)r->win_total[j]);
    char what[64];
    snprintf(what, sizeof what, "evaluation at step %" PRId64, r->step);
    if (p->n_val && (validate_all(r) || device_ok(r, what)))
        return -1;
    set_value(r, V_LR, fx_optim_lr(r->opt));
    for (int i = 0; i < r->nvals; i++)
        if (i != V_LR && i != V_LOSS) /* those two: see loss_scalars */
            scalar(r, i);
    report(r, r->hk->on_eval, r->vval[V_LOSS]);
    r->win_loss = 0;
    r->win_n = 0;
    for (int j = 0; j < p->nmetrics; j++)
        r->win_correct[j] = r->win_total[j] = 0;
    return p->es ? early_stopping(r) : 0;
}

/* ------------------------------------------------------------ checkpoints */

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
    static const char *const names[3] = {"state", "perm", "window"};
    for (int i = 0; i < 3; i++)
        if (!ts[i] || fx_params_add(extra, names[i], ts[i]) != FX_OK)
            return -1;
    if (fx_optim_state(r->opt, ostate) != FX_OK)
        return -1;
    return add_prefixed(all, "model/", fxg_params(r->g)) || add_prefixed(all, "optim/", ostate) ||
           (r->has_best && add_prefixed(all, "best/", &r->best_w)) ||
           add_prefixed(all, "trainer/", extra);
}

static int checkpoint(run_t *r)
{
    if (!r->hk->on_checkpoint)
        return 0;
    fx_params all, ostate, extra;
    fx_params_init(&all);
    fx_params_init(&ostate);
    fx_params_init(&extra);
    fx_tensor *ts[3] = {NULL, NULL, NULL};
    int rc = checkpoint_tensors(r, &all, &ostate, &extra, ts);
    char sstep[32], sepoch[32], msg[512] = "";
    snprintf(sstep, sizeof sstep, "%" PRId64, r->step);
    snprintf(sepoch, sizeof sepoch, "%" PRId64, r->epoch);
    const char *keys[] = {"format", "step", "epoch"};
    const char *vals[] = {"fluxion-train-checkpoint-1", sstep, sepoch};
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc)
        rfail(r, "checkpoint at step %" PRId64 ": out of memory", r->step);
    else if (fx_safetensors_encode(&all, 3, keys, vals, &buf, &len, msg, sizeof msg) != FX_OK)
        rc = rfail(r, "checkpoint at step %" PRId64 ": %s", r->step, msg);
    else if (r->hk->on_checkpoint(r->hk->data, buf, len, r->step, msg, sizeof msg))
        rc = rfail(r, "checkpoint at step %" PRId64 ": %s", r->step, msg[0] ? msg : "not stored");
    free(buf);
    for (int i = 0; i < 3; i++)
        fx_tensor_free(ts[i]);
    fx_params_clear(&all);
    fx_params_clear(&ostate);
    fx_params_clear(&extra);
    return rc;
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
                return rfail(r, "resume: the checkpoint has no '%s'", name);
            if (s->dtype != d->dtype || !fx_tensor_same_shape(s, d))
                return rfail(r, "resume: '%s' is %s %s in the checkpoint, %s %s here", name,
                             fx_dtype_name(s->dtype), fx_shape_str(s, s1, sizeof s1),
                             fx_dtype_name(d->dtype), fx_shape_str(d, s2, sizeof s2));
            if (pass && fx_tensor_copy(dst->items[i].tensor, s) != FX_OK)
                return rfail(r, "resume: could not copy '%s'", name);
        }
    }
    return 0;
}

static int read_i64(run_t *r, const fx_params *src, const char *name, int64_t n, int64_t *out)
{
    const fx_tensor *t = fx_params_find(src, name);
    if (!t || t->dtype != FX_I64 || t->ndim != 1 || t->shape[0] != n)
        return rfail(r,
                     "resume: '%s' is missing or not i64[%" PRId64 "] (not a checkpoint of "
                     "this job?)",
                     name, n);
    return fx_tensor_to_host(t, out, (size_t)n * sizeof *out) == FX_OK
               ? 0
               : rfail(r, "resume: could not read '%s'", name);
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
        return rfail(r,
                     "resume: the checkpoint does not fit this job (step %" PRId64 " of %" PRId64
                     ", %" PRId64 " training samples; the job has %" PRId64 " steps, %" PRId64 ")",
                     st[ST_STEP], st[ST_TOTAL], st[ST_NTRAIN], p->total_steps, p->n_train);
    return 0;
}

static int resume(run_t *r, const void *buf, size_t len)
{
    const plan_t *p = &r->P;
    fx_params in, ostate;
    fx_params_init(&in);
    fx_params_init(&ostate);
    char msg[512];
    if (fx_safetensors_decode(buf, len, &in, msg, sizeof msg) != FX_OK)
        return rfail(r, "resume: %s", msg);
    int64_t st[ST_COUNT];
    int rc = read_state(r, &in, st) || read_i64(r, &in, "trainer/perm", p->n_train, r->perm) ||
             read_i64(r, &in, "trainer/window", 2 * p->nmetrics + 1, r->win_correct);
    for (int64_t i = 0; !rc && i < p->n_train; i++)
        if (r->perm[i] < 0 || r->perm[i] >= p->n_train)
            rc = rfail(r, "resume: trainer/perm holds %" PRId64 ", not a sample index", r->perm[i]);
    if (!rc && fx_optim_state(r->opt, &ostate) != FX_OK)
        rc = rfail(r, "out of memory");
    rc = rc || restore(r, fxg_params(r->g), "model/", &in) || restore(r, &ostate, "optim/", &in) ||
         (st[ST_HAS_BEST] && (keep_best(r) || restore(r, &r->best_w, "best/", &in)));
    if (!rc)
        unpack_state(r, st);
    fx_params_clear(&ostate);
    fx_params_free_tensors(&in);
    return rc;
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
    if (!r->ctx || !r->rng || !r->perm || !r->in || !r->out || !r->win_correct)
        return rfail(r, "out of memory");
    r->win_total = r->win_correct + p->nmetrics;
    /* dropout masks: a stream of their own, derived from the seed */
    fx_ctx_seed(r->ctx, spec->seed ^ 0x9E3779B97F4A7C15ull);
    fx_ctx_set_training(r->ctx, true);
    for (int64_t i = 0; i < p->n_train; i++)
        r->perm[i] = i;
    r->opt = fx_optim_create(p->opt_kind, &p->hp, fxg_trainable_params(r->g));
    if (!r->opt)
        return rfail(r, "optimizer: %s", fx_optim_last_create_error());
    fx_params_init(&r->best_w);
    return make_value_names(r);
}

static void run_free(run_t *r)
{
    fx_ctx_free(r->ctx);
    fx_rng_free(r->rng);
    fx_optim_free(r->opt);
    free(r->perm);
    free(r->in);
    free(r->out);
    free(r->win_correct);
    free(r->stage);
    free(r->pred);
    fx_params_free_tensors(&r->best_w);
    for (int i = 0; i < r->nvals; i++)
        free(r->vname[i]);
    free(r->vname);
    free(r->vval);
    free(r->vhave);
    plan_free(&r->P);
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
        if (r->hk->should_stop && r->hk->should_stop(r->hk->data))
            return checkpoint(r) ? FXT_FAILED : FXT_STOPPED;
        if (r->pos == 0 && p->n_train > 1 && r->shuffle)
            shuffle(r);
        int64_t epoch = r->epoch;
        if (train_step(r))
            return FXT_FAILED;
        if (eval_due(r, r->epoch != epoch)) {
            if (evaluate(r))
                return FXT_FAILED;
            last_eval = r->step;
        }
        if (r->step % every == 0 && r->step < p->total_steps && !r->stop_early && checkpoint(r))
            return FXT_FAILED;
        loss_scalars(r, false);
        maybe_progress(r, false);
    }
    /* a last evaluation when the end was not one (steps mid-epoch) */
    if (last_eval != r->step && !r->stop_early && (r->win_n || p->n_val) && evaluate(r))
        return FXT_FAILED;
    loss_scalars(r, true);
    maybe_progress(r, true);
    return FXT_DONE;
}

/* The result: the best weights with early stopping, else the last ones. */
static int finish(run_t *r, void **result, size_t *result_len, Fluxion__V1__JobProgress **final)
{
    if (r->has_best && copy_params(fxg_params(r->g), &r->best_w))
        return rfail(r, "could not restore the best weights");
    if (fxg_save_weights(r->g, result, result_len, r->err, r->errlen))
        return -1;
    if (!final)
        return 0;
    /* a heap copy the caller frees with free_unpacked: pack and unpack */
    Fluxion__V1__MetricValue mv[r->nvals > 0 ? r->nvals : 1];
    Fluxion__V1__MetricValue *mp[r->nvals > 0 ? r->nvals : 1];
    Fluxion__V1__JobProgress pg;
    progress_of(r, &pg, mv, mp, r->vval[V_LOSS]);
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
        return rfail(r, "out of memory");
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
        rfail(&r, "fxt_run: NULL argument");
        return FXT_FAILED;
    }
    if (plan_build(spec, g, train, val, &r.P, r.err, r.errlen))
        return FXT_FAILED;
    /* before the optimizer exists: its state is made where the weights are */
    if ((fxg_device(g).type != r.hk->device.type || fxg_device(g).index != r.hk->device.index) &&
        fxg_to_device(g, r.hk->device, r.err, r.errlen)) {
        plan_free(&r.P);
        return FXT_FAILED;
    }
    r.shuffle = spec->shuffle;
    r.scalar_every = r.P.total_steps / 100 > 1 ? r.P.total_steps / 100 : 1;
    fxt_result res = FXT_FAILED;
    if (!run_init(&r, spec) && (!resume_buf || !resume(&r, resume_buf, resume_len))) {
        set_value(&r, V_LR, fx_optim_lr(r.opt));
        r.t_start = r.t_last = now_s();
        r.step_start = r.step;
        res = loop(&r);
    }
    if (res == FXT_DONE && finish(&r, result, result_len, final))
        res = FXT_FAILED;
    run_free(&r);
    return res;
}
