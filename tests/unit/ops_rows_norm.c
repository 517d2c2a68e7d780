/* ops_rows_norm.c - registry rows of the normalisations (batch norm in
 * training and eval mode, layer norm, group norm), the embedding, and their
 * layers. See ops_registry.h. */
#include "ops_registry.h"

#include <string.h>

#define S1(a) { 1, { a } }
#define S2(a, b) { 2, { a, b } }
#define S3(a, b, c) { 3, { a, b, c } }
#define S4(a, b, c, d) { 4, { a, b, c, d } }
#define SH(...) { __VA_ARGS__ }

/* x [N, C, *] seen as (N, C, L). */
static void ncl(const or_host *x, int64_t *N, int64_t *C, int64_t *L)
{
    *N = x->shape[0];
    *C = x->shape[1];
    *L = x->n / (*N * *C);
}

/* ------------------------------------------------------------- batch norm */

enum { TRAIN_RUNNING, TRAIN, EVAL };

typedef struct {
    int mode;
    bool affine;
} bn_arg;

/* in: x, gamma, beta, running_mean, running_var. */
static fx_tensor *f_batch_norm(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                               const or_case *c)
{
    const bn_arg *a = c->arg;
    fx_ctx_set_training(ctx, a->mode != EVAL);
    bool run = a->mode != TRAIN;
    return fx_batch_norm(ctx, in[0], a->affine ? in[1] : NULL, a->affine ? in[2] : NULL,
                         run ? in[3] : NULL, run ? in[4] : NULL, 0.1f, 1e-5f);
}

static void r_batch_norm(const or_ref *r)
{
    const bn_arg *a = r->c->arg;
    int64_t N, C, L;
    ncl(&r->in[0], &N, &C, &L);
    or_host_init(r->out, r->in[0].ndim, r->in[0].shape);
    bool eval = a->mode == EVAL;
    or_norm(r->in[0].v, N, C, L, 0, (double)1e-5f, a->affine ? r->in[1].v : NULL,
            a->affine ? r->in[2].v : NULL, eval ? r->in[3].v : NULL, eval ? r->in[4].v : NULL,
            r->out->v);
}

/* Training through the batch statistics with and without running ones, and
 * eval mode (running statistics with non-trivial values: constants), affine
 * or not; [2,3,70] has a channel block boundary at 64. */
#define BN6(label, x, c, why)                                                                    \
    { label ", training", 5, { x, S1(c), S1(c), S1(c), S1(c) }, 0x18,                          \
      &(const bn_arg){ TRAIN_RUNNING, true }, why },                                            \
    { label ", training, no affine", 5, { x, S1(c), S1(c), S1(c), S1(c) }, 0x1e,               \
      &(const bn_arg){ TRAIN_RUNNING, false }, why },                                           \
    { label ", no running statistics", 5, { x, S1(c), S1(c), S1(c), S1(c) }, 0x18,             \
      &(const bn_arg){ TRAIN, true }, why },                                                    \
    { label ", no running statistics, no affine", 5, { x, S1(c), S1(c), S1(c), S1(c) }, 0x1e,  \
      &(const bn_arg){ TRAIN, false }, why },                                                   \
    { label ", eval", 5, { x, S1(c), S1(c), S1(c), S1(c) }, 0x18, &(const bn_arg){ EVAL, true }, \
      why },                                                                                    \
    { label ", eval, no affine", 5, { x, S1(c), S1(c), S1(c), S1(c) }, 0x1e,                   \
      &(const bn_arg){ EVAL, false }, why }

/* Finite differences of the f32 loss sum(y * R) carry rounding noise of
 * about sqrt(n) * 6e-8 * |yR| / (2 eps): a few hundred outputs reach atol.
 * Larger shapes get the forward and the cross-backend check here, and their
 * gradients against the double reference in test_norm. */
#define TOO_BIG                                                                                  \
    "420 outputs: the float loss's rounding over the step reaches atol; test_norm checks these " \
    "gradients against the double reference"

static const or_case BN_CASES[] = {
    BN6("[4,3]", S2(4, 3), 3, NULL),
    BN6("[5,2,3]", S3(5, 2, 3), 2, NULL),
    BN6("[3,4,2,2]", S4(3, 4, 2, 2), 4, NULL),
    BN6("[2,3,70]", S3(2, 3, 70), 3, TOO_BIG),
};

/* ------------------------------------------------------ layer / group norm */

typedef struct {
    int64_t groups; /* group norm; layer norm: the number of trailing dims */
    bool affine;
} gn_arg;

static fx_tensor *f_layer_norm(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                               const or_case *c)
{
    const gn_arg *a = c->arg;
    int ns = (int)a->groups;
    return fx_layer_norm(ctx, in[0], ns, in[0]->shape + in[0]->ndim - ns,
                         a->affine ? in[1] : NULL, a->affine ? in[2] : NULL, 1e-5f);
}

/* Layer norm is group norm of x seen as (rows, D, 1) with one group. */
static void r_layer_norm(const or_ref *r)
{
    const gn_arg *a = r->c->arg;
    const or_host *x = &r->in[0];
    int64_t D = 1;
    for (int d = x->ndim - (int)a->groups; d < x->ndim; d++)
        D *= x->shape[d];
    or_host_init(r->out, x->ndim, x->shape);
    or_norm(x->v, x->n / D, D, 1, 1, (double)1e-5f, a->affine ? r->in[1].v : NULL,
            a->affine ? r->in[2].v : NULL, NULL, NULL, r->out->v);
}

static fx_tensor *f_group_norm(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                               const or_case *c)
{
    const gn_arg *a = c->arg;
    return fx_group_norm(ctx, in[0], a->groups, a->affine ? in[1] : NULL,
                         a->affine ? in[2] : NULL, 1e-5f);
}

static void r_group_norm(const or_ref *r)
{
    const gn_arg *a = r->c->arg;
    int64_t N, C, L;
    ncl(&r->in[0], &N, &C, &L);
    or_host_init(r->out, r->in[0].ndim, r->in[0].shape);
    or_norm(r->in[0].v, N, C, L, a->groups, (double)1e-5f, a->affine ? r->in[1].v : NULL,
            a->affine ? r->in[2].v : NULL, NULL, NULL, r->out->v);
}

#define AFF2(label, x, p, g)                                                                     \
    { label, 3, { x, p, p }, 0, &(const gn_arg){ g, true } },                                   \
    { label ", no affine", 3, { x, p, p }, 0x6, &(const gn_arg){ g, false } }

static const or_case LN_CASES[] = {
    AFF2("[4,5] over 1 dim", S2(4, 5), S1(5), 1),
    AFF2("[2,3,4] over 2 dims", S3(2, 3, 4), S2(3, 4), 2),
    AFF2("[2,3,4] over 1 dim", S3(2, 3, 4), S1(4), 1),
};

/* L > 1; 4-D; L == 1; instance norm (groups == C); one group; L == 1 with
 * channel blocks crossing group boundaries. */
static const or_case GN_CASES[] = {
    AFF2("[2,4,3], 2 groups", S3(2, 4, 3), S1(4), 2),
    AFF2("[2,6,2,2], 3 groups", S4(2, 6, 2, 2), S1(6), 3),
    AFF2("[3,4], 2 groups", S2(3, 4), S1(4), 2),
    AFF2("[2,4,3], instance norm", S3(2, 4, 3), S1(4), 4),
    AFF2("[2,4,3], one group", S3(2, 4, 3), S1(4), 1),
    AFF2("[3,70], 5 groups", S2(3, 70), S1(70), 5),
};

/* ------------------------------------------------------------- embedding */

typedef struct {
    fx_dtype dt;
    int ndim;
    int64_t shape[2];
    int64_t pad; /* padding index, -1: none */
    int64_t v[12];
} emb_arg;

static fx_tensor *f_embedding(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                              const or_case *c)
{
    const emb_arg *a = c->arg;
    fx_tensor *idx = or_index(ctx, a->dt, a->ndim, a->shape, a->v);
    return l ? fx_layer_forward(l, ctx, idx) : fx_embedding(ctx, in[0], idx, a->pad);
}

/* Row j of the output is row idx[j] of the weight. */
static void r_embedding(const or_ref *r)
{
    const emb_arg *a = r->c->arg;
    const or_host *w = r->nin ? &r->in[0] : or_param(r, "weight");
    int64_t dim = w->shape[1], shape[3] = { a->shape[0], a->shape[1], dim };
    shape[a->ndim] = dim;
    or_host_init(r->out, a->ndim + 1, shape);
    for (int64_t j = 0; j < r->out->n / dim; j++)
        memcpy(r->out->v + j * dim, w->v + a->v[j] * dim, (size_t)dim * sizeof *w->v);
}

/* Repeated indices (their gradients add up), rows no index picks (zero
 * gradient), and a padding index no entry uses (it changes nothing). */
#define IDS 1, 3, 1, 0, 3, 3, 6, 0, 1, 5, 5, 2
#define EMB(label, dt, nd, shape, pad)                                                           \
    { label, 1, { S2(8, 3) }, 0, &(const emb_arg){ dt, nd, shape, pad, { IDS } } }
static const or_case EMB_CASES[] = {
    EMB("1-D indices, i32", FX_I32, 1, { 12 }, -1),
    EMB("2-D indices, i32", FX_I32, 2, SH(3, 4), -1),
    EMB("an unused padding index, i32", FX_I32, 2, SH(3, 4), 7),
    EMB("1-D indices, i64", FX_I64, 1, { 12 }, -1),
    EMB("2-D indices, i64", FX_I64, 2, SH(3, 4), -1),
    EMB("an unused padding index, i64", FX_I64, 2, SH(3, 4), 7),
};

/* ----------------------------------------------------------------- layers */

typedef struct {
    int kind; /* 0 batchnorm1d, 1 batchnorm2d, 2 layernorm, 3 groupnorm */
    int64_t channels, groups;
    int nshape;
    int64_t shape[2];
    double eps;
    bool eval;
} norm_layer_arg;

static fx_layer *l_norm(const void *arg, const or_case *c, fx_rng *rng)
{
    const norm_layer_arg *a = c->arg;
    fx_norm_opts o = { .eps = a->eps };
    switch (a->kind) {
    case 0: return fx_batchnorm1d_create("bn", a->channels, &o);
    case 1: return fx_batchnorm2d_create("bn", a->channels, &o);
    case 2: return fx_layernorm_create("ln", a->nshape, a->shape, &o);
    default: return fx_groupnorm_create("gn", a->groups, a->channels, &o);
    }
}

static fx_tensor *f_norm_layer(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                               const or_case *c)
{
    fx_ctx_set_training(ctx, !((const norm_layer_arg *)c->arg)->eval);
    return fx_layer_forward(l, ctx, in[0]);
}

static void r_norm_layer(const or_ref *r)
{
    const norm_layer_arg *a = r->c->arg;
    const or_host *x = &r->in[0], *g = or_param(r, "weight"), *b = or_param(r, "bias");
    double eps = a->eps ? a->eps : 1e-5;
    int64_t N, C, L;
    ncl(x, &N, &C, &L);
    or_host_init(r->out, x->ndim, x->shape);
    if (a->kind == 2) { /* rows of the normalised shape */
        int64_t D = g->n;
        or_norm(x->v, x->n / D, D, 1, 1, eps, g->v, b->v, NULL, NULL, r->out->v);
        return;
    }
    const or_host *rm = or_param(r, "running_mean"), *rv = or_param(r, "running_var");
    or_norm(x->v, N, C, L, a->kind == 3 ? a->groups : 0, eps, g->v, b->v,
            a->eval ? rm->v : NULL, a->eval ? rv->v : NULL, r->out->v);
}

#define NL(label, x, ...) { label, 1, { x }, 0, &(const norm_layer_arg){ __VA_ARGS__ } }
static const or_case BN1D_CASES[] = {
    NL("[12,5]", S2(12, 5), 0, 5),
    NL("[4,5,3]", S3(4, 5, 3), 0, 5),
    NL("[4,5,3], eval: the running statistics", S3(4, 5, 3), 0, 5, .eval = true),
    { "[70,5]", 1, { S2(70, 5) }, 0, &(const norm_layer_arg){ 0, 5 },
      "350 outputs: the float loss's rounding over the step reaches atol; test_norm checks "
      "these gradients against the double reference" },
};
static const or_case BN2D_CASES[] = {
    NL("[2,3,2,2]", S4(2, 3, 2, 2), 1, 3),
    NL("[2,3,2,2], eval", S4(2, 3, 2, 2), 1, 3, .eval = true),
    { "[4,3,5,6]", 1, { S4(4, 3, 5, 6) }, 0, &(const norm_layer_arg){ 1, 3 },
      "360 outputs: the float loss's rounding over the step reaches atol; test_norm checks "
      "these gradients against the double reference" },
};
static const or_case LN_LAYER_CASES[] = {
    NL("[2,3,4] over (3,4)", S3(2, 3, 4), 2, .nshape = 2, .shape = { 3, 4 }),
    NL("[2,5,6] over (6)", S3(2, 5, 6), 2, .nshape = 1, .shape = { 6 }),
};
static const or_case GN_LAYER_CASES[] = {
    NL("[2,6,3], 2 groups, eps 1e-3", S3(2, 6, 3), 3, 6, 2, .eps = 1e-3),
    NL("[3,4,7], 2 groups", S3(3, 4, 7), 3, 4, 2),
};

static fx_layer *l_embedding(const void *arg, const or_case *c, fx_rng *rng)
{
    const emb_arg *a = c->arg;
    fx_embedding_opts o = { .has_padding = a->pad >= 0, .padding_idx = a->pad };
    return fx_embedding_create("emb", 7, 5, &o, rng);
}

static const or_case EMB_LAYER_CASES[] = {
    { "indices [2,4]", 0, { { 0 } }, 0,
      &(const emb_arg){ FX_I64, 2, { 2, 4 }, -1, { 1, 2, 2, 0, 6, 2, 1, 3 } } },
    { "a padding row in use", 0, { { 0 } }, 0,
      &(const emb_arg){ FX_I64, 2, { 2, 4 }, 2, { 1, 2, 2, 0, 6, 2, 1, 3 } },
      "the padding row is used and gets no gradient by design; test_embedding checks the "
      "scatter-add exactly" },
};

/* ------------------------------------------------------------------- rows */

#define NORM_FWD { 1e-4, "float statistics of up to 210 values normalise by a small spread" }
#define NORM_FILL(...) { { __VA_ARGS__ }, { OR_NORMAL, 0.5, 1.0, 0 }, { OR_NORMAL, 0.5, 0.0, 0 } }

const or_row OR_ROWS_NORM[] = {
    { .name = "batch_norm", .covers = "fx_batch_norm", .ncases = OR_COUNT(BN_CASES),
      .cases = BN_CASES,
      .fill = { { OR_NORMAL, 1.5, 0.3, 0 }, { OR_NORMAL, 0.5, 1.0, 0 }, { OR_NORMAL, 0.5, 0, 0 },
                { OR_NORMAL, 0.3, 0.2, 0 }, { OR_UNIFORM, 0.5, 2.0, 0 } },
      .forward = f_batch_norm, .reference = r_batch_norm, .fwd = NORM_FWD,
      .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "layer_norm", .covers = "fx_layer_norm", .ncases = OR_COUNT(LN_CASES),
      .cases = LN_CASES, .fill = NORM_FILL(OR_NORMAL, 1, 0.5, 0),
      .forward = f_layer_norm, .reference = r_layer_norm, .fwd = NORM_FWD,
      .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "group_norm", .covers = "fx_group_norm", .ncases = OR_COUNT(GN_CASES),
      .cases = GN_CASES, .fill = NORM_FILL(OR_NORMAL, 1, -0.5, 0),
      .forward = f_group_norm, .reference = r_group_norm, .fwd = NORM_FWD,
      .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "embedding", .covers = "fx_embedding", .ncases = OR_COUNT(EMB_CASES),
      .cases = EMB_CASES, .forward = f_embedding, .reference = r_embedding,
      .fwd = OR_FWD_EXACT, .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "batchnorm1d", .covers = "fx_batchnorm1d_create", .ncases = OR_COUNT(BN1D_CASES),
      .cases = BN1D_CASES, .fill = { { OR_UNIFORM, -1, 3, 0 } }, .layer = l_norm,
      .forward = f_norm_layer, .reference = r_norm_layer, .fwd = NORM_FWD,
      .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "batchnorm2d", .covers = "fx_batchnorm2d_create", .ncases = OR_COUNT(BN2D_CASES),
      .cases = BN2D_CASES, .fill = { { OR_UNIFORM, -1, 3, 0 } }, .layer = l_norm,
      .forward = f_norm_layer, .reference = r_norm_layer, .fwd = NORM_FWD,
      .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "layernorm", .covers = "fx_layernorm_create", .ncases = OR_COUNT(LN_LAYER_CASES),
      .cases = LN_LAYER_CASES, .fill = { { OR_UNIFORM, -1, 3, 0 } }, .layer = l_norm,
      .forward = f_norm_layer, .reference = r_norm_layer, .fwd = NORM_FWD,
      .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "groupnorm", .covers = "fx_groupnorm_create", .ncases = OR_COUNT(GN_LAYER_CASES),
      .cases = GN_LAYER_CASES, .fill = { { OR_UNIFORM, -1, 3, 0 } }, .layer = l_norm,
      .forward = f_norm_layer, .reference = r_norm_layer, .fwd = NORM_FWD,
      .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
    { .name = "embedding_layer", .covers = "fx_embedding_create",
      .ncases = OR_COUNT(EMB_LAYER_CASES), .cases = EMB_LAYER_CASES, .layer = l_embedding,
      .forward = f_embedding, .reference = r_embedding, .fwd = OR_FWD_EXACT,
      .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
};
const int OR_NROWS_NORM = OR_COUNT(OR_ROWS_NORM);
