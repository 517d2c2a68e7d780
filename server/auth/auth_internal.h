/*
 * auth_internal.h - internal to auth/ (and its unit test): the cache and the
 * helpers that auth.c (authentication, the cache) and admin.c (tokens,
 * certificate principals, bootstrap) share. Internal names carry a double
 * underscore (fxau__).
 */
#ifndef FXAU_AUTH_INTERNAL_H
#define FXAU_AUTH_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "auth/auth.h"

/* One token in memory. Its hash lives in fxau_auth.hashes at the same index
 * (the compare loop reads one dense array). */
typedef struct {
    int64_t id;
    char team[FXP_TEAM_MAX + 1];
    char name[FXAU_TOKEN_NAME_MAX + 1];
    fxp_role role;               /* FXP_ROLE_NONE: the stored role is unknown */
    int64_t expires_ms;          /* 0: none */
    int64_t revoked_ms;          /* 0: active */
    _Atomic int64_t last_used_ms;
    _Atomic int64_t stored_ms;   /* the last use written to the store */
} fxau__token;

typedef struct {
    char *subject;
    char team[FXP_TEAM_MAX + 1];
    fxp_role role;
} fxau__cert;

struct fxau_auth {
    fxdb_store *st;
    bool mtls;
    atomic_bool on;              /* the store's setting auth=on */
    /* Serializes the writers (store change + reload), so that two reloads
     * cannot swap in an older snapshot after a newer one. */
    pthread_mutex_t admin_mu;
    pthread_rwlock_t lock;       /* guards the arrays below */
    unsigned char (*hashes)[32];
    fxau__token *tokens;         /* by id, ascending */
    int ntokens;
    fxau__cert *certs;
    int ncerts;
    /* Tests: how many hashes the compare loops have visited in all. */
    _Atomic uint64_t compares;
    /* The daemons' shared secret (fxau_set_peer_secret): its SHA-256. Set
     * once before the server starts, read-only after. */
    bool peer_set;
    unsigned char peer_hash[32];
};

/* SHA-256 of data (OpenSSL). */
void fxau__sha256(const void *data, size_t len, unsigned char out[32]);

/* Re-reads the tokens and certificate principals from the store and swaps
 * them in (last-use times in memory are kept). Caller holds admin_mu. */
int fxau__reload(fxau_auth *a, char *err, size_t errlen);

/* Tests only: puts a token into the cache without the store (for a cache
 * of thousands); its last use is never written. */
int fxau__cache_add(fxau_auth *a, const unsigned char hash[32], int64_t id, const char *team,
                    const char *name, fxp_role role, int64_t expires_ms, int64_t revoked_ms);
uint64_t fxau__compare_count(fxau_auth *a);

#endif
