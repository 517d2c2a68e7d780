/* init.c - parameter initializers. Values are drawn on the host from the
 * caller's generator (so a seed gives the same parameters on every device)
 * and copied into the tensor in one transfer. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

/* Fans as PyTorch computes them: for [out,in,k...], fan_in = in * prod(k)
 * and fan_out = out * prod(k). A 1-D tensor [n] has fan_in = fan_out = n
 * and a scalar 1 (PyTorch refuses those; Keras does the same as here). */
static void compute_fans(const fx_tensor *t, double *fan_in, double *fan_out)
{
    if (t->ndim == 0) {
        *fan_in = *fan_out = 1.0;
        return;
    }
    if (t->ndim == 1) {
        *fan_in = *fan_out = (double)t->shape[0];
        return;
    }
    double field = 1.0;
    for (int d = 2; d < t->ndim; d++)
        field *= (double)t->shape[d];
    *fan_in = (double)t->shape[1] * field;
    *fan_out = (double)t->shape[0] * field;
}

/* v[i] = lo + (hi - lo) * U[0,1) for n values. */
static void fill_uniform(float *v, int64_t n, double lo, double hi, fx_rng *rng)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(lo + (hi - lo) * fx_rng_uniform(rng));
}

/* v[i] = mean + std * N(0,1) for n values. */
static void fill_normal(float *v, int64_t n, double mean, double std, fx_rng *rng)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(mean + std * fx_rng_normal(rng));
}

/*
 * A (semi-)orthogonal rows x cols matrix times gain into v (row-major): the
 * tensor is seen as [shape[0], numel / shape[0]], like PyTorch. k = min(rows,
 * cols) Gaussian vectors of length m = max(rows, cols) are orthonormalised by
 * modified Gram-Schmidt in double, twice ("twice is enough") so rounding
 * leaves no drift from orthogonality. Gram-Schmidt of a Gaussian matrix is
 * its QR with a positive diagonal in R, so the result is Haar-distributed,
 * as PyTorch's sign-corrected QR is. The vectors become the rows when
 * rows < cols (W W^T = I) and the columns otherwise (W^T W = I).
 */
static fx_status fill_orthogonal(float *v, int64_t rows, int64_t cols, double gain, fx_rng *rng)
{
    bool by_rows = rows < cols;
    int64_t k = by_rows ? rows : cols, m = by_rows ? cols : rows;
    double *q = malloc((size_t)(k * m) * sizeof *q);
    if (!q)
        return FX_ERR_NOMEM;
    for (int64_t i = 0; i < k; i++) {
        double *qi = q + i * m;
        for (int attempt = 0;; attempt++) {
            for (int64_t j = 0; j < m; j++)
                qi[j] = fx_rng_normal(rng);
            for (int pass = 0; pass < 2; pass++)
                for (int64_t p = 0; p < i; p++) {
                    const double *qp = q + p * m;
                    double dot = 0.0;
                    for (int64_t j = 0; j < m; j++)
                        dot += qp[j] * qi[j];
                    for (int64_t j = 0; j < m; j++)
                        qi[j] -= dot * qp[j];
                }
            double norm = 0.0;
            for (int64_t j = 0; j < m; j++)
                norm += qi[j] * qi[j];
            norm = sqrt(norm);
            if (norm > 1e-6) { /* a degenerate draw has probability zero; redraw */
                for (int64_t j = 0; j < m; j++)
                    qi[j] /= norm;
                break;
            }
            if (attempt == 16) {
                free(q);
                return FX_ERR_VALUE;
            }
        }
    }
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < m; j++) {
            float x = (float)(gain * q[i * m + j]);
            if (by_rows)
                v[i * cols + j] = x;
            else
                v[j * cols + i] = x;
        }
    free(q);
    return FX_OK;
}

fx_status fx_init_tensor(fx_tensor *t, fx_init_kind kind, double a, double b, fx_rng *rng)
{
    if (!t)
        return FX_ERR_ARG;
    if (t->dtype != FX_F32)
        return FX_ERR_DTYPE;
    if ((unsigned)kind >= FX_INIT_COUNT)
        return FX_ERR_ARG;
    if (kind == FX_INIT_ORTHOGONAL && t->ndim < 2)
        return FX_ERR_SHAPE;
    if (kind == FX_INIT_ZEROS || kind == FX_INIT_CONSTANT) {
        double c = kind == FX_INIT_ZEROS ? 0.0 : a;
        if (fx_tensor_is_contiguous(t))
            return fx_tensor_fill(t, c);
    } else if (!rng) {
        return FX_ERR_ARG;
    }
    int64_t n = fx_tensor_numel(t);
    if (n == 0)
        return FX_OK;
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return FX_ERR_NOMEM;
    double fan_in, fan_out;
    compute_fans(t, &fan_in, &fan_out);
    fx_status s = FX_OK;
    switch (kind) {
    case FX_INIT_ZEROS:
    case FX_INIT_CONSTANT: /* a strided view: through the host */
        for (int64_t i = 0; i < n; i++)
            v[i] = kind == FX_INIT_ZEROS ? 0.0f : (float)a;
        break;
    case FX_INIT_UNIFORM:
        fill_uniform(v, n, a, b, rng);
        break;
    case FX_INIT_NORMAL:
        fill_normal(v, n, a, b, rng);
        break;
    case FX_INIT_GLOROT_UNIFORM: {
        double bound = sqrt(6.0 / (fan_in + fan_out));
        fill_uniform(v, n, -bound, bound, rng);
        break;
    }
    case FX_INIT_GLOROT_NORMAL:
        fill_normal(v, n, 0.0, sqrt(2.0 / (fan_in + fan_out)), rng);
        break;
    case FX_INIT_HE_UNIFORM: { /* gain sqrt(2) times the bound sqrt(3 / fan_in) */
        double bound = sqrt(6.0 / fan_in);
        fill_uniform(v, n, -bound, bound, rng);
        break;
    }
    case FX_INIT_HE_NORMAL:
        fill_normal(v, n, 0.0, sqrt(2.0 / fan_in), rng);
        break;
    case FX_INIT_ORTHOGONAL:
        s = fill_orthogonal(v, t->shape[0], n / t->shape[0], a == 0.0 ? 1.0 : a, rng);
        break;
    case FX_INIT_COUNT: /* refused above */
        break;
    }
    if (s == FX_OK)
        s = fx_tensor_copy_from_host(t, v, (size_t)n * sizeof *v);
    free(v);
    return s;
}
