/*
 * status.c - names of the status codes (base/status.h), shared by the
 * daemon and the clients.
 */
#include "status.h"

#include <string.h>

static const char *const status_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

#define N_STATUS ((int)(sizeof status_names / sizeof *status_names))

const char *fxs_status_name(int code)
{
    if (code < 0 || code >= N_STATUS)
        return "UNKNOWN_CODE";
    return status_names[code];
}

int fxs_status_from_name(const char *name)
{
    for (int i = 0; name && i < N_STATUS; i++)
        if (strcmp(name, status_names[i]) == 0)
            return i;
    return -1;
}
