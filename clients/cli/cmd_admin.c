/*
 * cmd_admin.c - who the caller is, and the daemon's administration
 * (AdminService, proto/fluxion/v1/admin.proto): `whoami`, `team ...`,
 * `token ...`, `cert ...`. Every command but whoami and `team get` (of
 * one's own team) needs an admin token; the server decides, the CLI only
 * checks what it can check alone (roles, numbers, durations).
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fluxion/v1/admin.pb-c.h"
#include "fsutil.h"
#include "util.h"

#define ADMIN (&fluxion__v1__admin_service__descriptor)
#define MIB   ((uint64_t)1 << 20)

static int check_role(const char *role)
{
    if (!role)
        return cli_usage_error("--role is required: admin, member or viewer");
    if (strcmp(role, "admin") && strcmp(role, "member") && strcmp(role, "viewer"))
        return cli_usage_error("--role: expected admin, member or viewer, got \"%s\"", role);
    return CLI_OK;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ----------------------------------------------------------------- whoami */

static void print_whoami(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__WhoAmIResponse *w = (const Fluxion__V1__WhoAmIResponse *)msg;
    char t[32];
    printf("principal:  %s\n", w->principal);
    printf("team:       %s\n", w->team);
    printf("role:       %s\n", w->role);
    if (w->token_id)
        printf("token id:   %" PRId64 "\n", w->token_id);
    if (w->token_id)
        printf("expires:    %s\n", w->expires_ms ? cli_time(w->expires_ms, t, sizeof t) : "never");
    printf("auth:       %s\n",
           w->local_mode ? "off (local mode: no authentication configured)" : "on");
    printf("tls:        %s\n", w->tls ? "yes" : "no");
}

static int cmd_whoami(cli_ctx *c, const cli_args *a)
{
    (void)a;
    Fluxion__V1__WhoAmIRequest req = FLUXION__V1__WHO_AM_IREQUEST__INIT;
    return cli_call_print(c, ADMIN, "WhoAmI", &req.base, print_whoami, NULL);
}

/* ------------------------------------------------------------------ teams */

/* A quota: "N" models, or N MiB of weights or datasets (0: the daemon's default). */
static int parse_quota_value(const char *flag, const char *text, uint64_t unit, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end || errno || v > UINT64_MAX / unit)
        return cli_usage_error("%s: expected a whole number >= 0 (0: the daemon's default), got "
                               "\"%s\"",
                               flag, text);
    *out = (uint64_t)v * unit;
    return CLI_OK;
}

/* Options 0..3 of team create/update: --display-name, --max-models,
 * --max-weight-mb, --max-dataset-mb. *given: any quota option was. */
static int quota_options(const cli_args *a, Fluxion__V1__TeamQuota *q, bool *given)
{
    static const struct {
        const char *flag;
        uint64_t unit;
    } opt[3] = {
        {"--max-models", 1},
        {"--max-weight-mb", MIB},
        {"--max-dataset-mb", MIB},
    };
    uint64_t *slots[3] = {&q->max_models, &q->max_weight_bytes, &q->max_dataset_bytes};
    *given = false;
    for (int i = 0; i < 3; i++) {
        if (!a->opt[1 + i])
            continue;
        *given = true;
        int rc = parse_quota_value(opt[i].flag, a->opt[1 + i], opt[i].unit, slots[i]);
        if (rc)
            return rc;
    }
    return CLI_OK;
}

/* "1.0 MiB / 10.0 MiB" style cell: used, and the limit that applies. */
static const char *usage_cell(uint64_t used, uint64_t limit, bool bytes, char *buf, size_t len)
{
    char u[32], l[32];
    if (bytes) {
        cli_bytes(used, u, sizeof u);
        cli_bytes(limit, l, sizeof l);
    } else {
        snprintf(u, sizeof u, "%" PRIu64, used);
        snprintf(l, sizeof l, "%" PRIu64, limit);
    }
    if (limit)
        snprintf(buf, len, "%s/%s", u, l);
    else
        snprintf(buf, len, "%s", u);
    return buf;
}

void cli_print_team(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Team *t = (const Fluxion__V1__Team *)msg;
    static const Fluxion__V1__TeamQuota zero_q = FLUXION__V1__TEAM_QUOTA__INIT;
    static const Fluxion__V1__TeamUsage zero_u = FLUXION__V1__TEAM_USAGE__INIT;
    const Fluxion__V1__TeamQuota *set = t->quota ? t->quota : &zero_q;
    const Fluxion__V1__TeamQuota *eff = t->effective_quota ? t->effective_quota : &zero_q;
    const Fluxion__V1__TeamUsage *u = t->usage ? t->usage : &zero_u;
    char ts[32];
    printf("name:          %s\n", t->name);
    printf("display name:  %s\n", *t->display_name ? t->display_name : "-");
    printf("created:       %s\n", cli_time(t->created_ms, ts, sizeof ts));
    printf("%-13s  %-12s  %s\n", "", "USED", "LIMIT");
    const struct {
        const char *what;
        uint64_t used, set, eff;
        bool bytes;
    } rows[3] = {
        {"models", u->models, set->max_models, eff->max_models, false},
        {"weights", u->weight_bytes, set->max_weight_bytes, eff->max_weight_bytes, true},
        {"datasets", u->dataset_bytes, set->max_dataset_bytes, eff->max_dataset_bytes, true},
    };
    for (int i = 0; i < 3; i++) {
        char used[32], lim[32];
        if (rows[i].bytes) {
            cli_bytes(rows[i].used, used, sizeof used);
            cli_bytes(rows[i].eff, lim, sizeof lim);
        } else {
            snprintf(used, sizeof used, "%" PRIu64, rows[i].used);
            snprintf(lim, sizeof lim, "%" PRIu64, rows[i].eff);
        }
        printf("  %-11s  %-12s  %s%s\n", rows[i].what, used, rows[i].eff ? lim : "none",
               !rows[i].set ? " (the daemon's default)" : "");
    }
    cli_print_sched_quota(set, eff);
}

static int by_team_name(const void *a, const void *b)
{
    return strcmp((*(Fluxion__V1__Team *const *)a)->name, (*(Fluxion__V1__Team *const *)b)->name);
}

static void print_teams(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__ListTeamsResponse *l = (const Fluxion__V1__ListTeamsResponse *)msg;
    if (!l->n_teams) {
        printf("no teams\n");
        return;
    }
    int w = 4;
    for (size_t i = 0; i < l->n_teams; i++)
        if ((int)strlen(l->teams[i]->name) > w)
            w = (int)strlen(l->teams[i]->name);
    printf("%-*s  %-10s  %-21s  %-21s  %-20s  %s\n", w, "NAME", "MODELS", "WEIGHTS", "DATASETS",
           "CREATED", "DISPLAY NAME");
    for (size_t i = 0; i < l->n_teams; i++) {
        const Fluxion__V1__Team *t = l->teams[i];
        static const Fluxion__V1__TeamQuota zq = FLUXION__V1__TEAM_QUOTA__INIT;
        static const Fluxion__V1__TeamUsage zu = FLUXION__V1__TEAM_USAGE__INIT;
        const Fluxion__V1__TeamQuota *q = t->effective_quota ? t->effective_quota : &zq;
        const Fluxion__V1__TeamUsage *u = t->usage ? t->usage : &zu;
        char m[72], wb[72], db[72], ts[32];
        printf("%-*s  %-10s  %-21s  %-21s  %-20s  %s\n", w, t->name,
               usage_cell(u->models, q->max_models, false, m, sizeof m),
               usage_cell(u->weight_bytes, q->max_weight_bytes, true, wb, sizeof wb),
               usage_cell(u->dataset_bytes, q->max_dataset_bytes, true, db, sizeof db),
               cli_time(t->created_ms, ts, sizeof ts), t->display_name);
    }
}

static int cmd_team_create(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__CreateTeamRequest req = FLUXION__V1__CREATE_TEAM_REQUEST__INIT;
    Fluxion__V1__TeamQuota q = FLUXION__V1__TEAM_QUOTA__INIT;
    bool given;
    int rc = quota_options(a, &q, &given);
    if (rc)
        return rc;
    req.name = (char *)a->pos[0];
    if (a->opt[0])
        req.display_name = (char *)a->opt[0];
    req.quota = &q;
    return cli_call_print(c, ADMIN, "CreateTeam", &req.base, cli_print_team, NULL);
}

static int cmd_team_get(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__GetTeamRequest req = FLUXION__V1__GET_TEAM_REQUEST__INIT;
    if (a->npos)
        req.name = (char *)a->pos[0];
    return cli_call_print(c, ADMIN, "GetTeam", &req.base, cli_print_team, NULL);
}

static int cmd_team_list(cli_ctx *c, const cli_args *a)
{
    (void)a;
    Fluxion__V1__ListTeamsRequest req = FLUXION__V1__LIST_TEAMS_REQUEST__INIT;
    ProtobufCMessage *resp;
    int rc = cli_unary(c, ADMIN, "ListTeams", &req.base, &resp);
    if (rc)
        return rc;
    Fluxion__V1__ListTeamsResponse *l = (Fluxion__V1__ListTeamsResponse *)resp;
    if (l->n_teams > 1)
        qsort(l->teams, l->n_teams, sizeof *l->teams, by_team_name);
    rc = cli_show(c, resp, print_teams, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* The quota is replaced as a whole on the server: the limits not given
 * keep their current values (read first). */
static int cmd_team_update(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__UpdateTeamRequest req = FLUXION__V1__UPDATE_TEAM_REQUEST__INIT;
    Fluxion__V1__TeamQuota q = FLUXION__V1__TEAM_QUOTA__INIT;
    bool given;
    int rc = quota_options(a, &q, &given);
    if (rc)
        return rc;
    if (!given && !a->opt[0])
        return cli_usage_error("team update: nothing to change (give --display-name or a "
                               "--max-* option)");
    req.name = (char *)a->pos[0];
    if (a->opt[0]) {
        if (!*a->opt[0])
            return cli_usage_error("--display-name: expected a name, got an empty string");
        req.display_name = (char *)a->opt[0];
    }
    ProtobufCMessage *cur = NULL;
    if (given) {
        Fluxion__V1__GetTeamRequest g = FLUXION__V1__GET_TEAM_REQUEST__INIT;
        g.name = req.name;
        rc = cli_unary(c, ADMIN, "GetTeam", &g.base, &cur);
        if (rc)
            return rc;
        const Fluxion__V1__TeamQuota *old = ((Fluxion__V1__Team *)cur)->quota;
        if (old) {
            if (!a->opt[1])
                q.max_models = old->max_models;
            if (!a->opt[2])
                q.max_weight_bytes = old->max_weight_bytes;
            if (!a->opt[3])
                q.max_dataset_bytes = old->max_dataset_bytes;
            /* the scheduling fields are `team quota`'s: kept */
            q.weight = old->weight;
            q.cpu_slots = old->cpu_slots;
            q.gpu_slots = old->gpu_slots;
            q.borrow_cpu_slots = old->borrow_cpu_slots;
            q.borrow_gpu_slots = old->borrow_gpu_slots;
            q.budget_device_seconds = old->budget_device_seconds;
            q.budget_window_seconds = old->budget_window_seconds;
            q.max_running_jobs = old->max_running_jobs;
            q.gpu_memory_bytes = old->gpu_memory_bytes;
        }
        req.quota = &q;
    }
    rc = cli_call_print(c, ADMIN, "UpdateTeam", &req.base, cli_print_team, NULL);
    if (cur)
        protobuf_c_message_free_unpacked(cur, NULL);
    return rc;
}

static int cmd_team_delete(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__DeleteTeamRequest req = FLUXION__V1__DELETE_TEAM_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    return cli_call_print(c, ADMIN, "DeleteTeam", &req.base, cli_print_done,
                          &(cli_done){"deleted", "team", a->pos[0]});
}

/* ----------------------------------------------------------------- tokens */

static const char *token_state(const Fluxion__V1__Token *t)
{
    if (t->revoked)
        return "revoked";
    if (t->expires_ms && t->expires_ms <= now_ms())
        return "expired";
    return "active";
}

static int by_token_id(const void *a, const void *b)
{
    int64_t x = (*(Fluxion__V1__Token *const *)a)->id, y = (*(Fluxion__V1__Token *const *)b)->id;
    return (x > y) - (x < y);
}

static void print_tokens(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__ListTokensResponse *l = (const Fluxion__V1__ListTokensResponse *)msg;
    if (!l->n_tokens) {
        printf("no tokens\n");
        return;
    }
    int wt = 4, wn = 4;
    for (size_t i = 0; i < l->n_tokens; i++) {
        if ((int)strlen(l->tokens[i]->team) > wt)
            wt = (int)strlen(l->tokens[i]->team);
        if ((int)strlen(l->tokens[i]->name) > wn)
            wn = (int)strlen(l->tokens[i]->name);
    }
    printf("%5s  %-*s  %-*s  %-6s  %-7s  %-20s  %-20s  %-20s  %s\n", "ID", wt, "TEAM", wn, "NAME",
           "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED", "CREATED BY");
    for (size_t i = 0; i < l->n_tokens; i++) {
        const Fluxion__V1__Token *t = l->tokens[i];
        char a[32], b[32], d[32];
        printf("%5" PRId64 "  %-*s  %-*s  %-6s  %-7s  %-20s  %-20s  %-20s  %s\n", t->id, wt,
               t->team, wn, t->name, t->role, token_state(t), cli_time(t->created_ms, a, sizeof a),
               t->expires_ms ? cli_time(t->expires_ms, b, sizeof b) : "never",
               cli_time(t->last_used_ms, d, sizeof d), *t->created_by ? t->created_by : "-");
    }
}

static const char SECRET_NOTE[] =
    "This is the only time the secret is shown: the server keeps only its hash. Store it\n"
    "now (a file readable only by you: chmod 600), and pass it with --token-file FILE,\n"
    "FLUXION_TOKEN or a context (fluxion config set-context NAME --token-file FILE).\n";

/* options: 0 --team, 1 --role, 2 --ttl, 3 --output */
static int cmd_token_create(cli_ctx *c, const cli_args *a)
{
    int rc = check_role(a->opt[1]);
    if (rc)
        return rc;
    Fluxion__V1__CreateTokenRequest req = FLUXION__V1__CREATE_TOKEN_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    if (a->opt[0])
        req.team = (char *)a->opt[0];
    req.role = (char *)a->opt[1];
    if (a->opt[2]) {
        char err[256];
        if (fxc_parse_duration(a->opt[2], &req.ttl_seconds, err, sizeof err))
            return cli_usage_error("--ttl: %s", err);
    }
    if (a->opt[3] && !*a->opt[3])
        return cli_usage_error("--output: expected a file, got an empty string");
    ProtobufCMessage *resp;
    rc = cli_unary(c, ADMIN, "CreateToken", &req.base, &resp);
    if (rc)
        return rc;
    const Fluxion__V1__CreateTokenResponse *r = (const Fluxion__V1__CreateTokenResponse *)resp;
    if (a->opt[3]) { /* the secret into a new 0600 file, nowhere else */
        char err[1024];
        size_t n = strlen(r->secret);
        char *line = fxu_strf("%s\n", r->secret);
        rc = line ? fxu_write_file_atomic(a->opt[3], line, n + 1, err, sizeof err)
                  : fxu_oom(err, sizeof err);
        if (line) {
            memset(line, 0, n);
            free(line);
        }
        if (rc) {
            protobuf_c_message_free_unpacked(resp, NULL);
            return cli_local_error("the token was created (id %" PRId64 ") but its secret could "
                                   "not be written: %s; revoke it (fluxion token revoke %" PRId64
                                   ") and create another",
                                   r->token ? r->token->id : 0, err, r->token ? r->token->id : 0);
        }
    }
    if (c->json) {
        rc = cli_print_message(c, resp);
    } else {
        /* details and the note on stderr, the secret alone on stdout
         * (`fluxion token create ... > file` keeps only the secret) */
        const Fluxion__V1__Token *t = r->token;
        char b[32];
        fflush(stdout);
        if (t)
            fprintf(stderr, "created token %" PRId64 " \"%s\" (team %s, role %s, expires %s)\n",
                    t->id, t->name, t->team, t->role,
                    t->expires_ms ? cli_time(t->expires_ms, b, sizeof b) : "never");
        if (a->opt[3])
            fprintf(stderr, "the secret is in %s (mode 0600); it is shown nowhere else\n",
                    a->opt[3]);
        else {
            fputs(SECRET_NOTE, stderr);
            printf("%s\n", r->secret);
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* options: 0 --team, 1 --all */
static int cmd_token_list(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__ListTokensRequest req = FLUXION__V1__LIST_TOKENS_REQUEST__INIT;
    if (a->opt[0])
        req.team = (char *)a->opt[0];
    req.include_revoked = a->opt[1] != NULL;
    ProtobufCMessage *resp;
    int rc = cli_unary(c, ADMIN, "ListTokens", &req.base, &resp);
    if (rc)
        return rc;
    Fluxion__V1__ListTokensResponse *l = (Fluxion__V1__ListTokensResponse *)resp;
    if (l->n_tokens > 1)
        qsort(l->tokens, l->n_tokens, sizeof *l->tokens, by_token_id);
    rc = cli_show(c, resp, print_tokens, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static void print_revoked(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__Token *t = (const Fluxion__V1__Token *)msg;
    printf("revoked token %" PRId64 " \"%s\" of team %s\n", t->id, t->name, t->team);
}

/* ID, or options 0 --team and 1 --name */
static int cmd_token_revoke(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__RevokeTokenRequest req = FLUXION__V1__REVOKE_TOKEN_REQUEST__INIT;
    if (a->npos) {
        if (a->opt[0] || a->opt[1])
            return cli_usage_error("token revoke: give an ID or --team and --name, not both");
        int rc = cli_parse_positive("token revoke ID", a->pos[0], &req.id);
        if (rc)
            return rc;
    } else {
        if (!a->opt[0] || !a->opt[1] || !*a->opt[0] || !*a->opt[1])
            return cli_usage_error("token revoke: give the token's ID, or --team T and --name N "
                                   "(fluxion token list shows them)");
        req.team = (char *)a->opt[0];
        req.name = (char *)a->opt[1];
    }
    return cli_call_print(c, ADMIN, "RevokeToken", &req.base, print_revoked, NULL);
}

/* ------------------------------------------------- certificate principals */

static void print_cert(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__CertPrincipal *p = (const Fluxion__V1__CertPrincipal *)msg;
    printf("added certificate principal \"%s\" (team %s, role %s)\n", p->subject, p->team, p->role);
}

static int by_subject(const void *a, const void *b)
{
    return strcmp((*(Fluxion__V1__CertPrincipal *const *)a)->subject,
                  (*(Fluxion__V1__CertPrincipal *const *)b)->subject);
}

static void print_certs(const ProtobufCMessage *msg, const void *arg)
{
    (void)arg;
    const Fluxion__V1__ListCertPrincipalsResponse *l =
        (const Fluxion__V1__ListCertPrincipalsResponse *)msg;
    if (!l->n_principals) {
        printf("no certificate principals\n");
        return;
    }
    int ws = 7, wt = 4;
    for (size_t i = 0; i < l->n_principals; i++) {
        if ((int)strlen(l->principals[i]->subject) > ws)
            ws = (int)strlen(l->principals[i]->subject);
        if ((int)strlen(l->principals[i]->team) > wt)
            wt = (int)strlen(l->principals[i]->team);
    }
    printf("%-*s  %-*s  %-6s  %s\n", ws, "SUBJECT", wt, "TEAM", "ROLE", "CREATED");
    for (size_t i = 0; i < l->n_principals; i++) {
        const Fluxion__V1__CertPrincipal *p = l->principals[i];
        char t[32];
        printf("%-*s  %-*s  %-6s  %s\n", ws, p->subject, wt, p->team, p->role,
               cli_time(p->created_ms, t, sizeof t));
    }
}

/* options: 0 --team, 1 --role */
static int cmd_cert_add(cli_ctx *c, const cli_args *a)
{
    int rc = check_role(a->opt[1]);
    if (rc)
        return rc;
    if (!a->opt[0] || !*a->opt[0])
        return cli_usage_error("cert add: --team is required");
    Fluxion__V1__AddCertPrincipalRequest req = FLUXION__V1__ADD_CERT_PRINCIPAL_REQUEST__INIT;
    req.subject = (char *)a->pos[0];
    req.team = (char *)a->opt[0];
    req.role = (char *)a->opt[1];
    return cli_call_print(c, ADMIN, "AddCertPrincipal", &req.base, print_cert, NULL);
}

static int cmd_cert_list(cli_ctx *c, const cli_args *a)
{
    (void)a;
    Fluxion__V1__ListCertPrincipalsRequest req = FLUXION__V1__LIST_CERT_PRINCIPALS_REQUEST__INIT;
    ProtobufCMessage *resp;
    int rc = cli_unary(c, ADMIN, "ListCertPrincipals", &req.base, &resp);
    if (rc)
        return rc;
    Fluxion__V1__ListCertPrincipalsResponse *l = (Fluxion__V1__ListCertPrincipalsResponse *)resp;
    if (l->n_principals > 1)
        qsort(l->principals, l->n_principals, sizeof *l->principals, by_subject);
    rc = cli_show(c, resp, print_certs, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_cert_remove(cli_ctx *c, const cli_args *a)
{
    Fluxion__V1__RemoveCertPrincipalRequest req = FLUXION__V1__REMOVE_CERT_PRINCIPAL_REQUEST__INIT;
    req.subject = (char *)a->pos[0];
    return cli_call_print(c, ADMIN, "RemoveCertPrincipal", &req.base, cli_print_done,
                          &(cli_done){"removed", "certificate principal", a->pos[0]});
}

/* ------------------------------------------------------------------ tables */

const cli_command cli_admin_commands[] = {
    {"whoami",
     "",
     "show who the server takes you for: principal, team, role, token expiry",
     "Works with any valid credentials (and in local mode, where every caller is the\n"
     "admin of team default). Checks a token before you use it in a script.\n",
     0,
     0,
     {{0}},
     cmd_whoami},
};
const size_t cli_n_admin_commands = sizeof cli_admin_commands / sizeof cli_admin_commands[0];

#define QUOTA_OPTS                                                                                 \
    {"display-name", 0, "TEXT", "a human-readable name"},                                          \
        {"max-models", 0, "N", "at most N models (0: the daemon's --team-max-models)"},            \
        {"max-weight-mb", 0, "N", "at most N MiB of weights, all versions (0: the default)"},      \
    {                                                                                              \
        "max-dataset-mb", 0, "N", "at most N MiB of datasets (0: the default)"                     \
    }

const cli_command cli_team_commands[] = {
    {"team create",
     "NAME [--display-name TEXT] [--max-models N] [--max-weight-mb N] ...",
     "create a team (admin)",
     "Team names: 1..63 of a-z, 0-9, '-', '_', starting with a letter or digit.\n"
     "Quotas not given are 0: the daemon's defaults (which may be no limit).\n",
     1,
     1,
     {QUOTA_OPTS},
     cmd_team_create},
    {"team list",
     "",
     "list the teams with their usage and limits (admin)",
     NULL,
     0,
     0,
     {{0}},
     cmd_team_list},
    {"team get",
     "[NAME]",
     "show a team: quotas, usage (default: your own team)",
     NULL,
     0,
     1,
     {{0}},
     cmd_team_get},
    {"team update",
     "NAME [--display-name TEXT] [--max-models N] [--max-weight-mb N] ...",
     "change a team's display name or quotas (admin)",
     "Limits not given keep their values; 0 sets a limit back to the daemon's default.\n",
     1,
     1,
     {QUOTA_OPTS},
     cmd_team_update},
    {"team quota",
     "NAME [--weight W] [--cpu-slots N] [--gpu-slots N] [--borrow-cpu-slots N] ...",
     "show or change a team's scheduling quota (admin to change)",
     "The scheduler (docs/scheduling.md) orders queued jobs by priority, then by\n"
     "their team's recent device time over its weight. A team within its nominal\n"
     "slots starts (preempting teams that borrow) within a checkpoint interval;\n"
     "borrowed slots come from idle capacity and are reclaimed first. Values not\n"
     "given keep theirs; 0 sets one back to the daemon's default (fluxiond\n"
     "--team-weight, --team-cpu-slots, --team-gpu-slots; else weight 1, no slots\n"
     "guaranteed, no budget, a window of 24 h, no limit of running jobs, no cap\n"
     "on GPU memory). A job that would take its team over --gpu-memory-gb waits\n"
     "(it preempts nothing).\n"
     "Without options: shows the team.\n",
     1,
     1,
     {{"weight", 0, "W", "fair-share weight (default 1)"},
      {"cpu-slots", 0, "N", "CPU training slots guaranteed (nominal)"},
      {"gpu-slots", 0, "N", "GPUs guaranteed (nominal)"},
      {"borrow-cpu-slots", 0, "N", "CPU slots it may borrow beyond nominal when idle"},
      {"borrow-gpu-slots", 0, "N", "GPUs it may borrow beyond nominal when idle"},
      {"budget-hours", 0, "H", "device-hours per window (0: no budget)"},
      {"budget-window-hours", 0, "H", "the budget's window (default 24)"},
      {"max-running", 0, "N", "jobs running at once (0: no limit)"},
      {"gpu-memory-gb", 0, "G",
       "GiB of GPU memory its running jobs' estimates may hold (0: no cap)"}},
     cli_cmd_team_quota},
    {"team delete",
     "NAME",
     "delete a team and its tokens (admin; refused while it owns "
     "models, datasets or jobs)",
     NULL,
     1,
     1,
     {{0}},
     cmd_team_delete},
};
const size_t cli_n_team_commands = sizeof cli_team_commands / sizeof cli_team_commands[0];

const cli_command cli_token_commands[] = {
    {"token create",
     "NAME --role ROLE [--team TEAM] [--ttl DURATION] [-o FILE]",
     "create a bearer token and print its secret, once (admin)",
     "ROLE: viewer (read, inference), member (and write its team's objects), admin\n"
     "(everything, every team). The secret goes to stdout alone (details and a note\n"
     "on stderr), or with -o FILE into a new file of mode 0600 only; --json prints\n"
     "the whole answer, secret included. DURATION: 3600, 90s, 45m, 12h, 30d, 2w\n"
     "(default: never expires).\n",
     1,
     1,
     {{"team", 0, "TEAM", "the token's team (default: default)"},
      {"role", 0, "ROLE", "admin, member or viewer (required)"},
      {"ttl", 0, "DURATION", "expires after DURATION"},
      {"output", 'o', "FILE", "write the secret to FILE (mode 0600) instead of stdout"}},
     cmd_token_create},
    {"token list",
     "[--team TEAM] [--all]",
     "list tokens (never their secrets; admin)",
     NULL,
     0,
     0,
     {{"team", 0, "TEAM", "only this team's"}, {"all", 0, NULL, "revoked tokens too"}},
     cmd_token_list},
    {"token revoke",
     "ID | --team TEAM --name NAME",
     "revoke a token: its next call fails (admin)",
     NULL,
     0,
     1,
     {{"team", 0, "TEAM", "the token's team"}, {"name", 0, "NAME", "the token's name"}},
     cmd_token_revoke},
};
const size_t cli_n_token_commands = sizeof cli_token_commands / sizeof cli_token_commands[0];

const cli_command cli_cert_commands[] = {
    {"cert add",
     "SUBJECT --team TEAM --role ROLE",
     "map a client certificate (mutual TLS) to a team and role (admin)",
     "SUBJECT: the certificate's subject as gRPC prints it (\"CN=alice,O=Example\"),\n"
     "or its common name (\"alice\"). The daemon must verify client certificates\n"
     "(fluxiond --tls-client-ca).\n",
     1,
     1,
     {{"team", 0, "TEAM", "the team (required)"},
      {"role", 0, "ROLE", "admin, member or viewer (required)"}},
     cmd_cert_add},
    {"cert list", "", "list the certificate principals (admin)", NULL, 0, 0, {{0}}, cmd_cert_list},
    {"cert remove",
     "SUBJECT",
     "remove a certificate principal (admin)",
     NULL,
     1,
     1,
     {{0}},
     cmd_cert_remove},
};
const size_t cli_n_cert_commands = sizeof cli_cert_commands / sizeof cli_cert_commands[0];
