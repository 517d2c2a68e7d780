/* daemon.c - helpers the services share (daemon.h). */
#include "daemon.h"

bool fxd_model_stored_or_fail(fxd_daemon *d, fxs_call *call, const char *name)
{
    char err[1024];
    fxs_model_rec rec;
    int rc = fxs_store_get_model(d->store, name, &rec, err, sizeof err);
    if (rc) {
        fxs_fail(call, rc, "%s", err);
        return false;
    }
    fxs_model_rec_free(&rec);
    return true;
}
