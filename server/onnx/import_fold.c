/*
 * import_fold.c - operators on constants computed at import time: the
 * shape arithmetic PyTorch's exporter emits around Reshape and Flatten
 * (Shape -> Gather -> Unsqueeze -> Concat), Constant nodes, and weight
 * preparation (Transpose, Cast of initializers). Dims that are not static
 * travel as symbols (FXON_SYM in onnx_internal.h) until a Reshape reads
 * them. Converters of import_ops.c call these when all inputs are constant.
 */
#include <math.h>
#include <string.h>

#include "onnx/import_frame.h"
#include "onnx/import_ops.h"
#include "base/status.h"

/* Index of the element of c (rank c->ndim, broadcast to out rank nd) at
 * the output's multi-index idx. */
static int64_t bcast_index(const fxon_const *c, int nd, const int64_t *idx)
{
    int64_t k = 0;
    for (int d = 0; d < c->ndim; d++) {
        int od = d + nd - c->ndim;
        k = k * c->shape[d] + (c->shape[d] == 1 ? 0 : idx[od]);
    }
    return k;
}

int fxon__fold_binary(fxon_ctx *cx, const Onnx__NodeProto *n, char op)
{
    const fxon_const *a, *b;
    int rc;
    if ((rc = fxon_need_const(cx, n, 0, &a)) || (rc = fxon_need_const(cx, n, 1, &b)))
        return rc;
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t shape[FXON_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        int64_t x = da >= 0 ? a->shape[da] : 1, y = db >= 0 ? b->shape[db] : 1;
        if (x != y && x != 1 && y != 1)
            return fxon_fail(cx, "constant operands of shapes that do not broadcast");
        shape[d] = x == 1 ? y : x;
    }
    bool fl = a->elem == FXON_FLOAT || b->elem == FXON_FLOAT;
    fxon_const *c = fxon_const_new(cx, fl ? FXON_FLOAT : FXON_INT64, nd, shape);
    if (!c)
        return FXS_INVALID_ARGUMENT;
    int64_t idx[FXON_MAX_DIMS] = {0};
    for (int64_t k = 0; k < c->numel; k++) {
        int64_t ka = bcast_index(a, nd, idx), kb = bcast_index(b, nd, idx);
        if (fl) {
            double x = fxon_const_float(a, ka), y = fxon_const_float(b, kb);
            c->f[k] = (float)(op == '+' ? x + y : op == '-' ? x - y : op == '*' ? x * y : x / y);
        } else {
            int64_t x = a->i[ka], y = b->i[kb], r;
            if (fxon_is_sym(x) || fxon_is_sym(y))
                r = (op == '*' && (x == 1 || y == 1)) ? (x == 1 ? y : x)
                    : (op == '/' && y == 1)           ? x
                                                      : FXON_SYM_ANY;
            else if (op == '/' && y == 0)
                return fxon_fail(cx, "integer division by zero in constant arithmetic");
            else if (__builtin_add_overflow(x, op == '-' ? -y : y, &r) && (op == '+' || op == '-'))
                return fxon_fail(cx, "integer overflow in constant arithmetic");
            else if (op == '*' && __builtin_mul_overflow(x, y, &r))
                return fxon_fail(cx, "integer overflow in constant arithmetic");
            else if (op == '/')
                r = x / y - ((x % y != 0) && ((x < 0) != (y < 0))); /* floor, as numpy */
            c->i[k] = r;
        }
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < shape[d])
                break;
            idx[d] = 0;
        }
    }
    return fxon_define_const(cx, n->output[0], c);
}

/* A copy of c with another shape (same element count). */
static fxon_const *reshaped(fxon_ctx *cx, const fxon_const *c, int nd, const int64_t *shape)
{
    fxon_const *r = fxon_const_new(cx, c->elem, nd, shape);
    if (!r)
        return NULL;
    if (r->numel != c->numel) {
        fxon_fail(cx, "a constant of %lld elements cannot take a shape of %lld",
                  (long long)c->numel, (long long)r->numel);
        return NULL;
    }
    if (c->elem == FXON_FLOAT)
        memcpy(r->f, c->f, sizeof(float) * (size_t)c->numel);
    else
        memcpy(r->i, c->i, sizeof(int64_t) * (size_t)c->numel);
    return r;
}

int fxon__fold_reshape(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x, int nd,
                       const int64_t *want)
{
    int64_t shape[FXON_MAX_DIMS], known = 1;
    int minus = -1;
    for (int d = 0; d < nd; d++) {
        shape[d] = want[d] == 0 && d < x->ndim ? x->shape[d] : want[d];
        if (shape[d] == -1 && minus < 0)
            minus = d;
        else if (shape[d] < 0)
            return fxon_fail(cx, "shape entry %d (%lld) is not valid for a constant", d,
                             (long long)want[d]);
        else
            known *= shape[d] ? shape[d] : 1;
    }
    if (minus >= 0)
        shape[minus] = known ? x->numel / known : 0;
    fxon_const *r = reshaped(cx, x, nd, shape);
    return r ? fxon_define_const(cx, n->output[0], r) : FXS_INVALID_ARGUMENT;
}

int fxon__fold_unsqueeze(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x,
                         const int64_t *axes, size_t nax, bool squeeze)
{
    int64_t shape[FXON_MAX_DIMS];
    int nd = 0;
    if (squeeze) {
        bool drop[FXON_MAX_DIMS] = {false};
        for (size_t k = 0; k < nax; k++) {
            int ax, rc = fxon_axis(cx, "axes", axes[k], x->ndim, &ax);
            if (rc)
                return rc;
            if (x->shape[ax] != 1)
                return fxon_fail(cx, "axis %d has size %lld, not 1", ax, (long long)x->shape[ax]);
            drop[ax] = true;
        }
        for (int d = 0; d < x->ndim; d++)
            if (!(nax ? drop[d] : x->shape[d] == 1))
                shape[nd++] = x->shape[d];
    } else {
        int out_nd = x->ndim + (int)nax;
        if (out_nd > FXON_MAX_DIMS)
            return fxon_fail(cx, "the result would have rank %d (at most %d)", out_nd,
                             FXON_MAX_DIMS);
        bool ins[FXON_MAX_DIMS] = {false};
        for (size_t k = 0; k < nax; k++) {
            int ax, rc = fxon_axis(cx, "axes", axes[k], out_nd, &ax);
            if (rc)
                return rc;
            if (ins[ax])
                return fxon_fail(cx, "axis %d is listed twice", ax);
            ins[ax] = true;
        }
        for (int d = 0, s = 0; d < out_nd; d++)
            shape[nd++] = ins[d] ? 1 : x->shape[s++];
    }
    fxon_const *r = reshaped(cx, x, nd, shape);
    return r ? fxon_define_const(cx, n->output[0], r) : FXS_INVALID_ARGUMENT;
}

int fxon__fold_concat(fxon_ctx *cx, const Onnx__NodeProto *n, int64_t axis)
{
    int nin = fxon_nin(n), ax, rc;
    const fxon_const *first;
    if ((rc = fxon_need_const(cx, n, 0, &first)) ||
        (rc = fxon_axis(cx, "axis", axis, first->ndim, &ax)))
        return rc;
    int64_t shape[FXON_MAX_DIMS];
    memcpy(shape, first->shape, sizeof shape);
    shape[ax] = 0;
    bool fl = false;
    for (int i = 0; i < nin; i++) {
        const fxon_const *c;
        if ((rc = fxon_need_const(cx, n, i, &c)))
            return rc;
        if (c->ndim != first->ndim)
            return fxon_fail(cx, "inputs of ranks %d and %d", first->ndim, c->ndim);
        for (int d = 0; d < c->ndim; d++)
            if (d != ax && c->shape[d] != first->shape[d])
                return fxon_fail(cx, "input %d differs in size at dim %d", i, d);
        shape[ax] += c->shape[ax];
        fl |= c->elem == FXON_FLOAT;
    }
    fxon_const *r = fxon_const_new(cx, fl ? FXON_FLOAT : FXON_INT64, first->ndim, shape);
    if (!r)
        return FXS_INVALID_ARGUMENT;
    /* outer x (block of this input) x inner, input after input. */
    int64_t outer = 1, inner = 1, off = 0;
    for (int d = 0; d < ax; d++)
        outer *= shape[d];
    for (int d = ax + 1; d < first->ndim; d++)
        inner *= shape[d];
    for (int64_t o = 0; o < outer; o++)
        for (int i = 0; i < nin; i++) {
            const fxon_const *c = fxon_value_of(cx, fxon_in(n, i))->c;
            int64_t blk = c->shape[ax] * inner;
            for (int64_t k = 0; k < blk; k++, off++) {
                if (fl)
                    r->f[off] = (float)fxon_const_float(c, o * blk + k);
                else
                    r->i[off] = c->i[o * blk + k];
            }
        }
    return fxon_define_const(cx, n->output[0], r);
}

int fxon__fold_gather(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x,
                      const fxon_const *idx, int axis)
{
    /* out = x[:, idx, :] with idx's shape in place of the axis. */
    int nd = x->ndim - 1 + idx->ndim;
    if (nd > FXON_MAX_DIMS)
        return fxon_fail(cx, "the result would have rank %d", nd);
    int64_t shape[FXON_MAX_DIMS], outer = 1, inner = 1;
    int k = 0;
    for (int d = 0; d < axis; d++)
        outer *= (shape[k++] = x->shape[d]);
    for (int d = 0; d < idx->ndim; d++)
        shape[k++] = idx->shape[d];
    for (int d = axis + 1; d < x->ndim; d++)
        inner *= (shape[k++] = x->shape[d]);
    fxon_const *r = fxon_const_new(cx, x->elem, nd, shape);
    if (!r)
        return FXS_INVALID_ARGUMENT;
    int64_t off = 0, dim = x->shape[axis];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < idx->numel; j++) {
            int64_t i = fxon_const_int(idx, j);
            if (i < -dim || i >= dim)
                return fxon_fail(cx, "index %lld is out of range for a dim of %lld", (long long)i,
                                 (long long)dim);
            if (i < 0)
                i += dim;
            for (int64_t q = 0; q < inner; q++, off++) {
                int64_t src = (o * dim + i) * inner + q;
                if (x->elem == FXON_FLOAT)
                    r->f[off] = x->f[src];
                else
                    r->i[off] = x->i[src];
            }
        }
    return fxon_define_const(cx, n->output[0], r);
}

int fxon__fold_slice(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x, int axis,
                     int64_t start, int64_t end, int64_t step)
{
    int64_t dim = x->shape[axis];
    int64_t len = step > 0 ? (end > start ? (end - start + step - 1) / step : 0)
                           : (start > end ? (start - end - step - 1) / -step : 0);
    int64_t shape[FXON_MAX_DIMS], outer = 1, inner = 1;
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = len;
    for (int d = 0; d < axis; d++)
        outer *= x->shape[d];
    for (int d = axis + 1; d < x->ndim; d++)
        inner *= x->shape[d];
    fxon_const *r = fxon_const_new(cx, x->elem, x->ndim, shape);
    if (!r)
        return FXS_INVALID_ARGUMENT;
    int64_t off = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < len; j++)
            for (int64_t q = 0; q < inner; q++, off++) {
                int64_t src = (o * dim + start + j * step) * inner + q;
                if (x->elem == FXON_FLOAT)
                    r->f[off] = x->f[src];
                else
                    r->i[off] = x->i[src];
            }
    return fxon_define_const(cx, n->output[0], r);
}

int fxon__fold_transpose(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x,
                         const int *perm)
{
    int64_t shape[FXON_MAX_DIMS], stride[FXON_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[perm[d]];
    int64_t s = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        stride[d] = s;
        s *= x->shape[d];
    }
    fxon_const *r = fxon_const_new(cx, x->elem, x->ndim, shape);
    if (!r)
        return FXS_INVALID_ARGUMENT;
    int64_t idx[FXON_MAX_DIMS] = {0};
    for (int64_t k = 0; k < r->numel; k++) {
        int64_t src = 0;
        for (int d = 0; d < x->ndim; d++)
            src += idx[d] * stride[perm[d]];
        if (x->elem == FXON_FLOAT)
            r->f[k] = x->f[src];
        else
            r->i[k] = x->i[src];
        for (int d = x->ndim - 1; d >= 0; d--) {
            if (++idx[d] < shape[d])
                break;
            idx[d] = 0;
        }
    }
    return fxon_define_const(cx, n->output[0], r);
}

int fxon__fold_cast(fxon_ctx *cx, const Onnx__NodeProto *n, const fxon_const *x, int to)
{
    bool fl = to == FXON_FLOAT || to == FXON_DOUBLE || to == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
    fxon_const *r = fxon_const_new(cx, fl ? FXON_FLOAT : FXON_INT64, x->ndim, x->shape);
    if (!r)
        return FXS_INVALID_ARGUMENT;
    for (int64_t k = 0; k < x->numel; k++) {
        if (fl)
            r->f[k] = (float)fxon_const_float(x, k);
        else if (x->elem == FXON_INT64)
            r->i[k] = to == FXON_BOOL && !fxon_is_sym(x->i[k]) ? x->i[k] != 0 : x->i[k];
        else
            r->i[k] = to == FXON_BOOL ? x->f[k] != 0 : fxon_const_int(x, k);
    }
    return fxon_define_const(cx, n->output[0], r);
}
