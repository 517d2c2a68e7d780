/* backend.c - the CPU backend table: one entry per kernel family. The
 * kernels are declared in cpu.h; the newer families export whole tables. */
#include "cpu.h"

static bool cpu_available(int index) { return index == 0; }

static const fx_mem_kernels mem = { cpu_alloc, cpu_free, cpu_to_host, cpu_from_host, cpu_copy,
                                    cpu_fill };
static const fx_ew_kernels ew = { cpu_unary, cpu_unary_backward, cpu_binary, cpu_binary_backward,
                                  cpu_where, cpu_where_backward, cpu_dropout_mask, cpu_axpy };
static const fx_blas_kernels blas = { cpu_gemm, cpu_bias_fill, cpu_bias_backward };
static const fx_reduce_kernels red = { cpu_reduce, cpu_reduce_backward, cpu_softmax,
                                       cpu_softmax_backward, cpu_sum_squares,
                                       cpu_count_nonfinite };
static const fx_index_kernels idx = { cpu_index_select, cpu_index_add, cpu_gather,
                                      cpu_scatter_add };
static const fx_loss_kernels loss = { cpu_ce_labels, cpu_ce_labels_backward, cpu_ce_soft,
                                      cpu_ce_soft_backward, cpu_bce_logits,
                                      cpu_bce_logits_backward, cpu_ctc_check, cpu_ctc_forward,
                                      cpu_ctc_backward };
static const fx_optim_kernels optim = { cpu_optim_step };

extern const fx_conv_kernels fx_cpu_conv;
extern const fx_norm_kernels fx_cpu_norm;
extern const fx_rnn_kernels fx_cpu_rnn;
extern const fx_seq_kernels fx_cpu_seq;
extern const fx_embed_kernels fx_cpu_embed;

const fx_backend fx_cpu_backend = {
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
    .conv = &fx_cpu_conv,
    .norm = &fx_cpu_norm,
    .rnn = &fx_cpu_rnn,
    .seq = &fx_cpu_seq,
    .embed = &fx_cpu_embed,
};
