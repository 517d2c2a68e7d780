/* batch_config.c - the batcher's settings (fxb_config, batcher.h): their
 * defaults, their checks against each other and the graph, and what serving
 * a graph needs at least (fxb_min_need). servecfg.c gives the settings their
 * other forms (text, BatchingConfig message, stored). */
#include <stdio.h>

#include "base/status.h"
#include "serving/batch_io.h"
#include "serving/batcher.h"
#include "serving/devices.h"

void fxb_config_default(fxb_config *c)
{
    *c = (fxb_config){ .enabled = true, .max_batch_size = FXB_DEFAULT_MAX_BATCH,
                       .max_queue_delay_us = FXB_DEFAULT_DELAY_US,
                       .max_queue_size = FXB_DEFAULT_QUEUE, .priority_levels = 1,
                       .default_priority = 1, .instances = 1,
                       .arena_keep_bytes = FXB_ARENA_KEEP_BYTES };
}

static bool has_lengths_input(const fxg_graph *g)
{
    for (int i = 0; i < fxg_num_inputs(g); i++) {
        const fxg_tensor_info *t = fxg_input(g, i);
        if (t->ndim == 1 && (t->dtype == FX_I32 || t->dtype == FX_I64))
            return true;
    }
    return false;
}

int fxb_config_check(const fxb_config *c, const fxg_graph *g, char *err, size_t errlen)
{
    if (c->max_batch_size < 1 || c->max_batch_size > 1u << 20) {
        snprintf(err, errlen, "max_batch_size %u is not in [1, 1048576]", c->max_batch_size);
        return FXS_INVALID_ARGUMENT;
    }
    if (c->max_queue_delay_us > 10000000) {
        snprintf(err, errlen, "max_queue_delay_us %llu is over 10 s",
                 (unsigned long long)c->max_queue_delay_us);
        return FXS_INVALID_ARGUMENT;
    }
    if (c->n_preferred < 0 || c->n_preferred > FXB_MAX_PREFERRED) {
        snprintf(err, errlen, "at most %d preferred_batch_sizes", FXB_MAX_PREFERRED);
        return FXS_INVALID_ARGUMENT;
    }
    for (int i = 0; i < c->n_preferred; i++) {
        if (c->preferred[i] < 1 || c->preferred[i] > c->max_batch_size) {
            snprintf(err, errlen, "preferred batch size %u is not in [1, max_batch_size %u]",
                     c->preferred[i], c->max_batch_size);
            return FXS_INVALID_ARGUMENT;
        }
        if (i && c->preferred[i] <= c->preferred[i - 1]) {
            snprintf(err, errlen, "preferred_batch_sizes must be ascending without repeats");
            return FXS_INVALID_ARGUMENT;
        }
    }
    if (c->max_queue_size < 1 || c->max_queue_size > 1u << 20) {
        snprintf(err, errlen, "max_queue_size %u is not in [1, 1048576]", c->max_queue_size);
        return FXS_INVALID_ARGUMENT;
    }
    if (c->timeout_us > 3600ull * 1000000u) {
        snprintf(err, errlen, "timeout_us %llu is over an hour",
                 (unsigned long long)c->timeout_us);
        return FXS_INVALID_ARGUMENT;
    }
    if (c->priority_levels < 1 || c->priority_levels > FXB_MAX_LEVELS) {
        snprintf(err, errlen, "priority_levels %u is not in [1, %d]", c->priority_levels,
                 FXB_MAX_LEVELS);
        return FXS_INVALID_ARGUMENT;
    }
    if (c->default_priority < 1 || c->default_priority > c->priority_levels) {
        snprintf(err, errlen, "default_priority %u is not in [1, priority_levels %u]",
                 c->default_priority, c->priority_levels);
        return FXS_INVALID_ARGUMENT;
    }
    if (c->instances < 1 || c->instances > FXB_MAX_INSTANCES) {
        snprintf(err, errlen, "instances %u is not in [1, %d]", c->instances, FXB_MAX_INSTANCES);
        return FXS_INVALID_ARGUMENT;
    }
    if (c->pad_variable_dims && g && !has_lengths_input(g)) {
        snprintf(err, errlen, "pad_variable_dims: the model has no per-sample lengths input "
                 "(1-D INT32/INT64), so padding would change its results; requests of "
                 "different lengths are batched by length instead");
        return FXS_INVALID_ARGUMENT;
    }
    return 0;
}

void fxb_min_need(const fxg_graph *g, const fxb_config *c, fx_device dev, fxb_need *out)
{
    out->weights = fxsv_params_bytes(fxg_params(g));
    out->contexts = (int)c->instances + (dev.type == FX_DEV_CPU && c->instances < FXB_MAX_INSTANCES);
    out->arena = fxb_io_one_sample_arena(g);
    out->total = out->weights + (uint64_t)out->contexts * out->arena;
}
