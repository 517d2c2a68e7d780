/*
 * test_fsutil.c - base/fsutil's helpers for files that are not the data
 * directory's: reading any descriptor to its end (a pipe: the CLI's stdin)
 * and a file written in pieces then put in place atomically (the CLI's
 * `model export`). The data directory's helpers are tested in test_store.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/fsutil.h"
#include "base/status.h"
#include "base/util.h"
#include "testutil.h"

typedef struct {
    int fd;
    const unsigned char *data;
    size_t len;
    int rc;
} pipe_writer;

static void *write_pipe(void *arg)
{
    pipe_writer *w = arg;
    w->rc = fxu_write_all(w->fd, w->data, w->len);
    close(w->fd);
    return NULL;
}

/* Reads what a thread writes into a pipe: n bytes, more than the pipe holds
 * and more than the first buffer. */
static void read_pipe(size_t n)
{
    unsigned char *data = malloc(n ? n : 1);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 31 + 7);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pipe_writer w = { fds[1], data, n, -1 };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, write_pipe, &w), 0);
    void *buf = NULL;
    size_t len = 1;
    char err[FXS_ERRLEN] = "";
    assert_int_equal(fxu_read_stream(fds[0], "stdin", &buf, &len, err, sizeof err), 0);
    pthread_join(t, NULL);
    close(fds[0]);
    assert_int_equal(w.rc, 0);
    assert_int_equal(len, n);
    if (n)
        assert_memory_equal(buf, data, n);
    free(buf);
    free(data);
}

static void test_read_stream(void **state)
{
    (void)state;
    read_pipe(0);
    read_pipe(10);
    read_pipe(65536);
    read_pipe(1000003);

    /* fxu_read_fd keeps to regular files: the daemon never reads a pipe */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    close(fds[1]);
    void *buf = NULL;
    size_t len = 0;
    char err[FXS_ERRLEN] = "";
    assert_int_equal(fxu_read_fd(fds[0], "p", &buf, &len, err, sizeof err), FXS_INTERNAL);
    assert_non_null(strstr(err, "not a regular file"));
    close(fds[0]);

    /* a read that fails names what was read */
    assert_int_equal(fxu_read_stream(-1, "stdin", &buf, &len, err, sizeof err), FXS_INTERNAL);
    assert_non_null(strstr(err, "cannot read stdin"));
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void assert_file(const char *path, const char *want)
{
    void *buf = NULL;
    size_t len = 0;
    char err[FXS_ERRLEN] = "";
    assert_int_equal(fxu_read_file(path, &buf, &len, err, sizeof err), 0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    free(buf);
}

static void test_atomic(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/fx-fsutil-XXXXXX";
    const char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    const char *path = tu_pathf("%s/out.bin", dir);
    char err[FXS_ERRLEN] = "";
    assert_int_equal(fxu_write_file_atomic(path, "old", 3, err, sizeof err), 0);

    /* written in pieces; path keeps the old file until the commit */
    fxu_atomic a;
    assert_int_equal(fxu_atomic_open(&a, path, err, sizeof err), 0);
    assert_int_equal(fxu_write_all(a.fd, "ne", 2), 0);
    assert_int_equal(fxu_write_all(a.fd, "w!", 2), 0);
    assert_file(path, "old");
    assert_int_equal(count_entries(dir), 2);
    assert_int_equal(fxu_atomic_commit(&a, err, sizeof err), 0);
    assert_null(a.tmp);
    assert_file(path, "new!");
    assert_int_equal(count_entries(dir), 1);

    /* abort: the temporary file goes, the file stays */
    assert_int_equal(fxu_atomic_open(&a, path, err, sizeof err), 0);
    assert_int_equal(fxu_write_all(a.fd, "partial", 7), 0);
    fxu_atomic_abort(&a);
    assert_file(path, "new!");
    assert_int_equal(count_entries(dir), 1);

    /* a commit that fails (the descriptor is gone) removes the temporary */
    assert_int_equal(fxu_atomic_open(&a, path, err, sizeof err), 0);
    close(a.fd);
    assert_int_equal(fxu_atomic_commit(&a, err, sizeof err), FXS_INTERNAL);
    assert_non_null(strstr(err, "cannot write"));
    assert_file(path, "new!");
    assert_int_equal(count_entries(dir), 1);

    /* bad paths: a missing directory (named), a directory, none */
    assert_int_equal(fxu_atomic_open(&a, tu_pathf("%s/nodir/x", dir), err, sizeof err),
                     FXS_NOT_FOUND);
    assert_non_null(strstr(err, "nodir"));
    assert_int_equal(a.fd, -1);
    assert_int_equal(fxu_atomic_open(&a, tu_pathf("%s/", dir), err, sizeof err),
                     FXS_INVALID_ARGUMENT);
    assert_int_equal(fxu_atomic_open(&a, "", err, sizeof err), FXS_INVALID_ARGUMENT);
    fxu_atomic_abort(&a); /* harmless after a failed open */
    assert_int_equal(count_entries(dir), 1);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_stream),
        cmocka_unit_test(test_atomic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
