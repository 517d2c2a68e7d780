/* ops_rows_pointwise.c - registry rows of the elementwise ops: unary,
 * binary with broadcasting, where, dropout, gradient reversal and the
 * activation layer. See ops_registry.h. */
#include "ops_registry.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ unary */

enum { NEG, SCALE, ADDS, EXP, LOG, SQRT, POW, ABS, RELU, LEAKY, ELU, GELU, SIG, TANH, CLAMP,
       ERF, GELU_EXACT };

typedef struct {
    int op;
    float a, b;
} un_arg;

static fx_tensor *f_unary(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    const un_arg *u = c->arg ? c->arg : arg; /* a case may set its own scalars */
    fx_tensor *x = in[0];
    switch (u->op) {
    case NEG: return fx_neg(ctx, x);
    case SCALE: return fx_scale(ctx, x, u->a);
    case ADDS: return fx_add_scalar(ctx, x, u->a);
    case EXP: return fx_exp(ctx, x);
    case LOG: return fx_log(ctx, x);
    case SQRT: return fx_sqrt(ctx, x);
    case POW: return fx_pow(ctx, x, u->a);
    case ABS: return fx_abs(ctx, x);
    case RELU: return fx_relu(ctx, x);
    case LEAKY: return fx_leaky_relu(ctx, x, u->a);
    case ELU: return fx_elu(ctx, x, u->a);
    case GELU: return fx_gelu(ctx, x);
    case SIG: return fx_sigmoid(ctx, x);
    case TANH: return fx_tanh(ctx, x);
    case ERF: return fx_erf(ctx, x);
    case GELU_EXACT: return fx_gelu_exact(ctx, x);
    default: return fx_clamp(ctx, x, u->a, u->b);
    }
}

static double unary(double v, const un_arg *u)
{
    switch (u->op) {
    case NEG: return -v;
    case SCALE: return u->a * v;
    case ADDS: return v + u->a;
    case EXP: return exp(v);
    case LOG: return log(v);
    case SQRT: return sqrt(v);
    case POW: return pow(v, u->a);
    case ABS: return fabs(v);
    case RELU: return v > 0 ? v : 0;
    case LEAKY: return v > 0 ? v : u->a * v;
    case ELU: return v > 0 ? v : u->a * (exp(v) - 1);
    case GELU: return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    case SIG: return 1 / (1 + exp(-v));
    case TANH: return tanh(v);
    case ERF: return erf(v);
    case GELU_EXACT: return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    default: return v < u->a ? u->a : (v > u->b ? u->b : v);
    }
}

static void r_unary(const or_ref *r)
{
    or_host_init(r->out, r->in[0].ndim, r->in[0].shape);
    for (int64_t i = 0; i < r->in[0].n; i++)
        r->out->v[i] = unary(r->in[0].v[i], r->c->arg ? r->c->arg : r->arg);
}

/* Inputs away from the kinks (0 for relu / abs, the clamp bounds +-1) so a
 * finite-difference step never straddles one; positive for log, sqrt, pow. */
#define AWAY { OR_AWAY, 0.2, 2.0, 0 }
#define POSITIVE { OR_UNIFORM, 0.2, 2.0, 0 }
#define AWAY_FROM_1 { OR_AWAY, 0.2, 2.0, 1.0 }
/* Three ranks, then a vector with a tail past the kernels' vector width and
 * the cross-backend table's scalar a33. */
#define UNARY(nm, op, a, b, fill_, a33)                                                          \
    { .name = nm, .covers = "fx_" nm, .arg = &(const un_arg){ op, a, b }, .ncases = 4,          \
      .cases = (const or_case[]){ { "[7]", 1, { { 1, { 7 } } } },                               \
                                  { "[3,5]", 1, { { 2, { 3, 5 } } } },                          \
                                  { "[2,3,4]", 1, { { 3, { 2, 3, 4 } } } },                     \
                                  { "[33], scalar " #a33, 1, { { 1, { 33 } } }, 0,              \
                                    &(const un_arg){ op, a33, b } } },                          \
      .fill = { fill_ }, .forward = f_unary, .reference = r_unary, .fwd = OR_FWD_POINT,         \
      .grad = OR_GRAD_STD, .xb = OR_XB_EXACT }

/* ----------------------------------------------------------------- binary */

typedef struct {
    int op; /* 0 add, 1 sub, 2 mul, 3 div */
} bin_arg;

static fx_tensor *f_binary(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                           const or_case *c)
{
    fx_tensor *a = in[0], *b = c->nin == 1 ? in[0] : in[1]; /* one input: x op x */
    switch (((const bin_arg *)arg)->op) {
    case 0: return fx_add(ctx, a, b);
    case 1: return fx_sub(ctx, a, b);
    case 2: return fx_mul(ctx, a, b);
    default: return fx_div(ctx, a, b);
    }
}

/* The broadcast shape of n shapes (numpy rules); false when they do not fit. */
static int bcast_shape(int n, const or_host *const *hs, int64_t *shape)
{
    int nd = 0;
    for (int i = 0; i < n; i++)
        nd = hs[i]->ndim > nd ? hs[i]->ndim : nd;
    for (int d = 0; d < nd; d++) {
        shape[d] = 1;
        for (int i = 0; i < n; i++) {
            int di = d - (nd - hs[i]->ndim);
            if (di >= 0 && hs[i]->shape[di] != 1)
                shape[d] = hs[i]->shape[di];
        }
    }
    return nd;
}

static void r_binary(const or_ref *r)
{
    const or_host *a = &r->in[0], *b = r->nin == 1 ? &r->in[0] : &r->in[1];
    int64_t shape[FX_MAX_DIMS];
    int nd = bcast_shape(2, (const or_host *[]){ a, b }, shape);
    or_host_init(r->out, nd, shape);
    for (int64_t i = 0; i < r->out->n; i++) {
        double x = a->v[or_bcast_index(shape, nd, a->shape, a->ndim, i)];
        double y = b->v[or_bcast_index(shape, nd, b->shape, b->ndim, i)];
        int op = ((const bin_arg *)r->arg)->op;
        r->out->v[i] = op == 0 ? x + y : op == 1 ? x - y : op == 2 ? x * y : x / y;
    }
}

#define S1(a) { 1, { a } }
#define S2(a, b) { 2, { a, b } }
#define S3(a, b, c) { 3, { a, b, c } }
/* Equal shapes, a row vector, a column, a scalar, both sides broadcast, a
 * lower-rank operand on either side, and the cross-backend table's shapes. */
static const or_case BINARY_CASES[] = {
    { "equal shapes", 2, { S2(3, 4), S2(3, 4) } },
    { "row vector", 2, { S2(3, 4), S1(4) } },
    { "column", 2, { S2(3, 4), S2(3, 1) } },
    { "scalar", 2, { S2(3, 4), S1(1) } },
    { "both broadcast", 2, { S2(3, 1), S2(1, 4) } },
    { "lower rank first", 2, { S1(4), S3(2, 3, 4) } },
    { "3-D against 2-D", 2, { S3(2, 1, 4), S2(3, 1) } },
    { "[4,5] + [1,5]", 2, { S2(4, 5), S2(1, 5) } },
    { "[3,1,4] + [1,2,4]", 2, { S3(3, 1, 4), S3(1, 2, 4) } },
    { "[4,1] + [4,6]", 2, { S2(4, 1), S2(4, 6) } },
    { "the same tensor on both sides: both contributions", 1, { S2(4, 3) } },
};

#define BINARY(nm, op)                                                                           \
    { .name = nm, .covers = "fx_" nm, .arg = &(const bin_arg){ op },                            \
      .ncases = OR_COUNT(BINARY_CASES), .cases = BINARY_CASES,                                  \
      .fill = { { OR_UNIFORM, -2, 2, 0 }, { OR_UNIFORM, 0.5, 2, 0 } }, .forward = f_binary,     \
      .reference = r_binary, .fwd = OR_FWD_POINT, .grad = OR_GRAD_STD, .xb = OR_XB_EXACT }

/* ------------------------------------------------------------------ where */

typedef struct {
    fx_dtype dt; /* of the condition: i32 or f32 */
    int ndim;
    int64_t shape[2];
    int v[8];
} where_arg;

static fx_tensor *f_where(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    const where_arg *w = c->arg;
    int64_t n = w->ndim == 1 ? w->shape[0] : w->shape[0] * w->shape[1];
    float f[8];
    int32_t i32[8];
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)w->v[i], i32[i] = w->v[i];
    fx_tensor *cond = fx_tensor_from_host(ctx, w->dt, w->ndim, w->shape,
                                          w->dt == FX_F32 ? (void *)f : (void *)i32);
    return fx_where(ctx, cond, in[0], in[1]);
}

static void r_where(const or_ref *r)
{
    const where_arg *w = r->c->arg;
    or_host cond = { .ndim = w->ndim, .shape = { w->shape[0], w->shape[1] } };
    int64_t shape[FX_MAX_DIMS];
    int nd = bcast_shape(3, (const or_host *[]){ &cond, &r->in[0], &r->in[1] }, shape);
    or_host_init(r->out, nd, shape);
    for (int64_t i = 0; i < r->out->n; i++) {
        bool t = w->v[or_bcast_index(shape, nd, cond.shape, cond.ndim, i)] != 0;
        const or_host *h = t ? &r->in[0] : &r->in[1];
        r->out->v[i] = h->v[or_bcast_index(shape, nd, h->shape, h->ndim, i)];
    }
}

static const or_case WHERE_CASES[] = {
    { "i32 condition, b a row", 2, { S2(2, 3), S1(3) }, 0,
      &(const where_arg){ FX_I32, 2, { 2, 3 }, { 1, 0, 0, 1, 1, 0 } } },
    { "f32 condition broadcast along rows", 2, { S2(2, 3), S1(3) }, 0,
      &(const where_arg){ FX_F32, 1, { 3 }, { 0, 1, 0 } } },
    { "all three broadcast", 2, { S2(3, 4), S2(3, 1) }, 0,
      &(const where_arg){ FX_I32, 2, { 1, 4 }, { 1, 0, 0, 1 } } },
};

/* ---------------------------------------------------------------- dropout */

static fx_tensor *f_dropout(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                            const or_case *c)
{
    return fx_dropout(ctx, in[0], 0.3f);
}

/* The mask is the engine's (its RNG): the kept elements must be x / (1 - p)
 * exactly where the output is not zero. The statistics of the mask are
 * test_elementwise's. */
static void r_dropout(const or_ref *r)
{
    or_host_init(r->out, r->in[0].ndim, r->in[0].shape);
    for (int64_t i = 0; i < r->out->n; i++)
        r->out->v[i] = r->got->v[i] == 0.0 ? 0.0 : r->in[0].v[i] / (1.0 - (double)0.3f);
}

static const or_case DROPOUT_CASES[] = {
    { "[4,5]", 1, { S2(4, 5) } },
    { "[16,40]", 1, { S2(16, 40) } },
};

/* ----------------------------------------------------------- grad_reverse */

/* Forward the identity, backward -lambda * dy: with lambda = -1 that is the
 * true derivative, so finite differences check the sign and the scale; the
 * other lambdas are checked exactly in test_model (and across backends). */
#define GRL_WHY                                                                                  \
    "the backward is -lambda times the derivative by design: only lambda = -1 is checked by "  \
    "finite differences; test_model checks the others exactly"

typedef struct {
    float lambda;
    bool transposed; /* on a strided view */
} grl_arg;

static fx_tensor *f_grad_reverse(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                                 const or_case *c)
{
    const grl_arg *g = c->arg;
    fx_tensor *x = g->transposed ? fx_transpose(ctx, in[0], 0, 1) : in[0];
    fx_tensor *y = l ? fx_layer_forward(l, ctx, x) : fx_grad_reverse(ctx, x, g->lambda);
    return fx_contiguous(ctx, y);
}

static void r_grad_reverse(const or_ref *r)
{
    const grl_arg *g = r->c->arg;
    const or_host *x = &r->in[0];
    if (!g->transposed) {
        or_host_init(r->out, x->ndim, x->shape);
        memcpy(r->out->v, x->v, (size_t)x->n * sizeof *x->v);
        return;
    }
    int64_t shape[FX_MAX_DIMS], c[FX_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = x->shape[1], shape[1] = x->shape[0];
    or_host_init(r->out, x->ndim, shape);
    for (int64_t i = 0; i < r->out->n; i++) {
        or_coords(x->ndim, shape, i, c);
        int64_t t = c[0];
        c[0] = c[1], c[1] = t;
        r->out->v[i] = x->v[or_offset(x->ndim, x->shape, c)];
    }
}

static fx_layer *l_grad_reverse(const void *arg, const or_case *c, fx_rng *rng)
{
    return fx_grad_reverse_create("grl", ((const grl_arg *)c->arg)->lambda);
}

static const or_case GRL_CASES[] = {
    { "lambda -1: the true derivative", 1, { S3(2, 3, 2) }, 0, &(const grl_arg){ -1.0f, false } },
    { "lambda -1 on a transposed view", 1, { S3(2, 3, 2) }, 0, &(const grl_arg){ -1.0f, true } },
    { "lambda 0.5", 1, { S3(2, 3, 2) }, 0, &(const grl_arg){ 0.5f, false }, GRL_WHY },
    { "lambda 0 blocks", 1, { S2(3, 4) }, 0, &(const grl_arg){ 0.0f, true }, GRL_WHY },
};

/* ------------------------------------------------------- activation layer */

static fx_layer *l_activation(const void *arg, const or_case *c, fx_rng *rng)
{
    return fx_activation_create("act", *(const fx_activation *)c->arg);
}

static fx_tensor *f_layer(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c)
{
    return fx_layer_forward(l, ctx, in[0]);
}

static void r_activation(const or_ref *r)
{
    fx_activation act = *(const fx_activation *)r->c->arg;
    const or_host *x = &r->in[0];
    int64_t C = x->shape[x->ndim - 1];
    or_host_init(r->out, x->ndim, x->shape);
    for (int64_t i = 0; i < x->n; i++)
        r->out->v[i] = act == FX_ACT_SOFTMAX ? x->v[i] : or_act(x->v[i], act);
    if (act == FX_ACT_SOFTMAX)
        for (int64_t row = 0; row < x->n / C; row++)
            or_softmax(r->out->v + row * C, C, 1, false);
}

#define ACT(label, a) { label, 1, { S3(2, 3, 4) }, 0, &(const fx_activation){ a } }
static const or_case ACT_CASES[] = {
    ACT("none", FX_ACT_NONE),       ACT("relu", FX_ACT_RELU), ACT("sigmoid", FX_ACT_SIGMOID),
    ACT("tanh", FX_ACT_TANH),       ACT("gelu", FX_ACT_GELU), ACT("softmax", FX_ACT_SOFTMAX),
    ACT("leaky_relu", FX_ACT_LEAKY_RELU), ACT("elu", FX_ACT_ELU),
};

/* ------------------------------------------------------------------- rows */

const or_row OR_ROWS_POINTWISE[] = {
    UNARY("neg", NEG, 0, 0, AWAY, 0),
    UNARY("scale", SCALE, -1.7f, 0, AWAY, -1.5f),
    UNARY("add_scalar", ADDS, 0.3f, 0, AWAY, 0.25f),
    UNARY("exp", EXP, 0, 0, AWAY, 0),
    UNARY("log", LOG, 0, 0, POSITIVE, 0),
    UNARY("sqrt", SQRT, 0, 0, POSITIVE, 0),
    UNARY("pow", POW, 2.5f, 0, POSITIVE, 1.7f),
    UNARY("abs", ABS, 0, 0, AWAY, 0),
    UNARY("relu", RELU, 0, 0, AWAY, 0),
    UNARY("leaky_relu", LEAKY, 0.3f, 0, AWAY, 0.1f),
    UNARY("elu", ELU, 0.3f, 0, AWAY, 0.8f),
    UNARY("gelu", GELU, 0, 0, AWAY, 0),
    UNARY("sigmoid", SIG, 0, 0, AWAY, 0),
    UNARY("tanh", TANH, 0, 0, AWAY, 0),
    UNARY("erf", ERF, 0, 0, AWAY, 0),
    UNARY("gelu_exact", GELU_EXACT, 0, 0, AWAY, 0),
    UNARY("clamp", CLAMP, -1.0f, 1.0f, AWAY_FROM_1, -1.0f), /* the bounds the fill avoids */
    BINARY("add", 0),
    BINARY("sub", 1),
    BINARY("mul", 2),
    BINARY("div", 3),
    { .name = "where", .covers = "fx_where", .ncases = OR_COUNT(WHERE_CASES),
      .cases = WHERE_CASES, .forward = f_where, .reference = r_where, .fwd = OR_FWD_EXACT,
      .grad = OR_GRAD_STD, .xb = OR_XB_EXACT },
    { .name = "dropout", .covers = "fx_dropout", .ncases = OR_COUNT(DROPOUT_CASES),
      .cases = DROPOUT_CASES, .forward = f_dropout, .reference = r_dropout,
      .fwd = OR_FWD_POINT, .grad = OR_GRAD_STD,
      .xb = { 1e-5, "the same mask from the context's seed, one float product per element" } },
    { .name = "grad_reverse", .covers = "fx_grad_reverse", .ncases = OR_COUNT(GRL_CASES),
      .cases = GRL_CASES, .forward = f_grad_reverse, .reference = r_grad_reverse,
      .fwd = OR_FWD_EXACT, .grad = OR_GRAD_STD, .xb = OR_XB_EXACT },
    { .name = "grad_reverse_layer", .covers = "fx_grad_reverse_create",
      .ncases = OR_COUNT(GRL_CASES), .cases = GRL_CASES, .layer = l_grad_reverse,
      .forward = f_grad_reverse, .reference = r_grad_reverse, .fwd = OR_FWD_EXACT,
      .grad = OR_GRAD_STD, .xb = OR_XB_EXACT },
    { .name = "activation_layer", .covers = "fx_activation_create, fx_activate",
      .ncases = OR_COUNT(ACT_CASES), .cases = ACT_CASES, .fill = { AWAY },
      .layer = l_activation, .forward = f_layer, .reference = r_activation,
      .fwd = OR_FWD_POINT, .grad = OR_GRAD_STD, .xb = OR_XB_SUM },
};
const int OR_NROWS_POINTWISE = OR_COUNT(OR_ROWS_POINTWISE);
