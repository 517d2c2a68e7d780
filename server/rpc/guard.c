/*
 * guard.c - who is calling, and may they: the check every routed call
 * passes once, on its handler's thread, before its request is unpacked
 * (so that nothing of an unauthenticated caller's message is parsed), and
 * the audit line of its end.
 *
 * The credentials are the "authorization" metadata (bounded) and, on a TLS
 * listener with a client CA, the subject and CN of the client certificate
 * gRPC verified during the handshake (the call's auth context). The
 * opts.auth hook maps them to a principal; then the method's access class
 * (fxr_method.access) must be one the principal's role allows.
 */
#define _GNU_SOURCE
#include "rpc/rpc_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* The most of an "authorization" value handed to the hook: a bearer token
 * is at most 256 bytes; the hook hashes at most 4096 of them. */
#define AUTHZ_MAX (4096 + 16)
#define SUBJECT_MAX 1024

/* Copies the first value of property name of ctx into buf (truncated),
 * without control characters; false when absent. */
static bool auth_property(const grpc_auth_context *ctx, const char *name, char *buf, size_t len)
{
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, name);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    if (!p || !p->value || len == 0)
        return false;
    size_t n = p->value_length < len - 1 ? p->value_length : len - 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)p->value[i] < 0x20 ? '?' : p->value[i];
    buf[n] = '\0';
    return n > 0;
}

/* "/fluxion.v1.ModelService/DeleteModel" -> "ModelService/DeleteModel":
 * the service without its package, for messages. */
static const char *short_method(const char *path)
{
    const char *slash = strchr(path + 1, '/');
    const char *start = path[0] == '/' ? path + 1 : path;
    for (const char *p = start; p && *p && p < slash; p++)
        if (*p == '.')
            start = p + 1;
    return start;
}

bool fxr__authorize(fxr_call *c)
{
    fxr_server *s = c->s;
    memset(&c->principal, 0, sizeof c->principal);
    if (c->route->access == FXP_PUBLIC) {
        /* no credentials looked at: the method sees nothing of anyone's */
        snprintf(c->principal.who, sizeof c->principal.who, "public");
    } else if (!s->opts.auth) {
        fxp_local_principal(&c->principal);
    } else {
        char authz[AUTHZ_MAX], subject[SUBJECT_MAX], cn[256];
        fxr_credentials cr = { .peer = fxr_peer(c), .method = c->path, .tls = s->tls != NULL };
        if (c->local) { /* another transport's: copied, bounded as gRPC's are */
            cr.tls = c->local_tls;
            if (c->local_cred->authorization) {
                snprintf(authz, sizeof authz, "%s", c->local_cred->authorization);
                cr.authorization = authz;
            }
        } else if (fxr_metadata(c, "authorization", authz, sizeof authz)) {
            cr.authorization = authz;
        }
        /* A certificate counts only when gRPC verified it: with a client CA
         * configured every certificate a client presents is verified in
         * the handshake (or the handshake fails), and without one none is
         * asked for. */
        if (!c->local && s->tls && s->tls->ca_file) { /* not ca_pem: a reload swaps it */
            grpc_auth_context *ctx = grpc_call_auth_context(c->call);
            if (ctx) {
                if (auth_property(ctx, GRPC_X509_SUBJECT_PROPERTY_NAME, subject, sizeof subject))
                    cr.cert_subject = subject;
                if (auth_property(ctx, GRPC_X509_CN_PROPERTY_NAME, cn, sizeof cn))
                    cr.cert_cn = cn;
                grpc_auth_context_release(ctx);
            }
        }
        char err[FXS_ERRLEN] = "";
        int rc = s->opts.auth(s->opts.auth_data, &cr, &c->principal, err, sizeof err);
        if (cr.authorization)
            OPENSSL_cleanse(authz, sizeof authz);
        if (rc != 0 || c->principal.role == FXP_ROLE_NONE) {
            /* A hook's own failure (store error) keeps its code; a principal
             * without a role is no principal. */
            fxs_status code = rc > 0 && rc <= FXS_UNAUTHENTICATED ? (fxs_status)rc
                                                                  : FXS_UNAUTHENTICATED;
            c->audit = true;
            fxr_fail(c, code, "%s", err[0] ? err : "unauthenticated: no valid credentials");
            return false;
        }
    }
    c->authed = true;
    fxp_access need = c->route->access;
    if (!fxp_allows(c->principal.role, need)) {
        c->audit = true;
        fxr_fail(c, FXS_PERMISSION_DENIED, "role '%s' may not call %s (needs %s)",
                 fxp_role_name(c->principal.role), short_method(c->path),
                 fxp_role_name(fxp_access_role(need)));
        return false;
    }
    c->audit = need == FXP_WRITE || need == FXP_MANAGE;
    return true;
}

void fxr__audit(fxr_call *c, fxs_status code, const char *msg)
{
    fxr_server *s = c->s;
    if (!c->audit || !s->opts.audit)
        return;
    s->opts.audit(s->opts.audit_data, c->authed ? &c->principal : NULL,
                  c->path ? c->path : "?", c->object ? c->object : "", code, msg ? msg : "");
}

const fxp_principal *fxr_principal(const fxr_call *call)
{
    return &call->principal;
}

void fxr_set_object(fxr_call *call, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0)
        return; /* out of memory: the audit line goes without it */
    if (n > 512)
        text[512] = '\0';
    /* It goes into a quoted logfmt value: no quotes, backslashes or
     * control characters from a caller's name. */
    for (char *p = text; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\' || (unsigned char)*p == 0x7f)
            *p = '?';
    free(call->object);
    call->object = text;
}
