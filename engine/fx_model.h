/*
 * fx_model.h - Combinators: residual blocks, parallel branches, models with several outputs and
 * gradient reversal. Included by fluxion.h; see there for the conventions (arena tensors, NULL
 * propagation, error messages).
 *
 * Every combinator is an fx_layer that owns the layers given to it (even when its constructor
 * fails: they are freed then), registered as children, so fx_layer_collect_params names their
 * parameters "<combinator>.<child>.<param>". Children of one combinator need distinct names.
 *
 * An AlphaGo Zero style network: a residual tower, then a value and a policy head.
 *
 *     // conv k x k (same padding) -> batch norm [-> activation], as a chain
 *     fx_layer *conv_bn(const char *name, int64_t in, int64_t out, int k, fx_activation act) {
 *         fx_layer *ls[] = { fx_conv2d_create("conv", in, out, k, k, &(fx_conv_opts){
 *                                .padding = k / 2, .no_bias = true }, rng),
 *                            fx_batchnorm2d_create("bn", out, NULL),
 *                            act ? fx_activation_create("act", act) : NULL };
 *         return fx_chain_create(name, act ? 3 : 2, ls);
 *     }
 *     fx_layer *block(const char *name) {                      // relu(x + bn(conv(relu(bn(conv(x))))))
 *         return fx_residual_create(name, fx_chain_create("body", 2, (fx_layer *[]){
 *             conv_bn("a", 64, 64, 3, FX_ACT_RELU), conv_bn("b", 64, 64, 3, 0) }), NULL, FX_ACT_RELU);
 *     }
 *     fx_layer *tower = fx_chain_create("tower", 3, (fx_layer *[]){
 *         conv_bn("stem", 17, 64, 3, FX_ACT_RELU), block("res1"), block("res2") });
 *     fx_layer *value = fx_chain_create("value", 4, (fx_layer *[]){
 *         conv_bn("reduce", 64, 1, 1, FX_ACT_RELU), fx_flatten_create("flat"),
 *         fx_dense_create("fc1", 361, 256, &(fx_dense_opts){ .act = FX_ACT_RELU }, rng),
 *         fx_dense_create("fc2", 256, 1, &(fx_dense_opts){ .act = FX_ACT_TANH }, rng) });
 *     fx_layer *policy = fx_chain_create("policy", 3, (fx_layer *[]){
 *         conv_bn("reduce", 64, 2, 1, FX_ACT_RELU), fx_flatten_create("flat"),
 *         fx_dense_create("fc", 722, 362, NULL, rng) });          // logits
 *     fx_layer *net = fx_heads_create("net", tower, 2, (fx_layer *[]){ value, policy });
 *     ...
 *     fx_tensor *out[2];                              // the trunk runs once, then each head
 *     fx_layer_forward_multi(net, ctx, x, 2, out);
 *     fx_tensor *loss = fx_add(ctx, fx_mse_loss(ctx, out[0], z, FX_MEAN),
 *                              fx_cross_entropy_soft(ctx, out[1], pi, FX_MEAN));
 *
 * An adversarial (domain-adversarial) setup: the nuisance head sees the shared features through
 * a gradient reversal, so one backward of the summed losses trains the classifier and makes the
 * shared block unlearn the nuisance:
 *
 *     fx_layer *net = fx_heads_create("net", shared, 2, (fx_layer *[]){ classifier,
 *         fx_chain_create("adv", 2, (fx_layer *[]){ fx_grad_reverse_create("grl", 0.5f),
 *                                                   nuisance }) });
 */
#ifndef FX_MODEL_PUBLIC_H
#define FX_MODEL_PUBLIC_H

#ifdef __cplusplus
extern "C" {
#endif

/* residual: y = act(body(x) + shortcut(x)). shortcut NULL is the identity; otherwise any layer
 * (a projection: a dense, a 1x1 conv + batch norm, ...). The two outputs must have the same
 * shape (no broadcasting): a mismatch is FX_ERR_SHAPE naming the block and both shapes. */
fx_layer *fx_residual_create(const char *name, fx_layer *body, fx_layer *shortcut,
                             fx_activation act);

typedef enum {
    FX_JOIN_ADD = 0, /* the branches' outputs summed (equal shapes) */
    FX_JOIN_CONCAT,  /* concatenated along an axis (equal sizes elsewhere) */
} fx_join_mode;

/* parallel: every branch gets the same input; their n >= 1 outputs are joined. axis is used by
 * FX_JOIN_CONCAT (may be negative, counted on the outputs' rank). */
fx_layer *fx_parallel_create(const char *name, int n, fx_layer *const *branches,
                             fx_join_mode join, int axis);

/* heads: several outputs from a shared trunk. The trunk (may be NULL: the heads read the input)
 * runs once and feeds each of the n >= 1 heads; fx_layer_forward_multi returns head i's output
 * in out[i]. fx_layer_forward on a heads layer works only when it has one head. */
fx_layer *fx_heads_create(const char *name, fx_layer *trunk, int n, fx_layer *const *heads);

/* Number of outputs of a layer: its head count for a heads layer, 1 for any other. */
int fx_layer_num_outputs(const fx_layer *l);

/* Runs a layer with nout outputs into out[0..nout): a heads layer needs nout equal to its head
 * count; any other layer has one output. Every out[i] is NULL on failure. Returns the context's
 * status (FX_OK when every output was made). */
fx_status fx_layer_forward_multi(fx_layer *l, fx_ctx *ctx, fx_tensor *x, int nout,
                                 fx_tensor **out);

/* activation: a parameterless layer applying fx_activate (e.g. the relu between a batch norm
 * and the next convolution). NULL for an unknown activation. */
fx_layer *fx_activation_create(const char *name, fx_activation act);

/* grad_reverse: the identity forward (a view of x), -lambda * dy backward. lambda must be
 * finite; 0 blocks the gradient. */
fx_tensor *fx_grad_reverse(fx_ctx *ctx, fx_tensor *x, float lambda);
/* The same as a layer (no parameters), with lambda settable between steps (e.g. a ramp). */
fx_layer *fx_grad_reverse_create(const char *name, float lambda);
/* FX_ERR_ARG when l is not a grad_reverse layer or lambda is not finite. */
fx_status fx_grad_reverse_set_lambda(fx_layer *l, float lambda);

#ifdef __cplusplus
}
#endif
#endif
