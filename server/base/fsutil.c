/*
 * fsutil.c - files written the crash-safe way, read whole, hashed; see
 * fsutil.h.
 */
#define _GNU_SOURCE /* mkostemp */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "status.h"
#include "util.h"

int fxu_errno_status(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
        return FXS_RESOURCE_EXHAUSTED;
    case ENOENT:
        return FXS_NOT_FOUND;
    default:
        return FXS_INTERNAL;
    }
}

void fxu_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    out[0] = '\0';
    if (!EVP_Digest(data ? data : "", len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return; /* "" never matches a stored hash: reads report it */
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int fxu_fsync_dir(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        fxu_seterr(err, errlen, "fsync of directory %s: %s", dir, strerror(e));
        if (fd >= 0)
            close(fd);
        return fxu_errno_status(e);
    }
    close(fd);
    return 0;
}

/* Creates DIR/.BASE.tmp.XXXXXX (mode 0600, close-on-exec): *fd and *tmp (its
 * path, malloc). */
static int temp_create(const char *dir, const char *base, int *fd, char **tmp, char *err,
                       size_t errlen)
{
    char *path = fxu_strf("%s/.%s.tmp.XXXXXX", dir, base);
    if (!path) {
        return fxu_oom(err, errlen);
    }
    *fd = mkostemp(path, O_CLOEXEC);
    if (*fd < 0) {
        int e = errno;
        fxu_seterr(err, errlen, "cannot create a temporary file in %s: %s", dir, strerror(e));
        free(path);
        return fxu_errno_status(e);
    }
    *tmp = path;
    return 0;
}

/* fsyncs and closes a temporary file; on failure it is removed. */
static int temp_finish(int fd, const char *tmp, char *err, size_t errlen)
{
    int e = fsync(fd) != 0 ? errno : 0;
    if (close(fd) != 0 && !e)
        e = errno;
    if (e) {
        fxu_seterr(err, errlen, "cannot write %s: %s", tmp, strerror(e));
        unlink(tmp);
        return fxu_errno_status(e);
    }
    return 0;
}

/* Writes data to a new file DIR/.BASE.tmp.XXXXXX and fsyncs it; *tmp gets
 * its path (malloc). */
int fxu_write_temp(const char *dir, const char *base, const void *data, size_t len,
                      char **tmp, char *err, size_t errlen)
{
    int fd = -1;
    char *path = NULL;
    int rc = temp_create(dir, base, &fd, &path, err, errlen);
    if (rc != 0)
        return rc;
    if (fxu_write_all(fd, data, len) != 0) {
        int e = errno;
        fxu_seterr(err, errlen, "cannot write %s: %s", path, strerror(e));
        close(fd);
        unlink(path);
        free(path);
        return fxu_errno_status(e);
    }
    rc = temp_finish(fd, path, err, errlen);
    if (rc != 0) {
        free(path);
        return rc;
    }
    *tmp = path;
    return 0;
}

/* Renames tmp to path and fsyncs path's directory. *renamed tells whether
 * the rename happened (then tmp's name is no longer ours, even on failure). */
int fxu_rename_durable(const char *tmp, const char *path, bool *renamed, char *err,
                         size_t errlen)
{
    *renamed = rename(tmp, path) == 0;
    if (!*renamed) {
        int e = errno;
        fxu_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(e));
        return fxu_errno_status(e);
    }
    char *dir = strdup(path);
    if (!dir) {
        return fxu_oom(err, errlen);
    }
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash == dir)
        d = "/";
    else if (slash) {
        *slash = '\0';
        d = dir;
    }
    int rc = fxu_fsync_dir(d, err, errlen);
    free(dir);
    return rc;
}

/* Splits path into its directory *d and file name *base (pointing into
 * *buf, malloc, or at "/" and "."). */
static int split_path(const char *path, char **buf, const char **d, const char **base,
                      char *err, size_t errlen)
{
    if (!path || !*path) {
        fxu_seterr(err, errlen, "no path to write to");
        return FXS_INVALID_ARGUMENT;
    }
    char *dir = strdup(path);
    if (!dir) {
        return fxu_oom(err, errlen);
    }
    char *slash = strrchr(dir, '/');
    *base = slash ? slash + 1 : dir;
    *d = slash == dir ? "/" : slash ? dir : ".";
    if (slash && slash != dir)
        *slash = '\0';
    if (!**base) {
        fxu_seterr(err, errlen, "%s names a directory, not a file", path);
        free(dir);
        return FXS_INVALID_ARGUMENT;
    }
    *buf = dir;
    return 0;
}

int fxu_atomic_open(fxu_atomic *a, const char *path, char *err, size_t errlen)
{
    *a = (fxu_atomic){ .fd = -1, .path = path };
    char *dir = NULL;
    const char *d = NULL, *base = NULL;
    int rc = split_path(path, &dir, &d, &base, err, errlen);
    if (rc != 0)
        return rc;
    rc = temp_create(d, base, &a->fd, &a->tmp, err, errlen);
    free(dir);
    if (rc != 0)
        a->fd = -1;
    return rc;
}

int fxu_atomic_commit(fxu_atomic *a, char *err, size_t errlen)
{
    int rc = temp_finish(a->fd, a->tmp, err, errlen);
    a->fd = -1;
    bool renamed = false;
    if (rc == 0)
        rc = fxu_rename_durable(a->tmp, a->path, &renamed, err, errlen);
    if (rc != 0 && !renamed)
        unlink(a->tmp);
    free(a->tmp);
    a->tmp = NULL;
    return rc;
}

void fxu_atomic_abort(fxu_atomic *a)
{
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
    if (a->tmp)
        unlink(a->tmp);
    free(a->tmp);
    a->tmp = NULL;
}

int fxu_write_file_atomic(const char *path, const void *data, size_t len, char *err,
                          size_t errlen)
{
    if (path && *path && !data && len > 0) {
        fxu_seterr(err, errlen, "write_file_atomic: no data");
        return FXS_INVALID_ARGUMENT;
    }
    fxu_atomic a;
    int rc = fxu_atomic_open(&a, path, err, errlen);
    if (rc != 0)
        return rc;
    if (fxu_write_all(a.fd, data, len) != 0) {
        int e = errno;
        fxu_seterr(err, errlen, "cannot write %s: %s", a.tmp, strerror(e));
        fxu_atomic_abort(&a);
        return fxu_errno_status(e);
    }
    return fxu_atomic_commit(&a, err, errlen);
}

/* Reads fd to its end into a buffer first sized for cap bytes (and one
 * more, for a NUL a caller may add); grows when there is more. */
static int read_to_end(int fd, const char *path, size_t cap, void **buf, size_t *len, char *err,
                       size_t errlen)
{
    size_t n = 0;
    char *b = malloc(cap + 1);
    if (!b) {
        fxu_seterr(err, errlen, "out of memory reading %s (%zu bytes)", path, cap);
        return FXS_RESOURCE_EXHAUSTED;
    }
    for (;;) {
        if (n == cap) { /* the file grew since fstat, or a stream: keep reading */
            char *nb = cap > (SIZE_MAX - 4096) / 2 ? NULL : realloc(b, 2 * cap + 4096);
            if (!nb) {
                free(b);
                fxu_seterr(err, errlen, "out of memory reading %s", path);
                return FXS_RESOURCE_EXHAUSTED;
            }
            b = nb;
            cap = 2 * cap + 4095;
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            fxu_seterr(err, errlen, "cannot read %s: %s", path, strerror(e));
            free(b);
            return fxu_errno_status(e);
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *buf = b;
    *len = n;
    return 0;
}

/* Reads an open file to its end. */
int fxu_read_fd(int fd, const char *path, void **buf, size_t *len, char *err,
                   size_t errlen)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        fxu_seterr(err, errlen, "cannot stat %s: %s", path, strerror(e));
        return fxu_errno_status(e);
    }
    if (!S_ISREG(sb.st_mode)) {
        fxu_seterr(err, errlen, "%s is not a regular file", path);
        return FXS_INTERNAL;
    }
    if ((uintmax_t)sb.st_size >= SIZE_MAX) {
        fxu_seterr(err, errlen, "%s is too large to read (%jd bytes)", path, (intmax_t)sb.st_size);
        return FXS_RESOURCE_EXHAUSTED;
    }
    return read_to_end(fd, path, (size_t)sb.st_size, buf, len, err, errlen);
}

int fxu_read_stream(int fd, const char *name, void **buf, size_t *len, char *err, size_t errlen)
{
    return read_to_end(fd, name, (size_t)64 << 10, buf, len, err, errlen);
}

int fxu_read_file(const char *path, void **buf, size_t *len, char *err, size_t errlen)
{
    if (!path || !buf || !len) {
        fxu_seterr(err, errlen, "read_file: missing argument");
        return FXS_INVALID_ARGUMENT;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        fxu_seterr(err, errlen, "cannot open %s: %s", path, strerror(e));
        return fxu_errno_status(e);
    }
    int rc = fxu_read_fd(fd, path, buf, len, err, errlen);
    close(fd);
    return rc;
}

/* Size and SHA-256 of a file, read in chunks (weights may be large). */
int fxu_hash_file(const char *path, uint64_t *size, char hex[65], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        fxu_seterr(err, errlen, "%s", strerror(e));
        return fxu_errno_status(e);
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    enum { CHUNK = 1 << 20 };
    unsigned char *b = malloc(CHUNK);
    int rc = FXS_INTERNAL;
    uint64_t total = 0;
    if (!ctx || !b || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        fxu_seterr(err, errlen, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, b, CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            fxu_seterr(err, errlen, "read error: %s", strerror(e));
            goto out;
        }
        if (r == 0)
            break;
        total += (uint64_t)r;
        if (!EVP_DigestUpdate(ctx, b, (size_t)r)) {
            fxu_seterr(err, errlen, "SHA-256 failed");
            goto out;
        }
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32) {
        fxu_seterr(err, errlen, "SHA-256 failed");
        goto out;
    }
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    *size = total;
    rc = 0;
out:
    free(b);
    EVP_MD_CTX_free(ctx);
    close(fd);
    return rc;
}

/* mkdir that accepts an existing directory. */
int fxu_mkdir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            return 0;
        fxu_seterr(err, errlen, "%s exists and is not a directory", path);
        return FXS_INVALID_ARGUMENT;
    }
    int e = errno;
    fxu_seterr(err, errlen, "cannot create directory %s: %s", path, strerror(e));
    return fxu_errno_status(e);
}

/* mkdir -p */
int fxu_mkdir_p(const char *path, char *err, size_t errlen)
{
    char *p = strdup(path);
    if (!p) {
        return fxu_oom(err, errlen);
    }
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        int rc = fxu_mkdir(p, err, errlen);
        *s = '/';
        if (rc != 0) {
            free(p);
            return rc;
        }
    }
    int rc = fxu_mkdir(p, err, errlen);
    free(p);
    return rc;
}

