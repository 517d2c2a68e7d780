/*
 * principal.h - who is calling, and what a role may do (prefix fxp_). Shared
 * by rpc/ (which authenticates every call once, before any handler, and
 * checks the method's access against the role), auth/ (which maps a token
 * or a client certificate to a principal) and api/ (which scopes every
 * object name to the caller's team). Pure functions, no state.
 *
 * Ownership. Every model, dataset, job and served model belongs to a team.
 * Inside the daemon an object is named by its KEY, "team/name" (team names
 * never contain '/', object names never do): that key is what the store,
 * the served models, the batcher and the jobs use, so names are unique per
 * team and team a's "mlp" is not team b's. A caller writes names as
 *   "mlp"      its own team's object;
 *   "b/mlp"    team b's object: only an admin, or a member of b, reaches it;
 *              for anyone else it does not exist (NOT_FOUND, as for a name
 *              that is not there: existence does not leak).
 * and sees names the same way (fxp_display): its own team's without the
 * prefix, other teams' (an admin's view) with it.
 *
 * Roles: viewer (read its team's objects, and inference), member (viewer,
 * and write its team's objects), admin (everything, in every team, and the
 * teams and tokens themselves).
 */
#ifndef FXP_PRINCIPAL_H
#define FXP_PRINCIPAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FXP_ROLE_NONE = 0,
    FXP_VIEWER = 1,
    FXP_MEMBER = 2,
    FXP_ADMIN = 3,
    /* Another fluxiond (its --peer-token-file secret, auth/auth.h): may
     * call PeerService and nothing else; no token can be given this role.
     * Out of the viewer < member < admin order on purpose. */
    FXP_PEER = 8,
} fxp_role;

/* What a method needs. Every registered method states one (0 is refused at
 * registration, so none is left open by omission). */
typedef enum {
    FXP_ACCESS_UNSET = 0,
    FXP_ANY,     /* any authenticated principal (WhoAmI, ServerLive, ...) */
    FXP_READ,    /* viewer and up: read the team's objects */
    FXP_INFER,   /* viewer and up: run the team's served models */
    FXP_WRITE,   /* member and up: create, change, delete the team's objects */
    FXP_MANAGE,  /* admin only: teams, tokens, certificate principals */
    FXP_PUBLIC,  /* no credentials needed (grpc.health.v1: probes carry none);
                  * such a method sees no object and changes nothing */
    FXP_PEER_ONLY, /* the peer principal only (PeerService): no other role,
                    * an admin neither */
} fxp_access;

#define FXP_TEAM_MAX 63     /* team name: 1..63 of [a-z0-9_-], first a letter or digit */
#define FXP_WHO_MAX 191
#define FXP_KEY_MAX 256     /* "team/name": 63 + 1 + 128, and room */
#define FXP_DEFAULT_TEAM "default"

typedef struct {
    char team[FXP_TEAM_MAX + 1]; /* the caller's team */
    fxp_role role;
    /* For logs and WhoAmI: "token:ci-bot" (a token's name), "cert:CN=alice,O=a"
     * (a certificate's subject), "local" (local mode: no auth configured). */
    char who[FXP_WHO_MAX + 1];
    int64_t token_id;    /* 0 unless a token */
    int64_t expires_ms;  /* the token's expiry, 0: none */
    bool local;          /* local mode: no authentication configured */
} fxp_principal;

const char *fxp_role_name(fxp_role r);          /* "viewer", ...; "none" */
fxp_role fxp_role_from_name(const char *s);     /* FXP_ROLE_NONE when unknown */
const char *fxp_access_name(fxp_access a);      /* "read", "write", ... */
/* The least role that has the access. */
fxp_role fxp_access_role(fxp_access a);
/* True when the role may use a method of that access. */
bool fxp_allows(fxp_role r, fxp_access a);

/* Team names: 1..63 of [a-z0-9_-], first a letter or digit. Returns true,
 * or false with a message naming what is wrong. */
bool fxp_team_name_ok(const char *team, char *err, size_t errlen);

/* The principal of local mode (no authentication configured): an admin of
 * the default team, who "local". */
void fxp_local_principal(fxp_principal *p);

/* Name as the caller wrote it -> key ("team/name") in out. kind ("model",
 * "dataset") goes into the messages. Returns 0, or FXS_INVALID_ARGUMENT
 * (empty name, more than one '/', a bad team name, a key longer than out),
 * FXS_NOT_FOUND for another team's name when the caller is not an admin
 * ("model 'b/mlp' not found": the same words as for a missing object). The
 * object name itself is the store's to check. */
int fxp_qualify(const fxp_principal *p, const char *kind, const char *name, char *out,
                size_t outlen, char *err, size_t errlen);

/* True when the caller may see the object of this key (its own team's, or
 * any for an admin). */
bool fxp_owns(const fxp_principal *p, const char *key);

/* The key as the caller should see it: its own team's without "team/",
 * others' whole. Returns a pointer into key. */
const char *fxp_display(const fxp_principal *p, const char *key);

/* The team of a key, copied into out (FXP_TEAM_MAX + 1); "" when the key
 * has no '/'. */
void fxp_key_team(const char *key, char *out, size_t outlen);
/* The name part of a key (a pointer into it; the key itself when no '/'). */
const char *fxp_key_name(const char *key);

#ifdef __cplusplus
}
#endif
#endif
