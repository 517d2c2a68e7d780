/*
 * gloo.cpp - the Gloo backend of the collectives (comm_internal.h), the one
 * C++ file of the daemon: Debian's libgloo (TCP transport) behind extern
 * "C" functions that never let an exception out.
 *
 * The rendezvous: a gloo::rendezvous::Store over the caller's fxcm_store
 * (set, get = a blocking get, wait = a get per key), under a PrefixStore
 * with the world's prefix; every get waits at most what is left of
 * timeout_ms since fxcm_open began, so a rank that never arrives fails the
 * others with DEADLINE_EXCEEDED in time. Then a tcp device on bind_host
 * and gloo::rendezvous::Context::connectFullMesh (one connection per pair
 * of ranks), with setTimeout(timeout_ms) on the context and on every
 * operation.
 *
 * Errors: gloo::IoException is a peer gone (UNAVAILABLE: connection closed
 * or reset) unless its message says timeout (DEADLINE_EXCEEDED); an
 * EnforceNotMet that says timeout is DEADLINE_EXCEEDED too, and anything
 * else INTERNAL, with the exception's message.
 *
 * Failing everything at once (fxcm__gloo_fail_all: abort, the first
 * failure, fxcm_free): Gloo's tcp context has the call it makes itself when
 * an operation times out, signalException, which wakes every buffer of
 * every pair with an IoException and closes the sockets (the peers read
 * EOF and fail with UNAVAILABLE). It is protected; TcpFailAll reaches it
 * through a pointer to member formed in a derived class.
 */
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/context.h>
#include <gloo/transport/tcp/device.h>

#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/status.h"
#include "comm/comm_internal.h"

namespace {

using Clock = std::chrono::steady_clock;

/* An error with its status code (the store's). */
struct FxError : std::runtime_error {
    int code;
    FxError(int c, const std::string &m) : std::runtime_error(m), code(c) {}
};

/* gloo's rendezvous store over an fxcm_store, bounded by one deadline. */
class FxStore : public gloo::rendezvous::Store {
  public:
    FxStore(const fxcm_store *s, Clock::time_point deadline, int64_t timeout_ms)
        : s_(s), deadline_(deadline), timeout_ms_(timeout_ms) {}

    void set(const std::string &key, const std::vector<char> &data) override {
        char err[FXS_ERRLEN] = "";
        int rc = s_->set(s_->data, key.c_str(), data.data(), data.size(), err, sizeof err);
        if (rc)
            throw FxError(rc, "rendezvous store: set '" + key + "': " + err);
    }

    std::vector<char> get(const std::string &key) override { return getWithin(key, left()); }

    void wait(const std::vector<std::string> &keys) override {
        for (const auto &k : keys)
            getWithin(k, left());
    }

    void wait(const std::vector<std::string> &keys,
              const std::chrono::milliseconds &timeout) override {
        for (const auto &k : keys)
            getWithin(k, std::min<int64_t>(left(), timeout.count()));
    }

  private:
    const fxcm_store *s_;
    Clock::time_point deadline_;
    int64_t timeout_ms_;

    int64_t left() const {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now())
                      .count();
        return ms > 0 ? ms : 0;
    }

    std::vector<char> getWithin(const std::string &key, int64_t ms) {
        char err[FXS_ERRLEN] = "";
        void *val = nullptr;
        size_t len = 0;
        int rc = s_->get(s_->data, key.c_str(), &val, &len, ms, err, sizeof err);
        if (rc) {
            if (rc == FXS_DEADLINE_EXCEEDED)
                throw FxError(rc, "rendezvous: a rank did not arrive within " +
                                      std::to_string(timeout_ms_) + " ms (" + err + ")");
            throw FxError(rc, std::string("rendezvous store: ") + err);
        }
        std::vector<char> out;
        try {
            out.assign(static_cast<char *>(val), static_cast<char *>(val) + len);
        } catch (...) {
            free(val);
            throw;
        }
        free(val);
        return out;
    }
};

/* A rendezvous context that shows its transport context. */
class FxContext : public gloo::rendezvous::Context {
  public:
    using gloo::rendezvous::Context::Context;
    gloo::transport::Context *transport() { return transportContext_.get(); }
};

/* See the header comment: reaches tcp::Context::signalException. Never
 * instantiated. */
struct TcpFailAll : gloo::transport::tcp::Context {
    static void call(gloo::transport::tcp::Context *c, const std::string &why) {
        void (gloo::transport::tcp::Context::*fn)(const std::string &) =
            &TcpFailAll::signalException;
        (c->*fn)(why);
    }
};

/* SIGPIPE blocked in this thread while it lives: Gloo writes with
 * writev(2), which raises SIGPIPE on a connection the peer closed; a
 * process that does not ignore SIGPIPE (fluxiond does; a test may not)
 * would die of it instead of seeing EPIPE. The device's event loop thread,
 * started by CreateDevice, inherits the mask; the comm's worker blocks it
 * itself (comm.c). A SIGPIPE left pending here is dropped before the old
 * mask comes back. */
struct SigpipeBlocked {
    sigset_t old;
    bool ok;
    SigpipeBlocked() {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGPIPE);
        ok = pthread_sigmask(SIG_BLOCK, &s, &old) == 0;
    }
    ~SigpipeBlocked() {
        if (!ok)
            return;
        if (!sigismember(&old, SIGPIPE)) {
            sigset_t s, pending;
            sigemptyset(&s);
            sigaddset(&s, SIGPIPE);
            struct timespec zero = {0, 0};
            if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
                sigtimedwait(&s, nullptr, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
};

/* Whether this machine can listen on host (a socket of each address
 * getaddrinfo gives, bound to port 0), with the reason in err when not.
 * Checked before Gloo's CreateDevice, which fails the same way but leaks
 * getaddrinfo's list when it throws. */
bool bindable(const char *host, char *err, size_t errlen) {
    struct addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res = nullptr;
    int gai = getaddrinfo(host, nullptr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(gai));
        return false;
    }
    int last = 0;
    bool ok = false;
    for (struct addrinfo *a = res; a && !ok; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0)
            ok = true;
        else
            last = errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (!ok)
        snprintf(err, errlen, "cannot listen on '%s': %s", host, strerror(last));
    return ok;
}

bool says_timeout(const char *what) {
    return strcasestr(what, "timeout") || strcasestr(what, "timed out");
}

/* The current exception as a code and a message "<prefix>: <what>". */
int classify(const char *prefix, char *err, size_t errlen) {
    int code = FXS_INTERNAL;
    std::string what;
    try {
        throw;
    } catch (const FxError &e) {
        code = e.code;
        what = e.what();
    } catch (const gloo::IoException &e) {
        what = e.what();
        code = says_timeout(e.what()) ? FXS_DEADLINE_EXCEEDED : FXS_UNAVAILABLE;
    } catch (const gloo::EnforceNotMet &e) {
        what = e.what();
        code = says_timeout(e.what()) ? FXS_DEADLINE_EXCEEDED : FXS_INTERNAL;
    } catch (const std::bad_alloc &) {
        code = FXS_RESOURCE_EXHAUSTED;
        what = "out of memory";
    } catch (const std::exception &e) {
        what = e.what();
    } catch (...) {
        what = "unknown C++ exception";
    }
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", prefix, what.c_str());
    return code;
}

} // namespace

struct fxcm__gloo {
    int rank = 0, world = 1;
    int64_t timeout_ms = 0;
    std::shared_ptr<gloo::transport::Device> dev;
    std::shared_ptr<FxContext> ctx;
    gloo::transport::tcp::Context *tcp = nullptr; /* in ctx; NULL for a world of 1 */
};

extern "C" int fxcm__gloo_open(const fxcm_opts *o, int64_t timeout_ms, fxcm__gloo **out,
                               char *err, size_t errlen) {
    *out = nullptr;
    auto *g = new (std::nothrow) fxcm__gloo;
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return FXS_RESOURCE_EXHAUSTED;
    }
    g->rank = o->rank;
    g->world = o->world;
    g->timeout_ms = timeout_ms;
    if (o->world == 1) { /* nothing to connect: every operation is the identity */
        *out = g;
        return 0;
    }
    const char *host = o->bind_host && *o->bind_host ? o->bind_host : "127.0.0.1";
    char where[600];
    snprintf(where, sizeof where, "gloo rendezvous (rank %d of %d, '%s', listening on %s)",
             o->rank, o->world, o->prefix, host);
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    SigpipeBlocked sigpipe;
    char why[400];
    if (!bindable(host, why, sizeof why)) {
        /* UNAVAILABLE: a name not published yet (DNS) may resolve later */
        snprintf(err, errlen, "%s: %s", where, why);
        delete g;
        return FXS_UNAVAILABLE;
    }
    try {
        gloo::transport::tcp::attr attr;
        attr.hostname = host;
        try {
            g->dev = gloo::transport::tcp::CreateDevice(attr);
        } catch (...) {
            int rc = classify(where, err, errlen);
            /* an unresolvable or foreign address: not worth a retry unless
             * a name that is not published yet (DNS): UNAVAILABLE */
            delete g;
            return rc == FXS_INTERNAL ? FXS_UNAVAILABLE : rc;
        }
        FxStore base(o->store, deadline, timeout_ms);
        gloo::rendezvous::PrefixStore store(o->prefix, base);
        g->ctx = std::make_shared<FxContext>(o->rank, o->world);
        g->ctx->setTimeout(std::chrono::milliseconds(timeout_ms));
        g->ctx->connectFullMesh(store, g->dev);
        g->tcp = dynamic_cast<gloo::transport::tcp::Context *>(g->ctx->transport());
        if (!g->tcp)
            throw std::runtime_error("the transport is not Gloo's tcp");
    } catch (...) {
        int rc = classify(where, err, errlen);
        g->ctx.reset();
        g->dev.reset();
        delete g;
        return rc;
    }
    *out = g;
    return 0;
}

extern "C" int fxcm__gloo_run(fxcm__gloo *g, const fxcm__op *op, char *err, size_t errlen) {
    if (g->world == 1 || (op->kind != FXCM__BARRIER && op->n == 0))
        return 0;
    auto timeout = std::chrono::milliseconds(g->timeout_ms);
    /* the same tag on every rank: the operations start in the same order */
    uint32_t tag = static_cast<uint32_t>(op->ticket);
    try {
        switch (op->kind) {
        case FXCM__ALLREDUCE: {
            gloo::AllreduceOptions opts(g->ctx);
            opts.setOutput(op->buf, op->n);
            void (*sum)(void *, const void *, const void *, size_t) = &gloo::sum<float>;
            opts.setReduceFunction(sum);
            opts.setTag(tag);
            opts.setTimeout(timeout);
            gloo::allreduce(opts);
            break;
        }
        case FXCM__BROADCAST: {
            gloo::BroadcastOptions opts(g->ctx);
            opts.setOutput(op->buf, op->n);
            opts.setRoot(op->root);
            opts.setTag(tag);
            opts.setTimeout(timeout);
            gloo::broadcast(opts);
            break;
        }
        case FXCM__BARRIER: {
            gloo::BarrierOptions opts(g->ctx);
            opts.setTag(tag);
            opts.setTimeout(timeout);
            gloo::barrier(opts);
            break;
        }
        }
    } catch (...) {
        char what[200];
        snprintf(what, sizeof what, "gloo %s #%llu of %zu floats (rank %d of %d)",
                 fxcm__kind_name(op->kind), (unsigned long long)op->ticket, op->n, g->rank,
                 g->world);
        return classify(what, err, errlen);
    }
    return 0;
}

extern "C" void fxcm__gloo_fail_all(fxcm__gloo *g, const char *why) {
    if (!g || !g->tcp)
        return;
    try {
        TcpFailAll::call(g->tcp, why ? why : "comm failed");
    } catch (...) {
        /* nothing to add: the operations fail by their timeout at worst */
    }
}

extern "C" void fxcm__gloo_free(fxcm__gloo *g) {
    if (!g)
        return;
    try {
        g->tcp = nullptr;
        g->ctx.reset(); /* closes the connections */
        g->dev.reset(); /* stops the device's thread */
    } catch (...) {
    }
    delete g;
}
