/*
 * fsutil.h - the file helpers every module that stores something uses: the
 * data directory's files are always written to a temporary name in the same
 * directory, fsynced, renamed into place, and the directory fsynced, so a
 * crash leaves the old file or the new one, never a part.
 *
 * Every function returns 0 or an fxs_status code (base/status.h) with a
 * message naming the path in err: FXS_RESOURCE_EXHAUSTED when the disk (or
 * memory, or the process's file table) is full, FXS_NOT_FOUND for a missing
 * file, FXS_INTERNAL for any other I/O error.
 */
#ifndef FXU_FSUTIL_H
#define FXU_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The status for an errno value: ENOSPC, EDQUOT, ENOMEM, EMFILE, ENFILE ->
 * FXS_RESOURCE_EXHAUSTED; ENOENT -> FXS_NOT_FOUND; else FXS_INTERNAL. */
int fxu_errno_status(int e);

/* Lowercase hex SHA-256 of data into out[65] ("" if hashing failed). */
void fxu_sha256_hex(const void *data, size_t len, char out[65]);

/* Size and SHA-256 (hex) of a file, read in chunks. */
int fxu_hash_file(const char *path, uint64_t *size, char hex[65], char *err, size_t errlen);

/* fsync of a directory (after a rename or unlink in it). */
int fxu_fsync_dir(const char *dir, char *err, size_t errlen);

/* Writes data to a new file DIR/.BASE.tmp.XXXXXX and fsyncs it; *tmp gets
 * its path (malloc). Nothing is left behind on failure. */
int fxu_write_temp(const char *dir, const char *base, const void *data, size_t len,
                   char **tmp, char *err, size_t errlen);

/* Renames tmp to path and fsyncs path's directory. *renamed tells whether
 * the rename happened (then tmp's name is no longer ours, even on failure). */
int fxu_rename_durable(const char *tmp, const char *path, bool *renamed, char *err,
                       size_t errlen);

/* Writes a file atomically: DIR/.name.tmp.XXXXXX, write, fsync, rename,
 * fsync the directory. On failure the previous file at path is untouched. */
int fxu_write_file_atomic(const char *path, const void *data, size_t len, char *err,
                          size_t errlen);

/* Reads an open file, or a file by path, to its end (malloc; one byte more
 * than *len is allocated). Regular files only (FXS_INTERNAL otherwise). */
int fxu_read_fd(int fd, const char *path, void **buf, size_t *len, char *err, size_t errlen);
int fxu_read_file(const char *path, void **buf, size_t *len, char *err, size_t errlen);

/* The same for any descriptor: a pipe, a terminal, stdin (the CLI's inputs);
 * name is for messages. */
int fxu_read_stream(int fd, const char *name, void **buf, size_t *len, char *err, size_t errlen);

/* A file written in pieces and put in place atomically, for data too large to
 * hold in memory at once (the CLI's `model export`): fxu_atomic_open creates
 * DIR/.BASE.tmp.XXXXXX next to path (mode 0600) and a->fd; write to a->fd;
 * fxu_atomic_commit fsyncs and closes it, renames it over path and fsyncs the
 * directory; fxu_atomic_abort, or a commit that fails, removes it. Until the
 * commit the file at path is untouched. */
typedef struct {
    int fd;
    char *tmp;
    const char *path; /* the caller's, kept until the commit */
} fxu_atomic;
int fxu_atomic_open(fxu_atomic *a, const char *path, char *err, size_t errlen);
int fxu_atomic_commit(fxu_atomic *a, char *err, size_t errlen);
void fxu_atomic_abort(fxu_atomic *a);

/* mkdir that accepts an existing directory; mkdir -p. */
int fxu_mkdir(const char *path, char *err, size_t errlen);
int fxu_mkdir_p(const char *path, char *err, size_t errlen);

#endif
