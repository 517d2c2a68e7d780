/*
 * cmd_versions.c - `fluxion model promote|rollback|alias|pin|unpin|retain|
 * delete-version` (ModelService.UpdateVersions, docs/versions.md) and the
 * versions part of `model get`: production, aliases, pins, metrics,
 * retention and the history of alias moves. The commands sit in the model
 * table (cmd_model.c); each prints the model's versions as they are after
 * the change.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fluxion/v1/model.pb-c.h"

static void print_version_list(const Fluxion__V1__Model *m)
{
    char t[32], b[32];
    printf("production:  version %" PRId64 "\n", m->production_version);
    if (m->keep_last)
        printf("retention:   the last %u version%s + aliased and pinned ones\n", m->keep_last,
               m->keep_last == 1 ? "" : "s");
    if (m->n_aliases) {
        printf("aliases:    ");
        for (size_t i = 0; i < m->n_aliases; i++)
            printf(" %s=%" PRId64, m->aliases[i]->name, m->aliases[i]->version);
        putchar('\n');
    }
    printf("versions:\n");
    for (size_t i = 0; i < m->n_versions; i++) {
        const Fluxion__V1__ModelVersion *v = m->versions[i];
        printf("  %-4" PRId64 " %s  %-10s %s  sha256 %.12s", v->version,
               cli_time(v->created_unix_ms, t, sizeof t), cli_bytes(v->weights_bytes, b, sizeof b),
               v->source, v->weights_sha256);
        if (*v->metric_name)
            printf("  %s %.6g", v->metric_name, v->metric);
        if (v->pinned)
            printf("  pinned");
        /* after a `model update`: the spec revision its weights fit */
        if (v->spec_revision > 1 || m->spec_revision > 1)
            printf("  spec revision %" PRId64, v->spec_revision ? v->spec_revision : 1);
        for (size_t k = 0; k < v->n_aliases; k++)
            printf("%s%s", k ? "," : "  [", v->aliases[k]);
        printf("%s\n", v->n_aliases ? "]" : "");
    }
    if (m->n_history) {
        printf("history (newest first):\n");
        for (size_t i = 0; i < m->n_history; i++) {
            const Fluxion__V1__AliasMove *h = m->history[i];
            char from[24] = "-", to[24] = "-";
            if (h->from_version)
                snprintf(from, sizeof from, "v%" PRId64, h->from_version);
            if (h->to_version)
                snprintf(to, sizeof to, "v%" PRId64, h->to_version);
            printf("  %s  %-12s %s -> %s  %s%s\n", cli_time(h->unix_ms, t, sizeof t), h->alias,
                   from, to, h->reason, h->rolled_back ? " (rolled back)" : "");
        }
    }
}

void cli_print_model_versions(const Fluxion__V1__Model *m)
{
    print_version_list(m);
}

static void print_after(const ProtobufCMessage *msg, const void *arg)
{
    const Fluxion__V1__Model *m = (const Fluxion__V1__Model *)msg;
    printf("%s\n", (const char *)arg);
    print_version_list(m);
}

static int update(cli_ctx *c, Fluxion__V1__UpdateVersionsRequest *req, const char *done)
{
    return cli_call_print(c, &fluxion__v1__model_service__descriptor, "UpdateVersions",
                          &req->base, print_after, done);
}

static int version_arg(const char *text, int64_t *v)
{
    return cli_parse_positive("VERSION", text, v);
}

int cli_cmd_model_promote(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__UpdateVersionsRequest req = FLUXION__V1__UPDATE_VERSIONS_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    if (version_arg(a->pos[1], &req.promote))
        return CLI_ERR_USAGE;
    req.action_case = FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_PROMOTE;
    if (a->opt[0])
        req.reason = (char *)a->opt[0];
    char done[256];
    snprintf(done, sizeof done, "model %s: production is version %s", a->pos[0], a->pos[1]);
    return update(c, &req, done);
}

int cli_cmd_model_rollback(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__UpdateVersionsRequest req = FLUXION__V1__UPDATE_VERSIONS_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    req.rollback = true;
    req.action_case = FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_ROLLBACK;
    char done[256];
    snprintf(done, sizeof done, "model %s: rolled back", a->pos[0]);
    return update(c, &req, done);
}

int cli_cmd_model_alias(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__UpdateVersionsRequest req = FLUXION__V1__UPDATE_VERSIONS_REQUEST__INIT;
    Fluxion__V1__SetAliasAction sa = FLUXION__V1__SET_ALIAS_ACTION__INIT;
    req.name = (char *)a->pos[0];
    bool del = a->opt[0] != NULL;
    if (del == (a->npos == 3))
        return cli_usage_error("model alias: give either VERSION or --delete");
    char done[256];
    if (del) {
        req.delete_alias = (char *)a->pos[1];
        req.action_case = FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_DELETE_ALIAS;
        snprintf(done, sizeof done, "model %s: alias %s deleted", a->pos[0], a->pos[1]);
    } else {
        if (version_arg(a->pos[2], &sa.version))
            return CLI_ERR_USAGE;
        sa.alias = (char *)a->pos[1];
        req.set_alias = &sa;
        req.action_case = FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_SET_ALIAS;
        snprintf(done, sizeof done, "model %s: alias %s is version %s", a->pos[0], a->pos[1],
                 a->pos[2]);
    }
    return update(c, &req, done);
}

static int pin(cli_ctx *c, const cli_args *a, bool on)
{
    Fluxion__V1__UpdateVersionsRequest req = FLUXION__V1__UPDATE_VERSIONS_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    int64_t v;
    if (version_arg(a->pos[1], &v))
        return CLI_ERR_USAGE;
    if (on) {
        req.pin = v;
        req.action_case = FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_PIN;
    } else {
        req.unpin = v;
        req.action_case = FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_UNPIN;
    }
    char done[256];
    snprintf(done, sizeof done, "model %s: version %s %s", a->pos[0], a->pos[1],
             on ? "pinned" : "unpinned");
    return update(c, &req, done);
}

int cli_cmd_model_pin(cli_ctx *c, const cli_args *a) { return pin(c, a, true); }
int cli_cmd_model_unpin(cli_ctx *c, const cli_args *a) { return pin(c, a, false); }

int cli_cmd_model_retain(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__UpdateVersionsRequest req = FLUXION__V1__UPDATE_VERSIONS_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    int64_t n = 0;
    if (strcmp(a->pos[1], "0") != 0 && cli_parse_positive("N", a->pos[1], &n))
        return CLI_ERR_USAGE;
    if (n > UINT32_MAX)
        return cli_usage_error("model retain: N %" PRId64 " is too large", n);
    req.keep_last = (uint32_t)n;
    req.action_case = FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_KEEP_LAST;
    char done[256];
    if (n)
        snprintf(done, sizeof done, "model %s: keeps the last %" PRId64 " versions + aliased and "
                 "pinned ones", a->pos[0], n);
    else
        snprintf(done, sizeof done, "model %s: keeps every version", a->pos[0]);
    return update(c, &req, done);
}

int cli_cmd_model_delete_version(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__UpdateVersionsRequest req = FLUXION__V1__UPDATE_VERSIONS_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    if (version_arg(a->pos[1], &req.delete_version))
        return CLI_ERR_USAGE;
    req.action_case = FLUXION__V1__UPDATE_VERSIONS_REQUEST__ACTION_DELETE_VERSION;
    char done[256];
    snprintf(done, sizeof done, "model %s: version %s deleted", a->pos[0], a->pos[1]);
    return update(c, &req, done);
}
