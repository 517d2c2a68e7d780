/* test_graph.c - models built from a ModelSpec (server/graph.c).
 *
 * Forwards of representative specs (MLP, CNN with batch norm and pooling,
 * LSTM with lengths, a residual block, two heads, split outputs, attention)
 * are compared with the same computation written directly against the
 * engine with the graph's own (randomised) weights; every validation error
 * must name the node (or input/output) at fault; weights round-trip through
 * safetensors and loading is strict and all-or-nothing; 4 threads forward
 * concurrently and match serial results.
 *
 * `test_graph --export DIR` writes, per model of check_graph_torch.py, the
 * weights (DIR/<model>.weights.safetensors) and the inputs and outputs
 * (DIR/<model>.io.safetensors) for PyTorch to recompute. */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/graph.h"
#include "models/graph_internal.h" /* the op table, for random specs */

/* ------------------------------------------------------------ spec builder */

typedef Fluxion__V1__ModelSpec spec_t;
typedef Fluxion__V1__Node__AttrsEntry attr_t;

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    assert_non_null(p);
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

#define GROW(arr, n) \
    ((arr) = realloc((arr), ((n) + 1) * sizeof *(arr)), assert_non_null(arr), &(arr)[(n)++])

static spec_t *spec_new(void)
{
    spec_t *s = xcalloc(1, sizeof *s);
    fluxion__v1__model_spec__init(s);
    return s;
}

static void spec_free(spec_t *s) { fluxion__v1__model_spec__free_unpacked(s, NULL); }

/* dims: ndim values, -1 for any size. */
static void input(spec_t *s, const char *name, Fluxion__V1__DataType dt, int ndim, ...)
{
    Fluxion__V1__TensorSpec *t = xcalloc(1, sizeof *t);
    fluxion__v1__tensor_spec__init(t);
    t->name = xstrdup(name);
    t->dtype = dt;
    t->n_shape = (size_t)ndim;
    t->shape = xcalloc((size_t)ndim, sizeof *t->shape);
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++)
        t->shape[i] = va_arg(ap, int64_t);
    va_end(ap);
    *GROW(s->inputs, s->n_inputs) = t;
}

static attr_t *attr_new(const char *key)
{
    attr_t *e = xcalloc(1, sizeof *e);
    fluxion__v1__node__attrs_entry__init(e);
    e->key = xstrdup(key);
    e->value = xcalloc(1, sizeof *e->value);
    fluxion__v1__attr_value__init(e->value);
    return e;
}

static attr_t *I(const char *key, int64_t v)
{
    attr_t *e = attr_new(key);
    e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_I;
    e->value->i = v;
    return e;
}

static attr_t *F(const char *key, double v)
{
    attr_t *e = attr_new(key);
    e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_F;
    e->value->f = v;
    return e;
}

static attr_t *B(const char *key, bool v)
{
    attr_t *e = attr_new(key);
    e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_B;
    e->value->b = v;
    return e;
}

static attr_t *S(const char *key, const char *v)
{
    attr_t *e = attr_new(key);
    e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_S;
    e->value->s = xstrdup(v);
    return e;
}

/* A list of n ints. */
static attr_t *L(const char *key, int n, ...)
{
    attr_t *e = attr_new(key);
    e->value->value_case = FLUXION__V1__ATTR_VALUE__VALUE_INTS;
    e->value->ints = xcalloc(1, sizeof *e->value->ints);
    fluxion__v1__int_list__init(e->value->ints);
    e->value->ints->n_values = (size_t)n;
    e->value->ints->values = xcalloc((size_t)n, sizeof(int64_t));
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        e->value->ints->values[i] = va_arg(ap, int64_t);
    va_end(ap);
    return e;
}

/* A node: inputs comma-separated ("" for none), then attributes, NULL. */
static Fluxion__V1__Node *node(spec_t *s, const char *name, const char *op, const char *inputs,
                               ...)
{
    Fluxion__V1__Node *n = xcalloc(1, sizeof *n);
    fluxion__v1__node__init(n);
    n->name = xstrdup(name);
    n->op = xstrdup(op);
    char *list = xstrdup(inputs), *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        *GROW(n->inputs, n->n_inputs) = xstrdup(tok);
    free(list);
    va_list ap;
    va_start(ap, inputs);
    for (attr_t *a; (a = va_arg(ap, attr_t *));)
        *GROW(n->attrs, n->n_attrs) = a;
    va_end(ap);
    *GROW(s->nodes, s->n_nodes) = n;
    return n;
}

static void output(spec_t *s, const char *name, const char *source)
{
    Fluxion__V1__OutputSpec *o = xcalloc(1, sizeof *o);
    fluxion__v1__output_spec__init(o);
    o->name = xstrdup(name);
    o->source = xstrdup(source);
    *GROW(s->outputs, s->n_outputs) = o;
}

#define FP32 FLUXION__V1__DATA_TYPE__FP32
#define INT32 FLUXION__V1__DATA_TYPE__INT32
#define INT64 FLUXION__V1__DATA_TYPE__INT64
#define D(...) __VA_ARGS__ /* dims are int64_t varargs */
#define N64(v) ((int64_t)(v))

/* ----------------------------------------------------------------- models */

static spec_t *mlp_spec(void)
{
    spec_t *s = spec_new();
    input(s, "x", FP32, 2, N64(-1), N64(4));
    node(s, "fc1", "dense", "x", I("in_features", 4), I("out_features", 8),
         S("activation", "relu"), NULL);
    node(s, "fc2", "dense", "fc1", I("in_features", 8), I("out_features", 3), NULL);
    output(s, "y", "fc2");
    return s;
}

/* conv (same padding) -> bn -> relu -> maxpool -> conv (stride [1,2],
 * no bias) -> avgpool -> flatten -> dense. */
static spec_t *cnn_spec(void)
{
    spec_t *s = spec_new();
    input(s, "img", FP32, 4, N64(-1), N64(2), N64(8), N64(8));
    node(s, "conv1", "conv2d", "img", I("in_channels", 2), I("out_channels", 4),
         I("kernel_size", 3), I("padding", 1), NULL);
    node(s, "bn1", "batchnorm2d", "conv1", I("num_features", 4), NULL);
    node(s, "act1", "activation", "bn1", S("activation", "relu"), NULL);
    node(s, "pool1", "maxpool2d", "act1", I("kernel_size", 2), NULL);
    node(s, "conv2", "conv2d", "pool1", I("in_channels", 4), I("out_channels", 6),
         L("kernel_size", 2, N64(3), N64(3)), L("stride", 2, N64(1), N64(2)),
         I("padding", 1), B("bias", false), NULL);
    node(s, "pool2", "avgpool2d", "conv2", I("kernel_size", 2), I("stride", 1), NULL);
    node(s, "flat", "flatten", "pool2", NULL);
    node(s, "fc", "dense", "flat", I("in_features", 18), I("out_features", 5), NULL);
    output(s, "logits", "fc");
    return s;
}

/* A 2-layer bidirectional LSTM over padded sequences with their lengths. */
static spec_t *lstm_spec(void)
{
    spec_t *s = spec_new();
    input(s, "x", FP32, 3, N64(-1), N64(-1), N64(3));
    input(s, "len", INT32, 1, N64(-1));
    node(s, "lstm", "lstm", "x,len", I("input_size", 3), I("hidden_size", 5),
         I("num_layers", 2), B("bidirectional", true), NULL);
    output(s, "out", "lstm");
    output(s, "h_n", "lstm:1");
    output(s, "c_n", "lstm:2");
    return s;
}

/* y = relu(b(relu(a(x))) + x); two heads from it. */
static spec_t *residual_heads_spec(void)
{
    spec_t *s = spec_new();
    input(s, "x", FP32, 2, N64(-1), N64(6));
    node(s, "a", "dense", "x", I("in_features", 6), I("out_features", 6),
         S("activation", "relu"), NULL);
    node(s, "b", "dense", "a", I("in_features", 6), I("out_features", 6), NULL);
    node(s, "sum", "add", "b,x", NULL);
    node(s, "trunk", "relu", "sum", NULL);
    node(s, "value", "dense", "trunk", I("in_features", 6), I("out_features", 1),
         S("activation", "tanh"), NULL);
    node(s, "policy", "dense", "trunk", I("in_features", 6), I("out_features", 4), NULL);
    node(s, "probs", "softmax", "policy", I("axis", -1), NULL);
    output(s, "value", "value");
    output(s, "policy", "probs");
    return s;
}

/* split [2,4] along axis 1; the second part feeds a dense. */
static spec_t *split_spec(void)
{
    spec_t *s = spec_new();
    input(s, "x", FP32, 2, N64(-1), N64(6));
    node(s, "parts", "split", "x", I("axis", 1), L("sizes", 2, N64(2), N64(4)), NULL);
    node(s, "fc", "dense", "parts:1", I("in_features", 4), I("out_features", 2), NULL);
    output(s, "first", "parts");
    output(s, "y", "fc");
    return s;
}

/* Self-attention with key lengths, then layer norm. */
static spec_t *mha_spec(void)
{
    spec_t *s = spec_new();
    input(s, "x", FP32, 3, N64(-1), N64(-1), N64(8));
    input(s, "len", INT64, 1, N64(-1));
    node(s, "attn", "multihead_attention", "x,len", I("embed_dim", 8), I("num_heads", 2), NULL);
    node(s, "res", "add", "attn,x", NULL);
    node(s, "ln", "layernorm", "res", L("normalized_shape", 1, N64(8)), NULL);
    output(s, "y", "ln");
    return s;
}

/* Tokens -> embedding -> GRU -> conv1d over time -> mean; plus a loss. */
static spec_t *misc_spec(void)
{
    spec_t *s = spec_new();
    input(s, "tok", INT64, 2, N64(-1), N64(7));
    input(s, "target", FP32, 2, N64(-1), N64(4));
    node(s, "emb", "embedding", "tok", I("num_embeddings", 10), I("embedding_dim", 6),
         I("padding_idx", 0), NULL);
    node(s, "gru", "gru", "emb", I("input_size", 6), I("hidden_size", 5), NULL);
    node(s, "ncl", "transpose", "gru", I("dim0", 1), I("dim1", 2), NULL);
    node(s, "conv", "conv1d", "ncl", I("in_channels", 5), I("out_channels", 4),
         I("kernel_size", 3), I("padding", 1), NULL);
    node(s, "gn", "groupnorm", "conv", I("num_groups", 2), I("num_channels", 4), NULL);
    node(s, "pooled", "mean", "gn", L("axes", 1, N64(2)), NULL);
    node(s, "loss", "mse_loss", "pooled,target", NULL);
    output(s, "pooled", "pooled");
    output(s, "loss", "loss");
    return s;
}

/* ----------------------------------------------------------------- helpers */

static fxg_graph *create(spec_t *s, uint64_t seed)
{
    char err[512] = "";
    fxg_graph *g = NULL;
    int rc = fxg_build(s, &(fxg_options){ .seed = seed }, &g, err, sizeof err);
    if (rc)
        fail_msg("fxg_build: %s (%s)", err, fxs_status_name(rc));
    return g;
}

/* Overwrites every parameter with U(-0.5, 0.5) (running variances with
 * U(0.5, 1.5)): seeded zero biases and unit norms would hide mistakes. */
static void randomize(fxg_graph *g, uint64_t seed)
{
    fx_rng *rng = fx_rng_create(seed);
    const fx_params *p = fxg_params(g);
    for (int i = 0; i < p->count; i++) {
        fx_tensor *t = p->items[i].tensor;
        bool var = strstr(p->items[i].name, "running_var") != NULL;
        assert_int_equal(fx_init_tensor(t, FX_INIT_UNIFORM, var ? 0.5 : -0.5, var ? 1.5 : 0.5,
                                        rng), FX_OK);
    }
    fx_rng_free(rng);
}

static fx_tensor *param(fxg_graph *g, const char *name)
{
    fx_tensor *t = fx_params_find(fxg_params(g), name);
    if (!t)
        fail_msg("no parameter '%s'", name);
    return t;
}

/* An arena tensor of U(lo, hi) values. */
static fx_tensor *rand_in(fx_ctx *ctx, fx_rng *rng, int ndim, const int64_t *shape, double lo,
                          double hi)
{
    fx_tensor *p = tu_uniform(rng, ndim, shape, lo, hi);
    float *v = tu_values(p);
    fx_tensor *t = fx_tensor_from_host(ctx, FX_F32, ndim, shape, v);
    free(v);
    fx_tensor_free(p);
    return t;
}

static void forward_ok(fxg_graph *g, fx_ctx *ctx, fx_tensor **in, fx_tensor **out)
{
    char err[512] = "";
    if (fxg_forward(g, ctx, in, out, err, sizeof err))
        fail_msg("fxg_forward: %s", err);
}

static void assert_same(const fx_tensor *a, const fx_tensor *b, double tol)
{
    assert_non_null(a);
    assert_non_null(b);
    char s1[96], s2[96];
    if (!fx_tensor_same_shape(a, b))
        fail_msg("shapes differ: %s vs %s", fx_shape_str(a, s1, 96), fx_shape_str(b, s2, 96));
    float *x = tu_values(a), *y = tu_values(b);
    tu_assert_close(x, y, fx_tensor_numel(a), tol);
    free(x);
    free(y);
}

static void assert_info(const fxg_tensor_info *t, fx_dtype dt, int ndim, const int64_t *shape)
{
    assert_non_null(t);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        assert_int_equal(t->shape[d], shape[d]);
}

/* Copies the graph's parameters into a layer whose names are the same. */
static void copy_into(fxg_graph *g, fx_layer *l)
{
    fx_params p;
    fx_params_init(&p);
    assert_int_equal(fx_layer_collect_params(l, &p), FX_OK);
    for (int i = 0; i < p.count; i++)
        assert_int_equal(fx_tensor_copy(p.items[i].tensor, param(g, p.items[i].name)), FX_OK);
    fx_params_clear(&p);
}

static fx_ctx *eval_ctx(void)
{
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    assert_non_null(ctx);
    fx_ctx_set_grad(ctx, false);
    fx_ctx_set_training(ctx, false);
    return ctx;
}

/* ------------------------------------------------------- forward vs engine */

static void test_mlp(void **state)
{
    spec_t *s = mlp_spec();
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    assert_int_equal(fxg_num_inputs(g), 1);
    assert_int_equal(fxg_find_input(g, "x"), 0);
    assert_int_equal(fxg_find_output(g, "y"), 0);
    assert_int_equal(fxg_find_output(g, "nope"), -1);
    assert_info(fxg_output(g, 0), FX_F32, 2, TU_SHAPE(-1, 3));
    const fx_params *p = fxg_params(g);
    assert_int_equal(p->count, 4);
    assert_string_equal(p->items[0].name, "fc1.weight");
    assert_string_equal(p->items[3].name, "fc2.bias");
    assert_int_equal(param(g, "fc1.weight")->shape[0], 8);
    assert_int_equal(param(g, "fc1.weight")->shape[1], 4);
    assert_int_equal(fxg_num_trainable(g), 8 * 4 + 8 + 3 * 8 + 3);
    assert_int_equal(fxg_trainable_params(g)->count, 4);

    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = rand_in(ctx, rng, 2, TU_SHAPE(5, 4), -1, 1), *y;
    forward_ok(g, ctx, &x, &y);
    fx_tensor *h = fx_relu(ctx, fx_linear(ctx, x, param(g, "fc1.weight"), param(g, "fc1.bias")));
    assert_same(y, fx_linear(ctx, h, param(g, "fc2.weight"), param(g, "fc2.bias")), 1e-5);

    /* a serving graph drops its gradient buffers: same outputs, still
     * described as trainable */
    assert_non_null(param(g, "fc1.weight")->grad);
    fxg_drop_grads(g);
    for (int i = 0; i < p->count; i++) {
        assert_null(p->items[i].tensor->grad);
        assert_true(fxg_param_trainable(g, i));
    }
    fx_tensor *y2;
    forward_ok(g, ctx, &x, &y2);
    assert_same(y2, y, 0);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

static fx_tensor *cnn_direct(fxg_graph *g, fx_ctx *ctx, fx_tensor *x)
{
    fx_tensor *h = fx_conv2d(ctx, x, param(g, "conv1.weight"), param(g, "conv1.bias"),
                             &(fx_conv_opts){ .padding = 1 });
    h = fx_batch_norm(ctx, h, param(g, "bn1.weight"), param(g, "bn1.bias"),
                      param(g, "bn1.running_mean"), param(g, "bn1.running_var"), 0.1f, 1e-5f);
    h = fx_maxpool2d(ctx, fx_relu(ctx, h), &(fx_pool_opts){ .kernel = 2 });
    h = fx_conv2d(ctx, h, param(g, "conv2.weight"), NULL,
                  &(fx_conv_opts){ .stride_h = 1, .stride_w = 2, .padding = 1 });
    h = fx_flatten(ctx, fx_avgpool2d(ctx, h, &(fx_pool_opts){ .kernel = 2, .stride = 1 }));
    return fx_linear(ctx, h, param(g, "fc.weight"), param(g, "fc.bias"));
}

static void test_cnn(void **state)
{
    spec_t *s = cnn_spec();
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    assert_info(fxg_output(g, 0), FX_F32, 2, TU_SHAPE(-1, 5));
    assert_null(fx_params_find(fxg_params(g), "conv2.bias"));
    /* running statistics are listed but not trainable */
    const fx_params *p = fxg_params(g);
    for (int i = 0; i < p->count; i++)
        assert_int_equal(fxg_param_trainable(g, i), strstr(p->items[i].name, "running") == NULL);

    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = rand_in(ctx, rng, 4, TU_SHAPE(3, 2, 8, 8), -1, 1), *y;
    forward_ok(g, ctx, &x, &y);
    assert_same(y, cnn_direct(g, ctx, x), 1e-5);

    /* Training mode updates the running statistics (and only then). */
    float before[4], after[4];
    fx_tensor_to_host(param(g, "bn1.running_mean"), before, sizeof before);
    fx_ctx_set_training(ctx, true);
    forward_ok(g, ctx, &x, &y);
    fx_tensor_to_host(param(g, "bn1.running_mean"), after, sizeof after);
    assert_true(memcmp(before, after, sizeof before) != 0);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

static void test_lstm_lengths(void **state)
{
    spec_t *s = lstm_spec();
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    assert_info(fxg_output(g, 0), FX_F32, 3, TU_SHAPE(-1, -1, 10));
    assert_info(fxg_output(g, 1), FX_F32, 3, TU_SHAPE(4, -1, 5));
    assert_info(fxg_output(g, 2), FX_F32, 3, TU_SHAPE(4, -1, 5));
    assert_non_null(fx_params_find(fxg_params(g), "lstm.weight_ih_l1_reverse"));
    assert_int_equal(param(g, "lstm.weight_ih_l1")->shape[1], 10);

    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *in[2] = { rand_in(ctx, rng, 3, TU_SHAPE(3, 6, 3), -1, 1),
                         fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(3),
                                             (int32_t[]){ 6, 2, 4 }) };
    fx_tensor *out[3];
    forward_ok(g, ctx, in, out);
    fx_layer *l = fx_lstm_create("lstm", 3, 5, &(fx_recurrent_opts){ .num_layers = 2,
                                                                      .bidirectional = true },
                                 rng);
    copy_into(g, l);
    fx_tensor *hn, *cn, *y = fx_recurrent_forward(l, ctx, in[0], in[1], NULL, NULL, &hn, &cn);
    assert_same(out[0], y, 1e-5);
    assert_same(out[1], hn, 1e-5);
    assert_same(out[2], cn, 1e-5);
    fx_layer_free(l);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

static void test_residual_heads(void **state)
{
    spec_t *s = residual_heads_spec();
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    assert_int_equal(fxg_num_outputs(g), 2);
    assert_info(fxg_output(g, 0), FX_F32, 2, TU_SHAPE(-1, 1));
    assert_info(fxg_output(g, 1), FX_F32, 2, TU_SHAPE(-1, 4));
    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = rand_in(ctx, rng, 2, TU_SHAPE(4, 6), -1, 1), *out[2];
    forward_ok(g, ctx, &x, out);
    fx_tensor *a = fx_relu(ctx, fx_linear(ctx, x, param(g, "a.weight"), param(g, "a.bias")));
    fx_tensor *b = fx_linear(ctx, a, param(g, "b.weight"), param(g, "b.bias"));
    fx_tensor *t = fx_relu(ctx, fx_add(ctx, b, x));
    assert_same(out[0], fx_tanh(ctx, fx_linear(ctx, t, param(g, "value.weight"),
                                               param(g, "value.bias"))), 1e-5);
    assert_same(out[1], fx_softmax(ctx, fx_linear(ctx, t, param(g, "policy.weight"),
                                                  param(g, "policy.bias")), -1), 1e-5);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

static void test_split_outputs(void **state)
{
    spec_t *s = split_spec();
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    assert_info(fxg_output(g, 0), FX_F32, 2, TU_SHAPE(-1, 2));
    assert_info(fxg_output(g, 1), FX_F32, 2, TU_SHAPE(-1, 2));
    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = rand_in(ctx, rng, 2, TU_SHAPE(3, 6), -1, 1), *out[2];
    forward_ok(g, ctx, &x, out);
    assert_same(out[0], fx_slice(ctx, x, 1, 0, 2, 1), 0);
    fx_tensor *second = fx_slice(ctx, x, 1, 2, 6, 1);
    assert_same(out[1], fx_linear(ctx, second, param(g, "fc.weight"), param(g, "fc.bias")), 1e-5);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

static void test_attention(void **state)
{
    spec_t *s = mha_spec();
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    assert_info(fxg_output(g, 0), FX_F32, 3, TU_SHAPE(-1, -1, 8));
    assert_non_null(fx_params_find(fxg_params(g), "attn.out_proj.weight"));
    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *in[2] = { rand_in(ctx, rng, 3, TU_SHAPE(2, 5, 8), -1, 1),
                         fx_tensor_from_host(ctx, FX_I64, 1, TU_SHAPE(2),
                                             (int64_t[]){ 5, 3 }) };
    fx_tensor *y;
    forward_ok(g, ctx, in, &y);
    fx_layer *l = fx_multihead_attention_create("attn", 8, 2, true, rng);
    copy_into(g, l);
    fx_tensor *a = fx_multihead_attention_forward(l, ctx, in[0], in[0], in[0], in[1], false);
    fx_tensor *r = fx_layer_norm(ctx, fx_add(ctx, a, in[0]), 1, TU_SHAPE(8), param(g, "ln.weight"),
                                 param(g, "ln.bias"), 1e-5f);
    assert_same(y, r, 1e-5);
    fx_layer_free(l);

    /* the op form, with q, k, v inputs of their own and causal masking */
    spec_t *s2 = spec_new();
    input(s2, "q", FP32, 3, N64(2), N64(4), N64(6));
    input(s2, "k", FP32, 3, N64(2), N64(5), N64(6));
    input(s2, "v", FP32, 3, N64(2), N64(5), N64(3));
    node(s2, "sdpa", "scaled_dot_product_attention", "q,k,v", B("causal", true), NULL);
    output(s2, "y", "sdpa");
    fxg_graph *g2 = create(s2, 1);
    assert_info(fxg_output(g2, 0), FX_F32, 3, TU_SHAPE(2, 4, 3));
    fx_tensor *qkv[3] = { rand_in(ctx, rng, 3, TU_SHAPE(2, 4, 6), -1, 1),
                          rand_in(ctx, rng, 3, TU_SHAPE(2, 5, 6), -1, 1),
                          rand_in(ctx, rng, 3, TU_SHAPE(2, 5, 3), -1, 1) };
    forward_ok(g2, ctx, qkv, &y);
    assert_same(y, fx_scaled_dot_product_attention(ctx, qkv[0], qkv[1], qkv[2], NULL, true, NULL,
                                                   0), 1e-6);
    fxg_free(g2);
    spec_free(s2);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

static void test_misc_model(void **state)
{
    spec_t *s = misc_spec();
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    assert_info(fxg_output(g, 0), FX_F32, 2, TU_SHAPE(-1, 4));
    assert_info(fxg_output(g, 1), FX_F32, 0, NULL);
    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    int64_t tok[14] = { 1, 2, 3, 0, 0, 9, 4, 5, 6, 7, 8, 1, 2, 3 };
    fx_tensor *in[2] = { fx_tensor_from_host(ctx, FX_I64, 2, TU_SHAPE(2, 7), tok),
                         rand_in(ctx, rng, 2, TU_SHAPE(2, 4), -1, 1) };
    fx_tensor *out[2];
    forward_ok(g, ctx, in, out);
    fx_layer *gru = fx_gru_create("gru", 6, 5, NULL, rng);
    copy_into(g, gru);
    fx_tensor *h = fx_embedding(ctx, param(g, "emb.weight"), in[0], 0);
    h = fx_transpose(ctx, fx_recurrent_forward(gru, ctx, h, NULL, NULL, NULL, NULL, NULL), 1, 2);
    h = fx_conv1d(ctx, h, param(g, "conv.weight"), param(g, "conv.bias"),
                  &(fx_conv_opts){ .padding = 1 });
    h = fx_group_norm(ctx, h, 2, param(g, "gn.weight"), param(g, "gn.bias"), 1e-5f);
    h = fx_mean(ctx, h, 1, (int[]){ 2 }, false);
    assert_same(out[0], h, 1e-5);
    assert_same(out[1], fx_mse_loss(ctx, h, in[1], FX_MEAN), 1e-5);
    fx_layer_free(gru);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

/* gelu's approximate picks the engine's function (absent: the tanh
 * approximation, as before the attribute existed); erf is the engine's. */
static void test_gelu_erf(void **state)
{
    (void)state;
    spec_t *s = spec_new();
    input(s, "x", FP32, 2, N64(-1), N64(5));
    node(s, "g0", "gelu", "x", NULL);
    node(s, "gt", "gelu", "x", S("approximate", "tanh"), NULL);
    node(s, "gn", "gelu", "x", S("approximate", "none"), NULL);
    node(s, "e", "erf", "gn", NULL);
    const char *outs[] = { "g0", "gt", "gn", "e" };
    for (int i = 0; i < 4; i++)
        output(s, outs[i], outs[i]);
    fxg_graph *g = create(s, 1);
    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *in[1] = { rand_in(ctx, rng, 2, TU_SHAPE(3, 5), -3, 3) }, *out[4];
    forward_ok(g, ctx, in, out);
    fx_tensor *exact = fx_gelu_exact(ctx, in[0]);
    assert_same(out[0], fx_gelu(ctx, in[0]), 0);
    assert_same(out[1], fx_gelu(ctx, in[0]), 0);
    assert_same(out[2], exact, 0);
    assert_same(out[3], fx_erf(ctx, exact), 0);
    /* the two differ (by up to ~5e-4 on [-3, 3]): the attribute was read */
    float *a = tu_values(out[0]), *b = tu_values(out[2]);
    double diff = 0;
    for (int i = 0; i < 15; i++)
        diff = fmax(diff, fabs(a[i] - b[i]));
    assert_true(diff > 1e-5);
    free(a);
    free(b);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

/* Every op of the table builds and runs in some spec (a smoke test of the
 * table entries that the models above do not use). */
static void test_more_ops(void **state)
{
    spec_t *s = spec_new();
    input(s, "x", FP32, 4, N64(-1), N64(2), N64(6), N64(6));
    input(s, "m", FP32, 2, N64(-1), N64(5));
    input(s, "idx", INT64, 1, N64(3));
    input(s, "lab", INT32, 1, N64(-1));
    input(s, "wl", FP32, 2, N64(3), N64(4));
    input(s, "lpx", FP32, 3, N64(6), N64(-1), N64(5));
    input(s, "il", INT32, 1, N64(-1));
    input(s, "tl", INT32, 1, N64(-1));
    node(s, "ct", "conv_transpose2d", "x", I("in_channels", 2), I("out_channels", 2),
         I("kernel_size", 2), I("stride", 2), NULL);                        /* [N,2,12,12] */
    node(s, "ap", "adaptive_avgpool2d", "ct", L("output_size", 2, N64(3), N64(2)), NULL);
    node(s, "gp", "global_avgpool2d", "ct", NULL);                             /* [N,2] */
    node(s, "bn", "batchnorm1d", "gp", I("num_features", 2), NULL);
    node(s, "gr", "grad_reverse", "bn", F("lambda", 0.5), NULL);
    node(s, "dr", "dropout", "gr", F("p", 0.2), NULL);
    node(s, "r", "rnn", "m3", I("input_size", 1), I("hidden_size", 2),
         S("nonlinearity", "relu"), NULL);
    node(s, "m3", "reshape", "m", L("shape", 3, N64(0), N64(-1), N64(1)), NULL);
    node(s, "e", "exp", "m", NULL);
    node(s, "l", "log", "e", NULL);
    node(s, "sq", "sqrt", "e", NULL);
    node(s, "pw", "pow", "sq", F("exponent", 2), NULL);
    node(s, "dv", "div", "pw,e", NULL);
    node(s, "ml", "mul", "dv,l", NULL);
    node(s, "sb", "sub", "ml,m", NULL);
    node(s, "ng", "neg", "sb", NULL);
    node(s, "ab", "abs", "ng", NULL);
    node(s, "sc", "scale", "ab", F("value", 3), NULL);
    node(s, "as", "add_scalar", "sc", I("value", 1), NULL);
    node(s, "lr", "leaky_relu", "as", NULL);
    node(s, "el", "elu", "lr", F("alpha", 0.5), NULL);
    node(s, "ge", "gelu", "el", NULL);
    node(s, "gx", "gelu", "ge", S("approximate", "none"), NULL);
    node(s, "er", "erf", "gx", NULL);
    node(s, "sg", "sigmoid", "er", NULL);
    node(s, "th", "tanh", "sg", NULL);
    node(s, "cl", "clamp", "th", F("min", 0.1), NULL);
    node(s, "ls", "log_softmax", "cl", NULL);
    node(s, "sm", "sum", "ls", L("axes", 1, N64(1)), B("keepdim", true), NULL);
    node(s, "mx", "max", "ls", NULL);
    node(s, "cat", "concat", "m,m,sm", I("axis", 1), NULL);                   /* [N,11] */
    node(s, "sl", "slice", "cat", I("axis", 1), I("start", 1), I("end", -1), I("step", 3), NULL);
    node(s, "pm", "permute", "sl", L("dims", 2, N64(1), N64(0)), NULL);
    node(s, "mm", "matmul", "sl,pm", NULL);                                   /* [N,N] */
    node(s, "w", "dense", "m", I("in_features", 5), I("out_features", 4), B("bias", false),
         S("init", "orthogonal"), NULL);
    node(s, "lin", "linear", "w,wl", NULL);                                   /* [N,3] */
    node(s, "is", "index_select", "m,idx", I("axis", 1), NULL);
    node(s, "gi", "gather", "m,gidx", I("axis", 1), NULL);
    node(s, "gidx", "reshape", "lab", L("shape", 2, N64(-1), N64(1)), NULL);
    node(s, "wh", "where", "m,is2,m", NULL);
    node(s, "is2", "slice", "is", I("axis", 1), I("start", 0), I("end", 1), NULL);
    node(s, "ce", "cross_entropy", "m,lab", S("reduction", "sum"), NULL);
    node(s, "ces", "cross_entropy_soft", "m,probs", NULL);
    node(s, "probs", "softmax", "m", NULL);
    node(s, "bce", "bce_with_logits", "m,probs", S("reduction", "none"), NULL);
    node(s, "lp", "log_softmax", "lpx", I("axis", 2), NULL);
    node(s, "ctc", "ctc_loss", "lp,gidx,il,tl", NULL);
    const char *outs[] = { "ap", "dr", "r", "r:1", "mx", "lin", "gi", "wh", "ce", "ces", "bce",
                           "cat", "mm", "ctc" };
    for (size_t i = 0; i < sizeof outs / sizeof *outs; i++)
        output(s, outs[i], outs[i]);
    (void)state;
    char err[512];
    fxg_graph *g = NULL;
    if (fxg_build(s, NULL, &g, err, sizeof err))
        fail_msg("%s", err);
    assert_info(fxg_output(g, fxg_find_output(g, "ap")), FX_F32, 4, TU_SHAPE(-1, 2, 3, 2));
    assert_info(fxg_output(g, fxg_find_output(g, "r:1")), FX_F32, 3, TU_SHAPE(1, -1, 2));
    assert_info(fxg_output(g, fxg_find_output(g, "cat")), FX_F32, 2, TU_SHAPE(-1, 11));
    assert_info(fxg_output(g, fxg_find_output(g, "ce")), FX_F32, 0, NULL);
    assert_info(fxg_output(g, fxg_find_output(g, "bce")), FX_F32, 2, TU_SHAPE(-1, 5));
    assert_info(fxg_output(g, fxg_find_output(g, "ctc")), FX_F32, 0, NULL);
    assert_info(fxg_output(g, fxg_find_output(g, "mm")), FX_F32, 2, TU_SHAPE(-1, -1));
    assert_info(fxg_output(g, fxg_find_output(g, "lin")), FX_F32, 2, TU_SHAPE(-1, 3));
    /* a real forward with valid labels, training mode (dropout drops) */
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_rng *rng = fx_rng_create(4);
    fx_tensor *in[8] = { rand_in(ctx, rng, 4, TU_SHAPE(2, 2, 6, 6), -1, 1),
                         rand_in(ctx, rng, 2, TU_SHAPE(2, 5), -1, 1),
                         fx_tensor_from_host(ctx, FX_I64, 1, TU_SHAPE(3), (int64_t[]){ 4, 0, 2 }),
                         fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 1, 3 }),
                         rand_in(ctx, rng, 2, TU_SHAPE(3, 4), -1, 1),
                         rand_in(ctx, rng, 3, TU_SHAPE(6, 2, 5), -1, 1),
                         fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 6, 4 }),
                         fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 1, 1 }) };
    fx_tensor *out[14];
    forward_ok(g, ctx, in, out);
    fx_tensor *ctc = out[fxg_find_output(g, "ctc")];
    assert_true(isfinite(fx_tensor_item(ctc)));
    /* a gradient flows back through the whole graph */
    fx_tensor *sum = fx_sum(ctx, out[fxg_find_output(g, "lin")], 0, NULL, false);
    assert_int_equal(fx_backward(ctx, sum), FX_OK);
    assert_non_null(param(g, "w.weight")->grad);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

/* Training through a graph: the gradient of a loss output w.r.t. every
 * parameter matches finite differences. */
typedef struct {
    fxg_graph *g;
    fx_tensor *x, *t; /* persistent input and target */
} loss_arg;

static fx_tensor *graph_loss(fx_ctx *ctx, void *user)
{
    loss_arg *a = user;
    fx_tensor *in[2] = { a->x, a->t }, *out[2];
    char err[256];
    return fxg_forward(a->g, ctx, in, out, err, sizeof err) ? NULL : out[1];
}

static void test_gradients(void **state)
{
    spec_t *s = mlp_spec();
    input(s, "target", FP32, 2, N64(-1), N64(3));
    node(s, "loss", "mse_loss", "fc2,target", NULL);
    output(s, "loss", "loss");
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    fx_rng *rng = fx_rng_create(3);
    loss_arg a = { g, tu_uniform(rng, 2, TU_SHAPE(4, 4), -1, 1),
                   tu_uniform(rng, 2, TU_SHAPE(4, 3), -1, 1) };
    const fx_params *p = fxg_trainable_params(g);
    fx_tensor *wrt[4];
    for (int i = 0; i < p->count; i++)
        wrt[i] = p->items[i].tensor;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_gradcheck_report r;
    fx_status st = fx_gradcheck(ctx, graph_loss, &a, p->count, wrt, NULL, &r);
    if (st != FX_OK)
        fail_msg("gradcheck: %s", r.message);
    assert_true(r.checked > 50);
    fx_ctx_free(ctx);
    fx_tensor_free(a.x);
    fx_tensor_free(a.t);
    fx_rng_free(rng);
    fxg_free(g);
    spec_free(s);
}

/* ---------------------------------------------------------- validation */

typedef void (*spec_fn)(spec_t *s);

/* Creating the spec must fail (not for memory) with every fragment in the
 * message. */
static void expect_error(spec_t *s, const fxg_options *o, const char *const *frags)
{
    char err[512] = "";
    fxg_graph *g = NULL;
    int rc = fxg_build(s, o, &g, err, sizeof err);
    if (!rc)
        fail_msg("accepted a spec that should fail with '%s'", frags[0]);
    assert_int_equal(rc, FXS_INVALID_ARGUMENT); /* the caller's mistake, not memory */
    assert_null(g);
    for (int i = 0; frags[i]; i++)
        if (!strstr(err, frags[i]))
            fail_msg("message '%s' lacks '%s'", err, frags[i]);
    spec_free(s);
}

#define EXPECT(s, ...) expect_error(s, NULL, (const char *const[]){ __VA_ARGS__, NULL })

/* x [-1,4] -> fc1 dense 4->8, output y = fc1, plus what the test adds. */
static spec_t *base(void)
{
    spec_t *s = spec_new();
    input(s, "x", FP32, 2, N64(-1), N64(4));
    node(s, "fc1", "dense", "x", I("in_features", 4), I("out_features", 8), NULL);
    return s;
}

static spec_t *with_out(spec_t *s)
{
    output(s, "y", "fc1");
    return s;
}

static void test_errors_names(void **state)
{
    spec_t *s = with_out(base());
    node(s, "fc2", "dens", "fc1", NULL);
    EXPECT(s, "node 'fc2'", "unknown op 'dens'", "dense");

    s = with_out(base());
    node(s, "", "relu", "fc1", NULL);
    EXPECT(s, "node 1", "empty name");

    s = with_out(base());
    node(s, "fc1", "relu", "x", NULL);
    EXPECT(s, "duplicate node name 'fc1'");

    s = with_out(base());
    input(s, "x", FP32, 1, N64(4));
    EXPECT(s, "duplicate input name 'x'");

    s = with_out(base());
    node(s, "x", "relu", "fc1", NULL);
    EXPECT(s, "input 'x' and node 'x' share a name");

    s = with_out(base());
    node(s, "a.b", "relu", "fc1", NULL);
    EXPECT(s, "node name 'a.b'", "'.'");

    s = with_out(base());
    node(s, "r", "relu", "fc9", NULL);
    EXPECT(s, "node 'r'", "'fc9' names no graph input or node");

    s = with_out(base());
    node(s, "parts", "split", "x", I("axis", 1), L("sizes", 2, N64(2), N64(2)), NULL);
    node(s, "r", "relu", "parts:2", NULL);
    EXPECT(s, "node 'r'", "node 'parts' (split) has 2 outputs, no output 2");

    s = with_out(base());
    node(s, "r", "relu", "fc1:1", NULL);
    EXPECT(s, "node 'r'", "has 1 output, no output 1");

    s = with_out(base());
    node(s, "a", "relu", "c", NULL);
    node(s, "b", "relu", "a", NULL);
    node(s, "c", "add", "b,fc1", NULL);
    EXPECT(s, "cycle", "'a' -> 'b' -> 'c' -> 'a'");

    s = with_out(base());
    node(s, "self", "relu", "self", NULL);
    EXPECT(s, "cycle", "'self' -> 'self'");

    s = with_out(base());
    node(s, "sum", "add", "fc1", NULL);
    EXPECT(s, "node 'sum' (add)", "takes 2 inputs, got 1");

    s = with_out(base());
    node(s, "l", "lstm", "", I("input_size", 4), I("hidden_size", 4), NULL);
    EXPECT(s, "node 'l' (lstm)", "takes 1 to 4 inputs, got 0");

    s = with_out(base());
    node(s, "c", "concat", "", NULL);
    EXPECT(s, "node 'c' (concat)", "at least 1");
}

static void test_errors_attrs(void **state)
{
    spec_t *s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), NULL);
    EXPECT(s, "node 'fc2' (dense)", "attribute 'out_features'", "required");

    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), S("out_features", "3"), NULL);
    EXPECT(s, "node 'fc2' (dense)", "attribute 'out_features' must be an int, got a string");

    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), F("out_features", 2.5), NULL);
    EXPECT(s, "node 'fc2'", "'out_features' must be an int, got a float");

    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), I("out_features", 0), NULL);
    EXPECT(s, "node 'fc2'", "attribute 'out_features' is 0, outside [1,");

    s = with_out(base());
    node(s, "d", "dropout", "fc1", F("p", 1.0), NULL);
    EXPECT(s, "node 'd' (dropout)", "attribute 'p' is 1, outside [0, 0.999");

    s = with_out(base());
    node(s, "d", "dropout", "fc1", F("p", NAN), NULL);
    EXPECT(s, "node 'd' (dropout)", "attribute 'p' is nan");

    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), I("out_features", 2), I("units", 2), NULL);
    EXPECT(s, "node 'fc2' (dense)", "unknown attribute 'units'", "out_features");

    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), I("out_features", 2),
         S("activation", "relux"), NULL);
    EXPECT(s, "node 'fc2'", "'activation' is 'relux', expected one of none, relu");

    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), I("out_features", 2), I("bias", 1), NULL);
    EXPECT(s, "node 'fc2'", "'bias' must be a bool, got an int");

    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), I("out_features", 2),
         I("in_features", 8), NULL);
    EXPECT(s, "node 'fc2'", "attribute 'in_features' is given twice");

    s = with_out(base());
    node(s, "p", "maxpool2d", "fc1", L("kernel_size", 3, N64(1), N64(2), N64(3)), NULL);
    EXPECT(s, "node 'p' (maxpool2d)", "'kernel_size' must be an int or a list of 1 or 2");

    s = with_out(base());
    node(s, "r", "reshape", "fc1", L("shape", 2, N64(-1), N64(-1)), NULL);
    EXPECT(s, "node 'r' (reshape)", "at most one");

    s = with_out(base());
    node(s, "r", "reshape", "fc1", L("shape", 2, N64(-2), N64(4)), NULL);
    EXPECT(s, "node 'r' (reshape)", "'shape' is -2, outside [-1");

    s = with_out(base());
    node(s, "c", "conv2d", "fc1", I("in_channels", 4), I("out_channels", 6), I("groups", 4),
         I("kernel_size", 1), NULL);
    EXPECT(s, "node 'c' (conv2d)", "groups 4 must divide in_channels 4 and out_channels 6");

    s = with_out(base());
    node(s, "e", "embedding", "fc1", I("num_embeddings", 4), I("embedding_dim", 2),
         I("padding_idx", 4), NULL);
    EXPECT(s, "node 'e' (embedding)", "padding_idx 4");

    s = with_out(base());
    node(s, "a", "multihead_attention", "fc1", I("embed_dim", 8), I("num_heads", 3), NULL);
    EXPECT(s, "node 'a'", "num_heads 3 must divide embed_dim 8");

    s = with_out(base());
    node(s, "c", "clamp", "fc1", F("min", 2), F("max", 1), NULL);
    EXPECT(s, "node 'c' (clamp)", "min 2 is above max 1");

    s = with_out(base());
    node(s, "ge", "gelu", "fc1", S("approximate", "exact"), NULL);
    EXPECT(s, "node 'ge' (gelu)", "'approximate' is 'exact', expected one of tanh, none");

    s = with_out(base());
    node(s, "g", "groupnorm", "fc1", I("num_groups", 3), I("num_channels", 8), NULL);
    EXPECT(s, "node 'g'", "num_groups 3 must divide num_channels 8");
}

static void test_errors_io(void **state)
{
    spec_t *s = base();
    EXPECT(s, "no outputs");

    s = with_out(base());
    output(s, "y", "x");
    EXPECT(s, "duplicate output name 'y'");

    s = with_out(base());
    output(s, "z", "fc3");
    EXPECT(s, "output 'z'", "'fc3' names no graph input or node");

    s = with_out(base());
    output(s, "", "fc1");
    EXPECT(s, "output has an empty name");

    s = with_out(base());
    input(s, "bad", FP32, 2, N64(0), N64(4));
    EXPECT(s, "input 'bad'", "dim 0 is 0");

    s = with_out(base());
    input(s, "bad", FP32, 2, N64(3), N64(-2));
    EXPECT(s, "input 'bad'", "dim 1 is -2");

    s = with_out(base());
    input(s, "bad", FP32, 9, N64(1), N64(1), N64(1), N64(1), N64(1), N64(1), N64(1), N64(1),
          N64(1));
    EXPECT(s, "input 'bad'", "9 dims, at most 8");

    s = with_out(base());
    input(s, "bad", (Fluxion__V1__DataType)7, 1, N64(3));
    EXPECT(s, "input 'bad'", "dtype 7 is not supported");

    s = with_out(base());
    input(s, "", FP32, 1, N64(3));
    EXPECT(s, "input has an empty name");

    s = with_out(base());
    input(s, "huge", FP32, 3, N64(1) << 20, N64(1) << 20, N64(1) << 20);
    EXPECT(s, "input 'huge'", "more than");
}

static void test_errors_limits(void **state)
{
    /* Huge but not overflowing: refused by the limit before allocation
     * (an attempt would fail for memory, and the test checks nomem). */
    spec_t *s = with_out(base());
    node(s, "big", "dense", "fc1", I("in_features", 8), I("out_features", INT64_C(1) << 40),
         NULL);
    EXPECT(s, "node 'big' (dense)", "above the limit of 1073741824");

    s = with_out(base());
    node(s, "big", "dense", "fc1", I("in_features", INT64_C(1) << 40),
         I("out_features", INT64_C(1) << 40), NULL);
    EXPECT(s, "node 'big' (dense)", "parameter count overflows");

    s = with_out(base());
    node(s, "big", "lstm", "fc1", I("input_size", INT64_C(1) << 31),
         I("hidden_size", INT64_C(1) << 31), I("num_layers", 1000), NULL);
    EXPECT(s, "node 'big' (lstm)", "overflows");

    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 8), I("out_features", 100), NULL);
    expect_error(s, &(fxg_options){ .max_params = 500 },
                 (const char *const[]){ "node 'fc2'", "above the limit of 500", NULL });

    s = with_out(base());
    node(s, "r1", "relu", "fc1", NULL);
    node(s, "r2", "relu", "r1", NULL);
    expect_error(s, &(fxg_options){ .max_nodes = 2 },
                 (const char *const[]){ "3 nodes", "limit of 2", NULL });

    /* shape inference: a size that does not fit */
    s = with_out(base());
    node(s, "fc2", "dense", "fc1", I("in_features", 5), I("out_features", 2), NULL);
    EXPECT(s, "shape inference", "node 'fc2' (dense)", "linear", "probe inputs: x [");

    s = with_out(base());
    node(s, "c", "conv2d", "fc1", I("in_channels", 8), I("out_channels", 2), I("kernel_size", 3),
         NULL);
    EXPECT(s, "shape inference", "node 'c' (conv2d)");

    s = with_out(base());
    input(s, "lab", FP32, 1, N64(-1));
    node(s, "ce", "cross_entropy", "fc1,lab", NULL);
    EXPECT(s, "node 'ce' (cross_entropy)");
}

/* Random specs (ops, references, attribute types and values, shapes) must
 * never crash or leak: each is refused with a message or builds, and a built
 * one runs (or fails with a message) on inputs of its spec. */
static attr_t *random_attr(fx_rng *rng, const fxg_attr_schema *a)
{
    int kind = (int)(fx_rng_u64(rng) % 40); /* 0-2: a type that may be wrong */
    int64_t v = (int64_t)(fx_rng_u64(rng) % 10) - 2;
    if (kind == 0)
        return S(a->name, "relu");
    if (kind == 1)
        return F(a->name, (double)v / 4);
    if (kind == 2)
        return L(a->name, 2, v, N64(fx_rng_u64(rng) % 4));
    switch (a->type) {
    case AT_BOOL: return B(a->name, v & 1);
    case AT_FLOAT: return F(a->name, fx_rng_uniform(rng));
    case AT_STRING: return S(a->name, a->choices[fx_rng_u64(rng) % 2]);
    case AT_INTS: return L(a->name, 1 + (int)(fx_rng_u64(rng) % 2), v, N64(1 + v % 3));
    default: return I(a->name, v < 1 ? 1 + (v & 1) : v);
    }
}

static spec_t *random_spec(fx_rng *rng, int nops)
{
    spec_t *s = spec_new();
    input(s, "x", FP32, 3, N64(-1), N64(2 + fx_rng_u64(rng) % 3), N64(4));
    input(s, "i", INT32, 1, N64(-1));
    char names[8][16] = { "x", "i" };
    int nnames = 2, nn = 1 + (int)(fx_rng_u64(rng) % 6);
    for (int k = 0; k < nn; k++) {
        const fxg_op *op = fxg_op_at((int)(fx_rng_u64(rng) % (uint64_t)nops));
        int nin = op->min_in + (fx_rng_u64(rng) % 8 == 0);
        char in[64] = "";
        for (int j = 0; j < nin; j++) {
            const char *ref = names[fx_rng_u64(rng) % (uint64_t)nnames];
            snprintf(in + strlen(in), sizeof in - strlen(in), "%s%s%s", j ? "," : "", ref,
                     fx_rng_u64(rng) % 16 == 0 ? ":1" : "");
        }
        snprintf(names[nnames], sizeof names[0], "n%d", k);
        Fluxion__V1__Node *n = node(s, names[nnames++], op->name, in, NULL);
        for (const fxg_attr_schema *a = op->attrs; a->name; a++)
            if (fx_rng_u64(rng) % (a->required ? 30 : 3) != 0)
                *GROW(n->attrs, n->n_attrs) = random_attr(rng, a);
    }
    output(s, "y", names[nnames - 1]);
    return s;
}

static void test_random_specs(void **state)
{
    fx_rng *rng = fx_rng_create(21);
    int nops = fxg_num_ops(), built = 0, ran = 0;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    for (int it = 0; it < 3000; it++) {
        spec_t *s = random_spec(rng, nops);
        char err[512] = "";
        fxg_graph *g = NULL;
        int rc = fxg_build(s, NULL, &g, err, sizeof err);
        assert_int_not_equal(rc, FXS_RESOURCE_EXHAUSTED);
        if (rc) {
            assert_int_equal(rc, FXS_INVALID_ARGUMENT);
            assert_true(err[0] != 0);
        } else {
            built++;
            fx_ctx_set_training(ctx, it & 1);
            fx_tensor *in[2] = {
                fx_full(ctx, FX_F32, 3, TU_SHAPE(3, fxg_input(g, 0)->shape[1], 4), 0.25),
                fx_full(ctx, FX_I32, 1, TU_SHAPE(3), 1) };
            fx_tensor *out;
            if (fxg_forward(g, ctx, in, &out, err, sizeof err) == 0) {
                assert_non_null(out);
                ran++;
            } else {
                assert_non_null(strstr(err, "node '"));
            }
            fx_ctx_reset(ctx);
            fxg_free(g);
        }
        spec_free(s);
    }
    print_message("random specs: %d of 3000 built, %d ran\n", built, ran);
    /* the generator must reach both sides, or it tests nothing */
    assert_true(built > 60);
    assert_true(ran > 60);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
}

/* ------------------------------------------------------------- weights */

static void save(fxg_graph *g, void **buf, size_t *len)
{
    char err[256];
    if (fxg_save_weights(g, buf, len, err, sizeof err))
        fail_msg("save: %s", err);
}

static void test_weights_round_trip(void **state)
{
    spec_t *s = cnn_spec();
    fxg_graph *a = create(s, 1), *b = create(s, 2);
    randomize(a, 5);
    void *wa, *wb0, *wb1;
    size_t la, lb0, lb1;
    save(a, &wa, &la);
    save(b, &wb0, &lb0);
    assert_true(la != lb0 || memcmp(wa, wb0, la) != 0);
    /* the seed alone decides the initial weights */
    fxg_graph *a2 = create(s, 2);
    void *wa2;
    size_t la2;
    save(a2, &wa2, &la2);
    assert_int_equal(la2, lb0);
    assert_memory_equal(wa2, wb0, la2);
    free(wa2);
    fxg_free(a2);
    char err[256];
    assert_int_equal(fxg_load_weights(b, wa, la, err, sizeof err), 0);
    save(b, &wb1, &lb1);
    assert_int_equal(la, lb1);
    assert_memory_equal(wa, wb1, la);
    /* same weights, same outputs */
    fx_ctx *ctx = eval_ctx();
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = rand_in(ctx, rng, 4, TU_SHAPE(2, 2, 8, 8), -1, 1), *ya, *yb;
    forward_ok(a, ctx, &x, &ya);
    forward_ok(b, ctx, &x, &yb);
    assert_same(ya, yb, 0);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    free(wa);
    free(wb0);
    free(wb1);
    fxg_free(a);
    fxg_free(b);
    spec_free(s);
}

/* Loads tensors (all of g's but skip, plus extra) and expects a failure
 * naming frag, with g's weights unchanged. */
static void expect_load_error(fxg_graph *g, const char *skip, const char *extra,
                              const int64_t *extra_shape, int extra_ndim, const char *frag)
{
    fx_params p;
    fx_params_init(&p);
    const fx_params *mine = fxg_params(g);
    for (int i = 0; i < mine->count; i++)
        if (!skip || strcmp(mine->items[i].name, skip) != 0)
            assert_int_equal(fx_params_add(&p, mine->items[i].name, mine->items[i].tensor), FX_OK);
    /* the changed copy: every value different from g's */
    fx_params changed;
    fx_params_init(&changed);
    for (int i = 0; i < p.count; i++) {
        fx_tensor *t = p.items[i].tensor, *c = fx_tensor_create(fx_cpu(), t->dtype, t->ndim,
                                                                 t->shape);
        fx_tensor_fill(c, 7.0);
        assert_int_equal(fx_params_add(&changed, p.items[i].name, c), FX_OK);
    }
    fx_tensor *e = NULL;
    if (extra) {
        e = fx_tensor_create(fx_cpu(), FX_F32, extra_ndim, extra_shape);
        if (fx_params_find(&changed, extra)) { /* a replacement of another shape */
            for (int i = 0; i < changed.count; i++)
                if (strcmp(changed.items[i].name, extra) == 0) {
                    fx_tensor_free(changed.items[i].tensor);
                    changed.items[i].tensor = e;
                }
        } else {
            assert_int_equal(fx_params_add(&changed, extra, e), FX_OK);
        }
    }
    uint8_t *buf;
    size_t len;
    char err[256];
    assert_int_equal(fx_safetensors_encode(&changed, 0, NULL, NULL, &buf, &len, err, sizeof err),
                     FX_OK);
    void *before, *after;
    size_t lb, la;
    save(g, &before, &lb);
    err[0] = '\0';
    assert_int_equal(fxg_load_weights(g, buf, len, err, sizeof err), FXS_INVALID_ARGUMENT);
    if (!strstr(err, frag))
        fail_msg("message '%s' lacks '%s'", err, frag);
    save(g, &after, &la);
    assert_int_equal(la, lb);
    assert_memory_equal(before, after, la);
    free(before);
    free(after);
    free(buf);
    fx_params_free_tensors(&changed);
    fx_params_clear(&p);
}

static void test_weights_strict(void **state)
{
    spec_t *s = cnn_spec();
    fxg_graph *g = create(s, 1);
    expect_load_error(g, "bn1.running_var", NULL, NULL, 0, "tensor 'bn1.running_var' is missing");
    expect_load_error(g, NULL, "fc.extra", TU_SHAPE(2), 1,
                      "tensor 'fc.extra' is not a parameter of the model");
    expect_load_error(g, NULL, "fc.weight", TU_SHAPE(5, 7), 2,
                      "tensor 'fc.weight': shape [5,7], expected [5,18]");
    char err[256];
    assert_int_equal(fxg_load_weights(g, "garbage!", 8, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "weights:"));

    /* PyTorch's num_batches_tracked of a batch norm is accepted */
    fx_params p;
    fx_params_init(&p);
    for (int i = 0; i < fxg_params(g)->count; i++)
        fx_params_add(&p, fxg_params(g)->items[i].name, fxg_params(g)->items[i].tensor);
    fx_tensor *nbt = fx_tensor_create(fx_cpu(), FX_I64, 0, NULL);
    fx_params_add(&p, "bn1.num_batches_tracked", nbt);
    uint8_t *buf;
    size_t len;
    assert_int_equal(fx_safetensors_encode(&p, 0, NULL, NULL, &buf, &len, err, sizeof err), FX_OK);
    if (fxg_load_weights(g, buf, len, err, sizeof err))
        fail_msg("%s", err);
    free(buf);
    fx_tensor_free(nbt);
    fx_params_clear(&p);
    fxg_free(g);
    spec_free(s);
}

/* ------------------------------------------------------------ inputs */

static void test_check_input(void **state)
{
    spec_t *s = lstm_spec();
    fxg_graph *g = create(s, 1);
    char err[256];
    assert_int_equal(fxg_check_input(g, 0, FX_F32, 3, TU_SHAPE(2, 9, 3), err, sizeof err), 0);
    assert_int_equal(fxg_check_input(g, 0, FX_I32, 3, TU_SHAPE(2, 9, 3), err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "input 'x': dtype i32, expected f32"));
    assert_int_equal(fxg_check_input(g, 0, FX_F32, 2, TU_SHAPE(2, 9), err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "input 'x': shape [2,9], expected [-1,-1,3]"));
    assert_int_equal(fxg_check_input(g, 0, FX_F32, 3, TU_SHAPE(2, 9, 4), err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_int_equal(fxg_check_input(g, 2, FX_F32, 1, TU_SHAPE(2), err, sizeof err), FXS_INVALID_ARGUMENT);
    /* fxg_forward checks too, and reports engine errors with the node */
    fx_ctx *ctx = eval_ctx();
    fx_tensor *in[2] = { fx_zeros(ctx, FX_F32, 3, TU_SHAPE(2, 4, 3)),
                         fx_tensor_from_host(ctx, FX_I32, 1, TU_SHAPE(2), (int32_t[]){ 4, 9 }) },
              *out[3];
    assert_int_equal(fxg_forward(g, ctx, in, out, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "node 'lstm' (lstm)"));
    assert_null(out[0]);
    fx_ctx_reset(ctx);
    in[0] = fx_zeros(ctx, FX_F32, 3, TU_SHAPE(2, 4, 2));
    in[1] = fx_zeros(ctx, FX_I32, 1, TU_SHAPE(2));
    assert_int_equal(fxg_forward(g, ctx, in, out, err, sizeof err), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "input 'x'"));
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

static void test_op_names(void **state)
{
    const char *const *names = fxg_op_names();
    int n = 0;
    bool dense = false, ctc = false;
    for (; names[n]; n++) {
        dense = dense || strcmp(names[n], "dense") == 0;
        ctc = ctc || strcmp(names[n], "ctc_loss") == 0;
    }
    assert_true(dense && ctc);
    assert_true(n >= 60);
    /* docs/model-spec.md has a section per op (found from this file's path) */
    char path[1024];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *cut = strstr(path, "tests/unit/test_graph.c");
    if (!cut)
        skip();
    snprintf(cut, sizeof path - (size_t)(cut - path), "docs/model-spec.md");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char doc[1 << 17];
    size_t len = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[len] = '\0';
    for (int i = 0; names[i]; i++) {
        char head[96];
        snprintf(head, sizeof head, "### %s\n", names[i]);
        if (!strstr(doc, head))
            fail_msg("docs/model-spec.md has no section for op '%s'", names[i]);
    }
}

/* ---------------------------------------------------------- concurrency */

typedef struct {
    fxg_graph *g;
    fx_tensor *x;  /* persistent input */
    float *y;      /* serial result */
    int64_t n;
    int ok;
} thread_arg;

static void *worker(void *p)
{
    thread_arg *a = p;
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_ctx_set_grad(ctx, false);
    fx_ctx_set_training(ctx, false);
    a->ok = 1;
    for (int it = 0; it < 20 && a->ok; it++) {
        fx_tensor *y;
        char err[256];
        if (fxg_forward(a->g, ctx, &a->x, &y, err, sizeof err)) {
            a->ok = 0;
            break;
        }
        float *v = tu_values(y);
        a->ok = memcmp(v, a->y, (size_t)a->n * sizeof *v) == 0;
        free(v);
        fx_ctx_reset(ctx);
    }
    fx_ctx_free(ctx);
    return NULL;
}

static void test_concurrent_forward(void **state)
{
    spec_t *s = cnn_spec();
    fxg_graph *g = create(s, 1);
    randomize(g, 2);
    fx_rng *rng = fx_rng_create(3);
    fx_tensor *x = tu_uniform(rng, 4, TU_SHAPE(4, 2, 8, 8), -1, 1);
    fx_ctx *ctx = eval_ctx();
    fx_tensor *y;
    forward_ok(g, ctx, &x, &y);
    float *ref = tu_values(y);
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){ g, x, ref, fx_tensor_numel(y), 0 };
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].ok, 1);
    }
    free(ref);
    fx_tensor_free(x);
    fx_rng_free(rng);
    fx_ctx_free(ctx);
    fxg_free(g);
    spec_free(s);
}

/* ------------------------------------------------------------- export */

typedef struct {
    const char *name;
    spec_t *(*spec)(void);
} model_def;

static const model_def export_models[] = {
    { "mlp", mlp_spec }, { "cnn", cnn_spec }, { "lstm", lstm_spec },
    { "mha", mha_spec }, { "misc", misc_spec },
};

/* Inputs for an export: f32 U(-1, 1), batch 3, time 6; lengths and tokens
 * fixed. */
static fx_tensor *export_input(const fxg_tensor_info *t, fx_rng *rng)
{
    int64_t shape[FX_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++)
        shape[d] = t->shape[d] > 0 ? t->shape[d] : d == 0 ? 3 : 6;
    if (t->dtype == FX_F32)
        return tu_uniform(rng, t->ndim, shape, -1, 1);
    fx_tensor *r = fx_tensor_create(fx_cpu(), t->dtype, t->ndim, shape);
    int64_t n = fx_tensor_numel(r);
    int64_t *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = strcmp(t->name, "len") == 0 ? (int64_t[]){ 6, 2, 4 }[i % 3]
                                          : (int64_t)((i * 7 + 3) % 10);
    if (t->dtype == FX_I64) {
        fx_tensor_copy_from_host(r, v, (size_t)n * 8);
    } else {
        int32_t *w = malloc((size_t)n * sizeof *w);
        for (int64_t i = 0; i < n; i++)
            w[i] = (int32_t)v[i];
        fx_tensor_copy_from_host(r, w, (size_t)n * 4);
        free(w);
    }
    free(v);
    return r;
}

static int export_one(const model_def *m, const char *dir)
{
    spec_t *s = m->spec();
    char err[512], path[1024];
    fxg_graph *g = NULL;
    fxg_build(s, &(fxg_options){ .seed = 11 }, &g, err, sizeof err);
    if (!g) {
        fprintf(stderr, "%s: %s\n", m->name, err);
        return 1;
    }
    randomize(g, 12);
    fx_rng *rng = fx_rng_create(13);
    fx_ctx *ctx = eval_ctx();
    fx_params io;
    fx_params_init(&io);
    fx_tensor *in[8], *out[8];
    for (int i = 0; i < fxg_num_inputs(g); i++) {
        in[i] = export_input(fxg_input(g, i), rng);
        fx_params_add(&io, fxg_input(g, i)->name, in[i]);
    }
    int rc = fxg_forward(g, ctx, in, out, err, sizeof err);
    for (int j = 0; !rc && j < fxg_num_outputs(g); j++) {
        fx_tensor *c = fx_tensor_create(fx_cpu(), out[j]->dtype, out[j]->ndim, out[j]->shape);
        fx_tensor_copy(c, out[j]);
        char name[256];
        snprintf(name, sizeof name, "out.%s", fxg_output(g, j)->name);
        fx_params_add(&io, name, c);
    }
    snprintf(path, sizeof path, "%s/%s.io.safetensors", dir, m->name);
    if (!rc)
        rc = fx_safetensors_save(path, &io, 0, NULL, NULL, err, sizeof err) != FX_OK;
    snprintf(path, sizeof path, "%s/%s.weights.safetensors", dir, m->name);
    if (!rc)
        rc = fx_safetensors_save(path, fxg_params(g), 0, NULL, NULL, err, sizeof err) != FX_OK;
    if (rc)
        fprintf(stderr, "%s: %s\n", m->name, err);
    fx_params_free_tensors(&io);
    fx_ctx_free(ctx);
    fx_rng_free(rng);
    fxg_free(g);
    spec_free(s);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--export") == 0) {
        int rc = 0;
        for (size_t i = 0; i < sizeof export_models / sizeof *export_models; i++)
            rc |= export_one(&export_models[i], argv[2]);
        return rc;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_cnn),
        cmocka_unit_test(test_lstm_lengths),
        cmocka_unit_test(test_residual_heads),
        cmocka_unit_test(test_split_outputs),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_misc_model),
        cmocka_unit_test(test_gelu_erf),
        cmocka_unit_test(test_more_ops),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_errors_names),
        cmocka_unit_test(test_errors_attrs),
        cmocka_unit_test(test_errors_io),
        cmocka_unit_test(test_errors_limits),
        cmocka_unit_test(test_random_specs),
        cmocka_unit_test(test_weights_round_trip),
        cmocka_unit_test(test_weights_strict),
        cmocka_unit_test(test_check_input),
        cmocka_unit_test(test_op_names),
        cmocka_unit_test(test_concurrent_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
