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
 *     fx_layer *block(const char *name, int64_t c, fx_rng *rng) {   // conv-bn-relu-conv-bn
 *         fx_layer *body = fx_chain_create("body", 4, (fx_layer *[]){ conv3x3("c1", c, rng),
 *             bn("b1", c), conv3x3_bn_relu..., });
 *         return fx_residual_create(name, body, NULL, FX_ACT_RELU);  // relu(body(x) + x)
 *     }
 *     fx_layer *trunk = fx_chain_create("trunk", 3, (fx_layer *[]){ stem, block("res1", 32, rng),
 *                                                                   block("res2", 32, rng) });
 *     fx_layer *net = fx_heads_create("net", trunk, 2, (fx_layer *[]){ value_head, policy_head });
 *     ...
 *     fx_tensor *out[2];                              // trunk runs once, then each head
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
