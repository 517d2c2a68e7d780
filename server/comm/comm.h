/*
 * comm.h - collectives for data-parallel training (prefix fxcm_): allreduce
 * (sum) of f32 buffers, broadcast, barrier and abort among the ranks of one
 * world, on existing collective engines: Gloo for host memory (its C++ API
 * behind one extern "C" file, gloo.cpp), NCCL for CUDA device memory (built
 * when nccl.h is found, like the CUDA backend). No home-made collectives.
 *
 * A world forms through a rendezvous store (fxcm_store): a key-value store
 * every rank reaches. In one process that is fxcm_memstore (tests, several
 * ranks of one daemon); across daemons the coordinating daemon's peer
 * service serves the same memstore (server/peers/).
 *
 * Operations run in the order they were started, on the comm's own thread
 * (Gloo) or stream (NCCL); every rank must start the same sequence.
 * Starting and waiting make no heap allocation (a fixed ring of
 * FXCM_MAX_PENDING operations), so a training step stays allocation-free.
 *
 * Errors (base/status.h codes, message in err): UNAVAILABLE when a peer is
 * gone (connection closed or reset), DEADLINE_EXCEEDED when an operation or
 * the rendezvous outlives timeout_ms, ABORTED after fxcm_abort (or after an
 * earlier failure: a comm that failed once fails every later operation at
 * once), INVALID_ARGUMENT for bad arguments, UNIMPLEMENTED for a backend
 * not built in. No operation ever waits longer than timeout_ms.
 */
#ifndef FXCM_COMM_H
#define FXCM_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FXCM_MAX_PENDING 256

typedef enum { FXCM_GLOO = 1, FXCM_NCCL = 2 } fxcm_backend;

/* The rendezvous. Thread-safe. Values are bytes. */
typedef struct {
    /* 0 or a status code */
    int (*set)(void *data, const char *key, const void *val, size_t len, char *err,
               size_t errlen);
    /* Waits up to timeout_ms for key to exist; *val is malloc'ed (caller
     * frees). DEADLINE_EXCEEDED when it does not appear in time. */
    int (*get)(void *data, const char *key, void **val, size_t *len, int64_t timeout_ms,
               char *err, size_t errlen);
    void *data;
} fxcm_store;

/* An in-process store (thread-safe, blocking get with a timeout). */
typedef struct fxcm_memstore fxcm_memstore;
fxcm_memstore *fxcm_memstore_new(void);
void fxcm_memstore_free(fxcm_memstore *m);
/* The store interface over m (valid while m lives). */
fxcm_store fxcm_memstore_store(fxcm_memstore *m);
/* Forgets every key that starts with prefix (a world that ended). */
void fxcm_memstore_drop_prefix(fxcm_memstore *m, const char *prefix);

typedef struct {
    fxcm_backend backend;
    int rank, world;       /* 0 <= rank < world */
    /* Unique per world (a job's id and attempt: "job-12/3"): every key this
     * world writes starts with it. */
    const char *prefix;
    const fxcm_store *store;
    int64_t timeout_ms;    /* rendezvous and each operation; 0: 60 s */
    /* GLOO: the address this rank listens on for its peers (an IP or a host
     * name the others resolve); NULL or "": 127.0.0.1 */
    const char *bind_host;
    int cuda_device;       /* NCCL: the device of this rank's buffers */
} fxcm_opts;

/* Whether the backend was built in. */
bool fxcm_available(fxcm_backend b);
const char *fxcm_backend_name(fxcm_backend b); /* "gloo", "nccl" */
/* "gloo" / "nccl" -> backend; 0 when unknown. */
fxcm_backend fxcm_backend_parse(const char *name);

typedef struct fxcm_comm fxcm_comm;

/* Forms the world: every rank calls it with the same prefix, world and
 * backend. Returns 0 and *out, or a status code with err set. */
int fxcm_open(const fxcm_opts *o, fxcm_comm **out, char *err, size_t errlen);

/* In-place sum over the ranks of n floats at buf (host memory for GLOO,
 * device memory for NCCL). *ticket identifies the operation for
 * fxcm_wait. buf must stay untouched until the wait returns.
 * RESOURCE_EXHAUSTED when FXCM_MAX_PENDING operations are pending. */
int fxcm_allreduce_start(fxcm_comm *c, float *buf, size_t n, uint64_t *ticket, char *err,
                         size_t errlen);
/* Waits for the operation (and every one started before it). */
int fxcm_wait(fxcm_comm *c, uint64_t ticket, char *err, size_t errlen);
/* Blocking forms. */
int fxcm_allreduce(fxcm_comm *c, float *buf, size_t n, char *err, size_t errlen);
int fxcm_broadcast(fxcm_comm *c, float *buf, size_t n, int root, char *err, size_t errlen);
int fxcm_barrier(fxcm_comm *c, char *err, size_t errlen);
/* From any thread: pending and later operations fail with ABORTED as soon
 * as the backend lets go (Gloo: at once for waiters, its own thread by the
 * timeout at worst; NCCL: ncclCommAbort). */
void fxcm_abort(fxcm_comm *c);
/* Closes this rank's connections (peers' pending operations then fail with
 * UNAVAILABLE) and frees c. */
void fxcm_free(fxcm_comm *c);

int fxcm_rank(const fxcm_comm *c);
int fxcm_world(const fxcm_comm *c);
fxcm_backend fxcm_comm_backend(const fxcm_comm *c);

#ifdef __cplusplus
}
#endif
#endif
