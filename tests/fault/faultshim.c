/*
 * faultshim.c - fault injection for the crash tests, in the style of
 * SQLite's: an LD_PRELOAD library that makes the Nth matching I/O call of
 * the process fail (EIO, ENOSPC) or kills the process (SIGKILL) just
 * before it, so a test can sweep N over an operation and check what a
 * restart finds (tests/integration/test_crash_injection.py,
 * scripts/crashsweep.sh).
 *
 * Environment:
 *   FX_FAULT_AT=N      the Nth counted call faults (0 or unset: count only)
 *   FX_FAULT_OPS=LIST  which calls count: write (write, pwrite, pwrite64,
 *                      writev, pwritev), fsync (fsync, fdatasync), rename
 *                      (rename, renameat, renameat2), open (open/openat
 *                      with O_CREAT, creat, mkstemp family); default all
 *   FX_FAULT_MODE=M    eio | enospc | kill (default eio)
 *   FX_FAULT_PATH=S    only calls on paths containing S count (an fd's path
 *                      is read from /proc/self/fd at each call, so a reused
 *                      descriptor is never mistaken for the file it was)
 *   FX_FAULT_ARM=FILE  calls count only while FILE exists, so a test can
 *                      set up its objects first and count one operation.
 *                      FILE may hold "N [MODE [PATH]]": each new FILE (a new
 *                      inode, size or mtime) restarts the count at 0 with
 *                      those settings, so one daemon serves a whole sweep
 *                      of failures (a kill needs a restart anyway)
 *   FX_FAULT_LOG=FILE  each counted call appended: "N op path"
 *
 * Only the Nth call fails: the ones after it succeed again, which is how a
 * retry of the failed operation is expected to succeed.
 *
 * The real functions come from dlsym(RTLD_NEXT). SQLite's unix VFS calls
 * open64/pwrite64/fdatasync through its syscall table, i.e. through the
 * PLT, so its I/O is seen too. glibc's mkostemp opens with an internal
 * call, which is why the mkstemp family is wrapped itself.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OP_WRITE = 1, OP_FSYNC = 2, OP_RENAME = 4, OP_OPEN = 8, OP_ALL = 15 };

static atomic_long g_count;
static long g_at;
static int g_ops = OP_ALL;
static int parse_mode(const char *s);
static int g_mode; /* errno to fail with, or -1: SIGKILL */
static const char *g_env_path, *g_path, *g_arm, *g_log;
static int g_log_fd = -1;
static atomic_int g_ready;
static pthread_mutex_t g_arm_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stat g_arm_st;   /* of the arm file last read */
static char g_arm_path[1024];  /* its PATH setting */

#define REAL(name) static __typeof__(name) *real_##name
REAL(write);
REAL(pwrite);
REAL(pwrite64);
REAL(writev);
REAL(pwritev);
REAL(fsync);
REAL(fdatasync);
REAL(rename);
REAL(renameat);
REAL(renameat2);
REAL(open);
REAL(open64);
REAL(openat);
REAL(openat64);
REAL(creat);
REAL(mkstemp);
REAL(mkostemp);
REAL(mkstemps);
REAL(mkostemps);

static void *sym(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static void init(void)
{
    if (atomic_load(&g_ready))
        return;
#define R(name) real_##name = (__typeof__(real_##name))sym(#name)
    R(write); R(pwrite); R(pwrite64); R(writev); R(pwritev); R(fsync); R(fdatasync);
    R(rename); R(renameat); R(renameat2); R(open); R(open64); R(openat); R(openat64);
    R(creat); R(mkstemp); R(mkostemp); R(mkstemps); R(mkostemps);
#undef R
    const char *s = getenv("FX_FAULT_AT");
    g_at = s ? atol(s) : 0;
    s = getenv("FX_FAULT_OPS");
    if (s && *s) {
        g_ops = 0;
        if (strstr(s, "write"))
            g_ops |= OP_WRITE;
        if (strstr(s, "sync"))
            g_ops |= OP_FSYNC;
        if (strstr(s, "rename"))
            g_ops |= OP_RENAME;
        if (strstr(s, "open"))
            g_ops |= OP_OPEN;
    }
    g_mode = parse_mode(getenv("FX_FAULT_MODE"));
    g_path = getenv("FX_FAULT_PATH");
    if (g_path && !*g_path)
        g_path = NULL;
    g_env_path = g_path;
    g_arm = getenv("FX_FAULT_ARM");
    g_log = getenv("FX_FAULT_LOG");
    if (g_log && real_open)
        g_log_fd = real_open(g_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    atomic_store(&g_ready, 1);
}

__attribute__((constructor)) static void ctor(void)
{
    init();
}

/* The absolute path of a path relative to dirfd, or of fd (path NULL). */
static void resolve(int dirfd, const char *path, char *out, size_t n)
{
    char link[64], base[4096];
    out[0] = '\0';
    if (path && path[0] == '/') {
        snprintf(out, n, "%s", path);
        return;
    }
    ssize_t len;
    if (!path || dirfd != AT_FDCWD) {
        snprintf(link, sizeof link, "/proc/self/fd/%d", path ? dirfd : dirfd);
        len = readlink(link, base, sizeof base - 1);
    } else {
        len = getcwd(base, sizeof base) ? (ssize_t)strlen(base) : -1;
    }
    if (len < 0)
        return;
    base[len] = '\0';
    if (path)
        snprintf(out, n, "%s/%s", base, path);
    else
        snprintf(out, n, "%s", base);
}

/* Whether this call counts; if it is the Nth, fails it (returns the errno
 * to fail with) or kills the process. 0: go on with the real call. */
static int parse_mode(const char *s)
{
    return !s || !strcmp(s, "eio") ? EIO : !strcmp(s, "enospc") ? ENOSPC : -1;
}

/* Whether the arm file exists; a new one is read and restarts the count. */
static int armed(void)
{
    struct stat st;
    if (stat(g_arm, &st) != 0)
        return 0;
    pthread_mutex_lock(&g_arm_lock);
    if (st.st_ino != g_arm_st.st_ino || st.st_size != g_arm_st.st_size ||
        st.st_mtim.tv_sec != g_arm_st.st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != g_arm_st.st_mtim.tv_nsec) {
        g_arm_st = st;
        char buf[1200] = "", mode[16] = "";
        int fd = real_open ? real_open(g_arm, O_RDONLY | O_CLOEXEC) : -1;
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof buf - 1);
            buf[n > 0 ? n : 0] = '\0';
            close(fd);
        }
        long at = 0;
        g_arm_path[0] = '\0';
        int k = sscanf(buf, "%ld %15s %1023s", &at, mode, g_arm_path);
        if (k >= 1)
            g_at = at;
        if (k >= 2)
            g_mode = parse_mode(mode);
        g_path = k >= 3 ? g_arm_path : g_env_path;
        atomic_store(&g_count, 0);
    }
    pthread_mutex_unlock(&g_arm_lock);
    return 1;
}

static int fault(int op, const char *name, int dirfd, const char *path)
{
    init();
    if (!(g_ops & op))
        return 0;
    if (g_arm && !armed())
        return 0;
    char abs[4200];
    resolve(dirfd, path, abs, sizeof abs);
    if (g_path && !strstr(abs, g_path))
        return 0;
    long n = atomic_fetch_add(&g_count, 1) + 1;
    if (g_log_fd >= 0 && real_write) {
        char line[4400];
        int len = snprintf(line, sizeof line, "%ld %s %s%s\n", n, name, abs,
                           n == g_at ? (g_mode < 0 ? " KILL" : " FAIL") : "");
        if (len > (int)sizeof line - 1)
            len = (int)sizeof line - 1;
        real_write(g_log_fd, line, (size_t)len);
    }
    if (g_at <= 0 || n != g_at)
        return 0;
    if (g_mode < 0) {
        kill(getpid(), SIGKILL);
        for (;;)
            pause();
    }
    return g_mode;
}

#define FD_FAULT(op, name, fd)            \
    do {                                  \
        int e_ = fault(op, name, fd, NULL); \
        if (e_) {                         \
            errno = e_;                   \
            return -1;                    \
        }                                 \
    } while (0)

ssize_t write(int fd, const void *buf, size_t n)
{
    FD_FAULT(OP_WRITE, "write", fd);
    return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    FD_FAULT(OP_WRITE, "pwrite", fd);
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    FD_FAULT(OP_WRITE, "pwrite64", fd);
    return real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    FD_FAULT(OP_WRITE, "writev", fd);
    return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    FD_FAULT(OP_WRITE, "pwritev", fd);
    return real_pwritev(fd, iov, cnt, off);
}

int fsync(int fd)
{
    FD_FAULT(OP_FSYNC, "fsync", fd);
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    FD_FAULT(OP_FSYNC, "fdatasync", fd);
    return real_fdatasync(fd);
}

#define PATH_FAULT(op, name, dirfd, path) \
    do {                                  \
        int e_ = fault(op, name, dirfd, path); \
        if (e_) {                         \
            errno = e_;                   \
            return -1;                    \
        }                                 \
    } while (0)

int rename(const char *from, const char *to)
{
    PATH_FAULT(OP_RENAME, "rename", AT_FDCWD, to);
    return real_rename(from, to);
}

int renameat(int fd1, const char *from, int fd2, const char *to)
{
    PATH_FAULT(OP_RENAME, "renameat", fd2, to);
    return real_renameat(fd1, from, fd2, to);
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned flags)
{
    PATH_FAULT(OP_RENAME, "renameat2", fd2, to);
    return real_renameat2(fd1, from, fd2, to, flags);
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    if (flags & O_CREAT)
        PATH_FAULT(OP_OPEN, "open", AT_FDCWD, path);
    init();
    return real_open(path, flags, m);
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    if (flags & O_CREAT)
        PATH_FAULT(OP_OPEN, "open64", AT_FDCWD, path);
    init();
    return real_open64(path, flags, m);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    if (flags & O_CREAT)
        PATH_FAULT(OP_OPEN, "openat", dirfd, path);
    init();
    return real_openat(dirfd, path, flags, m);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    if (flags & O_CREAT)
        PATH_FAULT(OP_OPEN, "openat64", dirfd, path);
    init();
    return real_openat64(dirfd, path, flags, m);
}

int creat(const char *path, mode_t m)
{
    PATH_FAULT(OP_OPEN, "creat", AT_FDCWD, path);
    return real_creat(path, m);
}

int mkstemp(char *tmpl)
{
    PATH_FAULT(OP_OPEN, "mkstemp", AT_FDCWD, tmpl);
    return real_mkstemp(tmpl);
}

int mkostemp(char *tmpl, int flags)
{
    PATH_FAULT(OP_OPEN, "mkostemp", AT_FDCWD, tmpl);
    return real_mkostemp(tmpl, flags);
}

int mkstemps(char *tmpl, int suffixlen)
{
    PATH_FAULT(OP_OPEN, "mkstemps", AT_FDCWD, tmpl);
    return real_mkstemps(tmpl, suffixlen);
}

int mkostemps(char *tmpl, int suffixlen, int flags)
{
    PATH_FAULT(OP_OPEN, "mkostemps", AT_FDCWD, tmpl);
    return real_mkostemps(tmpl, suffixlen, flags);
}
