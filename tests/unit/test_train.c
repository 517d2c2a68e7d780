/* test_train.c - the trainer (server/training/train*.c) on synthetic tasks.
 *
 * XOR of 4 Gaussian clusters (an MLP must reach 95% validation accuracy,
 * checked here by a forward of the result weights, not only by what the
 * trainer reports); linear regression with mse recovers the generating
 * coefficients; two outputs with two weighted losses; early stopping returns
 * the weights of the best evaluation (equal to a run that stops there);
 * determinism and stop/resume equality with shuffle, dropout and batch
 * norm; the recorded loss is the last epoch's mean whatever the progress
 * interval; checkpoints that cannot be stored are retried; every
 * fxt_validate error names its field (a table of spec edits by field path);
 * should_stop checkpoints then stops; a non-finite loss ends the run as
 * diverged (done, its loss non-finite); bad checkpoints fail cleanly. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/graph.h"
#include "base/status.h"
#include "training/train.h"

/* ------------------------------------------------------------ spec builders */

typedef Fluxion__V1__ModelSpec mspec;
typedef Fluxion__V1__JobSpec jspec;

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    assert_non_null(p);
    return p;
}

#define GROW(arr, n)                                                                               \
    ((arr) = realloc((arr), ((n) + 1) * sizeof *(arr)), assert_non_null(arr), &(arr)[(n)++])

static void m_input(mspec *s, const char *name, Fluxion__V1__DataType dt, int64_t width)
{
    Fluxion__V1__TensorSpec *t = xcalloc(1, sizeof *t);
    fluxion__v1__tensor_spec__init(t);
    t->name = xstrdup(name);
    t->dtype = dt;
    t->n_shape = 2;
    t->shape = xcalloc(2, sizeof *t->shape);
    t->shape[0] = -1;
    t->shape[1] = width;
    *GROW(s->inputs, s->n_inputs) = t;
}

static Fluxion__V1__Node__AttrsEntry *attr(const char *key, int64_t i, double f, const char *str)
{
    Fluxion__V1__Node__AttrsEntry *e = xcalloc(1, sizeof *e);
    fluxion__v1__node__attrs_entry__init(e);
    e->key = xstrdup(key);
    e->value = xcalloc(1, sizeof *e->value);
    fluxion__v1__attr_value__init(e->value);
    if (str) {
        e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_S;
        e->value->s = xstrdup(str);
    } else if (f != 0) {
        e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_F;
        e->value->f = f;
    } else {
        e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_I;
        e->value->i = i;
    }
    return e;
}

static Fluxion__V1__Node *m_node(mspec *s, const char *name, const char *op, const char *input)
{
    Fluxion__V1__Node *n = xcalloc(1, sizeof *n);
    fluxion__v1__node__init(n);
    n->name = xstrdup(name);
    n->op = xstrdup(op);
    *GROW(n->inputs, n->n_inputs) = xstrdup(input);
    *GROW(s->nodes, s->n_nodes) = n;
    return n;
}

/* dense in->out with an optional activation */
static void m_dense(mspec *s, const char *name, const char *input, int64_t in, int64_t out,
                    const char *act)
{
    Fluxion__V1__Node *n = m_node(s, name, "dense", input);
    *GROW(n->attrs, n->n_attrs) = attr("in_features", in, 0, NULL);
    *GROW(n->attrs, n->n_attrs) = attr("out_features", out, 0, NULL);
    if (act)
        *GROW(n->attrs, n->n_attrs) = attr("activation", 0, 0, act);
}

static void m_output(mspec *s, const char *name, const char *source)
{
    Fluxion__V1__OutputSpec *o = xcalloc(1, sizeof *o);
    fluxion__v1__output_spec__init(o);
    o->name = xstrdup(name);
    o->source = xstrdup(source);
    *GROW(s->outputs, s->n_outputs) = o;
}

static fxg_graph *build(mspec *s, uint64_t seed)
{
    char err[512];
    fxg_graph *g = NULL;
    fxg_build(s, &(fxg_options){.seed = seed}, &g, err, sizeof err);
    if (!g)
        fail_msg("fxg_build: %s", err);
    return g;
}

static mspec *mspec_new(void)
{
    mspec *s = xcalloc(1, sizeof *s);
    fluxion__v1__model_spec__init(s);
    return s;
}

/* x [N,2] -> 16 relu -> 16 relu -> logits [N,2] */
static mspec *mlp_spec(void)
{
    mspec *s = mspec_new();
    m_input(s, "x", FLUXION__V1__DATA_TYPE__FP32, 2);
    m_dense(s, "fc1", "x", 2, 16, "relu");
    m_dense(s, "fc2", "fc1", 16, 16, "relu");
    m_dense(s, "fc3", "fc2", 16, 2, NULL);
    m_output(s, "logits", "fc3");
    return s;
}

/* x [N,4] -> dense 16 -> batchnorm1d -> relu -> dropout 0.3 -> dense 2 */
static mspec *bn_dropout_spec(void)
{
    mspec *s = mspec_new();
    m_input(s, "x", FLUXION__V1__DATA_TYPE__FP32, 2);
    m_dense(s, "fc1", "x", 2, 16, NULL);
    Fluxion__V1__Node *bn = m_node(s, "bn", "batchnorm1d", "fc1");
    *GROW(bn->attrs, bn->n_attrs) = attr("num_features", 16, 0, NULL);
    m_node(s, "act", "relu", "bn");
    Fluxion__V1__Node *d = m_node(s, "drop", "dropout", "act");
    *GROW(d->attrs, d->n_attrs) = attr("p", 0, 0.3, NULL);
    m_dense(s, "fc2", "drop", 16, 2, NULL);
    m_output(s, "logits", "fc2");
    return s;
}

/* x [N,2] -> dense 1 */
static mspec *linear_spec(void)
{
    mspec *s = mspec_new();
    m_input(s, "x", FLUXION__V1__DATA_TYPE__FP32, 2);
    m_dense(s, "fc", "x", 2, 1, NULL);
    m_output(s, "y", "fc");
    return s;
}

/* x -> trunk 16 relu -> "cls" [N,2] and "reg" [N,1] */
static mspec *two_heads_spec(void)
{
    mspec *s = mspec_new();
    m_input(s, "x", FLUXION__V1__DATA_TYPE__FP32, 2);
    m_dense(s, "trunk", "x", 2, 16, "relu");
    m_dense(s, "cls", "trunk", 16, 2, NULL);
    m_dense(s, "reg", "trunk", 16, 1, NULL);
    m_output(s, "cls", "cls");
    m_output(s, "reg", "reg");
    return s;
}

static jspec *job_new(void)
{
    jspec *j = xcalloc(1, sizeof *j);
    fluxion__v1__job_spec__init(j);
    j->model = xstrdup("m");
    j->dataset = xstrdup("d");
    j->optimizer = xcalloc(1, sizeof *j->optimizer);
    fluxion__v1__optimizer_spec__init(j->optimizer);
    j->optimizer->kind = xstrdup("adam");
    j->optimizer->lr = 0.01;
    j->batch_size = 32;
    j->seed = 7;
    return j;
}

static void job_feed(jspec *j, const char *input, const char *tensor)
{
    Fluxion__V1__Feed *f = xcalloc(1, sizeof *f);
    fluxion__v1__feed__init(f);
    f->input = xstrdup(input);
    f->tensor = xstrdup(tensor);
    *GROW(j->feeds, j->n_feeds) = f;
}

static void job_loss(jspec *j, const char *output, const char *kind, const char *target,
                     double weight)
{
    Fluxion__V1__LossSpec *l = xcalloc(1, sizeof *l);
    fluxion__v1__loss_spec__init(l);
    l->output = xstrdup(output);
    l->kind = xstrdup(kind);
    l->target = xstrdup(target);
    l->weight = weight;
    *GROW(j->losses, j->n_losses) = l;
}

static void job_metric(jspec *j, const char *m) { *GROW(j->metrics, j->n_metrics) = xstrdup(m); }

static void job_early(jspec *j, const char *metric, int patience, double min_delta)
{
    j->early_stopping = xcalloc(1, sizeof *j->early_stopping);
    fluxion__v1__early_stopping__init(j->early_stopping);
    j->early_stopping->metric = xstrdup(metric);
    j->early_stopping->patience = patience;
    j->early_stopping->min_delta = min_delta;
}

static void job_free(jspec *j) { fluxion__v1__job_spec__free_unpacked(j, NULL); }

/* ------------------------------------------------------------- spec edits */

static void free_element(const ProtobufCFieldDescriptor *f, void *e)
{
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        protobuf_c_message_free_unpacked(e, NULL);
    else
        free(e);
}

static void set_string(char **p, const char *value)
{
    if (*p != protobuf_c_empty_string)
        free(*p);
    *p = xstrdup(value);
}

/* Sets the field at path in m from the text value, through protobuf-c's
 * reflection: "optimizer.beta1", "losses[0].kind", "metrics[1]". A missing
 * sub-message is created, an index one past the end appends an element,
 * and the value "[]" empties a repeated field. */
static void set_field(ProtobufCMessage *m, const char *path, const char *value)
{
    char name[64];
    size_t n = strcspn(path, ".[");
    assert_true(n > 0 && n < sizeof name);
    memcpy(name, path, n);
    name[n] = '\0';
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (!f)
        fail_msg("spec_edit: no field '%s' in %s", name, m->descriptor->name);
    const char *rest = path + n;
    void *at = (char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        assert_true(f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING);
        size_t *count = (size_t *)(void *)((char *)m + f->quantifier_offset);
        void ***arr = at;
        if (!*rest) {
            assert_string_equal(value, "[]");
            for (size_t i = 0; i < *count; i++)
                free_element(f, (*arr)[i]);
            *count = 0;
            return;
        }
        char *end;
        size_t i = strtoul(rest + 1, &end, 10);
        assert_true(*rest == '[' && *end == ']' && i <= *count);
        if (i == *count) {
            *arr = realloc(*arr, (*count + 1) * sizeof **arr);
            assert_non_null(*arr);
            (*arr)[i] = NULL;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                (*arr)[i] =
                    xcalloc(1, ((const ProtobufCMessageDescriptor *)f->descriptor)->sizeof_message);
                protobuf_c_message_init(f->descriptor, (*arr)[i]);
            }
            (*count)++;
        }
        rest = end + 1;
        at = &(*arr)[i];
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        ProtobufCMessage **sub = at;
        assert_true(*rest == '.');
        if (!*sub) {
            *sub = xcalloc(1, ((const ProtobufCMessageDescriptor *)f->descriptor)->sizeof_message);
            protobuf_c_message_init(f->descriptor, *sub);
        }
        set_field(*sub, rest + 1, value);
        return;
    }
    assert_true(*rest == '\0');
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: set_string(at, value); break;
    case PROTOBUF_C_TYPE_DOUBLE: *(double *)at = strtod(value, NULL); break;
    case PROTOBUF_C_TYPE_INT64: *(int64_t *)at = strtoll(value, NULL, 10); break;
    case PROTOBUF_C_TYPE_INT32: *(int32_t *)at = (int32_t)strtol(value, NULL, 10); break;
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)at = strcmp(value, "true") == 0; break;
    default: fail_msg("spec_edit: field '%s' has a type this helper does not set", name);
    }
}

/* Applies "path=value; path=value; ..." to a job spec (see set_field). */
static void spec_edit(jspec *j, const char *edits)
{
    char *copy = xstrdup(edits), *save = NULL;
    for (char *e = strtok_r(copy, ";", &save); e; e = strtok_r(NULL, ";", &save)) {
        while (*e == ' ')
            e++;
        char *eq = strchr(e, '=');
        if (!eq)
            fail_msg("spec_edit: '%s' is not path=value", e);
        *eq = '\0';
        set_field(&j->base, e, eq + 1);
    }
    free(copy);
}

/* --------------------------------------------------------------- datasets */

typedef struct {
    fxds_column cols[6];
    fxds_columns c;
    float *x, *yf, *reg, *yb;
    int32_t *y;
    int64_t *y64;
} data_t;

/* XOR of 4 clusters at (+-3, +-3), std 1: class 1 where the signs differ.
 * Columns x f32 [2], y i32 [], yf f32 [2] (one-hot), reg f32 [1] ((x0 + x1)
 * / 4), y64 i64 [] (= y), yb f32 [1] (= y). */
static void xor_data(data_t *d, int64_t n, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    fx_rng *rng = fx_rng_create(seed);
    d->x = xcalloc((size_t)n * 2, sizeof *d->x);
    d->y = xcalloc((size_t)n, sizeof *d->y);
    d->yf = xcalloc((size_t)n * 2, sizeof *d->yf);
    d->reg = xcalloc((size_t)n, sizeof *d->reg);
    d->y64 = xcalloc((size_t)n, sizeof *d->y64);
    d->yb = xcalloc((size_t)n, sizeof *d->yb);
    for (int64_t i = 0; i < n; i++) {
        int a = (int)(fx_rng_u64(rng) & 1), b = (int)(fx_rng_u64(rng) & 1);
        d->x[2 * i] = (float)((a ? 3 : -3) + fx_rng_normal(rng));
        d->x[2 * i + 1] = (float)((b ? 3 : -3) + fx_rng_normal(rng));
        d->y[i] = a != b;
        d->yf[2 * i + d->y[i]] = 1;
        d->reg[i] = (d->x[2 * i] + d->x[2 * i + 1]) / 4;
        d->y64[i] = d->y[i];
        d->yb[i] = (float)d->y[i];
    }
    fx_rng_free(rng);
    d->cols[0] = (fxds_column){"x", FX_F32, 1, {2}, d->x};
    d->cols[1] = (fxds_column){"y", FX_I32, 0, {0}, d->y};
    d->cols[2] = (fxds_column){"yf", FX_F32, 1, {2}, d->yf};
    d->cols[3] = (fxds_column){"reg", FX_F32, 1, {1}, d->reg};
    d->cols[4] = (fxds_column){"y64", FX_I64, 0, {0}, d->y64};
    d->cols[5] = (fxds_column){"yb", FX_F32, 1, {1}, d->yb};
    d->c = (fxds_columns){n, 6, d->cols};
}

/* y = 3 x0 - 2 x1 + 0.5 + N(0, 0.01^2) (sign flips with negate: for a
 * validation set that disagrees with training). Columns x, t. */
static void linear_data(data_t *d, int64_t n, uint64_t seed, bool negate)
{
    memset(d, 0, sizeof *d);
    fx_rng *rng = fx_rng_create(seed);
    d->x = xcalloc((size_t)n * 2, sizeof *d->x);
    d->yf = xcalloc((size_t)n, sizeof *d->yf);
    for (int64_t i = 0; i < n; i++) {
        d->x[2 * i] = (float)fx_rng_normal(rng);
        d->x[2 * i + 1] = (float)fx_rng_normal(rng);
        double y = 3 * d->x[2 * i] - 2 * d->x[2 * i + 1] + 0.5 + 0.01 * fx_rng_normal(rng);
        d->yf[i] = (float)(negate ? -y : y);
    }
    fx_rng_free(rng);
    d->cols[0] = (fxds_column){"x", FX_F32, 1, {2}, d->x};
    d->cols[1] = (fxds_column){"t", FX_F32, 1, {1}, d->yf};
    d->c = (fxds_columns){n, 2, d->cols};
}

static void data_free(data_t *d)
{
    free(d->x);
    free(d->y);
    free(d->yf);
    free(d->reg);
    free(d->y64);
    free(d->yb);
}

/* ------------------------------------------------------------------ hooks */

typedef struct {
    int progress, evals, ckpts, polls;
    int stop_at_poll;          /* should_stop true from this poll on (0: never) */
    int ckpt_calls;            /* on_checkpoint calls, stored or not */
    int fail_first, fail_last; /* calls (from 1) that fail; fail_last 0: all after */
    void *ckpt[64];            /* every checkpoint, by arrival */
    size_t ckpt_len[64];
    int64_t ckpt_step[64];
    double last_sps, last_eta, first_eta;
    int64_t last_progress_step;
    int loss_scalars; /* "loss" scalars, at steps loss_step_every apart */
    int64_t last_loss_step;
    char scalars[1024];                        /* distinct tags seen */
    double val_acc;                            /* from the last on_eval, or -1 */
    double last_progress_loss, last_eval_loss; /* train_loss / "loss" reported */
    double step_loss[128];                     /* "loss" scalars by step */
    double running_loss[128];                  /* running_loss reported, by step */
} hookrec;

static void on_progress(void *data, const Fluxion__V1__JobProgress *p)
{
    hookrec *h = data;
    h->progress++;
    assert_true(p->step > h->last_progress_step);
    if (h->progress == 1)
        h->first_eta = p->eta_seconds;
    h->last_sps = p->samples_per_second;
    h->last_eta = p->eta_seconds;
    h->last_progress_step = p->step;
    h->last_progress_loss = p->train_loss;
    if (p->step >= 0 && p->step < 128)
        h->running_loss[p->step] = p->running_loss;
    assert_true(p->step <= p->total_steps);
}

static double metric_of(const Fluxion__V1__JobProgress *p, const char *name)
{
    for (size_t i = 0; i < p->n_metrics; i++)
        if (strcmp(p->metrics[i]->name, name) == 0)
            return p->metrics[i]->value;
    return -1;
}

static void on_eval(void *data, const Fluxion__V1__JobProgress *p)
{
    hookrec *h = data;
    h->evals++;
    h->val_acc = metric_of(p, "val_accuracy");
    h->last_eval_loss = metric_of(p, "loss");
    assert_true(p->train_loss == h->last_eval_loss);
}

static int on_checkpoint(void *data, const void *ckpt, size_t len, int64_t step, char *err,
                         size_t errlen)
{
    hookrec *h = data;
    h->ckpt_calls++;
    if (h->fail_first && h->ckpt_calls >= h->fail_first &&
        (!h->fail_last || h->ckpt_calls <= h->fail_last)) {
        snprintf(err, errlen, "disk full (test)");
        return FXS_RESOURCE_EXHAUSTED;
    }
    assert_true(h->ckpts < 64);
    h->ckpt[h->ckpts] = malloc(len);
    assert_non_null(h->ckpt[h->ckpts]);
    memcpy(h->ckpt[h->ckpts], ckpt, len);
    h->ckpt_len[h->ckpts] = len;
    h->ckpt_step[h->ckpts] = step;
    h->ckpts++;
    return 0;
}

static void on_scalar(void *data, const char *tag, int64_t step, double value)
{
    hookrec *h = data;
    assert_true(isfinite(value));
    if (strcmp(tag, "loss") == 0) {
        h->loss_scalars++;
        assert_true(step > h->last_loss_step);
        h->last_loss_step = step;
        if (step < 128)
            h->step_loss[step] = value;
    }
    char key[128];
    snprintf(key, sizeof key, "|%s|", tag);
    if (!strstr(h->scalars, key))
        strncat(h->scalars, key, sizeof h->scalars - strlen(h->scalars) - 1);
}

static bool should_stop(void *data, int64_t step)
{
    (void)step;
    hookrec *h = data;
    h->polls++;
    return h->stop_at_poll && h->polls >= h->stop_at_poll;
}

static fxt_hooks hooks_for(hookrec *h)
{
    memset(h, 0, sizeof *h);
    h->val_acc = -1;
    return (fxt_hooks){.on_progress = on_progress,
                       .on_eval = on_eval,
                       .on_checkpoint = on_checkpoint,
                       .on_scalar = on_scalar,
                       .should_stop = should_stop,
                       .data = h,
                       .device = {FX_DEV_CPU, 0}};
}

static void hooks_free(hookrec *h)
{
    for (int i = 0; i < h->ckpts; i++)
        free(h->ckpt[i]);
}

typedef struct {
    fxt_result res;
    void *w;
    size_t len;
    Fluxion__V1__JobProgress *final;
    char err[512];
} outcome;

static outcome run(const jspec *j, fxg_graph *g, const fxds_columns *train, const fxds_columns *val,
                   const void *resume, size_t rlen, const fxt_hooks *hk)
{
    outcome o = {0};
    o.res =
        fxt_run(j, g, train, val, resume, rlen, hk, &o.w, &o.len, &o.final, o.err, sizeof o.err);
    if (o.res == FXT_DONE) {
        assert_non_null(o.w);
        assert_non_null(o.final);
    } else {
        assert_null(o.w);
        assert_null(o.final);
    }
    return o;
}

static void outcome_free(outcome *o)
{
    free(o->w);
    if (o->final)
        fluxion__v1__job_progress__free_unpacked(o->final, NULL);
}

static void expect_done(const outcome *o)
{
    if (o->res != FXT_DONE)
        fail_msg("fxt_run: result %d: %s", o->res, o->err);
}

/* Accuracy of argmax(logits) over rows [from, to) of d, with weights w in
 * a fresh graph of spec s. */
static double accuracy_of(mspec *s, const void *w, size_t len, const data_t *d, int64_t from,
                          int64_t to)
{
    fxg_graph *g = build(s, 99);
    char err[512];
    assert_int_equal(fxg_load_weights(g, w, len, err, sizeof err), 0);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_ctx_set_grad(ctx, false);
    fx_ctx_set_training(ctx, false);
    fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(to - from, 2), d->x + 2 * from);
    fx_tensor *out = NULL;
    assert_int_equal(fxg_forward(g, ctx, &x, &out, err, sizeof err), 0);
    float *v = tu_values(out);
    int64_t ok = 0;
    for (int64_t i = 0; i < to - from; i++)
        ok += (v[2 * i + 1] > v[2 * i]) == (d->y[from + i] == 1);
    free(v);
    fx_ctx_free(ctx);
    fxg_free(g);
    return (double)ok / (double)(to - from);
}

/* ------------------------------------------------------------------ tests */

static void test_classification_reaches_accuracy(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 600, 1);
    mspec *s = mlp_spec();
    fxg_graph *g = build(s, 3);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "logits", "cross_entropy", "y", 0);
    job_metric(j, "accuracy");
    j->epochs = 15;
    j->shuffle = true;
    j->validation_split = 0.25;
    hookrec h;
    fxt_hooks hk = hooks_for(&h);
    outcome o = run(j, g, &d.c, NULL, NULL, 0, &hk);
    expect_done(&o);
    /* independent check: 150 held-out samples (the last quarter) */
    double acc = accuracy_of(s, o.w, o.len, &d, 450, 600);
    print_message("validation accuracy %.4f (reported %.4f), val_loss %.4f\n", acc,
                  metric_of(o.final, "val_accuracy"), o.final->val_loss);
    assert_true(acc >= 0.95);
    /* what the trainer reports agrees with it */
    assert_true(fabs(metric_of(o.final, "val_accuracy") - acc) < 1e-9);
    assert_int_equal(o.final->step, 15 * 15); /* ceil(450 / 32) = 15 steps per epoch */
    assert_int_equal(o.final->total_steps, 225);
    assert_int_equal(o.final->epoch, 15);
    assert_int_equal(o.final->total_epochs, 15);
    assert_true(o.final->val_loss > 0 && o.final->val_loss < 0.2);
    assert_int_equal(h.evals, 15);
    assert_true(h.progress >= 1);
    assert_int_equal(h.last_progress_step, 225);
    assert_true(h.last_sps > 0);
    assert_true(h.last_eta == 0);
    assert_int_equal(h.ckpts, 0); /* the default interval (500) is beyond the job */
    for (const char *const *t = (const char *const[]){"|loss|", "|lr|", "|val_loss|", "|accuracy|",
                                                      "|val_accuracy|", NULL};
         *t; t++)
        if (!strstr(h.scalars, *t))
            fail_msg("no scalar %s in %s", *t, h.scalars);
    /* the graph holds the result */
    void *w2;
    size_t l2;
    char err[256];
    assert_int_equal(fxg_save_weights(g, &w2, &l2, err, sizeof err), 0);
    assert_int_equal(l2, o.len);
    assert_memory_equal(w2, o.w, l2);
    free(w2);
    outcome_free(&o);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

static float weight_at(const void *w, size_t len, const char *name, int64_t i)
{
    fx_params p;
    fx_params_init(&p);
    char err[256];
    assert_int_equal(fx_safetensors_decode(w, len, &p, err, sizeof err), FX_OK);
    fx_tensor *t = fx_params_find(&p, name);
    assert_non_null(t);
    float *v = tu_values(t);
    float r = v[i];
    free(v);
    fx_params_free_tensors(&p);
    return r;
}

static void count_yield(void *data) { (*(int *)data)++; }

/* The yield hook (inference first, training/yield.h) is called at every
 * step boundary with its own data, and the result does not depend on it. */
static void test_yield_hook_every_step(void **state)
{
    (void)state;
    data_t d;
    linear_data(&d, 64, 2, false);
    mspec *s = linear_spec();
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "y", "mse", "t", 0);
    j->steps = 40;
    j->shuffle = true;
    outcome o[2];
    int calls = 0;
    for (int k = 0; k < 2; k++) {
        fxg_graph *g = build(s, 1);
        hookrec h;
        fxt_hooks hk = hooks_for(&h);
        if (k) {
            hk.yield = count_yield;
            hk.yield_data = &calls;
        }
        o[k] = run(j, g, &d.c, NULL, NULL, 0, &hk);
        expect_done(&o[k]);
        assert_int_equal(h.polls, 40);
        fxg_free(g);
    }
    assert_int_equal(calls, 40);
    assert_int_equal(o[0].len, o[1].len);
    assert_memory_equal(o[0].w, o[1].w, o[0].len);
    outcome_free(&o[0]);
    outcome_free(&o[1]);
    job_free(j);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

static void test_regression_mse(void **state)
{
    (void)state;
    data_t d, v;
    linear_data(&d, 512, 2, false);
    linear_data(&v, 128, 3, false);
    mspec *s = linear_spec();
    fxg_graph *g = build(s, 1);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "y", "mse", "t", 0);
    spec_edit(j, "optimizer.kind=momentum; optimizer.lr=0.05; schedule.kind=cosine;"
                 "schedule.warmup_steps=10");
    j->steps = 400; /* 25 epochs of 16 steps */
    j->eval_every_steps = 100;
    j->shuffle = true;
    hookrec h;
    fxt_hooks hk = hooks_for(&h);
    hk.progress_interval_s = 1e-9; /* a report after every step */
    outcome o = run(j, g, &d.c, &v.c, NULL, 0, &hk);
    expect_done(&o);
    assert_int_equal(h.evals, 4);
    assert_int_equal(h.progress, 400);
    assert_true(h.first_eta > 0);
    assert_true(h.last_eta == 0);
    assert_int_equal(h.loss_scalars, 100); /* every 400 / 100 steps */
    assert_int_equal(h.last_loss_step, 400);
    assert_true(fabs(weight_at(o.w, o.len, "fc.weight", 0) - 3) < 0.01);
    assert_true(fabs(weight_at(o.w, o.len, "fc.weight", 1) + 2) < 0.01);
    assert_true(fabs(weight_at(o.w, o.len, "fc.bias", 0) - 0.5) < 0.01);
    assert_true(o.final->val_loss < 1e-3);
    assert_true(o.final->learning_rate < 1e-4); /* cosine to 0 at the end */
    outcome_free(&o);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
    data_free(&v);
}

static void test_two_outputs_weighted_losses(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 400, 4);
    mspec *s = two_heads_spec();
    fxg_graph *g = build(s, 5);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "cls", "cross_entropy_soft", "yf", 1);
    job_loss(j, "reg", "mse", "reg", 0.5);
    job_metric(j, "accuracy:cls");
    j->epochs = 20;
    j->validation_split = 0.25;
    hookrec h;
    fxt_hooks hk = hooks_for(&h);
    outcome o = run(j, g, &d.c, NULL, NULL, 0, &hk);
    expect_done(&o);
    double vc = metric_of(o.final, "val_loss:cls"), vr = metric_of(o.final, "val_loss:reg");
    assert_true(vc > 0 && vr > 0);
    assert_true(fabs(o.final->val_loss - (vc + 0.5 * vr)) < 1e-9 * (1 + o.final->val_loss));
    assert_true(vr < 0.05); /* the regression head learned x0 + x1 */
    assert_true(metric_of(o.final, "val_accuracy:cls") >= 0.95);
    assert_true(metric_of(o.final, "loss:cls") > 0);
    /* the training losses are means over the same window (the last epoch) */
    double lc = metric_of(o.final, "loss:cls"), lr = metric_of(o.final, "loss:reg");
    assert_true(fabs(o.final->train_loss - (lc + 0.5 * lr)) < 1e-5 * o.final->train_loss);
    assert_true(strstr(h.scalars, "|val_loss:reg|") && strstr(h.scalars, "|accuracy:cls|"));
    outcome_free(&o);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* The loss recorded for a job (train_loss and "loss" of the final record,
 * of evaluations and of the progress reports after them) is the mean
 * training loss of the last evaluation window, here the last epoch, whatever
 * the progress interval (defect 11: it was an average since the last 0.5 s
 * progress tick). The "loss" scalars of a job of at most 100 steps are the
 * steps' own losses: the mean of the last epoch's is computed here from
 * them. */
static void test_recorded_loss_is_the_epoch_mean(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 200, 3);
    mspec *s = mlp_spec();
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "logits", "cross_entropy", "y", 0);
    j->epochs = 4; /* 7 steps of up to 32 samples per epoch: 28 steps */
    j->shuffle = true;
    static const double intervals[2] = {1e-9, 1e9}; /* a report every step; only the last */
    hookrec h[2];
    outcome o[2];
    for (int k = 0; k < 2; k++) {
        fxt_hooks hk = hooks_for(&h[k]);
        hk.progress_interval_s = intervals[k];
        fxg_graph *g = build(s, 3);
        o[k] = run(j, g, &d.c, NULL, NULL, 0, &hk);
        expect_done(&o[k]);
        fxg_free(g);
        assert_int_equal(h[k].loss_scalars, 28);
    }
    assert_int_equal(h[0].progress, 28);
    assert_int_equal(h[1].progress, 1);
    double sum = 0;
    for (int step = 22; step <= 28; step++)
        sum += h[0].step_loss[step];
    double mean = sum / 7;
    print_message("loss of the last epoch %.6g; recorded %.6g (every step), %.6g (at the end)\n",
                  mean, o[0].final->train_loss, o[1].final->train_loss);
    for (int k = 0; k < 2; k++) {
        assert_true(fabs(o[k].final->train_loss - mean) <= 1e-12 * mean);
        assert_true(metric_of(o[k].final, "loss") == o[k].final->train_loss);
        assert_true(h[k].last_eval_loss == o[k].final->train_loss);
        assert_true(h[k].last_progress_loss == o[k].final->train_loss);
    }
    assert_true(o[0].final->train_loss == o[1].final->train_loss);
    /* Live, inside the last epoch (steps 22-28): running_loss is the mean of
     * the epoch's steps so far, whatever the recorded loss says. */
    for (int step = 23; step <= 27; step++) {
        double part = 0;
        for (int k = 22; k <= step; k++)
            part += h[0].step_loss[k];
        part /= step - 21;
        assert_true(fabs(h[0].running_loss[step] - part) <= 1e-9 * part);
    }
    for (int k = 0; k < 2; k++)
        outcome_free(&o[k]);
    job_free(j);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* Binary classification with one logit: bce_with_logits, accuracy by the
 * sign of the logit. */
static void test_bce_accuracy(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 400, 12);
    mspec *s = mspec_new();
    m_input(s, "x", FLUXION__V1__DATA_TYPE__FP32, 2);
    m_dense(s, "fc1", "x", 2, 16, "tanh");
    m_dense(s, "fc2", "fc1", 16, 1, NULL);
    m_output(s, "logit", "fc2");
    fxg_graph *g = build(s, 2);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "logit", "bce_with_logits", "yb", 0);
    job_metric(j, "accuracy");
    j->epochs = 20;
    j->validation_split = 0.25;
    outcome o = run(j, g, &d.c, NULL, NULL, 0, NULL);
    expect_done(&o);
    /* independently: sign of the logit on the held-out 100 */
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_ctx_set_grad(ctx, false);
    fx_ctx_set_training(ctx, false);
    fx_tensor *x = fx_tensor_from_host(ctx, FX_F32, 2, TU_SHAPE(100, 2), d.x + 600);
    fx_tensor *out = NULL;
    char err[256];
    assert_int_equal(fxg_forward(g, ctx, &x, &out, err, sizeof err), 0);
    float *v = tu_values(out);
    int ok = 0;
    for (int i = 0; i < 100; i++)
        ok += (v[i] > 0) == (d.y[300 + i] == 1);
    free(v);
    fx_ctx_free(ctx);
    assert_true(ok >= 95);
    assert_true(fabs(metric_of(o.final, "val_accuracy") - ok / 100.0) < 1e-9);
    outcome_free(&o);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* Validation that disagrees with training: val_loss is best after the first
 * epoch and then worsens, so patience 2 stops after epoch 3 with the
 * weights of epoch 1. */
static void test_early_stopping_returns_best(void **state)
{
    (void)state;
    data_t d, v;
    linear_data(&d, 256, 6, false);
    linear_data(&v, 64, 7, true);
    mspec *s = linear_spec();
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "y", "mse", "t", 0);
    spec_edit(j, "optimizer.kind=sgd; optimizer.lr=0.02");
    j->epochs = 30;
    job_early(j, "", 2, 0);
    hookrec h;
    fxt_hooks hk = hooks_for(&h);
    fxg_graph *g = build(s, 8);
    outcome o = run(j, g, &d.c, &v.c, NULL, 0, &hk);
    expect_done(&o);
    assert_int_equal(h.evals, 3);
    assert_int_equal(o.final->epoch, 3);
    assert_int_equal(o.final->step, 3 * 8);

    /* the same job for one epoch and no early stopping: the same weights */
    fxg_free(g);
    g = build(s, 8);
    j->epochs = 1;
    fluxion__v1__early_stopping__free_unpacked(j->early_stopping, NULL);
    j->early_stopping = NULL;
    outcome one = run(j, g, &d.c, &v.c, NULL, 0, NULL);
    expect_done(&one);
    assert_int_equal(one.len, o.len);
    assert_memory_equal(one.w, o.w, o.len);

    outcome_free(&o);
    outcome_free(&one);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
    data_free(&v);
}

static void test_early_stopping_accuracy_min_delta(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 400, 9);
    mspec *s = mlp_spec();
    fxg_graph *g = build(s, 3);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "logits", "cross_entropy", "y64", 0); /* i64 class indices */
    job_metric(j, "accuracy:logits");
    j->epochs = 50;
    j->validation_split = 0.25;
    /* accuracy is at most 1: an improvement of 2 never comes */
    job_early(j, "val_accuracy:logits", 3, 2.0);
    hookrec h;
    fxt_hooks hk = hooks_for(&h);
    outcome o = run(j, g, &d.c, NULL, NULL, 0, &hk);
    expect_done(&o);
    assert_int_equal(h.evals, 4);
    assert_int_equal(o.final->epoch, 4);
    outcome_free(&o);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* The resume fixture: shuffle, dropout, batch norm, validation, metrics,
 * early stopping tracking the best weights (patience never reached),
 * momentum, warmup + step schedule, clipping, checkpoints every 7 steps;
 * 10 steps per epoch, 45 steps. */
static jspec *resume_job(void)
{
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "logits", "cross_entropy", "y", 0);
    job_metric(j, "accuracy");
    spec_edit(j, "optimizer.kind=adamw; schedule.kind=step; schedule.step_size=9;"
                 "schedule.gamma=0.5; schedule.warmup_steps=4; clip.max_norm=1.0");
    j->batch_size = 30; /* 300 training samples: 10 steps per epoch */
    j->steps = 45;
    j->shuffle = true;
    j->validation_split = 0.25;
    j->eval_every_steps = 6;
    j->checkpoint_every_steps = 7;
    job_early(j, "val_loss", 1000, 0);
    return j;
}

static void test_determinism_and_resume(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 400, 11);
    mspec *s = bn_dropout_spec();
    jspec *j = resume_job();

    hookrec h1, h2, h3, h4;
    fxt_hooks k1 = hooks_for(&h1), k2 = hooks_for(&h2), k3 = hooks_for(&h3), k4 = hooks_for(&h4);
    fxg_graph *g1 = build(s, 21), *g2 = build(s, 21);
    outcome a = run(j, g1, &d.c, NULL, NULL, 0, &k1);
    outcome b = run(j, g2, &d.c, NULL, NULL, 0, &k2);
    expect_done(&a);
    expect_done(&b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.w, b.w, a.len);
    /* checkpoints at 7, 14, ..., 42 and they are identical run to run */
    assert_int_equal(h1.ckpts, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(h1.ckpt_step[i], 7 * (i + 1));
        assert_int_equal(h1.ckpt_len[i], h2.ckpt_len[i]);
        assert_memory_equal(h1.ckpt[i], h2.ckpt[i], h1.ckpt_len[i]);
    }
    /* another seed gives other weights (the seed is used) */
    fxg_graph *g3 = build(s, 21);
    j->seed = 8;
    outcome c = run(j, g3, &d.c, NULL, NULL, 0, NULL);
    expect_done(&c);
    assert_true(c.len != a.len || memcmp(c.w, a.w, a.len) != 0);
    outcome_free(&c);
    fxg_free(g3);
    j->seed = 7;

    /* stopped at the 24th poll (after step 23, mid-epoch, between the
     * evaluations at 18 and 24): a checkpoint of step 23, then STOPPED */
    fxg_graph *g4 = build(s, 21);
    h3.stop_at_poll = 24;
    outcome st = run(j, g4, &d.c, NULL, NULL, 0, &k3);
    assert_int_equal(st.res, FXT_STOPPED);
    assert_int_equal(h3.ckpts, 4);
    assert_int_equal(h3.ckpt_step[3], 23);
    /* resumed into a graph with other initial weights: the same end */
    fxg_graph *g5 = build(s, 99);
    outcome r = run(j, g5, &d.c, NULL, h3.ckpt[3], h3.ckpt_len[3], &k4);
    expect_done(&r);
    assert_int_equal(r.len, a.len);
    assert_memory_equal(r.w, a.w, a.len);
    /* and records the same loss and metrics */
    assert_true(r.final->train_loss == a.final->train_loss);
    assert_true(r.final->val_loss == a.final->val_loss);
    assert_true(metric_of(r.final, "accuracy") == metric_of(a.final, "accuracy"));
    /* later checkpoints of the resumed run equal the uninterrupted ones */
    assert_int_equal(h4.ckpts, 3);
    assert_int_equal(h4.ckpt_step[0], 28);
    assert_memory_equal(h4.ckpt[0], h1.ckpt[3], h1.ckpt_len[3]);
    /* and from periodic checkpoints: step 14 (mid-epoch, after the
     * evaluation at 12) and step 21 (just after the epoch end at 20) */
    for (int k = 1; k <= 2; k++) {
        fxg_graph *g6 = build(s, 5);
        outcome r2 = run(j, g6, &d.c, NULL, h1.ckpt[k], h1.ckpt_len[k], NULL);
        expect_done(&r2);
        assert_memory_equal(r2.w, a.w, a.len);
        outcome_free(&r2);
        fxg_free(g6);
    }
    outcome_free(&a);
    outcome_free(&b);
    outcome_free(&st);
    outcome_free(&r);
    hooks_free(&h1);
    hooks_free(&h2);
    hooks_free(&h3);
    hooks_free(&h4);
    fxg_free(g1);
    fxg_free(g2);
    fxg_free(g4);
    fxg_free(g5);
    job_free(j);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* Defect 6: a checkpoint that cannot be stored (a full disk) does not fail
 * the run. The run goes on (the previous checkpoint stays the one to resume
 * from), the next interval tries again, and the weights and later
 * checkpoints are those of a run where nothing failed; only
 * max_checkpoint_failures failures in a row fail it, with the status
 * (RESOURCE_EXHAUSTED) and the last stored step in the message. */
static void test_checkpoint_failures_are_retried(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 400, 11);
    mspec *s = bn_dropout_spec();
    jspec *j = resume_job(); /* checkpoints at 7, 14, ..., 42 of 45 steps */
    hookrec h1, h2, h3;
    fxt_hooks k1 = hooks_for(&h1), k2 = hooks_for(&h2), k3 = hooks_for(&h3);
    fxg_graph *g1 = build(s, 21), *g2 = build(s, 21), *g3 = build(s, 21);
    outcome a = run(j, g1, &d.c, NULL, NULL, 0, &k1);
    expect_done(&a);
    assert_int_equal(h1.ckpts, 6);

    h2.fail_first = 2; /* the disk is full at steps 14 and 21 */
    h2.fail_last = 3;
    outcome b = run(j, g2, &d.c, NULL, NULL, 0, &k2);
    expect_done(&b);
    assert_int_equal(h2.ckpt_calls, 6);
    assert_int_equal(h2.ckpts, 4);
    static const int64_t stored[4] = {7, 28, 35, 42};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(h2.ckpt_step[i], stored[i]);
        int k = (int)(stored[i] / 7) - 1;
        assert_int_equal(h2.ckpt_len[i], h1.ckpt_len[k]);
        assert_memory_equal(h2.ckpt[i], h1.ckpt[k], h1.ckpt_len[k]);
    }
    assert_int_equal(b.len, a.len);
    assert_memory_equal(b.w, a.w, a.len);
    assert_true(b.final->train_loss == a.final->train_loss);

    k3.max_checkpoint_failures = 3; /* full from step 14 on: 14, 21, 28 */
    h3.fail_first = 2;
    outcome c = run(j, g3, &d.c, NULL, NULL, 0, &k3);
    assert_int_equal(c.res, FXT_FAILED);
    print_message("%s\n", c.err);
    assert_int_equal(h3.ckpt_calls, 4);
    assert_non_null(strstr(c.err, "checkpoint at step 28: RESOURCE_EXHAUSTED: disk full (test)"));
    assert_non_null(strstr(c.err, "3 checkpoints in a row"));
    assert_non_null(strstr(c.err, "step 7"));
    outcome_free(&a);
    outcome_free(&b);
    hooks_free(&h1);
    hooks_free(&h2);
    hooks_free(&h3);
    fxg_free(g1);
    fxg_free(g2);
    fxg_free(g3);
    job_free(j);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* Batch norm running statistics are in the checkpoint and the result. */
static void test_buffers_checkpointed(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 400, 11);
    mspec *s = bn_dropout_spec();
    jspec *j = resume_job();
    hookrec h;
    fxt_hooks k = hooks_for(&h);
    fxg_graph *g = build(s, 21);
    outcome a = run(j, g, &d.c, NULL, NULL, 0, &k);
    expect_done(&a);
    fx_params p;
    fx_params_init(&p);
    char err[256];
    assert_int_equal(fx_safetensors_decode(h.ckpt[0], h.ckpt_len[0], &p, err, sizeof err), FX_OK);
    const char *need[] = {"model/bn.running_mean", "model/bn.running_var", "model/fc1.weight",
                          "optim/fc1.weight.m",    "optim/fc1.weight.v",   "best/fc2.bias",
                          "trainer/state",         "trainer/perm"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        if (!fx_params_find(&p, need[i]))
            fail_msg("checkpoint lacks %s", need[i]);
    /* the running mean moved away from its initial zeros */
    float *rm = tu_values(fx_params_find(&p, "model/bn.running_mean"));
    double sum = 0;
    for (int i = 0; i < 16; i++)
        sum += fabs(rm[i]);
    assert_true(sum > 1e-3);
    free(rm);
    fx_params_free_tensors(&p);
    assert_true(fabs(weight_at(a.w, a.len, "bn.running_var", 0) - 1) > 1e-4);
    outcome_free(&a);
    hooks_free(&h);
    fxg_free(g);
    job_free(j);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

static void test_stop_at_once(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 100, 1);
    mspec *s = mlp_spec();
    fxg_graph *g = build(s, 3);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "logits", "cross_entropy", "y", 0);
    j->epochs = 2;
    hookrec h;
    fxt_hooks k = hooks_for(&h);
    h.stop_at_poll = 1;
    outcome o = run(j, g, &d.c, NULL, NULL, 0, &k);
    assert_int_equal(o.res, FXT_STOPPED);
    assert_int_equal(h.ckpts, 1);
    assert_int_equal(h.ckpt_step[0], 0);
    /* a stop whose checkpoint cannot be stored still stops: the run
     * resumes from the checkpoint before (defect 6: it failed the job, and
     * the jobs module then deleted that checkpoint) */
    hookrec h2;
    fxt_hooks k2 = hooks_for(&h2);
    h2.stop_at_poll = 3;
    h2.fail_first = 1;
    outcome f = run(j, g, &d.c, NULL, NULL, 0, &k2);
    assert_int_equal(f.res, FXT_STOPPED);
    assert_int_equal(h2.ckpt_calls, 1);
    assert_int_equal(h2.ckpts, 0);
    hooks_free(&h);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

static void test_bad_resume(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 100, 1);
    mspec *s = mlp_spec();
    fxg_graph *g = build(s, 3);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "logits", "cross_entropy", "y", 0);
    j->epochs = 2;
    j->checkpoint_every_steps = 2;
    hookrec h;
    fxt_hooks k = hooks_for(&h);
    outcome o = run(j, g, &d.c, NULL, NULL, 0, &k);
    expect_done(&o);
    assert_true(h.ckpts >= 1);

    outcome r = run(j, g, &d.c, NULL, "garbage", 7, NULL);
    assert_int_equal(r.res, FXT_FAILED);
    assert_non_null(strstr(r.err, "resume:"));
    /* plain weights are not a checkpoint */
    r = run(j, g, &d.c, NULL, o.w, o.len, NULL);
    assert_int_equal(r.res, FXT_FAILED);
    assert_non_null(strstr(r.err, "trainer/state"));
    /* a checkpoint of another job (more steps) */
    j->epochs = 3;
    r = run(j, g, &d.c, NULL, h.ckpt[0], h.ckpt_len[0], NULL);
    assert_int_equal(r.res, FXT_FAILED);
    assert_non_null(strstr(r.err, "does not fit this job"));
    /* a checkpoint of another model */
    j->epochs = 2;
    mspec *s2 = two_heads_spec();
    fxg_graph *g2 = build(s2, 1);
    spec_edit(j, "losses[0].output=cls");
    r = run(j, g2, &d.c, NULL, h.ckpt[0], h.ckpt_len[0], NULL);
    assert_int_equal(r.res, FXT_FAILED);
    assert_non_null(strstr(r.err, "resume: "));
    assert_non_null(strstr(r.err, "model/"));
    fxg_free(g2);
    fluxion__v1__model_spec__free_unpacked(s2, NULL);
    outcome_free(&o);
    hooks_free(&h);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

static void test_non_finite_loss(void **state)
{
    (void)state;
    data_t d;
    linear_data(&d, 128, 2, false);
    mspec *s = linear_spec();
    fxg_graph *g = build(s, 1);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "y", "mse", "t", 0);
    spec_edit(j, "optimizer.kind=sgd; optimizer.lr=1e30");
    j->epochs = 5;
    outcome o = run(j, g, &d.c, NULL, NULL, 0, NULL);
    /* diverged: the run ends at once, done, its loss non-finite (the job's
     * promotion gate never serves such a result, docs/versions.md) */
    assert_int_equal(o.res, FXT_DONE);
    assert_non_null(o.final);
    assert_false(isfinite(o.final->train_loss));
    assert_true(o.final->step < o.final->total_steps);
    outcome_free(&o);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* The job's device (the jobs module resolved spec.device to it) and its
 * memory limit: a device not present and a limit under what a step holds
 * fail the run with a message naming the device and the sizes; a limit
 * with room changes nothing. */
static void test_device_and_memory_limit(void **state)
{
    (void)state;
    data_t d;
    linear_data(&d, 128, 2, false);
    mspec *s = linear_spec();
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "y", "mse", "t", 0);
    j->steps = 3;
    hookrec h;
    fxt_hooks hk = hooks_for(&h);
    hk.device = (fx_device){FX_DEV_CUDA, 63};
    fxg_graph *g = build(s, 1);
    outcome o = run(j, g, &d.c, NULL, NULL, 0, &hk);
    assert_int_equal(o.res, FXT_FAILED);
    assert_non_null(strstr(o.err, "cuda:63 is not available"));
    hooks_free(&h);
    fxg_free(g);

    hk = hooks_for(&h);
    hk.memory_limit_bytes = 4096; /* the weights fit; a step's arena does not */
    g = build(s, 1);
    o = run(j, g, &d.c, NULL, NULL, 0, &hk);
    assert_int_equal(o.res, FXT_FAILED);
    print_message("%s\n", o.err);
    assert_non_null(strstr(o.err, "step 1: "));
    assert_non_null(strstr(o.err, "on cpu: needs "));
    assert_non_null(strstr(o.err, "over its memory limit of 4096 bytes"));
    hooks_free(&h);
    fxg_free(g);

    /* the same run with room and without a limit: the same weights */
    outcome r[2];
    for (int k = 0; k < 2; k++) {
        hk = hooks_for(&h);
        hk.memory_limit_bytes = k ? 0 : 256u << 20;
        g = build(s, 1);
        r[k] = run(j, g, &d.c, NULL, NULL, 0, &hk);
        expect_done(&r[k]);
        hooks_free(&h);
        fxg_free(g);
    }
    assert_int_equal(r[0].len, r[1].len);
    assert_memory_equal(r[0].w, r[1].w, r[0].len);
    outcome_free(&r[0]);
    outcome_free(&r[1]);
    job_free(j);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* ------------------------------------------------------------- validation */

static void test_validate_errors(void **state)
{
    (void)state;
    data_t d;
    xor_data(&d, 100, 1);
    mspec *s = mlp_spec();
    fxg_graph *g = build(s, 3);
    /* One row per bad spec: the edits (spec_edit) from a valid spec, and
     * what the message must say. */
    static const struct {
        const char *edits, *want;
    } cases[] = {
        {"feeds[0].tensor=xx",
         "feeds[0].tensor: no column 'xx' in the dataset (columns: x, y, yf, reg, y64, yb)"},
        {"feeds[0].input=q", "feeds[0].input: no input 'q' in the model (inputs: x)"},
        {"feeds[1].input=x; feeds[1].tensor=x", "feeds[1].input: 'x' is already fed by feeds[0]"},
        {"feeds=[]", "feeds: model input 'x' is not fed"},
        {"feeds[0].tensor=y", "feeds[0].tensor: column 'y' is i32, input 'x' takes f32"},
        {"feeds[0].tensor=reg",
         "feeds[0].tensor: column 'reg' has samples of shape [1], input 'x' takes [-1,2]"},
        {"losses[0].kind=hinge", "losses[0].kind: 'hinge' is not one of mse, cross_entropy, "
                                 "cross_entropy_soft, bce_with_logits, ctc, output"},
        {"losses[0].output=z", "losses[0].output: no output 'z' in the model (outputs: logits)"},
        {"losses[0].target=q", "losses[0].target: no column 'q' in the dataset"},
        {"losses[0].target=yf",
         "losses[0].target: column 'yf' is f32; cross_entropy takes class indices"},
        {"losses[0].kind=mse", "losses[0].target: column 'y' is i32; mse takes f32 targets"},
        {"losses[0].kind=mse; losses[0].target=reg",
         "losses[0].target: column 'reg' has samples of shape [1]; mse on output 'logits'"},
        {"losses[0].weight=-1", "losses[0].weight: -1 must be >= 0"},
        {"optimizer.grad_noise_eta=-1", "optimizer.grad_noise_eta: -1 must be >= 0"},
        {"optimizer.grad_noise_gamma=-0.5", "optimizer.grad_noise_gamma: -0.5 must be >= 0"},
        {"losses=[]", "losses: at least one loss is needed"},
        {"metrics[0]=f1", "metrics[0]: 'f1' is not one of accuracy, accuracy:OUTPUT"},
        {"metrics[0]=accuracy:nope", "metrics[0]: no output 'nope' in the model"},
        {"metrics[0]=accuracy; metrics[1]=accuracy", "metrics[1]: 'accuracy' is listed twice"},
        {"losses[0].kind=mse; losses[0].target=yf; metrics[0]=accuracy",
         "metrics[0]: 'accuracy' needs an output with a cross_entropy"},
        {"optimizer.kind=lbfgs", "optimizer.kind: 'lbfgs' is not one of sgd, momentum"},
        {"optimizer.lr=-1", "optimizer: "},
        {"optimizer.beta1=1.5", "optimizer: "},
        {"optimizer.weight_decay=nan", "optimizer.weight_decay: nan is not a number"},
        {"schedule.kind=linear", "schedule.kind: 'linear' is not one of constant, step, cosine"},
        {"schedule.kind=step", "schedule.step_size: 0 must be > 0 for kind 'step'"},
        {"schedule.warmup_steps=-3", "schedule.warmup_steps: -3 must be >= 0"},
        {"clip.max_norm=-1", "clip.max_norm: -1 must be >= 0"},
        {"batch_size=-4", "batch_size: -4 must be > 0"},
        {"validation_split=1", "validation_split: 1 is not in [0, 1)"},
        {"validation_split=-0.1", "validation_split: -0.1 is not in [0, 1)"},
        {"validation_split=0.001", "validation_split: 0.001 of 100 samples holds out none"},
        {"epochs=0; steps=0", "epochs, steps: neither is set"},
        {"epochs=-1", "epochs: -1 must be >= 0"},
        {"epochs=4611686018427387903", "epochs: 4611686018427387903 is too many"},
        {"eval_every_steps=-1", "eval_every_steps: -1 must be >= 0"},
        {"checkpoint_every_steps=-5", "checkpoint_every_steps: -5 must be >= 0"},
        {"early_stopping.metric=f1; early_stopping.patience=3",
         "early_stopping.metric: 'f1' is not reported"},
        {"early_stopping.patience=-1", "early_stopping.patience: -1 must be >= 0"},
        {"early_stopping.patience=2; early_stopping.min_delta=-0.5",
         "early_stopping.min_delta: -0.5 must be >= 0"},
        {"validation_split=0; early_stopping.metric=val_loss; early_stopping.patience=2",
         "early_stopping.metric: 'val_loss' needs validation data"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        jspec *j = job_new();
        job_feed(j, "x", "x");
        job_loss(j, "logits", "cross_entropy", "y", 0);
        j->epochs = 1;
        j->validation_split = 0.2;
        char err[512] = "";
        assert_int_equal(fxt_validate(j, g, &d.c, NULL, err, sizeof err), 0);
        spec_edit(j, cases[i].edits);
        int rc = fxt_validate(j, g, &d.c, NULL, err, sizeof err);
        if (rc != FXS_INVALID_ARGUMENT || !strstr(err, cases[i].want))
            fail_msg("case %zu (%s): rc %d, '%s', expected '%s'", i, cases[i].edits, rc, err,
                     cases[i].want);
        /* fxt_run refuses the same spec with the same message */
        outcome o = run(j, g, &d.c, NULL, NULL, 0, NULL);
        assert_int_equal(o.res, FXT_FAILED);
        assert_string_equal(o.err, err);
        job_free(j);
    }
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
}

/* Validation datasets: columns must exist there too and match; exclusive
 * with validation_split. */
static void test_validate_val_dataset(void **state)
{
    (void)state;
    data_t d, v;
    xor_data(&d, 100, 1);
    xor_data(&v, 40, 2);
    mspec *s = mlp_spec();
    fxg_graph *g = build(s, 3);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    job_loss(j, "logits", "cross_entropy", "y", 0);
    j->epochs = 1;
    char err[512] = "";
    assert_int_equal(fxt_validate(j, g, &d.c, &v.c, err, sizeof err), 0);
    j->validation_split = 0.2;
    spec_edit(j, "validation_dataset=vd");
    assert_int_equal(fxt_validate(j, g, &d.c, &v.c, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "validation_split: 0.2 and a validation dataset ('vd') exclude"));
    j->validation_split = 0;
    assert_int_equal(fxt_validate(j, g, &d.c, NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "validation_dataset: 'vd' was not given to the trainer"));
    assert_int_equal(fxt_validate(j, g, &d.c, &v.c, err, sizeof err), 0);
    v.cols[1].name = "label";
    assert_int_equal(fxt_validate(j, g, &d.c, &v.c, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "losses[0].target: no column 'y' in the validation dataset"));
    v.cols[1].name = "y";
    v.cols[0].dtype = FX_I64;
    assert_int_equal(fxt_validate(j, g, &d.c, &v.c, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "feeds[0].tensor: column 'x' of the validation dataset is i64"));
    v.cols[0].dtype = FX_F32;
    fxds_columns empty = {0, 6, d.cols};
    assert_int_equal(fxt_validate(j, g, &empty, NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "dataset: it has no samples"));
    assert_int_equal(fxt_validate(NULL, g, &d.c, NULL, err, sizeof err), FXS_INVALID_ARGUMENT);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    data_free(&d);
    data_free(&v);
}

/* ------------------------------------------------------------------- ctc */

enum { CTC_T = 6, CTC_F = 4, CTC_S = 2 };

typedef struct {
    fxds_column cols[4];
    fxds_columns c;
    float *x;
    int64_t *tg, *tl, *il;
} ctc_data;

/* Sequences of 1 or 2 labels in 1..3 (0 is the blank), each label shown
 * as a one-hot of F = 4 features for 2 of the T = 6 steps with blanks
 * between (feature 0) and noise. Columns x f32 [6,4], tg i64 [2] (padded
 * with 0), tl i64 [] (target lengths), il i64 [] (input lengths, all 6). */
static void ctc_make(ctc_data *d, int64_t n, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    fx_rng *rng = fx_rng_create(seed);
    d->x = xcalloc((size_t)n * CTC_T * CTC_F, sizeof *d->x);
    d->tg = xcalloc((size_t)n * CTC_S, sizeof *d->tg);
    d->tl = xcalloc((size_t)n, sizeof *d->tl);
    d->il = xcalloc((size_t)n, sizeof *d->il);
    for (int64_t i = 0; i < n; i++) {
        int64_t len = 1 + (int64_t)(fx_rng_u64(rng) & 1);
        d->tl[i] = len;
        d->il[i] = CTC_T;
        int shown[CTC_T] = {0};
        for (int64_t k = 0; k < len; k++) {
            d->tg[i * CTC_S + k] = 1 + (int64_t)(fx_rng_u64(rng) % 3);
            shown[3 * k] = shown[3 * k + 1] = (int)d->tg[i * CTC_S + k];
        }
        for (int t = 0; t < CTC_T; t++)
            for (int f = 0; f < CTC_F; f++)
                d->x[(i * CTC_T + t) * CTC_F + f] =
                    (float)((f == shown[t] ? 1.0 : 0.0) + 0.1 * fx_rng_normal(rng));
    }
    fx_rng_free(rng);
    d->cols[0] = (fxds_column){"x", FX_F32, 2, {CTC_T, CTC_F}, d->x};
    d->cols[1] = (fxds_column){"tg", FX_I64, 1, {CTC_S}, d->tg};
    d->cols[2] = (fxds_column){"tl", FX_I64, 0, {0}, d->tl};
    d->cols[3] = (fxds_column){"il", FX_I64, 0, {0}, d->il};
    d->c = (fxds_columns){n, 4, d->cols};
}

static void ctc_free(ctc_data *d)
{
    free(d->x);
    free(d->tg);
    free(d->tl);
    free(d->il);
}

static void m_input_shape(mspec *s, const char *name, Fluxion__V1__DataType dt, int ndim,
                          const int64_t *shape)
{
    Fluxion__V1__TensorSpec *t = xcalloc(1, sizeof *t);
    fluxion__v1__tensor_spec__init(t);
    t->name = xstrdup(name);
    t->dtype = dt;
    t->n_shape = (size_t)ndim;
    t->shape = xcalloc((size_t)ndim + 1, sizeof *t->shape);
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    *GROW(s->inputs, s->n_inputs) = t;
}

/* x [N,6,4] -> dense 16 tanh -> dense 4 -> log_softmax = "lp" [N,6,4]; with
 * in_graph, also inputs tg, il, tl and the output "loss", the mean ctc loss
 * computed by the model (a ctc_loss node on lp transposed to [T,N,C]). */
static mspec *ctc_spec(bool in_graph)
{
    mspec *s = mspec_new();
    m_input_shape(s, "x", FLUXION__V1__DATA_TYPE__FP32, 3, (int64_t[]){-1, CTC_T, CTC_F});
    m_dense(s, "fc1", "x", CTC_F, 16, "tanh");
    m_dense(s, "fc2", "fc1", 16, CTC_F, NULL);
    Fluxion__V1__Node *ls = m_node(s, "lp", "log_softmax", "fc2");
    *GROW(ls->attrs, ls->n_attrs) = attr("axis", -1, 0, NULL);
    m_output(s, "lp", "lp");
    if (in_graph) {
        m_input_shape(s, "tg", FLUXION__V1__DATA_TYPE__INT64, 2, (int64_t[]){-1, CTC_S});
        m_input_shape(s, "il", FLUXION__V1__DATA_TYPE__INT64, 1, (int64_t[]){-1});
        m_input_shape(s, "tl", FLUXION__V1__DATA_TYPE__INT64, 1, (int64_t[]){-1});
        Fluxion__V1__Node *tr = m_node(s, "tnc", "transpose", "lp");
        *GROW(tr->attrs, tr->n_attrs) = attr("dim0", 0, 0, NULL);
        *GROW(tr->attrs, tr->n_attrs) = attr("dim1", 1, 0, NULL);
        Fluxion__V1__Node *c = m_node(s, "ctc", "ctc_loss", "tnc");
        *GROW(c->inputs, c->n_inputs) = xstrdup("tg");
        *GROW(c->inputs, c->n_inputs) = xstrdup("il");
        *GROW(c->inputs, c->n_inputs) = xstrdup("tl");
        m_output(s, "loss", "ctc");
    }
    return s;
}

/* The final training loss of a ctc job of so many epochs: kind "ctc" on
 * "lp", or (in_graph) kind "output" on the model's own loss. */
static double ctc_final_loss(bool in_graph, int64_t epochs, const ctc_data *d)
{
    mspec *s = ctc_spec(in_graph);
    fxg_graph *g = build(s, 5);
    jspec *j = job_new();
    job_feed(j, "x", "x");
    if (in_graph) {
        job_feed(j, "tg", "tg");
        job_feed(j, "il", "il");
        job_feed(j, "tl", "tl");
        job_loss(j, "loss", "output", "", 0);
    } else {
        job_loss(j, "lp", "ctc", "tg", 0);
        spec_edit(j, "losses[0].target_lengths=tl");
    }
    j->epochs = epochs;
    j->batch_size = 16;
    j->shuffle = true;
    j->validation_split = 0.25;
    hookrec h;
    fxt_hooks hk = hooks_for(&h);
    outcome o = run(j, g, &d->c, NULL, NULL, 0, &hk);
    expect_done(&o);
    double loss = o.final->train_loss;
    double vloss = o.final->val_loss;
    assert_true(isfinite(loss) && loss > 0 && isfinite(vloss) && vloss > 0);
    outcome_free(&o);
    hooks_free(&h);
    job_free(j);
    fxg_free(g);
    fluxion__v1__model_spec__free_unpacked(s, NULL);
    return loss;
}

/* A ctc job trains: the loss of 40 epochs is well under that of 1; and a
 * model that computes its own ctc loss trains the same way with the output
 * named as the loss (kind "output"): the same weights from the same seed,
 * so the same losses. */
static void test_ctc_and_output_loss(void **state)
{
    (void)state;
    ctc_data d;
    ctc_make(&d, 128, 21);
    double first = ctc_final_loss(false, 1, &d), last = ctc_final_loss(false, 40, &d);
    if (!(last < 0.3 * first))
        fail_msg("ctc: loss %g after 40 epochs, %g after 1", last, first);
    double g_first = ctc_final_loss(true, 1, &d), g_last = ctc_final_loss(true, 40, &d);
    if (!(g_last < 0.3 * g_first))
        fail_msg("output loss: %g after 40 epochs, %g after 1", g_last, g_first);
    assert_true(fabs(g_first - first) <= 1e-4 * first);
    assert_true(fabs(g_last - last) <= 1e-3 * first);
    ctc_free(&d);
}

/* The ctc and output kinds' fields are checked, naming them. */
static void test_ctc_validate_errors(void **state)
{
    (void)state;
    ctc_data d;
    ctc_make(&d, 16, 3);
    static const struct {
        bool in_graph;
        const char *edits, *want;
    } cases[] = {
        {false, "losses[0].target_lengths=", "losses[0].target_lengths: ctc needs a dataset tensor"},
        {false, "losses[0].target_lengths=x",
         "losses[0].target_lengths: column 'x' must hold one integer"},
        {false, "losses[0].input_lengths=q", "losses[0].input_lengths: no column 'q'"},
        {false, "losses[0].target=tl", "losses[0].target: column 'tl' must hold padded integer"},
        {false, "losses[0].blank=4", "losses[0].blank: 4 is not a class of output 'lp' (C = 4)"},
        {false, "losses[0].kind=mse; losses[0].blank=1",
         "losses[0]: target_lengths, input_lengths and blank are for kind 'ctc' only"},
        {false, "losses[0].kind=output; losses[0].target_lengths=",
         "losses[0].output: output 'lp' has shape [-1,6,4]; kind 'output' takes a scalar"},
        {true, "losses[0].target=tg", "losses[0].target: 'tg' given, but kind 'output' takes no"},
        {true, "losses[0].kind=ctc", "losses[0].output: output 'loss' has shape []; ctc takes"},
        {true, "metrics[0]=accuracy", "metrics[0]: 'accuracy' needs an output with a"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        mspec *s = ctc_spec(cases[k].in_graph);
        fxg_graph *g = build(s, 5);
        jspec *j = job_new();
        j->epochs = 1;
        job_feed(j, "x", "x");
        if (cases[k].in_graph) {
            job_feed(j, "tg", "tg");
            job_feed(j, "il", "il");
            job_feed(j, "tl", "tl");
            job_loss(j, "loss", "output", "", 0);
        } else {
            job_loss(j, "lp", "ctc", "tg", 0);
            spec_edit(j, "losses[0].target_lengths=tl");
        }
        char err[512] = "";
        assert_int_equal(fxt_validate(j, g, &d.c, NULL, err, sizeof err), 0);
        spec_edit(j, cases[k].edits);
        int rc = fxt_validate(j, g, &d.c, NULL, err, sizeof err);
        if (rc != FXS_INVALID_ARGUMENT || !strstr(err, cases[k].want))
            fail_msg("case %zu (%s): rc %d, '%s', want '%s'", k, cases[k].edits, rc, err,
                     cases[k].want);
        job_free(j);
        fxg_free(g);
        fluxion__v1__model_spec__free_unpacked(s, NULL);
    }
    ctc_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classification_reaches_accuracy),
        cmocka_unit_test(test_regression_mse),
        cmocka_unit_test(test_two_outputs_weighted_losses),
        cmocka_unit_test(test_recorded_loss_is_the_epoch_mean),
        cmocka_unit_test(test_bce_accuracy),
        cmocka_unit_test(test_early_stopping_returns_best),
        cmocka_unit_test(test_early_stopping_accuracy_min_delta),
        cmocka_unit_test(test_determinism_and_resume),
        cmocka_unit_test(test_checkpoint_failures_are_retried),
        cmocka_unit_test(test_buffers_checkpointed),
        cmocka_unit_test(test_stop_at_once),
        cmocka_unit_test(test_bad_resume),
        cmocka_unit_test(test_non_finite_loss),
        cmocka_unit_test(test_device_and_memory_limit),
        cmocka_unit_test(test_yield_hook_every_step),
        cmocka_unit_test(test_validate_errors),
        cmocka_unit_test(test_validate_val_dataset),
        cmocka_unit_test(test_ctc_and_output_loss),
        cmocka_unit_test(test_ctc_validate_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
