/* backend.c - the CPU backend table: one entry per kernel family. The
 * older families' kernels are declared in cpu.h and listed here; the newer
 * families export whole tables from their own files. Every table names its
 * slots (designated initializers), so two kernels of the same signature
 * (ce_soft and bce_logits, say) cannot be swapped unseen; cuda/backend.cu
 * does the same. */
#include "cpu.h"
#include "../kern_packed.h" /* cpu_gemm_bf16 */

static bool cpu_available(int index) { return index == 0; }

static const fx_mem_kernels mem = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_host = cpu_to_host,
    .from_host = cpu_from_host,
    .copy = cpu_copy,
    .fill = cpu_fill,
};
static const fx_ew_kernels ew = {
    .unary = cpu_unary,
    .unary_backward = cpu_unary_backward,
    .binary = cpu_binary,
    .binary_backward = cpu_binary_backward,
    .where = cpu_where,
    .where_backward = cpu_where_backward,
    .dropout_mask = cpu_dropout_mask,
    .axpy = cpu_axpy,
};
static const fx_blas_kernels blas = {
    .gemm = cpu_gemm,
    .gemm_bf16 = cpu_gemm_bf16,
    .bias_fill = cpu_bias_fill,
    .bias_backward = cpu_bias_backward,
};
static const fx_reduce_kernels red = {
    .reduce = cpu_reduce,
    .reduce_backward = cpu_reduce_backward,
    .softmax = cpu_softmax,
    .softmax_backward = cpu_softmax_backward,
    .sum_squares = cpu_sum_squares,
    .count_nonfinite = cpu_count_nonfinite,
};
static const fx_index_kernels idx = {
    .index_select = cpu_index_select,
    .index_add = cpu_index_add,
    .gather = cpu_gather,
    .scatter_add = cpu_scatter_add,
};
static const fx_loss_kernels loss = {
    .ce_labels = cpu_ce_labels,
    .ce_labels_backward = cpu_ce_labels_backward,
    .ce_soft = cpu_ce_soft,
    .ce_soft_backward = cpu_ce_soft_backward,
    .bce_logits = cpu_bce_logits,
    .bce_logits_backward = cpu_bce_logits_backward,
    .ctc_check = cpu_ctc_check,
    .ctc_forward = cpu_ctc_forward,
    .ctc_backward = cpu_ctc_backward,
};
static const fx_optim_kernels optim = {
    .step = cpu_optim_step,
};

extern const fx_conv_kernels fx__cpu_conv;
extern const fx_norm_kernels fx__cpu_norm;
extern const fx_rnn_kernels fx__cpu_rnn;
extern const fx_seq_kernels fx__cpu_seq;
extern const fx_embed_kernels fx__cpu_embed;

const fx_backend fx__cpu_backend = {
    .name = "cpu",
    .type = FX_DEV_CPU,
    .available = cpu_available,
    .mem = &mem,
    .ew = &ew,
    .blas = &blas,
    .red = &red,
    .idx = &idx,
    .loss = &loss,
    .optim = &optim,
    .conv = &fx__cpu_conv,
    .norm = &fx__cpu_norm,
    .rnn = &fx__cpu_rnn,
    .seq = &fx__cpu_seq,
    .embed = &fx__cpu_embed,
};
