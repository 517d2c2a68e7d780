/*
 * cmd_model_update.c - `fluxion model update NAME SPECFILE [--seed N]`
 * (ModelService/UpdateModelSpec): a new spec revision for an existing model,
 * and the report of which weights were carried over, re-initialized and
 * dropped. The handler sits in cmd_model.c's table.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxion/v1/model.pb-c.h"
#include "pbjson.h"

static void shape(const char *pre, size_t n, const int64_t *s)
{
    printf("%s[", pre);
    for (size_t i = 0; i < n; i++)
        printf("%s%" PRId64, i ? "," : "", s[i]);
    printf("]");
}

static void section(const char *title, Fluxion__V1__ParameterChange **c, size_t n, int which)
{
    printf("%s (%zu)%s\n", title, n, n ? ":" : "");
    for (size_t i = 0; i < n; i++) {
        printf("  %-28s ", c[i]->name);
        if (which == 2) { /* dropped: the old shape */
            shape("", c[i]->n_old_shape, c[i]->old_shape);
        } else {
            shape("", c[i]->n_shape, c[i]->shape);
            if (which == 1 && c[i]->n_old_shape) {
                shape("  (was ", c[i]->n_old_shape, c[i]->old_shape);
                printf(")");
            } else if (which == 1) {
                printf("  (new)");
            }
        }
        printf("\n");
    }
}

static void print_updated(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__UpdateModelSpecResponse *r = (const void *)msg;
    printf("updated model %s: spec revision %" PRId64 ", version %" PRId64
           " (weights from version %" PRId64 ")%s\n",
           r->model ? r->model->name : "?", r->revision, r->version, r->from_version,
           r->model && r->model->loaded ? ", served" : "");
    section("carried", r->carried, r->n_carried, 0);
    section("re-initialized", r->reinitialized, r->n_reinitialized, 1);
    section("dropped", r->dropped, r->n_dropped, 2);
}

/* options: 0 --seed */
int cli_cmd_model_update(cli_ctx *c, const cli_args *a)
{
    int64_t seed = 0;
    if (a->opt[0] && cli_parse_positive("--seed", a->opt[0], &seed))
        return CLI_ERR_USAGE;
    json_t *j;
    int rc = cli_load_json(a->pos[1], &j);
    if (rc)
        return rc;
    /* a model file ({"name", "spec", ...}, as `model create` takes) or a
     * bare ModelSpec */
    json_t *sj = json_is_object(j) && json_object_get(j, "spec") ? json_object_get(j, "spec") : j;
    char err[512];
    Fluxion__V1__ModelSpec *spec = (Fluxion__V1__ModelSpec *)pbjson_decode(
        &fluxion__v1__model_spec__descriptor, sj, err, sizeof err);
    json_decref(j);
    if (!spec)
        return cli_local_error("%s: %s", cli_path_name(a->pos[1]), err);
    Fluxion__V1__UpdateModelSpecRequest req = FLUXION__V1__UPDATE_MODEL_SPEC_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    req.spec = spec;
    req.seed = (uint64_t)seed;
    rc = cli_call_print(c, &fluxion__v1__model_service__descriptor, "UpdateModelSpec", &req.base,
                        print_updated, NULL);
    protobuf_c_message_free_unpacked(&spec->base, NULL);
    return rc;
}
