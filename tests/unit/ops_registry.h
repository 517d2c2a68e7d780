/*
 * ops_registry.h - the op test registry: one row per op and per layer of the
 * engine, in the style of ggml's test-backend-ops. test_ops.c runs every row.
 *
 * A row (or_row) names the op, lists its cases (shapes and arguments), says
 * how to fill its inputs, and gives three functions and three tolerances:
 *   forward    builds the op's output from persistent f32 inputs (and the
 *              row's layer, for layer rows); index tensors, lengths and masks
 *              are made inside it from the case's argument;
 *   reference  the same output in double with plain loops, written from the
 *              math, never by calling the engine;
 *   layer      (layer rows only) builds the layer from a seeded generator;
 *   fwd        how close the output must be to the reference, and why;
 *   grad       the finite-difference check (fx_gradcheck) of every input and
 *              parameter, its tolerances and step, and why;
 *   xb         how close another backend (cuda:0, or the CPU again when
 *              there is no GPU) must be to the CPU, outputs and gradients,
 *              and why.
 * The rows live in ops_rows_<family>.c next to their forwards and references;
 * ops_registry.c lists the families. Adding an op = its file + one row.
 */
#ifndef FX_OPS_REGISTRY_H
#define FX_OPS_REGISTRY_H

#include "fluxion.h"

#define OR_MAX_IN 6    /* f32 inputs of one case */

/* How a row draws the values of one input (fill[i] of the row). */
typedef enum {
    OR_NORMAL = 0, /* N(b, a^2); a == 0 means a standard deviation of 1 */
    OR_UNIFORM,    /* U(a, b) */
    OR_AWAY,       /* |x| ~ U(a, b) with a random sign: away from a kink at 0 */
    OR_DISTINCT,   /* a shuffled ramp with spacing a around 0: no ties (max) */
    OR_PROBS,      /* U(a, b), each row of the last dim normalised to sum 1 */
} or_fill_kind;

typedef struct {
    or_fill_kind kind;
    double a, b;
    double avoid; /* > 0: |x| is kept at least 0.05 from this value (clamp) */
} or_fill;

typedef struct {
    int ndim;
    int64_t shape[FX_MAX_DIMS];
} or_shape;

/* One configuration of a row: the shapes of its inputs and the row's own
 * argument struct (axes, strides, indices, ...). */
typedef struct {
    const char *label;       /* what the case exercises, shown on failure */
    int nin;
    or_shape in[OR_MAX_IN];
    unsigned nograd;         /* bit i: input i is a constant, not checked */
    const void *arg;
    const char *no_gradcheck; /* non-NULL: no finite differences, and why */
} or_case;

/* A host tensor in double, row-major. */
typedef struct {
    int ndim;
    int64_t shape[FX_MAX_DIMS];
    int64_t n;
    double *v;
} or_host;

/* What a reference gets: the case, the row's argument, the inputs and (for
 * layer rows) the layer's parameters by name without the layer's own
 * prefix ("weight", "body.fc1.bias"); it writes out (or_host_init). got is
 * the engine's output, for dropout's mask only. A case whose output depends
 * on the engine's random numbers in a way the reference cannot follow sets
 * *unchecked to the reason instead (its forward is then checked elsewhere,
 * which the reason names). */
typedef struct {
    const or_case *c;
    const void *arg;
    int nin;
    const or_host *in;
    int nparams;
    const or_host *params;
    const char *const *param_names;
    const or_host *got;
    or_host *out;
    const char **unchecked;
} or_ref;

typedef struct {
    double tol; /* |got - want| <= tol * (1 + |want|) elementwise */
    const char *why;
} or_tol;

typedef struct {
    double rtol, atol, eps; /* fx_gradcheck_opts */
    const char *why;
    const char *skip;       /* non-NULL: no gradient check for the row, and why */
} or_grad;

typedef struct or_row {
    const char *name;
    const char *covers;      /* the public functions the row exercises */
    const void *arg;         /* the row's own argument (e.g. which unary op) */
    int ncases;
    const or_case *cases;
    or_fill fill[OR_MAX_IN];
    fx_layer *(*layer)(const void *arg, const or_case *c, fx_rng *rng);
    fx_tensor *(*forward)(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                          const or_case *c);
    void (*reference)(const or_ref *r);
    or_tol fwd;
    or_grad grad;
    or_tol xb;
} or_row;

/* The families of rows (ops_rows_*.c), each a table and its length. */
typedef struct {
    const char *family;
    const or_row *rows;
    const int *nrows;
} or_family;

/* Every family, in order; *n gets their count. */
const or_family *or_families(int *n);

/* The standard tolerances, each with its reason. */
#define OR_FWD_EXACT { 1e-6, "each output is one float operation (or a copy) of an input" }
#define OR_FWD_POINT { 1e-5, "one float formula per element (libm vs the kernels' exp / tanh)" }
#define OR_FWD_SUM { 1e-5, "float sums of at most a few hundred terms against double" }
#define OR_GRAD_STD { 1e-2, 1e-3, 1e-3, "central differences of a float loss, step 1e-3", NULL }
/* A function linear in each input has no truncation error at any step: a
 * larger step shrinks the float rounding of the loss divided by 2 * eps. */
#define OR_GRAD_LINEAR                                                                           \
    { 1e-2, 1e-3, 1e-2, "linear in each input: step 1e-2 keeps the rounding 10x under atol", NULL }
#define OR_XB_EXACT { 1e-5, "the same float formula per element" }
#define OR_XB_SUM                                                                                \
    { 1e-4, "different summation order; the CPU's polynomial exp in softmax / CE / RNN cells" }
#define OR_XB_GEMM { 5e-4, "cuBLAS and OpenBLAS sum in different orders; TF32 is off" }
#define OR_XB_CTC { 2e-3, "log-space recursions over T frames, approximate exp/log on the CPU" }

/* Helpers for references (ops_registry.c). */
/* Sets the shape of h and allocates zeroed values. */
void or_host_init(or_host *h, int ndim, const int64_t *shape);
/* The parameter of a layer row by its name without the layer prefix; NULL
 * when there is none. */
const or_host *or_param(const or_ref *r, const char *name);
/* Row-major offset of coordinates c in shape, and coordinates of offset i. */
int64_t or_offset(int ndim, const int64_t *shape, const int64_t *c);
void or_coords(int ndim, const int64_t *shape, int64_t i, int64_t *c);
/* Flat index into a tensor of shape ms (md dims) broadcast to shape fs (fd
 * dims), for the flat index i of fs (numpy rules, trailing dims aligned). */
int64_t or_bcast_index(const int64_t *fs, int fd, const int64_t *ms, int md, int64_t i);
/* The activation's value in double (fx_activation; softmax is per row and
 * done by the callers). */
double or_act(double v, fx_activation act);
/* Softmax (or log-softmax) of n values in place, max-shifted. */
void or_softmax(double *v, int64_t n, int64_t stride, bool lg);
/* y [R, out] = act(x [R, in] w^T + b) in double; b may be NULL; softmax over
 * each row when act is FX_ACT_SOFTMAX. */
void or_dense(const double *x, int64_t R, int64_t in, const double *w, const double *b,
              int64_t out, fx_activation act, double *y);
/* A dense layer of a reference by parameter prefix ("" for the row's own
 * layer, "body.fc1" for a child): y = act(x w^T + b) with "<prefix>.weight"
 * [out, in] and "<prefix>.bias" (may be absent); returns y (malloc'd, R x
 * out) and sets *out. */
double *or_dense_named(const or_ref *r, const char *prefix, const double *x, int64_t R,
                       fx_activation act, int64_t *out);
/* Fills a persistent tensor with N(0, scale^2) values from rng (e.g. a bias
 * that would otherwise start at zero and hide a bias never added). */
void or_randomise(fx_tensor *t, fx_rng *rng, double scale);
/* The tensors flattened and concatenated into one 1-D tensor (ops with
 * several outputs: every output reaches the gradient check). */
fx_tensor *or_flat_concat(fx_ctx *ctx, int n, fx_tensor **ts);
/* A convolution's geometry: input [n, c, h, w], weight [o, c/groups, kh,
 * kw] (1-D: h = kh = 1). */
typedef struct {
    int64_t n, c, h, w, o, kh, kw;
    int sh, sw, ph, pw, dh, dw, groups;
} or_conv;
/* conv2d by its definition, zero outside the image; b may be NULL. Sets
 * the output size *oh x *ow and writes y [n, o, oh, ow] when y is not NULL. */
void or_conv2d(const or_conv *g, const double *x, const double *w, const double *b, double *y,
               int64_t *oh, int64_t *ow);
/* conv_transpose2d by its scatter definition (ops_rows_conv.c): g is the
 * transposed op's view (input channels c, output channels o, weight [c,
 * o/groups, kh, kw]), oph / opw its output padding; b may be NULL; writes
 * out [n, o, oh, ow] (or_host_init). */
void or_conv_transpose2d(const or_conv *g, int oph, int opw, const double *x, const double *w,
                         const double *b, or_host *out);
/* Normalisation of x seen as (N, C, L): groups 0 is batch norm (one set of
 * statistics per channel over N and L, or the given mean / var: eval mode),
 * groups > 0 is group norm (one set per sample and group of C/groups
 * channels). y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c], with the
 * biased variance; gamma, beta, mean, var may be NULL. */
void or_norm(const double *x, int64_t N, int64_t C, int64_t L, int64_t groups, double eps,
             const double *gamma, const double *beta, const double *mean, const double *var,
             double *y);
/* Scaled dot-product attention in double (ops_rows_attn.c) on B problems
 * of q [B, L, E], k [B, S, E], v [B, S, Ev]: key j of query i of problem b
 * is kept when j < lens[b / per] (lens may be NULL), j <= i (causal) and
 * keep[b, i, j] (keep may be NULL); add [B, L, S] (may be NULL) is added to
 * the scores. Writes out [B, L, Ev]; a row with no key left gets zeros. */
typedef struct {
    int64_t B, L, S, E, Ev;
    const int64_t *lens;
    int64_t per;
    bool causal;
    const int *keep;
    const double *add;
} or_sdpa_spec;
void or_sdpa(const or_sdpa_spec *r, const double *q, const double *k, const double *v,
             double *out);
/* A recurrent stack for or_rnn: cell, layers, directions, sizes and the
 * per-sample lengths len [N] (each in [1, T]). */
typedef struct {
    fx_rnn_mode mode;
    int L;
    bool bidir;
    int64_t N, T, in, H;
    const int64_t *len;
} or_rnn_spec;
/* The stack in double (ops_rows_rnn.c), one sample at a time over its own
 * steps only, from PyTorch's formulas. w[k] = { w_ih, w_hh, b_ih, b_hh } of
 * layer l, direction d at k = l * D + d (biases may be NULL). x [N, T, in],
 * h0 / c0 [L*D, N, H] (may be NULL). Writes out [N, T, D*H] (zero at padded
 * steps), hn [L*D, N, H] and, when cn is not NULL, the cell states there
 * (zeros for cells other than the LSTM). */
void or_rnn(const or_rnn_spec *s, const double *const (*w)[4], const double *x, const double *h0,
            const double *c0, double *out, double *hn, double *cn);
/* A CTC batch: T, N, C, blank, per-sample input lengths and targets. */
typedef struct {
    int64_t T, N, C, blank;
    int64_t il[6], tl[6];
    int64_t tg[6][6];
} or_ctc_batch;
/* The batches of the ctc_loss row that test_ctc checks too
 * (ops_rows_loss.c). Mixed lengths, blank 0: a full-length target with a
 * repeat, a tight one (tl + repeats == il), an empty one, a one-frame one,
 * a long one. */
extern const or_ctc_batch OR_CTC_MIXED;
/* Blank last; a target as long as its input (one path only). */
extern const or_ctc_batch OR_CTC_BLANK_LAST;
/* CTC by brute force (ops_rows_loss.c): -log of the summed probability of
 * every labelling of frames [0, Tn) of sample n that collapses (merge
 * repeats, drop blanks) to tgt[0..tl); all C^Tn labellings are enumerated
 * (Tn <= 16). lp is [T, N, C] and need not be normalised; inf when no
 * labelling collapses to the target. */
double or_ctc_brute(const double *lp, int64_t N, int64_t C, int64_t n, int64_t Tn,
                    const int64_t *tgt, int64_t tl, int64_t blank);
/* An index / lengths tensor from int64 values, i32 or i64, made in ctx. */
fx_tensor *or_index(fx_ctx *ctx, fx_dtype dt, int ndim, const int64_t *shape, const int64_t *v);

/* The family tables (defined in ops_rows_*.c). */
#define OR_FAMILY(x) extern const or_row OR_ROWS_##x[]; extern const int OR_NROWS_##x;
OR_FAMILY(POINTWISE)
OR_FAMILY(LINEAR)
OR_FAMILY(REDUCE)
OR_FAMILY(SHAPE)
OR_FAMILY(LOSS)
OR_FAMILY(CONV)
OR_FAMILY(NORM)
OR_FAMILY(RNN)
OR_FAMILY(ATTN)
#undef OR_FAMILY

#define OR_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

#endif
