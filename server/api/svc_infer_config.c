/*
 * svc_infer_config.c - inference.GRPCInferenceService/ModelConfig: a served
 * model as Triton's ModelConfig message (proto/inference/model_config.proto,
 * Triton's published schema), so that tools that read a model's
 * configuration (tritonclient's get_model_config, perf_analyzer,
 * model_analyzer) work with fluxiond. Registered in svc_infer.c's table.
 *
 * What fills it: the inputs and outputs of the graph served (the stored
 * spec's, with the outputs' inferred shapes), the model's serving settings
 * (servecfg.h: batching, queue, priorities, instances, precision), the device the
 * weights are on, and the versions loaded. Nothing is stored in Triton's
 * form: the config is made on each call, so it always says what is served.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "models/graph.h"
#include "inference/grpc_service.pb-c.h"
#include "base/pbarena.h"
#include "serving/servecfg.h"

typedef Inference__ModelConfig ModelConfig;

static Inference__DataType data_type(fx_dtype dt)
{
    switch (dt) {
    case FX_F32: return INFERENCE__DATA_TYPE__TYPE_FP32;
    case FX_F16: return INFERENCE__DATA_TYPE__TYPE_FP16;
    case FX_BF16: return INFERENCE__DATA_TYPE__TYPE_BF16;
    case FX_I32: return INFERENCE__DATA_TYPE__TYPE_INT32;
    case FX_I64: return INFERENCE__DATA_TYPE__TYPE_INT64;
    default: return INFERENCE__DATA_TYPE__TYPE_INVALID;
    }
}

/* The batcher's rule (batcher.c): requests are merged into batches only
 * when every input and output has a free (-1) first dim. Only then is that
 * dim Triton's batch dimension (max_batch_size > 0, dims without it). */
static bool batchable(const fxg_graph *g)
{
    int ni = fxg_num_inputs(g), no = fxg_num_outputs(g);
    bool ok = ni > 0;
    for (int i = 0; ok && i < ni; i++)
        ok = fxg_input(g, i)->ndim >= 1 && fxg_input(g, i)->shape[0] < 0;
    for (int i = 0; ok && i < no; i++)
        ok = fxg_output(g, i)->ndim >= 1 && fxg_output(g, i)->shape[0] < 0;
    return ok;
}

/* t's dims, without the first when skip_batch. A per-sample scalar (an
 * LSTM's lengths [N]) has no dims left: requests send it as [N], which is
 * what Triton's clients make of empty dims and a batch size. */
static int64_t *dims(pba *a, const fxg_tensor_info *t, bool skip_batch, size_t *n)
{
    int from = skip_batch ? 1 : 0;
    *n = (size_t)(t->ndim - from);
    int64_t *d = pba_array(a, *n ? *n : 1, sizeof *d);
    if (d && *n)
        memcpy(d, t->shape + from, sizeof *d * *n);
    return d;
}

static void put_tensors(pba *a, ModelConfig *mc, const fxg_graph *g, bool skip_batch)
{
    int ni = fxg_num_inputs(g), no = fxg_num_outputs(g);
    mc->input = pba_array(a, (size_t)ni, sizeof *mc->input);
    mc->output = pba_array(a, (size_t)no, sizeof *mc->output);
    for (int i = 0; mc->input && i < ni; i++) {
        const fxg_tensor_info *t = fxg_input(g, i);
        Inference__ModelInput *in = PBA_NEW(a, Inference__ModelInput,
                                            inference__model_input__init);
        if (!in)
            return;
        in->name = pba_strdup(a, t->name);
        in->data_type = data_type(t->dtype);
        in->dims = dims(a, t, skip_batch, &in->n_dims);
        mc->input[mc->n_input++] = in;
    }
    for (int i = 0; mc->output && i < no; i++) {
        const fxg_tensor_info *t = fxg_output(g, i);
        Inference__ModelOutput *out = PBA_NEW(a, Inference__ModelOutput,
                                              inference__model_output__init);
        if (!out)
            return;
        out->name = pba_strdup(a, t->name);
        out->data_type = data_type(t->dtype);
        out->dims = dims(a, t, skip_batch, &out->n_dims);
        mc->output[mc->n_output++] = out;
    }
}

/* dynamic_batching from the settings. Our levels and Triton's agree (1 is
 * the highest); one level is Triton's "no priorities" (0). A request's
 * "timeout" parameter overrides the model's (svc_infer.c infer_params), and
 * an expired request is answered DEADLINE_EXCEEDED, Triton's REJECT. */
static void put_batching(pba *a, ModelConfig *mc, const fxb_config *c)
{
    Inference__ModelDynamicBatching *db = PBA_NEW(a, Inference__ModelDynamicBatching,
                                                  inference__model_dynamic_batching__init);
    Inference__ModelQueuePolicy *qp = PBA_NEW(a, Inference__ModelQueuePolicy,
                                              inference__model_queue_policy__init);
    if (!db || !qp)
        return;
    db->max_queue_delay_microseconds = c->max_queue_delay_us;
    db->preferred_batch_size = pba_array(a, (size_t)c->n_preferred + 1, sizeof(int32_t));
    for (int i = 0; db->preferred_batch_size && i < c->n_preferred; i++)
        db->preferred_batch_size[db->n_preferred_batch_size++] = (int32_t)c->preferred[i];
    if (c->priority_levels > 1) {
        db->priority_levels = c->priority_levels;
        db->default_priority_level = c->default_priority;
    }
    qp->timeout_action = INFERENCE__MODEL_QUEUE_POLICY__TIMEOUT_ACTION__REJECT;
    qp->default_timeout_microseconds = c->timeout_us;
    qp->allow_timeout_override = true;
    qp->max_queue_size = c->max_queue_size;
    db->default_queue_policy = qp;
    mc->scheduling_choice_case = INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING;
    mc->dynamic_batching = db;
}

/* One instance group: `instances` execution instances on the device the
 * weights were placed on (the setting "gpu" chose one at load). */
static void put_instances(pba *a, ModelConfig *mc, const char *shown, const fxb_config *c,
                          fx_device dev)
{
    Inference__ModelInstanceGroup *ig = PBA_NEW(a, Inference__ModelInstanceGroup,
                                                inference__model_instance_group__init);
    mc->instance_group = pba_array(a, 1, sizeof *mc->instance_group);
    if (!ig || !mc->instance_group)
        return;
    ig->name = pba_printf(a, "%s_0", shown); /* Triton's default group name */
    ig->count = (int32_t)c->instances;
    if (dev.type == FX_DEV_CUDA) {
        ig->kind = INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_GPU;
        ig->gpus = pba_array(a, 1, sizeof *ig->gpus);
        if (ig->gpus)
            ig->gpus[ig->n_gpus++] = dev.index;
    } else {
        ig->kind = INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_CPU;
    }
    mc->instance_group[mc->n_instance_group++] = ig;
}

/* The versions loaded: the latest stored alone is Triton's "latest 1";
 * anything else (an older version asked for by number and kept loaded, or
 * a newer stored version not served yet) is the list of those loaded. */
static void put_version_policy(pba *a, fxa_daemon *d, ModelConfig *mc, const char *key,
                               int64_t latest)
{
    fxsv_served **all = NULL;
    int n = 0;
    if (fxsv_serving_list(d->serving, &all, &n) != 0) {
        a->failed = 1;
        return;
    }
    int64_t *v = pba_array(a, (size_t)n + 1, sizeof *v);
    size_t nv = 0;
    for (int i = 0; i < n; i++) {
        if (v && strcmp(fxsv_served_name(all[i]), key) == 0) {
            /* ascending without repeats (insertion; a handful at most) */
            int64_t x = fxsv_served_version(all[i]);
            size_t k = nv;
            while (k && v[k - 1] > x)
                k--;
            if (!(k && v[k - 1] == x)) {
                memmove(v + k + 1, v + k, sizeof *v * (nv - k));
                v[k] = x;
                nv++;
            }
        }
        fxsv_served_release(all[i]);
    }
    free(all);
    Inference__ModelVersionPolicy *vp = PBA_NEW(a, Inference__ModelVersionPolicy,
                                                inference__model_version_policy__init);
    if (!vp || !v)
        return;
    if (nv == 0 || (nv == 1 && v[0] == latest)) {
        Inference__ModelVersionPolicy__Latest *l =
            PBA_NEW(a, Inference__ModelVersionPolicy__Latest,
                    inference__model_version_policy__latest__init);
        if (!l)
            return;
        l->num_versions = 1;
        vp->policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST;
        vp->latest = l;
    } else {
        Inference__ModelVersionPolicy__Specific *s =
            PBA_NEW(a, Inference__ModelVersionPolicy__Specific,
                    inference__model_version_policy__specific__init);
        if (!s)
            return;
        s->versions = v;
        s->n_versions = nv;
        vp->policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_SPECIFIC;
        vp->specific = s;
    }
    mc->version_policy = vp;
}

/* Settings Triton's schema has no field for, as parameters in the form
 * RepositoryModelLoad takes them back (servecfg.h fxsv_cfg_apply_params);
 * "device" only when set (instance_group says where the weights are). */
static void put_parameters(pba *a, ModelConfig *mc, const fxb_config *c)
{
    struct { const char *key; char *value; } p[] = {
        { "batching_enabled", c->enabled ? "true" : "false" },
        { "pad_variable_dims", c->pad_variable_dims ? "true" : "false" },
        { "memory_limit_bytes", pba_printf(a, "%" PRIu64, c->memory_limit_bytes) },
        { "precision", (char *)fx_precision_name(c->precision) },
        { "device", pba_strdup(a, c->device) },
    };
    size_t n = sizeof p / sizeof p[0] - (c->device[0] ? 0 : 1);
    mc->parameters = pba_array(a, n, sizeof *mc->parameters);
    for (size_t i = 0; mc->parameters && i < n; i++) {
        Inference__ModelConfig__ParametersEntry *e =
            PBA_NEW(a, Inference__ModelConfig__ParametersEntry,
                    inference__model_config__parameters_entry__init);
        Inference__ModelParameter *v = PBA_NEW(a, Inference__ModelParameter,
                                               inference__model_parameter__init);
        if (!e || !v)
            return;
        e->key = (char *)p[i].key;
        v->string_value = p[i].value;
        e->value = v;
        mc->parameters[mc->n_parameters++] = e;
    }
}

void fxa_model_config(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Inference__ModelConfigRequest *req = (const void *)msg;
    fxsv_served *m = fxa_acquire_served(call, d, req->name, req->version);
    if (!m)
        return;
    const char *key = fxsv_served_name(m);
    const fxg_graph *g = fxsv_served_graph(m);
    char err[FXS_ERRLEN];
    fxdb_model_rec rec;
    fxb_config c;
    int rc = fxdb_store_get_model(d->store, key, &rec, err, sizeof err);
    if (rc) {
        fxsv_served_release(m);
        fxr_fail(call, rc, "%s", err);
        return;
    }
    int64_t latest = rec.n_versions ? rec.versions[rec.n_versions - 1].version : 0;
    fxdb_model_rec_free(&rec);
    rc = fxsv_cfg_load(d->store, key, &c, err, sizeof err);
    if (rc) {
        fxsv_served_release(m);
        fxr_fail(call, rc, "%s", err);
        return;
    }

    pba a = { 0 };
    const char *shown = fxa_show(call, key);
    ModelConfig *mc = PBA_NEW(&a, ModelConfig, inference__model_config__init);
    if (mc) {
        mc->name = pba_strdup(&a, shown);
        mc->platform = "fluxion";
        mc->backend = "fluxion";
        /* Batching off (each request alone, whatever its first dim) is
         * Triton's max_batch_size 0: dims are the whole shape. */
        bool batched = c.enabled && batchable(g);
        mc->max_batch_size = batched ? (int32_t)c.max_batch_size : 0;
        put_tensors(&a, mc, g, batched);
        if (batched)
            put_batching(&a, mc, &c);
        put_instances(&a, mc, shown, &c, fxg_device(g));
        put_version_policy(&a, d, mc, key, latest);
        put_parameters(&a, mc, &c);
    }
    Inference__ModelConfigResponse r = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
    r.config = mc;
    if (!mc || a.failed)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &r.base);
    pba_free(&a);
    fxsv_served_release(m);
}
