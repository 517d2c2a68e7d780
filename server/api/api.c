/* daemon.c - helpers the services share (daemon.h). */
#include "api/api.h"

bool fxa_model_stored_or_fail(fxa_daemon *d, fxr_call *call, const char *name)
{
    char err[1024];
    fxdb_model_rec rec;
    int rc = fxdb_store_get_model(d->store, name, &rec, err, sizeof err);
    if (rc) {
        fxr_fail(call, rc, "%s", err);
        return false;
    }
    fxdb_model_rec_free(&rec);
    return true;
}
