/* embed.c - CPU kernels: embedding lookups and their gradient (kern_embed.h). */
#include "cpu.h"

/* y[j, :] = weight[idx[j], :]; every index is checked before any row is
 * copied. */
static int64_t cpu_embedding(const fx_tensor *weight, const fx_tensor *idx, fx_tensor *y)
{
    int64_t num = weight->shape[0], dim = weight->shape[1], n = fx_tensor_numel(idx);
    for (int64_t j = 0; j < n; j++) {
        int64_t v = fx_index_at(idx, j);
        if (v < 0 || v >= num)
            return j;
    }
    const float *W = fx_f32(weight);
    float *Y = fx_f32(y);
    size_t row = (size_t)dim * sizeof(float);
    FX_PFOR(n * dim, j, n, memcpy(Y + j * dim, W + fx_index_at(idx, j) * dim, row););
    return -1;
}

/* dweight[idx[j], :] += dy[j, :] except for padding_idx. In parallel, task t
 * of T owns the rows with idx % T == t and scans all indices for them, so no
 * two tasks write one row; each row still adds its contributions in the
 * order of j, so the result does not depend on T. */
static void cpu_embedding_backward(const fx_tensor *dy, const fx_tensor *idx, int64_t padding_idx,
                                   fx_tensor *dweight)
{
    int64_t num = dweight->shape[0], dim = dweight->shape[1], n = fx_tensor_numel(idx);
    const float *DY = fx_f32(dy);
    float *DW = fx_f32(dweight);
    int64_t work = n * dim, T = work > FX_GRAIN && fx__num_threads > 1 ? fx__num_threads : 1;
    FX_PFOR(
        work, t, T, for (int64_t j = 0; j < n; j++) {
            int64_t v = fx_index_at(idx, j);
            if (v < 0 || v >= num || v == padding_idx || v % T != t)
                continue;
            const float *s = DY + j * dim;
            float *d = DW + v * dim;
            for (int64_t k = 0; k < dim; k++)
                d[k] += s[k];
        });
}

const fx_embed_kernels fx__cpu_embed = {
    .embedding = cpu_embedding,
    .embedding_backward = cpu_embedding_backward,
};
