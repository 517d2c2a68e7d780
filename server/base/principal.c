/*
 * principal.c - roles, access and team-scoped names (see principal.h).
 */
#include "base/principal.h"

#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "base/util.h"

const char *fxp_role_name(fxp_role r)
{
    switch (r) {
    case FXP_VIEWER: return "viewer";
    case FXP_MEMBER: return "member";
    case FXP_ADMIN: return "admin";
    case FXP_PEER: return "peer";
    default: return "none";
    }
}

fxp_role fxp_role_from_name(const char *s)
{
    if (!s)
        return FXP_ROLE_NONE;
    if (strcmp(s, "viewer") == 0)
        return FXP_VIEWER;
    if (strcmp(s, "member") == 0)
        return FXP_MEMBER;
    if (strcmp(s, "admin") == 0)
        return FXP_ADMIN;
    return FXP_ROLE_NONE;
}

const char *fxp_access_name(fxp_access a)
{
    switch (a) {
    case FXP_ANY: return "any";
    case FXP_READ: return "read";
    case FXP_INFER: return "infer";
    case FXP_WRITE: return "write";
    case FXP_MANAGE: return "manage";
    case FXP_PUBLIC: return "public";
    case FXP_PEER_ONLY: return "peer";
    default: return "unset";
    }
}

fxp_role fxp_access_role(fxp_access a)
{
    switch (a) {
    case FXP_PUBLIC: return FXP_ROLE_NONE;
    case FXP_ANY:
    case FXP_READ:
    case FXP_INFER: return FXP_VIEWER;
    case FXP_WRITE: return FXP_MEMBER;
    case FXP_MANAGE: return FXP_ADMIN;
    case FXP_PEER_ONLY: return FXP_PEER;
    default: return (fxp_role)(FXP_ADMIN + 1); /* nobody: an unset access is never allowed */
    }
}

bool fxp_allows(fxp_role r, fxp_access a)
{
    if (a == FXP_PUBLIC)
        return true;
    if (a == FXP_ACCESS_UNSET || r == FXP_ROLE_NONE)
        return false;
    /* the peer role and the peer access go only with each other */
    if (a == FXP_PEER_ONLY || r == FXP_PEER)
        return a == FXP_PEER_ONLY && r == FXP_PEER;
    return (int)r >= (int)fxp_access_role(a);
}

bool fxp_team_name_ok(const char *team, char *err, size_t errlen)
{
    size_t n = team ? strlen(team) : 0;
    if (n == 0) {
        snprintf(err, errlen, "team name is empty");
        return false;
    }
    if (n > FXP_TEAM_MAX) {
        snprintf(err, errlen, "team name is %zu bytes; at most %d", n, FXP_TEAM_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = team[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (alnum || (i > 0 && (c == '-' || c == '_')))
            continue;
        if (c >= 0x20 && c < 0x7f)
            snprintf(err, errlen, "team name '%s': '%c' at %zu is not allowed (1..%d of a-z, "
                     "0-9, '-', '_'; first a letter or digit)", team, c, i, FXP_TEAM_MAX);
        else
            snprintf(err, errlen, "team name: byte 0x%02x at %zu is not allowed (1..%d of a-z, "
                     "0-9, '-', '_'; first a letter or digit)", (unsigned char)c, i, FXP_TEAM_MAX);
        return false;
    }
    return true;
}

void fxp_local_principal(fxp_principal *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->team, sizeof p->team, "%s", FXP_DEFAULT_TEAM);
    p->role = FXP_ADMIN;
    snprintf(p->who, sizeof p->who, "local");
    p->local = true;
}

int fxp_qualify(const fxp_principal *p, const char *kind, const char *name, char *out,
                size_t outlen, char *err, size_t errlen)
{
    if (!name || !*name)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s name is empty", kind);
    const char *slash = strchr(name, '/');
    char team[FXP_TEAM_MAX + 1];
    const char *obj = name;
    if (slash) {
        if (strchr(slash + 1, '/'))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s name '%s' has more than one '/' (write NAME or TEAM/NAME)",
                            kind, name);
        size_t tn = (size_t)(slash - name);
        if (tn == 0 || tn > FXP_TEAM_MAX)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s name '%s': the team before '/' must be 1..%d bytes", kind, name,
                            FXP_TEAM_MAX);
        memcpy(team, name, tn);
        team[tn] = 0;
        char e[160];
        if (!fxp_team_name_ok(team, e, sizeof e))
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s name '%s': %s", kind, name, e);
        obj = slash + 1;
        if (!*obj)
            return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                            "%s name '%s' has nothing after '/'", kind, name);
        if (strcmp(team, p->team) != 0 && p->role != FXP_ADMIN)
            return fxu_fail(err, errlen, FXS_NOT_FOUND, "%s '%s' not found", kind, name);
    } else {
        snprintf(team, sizeof team, "%s", p->team);
    }
    int n = snprintf(out, outlen, "%s/%s", team, obj);
    if (n < 0 || (size_t)n >= outlen)
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT, "%s name '%.64s...' is too long",
                        kind, name);
    return 0;
}

bool fxp_owns(const fxp_principal *p, const char *key)
{
    if (p->role == FXP_ADMIN)
        return true;
    size_t n = strlen(p->team);
    return strncmp(key, p->team, n) == 0 && key[n] == '/';
}

const char *fxp_display(const fxp_principal *p, const char *key)
{
    if (!key)
        return "";
    size_t n = strlen(p->team);
    if (strncmp(key, p->team, n) == 0 && key[n] == '/')
        return key + n + 1;
    return key;
}

void fxp_key_team(const char *key, char *out, size_t outlen)
{
    const char *slash = key ? strchr(key, '/') : NULL;
    size_t n = slash ? (size_t)(slash - key) : 0;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, key ? key : "", n);
    out[n] = 0;
}

const char *fxp_key_name(const char *key)
{
    const char *slash = strchr(key, '/');
    return slash ? slash + 1 : key;
}
