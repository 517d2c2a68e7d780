/*
 * test_onnx_layers.c - the ONNX importer's layer converters on small
 * hand-built models: the gate reordering of LSTM and GRU weights (ONNX
 * i,o,f,c and z,r,h -> PyTorch i,f,g,o and r,z,n) on tensors whose values
 * name their position, both directions of a bidirectional layer, the bias
 * split, conv weights copied as they are, and the refusals (attributes the
 * engine lacks) naming node, op type, opset and attribute.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "onnx/import_layers.h"
#include "onnx/onnx.h"

/* ---- a tiny ModelProto builder (one node, inputs, initializers) */

typedef struct {
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto opset, *opsets[1];
    Onnx__NodeProto node, *nodes[1];
    Onnx__AttributeProto attrs[8], *attrp[8];
    Onnx__TensorProto inits[6], *initp[6];
    Onnx__ValueInfoProto ins[3], *inp[3], outs[3], *outp[3];
    Onnx__TypeProto types[6];
    Onnx__TypeProto__Tensor ttypes[6];
    Onnx__TensorShapeProto shapes[6];
    Onnx__TensorShapeProto__Dimension dims[6][4], *dimp[6][4];
    char *node_in[8], *node_out[3];
    int64_t idims[6][4];
    int nt;
} mb;

static void mb_init(mb *m, const char *op, const char *name, int64_t opset)
{
    memset(m, 0, sizeof *m);
    onnx__model_proto__init(&m->model);
    onnx__graph_proto__init(&m->graph);
    onnx__operator_set_id_proto__init(&m->opset);
    onnx__node_proto__init(&m->node);
    m->opset.domain = "";
    m->opset.has_version = 1;
    m->opset.version = opset;
    m->opsets[0] = &m->opset;
    m->model.n_opset_import = 1;
    m->model.opset_import = m->opsets;
    m->model.has_ir_version = 1;
    m->model.ir_version = 8;
    m->model.graph = &m->graph;
    m->graph.name = "g";
    m->node.op_type = (char *)op;
    m->node.name = (char *)name;
    m->nodes[0] = &m->node;
    m->graph.n_node = 1;
    m->graph.node = m->nodes;
    m->node.input = m->node_in;
    m->node.output = m->node_out;
    m->node.attribute = m->attrp;
    m->graph.initializer = m->initp;
    m->graph.input = m->inp;
    m->graph.output = m->outp;
}

static Onnx__TypeProto *mb_type(mb *m, int ndim, const int64_t *shape)
{
    int t = m->nt++;
    onnx__type_proto__init(&m->types[t]);
    onnx__type_proto__tensor__init(&m->ttypes[t]);
    onnx__tensor_shape_proto__init(&m->shapes[t]);
    m->ttypes[t].has_elem_type = 1;
    m->ttypes[t].elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    for (int d = 0; d < ndim; d++) {
        onnx__tensor_shape_proto__dimension__init(&m->dims[t][d]);
        m->dims[t][d].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        m->dims[t][d].dim_value = shape[d];
        m->dimp[t][d] = &m->dims[t][d];
    }
    m->shapes[t].n_dim = (size_t)ndim;
    m->shapes[t].dim = m->dimp[t];
    m->ttypes[t].shape = &m->shapes[t];
    m->types[t].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    m->types[t].tensor_type = &m->ttypes[t];
    return &m->types[t];
}

/* A graph input (also the node's next input). */
static void mb_input(mb *m, const char *name, int ndim, const int64_t *shape)
{
    Onnx__ValueInfoProto *v = &m->ins[m->graph.n_input];
    onnx__value_info_proto__init(v);
    v->name = (char *)name;
    v->type = mb_type(m, ndim, shape);
    m->inp[m->graph.n_input++] = v;
    m->node_in[m->node.n_input++] = (char *)name;
}

/* An initializer with values 0, 1, 2, ... (also the node's next input). */
static void mb_weight(mb *m, const char *name, int ndim, const int64_t *shape)
{
    Onnx__TensorProto *t = &m->inits[m->graph.n_initializer];
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    int k = (int)m->graph.n_initializer;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        m->idims[k][d] = shape[d];
        numel *= shape[d];
    }
    t->n_dims = (size_t)ndim;
    t->dims = m->idims[k];
    t->n_float_data = (size_t)numel;
    t->float_data = malloc((size_t)numel * sizeof(float));
    for (int64_t i = 0; i < numel; i++)
        t->float_data[i] = (float)i;
    m->initp[m->graph.n_initializer++] = t;
    m->node_in[m->node.n_input++] = (char *)name;
}

static void mb_skip_input(mb *m) { m->node_in[m->node.n_input++] = ""; }

static void mb_output(mb *m, const char *name)
{
    Onnx__ValueInfoProto *v = &m->outs[m->graph.n_output];
    onnx__value_info_proto__init(v);
    v->name = (char *)name;
    m->outp[m->graph.n_output++] = v;
    m->node_out[m->node.n_output++] = (char *)name;
}

static Onnx__AttributeProto *mb_attr(mb *m, const char *name, int type)
{
    Onnx__AttributeProto *a = &m->attrs[m->node.n_attribute];
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = type;
    m->attrp[m->node.n_attribute++] = a;
    return a;
}

static void mb_int(mb *m, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = mb_attr(m, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static void mb_ints(mb *m, const char *name, int n, int64_t *v)
{
    Onnx__AttributeProto *a = mb_attr(m, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = (size_t)n;
    a->ints = v;
}

static void mb_str(mb *m, const char *name, const char *v)
{
    Onnx__AttributeProto *a = mb_attr(m, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)v;
    a->s.len = strlen(v);
}

/* Imports m: 0 and the spec and decoded weights, or the code with err. */
static int mb_import(mb *m, Fluxion__V1__ModelSpec **spec, fx_params *w, char *err, size_t errlen)
{
    size_t len = onnx__model_proto__get_packed_size(&m->model);
    uint8_t *buf = malloc(len);
    onnx__model_proto__pack(&m->model, buf);
    for (size_t i = 0; i < m->graph.n_initializer; i++)
        free(m->inits[i].float_data);
    uint8_t *weights = NULL;
    size_t wlen = 0;
    int rc = fxon_import(buf, len, spec, &weights, &wlen, err, errlen);
    free(buf);
    if (rc == 0) {
        memset(w, 0, sizeof *w);
        assert_int_equal(fx_safetensors_decode(weights, wlen, w, err, errlen), FX_OK);
        free(weights);
    }
    return rc;
}

static float *param(const fx_params *w, const char *name, int64_t numel)
{
    fx_tensor *t = fx_params_find(w, name);
    if (!t)
        fail_msg("no parameter %s", name);
    assert_int_equal(fx_tensor_numel(t), numel);
    return tu_values(t);
}

static const Fluxion__V1__Node *spec_node(const Fluxion__V1__ModelSpec *s, const char *op)
{
    for (size_t i = 0; i < s->n_nodes; i++)
        if (!strcmp(s->nodes[i]->op, op))
            return s->nodes[i];
    fail_msg("no %s node in the spec", op);
    return NULL;
}

/* ---- the pure layout functions */

static void test_gates_reorder(void **state)
{
    (void)state;
    /* 4 gates of H=2 rows, 3 columns: value = 100 gate + 10 row + col */
    float src[24], dst[24];
    for (int g = 0; g < 4; g++)
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 3; c++)
                src[(g * 2 + r) * 3 + c] = (float)(100 * g + 10 * r + c);
    fxon__gates_reorder(dst, src, 4, fxon__lstm_perm, 2, 3);
    /* PyTorch block j = ONNX block: i <- 0, f <- 2, g <- 3 (c), o <- 1 */
    const int want[4] = { 0, 2, 3, 1 };
    for (int g = 0; g < 4; g++)
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 3; c++)
                assert_true(dst[(g * 2 + r) * 3 + c] == (float)(100 * want[g] + 10 * r + c));
    float b[3] = { 7, 8, 9 }, bd[3];
    fxon__gates_reorder(bd, b, 3, fxon__gru_perm, 1, 1); /* z,r,h -> r,z,n */
    assert_true(bd[0] == 8 && bd[1] == 7 && bd[2] == 9);
    float g2[2] = { 0.5f, 2.0f }, c6[6];
    fxon__groups_to_channels(c6, g2, 2, 6);
    assert_true(c6[0] == 0.5f && c6[2] == 0.5f && c6[3] == 2.0f && c6[5] == 2.0f);
}

/* ---- converters end to end on hand-built models */

static void test_lstm_bidirectional(void **state)
{
    (void)state;
    mb m;
    char err[512];
    mb_init(&m, "LSTM", "lstm", 14);
    const int64_t H = 2, IN = 3;
    mb_input(&m, "x", 3, TU_SHAPE(5, 4, IN)); /* [T, N, in] */
    mb_weight(&m, "W", 3, TU_SHAPE(2, 4 * H, IN));
    mb_weight(&m, "R", 3, TU_SHAPE(2, 4 * H, H));
    mb_weight(&m, "B", 2, TU_SHAPE(2, 8 * H));
    mb_output(&m, "y");
    mb_output(&m, "y_h");
    mb_int(&m, "hidden_size", H);
    mb_str(&m, "direction", "bidirectional");
    Fluxion__V1__ModelSpec *spec = NULL;
    fx_params w;
    int rc = mb_import(&m, &spec, &w, err, sizeof err);
    if (rc)
        fail_msg("import failed: %s", err);
    const Fluxion__V1__Node *lstm = spec_node(spec, "lstm");
    char name[128];
    /* weight_ih: W[d] is [4H, IN] with values d*4H*IN + row*IN + col */
    for (int d = 0; d < 2; d++) {
        snprintf(name, sizeof name, "%s.weight_ih_l0%s", lstm->name, d ? "_reverse" : "");
        float *v = param(&w, name, 4 * H * IN);
        const int from[4] = { 0, 2, 3, 1 };
        for (int g = 0; g < 4; g++)
            for (int r = 0; r < H; r++)
                for (int c = 0; c < IN; c++)
                    assert_true(v[(g * H + r) * IN + c] ==
                                (float)(d * 4 * H * IN + (from[g] * H + r) * IN + c));
        free(v);
        /* biases: B[d] = Wb (4H) then Rb (4H) */
        snprintf(name, sizeof name, "%s.bias_hh_l0%s", lstm->name, d ? "_reverse" : "");
        v = param(&w, name, 4 * H);
        for (int g = 0; g < 4; g++)
            for (int r = 0; r < H; r++)
                assert_true(v[g * H + r] == (float)(d * 8 * H + 4 * H + from[g] * H + r));
        free(v);
    }
    /* time-major in: a permute feeds the lstm; Y [T, D, N, H] out */
    const Fluxion__V1__Node *perm = spec_node(spec, "permute");
    assert_string_equal(lstm->inputs[0], perm->name);
    snprintf(name, sizeof name, "%s:1", lstm->name);
    assert_int_equal(spec->n_outputs, 2);
    assert_string_equal(spec->outputs[1]->name, "y_h");
    assert_string_equal(spec->outputs[1]->source, name);
    fx_params_free_tensors(&w);
    protobuf_c_message_free_unpacked(&spec->base, NULL);
}

static void test_gru(void **state)
{
    (void)state;
    mb m;
    char err[512];
    mb_init(&m, "GRU", "gru", 13);
    const int64_t H = 2, IN = 1;
    mb_input(&m, "x", 3, TU_SHAPE(5, 4, IN));
    mb_weight(&m, "W", 3, TU_SHAPE(1, 3 * H, IN));
    mb_weight(&m, "R", 3, TU_SHAPE(1, 3 * H, H));
    mb_output(&m, "y");
    mb_int(&m, "linear_before_reset", 1);
    Fluxion__V1__ModelSpec *spec = NULL;
    fx_params w;
    if (mb_import(&m, &spec, &w, err, sizeof err))
        fail_msg("import failed: %s", err);
    const Fluxion__V1__Node *gru = spec_node(spec, "gru");
    char name[128];
    snprintf(name, sizeof name, "%s.weight_ih_l0", gru->name);
    float *v = param(&w, name, 3 * H);
    /* rows z0 z1 r0 r1 h0 h1 = 0..5 -> r0 r1 z0 z1 n0 n1 */
    const float want[6] = { 2, 3, 0, 1, 4, 5 };
    for (int i = 0; i < 6; i++)
        assert_true(v[i] == want[i]);
    free(v);
    /* no B: the engine's layer has no biases */
    snprintf(name, sizeof name, "%s.bias_ih_l0", gru->name);
    assert_null(fx_params_find(&w, name));
    fx_params_free_tensors(&w);
    protobuf_c_message_free_unpacked(&spec->base, NULL);
}

static void test_conv_weights(void **state)
{
    (void)state;
    mb m;
    char err[512];
    mb_init(&m, "Conv", "conv", 13);
    mb_input(&m, "x", 4, TU_SHAPE(1, 4, 6, 6));
    mb_weight(&m, "conv.weight", 4, TU_SHAPE(6, 2, 3, 3));
    mb_weight(&m, "conv.bias", 1, TU_SHAPE(6));
    mb_output(&m, "y");
    mb_int(&m, "group", 2);
    int64_t pads[4] = { 1, 1, 1, 1 }, strides[2] = { 2, 1 };
    mb_ints(&m, "pads", 4, pads);
    mb_ints(&m, "strides", 2, strides);
    Fluxion__V1__ModelSpec *spec = NULL;
    fx_params w;
    if (mb_import(&m, &spec, &w, err, sizeof err))
        fail_msg("import failed: %s", err);
    const Fluxion__V1__Node *conv = spec_node(spec, "conv2d");
    char name[128];
    snprintf(name, sizeof name, "%s.weight", conv->name);
    float *v = param(&w, name, 6 * 2 * 9);
    for (int i = 0; i < 108; i++)
        assert_true(v[i] == (float)i);
    free(v);
    fx_params_free_tensors(&w);
    protobuf_c_message_free_unpacked(&spec->base, NULL);
}

/* The ints attribute key of a spec node. */
static void assert_ints(const Fluxion__V1__Node *node, const char *key, int n, const int64_t *want)
{
    for (size_t i = 0; i < node->n_attrs; i++) {
        if (strcmp(node->attrs[i]->key, key))
            continue;
        const Fluxion__V1__AttrValue *v = node->attrs[i]->value;
        assert_int_equal(v->value_case, FLUXION__V1__ATTR_VALUE__VALUE_INTS);
        assert_int_equal(v->ints->n_values, n);
        for (int k = 0; k < n; k++)
            assert_int_equal(v->ints->values[k], want[k]);
        return;
    }
    fail_msg("no attribute %s", key);
}

/* auto_pad SAME_UPPER with an odd kernel: symmetric padding. */
static void test_conv_auto_pad(void **state)
{
    (void)state;
    mb m;
    char err[512];
    mb_init(&m, "Conv", "same", 13);
    mb_input(&m, "x", 4, TU_SHAPE(1, 2, 7, 7));
    mb_weight(&m, "w", 4, TU_SHAPE(3, 2, 3, 5));
    mb_output(&m, "y");
    mb_str(&m, "auto_pad", "SAME_UPPER");
    Fluxion__V1__ModelSpec *spec = NULL;
    fx_params w;
    if (mb_import(&m, &spec, &w, err, sizeof err))
        fail_msg("import failed: %s", err);
    const Fluxion__V1__Node *conv = spec_node(spec, "conv2d");
    assert_ints(conv, "padding", 2, (const int64_t[]){ 1, 2 });
    assert_ints(conv, "kernel_size", 2, (const int64_t[]){ 3, 5 });
    fx_params_free_tensors(&w);
    protobuf_c_message_free_unpacked(&spec->base, NULL);
    /* an even kernel needs uneven padding */
    mb_init(&m, "Conv", "even", 13);
    mb_input(&m, "x", 4, TU_SHAPE(1, 2, 7, 7));
    mb_weight(&m, "w", 4, TU_SHAPE(3, 2, 2, 2));
    mb_output(&m, "y");
    mb_str(&m, "auto_pad", "SAME_LOWER");
    char err2[512] = "";
    assert_int_equal(mb_import(&m, &spec, &w, err2, sizeof err2), FXS_INVALID_ARGUMENT);
    assert_non_null(strstr(err2, "auto_pad"));
}

/* GroupNormalization at opset 18 scales per group: the engine's groupnorm
 * gets each group's scale and bias repeated over its channels. */
static void test_groupnorm_per_group(void **state)
{
    (void)state;
    mb m;
    char err[512];
    mb_init(&m, "GroupNormalization", "gn", 18);
    mb_input(&m, "x", 4, TU_SHAPE(2, 6, 3, 3));
    mb_weight(&m, "gn.weight", 1, TU_SHAPE(2)); /* 0, 1 */
    mb_weight(&m, "gn.bias", 1, TU_SHAPE(2));
    mb_output(&m, "y");
    mb_int(&m, "num_groups", 2);
    Fluxion__V1__ModelSpec *spec = NULL;
    fx_params w;
    if (mb_import(&m, &spec, &w, err, sizeof err))
        fail_msg("import failed: %s", err);
    const Fluxion__V1__Node *gn = spec_node(spec, "groupnorm");
    char name[128];
    snprintf(name, sizeof name, "%s.weight", gn->name);
    float *v = param(&w, name, 6);
    const float want[6] = { 0, 0, 0, 1, 1, 1 };
    for (int i = 0; i < 6; i++)
        assert_true(v[i] == want[i]);
    free(v);
    fx_params_free_tensors(&w);
    protobuf_c_message_free_unpacked(&spec->base, NULL);
}

/* One refusal: the import fails with INVALID_ARGUMENT and each word in the
 * message. */
static void expect_refusal(mb *m, const char *const *words)
{
    char err[512] = "";
    Fluxion__V1__ModelSpec *spec = NULL;
    fx_params w;
    int rc = mb_import(m, &spec, &w, err, sizeof err);
    if (rc != FXS_INVALID_ARGUMENT)
        fail_msg("expected a refusal, got %d: %s", rc, err);
    for (const char *const *s = words; *s; s++)
        if (!strstr(err, *s))
            fail_msg("'%s' not in: %s", *s, err);
}

static void test_refusals(void **state)
{
    (void)state;
    mb m;
    /* a reverse-only LSTM */
    mb_init(&m, "LSTM", "back", 13);
    mb_input(&m, "x", 3, TU_SHAPE(5, 4, 3));
    mb_weight(&m, "W", 3, TU_SHAPE(1, 8, 3));
    mb_weight(&m, "R", 3, TU_SHAPE(1, 8, 2));
    mb_output(&m, "y");
    mb_str(&m, "direction", "reverse");
    expect_refusal(&m, (const char *[]){ "back", "LSTM", "opset 13", "direction", NULL });
    /* GRU without linear_before_reset */
    mb_init(&m, "GRU", "g", 13);
    mb_input(&m, "x", 3, TU_SHAPE(5, 4, 3));
    mb_weight(&m, "W", 3, TU_SHAPE(1, 6, 3));
    mb_weight(&m, "R", 3, TU_SHAPE(1, 6, 2));
    mb_output(&m, "y");
    expect_refusal(&m, (const char *[]){ "'g'", "GRU", "linear_before_reset", NULL });
    /* clip */
    mb_init(&m, "RNN", "r", 13);
    mb_input(&m, "x", 3, TU_SHAPE(5, 4, 3));
    mb_weight(&m, "W", 3, TU_SHAPE(1, 2, 3));
    mb_weight(&m, "R", 3, TU_SHAPE(1, 2, 2));
    mb_output(&m, "y");
    mb_attr(&m, "clip", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)->has_f = 1;
    expect_refusal(&m, (const char *[]){ "RNN", "clip", NULL });
    /* a peephole LSTM */
    mb_init(&m, "LSTM", "peep", 13);
    mb_input(&m, "x", 3, TU_SHAPE(5, 4, 3));
    mb_weight(&m, "W", 3, TU_SHAPE(1, 8, 3));
    mb_weight(&m, "R", 3, TU_SHAPE(1, 8, 2));
    for (int i = 0; i < 4; i++)
        mb_skip_input(&m);
    mb_weight(&m, "P", 2, TU_SHAPE(1, 6));
    mb_output(&m, "y");
    expect_refusal(&m, (const char *[]){ "peep", "P", NULL });
    /* asymmetric pads */
    int64_t pads[4] = { 0, 0, 1, 1 };
    mb_init(&m, "Conv", "c", 17);
    mb_input(&m, "x", 4, TU_SHAPE(1, 2, 5, 5));
    mb_weight(&m, "w", 4, TU_SHAPE(2, 2, 2, 2));
    mb_output(&m, "y");
    mb_ints(&m, "pads", 4, pads);
    expect_refusal(&m, (const char *[]){ "'c'", "Conv", "opset 17", "pads", NULL });
    /* an unknown attribute */
    mb_init(&m, "MaxPool", "mp", 13);
    mb_input(&m, "x", 4, TU_SHAPE(1, 2, 5, 5));
    mb_output(&m, "y");
    int64_t k[2] = { 2, 2 };
    mb_ints(&m, "kernel_shape", 2, k);
    mb_int(&m, "frobnicate", 1);
    expect_refusal(&m, (const char *[]){ "MaxPool", "frobnicate", NULL });
    /* a Pad of the batch and channel dims (values 0, 1, ...) */
    mb_init(&m, "Pad", "pad", 13);
    mb_input(&m, "x", 4, TU_SHAPE(1, 2, 5, 5));
    mb_weight(&m, "pads", 1, TU_SHAPE(8));
    mb_output(&m, "y");
    expect_refusal(&m, (const char *[]){ "'pad'", "Pad", "pads", "dim 0", NULL });
    /* MaxPool's Indices output, used */
    mb_init(&m, "MaxPool", "mpi", 13);
    mb_input(&m, "x", 4, TU_SHAPE(1, 2, 4, 4));
    mb_output(&m, "y");
    mb_output(&m, "idx");
    mb_ints(&m, "kernel_shape", 2, k);
    expect_refusal(&m, (const char *[]){ "mpi", "output 1", NULL });
    /* ConvTranspose's output_shape */
    mb_init(&m, "ConvTranspose", "ct", 13);
    mb_input(&m, "x", 4, TU_SHAPE(1, 2, 4, 4));
    mb_weight(&m, "w", 4, TU_SHAPE(2, 2, 3, 3));
    mb_output(&m, "y");
    int64_t os[2] = { 9, 9 };
    mb_ints(&m, "output_shape", 2, os);
    expect_refusal(&m, (const char *[]){ "ConvTranspose", "output_shape", NULL });
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gates_reorder), cmocka_unit_test(test_lstm_bidirectional),
        cmocka_unit_test(test_gru),           cmocka_unit_test(test_conv_weights),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_groupnorm_per_group),
        cmocka_unit_test(test_conv_auto_pad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
