/* ops_rows_attn.c - registry rows of scaled dot-product attention (key
 * lengths, causal, boolean and additive masks, broadcast masks, a mask that
 * takes a gradient, dropout) and the multi-head attention layer. See
 * ops_registry.h. */
#include "ops_registry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S2(a, b) { 2, { a, b } }
#define S3(a, b, c) { 3, { a, b, c } }
#define S4(a, b, c, d) { 4, { a, b, c, d } }

/* -------------------------------------------------------------- reference */

/* See ops_registry.h. */
void or_sdpa(const or_sdpa_spec *r, const double *q, const double *k, const double *v,
             double *out)
{
    int64_t L = r->L, S = r->S, E = r->E, Ev = r->Ev;
    double *p = malloc((size_t)(S ? S : 1) * sizeof *p);
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t i = 0; i < L; i++) {
            double mx = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j < S; j++) {
                int64_t f = (b * L + i) * S + j;
                bool kept = (!r->lens || j < r->lens[b / r->per]) && (!r->causal || j <= i) &&
                            (!r->keep || r->keep[f]);
                double s = 0.0;
                for (int64_t e = 0; e < E; e++)
                    s += q[(b * L + i) * E + e] * k[(b * S + j) * E + e];
                s = s / sqrt((double)E) + (r->add ? r->add[f] : 0.0);
                p[j] = kept ? s : -INFINITY;
                mx = fmax(mx, p[j]);
            }
            for (int64_t j = 0; j < S; j++) {
                p[j] = mx == -INFINITY ? 0.0 : exp(p[j] - mx);
                sum += p[j];
            }
            for (int64_t e = 0; e < Ev; e++) {
                double o = 0.0;
                for (int64_t j = 0; j < S; j++)
                    o += (sum > 0 ? p[j] / sum : 0.0) * v[(b * S + j) * Ev + e];
                out[(b * L + i) * Ev + e] = o;
            }
        }
    free(p);
}

/* -------------------------------------------------------------------- sdpa */

/* q [bd.., L, E], k [bd.., S, E], v [bd.., S, Ev]; key lengths (i64 or i32
 * values); causal; a mask of shape ms (md dims) broadcast to [bd.., L, S]:
 * kind 1 an i32 keep mask, 2 an f32 additive mask (input 3), 3 an f32
 * additive mask with -inf entries, made here. */
typedef struct {
    int nbd;
    int64_t bd[3], L, S, E, Ev;
    int nlens;
    int64_t lens[4];
    bool lens_i32, causal;
    int md;
    int64_t ms[4];
    int mask_kind;
    float dropout;
} attn_arg;

/* The keep mask (some entry masked whatever the pattern) and the -inf mask. */
static bool keep_at(int64_t i) { return i != 0 && (i * 7 + 3) % 10 < 7; }
static double add_at(int64_t i) { return i % 3 == 0 ? -INFINITY : sin((double)i + 1.0); }

static int64_t prod(const int64_t *s, int n)
{
    int64_t p = 1;
    for (int i = 0; i < n; i++)
        p *= s[i];
    return p;
}

static fx_tensor *f_sdpa(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                         const or_case *c)
{
    const attn_arg *a = c->arg;
    fx_tensor *lens = a->nlens ? or_index(ctx, a->lens_i32 ? FX_I32 : FX_I64, 1,
                                          (int64_t[]){ a->nlens }, a->lens)
                               : NULL;
    fx_tensor *mask = a->mask_kind == 2 ? in[3] : NULL;
    int64_t mn = prod(a->ms, a->md);
    if (a->mask_kind == 1 || a->mask_kind == 3) {
        int32_t keep[64];
        float add[64];
        for (int64_t i = 0; i < mn; i++)
            keep[i] = keep_at(i), add[i] = (float)add_at(i);
        mask = fx_tensor_from_host(ctx, a->mask_kind == 1 ? FX_I32 : FX_F32, a->md, a->ms,
                                   a->mask_kind == 1 ? (void *)keep : (void *)add);
    }
    return fx_scaled_dot_product_attention(ctx, in[0], in[1], in[2], lens, a->causal, mask,
                                           a->dropout);
}

static void r_sdpa(const or_ref *r)
{
    const attn_arg *a = r->c->arg;
    if (a->dropout > 0) {
        *r->unchecked = "dropped weights follow the engine's RNG; test_attention checks them";
        return;
    }
    int nd = a->nbd + 2;
    int64_t fs[FX_MAX_DIMS], B = prod(a->bd, a->nbd), n = B * a->L * a->S;
    memcpy(fs, a->bd, sizeof a->bd);
    fs[nd - 2] = a->L, fs[nd - 1] = a->S;
    int *keep = a->mask_kind == 1 ? malloc((size_t)n * sizeof *keep) : NULL;
    double *add = a->mask_kind >= 2 ? malloc((size_t)n * sizeof *add) : NULL;
    for (int64_t i = 0; i < n; i++) {
        int64_t m = or_bcast_index(fs, nd, a->ms, a->md, i);
        if (keep)
            keep[i] = keep_at(m);
        if (add)
            add[i] = a->mask_kind == 2 ? r->in[3].v[m] : add_at(m);
    }
    or_sdpa_spec sp = { B, a->L, a->S, a->E, a->Ev, a->nlens ? a->lens : NULL,
                    a->nlens ? B / a->nlens : 1, a->causal, keep, add };
    int64_t shape[FX_MAX_DIMS];
    memcpy(shape, fs, sizeof shape);
    shape[nd - 1] = a->Ev;
    or_host_init(r->out, nd, shape);
    or_sdpa(&sp, r->in[0].v, r->in[1].v, r->in[2].v, r->out->v);
    free(keep);
    free(add);
}

static const or_case SDPA_CASES[] = {
    { "plain 3-D, L != S, Ev != E", 3, { S3(2, 3, 4), S3(2, 5, 4), S3(2, 5, 3) }, 0,
      &(const attn_arg){ 1, { 2 }, 3, 5, 4, 3 } },
    { "heads [N,H,L,E], key lengths per N, causal", 3,
      { S4(2, 2, 3, 4), S4(2, 2, 5, 4), S4(2, 2, 5, 2) }, 0,
      &(const attn_arg){ 2, { 2, 2 }, 3, 5, 4, 2, 2, { 5, 2 }, false, true } },
    { "causal self-attention, i32 lengths, one of them 1", 3,
      { S3(2, 4, 3), S3(2, 4, 3), S3(2, 4, 3) }, 0,
      &(const attn_arg){ 1, { 2 }, 4, 4, 3, 3, 2, { 3, 1 }, true, true } },
    { "an additive [L,S] mask broadcast over the batch, with lengths", 4,
      { S3(3, 4, 2), S3(3, 5, 2), S3(3, 5, 3), S2(4, 5) }, 0x8,
      &(const attn_arg){ 1, { 3 }, 4, 5, 2, 3, 3, { 5, 3, 4 }, false, false, 2, { 4, 5 }, 2 } },
    { "a boolean [N,1,L,S] mask over heads", 3, { S4(2, 2, 3, 4), S4(2, 2, 5, 4), S4(2, 2, 5, 2) },
      0,
      &(const attn_arg){ 2, { 2, 2 }, 3, 5, 4, 2, .md = 4, .ms = { 2, 1, 3, 5 }, .mask_kind = 1 } },
    { "an additive [1,S] mask with -inf entries", 3, { S3(2, 3, 4), S3(2, 6, 4), S3(2, 6, 4) }, 0,
      &(const attn_arg){ 1, { 2 }, 3, 6, 4, 4, .md = 2, .ms = { 1, 6 }, .mask_kind = 3 } },
    { "unbatched 2-D, causal with L < S", 3, { S2(3, 4), S2(5, 4), S2(5, 2) }, 0,
      &(const attn_arg){ 0, { 0 }, 3, 5, 4, 2, .causal = true } },
    { "the gradient of a full additive mask", 4,
      { S3(2, 3, 3), S3(2, 4, 3), S3(2, 4, 2), S3(2, 3, 4) }, 0,
      &(const attn_arg){ 1, { 2 }, 3, 4, 3, 2, 2, { 4, 3 }, false, false, 3, { 2, 3, 4 }, 2 } },
    { "the gradient of a broadcast additive mask, causal", 4,
      { S4(2, 2, 3, 3), S4(2, 2, 4, 3), S4(2, 2, 4, 2), S3(2, 1, 4) }, 0,
      &(const attn_arg){ 2, { 2, 2 }, 3, 4, 3, 2, .causal = true, .md = 3, .ms = { 2, 1, 4 },
                         .mask_kind = 2 } },
    { "dropout 0.3 (the mask repeats from the seed)", 3, { S3(2, 3, 3), S3(2, 4, 3), S3(2, 4, 2) },
      0, &(const attn_arg){ 1, { 2 }, 3, 4, 3, 2, .causal = true, .dropout = 0.3f } },
    { "causal, i32 lengths 5 3", 3, { S3(2, 4, 6), S3(2, 5, 6), S3(2, 5, 3) }, 0,
      &(const attn_arg){ 1, { 2 }, 4, 5, 6, 3, 2, { 5, 3 }, true, true } },
    { "an additive [2,4,5] mask", 4, { S3(2, 4, 6), S3(2, 5, 6), S3(2, 5, 3), S3(2, 4, 5) }, 0,
      &(const attn_arg){ 1, { 2 }, 4, 5, 6, 3, .md = 3, .ms = { 2, 4, 5 }, .mask_kind = 2 } },
};

/* -------------------------------------------------------------- multi-head */

typedef struct {
    int64_t E, H;
    bool bias;
    int nlens;
    int64_t lens[2];
    bool lens_i32, causal;
    bool default_init; /* the layer's own init (zero biases), not N(0, 0.5^2) */
} mha_arg;

static fx_layer *l_mha(const void *arg, const or_case *c, fx_rng *rng)
{
    const mha_arg *a = c->arg;
    fx_layer *l = fx_multihead_attention_create("attn", a->E, a->H, a->bias, rng);
    fx_params ps;
    fx_params_init(&ps);
    if (l && !a->default_init && fx_layer_collect_params(l, &ps) == FX_OK) /* biases too */
        for (int i = 0; i < ps.count; i++)
            or_randomise(ps.items[i].tensor, rng, 0.5);
    fx_params_clear(&ps);
    return l;
}

/* Inputs: x (self-attention), q and kv (k = v), or q, k, v. */
static fx_tensor *f_mha(fx_ctx *ctx, fx_tensor **in, fx_layer *l, const void *arg,
                        const or_case *c)
{
    const mha_arg *a = c->arg;
    fx_tensor *lens = a->nlens ? or_index(ctx, a->lens_i32 ? FX_I32 : FX_I64, 1,
                                          (int64_t[]){ a->nlens }, a->lens)
                               : NULL;
    fx_tensor *q = in[0], *k = c->nin > 1 ? in[1] : in[0], *v = c->nin > 2 ? in[2] : k;
    return fx_multihead_attention_forward(l, ctx, q, k, v, lens, a->causal);
}

/* nn.MultiheadAttention in double: in-projection rows [0,E) q, [E,2E) k,
 * [2E,3E) v; heads of D = E/H features; the out-projection. */
static void r_mha(const or_ref *r)
{
    const mha_arg *a = r->c->arg;
    const or_host *xq = &r->in[0], *xk = r->nin > 1 ? &r->in[1] : xq;
    const or_host *xv = r->nin > 2 ? &r->in[2] : xk;
    const or_host *w_in = or_param(r, "in_proj_weight"), *b_in = or_param(r, "in_proj_bias");
    const or_host *w_out = or_param(r, "out_proj.weight"), *b_out = or_param(r, "out_proj.bias");
    int64_t E = a->E, H = a->H, D = E / H, N = xq->shape[0], L = xq->shape[1], S = xk->shape[1];
    const or_host *xs[3] = { xq, xk, xv };
    int64_t T[3] = { L, S, S };
    double *proj[3]; /* [N, H, T, D] */
    for (int p = 0; p < 3; p++) {
        proj[p] = malloc((size_t)(N * T[p] * E) * sizeof(double));
        for (int64_t n = 0; n < N; n++)
            for (int64_t t = 0; t < T[p]; t++)
                for (int64_t e = 0; e < E; e++) {
                    double s = b_in ? b_in->v[p * E + e] : 0.0;
                    for (int64_t f = 0; f < E; f++)
                        s += xs[p]->v[(n * T[p] + t) * E + f] * w_in->v[(p * E + e) * E + f];
                    proj[p][((n * H + e / D) * T[p] + t) * D + e % D] = s;
                }
    }
    double *att = malloc((size_t)(N * H * L * D) * sizeof(double));
    or_sdpa_spec sp = { N * H, L, S, D, D, a->nlens ? a->lens : NULL, H, a->causal, NULL, NULL };
    or_sdpa(&sp, proj[0], proj[1], proj[2], att);
    or_host_init(r->out, 3, (int64_t[]){ N, L, E });
    for (int64_t n = 0; n < N; n++)
        for (int64_t l = 0; l < L; l++)
            for (int64_t o = 0; o < E; o++) {
                double s = b_out ? b_out->v[o] : 0.0;
                for (int64_t e = 0; e < E; e++)
                    s += att[((n * H + e / D) * L + l) * D + e % D] * w_out->v[o * E + e];
                r->out->v[(n * L + l) * E + o] = s;
            }
    for (int p = 0; p < 3; p++)
        free(proj[p]);
    free(att);
}

static const or_case MHA_CASES[] = {
    { "cross attention, i32 lengths", 3, { S3(2, 3, 4), S3(2, 4, 4), S3(2, 4, 4) }, 0,
      &(const mha_arg){ 4, 2, true, 2, { 2, 4 }, true, false } },
    { "self-attention, lengths and causal", 1, { S3(2, 4, 4) }, 0,
      &(const mha_arg){ 4, 2, true, 2, { 2, 4 }, true, true } },
    { "k = v, causal", 2, { S3(2, 3, 4), S3(2, 4, 4) }, 0,
      &(const mha_arg){ 4, 2, true, .causal = true } },
    { "no bias, 3 heads, i64 lengths", 3, { S3(2, 4, 6), S3(2, 5, 6), S3(2, 5, 6) }, 0,
      &(const mha_arg){ 6, 3, false, 2, { 5, 3 } } },
    { "self-attention, E 8, i64 lengths 4 2, the default init", 1, { S3(2, 4, 8) }, 0,
      &(const mha_arg){ 8, 2, true, 2, { 4, 2 }, .default_init = true } },
};

/* ------------------------------------------------------------------- rows */

#define ATTN_FWD { 1e-5, "float dot products and softmax over at most 6 keys against double" }

const or_row OR_ROWS_ATTN[] = {
    { .name = "sdpa", .covers = "fx_scaled_dot_product_attention",
      .ncases = OR_COUNT(SDPA_CASES), .cases = SDPA_CASES, .forward = f_sdpa,
      .reference = r_sdpa, .fwd = ATTN_FWD, .grad = OR_GRAD_STD, .xb = OR_XB_GEMM },
    { .name = "multihead_attention",
      .covers = "fx_multihead_attention_create, fx_multihead_attention_forward",
      .ncases = OR_COUNT(MHA_CASES), .cases = MHA_CASES, .layer = l_mha, .forward = f_mha,
      .reference = r_mha, .fwd = ATTN_FWD, .grad = OR_GRAD_STD, .xb = OR_XB_GEMM },
};
const int OR_NROWS_ATTN = OR_COUNT(OR_ROWS_ATTN);
