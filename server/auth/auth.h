/*
 * auth.h - who is calling: bearer tokens and client-certificate principals
 * mapped to a principal (base/principal.h), and their administration
 * (prefix fxau_).
 *
 * Tokens. A token's secret is "fxn_" + 64 lowercase hex digits (32 bytes
 * from getrandom()); it is shown once, when created, and only its SHA-256 is
 * stored. A caller sends it as the gRPC metadata
 *   authorization: Bearer fxn_...
 * (the scheme case-insensitive). A bootstrap secret given by an operator
 * (--init-admin-token FILE, or FLUXIOND_ADMIN_TOKEN) may be any 32..256
 * visible ASCII characters.
 *
 * Constant time. fxau_authenticate hashes whatever was presented (a
 * malformed header too, at most FXAU_HEADER_MAX bytes of it), compares the
 * hash with EVERY known token's hash with CRYPTO_memcmp, without an early
 * exit, and picks the match without a branch on the secret; only then does
 * it look at revoked and expired. A failing call does the work of a passing
 * one, so the time of a call says nothing about how close a guess was.
 *
 * Cache. The tokens and certificate principals are read from the store at
 * fxau_open and kept in memory under a read-write lock (fxau_authenticate
 * takes it for reading). This module is the only writer of those tables:
 * every change below goes to the store first and then to the cache before
 * the function returns, so a revoked token fails its very next call. A
 * token's last use is kept in memory and written to the store at most once
 * a minute per token, and at fxau_close.
 *
 * Auth on or off. Authentication is on once any token or certificate
 * principal was ever created (the store's setting auth=on, never turned
 * off), or when mutual TLS is configured (fxau_open's mtls). Off ("local
 * mode"), every call is fxp_local_principal(): an admin of team default.
 *
 * Every function returns 0 or an fxs_status code with a message in err.
 * Messages never contain a secret. All functions are thread-safe.
 */
#ifndef FXAU_AUTH_H
#define FXAU_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/principal.h"
#include "store/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FXAU_SECRET_LEN 68      /* "fxn_" + 64 hex; the buffers are 69 bytes */
#define FXAU_HEADER_MAX 4096    /* an authorization value longer than this is malformed */
#define FXAU_BOOTSTRAP_MIN 32   /* an operator's bootstrap secret: 32..256 visible ASCII */
#define FXAU_BOOTSTRAP_MAX 256
#define FXAU_TOKEN_NAME_MAX 64  /* 1..64 of [A-Za-z0-9._-], first a letter or digit */
#define FXAU_SUBJECT_MAX 1024   /* a certificate principal's subject (or CN) */
#define FXAU_TOUCH_EVERY_MS 60000
#define FXAU_BOOTSTRAP_NAME "bootstrap"

typedef struct fxau_auth fxau_auth;

/* Loads the tokens and certificate principals into memory. mtls: the
 * daemon verifies client certificates (auth is then on whatever the store
 * says). The store must outlive the fxau_auth. */
int fxau_open(fxdb_store *st, bool mtls, fxau_auth **out, char *err, size_t errlen);
/* Writes the last-use times not yet stored, and frees. NULL is fine. */
void fxau_close(fxau_auth *a);
/* The setting auth=on, or mtls. */
bool fxau_enabled(const fxau_auth *a);

/* The RPC hook: rpc/ calls it once per call, before any handler.
 * authorization: the metadata value or NULL; cert_subject / cert_cn: the
 * verified client certificate's subject and common name, or NULL.
 * The peer secret first (fxau_set_peer_secret), in local mode too.
 * Local mode (not enabled): *out = fxp_local_principal(), 0.
 * Else a token wins over a certificate (a bad token is not rescued by a
 * good certificate); FXS_UNAUTHENTICATED with a message that says which of:
 * no credentials, a malformed header (not "Bearer <token>"), an unknown
 * token, a revoked token, an expired token, an unmapped certificate. */
int fxau_authenticate(fxau_auth *a, const char *authorization, const char *cert_subject,
                      const char *cert_cn, fxp_principal *out, char *err, size_t errlen);

/* The peer secret (fluxiond --peer-token-file, read and checked by
 * peers/peers.h): a call whose bearer token is this secret is the peer
 * principal (role FXP_PEER, team default, who "peer"), which may call
 * PeerService only (and nothing else may: base/principal.h FXP_PEER_ONLY).
 * It is compared in constant time (hashes, CRYPTO_memcmp), before the
 * tokens, and works in local mode too. Call once, before the server
 * starts. INVALID_ARGUMENT when secret is not 32..256 visible ASCII. */
int fxau_set_peer_secret(fxau_auth *a, const char *secret, char *err, size_t errlen);
/* True once a peer secret is set. */
bool fxau_peer_enabled(const fxau_auth *a);

/* --init-admin-token FILE. FILE exists: its content, trimmed of white space,
 * is registered as admin token "bootstrap" of team default unless a token
 * with that hash exists already (then nothing happens; a revoked one stays
 * revoked, with a warning in the log). FILE missing: a new secret is
 * written to FILE (mode 0600, atomically: FILE.tmp + rename) and
 * registered; *created = true. When another active token of team default
 * is already named "bootstrap", the name is "bootstrap-2", "-3", ...
 * INVALID_ARGUMENT when the content is not 32..256 visible ASCII. */
int fxau_bootstrap_file(fxau_auth *a, const char *path, bool *created, char *err,
                        size_t errlen);
/* The same for a secret given directly (env FLUXIOND_ADMIN_TOKEN): as an
 * existing file's content. */
int fxau_bootstrap_secret(fxau_auth *a, const char *secret, char *err, size_t errlen);

/* ------------------------------------------- administration (admins only)
 * The caller (api/) checks that the principal may manage; these functions
 * check their arguments. Records handed out (out, optional) are the
 * caller's: free one with fxau_token_rec_clear / fxau_cert_rec_clear, an
 * array with fxdb_token_recs_free / fxdb_cert_recs_free. The hash of a
 * record handed out is zeroed. */

/* A new token of team (which must exist: NOT_FOUND) with role; ttl_seconds
 * 0: no expiry. secret gets the secret, NUL-terminated (show it once).
 * by: who creates it (its `who` goes into created_by; NULL: "local").
 * INVALID_ARGUMENT for a bad name, team, role or ttl; ALREADY_EXISTS when
 * the team has an active token of that name. */
int fxau_token_create(fxau_auth *a, const fxp_principal *by, const char *team, const char *name,
                      fxp_role role, int64_t ttl_seconds, char secret[69], fxdb_token_rec *out,
                      char *err, size_t errlen);
/* Tokens by id; team NULL or "": all teams; revoked ones only when
 * include_revoked. last_used_ms is the latest known (memory or store). */
int fxau_token_list(fxau_auth *a, const char *team, bool include_revoked, fxdb_token_rec **out,
                    int *n, char *err, size_t errlen);
/* Revokes by id (id > 0; team, when given, must be the token's), or by
 * team and name (id 0: the active token of that name). Revoking a revoked
 * token is OK (out shows when it was revoked). NOT_FOUND otherwise. */
int fxau_token_revoke(fxau_auth *a, int64_t id, const char *team, const char *name,
                      fxdb_token_rec *out, char *err, size_t errlen);

/* Certificate principals: a verified client certificate whose subject is
 * exactly `subject` ("CN=alice,O=a", as the TLS layer prints it), or else
 * whose common name is `subject`, authenticates as role in team. */
int fxau_cert_add(fxau_auth *a, const char *subject, const char *team, fxp_role role,
                  fxdb_cert_rec *out, char *err, size_t errlen);
int fxau_cert_list(fxau_auth *a, fxdb_cert_rec **out, int *n, char *err, size_t errlen);
int fxau_cert_remove(fxau_auth *a, const char *subject, char *err, size_t errlen);

/* Deletes a team in the store (which refuses while the team owns objects)
 * and drops its tokens and certificate principals from the cache. */
int fxau_team_delete(fxau_auth *a, const char *team, char *err, size_t errlen);

void fxau_token_rec_clear(fxdb_token_rec *t);
void fxau_cert_rec_clear(fxdb_cert_rec *c);

/* Token names: 1..64 of [A-Za-z0-9._-], the first a letter or digit. */
bool fxau_token_name_ok(const char *name, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
