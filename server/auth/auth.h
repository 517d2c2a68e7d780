/*
 * auth.h - TEMPORARY STUB of H2's server/auth/auth.h (helper H3, branch
 * h/rpc), so that main.c compiles and runs before H2 and H1 are merged.
 * THE LEAD DROPS THIS FILE AND auth_stub.c AT THE MERGE: H2's auth.h
 * declares the real API (a superset of this), and H1's store/store.h has
 * fxdb_quota and fxdb_store_set_default_quota.
 *
 * Only what main.c uses is declared here, with H2's signatures.
 */
#ifndef FXAU_AUTH_H
#define FXAU_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/principal.h"
#include "store/store.h"

/* ---- from H1's store.h (stub: fxdb_store_set_default_quota does nothing) */
typedef struct { uint64_t max_models, max_weight_bytes, max_dataset_bytes; } fxdb_quota;
void fxdb_store_set_default_quota(fxdb_store *st, const fxdb_quota *q);

/* ---- from H2's auth.h */
typedef struct fxau_auth fxau_auth;
int fxau_open(fxdb_store *st, bool mtls, fxau_auth **out, char *err, size_t errlen);
void fxau_close(fxau_auth *a);
bool fxau_enabled(const fxau_auth *a);
int fxau_authenticate(fxau_auth *a, const char *authorization, const char *cert_subject,
                      const char *cert_cn, fxp_principal *out, char *err, size_t errlen);
int fxau_bootstrap_file(fxau_auth *a, const char *path, bool *created, char *err,
                        size_t errlen);
int fxau_bootstrap_secret(fxau_auth *a, const char *secret, char *err, size_t errlen);

#endif
