/*
 * scope.c - what the caller may see: the names a caller writes become the
 * keys the domain modules use ("team/name", base/principal.h), and keys
 * become the names the caller sees. Every handler goes through these, so a
 * member of another team meets NOT_FOUND exactly where a missing object
 * would be.
 */
#include <stdio.h>
#include <string.h>

#include "api/api.h"

bool fxa_key(fxr_call *call, const char *kind, const char *name, char *key, size_t keylen)
{
    char err[FXS_ERRLEN];
    const fxp_principal *p = fxr_principal(call);
    int rc = fxp_qualify(p, kind, name, key, keylen, err, sizeof err);
    if (rc == 0) {
        /* the object part follows the model names' rules (datasets' too) */
        char e[FXS_ERRLEN];
        if (!fxdb_model_name_ok(fxp_key_name(key), e, sizeof e)) {
            const char *rest = strncmp(e, "model name", 10) == 0 ? e + 10 : e;
            rc = fxu_fail(err, sizeof err, FXS_INVALID_ARGUMENT, "%s name%s", kind, rest);
        }
    }
    if (rc) {
        fxr_set_object(call, "%s %s", kind, name ? name : "");
        fxr_fail(call, rc, "%s", err);
        return false;
    }
    fxr_set_object(call, "%s %s", kind, key);
    return true;
}

const char *fxa_show(const fxr_call *call, const char *key)
{
    return fxp_display(fxr_principal(call), key);
}

bool fxa_sees(const fxr_call *call, const char *key)
{
    return key && fxp_owns(fxr_principal(call), key);
}

const char *fxa_list_team(const fxr_call *call)
{
    const fxp_principal *p = fxr_principal(call);
    return p->role == FXP_ADMIN ? NULL : p->team;
}

void fxa_show_in_place(const fxr_call *call, char *key)
{
    if (!key)
        return;
    const char *s = fxa_show(call, key);
    if (s != key)
        memmove(key, s, strlen(s) + 1);
}
