/* batch_io.c - see batch_io.h. */
#include "serving/batch_io.h"

#include <stdlib.h>
#include <string.h>

#include "base/status.h"

bool fxb_io_init(fxb_io *io, int n_in, int n_out)
{
    memset(io, 0, sizeof *io);
    io->n_in = n_in;
    io->n_out = n_out;
    size_t ni = (size_t)n_in + 1, no = (size_t)n_out + 1;
    io->in_buf = calloc(ni, sizeof *io->in_buf);
    io->in_cap = calloc(ni, sizeof *io->in_cap);
    io->out_buf = calloc(no, sizeof *io->out_buf);
    io->out_cap = calloc(no, sizeof *io->out_cap);
    io->tin = calloc(ni, sizeof *io->tin);
    io->tout = calloc(no, sizeof *io->tout);
    io->bshape = calloc(ni, sizeof *io->bshape);
    io->outs = calloc(no, sizeof *io->outs);
    io->owned = calloc(no, sizeof *io->owned);
    return io->in_buf && io->in_cap && io->out_buf && io->out_cap && io->tin && io->tout &&
           io->bshape && io->outs && io->owned;
}

void fxb_io_release(fxb_io *io)
{
    for (int i = 0; io->in_buf && i < io->n_in; i++) {
        free(io->in_buf[i]);
        io->in_buf[i] = NULL;
        io->in_cap[i] = 0;
    }
    for (int o = 0; io->out_buf && o < io->n_out; o++) {
        free(io->out_buf[o]);
        io->out_buf[o] = NULL;
        io->out_cap[o] = 0;
    }
}

void fxb_io_free(fxb_io *io)
{
    fxb_io_release(io);
    free(io->in_buf);
    free(io->in_cap);
    free(io->out_buf);
    free(io->out_cap);
    free(io->tin);
    free(io->tout);
    free(io->bshape);
    free(io->outs);
    free(io->owned);
}

uint64_t fxb_io_bytes(const fxb_io *io)
{
    uint64_t n = 0;
    for (int i = 0; i < io->n_in; i++)
        n += io->in_cap[i];
    for (int o = 0; o < io->n_out; o++)
        n += io->out_cap[o];
    return n;
}

/* Staging buffer i of (buf, cap), at least bytes long; NULL when out of
 * memory (the old one stays). */
static void *grow(void **buf, size_t *cap, int i, size_t bytes)
{
    if (cap[i] < bytes) {
        void *p = realloc(buf[i], bytes);
        if (!p)
            return NULL;
        buf[i] = p;
        cap[i] = bytes;
    }
    return buf[i];
}

static size_t numel(const int64_t *shape, int ndim)
{
    size_t n = 1;
    for (int k = 0; k < ndim; k++)
        n *= (size_t)shape[k];
    return n;
}

/* Copies a block of shape s between itself (small) and the rows
 * [row, row + s[0]) of a tensor of shape S (big), S[k] >= s[k]: the padding
 * of big is left alone. */
static void block_copy(char *big, const int64_t *S, char *small, const int64_t *s, int ndim,
                       size_t esize, int64_t row, bool to_big)
{
    if (numel(s, ndim) == 0)
        return;
    if (ndim <= 1) {
        size_t off = ndim ? (size_t)row * esize : 0, len = ndim ? (size_t)s[0] * esize : esize;
        if (to_big)
            memcpy(big + off, small, len);
        else
            memcpy(small, big + off, len);
        return;
    }
    size_t run = esize * (size_t)s[ndim - 1];
    int64_t outer = 1;
    for (int k = 0; k < ndim - 1; k++)
        outer *= s[k];
    int64_t idx[FX_MAX_DIMS] = { 0 };
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = 0;
        for (int k = 0; k < ndim - 1; k++)
            off = off * S[k] + idx[k] + (k == 0 ? row : 0);
        off *= S[ndim - 1];
        if (to_big)
            memcpy(big + (size_t)off * esize, small, run);
        else
            memcpy(small, big + (size_t)off * esize, run);
        small += run;
        for (int k = ndim - 2; k >= 0; k--) {
            if (++idx[k] < s[k])
                break;
            idx[k] = 0;
        }
    }
}

fx_tensor *fxb_io_merge(fxb_io *io, fx_ctx *ctx, const fxg_graph *g, const fxb_input *const *xs,
                        int n, int i)
{
    fx_dtype dt = fxg_input(g, i)->dtype;
    const fxb_input *x0 = &xs[0][i];
    int64_t *shape = io->bshape[i];
    memcpy(shape, x0->shape, sizeof io->bshape[i]);
    if (n == 1) /* the request's own memory: no staging */
        return io->tin[i] = fx_tensor_from_host(ctx, dt, x0->ndim, x0->shape, x0->data);
    shape[0] = 0;
    bool padded = false;
    for (int j = 0; j < n; j++) {
        const fxb_input *x = &xs[j][i];
        shape[0] += x->shape[0];
        for (int k = 1; k < x->ndim; k++) {
            padded |= x->shape[k] != shape[k];
            if (x->shape[k] > shape[k])
                shape[k] = x->shape[k];
        }
    }
    size_t esize = fx_dtype_size(dt), bytes = numel(shape, x0->ndim) * esize;
    char *buf = grow(io->in_buf, io->in_cap, i, bytes ? bytes : 1);
    if (!buf)
        return io->tin[i] = NULL;
    if (padded)
        memset(buf, 0, bytes);
    int64_t row = 0;
    for (int j = 0; j < n; j++) {
        const fxb_input *x = &xs[j][i];
        block_copy(buf, shape, (char *)x->data, x->shape, x->ndim, esize, row, true);
        row += x->shape[0];
    }
    return io->tin[i] = fx_tensor_from_host(ctx, dt, x0->ndim, shape, buf);
}

int fxb_io_fetch(fxb_io *io, int o)
{
    const fx_tensor *t = io->tout[o];
    size_t bytes = (size_t)fx_tensor_numel(t) * fx_dtype_size(t->dtype);
    void *buf = grow(io->out_buf, io->out_cap, o, bytes ? bytes : 1);
    return buf && fx_tensor_to_host(t, buf, bytes) == FX_OK ? 0 : -1;
}

/* The size the request (inputs x) had alone along an output dim whose
 * batch size is sz: a padded size is cut back to the request's size along
 * the input dim it came from. */
static int64_t own_size(const fxb_io *io, const fxb_input *x, int64_t sz)
{
    for (int i = 0; i < io->n_in; i++)
        for (int k = 1; k < x[i].ndim; k++)
            if (io->bshape[i][k] == sz && x[i].shape[k] != sz)
                return x[i].shape[k];
    return sz;
}

int fxb_io_split(fxb_io *io, bool alone, const fxb_input *x, int64_t samples, int64_t row,
                 const unsigned *out_var, bool pad)
{
    for (int o = 0; o < io->n_out; o++) {
        const fx_tensor *t = io->tout[o];
        fxb_output *ou = &io->outs[o];
        size_t esize = fx_dtype_size(t->dtype);
        io->owned[o] = NULL;
        ou->dtype = t->dtype;
        ou->ndim = t->ndim;
        memcpy(ou->shape, t->shape, sizeof ou->shape);
        if (alone) {
            ou->data = io->out_buf[o];
            ou->bytes = numel(t->shape, t->ndim) * esize;
            continue;
        }
        ou->shape[0] = samples;
        bool cut = false;
        for (int k = 1; k < t->ndim; k++) {
            ou->shape[k] = pad && out_var[o] & (1u << k) ? own_size(io, x, t->shape[k])
                                                         : t->shape[k];
            cut |= ou->shape[k] != t->shape[k];
        }
        ou->bytes = numel(ou->shape, ou->ndim) * esize;
        if (!cut) { /* its rows of the batch's output, in place */
            size_t rowbytes = numel(t->shape + 1, t->ndim - 1) * esize;
            ou->data = (char *)io->out_buf[o] + (size_t)row * rowbytes;
            continue;
        }
        if (!(io->owned[o] = malloc(ou->bytes ? ou->bytes : 1))) {
            fxb_io_unsplit(io);
            return FXS_RESOURCE_EXHAUSTED;
        }
        block_copy(io->out_buf[o], t->shape, io->owned[o], ou->shape, ou->ndim, esize, row,
                   false);
        ou->data = io->owned[o];
    }
    return 0;
}

void fxb_io_unsplit(fxb_io *io)
{
    for (int o = 0; o < io->n_out; o++) {
        free(io->owned[o]);
        io->owned[o] = NULL;
    }
}

/* Integer inputs are 0, except 1-D ones (per-sample lengths: 1 is within
 * every probe size). */
uint64_t fxb_io_one_sample_arena(const fxg_graph *g)
{
    int n_in = fxg_num_inputs(g), n_out = fxg_num_outputs(g);
    fx_tensor **t = calloc((size_t)(n_in + n_out) + 1, sizeof *t);
    uint64_t bytes = 0;
    static const int64_t sizes[] = { 1, 8, 32 };
    for (int a = 0; t && !bytes && a < 3; a++) {
        /* a fresh context per try: its capacity is the try's high-water mark */
        fx_ctx *ctx = fx_ctx_create(fxg_device(g));
        if (!ctx)
            break;
        fx_ctx_set_grad(ctx, false);
        fx_ctx_set_training(ctx, false);
        for (int i = 0; i < n_in; i++) {
            const fxg_tensor_info *x = fxg_input(g, i);
            int64_t shape[FX_MAX_DIMS];
            for (int k = 0; k < x->ndim; k++)
                shape[k] = x->shape[k] >= 0 ? x->shape[k] : k == 0 ? 1 : sizes[a];
            double v = x->dtype == FX_F32 ? 0.5 : x->ndim == 1 ? 1 : 0;
            t[i] = fx_full(ctx, x->dtype, x->ndim, shape, v);
        }
        char err[256];
        if (fxg_forward(g, ctx, t, t + n_in, err, sizeof err) == 0)
            bytes = fx_ctx_arena_capacity(ctx);
        fx_ctx_free(ctx);
    }
    free(t);
    return bytes;
}
