/*
 * train_plan.c - the plan of a training run (see train_internal.h):
 * fxt_validate checks a JobSpec against the graph and the columns before
 * anything runs, and resolves it into the plan that fxt_run executes
 * (column and output indices, defaults applied, totals computed). Every
 * error names the spec field ("losses[1].target: ...").
 */
#include "training/train_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "comm/comm.h"

static const char *const loss_kinds[LK_COUNT] = {
    "mse", "cross_entropy", "cross_entropy_soft", "bce_with_logits", "ctc", "output"};

static int nomem(char *err, size_t errlen) { return fxu_oom(err, errlen); }

void fxt__plan_free(plan_t *p)
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

static const char *col_name(const void *c, int i)
{
    return ((const fxds_columns *)c)->cols[i].name;
}
static const char *in_name(const void *g, int i) { return fxg_input(g, i)->name; }
static const char *out_name(const void *g, int i) { return fxg_output(g, i)->name; }

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
                        what, t->name, fx_dims_str(t->ndim, t->shape, s1, sizeof s1));
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
                            fx_dims_str(c->sample_ndim, c->sample_shape, s1, sizeof s1), t->name,
                            fx_dims_str(t->ndim, t->shape, s2, sizeof s2));
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
                        fx_dims_str(c->sample_ndim, c->sample_shape, s1, sizeof s1), loss_kinds[kind],
                        t->name, fx_dims_str(t->ndim, t->shape, s2, sizeof s2),
                        fx_dims_str(nd < 0 ? 0 : nd, t->shape + 1, s1, sizeof s1));
    }
    return 0;
}

/* A CTC length column (input_lengths / target_lengths): integer, one value
 * per sample. */
static int check_length_column(const fxds_columns *cols, const char *name, const char *what,
                               bool v, char *err, size_t errlen, int *out)
{
    const char *which = v ? " of the validation dataset" : "";
    if (find_column(cols, name, what, v ? " validation" : "", err, errlen, out))
        return FXS_INVALID_ARGUMENT;
    const fxds_column *c = &cols->cols[*out];
    if ((c->dtype != FX_I32 && c->dtype != FX_I64) || c->sample_ndim != 0)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: column '%s'%s must hold one integer (i32 or i64) per sample", what,
                        c->name, which);
    return 0;
}

/* The columns of a ctc loss: padded integer labels [S] and the lengths. */
static int check_ctc(const fxds_columns *cols, const Fluxion__V1__LossSpec *l, int i, bool v,
                     char *err, size_t errlen, int *col, int *tlen, int *ilen)
{
    char what[64];
    const char *which = v ? " of the validation dataset" : "";
    snprintf(what, sizeof what, "losses[%d].target", i);
    if (find_column(cols, l->target, what, v ? " validation" : "", err, errlen, col))
        return FXS_INVALID_ARGUMENT;
    const fxds_column *c = &cols->cols[*col];
    if ((c->dtype != FX_I32 && c->dtype != FX_I64) || c->sample_ndim != 1)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: column '%s'%s must hold padded integer labels (i32 or i64, "
                        "[S] per sample) for ctc",
                        what, c->name, which);
    snprintf(what, sizeof what, "losses[%d].target_lengths", i);
    if (!l->target_lengths || !*l->target_lengths)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: ctc needs a dataset tensor of target lengths", what);
    if (check_length_column(cols, l->target_lengths, what, v, err, errlen, tlen))
        return FXS_INVALID_ARGUMENT;
    *ilen = -1;
    snprintf(what, sizeof what, "losses[%d].input_lengths", i);
    if (l->input_lengths && *l->input_lengths &&
        check_length_column(cols, l->input_lengths, what, v, err, errlen, ilen))
        return FXS_INVALID_ARGUMENT;
    return 0;
}

/* The output's shape for kinds with no usual target. */
static int check_special_output(const Fluxion__V1__LossSpec *l, const fxg_tensor_info *t, int kind,
                                int i, char *err, size_t errlen)
{
    char what[64], s1[160];
    snprintf(what, sizeof what, "losses[%d].output", i);
    if (kind == LK_OUTPUT) {
        if (t->ndim > 1 || (t->ndim == 1 && t->shape[0] != -1))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: output '%s' has shape %s; kind 'output' takes a scalar or "
                            "one value per sample ([-1])",
                            what, t->name, fx_dims_str(t->ndim, t->shape, s1, sizeof s1));
        snprintf(what, sizeof what, "losses[%d].target", i);
        if (l->target && *l->target)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: '%s' given, but kind 'output' takes no target (the output is "
                            "the loss)",
                            what, l->target);
        return 0;
    }
    if (t->ndim != 3 || t->shape[0] != -1)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: output '%s' has shape %s; ctc takes log-probabilities [-1, T, C] "
                        "(batch first)",
                        what, t->name, fx_dims_str(t->ndim, t->shape, s1, sizeof s1));
    if (l->blank < 0 || (t->shape[2] > 0 && l->blank >= t->shape[2]))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "losses[%d].blank: %" PRId64 " is not a class of output '%s' (C = %" PRId64
                        ")",
                        i, l->blank, t->name, t->shape[2]);
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
                        "bce_with_logits, ctc, output",
                        what, l->kind);
    bool special = out->kind == LK_CTC || out->kind == LK_OUTPUT;
    if (special && check_special_output(l, t, out->kind, i, err, errlen))
        return FXS_INVALID_ARGUMENT;
    if (!special && (t->ndim < (out->kind == LK_CE || out->kind == LK_CE_SOFT ? 2 : 1) ||
                     (t->shape[0] != -1 && t->ndim >= 1)))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "%s: output '%s' has shape %s; %s needs a batch dimension "
                        "(-1) first%s",
                        what, t->name, fx_dims_str(t->ndim, t->shape, s1, sizeof s1), l->kind,
                        out->kind == LK_CE || out->kind == LK_CE_SOFT ? " and classes last" : "");
    snprintf(what, sizeof what, "losses[%d].weight", i);
    if (!(l->weight >= 0) || !isfinite(l->weight))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s: %g must be >= 0 (0 means 1)", what,
                        l->weight);
    out->weight = l->weight > 0 ? l->weight : 1.0;
    out->blank = l->blank;
    out->col = out->vcol = out->tlen = out->vtlen = out->ilen = out->vilen = -1;
    if (out->kind != LK_CTC && ((l->target_lengths && *l->target_lengths) ||
                                (l->input_lengths && *l->input_lengths) || l->blank))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "losses[%d]: target_lengths, input_lengths and blank are for kind 'ctc' "
                        "only",
                        i);
    if (out->kind == LK_OUTPUT)
        return 0;
    snprintf(what, sizeof what, "losses[%d].target", i);
    for (int v = 0; v < 2; v++) {
        const fxds_columns *cols = v ? p->valc : p->train;
        if (v && (!cols || cols == p->train))
            break;
        const char *which = v ? " of the validation dataset" : "";
        if (out->kind == LK_CTC) {
            if (check_ctc(cols, l, i, v, err, errlen, v ? &out->vcol : &out->col,
                          v ? &out->vtlen : &out->tlen, v ? &out->vilen : &out->ilen))
                return FXS_INVALID_ARGUMENT;
            continue;
        }
        int *ci = v ? &out->vcol : &out->col;
        if (find_column(cols, l->target, what, v ? " validation" : "", err, errlen, ci))
            return FXS_INVALID_ARGUMENT;
        if (check_target(&cols->cols[*ci], t, out->kind, what, which, err, errlen))
            return FXS_INVALID_ARGUMENT;
    }
    if (p->valc == p->train) {
        out->vcol = out->col;
        out->vtlen = out->tlen;
        out->vilen = out->ilen;
    }
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
            if (l->kind != LK_MSE && l->kind != LK_CTC && l->kind != LK_OUTPUT &&
                (!out || l->out == fxg_find_output(p->g, out)))
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
    const double vals[] = {o->lr,  o->momentum,     o->beta1, o->beta2,
                           o->eps, o->weight_decay, o->rho,   o->grad_noise_eta,
                           o->grad_noise_gamma};
    static const char *const names[] = {"lr",           "momentum", "beta1",
                                        "beta2",        "eps",      "weight_decay",
                                        "rho",          "grad_noise_eta", "grad_noise_gamma"};
    for (int k = 0; k < 9; k++)
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
                            .clip_value = c->max_value,
                            .noise_eta = o->grad_noise_eta,
                            .noise_gamma = o->grad_noise_gamma,
                            /* a seed of its own, apart from the shuffling's */
                            .noise_seed = o->grad_noise_seed ? o->grad_noise_seed
                                                             : spec->seed ^ 0x6e6f697365ull};
    if (p->opt_kind == FX_OPT_RMSPROP)
        h->alpha = o->rho; /* the spec's one decay field */
    else
        h->rho = o->rho;
    if (!(o->grad_noise_eta >= 0) || !(o->grad_noise_gamma >= 0))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "optimizer.%s: %g must be >= 0",
                        o->grad_noise_eta >= 0 ? "grad_noise_gamma" : "grad_noise_eta",
                        o->grad_noise_eta >= 0 ? o->grad_noise_gamma : o->grad_noise_eta);
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
    /* a step trains the global batch: world ranks of batch samples each */
    int64_t global = p->batch > INT64_MAX / p->world ? INT64_MAX : p->batch * p->world;
    p->steps_per_epoch = (p->n_train + global - 1) / global;
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

/* Data-parallel fields (training.proto 44-48; docs/distributed.md). Devices
 * are checked by name here (the daemon resolves them against its devices
 * when it places the ranks). p->world is what the step counts use. */
static int check_world(const Fluxion__V1__JobSpec *spec, plan_t *p, char *err, size_t errlen)
{
    int w = spec->world_size;
    if (w < 0 || w > FXT_MAX_WORLD)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "world_size: %d is not in [0, %d] (0 or 1: one rank)", w, FXT_MAX_WORLD);
    p->world = w > 1 ? w : 1;
    if (spec->n_placement && spec->n_placement != (size_t)p->world)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "placement: %zu entries for world_size %d (give none, or one per rank)",
                        spec->n_placement, p->world);
    if (spec->min_world_size < 0 || spec->min_world_size > p->world)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "min_world_size: %d is not in [0, world_size %d] (0: not elastic)",
                        spec->min_world_size, p->world);
    if (spec->bucket_bytes && (spec->bucket_bytes < 1024 || spec->bucket_bytes > (1ll << 30)))
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "bucket_bytes: %" PRId64 " is not in [1024, 1073741824] (0: 25 MiB)",
                        spec->bucket_bytes);
    const char *be = spec->comm_backend ? spec->comm_backend : "";
    fxcm_backend kind = *be ? fxcm_backend_parse(be) : 0;
    if (*be && !kind)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "comm_backend: '%.64s' is not one of gloo, nccl (\"\": by the devices)", be);
    bool any_cuda = false, any_cpu = false;
    size_t nd = spec->n_placement ? spec->n_placement : p->world > 1;
    for (size_t i = 0; i < nd; i++) {
        char field[32];
        const char *d = spec->n_placement ? spec->placement[i] : spec->device;
        if (spec->n_placement)
            snprintf(field, sizeof field, "placement[%zu]", i);
        else
            snprintf(field, sizeof field, "device");
        if (!d || !*d) {
            if (spec->n_placement)
                return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                                "%s: empty (\"cpu\", \"cuda:N\" or \"PEER/DEVICE\")", field);
            any_cpu = true; /* the daemon's default device: checked when placed */
            continue;
        }
        const char *slash = spec->n_placement ? strchr(d, '/') : NULL;
        if (slash == d)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: '%.64s' has an empty peer name", field, d);
        fx_device fd = {.type = FX_DEV_CUDA}; /* "gpu": the freest CUDA device */
        const char *dn = slash ? slash + 1 : d;
        if (strcmp(dn, "gpu") != 0 && !fx_device_parse(dn, &fd))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s: '%.64s' is not a device (\"cpu\", \"cuda:N\"%s)", field, d,
                            spec->n_placement ? " or \"PEER/DEVICE\"" : "");
        any_cuda |= fd.type == FX_DEV_CUDA;
        any_cpu |= fd.type != FX_DEV_CUDA;
    }
    if (p->world > 1 && kind == FXCM_NCCL) {
        if (any_cpu)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "comm_backend: nccl reduces CUDA memory; every rank must be on a "
                            "cuda device (or use gloo for cpu ranks)");
        if (!fxcm_available(FXCM_NCCL))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "comm_backend: nccl is not built into this fluxiond (no nccl.h at "
                            "build time); use gloo with cpu ranks");
    }
    if (p->world > 1 && kind == FXCM_GLOO && any_cuda)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "comm_backend: gloo reduces host memory; ranks on cuda devices need nccl");
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

int fxt__plan_build(const Fluxion__V1__JobSpec *spec, const fxg_graph *g, const fxds_columns *train,
                    const fxds_columns *val, plan_t *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (!spec || !g || !train)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "fxt: NULL argument");
    p->g = g;
    p->train = train;
    p->valc = val;
    int rc = check_world(spec, p, err, errlen);
    if (!rc)
        rc = fxt_check_precision(spec, NULL, &p->precision, err, errlen);
    if (!rc)
        rc = check_sizes(spec, p, err, errlen);
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
        fxt__plan_free(p);
    return rc;
}

int fxt_validate(const Fluxion__V1__JobSpec *spec, const fxg_graph *g, const fxds_columns *train,
                 const fxds_columns *val, char *err, size_t errlen)
{
    plan_t p;
    int rc = fxt__plan_build(spec, g, train, val, &p, err, errlen);
    fxt__plan_free(&p);
    return rc;
}
