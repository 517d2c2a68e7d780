/*
 * svc_admin.c - fluxion.v1.AdminService: teams, their tokens and
 * certificate principals, and WhoAmI. The tokens' secrets and the cache
 * that checks them are auth/'s; the teams' rows are the store's.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "auth/auth.h"
#include "base/log.h"
#include "base/pbarena.h"
#include "fluxion/v1/admin.pb-c.h"
#include "sched/sched.h"

#define MAX_DISPLAY_NAME 256
#define MAX_SUBJECT 1024 /* a certificate's subject as gRPC prints it */

static void whoami(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    (void)msg;
    fxa_daemon *d = data;
    const fxp_principal *p = fxr_principal(call);
    Fluxion__V1__WhoAmIResponse r = FLUXION__V1__WHO_AM_IRESPONSE__INIT;
    r.team = (char *)p->team;
    r.role = (char *)fxp_role_name(p->role);
    r.principal = (char *)p->who;
    r.token_id = p->token_id;
    r.expires_ms = p->expires_ms;
    r.local_mode = p->local || !d->auth || !fxau_enabled(d->auth);
    r.tls = fxr_call_tls(call);
    fxr_reply(call, &r.base);
}

/* ------------------------------------------------------------- teams */

static Fluxion__V1__TeamQuota *quota_msg(pba *a, const fxdb_quota *q)
{
    Fluxion__V1__TeamQuota *m = PBA_NEW(a, Fluxion__V1__TeamQuota, fluxion__v1__team_quota__init);
    if (m) {
        m->max_models = q->max_models;
        m->max_weight_bytes = q->max_weight_bytes;
        m->max_dataset_bytes = q->max_dataset_bytes;
        m->weight = q->weight;
        m->cpu_slots = q->cpu_slots;
        m->gpu_slots = q->gpu_slots;
        m->borrow_cpu_slots = q->borrow_cpu_slots;
        m->borrow_gpu_slots = q->borrow_gpu_slots;
        m->budget_device_seconds = q->budget_device_seconds;
        m->budget_window_seconds = q->budget_window_seconds;
        m->max_running_jobs = q->max_running_jobs;
        m->gpu_memory_bytes = q->gpu_memory_bytes;
    }
    return m;
}

static fxdb_quota quota_from(const Fluxion__V1__TeamQuota *m)
{
    fxdb_quota q = { 0 };
    if (m) {
        q.max_models = m->max_models;
        q.max_weight_bytes = m->max_weight_bytes;
        q.max_dataset_bytes = m->max_dataset_bytes;
        q.weight = m->weight;
        q.cpu_slots = m->cpu_slots;
        q.gpu_slots = m->gpu_slots;
        q.borrow_cpu_slots = m->borrow_cpu_slots;
        q.borrow_gpu_slots = m->borrow_gpu_slots;
        q.budget_device_seconds = m->budget_device_seconds;
        q.budget_window_seconds = m->budget_window_seconds;
        q.max_running_jobs = m->max_running_jobs;
        q.gpu_memory_bytes = m->gpu_memory_bytes;
    }
    return q;
}

/* After an admin created or changed a team: the scheduler takes its new
 * quota at once (queued jobs may start, running ones be reclaimed). */
static void sched_team_changed(fxa_daemon *d, const char *team)
{
    if (d->jobs)
        fxj_jobs_team_changed(d->jobs, team);
}

/* A Team message: the row, what applies, what is used. */
static Fluxion__V1__Team *team_msg(pba *a, fxdb_store *st, const fxdb_team_rec *t, char *err,
                                   size_t errlen, int *rc)
{
    fxdb_quota eff;
    fxdb_usage u;
    if ((*rc = fxdb_team_effective_quota(st, t->name, &eff, err, errlen)) != 0 ||
        (*rc = fxdb_team_usage(st, t->name, &u, err, errlen)) != 0)
        return NULL;
    Fluxion__V1__Team *m = PBA_NEW(a, Fluxion__V1__Team, fluxion__v1__team__init);
    Fluxion__V1__TeamUsage *um = PBA_NEW(a, Fluxion__V1__TeamUsage,
                                         fluxion__v1__team_usage__init);
    if (!m || !um) {
        *rc = fxu_fail(err, errlen, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
        return NULL;
    }
    m->name = pba_strdup(a, t->name);
    m->display_name = pba_strdup(a, t->display_name ? t->display_name : "");
    m->created_ms = t->created_ms;
    m->quota = quota_msg(a, &t->quota);
    m->effective_quota = quota_msg(a, &eff);
    um->models = u.models;
    um->weight_bytes = u.weight_bytes;
    um->dataset_bytes = u.dataset_bytes;
    m->usage = um;
    return m;
}

static void reply_team(fxr_call *call, fxa_daemon *d, const char *name)
{
    char err[FXS_ERRLEN];
    fxdb_team_rec t;
    int rc = fxdb_team_get(d->store, name, &t, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    pba a = { 0 };
    Fluxion__V1__Team *m = team_msg(&a, d->store, &t, err, sizeof err, &rc);
    if (!m || a.failed)
        fxr_fail(call, rc ? rc : FXS_RESOURCE_EXHAUSTED, "%s", rc ? err : "out of memory");
    else
        fxr_reply(call, &m->base);
    pba_free(&a);
    fxdb_team_rec_free(&t);
}

static bool team_name_or_fail(fxr_call *call, const char *name)
{
    char err[FXS_ERRLEN];
    fxr_set_object(call, "team %s", name ? name : "");
    if (!fxp_team_name_ok(name, err, sizeof err)) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "name: %s", err);
        return false;
    }
    return true;
}

static bool display_name_or_fail(fxr_call *call, const char *s)
{
    if (s && strlen(s) > MAX_DISPLAY_NAME) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "display_name: %zu bytes; at most %d", strlen(s),
                 MAX_DISPLAY_NAME);
        return false;
    }
    return true;
}

static void create_team(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__CreateTeamRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    if (!team_name_or_fail(call, req->name) || !display_name_or_fail(call, req->display_name))
        return;
    fxdb_quota q = quota_from(req->quota);
    int rc = fxdb_team_create(d->store, req->name, req->display_name, &q, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    sched_team_changed(d, req->name);
    reply_team(call, d, req->name);
}

/* A caller's own team, or (an admin) any: another team is NOT_FOUND. */
static void get_team(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    const Fluxion__V1__GetTeamRequest *req = (const void *)msg;
    const fxp_principal *p = fxr_principal(call);
    const char *name = req->name[0] ? req->name : p->team;
    if (!team_name_or_fail(call, name))
        return;
    if (p->role != FXP_ADMIN && strcmp(name, p->team) != 0) {
        fxr_fail(call, FXS_NOT_FOUND, "team '%s' not found", name);
        return;
    }
    reply_team(call, data, name);
}

static void list_teams(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    (void)msg;
    fxa_daemon *d = data;
    char err[FXS_ERRLEN];
    fxdb_team_rec *ts = NULL;
    int n = 0, rc = fxdb_team_list(d->store, &ts, &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    pba a = { 0 };
    Fluxion__V1__ListTeamsResponse r = FLUXION__V1__LIST_TEAMS_RESPONSE__INIT;
    r.teams = pba_array(&a, (size_t)n, sizeof *r.teams);
    for (int i = 0; r.teams && !rc && i < n; i++) {
        Fluxion__V1__Team *m = team_msg(&a, d->store, &ts[i], err, sizeof err, &rc);
        if (m)
            r.teams[r.n_teams++] = m;
    }
    if (rc || a.failed)
        fxr_fail(call, rc ? rc : FXS_RESOURCE_EXHAUSTED, "%s", rc ? err : "out of memory");
    else
        fxr_reply(call, &r.base);
    pba_free(&a);
    for (int i = 0; i < n; i++)
        fxdb_team_rec_free(&ts[i]);
    free(ts);
}

static void update_team(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__UpdateTeamRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    if (!team_name_or_fail(call, req->name) || !display_name_or_fail(call, req->display_name))
        return;
    fxdb_quota q = quota_from(req->quota);
    int rc = fxdb_team_update(d->store, req->name, req->display_name, req->quota ? &q : NULL,
                              err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    if (req->quota)
        sched_team_changed(d, req->name);
    reply_team(call, d, req->name);
}

static void delete_team(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__DeleteTeamRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    if (!team_name_or_fail(call, req->name))
        return;
    int rc = fxau_team_delete(d->auth, req->name, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__DeleteTeamResponse r = FLUXION__V1__DELETE_TEAM_RESPONSE__INIT;
    fxr_reply(call, &r.base);
}

/* ------------------------------------------------------------ tokens */

static void token_msg(Fluxion__V1__Token *m, const fxdb_token_rec *t)
{
    fluxion__v1__token__init(m);
    m->id = t->id;
    m->team = t->team ? t->team : "";
    m->name = t->name ? t->name : "";
    m->role = t->role ? t->role : "";
    m->created_ms = t->created_ms;
    m->expires_ms = t->expires_ms;
    m->last_used_ms = t->last_used_ms;
    m->revoked = t->revoked_ms != 0;
    m->revoked_ms = t->revoked_ms;
    m->created_by = t->created_by ? t->created_by : "";
}

static bool role_or_fail(fxr_call *call, const char *s, fxp_role *role)
{
    *role = fxp_role_from_name(s);
    if (*role == FXP_ROLE_NONE) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "role: '%.64s' is not one of admin, member, viewer",
                 s ? s : "");
        return false;
    }
    return true;
}

static void create_token(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__CreateTokenRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    const char *team = req->team[0] ? req->team : FXP_DEFAULT_TEAM;
    fxp_role role;
    if (!team_name_or_fail(call, team) || !role_or_fail(call, req->role, &role))
        return;
    fxr_set_object(call, "token %s/%s", team, req->name);
    if (!fxau_token_name_ok(req->name, err, sizeof err)) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "name: %s", err);
        return;
    }
    if (req->ttl_seconds < 0) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "ttl_seconds: %lld is negative (0: never expires)",
                 (long long)req->ttl_seconds);
        return;
    }
    char secret[69];
    fxdb_token_rec t = { 0 };
    int rc = fxau_token_create(d->auth, fxr_principal(call), team, req->name, role,
                               req->ttl_seconds, secret, &t, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__Token tm;
    token_msg(&tm, &t);
    Fluxion__V1__CreateTokenResponse r = FLUXION__V1__CREATE_TOKEN_RESPONSE__INIT;
    r.token = &tm;
    r.secret = secret;
    fxr_reply(call, &r.base);
    memset(secret, 0, sizeof secret);
    fxau_token_rec_clear(&t);
}

static void list_tokens(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__ListTokensRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    if (req->team[0] && !team_name_or_fail(call, req->team))
        return;
    fxdb_token_rec *ts = NULL;
    int n = 0;
    int rc = fxau_token_list(d->auth, req->team[0] ? req->team : NULL, req->include_revoked, &ts,
                             &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__Token *ms = calloc((size_t)n + 1, sizeof *ms);
    Fluxion__V1__Token **ps = calloc((size_t)n + 1, sizeof *ps);
    Fluxion__V1__ListTokensResponse r = FLUXION__V1__LIST_TOKENS_RESPONSE__INIT;
    if (!ms || !ps) {
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    } else {
        for (int i = 0; i < n; i++) {
            token_msg(&ms[i], &ts[i]);
            ps[i] = &ms[i];
        }
        r.tokens = ps;
        r.n_tokens = (size_t)n;
        fxr_reply(call, &r.base);
    }
    free(ms);
    free(ps);
    fxdb_token_recs_free(ts, n);
}

static void revoke_token(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__RevokeTokenRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    if (req->id <= 0 && !req->name[0]) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "give the token's id, or its team and name");
        return;
    }
    if (req->id > 0)
        fxr_set_object(call, "token %lld", (long long)req->id);
    else
        fxr_set_object(call, "token %s/%s", req->team[0] ? req->team : FXP_DEFAULT_TEAM,
                       req->name);
    fxdb_token_rec t = { 0 };
    const char *team = req->team[0] ? req->team : req->id > 0 ? NULL : FXP_DEFAULT_TEAM;
    int rc = fxau_token_revoke(d->auth, req->id, team, req->name, &t, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__Token tm;
    token_msg(&tm, &t);
    fxr_reply(call, &tm.base);
    fxau_token_rec_clear(&t);
}

/* ----------------------------------------------- certificate principals */

static void cert_msg(Fluxion__V1__CertPrincipal *m, const fxdb_cert_rec *c)
{
    fluxion__v1__cert_principal__init(m);
    m->subject = c->subject ? c->subject : "";
    m->team = c->team ? c->team : "";
    m->role = c->role ? c->role : "";
    m->created_ms = c->created_ms;
}

static void add_cert(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__AddCertPrincipalRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    const char *team = req->team[0] ? req->team : FXP_DEFAULT_TEAM;
    fxp_role role;
    fxr_set_object(call, "cert %s", req->subject);
    if (!req->subject[0]) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "subject: empty (a certificate subject such as "
                 "\"CN=alice,O=Example\", or a common name)");
        return;
    }
    if (strlen(req->subject) > MAX_SUBJECT) {
        fxr_fail(call, FXS_INVALID_ARGUMENT, "subject: %zu bytes; at most %d",
                 strlen(req->subject), MAX_SUBJECT);
        return;
    }
    if (!team_name_or_fail(call, team) || !role_or_fail(call, req->role, &role))
        return;
    fxdb_cert_rec c = { 0 };
    int rc = fxau_cert_add(d->auth, req->subject, team, role, &c, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__CertPrincipal m;
    cert_msg(&m, &c);
    fxr_reply(call, &m.base);
    fxau_cert_rec_clear(&c);
}

static void list_certs(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    (void)msg;
    fxa_daemon *d = data;
    char err[FXS_ERRLEN];
    fxdb_cert_rec *cs = NULL;
    int n = 0, rc = fxau_cert_list(d->auth, &cs, &n, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__CertPrincipal *ms = calloc((size_t)n + 1, sizeof *ms);
    Fluxion__V1__CertPrincipal **ps = calloc((size_t)n + 1, sizeof *ps);
    Fluxion__V1__ListCertPrincipalsResponse r = FLUXION__V1__LIST_CERT_PRINCIPALS_RESPONSE__INIT;
    if (!ms || !ps) {
        fxr_fail(call, FXS_RESOURCE_EXHAUSTED, "out of memory building the reply");
    } else {
        for (int i = 0; i < n; i++) {
            cert_msg(&ms[i], &cs[i]);
            ps[i] = &ms[i];
        }
        r.principals = ps;
        r.n_principals = (size_t)n;
        fxr_reply(call, &r.base);
    }
    free(ms);
    free(ps);
    fxdb_cert_recs_free(cs, n);
}

static void remove_cert(fxr_call *call, const ProtobufCMessage *msg, void *data)
{
    fxa_daemon *d = data;
    const Fluxion__V1__RemoveCertPrincipalRequest *req = (const void *)msg;
    char err[FXS_ERRLEN];
    fxr_set_object(call, "cert %s", req->subject);
    int rc = fxau_cert_remove(d->auth, req->subject, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return;
    }
    Fluxion__V1__RemoveCertPrincipalResponse r = FLUXION__V1__REMOVE_CERT_PRINCIPAL_RESPONSE__INIT;
    fxr_reply(call, &r.base);
}

int fxa_register_admin_service(fxa_daemon *d)
{
    static const fxr_method methods[] = {
        { "WhoAmI", FXR_UNARY, FXP_ANY, whoami },
        { "CreateTeam", FXR_UNARY, FXP_MANAGE, create_team },
        { "GetTeam", FXR_UNARY, FXP_READ, get_team },
        { "ListTeams", FXR_UNARY, FXP_MANAGE, list_teams },
        { "UpdateTeam", FXR_UNARY, FXP_MANAGE, update_team },
        { "DeleteTeam", FXR_UNARY, FXP_MANAGE, delete_team },
        { "CreateToken", FXR_UNARY, FXP_MANAGE, create_token },
        { "ListTokens", FXR_UNARY, FXP_MANAGE, list_tokens },
        { "RevokeToken", FXR_UNARY, FXP_MANAGE, revoke_token },
        { "AddCertPrincipal", FXR_UNARY, FXP_MANAGE, add_cert },
        { "ListCertPrincipals", FXR_UNARY, FXP_MANAGE, list_certs },
        { "RemoveCertPrincipal", FXR_UNARY, FXP_MANAGE, remove_cert },
    };
    return fxr_server_add_service(d->rpc, &fluxion__v1__admin_service__descriptor, methods,
                                  (int)(sizeof methods / sizeof methods[0]), d);
}
