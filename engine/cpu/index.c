/* index.c - index_select / index_add and gather / scatter_add along an axis,
 * with i32 or i64 indices. Every tensor is contiguous (the ops make them so).
 * Forward kernels check every index before touching memory and return the
 * position of the first bad one (or -1); backward kernels see indices the
 * forward already checked, and skip bad ones rather than write out of
 * bounds. */
#include "cpu.h"

/* Position in idx (contiguous, n elements) of the first index outside
 * [0, size), or -1 when all are valid. */
static int64_t first_bad_index(const fx_tensor *idx, int64_t n, int64_t size)
{
    for (int64_t j = 0; j < n; j++) {
        int64_t v = fx_index_at(idx, j);
        if (v < 0 || v >= size)
            return j;
    }
    return -1;
}

/* y = x.index_select(axis, idx): with x (O, A, I) and idx [n], y (O, n, I)
 * gets y[o, j, :] = x[o, idx[j], :]. Rows are copied with memcpy, so any
 * dtype works. */
int64_t cpu_index_select(const fx_tensor *x, int axis, const fx_tensor *idx, fx_tensor *y)
{
    int64_t O, A, I, n = fx_tensor_numel(idx);
    fx_axis_split(x, axis, &O, &A, &I);
    int64_t bad = first_bad_index(idx, n, A);
    if (bad >= 0)
        return bad;
    size_t es = fx_dtype_size(x->dtype), row = (size_t)I * es;
    const char *X = fx_data(x);
    char *Y = fx_data(y);
    int64_t rows = O * n, work = rows * I;
    FX_PFOR(work, r, rows, int64_t o = r / n, j = r % n;
            memcpy(Y + (size_t)r * row, X + (size_t)(o * A + fx_index_at(idx, j)) * row, row););
    return -1;
}

/* dx[o, idx[j], :] += dy[o, j, :] (the backward of index_select; repeated
 * indices accumulate). Tasks own an o and a block of columns, so no two
 * tasks write one element. */
#define INDEX_BLOCK 128
void cpu_index_add(const fx_tensor *dy, int axis, const fx_tensor *idx, fx_tensor *dx)
{
    int64_t O, A, I, n = fx_tensor_numel(idx);
    fx_axis_split(dx, axis, &O, &A, &I);
    const float *DY = fx_f32(dy);
    float *DX = fx_f32(dx);
    int64_t nb = (I + INDEX_BLOCK - 1) / INDEX_BLOCK, ntasks = O * nb, work = O * n * I;
    FX_PFOR(
        work, t, ntasks, int64_t o = t / nb, k0 = (t % nb) * INDEX_BLOCK;
        int64_t w = I - k0 < INDEX_BLOCK ? I - k0 : INDEX_BLOCK; for (int64_t j = 0; j < n; j++) {
            int64_t v = fx_index_at(idx, j);
            if (v < 0 || v >= A)
                continue;
            const float *s = DY + (o * n + j) * I + k0;
            float *d = DX + (o * A + v) * I + k0;
            for (int64_t k = 0; k < w; k++)
                d[k] += s[k];
        });
}

/*
 * The walk shared by gather and scatter_add. idx has x's rank; element e of
 * idx (and of y, which has idx's shape) pairs with the element of x at e's
 * coordinates, except along axis where the coordinate is idx[e]:
 *     gather:      y[e] = x[pos(e)]
 *     scatter_add: x[pos(e)] += y[e]
 * Tasks own one position of the dims before axis; their targets in x are
 * disjoint, so scatter_add runs in parallel without races (along axis 0 it
 * runs on one thread).
 */
static void gather_walk(float *X, const fx_tensor *x, int axis, const fx_tensor *idx, float *Y,
                        bool scatter)
{
    int nd = idx->ndim, ni = nd - axis;
    int64_t outer = fx__shape_numel(axis, idx->shape);
    int64_t inner = fx__shape_numel(ni, idx->shape + axis);
    int64_t is[FX_MAX_DIMS], xs[FX_MAX_DIMS];
    fx__contiguous_strides(nd, idx->shape, is);
    fx__contiguous_strides(nd, x->shape, xs);
    int64_t xa = xs[axis], A = x->shape[axis];
    /* Strides of the walked dims [axis, nd): idx's own, and x's with the
     * axis dim zeroed (the index supplies that coordinate). */
    int64_t wx[FX_MAX_DIMS];
    for (int d = 0; d < ni; d++)
        wx[d] = d == 0 ? 0 : xs[axis + d];
    int64_t work = outer * inner;
    FX_PFOR(
        work, o, outer, int64_t xbase = 0, rem = o; for (int d = axis - 1; d >= 0; d--) {
            xbase += (rem % idx->shape[d]) * xs[d];
            rem /= idx->shape[d];
        } int64_t ebase = o * inner;
        fx_iter it; fx_iter_init(&it, ni, idx->shape + axis, 2, (const int64_t *[]){is + axis, wx});
        if (it.done) continue; do {
            for (int64_t i = 0; i < it.inner; i++) {
                int64_t e = ebase + it.off[0] + i * it.step[0];
                int64_t v = fx_index_at(idx, e);
                if (v < 0 || v >= A)
                    continue;
                int64_t p = xbase + it.off[1] + i * it.step[1] + v * xa;
                if (scatter)
                    X[p] += Y[e];
                else
                    Y[e] = X[p];
            }
        } while (fx_iter_next(&it)););
}

/* y = torch.gather(x, axis, idx); y has idx's shape. */
int64_t cpu_gather(const fx_tensor *x, int axis, const fx_tensor *idx, fx_tensor *y)
{
    int64_t bad = first_bad_index(idx, fx_tensor_numel(idx), x->shape[axis]);
    if (bad >= 0)
        return bad;
    gather_walk(fx_f32(x), x, axis, idx, fx_f32(y), false);
    return -1;
}

/* dx.scatter_add_(axis, idx, dy): the backward of gather. */
void cpu_scatter_add(const fx_tensor *dy, int axis, const fx_tensor *idx, fx_tensor *dx)
{
    gather_walk(fx_f32(dx), dx, axis, idx, fx_f32(dy), true);
}
