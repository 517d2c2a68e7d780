/*
 * fx_conv.h - Convolution and pooling layers. Included by fluxion.h; see there for the
 * conventions (arena tensors, NULL propagation, error messages).
 *
 * Images are NCHW ([batch, channels, height, width]) and sequences NCL;
 * weights follow PyTorch: conv [out, in/groups, KH, KW], transposed conv
 * [in, out/groups, KH, KW]. A small convolutional net:
 *
 *     fx_layer *net = fx_chain_create("cnn", 7, (fx_layer *[]){
 *         fx_conv2d_create("conv1", 1, 32, 3, 3, &(fx_conv_opts){ .padding = 1,
 *                                                                 .act = FX_ACT_RELU }, rng),
 *         fx_maxpool2d_create("pool1", &(fx_pool_opts){ .kernel = 2 }),
 *         fx_conv2d_create("conv2", 32, 64, 3, 3, &(fx_conv_opts){ .padding = 1,
 *                                                                  .act = FX_ACT_RELU }, rng),
 *         fx_maxpool2d_create("pool2", &(fx_pool_opts){ .kernel = 2 }),
 *         fx_flatten_create("flat"),
 *         fx_dense_create("fc1", 64 * 7 * 7, 128, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng),
 *         fx_dense_create("fc2", 128, 10, NULL, rng) });
 *
 * Options are zero-initialised structs; a zero field takes the default named
 * next to it. Square settings go in the plain fields (stride, padding, ...);
 * the _h / _w fields, when nonzero, override them along one axis. Bad input
 * (a kernel larger than the padded input, a channel count that does not
 * match the weight, groups that do not divide the channels, a negative
 * stride) fails with FX_ERR_SHAPE or FX_ERR_ARG and a message naming the op
 * and the sizes, e.g. "conv2d: kernel 5x5 (dilation 1) is larger than the
 * padded input 3x3".
 */
#ifndef FX_CONV_PUBLIC_H
#define FX_CONV_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

/* Convolution options, for the ops and the layers. */
typedef struct {
    int stride;          /* default 1 */
    int padding;         /* zeros added on each side; default 0 */
    int dilation;        /* spacing of the kernel taps; default 1 */
    int groups;          /* default 1; in and out channels must divide by it */
    int output_padding;  /* transposed only: extra rows/columns at the end of
                            the output (< stride or < dilation); default 0 */
    int stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w;
    int output_padding_h, output_padding_w;
    /* layers only */
    bool no_bias;        /* default: with bias (zeros) */
    fx_activation act;   /* applied after the convolution; default none */
    fx_init_kind init;   /* weight init; default (0) is PyTorch's:
                            U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    fx_device device;    /* default cpu */
} fx_conv_opts;

/* conv2d: x [N, C, H, W], w [O, C/groups, KH, KW], b [O] or NULL ->
 * [N, O, OH, OW] with OH = (H + 2*padding - dilation*(KH-1) - 1)/stride + 1.
 * opts may be NULL (defaults). */
fx_tensor *fx_conv2d(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b,
                     const fx_conv_opts *opts);
/* conv1d: x [N, C, L], w [O, C/groups, K], b [O] or NULL -> [N, O, OL];
 * the 1-D settings are stride, padding, dilation (or their _w fields). */
fx_tensor *fx_conv1d(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b,
                     const fx_conv_opts *opts);
/* conv_transpose2d (the adjoint of conv2d in its input): x [N, C, H, W],
 * w [C, O/groups, KH, KW], b [O] or NULL -> [N, O, OH, OW] with
 * OH = (H-1)*stride - 2*padding + dilation*(KH-1) + output_padding + 1. */
fx_tensor *fx_conv_transpose2d(fx_ctx *ctx, fx_tensor *x, fx_tensor *w, fx_tensor *b,
                               const fx_conv_opts *opts);

/* Pooling options. */
typedef struct {
    int kernel;          /* window size, required (> 0) */
    int stride;          /* default: the kernel size */
    int padding;         /* implicit padding on each side, at most kernel/2;
                            max pooling pads with -inf, average with zeros */
    int kernel_h, kernel_w, stride_h, stride_w, padding_h, padding_w;
    bool exclude_pad;    /* average over the in-image elements only; default
                            counts the padding (PyTorch's count_include_pad) */
} fx_pool_opts;

/* Max / average pooling: x [N, C, H, W] -> [N, C, OH, OW] with
 * OH = (H + 2*padding - kernel)/stride + 1. The gradient of max pooling goes
 * to the first maximum of each window. */
fx_tensor *fx_maxpool2d(fx_ctx *ctx, fx_tensor *x, const fx_pool_opts *opts);
fx_tensor *fx_avgpool2d(fx_ctx *ctx, fx_tensor *x, const fx_pool_opts *opts);
/* Adaptive average pooling to [N, C, oh, ow]: output cell i averages rows
 * floor(i*H/oh) .. ceil((i+1)*H/oh)-1 (PyTorch's AdaptiveAvgPool2d). */
fx_tensor *fx_adaptive_avgpool2d(fx_ctx *ctx, fx_tensor *x, int64_t oh, int64_t ow);
/* Global average pooling: x [N, C, H, W] -> [N, C]. */
fx_tensor *fx_global_avgpool2d(fx_ctx *ctx, fx_tensor *x);

/* Layers. Parameters "weight" and "bias" (unless opts->no_bias), shaped as
 * the ops take them; NULL on bad sizes or out of memory. opts may be NULL. */
fx_layer *fx_conv2d_create(const char *name, int64_t in, int64_t out, int64_t kernel_h,
                           int64_t kernel_w, const fx_conv_opts *opts, fx_rng *rng);
fx_layer *fx_conv1d_create(const char *name, int64_t in, int64_t out, int64_t kernel,
                           const fx_conv_opts *opts, fx_rng *rng);
fx_layer *fx_conv_transpose2d_create(const char *name, int64_t in, int64_t out,
                                     int64_t kernel_h, int64_t kernel_w,
                                     const fx_conv_opts *opts, fx_rng *rng);
fx_layer *fx_maxpool2d_create(const char *name, const fx_pool_opts *opts);
fx_layer *fx_avgpool2d_create(const char *name, const fx_pool_opts *opts);
fx_layer *fx_adaptive_avgpool2d_create(const char *name, int64_t oh, int64_t ow);
fx_layer *fx_global_avgpool2d_create(const char *name);
/* The flatten op (fluxion.h, with the shape ops) as a layer, for the step
 * from convolutions to dense layers. */
fx_layer *fx_flatten_create(const char *name);

#ifdef __cplusplus
}
#endif
#endif
