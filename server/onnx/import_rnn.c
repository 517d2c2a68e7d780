/*
 * import_rnn.c - ONNX RNN, GRU and LSTM -> the engine's rnn, gru and lstm
 * (one layer each: PyTorch exports a stacked RNN as one ONNX node per
 * layer). The engine is batch-first with PyTorch's weights: per direction
 * weight_ih_l0 [G*H, in], weight_hh_l0 [G*H, H], bias_ih_l0 and bias_hh_l0
 * [G*H], gates in PyTorch's order (LSTM i,f,g,o; GRU r,z,n), where ONNX
 * stacks W [D, G*H, in], R [D, G*H, H], B [D, 2*G*H] (Wb then Rb) in its
 * own order (LSTM i,o,f,c; GRU z,r,h). ONNX's layout 0 is time-major
 * ([T, N, in] in, Y [T, D, N, H] out), so permutes and a reshape wrap the
 * engine's node; layout 1 ([N, T, in], Y [N, T, D, H]) needs only the
 * reshape.
 *
 * Supported: directions forward and bidirectional, sequence_lens (a
 * run-time tensor), initial states (run-time tensors, given with
 * sequence_lens; constant zeros are the engine's default), the default
 * activations (RNN also Relu), GRU's linear_before_reset 1 (PyTorch's).
 * Refused, naming the attribute: direction reverse, clip, other
 * activations, input_forget, peepholes.
 */
#include "onnx/import_layers.h"

#include <string.h>

#include "base/status.h"

typedef enum { CELL_RNN, CELL_GRU, CELL_LSTM } cell_kind;

static const char *const engine_op[] = { "rnn", "gru", "lstm" };
static const int cell_gates[] = { 1, 3, 4 };

/* True when the optional input i is absent or a constant of zeros. */
static bool zero_or_absent(fxon_ctx *cx, const Onnx__NodeProto *n, int i)
{
    if (!fxon_in(n, i))
        return true;
    const fxon_value *v = fxon_value_of(cx, fxon_in(n, i));
    if (!v || !v->c)
        return false;
    for (int64_t k = 0; k < v->c->numel; k++)
        if (fxon_const_float(v->c, k) != 0)
            return false;
    return true;
}

/* The activations attribute must hold each direction's defaults. */
static int check_activations(fxon_ctx *cx, const Onnx__NodeProto *n, cell_kind kind, int D,
                             bool *relu)
{
    static const char *const defaults[3][3] = { { "Tanh" }, { "Sigmoid", "Tanh" },
                                                { "Sigmoid", "Tanh", "Tanh" } };
    const Onnx__AttributeProto *a = fxon_attr(n, "activations");
    *relu = false;
    if (!a)
        return 0;
    size_t per = kind == CELL_RNN ? 1 : kind == CELL_GRU ? 2 : 3;
    if (a->n_strings != per * (size_t)D)
        return fxon_fail(cx, "attribute 'activations' has %zu values, expected %zu",
                         a->n_strings, per * (size_t)D);
    for (size_t k = 0; k < a->n_strings; k++) {
        const char *s = a->strings[k].data ? (const char *)a->strings[k].data : "";
        int len = (int)(a->strings[k].len > 32 ? 32 : a->strings[k].len);
        const char *want = defaults[kind][k % per];
#define IS(name) (a->strings[k].len == strlen(name) && !memcmp(s, name, strlen(name)))
        if (kind == CELL_RNN && (IS("Relu") || IS("Tanh"))) {
            if (k > 0 && IS("Relu") != *relu)
                return fxon_fail(cx, "attribute 'activations': the directions must agree");
            *relu = IS("Relu");
        } else if (!IS(want)) {
            return fxon_fail(cx, "attribute 'activations' value '%.*s' is not supported "
                             "(position %zu: the engine's cell uses %s%s)", len, s, k, want,
                             kind == CELL_RNN ? " or Relu" : "");
        }
#undef IS
    }
    return 0;
}

/* A permute (or reshape) node of one input, returning its reference. */
static Fluxion__V1__Node *emit_shape_op(fxon_ctx *cx, const char *op, const char *key,
                                        const char *in, const char *hint, const int64_t *v,
                                        size_t nv)
{
    Fluxion__V1__Node *node = fxon_emit(cx, op, hint, 1, &in);
    if (node && fxon_set_ints(cx, node, key, v, nv))
        return NULL;
    return node;
}

/* Converts one ONNX direction's weights to the engine's parameters. */
static int direction_params(fxon_ctx *cx, Fluxion__V1__Node *node, cell_kind kind, int d,
                            int64_t H, int64_t in, const fxon_const *W, const fxon_const *R,
                            const fxon_const *B)
{
    static const int one[1] = { 0 };
    const int *perm = kind == CELL_LSTM ? fxon__lstm_perm : kind == CELL_GRU ? fxon__gru_perm : one;
    int G = cell_gates[kind];
    const char *sfx = d ? "_reverse" : "";
    int64_t wih[2] = { G * H, in }, whh[2] = { G * H, H }, b[1] = { G * H };
    float *p;
    if (!(p = fxon_param(cx, node, fxon_printf(cx, "weight_ih_l0%s", sfx), 2, wih)))
        return FXS_INVALID_ARGUMENT;
    fxon__gates_reorder(p, W->f + (size_t)d * G * H * in, G, perm, H, in);
    if (!(p = fxon_param(cx, node, fxon_printf(cx, "weight_hh_l0%s", sfx), 2, whh)))
        return FXS_INVALID_ARGUMENT;
    fxon__gates_reorder(p, R->f + (size_t)d * G * H * H, G, perm, H, H);
    if (!B)
        return 0;
    const float *bd = B->f + (size_t)d * 2 * G * H;
    if (!(p = fxon_param(cx, node, fxon_printf(cx, "bias_ih_l0%s", sfx), 1, b)))
        return FXS_INVALID_ARGUMENT;
    fxon__gates_reorder(p, bd, G, perm, H, 1);
    if (!(p = fxon_param(cx, node, fxon_printf(cx, "bias_hh_l0%s", sfx), 1, b)))
        return FXS_INVALID_ARGUMENT;
    fxon__gates_reorder(p, bd + G * H, G, perm, H, 1);
    return 0;
}

/* "<hint>_<what>" for the nodes around the layer, so that the layer itself
 * gets the hint (its parameters read "rnn_LSTM.weight_ih_l0"). */
static const char *aux_name(fxon_ctx *cx, const char *hint, const char *what)
{
    return hint ? fxon_printf(cx, "%s_%s", hint, what) : NULL;
}

/* A state input (initial_h / initial_c) as the engine's [D, N, H]. */
static int state_ref(fxon_ctx *cx, const Onnx__NodeProto *n, int i, int64_t layout,
                     const char *hint, const char **ref)
{
    int rc = fxon_need_ref(cx, n, i, ref);
    if (rc || !layout)
        return rc;
    Fluxion__V1__Node *p = emit_shape_op(cx, "permute", "dims", *ref,
                                         aux_name(cx, hint, i == 5 ? "h0" : "c0"),
                                         (const int64_t[]){ 1, 0, 2 }, 3);
    if (!p)
        return FXS_INVALID_ARGUMENT;
    *ref = fxon_out_ref(cx, p, 0);
    return 0;
}

int fxon__cv_rnn(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    cell_kind kind = !strcmp(n->op_type, "LSTM") ? CELL_LSTM
                     : !strcmp(n->op_type, "GRU") ? CELL_GRU : CELL_RNN;
    static const char *const known[] = { "activation_alpha", "activation_beta", "activations",
                                         "clip", "direction", "hidden_size", "layout",
                                         "linear_before_reset", "input_forget", NULL };
    int rc = fxon_attrs_known(cx, n, known);
    if (rc)
        return rc;
    if ((kind != CELL_GRU && fxon_attr(n, "linear_before_reset")) ||
        (kind != CELL_LSTM && fxon_attr(n, "input_forget")))
        return fxon_fail(cx, "attribute '%s' is not supported (not one of %s's)",
                         kind != CELL_GRU && fxon_attr(n, "linear_before_reset")
                             ? "linear_before_reset" : "input_forget", n->op_type);
    if (fxon_attr(n, "layout") && cx->opset < 14)
        return fxon_fail(cx, "attribute 'layout' needs opset 14 or newer");
    for (const char *const *a = (const char *const[]){ "clip", "activation_alpha",
                                                       "activation_beta", NULL }; *a; a++)
        if (fxon_attr(n, *a))
            return fxon_fail(cx, "attribute '%s' is not supported by the engine's %s", *a,
                             engine_op[kind]);
    const char *direction;
    int64_t layout, hidden, lbr, input_forget;
    if ((rc = fxon_attr_str(cx, n, "direction", "forward", &direction)) ||
        (rc = fxon_attr_int(cx, n, "layout", 0, &layout)) ||
        (rc = fxon_attr_int(cx, n, "hidden_size", -1, &hidden)) ||
        (rc = fxon_attr_int(cx, n, "linear_before_reset", 0, &lbr)) ||
        (rc = fxon_attr_int(cx, n, "input_forget", 0, &input_forget)))
        return rc;
    int D;
    if (!strcmp(direction, "forward"))
        D = 1;
    else if (!strcmp(direction, "bidirectional"))
        D = 2;
    else
        return fxon_fail(cx, "attribute 'direction' value '%s' is not supported (forward or "
                         "bidirectional)", direction);
    if (layout != 0 && layout != 1)
        return fxon_fail(cx, "attribute 'layout' value %lld is not 0 or 1", (long long)layout);
    if (kind == CELL_GRU && lbr != 1)
        return fxon_fail(cx, "attribute 'linear_before_reset' %lld is not supported (the "
                         "engine's GRU, like PyTorch's, applies the reset gate after the linear "
                         "map: 1)", (long long)lbr);
    if (input_forget)
        return fxon_fail(cx, "attribute 'input_forget' %lld is not supported",
                         (long long)input_forget);
    bool relu;
    if ((rc = check_activations(cx, n, kind, D, &relu)))
        return rc;

    int G = cell_gates[kind];
    fxon_value *x;
    const char *xref;
    const fxon_const *W, *R, *B = NULL;
    if ((rc = fxon_input(cx, n, 0, &x)) || (rc = fxon_need_ref(cx, n, 0, &xref)) ||
        (rc = fxon__weight(cx, n, 1, 3, &W)) || (rc = fxon__weight(cx, n, 2, 3, &R)))
        return rc;
    int64_t H = R->shape[2], in = W->shape[2];
    if (hidden >= 0 && hidden != H)
        return fxon_fail(cx, "attribute 'hidden_size' %lld disagrees with R's shape (%lld)",
                         (long long)hidden, (long long)H);
    if (W->shape[0] != D || R->shape[0] != D || W->shape[1] != G * H || R->shape[1] != G * H)
        return fxon_fail(cx, "inputs W and R must be [%d, %lld, input_size] and [%d, %lld, %lld]",
                         D, (long long)(G * H), D, (long long)(G * H), (long long)H);
    if (fxon_in(n, 3)) {
        if ((rc = fxon__weight(cx, n, 3, 2, &B)))
            return rc;
        if (B->shape[0] != D || B->shape[1] != 2 * G * H)
            return fxon_fail(cx, "input B must be [%d, %lld]", D, (long long)(2 * G * H));
    }
    if (x->ndim >= 0 && x->ndim != 3)
        return fxon_fail(cx, "input X has rank %d, expected 3", x->ndim);
    if (x->ndim == 3 && x->shape[2] >= 0 && x->shape[2] != in)
        return fxon_fail(cx, "input X has %lld features, W expects %lld",
                         (long long)x->shape[2], (long long)in);
    if (kind == CELL_LSTM && !zero_or_absent(cx, n, 7))
        return fxon_fail(cx, "input P (peepholes) is not supported");

    /* Inputs of the engine's node: x, lengths, h0, c0 (positional). */
    const char *refs[4];
    int nin = 1;
    int64_t T = x->ndim == 3 ? x->shape[layout ? 1 : 0] : -1;
    int64_t N = x->ndim == 3 ? x->shape[layout ? 0 : 1] : -1;
    refs[0] = xref;
    const char *hint = fxon__layer_hint(cx, n);
    if (!layout) {
        Fluxion__V1__Node *p = emit_shape_op(cx, "permute", "dims", xref,
                                             aux_name(cx, hint, "x"),
                                             (const int64_t[]){ 1, 0, 2 }, 3);
        if (!p)
            return FXS_INVALID_ARGUMENT;
        refs[0] = fxon_out_ref(cx, p, 0);
    }
    const fxon_value *lens = fxon_in(n, 4) ? fxon_value_of(cx, fxon_in(n, 4)) : NULL;
    if (lens && lens->c) {
        for (int64_t k = 0; k < lens->c->numel; k++)
            if (T < 0 || fxon_const_int(lens->c, k) != T)
                return fxon_fail(cx, "input sequence_lens is a constant other than the full "
                                 "length: give it as a run-time tensor");
        lens = NULL; /* every sequence full: the engine's default */
    } else if (lens && (rc = fxon_need_ref(cx, n, 4, &refs[nin++]))) {
        return rc;
    }
    bool h0 = !zero_or_absent(cx, n, 5), c0 = kind == CELL_LSTM && !zero_or_absent(cx, n, 6);
    if ((h0 || c0) && !lens)
        return fxon_fail(cx, "a non-zero initial state needs sequence_lens (the engine takes "
                         "lengths before initial states)");
    if (c0 && !h0)
        return fxon_fail(cx, "input initial_c without initial_h is not supported");
    if (h0 && (rc = state_ref(cx, n, 5, layout, hint, &refs[nin++])))
        return rc;
    if (c0 && (rc = state_ref(cx, n, 6, layout, hint, &refs[nin++])))
        return rc;

    Fluxion__V1__Node *node = fxon_emit(cx, engine_op[kind], hint, nin, refs);
    if (!node)
        return FXS_INVALID_ARGUMENT;
    if ((rc = fxon_set_int(cx, node, "input_size", in)) ||
        (rc = fxon_set_int(cx, node, "hidden_size", H)) ||
        (rc = fxon_set_bool(cx, node, "bidirectional", D == 2)) ||
        (rc = fxon_set_bool(cx, node, "bias", B != NULL)) ||
        (kind == CELL_RNN && (rc = fxon_set_str(cx, node, "nonlinearity", relu ? "relu" : "tanh"))))
        return rc;
    for (int d = 0; d < D; d++)
        if ((rc = direction_params(cx, node, kind, d, H, in, W, R, B)))
            return rc;

    /* Outputs: Y from the engine's [N, T, D*H]; Y_h, Y_c from [D, N, H]. */
    int nout = (int)n->n_output;
    if (nout > (kind == CELL_LSTM ? 3 : 2))
        return fxon_fail(cx, "has %d outputs, expected at most %d", nout,
                         kind == CELL_LSTM ? 3 : 2);
    if (nout > 0 && n->output[0][0]) {
        const char *out = fxon_out_ref(cx, node, 0);
        Fluxion__V1__Node *r = emit_shape_op(cx, "reshape", "shape", out,
                                             fxon_printf(cx, "%s_y", node->name),
                                             (const int64_t[]){ 0, 0, D, H }, 4);
        if (!r)
            return FXS_INVALID_ARGUMENT;
        Fluxion__V1__Node *y = r;
        int64_t shape[4] = { N, T, D, H };
        if (!layout) {
            y = emit_shape_op(cx, "permute", "dims", fxon_out_ref(cx, r, 0),
                              fxon_printf(cx, "%s_y_tmajor", node->name),
                              (const int64_t[]){ 1, 2, 0, 3 }, 4);
            if (!y)
                return FXS_INVALID_ARGUMENT;
            shape[0] = T;
            shape[1] = D;
            shape[2] = N;
        }
        if ((rc = fxon_define(cx, n->output[0], y, 0, FXON_FLOAT, 4, shape)))
            return rc;
    }
    for (int k = 1; k < nout; k++) {
        if (!n->output[k][0])
            continue;
        Fluxion__V1__Node *s = node;
        int idx = k;
        int64_t shape[3] = { D, N, H };
        if (layout) {
            s = emit_shape_op(cx, "permute", "dims", fxon_out_ref(cx, node, k),
                              fxon_printf(cx, "%s_%s", node->name, k == 1 ? "h" : "c"),
                              (const int64_t[]){ 1, 0, 2 }, 3);
            if (!s)
                return FXS_INVALID_ARGUMENT;
            idx = 0;
            shape[0] = N;
            shape[1] = D;
        }
        if ((rc = fxon_define(cx, n->output[k], s, idx, FXON_FLOAT, 3, shape)))
            return rc;
    }
    return 0;
}
