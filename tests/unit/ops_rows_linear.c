/* ops_rows_linear.c - registry rows of matrix products and the layers built
 * from them: matmul, linear, dense, chain, and the combinators residual,
 * parallel and heads. See ops_registry.h. */
#include "ops_registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S1(a) { 1, { a } }
#define S2(a, b) { 2, { a, b } }
#define S3(a, b, c) { 3, { a, b, c } }
#define S4(a, b, c, d) { 4, { a, b, c, d } }

/* ----------------------------------------------------------------- matmul */

static fx_tensor *f_matmul(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                           const or_case *c)
{
    fx_tensor *a = c->arg ? fx_transpose(ctx, in[0], 0, 1) : in[0]; /* a strided operand */
    return fx_matmul(ctx, a, in[1]);
}

/* c[b, m, n] = sum_k a[b?, m, k] b[b?, k, n]; a side of rank 2 is shared by
 * every batch entry; arg: a is given transposed ([K, M]). */
static void r_matmul(const or_ref *r)
{
    const or_host *A = &r->in[0], *B = &r->in[1];
    bool tr = r->c->arg != NULL;
    int64_t M = tr ? A->shape[1] : A->shape[A->ndim - 2], K = B->shape[B->ndim - 2];
    int64_t N = B->shape[B->ndim - 1];
    const or_host *big = A->ndim >= B->ndim ? A : B;
    int64_t shape[FX_MAX_DIMS], batch = 1;
    for (int d = 0; d < big->ndim - 2; d++)
        batch *= (shape[d] = big->shape[d]);
    shape[big->ndim - 2] = M, shape[big->ndim - 1] = N;
    or_host_init(r->out, big->ndim, shape);
    for (int64_t i = 0; i < batch; i++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0.0;
                for (int64_t k = 0; k < K; k++) {
                    double a = tr ? A->v[k * M + m]
                                  : A->v[(A->ndim > 2 ? i * M * K : 0) + m * K + k];
                    s += a * B->v[(B->ndim > 2 ? i * K * N : 0) + k * N + n];
                }
                r->out->v[(i * M + m) * N + n] = s;
            }
}

static const or_case MATMUL_CASES[] = {
    { "2-D", 2, { S2(3, 4), S2(4, 5) } },
    { "outer product shape", 2, { S2(1, 7), S2(7, 1) } },
    { "batched", 2, { S3(2, 3, 4), S3(2, 4, 5) } },
    { "batched a, shared b", 2, { S3(2, 3, 4), S2(4, 5) } },
    { "shared a, batched b", 2, { S2(3, 4), S3(2, 4, 5) } },
    { "two batch dims", 2, { S4(2, 2, 3, 4), S4(2, 2, 4, 2) } },
    { "a transposed (a strided view)", 2, { S2(4, 3), S2(4, 2) }, 0, "t" },
    { "[5,7] x [7,3]", 2, { S2(5, 7), S2(7, 3) } },
    { "[2,4,5] x [2,5,3]", 2, { S3(2, 4, 5), S3(2, 5, 3) } },
};

/* ----------------------------------------------------------------- linear */

static fx_tensor *f_linear(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                           const or_case *c)
{
    return fx_linear(ctx, in[0], in[1], c->nin > 2 ? in[2] : NULL);
}

static void r_linear(const or_ref *r)
{
    const or_host *x = &r->in[0], *w = &r->in[1];
    int64_t in = w->shape[1], out = w->shape[0], shape[FX_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    or_host_init(r->out, x->ndim, shape);
    or_dense(x->v, x->n / in, in, w->v, r->nin > 2 ? r->in[2].v : NULL, out, FX_ACT_NONE,
             r->out->v);
}

static const or_case LINEAR_CASES[] = {
    { "3-D x with bias", 3, { S3(2, 3, 4), S2(5, 4), S1(5) } },
    { "no bias", 2, { S3(2, 3, 4), S2(5, 4) } },
    { "[6,8] x [4,8]^T + [4]", 3, { S2(6, 8), S2(4, 8), S1(4) } },
};

/* ------------------------------------------------------------------ dense */

typedef struct {
    fx_activation act;
    bool no_bias;
    int64_t in, out;
} dense_arg;

/* A dense layer whose bias is random too (a zero bias would hide a bias
 * that is never added). */
static fx_layer *dense(const char *name, int64_t in, int64_t out, fx_activation act, bool no_bias,
                       fx_rng *rng)
{
    fx_layer *l = fx_dense_create(name, in, out, &(fx_dense_opts){ .act = act, .no_bias = no_bias },
                                  rng);
    if (l)
        or_randomise(fx_layer_param(l, "bias"), rng, 0.5);
    return l;
}

static fx_layer *l_dense(const void *arg, const or_case *c, fx_rng *rng)
{
    const dense_arg *d = c->arg;
    return dense("fc", d->in, d->out, d->act, d->no_bias, rng);
}

static fx_tensor *f_layer(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    return fx_layer_forward(l, ctx, in[0]);
}

static void r_dense(const or_ref *r)
{
    const dense_arg *d = r->c->arg;
    const or_host *x = &r->in[0];
    int64_t shape[FX_MAX_DIMS], out;
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = d->out;
    double *y = or_dense_named(r, "", x->v, x->n / d->in, d->act, &out);
    or_host_init(r->out, x->ndim, shape);
    memcpy(r->out->v, y, (size_t)r->out->n * sizeof *y);
    free(y);
}

/* The smooth activations (relu's kink is the relu row's), with and without
 * bias, and the cross-backend table's gelu layer on a 3-D input. */
#define DENSE(label, act, nb) { label, 1, { S2(5, 3) }, 0, &(const dense_arg){ act, nb, 3, 4 } }
static const or_case DENSE_CASES[] = {
    DENSE("none", FX_ACT_NONE, false),         DENSE("none, no bias", FX_ACT_NONE, true),
    DENSE("tanh", FX_ACT_TANH, false),         DENSE("tanh, no bias", FX_ACT_TANH, true),
    DENSE("sigmoid", FX_ACT_SIGMOID, false),   DENSE("sigmoid, no bias", FX_ACT_SIGMOID, true),
    DENSE("gelu", FX_ACT_GELU, false),         DENSE("gelu, no bias", FX_ACT_GELU, true),
    DENSE("elu", FX_ACT_ELU, false),           DENSE("softmax", FX_ACT_SOFTMAX, false),
    { "gelu 7 -> 5 on [3,3,7]", 1, { S3(3, 3, 7) }, 0,
      &(const dense_arg){ FX_ACT_GELU, false, 7, 5 } },
};

/* ------------------------------------------------------------------ chain */

static fx_layer *l_chain(const void *arg, const or_case *c, fx_rng *rng)
{
    return fx_chain_create("chain", 3, (fx_layer *[]){
        dense("fc1", 4, 8, FX_ACT_TANH, false, rng), dense("fc2", 8, 6, FX_ACT_SIGMOID, false, rng),
        dense("fc3", 6, 3, FX_ACT_NONE, false, rng) });
}

static void r_chain(const or_ref *r)
{
    int64_t R = r->in[0].shape[0], o1, o2, o3;
    double *h1 = or_dense_named(r, "fc1", r->in[0].v, R, FX_ACT_TANH, &o1);
    double *h2 = or_dense_named(r, "fc2", h1, R, FX_ACT_SIGMOID, &o2);
    double *h3 = or_dense_named(r, "fc3", h2, R, FX_ACT_NONE, &o3);
    or_host_init(r->out, 2, (int64_t[]){ R, o3 });
    memcpy(r->out->v, h3, (size_t)(R * o3) * sizeof *h3);
    free(h1), free(h2), free(h3);
}

static const or_case CHAIN_CASES[] = {
    { "tanh 4->8, sigmoid 8->6, 6->3", 1, { S2(5, 4) } },
};

/* ------------------------------------------------------------ combinators */

enum { RES_ID, RES_PROJ, RES_TOWER, RES_CONV, RES_INCEPTION, PAR_ADD, PAR_CAT2, PAR_CAT1,
       HEADS_TWO, HEADS_SOLO };

static fx_layer *conv_bn(const char *name, int64_t in, int64_t out, int k, int stride, fx_rng *rng)
{
    return fx_chain_create(name, 2, (fx_layer *[]){
        fx_conv2d_create("conv", in, out, k, k,
                         &(fx_conv_opts){ .padding = k / 2, .stride = stride, .no_bias = true },
                         rng),
        fx_batchnorm2d_create("bn", out, NULL) });
}

static fx_layer *l_combinator(const void *arg, const or_case *c, fx_rng *rng)
{
    switch (*(const int *)c->arg) {
    case RES_ID:
        return fx_residual_create("id", fx_chain_create("body", 2, (fx_layer *[]){
            dense("fc1", 4, 5, FX_ACT_TANH, false, rng), dense("fc2", 5, 4, 0, false, rng) }),
            NULL, FX_ACT_TANH);
    case RES_PROJ:
        return fx_residual_create("proj", dense("body", 4, 6, FX_ACT_SIGMOID, false, rng),
                                  dense("short", 4, 6, 0, false, rng), FX_ACT_NONE);
    case RES_TOWER:
        return fx_chain_create("tower", 2, (fx_layer *[]){
            fx_residual_create("r1", dense("fc", 4, 4, FX_ACT_TANH, false, rng), NULL, FX_ACT_TANH),
            fx_residual_create("r2", dense("fc", 4, 4, FX_ACT_TANH, false, rng), NULL,
                               FX_ACT_NONE) });
    case RES_CONV:
        return fx_residual_create("down", conv_bn("body", 2, 4, 3, 2, rng),
                                  conv_bn("proj", 2, 4, 1, 2, rng), FX_ACT_TANH);
    case RES_INCEPTION:
        return fx_residual_create("inc", fx_parallel_create("mix", 2, (fx_layer *[]){
            dense("a", 3, 1, FX_ACT_TANH, false, rng), dense("b", 3, 2, FX_ACT_TANH, false, rng) },
            FX_JOIN_CONCAT, -1), NULL, FX_ACT_TANH);
    case PAR_ADD:
        return fx_parallel_create("add", 2, (fx_layer *[]){
            dense("a", 3, 4, FX_ACT_TANH, false, rng),
            dense("b", 3, 4, FX_ACT_SIGMOID, false, rng) }, FX_JOIN_ADD, 0);
    case PAR_CAT2:
        return fx_parallel_create("cat", 3, (fx_layer *[]){
            dense("a", 3, 2, FX_ACT_TANH, false, rng), dense("b", 3, 1, 0, false, rng),
            dense("c", 3, 3, FX_ACT_SIGMOID, false, rng) }, FX_JOIN_CONCAT, 2);
    case PAR_CAT1:
        return fx_parallel_create("cat1", 2, (fx_layer *[]){
            dense("a", 3, 2, FX_ACT_TANH, false, rng), dense("b", 3, 2, 0, false, rng) },
            FX_JOIN_CONCAT, 1);
    case HEADS_TWO:
        return fx_heads_create("net", fx_residual_create("trunk", dense("fc", 3, 3, FX_ACT_TANH,
                                                                        false, rng),
                                                         NULL, FX_ACT_TANH),
                               2, (fx_layer *[]){ dense("value", 3, 1, FX_ACT_TANH, false, rng),
                                                  dense("policy", 3, 4, 0, false, rng) });
    default:
        return fx_heads_create("solo", NULL, 1, (fx_layer *[]){ dense("h", 4, 2, 0, false, rng) });
    }
}

/* Every output of the layer, flattened and concatenated. */
static fx_tensor *f_multi(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    fx_tensor *out[4];
    int n = fx_layer_num_outputs(l);
    if (n > 4 || fx_layer_forward_multi(l, ctx, in[0], n, out) != FX_OK)
        return NULL;
    return or_flat_concat(ctx, n, out);
}

static double *tanh_add(double *a, const double *b, int64_t n, bool act)
{
    for (int64_t i = 0; i < n; i++)
        a[i] = act ? or_act(a[i] + b[i], FX_ACT_TANH) : a[i] + b[i];
    return a;
}

/* conv (no bias) then batch norm with batch statistics, as conv_bn. */
static double *ref_conv_bn(const or_ref *r, const char *name, const or_host *x, int k,
                           int stride, int64_t *oh, int64_t *ow)
{
    char wn[64], gn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.conv.weight", name);
    snprintf(gn, sizeof gn, "%s.bn.weight", name);
    snprintf(bn, sizeof bn, "%s.bn.bias", name);
    const or_host *w = or_param(r, wn);
    or_conv g = { x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], k, k,
                  stride, stride, k / 2, k / 2, 1, 1, 1 };
    or_conv2d(&g, x->v, w->v, NULL, NULL, oh, ow);
    int64_t n = g.n * g.o * *oh * *ow;
    double *y = malloc((size_t)n * sizeof *y), *z = malloc((size_t)n * sizeof *z);
    or_conv2d(&g, x->v, w->v, NULL, y, oh, ow);
    or_norm(y, g.n, g.o, *oh * *ow, 0, 1e-5, or_param(r, gn)->v, or_param(r, bn)->v, NULL, NULL, z);
    free(y);
    return z;
}

static void r_combinator(const or_ref *r)
{
    const or_host *x = &r->in[0];
    int kind = *(const int *)r->c->arg;
    int64_t R = x->n / x->shape[x->ndim - 1], o, o2, o3, shape[FX_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    double *y = NULL, *h = NULL, *s = NULL;
    switch (kind) {
    case RES_ID:
        h = or_dense_named(r, "body.fc1", x->v, R, FX_ACT_TANH, &o);
        y = tanh_add(or_dense_named(r, "body.fc2", h, R, 0, &o), x->v, x->n, true);
        break;
    case RES_PROJ:
        y = or_dense_named(r, "body", x->v, R, FX_ACT_SIGMOID, &o);
        s = or_dense_named(r, "short", x->v, R, 0, &o);
        tanh_add(y, s, R * o, false);
        shape[x->ndim - 1] = o;
        break;
    case RES_TOWER:
        h = tanh_add(or_dense_named(r, "r1.fc", x->v, R, FX_ACT_TANH, &o), x->v, x->n, true);
        y = tanh_add(or_dense_named(r, "r2.fc", h, R, FX_ACT_TANH, &o), h, x->n, false);
        break;
    case RES_CONV: {
        int64_t oh, ow;
        y = ref_conv_bn(r, "body", x, 3, 2, &oh, &ow);
        s = ref_conv_bn(r, "proj", x, 1, 2, &oh, &ow);
        tanh_add(y, s, x->shape[0] * 4 * oh * ow, true);
        shape[1] = 4, shape[2] = oh, shape[3] = ow;
        break;
    }
    case RES_INCEPTION: /* concat of a [.,1] and b [.,2] along the last axis */
        h = or_dense_named(r, "mix.a", x->v, R, FX_ACT_TANH, &o);
        s = or_dense_named(r, "mix.b", x->v, R, FX_ACT_TANH, &o2);
        y = malloc((size_t)x->n * sizeof *y);
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < 3; j++)
                y[i * 3 + j] = or_act((j < 1 ? h[i] : s[i * 2 + j - 1]) + x->v[i * 3 + j],
                                      FX_ACT_TANH);
        break;
    case PAR_ADD:
        y = or_dense_named(r, "a", x->v, R, FX_ACT_TANH, &o);
        s = or_dense_named(r, "b", x->v, R, FX_ACT_SIGMOID, &o);
        tanh_add(y, s, R * o, false);
        shape[x->ndim - 1] = o;
        break;
    case PAR_CAT2: { /* along the last axis: widths 2, 1, 3 */
        double *a = or_dense_named(r, "a", x->v, R, FX_ACT_TANH, &o);
        double *b = or_dense_named(r, "b", x->v, R, 0, &o2);
        double *c = or_dense_named(r, "c", x->v, R, FX_ACT_SIGMOID, &o3);
        y = malloc((size_t)(R * 6) * sizeof *y);
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < 6; j++)
                y[i * 6 + j] = j < 2 ? a[i * 2 + j] : j < 3 ? b[i] : c[i * 3 + j - 3];
        shape[x->ndim - 1] = 6;
        free(a), free(b), free(c);
        break;
    }
    case PAR_CAT1: { /* x [2, 2, 3]: outputs [2, 2, 2] joined along axis 1 */
        double *a = or_dense_named(r, "a", x->v, R, FX_ACT_TANH, &o);
        double *b = or_dense_named(r, "b", x->v, R, 0, &o2);
        int64_t N = x->shape[0], T = x->shape[1];
        y = malloc((size_t)(N * 2 * T * 2) * sizeof *y);
        for (int64_t n = 0; n < N; n++)
            for (int64_t t = 0; t < 2 * T; t++)
                for (int64_t j = 0; j < 2; j++)
                    y[(n * 2 * T + t) * 2 + j] = t < T ? a[(n * T + t) * 2 + j]
                                                       : b[(n * T + t - T) * 2 + j];
        shape[1] = 2 * T, shape[2] = 2;
        free(a), free(b);
        break;
    }
    case HEADS_TWO: { /* value [R, 1] then policy [R, 4], flattened */
        h = tanh_add(or_dense_named(r, "trunk.fc", x->v, R, FX_ACT_TANH, &o), x->v, x->n, true);
        double *v = or_dense_named(r, "value", h, R, FX_ACT_TANH, &o2);
        double *p = or_dense_named(r, "policy", h, R, 0, &o3);
        y = malloc((size_t)(R * 5) * sizeof *y);
        memcpy(y, v, (size_t)R * sizeof *y);
        memcpy(y + R, p, (size_t)(R * 4) * sizeof *y);
        free(v), free(p);
        shape[0] = R * 5;
        break;
    }
    default:
        y = or_dense_named(r, "h", x->v, R, 0, &o);
        shape[0] = R * o;
        break;
    }
    int nd = kind >= HEADS_TWO ? 1 : x->ndim;
    or_host_init(r->out, nd, shape);
    memcpy(r->out->v, y, (size_t)r->out->n * sizeof *y);
    free(y), free(h), free(s);
}

#define COMB(label, kind, shape) { label, 1, { shape }, 0, &(const int){ kind } }
static const or_case RESIDUAL_CASES[] = {
    COMB("identity shortcut around a chain, tanh", RES_ID, S2(3, 4)),
    COMB("dense projection shortcut", RES_PROJ, S2(3, 4)),
    COMB("a tower of two blocks", RES_TOWER, S2(3, 4)),
    COMB("conv + batch norm body and 1x1 projection, stride 2", RES_CONV, S4(2, 2, 3, 3)),
    COMB("around a parallel concat (inception-like)", RES_INCEPTION, S3(2, 2, 3)),
};
static const or_case PARALLEL_CASES[] = {
    COMB("two branches added", PAR_ADD, S3(2, 2, 3)),
    COMB("three branches concatenated on axis 2", PAR_CAT2, S3(2, 2, 3)),
    COMB("two branches concatenated on axis 1", PAR_CAT1, S3(2, 2, 3)),
};
static const or_case HEADS_CASES[] = {
    COMB("a residual trunk, value and policy heads", HEADS_TWO, S2(5, 3)),
    COMB("no trunk, one head", HEADS_SOLO, S2(4, 4)),
};

/* ------------------------------------------------------------------- rows */

#define FWD_GEMM { 1e-5, "float dot products of at most 8 terms against double" }

const or_row OR_ROWS_LINEAR[] = {
    { .name = "matmul", .covers = "fx_matmul", .ncases = OR_COUNT(MATMUL_CASES),
      .cases = MATMUL_CASES, .forward = f_matmul, .reference = r_matmul, .fwd = FWD_GEMM,
      .grad = OR_GRAD_STD, .xb = OR_XB_GEMM },
    { .name = "linear", .covers = "fx_linear", .ncases = OR_COUNT(LINEAR_CASES),
      .cases = LINEAR_CASES, .forward = f_linear, .reference = r_linear, .fwd = FWD_GEMM,
      .grad = OR_GRAD_STD, .xb = OR_XB_GEMM },
    { .name = "dense", .covers = "fx_dense_create", .ncases = OR_COUNT(DENSE_CASES),
      .cases = DENSE_CASES, .layer = l_dense, .forward = f_layer, .reference = r_dense,
      .fwd = FWD_GEMM, .grad = OR_GRAD_STD, .xb = OR_XB_GEMM },
    { .name = "chain", .covers = "fx_chain_create", .ncases = OR_COUNT(CHAIN_CASES),
      .cases = CHAIN_CASES, .layer = l_chain, .forward = f_layer, .reference = r_chain,
      .fwd = FWD_GEMM, .grad = OR_GRAD_STD, .xb = OR_XB_GEMM },
    { .name = "residual", .covers = "fx_residual_create", .ncases = OR_COUNT(RESIDUAL_CASES),
      .cases = RESIDUAL_CASES, .layer = l_combinator, .forward = f_layer,
      .reference = r_combinator,
      .fwd = { 1e-4, "the conv + batch norm case normalises float sums by a small batch "
                     "variance" },
      .grad = OR_GRAD_STD, .xb = OR_XB_GEMM },
    { .name = "parallel", .covers = "fx_parallel_create", .ncases = OR_COUNT(PARALLEL_CASES),
      .cases = PARALLEL_CASES, .layer = l_combinator, .forward = f_layer,
      .reference = r_combinator, .fwd = FWD_GEMM, .grad = OR_GRAD_STD, .xb = OR_XB_GEMM },
    { .name = "heads", .covers = "fx_heads_create, fx_layer_forward_multi",
      .ncases = OR_COUNT(HEADS_CASES), .cases = HEADS_CASES, .layer = l_combinator,
      .forward = f_multi, .reference = r_combinator, .fwd = FWD_GEMM, .grad = OR_GRAD_STD,
      .xb = OR_XB_GEMM },
};
const int OR_NROWS_LINEAR = OR_COUNT(OR_ROWS_LINEAR);
