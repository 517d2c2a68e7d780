/*
 * test_onnx_import.c - server/onnx/ import on ModelProtos built by hand
 * with protobuf-c: the converters' specs and weights (run on the engine
 * against values computed here), PyTorch's folded shape arithmetic, and
 * malformed files (bad sizes, names, opsets, data, cycles; every prefix
 * and thousands of byte mutations of a valid file) refused with messages,
 * never a crash (the suite runs this under ASan + UBSan).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/status.h"
#include "models/graph.h"
#include "onnx/onnx.h"
#include "onnx/onnx.pb-c.h"
#include "testutil.h"

/* ------------------------------------------------------------ a tiny builder */

#define MAXP 256
static void *pool[MAXP]; /* everything the builder allocates, freed per test */
static int npool;

static void *keep(void *p)
{
    assert_non_null(p);
    assert_true(npool < MAXP);
    return pool[npool++] = p;
}

static void pool_free(void)
{
    while (npool)
        free(pool[--npool]);
}

typedef struct {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto op, *ops[1];
    Onnx__NodeProto *nodes[32];
    Onnx__TensorProto *inits[16];
    Onnx__ValueInfoProto *ins[4], *outs[4];
} model;

static model *model_new(int64_t opset)
{
    model *b = keep(calloc(1, sizeof *b));
    onnx__model_proto__init(&b->m);
    onnx__graph_proto__init(&b->g);
    onnx__operator_set_id_proto__init(&b->op);
    b->op.domain = "";
    b->op.has_version = 1;
    b->op.version = opset;
    b->ops[0] = &b->op;
    b->m.opset_import = b->ops;
    b->m.n_opset_import = 1;
    b->m.has_ir_version = 1;
    b->m.ir_version = 8;
    b->m.graph = &b->g;
    b->g.node = b->nodes;
    b->g.initializer = b->inits;
    b->g.input = b->ins;
    b->g.output = b->outs;
    return b;
}

/* A float tensor type of rank n (dims < 0: a named dynamic dim). */
static Onnx__ValueInfoProto *vinfo(const char *name, int n, const int64_t *dims)
{
    Onnx__ValueInfoProto *v = keep(calloc(1, sizeof *v));
    Onnx__TypeProto *t = keep(calloc(1, sizeof *t));
    Onnx__TypeProto__Tensor *tt = keep(calloc(1, sizeof *tt));
    Onnx__TensorShapeProto *s = keep(calloc(1, sizeof *s));
    Onnx__TensorShapeProto__Dimension **dd = keep(calloc((size_t)n + 1, sizeof *dd));
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(t);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(s);
    for (int i = 0; i < n; i++) {
        dd[i] = keep(calloc(1, sizeof **dd));
        onnx__tensor_shape_proto__dimension__init(dd[i]);
        if (dims[i] < 0) {
            dd[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dd[i]->dim_param = "batch";
        } else {
            dd[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dd[i]->dim_value = dims[i];
        }
    }
    s->dim = dd;
    s->n_dim = (size_t)n;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = s;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    v->name = (char *)name;
    v->type = t;
    return v;
}

static void input(model *b, const char *name, int n, const int64_t *dims)
{
    b->ins[b->g.n_input++] = vinfo(name, n, dims);
}

static void output(model *b, const char *name)
{
    b->outs[b->g.n_output++] = vinfo(name, 0, NULL);
    b->outs[b->g.n_output - 1]->type = NULL; /* shape unknown: the importer infers it */
}

static Onnx__TensorProto *tensor_f(const char *name, int n, const int64_t *dims, const float *v)
{
    Onnx__TensorProto *t = keep(calloc(1, sizeof *t));
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    t->dims = keep(malloc(sizeof *t->dims * (size_t)(n + 1))); /* dims may be a literal */
    memcpy(t->dims, dims ? dims : (const int64_t[]){0}, sizeof *t->dims * (size_t)n);
    t->n_dims = (size_t)n;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    int64_t numel = 1;
    for (int i = 0; i < n; i++)
        numel *= dims[i];
    t->float_data = (float *)v;
    t->n_float_data = (size_t)numel;
    return t;
}

static Onnx__TensorProto *tensor_i(const char *name, int n, const int64_t *dims, const int64_t *v)
{
    Onnx__TensorProto *t = tensor_f(name, n, dims, NULL);
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    t->int64_data = (int64_t *)v;
    t->n_int64_data = t->n_float_data;
    t->n_float_data = 0;
    return t;
}

static void init(model *b, Onnx__TensorProto *t) { b->inits[b->g.n_initializer++] = t; }

/* A node; inputs and outputs as comma-free arrays ended by NULL. */
static Onnx__NodeProto *node(model *b, const char *op, const char *name, const char *const *in,
                             const char *const *out)
{
    Onnx__NodeProto *n = keep(calloc(1, sizeof *n));
    onnx__node_proto__init(n);
    n->op_type = (char *)op;
    n->name = (char *)name;
    while (in[n->n_input])
        n->n_input++;
    while (out[n->n_output])
        n->n_output++;
    /* in and out may be literals of the caller's scope: copies */
    n->input = keep(malloc(sizeof *n->input * (n->n_input + 1)));
    n->output = keep(malloc(sizeof *n->output * (n->n_output + 1)));
    memcpy(n->input, in, sizeof *n->input * n->n_input);
    memcpy(n->output, out, sizeof *n->output * n->n_output);
    n->attribute = keep(calloc(8, sizeof *n->attribute));
    b->nodes[b->g.n_node++] = n;
    return n;
}
#define IN(...) ((const char *const[]){__VA_ARGS__, NULL})

static Onnx__AttributeProto *attr(Onnx__NodeProto *n, const char *name, int type)
{
    Onnx__AttributeProto *a = keep(calloc(1, sizeof *a));
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void attr_i(Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static uint8_t *pack(model *b, size_t *len)
{
    *len = onnx__model_proto__get_packed_size(&b->m);
    uint8_t *buf = keep(malloc(*len ? *len : 1));
    onnx__model_proto__pack(&b->m, buf);
    return buf;
}

/* ------------------------------------------------------------ running */

typedef struct {
    Fluxion__V1__ModelSpec *spec;
    uint8_t *w;
    size_t wlen;
    char err[FXS_ERRLEN];
    int rc;
} imported;

static imported import(model *b)
{
    imported r = {0};
    size_t len;
    uint8_t *buf = pack(b, &len);
    r.rc = fxon_import(buf, len, &r.spec, &r.w, &r.wlen, r.err, sizeof r.err);
    return r;
}

static void imported_free(imported *r)
{
    if (r->spec)
        protobuf_c_message_free_unpacked(&r->spec->base, NULL);
    free(r->w);
}

static void expect_error(model *b, const char *needle)
{
    imported r = import(b);
    if (r.rc == 0)
        fail_msg("expected an error with '%s', the import succeeded", needle);
    assert_int_equal(r.rc, FXS_INVALID_ARGUMENT);
    if (!strstr(r.err, needle))
        fail_msg("error '%s' should contain '%s'", r.err, needle);
    assert_null(r.spec);
    assert_null(r.w);
    imported_free(&r);
}

/* Builds the imported graph, loads its weights, runs x [rows, cols] and
 * returns output 0's values (malloc'd; *n their count). */
static float *run(imported *r, int ndim, const int64_t *shape, const float *x, int64_t *n)
{
    char err[FXS_ERRLEN] = "";
    fxg_graph *g = NULL;
    fxg_options o = {.seed = 1};
    if (fxg_build(r->spec, &o, &g, err, sizeof err))
        fail_msg("fxg_build: %s", err);
    if (fxg_load_weights(g, r->w, r->wlen, err, sizeof err))
        fail_msg("fxg_load_weights: %s", err);
    fx_ctx *ctx = fx_ctx_create(fx_cpu());
    fx_ctx_set_grad(ctx, false);
    fx_tensor *in = fx_tensor_from_host(ctx, FX_F32, ndim, shape, x), *out[4];
    if (fxg_forward(g, ctx, &in, out, err, sizeof err))
        fail_msg("fxg_forward: %s", err);
    float *v = tu_values(out[0]);
    *n = fx_tensor_numel(out[0]);
    fx_ctx_free(ctx);
    fxg_free(g);
    return v;
}

static const Fluxion__V1__Node *spec_node(const Fluxion__V1__ModelSpec *s, const char *op, int k)
{
    for (size_t i = 0; i < s->n_nodes; i++)
        if (strcmp(s->nodes[i]->op, op) == 0 && k-- == 0)
            return s->nodes[i];
    fail_msg("no %s node", op);
    return NULL;
}

static const Fluxion__V1__AttrValue *spec_attr(const Fluxion__V1__Node *n, const char *key)
{
    for (size_t i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i]->key, key) == 0)
            return n->attrs[i]->value;
    fail_msg("node %s has no attribute %s", n->name, key);
    return NULL;
}

/* ------------------------------------------------------------ models */

static const float W23[6] = {1, 2, 3, -1, 0.5f, 0.25f}; /* [2,3] */
static const float B2[2] = {0.5f, -4};

/* y = Relu(Gemm(x, W, B, transB=1)); PyTorch's nn.Linear + relu. */
static model *gemm_model(void)
{
    model *b = model_new(17);
    input(b, "x", 2, (int64_t[]){-1, 3});
    init(b, tensor_f("fc.weight", 2, (int64_t[]){2, 3}, W23));
    init(b, tensor_f("fc.bias", 1, (int64_t[]){2}, B2));
    Onnx__NodeProto *g = node(b, "Gemm", "/fc/Gemm", IN("x", "fc.weight", "fc.bias"), IN("h"));
    attr_i(g, "transB", 1);
    node(b, "Relu", "/relu", IN("h"), IN("y"));
    output(b, "y");
    return b;
}

static void test_gemm_dense(void **state)
{
    (void)state;
    imported r = import(gemm_model());
    if (r.rc)
        fail_msg("import: %s", r.err);
    assert_int_equal(r.spec->n_nodes, 2);
    const Fluxion__V1__Node *d = spec_node(r.spec, "dense", 0);
    assert_string_equal(d->name, "fc"); /* named after the weight: fc.weight */
    assert_int_equal(spec_attr(d, "in_features")->i, 3);
    assert_int_equal(spec_attr(d, "out_features")->i, 2);
    assert_true(spec_attr(d, "bias")->b);
    assert_string_equal(r.spec->outputs[0]->name, "y");
    assert_int_equal(r.spec->inputs[0]->shape[0], -1);
    float x[6] = {1, 1, 1, 2, 0, -2};
    int64_t n;
    float *y = run(&r, 2, TU_SHAPE(2, 3), x, &n);
    float want[4] = {6.5f, 0, 0, 0}; /* [1+2+3+.5, -1+.5+.25-4 -> 0], [2-6+.5 -> 0, -2-.5-4 -> 0] */
    assert_int_equal(n, 4);
    tu_assert_close(y, want, 4, 1e-6);
    free(y);
    imported_free(&r);
    pool_free();
}

/* MatMul(x [N,2,3], W^T [3,2]) + Add(b): one dense with a bias; then the
 * PyTorch reshape chain x.view(x.size(0), -1) folds to reshape [0, -1]. */
static void test_matmul_bias_and_reshape_chain(void **state)
{
    (void)state;
    static const float WT[6] = {1, -1, 2, 0.5f, 3, 0.25f}; /* [3,2] = W23^T */
    static const int64_t zero[1] = {0}, minus1[1] = {-1}, ax0[1] = {0};
    model *b = model_new(13);
    input(b, "x", 3, (int64_t[]){-1, 2, 3});
    init(b, tensor_f("onnx::MatMul_9", 2, (int64_t[]){3, 2}, WT));
    init(b, tensor_f("lin.bias", 1, (int64_t[]){2}, B2));
    init(b, tensor_i("c0", 0, NULL, zero));
    init(b, tensor_i("ax0", 1, (int64_t[]){1}, ax0));
    init(b, tensor_i("m1", 1, (int64_t[]){1}, minus1));
    node(b, "MatMul", "/lin/MatMul", IN("x", "onnx::MatMul_9"), IN("mm"));
    node(b, "Add", "/lin/Add", IN("lin.bias", "mm"), IN("h"));
    node(b, "Shape", "/Shape", IN("h"), IN("s"));
    node(b, "Gather", "/Gather", IN("s", "c0"), IN("n"));
    node(b, "Unsqueeze", "/Unsqueeze", IN("n", "ax0"), IN("n1"));
    attr_i(node(b, "Concat", "/Concat", IN("n1", "m1"), IN("shape")), "axis", 0);
    node(b, "Reshape", "/Reshape", IN("h", "shape"), IN("y"));
    output(b, "y");
    imported r = import(b);
    if (r.rc)
        fail_msg("import: %s", r.err);
    assert_int_equal(r.spec->n_nodes, 2); /* dense, reshape: the rest folded */
    const Fluxion__V1__Node *d = spec_node(r.spec, "dense", 0);
    assert_true(spec_attr(d, "bias")->b);
    const Fluxion__V1__AttrValue *shape = spec_attr(spec_node(r.spec, "reshape", 0), "shape");
    assert_int_equal(shape->ints->n_values, 2);
    assert_int_equal(shape->ints->values[0], 0);
    assert_int_equal(shape->ints->values[1], -1);
    float x[6] = {1, 1, 1, 2, 0, -2};
    int64_t n;
    float *y = run(&r, 3, TU_SHAPE(1, 2, 3), x, &n);
    float want[4] = {6.5f, -4.25f, -3.5f, -6.5f};
    assert_int_equal(n, 4);
    tu_assert_close(y, want, 4, 1e-6);
    free(y);
    imported_free(&r);
    pool_free();
}

/* Scalar constants: 1 - x, x / 4, x ^ 2 as the engine's scalar ops. */
static void test_scalar_arithmetic(void **state)
{
    (void)state;
    static const float one[1] = {1}, four[1] = {4}, two[1] = {2};
    model *b = model_new(17);
    input(b, "x", 2, (int64_t[]){-1, 2});
    init(b, tensor_f("one", 0, NULL, one));
    init(b, tensor_f("four", 0, NULL, four));
    init(b, tensor_f("two", 0, NULL, two));
    node(b, "Sub", "sub", IN("one", "x"), IN("a"));
    node(b, "Div", "div", IN("a", "four"), IN("c"));
    node(b, "Pow", "pow", IN("c", "two"), IN("y"));
    output(b, "y");
    imported r = import(b);
    if (r.rc)
        fail_msg("import: %s", r.err);
    float x[2] = {3, -1};
    int64_t n;
    float *y = run(&r, 2, TU_SHAPE(1, 2), x, &n);
    float want[2] = {0.25f, 0.25f}; /* ((1-3)/4)^2, ((1+1)/4)^2 */
    tu_assert_close(y, want, 2, 1e-6);
    free(y);
    imported_free(&r);
    pool_free();
}

/* Constant tensors used as tensors (a layer norm's affine, exported at
 * opset 13 as Mul + Add): materialised as parameters, values kept. */
static void test_constant_tensor_operands(void **state)
{
    (void)state;
    static const float gamma[3] = {2, -1, 0.5f}, beta[3] = {0, 10, -1};
    model *b = model_new(13);
    input(b, "x", 2, (int64_t[]){-1, 3});
    init(b, tensor_f("ln.weight", 1, (int64_t[]){3}, gamma));
    init(b, tensor_f("ln.bias", 1, (int64_t[]){3}, beta));
    node(b, "Mul", "/ln/Mul", IN("x", "ln.weight"), IN("h"));
    node(b, "Add", "/ln/Add", IN("h", "ln.bias"), IN("y"));
    output(b, "y");
    imported r = import(b);
    if (r.rc)
        fail_msg("import: %s", r.err);
    float x[6] = {1, 2, 3, -1, 0, 4};
    int64_t n;
    float *y = run(&r, 2, TU_SHAPE(2, 3), x, &n);
    float want[6] = {2, 8, 0.5f, -2, 10, 1};
    assert_int_equal(n, 6);
    tu_assert_close(y, want, 6, 1e-6);
    free(y);
    imported_free(&r);
    pool_free();
}

static void attr_ints(Onnx__NodeProto *n, const char *name, int count, const int64_t *v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->ints = keep(malloc(sizeof *a->ints * (size_t)count));
    memcpy(a->ints, v, sizeof *a->ints * (size_t)count);
    a->n_ints = (size_t)count;
}

/* Split (sizes as input 1) -> outputs "node:K"; Concat; a Transpose of an
 * initializer folded into MatMul's weight; Clip; ReduceMax (axes an
 * attribute at opset 17). */
static void test_plumbing(void **state)
{
    (void)state;
    static const int64_t sizes[2] = {1, 3};
    static const float w2[8] = {1, 0, 0, 0, 0, 0, 0, 1}; /* [2,4] */
    static const float lo[1] = {0}, hi[1] = {1.5f};
    model *b = model_new(17);
    input(b, "x", 2, (int64_t[]){-1, 4});
    init(b, tensor_i("sizes", 1, (int64_t[]){2}, sizes));
    init(b, tensor_f("w2", 2, (int64_t[]){2, 4}, w2));
    init(b, tensor_f("lo", 0, NULL, lo));
    init(b, tensor_f("hi", 0, NULL, hi));
    attr_i(node(b, "Split", "split", IN("x", "sizes"), IN("a", "b")), "axis", 1);
    attr_i(node(b, "Concat", "cat", IN("b", "a"), IN("c")), "axis", 1);
    attr_ints(node(b, "Transpose", "wt", IN("w2"), IN("w2t")), "perm", 2, (int64_t[]){1, 0});
    node(b, "MatMul", "mm", IN("c", "w2t"), IN("m"));
    node(b, "Clip", "clip", IN("m", "lo", "hi"), IN("k"));
    Onnx__NodeProto *r = node(b, "ReduceMax", "rmax", IN("k"), IN("y"));
    attr_ints(r, "axes", 1, (int64_t[]){1});
    output(b, "y");
    imported im = import(b);
    if (im.rc)
        fail_msg("import: %s", im.err);
    const char *ops[] = {"split", "concat", "dense", "clamp", "max"};
    assert_int_equal(im.spec->n_nodes, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(im.spec->nodes[i]->op, ops[i]);
    assert_string_equal(im.spec->nodes[1]->inputs[0], "split:1");
    assert_string_equal(im.spec->nodes[1]->inputs[1], "split");
    float x[8] = {1, 2, 3, 4, 0, 0, 9, -5};
    int64_t n;
    float *y = run(&im, 2, TU_SHAPE(2, 4), x, &n);
    /* c = [2,3,4,1] -> [c0, c3] = [2, 1] -> clip [1.5, 1] -> max 1.5;
     * c = [0,9,-5,0] -> [0, 0] -> 0 */
    float want[2] = {1.5f, 0};
    assert_int_equal(n, 2);
    tu_assert_close(y, want, 2, 1e-6);
    free(y);
    imported_free(&im);
    pool_free();
}

static void attr_s(Onnx__NodeProto *n, const char *name, const char *v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)v;
    a->s.len = strlen(v);
}

static double gelu_exact(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double gelu_tanh(double x)
{
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* Exact GELU written out. kind 0: PyTorch's nn.GELU() before opset 20,
 * Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5); 1: the 0.5 first and a
 * Mul by 1/sqrt2, Mul(Mul(x, 0.5), Add(1, Erf(Mul(x, 0.7071)))); 2: kind 0
 * with Erf's output a graph output too; 3: kind 0 dividing by 2 instead
 * of sqrt2 (not a GELU). */
static model *gelu_written_out(int kind)
{
    static const float sqrt2[1] = {1.4142135f}, rsqrt2[1] = {0.70710677f}, one[1] = {1},
                       half[1] = {0.5f}, two[1] = {2};
    model *b = model_new(13);
    input(b, "x", 2, (int64_t[]){-1, 3});
    init(b, tensor_f("sqrt2", 0, NULL, kind == 3 ? two : sqrt2));
    init(b, tensor_f("rsqrt2", 0, NULL, rsqrt2));
    init(b, tensor_f("one", 0, NULL, one));
    init(b, tensor_f("half", 0, NULL, half));
    if (kind == 1) {
        node(b, "Mul", "/act/Mul", IN("x", "half"), IN("h"));
        node(b, "Mul", "/act/Mul_1", IN("x", "rsqrt2"), IN("d"));
        node(b, "Erf", "/act/Erf", IN("d"), IN("e"));
        node(b, "Add", "/act/Add", IN("one", "e"), IN("a"));
        node(b, "Mul", "/act/Mul_2", IN("h", "a"), IN("y"));
    } else {
        node(b, "Div", "/act/Div", IN("x", "sqrt2"), IN("d"));
        node(b, "Erf", "/act/Erf", IN("d"), IN("e"));
        node(b, "Add", "/act/Add", IN("e", "one"), IN("a"));
        node(b, "Mul", "/act/Mul", IN("x", "a"), IN("m"));
        node(b, "Mul", "/act/Mul_1", IN("m", "half"), IN("y"));
    }
    output(b, "y");
    if (kind == 2)
        output(b, "e");
    return b;
}

/* The written-out forms join into one gelu node (approximate none) unless
 * an inner value is read elsewhere or the constants are not a GELU's; the
 * values are right either way. Gelu at opset 20, exact (its default) and
 * tanh. All against doubles. */
static void test_erf_gelu(void **state)
{
    (void)state;
    static const float x[6] = {-3, -1, -0.25f, 0.5f, 1, 2.5f};
    float want[6], *y;
    int64_t n;
    imported r;
    model *b;
    for (int kind = 0; kind < 4; kind++) {
        r = import(gelu_written_out(kind));
        if (r.rc)
            fail_msg("import: %s", r.err);
        if (kind < 2) {
            assert_int_equal(r.spec->n_nodes, 1);
            const Fluxion__V1__Node *g = spec_node(r.spec, "gelu", 0);
            assert_string_equal(spec_attr(g, "approximate")->s, "none");
            assert_string_equal(g->inputs[0], "x");
            assert_string_equal(r.spec->outputs[0]->source, g->name);
        } else {
            assert_int_equal(r.spec->n_nodes, 5);
            spec_node(r.spec, "erf", 0);
        }
        y = run(&r, 2, TU_SHAPE(2, 3), x, &n);
        for (int i = 0; i < 6; i++)
            want[i] = (float)(kind == 3 ? 0.5 * x[i] * (1 + erf(x[i] / 2.0)) : gelu_exact(x[i]));
        assert_int_equal(n, 6);
        tu_assert_close(y, want, 6, 1e-6);
        free(y);
        imported_free(&r);
        pool_free();
    }
    for (int approx = 0; approx < 3; approx++) { /* absent, "none", "tanh" */
        b = model_new(20);
        input(b, "x", 2, (int64_t[]){-1, 3});
        Onnx__NodeProto *g = node(b, "Gelu", "/gelu", IN("x"), IN("y"));
        if (approx)
            attr_s(g, "approximate", approx == 1 ? "none" : "tanh");
        output(b, "y");
        r = import(b);
        if (r.rc)
            fail_msg("import: %s", r.err);
        const Fluxion__V1__Node *gn = spec_node(r.spec, "gelu", 0);
        if (approx < 2)
            assert_string_equal(spec_attr(gn, "approximate")->s, "none");
        y = run(&r, 2, TU_SHAPE(2, 3), x, &n);
        for (int i = 0; i < 6; i++)
            want[i] = (float)(approx < 2 ? gelu_exact(x[i]) : gelu_tanh(x[i]));
        tu_assert_close(y, want, 6, 1e-6);
        free(y);
        imported_free(&r);
        pool_free();
    }
    b = model_new(20);
    input(b, "x", 2, (int64_t[]){-1, 3});
    attr_s(node(b, "Gelu", "/gelu", IN("x"), IN("y")), "approximate", "sigmoid");
    output(b, "y");
    expect_error(b, "node '/gelu' (Gelu, opset 20): approximate='sigmoid' is not supported");
    pool_free();
    b = model_new(17); /* Gelu is opset 20 */
    input(b, "x", 2, (int64_t[]){-1, 3});
    node(b, "Gelu", "/gelu", IN("x"), IN("y"));
    output(b, "y");
    expect_error(b, "node '/gelu' (Gelu, opset 17)");
    pool_free();
}

/* ------------------------------------------------------------ refusals */

static void test_unsupported_op_and_attribute(void **state)
{
    (void)state;
    model *b = gemm_model();
    b->nodes[1]->op_type = "Frobnicate";
    expect_error(b, "node '/relu' (Frobnicate, opset 17): operator not supported");
    pool_free();
    b = gemm_model();
    attr_i(b->nodes[1], "colour", 3);
    expect_error(b, "node '/relu' (Relu, opset 17): attribute 'colour' is not supported");
    pool_free();
    b = gemm_model();
    attr_i(b->nodes[0], "transA", 1);
    expect_error(b, "(Gemm, opset 17): transA=1 is not supported");
    pool_free();
    b = gemm_model();
    b->nodes[1]->domain = "com.microsoft";
    expect_error(b, "domain 'com.microsoft' is not supported");
    pool_free();
    b = gemm_model(); /* an integer constant where a tensor must be */
    static const int64_t idx[2] = {1, 2};
    init(b, tensor_i("idx", 1, (int64_t[]){2}, idx));
    b->nodes[1]->input = (char **)IN("idx");
    expect_error(b, "'idx' is an integer constant the engine cannot use as a tensor");
    pool_free();
}

static void test_bad_models(void **state)
{
    (void)state;
    model *b = gemm_model();
    b->op.version = 12;
    expect_error(b, "opset 12 is not supported");
    pool_free();
    b = gemm_model();
    b->op.domain = "ai.onnx.ml";
    expect_error(b, "opset_import has no version for the default domain");
    pool_free();
    b = gemm_model(); /* raw data of the wrong size */
    b->inits[1]->n_float_data = 0;
    b->inits[1]->has_raw_data = 1;
    b->inits[1]->raw_data.data = (uint8_t *)"abc";
    b->inits[1]->raw_data.len = 3;
    expect_error(b, "raw_data holds 3 bytes, its shape needs 8");
    pool_free();
    b = gemm_model(); /* too few typed values */
    b->inits[0]->n_float_data = 5;
    expect_error(b, "holds 5 values, its shape needs 6");
    pool_free();
    b = gemm_model(); /* external data */
    b->inits[0]->has_data_location = 1;
    b->inits[0]->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    expect_error(b, "external data is not supported");
    pool_free();
    b = gemm_model(); /* a cycle: relu reads its own output through the gemm */
    b->nodes[0]->input = (char **)IN("y", "fc.weight", "fc.bias");
    expect_error(b, "cycle");
    pool_free();
    b = gemm_model();
    b->nodes[1]->input = (char **)IN("nowhere");
    expect_error(b, "input 'nowhere' is not a graph input");
    pool_free();
    b = gemm_model();
    b->nodes[1]->output = (char **)IN("h");
    expect_error(b, "defined twice");
    pool_free();
    b = gemm_model();
    b->ins[0]->type = NULL;
    expect_error(b, "graph input 'x' has no shape");
    pool_free();
    b = gemm_model();
    b->nodes[1]->name = "bad\xff\xfe";
    expect_error(b, "not valid UTF-8");
    pool_free();
    b = gemm_model();
    b->outs[0]->name = "missing";
    expect_error(b, "graph output 'missing' is not computed");
    pool_free();
    b = gemm_model(); /* 8 dims of 2^40: the element count overflows */
    static const int64_t huge[8] = {1LL << 40, 1LL << 40, 1LL << 40, 1LL << 40,
                                    1LL << 40, 1LL << 40, 1LL << 40, 1LL << 40};
    b->inits[0]->dims = (int64_t *)huge;
    b->inits[0]->n_dims = 8;
    expect_error(b, "initializer 'fc.weight'");
    pool_free();
    b = gemm_model();
    b->m.graph = NULL;
    expect_error(b, "the model has no graph");
    pool_free();

    char err[256];
    Fluxion__V1__ModelSpec *spec;
    uint8_t *w;
    size_t wl;
    assert_int_equal(fxon_import((const uint8_t *)"", 0, &spec, &w, &wl, err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(
        fxon_import((const uint8_t *)"\xff\xff\xff\xff", 4, &spec, &w, &wl, err, sizeof err),
        FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "not an ONNX model"));
}

/* Every prefix of a valid file, and byte mutations of it (fixed seed):
 * each either imports or fails with a message; ASan watches the rest. */
/* Every prefix and 4000 mutations of b's file. */
static void truncate_and_mutate(model *b)
{
    size_t len;
    uint8_t *good = pack(b, &len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    int ok = 0, refused = 0;
    for (size_t n = 0; n <= len; n++) {
        char err[FXS_ERRLEN] = "";
        Fluxion__V1__ModelSpec *spec = NULL;
        uint8_t *w = NULL;
        size_t wl = 0;
        memcpy(buf, good, n);
        int rc = fxon_import(buf, n, &spec, &w, &wl, err, sizeof err);
        if (rc) {
            assert_true(err[0] != 0);
            refused++;
        } else {
            ok++;
            protobuf_c_message_free_unpacked(&spec->base, NULL);
            free(w);
        }
    }
    assert_int_equal(ok, 1); /* only the whole file */
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int k = 0; k < 4000; k++) {
        memcpy(buf, good, len);
        for (int j = 0; j < 1 + k % 4; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            buf[s % len] = (uint8_t)(s >> 32);
        }
        char err[FXS_ERRLEN] = "";
        Fluxion__V1__ModelSpec *spec = NULL;
        uint8_t *w = NULL;
        size_t wl = 0;
        int rc = fxon_import(buf, len, &spec, &w, &wl, err, sizeof err);
        if (rc) {
            assert_true(err[0] != 0);
            assert_true(rc == FXS_INVALID_ARGUMENT || rc == FXS_RESOURCE_EXHAUSTED);
            refused++;
        } else {
            protobuf_c_message_free_unpacked(&spec->base, NULL);
            free(w);
        }
    }
    assert_true(refused > 1000);
    free(buf);
    pool_free();
}

/* The Gemm model, and the written-out GELU (the fusion's walk over
 * whatever the mutations leave of it). */
static void test_truncated_and_mutated(void **state)
{
    (void)state;
    truncate_and_mutate(gemm_model());
    truncate_and_mutate(gelu_written_out(0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_dense),
        cmocka_unit_test(test_matmul_bias_and_reshape_chain),
        cmocka_unit_test(test_scalar_arithmetic),
        cmocka_unit_test(test_constant_tensor_operands),
        cmocka_unit_test(test_plumbing),
        cmocka_unit_test(test_erf_gelu),
        cmocka_unit_test(test_unsupported_op_and_attribute),
        cmocka_unit_test(test_bad_models),
        cmocka_unit_test(test_truncated_and_mutated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
