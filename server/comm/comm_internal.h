/*
 * comm_internal.h - what comm.c (the common part: argument checks, the ring
 * of pending operations, error latching, abort) asks of a backend. Not for
 * use outside server/comm/.
 *
 * Gloo (gloo.cpp, C++ behind extern "C"): an operation runs to completion
 * in fxcm__gloo_run on the comm's worker thread (comm.c owns the thread and
 * the queue). NCCL (nccl.c, built with FXCM_HAVE_NCCL): an operation is
 * enqueued on the comm's stream by fxcm__nccl_launch, and its completion
 * polled by fxcm__nccl_wait. Every function here returns 0 or a status
 * code with a message in err; none lets a C++ exception out.
 */
#ifndef FXCM_COMM_INTERNAL_H
#define FXCM_COMM_INTERNAL_H

#include "comm/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FXCM__ALLREDUCE = 1, FXCM__BROADCAST = 2, FXCM__BARRIER = 3 } fxcm__kind;

/* One operation of the ring. */
typedef struct {
    fxcm__kind kind;
    float *buf;      /* ALLREDUCE, BROADCAST */
    size_t n;        /* floats at buf */
    int root;        /* BROADCAST */
    uint64_t ticket; /* 1, 2, ... in start order: the same on every rank */
} fxcm__op;

const char *fxcm__kind_name(fxcm__kind k);

/* ------------------------------------------------------------ Gloo */
typedef struct fxcm__gloo fxcm__gloo;
/* Rendezvous and full-mesh connection (o is checked; timeout_ms > 0). */
int fxcm__gloo_open(const fxcm_opts *o, int64_t timeout_ms, fxcm__gloo **out, char *err,
                    size_t errlen);
/* Runs op to completion (the comm's worker thread; one at a time). */
int fxcm__gloo_run(fxcm__gloo *g, const fxcm__op *op, char *err, size_t errlen);
/* From any thread: the running and later operations of g fail at once and
 * its connections close (peers see them closed). Idempotent. */
void fxcm__gloo_fail_all(fxcm__gloo *g, const char *why);
/* After the worker has stopped. NULL is a no-op. */
void fxcm__gloo_free(fxcm__gloo *g);

/* ------------------------------------------------------------ NCCL */
typedef struct fxcm__nccl fxcm__nccl;
int fxcm__nccl_open(const fxcm_opts *o, int64_t timeout_ms, fxcm__nccl **out, char *err,
                    size_t errlen);
/* Enqueues op on the comm's stream and records slot's event after it. */
int fxcm__nccl_launch(fxcm__nccl *x, const fxcm__op *op, unsigned slot, char *err,
                      size_t errlen);
/* Waits until slot's event has completed (and so every operation launched
 * before it), polling the communicator's asynchronous error, up to
 * timeout_ms. */
int fxcm__nccl_wait(fxcm__nccl *x, unsigned slot, int64_t timeout_ms, char *err, size_t errlen);
/* From any thread: ncclCommAbort; later calls fail with ABORTED. */
void fxcm__nccl_abort(fxcm__nccl *x);
void fxcm__nccl_free(fxcm__nccl *x);

#ifdef __cplusplus
}
#endif
#endif
