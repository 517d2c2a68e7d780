/* embed.cu - embedding lookups and their gradient (kern_embed.h). The
 * backward adds rows with atomics, so repeated indices accumulate. */
#include "common.h"

__global__ void k_embed(const float *w, const void *idx, bool i64, float *y, int64_t dim,
                        int64_t total)
{
    GRID_LOOP(e, total) y[e] = w[idx_at(idx, i64, e / dim) * dim + e % dim];
}

static int64_t cu_embedding(const fx_tensor *weight, const fx_tensor *idx, fx_tensor *y)
{
    int64_t num = weight->shape[0], dim = weight->shape[1], n = numel(idx);
    int64_t bad = fx__cuda_first_bad(idx, n, 0, num - 1);
    if (bad >= 0)
        return bad;
    LAUNCH(tdev(y), n * dim, k_embed, F(weight), fx_data(idx), idx->dtype == FX_I64, F(y), dim,
           n * dim);
    return -1;
}

__global__ void k_embed_bw(const float *dy, const void *idx, bool i64, int64_t pad, float *dw,
                           int64_t num, int64_t dim, int64_t total)
{
    GRID_LOOP(e, total)
    {
        int64_t v = idx_at(idx, i64, e / dim);
        if (v != pad && v >= 0 && v < num)
            atomicAdd(dw + v * dim + e % dim, dy[e]);
    }
}

static void cu_embedding_backward(const fx_tensor *dy, const fx_tensor *idx, int64_t padding_idx,
                                  fx_tensor *dweight)
{
    int64_t num = dweight->shape[0], dim = dweight->shape[1], n = numel(idx);
    LAUNCH(tdev(dy), n * dim, k_embed_bw, F(dy), fx_data(idx), idx->dtype == FX_I64,
           padding_idx < 0 ? (int64_t)-1 : padding_idx, F(dweight), num, dim, n * dim);
}

const fx_embed_kernels fx__cuda_embed = {
    .embedding = cu_embedding,
    .embedding_backward = cu_embedding_backward,
};
