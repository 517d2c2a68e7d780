/* kern_conv.h - kernel family: convolution and pooling.
 * Part of the backend table (backend.h); the CPU versions live in
 * engine/cpu/conv.c (convolution, channel bias, the table fx__cpu_conv) and
 * engine/cpu/pool.c (pooling), the CUDA ones in cuda/conv.cu and
 * cuda/pool.cu.
 *
 * Every kernel works on the geometry it is given, never on the tensors'
 * shapes, so one kernel serves 1-D (H = 1) and 2-D, and a transposed
 * convolution reuses the kernels of the convolution it is the adjoint of.
 * Tensors are contiguous; "+=" kernels accumulate into gradient buffers. */
#ifndef FX_KERN_CONV_H
#define FX_KERN_CONV_H

#include "fluxion.h"

/* One 2-D convolution: input image x [N, C, H, W], weight [O, C/groups, KH,
 * KW], output y [N, O, OH, OW] with y[n, o, i, j] = sum over the group's
 * channels c and taps (a, b) of w[o, c, a, b] * x[n, c, i*SH - PH + a*DH,
 * j*SW - PW + b*DW] (zero outside the image). OH/OW need not follow from the
 * rest (a transposed convolution with output padding sets them). */
typedef struct {
    int64_t n, c, h, w;
    int64_t o, oh, ow;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t groups;
} fx_conv_geom;

/* One pooling window per output element over planes [P, H, W] (P = N*C):
 * rows [i*SH - PH, i*SH - PH + KH) clipped to the image, or, when adaptive,
 * PyTorch's [floor(i*H/OH), ceil((i+1)*H/OH)); same for columns. */
typedef struct {
    int64_t planes, h, w, oh, ow;
    int64_t kh, kw, sh, sw, ph, pw;
    bool adaptive;
    bool exclude_pad; /* average over the in-image elements only */
} fx_pool_geom;

typedef enum { FX_POOL_MAX = 0, FX_POOL_AVG } fx_pool_kind;

typedef struct {
    /* Floats of scratch memory the three convolution kernels need for g at
     * the current thread count (the op passes a buffer at least this big). */
    int64_t (*conv2d_workspace)(const fx_conv_geom *g);
    /* y = conv(x, w) + b, or y += conv(x, w) + b when accumulate; b [O] may
     * be NULL. */
    void (*conv2d)(const fx_conv_geom *g, const fx_tensor *x, const fx_tensor *w,
                   const fx_tensor *b, fx_tensor *y, bool accumulate, fx_tensor *ws);
    /* dx += conv^T(dy, w): the gradient w.r.t. x (and a transposed
     * convolution's forward). */
    void (*conv2d_backward_data)(const fx_conv_geom *g, const fx_tensor *dy, const fx_tensor *w,
                                 fx_tensor *dx, fx_tensor *ws);
    /* Optional (NULL: the op zero-fills a new dx and runs
     * conv2d_backward_data): dx = conv^T(dy, w), dx a new gradient buffer
     * set, never zero-filled first (positions no tap reads get 0). */
    void (*conv2d_backward_data_set)(const fx_conv_geom *g, const fx_tensor *dy,
                                     const fx_tensor *w, fx_tensor *dx, fx_tensor *ws);
    /* dw += the gradient of <conv(x, w), dy> w.r.t. w. */
    void (*conv2d_backward_weight)(const fx_conv_geom *g, const fx_tensor *x, const fx_tensor *dy,
                                   fx_tensor *dw, fx_tensor *ws);
    /* y[n, c, :] = b[c] (0 when b is NULL) for y [N, C, L] seen as such. */
    void (*channel_bias_fill)(const fx_tensor *b, fx_tensor *y, int64_t n, int64_t c, int64_t l);
    /* db[c] += sum over n and l of dy[n, c, l]. */
    void (*channel_bias_backward)(const fx_tensor *dy, fx_tensor *db, int64_t n, int64_t c,
                                  int64_t l);
    /* y [P, OH, OW] = max or mean of each window of x [P, H, W]. For MAX,
     * argmax (i32, y's size, may be NULL) gets the index i*W + j in its
     * plane of each maximum. */
    void (*pool2d)(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *x, fx_tensor *y,
                   fx_tensor *argmax);
    /* dx += the gradient: MAX routes dy to argmax, AVG spreads dy / count. */
    void (*pool2d_backward)(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                            const fx_tensor *argmax, fx_tensor *dx);
    /* Optional (NULL: the op zero-fills a new dx and runs pool2d_backward):
     * the same with dx set, not added to (a new gradient buffer, never
     * zero-filled: positions no window reaches are set to 0). */
    void (*pool2d_backward_set)(const fx_pool_geom *g, fx_pool_kind kind, const fx_tensor *dy,
                                const fx_tensor *argmax, fx_tensor *dx);
    /* Optional fusions for a convolution followed by ReLU (a layer with
     * FX_ACT_RELU); NULL: the ops run conv2d and a separate ReLU op.
     * conv2d_relu: y = max(conv(x, w) + b, 0) (b may be NULL), the clamp
     * applied while each block of y is still in cache (a NaN becomes 0, as
     * in the ReLU op). */
    void (*conv2d_relu)(const fx_conv_geom *g, const fx_tensor *x, const fx_tensor *w,
                        const fx_tensor *b, fx_tensor *y, fx_tensor *ws);
    /* For y [N, C, L] a ReLU's output and dy its gradient: dm = dy where
     * y > 0, else 0 (dm is written, not added), and, when db is not NULL,
     * db[c] += the sum of dm over n and l, in the same pass. */
    void (*relu_mask_bias_backward)(const fx_tensor *dy, const fx_tensor *y, fx_tensor *dm,
                                    fx_tensor *db, int64_t n, int64_t c, int64_t l);
    /* Optional (NULL: relu_mask_bias_backward then conv2d_backward_weight):
     * for y = relu(conv(x, w) + b), dw and db (db may be NULL) += the
     * gradients from dy, the mask applied as dy is read, for a layer whose
     * input needs no gradient (no masked copy of dy is kept). */
    void (*conv2d_backward_weight_relu)(const fx_conv_geom *g, const fx_tensor *x,
                                        const fx_tensor *dy, const fx_tensor *y, fx_tensor *dw,
                                        fx_tensor *db, fx_tensor *ws);
} fx_conv_kernels;

#endif
