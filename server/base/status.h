/*
 * status.h - the one error vocabulary of Fluxion's daemon and clients.
 *
 * The codes are gRPC's status codes (same numbers as grpc_status_code), so a
 * module's result goes on the wire unchanged, but nothing here needs gRPC:
 * the domain modules (store, models, serving, datasets, training) include
 * this header, never rpc/rpc.h. The clients (clients/common) compile
 * status.c too, so the daemon and the CLI share one table of names.
 *
 * The error contract of every server module API: a function that can fail
 * returns 0 (FXS_OK) or an fxs_status code, and writes a message a person
 * can act on into the caller's `char *err, size_t errlen` (see base/util.h:
 * fxu_fail). No module API returns -1; out of memory is
 * FXS_RESOURCE_EXHAUSTED, a full disk too.
 */
#ifndef FXS_STATUS_H
#define FXS_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Error messages: buffers for an err of a module API are FXS_ERRLEN bytes. */
#define FXS_ERRLEN 1024

typedef enum {
    FXS_OK = 0,
    FXS_CANCELLED = 1,
    FXS_UNKNOWN = 2,
    FXS_INVALID_ARGUMENT = 3,
    FXS_DEADLINE_EXCEEDED = 4,
    FXS_NOT_FOUND = 5,
    FXS_ALREADY_EXISTS = 6,
    FXS_PERMISSION_DENIED = 7,
    FXS_RESOURCE_EXHAUSTED = 8,
    FXS_FAILED_PRECONDITION = 9,
    FXS_ABORTED = 10,
    FXS_OUT_OF_RANGE = 11,
    FXS_UNIMPLEMENTED = 12,
    FXS_INTERNAL = 13,
    FXS_UNAVAILABLE = 14,
    FXS_DATA_LOSS = 15,
    FXS_UNAUTHENTICATED = 16,
} fxs_status;

/* "INVALID_ARGUMENT", ...; "UNKNOWN_CODE" outside the table. */
const char *fxs_status_name(int code);

/* The code from its name ("NOT_FOUND" -> 5); -1 for an unknown name. */
int fxs_status_from_name(const char *name);

#ifdef __cplusplus
}
#endif

#endif
