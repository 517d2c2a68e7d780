/*
 * import_layers.c - the table of the importer's layer converters (ONNX
 * operators that become engine layers with parameters) and what they
 * share: weight constants copied into parameters, the refusal of optional
 * outputs the engine lacks, and the weight-layout conversions (gate order).
 */
#include "onnx/import_layers.h"

#include "base/status.h"

#include <string.h>

/* For one op_type the entry with the highest min_opset <= the model's
 * opset is used (import.c). */
const fxon_converter fxon_layer_ops[] = {
    { "Conv", 13, fxon__cv_conv },
    { "ConvTranspose", 13, fxon__cv_conv_transpose },
    { "MaxPool", 13, fxon__cv_maxpool },
    { "AveragePool", 13, fxon__cv_avgpool },
    { "GlobalAveragePool", 13, fxon__cv_global_avgpool },
    { "BatchNormalization", 13, fxon__cv_batchnorm },
    { "LayerNormalization", 17, fxon__cv_layernorm },
    { "InstanceNormalization", 13, fxon__cv_instancenorm },
    { "GroupNormalization", 18, fxon__cv_groupnorm },
    { "RNN", 13, fxon__cv_rnn },
    { "GRU", 13, fxon__cv_rnn },
    { "LSTM", 13, fxon__cv_rnn },
    /* Around the layers in PyTorch's exports (import_pad.c). */
    { "Expand", 13, fxon__cv_expand },
    { "Pad", 13, fxon__cv_pad },
    { NULL, 0, NULL },
};

const int fxon__lstm_perm[4] = { 0, 2, 3, 1 }; /* i <- i, f <- f, g <- c, o <- o */
const int fxon__gru_perm[3] = { 1, 0, 2 };     /* r <- r, z <- z, n <- h */

void fxon__gates_reorder(float *dst, const float *src, int gates, const int *perm, int64_t H,
                         int64_t cols)
{
    size_t block = (size_t)H * (size_t)cols;
    for (int j = 0; j < gates; j++)
        memcpy(dst + (size_t)j * block, src + (size_t)perm[j] * block, block * sizeof(float));
}

void fxon__groups_to_channels(float *dst, const float *src, int64_t groups, int64_t channels)
{
    int64_t per = channels / groups;
    for (int64_t c = 0; c < channels; c++)
        dst[c] = src[c / per];
}

int fxon__only_first_output(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    for (size_t k = 1; k < n->n_output; k++) {
        const fxon_value *v = n->output[k] && n->output[k][0] ? fxon_value_of(cx, n->output[k])
                                                               : NULL;
        if (v && v->uses)
            return fxon_fail(cx, "output %zu ('%s') is not supported (only the first output)",
                             k, n->output[k]);
    }
    return 0;
}

int fxon__weight(fxon_ctx *cx, const Onnx__NodeProto *n, int i, int want_ndim,
                 const fxon_const **c)
{
    int rc = fxon_need_const(cx, n, i, c);
    if (rc)
        return rc;
    if ((*c)->elem != FXON_FLOAT)
        return fxon_fail(cx, "input %d ('%s') must be a float tensor", i, fxon_in(n, i));
    if (want_ndim >= 0 && (*c)->ndim != want_ndim)
        return fxon_fail(cx, "input %d ('%s') has rank %d, expected %d", i, fxon_in(n, i),
                         (*c)->ndim, want_ndim);
    return 0;
}

const char *fxon__layer_hint(fxon_ctx *cx, const Onnx__NodeProto *n)
{
    const char *w = fxon_in(n, 1);
    return fxon_layer_name(cx, n, w ? fxon_value_of(cx, w) : NULL);
}

int fxon__param_copy(fxon_ctx *cx, const Fluxion__V1__Node *node, const char *param,
                     const fxon_const *c)
{
    float *p = fxon_param(cx, node, param, c->ndim, c->shape);
    if (!p)
        return FXS_INVALID_ARGUMENT;
    memcpy(p, c->f, (size_t)c->numel * sizeof(float));
    return 0;
}
