/*
 * nccl.c - the NCCL backend of the collectives (comm_internal.h), for f32
 * buffers in CUDA device memory; built when nccl.h and libnccl are found
 * (CMake: FX_NCCL, FXCM_HAVE_NCCL).
 *
 * Rendezvous: rank 0 makes the unique id (ncclGetUniqueId) and publishes
 * it in the store under "<prefix>/nccl-id"; the others get it within the
 * timeout. The communicator is nonblocking (config.blocking = 0), so that
 * nothing here waits on NCCL without a bound: ncclCommInitRankConfig and
 * every enqueue may answer ncclInProgress, and ncclCommGetAsyncError is
 * polled until the state settles or timeout_ms passes.
 *
 * Operations are enqueued on the comm's own stream (non-blocking w.r.t.
 * the legacy stream), each followed by an event of the ring slot; a wait
 * polls that event and the communicator's asynchronous error, so a peer
 * that dies (ncclRemoteError, ncclSystemError) or a hang past timeout_ms
 * ends the wait; comm.c then aborts the communicator (ncclCommAbort),
 * which also stops its kernels. The caller's buffers must be written by
 * work ordered before the start (the same stream, or synchronised).
 *
 * A mutex serialises the calls on the communicator with abort, which
 * invalidates it: after abort every call answers ABORTED without
 * touching NCCL.
 */
#include <nccl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/status.h"
#include "base/util.h"
#include "comm/comm_internal.h"

struct fxcm__nccl {
    int rank, world, device;
    int64_t timeout_ms;
    pthread_mutex_t mu;
    ncclComm_t comm; /* NULL once aborted or freed */
    bool aborted;
    cudaStream_t stream;
    cudaEvent_t ev[FXCM_MAX_PENDING];
    int nev;        /* events created */
    float *scratch; /* 1 float on the device: the barrier's allreduce */
};

static void nap_us(long us) {
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

static int nccl_code(ncclResult_t r) {
    switch (r) {
    case ncclRemoteError: /* a peer failed or went away */
    case ncclSystemError: /* a socket, a network */
        return FXS_UNAVAILABLE;
    case ncclInvalidArgument:
        return FXS_INVALID_ARGUMENT;
    default:
        return FXS_INTERNAL;
    }
}

static int nccl_fail(fxcm__nccl *x, ncclResult_t r, const char *what, char *err, size_t errlen) {
    const char *last = x && x->comm ? ncclGetLastError(x->comm) : NULL;
    return fxu_fail(err, errlen, nccl_code(r), "nccl %s (rank %d of %d): %s%s%s", what,
                    x ? x->rank : -1, x ? x->world : 0, ncclGetErrorString(r),
                    last && *last ? ": " : "", last ? last : "");
}

static int cuda_fail(fxcm__nccl *x, cudaError_t e, const char *what, char *err, size_t errlen) {
    return fxu_fail(err, errlen, FXS_INTERNAL, "nccl %s (rank %d of %d): CUDA: %s", what,
                    x->rank, x->world, cudaGetErrorString(e));
}

/* Polls the communicator until it leaves ncclInProgress, up to
 * deadline_ns. x->mu is held, and let go while napping so that an abort
 * gets through. */
static int settle(fxcm__nccl *x, ncclResult_t r, uint64_t deadline_ns, const char *what,
                  char *err, size_t errlen) {
    long nap = 50;
    while (r == ncclInProgress) {
        if (fxu_mono_ns() >= deadline_ns)
            return fxu_fail(err, errlen, FXS_DEADLINE_EXCEEDED,
                            "nccl %s (rank %d of %d): not done within %lld ms", what, x->rank,
                            x->world, (long long)x->timeout_ms);
        pthread_mutex_unlock(&x->mu);
        nap_us(nap);
        pthread_mutex_lock(&x->mu);
        if (nap < 2000)
            nap *= 2;
        if (x->aborted || !x->comm)
            return fxu_fail(err, errlen, FXS_ABORTED, "nccl %s (rank %d of %d): aborted", what,
                            x->rank, x->world);
        ncclResult_t q = ncclCommGetAsyncError(x->comm, &r);
        if (q != ncclSuccess)
            r = q;
    }
    return r == ncclSuccess ? 0 : nccl_fail(x, r, what, err, errlen);
}

static uint64_t deadline_after(int64_t ms) { return fxu_mono_ns() + (uint64_t)ms * 1000000u; }

static void release(fxcm__nccl *x) {
    for (int i = 0; i < x->nev; i++)
        cudaEventDestroy(x->ev[i]);
    if (x->stream)
        cudaStreamDestroy(x->stream);
    if (x->scratch)
        cudaFree(x->scratch);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

int fxcm__nccl_open(const fxcm_opts *o, int64_t timeout_ms, fxcm__nccl **out, char *err,
                    size_t errlen) {
    *out = NULL;
    fxcm__nccl *x = calloc(1, sizeof *x);
    if (!x)
        return fxu_oom(err, errlen);
    x->rank = o->rank;
    x->world = o->world;
    x->device = o->cuda_device;
    x->timeout_ms = timeout_ms;
    pthread_mutex_init(&x->mu, NULL);
    uint64_t deadline = deadline_after(timeout_ms);
    int ndev = 0;
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev == 0) {
        release(x);
        return fxu_fail(err, errlen, FXS_FAILED_PRECONDITION, "nccl: no CUDA device (%s)",
                        ce != cudaSuccess ? cudaGetErrorString(ce) : "none found");
    }
    if (o->cuda_device >= ndev) {
        release(x);
        return fxu_fail(err, errlen, FXS_INVALID_ARGUMENT,
                        "nccl: cuda_device %d, but this machine has %d", o->cuda_device, ndev);
    }
    int rc = 0;
    if ((ce = cudaSetDevice(x->device)) != cudaSuccess ||
        (ce = cudaStreamCreateWithFlags(&x->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (ce = cudaMalloc((void **)&x->scratch, sizeof(float))) != cudaSuccess) {
        rc = cuda_fail(x, ce, "setup", err, errlen);
        release(x);
        return rc;
    }
    for (; x->nev < FXCM_MAX_PENDING; x->nev++) {
        ce = cudaEventCreateWithFlags(&x->ev[x->nev], cudaEventDisableTiming);
        if (ce != cudaSuccess) {
            rc = cuda_fail(x, ce, "events", err, errlen);
            release(x);
            return rc;
        }
    }
    /* the unique id through the store */
    char key[600];
    snprintf(key, sizeof key, "%s/nccl-id", o->prefix);
    ncclUniqueId id;
    if (o->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess)
            rc = nccl_fail(x, r, "unique id", err, errlen);
        else
            rc = o->store->set(o->store->data, key, &id, sizeof id, err, errlen);
    } else {
        void *val = NULL;
        size_t len = 0;
        rc = o->store->get(o->store->data, key, &val, &len, timeout_ms, err, errlen);
        if (!rc && len != sizeof id)
            rc = fxu_fail(err, errlen, FXS_INTERNAL, "nccl: the unique id has %zu bytes, not %zu",
                          len, sizeof id);
        if (!rc)
            memcpy(&id, val, sizeof id);
        free(val);
    }
    if (rc) {
        release(x);
        return rc;
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&x->comm, x->world, id, x->rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
        rc = nccl_fail(x, r, "init", err, errlen);
    } else {
        pthread_mutex_lock(&x->mu);
        rc = settle(x, r, deadline, "init", err, errlen);
        pthread_mutex_unlock(&x->mu);
    }
    if (rc) {
        if (x->comm)
            ncclCommAbort(x->comm);
        x->comm = NULL;
        release(x);
        return rc;
    }
    *out = x;
    return 0;
}

int fxcm__nccl_launch(fxcm__nccl *x, const fxcm__op *op, unsigned slot, char *err,
                      size_t errlen) {
    pthread_mutex_lock(&x->mu);
    int rc = 0;
    if (x->aborted || !x->comm) {
        rc = fxu_fail(err, errlen, FXS_ABORTED, "nccl (rank %d of %d): aborted", x->rank,
                      x->world);
        goto out;
    }
    cudaError_t ce = cudaSetDevice(x->device);
    if (ce != cudaSuccess) {
        rc = cuda_fail(x, ce, fxcm__kind_name(op->kind), err, errlen);
        goto out;
    }
    ncclResult_t r = ncclSuccess;
    switch (op->kind) {
    case FXCM__ALLREDUCE:
        if (op->n)
            r = ncclAllReduce(op->buf, op->buf, op->n, ncclFloat32, ncclSum, x->comm, x->stream);
        break;
    case FXCM__BROADCAST:
        if (op->n)
            r = ncclBroadcast(op->buf, op->buf, op->n, ncclFloat32, op->root, x->comm,
                              x->stream);
        break;
    case FXCM__BARRIER:
        r = ncclAllReduce(x->scratch, x->scratch, 1, ncclFloat32, ncclSum, x->comm, x->stream);
        break;
    }
    if (r != ncclSuccess && r != ncclInProgress) {
        rc = nccl_fail(x, r, fxcm__kind_name(op->kind), err, errlen);
        goto out;
    }
    rc = settle(x, r, deadline_after(x->timeout_ms), fxcm__kind_name(op->kind), err, errlen);
    if (rc)
        goto out;
    ce = cudaEventRecord(x->ev[slot], x->stream);
    if (ce != cudaSuccess)
        rc = cuda_fail(x, ce, fxcm__kind_name(op->kind), err, errlen);
out:
    pthread_mutex_unlock(&x->mu);
    return rc;
}

int fxcm__nccl_wait(fxcm__nccl *x, unsigned slot, int64_t timeout_ms, char *err, size_t errlen) {
    uint64_t deadline = deadline_after(timeout_ms);
    long nap = 20;
    for (;;) {
        pthread_mutex_lock(&x->mu);
        if (x->aborted || !x->comm) {
            pthread_mutex_unlock(&x->mu);
            return fxu_fail(err, errlen, FXS_ABORTED, "nccl (rank %d of %d): aborted", x->rank,
                            x->world);
        }
        cudaError_t ce = cudaEventQuery(x->ev[slot]);
        if (ce == cudaSuccess) {
            pthread_mutex_unlock(&x->mu);
            return 0;
        }
        int rc = 0;
        if (ce != cudaErrorNotReady) {
            rc = cuda_fail(x, ce, "wait", err, errlen);
        } else {
            ncclResult_t st = ncclSuccess;
            ncclResult_t q = ncclCommGetAsyncError(x->comm, &st);
            if (q != ncclSuccess)
                st = q;
            if (st != ncclSuccess && st != ncclInProgress)
                rc = nccl_fail(x, st, "wait", err, errlen);
        }
        pthread_mutex_unlock(&x->mu);
        if (rc)
            return rc;
        if (fxu_mono_ns() >= deadline)
            return fxu_fail(err, errlen, FXS_DEADLINE_EXCEEDED,
                            "nccl (rank %d of %d): an operation did not complete within %lld ms",
                            x->rank, x->world, (long long)timeout_ms);
        nap_us(nap);
        if (nap < 1000)
            nap *= 2;
    }
}

void fxcm__nccl_abort(fxcm__nccl *x) {
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    if (!x->aborted && x->comm) {
        cudaSetDevice(x->device);
        ncclCommAbort(x->comm);
        x->comm = NULL;
    }
    x->aborted = true;
    pthread_mutex_unlock(&x->mu);
}

void fxcm__nccl_free(fxcm__nccl *x) {
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    if (x->comm) {
        /* a healthy comm: flush and destroy within the timeout, else abort */
        cudaSetDevice(x->device);
        char err[256];
        ncclResult_t r = ncclCommFinalize(x->comm);
        int rc = r == ncclSuccess || r == ncclInProgress
                     ? settle(x, r, deadline_after(x->timeout_ms), "finalize", err, sizeof err)
                     : FXS_INTERNAL;
        if (rc == 0)
            ncclCommDestroy(x->comm);
        else
            ncclCommAbort(x->comm);
        x->comm = NULL;
    }
    pthread_mutex_unlock(&x->mu);
    release(x); /* the stream's resources go once its work is done */
}
