/* index.cu - index_select / index_add, gather / scatter_add along an axis
 * (i32 or i64 indices), and the range check every index kernel shares.
 * Forward kernels check all indices first (one pass, one sync) and return
 * the first bad position; backward kernels skip bad indices. Accumulations
 * use atomicAdd (repeated indices). */
#include "common.h"

/* Records n - j for bad j with atomicMax: the largest is the first. */
__global__ void k_first_bad(const void *idx, bool i64, int64_t n, int64_t lo, int64_t hi,
                            unsigned long long *out)
{
    GRID_LOOP(j, n)
    {
        int64_t v = idx_at(idx, i64, j);
        if (v < lo || v > hi)
            atomicMax(out, (unsigned long long)(n - j));
    }
}

int64_t fx__cuda_first_bad(const fx_tensor *idx, int64_t n, int64_t lo, int64_t hi)
{
    int dev = tdev(idx);
    if (n <= 0)
        return -1;
    long long *c = fx__cuda_counter(dev, 1), h;
    if (!c)
        return 0; /* cannot check: report the first index (error recorded) */
    LAUNCH(dev, n, k_first_bad, fx_data(idx), idx->dtype == FX_I64, n, lo, hi,
           (unsigned long long *)c);
    if (!fx__cuda_read_counter(dev, c, &h, 1))
        return 0;
    return h ? n - h : -1;
}

static void axis_split(const fx_tensor *t, int axis, int64_t *O, int64_t *A, int64_t *I)
{
    *O = fx__shape_numel(axis, t->shape);
    *A = t->shape[axis];
    *I = fx__shape_numel(t->ndim - axis - 1, t->shape + axis + 1);
}

/* y (O, n, I) element e = x[o, idx[j], k]; T moves the element's bytes. */
template <typename T>
__global__ void k_index_select(const T *x, const void *idx, bool i64, T *y, int64_t A, int64_t n,
                               int64_t I, int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t k = e % I, j = (e / I) % n, o = e / (I * n);
        y[e] = x[(o * A + idx_at(idx, i64, j)) * I + k];
    }
}

static int64_t cu_index_select(const fx_tensor *x, int axis, const fx_tensor *idx, fx_tensor *y)
{
    int dev = tdev(x);
    int64_t O, A, I, n = numel(idx);
    axis_split(x, axis, &O, &A, &I);
    int64_t bad = fx__cuda_first_bad(idx, n, 0, A - 1);
    if (bad >= 0)
        return bad;
    int64_t total = O * n * I;
    bool i64 = idx->dtype == FX_I64;
    switch (fx_dtype_size(x->dtype)) {
    case 8:
        LAUNCH(dev, total, k_index_select<int64_t>, (const int64_t *)fx_data(x), fx_data(idx), i64,
               (int64_t *)fx_data(y), A, n, I, total);
        break;
    case 4:
        LAUNCH(dev, total, k_index_select<int32_t>, (const int32_t *)fx_data(x), fx_data(idx), i64,
               (int32_t *)fx_data(y), A, n, I, total);
        break;
    default:
        LAUNCH(dev, total, k_index_select<int16_t>, (const int16_t *)fx_data(x), fx_data(idx), i64,
               (int16_t *)fx_data(y), A, n, I, total);
        break;
    }
    return -1;
}

__global__ void k_index_add(const float *dy, const void *idx, bool i64, float *dx, int64_t A,
                            int64_t n, int64_t I, int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t k = e % I, j = (e / I) % n, o = e / (I * n);
        int64_t v = idx_at(idx, i64, j);
        if (v >= 0 && v < A)
            atomicAdd(dx + (o * A + v) * I + k, dy[e]);
    }
}

static void cu_index_add(const fx_tensor *dy, int axis, const fx_tensor *idx, fx_tensor *dx)
{
    int64_t O, A, I, n = numel(idx);
    axis_split(dx, axis, &O, &A, &I);
    int64_t total = O * n * I;
    LAUNCH(tdev(dx), total, k_index_add, F(dy), fx_data(idx), idx->dtype == FX_I64, F(dx), A, n,
           I, total);
}

/* Element e of idx pairs with x at e's coordinates but idx[e] along axis.
 * d: shape = idx's shape, st[0] = x's contiguous strides with the axis
 * stride zeroed. */
__global__ void k_gather(float *x, const void *idx, bool i64, float *y, Dims d, int64_t xa,
                         int64_t A, int64_t n, bool scatter)
{
    GRID_LOOP(e, n)
    {
        int64_t v = idx_at(idx, i64, e);
        if (v < 0 || v >= A)
            continue;
        int64_t p = dims_off(d, 0, e) + v * xa;
        if (scatter)
            atomicAdd(x + p, y[e]);
        else
            y[e] = x[p];
    }
}

static void gather_walk(const fx_tensor *x, int axis, const fx_tensor *idx, const fx_tensor *y,
                        bool scatter)
{
    int64_t xs[FX_MAX_DIMS], n = numel(idx);
    fx__contiguous_strides(x->ndim, x->shape, xs);
    Dims d = dims_of(idx->ndim, idx->shape);
    for (int a = 0; a < idx->ndim; a++)
        d.st[0][a] = a == axis ? 0 : xs[a];
    LAUNCH(tdev(idx), n, k_gather, F(x), fx_data(idx), idx->dtype == FX_I64, F(y), d, xs[axis],
           x->shape[axis], n, scatter);
}

static int64_t cu_gather(const fx_tensor *x, int axis, const fx_tensor *idx, fx_tensor *y)
{
    int64_t bad = fx__cuda_first_bad(idx, numel(idx), 0, x->shape[axis] - 1);
    if (bad >= 0)
        return bad;
    gather_walk(x, axis, idx, y, false);
    return -1;
}

static void cu_scatter_add(const fx_tensor *dy, int axis, const fx_tensor *idx, fx_tensor *dx)
{
    gather_walk(dx, axis, idx, dy, true);
}

const fx_index_kernels fx__cuda_index = {
    .index_select = cu_index_select,
    .index_add = cu_index_add,
    .gather = cu_gather,
    .scatter_add = cu_scatter_add,
};
