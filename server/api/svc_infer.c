/*
 * svc_infer.c - inference.GRPCInferenceService, the Open Inference Protocol
 * (KServe v2 / Triton gRPC). ModelInfer is validated on the gRPC poller
 * that received it (FXR_UNARY_POLLER: no hand-off to the handler pool; what
 * would block there goes to the pool with fxr_defer), then runs on an
 * inference worker (serving.h), which replies; a lone request may run on
 * the poller itself.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "models/graph.h"
#include "inference/grpc_service.pb-c.h"
#include "base/log.h"
#include "base/pbarena.h"
#include "serving/servecfg.h"


typedef Inference__ModelInferRequest InferReq;
typedef Inference__ModelInferRequest__InferInputTensor InferInput;

static const char *dtype_name(fx_dtype dt)
{
    switch (dt) {
    case FX_F32: return "FP32";
    case FX_F16: return "FP16";
    case FX_BF16: return "BF16";
    case FX_I32: return "INT32";
    case FX_I64: return "INT64";
    default: return "UNKNOWN";
    }
}

/* route: an inference request, which a canary may take (serving.h
 * fxsv_serving_route); else the instance the version names. */
static fxsv_served *acquire(fxr_call *call, fxa_daemon *d, const char *name, const char *version,
                            bool route)
{
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    int64_t v;
    fxsv_served *m = NULL;
    if (!fxa_key(call, "model", name, key, sizeof key))
        return NULL;
    /* On a poller (ModelInfer, FXR_UNARY_POLLER) nothing may block: an
     * alias is looked up in the store, and an instance not at hand is built
     * from it; both go to the handler pool, where this runs again. */
    bool poller = fxr_on_poller(call);
    if (poller && version && *version && strcmp(version, FXDB_PRODUCTION) != 0 &&
        !(*version >= '0' && *version <= '9')) {
        fxr_defer(call);
        return NULL;
    }
    int rc = fxa_resolve_version(d, key, version, &v, err, sizeof err); /* an alias too */
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return NULL;
    }
    if (poller && route) {
        if (!fxsv_serving_route_at_hand(d->serving, key, v, &m))
            fxr_defer(call);
        return m;
    }
    rc = route ? fxsv_serving_route(d->serving, key, v, &m, err, sizeof err)
               : fxsv_serving_acquire(d->serving, key, v, &m, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return NULL;
    }
    return m;
}

fxsv_served *fxa_acquire_served(fxr_call *call, fxa_daemon *d, const char *name,
                                const char *version)
{
    return acquire(call, d, name, version, false);
}

/* ------------------------------------------------------- health, metadata */

static void server_live(fxr_call *call, const ProtobufCMessage *req, void *data)
{
    Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    r.live = true;
    fxr_reply(call, &r.base);
}

static void server_ready(fxr_call *call, const ProtobufCMessage *req, void *data)
{
    fxa_daemon *d = data;
    Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
    r.ready = !atomic_load(&d->draining);
    fxr_reply(call, &r.base);
}

static void model_ready(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Inference__ModelReadyRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    int64_t v;
    if (!fxa_key(call, "model", req->name, key, sizeof key))
        return;
    int rc = fxa_resolve_version(d, key, req->version, &v, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    fxsv_served *m = NULL;
    rc = fxsv_serving_acquire(d->serving, key, v, &m, err, sizeof err);
    if (rc == FXS_NOT_FOUND && v == 0) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
    r.ready = rc == 0 && !atomic_load(&d->draining);
    if (m)
        fxsv_served_release(m);
    fxr_reply(call, &r.base);
}

static void server_metadata(fxr_call *call, const ProtobufCMessage *req, void *data)
{
    static char *ext[] = { "model_repository", "statistics" };
    Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    r.name = "fluxion";
    r.version = FX_VERSION_STRING;
    r.extensions = ext;
    r.n_extensions = 2;
    fxr_reply(call, &r.base);
}

static Inference__ModelMetadataResponse__TensorMetadata *tensor_meta(pba *a,
                                                                      const fxg_tensor_info *t)
{
    Inference__ModelMetadataResponse__TensorMetadata *tm =
        PBA_NEW(a, Inference__ModelMetadataResponse__TensorMetadata,
                inference__model_metadata_response__tensor_metadata__init);
    int64_t *shape = pba_array(a, (size_t)t->ndim, sizeof *shape);
    if (!tm || !shape)
        return NULL;
    tm->name = pba_strdup(a, t->name);
    tm->datatype = (char *)dtype_name(t->dtype);
    memcpy(shape, t->shape, sizeof *shape * (size_t)t->ndim);
    tm->shape = shape;
    tm->n_shape = (size_t)t->ndim;
    return tm;
}

static void model_metadata(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Inference__ModelMetadataRequest *req = (const void *)msg;
    fxsv_served *m = fxa_acquire_served(call, d, req->name, req->version);
    if (!m)
        return;
    const fxg_graph *g = fxsv_served_graph(m);
    char err[FXS_ERRLEN];
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(d->store, fxsv_served_name(m), &rec, err, sizeof err);
    if (rc) {
        fxsv_served_release(m);
        fxr_fail(call, rc, "%s", err);
        return;
    }
    pba a = { 0 };
    Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    r.name = (char *)fxa_show(call, fxsv_served_name(m));
    r.platform = "fluxion";
    r.versions = pba_array(&a, (size_t)rec.n_versions, sizeof *r.versions);
    for (int i = 0; r.versions && i < rec.n_versions; i++)
        r.versions[r.n_versions++] = pba_printf(&a, "%" PRId64, rec.versions[i].version);
    int ni = fxg_num_inputs(g), no = fxg_num_outputs(g);
    r.inputs = pba_array(&a, (size_t)ni, sizeof *r.inputs);
    r.outputs = pba_array(&a, (size_t)no, sizeof *r.outputs);
    for (int i = 0; r.inputs && i < ni; i++)
        r.inputs[r.n_inputs++] = tensor_meta(&a, fxg_input(g, i));
    for (int i = 0; r.outputs && i < no; i++)
        r.outputs[r.n_outputs++] = tensor_meta(&a, fxg_output(g, i));
    if (a.failed)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &r.base);
    pba_free(&a);
    fxdb_model_rec_free(&rec);
    fxsv_served_release(m);
}

/* ------------------------------------------------------------ ModelInfer */

typedef struct {
    fxr_call *call;
    fxsv_served *model;
    const InferReq *req;
    int n_in;            /* graph inputs */
    int *req_index;      /* graph input i -> request input index */
    int n_out;           /* outputs to return */
    int *out_index;      /* -> graph output index */
    bool raw;            /* inputs came as raw_input_contents: answer raw */
    fxsv_input *inputs;  /* per graph input, pointing into req */
    uint64_t batch;
    pba reply_arena;     /* the answer, made before it is sent */
    Inference__ModelInferResponse resp;
} infer_job;

static void job_free(infer_job *j)
{
    pba_free(&j->reply_arena);
    if (j->model)
        fxsv_served_release(j->model);
    free(j->req_index);
    free(j->out_index);
    free(j->inputs);
    free(j);
}

static size_t typed_count(const Inference__InferTensorContents *c, fx_dtype dt)
{
    if (!c)
        return 0;
    switch (dt) {
    case FX_F32: return c->n_fp32_contents;
    case FX_I32: return c->n_int_contents;
    case FX_I64: return c->n_int64_contents;
    default: return 0;
    }
}

static const void *typed_data(const Inference__InferTensorContents *c, fx_dtype dt)
{
    if (!c)
        return ""; /* no values: an empty tensor */
    switch (dt) {
    case FX_F32: return c->fp32_contents;
    case FX_I32: return c->int_contents;
    case FX_I64: return c->int64_contents;
    default: return NULL;
    }
}

/* Checks one request input against graph input gi: 0 or INVALID_ARGUMENT
 * naming the input. */
static int check_input(const fxg_graph *g, int gi, const InferReq *req, int ri, bool raw,
                       uint64_t max_bytes, char *err, size_t errlen)
{
    const InferInput *in = req->inputs[ri];
    const fxg_tensor_info *info = fxg_input(g, gi);
    if (strcmp(in->datatype, dtype_name(info->dtype)) != 0) {
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': datatype '%s', the model expects %s", in->name,
                 in->datatype, dtype_name(info->dtype));
    }
    if (in->n_shape > FX_MAX_DIMS) {
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': rank %zu, the model expects %d", in->name, in->n_shape,
                 info->ndim);
    }
    uint64_t numel = 1;
    for (size_t k = 0; k < in->n_shape; k++) {
        if (in->shape[k] < 0) {
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': shape[%zu] = %" PRId64 " is negative", in->name, k,
                     in->shape[k]);
        }
        if (in->shape[k] && numel > max_bytes / (uint64_t)in->shape[k]) {
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': the shape's element count overflows the limit of %"
                     PRIu64 " bytes", in->name, max_bytes);
        }
        numel *= (uint64_t)in->shape[k];
    }
    int rc = fxg_check_input(g, gi, info->dtype, (int)in->n_shape, in->shape, err, errlen);
    if (rc)
        return rc;
    size_t esize = fx_dtype_size(info->dtype);
    if (raw) {
        if (in->contents) {
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': contents set although raw_input_contents is used "
                     "(use one or the other for all inputs)", in->name);
        }
        size_t got = req->raw_input_contents[ri].len;
        if (got != numel * esize) {
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': raw_input_contents[%d] has %zu bytes, shape and "
                     "datatype need %" PRIu64, in->name, ri, got, numel * esize);
        }
    } else {
        size_t got = typed_count(in->contents, info->dtype);
        if (got != numel) {
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "input '%s': %zu values in contents (%s), the shape needs %" PRIu64,
                     in->name, got, info->dtype == FX_F32 ? "fp32_contents"
                                   : info->dtype == FX_I32 ? "int_contents" : "int64_contents",
                     numel);
        }
    }
    return 0;
}

/* The reply's size at least, from the requested outputs' shapes at the
 * request's batch size (a -1 after the first dim counts 1: that size follows
 * an input's and is known only once the model runs): a reply over the
 * message limit is refused before the request runs, not computed to be
 * dropped at send (RESOURCE_EXHAUSTED, naming the largest output). Raw and
 * FP32 values take their size; typed integers at least a byte (varints). */
static int check_reply_size(const fxg_graph *g, const infer_job *j, uint64_t max_bytes,
                            char *err, size_t errlen)
{
    uint64_t total = 0, big_bytes = 0;
    fx_tensor big = { .ndim = 0 }; /* only its shape is read (fx_shape_str) */
    const fxg_tensor_info *big_info = NULL;
    for (int k = 0; k < j->n_out; k++) {
        const fxg_tensor_info *t = fxg_output(g, j->out_index[k]);
        fx_tensor shape = { .ndim = t->ndim };
        uint64_t bytes = j->raw || t->dtype == FX_F32 ? fx_dtype_size(t->dtype) : 1;
        for (int d = 0; d < t->ndim; d++) {
            shape.shape[d] = t->shape[d] >= 0 ? t->shape[d] : d == 0 ? (int64_t)j->batch : 1;
            uint64_t n = (uint64_t)shape.shape[d];
            bytes = n && bytes > UINT64_MAX / n ? UINT64_MAX : bytes * n;
        }
        total = total > UINT64_MAX - bytes ? UINT64_MAX : total + bytes;
        if (!big_info || bytes > big_bytes) {
            big_info = t;
            big_bytes = bytes;
            big = shape;
        }
    }
    /* room for the rest of the reply: names, shapes, the request's id */
    uint64_t slack = 4096 + strlen(j->req->id ? j->req->id : "");
    if (total <= max_bytes && max_bytes - total >= slack)
        return 0;
    char dims[160];
    snprintf(err, errlen, "the reply would be at least %" PRIu64 " bytes, over the message limit "
             "of %" PRIu64 " bytes (--max-message-mb): output '%s' would be %s %s, %" PRIu64
             " bytes; send fewer samples per request, or ask only for the outputs needed",
             total, max_bytes, big_info->name, fx_shape_str(&big, dims, sizeof dims),
             dtype_name(big_info->dtype), big_bytes);
    return FXS_RESOURCE_EXHAUSTED;
}

/* Validates the whole request (names, dtypes, shapes, sizes, outputs) and
 * fills the job's index tables. */
static int validate(fxa_daemon *d, infer_job *j, char *err, size_t errlen)
{
    const InferReq *req = j->req;
    const fxg_graph *g = fxsv_served_graph(j->model);
    j->n_in = fxg_num_inputs(g);
    j->req_index = malloc(sizeof(int) * (size_t)j->n_in);
    int no = fxg_num_outputs(g);
    j->out_index = malloc(sizeof(int) * (size_t)(no + (int)req->n_outputs + 1));
    if (!j->req_index || !j->out_index) {
        snprintf(err, errlen, "out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    for (int i = 0; i < j->n_in; i++)
        j->req_index[i] = -1;
    j->raw = req->n_raw_input_contents > 0;
    if (j->raw && req->n_raw_input_contents != req->n_inputs) {
        snprintf(err, errlen, "raw_input_contents has %zu entries for %zu inputs (one per input, "
                 "in order)", req->n_raw_input_contents, req->n_inputs);
        return FXS_INVALID_ARGUMENT;
    }
    for (size_t r = 0; r < req->n_inputs; r++) {
        const char *name = req->inputs[r]->name;
        int gi = fxg_find_input(g, name);
        if (gi < 0) {
            char list[256] = "";
            for (int i = 0; i < j->n_in; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                         fxg_input(g, i)->name);
            snprintf(err, errlen, "input '%s' is not an input of model '%s' (inputs: %s)", name,
                     fxsv_served_name(j->model), list);
            return FXS_INVALID_ARGUMENT;
        }
        if (j->req_index[gi] >= 0) {
            snprintf(err, errlen, "input '%s' is given twice", name);
            return FXS_INVALID_ARGUMENT;
        }
        j->req_index[gi] = (int)r;
        int rc = check_input(g, gi, req, (int)r, j->raw, d->max_message_bytes, err, errlen);
        if (rc)
            return rc;
    }
    for (int i = 0; i < j->n_in; i++)
        if (j->req_index[i] < 0) {
            snprintf(err, errlen, "input '%s' is missing", fxg_input(g, i)->name);
            return FXS_INVALID_ARGUMENT;
        }
    const InferInput *first = req->inputs[j->req_index[0]];
    j->batch = first->n_shape ? (uint64_t)first->shape[0] : 1;
    if (req->n_outputs == 0) {
        for (int o = 0; o < no; o++)
            j->out_index[o] = o;
        j->n_out = no;
        return check_reply_size(g, j, d->max_message_bytes, err, errlen);
    }
    for (size_t r = 0; r < req->n_outputs; r++) {
        int o = fxg_find_output(g, req->outputs[r]->name);
        if (o < 0) {
            snprintf(err, errlen, "output '%s' is not an output of model '%s'",
                     req->outputs[r]->name, fxsv_served_name(j->model));
            return FXS_INVALID_ARGUMENT;
        }
        for (int k = 0; k < j->n_out; k++)
            if (j->out_index[k] == o) {
                snprintf(err, errlen, "output '%s' is requested twice", req->outputs[r]->name);
                return FXS_INVALID_ARGUMENT;
            }
        j->out_index[j->n_out++] = o;
    }
    return check_reply_size(g, j, d->max_message_bytes, err, errlen);
}

/* Output k of the request into a response tensor (typed or raw). The data
 * is the batcher's, valid during the done call: fxr_reply packs it at once. */
static int put_output(pba *a, Inference__ModelInferResponse *resp, const infer_job *j, int k,
                      const fxsv_output *t, const char *name)
{
    Inference__ModelInferResponse__InferOutputTensor *o =
        PBA_NEW(a, Inference__ModelInferResponse__InferOutputTensor,
                inference__model_infer_response__infer_output_tensor__init);
    int64_t *shape = pba_array(a, (size_t)t->ndim + 1, sizeof *shape);
    if (!o || !shape)
        return -1;
    size_t n = t->bytes / fx_dtype_size(t->dtype);
    void *buf = (void *)t->data;
    o->name = (char *)name;
    o->datatype = (char *)dtype_name(t->dtype);
    memcpy(shape, t->shape, sizeof *shape * (size_t)t->ndim);
    o->shape = shape;
    o->n_shape = (size_t)t->ndim;
    if (j->raw) {
        resp->raw_output_contents[k].data = buf;
        resp->raw_output_contents[k].len = t->bytes;
    } else {
        Inference__InferTensorContents *c = PBA_NEW(a, Inference__InferTensorContents,
                                                    inference__infer_tensor_contents__init);
        if (!c)
            return -1;
        switch (t->dtype) {
        case FX_F32: c->fp32_contents = buf; c->n_fp32_contents = n; break;
        case FX_I32: c->int_contents = buf; c->n_int_contents = n; break;
        case FX_I64: c->int64_contents = buf; c->n_int64_contents = n; break;
        default: return -1;
        }
        o->contents = c;
    }
    resp->outputs[k] = o;
    return 0;
}

/* The reply to one request, made (not sent) on a serving thread: the
 * outputs point into the batch's memory, valid until send returns. */
static int infer_answer(void *user, int status, const char *err, const fxsv_output *outs)
{
    infer_job *j = user;
    if (status)
        return status;
    const fxg_graph *g = fxsv_served_graph(j->model);
    pba *a = &j->reply_arena;
    Inference__ModelInferResponse *resp = &j->resp;
    inference__model_infer_response__init(resp);
    resp->model_name = (char *)fxa_show(j->call, fxsv_served_name(j->model));
    resp->model_version = pba_printf(a, "%" PRId64, fxsv_served_version(j->model));
    resp->id = j->req->id;
    resp->outputs = pba_array(a, (size_t)j->n_out + 1, sizeof *resp->outputs);
    resp->n_outputs = (size_t)j->n_out;
    if (j->raw) {
        resp->raw_output_contents = pba_array(a, (size_t)j->n_out + 1,
                                              sizeof *resp->raw_output_contents);
        resp->n_raw_output_contents = (size_t)j->n_out;
    }
    for (int k = 0; !a->failed && k < j->n_out; k++) {
        int o = j->out_index[k];
        if (put_output(a, resp, j, k, &outs[o], fxg_output(g, o)->name) != 0)
            a->failed = 1;
    }
    return a->failed ? FXS_RESOURCE_EXHAUSTED : 0;
}

/* Sends the reply made, or the failure, and frees the job. */
static void infer_send(void *user, int status, const char *err)
{
    infer_job *j = user;
    if (status)
        fxr_fail(j->call, status, "%s", err ? err : "out of memory building the reply");
    else
        fxr_reply(j->call, &j->resp.base);
    job_free(j);
}

/* An InferParameter as a non-negative integer: 0 and *v, or -1. */
static int param_uint(const Inference__InferParameter *p, uint64_t *v)
{
    switch (p ? p->parameter_choice_case : 0) {
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM:
        if (p->int64_param < 0)
            return -1;
        *v = (uint64_t)p->int64_param;
        return 0;
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM:
        *v = p->uint64_param;
        return 0;
    default:
        return -1;
    }
}

/* Request parameters the batcher honours (Triton's names): "priority"
 * (1 is the highest) and "timeout" (microseconds). Others are ignored. */
static int infer_params(const InferReq *req, fxsv_request *br, char *err, size_t errlen)
{
    for (size_t i = 0; i < req->n_parameters; i++) {
        const char *k = req->parameters[i]->key;
        uint64_t v;
        bool prio = !strcmp(k, "priority"), tmo = !strcmp(k, "timeout");
        if (!prio && !tmo)
            continue;
        if (param_uint(req->parameters[i]->value, &v) != 0 || (prio && v > UINT32_MAX)) {
            snprintf(err, errlen, "parameter '%s' must be a non-negative integer (int64_param "
                     "or uint64_param)%s", k, tmo ? ", in microseconds" : "");
            return -1;
        }
        if (prio)
            br->priority = (uint32_t)v;
        else
            br->timeout_us = v;
    }
    return 0;
}

/* The longest batch a gRPC poller runs itself (by the model's cost curve):
 * it saves waking an instance thread, a small model's largest cost per batch
 * on a shared CPU; the poller's other calls wait (the other poller goes on). */
#define POLLER_INLINE_NS 200000

static void model_infer(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const InferReq *req = (const void *)msg;
    uint64_t t_received = fxu_mono_ns();
    fxsv_served *m = acquire(call, d, req->model_name, req->model_version, true);
    if (!m)
        return;
    infer_job *j = calloc(1, sizeof *j);
    if (!j) {
        fxsv_served_release(m);
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    *j = (infer_job){ .call = call, .model = m, .req = req };
    char err[FXS_ERRLEN];
    int rc = validate(d, j, err, sizeof err);
    fxsv_request br = { .samples = j->batch, .deadline_ns = fxr_deadline_ns(call),
                        .received_ns = t_received, .answer = infer_answer, .send = infer_send,
                        .user = j, .may_run_inline = true,
                        .inline_max_ns = fxr_on_poller(call) ? POLLER_INLINE_NS : 0 };
    if (!rc && infer_params(req, &br, err, sizeof err) != 0)
        rc = FXS_INVALID_ARGUMENT;
    if (!rc && !(j->inputs = calloc((size_t)j->n_in + 1, sizeof *j->inputs))) {
        rc = FXS_RESOURCE_EXHAUSTED;
        snprintf(err, sizeof err, "out of memory");
    }
    for (int i = 0; !rc && i < j->n_in; i++) {
        /* The request stays valid until the call is finished (rpc.h). */
        int r = j->req_index[i];
        const InferInput *in = req->inputs[r];
        fxsv_input *x = &j->inputs[i];
        x->ndim = (int)in->n_shape;
        if (in->n_shape)
            memcpy(x->shape, in->shape, sizeof *x->shape * in->n_shape);
        x->data = j->raw ? (req->raw_input_contents[r].data
                                ? (const void *)req->raw_input_contents[r].data : "")
                         : typed_data(in->contents, fxg_input(fxsv_served_graph(m), i)->dtype);
    }
    br.inputs = j->inputs;
    br.samples = j->batch;
    if (!rc) {
        rc = fxsv_submit(m, &br, err, sizeof err); /* counts a refusal itself */
    } else {
        fxsv_served_refused(m, t_received);
    }
    if (rc) {
        job_free(j);
        fxr_fail(call, rc, "%s", err);
    }
}

/* ------------------------------------------------------- statistics, repo */

static Inference__StatisticDuration *dur(pba *a, const fxsv_duration *x)
{
    Inference__StatisticDuration *s = PBA_NEW(a, Inference__StatisticDuration,
                                              inference__statistic_duration__init);
    if (s) {
        s->count = x->count;
        s->ns = x->ns;
    }
    return s;
}

static Inference__ModelStatistics *stats_msg(pba *a, fxr_call *call, fxsv_served *m)
{
    fxsv_stats st;
    fxsv_served_stats(m, &st);
    Inference__ModelStatistics *ms = PBA_NEW(a, Inference__ModelStatistics,
                                             inference__model_statistics__init);
    Inference__InferStatistics *is = PBA_NEW(a, Inference__InferStatistics,
                                             inference__infer_statistics__init);
    if (!ms || !is)
        return NULL;
    ms->name = pba_strdup(a, fxa_show(call, fxsv_served_name(m)));
    ms->version = pba_printf(a, "%" PRId64, fxsv_served_version(m));
    ms->last_inference = st.last_inference_ms;
    ms->inference_count = st.inference_count;
    ms->execution_count = st.execution_count;
    is->success = dur(a, &st.success);
    is->fail = dur(a, &st.fail);
    is->queue = dur(a, &st.queue);
    is->compute_input = dur(a, &st.input);
    is->compute_infer = dur(a, &st.infer);
    is->compute_output = dur(a, &st.output);
    fxsv_duration zero = { 0, 0 };
    is->cache_hit = dur(a, &zero);
    is->cache_miss = dur(a, &zero);
    ms->inference_stats = is;
    ms->batch_stats = pba_array(a, (size_t)st.n_batch, sizeof *ms->batch_stats);
    for (int i = 0; ms->batch_stats && i < st.n_batch; i++) {
        Inference__InferBatchStatistics *b = PBA_NEW(a, Inference__InferBatchStatistics,
                                                     inference__infer_batch_statistics__init);
        if (!b)
            break;
        b->batch_size = st.batch[i].batch_size;
        b->compute_input = dur(a, &st.batch[i].input);
        b->compute_infer = dur(a, &st.batch[i].infer);
        b->compute_output = dur(a, &st.batch[i].output);
        ms->batch_stats[ms->n_batch_stats++] = b;
    }
    return ms;
}

static void model_statistics(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Inference__ModelStatisticsRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX] = "";
    int64_t v;
    if (req->name[0] && !fxa_key(call, "model", req->name, key, sizeof key))
        return;
    /* "": every version; an alias: the version it names now */
    int rc = key[0] || !req->version[0] ? fxa_resolve_version(d, key, req->version, &v, err,
                                                              sizeof err)
                                        : fxu_fail(err, sizeof err, FXS_INVALID_ARGUMENT,
                                                   "a version needs a model name");
    if (!rc && v == 0 && req->version[0] && !fxsv_serving_is_loaded(d->serving, key, &v))
        rc = fxu_fail(err, sizeof err, FXS_FAILED_PRECONDITION, "model '%s' is not loaded",
                      req->name);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    if (key[0] && !fxa_model_stored_or_fail(d, call, key))
        return;
    fxsv_served **all;
    int n;
    if (fxsv_serving_list(d->serving, &all, &n) != 0) {
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    pba a = { 0 };
    Inference__ModelStatisticsResponse r = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
    r.model_stats = pba_array(&a, (size_t)n, sizeof *r.model_stats);
    for (int i = 0; r.model_stats && i < n; i++) {
        if (key[0] ? strcmp(key, fxsv_served_name(all[i])) != 0
                   : !fxa_sees(call, fxsv_served_name(all[i])))
            continue;
        if (v && fxsv_served_version(all[i]) != v)
            continue;
        Inference__ModelStatistics *ms = stats_msg(&a, call, all[i]);
        if (ms)
            r.model_stats[r.n_model_stats++] = ms;
    }
    for (int i = 0; i < n; i++)
        fxsv_served_release(all[i]);
    free(all);
    if (a.failed)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &r.base);
    pba_free(&a);
}

static void repository_index(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Inference__RepositoryIndexRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    fxdb_model_rec *recs;
    int n;
    int rc = fxdb_store_list_models(d->store, fxa_list_team(call), &recs, &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    pba a = { 0 };
    Inference__RepositoryIndexResponse r = INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
    r.models = pba_array(&a, (size_t)n, sizeof *r.models);
    for (int i = 0; r.models && i < n; i++) {
        int64_t served = 0;
        bool loaded = fxsv_serving_is_loaded(d->serving, recs[i].name, &served);
        if (req->ready && !loaded)
            continue;
        Inference__RepositoryIndexResponse__ModelIndex *mi =
            PBA_NEW(&a, Inference__RepositoryIndexResponse__ModelIndex,
                    inference__repository_index_response__model_index__init);
        if (!mi)
            break;
        int64_t latest = recs[i].production; /* what a load serves */
        mi->name = pba_strdup(&a, fxa_show(call, recs[i].name));
        mi->version = pba_printf(&a, "%" PRId64, loaded ? served : latest);
        mi->state = loaded ? "READY" : "UNAVAILABLE";
        mi->reason = loaded ? "" : "unloaded";
        r.models[r.n_models++] = mi;
    }
    if (a.failed)
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    else
        fxr_reply(call, &r.base);
    pba_free(&a);
    for (int i = 0; i < n; i++)
        fxdb_model_rec_free(&recs[i]);
    free(recs);
}

static void repository_load(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Inference__RepositoryModelLoadRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    int rc = 0;
    if (!fxa_key(call, "model", req->model_name, key, sizeof key))
        return;
    if (req->n_parameters) {
        /* batching settings ("max_batch_size", ...): stored, then loaded */
        fxb_config c;
        fxdb_model_rec rec;
        rc = fxdb_store_get_model(d->store, key, &rec, err, sizeof err);
        if (!rc) {
            fxdb_model_rec_free(&rec);
            rc = fxsv_cfg_load(d->store, key, &c, err, sizeof err);
        }
        if (!rc)
            rc = fxsv_cfg_apply_params(&c, req->parameters, req->n_parameters, err, sizeof err);
        if (!rc)
            rc = fxsv_serving_set_config(d->serving, key, &c, err, sizeof err);
    }
    if (!rc) /* stores the "loaded" flag too */
        rc = fxsv_serving_load(d->serving, key, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Inference__RepositoryModelLoadResponse r = INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
    fxr_reply(call, &r.base);
}

static void repository_unload(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Inference__RepositoryModelUnloadRequest *req = (const void *)msg;
    char err[FXS_ERRLEN], key[FXP_KEY_MAX];
    if (!fxa_key(call, "model", req->model_name, key, sizeof key) ||
        !fxa_model_stored_or_fail(d, call, key))
        return;
    /* clears the "loaded" flag too; not loaded (NOT_FOUND) is fine */
    int rc = fxsv_serving_unload(d->serving, key, err, sizeof err);
    if (rc && rc != FXS_NOT_FOUND) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Inference__RepositoryModelUnloadResponse r = INFERENCE__REPOSITORY_MODEL_UNLOAD_RESPONSE__INIT;
    fxr_reply(call, &r.base);
}

int fxa_register_inference_service(fxa_daemon *d)
{
    static const fxr_method methods[] = {
        { "ServerLive", FXR_UNARY, FXP_ANY, server_live },
        { "ServerReady", FXR_UNARY, FXP_ANY, server_ready },
        { "ModelReady", FXR_UNARY, FXP_READ, model_ready },
        { "ServerMetadata", FXR_UNARY, FXP_ANY, server_metadata },
        { "ModelMetadata", FXR_UNARY, FXP_READ, model_metadata },
        /* on the poller: validated and queued (or run, alone) there */
        { "ModelInfer", FXR_UNARY_POLLER, FXP_INFER, model_infer },
        { "ModelConfig", FXR_UNARY, FXP_READ, fxa_model_config }, /* svc_infer_config.c */
        { "ModelStatistics", FXR_UNARY, FXP_READ, model_statistics },
        { "RepositoryIndex", FXR_UNARY, FXP_READ, repository_index },
        { "RepositoryModelLoad", FXR_UNARY, FXP_WRITE, repository_load },
        { "RepositoryModelUnload", FXR_UNARY, FXP_WRITE, repository_unload },
    };
    return fxr_server_add_service(d->rpc, &inference__grpcinference_service__descriptor,
                                  methods, (int)(sizeof methods / sizeof methods[0]), d);
}
