/* backend.c - the CPU backend table.
 *
 * Kernels not yet written are weak references (NULL in the table) so the
 * library links while families are filled in; tests call every entry. */
#include "cpu.h"

#define W __attribute__((weak))
W int64_t cpu_unary(fx_unary_op, float, float, const fx_tensor *, fx_tensor *);
W void cpu_unary_backward(fx_unary_op, float, float, const fx_tensor *, const fx_tensor *,
                          const fx_tensor *, fx_tensor *);
W int64_t cpu_binary(fx_binary_op, const fx_tensor *, const fx_tensor *, fx_tensor *);
W void cpu_binary_backward(fx_binary_op, const fx_tensor *, const fx_tensor *, const fx_tensor *,
                           fx_tensor *, fx_tensor *);
W void cpu_where(const fx_tensor *, const fx_tensor *, const fx_tensor *, fx_tensor *);
W void cpu_where_backward(const fx_tensor *, const fx_tensor *, fx_tensor *, fx_tensor *);
W void cpu_dropout_mask(fx_tensor *, float, uint64_t);
#undef W

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
                                      cpu_bce_logits_backward };
static const fx_optim_kernels optim = { cpu_optim_step };

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
};
