/*
 * batch_io.h - a batch's data, for the batcher (batcher.h; same prefix, one
 * module in two files): the requests' inputs merged into one tensor per
 * graph input, the outputs copied to the host, and each request's part of
 * them split back out; and the trial batch that says what a model needs.
 *
 * Merging concatenates along dim 0 and, where requests differ along a
 * variable dim (pad_variable_dims), zero-pads to the batch's largest size;
 * splitting gives each request its rows and cuts padded dims back to its own
 * sizes. Each execution instance has one fxb_io; its staging buffers grow to
 * the largest batch until fxb_io_release gives them back. Not thread-safe:
 * an fxb_io is its instance's.
 */
#ifndef FXB_BATCH_IO_H
#define FXB_BATCH_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "serving/batcher.h"

typedef struct {
    int n_in, n_out;
    void **in_buf, **out_buf;        /* staging: merged inputs, outputs on the host */
    size_t *in_cap, *out_cap;
    fx_tensor **tin, **tout;         /* the batch's, in the instance's context */
    int64_t (*bshape)[FX_MAX_DIMS];  /* per input: the batch's shape */
    fxb_output *outs;                /* one request's outputs (fxb_io_split) */
    void **owned;                    /* per output: a request's cut copy, or NULL */
} fxb_io;

/* false when out of memory (then fxb_io_free what there is). */
bool fxb_io_init(fxb_io *io, int n_in, int n_out);
void fxb_io_free(fxb_io *io);
/* Bytes the staging buffers hold, and giving them back. */
uint64_t fxb_io_bytes(const fxb_io *io);
void fxb_io_release(fxb_io *io);

/* Graph input i of the batch whose requests' inputs are xs[0..n) (each in
 * graph input order) as a tensor of ctx, in io->tin[i]; io->bshape[i] gets
 * its shape. NULL when out of memory (the context's error says more). */
fx_tensor *fxb_io_merge(fxb_io *io, fx_ctx *ctx, const fxg_graph *g, const fxb_input *const *xs,
                        int n, int i);

/* Copies output o (io->tout[o]) to the host: 0, or -1 out of memory. */
int fxb_io_fetch(fxb_io *io, int o);

/* Fills io->outs with one request's part of every fetched output: all of
 * it when the request ran alone, else the rows [row, row + samples), each
 * output dim whose mask bit is set (a variable dim; out_var per output) cut
 * back to the request's own size when pad. 0, or RESOURCE_EXHAUSTED. The
 * outputs are valid until fxb_io_unsplit. */
int fxb_io_split(fxb_io *io, bool alone, const fxb_input *x, int64_t samples, int64_t row,
                 const unsigned *out_var, bool pad);
void fxb_io_unsplit(fxb_io *io);

/* The arena capacity of one one-sample forward pass of g in a fresh context
 * on its device (variable dims 1, else 8 or 32 when 1 does not run); 0 when
 * none runs. */
uint64_t fxb_io_one_sample_arena(const fxg_graph *g);

#endif
